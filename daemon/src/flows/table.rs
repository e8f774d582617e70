//! The flow table: per live conntrack connection, the counters already
//! attributed to a window and the ENIs it belongs to.
//!
//! Counters from the kernel are cumulative. Each NEW / DESTROY event and
//! each line of the dump done at every window close is turned into the
//! delta since what was attributed before, so a connection's records over
//! all windows sum to its final counters.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use flowlogd_plugin_api::{Action, Direction};

use super::aggregate::{FlowTuple, SumExtras, WindowAggregate, WindowDrain};
use super::leaders::LeadersView;
use super::window::{CaptureWindow, Clock};
use crate::eni::{EniIndex, EniRegistry};
use crate::model::{ConntrackEntry, ConntrackKind, Tuple};

mod reload;

/// A connection's identity while it lives: a hash of CTA_ZONE, the
/// original tuple and the start time, beside CTA_ID. The id alone is not enough: it
/// is a 32-bit hash, and a live table of 250k entries was seen holding 4 to
/// 10 ids shared by two connections each. Nor are id and tuple: a reopened
/// TCP 5-tuple (a SYN on a TIME_WAIT entry replaces it) usually lands at the
/// freed address and gets the same id, and its predecessor's DESTROY can
/// still be queued when a dump lists the new one (the benchmark found both
/// loss and double counting from that). The start time (CTA_TIMESTAMP,
/// which the daemon turns on, and which every dump line and DESTROY event
/// carries) tells incarnations apart.
type FlowKey = u64;

/// Hashes a [`FlowKey`] for the table's maps with one multiplication
/// instead of SipHash (which was 5-10% of the capture thread). No keyed
/// hash is needed here: the low half of the key is CTA_ID, which the
/// kernel derives with siphash under a boot-time secret, so peers cannot
/// choose keys that collide. Hand-written because it is ten lines and
/// depends on that property of this one key.
#[derive(Clone, Copy, Default)]
struct FlowKeyHasher(u64);

impl std::hash::Hasher for FlowKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; anything else still gets mixed in.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, k: u64) {
        // A folded multiply: the full 128-bit product's halves XORed, so
        // every input bit reaches the low bits (the bucket index) and the
        // high bits (the map's control bytes).
        let product = u128::from(self.0 ^ k) * 0x9e37_79b9_7f4a_7c15;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FlowKeyHash = std::hash::BuildHasherDefault<FlowKeyHasher>;

fn key_of(e: &ConntrackEntry) -> FlowKey {
    // 32 bits of hash beside the id: two incarnations that share an id
    // collide once in 2^32, not once in 2^16.
    (u64::from(incarnation_hash(e)) << 32) | u64::from(e.id)
}

fn incarnation_hash(e: &ConntrackEntry) -> u32 {
    fingerprint(e.zone, &e.orig, e.start_ns)
}

/// Counters as one array: orig packets, orig bytes, reply packets, reply bytes.
type Attributed = [u64; 4];

/// One live connection. Tuples are not kept: every message that brings new
/// counters also brings the tuples, and the key holds a hash of them, so a
/// message with another tuple under the same id finds another entry.
#[derive(Clone, Copy, Debug)]
struct FlowEntry {
    attributed: Attributed,
    enis: Attribution,
    /// The dump generation that last saw the connection alive.
    epoch: u16,
}

/// The ENIs a connection belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Attribution {
    /// Owns the original direction's destination before NAT (`orig.dst`):
    /// sees the original direction arrive.
    inbound: Option<EniIndex>,
    /// Owns the original direction's source after NAT (`reply.dst`): sees
    /// the original direction leave. Without NAT this is `orig.src`; with
    /// masquerading it is the address the packets leave with.
    outbound: Option<EniIndex>,
}

impl Attribution {
    fn of(reg: &EniRegistry, e: &ConntrackEntry) -> Option<Attribution> {
        let a = Attribution {
            inbound: reg.owner_of(e.orig.dst),
            outbound: reg.owner_of(e.reply.dst),
        };
        (a.inbound.is_some() || a.outbound.is_some()).then_some(a)
    }

    fn enis(self) -> impl Iterator<Item = EniIndex> {
        self.inbound.into_iter().chain(self.outbound)
    }

    /// A connection whose ENIs all lost their interface
    /// ([`FlowTable::detach`]): what it carries from now on belongs to
    /// whoever owns its addresses now, if anyone.
    fn is_detached(self) -> bool {
        self.inbound.is_none() && self.outbound.is_none()
    }

    /// For a detached connection, its ENIs as the registry sees them now.
    fn refresh(&mut self, reg: &EniRegistry, e: &ConntrackEntry) {
        if self.is_detached() {
            if let Some(now) = Attribution::of(reg, e) {
                *self = now;
            }
        }
    }
}

/// Which ENIs lost data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossScope {
    All,
    Eni(EniIndex),
}

/// Counters for the operator: how the table is doing and what it could not
/// attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Live connections tracked now.
    pub entries: u64,
    pub peak_entries: u64,
    /// Conntrack messages about connections no ENI owns a side of
    /// (loopback, other interfaces); dump lines included.
    pub unattributed: u64,
    /// New connections not tracked because the table held `max_flows`.
    pub table_full_drops: u64,
    /// Connections that vanished without a DESTROY event (it was dropped).
    pub lost_connections: u64,
    /// Counters that went backwards or an id that changed tuple: id reuse
    /// after a lost DESTROY, or another tool zeroed the counters.
    pub anomalies: u64,
    /// Connections presumed lost whose DESTROY (or a dump line) came after
    /// all: counted from what was attributed, not again in full.
    pub revived: u64,
    /// Messages without CTA_COUNTERS (accounting off).
    pub missing_counters: u64,
}

/// What a stopping daemon had attributed for one live connection, so that
/// the next run carries on from there instead of from its baseline: the
/// bytes that flowed while no daemon ran are then counted, not lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandoffEntry {
    /// The flow key: a hash of zone, original tuple and start time << 32 |
    /// CTA_ID.
    pub key: u64,
    /// orig packets, orig bytes, reply packets, reply bytes.
    pub attributed: [u64; 4],
}

/// How many dumps a connection presumed lost is remembered (at one dump
/// per window, an hour and a half at the default 600 s windows).
const LOST_RETENTION_DUMPS: u16 = 10;

/// The flow table and the open capture window.
pub struct FlowTable<C: Clock> {
    clock: C,
    window_secs: u32,
    max_flows: usize,
    window: CaptureWindow,
    flows: HashMap<FlowKey, FlowEntry, FlowKeyHash>,
    /// Connections destroyed since `begin_dump`: a dump in flight may still
    /// list them, and they would look new.
    tombstones: HashSet<FlowKey, FlowKeyHash>,
    /// Connections two complete dumps no longer listed, with the epoch they
    /// were declared lost in. Their window was marked SKIPDATA, but their
    /// DESTROY may still come: in reliable mode the kernel re-sends events
    /// a full socket refused, possibly minutes later. Kept for
    /// `LOST_RETENTION_DUMPS` dumps so that such a late DESTROY counts only
    /// what was not attributed yet, never the whole connection again.
    presumed_lost: HashMap<FlowKey, (FlowEntry, u16), FlowKeyHash>,
    in_dump: bool,
    epoch: u16,
    /// The epoch of the last complete dump, the start of the grace.
    last_complete_epoch: Option<u16>,
    /// The open window's sums.
    agg: WindowAggregate,
    /// Bytes each window's sums may take before they are emitted early
    /// (half of `window_memory_bytes`, see [`FlowTable::with_window_memory_bytes`]).
    sums_limit: usize,
    /// The window being closed, from [`FlowTable::begin_close`] to
    /// [`FlowTable::finish_close`]: the dump in between harvests into it.
    closing: Option<ClosingWindow>,
    stats: FlowStats,
    /// Records carry TCP flags ([`FlowTable::set_tcp_flags_capture`]).
    tcp_flags_on: bool,
    /// The security-group rule of each conntrack mark flowlogd sets
    /// ([`FlowTable::set_rule_names`]): ACCEPT records name it.
    rule_names: Option<RuleNames>,
}

/// Conntrack mark -> `sg-id:rule-id` (the security groups'
/// `MarkNames::name_of`), asked only for marks with [`MARK_FLAG`].
pub type RuleNames = Box<dyn Fn(u32) -> Option<Arc<str>> + Send>;

/// The rule a connection's mark names, if flowlogd set the mark: other
/// marks (the operator's own) are never looked up.
fn rule_of(names: Option<&RuleNames>, e: &ConntrackEntry) -> Option<Arc<str>> {
    // Most connections carry no mark: no call. Which marks name a rule is
    // the lookup's to say (`security_groups::MarkNames`).
    if e.mark == 0 {
        return None;
    }
    names?(e.mark)
}

/// The windows' memory bound until [`FlowTable::with_window_memory_bytes`]
/// sets one: the config's default (`daemon.window_memory_bytes`; a test
/// of the instance stage, which sees both, keeps the two equal). The flow
/// table does not read the config: its bound is given to it.
pub const DEFAULT_WINDOW_MEMORY_BYTES: u64 = 256 << 20;

/// Each window's share of `window_memory_bytes` (see
/// [`FlowTable::with_window_memory_bytes`]).
fn sums_limit(window_memory_bytes: u64) -> usize {
    usize::try_from(window_memory_bytes / 2).unwrap_or(usize::MAX)
}

/// A window whose end has passed and whose closing dump is under way.
struct ClosingWindow {
    window: CaptureWindow,
    agg: WindowAggregate,
}

/// Where a dump line's delta goes: into the window being closed while its
/// closing dump runs, otherwise into the open window. Events (DESTROY)
/// always count in the open window. A connection's delta thus goes to one
/// window or the other, never both: the dump line and the event each
/// attribute only what the other has not (tombstones, `attributed`).
fn dump_target<'a>(
    agg: &'a mut WindowAggregate,
    closing: &'a mut Option<ClosingWindow>,
    in_dump: bool,
) -> &'a mut WindowAggregate {
    match closing {
        Some(c) if in_dump => &mut c.agg,
        _ => agg,
    }
}

impl<C: Clock> FlowTable<C> {
    /// An empty table whose first window is the aligned one containing now.
    pub fn new(clock: C, window_secs: u32, max_flows: u64) -> FlowTable<C> {
        let window = CaptureWindow::containing(clock.now_unix(), window_secs);
        FlowTable {
            clock,
            window_secs: window_secs.max(1),
            max_flows: usize::try_from(max_flows).unwrap_or(usize::MAX),
            window,
            flows: HashMap::default(),
            tombstones: HashSet::default(),
            presumed_lost: HashMap::default(),
            in_dump: false,
            epoch: 0,
            last_complete_epoch: None,
            agg: WindowAggregate::with_limit(sums_limit(DEFAULT_WINDOW_MEMORY_BYTES), window.start),
            closing: None,
            stats: FlowStats::default(),
            sums_limit: sums_limit(DEFAULT_WINDOW_MEMORY_BYTES),
            tcp_flags_on: false,
            rule_names: None,
        }
    }

    /// Bounds the memory of the windows' sums to `bytes` (the config's
    /// `window_memory_bytes`). Two windows' sums can be in memory at once:
    /// the open one, and a closed one whose dump is running or whose
    /// records are still going out. So each gets half: when a window's
    /// sums would take more, what they hold is emitted early
    /// ([`FlowTable::take_spill`]) and they start empty again.
    pub fn with_window_memory_bytes(mut self, bytes: u64) -> FlowTable<C> {
        self.sums_limit = sums_limit(bytes);
        self.agg = self.new_aggregate();
        self
    }

    /// Empty sums for the open window, with this table's bound and settings.
    fn new_aggregate(&self) -> WindowAggregate {
        let mut agg = WindowAggregate::with_limit(self.sums_limit, self.window.start);
        agg.set_tcp_flags_capture(self.tcp_flags_on);
        agg
    }

    /// The rule names of the security groups' conntrack marks: those of
    /// the current config and of every earlier one still on a connection
    /// (given again at each reload). A connection's ACCEPT records name the
    /// rule its mark says from the next harvest on; a mark not given here
    /// (or not flowlogd's) names none.
    pub fn set_rule_names(&mut self, names: impl Fn(u32) -> Option<Arc<str>> + Send + 'static) {
        self.rule_names = Some(Box::new(names));
    }

    /// Heap bytes of the open window's sums.
    pub fn sums_bytes(&self) -> usize {
        self.agg.footprint_bytes()
    }

    /// The open window's largest records so far and per-ENI totals
    /// (`flowlogd top`): a copy of a few bounded lists, no walk.
    pub fn leaders(&self) -> LeadersView {
        self.agg.leaders()
    }

    /// Distinct records the open window has summed so far.
    pub fn window_records(&self) -> usize {
        self.agg.records_so_far()
    }

    /// Sums of a window were taken out at the memory bound
    /// ([`FlowTable::take_spill`] has something).
    pub fn has_spill(&self) -> bool {
        self.agg.has_spill() || self.closing.as_ref().is_some_and(|c| c.agg.has_spill())
    }

    /// Sums taken out at the memory bound, as records of their window
    /// (same start and end as the window's other records; the end is the
    /// planned one), to be sent to the sinks now. They hold no NODATA or
    /// SKIPDATA: the window's close says those. `None` when there are none.
    pub fn take_spill(&mut self, reg: &EniRegistry) -> Option<WindowDrain> {
        if let Some(c) = &mut self.closing {
            if let Some(d) = c.agg.take_spill(reg, c.window) {
                return Some(d);
            }
        }
        self.agg.take_spill(reg, self.window)
    }

    /// The open window; its `end` is the next aligned boundary.
    pub fn window(&self) -> CaptureWindow {
        self.window
    }

    /// Bytes the flow table's hash map has allocated (its slots and their
    /// control bytes), for the window log line: bytes per live flow.
    pub fn table_bytes(&self) -> usize {
        // hashbrown fills at most 7/8 of its buckets, a power of two.
        let capacity = self.flows.capacity();
        let buckets = if capacity == 0 {
            0
        } else {
            (capacity * 8 / 7).next_power_of_two()
        };
        buckets * (std::mem::size_of::<(FlowKey, FlowEntry)>() + 1)
    }

    /// When the open window is due to close (Unix seconds): dump, then
    /// [`FlowTable::close_window`] with this time.
    pub fn next_deadline(&self) -> i64 {
        self.window.end
    }

    pub fn stats(&self) -> FlowStats {
        FlowStats {
            entries: self.flows.len() as u64,
            ..self.stats
        }
    }

    /// Begins a run's first window at `start` (its start time) instead of
    /// the aligned start: the previous run emitted a window up to its
    /// stop, and this one must not overlap it. The end stays aligned.
    pub fn start_first_window_at(&mut self, start: i64) {
        self.window.start = start.clamp(self.window.start, self.window.end);
    }

    /// Until when this table's counts went out with a closed window: the
    /// end of the window closed last, where the open one began (for the
    /// handoff).
    pub fn counted_until(&self) -> i64 {
        self.window.start
    }

    /// A connection of the start-up dump: what it carried so far happened
    /// before the daemon started and is not attributed.
    pub fn baseline(&mut self, reg: &EniRegistry, e: &ConntrackEntry) {
        let key = key_of(e);
        if self.flows.contains_key(&key) {
            // Created after start (its NEW event came first): it is ours.
            return self.observe(reg, e);
        }
        if self.in_dump && self.tombstones.contains(&key) {
            return;
        }
        let current = match counters(e) {
            Some(c) => c,
            None => {
                self.stats.missing_counters += 1;
                [0; 4]
            }
        };
        if let Some(enis) = self.attribute(reg, e) {
            self.insert(key, enis, current);
        }
    }

    /// A connection of the start-up dump after a clean handoff. One the
    /// kernel created at or after `counted_until` (Unix seconds: the end of
    /// the previous run's last window) that the previous run did not hand
    /// off came into being after that run's last dump, while no daemon
    /// ran: none of it was counted, so all of it is attributed to this run.
    /// Any other connection is [`FlowTable::baseline`]d. Returns whether it
    /// was counted in full.
    pub fn baseline_after_handoff(
        &mut self,
        reg: &EniRegistry,
        e: &ConntrackEntry,
        counted_until: i64,
        handed_off: &HashSet<u64>,
    ) -> bool {
        let key = key_of(e);
        let cutoff_ns = u64::try_from(counted_until)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000);
        let born_after = e.start_ns.is_some_and(|ns| ns >= cutoff_ns);
        let known =
            self.flows.contains_key(&key) || (self.in_dump && self.tombstones.contains(&key));
        if !born_after || known || handed_off.contains(&key) || counters(e).is_none() {
            self.baseline(reg, e);
            return false;
        }
        match self.attribute(reg, e) {
            Some(enis) => self.insert(key, enis, [0; 4]),
            None => false,
        }
    }

    /// What every live connection has had attributed, for [`FlowTable::resume_from`]
    /// in the next run.
    pub fn handoff(&self) -> Vec<HandoffEntry> {
        self.flows
            .iter()
            .map(|(key, f)| HandoffEntry {
                key: *key,
                attributed: f.attributed,
            })
            .collect()
    }

    /// After the start-up baseline: a connection the previous run handed
    /// off (same key, counters not behind) is attributed from
    /// where that run stopped, so its next harvest includes what flowed
    /// while no daemon ran. Returns how many connections were resumed.
    pub fn resume_from(&mut self, entries: &[HandoffEntry]) -> usize {
        let mut resumed = 0;
        for h in entries {
            let Some(f) = self.flows.get_mut(&h.key) else {
                continue;
            };
            if (0..4).any(|i| h.attributed[i] > f.attributed[i]) {
                continue;
            }
            f.attributed = h.attributed;
            resumed += 1;
        }
        resumed
    }

    /// A conntrack event (NEW, UPDATE, DESTROY; a dump line is passed on
    /// to [`FlowTable::on_dump_entry`]).
    pub fn on_event(&mut self, reg: &EniRegistry, e: &ConntrackEntry) {
        match e.kind {
            ConntrackKind::New => self.on_new(reg, e),
            ConntrackKind::Update => self.observe(reg, e),
            ConntrackKind::Destroy => self.on_destroy(reg, e),
            ConntrackKind::Dump => self.on_dump_entry(reg, e),
        }
    }

    /// A dump of the conntrack table starts (at every window close, and
    /// to resync after an overrun).
    pub fn begin_dump(&mut self) {
        self.in_dump = true;
        self.tombstones.clear();
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// One line of the dump started by [`FlowTable::begin_dump`].
    pub fn on_dump_entry(&mut self, reg: &EniRegistry, e: &ConntrackEntry) {
        if self.in_dump && self.tombstones.contains(&key_of(e)) {
            return;
        }
        self.observe(reg, e);
    }

    /// The dump is over. A connection that two `complete` dumps in a row
    /// (not interrupted, no overrun) did not list and that got no DESTROY
    /// is gone and its DESTROY event was lost: it is dropped and its ENIs'
    /// window is marked SKIPDATA. One dump of grace, because a DESTROY can
    /// legitimately come after the dump that no longer lists the entry:
    /// the dump itself evicts expired entries (their events follow), and in
    /// reliable mode the kernel re-sends events it could not deliver. The
    /// case this catches: connections created before any event listener
    /// existed have no event extension and never send DESTROY.
    pub fn end_dump(&mut self, complete: bool) {
        self.in_dump = false;
        self.tombstones.clear();
        if self.tombstones.capacity() > 4096 {
            self.tombstones.shrink_to(0);
        }
        if !complete {
            return;
        }
        let epoch = self.epoch;
        let previous_complete = self.last_complete_epoch.replace(epoch);
        self.presumed_lost
            .retain(|_, (_, declared)| epoch.wrapping_sub(*declared) < LOST_RETENTION_DUMPS);
        let room = self.max_flows;
        // The window the dump was for.
        let agg = match &mut self.closing {
            Some(c) => &mut c.agg,
            None => &mut self.agg,
        };
        let stats = &mut self.stats;
        let lost = &mut self.presumed_lost;
        self.flows.retain(|key, f| {
            // Seen by this dump, or by the one before it if that one was
            // complete too (the grace): alive.
            if f.epoch == epoch
                || previous_complete.is_none_or(|p| f.epoch.wrapping_sub(p) < 0x8000)
            {
                return true;
            }
            stats.lost_connections += 1;
            f.enis.enis().for_each(|eni| agg.mark_skipped(eni));
            if lost.len() < room {
                lost.insert(*key, (*f, epoch));
            }
            false
        });
    }

    /// `eni` lost its interface: its connections are over as far as it is
    /// concerned (the loop harvested them just before). They stay in the
    /// table, owned by nobody, so that a later dump or DESTROY does not
    /// count them again from zero; should their addresses turn up on
    /// another ENI, what they carry from then on is that ENI's.
    pub fn detach(&mut self, eni: EniIndex) {
        for f in self.flows.values_mut() {
            if f.enis.inbound == Some(eni) {
                f.enis.inbound = None;
            }
            if f.enis.outbound == Some(eni) {
                f.enis.outbound = None;
            }
        }
    }

    /// Data was lost (a netlink overrun): the open window's records get a
    /// SKIPDATA record for these ENIs besides the OK records kept.
    /// While a window is being closed, both windows are marked: what was
    /// lost may have belonged to either.
    pub fn mark_lost(&mut self, scope: LossScope) {
        let closing = self.closing.as_mut().map(|c| &mut c.agg);
        for agg in std::iter::once(&mut self.agg).chain(closing) {
            match scope {
                LossScope::All => agg.mark_all_skipped(),
                LossScope::Eni(eni) => agg.mark_skipped(eni),
            }
        }
    }

    /// Packets a firewall rule dropped (from NFLOG), as seen on `eni`;
    /// `tcp_flags` (`TCP_FLAG_*`) are the dropped packets' own, OR-ed into
    /// the REJECT record (which shows them only while TCP flags capture is
    /// on, see [`FlowTable::set_tcp_flags_capture`]).
    /// The record's span is the seconds the packets were read (see
    /// [`FlowTable::add_reject_at`] for the kernel's own time).
    #[allow(clippy::too_many_arguments)] // One call site; a struct for it would be noise.
    pub fn add_reject(
        &mut self,
        eni: EniIndex,
        direction: Direction,
        tuple: FlowTuple,
        packets: u64,
        bytes: u64,
        rule: Option<&Arc<str>>,
        tcp_flags: u8,
    ) {
        self.add_reject_at(None, eni, direction, tuple, packets, bytes, rule, tcp_flags);
    }

    /// [`FlowTable::add_reject`] of packets the kernel received at `at`
    /// (Unix seconds, NFULA_TIMESTAMP), if it said: the record spans the
    /// seconds of its first and last drop. Without it, or with one more
    /// than a window away from the clock (another clock base, or a clock
    /// step), the time they were read is said: the loop reads a drop
    /// within its poll's latency.
    #[allow(clippy::too_many_arguments)] // As add_reject, and when.
    pub fn add_reject_at(
        &mut self,
        at: Option<i64>,
        eni: EniIndex,
        direction: Direction,
        tuple: FlowTuple,
        packets: u64,
        bytes: u64,
        rule: Option<&Arc<str>>,
        tcp_flags: u8,
    ) {
        let now = self.clock.now_unix();
        let skew = i64::from(self.window_secs);
        let when = at.filter(|t| (t - now).abs() <= skew).unwrap_or(now);
        let extras = SumExtras {
            rule,
            tcp_flags,
            pkt: None,
            first: Some(when),
            last: Some(when),
        };
        self.agg.add_with(
            eni,
            direction,
            Action::Reject,
            tuple,
            (packets, bytes),
            extras,
        );
    }

    /// TCP flags (`TCP_FLAG_*`, AWS encoding) of an ACCEPTED packet seen
    /// on `eni` in `direction` as `tuple` (its addresses as that ENI's
    /// wire shows them, as in the records). They are kept beside the open
    /// window's sums and OR-ed into the ACCEPT record(s) of that key when
    /// the window's records are emitted (at its close, or early at the
    /// memory bound). Flags whose key has no ACCEPT record by the close are
    /// counted ([`WindowDrain::tcp_flags_unused`]), not turned into
    /// records. Their memory counts in the window's bound. Ignored while
    /// TCP flags capture is off and for protocols other than TCP.
    pub fn add_tcp_flags(
        &mut self,
        eni: EniIndex,
        direction: Direction,
        tuple: FlowTuple,
        flags: u8,
    ) {
        self.agg.add_tcp_flags(eni, direction, tuple, flags);
    }

    /// Turns TCP flags capture on or off (off by default). Off, records
    /// carry `tcp_flags: None`; on, TCP records carry `Some(bits)` (0 if
    /// none were seen) and the others `Some(0)`. Applies to the open
    /// window and the ones after it.
    pub fn set_tcp_flags_capture(&mut self, on: bool) {
        self.tcp_flags_on = on;
        self.agg.set_tcp_flags_capture(on);
    }

    /// Closes the open window at `end` and returns its records; the next
    /// window starts at `end`. `end` is the deadline normally, the time of
    /// closing on shutdown (SIGTERM closes the window early). Without a
    /// dump in between, long-lived connections are harvested only at the
    /// next one: the event loop uses [`FlowTable::begin_close`], a dump,
    /// and [`FlowTable::finish_close`].
    pub fn close_window(&mut self, reg: &EniRegistry, end: i64) -> WindowDrain {
        self.begin_close(end);
        self.finish_close(reg)
            .expect("begin_close opened a closing window")
    }

    /// Starts closing the open window at `end` (see
    /// [`FlowTable::close_window`] for `end`); the next window opens now.
    /// Events count in the next window from here on; the lines of the
    /// dump that follows ([`FlowTable::begin_dump`]) harvest into the
    /// closing one, whose records [`FlowTable::finish_close`] returns after
    /// [`FlowTable::end_dump`]. A close still pending is finished first
    /// and its records are returned.
    pub fn begin_close(&mut self, end: i64) -> CaptureWindow {
        // A clock stepped back must not give a window that ends before it starts.
        let end = end.max(self.window.start);
        let window = CaptureWindow {
            start: self.window.start,
            end,
        };
        debug_assert!(
            self.closing.is_none(),
            "begin_close while a close is pending"
        );
        self.window = CaptureWindow::after(end, self.clock.now_unix(), self.window_secs);
        let fresh = self.new_aggregate();
        let agg = std::mem::replace(&mut self.agg, fresh);
        if let Some(pending) = self.closing.replace(ClosingWindow { window, agg }) {
            // Not expected (the loop finishes a close before it begins the
            // next); should it happen, keep its sums in the window closing
            // now rather than lose them.
            self.closing
                .as_mut()
                .expect("just set")
                .agg
                .absorb(pending.agg);
        }
        window
    }

    /// A window is being closed ([`FlowTable::begin_close`] was called and
    /// [`FlowTable::finish_close`] not yet).
    pub fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// Ends the close begun by [`FlowTable::begin_close`]: the closed
    /// window's records, to be taken chunk by chunk; `None` if no close was
    /// pending. Records held for ENIs waiting for their metadata move into
    /// the open window.
    pub fn finish_close(&mut self, reg: &EniRegistry) -> Option<WindowDrain> {
        let mut closing = self.closing.take()?;
        let drain = closing.agg.close(reg, closing.window, &mut self.agg);
        // Give memory back after a burst of connections has gone.
        if self.flows.capacity() > 4 * self.flows.len().max(4096) {
            self.flows.shrink_to(self.flows.len() * 2);
        }
        Some(drain)
    }

    fn on_new(&mut self, reg: &EniRegistry, e: &ConntrackEntry) {
        let key = key_of(e);
        if let Some(f) = self.flows.get_mut(&key) {
            // A dump listed it before its NEW event was read: keep what
            // the dump attributed.
            f.epoch = self.epoch;
            return;
        }
        if let Some(enis) = self.attribute(reg, e) {
            self.insert(key, enis, [0; 4]);
        }
    }

    /// A live connection's current counters (UPDATE event or dump line):
    /// attribute what is new.
    fn observe(&mut self, reg: &EniRegistry, e: &ConntrackEntry) {
        let key = key_of(e);
        self.revive(key);
        let Some(current) = counters(e) else {
            self.stats.missing_counters += 1;
            if let Some(f) = self.flows.get_mut(&key) {
                f.epoch = self.epoch;
            }
            return;
        };
        if let Some(f) = self.flows.get_mut(&key) {
            if let Some(delta) = delta(f, &current) {
                f.attributed = current;
                f.epoch = self.epoch;
                f.enis.refresh(reg, e);
                let rule = rule_of(self.rule_names.as_ref(), e);
                let agg = dump_target(&mut self.agg, &mut self.closing, self.in_dump);
                harvest(agg, f.enis, e, delta, rule.as_ref());
                return;
            }
            let old = self.flows.remove(&key).map(|f| f.enis);
            self.anomaly(old);
        }
        // Unknown: created since the last dump (NEW events may be off);
        // everything it carries is new.
        if let Some(enis) = self.attribute(reg, e) {
            if self.insert(key, enis, current) {
                let rule = rule_of(self.rule_names.as_ref(), e);
                let agg = dump_target(&mut self.agg, &mut self.closing, self.in_dump);
                harvest(agg, enis, e, current, rule.as_ref());
            }
        }
    }

    fn on_destroy(&mut self, reg: &EniRegistry, e: &ConntrackEntry) {
        let key = key_of(e);
        if self.in_dump && !self.tombstones.insert(key) {
            return;
        }
        self.revive(key);
        let known = self.flows.remove(&key);
        let Some(current) = counters(e) else {
            self.stats.missing_counters += 1;
            if let Some(f) = known {
                // Its last counters are unknown.
                f.enis.enis().for_each(|eni| self.agg.mark_skipped(eni));
            }
            return;
        };
        if let Some(mut f) = known {
            if let Some(delta) = delta(&f, &current) {
                f.enis.refresh(reg, e);
                let rule = rule_of(self.rule_names.as_ref(), e);
                harvest(&mut self.agg, f.enis, e, delta, rule.as_ref());
                return;
            }
            self.anomaly(Some(f.enis));
        }
        // Unknown: created and destroyed between two dumps.
        if let Some(enis) = self.attribute(reg, e) {
            let rule = rule_of(self.rule_names.as_ref(), e);
            harvest(&mut self.agg, enis, e, current, rule.as_ref());
        }
    }

    /// A connection presumed lost is heard of again: it goes back into the
    /// table with what was attributed, so only the rest is counted.
    fn revive(&mut self, key: FlowKey) {
        if self.presumed_lost.is_empty() || self.flows.contains_key(&key) {
            return;
        }
        if let Some((f, _)) = self.presumed_lost.remove(&key) {
            self.stats.revived += 1;
            self.flows.insert(key, f);
        }
    }

    fn attribute(&mut self, reg: &EniRegistry, e: &ConntrackEntry) -> Option<Attribution> {
        let enis = Attribution::of(reg, e);
        if enis.is_none() {
            self.stats.unattributed += 1;
        }
        enis
    }

    /// Tracks a connection from now on; `false` (and its ENIs' window
    /// marked SKIPDATA) if the table is full.
    fn insert(&mut self, key: FlowKey, enis: Attribution, attributed: Attributed) -> bool {
        if self.flows.len() >= self.max_flows {
            self.stats.table_full_drops += 1;
            enis.enis().for_each(|eni| self.agg.mark_skipped(eni));
            return false;
        }
        self.flows.insert(
            key,
            FlowEntry {
                attributed,
                enis,
                epoch: self.epoch,
            },
        );
        self.stats.peak_entries = self.stats.peak_entries.max(self.flows.len() as u64);
        true
    }

    /// The connection under this id is not the one we knew: the old one's
    /// last counters are lost.
    fn anomaly(&mut self, old: Option<Attribution>) {
        self.stats.anomalies += 1;
        if let Some(enis) = old {
            enis.enis().for_each(|eni| self.agg.mark_skipped(eni));
        }
    }
}

/// Both directions' counters; `None` when the message has none at all.
fn counters(e: &ConntrackEntry) -> Option<Attributed> {
    if e.orig_counters.is_none() && e.reply_counters.is_none() {
        return None;
    }
    let o = e.orig_counters.unwrap_or_default();
    let r = e.reply_counters.unwrap_or_default();
    Some([o.packets, o.bytes, r.packets, r.bytes])
}

/// What `current` adds to what `f` attributed, or `None` if counters went
/// backwards (not the connection we knew).
fn delta(f: &FlowEntry, current: &Attributed) -> Option<Attributed> {
    let mut d = [0; 4];
    for i in 0..4 {
        d[i] = current[i].checked_sub(f.attributed[i])?;
    }
    Some(d)
}

/// Adds a connection's new packets to the window, for each ENI it belongs
/// to, with the tuples as that ENI's wire shows them: what arrives is seen
/// before NAT, what leaves after it. Each record also gets the packet's
/// addresses on the other side of NAT (from the other tuple: equal to its
/// own without NAT) and the connection's span from its conntrack
/// timestamps (unknown without nf_conntrack_timestamp: the window's
/// bounds are said; no stop yet: it goes on past the harvest), and the
/// security-group `rule` its conntrack mark names, if any.
fn harvest(
    agg: &mut WindowAggregate,
    enis: Attribution,
    e: &ConntrackEntry,
    d: Attributed,
    rule: Option<&Arc<str>>,
) {
    let (o, r) = (&e.orig, &e.reply);
    let tuple = |src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16| FlowTuple {
        src,
        src_port,
        dst,
        dst_port,
        protocol: o.protocol,
    };
    let secs = |ns: u64| i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX);
    let extras = |pkt_src: IpAddr, pkt_dst: IpAddr| SumExtras {
        pkt: Some((pkt_src, pkt_dst)),
        first: e.start_ns.map(secs),
        last: e.stop_ns.map(secs),
        rule,
        ..SumExtras::default()
    };
    let mut add = |eni, direction, t, counts, x| {
        agg.add_with(eni, direction, Action::Accept, t, counts, x);
    };
    if let Some(eni) = enis.outbound {
        // Leaves as the reply tuple reversed (after SNAT), was sent as the
        // original tuple; replies arrive as the reply tuple and are
        // delivered as the original tuple reversed.
        let out = tuple(r.dst, r.dst_port, r.src, r.src_port);
        let back = tuple(r.src, r.src_port, r.dst, r.dst_port);
        add(eni, Direction::Out, out, (d[0], d[1]), extras(o.src, o.dst));
        add(eni, Direction::In, back, (d[2], d[3]), extras(o.dst, o.src));
    }
    if let Some(eni) = enis.inbound {
        // Arrives as the original tuple (before DNAT), is delivered as the
        // reply tuple reversed; replies leave as the original tuple
        // reversed (after un-DNAT), were sent as the reply tuple.
        let arrive = tuple(o.src, o.src_port, o.dst, o.dst_port);
        let back = tuple(o.dst, o.dst_port, o.src, o.src_port);
        add(
            eni,
            Direction::In,
            arrive,
            (d[0], d[1]),
            extras(r.dst, r.src),
        );
        add(
            eni,
            Direction::Out,
            back,
            (d[2], d[3]),
            extras(r.src, r.dst),
        );
    }
}

/// 32 bits of a hash of the zone, the original tuple and the start time
/// (FNV-1a over their fields).
fn fingerprint(zone: u16, t: &Tuple, start_ns: Option<u64>) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&zone.to_be_bytes());
    for addr in [t.src, t.dst] {
        match addr {
            IpAddr::V4(a) => eat(&a.octets()),
            IpAddr::V6(a) => eat(&a.octets()),
        }
    }
    eat(&t.src_port.to_be_bytes());
    eat(&t.dst_port.to_be_bytes());
    eat(&[t.protocol]);
    if let Some(start) = start_ns {
        eat(&start.to_be_bytes());
    }
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn entry_size_is_bounded() {
        assert_eq!(std::mem::size_of::<Attribution>(), 4);
        assert!(
            std::mem::size_of::<FlowEntry>() <= 40,
            "{}",
            std::mem::size_of::<FlowEntry>()
        );
        let slot = std::mem::size_of::<(FlowKey, FlowEntry)>();
        assert!(slot <= 48, "{slot}");
        // hashbrown: one control byte per bucket, at most 7/8 of the
        // buckets used, bucket count a power of two. Right after the table
        // doubles it is 7/16 full: the worst case per live flow.
        let worst = (slot + 1) * 16 / 7;
        assert!(worst <= 128, "{worst} bytes per flow at worst");
    }

    #[test]
    fn flow_key_hashes_spread_over_bucket_bits_and_control_bits() {
        use std::hash::BuildHasher;
        let hash = FlowKeyHash::default();
        // Keys as the kernel makes them: one tuple hash, ids that differ
        // in a few bits only.
        let keys: Vec<u64> = (0..65_536u64)
            .map(|id| (0xdead_beef << 32) | (id * 8))
            .collect();
        let hashes: Vec<u64> = keys.iter().map(|k| hash.hash_one(k)).collect();
        // The bucket index (low bits) spreads like a random function's: 65536
        // keys over 65536 buckets fill 1 - 1/e = 63% of them (ids used as
        // they are would fill an eighth).
        let low: HashSet<u64> = hashes.iter().map(|h| h & 0xffff).collect();
        assert!(low.len() > keys.len() * 6 / 10, "{} buckets", low.len());
        // ...and the 7 control bits (the top ones) take every value.
        let top: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(top.len(), 128);
    }

    #[test]
    fn entry_bytes_per_flow_measured_from_capacity() {
        let mut m: HashMap<FlowKey, FlowEntry> = HashMap::new();
        let e = FlowEntry {
            attributed: [0; 4],
            enis: Attribution {
                inbound: None,
                outbound: None,
            },
            epoch: 0,
        };
        for n in [10_000u64, 57_345, 100_000] {
            m.clear();
            for k in 0..n {
                m.insert(k, e);
            }
            let buckets = (m.capacity() * 8 / 7).next_power_of_two();
            let bytes = buckets * (std::mem::size_of::<(FlowKey, FlowEntry)>() + 1);
            assert!(
                bytes as u64 / n <= 128,
                "{n} flows: {} bytes each",
                bytes as u64 / n
            );
        }
    }
}
