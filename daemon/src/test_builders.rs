//! Builders of the values tests feed the daemon's stages: config tables,
//! rtnetlink events and conntrack messages. Test-only.

use std::net::IpAddr;

use flowlogd_plugin_api::EniIds;

use crate::config::{EniConfig, EniMatch, FlowLogConfig, ResourceType, TrafficFilter};
use crate::model::{
    ConntrackEntry, ConntrackKind, Counters, IfIndex, Interface, InterfaceAddress, MacAddr,
    RouteEvent, Tuple,
};

pub(crate) const MAC_B: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0x00, 0x00, 0x0b]);

pub(crate) fn eni(id: &str, vswitch: &str, matcher: EniMatch) -> EniConfig {
    EniConfig {
        ids: EniIds {
            eni_id: id.into(),
            vswitch_id: vswitch.into(),
            vpc_id: "vpc-1".into(),
            vm_id: "i-1".into(),
            account_id: "1234".into(),
        },
        matcher,
    }
}

pub(crate) fn flow_log(
    name: &str,
    resource_type: ResourceType,
    id: &str,
    traffic: TrafficFilter,
) -> FlowLogConfig {
    FlowLogConfig {
        name: name.into(),
        resource_type,
        resource_id: id.into(),
        traffic,
        sinks: vec!["file".into()],
    }
}

pub(crate) fn link(index: u32, name: &str, mac: Option<MacAddr>) -> RouteEvent {
    RouteEvent::LinkAdded(Interface {
        index: IfIndex(index),
        name: name.into(),
        mac,
        is_loopback: false,
    })
}

pub(crate) fn loopback(index: u32) -> RouteEvent {
    RouteEvent::LinkAdded(Interface {
        index: IfIndex(index),
        name: "lo".into(),
        mac: None,
        is_loopback: true,
    })
}

pub(crate) fn addr(index: u32, addr: &str) -> RouteEvent {
    RouteEvent::AddressAdded(InterfaceAddress {
        index: IfIndex(index),
        addr: addr.parse().unwrap(),
        prefix_len: 24,
    })
}

/// Builds conntrack messages for tests.
pub(crate) fn conn(
    id: u32,
    protocol: u8,
    src: &str,
    src_port: u16,
    dst: &str,
    dst_port: u16,
) -> ConntrackEntry {
    let src: IpAddr = src.parse().unwrap();
    let dst: IpAddr = dst.parse().unwrap();
    let orig = Tuple {
        src,
        dst,
        src_port,
        dst_port,
        protocol,
    };
    ConntrackEntry {
        kind: ConntrackKind::Dump,
        id,
        zone: 0,
        orig,
        reply: Tuple {
            src: dst,
            dst: src,
            src_port: dst_port,
            dst_port: src_port,
            protocol,
        },
        orig_counters: Some(Counters::default()),
        reply_counters: Some(Counters::default()),
        start_ns: None,
        stop_ns: None,
        mark: 0,
    }
}

pub(crate) trait EntryExt {
    fn kind(self, kind: ConntrackKind) -> Self;
    /// Cumulative counters: (orig packets, orig bytes), (reply packets, reply bytes).
    fn counted(self, orig: (u64, u64), reply: (u64, u64)) -> Self;
    /// CTA_TIMESTAMP start.
    fn started(self, ns: u64) -> Self;
    /// CTA_TIMESTAMP stop (DESTROY events carry it).
    fn stopped(self, ns: u64) -> Self;
    /// The reply tuple of a NATed connection: replies come from `src` and
    /// go to `dst`.
    fn replied(self, src: &str, src_port: u16, dst: &str, dst_port: u16) -> Self;
    /// CTA_MARK.
    fn marked(self, mark: u32) -> Self;
}

impl EntryExt for ConntrackEntry {
    fn kind(mut self, kind: ConntrackKind) -> Self {
        self.kind = kind;
        self
    }

    fn counted(mut self, orig: (u64, u64), reply: (u64, u64)) -> Self {
        self.orig_counters = Some(Counters {
            packets: orig.0,
            bytes: orig.1,
        });
        self.reply_counters = Some(Counters {
            packets: reply.0,
            bytes: reply.1,
        });
        self
    }

    fn started(mut self, ns: u64) -> Self {
        self.start_ns = Some(ns);
        self
    }

    fn stopped(mut self, ns: u64) -> Self {
        self.stop_ns = Some(ns);
        self
    }

    fn replied(mut self, src: &str, src_port: u16, dst: &str, dst_port: u16) -> Self {
        self.reply = Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port,
            dst_port,
            protocol: self.orig.protocol,
        };
        self
    }

    fn marked(mut self, mark: u32) -> Self {
        self.mark = mark;
        self
    }
}
