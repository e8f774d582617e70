//! The keys of a window's sums: a record's ENI, direction, action and
//! 5-tuple, packed small (see each type), and for records of NATed
//! connections also the packet's addresses on the other side of NAT.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowlogd_plugin_api::{Action, Direction};

use super::{FlowTuple, RuleId};
use crate::eni::EniIndex;

pub(super) const FLAG_OUT: u8 = 1;
pub(super) const FLAG_REJECT: u8 = 2;
/// In a [`V6Key`]: the address is IPv4, stored IPv4-mapped. A flag, not
/// the mapped prefix itself, because `::ffff:a.b.c.d` is also a valid IPv6
/// address and must come back as one.
pub(super) const FLAG_SRC_V4: u8 = 4;
pub(super) const FLAG_DST_V4: u8 = 8;

/// What a record key holds besides the addresses: 8 bytes, hashed as one
/// word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct KeyRest {
    pub(super) src_port: u16,
    pub(super) dst_port: u16,
    pub(super) eni: EniIndex,
    pub(super) protocol: u8,
    /// `FLAG_*`.
    pub(super) flags: u8,
}

impl KeyRest {
    fn word(self) -> u64 {
        (u64::from(self.src_port) << 48)
            | (u64::from(self.dst_port) << 32)
            | ((self.eni.get() as u64) << 16)
            | (u64::from(self.protocol) << 8)
            | u64::from(self.flags)
    }

    pub(super) fn direction(self) -> Direction {
        if self.flags & FLAG_OUT != 0 {
            Direction::Out
        } else {
            Direction::In
        }
    }

    pub(super) fn action(self) -> Action {
        if self.flags & FLAG_REJECT != 0 {
            Action::Reject
        } else {
            Action::Accept
        }
    }
}

/// The key of an IPv4 record: 16 bytes. Most traffic is IPv4, and the
/// window's sums are most of the daemon's memory at a close, so IPv4 does
/// not pay for 16-byte addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct V4Key {
    pub(super) src: [u8; 4],
    pub(super) dst: [u8; 4],
    pub(super) rest: KeyRest,
}

impl Hash for V4Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(
            (u128::from(u32::from_ne_bytes(self.src)) << 96)
                | (u128::from(u32::from_ne_bytes(self.dst)) << 64)
                | u128::from(self.rest.word()),
        );
    }
}

/// The key of an IPv6 record (or of a tuple that mixes families, which
/// conntrack and NFLOG never report): 40 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct V6Key {
    pub(super) src: [u8; 16],
    pub(super) dst: [u8; 16],
    pub(super) rest: KeyRest,
}

impl Hash for V6Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.src));
        state.write_u128(u128::from_ne_bytes(self.dst));
        state.write_u64(self.rest.word());
    }
}

/// What the drain needs of either key.
pub(super) trait RecordKey: Copy + Eq + Hash {
    fn rest(&self) -> KeyRest;
    fn tuple(&self) -> FlowTuple;
    /// The key under another ENI.
    fn with_eni(self, eni: EniIndex) -> Self;
    /// The packet's addresses on the other side of NAT (pkt-srcaddr,
    /// pkt-dstaddr) where they differ from the tuple's; `None`: they are
    /// the tuple's.
    fn pkt(&self) -> Option<(IpAddr, IpAddr)> {
        None
    }
    /// The key of the same record without NAT: the one TCP flags wait under.
    fn plain(&self) -> AnyKey;
    /// The key of the record in the table it would go to by its tuple
    /// alone: a sum moved between windows or ENIs goes back there, and
    /// apart again only if its rule is taken.
    fn origin(&self) -> SumKey;
}

impl RecordKey for V4Key {
    fn origin(&self) -> SumKey {
        SumKey::Plain(AnyKey::V4(*self))
    }

    fn rest(&self) -> KeyRest {
        self.rest
    }

    fn with_eni(mut self, eni: EniIndex) -> Self {
        self.rest.eni = eni;
        self
    }

    fn plain(&self) -> AnyKey {
        AnyKey::V4(*self)
    }

    fn tuple(&self) -> FlowTuple {
        FlowTuple {
            src: IpAddr::V4(Ipv4Addr::from(self.src)),
            src_port: self.rest.src_port,
            dst: IpAddr::V4(Ipv4Addr::from(self.dst)),
            dst_port: self.rest.dst_port,
            protocol: self.rest.protocol,
        }
    }
}

impl RecordKey for V6Key {
    fn origin(&self) -> SumKey {
        SumKey::Plain(AnyKey::V6(*self))
    }

    fn rest(&self) -> KeyRest {
        self.rest
    }

    fn with_eni(mut self, eni: EniIndex) -> Self {
        self.rest.eni = eni;
        self
    }

    fn plain(&self) -> AnyKey {
        AnyKey::V6(*self)
    }

    fn tuple(&self) -> FlowTuple {
        let flags = self.rest.flags;
        FlowTuple {
            src: from_v6_octets(self.src, flags & FLAG_SRC_V4 != 0),
            src_port: self.rest.src_port,
            dst: from_v6_octets(self.dst, flags & FLAG_DST_V4 != 0),
            dst_port: self.rest.dst_port,
            protocol: self.rest.protocol,
        }
    }
}

/// `a` as 16 bytes (IPv4 mapped), and whether it is IPv4.
fn v6_octets(a: IpAddr) -> ([u8; 16], bool) {
    match a {
        IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), true),
        IpAddr::V6(a) => (a.octets(), false),
    }
}

/// A record's key in the table its addresses go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AnyKey {
    V4(V4Key),
    V6(V6Key),
}

/// The key of the record of `t` (ports already zeroed where the protocol
/// has none) seen on `eni`.
pub(super) fn record_key(
    eni: EniIndex,
    direction: Direction,
    action: Action,
    t: FlowTuple,
) -> AnyKey {
    let mut rest = KeyRest {
        src_port: t.src_port,
        dst_port: t.dst_port,
        eni,
        protocol: t.protocol,
        flags: 0,
    };
    if direction == Direction::Out {
        rest.flags |= FLAG_OUT;
    }
    if action == Action::Reject {
        rest.flags |= FLAG_REJECT;
    }
    match (t.src, t.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => AnyKey::V4(V4Key {
            src: src.octets(),
            dst: dst.octets(),
            rest,
        }),
        (src, dst) => {
            let (src, src_v4) = v6_octets(src);
            let (dst, dst_v4) = v6_octets(dst);
            if src_v4 {
                rest.flags |= FLAG_SRC_V4;
            }
            if dst_v4 {
                rest.flags |= FLAG_DST_V4;
            }
            AnyKey::V6(V6Key { src, dst, rest })
        }
    }
}

/// The inverse of [`v6_octets`].
fn from_v6_octets(bytes: [u8; 16], v4: bool) -> IpAddr {
    let a = Ipv6Addr::from(bytes);
    match a.to_ipv4_mapped() {
        Some(v4addr) if v4 => IpAddr::V4(v4addr),
        _ => IpAddr::V6(a),
    }
}

/// The key of an IPv4 record of a NATed connection: the record's key and
/// the packet's IPv4 addresses on the other side of NAT. 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Nat4Key {
    pub(super) key: V4Key,
    pub(super) pkt_src: [u8; 4],
    pub(super) pkt_dst: [u8; 4],
}

impl Hash for Nat4Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
        state.write_u64(
            (u64::from(u32::from_ne_bytes(self.pkt_src)) << 32)
                | u64::from(u32::from_ne_bytes(self.pkt_dst)),
        );
    }
}

impl RecordKey for Nat4Key {
    fn origin(&self) -> SumKey {
        SumKey::Nat4(*self)
    }

    fn rest(&self) -> KeyRest {
        self.key.rest
    }

    fn tuple(&self) -> FlowTuple {
        self.key.tuple()
    }

    fn with_eni(mut self, eni: EniIndex) -> Self {
        self.key.rest.eni = eni;
        self
    }

    fn pkt(&self) -> Option<(IpAddr, IpAddr)> {
        let (src, dst) = (Ipv4Addr::from(self.pkt_src), Ipv4Addr::from(self.pkt_dst));
        Some((IpAddr::V4(src), IpAddr::V4(dst)))
    }

    fn plain(&self) -> AnyKey {
        AnyKey::V4(self.key)
    }
}

const PKT_SRC_V4: u8 = 1;
const PKT_DST_V4: u8 = 2;

/// The key of any other record of a NATed connection (IPv6, or families
/// mixed, which netfilter's NAT never does): 74 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Nat6Key {
    pub(super) key: V6Key,
    pub(super) pkt_src: [u8; 16],
    pub(super) pkt_dst: [u8; 16],
    /// `PKT_*_V4`: which packet address is IPv4 (stored mapped).
    pkt_v4: u8,
}

impl RecordKey for Nat6Key {
    fn origin(&self) -> SumKey {
        SumKey::Nat6(*self)
    }

    fn rest(&self) -> KeyRest {
        self.key.rest
    }

    fn tuple(&self) -> FlowTuple {
        self.key.tuple()
    }

    fn with_eni(mut self, eni: EniIndex) -> Self {
        self.key.rest.eni = eni;
        self
    }

    fn pkt(&self) -> Option<(IpAddr, IpAddr)> {
        Some((
            from_v6_octets(self.pkt_src, self.pkt_v4 & PKT_SRC_V4 != 0),
            from_v6_octets(self.pkt_dst, self.pkt_v4 & PKT_DST_V4 != 0),
        ))
    }

    fn plain(&self) -> AnyKey {
        AnyKey::V6(self.key)
    }
}

/// A record's key of any kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SumKey {
    Plain(AnyKey),
    Nat4(Nat4Key),
    Nat6(Nat6Key),
}

/// The key of the record of `t` (ports already zeroed where the protocol
/// has none) seen on `eni`, whose packets had the addresses `pkt` on the
/// other side of NAT: a plain key when they are the tuple's.
pub(super) fn sum_key(
    eni: EniIndex,
    direction: Direction,
    action: Action,
    t: FlowTuple,
    pkt: Option<(IpAddr, IpAddr)>,
) -> SumKey {
    let plain = record_key(eni, direction, action, t);
    let Some((pkt_src, pkt_dst)) = pkt.filter(|&p| p != (t.src, t.dst)) else {
        return SumKey::Plain(plain);
    };
    match (plain, pkt_src, pkt_dst) {
        (AnyKey::V4(key), IpAddr::V4(s), IpAddr::V4(d)) => SumKey::Nat4(Nat4Key {
            key,
            pkt_src: s.octets(),
            pkt_dst: d.octets(),
        }),
        _ => {
            // The tuple in the IPv6 key's form whatever its family.
            let key = match plain {
                AnyKey::V6(k) => k,
                AnyKey::V4(k) => V6Key {
                    src: Ipv4Addr::from(k.src).to_ipv6_mapped().octets(),
                    dst: Ipv4Addr::from(k.dst).to_ipv6_mapped().octets(),
                    rest: KeyRest {
                        flags: k.rest.flags | FLAG_SRC_V4 | FLAG_DST_V4,
                        ..k.rest
                    },
                },
            };
            let (src, src_v4) = v6_octets(pkt_src);
            let (dst, dst_v4) = v6_octets(pkt_dst);
            let mut pkt_v4 = 0;
            if src_v4 {
                pkt_v4 |= PKT_SRC_V4;
            }
            if dst_v4 {
                pkt_v4 |= PKT_DST_V4;
            }
            SumKey::Nat6(Nat6Key {
                key,
                pkt_src: src,
                pkt_dst: dst,
                pkt_v4,
            })
        }
    }
}

/// The key of a record whose ENI-side tuple (and addresses behind NAT)
/// another record of the window already holds under another rule: two
/// connections, one after the other on the same ports, let through by
/// different security-group rules (a reload in between). Kept apart, so
/// each record's counts are its rule's, as NATed records are kept apart
/// by their addresses. Rare, so the key is wide rather than packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RuledKey {
    /// Direction and action only: the tuple holds the rest.
    rest: KeyRest,
    tuple: FlowTuple,
    pkt: Option<(IpAddr, IpAddr)>,
    pub(super) rule: RuleId,
}

impl RuledKey {
    /// The record of `key` under `rule`.
    pub(super) fn of<K: RecordKey>(key: &K, rule: RuleId) -> RuledKey {
        let rest = key.rest();
        RuledKey {
            rest: KeyRest {
                flags: rest.flags & (FLAG_OUT | FLAG_REJECT),
                ..rest
            },
            tuple: key.tuple(),
            pkt: key.pkt(),
            rule,
        }
    }
}

impl Hash for RuledKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.rest.word());
        self.tuple.hash(state);
        self.pkt.hash(state);
        state.write_u32(self.rule.0);
    }
}

impl RecordKey for RuledKey {
    fn rest(&self) -> KeyRest {
        self.rest
    }

    fn tuple(&self) -> FlowTuple {
        self.tuple
    }

    fn with_eni(mut self, eni: EniIndex) -> Self {
        self.rest.eni = eni;
        self
    }

    fn pkt(&self) -> Option<(IpAddr, IpAddr)> {
        self.pkt
    }

    fn plain(&self) -> AnyKey {
        record_key(
            self.rest.eni,
            self.rest.direction(),
            self.rest.action(),
            self.tuple,
        )
    }

    fn origin(&self) -> SumKey {
        let r = self.rest;
        sum_key(r.eni, r.direction(), r.action(), self.tuple, self.pkt)
    }
}
