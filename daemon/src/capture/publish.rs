//! The loop's side of metrics: it copies its counters into a
//! [`Snapshot`] and publishes it, at most every [`PUBLISH_INTERVAL`] while
//! it has work, and at once when a window's records are all out (so a
//! scrape after a window's log line sees that line's counters). It runs
//! whether metrics are on or not: the control socket reads the same cell.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::closer::WindowCloser;
use super::state::Capture;
use crate::control::LoopView;
use crate::metrics::{
    EnforcementCounters, LoopCounters, NflogCounters, Snapshot, SnapshotCell, TcpFlagsCounters,
    PUBLISH_INTERVAL,
};
use crate::tcp_flags::TcpFlagsCapture;

/// Publishes the loop's snapshots into the cell the metrics server and
/// the control socket read.
pub(super) struct MetricsPublisher {
    cell: Arc<SnapshotCell>,
    last: Instant,
    /// Windows closed at the last publish.
    windows_closed: u64,
    /// The loop did something since the last publish.
    dirty: bool,
}

impl MetricsPublisher {
    pub(super) fn new(cell: Arc<SnapshotCell>, capture: &Capture, closer: &WindowCloser) -> Self {
        let mut p = MetricsPublisher {
            cell,
            last: Instant::now(),
            windows_closed: 0,
            dirty: false,
        };
        p.publish(capture, closer);
        p
    }

    /// After a turn of the loop: publish if a window closed or the last
    /// copy is old enough; otherwise remember there is something to
    /// publish ([`Self::wait_at_most`]).
    pub(super) fn after_turn(&mut self, capture: &Capture, closer: &WindowCloser) {
        if closer.output().windows_closed != self.windows_closed
            || self.last.elapsed() >= PUBLISH_INTERVAL
        {
            self.publish(capture, closer);
        } else {
            self.dirty = true;
        }
    }

    /// How long the loop may sleep before the next publish is due: after
    /// a burst of events the last counts go out within the interval, not
    /// at the next window close.
    pub(super) fn wait_at_most(&self) -> Duration {
        if self.dirty {
            PUBLISH_INTERVAL.saturating_sub(self.last.elapsed())
        } else {
            Duration::MAX
        }
    }

    fn publish(&mut self, c: &Capture, closer: &WindowCloser) {
        let t = c.table.stats();
        let s = &c.stats;
        let counters = LoopCounters {
            conntrack_events: s.conntrack.entries,
            conntrack_overruns: s.conntrack.overruns,
            conntrack_malformed: s.conntrack.parse_errors + s.dump_parse_errors,
            conntrack_resyncs: s.resyncs,
            conntrack_dumps_interrupted: s.dumps_interrupted,
            foreign_conntrack: s.conntrack.foreign,
            foreign_nflog: s.nflog.foreign,
            foreign_route: s.route.foreign,
            route_overruns: s.route.overruns,
            lost_connections: t.lost_connections,
            revived_connections: t.revived,
            table_full_drops: t.table_full_drops,
            anomalies: t.anomalies,
            flow_entries: t.entries,
            flow_table_bytes: c.table.table_bytes() as u64,
            window_sums_bytes: c.table.sums_bytes() as u64,
        };
        let flags = c.tcp_flags.as_ref().map(TcpFlagsCapture::stats);
        let nflog = c.nflog.as_ref().map(|(_, rejects)| {
            let r = rejects.stats();
            NflogCounters {
                // The socket's packets, less the tcp-flags group's.
                packets: s
                    .nflog
                    .entries
                    .saturating_sub(flags.map_or(0, |f| f.packets)),
                overruns: s.nflog.overruns,
                sequence_gaps: s.nflog_sequence_gaps,
                malformed: s.nflog.parse_errors,
                foreign_prefix: r.foreign_prefix,
                not_on_an_eni: r.not_on_an_eni,
                bad_headers: r.bad_headers,
            }
        });
        let tcp_flags = flags.map(|f| TcpFlagsCounters {
            packets: f.packets,
            not_on_an_eni: f.not_on_an_eni,
            nat_unplaced: f.nat_unplaced,
            bad_headers: f.bad_headers,
        });
        let enforcement = c.enforcement.as_ref().map(|e| {
            let v = e.enforcer.stats();
            let k = e.enforcer.queue_counters().unwrap_or_default();
            EnforcementCounters {
                packets: v.packets,
                accepted: v.accepted,
                dropped: v.dropped,
                not_covered: v.not_covered,
                unreadable: v.unreadable,
                verdict_errors: v.verdict_errors,
                queue_full: k.queue_dropped,
                socket_full: k.user_dropped,
                waiting: k.waiting,
            }
        });
        let window = c.table.window();
        let output = closer.output().clone();
        self.windows_closed = output.windows_closed;
        self.cell.publish(Snapshot {
            taken_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            counters,
            nflog,
            tcp_flags,
            enforcement,
            output,
            window_start: window.start,
            window_end: window.end,
            sinks: c.dispatcher.probes(),
            view: LoopView::of(
                &c.config,
                c.config_loaded_unix,
                &c.registry,
                c.table.window_records(),
                &c.table.leaders(),
            ),
        });
        self.last = Instant::now();
        self.dirty = false;
    }
}
