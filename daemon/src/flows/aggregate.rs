//! One capture window's records: sums per (ENI, direction, action, 5-tuple;
//! for NATed connections also the packet's addresses behind NAT), with the
//! part of the window their traffic spans and its TCP flags, the ENIs that
//! lost data, and, when the window closes, a drain that turns
//! them into records of their ENIs chunk by chunk (the flow log instances
//! they go to are `crate::instances`' to decide).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use flowlogd_plugin_api::{Action, Direction};

use super::leaders::{Added, Leaders, LeadersView};
use super::window::CaptureWindow;
use crate::eni::{EniIndex, EniRegistry};
use crate::model::{has_ports, ipproto};
use keys::{record_key, sum_key, AnyKey, SumKey};
use sum::{Addition, Span};
use tables::{InTables, SumTables};
use tcp_flags::PendingTcpFlags;

pub use drain::{EniRecords, EniWindow, WindowDrain};

mod drain;
mod keys;
mod sum;
mod tables;
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

/// What one addition to a sum carries besides its counts.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SumExtras<'a> {
    /// The rule that dropped REJECT traffic.
    pub(crate) rule: Option<&'a Arc<str>>,
    /// `TCP_FLAG_*` bits of the packets added (REJECT: the dropped packet's).
    pub(crate) tcp_flags: u8,
    /// The packets' (source, destination) on the other side of NAT;
    /// `None` or equal to the tuple's: not NATed.
    pub(crate) pkt: Option<(IpAddr, IpAddr)>,
    /// Unix seconds of the traffic's first moment; `None`: unknown (the
    /// window's start is said).
    pub(crate) first: Option<i64>,
    /// Unix seconds of its last moment; `None`: still going on, or
    /// unknown (the window's end is said).
    pub(crate) last: Option<i64>,
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

/// Marks ENI `eni` in a per-ENI loss list.
fn mark(skipped: &mut Vec<bool>, eni: EniIndex) {
    if skipped.len() <= eni.get() {
        skipped.resize(eni.get() + 1, false);
    }
    skipped[eni.get()] = true;
}

/// The open window's sums and loss marks.
pub(crate) struct WindowAggregate {
    sums: SumTables,
    /// Unix seconds the sums' spans count from: the window's start (or
    /// earlier: a first window may start late, see
    /// `FlowTable::start_first_window_at`).
    base: i64,
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
        WindowAggregate::with_limit(usize::MAX, 0)
    }
}

/// Sums taken out of a window at its memory bound, with the rules they name.
struct SpilledSums {
    sums: SumTables,
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
    /// Empty sums that spill at `limit` bytes (see [`WindowAggregate::limit`]),
    /// for a window that starts at `base` (Unix seconds).
    pub(crate) fn with_limit(limit: usize, base: i64) -> WindowAggregate {
        WindowAggregate {
            sums: SumTables::default(),
            base,
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
    /// `direction` as `tuple`: they go to the ACCEPT record(s) of that
    /// key when they are emitted. Ignored while capture is off and for
    /// other protocols than TCP. At the memory bound the sums are emitted
    /// early to make room; if that is not enough the flags are dropped
    /// and counted.
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
        self.sums.len()
    }

    /// Heap bytes of the sums now: their tables by capacity (not by how
    /// many sums they hold), the rules, the pending TCP flags and the
    /// per-ENI marks.
    pub(crate) fn footprint_bytes(&self) -> usize {
        self.sums.bytes() + self.besides_sums_bytes()
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

    /// Whether adding `key` would take the sums past `limit`: its table
    /// is full, so the key would make it grow, and the rest of the sums
    /// plus the table while it doubles exceed the bound. Checked before
    /// the insert, so the doubled table is never allocated.
    fn would_outgrow<K: InTables>(&self, key: &K) -> bool {
        let map = K::table(&self.sums);
        let Some(growing) = map_bytes_growing(map) else {
            return false;
        };
        let rest = self.footprint_bytes() - map_bytes(map);
        rest.saturating_add(growing) > self.limit && !map.contains_key(key)
    }

    /// Moves the sums (and the rules they name) out, to be emitted early
    /// as records of this window; loss marks and traffic bits stay. TCP
    /// flags waiting for these sums go with them.
    fn spill(&mut self) {
        if self.sums.is_empty() {
            // Nothing to give back: the bound is below one table's minimum.
            return;
        }
        self.pending_flags.apply_to(&mut self.sums);
        self.spilled.push(SpilledSums {
            sums: std::mem::take(&mut self.sums),
            rules: std::mem::take(&mut self.rules),
        });
        self.spills += 1;
    }

    /// Sums were taken out at the memory bound and wait for
    /// [`WindowAggregate::take_spill`].
    pub(crate) fn has_spill(&self) -> bool {
        !self.spilled.is_empty()
    }

    /// Adds traffic of one direction; no packets, no record. (Tests: the
    /// daemon's callers give what the record carries besides, see
    /// [`WindowAggregate::add_with`].)
    #[cfg(test)]
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
        let span = Span::of(self.base, extras.first, extras.last);
        let add = |rule: RuleId| Addition {
            counts: (packets, bytes),
            rule,
            tcp_flags: extras.tcp_flags,
            span,
        };
        let rule = extras.rule;
        let (whole, sum) = match sum_key(eni, direction, action, t, extras.pkt) {
            SumKey::Plain(AnyKey::V4(key)) => self.add_keyed(key, add, rule),
            SumKey::Plain(AnyKey::V6(key)) => self.add_keyed(key, add, rule),
            SumKey::Nat4(key) => self.add_keyed(key, add, rule),
            SumKey::Nat6(key) => self.add_keyed(key, add, rule),
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

    /// Adds to the sum of `key` what `add` makes of the rule's id, after
    /// a spill if the key would take the sums past the bound.
    fn add_keyed<K: InTables>(
        &mut self,
        key: K,
        add: impl Fn(RuleId) -> Addition,
        rule: Option<&Arc<str>>,
    ) -> (bool, (u64, u64)) {
        if self.would_outgrow(&key) {
            self.spill();
        }
        // Interned after a spill: the spilled sums took the rules.
        let rule_id = self.rules.intern(rule);
        self.sums.add(key, &add(rule_id))
    }

    pub(crate) fn mark_skipped(&mut self, eni: EniIndex) {
        mark(&mut self.skipped, eni);
    }

    pub(crate) fn mark_all_skipped(&mut self) {
        self.all_skipped = true;
    }

    /// Takes `other`'s sums and loss marks into this aggregate.
    pub(crate) fn absorb(&mut self, other: WindowAggregate) {
        let shift = other.base - self.base;
        let from = (&other.rules, shift);
        self.sums
            .merge(&mut self.rules, &mut self.skipped, other.sums, from);
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
        // Spilled sums keep the other window's base: rebased as they move.
        for mut part in other.spilled {
            let mut sums = SumTables::default();
            let mut rules = Rules::default();
            let mut skipped = Vec::new();
            sums.merge(&mut rules, &mut skipped, part.sums, (&part.rules, shift));
            part.sums = sums;
            part.rules = rules;
            self.spilled.push(part);
        }
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
        let skipped = std::mem::take(&mut self.skipped);
        for (i, &lost) in skipped.iter().enumerate() {
            if let Some(eni) = EniIndex::new(i).filter(|_| lost).and_then(map) {
                mark(&mut self.skipped, eni);
            }
        }
        self.sums.renumber(&mut self.skipped, map)
    }

    /// Distinct records summed so far.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sums.len()
    }

    /// Ends the window and leaves this aggregate empty. The records of ENIs
    /// waiting for their metadata ([`EniRegistry::is_held`]), and those
    /// ENIs' loss marks, move into `next`, the aggregate of the window now
    /// open (added to what it has: it may have counted traffic already;
    /// their spans are clamped to its window when they go out).
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
            self.merge_sums(part.sums, &part.rules, self.base);
        }
        // Flags that find no ACCEPT record now never will: the packets'
        // connection was not attributed (or lost) in this window.
        self.pending_flags.apply_to(&mut self.sums);
        let tcp_flags_unmatched = self.pending_flags.take_count() as u64;
        let tcp_flags_dropped = std::mem::take(&mut self.tcp_flags_dropped);
        let mut sums = std::mem::take(&mut self.sums);
        let rules = std::mem::take(&mut self.rules);
        let skipped = std::mem::take(&mut self.skipped);
        let all_skipped = std::mem::take(&mut self.all_skipped);
        let traffic = std::mem::take(&mut self.traffic);
        let early_spills = std::mem::take(&mut self.spills);
        self.leaders = Leaders::default();

        let held: Vec<bool> = reg.indices().map(|e| reg.is_held(e)).collect();
        let held_records = sums.take_held(&held);
        let held_count = held_records.len();
        let give_up = held_count > MAX_HELD_RECORDS;
        let held_dropped = next.keep_or_give_up_held(held_records, (&rules, self.base), give_up);

        let enis = eni_views(reg, window, &skipped, all_skipped, &traffic);
        for (eni, view) in reg.indices().zip(&enis) {
            if view.lost && held[eni.get()] {
                // What a held ENI lost stays marked until its records go
                // out. (No instance captures a held ENI, so it gets no
                // SKIPDATA from this window.)
                next.mark_skipped(eni);
            }
        }
        let mut drain = WindowDrain::of_sums(window, sums, rules, enis);
        drain.base = self.base;
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
        let SpilledSums { mut sums, rules } = self.spilled.remove(0);
        let taken = sums.len();
        let held: Vec<bool> = reg.indices().map(|e| reg.is_held(e)).collect();
        let held_records = sums.take_held(&held);
        let held_count = held_records.len();
        let give_up = held_count > MAX_HELD_RECORDS || 2 * held_count > taken;
        let held_dropped = self.keep_or_give_up_held(held_records, (&rules, self.base), give_up);
        let enis = eni_views(reg, window, &[], false, &[]);
        let mut drain = WindowDrain::of_sums(window, sums, rules, enis);
        drain.base = self.base;
        drain.held = held_count - held_dropped;
        drain.held_dropped = held_dropped;
        drain.with_statuses = false;
        drain.early_spills = self.spills - self.spilled.len() as u64;
        drain.tcp_flags_on = self.tcp_flags_on;
        Some(drain)
    }

    /// Adds sums named against `from`'s rules, their spans counted from
    /// `from_base`, to this aggregate's.
    fn merge_sums(&mut self, sums: SumTables, from: &Rules, from_base: i64) {
        let shift = from_base - self.base;
        self.sums
            .merge(&mut self.rules, &mut self.skipped, sums, (from, shift));
    }

    /// The records of ENIs waiting for their metadata stay in this
    /// aggregate, or with `give_up` are given up and their ENIs marked
    /// SKIPDATA here. `from` is their rules and base. Returns how many
    /// were given up.
    fn keep_or_give_up_held(
        &mut self,
        held: SumTables,
        (rules, base): (&Rules, i64),
        give_up: bool,
    ) -> usize {
        let count = held.len();
        if !give_up {
            self.merge_sums(held, rules, base);
            return 0;
        }
        let enis: Vec<EniIndex> = held.enis().collect();
        for eni in enis {
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

#[cfg(test)]
mod tests {
    use super::keys::{Nat4Key, Nat6Key, RecordKey, V4Key, V6Key};
    use super::sum::{PackedCounts, RecordSum, MAX_BYTES, MAX_PACKETS};
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
            .sums
            .v4
            .keys()
            .map(|k| k.tuple())
            .chain(agg.sums.v6.keys().map(|k| k.tuple()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_record_slot_is_smaller_than_with_ip_addr_keys() {
        // With two IpAddr in the key the map's slot was 80 bytes (key 44,
        // sum 32). IPv4 keys are 16 bytes, IPv6 keys 40, the sum 20
        // (packed counters, the rule as an index sharing a word with the
        // TCP flags, the span as two u16: it was 16 without the span).
        assert_eq!(std::mem::size_of::<V4Key>(), 16);
        assert_eq!(std::mem::size_of::<V6Key>(), 40);
        assert_eq!(std::mem::size_of::<RecordSum>(), 20);
        assert_eq!(std::mem::size_of::<(V4Key, RecordSum)>(), 36);
        assert_eq!(std::mem::size_of::<(V6Key, RecordSum)>(), 60);
        // Records of NATed connections, apart: 8 and 33 bytes more.
        assert_eq!(std::mem::size_of::<(Nat4Key, RecordSum)>(), 44);
        assert_eq!(std::mem::size_of::<(Nat6Key, RecordSum)>(), 96);
    }

    #[test]
    fn the_default_bound_grows_the_ipv4_table_as_far_as_before_the_span() {
        // The largest table a window's half of the default
        // window_memory_bytes lets grow (it and its predecessor both
        // allocated while it rehashes), for the slot before the span (32
        // bytes) and now: the same 2^21 buckets, 1.8 million sums.
        let limit = sums_limit_of_default();
        let largest = |slot: usize| {
            let mut buckets = 4;
            while table_bytes(buckets, slot) + table_bytes(2 * buckets, slot) <= limit {
                buckets *= 2;
            }
            buckets
        };
        let slot = std::mem::size_of::<(V4Key, RecordSum)>();
        assert_eq!((largest(32), largest(slot)), (1 << 21, 1 << 21));
        assert_eq!(buckets_of((1 << 21) * 7 / 8), 1 << 21);
        // 66 MiB then, 74 MiB now.
        assert_eq!(
            (
                table_bytes(1 << 21, 32) >> 20,
                table_bytes(1 << 21, slot) >> 20
            ),
            (66, 74)
        );
    }

    /// Half of the default `window_memory_bytes` (see `FlowTable`).
    fn sums_limit_of_default() -> usize {
        (crate::flows::DEFAULT_WINDOW_MEMORY_BYTES / 2) as usize
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
        assert_eq!((agg.sums.v4.len(), agg.sums.v6.len()), (3, 4));
        let icmp = agg.sums.v4.keys().find(|k| k.rest.protocol == 1).unwrap();
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
        for s in agg.sums.v4.values() {
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
        let mut agg = WindowAggregate::with_limit(LIMIT, 0);
        let rule: Arc<str> = Arc::from("sg-1:dns");
        let add = |agg: &mut WindowAggregate, port: u16| {
            let t = tuple("198.51.100.9", port, "10.0.0.5", 53, 17);
            agg.add(eni, Direction::In, Action::Reject, t, (1, 60), Some(&rule));
            assert!(agg.footprint_bytes() <= LIMIT, "{}", agg.footprint_bytes());
            assert!(agg.sums.v4.capacity() <= 112, "{}", agg.sums.v4.capacity());
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
        let spilled: Vec<usize> = agg.spilled.iter().map(|p| p.sums.v4.len()).collect();
        assert_eq!(spilled, [112, 112]);
        assert_eq!((agg.len(), agg.spills), (300 - 224, 2));
        let first = &agg.spilled[0].sums.v4;
        let port0 = first.iter().find(|(k, _)| k.rest.src_port == 0).unwrap().1;
        assert_eq!((port0.packets(), port0.bytes()), (2, 120));
        // Each part names its rules, and the sums left name theirs.
        for part in &agg.spilled {
            for s in part.sums.v4.values() {
                assert_eq!(part.rules.get(s.rule()).as_deref(), Some("sg-1:dns"));
            }
        }
        for s in agg.sums.v4.values() {
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
                .sums
                .v4
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

    #[test]
    fn sums_of_two_rules_on_one_key_stay_apart_when_merged_and_renumbered() {
        let (a, b) = (EniIndex::new(0).unwrap(), EniIndex::new(1).unwrap());
        let t = tuple("198.51.100.9", 40000, "10.0.0.5", 22, 6);
        let (x, y): (Arc<str>, Arc<str>) = (Arc::from("sg-1:ssh"), Arc::from("sg-1:web"));
        let by_rule = |agg: &WindowAggregate| {
            let mut v: Vec<(u64, Option<Arc<str>>)> = (agg.sums.v4.values())
                .chain(agg.sums.ruled.values())
                .map(|s| (s.packets(), agg.rules.get(s.rule())))
                .collect();
            v.sort();
            v
        };
        // Across windows: the other window's rule numbering differs.
        let mut old = WindowAggregate::default();
        old.add(a, Direction::In, Action::Accept, t, (1, 60), Some(&y));
        old.add(a, Direction::In, Action::Accept, t, (2, 60), Some(&x));
        let mut next = WindowAggregate::default();
        next.add(a, Direction::In, Action::Accept, t, (4, 60), Some(&x));
        next.add(a, Direction::In, Action::Accept, t, (8, 60), None);
        next.absorb(old);
        assert_eq!(next.len(), 2);
        assert_eq!(
            by_rule(&next),
            [(1, Some(Arc::clone(&y))), (14, Some(Arc::clone(&x)))]
        );
        // Two ENIs become one (a reload): still apart by rule.
        let mut two = WindowAggregate::default();
        two.add(a, Direction::In, Action::Accept, t, (1, 60), Some(&x));
        two.add(b, Direction::In, Action::Accept, t, (2, 60), Some(&y));
        two.add(b, Direction::In, Action::Accept, t, (4, 60), Some(&x));
        assert_eq!(two.renumber_enis(&[Some(a), Some(a)]), 0);
        assert_eq!(by_rule(&two), [(2, Some(y)), (5, Some(x))]);
    }
}
