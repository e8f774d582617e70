//! The durable spool, end to end: the real daemon in its own namespaces,
//! real traffic, the test sink told to be down. A sink that is down for
//! several windows, or across a restart, gets every record once it is
//! back, in window order; a spool at its bound drops only what does not
//! fit and says exactly how much; a torn spool tail is cut, never replayed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowlogd_tests::netns::{DaemonProcess, LineProcess, Netns, VethEnd};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");
/// Payload bytes of each test datagram; the IP-layer size adds 28.
const PAYLOAD: u64 = 100;

struct Rig {
    // Field order is drop order: the daemon stops before its namespaces go.
    _sink: LineProcess,
    a: Netns,
    b: Netns,
    a_end: VethEnd,
    tmp: TempDir,
    cfg: PathBuf,
    flag: PathBuf,
    out: PathBuf,
}

/// A VM namespace `a` (the daemon's, with a UDP listener on port 5600) and
/// a peer `b`; the test sink `down` writes to `out.jsonl` unless `down.flag`
/// exists.
fn rig(label: &str, daemon_extra: &str) -> Rig {
    let Scenario {
        a,
        b,
        ea: a_end,
        tmp,
        plugins,
        ..
    } = Scenario::builder(label)
        .veth("veth-a", "veth-b", 47)
        .build();
    let flag = tmp.join("down.flag");
    let out = tmp.join("out.jsonl");
    let cfg = DaemonConfig::new(&plugins)
        .daemon_key(daemon_extra)
        .eni("eni-s", "veth-a", "vpc-s")
        .flow_log(FlowLog::vpc("all", "vpc-s").sinks(&["down"]))
        .toml(&format!(
            "[sinks.down]\nplugin = \"testsink\"\npath = \"{}\"\ndown_while_exists = \"{}\"\n",
            out.display(),
            flag.display()
        ))
        .write(&tmp.join("flowlogd.toml"));
    let target = format!("{}:5600", a_end.v4);
    let mut sink = LineProcess::traffic(&a, TRAFFIC, &["udp-sink", &target]);
    sink.expect_line("listening", Duration::from_secs(10));
    Rig {
        _sink: sink,
        a,
        b,
        a_end,
        tmp,
        cfg,
        flag,
        out,
    }
}

impl Rig {
    fn start(&self, log: &str) -> DaemonProcess {
        DaemonProcess::start(&self.a, &self.cfg, &self.tmp.join(log))
    }

    /// `n` one-datagram flows from source ports `first..first+n`.
    fn burst(&self, n: u16, first: u16) {
        let target = format!("{}:5600", self.a_end.v4);
        let mut p = LineProcess::traffic(
            &self.b,
            TRAFFIC,
            &[
                "udp-burst",
                &target,
                &n.to_string(),
                &PAYLOAD.to_string(),
                &first.to_string(),
            ],
        );
        p.expect_line(&format!("sent {n}"), Duration::from_secs(20));
    }

    fn spool_dir(&self) -> PathBuf {
        self.tmp.join("state/spool/down")
    }
}

/// The test's UDP records: (srcport, packets, bytes, window start).
fn udp_records(records: &[Value]) -> Vec<(u64, u64, u64, i64)> {
    records
        .iter()
        .filter(|r| r["log-status"] == "OK" && r["protocol"] == 17 && r["dstport"] == 5600)
        .map(|r| {
            (
                r["srcport"].as_u64().unwrap(),
                r["packets"].as_u64().unwrap(),
                r["bytes"].as_u64().unwrap(),
                r["start"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Asserts that `records` hold each of the flows from `ports` exactly once,
/// one datagram each.
#[track_caller]
fn assert_each_flow_once(records: &[Value], ports: &BTreeSet<u64>, log: &str) {
    let udp = udp_records(records);
    assert_eq!(
        udp.len(),
        ports.len(),
        "records of the test's flows:\n{log}"
    );
    let seen: BTreeSet<u64> = udp.iter().map(|r| r.0).collect();
    assert_eq!(&seen, ports, "each flow once, none twice");
    for (port, packets, bytes, _) in &udp {
        assert_eq!(
            (*packets, *bytes),
            (1, PAYLOAD + 28),
            "flow from port {port}"
        );
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Polls until `out` holds at least `n` of the test's UDP records.
#[track_caller]
fn wait_for_records(out: &Path, n: usize, timeout: Duration, daemon: &DaemonProcess) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = udp_records(&read_json_records(out)).len();
        if got >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{got} of {n} records after {timeout:?}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The shutdown summary's count of records dropped on a full spool.
fn dropped_on_spool(log: &str) -> Option<u64> {
    log.lines().find_map(|l| {
        let (before, _) = l.split_once(" dropped on a full or failing spool")?;
        before.rsplit(' ').next()?.parse().ok()
    })
}

/// Records each closed window put out, from the window log lines.
fn window_record_counts(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            let rest = l.split("window ").nth(1)?;
            let (_, rest) = rest.split_once(": ")?;
            rest.split_once(" records in ")
                .and_then(|(n, _)| n.parse().ok())
        })
        .collect()
}

/// A sink down for three windows: nothing reaches it meanwhile, its records
/// wait in the spool on disk; once it is back, every record arrives, once,
/// in window order.
#[test]
fn a_sink_down_for_three_windows_gets_every_record_in_order() {
    if !require_root("a_sink_down_for_three_windows_gets_every_record_in_order") {
        return;
    }
    let rig = rig("spdown", "capture_window_secs = 2");
    std::fs::write(&rig.flag, "").unwrap();
    let mut daemon = rig.start("daemon.log");
    let mut ports = BTreeSet::new();
    let mut windows = Vec::new();
    for w in 0..3u16 {
        let first = 20_000 + w * 1000;
        rig.burst(200, first);
        ports.extend((first..first + 200).map(u64::from));
        let seen = daemon.closed_windows().len();
        windows.push(daemon.wait_for_window(seen, Duration::from_secs(10)));
    }
    assert!(
        udp_records(&read_json_records(&rig.out)).is_empty(),
        "the sink is down"
    );
    assert!(
        !segment_files(&rig.spool_dir()).is_empty(),
        "the records wait on disk while the sink is down:\n{}",
        daemon.log()
    );
    std::fs::remove_file(&rig.flag).unwrap();
    // The worker's backoff is at most 10 s.
    wait_for_records(&rig.out, ports.len(), Duration::from_secs(40), &daemon);
    daemon.stop();
    let log = daemon.log();
    let records = read_json_records(&rig.out);
    assert_each_flow_once(&records, &ports, &log);
    let starts: Vec<i64> = records
        .iter()
        .map(|r| r["start"].as_i64().unwrap())
        .collect();
    assert!(
        starts.windows(2).all(|w| w[0] <= w[1]),
        "records arrive in window order: {starts:?}"
    );
    let udp_windows: BTreeSet<i64> = udp_records(&records).iter().map(|r| r.3).collect();
    assert!(
        udp_windows.len() >= 3,
        "three windows of traffic: {udp_windows:?}"
    );
    assert!(log.contains("testsink is down"), "{log}");
    assert!(
        segment_files(&rig.spool_dir()).is_empty(),
        "delivered segments are removed"
    );
}

/// A crash (SIGKILL) while a sink is down: what was spooled survives it.
/// The sink's first failed write moved its queue to the spool and the
/// window close made the spool durable, so the next start delivers every
/// record of the closed windows.
#[test]
fn spooled_records_survive_a_crash() {
    if !require_root("spooled_records_survive_a_crash") {
        return;
    }
    let rig = rig("spkill", "capture_window_secs = 2");
    std::fs::write(&rig.flag, "").unwrap();
    let mut daemon = rig.start("first.log");
    rig.burst(250, 40_000);
    let ports: BTreeSet<u64> = (40_000..40_250).collect();
    // The burst's window closes, then one more, so its records are on disk.
    let seen = daemon.closed_windows().len();
    daemon.wait_for_window(seen + 1, Duration::from_secs(15));
    // Child::kill is SIGKILL to the daemon's exact pid: no shutdown runs.
    daemon.crash();
    let first_log = daemon.log();
    assert!(!first_log.contains("stopped"), "{first_log}");
    assert!(!segment_files(&rig.spool_dir()).is_empty(), "{first_log}");

    std::fs::remove_file(&rig.flag).unwrap();
    let mut daemon = rig.start("second.log");
    wait_for_records(&rig.out, ports.len(), Duration::from_secs(30), &daemon);
    daemon.stop();
    let log = daemon.log();
    assert!(
        log.contains("from an earlier run; delivering them first"),
        "{log}"
    );
    assert_each_flow_once(&read_json_records(&rig.out), &ports, &log);
}

/// A sink down across a stop and a start: the stop keeps its records in
/// the spool and says so; a torn batch appended to the spool (a crash in
/// the middle of a write) is cut at the next start; once the sink is back,
/// every record arrives exactly once.
#[test]
fn a_sink_down_across_a_restart_is_replayed_after_the_start() {
    if !require_root("a_sink_down_across_a_restart_is_replayed_after_the_start") {
        return;
    }
    let rig = rig("sprst", "capture_window_secs = 600");
    std::fs::write(&rig.flag, "").unwrap();
    let mut daemon = rig.start("first.log");
    rig.burst(300, 30_000);
    let ports: BTreeSet<u64> = (30_000..30_300).collect();
    daemon.stop();
    let first_log = daemon.log();
    assert!(
        first_log.contains("wait in") && first_log.contains("for the next start"),
        "the stop says what waits in the spool:\n{first_log}"
    );
    assert!(
        udp_records(&read_json_records(&rig.out)).is_empty(),
        "the sink was down"
    );
    // A crash in the middle of a batch's write leaves half a frame.
    let segments = segment_files(&rig.spool_dir());
    assert!(!segments.is_empty(), "{first_log}");
    let last = segments.last().unwrap();
    let torn = b"FLS1\x00\x10\x00\x00garbage that is not a whole batch";
    let mut f = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    std::io::Write::write_all(&mut f, torn).unwrap();
    drop(f);

    std::fs::remove_file(&rig.flag).unwrap();
    let mut daemon = rig.start("second.log");
    wait_for_records(&rig.out, ports.len(), Duration::from_secs(30), &daemon);
    daemon.stop();
    let log = daemon.log();
    assert!(log.contains(&format!("cut {} bytes", torn.len())), "{log}");
    assert!(
        log.contains("from an earlier run; delivering them first"),
        "{log}"
    );
    assert_each_flow_once(&read_json_records(&rig.out), &ports, &log);
}

/// A spool at its bound (the smallest allowed, 1 MiB) while the sink is
/// down: what does not fit is dropped, and the count reported at shutdown
/// is exact: the records delivered later plus those reported dropped are
/// the records the window put out.
#[test]
fn a_full_spool_reports_exactly_what_it_dropped() {
    if !require_root("a_full_spool_reports_exactly_what_it_dropped") {
        return;
    }
    let rig = rig(
        "spfull",
        "capture_window_secs = 600\nspool_max_bytes = 1048576",
    );
    std::fs::write(&rig.flag, "").unwrap();
    let mut daemon = rig.start("first.log");
    // About 330 bytes per spooled record: 6000 records are about twice
    // the bound.
    rig.burst(6000, 10_000);
    let status = daemon.terminate();
    let first_log = daemon.log();
    assert_eq!(
        status.code(),
        Some(1),
        "records were dropped, so the exit code says so:\n{first_log}"
    );
    let emitted: u64 = window_record_counts(&first_log).iter().sum();
    let dropped = dropped_on_spool(&first_log).expect("the summary counts spool drops");
    assert!(emitted >= 6000, "{emitted} records emitted:\n{first_log}");
    assert!(
        dropped > 0 && dropped < emitted,
        "{dropped} of {emitted} dropped:\n{first_log}"
    );
    assert!(first_log.contains("the spool is full"), "{first_log}");

    std::fs::remove_file(&rig.flag).unwrap();
    let mut daemon = rig.start("second.log");
    let kept = usize::try_from(emitted - dropped).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while read_json_records(&rig.out).len() < kept && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    daemon.stop();
    let log = daemon.log();
    // The second run's own window (closed by the stop) adds its records.
    let second: u64 = window_record_counts(&log).iter().sum();
    let delivered = read_json_records(&rig.out);
    assert_eq!(
        delivered.len() as u64,
        emitted - dropped + second,
        "delivered = emitted - dropped ({emitted} emitted, {dropped} dropped, then {second} in the second run):\n{log}"
    );
    assert!(
        log.contains("from an earlier run; delivering them first"),
        "{log}"
    );
}
