//! Flow log instances: which instance gets which record. The one home of
//! the scope (which ENIs an instance captures), the traffic filter
//! (ACCEPT, REJECT or all) and the per-instance NODATA and SKIPDATA rule.
//! It takes a closed window's records per ENI from `flows` and the ENIs'
//! ids and standing from `eni`; neither of those knows about instances.
//!
//! The path from captured netlink to records, as the loop runs it and a
//! replay without root can: rtnetlink events into
//! [`crate::eni::EniRegistry::apply`], conntrack entries into
//! [`crate::flows::FlowTable::on_event`] (its clock a
//! [`crate::flows::FakeClock`] for a replay), the window's close
//! ([`crate::flows::FlowTable::close_window`], or `begin_close` / a dump /
//! `finish_close` in the loop), then [`InstanceDrain::new`] with the
//! config's flow logs, whose chunks ([`InstanceDrain::next_chunk`]) or
//! [`InstanceDrain::collect_all`] are each instance's records.

mod dispatch;
mod drain;
mod filter;
mod scope;
#[cfg(test)]
mod scope_tests;
#[cfg(test)]
mod tests;

pub use dispatch::{dispatch_chunk, dispatch_instance_records, route_records};
pub use drain::{InstanceDrain, InstanceRecords, WindowChunk, WindowRecords};
pub use filter::{had_traffic_for, takes_action, takes_record};
pub use scope::{captured_by, captures, describe, registry_for, Scopes};
