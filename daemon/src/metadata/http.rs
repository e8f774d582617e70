//! A minimal HTTP/1.1 client for one job: GET a small text document from
//! the instance metadata service, which is plain http on an address only
//! the VM itself can reach. One request per connection (`Connection:
//! close`), a bounded response, a deadline on every step. No TLS, no
//! redirects, no keep-alive: the service needs none, and a general HTTP
//! client would be most of the daemon's dependency tree.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::http_url::HttpUrl;

/// Metadata documents are a few bytes to a few KiB; anything bigger is not
/// the service we meant to ask.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// A response: status code and body (chunked encoding undone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Why a GET failed.
#[derive(Debug)]
pub enum HttpError {
    Resolve(io::Error),
    Connect(io::Error),
    Io(io::Error),
    Timeout,
    Malformed(&'static str),
    TooLarge,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Resolve(e) => write!(f, "cannot resolve the host: {e}"),
            HttpError::Connect(e) => write!(f, "cannot connect: {e}"),
            HttpError::Io(e) => write!(f, "{e}"),
            HttpError::Timeout => f.write_str("no complete answer in time"),
            HttpError::Malformed(what) => write!(f, "malformed HTTP response: {what}"),
            HttpError::TooLarge => write!(f, "response larger than {MAX_RESPONSE_BYTES} bytes"),
        }
    }
}

impl std::error::Error for HttpError {}

/// GET `url`, all of it within `timeout`.
///
/// # Errors
/// An [`HttpError`] for every way it can fail; never panics on what the
/// server sends.
pub fn get(url: &HttpUrl, timeout: Duration) -> Result<Response, HttpError> {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(HttpError::Resolve)?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for addr in addrs {
        let left = remaining(deadline)?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or(HttpError::Connect(last))?;
    stream
        .set_write_timeout(Some(remaining(deadline)?))
        .map_err(HttpError::Io)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: flowlogd/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority(),
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| io_or_timeout(e, deadline))?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(response) = parse_response(&buf, false)? {
            return Ok(response);
        }
        stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(HttpError::Io)?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return parse_response(&buf, true)?
                    .ok_or(HttpError::Malformed("connection closed mid-response"))
            }
            Ok(n) => {
                if buf.len() + n > MAX_RESPONSE_BYTES {
                    return Err(HttpError::TooLarge);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_or_timeout(e, deadline)),
        }
    }
}

fn remaining(deadline: Instant) -> Result<Duration, HttpError> {
    let left = deadline.saturating_duration_since(Instant::now());
    // A zero timeout means "none" to the socket calls.
    if left.is_zero() {
        Err(HttpError::Timeout)
    } else {
        Ok(left)
    }
}

fn io_or_timeout(e: io::Error, deadline: Instant) -> HttpError {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) || Instant::now() >= deadline
    {
        HttpError::Timeout
    } else {
        HttpError::Io(e)
    }
}

/// The response in `buf`, if it is complete. `eof`: the server closed the
/// connection, so a body without a length ends here.
///
/// # Errors
/// [`HttpError::Malformed`] when `buf` cannot be the start of a response.
pub fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, HttpError> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if eof {
            return Err(HttpError::Malformed("no end of headers"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| HttpError::Malformed("headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.split(' ');
    let version = words.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("not an HTTP/1.x status line"));
    }
    let status: u16 = words
        .next()
        .and_then(|w| w.parse().ok())
        .filter(|s| (100..=999).contains(s))
        .ok_or(HttpError::Malformed("no status code"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Malformed("header line without a colon"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| HttpError::Malformed("bad Content-Length"))?;
            if n > MAX_RESPONSE_BYTES {
                return Err(HttpError::TooLarge);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    let body = &buf[head_end + 4..];
    // 1xx, 204 and 304 have no body whatever the headers say.
    if status < 200 || status == 204 || status == 304 {
        return Ok(Some(Response {
            status,
            body: Vec::new(),
        }));
    }
    if chunked {
        return match dechunk(body)? {
            Some(body) => Ok(Some(Response { status, body })),
            None if eof => Err(HttpError::Malformed("connection closed inside a chunk")),
            None => Ok(None),
        };
    }
    match content_length {
        Some(n) if body.len() >= n => Ok(Some(Response {
            status,
            body: body[..n].to_vec(),
        })),
        Some(_) if eof => Err(HttpError::Malformed(
            "connection closed before Content-Length bytes",
        )),
        Some(_) => Ok(None),
        None if eof => Ok(Some(Response {
            status,
            body: body.to_vec(),
        })),
        None => Ok(None),
    }
}

/// Undoes chunked transfer encoding; `None` while incomplete.
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, HttpError> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let size_field = std::str::from_utf8(&data[..line_end])
            .map_err(|_| HttpError::Malformed("bad chunk size"))?;
        // Chunk extensions (`;name=value`) are allowed and meaningless here.
        let size_hex = size_field.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| HttpError::Malformed("bad chunk size"))?;
        if size > MAX_RESPONSE_BYTES || out.len() + size > MAX_RESPONSE_BYTES {
            return Err(HttpError::TooLarge);
        }
        data = &data[line_end + 2..];
        if size == 0 {
            // Trailers are not read: the body is complete.
            return Ok(Some(out));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&data[..size]);
        if &data[size..size + 2] != b"\r\n" {
            return Err(HttpError::Malformed("chunk not followed by CRLF"));
        }
        data = &data[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_content_length_responses() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n\r\ni-bp13znx0m0me8cquu000";
        assert_eq!(parse_response(&r[..20], false).unwrap(), None);
        assert_eq!(parse_response(&r[..r.len() - 1], false).unwrap(), None);
        assert_eq!(
            parse_response(r, false).unwrap(),
            Some(Response {
                status: 200,
                body: b"i-bp13znx0m0me8cquu000".to_vec()
            })
        );
        assert!(parse_response(&r[..r.len() - 1], true).is_err());
    }

    #[test]
    fn parses_chunked_and_close_delimited_responses() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n00:1\r\n8\r\n6:3e:00/\r\n0\r\n\r\n";
        assert_eq!(parse_response(&r[..r.len() - 5], false).unwrap(), None);
        assert_eq!(
            parse_response(r, false).unwrap().unwrap().body,
            b"00:16:3e:00/"
        );
        let r = b"HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\nnot here";
        assert_eq!(parse_response(r, false).unwrap(), None);
        assert_eq!(
            parse_response(r, true).unwrap(),
            Some(Response {
                status: 404,
                body: b"not here".to_vec()
            })
        );
    }

    #[test]
    fn rejects_what_is_not_http() {
        for bad in [
            &b"SSH-2.0-OpenSSH_9.2\r\n\r\n"[..],
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(
                parse_response(bad, true).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
                false
            ),
            Err(HttpError::TooLarge)
        ));
    }

    #[test]
    fn gets_from_a_local_server_and_times_out_on_a_silent_one() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut req = [0u8; 1024];
            let n = c.read(&mut req).unwrap();
            let req = String::from_utf8_lossy(&req[..n]).into_owned();
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .unwrap();
            // A second client that never gets an answer.
            let (silent, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(600));
            drop(silent);
            req
        });
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/latest/meta-data/")).unwrap();
        let r = get(&url.join("instance-id"), Duration::from_secs(5)).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let e = get(&url, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, HttpError::Timeout), "{e}");
        let req = server.join().unwrap();
        assert!(
            req.starts_with(&format!(
                "GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            )),
            "{req}"
        );
        // Nothing listens there any more.
        let e = get(&url, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, HttpError::Connect(_)), "{e}");
    }
}
