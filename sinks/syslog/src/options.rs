//! The sink's options (`[sinks.<name>]` without `plugin`), validated in
//! `open` and in `check` alike, as pure data: no name is resolved and no
//! socket is touched here.

use std::fmt;
use std::path::PathBuf;

use flowlogd_plugin_api::{FieldList, Options, SinkError};
use serde::Deserialize;
use syslog::Facility;

/// Where the local syslog daemon listens on every Linux distribution.
pub const DEFAULT_SOCKET_PATH: &str = "/dev/log";
/// `sun_path` holds 108 bytes, the terminating NUL included.
const MAX_SOCKET_PATH_BYTES: usize = 107;
/// RFC 5424 APP-NAME: at most 48 printable ASCII characters.
const MAX_APP_NAME_5424: usize = 48;
/// RFC 3164 TAG: at most 32 characters.
const MAX_APP_NAME_3164: usize = 32;
/// RFC 5424 HOSTNAME: at most 255 printable ASCII characters.
const MAX_HOSTNAME: usize = 255;

/// The facility names accepted, as in syslog.conf(5) and logger(1).
pub const FACILITY_NAMES: [&str; 20] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];
/// The severity names accepted, most severe first: the index is the code.
pub const SEVERITY_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

fn default_transport() -> String {
    "unix".to_owned()
}
fn default_format() -> String {
    "rfc3164".to_owned()
}
fn default_facility() -> String {
    "local0".to_owned()
}
fn default_severity() -> String {
    "info".to_owned()
}
fn default_app_name() -> String {
    "flowlogd".to_owned()
}
fn default_message() -> String {
    "text".to_owned()
}

/// The options as written. Enumerations stay strings here so that a bad
/// value gets our message (with the accepted values) rather than serde's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogOptions {
    #[serde(default = "default_transport")]
    pub transport: String,
    /// `None` = [`DEFAULT_SOCKET_PATH`]; only meaningful with `unix`.
    #[serde(default)]
    pub socket_path: Option<String>,
    /// Optional only to serde: required with `udp` and `tcp`, checked below
    /// so that the error names `address` (see the file sink's `path`).
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default = "default_format")]
    pub format: String,
    #[serde(default = "default_facility")]
    pub facility: String,
    #[serde(default = "default_severity")]
    pub severity: String,
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// `None` = the machine's hostname, looked up at open.
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default = "default_message")]
    pub message: String,
    /// The fields of each message body, in order; absent: the design's 18.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
}

/// Where messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// The local syslog socket (datagram, or stream where the daemon
    /// listens on one).
    Unix(PathBuf),
    /// One datagram per message.
    Udp(Address),
    /// Octet-counted frames (RFC 6587 section 3.4.1).
    Tcp(Address),
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Unix(path) => write!(f, "unix socket {}", path.display()),
            Transport::Udp(a) => write!(f, "udp {a}"),
            Transport::Tcp(a) => write!(f, "tcp {a}"),
        }
    }
}

/// A `host:port` as written (shared with the other network sinks).
pub use flowlogd_plugin_api::host_port::HostPort as Address;

/// The syslog message format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyslogFormat {
    /// `<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG` (BSD syslog).
    Rfc3164,
    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`.
    Rfc5424,
}

/// How a record becomes the message's MSG part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageFormat {
    /// The listed fields, space separated (`format::to_text_fields`).
    Text,
    /// One JSON object with the listed keys (`format::to_json_fields`).
    Json,
}

/// The validated options.
#[derive(Clone, Debug)]
pub struct SyslogConfig {
    pub transport: Transport,
    pub format: SyslogFormat,
    pub facility: Facility,
    /// 0 (emerg) ..= 7 (debug).
    pub severity: u8,
    pub app_name: String,
    /// `None`: the machine's hostname (or, over the unix socket in RFC 3164,
    /// no hostname at all: see [`SyslogConfig::from_options`]).
    pub hostname: Option<String>,
    pub message: MessageFormat,
    /// The fields of each message body.
    pub fields: FieldList,
}

impl SyslogConfig {
    /// Parses and validates the sink's options.
    ///
    /// Over the unix socket in RFC 3164 the message carries no hostname, as
    /// syslog(3) writes it: the local daemons parse that socket that way
    /// (rsyslog's imuxsock by default takes the word after the timestamp as
    /// the tag) and stamp their own hostname. An explicit `hostname` there
    /// is refused rather than silently ignored.
    ///
    /// # Errors
    /// [`SinkError::config`] naming the offending key.
    pub fn from_options(options: &Options) -> Result<SyslogConfig, SinkError> {
        let raw: SyslogOptions = options.deserialize()?;
        let transport = match raw.transport.as_str() {
            "unix" => {
                if raw.address.is_some() {
                    return Err(SinkError::config(
                        "address",
                        "only used with transport = \"udp\" or \"tcp\" (the unix transport uses `socket_path`)",
                    ));
                }
                let path = raw
                    .socket_path
                    .unwrap_or_else(|| DEFAULT_SOCKET_PATH.to_owned());
                Transport::Unix(
                    parse_socket_path(&path).map_err(|m| SinkError::config("socket_path", m))?,
                )
            }
            "udp" | "tcp" => {
                if raw.socket_path.is_some() {
                    return Err(SinkError::config(
                        "socket_path",
                        format!(
                            "only used with transport = \"unix\" (transport \"{}\" uses `address`)",
                            raw.transport
                        ),
                    ));
                }
                let address = raw.address.ok_or_else(|| {
                    SinkError::config(
                        "address",
                        format!(
                            "required with transport = \"{}\": the syslog server as \"host:port\"",
                            raw.transport
                        ),
                    )
                })?;
                let address =
                    parse_address(&address).map_err(|m| SinkError::config("address", m))?;
                if raw.transport == "udp" {
                    Transport::Udp(address)
                } else {
                    Transport::Tcp(address)
                }
            }
            other => {
                return Err(SinkError::config(
                    "transport",
                    format!("expected \"unix\", \"udp\" or \"tcp\", got {other:?}"),
                ))
            }
        };
        let format = match raw.format.as_str() {
            "rfc3164" => SyslogFormat::Rfc3164,
            "rfc5424" => SyslogFormat::Rfc5424,
            other => {
                return Err(SinkError::config(
                    "format",
                    format!("expected \"rfc3164\" or \"rfc5424\", got {other:?}"),
                ))
            }
        };
        let facility = parse_facility(&raw.facility).ok_or_else(|| {
            SinkError::config(
                "facility",
                format!(
                    "expected one of {}, got {:?}",
                    quoted(&FACILITY_NAMES),
                    raw.facility
                ),
            )
        })?;
        let severity = SEVERITY_NAMES
            .iter()
            .position(|n| *n == raw.severity)
            .ok_or_else(|| {
                SinkError::config(
                    "severity",
                    format!(
                        "expected one of {}, got {:?}",
                        quoted(&SEVERITY_NAMES),
                        raw.severity
                    ),
                )
            })?;
        let max_app_name = match format {
            SyslogFormat::Rfc3164 => MAX_APP_NAME_3164,
            SyslogFormat::Rfc5424 => MAX_APP_NAME_5424,
        };
        check_app_name(&raw.app_name, max_app_name)
            .map_err(|m| SinkError::config("app_name", m))?;
        if let Some(h) = &raw.hostname {
            check_hostname(h).map_err(|m| SinkError::config("hostname", m))?;
            if matches!(transport, Transport::Unix(_)) && format == SyslogFormat::Rfc3164 {
                return Err(SinkError::config(
                    "hostname",
                    "not sent over the unix socket in rfc3164 format (as with syslog(3), the local \
                     syslog daemon stamps its own hostname); use format = \"rfc5424\" or leave it out",
                ));
            }
        }
        let message = match raw.message.as_str() {
            "text" => MessageFormat::Text,
            "json" => MessageFormat::Json,
            other => {
                return Err(SinkError::config(
                    "message",
                    format!("expected \"text\" or \"json\", got {other:?}"),
                ))
            }
        };
        let fields = FieldList::from_option(raw.fields.as_deref())?;
        Ok(SyslogConfig {
            transport,
            format,
            facility,
            severity: severity as u8,
            app_name: raw.app_name,
            hostname: raw.hostname,
            message,
            fields,
        })
    }

    /// Whether messages carry a HOSTNAME field.
    pub fn sends_hostname(&self) -> bool {
        !(matches!(self.transport, Transport::Unix(_)) && self.format == SyslogFormat::Rfc3164)
    }
}

fn parse_socket_path(path: &str) -> Result<PathBuf, String> {
    if !path.starts_with('/') {
        return Err(format!("expected an absolute path, got {path:?}"));
    }
    if path.len() > MAX_SOCKET_PATH_BYTES {
        return Err(format!(
            "a unix socket path has at most {MAX_SOCKET_PATH_BYTES} bytes, {path:?} has {}",
            path.len()
        ));
    }
    Ok(PathBuf::from(path))
}

/// `"host:port"`, `"[v6]:port"` or `"v4:port"`; the port may not be 0.
fn parse_address(s: &str) -> Result<Address, String> {
    Address::parse(s, 514)
}

fn parse_facility(name: &str) -> Option<Facility> {
    // The crate also takes "LOG_LOCAL0" and mixed case; the config takes the
    // names syslog.conf uses, so that they read the same everywhere.
    if FACILITY_NAMES.contains(&name) {
        name.parse().ok()
    } else {
        None
    }
}

/// Printable ASCII without space; `[`, `]` and `:` would end an RFC 3164
/// tag early, so they are refused in both formats.
fn check_app_name(name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() || name.len() > max {
        return Err(format!("expected 1 to {max} characters, got {name:?}"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'[' | b']' | b':'))
    {
        return Err(format!(
            "expected printable ASCII without spaces, '[', ']' or ':', got {name:?}"
        ));
    }
    Ok(())
}

fn check_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_HOSTNAME || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "expected 1 to {MAX_HOSTNAME} printable ASCII characters without spaces, got {name:?}"
        ));
    }
    Ok(())
}

/// The machine's hostname if it is usable in a syslog header.
pub fn machine_hostname() -> Option<String> {
    let name = hostname::get().ok()?.into_string().ok()?;
    check_hostname(&name).is_ok().then_some(name)
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> Result<SyslogConfig, SinkError> {
        let table: toml::Table = toml::from_str(toml_text).unwrap();
        SyslogConfig::from_options(&Options::from_toml_table(&table))
    }

    fn key_of(toml_text: &str) -> String {
        config(toml_text).unwrap_err().key.unwrap_or_default()
    }

    #[test]
    fn defaults() {
        let c = config("").unwrap();
        assert_eq!(c.transport, Transport::Unix(PathBuf::from("/dev/log")));
        assert_eq!(c.format, SyslogFormat::Rfc3164);
        assert!(matches!(c.facility, Facility::LOG_LOCAL0));
        assert_eq!(c.severity, 6);
        assert_eq!(c.app_name, "flowlogd");
        assert_eq!(c.hostname, None);
        assert_eq!(c.message, MessageFormat::Text);
        assert!(!c.sends_hostname());
    }

    #[test]
    fn addresses() {
        let a = |s: &str| parse_address(s);
        assert_eq!(
            a("127.0.0.1:514").unwrap(),
            Address {
                host: "127.0.0.1".into(),
                port: 514
            }
        );
        assert_eq!(a("[::1]:6514").unwrap().host, "::1");
        assert_eq!(a("[::1]:6514").unwrap().to_string(), "[::1]:6514");
        assert_eq!(
            a("logs.example.com:601").unwrap().to_string(),
            "logs.example.com:601"
        );
        for bad in [
            "",
            "host",
            "host:",
            ":514",
            "host:0",
            "host:65536",
            "::1:514",
            "a b:514",
            "h:x",
        ] {
            assert!(a(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn errors_name_their_key() {
        assert_eq!(key_of("transport = \"relp\""), "transport");
        assert_eq!(key_of("transport = \"udp\""), "address");
        assert_eq!(
            key_of("transport = \"tcp\"\naddress = \"nowhere\""),
            "address"
        );
        assert_eq!(key_of("address = \"127.0.0.1:514\""), "address");
        assert_eq!(
            key_of("transport = \"tcp\"\naddress = \"127.0.0.1:514\"\nsocket_path = \"/dev/log\""),
            "socket_path"
        );
        assert_eq!(key_of("socket_path = \"dev/log\""), "socket_path");
        assert_eq!(key_of("format = \"rfc9999\""), "format");
        assert_eq!(key_of("facility = \"local8\""), "facility");
        assert_eq!(key_of("facility = \"LOG_LOCAL0\""), "facility");
        assert_eq!(key_of("severity = \"loud\""), "severity");
        assert_eq!(key_of("app_name = \"flow logd\""), "app_name");
        assert_eq!(key_of("app_name = \"flowlogd[1]\""), "app_name");
        assert_eq!(
            key_of(&format!("app_name = \"{}\"", "a".repeat(33))),
            "app_name"
        );
        assert_eq!(key_of("hostname = \"vm-1\""), "hostname");
        assert_eq!(
            key_of("format = \"rfc5424\"\nhostname = \"two words\""),
            "hostname"
        );
        assert_eq!(key_of("message = \"xml\""), "message");
        assert_eq!(key_of("colour = \"blue\""), "colour");
    }

    #[test]
    fn messages_list_the_accepted_values() {
        let e = config("facility = \"local9\"").unwrap_err();
        assert!(
            e.message.starts_with("expected one of \"kern\", \"user\""),
            "{}",
            e.message
        );
        assert!(
            e.message.ends_with("\"local7\", got \"local9\""),
            "{}",
            e.message
        );
        let e = config("transport = \"udp\"").unwrap_err();
        assert_eq!(
            e.message,
            "required with transport = \"udp\": the syslog server as \"host:port\""
        );
    }

    #[test]
    fn every_listed_facility_parses() {
        for (i, name) in FACILITY_NAMES.iter().enumerate() {
            let f = parse_facility(name).unwrap_or_else(|| panic!("{name}"));
            let code = if i < 12 { i } else { i + 4 };
            assert_eq!(f as usize, code << 3, "{name}");
        }
    }

    #[test]
    fn remote_and_5424_messages_carry_a_hostname() {
        let c = config("transport = \"udp\"\naddress = \"127.0.0.1:514\"\nhostname = \"vm-1\"")
            .unwrap();
        assert!(c.sends_hostname());
        assert_eq!(c.hostname.as_deref(), Some("vm-1"));
        let c = config("format = \"rfc5424\"\nhostname = \"vm-1\"\napp_name = \"x\"").unwrap();
        assert!(c.sends_hostname());
    }
}
