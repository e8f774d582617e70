//! Each sink gets a worker thread and a bounded queue, so a slow or dead
//! sink never stalls capture (Vector's model: the host owns buffering).
//!
//! - The queue is bounded in *records*. A batch that does not fit is not
//!   queued; its records are counted as dropped and logged. Nothing grows
//!   without bound.
//! - A batch the plugin answers with RETRY stays at the head of the queue
//!   (still counted against the bound) and is retried with exponential
//!   backoff: records are never dropped while being retried.
//! - A REJECTED batch is counted as undelivered and logged.
//! - At shutdown the workers get a deadline; whatever is still undelivered
//!   then is counted and reported.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowlogd_plugin_api::FlowRecord;

use super::instance::{CallError, PluginInstance};
use super::loader::PluginLibrary;

/// Records passed to a plugin per `write` call: bounds the per-call
/// conversion buffers; plugins batch further as they need.
const WRITE_CHUNK_RECORDS: usize = 1024;
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

enum Item {
    Batch(Arc<Vec<FlowRecord>>),
    Flush(u32),
}

struct QueueState {
    items: VecDeque<Item>,
    queued_records: u64,
    /// Set at shutdown: no more items; finish by `deadline`.
    closing: Option<Instant>,
}

struct Shared {
    name: String,
    capacity_records: u64,
    state: Mutex<QueueState>,
    wake: Condvar,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    dropped_queue_full: AtomicU64,
    rejected: AtomicU64,
    undelivered_at_shutdown: AtomicU64,
    retries: AtomicU64,
}

/// What happened to one sink's records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkStats {
    pub name: String,
    pub delivered: u64,
    pub dropped_queue_full: u64,
    pub rejected: u64,
    pub undelivered_at_shutdown: u64,
    pub retries: u64,
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

/// Why a sink did not start.
#[derive(Debug)]
pub struct StartError {
    pub sink: String,
    pub message: String,
    pub key: Option<String>,
}

impl Dispatcher {
    /// Starts a worker per sink, each opening its plugin instance on its own
    /// thread, and waits until every one has opened (or one failed).
    ///
    /// # Errors
    /// The first sink whose plugin refused its options or failed to open.
    pub fn start(specs: Vec<SinkSpec>, capacity_records: u64) -> Result<Dispatcher, StartError> {
        let mut dispatcher = Dispatcher {
            workers: Vec::new(),
        };
        for spec in specs {
            let shared = Arc::new(Shared {
                name: spec.name.clone(),
                capacity_records,
                state: Mutex::new(QueueState {
                    items: VecDeque::new(),
                    queued_records: 0,
                    closing: None,
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

    pub fn sink_index(&self, name: &str) -> Option<usize> {
        self.workers.iter().position(|w| w.shared.name == name)
    }

    /// Queues a batch for sink `index` without blocking. If the queue
    /// cannot take it, its records are counted as dropped and `false` is
    /// returned.
    pub fn send(&self, index: usize, records: Arc<Vec<FlowRecord>>) -> bool {
        let Some(w) = self.workers.get(index) else {
            return false;
        };
        let n = records.len() as u64;
        if n == 0 {
            return true;
        }
        let mut st = w.shared.state.lock().expect("sink queue lock");
        if st.closing.is_some() || st.queued_records + n > w.shared.capacity_records {
            drop(st);
            let total = w
                .shared
                .stats
                .dropped_queue_full
                .fetch_add(n, Ordering::Relaxed)
                + n;
            log::warn!(
                "sink {}: queue full ({} records), dropped a batch of {n} records ({total} dropped so far); \
                 the sink is slower than capture or down",
                w.shared.name,
                w.shared.capacity_records
            );
            return false;
        }
        st.queued_records += n;
        st.items.push_back(Item::Batch(records));
        w.shared.wake.notify_one();
        true
    }

    /// The most records any one sink has queued now.
    pub fn most_queued_records(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| {
                w.shared
                    .state
                    .lock()
                    .expect("sink queue lock")
                    .queued_records
            })
            .max()
            .unwrap_or(0)
    }

    /// Asks every sink to flush (`FLUSH_*` flags) after what is queued.
    pub fn flush_all(&self, flags: u32) {
        for w in &self.workers {
            let mut st = w.shared.state.lock().expect("sink queue lock");
            if st.closing.is_none() {
                st.items.push_back(Item::Flush(flags));
                w.shared.wake.notify_one();
            }
        }
    }

    /// Lets every worker finish what is queued within `timeout`, closes the
    /// plugins, and returns what happened to each sink's records.
    pub fn shutdown(&mut self, timeout: Duration) -> Vec<SinkStats> {
        let deadline = Instant::now() + timeout;
        for w in &self.workers {
            let mut st = w.shared.state.lock().expect("sink queue lock");
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
                    let st = w.shared.state.lock().expect("sink queue lock");
                    w.shared
                        .stats
                        .undelivered_at_shutdown
                        .fetch_add(st.queued_records, Ordering::Relaxed);
                    log::error!(
                        "sink {}: plugin did not return in time; abandoning it",
                        w.shared.name
                    );
                }
            }
            out.push(stats_of(&w.shared));
        }
        self.workers.clear();
        out
    }
}

fn stats_of(s: &Shared) -> SinkStats {
    SinkStats {
        name: s.name.clone(),
        delivered: s.stats.delivered.load(Ordering::Relaxed),
        dropped_queue_full: s.stats.dropped_queue_full.load(Ordering::Relaxed),
        rejected: s.stats.rejected.load(Ordering::Relaxed),
        undelivered_at_shutdown: s.stats.undelivered_at_shutdown.load(Ordering::Relaxed),
        retries: s.stats.retries.load(Ordering::Relaxed),
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.shutdown(Duration::ZERO);
        }
    }
}

/// The worker loop: take the head item, deliver it (retrying), pop it.
fn run_worker(shared: &Shared, mut instance: PluginInstance) {
    loop {
        let item = {
            let mut st = shared.state.lock().expect("sink queue lock");
            loop {
                if let Some(front) = st.items.front() {
                    let item = match front {
                        Item::Batch(b) => Item::Batch(Arc::clone(b)),
                        Item::Flush(f) => Item::Flush(*f),
                    };
                    break Some(item);
                }
                if st.closing.is_some() {
                    break None;
                }
                st = shared.wake.wait(st).expect("sink queue lock");
            }
        };
        let Some(item) = item else { break };
        match &item {
            Item::Batch(records) => deliver_batch(shared, &mut instance, records),
            Item::Flush(flags) => {
                let flags = *flags;
                let _ = with_retry(shared, "flush", || instance.flush(flags));
            }
        }
        let mut st = shared.state.lock().expect("sink queue lock");
        st.items.pop_front();
        if let Item::Batch(records) = &item {
            st.queued_records -= records.len() as u64;
        }
    }
    // Final flush so that buffered output reaches disk or the peer.
    let _ = with_retry(shared, "flush", || {
        instance.flush(flowlogd_plugin_api::abi::FLUSH_WINDOW_END)
    });
    drop(instance);
}

/// Delivers `records` in chunks, retrying each; counts what was rejected
/// or still failing at the shutdown deadline.
fn deliver_batch(shared: &Shared, instance: &mut PluginInstance, records: &[FlowRecord]) {
    for (i, chunk) in records.chunks(WRITE_CHUNK_RECORDS).enumerate() {
        match with_retry(shared, "write", || instance.write(chunk)) {
            Outcome::Done => {
                shared
                    .stats
                    .delivered
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Outcome::Rejected => {
                shared
                    .stats
                    .rejected
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Outcome::GaveUp => {
                let rest = (records.len() - i * WRITE_CHUNK_RECORDS) as u64;
                shared
                    .stats
                    .undelivered_at_shutdown
                    .fetch_add(rest, Ordering::Relaxed);
                return;
            }
        }
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
                shared.stats.retries.fetch_add(1, Ordering::Relaxed);
                // Log the first failure and then every 10th, so a sink that
                // is down for an hour does not flood the log.
                if attempts == 1 || attempts % 10 == 0 {
                    log::warn!(
                        "sink {}: {what} failed (attempt {attempts}), retrying in {} ms: {message}",
                        shared.name,
                        backoff.as_millis()
                    );
                }
                let st = shared.state.lock().expect("sink queue lock");
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
