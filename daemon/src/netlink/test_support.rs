//! Helpers for the privileged tests and the fixture-based parser tests.
//! Whether a privileged test may run at all is `flowlogd_tests::require_root`,
//! the one gate of every such test in the workspace.

use std::path::PathBuf;
use std::process::Command;

/// Run `f` on a fresh thread that has moved into a new, empty network
/// namespace (only `lo`, brought up). Sockets it opens, and processes it
/// spawns, live in that namespace; the namespace disappears with the last
/// of them, so nothing is left behind even if `f` panics.
pub fn in_new_netns<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespaces.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        run(&["ip", "link", "set", "lo", "up"]);
        f()
    });
    match thread.join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Run a command (in the calling thread's namespace) and return its stdout;
/// panics with its stderr when it fails.
#[track_caller]
pub fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// tests/fixtures/netlink/<name>
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/netlink")
        .join(name)
}

/// A fixture file of captured messages: one message per line,
/// `<label> <hex>`; `#` lines are comments.
pub fn load_fixture(name: &str) -> Vec<(String, Vec<u8>)> {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (label, hex) = l.split_once(' ').expect("`<label> <hex>` line");
            (label.to_string(), from_hex(hex.trim()))
        })
        .collect()
}

pub fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}
