//! The socket to the syslog daemon, and how messages are framed on it.
//!
//! The `syslog` crate's own backends do not fit here: its TCP backend writes
//! messages back to back without any framing (the receiver cannot tell where
//! one ends), and both stream backends go through a `BufWriter`, which hides
//! how much of a batch the socket actually took. So this module owns the
//! sockets; the crate formats the messages.
//!
//! Framing:
//! - unix datagram socket (what `/dev/log` is on Linux) and UDP: one message
//!   per datagram;
//! - TCP: octet counting, `"<length> <message>"` (RFC 6587 section 3.4.1, the
//!   framing RFC 5425 mandates). rsyslog's imtcp accepts it by default
//!   (`SupportOctetCountedFraming="on"`), as does syslog-ng's `syslog()`
//!   source. Unlike newline framing it is exact for any content, and a frame
//!   cut short by a dropped connection is discarded by the receiver ("Incomplete
//!   frame at end of stream") instead of being logged as a truncated record,
//!   which matters because the whole message is sent again on the next
//!   connection;
//! - a unix stream socket (some syslog-ng setups): each message followed by a
//!   NUL byte, as glibc's syslog(3) does.
//!
//! The residual window. "Sent" means the socket took the bytes, not that the
//! server processed them: syslog over TCP has no acknowledgement above TCP's.
//! [`Connection::peer_state`] catches a server that went away *between*
//! batches before anything is written. Records written while the server is
//! going away (in flight, or unread in its receive buffer when it exits) are
//! lost: at most what the socket buffers hold, about one batch. The next
//! batch's check sees the RST this causes and the sink logs a warning, but
//! which records were lost cannot be known, so none is resent. On the unix
//! datagram socket the same holds for datagrams queued when the daemon exits
//! (unreported); UDP promises nothing at all.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::Duration;

use crate::options::{Address, Transport};

/// Bounds every connect and send, so that a call returns within seconds
/// (the ABI asks for it) even if the daemon stops reading.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// TCP keepalive: an idle connection to a server that vanished without a
/// FIN (host crash, network partition) is noticed within about a minute and
/// a half instead of the kernel's default two hours.
const KEEPALIVE_IDLE_SECS: libc::c_int = 60;
const KEEPALIVE_INTERVAL_SECS: libc::c_int = 10;
const KEEPALIVE_PROBES: libc::c_int = 3;

/// How messages are delimited on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One message per datagram.
    Datagram,
    /// `"<length> <message>"` (RFC 6587 octet counting).
    OctetCounting,
    /// `"<message>\0"` (syslog(3) on a stream socket).
    NulTerminated,
}

/// The framed messages of a batch, back to back.
#[derive(Default)]
pub struct Frames {
    bytes: Vec<u8>,
    /// The end offset of each frame in `bytes`.
    ends: Vec<usize>,
}

impl Frames {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Appends `message` framed by `framing`.
    pub fn push(&mut self, framing: Framing, message: &[u8]) {
        match framing {
            Framing::Datagram => self.bytes.extend_from_slice(message),
            Framing::OctetCounting => {
                self.bytes
                    .extend_from_slice(format!("{} ", message.len()).as_bytes());
                self.bytes.extend_from_slice(message);
            }
            Framing::NulTerminated => {
                self.bytes.extend_from_slice(message);
                self.bytes.push(0);
            }
        }
        self.ends.push(self.bytes.len());
    }

    /// How many whole frames the first `bytes` bytes hold.
    fn complete_within(&self, bytes: usize) -> usize {
        self.ends.partition_point(|end| *end <= bytes)
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.bytes[start..end])
    }
}

/// A send that failed: how many frames went out before it, and why.
#[derive(Debug)]
pub struct SendError {
    pub sent: usize,
    pub error: io::Error,
}

/// Whether a stream connection is still usable.
#[derive(Debug, PartialEq, Eq)]
pub enum PeerState {
    Open,
    /// The peer closed (FIN) after reading everything we sent: nothing lost.
    ClosedClean,
    /// The peer reset the connection, or closed it while bytes we sent were
    /// unread or unacknowledged: those were lost. Why, for the log.
    ClosedLosing(String),
}

enum Socket {
    UnixDatagram(UnixDatagram),
    UnixStream(UnixStream),
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// One connection to the syslog daemon.
pub struct Connection {
    socket: Socket,
}

impl Connection {
    /// Connects to `transport`, resolving a host name now (so a reconnect
    /// follows DNS changes).
    ///
    /// # Errors
    /// Resolution, socket and connect errors, each within [`IO_TIMEOUT`]
    /// (name resolution excepted: it is the resolver's own timeout).
    pub fn open(transport: &Transport) -> io::Result<Connection> {
        let socket = match transport {
            Transport::Unix(path) => connect_unix(path)?,
            Transport::Udp(address) => Socket::Udp(connect_udp(address)?),
            Transport::Tcp(address) => Socket::Tcp(connect_tcp(address)?),
        };
        Ok(Connection { socket })
    }

    pub fn framing(&self) -> Framing {
        match self.socket {
            Socket::UnixDatagram(_) | Socket::Udp(_) => Framing::Datagram,
            Socket::UnixStream(_) => Framing::NulTerminated,
            Socket::Tcp(_) => Framing::OctetCounting,
        }
    }

    /// Whether the peer closed a stream connection; datagram sockets are
    /// always `Open` (a dead peer fails the next send instead).
    ///
    /// This matters before every batch: a write into a TCP connection the
    /// peer already closed succeeds, and the bytes vanish (the peer answers
    /// them with a RST that fails only the write after). A non-blocking
    /// `recv(MSG_PEEK)` sees the FIN or the RST first. Together with the
    /// pending socket error and the bytes still unacknowledged it also tells
    /// whether what we sent before was all read: the kernel answers a
    /// `close()` with unread data by a RST, not a FIN.
    pub fn peer_state(&self) -> PeerState {
        let fd = match &self.socket {
            Socket::UnixDatagram(_) | Socket::Udp(_) => return PeerState::Open,
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::UnixStream(s) => s.as_raw_fd(),
        };
        let mut byte = 0u8;
        // SAFETY: `fd` is an open socket owned by `self`; the buffer is one
        // valid, writable byte. MSG_DONTWAIT: never blocks.
        let n = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n > 0 {
            // The server sent something; plain syslog servers never do, and
            // leaving it unread does no harm.
            return PeerState::Open;
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => PeerState::Open,
                _ => PeerState::ClosedLosing(e.to_string()),
            };
        }
        // A FIN. A RST after it (our bytes reached a closed socket) leaves
        // its error pending rather than failing the recv.
        let pending = match &self.socket {
            Socket::Tcp(s) => s.take_error(),
            Socket::UnixStream(s) => s.take_error(),
            Socket::UnixDatagram(_) | Socket::Udp(_) => Ok(None),
        };
        match pending {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return PeerState::ClosedLosing(e.to_string()),
        }
        match unacknowledged_bytes(fd) {
            Some(0) | None => PeerState::ClosedClean,
            Some(n) => PeerState::ClosedLosing(format!("{n} bytes sent were not acknowledged")),
        }
    }

    /// Sends every frame.
    ///
    /// # Errors
    /// The first failure, with how many whole frames the socket took before
    /// it. After an error the connection must be dropped: a stream may hold
    /// part of a frame.
    pub fn send(&mut self, frames: &Frames) -> Result<(), SendError> {
        match &self.socket {
            Socket::UnixDatagram(s) => send_datagrams(frames, |d| s.send(d)),
            Socket::Udp(s) => send_datagrams(frames, |d| s.send(d)),
            Socket::UnixStream(s) => send_stream(s.as_raw_fd(), frames),
            Socket::Tcp(s) => send_stream(s.as_raw_fd(), frames),
        }
    }
}

fn connect_unix(path: &Path) -> io::Result<Socket> {
    let dgram = UnixDatagram::unbound()?;
    match dgram.connect(path) {
        Ok(()) => {
            // A full receive queue blocks the send (that is the unix
            // socket's flow control): bound how long.
            dgram.set_write_timeout(Some(IO_TIMEOUT))?;
            Ok(Socket::UnixDatagram(dgram))
        }
        // The daemon listens on a stream socket there.
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
            let stream = UnixStream::connect(path)?;
            stream.set_write_timeout(Some(IO_TIMEOUT))?;
            Ok(Socket::UnixStream(stream))
        }
        Err(e) => Err(e),
    }
}

fn resolve(address: &Address) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (address.host.as_str(), address.port)
        .to_socket_addrs()?
        .collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} resolves to no address", address.host),
        ));
    }
    Ok(addrs)
}

fn connect_udp(address: &Address) -> io::Result<UdpSocket> {
    let mut last = None;
    for addr in resolve(address)? {
        let local: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        // Connected, so that an ICMP "port unreachable" for an earlier
        // datagram fails a later send (ECONNREFUSED) instead of vanishing.
        let attempt = UdpSocket::bind(local).and_then(|s| {
            s.connect(addr)?;
            s.set_write_timeout(Some(IO_TIMEOUT))?;
            Ok(s)
        });
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("resolve returns at least one address"))
}

fn connect_tcp(address: &Address) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in resolve(address)? {
        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Ok(s) => {
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                set_keepalive(s.as_raw_fd())?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("resolve returns at least one address"))
}

fn set_keepalive(fd: RawFd) -> io::Result<()> {
    for (level, name, value) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_SECS),
        (
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            KEEPALIVE_INTERVAL_SECS,
        ),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES),
    ] {
        // SAFETY: `fd` is an open TCP socket; the option value is a c_int
        // that lives across the call, and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Bytes in the send queue the peer has not acknowledged (SIOCOUTQ).
fn unacknowledged_bytes(fd: RawFd) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is an open stream socket; TIOCOUTQ (= SIOCOUTQ) writes
    // one c_int to the valid pointer.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    (rc == 0).then(|| usize::try_from(n).unwrap_or(0))
}

fn send_datagrams(
    frames: &Frames,
    mut send: impl FnMut(&[u8]) -> io::Result<usize>,
) -> Result<(), SendError> {
    for (sent, datagram) in frames.iter().enumerate() {
        loop {
            match send(datagram) {
                Ok(n) if n == datagram.len() => break,
                Ok(n) => {
                    return Err(SendError {
                        sent,
                        error: io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("the socket took {n} of a {}-byte datagram", datagram.len()),
                        ),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(SendError { sent, error }),
            }
        }
    }
    Ok(())
}

fn send_stream(fd: RawFd, frames: &Frames) -> Result<(), SendError> {
    let bytes = &frames.bytes;
    let mut written = 0;
    while written < bytes.len() {
        let rest = &bytes[written..];
        // SAFETY: `fd` is an open stream socket owned by the caller; `rest`
        // is valid for `rest.len()` bytes. MSG_NOSIGNAL: a closed peer is
        // an EPIPE error here, never a SIGPIPE to the whole daemon.
        let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(SendError {
                sent: frames.complete_within(written),
                error: e,
            });
        }
        written += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::time::Instant;

    fn frames(framing: Framing, messages: &[&str]) -> Frames {
        let mut f = Frames::default();
        for m in messages {
            f.push(framing, m.as_bytes());
        }
        f
    }

    fn tcp_to(listener: &TcpListener) -> Connection {
        let port = listener.local_addr().unwrap().port();
        Connection::open(&Transport::Tcp(Address {
            host: "127.0.0.1".into(),
            port,
        }))
        .unwrap()
    }

    /// The peer state once `done` holds for it, or the last one seen after
    /// 5 s.
    fn wait_for_state(c: &Connection, done: impl Fn(&PeerState) -> bool) -> PeerState {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let s = c.peer_state();
            if done(&s) || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn state_after_close(c: &Connection) -> PeerState {
        wait_for_state(c, |s| *s != PeerState::Open)
    }

    fn is_losing(s: &PeerState) -> bool {
        matches!(s, PeerState::ClosedLosing(_))
    }

    struct ScratchPath(PathBuf);

    impl ScratchPath {
        fn new(name: &str) -> ScratchPath {
            let p = std::env::temp_dir().join(format!(
                "flowlogd-sink-syslog-{name}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&p);
            ScratchPath(p)
        }
    }

    impl Drop for ScratchPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn frames_count_what_a_partial_write_completed() {
        let f = frames(Framing::OctetCounting, &["ab", "cde"]);
        assert_eq!(f.bytes, b"2 ab3 cde");
        assert_eq!(f.complete_within(0), 0);
        assert_eq!(f.complete_within(3), 0);
        assert_eq!(f.complete_within(4), 1);
        assert_eq!(f.complete_within(8), 1);
        assert_eq!(f.complete_within(9), 2);
        let f = frames(Framing::NulTerminated, &["ab", "c"]);
        assert_eq!(f.bytes, b"ab\0c\0");
        let f = frames(Framing::Datagram, &["ab", "c"]);
        assert_eq!(f.iter().collect::<Vec<_>>(), [&b"ab"[..], b"c"]);
    }

    #[test]
    fn tcp_frames_by_octet_counting() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = tcp_to(&listener);
        assert_eq!(c.framing(), Framing::OctetCounting);
        c.send(&frames(
            Framing::OctetCounting,
            &["<134>one", "<134>two words"],
        ))
        .unwrap();
        drop(c);
        let (mut peer, _) = listener.accept().unwrap();
        let mut got = String::new();
        peer.read_to_string(&mut got).unwrap();
        assert_eq!(got, "8 <134>one14 <134>two words");
    }

    #[test]
    fn a_clean_close_by_the_peer_is_seen_before_writing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = tcp_to(&listener);
        let (mut peer, _) = listener.accept().unwrap();
        c.send(&frames(Framing::OctetCounting, &["x"])).unwrap();
        let mut buf = [0u8; 3];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(c.peer_state(), PeerState::Open);
        // Everything read, then closed: a FIN, and nothing was lost.
        drop(peer);
        assert_eq!(state_after_close(&c), PeerState::ClosedClean);
    }

    #[test]
    fn a_close_with_unread_data_is_reported_as_losing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = tcp_to(&listener);
        let (peer, _) = listener.accept().unwrap();
        c.send(&frames(Framing::OctetCounting, &["unread"]))
            .unwrap();
        // Give the bytes time to arrive, then close without reading: the
        // kernel answers with a RST.
        std::thread::sleep(Duration::from_millis(50));
        drop(peer);
        let s = wait_for_state(&c, is_losing);
        assert!(is_losing(&s), "{s:?}");
    }

    #[test]
    fn a_write_after_the_peer_closed_is_reported_as_losing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = tcp_to(&listener);
        let (peer, _) = listener.accept().unwrap();
        drop(peer);
        assert_eq!(state_after_close(&c), PeerState::ClosedClean);
        // What the check exists for: this write "succeeds" and is lost.
        c.send(&frames(Framing::OctetCounting, &["vanishes"]))
            .unwrap();
        // The peer answers with a RST, which the check reports.
        let s = wait_for_state(&c, is_losing);
        assert!(is_losing(&s), "{s:?}");
    }

    #[test]
    fn unix_datagram_socket_and_a_dead_peer() {
        let path = ScratchPath::new("dgram.sock");
        let server = UnixDatagram::bind(&path.0).unwrap();
        let mut c = Connection::open(&Transport::Unix(path.0.clone())).unwrap();
        assert_eq!(c.framing(), Framing::Datagram);
        c.send(&frames(Framing::Datagram, &["one", "two"])).unwrap();
        let mut buf = [0u8; 16];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"one");
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"two");
        assert_eq!(c.peer_state(), PeerState::Open);
        drop(server);
        let e = c.send(&frames(Framing::Datagram, &["three"])).unwrap_err();
        assert_eq!(e.sent, 0);
        assert_eq!(e.error.kind(), io::ErrorKind::ConnectionRefused, "{e:?}");
    }

    #[test]
    fn unix_stream_socket_frames_with_nul() {
        let path = ScratchPath::new("stream.sock");
        let listener = UnixListener::bind(&path.0).unwrap();
        let mut c = Connection::open(&Transport::Unix(path.0.clone())).unwrap();
        assert_eq!(c.framing(), Framing::NulTerminated);
        c.send(&frames(Framing::NulTerminated, &["one", "two"]))
            .unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let mut buf = [0u8; 8];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"one\0two\0");
        drop(peer);
        assert_eq!(state_after_close(&c), PeerState::ClosedClean);
    }

    #[test]
    fn nothing_listening_fails_to_connect() {
        let path = ScratchPath::new("absent.sock");
        assert!(Connection::open(&Transport::Unix(path.0.clone())).is_err());
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = Connection::open(&Transport::Tcp(Address {
            host: "127.0.0.1".into(),
            port,
        }))
        .err()
        .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }
}
