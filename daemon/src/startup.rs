//! Building what a validated config describes: the state directory,
//! loading sink plugins and starting their workers. Errors here still
//! point into the config file.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use flowlogd_plugin_api::fields::FIELDS_KEY;

use crate::config::{Config, ConfigError, SinkConfig};
use crate::sinks::{
    check_options, resolve_plugin, Dispatcher, PluginLibrary, SinkSpec, SinkStats, SpoolSettings,
};
use crate::state_file::{self, Owner, Symlink};

/// Why a sink could not be set up: its config location and the reason.
pub fn sink_error(
    config: &Config,
    sink: &SinkConfig,
    key: Option<&str>,
    message: &str,
) -> ConfigError {
    // Point at `plugin = ...` for load errors, at the option for plugin
    // errors about one.
    config.sink_option_error(sink, key, message)
}

/// Applies the rule of state directories ([`state_file::check_dir`]) to
/// `daemon.state_dir`, making it first (mode 0700) if `create` (`run`).
/// `check-config` changes nothing and says whether `run` will make it; run
/// as root, it cannot know the user the daemon will run as (the unit's
/// `User=`), so it accepts any owner and says whose the directory is.
/// Returns what was found, for `check-config`'s summary.
///
/// # Errors
/// A [`ConfigError`] at `daemon.state_dir` naming the directory and the fix.
pub fn check_state_dir(config: &Config, create: bool) -> Result<String, ConfigError> {
    let dir = &config.daemon.state_dir;
    let invalid = |e: state_file::UnsafeDir| ConfigError::Invalid {
        path: config.path.clone(),
        location: None,
        key: Some("daemon.state_dir".into()),
        message: e.to_string(),
    };
    if create {
        let user = config.daemon.user.as_ref().map(|u| (u.uid, u.gid));
        state_file::prepare_dir(dir, user).map_err(invalid)?;
        return Ok(format!("state_dir {}: OK", dir.display()));
    }
    if !dir.exists() {
        return Ok(format!(
            "state_dir {}: does not exist yet; run makes it (mode 0700)",
            dir.display()
        ));
    }
    let me = state_file::euid();
    let owner = if me == 0 {
        Owner::Anyone
    } else {
        Owner::DaemonOrRoot
    };
    state_file::check_dir(dir, Symlink::Follow, owner).map_err(invalid)?;
    let uid = std::fs::metadata(dir).map(|m| m.uid()).unwrap_or(me);
    let whose = if uid == me || uid == 0 {
        String::new()
    } else {
        format!("; owned by uid {uid}: run must run as that user (the unit's User=)")
    };
    Ok(format!(
        "state_dir {}: OK (not writable by group or others){whose}",
        dir.display()
    ))
}

/// Where the daemon keeps its sinks' spools: `state_dir/spool/<sink>`.
pub fn spool_settings(config: &Config) -> SpoolSettings {
    SpoolSettings {
        root: config.daemon.state_dir.join("spool"),
        max_bytes: config.daemon.spool_max_bytes,
    }
}

/// Loads every configured sink's plugin and opens it in its worker, with
/// its spool (`None`: without, as `flowlogd replay` runs).
///
/// # Errors
/// A [`ConfigError`] at the sink's table or the offending option.
pub fn start_sinks(
    config: &Config,
    spools: Option<&SpoolSettings>,
) -> Result<Dispatcher, ConfigError> {
    let mut specs = Vec::new();
    for sink in &config.sinks {
        let library = load_sink_library(config, sink)?;
        log::info!(
            "sink {}: plugin {} {} (ABI {}.{}) from {}",
            sink.name,
            library.name,
            library.version,
            flowlogd_plugin_api::abi::ABI_MAJOR,
            library.abi_minor,
            library.path.display()
        );
        specs.push(SinkSpec {
            name: sink.name.clone(),
            library,
            options: sink.options.clone(),
        });
    }
    Dispatcher::start(specs, config.daemon.sink_queue_records, spools).map_err(|e| {
        let sink = config
            .sinks
            .iter()
            .find(|s| s.name == e.sink)
            .expect("started sinks come from config");
        sink_error(config, sink, e.key.as_deref(), &e.message)
    })
}

/// Resolves and loads one sink's plugin library.
///
/// # Errors
/// A [`ConfigError`] at the sink's `plugin` key.
pub fn load_sink_library(
    config: &Config,
    sink: &SinkConfig,
) -> Result<std::sync::Arc<PluginLibrary>, ConfigError> {
    let path = resolve_plugin(&config.daemon.plugin_dir, &sink.plugin).map_err(|e| {
        sink_error(
            config,
            sink,
            None,
            &format!("plugin = \"{}\": {e}", sink.plugin),
        )
    })?;
    let library =
        PluginLibrary::load(&path).map_err(|e| sink_error(config, sink, None, &e.to_string()))?;
    refuse_fields_for_abi_1_0(config, sink, &library)?;
    Ok(library)
}

/// A plugin built against ABI 1.0 predates field lists: it would get
/// `fields` as an option it does not know (and may refuse at open, or
/// ignore), and it cannot read the fields a list may name.
///
/// # Errors
/// A [`ConfigError`] at the sink's `fields` key saying so.
fn refuse_fields_for_abi_1_0(
    config: &Config,
    sink: &SinkConfig,
    library: &PluginLibrary,
) -> Result<(), ConfigError> {
    if library.abi_minor >= 1 || !sink.options.contains_key(FIELDS_KEY) {
        return Ok(());
    }
    Err(sink_error(
        config,
        sink,
        Some(FIELDS_KEY),
        &format!(
            "plugin \"{}\" ({}) speaks ABI {}.{}, which has no field lists; remove `fields` \
             (the plugin writes what it was built to write) or rebuild the plugin against \
             ABI {}.1 or later",
            library.name,
            library.path.display(),
            flowlogd_plugin_api::abi::ABI_MAJOR,
            library.abi_minor,
            flowlogd_plugin_api::abi::ABI_MAJOR,
        ),
    ))
}

/// For `check-config`: loads each plugin and runs its option check.
/// Returns a line per sink.
///
/// # Errors
/// The first sink that fails to load or whose options are rejected.
pub fn check_sinks(config: &Config) -> Result<Vec<String>, ConfigError> {
    let mut lines = Vec::new();
    for sink in &config.sinks {
        let library = load_sink_library(config, sink)?;
        let checked = check_options(&library, &sink.name, &sink.options).map_err(|e| match e {
            crate::sinks::CallError::Rejected { message, key } => {
                sink_error(config, sink, key.as_deref(), &message)
            }
            crate::sinks::CallError::Retry(message) => sink_error(config, sink, None, &message),
        })?;
        lines.push(format!(
            "  {}: plugin \"{}\" -> {} ({} {}, ABI {}.{}){}",
            sink.name,
            sink.plugin,
            library.path.display(),
            library.name,
            library.version,
            flowlogd_plugin_api::abi::ABI_MAJOR,
            library.abi_minor,
            if checked {
                ", options OK"
            } else {
                ", options are checked at start"
            }
        ));
    }
    Ok(lines)
}

/// Shuts the sinks down and logs what happened to their records.
/// Returns the number of records that will never be delivered (what waits
/// in a spool is not among them: the next start delivers it).
pub fn stop_sinks(dispatcher: &mut Dispatcher, timeout: Duration) -> u64 {
    let mut lost = 0;
    for s in dispatcher.shutdown(timeout) {
        lost += s.lost();
        log_sink_summary(&s);
    }
    lost
}

fn log_sink_summary(s: &SinkStats) {
    let spooled = if s.spool_records_left > 0 {
        format!(
            ", {} left in the spool for the next start",
            s.spool_records_left
        )
    } else {
        String::new()
    };
    if s.lost() > 0 {
        log::error!(
            "sink {}: {} records delivered{spooled}, {} NOT delivered ({} dropped on a full queue, {} dropped on a \
             full or failing spool, {} rejected by the sink, {} still undelivered at shutdown, {} in corrupt spool \
             batches), {} retries",
            s.name,
            s.delivered,
            s.lost(),
            s.dropped_queue_full,
            s.dropped_spool_full,
            s.rejected,
            s.undelivered_at_shutdown,
            s.spool_lost,
            s.retries
        );
    } else {
        log::info!(
            "sink {}: {} records delivered{spooled}, {} retries",
            s.name,
            s.delivered,
            s.retries
        );
    }
}

/// Keeps the daemon's large allocations in their own mappings, returned to
/// the system when freed. glibc raises its mmap threshold each time such a
/// block is freed (up to 32 MiB); from then on the flow table and a
/// window's sums (tens of MB, reallocated as they grow, freed at every
/// close) come from the heap, whose freed pages stay resident. Fixing the
/// threshold at glibc's default (128 KiB) turns that off: in the
/// benchmark's run with 250k live flows, peak RSS went from 92 to 70 MiB.
pub fn keep_large_allocations_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD: libc::c_int = 128 * 1024;
        // SAFETY: mallopt only sets an allocator parameter; called once at
        // start-up, before any other thread exists.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) } != 1 {
            log::warn!("cannot fix the allocator's mmap threshold; memory freed at window closes may stay resident");
        }
    }
}
