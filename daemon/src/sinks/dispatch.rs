//! Each sink gets a worker thread, a bounded memory queue and a durable
//! spool on disk, so a slow or dead sink never stalls capture and loses
//! nothing (Vector's model: the host owns buffering).
//!
//! - The memory queue is bounded in *records*. A batch goes to the spool
//!   (`spool.rs`) instead when the queue is full, while the sink fails,
//!   while anything is spooled (so that order is kept: everything in the
//!   memory queue is older than everything spooled), and at shutdown.
//! - The worker delivers the memory queue first, then the spool, oldest
//!   first. A batch leaves the spool only once the plugin answered
//!   delivered (or rejected): delivery is at least once.
//! - A batch the plugin answers with RETRY is retried with exponential
//!   backoff; the first RETRY moves what the memory queue holds (the rest of
//!   that batch and everything behind it) into the spool, so a sink that is
//!   down keeps its records on disk, not in memory.
//! - A REJECTED batch is counted as undelivered and logged.
//! - At shutdown the workers get a deadline; what is still undelivered then
//!   goes to the spool and is delivered after the next start.
//! - Only a full spool (or one that cannot be written) drops records; they
//!   are counted, logged and reported. Without a spool (`flowlogd replay`)
//!   a full queue drops and counts, as does what is left at shutdown.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowlogd_plugin_api::FlowRecord;

use super::instance::{CallError, PluginInstance};
use super::loader::PluginLibrary;
use super::spool::{self, Spool, SpooledBatch};

/// Records passed to a plugin per `write` call: bounds the per-call
/// conversion buffers; plugins batch further as they need.
const WRITE_CHUNK_RECORDS: usize = 1024;
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A spool that stays full logs its drops at most this often.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

enum Item {
    Batch(Arc<Vec<FlowRecord>>),
    Flush(u32),
}

struct QueueState {
    items: VecDeque<Item>,
    queued_records: u64,
    /// Set at shutdown: finish by `deadline`, then spool the rest.
    closing: Option<Instant>,
    /// The sink answered RETRY and has not delivered since: new batches go
    /// to the spool, where they survive a crash.
    failing: bool,
    spool: Option<Spool>,
    /// Shutdown gave up on a worker stuck in a plugin call and spooled its
    /// queue: whatever the worker finishes later is not acknowledged.
    abandoned: bool,
    last_drop_log: Option<Instant>,
}

impl QueueState {
    /// New batches must go behind what is spooled, or the sink is failing.
    fn spool_first(&self) -> bool {
        self.spool
            .as_ref()
            .is_some_and(|s| !s.is_empty() || self.failing || self.closing.is_some())
    }
}

struct Shared {
    name: String,
    capacity_records: u64,
    state: Mutex<QueueState>,
    wake: Condvar,
    stats: Counters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().expect("sink queue lock")
    }
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_spool_full: AtomicU64,
    spooled: AtomicU64,
    rejected: AtomicU64,
    undelivered_at_shutdown: AtomicU64,
    retries: AtomicU64,
    spool_lost: AtomicU64,
    /// Unix seconds of the last RETRY or REJECTED answer (0: none yet).
    last_error_unix: AtomicI64,
}

/// What happened to one sink's records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    pub name: String,
    pub delivered: u64,
    /// Dropped because the memory queue was full and there is no spool.
    pub dropped_queue_full: u64,
    /// Dropped because the spool was full or could not be written.
    pub dropped_spool_full: u64,
    /// Written to the spool (including at shutdown).
    pub spooled: u64,
    pub rejected: u64,
    /// Neither delivered nor kept in the spool at shutdown.
    pub undelivered_at_shutdown: u64,
    pub retries: u64,
    /// Records in spooled batches that no longer checked out when read.
    pub spool_lost: u64,
    /// Records waiting in the spool when the worker stopped.
    pub spool_records_left: u64,
}

impl SinkStats {
    /// Records that will never reach the sink.
    pub fn lost(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_spool_full
            + self.rejected
            + self.undelivered_at_shutdown
            + self.spool_lost
    }
}

/// A handle on one sink's counters, for metrics: readable from any
/// thread, while the sink runs and after.
#[derive(Clone)]
pub struct SinkProbe(Arc<Shared>);

/// One sink's counters and queue at the moment of [`SinkProbe::read`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkMetrics {
    pub stats: SinkStats,
    /// Records in the memory queue now.
    pub queued_records: u64,
    /// Records and bytes in the spool now.
    pub spool_records: u64,
    pub spool_bytes: u64,
    /// Unix seconds of the last failed write (RETRY or REJECTED), if any.
    pub last_error_unix: Option<i64>,
}

impl SinkProbe {
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The counters (atomics) and, under the queue's lock for a moment,
    /// what is queued and spooled.
    pub fn read(&self) -> SinkMetrics {
        let shared = &self.0;
        let stats = stats_of(shared);
        let (queued_records, spool_records, spool_bytes) = {
            let st = shared.lock();
            let (records, bytes) = st
                .spool
                .as_ref()
                .map_or((0, 0), |s| (s.records(), s.bytes()));
            (st.queued_records, records, bytes)
        };
        let last = shared.stats.last_error_unix.load(Ordering::Relaxed);
        SinkMetrics {
            stats,
            queued_records,
            spool_records,
            spool_bytes,
            last_error_unix: (last > 0).then_some(last),
        }
    }
}

impl std::fmt::Debug for SinkProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SinkProbe").field(&self.0.name).finish()
    }
}

fn note_error_time(shared: &Shared) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    shared.stats.last_error_unix.store(now, Ordering::Relaxed);
}

struct SinkWorker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    done: std::sync::mpsc::Receiver<()>,
}

/// All sinks' queues and workers.
pub struct Dispatcher {
    workers: Vec<SinkWorker>,
}

/// A sink to start: its name, its library, its options.
pub struct SinkSpec {
    pub name: String,
    pub library: Arc<PluginLibrary>,
    pub options: toml::Table,
}

/// Where the sinks' spools live and how large each may grow.
#[derive(Clone, Debug)]
pub struct SpoolSettings {
    /// `state_dir/spool`: one directory per sink below it.
    pub root: PathBuf,
    pub max_bytes: u64,
}

/// Why a sink did not start.
#[derive(Debug)]
pub struct StartError {
    pub sink: String,
    pub message: String,
    pub key: Option<String>,
}

impl Dispatcher {
    /// Opens each sink's spool, starts a worker per sink, each opening its
    /// plugin instance on its own thread, and waits until every one has
    /// opened (or one failed). Records left in a spool by an earlier run
    /// are delivered first.
    ///
    /// # Errors
    /// The first sink whose spool cannot be opened, or whose plugin refused
    /// its options or failed to open.
    pub fn start(
        specs: Vec<SinkSpec>,
        capacity_records: u64,
        spools: Option<&SpoolSettings>,
    ) -> Result<Dispatcher, StartError> {
        let mut dispatcher = Dispatcher {
            workers: Vec::new(),
        };
        for spec in specs {
            let spool = match spools {
                Some(settings) => match open_spool(settings, &spec.name) {
                    Ok(s) => Some(s),
                    Err(message) => {
                        dispatcher.shutdown(Duration::ZERO);
                        return Err(StartError {
                            sink: spec.name,
                            message,
                            key: None,
                        });
                    }
                },
                None => None,
            };
            let shared = Arc::new(Shared {
                name: spec.name.clone(),
                capacity_records,
                state: Mutex::new(QueueState {
                    items: VecDeque::new(),
                    queued_records: 0,
                    closing: None,
                    failing: false,
                    spool,
                    abandoned: false,
                    last_drop_log: None,
                }),
                wake: Condvar::new(),
                stats: Counters::default(),
            });
            let (opened_tx, opened_rx) = std::sync::mpsc::channel();
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            let worker_shared = Arc::clone(&shared);
            let thread = std::thread::Builder::new()
                .name(format!("sink-{}", spec.name))
                .spawn(move || {
                    match PluginInstance::open(spec.library, &spec.name, &spec.options) {
                        Ok(instance) => {
                            let _ = opened_tx.send(Ok(()));
                            run_worker(&worker_shared, instance);
                        }
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                        }
                    }
                    let _ = done_tx.send(());
                })
                .map_err(|e| StartError {
                    sink: shared.name.clone(),
                    message: format!("cannot start worker thread: {e}"),
                    key: None,
                })?;
            let opened = opened_rx.recv().unwrap_or_else(|_| {
                Err(CallError::Rejected {
                    message: "plugin open did not return".into(),
                    key: None,
                })
            });
            if let Err(e) = opened {
                let _ = thread.join();
                let (message, key) = match e {
                    CallError::Retry(m) => (m, None),
                    CallError::Rejected { message, key } => (message, key),
                };
                dispatcher.shutdown(Duration::ZERO);
                return Err(StartError {
                    sink: shared.name.clone(),
                    message,
                    key,
                });
            }
            dispatcher.workers.push(SinkWorker {
                shared,
                thread: Some(thread),
                done: done_rx,
            });
        }
        Ok(dispatcher)
    }

    /// Handles on every sink's counters, for metrics.
    pub fn probes(&self) -> Vec<SinkProbe> {
        self.workers
            .iter()
            .map(|w| SinkProbe(Arc::clone(&w.shared)))
            .collect()
    }

    pub fn sink_index(&self, name: &str) -> Option<usize> {
        self.workers.iter().position(|w| w.shared.name == name)
    }

    /// Hands a batch to sink `index` without waiting for the sink: into its
    /// memory queue, or its spool (see the module's rules). Returns `false`
    /// if the records were dropped (counted and logged): no spool and a
    /// full queue, or a full spool.
    pub fn send(&self, index: usize, records: Arc<Vec<FlowRecord>>) -> bool {
        let Some(w) = self.workers.get(index) else {
            return false;
        };
        let n = records.len() as u64;
        if n == 0 {
            return true;
        }
        let shared = &w.shared;
        let mut st = shared.lock();
        let fits = st.closing.is_none() && st.queued_records + n <= shared.capacity_records;
        if st.spool.is_some() && (st.spool_first() || !fits) {
            let appended = st.spool.as_mut().expect("checked above").append(&records);
            let (kept, why) = match appended {
                Ok(kept) => (kept, None),
                Err(e) => (0, Some(e.to_string())),
            };
            shared.stats.spooled.fetch_add(kept, Ordering::Relaxed);
            if kept > 0 {
                shared.wake.notify_one();
            }
            if kept == n {
                return true;
            }
            let lost = n - kept;
            let total = shared
                .stats
                .dropped_spool_full
                .fetch_add(lost, Ordering::Relaxed)
                + lost;
            if should_log_drop(&mut st) {
                let why = why.unwrap_or_else(|| {
                    format!(
                        "the spool is full (spool_max_bytes = {} bytes)",
                        st.spool.as_ref().map_or(0, |s| s.max_bytes())
                    )
                });
                log::error!(
                    "sink {}: dropped {lost} records ({total} dropped so far): {why}; the sink is down or slower \
                     than capture",
                    shared.name
                );
            }
            return false;
        }
        if !fits {
            drop(st);
            let total = shared
                .stats
                .dropped_queue_full
                .fetch_add(n, Ordering::Relaxed)
                + n;
            log::warn!(
                "sink {}: queue full ({} records), dropped a batch of {n} records ({total} dropped so far); \
                 the sink is slower than capture or down",
                shared.name,
                shared.capacity_records
            );
            return false;
        }
        st.queued_records += n;
        st.items.push_back(Item::Batch(records));
        shared.wake.notify_one();
        true
    }

    /// The most records any one sink has queued in memory now.
    pub fn most_queued_records(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.shared.lock().queued_records)
            .max()
            .unwrap_or(0)
    }

    /// Asks every sink to flush (`FLUSH_*` flags) after what is queued, and
    /// makes what was spooled durable.
    pub fn flush_all(&self, flags: u32) {
        for w in &self.workers {
            let mut st = w.shared.lock();
            if let Some(spool) = st.spool.as_mut() {
                if let Err(e) = spool.sync() {
                    log::error!("sink {}: cannot sync the spool: {e}", w.shared.name);
                }
            }
            if st.closing.is_none() {
                st.items.push_back(Item::Flush(flags));
                w.shared.wake.notify_one();
            }
        }
    }

    /// Lets every worker deliver what it holds within `timeout`, spools what
    /// is left, closes the plugins, and returns what happened to each
    /// sink's records.
    pub fn shutdown(&mut self, timeout: Duration) -> Vec<SinkStats> {
        let deadline = Instant::now() + timeout;
        for w in &self.workers {
            let mut st = w.shared.lock();
            st.closing = Some(deadline);
            w.shared.wake.notify_one();
        }
        let mut out = Vec::new();
        for w in &mut self.workers {
            // A plugin call that hangs must not hang shutdown: wait a little
            // past the deadline, then leave the thread behind.
            let grace = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(2);
            match w.done.recv_timeout(grace) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    if let Some(t) = w.thread.take() {
                        let _ = t.join();
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    log::error!(
                        "sink {}: plugin did not return in time; abandoning it",
                        w.shared.name
                    );
                    let mut st = w.shared.lock();
                    st.abandoned = true;
                }
            }
            let mut st = w.shared.lock();
            // What the worker did not get to (an abandoned one's whole
            // queue, its batch in the plugin included: at least once).
            spill_queue(&w.shared, &mut st, None);
            let left = st.queued_records;
            if left > 0 {
                w.shared
                    .stats
                    .undelivered_at_shutdown
                    .fetch_add(left, Ordering::Relaxed);
                st.items.clear();
                st.queued_records = 0;
            }
            let mut stats = stats_of(&w.shared);
            if let Some(mut spool) = st.spool.take() {
                if let Err(e) = spool.sync() {
                    log::error!("sink {}: cannot sync the spool: {e}", w.shared.name);
                }
                stats.spool_records_left = spool.records();
                if stats.spool_records_left > 0 {
                    log::info!(
                        "sink {}: {} records ({} bytes) wait in {} for the next start",
                        w.shared.name,
                        stats.spool_records_left,
                        spool.bytes(),
                        spool.dir().display()
                    );
                }
            }
            out.push(stats);
        }
        self.workers.clear();
        out
    }
}

fn open_spool(settings: &SpoolSettings, sink: &str) -> Result<Spool, String> {
    let dir = settings.root.join(spool::dir_name(sink));
    let (spool, report) = Spool::open(&dir, settings.max_bytes)
        .map_err(|e| format!("cannot open the sink's spool: {e}"))?;
    if report.records > 0 {
        log::info!(
            "sink {sink}: {} records ({} bytes) wait in the spool {} from an earlier run; delivering them first",
            report.records,
            report.bytes,
            dir.display()
        );
    }
    if report.cut_bytes > 0 {
        log::warn!(
            "sink {sink}: the spool had {} bytes of torn or corrupt batches, cut",
            report.cut_bytes
        );
    }
    Ok(spool)
}

fn should_log_drop(st: &mut QueueState) -> bool {
    let now = Instant::now();
    if st
        .last_drop_log
        .is_some_and(|t| now.duration_since(t) < DROP_LOG_INTERVAL)
    {
        return false;
    }
    st.last_drop_log = Some(now);
    true
}

fn stats_of(s: &Shared) -> SinkStats {
    SinkStats {
        name: s.name.clone(),
        delivered: s.stats.delivered.load(Ordering::Relaxed),
        dropped_queue_full: s.stats.dropped_queue_full.load(Ordering::Relaxed),
        dropped_spool_full: s.stats.dropped_spool_full.load(Ordering::Relaxed),
        spooled: s.stats.spooled.load(Ordering::Relaxed),
        rejected: s.stats.rejected.load(Ordering::Relaxed),
        undelivered_at_shutdown: s.stats.undelivered_at_shutdown.load(Ordering::Relaxed),
        retries: s.stats.retries.load(Ordering::Relaxed),
        spool_lost: s.stats.spool_lost.load(Ordering::Relaxed),
        spool_records_left: 0,
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.shutdown(Duration::ZERO);
        }
    }
}

/// Moves the memory queue into the spool, before what is spooled (it is
/// older). `head_rest` replaces the queue's head batch when the worker
/// delivered part of it already. Returns whether the queue was moved.
///
/// While running, all of it moves or none (the worker keeps retrying from
/// memory). At shutdown (`closing`) as much as fits moves, oldest first,
/// and the rest is counted as dropped on a full spool.
fn spill_queue(shared: &Shared, st: &mut QueueState, head_rest: Option<&[FlowRecord]>) -> bool {
    if st.items.is_empty() {
        return true;
    }
    let closing = st.closing.is_some();
    let QueueState {
        items,
        spool,
        queued_records,
        ..
    } = st;
    let Some(spool) = spool.as_mut() else {
        return false;
    };
    let mut batches: Vec<&[FlowRecord]> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Item::Batch(records) = item {
            match (i, head_rest) {
                (0, Some(rest)) => batches.push(rest),
                _ => batches.push(records),
            }
        }
    }
    let n: u64 = batches.iter().map(|b| b.len() as u64).sum();
    let kept = match spool.prepend(&batches, closing) {
        Ok(kept) => kept,
        Err(e) => {
            log::error!(
                "sink {}: cannot move {n} queued records to the spool: {e}",
                shared.name
            );
            if !closing {
                return false;
            }
            0
        }
    };
    let spooled = kept;
    shared.stats.spooled.fetch_add(spooled, Ordering::Relaxed);
    if spooled < n {
        log::error!(
            "sink {}: {} queued records dropped at shutdown: the spool is full or failing",
            shared.name,
            n - spooled
        );
        shared
            .stats
            .dropped_spool_full
            .fetch_add(n - spooled, Ordering::Relaxed);
    }
    items.clear();
    *queued_records = 0;
    true
}

/// What the worker is delivering.
enum Work {
    /// The memory queue's head; the `Arc` identifies it there.
    Memory(Arc<Vec<FlowRecord>>),
    Spooled(SpooledBatch),
    Flush(u32),
}

/// A batch being delivered, and how many of its chunks are done.
struct Current {
    work: Work,
    chunks_done: usize,
}

impl Current {
    fn records(&self) -> &[FlowRecord] {
        match &self.work {
            Work::Memory(r) => r,
            Work::Spooled(b) => &b.records,
            Work::Flush(_) => &[],
        }
    }

    fn rest(&self) -> &[FlowRecord] {
        let records = self.records();
        &records[(self.chunks_done * WRITE_CHUNK_RECORDS).min(records.len())..]
    }
}

/// The worker loop: take the oldest batch (memory queue first, then the
/// spool), deliver it a chunk at a time, retrying; acknowledge it.
fn run_worker(shared: &Shared, mut instance: PluginInstance) {
    let mut current: Option<Current> = None;
    let mut backoff = BACKOFF_INITIAL;
    let mut attempts = 0u32;
    loop {
        if current.is_none() {
            current = next_work(shared);
        }
        let Some(cur) = current.as_mut() else { break };
        if let Work::Flush(flags) = cur.work {
            let _ = with_retry(shared, "flush", || instance.flush(flags));
            finish(shared, cur);
            current = None;
            continue;
        }
        match deliver(shared, &mut instance, cur) {
            Ok(()) => {
                if attempts > 0 {
                    log::info!(
                        "sink {}: write succeeded after {attempts} retries",
                        shared.name
                    );
                }
                attempts = 0;
                backoff = BACKOFF_INITIAL;
                shared.lock().failing = false;
                finish(shared, cur);
                current = None;
            }
            Err(message) => {
                attempts += 1;
                note_retry(shared, "write", attempts, backoff, &message);
                let mut st = shared.lock();
                st.failing = true;
                // The sink is down: keep the queue on disk rather than in
                // memory, where a crash would lose it.
                if matches!(cur.work, Work::Memory(_))
                    && spill_queue(shared, &mut st, Some(cur.rest()))
                {
                    current = None;
                }
                if !wait_backoff(shared, st, backoff) {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    // Stopped at the shutdown deadline in the middle of a queued batch:
    // spool its rest and what is behind it.
    if let Some(cur) = &current {
        if matches!(cur.work, Work::Memory(_)) {
            let mut st = shared.lock();
            if !st.abandoned {
                spill_queue(shared, &mut st, Some(cur.rest()));
            }
        }
    }
    // Final flush so that buffered output reaches disk or the peer.
    let _ = with_retry(shared, "flush", || {
        instance.flush(flowlogd_plugin_api::abi::FLUSH_WINDOW_END)
    });
    drop(instance);
}

/// The oldest work: the memory queue's head, else the spool's oldest
/// batch; waits for one. `None` when shutting down and nothing is left, or
/// the shutdown deadline passed.
fn next_work(shared: &Shared) -> Option<Current> {
    let mut st = shared.lock();
    loop {
        if st.abandoned {
            return None;
        }
        if let Some(deadline) = st.closing {
            if Instant::now() >= deadline {
                return None;
            }
        }
        if let Some(front) = st.items.front() {
            let work = match front {
                Item::Batch(b) => Work::Memory(Arc::clone(b)),
                Item::Flush(f) => Work::Flush(*f),
            };
            return Some(Current {
                work,
                chunks_done: 0,
            });
        }
        if let Some(spool) = st.spool.as_mut() {
            let mut lost = 0;
            let oldest = spool.oldest(&mut lost);
            if lost > 0 {
                shared.stats.spool_lost.fetch_add(lost, Ordering::Relaxed);
            }
            match oldest {
                Ok(Some(batch)) => {
                    return Some(Current {
                        work: Work::Spooled(batch),
                        chunks_done: 0,
                    })
                }
                Ok(None) => {}
                Err(e) => {
                    log::error!(
                        "sink {}: cannot read the spool, trying again in {} s: {e}",
                        shared.name,
                        BACKOFF_MAX.as_secs()
                    );
                    st = shared
                        .wake
                        .wait_timeout(st, BACKOFF_MAX)
                        .expect("sink queue lock")
                        .0;
                    continue;
                }
            }
        }
        if st.closing.is_some() {
            return None;
        }
        st = shared.wake.wait(st).expect("sink queue lock");
    }
}

/// Sleeps `backoff` on the condvar (so shutdown wakes it early). Returns
/// `false` if the shutdown deadline comes before the next attempt.
fn wait_backoff(shared: &Shared, st: MutexGuard<'_, QueueState>, backoff: Duration) -> bool {
    if st.abandoned {
        return false;
    }
    if let Some(deadline) = st.closing {
        if Instant::now() + backoff > deadline {
            log::error!("sink {}: write still failing at shutdown", shared.name);
            return false;
        }
    }
    let _ = shared
        .wake
        .wait_timeout(st, backoff)
        .expect("sink queue lock");
    true
}

/// Writes the chunks of `cur` not yet delivered. Rejected chunks are
/// counted and skipped. `Err` carries a RETRY answer's message.
fn deliver(
    shared: &Shared,
    instance: &mut PluginInstance,
    cur: &mut Current,
) -> Result<(), String> {
    let total = cur.records().len();
    while cur.chunks_done * WRITE_CHUNK_RECORDS < total {
        let from = cur.chunks_done * WRITE_CHUNK_RECORDS;
        let chunk = &cur.records()[from..(from + WRITE_CHUNK_RECORDS).min(total)];
        let n = chunk.len() as u64;
        match instance.write(chunk) {
            Ok(()) => {
                shared.stats.delivered.fetch_add(n, Ordering::Relaxed);
            }
            Err(CallError::Rejected { message, key }) => {
                let key = key.map(|k| format!("{k}: ")).unwrap_or_default();
                log::error!(
                    "sink {}: write rejected, not retrying: {key}{message} ({n} records)",
                    shared.name
                );
                shared.stats.rejected.fetch_add(n, Ordering::Relaxed);
                note_error_time(shared);
            }
            Err(CallError::Retry(message)) => return Err(message),
        }
        cur.chunks_done += 1;
    }
    Ok(())
}

/// Takes finished work off the queue or out of the spool.
fn finish(shared: &Shared, cur: &Current) {
    let mut st = shared.lock();
    if st.abandoned {
        return;
    }
    match &cur.work {
        Work::Memory(records) => {
            if matches!(st.items.front(), Some(Item::Batch(b)) if Arc::ptr_eq(b, records)) {
                st.items.pop_front();
                st.queued_records -= records.len() as u64;
            }
        }
        Work::Flush(_) => {
            if matches!(st.items.front(), Some(Item::Flush(_))) {
                st.items.pop_front();
            }
        }
        Work::Spooled(batch) => {
            let parsed = batch.records.len() as u64;
            if batch.header_records > parsed {
                shared
                    .stats
                    .spool_lost
                    .fetch_add(batch.header_records - parsed, Ordering::Relaxed);
            }
            if let Some(spool) = st.spool.as_mut() {
                if let Err(e) = spool.acknowledge(batch) {
                    // It will be delivered again after a restart.
                    log::error!(
                        "sink {}: cannot record a delivered batch in the spool: {e}",
                        shared.name
                    );
                }
            }
        }
    }
}

/// Counts a RETRY answer and logs the first and then every 10th, so a sink
/// that is down for an hour does not flood the log.
fn note_retry(shared: &Shared, what: &str, attempts: u32, backoff: Duration, message: &str) {
    shared.stats.retries.fetch_add(1, Ordering::Relaxed);
    note_error_time(shared);
    if attempts == 1 || attempts % 10 == 0 {
        log::warn!(
            "sink {}: {what} failed (attempt {attempts}), retrying in {} ms: {message}",
            shared.name,
            backoff.as_millis()
        );
    }
}

enum Outcome {
    Done,
    Rejected,
    /// Still failing when the shutdown deadline passed.
    GaveUp,
}

fn with_retry(
    shared: &Shared,
    what: &str,
    mut call: impl FnMut() -> Result<(), CallError>,
) -> Outcome {
    let mut backoff = BACKOFF_INITIAL;
    let mut attempts = 0u32;
    loop {
        match call() {
            Ok(()) => {
                if attempts > 0 {
                    log::info!(
                        "sink {}: {what} succeeded after {attempts} retries",
                        shared.name
                    );
                }
                return Outcome::Done;
            }
            Err(CallError::Rejected { message, key }) => {
                let key = key.map(|k| format!("{k}: ")).unwrap_or_default();
                log::error!(
                    "sink {}: {what} rejected, not retrying: {key}{message}",
                    shared.name
                );
                return Outcome::Rejected;
            }
            Err(CallError::Retry(message)) => {
                attempts += 1;
                note_retry(shared, what, attempts, backoff, &message);
                let st = shared.lock();
                if let Some(deadline) = st.closing {
                    if Instant::now() + backoff > deadline {
                        log::error!(
                            "sink {}: {what} still failing at shutdown: {message}",
                            shared.name
                        );
                        return Outcome::GaveUp;
                    }
                }
                // Sleep on the condvar so that shutdown wakes us early.
                let _ = shared
                    .wake
                    .wait_timeout(st, backoff)
                    .expect("sink queue lock");
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

// reload support: a reload keeps the workers of unchanged sinks running and
// replaces only the others, so the dispatcher is split and joined by sink.
impl Dispatcher {
    /// The names of the running sinks.
    pub fn sink_names(&self) -> Vec<String> {
        self.workers.iter().map(|w| w.shared.name.clone()).collect()
    }

    /// Moves the workers of the sinks `take` names out into a dispatcher of
    /// their own (to be shut down or kept); the rest stay here, running.
    pub fn split_off(&mut self, take: impl Fn(&str) -> bool) -> Dispatcher {
        let (taken, kept) = std::mem::take(&mut self.workers)
            .into_iter()
            .partition(|w| take(&w.shared.name));
        self.workers = kept;
        Dispatcher { workers: taken }
    }

    /// Takes over `other`'s running workers.
    pub fn join(&mut self, mut other: Dispatcher) {
        self.workers.append(&mut other.workers);
    }
}
