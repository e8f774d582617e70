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
// The socket under every family's reader. The daemon reaches it only through
// them; tests/tests/netlink_sockets.rs opens it directly, on a group a user
// socket can send to, to test its batch reads against the live kernel.
pub use batch_recv::ReceiveSlots;
pub use socket::{NetlinkSocket, Received, SocketOptions};

/// The parsers of raw netlink bytes, as the sockets call them, for the fuzz
/// targets (`fuzz/`) and the property tests: each must reject malformed
/// input with an error, never panic.
pub mod parsers {
    pub use super::ct_parse::{parse_conntrack_message, ParseError};
    pub use super::nflog::{parse_packet as parse_nflog_packet, NflogParseError};
    pub use super::route::{parse_route_message, RouteParseError};
    pub use super::socket::{MalformedHeader, Message, Messages};
}
