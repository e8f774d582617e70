//! Restarts: the daemon's tracking table stays in place across a stop, so
//! traffic while no daemon runs is still counted (by the next run, from
//! the handoff); the first window after a start begins at the start time;
//! a start after an unclean stop (kill -9) marks its first window SKIPDATA
//! and says why; `flowlogd remove-tracking-table` is the way to remove the
//! table.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flowlogd_tests::netns::{unix_now, DaemonProcess, LineProcess, Netns};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");
/// UDP payload of each datagram; 128 bytes at the IP layer.
const PAYLOAD: u64 = 100;
const IP_BYTES: u64 = PAYLOAD + 8 + 20;
const SERVER_PORT: u16 = 5400;
const TIMEOUT: Duration = Duration::from_secs(10);
/// What the daemon logs when it finds an unclean stop.
const UNCLEAN: &str = "did not stop cleanly";

/// Two namespaces joined by a veth pair; the daemon runs in `a` and
/// captures `veth-a` as eni-a; `b` sends UDP to a sink in `a`.
struct Setup {
    tmp: TempDir,
    plugins: PathBuf,
    a: Netns,
    b: Netns,
    target: String,
    _server: LineProcess,
    flow: LineProcess,
    /// The first flow's source port.
    flow_port: u16,
}

impl Setup {
    fn new(label: &str) -> Setup {
        let Scenario {
            a,
            b,
            ea: a_end,
            tmp,
            plugins,
            ..
        } = Scenario::builder(label)
            .veth("veth-a", "veth-b", 43)
            .build();
        let target = format!("{}:{SERVER_PORT}", a_end.v4);
        let mut server = LineProcess::traffic(&a, TRAFFIC, &["udp-sink", &target]);
        server.expect_line("listening", TIMEOUT);
        let (flow, flow_port) = open_flow(&b, &target);
        Setup {
            tmp,
            plugins,
            a,
            b,
            target,
            _server: server,
            flow,
            flow_port,
        }
    }

    /// Another UDP flow to the sink (its own 5-tuple) and its source port.
    fn open_flow(&self) -> (LineProcess, u16) {
        open_flow(&self.b, &self.target)
    }

    /// A config for run `name`, whose records go to `<name>.jsonl`; every
    /// run shares the state directory (the handoff and the run marker).
    fn config(&self, name: &str) -> PathBuf {
        DaemonConfig::new(&self.plugins)
            // The shipped window length: a stop always falls inside a window.
            .window_secs(600)
            .eni("eni-a", "veth-a", "vpc-r")
            .flow_log(FlowLog::vpc("all", "vpc-r").sinks(&["out"]))
            .json_sink("out", &self.records_path(name))
            .write(&self.tmp.join(&format!("{name}.toml")))
    }

    fn records_path(&self, name: &str) -> PathBuf {
        self.tmp.join(&format!("{name}.jsonl"))
    }

    fn start(&self, name: &str) -> DaemonProcess {
        DaemonProcess::start(
            &self.a,
            &self.config(name),
            &self.tmp.join(&format!("{name}.log")),
        )
    }

    fn records(&self, name: &str) -> Vec<Value> {
        read_json_records(&self.records_path(name))
    }

    /// `k` datagrams on the first UDP flow.
    fn send(&mut self, k: u64) {
        send(&mut self.flow, k);
    }

    fn marker(&self) -> PathBuf {
        self.tmp.join("state/running")
    }

    fn table_present(&self) -> bool {
        self.a.nft_tables().iter().any(|t| t == "inet flowlogd")
    }

    /// The kernel's count of the original direction (b -> a) of the UDP
    /// flow from `sport`.
    fn kernel_packets(&self, sport: u16) -> (u64, u64) {
        let (entries, _) = self.a.settled_conntrack();
        let flows: Vec<_> = entries
            .iter()
            .filter(|e| e.protocol == 17 && e.orig.dport == SERVER_PORT && e.orig.sport == sport)
            .collect();
        assert_eq!(
            flows.len(),
            1,
            "one UDP conntrack entry from {sport}: {entries:#?}"
        );
        (flows[0].orig.packets, flows[0].orig.bytes)
    }

    fn remove_table(&self, config: &Path) -> std::process::Output {
        self.a
            .command(flowlogd_bin())
            .arg("remove-tracking-table")
            .arg("--config")
            .arg(config)
            .output()
            .expect("run flowlogd remove-tracking-table")
    }
}

/// A UDP flow from `ns` to `target` and its source port.
fn open_flow(ns: &Netns, target: &str) -> (LineProcess, u16) {
    let mut flow = LineProcess::traffic(ns, TRAFFIC, &["udp-flow", target, &PAYLOAD.to_string()]);
    let port = flow.expect_number("local", TIMEOUT);
    (flow, u16::try_from(port).expect("a port"))
}

/// `k` datagrams on `flow`.
fn send(flow: &mut LineProcess, k: u64) {
    flow.send_line(&format!("send {k}"));
    flow.expect_line(&format!("sent {k}"), TIMEOUT);
}

/// Packets and bytes of the OK UDP records arriving on eni-a.
fn udp_in(records: &[Value]) -> (u64, u64) {
    udp_in_where(records, |_| true)
}

/// The same for the flow from source port `sport`.
fn udp_in_from(records: &[Value], sport: u16) -> (u64, u64) {
    udp_in_where(records, |r| r["srcport"] == sport)
}

fn udp_in_where(records: &[Value], pick: impl Fn(&Value) -> bool) -> (u64, u64) {
    records
        .iter()
        .filter(|r| r["log-status"] == "OK" && r["direction"] == "in" && r["protocol"] == 17)
        .filter(|r| pick(r))
        .fold((0, 0), |(p, b), r| {
            (
                p + r["packets"].as_u64().unwrap(),
                b + r["bytes"].as_u64().unwrap(),
            )
        })
}

fn skipdata(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["log-status"] == "SKIPDATA")
        .collect()
}

/// The `start` or `end` of every record.
fn bound(records: &[Value], key: &str) -> Vec<i64> {
    records.iter().map(|r| r[key].as_i64().unwrap()).collect()
}

/// One UDP flow sends 100 datagrams while the first run captures, 100
/// while it handles its SIGTERM, 100 while no daemon runs and 100 under
/// the second run. The table stays, so the kernel counts all 400 on the
/// connection, and the records of both runs sum to exactly that: the
/// second run resumes from the handoff and counts the gap. Removing the
/// table at exit (the old behaviour) loses the gap's packets. The second
/// run's first window starts where the first run's last one ended, not at
/// the aligned boundary, so no two windows overlap, and a clean stop is
/// not reported as a loss. A second flow, created while no daemon runs,
/// sends 30 then and 20 under the second run: all 50 are counted (it was
/// created after the first run stopped counting, so the second run does
/// not baseline it away).
#[test]
fn stop_and_start_mid_window_loses_nothing() {
    if !require_root("stop_and_start_mid_window_loses_nothing") {
        return;
    }
    let mut s = Setup::new("rsgap");
    let mut d1 = s.start("run1");
    assert!(
        s.table_present(),
        "the daemon installs its table\n{}",
        d1.log()
    );
    s.send(100);
    // Keep sending while the daemon closes its window and hands off.
    d1.send_sigterm();
    s.send(100);
    let status = d1.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "run 1 exit ({status})\n{}",
        d1.log()
    );
    assert!(
        s.table_present(),
        "the table stays after a stop, so the namespace keeps tracking\n{}",
        d1.log()
    );
    assert!(
        !s.marker().exists(),
        "a clean stop removes the run marker\n{}",
        d1.log()
    );

    s.send(100); // no daemon runs
    let (mut late, late_port) = s.open_flow();
    send(&mut late, 30);
    let restarted_at = unix_now();
    let mut d2 = s.start("run2");
    s.send(100);
    send(&mut late, 20);
    let kernel = s.kernel_packets(s.flow_port);
    let kernel_late = s.kernel_packets(late_port);
    d2.stop();
    let log = format!("--- run 1\n{}\n--- run 2\n{}", d1.log(), d2.log());

    let (r1, r2) = (s.records("run1"), s.records("run2"));
    let ctx = format!("{log}\nrun 1: {r1:#?}\nrun 2: {r2:#?}");
    assert_eq!(
        kernel,
        (400, 400 * IP_BYTES),
        "the kernel counted every datagram\n{ctx}"
    );
    assert_eq!(kernel_late, (50, 50 * IP_BYTES), "{ctx}");
    assert_eq!(
        udp_in_from(&r2, late_port),
        kernel_late,
        "the flow created while no daemon ran is counted in full\n{ctx}"
    );
    assert_eq!(udp_in_from(&r1, late_port), (0, 0), "{ctx}");
    let (p1, b1) = udp_in_from(&r1, s.flow_port);
    let (p2, b2) = udp_in_from(&r2, s.flow_port);
    assert!(
        p1 >= 100 && p2 >= 100,
        "both runs recorded part of the flow\n{ctx}"
    );
    assert_eq!(
        (p1 + p2, b1 + b2),
        (400, 400 * IP_BYTES),
        "run 1 + run 2 = what was sent, gap included\n{ctx}"
    );
    assert!(
        d2.log().contains(
            "resumed 1 of 1 connections handed off by the previous run, and counts in full 1"
        ),
        "run 2 resumed the flow and counts the new one in full\n{ctx}"
    );

    let last_end = bound(&r1, "end")
        .into_iter()
        .max()
        .expect("run 1 has records");
    let first_start = bound(&r2, "start")
        .into_iter()
        .min()
        .expect("run 2 has records");
    assert!(
        first_start >= last_end && first_start >= restarted_at,
        "run 2's first window starts at its start ({restarted_at}), after run 1's last ended ({last_end}), \
         not at the aligned boundary: {first_start}\n{ctx}"
    );
    assert!(skipdata(&r2).is_empty(), "a clean stop is no loss\n{ctx}");
    assert!(!d2.log().contains(UNCLEAN), "{ctx}");
}

/// kill -9, then start: the run after it marks its first window SKIPDATA
/// for the ENI (one record, besides the OK records of what it counted) and
/// logs why. That run then stops cleanly, and the start after it reports
/// nothing.
#[test]
fn kill_then_start_marks_the_first_window_skipdata() {
    if !require_root("kill_then_start_marks_the_first_window_skipdata") {
        return;
    }
    let mut s = Setup::new("rskill");
    let mut d1 = s.start("run1");
    s.send(100);
    assert!(
        s.marker().exists(),
        "a capturing run has its marker\n{}",
        d1.log()
    );
    d1.crash();
    let status = d1.exited().expect("exited");
    assert_eq!(status.code(), None, "killed by a signal: {status}");
    assert!(s.marker().exists(), "kill -9 leaves the marker");

    let started_at = unix_now();
    let mut d2 = s.start("run2");
    s.send(50);
    d2.stop();
    let r2 = s.records("run2");
    let ctx = format!("--- run 2 log\n{}\nrun 2: {r2:#?}", d2.log());
    let skipped = skipdata(&r2);
    assert_eq!(skipped.len(), 1, "one SKIPDATA record\n{ctx}");
    assert_eq!(skipped[0]["eni-id"], "eni-a", "{ctx}");
    assert!(
        skipped[0]["start"].as_i64().unwrap() >= started_at,
        "in the first window of run 2, which starts at its start\n{ctx}"
    );
    assert!(
        d2.log().lines().any(|l| l.contains(" ERROR ")
            && l.contains(UNCLEAN)
            && l.contains(&format!("pid {}", d1.pid()))
            && l.contains("SKIPDATA")),
        "the log says why, naming the killed run\n{ctx}"
    );
    // The loss is reported besides what was counted: the 50 datagrams
    // after the start (no handoff, so the connection was baselined).
    assert_eq!(udp_in(&r2), (50, 50 * IP_BYTES), "{ctx}");
    assert!(
        !s.marker().exists(),
        "a clean stop removes the run marker\n{ctx}"
    );

    let mut d3 = s.start("run3");
    s.send(10);
    d3.stop();
    let r3 = s.records("run3");
    let ctx = format!("--- run 3 log\n{}\nrun 3: {r3:#?}", d3.log());
    assert_eq!(udp_in(&r3), (10, 10 * IP_BYTES), "{ctx}");
    assert!(
        skipdata(&r3).is_empty(),
        "after a clean stop: no SKIPDATA\n{ctx}"
    );
    assert!(!d3.log().contains(UNCLEAN), "{ctx}");
}

/// The table outlives the daemon and goes only with `flowlogd
/// remove-tracking-table`, which refuses while the daemon runs (removing
/// it would stop tracking under it) and finds nothing the second time.
#[test]
fn remove_tracking_table_command_removes_the_table() {
    if !require_root("remove_tracking_table_command_removes_the_table") {
        return;
    }
    let s = Setup::new("rsrm");
    let mut d = s.start("run1");
    let config = s.config("run1");
    let refused = s.remove_table(&config);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(&format!("pid {}", d.pid())),
        "{}",
        text(&refused)
    );
    assert!(s.table_present(), "still in place while the daemon runs");
    d.stop();
    assert!(
        s.table_present(),
        "the daemon leaves the table at exit\n{}",
        d.log()
    );
    assert!(
        d.log()
            .contains("left nftables table inet flowlogd in place"),
        "{}",
        d.log()
    );

    let removed = s.remove_table(&config);
    assert!(removed.status.success(), "{}", text(&removed));
    assert!(
        String::from_utf8_lossy(&removed.stdout).contains("removed nftables table inet flowlogd"),
        "{}",
        text(&removed)
    );
    assert!(!s.table_present(), "removed by the command");
    let again = s.remove_table(&config);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to remove"),
        "{}",
        text(&again)
    );
}
