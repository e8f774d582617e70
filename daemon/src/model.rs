//! Plain structs that the netlink layer produces. Nothing from the netlink
//! crates appears here, so everything past `netlink/` (the ENI registry, the
//! flow table) can be built and tested without a kernel.

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

/// A network interface as rtnetlink reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub is_loopback: bool,
}

/// An address of an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InterfaceAddress {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// What rtnetlink told us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteEvent {
    LinkAdded(Interface),
    LinkRemoved { index: u32 },
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
    pub indev: Option<u32>,
    /// Interface it was leaving by (output, forward, postrouting hooks).
    pub outdev: Option<u32>,
    /// The packet from its network header, cut at the copy range.
    pub payload: &'a [u8],
}
