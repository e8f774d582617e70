//! Sink plugins: finding and loading them, and feeding each through its own
//! worker thread behind a bounded queue and a durable spool.

mod dispatch;
mod instance;
mod loader;
mod spool;
mod trusted_path;

pub use dispatch::{Dispatcher, SinkMetrics, SinkProbe, SinkSpec, SinkStats, SpoolSettings};
pub use instance::{check_options, CallError};
pub use loader::{resolve_plugin, scan_plugin_dir, PluginLibrary};
