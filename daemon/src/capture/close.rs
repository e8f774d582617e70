//! Closing a window without stalling the loop: the conntrack dump that
//! harvests the closing window is read in slices between the event sockets
//! (`start_dump`, `read_dump_slice`, `end_dump`), and the closed window's
//! records go to the sinks in chunks as their queues drain (`emit_chunks`).
//! Where the daemon needs the table's state at once (an ENI losing an
//! address, a reload, shutdown) a running dump is finished blocking
//! (`finish_running_dump`). The last window, at shutdown, is closed only
//! once its dump and the events that follow it are in
//! (`close_final_window`).

use std::io;
use std::time::Duration;

use super::Capture;
use crate::config::Config;
use crate::eni::EniRegistry;
use crate::flows::{FlowTable, SystemClock};
use crate::instances::{self, InstanceDrain};
use crate::netlink::{DumpStats, DumpStep};
use crate::sinks::Dispatcher;

/// Datagrams of a running dump read per loop iteration. A dump datagram
/// holds about 100 entries, which take the kernel and the parser about
/// 0.3 ms: a slice stalls the other sockets for a few milliseconds.
const DUMP_SLICE_DATAGRAMS: usize = 16;

/// Most records per chunk of a closed window sent to the sinks (about
/// 0.5 MB): the window's records become sink records a chunk at a time.
const EMIT_CHUNK_RECORDS: usize = 4 * 1024;
/// How soon the loop looks again at queues that had no room.
pub(super) const EMIT_RETRY: Duration = Duration::from_millis(5);

/// How a closed window goes out for a sink queue bound of `capacity`
/// records and `instances` flow logs: chunks of at most `chunk` records,
/// the next one only while every sink's queue holds fewer than
/// `low_water`. So the records wait in the aggregate's compact form rather
/// than as sink records in a queue, and a sink slower than capture does
/// not make the queue overflow. A sink that stays behind keeps the rest
/// until the next window closes, which then sends all of it (the queue's
/// bound counts and reports what does not fit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EmitPacing {
    chunk: usize,
    low_water: u64,
}

impl EmitPacing {
    fn new(capacity: u64, instances: usize) -> Self {
        // One chunk can reach one sink once per instance naming it: a
        // quarter of the queue per chunk leaves room for it and more.
        let per_instance = capacity / 4 / instances.max(1) as u64;
        let chunk = usize::try_from(per_instance)
            .unwrap_or(usize::MAX)
            .clamp(1, EMIT_CHUNK_RECORDS);
        EmitPacing {
            chunk,
            low_water: (2 * chunk as u64).min(capacity / 2).max(1),
        }
    }
}

/// Sends chunks of `drain` to the sinks of the instances that take them:
/// if `paced`, only while every sink's queue is under the low-water mark,
/// otherwise all of them. `true` when the drain is empty.
fn send_chunks(
    config: &Config,
    dispatcher: &Dispatcher,
    pacing: EmitPacing,
    drain: &mut InstanceDrain,
    paced: bool,
) -> bool {
    loop {
        if paced && dispatcher.most_queued_records() >= pacing.low_water {
            return false;
        }
        match drain.next_chunk(pacing.chunk) {
            Some(chunk) => instances::dispatch_chunk(config, dispatcher, &chunk),
            None => return true,
        }
    }
}

/// Sums a window emitted early at its memory bound
/// (`daemon.window_memory_bytes`), on their way to the sinks, paced like a
/// closed window's records.
pub(super) struct EarlyEmit {
    drain: InstanceDrain,
    /// The sinks' queues were full at the last try.
    pub(super) waiting: bool,
}

/// Takes a window's sums out of the flow table as soon as they reach the
/// memory bound: inside the loops that read events and dump lines, so that
/// no second batch builds up behind the first. Besides the open window's
/// sums, one other window's may be in memory (half the bound each): a
/// closing window's during its dump, a closed window's records going out,
/// or an earlier early emit. So what is already going out is sent at once
/// to make room (what a sink's queue cannot take goes where the queue's
/// bound sends it), and the new early emit is paced by the loop, unless a
/// window is closing, when it too is sent at once.
pub(super) struct SpillSender<'a> {
    config: &'a Config,
    dispatcher: &'a Dispatcher,
    emitting: &'a mut Option<EmittingWindow>,
    early: &'a mut Option<EarlyEmit>,
}

impl<'a> SpillSender<'a> {
    /// Takes the fields it needs, so that the table can be borrowed beside it.
    pub(super) fn new(
        config: &'a Config,
        dispatcher: &'a Dispatcher,
        emitting: &'a mut Option<EmittingWindow>,
        early: &'a mut Option<EarlyEmit>,
    ) -> Self {
        SpillSender {
            config,
            dispatcher,
            emitting,
            early,
        }
    }

    pub(super) fn send(&mut self, table: &mut FlowTable<SystemClock>, registry: &EniRegistry) {
        if !table.has_spill() {
            return;
        }
        let pacing = EmitPacing::new(
            self.config.daemon.sink_queue_records,
            self.config.flow_logs.len(),
        );
        while let Some(drain) = table.take_spill(registry) {
            let drain = InstanceDrain::new(drain, &self.config.flow_logs, registry);
            let w = drain.window;
            log::warn!(
                "memory bound: the sums of window [{}, {}) reached {} bytes (half of daemon.window_memory_bytes, \
                 the other half is for another window's records on their way out); its {} sums go out early as \
                 records of that window (early emit {} of it; a 5-tuple may have more than one record in the \
                 window, and they sum exactly)",
                w.start,
                w.end,
                self.config.daemon.window_memory_bytes / 2,
                drain.sums_left(),
                drain.early_spills
            );
            if drain.held_dropped > 0 {
                log::error!(
                    "metadata: {} held records dropped at the window's memory bound; their ENIs' windows will say \
                     SKIPDATA",
                    drain.held_dropped
                );
            }
            // Room for this one: what is going out goes at once. A closed
            // window's drain stays in `emitting`, empty, for the loop to
            // flush the sinks and log its window line.
            if let Some(e) = self.emitting.as_mut() {
                send_chunks(self.config, self.dispatcher, pacing, &mut e.drain, false);
            }
            if let Some(mut previous) = self.early.take() {
                send_chunks(
                    self.config,
                    self.dispatcher,
                    pacing,
                    &mut previous.drain,
                    false,
                );
            }
            let mut early = EarlyEmit {
                drain,
                waiting: false,
            };
            if table.is_closing() {
                send_chunks(
                    self.config,
                    self.dispatcher,
                    pacing,
                    &mut early.drain,
                    false,
                );
            } else {
                *self.early = Some(early);
            }
        }
    }
}

/// A closed window on its way to the sinks.
pub(super) struct EmittingWindow {
    drain: InstanceDrain,
    /// The close's dump, for its costs in the window's log line.
    close: RunningDump,
    dump_entries: u64,
    /// The sinks' queues were full at the last try.
    pub(super) waiting: bool,
}

/// Why a dump runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DumpPurpose {
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
pub(super) struct RunningDump {
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

impl Capture {
    /// Starts a dump that the loop reads in slices (`read_dump_slice`).
    /// Events queued before it are applied first, so the dump and the
    /// events agree on what is gone.
    pub(super) fn start_dump(&mut self, purpose: DumpPurpose, began: std::time::Instant) {
        let started = std::time::Instant::now();
        self.drain_conntrack();
        self.table.begin_dump();
        let mut running = RunningDump::new(purpose, began);
        match self.dumper.start() {
            Ok(()) => {
                running.account(started.elapsed());
                self.dump = Some(running);
                // The kernel queues the first replies at once.
                self.dump_pending = true;
            }
            Err(e) => {
                self.dump = Some(running);
                self.end_dump(Err(e));
            }
        }
    }

    /// One slice of the running dump.
    pub(super) fn read_dump_slice(&mut self) {
        let started = std::time::Instant::now();
        let (table, registry) = (&mut self.table, &self.registry);
        let mut spills = SpillSender::new(
            &self.config,
            &self.dispatcher,
            &mut self.emitting,
            &mut self.early,
        );
        let step = self.dumper.read_some(DUMP_SLICE_DATAGRAMS, |entry| {
            table.on_dump_entry(registry, &entry);
            spills.send(table, registry);
        });
        if let Some(d) = &mut self.dump {
            d.account_read(started.elapsed());
        }
        match step {
            Ok(DumpStep::Running { more_queued }) => self.dump_pending = more_queued,
            Ok(DumpStep::Done(stats)) => self.end_dump(Ok(stats)),
            Err(e) => self.end_dump(Err(e)),
        }
    }

    /// Reads the running dump to its end, blocking: before anything that
    /// needs the table as it is now (a harvest, a reload, shutdown).
    pub(super) fn finish_running_dump(&mut self) {
        if self.dump.is_none() {
            return;
        }
        let started = std::time::Instant::now();
        let (table, registry) = (&mut self.table, &self.registry);
        let mut spills = SpillSender::new(
            &self.config,
            &self.dispatcher,
            &mut self.emitting,
            &mut self.early,
        );
        let result = self.dumper.finish(|entry| {
            table.on_dump_entry(registry, &entry);
            spills.send(table, registry);
        });
        if let Some(d) = &mut self.dump {
            d.account_read(started.elapsed());
        }
        self.end_dump(result);
    }

    /// The running dump is over: connections it no longer listed are
    /// judged, and the window it closed is emitted.
    fn end_dump(&mut self, result: io::Result<DumpStats>) {
        let started = std::time::Instant::now();
        let Some(mut running) = self.dump.take() else {
            return;
        };
        self.dump_pending = false;
        // DESTROY events the dump itself caused (it evicts expired entries)
        // or that raced with it are applied before the dump is judged.
        self.drain_conntrack();
        let mut entries = 0;
        match result {
            Ok(s) => {
                entries = s.entries;
                self.stats.dump_parse_errors += s.parse_errors;
                if s.interrupted {
                    self.stats.dumps_interrupted += 1;
                    log::warn!("conntrack dump was interrupted by a table resize; counters will be harvested later");
                }
                self.table.end_dump(!s.interrupted);
            }
            Err(e) => {
                log::error!("conntrack dump failed: {e}; long-lived connections are harvested at the next dump");
                self.table.end_dump(false);
            }
        }
        running.account(started.elapsed());
        match running.purpose {
            DumpPurpose::CloseWindow => self.emit_closed_window(running, entries),
            DumpPurpose::FinalClose { end } => {
                // The dump evicted the expired entries it passed (the kernel
                // removes them lazily, so after idle flows this is where most
                // go); their DESTROY events, and those the kernel re-sends a
                // little later, are this last window's too.
                self.drain_until_quiet("after the final dump");
                self.table.begin_close(end);
                self.emit_closed_window(running, entries);
            }
            DumpPurpose::Resync | DumpPurpose::Harvest => {}
        }
    }

    /// Harvests every live connection now (blocking): a running dump is
    /// read to its end, otherwise a new one is made.
    pub(super) fn harvest_now(&mut self) {
        if self.dump.is_none() {
            self.start_dump(DumpPurpose::Harvest, std::time::Instant::now());
        }
        self.finish_running_dump();
    }

    /// Begins closing the open window at `end`: queued events and drops
    /// count in it, and a dump harvests its long-lived connections; the
    /// records go out when the dump ends (`end_dump`).
    pub(super) fn begin_close(&mut self, end: i64) {
        let began = std::time::Instant::now();
        self.drain_nflog();
        self.drain_conntrack();
        self.table.begin_close(end);
        self.start_dump(DumpPurpose::CloseWindow, began);
    }

    /// SIGTERM: closes the open window at `end` and emits it, blocking.
    /// Unlike a window's regular close, no event counts in a next window
    /// (there is none): the dump harvests into the open window, and the
    /// window closes only once the events queued before the dump, those it
    /// caused and those that follow it have been read into it. What comes
    /// later still is in the connections the handoff carries to the next
    /// run.
    pub(super) fn close_final_window(&mut self, end: i64) {
        // A close in progress is finished first, under its own bounds.
        self.finish_running_dump();
        self.emit_chunks(true);
        self.drain_until_quiet("before the final dump");
        self.start_dump(DumpPurpose::FinalClose { end }, std::time::Instant::now());
        self.finish_running_dump();
        self.emit_chunks(true);
    }

    /// The window whose close dump just ended: its records start out to
    /// the sinks.
    fn emit_closed_window(&mut self, running: RunningDump, dump_entries: u64) {
        let started = std::time::Instant::now();
        let Some(drain) = self.table.finish_close(&self.registry) else {
            return;
        };
        let drain = InstanceDrain::new(drain, &self.config.flow_logs, &self.registry);
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
        self.emit_chunks(false);
    }

    /// Sends chunks of the closed window's records while the sinks' queues
    /// have room (all of them if `force`: before the next window, a reload
    /// or shutdown); at the last, flushes the sinks and logs the window.
    pub(super) fn emit_chunks(&mut self, force: bool) {
        let Some(mut e) = self.emitting.take() else {
            return self.emit_early_chunks(force);
        };
        let started = std::time::Instant::now();
        let pacing = EmitPacing::new(
            self.config.daemon.sink_queue_records,
            self.config.flow_logs.len(),
        );
        let done = send_chunks(&self.config, &self.dispatcher, pacing, &mut e.drain, !force);
        e.waiting = !done;
        e.close.account(started.elapsed());
        if !done {
            self.emitting = Some(e);
            return;
        }
        self.dispatcher
            .flush_all(flowlogd_plugin_api::abi::FLUSH_WINDOW_END);
        self.log_window(&e);
        self.emit_early_chunks(force);
    }

    /// Sends chunks of the sums emitted early while the sinks' queues have
    /// room (all of them if `force`), after any closed window's records.
    fn emit_early_chunks(&mut self, force: bool) {
        if self.emitting.is_some() {
            return;
        }
        let Some(mut e) = self.early.take() else {
            return;
        };
        let pacing = EmitPacing::new(
            self.config.daemon.sink_queue_records,
            self.config.flow_logs.len(),
        );
        let done = send_chunks(&self.config, &self.dispatcher, pacing, &mut e.drain, !force);
        e.waiting = !done;
        if !done {
            self.early = Some(e);
        }
    }

    /// The window line: what the window produced and cost, and the loop's
    /// counters so far.
    fn log_window(&self, e: &EmittingWindow) {
        let window = e.drain.window;
        let count = e.drain.records_emitted();
        let t = self.table.stats();
        let c = &self.stats.conntrack;
        if let Some((_, rejects)) = &self.nflog {
            let r = rejects.stats();
            let n = &self.stats.nflog;
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
            self.table.table_bytes(),
            c.entries,
            c.parse_errors + self.stats.dump_parse_errors,
            c.overruns,
            c.foreign,
            self.stats.resyncs,
            t.lost_connections,
            t.revived,
            t.table_full_drops,
            t.anomalies
        );
        let foreign = self.stats.foreign();
        if foreign > 0 {
            // Each socket logged its first one with the sender; from then
            // on only this count. They were skipped unread, which loses
            // nothing the kernel sent: no SKIPDATA for them.
            log::warn!(
                "netlink: {foreign} datagrams from other processes ignored so far (conntrack {}, rtnetlink {}, \
                 nflog {})",
                c.foreign,
                self.stats.route.foreign,
                self.stats.nflog.foreign
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_pacing_fits_chunks_into_the_sink_queue() {
        // The default queue (262,144 records), one instance: full chunks.
        assert_eq!(
            EmitPacing::new(262_144, 1),
            EmitPacing {
                chunk: EMIT_CHUNK_RECORDS,
                low_water: 2 * EMIT_CHUNK_RECORDS as u64
            }
        );
        // A small queue: a chunk per instance is a quarter of it, so a
        // chunk sent just under the low-water mark still fits.
        for (capacity, instances) in [(2000, 1), (2000, 3), (100, 10), (1, 1), (0, 2)] {
            let p = EmitPacing::new(capacity, instances);
            assert!(p.chunk >= 1 && p.low_water >= 1, "{p:?}");
            if capacity >= 8 * instances as u64 {
                assert!(
                    p.low_water + (p.chunk * instances) as u64 <= capacity,
                    "{capacity} {instances}: {p:?}"
                );
            }
        }
    }
}
