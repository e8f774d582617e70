//! The sinks across a reload: a sink whose config did not change keeps its
//! running worker (its queue, its open output); a changed or removed sink's
//! worker is stopped before its successor of the same name starts, so that
//! no two workers ever hold one sink's outputs (or its spool) at once. If
//! the new sinks do not start, the old config's sinks are started again.

use std::time::Duration;

use super::state::Capture;
use crate::config::{Config, ConfigError};
use crate::sinks::Dispatcher;
use crate::startup;

/// What a swap did, for the reload's log line.
pub(super) struct SinkSwap {
    pub(super) kept: Vec<String>,
    pub(super) restarted: Vec<String>,
}

/// Whether sink `name` runs the same way under `old` and `new`: the same
/// plugin with the same options, and the same daemon settings a worker is
/// started with.
fn unchanged(old: &Config, new: &Config, name: &str) -> bool {
    let (Some(a), Some(b)) = (
        old.sinks.iter().find(|s| s.name == name),
        new.sinks.iter().find(|s| s.name == name),
    ) else {
        return false;
    };
    let (d, e) = (&old.daemon, &new.daemon);
    a.plugin == b.plugin
        && a.options == b.options
        && d.plugin_dir == e.plugin_dir
        && d.state_dir == e.state_dir
        && d.sink_queue_records == e.sink_queue_records
        && d.spool_max_bytes == e.spool_max_bytes
}

/// Starts `config`'s sinks with their spools, as start-up does.
fn start(config: &Config) -> Result<Dispatcher, ConfigError> {
    startup::start_sinks(config, Some(&startup::spool_settings(config)))
}

/// `config` with only the sinks `keep` names (for starting some of them).
fn with_sinks(config: &Config, keep: impl Fn(&str) -> bool) -> Config {
    let mut c = config.clone();
    c.sinks.retain(|s| keep(&s.name));
    c
}

impl Capture {
    /// Replaces the sinks of the running config with those of `new`,
    /// keeping the unchanged ones running. The records queued for a
    /// stopped sink are delivered within `shutdown_timeout_secs` (what is
    /// not is counted as lost).
    ///
    /// # Errors
    /// A sink of `new` whose plugin does not load or open; the running
    /// config's sinks are running again then.
    pub(super) fn swap_sinks(&mut self, new: &Config) -> Result<SinkSwap, ConfigError> {
        let old = &self.config;
        let kept: Vec<String> = self
            .dispatcher
            .sink_names()
            .into_iter()
            .filter(|n| unchanged(old, new, n))
            .collect();
        let is_kept = |name: &str| kept.iter().any(|k| k == name);
        let to_start = with_sinks(new, |n| !is_kept(n));
        // Plugins that do not load refuse the reload before anything stops.
        for sink in &to_start.sinks {
            startup::load_sink_library(&to_start, sink)?;
        }
        let mut retiring = self.dispatcher.split_off(|n| !is_kept(n));
        let retired = retiring.sink_names();
        if !retired.is_empty() {
            log::info!(
                "reload: stopping sinks {} (changed or removed) before their successors start",
                retired.join(", ")
            );
        }
        self.lost_at_reload += startup::stop_sinks(
            &mut retiring,
            Duration::from_secs(old.daemon.shutdown_timeout_secs.into()),
        );
        match start(&to_start) {
            Ok(started) => {
                let restarted = started.sink_names();
                self.dispatcher.join(started);
                Ok(SinkSwap { kept, restarted })
            }
            Err(e) => {
                // Back to the running config: its stopped sinks start again.
                let again = with_sinks(old, |n| retired.iter().any(|r| r == n));
                match start(&again) {
                    Ok(d) => self.dispatcher.join(d),
                    Err(e2) => log::error!(
                        "reload: cannot start the running config's sinks {} again either: {e2}; records for them \
                         are dropped until a reload succeeds",
                        retired.join(", ")
                    ),
                }
                Err(e)
            }
        }
    }
}
