//! The IPFIX sink through the real daemon, received by real collectors
//! from Debian: nfcapd (nfdump 1.7) and nfacctd (pmacct 1.7). Known
//! traffic in a test namespace (accepted and dropped UDP, over IPv4 and
//! IPv6) gives records the file sink writes; `nfdump -r` and pmacct's print
//! plugin must show exactly those flows, packets and bytes for the same
//! windows, and pmacct (which decodes enterprise elements) the same ENI,
//! rule, log-status, direction and forwarding status. NODATA and SKIPDATA
//! arrive as records without flow elements (status template). A collector
//! that missed the templates decodes within one refresh interval.
//!
//! The collectors run in the daemon's namespace on its loopback (traffic
//! there is no ENI's, so the export never feeds back into the records),
//! each killed by its exact pid, also when a test fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowlogd_tests::netns::{unix_now, LineProcess, Netns};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");
/// The test's namespace label prefix (unique to this file's tests).
const LABEL: &str = "fl21i";
const NFCAPD_PORT: u16 = 4739;
const NFACCTD_PORT: u16 = 2055;
/// RFC 5612's Private Enterprise Number for examples.
const PEN: u32 = 32473;

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// Drops UDP to 1161 (IPv4 and IPv6), logged to NFLOG group 100 as a
/// security group rule.
const RULES: &str = r#"table inet sgtest {
	chain input {
		type filter hook input priority filter; policy accept;
		udp dport 1161 counter log group 100 prefix "flowlogd:sg-test:deny-snmp" drop
	}
}
"#;

/// pmacct's custom primitives: the IANA elements it has no primitive for,
/// and the sink's enterprise elements (README table).
const PMACCT_PRIMITIVES: &str = "\
name=fwd_status field_type=89 len=1 semantics=u_int
name=flow_dir field_type=61 len=1 semantics=u_int
name=eni_id field_type=32473:1 len=vlen semantics=str
name=vpc_id field_type=32473:2 len=vlen semantics=str
name=rule field_type=32473:6 len=vlen semantics=str
name=log_status field_type=32473:7 len=vlen semantics=str
";

/// One collector process, stopped by its exact pid on drop.
struct Collector {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Collector {
    /// `nfcapd` writing to `dir`, listening on 127.0.0.1 in `ns`.
    fn nfcapd(ns: &Netns, dir: &Path) -> Collector {
        std::fs::create_dir_all(dir.join("nfcapd")).unwrap();
        let log = dir.join("nfcapd.log");
        let mut cmd = ns.command("nfcapd");
        cmd.args([
            "-b",
            "127.0.0.1",
            "-p",
            &NFCAPD_PORT.to_string(),
            "-t",
            "3600",
            "-w",
        ])
        .arg(dir.join("nfcapd"));
        Collector::start("nfcapd", cmd, log, ns, NFCAPD_PORT)
    }

    /// `nfacctd` with the print plugin writing JSON lines to
    /// `dir/pmacct.jsonl` every second, listening on 127.0.0.1 in `ns`.
    fn nfacctd(ns: &Netns, dir: &Path) -> Collector {
        let primitives = dir.join("primitives.lst");
        std::fs::write(&primitives, PMACCT_PRIMITIVES).unwrap();
        let conf = dir.join("nfacctd.conf");
        std::fs::write(
            &conf,
            format!(
                "daemonize: false\nnfacctd_ip: 127.0.0.1\nnfacctd_port: {NFACCTD_PORT}\n\
                 nfacctd_time_new: false\ntimestamps_since_epoch: true\n\
                 aggregate_primitives: {}\nplugins: print[out]\n\
                 aggregate[out]: src_host, dst_host, src_port, dst_port, proto, timestamp_start, \
                 timestamp_end, fwd_status, flow_dir, eni_id, vpc_id, rule, log_status\n\
                 print_output[out]: json\nprint_output_file[out]: {}\n\
                 print_output_file_append[out]: true\nprint_refresh_time[out]: 1\n\
                 print_cache_entries[out]: 1031\n",
                primitives.display(),
                dir.join("pmacct.jsonl").display()
            ),
        )
        .unwrap();
        let mut cmd = ns.command("nfacctd");
        cmd.arg("-f").arg(&conf);
        Collector::start("nfacctd", cmd, dir.join("nfacctd.log"), ns, NFACCTD_PORT)
    }

    /// Spawns `cmd` and waits (bounded) until its UDP port is bound.
    fn start(
        name: &'static str,
        mut cmd: Command,
        log: PathBuf,
        ns: &Netns,
        port: u16,
    ) -> Collector {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "run {name} (apt-get install nfdump pmacct: scripts/install-test-deps.sh): {e}"
                )
            });
        let mut c = Collector {
            name,
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let bound = ns.exec_ok(&["ss", "-Hulnp", &format!("sport = :{port}")]);
            if bound.contains(name) {
                return c;
            }
            if let Some(status) = c.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{name} exited at start ({status}):\n{}", c.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{name} not listening after 10 s:\n{}",
                c.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the collector (nfcapd: SIGTERM, which closes its file;
    /// nfacctd: SIGINT, which purges its cache to the output first), and
    /// waits for it; SIGKILL by exact pid after 10 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        // nfacctd forks its plugins: their pids, to kill should the core
        // not stop them.
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let signal = if self.name == "nfacctd" {
            SIGINT
        } else {
            SIGTERM
        };
        // SAFETY: kill(2) on our own child, not yet reaped, so the pid
        // cannot have been reused.
        unsafe { kill(pid, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                for c in children.split_whitespace() {
                    if let Ok(c) = c.parse::<i32>() {
                        // SAFETY: our child's children, listed before it
                        // was signalled; it has not exited, so it has not
                        // reaped them and their pids are not reused.
                        unsafe { kill(c, SIGKILL) };
                    }
                }
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not stop within 10 s:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if self.child.is_some() && !std::thread::panicking() {
            self.stop();
        } else if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            let _ = child.kill();
            let _ = child.wait();
            for c in children.split_whitespace() {
                if let Ok(c) = c.parse::<i32>() {
                    // SAFETY: listed as our child's children while it was
                    // alive; a killed forked plugin is reparented, and its
                    // pid stays its own until it is reaped.
                    unsafe { kill(c, SIGKILL) };
                }
            }
        }
    }
}

/// What the three outputs are compared by: one flow record's key and
/// counters, with the window in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Flow {
    src: String,
    dst: String,
    sport: u64,
    dport: u64,
    proto: u64,
    start_ms: i64,
    end_ms: i64,
    packets: u64,
    bytes: u64,
}

/// The file sink's OK records as flows, and its other records as
/// `(start, end, log-status)`.
fn file_view(records: &[Value]) -> (Vec<Flow>, Vec<(i64, i64, String)>) {
    let mut flows = Vec::new();
    let mut statuses = Vec::new();
    for r in records {
        let start = r["start"].as_i64().unwrap();
        let end = r["end"].as_i64().unwrap();
        if r["log-status"] == "OK" {
            flows.push(Flow {
                src: r["srcaddr"].as_str().unwrap().to_owned(),
                dst: r["dstaddr"].as_str().unwrap().to_owned(),
                sport: r["srcport"].as_u64().unwrap(),
                dport: r["dstport"].as_u64().unwrap(),
                proto: r["protocol"].as_u64().unwrap(),
                start_ms: start * 1000,
                end_ms: end * 1000,
                packets: r["packets"].as_u64().unwrap(),
                bytes: r["bytes"].as_u64().unwrap(),
            });
        } else {
            statuses.push((start, end, r["log-status"].as_str().unwrap().to_owned()));
        }
    }
    flows.sort();
    statuses.sort();
    (flows, statuses)
}

/// `"2023-11-14T22:20:00.000"` (nfdump's JSON, with TZ=UTC) as Unix ms.
fn nfdump_time_ms(s: &str) -> i64 {
    let (date, time) = s.split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, ms) = time.split_once('.').unwrap();
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1000) + ms.parse::<i64>().unwrap()
}

/// `nfdump -R dir -o json FILTER` with TZ=UTC, as JSON values.
fn nfdump(dir: &Path, filter: &str) -> Vec<Value> {
    let out = Command::new("nfdump")
        .env("TZ", "UTC")
        .arg("-R")
        .arg(dir)
        .args(["-o", "json", filter])
        .output()
        .expect("run nfdump");
    assert!(out.status.success(), "nfdump failed:\n{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    if s.trim().is_empty() {
        return Vec::new();
    }
    match serde_json::from_str::<Value>(&s) {
        Ok(Value::Array(v)) => v,
        other => panic!("nfdump -o json gave {other:?}:\n{s}"),
    }
}

/// The flows nfdump shows, with the documented filter for flow records.
fn nfdump_flows(dir: &Path) -> (Vec<Flow>, BTreeMap<String, u64>) {
    let mut directions = BTreeMap::new();
    let mut flows: Vec<Flow> = nfdump(dir, "packets > 0")
        .iter()
        .map(|r| {
            let addr = |k4: &str, k6: &str| {
                r[k4]
                    .as_str()
                    .or_else(|| r[k6].as_str())
                    .unwrap_or_else(|| panic!("no address in {r}"))
                    .to_owned()
            };
            let f = Flow {
                src: addr("src4_addr", "src6_addr"),
                dst: addr("dst4_addr", "dst6_addr"),
                sport: r["src_port"].as_u64().unwrap(),
                dport: r["dst_port"].as_u64().unwrap(),
                proto: r["proto"].as_u64().unwrap(),
                start_ms: nfdump_time_ms(r["first"].as_str().unwrap()),
                end_ms: nfdump_time_ms(r["last"].as_str().unwrap()),
                packets: r["in_packets"].as_u64().unwrap(),
                bytes: r["in_bytes"].as_u64().unwrap(),
            };
            let dir = if r["direction"] == 0 { "in" } else { "out" };
            *directions.entry(format!("{}:{}", f.src, dir)).or_insert(0) += 1;
            f
        })
        .collect();
    flows.sort();
    (flows, directions)
}

/// pmacct's purged entries.
fn pmacct_entries(file: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("pmacct wrote {l:?}: {e}")))
        .collect()
}

/// `"1700000400.000000"` (timestamps_since_epoch) as Unix ms.
fn pmacct_time_ms(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("timestamp {v}"));
    let (secs, frac) = s.split_once('.').unwrap_or((s, "0"));
    secs.parse::<i64>().unwrap() * 1000 + frac.get(..3).unwrap_or("0").parse::<i64>().unwrap()
}

/// pmacct's OK entries as flows, each with (direction, action, rule,
/// eni); its other entries as `(start, end, log-status)`.
#[allow(clippy::type_complexity)]
fn pmacct_view(
    entries: &[Value],
) -> (
    Vec<(Flow, String, String, String, String)>,
    Vec<(i64, i64, String)>,
) {
    let mut flows = Vec::new();
    let mut statuses = Vec::new();
    for e in entries {
        let start = pmacct_time_ms(&e["timestamp_start"]);
        let end = pmacct_time_ms(&e["timestamp_end"]);
        let status = e["log_status"].as_str().unwrap().to_owned();
        if status != "OK" {
            statuses.push((start / 1000, end / 1000, status));
            continue;
        }
        let proto = match e["ip_proto"].as_str().unwrap() {
            "udp" => 17,
            "tcp" => 6,
            other => other.parse().unwrap(),
        };
        let flow = Flow {
            src: e["ip_src"].as_str().unwrap().to_owned(),
            dst: e["ip_dst"].as_str().unwrap().to_owned(),
            sport: e["port_src"].as_u64().unwrap(),
            dport: e["port_dst"].as_u64().unwrap(),
            proto,
            start_ms: start,
            end_ms: end,
            packets: e["packets"].as_u64().unwrap(),
            bytes: e["bytes"].as_u64().unwrap(),
        };
        let direction = if e["flow_dir"] == "0" { "in" } else { "out" };
        let action = match e["fwd_status"].as_str().unwrap() {
            "64" => "ACCEPT",
            "129" => "REJECT",
            other => panic!("fwd_status {other} in {e}"),
        };
        flows.push((
            flow,
            direction.to_owned(),
            action.to_owned(),
            e["rule"].as_str().unwrap().to_owned(),
            e["eni_id"].as_str().unwrap().to_owned(),
        ));
    }
    flows.sort();
    statuses.sort();
    (flows, statuses)
}

fn load_rules(ns: &Netns, rules: &str, tmp: &TempDir) {
    let file = tmp.join("rules.nft");
    std::fs::write(&file, rules).unwrap();
    let out = ns.exec(&["nft", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "nft -f failed:\n{}", text(&out));
}

/// The sink tables of one ipfix sink sending to `port`.
fn ipfix_sink(name: &str, port: u16, extra: &str) -> String {
    format!(
        "[sinks.{name}]\nplugin = \"ipfix\"\ncollector = \"127.0.0.1:{port}\"\n\
         enterprise_number = {PEN}\nobservation_domain_id = 21\n{extra}\n"
    )
}

/// Accepted UDP (to a sink in `a`) and dropped UDP (to 1161), from `b`
/// to `target` (an address of `a`), from source ports `port0`...
fn traffic(a: &Netns, b: &Netns, target: &str, port0: u16) {
    let mut sink = LineProcess::traffic(a, TRAFFIC, &["udp-sink", &format!("{target}:5300")]);
    sink.expect_line("listening", Duration::from_secs(10));
    for (port, flows, packets) in [(5300, "3", "4"), (1161, "2", "3")] {
        let mut c = LineProcess::traffic(
            b,
            TRAFFIC,
            &[
                "udp-flows",
                &format!("{target}:{port}"),
                flows,
                packets,
                "100",
                &(port0 + if port == 1161 { 100 } else { 0 }).to_string(),
            ],
        );
        c.expect_line("sent", Duration::from_secs(20));
        c.finish(Duration::from_secs(20));
    }
    // Let the sink read the last datagrams before it is killed.
    std::thread::sleep(Duration::from_millis(200));
}

/// Both collectors show exactly the flows, packets and bytes the file sink
/// wrote, IPv4 and IPv6, ACCEPT and REJECT, for the same windows; pmacct
/// also the direction, forwarding status, rule and ENI, and the NODATA
/// records, which nfdump shows as flows with 0 packets.
#[test]
fn collectors_receive_exactly_what_the_file_sink_wrote() {
    if !require_root("collectors_receive_exactly_what_the_file_sink_wrote") {
        return;
    }
    let s = Scenario::builder(LABEL)
        .veth("veth-a", "veth-b", 41)
        .build();
    load_rules(&s.a, RULES, &s.tmp);
    let mut nfcapd = Collector::nfcapd(&s.a, s.tmp.path());
    let mut nfacctd = Collector::nfacctd(&s.a, s.tmp.path());
    let config = s
        .config()
        .window_secs(2)
        .daemon_key("nflog_groups = [100]")
        .eni("eni-a", "veth-a", "vpc-lab")
        .flow_log(
            FlowLog::vpc("all", "vpc-lab")
                .traffic("all")
                .sinks(&["file", "nf", "pm"]),
        )
        .json_sink("file", &s.path("records.jsonl"))
        .toml(&ipfix_sink("nf", NFCAPD_PORT, ""))
        .toml(&ipfix_sink("pm", NFACCTD_PORT, ""));
    let cfg = s.write_config("flowlogd.toml", &config);
    let mut daemon = s.start_daemon(&cfg, "daemon.log");
    let a4 = s.ea.v4.to_string();
    let a6 = format!("[{}]", s.ea.v6);
    traffic(&s.a, &s.b, &a4, 41000);
    traffic(&s.a, &s.b, &a6, 42000);
    // A window with no traffic at all: a NODATA record.
    let closed = daemon.closed_windows().len();
    daemon.wait_for_window(closed + 2, Duration::from_secs(10));
    daemon.stop();
    let log = daemon.log();
    // nfacctd prints every second: give it two, then stop both.
    std::thread::sleep(Duration::from_secs(2));
    nfacctd.stop();
    nfcapd.stop();

    let records = read_json_records(&s.path("records.jsonl"));
    let (file_flows, file_statuses) = file_view(&records);
    // What the file sink wrote: both families, both actions, NODATA.
    let count = |f: &dyn Fn(&Value) -> bool| records.iter().filter(|r| f(r)).count();
    assert!(
        count(&|r| r["action"] == "REJECT" && r["srcaddr"].as_str().unwrap().contains(':')) >= 2,
        "IPv6 REJECT records\n{log}"
    );
    assert!(
        count(&|r| r["action"] == "REJECT" && r["srcaddr"].as_str().unwrap().contains('.')) >= 2
    );
    assert!(
        count(&|r| r["action"] == "ACCEPT" && r["srcaddr"].as_str().unwrap().contains(':')) >= 3
    );
    assert!(
        count(&|r| r["action"] == "ACCEPT" && r["srcaddr"].as_str().unwrap().contains('.')) >= 3
    );
    assert!(
        file_statuses.iter().any(|s| s.2 == "NODATA"),
        "no NODATA record: {file_statuses:?}\n{log}"
    );
    let dropped: u64 = records
        .iter()
        .filter(|r| r["action"] == "REJECT")
        .map(|r| r["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(
        dropped,
        2 * 2 * 3,
        "the kernel dropped 2 x 2 flows x 3 packets"
    );

    let (nf_flows, directions) = nfdump_flows(&s.tmp.join("nfcapd"));
    assert_eq!(nf_flows, file_flows, "nfdump vs the file sink\n{log}");
    // flowDirection as nfdump decodes it: every flow is inbound to eni-a.
    assert_eq!(
        directions.keys().filter(|k| k.ends_with(":out")).count(),
        0,
        "{directions:?}"
    );
    let nf_status = nfdump(&s.tmp.join("nfcapd"), "packets = 0");
    assert_eq!(
        nf_status.len(),
        file_statuses.len(),
        "nfdump shows status records as 0-packet flows"
    );

    let (pm_flows, pm_statuses) = pmacct_view(&pmacct_entries(&s.tmp.join("pmacct.jsonl")));
    let expected: Vec<_> = {
        let mut v: Vec<_> = records
            .iter()
            .filter(|r| r["log-status"] == "OK")
            .map(|r| {
                let (f, _) = file_view(std::slice::from_ref(r));
                (
                    f[0].clone(),
                    r["direction"].as_str().unwrap().to_owned(),
                    r["action"].as_str().unwrap().to_owned(),
                    r["rule"].as_str().unwrap_or("").to_owned(),
                    r["eni-id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(pm_flows, expected, "pmacct vs the file sink\n{log}");
    assert_eq!(pm_statuses, file_statuses, "pmacct's status records");
    assert!(
        log.contains("sink nf:") && !log.contains("refused earlier datagrams"),
        "{log}"
    );
}

/// A collector that starts after the daemon (it missed the templates of
/// the session) decodes the records within one refresh interval: every
/// record of the windows that begin one refresh interval after it came up
/// is there.
#[test]
fn a_collector_started_after_the_daemon_decodes_within_one_refresh_interval() {
    if !require_root("a_collector_started_after_the_daemon_decodes_within_one_refresh_interval") {
        return;
    }
    const REFRESH_SECS: i64 = 3;
    let s = Scenario::builder(LABEL)
        .veth("veth-a", "veth-b", 42)
        .build();
    let config = s
        .config()
        .window_secs(1)
        .eni("eni-a", "veth-a", "vpc-lab")
        .flow_log(FlowLog::vpc("all", "vpc-lab").sinks(&["file", "pm"]))
        .json_sink("file", &s.path("records.jsonl"))
        .toml(&ipfix_sink(
            "pm",
            NFACCTD_PORT,
            &format!("template_refresh_secs = {REFRESH_SECS}"),
        ));
    let cfg = s.write_config("flowlogd.toml", &config);
    // Something holds the collector's port while the daemon starts and
    // sends its templates, so that they are lost without an ICMP error
    // (which would make the sink announce them again at once).
    let holder = s.a.spawn(&[
        "python3",
        "-c",
        &format!(
            "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.bind(('127.0.0.1', {NFACCTD_PORT})); print('bound', flush=True); sys.stdin.read()"
        ),
    ]);
    let mut holder = HolderProcess(holder);
    holder.wait_bound();
    let mut daemon = s.start_daemon(&cfg, "daemon.log");
    daemon.wait_for_window(1, Duration::from_secs(10));
    holder.stop();
    let mut nfacctd = Collector::nfacctd(&s.a, s.tmp.path());
    let up = unix_now();
    let closed = daemon.closed_windows().len();
    daemon.wait_for_window(closed + REFRESH_SECS as usize + 2, Duration::from_secs(20));
    daemon.stop();
    let log = daemon.log();
    std::thread::sleep(Duration::from_secs(2));
    nfacctd.stop();

    let (_, file_statuses) = file_view(&read_json_records(&s.path("records.jsonl")));
    let (_, pm_statuses) = pmacct_view(&pmacct_entries(&s.tmp.join("pmacct.jsonl")));
    let due: Vec<_> = file_statuses
        .iter()
        .filter(|w| w.0 > up + REFRESH_SECS)
        .cloned()
        .collect();
    assert!(
        due.len() >= 2,
        "windows after the refresh: {file_statuses:?}\n{log}"
    );
    let got: Vec<_> = pm_statuses
        .iter()
        .filter(|w| w.0 > up + REFRESH_SECS)
        .cloned()
        .collect();
    assert_eq!(
        got, due,
        "pmacct decodes every record from one refresh interval on\nall: {pm_statuses:?}\n{log}"
    );
    // Nothing before the collector came up was decoded: the test did lose
    // the templates.
    assert!(
        pm_statuses.iter().all(|w| w.1 > up - 1),
        "pmacct has records from before it started: {pm_statuses:?}"
    );
}

/// The process holding the collector's port, killed by its exact pid.
struct HolderProcess(Child);

impl HolderProcess {
    fn wait_bound(&mut self) {
        use std::io::BufRead;
        let out = self.0.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "bound", "python3 could not bind the port");
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for HolderProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `check-config` names the file, line and key of a bad ipfix option.
#[test]
fn check_config_points_at_bad_ipfix_options() {
    let tmp = TempDir::new("fl21i-check");
    let plugins = plugin_dir(&tmp);
    for (options, key, line_of, message) in [
        (
            "collector = \"127.0.0.1\"\nenterprise_number = 32473\n",
            "collector",
            "collector =",
            "expected \"host:port\" (the port is missing), got \"127.0.0.1\"",
        ),
        (
            "collector = \"127.0.0.1:4739\"\nenterprise_number = 32473\nmax_message_bytes = 200\n",
            "max_message_bytes",
            "max_message_bytes =",
            "expected 1026 to 65535",
        ),
        (
            "collector = \"127.0.0.1:4739\"\nenterprise_number = 32473\ntransport = \"sctp\"\n",
            "transport",
            "transport =",
            "expected \"udp\" or \"tcp\", got \"sctp\"",
        ),
    ] {
        let cfg = DaemonConfig::new(&plugins)
            .eni("eni-1", "eth0", "vpc-1")
            .flow_log(FlowLog::eni("all", "eni-1").sinks(&["x"]))
            .toml(&format!("[sinks.x]\nplugin = \"ipfix\"\n{options}"))
            .write(&tmp.join("flowlogd.toml"));
        let out = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
        assert!(!out.status.success(), "{options}: accepted\n{}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = line_starting_with(&cfg, line_of);
        assert!(
            stderr.contains(&format!("{}:{line}:1:", cfg.display()))
                && stderr.contains(&format!("sinks.x.{key}"))
                && stderr.contains(message),
            "{options}: expected an error at line {line} about {key}: {message}\n{stderr}"
        );
    }
}

/// One replayed record of eni-1 as the file sink's JSON writes it.
fn replay_record(window: i64, status: &str, flow: Option<(&str, &str, u64, &str, &str)>) -> Value {
    let mut r = serde_json::json!({
        "version": 1, "vswitch-id": "vsw-test", "vm-id": "i-test", "vpc-id": "vpc-1",
        "account-id": "1234567890", "eni-id": "eni-1",
        "srcaddr": null, "srcport": null, "dstaddr": null, "dstport": null, "protocol": null,
        "direction": null, "packets": null, "bytes": null,
        "start": window, "end": window + 600, "log-status": status, "action": null
    });
    if let Some((src, dst, packets, action, rule)) = flow {
        let m = r.as_object_mut().unwrap();
        m.insert("srcaddr".into(), src.into());
        m.insert("dstaddr".into(), dst.into());
        m.insert("srcport".into(), 40000.into());
        m.insert("dstport".into(), 22.into());
        m.insert("protocol".into(), 6.into());
        m.insert("direction".into(), "in".into());
        m.insert("packets".into(), packets.into());
        m.insert("bytes".into(), (packets * 60).into());
        m.insert("action".into(), action.into());
        if !rule.is_empty() {
            m.insert("rule".into(), rule.into());
        }
    }
    r
}

/// NODATA and SKIPDATA records (which live traffic cannot make on demand),
/// replayed beside OK records with and without a rule: pmacct shows each
/// status by its log-status element and each rule; nfdump shows the status
/// records as the 0-packet flows its README filter separates.
#[test]
fn status_records_and_rules_reach_both_collectors() {
    if !require_root("status_records_and_rules_reach_both_collectors") {
        return;
    }
    let ns = Netns::new(LABEL);
    let tmp = TempDir::new("fl21i-status");
    let mut nfcapd = Collector::nfcapd(&ns, tmp.path());
    let mut nfacctd = Collector::nfacctd(&ns, tmp.path());
    let w1 = 1_700_000_400;
    let w2 = w1 + 600;
    let records = vec![
        replay_record(w1, "NODATA", None),
        replay_record(w2, "SKIPDATA", None),
        replay_record(
            w2,
            "OK",
            Some((
                "2001:db8::7",
                "2001:db8::1",
                3,
                "REJECT",
                "sg-test:deny-ssh",
            )),
        ),
        replay_record(
            w2,
            "OK",
            Some(("192.0.2.7", "192.0.2.1", 4, "REJECT", "sg-test:deny-ssh-v4")),
        ),
        replay_record(w2, "OK", Some(("192.0.2.8", "192.0.2.1", 5, "ACCEPT", ""))),
    ];
    let input = tmp.join("records.jsonl");
    write_json_lines(&input, &records);
    let cfg = DaemonConfig::new(&plugin_dir(&tmp))
        .eni("eni-1", "eth0", "vpc-1")
        .flow_log(FlowLog::eni("all", "eni-1").sinks(&["nf", "pm"]))
        .toml(&ipfix_sink("nf", NFCAPD_PORT, ""))
        .toml(&ipfix_sink("pm", NFACCTD_PORT, ""))
        .write(&tmp.join("flowlogd.toml"));
    let out = ns
        .command(flowlogd_bin())
        .args([
            "replay",
            "--config",
            cfg.to_str().unwrap(),
            input.to_str().unwrap(),
        ])
        .output()
        .expect("run flowlogd replay");
    assert!(out.status.success(), "{}", text(&out));
    std::thread::sleep(Duration::from_secs(2));
    nfacctd.stop();
    nfcapd.stop();

    let (pm_flows, pm_statuses) = pmacct_view(&pmacct_entries(&tmp.join("pmacct.jsonl")));
    assert_eq!(
        pm_statuses,
        vec![
            (w1, w1 + 600, "NODATA".to_owned()),
            (w2, w2 + 600, "SKIPDATA".to_owned())
        ]
    );
    let seen: Vec<_> = pm_flows
        .iter()
        .map(|(f, dir, action, rule, eni)| {
            (
                f.src.as_str(),
                f.packets,
                f.bytes,
                dir.as_str(),
                action.as_str(),
                rule.as_str(),
                eni.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "192.0.2.7",
                4,
                240,
                "in",
                "REJECT",
                "sg-test:deny-ssh-v4",
                "eni-1"
            ),
            ("192.0.2.8", 5, 300, "in", "ACCEPT", "", "eni-1"),
            (
                "2001:db8::7",
                3,
                180,
                "in",
                "REJECT",
                "sg-test:deny-ssh",
                "eni-1"
            ),
        ]
    );
    let dir = tmp.join("nfcapd");
    let statuses = nfdump(&dir, "packets = 0");
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|r| r.get("src4_addr").is_none() && r.get("src6_addr").is_none()),
        "{statuses:?}"
    );
    let (flows, _) = nfdump_flows(&dir);
    assert_eq!(flows.len(), 3, "{flows:?}");
}
