//! The NFQUEUE socket (the `nfq` crate) and the kernel's counters of it.
//!
//! `nfq::Queue` does not give its file descriptor, which the loop's `Poll`
//! needs: it is found as the one netlink socket that opening the queue
//! added to this process (start-up runs on one thread, so nothing else
//! opens a file meanwhile), and checked to be a netlink socket.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::RawFd;

/// Bytes of each queued packet copied to us: the IP header with a few
/// IPv6 extension headers and the transport header's ports and flags.
const COPY_RANGE: u16 = 128;
/// Packets the kernel holds for us before it drops (or, with
/// on_daemon_down = "accept", accepts) more: ~1 s of a burst of new
/// connections at a few thousand per second.
const QUEUE_MAX_LEN: u32 = 4096;
/// The socket's receive buffer: QUEUE_MAX_LEN packets of COPY_RANGE bytes
/// with their netlink headers.
const RCVBUF_BYTES: libc::c_int = 2 << 20;

pub struct EnforcementQueue {
    pub(super) queue: nfq::Queue,
    number: u16,
    fd: RawFd,
}

impl EnforcementQueue {
    /// Opens and binds queue `number`. A packet that finds the queue (or
    /// the socket) full is dropped, never let through: the kernel counts
    /// those drops (`counters`) and the daemon marks the window SKIPDATA,
    /// whereas a fail-open pass is counted nowhere and would let a new
    /// connection in that no rule decided. `on_daemon_down` is about the
    /// daemon being absent (`--queue-bypass`), not about it being busy.
    ///
    /// # Errors
    /// The queue cannot be opened or bound (another process has it, no
    /// CAP_NET_ADMIN).
    pub fn open(number: u16) -> io::Result<EnforcementQueue> {
        let before = netlink_fds();
        let mut queue = nfq::Queue::open()?;
        let added: Vec<RawFd> = netlink_fds().difference(&before).copied().collect();
        let fd = match added.as_slice() {
            [fd] => *fd,
            _ => {
                return Err(io::Error::other(format!(
                    "cannot tell the NFQUEUE socket among the files it opened ({added:?})"
                )))
            }
        };
        queue.bind(number).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot bind NFQUEUE {number} (is another process reading it?): {e}"),
            )
        })?;
        queue.set_copy_range(number, COPY_RANGE)?;
        queue.set_queue_max_len(number, QUEUE_MAX_LEN)?;
        queue.set_fail_open(number, false)?;
        queue.set_nonblocking(true);
        // SAFETY: fd is this queue's open socket; the value is a c_int
        // that lives across the call.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&RCVBUF_BYTES as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Ok(EnforcementQueue { queue, number, fd })
    }

    pub fn number(&self) -> u16 {
        self.number
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd
    }

    /// Moves to another queue number (a reload).
    ///
    /// # Errors
    /// The new number cannot be bound; the old one is kept then.
    pub fn rebind(&mut self, number: u16) -> io::Result<()> {
        if number != self.number {
            self.queue.bind(number)?;
            let _ = self.queue.unbind(self.number);
            self.queue.set_copy_range(number, COPY_RANGE)?;
            self.queue.set_queue_max_len(number, QUEUE_MAX_LEN)?;
            self.queue.set_fail_open(number, false)?;
            self.number = number;
        }
        Ok(())
    }

    /// The kernel's counters of this queue.
    pub fn counters(&self) -> Option<QueueCounters> {
        let text = std::fs::read_to_string("/proc/net/netfilter/nfnetlink_queue").ok()?;
        parse_counters(&text, self.number)
    }
}

/// One line of /proc/net/netfilter/nfnetlink_queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Packets waiting for a verdict now.
    pub waiting: u64,
    /// Dropped because the queue was full.
    pub queue_dropped: u64,
    /// Dropped because the socket's buffer was full.
    pub user_dropped: u64,
}

/// Fields: queue number, peer port id, waiting, copy mode, copy range,
/// queue dropped, user dropped, last id, 1.
fn parse_counters(text: &str, number: u16) -> Option<QueueCounters> {
    text.lines().find_map(|line| {
        let f: Vec<u64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        (f.len() >= 7 && f[0] == u64::from(number)).then(|| QueueCounters {
            waiting: f[2],
            queue_dropped: f[5],
            user_dropped: f[6],
        })
    })
}

/// This process's netlink sockets. Checked once the listing is done, so
/// the listing's own descriptor (closed by then) is never one of them.
fn netlink_fds() -> BTreeSet<RawFd> {
    let listed: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    listed.into_iter().filter(|fd| is_netlink(*fd)).collect()
}

fn is_netlink(fd: RawFd) -> bool {
    let mut addr: libc::sockaddr_storage =
        // SAFETY: sockaddr_storage is plain data; all zeroes is valid.
        unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: addr and len are valid for writes of len bytes.
    let r = unsafe {
        libc::getsockname(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    r == 0 && i32::from(addr.ss_family) == libc::AF_NETLINK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counters_of_our_queue_are_read_from_its_line() {
        let text = "    0  12345     0 2 65535     0     0        0  1\n  100  23456     3 2   128    17     5      912  1\n";
        assert_eq!(
            parse_counters(text, 100),
            Some(QueueCounters {
                waiting: 3,
                queue_dropped: 17,
                user_dropped: 5
            })
        );
        assert_eq!(parse_counters(text, 7), None);
    }
}
