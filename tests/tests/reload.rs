//! SIGHUP reloads the config without losing counters: the open window is
//! emitted under the old config, capture continues under the new one, and
//! a connection's records across the reload sum to the kernel's counters.
//! A config that does not validate is refused and the daemon carries on.

use std::time::Duration;

use flowlogd_tests::netns::{veth_pair, DaemonProcess, LineProcess, Netns};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");

fn config(plugins: &std::path::Path, tmp: &TempDir, sinks: &[&str]) -> String {
    let mut body = eni_toml("eni-a", "veth-a", "vpc-r");
    body.push_str(&format!(
        "[[flow_log]]\nname = \"all\"\nresource_type = \"vpc\"\nresource_id = \"vpc-r\"\nsinks = [{}]\n\n",
        sinks.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
    ));
    for s in sinks {
        body.push_str(&format!(
            "[sinks.{s}]\nplugin = \"file\"\npath = \"{}\"\nformat = \"json\"\n\n",
            tmp.join(&format!("{s}.jsonl")).display()
        ));
    }
    config_with(plugins, &body).replace("[daemon]\n", "[daemon]\ncapture_window_secs = 600\n")
}

fn hup(pid: u32) {
    let o = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

fn sum(records: &[Value], direction: &str) -> (u64, u64) {
    records
        .iter()
        .filter(|r| r["log-status"] == "OK" && r["direction"] == direction && r["protocol"] == 17)
        .fold((0, 0), |(p, b), r| {
            (
                p + r["packets"].as_u64().unwrap(),
                b + r["bytes"].as_u64().unwrap(),
            )
        })
}

/// Traffic before and after a SIGHUP that adds a second sink: the first
/// window (closed early by the reload) goes to the old sink only, the
/// second to both, and over both windows the UDP flow's records sum to
/// exactly what was sent.
#[test]
fn sighup_reloads_without_losing_counters() {
    if !require_root("sighup_reloads_without_losing_counters") {
        return;
    }
    let a = Netns::new("hupa");
    let b = Netns::new("hupb");
    let (a_end, _) = veth_pair(&a, "veth-a", &b, "veth-b", 41);
    let tmp = TempDir::new("reload");
    let plugins = plugin_dir(&tmp);
    let cfg = tmp.join("flowlogd.toml");
    std::fs::write(&cfg, config(&plugins, &tmp, &["one"])).unwrap();
    let mut daemon = DaemonProcess::start(&a, &cfg, &tmp.join("daemon.log"));

    let target = format!("{}:5400", a_end.v4);
    let mut server = LineProcess::traffic(&a, TRAFFIC, &["udp-sink", &target]);
    server.expect_line("listening", Duration::from_secs(10));
    // One UDP flow (one socket, one 5-tuple) on both sides of the reload.
    let mut client = LineProcess::traffic(&b, TRAFFIC, &["udp-client", &target, "5", "100", "0"]);
    client.expect_line("done", Duration::from_secs(10));

    // An invalid config is refused; the daemon carries on.
    std::fs::write(&cfg, "[daemon]\ncapture_window_secs = 0\n").unwrap();
    hup(daemon.pid());
    daemon.wait_for_log(
        "reload refused, keeping the running config",
        Duration::from_secs(10),
    );

    std::fs::write(&cfg, config(&plugins, &tmp, &["one", "two"])).unwrap();
    hup(daemon.pid());
    daemon.wait_for_log(
        "reloaded: 1 ENIs, 1 flow logs, 2 sinks",
        Duration::from_secs(10),
    );
    // Same 5-tuple again: the same conntrack entry continues.
    let port = client
        .output()
        .lines()
        .find_map(|l| l.strip_prefix("local ").map(str::to_owned))
        .unwrap();
    let mut again = LineProcess::traffic(&b, TRAFFIC, &["udp-burst", &target, "1", "100", &port]);
    again.expect_line("sent 1", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    daemon.stop();
    let log = daemon.log();

    let one = read_json_records(&tmp.join("one.jsonl"));
    let two = read_json_records(&tmp.join("two.jsonl"));
    // Over both windows: 6 datagrams of 128 bytes in, nothing lost or doubled.
    assert_eq!(sum(&one, "in"), (6, 6 * 128), "{one:#?}\n{log}");
    // The second sink only has the window after the reload: 1 datagram.
    assert_eq!(sum(&two, "in"), (1, 128), "{two:#?}\n{log}");
    let windows: std::collections::BTreeSet<(i64, i64)> = one
        .iter()
        .map(|r| (r["start"].as_i64().unwrap(), r["end"].as_i64().unwrap()))
        .collect();
    assert!(
        windows.len() >= 2,
        "the reload closes the window early: {windows:?}"
    );
}
