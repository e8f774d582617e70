//! Flow log instances: which instance gets which record. The one home of
//! the scope (which ENIs an instance captures), the traffic filter
//! (ACCEPT, REJECT or all) and the per-instance NODATA and SKIPDATA rule.
//! It takes a closed window's records per ENI from `flows` and the ENIs'
//! ids and standing from `eni`; neither of those knows about instances.

mod dispatch;
mod drain;
mod filter;
mod scope;
#[cfg(test)]
mod tests;

pub use dispatch::{dispatch_chunk, dispatch_instance_records, route_records};
pub use drain::{InstanceDrain, WindowChunk};
#[cfg(test)]
pub use drain::{InstanceRecords, WindowRecords};
pub use filter::{had_traffic_for, takes_action, takes_record};
pub use scope::{captured_by, captures, describe, registry_for, Scopes};
