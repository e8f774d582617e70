//! The state directory and the files in it, as an attacker or a careless
//! operator would have them (issue #13, item 3), and the environment of
//! the `nft` child (item 6):
//! - a `state_dir` of mode 0777 (or another user's) is refused at start
//!   and by `check-config`, naming the directory;
//! - a symlink planted at the handoff's temporary name is never written
//!   through at a clean stop;
//! - a handoff others could write, or dated in the future, is refused at
//!   start with a log line, and the run starts all the same;
//! - `nft`, run by the daemon, does not see a Log Service secret in the
//!   daemon's environment.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use flowlogd_tests::netns::{unix_now, DaemonProcess, Netns};
use flowlogd_tests::*;

const HANDOFF: &str = "conntrack-handoff";
const REFUSED_HANDOFF: &str = "not resuming from the previous run's handoff";

/// A namespace with one end of a veth pair captured as eni-s, and a config
/// whose state directory is `state_dir`.
struct Setup {
    tmp: TempDir,
    ns: Netns,
    _peer: Netns,
    config: PathBuf,
    state_dir: PathBuf,
}

impl Setup {
    fn new(label: &str) -> Setup {
        let Scenario {
            a: ns,
            b: peer,
            tmp,
            plugins,
            ..
        } = Scenario::builder(label)
            .namespaces(label, &format!("{label}p"))
            .veth("veth-s", "veth-p", 47)
            .build();
        let config = DaemonConfig::new(&plugins)
            .window_secs(3600)
            .eni("eni-s", "veth-s", "vpc-s")
            .flow_log(FlowLog::vpc("all", "vpc-s").sinks(&["out"]))
            .json_sink("out", &tmp.join("out.jsonl"))
            .write(&tmp.join("flowlogd.toml"));
        // DaemonConfig's state_dir: `state/` beside the plugins.
        let state_dir = tmp.join("state");
        std::fs::create_dir(&state_dir).unwrap();
        chmod(&state_dir, 0o700);
        Setup {
            tmp,
            ns,
            _peer: peer,
            config,
            state_dir,
        }
    }

    fn start(&self) -> DaemonProcess {
        DaemonProcess::start(&self.ns, &self.config, &self.tmp.join("daemon.log"))
    }

    /// A handoff as the daemon writes it in this namespace, written at
    /// `written_at`, handing off one connection.
    fn plant_handoff(&self, written_at: i64, mode: u32) {
        let netns = self.ns.exec_ok(&["readlink", "/proc/self/ns/net"]);
        let path = self.state_dir.join(HANDOFF);
        std::fs::write(
            &path,
            format!(
                "flowlogd-handoff 2 {written_at} {} {written_at}\n77 1 60 1 60\n",
                netns.trim()
            ),
        )
        .unwrap();
        chmod(&path, mode);
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `command` to its end, or kills it (exact pid) after `timeout`
/// and returns `None`: a daemon that should have refused to start runs on.
fn output_within(mut command: Command, timeout: Duration) -> Option<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() >= deadline {
            // Child::kill is SIGKILL to this child's pid only.
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().expect("output"))
}

/// A state directory of mode 0777: another user could plant the files the
/// daemon writes as root. `run` refuses to start (exit 2, as for a config
/// error) naming the directory and the fix, before it installs anything;
/// `check-config` says the same. Another user's directory is refused by
/// `run` too.
#[test]
fn a_state_dir_others_can_write_is_refused() {
    if !require_root("a_state_dir_others_can_write_is_refused") {
        return;
    }
    let s = Setup::new("sd777");
    chmod(&s.state_dir, 0o777);
    let dir = s.state_dir.display().to_string();

    let check = flowlogd(&["check-config", "--config", s.config.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(2), "{}", text(&check));
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains(&dir) && err.contains("mode 0777") && err.contains("chmod go-w"),
        "{}",
        text(&check)
    );

    let mut run = s.ns.command(flowlogd_bin());
    run.arg("run").arg("--config").arg(&s.config);
    let out = output_within(run, Duration::from_secs(10))
        .expect("flowlogd run kept running with a state_dir of mode 0777");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("daemon.state_dir") && err.contains(&dir) && err.contains("mode 0777"),
        "{}",
        text(&out)
    );
    assert!(
        !s.ns.nft_tables().iter().any(|t| t == "inet flowlogd"),
        "refused before installing its table"
    );

    // Safe again, but another user's: `run` (as root here) refuses it;
    // `check-config` as root cannot know the unit's User=, so it passes
    // and says whose the directory is.
    chmod(&s.state_dir, 0o700);
    std::os::unix::fs::chown(&s.state_dir, Some(65534), Some(65534)).unwrap();
    let check = flowlogd(&["check-config", "--config", s.config.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    assert!(
        String::from_utf8_lossy(&check.stdout)
            .contains("owned by uid 65534: run must run as that user"),
        "{}",
        text(&check)
    );
    let mut run = s.ns.command(flowlogd_bin());
    run.arg("run").arg("--config").arg(&s.config);
    let out = output_within(run, Duration::from_secs(10))
        .expect("flowlogd run kept running with another user's state_dir");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("owned by uid 65534"),
        "{}",
        text(&out)
    );
}

/// A symlink at `conntrack-handoff.tmp` pointing at a root-owned file (the
/// state directory rule now keeps other users from planting it, so root
/// plants it here): a clean stop does not write through it. The victim is
/// unchanged, the symlink is left for the operator, and the log says why
/// no handoff was written.
#[test]
fn a_symlink_at_the_handoff_tmp_is_not_written_through() {
    if !require_root("a_symlink_at_the_handoff_tmp_is_not_written_through") {
        return;
    }
    let s = Setup::new("sdlink");
    let victim = s.tmp.join("victim");
    std::fs::write(&victim, "root's file\n").unwrap();
    let tmp_name = s.state_dir.join(format!("{HANDOFF}.tmp"));
    std::os::unix::fs::symlink(&victim, &tmp_name).unwrap();

    let mut daemon = s.start();
    daemon.stop();
    let log = daemon.log();

    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "root's file\n",
        "the victim was written through the symlink:\n{log}"
    );
    assert!(std::fs::symlink_metadata(&tmp_name)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!s.state_dir.join(HANDOFF).exists(), "{log}");
    let line = log
        .lines()
        .find(|l| l.contains("cannot write") && l.contains(&format!("{HANDOFF}.tmp")))
        .unwrap_or_else(|| panic!("no error naming the tmp file:\n{log}"));
    assert!(line.contains("a symlink"), "{line}");
}

/// A handoff of mode 0666 (anyone could have written its counters) and
/// one dated an hour in the future are each refused at start with a log
/// line saying why, consumed, and the run starts all the same.
#[test]
fn an_untrusted_handoff_is_refused_and_the_run_starts() {
    if !require_root("an_untrusted_handoff_is_refused_and_the_run_starts") {
        return;
    }
    let s = Setup::new("sdhand");
    for (label, written_at, mode, why) in [
        (
            "mode 0666",
            unix_now(),
            0o666,
            "writable by group or others (mode 0666)",
        ),
        ("in the future", unix_now() + 3600, 0o600, "in the future"),
    ] {
        s.plant_handoff(written_at, mode);
        let mut daemon = s.start();
        let log = daemon.log();
        let refused: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(REFUSED_HANDOFF))
            .collect();
        assert_eq!(refused.len(), 1, "{label}: one refusal:\n{log}");
        assert!(refused[0].contains(why), "{label}: {}", refused[0]);
        assert!(
            !log.contains("connections handed off by the previous run"),
            "{label}: used:\n{log}"
        );
        assert!(!s.state_dir.join(HANDOFF).exists(), "{label}: consumed");
        daemon.stop();
        // The clean stop's own handoff is the daemon's: 0600.
        let meta = std::fs::metadata(s.state_dir.join(HANDOFF)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{label}");
        std::fs::remove_file(s.state_dir.join(HANDOFF)).unwrap();
    }
}

/// The first of the places the daemon looks for nft (before PATH).
fn system_nft() -> PathBuf {
    ["/usr/sbin/nft", "/sbin/nft"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("nft installed in /usr/sbin or /sbin")
}

/// The daemon runs `nft` with a Log Service secret in its own environment
/// (as an operator passing FLOWLOGD_LOGSERVICE_ACCESS_KEY_SECRET would):
/// the nft it runs sees PATH and LC_ALL only. The nft it finds is replaced,
/// in a private mount namespace of this test only, by a script that
/// records its environment and runs the real nft.
#[test]
fn the_nft_child_does_not_see_the_daemons_environment() {
    if !require_root("the_nft_child_does_not_see_the_daemons_environment") {
        return;
    }
    let s = Setup::new("sdenv");
    let nft = system_nft();
    let real = s.tmp.join("real-nft");
    std::fs::copy(&nft, &real).unwrap();
    chmod(&real, 0o755);
    let env_log = s.tmp.join("nft-environ");
    let wrapper = s.tmp.join("nft-wrapper");
    // The shell's own /proc/<pid>/environ is exactly what it was given.
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ntr '\\0' '\\n' </proc/$$/environ >>'{}'\necho --- >>'{}'\nexec '{}' \"$@\"\n",
            env_log.display(),
            env_log.display(),
            real.display()
        ),
    )
    .unwrap();
    chmod(&wrapper, 0o755);

    let script = format!(
        "mount --bind '{}' '{}' && exec ip netns exec '{}' '{}' remove-tracking-table --config '{}'",
        wrapper.display(),
        nft.display(),
        s.ns.name(),
        flowlogd_bin().display(),
        s.config.display()
    );
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("FLOWLOGD_LOGSERVICE_ACCESS_KEY_SECRET", "secret-xyz")
        .env("LD_LIBRARY_PATH", "/nonexistent-but-inherited");
    let out = output_within(command, Duration::from_secs(20)).expect("remove-tracking-table ended");
    assert!(out.status.success(), "{}", text(&out));

    let seen = std::fs::read_to_string(&env_log).expect("the wrapper ran");
    let runs: Vec<Vec<&str>> = seen
        .split("---\n")
        .filter(|r| !r.is_empty())
        .map(|r| {
            let mut vars: Vec<&str> = r.lines().collect();
            vars.sort_unstable();
            vars
        })
        .collect();
    // `nft list table` (is the security groups' table inet flowlogd_sg
    // there? not here), then for inet flowlogd `nft list table` (is it
    // there?) and `nft -f -` (remove it).
    assert_eq!(runs.len(), 3, "{seen}");
    for vars in runs {
        assert_eq!(
            vars,
            ["LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "{seen}"
        );
    }
}
