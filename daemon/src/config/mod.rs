//! `/etc/flowlogd.toml`: parsed and validated as pure data. `check-config`
//! runs exactly this step; opening sockets and loading plugins come after.

mod error;
mod location;
mod read;
mod schema;
mod security_groups;
mod sink_fields;
mod validate;

pub use error::ConfigError;
pub use location::Location;
pub use schema::default_window_memory_bytes;
pub use security_groups::{
    direction_name, EnforcementConfig, OnDaemonDown, RuleAction, SecurityGroupConfig, SgEnis,
    SgProtocol, SgRuleConfig,
};
pub use validate::{
    load, parse, Config, DaemonUser, EcsConfig, EniConfig, EniMatch, FlowLogConfig, MetadataSource,
    ResourceType, SinkConfig, TrafficFilter, Unmapped,
};

#[cfg(test)]
mod security_groups_tests;
#[cfg(test)]
mod tests;
