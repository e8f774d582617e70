//! A record becomes one IPFIX data record of its template (see `template`
//! for the field order). A batch's records are encoded once, back to back,
//! and framed into messages afterwards (`message`): the framing depends on
//! the transport session (sequence numbers), the records do not.

use std::net::IpAddr;

use flowlogd_plugin_api::{Action, Direction, FlowFields, LogStatus, RecordView};

use crate::template::*;

/// The longest string element sent: ids and rule names are far shorter
/// (`eni-` + 17 hex digits); the cap makes every record fit in one UDP
/// message of `MIN_MAX_MESSAGE_BYTES`, with a 1-byte length prefix.
pub const MAX_STRING_BYTES: usize = 128;
/// The largest fixed part (the IPv6 template with NAT addresses) plus the
/// seven strings at their cap.
pub const MAX_RECORD_BYTES: usize = 4 * 16 + 2 + 2 + 1 + 8 * 4 + 1 + 1 + 7 * (1 + MAX_STRING_BYTES);

/// A batch's data records, encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedBatch {
    pub bytes: Vec<u8>,
    /// Per record: its template id and the end of its bytes.
    pub records: Vec<(u16, usize)>,
    /// How many strings were cut to [`MAX_STRING_BYTES`].
    pub truncated: usize,
}

impl EncodedBatch {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
        self.truncated = 0;
    }

    /// The bytes of record `i`.
    pub fn record(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.records[i - 1].1 };
        &self.bytes[start..self.records[i].1]
    }

    /// Appends `r`'s data record.
    pub fn push(&mut self, r: &RecordView<'_>) {
        let template = match (r.log_status(), r.flow()) {
            (LogStatus::Ok, Some(f)) => self.push_flow(&f, r),
            // NODATA, SKIPDATA (and an OK record without flow fields, which
            // the daemon never makes): window bounds and ids only.
            _ => {
                self.push_window(r);
                TEMPLATE_STATUS
            }
        };
        self.push_ids(r);
        self.records.push((template, self.bytes.len()));
    }

    fn push_flow(&mut self, f: &FlowFields, r: &RecordView<'_>) -> u16 {
        let both_v4 = f.srcaddr.is_ipv4() && f.dstaddr.is_ipv4();
        // postNAT elements only when both packet addresses are known, of
        // the flow's family, and a translation happened (one differs from
        // the record's own): a collector reads a postNAT element as "this
        // was translated", so a flow without NAT goes without them, and an
        // unknown NAT address is left out, never guessed.
        let nat = match (f.extras.pkt_srcaddr, f.extras.pkt_dstaddr) {
            (Some(s), Some(d))
                if s.is_ipv4() == both_v4
                    && d.is_ipv4() == both_v4
                    && (s != f.srcaddr || d != f.dstaddr) =>
            {
                Some((s, d))
            }
            _ => None,
        };
        let out = &mut self.bytes;
        let template = if both_v4 {
            put_v4(out, f.srcaddr);
            put_v4(out, f.dstaddr);
            if let Some((s, d)) = nat {
                put_v4(out, s);
                put_v4(out, d);
                TEMPLATE_FLOW_V4_NAT
            } else {
                TEMPLATE_FLOW_V4
            }
        } else {
            put_v6(out, f.srcaddr);
            put_v6(out, f.dstaddr);
            if let Some((s, d)) = nat {
                put_v6(out, s);
                put_v6(out, d);
                TEMPLATE_FLOW_V6_NAT
            } else {
                TEMPLATE_FLOW_V6
            }
        };
        out.extend_from_slice(&f.srcport.to_be_bytes());
        out.extend_from_slice(&f.dstport.to_be_bytes());
        out.push(f.protocol);
        out.extend_from_slice(&f.packets.to_be_bytes());
        out.extend_from_slice(&f.bytes.to_be_bytes());
        self.push_window(r);
        self.bytes.push(match f.direction {
            Direction::In => DIRECTION_INGRESS,
            Direction::Out => DIRECTION_EGRESS,
        });
        self.bytes.push(match f.action {
            Action::Accept => FORWARDED_UNKNOWN,
            Action::Reject => DROPPED_ACL_DENY,
        });
        template
    }

    /// flowStartMilliseconds and flowEndMilliseconds: the window's bounds.
    fn push_window(&mut self, r: &RecordView<'_>) {
        for secs in [r.start(), r.end()] {
            // dateTimeMilliseconds is unsigned: a time before 1970 (never
            // produced by the daemon) is sent as 0.
            let ms = u64::try_from(secs).unwrap_or(0).saturating_mul(1000);
            self.bytes.extend_from_slice(&ms.to_be_bytes());
        }
    }

    fn push_ids(&mut self, r: &RecordView<'_>) {
        for s in [
            r.eni_id(),
            r.vpc_id(),
            r.vswitch_id(),
            r.vm_id(),
            r.account_id(),
            r.rule().unwrap_or(""),
            r.log_status().as_str(),
        ] {
            self.put_string(s);
        }
    }

    /// A variable-length string with its 1-byte length (RFC 7011 §7),
    /// cut at a character boundary to [`MAX_STRING_BYTES`].
    fn put_string(&mut self, s: &str) {
        let mut end = s.len().min(MAX_STRING_BYTES);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        if end < s.len() {
            self.truncated += 1;
        }
        self.bytes.push(end as u8);
        self.bytes.extend_from_slice(&s.as_bytes()[..end]);
    }
}

fn put_v4(out: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        // Not reached: callers check the family.
        IpAddr::V6(_) => out.extend_from_slice(&[0; 4]),
    }
}

/// An IPv4 address in an IPv6 record (a flow of mixed families, which the
/// daemon does not produce) goes as its IPv4-mapped form.
fn put_v6(out: &mut Vec<u8>, a: IpAddr) {
    let v6 = match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    out.extend_from_slice(&v6.octets());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_records::{flow_record, status_record, with_views};

    #[test]
    fn an_ipv4_accept_record_is_encoded_field_by_field() {
        let r = flow_record("10.0.0.1", 40000, "10.0.0.2", 443, Action::Accept, None);
        let batch = with_views(&[r], |v| {
            let mut b = EncodedBatch::default();
            b.push(&v[0]);
            b
        });
        assert_eq!(batch.records, vec![(TEMPLATE_FLOW_V4, batch.bytes.len())]);
        let mut e = vec![10, 0, 0, 1, 10, 0, 0, 2];
        e.extend_from_slice(&40000u16.to_be_bytes());
        e.extend_from_slice(&443u16.to_be_bytes());
        e.push(6);
        e.extend_from_slice(&3u64.to_be_bytes());
        e.extend_from_slice(&180u64.to_be_bytes());
        e.extend_from_slice(&1_700_000_400_000u64.to_be_bytes());
        e.extend_from_slice(&1_700_001_000_000u64.to_be_bytes());
        e.push(1); // egress
        e.push(64); // forwarded
        for s in ["eni-1", "vpc-1", "vsw-1", "i-1", "123", "", "OK"] {
            e.push(s.len() as u8);
            e.extend_from_slice(s.as_bytes());
        }
        assert_eq!(batch.bytes, e);
    }

    #[test]
    fn reject_ipv6_nat_and_status_records_pick_their_templates() {
        let reject = flow_record(
            "2001:db8::7",
            1,
            "2001:db8::1",
            22,
            Action::Reject,
            Some("sg:deny"),
        );
        let mut nat = flow_record("10.0.0.1", 1, "10.0.0.2", 2, Action::Accept, None);
        let f = nat.flow.as_mut().unwrap();
        f.extras.pkt_srcaddr = Some("192.0.2.1".parse().unwrap());
        f.extras.pkt_dstaddr = Some("192.0.2.2".parse().unwrap());
        let mut half_nat = nat.clone();
        half_nat.flow.as_mut().unwrap().extras.pkt_dstaddr = None;
        // What the daemon fills for a flow without NAT: its own addresses.
        let mut untranslated = nat.clone();
        let f = untranslated.flow.as_mut().unwrap();
        f.extras.pkt_srcaddr = Some(f.srcaddr);
        f.extras.pkt_dstaddr = Some(f.dstaddr);
        let records = [
            reject,
            nat,
            half_nat,
            untranslated,
            status_record(LogStatus::NoData),
            status_record(LogStatus::SkipData),
        ];
        let batch = with_views(&records, |v| {
            let mut b = EncodedBatch::default();
            v.iter().for_each(|r| b.push(r));
            b
        });
        let templates: Vec<u16> = batch.records.iter().map(|r| r.0).collect();
        assert_eq!(
            templates,
            [
                TEMPLATE_FLOW_V6,
                TEMPLATE_FLOW_V4_NAT,
                TEMPLATE_FLOW_V4,
                TEMPLATE_FLOW_V4,
                TEMPLATE_STATUS,
                TEMPLATE_STATUS
            ]
        );
        // The reject: forwardingStatus "dropped, ACL deny", then the rule.
        let r = batch.record(0);
        // After addresses, ports and protocol, counters and window bounds.
        let after_times = 32 + 5 + 16 + 16;
        assert_eq!(r[after_times], DIRECTION_INGRESS);
        assert_eq!(r[after_times + 1], DROPPED_ACL_DENY);
        assert!(r.ends_with(b"\x07sg:deny\x02OK"), "{r:?}");
        assert_eq!(&batch.record(1)[8..16], &[192, 0, 2, 1, 192, 0, 2, 2]);
        // Untranslated: no postNAT elements, the same bytes as without extras.
        assert_eq!(batch.record(3), batch.record(2));
        assert!(batch.record(4).ends_with(b"\x00\x06NODATA"));
        assert!(batch.record(5).ends_with(b"\x00\x08SKIPDATA"));
        // Window bounds, then the seven strings with their length bytes.
        assert_eq!(batch.record(4).len(), 16 + 6 + 6 + 6 + 4 + 4 + 1 + 7);
    }

    #[test]
    fn long_strings_are_cut_at_a_character_boundary() {
        let mut r = flow_record("10.0.0.1", 1, "10.0.0.2", 2, Action::Reject, None);
        r.rule = Some(format!("{}é", "x".repeat(MAX_STRING_BYTES - 1)).into());
        let batch = with_views(&[r], |v| {
            let mut b = EncodedBatch::default();
            b.push(&v[0]);
            b
        });
        assert_eq!(batch.truncated, 1);
        let tail = format!("\x7f{}\x02OK", "x".repeat(MAX_STRING_BYTES - 1));
        assert!(batch.bytes.ends_with(tail.as_bytes()));
        assert!(batch.bytes.len() <= MAX_RECORD_BYTES);
    }
}
