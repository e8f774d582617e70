//! The socket to the collector: one UDP socket (one message per datagram)
//! or one TCP connection (messages back to back: IPFIX's own length field
//! frames them, RFC 7011 §10.4).
//!
//! What "sent" means: the socket took the bytes. IPFIX has no
//! acknowledgement above the transport's; over TCP the kernel then
//! retransmits until the collector's kernel has them, over UDP nothing
//! does. See the README's delivery section.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::message::Messages;
use crate::options::{Address, Transport};

/// Bounds every connect and send, so that a call returns within seconds
/// (the ABI asks for it) even if the collector stops reading.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// A send that failed: how many data records the whole messages sent
/// before it held, and why.
#[derive(Debug)]
pub struct SendError {
    pub records_sent: usize,
    pub error: io::Error,
}

/// What a send saw besides success.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SendNotes {
    /// An ICMP "port unreachable" for an earlier datagram came back (UDP):
    /// the collector was not listening, what went before was lost.
    pub refused_earlier: bool,
}

pub enum Connection {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl Connection {
    /// Connects to the collector, resolving a host name now (so a
    /// reconnect follows DNS changes).
    ///
    /// # Errors
    /// Resolution, socket and connect errors, each within [`IO_TIMEOUT`]
    /// (name resolution excepted: it is the resolver's own timeout).
    pub fn open(transport: Transport, address: &Address) -> io::Result<Connection> {
        let addrs: Vec<SocketAddr> = (address.host.as_str(), address.port)
            .to_socket_addrs()?
            .collect();
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} resolves to no address", address.host),
        );
        for addr in addrs {
            let attempt = match transport {
                Transport::Udp => connect_udp(addr).map(Connection::Udp),
                Transport::Tcp => connect_tcp(addr).map(Connection::Tcp),
            };
            match attempt {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Whether the collector closed a TCP connection (FIN or RST). A write
    /// into a connection the peer already closed succeeds and the bytes
    /// vanish, so this is checked before every batch. Collectors send
    /// nothing over IPFIX's TCP, so a readable byte never happens; EOF or
    /// an error means closed.
    pub fn peer_closed(&self) -> Option<String> {
        let Connection::Tcp(s) = self else {
            return None;
        };
        let mut byte = 0u8;
        // SAFETY: the fd is an open socket owned by `s`; the buffer is one
        // valid, writable byte. MSG_DONTWAIT: never blocks.
        let n = unsafe {
            libc::recv(
                s.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => Some("the collector closed the connection".to_owned()),
            n if n > 0 => None,
            _ => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => None,
                    _ => Some(e.to_string()),
                }
            }
        }
    }

    /// Sends every message.
    ///
    /// # Errors
    /// The first failure, with how many data records the whole messages
    /// before it held. After an error a TCP connection must be dropped: it
    /// may hold part of a message.
    pub fn send(&mut self, messages: &Messages) -> Result<SendNotes, SendError> {
        match self {
            Connection::Udp(s) => send_datagrams(s, messages),
            Connection::Tcp(s) => send_stream(s, messages).map(|()| SendNotes::default()),
        }
    }
}

fn connect_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    // Connected: the source port, and so the transport session the
    // collector keys templates and sequence numbers by, stays the same for
    // the socket's life; and an ICMP "port unreachable" is reported.
    let s = UdpSocket::bind(local)?;
    s.connect(addr)?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    // Records are written in whole batches; no need to wait for more.
    s.set_nodelay(true)?;
    Ok(s)
}

fn send_datagrams(s: &UdpSocket, messages: &Messages) -> Result<SendNotes, SendError> {
    let mut notes = SendNotes::default();
    for (i, datagram) in messages.iter().enumerate() {
        let records_sent = if i == 0 { 0 } else { messages.ends[i - 1].1 };
        let mut refused_retries = 0;
        loop {
            match s.send(datagram) {
                Ok(n) if n == datagram.len() => break,
                Ok(n) => {
                    return Err(SendError {
                        records_sent,
                        error: io::Error::new(
                            io::ErrorKind::WriteZero,
                            format!("the socket took {n} of a {}-byte datagram", datagram.len()),
                        ),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The error is an earlier datagram's (the kernel reports a
                // pending ICMP error at the next send, which it does not
                // send): this one goes again, once.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && refused_retries == 0 => {
                    refused_retries += 1;
                    notes.refused_earlier = true;
                }
                Err(error) => {
                    return Err(SendError {
                        records_sent,
                        error,
                    })
                }
            }
        }
    }
    Ok(notes)
}

fn send_stream(s: &TcpStream, messages: &Messages) -> Result<(), SendError> {
    let bytes = &messages.bytes;
    let mut written = 0;
    while written < bytes.len() {
        let rest = &bytes[written..];
        // SAFETY: the fd is an open stream socket owned by `s`; `rest` is
        // valid for `rest.len()` bytes. MSG_NOSIGNAL: a closed peer is an
        // EPIPE error here, never a SIGPIPE to the whole daemon.
        let n = unsafe {
            libc::send(
                s.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(SendError {
                records_sent: messages.records_within(written),
                error: e,
            });
        }
        written += n as usize;
    }
    Ok(())
}
