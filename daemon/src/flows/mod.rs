//! The flow table and capture windows (pure logic; time comes from an injected clock).
// Until the event loop in main.rs uses this module.
#![allow(dead_code, unused_imports)]

mod aggregate;
mod table;
#[cfg(test)]
mod tests;
mod window;

pub use aggregate::{has_ports, FlowTuple, InstanceRecords, WindowRecords};
pub use table::{FlowStats, FlowTable, LossScope};
#[cfg(test)]
pub use window::FakeClock;
pub use window::{CaptureWindow, Clock, SystemClock};
