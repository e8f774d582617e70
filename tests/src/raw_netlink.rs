//! Netlink spoken the way another process speaks it, without the daemon's
//! code: a raw socket and hand-encoded messages. For the tests that play the
//! kernel to the daemon's sockets (tests/tests/netlink_sockets.rs), that ask
//! the kernel for conntrack entries (tests/tests/netlink_conntrack.rs), and
//! for `flowlogd-forge`.

use std::io;
use std::net::Ipv4Addr;
use std::os::unix::io::{AsRawFd, RawFd};

// include/uapi/linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLA_F_NESTED: u16 = 0x8000;
// include/uapi/linux/netfilter/nfnetlink_conntrack.h
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const IPPROTO_UDP: u8 = 17;

/// A netlink socket of `protocol`, bound to a port id the kernel picks.
/// Closed on drop.
#[derive(Debug)]
pub struct RawNetlink {
    fd: RawFd,
    port_id: u32,
}

impl RawNetlink {
    /// # Errors
    /// The socket(2), bind(2) or getsockname(2) error.
    pub fn open(protocol: i32) -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // Owned from here: an error below closes it.
        let mut this = RawNetlink { fd, port_id: 0 };
        // nl_pid 0 asks the kernel to pick the port id (autobind).
        let mut addr = sockaddr_nl(0, 0);
        // SAFETY: `addr` lives across the call and its size is passed with it.
        let rc = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `addr` and `len` live across the call; `len` is its size.
        let rc = unsafe {
            libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_nl).cast(), &mut len)
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        this.port_id = addr.nl_pid;
        Ok(this)
    }

    /// The port id the kernel bound this socket to: the sender its
    /// datagrams carry.
    pub fn port_id(&self) -> u32 {
        self.port_id
    }

    /// Sends `message` as one datagram to port `port` (0: the kernel) and to
    /// the multicast `groups` (a bit mask, group n is bit n - 1).
    ///
    /// # Errors
    /// The sendto(2) error; a short send as `WriteZero`.
    pub fn send_to(&self, message: &[u8], port: u32, groups: u32) -> io::Result<()> {
        let addr = sockaddr_nl(port, groups);
        // SAFETY: `message` and `addr` live across the call, their sizes passed.
        let rc = unsafe {
            libc::sendto(
                self.fd,
                message.as_ptr().cast(),
                message.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if rc as usize != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {rc} of {} bytes", message.len()),
            ));
        }
        Ok(())
    }

    /// One datagram if one is queued, without waiting: `None` when none is
    /// (EAGAIN).
    ///
    /// # Errors
    /// Other recv(2) errors.
    pub fn try_recv(&self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 64 * 1024];
        // SAFETY: `buf` lives across the call and its length is passed.
        let rc = unsafe {
            libc::recv(
                self.fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        buf.truncate(rc as usize);
        Ok(Some(buf))
    }
}

impl AsRawFd for RawNetlink {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for RawNetlink {
    fn drop(&mut self) {
        // SAFETY: `fd` is this value's own open socket, closed only here.
        unsafe { libc::close(self.fd) };
    }
}

fn sockaddr_nl(port: u32, groups: u32) -> libc::sockaddr_nl {
    // SAFETY: all-zero is a valid sockaddr_nl.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_pid = port;
    addr.nl_groups = groups;
    addr
}

/// One netlink attribute, padded to 4 bytes. OR `kind` with
/// [`nested`]'s flag for an attribute of attributes.
pub fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    pad(&mut out);
    out
}

/// An attribute holding the attributes `value` (NLA_F_NESTED set).
pub fn nested(kind: u16, value: &[u8]) -> Vec<u8> {
    nla(kind | NLA_F_NESTED, value)
}

/// One netlink message: header (its length without the trailing padding,
/// port id 0) and `body`, padded to 4 bytes.
pub fn message(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id
    out.extend_from_slice(body);
    pad(&mut out);
    out
}

/// A ctnetlink tuple attribute `kind` (CTA_TUPLE_ORIG, CTA_TUPLE_REPLY) of
/// the UDP flow `src:sport -> dst:dport`.
pub fn udp4_tuple(kind: u16, src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut ip = nla(CTA_IP_V4_SRC, &src.octets());
    ip.extend(nla(CTA_IP_V4_DST, &dst.octets()));
    let mut proto = nla(CTA_PROTO_NUM, &[IPPROTO_UDP]);
    proto.extend(nla(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()));
    proto.extend(nla(CTA_PROTO_DST_PORT, &dport.to_be_bytes()));
    let mut tuple = nested(CTA_TUPLE_IP, &ip);
    tuple.extend(nested(CTA_TUPLE_PROTO, &proto));
    nested(kind, &tuple)
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}
