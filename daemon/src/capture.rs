//! The capture loop: one thread, one mio `Poll`, every netlink socket, the
//! window timer (the poll timeout) and the signals (a signalfd).
//!
//! Data flows one way: sockets -> parse (netlink/) -> ENI lookup (eni) ->
//! flow table and windows (flows) -> records -> sink queues (sinks). The
//! loop never blocks on a sink. It blocks only in `poll`, and in a
//! conntrack table dump only where it needs the table's state at once
//! (start-up, a reload, shutdown, an ENI losing an address). The dump at a
//! window close is read in slices between the event sockets: the window's
//! end hands its sums to `FlowTable::begin_close`, later events count in the
//! next window, and the records go out when the dump ends (`close`).

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::{Config, ConfigError, EcsConfig, MetadataSource};
use crate::eni::EniRegistry;
use crate::flows::{Clock, FlowTable, LossScope, SystemClock};
use crate::metadata::{MetadataUpdate, MetadataWorker};
use crate::netlink::{
    ConntrackDumper, ConntrackEvents, DrainStats, EventSubscription, EventsConfig, NflogConfig,
    NflogSocket, RouteWatcher,
};
use crate::privileges::{self, PrivilegeError};
use crate::rejects::RejectCapture;
use crate::run_marker::{self, Judgement, RunMarker};
use crate::signals::{Signal, SignalFd};
use crate::sinks::Dispatcher;
use crate::tracking::{self, TrackingError, TrackingTable};
use crate::{handoff, startup};

mod close;
mod reload;
mod sink_swap;

use close::{DumpPurpose, EarlyEmit, EmittingWindow, RunningDump, SpillSender, EMIT_RETRY};

const CONNTRACK: Token = Token(0);
const ROUTE: Token = Token(1);
const SIGNALS: Token = Token(2);
const NFLOG: Token = Token(3);
/// The metadata worker has an update for the loop.
const METADATA: Token = Token(4);
/// The conntrack dump socket, read in slices while a dump runs.
const DUMP: Token = Token(5);

/// While events are arriving, the loop lets them gather this long before
/// it reads again: the kernel sends each conntrack event as a datagram of
/// its own, and reading them a few at a time costs a wake-up and a system
/// call for each few. The socket's buffer holds far more than this much.
const EVENT_GATHER: Duration = Duration::from_millis(4);
/// A read of fewer messages than this counts as "a few".
const EVENT_GATHER_BELOW: u64 = 64;

/// Bytes of each dropped packet NFLOG copies to us: an IPv6 header with a
/// few extension headers and the transport ports fit; the record's size
/// comes from the IP header, not from the copy.
const NFLOG_COPY_RANGE: u32 = 128;

/// rtnetlink traffic is tiny (links and addresses); 1 MiB absorbs a burst of
/// hot-plugged interfaces.
const ROUTE_RCVBUF_BYTES: usize = 1 << 20;

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
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Config(e) => write!(f, "{e}"),
            RunError::Tracking(e) => write!(f, "{e}"),
            RunError::Privileges(e) => write!(f, "{e}"),
            RunError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for RunError {}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> RunError {
    move |source| RunError::Io { what, source }
}

/// Counters of what the loop saw, logged at every window close.
#[derive(Default)]
struct LoopStats {
    conntrack: DrainStats,
    route: DrainStats,
    nflog: DrainStats,
    dump_parse_errors: u64,
    dumps_interrupted: u64,
    resyncs: u64,
}

impl LoopStats {
    fn add(total: &mut DrainStats, s: &DrainStats) {
        total.messages += s.messages;
        total.entries += s.entries;
        total.parse_errors += s.parse_errors;
        total.overruns += s.overruns;
        total.read_errors += s.read_errors;
        total.foreign += s.foreign;
    }

    /// Datagrams other processes sent to the event sockets, ignored.
    fn foreign(&self) -> u64 {
        self.conntrack.foreign + self.route.foreign + self.nflog.foreign
    }
}

/// The capture state the loop owns.
struct Capture {
    config: Config,
    registry: EniRegistry,
    table: FlowTable<SystemClock>,
    events: ConntrackEvents,
    dumper: ConntrackDumper,
    route: RouteWatcher,
    dispatcher: Dispatcher,
    /// REJECT records from NFLOG, if groups are configured.
    nflog: Option<(NflogSocket, RejectCapture)>,
    stats: LoopStats,
    /// An overrun lost events: dump the table to resync as soon as we can.
    resync_pending: bool,
    /// A drain stopped at its budget with data queued: readiness will not
    /// be reported again, so poll without waiting and drain again.
    drain_pending: bool,
    /// Wakes the loop for the metadata worker (set once the poll exists).
    waker: Option<Arc<Waker>>,
    /// The thread that reads the ECS metadata service, with `source = "ecs"`.
    metadata: Option<MetadataWorker>,
    /// The last metadata fetch failed (its recovery is worth a log line).
    metadata_failing: bool,
    /// The conntrack dump the loop is reading in slices, if one runs.
    dump: Option<RunningDump>,
    /// The running dump has replies queued beyond the last slice's budget.
    dump_pending: bool,
    /// The closed window whose records are being sent, chunk by chunk.
    emitting: Option<EmittingWindow>,
    /// Sums emitted early at the memory bound, being sent chunk by chunk
    /// after `emitting`.
    early: Option<EarlyEmit>,
    /// Event messages read since the loop last slept in `poll`.
    events_read: u64,
    /// Records that sinks stopped by a reload could not deliver.
    lost_at_reload: u64,
}

/// Runs the daemon until SIGTERM/SIGINT. Returns the number of records
/// that sinks could not take (reported, and reflected in the exit code).
///
/// # Errors
/// A [`RunError`] when start-up fails; once running, errors are counted and
/// logged rather than fatal.
pub fn run(config: Config) -> Result<u64, RunError> {
    // Before anything is installed or opened: the state directory is
    // where this run's handoff and marker go, and the previous run's are
    // read from.
    startup::check_state_dir(&config, true).map_err(RunError::Config)?;
    // Signals first: blocked before any thread starts, so sink workers
    // inherit the mask and SIGTERM reaches only the signalfd.
    let mut signals = SignalFd::open().map_err(io_err("cannot set up signal handling"))?;

    let registry = crate::instances::registry_for(&config).map_err(|e| {
        RunError::Config(ConfigError::Invalid {
            path: config.path.clone(),
            location: None,
            key: Some("eni".into()),
            message: e.to_string(),
        })
    })?;

    // Tracking before the sysctls: the sysctl files exist only once
    // nf_conntrack is loaded, which the table (or the socket) does.
    let tracking_table = if config.daemon.install_tracking_table {
        let t = TrackingTable::install().map_err(RunError::Tracking)?;
        if t.found_existing() {
            log::info!(
                "nftables table inet flowlogd (a `ct state` rule, no verdicts) was in place, left by the previous \
                 run so tracking did not stop; renewed it"
            );
        } else {
            log::info!(
                "installed nftables table inet flowlogd (a `ct state` rule, no verdicts) so this namespace tracks \
                 connections; it stays across restarts (`flowlogd remove-tracking-table` removes it)"
            );
        }
        Some(t)
    } else {
        log::info!(
            "install_tracking_table = false: relying on the host firewall to reference `ct`{}",
            if tracking::table_present() {
                "; a table inet flowlogd from an earlier run is still in place (`flowlogd remove-tracking-table` \
                 removes it)"
            } else {
                ""
            }
        );
        None
    };
    // The event socket is opened before the baseline dump, so that no
    // DESTROY between the dump and the subscription is missed.
    let events = ConntrackEvents::open(&EventsConfig {
        // DESTROY carries the final counters; NEW adds nothing the window
        // dumps do not give, and every subscribed event type costs the
        // kernel on the packet path.
        subscription: EventSubscription {
            new: false,
            update: false,
            destroy: true,
        },
        receive_buffer_bytes: config.daemon.conntrack_rcvbuf_bytes as usize,
        reliable: config.daemon.conntrack_reliable_events,
    })
    .map_err(io_err(
        "cannot open the conntrack event socket (needs CAP_NET_ADMIN)",
    ))?;
    let report = tracking::ensure_sysctls(config.daemon.enable_conntrack_accounting)
        .map_err(RunError::Tracking)?;
    for name in &report.enabled {
        let why = if *name == "nf_conntrack_events" {
            "so every connection reports its final counters"
        } else {
            "per-connection counters and timestamps need it"
        };
        log::info!("set net.netfilter.{name}=1 ({why})");
    }
    log::info!(
        "conntrack events: DESTROY, receive buffer {} bytes, reliable delivery {}",
        events.receive_buffer_granted(),
        if config.daemon.conntrack_reliable_events {
            "on"
        } else {
            "off"
        }
    );
    let dumper =
        ConntrackDumper::open().map_err(io_err("cannot open the conntrack dump socket"))?;
    let route = RouteWatcher::open(ROUTE_RCVBUF_BYTES)
        .map_err(io_err("cannot open the rtnetlink socket"))?;
    let nflog = if config.daemon.nflog_groups.is_empty() {
        log::info!("no NFLOG groups configured (daemon.nflog_groups): no REJECT records");
        None
    } else {
        let socket = NflogSocket::open(&NflogConfig {
            groups: config.daemon.nflog_groups.clone(),
            copy_range: NFLOG_COPY_RANGE,
            receive_buffer_bytes: config.daemon.nflog_rcvbuf_bytes as usize,
        })
        .map_err(io_err("cannot bind the NFLOG groups"))?;
        log::info!(
            "NFLOG groups {:?} (drops logged with prefix flowlogd:<security-group>:<rule> become REJECT records{}), \
             receive buffer {} bytes",
            config.daemon.nflog_groups,
            if config.daemon.nflog_require_prefix { "; other prefixes are ignored and counted" } else { "" },
            socket.receive_buffer_granted()
        );
        Some((
            socket,
            RejectCapture::new(config.daemon.nflog_require_prefix),
        ))
    };

    // Everything that needs more than CAP_NET_ADMIN is done; the sinks (and
    // every reload) run with what is left.
    drop_privileges(&config)?;
    let dispatcher = startup::start_sinks(&config, Some(&startup::spool_settings(&config)))
        .map_err(RunError::Config)?;

    let clock = SystemClock;
    let mut capture = Capture {
        table: FlowTable::new(
            clock,
            config.daemon.capture_window_secs,
            config.daemon.max_flows,
        )
        .with_window_memory_bytes(config.daemon.window_memory_bytes),
        registry,
        events,
        dumper,
        route,
        dispatcher,
        nflog,
        stats: LoopStats::default(),
        resync_pending: false,
        drain_pending: false,
        waker: None,
        metadata: None,
        metadata_failing: false,
        dump: None,
        dump_pending: false,
        emitting: None,
        early: None,
        events_read: 0,
        lost_at_reload: 0,
        config,
    };
    // Interfaces and addresses now; changes arrive on the watcher.
    let now = clock.now_unix();
    // The first window begins now, not at its aligned start: the previous
    // run already emitted a window up to its stop, and this one must not
    // overlap it. It ends at the aligned boundary as usual.
    capture.table.start_first_window_at(now);
    let mut initial = Vec::new();
    capture
        .route
        .dump_all(|ev| initial.push(ev))
        .map_err(io_err("cannot list interfaces and addresses"))?;
    if let MetadataSource::Ecs(ecs) = &capture.config.metadata {
        log::info!(
            "metadata: ENIs from the ECS instance metadata service at {} (fetched again every {} s; interfaces \
             it does not describe: {}); [[eni]] tables override it",
            ecs.base_url,
            ecs.ttl_secs,
            ecs.unmapped.as_str()
        );
    }
    // Each ENI that gets an interface is logged as it does (ids, where
    // they come from, the instances that capture it).
    for ev in &initial {
        capture.registry.apply(ev, now);
    }
    for idx in capture.registry.indices() {
        if capture.registry.ifindex(idx).is_none() {
            log::warn!(
                "{}; waiting for its interface to appear",
                capture.registry.describe(idx)
            );
        }
    }
    capture.baseline(now)?;

    let mut poll = Poll::new().map_err(io_err("cannot create the event loop"))?;
    let registry = poll.registry();
    registry
        .register(
            &mut SourceFd(&capture.events.as_raw_fd()),
            CONNTRACK,
            Interest::READABLE,
        )
        .map_err(io_err("cannot poll the conntrack socket"))?;
    registry
        .register(
            &mut SourceFd(&capture.route.as_raw_fd()),
            ROUTE,
            Interest::READABLE,
        )
        .map_err(io_err("cannot poll the rtnetlink socket"))?;
    registry
        .register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )
        .map_err(io_err("cannot poll the signalfd"))?;
    if let Some((socket, _)) = &capture.nflog {
        registry
            .register(
                &mut SourceFd(&socket.as_raw_fd()),
                NFLOG,
                Interest::READABLE,
            )
            .map_err(io_err("cannot poll the NFLOG socket"))?;
    }
    // The baseline used the dump socket blocking; from here on the loop
    // reads it in slices. A socket replaced since is registered anew.
    let _ = capture.dumper.take_reopened();
    register_dumper(&poll, &capture.dumper).map_err(io_err("cannot poll the dump socket"))?;
    capture.waker = Some(Arc::new(
        Waker::new(registry, METADATA).map_err(io_err("cannot create the event loop's waker"))?,
    ));
    if let MetadataSource::Ecs(ecs) = &capture.config.metadata {
        let ecs = ecs.clone();
        capture.start_metadata(&ecs);
    }
    log::info!(
        "capturing: window {} s, first window closes at {}",
        capture.config.daemon.capture_window_secs,
        capture.table.next_deadline()
    );

    let mut poll_events = Events::with_capacity(64);
    let lost = loop {
        // Events came in a trickle at the last read: let them gather.
        let trickle = std::mem::take(&mut capture.events_read);
        if trickle > 0 && trickle < EVENT_GATHER_BELOW && !capture.drain_pending {
            std::thread::sleep(EVENT_GATHER);
        }
        let timeout = if capture.drain_pending || capture.dump_pending {
            Duration::ZERO
        } else if capture.emitting.as_ref().is_some_and(|e| e.waiting)
            || capture.early.as_ref().is_some_and(|e| e.waiting)
        {
            EMIT_RETRY.min(until(capture.table.next_deadline()))
        } else {
            until(capture.table.next_deadline())
        };
        if let Err(e) = poll.poll(&mut poll_events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(RunError::Io {
                what: "event loop poll failed",
                source: e,
            });
        }
        let mut terminate = false;
        if std::mem::take(&mut capture.drain_pending) {
            capture.drain_conntrack();
            capture.drain_nflog();
        }
        let mut dump_readable = std::mem::take(&mut capture.dump_pending);
        for event in poll_events.iter() {
            match event.token() {
                DUMP => dump_readable = true,
                // Readiness may be reported once: every handler drains
                // its source until it would block.
                CONNTRACK => capture.drain_conntrack(),
                NFLOG => capture.drain_nflog(),
                ROUTE => capture.drain_route(),
                METADATA => capture.drain_metadata(),
                SIGNALS => loop {
                    match signals.next() {
                        Ok(Some(Signal::Terminate)) => terminate = true,
                        Ok(Some(Signal::Reload)) => capture.reload(),
                        Ok(Some(Signal::Reopen)) => capture.reopen_outputs("SIGUSR1"),
                        Ok(None) => break,
                        Err(e) => {
                            log::error!("reading signals failed: {e}");
                            break;
                        }
                    }
                },
                _ => {}
            }
        }
        // One slice of a running dump per iteration, after the event
        // sockets were served.
        if dump_readable && capture.dump.is_some() {
            capture.read_dump_slice();
        }
        if capture.emitting.is_some() || capture.early.is_some() {
            capture.emit_chunks(false);
        }
        if capture.resync_pending && capture.dump.is_none() {
            capture.resync_pending = false;
            capture.stats.resyncs += 1;
            capture.start_dump(DumpPurpose::Resync, std::time::Instant::now());
        }
        if terminate {
            let now = SystemClock.now_unix();
            log::info!("terminating: closing the open window early at {now}");
            capture.close_final_window(now);
            let lost_at_reload = capture.lost_at_reload;
            break capture.shutdown(tracking_table) + lost_at_reload;
        }
        if SystemClock.now_unix() >= capture.table.next_deadline() {
            if capture.table.is_closing() || capture.emitting.is_some() {
                log::warn!(
                    "the previous window's close is still running at the next window's end; finishing it now"
                );
                capture.finish_running_dump();
            }
            // The window about to close takes the half of the memory bound
            // that records still going out hold (window_memory_bytes).
            capture.emit_chunks(true);
            let deadline = capture.table.next_deadline();
            capture.begin_close(deadline);
        }
        if capture.dumper.take_reopened() {
            if let Err(e) = register_dumper(&poll, &capture.dumper) {
                log::error!("cannot poll the new dump socket: {e}; dumps are read when other sockets wake the loop");
            }
        }
    };
    Ok(lost)
}

/// Registers the dump socket, if there is one, for readability.
fn register_dumper(poll: &Poll, dumper: &ConntrackDumper) -> io::Result<()> {
    let fd = dumper.as_raw_fd();
    if fd < 0 {
        return Ok(());
    }
    poll.registry()
        .register(&mut SourceFd(&fd), DUMP, Interest::READABLE)
}

/// After an overrun: twice the buffer (the kernel reports double what it
/// grants, so asking for the reported size doubles it), if under `max`.
fn grown_buffer(granted: usize, max: u64) -> Option<usize> {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    (granted < max).then(|| granted.min(max / 2))
}

/// Keeps only CAP_NET_ADMIN (and becomes `daemon.user`), and checks that
/// `state_dir` (made at start, `startup::check_state_dir`, owned by that
/// user) is writable by whoever the daemon is then.
fn drop_privileges(config: &Config) -> Result<(), RunError> {
    let (state_dir, user) = (&config.daemon.state_dir, config.daemon.user.as_ref());
    let report = privileges::keep_only_net_admin(user).map_err(RunError::Privileges)?;
    log::info!("{report}");
    privileges::check_state_dir(state_dir, user).map_err(RunError::Privileges)
}

/// Time from now until Unix second `deadline` (zero if past).
fn until(deadline: i64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let target = Duration::from_secs(deadline.max(0) as u64);
    target.saturating_sub(now)
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

    fn drain_conntrack(&mut self) {
        let (table, registry) = (&mut self.table, &self.registry);
        let mut spills = SpillSender::new(
            &self.config,
            &self.dispatcher,
            &mut self.emitting,
            &mut self.early,
        );
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
            self.resync_pending = true;
            let granted = self.events.receive_buffer_granted();
            if let Some(bigger) = grown_buffer(granted, self.config.daemon.rcvbuf_max_bytes) {
                match self.events.set_receive_buffer(bigger) {
                    Ok(now) => {
                        log::warn!("conntrack: receive buffer grown from {granted} to {now} bytes")
                    }
                    Err(e) => log::warn!("conntrack: cannot grow the receive buffer: {e}"),
                }
            }
        }
        self.drain_pending |= s.more_pending;
        self.events_read += s.messages;
        LoopStats::add(&mut self.stats.conntrack, &s);
    }

    /// Before the last window closes: read events until the sockets have
    /// been quiet for a moment. A burst of DESTROY events can be larger than
    /// one drain's budget, and in reliable mode the kernel re-sends refused
    /// events from a worker a little later, so one empty read is not the
    /// end. Bounded by `shutdown_timeout_secs`; if events are still coming
    /// then, the window is marked SKIPDATA rather than closed as if whole.
    /// `when` says in the log which drain it was.
    fn drain_until_quiet(&mut self, when: &str) {
        const QUIET: Duration = Duration::from_millis(300);
        let deadline = std::time::Instant::now()
            + Duration::from_secs(self.config.daemon.shutdown_timeout_secs.into());
        let mut quiet_since = std::time::Instant::now();
        let mut drained = 0u64;
        loop {
            let before = self.stats.conntrack.entries + self.stats.nflog.entries;
            self.drain_conntrack();
            self.drain_nflog();
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

    fn drain_nflog(&mut self) {
        let Some((socket, rejects)) = &mut self.nflog else {
            return;
        };
        let (table, registry) = (&mut self.table, &self.registry);
        let mut spills = SpillSender::new(
            &self.config,
            &self.dispatcher,
            &mut self.emitting,
            &mut self.early,
        );
        let s = socket.drain(|packet| {
            rejects.on_packet(registry, table, &packet);
            spills.send(table, registry);
        });
        let gaps = socket.take_loss().sequence_gaps;
        if s.overruns > 0 || gaps > 0 {
            // Dropped packets the kernel logged but could not hand us: which
            // ENIs they were on is unknown, so every ENI's window is marked.
            log::error!(
                "nflog: lost logged packets ({} overruns, {gaps} missing sequence numbers) with a {} byte receive \
                 buffer; marking this window SKIPDATA",
                s.overruns,
                socket.receive_buffer_granted()
            );
            self.table.mark_lost(LossScope::All);
            let granted = socket.receive_buffer_granted();
            if let Some(bigger) = grown_buffer(granted, self.config.daemon.rcvbuf_max_bytes) {
                match socket.set_receive_buffer(bigger) {
                    Ok(now) => {
                        log::warn!("nflog: receive buffer grown from {granted} to {now} bytes")
                    }
                    Err(e) => log::warn!("nflog: cannot grow the receive buffer: {e}"),
                }
            }
        }
        if s.parse_errors > 0 {
            log::warn!("nflog: {} malformed messages skipped", s.parse_errors);
        }
        self.drain_pending |= s.more_pending;
        LoopStats::add(&mut self.stats.nflog, &s);
    }

    fn drain_route(&mut self) {
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
                self.harvest_now();
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
                        self.harvest_now();
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
    fn after_registry_change(&mut self) {
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
    fn start_metadata(&mut self, ecs: &EcsConfig) {
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
    fn drain_metadata(&mut self) {
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
