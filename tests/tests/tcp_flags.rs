//! tcp-flags end to end: a file sink whose field list names `tcp-flags`
//! makes the daemon install its NFLOG rules for TCP control packets and
//! read their group; the records' flags are what the two sides sent, per
//! direction, and a packet the firewall drops adds its flags to the REJECT
//! record only. The ground truth for the packets the daemon read is the
//! kernel's counters on its own tcp_flags_* rules.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use flowlogd_tests::netns::{DaemonProcess, LineProcess, Netns};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");

/// The fields the file sink writes: enough to find a record, and its flags.
const FIELDS: &str = r#"["eni-id", "srcaddr", "srcport", "dstaddr", "dstport", "protocol", "direction", "packets", "bytes", "start", "end", "log-status", "action", "tcp-flags"]"#;

/// A security group for `a`: SYNs to 2323 and RSTs to 8082 are dropped and
/// logged (REJECT records), with counters.
const RULES: &str = r#"table inet sgtest {
	chain input {
		type filter hook input priority filter; policy accept;
		tcp dport 2323 counter log group 100 prefix "flowlogd:sg-test:deny-telnet" drop
		tcp dport 8082 tcp flags & rst == rst counter log group 100 prefix "flowlogd:sg-test:deny-rst" drop
	}
}
"#;

/// The daemon's config: ENI eni-a on `veth-a`, drops from group 100, one
/// flow log of everything into `flags.jsonl` with the field list.
fn config(s: &Scenario, window_secs: i64) -> std::path::PathBuf {
    let config = s
        .config()
        .window_secs(window_secs)
        .daemon_key("nflog_groups = [100]")
        .eni("eni-a", "veth-a", "vpc-lab")
        .flow_log(FlowLog::vpc("all", "vpc-lab").traffic("all").sinks(&["flags"]))
        .toml(&format!(
            "[sinks.flags]\nplugin = \"file\"\npath = \"{}\"\nformat = \"json\"\nfields = {FIELDS}\n\n",
            s.path("flags.jsonl").display()
        ));
    s.write_config("flowlogd.toml", &config)
}

/// The packets counted by each rule of `table` in `ns` whose line contains
/// `needle`, summed; asserts that `rules` such rules were found.
#[track_caller]
fn nft_packets(ns: &Netns, table: &str, needle: &str, rules: usize) -> u64 {
    let listing = ns.exec_ok(&["nft", "list", "table", "inet", table]);
    let counts: Vec<u64> = listing
        .lines()
        .filter(|l| l.contains(needle) && l.contains("counter packets "))
        .map(|l| {
            let rest = l.split("counter packets ").nth(1).unwrap();
            rest.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(counts.len(), rules, "rules with {needle:?}:\n{listing}");
    counts.iter().sum()
}

/// The value of `sample` once it equals `want` (the loop publishes its
/// counters every 500 ms), or after 5 s whatever it is then.
#[track_caller]
fn metric_when(ns: &Netns, sample: &str, want: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = ns.metric(sample);
        if v == want || std::time::Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP connection that closes cleanly: `tcp-server` in `server_ns`, a
/// client in `client_ns` sending one transfer, then both shut down (a FIN
/// each, every byte read, so no RST). Returns the client's port.
fn clean_connection(server_ns: &Netns, client_ns: &Netns, addr: &str, port: u16) -> u16 {
    let mut server = LineProcess::traffic(
        server_ns,
        TRAFFIC,
        &["tcp-server", &format!("{addr}:{port}")],
    );
    server.expect_line("listening", Duration::from_secs(10));
    let mut client = LineProcess::traffic(
        client_ns,
        TRAFFIC,
        &["tcp-client", &format!("{addr}:{port}")],
    );
    let client_port = client.expect_number("connected ", Duration::from_secs(10)) as u16;
    client.send_line("xfer 1000 2000");
    client.expect_line("ok", Duration::from_secs(10));
    client.send_line("close");
    client.expect_line("closed", Duration::from_secs(10));
    server.expect_line("done", Duration::from_secs(10));
    client_port
}

/// A connection attempt to a port nobody listens on: SYN, answered RST.
fn refused_connection(client_ns: &Netns, addr: &str, port: u16) {
    let out = client_ns.exec(&[
        "timeout",
        "5",
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{addr}/{port}"),
    ]);
    assert!(!out.status.success(), "port {port} accepted a connection");
}

/// A record's (action, direction, srcaddr, srcport, dstaddr, dstport).
type RecordKey = (String, String, String, u64, String, u64);

/// The OK records' tcp-flags by key, ORed over the records of a key (the
/// window's only one unless sums were emitted early); every record must
/// carry the field.
fn flags_by_key(records: &[Value]) -> BTreeMap<RecordKey, u64> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| r["log-status"] == "OK") {
        let key = (
            r["action"].as_str().unwrap().to_owned(),
            r["direction"].as_str().unwrap().to_owned(),
            r["srcaddr"].as_str().unwrap().to_owned(),
            r["srcport"].as_u64().unwrap(),
            r["dstaddr"].as_str().unwrap().to_owned(),
            r["dstport"].as_u64().unwrap(),
        );
        let flags = r["tcp-flags"]
            .as_u64()
            .unwrap_or_else(|| panic!("record without tcp-flags: {r}"));
        *out.entry(key).or_insert(0) |= flags;
    }
    out
}

fn key(action: &str, direction: &str, src: &str, sp: u16, dst: &str, dp: u16) -> RecordKey {
    (
        action.into(),
        direction.into(),
        src.into(),
        sp.into(),
        dst.into(),
        dp.into(),
    )
}

/// A normal close both ways (IPv4 from the peer, IPv6 from the VM), a
/// refused connection both ways, a dropped SYN and a dropped RST: each
/// record's flags are exactly what went over the ENI in its direction,
/// dropped packets' flags are on their REJECT records only, and the
/// packets the daemon read equal the kernel's counters on its rules.
#[test]
fn flags_of_closes_refusals_and_drops() {
    if !require_root("flags_of_closes_refusals_and_drops") {
        return;
    }
    let s = Scenario::builder("fl21tf")
        .veth("veth-a", "veth-b", 41)
        .build();
    s.a.load_nft(RULES);
    let cfg = config(&s, 600);
    let mut daemon = DaemonProcess::start(&s.a, &cfg, &s.path("daemon.log"));
    let (a4, b4) = (s.ea.v4.to_string(), s.eb.v4.to_string());
    let (a6, b6) = (s.ea.v6.to_string(), s.eb.v6.to_string());

    let in_port = clean_connection(&s.a, &s.b, &a4, 8080);
    let out_port = clean_connection(&s.b, &s.a, &format!("[{b6}]"), 8443);
    refused_connection(&s.b, &a4, 8081);
    refused_connection(&s.a, &b4, 9081);
    // Dropped SYN: one attempt, cut before the first retransmission (1 s).
    let _ = s.b.exec(&[
        "timeout",
        "0.5",
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{a4}/2323"),
    ]);
    // An accepted connection whose client aborts (SO_LINGER 0: an RST),
    // and the firewall drops that RST. The server waits on (its read
    // times out long after the test).
    let mut rst_server =
        LineProcess::traffic(&s.a, TRAFFIC, &["tcp-server", &format!("{a4}:8082")]);
    rst_server.expect_line("listening", Duration::from_secs(10));
    let abort = s.b.exec_ok(&[
        "python3",
        "-c",
        &format!(
            "import socket, struct\n\
             c = socket.create_connection(('{a4}', 8082), timeout=5)\n\
             print(c.getsockname()[1])\n\
             c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n\
             c.close()"
        ),
    ]);
    let rst_port: u16 = abort.trim().parse().unwrap();
    rst_server.expect_line("accepted", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));

    // Everything is quiet now: the kernel's counters and the daemon's.
    let logged = nft_packets(&s.a, "flowlogd", "group 65000 snaplen 128", 3);
    let read = metric_when(&s.a, "flowlogd_tcp_flags_packets_total", logged);
    assert_eq!(read, logged, "control packets read vs logged by the rules");
    for reason in ["not_on_an_eni", "nat_unplaced", "bad_headers"] {
        let sample = format!("flowlogd_tcp_flags_ignored_packets_total{{reason=\"{reason}\"}}");
        assert_eq!(s.a.metric(&sample), 0, "{sample}");
    }
    let dropped_syn = nft_packets(&s.a, "sgtest", "deny-telnet", 1);
    let dropped_rst = nft_packets(&s.a, "sgtest", "deny-rst", 1);
    assert_eq!((dropped_syn, dropped_rst), (1, 1));
    daemon.stop();
    drop(rst_server);

    let records = read_json_records(&s.path("flags.jsonl"));
    let flags = flags_by_key(&records);
    let (syn, syn_ack, fin, rst) = (2, 18, 1, 4);
    let expected = [
        // The peer's connection to the VM: SYN and FIN in, SYN-ACK and FIN out.
        (key("ACCEPT", "in", &b4, in_port, &a4, 8080), syn | fin),
        (key("ACCEPT", "out", &a4, 8080, &b4, in_port), syn_ack | fin),
        // The VM's connection to the peer, over IPv6.
        (key("ACCEPT", "out", &a6, out_port, &b6, 8443), syn | fin),
        (key("ACCEPT", "in", &b6, 8443, &a6, out_port), syn_ack | fin),
        // The aborted connection: its RST was dropped, so the ACCEPT
        // record has the SYN only, and the RST is the REJECT record's.
        (key("ACCEPT", "in", &b4, rst_port, &a4, 8082), syn),
        (key("ACCEPT", "out", &a4, 8082, &b4, rst_port), syn_ack),
        (key("REJECT", "in", &b4, rst_port, &a4, 8082), rst),
    ];
    for (k, want) in &expected {
        assert_eq!(flags.get(k), Some(want), "{k:?} in {flags:#?}");
    }
    // Refused both ways: SYN one way, RST (with ACK) back. The client's
    // port is not known to the test: find it by the server's.
    let find = |action: &str, dir: &str, pred: &dyn Fn(&RecordKey) -> bool| -> Vec<u64> {
        flags
            .iter()
            .filter(|(k, _)| k.0 == action && k.1 == dir && pred(k))
            .map(|(_, f)| *f)
            .collect()
    };
    assert_eq!(find("ACCEPT", "in", &|k| k.5 == 8081), vec![syn]);
    assert_eq!(find("ACCEPT", "out", &|k| k.3 == 8081), vec![rst]);
    assert_eq!(find("ACCEPT", "out", &|k| k.5 == 9081), vec![syn]);
    assert_eq!(find("ACCEPT", "in", &|k| k.3 == 9081), vec![rst]);
    // The dropped SYN: a REJECT record with SYN, and no ACCEPT record.
    assert_eq!(find("REJECT", "in", &|k| k.5 == 2323), vec![syn]);
    assert_eq!(find("ACCEPT", "in", &|k| k.5 == 2323), Vec::<u64>::new());
}

/// A connection that spans three windows of 3 s: opened in the first,
/// data in the second, closed in the third. Each window's records carry
/// the flags seen in it: SYN / SYN-ACK, then none (0, not unknown), then
/// FIN each way.
#[test]
fn a_connection_over_three_windows_has_its_flags_in_each() {
    if !require_root("a_connection_over_three_windows_has_its_flags_in_each") {
        return;
    }
    let s = Scenario::builder("fl21tw")
        .veth("veth-a", "veth-b", 42)
        .build();
    let cfg = config(&s, 3);
    let mut daemon = DaemonProcess::start(&s.a, &cfg, &s.path("daemon.log"));
    let a4 = s.ea.v4.to_string();
    let b4 = s.eb.v4.to_string();
    let mut server = LineProcess::traffic(&s.a, TRAFFIC, &["tcp-server", &format!("{a4}:8080")]);
    server.expect_line("listening", Duration::from_secs(10));

    // Right after a close, so each step is well inside its window.
    let limit = Duration::from_secs(15);
    let first = daemon.wait_for_window(0, limit).1;
    let mut client = LineProcess::traffic(&s.b, TRAFFIC, &["tcp-client", &format!("{a4}:8080")]);
    let port = client.expect_number("connected ", Duration::from_secs(10)) as u16;
    let second = daemon.wait_for_window(1, limit).1;
    client.send_line("xfer 1000 2000");
    client.expect_line("ok", Duration::from_secs(10));
    let third = daemon.wait_for_window(2, limit).1;
    client.send_line("close");
    client.expect_line("closed", Duration::from_secs(10));
    server.expect_line("done", Duration::from_secs(10));
    daemon.wait_for_window(3, limit);
    daemon.stop();

    let records = read_json_records(&s.path("flags.jsonl"));
    // (window start, direction) -> (tcp-flags, packets) of the connection.
    let mut seen = BTreeMap::new();
    for r in records.iter().filter(|r| r["log-status"] == "OK") {
        let inbound = r["direction"] == "in" && r["srcport"] == u64::from(port);
        let outbound = r["direction"] == "out" && r["dstport"] == u64::from(port);
        if !(inbound || outbound) {
            continue;
        }
        assert_eq!(
            r["srcaddr"],
            if inbound { &b4 } else { &a4 }.as_str(),
            "{r}"
        );
        let key = (
            r["start"].as_i64().unwrap(),
            r["direction"].as_str().unwrap().to_owned(),
        );
        let flags = r["tcp-flags"]
            .as_u64()
            .unwrap_or_else(|| panic!("no tcp-flags: {r}"));
        let packets = r["packets"].as_u64().unwrap();
        let prev = seen.insert(key, (flags, packets));
        assert!(
            prev.is_none(),
            "two records of one window and direction: {r}"
        );
    }
    let dir = |d: &str| d.to_owned();
    let flags: BTreeMap<_, _> = seen.iter().map(|(k, v)| (k.clone(), v.0)).collect();
    assert_eq!(
        flags,
        BTreeMap::from([
            ((first, dir("in")), 2),
            ((first, dir("out")), 18),
            ((second, dir("in")), 0),
            ((second, dir("out")), 0),
            ((third, dir("in")), 1),
            ((third, dir("out")), 1),
        ]),
        "{records:#?}"
    );
    // Every one of those records counted packets: the flags are on the
    // records of the windows the packets were counted in.
    assert!(seen.values().all(|v| v.1 > 0), "{seen:?}");
}

/// A port forward on the VM (DNAT of 8080 to a namespace behind it). The
/// SYN-ACK and FIN leaving the ENI are placed by their headers (after
/// un-DNAT, the wire's); the SYN and FIN arriving show the inner address
/// at the hooks after the filter. Where the kernel attaches conntrack
/// entries they are placed by its original tuple; where it cannot (as
/// here, the test says which), they mark the ENI's window SKIPDATA.
#[test]
fn a_port_forward_is_placed_or_marked() {
    if !require_root("a_port_forward_is_placed_or_marked") {
        return;
    }
    let s = Scenario::builder("fl21tn")
        .veth("veth-a", "veth-b", 43)
        .peer("fl21tnc", "veth-c", "veth-r", 44)
        .build();
    let c = &s.peers[0];
    let (a4, b4, c4) = (
        s.ea.v4.to_string(),
        s.eb.v4.to_string(),
        c.remote.v4.to_string(),
    );
    c.ns.exec_ok(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        &c.local.v4.to_string(),
    ]);
    s.a.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    s.a.load_nft(&format!(
            "table ip fl21tnat {{\n\tchain pre {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t\ttcp dport 8080 dnat to {c4}:80\n\t}}\n}}\n"
        ),
    );
    let cfg = config(&s, 600);
    let mut daemon = DaemonProcess::start(&s.a, &cfg, &s.path("daemon.log"));
    let glue = !daemon.log().contains("CONFIG_NETFILTER_NETLINK_GLUE_CT");

    let mut server = LineProcess::traffic(&c.ns, TRAFFIC, &["tcp-server", &format!("{c4}:80")]);
    server.expect_line("listening", Duration::from_secs(10));
    let mut client = LineProcess::traffic(&s.b, TRAFFIC, &["tcp-client", &format!("{a4}:8080")]);
    let port = client.expect_number("connected ", Duration::from_secs(10)) as u16;
    client.send_line("xfer 100 100");
    client.expect_line("ok", Duration::from_secs(10));
    client.send_line("close");
    client.expect_line("closed", Duration::from_secs(10));
    server.expect_line("done", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));

    let logged = nft_packets(&s.a, "flowlogd", "group 65000 snaplen 128", 3);
    let read = metric_when(&s.a, "flowlogd_tcp_flags_packets_total", logged);
    assert_eq!(read, logged, "control packets read vs logged by the rules");
    let nat_logged = nft_packets(&s.a, "flowlogd", "flowlogd:nat", 1);
    // SYN and FIN from b on veth-a, SYN-ACK and FIN from c on veth-c.
    assert_eq!(nat_logged, 4, "NAT'd arriving packets");
    let unplaced =
        s.a.metric("flowlogd_tcp_flags_ignored_packets_total{reason=\"nat_unplaced\"}");
    daemon.stop();

    let records = read_json_records(&s.path("flags.jsonl"));
    let flags = flags_by_key(&records);
    let skipdata = records
        .iter()
        .filter(|r| r["log-status"] == "SKIPDATA")
        .count();
    // Leaving: SYN-ACK and FIN, from the ENI's address and port (un-DNAT).
    assert_eq!(
        flags.get(&key("ACCEPT", "out", &a4, 8080, &b4, port)),
        Some(&(18 | 1)),
        "{records:#?}"
    );
    let arriving = flags.get(&key("ACCEPT", "in", &b4, port, &a4, 8080));
    if glue {
        assert_eq!((arriving, unplaced, skipdata), (Some(&(2 | 1)), 0, 0));
    } else {
        // The record is there with what could be placed (nothing), and the
        // window says it is incomplete.
        assert_eq!(
            (arriving, unplaced, skipdata),
            (Some(&0), 2, 1),
            "{records:#?}"
        );
    }
}

/// `check-config` (no root needed) says when a field list turns tcp-flags
/// capture on and on which group, says nothing of it otherwise, and refuses
/// it without the daemon's table, at the sink's `fields` line.
#[test]
fn check_config_tells_of_tcp_flags_and_refuses_it_without_the_table() {
    let tmp = TempDir::new("fl21t-check");
    let plugins = plugin_dir(&tmp);
    let write = |name: &str, daemon: &str, fields: &str| {
        let path = tmp.join(name);
        let text = DaemonConfig::new(&plugins)
            .daemon_key(daemon)
            .eni("eni-1", "eth0", "vpc-1")
            .flow_log(FlowLog::vpc("all", "vpc-1").sinks(&["local"]))
            .toml(&format!(
                "[sinks.local]\nplugin = \"file\"\npath = \"{}\"\nformat = \"json\"\n{fields}\n",
                tmp.join("flow.jsonl").display()
            ))
            .write(&path);
        text.to_str().unwrap().to_owned()
    };
    let line = "tcp-flags: a sink's field list names it";
    let on = write(
        "on.toml",
        "tcp_flags_nflog_group = 321",
        r#"fields = ["srcaddr", "tcp-flags"]"#,
    );
    let o = flowlogd(&["check-config", "--config", &on]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&format!(
            "{line}: table inet flowlogd will copy TCP SYN, FIN and RST headers to NFLOG group 321"
        )),
        "{}",
        text(&o)
    );
    let off = write("off.toml", "", r#"fields = ["srcaddr", "dstaddr"]"#);
    let o = flowlogd(&["check-config", "--config", &off]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains(line),
        "{}",
        text(&o)
    );

    let refused = write(
        "refused.toml",
        "install_tracking_table = false",
        r#"fields = ["tcp-flags"]"#,
    );
    let o = flowlogd(&["check-config", "--config", &refused]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let at = line_starting_with(Path::new(&refused), "fields = ");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim_end(),
        format!(
            "flowlogd: {refused}:{at}:1: sinks.local.fields: tcp-flags needs the daemon's nftables table inet \
             flowlogd, where it logs TCP control packets, but daemon.install_tracking_table = false; set it to \
             true or leave tcp-flags out"
        ),
        "{}",
        text(&o)
    );
}
