//! The benchmark's bookkeeping, for bench/run.sh:
//!
//! ```text
//! bench-tally run [options]          one run's numbers as one JSON line: ground truth
//!                                    (loadgen + nft counters), what the listener's
//!                                    records say, CPU, peak RSS, flowlogd's log
//! bench-tally report RESULTS.jsonl [--smoke]
//!                                    the markdown table; with --smoke, exit 1 unless
//!                                    every flowlogd run was exact (no loss, no excess,
//!                                    no SKIPDATA)
//! ```
//!
//! Record files are read line by line (a 10 s step at the generator's
//! maximum writes well over a million records).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::process::ExitCode;

use serde_json::{json, Value};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.first().map(String::as_str) {
        Some("run") => run(&argv[1..]).map(|v| {
            println!("{v}");
            true
        }),
        Some("report") => report(&argv[1..]),
        _ => Err(
            "usage: bench-tally run [options] | bench-tally report RESULTS.jsonl [--smoke]".into(),
        ),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench-tally: {e}");
            ExitCode::from(2)
        }
    }
}

type Result<T> = std::result::Result<T, String>;

/// `--key value` pairs; a key may repeat.
fn options(argv: &[String]) -> Result<BTreeMap<String, Vec<String>>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        let key = k
            .strip_prefix("--")
            .ok_or_else(|| format!("expected --option, got {k:?}"))?;
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        m.entry(key.to_owned()).or_default().push(v.clone());
    }
    Ok(m)
}

fn one<'a>(o: &'a BTreeMap<String, Vec<String>>, key: &str) -> Option<&'a str> {
    o.get(key).and_then(|v| v.last()).map(String::as_str)
}

fn need<'a>(o: &'a BTreeMap<String, Vec<String>>, key: &str) -> Result<&'a str> {
    one(o, key).ok_or_else(|| format!("--{key} is required"))
}

fn num<T: std::str::FromStr>(o: &BTreeMap<String, Vec<String>>, key: &str, default: T) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match one(o, key) {
        Some(v) => v.parse().map_err(|e| format!("--{key} {v:?}: {e}")),
        None => Ok(default),
    }
}

fn read_json(path: &str) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| format!("{path}: no JSON object"))?;
    serde_json::from_str(line).map_err(|e| format!("{path}: {e}"))
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Count {
    packets: u64,
    bytes: u64,
}

impl Count {
    fn add(&mut self, packets: u64, bytes: u64) {
        self.packets += packets;
        self.bytes += bytes;
    }

    fn json(self) -> Value {
        json!({"packets": self.packets, "bytes": self.bytes})
    }

    fn from_json(v: &Value) -> Count {
        Count {
            packets: v["packets"].as_u64().unwrap_or(0),
            bytes: v["bytes"].as_u64().unwrap_or(0),
        }
    }
}

/// What a listener's records add up to, by traffic class.
#[derive(Debug, Default)]
struct Tally {
    accept_udp: Count,
    accept_tcp: Count,
    reject: Count,
    /// Records of traffic the benchmark did not send.
    other: u64,
    records: u64,
    skipdata: u64,
    nodata: u64,
}

struct Ports {
    udp: u64,
    tcp: u64,
    drop: u64,
}

fn for_each_line(path: &str, mut f: impl FnMut(Value)) -> Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        // No records at all is a result (total loss), not an error.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{path}: {e}")),
    };
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("{path}: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| format!("{path}:{}: {e}", n + 1))?;
        f(v);
    }
    Ok(())
}

fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// flowlogd's JSON records (the file sink's `format = "json"`).
fn tally_flowlogd(paths: &[String], ports: &Ports) -> Result<Tally> {
    let mut t = Tally::default();
    for p in paths {
        for_each_line(p, |r| {
            t.records += 1;
            match r["log-status"].as_str() {
                Some("OK") => {}
                Some("SKIPDATA") => {
                    t.skipdata += 1;
                    return;
                }
                Some("NODATA") => {
                    t.nodata += 1;
                    return;
                }
                _ => {
                    t.other += 1;
                    return;
                }
            }
            let (proto, sport, dport) = (u(&r, "protocol"), u(&r, "srcport"), u(&r, "dstport"));
            let (packets, bytes) = (u(&r, "packets"), u(&r, "bytes"));
            match (r["action"].as_str(), proto) {
                (Some("ACCEPT"), 17) if dport == ports.udp => t.accept_udp.add(packets, bytes),
                (Some("ACCEPT"), 6) if dport == ports.tcp || sport == ports.tcp => {
                    t.accept_tcp.add(packets, bytes)
                }
                (Some("REJECT"), 17) if dport == ports.drop => t.reject.add(packets, bytes),
                _ => t.other += 1,
            }
        })?;
    }
    Ok(t)
}

/// ulogd2's JSON output: NFCT records (one per DESTROY event, both
/// directions' counters) and NFLOG records (one per packet).
fn tally_ulogd(ct: &[String], nflog: &[String], ports: &Ports) -> Result<Tally> {
    let mut t = Tally::default();
    for p in ct {
        for_each_line(p, |r| {
            t.records += 1;
            let (proto, dport) = (u(&r, "orig.ip.protocol"), u(&r, "orig.l4.dport"));
            let packets = u(&r, "orig.raw.pktcount") + u(&r, "reply.raw.pktcount");
            let bytes = u(&r, "orig.raw.pktlen") + u(&r, "reply.raw.pktlen");
            match proto {
                17 if dport == ports.udp => t.accept_udp.add(packets, bytes),
                6 if dport == ports.tcp => t.accept_tcp.add(packets, bytes),
                _ => t.other += 1,
            }
        })?;
    }
    for p in nflog {
        for_each_line(p, |r| {
            t.records += 1;
            if u(&r, "ip.protocol") == 17 && u(&r, "dest_port") == ports.drop {
                t.reject.add(1, u(&r, "ip.totlen"));
            } else {
                t.other += 1;
            }
        })?;
    }
    Ok(t)
}

/// `nft -j list counters`: name -> (packets, bytes).
fn nft_counters(path: &str) -> Result<BTreeMap<String, Count>> {
    let v = read_json(path)?;
    let mut m = BTreeMap::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        if let Some(c) = item.get("counter") {
            if let Some(name) = c["name"].as_str() {
                m.insert(name.to_owned(), Count::from_json(c));
            }
        }
    }
    Ok(m)
}

/// What flowlogd's log says: per window close, its duration and the live
/// table; loss and warnings.
#[derive(Debug, Default)]
struct DaemonLog {
    windows: u64,
    /// The slowest window close, from the deadline to its records sent.
    max_close_ms: u64,
    /// The most capture-thread time one close took (its dump slices and
    /// the records), and the longest the loop went without serving its
    /// sockets during a close.
    max_close_busy_ms: u64,
    max_close_stall_ms: u64,
    peak_live: u64,
    overruns: u64,
    /// Bytes the flow table holds per live connection, at the window close
    /// with the most live connections, when the log says (`table N bytes`,
    /// a field flowlogd does not log yet; see BENCHMARKS.md).
    table_bytes_per_flow: Option<u64>,
    table_live: u64,
    warnings: Vec<String>,
}

fn parse_flowlogd_log(path: &str) -> Result<DaemonLog> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut d = DaemonLog::default();
    let number_before = |line: &str, marker: &str| -> Option<u64> {
        let head = &line[..line.find(marker)?];
        head.rsplit(|c: char| !c.is_ascii_digit())
            .find(|w| !w.is_empty())?
            .parse()
            .ok()
    };
    for line in text.lines() {
        if let Some(rest) = line.split(" window ").nth(1) {
            if rest.contains(" records in ") {
                d.windows += 1;
                d.max_close_ms = d.max_close_ms.max(number_before(line, " ms;").unwrap_or(0));
                d.max_close_busy_ms = d
                    .max_close_busy_ms
                    .max(number_before(line, " ms of the capture thread").unwrap_or(0));
                d.max_close_stall_ms = d
                    .max_close_stall_ms
                    .max(number_before(line, " ms (dump of").unwrap_or(0));
                if let Some(p) = line.split("(peak ").nth(1) {
                    let p: String = p.chars().take_while(char::is_ascii_digit).collect();
                    d.peak_live = d.peak_live.max(p.parse().unwrap_or(0));
                }
                d.overruns = d
                    .overruns
                    .max(number_before(line, " overruns").unwrap_or(0));
                let live = number_before(line, " live connections").unwrap_or(0);
                let table = line.split("table ").nth(1).and_then(|t| {
                    let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
                    t[digits.len()..]
                        .starts_with(" bytes")
                        .then(|| digits.parse::<u64>().ok())?
                });
                if let (Some(bytes), true) = (table, live > 0 && live >= d.table_live) {
                    d.table_live = live;
                    d.table_bytes_per_flow = Some(bytes / live);
                }
            }
        }
        if line.contains(" nflog: ") && line.contains(" packets, ") {
            d.overruns = d
                .overruns
                .max(number_before(line, " overruns").unwrap_or(0));
        }
        if line.contains(" WARN ") || line.contains(" ERROR ") {
            d.warnings.push(line.to_owned());
        }
    }
    Ok(d)
}

/// What ulogd2's log says about loss once running. On an overrun NFCT and
/// NFLOG try to double the buffer: below the maximum they log "We are
/// losing events, increasing buffer size", at the maximum "Maximum buffer
/// size ... has been reached", once, and nothing for later overruns. Errors
/// are levels 7 and 8.
fn parse_ulogd_log(path: &str) -> Result<DaemonLog> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{path}: {e}")),
    };
    let mut d = DaemonLog::default();
    // Start-up notices (a buffer size it could not set) are not loss.
    let running = text.find("entering main loop").map_or("", |i| &text[i..]);
    for line in running.lines().skip(1) {
        let lower = line.to_ascii_lowercase();
        let overrun = lower.contains("losing") || lower.contains("maximum buffer size");
        if overrun {
            d.overruns += 1;
        }
        if overrun || line.contains(" <7> ") || line.contains(" <8> ") {
            d.warnings.push(line.to_owned());
        }
    }
    Ok(d)
}

fn run(argv: &[String]) -> Result<Value> {
    let o = options(argv)?;
    let ports = Ports {
        udp: num(&o, "udp-port", 5001)?,
        tcp: num(&o, "tcp-port", 5003)?,
        drop: num(&o, "drop-port", 5002)?,
    };
    let daemon = need(&o, "daemon")?;
    let truth = read_json(need(&o, "truth")?)?;
    let counters = nft_counters(need(&o, "counters")?)?;
    let get = |name: &str| counters.get(name).copied().unwrap_or_default();
    let sent_udp = Count::from_json(&truth["udp"]);
    let sent_drops = Count::from_json(&truth["drops"]);
    // TCP packets are the kernel's to decide: the nft counters are the truth.
    let mut tcp = get("tcp_orig");
    tcp.add(get("tcp_reply").packets, get("tcp_reply").bytes);
    let flows = u(&truth["udp"], "flows") + u(&truth["tcp"], "flows");
    let mut accept = sent_udp;
    accept.add(tcp.packets, tcp.bytes);
    let list = |key: &str| o.get(key).cloned().unwrap_or_default();
    let tally = match daemon {
        "flowlogd" => Some(tally_flowlogd(&list("records"), &ports)?),
        "ulogd" => Some(tally_ulogd(
            &list("ulogd-ct"),
            &list("ulogd-nflog"),
            &ports,
        )?),
        _ => None,
    };
    let rusage = one(&o, "rusage").map(read_json).transpose()?;
    let log = match (daemon, one(&o, "log")) {
        ("flowlogd", Some(p)) => Some(parse_flowlogd_log(p)?),
        ("ulogd", Some(p)) => Some(parse_ulogd_log(p)?),
        _ => None,
    };
    let mut v = json!({
        "label": need(&o, "label")?,
        "kind": need(&o, "kind")?,
        "daemon": daemon,
        "target": need(&o, "target")?,
        "secs": truth["secs"],
        "flows": flows,
        "flows_per_sec": truth["udp"]["flows_per_sec"].as_f64().unwrap_or(0.0)
            + truth["tcp"]["flows_per_sec"].as_f64().unwrap_or(0.0),
        "drops_per_sec": truth["drops"]["packets_per_sec"],
        "truth": {"accept": accept.json(), "reject": sent_drops.json(), "tcp": tcp.json(),
                  "tcp_failed": truth["tcp"]["failed"]},
        "kernel": {"udp": get("udp_flows").json(), "drops": get("drops").json()},
        "netlink_drops": num::<u64>(&o, "netlink-drops", 0)?,
        "settle_secs": num::<f64>(&o, "settle-secs", 0.0)?,
        "idle_rss_kib": num::<u64>(&o, "idle-rss-kib", 0)?,
    });
    if let Some(t) = tally {
        let mut rec_accept = t.accept_udp;
        rec_accept.add(t.accept_tcp.packets, t.accept_tcp.bytes);
        v["records"] = json!({
            "accept": rec_accept.json(), "reject": t.reject.json(), "records": t.records,
            "skipdata": t.skipdata, "nodata": t.nodata, "other": t.other,
        });
    }
    if let Some(r) = rusage {
        v["rusage"] = r;
    }
    if let Some(l) = log {
        v["log"] = json!({
            "windows": l.windows, "max_close_ms": l.max_close_ms,
            "max_close_busy_ms": l.max_close_busy_ms, "max_close_stall_ms": l.max_close_stall_ms,
            "peak_live": l.peak_live,
            "overruns": l.overruns, "warnings": l.warnings.len(),
            "table_bytes_per_flow": l.table_bytes_per_flow,
            "first_warnings": l.warnings.iter().take(3).collect::<Vec<_>>(),
        });
    }
    Ok(v)
}

/// Loss of `got` against `want` in percent (negative: more than sent).
fn loss_pct(want: u64, got: u64) -> f64 {
    if want == 0 {
        return if got == 0 { 0.0 } else { -100.0 };
    }
    (want as f64 - got as f64) * 100.0 / want as f64
}

fn fmt_loss(want: u64, got: u64) -> String {
    if want == got {
        "0".into()
    } else {
        let l = loss_pct(want, got);
        if l.abs() < 0.01 {
            format!("{l:.4}")
        } else {
            format!("{l:.2}")
        }
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1000.0 {
        format!("{:.1}k", r / 1000.0)
    } else {
        format!("{r:.0}")
    }
}

/// Events a listener had to handle: a conntrack DESTROY per flow, a
/// logged packet per drop.
fn events(v: &Value) -> u64 {
    u(v, "flows") + u(&v["truth"]["reject"], "packets")
}

/// Events the listener actually handled: a lossy ulogd2 did less work than
/// the events sent (it writes one record per event it read); flowlogd's
/// records aggregate, so for it the events sent.
fn handled(v: &Value) -> Option<u64> {
    let rec = v.get("records")?;
    match v["daemon"].as_str() {
        Some("ulogd") if !exact(v) => Some(u(rec, "records")),
        _ => Some(events(v)),
    }
}

fn cpu_secs(v: &Value) -> Option<f64> {
    let r = v.get("rusage")?;
    Some(r["utime_secs"].as_f64()? + r["stime_secs"].as_f64()?)
}

/// Per run: is it exact (records equal the ground truth, no SKIPDATA)?
fn exact(v: &Value) -> bool {
    let rec = &v["records"];
    let t = &v["truth"];
    rec.is_object()
        && Count::from_json(&rec["accept"]) == Count::from_json(&t["accept"])
        && Count::from_json(&rec["reject"]) == Count::from_json(&t["reject"])
        && u(rec, "skipdata") == 0
}

fn report(argv: &[String]) -> Result<bool> {
    let path = argv.first().ok_or("report needs RESULTS.jsonl")?;
    let smoke = argv.iter().any(|a| a == "--smoke");
    let mut runs = Vec::new();
    for_each_line(path, |v| runs.push(v))?;
    if runs.is_empty() {
        return Err(format!("{path}: no results"));
    }
    println!(
        "| run | listener | rate reached | events | ACCEPT pkts / bytes loss % | REJECT pkts / bytes loss % \
         | SKIPDATA | CPU s | CPU s / M events | peak RSS MiB | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for v in &runs {
        let t = &v["truth"];
        let rate = match v["kind"].as_str() {
            Some("nflog") => format!(
                "{} pkt/s",
                fmt_rate(v["drops_per_sec"].as_f64().unwrap_or(0.0))
            ),
            Some("mixed") => format!(
                "{} flows/s + {} pkt/s",
                fmt_rate(v["flows_per_sec"].as_f64().unwrap_or(0.0)),
                fmt_rate(v["drops_per_sec"].as_f64().unwrap_or(0.0))
            ),
            _ => format!(
                "{} flows/s",
                fmt_rate(v["flows_per_sec"].as_f64().unwrap_or(0.0))
            ),
        };
        let ev = events(v);
        let rec = &v["records"];
        let (acc, rej, skip) = if rec.is_object() {
            let (ta, ra) = (
                Count::from_json(&t["accept"]),
                Count::from_json(&rec["accept"]),
            );
            let (tr, rr) = (
                Count::from_json(&t["reject"]),
                Count::from_json(&rec["reject"]),
            );
            let pair = |want: Count, got: Count| {
                if want.packets == 0 && got.packets == 0 {
                    "–".to_owned()
                } else {
                    format!(
                        "{} / {}",
                        fmt_loss(want.packets, got.packets),
                        fmt_loss(want.bytes, got.bytes)
                    )
                }
            };
            (pair(ta, ra), pair(tr, rr), u(rec, "skipdata").to_string())
        } else {
            ("–".into(), "–".into(), "–".into())
        };
        let (cpu, per_m, rss) = match (cpu_secs(v), v.get("rusage")) {
            (Some(c), Some(r)) => (
                format!("{c:.2}"),
                if ev > 0 {
                    format!("{:.2}", c * 1e6 / ev as f64)
                } else {
                    "–".into()
                },
                format!("{:.1}", u(r, "maxrss_kib") as f64 / 1024.0),
            ),
            _ => ("–".into(), "–".into(), "–".into()),
        };
        let mut notes = Vec::new();
        let sent_udp = u(&t["accept"], "packets") - u(&t["tcp"], "packets");
        let kern_udp = u(&v["kernel"]["udp"], "packets");
        if kern_udp != sent_udp {
            notes.push(format!(
                "kernel counted {kern_udp} of {sent_udp} UDP packets sent"
            ));
        }
        let (sent_drop, kern_drop) = (
            u(&t["reject"], "packets"),
            u(&v["kernel"]["drops"], "packets"),
        );
        if kern_drop != sent_drop {
            notes.push(format!(
                "kernel counted {kern_drop} of {sent_drop} drops sent"
            ));
        }
        if u(t, "tcp_failed") > 0 {
            notes.push(format!("{} TCP attempts failed", u(t, "tcp_failed")));
        }
        if u(v, "netlink_drops") > 0 {
            // /proc/net/netlink's Drops: messages the kernel could not queue
            // to the listener's sockets. With flowlogd's reliable DESTROY
            // delivery the kernel keeps those entries and sends again, so
            // they are only lost where the records say so.
            notes.push(format!(
                "{} netlink messages refused (socket full)",
                u(v, "netlink_drops")
            ));
        }
        if let Some(l) = v.get("log") {
            if u(l, "windows") > 1 {
                notes.push(format!(
                    "{} windows, slowest close {} ms (capture thread {} ms, longest stall {} ms)",
                    u(l, "windows"),
                    u(l, "max_close_ms"),
                    u(l, "max_close_busy_ms"),
                    u(l, "max_close_stall_ms")
                ));
            }
            let peak = u(l, "peak_live");
            if peak > 0 {
                notes.push(format!("peak {peak} live flows"));
                if let Some(b) = l["table_bytes_per_flow"].as_u64() {
                    notes.push(format!("flow table {b} B/live flow"));
                }
                if let Some(r) = v.get("rusage") {
                    let grown = u(r, "maxrss_kib").saturating_sub(u(v, "idle_rss_kib")) * 1024;
                    notes.push(format!(
                        "≤ {} B/live flow (RSS growth / peak)",
                        grown / peak
                    ));
                }
            }
            if u(l, "overruns") > 0 {
                notes.push(format!("{} overruns", u(l, "overruns")));
            }
            if u(l, "warnings") > 0 {
                notes.push(format!("{} warnings in log", u(l, "warnings")));
            }
        }
        if rec.is_object() {
            let (ta, ra) = (
                Count::from_json(&t["accept"]),
                Count::from_json(&rec["accept"]),
            );
            let (tr, rr) = (
                Count::from_json(&t["reject"]),
                Count::from_json(&rec["reject"]),
            );
            let over_p =
                ra.packets.saturating_sub(ta.packets) + rr.packets.saturating_sub(tr.packets);
            let over_b = ra.bytes.saturating_sub(ta.bytes) + rr.bytes.saturating_sub(tr.bytes);
            if over_p > 0 || over_b > 0 {
                notes.push(format!(
                    "**counted twice: {over_p} packets, {over_b} bytes more than sent**"
                ));
            }
        }
        if let (Some(c), Some(h)) = (cpu_secs(v), handled(v)) {
            if h != ev {
                notes.push(format!(
                    "{:.2} CPU s / M events handled",
                    c * 1e6 / h.max(1) as f64
                ));
            }
        }
        if rec.is_object() && u(rec, "other") > 0 {
            notes.push(format!("{} other records", u(rec, "other")));
        }
        if let Some(s) = v["settle_secs"].as_f64() {
            if s > 0.0 {
                notes.push(format!("drained {s:.0} s after the flush"));
            }
        }
        println!(
            "| {} | {} | {rate} | {ev} | {acc} | {rej} | {skip} | {cpu} | {per_m} | {rss} | {} |",
            v["label"].as_str().unwrap_or("?"),
            v["daemon"].as_str().unwrap_or("?"),
            notes.join("; ")
        );
    }
    // Ratios: flowlogd against ulogd2 for the same run label.
    let mut ratios = Vec::new();
    for f in runs.iter().filter(|v| v["daemon"] == "flowlogd") {
        let Some(g) = runs
            .iter()
            .find(|v| v["daemon"] == "ulogd" && v["label"] == f["label"])
        else {
            continue;
        };
        // Per event handled: a listener that dropped events must not look
        // cheaper for the work it skipped.
        let per_m = |v: &Value| Some(cpu_secs(v)? * 1e6 / handled(v)?.max(1) as f64);
        if let (Some(a), Some(b)) = (per_m(f), per_m(g)) {
            let rss = |v: &Value| u(&v["rusage"], "maxrss_kib") as f64;
            let lossy = |v: &Value| if exact(v) { "" } else { " (not exact)" };
            ratios.push(format!(
                "| {} | {a:.2}{} | {b:.2}{} | {:.2} | {:.2} |",
                f["label"].as_str().unwrap_or("?"),
                lossy(f),
                lossy(g),
                if b > 0.0 { a / b } else { f64::NAN },
                rss(f) / rss(g).max(1.0)
            ));
        }
    }
    if !ratios.is_empty() {
        println!();
        println!(
            "| run | flowlogd CPU s / M events handled | ulogd2 CPU s / M events handled | CPU ratio \
             | peak RSS ratio |"
        );
        println!("|---|---|---|---|---|");
        for r in ratios {
            println!("{r}");
        }
    }
    if smoke {
        let bad: Vec<&Value> = runs
            .iter()
            .filter(|v| v["daemon"] == "flowlogd" && !exact(v))
            .collect();
        if !bad.is_empty() || !runs.iter().any(|v| v["daemon"] == "flowlogd") {
            eprintln!("smoke: flowlogd's records are not exact:");
            for v in bad {
                eprintln!("  {v}");
            }
            return Ok(false);
        }
        eprintln!("smoke: flowlogd's records match the ground truth exactly");
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_formatting() {
        assert_eq!(fmt_loss(100, 100), "0");
        assert_eq!(fmt_loss(100, 75), "25.00");
        assert_eq!(fmt_loss(1_000_000, 999_999), "0.0001");
        assert_eq!(fmt_loss(100, 101), "-1.00");
    }

    #[test]
    fn reads_the_window_line() {
        let dir = std::env::temp_dir().join(format!("bench-tally-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("log");
        std::fs::write(
            &p,
            "2026-11-25T12:00:00Z INFO  window 100-110: 5 records in 37 ms; 250000 live connections (peak 251234); \
             conntrack: 9 events, 0 malformed, 2 overruns, 0 resyncs; lost connections 0, table-full drops 0, anomalies 0\n\
             2026-11-25T12:00:10Z WARN  conntrack: receive buffer grown\n",
        )
        .unwrap();
        let d = parse_flowlogd_log(p.to_str().unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            (d.windows, d.max_close_ms, d.peak_live, d.overruns),
            (1, 37, 251_234, 2)
        );
        assert_eq!(d.warnings.len(), 1);
        assert_eq!(d.table_bytes_per_flow, None);
    }

    #[test]
    fn reads_the_close_costs() {
        let dir = std::env::temp_dir().join(format!("bench-tally-close-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("log");
        std::fs::write(
            &p,
            "2026-11-25T12:00:00Z INFO  window 100-110: 5 records in 912 ms; closing took 640 ms of the capture \
             thread, longest stall 7 ms (dump of 250000 entries in 160 slices); 250000 live connections (peak \
             251234), table 25165824 bytes; conntrack: 9 events, 0 malformed, 0 overruns, 0 resyncs\n\
             2026-11-25T12:00:10Z INFO  window 110-120: 5 records in 80 ms; closing took 60 ms of the capture \
             thread, longest stall 9 ms (dump of 25000 entries in 16 slices); 25000 live connections (peak \
             251234), table 25165824 bytes; conntrack: 9 events, 0 malformed, 0 overruns, 0 resyncs\n",
        )
        .unwrap();
        let d = parse_flowlogd_log(p.to_str().unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            (
                d.windows,
                d.max_close_ms,
                d.max_close_busy_ms,
                d.max_close_stall_ms
            ),
            (2, 912, 640, 9)
        );
    }

    #[test]
    fn reads_the_table_size_when_logged() {
        let dir = std::env::temp_dir().join(format!("bench-tally-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("log");
        std::fs::write(
            &p,
            "2026-11-25T12:00:00Z INFO  window 100-110: 5 records in 37 ms; 250000 live connections (peak 251234), \
             table 25165824 bytes; conntrack: 9 events, 0 malformed, 0 overruns, 0 resyncs\n",
        )
        .unwrap();
        let d = parse_flowlogd_log(p.to_str().unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(d.table_bytes_per_flow, Some(100));
    }
}
