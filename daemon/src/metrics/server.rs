//! `GET /metrics` over HTTP/1.1 on a std `TcpListener`, one thread, one
//! connection at a time. A crate (tiny_http, hyper) would bring a thread
//! pool or an async runtime for one read-only page scraped every few
//! seconds; this is a request line, a bounded read and one reply.
//!
//! Bounds: a request larger than [`MAX_REQUEST_BYTES`] or slower than
//! [`REQUEST_TIMEOUT`] is answered with an error or dropped; the reply is
//! written with the same timeout. A client that stalls delays the next
//! scrape by at most that long and never reaches the capture loop.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::exposition::render;
use super::snapshot::SnapshotCell;
use crate::sinks::SinkProbe;

/// The largest request read: a scrape's request line and headers are a
/// few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// The longest a connection may take to send its request, and to take the
/// reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The metrics endpoint: a bound listener and the cell it serves from.
pub struct MetricsServer {
    listener: TcpListener,
    cell: Arc<SnapshotCell>,
}

impl MetricsServer {
    /// Binds `addr`.
    ///
    /// # Errors
    /// The bind's error (address in use, not an address of this host, a
    /// port below 1024 without the privilege).
    pub fn bind(addr: SocketAddr, cell: Arc<SnapshotCell>) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        Ok(MetricsServer { listener, cell })
    }

    /// The address bound (its port, if `addr` asked for port 0).
    ///
    /// # Errors
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves on a thread of its own for the rest of the process.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(self) -> io::Result<()> {
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || self.serve())
            .map(|_| ())
    }

    fn serve(self) {
        for conn in self.listener.incoming() {
            match conn {
                Ok(stream) => {
                    if let Err(e) = answer(stream, &self.cell) {
                        log::debug!("metrics: a request failed: {e}");
                    }
                }
                Err(e) => {
                    // Out of descriptors and the like: do not spin.
                    log::warn!("metrics: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics { head_only: bool },
    NotFound,
    MethodNotAllowed,
    Bad,
    TooLarge,
}

fn answer(mut stream: TcpStream, cell: &SnapshotCell) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let head = read_head(&mut stream)?;
    let (status, body) = match parse(&head) {
        Request::Metrics { head_only } => {
            let snapshot = cell.latest();
            let sinks: Vec<_> = snapshot.sinks.iter().map(SinkProbe::read).collect();
            let page = render(&snapshot, &sinks);
            return reply(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &page,
                head_only,
            );
        }
        Request::NotFound => ("404 Not Found", "not found: the metrics are at /metrics\n"),
        Request::MethodNotAllowed => ("405 Method Not Allowed", "only GET /metrics\n"),
        Request::Bad => ("400 Bad Request", "bad request\n"),
        Request::TooLarge => ("431 Request Header Fields Too Large", "request too large\n"),
    };
    reply(
        &mut stream,
        status,
        "text/plain; charset=utf-8",
        body,
        false,
    )
}

/// The request line and headers, up to the blank line, at most
/// [`MAX_REQUEST_BYTES`] (what is read past that is not looked at).
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    read_bounded(stream, MAX_REQUEST_BYTES, REQUEST_TIMEOUT, |head| {
        head.windows(4).any(|w| w == b"\r\n\r\n")
    })
}

/// Reads until `complete` holds, end of stream, or more than `max` bytes
/// (the caller tells which); an error if that takes longer than `timeout`
/// in all. The socket's own timeout bounds each read; this bounds them
/// all, for a client that trickles a byte at a time. Shared by the metrics
/// and control servers.
pub(crate) fn read_bounded(
    stream: &mut impl Read,
    max: usize,
    timeout: Duration,
    complete: impl Fn(&[u8]) -> bool,
) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !complete(&out) && out.len() <= max {
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request not complete in time",
            ));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(out)
}

fn parse(head: &[u8]) -> Request {
    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if head.len() > MAX_REQUEST_BYTES {
            Request::TooLarge
        } else {
            Request::Bad
        };
    };
    if end > MAX_REQUEST_BYTES {
        return Request::TooLarge;
    }
    let Ok(text) = std::str::from_utf8(&head[..end]) else {
        return Request::Bad;
    };
    let line = text.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Request::Bad;
    }
    let path = target.split('?').next().unwrap_or("");
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::MethodNotAllowed,
    };
    if path == "/metrics" {
        Request::Metrics { head_only }
    } else {
        Request::NotFound
    }
}

fn reply(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out `data` one byte per read, each after `delay`.
    struct Trickle<'a> {
        data: &'a [u8],
        delay: Duration,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.delay);
            let Some((&b, rest)) = self.data.split_first() else {
                return Ok(0);
            };
            buf[0] = b;
            self.data = rest;
            Ok(1)
        }
    }

    #[test]
    fn a_bounded_read_stops_when_complete_at_the_bound_at_eof_or_at_the_deadline() {
        let newline = |b: &[u8]| b.contains(&b'\n');
        let fast = Duration::ZERO;
        let mut r = Trickle {
            data: b"ab\ncd",
            delay: fast,
        };
        let got = read_bounded(&mut r, 16, Duration::from_secs(5), newline).unwrap();
        assert_eq!(got, b"ab\n");
        let mut r = Trickle {
            data: b"abcdefgh",
            delay: fast,
        };
        let got = read_bounded(&mut r, 4, Duration::from_secs(5), newline).unwrap();
        assert_eq!(got, b"abcde", "stops once past the bound");
        let mut r = Trickle {
            data: b"ab",
            delay: fast,
        };
        let got = read_bounded(&mut r, 16, Duration::from_secs(5), newline).unwrap();
        assert_eq!(got, b"ab", "end of stream");
        let mut r = Trickle {
            data: b"abcdefgh\n",
            delay: Duration::from_millis(20),
        };
        let e = read_bounded(&mut r, 16, Duration::from_millis(50), newline).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn requests_are_told_apart_by_method_and_path() {
        let get =
            |target: &str| parse(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(get("/metrics"), Request::Metrics { head_only: false });
        assert_eq!(get("/metrics?x=1"), Request::Metrics { head_only: false });
        assert_eq!(get("/"), Request::NotFound);
        assert_eq!(get("/metrics/x"), Request::NotFound);
        assert_eq!(
            parse(b"HEAD /metrics HTTP/1.0\r\n\r\n"),
            Request::Metrics { head_only: true }
        );
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::MethodNotAllowed
        );
        assert_eq!(parse(b"GET /metrics\r\n\r\n"), Request::Bad);
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\n"), Request::Bad);
        assert_eq!(parse(b"GET /metrics SPDY/3\r\n\r\n"), Request::Bad);
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST_BYTES + 10, b'a');
        assert_eq!(parse(&big), Request::TooLarge);
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&big), Request::TooLarge);
    }

    /// The server on an ephemeral loopback port, and one exchange with it.
    fn exchange(request: &[u8]) -> String {
        let cell = Arc::new(SnapshotCell::default());
        let mut snapshot = crate::metrics::Snapshot::default();
        snapshot.counters.conntrack_events = 42;
        cell.publish(snapshot);
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), cell).unwrap();
        let addr = server.local_addr().unwrap();
        server.spawn().unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(request).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn get_metrics_is_the_page_and_anything_else_is_not() {
        let ok = exchange(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{ok}"
        );
        assert!(
            ok.contains("\nflowlogd_conntrack_events_total 42\n"),
            "{ok}"
        );
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{head}"
        );

        let other = exchange(b"GET / HTTP/1.1\r\n\r\n");
        assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n"), "{other}");
        assert!(!other.contains("flowlogd_"), "{other}");
        let post = exchange(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    }
}
