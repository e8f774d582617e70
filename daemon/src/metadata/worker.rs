//! The thread that talks to the metadata service, so the capture loop never
//! waits on the network. The loop sends it the MACs of interfaces it wants
//! described; it sends back snapshots (or why there is none) and wakes the
//! loop through a `mio::Waker`.
//!
//! When to fetch is decided by [`FetchSchedule`], which is pure and tested
//! with made-up instants: every `ttl` normally; soon after a new interface
//! appears; with doubling delays while the service fails; and a few more
//! times for a MAC the service does not list yet (after a hot-plug it takes
//! the service a moment to describe the new ENI).

use std::collections::BTreeMap;
use std::io;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::ecs::{fetch_snapshot, HttpSource};
use crate::config::EcsConfig;
use crate::model::{EcsSnapshot, MacAddr, SnapshotUpdate};

/// Each document request's bound: the service is on the VM's own host and
/// answers in milliseconds; a slower answer means it is not there.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// First retry after a failed fetch; doubled after each further failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between retries while the service fails.
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Fetches after the first that look again for a MAC the service does not
/// list (1 + 2 + 4 + 8 + 16 + 32 s: about a minute).
const MISSING_MAC_RETRIES: u32 = 6;

/// What the worker tells the loop.
#[derive(Debug)]
pub enum MetadataUpdate {
    Snapshot(SnapshotUpdate),
    /// The fetch failed; the worker tries again in `retry_in`.
    Failed {
        error: String,
        retry_in: Duration,
        /// Failures in a row, this one included.
        failures: u32,
    },
}

/// When to fetch next, and which MACs to look for.
#[derive(Debug)]
pub struct FetchSchedule {
    ttl: Duration,
    next: Instant,
    failures: u32,
    /// MAC -> fetches left that may look for it again if it is missing.
    wanted: BTreeMap<MacAddr, u32>,
    missing_rounds: u32,
    had_success: bool,
}

impl FetchSchedule {
    /// A schedule that fetches at once.
    pub fn new(ttl: Duration, now: Instant) -> FetchSchedule {
        FetchSchedule {
            ttl,
            next: now,
            failures: 0,
            wanted: BTreeMap::new(),
            missing_rounds: 0,
            had_success: false,
        }
    }

    /// When the next fetch is due.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// The loop wants these MACs described. The first answer is taken as
    /// the truth for the interfaces there at start-up; a MAC asked about
    /// later is a hot-plugged interface, which the service may not list
    /// for a moment, so it is looked for again a few times.
    pub fn want(&mut self, macs: &[MacAddr], now: Instant) {
        let retries = if self.had_success {
            MISSING_MAC_RETRIES
        } else {
            0
        };
        for mac in macs {
            self.wanted.entry(*mac).or_insert(retries);
        }
        // While the service fails, the backoff stands: a burst of new
        // interfaces must not turn into a burst of requests.
        if !macs.is_empty() && self.failures == 0 {
            self.next = self.next.min(now);
        }
    }

    /// A fetch succeeded at `now`.
    pub fn on_success(&mut self, snapshot: EcsSnapshot, now: Instant) -> SnapshotUpdate {
        let looked_for: Vec<MacAddr> = self.wanted.keys().copied().collect();
        let mut retrying = Vec::new();
        self.wanted.retain(|mac, left| {
            if snapshot.enis.contains_key(mac) || *left == 0 {
                return false;
            }
            *left -= 1;
            retrying.push(*mac);
            true
        });
        self.failures = 0;
        self.had_success = true;
        self.next = if retrying.is_empty() {
            self.missing_rounds = 0;
            now + self.ttl
        } else {
            let delay = doubled(FIRST_RETRY, self.missing_rounds).min(self.ttl);
            self.missing_rounds += 1;
            now + delay
        };
        SnapshotUpdate {
            snapshot,
            looked_for,
            retrying,
        }
    }

    /// A fetch failed at `now`: returns the delay before the next one and
    /// the failures in a row.
    pub fn on_failure(&mut self, now: Instant) -> (Duration, u32) {
        let delay = doubled(FIRST_RETRY, self.failures)
            .min(MAX_RETRY)
            .min(self.ttl);
        self.failures += 1;
        self.next = now + delay;
        (delay, self.failures)
    }
}

fn doubled(base: Duration, times: u32) -> Duration {
    base.saturating_mul(1u32 << times.min(16))
}

/// The loop's handle on the worker thread. Dropping it ends the thread
/// (after the request in flight, at most a few seconds).
pub struct MetadataWorker {
    requests: Sender<Vec<MacAddr>>,
    updates: Receiver<MetadataUpdate>,
    config: EcsConfig,
}

impl MetadataWorker {
    /// Starts the thread; it fetches at once, looking for `initial`, and
    /// calls `notify` after sending each update.
    ///
    /// # Errors
    /// If the thread cannot be spawned.
    pub fn start(
        config: &EcsConfig,
        initial: Vec<MacAddr>,
        notify: Box<dyn Fn() + Send>,
    ) -> io::Result<MetadataWorker> {
        let (requests, request_rx) = mpsc::channel();
        let (update_tx, updates) = mpsc::channel();
        let source = HttpSource {
            base: config.base_url.clone(),
            timeout: REQUEST_TIMEOUT,
        };
        let ttl = Duration::from_secs(config.ttl_secs.into());
        std::thread::Builder::new()
            .name("flowlogd-metadata".into())
            .spawn(move || run(source, ttl, initial, &request_rx, &update_tx, &*notify))?;
        Ok(MetadataWorker {
            requests,
            updates,
            config: config.clone(),
        })
    }

    /// Asks for these MACs to be described (soon, unless the service is
    /// failing and a retry is already scheduled).
    pub fn look_for(&self, macs: Vec<MacAddr>) {
        if !macs.is_empty() {
            // The thread only ends when this handle is dropped.
            let _ = self.requests.send(macs);
        }
    }

    /// The next update, if one is waiting.
    pub fn try_recv(&self) -> Option<MetadataUpdate> {
        self.updates.try_recv().ok()
    }

    /// The service this worker asks.
    pub fn config(&self) -> &EcsConfig {
        &self.config
    }
}

fn run(
    mut source: HttpSource,
    ttl: Duration,
    initial: Vec<MacAddr>,
    requests: &Receiver<Vec<MacAddr>>,
    updates: &Sender<MetadataUpdate>,
    notify: &dyn Fn(),
) {
    let mut schedule = FetchSchedule::new(ttl, Instant::now());
    schedule.want(&initial, Instant::now());
    loop {
        let wait = schedule.next().saturating_duration_since(Instant::now());
        match requests.recv_timeout(wait) {
            Ok(macs) => {
                schedule.want(&macs, Instant::now());
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let update = match fetch_snapshot(&mut source) {
            Ok(snapshot) => MetadataUpdate::Snapshot(schedule.on_success(snapshot, Instant::now())),
            Err(e) => {
                let (retry_in, failures) = schedule.on_failure(Instant::now());
                MetadataUpdate::Failed {
                    error: e.to_string(),
                    retry_in,
                    failures,
                }
            }
        };
        if updates.send(update).is_err() {
            return;
        }
        notify();
    }
}

/// One fetch with a short timeout, for `check-config`.
///
/// # Errors
/// Why the service could not be read.
pub fn fetch_once(config: &EcsConfig, timeout: Duration) -> Result<EcsSnapshot, String> {
    let mut source = HttpSource {
        base: config.base_url.clone(),
        timeout,
    };
    fetch_snapshot(&mut source).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EcsEni;

    const M1: MacAddr = MacAddr([0, 0x16, 0x3e, 0, 0, 1]);
    const M2: MacAddr = MacAddr([0, 0x16, 0x3e, 0, 0, 2]);

    fn snapshot(macs: &[MacAddr]) -> EcsSnapshot {
        let mut s = EcsSnapshot::default();
        for m in macs {
            s.enis.insert(
                *m,
                EcsEni {
                    eni_id: "eni-x".into(),
                    vpc_id: "vpc-x".into(),
                    vswitch_id: "vsw-x".into(),
                },
            );
        }
        s
    }

    #[test]
    fn refreshes_every_ttl_and_backs_off_on_failure() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(300);
        let mut s = FetchSchedule::new(ttl, t0);
        assert_eq!(s.next(), t0);
        let delays: Vec<u64> = (0..9).map(|_| s.on_failure(t0).0.as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // New interfaces do not cut a backoff short.
        s.want(&[M1], t0);
        assert_eq!(s.next(), t0 + Duration::from_secs(60));
        let u = s.on_success(snapshot(&[M1]), t0);
        assert_eq!(u.looked_for, [M1]);
        assert!(u.retrying.is_empty());
        assert_eq!(s.next(), t0 + ttl);
        // After a success the backoff starts over.
        assert_eq!(s.on_failure(t0).0, Duration::from_secs(1));
        // A short ttl caps the backoff.
        let mut short = FetchSchedule::new(Duration::from_secs(5), t0);
        assert_eq!(
            (0..5)
                .map(|_| short.on_failure(t0).0.as_secs())
                .collect::<Vec<_>>(),
            [1, 2, 4, 5, 5]
        );
    }

    #[test]
    fn the_first_answer_is_the_truth_for_interfaces_at_start() {
        let t0 = Instant::now();
        let mut s = FetchSchedule::new(Duration::from_secs(300), t0);
        s.want(&[M1, M2], t0);
        let u = s.on_success(snapshot(&[M1]), t0);
        assert_eq!(u.looked_for, [M1, M2]);
        assert!(u.retrying.is_empty(), "M2 is no ENI: {u:?}");
    }

    #[test]
    fn a_hot_plugged_mac_is_looked_for_again_a_few_times() {
        let t0 = Instant::now();
        let mut s = FetchSchedule::new(Duration::from_secs(300), t0);
        s.on_success(snapshot(&[M1]), t0);
        let t1 = t0 + Duration::from_secs(100);
        s.want(&[M2], t1);
        assert_eq!(s.next(), t1, "fetch at once for a new interface");
        let mut delays = Vec::new();
        let mut now = t1;
        loop {
            let u = s.on_success(snapshot(&[M1]), now);
            assert_eq!(u.looked_for, [M2]);
            if u.retrying.is_empty() {
                break;
            }
            delays.push((s.next() - now).as_secs());
            now = s.next();
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32]);
        assert_eq!(s.next(), now + Duration::from_secs(300));
        // Found on a retry: no more retries.
        s.want(&[M2], now);
        let u = s.on_success(snapshot(&[M1]), now);
        assert_eq!(u.retrying, [M2]);
        let u = s.on_success(snapshot(&[M1, M2]), now);
        assert_eq!((u.looked_for, u.retrying), (vec![M2], vec![]));
    }

    #[test]
    fn a_worker_against_a_dead_service_reports_failures_and_never_panics() {
        // A port that was just free: nothing listens (connection refused).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = EcsConfig {
            base_url: crate::http_url::HttpUrl::parse(&format!(
                "http://127.0.0.1:{port}/latest/meta-data/"
            ))
            .unwrap(),
            ttl_secs: 300,
            unmapped: crate::config::Unmapped::Ignore,
        };
        let (tx, rx) = mpsc::channel();
        let w = MetadataWorker::start(
            &config,
            vec![M1],
            Box::new(move || {
                let _ = tx.send(());
            }),
        )
        .unwrap();
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        match w.try_recv() {
            Some(MetadataUpdate::Failed {
                error,
                retry_in,
                failures,
            }) => {
                assert!(error.starts_with("instance-id: cannot connect"), "{error}");
                assert_eq!((retry_in, failures), (Duration::from_secs(1), 1));
            }
            other => panic!("{other:?}"),
        }
        assert!(fetch_once(&config, Duration::from_millis(500)).is_err());
    }
}
