//! The last window, closed at SIGTERM, takes every event that arrives
//! while it closes. The kernel removes expired conntrack entries lazily,
//! often only when a dump passes them: idle UDP flows whose timeout has
//! run out when the daemon stops send their DESTROY events during the final
//! dump and after it. Those must count in the window that is emitted, not
//! in a next one that never is.

use std::time::{Duration, Instant};

use flowlogd_tests::netns::LineProcess;
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");

const FLOWS: u64 = 100;
const PACKETS_PER_FLOW: u64 = 60;
const PAYLOAD: u64 = 100;
/// IPv4 (20) and UDP (8) headers: conntrack counts IP-layer bytes.
const HEADERS: u64 = 28;

/// 100 UDP flows of 60 datagrams each with the UDP timeout at 1 s, and
/// SIGTERM 3 s after the last datagram, when every entry has expired but
/// (lazily removed) usually still sits in the table: the records of the
/// final window sum to exactly the 6,000 datagrams sent, one record per flow.
#[test]
fn stop_after_idle_udp_flows_expired_counts_every_packet() {
    if !require_root("stop_after_idle_udp_flows_expired_counts_every_packet") {
        return;
    }
    let s = Scenario::builder("final-window")
        .namespaces("fwa", "fwb")
        .veth("veth-a", "veth-b", 43)
        .build();
    let (a, b, a_end) = (&s.a, &s.b, &s.ea);
    let out = s.path("out.jsonl");
    // A long window: the final close at SIGTERM is the only one.
    let config = s
        .config()
        .window_secs(3600)
        .eni("eni-a", "veth-a", "vpc-f")
        .flow_log(FlowLog::vpc("all", "vpc-f").sinks(&["out"]))
        .json_sink("out", &out);
    let cfg = s.write_config("flowlogd.toml", &config);
    let mut daemon = s.start_daemon(&cfg, "daemon.log");
    // The daemon's tracking made nf_conntrack load; the timeout is this
    // namespace's own.
    a.exec_ok(&[
        "sysctl",
        "-q",
        "-w",
        "net.netfilter.nf_conntrack_udp_timeout=1",
    ]);

    let target = format!("{}:5500", a_end.v4);
    let mut sink = LineProcess::traffic(a, TRAFFIC, &["udp-sink", &target]);
    sink.expect_line("listening", Duration::from_secs(10));
    let mut client = LineProcess::traffic(
        b,
        TRAFFIC,
        &[
            "udp-flows",
            &target,
            &FLOWS.to_string(),
            &PACKETS_PER_FLOW.to_string(),
            &PAYLOAD.to_string(),
            "21000",
        ],
    );
    client.expect_line("sent", Duration::from_secs(30));
    let last_packet = Instant::now();
    // Every entry is unreplied, so its timeout is the 1 s just set: 3 s
    // after the last datagram all have expired.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(last_packet.elapsed()));
    daemon.stop();
    let log = daemon.log();

    let records: Vec<Value> = read_json_records(&out)
        .into_iter()
        .filter(|r| r["log-status"] == "OK" && r["protocol"] == 17 && r["direction"] == "in")
        .collect();
    let packets: u64 = records.iter().map(|r| r["packets"].as_u64().unwrap()).sum();
    let bytes: u64 = records.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
    assert_eq!(
        (packets, bytes),
        (
            FLOWS * PACKETS_PER_FLOW,
            FLOWS * PACKETS_PER_FLOW * (PAYLOAD + HEADERS)
        ),
        "{} records\n{log}",
        records.len()
    );
    let ports: std::collections::BTreeSet<u64> = records
        .iter()
        .map(|r| r["srcport"].as_u64().unwrap())
        .collect();
    assert_eq!(ports.len() as u64, FLOWS, "one record per flow: {ports:?}");
    assert_eq!(records.len() as u64, FLOWS, "{records:#?}");
    // One window: the one closed at SIGTERM.
    let windows: std::collections::BTreeSet<(i64, i64)> = records
        .iter()
        .map(|r| (r["start"].as_i64().unwrap(), r["end"].as_i64().unwrap()))
        .collect();
    assert_eq!(windows.len(), 1, "{windows:?}");
}
