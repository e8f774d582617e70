//! Sending window records to the sinks without flooding their queues:
//! the pacing of a closed window's chunks, and the early emit of a window's
//! sums at the memory bound.

use std::time::Duration;

use super::EmittingWindow;
use crate::config::Config;
use crate::eni::EniRegistry;
use crate::flows::{FlowTable, SystemClock};
use crate::instances::{self, InstanceDrain};
use crate::metrics::WindowOutput;
use crate::sinks::Dispatcher;

/// Most records per chunk of a closed window sent to the sinks (about
/// 0.5 MB): the window's records become sink records a chunk at a time.
const EMIT_CHUNK_RECORDS: usize = 4 * 1024;
/// How soon the loop looks again at queues that had no room.
pub(in crate::capture) const EMIT_RETRY: Duration = Duration::from_millis(5);

/// How a closed window goes out for a sink queue bound of `capacity`
/// records and `instances` flow logs: chunks of at most `chunk` records,
/// the next one only while every sink's queue holds fewer than
/// `low_water`. So the records wait in the aggregate's compact form rather
/// than as sink records in a queue, and a sink slower than capture does
/// not make the queue overflow. A sink that stays behind keeps the rest
/// until the next window closes, which then sends all of it (the queue's
/// bound counts and reports what does not fit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct EmitPacing {
    chunk: usize,
    low_water: u64,
}

impl EmitPacing {
    pub(super) fn new(capacity: u64, instances: usize) -> Self {
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
/// otherwise all of them; counts them in `output`. `true` when the drain
/// is empty.
pub(super) fn send_chunks(
    config: &Config,
    dispatcher: &Dispatcher,
    pacing: EmitPacing,
    drain: &mut InstanceDrain,
    paced: bool,
    output: &mut WindowOutput,
) -> bool {
    loop {
        if paced && dispatcher.most_queued_records() >= pacing.low_water {
            return false;
        }
        match drain.next_chunk(pacing.chunk) {
            Some(chunk) => {
                output.count_chunk(config, &chunk);
                instances::dispatch_chunk(config, dispatcher, &chunk);
            }
            None => return true,
        }
    }
}

/// Sums a window emitted early at its memory bound
/// (`daemon.window_memory_bytes`), on their way to the sinks, paced like a
/// closed window's records.
pub(super) struct EarlyEmit {
    pub(super) drain: InstanceDrain,
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
pub(in crate::capture) struct SpillSender<'a> {
    config: &'a Config,
    dispatcher: &'a Dispatcher,
    emitting: &'a mut Option<EmittingWindow>,
    early: &'a mut Option<EarlyEmit>,
    output: &'a mut WindowOutput,
}

impl<'a> SpillSender<'a> {
    /// Takes the fields it needs, so that the table can be borrowed beside it.
    pub(super) fn new(
        config: &'a Config,
        dispatcher: &'a Dispatcher,
        emitting: &'a mut Option<EmittingWindow>,
        early: &'a mut Option<EarlyEmit>,
        output: &'a mut WindowOutput,
    ) -> Self {
        SpillSender {
            config,
            dispatcher,
            emitting,
            early,
            output,
        }
    }

    pub(in crate::capture) fn send(
        &mut self,
        table: &mut FlowTable<SystemClock>,
        registry: &EniRegistry,
    ) {
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
                send_chunks(
                    self.config,
                    self.dispatcher,
                    pacing,
                    &mut e.drain,
                    false,
                    self.output,
                );
            }
            if let Some(mut previous) = self.early.take() {
                send_chunks(
                    self.config,
                    self.dispatcher,
                    pacing,
                    &mut previous.drain,
                    false,
                    self.output,
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
                    self.output,
                );
            } else {
                *self.early = Some(early);
            }
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
