//! Each `[enforcement]` / `[[security_group]]` mistake, with the exact
//! message the operator sees.

use std::path::Path;

use super::*;

const BASE: &str = r#"
[[eni]]
id = "eni-a"
interface = "eth0"
vswitch_id = "vsw-1"
vpc_id = "vpc-1"
vm_id = "i-1"
account_id = "123"

[[eni]]
id = "eni-b"
interface = "eth1"
vswitch_id = "vsw-1"
vpc_id = "vpc-1"
vm_id = "i-1"
account_id = "123"

[[flow_log]]
name = "all"
resource_type = "vpc"
resource_id = "vpc-1"
sinks = ["local"]

[sinks.local]
plugin = "file"
path = "/var/log/flowlogd/flow.log"
"#;

/// Line 1 of this block is line 27 of `BASE + GROUPS`.
const GROUPS: &str = r#"[enforcement]
queue = 7
on_daemon_down = "drop"

[[security_group]]
id = "sg-web"
enis = ["eni-a", "eni-b"]
[[security_group.rule]]
id = "allow-ssh"
direction = "ingress"
policy = "accept"
priority = 1
protocol = "tcp"
port_range = "22/22"
cidr = "10.0.0.0/8"
description = "ssh from the VPC"

[[security_group]]
id = "sg-all"
enis = "all"
[[security_group.rule]]
id = "no-icmp6"
direction = "egress"
policy = "drop"
priority = 100
protocol = "icmpv6"
port_range = "-1/-1"
cidr = "::/0"
"#;

fn config(groups: &str) -> Result<Config, String> {
    parse(Path::new("/etc/flowlogd.toml"), &format!("{BASE}{groups}")).map_err(|e| e.to_string())
}

#[track_caller]
fn error_with(from: &str, to: &str) -> String {
    assert!(GROUPS.contains(from), "{from}");
    match config(&GROUPS.replacen(from, to, 1)) {
        Ok(_) => panic!("accepted with {to:?}"),
        Err(e) => e,
    }
}

#[test]
fn groups_parse() {
    let c = config(GROUPS).unwrap();
    assert_eq!(
        c.enforcement,
        EnforcementConfig {
            queue: 7,
            on_daemon_down: OnDaemonDown::Drop
        }
    );
    assert_eq!(c.security_groups.len(), 2);
    let web = &c.security_groups[0];
    assert_eq!(web.enis, SgEnis::List(vec!["eni-a".into(), "eni-b".into()]));
    let r = &web.rules[0];
    assert_eq!(
        (r.priority, r.protocol, r.ports),
        (1, SgProtocol::Tcp, Some((22, 22)))
    );
    assert_eq!(r.cidr.to_string(), "10.0.0.0/8");
    assert_eq!(r.description.as_deref(), Some("ssh from the VPC"));
    assert_eq!(c.security_groups[1].enis, SgEnis::All);
    assert_eq!(c.security_groups[1].rules[0].port_range(), "-1/-1");
}

#[test]
fn enforcement_defaults() {
    let c = config(&GROUPS.replace("queue = 7\non_daemon_down = \"drop\"\n", "")).unwrap();
    assert_eq!(c.enforcement, EnforcementConfig::default());
    assert_eq!(c.enforcement.queue, 100);
    assert_eq!(c.enforcement.on_daemon_down, OnDaemonDown::Accept);
    let none = config(&GROUPS.replace("[enforcement]\nqueue = 7\non_daemon_down = \"drop\"\n", ""))
        .unwrap();
    assert_eq!(none.enforcement, EnforcementConfig::default());
    assert!(config("").unwrap().security_groups.is_empty());
}

#[test]
fn enforcement_mistakes() {
    assert_eq!(
        error_with("queue = 7", "queue = 65536"),
        "/etc/flowlogd.toml:28:9: enforcement.queue: expected an integer in 0..=65535, got 65536"
    );
    assert_eq!(
        error_with("\"drop\"\n\n", "\"closed\"\n\n"),
        "/etc/flowlogd.toml:29:18: enforcement.on_daemon_down: expected \"accept\" (new connections pass while \
         the daemon is down) or \"drop\" (they are dropped), got \"closed\""
    );
    assert_eq!(
        error_with("queue = 7", "queue = 7\nqueu = 8"),
        "/etc/flowlogd.toml:29:1: enforcement.queu: unknown field `queu`, expected `queue` or `on_daemon_down`"
    );
    let alone = config("[enforcement]\nqueue = 7\n").unwrap_err();
    assert_eq!(
        alone,
        "/etc/flowlogd.toml:27:1: enforcement: only used with a [[security_group]], and there is none; add one \
         or remove [enforcement]"
    );
}

#[test]
fn group_id_mistakes() {
    assert_eq!(
        error_with("id = \"sg-web\"", "id = \"web\""),
        "/etc/flowlogd.toml:32:6: security_group.id: expected an id starting with \"sg-\" (like \"sg-web\"), got \"web\""
    );
    assert_eq!(
        error_with("id = \"sg-all\"", "id = \"sg-web\""),
        "/etc/flowlogd.toml:45:6: security_group.id: duplicate security group id \"sg-web\""
    );
    assert_eq!(
        error_with("id = \"sg-web\"", "id = \"sg-a:b\""),
        "/etc/flowlogd.toml:32:6: security_group.id: got \"sg-a:b\": ':' separates the group from the rule in \
         records' rule names"
    );
    assert_eq!(
        error_with("id = \"sg-web\"", "id = \"sg-w b\""),
        "/etc/flowlogd.toml:32:6: security_group.id: got \"sg-w b\": ' ' at byte 4: ids are printable ASCII \
         without whitespace (they are fields of text records and log lines)"
    );
}

#[test]
fn enis_mistakes() {
    assert_eq!(
        error_with("\"eni-a\", \"eni-b\"", "\"eni-a\", \"eni-z\""),
        "/etc/flowlogd.toml:33:18: security_group.enis: no [[eni]] has id = \"eni-z\" (configured ENIs: \"eni-a\", \
         \"eni-b\")"
    );
    assert_eq!(
        error_with("\"eni-a\", \"eni-b\"", "\"eni-a\", \"eni-a\""),
        "/etc/flowlogd.toml:33:18: security_group.enis: ENI \"eni-a\" is listed twice"
    );
    assert_eq!(
        error_with("enis = \"all\"", "enis = \"every\""),
        "/etc/flowlogd.toml:46:8: security_group.enis: expected a list of ENI ids ([\"eni-1\", \"eni-2\"]) or \
         \"all\", got \"every\""
    );
    assert_eq!(
        error_with("[\"eni-a\", \"eni-b\"]", "[]"),
        "/etc/flowlogd.toml:33:8: security_group.enis: expected a list of ENI ids ([\"eni-1\", \"eni-2\"]) or \
         \"all\"; an empty list applies the group to nothing"
    );
    assert_eq!(
        error_with("id = \"sg-web\"\nenis", "id = \"sg-web\"\nnics"),
        "/etc/flowlogd.toml:33:1: security_group.nics: unknown field `nics`, expected one of `id`, `enis`, `rule`"
    );
}

#[test]
fn rule_mistakes() {
    let cases = [
        ("id = \"no-icmp6\"", "id = \"allow-ssh\"", "ok: rule ids are per group"),
        (
            "direction = \"ingress\"",
            "direction = \"in\"",
            "36:13: security_group.rule.direction: expected \"ingress\" or \"egress\", got \"in\"",
        ),
        (
            "policy = \"accept\"",
            "policy = \"allow\"",
            "37:10: security_group.rule.policy: expected \"accept\" or \"drop\", got \"allow\"",
        ),
        (
            "priority = 1\n",
            "priority = 0\n",
            "38:12: security_group.rule.priority: expected an integer in 1..=100, got 0",
        ),
        (
            "priority = 100",
            "priority = 101",
            "51:12: security_group.rule.priority: expected an integer in 1..=100, got 101",
        ),
        (
            "protocol = \"tcp\"",
            "protocol = \"sctp\"",
            "39:12: security_group.rule.protocol: expected \"tcp\", \"udp\", \"icmp\", \"icmpv6\" or \"all\", got \"sctp\"",
        ),
        (
            "port_range = \"22/22\"",
            "port_range = \"22\"",
            "40:14: security_group.rule.port_range: expected \"lo/hi\" with ports in 1..=65535 for tcp (\"22/22\", \
             \"1/65535\"), got \"22\"",
        ),
        (
            "port_range = \"22/22\"",
            "port_range = \"0/22\"",
            "40:14: security_group.rule.port_range: expected \"lo/hi\" with ports in 1..=65535 for tcp (\"22/22\", \
             \"1/65535\"), got \"0/22\"",
        ),
        (
            "port_range = \"22/22\"",
            "port_range = \"1/65536\"",
            "40:14: security_group.rule.port_range: expected \"lo/hi\" with ports in 1..=65535 for tcp (\"22/22\", \
             \"1/65535\"), got \"1/65536\"",
        ),
        (
            "port_range = \"22/22\"",
            "port_range = \"-1/-1\"",
            "40:14: security_group.rule.port_range: expected \"lo/hi\" with ports in 1..=65535 for tcp (\"22/22\", \
             \"1/65535\"), got \"-1/-1\"",
        ),
        (
            "port_range = \"22/22\"",
            "port_range = \"80/22\"",
            "40:14: security_group.rule.port_range: \"80/22\" is reversed: the first port must not be above the \
             second (\"22/80\")",
        ),
        (
            "port_range = \"-1/-1\"",
            "port_range = \"1/65535\"",
            "53:14: security_group.rule.port_range: protocol \"icmpv6\" has no ports: expected \"-1/-1\", got \
             \"1/65535\"",
        ),
        (
            "cidr = \"10.0.0.0/8\"",
            "cidr = \"10.0.0.0\"",
            "41:8: security_group.rule.cidr: expected an IPv4 or IPv6 network like \"10.0.0.0/8\", \"0.0.0.0/0\" or \
             \"2001:db8::/32\" (one address: \"10.0.0.1/32\"), got \"10.0.0.0\"",
        ),
        (
            "cidr = \"10.0.0.0/8\"",
            "cidr = \"10.1.2.3/8\"",
            "41:8: security_group.rule.cidr: \"10.1.2.3/8\" has host bits set (bits after the prefix length); write \
             \"10.0.0.0/8\" for the network or \"10.1.2.3/32\" for the one address",
        ),
        (
            "cidr = \"::/0\"",
            "cidr = \"2001:db8::1/32\"",
            "54:8: security_group.rule.cidr: \"2001:db8::1/32\" has host bits set (bits after the prefix length); \
             write \"2001:db8::/32\" for the network or \"2001:db8::1/128\" for the one address",
        ),
        (
            "cidr = \"::/0\"",
            "cidr = \"0.0.0.0/0\"",
            "52:12: security_group.rule.protocol: icmpv6 is IPv6's; for an IPv4 cidr use \"icmp\"",
        ),
        (
            "cidr = \"10.0.0.0/8\"",
            "cidr = \"10.0.0.0/8\"\nports = \"1/2\"",
            "42:1: security_group.rule.ports: unknown field `ports`, expected one of `id`, `direction`, `policy`, \
             `priority`, `protocol`, `port_range`, `cidr`, `description`",
        ),
        (
            "id = \"allow-ssh\"",
            "id = \"allow ssh\"",
            "35:6: security_group.rule.id: got \"allow ssh\": ' ' at byte 5: ids are printable ASCII without \
             whitespace (they are fields of text records and log lines)",
        ),
    ];
    for (from, to, want) in cases {
        match config(&GROUPS.replacen(from, to, 1)) {
            Ok(_) => assert!(want.starts_with("ok"), "accepted {to:?}"),
            Err(e) => assert_eq!(e, format!("/etc/flowlogd.toml:{want}"), "{to:?}"),
        }
    }
}

#[test]
fn duplicate_rule_id_in_a_group() {
    let twice = GROUPS.replace(
        "description = \"ssh from the VPC\"\n",
        "description = \"ssh from the VPC\"\n[[security_group.rule]]\nid = \"allow-ssh\"\ndirection = \"ingress\"\n\
         policy = \"drop\"\npriority = 2\nprotocol = \"all\"\nport_range = \"-1/-1\"\ncidr = \"0.0.0.0/0\"\n",
    );
    assert_eq!(
        config(&twice).unwrap_err(),
        "/etc/flowlogd.toml:44:6: security_group.rule.id: duplicate rule id \"allow-ssh\" in security group \"sg-web\""
    );
}

#[test]
fn icmp_with_an_ipv6_cidr() {
    let v6 = GROUPS.replace("protocol = \"icmpv6\"", "protocol = \"icmp\"");
    assert_eq!(
        config(&v6).unwrap_err(),
        "/etc/flowlogd.toml:52:12: security_group.rule.protocol: icmp is IPv4's; for an IPv6 cidr use \"icmpv6\""
    );
}

/// Two rule names with one mark: found by search for FNV-1a's low 31
/// bits, pinned here.
#[test]
fn rules_whose_marks_collide() {
    let (a, b) = colliding_rule_ids();
    let src = GROUPS
        .replacen("id = \"allow-ssh\"", &format!("id = \"{a}\""), 1)
        .replacen("id = \"sg-all\"", "id = \"sg-web2\"", 1)
        .replacen("id = \"no-icmp6\"", &format!("id = \"{b}\""), 1)
        .replacen("id = \"sg-web2\"", "id = \"sg-web\"", 1);
    // Same group id twice would be refused first: use one group.
    let src = src.replacen(
        "[[security_group]]\nid = \"sg-web\"\nenis = \"all\"\n",
        "",
        1,
    );
    let err = config(&src).unwrap_err();
    assert_eq!(
        err,
        format!(
            "/etc/flowlogd.toml:45:6: security_group.rule.id: rule \"sg-web:{b}\" gets the same conntrack mark as \
             rule \"sg-web:{a}\" (line 35), so records could not tell them apart; rename one of them"
        )
    );
}

/// Two rule ids whose names in group `sg-web` share a mark.
fn colliding_rule_ids() -> (String, String) {
    use crate::security_groups::mark_of;
    let mut seen = std::collections::HashMap::new();
    // 2^31 marks: a collision is expected after about 55 000 names
    // (birthday bound); bounded well above that.
    for i in 0..2_000_000u32 {
        let id = format!("r{i}");
        if let Some(first) = seen.insert(mark_of(&format!("sg-web:{id}")), id.clone()) {
            return (first, id);
        }
    }
    panic!("no collision among 2M names");
}

/// The commented example in the shipped config, uncommented, is valid.
#[test]
fn shipped_sample_security_group_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/flowlogd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("# [enforcement]").expect("the example");
    let example: String = text[at..]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
        .map(|l| format!("{l}\n"))
        .collect();
    let src = format!("{}{example}", &text[..at]);
    let c = parse(&path, &src).unwrap_or_else(|e| panic!("{e}\n{example}"));
    assert_eq!(c.security_groups.len(), 1);
    assert_eq!(c.security_groups[0].rules.len(), 2);
    assert_eq!(c.enforcement, EnforcementConfig::default());
}
