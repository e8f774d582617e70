//! The parts of the plugin-swap attack (issue #13), for the tests that
//! show it fails: a stand-in library whose constructor leaves a marker, and
//! the atomic exchange of two files that swaps it in for a plugin. The
//! daemon's loader unit tests and tests/tests/plugins.rs both use them.

use std::path::Path;

use crate::{build_c_plugin, workspace_root};

/// Builds tests/fixtures/named_sink.c into `out` (mode 0644) as a plugin
/// named `name`; its constructor creates `marker`, if given, when the
/// library is loaded.
#[track_caller]
pub fn build_named_sink(out: &Path, name: &str, marker: Option<&Path>) {
    let mut flags = vec![format!("-DSINK_NAME=\"{name}\"")];
    if let Some(marker) = marker {
        flags.push(format!("-DMARKER_PATH=\"{}\"", marker.display()));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    build_c_plugin(
        &workspace_root().join("tests/fixtures/named_sink.c"),
        out,
        &flags,
    );
}

/// Exchanges the files at `a` and `b` in one step (renameat2
/// RENAME_EXCHANGE), as the attack does; whether the kernel did it.
pub fn exchange(a: &Path, b: &Path) -> bool {
    let a = std::ffi::CString::new(a.to_str().expect("a UTF-8 path")).expect("no NUL");
    let b = std::ffi::CString::new(b.to_str().expect("a UTF-8 path")).expect("no NUL");
    // SAFETY: two NUL-terminated paths that outlive the call; AT_FDCWD
    // resolves relative ones against the working directory.
    unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        ) == 0
    }
}
