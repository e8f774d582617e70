//! The ctnetlink attributes that netlink-packet-netfilter 0.4 leaves raw.
//!
//! The crate's `ConntrackAttribute` parses tuples, status, timeout,
//! protoinfo and mark, and returns everything else as `Other(DefaultNla)`
//! (counters, id, zone, timestamps), and its `ProtoTuple` does the same for
//! the ICMP/ICMPv6 id, type and code. This file decodes exactly those, with
//! the kernel's names (include/uapi/linux/netfilter/nfnetlink_conntrack.h),
//! straight from the attribute buffers, so that nothing is copied first.
//! (`ct_parse` walks the tuples itself, also without the crate's types, and
//! hands the ICMP attributes to `IcmpKey`.)

use netlink_packet_core::{DecodeError, NlaBuffer, NlasIterator};

use crate::model::Counters;

// enum ctattr_type
const CTA_MARK: u16 = 8;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TIMESTAMP: u16 = 20;

// enum ctattr_counters
const CTA_COUNTERS_PACKETS: u16 = 1; // be64
const CTA_COUNTERS_BYTES: u16 = 2; // be64
const CTA_COUNTERS32_PACKETS: u16 = 3; // be32, old kernels
const CTA_COUNTERS32_BYTES: u16 = 4; // be32, old kernels

// enum ctattr_tstamp
const CTA_TIMESTAMP_START: u16 = 1; // be64, ns since the epoch
const CTA_TIMESTAMP_STOP: u16 = 2; // be64, ns since the epoch

// enum ctattr_l4proto
const CTA_PROTO_ICMP_ID: u16 = 4; // be16
const CTA_PROTO_ICMP_TYPE: u16 = 5; // u8
const CTA_PROTO_ICMP_CODE: u16 = 6; // u8
const CTA_PROTO_ICMPV6_ID: u16 = 7; // be16
const CTA_PROTO_ICMPV6_TYPE: u16 = 8; // u8
const CTA_PROTO_ICMPV6_CODE: u16 = 9; // u8

/// A top-level ctnetlink attribute this file knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtAttr {
    CountersOrig(Counters),
    CountersReply(Counters),
    Id(u32),
    Zone(u16),
    Mark(u32),
    Timestamp {
        start: Option<u64>,
        stop: Option<u64>,
    },
}

/// Decode one top-level attribute of a conntrack message; `Ok(None)` for
/// attributes that are not among those above.
///
/// # Errors
///
/// A known attribute whose value has the wrong size or whose nested
/// attributes do not fit.
pub fn decode(nla: &NlaBuffer<&[u8]>) -> Result<Option<CtAttr>, DecodeError> {
    let value = nla.value();
    let attr = match nla.kind() {
        CTA_COUNTERS_ORIG => CtAttr::CountersOrig(counters(value)?),
        CTA_COUNTERS_REPLY => CtAttr::CountersReply(counters(value)?),
        CTA_ID => CtAttr::Id(be32(value, "CTA_ID")?),
        CTA_ZONE => CtAttr::Zone(be16(value, "CTA_ZONE")?),
        CTA_MARK => CtAttr::Mark(be32(value, "CTA_MARK")?),
        CTA_TIMESTAMP => {
            let (start, stop) = timestamp(value)?;
            CtAttr::Timestamp { start, stop }
        }
        _ => return Ok(None),
    };
    Ok(Some(attr))
}

/// The ICMP or ICMPv6 part of a CTA_TUPLE_PROTO (the attributes the
/// crate's `ProtoTuple` would return as `Other`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpKey {
    pub id: Option<u16>,
    pub icmp_type: Option<u8>,
    pub code: Option<u8>,
}

impl IcmpKey {
    /// Fold in one attribute of a CTA_TUPLE_PROTO; kinds other than the
    /// ICMP/ICMPv6 ones are ignored.
    ///
    /// # Errors
    ///
    /// A known attribute of the wrong size.
    pub fn add(&mut self, nla: &NlaBuffer<&[u8]>) -> Result<(), DecodeError> {
        let kind = nla.kind();
        let value = nla.value();
        // This used to copy the value into 4 bytes first; longer values
        // keep their own message.
        if value.len() > 4 {
            return match kind {
                CTA_PROTO_ICMP_ID..=CTA_PROTO_ICMPV6_CODE => Err(DecodeError::from(format!(
                    "ICMP tuple attribute {kind} of {} bytes",
                    value.len()
                ))),
                _ => Ok(()),
            };
        }
        match kind {
            CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                self.id = Some(be16(value, "CTA_PROTO_ICMP_ID")?)
            }
            CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                self.icmp_type = Some(u8_of(value, "CTA_PROTO_ICMP_TYPE")?)
            }
            CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                self.code = Some(u8_of(value, "CTA_PROTO_ICMP_CODE")?)
            }
            _ => {}
        }
        Ok(())
    }
}

fn counters(nested: &[u8]) -> Result<Counters, DecodeError> {
    let mut packets = None;
    let mut bytes = None;
    for nla in NlasIterator::new(nested) {
        let nla = nla?;
        let value = nla.value();
        match nla.kind() {
            CTA_COUNTERS_PACKETS => packets = Some(be64(value, "CTA_COUNTERS_PACKETS")?),
            CTA_COUNTERS_BYTES => bytes = Some(be64(value, "CTA_COUNTERS_BYTES")?),
            CTA_COUNTERS32_PACKETS => {
                packets = Some(u64::from(be32(value, "CTA_COUNTERS32_PACKETS")?))
            }
            CTA_COUNTERS32_BYTES => bytes = Some(u64::from(be32(value, "CTA_COUNTERS32_BYTES")?)),
            // CTA_COUNTERS_PAD and anything newer.
            _ => {}
        }
    }
    match (packets, bytes) {
        (Some(packets), Some(bytes)) => Ok(Counters { packets, bytes }),
        _ => Err(DecodeError::from(
            "CTA_COUNTERS_* without packets and bytes",
        )),
    }
}

fn timestamp(nested: &[u8]) -> Result<(Option<u64>, Option<u64>), DecodeError> {
    let mut start = None;
    let mut stop = None;
    for nla in NlasIterator::new(nested) {
        let nla = nla?;
        match nla.kind() {
            CTA_TIMESTAMP_START => start = Some(be64(nla.value(), "CTA_TIMESTAMP_START")?),
            // The kernel only sends STOP once the entry is dying (destroy
            // events, dumps of the dying list).
            CTA_TIMESTAMP_STOP => stop = Some(be64(nla.value(), "CTA_TIMESTAMP_STOP")?),
            // CTA_TIMESTAMP_PAD
            _ => {}
        }
    }
    Ok((start, stop))
}

fn be64(value: &[u8], name: &str) -> Result<u64, DecodeError> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| wrong_size(name, 8, value.len()))?;
    Ok(u64::from_be_bytes(bytes))
}

fn be32(value: &[u8], name: &str) -> Result<u32, DecodeError> {
    let bytes: [u8; 4] = value
        .try_into()
        .map_err(|_| wrong_size(name, 4, value.len()))?;
    Ok(u32::from_be_bytes(bytes))
}

fn be16(value: &[u8], name: &str) -> Result<u16, DecodeError> {
    let bytes: [u8; 2] = value
        .try_into()
        .map_err(|_| wrong_size(name, 2, value.len()))?;
    Ok(u16::from_be_bytes(bytes))
}

fn u8_of(value: &[u8], name: &str) -> Result<u8, DecodeError> {
    match value {
        [b] => Ok(*b),
        _ => Err(wrong_size(name, 1, value.len())),
    }
}

fn wrong_size(name: &str, expected: usize, got: usize) -> DecodeError {
    DecodeError::from(format!("{name}: expected {expected} bytes, got {got}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attribute bytes as the kernel lays them out (native-endian header,
    /// value, padding to 4).
    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out
    }

    fn decode_one(bytes: &[u8]) -> Result<Option<CtAttr>, DecodeError> {
        let buf = NlaBuffer::new_checked(bytes)?;
        decode(&buf)
    }

    #[test]
    fn counters_with_pad_and_32bit_variants() {
        // 64-bit counters with a CTA_COUNTERS_PAD (5) in front, as
        // nla_put_be64 emits on 32-bit-aligned skbs.
        let mut nested = nla(5, &[]);
        nested.extend(nla(CTA_COUNTERS_PACKETS, &7u64.to_be_bytes()));
        nested.extend(nla(CTA_COUNTERS_BYTES, &420u64.to_be_bytes()));
        let attr = nla(CTA_COUNTERS_ORIG | 0x8000, &nested);
        assert_eq!(
            decode_one(&attr).unwrap(),
            Some(CtAttr::CountersOrig(Counters {
                packets: 7,
                bytes: 420
            }))
        );

        let mut nested = nla(CTA_COUNTERS32_PACKETS, &3u32.to_be_bytes());
        nested.extend(nla(CTA_COUNTERS32_BYTES, &180u32.to_be_bytes()));
        let attr = nla(CTA_COUNTERS_REPLY, &nested);
        assert_eq!(
            decode_one(&attr).unwrap(),
            Some(CtAttr::CountersReply(Counters {
                packets: 3,
                bytes: 180
            }))
        );
    }

    #[test]
    fn counters_need_both_values_of_the_right_size() {
        let nested = nla(CTA_COUNTERS_PACKETS, &7u64.to_be_bytes());
        assert!(decode_one(&nla(CTA_COUNTERS_ORIG, &nested)).is_err());
        let mut nested = nla(CTA_COUNTERS_PACKETS, &7u32.to_be_bytes());
        nested.extend(nla(CTA_COUNTERS_BYTES, &420u64.to_be_bytes()));
        assert!(decode_one(&nla(CTA_COUNTERS_ORIG, &nested)).is_err());
    }

    #[test]
    fn scalars_and_unknown() {
        assert_eq!(
            decode_one(&nla(CTA_ID, &0xdead_beefu32.to_be_bytes())).unwrap(),
            Some(CtAttr::Id(0xdead_beef))
        );
        assert_eq!(
            decode_one(&nla(CTA_ZONE, &5u16.to_be_bytes())).unwrap(),
            Some(CtAttr::Zone(5))
        );
        assert_eq!(
            decode_one(&nla(CTA_MARK, &9u32.to_be_bytes())).unwrap(),
            Some(CtAttr::Mark(9))
        );
        assert!(decode_one(&nla(CTA_ID, &[1, 2])).is_err());
        // CTA_STATUS (3) is the crate's business.
        assert_eq!(decode_one(&nla(3, &[0, 0, 0, 8])).unwrap(), None);
    }

    #[test]
    fn timestamp_without_stop() {
        let nested = nla(
            CTA_TIMESTAMP_START,
            &1_700_000_000_000_000_000u64.to_be_bytes(),
        );
        assert_eq!(
            decode_one(&nla(CTA_TIMESTAMP, &nested)).unwrap(),
            Some(CtAttr::Timestamp {
                start: Some(1_700_000_000_000_000_000),
                stop: None
            })
        );
    }

    #[test]
    fn icmp_key() {
        let add = |key: &mut IcmpKey, kind: u16, value: &[u8]| {
            let bytes = nla(kind, value);
            key.add(&NlaBuffer::new_checked(&bytes[..]).unwrap())
        };
        let mut key = IcmpKey::default();
        add(&mut key, CTA_PROTO_ICMP_ID, &[0x12, 0x34]).unwrap();
        add(&mut key, CTA_PROTO_ICMP_TYPE, &[8]).unwrap();
        // The kind's flag bits are not part of it.
        add(&mut key, CTA_PROTO_ICMP_CODE | 0xc000, &[0]).unwrap();
        add(&mut key, 42, &[0; 40]).unwrap();
        assert_eq!(
            key,
            IcmpKey {
                id: Some(0x1234),
                icmp_type: Some(8),
                code: Some(0)
            }
        );
        assert!(add(&mut key, CTA_PROTO_ICMPV6_ID, &[1]).is_err());
        assert!(add(&mut key, CTA_PROTO_ICMPV6_TYPE, &[0; 8]).is_err());
    }
}
