//! How fast the IPFIX sink encodes and sends records, and its CPU per
//! million records. A measurement, not a test: it prints numbers and
//! asserts nothing but that the collector side received every message
//! (TCP) or how many (UDP, which may drop).
//!
//! ```sh
//! cargo run --release -p flowlogd-microbench --bin ipfix-send-speed
//! ```
//!
//! 1M synthetic records (a pool of 64Ki: IPv4 and, one in eight, IPv6;
//! one in ten REJECT with a rule), written through `Sink::write` in
//! batches of 1024 records (what the daemon passes per call) to a local
//! collector socket on loopback whose thread only drains it. The sink's
//! shipped defaults (UDP, 1400-byte messages). CPU is the sending thread's
//! own (`getrusage(RUSAGE_THREAD)`: user + system, so the kernel's send
//! path is included). Three rounds per transport; the best and the median.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowlogd_plugin_api::abi::FfiRecord;
use flowlogd_plugin_api::{
    Action, Direction, EniIds, FlowFields, FlowRecord, Host, LogStatus, Options, RecordView, Sink,
};
use flowlogd_sink_ipfix::IpfixSink;

const POOL: usize = 1 << 16;
const RECORDS: usize = 1_000_000;
/// The daemon's records per `write` call (WRITE_CHUNK_RECORDS).
const BATCH: usize = 1024;
const ROUNDS: usize = 3;

fn pool() -> Vec<FlowRecord> {
    let enis: Vec<Arc<EniIds>> = (0..16)
        .map(|i| {
            Arc::new(EniIds {
                eni_id: format!("eni-bp1a2b3c4d{i:02}"),
                vswitch_id: "vsw-bp1e5f6g".into(),
                vpc_id: "vpc-bp1h7i8j".into(),
                vm_id: format!("i-bp1k9l0m{i:02}"),
                account_id: "1234567890123456".into(),
            })
        })
        .collect();
    let rule: Arc<str> = Arc::from("sg-bp1n2o3p:deny-inbound");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..POOL)
        .map(|i| {
            let a = next();
            let b = next();
            let (src, dst) = if i % 8 == 7 {
                (
                    IpAddr::V6(Ipv6Addr::from(u128::from(a) | 0xfd00 << 112)),
                    IpAddr::V6(Ipv6Addr::from(u128::from(b) | 0x2001_0db8 << 96)),
                )
            } else {
                (
                    IpAddr::V4(Ipv4Addr::from(10 << 24 | (a as u32 & 0x00ff_ffff))),
                    IpAddr::V4(Ipv4Addr::from((b >> 16) as u32)),
                )
            };
            let reject = i % 10 == 0;
            FlowRecord {
                eni: enis[i % enis.len()].clone(),
                flow: Some(FlowFields {
                    srcaddr: src,
                    srcport: (a >> 32) as u16,
                    dstaddr: dst,
                    dstport: [443, 80, 53, 8080, 22][i % 5],
                    protocol: [6, 17, 1][i % 3],
                    direction: if i % 2 == 0 {
                        Direction::Out
                    } else {
                        Direction::In
                    },
                    packets: 1 + (b & 0xfff),
                    bytes: 60 + (b & 0xf_ffff),
                    action: if reject {
                        Action::Reject
                    } else {
                        Action::Accept
                    },
                    extras: Default::default(),
                }),
                start: 1_700_000_400,
                end: 1_700_001_000,
                log_status: LogStatus::Ok,
                rule: reject.then(|| rule.clone()),
            }
        })
        .collect()
}

/// This thread's user + system CPU time.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage writes one rusage into the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// (wall seconds, CPU seconds) of sending `RECORDS` records.
fn round(sink: &mut IpfixSink, views: &[RecordView<'_>]) -> (f64, f64) {
    let cpu = thread_cpu();
    let started = Instant::now();
    let mut done = 0;
    while done < RECORDS {
        let from = done % views.len();
        let n = BATCH.min(views.len() - from).min(RECORDS - done);
        sink.write(&views[from..from + n]).expect("write");
        done += n;
    }
    (
        started.elapsed().as_secs_f64(),
        (thread_cpu() - cpu).as_secs_f64(),
    )
}

fn open(options: &str) -> IpfixSink {
    let table: toml::Table = options.parse().unwrap();
    IpfixSink::open(
        &Host::standalone("bench"),
        &Options::from_toml_table(&table),
    )
    .expect("open")
}

fn report(name: &str, mut rounds: Vec<(f64, f64)>, received: &str) {
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let rate = |r: (f64, f64)| RECORDS as f64 / r.0;
    let cpu_per_m = |r: (f64, f64)| r.1 * 1e6 / RECORDS as f64;
    println!(
        "{name}: best {:.0} records/s ({:.2} CPU s / M records), median {:.0} records/s ({:.2} CPU s / M records); {received}",
        rate(rounds[0]),
        cpu_per_m(rounds[0]),
        rate(rounds[ROUNDS / 2]),
        cpu_per_m(rounds[ROUNDS / 2])
    );
}

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("a debug build: run with --release for numbers that mean something");
    }
    let records = pool();
    let ffi: Vec<FfiRecord> = records.iter().map(FlowRecord::to_ffi).collect();
    // SAFETY: `records` owns the strings `ffi` points to and outlives the views.
    let views: Vec<RecordView<'_>> = ffi.iter().map(|r| unsafe { RecordView::new(r) }).collect();
    let stop = Arc::new(AtomicBool::new(false));

    // UDP: a collector thread drains datagrams and counts them.
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = collector.local_addr().unwrap().port();
    let datagrams = Arc::new(AtomicU64::new(0));
    let drain = {
        let (stop, datagrams) = (stop.clone(), datagrams.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if collector.recv(&mut buf).is_ok() {
                    datagrams.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut sink = open(&format!(
        "collector = \"127.0.0.1:{port}\"\nenterprise_number = 32473"
    ));
    round(&mut sink, &views); // warm up
    let udp: Vec<_> = (0..ROUNDS).map(|_| round(&mut sink, &views)).collect();
    std::thread::sleep(Duration::from_millis(300));
    // ~20 records a datagram: what arrived, for context (UDP may drop).
    let received = format!(
        "{} datagrams received over {} rounds",
        datagrams.load(Ordering::Relaxed),
        ROUNDS + 1
    );
    report("udp (1400-byte messages)", udp, &received);

    // TCP: the collector thread reads everything.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bytes = Arc::new(AtomicU64::new(0));
    let reader = {
        let bytes = bytes.clone();
        std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 1 << 20];
            while let Ok(n) = peer.read(&mut buf) {
                if n == 0 {
                    break;
                }
                bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        })
    };
    let mut sink = open(&format!(
        "transport = \"tcp\"\ncollector = \"127.0.0.1:{port}\"\nenterprise_number = 32473"
    ));
    round(&mut sink, &views);
    let tcp: Vec<_> = (0..ROUNDS).map(|_| round(&mut sink, &views)).collect();
    drop(sink);
    reader.join().unwrap();
    let received = format!(
        "{:.1} MiB read by the collector ({:.1} bytes/record)",
        bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        bytes.load(Ordering::Relaxed) as f64 / ((ROUNDS + 1) * RECORDS) as f64
    );
    report("tcp (65535-byte messages)", tcp, &received);
    stop.store(true, Ordering::Relaxed);
    drain.join().unwrap();
}
