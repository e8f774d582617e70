//! The control socket's answers, as JSON: built by the server thread from
//! the latest snapshot (and the sinks' counters, read from their atomics),
//! read back by the client. `status --json` prints the status answer as
//! it came.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::view::{EniStatus, TopView};
use crate::metrics::Snapshot;
use crate::sinks::SinkMetrics;

/// Bumped when a field changes meaning or goes away (fields may be added).
pub const PROTOCOL_VERSION: u32 = 1;

/// What `flowlogd status` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    pub protocol: u32,
    pub version: String,
    pub pid: u32,
    /// When the daemon started, Unix seconds, and how long ago.
    pub started_unix: i64,
    pub uptime_secs: i64,
    /// When the daemon answered, Unix seconds.
    pub now_unix: i64,
    /// When the loop published what this says, Unix seconds (an idle
    /// loop publishes nothing new: then it is older than `now_unix`).
    pub snapshot_unix: f64,
    pub config: ConfigStatus,
    pub enis: Vec<EniStatus>,
    pub window: WindowStatus,
    pub sinks: Vec<SinkStatus>,
    pub flow_logs: Vec<FlowLogStatus>,
    pub loss: LossCounters,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigStatus {
    pub path: PathBuf,
    pub loaded_unix: i64,
}

/// The open window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowStatus {
    pub start_unix: i64,
    pub end_unix: i64,
    /// Distinct records summed so far.
    pub records: u64,
    /// Memory of its sums.
    pub sums_bytes: u64,
    /// Live connections in the flow table.
    pub connections: u64,
}

/// One sink: its queue, spool, what it delivered, its last error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkStatus {
    pub name: String,
    pub queued_records: u64,
    pub spool_records: u64,
    pub spool_bytes: u64,
    pub delivered: u64,
    pub retries: u64,
    pub rejected: u64,
    pub spooled: u64,
    /// Records dropped: queue full without a spool, or spool full.
    pub dropped: u64,
    /// Unix seconds of the last failed write, if any.
    pub last_error_unix: Option<i64>,
}

/// One flow log instance's records since start, by what they say.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowLogStatus {
    pub name: String,
    pub accept: u64,
    pub reject: u64,
    pub nodata: u64,
    pub skipdata: u64,
}

/// What was lost or could not be seen, since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossCounters {
    pub conntrack_overruns: u64,
    pub conntrack_malformed: u64,
    pub conntrack_resyncs: u64,
    pub lost_connections: u64,
    pub table_full_drops: u64,
    pub route_overruns: u64,
    pub nflog_overruns: u64,
    pub nflog_sequence_gaps: u64,
    pub nflog_malformed: u64,
    pub nflog_foreign_prefix: u64,
    /// Windows that said SKIPDATA, summed over ENIs.
    pub skipdata_windows: u64,
}

/// What `flowlogd top` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopReply {
    pub protocol: u32,
    /// When the daemon answered, and when the loop published the lists.
    pub now_unix: i64,
    pub snapshot_unix: f64,
    pub window_start_unix: i64,
    pub window_end_unix: i64,
    pub top: TopView,
}

/// The daemon's process, for `status`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Process {
    pub(super) pid: u32,
    pub(super) started_unix: i64,
}

impl StatusReply {
    pub(super) fn of(
        s: &Snapshot,
        sinks: &[SinkMetrics],
        process: Process,
        now: i64,
    ) -> StatusReply {
        let c = &s.counters;
        let nflog = s.nflog.clone().unwrap_or_default();
        StatusReply {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: process.pid,
            started_unix: process.started_unix,
            uptime_secs: now - process.started_unix,
            now_unix: now,
            snapshot_unix: s.taken_unix,
            config: ConfigStatus {
                path: s.view.config_path.clone(),
                loaded_unix: s.view.config_loaded_unix,
            },
            enis: s.view.enis.clone(),
            window: WindowStatus {
                start_unix: s.window_start,
                end_unix: s.window_end,
                records: s.view.window_records,
                sums_bytes: c.window_sums_bytes,
                connections: c.flow_entries,
            },
            sinks: sinks
                .iter()
                .map(|m| SinkStatus {
                    name: m.stats.name.clone(),
                    queued_records: m.queued_records,
                    spool_records: m.spool_records,
                    spool_bytes: m.spool_bytes,
                    delivered: m.stats.delivered,
                    retries: m.stats.retries,
                    rejected: m.stats.rejected,
                    spooled: m.stats.spooled,
                    dropped: m.stats.dropped_queue_full + m.stats.dropped_spool_full,
                    last_error_unix: m.last_error_unix,
                })
                .collect(),
            flow_logs: s
                .output
                .flow_logs
                .iter()
                .map(|f| FlowLogStatus {
                    name: f.name.clone(),
                    accept: f.accept,
                    reject: f.reject,
                    nodata: f.nodata,
                    skipdata: f.skipdata,
                })
                .collect(),
            loss: LossCounters {
                conntrack_overruns: c.conntrack_overruns,
                conntrack_malformed: c.conntrack_malformed,
                conntrack_resyncs: c.conntrack_resyncs,
                lost_connections: c.lost_connections,
                table_full_drops: c.table_full_drops,
                route_overruns: c.route_overruns,
                nflog_overruns: nflog.overruns,
                nflog_sequence_gaps: nflog.sequence_gaps,
                nflog_malformed: nflog.malformed,
                nflog_foreign_prefix: nflog.foreign_prefix,
                skipdata_windows: s.output.skipdata.iter().map(|e| e.windows).sum(),
            },
        }
    }
}

impl TopReply {
    pub(super) fn of(s: &Snapshot, now: i64) -> TopReply {
        TopReply {
            protocol: PROTOCOL_VERSION,
            now_unix: now,
            snapshot_unix: s.taken_unix,
            window_start_unix: s.window_start,
            window_end_unix: s.window_end,
            top: s.view.top.clone(),
        }
    }
}
