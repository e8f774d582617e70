//! systemd's `Type=notify` protocol without systemd: the real daemon in a
//! namespace, `NOTIFY_SOCKET` pointing at a datagram socket this test
//! listens on, `WATCHDOG_USEC` set. READY=1 comes once capture is on (the
//! baseline taken), WATCHDOG=1 keeps coming at half the watchdog interval
//! while the loop runs (idle, across window closes and a reload), STATUS=
//! after a window carries that window's record count, a SIGHUP is
//! RELOADING=1 (with MONOTONIC_USEC=) then READY=1, and SIGTERM is
//! STOPPING=1. Without NOTIFY_SOCKET every other test runs the daemon as
//! before.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowlogd_tests::netns::{DaemonProcess, LineProcess};
use flowlogd_tests::*;
use serde_json::Value;

const TRAFFIC: &str = env!("CARGO_BIN_EXE_flowlogd-traffic");
const STEP: Duration = Duration::from_secs(10);
/// The watchdog interval given to the daemon: it must send WATCHDOG=1
/// every half of it, and systemd would restart it after a gap this long.
const WATCHDOG: Duration = Duration::from_secs(2);
const WINDOW_SECS: u64 = 5;

/// One datagram the daemon sent, when it came, and whether the daemon's
/// log said the baseline was taken by then.
#[derive(Clone, Debug)]
struct Notification {
    at: Instant,
    text: String,
    after_baseline: bool,
}

impl Notification {
    fn has(&self, field: &str) -> bool {
        self.text.lines().any(|l| l == field)
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.text.lines().find_map(|l| l.strip_prefix(key))
    }
}

/// A stand-in for systemd's notify socket: a unix datagram socket whose
/// thread records what arrives. The thread stops on drop, or after 120 s.
struct FakeNotifySocket {
    path: PathBuf,
    received: Arc<Mutex<Vec<Notification>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeNotifySocket {
    /// Listens at `path`; on each datagram, reads the daemon's log at
    /// `log` to see whether the baseline line is in it already.
    fn bind(path: PathBuf, log: PathBuf) -> FakeNotifySocket {
        let socket =
            UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (Arc::clone(&received), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let at = Instant::now();
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let after_baseline = std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("baseline: ");
                r.lock().unwrap().push(Notification {
                    at,
                    text,
                    after_baseline,
                });
            }
        });
        FakeNotifySocket {
            path,
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> Vec<Notification> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until a datagram after the first `from` satisfies `matches`;
    /// returns its index.
    #[track_caller]
    fn wait_for(
        &self,
        from: usize,
        what: &str,
        matches: impl Fn(&Notification) -> bool,
        daemon: &DaemonProcess,
    ) -> usize {
        let deadline = Instant::now() + STEP;
        loop {
            let got = self.received();
            if let Some(i) = got.iter().skip(from).position(&matches) {
                return from + i;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in {STEP:?}; received: {:#?}\n{}",
                texts(&got),
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeNotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn texts(n: &[Notification]) -> Vec<&str> {
    n.iter().map(|n| n.text.as_str()).collect()
}

/// `HH:MM:SS` (UTC) of Unix second `unix`, as the daemon's STATUS= says.
fn time_of_day(unix: i64) -> String {
    let s = unix.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// CLOCK_MONOTONIC now, in microseconds.
fn monotonic_usec() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the time into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1000
}

fn signal(pid: u32, signal: &str) {
    let o = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

fn config(plugins: &Path, out: &Path) -> DaemonConfig {
    DaemonConfig::new(plugins)
        .window_secs(WINDOW_SECS as i64)
        .eni("eni-n", "veth-a", "vpc-n")
        .flow_log(FlowLog::vpc("all", "vpc-n").sinks(&["out"]))
        .json_sink("out", out)
}

#[test]
fn the_daemon_notifies_readiness_status_reload_and_stop_and_feeds_the_watchdog() {
    if !require_root("the_daemon_notifies_readiness_status_reload_and_stop_and_feeds_the_watchdog")
    {
        return;
    }
    let s = Scenario::builder("ntf")
        .namespaces("ntfa", "ntfb")
        .veth("veth-a", "veth-b", 61)
        .build();
    let out = s.path("out.jsonl");
    let cfg = s.write_config("flowlogd.toml", &config(&s.plugins, &out));
    let log = s.path("daemon.log");
    let manager = FakeNotifySocket::bind(s.path("notify.sock"), log.clone());
    let usec = WATCHDOG.as_micros().to_string();
    let env: [(&str, &OsStr); 2] = [
        ("NOTIFY_SOCKET", manager.path.as_os_str()),
        ("WATCHDOG_USEC", OsStr::new(&usec)),
    ];
    let mut daemon = DaemonProcess::start_with_env(&s.a, &cfg, &log, &env);

    // READY=1 once capture is on, after the baseline, and nothing before.
    let ready = manager.wait_for(0, "READY=1", |n| n.has("READY=1"), &daemon);
    let got = manager.received();
    assert_eq!(ready, 0, "sent before READY=1: {:#?}", texts(&got));
    assert!(
        got[0].after_baseline,
        "READY=1 before the baseline: {:#?}\n{}",
        texts(&got),
        daemon.log()
    );
    assert!(
        got[0]
            .value("STATUS=")
            .is_some_and(|s| s.starts_with("capturing")),
        "{:#?}",
        texts(&got)
    );

    // The first window closes; in the next, whole one, 3 one-way UDP flows
    // and one answered (4 connections, 5 records: the count is of records).
    daemon.wait_for_window(0, Duration::from_secs(WINDOW_SECS) + STEP);
    let target = format!("{}:5600", s.ea.v4);
    let mut sink = LineProcess::traffic(&s.a, TRAFFIC, &["udp-sink", &target]);
    sink.expect_line("listening", STEP);
    let mut burst =
        LineProcess::traffic(&s.b, TRAFFIC, &["udp-burst", &target, "3", "100", "41000"]);
    burst.expect_line("sent 3", STEP);
    let answered = format!("{}:5601", s.ea.v4);
    let mut server =
        LineProcess::traffic(&s.a, TRAFFIC, &["udp-server", &answered, "2", "2", "100"]);
    server.expect_line("listening", STEP);
    let mut client =
        LineProcess::traffic(&s.b, TRAFFIC, &["udp-client", &answered, "2", "100", "2"]);
    client.expect_line("done", STEP);
    let window = daemon.wait_for_window(1, Duration::from_secs(WINDOW_SECS) + STEP);
    let prefix = format!(
        "STATUS=window {}-{} UTC: ",
        time_of_day(window.0),
        time_of_day(window.1)
    );
    let status_at = manager.wait_for(
        ready + 1,
        "STATUS= of the second window",
        |n| n.text.starts_with(&prefix),
        &daemon,
    );
    let status = manager.received()[status_at].text.clone();
    let announced: usize = status[prefix.len()..]
        .split_once(" records")
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no record count in {status:?}"));

    // SIGHUP: RELOADING=1 with the monotonic time, then READY=1.
    let before = manager.received().len();
    signal(daemon.pid(), "HUP");
    let reloading = manager.wait_for(before, "RELOADING=1", |n| n.has("RELOADING=1"), &daemon);
    let reloaded = manager.wait_for(
        reloading + 1,
        "READY=1 after RELOADING=1",
        |n| n.has("READY=1"),
        &daemon,
    );
    let got = manager.received();
    let stamp: u64 = got[reloading]
        .value("MONOTONIC_USEC=")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no MONOTONIC_USEC= beside RELOADING=1: {:?}",
                got[reloading]
            )
        });
    let now = monotonic_usec();
    assert!(
        stamp <= now && now - stamp < STEP.as_micros() as u64,
        "MONOTONIC_USEC={stamp}, now {now}"
    );
    assert!(
        daemon.log().contains("reloaded: "),
        "READY=1 after a reload that did not happen:\n{}",
        daemon.log()
    );
    // The loop runs on after the reload: two more watchdog intervals.
    std::thread::sleep(2 * WATCHDOG);

    // SIGTERM: STOPPING=1.
    let before = manager.received().len();
    daemon.stop();
    let stopping = manager.wait_for(before, "STOPPING=1", |n| n.has("STOPPING=1"), &daemon);
    let got = manager.received();
    drop(manager);
    let log = daemon.log();

    // WATCHDOG=1 from READY=1 to STOPPING=1: at half the interval, never
    // a gap that would have made systemd restart the daemon, across two
    // window closes and a reload.
    let feeds: Vec<Instant> = got[..stopping]
        .iter()
        .filter(|n| n.text == "WATCHDOG=1\n")
        .map(|n| n.at)
        .collect();
    let ran = got[stopping].at - got[ready].at;
    let expected = (ran.as_millis() / (WATCHDOG / 2).as_millis()) as usize;
    assert!(
        feeds.len() + 2 >= expected && expected >= 8,
        "{} WATCHDOG=1 in {ran:?} (expected about {expected}): {:#?}",
        feeds.len(),
        texts(&got)
    );
    let mut last = got[ready].at;
    for at in feeds.iter().copied().chain([got[stopping].at]) {
        assert!(
            at - last < WATCHDOG,
            "a {:?} gap between watchdog feeds (the limit is {WATCHDOG:?})",
            at - last
        );
        last = at;
    }
    assert!(
        got[reloaded].at > got[reloading].at && reloaded < stopping,
        "{:#?}",
        texts(&got)
    );

    // The second window's STATUS= counted the records its sink got.
    let records: Vec<Value> = read_json_records(&out)
        .into_iter()
        .filter(|r| r["start"] == window.0 && r["end"] == window.1)
        .collect();
    let udp = |direction: &str| {
        records
            .iter()
            .filter(|r| {
                r["protocol"] == 17 && r["direction"] == direction && r["log-status"] == "OK"
            })
            .count()
    };
    assert_eq!((udp("in"), udp("out")), (4, 1), "{records:#?}\n{log}");
    assert_eq!(
        announced,
        records.len(),
        "{status:?} but the sink got {records:#?}\n{log}"
    );
}
