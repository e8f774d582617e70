//! The file checked is the file loaded: swapping the plugin's name for
//! another file after the check (renameat2 RENAME_EXCHANGE, as the attack
//! does) never gets the other file's constructor run. The racing version,
//! with the daemon binary, is in tests/tests/plugins.rs.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::PluginLibrary;
use crate::sinks::trusted_path::open_trusted;
use crate::sinks::trusted_path::tests::{set_mode, Scratch};

/// Builds tests/fixtures/named_sink.c as a plugin named `name`, whose
/// constructor creates `marker` if given.
fn build_named_sink(out: &Path, name: &str, marker: Option<&Path>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cc = Command::new("cc");
    cc.args([
        "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
    ])
    .arg("-I")
    .arg(root.join("plugin-api/include"))
    .arg(format!("-DSINK_NAME=\"{name}\""));
    if let Some(marker) = marker {
        cc.arg(format!("-DMARKER_PATH=\"{}\"", marker.display()));
    }
    let status = cc
        .arg("-o")
        .arg(out)
        .arg(root.join("tests/fixtures/named_sink.c"))
        .status()
        .expect("run cc (install gcc)");
    assert!(status.success(), "cc failed for {}", out.display());
    set_mode(out, 0o644);
}

fn exchange(a: &Path, b: &Path) -> bool {
    let a = std::ffi::CString::new(a.to_str().unwrap()).unwrap();
    let b = std::ffi::CString::new(b.to_str().unwrap()).unwrap();
    // SAFETY: two NUL-terminated paths; AT_FDCWD for relative resolution.
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

/// `good.so` (0644, named "good") and `evil.so` (named "evil", writable by
/// others so the check refuses it, its constructor writes `marker`).
fn good_and_evil(scratch: &Scratch) -> (PathBuf, PathBuf, PathBuf) {
    let good = scratch.path().join("good.so");
    let evil = scratch.path().join("evil.so");
    let marker = scratch.path().join("evil-constructor-ran");
    build_named_sink(&good, "good", None);
    build_named_sink(&evil, "evil", Some(&marker));
    set_mode(&evil, 0o646);
    (good, evil, marker)
}

#[test]
fn a_swap_after_the_check_loads_the_checked_file() {
    let scratch = Scratch::new("swap-once");
    let (good, evil, marker) = good_and_evil(&scratch);
    let trusted = open_trusted(&good).unwrap();
    assert!(exchange(&good, &evil));
    // The name now points at the evil file; the descriptor does not.
    let lib = PluginLibrary::load_opened(&good, trusted).unwrap();
    assert_eq!(lib.name, "good");
    assert!(!marker.exists(), "the evil constructor ran");
    // And loading the name afresh checks (and refuses) what it now is.
    let err = PluginLibrary::load(&good).err().expect("evil.so refused");
    assert!(
        err.to_string()
            .contains("file is writable by others (mode 0646)"),
        "{err}"
    );
    assert!(!marker.exists(), "the evil constructor ran");
}

#[test]
fn plugins_opened_as_the_same_descriptor_number_stay_distinct() {
    // glibc's dlopen returns a loaded library of the same name unopened;
    // two plugins loaded one after the other get the same fd number.
    let scratch = Scratch::new("same-fd");
    let one = scratch.path().join("one.so");
    let two = scratch.path().join("two.so");
    build_named_sink(&one, "one", None);
    build_named_sink(&two, "two", None);
    let first = PluginLibrary::load(&one).unwrap();
    let second = PluginLibrary::load(&two).unwrap();
    assert_eq!((first.name.as_str(), second.name.as_str()), ("one", "two"));
}
