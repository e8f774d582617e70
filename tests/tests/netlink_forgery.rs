//! Netlink messages forged by another process in the daemon's namespace
//! (one with CAP_NET_ADMIN, which may send to the conntrack and rtnetlink
//! multicast groups) are not taken for kernel state: a forged ctnetlink
//! DESTROY makes no record, a forged RTM_DELLINK does not drop an ENI that
//! is still up. Each forgery is counted and logged, and marks no window
//! SKIPDATA (nothing the kernel sent was lost).

use std::time::Duration;

use flowlogd_tests::netns::{closed_windows, DaemonProcess, LineProcess, Netns};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");
const FORGE: &str = env!("CARGO_BIN_EXE_flowlogd-forge");
const WINDOW_SECS: i64 = 4;
const WAIT: Duration = Duration::from_secs(30);
const FORGED_PACKETS: u64 = 1_234_567;

/// Namespace `a` with the daemon on eni-a (veth-a), `b` its peer.
struct Setup {
    a: Netns,
    b: Netns,
    tmp: TempDir,
    a4: String,
    b4: String,
    daemon: DaemonProcess,
}

fn setup(label: &str, n: u8) -> Setup {
    let Scenario {
        a,
        b,
        ea: va,
        eb: vb,
        tmp,
        plugins,
        ..
    } = Scenario::builder(label).veth("veth-a", "veth-b", n).build();
    let cfg = DaemonConfig::new(&plugins)
        .window_secs(WINDOW_SECS)
        .eni("eni-a", "veth-a", "vpc-nf")
        .flow_log(FlowLog::vpc("vpc", "vpc-nf").sinks(&["all"]))
        .json_sink("all", &tmp.join("all.jsonl"))
        .write(&tmp.join("flowlogd.toml"));
    let daemon = DaemonProcess::start(&a, &cfg, &tmp.join("daemon.log"));
    Setup {
        a4: va.v4.to_string(),
        b4: vb.v4.to_string(),
        a,
        b,
        tmp,
        daemon,
    }
}

/// Runs the forger in the daemon's namespace; returns what it printed.
fn forge(s: &Setup, args: &[&str]) -> String {
    let mut all = vec![args[0].to_string(), s.daemon.pid().to_string()];
    all.extend(args[1..].iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut f = LineProcess::spawn(&s.a, FORGE, &all);
    f.expect_line("done", Duration::from_secs(10));
    let said = f.output();
    eprintln!("flowlogd-forge {}:\n{said}", all.join(" "));
    said
}

/// The largest "N foreign" count in the daemon's window lines.
fn foreign_reported(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("window ") && l.contains(" foreign, "))
        .filter_map(|l| {
            let i = l.find(" foreign, ")?;
            l[..i].rsplit(' ').next()?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

fn window_of(r: &Value) -> (i64, i64) {
    (r["start"].as_i64().unwrap(), r["end"].as_i64().unwrap())
}

fn show(records: &[Value], log: &str) -> String {
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    format!("{}\n{log}", lines.join("\n"))
}

#[test]
fn forged_conntrack_destroy_makes_no_record() {
    if !require_root("forged_conntrack_destroy_makes_no_record") {
        return;
    }
    let mut s = setup("nfct", 61);
    s.daemon.wait_for_window(1, WAIT);
    // A UDP flow b -> a on eni-a's address that never happened.
    let forged = forge(
        &s,
        &[
            "ct-destroy",
            &s.b4,
            &s.a4,
            "40000",
            "5500",
            &FORGED_PACKETS.to_string(),
        ],
    );
    let closed = s.daemon.closed_windows().len();
    s.daemon.wait_for_window(closed + 1, WAIT);
    s.daemon.stop();
    let log = s.daemon.log();
    let records = read_json_records(&s.tmp.join("all.jsonl"));
    let ctx = format!("forger said:\n{forged}\n{}", show(&records, &log));

    // The forgery reached the daemon (otherwise this proves nothing): the
    // kernel delivers it by multicast to the destroy group; a unicast to the
    // daemon's connected socket is refused.
    assert!(forged.contains("multicast group 3: sent"), "{ctx}");
    let forged_records: Vec<&Value> = records
        .iter()
        .filter(|r| r["packets"].as_u64() == Some(FORGED_PACKETS))
        .collect();
    assert_eq!(forged_records.len(), 0, "{ctx}");
    assert!(
        log.contains("conntrack events: ignored a netlink datagram from port id"),
        "{ctx}"
    );
    assert!(foreign_reported(&log) >= 1, "{ctx}");
    // Nothing was lost: every window the daemon closed has eni-a's
    // records, and none of them is SKIPDATA (an empty file is no proof).
    let mut by_window: std::collections::BTreeMap<(i64, i64), Vec<&str>> =
        std::collections::BTreeMap::new();
    for r in &records {
        assert_eq!(r["eni-id"], "eni-a", "{ctx}");
        let window = (r["start"].as_i64().unwrap(), r["end"].as_i64().unwrap());
        by_window
            .entry(window)
            .or_default()
            .push(r["log-status"].as_str().unwrap());
    }
    // Every window closed before the stop has records; the stop's own
    // (partial, possibly empty) window may have none.
    let closed = closed_windows(&log);
    assert!(closed.len() >= 3, "{closed:?}\n{ctx}");
    let windows: Vec<(i64, i64)> = by_window.keys().copied().collect();
    assert!(
        windows.iter().all(|w| closed.contains(w)),
        "records of a window never closed: {windows:?}\n{ctx}"
    );
    let before_stop = &closed[..closed.len() - 1];
    assert_eq!(
        windows.get(..before_stop.len()),
        Some(before_stop),
        "a record per closed window\n{ctx}"
    );
    assert!(
        by_window
            .values()
            .all(|st| st == &["NODATA"] || st.iter().all(|s| *s == "OK")),
        "{ctx}"
    );
    drop(s.b);
}

#[test]
fn forged_dellink_does_not_drop_a_live_eni() {
    if !require_root("forged_dellink_does_not_drop_a_live_eni") {
        return;
    }
    let mut s = setup("nfrt", 62);
    let index = s.a.exec_ok(&["cat", "/sys/class/net/veth-a/ifindex"]);
    let index = index.trim();
    assert!(index.parse::<u32>().is_ok(), "ifindex {index:?}");
    let mut sink = LineProcess::traffic(&s.a, TRAFFIC, &["udp-sink", &format!("{}:5500", s.a4)]);
    sink.expect_line("listening", Duration::from_secs(10));
    s.daemon.wait_for_window(1, WAIT);

    let forged = forge(&s, &["dellink", index]);
    // 50 real packets on eni-a, after the forgery.
    let mut c = LineProcess::traffic(
        &s.b,
        TRAFFIC,
        &["udp-client", &format!("{}:5500", s.a4), "50", "100", "0"],
    );
    c.expect_line("done", Duration::from_secs(10));
    let closed = s.daemon.closed_windows().len();
    s.daemon.wait_for_window(closed + 1, WAIT);
    s.daemon.stop();
    let log = s.daemon.log();
    let records = read_json_records(&s.tmp.join("all.jsonl"));
    let ctx = format!("forger said:\n{forged}\n{}", show(&records, &log));

    assert!(forged.contains("multicast group 1: sent"), "{ctx}");
    // Count first: all 50 packets, on eni-a.
    let ok: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["log-status"] == "OK" && r["eni-id"] == "eni-a" && r["dstaddr"] == s.a4.as_str()
        })
        .collect();
    let packets: u64 = ok.iter().map(|r| r["packets"].as_u64().unwrap()).sum();
    assert_eq!(packets, 50, "{ctx}");
    // The windows of that traffic have no NODATA (nor SKIPDATA) for eni-a.
    for r in &ok {
        let w = window_of(r);
        assert!(
            !records
                .iter()
                .any(|o| o["eni-id"] == "eni-a" && o["log-status"] != "OK" && window_of(o) == w),
            "NODATA/SKIPDATA beside {r}\n{ctx}"
        );
    }
    assert!(
        log.contains("rtnetlink events: ignored a netlink datagram from port id"),
        "{ctx}"
    );
    assert!(!log.contains("ENI eni-a lost its interface"), "{ctx}");
}
