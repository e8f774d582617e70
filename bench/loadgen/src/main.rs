//! flowlogd's load generator. Run inside the generator's network namespace
//! (`ip netns exec <gen> loadgen ...`); it sends to the VM side over a veth
//! pair and prints its exact ground truth as one JSON line on stdout.
//!
//! - UDP flows: each flow has its own source address and port (drawn from
//!   `--src-net`, a prefix the VM side routes back to the generator), so
//!   each is one new conntrack entry; `--packets-per-flow` packets of
//!   varied sizes each. Sent from a raw socket with sendmmsg, so a flow
//!   costs no socket, bind or connect.
//! - Drops: UDP packets to `--drop-port`, which the VM side's firewall
//!   drops with `log group N` (REJECT records), over `--drop-tuples`
//!   distinct sources.
//! - TCP: connect/close flows to a listener on the VM side.
//!
//! Rates are per second, or `max` (as fast as the core allows), bounded by
//! `--secs`. With `--vm-netns`, the sockets that keep the VM side quiet (a
//! UDP socket on the flows' port, so no ICMP port-unreachable answers
//! them, and the TCP listener) are opened there by this process.

mod netns;
mod packets;
mod raw;
mod tcp;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use packets::SourcePool;
use raw::{Batch, RawSender, Tag};

const USAGE: &str = "\
usage: loadgen --dst ADDR [options]
  --dst ADDR               the VM side's IPv4 address (required)
  --src-net ADDR/LEN       source addresses of UDP flows and drops [10.201.0.0/16]
  --secs S                 how long to send (1..=3600) [10]
  --flows RATE             new UDP flows per second, or `max`, 0 = none [0]
  --packets-per-flow K     packets per UDP flow, sizes varied (1..=16) [1]
  --udp-port P             the flows' destination port [5001]
  --drops RATE             dropped packets per second, or `max`, 0 = none [0]
  --drop-port P            the port the VM side drops and logs [5002]
  --drop-tuples N          distinct sources of dropped packets [4096]
  --tcp RATE               TCP connect/close flows per second, 0 = none [0]
  --tcp-port P             the TCP listener's port [5003]
  --vm-netns NAME          open the VM side's sockets in this namespace
  --batch N                packets per sendmmsg (1..=1024) [64]
prints one JSON line: what was sent, exactly (flows, packets, IP-layer bytes)";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rate {
    PerSec(u64),
    Max,
}

impl Rate {
    fn parse(s: &str) -> Result<Rate, String> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        s.parse()
            .map(Rate::PerSec)
            .map_err(|e| format!("rate {s:?}: {e} (a number or `max`)"))
    }

    fn is_on(self) -> bool {
        self != Rate::PerSec(0)
    }

    /// How many should have been sent `elapsed` into the run.
    fn due(self, elapsed: Duration) -> u64 {
        match self {
            Rate::PerSec(r) => (r as f64 * elapsed.as_secs_f64()) as u64,
            Rate::Max => u64::MAX,
        }
    }

    fn json(self) -> serde_json::Value {
        match self {
            Rate::PerSec(r) => r.into(),
            Rate::Max => "max".into(),
        }
    }
}

struct Args {
    dst: Ipv4Addr,
    pool: SourcePool,
    secs: u64,
    flows: Rate,
    packets_per_flow: u32,
    udp_port: u16,
    drops: Rate,
    drop_port: u16,
    drop_tuples: u64,
    tcp: u64,
    tcp_port: u16,
    vm_netns: Option<String>,
    batch: usize,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        dst: Ipv4Addr::UNSPECIFIED,
        pool: SourcePool::parse("10.201.0.0/16")?,
        secs: 10,
        flows: Rate::PerSec(0),
        packets_per_flow: 1,
        udp_port: 5001,
        drops: Rate::PerSec(0),
        drop_port: 5002,
        drop_tuples: 4096,
        tcp: 0,
        tcp_port: 5003,
        vm_netns: None,
        batch: 64,
    };
    let mut dst = None;
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |lo: u64, hi: u64| -> Result<u64, String> {
            let n: u64 = value
                .parse()
                .map_err(|e| format!("{flag} {value:?}: {e}"))?;
            if (lo..=hi).contains(&n) {
                Ok(n)
            } else {
                Err(format!("{flag} {value}: expected {lo}..={hi}"))
            }
        };
        match flag.as_str() {
            "--dst" => dst = Some(value.parse().map_err(|e| format!("--dst {value:?}: {e}"))?),
            "--src-net" => a.pool = SourcePool::parse(value)?,
            "--secs" => a.secs = num(1, 3600)?,
            "--flows" => a.flows = Rate::parse(value)?,
            "--packets-per-flow" => a.packets_per_flow = num(1, 16)? as u32,
            "--udp-port" => a.udp_port = num(1, 65535)? as u16,
            "--drops" => a.drops = Rate::parse(value)?,
            "--drop-port" => a.drop_port = num(1, 65535)? as u16,
            "--drop-tuples" => a.drop_tuples = num(1, 1 << 24)?,
            "--tcp" => a.tcp = num(0, 100_000)?,
            "--tcp-port" => a.tcp_port = num(1, 65535)? as u16,
            "--vm-netns" => a.vm_netns = Some(value.clone()),
            "--batch" => a.batch = num(1, 1024)? as usize,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    a.dst = dst.ok_or_else(|| format!("--dst is required\n{USAGE}"))?;
    if a.udp_port == a.drop_port || a.udp_port == a.tcp_port {
        return Err("--udp-port, --drop-port and --tcp-port must differ".into());
    }
    Ok(a)
}

/// The exact count of what was sent, by class.
#[derive(Clone, Copy, Debug, Default)]
struct Sent {
    flows: u64,
    flow_packets: u64,
    flow_bytes: u64,
    drop_packets: u64,
    drop_bytes: u64,
}

impl Sent {
    fn tally(&mut self, batch: &Batch, n: usize) {
        for (tag, len) in batch.sent(n) {
            match tag {
                Tag::Flow { first } => {
                    self.flows += u64::from(first);
                    self.flow_packets += 1;
                    self.flow_bytes += len as u64;
                }
                Tag::Drop => {
                    self.drop_packets += 1;
                    self.drop_bytes += len as u64;
                }
            }
        }
    }
}

/// The next packets to build, in order: flow `next_flow`'s packet
/// `next_packet`, and drop `next_drop`.
struct Cursor {
    next_flow: u64,
    next_packet: u32,
    next_drop: u64,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> Result<serde_json::Value, String> {
    let deadline_margin = Duration::from_secs(10);
    // The VM side's UDP socket: it only has to exist (a closed port would
    // answer every flow with ICMP port-unreachable, traffic that is not
    // the benchmark's). It is never read; once its small buffer is full
    // the kernel discards the datagrams, after conntrack counted them.
    let _udp_sink = if a.flows.is_on() {
        let _in = a
            .vm_netns
            .as_deref()
            .map(netns::InNetns::enter)
            .transpose()
            .map_err(|e| format!("entering the VM namespace: {e}"))?;
        Some(
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, a.udp_port))
                .map_err(|e| format!("binding UDP port {} on the VM side: {e}", a.udp_port))?,
        )
    } else {
        None
    };
    let start = Instant::now();
    let end = start + Duration::from_secs(a.secs);
    let listener = if a.tcp > 0 {
        Some(
            tcp::Listener::start(a.vm_netns.as_deref(), a.tcp_port, end + deadline_margin)
                .map_err(|e| format!("TCP listener on port {}: {e}", a.tcp_port))?,
        )
    } else {
        None
    };
    let client = (a.tcp > 0).then(|| {
        let peer = SocketAddr::from((a.dst, a.tcp_port));
        let per_sec = a.tcp;
        std::thread::spawn(move || tcp::run_client(peer, per_sec, start, end))
    });

    let sent = if a.flows.is_on() || a.drops.is_on() {
        send_raw(a, start, end)?
    } else {
        Sent::default()
    };
    let tcp = match client {
        Some(c) => c.join().map_err(|_| "the TCP client panicked")?,
        None => tcp::TcpTruth::default(),
    };
    // After the TCP client too: a run of TCP flows alone sends no UDP, and
    // its rate is over the client's time, not the instant the UDP sender
    // took to find nothing to send.
    let elapsed = start
        .elapsed()
        .min(Duration::from_secs(a.secs))
        .max(Duration::from_millis(1));
    // Let the last packets and FINs go through the VM side before its
    // sockets close (a closed port would answer with ICMP).
    std::thread::sleep(Duration::from_millis(300));
    let accepted = listener.map_or(0, tcp::Listener::stop);
    let secs = elapsed.as_secs_f64();
    let rate = |n: u64| (n as f64 / secs).round();
    Ok(serde_json::json!({
        "secs": (secs * 1000.0).round() / 1000.0,
        "target": {"flows": a.flows.json(), "drops": a.drops.json(), "tcp": a.tcp,
                   "packets_per_flow": a.packets_per_flow},
        "udp": {"flows": sent.flows, "packets": sent.flow_packets, "bytes": sent.flow_bytes,
                "flows_per_sec": rate(sent.flows)},
        "drops": {"packets": sent.drop_packets, "bytes": sent.drop_bytes,
                  "packets_per_sec": rate(sent.drop_packets)},
        "tcp": {"flows": tcp.flows, "failed": tcp.failed, "accepted": accepted,
                "flows_per_sec": rate(tcp.flows)},
    }))
}

/// Sends the UDP flows and drops from the raw socket until `end`, each at
/// its rate, and returns exactly what the kernel took.
fn send_raw(a: &Args, start: Instant, end: Instant) -> Result<Sent, String> {
    let mut sender =
        RawSender::open(a.dst, 4 << 20).map_err(|e| format!("raw socket (needs root): {e}"))?;
    let mut batch = Batch::new(a.batch);
    let mut sent = Sent::default();
    let mut cur = Cursor {
        next_flow: 0,
        next_packet: 0,
        next_drop: 0,
    };
    let mut last_send = start;
    let mut send_error = None;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let elapsed = now - start;
        let flows_due = a.flows.due(elapsed).min(a.pool.tuples());
        let drops_due = a.drops.due(elapsed);
        // Packets ready to go: the rest of the current flow, the flows due,
        // the drops due.
        let ready = u64::from(if cur.next_packet > 0 {
            a.packets_per_flow - cur.next_packet
        } else {
            0
        })
        .saturating_add(
            flows_due
                .saturating_sub(cur.next_flow + u64::from(cur.next_packet > 0))
                .saturating_mul(u64::from(a.packets_per_flow)),
        )
        .saturating_add(drops_due.saturating_sub(cur.next_drop));
        // Send full batches at once; a partial one at most every
        // millisecond, so that low rates still go out in batches.
        if ready == 0 || (ready < a.batch as u64 && now - last_send < Duration::from_millis(1)) {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        fill(a, &mut batch, &mut cur, flows_due, drops_due);
        if batch.is_empty() {
            continue;
        }
        match sender.send(&mut batch) {
            Ok(n) => sent.tally(&batch, n),
            Err(e) => send_error = Some(e),
        }
        batch.clear();
        last_send = now;
        if let Some(e) = &send_error {
            return Err(format!(
                "sendmmsg failed after {} flows, {} drops: {e}",
                sent.flows, sent.drop_packets
            ));
        }
    }
    Ok(sent)
}

/// Builds the next batch: flow packets and drops interleaved, each up to
/// what is due.
fn fill(a: &Args, batch: &mut Batch, cur: &mut Cursor, flows_due: u64, drops_due: u64) {
    let dst_flow = (a.dst, a.udp_port);
    let dst_drop = (a.dst, a.drop_port);
    while !batch.is_full() {
        let mut pushed = false;
        if cur.next_packet > 0 || cur.next_flow < flows_due {
            let (i, j) = (cur.next_flow, cur.next_packet);
            let src = a.pool.source(i);
            batch.push(Tag::Flow { first: j == 0 }, |buf| {
                packets::write_udp(buf, src, dst_flow, packets::flow_payload_len(i, j))
            });
            cur.next_packet += 1;
            if cur.next_packet == a.packets_per_flow {
                cur.next_packet = 0;
                cur.next_flow += 1;
            }
            pushed = true;
        }
        if !batch.is_full() && cur.next_drop < drops_due {
            let k = cur.next_drop;
            let src = a.pool.source(k % a.drop_tuples);
            batch.push(Tag::Drop, |buf| {
                packets::write_udp(buf, src, dst_drop, packets::drop_payload_len(k))
            });
            cur.next_drop += 1;
            pushed = true;
        }
        if !pushed {
            break;
        }
    }
}
