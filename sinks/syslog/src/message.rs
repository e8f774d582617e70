//! One syslog message per record: the header from the `syslog` crate's
//! formatters, the record's text or JSON form as the message.

use flowlogd_plugin_api::{format, FieldList, RecordView};
use std::collections::BTreeMap;

use syslog::{Formatter3164, Formatter5424, LogFormat, Severity};

use crate::options::{MessageFormat, SyslogConfig, SyslogFormat};

/// Builds the messages of one sink.
pub struct MessageBuilder {
    header: Header,
    severity: u8,
    body: MessageFormat,
    fields: FieldList,
}

enum Header {
    Rfc3164(Formatter3164),
    Rfc5424(Formatter5424),
}

impl MessageBuilder {
    /// `hostname` is the resolved one (`None`: none in the message).
    pub fn new(config: &SyslogConfig, hostname: Option<String>) -> MessageBuilder {
        let pid = std::process::id();
        let process = config.app_name.clone();
        let header = match config.format {
            SyslogFormat::Rfc3164 => Header::Rfc3164(Formatter3164 {
                facility: config.facility,
                hostname,
                process,
                pid,
            }),
            SyslogFormat::Rfc5424 => Header::Rfc5424(Formatter5424 {
                facility: config.facility,
                hostname,
                process,
                pid,
            }),
        };
        MessageBuilder {
            header,
            severity: config.severity,
            body: config.message,
            fields: config.fields.clone(),
        }
    }

    /// The message part of `r`: what a retried batch is compared by, since
    /// the header's timestamp changes from one attempt to the next.
    pub fn body(&self, r: &RecordView<'_>) -> String {
        match self.body {
            MessageFormat::Text => format::to_text_fields(r, &self.fields),
            MessageFormat::Json => format::to_json_fields(r, &self.fields),
        }
    }

    /// Appends the whole message (header, then `body`) to `out`.
    ///
    /// RFC 3164 timestamps are UTC: the crate writes UTC because reading the
    /// local offset is unsound in a multi-threaded process. RFC 5424's MSGID
    /// is the record format version (`1`), so a consumer can tell formats
    /// apart should the record change.
    ///
    /// # Errors
    /// Only if formatting fails, which writing to a `Vec` does not.
    pub fn write(&self, out: &mut Vec<u8>, body: &str) -> syslog::Result<()> {
        let severity = severity(self.severity);
        match &self.header {
            Header::Rfc3164(f) => f.format(out, severity, body),
            Header::Rfc5424(f) => f.format(
                out,
                severity,
                (flowlogd_plugin_api::RECORD_VERSION, BTreeMap::new(), body),
            ),
        }
    }
}

fn severity(code: u8) -> Severity {
    match code {
        0 => Severity::LOG_EMERG,
        1 => Severity::LOG_ALERT,
        2 => Severity::LOG_CRIT,
        3 => Severity::LOG_ERR,
        4 => Severity::LOG_WARNING,
        5 => Severity::LOG_NOTICE,
        6 => Severity::LOG_INFO,
        _ => Severity::LOG_DEBUG,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::SyslogConfig;
    use flowlogd_plugin_api::Options;

    fn builder(options: &str, hostname: Option<&str>) -> MessageBuilder {
        let table: toml::Table = toml::from_str(options).unwrap();
        let c = SyslogConfig::from_options(&Options::from_toml_table(&table)).unwrap();
        MessageBuilder::new(&c, hostname.map(str::to_owned))
    }

    fn message(b: &MessageBuilder, body: &str) -> String {
        let mut out = Vec::new();
        b.write(&mut out, body).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn rfc3164_over_the_local_socket_has_no_hostname() {
        let m = message(&builder("", None), "hello world");
        // <134> = local0 (16) * 8 + info (6)
        let pid = std::process::id();
        assert!(m.starts_with("<134>"), "{m}");
        // "<134>Mmm dd hh:mm:ss " is 21 bytes, then the tag.
        assert_eq!(&m[20..21], " ", "{m}");
        assert_eq!(m[21..], format!("flowlogd[{pid}]: hello world"));
    }

    #[test]
    fn bodies_follow_the_field_list() {
        use flowlogd_plugin_api::{Action, Direction, EniIds, FlowFields, FlowRecord, LogStatus};
        let r = FlowRecord {
            eni: std::sync::Arc::new(EniIds {
                eni_id: "eni-1".into(),
                ..Default::default()
            }),
            flow: Some(FlowFields {
                srcaddr: "10.0.0.1".parse().unwrap(),
                srcport: 1,
                dstaddr: "10.0.0.2".parse().unwrap(),
                dstport: 2,
                protocol: 6,
                direction: Direction::In,
                packets: 3,
                bytes: 4,
                action: Action::Accept,
                extras: Default::default(),
            }),
            start: 0,
            end: 600,
            log_status: LogStatus::Ok,
            rule: None,
        };
        let ffi = r.to_ffi();
        // SAFETY: `r` outlives the view.
        let v = unsafe { RecordView::new(&ffi) };
        let listed = "fields = [\"eni-id\", \"type\", \"bytes\", \"tcp-flags\"]";
        assert_eq!(builder(listed, None).body(&v), "eni-1 IPv4 4 -");
        assert_eq!(
            builder(&format!("message = \"json\"\n{listed}"), None).body(&v),
            r#"{"eni-id":"eni-1","type":"IPv4","bytes":4,"tcp-flags":null}"#
        );
        // No list: the 18 fields, as always.
        assert_eq!(builder("", None).body(&v), format::to_text(&v));
    }

    #[test]
    fn rfc5424_has_every_header_field() {
        let b = builder(
            "format = \"rfc5424\"\nfacility = \"daemon\"\nseverity = \"warning\"\napp_name = \"fl\"",
            Some("vm-1"),
        );
        let m = message(&b, "{\"a\":1}");
        let f: Vec<&str> = m.splitn(8, ' ').collect();
        assert_eq!(f[0], "<28>1"); // daemon (3) * 8 + warning (4)
        assert!(f[1].ends_with('Z'), "{m}");
        assert_eq!(
            &f[2..7],
            ["vm-1", "fl", &std::process::id().to_string(), "1", "-"]
        );
        assert_eq!(f[7], "{\"a\":1}");
    }
}
