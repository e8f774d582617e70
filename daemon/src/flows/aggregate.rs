//! One capture window's records: sums per (ENI, direction, action, 5-tuple),
//! the ENIs that lost data, and, when the window closes, a drain that turns
//! them into records of their ENIs chunk by chunk (the flow log instances
//! they go to are `crate::instances`' to decide).

use std::collections::{hash_map, HashMap};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use flowlogd_plugin_api::{
    Action, Direction, EniIds, FlowExtras, FlowFields, FlowRecord, LogStatus,
};

use super::leaders::{Added, Leaders, LeadersView};
use super::window::CaptureWindow;
use crate::eni::{EniIndex, EniRegistry};
use crate::model::{has_ports, ipproto};
use tcp_flags::PendingTcpFlags;

mod tcp_flags;

/// Most records held back for ENIs waiting for their metadata (a service
/// that stays down must not grow the daemon without bound): a window's
/// worth of a busy VM.
const MAX_HELD_RECORDS: usize = 1 << 18;

/// The hasher of the window's sums. REJECT tuples come from NFLOG, so
/// remote peers choose them: the hash must be keyed with a secret, or a
/// peer could send tuples that all collide. aHash is keyed per map from OS
/// randomness (its default `runtime-rng` feature, i.e. getrandom) and its
/// stated goal is resisting exactly that; foldhash, as fast, seeds from
/// ASLR and stack addresses only and says it is not meant for programs
/// whose inputs an attacker may study. Either is several times cheaper than
/// SipHash on a key of two or three machine words.
type SumHasher = ahash::RandomState;

/// A directional 5-tuple as a record shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowTuple {
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub protocol: u8,
}

impl FlowTuple {
    /// The tuple with ports zeroed for protocols that have none.
    fn for_record(self) -> FlowTuple {
        if has_ports(self.protocol) {
            self
        } else {
            FlowTuple {
                src_port: 0,
                dst_port: 0,
                ..self
            }
        }
    }
}

const FLAG_OUT: u8 = 1;
const FLAG_REJECT: u8 = 2;
/// In a [`V6Key`]: the address is IPv4, stored IPv4-mapped. A flag, not
/// the mapped prefix itself, because `::ffff:a.b.c.d` is also a valid IPv6
/// address and must come back as one.
const FLAG_SRC_V4: u8 = 4;
const FLAG_DST_V4: u8 = 8;

/// What a record key holds besides the addresses: 8 bytes, hashed as one
/// word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeyRest {
    src_port: u16,
    dst_port: u16,
    eni: EniIndex,
    protocol: u8,
    /// `FLAG_*`.
    flags: u8,
}

impl KeyRest {
    fn word(self) -> u64 {
        (u64::from(self.src_port) << 48)
            | (u64::from(self.dst_port) << 32)
            | ((self.eni.get() as u64) << 16)
            | (u64::from(self.protocol) << 8)
            | u64::from(self.flags)
    }

    fn direction(self) -> Direction {
        if self.flags & FLAG_OUT != 0 {
            Direction::Out
        } else {
            Direction::In
        }
    }

    fn action(self) -> Action {
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
struct V4Key {
    src: [u8; 4],
    dst: [u8; 4],
    rest: KeyRest,
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
struct V6Key {
    src: [u8; 16],
    dst: [u8; 16],
    rest: KeyRest,
}

impl Hash for V6Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.src));
        state.write_u128(u128::from_ne_bytes(self.dst));
        state.write_u64(self.rest.word());
    }
}

/// What the drain needs of either key.
trait RecordKey: Copy + Eq + Hash {
    fn rest(&self) -> KeyRest;
    fn tuple(&self) -> FlowTuple;
}

impl RecordKey for V4Key {
    fn rest(&self) -> KeyRest {
        self.rest
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
    fn rest(&self) -> KeyRest {
        self.rest
    }

    fn tuple(&self) -> FlowTuple {
        let addr = |bytes: [u8; 16], v4: u8| {
            let a = Ipv6Addr::from(bytes);
            match a.to_ipv4_mapped() {
                Some(v4addr) if self.rest.flags & v4 != 0 => IpAddr::V4(v4addr),
                _ => IpAddr::V6(a),
            }
        };
        FlowTuple {
            src: addr(self.src, FLAG_SRC_V4),
            src_port: self.rest.src_port,
            dst: addr(self.dst, FLAG_DST_V4),
            dst_port: self.rest.dst_port,
            protocol: self.rest.protocol,
        }
    }
}

fn v6_octets(a: IpAddr) -> ([u8; 16], bool) {
    match a {
        IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), true),
        IpAddr::V6(a) => (a.octets(), false),
    }
}

/// A record's key in the table its addresses go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnyKey {
    V4(V4Key),
    V6(V6Key),
}

/// The key of the record of `t` (ports already zeroed where the protocol
/// has none) seen on `eni`.
fn record_key(eni: EniIndex, direction: Direction, action: Action, t: FlowTuple) -> AnyKey {
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

/// What one addition to a sum carries besides its counts.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SumExtras<'a> {
    /// The rule that dropped REJECT traffic.
    pub(crate) rule: Option<&'a Arc<str>>,
    /// `TCP_FLAG_*` bits of the packets added (REJECT: the dropped packet's).
    pub(crate) tcp_flags: u8,
}

/// A record's packets (40 bits) and bytes (56 bits) in 12 bytes of
/// 4-byte alignment: with a 16-byte IPv4 key and the rule's index the
/// map's slot is 32 bytes, not 48 with two `u64`s and an `Arc`. The
/// window's sums are the largest part of the daemon's memory at a close.
/// One window's traffic of one tuple and direction stays far below the
/// bounds (10^12 packets, 7 * 10^16 bytes: a 100 Gbit/s flow for 60
/// days); should it reach them, the sum stops there and the window is
/// marked SKIPDATA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct PackedCounts([u32; 3]);

const MAX_PACKETS: u64 = (1 << 40) - 1;
const MAX_BYTES: u64 = (1 << 56) - 1;

impl PackedCounts {
    /// (packets, bytes).
    fn get(self) -> (u64, u64) {
        let [a, b, c] = self.0.map(u128::from);
        let w = (a << 64) | (b << 32) | c;
        ((w >> 56) as u64, (w as u64) & MAX_BYTES)
    }

    /// Adds; `false` if a sum reached its bound and was cut there.
    fn add(&mut self, packets: u64, bytes: u64) -> bool {
        let (p, b) = self.get();
        let (p, b) = (p.saturating_add(packets), b.saturating_add(bytes));
        let whole = p <= MAX_PACKETS && b <= MAX_BYTES;
        let w = (u128::from(p.min(MAX_PACKETS)) << 56) | u128::from(b.min(MAX_BYTES));
        self.0 = [(w >> 64) as u32, (w >> 32) as u32, w as u32];
        whole
    }
}

/// The firewall rule of a REJECT record, as an index into the window's
/// [`Rules`]; 0 for none. At most [`MAX_RULE_ID`]: it shares a word with
/// the TCP flags in [`RecordSum`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RuleId(u32);

/// 24 bits: sixteen million distinct rules in one window. Rules past it
/// are not named (their records carry no rule) rather than named wrong.
const MAX_RULE_ID: u32 = (1 << 24) - 1;

/// The rules that a window's REJECT records name. A record holds a
/// 4-byte [`RuleId`] instead of an `Option<Arc<str>>` (16 bytes).
#[derive(Default)]
struct Rules {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, RuleId, SumHasher>,
    /// The last rule looked up, by address: drops mostly come in runs of
    /// one rule, and the reject path hands out one `Arc` per rule.
    last: Option<(usize, RuleId)>,
}

impl Rules {
    fn intern(&mut self, rule: Option<&Arc<str>>) -> RuleId {
        let Some(rule) = rule else {
            return RuleId(0);
        };
        let addr = Arc::as_ptr(rule).cast::<u8>() as usize;
        if let Some((last, id)) = self.last {
            if last == addr {
                return id;
            }
        }
        let id = match self.ids.get(rule) {
            Some(&id) => id,
            None if self.names.len() >= MAX_RULE_ID as usize => return RuleId(0),
            None => {
                self.names.push(Arc::clone(rule));
                let id = RuleId(self.names.len() as u32);
                self.ids.insert(Arc::clone(rule), id);
                id
            }
        };
        self.last = Some((addr, id));
        id
    }

    fn get(&self, id: RuleId) -> Option<Arc<str>> {
        let i = usize::try_from(id.0).ok()?.checked_sub(1)?;
        self.names.get(i).cloned()
    }
}

/// One record's sum. The rule's id and the TCP flags share a word
/// (`rule_id << 8 | flags`): REJECT records name a rule, TCP records carry
/// flags, and a separate byte would grow the slot by 4 bytes of padding.
#[derive(Clone, Copy, Debug, Default)]
struct RecordSum {
    counts: PackedCounts,
    rule_and_flags: u32,
}

impl RecordSum {
    fn packets(&self) -> u64 {
        self.counts.get().0
    }

    fn bytes(&self) -> u64 {
        self.counts.get().1
    }

    fn rule(&self) -> RuleId {
        RuleId(self.rule_and_flags >> 8)
    }

    /// `TCP_FLAG_*` bits OR-ed over what was added.
    fn tcp_flags(&self) -> u8 {
        self.rule_and_flags as u8
    }

    fn or_tcp_flags(&mut self, flags: u8) {
        self.rule_and_flags |= u32::from(flags);
    }

    /// `false` if a sum reached its bound (see [`PackedCounts`]).
    fn add(&mut self, packets: u64, bytes: u64, rule: RuleId, tcp_flags: u8) -> bool {
        if self.rule() == RuleId(0) {
            self.rule_and_flags |= rule.0 << 8;
        }
        self.or_tcp_flags(tcp_flags);
        self.counts.add(packets, bytes)
    }
}

type Sums<K> = HashMap<K, RecordSum, SumHasher>;

/// Adds (packets, bytes) and TCP flags to the sum of `key`; `false` if
/// it reached its bound. Also returns the key's (packets, bytes) now.
#[must_use]
fn add_to<K: RecordKey>(
    sums: &mut Sums<K>,
    key: K,
    (packets, bytes): (u64, u64),
    rule: RuleId,
    tcp_flags: u8,
) -> (bool, (u64, u64)) {
    let sum = sums.entry(key).or_default();
    let whole = sum.add(packets, bytes, rule, tcp_flags);
    (whole, sum.counts.get())
}

/// Marks ENI `eni` in a per-ENI loss list.
fn mark(skipped: &mut Vec<bool>, eni: EniIndex) {
    if skipped.len() <= eni.get() {
        skipped.resize(eni.get() + 1, false);
    }
    skipped[eni.get()] = true;
}

/// The open window's sums and loss marks.
pub(crate) struct WindowAggregate {
    sums4: Sums<V4Key>,
    sums6: Sums<V6Key>,
    rules: Rules,
    /// Per ENI: data was lost in this window.
    skipped: Vec<bool>,
    /// Data was lost for every ENI (an overrun whose ENIs are unknown).
    all_skipped: bool,
    /// Bytes the sums may take on the heap, counting a hash map's growth
    /// while it rehashes (old and new table both allocated). A sum that
    /// would need more moves what is summed into `spilled` first.
    limit: usize,
    /// Sums taken out at `limit`, waiting for [`WindowAggregate::take_spill`]:
    /// records of this window emitted before it closes.
    spilled: Vec<SpilledSums>,
    /// How many times this window's sums were taken out at `limit`.
    spills: u64,
    /// Per ENI, `TRAFFIC_*` bits: it had OK records of that action in this
    /// window, spilled ones included, so the close does not call an ENI
    /// whose records all went out early NODATA.
    traffic: Vec<u8>,
    /// For `flowlogd top`: the largest sums and per-ENI totals so far.
    leaders: Leaders,
    /// Records carry TCP flags (`tcpflags` capture is on).
    tcp_flags_on: bool,
    /// Flags of accepted packets waiting for their records' sums.
    pending_flags: PendingTcpFlags,
    /// Flags of accepted packets not kept: the window's memory bound.
    tcp_flags_dropped: u64,
}

const TRAFFIC_ACCEPT: u8 = 1;
const TRAFFIC_REJECT: u8 = 2;

impl Default for WindowAggregate {
    fn default() -> Self {
        WindowAggregate::with_limit(usize::MAX)
    }
}

/// Sums taken out of a window at its memory bound, with the rules they name.
struct SpilledSums {
    sums4: Sums<V4Key>,
    sums6: Sums<V6Key>,
    rules: Rules,
}

/// hashbrown's control bytes past the last bucket (its SIMD group width).
const MAP_TRAILING_CONTROL_BYTES: usize = 16;

/// Buckets of a hashbrown map that reports `capacity`: a power of two of
/// which at most 7/8 are used (all but one below 8 buckets).
fn buckets_of(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        (capacity * 8 / 7).next_power_of_two()
    }
}

/// Heap bytes of a hashbrown table of `buckets` slots of `slot` bytes:
/// the slots and one control byte each, plus the trailing group.
fn table_bytes(buckets: usize, slot: usize) -> usize {
    if buckets == 0 {
        0
    } else {
        buckets * (slot + 1) + MAP_TRAILING_CONTROL_BYTES
    }
}

/// Heap bytes of `map` now.
fn map_bytes<K, V, S>(map: &HashMap<K, V, S>) -> usize {
    table_bytes(buckets_of(map.capacity()), std::mem::size_of::<(K, V)>())
}

/// Heap bytes while `map` grows for one more key: the old table and the
/// new one of twice the buckets (at least 4), both allocated during the
/// rehash. `None` if one more key fits without growing.
fn map_bytes_growing<K, V, S>(map: &HashMap<K, V, S>) -> Option<usize> {
    if map.len() < map.capacity() {
        return None;
    }
    let slot = std::mem::size_of::<(K, V)>();
    let grown = (2 * buckets_of(map.capacity())).max(4);
    Some(map_bytes(map) + table_bytes(grown, slot))
}

impl WindowAggregate {
    /// Empty sums that spill at `limit` bytes (see [`WindowAggregate::limit`]).
    pub(crate) fn with_limit(limit: usize) -> WindowAggregate {
        WindowAggregate {
            sums4: Sums::default(),
            sums6: Sums::default(),
            rules: Rules::default(),
            skipped: Vec::new(),
            all_skipped: false,
            limit,
            spilled: Vec::new(),
            spills: 0,
            traffic: Vec::new(),
            leaders: Leaders::default(),
            tcp_flags_on: false,
            pending_flags: PendingTcpFlags::default(),
            tcp_flags_dropped: 0,
        }
    }

    /// Whether records carry TCP flags: with capture off their
    /// `tcp_flags` is `None` (unknown), with it on `Some` (0 for records
    /// that saw none, and for protocols other than TCP).
    pub(crate) fn set_tcp_flags_capture(&mut self, on: bool) {
        self.tcp_flags_on = on;
    }

    /// TCP flags (`TCP_FLAG_*`) of an accepted packet seen on `eni` in
    /// `direction` as `tuple`: they go to the ACCEPT record of that key
    /// when it is emitted. Ignored while capture is off and for other
    /// protocols than TCP. At the memory bound the sums are emitted early
    /// to make room; if that is not enough the flags are dropped and
    /// counted.
    pub(crate) fn add_tcp_flags(
        &mut self,
        eni: EniIndex,
        direction: Direction,
        tuple: FlowTuple,
        flags: u8,
    ) {
        if !self.tcp_flags_on || tuple.protocol != ipproto::TCP || flags == 0 {
            return;
        }
        let key = record_key(eni, direction, Action::Accept, tuple.for_record());
        if self.flags_would_outgrow(&key) {
            self.spill();
            if self.flags_would_outgrow(&key) {
                self.tcp_flags_dropped += 1;
                return;
            }
        }
        self.pending_flags.add(key, flags);
    }

    /// Whether a new key of pending flags would take the window past `limit`.
    fn flags_would_outgrow(&self, key: &AnyKey) -> bool {
        let Some(growing) = self.pending_flags.bytes_growing_for(key) else {
            return false;
        };
        let rest = self.footprint_bytes() - self.pending_flags.bytes();
        rest.saturating_add(growing) > self.limit
    }

    /// A copy of the largest sums so far and the per-ENI totals.
    pub(crate) fn leaders(&self) -> LeadersView {
        self.leaders.view()
    }

    /// Distinct records summed so far (not counting those emitted early).
    pub(crate) fn records_so_far(&self) -> usize {
        self.sums4.len() + self.sums6.len()
    }

    /// Heap bytes of the sums now: their tables by capacity (not by how
    /// many sums they hold), the rules, the pending TCP flags and the
    /// per-ENI marks.
    pub(crate) fn footprint_bytes(&self) -> usize {
        map_bytes(&self.sums4) + map_bytes(&self.sums6) + self.besides_sums_bytes()
    }

    /// Heap bytes of the rules, the pending TCP flags and the per-ENI marks.
    fn besides_sums_bytes(&self) -> usize {
        let r = &self.rules;
        // Each name is an `Arc<str>`: two counters and the text.
        let names: usize = r.names.iter().map(|n| 16 + n.len()).sum();
        r.names.capacity() * std::mem::size_of::<Arc<str>>()
            + map_bytes(&r.ids)
            + names
            + self.skipped.capacity()
            + self.traffic.capacity()
            + self.pending_flags.bytes()
    }

    /// Whether adding a new key to `map` would take the sums past
    /// `limit`: the map is full, so the key would make it grow, and the
    /// rest of the sums plus the map while it doubles exceed the bound.
    /// Checked before the insert, so the doubled table is never allocated.
    fn would_outgrow<K: RecordKey>(&self, map: &Sums<K>, key: &K) -> bool {
        let Some(growing) = map_bytes_growing(map) else {
            return false;
        };
        let rest = self.footprint_bytes() - map_bytes(map);
        rest.saturating_add(growing) > self.limit && !map.contains_key(key)
    }

    /// Moves the sums (and the rules they name) out, to be emitted early
    /// as records of this window; loss marks and traffic bits stay.
    fn spill(&mut self) {
        if self.sums4.is_empty() && self.sums6.is_empty() {
            // Nothing to give back: the bound is below one table's minimum.
            return;
        }
        self.pending_flags
            .apply_to(&mut self.sums4, &mut self.sums6);
        self.spilled.push(SpilledSums {
            sums4: std::mem::take(&mut self.sums4),
            sums6: std::mem::take(&mut self.sums6),
            rules: std::mem::take(&mut self.rules),
        });
        self.spills += 1;
    }

    /// Sums were taken out at the memory bound and wait for
    /// [`WindowAggregate::take_spill`].
    pub(crate) fn has_spill(&self) -> bool {
        !self.spilled.is_empty()
    }

    /// Adds traffic of one direction; no packets, no record.
    pub(crate) fn add(
        &mut self,
        eni: EniIndex,
        direction: Direction,
        action: Action,
        tuple: FlowTuple,
        counts: (u64, u64),
        rule: Option<&Arc<str>>,
    ) {
        let extras = SumExtras {
            rule,
            ..SumExtras::default()
        };
        self.add_with(eni, direction, action, tuple, counts, extras);
    }

    /// [`WindowAggregate::add`] with what the record carries besides its
    /// counts.
    pub(crate) fn add_with(
        &mut self,
        eni: EniIndex,
        direction: Direction,
        action: Action,
        tuple: FlowTuple,
        (packets, bytes): (u64, u64),
        extras: SumExtras<'_>,
    ) {
        if packets == 0 {
            return;
        }
        let t = tuple.for_record();
        note_traffic(&mut self.traffic, eni, action);
        let rule = extras.rule;
        let (whole, sum) = match record_key(eni, direction, action, t) {
            AnyKey::V4(key) => {
                if self.would_outgrow(&self.sums4, &key) {
                    self.spill();
                }
                // Interned after a spill: the spilled sums took the rules.
                let rule_id = self.rules.intern(rule);
                let flags = extras.tcp_flags;
                add_to(&mut self.sums4, key, (packets, bytes), rule_id, flags)
            }
            AnyKey::V6(key) => {
                if self.would_outgrow(&self.sums6, &key) {
                    self.spill();
                }
                let rule_id = self.rules.intern(rule);
                let flags = extras.tcp_flags;
                add_to(&mut self.sums6, key, (packets, bytes), rule_id, flags)
            }
        };
        if !whole {
            mark(&mut self.skipped, eni);
        }
        self.leaders.note(&Added {
            eni,
            direction,
            action,
            tuple: t,
            delta: (packets, bytes),
            sum,
            rule,
            sums_restarted: self.spills > 0,
        });
    }

    pub(crate) fn mark_skipped(&mut self, eni: EniIndex) {
        mark(&mut self.skipped, eni);
    }

    pub(crate) fn mark_all_skipped(&mut self) {
        self.all_skipped = true;
    }

    /// Takes `other`'s sums and loss marks into this aggregate.
    pub(crate) fn absorb(&mut self, other: WindowAggregate) {
        let from = &other.rules;
        let (rules, skipped) = (&mut self.rules, &mut self.skipped);
        merge_into(&mut self.sums4, rules, skipped, other.sums4, from);
        merge_into(&mut self.sums6, rules, skipped, other.sums6, from);
        for (i, &skipped) in other.skipped.iter().enumerate() {
            if let (true, Some(eni)) = (skipped, EniIndex::new(i)) {
                self.mark_skipped(eni);
            }
        }
        self.all_skipped |= other.all_skipped;
        for (i, &bits) in other.traffic.iter().enumerate() {
            if let Some(eni) = EniIndex::new(i) {
                for action in [Action::Accept, Action::Reject] {
                    if bits & traffic_bit(action) != 0 {
                        note_traffic(&mut self.traffic, eni, action);
                    }
                }
            }
        }
        self.spilled.extend(other.spilled);
        self.spills += other.spills;
        self.pending_flags.absorb(other.pending_flags);
        self.tcp_flags_dropped += other.tcp_flags_dropped;
    }

    /// A reload renumbered the ENIs: ENI `i` is now `to[i]`, or gone.
    /// Returns the sums dropped with ENIs that are gone.
    pub(crate) fn renumber_enis(&mut self, to: &[Option<EniIndex>]) -> usize {
        let map = |eni: EniIndex| to.get(eni.get()).copied().flatten();
        self.leaders.renumber(map);
        self.pending_flags.renumber(map);
        let mut dropped = 0;
        let skipped = std::mem::take(&mut self.skipped);
        for (i, &lost) in skipped.iter().enumerate() {
            if let Some(eni) = EniIndex::new(i).filter(|_| lost).and_then(map) {
                mark(&mut self.skipped, eni);
            }
        }
        let sums4 = std::mem::take(&mut self.sums4);
        dropped += renumber_into(&mut self.sums4, &mut self.skipped, sums4, map);
        let sums6 = std::mem::take(&mut self.sums6);
        dropped += renumber_into(&mut self.sums6, &mut self.skipped, sums6, map);
        dropped
    }

    /// Distinct records summed so far.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sums4.len() + self.sums6.len()
    }

    /// Ends the window and leaves this aggregate empty. The records of ENIs
    /// waiting for their metadata ([`EniRegistry::is_held`]), and those
    /// ENIs' loss marks, move into `next`, the aggregate of the window now
    /// open (added to what it has: it may have counted traffic already).
    /// Everything else comes out of the returned drain, chunk by chunk.
    ///
    /// The drain takes from `reg`, now, all it needs (each ENI's ids,
    /// whether it existed during `window`): the registry may change while
    /// the drain is in progress. (The instance stage reads the scopes off
    /// the registry at the same moment.)
    pub(crate) fn close(
        &mut self,
        reg: &EniRegistry,
        window: CaptureWindow,
        next: &mut WindowAggregate,
    ) -> WindowDrain {
        // Sums taken out at the bound that nobody took (a caller that does
        // not emit spills) go out with the close rather than be lost.
        for part in std::mem::take(&mut self.spilled) {
            self.merge_sums(part.sums4, part.sums6, &part.rules);
        }
        // Flags that find no ACCEPT record now never will: the packets'
        // connection was not attributed (or lost) in this window.
        self.pending_flags
            .apply_to(&mut self.sums4, &mut self.sums6);
        let tcp_flags_unmatched = self.pending_flags.take_count() as u64;
        let tcp_flags_dropped = std::mem::take(&mut self.tcp_flags_dropped);
        let mut sums4 = std::mem::take(&mut self.sums4);
        let mut sums6 = std::mem::take(&mut self.sums6);
        let rules = std::mem::take(&mut self.rules);
        let skipped = std::mem::take(&mut self.skipped);
        let all_skipped = std::mem::take(&mut self.all_skipped);
        let traffic = std::mem::take(&mut self.traffic);
        let early_spills = std::mem::take(&mut self.spills);
        self.leaders = Leaders::default();

        let held: Vec<bool> = reg.indices().map(|e| reg.is_held(e)).collect();
        let held_records = take_held_both(&held, &mut sums4, &mut sums6);
        let held_count = held_records.0.len() + held_records.1.len();
        let give_up = held_count > MAX_HELD_RECORDS;
        let held_dropped = next.keep_or_give_up_held(held_records, &rules, give_up);

        let enis = eni_views(reg, window, &skipped, all_skipped, &traffic);
        for (eni, view) in reg.indices().zip(&enis) {
            if view.lost && held[eni.get()] {
                // What a held ENI lost stays marked until its records go
                // out. (No instance captures a held ENI, so it gets no
                // SKIPDATA from this window.)
                next.mark_skipped(eni);
            }
        }
        let mut drain = WindowDrain::of_sums(window, (sums4, sums6), rules, enis);
        drain.held = held_count - held_dropped;
        drain.held_dropped = held_dropped;
        drain.early_spills = early_spills;
        drain.tcp_flags_on = self.tcp_flags_on;
        drain.tcp_flags_unmatched = tcp_flags_unmatched;
        drain.tcp_flags_dropped = tcp_flags_dropped;
        drain
    }

    /// The oldest sums taken out at the memory bound, as records of
    /// `window` (this aggregate's window, as planned: its end is the
    /// deadline) for the sinks now. The drain gives OK records only: no
    /// NODATA or SKIPDATA, and nothing is marked; the close of the window
    /// says those, counting what went out early as traffic. Records of
    /// ENIs waiting for their metadata stay in this aggregate, unless they
    /// are most of what was taken out (they would fill it again at once)
    /// or more than may be held: then they are given up and their ENIs
    /// marked SKIPDATA, as at a close.
    pub(crate) fn take_spill(
        &mut self,
        reg: &EniRegistry,
        window: CaptureWindow,
    ) -> Option<WindowDrain> {
        if self.spilled.is_empty() {
            return None;
        }
        let SpilledSums {
            mut sums4,
            mut sums6,
            rules,
        } = self.spilled.remove(0);
        let taken = sums4.len() + sums6.len();
        let held: Vec<bool> = reg.indices().map(|e| reg.is_held(e)).collect();
        let held_records = take_held_both(&held, &mut sums4, &mut sums6);
        let held_count = held_records.0.len() + held_records.1.len();
        let give_up = held_count > MAX_HELD_RECORDS || 2 * held_count > taken;
        let held_dropped = self.keep_or_give_up_held(held_records, &rules, give_up);
        let enis = eni_views(reg, window, &[], false, &[]);
        let mut drain = WindowDrain::of_sums(window, (sums4, sums6), rules, enis);
        drain.held = held_count - held_dropped;
        drain.held_dropped = held_dropped;
        drain.with_statuses = false;
        drain.early_spills = self.spills - self.spilled.len() as u64;
        drain.tcp_flags_on = self.tcp_flags_on;
        Some(drain)
    }

    /// Adds sums named against `from`'s rules to this aggregate's.
    fn merge_sums(
        &mut self,
        sums4: impl IntoIterator<Item = (V4Key, RecordSum)>,
        sums6: impl IntoIterator<Item = (V6Key, RecordSum)>,
        from: &Rules,
    ) {
        let (r, sk) = (&mut self.rules, &mut self.skipped);
        merge_into(&mut self.sums4, r, sk, sums4, from);
        merge_into(&mut self.sums6, r, sk, sums6, from);
    }

    /// The records of ENIs waiting for their metadata stay in this
    /// aggregate, or with `give_up` are given up and their ENIs marked
    /// SKIPDATA here. Returns how many were given up.
    fn keep_or_give_up_held(&mut self, held: HeldRecords, from: &Rules, give_up: bool) -> usize {
        let count = held.0.len() + held.1.len();
        if !give_up {
            self.merge_sums(held.0, held.1, from);
            return 0;
        }
        for eni in held
            .0
            .iter()
            .map(|(k, _)| k.rest.eni)
            .chain(held.1.iter().map(|(k, _)| k.rest.eni))
        {
            self.mark_skipped(eni);
        }
        count
    }
}

/// Marks ENI `eni` as having OK records of `action`.
fn note_traffic(traffic: &mut Vec<u8>, eni: EniIndex, action: Action) {
    if traffic.len() <= eni.get() {
        traffic.resize(eni.get() + 1, 0);
    }
    traffic[eni.get()] |= traffic_bit(action);
}

fn traffic_bit(action: Action) -> u8 {
    match action {
        Action::Accept => TRAFFIC_ACCEPT,
        Action::Reject => TRAFFIC_REJECT,
    }
}

/// Records of ENIs waiting for their metadata, out of both tables.
type HeldRecords = (Vec<(V4Key, RecordSum)>, Vec<(V6Key, RecordSum)>);

/// The records of ENIs waiting for their metadata, out of both tables.
fn take_held_both(held: &[bool], sums4: &mut Sums<V4Key>, sums6: &mut Sums<V6Key>) -> HeldRecords {
    if !held.contains(&true) {
        return (Vec::new(), Vec::new());
    }
    (take_held(sums4, held), take_held(sums6, held))
}

/// Each ENI of `reg` as a drain of `window` needs it: ids, whether it
/// existed, whether it lost data (`skipped`, or everything lost while it
/// existed), and what traffic it had (`traffic`, `TRAFFIC_*` bits) before
/// the drain counts its own records.
fn eni_views(
    reg: &EniRegistry,
    window: CaptureWindow,
    skipped: &[bool],
    all_skipped: bool,
    traffic: &[u8],
) -> Vec<EniWindow> {
    let mut views = Vec::with_capacity(reg.len());
    views.extend(reg.indices().map(|eni| {
        let existed = reg.existed_during(eni, window.start, window.end);
        let lost = skipped.get(eni.get()).copied().unwrap_or(false) || (all_skipped && existed);
        let bits = traffic.get(eni.get()).copied().unwrap_or(0);
        EniWindow {
            ids: Arc::clone(reg.ids(eni)),
            existed,
            lost,
            had_accept: bits & TRAFFIC_ACCEPT != 0,
            had_reject: bits & TRAFFIC_REJECT != 0,
        }
    }));
    views
}

/// Takes the records of held ENIs out of `sums`.
fn take_held<K: RecordKey>(sums: &mut Sums<K>, held: &[bool]) -> Vec<(K, RecordSum)> {
    let mut out = Vec::new();
    sums.retain(|k, s| {
        if !held.get(k.rest().eni.get()).copied().unwrap_or(false) {
            return true;
        }
        out.push((*k, *s));
        false
    });
    out
}

/// Adds `records`, whose rules are `from`'s, into `sums`, whose rules are
/// `rules` (a sum that reaches its bound marks its ENI in `skipped`).
fn merge_into<K: RecordKey>(
    sums: &mut Sums<K>,
    rules: &mut Rules,
    skipped: &mut Vec<bool>,
    records: impl IntoIterator<Item = (K, RecordSum)>,
    from: &Rules,
) {
    for (k, s) in records {
        let rule = rules.intern(from.get(s.rule()).as_ref());
        if !add_to(sums, k, s.counts.get(), rule, s.tcp_flags()).0 {
            mark(skipped, k.rest().eni);
        }
    }
}

/// Moves `from`'s sums into `sums` under their ENI's new index (two old
/// ENIs may become one); returns how many had no new index.
fn renumber_into<K: RecordKey + WithEni>(
    sums: &mut Sums<K>,
    skipped: &mut Vec<bool>,
    from: Sums<K>,
    map: impl Fn(EniIndex) -> Option<EniIndex>,
) -> usize {
    let mut dropped = 0;
    for (k, s) in from {
        let Some(eni) = map(k.rest().eni) else {
            dropped += 1;
            continue;
        };
        let k = k.with_eni(eni);
        if !add_to(sums, k, s.counts.get(), s.rule(), s.tcp_flags()).0 {
            mark(skipped, eni);
        }
    }
    dropped
}

/// A key under another ENI.
trait WithEni {
    fn with_eni(self, eni: EniIndex) -> Self;
}

impl WithEni for V4Key {
    fn with_eni(mut self, eni: EniIndex) -> Self {
        self.rest.eni = eni;
        self
    }
}

impl WithEni for V6Key {
    fn with_eni(mut self, eni: EniIndex) -> Self {
        self.rest.eni = eni;
        self
    }
}

/// An ENI as the registry described it when its window closed, and what
/// the window says of it besides its OK records: what the flow log
/// instances need to decide its NODATA and SKIPDATA records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EniWindow {
    pub ids: Arc<EniIds>,
    /// It had an interface at some time during the window.
    pub existed: bool,
    /// SKIPDATA: data was lost for it in the window.
    pub lost: bool,
    /// It has OK records of this action (complete once the drain has
    /// given out its last OK record: early-emitted ones are counted too).
    pub had_accept: bool,
    pub had_reject: bool,
}

/// Part of a closed window's OK records, each with its ENI.
pub struct EniRecords {
    pub records: Vec<FlowRecord>,
    /// `enis[i]` is the ENI of `records[i]`.
    pub enis: Vec<EniIndex>,
}

/// A closed window's OK records, produced chunk by chunk so that neither
/// the whole window's records nor copies of them are ever in memory at
/// once: what is in flight is the closed window's sums (freed as soon as
/// the last OK record is out) and one chunk. OK records come in the sums'
/// hash order, which is not part of the format. Which flow log instance
/// gets which record, and the NODATA and SKIPDATA records, are the
/// instance stage's (`crate::instances`), from [`WindowDrain::enis`].
pub struct WindowDrain {
    pub(crate) window: CaptureWindow,
    /// Records kept back for ENIs still waiting for their metadata: they
    /// are emitted with the window in which the ids become known.
    pub(crate) held: usize,
    /// Held records given up because too many were held; their ENIs get
    /// SKIPDATA when their ids become known.
    pub(crate) held_dropped: usize,
    ok4: Option<hash_map::IntoIter<V4Key, RecordSum>>,
    ok6: Option<hash_map::IntoIter<V6Key, RecordSum>>,
    /// The rules the sums name.
    rules: Rules,
    enis: Vec<EniWindow>,
    /// A close says NODATA and SKIPDATA; sums emitted early at the memory
    /// bound do not (the close of their window does).
    with_statuses: bool,
    /// For a close: how many times the window's sums were emitted early at
    /// the memory bound. For such an early emit: which one it is (1, 2, ...).
    pub(crate) early_spills: u64,
    /// Records carry TCP flags (see [`WindowAggregate::set_tcp_flags_capture`]).
    tcp_flags_on: bool,
    /// For a close: keys of accepted packets whose TCP flags found no
    /// ACCEPT record in the window.
    tcp_flags_unmatched: u64,
    /// For a close: packets whose TCP flags were dropped at the memory bound.
    tcp_flags_dropped: u64,
}

impl WindowDrain {
    /// A drain of `window`'s OK sums, for the views of its ENIs; nothing
    /// held, no early emits, NODATA and SKIPDATA at its end (callers change
    /// what differs).
    fn of_sums(
        window: CaptureWindow,
        (sums4, sums6): (Sums<V4Key>, Sums<V6Key>),
        rules: Rules,
        enis: Vec<EniWindow>,
    ) -> WindowDrain {
        WindowDrain {
            window,
            held: 0,
            held_dropped: 0,
            ok4: (!sums4.is_empty()).then(|| sums4.into_iter()),
            ok6: (!sums6.is_empty()).then(|| sums6.into_iter()),
            rules,
            enis,
            with_statuses: true,
            early_spills: 0,
            tcp_flags_on: false,
            tcp_flags_unmatched: 0,
            tcp_flags_dropped: 0,
        }
    }

    /// For a close: (keys whose TCP flags found no ACCEPT record, packets
    /// whose flags were dropped at the memory bound).
    pub fn tcp_flags_unused(&self) -> (u64, u64) {
        (self.tcp_flags_unmatched, self.tcp_flags_dropped)
    }

    /// The window the records are of.
    pub fn window(&self) -> CaptureWindow {
        self.window
    }

    /// The next OK records: at most `max` (at least one is taken even if
    /// `max` is 0), of the sums whose (ENI, action) `wanted` says some
    /// instance takes; the others are passed over (still counted in
    /// [`WindowDrain::enis`]). `None` when no OK record is left.
    pub fn next_records(
        &mut self,
        max: usize,
        wanted: impl Fn(EniIndex, Action) -> bool,
    ) -> Option<EniRecords> {
        let max = max.max(1);
        let left = self.sums_left();
        let mut records = Vec::with_capacity(max.min(left));
        let mut enis = Vec::with_capacity(max.min(left));
        while records.len() < max {
            let Some((rest, t, sum)) = self.next_sum(&wanted) else {
                break;
            };
            let flow = FlowFields {
                srcaddr: t.src,
                srcport: t.src_port,
                dstaddr: t.dst,
                dstport: t.dst_port,
                protocol: t.protocol,
                direction: rest.direction(),
                packets: sum.packets(),
                bytes: sum.bytes(),
                action: rest.action(),
                extras: FlowExtras {
                    tcp_flags: self.tcp_flags_on.then(|| {
                        if t.protocol == ipproto::TCP {
                            sum.tcp_flags()
                        } else {
                            0
                        }
                    }),
                    ..FlowExtras::default()
                },
            };
            records.push(FlowRecord {
                eni: Arc::clone(&self.enis[rest.eni.get()].ids),
                flow: Some(flow),
                start: self.window.start,
                end: self.window.end,
                log_status: LogStatus::Ok,
                rule: self.rules.get(sum.rule()),
            });
            enis.push(rest.eni);
        }
        // Free each table as soon as it is drained, not at the next call.
        if self.ok4.as_ref().is_some_and(|i| i.len() == 0) {
            self.ok4 = None;
        }
        if self.ok6.as_ref().is_some_and(|i| i.len() == 0) {
            self.ok6 = None;
        }
        (!records.is_empty()).then_some(EniRecords { records, enis })
    }

    /// Whether sums are left for [`WindowDrain::next_records`] (which may
    /// still find that no instance wants them).
    pub fn has_sums(&self) -> bool {
        self.ok4.is_some() || self.ok6.is_some()
    }

    /// Sums not turned into records yet.
    pub fn sums_left(&self) -> usize {
        self.ok4.as_ref().map_or(0, |i| i.len()) + self.ok6.as_ref().map_or(0, |i| i.len())
    }

    /// Each ENI (by index) as the window saw it; `had_accept` and
    /// `had_reject` are final once [`WindowDrain::has_sums`] is `false`.
    pub fn enis(&self) -> &[EniWindow] {
        &self.enis
    }

    /// Whether the window's NODATA and SKIPDATA records go with these
    /// records: a close, not sums emitted early at the memory bound.
    pub fn says_statuses(&self) -> bool {
        self.with_statuses
    }

    /// The next sum whose (ENI, action) is `wanted`, as (key, tuple, sum).
    fn next_sum(
        &mut self,
        wanted: &impl Fn(EniIndex, Action) -> bool,
    ) -> Option<(KeyRest, FlowTuple, RecordSum)> {
        loop {
            let next = if let Some(it) = &mut self.ok4 {
                match it.next() {
                    Some((k, s)) => Some((k.rest, k.tuple(), s)),
                    None => {
                        // Frees the table now, not when the drain goes.
                        self.ok4 = None;
                        continue;
                    }
                }
            } else if let Some(it) = &mut self.ok6 {
                match it.next() {
                    Some((k, s)) => Some((k.rest, k.tuple(), s)),
                    None => {
                        self.ok6 = None;
                        continue;
                    }
                }
            } else {
                None
            };
            let (rest, tuple, sum) = next?;
            let Some(eni) = self.enis.get_mut(rest.eni.get()) else {
                // Not this registry's ENI: no instance captures it.
                continue;
            };
            match rest.action() {
                Action::Accept => eni.had_accept = true,
                Action::Reject => eni.had_reject = true,
            }
            if wanted(rest.eni, rest.action()) {
                return Some((rest, tuple, sum));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src: &str, src_port: u16, dst: &str, dst_port: u16, protocol: u8) -> FlowTuple {
        FlowTuple {
            src: src.parse().unwrap(),
            src_port,
            dst: dst.parse().unwrap(),
            dst_port,
            protocol,
        }
    }

    /// The tuples the aggregate holds, back as tuples.
    fn tuples(agg: &WindowAggregate) -> Vec<FlowTuple> {
        let mut v: Vec<FlowTuple> = agg
            .sums4
            .keys()
            .map(|k| k.tuple())
            .chain(agg.sums6.keys().map(|k| k.tuple()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_record_slot_is_smaller_than_with_ip_addr_keys() {
        // With two IpAddr in the key the map's slot was 80 bytes (key 44,
        // sum 32). IPv4 keys are 16 bytes, IPv6 keys 40, the sum 16
        // (packed counters, the rule as an index).
        assert_eq!(std::mem::size_of::<V4Key>(), 16);
        assert_eq!(std::mem::size_of::<V6Key>(), 40);
        assert_eq!(std::mem::size_of::<RecordSum>(), 16);
        assert_eq!(std::mem::size_of::<(V4Key, RecordSum)>(), 32);
        assert_eq!(std::mem::size_of::<(V6Key, RecordSum)>(), 56);
    }

    #[test]
    fn keys_give_back_the_tuple_with_its_address_families() {
        let eni = EniIndex::new(3).unwrap();
        let mut agg = WindowAggregate::default();
        let in_tuples = [
            tuple("10.0.0.5", 40000, "198.51.100.9", 443, 6),
            tuple("fd00::5", 53, "2001:db8::1", 5353, 17),
            // An IPv4-mapped IPv6 address is IPv6 all the same.
            tuple("::ffff:10.0.0.5", 1, "fd00::5", 2, 6),
            // Families mixed (never reported; kept exact anyway).
            tuple("10.0.0.5", 1, "fd00::5", 2, 6),
            tuple("fd00::5", 1, "10.0.0.5", 2, 6),
            tuple("0.0.0.0", 0, "255.255.255.255", 65535, 132),
        ];
        for t in in_tuples {
            agg.add(eni, Direction::In, Action::Accept, t, (1, 60), None);
        }
        // ICMP: conntrack's echo id and type/code are not ports.
        agg.add(
            eni,
            Direction::Out,
            Action::Reject,
            tuple("10.0.0.5", 7, "198.51.100.9", 8 << 8, 1),
            (1, 84),
            None,
        );
        let mut expect = in_tuples.to_vec();
        expect.push(tuple("10.0.0.5", 0, "198.51.100.9", 0, 1));
        expect.sort();
        assert_eq!(tuples(&agg), expect);
        assert_eq!((agg.sums4.len(), agg.sums6.len()), (3, 4));
        let icmp = agg.sums4.keys().find(|k| k.rest.protocol == 1).unwrap();
        assert_eq!(
            (icmp.rest.eni, icmp.rest.direction(), icmp.rest.action()),
            (eni, Direction::Out, Action::Reject)
        );
    }

    #[test]
    fn direction_action_and_eni_keep_records_apart() {
        let t = tuple("10.0.0.5", 40000, "198.51.100.9", 443, 6);
        let (a, b) = (EniIndex::new(0).unwrap(), EniIndex::new(1).unwrap());
        let mut agg = WindowAggregate::default();
        let rule: Arc<str> = Arc::from("drop");
        for eni in [a, b] {
            for d in [Direction::In, Direction::Out] {
                for action in [Action::Accept, Action::Reject] {
                    agg.add(eni, d, action, t, (1, 100), None);
                    agg.add(eni, d, action, t, (2, 200), Some(&rule));
                    agg.add(eni, d, action, t, (0, 0), None);
                }
            }
        }
        assert_eq!(agg.len(), 8);
        for s in agg.sums4.values() {
            assert_eq!((s.packets(), s.bytes()), (3, 300));
            assert_eq!(agg.rules.get(s.rule()).as_deref(), Some("drop"));
        }
    }
    #[test]
    fn sums_spill_before_their_table_would_double_past_the_limit() {
        // 8 KiB: a table of 128 buckets of 33 bytes (4.2 KiB) fits, and so
        // does its growth from 64 buckets (2.1 + 4.2 KiB while it
        // rehashes); doubling to 256 (4.2 + 8.4 KiB) does not.
        const LIMIT: usize = 8 << 10;
        let eni = EniIndex::new(0).unwrap();
        let mut agg = WindowAggregate::with_limit(LIMIT);
        let rule: Arc<str> = Arc::from("sg-1:dns");
        let add = |agg: &mut WindowAggregate, port: u16| {
            let t = tuple("198.51.100.9", port, "10.0.0.5", 53, 17);
            agg.add(eni, Direction::In, Action::Reject, t, (1, 60), Some(&rule));
            assert!(agg.footprint_bytes() <= LIMIT, "{}", agg.footprint_bytes());
            assert!(agg.sums4.capacity() <= 112, "{}", agg.sums4.capacity());
        };
        for port in 0..112 {
            add(&mut agg, port);
        }
        // Full, but a tuple it has adds to its sum without a spill.
        add(&mut agg, 0);
        assert!(!agg.has_spill());
        for port in 112..300 {
            add(&mut agg, port);
        }
        let spilled: Vec<usize> = agg.spilled.iter().map(|p| p.sums4.len()).collect();
        assert_eq!(spilled, [112, 112]);
        assert_eq!((agg.len(), agg.spills), (300 - 224, 2));
        let first = &agg.spilled[0].sums4;
        let port0 = first.iter().find(|(k, _)| k.rest.src_port == 0).unwrap().1;
        assert_eq!((port0.packets(), port0.bytes()), (2, 120));
        // Each part names its rules, and the sums left name theirs.
        for part in &agg.spilled {
            for s in part.sums4.values() {
                assert_eq!(part.rules.get(s.rule()).as_deref(), Some("sg-1:dns"));
            }
        }
        for s in agg.sums4.values() {
            assert_eq!(agg.rules.get(s.rule()).as_deref(), Some("sg-1:dns"));
        }
    }

    #[test]
    fn packed_counts_hold_40_and_56_bits_then_stop_and_say_so() {
        let mut c = PackedCounts::default();
        assert!(c.add(u64::from(u32::MAX), u64::from(u32::MAX)));
        assert!(c.add(5, 7));
        assert_eq!(c.get(), (u64::from(u32::MAX) + 5, u64::from(u32::MAX) + 7));
        let mut full = PackedCounts::default();
        assert!(full.add(MAX_PACKETS, MAX_BYTES));
        assert_eq!(full.get(), (MAX_PACKETS, MAX_BYTES));
        assert!(!full.add(1, 0));
        assert_eq!(full.get(), (MAX_PACKETS, MAX_BYTES));
        let mut bytes = PackedCounts::default();
        assert!(!bytes.add(1, u64::MAX));
        assert_eq!(bytes.get(), (1, MAX_BYTES));
    }

    #[test]
    fn a_sum_at_its_bound_marks_its_eni_skipped() {
        let eni = EniIndex::new(2).unwrap();
        let t = tuple("10.0.0.5", 40000, "198.51.100.9", 443, 6);
        let mut agg = WindowAggregate::default();
        agg.add(eni, Direction::Out, Action::Accept, t, (1, MAX_BYTES), None);
        assert!(!agg.skipped.get(eni.get()).copied().unwrap_or(false));
        agg.add(eni, Direction::Out, Action::Accept, t, (1, 1), None);
        assert!(agg.skipped[eni.get()]);
    }

    #[test]
    fn rules_keep_their_names_when_sums_move_between_windows() {
        let eni = EniIndex::new(1).unwrap();
        let t = tuple("198.51.100.9", 40000, "10.0.0.5", 22, 6);
        let u = tuple("198.51.100.9", 40001, "10.0.0.5", 23, 6);
        let (x, y): (Arc<str>, Arc<str>) = (Arc::from("sg-1:ssh"), Arc::from("sg-1:telnet"));
        let mut old = WindowAggregate::default();
        old.add(eni, Direction::In, Action::Reject, t, (1, 60), Some(&x));
        let mut next = WindowAggregate::default();
        // In `next`, index 1 is another rule.
        next.add(eni, Direction::In, Action::Reject, u, (1, 60), Some(&y));
        next.absorb(old);
        let rule_of = |agg: &WindowAggregate, port: u16| {
            let (_, s) = agg
                .sums4
                .iter()
                .find(|(k, _)| k.rest.dst_port == port)
                .unwrap();
            agg.rules.get(s.rule())
        };
        assert_eq!(rule_of(&next, 22).as_deref(), Some("sg-1:ssh"));
        assert_eq!(rule_of(&next, 23).as_deref(), Some("sg-1:telnet"));
        // An equal name from another Arc is the same rule.
        let x2: Arc<str> = Arc::from("sg-1:ssh");
        assert_eq!(next.rules.intern(Some(&x2)), next.rules.intern(Some(&x)));
        assert_eq!(next.rules.names.len(), 2);
    }
}
