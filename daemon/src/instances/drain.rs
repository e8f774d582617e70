//! A closed window's records per flow log instance: the OK records of the
//! ENIs an instance captures that its traffic filter takes, and per ENI
//! the NODATA or SKIPDATA record the instance's readers are owed.

use std::sync::Arc;

use flowlogd_plugin_api::{Action, FlowRecord, LogStatus};

use super::filter::{had_traffic_for, takes_action};
use super::scope::Scopes;
use crate::config::FlowLogConfig;
use crate::eni::EniRegistry;
use crate::flows::{CaptureWindow, EniRecords, EniWindow, WindowDrain};

/// Part of a closed window's records, routed to flow log instances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WindowChunk {
    /// Per flow log instance that takes any of the chunk's records, in
    /// config order: its index into `config.flow_logs` and those records.
    /// Every instance that takes all of the chunk's OK records holds the
    /// same `Arc`.
    pub instances: Vec<(usize, Arc<Vec<FlowRecord>>)>,
}

/// In [`InstanceDrain::wanted`]: some instance takes the ENI's OK records
/// of this action.
const WANT_ACCEPT: u8 = 1;
const WANT_REJECT: u8 = 2;

fn want_bit(action: Action) -> u8 {
    match action {
        Action::Accept => WANT_ACCEPT,
        Action::Reject => WANT_REJECT,
    }
}

/// A closed window's records for the flow log instances, chunk by chunk
/// (as [`WindowDrain`] gives them: the OK records first, in the sums' hash
/// order, then the NODATA and SKIPDATA records in a chunk of their own).
pub struct InstanceDrain {
    pub(crate) window: CaptureWindow,
    /// As [`WindowDrain`]'s.
    pub(crate) held: usize,
    pub(crate) held_dropped: usize,
    pub(crate) early_spills: u64,
    records: WindowDrain,
    /// The scopes when the window closed: the registry may change while
    /// the drain is in progress.
    scopes: Scopes,
    /// Per ENI, `WANT_*` bits.
    wanted: Vec<u8>,
    /// The NODATA / SKIPDATA chunk, built once the OK records are out
    /// (`None` inside: nothing to say).
    statuses: Option<Option<WindowChunk>>,
    done: bool,
    emitted: u64,
}

impl InstanceDrain {
    /// Routes `records` to the instances of `flow_logs` by their scopes
    /// over `reg` now (call it when the window closes).
    pub fn new(records: WindowDrain, flow_logs: &[FlowLogConfig], reg: &EniRegistry) -> Self {
        let scopes = Scopes::of(flow_logs, reg);
        let wanted = reg
            .indices()
            .map(|eni| {
                let mut bits = 0;
                for &i in scopes.instances_for(eni) {
                    for action in [Action::Accept, Action::Reject] {
                        if takes_action(scopes.traffic_of_instance(i), action) {
                            bits |= want_bit(action);
                        }
                    }
                }
                bits
            })
            .collect();
        InstanceDrain {
            window: records.window(),
            held: records.held,
            held_dropped: records.held_dropped,
            early_spills: records.early_spills,
            records,
            scopes,
            wanted,
            statuses: None,
            done: false,
            emitted: 0,
        }
    }

    /// The next chunk: at most `max_records` OK records (at least one is
    /// taken even if `max_records` is 0), each given to every instance
    /// that captures its ENI and whose traffic filter takes it; then one
    /// chunk with the NODATA and SKIPDATA records. Per instance, an ENI
    /// that existed during the window gets SKIPDATA if data was lost for it
    /// (or for every ENI), else NODATA if none of its OK records passed that
    /// instance's filter, except in a window of zero length (closed in the
    /// second it opened). `None` when everything is out.
    pub fn next_chunk(&mut self, max_records: usize) -> Option<WindowChunk> {
        if self.records.has_sums() {
            let wanted = &self.wanted;
            let records = self.records.next_records(max_records, |eni, action| {
                wanted
                    .get(eni.get())
                    .is_some_and(|&bits| bits & want_bit(action) != 0)
            });
            let chunk = records.map(|r| self.route(r));
            if !self.records.has_sums() {
                self.statuses = Some(self.status_chunk());
            }
            if let Some(c) = chunk {
                return Some(self.count(c));
            }
        }
        if self.done {
            return None;
        }
        self.done = true;
        let statuses = match self.statuses.take() {
            Some(s) => s,
            None => self.status_chunk(),
        };
        statuses.map(|c| self.count(c))
    }

    /// Whether [`InstanceDrain::next_chunk`] has nothing more to give. It
    /// can still be `false` when the next call returns `None`: when what
    /// is left are sums of ENIs that no instance takes, which only draining
    /// finds out.
    /// (The loop does not need it: it drains until `next_chunk` says
    /// `None`.)
    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.done || (!self.records.has_sums() && matches!(self.statuses, Some(None)))
    }

    /// Sums not turned into records yet.
    pub fn sums_left(&self) -> usize {
        self.records.sums_left()
    }

    /// Records handed out so far, counted once per instance that got them
    /// (as [`WindowRecords::record_count`]).
    pub fn records_emitted(&self) -> u64 {
        self.emitted
    }

    /// The SKIPDATA records of this drain (given out or still to come):
    /// one per flow log instance for each of its ENIs that lost data. The
    /// daemon's STATUS= line for systemd says it of each window.
    pub fn skipdata_records(&self) -> usize {
        if !self.records.says_statuses() {
            return 0;
        }
        let enis = self.records.enis();
        (0..self.scopes.instance_count())
            .flat_map(|i| self.scopes.enis_of_instance(i))
            .filter(|eni| enis.get(eni.get()).is_some_and(|e| e.lost))
            .count()
    }

    fn count(&mut self, chunk: WindowChunk) -> WindowChunk {
        self.emitted += chunk
            .instances
            .iter()
            .map(|(_, r)| r.len() as u64)
            .sum::<u64>();
        chunk
    }

    /// Gives each instance the records it takes. An instance that takes
    /// them all gets the chunk's `Arc` itself; the others get copies of
    /// their part.
    fn route(&self, EniRecords { records, enis }: EniRecords) -> WindowChunk {
        let scopes = &self.scopes;
        let takes = |instance: usize, r: &FlowRecord| {
            r.flow
                .is_some_and(|f| takes_action(scopes.traffic_of_instance(instance), f.action))
        };
        let mut counts = vec![0usize; scopes.instance_count()];
        for (r, &e) in records.iter().zip(&enis) {
            for &i in scopes.instances_for(e) {
                if takes(i, r) {
                    counts[i] += 1;
                }
            }
        }
        let n = records.len();
        let mut parts: Vec<Option<Vec<FlowRecord>>> = counts
            .iter()
            .map(|&c| (c > 0 && c < n).then(|| Vec::with_capacity(c)))
            .collect();
        if parts.iter().any(Option::is_some) {
            for (r, &e) in records.iter().zip(&enis) {
                for &i in scopes.instances_for(e) {
                    if let Some(part) = &mut parts[i] {
                        if takes(i, r) {
                            part.push(r.clone());
                        }
                    }
                }
            }
        }
        let whole = Arc::new(records);
        let instances = counts
            .iter()
            .zip(parts)
            .enumerate()
            .filter_map(|(i, (&c, part))| match part {
                Some(part) => Some((i, Arc::new(part))),
                None if c == n => Some((i, Arc::clone(&whole))),
                None => None,
            })
            .collect();
        WindowChunk { instances }
    }

    /// The NODATA and SKIPDATA records of a close, per instance.
    fn status_chunk(&self) -> Option<WindowChunk> {
        if !self.records.says_statuses() {
            return None;
        }
        let window = self.window;
        let record = |e: &EniWindow, log_status| FlowRecord {
            eni: Arc::clone(&e.ids),
            flow: None,
            start: window.start,
            end: window.end,
            log_status,
            rule: None,
        };
        let enis = self.records.enis();
        let mut instances = Vec::new();
        for i in 0..self.scopes.instance_count() {
            let filter = self.scopes.traffic_of_instance(i);
            let mut records = Vec::new();
            for eni in self.scopes.enis_of_instance(i) {
                let Some(e) = enis.get(eni.get()) else {
                    continue;
                };
                if e.lost {
                    records.push(record(e, LogStatus::SkipData));
                } else if !had_traffic_for(filter, e.had_accept, e.had_reject)
                    && e.existed
                    && window.end > window.start
                {
                    // Per instance: an ENI whose only traffic is filtered out
                    // of this instance is idle as far as its readers can tell.
                    // A window closed in the second it opened (SIGTERM or a
                    // reload right at a boundary) lasted no time: no NODATA.
                    records.push(record(e, LogStatus::NoData));
                }
            }
            if !records.is_empty() {
                instances.push((i, Arc::new(records)));
            }
        }
        (!instances.is_empty()).then_some(WindowChunk { instances })
    }

    /// Every remaining record, per instance in config order (every instance
    /// listed), for tests and callers that do not need chunks: this holds
    /// the whole window's records at once.
    pub fn collect_all(mut self) -> WindowRecords {
        let mut instances: Vec<InstanceRecords> = (0..self.scopes.instance_count())
            .map(|instance| InstanceRecords {
                instance,
                records: Vec::new(),
            })
            .collect();
        while let Some(chunk) = self.next_chunk(usize::MAX) {
            for (i, batch) in chunk.instances {
                let records = &mut instances[i].records;
                match Arc::try_unwrap(batch) {
                    Ok(batch) if records.is_empty() => *records = batch,
                    Ok(batch) => records.extend(batch),
                    Err(shared) => records.extend(shared.iter().cloned()),
                }
            }
        }
        WindowRecords {
            window: self.window,
            instances,
            held: self.held,
            held_dropped: self.held_dropped,
        }
    }
}

/// The records of one flow log instance for a closed window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRecords {
    /// Index into `config.flow_logs`.
    pub instance: usize,
    pub records: Vec<FlowRecord>,
}

/// What a closed window produced, per flow log instance in config order
/// (every instance is listed, possibly with no records).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowRecords {
    pub window: CaptureWindow,
    pub instances: Vec<InstanceRecords>,
    /// Records kept back for ENIs still waiting for their metadata: they
    /// are emitted with the window in which the ids become known.
    pub held: usize,
    /// Held records given up because too many were held; their ENIs get
    /// SKIPDATA when their ids become known.
    pub held_dropped: usize,
}

impl WindowRecords {
    /// Total records over all instances.
    pub fn record_count(&self) -> usize {
        self.instances.iter().map(|i| i.records.len()).sum()
    }
}
