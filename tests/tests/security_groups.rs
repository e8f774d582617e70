//! Security groups through NFQUEUE, end to end (issue #16): the daemon in
//! namespace `a` is the security group of ENI eni-a (its veth to `b`);
//! real connections from `b` (ingress) and from `a` (egress) are decided
//! by the daemon's verdicts, and the records say which rule decided.
//!
//! Ground truth, never the daemon's own word:
//! - passed or dropped: whether the connection attempt got an answer
//!   (a refused connection passed the group: its SYN reached the host);
//! - REJECT counts: an observer table of the test's own, hooked after
//!   conntrack and before the daemon's table (prerouting / postrouting
//!   priority -170), counts every first packet (`ct state new`) per port;
//!   a dropped connection's retransmits are new again, and counted again,
//!   by the kernel and by the daemon alike;
//! - ACCEPT counts and rules: the conntrack table (`conntrack -L`), its
//!   counters and the mark the verdict put on each connection.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use flowlogd_tests::netns::{CtEntry, LineProcess, Netns};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");
const STEP: Duration = Duration::from_secs(10);

/// The flag of every conntrack mark the daemon sets (`MARK_FLAG`).
const MARK_FLAG: u32 = 0x8000_0000;

/// The test's observer: counters of the first IPv4 packets (`ct state
/// new`) arriving on / leaving by veth-a, per protocol and port, after
/// conntrack (-200) and before the daemon's table (-160). It takes no
/// verdict.
fn observer(ports: &[(&str, u16)]) -> String {
    let mut pre = String::new();
    let mut post = String::new();
    for (proto, port) in ports {
        pre.push_str(&format!(
            "\t\tiifname \"veth-a\" meta nfproto ipv4 ct state new {proto} dport {port} counter comment \"in-{proto}-{port}\"\n"
        ));
        post.push_str(&format!(
            "\t\toifname \"veth-a\" meta nfproto ipv4 ct state new {proto} dport {port} counter comment \"out-{proto}-{port}\"\n"
        ));
    }
    format!(
        "table inet fl21s_observer {{\n\
         \tchain pre {{\n\t\ttype filter hook prerouting priority -170; policy accept;\n{pre}\t}}\n\
         \tchain post {{\n\t\ttype filter hook postrouting priority -170; policy accept;\n{post}\t}}\n}}\n"
    )
}

/// `(packets, bytes)` of the observer counter `name` (`in-tcp-8002`).
#[track_caller]
fn observed(ns: &Netns, name: &str) -> (u64, u64) {
    let ruleset = ns.exec_ok(&["nft", "list", "table", "inet", "fl21s_observer"]);
    let line = ruleset
        .lines()
        .find(|l| l.contains(&format!("comment \"{name}\"")))
        .unwrap_or_else(|| panic!("no observer counter {name}:\n{ruleset}"));
    let num = |key: &str| -> u64 {
        let rest = line
            .split(key)
            .nth(1)
            .unwrap_or_else(|| panic!("no {key} in {line}"));
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    (num("counter packets "), num(" bytes "))
}

/// One `[[security_group.rule]]`.
fn rule(
    id: &str,
    direction: &str,
    policy: &str,
    priority: u8,
    protocol: &str,
    ports: &str,
    cidr: &str,
) -> String {
    format!(
        "[[security_group.rule]]\nid = \"{id}\"\ndirection = \"{direction}\"\npolicy = \"{policy}\"\n\
         priority = {priority}\nprotocol = \"{protocol}\"\nport_range = \"{ports}\"\ncidr = \"{cidr}\"\n\n"
    )
}

/// `[enforcement]` and group sg-web on eni-a with `rules`.
fn security_group(rules: &[String]) -> String {
    format!(
        "[enforcement]\nqueue = 100\non_daemon_down = \"accept\"\n\n\
         [[security_group]]\nid = \"sg-web\"\nenis = [\"eni-a\"]\n\n{}",
        rules.concat()
    )
}

/// The daemon's config: eni-a on veth-a, every record of the VPC to
/// `all.jsonl`, the security group `sg`.
fn config(s: &Scenario, sg: &str) -> PathBuf {
    let c = s
        .config()
        .window_secs(600)
        .eni("eni-a", "veth-a", "vpc-sg")
        .flow_log(FlowLog::vpc("all", "vpc-sg").traffic("all").sinks(&["all"]))
        .json_sink("all", &s.path("all.jsonl"))
        .toml(sg);
    s.write_config("flowlogd.toml", &c)
}

/// One TCP connection attempt from `ns` to `addr:port`: `true` if it
/// passed the group (connected, or refused: no listener, but the SYN
/// arrived and the RST came back), `false` if nothing came back within
/// 1.5 s (dropped; the SYN is retransmitted once in that time).
fn tcp_passes(ns: &Netns, addr: IpAddr, port: u16) -> bool {
    let out = ns.exec(&[
        "timeout",
        "1.5",
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{addr}/{port}"),
    ]);
    // timeout(1) exits 124 when it had to stop the attempt.
    out.status.code() != Some(124)
}

/// `ping -c 2` from `ns`: `true` if both echo requests were answered.
fn ping_passes(ns: &Netns, addr: IpAddr) -> bool {
    let family = if addr.is_ipv4() { "-4" } else { "-6" };
    let out = ns.exec(&[
        "ping",
        family,
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "1",
        &addr.to_string(),
    ]);
    out.status.success()
}

fn records(s: &Scenario) -> Vec<Value> {
    read_json_records(&s.path("all.jsonl"))
        .into_iter()
        .filter(|r| r["log-status"] == "OK")
        .collect()
}

/// The (action, rule) of the records of the connection to `dport` of
/// `protocol` in `direction` (the direction of its first packet: "in" =
/// from b, "out" = from a), with their summed (packets, bytes), per rule.
/// Records of the connection's replies (the other direction) are
/// included under their own direction.
fn by_rule(
    records: &[Value],
    protocol: u64,
    port: u16,
) -> BTreeMap<(String, String, String), (u64, u64)> {
    let mut m = BTreeMap::new();
    for r in records.iter().filter(|r| r["protocol"] == protocol) {
        let (sp, dp) = (
            r["srcport"].as_u64().unwrap(),
            r["dstport"].as_u64().unwrap(),
        );
        if sp != u64::from(port) && dp != u64::from(port) {
            continue;
        }
        let key = (
            r["action"].as_str().unwrap().to_owned(),
            r["direction"].as_str().unwrap().to_owned(),
            r["rule"].as_str().unwrap_or("-").to_owned(),
        );
        let e = m.entry(key).or_insert((0, 0));
        e.0 += r["packets"].as_u64().unwrap();
        e.1 += r["bytes"].as_u64().unwrap();
    }
    m
}

fn k(action: &str, direction: &str, rule: &str) -> (String, String, String) {
    (action.to_owned(), direction.to_owned(), rule.to_owned())
}

/// The mark of a conntrack line (`mark=2147483650`).
fn ct_mark(e: &CtEntry) -> u32 {
    e.line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("mark="))
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no mark in {}", e.line))
}

/// The conntrack entries of connections to `port` of `protocol`.
fn ct_of(entries: &[CtEntry], protocol: u8, port: u16) -> Vec<&CtEntry> {
    entries
        .iter()
        .filter(|e| e.protocol == protocol && e.orig.dport == port)
        .collect()
}

/// Sums (orig packets, orig bytes, reply packets, reply bytes).
fn ct_sum(entries: &[&CtEntry]) -> (u64, u64, u64, u64) {
    entries.iter().fold((0, 0, 0, 0), |s, e| {
        (
            s.0 + e.orig.packets,
            s.1 + e.orig.bytes,
            s.2 + e.reply.packets,
            s.3 + e.reply.bytes,
        )
    })
}

/// The matrix on IPv4 and IPv6, TCP and ICMP: priority order, drop
/// winning at equal priority, the defaults (ingress drop, egress accept),
/// CIDR edges and port-range edges, a rule of one family never matching
/// the other; each verdict seen on the wire and in the records with the
/// rule that made it, REJECT counts equal to the observer's.
#[test]
fn verdicts_follow_priority_cidr_port_edges_and_families_with_their_rules_on_records() {
    if !require_root(
        "verdicts_follow_priority_cidr_port_edges_and_families_with_their_rules_on_records",
    ) {
        return;
    }
    let s = Scenario::builder("fl21smx")
        .namespaces("fl21smxa", "fl21smxb")
        .veth("veth-a", "veth-b", 61)
        .build();
    let (a4, b4) = (s.ea.addr(4), s.eb.addr(4));
    let (a6, b6) = (s.ea.addr(6), s.eb.addr(6));
    // b's /64 (the veth subnet's number is in hex there).
    let v6_net = format!(
        "{}/64",
        Ipv6Addr::from(u128::from(s.eb.v6) & !u128::from(u64::MAX))
    );
    let rules = [
        // Priority order: the accept at 1 beats the drop at 5.
        rule(
            "allow-8001",
            "ingress",
            "accept",
            1,
            "tcp",
            "8001/8001",
            "0.0.0.0/0",
        ),
        rule(
            "deny-8001",
            "ingress",
            "drop",
            5,
            "tcp",
            "8001/8001",
            "0.0.0.0/0",
        ),
        // Equal priority: the drop wins, though the accept comes first.
        rule(
            "allow-8002",
            "ingress",
            "accept",
            3,
            "tcp",
            "8002/8002",
            "0.0.0.0/0",
        ),
        rule(
            "deny-8002",
            "ingress",
            "drop",
            3,
            "tcp",
            "8002/8002",
            "0.0.0.0/0",
        ),
        // Port-range edges: 8010 and 8012 in, 8009 and 8013 out.
        rule(
            "range",
            "ingress",
            "accept",
            10,
            "tcp",
            "8010/8012",
            "10.200.61.2/32",
        ),
        // CIDR edges: b is 10.200.61.2; .3/32 and .0/31 miss it, .2/31 holds it.
        rule(
            "only-3",
            "ingress",
            "accept",
            10,
            "tcp",
            "8020/8020",
            "10.200.61.3/32",
        ),
        rule(
            "pair-2-3",
            "ingress",
            "accept",
            10,
            "tcp",
            "8021/8021",
            "10.200.61.2/31",
        ),
        rule(
            "pair-0-1",
            "ingress",
            "accept",
            10,
            "tcp",
            "8022/8022",
            "10.200.61.0/31",
        ),
        // A v6 rule: matches b over IPv6 only.
        rule(
            "v6-8030",
            "ingress",
            "accept",
            10,
            "tcp",
            "8030/8030",
            &v6_net,
        ),
        rule(
            "ping",
            "ingress",
            "accept",
            10,
            "icmp",
            "-1/-1",
            "10.200.61.2/32",
        ),
        rule(
            "ping6",
            "ingress",
            "accept",
            10,
            "icmpv6",
            "-1/-1",
            &format!("{b6}/128"),
        ),
        // Egress: 9001 dropped; anything else by the default accept.
        rule(
            "deny-9001",
            "egress",
            "drop",
            1,
            "tcp",
            "9001/9001",
            "0.0.0.0/0",
        ),
    ];
    s.a.load_nft(&observer(&[
        ("tcp", 8001),
        ("tcp", 8002),
        ("tcp", 8003),
        ("tcp", 8009),
        ("tcp", 8013),
        ("tcp", 8020),
        ("tcp", 8022),
        ("tcp", 8030),
        ("tcp", 9001),
    ]));
    let cfg = config(&s, &security_group(&rules));
    let mut daemon = s.start_daemon(&cfg, "daemon.log");

    let ingress: [(u16, IpAddr, bool); 12] = [
        (8001, a4, true),
        (8002, a4, false),
        (8003, a4, false), // no rule: the default ingress drop
        (8009, a4, false),
        (8010, a4, true),
        (8012, a4, true),
        (8013, a4, false),
        (8020, a4, false),
        (8021, a4, true),
        (8022, a4, false),
        (8030, a6, true),
        (8030, a4, false),
    ];
    // Listeners where connections are to pass: a connection that
    // completes and closes stays in conntrack (TIME_WAIT) for its counters
    // to be read at the end; a refused one would be gone at once.
    let mut servers: Vec<LineProcess> = ingress
        .iter()
        .filter(|i| i.2)
        .map(|&(port, addr, _)| (&s.a, addr, port))
        .chain([(&s.b, b4, 9000)])
        .map(|(ns, addr, port)| {
            let at = std::net::SocketAddr::new(addr, port).to_string();
            let mut p = LineProcess::traffic(ns, TRAFFIC, &["tcp-server", &at]);
            p.expect_line("listening", STEP);
            p
        })
        .collect();
    let mut wire = Vec::new();
    let egress_9001 = tcp_passes(&s.a, b4, 9001);
    for pass in [false, true] {
        for (port, addr, expected) in ingress {
            if expected == pass {
                wire.push((port, addr, tcp_passes(&s.b, addr, port)));
            }
        }
    }
    wire.sort_by_key(|&(port, addr, _)| ingress.iter().position(|i| (i.0, i.1) == (port, addr)));
    let egress_9000 = tcp_passes(&s.a, b4, 9000);
    let ping4 = ping_passes(&s.b, a4);
    let ping6 = ping_passes(&s.b, a6);
    // No ICMP rule for a's own pings: egress default accept.
    let ping_out = ping_passes(&s.a, b6);
    for server in &mut servers {
        server.expect_line("done", STEP);
    }
    std::thread::sleep(Duration::from_millis(300));
    let (ct, _) = s.a.settled_conntrack();
    let counters: BTreeMap<String, (u64, u64)> = [
        "in-tcp-8002",
        "in-tcp-8003",
        "in-tcp-8009",
        "in-tcp-8013",
        "in-tcp-8020",
        "in-tcp-8022",
        "in-tcp-8030",
        "out-tcp-9001",
    ]
    .into_iter()
    .map(|n| (n.to_owned(), observed(&s.a, n)))
    .collect();
    daemon.stop();
    let log = daemon.log();

    let expected_wire: Vec<(u16, IpAddr, bool)> = ingress.to_vec();
    assert_eq!(wire, expected_wire, "what passed the group\n{log}");
    assert!(egress_9000, "egress default accept\n{log}");
    assert!(!egress_9001, "egress drop rule\n{log}");
    assert!(
        ping4 && ping6 && ping_out,
        "pings: {ping4} {ping6} {ping_out}\n{log}"
    );

    let recs = records(&s);
    let sg = |r: &str| format!("sg-web:{r}");
    // Accepted connections: ACCEPT records in both directions with the
    // rule, counts equal to conntrack's, and the conntrack mark flagged.
    for (port, rule_id) in [
        (8001, sg("allow-8001")),
        (8010, sg("range")),
        (8012, sg("range")),
        (8021, sg("pair-2-3")),
        (8030, sg("v6-8030")),
    ] {
        let conns = ct_of(&ct, 6, port);
        assert_eq!(conns.len(), 1, "port {port}: {ct:?}");
        assert_ne!(ct_mark(conns[0]) & MARK_FLAG, 0, "{}", conns[0].line);
        let (op, ob, rp, rb) = ct_sum(&conns);
        // (8030 has REJECT records besides: its IPv4 attempt, below.)
        let got = by_rule(&recs, 6, port);
        let accept: BTreeMap<_, _> = got
            .into_iter()
            .filter(|(k, _)| port == 8030 || k.0 == "ACCEPT" || k.0 == "REJECT")
            .filter(|(k, _)| port != 8030 || k.0 == "ACCEPT")
            .collect();
        assert_eq!(
            accept,
            BTreeMap::from([
                (k("ACCEPT", "in", &rule_id), (op, ob)),
                (k("ACCEPT", "out", &rule_id), (rp, rb)),
            ]),
            "port {port}\n{log}"
        );
    }
    // Egress by the default accept: its rule is `default`.
    let conns = ct_of(&ct, 6, 9000);
    let (op, ob, rp, rb) = ct_sum(&conns);
    assert_eq!(
        by_rule(&recs, 6, 9000),
        BTreeMap::from([
            (k("ACCEPT", "out", "default"), (op, ob)),
            (k("ACCEPT", "in", "default"), (rp, rb)),
        ])
    );
    // Dropped: REJECT records exactly as many as the observer counted,
    // with the deciding rule; never an ACCEPT record.
    for (port, dir, counter, rule_id) in [
        (8002, "in", "in-tcp-8002", sg("deny-8002")),
        (8003, "in", "in-tcp-8003", "default".to_owned()),
        (8009, "in", "in-tcp-8009", "default".to_owned()),
        (8013, "in", "in-tcp-8013", "default".to_owned()),
        (8020, "in", "in-tcp-8020", "default".to_owned()),
        (8022, "in", "in-tcp-8022", "default".to_owned()),
        (9001, "out", "out-tcp-9001", sg("deny-9001")),
    ] {
        let seen = counters[counter];
        assert!(seen.0 >= 1, "{counter}: {seen:?}");
        assert_eq!(
            by_rule(&recs, 6, port),
            BTreeMap::from([(k("REJECT", dir, &rule_id), seen)]),
            "port {port}\n{log}"
        );
    }
    // 8030 over IPv4: the v6 rule did not match (default drop), while its
    // IPv6 connection was accepted (checked above).
    let by_family = |v4: bool| -> Vec<Value> {
        (recs.iter())
            .filter(|r| r["srcaddr"].as_str().unwrap().contains(':') != v4)
            .cloned()
            .collect()
    };
    assert_eq!(
        by_rule(&by_family(true), 6, 8030),
        BTreeMap::from([(k("REJECT", "in", "default"), counters["in-tcp-8030"])]),
        "{log}"
    );
    assert!(by_rule(&by_family(false), 6, 8030)
        .keys()
        .all(|k| k.0 == "ACCEPT"));
    // ICMP: the echo requests of b accepted by the ping rules, a's by the
    // default egress accept.
    let icmp_rules = |proto: u64, dir: &str| -> Vec<String> {
        let mut v: Vec<String> = recs
            .iter()
            .filter(|r| r["protocol"] == proto && r["direction"] == dir && r["action"] == "ACCEPT")
            .map(|r| r["rule"].as_str().unwrap_or("-").to_owned())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(icmp_rules(1, "in"), [sg("ping")]);
    // In over ICMPv6: b's echo requests (ping6) and the replies to a's
    // (default egress accept); sorted by name.
    assert_eq!(icmp_rules(58, "in"), ["default".to_owned(), sg("ping6")]);
    assert_eq!(
        recs.iter()
            .filter(|r| r["protocol"] == 1 || r["protocol"] == 58)
            .filter(|r| r["action"] == "REJECT")
            .count(),
        0
    );
}

/// Replies of an accepted connection pass although every new egress
/// connection is dropped (stateful); a reload that removes the rule that
/// let a connection in leaves the connection flowing, with the old rule
/// on all its ACCEPT records, while a new connection to the same port is
/// dropped by the new rules at once. Counts exact against conntrack
/// (ACCEPT) and the observer (REJECT).
#[test]
fn replies_pass_statefully_and_a_reload_keeps_an_established_connections_rule() {
    if !require_root("replies_pass_statefully_and_a_reload_keeps_an_established_connections_rule") {
        return;
    }
    let s = Scenario::builder("fl21srl")
        .namespaces("fl21srla", "fl21srlb")
        .veth("veth-a", "veth-b", 62)
        .build();
    let (a4, b4) = (s.ea.addr(4), s.eb.addr(4));
    s.a.load_nft(&observer(&[("tcp", 8080), ("tcp", 9000)]));
    let before = security_group(&[
        rule(
            "allow-web",
            "ingress",
            "accept",
            1,
            "tcp",
            "8080/8080",
            "0.0.0.0/0",
        ),
        rule(
            "deny-egress",
            "egress",
            "drop",
            100,
            "all",
            "-1/-1",
            "0.0.0.0/0",
        ),
    ]);
    let after = security_group(&[
        rule(
            "allow-other",
            "ingress",
            "accept",
            1,
            "tcp",
            "8081/8081",
            "0.0.0.0/0",
        ),
        rule(
            "deny-egress",
            "egress",
            "drop",
            100,
            "all",
            "-1/-1",
            "0.0.0.0/0",
        ),
    ]);
    let cfg = config(&s, &before);
    let mut daemon = s.start_daemon(&cfg, "daemon.log");

    let mut server = LineProcess::traffic(&s.a, TRAFFIC, &["tcp-server", &format!("{a4}:8080")]);
    server.expect_line("listening", STEP);
    let mut client = LineProcess::traffic(&s.b, TRAFFIC, &["tcp-client", &format!("{a4}:8080")]);
    let client_port = client.expect_number("connected ", STEP) as u16;
    // Replies (2000 bytes from a) leave although every new egress
    // connection is dropped.
    client.send_line("xfer 1000 2000");
    client.expect_line("ok", STEP);
    assert!(!tcp_passes(&s.a, b4, 9000), "egress is dropped");

    // The reload: allow-web is gone. The established connection flows on.
    assert_eq!(config(&s, &after), cfg);
    signal_hup(daemon.pid());
    daemon.wait_for_log("reloaded: ", STEP);
    client.send_line("xfer 3000 4000");
    client.expect_line("ok", STEP);
    // A new connection to 8080 now meets the default ingress drop; the
    // observer counts its SYNs (the accepted connection's SYN came before).
    let before_refused = observed(&s.a, "in-tcp-8080");
    assert!(!tcp_passes(&s.b, a4, 8080), "8080 is no longer allowed");
    let after_refused = observed(&s.a, "in-tcp-8080");
    client.send_line("close");
    client.expect_line("closed", STEP);
    server.expect_line("done", STEP);
    std::thread::sleep(Duration::from_millis(300));
    let (ct, _) = s.a.settled_conntrack();
    let out_9000 = observed(&s.a, "out-tcp-9000");
    daemon.stop();
    let log = daemon.log();

    let recs = records(&s);
    let conn: Vec<&CtEntry> = ct_of(&ct, 6, 8080)
        .into_iter()
        .filter(|e| e.orig.sport == client_port)
        .collect();
    assert_eq!(conn.len(), 1, "{ct:?}");
    let (op, ob, rp, rb) = ct_sum(&conn);
    let accepted: Vec<&Value> = recs
        .iter()
        .filter(|r| {
            r["action"] == "ACCEPT" && (r["srcport"] == client_port || r["dstport"] == client_port)
        })
        .collect();
    assert!(
        accepted.iter().all(|r| r["rule"] == "sg-web:allow-web"),
        "every ACCEPT record keeps the old rule: {accepted:?}\n{log}"
    );
    let sum = |dir: &str| {
        accepted
            .iter()
            .filter(|r| r["direction"] == dir)
            .fold((0, 0), |s, r| {
                (
                    s.0 + r["packets"].as_u64().unwrap(),
                    s.1 + r["bytes"].as_u64().unwrap(),
                )
            })
    };
    assert_eq!((sum("in"), sum("out")), ((op, ob), (rp, rb)), "{log}");
    let rejected_8080 = by_rule(&recs, 6, 8080)
        .into_iter()
        .filter(|(k, _)| k.0 == "REJECT")
        .collect::<BTreeMap<_, _>>();
    assert_eq!(
        rejected_8080,
        BTreeMap::from([(
            k("REJECT", "in", "default"),
            (
                after_refused.0 - before_refused.0,
                after_refused.1 - before_refused.1
            )
        )]),
        "{log}"
    );
    assert_eq!(
        by_rule(&recs, 6, 9000),
        BTreeMap::from([(k("REJECT", "out", "sg-web:deny-egress"), out_9000)]),
        "{log}"
    );
}

fn signal_hup(pid: u32) {
    let o = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}
