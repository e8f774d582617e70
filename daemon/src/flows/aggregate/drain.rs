//! A closed window's OK records (or sums emitted early), produced chunk
//! by chunk from its sums.

use std::collections::VecDeque;
use std::sync::Arc;

use flowlogd_plugin_api::{Action, EniIds, FlowExtras, FlowFields, FlowRecord, LogStatus};

use super::sum::RecordSum;
use super::tables::{SumItem, SumIter, SumTables};
use super::{CaptureWindow, Rules};
use crate::eni::EniIndex;
use crate::model::ipproto;

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
/// once: what is in flight is the closed window's sums (each table freed
/// as soon as its last OK record is out) and one chunk. OK records come in
/// the sums' hash order, which is not part of the format. Which flow log
/// instance gets which record, and the NODATA and SKIPDATA records, are
/// the instance stage's (`crate::instances`), from [`WindowDrain::enis`].
pub struct WindowDrain {
    pub(crate) window: CaptureWindow,
    /// Records kept back for ENIs still waiting for their metadata: they
    /// are emitted with the window in which the ids become known.
    pub(crate) held: usize,
    /// Held records given up because too many were held; their ENIs get
    /// SKIPDATA when their ids become known.
    pub(crate) held_dropped: usize,
    /// The tables not drained yet.
    tables: VecDeque<SumIter>,
    /// Unix seconds the sums' spans count from.
    pub(super) base: i64,
    /// The rules the sums name.
    rules: Rules,
    enis: Vec<EniWindow>,
    /// A close says NODATA and SKIPDATA; sums emitted early at the memory
    /// bound do not (the close of their window does).
    pub(super) with_statuses: bool,
    /// For a close: how many times the window's sums were emitted early at
    /// the memory bound. For such an early emit: which one it is (1, 2, ...).
    pub(crate) early_spills: u64,
    /// Records carry TCP flags (see `WindowAggregate::set_tcp_flags_capture`).
    pub(super) tcp_flags_on: bool,
    /// For a close: keys of accepted packets whose TCP flags found no
    /// ACCEPT record in the window.
    pub(super) tcp_flags_unmatched: u64,
    /// For a close: packets whose TCP flags were dropped at the memory bound.
    pub(super) tcp_flags_dropped: u64,
}

impl WindowDrain {
    /// A drain of `window`'s OK sums, for the views of its ENIs; nothing
    /// held, no early emits, NODATA and SKIPDATA at its end, spans from
    /// the window's start (callers change what differs).
    pub(super) fn of_sums(
        window: CaptureWindow,
        sums: SumTables,
        rules: Rules,
        enis: Vec<EniWindow>,
    ) -> WindowDrain {
        WindowDrain {
            window,
            held: 0,
            held_dropped: 0,
            tables: sums.into_iters().into(),
            base: window.start,
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
            let Some((rest, t, pkt, sum)) = self.next_sum(&wanted) else {
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
                extras: self.extras(t.protocol, pkt.unwrap_or((t.src, t.dst)), &sum),
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
        // Free a table as soon as it is drained, not at the next call.
        self.drop_drained();
        (!records.is_empty()).then_some(EniRecords { records, enis })
    }

    /// A record's fields beyond the 18: the packet's addresses behind NAT
    /// (`pkt`, the tuple's without NAT), its span within the window, and
    /// its TCP flags while capture is on (0 for other protocols).
    fn extras(
        &self,
        protocol: u8,
        (pkt_src, pkt_dst): (std::net::IpAddr, std::net::IpAddr),
        sum: &RecordSum,
    ) -> FlowExtras {
        let w = self.window;
        let (start, end) = sum.span.within(self.base, w.start, w.end);
        let tcp_flags = match protocol {
            ipproto::TCP => sum.tcp_flags(),
            _ => 0,
        };
        FlowExtras {
            pkt_srcaddr: Some(pkt_src),
            pkt_dstaddr: Some(pkt_dst),
            flow_start: Some(start),
            flow_end: Some(end),
            tcp_flags: self.tcp_flags_on.then_some(tcp_flags),
        }
    }

    fn drop_drained(&mut self) {
        while self.tables.front().is_some_and(|t| t.len() == 0) {
            self.tables.pop_front();
        }
    }

    /// Whether sums are left for [`WindowDrain::next_records`] (which may
    /// still find that no instance wants them).
    pub fn has_sums(&self) -> bool {
        !self.tables.is_empty()
    }

    /// Sums not turned into records yet.
    pub fn sums_left(&self) -> usize {
        self.tables.iter().map(|t| t.len()).sum()
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

    /// The next sum whose (ENI, action) is `wanted`.
    fn next_sum(&mut self, wanted: &impl Fn(EniIndex, Action) -> bool) -> Option<SumItem> {
        loop {
            let table = self.tables.front_mut()?;
            let Some(item) = table.next() else {
                // Frees the table now, not when the drain goes.
                self.tables.pop_front();
                continue;
            };
            let rest = item.0;
            let Some(eni) = self.enis.get_mut(rest.eni.get()) else {
                // Not this registry's ENI: no instance captures it.
                continue;
            };
            match rest.action() {
                Action::Accept => eni.had_accept = true,
                Action::Reject => eni.had_reject = true,
            }
            if wanted(rest.eni, rest.action()) {
                return Some(item);
            }
        }
    }
}
