//! The control socket: `flowlogd status` and `flowlogd top` ask the
//! running daemon through a unix socket in `state_dir`, never over TCP.
//!
//! Like the metrics endpoint, the server thread never reads the capture
//! loop's data: the loop publishes what `status` and `top` show with its
//! metrics snapshot ([`crate::metrics::SnapshotCell`], at most every
//! 500 ms and at each window close): the ENIs and the flow logs capturing
//! them, the config's path and load time, and a copy of the open window's
//! leaders ([`crate::flows::LeadersView`], kept by the sums as they grow).
//! A request costs the loop nothing; the sinks' counters are read from
//! their atomics.
//!
//! `view` is what the loop publishes, `reply` the JSON answers built from
//! a snapshot, `server` the socket (who may connect, bounds), `client`
//! the commands' side (the request, the text they print).

mod client;
mod reply;
mod server;
mod view;

pub use client::{fetch_status, fetch_top, render_status, render_top, ClientError, TopOrder};
pub use reply::{LossCounters, SinkStatus, StatusReply, TopReply, WindowStatus, PROTOCOL_VERSION};
pub use server::{
    ControlServer, ControlSocketError, SocketFile, MAX_REQUEST_BYTES, REQUEST_TIMEOUT, SOCKET_NAME,
};
pub use view::{EniStatus, EniTotalsView, LoopView, TopRecord, TopView};
