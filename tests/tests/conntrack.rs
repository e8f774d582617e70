//! Conntrack capture end to end: the real `flowlogd` in network namespaces
//! the tests build, real traffic between them, and the records checked
//! against the kernel's own counters (`conntrack -L` in the same namespace)
//! and, where the sizes are known in advance (UDP, ICMP), against numbers
//! computed independently.
//!
//! Addresses: the veth pair `n` is 10.200.n.0/24 and fd00:200:n::/64, `.1`
//! / `::1` on the first namespace's side. Namespaces are private to each
//! test, so tests may reuse subnets and interface names.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use flowlogd_tests::netns::{
    unix_now, unix_secs, CtEntry, DaemonProcess, LineProcess, Netns, VethEnd,
};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");
/// Bound on any single step of a traffic peer (they talk over a veth).
const STEP: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------
// Records and expectations
// ---------------------------------------------------------------------

/// What a record is about: its ENI, direction and directional 5-tuple.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FlowId {
    eni: String,
    direction: String,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    protocol: u8,
}

impl FlowId {
    fn new(
        eni: &str,
        direction: &str,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        protocol: u8,
    ) -> FlowId {
        FlowId {
            eni: eni.into(),
            direction: direction.into(),
            src,
            sport,
            dst,
            dport,
            protocol,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Counts {
    packets: u64,
    bytes: u64,
}

impl Counts {
    fn new(packets: u64, bytes: u64) -> Counts {
        Counts { packets, bytes }
    }

    fn add(&mut self, o: Counts) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }

    /// `self - earlier`, panicking if a counter went backwards.
    #[track_caller]
    fn since(self, earlier: Counts) -> Counts {
        Counts {
            packets: self
                .packets
                .checked_sub(earlier.packets)
                .expect("packets went backwards"),
            bytes: self
                .bytes
                .checked_sub(earlier.bytes)
                .expect("bytes went backwards"),
        }
    }

    fn covers(self, o: Counts) -> bool {
        self.packets >= o.packets && self.bytes >= o.bytes
    }
}

fn str_of<'a>(r: &'a Value, key: &str) -> &'a str {
    r[key]
        .as_str()
        .unwrap_or_else(|| panic!("record without string {key:?}: {r}"))
}

fn u64_of(r: &Value, key: &str) -> u64 {
    r[key]
        .as_u64()
        .unwrap_or_else(|| panic!("record without number {key:?}: {r}"))
}

fn log_status(r: &Value) -> &str {
    str_of(r, "log-status")
}

fn window_of(r: &Value) -> (i64, i64) {
    (
        r["start"].as_i64().expect("start"),
        r["end"].as_i64().expect("end"),
    )
}

fn flow_id(r: &Value) -> FlowId {
    let addr = |k: &str| {
        str_of(r, k)
            .parse::<IpAddr>()
            .unwrap_or_else(|e| panic!("{k} in {r}: {e}"))
    };
    FlowId {
        eni: str_of(r, "eni-id").into(),
        direction: str_of(r, "direction").into(),
        src: addr("srcaddr"),
        sport: u64_of(r, "srcport") as u16,
        dst: addr("dstaddr"),
        dport: u64_of(r, "dstport") as u16,
        protocol: u64_of(r, "protocol") as u8,
    }
}

fn counts(r: &Value) -> Counts {
    Counts::new(u64_of(r, "packets"), u64_of(r, "bytes"))
}

/// OK records summed per flow over all windows (every ENI).
fn totals(records: &[Value]) -> BTreeMap<FlowId, Counts> {
    let mut m = BTreeMap::new();
    for r in records.iter().filter(|r| log_status(r) == "OK") {
        assert_eq!(
            str_of(r, "action"),
            "ACCEPT",
            "conntrack traffic is ACCEPT: {r}"
        );
        m.entry(flow_id(r))
            .or_insert_with(Counts::default)
            .add(counts(r));
    }
    m
}

/// OK records per window, summed per flow.
fn per_window(records: &[Value]) -> BTreeMap<(i64, i64), BTreeMap<FlowId, Counts>> {
    let mut m: BTreeMap<(i64, i64), BTreeMap<FlowId, Counts>> = BTreeMap::new();
    for r in records.iter().filter(|r| log_status(r) == "OK") {
        m.entry(window_of(r))
            .or_default()
            .entry(flow_id(r))
            .or_default()
            .add(counts(r));
    }
    m
}

/// The records ENI `eni` must show for conntrack entry `e` when it owns
/// the addresses `local` (no NAT): the original direction leaves (`out`)
/// if the ENI is its source and arrives (`in`) if it is its destination;
/// replies the other way. Directions without packets have no record;
/// protocols without ports show port 0.
fn expected_of(e: &CtEntry, eni: &str, local: &[IpAddr]) -> Vec<(FlowId, Counts)> {
    let (o, r) = (&e.orig, &e.reply);
    let id = |dir: &str, src, sport, dst, dport| {
        FlowId::new(eni, dir, src, sport, dst, dport, e.protocol)
    };
    let mut v = Vec::new();
    if local.contains(&o.src) {
        v.push((
            id("out", o.src, o.sport, o.dst, o.dport),
            Counts::new(o.packets, o.bytes),
        ));
        v.push((
            id("in", r.src, r.sport, r.dst, r.dport),
            Counts::new(r.packets, r.bytes),
        ));
    }
    if local.contains(&o.dst) {
        v.push((
            id("in", o.src, o.sport, o.dst, o.dport),
            Counts::new(o.packets, o.bytes),
        ));
        v.push((
            id("out", o.dst, o.dport, o.src, o.sport),
            Counts::new(r.packets, r.bytes),
        ));
    }
    v.retain(|(_, c)| c.packets > 0);
    v
}

/// [`expected_of`] summed over entries (ICMP flows with different echo
/// ids share a record).
fn expected(entries: &[CtEntry], eni: &str, local: &[IpAddr]) -> BTreeMap<FlowId, Counts> {
    let mut m = BTreeMap::new();
    for e in entries {
        for (id, c) in expected_of(e, eni, local) {
            m.entry(id).or_insert_with(Counts::default).add(c);
        }
    }
    m
}

fn show(m: &BTreeMap<FlowId, Counts>) -> String {
    m.iter()
        .map(|(k, c)| {
            format!(
                "  {} {:3} {}:{} -> {}:{} proto {}: {} packets, {} bytes",
                k.eni, k.direction, k.src, k.sport, k.dst, k.dport, k.protocol, c.packets, c.bytes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ct_lines(entries: &[CtEntry]) -> String {
    entries
        .iter()
        .map(|e| e.line.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that the records sum to exactly `want`, flow by flow.
#[track_caller]
fn assert_totals(
    what: &str,
    got: &BTreeMap<FlowId, Counts>,
    want: &BTreeMap<FlowId, Counts>,
    context: &str,
) {
    assert!(
        got == want,
        "{what}: records differ from the kernel's counters\n--- records (summed over windows)\n{}\n--- expected from \
         conntrack\n{}\n{context}",
        show(got),
        show(want)
    );
}

/// A flow's counters in the records, or zero.
fn get(m: &BTreeMap<FlowId, Counts>, id: &FlowId) -> Counts {
    m.get(id).copied().unwrap_or_default()
}

// ---------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------

/// A and B joined by veth pair 1: `eth-b` in A, `eth-a` in B. The scratch
/// directory is labelled `label`, the namespaces `<ns>a` and `<ns>b`.
fn scenario(label: &str, ns: &str) -> Scenario {
    Scenario::builder(label)
        .namespaces(&format!("{ns}a"), &format!("{ns}b"))
        .veth("eth-b", "eth-a", 1)
        .build()
}

/// One ENI on `interface`, captured by a VPC-scoped instance into a JSON file.
fn one_eni(config: DaemonConfig, eni: &str, interface: &str, out: &Path) -> DaemonConfig {
    config
        .eni(eni, interface, "vpc-1")
        .flow_log(FlowLog::vpc("all", "vpc-1").traffic("all").sinks(&["out"]))
        .json_sink("out", out)
}

fn sockaddr(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

fn addrs(end: &VethEnd) -> [IpAddr; 2] {
    [end.v4.into(), end.v6.into()]
}

// ---------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------

/// A TCP connection from `client_ns` to a server in `server_ns`, driven
/// one transfer at a time.
struct TcpFlow {
    server: LineProcess,
    client: LineProcess,
    /// The client's (ephemeral) port.
    port: u16,
}

impl TcpFlow {
    #[track_caller]
    fn open(client_ns: &Netns, server_ns: &Netns, server: IpAddr, port: u16) -> TcpFlow {
        let mut s =
            LineProcess::traffic(server_ns, TRAFFIC, &["tcp-server", &sockaddr(server, port)]);
        s.expect_line("listening", STEP);
        let mut c =
            LineProcess::traffic(client_ns, TRAFFIC, &["tcp-client", &sockaddr(server, port)]);
        let local = c.expect_number("connected", STEP) as u16;
        TcpFlow {
            server: s,
            client: c,
            port: local,
        }
    }

    /// The client sends `n` bytes (plus the 16-byte header), the server
    /// answers `r`; returns once the client has the answer.
    #[track_caller]
    fn xfer(&mut self, n: u64, r: u64) {
        self.client.send_line(&format!("xfer {n} {r}"));
        self.client.expect_line("ok", STEP);
    }

    #[track_caller]
    fn close(mut self) {
        self.client.send_line("close");
        self.client.expect_line("closed", STEP);
        self.client.finish(STEP);
        self.server.expect_line("done", STEP);
        self.server.finish(STEP);
    }
}

/// `count` datagrams of `size` bytes from `client_ns` to a server in
/// `server_ns`, which answers `replies` of `reply_size`. Returns the
/// client's port.
#[track_caller]
fn udp_exchange(
    client_ns: &Netns,
    server_ns: &Netns,
    server: IpAddr,
    port: u16,
    (count, size): (u64, u64),
    (replies, reply_size): (u64, u64),
) -> u16 {
    let mut s = LineProcess::traffic(
        server_ns,
        TRAFFIC,
        &[
            "udp-server",
            &sockaddr(server, port),
            &count.to_string(),
            &replies.to_string(),
            &reply_size.to_string(),
        ],
    );
    s.expect_line("listening", STEP);
    let mut c = LineProcess::traffic(
        client_ns,
        TRAFFIC,
        &[
            "udp-client",
            &sockaddr(server, port),
            &count.to_string(),
            &size.to_string(),
            &replies.to_string(),
        ],
    );
    let local = c.expect_number("local", STEP) as u16;
    c.expect_line("done", STEP);
    c.finish(STEP);
    s.expect_line("done", STEP);
    s.finish(STEP);
    local
}

/// `ping -c <count> -s 56` from `ns` to `to`.
#[track_caller]
fn ping(ns: &Netns, to: IpAddr, count: u32) {
    ns.exec_ok(&[
        "ping",
        "-n",
        "-c",
        &count.to_string(),
        "-s",
        "56",
        "-i",
        "0.2",
        "-W",
        "5",
        &to.to_string(),
    ]);
}

/// `n` one-datagram UDP flows of `size` bytes from source ports
/// `first_port..` to `to`.
#[track_caller]
fn udp_burst(ns: &Netns, to: &str, n: u32, size: u32, first_port: u16) {
    let mut p = LineProcess::traffic(
        ns,
        TRAFFIC,
        &[
            "udp-burst",
            to,
            &n.to_string(),
            &size.to_string(),
            &first_port.to_string(),
        ],
    );
    p.expect_line("sent", Duration::from_secs(60));
    p.finish(STEP);
}

/// The single conntrack entry of TCP client port `port`.
#[track_caller]
fn tcp_entry(entries: &[CtEntry], port: u16) -> (Counts, Counts) {
    let found: Vec<&CtEntry> = entries
        .iter()
        .filter(|e| e.protocol == 6 && e.orig.sport == port)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one TCP entry from port {port}:\n{}",
        ct_lines(entries)
    );
    let e = found[0];
    (
        Counts::new(e.orig.packets, e.orig.bytes),
        Counts::new(e.reply.packets, e.reply.bytes),
    )
}

fn context(
    daemons: &[(&str, &DaemonProcess)],
    records: &[(&str, &[Value])],
    ct: &[(&str, &[CtEntry])],
) -> String {
    let mut s = String::new();
    for (name, d) in daemons {
        s.push_str(&format!("--- {name} log\n{}", d.log()));
    }
    for (name, rs) in records {
        s.push_str(&format!("--- {name} records\n"));
        for r in *rs {
            s.push_str(&format!("{r}\n"));
        }
    }
    for (name, entries) in ct {
        s.push_str(&format!("--- {name} conntrack\n{}\n", ct_lines(entries)));
    }
    s
}

// ---------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------

/// TCP, UDP and ICMP echo between two namespaces, with a daemon on each
/// side: every record's packets and bytes equal the kernel's counters in
/// that namespace exactly, UDP and ICMP also equal sizes computed from the
/// traffic (IPv4: 28 + payload per datagram, 84 per echo of -s 56), and
/// the tuples and directions are the client's view on A (out then in) and
/// the server's view on B (in then out).
#[test]
fn ipv4_tcp_udp_icmp_counters_are_exact_on_both_sides() {
    if !require_root("ipv4_tcp_udp_icmp_counters_are_exact_on_both_sides") {
        return;
    }
    exchange_on_both_sides("v4", 4);
}

/// The same over IPv6: TCP, UDP (48 + payload bytes per datagram) and
/// ICMPv6 echo (104 bytes per echo of -s 56) with exact counters on both
/// sides.
#[test]
fn ipv6_tcp_udp_icmpv6_counters_are_exact_on_both_sides() {
    if !require_root("ipv6_tcp_udp_icmpv6_counters_are_exact_on_both_sides") {
        return;
    }
    exchange_on_both_sides("v6", 6);
}

fn exchange_on_both_sides(label: &str, family: u8) {
    let s = scenario(&format!("ct-{label}"), label);
    let (a, b, ea, eb) = (&s.a, &s.b, &s.ea, &s.eb);
    let (out_a, out_b) = (s.path("a.jsonl"), s.path("b.jsonl"));
    let cfg_a = s.write_config(
        "a.toml",
        &one_eni(s.config().window_secs(2), "eni-a", "eth-b", &out_a),
    );
    // Two daemons, so two state directories: a sink's spool is one
    // daemon's at a time.
    let cfg_b = s.write_config(
        "b.toml",
        &one_eni(
            s.config().window_secs(2).state_dir("state-b"),
            "eni-b",
            "eth-a",
            &out_b,
        ),
    );
    let mut da = s.start_daemon(&cfg_a, "a.log");
    let mut db = DaemonProcess::start(b, &cfg_b, &s.path("b.log"));
    let (ia, ib) = (ea.addr(family), eb.addr(family));

    let mut tcp = TcpFlow::open(a, b, ib, 5001);
    tcp.xfer(100_000, 5_000);
    let tcp_port = tcp.port;
    tcp.close();
    let udp_port = udp_exchange(a, b, ib, 5002, (5, 100), (3, 50));
    ping(a, ib, 3);

    // The entries are still live (TIME_WAIT, UDP and ICMP timeouts), so
    // the kernel's counters are the final ones; read them while the
    // daemons still run.
    let (ct_a, _) = a.settled_conntrack();
    let (ct_b, _) = b.settled_conntrack();
    da.stop();
    db.stop();
    let (rec_a, rec_b) = (read_json_records(&out_a), read_json_records(&out_b));
    let ctx = context(
        &[("A", &da), ("B", &db)],
        &[("A", &rec_a), ("B", &rec_b)],
        &[("A", &ct_a), ("B", &ct_b)],
    );

    for (name, recs, eni) in [("A", &rec_a, "eni-a"), ("B", &rec_b, "eni-b")] {
        assert!(!recs.is_empty(), "{name}: no records\n{ctx}");
        for r in recs.iter() {
            assert_eq!(
                str_of(r, "eni-id"),
                eni,
                "{name}: record of another ENI: {r}\n{ctx}"
            );
            assert!(
                matches!(log_status(r), "OK" | "NODATA"),
                "{name}: unexpected {r}\n{ctx}"
            );
        }
    }
    let (got_a, got_b) = (totals(&rec_a), totals(&rec_b));
    assert_totals("A", &got_a, &expected(&ct_a, "eni-a", &addrs(ea)), &ctx);
    assert_totals("B", &got_b, &expected(&ct_b, "eni-b", &addrs(eb)), &ctx);

    // Tuples and directions: A is the client, B the server.
    let (udp_hdr, echo) = if family == 4 { (28, 84) } else { (48, 104) };
    let icmp = if family == 4 { 1 } else { 58 };
    let a_out = |sport, dport, p| FlowId::new("eni-a", "out", ia, sport, ib, dport, p);
    let a_in = |sport, dport, p| FlowId::new("eni-a", "in", ib, sport, ia, dport, p);
    let b_in = |sport, dport, p| FlowId::new("eni-b", "in", ia, sport, ib, dport, p);
    let b_out = |sport, dport, p| FlowId::new("eni-b", "out", ib, sport, ia, dport, p);
    // TCP: at least the payload (plus the 16-byte header) each way.
    for (id, floor) in [
        (a_out(tcp_port, 5001, 6), 100_016),
        (a_in(5001, tcp_port, 6), 5_000),
        (b_in(tcp_port, 5001, 6), 100_016),
        (b_out(5001, tcp_port, 6), 5_000),
    ] {
        let (got, side) = if id.eni == "eni-a" {
            (&got_a, "A")
        } else {
            (&got_b, "B")
        };
        let c = get(got, &id);
        assert!(
            c.bytes > floor && c.packets > 0,
            "{side}: TCP record {id:?} = {c:?}, expected > {floor} bytes\n{ctx}"
        );
    }
    // UDP and ICMP: sizes known from the traffic alone.
    for (id, want) in [
        (
            a_out(udp_port, 5002, 17),
            Counts::new(5, 5 * (udp_hdr + 100)),
        ),
        (a_in(5002, udp_port, 17), Counts::new(3, 3 * (udp_hdr + 50))),
        (
            b_in(udp_port, 5002, 17),
            Counts::new(5, 5 * (udp_hdr + 100)),
        ),
        (
            b_out(5002, udp_port, 17),
            Counts::new(3, 3 * (udp_hdr + 50)),
        ),
        (a_out(0, 0, icmp), Counts::new(3, 3 * echo)),
        (a_in(0, 0, icmp), Counts::new(3, 3 * echo)),
        (b_in(0, 0, icmp), Counts::new(3, 3 * echo)),
        (b_out(0, 0, icmp), Counts::new(3, 3 * echo)),
    ] {
        let got = if id.eni == "eni-a" { &got_a } else { &got_b };
        assert_eq!(get(got, &id), want, "{id:?}\n{ctx}");
    }
    // Nothing but these three flows, both directions, on each side.
    assert_eq!(got_a.len(), 6, "A: {}\n{ctx}", show(&got_a));
    assert_eq!(got_b.len(), 6, "B: {}\n{ctx}", show(&got_b));
}

/// A TCP connection open across several windows (3 s each; one transfer
/// per window, sent right after the previous window closed): each window's
/// records carry only that window's delta, exactly the difference of the
/// kernel's counters between the ends of the transfers, and the sum over
/// windows equals the kernel's final counters, the last part of which (the
/// close) reaches the daemon only in the DESTROY event of `conntrack -D`.
#[test]
fn long_lived_tcp_flow_is_counted_per_window_without_double_counting() {
    if !require_root("long_lived_tcp_flow_is_counted_per_window_without_double_counting") {
        return;
    }
    // Long enough for a transfer to settle even with the other end-to-end
    // tests of this file loading both cores at once.
    const WINDOW: i64 = 6;
    let wait = Duration::from_secs(WINDOW as u64 + 15);
    let s = scenario("ct-long", "long");
    let (a, b, ea, eb) = (&s.a, &s.b, &s.ea, &s.eb);
    let out = s.path("a.jsonl");
    let cfg = s.write_config(
        "a.toml",
        &one_eni(s.config().window_secs(WINDOW), "eni-a", "eth-b", &out),
    );
    let mut d = s.start_daemon(&cfg, "a.log");
    let (ia, ib) = (IpAddr::V4(ea.v4), IpAddr::V4(eb.v4));

    // Start right after a window boundary, so that each transfer has
    // almost a whole window to settle in.
    d.wait_for_window(0, wait);
    let mut flow = TcpFlow::open(a, b, ib, 5001);
    let port = flow.port;
    // Cumulative (orig, reply) counters after each transfer.
    let mut snaps = vec![(Counts::default(), Counts::default())];
    let mut windows = Vec::new();
    for (k, n) in [(1usize, 10_000u64), (2, 20_000), (3, 30_000)] {
        let window_start = d.closed_windows()[k - 1].1;
        flow.xfer(n, n / 10);
        let (ct, quiet_since) = a.settled_conntrack();
        assert!(
            unix_secs(quiet_since) < window_start + WINDOW && d.closed_windows().len() == k,
            "transfer {k} did not settle inside its window [{window_start}, {}) (quiet since {}): the machine is \
             too slow for this test\n{}",
            window_start + WINDOW,
            unix_secs(quiet_since),
            d.log()
        );
        snaps.push(tcp_entry(&ct, port));
        windows.push((window_start, window_start + WINDOW));
        d.wait_for_window(k, wait);
    }
    flow.close();
    let (ct_final, _) = a.settled_conntrack();
    let final_counts = tcp_entry(&ct_final, port);
    // Delete the entry (TIME_WAIT would keep it for 2 minutes): its last
    // counters (the FIN exchange, not yet harvested by a window dump) now
    // reach the daemon only in the DESTROY event.
    let sport = port.to_string();
    a.exec_ok(&["conntrack", "-D", "-p", "tcp", "--orig-port-src", &sport]);
    let left = a
        .conntrack()
        .into_iter()
        .filter(|e| e.protocol == 6 && e.orig.sport == port)
        .count();
    assert_eq!(left, 0, "the connection's entry is deleted");
    d.stop();

    let records = read_json_records(&out);
    let ctx = context(
        &[("A", &d)],
        &[("A", &records)],
        &[("A (final)", &ct_final)],
    );
    let out_id = FlowId::new("eni-a", "out", ia, port, ib, 5001, 6);
    let in_id = FlowId::new("eni-a", "in", ib, 5001, ia, port, 6);
    let by_window = per_window(&records);
    let flow_in = |w: &(i64, i64)| {
        let m = by_window.get(w).cloned().unwrap_or_default();
        (get(&m, &out_id), get(&m, &in_id))
    };
    for (k, w) in windows.iter().enumerate() {
        let want = (
            snaps[k + 1].0.since(snaps[k].0),
            snaps[k + 1].1.since(snaps[k].1),
        );
        assert_eq!(
            flow_in(w),
            want,
            "window {w:?} (transfer {}): (out, in) records vs the kernel's delta\n{ctx}",
            k + 1
        );
        assert!(
            want.0.bytes > [10_000, 20_000, 30_000][k],
            "transfer {} is in its window\n{ctx}",
            k + 1
        );
    }
    // The rest (the FIN exchange) in the windows after the third, and
    // nothing in any window before the first.
    let mut rest = (Counts::default(), Counts::default());
    for (w, m) in &by_window {
        if windows.contains(w) {
            continue;
        }
        assert!(
            w.0 >= windows[2].1,
            "flow records in window {w:?}, before or between the transfers' windows\n{ctx}"
        );
        rest.0.add(get(m, &out_id));
        rest.1.add(get(m, &in_id));
    }
    assert_eq!(
        rest,
        (
            final_counts.0.since(snaps[3].0),
            final_counts.1.since(snaps[3].1)
        ),
        "after the transfers\n{ctx}"
    );
    // Distinct windows, and the sum is the kernel's final count.
    let got = totals(&records);
    assert_eq!(
        (get(&got, &out_id), get(&got, &in_id)),
        final_counts,
        "sum over windows\n{ctx}"
    );
    assert_eq!(got.len(), 2, "only this flow: {}\n{ctx}", show(&got));
}

/// Two ENIs in one namespace (A's veths to B and C) plus an idle third
/// (veth to D, no traffic), and four flow log instances: each ENI's
/// records carry its own eni-id and exactly its own traffic; the idle ENI
/// gives exactly one NODATA record per window; an instance with
/// `traffic = "reject"` gets no ACCEPT records (only NODATA, one per
/// window); a VPC-scoped instance covers every ENI of the VPC (eni-b and
/// the idle eni-d) and nothing else, an ENI-scoped one only its ENI.
#[test]
fn two_enis_an_idle_one_and_scoped_instances() {
    if !require_root("two_enis_an_idle_one_and_scoped_instances") {
        return;
    }
    // D stays idle: its veth's ENI has no traffic.
    let s = Scenario::builder("ct-enis")
        .namespaces("enia", "enib")
        .veth("eth-b", "eth-a", 1)
        .peer("enic", "eth-c", "eth-a", 2)
        .peer("enid", "eth-d", "eth-a", 3)
        .build();
    let (a, b, ab, ba) = (&s.a, &s.b, &s.ea, &s.eb);
    let (c, ac, ca) = (&s.peers[0].ns, &s.peers[0].local, &s.peers[0].remote);
    let (vpc1, enic, rejectb) = (
        s.path("vpc1.jsonl"),
        s.path("enic.jsonl"),
        s.path("rejectb.jsonl"),
    );
    let config = s
        .config()
        .window_secs(2)
        .eni("eni-b", "eth-b", "vpc-1")
        .eni("eni-c", "eth-c", "vpc-2")
        .eni("eni-d", "eth-d", "vpc-1")
        .flow_log(
            FlowLog::vpc("vpc-1", "vpc-1")
                .traffic("all")
                .sinks(&["vpc1"]),
        )
        .flow_log(
            FlowLog::eni("eni-c", "eni-c")
                .traffic("all")
                .sinks(&["enic"]),
        )
        .flow_log(
            FlowLog::eni("reject-b", "eni-b")
                .traffic("reject")
                .sinks(&["rejectb"]),
        )
        .json_sink("vpc1", &vpc1)
        .json_sink("enic", &enic)
        .json_sink("rejectb", &rejectb);
    let cfg = s.write_config("a.toml", &config);
    let mut d = s.start_daemon(&cfg, "a.log");

    let mut to_b = TcpFlow::open(a, b, ba.v4.into(), 5001);
    to_b.xfer(30_000, 3_000);
    to_b.close();
    ping(a, ba.v6.into(), 2);
    udp_exchange(a, c, ca.v4.into(), 5002, (4, 200), (2, 20));
    ping(a, ca.v4.into(), 2);
    let (ct, _) = a.settled_conntrack();
    // At least two whole windows, so "one per window" means something.
    let seen = d.closed_windows().len();
    d.wait_for_window(seen + 1, Duration::from_secs(20));
    d.stop();

    // A window closed in the second it opened (SIGTERM right at a
    // boundary) lasted no time and has no NODATA records.
    let windows: Vec<(i64, i64)> = d
        .closed_windows()
        .into_iter()
        .filter(|(s, e)| e > s)
        .collect();
    let (r_vpc1, r_enic, r_rejectb) = (
        read_json_records(&vpc1),
        read_json_records(&enic),
        read_json_records(&rejectb),
    );
    let ctx = context(
        &[("A", &d)],
        &[
            ("vpc1", &r_vpc1),
            ("enic", &r_enic),
            ("rejectb", &r_rejectb),
        ],
        &[("A", &ct)],
    );

    // Exact per-ENI traffic, each in its own instance.
    let vpc1_ok: Vec<Value> = r_vpc1
        .iter()
        .filter(|r| log_status(r) == "OK")
        .cloned()
        .collect();
    assert!(
        vpc1_ok.iter().all(|r| str_of(r, "eni-id") == "eni-b"),
        "vpc-1 OK records are eni-b's only\n{ctx}"
    );
    assert_totals(
        "eni-b in the vpc-1 instance",
        &totals(&r_vpc1),
        &expected(&ct, "eni-b", &addrs(ab)),
        &ctx,
    );
    assert!(
        r_enic.iter().all(|r| str_of(r, "eni-id") == "eni-c"),
        "the eni-c instance has only eni-c\n{ctx}"
    );
    assert_totals(
        "eni-c in its instance",
        &totals(&r_enic),
        &expected(&ct, "eni-c", &addrs(ac)),
        &ctx,
    );
    assert_eq!(
        totals(&r_enic).len(),
        4,
        "eni-c: UDP and ICMP, both directions\n{ctx}"
    );
    assert_eq!(
        totals(&r_vpc1).len(),
        4,
        "eni-b: TCP and ICMPv6, both directions\n{ctx}"
    );

    // One record per window and ENI where the ENI is idle for an instance.
    let per_window_records = |recs: &[Value], eni: &str| -> BTreeMap<(i64, i64), Vec<String>> {
        let mut m: BTreeMap<(i64, i64), Vec<String>> = BTreeMap::new();
        for r in recs.iter().filter(|r| str_of(r, "eni-id") == eni) {
            m.entry(window_of(r))
                .or_default()
                .push(log_status(r).to_owned());
        }
        m
    };
    let every_window_nodata = |recs: &[Value], eni: &str, what: &str| {
        let m = per_window_records(recs, eni);
        let want: BTreeMap<(i64, i64), Vec<String>> = windows
            .iter()
            .map(|w| (*w, vec!["NODATA".to_owned()]))
            .collect();
        assert_eq!(
            m, want,
            "{what}: exactly one NODATA record per window\n{ctx}"
        );
    };
    every_window_nodata(&r_vpc1, "eni-d", "idle eni-d in the vpc-1 instance");
    every_window_nodata(&r_rejectb, "eni-b", "eni-b in the reject-only instance");
    assert!(
        r_rejectb.iter().all(|r| str_of(r, "eni-id") == "eni-b"),
        "reject-b is eni-b's only\n{ctx}"
    );
    // eni-b in vpc-1: every window has its OK records or one NODATA.
    let b_windows = per_window_records(&r_vpc1, "eni-b");
    for w in &windows {
        let st = b_windows.get(w).cloned().unwrap_or_default();
        assert!(
            st == ["NODATA"] || (!st.is_empty() && st.iter().all(|s| s == "OK")),
            "eni-b in window {w:?}: {st:?}\n{ctx}"
        );
    }
    assert_eq!(
        b_windows.keys().copied().collect::<Vec<_>>(),
        windows,
        "eni-b has records in every window\n{ctx}"
    );
    // Scopes: eni-c is in vpc-2, so not in the vpc-1 instance; the eni-c
    // instance has only eni-c.
    assert!(
        r_vpc1.iter().all(|r| str_of(r, "eni-id") != "eni-c"),
        "vpc-1 instance has no eni-c\n{ctx}"
    );
    let c_windows = per_window_records(&r_enic, "eni-c");
    assert_eq!(
        c_windows.keys().copied().collect::<Vec<_>>(),
        windows,
        "eni-c has records in every window\n{ctx}"
    );
}

/// Restarting the daemon in the middle of a long TCP flow: the first run's
/// records equal the kernel's counters at its stop exactly; the second run
/// never counts what the first counted and never more than the kernel has
/// (run1 + run2 <= final), always counts what flowed while it ran (run2 >=
/// the delta since its start); and it is exactly one of the two coherent
/// designs: the gap is counted by the second run (it resumed from a
/// handoff: run1 + run2 == final) or not at all (run2 == final - kernel
/// counters at its start).
#[test]
fn restart_mid_flow_neither_double_counts_nor_invents() {
    if !require_root("restart_mid_flow_neither_double_counts_nor_invents") {
        return;
    }
    let s = scenario("ct-restart", "rst");
    let (a, b, ea, eb) = (&s.a, &s.b, &s.ea, &s.eb);
    // No table of the test's own: the daemon's, left in place at exit,
    // keeps the namespace tracking the flow while no daemon runs. Both
    // runs share the state directory (the second finds the handoff).
    let (out1, out2) = (s.path("run1.jsonl"), s.path("run2.jsonl"));
    let cfg1 = s.write_config(
        "run1.toml",
        &one_eni(s.config().window_secs(2), "eni-a", "eth-b", &out1),
    );
    let cfg2 = s.write_config(
        "run2.toml",
        &one_eni(s.config().window_secs(2), "eni-a", "eth-b", &out2),
    );
    let (ia, ib) = (IpAddr::V4(ea.v4), IpAddr::V4(eb.v4));

    let mut d1 = s.start_daemon(&cfg1, "run1.log");
    let mut flow = TcpFlow::open(a, b, ib, 5001);
    let port = flow.port;
    flow.xfer(50_000, 500);
    let (ct1, _) = a.settled_conntrack();
    let at_stop = tcp_entry(&ct1, port);
    d1.stop();

    flow.xfer(70_000, 700); // no daemon runs
    let (ct2, _) = a.settled_conntrack();
    let at_restart = tcp_entry(&ct2, port);

    let mut d2 = s.start_daemon(&cfg2, "run2.log");
    flow.xfer(90_000, 900);
    let (ct3, _) = a.settled_conntrack();
    let at_end = tcp_entry(&ct3, port);
    d2.stop();
    flow.close();

    let (r1, r2) = (read_json_records(&out1), read_json_records(&out2));
    let ctx = context(
        &[("run 1", &d1), ("run 2", &d2)],
        &[("run 1", &r1), ("run 2", &r2)],
        &[("at stop", &ct1), ("at restart", &ct2), ("at end", &ct3)],
    );
    let out_id = FlowId::new("eni-a", "out", ia, port, ib, 5001, 6);
    let in_id = FlowId::new("eni-a", "in", ib, 5001, ia, port, 6);
    let (t1, t2) = (totals(&r1), totals(&r2));
    let run1 = (get(&t1, &out_id), get(&t1, &in_id));
    let run2 = (get(&t2, &out_id), get(&t2, &in_id));
    assert_eq!(
        run1, at_stop,
        "run 1 = the kernel's counters when it stopped\n{ctx}"
    );
    let sum = |x: (Counts, Counts), y: (Counts, Counts)| {
        let (mut o, mut i) = x;
        o.add(y.0);
        i.add(y.1);
        (o, i)
    };
    let both = sum(run1, run2);
    assert!(
        at_end.0.covers(both.0) && at_end.1.covers(both.1),
        "run 1 + run 2 {both:?} > kernel {at_end:?}\n{ctx}"
    );
    let since_restart = (at_end.0.since(at_restart.0), at_end.1.since(at_restart.1));
    assert!(
        run2.0.covers(since_restart.0) && run2.1.covers(since_restart.1),
        "run 2 {run2:?} < what flowed while it ran {since_restart:?}\n{ctx}"
    );
    let resumed = d2.log().contains("resumed 1 of");
    let want2 = if resumed {
        (at_end.0.since(at_stop.0), at_end.1.since(at_stop.1))
    } else {
        since_restart
    };
    assert_eq!(
        run2,
        want2,
        "run 2 ({}) vs the kernel's counters\n{ctx}",
        if resumed {
            "resumed from the handoff"
        } else {
            "no handoff: baselined"
        }
    );
}

/// SIGTERM in the middle of a 600 s window: the open window is closed
/// early and its records are emitted, with `end` the time of the SIGTERM
/// (not the aligned boundary) and exact counters; the daemon exits 0 and
/// leaves its nftables table in place, so the namespace keeps tracking
/// until the next start.
#[test]
fn sigterm_mid_window_emits_the_partial_window_and_keeps_tracking() {
    if !require_root("sigterm_mid_window_emits_the_partial_window_and_keeps_tracking") {
        return;
    }
    let s = scenario("ct-sigterm", "term");
    let (a, b, ea, eb) = (&s.a, &s.b, &s.ea, &s.eb);
    let out = s.path("a.jsonl");
    let cfg = s.write_config(
        "a.toml",
        &one_eni(s.config().window_secs(600), "eni-a", "eth-b", &out),
    );
    let started = unix_now();
    let mut d = s.start_daemon(&cfg, "a.log");
    assert!(
        a.nft_tables().iter().any(|t| t == "inet flowlogd"),
        "the daemon's table is installed\n{}",
        d.log()
    );

    let mut flow = TcpFlow::open(a, b, eb.v4.into(), 5001);
    flow.xfer(20_000, 2_000);
    flow.close();
    ping(a, eb.v4.into(), 2);
    let (ct, _) = a.settled_conntrack();
    let before = unix_now();
    let status = d.terminate();
    let after = unix_now();
    assert_eq!(status.code(), Some(0), "exit status {status}\n{}", d.log());
    let tables = a.nft_tables();
    assert!(
        tables.iter().any(|t| t == "inet flowlogd"),
        "table removed at exit: {tables:?}\n{}",
        d.log()
    );

    let records = read_json_records(&out);
    let ctx = context(&[("A", &d)], &[("A", &records)], &[("A", &ct)]);
    assert_totals(
        "A",
        &totals(&records),
        &expected(&ct, "eni-a", &addrs(ea)),
        &ctx,
    );
    // The last window (a 600 s boundary may have passed during the test).
    let last = records
        .iter()
        .map(window_of)
        .max()
        .unwrap_or_else(|| panic!("no records\n{ctx}"));
    let (start, end) = last;
    assert!(
        before <= end && end <= after,
        "window end {end} is not the SIGTERM time [{before}, {after}]\n{ctx}"
    );
    // The first window begins at the start, a later one at a boundary.
    assert!(
        (started <= start && start <= before) || start % 600 == 0,
        "the window starts at the daemon's start [{started}, {before}] or an aligned boundary: {start}\n{ctx}"
    );
    assert!(
        end - start < 600,
        "the window was closed early, not at its boundary\n{ctx}"
    );
    assert!(
        d.log()
            .contains(&format!("closing the open window early at {end}")),
        "{ctx}"
    );
    assert_eq!(
        d.closed_windows().last(),
        Some(&last),
        "the log's last window\n{ctx}"
    );
    assert!(
        records
            .iter()
            .filter(|r| window_of(r) == last)
            .any(|r| log_status(r) == "OK"),
        "{ctx}"
    );
}

/// The largest "N overruns" count in the daemon's window lines.
fn overruns_reported(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| {
            let i = l.find(" overruns")?;
            l[..i].rsplit(' ').next()?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

const BURST: u32 = 5000;
const BURST_PAYLOAD: u32 = 10;
const BURST_PORT: u16 = 20000;
/// Window length of the burst tests: the burst and the flush fit in one.
const BURST_WINDOW: i64 = 6;

/// A -> B over a veth, for the DESTROY burst tests.
fn burst_setup(label: &str) -> Scenario {
    scenario(label, label)
}

/// A UDP sink on B port 9000, the bursts' target.
fn burst_sink(s: &Scenario) -> LineProcess {
    let mut sink = LineProcess::traffic(
        &s.b,
        TRAFFIC,
        &["udp-sink", &sockaddr(s.eb.v4.into(), 9000)],
    );
    sink.expect_line("listening", STEP);
    sink
}

/// Panics unless `records` hold exactly the `flows` one-datagram flows of a
/// burst (A ports `BURST_PORT..` to B port 9000), each once with 28 +
/// `BURST_PAYLOAD` bytes, and no other flow.
#[track_caller]
fn assert_burst_flows_exact(s: &Scenario, records: &[Value], flows: u32, ctx: &str) {
    let (ia, ib) = (IpAddr::V4(s.ea.v4), IpAddr::V4(s.eb.v4));
    let want: BTreeMap<FlowId, Counts> = (0..flows)
        .map(|i| {
            let port = BURST_PORT + u16::try_from(i).expect("burst ports fit");
            (
                FlowId::new("eni-a", "out", ia, port, ib, 9000, 17),
                Counts::new(1, u64::from(28 + BURST_PAYLOAD)),
            )
        })
        .collect();
    assert_flows_exact(&totals(records), &want, ctx);
}

/// `got == want`, and if not, a short account: how many flows, how many
/// missing, the first ten that differ (the whole maps are too long to read).
#[track_caller]
fn assert_flows_exact(got: &BTreeMap<FlowId, Counts>, want: &BTreeMap<FlowId, Counts>, ctx: &str) {
    if got != want {
        let missing = want.keys().filter(|k| !got.contains_key(k)).count();
        let wrong: Vec<_> = got
            .iter()
            .filter(|(k, c)| want.get(k) != Some(c))
            .take(10)
            .collect();
        panic!(
            "{} flows recorded, {missing} missing, differing (first 10): {wrong:?}\n{ctx}",
            got.len()
        );
    }
}

/// Right after a window boundary, sends `BURST` one-datagram flows to B
/// port 9000 and flushes A's conntrack table, which destroys them all at
/// once: a burst of DESTROY events carrying the flows' only counters (no
/// window dump has seen them yet). Returns the time of the flush.
#[track_caller]
fn burst_and_flush(s: &Scenario, d: &mut DaemonProcess) -> i64 {
    let n = d.closed_windows().len();
    let (_, window_start) = d.wait_for_window(n, Duration::from_secs(20));
    let target = sockaddr(s.eb.v4.into(), 9000);
    udp_burst(&s.a, &target, BURST, BURST_PAYLOAD, BURST_PORT);
    let live =
        s.a.conntrack()
            .iter()
            .filter(|e| e.protocol == 17 && e.orig.dport == 9000)
            .count();
    assert_eq!(live, BURST as usize, "the burst's flows are tracked");
    let flushed_at = unix_now();
    s.a.exec_ok(&["conntrack", "-F"]);
    let done = unix_now();
    assert!(
        d.closed_windows().len() == n + 1 && done < window_start + BURST_WINDOW,
        "the burst and the flush did not fit in the window starting at {window_start} (done at {done}): the \
         machine is too slow for this test\n{}",
        d.log()
    );
    flushed_at
}

/// Overrun: with unreliable events and a 4 KiB receive buffer, flushing
/// 5000 connections at once overruns the event socket. The window of the
/// flush gets a SKIPDATA record for the ENI (the loss is never silent), the
/// log reports the overrun, and the daemon keeps capturing: flows sent in a
/// later window are recorded exactly in a window without SKIPDATA, and
/// SIGTERM still exits 0.
#[test]
fn event_overrun_is_reported_as_skipdata_and_capture_continues() {
    if !require_root("event_overrun_is_reported_as_skipdata_and_capture_continues") {
        return;
    }
    let s = burst_setup("ovr");
    let sink = burst_sink(&s);
    let out = s.path("a.jsonl");
    let config = s
        .config()
        .window_secs(BURST_WINDOW)
        .daemon_key("conntrack_reliable_events = false\nconntrack_rcvbuf_bytes = 4096");
    let cfg = s.write_config("a.toml", &one_eni(config, "eni-a", "eth-b", &out));
    let mut d = s.start_daemon(&cfg, "a.log");
    let flushed_at = burst_and_flush(&s, &mut d);
    // The flush's window closes.
    let n = d.closed_windows().len();
    d.wait_for_window(n, Duration::from_secs(20));
    assert!(
        overruns_reported(&d.log()) > 0,
        "no overrun counted in the window lines\n{}",
        d.log()
    );

    // Later traffic, in a window after the overrun's.
    let later_at = unix_now();
    udp_burst(
        &s.a,
        &sockaddr(s.eb.v4.into(), 9000),
        4,
        BURST_PAYLOAD,
        30000,
    );
    let n = d.closed_windows().len();
    d.wait_for_window(n, Duration::from_secs(20));
    assert!(
        d.exited().is_none(),
        "the daemon stopped after the overrun\n{}",
        d.log()
    );
    d.stop();

    let records = read_json_records(&out);
    let log = d.log();
    let ctx = context(&[("A", &d)], &[], &[]);
    assert!(
        log.lines()
            .any(|l| (l.contains("ERROR") || l.contains("WARN")) && l.contains("overrun")),
        "the overrun is logged as an error or warning\n{ctx}"
    );
    let skipped: Vec<(i64, i64)> = records
        .iter()
        .filter(|r| log_status(r) == "SKIPDATA")
        .map(window_of)
        .collect();
    assert!(
        records
            .iter()
            .filter(|r| log_status(r) == "SKIPDATA")
            .all(|r| str_of(r, "eni-id") == "eni-a" && r["packets"].is_null()),
        "SKIPDATA records are eni-a's, without flow fields\n{ctx}"
    );
    assert!(
        skipped.iter().any(|&(start, end)| start <= flushed_at && flushed_at < end),
        "no SKIPDATA record for the window of the flush at {flushed_at}: SKIPDATA windows {skipped:?}\n{ctx}"
    );
    let recorded: u64 = totals(&records)
        .iter()
        .filter(|(k, _)| {
            k.dport == 9000 && (BURST_PORT..BURST_PORT + BURST as u16).contains(&k.sport)
        })
        .map(|(_, c)| c.packets)
        .sum();
    assert!(
        recorded < u64::from(BURST),
        "events were lost, yet all {recorded} packets were recorded?\n{ctx}"
    );

    // The later flows, exactly, in a window without SKIPDATA.
    let ia = IpAddr::V4(s.ea.v4);
    let ib = IpAddr::V4(s.eb.v4);
    let later_window = records
        .iter()
        .map(window_of)
        .find(|&(start, end)| start <= later_at && later_at < end)
        .unwrap_or_else(|| panic!("no window covering {later_at}\n{ctx}"));
    let by_window = per_window(&records);
    let mut later_total = BTreeMap::new();
    for m in by_window.values() {
        for (k, c) in m.iter().filter(|(k, _)| (30000..30004).contains(&k.sport)) {
            later_total
                .entry(k.clone())
                .or_insert_with(Counts::default)
                .add(*c);
        }
    }
    let want: BTreeMap<FlowId, Counts> = (30000..30004)
        .map(|p| {
            (
                FlowId::new("eni-a", "out", ia, p, ib, 9000, 17),
                Counts::new(1, u64::from(28 + BURST_PAYLOAD)),
            )
        })
        .collect();
    assert_eq!(later_total, want, "the flows after the overrun\n{ctx}");
    let in_later: usize = by_window.get(&later_window).map_or(0, |m| {
        m.keys()
            .filter(|k| (30000..30004).contains(&k.sport))
            .count()
    });
    let skipped_later = skipped.contains(&later_window);
    assert!(
        in_later > 0 && !skipped_later,
        "the later flows are in window {later_window:?} ({in_later} of 4), without SKIPDATA (SKIPDATA: {skipped:?})\n{ctx}"
    );
    drop(sink);
}

/// The same burst with the default (reliable) event delivery and buffer:
/// no SKIPDATA, no overrun, and every one of the 5000 flows recorded
/// exactly once with its one datagram (28 + 10 bytes).
#[test]
fn reliable_events_survive_a_destroy_burst_exactly() {
    if !require_root("reliable_events_survive_a_destroy_burst_exactly") {
        return;
    }
    let s = burst_setup("rel");
    let sink = burst_sink(&s);
    let out = s.path("a.jsonl");
    let cfg = s.write_config(
        "a.toml",
        &one_eni(s.config().window_secs(BURST_WINDOW), "eni-a", "eth-b", &out),
    );
    let mut d = s.start_daemon(&cfg, "a.log");
    burst_and_flush(&s, &mut d);
    let n = d.closed_windows().len();
    d.wait_for_window(n, Duration::from_secs(20));
    d.stop();

    let records = read_json_records(&out);
    let ctx = context(&[("A", &d)], &[], &[]);
    assert_eq!(overruns_reported(&d.log()), 0, "{ctx}");
    let skipped: Vec<&Value> = records
        .iter()
        .filter(|r| log_status(r) == "SKIPDATA")
        .collect();
    assert!(
        skipped.is_empty(),
        "SKIPDATA with reliable delivery: {skipped:?}\n{ctx}"
    );
    assert_burst_flows_exact(&s, &records, BURST, &ctx);
    drop(sink);
}

/// `(entries, slices)` of the close dump of window `w`, from the log's
/// window line (`... (dump of N entries in K slices) ...`).
fn close_dump_of(log: &str, w: (i64, i64)) -> Option<(u64, u64)> {
    let line = log
        .lines()
        .find(|l| l.contains(&format!("window {}-{}: ", w.0, w.1)))?;
    let rest = line.split("(dump of ").nth(1)?;
    let (entries, rest) = rest.split_once(" entries in ")?;
    let (slices, _) = rest.split_once(" slices")?;
    Some((entries.parse().ok()?, slices.parse().ok()?))
}

/// A window closing over many live connections: the loop reads its dump in
/// slices between event reads (the log says how many: 20,000 entries are
/// about 200 datagrams, 16 per slice), and the records stay exact. Each of the 20,000 one-datagram flows is recorded
/// once, with 28 + 10 bytes, harvested by the close dump into the window it
/// was sent in, and nothing again when the flows are flushed afterwards
/// (their DESTROY events carry no new counters).
#[test]
fn a_window_closing_over_many_connections_is_dumped_in_slices_and_exact() {
    if !require_root("a_window_closing_over_many_connections_is_dumped_in_slices_and_exact") {
        return;
    }
    const FLOWS: u32 = 20_000;
    let s = burst_setup("slc");
    let sink = burst_sink(&s);
    let out = s.path("a.jsonl");
    let cfg = s.write_config(
        "a.toml",
        &one_eni(s.config().window_secs(BURST_WINDOW), "eni-a", "eth-b", &out),
    );
    let mut d = s.start_daemon(&cfg, "a.log");
    let n = d.closed_windows().len();
    let (_, window_start) = d.wait_for_window(n, Duration::from_secs(20));
    let target = sockaddr(s.eb.v4.into(), 9000);
    udp_burst(&s.a, &target, FLOWS, BURST_PAYLOAD, BURST_PORT);
    assert!(
        d.closed_windows().len() == n + 1 && unix_now() < window_start + BURST_WINDOW,
        "the flows were not all sent inside the window starting at {window_start}: the machine is too slow for \
         this test\n{}",
        d.log()
    );
    let closed = d.wait_for_window(n + 1, Duration::from_secs(30));
    s.a.exec_ok(&["conntrack", "-F"]);
    d.wait_for_window(n + 2, Duration::from_secs(30));
    d.stop();

    let log = d.log();
    let records = read_json_records(&out);
    let ctx = context(&[("A", &d)], &[], &[]);
    let (entries, slices) = close_dump_of(&log, closed)
        .unwrap_or_else(|| panic!("no dump figures for {closed:?}\n{ctx}"));
    assert!(
        entries >= u64::from(FLOWS),
        "{entries} entries dumped\n{ctx}"
    );
    assert!(
        slices >= 4,
        "the close dump was read in {slices} slice(s)\n{ctx}"
    );
    assert!(
        !records.iter().any(|r| log_status(r) == "SKIPDATA"),
        "SKIPDATA\n{ctx}"
    );
    assert_burst_flows_exact(&s, &records, FLOWS, &ctx);
    // Harvested by the close dump, in the window they were sent in.
    let in_window = records
        .iter()
        .filter(|r| log_status(r) == "OK" && window_of(r) == closed)
        .count();
    assert_eq!(in_window, FLOWS as usize, "{ctx}");
    drop(sink);
}

/// A window of 20,000 records for a sink slower than capture, behind a
/// queue of only 2,000 records: the records go out as the queue drains
/// (they wait in the window's aggregate, not in the queue), so none is
/// dropped. Sent at once, as before, 18,000 of them would not fit.
#[test]
fn a_window_larger_than_the_sink_queue_reaches_a_slow_sink_whole() {
    if !require_root("a_window_larger_than_the_sink_queue_reaches_a_slow_sink_whole") {
        return;
    }
    const FLOWS: u32 = 20_000;
    let s = burst_setup("pace");
    let sink = burst_sink(&s);
    let out = s.path("a.jsonl");
    let config = s
        .config()
        .window_secs(BURST_WINDOW)
        .daemon_key("sink_queue_records = 2000")
        .eni("eni-a", "eth-b", "vpc-1")
        .flow_log(FlowLog::vpc("all", "vpc-1").traffic("all").sinks(&["out"]))
        .toml(&format!(
            "[sinks.out]\nplugin = \"testsink\"\npath = \"{}\"\ndelay_ms = 10\n",
            out.display()
        ));
    let cfg = s.write_config("a.toml", &config);
    let mut d = s.start_daemon(&cfg, "a.log");
    let n = d.closed_windows().len();
    d.wait_for_window(n, Duration::from_secs(20));
    let target = sockaddr(s.eb.v4.into(), 9000);
    udp_burst(&s.a, &target, FLOWS, BURST_PAYLOAD, BURST_PORT);
    d.wait_for_window(n + 1, Duration::from_secs(30));
    d.stop();

    let log = d.log();
    let records = read_json_records(&out);
    let ctx = context(&[("A", &d)], &[], &[]);
    assert!(!log.contains("queue full"), "{ctx}");
    assert_burst_flows_exact(&s, &records, FLOWS, &ctx);
    drop(sink);
}

/// Baseline: a connection that carried traffic before the daemon started
/// is tracked from its counters at start-up: its records add up to exactly
/// what the kernel counted after the start (the difference of conntrack's
/// counters), none of what came before.
#[test]
fn traffic_before_start_is_not_attributed() {
    if !require_root("traffic_before_start_is_not_attributed") {
        return;
    }
    let s = scenario("ct-baseline", "base");
    let (a, b, ea, eb) = (&s.a, &s.b, &s.ea, &s.eb);
    // Tracking (with counters) before the daemon exists.
    a.enable_tracking();
    let (ia, ib) = (IpAddr::V4(ea.v4), IpAddr::V4(eb.v4));
    let mut flow = TcpFlow::open(a, b, ib, 5001);
    let port = flow.port;
    flow.xfer(40_000, 400);
    let (ct0, _) = a.settled_conntrack();
    let before = tcp_entry(&ct0, port);

    let out = s.path("a.jsonl");
    let cfg = s.write_config(
        "a.toml",
        &one_eni(s.config().window_secs(2), "eni-a", "eth-b", &out),
    );
    let mut d = s.start_daemon(&cfg, "a.log");
    flow.xfer(60_000, 600);
    let (ct1, _) = a.settled_conntrack();
    let after = tcp_entry(&ct1, port);
    d.stop();
    flow.close();

    let records = read_json_records(&out);
    let ctx = context(
        &[("A", &d)],
        &[("A", &records)],
        &[("before start", &ct0), ("before stop", &ct1)],
    );
    let got = totals(&records);
    let out_id = FlowId::new("eni-a", "out", ia, port, ib, 5001, 6);
    let in_id = FlowId::new("eni-a", "in", ib, 5001, ia, port, 6);
    assert_eq!(
        (get(&got, &out_id), get(&got, &in_id)),
        (after.0.since(before.0), after.1.since(before.1)),
        "records = kernel counters at stop - at start\n{ctx}"
    );
    assert!(get(&got, &out_id).bytes > 60_000, "{ctx}");
    assert_eq!(got.len(), 2, "only this flow: {}\n{ctx}", show(&got));
}

// ---------------------------------------------------------------------
// Bounded window memory
// ---------------------------------------------------------------------

/// A field of /proc/<pid>/status in KiB (`VmRSS`, `VmHWM`).
#[track_caller]
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
}

/// What a flood of distinct tuples did to a daemon.
struct Flood {
    records: Vec<Value>,
    log: String,
    ctx: String,
    /// The window the flood was sent and flushed in.
    window: (i64, i64),
    /// Resident KiB after a first, small burst and its window (what the
    /// daemon keeps whatever the traffic: buffers, plugins, threads).
    settled_kib: u64,
    /// Peak resident KiB at the end, before the daemon stops.
    peak_kib: u64,
    /// The flows sent: A's address and B's.
    a: IpAddr,
    b: IpAddr,
}

const FLOOD_WINDOW: i64 = 20;
const FLOOD_PORT: u16 = 10_000;
/// Flows per destination port: source ports `FLOOD_PORT..+FLOOD_PER_PORT`.
const FLOOD_PER_PORT: u32 = 50_000;

/// `FLOOD_PER_PORT` one-datagram UDP flows from distinct source ports to
/// each of `ports` B ports from 9000 up, destroyed at once by a flush
/// inside one window: a burst of DESTROY events that each bring a new
/// tuple into the open window's sums. `daemon_keys` go into `[daemon]`.
fn flood_of_distinct_tuples(label: &str, ports: u16, daemon_keys: &str) -> Flood {
    let s = burst_setup(label);
    let sinks: Vec<LineProcess> = (0..ports)
        .map(|i| {
            let mut sink = LineProcess::traffic(
                &s.b,
                TRAFFIC,
                &["udp-sink", &sockaddr(s.eb.v4.into(), 9000 + i)],
            );
            sink.expect_line("listening", STEP);
            sink
        })
        .collect();
    let out = s.path("a.jsonl");
    let config = s.config().window_secs(FLOOD_WINDOW).daemon_key(daemon_keys);
    let cfg = s.write_config("a.toml", &one_eni(config, "eni-a", "eth-b", &out));
    let mut d = s.start_daemon(&cfg, "a.log");
    let target = |i: u16| sockaddr(s.eb.v4.into(), 9000 + i);
    // A small burst first, and its window closed: the buffers the daemon
    // keeps are then resident, and what the flood adds is what it costs.
    udp_burst(&s.a, &target(0), 2000, BURST_PAYLOAD, 62_000);
    s.a.exec_ok(&["conntrack", "-F"]);
    let n = d.closed_windows().len();
    d.wait_for_window(n, Duration::from_secs(60));
    let settled_kib = proc_status_kib(d.pid(), "VmRSS");

    let n = d.closed_windows().len();
    let (_, window_start) = d.wait_for_window(n, Duration::from_secs(60));
    for i in 0..ports {
        udp_burst(&s.a, &target(i), FLOOD_PER_PORT, BURST_PAYLOAD, FLOOD_PORT);
    }
    s.a.exec_ok(&["conntrack", "-F"]);
    let done = unix_now();
    assert!(
        d.closed_windows().len() == n + 1 && done < window_start + FLOOD_WINDOW,
        "the flood and the flush did not fit in the window starting at {window_start} (done at {done}): the \
         machine is too slow for this test\n{}",
        d.log()
    );
    let window = d.wait_for_window(n + 1, Duration::from_secs(60));
    let peak_kib = proc_status_kib(d.pid(), "VmHWM");
    d.stop();
    drop(sinks);
    Flood {
        records: read_json_records(&out),
        log: d.log(),
        ctx: context(&[("A", &d)], &[], &[]),
        window,
        settled_kib,
        peak_kib,
        a: IpAddr::V4(s.ea.v4),
        b: IpAddr::V4(s.eb.v4),
    }
}

/// The number in a window line before `what` (` early emits`).
fn window_line_number(log: &str, w: (i64, i64), what: &str) -> Option<u64> {
    let line = log
        .lines()
        .find(|l| l.contains(&format!("window {}-{}: ", w.0, w.1)))?;
    let i = line.find(what)?;
    line[..i].rsplit(' ').next()?.parse().ok()
}

/// The daemon's smallest `window_memory_bytes`: each window's sums get
/// half, about 7,000 IPv4 sums.
const WINDOW_MEMORY_MIN: u64 = 1 << 20;
/// What the daemon may hold besides the window's sums while a flood is
/// emitted early: records on their way to the sink (the queue is fed until
/// it holds two chunks of 4096 records, and an early emit that makes room
/// for the next sends at once what it has left, about 7,000 records at
/// this bound), at about 200 bytes each, and the allocator's slack.
const FLOOD_RECORDS_ALLOWANCE_KIB: u64 = 4096;

/// Bounded window memory: 150,000 distinct UDP tuples in one window with
/// `window_memory_bytes` at its minimum (1 MiB; the sums of a window get
/// half, about 7,000 tuples). The sums are emitted early, several times,
/// as records of that window, and the log says so; the records of the
/// window hold every flow exactly once with its one datagram, without
/// SKIPDATA or NODATA; and the daemon's peak resident memory grows over
/// what it settled at by no more than the bound and the records on their
/// way out. The same flood with the default bound (256 MiB) goes past
/// that: the sums of 150,000 tuples are about 9 MB.
#[test]
fn a_flood_of_distinct_tuples_is_emitted_early_exactly_and_within_window_memory_bytes() {
    if !require_root(
        "a_flood_of_distinct_tuples_is_emitted_early_exactly_and_within_window_memory_bytes",
    ) {
        return;
    }
    const PORTS: u16 = 3;
    let budget_kib = WINDOW_MEMORY_MIN / 1024 + FLOOD_RECORDS_ALLOWANCE_KIB;
    let f = flood_of_distinct_tuples(
        "wmb",
        PORTS,
        &format!("window_memory_bytes = {WINDOW_MEMORY_MIN}"),
    );
    let ctx = &f.ctx;
    let in_window: Vec<&Value> = f
        .records
        .iter()
        .filter(|r| window_of(r) == f.window)
        .collect();
    let flows = FLOOD_PER_PORT as usize * usize::from(PORTS);
    // Count first: each tuple was destroyed once, so it has one record
    // even with early emits; then the statuses; then every sum.
    assert_eq!(in_window.len(), flows, "records of the flood window\n{ctx}");
    assert!(
        in_window.iter().all(|r| log_status(r) == "OK"),
        "a NODATA or SKIPDATA record in the flood window\n{ctx}"
    );
    let want: BTreeMap<FlowId, Counts> = (0..PORTS)
        .flat_map(|p| {
            (0..FLOOD_PER_PORT).map(move |i| {
                let sport = FLOOD_PORT + u16::try_from(i).expect("ports fit");
                (sport, 9000 + p)
            })
        })
        .map(|(sport, dport)| {
            (
                FlowId::new("eni-a", "out", f.a, sport, f.b, dport, 17),
                Counts::new(1, u64::from(28 + BURST_PAYLOAD)),
            )
        })
        .collect();
    let got = per_window(&f.records).remove(&f.window).unwrap_or_default();
    assert_flows_exact(&got, &want, ctx);
    let emits = f
        .log
        .lines()
        .filter(|l| {
            l.contains(&format!(
                "memory bound: the sums of window [{}, {})",
                f.window.0, f.window.1
            ))
        })
        .count() as u64;
    assert!(emits >= 2, "{emits} early emits logged\n{ctx}");
    assert_eq!(
        window_line_number(&f.log, f.window, " early emits"),
        Some(emits),
        "the window line counts the early emits\n{ctx}"
    );
    assert!(!f.log.contains("queue full"), "{ctx}");
    assert!(
        f.peak_kib <= f.settled_kib + budget_kib,
        "peak {} KiB, settled at {} KiB: {} KiB more than the {budget_kib} KiB budget allows\n{ctx}",
        f.peak_kib,
        f.settled_kib,
        f.peak_kib - f.settled_kib - budget_kib
    );

    // Without the bound, the same flood's sums alone go past the budget.
    let u = flood_of_distinct_tuples("wmu", PORTS, "");
    assert!(
        !u.log.contains("memory bound:"),
        "an early emit under the default bound\n{}",
        u.ctx
    );
    assert_eq!(
        per_window(&u.records)
            .remove(&u.window)
            .unwrap_or_default()
            .len(),
        flows,
        "{}",
        u.ctx
    );
    assert!(
        u.peak_kib > u.settled_kib + budget_kib,
        "without the bound: peak {} KiB, settled at {} KiB, within the {budget_kib} KiB budget: the flood does \
         not show the bound\n{}",
        u.peak_kib,
        u.settled_kib,
        u.ctx
    );
    eprintln!(
        "window_memory_bytes = {WINDOW_MEMORY_MIN}: peak {} KiB over {} settled (+{}), {emits} early emits; \
         default: peak {} KiB over {} settled (+{})",
        f.peak_kib,
        f.settled_kib,
        f.peak_kib - f.settled_kib,
        u.peak_kib,
        u.settled_kib,
        u.peak_kib - u.settled_kib
    );
}
