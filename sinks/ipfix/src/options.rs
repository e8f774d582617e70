//! The sink's options (`[sinks.<name>]` without `plugin`), validated in
//! `open` and in `check` alike, as pure data: no name is resolved and no
//! socket is touched here.

use std::fmt;

use flowlogd_plugin_api::{Options, SinkError};
use serde::Deserialize;

use crate::encode::MAX_RECORD_BYTES;
use crate::message::{HEADER_BYTES, SET_HEADER_BYTES};

/// RFC 7011 §10.3.3: without a known path MTU, an exporter over UDP should
/// keep messages within the IPv4 minimum reassembly size's safe side; 1400
/// leaves room for the IP and UDP headers on a 1500-byte Ethernet MTU.
pub const DEFAULT_MAX_MESSAGE_BYTES: u16 = 1400;
/// The smallest limit that still fits the largest data record (strings
/// capped, see [`MAX_RECORD_BYTES`]) in a message of its own.
pub const MIN_MAX_MESSAGE_BYTES: usize = HEADER_BYTES + SET_HEADER_BYTES + MAX_RECORD_BYTES;
/// RFC 7011 §8.4 asks for a configurable refresh over UDP; 60 s keeps a
/// restarted collector's blind spot under one default window (600 s).
pub const DEFAULT_TEMPLATE_REFRESH_SECS: u32 = 60;
/// Up to a day: longer would leave a restarted collector blind for days.
pub const MAX_TEMPLATE_REFRESH_SECS: u32 = 86_400;

fn default_transport() -> String {
    "udp".to_owned()
}
const fn default_max_message_bytes() -> u32 {
    DEFAULT_MAX_MESSAGE_BYTES as u32
}
const fn default_template_refresh_secs() -> u32 {
    DEFAULT_TEMPLATE_REFRESH_SECS
}

/// The options as written. The transport stays a string here so that a
/// bad value gets our message (with the accepted values) rather than serde's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpfixOptions {
    #[serde(default = "default_transport")]
    pub transport: String,
    /// Optional only to serde: required, checked below so that the error
    /// names `collector`.
    #[serde(default)]
    pub collector: Option<String>,
    #[serde(default)]
    pub observation_domain_id: u32,
    /// Optional only to serde: required (there is no PEN of flowlogd's own
    /// to default to), checked below so that the error names the key.
    #[serde(default)]
    pub enterprise_number: Option<u32>,
    #[serde(default = "default_template_refresh_secs")]
    pub template_refresh_secs: u32,
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u32,
    /// The daemon's per-sink field list. Accepted by serde only so that it
    /// is refused below with a message that says why: IPFIX records are
    /// described by the sink's fixed templates, not by a list of names.
    #[serde(default)]
    pub fields: Option<serde::de::IgnoredAny>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A `host:port` as written (shared with the other network sinks).
pub use flowlogd_plugin_api::host_port::HostPort as Address;

/// The validated options.
#[derive(Clone, Debug)]
pub struct IpfixConfig {
    pub transport: Transport,
    pub collector: Address,
    pub observation_domain_id: u32,
    pub enterprise_number: u32,
    pub template_refresh_secs: u32,
    /// The bound of one message: `max_message_bytes` over UDP, the
    /// 16-bit length field's 65535 over TCP.
    pub max_message_bytes: usize,
}

impl IpfixConfig {
    /// Parses and validates the sink's options.
    ///
    /// # Errors
    /// [`SinkError::config`] naming the offending key.
    pub fn from_options(options: &Options) -> Result<IpfixConfig, SinkError> {
        let raw: IpfixOptions = options.deserialize()?;
        if raw.fields.is_some() {
            return Err(SinkError::config(
                "fields",
                "the ipfix sink sends fixed templates of IANA and enterprise elements \
                 (see its README), so a field list does not apply: remove `fields`",
            ));
        }
        let transport = match raw.transport.as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            other => {
                return Err(SinkError::config(
                    "transport",
                    format!("expected \"udp\" or \"tcp\", got {other:?}"),
                ))
            }
        };
        let collector = raw.collector.ok_or_else(|| {
            SinkError::config(
                "collector",
                "required: the IPFIX collector as \"host:port\" (e.g. \"192.0.2.10:4739\")",
            )
        })?;
        let collector = parse_address(&collector).map_err(|m| SinkError::config("collector", m))?;
        let enterprise_number = raw.enterprise_number.ok_or_else(|| {
            SinkError::config(
                "enterprise_number",
                "required: the IANA Private Enterprise Number the ENI, VPC, VSwitch, VM, \
                 account, rule and log-status elements are sent under (32473 is the one \
                 RFC 5612 reserves for examples)",
            )
        })?;
        if enterprise_number == 0 {
            return Err(SinkError::config(
                "enterprise_number",
                "0 is IANA's reserved number, not an enterprise's",
            ));
        }
        if raw.template_refresh_secs == 0 || raw.template_refresh_secs > MAX_TEMPLATE_REFRESH_SECS {
            return Err(SinkError::config(
                "template_refresh_secs",
                format!(
                    "expected 1 to {MAX_TEMPLATE_REFRESH_SECS} seconds, got {}",
                    raw.template_refresh_secs
                ),
            ));
        }
        let max = raw.max_message_bytes as usize;
        if !(MIN_MAX_MESSAGE_BYTES..=usize::from(u16::MAX)).contains(&max) {
            return Err(SinkError::config(
                "max_message_bytes",
                format!(
                    "expected {MIN_MAX_MESSAGE_BYTES} to 65535 (an IPFIX message's length is 16 bits, \
                     and the largest record must fit), got {max}"
                ),
            ));
        }
        if transport == Transport::Tcp && raw.max_message_bytes != default_max_message_bytes() {
            return Err(SinkError::config(
                "max_message_bytes",
                "only used with transport = \"udp\" (over TCP a message is up to 65535 bytes)",
            ));
        }
        Ok(IpfixConfig {
            transport,
            collector,
            observation_domain_id: raw.observation_domain_id,
            enterprise_number,
            template_refresh_secs: raw.template_refresh_secs,
            max_message_bytes: match transport {
                Transport::Udp => max,
                Transport::Tcp => usize::from(u16::MAX),
            },
        })
    }
}

impl fmt::Display for IpfixConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match self.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        };
        write!(f, "IPFIX collector {t} {}", self.collector)
    }
}

/// `"host:port"`, `"[v6]:port"` or `"v4:port"`; the port may not be 0.
fn parse_address(s: &str) -> Result<Address, String> {
    Address::parse(s, 4739)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "collector = \"127.0.0.1:4739\"\nenterprise_number = 32473\n";

    fn config(toml_text: &str) -> Result<IpfixConfig, SinkError> {
        let table: toml::Table = toml::from_str(toml_text).unwrap();
        IpfixConfig::from_options(&Options::from_toml_table(&table))
    }

    fn key_of(toml_text: &str) -> String {
        config(toml_text).unwrap_err().key.unwrap_or_default()
    }

    #[test]
    fn defaults() {
        let c = config(MINIMAL).unwrap();
        assert_eq!(c.transport, Transport::Udp);
        assert_eq!(c.collector.to_string(), "127.0.0.1:4739");
        assert_eq!(c.observation_domain_id, 0);
        assert_eq!(c.enterprise_number, 32473);
        assert_eq!(c.template_refresh_secs, 60);
        assert_eq!(c.max_message_bytes, 1400);
        let c = config(&format!("{MINIMAL}transport = \"tcp\"")).unwrap();
        assert_eq!(c.max_message_bytes, 65535);
    }

    #[test]
    fn errors_name_their_key() {
        let with = |extra: &str| format!("{MINIMAL}{extra}");
        assert_eq!(key_of("enterprise_number = 1"), "collector");
        assert_eq!(key_of("collector = \"h:1\""), "enterprise_number");
        assert_eq!(
            key_of("collector = \"h:1\"\nenterprise_number = 0"),
            "enterprise_number"
        );
        assert_eq!(
            key_of("collector = \"h:1\"\nenterprise_number = -1"),
            "enterprise_number"
        );
        assert_eq!(
            key_of("collector = \"nowhere\"\nenterprise_number = 1"),
            "collector"
        );
        assert_eq!(
            key_of("collector = \"::1:4739\"\nenterprise_number = 1"),
            "collector"
        );
        assert_eq!(key_of(&with("transport = \"sctp\"")), "transport");
        assert_eq!(
            key_of(&with("observation_domain_id = 4294967296")),
            "observation_domain_id"
        );
        assert_eq!(
            key_of(&with("template_refresh_secs = 0")),
            "template_refresh_secs"
        );
        assert_eq!(
            key_of(&with("template_refresh_secs = 86401")),
            "template_refresh_secs"
        );
        assert_eq!(
            key_of(&with("max_message_bytes = 100")),
            "max_message_bytes"
        );
        assert_eq!(
            key_of(&with("max_message_bytes = 65536")),
            "max_message_bytes"
        );
        assert_eq!(
            key_of(&with("transport = \"tcp\"\nmax_message_bytes = 9000")),
            "max_message_bytes"
        );
        assert_eq!(key_of(&with("colour = \"blue\"")), "colour");
        let err = config(&with("fields = [\"srcaddr\"]")).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("fields"));
        assert!(err.message.contains("field list does not apply"), "{err:?}");
    }

    #[test]
    fn addresses() {
        let a = |s: &str| parse_address(s);
        assert_eq!(a("[::1]:4739").unwrap().to_string(), "[::1]:4739");
        assert_eq!(
            a("collector.example.com:2055").unwrap().to_string(),
            "collector.example.com:2055"
        );
        for bad in [
            "",
            "host",
            "host:",
            ":4739",
            "host:0",
            "host:65536",
            "a b:1",
        ] {
            assert!(a(bad).is_err(), "{bad:?} accepted");
        }
    }
}
