//! How long `format::write_json` and `format::write_text` take per record,
//! and the field-list writers the sinks call (`write_*_fields`): with the
//! default list (which must cost what the fixed writers cost) and with a
//! list of 11 fields that includes the minor-1 extras.
//! A measurement, not a test: it prints numbers and asserts nothing.
//!
//! ```sh
//! cargo run --release -p flowlogd-microbench --bin format-speed
//! ```
//!
//! 1M synthetic IPv4 OK records (a pool of 64Ki distinct ones, cycled),
//! formatted in batches of 512 lines into one reused `String`, as the file
//! sink does. Five rounds per format; the best and the median are printed.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use flowlogd_plugin_api::abi::FfiRecord;
use flowlogd_plugin_api::format;
use flowlogd_plugin_api::{
    Action, Direction, EniIds, FieldList, FlowFields, FlowRecord, LogStatus, RecordView,
};

const POOL: usize = 1 << 16;
const RECORDS: usize = 1_000_000;
const BATCH: usize = 512;
const ROUNDS: usize = 5;

/// A record writer, given the field list (which the fixed writers ignore).
type Writer = fn(&mut String, &RecordView<'_>, &FieldList);

/// A custom list: some of the 18, and the extras (all `-` here, as in
/// records nothing fills yet).
const LISTED: [&str; 11] = [
    "type",
    "srcaddr",
    "pkt-srcaddr",
    "dstaddr",
    "pkt-dstaddr",
    "flow-start",
    "flow-end",
    "tcp-flags",
    "bytes",
    "log-status",
    "rule",
];

/// Deterministic, varied fields: a cheap xorshift so addresses, ports and
/// counters have realistic digit counts without a `rand` dependency.
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
            FlowRecord {
                eni: enis[i % enis.len()].clone(),
                flow: Some(FlowFields {
                    srcaddr: IpAddr::V4(Ipv4Addr::from(10 << 24 | (a as u32 & 0x00ff_ffff))),
                    srcport: (a >> 32) as u16,
                    dstaddr: IpAddr::V4(Ipv4Addr::from((b >> 16) as u32)),
                    dstport: [443, 80, 53, 8080, 22][i % 5],
                    protocol: [6, 17, 1][i % 3],
                    direction: if i % 2 == 0 {
                        Direction::Out
                    } else {
                        Direction::In
                    },
                    packets: 1 + (b & 0xfff),
                    bytes: 60 + (b & 0xf_ffff),
                    action: if i % 10 == 0 {
                        Action::Reject
                    } else {
                        Action::Accept
                    },
                    extras: Default::default(),
                }),
                start: 1_700_000_400,
                end: 1_700_001_000,
                log_status: LogStatus::Ok,
                rule: None,
            }
        })
        .collect()
}

fn ns_per_record(views: &[RecordView<'_>], write: Writer, fields: &FieldList) -> f64 {
    let mut out = String::with_capacity(BATCH * 400);
    let started = Instant::now();
    let mut done = 0;
    while done < RECORDS {
        out.clear();
        for i in done..(done + BATCH).min(RECORDS) {
            write(&mut out, &views[i % views.len()], fields);
            out.push('\n');
        }
        black_box(&out);
        done += BATCH;
    }
    started.elapsed().as_nanos() as f64 / RECORDS as f64
}

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("a debug build: run with --release for numbers that mean something");
    }
    let records = pool();
    let ffi: Vec<FfiRecord> = records.iter().map(FlowRecord::to_ffi).collect();
    // SAFETY: `records` owns the strings `ffi` points to and outlives the views.
    let views: Vec<RecordView<'_>> = ffi.iter().map(|r| unsafe { RecordView::new(r) }).collect();
    let default = FieldList::default();
    let listed = FieldList::parse(&LISTED).expect("the bench's list is valid");
    let rows: [(&str, Writer, &FieldList); 6] = [
        ("write_json", |o, r, _| format::write_json(o, r), &default),
        ("write_text", |o, r, _| format::write_text(o, r), &default),
        (
            "write_json_fields (default)",
            format::write_json_fields,
            &default,
        ),
        (
            "write_text_fields (default)",
            format::write_text_fields,
            &default,
        ),
        (
            "write_json_fields (11 listed)",
            format::write_json_fields,
            &listed,
        ),
        (
            "write_text_fields (11 listed)",
            format::write_text_fields,
            &listed,
        ),
    ];
    for (name, write, fields) in rows {
        ns_per_record(&views, write, fields); // warm up
        let mut ns: Vec<f64> = (0..ROUNDS)
            .map(|_| ns_per_record(&views, write, fields))
            .collect();
        ns.sort_by(f64::total_cmp);
        println!(
            "{name}: best {:.1} ns/record, median {:.1} ns/record ({RECORDS} IPv4 records x {ROUNDS} rounds)",
            ns[0],
            ns[ROUNDS / 2]
        );
    }
}
