//! One capture window's records: sums per (ENI, direction, action, 5-tuple),
//! the ENIs that lost data, and the routing of records to flow log
//! instances when the window closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;

use flowlogd_plugin_api::{Action, Direction, FlowFields, FlowRecord, LogStatus};

use super::window::CaptureWindow;
use crate::config::TrafficFilter;
use crate::eni::{EniIndex, EniRegistry};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_DCCP: u8 = 33;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

/// Most records held back for ENIs waiting for their metadata (a service
/// that stays down must not grow the daemon without bound): a window's
/// worth of a busy VM.
const MAX_HELD_RECORDS: usize = 1 << 18;

/// Whether `protocol` has ports. Conntrack keys ICMP and ICMPv6 by echo id
/// and type/code in the port fields; records show those as port 0.
pub fn has_ports(protocol: u8) -> bool {
    matches!(
        protocol,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_DCCP | IPPROTO_SCTP | IPPROTO_UDPLITE
    )
}

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

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RecordKey {
    eni: EniIndex,
    action: Action,
    direction: Direction,
    tuple: FlowTuple,
}

struct RecordSum {
    packets: u64,
    bytes: u64,
    rule: Option<Arc<str>>,
}

/// The records of one flow log instance for a closed window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRecords {
    /// Index into `config.flow_logs`.
    pub instance: usize,
    pub records: Vec<FlowRecord>,
}

/// What a closed window produced, per flow log instance in config order
/// (every instance is listed, possibly with no records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowRecords {
    pub window: CaptureWindow,
    pub instances: Vec<InstanceRecords>,
    /// Records kept back for ENIs still waiting for their metadata: they
    /// are emitted with the window in which the ids become known.
    pub held: usize,
    /// Held records given up because too many were held; their ENIs get
    /// SKIPDATA when their ids become known.
    pub held_dropped: usize,
}

impl WindowRecords {
    /// Total records over all instances.
    pub fn record_count(&self) -> usize {
        self.instances.iter().map(|i| i.records.len()).sum()
    }
}

/// The open window's sums and loss marks.
#[derive(Default)]
pub(super) struct WindowAggregate {
    sums: HashMap<RecordKey, RecordSum>,
    /// Per ENI: data was lost in this window.
    skipped: Vec<bool>,
    /// Data was lost for every ENI (an overrun whose ENIs are unknown).
    all_skipped: bool,
}

impl WindowAggregate {
    /// Adds traffic of one direction; no packets, no record.
    pub(super) fn add(
        &mut self,
        eni: EniIndex,
        direction: Direction,
        action: Action,
        tuple: FlowTuple,
        (packets, bytes): (u64, u64),
        rule: Option<&Arc<str>>,
    ) {
        if packets == 0 {
            return;
        }
        let key = RecordKey {
            eni,
            action,
            direction,
            tuple: tuple.for_record(),
        };
        let sum = self.sums.entry(key).or_insert(RecordSum {
            packets: 0,
            bytes: 0,
            rule: None,
        });
        sum.packets = sum.packets.saturating_add(packets);
        sum.bytes = sum.bytes.saturating_add(bytes);
        if sum.rule.is_none() {
            sum.rule = rule.cloned();
        }
    }

    pub(super) fn mark_skipped(&mut self, eni: EniIndex) {
        if self.skipped.len() <= eni.get() {
            self.skipped.resize(eni.get() + 1, false);
        }
        self.skipped[eni.get()] = true;
    }

    pub(super) fn mark_all_skipped(&mut self) {
        self.all_skipped = true;
    }

    /// Takes `other`'s sums and loss marks into this aggregate.
    pub(super) fn absorb(&mut self, other: WindowAggregate) {
        for (key, sum) in other.sums {
            let mine = self.sums.entry(key).or_insert(RecordSum {
                packets: 0,
                bytes: 0,
                rule: None,
            });
            mine.packets = mine.packets.saturating_add(sum.packets);
            mine.bytes = mine.bytes.saturating_add(sum.bytes);
            if mine.rule.is_none() {
                mine.rule = sum.rule;
            }
        }
        for (i, &skipped) in other.skipped.iter().enumerate() {
            if let (true, Some(eni)) = (skipped, EniIndex::new(i)) {
                self.mark_skipped(eni);
            }
        }
        self.all_skipped |= other.all_skipped;
    }

    /// Ends the window: builds its records and routes them to the flow log
    /// instances of `reg`, leaving the aggregate empty for the next window.
    pub(super) fn take_records(
        &mut self,
        reg: &EniRegistry,
        window: CaptureWindow,
    ) -> WindowRecords {
        let (held, mut sums): (Vec<_>, Vec<_>) =
            self.sums.drain().partition(|(k, _)| reg.is_held(k.eni));
        sums.sort_unstable_by_key(|s| s.0);
        // Don't keep a burst's capacity for the rest of the daemon's life.
        if self.sums.capacity() > 4 * sums.len().max(1024) {
            self.sums.shrink_to(sums.len());
        }
        let record = |eni: EniIndex,
                      flow: Option<FlowFields>,
                      log_status: LogStatus,
                      rule: Option<Arc<str>>| FlowRecord {
            eni: Arc::clone(reg.ids(eni)),
            flow,
            start: window.start,
            end: window.end,
            log_status,
            rule,
        };
        let ok: Vec<(EniIndex, FlowRecord)> = sums
            .into_iter()
            .map(|(k, s)| {
                let flow = FlowFields {
                    srcaddr: k.tuple.src,
                    srcport: k.tuple.src_port,
                    dstaddr: k.tuple.dst,
                    dstport: k.tuple.dst_port,
                    protocol: k.tuple.protocol,
                    direction: k.direction,
                    packets: s.packets,
                    bytes: s.bytes,
                    action: k.action,
                };
                (k.eni, record(k.eni, Some(flow), LogStatus::Ok, s.rule))
            })
            .collect();
        // ok is sorted by ENI: each ENI's records are one range of it.
        let mut ranges: Vec<Range<usize>> = vec![0..0; reg.len()];
        let mut i = 0;
        while i < ok.len() {
            let eni = ok[i].0;
            let j = i + ok[i..].iter().take_while(|(e, _)| *e == eni).count();
            if let Some(r) = ranges.get_mut(eni.get()) {
                *r = i..j;
            }
            i = j;
        }

        let mut instances = Vec::with_capacity(reg.instance_count());
        for instance in 0..reg.instance_count() {
            let filter = reg.traffic_of_instance(instance);
            let mut records = Vec::new();
            for &eni in reg.enis_of_instance(instance) {
                let existed = reg.existed_during(eni, window.start, window.end);
                let before = records.len();
                let range = ranges.get(eni.get()).cloned().unwrap_or(0..0);
                records.extend(
                    ok[range]
                        .iter()
                        .filter(|(_, r)| r.flow.is_some_and(|f| passes(filter, f.action)))
                        .map(|(_, r)| r.clone()),
                );
                let skipped = self.skipped.get(eni.get()).copied().unwrap_or(false)
                    || (self.all_skipped && existed);
                if skipped {
                    records.push(record(eni, None, LogStatus::SkipData, None));
                } else if records.len() == before && existed && window.end > window.start {
                    // Per instance: an ENI whose only traffic is filtered out
                    // of this instance is idle as far as its readers can tell.
                    // A window closed in the second it opened (SIGTERM or a
                    // reload right at a boundary) lasted no time: no NODATA.
                    records.push(record(eni, None, LogStatus::NoData, None));
                }
            }
            instances.push(InstanceRecords { instance, records });
        }
        // What held ENIs lost stays marked until their records go out.
        for (i, s) in self.skipped.iter_mut().enumerate() {
            *s = *s && EniIndex::new(i).is_some_and(|e| reg.is_held(e));
        }
        if std::mem::take(&mut self.all_skipped) {
            for eni in reg.indices().filter(|&e| reg.is_held(e)) {
                if reg.existed_during(eni, window.start, window.end) {
                    self.mark_skipped(eni);
                }
            }
        }
        let (held_count, mut held_dropped) = (held.len(), 0);
        if held_count > MAX_HELD_RECORDS {
            for (k, _) in &held {
                self.mark_skipped(k.eni);
            }
            held_dropped = held_count;
        } else {
            self.sums.extend(held);
        }
        WindowRecords {
            window,
            instances,
            held: held_count - held_dropped,
            held_dropped,
        }
    }
}

fn passes(filter: TrafficFilter, action: Action) -> bool {
    match filter {
        TrafficFilter::All => true,
        TrafficFilter::Accept => action == Action::Accept,
        TrafficFilter::Reject => action == Action::Reject,
    }
}
