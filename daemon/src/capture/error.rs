//! Why the daemon could not start (once running, errors are counted and
//! logged rather than fatal).

use std::fmt;
use std::io;

use crate::config::ConfigError;
use crate::control::ControlSocketError;
use crate::privileges::PrivilegeError;
use crate::tracking::TrackingError;

/// Why the daemon could not run.
#[derive(Debug)]
pub enum RunError {
    Config(ConfigError),
    Tracking(TrackingError),
    Privileges(PrivilegeError),
    Io {
        what: &'static str,
        source: io::Error,
    },
    /// `metrics.listen` could not be bound.
    Metrics {
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    /// `state_dir/control.sock` could not be set up.
    Control(ControlSocketError),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Config(e) => write!(f, "{e}"),
            RunError::Tracking(e) => write!(f, "{e}"),
            RunError::Privileges(e) => write!(f, "{e}"),
            RunError::Io { what, source } => write!(f, "{what}: {source}"),
            RunError::Control(e) => write!(f, "{e}"),
            RunError::Metrics { addr, source } => write!(
                f,
                "cannot listen for metrics on {addr} (metrics.listen): {source}; set another address, or \
                 metrics.listen = \"\" to turn metrics off"
            ),
        }
    }
}

impl std::error::Error for RunError {}

pub(super) fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}
