//! Sink plugins: finding and loading them, and feeding each through its own
//! worker thread behind a bounded queue.

mod dispatch;
mod instance;
mod loader;

pub use dispatch::{Dispatcher, SinkSpec};
pub use instance::{check_options, CallError};
pub use loader::{resolve_plugin, scan_plugin_dir, PluginLibrary};
