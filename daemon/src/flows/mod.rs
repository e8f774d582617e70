//! The flow table and capture windows (pure logic; time comes from an injected clock).

mod aggregate;
mod leaders;
mod table;
mod window;

#[cfg(test)]
pub(crate) use aggregate::WindowAggregate;
pub use aggregate::{EniRecords, EniWindow, FlowTuple, WindowDrain};
pub use leaders::{EniTotals, Leader, LeadersView, TOP_N};
pub use table::{FlowTable, HandoffEntry, LossScope, RuleNames, DEFAULT_WINDOW_MEMORY_BYTES};
pub use window::{CaptureWindow, Clock, FakeClock, SystemClock};
