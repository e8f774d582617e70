//! `/etc/flowlogd.toml`: parsed and validated as pure data. `check-config`
//! runs exactly this step; opening sockets and loading plugins come after.

mod error;
mod location;
mod schema;
mod validate;

pub use error::ConfigError;
pub use location::Location;
pub use validate::{
    load, parse, Config, DaemonConfig, EniConfig, EniMatch, FlowLogConfig, ResourceType,
    SinkConfig, TrafficFilter,
};

#[cfg(test)]
mod tests;
