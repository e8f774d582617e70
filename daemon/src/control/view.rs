//! What the capture loop publishes for the control socket, beside the
//! metrics snapshot's counters: plain data, built at a publish (a few
//! strings per ENI and a copy of the bounded leader lists), nothing per
//! event.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::eni::EniRegistry;
use crate::flows::{Leader, LeadersView};
use crate::instances;

/// The loop's part of a snapshot for `status` and `top`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopView {
    pub config_path: PathBuf,
    /// When the config in use was loaded (start-up or the last reload
    /// that took), Unix seconds.
    pub config_loaded_unix: i64,
    pub enis: Vec<EniStatus>,
    /// Distinct records the open window has summed so far.
    pub window_records: u64,
    pub top: TopView,
}

/// One ENI: its ids, its interface now, the flow logs capturing it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EniStatus {
    pub eni_id: String,
    pub vswitch_id: String,
    pub vpc_id: String,
    pub vm_id: String,
    pub account_id: String,
    /// `None` while no interface stands for it.
    pub interface: Option<String>,
    pub flow_logs: Vec<String>,
}

/// One record of the open window, as `top` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopRecord {
    pub eni: String,
    /// `in` or `out`.
    pub direction: String,
    /// `ACCEPT` or `REJECT`.
    pub action: String,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub protocol: u8,
    pub packets: u64,
    pub bytes: u64,
    /// The rule that dropped a REJECT record, if NFLOG named one.
    pub rule: Option<String>,
}

/// One ENI's traffic in the open window so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EniTotalsView {
    pub eni: String,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub rejected_packets: u64,
}

/// The open window's leaders, with ENI ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopView {
    pub by_bytes: Vec<TopRecord>,
    pub by_packets: Vec<TopRecord>,
    /// REJECT records by packets.
    pub rejects: Vec<TopRecord>,
    pub enis: Vec<EniTotalsView>,
}

impl LoopView {
    /// The view of the loop's state now.
    pub fn of(
        config: &Config,
        config_loaded_unix: i64,
        registry: &EniRegistry,
        window_records: usize,
        leaders: &LeadersView,
    ) -> LoopView {
        let enis = registry
            .indices()
            .map(|e| {
                let ids = registry.ids(e);
                let visibility = registry.visibility(e);
                EniStatus {
                    eni_id: ids.eni_id.clone(),
                    vswitch_id: ids.vswitch_id.clone(),
                    vpc_id: ids.vpc_id.clone(),
                    vm_id: ids.vm_id.clone(),
                    account_id: ids.account_id.clone(),
                    interface: registry.interface_name(e).map(str::to_owned),
                    flow_logs: config
                        .flow_logs
                        .iter()
                        .filter(|fl| instances::captures(fl, ids, visibility))
                        .map(|fl| fl.name.clone())
                        .collect(),
                }
            })
            .collect();
        let eni_id = |e: crate::eni::EniIndex| {
            if e.get() < registry.len() {
                registry.ids(e).eni_id.clone()
            } else {
                "-".to_owned()
            }
        };
        let record = |l: &Leader| TopRecord {
            eni: eni_id(l.eni),
            direction: l.direction.as_str().to_owned(),
            action: l.action.as_str().to_owned(),
            src: l.tuple.src,
            src_port: l.tuple.src_port,
            dst: l.tuple.dst,
            dst_port: l.tuple.dst_port,
            protocol: l.tuple.protocol,
            packets: l.packets,
            bytes: l.bytes,
            rule: l.rule.as_deref().map(str::to_owned),
        };
        let top = TopView {
            by_bytes: leaders.by_bytes.iter().map(record).collect(),
            by_packets: leaders.by_packets.iter().map(record).collect(),
            rejects: leaders.rejects.iter().map(record).collect(),
            enis: leaders
                .totals
                .iter()
                .map(|(e, t)| EniTotalsView {
                    eni: eni_id(*e),
                    packets_in: t.packets_in,
                    bytes_in: t.bytes_in,
                    packets_out: t.packets_out,
                    bytes_out: t.bytes_out,
                    rejected_packets: t.rejected_packets,
                })
                .collect(),
        };
        LoopView {
            config_path: config.path.clone(),
            config_loaded_unix,
            enis,
            window_records: window_records as u64,
            top,
        }
    }
}
