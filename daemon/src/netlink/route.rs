//! rtnetlink: interfaces and their addresses, as `model::RouteEvent`.
//!
//! Headers and the few attributes we need are decoded with
//! netlink-packet-route's types; the other attributes of a link message
//! (stats, link info, af_spec, ...) are skipped unparsed, so a kernel that
//! adds or changes one of those cannot make us drop an interface.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::unix::io::{AsRawFd, RawFd};
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, Parseable, ParseableParametrized,
    NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeader, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkHeader, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use super::socket::{DumpLimits, Messages, NetlinkSocket, SocketOptions};
use super::stats::{DrainStats, DumpStats};
use crate::model::{IfIndex, Interface, InterfaceAddress, MacAddr, RouteEvent};

// include/uapi/linux/rtnetlink.h
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV6_IFADDR: u32 = 9;

// include/uapi/linux/if_link.h, if_addr.h
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

// struct ifinfomsg and struct ifaddrmsg sizes.
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;

/// Datagrams per `drain` call; rtnetlink notifications are rare.
const DRAIN_BUDGET: usize = 4096;
const DUMP_LIMITS: DumpLimits = DumpLimits {
    time_limit: Duration::from_secs(30),
    max_messages: 1 << 20,
};
const DUMP_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Why an rtnetlink message was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteParseError {
    Header,
    Attribute(String),
    Missing(&'static str),
}

impl fmt::Display for RouteParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteParseError::Header => write!(f, "malformed netlink header"),
            RouteParseError::Attribute(e) => write!(f, "malformed rtnetlink message: {e}"),
            RouteParseError::Missing(name) => write!(f, "rtnetlink message without {name}"),
        }
    }
}

impl std::error::Error for RouteParseError {}

impl From<netlink_packet_core::DecodeError> for RouteParseError {
    fn from(e: netlink_packet_core::DecodeError) -> Self {
        RouteParseError::Attribute(e.to_string())
    }
}

/// Subscribed rtnetlink socket for link and address changes (non-blocking;
/// register its fd with the event loop). Needs no privilege.
#[derive(Debug)]
pub struct RouteWatcher {
    socket: NetlinkSocket,
    seq: u32,
}

impl RouteWatcher {
    /// Join RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR and RTNLGRP_IPV6_IFADDR.
    /// Open it before `dump_all` so that no change falls between the two.
    ///
    /// # Errors
    ///
    /// Socket errors.
    pub fn open(receive_buffer_bytes: usize) -> io::Result<Self> {
        let options = SocketOptions {
            groups: vec![RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR],
            receive_buffer_bytes: Some(receive_buffer_bytes),
            ..SocketOptions::default()
        };
        Ok(RouteWatcher {
            socket: NetlinkSocket::open(NETLINK_ROUTE, &options)?,
            seq: 0,
        })
    }

    /// Read every queued notification (up to a budget, see
    /// `DrainStats::more_pending`) and hand each event to `on_event`.
    ///
    /// RTM_NEWLINK is sent for every change of a link (flags, MTU, ...), so
    /// `LinkAdded` repeats for known interfaces: treat it as an upsert.
    pub fn drain(&mut self, mut on_event: impl FnMut(RouteEvent)) -> DrainStats {
        self.socket
            .drain_messages("rtnetlink events", DRAIN_BUDGET, |message, stats| {
                if matches!(
                    message.message_type,
                    NLMSG_NOOP | NLMSG_DONE | NLMSG_OVERRUN | NLMSG_ERROR
                ) {
                    return;
                }
                match parse_route_message(message.bytes) {
                    Ok(Some(event)) => {
                        stats.entries += 1;
                        on_event(event);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        log::debug!("rtnetlink events: skipped message: {e}");
                        stats.parse_errors += 1;
                    }
                }
            })
    }

    /// Dump every link, then every address (all families), as `LinkAdded`
    /// and `AddressAdded` events, over a separate blocking socket.
    ///
    /// # Errors
    ///
    /// Socket errors, an error reply, or `TimedOut` past the dump limits.
    pub fn dump_all(&mut self, mut on_event: impl FnMut(RouteEvent)) -> io::Result<DumpStats> {
        let mut socket = NetlinkSocket::open(
            NETLINK_ROUTE,
            &SocketOptions {
                blocking: true,
                receive_timeout: Some(DUMP_READ_TIMEOUT),
                ..SocketOptions::default()
            },
        )?;
        let mut stats = DumpStats::default();
        let requests = [
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        ];
        for request in requests {
            self.seq = self.seq.wrapping_add(1);
            let bytes = dump_request(request, self.seq);
            let progress =
                socket.dump(
                    &bytes,
                    self.seq,
                    DUMP_LIMITS,
                    |bytes| match parse_route_message(bytes) {
                        Ok(Some(event)) => {
                            stats.entries += 1;
                            on_event(event);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            log::debug!("rtnetlink dump: skipped message: {e}");
                            stats.parse_errors += 1;
                        }
                    },
                )?;
            stats.messages += progress.messages;
            stats.interrupted |= progress.interrupted;
        }
        Ok(stats)
    }
}

impl AsRawFd for RouteWatcher {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

fn dump_request(request: RouteNetlinkMessage, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::from(request));
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    buf
}

/// Parse one rtnetlink message (header included). `Ok(None)` for messages
/// that are not about interfaces or addresses we track: other types, and
/// link messages of a family other than AF_UNSPEC (the bridge sends
/// AF_BRIDGE RTM_NEWLINK/RTM_DELLINK on RTNLGRP_LINK when a port joins or
/// leaves it; the interface itself is not removed then).
///
/// # Errors
///
/// A message of a handled type that is truncated or lacks its name or
/// address. Never panics.
pub fn parse_route_message(bytes: &[u8]) -> Result<Option<RouteEvent>, RouteParseError> {
    let message = match Messages::new(bytes).next() {
        Some(Ok(message)) => message,
        _ => return Err(RouteParseError::Header),
    };
    let payload = message.payload;
    match message.message_type {
        RTM_NEWLINK | RTM_DELLINK => {
            let header = LinkHeader::parse(payload)?;
            if header.interface_family != AddressFamily::Unspec {
                return Ok(None);
            }
            if message.message_type == RTM_DELLINK {
                return Ok(Some(RouteEvent::LinkRemoved {
                    index: IfIndex(header.index),
                }));
            }
            let attributes = payload.get(IFINFOMSG_LEN..).unwrap_or(&[]);
            let mut name = None;
            let mut mac = None;
            for nla in NlasIterator::new(attributes) {
                let nla = nla?;
                if !matches!(nla.kind(), IFLA_IFNAME | IFLA_ADDRESS) {
                    continue;
                }
                match LinkAttribute::parse_with_param(&nla, header.interface_family)? {
                    LinkAttribute::IfName(n) => name = Some(n),
                    // Only Ethernet-like hardware addresses are MACs: tunnels
                    // report 4 or 16 bytes, loopback 6 zero bytes.
                    LinkAttribute::Address(a) => {
                        mac = <[u8; 6]>::try_from(a.as_slice())
                            .ok()
                            .map(MacAddr)
                            .filter(|m| !m.is_zero())
                    }
                    _ => {}
                }
            }
            Ok(Some(RouteEvent::LinkAdded(Interface {
                index: IfIndex(header.index),
                name: name.ok_or(RouteParseError::Missing("IFLA_IFNAME"))?,
                mac,
                is_loopback: header.flags.contains(LinkFlags::Loopback),
            })))
        }
        RTM_NEWADDR | RTM_DELADDR => {
            let header = AddressHeader::parse(payload)?;
            let attributes = payload.get(IFADDRMSG_LEN..).unwrap_or(&[]);
            let mut address = None;
            let mut local = None;
            for nla in NlasIterator::new(attributes) {
                let nla = nla?;
                if !matches!(nla.kind(), IFA_ADDRESS | IFA_LOCAL) {
                    continue;
                }
                match AddressAttribute::parse(&nla)? {
                    AddressAttribute::Address(a) => address = Some(a),
                    AddressAttribute::Local(a) => local = Some(a),
                    _ => {}
                }
            }
            // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the
            // peer on point-to-point links and equals IFA_LOCAL otherwise.
            // IPv6 sends IFA_LOCAL only when there is a peer.
            let addr: IpAddr = local
                .or(address)
                .ok_or(RouteParseError::Missing("IFA_LOCAL/IFA_ADDRESS"))?;
            let address = InterfaceAddress {
                index: IfIndex(header.index),
                addr,
                prefix_len: header.prefix_len,
            };
            Ok(Some(if message.message_type == RTM_NEWADDR {
                RouteEvent::AddressAdded(address)
            } else {
                RouteEvent::AddressRemoved(address)
            }))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::test_support::load_fixture;

    // The fixtures were captured on Linux 6.18.44 by
    // tests/fixtures/netlink/capture.sh in namespace flct-cap-route: `lo`,
    // then `ip link add veth-r0 address 02:99:00:00:00:01 type veth peer name
    // veth-r1 address 02:99:00:00:00:02`, 10.99.1.1/24 and fd99:1::1/64 on
    // veth-r0, both up; a link and an address dump; then the IPv4 address
    // and the link deleted. ip-show.txt has `ip -d link show` and
    // `ip addr show` from before the dump: lo is 1, veth-r1 2, veth-r0 3.

    fn events_of(file: &str) -> Vec<RouteEvent> {
        load_fixture(file)
            .iter()
            .filter_map(|(label, bytes)| {
                parse_route_message(bytes).unwrap_or_else(|e| panic!("{file} {label}: {e}"))
            })
            .collect()
    }

    fn addr(index: u32, addr: &str, prefix_len: u8) -> InterfaceAddress {
        InterfaceAddress {
            index: IfIndex(index),
            addr: addr.parse().unwrap(),
            prefix_len,
        }
    }

    #[test]
    fn link_dump_gives_names_macs_and_loopback() {
        let links: Vec<Interface> = events_of("route_dump.hex")
            .into_iter()
            .filter_map(|e| match e {
                RouteEvent::LinkAdded(i) => Some(i),
                _ => None,
            })
            .collect();
        assert_eq!(
            links,
            vec![
                Interface {
                    index: IfIndex(1),
                    name: "lo".into(),
                    mac: None,
                    is_loopback: true
                },
                Interface {
                    index: IfIndex(2),
                    name: "veth-r1".into(),
                    mac: Some(MacAddr([0x02, 0x99, 0, 0, 0, 0x02])),
                    is_loopback: false,
                },
                Interface {
                    index: IfIndex(3),
                    name: "veth-r0".into(),
                    mac: Some(MacAddr([0x02, 0x99, 0, 0, 0, 0x01])),
                    is_loopback: false,
                },
            ]
        );
    }

    #[test]
    fn address_dump_gives_every_address_with_prefix() {
        let addresses: Vec<InterfaceAddress> = events_of("route_dump.hex")
            .into_iter()
            .filter_map(|e| match e {
                RouteEvent::AddressAdded(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(
            addresses,
            vec![
                addr(1, "127.0.0.1", 8),
                addr(3, "10.99.1.1", 24),
                addr(1, "::1", 128),
                addr(2, "fe80::99:ff:fe00:2", 64),
                addr(3, "fd99:1::1", 64),
                addr(3, "fe80::99:ff:fe00:1", 64),
            ]
        );
    }

    #[test]
    fn notifications_add_and_remove() {
        let events = events_of("route_events.hex");
        let position = |wanted: &RouteEvent| {
            events
                .iter()
                .position(|e| e == wanted)
                .unwrap_or_else(|| panic!("no {wanted:?} in {events:?}"))
        };
        let added = position(&RouteEvent::AddressAdded(addr(3, "10.99.1.1", 24)));
        let removed = position(&RouteEvent::AddressRemoved(addr(3, "10.99.1.1", 24)));
        position(&RouteEvent::AddressAdded(addr(3, "fd99:1::1", 64)));
        position(&RouteEvent::AddressRemoved(addr(3, "fd99:1::1", 64)));
        let gone = position(&RouteEvent::LinkRemoved { index: IfIndex(3) });
        position(&RouteEvent::LinkRemoved { index: IfIndex(2) });
        assert!(added < removed && removed < gone);
        // Every change of veth-r0 (creation, up, carrier) is an RTM_NEWLINK.
        let newlinks = events
            .iter()
            .filter(|e| matches!(e, RouteEvent::LinkAdded(i) if i.name == "veth-r0"))
            .count();
        assert!(newlinks >= 2, "{events:?}");
    }

    #[test]
    fn bridge_family_link_messages_are_ignored() {
        let (_, mut bytes) = load_fixture("route_dump.hex")
            .into_iter()
            .find(|(label, _)| label == "newlink-veth-r0")
            .unwrap();
        // ifi_family = AF_BRIDGE (7), as a bridge port notification has.
        bytes[16] = 7;
        assert_eq!(parse_route_message(&bytes), Ok(None));
        // The same for RTM_DELLINK: a port leaving a bridge is no removal.
        bytes[4..6].copy_from_slice(&RTM_DELLINK.to_ne_bytes());
        assert_eq!(parse_route_message(&bytes), Ok(None));
    }

    #[test]
    fn truncated_and_corrupted_route_messages_do_not_panic() {
        for (label, bytes) in load_fixture("route_events.hex")
            .into_iter()
            .chain(load_fixture("route_dump.hex"))
        {
            for len in 0..bytes.len() {
                assert!(
                    parse_route_message(&bytes[..len]).is_err(),
                    "{label} cut at {len}"
                );
                let cut_len = len.max(16);
                let mut cut = bytes[..cut_len].to_vec();
                cut[..4].copy_from_slice(&(cut_len as u32).to_ne_bytes());
                let _ = parse_route_message(&cut);
            }
            for i in 0..bytes.len() {
                let mut corrupt = bytes.clone();
                corrupt[i] ^= 0xff;
                let _ = parse_route_message(&corrupt);
            }
        }
    }
}
