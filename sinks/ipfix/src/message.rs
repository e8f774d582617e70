//! Framing into IPFIX messages (RFC 7011 §3.1): the 16-byte header, then
//! sets; consecutive records of one template share a data set. Messages
//! are cut so that none exceeds the limit (the UDP path MTU's share, or
//! 65535 over TCP), and never inside a record.

use crate::encode::EncodedBatch;
use crate::template::{write_template_record, ALL, TEMPLATE_SET_ID};

pub const HEADER_BYTES: usize = 16;
pub const SET_HEADER_BYTES: usize = 4;
const VERSION: u16 = 10;

/// What every message header of one transport session carries.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub observation_domain_id: u32,
    /// Export time, Unix seconds.
    pub export_time: u32,
}

/// Framed messages, back to back.
#[derive(Default)]
pub struct Messages {
    pub bytes: Vec<u8>,
    /// Per message: its end in `bytes`, and how many data records the
    /// messages up to and including it hold.
    pub ends: Vec<(usize, usize)>,
}

impl Messages {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|e| e.0));
        starts
            .zip(self.ends.iter().map(|e| e.0))
            .map(|(start, end)| &self.bytes[start..end])
    }

    /// How many data records the whole messages among the first `bytes`
    /// bytes hold.
    pub fn records_within(&self, bytes: usize) -> usize {
        let whole = self.ends.partition_point(|e| e.0 <= bytes);
        if whole == 0 {
            0
        } else {
            self.ends[whole - 1].1
        }
    }

    fn begin(&mut self, h: Header, sequence: u32) -> usize {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&VERSION.to_be_bytes());
        self.bytes.extend_from_slice(&[0, 0]); // length, set in `end`
        self.bytes.extend_from_slice(&h.export_time.to_be_bytes());
        self.bytes.extend_from_slice(&sequence.to_be_bytes());
        self.bytes
            .extend_from_slice(&h.observation_domain_id.to_be_bytes());
        start
    }

    fn end(&mut self, start: usize, records_so_far: usize) {
        let len = (self.bytes.len() - start) as u16;
        self.bytes[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        self.ends.push((self.bytes.len(), records_so_far));
    }

    /// Appends one message with every template (RFC 7011 §3.4.1). They
    /// take about 550 bytes, within the smallest allowed limit.
    /// Templates do not count in the sequence number (§3.1).
    pub fn push_templates(&mut self, h: Header, sequence: u32, pen: u32, records_so_far: usize) {
        let start = self.begin(h, sequence);
        let set = self.bytes.len();
        self.bytes.extend_from_slice(&TEMPLATE_SET_ID.to_be_bytes());
        self.bytes.extend_from_slice(&[0, 0]);
        for t in ALL {
            write_template_record(&mut self.bytes, t, pen);
        }
        let set_len = (self.bytes.len() - set) as u16;
        self.bytes[set + 2..set + 4].copy_from_slice(&set_len.to_be_bytes());
        self.end(start, records_so_far);
    }

    /// Appends the messages holding `batch`'s records from `from` on. The
    /// header of each message carries `sequence` plus the data records of
    /// the messages before it: RFC 7011 §3.1 counts data records sent in
    /// the session before this message, modulo 2^32.
    pub fn push_records(
        &mut self,
        h: Header,
        sequence: u32,
        batch: &EncodedBatch,
        from: usize,
        max_message_bytes: usize,
    ) {
        let mut i = from;
        while i < batch.records.len() {
            let seq = sequence.wrapping_add((i - from) as u32);
            let start = self.begin(h, seq);
            let mut set: Option<(u16, usize)> = None;
            while i < batch.records.len() {
                let template = batch.records[i].0;
                let record = batch.record(i);
                let used = self.bytes.len() - start;
                let needs_set = set.is_none_or(|(t, _)| t != template);
                let extra = record.len() + if needs_set { SET_HEADER_BYTES } else { 0 };
                // The first record always goes in (options guarantee it
                // fits); later ones only within the limit.
                if used + extra > max_message_bytes && used > HEADER_BYTES {
                    break;
                }
                if needs_set {
                    close_set(&mut self.bytes, set);
                    set = Some((template, self.bytes.len()));
                    self.bytes.extend_from_slice(&template.to_be_bytes());
                    self.bytes.extend_from_slice(&[0, 0]);
                }
                self.bytes.extend_from_slice(record);
                i += 1;
            }
            close_set(&mut self.bytes, set);
            self.end(start, i - from);
        }
    }
}

fn close_set(bytes: &mut [u8], set: Option<(u16, usize)>) {
    if let Some((_, at)) = set {
        let len = (bytes.len() - at) as u16;
        bytes[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_records::{decode, flow_record, status_record, with_views};
    use flowlogd_plugin_api::{Action, LogStatus};

    const H: Header = Header {
        observation_domain_id: 7,
        export_time: 1_700_001_001,
    };

    fn batch(n: usize) -> EncodedBatch {
        let mut records: Vec<_> = (0..n)
            .map(|i| {
                if i % 10 == 9 {
                    status_record(LogStatus::NoData)
                } else {
                    flow_record("10.0.0.1", i as u16, "10.0.0.2", 53, Action::Accept, None)
                }
            })
            .collect();
        if n > 5 {
            records[5] = flow_record("2001:db8::1", 5, "2001:db8::2", 53, Action::Reject, None);
        }
        with_views(&records, |v| {
            let mut b = EncodedBatch::default();
            v.iter().for_each(|r| b.push(r));
            b
        })
    }

    #[test]
    fn messages_stay_within_the_limit_and_count_records_in_sequence_numbers() {
        let b = batch(100);
        let mut m = Messages::default();
        m.push_templates(H, 1000, 32473, 0);
        m.push_records(H, 1000, &b, 0, 1400);
        let decoded: Vec<_> = m.iter().map(decode).collect();
        assert!(decoded.len() > 3, "{}", decoded.len());
        let mut seq = 1000u32;
        let mut records = 0;
        for (i, (msg, d)) in m.iter().zip(&decoded).enumerate() {
            assert!(msg.len() <= 1400, "message {i}: {} bytes", msg.len());
            assert_eq!(d.version, 10);
            assert_eq!(d.length as usize, msg.len());
            assert_eq!(d.domain, 7);
            assert_eq!(d.export_time, 1_700_001_001);
            assert_eq!(d.sequence, seq, "message {i}");
            if i == 0 {
                assert_eq!(d.sets, vec![(2, 5)], "one template set of 5 templates");
            }
            let n: usize = d.sets.iter().filter(|s| s.0 >= 256).map(|s| s.1).sum();
            seq += n as u32;
            records += n;
            // Filled: the next record would not have fitted.
            if i + 1 < decoded.len() && i > 0 {
                assert!(msg.len() + 1 + 4 + 62 > 1400, "message {i} not full");
            }
        }
        assert_eq!(records, 100);
        assert_eq!(m.records_within(m.bytes.len()), 100);
        assert_eq!(m.records_within(m.ends[1].0 - 1), 0);
        assert_eq!(m.records_within(m.ends[1].0), m.ends[1].1);
    }

    #[test]
    fn consecutive_records_of_one_template_share_a_set() {
        let b = batch(12);
        let mut m = Messages::default();
        m.push_records(H, u32::MAX, &b, 2, 65535);
        let d = decode(m.iter().next().unwrap());
        assert_eq!(d.sequence, u32::MAX);
        // 2..=4 v4, 5 v6, 6..=8 v4, 9 status, 10..=11 v4.
        assert_eq!(
            d.sets,
            vec![(256, 3), (257, 1), (256, 3), (260, 1), (256, 2)]
        );
        let mut m2 = Messages::default();
        m2.push_records(H, 0, &b, 12, 65535);
        assert!(m2.ends.is_empty());
    }
}
