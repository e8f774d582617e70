//! Records as PutLogs `LogGroup`s: one `Log` per record, its `time` the
//! record's `start`, its contents the design's field names with string
//! values (Log Service stores every value as a string). A value is the
//! record's text-form token, so `-` stands wherever the text form writes
//! `-` (the flow fields of NODATA / SKIPDATA records, unknown ids), and
//! `rule` is there only when the record carries one. With a field list
//! (`fields = [...]`) the contents are the listed fields, in order, each
//! with its text-form token (`-` where it has no value).

use std::ops::Range;

use aliyun_log_sdk_protobuf::{Log, LogGroup};
use flowlogd_plugin_api::format::{self, FIELD_NAMES};
use flowlogd_plugin_api::{FieldList, RecordView};

/// The parts of a `LogGroup` shared by all its logs.
#[derive(Clone, Debug)]
pub struct GroupMeta {
    pub topic: String,
    pub source: String,
    pub tags: Vec<(String, String)>,
    /// The keys of each log.
    pub fields: FieldList,
}

impl GroupMeta {
    /// Encoded bytes of the topic, source and tags.
    fn encoded_len(&self) -> usize {
        field_len(self.topic.len())
            + field_len(self.source.len())
            + self
                .tags
                .iter()
                .map(|(k, v)| field_len(pair_len(k, v)))
                .sum::<usize>()
    }

    fn group(&self, logs: Vec<Log>) -> LogGroup {
        let mut g = LogGroup::new();
        g.set_topic(self.topic.as_str())
            .set_source(self.source.as_str());
        for (k, v) in &self.tags {
            g.add_log_tag_kv(k.as_str(), v.as_str());
        }
        for log in logs {
            g.add_log(log);
        }
        g
    }
}

/// One PutLogs request's worth of a batch: `records` are its indexes in
/// the batch.
pub struct Request {
    pub records: Range<usize>,
    pub group: LogGroup,
}

/// Splits `records` into groups of at most `max_records` logs and about
/// `max_batch_bytes` encoded bytes each (a record larger than that alone
/// still goes, alone). The split depends only on the records and the
/// limits, so a retried batch splits the same way.
pub fn split(
    records: &[RecordView<'_>],
    meta: &GroupMeta,
    max_records: usize,
    max_bytes: usize,
) -> Vec<Request> {
    let base = meta.encoded_len();
    let mut requests = Vec::new();
    let mut logs = Vec::new();
    let mut first = 0;
    let mut bytes = base;
    for (i, r) in records.iter().enumerate() {
        let log = log_of(r, &meta.fields);
        let len = field_len(log_len(&log));
        if !logs.is_empty() && (logs.len() == max_records || bytes + len > max_bytes) {
            requests.push(Request {
                records: first..i,
                group: meta.group(std::mem::take(&mut logs)),
            });
            first = i;
            bytes = base;
        }
        logs.push(log);
        bytes += len;
    }
    if !logs.is_empty() {
        requests.push(Request {
            records: first..records.len(),
            group: meta.group(logs),
        });
    }
    requests
}

fn id_or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// The contents of `r` with `fields`: the listed ones in order, or for the
/// default list the design's 18 and then `rule` when the record has one.
pub fn contents(r: &RecordView<'_>, fields: &FieldList) -> Vec<(&'static str, String)> {
    if fields.is_default() {
        return default_contents(r);
    }
    let flow = r.flow();
    fields
        .fields()
        .iter()
        .map(|&field| {
            let mut value = String::new();
            format::push_text_value(&mut value, format::field_value(r, flow.as_ref(), field));
            (field.name(), value)
        })
        .collect()
}

/// The contents of `r`, in the design's field order, then `rule`.
fn default_contents(r: &RecordView<'_>) -> Vec<(&'static str, String)> {
    let f = r.flow();
    let dash = || "-".to_owned();
    let values: [String; 18] = [
        r.version().to_string(),
        id_or_dash(r.vswitch_id()),
        id_or_dash(r.vm_id()),
        id_or_dash(r.vpc_id()),
        id_or_dash(r.account_id()),
        id_or_dash(r.eni_id()),
        f.map_or_else(dash, |f| f.srcaddr.to_string()),
        f.map_or_else(dash, |f| f.srcport.to_string()),
        f.map_or_else(dash, |f| f.dstaddr.to_string()),
        f.map_or_else(dash, |f| f.dstport.to_string()),
        f.map_or_else(dash, |f| f.protocol.to_string()),
        f.map_or_else(dash, |f| f.direction.as_str().to_owned()),
        f.map_or_else(dash, |f| f.packets.to_string()),
        f.map_or_else(dash, |f| f.bytes.to_string()),
        r.start().to_string(),
        r.end().to_string(),
        r.log_status().as_str().to_owned(),
        f.map_or_else(dash, |f| f.action.as_str().to_owned()),
    ];
    let mut out: Vec<(&'static str, String)> = FIELD_NAMES.iter().copied().zip(values).collect();
    if let Some(rule) = r.rule() {
        out.push(("rule", rule.to_owned()));
    }
    out
}

/// The `Log` of `r`. Its time is the window's start: the record describes
/// the window, and Log Service indexes and keeps logs by this time.
pub fn log_of(r: &RecordView<'_>, fields: &FieldList) -> Log {
    // `time` is a uint32 on the wire; a start outside it is not a real
    // capture window, and 0 makes that visible rather than wrapping.
    let mut log = Log::from_unixtime(u32::try_from(r.start()).unwrap_or(0));
    for (k, v) in contents(r, fields) {
        log.add_content_kv(k, v);
    }
    log
}

// Protobuf sizes, to split by bytes before encoding. Every field we write
// has a one-byte tag (field numbers < 16).

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// A length-delimited field holding `len` bytes: tag, length, bytes.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// A `{ key = 1; value = 2; }` message (LogContent, LogTag).
fn pair_len(k: &str, v: &str) -> usize {
    field_len(k.len()) + field_len(v.len())
}

/// A `Log` message without its own tag and length.
fn log_len(log: &Log) -> usize {
    1 + varint_len(u64::from(*log.time()))
        + log
            .contents()
            .iter()
            .map(|c| field_len(pair_len(c.key(), c.value())))
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowlogd_plugin_api::format::parse_json;
    use flowlogd_plugin_api::FlowRecord;

    fn meta() -> GroupMeta {
        GroupMeta {
            topic: "flowlog".into(),
            source: "192.0.2.10".into(),
            tags: vec![("flowlogd_version".into(), "0.1.0".into())],
            fields: FieldList::default(),
        }
    }

    fn records(n: usize) -> Vec<FlowRecord> {
        (0..n)
            .map(|i| {
                parse_json(&format!(
                    r#"{{"version":1,"vswitch-id":"vsw-1","vm-id":"i-1","vpc-id":"vpc-1","account-id":"123",
                    "eni-id":"eni-1","srcaddr":"10.0.0.1","srcport":{},"dstaddr":"2001:db8::1","dstport":443,
                    "protocol":6,"direction":"out","packets":{i},"bytes":{},"start":1700000000,"end":1700000600,
                    "log-status":"OK","action":"ACCEPT"}}"#,
                    1000 + i,
                    i * 1500
                ))
                .unwrap()
            })
            .collect()
    }

    fn with_views<T>(recs: &[FlowRecord], f: impl FnOnce(&[RecordView<'_>]) -> T) -> T {
        let ffi: Vec<_> = recs.iter().map(FlowRecord::to_ffi).collect();
        // SAFETY: `recs` outlives the views.
        let views: Vec<_> = ffi.iter().map(|r| unsafe { RecordView::new(r) }).collect();
        f(&views)
    }

    #[test]
    fn a_field_list_gives_the_keys_of_the_log() {
        let fields = FieldList::parse(&["eni-id", "type", "bytes", "tcp-flags", "rule"]).unwrap();
        let mut recs = records(2);
        recs[1].flow.as_mut().unwrap().extras.tcp_flags = Some(19);
        let c = with_views(&recs, |v| {
            v.iter()
                .map(|r| {
                    let kv: Vec<String> = contents(r, &fields)
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    kv.join(" ")
                })
                .collect::<Vec<_>>()
        });
        assert_eq!(
            c,
            [
                "eni-id=eni-1 type=IPv4 bytes=0 tcp-flags=- rule=-",
                "eni-id=eni-1 type=IPv4 bytes=1500 tcp-flags=19 rule=-"
            ]
        );
        // The sizes used to split agree with what the listed logs encode to.
        let mut meta = meta();
        meta.fields = fields;
        let requests = with_views(&recs, |v| split(v, &meta, 10, 1 << 20));
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].group.logs()[1].contents().len(), 5);
    }

    #[test]
    fn nodata_with_rule_has_dashes_and_the_rule() {
        let r = parse_json(
            r#"{"version":1,"vswitch-id":"","vm-id":"i-1","vpc-id":"vpc-1","account-id":"123","eni-id":"eni-1",
            "srcaddr":null,"srcport":null,"dstaddr":null,"dstport":null,"protocol":null,"direction":null,
            "packets":null,"bytes":null,"start":1700000000,"end":1700000600,"log-status":"NODATA","action":null,
            "rule":"sg-1:deny"}"#,
        )
        .unwrap();
        let c = with_views(&[r], |v| contents(&v[0], &FieldList::default()));
        let text: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            text.join(" "),
            "version=1 vswitch-id=- vm-id=i-1 vpc-id=vpc-1 account-id=123 eni-id=eni-1 srcaddr=- srcport=- \
             dstaddr=- dstport=- protocol=- direction=- packets=- bytes=- start=1700000000 end=1700000600 \
             log-status=NODATA action=- rule=sg-1:deny"
        );
    }

    #[test]
    fn the_size_estimate_is_the_encoded_size() {
        let recs = records(300);
        let reqs = with_views(&recs, |v| split(v, &meta(), 4096, usize::MAX));
        assert_eq!(reqs.len(), 1);
        let logs: usize = reqs[0]
            .group
            .logs()
            .iter()
            .map(|l| field_len(log_len(l)))
            .sum();
        assert_eq!(
            reqs[0].group.encode().unwrap().len(),
            meta().encoded_len() + logs
        );
    }

    #[test]
    fn splits_by_records_and_by_bytes() {
        let recs = records(5000);
        let reqs = with_views(&recs, |v| split(v, &meta(), 4096, usize::MAX));
        let ranges: Vec<_> = reqs.iter().map(|r| r.records.clone()).collect();
        assert_eq!(ranges, vec![0..4096, 4096..5000]);
        assert_eq!(reqs[0].group.logs().len(), 4096);

        let max_bytes = 20_000;
        let reqs = with_views(&recs[..1000], |v| split(v, &meta(), 4096, max_bytes));
        assert!(reqs.len() > 1);
        let mut next = 0;
        for r in &reqs {
            assert_eq!(r.records.start, next);
            next = r.records.end;
            let len = r.group.encode().unwrap().len();
            assert!(len <= max_bytes, "{len}");
            assert_eq!(r.group.logs().len(), r.records.len());
        }
        assert_eq!(next, 1000);
    }
}
