//! The two textual forms of a record, shared by every sink that writes text
//! (file, syslog) so they agree byte for byte:
//!
//! - **text**: the design's 18 fields in order, space separated, `-` for a
//!   field without a value (the flow fields of NODATA / SKIPDATA records);
//! - **JSON**: one object with the design's field names as keys, numbers as
//!   numbers, `null` for the flow fields that text writes as `-` (so a
//!   SIEM's field types stay stable), ids as strings (an unknown id is `""`
//!   in JSON and `-` in text), plus `rule` when a REJECT record carries one.
//!
//! Both come in two flavours: the fixed writers (`write_text`, `write_json`)
//! for the design's 18 fields, and the `*_fields` writers (module `listed`)
//! that follow a sink's [`FieldList`](crate::fields::FieldList) and fall
//! back to the fixed ones for the default list.

mod listed;

pub use listed::{
    field_value, push_text_value, to_json_fields, to_text_fields, write_json_fields,
    write_text_fields, FieldValue,
};

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
    push_int(out, r.version());
    for id in [
        r.vswitch_id(),
        r.vm_id(),
        r.vpc_id(),
        r.account_id(),
        r.eni_id(),
    ] {
        out.push(' ');
        out.push_str(id_or_dash(id));
    }
    out.push(' ');
    let flow = r.flow();
    match &flow {
        Some(f) => {
            push_addr(out, f.srcaddr);
            out.push(' ');
            push_int(out, f.srcport);
            out.push(' ');
            push_addr(out, f.dstaddr);
            out.push(' ');
            push_int(out, f.dstport);
            out.push(' ');
            push_int(out, f.protocol);
            out.push(' ');
            out.push_str(f.direction.as_str());
            out.push(' ');
            push_int(out, f.packets);
            out.push(' ');
            push_int(out, f.bytes);
            out.push(' ');
        }
        None => out.push_str("- - - - - - - - "),
    }
    push_int(out, r.start());
    out.push(' ');
    push_int(out, r.end());
    out.push(' ');
    out.push_str(r.log_status().as_str());
    out.push(' ');
    match &flow {
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
/// map per record was most of a busy file sink's time. For the same reason
/// nothing here goes through `core::fmt` on the common path (see
/// `push_int`, `push_addr`).
pub fn write_json(out: &mut String, r: &RecordView<'_>) {
    write_json_members(out, r, r.flow().as_ref());
    out.push('}');
}

/// Appends the JSON object of `r` with every field it carries: the design's
/// 18 and `rule` as [`write_json`] writes them, then each extra that has a
/// value (`pkt-srcaddr`, `pkt-dstaddr`, `flow-start`, `flow-end`,
/// `tcp-flags`), without a line ending. The daemon's own lossless form
/// (the spool stores it): [`parse_json`] reads every field back, and reads
/// lines without the extras (older spools, `to_json`) with them `None`.
pub fn write_json_full(out: &mut String, r: &RecordView<'_>) {
    let flow = r.flow();
    write_json_members(out, r, flow.as_ref());
    if let Some(x) = flow.as_ref().map(|f| f.extras) {
        if let Some(a) = x.pkt_srcaddr {
            out.push_str(",\"pkt-srcaddr\":\"");
            push_addr(out, a);
            out.push('"');
        }
        if let Some(a) = x.pkt_dstaddr {
            out.push_str(",\"pkt-dstaddr\":\"");
            push_addr(out, a);
            out.push('"');
        }
        if let Some(t) = x.flow_start {
            out.push_str(",\"flow-start\":");
            push_int(out, t);
        }
        if let Some(t) = x.flow_end {
            out.push_str(",\"flow-end\":");
            push_int(out, t);
        }
        if let Some(flags) = x.tcp_flags {
            out.push_str(",\"tcp-flags\":");
            push_int(out, flags);
        }
    }
    out.push('}');
}

/// [`write_json`] without the closing brace; `flow` is `r.flow()`.
fn write_json_members(out: &mut String, r: &RecordView<'_>, flow: Option<&FlowFields>) {
    out.push_str("{\"version\":");
    push_int(out, r.version());
    out.push_str(",\"vswitch-id\":");
    push_json_string(out, r.vswitch_id());
    out.push_str(",\"vm-id\":");
    push_json_string(out, r.vm_id());
    out.push_str(",\"vpc-id\":");
    push_json_string(out, r.vpc_id());
    out.push_str(",\"account-id\":");
    push_json_string(out, r.account_id());
    out.push_str(",\"eni-id\":");
    push_json_string(out, r.eni_id());
    match flow {
        Some(f) => {
            // Addresses need no escaping: digits, `.`, `:` and hex only.
            out.push_str(",\"srcaddr\":\"");
            push_addr(out, f.srcaddr);
            out.push_str("\",\"srcport\":");
            push_int(out, f.srcport);
            out.push_str(",\"dstaddr\":\"");
            push_addr(out, f.dstaddr);
            out.push_str("\",\"dstport\":");
            push_int(out, f.dstport);
            out.push_str(",\"protocol\":");
            push_int(out, f.protocol);
            out.push_str(",\"direction\":\"");
            out.push_str(f.direction.as_str());
            out.push_str("\",\"packets\":");
            push_int(out, f.packets);
            out.push_str(",\"bytes\":");
            push_int(out, f.bytes);
        }
        None => out.push_str(
            ",\"srcaddr\":null,\"srcport\":null,\"dstaddr\":null,\"dstport\":null,\"protocol\":null,\
             \"direction\":null,\"packets\":null,\"bytes\":null",
        ),
    }
    out.push_str(",\"start\":");
    push_int(out, r.start());
    out.push_str(",\"end\":");
    push_int(out, r.end());
    out.push_str(",\"log-status\":\"");
    out.push_str(r.log_status().as_str());
    out.push_str("\",\"action\":");
    match flow {
        Some(f) => {
            out.push('"');
            out.push_str(f.action.as_str());
            out.push('"');
        }
        None => out.push_str("null"),
    }
    if let Some(rule) = r.rule() {
        out.push_str(",\"rule\":");
        push_json_string(out, rule);
    }
}

/// `n` in decimal, as `Display` writes it, without `core::fmt`'s
/// per-call machinery.
fn push_int<I: itoa::Integer>(out: &mut String, n: I) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// The decimal form of every octet followed by a dot, zero padded to three
/// digits: entry `n` is bytes `4n..4n + 4`, and [`push_addr`] skips the
/// padding zeros.
const OCTETS_DOTTED: &str = {
    const BYTES: [u8; 256 * 4] = {
        let mut b = [0; 256 * 4];
        let mut n = 0;
        while n < 256 {
            b[4 * n] = b'0' + (n / 100) as u8;
            b[4 * n + 1] = b'0' + (n / 10 % 10) as u8;
            b[4 * n + 2] = b'0' + (n % 10) as u8;
            b[4 * n + 3] = b'.';
            n += 1;
        }
        b
    };
    match std::str::from_utf8(&BYTES) {
        Ok(s) => s,
        Err(_) => panic!("the octet table is ASCII"),
    }
};

/// `addr` as its `Display` writes it. IPv4 (nearly every record) from a
/// table of octets; IPv6 through `Display`, whose RFC 5952 compression is
/// not worth redoing for the rarer family.
fn push_addr(out: &mut String, addr: IpAddr) {
    match addr {
        IpAddr::V4(a) => {
            let [o1, o2, o3, o4] = a.octets();
            push_octet(out, o1, true);
            push_octet(out, o2, true);
            push_octet(out, o3, true);
            push_octet(out, o4, false);
        }
        IpAddr::V6(a) => {
            let _ = write!(out, "{a}");
        }
    }
}

fn push_octet(out: &mut String, n: u8, dot: bool) {
    let entry = 4 * usize::from(n);
    let leading_zeros = usize::from(n < 100) + usize::from(n < 10);
    out.push_str(&OCTETS_DOTTED[entry + leading_zeros..entry + 3 + usize::from(dot)]);
}

/// Whether `value` can go into a JSON string literal as it is. Checking
/// bytes is enough: every byte of a multi-byte UTF-8 character is >= 0x80.
fn needs_json_escape(value: &str) -> bool {
    value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

/// `value` as a JSON string literal (RFC 8259 escaping).
fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    if !needs_json_escape(value) {
        // The common case (ids, rule names): one copy, not a push per char.
        out.push_str(value);
        out.push('"');
        return;
    }
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

/// Parses a JSON line as written by [`to_json`] or [`write_json_full`]
/// back into a record (extras absent or `null`: `None`).
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
            extras: parse_extras(obj)?,
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

/// The extras [`write_json_full`] writes; each absent or `null` is `None`.
fn parse_extras(obj: &Map<String, Value>) -> Result<FlowExtras, ParseRecordError> {
    let err = |k: &str, what: &str| ParseRecordError(format!("field `{k}`: expected {what}"));
    let present = |k: &str| obj.get(k).filter(|v| !v.is_null());
    let addr = |k: &str| -> Result<Option<IpAddr>, ParseRecordError> {
        present(k)
            .map(|v| {
                v.as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| err(k, "an IP address"))
            })
            .transpose()
    };
    let time = |k: &str| -> Result<Option<i64>, ParseRecordError> {
        present(k)
            .map(|v| v.as_i64().ok_or_else(|| err(k, "an integer")))
            .transpose()
    };
    Ok(FlowExtras {
        pkt_srcaddr: addr("pkt-srcaddr")?,
        pkt_dstaddr: addr("pkt-dstaddr")?,
        flow_start: time("flow-start")?,
        flow_end: time("flow-end")?,
        tcp_flags: present("tcp-flags")
            .map(|v| {
                v.as_u64()
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or_else(|| err("tcp-flags", "0..=255"))
            })
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::abi::FfiRecord;

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
                extras: Default::default(),
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
    fn full_json_round_trips_the_extras_and_old_lines_read_without() {
        let mut r = sample();
        r.rule = Some(Arc::from("sg-1:deny"));
        r.flow.as_mut().unwrap().extras = FlowExtras {
            pkt_srcaddr: Some("192.0.2.7".parse().unwrap()),
            pkt_dstaddr: Some("2001:db8::7".parse().unwrap()),
            flow_start: Some(1_700_000_001),
            flow_end: Some(1_700_000_002),
            tcp_flags: Some(19),
        };
        let ffi = r.to_ffi();
        // SAFETY: `r` outlives the view.
        let v = unsafe { RecordView::new(&ffi) };
        let mut full = String::new();
        write_json_full(&mut full, &v);
        assert_eq!(
            full,
            format!(
                "{},\"pkt-srcaddr\":\"192.0.2.7\",\"pkt-dstaddr\":\"2001:db8::7\",\
                 \"flow-start\":1700000001,\"flow-end\":1700000002,\"tcp-flags\":19}}",
                to_json(&v).trim_end_matches('}')
            )
        );
        assert_eq!(parse_json(&full).unwrap(), r);
        // Partly known extras: only those with a value are written.
        let mut partial = r.clone();
        partial.flow.as_mut().unwrap().extras = FlowExtras {
            tcp_flags: Some(2),
            ..Default::default()
        };
        let ffi = partial.to_ffi();
        // SAFETY: `partial` outlives the view.
        let v = unsafe { RecordView::new(&ffi) };
        let mut line = String::new();
        write_json_full(&mut line, &v);
        assert!(
            line.ends_with(",\"rule\":\"sg-1:deny\",\"tcp-flags\":2}"),
            "{line}"
        );
        assert_eq!(parse_json(&line).unwrap(), partial);
        // A line as an older spool holds it: the extras are None.
        let old = to_json(&v);
        let back = parse_json(&old).unwrap();
        assert_eq!(back.flow.unwrap().extras, FlowExtras::default());
        // Without extras the full form is the plain one.
        let plain = sample();
        let ffi = plain.to_ffi();
        // SAFETY: `plain` outlives the view.
        let v = unsafe { RecordView::new(&ffi) };
        let mut line = String::new();
        write_json_full(&mut line, &v);
        assert_eq!(line, to_json(&v));
        assert_eq!(
            parse_json(r#"{"log-status":"OK","srcaddr":"10.0.0.1","srcport":1,"dstaddr":"10.0.0.2","dstport":2,"protocol":6,"direction":"in","packets":1,"bytes":1,"action":"ACCEPT","start":0,"end":1,"tcp-flags":300}"#)
                .unwrap_err()
                .0,
            "field `tcp-flags`: expected 0..=255"
        );
    }

    #[test]
    fn parse_json_names_the_bad_field() {
        let e = parse_json(r#"{"log-status":"OK","srcaddr":"x"}"#).unwrap_err();
        assert_eq!(e.0, "field `srcaddr`: expected an IP address");
    }

    /// The writers as they were before they stopped going through
    /// `core::fmt`: the oracle the fast ones must match byte for byte.
    mod reference {
        use std::fmt::Write as _;

        use super::super::id_or_dash;
        use crate::record::RecordView;

        pub fn text(r: &RecordView<'_>) -> String {
            let mut out = String::new();
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
            out
        }

        pub fn json(r: &RecordView<'_>) -> String {
            let mut out = String::new();
            let out = &mut out;
            let str_field = |out: &mut String, key: &str, value: &str| {
                let _ = write!(out, "\"{key}\":");
                json_string(out, value);
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
                json_string(out, rule);
            }
            out.push('}');
            std::mem::take(out)
        }

        pub fn json_string(out: &mut String, value: &str) {
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
    }

    /// Both writers against the reference, appending after existing text
    /// as the sinks do.
    #[track_caller]
    fn assert_matches_reference(ffi: &FfiRecord) {
        // SAFETY: the caller's record owns the strings `ffi` points to.
        let v = unsafe { RecordView::new(ffi) };
        let mut out = String::from("prefix|");
        write_text(&mut out, &v);
        assert_eq!(out, format!("prefix|{}", reference::text(&v)));
        out.truncate("prefix|".len());
        write_json(&mut out, &v);
        assert_eq!(out, format!("prefix|{}", reference::json(&v)));
    }

    /// A cheap deterministic generator, so the loops below cover many
    /// values without a `rand` dependency and fail the same way every run.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn with_addrs(srcaddr: IpAddr, dstaddr: IpAddr) -> FlowRecord {
        let mut r = sample();
        let f = r.flow.as_mut().unwrap();
        f.srcaddr = srcaddr;
        f.dstaddr = dstaddr;
        r
    }

    #[test]
    fn ipv4_is_written_as_display_writes_it() {
        use std::net::Ipv4Addr;
        let mut addrs: Vec<Ipv4Addr> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "1.2.3.4",
            "100.64.0.9",
            "192.168.0.10",
            "9.10.99.100",
            "101.110.199.200",
            "127.0.0.1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        // Every octet value in every position.
        for n in 0..=255u8 {
            addrs.push(Ipv4Addr::new(n, 0, 0, 0));
            addrs.push(Ipv4Addr::new(1, n, 1, 1));
            addrs.push(Ipv4Addr::new(255, 255, n, 255));
            addrs.push(Ipv4Addr::new(10, 0, 0, n));
        }
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        addrs.extend((0..50_000).map(|_| Ipv4Addr::from(rng.next() as u32)));

        let mut out = String::new();
        for a in &addrs {
            out.clear();
            push_addr(&mut out, IpAddr::V4(*a));
            assert_eq!(out, a.to_string());
        }
        for pair in addrs.chunks_exact(2).take(3_000) {
            let r = with_addrs(IpAddr::V4(pair[0]), IpAddr::V4(pair[1]));
            assert_matches_reference(&r.to_ffi());
        }
    }

    #[test]
    fn ipv6_is_written_as_display_writes_it() {
        let addrs = [
            "::",
            "::1",
            "1::",
            "2001:db8::1",
            "2001:db8:0:1:0:0:0:10",
            "2001:db8:0:0:1:0:0:1",
            "fe80::1:2:3:4",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "1:2:3:4:5:6:7:8",
            "::ffff:1.2.3.4",
            "::1.2.3.4",
            "64:ff9b::10.0.0.1",
        ];
        let mut out = String::new();
        for a in addrs {
            let a: IpAddr = a.parse().unwrap();
            out.clear();
            push_addr(&mut out, a);
            assert_eq!(out, a.to_string());
            assert_matches_reference(&with_addrs(a, "10.0.0.1".parse().unwrap()).to_ffi());
        }
    }

    #[test]
    fn integers_are_written_as_display_writes_them() {
        let mut unsigned: Vec<u64> = vec![0, 9, 10, 99, 100, 255, 256, 65_535, 65_536];
        unsigned.extend([u64::from(u32::MAX), u64::MAX - 1, u64::MAX]);
        for p in 0..=19 {
            let p = 10u64.pow(p);
            unsigned.extend([p - 1, p, p + 1]);
        }
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        // Random values of every width, not just huge ones.
        unsigned.extend((0..10_000).map(|i| rng.next() >> (i % 64)));

        let mut out = String::new();
        let mut check = |n: &dyn std::fmt::Display, push: &dyn Fn(&mut String)| {
            out.clear();
            push(&mut out);
            assert_eq!(out, n.to_string());
        };
        for &n in &unsigned {
            check(&n, &|o| push_int(o, n));
            let (small, port, proto) = (n as u32, n as u16, n as u8);
            check(&small, &|o| push_int(o, small));
            check(&port, &|o| push_int(o, port));
            check(&proto, &|o| push_int(o, proto));
            for signed in [n as i64, (n as i64).wrapping_neg()] {
                check(&signed, &|o| push_int(o, signed));
            }
        }
        for signed in [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX] {
            check(&signed, &|o| push_int(o, signed));
        }

        for (i, n) in unsigned.iter().copied().enumerate().take(2_000) {
            let mut r = sample();
            let f = r.flow.as_mut().unwrap();
            f.srcport = n as u16;
            f.dstport = (n >> 16) as u16;
            f.protocol = n as u8;
            f.packets = n;
            f.bytes = unsigned[unsigned.len() - 1 - i];
            r.start = n as i64;
            r.end = (n as i64).wrapping_neg();
            let mut ffi = r.to_ffi();
            ffi.version = n as u32;
            assert_matches_reference(&ffi);
        }
    }

    #[test]
    fn json_strings_are_escaped_only_when_they_need_it() {
        let plain = [
            "",
            "eni-bp1a2b3c4d",
            "sg-1:deny-ssh",
            "a/b'c",
            " ",
            "~\u{7f}",
            "eni-\u{e9}",
            "\u{65e5}\u{672c}",
        ];
        let escaped = [
            "\"",
            "\\",
            "\n",
            "\r",
            "\t",
            "\u{0}",
            "\u{1}",
            "\u{8}",
            "\u{c}",
            "\u{1f}",
            "sg \"q\"\\x\n\u{1}",
            "\"at the start",
            "at the end\\",
            "\u{e9}\u{1b}[0m",
        ];
        let mut out = String::new();
        for s in plain.iter().chain(&escaped) {
            assert_eq!(needs_json_escape(s), escaped.contains(s), "{s:?}");
            out.clear();
            push_json_string(&mut out, s);
            let mut expected = String::new();
            reference::json_string(&mut expected, s);
            assert_eq!(out, expected);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, *s);
            if !escaped.contains(s) {
                assert_eq!(out, format!("\"{s}\""));
            }

            // The same strings as ids and rule of whole records.
            let mut r = sample();
            let eni = Arc::make_mut(&mut r.eni);
            eni.eni_id = (*s).into();
            eni.vswitch_id = format!("vsw-{s}");
            eni.vm_id = format!("{s}-i");
            r.rule = Some(Arc::from(*s));
            assert_matches_reference(&r.to_ffi());
        }
    }

    #[test]
    fn records_without_flow_fields_match_the_reference() {
        for log_status in [LogStatus::NoData, LogStatus::SkipData] {
            let mut r = sample();
            r.flow = None;
            r.log_status = log_status;
            assert_matches_reference(&r.to_ffi());
            r.eni = Arc::new(EniIds::default());
            assert_matches_reference(&r.to_ffi());
        }
        // An OK record whose address family is unknown has no flow fields
        // either (`RecordView::flow` is `None`): dashes and nulls.
        let r = sample();
        let mut ffi = r.to_ffi();
        ffi.dstaddr.family = crate::abi::ADDR_NONE;
        assert_matches_reference(&ffi);
        // SAFETY: `r` outlives the view.
        assert!(to_text(&unsafe { RecordView::new(&ffi) }).ends_with(" OK -"));
    }
}
