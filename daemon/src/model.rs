//! Plain structs that the netlink layer and the metadata worker produce,
//! and the small value types they share (`MacAddr`). Nothing from the
//! netlink crates or the HTTP client appears here, so everything past them
//! (the ENI registry, the flow table) can be built and tested without a
//! kernel or a metadata service.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// IANA protocol numbers the daemon treats specially.
pub mod ipproto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const DCCP: u8 = 33;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
    pub const UDPLITE: u8 = 136;
}

/// Whether `protocol`'s header starts with a source and a destination port
/// (conntrack keys these by port; records show 0 for the others).
pub fn has_ports(protocol: u8) -> bool {
    use ipproto::{DCCP, SCTP, TCP, UDP, UDPLITE};
    matches!(protocol, TCP | UDP | DCCP | SCTP | UDPLITE)
}

/// One direction's 5-tuple as conntrack reports it (CTA_TUPLE_ORIG or
/// CTA_TUPLE_REPLY). Ports are 0 for protocols without ports; for ICMP and
/// ICMPv6 `src_port` carries the echo id and `dst_port` type << 8 | code,
/// as conntrack keys them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
}

/// Cumulative packet and byte counters of one direction (CTA_COUNTERS_*).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// Why a conntrack message was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConntrackKind {
    /// IPCTNL_MSG_CT_NEW event for a new connection.
    New,
    /// IPCTNL_MSG_CT_NEW event for an existing connection (status change).
    Update,
    /// IPCTNL_MSG_CT_DELETE event: the connection is gone; final counters.
    Destroy,
    /// An entry of a table dump (IPCTNL_MSG_CT_GET reply).
    Dump,
}

/// One conntrack entry as an event or dump line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConntrackEntry {
    pub kind: ConntrackKind,
    /// CTA_ID: the kernel's id of the connection, unique while it lives.
    pub id: u32,
    /// CTA_ZONE, 0 if absent.
    pub zone: u16,
    pub orig: Tuple,
    pub reply: Tuple,
    /// CTA_COUNTERS_ORIG; `None` when accounting is off.
    pub orig_counters: Option<Counters>,
    /// CTA_COUNTERS_REPLY; `None` when accounting is off.
    pub reply_counters: Option<Counters>,
    /// CTA_TIMESTAMP start, nanoseconds since the epoch (timestamps on).
    pub start_ns: Option<u64>,
    /// CTA_TIMESTAMP stop (DESTROY only).
    pub stop_ns: Option<u64>,
    /// CTA_MARK, 0 if absent.
    pub mark: u32,
}

/// An Ethernet (MAC) address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `00:16:3e:12:34:56`, in either case.
    pub fn parse(s: &str) -> Option<MacAddr> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in mac.iter_mut() {
            let p = parts.next()?;
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            *byte = u8::from_str_radix(p, 16).ok()?;
        }
        parts.next().is_none().then_some(MacAddr(mac))
    }

    /// `00:00:00:00:00:00`: what interfaces without an Ethernet address
    /// (tunnels, WireGuard) report, if anything.
    pub fn is_zero(self) -> bool {
        self.0 == [0; 6]
    }
}

/// `00:16:3e:12:34:56`.
impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// An interface's index, as rtnetlink (ifi_index) and NFLOG
/// (NFULA_IFINDEX_*) report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfIndex(pub u32);

impl fmt::Display for IfIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A network interface as rtnetlink reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub index: IfIndex,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub is_loopback: bool,
}

/// An address of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InterfaceAddress {
    pub index: IfIndex,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// What rtnetlink told us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteEvent {
    LinkAdded(Interface),
    LinkRemoved { index: IfIndex },
    AddressAdded(InterfaceAddress),
    AddressRemoved(InterfaceAddress),
}

/// One packet a firewall rule logged to NFLOG before dropping it, borrowed
/// from the receive buffer (valid during the drain callback).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedPacket<'a> {
    /// The NFLOG group it was logged to.
    pub group: u16,
    /// The rule's log prefix, without the trailing NUL.
    pub prefix: &'a [u8],
    /// Interface the packet arrived on (input, forward, prerouting hooks).
    pub indev: Option<IfIndex>,
    /// Interface it was leaving by (output, forward, postrouting hooks).
    pub outdev: Option<IfIndex>,
    /// The hook that logged it (NFULA_PACKET_HDR); `None` if absent.
    pub hook: Option<PacketHook>,
    /// When it was received, Unix seconds (NFULA_TIMESTAMP: the kernel
    /// adds it on the receive hooks when packets are being timestamped).
    pub timestamp: Option<i64>,
    /// The packet from its network header, cut at the copy range.
    pub payload: &'a [u8],
    /// The packet's connection, on groups bound to attach it (the
    /// tcp-flags group); `None` elsewhere and for packets without one.
    pub conntrack: Option<LoggedConntrack>,
}

/// Where in the IP stack a packet was logged. The devices alone do not say:
/// a forwarded packet has its input device also in postrouting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketHook {
    PreRouting,
    LocalIn,
    Forward,
    LocalOut,
    PostRouting,
}

/// The conntrack entry NFLOG attached to a logged packet (NFULA_CT and
/// NFULA_CT_INFO): its tuples as the kernel keys them, which hold the
/// addresses before NAT that the packet's own headers may no longer show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoggedConntrack {
    pub orig: Tuple,
    pub reply: Tuple,
    /// The packet travels in the reply direction.
    pub is_reply: bool,
}

// What the ECS metadata service said, as the metadata worker hands it to
// the loop and the registry takes it in.

/// One ENI as the ECS metadata service describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcsEni {
    pub eni_id: String,
    pub vpc_id: String,
    pub vswitch_id: String,
}

/// Everything flowlogd needs from the metadata service at one time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EcsSnapshot {
    pub instance_id: String,
    pub account_id: String,
    /// By MAC.
    pub enis: BTreeMap<MacAddr, EcsEni>,
}

/// A successful fetch of the metadata service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotUpdate {
    pub snapshot: EcsSnapshot,
    /// The MACs the loop asked about that this fetch looked for.
    pub looked_for: Vec<MacAddr>,
    /// Of those, the ones not listed that the worker will look for again;
    /// the others are not ENIs as far as the service knows.
    pub retrying: Vec<MacAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_parse_in_either_case_and_print_in_lower_case() {
        let mac = MacAddr::parse("00:16:3E:0f:0A:0b").unwrap();
        assert_eq!(mac, MacAddr([0x00, 0x16, 0x3e, 0x0f, 0x0a, 0x0b]));
        assert_eq!(mac.to_string(), "00:16:3e:0f:0a:0b");
        assert_eq!(MacAddr::parse(&mac.to_string()), Some(mac));
        for bad in [
            "",
            "00:16:3e:0f:0a",
            "00:16:3e:0f:0a:0b:0c",
            "0:16:3e:0f:0a:0b",
            "00:16:3e:0f:0a:0g",
        ] {
            assert_eq!(MacAddr::parse(bad), None, "{bad}");
        }
        assert!(MacAddr::default().is_zero() && !mac.is_zero());
    }
}
