//! The two textual forms of a record, shared by every sink that writes text
//! (file, syslog) so they agree byte for byte:
//!
//! - **text**: the design's 18 fields in order, space separated, `-` for a
//!   field without a value (the flow fields of NODATA / SKIPDATA records);
//! - **JSON**: one object with the design's field names as keys, numbers as
//!   numbers, `null` for the flow fields that text writes as `-` (so a
//!   SIEM's field types stay stable), ids as strings (an unknown id is `""`
//!   in JSON and `-` in text), plus `rule` when a REJECT record carries one.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::record::*;

/// The field names in output order.
pub const FIELD_NAMES: [&str; 18] = [
    "version",
    "vswitch-id",
    "vm-id",
    "vpc-id",
    "account-id",
    "eni-id",
    "srcaddr",
    "srcport",
    "dstaddr",
    "dstport",
    "protocol",
    "direction",
    "packets",
    "bytes",
    "start",
    "end",
    "log-status",
    "action",
];

fn id_or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// Appends the text form of `r` to `out`, without a line ending.
pub fn write_text(out: &mut String, r: &RecordView<'_>) {
    let _ = write!(
        out,
        "{} {} {} {} {} {} ",
        r.version(),
        id_or_dash(r.vswitch_id()),
        id_or_dash(r.vm_id()),
        id_or_dash(r.vpc_id()),
        id_or_dash(r.account_id()),
        id_or_dash(r.eni_id()),
    );
    match r.flow() {
        Some(f) => {
            let _ = write!(
                out,
                "{} {} {} {} {} {} {} {} ",
                f.srcaddr,
                f.srcport,
                f.dstaddr,
                f.dstport,
                f.protocol,
                f.direction.as_str(),
                f.packets,
                f.bytes
            );
        }
        None => out.push_str("- - - - - - - - "),
    }
    let _ = write!(
        out,
        "{} {} {} ",
        r.start(),
        r.end(),
        r.log_status().as_str()
    );
    match r.flow() {
        Some(f) => out.push_str(f.action.as_str()),
        None => out.push('-'),
    }
}

/// The text form of `r`.
pub fn to_text(r: &RecordView<'_>) -> String {
    let mut s = String::with_capacity(160);
    write_text(&mut s, r);
    s
}

/// The JSON object of `r`.
pub fn to_json_value(r: &RecordView<'_>) -> Value {
    let mut m = Map::new();
    m.insert("version".into(), r.version().into());
    m.insert("vswitch-id".into(), r.vswitch_id().into());
    m.insert("vm-id".into(), r.vm_id().into());
    m.insert("vpc-id".into(), r.vpc_id().into());
    m.insert("account-id".into(), r.account_id().into());
    m.insert("eni-id".into(), r.eni_id().into());
    let f = r.flow();
    m.insert(
        "srcaddr".into(),
        f.map_or(Value::Null, |f| f.srcaddr.to_string().into()),
    );
    m.insert(
        "srcport".into(),
        f.map_or(Value::Null, |f| f.srcport.into()),
    );
    m.insert(
        "dstaddr".into(),
        f.map_or(Value::Null, |f| f.dstaddr.to_string().into()),
    );
    m.insert(
        "dstport".into(),
        f.map_or(Value::Null, |f| f.dstport.into()),
    );
    m.insert(
        "protocol".into(),
        f.map_or(Value::Null, |f| f.protocol.into()),
    );
    m.insert(
        "direction".into(),
        f.map_or(Value::Null, |f| f.direction.as_str().into()),
    );
    m.insert(
        "packets".into(),
        f.map_or(Value::Null, |f| f.packets.into()),
    );
    m.insert("bytes".into(), f.map_or(Value::Null, |f| f.bytes.into()));
    m.insert("start".into(), r.start().into());
    m.insert("end".into(), r.end().into());
    m.insert("log-status".into(), r.log_status().as_str().into());
    m.insert(
        "action".into(),
        f.map_or(Value::Null, |f| f.action.as_str().into()),
    );
    if let Some(rule) = r.rule() {
        m.insert("rule".into(), rule.into());
    }
    Value::Object(m)
}

/// The JSON line of `r` (keys in the design's order), without a line ending.
pub fn to_json(r: &RecordView<'_>) -> String {
    let mut s = String::with_capacity(320);
    write_json(&mut s, r);
    s
}

/// Appends the JSON object of `r` to `out` (keys in the design's order),
/// without a line ending. Written straight into `out`, with no intermediate
/// `serde_json::Value`: sinks call this for every record, and building a
/// map per record was most of a busy file sink's time.
pub fn write_json(out: &mut String, r: &RecordView<'_>) {
    let str_field = |out: &mut String, key: &str, value: &str| {
        let _ = write!(out, "\"{key}\":");
        push_json_string(out, value);
        out.push(',');
    };
    let _ = write!(out, "{{\"version\":{},", r.version());
    str_field(out, "vswitch-id", r.vswitch_id());
    str_field(out, "vm-id", r.vm_id());
    str_field(out, "vpc-id", r.vpc_id());
    str_field(out, "account-id", r.account_id());
    str_field(out, "eni-id", r.eni_id());
    match r.flow() {
        Some(f) => {
            let _ = write!(
                out,
                "\"srcaddr\":\"{}\",\"srcport\":{},\"dstaddr\":\"{}\",\"dstport\":{},\"protocol\":{},\
                 \"direction\":\"{}\",\"packets\":{},\"bytes\":{},",
                f.srcaddr,
                f.srcport,
                f.dstaddr,
                f.dstport,
                f.protocol,
                f.direction.as_str(),
                f.packets,
                f.bytes
            );
        }
        None => out.push_str(
            "\"srcaddr\":null,\"srcport\":null,\"dstaddr\":null,\"dstport\":null,\"protocol\":null,\
             \"direction\":null,\"packets\":null,\"bytes\":null,",
        ),
    }
    let _ = write!(
        out,
        "\"start\":{},\"end\":{},\"log-status\":\"{}\",\"action\":",
        r.start(),
        r.end(),
        r.log_status().as_str()
    );
    match r.flow() {
        Some(f) => {
            let _ = write!(out, "\"{}\"", f.action.as_str());
        }
        None => out.push_str("null"),
    }
    if let Some(rule) = r.rule() {
        out.push_str(",\"rule\":");
        push_json_string(out, rule);
    }
    out.push('}');
}

/// `value` as a JSON string literal (RFC 8259 escaping).
fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Why a JSON line is not a record.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseRecordError(pub String);

impl std::fmt::Display for ParseRecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseRecordError {}

/// Parses a JSON line as written by [`to_json`] back into a record.
///
/// # Errors
/// A message naming the missing or malformed field.
pub fn parse_json(line: &str) -> Result<FlowRecord, ParseRecordError> {
    let v: Value =
        serde_json::from_str(line).map_err(|e| ParseRecordError(format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ParseRecordError("not a JSON object".into()))?;
    let err = |k: &str, what: &str| ParseRecordError(format!("field `{k}`: expected {what}"));
    let get_str = |k: &str| -> Result<String, ParseRecordError> {
        match obj.get(k) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Null) | None => Ok(String::new()),
            _ => Err(err(k, "a string")),
        }
    };
    let get_i64 = |k: &str| -> Result<i64, ParseRecordError> {
        obj.get(k)
            .and_then(Value::as_i64)
            .ok_or_else(|| err(k, "an integer"))
    };
    let get_u64 = |k: &str| -> Result<u64, ParseRecordError> {
        obj.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| err(k, "a non-negative integer"))
    };
    let log_status = match get_str("log-status")?.as_str() {
        "OK" => LogStatus::Ok,
        "NODATA" => LogStatus::NoData,
        "SKIPDATA" => LogStatus::SkipData,
        _ => return Err(err("log-status", "\"OK\", \"NODATA\" or \"SKIPDATA\"")),
    };
    let flow = if log_status == LogStatus::Ok {
        let addr = |k: &str| -> Result<IpAddr, ParseRecordError> {
            get_str(k)?.parse().map_err(|_| err(k, "an IP address"))
        };
        let port = |k: &str| -> Result<u16, ParseRecordError> {
            u16::try_from(get_u64(k)?).map_err(|_| err(k, "a port (0..=65535)"))
        };
        Some(FlowFields {
            srcaddr: addr("srcaddr")?,
            srcport: port("srcport")?,
            dstaddr: addr("dstaddr")?,
            dstport: port("dstport")?,
            protocol: u8::try_from(get_u64("protocol")?).map_err(|_| err("protocol", "0..=255"))?,
            direction: match get_str("direction")?.as_str() {
                "in" => Direction::In,
                "out" => Direction::Out,
                _ => return Err(err("direction", "\"in\" or \"out\"")),
            },
            packets: get_u64("packets")?,
            bytes: get_u64("bytes")?,
            action: match get_str("action")?.as_str() {
                "ACCEPT" => Action::Accept,
                "REJECT" => Action::Reject,
                _ => return Err(err("action", "\"ACCEPT\" or \"REJECT\"")),
            },
        })
    } else {
        None
    };
    let rule = get_str("rule")?;
    Ok(FlowRecord {
        eni: Arc::new(EniIds {
            eni_id: get_str("eni-id")?,
            vswitch_id: get_str("vswitch-id")?,
            vpc_id: get_str("vpc-id")?,
            vm_id: get_str("vm-id")?,
            account_id: get_str("account-id")?,
        }),
        flow,
        start: get_i64("start")?,
        end: get_i64("end")?,
        log_status,
        rule: (!rule.is_empty()).then(|| Arc::from(rule.as_str())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FlowRecord {
        FlowRecord {
            eni: Arc::new(EniIds {
                eni_id: "eni-1".into(),
                vswitch_id: "vsw-1".into(),
                vpc_id: "vpc-1".into(),
                vm_id: "i-1".into(),
                account_id: "123".into(),
            }),
            flow: Some(FlowFields {
                srcaddr: "10.0.0.1".parse().unwrap(),
                srcport: 40000,
                dstaddr: "2001:db8::1".parse().unwrap(),
                dstport: 443,
                protocol: 6,
                direction: Direction::Out,
                packets: 10,
                bytes: 1500,
                action: Action::Accept,
            }),
            start: 1_700_000_000,
            end: 1_700_000_600,
            log_status: LogStatus::Ok,
            rule: None,
        }
    }

    #[test]
    fn text_has_the_design_field_order() {
        let r = sample();
        let ffi = r.to_ffi();
        // SAFETY: `r` outlives the view.
        let v = unsafe { RecordView::new(&ffi) };
        assert_eq!(
            to_text(&v),
            "1 vsw-1 i-1 vpc-1 123 eni-1 10.0.0.1 40000 2001:db8::1 443 6 out 10 1500 1700000000 1700000600 OK ACCEPT"
        );
    }

    #[test]
    fn nodata_prints_dashes_and_json_nulls() {
        let mut r = sample();
        r.flow = None;
        r.log_status = LogStatus::NoData;
        let ffi = r.to_ffi();
        // SAFETY: `r` outlives the view.
        let v = unsafe { RecordView::new(&ffi) };
        assert_eq!(
            to_text(&v),
            "1 vsw-1 i-1 vpc-1 123 eni-1 - - - - - - - - 1700000000 1700000600 NODATA -"
        );
        let j = to_json(&v);
        assert!(j.contains("\"srcaddr\":null"), "{j}");
        assert_eq!(parse_json(&j).unwrap(), r);
    }

    #[test]
    fn json_round_trips_with_rule() {
        let mut r = sample();
        r.rule = Some(Arc::from("sg-1:deny-ssh"));
        let ffi = r.to_ffi();
        // SAFETY: `r` outlives the view.
        let v = unsafe { RecordView::new(&ffi) };
        let j = to_json(&v);
        assert!(
            j.starts_with("{\"version\":1,\"vswitch-id\":\"vsw-1\""),
            "{j}"
        );
        assert!(
            j.ends_with(",\"action\":\"ACCEPT\",\"rule\":\"sg-1:deny-ssh\"}"),
            "{j}"
        );
        assert_eq!(parse_json(&j).unwrap(), r);
    }

    #[test]
    fn json_writer_agrees_with_serde_json_and_escapes() {
        let mut r = sample();
        r.rule = Some(Arc::from("sg \"q\"\\x\n\u{1}"));
        Arc::make_mut(&mut r.eni).eni_id = "eni-\u{e9}".into();
        let ffi = r.to_ffi();
        // SAFETY: `r` outlives the view.
        let v = unsafe { RecordView::new(&ffi) };
        let line = to_json(&v);
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed, to_json_value(&v), "{line}");
        assert_eq!(parse_json(&line).unwrap(), r);
    }

    #[test]
    fn parse_json_names_the_bad_field() {
        let e = parse_json(r#"{"log-status":"OK","srcaddr":"x"}"#).unwrap_err();
        assert_eq!(e.0, "field `srcaddr`: expected an IP address");
    }
}
