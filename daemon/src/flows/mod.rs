//! The flow table and capture windows (pure logic; time comes from an injected clock).


mod aggregate;
mod table;
#[cfg(test)]
mod tests;
mod window;

pub use aggregate::{has_ports, FlowTuple, InstanceRecords, WindowRecords};
pub use table::{FlowStats, FlowTable, HandoffEntry, LossScope};
#[cfg(test)]
pub use window::FakeClock;
pub use window::{CaptureWindow, Clock, SystemClock};
