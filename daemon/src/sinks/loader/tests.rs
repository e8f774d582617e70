//! The file checked is the file loaded: swapping the plugin's name for
//! another file after the check (renameat2 RENAME_EXCHANGE, as the attack
//! does) never gets the other file's constructor run. The racing version,
//! with the daemon binary, is in tests/tests/plugins.rs.

use std::path::PathBuf;

use flowlogd_tests::plugin_swap::{build_named_sink, exchange};

use super::PluginLibrary;
use crate::sinks::trusted_path::open_trusted;
use crate::sinks::trusted_path::tests::{set_mode, Scratch};

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
