//! `/etc/flowlogd.toml`: parsed and validated as pure data. `check-config`
//! runs exactly this step; opening sockets and loading plugins come after.

mod error;
mod location;
mod read;
mod schema;
mod sink_fields;
mod validate;

pub use error::ConfigError;
pub use location::Location;
pub use schema::default_window_memory_bytes;
pub use validate::{
    load, parse, Config, DaemonUser, EcsConfig, EniConfig, EniMatch, FlowLogConfig, MetadataSource,
    ResourceType, SinkConfig, TrafficFilter, Unmapped,
};

#[cfg(test)]
mod tests;
