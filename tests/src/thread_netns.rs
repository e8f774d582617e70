//! A network namespace of the test's own thread: for tests that open
//! sockets and run tools themselves (tests/tests/netlink_*.rs of the
//! daemon's netlink sockets, tests/tests/tracking.rs of its tracking
//! table), where
//! [`crate::netns::Netns`] is for tests that run the daemon in namespaces
//! they join together.

use std::process::Command;

/// Runs `f` on a fresh thread that has moved into a new, empty network
/// namespace (only `lo`, brought up). Sockets it opens, and processes it
/// spawns, live in that namespace; the namespace disappears with the last
/// of them, so nothing is left behind even if `f` panics.
///
/// # Panics
/// If the thread cannot unshare its network namespace (not root), or with
/// `f`'s panic.
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

/// Runs a command (in the calling thread's namespace) and returns its
/// stdout.
///
/// # Panics
/// With its stderr, when it cannot run or fails.
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
