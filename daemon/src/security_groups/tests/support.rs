//! Policies from config text, and packets, for the tests.

use std::net::IpAddr;
use std::path::Path;

use flowlogd_plugin_api::Direction;

use crate::config::parse;
use crate::security_groups::{FirstPacket, Policy};

const ENIS: &str = r#"
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

[[eni]]
id = "eni-c"
interface = "eth2"
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

/// A rule as one line: `id direction policy priority protocol ports cidr`.
fn rule(line: &str) -> String {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.len(), 7, "{line}");
    format!(
        "[[security_group.rule]]\nid = \"{}\"\ndirection = \"{}\"\npolicy = \"{}\"\npriority = {}\n\
         protocol = \"{}\"\nport_range = \"{}\"\ncidr = \"{}\"\n",
        f[0], f[1], f[2], f[3], f[4], f[5], f[6]
    )
}

/// A group on `enis` (a TOML value) with `rules`.
pub(super) fn group(id: &str, enis: &str, rules: &[&str]) -> String {
    let mut s = format!("[[security_group]]\nid = \"{id}\"\nenis = {enis}\n");
    for r in rules {
        s.push_str(&rule(r));
    }
    s
}

pub(super) fn policy(groups: &[String]) -> Policy {
    let src = format!("{ENIS}{}", groups.concat());
    let cfg = parse(Path::new("/t.toml"), &src).unwrap_or_else(|e| panic!("{e}"));
    Policy::from_config(&cfg)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A packet arriving from `peer` to a local address of its family.
pub(super) fn ingress(protocol: u8, peer: &str, dst_port: u16) -> FirstPacket {
    let peer = ip(peer);
    let local = if peer.is_ipv4() {
        ip("172.16.0.10")
    } else {
        ip("fd00::10")
    };
    FirstPacket {
        direction: Direction::In,
        protocol,
        src: peer,
        dst: local,
        src_port: 40000,
        dst_port,
    }
}

/// A packet leaving for `peer`.
pub(super) fn egress(protocol: u8, peer: &str, dst_port: u16) -> FirstPacket {
    let p = ingress(protocol, peer, dst_port);
    FirstPacket {
        direction: Direction::Out,
        src: p.dst,
        dst: p.src,
        ..p
    }
}
