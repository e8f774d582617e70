//! Building the capture state. What a config determines (its ENI registry
//! with the interfaces as they are now, its REJECT matcher) is built here
//! by start-up and by every reload alike; start-up then adds the flow table
//! and the sockets, and takes over from the previous run (the baseline dump
//! and the handoff), while a reload carries the running ones over.

use std::collections::HashSet;
use std::io;

use super::error::{io_err, RunError};
use super::sources::Sources;
use super::state::{Capture, LoopFlags, LoopStats};
use crate::config::{Config, ConfigError, MetadataSource};
use crate::eni::{EniError, EniRegistry};
use crate::flows::{Clock, FlowTable, LossScope, SystemClock};
use crate::handoff;
use crate::netlink::RouteWatcher;
use crate::notify::NotifySocket;
use crate::rejects::RejectCapture;
use crate::run_marker::{self, Judgement, RunMarker};
use crate::sinks::Dispatcher;
use crate::tcp_flags::TcpFlagsCapture;

/// What a config builds for capture, before any socket is read.
pub(super) struct ConfigState {
    pub(super) registry: EniRegistry,
    /// Used if NFLOG groups are configured (they change only at a restart).
    pub(super) rejects: RejectCapture,
}

impl ConfigState {
    /// The state `config` describes. A config whose ENIs do not make a
    /// registry is refused here: at start-up before anything is installed
    /// or opened, at a reload before anything stops.
    ///
    /// # Errors
    /// The registry's [`EniError`].
    pub(super) fn new(config: &Config) -> Result<ConfigState, EniError> {
        Ok(ConfigState {
            registry: crate::instances::registry_for(config)?,
            rejects: RejectCapture::new(config.daemon.nflog_require_prefix),
        })
    }
}

/// Puts the interfaces and addresses as they are now into `registry`
/// (later changes arrive on the watcher). Each ENI that gets an interface
/// is logged as it does (ids, where they come from, the instances that
/// capture it).
///
/// # Errors
/// The rtnetlink dump's error; then `registry` is left as it was.
pub(super) fn learn_interfaces(
    registry: &mut EniRegistry,
    route: &mut RouteWatcher,
    now: i64,
) -> io::Result<()> {
    let mut events = Vec::new();
    route.dump_all(|ev| events.push(ev))?;
    events.iter().for_each(|ev| registry.apply(ev, now));
    Ok(())
}

/// Start-up: the capture state from `config`, its sources and its sinks,
/// with the flow table taken over from the previous run.
///
/// # Errors
/// A [`RunError`] when the interfaces cannot be listed or the baseline
/// dump fails.
pub(super) fn start(
    config: Config,
    mut state: ConfigState,
    mut sources: Sources,
    dispatcher: Dispatcher,
) -> Result<Capture, RunError> {
    let clock = SystemClock;
    let now = clock.now_unix();
    if let MetadataSource::Ecs(ecs) = &config.metadata {
        log::info!(
            "metadata: ENIs from the ECS instance metadata service at {} (fetched again every {} s; interfaces \
             it does not describe: {}); [[eni]] tables override it",
            ecs.base_url,
            ecs.ttl_secs,
            ecs.unmapped.as_str()
        );
    }
    learn_interfaces(&mut state.registry, &mut sources.route, now)
        .map_err(io_err("cannot list interfaces and addresses"))?;
    let registry = state.registry;
    for idx in registry.indices() {
        if registry.ifindex(idx).is_none() {
            log::warn!(
                "{}; waiting for its interface to appear",
                registry.describe(idx)
            );
        }
    }
    let mut capture = Capture {
        table: FlowTable::new(
            clock,
            config.daemon.capture_window_secs,
            config.daemon.max_flows,
        )
        .with_window_memory_bytes(config.daemon.window_memory_bytes),
        registry,
        events: sources.events,
        dumper: sources.dumper,
        route: sources.route,
        dispatcher,
        nflog: sources.nflog.map(|socket| (socket, state.rejects)),
        tcp_flags: config.tcp_flags_group().map(TcpFlagsCapture::new),
        enforcement: sources.enforcement,
        mark_names: crate::security_groups::MarkNames::default(),
        stats: LoopStats::default(),
        flags: LoopFlags::default(),
        waker: None,
        metadata: None,
        metadata_failing: false,
        lost_at_reload: 0,
        notify: NotifySocket::from_env(),
        config_loaded_unix: SystemClock.now_unix(),
        config,
    };
    // Records carry tcp-flags (0 when none were seen) only while the rules
    // copy control packets to us; otherwise the field is unknown.
    capture
        .table
        .set_tcp_flags_capture(capture.tcp_flags.is_some());
    // The first window begins now, not at its aligned start: the previous
    // run already emitted a window up to its stop, and this one must not
    // overlap it. It ends at the aligned boundary as usual.
    capture.table.start_first_window_at(now);
    capture.update_enforced_interfaces();
    capture.start_rule_names();
    capture.baseline(now)?;
    Ok(capture)
}

/// The registry error as start-up reports it: a config error at `[[eni]]`.
pub(super) fn registry_error(config: &Config, e: &EniError) -> RunError {
    RunError::Config(ConfigError::Invalid {
        path: config.path.clone(),
        location: None,
        key: Some("eni".into()),
        message: e.to_string(),
    })
}

impl Capture {
    /// The start-up dump: what live connections carried before we started is
    /// not ours to attribute, except what the previous run's handoff says
    /// it had not attributed yet, and all of what connections created
    /// while no daemon ran carried. Here this run also takes over from the
    /// previous one: the handoff is consumed and this run's marker written
    /// before the dump, so from here on (a failed dump included) a stop
    /// that is not clean is told to the next start.
    fn baseline(&mut self, started_at: i64) -> Result<(), RunError> {
        let state_dir = self.config.daemon.state_dir.clone();
        let previous = run_marker::read(&state_dir);
        let handoff = match handoff::take(&state_dir, SystemClock.now_unix()) {
            Ok(h) => h,
            Err(e) => {
                log::warn!(
                    "{}: not resuming from the previous run's handoff: {e}",
                    handoff::path_in(&state_dir).display()
                );
                None
            }
        };
        self.take_over(previous, handoff.is_some(), started_at);

        let counted_until = handoff.as_ref().and_then(|h| h.counted_until);
        let handed_off: HashSet<u64> = handoff
            .iter()
            .flat_map(|h| h.entries.iter().map(|e| e.key))
            .collect();
        let mut in_full = 0usize;
        let (table, registry) = (&mut self.table, &self.registry);
        table.begin_dump();
        let stats = self
            .dumper
            .dump(|entry| match counted_until {
                Some(until) => {
                    in_full += usize::from(table.baseline_after_handoff(
                        registry,
                        &entry,
                        until,
                        &handed_off,
                    ));
                }
                None => table.baseline(registry, &entry),
            })
            .map_err(io_err("cannot dump the conntrack table"))?;
        // The baseline defines what is known; nothing can be "missing" yet.
        self.table.end_dump(false);
        self.stats.dump_parse_errors += stats.parse_errors;
        log::info!(
            "baseline: {} live connections, {} tracked for configured ENIs",
            stats.entries,
            self.table.stats().entries
        );
        if let Some(h) = handoff {
            let resumed = self.table.resume_from(&h.entries);
            log::info!(
                "resumed {resumed} of {} connections handed off by the previous run, and counts in full {in_full} \
                 created since it stopped counting (what they carried while no daemon ran is counted in this window)",
                h.entries.len()
            );
        }
        Ok(())
    }

    /// Judges how the previous run stopped (SKIPDATA for this run's first
    /// window if it did not stop cleanly) and writes this run's marker.
    fn take_over(&mut self, previous: run_marker::Previous, handoff_used: bool, started_at: i64) {
        let state_dir = &self.config.daemon.state_dir;
        let here = RunMarker::current(started_at);
        match run_marker::judge(previous, handoff_used, &here, run_marker::is_live_flowlogd) {
            Judgement::Clean => {}
            Judgement::Unclean(unclean) => {
                log::error!("{unclean}; marking this run's first window SKIPDATA for every ENI");
                self.table.mark_lost(LossScope::All);
            }
            Judgement::Shared(other) => {
                log::warn!(
                    "state_dir {} is in use by flowlogd pid {} (network namespace {}): if this run does not stop \
                     cleanly, the next start cannot tell; give each daemon its own state_dir",
                    state_dir.display(),
                    other.pid,
                    other.netns
                );
                return;
            }
        }
        if let Err(e) = run_marker::write(state_dir, &here) {
            log::warn!(
                "cannot write the run marker: {e}; if this run does not stop cleanly, the next start cannot tell"
            );
        }
    }
}
