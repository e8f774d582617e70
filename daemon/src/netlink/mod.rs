#![allow(dead_code, unused_imports)] // until main.rs wires the netlink layer in
//! One module per netlink family. Messages are turned into the plain structs
//! of `crate::model` here; no netlink type leaves this module.

mod conntrack;
mod ct_attrs;
mod route;
mod socket;
mod stats;
#[cfg(test)]
pub(crate) mod test_support;

pub use conntrack::{
    parse_conntrack_message, ConntrackDumper, ConntrackEvents, EventSubscription, EventsConfig,
    ParseError,
};
pub use route::{parse_route_message, RouteParseError, RouteWatcher};
pub use socket::{Message, Messages, NetlinkSocket, Received, SocketOptions};
pub use stats::{DrainStats, DumpStats};
