//! The capture state the loop owns, and what its handlers do with it:
//! drain the event sockets into the flow table, apply interface changes
//! and metadata to the ENI registry, and hand off at shutdown.

use std::sync::Arc;
use std::time::Duration;

use mio::Waker;

use super::closer::WindowCloser;
use crate::config::{Config, EcsConfig};
use crate::eni::EniRegistry;
use crate::flows::{Clock, FlowTable, LossScope, SystemClock};
use crate::handoff;
use crate::metadata::{MetadataUpdate, MetadataWorker};
use crate::netlink::{ConntrackDumper, ConntrackEvents, DrainStats, NflogSocket, RouteWatcher};
use crate::notify::NotifySocket;
use crate::rejects::RejectCapture;
use crate::run_marker;
use crate::sinks::Dispatcher;
use crate::startup;
use crate::tcp_flags::TcpFlagsCapture;
use crate::tracking::TrackingTable;

/// Counters of what the loop saw, logged at every window close.
#[derive(Default)]
pub(super) struct LoopStats {
    pub(super) conntrack: DrainStats,
    pub(super) route: DrainStats,
    pub(super) nflog: DrainStats,
    pub(super) dump_parse_errors: u64,
    pub(super) dumps_interrupted: u64,
    pub(super) resyncs: u64,
    /// NFLOG sequence numbers that never arrived.
    pub(super) nflog_sequence_gaps: u64,
}

impl LoopStats {
    pub(super) fn add(total: &mut DrainStats, s: &DrainStats) {
        total.messages += s.messages;
        total.entries += s.entries;
        total.parse_errors += s.parse_errors;
        total.overruns += s.overruns;
        total.read_errors += s.read_errors;
        total.foreign += s.foreign;
    }

    /// Datagrams other processes sent to the event sockets, ignored.
    pub(super) fn foreign(&self) -> u64 {
        self.conntrack.foreign + self.route.foreign + self.nflog.foreign
    }
}

/// What the handlers leave for the loop's next turn.
#[derive(Default)]
pub(super) struct LoopFlags {
    /// An overrun lost events: dump the table to resync as soon as we can.
    pub(super) resync_pending: bool,
    /// A drain stopped at its budget with data queued: readiness will not
    /// be reported again, so poll without waiting and drain again.
    pub(super) drain_pending: bool,
    /// Event messages read since the loop last slept in `poll`.
    pub(super) events_read: u64,
}

/// The capture state the loop owns: the config, the ENI registry and the
/// flow table, the sockets read between window closes, and the sinks. The
/// window closer (`WindowCloser`) is beside it, not in it: each takes the
/// other where draining and closing meet.
pub(super) struct Capture {
    pub(super) config: Config,
    pub(super) registry: EniRegistry,
    pub(super) table: FlowTable<SystemClock>,
    pub(super) events: ConntrackEvents,
    pub(super) dumper: ConntrackDumper,
    pub(super) route: RouteWatcher,
    pub(super) dispatcher: Dispatcher,
    /// REJECT records from NFLOG, if groups are configured (the socket is
    /// also there for tcp-flags alone).
    pub(super) nflog: Option<(NflogSocket, RejectCapture)>,
    /// The tcp-flags group's packets, read on the same socket, if a sink's
    /// field list names tcp-flags.
    pub(super) tcp_flags: Option<TcpFlagsCapture>,
    /// The security groups' queue and table, if the config has groups.
    pub(super) enforcement: Option<super::enforce::Enforcement>,
    /// The rule names of the security groups' conntrack marks, of this
    /// config and earlier ones (`rule_names`).
    pub(super) mark_names: crate::security_groups::MarkNames,
    pub(super) stats: LoopStats,
    /// What the handlers leave for the loop's next turn.
    pub(super) flags: LoopFlags,
    /// Wakes the loop for the metadata worker (set once the poll exists).
    pub(super) waker: Option<Arc<Waker>>,
    /// The thread that reads the ECS metadata service, with `source = "ecs"`.
    pub(super) metadata: Option<MetadataWorker>,
    /// The last metadata fetch failed (its recovery is worth a log line).
    pub(super) metadata_failing: bool,
    /// Records that sinks stopped by a reload could not deliver.
    pub(super) lost_at_reload: u64,
    /// The service manager (systemd `Type=notify`): readiness, status, and
    /// the watchdog this thread feeds.
    pub(super) notify: NotifySocket,
    /// When `config` was loaded (start-up or the last reload that took),
    /// Unix seconds, for `flowlogd status`.
    pub(super) config_loaded_unix: i64,
}

impl Capture {
    pub(super) fn drain_conntrack(&mut self, closer: &mut WindowCloser) {
        let (table, registry) = (&mut self.table, &self.registry);
        let mut spills = closer.spills(&self.config, &self.dispatcher);
        let s = self.events.drain(|entry| {
            table.on_event(registry, &entry);
            spills.send(table, registry);
        });
        if s.parse_errors > 0 {
            log::warn!("conntrack: {} malformed messages skipped", s.parse_errors);
        }
        if s.overruns > 0 {
            // The kernel dropped events we will never see: the window is
            // incomplete for every ENI (which ones is unknowable), and the
            // table must be resynchronised from a dump.
            log::error!(
                "conntrack: receive buffer overrun ({} bytes): events were lost; marking this window SKIPDATA \
                 and resynchronising from a table dump",
                self.events.receive_buffer_granted()
            );
            self.table.mark_lost(LossScope::All);
            self.flags.resync_pending = true;
            self.events
                .grow_receive_buffer(self.config.daemon.rcvbuf_max_bytes);
        }
        self.flags.drain_pending |= s.more_pending;
        self.flags.events_read += s.messages;
        LoopStats::add(&mut self.stats.conntrack, &s);
    }

    /// Before the last window closes: read events until the sockets have
    /// been quiet for a moment. A burst of DESTROY events can be larger than
    /// one drain's budget, and in reliable mode the kernel re-sends refused
    /// events from a worker a little later, so one empty read is not the
    /// end. Bounded by `shutdown_timeout_secs`; if events are still coming
    /// then, the window is marked SKIPDATA rather than closed as if whole.
    /// `when` says in the log which drain it was.
    pub(super) fn drain_until_quiet(&mut self, closer: &mut WindowCloser, when: &str) {
        const QUIET: Duration = Duration::from_millis(300);
        let deadline = std::time::Instant::now()
            + Duration::from_secs(self.config.daemon.shutdown_timeout_secs.into());
        let mut quiet_since = std::time::Instant::now();
        let mut drained = 0u64;
        loop {
            self.notify.feed_watchdog();
            let before = self.stats.conntrack.entries + self.stats.nflog.entries;
            self.drain_conntrack(closer);
            self.drain_nflog(closer);
            let read = self.stats.conntrack.entries + self.stats.nflog.entries - before;
            drained += read;
            let now = std::time::Instant::now();
            if read > 0 {
                quiet_since = now;
            } else if now.duration_since(quiet_since) >= QUIET {
                break;
            }
            if now >= deadline {
                log::error!(
                    "terminating: events still arriving after {} s ({drained} read); marking the last window SKIPDATA",
                    self.config.daemon.shutdown_timeout_secs
                );
                self.table.mark_lost(LossScope::All);
                break;
            }
            if read == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if drained > 0 {
            log::info!(
                "terminating: read {drained} queued events {when}, counted in the last window"
            );
        }
    }

    pub(super) fn drain_nflog(&mut self, closer: &mut WindowCloser) {
        let Some((socket, rejects)) = &mut self.nflog else {
            return;
        };
        let (table, registry) = (&mut self.table, &self.registry);
        let mut spills = closer.spills(&self.config, &self.dispatcher);
        let tcp_flags = &mut self.tcp_flags;
        let s = socket.drain(|packet| {
            // One socket, told apart by group: the tcp-flags group never
            // holds drops (config refuses it in nflog_groups).
            match tcp_flags {
                Some(flags) if flags.reads(packet.group) => {
                    flags.on_packet(registry, table, &packet)
                }
                _ => rejects.on_packet(registry, table, &packet),
            }
            spills.send(table, registry);
        });
        let gaps = socket.take_loss().sequence_gaps;
        self.stats.nflog_sequence_gaps += gaps;
        if s.overruns > 0 || gaps > 0 {
            // Dropped packets (or tcp-flags copies) the kernel logged but
            // could not hand us: which ENIs they were on is unknown, so
            // every ENI's window is marked.
            log::error!(
                "nflog: lost logged packets ({} overruns, {gaps} missing sequence numbers) with a {} byte receive \
                 buffer; marking this window SKIPDATA",
                s.overruns,
                socket.receive_buffer_granted()
            );
            self.table.mark_lost(LossScope::All);
            socket.grow_receive_buffer(self.config.daemon.rcvbuf_max_bytes);
        }
        if s.parse_errors > 0 {
            log::warn!("nflog: {} malformed messages skipped", s.parse_errors);
        }
        self.flags.drain_pending |= s.more_pending;
        LoopStats::add(&mut self.stats.nflog, &s);
    }

    pub(super) fn drain_route(&mut self, closer: &mut WindowCloser) {
        let now = SystemClock.now_unix();
        let mut events = Vec::new();
        let s = self.route.drain(|ev| {
            log::debug!("rtnetlink: {ev:?}");
            events.push(ev);
        });
        let mut harvested = false;
        for ev in &events {
            // An ENI losing an address or its interface has those flows
            // closed with this window: harvest them now, while the registry
            // still says whose they are (the kernel counts nothing more on
            // a removed address).
            if !harvested && self.registry.takes_from_an_eni(ev) {
                closer.harvest_now(self);
                harvested = true;
            }
            self.registry.apply(ev, now);
        }
        if s.overruns > 0 {
            // Interface changes were lost: re-read the whole state, and
            // forget what is no longer there.
            log::warn!("rtnetlink: overrun; re-reading interfaces and addresses");
            let mut evs = Vec::new();
            match self.route.dump_all(|ev| evs.push(ev)) {
                Ok(_) => {
                    if !harvested {
                        closer.harvest_now(self);
                    }
                    self.registry.resync(&evs, now);
                }
                Err(e) => log::error!("rtnetlink: re-reading interfaces failed: {e}"),
            }
        }
        self.after_registry_change();
        LoopStats::add(&mut self.stats.route, &s);
    }

    /// Hands on what a registry change implies: flows of ENIs that lost
    /// their interface are closed, and new interfaces are looked up in the
    /// metadata service.
    pub(super) fn after_registry_change(&mut self) {
        self.update_enforced_interfaces();
        for eni in self.registry.take_detached() {
            self.table.detach(eni);
        }
        let macs = self.registry.take_metadata_requests();
        if let Some(worker) = &self.metadata {
            worker.look_for(macs);
        }
    }

    /// Starts the metadata worker, looking for every interface still
    /// waiting for its ids.
    pub(super) fn start_metadata(&mut self, ecs: &EcsConfig) {
        let Some(waker) = self.waker.clone() else {
            return;
        };
        // Everything pending is asked for at start; queued requests are moot.
        let _ = self.registry.take_metadata_requests();
        let notify = Box::new(move || {
            if let Err(e) = waker.wake() {
                log::error!("metadata: cannot wake the capture loop: {e}");
            }
        });
        match MetadataWorker::start(ecs, self.registry.pending_macs(), notify) {
            Ok(worker) => self.metadata = Some(worker),
            Err(e) => log::error!(
                "metadata: cannot start the worker thread: {e}; ENIs are not learnt from the service until a reload"
            ),
        }
    }

    /// What the metadata worker sent: ids for ENIs, or why there are none.
    pub(super) fn drain_metadata(&mut self) {
        let now = SystemClock.now_unix();
        while let Some(update) = self.metadata.as_ref().and_then(MetadataWorker::try_recv) {
            match update {
                MetadataUpdate::Snapshot(s) => {
                    if std::mem::take(&mut self.metadata_failing) {
                        log::info!("metadata: the service answers again");
                    }
                    log::debug!(
                        "metadata: instance {} lists {} ENIs; looked for {} new MACs, {} not listed yet",
                        s.snapshot.instance_id,
                        s.snapshot.enis.len(),
                        s.looked_for.len(),
                        s.retrying.len()
                    );
                    self.registry.apply_metadata(&s, now);
                }
                MetadataUpdate::Failed {
                    error,
                    retry_in,
                    failures,
                } => {
                    self.metadata_failing = true;
                    // Once at warn; a long outage must not flood the log.
                    let held = if self.config.metadata_unmapped_is_ignore() {
                        "their records are held until it answers"
                    } else {
                        "they are reported with - ids until it answers"
                    };
                    if failures == 1 {
                        log::warn!(
                            "metadata: cannot read the service: {error}; retrying with backoff (next in {} s); for \
                             interfaces still waiting for their ids, {held}",
                            retry_in.as_secs()
                        );
                    } else {
                        log::debug!(
                            "metadata: attempt {failures} failed: {error}; next in {} s",
                            retry_in.as_secs()
                        );
                    }
                }
            }
        }
        self.after_registry_change();
    }

    /// SIGTERM: the open window closes early and goes out, then the
    /// handoff and the sinks' last deliveries. Returns the records sinks
    /// could not take, this run's reloads included.
    pub(super) fn terminate(
        mut self,
        closer: &mut WindowCloser,
        tracking_table: Option<TrackingTable>,
    ) -> u64 {
        let now = SystemClock.now_unix();
        log::info!("terminating: closing the open window early at {now}");
        closer.close_final_window(&mut self, now);
        let lost_at_reload = self.lost_at_reload;
        self.shutdown(tracking_table) + lost_at_reload
    }

    fn shutdown(mut self, tracking_table: Option<TrackingTable>) -> u64 {
        // The window was closed with a dump just now: hand off what was
        // attributed so a restart neither loses nor double counts.
        let entries = self.table.handoff();
        let state_dir = &self.config.daemon.state_dir;
        let counted_until = self.table.counted_until();
        match handoff::write(state_dir, SystemClock.now_unix(), counted_until, &entries) {
            Ok(()) => {
                log::info!(
                    "handed off {} live connections to the next run in {}",
                    entries.len(),
                    handoff::path_in(state_dir).display()
                );
                // Only a stop that handed off is clean; otherwise the marker
                // stays and the next start reports the loss.
                if let Err(e) = run_marker::remove_own(state_dir) {
                    log::warn!("cannot remove the run marker: {e}; the next start will mark its first window SKIPDATA");
                }
            }
            Err(e) => log::error!(
                "cannot write {}: {e}; a restart will not count what flows until then, and marks its first window \
                 SKIPDATA",
                handoff::path_in(state_dir).display()
            ),
        }
        self.leave_enforcement();
        let lost = startup::stop_sinks(
            &mut self.dispatcher,
            Duration::from_secs(self.config.daemon.shutdown_timeout_secs.into()),
        );
        if tracking_table.is_some() {
            log::info!(
                "left nftables table inet flowlogd in place: the namespace keeps tracking until the next start \
                 (`flowlogd remove-tracking-table` removes it)"
            );
        }
        lost
    }
}
