//! The flow table and capture windows (pure logic; time comes from an injected clock).

mod aggregate;
mod table;
#[cfg(test)]
mod tests;
mod window;

#[cfg(test)]
pub use aggregate::WindowRecords;
pub use aggregate::{FlowTuple, WindowChunk, WindowDrain};
pub use table::{FlowTable, HandoffEntry, LossScope};
#[cfg(test)]
pub use window::CaptureWindow;
#[cfg(test)]
pub use window::FakeClock;
pub use window::{Clock, SystemClock};
