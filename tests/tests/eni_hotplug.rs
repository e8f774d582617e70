//! ENIs that come and go while the daemon runs: an interface hot-plugged
//! into the daemon's namespace becomes the ENI a static `[[eni]]` names
//! (and a VPC-scoped flow log captures it), an address added to it later
//! is attributed to it from then on, and when it is removed mid-window its
//! flows are closed and emitted with that window. NODATA is written for an
//! in-scope ENI that exists and is idle, never for one that did not exist
//! during the window.

use std::time::Duration;

use flowlogd_tests::netns::{closed_windows, unix_now, veth_pair, LineProcess, Netns};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");
const WINDOW_SECS: i64 = 4;
const WAIT: Duration = Duration::from_secs(30);

/// Sends `count` UDP datagrams of `size` bytes from `from` to `to_addr:port`
/// (one flow), where a sink in `sink_ns` takes them.
fn udp(from: &Netns, to: &str, count: u32, size: u32) {
    let mut c = LineProcess::traffic(
        from,
        TRAFFIC,
        &["udp-client", to, &count.to_string(), &size.to_string(), "0"],
    );
    c.expect_line("done", Duration::from_secs(10));
}

/// Sum of packets and bytes of the OK records of `eni` with `dstaddr`.
fn sum_to(records: &[Value], eni: &str, dst: &str) -> (u64, u64) {
    records
        .iter()
        .filter(|r| r["log-status"] == "OK" && r["eni-id"] == eni && r["dstaddr"] == dst)
        .fold((0, 0), |(p, b), r| {
            (
                p + r["packets"].as_u64().unwrap(),
                b + r["bytes"].as_u64().unwrap(),
            )
        })
}

fn window_of(r: &Value) -> (i64, i64) {
    (r["start"].as_i64().unwrap(), r["end"].as_i64().unwrap())
}

#[test]
fn hot_plugged_interface_is_captured_until_it_is_removed() {
    if !require_root("hot_plugged_interface_is_captured_until_it_is_removed") {
        return;
    }
    let s = Scenario::builder("hotplug")
        .namespaces("hpa", "hpb")
        .veth("veth-a", "veth-b", 51)
        .build();
    let (a, b) = (&s.a, &s.b);
    let records_path = s.path("all.jsonl");
    let config = s
        .config()
        .window_secs(WINDOW_SECS)
        .eni("eni-a", "veth-a", "vpc-hp")
        // No such interface yet.
        .eni("eni-h", "veth-h", "vpc-hp")
        .flow_log(FlowLog::vpc("vpc", "vpc-hp").sinks(&["all"]))
        .json_sink("all", &records_path);
    let cfg = s.write_config("flowlogd.toml", &config);
    let mut daemon = s.start_daemon(&cfg, "daemon.log");
    assert!(
        daemon
            .log()
            .contains("ENI eni-h (matched by interface veth-h)"),
        "{}",
        daemon.log()
    );
    // A whole window without eni-h.
    daemon.wait_for_window(1, WAIT);

    // Hot-plug veth-h and use it.
    let plugged = unix_now();
    let (h, _) = veth_pair(a, "veth-h", b, "veth-hb", 52);
    daemon.wait_for_log("now interface veth-h", WAIT);
    let h4 = h.v4.to_string();
    let mut sink = LineProcess::traffic(a, TRAFFIC, &["udp-sink", &format!("{h4}:5500")]);
    sink.expect_line("listening", Duration::from_secs(10));
    udp(b, &format!("{h4}:5500"), 5, 100);

    // An address added later is attributed to eni-h from then on.
    a.exec_ok(&["ip", "addr", "add", "10.201.52.1/24", "dev", "veth-h"]);
    b.exec_ok(&["ip", "addr", "add", "10.201.52.2/24", "dev", "veth-hb"]);
    let mut sink2 = LineProcess::traffic(a, TRAFFIC, &["udp-sink", "10.201.52.1:5501"]);
    sink2.expect_line("listening", Duration::from_secs(10));
    udp(b, "10.201.52.1:5501", 3, 50);
    let closed = daemon.closed_windows().len();
    daemon.wait_for_window(closed, WAIT);

    // More traffic, then the interface goes away in the middle of a window.
    udp(b, &format!("{h4}:5500"), 4, 70);
    a.exec_ok(&["ip", "link", "del", "veth-h"]);
    let removed = unix_now();
    daemon.wait_for_log("ENI eni-h lost its interface", WAIT);
    let closed = daemon.closed_windows().len();
    daemon.wait_for_window(closed + 1, WAIT);
    daemon.stop();
    let log = daemon.log();
    let records = read_json_records(&records_path);
    let show = || {
        format!(
            "{}\n{log}",
            records
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    };

    // Every datagram, on eni-h, with eni-h's ids: 28 bytes of headers each.
    assert_eq!(
        sum_to(&records, "eni-h", &h4),
        (9, 5 * 128 + 4 * 98),
        "{}",
        show()
    );
    assert_eq!(
        sum_to(&records, "eni-h", "10.201.52.1"),
        (3, 3 * 78),
        "{}",
        show()
    );
    for r in records.iter().filter(|r| r["eni-id"] == "eni-h") {
        assert_eq!(
            (&r["vpc-id"], &r["vswitch-id"]),
            (&Value::from("vpc-hp"), &Value::from("vsw-test")),
            "{r}"
        );
        let (start, end) = window_of(r);
        // Not before it existed, not after it was gone (NODATA included).
        assert!(
            end > plugged && start <= removed,
            "{r}\nplugged {plugged}, removed {removed}\n{}",
            show()
        );
    }
    // The flow of the removal's window was emitted with that window.
    let last: Vec<&Value> = records
        .iter()
        .filter(|r| r["eni-id"] == "eni-h" && r["log-status"] == "OK" && r["packets"] == 4)
        .collect();
    assert_eq!(last.len(), 1, "{}", show());
    let (start, end) = window_of(last[0]);
    assert!(
        start <= removed && removed <= end,
        "{}: removed at {removed}",
        last[0]
    );

    // eni-a exists and is idle: NODATA in every window; eni-h gets none
    // for the windows before it appeared or after it was gone.
    // A window closed in the second it opened (SIGTERM right at a
    // boundary) lasted no time and has no NODATA.
    let windows: Vec<(i64, i64)> = closed_windows(&log)
        .into_iter()
        .filter(|(s, e)| e > s)
        .collect();
    let nodata = |eni: &str| -> Vec<(i64, i64)> {
        records
            .iter()
            .filter(|r| r["eni-id"] == eni && r["log-status"] == "NODATA")
            .map(window_of)
            .collect()
    };
    assert_eq!(nodata("eni-a"), windows, "{}", show());
    assert!(
        windows.iter().any(|&(_, end)| end <= plugged),
        "a window before the plug: {windows:?}"
    );
    assert!(
        windows.iter().any(|&(start, _)| start > removed),
        "a window after the removal: {windows:?}"
    );
    for w in nodata("eni-h") {
        assert!(
            w.1 > plugged && w.0 <= removed,
            "NODATA for eni-h in {w:?}\n{}",
            show()
        );
    }
}
