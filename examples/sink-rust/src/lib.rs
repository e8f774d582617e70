//! An example of a custom flowlogd sink written in Rust.
//!
//! It writes one summary line per capture window and ENI: how many records,
//! packets and bytes were accepted and rejected, for a dashboard that does
//! not need every flow. Build it with `cargo build -p
//! flowlogd-sink-window-stats`, copy `libflowlogd_sink_window_stats.so` into
//! the plugin directory, and configure:
//!
//! ```toml
//! [sinks.stats]
//! plugin = "window-stats"
//! path = "/var/log/flowlogd/window-stats.log"
//! ```
//!
//! The whole contract is the `Sink` trait and the `export_sink!` line at the
//! bottom; the macro catches panics at the C boundary.

use std::collections::BTreeMap;
use std::io::Write;

use flowlogd_plugin_api::{
    Action, FlushFlags, Host, LogStatus, Options, RecordView, Sink, SinkError,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsOptions {
    /// Where the summary lines go (appended).
    path: String,
}

#[derive(Default)]
struct Totals {
    records: u64,
    accept_packets: u64,
    accept_bytes: u64,
    reject_packets: u64,
    reject_bytes: u64,
    nodata: bool,
    skipdata: bool,
}

/// Sums records by (window start, window end, ENI) until a window closes.
struct WindowStats {
    path: String,
    totals: BTreeMap<(i64, i64, String), Totals>,
}

fn validate(options: &Options) -> Result<StatsOptions, SinkError> {
    let o: StatsOptions = options.deserialize()?;
    if !o.path.starts_with('/') {
        return Err(SinkError::config(
            "path",
            format!("expected an absolute path, got \"{}\"", o.path),
        ));
    }
    Ok(o)
}

impl Sink for WindowStats {
    fn open(_host: &Host, options: &Options) -> Result<Self, SinkError> {
        let o = validate(options)?;
        Ok(WindowStats {
            path: o.path,
            totals: BTreeMap::new(),
        })
    }

    fn check(_host: &Host, options: &Options) -> Result<(), SinkError> {
        validate(options).map(|_| ())
    }

    fn write(&mut self, records: &[RecordView<'_>]) -> Result<(), SinkError> {
        for r in records {
            let t = self
                .totals
                .entry((r.start(), r.end(), r.eni_id().to_owned()))
                .or_default();
            t.records += 1;
            match r.log_status() {
                LogStatus::NoData => t.nodata = true,
                LogStatus::SkipData => t.skipdata = true,
                LogStatus::Ok => {}
            }
            if let Some(f) = r.flow() {
                match f.action {
                    Action::Accept => {
                        t.accept_packets += f.packets;
                        t.accept_bytes += f.bytes;
                    }
                    Action::Reject => {
                        t.reject_packets += f.packets;
                        t.reject_bytes += f.bytes;
                    }
                }
            }
        }
        Ok(())
    }

    /// At a window's end, write the summaries and forget them.
    fn flush(&mut self, flags: FlushFlags) -> Result<(), SinkError> {
        if !flags.window_end || self.totals.is_empty() {
            return Ok(());
        }
        let mut out = String::new();
        for ((start, end, eni), t) in &self.totals {
            out.push_str(&format!(
                "{start} {end} {eni} records={} accept_packets={} accept_bytes={} reject_packets={} \
                 reject_bytes={}{}{}\n",
                t.records,
                t.accept_packets,
                t.accept_bytes,
                t.reject_packets,
                t.reject_bytes,
                if t.nodata { " NODATA" } else { "" },
                if t.skipdata { " SKIPDATA" } else { "" },
            ));
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| SinkError::retry(format!("{}: {e}", self.path)))?;
        f.write_all(out.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| SinkError::retry(format!("{}: {e}", self.path)))?;
        // Cleared only once written: a RETRY keeps the totals for next time.
        self.totals.clear();
        Ok(())
    }
}

flowlogd_plugin_api::export_sink!(WindowStats, "window-stats");
