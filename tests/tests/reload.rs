//! SIGHUP reloads the config without closing the open window: the window
//! goes on with its sums and every connection's counters, and the new
//! config governs the records emitted from then on (here: sinks added and
//! changed). Sinks whose config did not change keep running. A config that
//! does not validate, or whose sinks do not start, is refused and the
//! daemon carries on with the old one. SIGUSR1 only reopens the outputs.

use std::path::Path;
use std::time::Duration;

use flowlogd_tests::netns::{DaemonProcess, LineProcess};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");
const STEP: Duration = Duration::from_secs(10);

/// An ENI `veth-a`, one flow log instance naming every sink, and file sinks
/// `(name, file in tmp)` writing JSON lines.
fn config(plugins: &Path, tmp: &TempDir, window_secs: u32, sinks: &[(&str, &str)]) -> String {
    let names: Vec<&str> = sinks.iter().map(|(s, _)| *s).collect();
    let mut config = DaemonConfig::new(plugins)
        .window_secs(i64::from(window_secs))
        .eni("eni-a", "veth-a", "vpc-r")
        .flow_log(FlowLog::vpc("all", "vpc-r").sinks(&names));
    for (s, file) in sinks {
        config = config.json_sink(s, &tmp.join(file));
    }
    config.text()
}

/// `kill -<signal> <pid>`.
fn signal(pid: u32, signal: &str) {
    let o = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// The OK records of UDP traffic arriving on the ENI.
fn udp_in(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["log-status"] == "OK" && r["direction"] == "in" && r["protocol"] == 17)
        .collect()
}

fn window_of(r: &Value) -> (i64, i64) {
    (r["start"].as_i64().unwrap(), r["end"].as_i64().unwrap())
}

fn counts_of(r: &Value) -> (u64, u64) {
    (r["packets"].as_u64().unwrap(), r["bytes"].as_u64().unwrap())
}

/// How many times the log says a sink's plugin was started.
fn starts_of(log: &str, sink: &str) -> usize {
    log.matches(&format!("sink {sink}: plugin file")).count()
}

/// One UDP flow (one 5-tuple) with 5 datagrams before a SIGHUP and 1 after
/// it, all in one window. The reload keeps sink `keep` (unchanged) running,
/// restarts `moved` (its path changed) and adds `added`. The window is not
/// closed early: each sink of the new config gets ONE record of that flow,
/// for the whole window (its full length), with all 6 datagrams; the old
/// path of `moved` gets none of it. Before that, a config that does not
/// validate and one whose sink does not open are refused.
#[test]
fn sighup_keeps_the_open_window_and_the_new_config_governs_its_records() {
    if !require_root("sighup_keeps_the_open_window_and_the_new_config_governs_its_records") {
        return;
    }
    const WINDOW: u32 = 15;
    let Scenario {
        a,
        b,
        ea: a_end,
        tmp,
        plugins,
        ..
    } = Scenario::builder("reload")
        .namespaces("hupa", "hupb")
        .veth("veth-a", "veth-b", 41)
        .build();
    let cfg = tmp.join("flowlogd.toml");
    let old = [("keep", "keep.jsonl"), ("moved", "moved-old.jsonl")];
    std::fs::write(&cfg, config(&plugins, &tmp, WINDOW, &old)).unwrap();
    let mut daemon = DaemonProcess::start(&a, &cfg, &tmp.join("daemon.log"));
    // A window has just closed: the next one is whole, and long enough
    // for the steps below.
    let (_, start) = daemon.wait_for_window(0, Duration::from_secs(u64::from(WINDOW) + 10));
    let window = (start, start + i64::from(WINDOW));

    let target = format!("{}:5400", a_end.v4);
    let mut server = LineProcess::traffic(&a, TRAFFIC, &["udp-sink", &target]);
    server.expect_line("listening", STEP);
    let mut client = LineProcess::traffic(&b, TRAFFIC, &["udp-client", &target, "5", "100", "0"]);
    client.expect_line("done", STEP);

    // A config that does not validate is refused; the daemon carries on.
    std::fs::write(&cfg, "[daemon]\ncapture_window_secs = 0\n").unwrap();
    signal(daemon.pid(), "HUP");
    daemon.wait_for_log("reload refused, keeping the running config", STEP);
    // So is one whose changed sink does not open (an option the plugin
    // rejects): the stopped sink is started again under the old config.
    let broken = config(&plugins, &tmp, WINDOW, &old).replace(
        "moved-old.jsonl\"\nformat = \"json\"",
        "moved-old.jsonl\"\nformat = \"xml\"",
    );
    std::fs::write(&cfg, broken).unwrap();
    signal(daemon.pid(), "HUP");
    daemon.wait_for_log("sinks.moved", STEP);
    let refusals = daemon.log().matches("reload refused").count();
    assert_eq!(refusals, 2, "{}", daemon.log());
    // Started at start-up, with the rejected option, and again as it was.
    assert_eq!(starts_of(&daemon.log(), "moved"), 3, "{}", daemon.log());

    let new = [
        ("keep", "keep.jsonl"),
        ("moved", "moved-new.jsonl"),
        ("added", "added.jsonl"),
    ];
    std::fs::write(&cfg, config(&plugins, &tmp, WINDOW, &new)).unwrap();
    signal(daemon.pid(), "HUP");
    daemon.wait_for_log(
        &format!(
            "reloaded: 1 ENIs, 1 flow logs, 3 sinks (1 kept running, started added, moved); the open window {}-{}",
            window.0, window.1
        ),
        STEP,
    );
    // Same 5-tuple again: the same conntrack entry continues.
    let port = client
        .output()
        .lines()
        .find_map(|l| l.strip_prefix("local ").map(str::to_owned))
        .unwrap();
    let mut again = LineProcess::traffic(&b, TRAFFIC, &["udp-burst", &target, "1", "100", &port]);
    again.expect_line("sent 1", STEP);
    // The window closes at its regular end, not at the reload.
    let closed = daemon.wait_for_window(1, Duration::from_secs(u64::from(WINDOW) + 10));
    assert_eq!(closed, window, "{}", daemon.log());
    daemon.stop();
    let log = daemon.log();

    // 6 datagrams of 100 bytes (128 at the IP layer), in one record of the
    // whole window, in every sink of the new config.
    for file in ["keep.jsonl", "moved-new.jsonl", "added.jsonl"] {
        let records = read_json_records(&tmp.join(file));
        let udp = udp_in(&records);
        assert_eq!(udp.len(), 1, "{file}: {records:#?}\n{log}");
        assert_eq!(window_of(udp[0]), window, "{file}: {udp:#?}");
        assert_eq!(counts_of(udp[0]), (6, 6 * 128), "{file}: {udp:#?}\n{log}");
    }
    let old_path = read_json_records(&tmp.join("moved-old.jsonl"));
    assert_eq!(udp_in(&old_path).len(), 0, "{old_path:#?}");
    // `keep` ran through both reloads; `moved` was started once more, with
    // its new path.
    assert_eq!(starts_of(&log, "keep"), 1, "{log}");
    assert_eq!(starts_of(&log, "moved"), 4, "{log}");
    assert_eq!(starts_of(&log, "added"), 1, "{log}");
}

/// SIGUSR1 makes the file sink reopen its file, as logrotate's postrotate
/// needs: the file moved away gets nothing more, the records emitted after
/// the signal land in a new file at the configured path. Nothing is
/// reloaded.
#[test]
fn sigusr1_reopens_the_file_sink() {
    if !require_root("sigusr1_reopens_the_file_sink") {
        return;
    }
    const WINDOW: u32 = 5;
    let Scenario {
        a,
        b,
        ea: a_end,
        tmp,
        plugins,
        ..
    } = Scenario::builder("reopen")
        .namespaces("usra", "usrb")
        .veth("veth-a", "veth-b", 42)
        .build();
    let cfg = tmp.join("flowlogd.toml");
    std::fs::write(
        &cfg,
        config(&plugins, &tmp, WINDOW, &[("out", "out.jsonl")]),
    )
    .unwrap();
    let mut daemon = DaemonProcess::start(&a, &cfg, &tmp.join("daemon.log"));
    // The first window's records (NODATA) are written to the file. The
    // sink opens (creates) the file when it starts, and writes on its own
    // thread after the close is logged: wait for a whole record, or the
    // rename could come before the write and the record land in the new
    // file (seen once under load).
    daemon.wait_for_window(0, Duration::from_secs(u64::from(WINDOW) + 10));
    let (out, rotated) = (tmp.join("out.jsonl"), tmp.join("out.jsonl.1"));
    poll_until(
        || std::fs::read(&out).is_ok_and(|b| b.ends_with(b"\n")),
        "the first window's records in the sink's file",
    );
    std::fs::rename(&out, &rotated).unwrap();
    signal(daemon.pid(), "USR1");
    daemon.wait_for_log("SIGUSR1: sinks reopen their outputs", STEP);

    let target = format!("{}:5401", a_end.v4);
    let mut server = LineProcess::traffic(&a, TRAFFIC, &["udp-sink", &target]);
    server.expect_line("listening", STEP);
    let mut client = LineProcess::traffic(&b, TRAFFIC, &["udp-client", &target, "3", "100", "0"]);
    client.expect_line("done", STEP);
    daemon.stop();
    let log = daemon.log();

    let new_file = read_json_records(&out);
    let udp = udp_in(&new_file);
    let sum = udp
        .iter()
        .map(|r| counts_of(r))
        .fold((0, 0), |(p, b), (q, c)| (p + q, b + c));
    assert_eq!(sum, (3, 3 * 128), "{new_file:#?}\n{log}");
    let moved = read_json_records(&rotated);
    assert!(!moved.is_empty(), "the first window went to the old file");
    assert_eq!(udp_in(&moved).len(), 0, "{moved:#?}");
    assert!(!log.contains("reloading"), "{log}");
}

/// Polls `done` every 20 ms for up to 10 s.
#[track_caller]
fn poll_until(done: impl Fn() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + STEP;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "waited for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `path` whole by a rename, as config management does: a reload
/// racing a plain truncate-and-write can read an empty file, which is a
/// valid config without ENIs (and drops the open window's sums).
fn replace_file(path: &Path, content: &str) {
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
const SIGHUP: i32 = 1;

/// Whether a SIGHUP is pending for the process `pid` (not yet read from its
/// signalfd): the SIGHUP bit of `ShdPnd` or `SigPnd` in /proc/<pid>/status.
fn sighup_pending(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let bit = 1u64 << (SIGHUP - 1);
    status
        .lines()
        .filter_map(|l| {
            l.strip_prefix("ShdPnd:")
                .or_else(|| l.strip_prefix("SigPnd:"))
        })
        .any(|mask| u64::from_str_radix(mask.trim(), 16).unwrap() & bit != 0)
}

/// Waits (bounded by `timeout`) until no SIGHUP is pending and the log's
/// reload outcomes ("reloaded:" or "reload refused") have not changed for
/// 300 ms: every signal sent so far has been read and its reload has run.
fn wait_until_reloads_settle(daemon: &mut DaemonProcess, timeout: Duration) {
    let outcomes = |d: &DaemonProcess| {
        let log = d.log();
        log.matches("reloaded:").count() + log.matches("reload refused").count()
    };
    let deadline = std::time::Instant::now() + timeout;
    let mut seen = outcomes(daemon);
    let mut stable_since = std::time::Instant::now();
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "reloads still running after {timeout:?}:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
        let now = outcomes(daemon);
        if now != seen || sighup_pending(daemon.pid()) {
            seen = now;
            stable_since = std::time::Instant::now();
        } else if stable_since.elapsed() >= Duration::from_millis(300) {
            return;
        }
    }
}

/// A SIGHUP storm: 50 reloads in a tight bounded loop across a window's
/// end, every other one with a changed config (a second sink added or
/// removed), one of them reading the file empty as a rewrite in place
/// leaves it, between two rounds of traffic on three UDP flows of known
/// counts. Every window emitted has a length (no start == end), every
/// (flow, direction, start, end) comes out once, and each flow's records
/// sum exactly to what was sent.
#[test]
fn a_sighup_storm_makes_no_empty_or_doubled_windows_and_loses_nothing() {
    if !require_root("a_sighup_storm_makes_no_empty_or_doubled_windows_and_loses_nothing") {
        return;
    }
    const WINDOW: u32 = 4;
    const STORM: usize = 50;
    // Datagrams per source port, before and after the storm.
    const FLOWS: [(u16, u64, u64); 3] = [(41000, 2, 1), (41001, 3, 2), (41002, 5, 3)];
    let Scenario {
        a,
        b,
        ea: a_end,
        tmp,
        plugins,
        ..
    } = Scenario::builder("hupstorm")
        .namespaces("stma", "stmb")
        .veth("veth-a", "veth-b", 43)
        .build();
    let cfg = tmp.join("flowlogd.toml");
    let one = config(&plugins, &tmp, WINDOW, &[("out", "out.jsonl")]);
    let two = config(
        &plugins,
        &tmp,
        WINDOW,
        &[("out", "out.jsonl"), ("extra", "extra.jsonl")],
    );
    std::fs::write(&cfg, &one).unwrap();
    let mut daemon = DaemonProcess::start(&a, &cfg, &tmp.join("daemon.log"));
    let (_, first_end) = daemon.wait_for_window(0, Duration::from_secs(u64::from(WINDOW) + 10));

    let target = format!("{}:5402", a_end.v4);
    let mut server = LineProcess::traffic(&a, TRAFFIC, &["udp-sink", &target]);
    server.expect_line("listening", STEP);
    let send = |round: usize| {
        for &(port, before, after) in &FLOWS {
            let n = if round == 0 { before } else { after };
            let args = [
                "udp-flows",
                &target,
                "1",
                &n.to_string(),
                "100",
                &port.to_string(),
            ];
            let mut client = LineProcess::traffic(&b, TRAFFIC, &args);
            client.expect_line(&format!("sent {n}"), STEP);
        }
    };
    send(0);

    // The storm starts shortly before the open window's end, so that
    // reloads run while it closes.
    let storm_at = std::time::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(first_end + i64::from(WINDOW)).unwrap())
        - Duration::from_millis(300);
    if let Ok(wait) = storm_at.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(wait);
    }
    let pid = i32::try_from(daemon.pid()).unwrap();
    for i in 0..STORM {
        match i % 4 {
            0 => replace_file(&cfg, &two),
            2 => replace_file(&cfg, &one),
            _ => {} // unchanged since the last signal
        }
        // SAFETY: kill(2) on the pid of our own child, which is running
        // (DaemonProcess reaps it only in terminate/drop).
        assert_eq!(unsafe { libc_kill(pid, SIGHUP) }, 0);
        std::thread::sleep(Duration::from_millis(10));
        if i == STORM / 2 {
            // Mid-storm, the signal lands while the file is being
            // rewritten in place (`>` truncates first): the reload that
            // reads it empty is refused, not run as a config without ENIs.
            daemon.wait_for_log("reloaded:", STEP);
            // Signals sent before must be worked off first: one still
            // pending when the file is emptied would read it empty too.
            wait_until_reloads_settle(&mut daemon, STEP);
            std::fs::write(&cfg, "").unwrap();
            // SAFETY: as above.
            assert_eq!(unsafe { libc_kill(pid, SIGHUP) }, 0);
            daemon.wait_for_log("no [[flow_log]] table, so nothing would be captured", STEP);
            replace_file(&cfg, &one);
        }
    }
    // The last config written was `one`; wait for a reload that says so
    // after the storm has been worked off (signals coalesce).
    std::thread::sleep(Duration::from_millis(500));
    daemon.wait_for_log("reloaded:", STEP);
    send(1);
    let closed = daemon.closed_windows().len();
    daemon.wait_for_window(closed, Duration::from_secs(u64::from(WINDOW) + 10));
    daemon.stop();
    let log = daemon.log();
    assert!(log.matches("reloaded:").count() >= 2, "{log}");
    assert_eq!(log.matches("reload refused").count(), 1, "{log}");

    let records = read_json_records(&tmp.join("out.jsonl"));
    let extra = read_json_records(&tmp.join("extra.jsonl"));
    for r in records.iter().chain(&extra) {
        let (start, end) = window_of(r);
        assert!(start < end, "a window without length: {r:#}\n{log}");
    }
    let udp = udp_in(&records);
    let mut seen = std::collections::BTreeMap::new();
    for r in &udp {
        let key = (
            r["srcport"].as_u64().unwrap(),
            r["dstport"].as_u64().unwrap(),
            window_of(r),
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(doubled.is_empty(), "{doubled:?}\n{udp:#?}\n{log}");
    for &(port, before, after) in &FLOWS {
        let of_flow: Vec<_> = udp
            .iter()
            .filter(|r| r["srcport"] == u64::from(port))
            .collect();
        let sum = of_flow
            .iter()
            .map(|r| counts_of(r))
            .fold((0, 0), |(p, b), (q, c)| (p + q, b + c));
        let n = before + after;
        assert_eq!(sum, (n, n * 128), "port {port}: {of_flow:#?}\n{log}");
        // The windows of one flow do not overlap either.
        let mut windows: Vec<_> = of_flow.iter().map(|r| window_of(r)).collect();
        windows.sort_unstable();
        for w in windows.windows(2) {
            assert!(w[0].1 <= w[1].0, "port {port}: {windows:?}\n{log}");
        }
    }
}
