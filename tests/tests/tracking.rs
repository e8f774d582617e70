//! The tracking table and the conntrack sysctls against the live kernel,
//! each test in a network namespace of its own thread: `flowlogd`'s table
//! makes a namespace without rules track connections (with counters), a
//! second install renews it, removal leaves nothing behind, and the sysctls
//! are read and turned on in the namespace. (Their unit tests on files are
//! beside the code, in `daemon/src/tracking.rs`.)

use flowlogd::tracking::{
    ensure_sysctls, read_sysctls, remove_table, table_present, ConntrackSysctls, TrackingTable,
};
use flowlogd_tests::require_root;
use flowlogd_tests::thread_netns::{in_new_netns, run};

/// Entries `conntrack -L` lists in the calling thread's namespace.
fn conntrack_entries() -> Vec<String> {
    // conntrack -L prints the entries on stdout and a summary line on
    // stderr.
    run(&["conntrack", "-L"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The table is gone by nft's own word, not merely unlisted:
/// `table_present()` is false for any nft failure (not found, not
/// runnable, no permission), so a test that checks only that passes
/// when nft cannot answer at all. Here nft lists the namespace's
/// tables fine, none is ours, and asking for ours fails as "not found".
#[track_caller]
fn assert_table_absent() {
    let tables = run(&["nft", "list", "tables"]);
    assert!(
        !tables.lines().any(|l| l.trim() == "table inet flowlogd"),
        "still listed: {tables}"
    );
    let out = std::process::Command::new("nft")
        .args(["list", "table", "inet", "flowlogd"])
        .output()
        .expect("run nft list table");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("Error: No such file or directory"),
        "nft failed for another reason: {stderr}"
    );
    assert!(!table_present());
}

/// UDP to a closed port and a TCP connection, both over `lo`.
fn make_traffic(udp_port: u16) {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"flowlogd", ("127.0.0.1", udp_port)).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    drop(listener.accept().unwrap());
    drop(stream);
}

#[test]
fn tracking_table_turns_tracking_on_in_a_namespace() {
    if !require_root("tracking_table_turns_tracking_on_in_a_namespace") {
        return;
    }
    in_new_netns(|| {
        // A fresh namespace has no rules: nothing is tracked.
        make_traffic(40001);
        let before = conntrack_entries();
        assert!(before.is_empty(), "tracked without any rule: {before:?}");

        let table = TrackingTable::install().expect("install tracking table");
        assert!(!table.found_existing());
        assert!(table_present());
        let listed = run(&["nft", "list", "table", "inet", "flowlogd"]);
        assert!(listed.contains("ct state new counter"), "{listed}");

        make_traffic(40002);
        let after = conntrack_entries();
        assert!(
            after
                .iter()
                .any(|l| l.contains("udp") && l.contains("dport=40002")),
            "no UDP entry with the table: {after:?}"
        );
        assert!(
            after.iter().any(|l| l.starts_with("tcp")),
            "no TCP entry: {after:?}"
        );

        // The handle has no Drop: the table outlives the daemon
        // (tests/tests/restart.rs checks that across a real exit).

        // A second install (the next start) renews, not duplicates.
        let again = TrackingTable::install().expect("reinstall tracking table");
        assert!(again.found_existing());
        let listed = run(&["nft", "list", "table", "inet", "flowlogd"]);
        assert_eq!(
            listed.matches("ct state new counter").count(),
            2,
            "{listed}"
        );

        assert!(remove_table().expect("remove tracking table"));
        assert_table_absent();
        // Removing a table that is not there is not an error.
        assert!(!remove_table().expect("remove an already removed table"));
    });
}

#[test]
fn ensure_sysctls_in_a_namespace() {
    if !require_root("ensure_sysctls_in_a_namespace") {
        return;
    }
    in_new_netns(|| {
        // /proc/sys/net follows the namespace of the thread that opens
        // it; a new namespace starts with both off (module defaults).
        TrackingTable::install().expect("install tracking table");
        let before = read_sysctls();
        assert_eq!(
            before,
            ConntrackSysctls {
                acct: Some(false),
                timestamp: Some(false),
                events: Some(false),
            }
        );
        let err = ensure_sysctls(false).unwrap_err();
        assert!(err.to_string().contains("nf_conntrack_acct=1"), "{err}");
        let report = ensure_sysctls(true).unwrap();
        assert_eq!(
            report.enabled,
            vec![
                "nf_conntrack_acct",
                "nf_conntrack_timestamp",
                "nf_conntrack_events"
            ]
        );
        assert_eq!(
            read_sysctls(),
            ConntrackSysctls {
                acct: Some(true),
                timestamp: Some(true),
                events: Some(true),
            }
        );
        remove_table().unwrap();
    });
}
