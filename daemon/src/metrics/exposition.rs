//! The Prometheus text exposition format (version 0.0.4): `# HELP` and
//! `# TYPE` per family, then its samples. Names follow Prometheus'
//! conventions: `flowlogd_` prefix, counters end in `_total`, base units
//! (seconds, bytes) in the name; labels `eni`, `sink`, `flow_log`.

use std::fmt::{Display, Write as _};

use super::snapshot::{EnforcementCounters, Snapshot};
use crate::sinks::SinkMetrics;

/// The metrics page for `snapshot`, with `sinks` read from its probes.
pub fn render(snapshot: &Snapshot, sinks: &[SinkMetrics]) -> String {
    let mut w = Writer::default();
    let c = &snapshot.counters;

    w.family(
        "flowlogd_build_info",
        "gauge",
        "The running flowlogd's version (always 1).",
    );
    w.sample(
        "flowlogd_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    w.gauge(
        "flowlogd_snapshot_timestamp_seconds",
        "When the capture loop published the values on this page (Unix seconds).",
        snapshot.taken_unix,
    );

    w.counter(
        "flowlogd_conntrack_events_total",
        "Conntrack events read from the kernel.",
        c.conntrack_events,
    );
    w.counter(
        "flowlogd_conntrack_overruns_total",
        "Conntrack event socket overruns (ENOBUFS): events the kernel could not deliver.",
        c.conntrack_overruns,
    );
    w.counter(
        "flowlogd_conntrack_malformed_messages_total",
        "Conntrack event messages and dump lines that could not be parsed, skipped.",
        c.conntrack_malformed,
    );
    w.counter(
        "flowlogd_conntrack_resyncs_total",
        "Conntrack table dumps made to resynchronise after an overrun.",
        c.conntrack_resyncs,
    );
    w.counter(
        "flowlogd_conntrack_dumps_interrupted_total",
        "Conntrack table dumps interrupted by a table resize.",
        c.conntrack_dumps_interrupted,
    );
    w.counter(
        "flowlogd_route_overruns_total",
        "rtnetlink socket overruns (interfaces and addresses were re-read).",
        c.route_overruns,
    );
    w.family(
        "flowlogd_netlink_foreign_messages_total",
        "counter",
        "Netlink datagrams sent by other processes rather than the kernel, ignored.",
    );
    for (socket, n) in [
        ("conntrack", c.foreign_conntrack),
        ("nflog", c.foreign_nflog),
        ("route", c.foreign_route),
    ] {
        w.sample(
            "flowlogd_netlink_foreign_messages_total",
            &[("socket", socket)],
            n,
        );
    }

    if let Some(n) = &snapshot.nflog {
        w.counter(
            "flowlogd_nflog_packets_total",
            "Dropped packets read from NFLOG.",
            n.packets,
        );
        w.counter(
            "flowlogd_nflog_overruns_total",
            "NFLOG socket overruns (ENOBUFS): logged packets the kernel could not deliver.",
            n.overruns,
        );
        w.counter(
            "flowlogd_nflog_sequence_gaps_total",
            "NFLOG sequence numbers missing: logged packets lost on the way.",
            n.sequence_gaps,
        );
        w.counter(
            "flowlogd_nflog_malformed_messages_total",
            "NFLOG messages that could not be parsed, skipped.",
            n.malformed,
        );
        w.family(
            "flowlogd_nflog_ignored_packets_total",
            "counter",
            "NFLOG packets read but not counted as REJECT records, by reason.",
        );
        for (reason, v) in [
            ("foreign_prefix", n.foreign_prefix),
            ("not_on_an_eni", n.not_on_an_eni),
            ("bad_headers", n.bad_headers),
        ] {
            w.sample(
                "flowlogd_nflog_ignored_packets_total",
                &[("reason", reason)],
                v,
            );
        }
    }

    if let Some(f) = &snapshot.tcp_flags {
        w.counter(
            "flowlogd_tcp_flags_packets_total",
            "TCP control packets (SYN, FIN, RST) read from the tcp-flags NFLOG group.",
            f.packets,
        );
        w.family(
            "flowlogd_tcp_flags_ignored_packets_total",
            "counter",
            "tcp-flags packets whose flags went to no record, by reason (nat_unplaced and bad_headers mark windows SKIPDATA).",
        );
        for (reason, v) in [
            ("not_on_an_eni", f.not_on_an_eni),
            ("nat_unplaced", f.nat_unplaced),
            ("bad_headers", f.bad_headers),
        ] {
            w.sample(
                "flowlogd_tcp_flags_ignored_packets_total",
                &[("reason", reason)],
                v,
            );
        }
    }

    if let Some(e) = &snapshot.enforcement {
        write_enforcement(&mut w, e);
    }

    w.counter(
        "flowlogd_lost_connections_total",
        "Connections that vanished without a DESTROY event: their last counters were lost.",
        c.lost_connections,
    );
    w.counter(
        "flowlogd_revived_connections_total",
        "Connections judged lost that a later dump listed again.",
        c.revived_connections,
    );
    w.counter(
        "flowlogd_flow_table_full_drops_total",
        "Connections not tracked because the flow table was at daemon.max_flows.",
        c.table_full_drops,
    );
    w.counter(
        "flowlogd_conntrack_anomalies_total",
        "Conntrack counters that went backwards or did not fit what was attributed.",
        c.anomalies,
    );
    w.gauge(
        "flowlogd_flow_table_entries",
        "Live connections in the flow table.",
        c.flow_entries,
    );
    w.gauge(
        "flowlogd_flow_table_bytes",
        "Memory of the flow table.",
        c.flow_table_bytes,
    );
    w.gauge(
        "flowlogd_window_sums_bytes",
        "Memory of the open window's sums (bounded by daemon.window_memory_bytes).",
        c.window_sums_bytes,
    );
    w.gauge(
        "flowlogd_window_start_timestamp_seconds",
        "Start of the open capture window (Unix seconds).",
        snapshot.window_start,
    );
    w.gauge(
        "flowlogd_window_end_timestamp_seconds",
        "End of the open capture window (Unix seconds).",
        snapshot.window_end,
    );

    let out = &snapshot.output;
    w.counter(
        "flowlogd_windows_closed_total",
        "Capture windows closed and handed to the sinks.",
        out.windows_closed,
    );
    w.family(
        "flowlogd_window_close_duration_seconds",
        "histogram",
        "Time from a window's end to its last record handed to the sinks.",
    );
    for (le, n) in out.close_seconds.cumulative() {
        let le = le.map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
        w.sample(
            "flowlogd_window_close_duration_seconds_bucket",
            &[("le", &le)],
            n,
        );
    }
    w.sample(
        "flowlogd_window_close_duration_seconds_sum",
        &[],
        out.close_seconds.sum,
    );
    w.sample(
        "flowlogd_window_close_duration_seconds_count",
        &[],
        out.close_seconds.count,
    );
    w.family(
        "flowlogd_skipdata_windows_total",
        "counter",
        "Windows whose records for an ENI were incomplete (SKIPDATA), per ENI.",
    );
    for s in &out.skipdata {
        w.sample(
            "flowlogd_skipdata_windows_total",
            &[("eni", &s.eni)],
            s.windows,
        );
    }
    w.family(
        "flowlogd_flow_log_records_total",
        "counter",
        "Records a flow log instance emitted to its sinks, by log status and action.",
    );
    for f in &out.flow_logs {
        for (status, action, n) in [
            ("OK", "ACCEPT", f.accept),
            ("OK", "REJECT", f.reject),
            ("NODATA", "-", f.nodata),
            ("SKIPDATA", "-", f.skipdata),
        ] {
            w.sample(
                "flowlogd_flow_log_records_total",
                &[
                    ("flow_log", &f.name),
                    ("log_status", status),
                    ("action", action),
                ],
                n,
            );
        }
    }

    render_sinks(&mut w, sinks);
    w.out
}

fn render_sinks(w: &mut Writer, sinks: &[SinkMetrics]) {
    type Field = fn(&SinkMetrics) -> u64;
    let families: [(&str, &str, &str, Field); 7] = [
        (
            "flowlogd_sink_queued_records",
            "gauge",
            "Records in the sink's memory queue.",
            |m| m.queued_records,
        ),
        (
            "flowlogd_sink_delivered_records_total",
            "counter",
            "Records the sink's plugin acknowledged as delivered.",
            |m| m.stats.delivered,
        ),
        (
            "flowlogd_sink_retries_total",
            "counter",
            "Writes the sink's plugin answered with RETRY.",
            |m| m.stats.retries,
        ),
        (
            "flowlogd_sink_rejected_records_total",
            "counter",
            "Records the sink's plugin rejected (not delivered, not retried).",
            |m| m.stats.rejected,
        ),
        (
            "flowlogd_sink_spooled_records_total",
            "counter",
            "Records written to the sink's spool on disk.",
            |m| m.stats.spooled,
        ),
        (
            "flowlogd_sink_spool_records",
            "gauge",
            "Records waiting in the sink's spool.",
            |m| m.spool_records,
        ),
        (
            "flowlogd_sink_spool_bytes",
            "gauge",
            "Size of the sink's spool on disk.",
            |m| m.spool_bytes,
        ),
    ];
    for (name, kind, help, field) in families {
        w.family(name, kind, help);
        for m in sinks {
            w.sample(name, &[("sink", &m.stats.name)], field(m));
        }
    }
    w.family(
        "flowlogd_sink_dropped_records_total",
        "counter",
        "Records the sink will never get, by reason: its queue was full without a spool, its spool was full or \
         failing, or spooled batches no longer checked out.",
    );
    for m in sinks {
        for (reason, n) in [
            ("queue_full", m.stats.dropped_queue_full),
            ("spool_full", m.stats.dropped_spool_full),
            ("spool_corrupt", m.stats.spool_lost),
        ] {
            w.sample(
                "flowlogd_sink_dropped_records_total",
                &[("sink", &m.stats.name), ("reason", reason)],
                n,
            );
        }
    }
    w.family(
        "flowlogd_sink_last_error_timestamp_seconds",
        "gauge",
        "When the sink's plugin last failed a write (Unix seconds); absent if it never did.",
    );
    for m in sinks {
        if let Some(t) = m.last_error_unix {
            w.sample(
                "flowlogd_sink_last_error_timestamp_seconds",
                &[("sink", &m.stats.name)],
                t,
            );
        }
    }
}

#[derive(Default)]
struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label_value(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }
}

/// A label value as the format wants it: `\`, `"` and newline escaped.
fn escape_label_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Help text: `\` and newline escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The security groups' queue (issue #16).
fn write_enforcement(w: &mut Writer, e: &EnforcementCounters) {
    w.counter(
        "flowlogd_sg_queue_packets_total",
        "First packets of new connections read from the security groups' NFQUEUE.",
        e.packets,
    );
    w.family(
        "flowlogd_sg_verdicts_total",
        "counter",
        "Verdicts on queued packets, by action (accept: by a rule or the egress default; drop: REJECT records).",
    );
    for (action, v) in [("accept", e.accepted), ("drop", e.dropped)] {
        w.sample("flowlogd_sg_verdicts_total", &[("action", action)], v);
    }
    w.family(
        "flowlogd_sg_undecided_packets_total",
        "counter",
        "Queued packets answered without the policy, by reason (not_covered: accepted; unreadable: dropped).",
    );
    for (reason, v) in [("not_covered", e.not_covered), ("unreadable", e.unreadable)] {
        w.sample(
            "flowlogd_sg_undecided_packets_total",
            &[("reason", reason)],
            v,
        );
    }
    w.counter(
        "flowlogd_sg_verdict_errors_total",
        "Verdicts the kernel did not take (the packet then waits out the queue).",
        e.verdict_errors,
    );
    w.family(
        "flowlogd_sg_queue_overruns_total",
        "counter",
        "Packets the kernel could not queue to the daemon (dropped, or passed with on_daemon_down = \"accept\"), by \
         reason: queue_full (queue_dropped) and socket_full (user_dropped) of /proc/net/netfilter/nfnetlink_queue.",
    );
    for (reason, v) in [("queue_full", e.queue_full), ("socket_full", e.socket_full)] {
        w.sample("flowlogd_sg_queue_overruns_total", &[("reason", reason)], v);
    }
    w.gauge(
        "flowlogd_sg_queue_waiting",
        "Packets waiting in the queue for a verdict at the last publish.",
        e.waiting,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::snapshot::{
        FlowLogRecords, LoopCounters, NflogCounters, TcpFlagsCounters, WindowOutput,
    };
    use crate::sinks::SinkStats;

    #[test]
    fn label_values_are_escaped_as_the_format_says() {
        assert_eq!(escape_label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label_value("two\nlines"), "two\\nlines");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
        let mut w = Writer::default();
        w.sample("m_total", &[("sink", "x\"y"), ("reason", "r")], 3);
        assert_eq!(w.out, "m_total{sink=\"x\\\"y\",reason=\"r\"} 3\n");
    }

    #[test]
    fn a_page_has_every_family_once_and_the_values_it_was_given() {
        let mut output = WindowOutput::default();
        output.window_closed(std::time::Duration::from_millis(30));
        output.flow_logs.push(FlowLogRecords {
            name: "all".into(),
            accept: 4,
            reject: 2,
            nodata: 1,
            skipdata: 0,
        });
        let snapshot = Snapshot {
            taken_unix: 1_700_000_000.25,
            counters: LoopCounters {
                conntrack_events: 17,
                flow_entries: 3,
                ..LoopCounters::default()
            },
            nflog: Some(NflogCounters {
                packets: 5,
                foreign_prefix: 1,
                ..NflogCounters::default()
            }),
            tcp_flags: Some(TcpFlagsCounters {
                packets: 9,
                nat_unplaced: 2,
                ..TcpFlagsCounters::default()
            }),
            enforcement: Some(EnforcementCounters {
                packets: 12,
                accepted: 7,
                dropped: 4,
                not_covered: 1,
                queue_full: 3,
                waiting: 2,
                ..EnforcementCounters::default()
            }),
            output,
            window_start: 1_700_000_000,
            window_end: 1_700_000_600,
            sinks: Vec::new(),
            ..Snapshot::default()
        };
        let sinks = [SinkMetrics {
            stats: SinkStats {
                name: "out".into(),
                delivered: 7,
                ..SinkStats::default()
            },
            last_error_unix: Some(1_700_000_001),
            ..SinkMetrics::default()
        }];
        let page = render(&snapshot, &sinks);
        for line in [
            "flowlogd_conntrack_events_total 17",
            "flowlogd_flow_table_entries 3",
            "flowlogd_nflog_packets_total 5",
            "flowlogd_nflog_ignored_packets_total{reason=\"foreign_prefix\"} 1",
            "flowlogd_tcp_flags_packets_total 9",
            "flowlogd_tcp_flags_ignored_packets_total{reason=\"nat_unplaced\"} 2",
            "flowlogd_sg_queue_packets_total 12",
            "flowlogd_sg_verdicts_total{action=\"accept\"} 7",
            "flowlogd_sg_verdicts_total{action=\"drop\"} 4",
            "flowlogd_sg_undecided_packets_total{reason=\"not_covered\"} 1",
            "flowlogd_sg_queue_overruns_total{reason=\"queue_full\"} 3",
            "flowlogd_sg_queue_overruns_total{reason=\"socket_full\"} 0",
            "flowlogd_sg_queue_waiting 2",
            "flowlogd_windows_closed_total 1",
            "flowlogd_window_close_duration_seconds_bucket{le=\"0.025\"} 0",
            "flowlogd_window_close_duration_seconds_bucket{le=\"0.05\"} 1",
            "flowlogd_window_close_duration_seconds_bucket{le=\"+Inf\"} 1",
            "flowlogd_window_close_duration_seconds_count 1",
            "flowlogd_flow_log_records_total{flow_log=\"all\",log_status=\"OK\",action=\"ACCEPT\"} 4",
            "flowlogd_flow_log_records_total{flow_log=\"all\",log_status=\"OK\",action=\"REJECT\"} 2",
            "flowlogd_flow_log_records_total{flow_log=\"all\",log_status=\"NODATA\",action=\"-\"} 1",
            "flowlogd_sink_delivered_records_total{sink=\"out\"} 7",
            "flowlogd_sink_last_error_timestamp_seconds{sink=\"out\"} 1700000001",
            "flowlogd_snapshot_timestamp_seconds 1700000000.25",
        ] {
            assert_eq!(
                page.lines().filter(|l| *l == line).count(),
                1,
                "{line} in\n{page}"
            );
        }
        let types: Vec<&str> = page.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a family twice:\n{page}");
        // Every sample belongs to the family declared last.
        let mut family = "";
        for line in page.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                family = t.split(' ').next().unwrap();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(family), "{line} after # TYPE {family}");
            }
        }
    }
}
