//! Property tests of the parsers that take untrusted bytes: random bytes and
//! mutated real captures (tests/fixtures/netlink) into each of them. A
//! parser must reject what it cannot read with an error, never panic, and
//! never make a record out of a message cut short. The fuzz targets in
//! `fuzz/` run the same inputs for minutes; this is the short version for
//! every `cargo test`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use flowlogd::config;
use flowlogd::model::{has_ports, IfIndex};
use flowlogd::netlink::parsers::{
    parse_conntrack_message, parse_nflog_packet, parse_route_message, Messages,
};
use flowlogd::packet;
use proptest::prelude::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/netlink")
}

/// The messages of a `.hex` fixture (`<label> <hex>` lines).
fn captured(name: &str) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let hex = l.split_whitespace().nth(1).unwrap();
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

fn conntrack_messages() -> Vec<Vec<u8>> {
    let mut m = captured("conntrack_events.hex");
    m.extend(captured("conntrack_dump.hex"));
    m
}

fn route_messages() -> Vec<Vec<u8>> {
    let mut m = captured("route_events.hex");
    m.extend(captured("route_dump.hex"));
    m
}

/// A TCP SYN 10.0.0.1:40000 -> 10.0.0.2:22 (the packet of packet.rs's tests).
fn tcp_syn_v4() -> Vec<u8> {
    let mut p = vec![
        0x45, 0x00, 0x00, 0x3c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 10, 0, 0, 1, 10, 0,
        0, 2, 0x9c, 0x40, 0x00, 0x16,
    ];
    p.extend_from_slice(&[0; 36]);
    p
}

fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend_from_slice(&u16::try_from(4 + value.len()).unwrap().to_ne_bytes());
    n.extend_from_slice(&kind.to_ne_bytes());
    n.extend_from_slice(value);
    n.resize(n.len().next_multiple_of(4), 0);
    n
}

/// An NFLOG packet payload as the kernel sends it: nfgenmsg (group 5),
/// prefix, indev, the packet, seq.
fn nflog_payload() -> Vec<u8> {
    let mut m = vec![2, 0, 0, 5];
    m.extend(nla(10, b"flowlogd:sg-web:deny-ssh\0"));
    m.extend(nla(4, &3u32.to_be_bytes()));
    m.extend(nla(9, &tcp_syn_v4()));
    m.extend(nla(12, &7u32.to_be_bytes()));
    m
}

/// `base` with up to 8 bytes overwritten at chosen offsets.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len();
    prop::collection::vec((0..len, any::<u8>()), 1..8).prop_map(move |edits| {
        let mut b = base.clone();
        for (at, byte) in edits {
            b[at] = byte;
        }
        b
    })
}

/// One of `messages`, mutated.
fn mutated_one_of(messages: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(messages).prop_flat_map(mutated)
}

fn contains(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr_range(), inner.as_ptr_range());
    inner.is_empty() || (o.start <= i.start && i.end <= o.end)
}

#[test]
fn the_captured_messages_parse() {
    // The seeds are good input: the properties below start from it.
    for m in conntrack_messages() {
        parse_conntrack_message(&m).unwrap();
    }
    for m in route_messages() {
        parse_route_message(&m).unwrap();
    }
    let payload = nflog_payload();
    let (logged, seq) = parse_nflog_packet(&payload).unwrap();
    assert_eq!(
        (logged.group, logged.indev, seq),
        (5, Some(IfIndex(3)), Some(7))
    );
    assert_eq!(packet::parse(logged.payload).unwrap().dst_port, 22);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for m in Messages::new(&bytes).flatten() {
            let _ = parse_conntrack_message(m.bytes);
            let _ = parse_route_message(m.bytes);
        }
        let _ = parse_conntrack_message(&bytes);
        let _ = parse_route_message(&bytes);
        let _ = parse_nflog_packet(&bytes);
        let _ = packet::parse(&bytes);
    }

    #[test]
    fn a_conntrack_message_cut_short_is_an_error(
        (m, cut) in prop::sample::select(conntrack_messages())
            .prop_flat_map(|m| { let n = m.len(); (Just(m), 0..n) })
    ) {
        prop_assert!(parse_conntrack_message(&m[..cut]).is_err());
    }

    #[test]
    fn a_mutated_conntrack_message_is_an_error_or_a_whole_entry(
        m in mutated_one_of(conntrack_messages())
    ) {
        if let Ok(e) = parse_conntrack_message(&m) {
            // Both ends of each tuple are of one family.
            for t in [e.orig, e.reply] {
                prop_assert_eq!(t.src.is_ipv4(), t.dst.is_ipv4(), "{:?}", e);
            }
        }
    }

    #[test]
    fn a_route_message_cut_short_is_an_error(
        (m, cut) in prop::sample::select(route_messages())
            .prop_flat_map(|m| { let n = m.len(); (Just(m), 0..n) })
    ) {
        prop_assert!(parse_route_message(&m[..cut]).is_err());
    }

    #[test]
    fn a_mutated_route_message_never_panics(m in mutated_one_of(route_messages())) {
        let _ = parse_route_message(&m);
    }

    #[test]
    fn a_mutated_nflog_packet_points_into_its_message(m in mutated(nflog_payload())) {
        if let Ok((logged, _)) = parse_nflog_packet(&m) {
            prop_assert!(contains(&m, logged.payload));
            prop_assert!(contains(&m, logged.prefix));
            let _ = packet::parse(logged.payload);
        }
    }

    #[test]
    fn a_mutated_packet_has_ports_only_if_its_protocol_has(p in mutated(tcp_syn_v4())) {
        if let Ok(h) = packet::parse(&p) {
            prop_assert_eq!(h.src.is_ipv4(), h.dst.is_ipv4());
            if !has_ports(h.protocol) {
                prop_assert_eq!((h.src_port, h.dst_port), (0, 0));
            }
            if let (IpAddr::V4(_), true) = (h.src, p.len() < 20) {
                prop_assert!(false, "an IPv4 header from {} bytes", p.len());
            }
        }
    }

    #[test]
    fn random_config_text_is_an_error_with_a_message(src in "\\PC{0,200}") {
        if let Err(e) = config::parse(Path::new("random.toml"), &src) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn a_mutated_example_config_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), "[\\[\\]=\"a-z0-9\\n .,-]{0,6}"), 1..4)
    ) {
        let base = include_str!("../../etc/flowlogd.toml");
        let mut src = base.to_owned();
        for (at, text) in edits {
            let mut i = at.index(src.len() + 1);
            while !src.is_char_boundary(i) {
                i -= 1;
            }
            src.insert_str(i, &text);
        }
        if let Err(e) = config::parse(Path::new("flowlogd.toml"), &src) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
