//! The root-free tier: the captured fixture `tests/fixtures/netlink/replay.hex`
//! (every netlink message one namespace's capture read, in order: interfaces
//! appearing, conntrack events, NFLOG drops, the dumps that close windows)
//! replayed through the daemon's parsers, ENI registry, flow table and
//! window close with a clock the test sets, asserting the exact records each
//! flow log instance gets. Expected counters come from what the kernel
//! reported at capture time (`replay-conntrack-L1.txt` before window 1
//! closed, `replay-conntrack-L2.txt` before the flush, `replay-nft.txt`'s
//! drop counter, the DESTROY events' own bytes), never typed in.
//!
//! Runs without root: `cargo test -p flowlogd --test replay`.

#[path = "replay/harness.rs"]
mod harness;

use flowlogd::model::{ConntrackEntry, ConntrackKind};
use flowlogd::netlink::parsers::{parse_conntrack_message, parse_nflog_packet, Messages};
use flowlogd_plugin_api::{Action, Direction, FlowRecord, LogStatus};
use harness::{fixtures, Replay};

const WINDOW_SECS: i64 = 60;
/// When the replayed daemon starts: any time will do (records carry window
/// bounds, not capture times); not on a window boundary, so that the first
/// window visibly starts at the start, not at the aligned boundary.
const STARTED_AT: i64 = 1_795_000_017;

/// eni-a on the captured veth-a (10.99.2.1, peer 10.99.2.2), eni-idle on
/// veth-idle (no traffic), by interface name and by MAC; one instance for
/// all traffic and one for REJECT only, over their VPC.
const CONFIG: &str = r#"
[daemon]
capture_window_secs = 60
nflog_groups = [7]
plugin_dir = "/usr/lib/flowlogd/sinks"

[[eni]]
id = "eni-a"
interface = "veth-a"
vswitch_id = "vsw-1"
vpc_id = "vpc-1"
vm_id = "i-1"
account_id = "123"

[[eni]]
id = "eni-idle"
mac = "02:99:00:00:02:03"
vswitch_id = "vsw-1"
vpc_id = "vpc-1"
vm_id = "i-1"
account_id = "123"

[[flow_log]]
name = "all"
resource_type = "vpc"
resource_id = "vpc-1"
traffic = "all"
sinks = ["local"]

[[flow_log]]
name = "rejects"
resource_type = "vpc"
resource_id = "vpc-1"
traffic = "reject"
sinks = ["local"]

[sinks.local]
plugin = "file"
path = "/var/log/flowlogd/flow.log"
format = "text"
"#;

const ALL: usize = 0;
const REJECTS: usize = 1;

/// The fixture replayed from start-up to the close of its second window.
fn replayed() -> Replay {
    let mut replay = Replay::start(CONFIG, STARTED_AT);
    assert_eq!(replay.config.flow_logs[ALL].name, "all");
    assert_eq!(replay.config.flow_logs[REJECTS].name, "rejects");
    replay.run_fixture("replay.hex");
    assert_eq!(replay.windows.len(), 2, "the fixture closes two windows");
    replay
}

/// One record in a form a failed assertion shows whole.
fn show(r: &FlowRecord) -> String {
    let status = match r.log_status {
        LogStatus::Ok => "OK",
        LogStatus::NoData => "NODATA",
        LogStatus::SkipData => "SKIPDATA",
    };
    match &r.flow {
        None => format!("{} {status}", r.eni.eni_id),
        Some(f) => format!(
            "{} {status} {} {} proto {} {}:{} > {}:{} {} packets {} bytes{}",
            r.eni.eni_id,
            match f.action {
                Action::Accept => "ACCEPT",
                Action::Reject => "REJECT",
            },
            match f.direction {
                Direction::In => "in",
                Direction::Out => "out",
            },
            f.protocol,
            f.srcaddr,
            f.srcport,
            f.dstaddr,
            f.dstport,
            f.packets,
            f.bytes,
            r.rule
                .as_deref()
                .map(|r| format!(" rule {r}"))
                .unwrap_or_default(),
        ),
    }
}

/// Records shown and sorted (their order within a window is not part of
/// the format).
fn shown(records: &[FlowRecord]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(show).collect();
    v.sort();
    v
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// Counters of one connection in a `conntrack -L -o extended` listing of
/// the fixture: the line naming `needle`, its two `packets=`/`bytes=`
/// pairs (original direction, then reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Listed {
    orig: (u64, u64),
    reply: (u64, u64),
}

fn listed(file: &str, needle: &str) -> Listed {
    let text = std::fs::read_to_string(fixtures().join(file)).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(lines.len(), 1, "{file}: one line with {needle}");
    let values = |key: &str| -> Vec<u64> {
        lines[0]
            .split_whitespace()
            .filter_map(|w| w.strip_prefix(key))
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let (p, b) = (values("packets="), values("bytes="));
    assert_eq!((p.len(), b.len()), (2, 2), "{file}: {}", lines[0]);
    Listed {
        orig: (p[0], b[0]),
        reply: (p[1], b[1]),
    }
}

/// The DESTROY event of the connection from source port `sport`, parsed
/// from the fixture's bytes by the daemon's parser.
fn destroyed(sport: u16) -> ConntrackEntry {
    let text = std::fs::read_to_string(fixtures().join("replay.hex")).unwrap();
    let found: Vec<ConntrackEntry> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ct:destroy "))
        .map(|hex| parse_conntrack_message(&from_hex(hex)).unwrap())
        .filter(|e| e.orig.src_port == sport)
        .collect();
    assert_eq!(found.len(), 1, "one DESTROY from port {sport}");
    assert_eq!(found[0].kind, ConntrackKind::Destroy);
    found[0].clone()
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// The drop rule's `counter packets N bytes M` in the fixture's
/// `nft list ruleset` (taken before the flush; the drops came in window 1).
fn dropped(prefix: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(fixtures().join("replay-nft.txt")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(prefix)).collect();
    assert_eq!(lines.len(), 1, "one rule logging with {prefix}");
    let words: Vec<&str> = lines[0].split_whitespace().collect();
    let after = |key: &str| -> u64 {
        let i = words.iter().position(|w| *w == key).unwrap();
        words[i + 1].parse().unwrap()
    };
    (after("packets"), after("bytes"))
}

fn tcp_line(c: Listed) -> [String; 2] {
    [
        format!(
            "eni-a OK ACCEPT out proto 6 10.99.2.1:40000 > 10.99.2.2:8080 {} packets {} bytes",
            c.orig.0, c.orig.1
        ),
        format!(
            "eni-a OK ACCEPT in proto 6 10.99.2.2:8080 > 10.99.2.1:40000 {} packets {} bytes",
            c.reply.0, c.reply.1
        ),
    ]
}

fn reject_line() -> String {
    let (packets, bytes) = dropped("flowlogd:sg-web:deny-9999");
    format!(
        "eni-a OK REJECT in proto 17 10.99.2.2:40020 > 10.99.2.1:9999 {packets} packets {bytes} bytes \
         rule sg-web:deny-9999"
    )
}

/// Window 1, instance "all": every connection's records per direction are
/// the kernel's counters at the window's closing dump (an outbound TCP
/// connection: out = original direction; an inbound UDP exchange: in =
/// original direction), the drops are a REJECT record, the idle ENI NODATA.
#[test]
fn first_window_records_are_the_kernels_counters_per_direction() {
    let replay = replayed();
    let udp = listed("replay-conntrack-L1.txt", "sport=40010");
    let mut expected = tcp_line(listed("replay-conntrack-L1.txt", "sport=40000")).to_vec();
    expected.push(format!(
        "eni-a OK ACCEPT in proto 17 10.99.2.2:40010 > 10.99.2.1:5353 {} packets {} bytes",
        udp.orig.0, udp.orig.1
    ));
    expected.push(format!(
        "eni-a OK ACCEPT out proto 17 10.99.2.1:5353 > 10.99.2.2:40010 {} packets {} bytes",
        udp.reply.0, udp.reply.1
    ));
    expected.push(reject_line());
    expected.push("eni-idle NODATA".into());
    assert_eq!(
        shown(&replay.windows[0].per_instance[ALL]),
        sorted(&expected)
    );
}

/// The TCP connection lives across both windows: window 1 got what it had
/// carried at window 1's dump, window 2 the rest (its DESTROY's counters
/// less window 1's), and the two sum to the DESTROY's final counters, which
/// are what conntrack listed before the flush. The UDP exchange carried
/// nothing after window 1 and so has no record in window 2.
#[test]
fn long_flow_is_counted_by_deltas_summing_to_its_final_counters() {
    let replay = replayed();
    let at_close = listed("replay-conntrack-L1.txt", "sport=40000");
    let last = destroyed(40000);
    let (orig, reply) = (last.orig_counters.unwrap(), last.reply_counters.unwrap());
    assert_eq!(
        listed("replay-conntrack-L2.txt", "sport=40000"),
        Listed {
            orig: (orig.packets, orig.bytes),
            reply: (reply.packets, reply.bytes)
        },
        "the DESTROY carries the counters conntrack listed before the flush"
    );
    assert!(
        orig.packets > at_close.orig.0 && reply.packets > at_close.reply.0,
        "the capture sent traffic both ways in window 2"
    );
    let delta = Listed {
        orig: (orig.packets - at_close.orig.0, orig.bytes - at_close.orig.1),
        reply: (
            reply.packets - at_close.reply.0,
            reply.bytes - at_close.reply.1,
        ),
    };
    let mut expected = tcp_line(delta).to_vec();
    expected.push("eni-idle NODATA".into());
    assert_eq!(
        shown(&replay.windows[1].per_instance[ALL]),
        sorted(&expected)
    );

    // Summed over both windows, per direction: the final counters.
    let tcp_sum = |direction: Direction| -> (u64, u64) {
        let mut sum = (0, 0);
        let mut seen = 0;
        for w in &replay.windows {
            for r in &w.per_instance[ALL] {
                if let Some(f) = &r.flow {
                    if f.protocol == 6 && f.direction == direction {
                        sum = (sum.0 + f.packets, sum.1 + f.bytes);
                        seen += 1;
                    }
                }
            }
        }
        assert_eq!(seen, 2, "one {direction:?} TCP record per window");
        sum
    };
    assert_eq!(tcp_sum(Direction::Out), (orig.packets, orig.bytes));
    assert_eq!(tcp_sum(Direction::In), (reply.packets, reply.bytes));
}

/// An in-scope ENI whose interface is up but carries nothing gets one
/// NODATA record per window, in every instance, and nothing else.
#[test]
fn idle_eni_gets_nodata_in_every_window_and_instance() {
    let replay = replayed();
    for (w, window) in replay.windows.iter().enumerate() {
        for instance in [ALL, REJECTS] {
            let idle: Vec<String> = window.per_instance[instance]
                .iter()
                .filter(|r| r.eni.eni_id == "eni-idle")
                .map(show)
                .collect();
            assert_eq!(idle, ["eni-idle NODATA"], "window {w}, instance {instance}");
        }
    }
}

/// The two datagrams the firewall dropped and logged to NFLOG are one
/// REJECT record on the ENI they arrived on, direction in, with the rule
/// named by the log prefix and the packets and bytes the rule's counter
/// says.
#[test]
fn logged_drops_are_one_reject_record_with_the_rules_counters() {
    let replay = replayed();
    let rejects: Vec<String> = replay.windows[0].per_instance[ALL]
        .iter()
        .filter(|r| r.flow.as_ref().is_some_and(|f| f.action == Action::Reject))
        .map(show)
        .collect();
    assert_eq!(rejects, [reject_line()]);
    assert_eq!(
        dropped("flowlogd:sg-web:deny-9999").0,
        2,
        "the capture sent two"
    );
}

/// A flow log with `traffic = "reject"` gets the REJECT record and no
/// ACCEPT record; an ENI none of whose records it takes gets NODATA from
/// it (eni-a in window 2, which had only ACCEPT traffic).
#[test]
fn reject_only_instance_gets_no_accept_records() {
    let replay = replayed();
    assert_eq!(
        shown(&replay.windows[0].per_instance[REJECTS]),
        sorted(&[reject_line(), "eni-idle NODATA".into()])
    );
    assert_eq!(
        shown(&replay.windows[1].per_instance[REJECTS]),
        sorted(&["eni-a NODATA".into(), "eni-idle NODATA".into()])
    );
}

/// Window bounds: the first window runs from the daemon's start to the
/// next aligned boundary, the second from there for one window length, and
/// every record carries its window's bounds (the harness checks each).
#[test]
fn windows_run_from_start_to_aligned_boundaries() {
    let replay = replayed();
    let first_end = (STARTED_AT / WINDOW_SECS + 1) * WINDOW_SECS;
    let bounds: Vec<(i64, i64)> = replay.windows.iter().map(|w| (w.start, w.end)).collect();
    assert_eq!(
        bounds,
        [
            (STARTED_AT, first_end),
            (first_end, first_end + WINDOW_SECS)
        ]
    );
}

/// flow-start / flow-end are the connections' CTA_TIMESTAMP start and stop
/// as the fixture carries them, clamped into each window; a connection
/// alive at a close ends at the window's end; the drops span the times
/// the kernel received them. The replay starts a few seconds before the TCP
/// connection began, so that its start falls inside the first window
/// (the other tests start at an arbitrary time: their windows do not
/// contain the capture's timestamps).
#[test]
fn flow_times_are_the_fixtures_conntrack_timestamps_clamped_to_each_window() {
    let tcp = destroyed(40000);
    let secs = |ns: u64| i64::try_from(ns / 1_000_000_000).unwrap();
    let (start, stop) = (secs(tcp.start_ns.unwrap()), secs(tcp.stop_ns.unwrap()));
    let started_at = start - 5;
    let mut replay = Replay::start(CONFIG, started_at);
    replay.run_fixture("replay.hex");
    assert_eq!(replay.windows.len(), 2);
    let span_of = |w: usize, protocol: u8, action: Action| -> Vec<(i64, i64)> {
        replay.windows[w].per_instance[ALL]
            .iter()
            .filter_map(|r| r.flow)
            .filter(|f| f.protocol == protocol && f.action == action)
            .map(|f| (f.extras.flow_start.unwrap(), f.extras.flow_end.unwrap()))
            .collect()
    };
    let (w1, w2) = (&replay.windows[0], &replay.windows[1]);
    assert!(
        w1.start < start && start < w1.end,
        "{start} in {}..{}",
        w1.start,
        w1.end
    );
    // Window 1: begun inside it, alive at its close (both directions).
    assert_eq!(
        span_of(0, 6, Action::Accept),
        [(start, w1.end), (start, w1.end)]
    );
    // Window 2: its DESTROY's stop, clamped into the window.
    let end = stop.clamp(w2.start, w2.end);
    assert_eq!(
        span_of(1, 6, Action::Accept),
        [(w2.start, end), (w2.start, end)]
    );
    // The drops span the kernel's NFULA_TIMESTAMPs of the first and last
    // (within a window of the replay's clock, so they are taken).
    let logged = nflog_timestamps();
    assert_eq!(logged.len(), 2, "the fixture logs two drops");
    assert!(logged.iter().all(|t| (t - started_at).abs() < WINDOW_SECS));
    let (first, last) = (*logged.iter().min().unwrap(), *logged.iter().max().unwrap());
    assert_eq!(span_of(0, 17, Action::Reject), [(first, last)]);
}

/// The NFULA_TIMESTAMP seconds of the fixture's NFLOG packets.
fn nflog_timestamps() -> Vec<i64> {
    let text = std::fs::read_to_string(fixtures().join("replay.hex")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("nflog:packet "))
        .map(|hex| {
            let bytes = from_hex(hex);
            let message = Messages::new(&bytes).next().unwrap().unwrap();
            let (packet, _) = parse_nflog_packet(message.payload).unwrap();
            packet.timestamp.expect("NFULA_TIMESTAMP")
        })
        .collect()
}
