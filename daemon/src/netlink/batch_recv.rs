//! Many netlink datagrams per system call, with recvmmsg(2).
//!
//! The kernel multicasts every conntrack event as its own skb. One recv(2)
//! per event pays syscall entry and exit, the fd lookup and the LSM hook
//! per event; recvmmsg pays them once per batch (net/socket.c
//! `do_recvmmsg` loops over `___sys_recvmsg` and asks the LSM only for the
//! first datagram). The per-datagram work stays: dequeue, copy, skb free.
//! Measured on 6.18 (2-vCPU VM, 256-byte datagrams queued ahead, release
//! build): 0.85-1.0 us of CPU per datagram with recv, 0.60-0.80 us with 16
//! to 64 slots (20-30% less; the low ends with 1k datagrams queued, the
//! high ends with 20k, whose skbs are cache-cold).
//!
//! What the kernel does that the reader relies on (net/socket.c
//! `do_recvmmsg`, net/netlink/af_netlink.c `netlink_recvmsg`, v6.18):
//!
//! - **ENOBUFS is a call of its own.** A dropped multicast sets `sk_err`
//!   (`netlink_overrun`). `do_recvmmsg` checks it first: if set, the call
//!   returns -1/ENOBUFS having read nothing. If it is set while a call is
//!   between two datagrams, the next read in that call fails; the call
//!   returns the datagrams it already has and writes the error back to
//!   `sk_err` (any error but EAGAIN), so the next call returns
//!   -1/ENOBUFS. Either way it is reported before any datagram queued
//!   after the drop: the socket stays congested, dropping everything, until
//!   its queue has been read empty, and each dequeue checks `sk_err` first.
//!   So a batch shorter than asked for does not mean the queue is empty.
//! - **Truncation is per message.** `netlink_recvmsg` sets MSG_TRUNC in the
//!   message's own `msg_flags` whenever the datagram was longer than the
//!   slot, whatever flags the call passed; with MSG_TRUNC among the call's
//!   flags it also reports the datagram's real length in `msg_len`. The
//!   flag is the test (without the call flag `msg_len` would just be the
//!   slot length); the length is for the log line.
//! - **The call's flags apply to every message.** MSG_DONTWAIT makes each
//!   read non-blocking even on a blocking socket; without it a blocking
//!   socket would wait until all slots were filled.
//! - **The sender is per message.** `netlink_recvmsg` writes the sender's
//!   port id (`NETLINK_CB(skb).portid`) into each message's `msg_name`:
//!   0 for what the kernel built, the sending socket's port id for what a
//!   process sent (`netlink_sendmsg`). Connecting the socket to the kernel
//!   refuses other processes' unicasts, but not their multicasts: a process
//!   with CAP_NET_ADMIN can send to the conntrack or rtnetlink groups.
//!   Slots from anyone but the kernel are handed out as
//!   [`Slot::Foreign`], never as data.

use std::io;
use std::mem::MaybeUninit;
use std::os::unix::io::RawFd;

/// Large enough for any single datagram the kernel builds: netlink dumps
/// fill skbs of at most 32 KiB (netlink_dump caps `max_recvmsg_len`), and an
/// event is one message of well under a page. Reads pass MSG_TRUNC, so a
/// larger datagram is detected rather than silently cut.
pub const RECEIVE_BUFFER_LEN: usize = 64 * 1024;

/// Slots one recvmmsg call fills at most. The kernel accepts up to
/// UIO_MAXIOV (1024); past a few dozen the per-call cost is already spread
/// thin (measured: 16 to 64 slots cost within 5% per datagram), and the
/// message headers of one call live on the stack (64 bytes each, plus a
/// 16-byte iovec).
pub const MAX_SLOTS: usize = 64;

/// How a socket's event reads lay out their buffers: `count` slots of
/// `len` bytes each, one datagram per slot. A datagram longer than `len`
/// is cut by the kernel and lost (counted as a parse error), so `len` must
/// hold the largest datagram the socket's kernel side ever builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiveSlots {
    /// Datagrams per call, 1 to [`MAX_SLOTS`].
    pub count: usize,
    /// Bytes per slot.
    pub len: usize,
}

impl ReceiveSlots {
    /// One slot as large as the single-datagram buffer: fits any datagram
    /// the kernel builds (see [`RECEIVE_BUFFER_LEN`]), for sockets whose
    /// datagrams are large or rare. A one-slot recvmmsg costs about a
    /// quarter more per call than recv(2) (it also copies in a msghdr and
    /// an iovec): noise for NFLOG's batched 64 KiB datagrams and for
    /// rtnetlink's rare ones.
    pub const ONE_LARGE: ReceiveSlots = ReceiveSlots {
        count: 1,
        len: RECEIVE_BUFFER_LEN,
    };
}

impl Default for ReceiveSlots {
    fn default() -> Self {
        ReceiveSlots::ONE_LARGE
    }
}

/// The outcome of one batch read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchRead {
    /// This many slots were filled (at least one, unless `max` was 0);
    /// see [`BatchReceiver::datagrams`].
    Datagrams(usize),
    /// Nothing queued (EAGAIN).
    WouldBlock,
    /// ENOBUFS: the kernel dropped datagrams for this socket. What is
    /// still queued can be read next.
    Overrun,
}

/// One filled slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot<'a> {
    /// A whole datagram from the kernel.
    Datagram(&'a [u8]),
    /// The datagram had `len` bytes, more than the slot: it was cut and
    /// must not be parsed.
    Truncated { len: usize },
    /// The datagram was sent by another process, the socket with port id
    /// `sender`: not kernel state, must not be parsed.
    Foreign { sender: u32 },
}

/// The port id of the kernel as a netlink sender.
pub const KERNEL_PORT_ID: u32 = 0;

/// What the kernel reported for one slot.
#[derive(Clone, Copy, Debug, Default)]
struct Filled {
    len: usize,
    truncated: bool,
    /// The sender's port id (`nl_pid` of the message's `msg_name`).
    sender: u32,
}

/// The slots and the result of the last read.
#[derive(Debug)]
pub struct BatchReceiver {
    slots: ReceiveSlots,
    /// `count * len` bytes, allocated by the first read: a socket that
    /// only ever does blocking request/dump exchanges never needs it.
    buf: Vec<u8>,
    /// Per slot, what the last read put there; `filled.len()` slots count.
    filled: Vec<Filled>,
    /// The only sender whose datagrams are data: the kernel, except in
    /// tests that play the kernel from a user socket.
    trusted_sender: u32,
}

impl BatchReceiver {
    /// Slots as asked for, with `count` clamped to 1..=[`MAX_SLOTS`] and
    /// `len` to at least one byte.
    pub fn new(slots: ReceiveSlots) -> Self {
        BatchReceiver {
            slots: ReceiveSlots {
                count: slots.count.clamp(1, MAX_SLOTS),
                len: slots.len.max(1),
            },
            buf: Vec::new(),
            filled: Vec::new(),
            trusted_sender: KERNEL_PORT_ID,
        }
    }

    /// Treat datagrams from `port_id` as data instead of the kernel's: for
    /// tests that queue datagrams from a user socket (through
    /// `NetlinkSocket::trust_sender`, and this module's own).
    pub fn trust_sender(&mut self, port_id: u32) {
        self.trusted_sender = port_id;
    }

    /// The slot layout in use.
    pub fn slots(&self) -> ReceiveSlots {
        self.slots
    }

    /// Read up to `max` datagrams (and at most one per slot) from `fd`
    /// without blocking. EINTR is retried.
    ///
    /// # Errors
    ///
    /// recvmmsg errors other than EAGAIN, EINTR and ENOBUFS.
    pub fn read(&mut self, fd: RawFd, max: usize) -> io::Result<BatchRead> {
        let vlen = max.min(self.slots.count);
        self.filled.clear();
        if vlen == 0 {
            return Ok(BatchRead::Datagrams(0));
        }
        if self.buf.is_empty() {
            self.buf = vec![0; self.slots.count * self.slots.len];
        }
        // Only the first `vlen` entries are written, so a call costs in
        // proportion to the datagrams it asks for.
        let mut iovecs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_SLOTS];
        let mut headers = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_SLOTS];
        // SAFETY: all-zero bytes are a valid sockaddr_nl (plain integers).
        let mut senders = [unsafe { std::mem::zeroed::<libc::sockaddr_nl>() }; MAX_SLOTS];
        for (iovec, slot) in iovecs
            .iter_mut()
            .zip(self.buf.chunks_exact_mut(self.slots.len))
            .take(vlen)
        {
            iovec.write(libc::iovec {
                iov_base: slot.as_mut_ptr().cast(),
                iov_len: slot.len(),
            });
        }
        let first_iovec = iovecs.as_mut_ptr().cast::<libc::iovec>();
        let first_sender = senders.as_mut_ptr();
        for (i, header) in headers.iter_mut().enumerate().take(vlen) {
            // SAFETY: all-zero bytes are a valid mmsghdr (a plain C struct:
            // null pointers, zero lengths and flags).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            // msg_name gets the sender's address (the kernel's port id is
            // 0); msg_control stays null: no ancillary data.
            h.msg_hdr.msg_name = first_sender.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            h.msg_hdr.msg_iov = first_iovec.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            header.write(h);
        }
        let received = loop {
            // SAFETY: the first `vlen` headers are initialised (MaybeUninit
            // has the layout of its content), each points at its own
            // initialised iovec in `iovecs`, and each of those at a distinct
            // `self.slots.len`-byte slot of `self.buf`; each also points at
            // its own sockaddr_nl in `senders`, of the size its msg_namelen
            // gives. The arrays and the buffer outlive the call and are not
            // touched while it runs. The kernel reads only those `vlen`
            // headers and writes only into their slots, their sender
            // addresses and their msg_len, msg_namelen, msg_flags and
            // msg_controllen. No timeout is passed.
            let rc = unsafe {
                libc::recvmmsg(
                    fd,
                    headers.as_mut_ptr().cast::<libc::mmsghdr>(),
                    vlen as _,
                    (libc::MSG_DONTWAIT | libc::MSG_TRUNC) as _,
                    std::ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) => return Ok(BatchRead::Overrun),
                _ if e.kind() == io::ErrorKind::WouldBlock => return Ok(BatchRead::WouldBlock),
                _ => return Err(e),
            }
        };
        // With vlen >= 1 recvmmsg returns at least one datagram or fails;
        // a 0 would be a kernel change, and is treated as "nothing queued"
        // so that no caller loops on it.
        if received == 0 {
            return Ok(BatchRead::WouldBlock);
        }
        self.filled
            .extend(
                headers[..received.min(vlen)]
                    .iter()
                    .zip(&senders)
                    .map(|(header, sender)| {
                        // SAFETY: the first `vlen` headers were initialised above.
                        let h = unsafe { header.assume_init_ref() };
                        Filled {
                            len: h.msg_len as usize,
                            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
                            sender: sender.nl_pid,
                        }
                    }),
            );
        Ok(BatchRead::Datagrams(self.filled.len()))
    }

    /// The slots the last [`read`](Self::read) filled, in queue order.
    pub fn datagrams(&self) -> impl Iterator<Item = Slot<'_>> {
        let trusted = self.trusted_sender;
        self.filled
            .iter()
            .zip(self.buf.chunks_exact(self.slots.len))
            .map(move |(filled, slot)| {
                // One compare per datagram: the sender before anything else,
                // so that a forged datagram is never parsed.
                if filled.sender != trusted {
                    return Slot::Foreign {
                        sender: filled.sender,
                    };
                }
                match slot.get(..filled.len) {
                    Some(datagram) if !filled.truncated => Slot::Datagram(datagram),
                    _ => Slot::Truncated { len: filled.len },
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
    use std::os::unix::io::AsRawFd;

    // include/uapi/linux/netlink.h: a user socket may unicast to another
    // NETLINK_USERSOCK socket without privilege, so these run unprivileged
    // (unicast to a port id reaches no other test's socket).
    const NETLINK_USERSOCK: isize = 2;

    fn bound(protocol: isize) -> (Socket, u32) {
        let mut socket = Socket::new(protocol).expect("netlink socket");
        let port = socket.bind_auto().expect("bind").port_number();
        (socket, port)
    }

    /// A netlink header of `kind` and `flags` with no payload.
    fn header(kind: u16, flags: u16) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&16u32.to_ne_bytes());
        h[4..6].copy_from_slice(&kind.to_ne_bytes());
        h[6..8].copy_from_slice(&flags.to_ne_bytes());
        h
    }

    fn read_all(receiver: &mut BatchReceiver, fd: RawFd) -> Vec<Slot<'_>> {
        // Bounded: the datagrams were queued before the read.
        for _ in 0..100 {
            match receiver.read(fd, MAX_SLOTS).expect("recvmmsg") {
                BatchRead::Datagrams(_) => break,
                BatchRead::WouldBlock => std::thread::sleep(std::time::Duration::from_millis(10)),
                BatchRead::Overrun => panic!("overrun"),
            }
        }
        receiver.datagrams().collect()
    }

    #[test]
    fn a_datagram_from_another_process_is_foreign_with_its_port_id() {
        let (forger, forger_port) = bound(NETLINK_USERSOCK);
        let (daemon, daemon_port) = bound(NETLINK_USERSOCK);
        let datagram = header(0x100, 0);
        for _ in 0..2 {
            forger
                .send_to(&datagram, &SocketAddr::new(daemon_port, 0), 0)
                .expect("unicast to the receiving socket");
        }
        let mut receiver = BatchReceiver::new(ReceiveSlots { count: 4, len: 256 });
        assert_eq!(
            read_all(&mut receiver, daemon.as_raw_fd()),
            [Slot::Foreign {
                sender: forger_port
            }; 2]
        );

        // The same datagram from a sender trusted as the kernel is data.
        forger
            .send_to(&datagram, &SocketAddr::new(daemon_port, 0), 0)
            .expect("unicast to the receiving socket");
        receiver.trust_sender(forger_port);
        assert_eq!(
            read_all(&mut receiver, daemon.as_raw_fd()),
            [Slot::Datagram(&datagram)]
        );
    }

    #[test]
    fn a_datagram_from_the_kernel_is_data() {
        // An NLMSG_NOOP request with NLM_F_ACK: rtnetlink answers with an
        // ACK (an NLMSG_ERROR of code 0) built by the kernel, port id 0.
        let (socket, _) = bound(NETLINK_ROUTE);
        let request = header(1, 1 | 4); // NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK
        socket
            .send_to(&request, &SocketAddr::new(0, 0), 0)
            .expect("send to the kernel");
        let mut receiver = BatchReceiver::new(ReceiveSlots { count: 4, len: 256 });
        let slots = read_all(&mut receiver, socket.as_raw_fd());
        assert_eq!(slots.len(), 1, "{slots:?}");
        let Slot::Datagram(ack) = slots[0] else {
            panic!("the kernel's ACK was not data: {slots:?}");
        };
        assert_eq!(u16::from_ne_bytes([ack[4], ack[5]]), 2, "NLMSG_ERROR");
    }
}
