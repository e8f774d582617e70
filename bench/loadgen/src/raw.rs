//! A raw IPv4 socket (IP_HDRINCL) that sends batches of prebuilt packets
//! with one sendmmsg(2) each: the generator can then give every flow its
//! own source address and port without a socket (and a bind) per flow,
//! which is what keeps it above 100k new flows a second on one core.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Largest packet the generator builds (under the veth's 1500 MTU).
pub const MAX_PACKET: usize = 1280;

/// What the generator needs to know about a packet once it is sent: which
/// ground-truth counter it goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// A packet of an accepted UDP flow; `first` for the flow's first packet.
    Flow { first: bool },
    /// A packet the VM side's firewall drops and logs.
    Drop,
}

/// Packets built and sent per sendmmsg.
pub struct Batch {
    buf: Vec<u8>,
    lens: Vec<usize>,
    tags: Vec<Tag>,
    capacity: usize,
}

impl Batch {
    pub fn new(capacity: usize) -> Batch {
        Batch {
            buf: vec![0; capacity * MAX_PACKET],
            lens: Vec::with_capacity(capacity),
            tags: Vec::with_capacity(capacity),
            capacity,
        }
    }

    /// The first `n` packets' tags and IP-layer lengths.
    pub fn sent(&self, n: usize) -> impl Iterator<Item = (Tag, usize)> + '_ {
        self.tags
            .iter()
            .copied()
            .zip(self.lens.iter().copied())
            .take(n)
    }

    pub fn is_full(&self) -> bool {
        self.lens.len() == self.capacity
    }

    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Builds the next packet in place with `write` (which returns its
    /// length) and returns that length.
    ///
    /// # Panics
    /// If the batch is full or the packet is larger than [`MAX_PACKET`].
    pub fn push(&mut self, tag: Tag, write: impl FnOnce(&mut [u8]) -> usize) -> usize {
        assert!(!self.is_full(), "batch is full");
        let at = self.lens.len() * MAX_PACKET;
        let len = write(&mut self.buf[at..at + MAX_PACKET]);
        assert!(len <= MAX_PACKET);
        self.lens.push(len);
        self.tags.push(tag);
        len
    }

    pub fn clear(&mut self) {
        self.lens.clear();
        self.tags.clear();
    }
}

/// An IPPROTO_RAW socket: every packet carries its own IPv4 header.
pub struct RawSender {
    fd: OwnedFd,
    dst: libc::sockaddr_in,
}

impl RawSender {
    /// Opens the socket; packets go to `dst` (routing uses this address,
    /// the header's destination must be the same).
    ///
    /// # Errors
    /// socket(2) (needs CAP_NET_RAW).
    pub fn open(dst: Ipv4Addr, send_buffer: usize) -> io::Result<RawSender> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let size = libc::c_int::try_from(send_buffer).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt with a pointer to a live int and its size. A
        // bigger send buffer only lets more packets be in flight; failure
        // is harmless (the default works, blocking a little more often).
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(dst).to_be();
        Ok(RawSender { fd, dst: sa })
    }

    /// Sends the packets of `batch` in order and returns how many the
    /// kernel took: all of them unless an error stopped it, in which case
    /// the first that many (see [`Batch::sent`]), so the ground truth stays
    /// exact either way. The caller clears the batch.
    ///
    /// # Errors
    /// A sendmmsg error before any packet of a call was sent, other than
    /// EINTR/ENOBUFS/EAGAIN, which are retried.
    pub fn send(&mut self, batch: &mut Batch) -> io::Result<usize> {
        let n = batch.len();
        let mut iov: Vec<libc::iovec> = (0..n)
            .map(|i| libc::iovec {
                iov_base: batch.buf[i * MAX_PACKET..].as_mut_ptr().cast(),
                iov_len: batch.lens[i],
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: msghdr is plain data; all-zero is a valid value.
                let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                h.msg_name = (&mut self.dst as *mut libc::sockaddr_in).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                h.msg_iov = v;
                h.msg_iovlen = 1;
                libc::mmsghdr {
                    msg_hdr: h,
                    msg_len: 0,
                }
            })
            .collect();
        let mut sent = 0;
        // Bounded: each round either sends something, or waits on a
        // transient error; a persistent error ends it.
        let mut stalls = 0u32;
        while sent < n {
            // SAFETY: `msgs[sent..]` are valid mmsghdrs whose iovecs point
            // into `batch.buf` and whose names point at `self.dst`, all
            // alive and unmoved for the duration of the call.
            let rc = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs[sent..].as_mut_ptr(),
                    (n - sent) as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                sent += rc as usize;
                stalls = 0;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::ENOBUFS | libc::EAGAIN) if stalls < 10_000 => {
                    stalls += 1;
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
                _ => return if sent > 0 { Ok(sent) } else { Err(e) },
            }
        }
        Ok(sent)
    }
}
