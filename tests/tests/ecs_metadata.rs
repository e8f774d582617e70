//! ENI ids from the ECS instance metadata service (`[metadata] source =
//! "ecs"`), against a stand-in that serves the service's real paths on
//! 127.0.0.1 inside the daemon's namespace (`flowlogd-metadata`): the ids
//! land in the records, static `[[eni]]` tables override the service, and
//! a service that is down at start delays the records (or reports them
//! with `-` ids) until it answers, with nothing lost.

use std::time::Duration;

use flowlogd_tests::netns::{unix_now, veth_pair, DaemonProcess, LineProcess, Netns};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");
const METADATA: &str = env!("CARGO_BIN_EXE_flowlogd-metadata");
const SERVICE: &str = "127.0.0.1:8080";
const WAIT: Duration = Duration::from_secs(40);

/// The MAC of `interface` in `ns`, as `ip link` prints it.
#[track_caller]
fn mac_of(ns: &Netns, interface: &str) -> String {
    let out = ns.exec_ok(&["ip", "-o", "link", "show", "dev", interface]);
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no link/ether in {out:?}"))
        .to_owned()
}

/// The stand-in service in `ns`, describing `enis` (MAC, ENI id, VSwitch id).
fn service(ns: &Netns, enis: &[(&str, &str, &str)]) -> LineProcess {
    let mut args = vec![
        SERVICE.to_owned(),
        "i-ecs-test".into(),
        "1234567890123456".into(),
    ];
    args.extend(
        enis.iter()
            .map(|(mac, eni, vsw)| format!("{mac}={eni},vpc-ecs,{vsw}")),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = LineProcess::spawn(ns, METADATA, &args);
    p.expect_line("listening", Duration::from_secs(10));
    p
}

/// A config with ENIs from the service, `extra` (static `[[eni]]` tables),
/// and one VPC-scoped flow log for vpc-ecs into `records`.
fn config(s: &Scenario, window_secs: i64, unmapped: &str, extra: &str) -> std::path::PathBuf {
    let config = s
        .config()
        .window_secs(window_secs)
        .toml(&format!(
            "[metadata]\nsource = \"ecs\"\nbase_url = \"http://{SERVICE}/latest/meta-data/\"\nunmapped = \"{unmapped}\"\n\n\
             {extra}"
        ))
        .flow_log(FlowLog::vpc("vpc", "vpc-ecs").sinks(&["all"]))
        .json_sink("all", &s.path("all.jsonl"));
    s.write_config("flowlogd.toml", &config)
}

#[track_caller]
fn udp(from: &Netns, to: &str, count: u32) {
    let mut c = LineProcess::traffic(
        from,
        TRAFFIC,
        &["udp-client", to, &count.to_string(), "100", "0"],
    );
    c.expect_line("done", Duration::from_secs(10));
}

/// Packets and bytes of the OK records to `dst` whose eni-id is `eni`.
fn sum(records: &[Value], eni: &str, dst: &str) -> (u64, u64) {
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

fn show(records: &[Value], log: &str) -> String {
    format!(
        "{}\n{log}",
        records
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// `flowlogd check-config` in `ns`.
fn check_config(ns: &Netns, cfg: &std::path::Path) -> std::process::Output {
    let bin = flowlogd_bin();
    ns.exec(&[
        bin.to_str().unwrap(),
        "check-config",
        "--config",
        cfg.to_str().unwrap(),
    ])
}

#[test]
fn ecs_ids_land_in_records_and_static_enis_override_them() {
    if !require_root("ecs_ids_land_in_records_and_static_enis_override_them") {
        return;
    }
    let s = Scenario::builder("ecs")
        .namespaces("ecsa", "ecsb")
        .veth("veth-a", "veth-b", 61)
        .build();
    let (a, b, va, tmp) = (&s.a, &s.b, &s.ea, &s.tmp);
    let (vs, _) = veth_pair(a, "veth-s", b, "veth-sb", 62);
    let (mac_a, mac_s) = (mac_of(a, "veth-a"), mac_of(a, "veth-s"));
    let cfg = config(
        &s,
        600,
        "ignore",
        &eni_toml("eni-static-s", "veth-s", "vpc-ecs"),
    );

    // check-config says the service cannot be reached, and is fine with it.
    let o = check_config(a, &cfg);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("(metadata service not reachable, asked once with a 1 s timeout: instance-id: cannot connect"), "{}", text(&o));

    let _service = service(
        a,
        &[
            (&mac_a, "eni-ecs-a", "vsw-ecs-1"),
            (&mac_s, "eni-service-s", "vsw-ecs-2"),
        ],
    );
    let o = check_config(a, &cfg);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for expected in [
        format!("metadata: ecs at http://{SERVICE}/latest/meta-data/ (fetched again every 300 s; interfaces it does not describe: ignore); [[eni]] tables override it"),
        "  eni-static-s (interface veth-s): vswitch vsw-test, vpc vpc-ecs, vm i-test, account 1234567890; captured by: vpc; ids from static config".to_owned(),
        format!("  eni-ecs-a (mac {mac_a}, interface veth-a): vswitch vsw-ecs-1, vpc vpc-ecs, vm i-ecs-test, account 1234567890123456; captured by: vpc; ids from ecs"),
        format!("  eni-service-s (mac {mac_s}, interface veth-s): described by the metadata service, overridden by [[eni]] eni-static-s"),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in\n{}", text(&o));
    }

    let mut daemon = DaemonProcess::start(a, &cfg, &tmp.join("daemon.log"));
    daemon.wait_for_log("metadata: ENI eni-ecs-a (matched by mac", WAIT);
    let mut sink = LineProcess::traffic(a, TRAFFIC, &["udp-sink", &format!("{}:5600", va.v4)]);
    sink.expect_line("listening", Duration::from_secs(10));
    let mut sink_s = LineProcess::traffic(a, TRAFFIC, &["udp-sink", &format!("{}:5600", vs.v4)]);
    sink_s.expect_line("listening", Duration::from_secs(10));
    udp(b, &format!("{}:5600", va.v4), 5);
    udp(b, &format!("{}:5600", vs.v4), 2);

    // A reload keeps what the service said: the ENI is described at once,
    // and its traffic after the reload still carries the service's ids.
    let o = std::process::Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    daemon.wait_for_log("reloaded:", WAIT);
    let after_reload = daemon
        .log()
        .split("SIGHUP: reloading")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(
        after_reload.contains(&format!(
            "INFO  ENI eni-ecs-a (matched by mac {mac_a}): vswitch vsw-ecs-1"
        )),
        "{after_reload}"
    );
    udp(b, &format!("{}:5600", va.v4), 1);
    std::thread::sleep(Duration::from_millis(200));
    daemon.stop();
    let log = daemon.log();
    let records = read_json_records(&tmp.join("all.jsonl"));

    assert_eq!(
        sum(&records, "eni-ecs-a", &va.v4.to_string()),
        (6, 6 * 128),
        "{}",
        show(&records, &log)
    );
    assert_eq!(
        sum(&records, "eni-static-s", &vs.v4.to_string()),
        (2, 2 * 128),
        "{}",
        show(&records, &log)
    );
    for r in &records {
        let ids = (
            &r["eni-id"],
            &r["vswitch-id"],
            &r["vpc-id"],
            &r["vm-id"],
            &r["account-id"],
        );
        match r["eni-id"].as_str() {
            Some("eni-ecs-a") => assert_eq!(
                ids,
                (
                    &r["eni-id"],
                    &Value::from("vsw-ecs-1"),
                    &Value::from("vpc-ecs"),
                    &Value::from("i-ecs-test"),
                    &Value::from("1234567890123456")
                ),
                "{r}"
            ),
            Some("eni-static-s") => assert_eq!(
                ids,
                (
                    &r["eni-id"],
                    &Value::from("vsw-test"),
                    &Value::from("vpc-ecs"),
                    &Value::from("i-test"),
                    &Value::from("1234567890")
                ),
                "{r}"
            ),
            _ => panic!("unexpected record {r}\n{}", show(&records, &log)),
        }
    }
}

/// The service is down when the daemon starts, traffic flows, then the
/// service comes up and more traffic flows. Returns the records, the log,
/// the address the traffic went to and when the service came up.
fn down_at_start(
    label: &str,
    unmapped: &str,
    before: impl FnOnce(&[Value], &str),
) -> (Vec<Value>, String, String, i64) {
    let s = Scenario::builder(label)
        .veth("veth-a", "veth-b", 63)
        .build();
    let (a, b, va, tmp) = (&s.a, &s.b, &s.ea, &s.tmp);
    let mac_a = mac_of(a, "veth-a");
    let cfg = config(&s, 2, unmapped, "");
    let mut daemon = DaemonProcess::start(a, &cfg, &tmp.join("daemon.log"));
    daemon.wait_for_log(
        "metadata: cannot read the service: instance-id: cannot connect",
        WAIT,
    );
    let target = format!("{}:5600", va.v4);
    let mut sink = LineProcess::traffic(a, TRAFFIC, &["udp-sink", &target]);
    sink.expect_line("listening", Duration::from_secs(10));
    udp(b, &target, 5);
    // Two windows close while the service is down.
    let closed = daemon.closed_windows().len();
    daemon.wait_for_window(closed + 1, WAIT);
    before(&read_json_records(&tmp.join("all.jsonl")), &daemon.log());

    let _service = service(a, &[(&mac_a, "eni-ecs-a", "vsw-ecs-1")]);
    let up = unix_now();
    daemon.wait_for_log("metadata: ENI eni-ecs-a (matched by mac", WAIT);
    assert!(
        daemon.log().contains("metadata: the service answers again"),
        "{}",
        daemon.log()
    );
    udp(b, &target, 3);
    let closed = daemon.closed_windows().len();
    daemon.wait_for_window(closed, WAIT);
    daemon.stop();
    (
        read_json_records(&tmp.join("all.jsonl")),
        daemon.log(),
        va.v4.to_string(),
        up,
    )
}

#[test]
fn ecs_down_at_start_delays_records_until_it_answers() {
    if !require_root("ecs_down_at_start_delays_records_until_it_answers") {
        return;
    }
    let (records, log, dst, up) = down_at_start("ecsdown", "ignore", |records, log| {
        // Held: nothing about the interface yet, not even NODATA.
        assert!(records.is_empty(), "{}", show(records, log));
        assert!(
            log.contains("records held for ENIs waiting for their ids"),
            "{log}"
        );
    });
    // All 8 datagrams, with the service's ids, once it answered.
    assert_eq!(
        sum(&records, "eni-ecs-a", &dst),
        (8, 8 * 128),
        "{}",
        show(&records, &log)
    );
    for r in records.iter().filter(|r| r["log-status"] == "OK") {
        assert_eq!(
            (&r["eni-id"], &r["vm-id"]),
            (&Value::from("eni-ecs-a"), &Value::from("i-ecs-test")),
            "{r}"
        );
        assert!(
            r["end"].as_i64().unwrap() >= up,
            "emitted before the service answered: {r} (up at {up})"
        );
    }
}

#[test]
fn ecs_down_at_start_reports_dash_ids_until_it_answers() {
    if !require_root("ecs_down_at_start_reports_dash_ids_until_it_answers") {
        return;
    }
    let (records, log, dst, _) = down_at_start("ecsdash", "report", |records, log| {
        assert_eq!(
            sum(records, "-", &records_dst(records)),
            (5, 5 * 128),
            "{}",
            show(records, log)
        );
    });
    // The first 5 with - ids, the 3 after the service answered with its
    // ids: nothing lost, nothing counted twice.
    assert_eq!(
        sum(&records, "-", &dst),
        (5, 5 * 128),
        "{}",
        show(&records, &log)
    );
    assert_eq!(
        sum(&records, "eni-ecs-a", &dst),
        (3, 3 * 128),
        "{}",
        show(&records, &log)
    );
    for r in records.iter().filter(|r| r["eni-id"] == "-") {
        assert_eq!(
            (&r["vpc-id"], &r["vm-id"], &r["account-id"]),
            (&Value::from("-"), &Value::from("-"), &Value::from("-")),
            "{r}"
        );
    }
}

/// The destination of the first OK record (the test's one target).
fn records_dst(records: &[Value]) -> String {
    records
        .iter()
        .find(|r| r["log-status"] == "OK")
        .and_then(|r| r["dstaddr"].as_str())
        .unwrap_or("none")
        .to_owned()
}
