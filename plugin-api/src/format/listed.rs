//! Records written with a sink's field list (`fields = [...]`): the
//! listed fields in the listed order. The default list goes to the fixed
//! writers of the parent module, so the common case pays one branch and
//! its output stays what it always was.
//!
//! One function, [`field_value`], decides each field's value; text, JSON
//! and Log Service only differ in how they spell it.

use std::net::IpAddr;

use super::{id_or_dash, push_addr, push_int, push_json_string, write_json, write_text};
use crate::fields::{Field, FieldList};
use crate::record::{FlowFields, RecordView};

/// A field's value, before it is spelled as text or JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValue<'a> {
    /// A number: JSON number, decimal text.
    Int(i64),
    /// A number: JSON number, decimal text.
    UInt(u64),
    /// An ENI id: `-` in text and `""` in JSON when unknown, as the 18
    /// fields have always been written.
    Id(&'a str),
    /// A fixed word (`in`, `ACCEPT`, `IPv4`, ...).
    Word(&'static str),
    Addr(IpAddr),
    /// A firewall rule's name: free text from the operator's rules.
    Rule(&'a str),
    /// No value: `-` in text, `null` in JSON.
    Absent,
}

/// The value of `field` in `r`; `flow` is `r.flow()` (taken once per
/// record by the caller, not once per field).
pub fn field_value<'a>(
    r: &RecordView<'a>,
    flow: Option<&FlowFields>,
    field: Field,
) -> FieldValue<'a> {
    use FieldValue::*;
    let of_flow = |value: fn(&FlowFields) -> FieldValue<'a>| flow.map_or(Absent, value);
    match field {
        Field::Version => UInt(r.version().into()),
        Field::VswitchId => Id(r.vswitch_id()),
        Field::VmId => Id(r.vm_id()),
        Field::VpcId => Id(r.vpc_id()),
        Field::AccountId => Id(r.account_id()),
        Field::EniId => Id(r.eni_id()),
        Field::Srcaddr => of_flow(|f| Addr(f.srcaddr)),
        Field::Srcport => of_flow(|f| UInt(f.srcport.into())),
        Field::Dstaddr => of_flow(|f| Addr(f.dstaddr)),
        Field::Dstport => of_flow(|f| UInt(f.dstport.into())),
        Field::Protocol => of_flow(|f| UInt(f.protocol.into())),
        Field::Direction => of_flow(|f| Word(f.direction.as_str())),
        Field::Packets => of_flow(|f| UInt(f.packets)),
        Field::Bytes => of_flow(|f| UInt(f.bytes)),
        Field::Start => Int(r.start()),
        Field::End => Int(r.end()),
        Field::LogStatus => Word(r.log_status().as_str()),
        Field::Action => of_flow(|f| Word(f.action.as_str())),
        Field::PktSrcaddr => of_flow(|f| f.extras.pkt_srcaddr.map_or(Absent, Addr)),
        Field::PktDstaddr => of_flow(|f| f.extras.pkt_dstaddr.map_or(Absent, Addr)),
        Field::FlowStart => of_flow(|f| f.extras.flow_start.map_or(Absent, Int)),
        Field::FlowEnd => of_flow(|f| f.extras.flow_end.map_or(Absent, Int)),
        Field::TcpFlags => of_flow(|f| f.extras.tcp_flags.map_or(Absent, |t| UInt(t.into()))),
        Field::Type => of_flow(|f| {
            Word(match f.srcaddr {
                IpAddr::V4(_) => "IPv4",
                IpAddr::V6(_) => "IPv6",
            })
        }),
        Field::Rule => r.rule().map_or(Absent, Rule),
    }
}

/// Appends `value` as a text-form token.
pub fn push_text_value(out: &mut String, value: FieldValue<'_>) {
    match value {
        FieldValue::Int(n) => push_int(out, n),
        FieldValue::UInt(n) => push_int(out, n),
        FieldValue::Id(s) => out.push_str(id_or_dash(s)),
        FieldValue::Word(w) => out.push_str(w),
        FieldValue::Addr(a) => push_addr(out, a),
        FieldValue::Rule(s) => push_text_token(out, s),
        FieldValue::Absent => out.push('-'),
    }
}

/// `s` as one token of a space separated line: whitespace and control
/// characters (an NFLOG prefix may hold them) become `_`, so a reader
/// splitting on spaces still finds every field in its column.
fn push_text_token(out: &mut String, s: &str) {
    if !s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        out.push_str(s);
        return;
    }
    out.extend(s.chars().map(|c| {
        if c.is_whitespace() || c.is_control() {
            '_'
        } else {
            c
        }
    }));
}

/// Appends `value` as a JSON value.
fn push_json_value(out: &mut String, value: FieldValue<'_>) {
    match value {
        FieldValue::Int(n) => push_int(out, n),
        FieldValue::UInt(n) => push_int(out, n),
        FieldValue::Id(s) | FieldValue::Rule(s) => push_json_string(out, s),
        FieldValue::Word(w) => {
            // Fixed ASCII words: nothing to escape.
            out.push('"');
            out.push_str(w);
            out.push('"');
        }
        FieldValue::Addr(a) => {
            out.push('"');
            push_addr(out, a);
            out.push('"');
        }
        FieldValue::Absent => out.push_str("null"),
    }
}

/// Appends the text form of `r` with `fields`, without a line ending: the
/// listed fields in order, space separated, `-` for no value.
pub fn write_text_fields(out: &mut String, r: &RecordView<'_>, fields: &FieldList) {
    if fields.is_default() {
        return write_text(out, r);
    }
    let flow = r.flow();
    for (i, &field) in fields.fields().iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        push_text_value(out, field_value(r, flow.as_ref(), field));
    }
}

/// Appends the JSON object of `r` with `fields` as its keys, in order,
/// without a line ending. The default list writes exactly what
/// [`write_json`] writes (with `rule` when the record has one).
pub fn write_json_fields(out: &mut String, r: &RecordView<'_>, fields: &FieldList) {
    if fields.is_default() {
        return write_json(out, r);
    }
    let flow = r.flow();
    out.push('{');
    for (i, &field) in fields.fields().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Field names are fixed ASCII words: nothing to escape.
        out.push('"');
        out.push_str(field.name());
        out.push_str("\":");
        push_json_value(out, field_value(r, flow.as_ref(), field));
    }
    out.push('}');
}

/// The text form of `r` with `fields`.
pub fn to_text_fields(r: &RecordView<'_>, fields: &FieldList) -> String {
    let mut s = String::with_capacity(160);
    write_text_fields(&mut s, r, fields);
    s
}

/// The JSON line of `r` with `fields`.
pub fn to_json_fields(r: &RecordView<'_>, fields: &FieldList) -> String {
    let mut s = String::with_capacity(320);
    write_json_fields(&mut s, r, fields);
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::record::*;

    fn sample() -> FlowRecord {
        FlowRecord {
            eni: Arc::new(EniIds {
                eni_id: "eni-1".into(),
                vswitch_id: "vsw-1".into(),
                vpc_id: String::new(),
                vm_id: "i-1".into(),
                account_id: "123".into(),
            }),
            flow: Some(FlowFields {
                srcaddr: "10.0.0.1".parse().unwrap(),
                srcport: 40000,
                dstaddr: "10.0.0.2".parse().unwrap(),
                dstport: 443,
                protocol: 6,
                direction: Direction::Out,
                packets: 10,
                bytes: 1500,
                action: Action::Reject,
                extras: FlowExtras {
                    pkt_srcaddr: Some("192.0.2.1".parse().unwrap()),
                    pkt_dstaddr: Some("2001:db8::9".parse().unwrap()),
                    flow_start: Some(1_700_000_001),
                    flow_end: Some(-5),
                    tcp_flags: Some(crate::abi::TCP_FLAG_SYN_ACK | crate::abi::TCP_FLAG_FIN),
                },
            }),
            start: 1_700_000_000,
            end: 1_700_000_600,
            log_status: LogStatus::Ok,
            rule: Some(Arc::from("sg-1:deny ssh")),
        }
    }

    /// `f` with the record's view.
    fn with_view<T>(r: &FlowRecord, f: impl FnOnce(&RecordView<'_>) -> T) -> T {
        let ffi = r.to_ffi();
        // SAFETY: `r` outlives the view.
        f(&unsafe { RecordView::new(&ffi) })
    }

    fn all_fields() -> FieldList {
        let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
        FieldList::parse(&names).unwrap()
    }

    #[test]
    fn every_field_in_text_and_json() {
        let r = sample();
        let fields = all_fields();
        let text = with_view(&r, |v| to_text_fields(v, &fields));
        assert_eq!(
            text,
            "1 vsw-1 i-1 - 123 eni-1 10.0.0.1 40000 10.0.0.2 443 6 out 10 1500 1700000000 \
             1700000600 OK REJECT 192.0.2.1 2001:db8::9 1700000001 -5 19 IPv4 sg-1:deny_ssh"
        );
        let json = with_view(&r, |v| to_json_fields(v, &fields));
        assert_eq!(
            json,
            r#"{"version":1,"vswitch-id":"vsw-1","vm-id":"i-1","vpc-id":"","account-id":"123","eni-id":"eni-1","srcaddr":"10.0.0.1","srcport":40000,"dstaddr":"10.0.0.2","dstport":443,"protocol":6,"direction":"out","packets":10,"bytes":1500,"start":1700000000,"end":1700000600,"log-status":"OK","action":"REJECT","pkt-srcaddr":"192.0.2.1","pkt-dstaddr":"2001:db8::9","flow-start":1700000001,"flow-end":-5,"tcp-flags":19,"type":"IPv4","rule":"sg-1:deny ssh"}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed.as_object().unwrap().len(), Field::ALL.len());
    }

    #[test]
    fn type_follows_srcaddr_and_is_absent_without_flow() {
        let mut r = sample();
        r.flow.as_mut().unwrap().srcaddr = "::1".parse().unwrap();
        let fields = FieldList::parse(&["type"]).unwrap();
        assert_eq!(with_view(&r, |v| to_text_fields(v, &fields)), "IPv6");
        r.flow = None;
        r.log_status = LogStatus::SkipData;
        assert_eq!(with_view(&r, |v| to_text_fields(v, &fields)), "-");
        assert_eq!(
            with_view(&r, |v| to_json_fields(v, &fields)),
            r#"{"type":null}"#
        );
    }

    #[test]
    fn unknown_extras_are_dashes_and_nulls() {
        let mut r = sample();
        r.flow.as_mut().unwrap().extras = FlowExtras::default();
        r.rule = None;
        let fields = FieldList::parse(&[
            "pkt-srcaddr",
            "pkt-dstaddr",
            "flow-start",
            "flow-end",
            "tcp-flags",
            "rule",
        ])
        .unwrap();
        assert_eq!(with_view(&r, |v| to_text_fields(v, &fields)), "- - - - - -");
        assert_eq!(
            with_view(&r, |v| to_json_fields(v, &fields)),
            r#"{"pkt-srcaddr":null,"pkt-dstaddr":null,"flow-start":null,"flow-end":null,"tcp-flags":null,"rule":null}"#
        );
    }

    /// The listed writer spelling the 18 fields one by one agrees with the
    /// fixed writers the default list takes (JSON: but for `rule`, which
    /// the fixed writer adds when present): one source of values.
    #[test]
    fn the_generic_path_agrees_with_the_fixed_writers() {
        let mut records = vec![sample()];
        let mut r = sample();
        r.rule = None;
        records.push(r.clone());
        r.flow = None;
        r.log_status = LogStatus::NoData;
        records.push(r);
        for r in &records {
            with_view(r, |v| {
                let flow = v.flow();
                let values: Vec<FieldValue<'_>> = Field::DEFAULT
                    .iter()
                    .map(|&f| field_value(v, flow.as_ref(), f))
                    .collect();
                let mut text = String::new();
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        text.push(' ');
                    }
                    push_text_value(&mut text, *value);
                }
                assert_eq!(text, to_text_fields(v, &FieldList::default()));
                let mut json = String::from("{");
                for (i, (f, value)) in Field::DEFAULT.iter().zip(&values).enumerate() {
                    if i > 0 {
                        json.push(',');
                    }
                    json.push_str(&format!("\"{}\":", f.name()));
                    push_json_value(&mut json, *value);
                }
                if let Some(rule) = v.rule() {
                    json.push_str(",\"rule\":");
                    push_json_string(&mut json, rule);
                }
                json.push('}');
                assert_eq!(json, to_json_fields(v, &FieldList::default()));
            });
        }
    }

    #[test]
    fn rule_text_keeps_one_token() {
        let mut out = String::new();
        push_text_token(&mut out, "a b\tc\nd");
        assert_eq!(out, "a_b_c_d");
        out.clear();
        push_text_token(&mut out, "sg:plain");
        assert_eq!(out, "sg:plain");
    }
}
