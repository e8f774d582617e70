//! `decide` against the semantics of an Alibaba Cloud security group.

use super::support::{egress, group, ingress, policy};
use crate::security_groups::*;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const GRE: u8 = 47;

/// `accept sg-x:rule` / `drop default`, for short assertions.
fn verdict(p: &Policy, eni: &str, pkt: FirstPacket) -> String {
    let d = p.decide(eni, &pkt);
    assert_eq!(d.rule.mark & MARK_FLAG, MARK_FLAG);
    format!(
        "{} {}",
        if d.accept { "accept" } else { "drop" },
        d.rule.name
    )
}

#[test]
fn lowest_priority_number_decides() {
    let p = policy(&[group(
        "sg-1",
        "\"all\"",
        &[
            "late-drop ingress drop 50 tcp 1/65535 0.0.0.0/0",
            "early-accept ingress accept 2 tcp 22/22 0.0.0.0/0",
            "earliest-drop ingress drop 1 tcp 22/22 10.9.0.0/16",
        ],
    )]);
    assert_eq!(
        verdict(&p, "eni-a", ingress(TCP, "10.1.1.1", 22)),
        "accept sg-1:early-accept"
    );
    assert_eq!(
        verdict(&p, "eni-a", ingress(TCP, "10.9.1.1", 22)),
        "drop sg-1:earliest-drop"
    );
    assert_eq!(
        verdict(&p, "eni-a", ingress(TCP, "10.1.1.1", 23)),
        "drop sg-1:late-drop"
    );
}

#[test]
fn drop_wins_at_equal_priority_then_file_order() {
    // The accept is first in the file, and in a group earlier in the file.
    let p = policy(&[
        group(
            "sg-1",
            "[\"eni-a\"]",
            &["acc ingress accept 5 tcp 80/80 0.0.0.0/0"],
        ),
        group(
            "sg-2",
            "[\"eni-a\"]",
            &[
                "drp ingress drop 5 all -1/-1 0.0.0.0/0",
                "acc2 ingress accept 5 tcp 443/443 0.0.0.0/0",
            ],
        ),
    ]);
    assert_eq!(
        verdict(&p, "eni-a", ingress(TCP, "1.2.3.4", 80)),
        "drop sg-2:drp"
    );
    // Two accepts at one priority: the earlier group's.
    let q = policy(&[
        group(
            "sg-1",
            "[\"eni-a\"]",
            &["one ingress accept 5 tcp 80/80 0.0.0.0/0"],
        ),
        group(
            "sg-2",
            "[\"eni-a\"]",
            &["two ingress accept 5 tcp 80/80 0.0.0.0/0"],
        ),
    ]);
    assert_eq!(
        verdict(&q, "eni-a", ingress(TCP, "1.2.3.4", 80)),
        "accept sg-1:one"
    );
    // And the earlier rule of one group.
    let r = policy(&[group(
        "sg-1",
        "[\"eni-a\"]",
        &[
            "one ingress drop 5 tcp 80/80 0.0.0.0/0",
            "two ingress drop 5 tcp 1/65535 0.0.0.0/0",
        ],
    )]);
    assert_eq!(
        verdict(&r, "eni-a", ingress(TCP, "1.2.3.4", 80)),
        "drop sg-1:one"
    );
}

#[test]
fn defaults_ingress_drop_egress_accept() {
    let p = policy(&[group(
        "sg-1",
        "[\"eni-a\"]",
        &["ssh ingress accept 1 tcp 22/22 0.0.0.0/0"],
    )]);
    let d = p.decide("eni-a", &ingress(UDP, "1.2.3.4", 53));
    assert_eq!(
        (d.accept, d.rule.mark, &*d.rule.name),
        (false, DEFAULT_INGRESS_DROP_MARK, "default")
    );
    let d = p.decide("eni-a", &egress(UDP, "1.2.3.4", 53));
    assert_eq!(
        (d.accept, d.rule.mark, &*d.rule.name),
        (true, DEFAULT_EGRESS_ACCEPT_MARK, "default")
    );
    // A group with no rules at all: every ingress dropped.
    let empty = policy(&[group("sg-1", "[\"eni-a\"]", &[])]);
    assert!(empty.covers("eni-a"));
    assert_eq!(
        verdict(&empty, "eni-a", ingress(TCP, "1.2.3.4", 22)),
        "drop default"
    );
    assert_eq!(
        verdict(&empty, "eni-a", egress(TCP, "1.2.3.4", 22)),
        "accept default"
    );
}

#[test]
fn direction_of_a_rule_and_its_peer() {
    let p = policy(&[group(
        "sg-1",
        "[\"eni-a\"]",
        &[
            "out-drop egress drop 1 tcp 25/25 192.0.2.0/24",
            "in-accept ingress accept 1 tcp 25/25 192.0.2.0/24",
        ],
    )]);
    assert_eq!(
        verdict(&p, "eni-a", egress(TCP, "192.0.2.9", 25)),
        "drop sg-1:out-drop"
    );
    assert_eq!(
        verdict(&p, "eni-a", ingress(TCP, "192.0.2.9", 25)),
        "accept sg-1:in-accept"
    );
    // Egress matches the destination, not the source: the local address is
    // outside 192.0.2.0/24.
    assert_eq!(
        verdict(&p, "eni-a", egress(TCP, "198.51.100.1", 25)),
        "accept default"
    );
}

#[test]
fn cidr_edges() {
    let p = policy(&[group(
        "sg-1",
        "[\"eni-a\"]",
        &[
            "range ingress accept 1 tcp 80/80 10.1.2.0/24",
            "host ingress accept 1 tcp 81/81 10.1.2.3/32",
            "any4 ingress accept 1 tcp 82/82 0.0.0.0/0",
            "host6 ingress accept 1 tcp 83/83 2001:db8::7/128",
            "any6 ingress accept 1 tcp 84/84 ::/0",
            "net6 ingress accept 1 tcp 85/85 2001:db8:1::/48",
        ],
    )]);
    let v = |peer, port| verdict(&p, "eni-a", ingress(TCP, peer, port));
    assert_eq!(v("10.1.2.0", 80), "accept sg-1:range");
    assert_eq!(v("10.1.2.255", 80), "accept sg-1:range");
    assert_eq!(v("10.1.1.255", 80), "drop default");
    assert_eq!(v("10.1.3.0", 80), "drop default");
    assert_eq!(v("10.1.2.3", 81), "accept sg-1:host");
    assert_eq!(v("10.1.2.4", 81), "drop default");
    assert_eq!(v("10.1.2.2", 81), "drop default");
    assert_eq!(v("0.0.0.0", 82), "accept sg-1:any4");
    assert_eq!(v("255.255.255.255", 82), "accept sg-1:any4");
    assert_eq!(v("2001:db8::7", 83), "accept sg-1:host6");
    assert_eq!(v("2001:db8::8", 83), "drop default");
    assert_eq!(v("::", 84), "accept sg-1:any6");
    assert_eq!(
        v("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 84),
        "accept sg-1:any6"
    );
    assert_eq!(v("2001:db8:1::", 85), "accept sg-1:net6");
    assert_eq!(
        v("2001:db8:1:ffff:ffff:ffff:ffff:ffff", 85),
        "accept sg-1:net6"
    );
    assert_eq!(v("2001:db8:0:ffff:ffff:ffff:ffff:ffff", 85), "drop default");
    assert_eq!(v("2001:db8:2::", 85), "drop default");
    // A v4 rule never matches a v6 packet (not even /0, not even a
    // v4-mapped address), nor a v6 rule a v4 packet.
    assert_eq!(v("::ffff:10.1.2.3", 81), "drop default");
    assert_eq!(v("2001:db8::1", 82), "drop default");
    assert_eq!(v("10.0.0.1", 84), "drop default");
}

#[test]
fn port_range_edges() {
    let p = policy(&[group(
        "sg-1",
        "[\"eni-a\"]",
        &[
            "web ingress accept 1 tcp 8000/8080 0.0.0.0/0",
            "dns ingress accept 1 udp 53/53 0.0.0.0/0",
        ],
    )]);
    let v = |proto, port| verdict(&p, "eni-a", ingress(proto, "1.2.3.4", port));
    assert_eq!(v(TCP, 8000), "accept sg-1:web");
    assert_eq!(v(TCP, 8080), "accept sg-1:web");
    assert_eq!(v(TCP, 7999), "drop default");
    assert_eq!(v(TCP, 8081), "drop default");
    assert_eq!(v(UDP, 53), "accept sg-1:dns");
    assert_eq!(v(UDP, 52), "drop default");
    assert_eq!(v(UDP, 54), "drop default");
    // The protocol must match too: tcp/53 is not the udp rule's.
    assert_eq!(v(TCP, 53), "drop default");
    assert_eq!(v(UDP, 8000), "drop default");
    // The destination port decides, not the source port.
    let mut pkt = ingress(TCP, "1.2.3.4", 9000);
    pkt.src_port = 8000;
    assert_eq!(verdict(&p, "eni-a", pkt), "drop default");
    // The whole range.
    let all = policy(&[group(
        "sg-1",
        "[\"eni-a\"]",
        &["any ingress accept 1 tcp 1/65535 0.0.0.0/0"],
    )]);
    assert_eq!(
        verdict(&all, "eni-a", ingress(TCP, "1.2.3.4", 1)),
        "accept sg-1:any"
    );
    assert_eq!(
        verdict(&all, "eni-a", ingress(TCP, "1.2.3.4", 65535)),
        "accept sg-1:any"
    );
}

#[test]
fn icmp_icmpv6_and_all() {
    let p = policy(&[group(
        "sg-1",
        "[\"eni-a\"]",
        &[
            "ping ingress accept 1 icmp -1/-1 0.0.0.0/0",
            "ping6 ingress accept 1 icmpv6 -1/-1 ::/0",
            "gre ingress accept 2 all -1/-1 192.0.2.0/24",
        ],
    )]);
    let v = |proto, peer| verdict(&p, "eni-a", ingress(proto, peer, 0));
    assert_eq!(v(ICMP, "1.2.3.4"), "accept sg-1:ping");
    assert_eq!(v(ICMPV6, "2001:db8::1"), "accept sg-1:ping6");
    // ICMPv6 in a v4 packet is not the icmp rule's.
    assert_eq!(v(ICMPV6, "1.2.3.4"), "drop default");
    assert_eq!(v(ICMP, "2001:db8::1"), "drop default");
    assert_eq!(v(GRE, "192.0.2.1"), "accept sg-1:gre");
    assert_eq!(v(GRE, "1.2.3.4"), "drop default");
    // "all" takes ports too: any destination port.
    assert_eq!(
        verdict(&p, "eni-a", ingress(TCP, "192.0.2.1", 65535)),
        "accept sg-1:gre"
    );
    assert_eq!(
        verdict(&p, "eni-a", ingress(UDP, "192.0.2.1", 1)),
        "accept sg-1:gre"
    );
}

#[test]
fn an_eni_in_two_groups_gets_both() {
    let p = policy(&[
        group(
            "sg-web",
            "[\"eni-a\", \"eni-b\"]",
            &["http ingress accept 10 tcp 80/80 0.0.0.0/0"],
        ),
        group(
            "sg-ssh",
            "[\"eni-a\"]",
            &["ssh ingress accept 10 tcp 22/22 10.0.0.0/8"],
        ),
        group(
            "sg-all",
            "\"all\"",
            &["block ingress drop 10 tcp 80/80 203.0.113.0/24"],
        ),
    ]);
    assert_eq!(
        verdict(&p, "eni-a", ingress(TCP, "10.0.0.1", 22)),
        "accept sg-ssh:ssh"
    );
    assert_eq!(
        verdict(&p, "eni-a", ingress(TCP, "10.0.0.1", 80)),
        "accept sg-web:http"
    );
    assert_eq!(
        verdict(&p, "eni-b", ingress(TCP, "10.0.0.1", 22)),
        "drop default"
    );
    assert_eq!(
        verdict(&p, "eni-b", ingress(TCP, "10.0.0.1", 80)),
        "accept sg-web:http"
    );
    // The "all" group's drop applies to listed ENIs too, and wins at its
    // equal priority.
    assert_eq!(
        verdict(&p, "eni-a", ingress(TCP, "203.0.113.5", 80)),
        "drop sg-all:block"
    );
    assert_eq!(
        verdict(&p, "eni-b", ingress(TCP, "203.0.113.5", 80)),
        "drop sg-all:block"
    );
    // An ENI only in the "all" group.
    assert!(p.covers("eni-c"));
    assert_eq!(
        verdict(&p, "eni-c", ingress(TCP, "10.0.0.1", 80)),
        "drop default"
    );
    assert_eq!(
        verdict(&p, "eni-c", ingress(TCP, "203.0.113.5", 80)),
        "drop sg-all:block"
    );
    assert!(p.covers("eni-learnt-later"));
}

#[test]
fn an_eni_in_no_group_is_not_covered() {
    let p = policy(&[group(
        "sg-1",
        "[\"eni-a\"]",
        &["ssh ingress accept 1 tcp 22/22 0.0.0.0/0"],
    )]);
    assert!(p.is_enabled());
    assert!(p.covers("eni-a"));
    assert!(!p.covers("eni-b"));
    assert!(p.effective_rules("eni-b").is_empty());
    // Not enforced: a packet queued for it (a reload just took it out of
    // every group) passes.
    assert_eq!(
        verdict(&p, "eni-b", ingress(TCP, "1.2.3.4", 80)),
        "accept default"
    );
    let none = policy(&[]);
    assert!(!none.is_enabled());
    assert!(!none.covers("eni-a"));
}

#[test]
fn marks_are_the_rule_names_hashes() {
    let p = policy(&[group(
        "sg-1",
        "[\"eni-a\"]",
        &["ssh ingress accept 1 tcp 22/22 0.0.0.0/0"],
    )]);
    let d = p.decide("eni-a", &ingress(TCP, "1.2.3.4", 22));
    assert_eq!(d.rule.mark, mark_of("sg-1:ssh"));
    assert_eq!(p.rule_marks(), &[RuleMark::of_rule("sg-1:ssh")]);
}

#[test]
fn effective_rules_in_decision_order() {
    let p = policy(&[
        group(
            "sg-1",
            "[\"eni-a\"]",
            &[
                "acc ingress accept 5 tcp 80/80 0.0.0.0/0",
                "first egress drop 1 udp 53/53 10.0.0.0/8",
            ],
        ),
        group(
            "sg-2",
            "\"all\"",
            &["drp ingress drop 5 icmp -1/-1 0.0.0.0/0"],
        ),
    ]);
    let lines: Vec<String> = p
        .effective_rules("eni-a")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "  1 drop   egress  udp    53/53       10.0.0.0/8         sg-1:first",
            "  5 drop   ingress icmp   -1/-1       0.0.0.0/0          sg-2:drp",
            "  5 accept ingress tcp    80/80       0.0.0.0/0          sg-1:acc",
            "  - drop   ingress all    -1/-1       any                default",
            "  - accept egress  all    -1/-1       any                default",
        ]
    );
}
