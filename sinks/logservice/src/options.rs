//! The sink's options (`[sinks.<name>]` without `plugin`), validated as
//! plain data: `check` runs exactly this, `open` runs it and then reads the
//! credentials.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use flowlogd_plugin_api::{FieldList, Options, SinkError};
use serde::Deserialize;

/// PutLogs takes at most 4096 logs per request.
pub const MAX_BATCH_RECORDS: u32 = 4096;
/// Below this the size bound would split almost every record into its own
/// request: almost certainly a typo (KiB written as bytes).
pub const MIN_BATCH_BYTES: u64 = 4096;
/// PutLogs takes at most 10 MB (uncompressed `LogGroup`) per request; stay
/// clear of it, the bound is computed on our own encoding estimate.
pub const MAX_BATCH_BYTES: u64 = 8 * 1024 * 1024;
/// Longer than any sane request; a bound so a typo cannot stall the worker
/// past the daemon's shutdown deadline for minutes.
pub const MAX_TIMEOUT_SECS: u32 = 300;

pub const DEFAULT_SECRET_ENV: &str = "FLOWLOGD_LOGSERVICE_ACCESS_KEY_SECRET";
pub const DEFAULT_TOKEN_ENV: &str = "FLOWLOGD_LOGSERVICE_SECURITY_TOKEN";

const fn default_max_batch_records() -> u32 {
    MAX_BATCH_RECORDS
}
const fn default_max_batch_bytes() -> u64 {
    3 * 1024 * 1024
}
const fn default_timeout_secs() -> u32 {
    10
}
fn default_topic() -> String {
    "flowlog".to_owned()
}

/// The options as written. The required keys are optional to serde so that
/// a missing one is reported by name (see the file sink's options).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogServiceOptions {
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub logstore: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub access_key_secret_file: Option<String>,
    #[serde(default)]
    pub access_key_secret_env: Option<String>,
    #[serde(default)]
    pub security_token_file: Option<String>,
    #[serde(default)]
    pub security_token_env: Option<String>,
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default = "default_max_batch_records")]
    pub max_batch_records: u32,
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: u64,
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u32,
    /// The keys of each log, in order; absent: the design's 18.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
}

/// Where the AccessKey secret (or the STS token) comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// A file private to the daemon's user (mode 0600 or stricter).
    File(PathBuf),
    /// An environment variable of the daemon.
    Env(String),
}

/// The Log Service endpoint, split into what the request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    /// The region host (`cn-hangzhou.log.aliyuncs.com`) or an IP literal.
    pub host: String,
    pub port: Option<u16>,
    /// Whether `host` is an IP address: requests then go to it directly,
    /// with the project in the `Host` header only (as the official SDKs do).
    pub is_ip: bool,
}

impl Endpoint {
    /// Parses `https://host[:port]`, `http://host[:port]` or a bare
    /// `host[:port]` (meaning https). A trailing `/` is allowed; a path,
    /// query or credentials are not.
    ///
    /// # Errors
    /// What is wrong, for the operator.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let expected = "expected an endpoint like \"https://cn-hangzhou.log.aliyuncs.com\", \
                        \"cn-hangzhou.log.aliyuncs.com\" or \"http://127.0.0.1:8080\"";
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if s.contains("://") {
            return Err(format!(
                "{expected}, got {s:?} (scheme must be http or https)"
            ));
        } else {
            (true, s)
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(format!("{expected}, got {s:?}"));
        }
        let (host, port) =
            split_host_port(authority).ok_or_else(|| format!("{expected}, got {s:?}"))?;
        let ip = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse::<IpAddr>()
            .ok();
        if ip.is_none() && !is_dns_name(host) {
            return Err(format!("{expected}, got {s:?} (bad host name {host:?})"));
        }
        Ok(Endpoint {
            https,
            host: host.to_owned(),
            port,
            is_ip: ip.is_some(),
        })
    }

    /// Whether requests stay on this host (a loopback IP literal).
    pub fn is_loopback(&self) -> bool {
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// `host[:port]` as written in a URL.
    pub fn authority(&self, host: &str) -> String {
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        }
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (h, rest) = authority.split_at(end + 1);
        match rest {
            "" => (h, None),
            _ => (h, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
    };
    (!host.is_empty()).then_some((host, port))
}

fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The validated options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogServiceConfig {
    pub endpoint: Endpoint,
    pub project: String,
    pub logstore: String,
    pub access_key_id: String,
    pub secret: CredentialSource,
    /// `File` when `security_token_file` is set; otherwise the environment
    /// variable, used only if it is set when the sink opens.
    pub security_token: CredentialSource,
    pub topic: String,
    /// `None`: the VM's primary IPv4 address, found at open.
    pub source: Option<String>,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    pub timeout: Duration,
    /// The keys of each log.
    pub fields: FieldList,
}

impl LogServiceConfig {
    /// Parses and validates the sink's options. Reads nothing but them.
    ///
    /// # Errors
    /// [`SinkError::config`] naming the offending key.
    pub fn from_options(options: &Options) -> Result<LogServiceConfig, SinkError> {
        let raw: LogServiceOptions = options.deserialize()?;
        let required = |key: &str, v: Option<String>| {
            v.ok_or_else(|| SinkError::config(key, format!("missing field `{key}`")))
        };
        let endpoint_text = required("endpoint", raw.endpoint)?;
        let endpoint =
            Endpoint::parse(&endpoint_text).map_err(|m| SinkError::config("endpoint", m))?;
        let project = required("project", raw.project)?;
        check_name("project", &project, false)?;
        let logstore = required("logstore", raw.logstore)?;
        check_name("logstore", &logstore, true)?;
        let access_key_id = required("access_key_id", raw.access_key_id)?;
        // It goes into `Authorization: LOG <id>:<signature>` as is.
        if access_key_id.is_empty()
            || !access_key_id
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b':')
        {
            return Err(SinkError::config(
                "access_key_id",
                "expected an AccessKey ID (letters, digits, `.`, `-`, `_`), got an empty value or \
                 one with spaces, `:` or non-ASCII characters",
            ));
        }
        let secret = match (raw.access_key_secret_file, raw.access_key_secret_env) {
            (Some(_), Some(_)) => {
                return Err(SinkError::config(
                    "access_key_secret_env",
                    "set either access_key_secret_file or access_key_secret_env, not both",
                ))
            }
            (Some(path), None) => {
                CredentialSource::File(absolute("access_key_secret_file", &path)?)
            }
            (None, env) => CredentialSource::Env(env_name(
                "access_key_secret_env",
                env.unwrap_or_else(|| DEFAULT_SECRET_ENV.to_owned()),
            )?),
        };
        let security_token = match (raw.security_token_file, raw.security_token_env) {
            (Some(_), Some(_)) => {
                return Err(SinkError::config(
                    "security_token_env",
                    "set either security_token_file or security_token_env, not both",
                ))
            }
            (Some(path), None) => CredentialSource::File(absolute("security_token_file", &path)?),
            (None, env) => CredentialSource::Env(env_name(
                "security_token_env",
                env.unwrap_or_else(|| DEFAULT_TOKEN_ENV.to_owned()),
            )?),
        };
        if raw.topic.len() > 128 || raw.topic.chars().any(char::is_control) {
            return Err(SinkError::config(
                "topic",
                "expected at most 128 characters without control characters",
            ));
        }
        if let Some(s) = &raw.source {
            if s.is_empty() || s.len() > 128 || s.chars().any(char::is_control) {
                return Err(SinkError::config(
                    "source",
                    "expected 1 to 128 characters without control characters (or leave it out for the \
                     VM's primary IPv4 address)",
                ));
            }
        }
        if !(1..=MAX_BATCH_RECORDS).contains(&raw.max_batch_records) {
            return Err(SinkError::config(
                "max_batch_records",
                format!(
                    "expected 1 to {MAX_BATCH_RECORDS} (PutLogs' limit per request), got {}",
                    raw.max_batch_records
                ),
            ));
        }
        if !(MIN_BATCH_BYTES..=MAX_BATCH_BYTES).contains(&raw.max_batch_bytes) {
            return Err(SinkError::config(
                "max_batch_bytes",
                format!(
                    "expected {MIN_BATCH_BYTES} to {MAX_BATCH_BYTES} (uncompressed bytes per request; \
                     PutLogs takes at most 10 MB), got {}",
                    raw.max_batch_bytes
                ),
            ));
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&raw.timeout_secs) {
            return Err(SinkError::config(
                "timeout_secs",
                format!("expected 1 to {MAX_TIMEOUT_SECS}, got {}", raw.timeout_secs),
            ));
        }
        let fields = FieldList::from_option(raw.fields.as_deref())?;
        Ok(LogServiceConfig {
            endpoint,
            project,
            logstore,
            access_key_id,
            secret,
            security_token,
            topic: raw.topic,
            source: raw.source,
            max_batch_records: raw.max_batch_records as usize,
            max_batch_bytes: raw.max_batch_bytes as usize,
            timeout: Duration::from_secs(raw.timeout_secs.into()),
            fields,
        })
    }
}

/// Log Service naming rules: 3 to 63 characters, lowercase letters, digits
/// and `-` (and `_` for a logstore), starting and ending with a letter or a
/// digit. The project also becomes a DNS label of the request's host.
fn check_name(key: &str, name: &str, underscore: bool) -> Result<(), SinkError> {
    let ok_char = |b: u8| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (underscore && b == b'_')
    };
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let bytes = name.as_bytes();
    if (3..=63).contains(&bytes.len())
        && bytes.iter().copied().all(ok_char)
        && edge(bytes.first())
        && edge(bytes.last())
    {
        return Ok(());
    }
    let allowed = if underscore {
        "lowercase letters, digits, `-` and `_`"
    } else {
        "lowercase letters, digits and `-`"
    };
    Err(SinkError::config(
        key,
        format!(
            "expected a Log Service {key} name (3 to 63 {allowed}, starting and ending with a letter \
             or digit), got {name:?}"
        ),
    ))
}

fn absolute(key: &str, path: &str) -> Result<PathBuf, SinkError> {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(SinkError::config(
            key,
            format!("expected an absolute path, got {path:?}"),
        ))
    }
}

fn env_name(key: &str, name: String) -> Result<String, SinkError> {
    let ok = name.bytes().enumerate().all(|(i, b)| {
        b == b'_'
            || b.is_ascii_uppercase()
            || b.is_ascii_lowercase()
            || (i > 0 && b.is_ascii_digit())
    });
    if ok && !name.is_empty() {
        Ok(name)
    } else {
        Err(SinkError::config(
            key,
            format!(
                "expected an environment variable name like {DEFAULT_SECRET_ENV:?}, got {name:?}"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid table with `extra`'s keys added or replaced.
    fn options(extra: &str) -> Options {
        let mut table: toml::Table = "endpoint = \"https://cn-hangzhou.log.aliyuncs.com\"\n\
             project = \"my-project\"\nlogstore = \"flow_log\"\naccess_key_id = \"LTAI5tExample\"\n"
            .parse()
            .unwrap();
        table.extend(extra.parse::<toml::Table>().unwrap());
        Options::from_toml_table(&table)
    }

    fn error(extra: &str) -> SinkError {
        LogServiceConfig::from_options(&options(extra)).unwrap_err()
    }

    #[test]
    fn defaults() {
        let c = LogServiceConfig::from_options(&options("")).unwrap();
        assert_eq!(
            c.endpoint,
            Endpoint {
                https: true,
                host: "cn-hangzhou.log.aliyuncs.com".into(),
                port: None,
                is_ip: false
            }
        );
        assert_eq!(c.secret, CredentialSource::Env(DEFAULT_SECRET_ENV.into()));
        assert_eq!(
            c.security_token,
            CredentialSource::Env(DEFAULT_TOKEN_ENV.into())
        );
        assert_eq!(c.topic, "flowlog");
        assert_eq!(c.source, None);
        assert_eq!(c.max_batch_records, 4096);
        assert_eq!(c.max_batch_bytes, 3 * 1024 * 1024);
        assert_eq!(c.timeout, Duration::from_secs(10));
    }

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("cn-hangzhou.log.aliyuncs.com").unwrap();
        assert!(e.https && !e.is_ip && e.port.is_none());
        let e = Endpoint::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            (e.https, e.is_ip, e.port, e.host.as_str()),
            (false, true, Some(8080), "127.0.0.1")
        );
        let e = Endpoint::parse("https://[::1]:443").unwrap();
        assert_eq!(
            (e.is_ip, e.port, e.host.as_str()),
            (true, Some(443), "[::1]")
        );
        for bad in [
            "",
            "ftp://x.example",
            "https://",
            "https://host/path",
            "https://user@host",
            "https://host:0",
            "https://host:99999",
            "https://ho st",
            "https://-host.example",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn errors_name_their_key() {
        let cases = [
            ("endpoint = \"ftp://x\"\n", "endpoint"),
            ("max_batch_records = 5000\n", "max_batch_records"),
            ("max_batch_bytes = 100\n", "max_batch_bytes"),
            ("timeout_secs = 0\n", "timeout_secs"),
            (
                "access_key_secret_file = \"relative\"\n",
                "access_key_secret_file",
            ),
            (
                "access_key_secret_file = \"/a\"\naccess_key_secret_env = \"X\"\n",
                "access_key_secret_env",
            ),
            (
                "access_key_secret_env = \"1BAD\"\n",
                "access_key_secret_env",
            ),
            ("topic = \"a\\nb\"\n", "topic"),
            ("source = \"\"\n", "source"),
            ("compression = \"zstd\"\n", "compression"),
        ];
        for (extra, key) in cases {
            let e = error(extra);
            assert_eq!(e.key.as_deref(), Some(key), "{extra:?}: {e}");
        }
    }

    #[test]
    fn missing_and_bad_names() {
        let o = Options::from_toml_table(
            &"endpoint = \"https://x.example\"\nproject = \"p-1\"\naccess_key_id = \"a\"\n"
                .parse::<toml::Table>()
                .unwrap(),
        );
        let e = LogServiceConfig::from_options(&o).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("logstore"));
        assert_eq!(e.message, "missing field `logstore`");
        for (name, ok) in [
            ("ab", false),
            ("Abc", false),
            ("abc-", false),
            ("a_b", false),
            ("my-proj1", true),
        ] {
            assert_eq!(check_name("project", name, false).is_ok(), ok, "{name}");
        }
        assert!(check_name("logstore", "flow_log", true).is_ok());
    }
}
