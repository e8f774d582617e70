//! REJECT records end to end: firewall rules in a test namespace drop and
//! log packets to NFLOG; the daemon in that namespace turns them into
//! REJECT records. The ground truth for every drop rule is its own nft
//! `counter` (packets and IP-layer bytes the kernel dropped there); for
//! UDP it is also computed from what was sent (28 + payload bytes each).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use flowlogd_tests::netns::{udp_accepted_and_dropped, DaemonProcess, LineProcess, Netns, VethEnd};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");

/// A ruleset standing in for a security group, with a counter on every
/// drop rule so the test knows exactly what the kernel dropped.
const RULES: &str = r#"table inet sgtest {
	chain input {
		type filter hook input priority filter; policy accept;
		ct state established,related accept
		tcp dport 2323 counter log group 100 prefix "flowlogd:sg-test:deny-telnet" drop
		udp dport 1161 counter log group 100 prefix "flowlogd:sg-test:deny-snmp" drop
		udp dport 1999 counter log group 100 prefix "another-tool: " drop
	}
	chain output {
		type filter hook output priority filter; policy accept;
		tcp dport 2525 counter log group 100 prefix "flowlogd:sg-test:deny-smtp-out" drop
	}
}
"#;

struct Lab {
    // Field order is drop order: processes before namespaces.
    daemon: Option<DaemonProcess>,
    tmp: TempDir,
    a_end: VethEnd,
    b_end: VethEnd,
    b: Netns,
    a: Netns,
}

/// Namespace `a` (the VM: ENI eni-a on its veth, the daemon, the rules)
/// and `b` (a peer), with the flow logs and sinks `flow_logs` adds (file
/// sinks in the scratch directory it is given).
fn lab(
    label: &str,
    rules: &str,
    flow_logs: impl FnOnce(DaemonConfig, &Path) -> DaemonConfig,
) -> Lab {
    let Scenario {
        a,
        b,
        ea: a_end,
        eb: b_end,
        tmp,
        plugins,
        ..
    } = Scenario::builder(label)
        .veth("veth-a", "veth-b", 31)
        .build();
    a.load_nft(rules);
    let config = DaemonConfig::new(&plugins)
        .window_secs(600)
        .daemon_key("nflog_groups = [100]")
        .eni("eni-a", "veth-a", "vpc-lab");
    let cfg = flow_logs(config, tmp.path()).write(&tmp.join("flowlogd.toml"));
    let daemon = DaemonProcess::start(&a, &cfg, &tmp.join("daemon.log"));
    Lab {
        daemon: Some(daemon),
        tmp,
        a_end,
        b_end,
        b,
        a,
    }
}

/// `(packets, bytes)` of the counter of the rule with `prefix` in `ns`.
#[track_caller]
fn nft_counter(ns: &Netns, prefix: &str) -> (u64, u64) {
    let ruleset = ns.exec_ok(&["nft", "list", "ruleset"]);
    let line = ruleset
        .lines()
        .find(|l| l.contains(&format!("prefix \"{prefix}\"")))
        .unwrap_or_else(|| panic!("no rule with prefix {prefix}:\n{ruleset}"));
    let num = |key: &str| -> u64 {
        let rest = line
            .split(key)
            .nth(1)
            .unwrap_or_else(|| panic!("no {key} in {line}"));
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    (num("counter packets "), num(" bytes "))
}

impl Lab {
    fn stop(&mut self) -> String {
        let mut d = self.daemon.take().expect("running");
        d.stop();
        d.log()
    }

    fn records(&self, file: &str) -> Vec<Value> {
        read_json_records(&self.tmp.join(file))
    }
}

/// Sums packets and bytes of OK records by (action, direction, rule).
fn totals(records: &[Value]) -> BTreeMap<(String, String, String), (u64, u64)> {
    let mut t = BTreeMap::new();
    for r in records.iter().filter(|r| r["log-status"] == "OK") {
        let key = (
            r["action"].as_str().unwrap().to_owned(),
            r["direction"].as_str().unwrap().to_owned(),
            r["rule"].as_str().unwrap_or("").to_owned(),
        );
        let e = t.entry(key).or_insert((0, 0));
        e.0 += r["packets"].as_u64().unwrap();
        e.1 += r["bytes"].as_u64().unwrap();
    }
    t
}

fn key(action: &str, direction: &str, rule: &str) -> (String, String, String) {
    (action.to_owned(), direction.to_owned(), rule.to_owned())
}

/// TCP connection attempts from `ns` to `addr:port` that the peer drops:
/// each attempt is a SYN (and its retransmissions until `secs`).
fn tcp_attempts(ns: &Netns, addr: &str, port: u16, attempts: usize, secs: f32) {
    for _ in 0..attempts {
        // Exit status is the timeout's: the connection never completes.
        ns.exec(&[
            "timeout",
            &format!("{secs}"),
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{addr}/{port}"),
        ]);
    }
}

/// One flow log of all traffic of the VPC into `all.jsonl`.
fn all_to_file(config: DaemonConfig, tmp: &Path) -> DaemonConfig {
    config
        .flow_log(
            FlowLog::vpc("all", "vpc-lab")
                .traffic("all")
                .sinks(&["all"]),
        )
        .json_sink("all", &tmp.join("all.jsonl"))
}

/// TCP SYNs to a dropped port, UDP datagrams to a dropped port, and
/// outbound TCP dropped by an egress rule: REJECT records whose packets and
/// bytes equal each rule's kernel counter, on ENI eni-a, in the right
/// direction, with the rule taken from the log prefix and the 5-tuple of
/// the packets.
#[test]
fn drops_become_exact_reject_records() {
    if !require_root("drops_become_exact_reject_records") {
        return;
    }
    let mut lab = lab("nfdrop", RULES, all_to_file);
    let (a4, b4) = (lab.a_end.v4.to_string(), lab.b_end.v4.to_string());
    tcp_attempts(&lab.b, &a4, 2323, 3, 0.5);
    let mut udp = LineProcess::traffic(
        &lab.b,
        TRAFFIC,
        &["udp-client", &format!("{a4}:1161"), "7", "100", "0"],
    );
    udp.expect_line("done", Duration::from_secs(10));
    let udp_port: u16 = udp
        .output()
        .lines()
        .find_map(|l| l.strip_prefix("local "))
        .unwrap()
        .parse()
        .unwrap();
    tcp_attempts(&lab.a, &b4, 2525, 2, 0.5);
    std::thread::sleep(Duration::from_millis(300));
    let telnet = nft_counter(&lab.a, "flowlogd:sg-test:deny-telnet");
    let snmp = nft_counter(&lab.a, "flowlogd:sg-test:deny-snmp");
    let smtp = nft_counter(&lab.a, "flowlogd:sg-test:deny-smtp-out");
    let log = lab.stop();

    let records = lab.records("all.jsonl");
    let t = totals(&records);
    assert!(
        telnet.0 >= 3 && smtp.0 >= 2,
        "too few SYNs counted: {telnet:?} {smtp:?}"
    );
    assert_eq!(
        t.get(&key("REJECT", "in", "sg-test:deny-telnet")),
        Some(&telnet),
        "{records:#?}\n{log}"
    );
    assert_eq!(
        t.get(&key("REJECT", "out", "sg-test:deny-smtp-out")),
        Some(&smtp),
        "{records:#?}\n{log}"
    );
    // UDP: 7 datagrams of 100 bytes, 128 bytes each at the IP layer.
    assert_eq!(snmp, (7, 7 * 128));
    assert_eq!(
        t.get(&key("REJECT", "in", "sg-test:deny-snmp")),
        Some(&snmp),
        "{records:#?}\n{log}"
    );
    // The UDP record's 5-tuple is the datagrams'.
    let udp_rec: Vec<&Value> = records
        .iter()
        .filter(|r| r["rule"] == "sg-test:deny-snmp")
        .collect();
    assert_eq!(udp_rec.len(), 1, "{udp_rec:?}");
    let r = udp_rec[0];
    assert_eq!(
        (
            &r["srcaddr"],
            &r["srcport"],
            &r["dstaddr"],
            &r["dstport"],
            &r["protocol"],
            &r["eni-id"]
        ),
        (
            &Value::from(b4.clone()),
            &Value::from(udp_port),
            &Value::from(a4.clone()),
            &Value::from(1161),
            &Value::from(17),
            &Value::from("eni-a")
        )
    );
    // Outbound drops: source is the ENI's address.
    for r in records
        .iter()
        .filter(|r| r["rule"] == "sg-test:deny-smtp-out")
    {
        assert_eq!(
            (
                r["srcaddr"].as_str(),
                r["dstaddr"].as_str(),
                r["dstport"].as_u64()
            ),
            (Some(a4.as_str()), Some(b4.as_str()), Some(2525))
        );
    }
    assert!(
        records.iter().all(|r| r["log-status"] == "OK"),
        "{records:#?}"
    );
}

/// The same client has accepted and rejected traffic at the same time:
/// ACCEPT records from conntrack and REJECT records from NFLOG side by
/// side, each exact.
#[test]
fn accepted_and_rejected_traffic_side_by_side() {
    if !require_root("accepted_and_rejected_traffic_side_by_side") {
        return;
    }
    let mut lab = lab("nfmix", RULES, all_to_file);
    let a4 = lab.a_end.v4.to_string();
    let _server = udp_accepted_and_dropped(&lab.a, &lab.b, TRAFFIC, &a4, 5300);
    std::thread::sleep(Duration::from_millis(300));
    let snmp = nft_counter(&lab.a, "flowlogd:sg-test:deny-snmp");
    let log = lab.stop();
    let t = totals(&lab.records("all.jsonl"));
    // Accepted: 4 x (28 + 60) in, 2 x (28 + 40) out.
    assert_eq!(
        t.get(&key("ACCEPT", "in", "")),
        Some(&(4, 4 * 88)),
        "{t:?}\n{log}"
    );
    assert_eq!(
        t.get(&key("ACCEPT", "out", "")),
        Some(&(2, 2 * 68)),
        "{t:?}\n{log}"
    );
    assert_eq!(snmp, (5, 5 * 38));
    assert_eq!(
        t.get(&key("REJECT", "in", "sg-test:deny-snmp")),
        Some(&snmp),
        "{t:?}\n{log}"
    );
}

/// Instances with traffic = "accept", "reject" and "all" each get exactly
/// what they asked for.
#[test]
fn traffic_filters_per_instance() {
    if !require_root("traffic_filters_per_instance") {
        return;
    }
    let flow_logs = |mut config: DaemonConfig, tmp: &Path| {
        for t in ["all", "accept", "reject"] {
            config = config.flow_log(FlowLog::eni(t, "eni-a").traffic(t).sinks(&[t]));
        }
        for t in ["all", "accept", "reject"] {
            config = config.json_sink(t, &tmp.join(format!("{t}.jsonl")));
        }
        config
    };
    let mut lab = lab("nffilt", RULES, flow_logs);
    let a4 = lab.a_end.v4.to_string();
    let mut server = LineProcess::traffic(
        &lab.a,
        TRAFFIC,
        &["udp-server", &format!("{a4}:5300"), "3", "0", "0"],
    );
    server.expect_line("listening", Duration::from_secs(10));
    let mut ok = LineProcess::traffic(
        &lab.b,
        TRAFFIC,
        &["udp-client", &format!("{a4}:5300"), "3", "20", "0"],
    );
    let mut dropped = LineProcess::traffic(
        &lab.b,
        TRAFFIC,
        &["udp-client", &format!("{a4}:1161"), "2", "20", "0"],
    );
    ok.expect_line("done", Duration::from_secs(10));
    dropped.expect_line("done", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let log = lab.stop();
    let all = lab.records("all.jsonl");
    let accept = lab.records("accept.jsonl");
    let reject = lab.records("reject.jsonl");
    let actions = |rs: &[Value]| -> Vec<String> {
        let mut v: Vec<String> = rs
            .iter()
            .map(|r| r["action"].as_str().unwrap_or("-").to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(actions(&all), ["ACCEPT", "REJECT"], "{all:#?}\n{log}");
    assert_eq!(actions(&accept), ["ACCEPT"], "{accept:#?}");
    assert_eq!(actions(&reject), ["REJECT"], "{reject:#?}");
    // The filtered instances carry the same records as "all", not copies
    // with other numbers.
    let accept_in_all: Vec<Value> = all
        .iter()
        .filter(|r| r["action"] == "ACCEPT")
        .cloned()
        .collect();
    let reject_in_all: Vec<Value> = all
        .iter()
        .filter(|r| r["action"] == "REJECT")
        .cloned()
        .collect();
    expect_records(&accept, &accept_in_all);
    expect_records(&reject, &reject_in_all);
    assert_eq!(reject[0]["packets"], 2);
}

/// The shipped etc/security-group.nft, loaded as is, produces REJECT
/// records with its rule names, and lets allowed traffic through.
#[test]
fn shipped_security_group_produces_reject_records() {
    if !require_root("shipped_security_group_produces_reject_records") {
        return;
    }
    let rules = std::fs::read_to_string(workspace_root().join("etc/security-group.nft")).unwrap();
    let mut lab = lab("nfsg", &rules, all_to_file);
    let (a4, b4) = (lab.a_end.v4.to_string(), lab.b_end.v4.to_string());
    // Inbound UDP is not allowed by the example: dropped as deny-in.
    let mut dropped = LineProcess::traffic(
        &lab.b,
        TRAFFIC,
        &["udp-client", &format!("{a4}:5353"), "3", "50", "0"],
    );
    dropped.expect_line("done", Duration::from_secs(10));
    // Outbound SMTP is denied by the egress rule.
    tcp_attempts(&lab.a, &b4, 25, 1, 0.5);
    // Ping is allowed: ACCEPT, not REJECT.
    lab.b
        .exec_ok(&["ping", "-c", "2", "-i", "0.2", "-W", "2", &a4]);
    std::thread::sleep(Duration::from_millis(300));
    let log = lab.stop();
    let records = lab.records("all.jsonl");
    let t = totals(&records);
    assert_eq!(
        t.get(&key("REJECT", "in", "sg-default:deny-in")),
        Some(&(3, 3 * 78)),
        "{t:?}\n{log}"
    );
    assert!(
        t.get(&key("REJECT", "out", "sg-default:deny-smtp-out"))
            .is_some_and(|(p, _)| *p >= 1),
        "{t:?}\n{log}"
    );
    assert_eq!(
        t.get(&key("ACCEPT", "in", "")),
        Some(&(2, 2 * 84)),
        "{t:?}\n{log}"
    );
}

/// Packets logged on the group by another tool's rule (a prefix that is
/// not flowlogd's) give no record, and are counted in the log. Drops by a
/// flowlogd rule in the same run are the control: the daemon does write
/// their record, so an empty file cannot pass for "ignored".
#[test]
fn foreign_prefixes_are_ignored_and_counted() {
    if !require_root("foreign_prefixes_are_ignored_and_counted") {
        return;
    }
    let mut lab = lab("nfforeign", RULES, all_to_file);
    let a4 = lab.a_end.v4.to_string();
    for (port, datagrams) in [(1999, "4"), (1161, "3")] {
        let mut p = LineProcess::traffic(
            &lab.b,
            TRAFFIC,
            &["udp-client", &format!("{a4}:{port}"), datagrams, "10", "0"],
        );
        p.expect_line("done", Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = lab.stop();
    let records = lab.records("all.jsonl");
    // One record, the control's: nothing of the 4 foreign-prefix drops.
    assert_eq!(records.len(), 1, "{records:#?}\n{log}");
    let r = &records[0];
    assert_eq!(
        (
            &r["action"],
            &r["rule"],
            &r["dstport"],
            &r["packets"],
            &r["log-status"]
        ),
        (
            &Value::from("REJECT"),
            &Value::from("sg-test:deny-snmp"),
            &Value::from(1161),
            &Value::from(3),
            &Value::from("OK")
        ),
        "{records:#?}"
    );
    assert!(log.contains("4 with a foreign prefix ignored"), "{log}");
}

/// A flood of dropped packets over a few 5-tuples: one record per 5-tuple
/// (memory is one entry per 5-tuple per window, not per packet), exact
/// totals or SKIPDATA (never a silent gap), a bounded daemon RSS, and a
/// daemon that still answers SIGTERM at once.
#[test]
fn a_flood_of_drops_stays_bounded() {
    if !require_root("a_flood_of_drops_stays_bounded") {
        return;
    }
    let mut lab = lab("nfflood", RULES, all_to_file);
    let a4 = lab.a_end.v4.to_string();
    let rss_before = rss_kib(lab.daemon.as_ref().unwrap().pid());
    const FLOWS: usize = 8;
    const PER_FLOW: u64 = 5000;
    let mut senders: Vec<LineProcess> = (0..FLOWS)
        .map(|_| {
            LineProcess::traffic(
                &lab.b,
                TRAFFIC,
                &[
                    "udp-client",
                    &format!("{a4}:1161"),
                    &PER_FLOW.to_string(),
                    "64",
                    "0",
                ],
            )
        })
        .collect();
    for s in &mut senders {
        s.expect_line("done", Duration::from_secs(30));
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss_kib(lab.daemon.as_ref().unwrap().pid());
    let counter = nft_counter(&lab.a, "flowlogd:sg-test:deny-snmp");
    let started = std::time::Instant::now();
    let log = lab.stop();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGTERM took {:?}",
        started.elapsed()
    );
    let records = lab.records("all.jsonl");
    let rejects: Vec<&Value> = records.iter().filter(|r| r["action"] == "REJECT").collect();
    assert_eq!(rejects.len(), FLOWS, "one record per 5-tuple: {rejects:#?}");
    let skipped = records.iter().any(|r| r["log-status"] == "SKIPDATA");
    let t = totals(&records);
    let got = t
        .get(&key("REJECT", "in", "sg-test:deny-snmp"))
        .copied()
        .unwrap_or_default();
    if skipped {
        assert!(
            log.contains("nflog: lost logged packets"),
            "SKIPDATA without a log line:\n{log}"
        );
        assert!(got.0 < counter.0);
    } else {
        assert_eq!(got, counter, "{log}");
        assert_eq!(
            counter,
            (FLOWS as u64 * PER_FLOW, FLOWS as u64 * PER_FLOW * 92)
        );
    }
    assert!(
        rss_after < rss_before + 16 * 1024,
        "daemon RSS grew from {rss_before} KiB to {rss_after} KiB over {} dropped packets",
        counter.0
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
