//! Shared helpers for flowlogd's integration tests: where the built binary
//! and plugins are, scratch directories that clean up after themselves,
//! `require_root` (the one gate of every privileged test), and comparing
//! records. The modules:
//!
//! - `scenario`: a privileged test's preamble (namespaces, veth, config,
//!   daemon), built once;
//! - `daemon_config`: the daemon's config written table by table;
//! - `netns`: namespaces, veth pairs and the processes run in them;
//! - `thread_netns`: a new namespace for the test's own thread;
//! - `raw_netlink`: netlink spoken by hand, as another process would;
//! - `plugin_swap`: the parts of the plugin-swap attack.
//!
//! The tests run the real `flowlogd` binary and load the real plugins, so
//! the workspace must be built first (`cargo build --workspace`); the
//! README's test command does that.

pub mod daemon_config;
pub mod netns;
pub mod plugin_swap;
pub mod raw_netlink;
pub mod scenario;
pub mod thread_netns;

pub use daemon_config::{DaemonConfig, FlowLog};
pub use scenario::Scenario;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// Where cargo put the build (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    // Tests are built in the same profile as the binaries they run.
    base.join(if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    })
}

#[track_caller]
fn built(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        p.display()
    );
    p
}

/// The `flowlogd` binary.
pub fn flowlogd_bin() -> PathBuf {
    built("flowlogd")
}

/// A cdylib built by the workspace, by crate name (`flowlogd_sink_file`).
pub fn cdylib(crate_name: &str) -> PathBuf {
    built(&format!("lib{crate_name}.so"))
}

/// Whether we run as root (needed for network namespaces).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a privileged test may run: the one gate of every test that
/// needs root (network namespaces, netlink sockets, nftables, chown): those
/// in tests/tests/ and the daemon's one privileged unit test (of its plugin
/// path check). Without root it skips with a
/// message, except under CI=true, where it fails: CI runs as root, so a
/// missing privilege there is a broken setup, never a reason to pass.
#[track_caller]
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs root, and CI=true: refusing to skip");
    }
    // Straight to stderr, past libtest's capture, so the skip shows.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs root (network namespaces, netlink); run the tests as root"
    );
    false
}

/// A scratch directory, removed on drop (also when the test panics).
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "flowlogd-test-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A plugin directory holding copies of the workspace's plugins, named as
/// installed (`file.so`, `testsink.so`, `window-stats.so`, `ipfix.so`, ...), mode 0644.
pub fn plugin_dir(tmp: &TempDir) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    for (krate, name) in [
        ("flowlogd_sink_file", "file"),
        ("flowlogd_sink_syslog", "syslog"),
        ("flowlogd_testsink", "testsink"),
        ("flowlogd_sink_window_stats", "window-stats"),
        ("flowlogd_sink_logservice", "logservice"),
        ("flowlogd_sink_ipfix", "ipfix"),
    ] {
        let dst = dir.join(format!("{name}.so"));
        std::fs::copy(cdylib(krate), &dst).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    dir
}

/// Compiles a C plugin against the project's header.
#[track_caller]
pub fn build_c_plugin(source: &Path, out: &Path, extra_flags: &[&str]) {
    build_c_plugin_against(
        &workspace_root().join("plugin-api/include"),
        source,
        out,
        extra_flags,
    );
}

/// The directory holding the ABI 1.0 header (`flowlogd_sink.h` as it was
/// before minor 1): plugins built against it stand for those already out
/// there.
pub fn abi_1_0_include() -> PathBuf {
    workspace_root().join("tests/fixtures/abi-1.0")
}

/// Compiles a C plugin against the `flowlogd_sink.h` in `include`.
#[track_caller]
pub fn build_c_plugin_against(include: &Path, source: &Path, out: &Path, extra_flags: &[&str]) {
    let status = Command::new("cc")
        .args([
            "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
        ])
        .arg("-I")
        .arg(include)
        .args(extra_flags)
        .arg("-o")
        .arg(out)
        .arg(source)
        .status()
        .expect("run cc (install gcc)");
    assert!(status.success(), "cc failed for {}", source.display());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Runs `flowlogd <args>` to completion.
pub fn flowlogd(args: &[&str]) -> Output {
    Command::new(flowlogd_bin())
        .args(args)
        .output()
        .expect("run flowlogd")
}

/// The number (from 1) of the first line of the file at `path` that starts
/// with `prefix`: where an error about that key must point.
#[track_caller]
pub fn line_starting_with(path: &Path, prefix: &str) -> usize {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line of {} starts with {prefix:?}", path.display()))
        + 1
}

/// Stdout and stderr of an output, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The minimal config around ENIs, flow logs and sinks given as TOML.
/// `state_dir` is `state/` beside the plugin directory, so that daemons of
/// tests running in parallel never share a restart handoff.
pub fn config_with(plugin_dir: &Path, rest: &str) -> String {
    DaemonConfig::new(plugin_dir).toml(rest).text()
}

/// One `[[eni]]` table.
pub fn eni_toml(id: &str, interface: &str, vpc: &str) -> String {
    format!(
        "[[eni]]\nid = \"{id}\"\ninterface = \"{interface}\"\nvswitch_id = \"vsw-test\"\nvpc_id = \"{vpc}\"\n\
         vm_id = \"i-test\"\naccount_id = \"1234567890\"\n\n"
    )
}

/// Reads JSON-lines records from a file (empty if the file is missing).
pub fn read_json_records(path: &Path) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Asserts that `records` hold exactly the `expected` records (as JSON
/// values), in any order, each exactly once.
#[track_caller]
pub fn expect_records(records: &[serde_json::Value], expected: &[serde_json::Value]) {
    let mut remaining: Vec<&serde_json::Value> = records.iter().collect();
    for e in expected {
        match remaining.iter().position(|r| *r == e) {
            Some(i) => {
                remaining.remove(i);
            }
            None => panic!(
                "expected record not found:\n{e}\namong:\n{}",
                records
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    }
    assert!(
        remaining.is_empty(),
        "unexpected records:\n{}",
        remaining
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `n` distinct OK ACCEPT records of ENI `eni` as JSON lines.
pub fn sample_records(eni: &str, vpc: &str, n: usize) -> Vec<serde_json::Value> {
    (0..n)
        .map(|i| {
            serde_json::json!({
                "version": 1, "vswitch-id": "vsw-test", "vm-id": "i-test", "vpc-id": vpc,
                "account-id": "1234567890", "eni-id": eni,
                "srcaddr": "10.0.0.1", "srcport": 10000 + (i % 50000) as u64,
                "dstaddr": "10.0.0.2", "dstport": 443, "protocol": 6, "direction": "out",
                "packets": 1 + i as u64, "bytes": 60 * (1 + i as u64),
                "start": 1_700_000_400, "end": 1_700_001_000,
                "log-status": "OK", "action": "ACCEPT"
            })
        })
        .collect()
}

/// Writes records as a JSON-lines file.
pub fn write_json_lines(path: &Path, records: &[serde_json::Value]) {
    let mut s = String::new();
    for r in records {
        s.push_str(&r.to_string());
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}
