//! STAND-IN for the `sgpolicy` helper's Policy API (sg-contract.md), only
//! so `enforcement` builds until that branch is merged; replaced then.
#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::Arc;

use flowlogd_plugin_api::Direction;

pub const MARK_FLAG: u32 = 0x8000_0000;

pub struct Policy;

impl Policy {
    pub fn from_config(_cfg: &crate::config::Config) -> Policy {
        Policy
    }
    pub fn is_enabled(&self) -> bool {
        false
    }
    pub fn covers(&self, _eni_id: &str) -> bool {
        false
    }
    pub fn decide(&self, _eni_id: &str, p: &FirstPacket) -> Decision {
        Decision {
            accept: p.direction == Direction::Out,
            rule: RuleMark {
                mark: MARK_FLAG | 2,
                name: Arc::from("default"),
            },
        }
    }
}

pub struct FirstPacket {
    pub direction: Direction,
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
}

pub struct Decision {
    pub accept: bool,
    pub rule: RuleMark,
}

pub struct RuleMark {
    pub mark: u32,
    pub name: Arc<str>,
}
