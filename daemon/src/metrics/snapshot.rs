//! The snapshot the capture loop publishes, and the counts of what closed
//! windows produced that it keeps for it.
//!
//! Why a published copy rather than atomics the loop updates in place: the
//! loop's counters are plain integers in structs the hot path owns (drain
//! statistics, the flow table's); making them atomics would put a locked
//! instruction on every event and spread metrics through the capture code.
//! A copy every [`PUBLISH_INTERVAL`] costs the loop a few hundred bytes of
//! copying and one uncontended lock for a pointer swap, and a scrape sees
//! one consistent moment (the counters of a window's log line together).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowlogd_plugin_api::{Action, FlowRecord, LogStatus};

use crate::config::Config;
use crate::control::LoopView;
use crate::instances::WindowChunk;
use crate::sinks::SinkProbe;

/// How often a busy loop publishes: scrapes come every few seconds at the
/// most, so fresher values would be read by nobody.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(500);

/// Upper bounds (seconds) of the window close duration histogram: a small
/// VM closes in milliseconds, a million flows take seconds.
pub const CLOSE_SECONDS_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// What the loop knew at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Unix seconds (with fraction) of the copy.
    pub taken_unix: f64,
    pub counters: LoopCounters,
    /// `None` without NFLOG groups.
    pub nflog: Option<NflogCounters>,
    /// `None` unless a sink's field list names tcp-flags.
    pub tcp_flags: Option<TcpFlagsCounters>,
    /// The security groups' queue, when the config has groups.
    pub enforcement: Option<EnforcementCounters>,
    pub output: WindowOutput,
    /// The open window's bounds, Unix seconds.
    pub window_start: i64,
    pub window_end: i64,
    /// The sinks running now; a scrape reads their counters live.
    pub sinks: Vec<SinkProbe>,
    /// What `flowlogd status` and `top` show besides the counters.
    pub view: LoopView,
}

/// The loop's counters since start (reloads included) and its gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopCounters {
    /// Conntrack event messages parsed into entries.
    pub conntrack_events: u64,
    pub conntrack_overruns: u64,
    /// Malformed event messages and dump lines.
    pub conntrack_malformed: u64,
    /// Table dumps after an overrun.
    pub conntrack_resyncs: u64,
    pub conntrack_dumps_interrupted: u64,
    /// Datagrams from other processes, ignored, per socket.
    pub foreign_conntrack: u64,
    pub foreign_nflog: u64,
    pub foreign_route: u64,
    pub route_overruns: u64,
    /// Connections whose DESTROY was never seen (their last counters lost).
    pub lost_connections: u64,
    pub revived_connections: u64,
    pub table_full_drops: u64,
    pub anomalies: u64,
    /// Live connections in the flow table, and its memory.
    pub flow_entries: u64,
    pub flow_table_bytes: u64,
    /// Memory of the open window's sums.
    pub window_sums_bytes: u64,
}

/// NFLOG's counters, when NFLOG groups are configured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NflogCounters {
    pub packets: u64,
    pub overruns: u64,
    pub sequence_gaps: u64,
    pub malformed: u64,
    pub foreign_prefix: u64,
    pub not_on_an_eni: u64,
    pub bad_headers: u64,
}

/// The tcp-flags group's counters (`tcp_flags::TcpFlagsStats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TcpFlagsCounters {
    /// Control packets read from the group.
    pub packets: u64,
    pub not_on_an_eni: u64,
    pub nat_unplaced: u64,
    pub bad_headers: u64,
}

/// The security groups' queue: the loop's verdicts and the kernel's
/// counters of the queue (`/proc/net/netfilter/nfnetlink_queue`, read at
/// each publish).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnforcementCounters {
    /// Packets read from the queue.
    pub packets: u64,
    pub accepted: u64,
    pub dropped: u64,
    /// Accepted without a decision: not on a covered ENI.
    pub not_covered: u64,
    /// Dropped without a decision: unreadable headers.
    pub unreadable: u64,
    pub verdict_errors: u64,
    /// The kernel's: dropped (or passed, with bypass) as the queue was
    /// full, and as our socket's buffer was full; waiting now.
    pub queue_full: u64,
    pub socket_full: u64,
    pub waiting: u64,
}

/// What closed windows (and early emits) produced, counted by the loop as
/// it hands their records to the sinks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowOutput {
    pub windows_closed: u64,
    pub close_seconds: Histogram,
    /// Per flow log instance, by name: reloads keep a name's counts.
    pub flow_logs: Vec<FlowLogRecords>,
    /// Per ENI id: windows that said SKIPDATA.
    pub skipdata: Vec<EniSkips>,
}

/// One flow log instance's records, by what they say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowLogRecords {
    pub name: String,
    pub accept: u64,
    pub reject: u64,
    pub nodata: u64,
    pub skipdata: u64,
}

impl FlowLogRecords {
    pub fn total(&self) -> u64 {
        self.accept + self.reject + self.nodata + self.skipdata
    }
}

/// One ENI's SKIPDATA windows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EniSkips {
    pub eni: String,
    pub windows: u64,
    /// Start of the last window counted: an ENI's SKIPDATA record goes to
    /// every instance capturing it, and is one window.
    last_start: i64,
}

/// A Prometheus histogram over [`CLOSE_SECONDS_BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Per bucket, the observations at or below its bound (not cumulative).
    pub buckets: [u64; CLOSE_SECONDS_BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        if let Some(i) = CLOSE_SECONDS_BUCKETS.iter().position(|&b| seconds <= b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// Cumulative counts per bucket bound, then `+Inf` (the count).
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<f64>, u64)> + '_ {
        let mut running = 0;
        CLOSE_SECONDS_BUCKETS
            .iter()
            .zip(self.buckets)
            .map(move |(&bound, n)| {
                running += n;
                (Some(bound), running)
            })
            .chain(std::iter::once((None, self.count)))
    }
}

impl WindowOutput {
    /// Counts a chunk's records as they go to the sinks: per instance (by
    /// its name in `config`) by action and status, and SKIPDATA windows
    /// per ENI. A walk over the chunk's records, which were just made.
    pub fn count_chunk(&mut self, config: &Config, chunk: &WindowChunk) {
        for (instance, records) in &chunk.instances {
            let Some(fl) = config.flow_logs.get(*instance) else {
                continue;
            };
            let i = match self.flow_logs.iter().position(|f| f.name == fl.name) {
                Some(i) => i,
                None => {
                    self.flow_logs.push(FlowLogRecords {
                        name: fl.name.clone(),
                        ..FlowLogRecords::default()
                    });
                    self.flow_logs.len() - 1
                }
            };
            for r in records.iter() {
                self.count_record(i, r);
            }
        }
    }

    fn count_record(&mut self, instance: usize, r: &FlowRecord) {
        let counts = &mut self.flow_logs[instance];
        match (&r.flow, r.log_status) {
            (Some(f), _) if f.action == Action::Accept => counts.accept += 1,
            (Some(_), _) => counts.reject += 1,
            (None, LogStatus::SkipData) => {
                counts.skipdata += 1;
                self.count_skip(&r.eni.eni_id, r.start);
            }
            (None, _) => counts.nodata += 1,
        }
    }

    fn count_skip(&mut self, eni: &str, start: i64) {
        match self.skipdata.iter_mut().find(|s| s.eni == eni) {
            Some(s) if s.last_start == start => {}
            Some(s) => {
                s.windows += 1;
                s.last_start = start;
            }
            None => self.skipdata.push(EniSkips {
                eni: eni.to_owned(),
                windows: 1,
                last_start: start,
            }),
        }
    }

    /// A window's records are all out; its close took `took`.
    pub fn window_closed(&mut self, took: Duration) {
        self.windows_closed += 1;
        self.close_seconds.observe(took.as_secs_f64());
    }
}

/// Where the loop puts its latest snapshot and readers take it: the lock
/// is held for a pointer swap or an `Arc` clone, never while a snapshot is
/// built or rendered.
#[derive(Debug, Default)]
pub struct SnapshotCell {
    latest: Mutex<Arc<Snapshot>>,
}

impl SnapshotCell {
    pub fn publish(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        // A reader that panicked holding the lock left a valid Arc behind.
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        *latest = snapshot;
    }

    pub fn latest(&self) -> Arc<Snapshot> {
        Arc::clone(&self.latest.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use flowlogd_plugin_api::{Direction, EniIds, FlowFields};

    use super::*;

    const CONFIG: &str = r#"
[[eni]]
id = "eni-a"
interface = "eth0"
vswitch_id = "vsw-1"
vpc_id = "vpc-1"
vm_id = "i-1"
account_id = "123"

[[flow_log]]
name = "all"
resource_type = "vpc"
resource_id = "vpc-1"
sinks = ["out"]

[[flow_log]]
name = "rejects"
resource_type = "vpc"
resource_id = "vpc-1"
traffic = "reject"
sinks = ["out"]

[sinks.out]
plugin = "file"
path = "/tmp/out.log"
"#;

    fn record(eni: &str, start: i64, action: Option<Action>, status: LogStatus) -> FlowRecord {
        FlowRecord {
            eni: Arc::new(EniIds {
                eni_id: eni.into(),
                ..EniIds::default()
            }),
            flow: action.map(|action| FlowFields {
                srcaddr: [10, 0, 0, 1].into(),
                srcport: 1,
                dstaddr: [10, 0, 0, 2].into(),
                dstport: 2,
                protocol: 17,
                direction: Direction::In,
                packets: 1,
                bytes: 28,
                action,
                extras: Default::default(),
            }),
            start,
            end: start + 600,
            log_status: status,
            rule: None,
        }
    }

    #[test]
    fn records_are_counted_per_instance_and_skipdata_once_per_eni_window() {
        let config = crate::config::parse(Path::new("/etc/flowlogd.toml"), CONFIG).unwrap();
        let ok = Arc::new(vec![
            record("eni-a", 0, Some(Action::Accept), LogStatus::Ok),
            record("eni-a", 0, Some(Action::Accept), LogStatus::Ok),
            record("eni-a", 0, Some(Action::Reject), LogStatus::Ok),
        ]);
        let rejects = Arc::new(vec![record(
            "eni-a",
            0,
            Some(Action::Reject),
            LogStatus::Ok,
        )]);
        let skip = Arc::new(vec![
            record("eni-a", 0, None, LogStatus::SkipData),
            record("eni-b", 0, None, LogStatus::NoData),
        ]);
        let mut out = WindowOutput::default();
        out.count_chunk(
            &config,
            &WindowChunk {
                instances: vec![(0, ok), (1, rejects)],
            },
        );
        // The status chunk reaches both instances: eni-a's SKIPDATA is one
        // window, however many instances say it.
        out.count_chunk(
            &config,
            &WindowChunk {
                instances: vec![(0, Arc::clone(&skip)), (1, Arc::clone(&skip)), (7, skip)],
            },
        );
        let later = Arc::new(vec![record("eni-a", 600, None, LogStatus::SkipData)]);
        out.count_chunk(
            &config,
            &WindowChunk {
                instances: vec![(1, later)],
            },
        );
        let all = &out.flow_logs[0];
        assert_eq!(
            (
                all.name.as_str(),
                all.accept,
                all.reject,
                all.nodata,
                all.skipdata
            ),
            ("all", 2, 1, 1, 1)
        );
        let rejects = &out.flow_logs[1];
        assert_eq!(
            (
                rejects.name.as_str(),
                rejects.accept,
                rejects.reject,
                rejects.nodata,
                rejects.skipdata
            ),
            ("rejects", 0, 1, 1, 2)
        );
        assert_eq!(out.flow_logs.len(), 2);
        assert_eq!(out.skipdata.len(), 1);
        assert_eq!(
            (out.skipdata[0].eni.as_str(), out.skipdata[0].windows),
            ("eni-a", 2)
        );
    }

    #[test]
    fn the_histogram_counts_each_observation_in_its_bucket() {
        let mut h = Histogram::default();
        for s in [0.001, 0.005, 0.2, 61.0] {
            h.observe(s);
        }
        let cumulative: Vec<(Option<f64>, u64)> = h.cumulative().collect();
        assert_eq!(cumulative.len(), CLOSE_SECONDS_BUCKETS.len() + 1);
        assert_eq!(cumulative[0], (Some(0.005), 2));
        assert_eq!(cumulative[4], (Some(0.1), 2));
        assert_eq!(cumulative[5], (Some(0.25), 3));
        assert_eq!(cumulative[12], (Some(60.0), 3));
        assert_eq!(cumulative[13], (None, 4));
        assert!((h.sum - 61.206).abs() < 1e-9, "{}", h.sum);
    }
}
