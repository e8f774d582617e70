//! The flow log record on both sides of the boundary: `FlowRecord`, the
//! owned form the daemon builds, and `RecordView`, the borrowed form a
//! plugin reads out of a `flowlogd_record`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::abi::*;

/// The record format version written in the `version` field.
pub const RECORD_VERSION: u32 = 1;

/// The metadata of one ENI, shared by every record of that ENI.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EniIds {
    pub eni_id: String,
    pub vswitch_id: String,
    pub vpc_id: String,
    pub vm_id: String,
    pub account_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogStatus {
    Ok,
    NoData,
    SkipData,
}

impl LogStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Ok => "OK",
            LogStatus::NoData => "NODATA",
            LogStatus::SkipData => "SKIPDATA",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Accept,
    Reject,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "ACCEPT",
            Action::Reject => "REJECT",
        }
    }
}

/// Fields beyond the design's 18 (ABI minor 1), each `None` where its
/// source did not give it. A sink writes them only when its field list
/// names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowExtras {
    /// `pkt-srcaddr`: the packet's source on the other side of NAT (equal
    /// to `srcaddr` without NAT).
    pub pkt_srcaddr: Option<IpAddr>,
    /// `pkt-dstaddr`: the packet's destination on the other side of NAT.
    pub pkt_dstaddr: Option<IpAddr>,
    /// `flow-start`: Unix seconds, the flow's first moment inside the window.
    pub flow_start: Option<i64>,
    /// `flow-end`: Unix seconds, the flow's last moment inside the window.
    pub flow_end: Option<i64>,
    /// `tcp-flags`: `TCP_FLAG_*` bits OR-ed over the window, when captured.
    pub tcp_flags: Option<u8>,
}

/// The 5-tuple, direction and counters of an `OK` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowFields {
    pub srcaddr: IpAddr,
    pub srcport: u16,
    pub dstaddr: IpAddr,
    pub dstport: u16,
    pub protocol: u8,
    pub direction: Direction,
    pub packets: u64,
    pub bytes: u64,
    pub action: Action,
    pub extras: FlowExtras,
}

/// One flow log record as the daemon produces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    pub eni: Arc<EniIds>,
    /// `None` for NODATA and SKIPDATA records, whose flow fields are `-`.
    pub flow: Option<FlowFields>,
    pub start: i64,
    pub end: i64,
    pub log_status: LogStatus,
    /// The firewall rule that dropped REJECT traffic, if known.
    pub rule: Option<Arc<str>>,
}

impl FlowRecord {
    /// The C form of this record, borrowing its strings: valid while `self`
    /// is alive and unchanged.
    pub fn to_ffi(&self) -> FfiRecord {
        let none = FfiAddr {
            family: ADDR_NONE,
            bytes: [0; 16],
        };
        let mut r = FfiRecord {
            version: RECORD_VERSION,
            vswitch_id: FfiStr::new(&self.eni.vswitch_id),
            vm_id: FfiStr::new(&self.eni.vm_id),
            vpc_id: FfiStr::new(&self.eni.vpc_id),
            account_id: FfiStr::new(&self.eni.account_id),
            eni_id: FfiStr::new(&self.eni.eni_id),
            srcaddr: none,
            srcport: 0,
            dstaddr: none,
            dstport: 0,
            protocol: 0,
            direction: DIRECTION_NONE,
            packets: 0,
            bytes: 0,
            start: self.start,
            end: self.end,
            log_status: match self.log_status {
                LogStatus::Ok => LOG_STATUS_OK,
                LogStatus::NoData => LOG_STATUS_NODATA,
                LogStatus::SkipData => LOG_STATUS_SKIPDATA,
            },
            action: ACTION_NONE,
            rule: self
                .rule
                .as_deref()
                .map(FfiStr::new)
                .unwrap_or(FfiStr::EMPTY),
            pkt_srcaddr: none,
            pkt_dstaddr: none,
            tcp_flags: 0,
            present: 0,
            flow_start: 0,
            flow_end: 0,
        };
        if let Some(f) = &self.flow {
            r.srcaddr = addr_to_ffi(f.srcaddr);
            r.srcport = f.srcport;
            r.dstaddr = addr_to_ffi(f.dstaddr);
            r.dstport = f.dstport;
            r.protocol = f.protocol;
            r.direction = match f.direction {
                Direction::In => DIRECTION_IN,
                Direction::Out => DIRECTION_OUT,
            };
            r.packets = f.packets;
            r.bytes = f.bytes;
            r.action = match f.action {
                Action::Accept => ACTION_ACCEPT,
                Action::Reject => ACTION_REJECT,
            };
            let x = &f.extras;
            r.pkt_srcaddr = x.pkt_srcaddr.map_or(none, addr_to_ffi);
            r.pkt_dstaddr = x.pkt_dstaddr.map_or(none, addr_to_ffi);
            if let Some(t) = x.flow_start {
                r.flow_start = t;
                r.present |= HAS_FLOW_START;
            }
            if let Some(t) = x.flow_end {
                r.flow_end = t;
                r.present |= HAS_FLOW_END;
            }
            if let Some(flags) = x.tcp_flags {
                r.tcp_flags = flags;
                r.present |= HAS_TCP_FLAGS;
            }
        }
        r
    }
}

fn addr_to_ffi(addr: IpAddr) -> FfiAddr {
    let mut bytes = [0u8; 16];
    match addr {
        IpAddr::V4(a) => {
            bytes[..4].copy_from_slice(&a.octets());
            FfiAddr {
                family: ADDR_IPV4,
                bytes,
            }
        }
        IpAddr::V6(a) => FfiAddr {
            family: ADDR_IPV6,
            bytes: a.octets(),
        },
    }
}

fn addr_from_ffi(a: &FfiAddr) -> Option<IpAddr> {
    match a.family {
        ADDR_IPV4 => Some(IpAddr::V4(Ipv4Addr::new(
            a.bytes[0], a.bytes[1], a.bytes[2], a.bytes[3],
        ))),
        ADDR_IPV6 => Some(IpAddr::V6(Ipv6Addr::from(a.bytes))),
        _ => None,
    }
}

/// A plugin's read-only view of one record of a batch.
#[derive(Clone, Copy)]
pub struct RecordView<'a> {
    raw: &'a FfiRecord,
    /// Whether the record has the minor-1 fields (its host is of minor 1
    /// or later); without them [`FlowFields::extras`] are all `None`.
    has_extras: bool,
}

impl<'a> RecordView<'a> {
    /// A view of a record of this crate's ABI minor.
    ///
    /// # Safety
    /// `raw`'s strings must be valid UTF-8 living for `'a` (the host
    /// guarantees this for the duration of a `write` call).
    pub unsafe fn new(raw: &'a FfiRecord) -> RecordView<'a> {
        RecordView {
            raw,
            has_extras: true,
        }
    }

    /// A view of a record from a host of ABI minor `host_abi_minor`
    /// ([`Host::abi_minor`](crate::Host)): a host of minor 0 passes the 1.0
    /// record, which ends at `rule`, and the view then reads nothing past
    /// it (the extras are `None`).
    ///
    /// # Safety
    /// As for [`RecordView::new`]; the fields of the host's minor must be
    /// readable.
    pub unsafe fn from_host(raw: &'a FfiRecord, host_abi_minor: u16) -> RecordView<'a> {
        RecordView {
            raw,
            has_extras: host_abi_minor >= 1,
        }
    }

    pub fn version(&self) -> u32 {
        self.raw.version
    }
    pub fn vswitch_id(&self) -> &'a str {
        // SAFETY: see `new`.
        unsafe { self.raw.vswitch_id.as_str() }
    }
    pub fn vm_id(&self) -> &'a str {
        // SAFETY: see `new`.
        unsafe { self.raw.vm_id.as_str() }
    }
    pub fn vpc_id(&self) -> &'a str {
        // SAFETY: see `new`.
        unsafe { self.raw.vpc_id.as_str() }
    }
    pub fn account_id(&self) -> &'a str {
        // SAFETY: see `new`.
        unsafe { self.raw.account_id.as_str() }
    }
    pub fn eni_id(&self) -> &'a str {
        // SAFETY: see `new`.
        unsafe { self.raw.eni_id.as_str() }
    }
    pub fn log_status(&self) -> LogStatus {
        match self.raw.log_status {
            LOG_STATUS_NODATA => LogStatus::NoData,
            LOG_STATUS_SKIPDATA => LogStatus::SkipData,
            _ => LogStatus::Ok,
        }
    }
    pub fn start(&self) -> i64 {
        self.raw.start
    }
    pub fn end(&self) -> i64 {
        self.raw.end
    }
    /// The flow fields; `None` for NODATA / SKIPDATA records.
    pub fn flow(&self) -> Option<FlowFields> {
        if self.raw.log_status != LOG_STATUS_OK {
            return None;
        }
        Some(FlowFields {
            srcaddr: addr_from_ffi(&self.raw.srcaddr)?,
            srcport: self.raw.srcport,
            dstaddr: addr_from_ffi(&self.raw.dstaddr)?,
            dstport: self.raw.dstport,
            protocol: self.raw.protocol,
            direction: if self.raw.direction == DIRECTION_OUT {
                Direction::Out
            } else {
                Direction::In
            },
            packets: self.raw.packets,
            bytes: self.raw.bytes,
            action: if self.raw.action == ACTION_REJECT {
                Action::Reject
            } else {
                Action::Accept
            },
            extras: self.extras(),
        })
    }

    /// The minor-1 fields, when the record has them (see `from_host`);
    /// all `None` for a record from a host of minor 0.
    fn extras(&self) -> FlowExtras {
        if !self.has_extras {
            return FlowExtras::default();
        }
        let r = self.raw;
        let has = |bit: u8| r.present & bit != 0;
        FlowExtras {
            pkt_srcaddr: addr_from_ffi(&r.pkt_srcaddr),
            pkt_dstaddr: addr_from_ffi(&r.pkt_dstaddr),
            flow_start: has(HAS_FLOW_START).then_some(r.flow_start),
            flow_end: has(HAS_FLOW_END).then_some(r.flow_end),
            tcp_flags: has(HAS_TCP_FLAGS).then_some(r.tcp_flags),
        }
    }
    pub fn rule(&self) -> Option<&'a str> {
        // SAFETY: see `new`.
        let r = unsafe { self.raw.rule.as_str() };
        (!r.is_empty()).then_some(r)
    }

    /// An owned copy (allocates).
    pub fn to_owned_record(&self) -> FlowRecord {
        FlowRecord {
            eni: Arc::new(EniIds {
                eni_id: self.eni_id().to_owned(),
                vswitch_id: self.vswitch_id().to_owned(),
                vpc_id: self.vpc_id().to_owned(),
                vm_id: self.vm_id().to_owned(),
                account_id: self.account_id().to_owned(),
            }),
            flow: self.flow(),
            start: self.start(),
            end: self.end(),
            log_status: self.log_status(),
            rule: self.rule().map(Arc::from),
        }
    }
}
