//! pkt-srcaddr / pkt-dstaddr through real NAT (masquerade and a port
//! forward in the daemon's namespace, checked against `conntrack -L`), and
//! flow-start / flow-end of a short connection inside a window and of one
//! that spans a whole window, through the real daemon and the file sink
//! writing those fields (`fields = [...]`, JSON).
//!
//! Namespaces: `a` runs the daemon and the NAT, its veth to `b` is the
//! ENI; `c` (a peer of `a`) stands for a container behind the NAT.

use std::path::Path;
use std::time::{Duration, Instant};

use flowlogd_tests::netns::{unix_now, CtEntry, DaemonProcess, LineProcess, Netns};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");

/// The sink's field list: the record's tuple and the extras under test.
const FIELDS: &str = r#"fields = ["eni-id", "srcaddr", "srcport", "dstaddr", "dstport", "protocol", "direction", "packets", "start", "end", "action", "log-status", "pkt-srcaddr", "pkt-dstaddr", "flow-start", "flow-end"]"#;

/// A file sink `name` writing the listed fields as JSON lines to `path`.
fn extras_sink(name: &str, path: &Path) -> String {
    format!(
        "[sinks.{name}]\nplugin = \"file\"\npath = \"{}\"\nformat = \"json\"\n{FIELDS}\n\n",
        path.display()
    )
}

/// Scenario `label` (namespaces `<ns>a`, `<ns>b`, `<ns>c`) with forwarding
/// on in `a`, `c` routed through `a`, the daemon capturing `a`'s veth to
/// `b` as `eni-fl21n`, windows of `window_secs`, and `nft` (rules for
/// `a`, loaded before the daemon starts).
fn nat_scenario(label: &str, ns: &str, subnet: u8, nft: &str) -> Scenario {
    let s = Scenario::builder(label)
        .namespaces(&format!("{ns}a"), &format!("{ns}b"))
        .veth("fl21n-a", "fl21n-b", subnet)
        .peer(&format!("{ns}c"), "fl21n-ac", "fl21n-c", subnet + 1)
        .build();
    s.a.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let c = &s.peers[0];
    c.ns.exec_ok(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        &c.local.v4.to_string(),
    ]);
    let rules = s.path("nat.nft");
    std::fs::write(&rules, nft).unwrap();
    s.a.exec_ok(&["nft", "-f", rules.to_str().unwrap()]);
    s
}

fn start(s: &Scenario, window_secs: i64, out: &Path) -> DaemonProcess {
    let config = s
        .config()
        .window_secs(window_secs)
        .eni("eni-fl21n", "fl21n-a", "vpc-fl21n")
        .flow_log(FlowLog::vpc("all", "vpc-fl21n").sinks(&["extras"]))
        .toml(&extras_sink("extras", out));
    let cfg = s.write_config("flowlogd.toml", &config);
    s.start_daemon(&cfg, "daemon.log")
}

/// The one UDP entry of `ns`'s conntrack table that `pick` chooses.
#[track_caller]
fn ct_entry(ns: &Netns, pick: impl Fn(&CtEntry) -> bool) -> CtEntry {
    let all = ns.conntrack();
    let found: Vec<&CtEntry> = all.iter().filter(|e| e.protocol == 17 && pick(e)).collect();
    assert_eq!(found.len(), 1, "conntrack -L:\n{all:#?}");
    found[0].clone()
}

/// Polls `out` until the OK records `pick` chooses hold `packets`
/// packets in total, and returns them.
#[track_caller]
fn wait_for_records(
    daemon: &mut DaemonProcess,
    out: &Path,
    packets: u64,
    pick: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let records: Vec<Value> = read_json_records(out)
            .into_iter()
            .filter(|r| r["log-status"] == "OK" && pick(r))
            .collect();
        let sum: u64 = records.iter().map(|r| r["packets"].as_u64().unwrap()).sum();
        if sum >= packets {
            assert_eq!(sum, packets, "{records:#?}");
            return records;
        }
        if let Some(status) = daemon.exited() {
            panic!("flowlogd exited ({status}):\n{}", daemon.log());
        }
        assert!(
            Instant::now() < deadline,
            "{sum} of {packets} packets after 30 s:\n{records:#?}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn addr(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not an address: {v}"))
        .to_owned()
}

/// A container (c) behind the host's masquerade sends UDP to b: on the
/// ENI the datagrams leave from a's address and a port conntrack chose;
/// the records say so, and say c's address as pkt-srcaddr (out) and
/// pkt-dstaddr (in), as conntrack's original tuple has them.
#[test]
fn masquerade_records_carry_the_inside_address_as_conntrack_lists_it() {
    if !require_root("masquerade_records_carry_the_inside_address_as_conntrack_lists_it") {
        return;
    }
    let nft = "table ip fl21nsnat {\n\tchain post {\n\t\ttype nat hook postrouting priority 100; policy accept;\n\
               \t\toifname \"fl21n-a\" ip saddr 10.200.142.0/24 masquerade\n\t}\n}\n";
    let s = nat_scenario("fl21n-snat", "fl21ns", 141, nft);
    let c = &s.peers[0];
    let out = s.path("extras.jsonl");
    let mut daemon = start(&s, 2, &out);
    let target = format!("{}:5400", s.eb.v4);
    // b answers 3 datagrams of 40 bytes to 5 of 60.
    let mut server = LineProcess::traffic(&s.b, TRAFFIC, &["udp-server", &target, "5", "3", "40"]);
    server.expect_line("listening", Duration::from_secs(10));
    let mut client = LineProcess::traffic(&c.ns, TRAFFIC, &["udp-client", &target, "5", "60", "3"]);
    let inside_port = client.expect_number("local", Duration::from_secs(20)) as u16;
    client.expect_line("done", Duration::from_secs(20));
    client.finish(Duration::from_secs(20));
    server.finish(Duration::from_secs(20));

    let ct = ct_entry(&s.a, |e| {
        e.orig.sport == inside_port && e.orig.dport == 5400
    });
    assert_eq!(
        (ct.orig.src, ct.reply.dst),
        (c.remote.v4.into(), s.ea.v4.into()),
        "masqueraded: {}",
        ct.line
    );
    let (wire_addr, wire_port) = (ct.reply.dst.to_string(), ct.reply.dport);
    let outbound = wait_for_records(&mut daemon, &out, 5, |r| {
        r["direction"] == "out" && r["dstport"] == 5400
    });
    let inbound = wait_for_records(&mut daemon, &out, 3, |r| {
        r["direction"] == "in" && r["srcport"] == 5400
    });
    daemon.stop();
    for r in &outbound {
        assert_eq!(r["eni-id"], "eni-fl21n");
        assert_eq!(
            (addr(&r["srcaddr"]), r["srcport"].as_u64()),
            (wire_addr.clone(), Some(wire_port.into())),
            "{r}"
        );
        assert_eq!(addr(&r["dstaddr"]), ct.orig.dst.to_string(), "{r}");
        assert_eq!(addr(&r["pkt-srcaddr"]), ct.orig.src.to_string(), "{r}");
        assert_eq!(addr(&r["pkt-dstaddr"]), ct.orig.dst.to_string(), "{r}");
    }
    for r in &inbound {
        assert_eq!(
            (addr(&r["dstaddr"]), r["dstport"].as_u64()),
            (wire_addr.clone(), Some(wire_port.into())),
            "{r}"
        );
        assert_eq!(addr(&r["pkt-srcaddr"]), ct.reply.src.to_string(), "{r}");
        assert_eq!(addr(&r["pkt-dstaddr"]), ct.orig.src.to_string(), "{r}");
    }
}

/// b sends UDP to a's port 8080, which a forwards to c: on the ENI the
/// datagrams arrive for a's address; the records say c's address as
/// pkt-dstaddr (in) and pkt-srcaddr (out), as conntrack's reply tuple has it.
#[test]
fn port_forward_records_carry_the_inside_address_as_conntrack_lists_it() {
    if !require_root("port_forward_records_carry_the_inside_address_as_conntrack_lists_it") {
        return;
    }
    let nft = "table ip fl21ndnat {\n\tchain pre {\n\t\ttype nat hook prerouting priority -100; policy accept;\n\
               \t\tiifname \"fl21n-a\" udp dport 8080 dnat to 10.200.144.2:5400\n\t}\n}\n";
    let s = nat_scenario("fl21n-dnat", "fl21nd", 143, nft);
    let c = &s.peers[0];
    assert_eq!(c.remote.v4.to_string(), "10.200.144.2");
    let out = s.path("extras.jsonl");
    let mut daemon = start(&s, 2, &out);
    let inside = format!("{}:5400", c.remote.v4);
    let mut server = LineProcess::traffic(&c.ns, TRAFFIC, &["udp-server", &inside, "5", "3", "40"]);
    server.expect_line("listening", Duration::from_secs(10));
    let target = format!("{}:8080", s.ea.v4);
    let mut client = LineProcess::traffic(&s.b, TRAFFIC, &["udp-client", &target, "5", "60", "3"]);
    let port = client.expect_number("local", Duration::from_secs(20)) as u16;
    client.expect_line("done", Duration::from_secs(20));
    client.finish(Duration::from_secs(20));
    server.finish(Duration::from_secs(20));

    let ct = ct_entry(&s.a, |e| e.orig.sport == port && e.orig.dport == 8080);
    assert_eq!(
        (ct.orig.dst, ct.reply.src),
        (s.ea.v4.into(), c.remote.v4.into()),
        "forwarded: {}",
        ct.line
    );
    let inbound = wait_for_records(&mut daemon, &out, 5, |r| {
        r["direction"] == "in" && r["srcport"] == port
    });
    let outbound = wait_for_records(&mut daemon, &out, 3, |r| {
        r["direction"] == "out" && r["dstport"] == port
    });
    daemon.stop();
    for r in &inbound {
        assert_eq!(
            (addr(&r["dstaddr"]), r["dstport"].as_u64()),
            (s.ea.v4.to_string(), Some(8080)),
            "{r}"
        );
        assert_eq!(addr(&r["pkt-srcaddr"]), ct.reply.dst.to_string(), "{r}");
        assert_eq!(addr(&r["pkt-dstaddr"]), ct.reply.src.to_string(), "{r}");
    }
    for r in &outbound {
        assert_eq!(
            (addr(&r["srcaddr"]), r["srcport"].as_u64()),
            (s.ea.v4.to_string(), Some(8080)),
            "{r}"
        );
        assert_eq!(addr(&r["pkt-srcaddr"]), ct.reply.src.to_string(), "{r}");
        assert_eq!(addr(&r["pkt-dstaddr"]), ct.reply.dst.to_string(), "{r}");
    }
}

/// Windows of 5 s. A UDP flow from b sends a datagram every 200 ms from
/// before a window begins until after it ends: its record of that window
/// spans it exactly. A short flow sent and then deleted from conntrack
/// (`conntrack -D`: its DESTROY carries the stop time) a second or more
/// into that window spans only the seconds it existed.
#[test]
fn flow_times_are_a_short_connections_seconds_and_a_long_ones_whole_window() {
    if !require_root("flow_times_are_a_short_connections_seconds_and_a_long_ones_whole_window") {
        return;
    }
    const WINDOW: i64 = 5;
    let s = Scenario::builder("fl21n-time")
        .namespaces("fl21nta", "fl21ntb")
        .veth("fl21n-a", "fl21n-b", 145)
        .build();
    let out = s.path("extras.jsonl");
    let mut daemon = start(&s, WINDOW, &out);
    let long_target = format!("{}:5500", s.ea.v4);
    let short_target = format!("{}:5501", s.ea.v4);
    let mut sinks = Vec::new();
    for target in [&long_target, &short_target] {
        let mut sink = LineProcess::traffic(&s.a, TRAFFIC, &["udp-sink", target]);
        sink.expect_line("listening", Duration::from_secs(10));
        sinks.push(sink);
    }
    let mut long = LineProcess::traffic(&s.b, TRAFFIC, &["udp-flow", &long_target, "20"]);
    let long_port = long.expect_number("local", Duration::from_secs(20)) as u16;
    let tick = |long: &mut LineProcess| {
        long.send_line("send 1");
        long.expect_line("sent", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(200));
    };
    tick(&mut long);
    // The window after the first close: the long flow existed before it.
    let (_, w_start) = daemon.wait_for_window(0, Duration::from_secs(3 * WINDOW as u64));
    let w_end = w_start + WINDOW;
    assert!(unix_now() < w_start + 1, "the test is late for the window");
    while unix_now() < w_start + 1 {
        tick(&mut long);
    }
    let mut short = LineProcess::traffic(
        &s.b,
        TRAFFIC,
        &["udp-client", &short_target, "4", "30", "0"],
    );
    let short_port = short.expect_number("local", Duration::from_secs(20)) as u16;
    short.expect_line("done", Duration::from_secs(20));
    short.finish(Duration::from_secs(20));
    s.a.exec_ok(&[
        "conntrack",
        "-D",
        "-p",
        "udp",
        "--orig-port-src",
        &short_port.to_string(),
        "--orig-port-dst",
        "5501",
    ]);
    let short_done = unix_now();
    assert!(
        short_done < w_end - 1,
        "the short flow took too long: {short_done} vs window end {w_end}"
    );
    // Until the window has ended, and one tick after.
    let limit = Instant::now() + Duration::from_secs(2 * WINDOW as u64);
    while unix_now() <= w_end {
        assert!(
            Instant::now() < limit,
            "the clock did not reach the window's end"
        );
        tick(&mut long);
    }
    tick(&mut long);
    daemon.wait_for_window(2, Duration::from_secs(3 * WINDOW as u64));
    long.send_line("close");
    long.finish(Duration::from_secs(20));
    daemon.stop();

    let in_window: Vec<Value> = read_json_records(&out)
        .into_iter()
        .filter(|r| r["log-status"] == "OK" && r["start"] == w_start && r["direction"] == "in")
        .collect();
    let span = |port: u16| -> Vec<(i64, i64)> {
        in_window
            .iter()
            .filter(|r| r["srcport"] == port)
            .map(|r| {
                (
                    r["flow-start"].as_i64().unwrap(),
                    r["flow-end"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(span(long_port), [(w_start, w_end)], "{in_window:#?}");
    let short_span = span(short_port);
    assert_eq!(short_span.len(), 1, "{in_window:#?}");
    let (first, last) = short_span[0];
    assert!(
        w_start < first && first <= last && last <= short_done && last < w_end,
        "short flow {first}..{last} in window {w_start}..{w_end} (deleted at {short_done})"
    );
}
