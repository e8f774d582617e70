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
//! next window, and the records go out when the dump ends (`closer`).
//!
//! This file is the loop; beside it: `sources` opens and registers the
//! sockets, `build` builds the capture state (start-up and reload alike),
//! `state` is that state and its event handlers, `closer` closes windows
//! and sends their records out, `reload` and `sink_swap` handle SIGHUP.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::{Events, Poll};

use crate::config::{Config, MetadataSource};
use crate::control::{ControlServer, ControlSocketError, SocketFile};
use crate::flows::{Clock, SystemClock};
use crate::metrics::{MetricsServer, SnapshotCell};
use crate::notify;
use crate::signals::{Signal, SignalFd};
use crate::startup;

mod build;
mod closer;
mod enforce;
mod error;
mod publish;
mod reload;
mod rule_names;
mod sink_swap;
mod sources;
mod state;

pub use error::RunError;
pub use sources::EVENT_SUBSCRIPTION;

use build::ConfigState;
use closer::{WindowCloser, EMIT_RETRY};
use error::io_err;
use publish::MetricsPublisher;
use sources::{Sources, CONNTRACK, DUMP, ENFORCEMENT, METADATA, NFLOG, ROUTE, SIGNALS};
use state::Capture;

/// While events are arriving, the loop lets them gather this long before
/// it reads again: the kernel sends each conntrack event as a datagram of
/// its own, and reading them a few at a time costs a wake-up and a system
/// call for each few. The socket's buffer holds far more than this much.
const EVENT_GATHER: Duration = Duration::from_millis(4);
/// A read of fewer messages than this counts as "a few".
const EVENT_GATHER_BELOW: u64 = 64;

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
    // The snapshot the loop publishes, for the metrics endpoint and the
    // control socket.
    let cell = Arc::new(SnapshotCell::default());
    // Before anything is installed: a taken port is a start-up error.
    let metrics = bind_metrics(&config, &cell)?;
    let state = ConfigState::new(&config).map_err(|e| build::registry_error(&config, &e))?;
    let mut sources = Sources::open(&config)?;
    let tracking_table = sources.tracking_table.take();
    // Everything that needs more than CAP_NET_ADMIN is done; the sinks (and
    // every reload) run with what is left.
    sources::drop_privileges(&config)?;
    // Threads start only now: dropping privileges needs a process of one
    // thread (capabilities are per thread).
    metrics.map(serve_metrics).transpose()?;
    // Bound as the daemon's user, so the socket is that user's.
    let _control_socket = serve_control(&config, &cell)?;
    let dispatcher = startup::start_sinks(&config, Some(&startup::spool_settings(&config)))
        .map_err(RunError::Config)?;
    let mut capture = build::start(config, state, sources, dispatcher)?;
    let mut closer = WindowCloser::default();
    let mut publisher = MetricsPublisher::new(cell, &capture, &closer);

    let mut poll = Poll::new().map_err(io_err("cannot create the event loop"))?;
    capture.waker = Some(sources::register(&poll, &mut capture, &signals)?);
    if let MetadataSource::Ecs(ecs) = &capture.config.metadata {
        let ecs = ecs.clone();
        capture.start_metadata(&ecs);
    }
    log::info!(
        "capturing: window {} s, first window closes at {}",
        capture.config.daemon.capture_window_secs,
        capture.table.next_deadline()
    );
    // Baseline taken, sinks open, sockets registered: systemd may start
    // what waits for us, and arms the watchdog fed below.
    capture.notify.ready(Some(&format!(
        "capturing; first window closes at {} UTC",
        notify::utc_time_of_day(capture.table.next_deadline())
    )));

    let mut poll_events = Events::with_capacity(64);
    loop {
        // Fed by the loop itself: a loop that stops turning stops feeding
        // it (the poll below waits no longer than the next feed is due).
        capture.notify.feed_watchdog();
        // Events came in a trickle at the last read: let them gather.
        let trickle = std::mem::take(&mut capture.flags.events_read);
        if trickle > 0 && trickle < EVENT_GATHER_BELOW && !capture.flags.drain_pending {
            std::thread::sleep(EVENT_GATHER);
        }
        let timeout = poll_timeout(&capture, &closer).min(publisher.wait_at_most());
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
        if std::mem::take(&mut capture.flags.drain_pending) {
            capture.drain_conntrack(&mut closer);
            capture.drain_nflog(&mut closer);
            capture.drain_enforcement(&mut closer);
        }
        let mut dump_readable = closer.take_dump_pending();
        for event in poll_events.iter() {
            match event.token() {
                DUMP => dump_readable = true,
                // Readiness may be reported once: every handler drains
                // its source until it would block.
                CONNTRACK => capture.drain_conntrack(&mut closer),
                NFLOG => capture.drain_nflog(&mut closer),
                ENFORCEMENT => capture.drain_enforcement(&mut closer),
                ROUTE => capture.drain_route(&mut closer),
                METADATA => capture.drain_metadata(),
                SIGNALS => terminate |= read_signals(&mut signals, &mut capture, &mut closer),
                _ => {}
            }
        }
        // After the event sockets were served: one slice of a running
        // dump per iteration, the records going out, a resync due.
        closer.serve(&mut capture, dump_readable);
        if terminate {
            capture
                .notify
                .stopping("stopping: closing the open window early");
            return Ok(capture.terminate(&mut closer, tracking_table));
        }
        if SystemClock.now_unix() >= capture.table.next_deadline() {
            closer.close_window(&mut capture);
        }
        sources::register_reopened_dumper(&poll, &mut capture.dumper);
        publisher.after_turn(&capture, &closer);
    }
}

/// Binds `metrics.listen`, unless it is off.
fn bind_metrics(
    config: &Config,
    cell: &Arc<SnapshotCell>,
) -> Result<Option<MetricsServer>, RunError> {
    let Some(addr) = config.metrics_listen else {
        return Ok(None);
    };
    let server = MetricsServer::bind(addr, Arc::clone(cell))
        .map_err(|source| RunError::Metrics { addr, source })?;
    Ok(Some(server))
}

/// Starts the metrics thread, which serves what the loop publishes.
fn serve_metrics(server: MetricsServer) -> Result<(), RunError> {
    let addr = server.local_addr().ok();
    server
        .spawn()
        .map_err(io_err("cannot start the metrics thread"))?;
    if let Some(addr) = addr {
        log::info!("metrics: serving http://{addr}/metrics");
    }
    Ok(())
}

/// Binds `state_dir/control.sock` and starts its thread; the returned
/// guard removes the socket when the run ends. Daemons of several network
/// namespaces may share a `state_dir` (see `run_marker`): the socket is
/// the first one's, and the others run without one, saying so.
fn serve_control(
    config: &Config,
    cell: &Arc<SnapshotCell>,
) -> Result<Option<SocketFile>, RunError> {
    let started = SystemClock.now_unix();
    let (server, file) = match ControlServer::bind(
        &config.daemon.state_dir,
        Arc::clone(cell),
        started,
    ) {
        Ok(bound) => bound,
        Err(e @ ControlSocketError::InUse { .. }) => {
            log::warn!("{e}; this daemon runs without a control socket (flowlogd status and top reach the other)");
            return Ok(None);
        }
        Err(e) => return Err(RunError::Control(e)),
    };
    log::info!("control: listening on {}", server.path().display());
    server
        .spawn()
        .map_err(io_err("cannot start the control socket thread"))?;
    Ok(Some(file))
}

/// How long `poll` may wait: not at all while a drain or a dump has data
/// queued, a little while records wait for room in the sinks' queues,
/// otherwise until the window's end; never past the watchdog's next feed.
fn poll_timeout(capture: &Capture, closer: &WindowCloser) -> Duration {
    let timeout = if capture.flags.drain_pending || closer.has_dump_pending() {
        Duration::ZERO
    } else if closer.waits_for_sinks() {
        EMIT_RETRY.min(until(capture.table.next_deadline()))
    } else {
        until(capture.table.next_deadline())
    };
    match capture.notify.watchdog_due_in() {
        Some(due) => timeout.min(due),
        None => timeout,
    }
}

/// Reads every queued signal; `true` if one asks to terminate.
fn read_signals(signals: &mut SignalFd, capture: &mut Capture, closer: &mut WindowCloser) -> bool {
    let mut terminate = false;
    loop {
        match signals.next() {
            Ok(Some(Signal::Terminate)) => terminate = true,
            Ok(Some(Signal::Reload)) => {
                // READY=1 follows whether the reload took or was refused:
                // systemd waits for it either way.
                capture.notify.reloading();
                capture.reload(closer);
                capture.notify.ready(None);
            }
            Ok(Some(Signal::Reopen)) => capture.reopen_outputs("SIGUSR1"),
            Ok(None) => return terminate,
            Err(e) => {
                log::error!("reading signals failed: {e}");
                return terminate;
            }
        }
    }
}

/// Time from now until Unix second `deadline` (zero if past).
fn until(deadline: i64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let target = Duration::from_secs(deadline.max(0) as u64);
    target.saturating_sub(now)
}
