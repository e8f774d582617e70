//! The window closer: it owns the running conntrack dump and the records
//! on their way out. Closing a window does not stall the loop: the dump that
//! harvests the closing window is read in slices between the event sockets
//! (`start_dump`, `read_dump_slice`, `end_dump`), and the closed window's
//! records go to the sinks in chunks as their queues drain (`emit_chunks`).
//! Where the daemon needs the table's state at once (an ENI losing an
//! address, a reload, shutdown) a running dump is finished blocking
//! (`finish_running_dump`). The last window, at shutdown, is closed only
//! once its dump and the events that follow it are in
//! (`close_final_window`). Its methods take the capture state beside it
//! (`Capture`), whose event drains they call around each dump.

use std::io;
use std::time::Duration;

use super::state::Capture;
use crate::config::Config;
use crate::instances::InstanceDrain;
use crate::metrics::WindowOutput;
use crate::model::ConntrackEntry;
use crate::netlink::{DumpStats, DumpStep};
use crate::notify;
use crate::sinks::Dispatcher;

mod emit;

pub(super) use emit::EMIT_RETRY;
use emit::{send_chunks, EarlyEmit, EmitPacing, SpillSender};

/// Datagrams of a running dump read per loop iteration. A dump datagram
/// holds about 100 entries, which take the kernel and the parser about
/// 0.3 ms: a slice stalls the other sockets for a few milliseconds.
const DUMP_SLICE_DATAGRAMS: usize = 16;

/// The running dump and the records on their way to the sinks.
#[derive(Default)]
pub(super) struct WindowCloser {
    /// The conntrack dump the loop is reading in slices, if one runs.
    dump: Option<RunningDump>,
    /// The running dump has replies queued beyond the last slice's budget.
    dump_pending: bool,
    /// The closed window whose records are being sent, chunk by chunk.
    emitting: Option<EmittingWindow>,
    /// Sums emitted early at the memory bound, being sent chunk by chunk
    /// after `emitting`.
    early: Option<EarlyEmit>,
    /// What the windows' records were, for metrics.
    output: WindowOutput,
}

/// A closed window on its way to the sinks.
struct EmittingWindow {
    drain: InstanceDrain,
    /// The close's dump, for its costs in the window's log line.
    close: RunningDump,
    dump_entries: u64,
    /// The sinks' queues were full at the last try.
    waiting: bool,
}

/// Why a dump runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DumpPurpose {
    /// It harvests the window being closed ([`FlowTable::begin_close`]).
    CloseWindow,
    /// An overrun lost events: the table is read again.
    Resync,
    /// Connections are harvested now, before an ENI loses an address.
    Harvest,
    /// Shutdown: the dump harvests into the open window, which closes at
    /// `end` only after the dump and the events it caused are read.
    FinalClose { end: i64 },
}

/// A dump in progress and what it costs the capture thread.
struct RunningDump {
    purpose: DumpPurpose,
    /// When the close (or the dump) began.
    began: std::time::Instant,
    /// Capture-thread time spent on it so far: the slices, the begin and
    /// the end.
    busy: Duration,
    /// The longest of those stretches: how long the loop served no socket.
    longest: Duration,
    /// Reads of the dump's replies (each at most `DUMP_SLICE_DATAGRAMS`
    /// datagrams, or one blocking read to the end).
    slices: u32,
}

impl RunningDump {
    fn new(purpose: DumpPurpose, began: std::time::Instant) -> Self {
        RunningDump {
            purpose,
            began,
            busy: Duration::ZERO,
            longest: Duration::ZERO,
            slices: 0,
        }
    }

    /// One stretch of capture-thread time spent on the dump.
    fn account(&mut self, stretch: Duration) {
        self.busy += stretch;
        self.longest = self.longest.max(stretch);
    }

    /// A stretch that read replies.
    fn account_read(&mut self, stretch: Duration) {
        self.account(stretch);
        self.slices += 1;
    }
}

impl WindowCloser {
    /// What sends a window's sums out early at the memory bound, for the
    /// loops that read events (beside the table they fill).
    pub(super) fn spills<'a>(
        &'a mut self,
        config: &'a Config,
        dispatcher: &'a Dispatcher,
    ) -> SpillSender<'a> {
        SpillSender::new(
            config,
            dispatcher,
            &mut self.emitting,
            &mut self.early,
            &mut self.output,
        )
    }

    /// What the windows' records were so far, for metrics.
    pub(super) fn output(&self) -> &WindowOutput {
        &self.output
    }

    /// The running dump has replies queued beyond the last slice: the loop
    /// polls without waiting and reads on.
    pub(super) fn has_dump_pending(&self) -> bool {
        self.dump_pending
    }

    /// [`Self::has_dump_pending`], reset for the loop's turn.
    pub(super) fn take_dump_pending(&mut self) -> bool {
        std::mem::take(&mut self.dump_pending)
    }

    /// Records wait for room in the sinks' queues: the loop looks again
    /// soon (`EMIT_RETRY`).
    pub(super) fn waits_for_sinks(&self) -> bool {
        self.emitting.as_ref().is_some_and(|e| e.waiting)
            || self.early.as_ref().is_some_and(|e| e.waiting)
    }

    /// The loop's turn after the event sockets were served: one slice of a
    /// running dump (if its socket was readable), chunks of what is going
    /// out, and the resync dump an overrun asked for, once no dump runs.
    pub(super) fn serve(&mut self, c: &mut Capture, dump_readable: bool) {
        if dump_readable && self.dump.is_some() {
            self.read_dump_slice(c);
        }
        if self.emitting.is_some() || self.early.is_some() {
            self.emit_chunks(c, false);
        }
        if c.flags.resync_pending && self.dump.is_none() {
            c.flags.resync_pending = false;
            c.stats.resyncs += 1;
            self.start_dump(c, DumpPurpose::Resync, std::time::Instant::now());
        }
    }

    /// The open window's end has come: a close still running is finished,
    /// and this window's close begins.
    pub(super) fn close_window(&mut self, c: &mut Capture) {
        if c.table.is_closing() || self.emitting.is_some() {
            log::warn!(
                "the previous window's close is still running at the next window's end; finishing it now"
            );
            self.finish_running_dump(c);
        }
        // The window about to close takes the half of the memory bound
        // that records still going out hold (window_memory_bytes).
        self.emit_chunks(c, true);
        let deadline = c.table.next_deadline();
        self.begin_close(c, deadline);
    }

    /// Starts a dump that the loop reads in slices (`read_dump_slice`).
    /// Events queued before it are applied first, so the dump and the
    /// events agree on what is gone.
    fn start_dump(&mut self, c: &mut Capture, purpose: DumpPurpose, began: std::time::Instant) {
        let started = std::time::Instant::now();
        c.drain_conntrack(self);
        c.table.begin_dump();
        let mut running = RunningDump::new(purpose, began);
        match c.dumper.start() {
            Ok(()) => {
                running.account(started.elapsed());
                self.dump = Some(running);
                // The kernel queues the first replies at once.
                self.dump_pending = true;
            }
            Err(e) => {
                self.dump = Some(running);
                self.end_dump(c, Err(e));
            }
        }
    }

    /// One slice of the running dump.
    fn read_dump_slice(&mut self, c: &mut Capture) {
        self.read_dump(c, Some(DUMP_SLICE_DATAGRAMS));
    }

    /// Reads the running dump to its end, blocking: before anything that
    /// needs the table as it is now (a harvest, a reload, shutdown).
    pub(super) fn finish_running_dump(&mut self, c: &mut Capture) {
        if self.dump.is_none() {
            return;
        }
        self.read_dump(c, None);
    }

    /// Reads at most `budget` datagrams of the running dump, or all of it
    /// blocking if `None` (feeding the watchdog as it goes): every entry is
    /// applied to the table and any spill it causes is sent.
    fn read_dump(&mut self, c: &mut Capture, budget: Option<usize>) {
        let started = std::time::Instant::now();
        let (table, registry, notify) = (&mut c.table, &c.registry, &mut c.notify);
        let mut spills = SpillSender::new(
            &c.config,
            &c.dispatcher,
            &mut self.emitting,
            &mut self.early,
            &mut self.output,
        );
        let on_entry = |entry: ConntrackEntry| {
            table.on_dump_entry(registry, &entry);
            spills.send(table, registry);
            if budget.is_none() {
                notify.feed_watchdog_amid_work();
            }
        };
        let step = match budget {
            Some(datagrams) => c.dumper.read_some(datagrams, on_entry),
            None => c.dumper.finish(on_entry).map(DumpStep::Done),
        };
        if let Some(d) = &mut self.dump {
            d.account_read(started.elapsed());
        }
        match step {
            Ok(DumpStep::Running { more_queued }) => self.dump_pending = more_queued,
            Ok(DumpStep::Done(stats)) => self.end_dump(c, Ok(stats)),
            Err(e) => self.end_dump(c, Err(e)),
        }
    }

    /// The running dump is over: connections it no longer listed are
    /// judged, and the window it closed is emitted.
    fn end_dump(&mut self, c: &mut Capture, result: io::Result<DumpStats>) {
        let started = std::time::Instant::now();
        let Some(mut running) = self.dump.take() else {
            return;
        };
        self.dump_pending = false;
        // DESTROY events the dump itself caused (it evicts expired entries)
        // or that raced with it are applied before the dump is judged.
        c.drain_conntrack(self);
        let mut entries = 0;
        match result {
            Ok(s) => {
                entries = s.entries;
                c.stats.dump_parse_errors += s.parse_errors;
                if s.interrupted {
                    c.stats.dumps_interrupted += 1;
                    log::warn!("conntrack dump was interrupted by a table resize; counters will be harvested later");
                }
                c.table.end_dump(!s.interrupted);
            }
            Err(e) => {
                log::error!("conntrack dump failed: {e}; long-lived connections are harvested at the next dump");
                c.table.end_dump(false);
            }
        }
        running.account(started.elapsed());
        match running.purpose {
            DumpPurpose::CloseWindow => self.emit_closed_window(c, running, entries),
            DumpPurpose::FinalClose { end } => {
                // The dump evicted the expired entries it passed (the kernel
                // removes them lazily, so after idle flows this is where most
                // go); their DESTROY events, and those the kernel re-sends a
                // little later, are this last window's too.
                c.drain_until_quiet(self, "after the final dump");
                c.note_queue_drops();
                c.table.begin_close(end);
                self.emit_closed_window(c, running, entries);
            }
            DumpPurpose::Resync | DumpPurpose::Harvest => {}
        }
    }

    /// Harvests every live connection now (blocking): a running dump is
    /// read to its end, otherwise a new one is made.
    pub(super) fn harvest_now(&mut self, c: &mut Capture) {
        if self.dump.is_none() {
            self.start_dump(c, DumpPurpose::Harvest, std::time::Instant::now());
        }
        self.finish_running_dump(c);
    }

    /// Begins closing the open window at `end`: queued events and drops
    /// count in it, and a dump harvests its long-lived connections; the
    /// records go out when the dump ends (`end_dump`).
    fn begin_close(&mut self, c: &mut Capture, end: i64) {
        let began = std::time::Instant::now();
        c.drain_nflog(self);
        c.drain_conntrack(self);
        c.note_queue_drops();
        c.table.begin_close(end);
        self.start_dump(c, DumpPurpose::CloseWindow, began);
    }

    /// SIGTERM: closes the open window at `end` and emits it, blocking.
    /// Unlike a window's regular close, no event counts in a next window
    /// (there is none): the dump harvests into the open window, and the
    /// window closes only once the events queued before the dump, those it
    /// caused and those that follow it have been read into it. What comes
    /// later still is in the connections the handoff carries to the next
    /// run.
    pub(super) fn close_final_window(&mut self, c: &mut Capture, end: i64) {
        // A close in progress is finished first, under its own bounds.
        self.finish_running_dump(c);
        self.emit_chunks(c, true);
        c.drain_until_quiet(self, "before the final dump");
        self.start_dump(
            c,
            DumpPurpose::FinalClose { end },
            std::time::Instant::now(),
        );
        self.finish_running_dump(c);
        self.emit_chunks(c, true);
    }

    /// The window whose close dump just ended: its records start out to
    /// the sinks.
    fn emit_closed_window(&mut self, c: &mut Capture, running: RunningDump, dump_entries: u64) {
        let started = std::time::Instant::now();
        let Some(drain) = c.table.finish_close(&c.registry) else {
            return;
        };
        let (flags_unmatched, flags_dropped) = drain.tcp_flags_unused();
        if flags_unmatched > 0 {
            log::debug!(
                "tcp flags: {flags_unmatched} tuples' flags found no ACCEPT record in the window"
            );
        }
        if flags_dropped > 0 {
            log::warn!(
                "tcp flags: {flags_dropped} packets' flags dropped at the window's memory bound"
            );
        }
        let drain = InstanceDrain::new(drain, &c.config.flow_logs, &c.registry);
        let (held, held_dropped) = (drain.held, drain.held_dropped);
        if held > 0 {
            log::info!(
                "metadata: {held} records held for ENIs waiting for their ids; they go out with the window in which \
                 the ids are known"
            );
        }
        if held_dropped > 0 {
            log::error!(
                "metadata: {held_dropped} held records dropped (too many while the metadata service is down); their \
                 ENIs' windows will say SKIPDATA"
            );
        }
        let mut close = running;
        close.account(started.elapsed());
        self.emitting = Some(EmittingWindow {
            drain,
            close,
            dump_entries,
            waiting: false,
        });
        self.emit_chunks(c, false);
    }

    /// Sends chunks of the closed window's records while the sinks' queues
    /// have room (all of them if `force`: before the next window, a reload
    /// or shutdown); at the last, flushes the sinks and logs the window.
    pub(super) fn emit_chunks(&mut self, c: &mut Capture, force: bool) {
        let Some(mut e) = self.emitting.take() else {
            return self.emit_early_chunks(c, force);
        };
        let started = std::time::Instant::now();
        let pacing = EmitPacing::new(c.config.daemon.sink_queue_records, c.config.flow_logs.len());
        let done = send_chunks(
            &c.config,
            &c.dispatcher,
            pacing,
            &mut e.drain,
            !force,
            &mut self.output,
        );
        e.waiting = !done;
        e.close.account(started.elapsed());
        if !done {
            self.emitting = Some(e);
            return;
        }
        c.dispatcher
            .flush_all(flowlogd_plugin_api::abi::FLUSH_WINDOW_END);
        Self::log_window(c, &e);
        self.output.window_closed(e.close.began.elapsed());
        self.emit_early_chunks(c, force);
    }

    /// Sends chunks of the sums emitted early while the sinks' queues have
    /// room (all of them if `force`), after any closed window's records.
    fn emit_early_chunks(&mut self, c: &mut Capture, force: bool) {
        if self.emitting.is_some() {
            return;
        }
        let Some(mut e) = self.early.take() else {
            return;
        };
        let pacing = EmitPacing::new(c.config.daemon.sink_queue_records, c.config.flow_logs.len());
        let done = send_chunks(
            &c.config,
            &c.dispatcher,
            pacing,
            &mut e.drain,
            !force,
            &mut self.output,
        );
        e.waiting = !done;
        if !done {
            self.early = Some(e);
        }
    }

    /// The window line: what the window produced and cost, and the loop's
    /// counters so far.
    fn log_window(capture: &Capture, e: &EmittingWindow) {
        let window = e.drain.window;
        let count = e.drain.records_emitted();
        let t = capture.table.stats();
        let c = &capture.stats.conntrack;
        capture.notify.status(&format!(
            "window {}-{} UTC: {count} records, {} live flows, {} SKIPDATA",
            notify::utc_time_of_day(window.start),
            notify::utc_time_of_day(window.end),
            t.entries,
            e.drain.skipdata_records()
        ));
        if let Some((_, rejects)) = &capture.nflog {
            let r = rejects.stats();
            let n = &capture.stats.nflog;
            log::info!(
                "nflog: {} packets, {} malformed, {} overruns, {} foreign; {} with a foreign prefix ignored, {} not on \
                 an ENI, {} unreadable headers",
                n.entries,
                n.parse_errors,
                n.overruns,
                n.foreign,
                r.foreign_prefix,
                r.not_on_an_eni,
                r.bad_headers
            );
        }
        log::info!(
            "window {}-{}: {count} records in {} ms; {} early emits at the memory bound before; closing took {} ms \
             of the capture thread, longest stall {} ms (dump of {} entries in {} slices); {} live connections \
             (peak {}), table {} bytes; conntrack: {} events, {} malformed, {} overruns, {} foreign, {} resyncs; \
             lost connections {} ({} came back), table-full drops {}, anomalies {}",
            window.start,
            window.end,
            e.close.began.elapsed().as_millis(),
            e.drain.early_spills,
            e.close.busy.as_millis(),
            e.close.longest.as_millis(),
            e.dump_entries,
            e.close.slices,
            t.entries,
            t.peak_entries,
            capture.table.table_bytes(),
            c.entries,
            c.parse_errors + capture.stats.dump_parse_errors,
            c.overruns,
            c.foreign,
            capture.stats.resyncs,
            t.lost_connections,
            t.revived,
            t.table_full_drops,
            t.anomalies
        );
        let foreign = capture.stats.foreign();
        if foreign > 0 {
            // Each socket logged its first one with the sender; from then
            // on only this count. They were skipped unread, which loses
            // nothing the kernel sent: no SKIPDATA for them.
            log::warn!(
                "netlink: {foreign} datagrams from other processes ignored so far (conntrack {}, rtnetlink {}, \
                 nflog {})",
                c.foreign,
                capture.stats.route.foreign,
                capture.stats.nflog.foreign
            );
        }
    }
}
