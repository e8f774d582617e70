//! Network namespaces for the privileged end-to-end tests: namespaces that
//! always clean up, veth pairs with addresses, the daemon and traffic
//! processes run inside them, and the namespace's conntrack table as
//! `conntrack -L` shows it (the cross-check for the daemon's records).
//!
//! Cleanup is by exact name or exact pid, never by pattern: a namespace is
//! `ip netns del <its name>`, a process is `kill(<its pid>)`. Every wait is
//! bounded and panics with what it waited for and the process's output.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{flowlogd_bin, text};

/// How long the daemon may take from spawn to `capturing:`.
pub const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon may take from SIGTERM to exit. Its own sink
/// shutdown timeout in tests is 5 s (`config_with`); the rest is margin.
pub const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(20);

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

const SIGTERM: i32 = 15;

/// Runs a command to completion and asserts that it succeeded.
#[track_caller]
fn run_ok(cmd: &mut Command) -> Output {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed:\n{}", text(&o));
    o
}

/// A network namespace, deleted by its exact name on drop (also when the
/// test panics). Declare it before the processes that run in it, so that
/// they are dropped (killed) first.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add flt-<label>-<pid>-<n>`, with `lo` up.
    ///
    /// # Panics
    /// If the namespace cannot be created (not root, no iproute2).
    #[track_caller]
    pub fn new(label: &str) -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "flt-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        // From here on Drop removes it, whatever fails next.
        let ns = Netns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec <ns> <program>`, to add arguments to. `ip netns exec`
    /// execs the program in place (no fork), so a spawned child's pid is
    /// the program's. JOURNAL_STREAM is removed so the daemon's log lines
    /// have their terminal format whatever runs the tests.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(program)
            .env_remove("JOURNAL_STREAM");
        c
    }

    /// Runs `args` in the namespace to completion.
    pub fn exec(&self, args: &[&str]) -> Output {
        let (program, rest) = args.split_first().expect("a command");
        self.command(program)
            .args(rest)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name))
    }

    /// Runs `args` in the namespace, asserts success, returns stdout.
    #[track_caller]
    pub fn exec_ok(&self, args: &[&str]) -> String {
        let o = self.exec(args);
        assert!(
            o.status.success(),
            "{args:?} in {} failed:\n{}",
            self.name,
            text(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Starts `args` in the namespace with stdin and stdout piped and
    /// stderr inherited. Prefer [`LineProcess`], which kills on drop.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let (program, rest) = args.split_first().expect("a command");
        self.command(program)
            .args(rest)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {args:?} in {}: {e}", self.name))
    }

    /// Makes the namespace track connections with counters, independently
    /// of the daemon: a table `inet flowlogd_test` whose rules reference
    /// `ct` (no verdicts), and `nf_conntrack_acct` on. For tests whose
    /// traffic starts before the daemon first installs its own table.
    /// Counters are an extension added when a connection is created, so
    /// call this before the traffic starts.
    #[track_caller]
    pub fn enable_tracking(&self) {
        let ruleset = "table inet flowlogd_test {\n\
             \tchain pre { type filter hook prerouting priority -150; policy accept; ct state new counter; }\n\
             \tchain out { type filter hook output priority -150; policy accept; ct state new counter; }\n\
             }\n";
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ruleset.as_bytes())
            .expect("write ruleset");
        let o = child.wait_with_output().expect("wait for nft");
        assert!(
            o.status.success(),
            "nft -f in {} failed:\n{}",
            self.name,
            text(&o)
        );
        self.exec_ok(&["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_acct=1"]);
    }

    /// Loads `rules` (an `nft -f` script) into the namespace, through
    /// nft's standard input; panics with nft's message if it refuses them.
    #[track_caller]
    pub fn load_nft(&self, rules: &str) {
        use std::io::Write;
        let out = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin
                    .take()
                    .expect("piped stdin")
                    .write_all(rules.as_bytes())?;
                c.wait_with_output()
            })
            .expect("run nft");
        assert!(
            out.status.success(),
            "nft -f failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The value of `sample` (`name{labels}`) on the daemon's metrics page
    /// in this namespace (`http://127.0.0.1:9750/metrics`, the default).
    #[track_caller]
    pub fn metric(&self, sample: &str) -> u64 {
        let page = self.exec_ok(&[
            "python3",
            "-c",
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9750/metrics', timeout=5).read().decode())",
        ]);
        let line = page
            .lines()
            .find(|l| l.rsplit_once(' ').is_some_and(|(k, _)| k == sample))
            .unwrap_or_else(|| panic!("no sample {sample}:\n{page}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    }

    /// The names of the nftables tables in the namespace (`inet flowlogd`, ...).
    #[track_caller]
    pub fn nft_tables(&self) -> Vec<String> {
        self.exec_ok(&["nft", "list", "tables"])
            .lines()
            .filter_map(|l| l.strip_prefix("table "))
            .map(str::to_owned)
            .collect()
    }

    /// The namespace's conntrack table now (IPv4 and IPv6).
    #[track_caller]
    pub fn conntrack(&self) -> Vec<CtEntry> {
        let out = self.exec_ok(&["conntrack", "-L", "-o", "extended"]);
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                CtEntry::parse(l)
                    .unwrap_or_else(|e| panic!("cannot parse conntrack line {l:?}: {e}"))
            })
            .collect()
    }

    /// The conntrack table once its counters have stopped moving: two
    /// reads 300 ms apart that agree (in-flight packets, delayed ACKs and
    /// the like have settled). Returns the later read and the time the
    /// earlier one started (packets counted in it were sent before then).
    ///
    /// # Panics
    /// If the counters keep changing for 10 s.
    #[track_caller]
    pub fn settled_conntrack(&self) -> (Vec<CtEntry>, SystemTime) {
        let mut started = SystemTime::now();
        let mut last = self.conntrack();
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(300));
            let next_started = SystemTime::now();
            let next = self.conntrack();
            if counters_equal(&last, &next) {
                return (next, started);
            }
            (last, started) = (next, next_started);
        }
        panic!(
            "conntrack counters in {} kept changing for 10 s:\n{}",
            self.name,
            last.iter()
                .map(|e| e.line.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("warning: ip netns del {} failed:\n{}", self.name, text(&o)),
            Err(e) => eprintln!("warning: cannot run ip netns del {}: {e}", self.name),
        }
    }
}

fn counters_equal(a: &[CtEntry], b: &[CtEntry]) -> bool {
    let key = |e: &CtEntry| (e.protocol, e.orig, e.reply);
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

/// One side of a veth pair: its interface and addresses.
#[derive(Clone, Debug)]
pub struct VethEnd {
    pub interface: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl VethEnd {
    /// The address of `family` (4 or 6).
    pub fn addr(&self, family: u8) -> IpAddr {
        match family {
            4 => self.v4.into(),
            6 => self.v6.into(),
            _ => panic!("family {family}"),
        }
    }
}

/// A veth pair between namespaces `a` and `b` in subnet `n`: `a` has
/// 10.200.n.1/24 and fd00:200:n::1/64, `b` has .2 and ::2. IPv6 addresses
/// are `nodad`, usable at once. Interface names are those given (at most
/// 15 bytes); they live inside the namespaces, so tests may reuse them.
#[track_caller]
pub fn veth_pair(a: &Netns, a_if: &str, b: &Netns, b_if: &str, n: u8) -> (VethEnd, VethEnd) {
    assert!(
        a_if.len() <= 15 && b_if.len() <= 15,
        "interface names are at most 15 bytes"
    );
    a.exec_ok(&[
        "ip",
        "link",
        "add",
        a_if,
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ]);
    let end = |ns: &Netns, interface: &str, host: u8| {
        let v4 = Ipv4Addr::new(10, 200, n, host);
        let v6 = Ipv6Addr::new(0xfd00, 0x200, u16::from(n), 0, 0, 0, 0, u16::from(host));
        ns.exec_ok(&["ip", "addr", "add", &format!("{v4}/24"), "dev", interface]);
        ns.exec_ok(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            interface,
            "nodad",
        ]);
        ns.exec_ok(&["ip", "link", "set", interface, "up"]);
        VethEnd {
            interface: interface.to_owned(),
            v4,
            v6,
        }
    };
    (end(a, a_if, 1), end(b, b_if, 2))
}

/// The accepted-and-dropped UDP of several tests, from `b` to `a4` in `a`
/// (`bin` is the `flowlogd-traffic` binary): 4 datagrams of 60 bytes to
/// `port`, answered by 2 of 40 (the server in `a`); 5 datagrams of 10
/// bytes to 1161, which the test's rules drop. Returns when both clients
/// are done, with the server (keep it while the flow should stay live).
#[track_caller]
#[must_use]
pub fn udp_accepted_and_dropped(
    a: &Netns,
    b: &Netns,
    bin: &str,
    a4: &str,
    port: u16,
) -> LineProcess {
    let mut server = LineProcess::traffic(
        a,
        bin,
        &["udp-server", &format!("{a4}:{port}"), "4", "2", "40"],
    );
    server.expect_line("listening", Duration::from_secs(10));
    let mut ok = LineProcess::traffic(
        b,
        bin,
        &["udp-client", &format!("{a4}:{port}"), "4", "60", "2"],
    );
    let mut dropped = LineProcess::traffic(
        b,
        bin,
        &["udp-client", &format!("{a4}:1161"), "5", "10", "0"],
    );
    ok.expect_line("done", Duration::from_secs(10));
    dropped.expect_line("done", Duration::from_secs(10));
    server
}

/// A child process whose stdout is read line by line (with timeouts) and
/// whose stderr is kept for failure messages; killed by exact pid on drop.
pub struct LineProcess {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl LineProcess {
    /// Starts `program args` in `ns`.
    #[track_caller]
    pub fn spawn(ns: &Netns, program: impl AsRef<OsStr>, args: &[&str]) -> LineProcess {
        let what = format!(
            "{} {} (in {})",
            program.as_ref().to_string_lossy(),
            args.join(" "),
            ns.name()
        );
        let mut child = ns
            .command(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut child_err = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = std::io::Read::read_to_string(&mut child_err, &mut buf);
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_str(&buf);
        });
        LineProcess {
            what,
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Starts `flowlogd-traffic args` in `ns` (`bin` is its path, from
    /// `env!("CARGO_BIN_EXE_flowlogd-traffic")` in the test).
    pub fn traffic(ns: &Netns, bin: &str, args: &[&str]) -> LineProcess {
        LineProcess::spawn(ns, bin, args)
    }

    /// Writes one line to the process's stdin.
    #[track_caller]
    pub fn send_line(&mut self, line: &str) {
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{}: stdin closed", self.what));
        if let Err(e) = writeln!(stdin, "{line}").and_then(|()| stdin.flush()) {
            panic!(
                "{}: cannot write {line:?}: {e}\n{}",
                self.what,
                self.output()
            );
        }
    }

    /// Waits for the next stdout line that starts with `prefix` (earlier
    /// lines are skipped) and returns it.
    ///
    /// # Panics
    /// On EOF or after `timeout`, with everything the process printed.
    #[track_caller]
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no line starting with {prefix:?} in {timeout:?}\n{}",
                        self.what,
                        self.output()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Let the stderr reader finish before reporting.
                    let status = self.wait_briefly();
                    panic!(
                        "{}: exited ({status:?}) before printing a line starting with {prefix:?}\n{}",
                        self.what,
                        self.output()
                    )
                }
            }
        }
    }

    /// The number after `prefix ` in the next line starting with `prefix`
    /// (`listening 5000` -> 5000).
    #[track_caller]
    pub fn expect_number(&mut self, prefix: &str, timeout: Duration) -> u64 {
        let line = self.expect_line(prefix, timeout);
        line[prefix.len()..]
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("{}: no number in {line:?}", self.what))
    }

    /// Closes stdin and waits (bounded) for a successful exit.
    #[track_caller]
    pub fn finish(&mut self, timeout: Duration) {
        self.stdin = None;
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    assert!(
                        status.success(),
                        "{} exited with {status}\n{}",
                        self.what,
                        self.output()
                    );
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => panic!(
                    "{} did not exit in {timeout:?}\n{}",
                    self.what,
                    self.output()
                ),
                Err(e) => panic!("{}: wait failed: {e}", self.what),
            }
        }
    }

    fn wait_briefly(&mut self) -> Option<ExitStatus> {
        for _ in 0..100 {
            if let Ok(Some(s)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(20));
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// What the process printed so far.
    pub fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.seen.join("\n"),
            self.stderr.lock().unwrap_or_else(|p| p.into_inner())
        )
    }
}

impl Drop for LineProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Child::kill is SIGKILL to this child's pid only.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The flowlogd daemon running in a namespace, its stderr in a log file.
/// Killed (SIGKILL, exact pid) on drop if still running.
pub struct DaemonProcess {
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl DaemonProcess {
    /// `flowlogd run --config <config>` in `ns`, stderr to `log` (created
    /// or truncated); returns once the log says `capturing:`.
    ///
    /// # Panics
    /// If the daemon exits, or does not get there in
    /// [`DAEMON_START_TIMEOUT`], with its log.
    #[track_caller]
    pub fn start(ns: &Netns, config: &Path, log: &Path) -> DaemonProcess {
        DaemonProcess::start_with_env(ns, config, log, &[])
    }

    /// [`DaemonProcess::start`] with the variables `env` added to the
    /// daemon's environment (`NOTIFY_SOCKET`, ...).
    ///
    /// # Panics
    /// As [`DaemonProcess::start`].
    #[track_caller]
    pub fn start_with_env(
        ns: &Netns,
        config: &Path,
        log: &Path,
        env: &[(&str, &OsStr)],
    ) -> DaemonProcess {
        let stderr = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let child = ns
            .command(flowlogd_bin())
            .arg("run")
            .arg("--config")
            .arg(config)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start flowlogd in {}: {e}", ns.name()));
        let mut d = DaemonProcess {
            child,
            log: log.to_owned(),
            status: None,
        };
        let deadline = Instant::now() + DAEMON_START_TIMEOUT;
        while !d.log().contains("capturing:") {
            if let Some(status) = d.exited() {
                panic!("flowlogd exited ({status}) before capturing:\n{}", d.log());
            }
            if Instant::now() >= deadline {
                panic!(
                    "flowlogd did not log `capturing:` in {DAEMON_START_TIMEOUT:?}:\n{}",
                    d.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status if the daemon has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap_or(None);
        }
        self.status
    }

    /// The windows closed so far, `(start, end)` in order, from the log's
    /// `window <start>-<end>: ...` lines.
    pub fn closed_windows(&self) -> Vec<(i64, i64)> {
        closed_windows(&self.log())
    }

    /// Waits until more than `n` windows have closed and returns the
    /// `n`-th (0-based) closed window.
    ///
    /// # Panics
    /// After `timeout`, or if the daemon exits, with the log.
    #[track_caller]
    pub fn wait_for_window(&mut self, n: usize, timeout: Duration) -> (i64, i64) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(&w) = self.closed_windows().get(n) {
                return w;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "flowlogd exited ({status}) while waiting for window #{n} to close:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!("window #{n} did not close in {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log contains `needle`.
    ///
    /// # Panics
    /// After `timeout`, or if the daemon exits, with the log.
    #[track_caller]
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            if let Some(status) = self.exited() {
                panic!(
                    "flowlogd exited ({status}) while waiting for {needle:?} in its log:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{needle:?} not in the log after {timeout:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM to the daemon's exact pid, without waiting: for a test that
    /// does something while the daemon stops. A second SIGTERM (from
    /// [`DaemonProcess::terminate`]) while it stops changes nothing.
    pub fn send_sigterm(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: kill(2) with the pid of our own child that has not been
        // reaped (try_wait above saw it running), so the pid is not reused.
        unsafe {
            libc_kill(pid, SIGTERM);
        }
    }

    /// SIGTERM to the daemon's exact pid; waits for it to exit (bounded by
    /// [`DAEMON_STOP_TIMEOUT`], then SIGKILL) and returns its status.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        let pid = self.child.id();
        self.send_sigterm();
        let deadline = Instant::now() + DAEMON_STOP_TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "flowlogd (pid {pid}) ignored SIGTERM for {DAEMON_STOP_TIMEOUT:?}; killing it"
                );
                let _ = self.child.kill();
                let status = self.child.wait().expect("wait for flowlogd");
                self.status = Some(status);
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL to the daemon's exact pid (a crash: no shutdown code runs);
    /// waits for it.
    pub fn crash(&mut self) {
        if self.exited().is_some() {
            return;
        }
        // Child::kill is SIGKILL to this child's pid only.
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for flowlogd");
        self.status = Some(status);
    }

    /// [`DaemonProcess::terminate`], asserting exit code 0.
    #[track_caller]
    pub fn stop(&mut self) {
        let status = self.terminate();
        assert_eq!(
            status.code(),
            Some(0),
            "flowlogd did not exit 0 on SIGTERM ({status}):\n{}",
            self.log()
        );
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `window <start>-<end>: ` lines of a daemon log.
pub fn closed_windows(log: &str) -> Vec<(i64, i64)> {
    log.lines()
        .filter_map(|l| {
            l.split("window ").skip(1).find_map(|rest| {
                let (span, _) = rest.split_once(": ")?;
                let (start, end) = span.split_once('-')?;
                Some((start.parse().ok()?, end.parse().ok()?))
            })
        })
        .collect()
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    unix_secs(SystemTime::now())
}

/// Unix seconds (floor) of `t`.
pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One direction of a conntrack entry: its tuple and counters. Ports are 0
/// for protocols without ports (ICMP's type/code/id are not kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CtDirection {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub packets: u64,
    pub bytes: u64,
}

/// One line of `conntrack -L -o extended`.
#[derive(Clone, Debug)]
pub struct CtEntry {
    pub protocol: u8,
    pub orig: CtDirection,
    pub reply: CtDirection,
    pub line: String,
}

impl CtEntry {
    /// Parses `ipv4 2 tcp 6 117 TIME_WAIT src=.. dst=.. sport=.. dport=..
    /// packets=.. bytes=.. src=.. (reply) ... [ASSURED] mark=0 use=1`.
    ///
    /// # Errors
    /// What is missing or malformed.
    pub fn parse(line: &str) -> Result<CtEntry, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let protocol: u8 = words
            .get(3)
            .and_then(|w| w.parse().ok())
            .ok_or("no protocol number in the 4th field")?;
        // Key-value pairs; the second `src=` starts the reply direction.
        let mut sides: Vec<Vec<(&str, &str)>> = Vec::new();
        for w in &words[4..] {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            if k == "src" {
                if sides.len() == 2 {
                    return Err("more than two src= fields".into());
                }
                sides.push(Vec::new());
            }
            if let Some(side) = sides.last_mut() {
                side.push((k, v));
            }
        }
        if sides.len() != 2 {
            return Err("expected two directions".into());
        }
        let dir = |kv: &[(&str, &str)]| -> Result<CtDirection, String> {
            let get = |key: &str| kv.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
            let need =
                |key: &str| get(key).ok_or_else(|| format!("no {key}= (is nf_conntrack_acct on?)"));
            let addr = |key: &str| -> Result<IpAddr, String> {
                need(key)?.parse().map_err(|e| format!("{key}: {e}"))
            };
            let num = |key: &str| -> Result<u64, String> {
                need(key)?.parse().map_err(|e| format!("{key}: {e}"))
            };
            let port = |key: &str| -> Result<u16, String> {
                get(key).map_or(Ok(0), |v| v.parse().map_err(|e| format!("{key}: {e}")))
            };
            Ok(CtDirection {
                src: addr("src")?,
                dst: addr("dst")?,
                sport: port("sport")?,
                dport: port("dport")?,
                packets: num("packets")?,
                bytes: num("bytes")?,
            })
        };
        Ok(CtEntry {
            protocol,
            orig: dir(&sides[0])?,
            reply: dir(&sides[1])?,
            line: line.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as conntrack v1.4.7 printed them on Linux 6.18.
    #[test]
    fn parses_conntrack_extended_lines() {
        let icmp = CtEntry::parse(
            "ipv4     2 icmp     1 29 src=10.200.1.1 dst=10.200.1.2 type=8 code=0 id=22087 packets=3 bytes=252 \
             src=10.200.1.2 dst=10.200.1.1 type=0 code=0 id=22087 packets=3 bytes=252 mark=0 use=1",
        )
        .unwrap();
        assert_eq!(icmp.protocol, 1);
        assert_eq!(
            (
                icmp.orig.sport,
                icmp.orig.dport,
                icmp.orig.packets,
                icmp.orig.bytes
            ),
            (0, 0, 3, 252)
        );
        assert_eq!(icmp.reply.src, "10.200.1.2".parse::<IpAddr>().unwrap());
        let tcp = CtEntry::parse(
            "ipv6     10 tcp      6 119 TIME_WAIT src=fd00:200:1::1 dst=fd00:200:1::2 sport=40000 dport=5000 \
             packets=12 bytes=101234 src=fd00:200:1::2 dst=fd00:200:1::1 sport=5000 dport=40000 packets=9 \
             bytes=5600 [ASSURED] mark=0 use=1",
        )
        .unwrap();
        assert_eq!(tcp.protocol, 6);
        assert_eq!(
            (tcp.orig.sport, tcp.orig.dport, tcp.orig.bytes),
            (40000, 5000, 101234)
        );
        assert_eq!(
            (tcp.reply.sport, tcp.reply.dport, tcp.reply.packets),
            (5000, 40000, 9)
        );
        assert!(CtEntry::parse("ipv4 2 udp 17 29 src=1.2.3.4 dst=1.2.3.5 sport=1 dport=2 [UNREPLIED] src=1.2.3.5 dst=1.2.3.4 sport=2 dport=1 mark=0").is_err());
    }

    #[test]
    fn finds_closed_windows_in_the_log() {
        let log = "2026-01-01T00:00:00Z INFO  capturing: window 2 s, first window closes at 10\n\
                   2026-01-01T00:00:00Z INFO  window 8-10: 1 records in 9 ms; 2 live connections\n\
                   <6>window 10-11: 0 records in 1 ms\n";
        assert_eq!(closed_windows(log), vec![(8, 10), (10, 11)]);
    }
}
