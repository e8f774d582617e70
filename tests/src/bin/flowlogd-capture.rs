//! Captures the netlink fixtures of tests/fixtures/netlink: run by
//! `tests/fixtures/netlink/capture.sh` inside the namespaces it builds (see
//! the README there), not by the tests.
//!
//! ```text
//! flowlogd-capture conntrack <dir>   ctnetlink events (NEW, UPDATE, DESTROY)
//! flowlogd-capture route <dir>       rtnetlink link and address notifications
//! ```
//!
//! It subscribes, writes `<dir>/ready`, and records every message it
//! receives. When the file `<dir>/dump-now` appears it dumps the table
//! (conntrack entries; links, then addresses) into `<dir>/dump.hex` and
//! writes `<dir>/dumped`; when `<dir>/stop` appears it writes the messages
//! into `<dir>/events.hex` and exits. Lines are `<label> <hex>`, the label
//! from the daemon's own parser (`new-tcp4`, `newaddr-10.99.1.1`, ...).
//!
//! The sockets are plain AF_NETLINK sockets opened here, not the daemon's:
//! a capture must keep every byte the kernel sent, and fail on an overrun
//! or a datagram from anyone but the kernel rather than count it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use flowlogd::model::{ConntrackEntry, ConntrackKind, RouteEvent};
use flowlogd::netlink::parsers::{parse_conntrack_message, parse_route_message, Messages};

/// How long the script may take from `ready` to `stop`.
const CAPTURE_LIMIT: Duration = Duration::from_secs(120);
/// Bound on each read of a dump's replies.
const DUMP_READ_TIMEOUT: Duration = Duration::from_secs(1);

// Kernel constants (linux/netlink.h, linux/netfilter/nfnetlink.h,
// linux/netfilter/nfnetlink_conntrack.h, linux/rtnetlink.h).
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NFNLGRP_CONNTRACK_NEW: u32 = 1;
const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTM_GETLINK: u16 = 18;
const RTM_GETADDR: u16 = 22;
/// struct nfgenmsg, struct ifinfomsg, struct ifaddrmsg.
const NFGENMSG_LEN: usize = 4;
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [family, dir] if family == "conntrack" => capture_conntrack(Path::new(dir)),
        [family, dir] if family == "route" => capture_route(Path::new(dir)),
        _ => {
            eprintln!("usage: flowlogd-capture conntrack|route <dir>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowlogd-capture: {e}");
            ExitCode::FAILURE
        }
    }
}

fn capture_conntrack(dir: &Path) -> io::Result<()> {
    let events = RawNetlink::open(
        libc::NETLINK_NETFILTER,
        &[
            NFNLGRP_CONNTRACK_NEW,
            NFNLGRP_CONNTRACK_UPDATE,
            NFNLGRP_CONNTRACK_DESTROY,
        ],
        Some(4 << 20),
    )?;
    let dump = || {
        let request = request(
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
            1,
            NFGENMSG_LEN,
        );
        let mut lines = String::new();
        dump_table(libc::NETLINK_NETFILTER, &[request], |bytes| {
            lines.push_str(&line(&conntrack_label(bytes, true), bytes));
        })?;
        Ok(lines)
    };
    capture(dir, &events, |bytes| conntrack_label(bytes, false), dump)
}

fn capture_route(dir: &Path) -> io::Result<()> {
    let events = RawNetlink::open(
        libc::NETLINK_ROUTE,
        &[RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR],
        Some(1 << 20),
    )?;
    let dump = || {
        let requests = [
            request(RTM_GETLINK, 1, IFINFOMSG_LEN),
            request(RTM_GETADDR, 2, IFADDRMSG_LEN),
        ];
        let mut lines = String::new();
        dump_table(libc::NETLINK_ROUTE, &requests, |bytes| {
            lines.push_str(&line(&route_label(bytes), bytes));
        })?;
        Ok(lines)
    };
    capture(dir, &events, route_label, dump)
}

/// The capture protocol with the script: `ready`, then events until
/// `stop`, with one dump when `dump-now` appears.
fn capture(
    dir: &Path,
    events: &RawNetlink,
    label: impl Fn(&[u8]) -> String,
    dump: impl Fn() -> io::Result<String>,
) -> io::Result<()> {
    let file = |name: &str| -> PathBuf { dir.join(name) };
    std::fs::write(file("ready"), "")?;
    let mut event_lines = String::new();
    let mut dumped = false;
    let deadline = Instant::now() + CAPTURE_LIMIT;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        if Instant::now() >= deadline {
            return Err(io::Error::other("the capture script never wrote `stop`"));
        }
        while let Some(n) = events.recv(&mut buf)? {
            for message in Messages::new(&buf[..n]) {
                let bytes = message
                    .map_err(|_| io::Error::other("a malformed netlink header"))?
                    .bytes;
                event_lines.push_str(&line(&label(bytes), bytes));
            }
        }
        if !dumped && file("dump-now").exists() {
            std::fs::write(file("dump.hex"), dump()?)?;
            std::fs::write(file("dumped"), "")?;
            dumped = true;
        }
        if file("stop").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(file("events.hex"), event_lines)
}

/// Sends each dump request in turn on a new blocking socket and hands
/// every reply message (not DONE) to `on_message`.
fn dump_table(
    protocol: i32,
    requests: &[Vec<u8>],
    mut on_message: impl FnMut(&[u8]),
) -> io::Result<()> {
    let socket = RawNetlink::open_blocking(protocol, DUMP_READ_TIMEOUT)?;
    let mut buf = vec![0u8; 1 << 16];
    for request in requests {
        socket.send(request)?;
        'datagrams: loop {
            let n = socket
                .recv(&mut buf)?
                .ok_or_else(|| io::Error::other("the dump stopped answering"))?;
            for message in Messages::new(&buf[..n]) {
                let message =
                    message.map_err(|_| io::Error::other("a malformed netlink header"))?;
                if message.flags & NLM_F_DUMP_INTR != 0 {
                    return Err(io::Error::other(
                        "the dump was interrupted by a change of the table: run the capture again",
                    ));
                }
                match message.message_type {
                    NLMSG_DONE => break 'datagrams,
                    NLMSG_ERROR => {
                        let errno = message
                            .payload
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    _ => on_message(message.bytes),
                }
            }
        }
    }
    Ok(())
}

/// A dump request: the netlink header and a zeroed family header of
/// `body_len` bytes (every family, every entry).
fn request(message_type: u16, seq: u32, body_len: usize) -> Vec<u8> {
    let len = 16 + body_len;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&u32::try_from(len).expect("small").to_ne_bytes());
    out.extend_from_slice(&message_type.to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    out.resize(len, 0);
    out
}

fn line(label: &str, bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{label} {hex}\n")
}

/// `<kind>-<protocol>` of a ctnetlink message (`destroy-tcp6`, `new-icmp`,
/// `dump-udp4`); `unparsed` if the daemon's parser refuses it.
fn conntrack_label(bytes: &[u8], dump: bool) -> String {
    match parse_conntrack_message(bytes) {
        Ok(entry) => entry_label(&entry, dump),
        Err(_) => "unparsed".to_owned(),
    }
}

fn entry_label(entry: &ConntrackEntry, dump: bool) -> String {
    let kind = match entry.kind {
        _ if dump => "dump",
        ConntrackKind::New => "new",
        ConntrackKind::Update => "update",
        ConntrackKind::Destroy => "destroy",
        ConntrackKind::Dump => "dump",
    };
    let family = if entry.orig.src.is_ipv4() { "4" } else { "6" };
    let proto = match entry.orig.protocol {
        6 => format!("tcp{family}"),
        17 => format!("udp{family}"),
        1 => "icmp".to_owned(),
        58 => "icmpv6".to_owned(),
        other => format!("proto{other}-{family}"),
    };
    format!("{kind}-{proto}")
}

/// `newlink-<name>`, `dellink-<index>`, `newaddr-<addr>`, `deladdr-<addr>`,
/// `ignored` (a message the daemon skips) or `unparsed`.
fn route_label(bytes: &[u8]) -> String {
    match parse_route_message(bytes) {
        Ok(Some(RouteEvent::LinkAdded(i))) => format!("newlink-{}", i.name),
        Ok(Some(RouteEvent::LinkRemoved { index })) => format!("dellink-{index}"),
        Ok(Some(RouteEvent::AddressAdded(a))) => format!("newaddr-{}", a.addr),
        Ok(Some(RouteEvent::AddressRemoved(a))) => format!("deladdr-{}", a.addr),
        Ok(None) => "ignored".to_owned(),
        Err(_) => "unparsed".to_owned(),
    }
}

/// An AF_NETLINK socket bound to the kernel, read whole datagram by
/// datagram.
struct RawNetlink {
    fd: OwnedFd,
}

impl RawNetlink {
    /// A non-blocking socket joined to `groups`, its receive buffer
    /// `receive_buffer_bytes` (SO_RCVBUFFORCE: the capture runs as root).
    fn open(
        protocol: i32,
        groups: &[u32],
        receive_buffer_bytes: Option<usize>,
    ) -> io::Result<RawNetlink> {
        let socket = RawNetlink::socket(protocol, libc::SOCK_NONBLOCK)?;
        for group in groups {
            socket.set_option(libc::SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, group)?;
        }
        if let Some(bytes) = receive_buffer_bytes {
            let bytes = libc::c_int::try_from(bytes).expect("a buffer size fits c_int");
            socket.set_option(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &bytes)?;
        }
        Ok(socket)
    }

    /// A blocking socket whose reads wait at most `timeout`.
    fn open_blocking(protocol: i32, timeout: Duration) -> io::Result<RawNetlink> {
        let socket = RawNetlink::socket(protocol, 0)?;
        let tv = libc::timeval {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).expect("a short timeout"),
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
        };
        socket.set_option(libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
        Ok(socket)
    }

    fn socket(protocol: i32, flags: i32) -> io::Result<RawNetlink> {
        // SAFETY: socket(2) with constant arguments; no pointers.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: socket(2) returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a sockaddr_nl of the length passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawNetlink { fd })
    }

    fn set_option<T>(&self, level: i32, name: i32, value: &T) -> io::Result<()> {
        // SAFETY: `value` points to a live T of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                std::ptr::from_ref(value).cast(),
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: `bytes` is a live buffer of the length passed.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One datagram into `buf`: its length, or `None` when none is queued
    /// (or the read timed out). An overrun, a truncated datagram and a
    /// datagram from another process than the kernel are errors.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: sockaddr_nl is plain data; all zeroes is a valid value.
        let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: `buf` and `from` are live buffers of the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
                std::ptr::addr_of_mut!(from).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(None),
                Some(libc::ENOBUFS) => {
                    Err(io::Error::other("overrun: the kernel dropped messages"))
                }
                _ => Err(e),
            };
        }
        let n = usize::try_from(n).expect("recvfrom's length is not negative");
        if n > buf.len() {
            return Err(io::Error::other(format!("a datagram of {n} bytes")));
        }
        if from.nl_pid != 0 {
            return Err(io::Error::other(format!(
                "a datagram from port {}",
                from.nl_pid
            )));
        }
        Ok(Some(n))
    }
}
