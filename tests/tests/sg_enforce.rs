//! Security groups enforced through NFQUEUE (issue #16), end to end: the
//! daemon in namespace `a` (ENI eni-a on its veth) is the security group
//! of eni-a; `b` is a peer. Traffic is real TCP: a connection attempt
//! that reaches the other side is answered (accepted by a listener or
//! refused with a RST: the SYN passed either way), one that is dropped
//! times out. The ground truth for dropped SYNs is an nft `counter` on
//! the sending side's output.
//!
//! Namespaces are prefixed `fl21e`; every process is killed by its pid,
//! every namespace deleted by its name, also when a test fails.

use std::collections::BTreeMap;
use std::time::Duration;

use flowlogd_tests::netns::{DaemonProcess, LineProcess, Netns};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");

/// The policy of every test: web (8080) in, telnet (2323) in dropped by a
/// rule, smtp (2525) out dropped by a rule; anything else in falls to the
/// default ingress drop, anything else out to the default egress accept.
fn security_group(on_daemon_down: &str) -> String {
    format!(
        r#"
[enforcement]
queue = 100
on_daemon_down = "{on_daemon_down}"

[[security_group]]
id = "sg-lab"
enis = ["eni-a"]

[[security_group.rule]]
id = "allow-web"
direction = "ingress"
policy = "accept"
priority = 1
protocol = "tcp"
port_range = "8080/8080"
cidr = "0.0.0.0/0"

[[security_group.rule]]
id = "deny-telnet"
direction = "ingress"
policy = "drop"
priority = 1
protocol = "tcp"
port_range = "2323/2323"
cidr = "0.0.0.0/0"

[[security_group.rule]]
id = "deny-smtp-out"
direction = "egress"
policy = "drop"
priority = 1
protocol = "tcp"
port_range = "2525/2525"
cidr = "0.0.0.0/0"
"#
    )
}

/// Counts the SYNs a namespace sends, per destination port.
const SYN_COUNTERS: &str = r#"table inet fl21e_count {
	chain out {
		type filter hook output priority 0; policy accept;
		tcp flags syn tcp dport 2323 counter comment "syn-2323"
		tcp flags syn tcp dport 9999 counter comment "syn-9999"
		tcp flags syn tcp dport 2525 counter comment "syn-2525"
	}
}
"#;

struct Lab {
    // Field order is drop order: the daemon before the namespaces.
    daemon: Option<DaemonProcess>,
    scenario: Scenario,
}

fn lab(label: &str, on_daemon_down: &str) -> Lab {
    let scenario = Scenario::builder(label)
        .veth("veth-a", "veth-b", 41)
        .build();
    let records = scenario.path("all.jsonl");
    let cfg = write_config(&scenario, &security_group(on_daemon_down), None, &records);
    lab_with(scenario, &cfg)
}

/// The lab's config with `groups` (TOML) and `daemon.user`, records to
/// `records`.
fn write_config(
    scenario: &Scenario,
    groups: &str,
    user: Option<&str>,
    records: &std::path::Path,
) -> std::path::PathBuf {
    let mut config = scenario.config().window_secs(600);
    if let Some(u) = user {
        config = config.daemon_key(&format!("user = \"{u}\""));
    }
    let config = config
        .eni("eni-a", "veth-a", "vpc-lab")
        .flow_log(
            FlowLog::vpc("all", "vpc-lab")
                .traffic("all")
                .sinks(&["all"]),
        )
        .json_sink("all", records)
        .toml(groups);
    scenario.write_config("flowlogd.toml", &config)
}

fn lab_with(scenario: Scenario, cfg: &std::path::Path) -> Lab {
    for ns in [&scenario.a, &scenario.b] {
        ns.load_nft(SYN_COUNTERS);
    }
    let daemon = scenario.start_daemon(cfg, "daemon.log");
    Lab {
        daemon: Some(daemon),
        scenario,
    }
}

/// Packets counted by the rule with `comment` in `ns`.
#[track_caller]
fn syn_count(ns: &Netns, comment: &str) -> u64 {
    let ruleset = ns.exec_ok(&["nft", "list", "table", "inet", "fl21e_count"]);
    let line = ruleset
        .lines()
        .find(|l| l.contains(&format!("comment \"{comment}\"")))
        .unwrap_or_else(|| panic!("no rule {comment}:\n{ruleset}"));
    line.split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {line}"))
}

/// One TCP connection attempt from `ns`: `true` if the SYN was answered
/// (a connection, or a RST from a closed port) within `secs`, `false` if
/// it timed out (dropped). Shorter than TCP's first retransmission (1 s),
/// so one attempt is one SYN.
fn reaches(ns: &Netns, addr: &str, port: u16, secs: f32) -> bool {
    let out = ns.exec(&[
        "timeout",
        &format!("{secs}"),
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{addr}/{port}"),
    ]);
    // timeout(1) exits 124 when it had to stop the attempt.
    out.status.code() != Some(124)
}

/// A TCP connection from `client` to a server in `server` at
/// `addr:port`, with a round trip of data (the replies passed); both
/// processes, kept open while the caller holds them.
#[track_caller]
fn connection(server: &Netns, client: &Netns, addr: &str, port: u16) -> (LineProcess, LineProcess) {
    let target = format!("{addr}:{port}");
    let mut srv = LineProcess::traffic(server, TRAFFIC, &["tcp-server", &target]);
    srv.expect_line("listening", Duration::from_secs(5));
    let mut cli = LineProcess::traffic(client, TRAFFIC, &["tcp-client", &target]);
    cli.expect_line("connected", Duration::from_secs(5));
    cli.send_line("xfer 100 200");
    cli.expect_line("ok", Duration::from_secs(5));
    (srv, cli)
}

/// `sample` from the daemon's metrics page in `ns` once it equals `want`
/// (published every 500 ms), or its value after 5 s.
fn metric_when(ns: &Netns, sample: &str, want: u64) -> u64 {
    for _ in 0..50 {
        if ns.metric(sample) == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ns.metric(sample)
}

/// The conntrack mark of the (one) TCP connection to `port` in `ns`.
#[track_caller]
fn ct_mark(ns: &Netns, port: u16) -> u32 {
    let out = ns.exec_ok(&["conntrack", "-L"]);
    let out: String = out
        .lines()
        .filter(|l| l.contains(&format!("dport={port} ")))
        .collect::<Vec<_>>()
        .join("\n");
    let line = out
        .lines()
        .find(|l| l.contains("mark="))
        .unwrap_or_else(|| panic!("no entry for {port}:\n{}", ns.exec_ok(&["conntrack", "-L"])));
    line.split("mark=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no mark in {line}"))
}

/// Sums packets of OK records by (action, direction, rule).
fn totals(records: &[Value]) -> BTreeMap<(String, String, String), u64> {
    let mut t = BTreeMap::new();
    for r in records.iter().filter(|r| r["log-status"] == "OK") {
        let key = (
            r["action"].as_str().unwrap().to_owned(),
            r["direction"].as_str().unwrap().to_owned(),
            r["rule"].as_str().unwrap_or("").to_owned(),
        );
        *t.entry(key).or_insert(0) += r["packets"].as_u64().unwrap();
    }
    t
}

fn key(action: &str, direction: &str, rule: &str) -> (String, String, String) {
    (action.to_owned(), direction.to_owned(), rule.to_owned())
}

/// Accept by rule, drop by rule, default ingress drop, default egress
/// accept, a drop by an egress rule, and the replies of accepted
/// connections passing (the SYN-ACK or RST is never queued). Every drop
/// is a REJECT record with its rule whose packets equal the SYNs the
/// sender's kernel counted: retransmits and new attempts alike, each
/// queued and counted again.
#[test]
fn rules_decide_new_connections_and_drops_are_exact_reject_records() {
    if !require_root("rules_decide_new_connections_and_drops_are_exact_reject_records") {
        return;
    }
    let mut lab = lab("fl21e-rules", "accept");
    let s = &lab.scenario;
    let (a4, b4) = (s.ea.v4.to_string(), s.eb.v4.to_string());
    let log = || lab_log(&lab);
    assert!(
        reaches(&s.b, &a4, 8080, 2.0),
        "allow-web: the SYN must pass\n{}",
        log()
    );
    for _ in 0..3 {
        assert!(
            !reaches(&s.b, &a4, 2323, 0.5),
            "deny-telnet must drop\n{}",
            log()
        );
    }
    for _ in 0..2 {
        assert!(
            !reaches(&s.b, &a4, 9999, 0.5),
            "default ingress drop\n{}",
            log()
        );
    }
    assert!(
        reaches(&s.a, &b4, 7000, 2.0),
        "default egress accept\n{}",
        log()
    );
    for _ in 0..2 {
        assert!(
            !reaches(&s.a, &b4, 2525, 0.5),
            "deny-smtp-out must drop\n{}",
            log()
        );
    }
    // Established connections: the replies pass (never queued), and the
    // accept verdicts carried their rule into the connections.
    let web = connection(&s.a, &s.b, &a4, 8080);
    let out = connection(&s.b, &s.a, &b4, 7000);
    for (port, dir) in [(8080, "allow-web in"), (7000, "default egress accept")] {
        let mark = ct_mark(&s.a, port);
        assert!(
            mark & 0x8000_0000 != 0,
            "{dir}: ct mark {mark:#x}\n{}",
            log()
        );
    }
    assert_ne!(
        ct_mark(&s.a, 8080),
        ct_mark(&s.a, 7000),
        "two rules, two marks"
    );
    drop((web, out));
    // A retransmitted SYN is a packet the kernel queues again.
    assert!(
        !reaches(&s.b, &a4, 2323, 1.5),
        "deny-telnet, with a retransmit"
    );
    std::thread::sleep(Duration::from_millis(300));
    let telnet = syn_count(&s.b, "syn-2323");
    let other = syn_count(&s.b, "syn-9999");
    let smtp = syn_count(&s.a, "syn-2525");
    assert!(
        telnet >= 5 && other >= 2 && smtp >= 2,
        "{telnet} {other} {smtp}"
    );
    let tables = s.a.nft_tables();
    // The metrics: one verdict per queued packet, the drops those of the
    // records, nothing lost by the kernel.
    let drops = telnet + other + smtp;
    assert_eq!(
        metric_when(&s.a, "flowlogd_sg_verdicts_total{action=\"drop\"}", drops),
        drops
    );
    let accepted = s.a.metric("flowlogd_sg_verdicts_total{action=\"accept\"}");
    assert!(accepted >= 4, "{accepted}");
    let read = s.a.metric("flowlogd_sg_queue_packets_total");
    let undecided =
        s.a.metric("flowlogd_sg_undecided_packets_total{reason=\"not_covered\"}")
            + s.a
                .metric("flowlogd_sg_undecided_packets_total{reason=\"unreadable\"}");
    assert_eq!(read, accepted + drops + undecided);
    for reason in ["queue_full", "socket_full"] {
        assert_eq!(
            s.a.metric(&format!(
                "flowlogd_sg_queue_overruns_total{{reason=\"{reason}\"}}"
            )),
            0
        );
    }
    let mut daemon = lab.daemon.take().unwrap();
    daemon.stop();
    let log = daemon.log();
    let records = read_json_records(&lab.scenario.path("all.jsonl"));
    let t = totals(&records);
    assert_eq!(
        t.get(&key("REJECT", "in", "sg-lab:deny-telnet")),
        Some(&telnet),
        "{t:?}\n{log}"
    );
    assert_eq!(
        t.get(&key("REJECT", "in", "default")),
        Some(&other),
        "{t:?}\n{log}"
    );
    assert_eq!(
        t.get(&key("REJECT", "out", "sg-lab:deny-smtp-out")),
        Some(&smtp),
        "{t:?}\n{log}"
    );
    // Nothing accepted was recorded as a drop.
    let rejects: u64 = t
        .iter()
        .filter(|(k, _)| k.0 == "REJECT")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(rejects, telnet + other + smtp, "{t:?}");
    assert!(tables.iter().any(|t| t == "inet flowlogd_sg"), "{tables:?}");
    // The table stays after a clean stop too, until removed.
    assert!(lab
        .scenario
        .a
        .nft_tables()
        .iter()
        .any(|t| t == "inet flowlogd_sg"));
}

fn lab_log(lab: &Lab) -> String {
    lab.daemon
        .as_ref()
        .map(DaemonProcess::log)
        .unwrap_or_default()
}

/// on_daemon_down = "accept": after a SIGKILL the table is still there,
/// and new connections the policy would drop pass (queue bypass).
#[test]
fn killed_daemon_fails_open_with_on_daemon_down_accept() {
    if !require_root("killed_daemon_fails_open_with_on_daemon_down_accept") {
        return;
    }
    let mut lab = lab("fl21e-open", "accept");
    let s = &lab.scenario;
    let a4 = s.ea.v4.to_string();
    assert!(
        !reaches(&s.b, &a4, 9999, 0.5),
        "default drop while running\n{}",
        lab_log(&lab)
    );
    lab.daemon.as_mut().unwrap().crash();
    let s = &lab.scenario;
    assert!(
        s.a.nft_tables().iter().any(|t| t == "inet flowlogd_sg"),
        "the table stays after a kill"
    );
    assert!(
        reaches(&s.b, &a4, 9999, 2.0),
        "fail open: the SYN must pass without a daemon"
    );
    assert!(reaches(&s.b, &a4, 8080, 2.0));
    // Package removal's command takes the table and the queue rules away.
    let cfg = s.path("flowlogd.toml");
    let bin = flowlogd_bin();
    let out = s.a.exec(&[
        bin.to_str().unwrap(),
        "remove-tracking-table",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!s.a.nft_tables().iter().any(|t| t == "inet flowlogd_sg"));
    for tool in ["iptables", "ip6tables"] {
        let listed = s.a.exec(&[tool, "-t", "mangle", "-S"]);
        assert!(
            !text(&listed).contains("FLOWLOGD_SG"),
            "{tool}: {}",
            text(&listed)
        );
    }
}

/// on_daemon_down = "drop": after a SIGKILL the table is still there, and
/// new connections are dropped, even those a rule accepts; established
/// enforcement resumes with the next daemon.
#[test]
fn killed_daemon_fails_closed_with_on_daemon_down_drop() {
    if !require_root("killed_daemon_fails_closed_with_on_daemon_down_drop") {
        return;
    }
    let mut lab = lab("fl21e-closed", "drop");
    let s = &lab.scenario;
    let a4 = s.ea.v4.to_string();
    assert!(
        reaches(&s.b, &a4, 8080, 2.0),
        "allow-web while running\n{}",
        lab_log(&lab)
    );
    lab.daemon.as_mut().unwrap().crash();
    let s = &lab.scenario;
    assert!(
        s.a.nft_tables().iter().any(|t| t == "inet flowlogd_sg"),
        "the table stays after a kill"
    );
    assert!(
        !reaches(&s.b, &a4, 8080, 1.0),
        "fail closed: no new connection without a daemon"
    );
    // A new daemon takes the queue over: the rule applies again.
    let cfg = s.path("flowlogd.toml");
    lab.daemon = Some(s.start_daemon(&cfg, "daemon2.log"));
    let s = &lab.scenario;
    assert!(
        reaches(&s.b, &a4, 8080, 2.0),
        "allow-web after the restart\n{}",
        lab_log(&lab)
    );
}

/// Running as `nobody` with only CAP_NET_ADMIN: the interface set is filled
/// after the privileges are dropped (the `nft` child gets the capability as
/// ambient), a reload that turns a drop rule into an accept lets new
/// connections through at once, and a reload without security groups
/// removes the table.
#[test]
fn as_nobody_a_reload_changes_the_rules_and_removing_the_groups_removes_the_table() {
    if !require_root(
        "as_nobody_a_reload_changes_the_rules_and_removing_the_groups_removes_the_table",
    ) {
        return;
    }
    const NOBODY: u32 = 65534;
    const STEP: Duration = Duration::from_secs(10);
    let scenario = Scenario::builder("fl21e-user")
        .veth("veth-a", "veth-b", 41)
        .build();
    let dir = scenario.path("nobody");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).unwrap();
    let records = dir.join("all.jsonl");
    let groups = security_group("accept");
    let cfg = write_config(&scenario, &groups, Some("nobody"), &records);
    let mut lab = lab_with(scenario, &cfg);
    let s = &lab.scenario;
    let a4 = s.ea.v4.to_string();
    assert!(
        !reaches(&s.b, &a4, 9999, 0.5),
        "default drop as nobody\n{}",
        lab_log(&lab)
    );
    assert!(!reaches(&s.b, &a4, 2323, 0.5), "deny-telnet as nobody");
    assert!(reaches(&s.b, &a4, 8080, 2.0), "allow-web as nobody");
    // allow-web's cidr is IPv4: an IPv6 SYN to 8080 falls to the default
    // ingress drop (through ip6tables' queue rule).
    let a6 = s.ea.v6.to_string();
    assert!(
        !reaches(&s.b, &a6, 8080, 0.5),
        "IPv6 8080 is no rule's: dropped"
    );

    let telnet_allowed = groups.replacen("policy = \"drop\"", "policy = \"accept\"", 1);
    assert_ne!(telnet_allowed, groups);
    write_config(&lab.scenario, &telnet_allowed, Some("nobody"), &records);
    let pid = lab.daemon.as_ref().unwrap().pid();
    let hup = || {
        let o = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    };
    hup();
    let d = lab.daemon.as_mut().unwrap();
    d.wait_for_log("reload: security groups replaced", STEP);
    let s = &lab.scenario;
    assert!(
        reaches(&s.b, &a4, 2323, 2.0),
        "telnet accepted after the reload\n{}",
        lab_log(&lab)
    );
    assert!(!reaches(&s.b, &a4, 9999, 0.5), "the default drop stays");

    write_config(&lab.scenario, "", Some("nobody"), &records);
    hup();
    let d = lab.daemon.as_mut().unwrap();
    d.wait_for_log("no [[security_group]] any more: removed table", STEP);
    let s = &lab.scenario;
    assert!(
        !s.a.nft_tables().iter().any(|t| t == "inet flowlogd_sg"),
        "{}",
        lab_log(&lab)
    );
    assert!(
        reaches(&s.b, &a4, 9999, 2.0),
        "no enforcement without groups"
    );
    let log = lab_log(&lab);
    assert!(!log.contains("ERROR"), "{log}");
}

/// An ENI whose interface appears after the start is enforced on from
/// then on (the set follows the registry's rtnetlink events), and leaves
/// the set when its interface goes.
#[test]
fn an_enis_interface_joins_and_leaves_the_enforced_set() {
    if !require_root("an_enis_interface_joins_and_leaves_the_enforced_set") {
        return;
    }
    let scenario = Scenario::builder("fl21e-hot")
        .veth("veth-a", "veth-b", 41)
        .build();
    let records = scenario.path("all.jsonl");
    let groups =
        security_group("accept").replace("enis = [\"eni-a\"]", "enis = [\"eni-a\", \"eni-c\"]");
    let config = scenario
        .config()
        .window_secs(600)
        .eni("eni-a", "veth-a", "vpc-lab")
        .eni("eni-c", "veth-c", "vpc-lab")
        .flow_log(
            FlowLog::vpc("all", "vpc-lab")
                .traffic("all")
                .sinks(&["all"]),
        )
        .json_sink("all", &records)
        .toml(&groups);
    let cfg = scenario.write_config("flowlogd.toml", &config);
    let lab = lab_with(scenario, &cfg);
    let s = &lab.scenario;
    assert!(!covered(&s.a).contains("\"veth-c\""));
    // Declared after the lab: removed before it.
    let c = Netns::new("fl21e-hotc");
    let (ec, _) = flowlogd_tests::netns::veth_pair(&s.a, "veth-c", &c, "veth-d", 42);
    assert!(
        wait_covered(&s.a, "veth-c", true),
        "veth-c never joined: {}\n{}",
        covered(&s.a),
        lab_log(&lab)
    );
    let a_c = ec.v4.to_string();
    assert!(!reaches(&c, &a_c, 9999, 0.5), "default drop on the new ENI");
    assert!(reaches(&c, &a_c, 8080, 2.0), "allow-web on the new ENI");
    s.a.exec_ok(&["ip", "link", "del", "veth-c"]);
    assert!(
        wait_covered(&s.a, "veth-c", false),
        "veth-c never left: {}",
        covered(&s.a)
    );
    assert!(covered(&s.a).contains("\"veth-a\""));
}

/// The set `covered` in `ns` as nft lists it (its elements are the quoted
/// names, over one or more lines).
fn covered(ns: &Netns) -> String {
    ns.exec_ok(&["nft", "list", "set", "inet", "flowlogd_sg", "covered"])
}

/// Waits (at most 5 s) until `iface` is (or is not) in the set.
fn wait_covered(ns: &Netns, iface: &str, present: bool) -> bool {
    let quoted = format!("\"{iface}\"");
    for _ in 0..50 {
        if covered(ns).contains(&quoted) == present {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Counts UDP to port 9999 leaving (`udp-out`) and delivered (`udp-in`,
/// after the filter) in a namespace.
const UDP_COUNTERS: &str = r#"table inet fl21e_udp {
	chain out {
		type filter hook output priority 0; policy accept;
		udp dport 9999 counter comment "udp-out"
	}
	chain in {
		type filter hook input priority 0; policy accept;
		udp dport 9999 counter comment "udp-in"
	}
}
"#;

/// Packets counted by the rule with `comment` in `ns`'s table `table`.
#[track_caller]
fn counter(ns: &Netns, table: &str, comment: &str) -> u64 {
    let ruleset = ns.exec_ok(&["nft", "list", "table", "inet", table]);
    let line = ruleset
        .lines()
        .find(|l| l.contains(&format!("comment \"{comment}\"")))
        .unwrap_or_else(|| panic!("no rule {comment}:\n{ruleset}"));
    line.split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {line}"))
}

/// `kill -<signal> <pid>`: the daemon's exact pid.
fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// A flood that fills the queue while the daemon cannot read it (stopped
/// with SIGSTOP): what does not fit is dropped by the kernel, never let
/// through undecided (even with on_daemon_down = "accept", which is about
/// a daemon that is gone, not one that is busy); the kernel's count of
/// those drops is in the metrics, and the ENI's window is SKIPDATA since
/// they have no REJECT record. The queued ones are decided when the daemon
/// runs again: REJECT records exact to the verdicts.
#[test]
fn a_full_queue_drops_what_it_cannot_hold_and_marks_the_window_skipdata() {
    if !require_root("a_full_queue_drops_what_it_cannot_hold_and_marks_the_window_skipdata") {
        return;
    }
    const SENT: u64 = 6000;
    let mut lab = lab("fl21e-full", "accept");
    let s = &lab.scenario;
    for ns in [&s.a, &s.b] {
        ns.load_nft(UDP_COUNTERS);
    }
    let a4 = s.ea.v4.to_string();
    let pid = lab.daemon.as_ref().unwrap().pid();
    signal(pid, "STOP");
    // Every packet is a new connection to conntrack (a queued packet's
    // entry is not confirmed yet), so each one is queued.
    let send = s.b.exec(&[
        "timeout",
        "30",
        "python3",
        "-c",
        &format!(
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for _ in range({SENT}):\n    s.sendto(b'flood', ('{a4}', 9999))\n"
        ),
    ]);
    signal(pid, "CONT");
    assert!(send.status.success(), "{}", text(&send));
    assert_eq!(counter(&s.b, "fl21e_udp", "udp-out"), SENT);
    // Whatever the queue held is decided (default ingress drop), the rest
    // was dropped by the kernel at the queue.
    let mut drops = 0;
    let mut full = 0;
    for _ in 0..100 {
        drops = s.a.metric("flowlogd_sg_verdicts_total{action=\"drop\"}");
        full =
            s.a.metric("flowlogd_sg_queue_overruns_total{reason=\"queue_full\"}")
                + s.a
                    .metric("flowlogd_sg_queue_overruns_total{reason=\"socket_full\"}");
        if drops + full == SENT {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        drops + full,
        SENT,
        "verdicts {drops}, kernel drops {full}\n{}",
        lab_log(&lab)
    );
    assert!(full > 0, "the queue never filled: {drops} verdicts");
    assert_eq!(
        counter(&s.a, "fl21e_udp", "udp-in"),
        0,
        "packets passed the full queue undecided"
    );
    let mut daemon = lab.daemon.take().unwrap();
    daemon.stop();
    let log = daemon.log();
    assert!(log.contains("before the daemon could decide them"), "{log}");
    let records = read_json_records(&lab.scenario.path("all.jsonl"));
    let t = totals(&records);
    assert_eq!(
        t.get(&key("REJECT", "in", "default")),
        Some(&drops),
        "{t:?}\n{log}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["log-status"] == "SKIPDATA" && r["eni-id"] == "eni-a"),
        "no SKIPDATA for eni-a:\n{records:?}"
    );
}
