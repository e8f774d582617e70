//! One module per netlink family. Messages are turned into the plain structs
//! of `crate::model` here; no netlink type leaves this module.

mod batch_recv;
mod conntrack;
mod ct_attrs;
mod ct_parse;
mod nflog;
mod route;
mod socket;
mod stats;
#[cfg(test)]
pub(crate) mod test_support;

pub use conntrack::{ConntrackDumper, ConntrackEvents, DumpStep, EventSubscription, EventsConfig};
pub use nflog::{NflogConfig, NflogSocket};
pub use route::RouteWatcher;
pub use stats::{DrainStats, DumpStats};
