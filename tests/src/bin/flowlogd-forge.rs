//! Forges netlink messages the way an attacker with CAP_NET_ADMIN in the
//! daemon's namespace could, for the tests of issue #13 (netlink only from
//! the kernel). Each forgery is sent every way the kernel might deliver it
//! to the daemon: multicast to the group the daemon listens to, and unicast
//! to each of the daemon's sockets of that family (found by the daemon's
//! pid in /proc/net/netlink). One line per attempt on stdout, then `done`.
//!
//! Usage:
//!   flowlogd-forge ct-destroy <daemon pid> <src v4> <dst v4> <sport> <dport> <packets>
//!   flowlogd-forge dellink <daemon pid> <ifindex>
//!
//! Every message is sent without NLM_F_REQUEST: the kernel also receives
//! a multicast sent from user space (as a unicast to port 0) and ignores a
//! message that is not a request, so nothing is really deleted.

use std::collections::HashSet;
use std::io;
use std::net::Ipv4Addr;

use flowlogd_tests::raw_netlink::{message, nested, nla, udp4_tuple, RawNetlink};

const NETLINK_ROUTE: i32 = 0;
const NETLINK_NETFILTER: i32 = 12;
// include/uapi/linux/rtnetlink.h
const RTNLGRP_LINK: u32 = 1;
const RTM_DELLINK: u16 = 17;
// include/uapi/linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
// IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED
const STATUS: u32 = 0x8 | 0x2 | 0x4;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).unwrap_or_else(|| usage()).as_str();
    match arg(0) {
        "ct-destroy" => {
            let pid: u32 = arg(1).parse().unwrap_or_else(|_| usage());
            let src: Ipv4Addr = arg(2).parse().unwrap_or_else(|_| usage());
            let dst: Ipv4Addr = arg(3).parse().unwrap_or_else(|_| usage());
            let sport: u16 = arg(4).parse().unwrap_or_else(|_| usage());
            let dport: u16 = arg(5).parse().unwrap_or_else(|_| usage());
            let packets: u64 = arg(6).parse().unwrap_or_else(|_| usage());
            let message = ct_destroy(src, dst, sport, dport, packets);
            forge(NETLINK_NETFILTER, NFNLGRP_CONNTRACK_DESTROY, pid, &message);
        }
        "dellink" => {
            let pid: u32 = arg(1).parse().unwrap_or_else(|_| usage());
            let index: i32 = arg(2).parse().unwrap_or_else(|_| usage());
            forge(NETLINK_ROUTE, RTNLGRP_LINK, pid, &dellink(index));
        }
        _ => usage(),
    }
    println!("done");
}

fn usage() -> ! {
    eprintln!(
        "usage: flowlogd-forge ct-destroy <pid> <src> <dst> <sport> <dport> <packets> | dellink <pid> <ifindex>"
    );
    std::process::exit(2)
}

/// Sends `message` to `group` and to each of `pid`'s sockets of
/// `protocol`, printing what each attempt gave.
fn forge(protocol: i32, group: u32, pid: u32, message: &[u8]) {
    let socket = RawNetlink::open(protocol).expect("netlink socket");
    match socket.send_to(message, 0, 1 << (group - 1)) {
        Ok(()) => println!("multicast group {group}: sent"),
        Err(e) => println!("multicast group {group}: {e}"),
    }
    let ports = ports_of(pid, protocol).expect("the daemon's netlink sockets");
    for port in &ports {
        match socket.send_to(message, *port, 0) {
            Ok(()) => println!("unicast port {port}: sent"),
            Err(e) => println!("unicast port {port}: {e}"),
        }
    }
    if ports.is_empty() {
        println!("unicast: no socket of protocol {protocol} found for pid {pid}");
    }
}

/// The port ids of `pid`'s netlink sockets of `protocol`: its socket
/// inodes matched against /proc/net/netlink (of this namespace).
fn ports_of(pid: u32, protocol: i32) -> io::Result<Vec<u32>> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
    let table = std::fs::read_to_string("/proc/net/netlink")?;
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (eth, port, inode) = (f.get(1)?, f.get(2)?, f.get(9)?);
            (eth.parse::<i32>().ok()? == protocol && inodes.contains(*inode))
                .then(|| port.parse().ok())
                .flatten()
        })
        .collect())
}

fn counters(kind: u16, packets: u64) -> Vec<u8> {
    let mut c = nla(CTA_COUNTERS_PACKETS, &packets.to_be_bytes());
    c.extend(nla(CTA_COUNTERS_BYTES, &(packets * 100).to_be_bytes()));
    nested(kind, &c)
}

/// A ctnetlink DESTROY event as the kernel sends it, of a UDP flow
/// `src:sport -> dst:dport` that carried `packets` packets each way.
fn ct_destroy(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, packets: u64) -> Vec<u8> {
    let mut body = vec![libc::AF_INET as u8, 0, 0, 0]; // nfgenmsg
    body.extend(udp4_tuple(CTA_TUPLE_ORIG, src, dst, sport, dport));
    body.extend(udp4_tuple(CTA_TUPLE_REPLY, dst, src, dport, sport));
    body.extend(nla(CTA_STATUS, &STATUS.to_be_bytes()));
    body.extend(counters(CTA_COUNTERS_ORIG, packets));
    body.extend(counters(CTA_COUNTERS_REPLY, packets));
    body.extend(nla(CTA_ID, &0x5eed_u32.to_be_bytes()));
    // No flags: not a request (see the top of this file).
    message(
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
        0,
        0,
        &body,
    )
}

/// An RTM_DELLINK notification for interface `index`.
fn dellink(index: i32) -> Vec<u8> {
    // struct ifinfomsg: family, pad, type, index, flags, change
    let mut body = vec![libc::AF_UNSPEC as u8, 0];
    body.extend_from_slice(&0u16.to_ne_bytes());
    body.extend_from_slice(&index.to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes());
    message(RTM_DELLINK, 0, 0, &body)
}
