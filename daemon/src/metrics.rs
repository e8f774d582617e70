//! Prometheus metrics: what the capture loop counted, served over HTTP by
//! a thread of its own.
//!
//! The loop never waits for a scrape and the server never reads the loop's
//! data: the loop copies its counters into a [`Snapshot`] and publishes it
//! ([`SnapshotCell`]) at most every [`PUBLISH_INTERVAL`] while it works and
//! at each window close; the server renders the latest one. The sinks'
//! counters are atomics their workers update anyway, so the snapshot holds
//! a handle to them ([`crate::sinks::SinkProbe`]) and a scrape reads them
//! as they are. A later control socket (`flowlogd status`) reads the same
//! cell.
//!
//! `snapshot` holds the plain data and the counts of what closed windows
//! produced, `exposition` writes the text format, `server` is the HTTP
//! endpoint.

mod exposition;
mod server;
mod snapshot;

pub use exposition::render;
pub(crate) use server::read_bounded;
pub use server::{MetricsServer, MAX_REQUEST_BYTES, REQUEST_TIMEOUT};
pub use snapshot::{
    EnforcementCounters, EniSkips, FlowLogRecords, Histogram, LoopCounters, NflogCounters,
    Snapshot, SnapshotCell, TcpFlagsCounters, WindowOutput, CLOSE_SECONDS_BUCKETS,
    PUBLISH_INTERVAL,
};
