//! flowlogd as a library: everything the daemon does, with `main.rs` a
//! thin command line over it (DESIGN.md). The modules are public so that
//! the fuzz targets in `fuzz/` and the property tests can reach the parsers
//! (netlink messages, packets, configuration) the way the daemon calls them.

// Lints about the shape of a public API for outside users: this library's
// only users are its own binary, the fuzz targets and the tests.
#![allow(clippy::len_without_is_empty, clippy::should_implement_trait)]

pub mod capture;
pub mod child;
pub mod config;
pub mod control;
pub mod enforcement;
pub mod eni;
pub mod flows;
pub mod handoff;
pub mod http_url;
pub mod ids;
pub mod instances;
pub mod logger;
pub mod metadata;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod notify;
pub mod packet;
pub mod privileges;
pub mod rejects;
pub mod run_marker;
pub mod security_groups;
pub mod signals;
pub mod sinks;
pub mod startup;
pub mod state_file;
pub mod tcp_flags;
#[cfg(test)]
pub(crate) mod test_builders;
pub mod tracking;
