//! Records for the unit tests, and a small decoder of what the sink sends
//! (the real collectors' view is in tests/tests/ipfix_sink.rs).

use std::sync::Arc;

use flowlogd_plugin_api::{
    Action, Direction, EniIds, FlowFields, FlowRecord, LogStatus, RecordView,
};

use crate::template::{fields, VARIABLE_LENGTH};

fn eni() -> Arc<EniIds> {
    Arc::new(EniIds {
        eni_id: "eni-1".into(),
        vswitch_id: "vsw-1".into(),
        vpc_id: "vpc-1".into(),
        vm_id: "i-1".into(),
        account_id: "123".into(),
    })
}

/// An OK record: 3 packets, 180 bytes, window 1700000400..1700001000,
/// direction out for ACCEPT and in for REJECT.
pub fn flow_record(
    src: &str,
    srcport: u16,
    dst: &str,
    dstport: u16,
    action: Action,
    rule: Option<&str>,
) -> FlowRecord {
    FlowRecord {
        eni: eni(),
        flow: Some(FlowFields {
            srcaddr: src.parse().unwrap(),
            srcport,
            dstaddr: dst.parse().unwrap(),
            dstport,
            protocol: 6,
            direction: match action {
                Action::Accept => Direction::Out,
                Action::Reject => Direction::In,
            },
            packets: 3,
            bytes: 180,
            action,
            extras: Default::default(),
        }),
        start: 1_700_000_400,
        end: 1_700_001_000,
        log_status: LogStatus::Ok,
        rule: rule.map(Arc::from),
    }
}

pub fn status_record(status: LogStatus) -> FlowRecord {
    FlowRecord {
        eni: eni(),
        flow: None,
        start: 1_700_000_400,
        end: 1_700_001_000,
        log_status: status,
        rule: None,
    }
}

/// Calls `f` with views of `records` (as the host's write does).
pub fn with_views<T>(records: &[FlowRecord], f: impl FnOnce(&[RecordView<'_>]) -> T) -> T {
    let ffi: Vec<_> = records.iter().map(FlowRecord::to_ffi).collect();
    // SAFETY: `records` (whose strings the FFI records borrow) outlive the
    // views.
    let views: Vec<RecordView<'_>> = ffi.iter().map(|r| unsafe { RecordView::new(r) }).collect();
    f(&views)
}

/// One message as decoded.
#[derive(Debug)]
pub struct Decoded {
    pub version: u16,
    pub length: u16,
    pub export_time: u32,
    pub sequence: u32,
    pub domain: u32,
    /// Per set: its id and how many records (or templates) it holds.
    pub sets: Vec<(u16, usize)>,
    /// The data records' bytes, each with its template id.
    pub records: Vec<(u16, Vec<u8>)>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Decodes one message, with the sink's own templates for data sets.
///
/// # Panics
/// On anything malformed.
pub fn decode(msg: &[u8]) -> Decoded {
    let mut d = Decoded {
        version: be16(msg, 0),
        length: be16(msg, 2),
        export_time: be32(msg, 4),
        sequence: be32(msg, 8),
        domain: be32(msg, 12),
        sets: Vec::new(),
        records: Vec::new(),
    };
    assert_eq!(d.length as usize, msg.len(), "message length field");
    let mut at = 16;
    while at < msg.len() {
        let id = be16(msg, at);
        let len = be16(msg, at + 2) as usize;
        assert!(
            len >= 4 && at + len <= msg.len(),
            "set at {at}: length {len}"
        );
        let body = &msg[at + 4..at + len];
        let mut n = 0;
        let mut p = 0;
        if id == 2 {
            while p < body.len() {
                let count = be16(body, p + 2) as usize;
                p += 4;
                for _ in 0..count {
                    let enterprise = body[p] & 0x80 != 0;
                    p += if enterprise { 8 } else { 4 };
                }
                n += 1;
            }
        } else {
            while p < body.len() {
                let start = p;
                for f in fields(id) {
                    if f.length == VARIABLE_LENGTH {
                        let l = body[p] as usize;
                        assert!(l < 255, "long-form length not used by the sink");
                        p += 1 + l;
                    } else {
                        p += f.length as usize;
                    }
                }
                d.records.push((id, body[start..p].to_vec()));
                n += 1;
            }
        }
        assert_eq!(p, body.len(), "set {id} has trailing bytes");
        d.sets.push((id, n));
        at += len;
    }
    d
}
