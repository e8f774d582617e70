//! How long the daemon's ctnetlink parser takes per message, over every
//! message of the captured fixtures (tests/fixtures/netlink/conntrack_*.hex),
//! and, for reference, the netlink crate's decoder of a whole message on
//! the same bytes. A measurement, not a test: it prints numbers and asserts
//! nothing.
//!
//! ```sh
//! cargo run --release -p flowlogd-microbench --bin ct-parse-speed
//! ```
//!
//! The crate-based tuple parser that `netlink/ct_parse.rs` replaced (430 ->
//! 190 ns per message, BENCHMARKS.md) is test code of that file; its
//! decoder of the whole message here is the nearest reference outside it.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use flowlogd::netlink::parsers::parse_conntrack_message;
use netlink_packet_core::NetlinkMessage;
use netlink_packet_netfilter::NetfilterMessage;

/// Whether a parser took the message.
type Parser = fn(&[u8]) -> bool;

const ROUNDS: usize = 100_000;
const TRIES: usize = 7;

/// tests/fixtures/netlink/<name>: one message per line, `<label> <hex>`;
/// `#` lines are comments.
fn fixture_messages(name: &str) -> Vec<Vec<u8>> {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/netlink")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (_, hex) = l.split_once(' ').expect("`<label> <hex>` line");
            from_hex(hex.trim())
        })
        .collect()
}

fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// The best of [`TRIES`] runs of [`ROUNDS`] passes over `messages`, in ns
/// per message.
fn best_ns_per_message(messages: &[Vec<u8>], parse: Parser) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..TRIES {
        let started = Instant::now();
        for _ in 0..ROUNDS {
            for m in messages {
                black_box(parse(black_box(m)));
            }
        }
        let ns = started.elapsed().as_nanos() as f64 / (ROUNDS * messages.len()) as f64;
        best = best.min(ns);
    }
    best
}

fn in_place(message: &[u8]) -> bool {
    parse_conntrack_message(message).is_ok()
}

fn whole_message(message: &[u8]) -> bool {
    NetlinkMessage::<NetfilterMessage>::deserialize(message).is_ok()
}

fn main() {
    if cfg!(debug_assertions) {
        eprintln!("a debug build: run with --release for numbers that mean something");
    }
    let messages: Vec<Vec<u8>> = ["conntrack_events.hex", "conntrack_dump.hex"]
        .into_iter()
        .flat_map(fixture_messages)
        .collect();
    let parsed = messages
        .iter()
        .filter(|m| parse_conntrack_message(m).is_ok())
        .count();
    assert_eq!(
        parsed,
        messages.len(),
        "every fixture message parses, or the timing is of the error path"
    );
    let parsers: [(&str, Parser); 2] = [
        ("in place (flowlogd)", in_place),
        ("whole message (netlink-packet-netfilter)", whole_message),
    ];
    for (name, parse) in parsers {
        let ns = best_ns_per_message(&messages, parse);
        println!(
            "{name}: {ns:.1} ns/message (best of {TRIES} x {ROUNDS} rounds of {} messages)",
            messages.len()
        );
    }
}
