//! The Prometheus endpoint end to end: the daemon in a namespace with known
//! traffic (UDP flows it accepts, UDP datagrams a drop rule logs to NFLOG),
//! its `/metrics` scraped from inside the namespace (the listen address is
//! the namespace's loopback), checked by `promtool check metrics`, and
//! compared with the records in the file sinks and with the window's log
//! line; then a real Prometheus server in the namespace scrapes it, and its
//! HTTP API must report the records the file sink holds.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use flowlogd_tests::netns::{udp_accepted_and_dropped, DaemonProcess, LineProcess, Netns};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");

/// The daemon's default `metrics.listen`: the tests use the default.
const METRICS_URL: &str = "http://127.0.0.1:9750/metrics";

/// A drop rule that logs to NFLOG group 100, as a security group would.
const RULES: &str = r#"table inet mettest {
	chain input {
		type filter hook input priority filter; policy accept;
		udp dport 1161 counter log group 100 prefix "flowlogd:sg-met:deny-snmp" drop
	}
}
"#;

/// Namespace `a` (the daemon, ENI eni-a, the drop rule) and `b` (a peer);
/// two flow logs: `all` into `all.jsonl`, `rejects` (traffic = reject)
/// into `rej.jsonl`. A 3 s window.
fn lab(label: &str) -> (Scenario, DaemonProcess) {
    let s = Scenario::builder(label)
        .veth("veth-a", "veth-b", 47)
        .build();
    let rules = s.path("rules.nft");
    std::fs::write(&rules, RULES).unwrap();
    s.a.exec_ok(&["nft", "-f", rules.to_str().unwrap()]);
    let config = s
        .config()
        .window_secs(3)
        .daemon_key("nflog_groups = [100]")
        .eni("eni-a", "veth-a", "vpc-met")
        .flow_log(FlowLog::vpc("all", "vpc-met").sinks(&["all"]))
        .flow_log(
            FlowLog::eni("rejects", "eni-a")
                .traffic("reject")
                .sinks(&["rej"]),
        )
        .json_sink("all", &s.path("all.jsonl"))
        .json_sink("rej", &s.path("rej.jsonl"));
    let cfg = s.write_config("flowlogd.toml", &config);
    let daemon = s.start_daemon(&cfg, "daemon.log");
    (s, daemon)
}

/// Accepted UDP (4 datagrams in, 2 replies out) and 5 dropped datagrams;
/// returns the drop rule's packet count.
fn send_traffic(s: &Scenario) -> u64 {
    let a4 = s.ea.v4.to_string();
    let _first = udp_accepted_and_dropped(&s.a, &s.b, TRAFFIC, &a4, 5300);
    // A second accepted flow, deleted from the table: its end comes as a
    // DESTROY event, while the first stays live.
    let mut server = LineProcess::traffic(
        &s.a,
        TRAFFIC,
        &["udp-server", &format!("{a4}:5301"), "1", "0", "0"],
    );
    server.expect_line("listening", Duration::from_secs(10));
    let mut gone = LineProcess::traffic(
        &s.b,
        TRAFFIC,
        &["udp-client", &format!("{a4}:5301"), "1", "20", "0"],
    );
    gone.expect_line("done", Duration::from_secs(10));
    s.a.exec_ok(&["conntrack", "-D", "-p", "udp", "--dport", "5301"]);
    let ruleset = s.a.exec_ok(&["nft", "list", "ruleset"]);
    let rule = ruleset
        .lines()
        .find(|l| l.contains("deny-snmp"))
        .unwrap_or_else(|| panic!("no drop rule:\n{ruleset}"));
    number_after(rule, "counter packets ")
}

/// `GET url` from inside `ns` (python3's urllib): the status and body.
fn http_get(ns: &Netns, url: &str) -> (u16, String) {
    const GET: &str = "import sys, urllib.request, urllib.error\n\
        try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=5); code, body = r.status, r.read()\n\
        except urllib.error.HTTPError as e:\n    code, body = e.code, e.read()\n\
        sys.stdout.write(str(code) + '\\n' + body.decode())\n";
    let o = ns.exec(&["python3", "-c", GET, url]);
    assert!(o.status.success(), "GET {url} failed:\n{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (code, body) = out.split_once('\n').unwrap_or((&out, ""));
    (code.parse().unwrap(), body.to_owned())
}

/// The metrics page, asserted to be a 200.
#[track_caller]
fn scrape(ns: &Netns) -> String {
    let (code, body) = http_get(ns, METRICS_URL);
    assert_eq!(code, 200, "{body}");
    body
}

/// The page's samples: `name{labels}` -> value.
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
            (k.to_owned(), v.parse().unwrap_or_else(|_| panic!("{l}")))
        })
        .collect()
}

/// A sample's value as an integer; a missing sample fails the test.
#[track_caller]
fn value(samples: &BTreeMap<String, f64>, key: &str) -> u64 {
    let v = samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"));
    *v as u64
}

/// The number right after `key` in `line`.
#[track_caller]
fn number_after(line: &str, key: &str) -> u64 {
    let rest = line
        .split_once(key)
        .unwrap_or_else(|| panic!("no {key:?} in {line}"))
        .1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {key:?} in {line}"))
}

/// Records of a file sink by `(log-status, action)`, action `-` for
/// NODATA and SKIPDATA.
fn by_status_and_action(records: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut m = BTreeMap::new();
    for r in records {
        let key = (
            r["log-status"].as_str().unwrap().to_owned(),
            r["action"].as_str().unwrap_or("-").to_owned(),
        );
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

/// What the page says flow log `name` emitted, in the same shape.
fn page_by_status_and_action(
    samples: &BTreeMap<String, f64>,
    name: &str,
) -> BTreeMap<(String, String), u64> {
    let mut m = BTreeMap::new();
    for (status, action) in [
        ("OK", "ACCEPT"),
        ("OK", "REJECT"),
        ("NODATA", "-"),
        ("SKIPDATA", "-"),
    ] {
        let key = format!(
            "flowlogd_flow_log_records_total{{flow_log=\"{name}\",log_status=\"{status}\",action=\"{action}\"}}"
        );
        let n = value(samples, &key);
        if n > 0 {
            m.insert((status.to_owned(), action.to_owned()), n);
        }
    }
    m
}

/// The log's window lines (`window <start>-<end>: <n> records in ...`).
fn window_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" records in ") && l.contains("conntrack: "))
        .collect()
}

/// Reads both file sinks and the daemon's log, scrapes, reads them again,
/// until neither changed around the scrape and the sinks acknowledged
/// everything (records go out at each window close, every 3 s): then the
/// page, the records and the log's window lines are of the same moment.
/// Bounded: 20 tries. Returns the page, both sinks' records and the log.
fn steady_scrape(s: &Scenario, daemon: &DaemonProcess) -> (String, Vec<Value>, Vec<Value>, String) {
    let read = || {
        (
            read_json_records(&s.path("all.jsonl")),
            read_json_records(&s.path("rej.jsonl")),
            window_lines(&daemon.log()).len(),
        )
    };
    for _ in 0..20 {
        let before = read();
        let page = scrape(&s.a);
        let log = daemon.log();
        let after = read();
        let v = samples(&page);
        let delivered = |sink: &str| {
            value(
                &v,
                &format!("flowlogd_sink_delivered_records_total{{sink=\"{sink}\"}}"),
            )
        };
        if before == after
            && window_lines(&log).len() == after.2
            && delivered("all") == after.0.len() as u64
            && delivered("rej") == after.1.len() as u64
        {
            return (page, after.0, after.1, log);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "no scrape that agrees with the delivered records in 20 tries; the last page:\n{}",
        scrape(&s.a)
    );
}

/// Known traffic, one scrape: the page passes `promtool check metrics`;
/// each flow log's records by status and action equal the records in its
/// file sink; the NFLOG packets equal the drop rule's counter; and the
/// counters equal those of the last window's log line.
#[test]
fn scrape_agrees_with_the_records_and_the_window_log_line() {
    if !require_root("scrape_agrees_with_the_records_and_the_window_log_line") {
        return;
    }
    let (s, mut daemon) = lab("met");
    let dropped = send_traffic(&s);
    assert_eq!(dropped, 5);
    // Two windows after the traffic: its records are out.
    let closed = daemon.closed_windows().len();
    daemon.wait_for_window(closed + 2, Duration::from_secs(15));
    let (page, all, rej, log) = steady_scrape(&s, &daemon);

    // promtool lints the page as Prometheus would read it.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), page.as_bytes()).unwrap();
    drop(promtool.stdin.take());
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}\n{page}",
        text(&checked)
    );

    let v = samples(&page);
    // The records in the files, by what they say, are what the page counts.
    let all_in_file = by_status_and_action(&all);
    let rej_in_file = by_status_and_action(&rej);
    assert!(
        all_in_file.contains_key(&("OK".into(), "ACCEPT".into()))
            && all_in_file.contains_key(&("OK".into(), "REJECT".into())),
        "{all:#?}"
    );
    assert_eq!(page_by_status_and_action(&v, "all"), all_in_file, "{page}");
    assert_eq!(
        page_by_status_and_action(&v, "rejects"),
        rej_in_file,
        "{page}"
    );
    assert_eq!(value(&v, "flowlogd_nflog_packets_total"), dropped, "{page}");

    // The log's window lines: their record counts add up to the page's,
    // and the last one's counters are the page's (no event came since).
    let windows = window_lines(&log);
    assert_eq!(
        windows.len() as u64,
        value(&v, "flowlogd_windows_closed_total"),
        "{log}\n{page}"
    );
    assert_eq!(
        value(&v, "flowlogd_window_close_duration_seconds_count"),
        windows.len() as u64
    );
    // `window <start>-<end>: <n> records in ...`
    let logged: u64 = windows
        .iter()
        .map(|l| number_after(l.split_once("window ").unwrap().1, ": "))
        .sum();
    let counted: u64 = ["all", "rejects"]
        .iter()
        .map(|f| page_by_status_and_action(&v, f).values().sum::<u64>())
        .sum();
    assert_eq!(logged, counted, "{log}\n{page}");
    assert_eq!(counted, (all.len() + rej.len()) as u64);
    let last = windows.last().unwrap();
    // `conntrack: <n> events, <n> malformed, <n> overruns, <n> foreign,
    // <n> resyncs; lost connections <n> ...`: each key names what comes
    // before the number after it.
    for (key, metric) in [
        ("conntrack: ", "flowlogd_conntrack_events_total"),
        (" events, ", "flowlogd_conntrack_malformed_messages_total"),
        (" malformed, ", "flowlogd_conntrack_overruns_total"),
        (" foreign, ", "flowlogd_conntrack_resyncs_total"),
        ("lost connections ", "flowlogd_lost_connections_total"),
        ("slices); ", "flowlogd_flow_table_entries"),
        (", table ", "flowlogd_flow_table_bytes"),
    ] {
        let n = number_after(last, key);
        assert_eq!(
            n,
            value(&v, metric),
            "{metric} vs {key:?} in {last}\n{page}"
        );
    }
    assert!(
        value(&v, "flowlogd_conntrack_events_total") > 0
            && value(&v, "flowlogd_flow_table_entries") > 0,
        "{page}"
    );
    let nflog_line = log
        .lines()
        .rev()
        .find(|l| l.contains("nflog: ") && l.contains(" packets, "))
        .unwrap_or_else(|| panic!("no nflog line:\n{log}"));
    assert_eq!(number_after(nflog_line, "nflog: "), dropped, "{nflog_line}");

    // Anything but /metrics is a 404.
    let (code, _) = http_get(&s.a, "http://127.0.0.1:9750/");
    assert_eq!(code, 404);
    daemon.stop();
}

/// A real Prometheus (Debian's package) in the daemon's namespace scrapes
/// it every second; its HTTP API's value of the `all` flow log's records
/// counter equals the records in that flow log's file.
#[test]
fn prometheus_reads_the_records_written() {
    if !require_root("prometheus_reads_the_records_written") {
        return;
    }
    let (s, mut daemon) = lab("metp");
    send_traffic(&s);
    let prom_dir = s.path("prometheus");
    std::fs::create_dir(&prom_dir).unwrap();
    let prom_cfg = prom_dir.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: flowlogd\n    static_configs:\n      - targets: ['127.0.0.1:9750']\n",
    )
    .unwrap();
    let storage = prom_dir.join("data");
    // Killed by its exact pid when dropped (before the scenario, which
    // removes the namespace and the directory).
    let prometheus = LineProcess::spawn(
        &s.a,
        "prometheus",
        &[
            &format!("--config.file={}", prom_cfg.display()),
            &format!("--storage.tsdb.path={}", storage.display()),
            "--web.listen-address=127.0.0.1:9090",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get_status(&s.a, "http://127.0.0.1:9090/-/ready") != 200 {
        assert!(
            Instant::now() < deadline,
            "prometheus not ready in 30 s:\n{}",
            prometheus.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let closed = daemon.closed_windows().len();
    daemon.wait_for_window(closed + 2, Duration::from_secs(15));

    // Both change only at window closes (every 3 s) and Prometheus scrapes
    // every second: within 40 tries a query falls between a scrape and
    // the next close.
    let query = "http://127.0.0.1:9090/api/v1/query?query=\
                 sum(flowlogd_flow_log_records_total%7Bflow_log%3D%22all%22%7D)";
    let mut seen = Vec::new();
    for _ in 0..40 {
        let before = read_json_records(&s.path("all.jsonl")).len() as u64;
        let (code, body) = http_get(&s.a, query);
        let after = read_json_records(&s.path("all.jsonl")).len() as u64;
        assert_eq!(code, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        let got = answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<u64>().ok());
        if before == after && before > 0 && got == Some(after) {
            daemon.stop();
            return;
        }
        seen.push((before, got, after));
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!(
        "Prometheus never reported the records in all.jsonl: (file before, Prometheus, file after) = {seen:?}\n{}",
        prometheus.output()
    );
}

/// The status of `GET url` in `ns`, 0 when nothing answers.
fn http_get_status(ns: &Netns, url: &str) -> u16 {
    let o = ns.exec(&[
        "python3",
        "-c",
        "import sys, urllib.request\ntry:\n    print(urllib.request.urlopen(sys.argv[1], timeout=2).status)\n\
         except Exception:\n    print(0)\n",
        url,
    ]);
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// An address the daemon cannot bind stops it at start, naming the key;
/// `listen = ""` starts no server.
#[test]
fn an_unbindable_listen_address_stops_the_start_and_empty_turns_metrics_off() {
    if !require_root("an_unbindable_listen_address_stops_the_start_and_empty_turns_metrics_off") {
        return;
    }
    let s = Scenario::builder("metb").build();
    let config = |listen: &str| {
        s.config()
            .eni("eni-a", "veth-a", "vpc-met")
            .flow_log(FlowLog::vpc("all", "vpc-met").sinks(&["all"]))
            .json_sink("all", &s.path("all.jsonl"))
            .toml(&format!("[metrics]\nlisten = \"{listen}\"\n"))
    };
    // Not an address of the namespace.
    let cfg = s.write_config("bad.toml", &config("192.0.2.1:9750"));
    let o =
        s.a.command(flowlogd_bin())
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stdin(Stdio::null())
            .output()
            .unwrap();
    let err = text(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("cannot listen for metrics on 192.0.2.1:9750 (metrics.listen): "),
        "{err}"
    );

    let cfg = s.write_config("off.toml", &config(""));
    let mut daemon = s.start_daemon(&cfg, "off.log");
    assert_eq!(http_get_status(&s.a, METRICS_URL), 0);
    assert!(
        !daemon.log().contains("metrics: serving"),
        "{}",
        daemon.log()
    );
    daemon.stop();
    let cfg = s.write_config("on.toml", &config("127.0.0.1:9750"));
    let mut daemon = s.start_daemon(&cfg, "on.log");
    assert_eq!(http_get_status(&s.a, METRICS_URL), 200);
    daemon.stop();
}
