//! Talking to the service manager: systemd's `Type=notify` protocol
//! (sd_notify(3)). One datagram per notification, `KEY=value` lines, to
//! the socket named by `$NOTIFY_SOCKET`: READY=1 once capture is on,
//! STATUS= after each window, RELOADING=1 / READY=1 around a SIGHUP,
//! STOPPING=1 at SIGTERM, and WATCHDOG=1 from the capture loop itself, so
//! that a loop that stops turning stops feeding the watchdog and systemd
//! restarts the daemon (`WatchdogSec=` in the unit).
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd, or not as
//! `Type=notify`) every call does nothing.
//!
//! Written here rather than with the `sd-notify` crate, whose `notify`
//! reads the environment, makes a socket and connects it on every call,
//! blocks if the manager's queue is full, and takes an `@` address for a
//! file name: the loop sends from one non-blocking socket made at start,
//! and abstract addresses (`@name`, as container managers use) work.
//! Credentials need no code: the manager's socket has SO_PASSCRED, so the
//! kernel attaches the sender's pid, which `NotifyAccess=main` checks.
//! The daemon does not fork (systemd's main pid is the daemon), so no
//! MAINPID= is sent.

use std::cell::Cell;
use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// Watchdog feeds between two looks at the clock, for callers that feed it
/// from inside a long piece of work (a blocking dump, per entry): a few
/// milliseconds of work, so the clock is not read for each entry.
const FEEDS_PER_CLOCK_READ: u32 = 1024;

/// The socket to the service manager, and the watchdog's pace. A no-op
/// unless `$NOTIFY_SOCKET` names a socket.
#[derive(Debug, Default)]
pub struct NotifySocket {
    target: Option<Target>,
    watchdog: Option<Watchdog>,
}

/// Where notifications go.
#[derive(Debug)]
struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `$NOTIFY_SOCKET` as given, for log lines.
    name: String,
    /// A send has failed already (logged once at warn, then at debug).
    failed: Cell<bool>,
}

/// The watchdog's pace: WATCHDOG=1 every half of `$WATCHDOG_USEC`, as
/// sd_watchdog_enabled(3) advises, so that one late turn of the loop is
/// not yet a missed deadline.
#[derive(Debug)]
struct Watchdog {
    every: Duration,
    /// When the next WATCHDOG=1 is due; `None` until READY=1 (systemd
    /// arms the watchdog from then on).
    due: Option<Instant>,
    /// Feeds since the clock was last read ([`NotifySocket::feed_watchdog_amid_work`]).
    feeds: u32,
}

/// Why the environment gives no socket to notify, or no watchdog.
#[derive(Debug, PartialEq, Eq)]
pub enum NotifyEnvError {
    /// `$NOTIFY_SOCKET` is neither a path (`/...`) nor an abstract name
    /// (`@...`), e.g. a `vsock:` address.
    UnsupportedAddress(String),
    /// `$WATCHDOG_USEC` is not a positive number of microseconds.
    BadWatchdogUsec(String),
}

impl std::fmt::Display for NotifyEnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotifyEnvError::UnsupportedAddress(a) => write!(
                f,
                "NOTIFY_SOCKET={a:?} is neither a socket path (/...) nor an abstract name (@...); not notifying the \
                 service manager"
            ),
            NotifyEnvError::BadWatchdogUsec(v) => write!(
                f,
                "WATCHDOG_USEC={v:?} is not a positive number of microseconds; not feeding the watchdog"
            ),
        }
    }
}

impl NotifySocket {
    /// The socket `$NOTIFY_SOCKET` names, with the watchdog of
    /// `$WATCHDOG_USEC` if `$WATCHDOG_PID` is unset or this process.
    /// What cannot be used is logged and left out: the daemon runs on
    /// without it.
    pub fn from_env() -> NotifySocket {
        let var = |name: &str| std::env::var_os(name);
        let (notify, usec, pid) = (
            var("NOTIFY_SOCKET"),
            var("WATCHDOG_USEC"),
            var("WATCHDOG_PID"),
        );
        let (n, problem) = NotifySocket::from_vars(
            notify.as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        );
        if let Some(e) = problem {
            log::warn!("systemd: {e}");
        }
        n
    }

    /// [`NotifySocket::from_env`] from the variables' values, for process
    /// `our_pid`: what can be used, and what could not be if anything (then
    /// a socket without a watchdog, or nothing). A socket that cannot be
    /// made is logged.
    pub fn from_vars(
        notify_socket: Option<&OsStr>,
        watchdog_usec: Option<&OsStr>,
        watchdog_pid: Option<&OsStr>,
        our_pid: u32,
    ) -> (NotifySocket, Option<NotifyEnvError>) {
        let Some(name) = notify_socket.filter(|n| !n.is_empty()) else {
            return (NotifySocket::default(), None);
        };
        let target = match Target::new(name) {
            Ok(Some(t)) => t,
            Ok(None) => {
                let e = NotifyEnvError::UnsupportedAddress(name.to_string_lossy().into_owned());
                return (NotifySocket::default(), Some(e));
            }
            Err(e) => {
                log::warn!(
                    "systemd: cannot make a socket for NOTIFY_SOCKET={}: {e}; not notifying the service manager",
                    name.to_string_lossy()
                );
                return (NotifySocket::default(), None);
            }
        };
        let mut n = NotifySocket {
            target: Some(target),
            watchdog: None,
        };
        // The watchdog is another process's when WATCHDOG_PID names it
        // (the variables were inherited): not ours to feed.
        let ours = watchdog_pid.is_none_or(|p| p.to_str() == Some(our_pid.to_string().as_str()));
        let Some(usec) = watchdog_usec.filter(|_| ours) else {
            return (n, None);
        };
        match usec.to_str().and_then(|u| u.parse::<u64>().ok()) {
            Some(usec) if usec > 0 => {
                n.watchdog = Some(Watchdog {
                    every: Duration::from_micros(usec) / 2,
                    due: None,
                    feeds: 0,
                });
                (n, None)
            }
            _ => {
                let e = NotifyEnvError::BadWatchdogUsec(usec.to_string_lossy().into_owned());
                (n, Some(e))
            }
        }
    }

    /// Whether notifications go anywhere.
    pub fn is_active(&self) -> bool {
        self.target.is_some()
    }

    /// How often WATCHDOG=1 is sent, if the watchdog is on.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.as_ref().map(|w| w.every)
    }

    /// READY=1, with `status` if given (otherwise systemd keeps showing
    /// the last one): capture is on (at start-up), or a reload is over.
    /// From the first one on, the watchdog is fed.
    pub fn ready(&mut self, status: Option<&str>) {
        if let Some(w) = &mut self.watchdog {
            if w.due.is_none() {
                w.due = Some(Instant::now() + w.every);
            }
        }
        match status {
            Some(s) => self.send(&format!("READY=1\nSTATUS={}\n", one_line(s))),
            None => self.send("READY=1\n"),
        }
    }

    /// RELOADING=1, with the CLOCK_MONOTONIC time that systemd 253 and
    /// later require beside it for `Type=notify-reload` (older ones ignore
    /// it). [`NotifySocket::ready`] must follow once the reload is over,
    /// refused or not.
    pub fn reloading(&self) {
        let msg = match monotonic_usec() {
            Some(usec) => format!("RELOADING=1\nMONOTONIC_USEC={usec}\n"),
            None => "RELOADING=1\n".to_owned(),
        };
        self.send(&msg);
    }

    /// STOPPING=1 with `status`: the daemon shuts down.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}\n", one_line(status)));
    }

    /// STATUS=`status`, what `systemctl status` shows.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}\n", one_line(status)));
    }

    /// WATCHDOG=1 if it is due: called by the capture loop at each turn.
    /// Reads the (vDSO) clock, sends nothing when no watchdog is on.
    pub fn feed_watchdog(&mut self) {
        let Some(w) = &mut self.watchdog else {
            return;
        };
        w.feeds = 0;
        let now = Instant::now();
        match w.due {
            Some(due) if now >= due => w.due = Some(now + w.every),
            _ => return,
        }
        self.send("WATCHDOG=1\n");
    }

    /// [`NotifySocket::feed_watchdog`] from inside a long piece of work
    /// that the loop cannot interrupt (per entry of a blocking dump): the
    /// clock is read once every [`FEEDS_PER_CLOCK_READ`] calls.
    pub fn feed_watchdog_amid_work(&mut self) {
        let Some(w) = &mut self.watchdog else {
            return;
        };
        w.feeds += 1;
        if w.feeds >= FEEDS_PER_CLOCK_READ {
            self.feed_watchdog();
        }
    }

    /// How long until the next WATCHDOG=1 is due (zero if it is): the
    /// loop's poll waits no longer, so an idle loop still feeds it.
    pub fn watchdog_due_in(&self) -> Option<Duration> {
        let due = self.watchdog.as_ref()?.due?;
        Some(due.saturating_duration_since(Instant::now()))
    }

    fn send(&self, msg: &str) {
        let Some(t) = &self.target else {
            return;
        };
        if let Err(e) = t.socket.send_to_addr(msg.as_bytes(), &t.addr) {
            // Non-blocking: a manager that does not read its queue costs a
            // lost notification, never a stalled loop.
            let what = msg.lines().next().unwrap_or_default();
            if t.failed.replace(true) {
                log::debug!("systemd: cannot send {what} to {}: {e}", t.name);
            } else {
                log::warn!(
                    "systemd: cannot send {what} to {}: {e} (further failures are logged at debug)",
                    t.name
                );
            }
        }
    }
}

impl Target {
    /// A socket for `name`: `/path` or `@abstract`; `None` for any other
    /// form.
    fn new(name: &OsStr) -> io::Result<Option<Target>> {
        let bytes = name.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(name)?,
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
            _ => return Ok(None),
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Some(Target {
            socket,
            addr,
            name: name.to_string_lossy().into_owned(),
            failed: Cell::new(false),
        }))
    }
}

/// A STATUS= value is one line: newlines would start new fields.
fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\n') {
        s.replace('\n', " ").into()
    } else {
        s.into()
    }
}

/// CLOCK_MONOTONIC now, in microseconds.
fn monotonic_usec() -> Option<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let secs = u64::try_from(t.tv_sec()).ok()?;
    let micros = u64::try_from(t.tv_nsec()).ok()? / 1000;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// `HH:MM:SS` (UTC) of Unix second `unix`, for STATUS= lines.
pub fn utc_time_of_day(unix: i64) -> String {
    let s = unix.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    /// A listener at an abstract name of its own (per network namespace,
    /// so the name carries the pid and a counter).
    fn abstract_listener(label: &str) -> (UnixDatagram, String) {
        let name = format!("flowlogd-notify-test-{label}-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (listener, format!("@{name}"))
    }

    fn recv(listener: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = listener.recv(&mut buf).expect("a notification in 5 s");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn without_notify_socket_nothing_is_sent_and_no_watchdog_runs() {
        for unset in [None, os("")] {
            let (mut n, e) = NotifySocket::from_vars(unset, os("2000000"), None, 7);
            assert_eq!(e, None);
            assert!(!n.is_active());
            assert_eq!(n.watchdog_every(), None);
            n.ready(Some("x"));
            n.feed_watchdog();
            assert_eq!(n.watchdog_due_in(), None);
        }
    }

    #[test]
    fn an_address_that_is_not_a_path_or_abstract_is_refused() {
        let (n, e) = NotifySocket::from_vars(os("vsock:2:1234"), None, None, 7);
        assert!(!n.is_active());
        assert_eq!(
            e,
            Some(NotifyEnvError::UnsupportedAddress("vsock:2:1234".into()))
        );
    }

    #[test]
    fn the_watchdog_is_fed_at_half_its_interval_and_only_if_it_is_ours() {
        let (n, _) = NotifySocket::from_vars(os("/run/x"), os("3000000"), None, 7);
        assert_eq!(n.watchdog_every(), Some(Duration::from_millis(1500)));
        let (n, _) = NotifySocket::from_vars(os("/run/x"), os("3000000"), os("7"), 7);
        assert_eq!(n.watchdog_every(), Some(Duration::from_millis(1500)));
        // Inherited from a parent whose watchdog it is.
        let (n, _) = NotifySocket::from_vars(os("/run/x"), os("3000000"), os("8"), 7);
        assert!(n.is_active());
        assert_eq!(n.watchdog_every(), None);
        for bad in ["0", "-5", "soon", ""] {
            let (n, e) = NotifySocket::from_vars(os("/run/x"), os(bad), None, 7);
            assert!(n.is_active(), "{bad}");
            assert_eq!(n.watchdog_every(), None, "{bad}");
            assert_eq!(e, Some(NotifyEnvError::BadWatchdogUsec(bad.into())));
        }
    }

    #[test]
    fn notifications_reach_an_abstract_socket() {
        let (listener, name) = abstract_listener("abstract");
        let (mut n, _) = NotifySocket::from_vars(os(&name), os("200000"), None, 7);
        // Not armed before READY=1: nothing is due.
        assert_eq!(n.watchdog_due_in(), None);
        n.feed_watchdog();
        n.ready(Some("capturing\nnow"));
        assert_eq!(recv(&listener), "READY=1\nSTATUS=capturing now\n");
        let due = n.watchdog_due_in().expect("armed by READY=1");
        assert!(due <= Duration::from_millis(100), "{due:?}");
        // Not yet due: nothing sent.
        n.feed_watchdog();
        std::thread::sleep(Duration::from_millis(110));
        n.feed_watchdog();
        assert_eq!(recv(&listener), "WATCHDOG=1\n");
        n.reloading();
        let reloading = recv(&listener);
        let usec: u64 = reloading
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|r| r.strip_suffix('\n'))
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("{reloading:?}"));
        let now = monotonic_usec().unwrap();
        assert!(usec <= now && now - usec < 5_000_000, "{usec} vs {now}");
        n.stopping("stopping");
        assert_eq!(recv(&listener), "STOPPING=1\nSTATUS=stopping\n");
        n.status("window 1");
        assert_eq!(recv(&listener), "STATUS=window 1\n");
    }

    #[test]
    fn feeding_amid_work_reads_the_clock_only_every_so_many_calls() {
        let (listener, name) = abstract_listener("amid");
        let (mut n, _) = NotifySocket::from_vars(os(&name), os("2"), None, 7);
        n.ready(None);
        assert_eq!(recv(&listener), "READY=1\n");
        // 1 µs interval: due at once, but only every FEEDS_PER_CLOCK_READ.
        std::thread::sleep(Duration::from_millis(1));
        for _ in 0..FEEDS_PER_CLOCK_READ - 1 {
            n.feed_watchdog_amid_work();
        }
        listener.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert!(listener.recv(&mut buf).is_err(), "nothing sent yet");
        n.feed_watchdog_amid_work();
        listener.set_nonblocking(false).unwrap();
        assert_eq!(recv(&listener), "WATCHDOG=1\n");
    }

    #[test]
    fn utc_time_of_day_formats_window_bounds() {
        assert_eq!(utc_time_of_day(1_700_000_400), "22:20:00");
        assert_eq!(utc_time_of_day(0), "00:00:00");
        assert_eq!(utc_time_of_day(86_399), "23:59:59");
    }
}
