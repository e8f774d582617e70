//! `flowlogd check-config` with security groups (issue #16): the effective
//! rule order of each ENI as the decisions walk it, and a located error
//! for a mistaken rule. No root needed, no traffic: the enforcement itself
//! is tested elsewhere.

use std::path::Path;

use flowlogd_tests::*;

const GROUPS: &str = r#"
[enforcement]
queue = 321
on_daemon_down = "drop"

[[security_group]]
id = "sg-web"
enis = ["eni-fl21p-a", "eni-fl21p-b"]
[[security_group.rule]]
id = "http"
direction = "ingress"
policy = "accept"
priority = 10
protocol = "tcp"
port_range = "80/80"
cidr = "0.0.0.0/0"
[[security_group.rule]]
id = "no-smtp-out"
direction = "egress"
policy = "drop"
priority = 1
protocol = "tcp"
port_range = "25/25"
cidr = "0.0.0.0/0"

[[security_group]]
id = "sg-ops"
enis = ["eni-fl21p-a"]
[[security_group.rule]]
id = "ssh"
direction = "ingress"
policy = "accept"
priority = 10
protocol = "tcp"
port_range = "22/22"
cidr = "10.0.0.0/8"
[[security_group.rule]]
id = "block-bad"
direction = "ingress"
policy = "drop"
priority = 10
protocol = "all"
port_range = "-1/-1"
cidr = "2001:db8::/32"
"#;

fn write_config(tmp: &TempDir, groups: &str) -> std::path::PathBuf {
    let plugins = plugin_dir(tmp);
    let cfg = tmp.join("flowlogd.toml");
    let text = config_with(
        &plugins,
        &format!(
            "{}{}{}[[flow_log]]\nname = \"all\"\nresource_type = \"vpc\"\nresource_id = \"vpc-fl21p\"\n\
             sinks = [\"local\"]\n\n[sinks.local]\nplugin = \"file\"\npath = \"{}\"\n{groups}",
            eni_toml("eni-fl21p-a", "fl21p-a", "vpc-fl21p"),
            eni_toml("eni-fl21p-b", "fl21p-b", "vpc-fl21p"),
            eni_toml("eni-fl21p-c", "fl21p-c", "vpc-fl21p"),
            tmp.join("flow.log").display()
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// The lines from `security groups:` up to the next section.
fn security_group_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("security groups:"))
        .take_while(|l| *l != "sinks:")
        .collect()
}

#[test]
fn check_config_prints_the_effective_rule_order_per_eni() {
    let tmp = TempDir::new("fl21p-sg-check");
    let cfg = write_config(&tmp, GROUPS);
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        security_group_lines(&stdout),
        [
            "security groups: 2 enforced through NFQUEUE 321; while the daemon is down new connections are dropped \
             (fail closed)",
            "  eni-fl21p-a (sg-web, sg-ops), rules in the order they are tried:",
            "    prio policy direction protocol ports cidr rule",
            "      1 drop   egress  tcp    25/25       0.0.0.0/0          sg-web:no-smtp-out",
            "     10 drop   ingress all    -1/-1       2001:db8::/32      sg-ops:block-bad",
            "     10 accept ingress tcp    80/80       0.0.0.0/0          sg-web:http",
            "     10 accept ingress tcp    22/22       10.0.0.0/8         sg-ops:ssh",
            "      - drop   ingress all    -1/-1       any                default",
            "      - accept egress  all    -1/-1       any                default",
            "  eni-fl21p-b (sg-web), rules in the order they are tried:",
            "    prio policy direction protocol ports cidr rule",
            "      1 drop   egress  tcp    25/25       0.0.0.0/0          sg-web:no-smtp-out",
            "     10 accept ingress tcp    80/80       0.0.0.0/0          sg-web:http",
            "      - drop   ingress all    -1/-1       any                default",
            "      - accept egress  all    -1/-1       any                default",
            "  eni-fl21p-c: in no security group, not enforced",
        ],
        "{}",
        text(&o)
    );
    // With an "all" group, every ENI is covered, and the ENIs learnt later
    // get its rules.
    let all = GROUPS.replacen("enis = [\"eni-fl21p-a\"]", "enis = \"all\"", 1);
    let cfg = write_config(&tmp, &all);
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines = security_group_lines(&stdout);
    assert!(
        lines.contains(&"  eni-fl21p-c (sg-ops), rules in the order they are tried:"),
        "{}",
        text(&o)
    );
    let tail: Vec<&str> = lines
        .iter()
        .copied()
        .skip_while(|l| !l.starts_with("  any other ENI"))
        .collect();
    assert_eq!(
        tail,
        [
            "  any other ENI, e.g. one the metadata service reports later (sg-ops):",
            "    prio policy direction protocol ports cidr rule",
            "     10 drop   ingress all    -1/-1       2001:db8::/32      sg-ops:block-bad",
            "     10 accept ingress tcp    22/22       10.0.0.0/8         sg-ops:ssh",
            "      - drop   ingress all    -1/-1       any                default",
            "      - accept egress  all    -1/-1       any                default",
        ],
        "{}",
        text(&o)
    );
    // Without groups, it says nothing is decided.
    let cfg = write_config(&tmp, "");
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        security_group_lines(&stdout),
        ["security groups: none (no connection is decided by flowlogd)"],
        "{}",
        text(&o)
    );
}

#[test]
fn check_config_refuses_a_mistaken_rule_with_its_place() {
    let tmp = TempDir::new("fl21p-sg-refused");
    let cfg = write_config(
        &tmp,
        &GROUPS.replacen("cidr = \"10.0.0.0/8\"", "cidr = \"10.0.0.1/8\"", 1),
    );
    let o = flowlogd(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let line = line_starting_with(&cfg, "cidr = \"10.0.0.1/8\"");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim_end(),
        format!(
            "flowlogd: {}:{line}:8: security_group.rule.cidr: \"10.0.0.1/8\" has host bits set (bits after the \
             prefix length); write \"10.0.0.0/8\" for the network or \"10.0.0.1/32\" for the one address",
            Path::new(&cfg).display()
        ),
        "{}",
        text(&o)
    );
}
