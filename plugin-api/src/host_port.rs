//! A network sink's `host:port` option, parsed the same way by every sink
//! that sends to a server (syslog, ipfix): one set of rules and messages.

use std::fmt;
use std::net::SocketAddr;

/// A `host:port` as written: the host stays a name until connect time, so
/// that a server's address change in DNS is followed at reconnect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// A DNS name, or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl HostPort {
    /// Parses `"host:port"`, `"[v6]:port"` or `"v4:port"`; the port may not
    /// be 0. `example_port` goes into the hint for an IPv6 address written
    /// without brackets (the sink's usual port reads best there).
    ///
    /// # Errors
    /// A message for the operator that quotes what was written.
    pub fn parse(s: &str, example_port: u16) -> Result<HostPort, String> {
        let bad = |why: &str| format!("expected \"host:port\" ({why}), got {s:?}");
        if let Ok(sa) = s.parse::<SocketAddr>() {
            if sa.port() == 0 {
                return Err(bad("port 0 is not a port one can send to"));
            }
            return Ok(HostPort {
                host: sa.ip().to_string(),
                port: sa.port(),
            });
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(bad("the port is missing"));
        };
        if host.contains(':') || host.starts_with('[') {
            return Err(bad(&format!(
                "write an IPv6 address in brackets, as \"[2001:db8::1]:{example_port}\""
            )));
        }
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !host_ok {
            return Err(bad("not a host name or IP address"));
        }
        match port.parse::<u16>() {
            Ok(0) => Err(bad("port 0 is not a port one can send to")),
            Ok(port) => Ok(HostPort {
                host: host.to_owned(),
                port,
            }),
            Err(_) => Err(bad("the port is not a number in 1..=65535")),
        }
    }
}
