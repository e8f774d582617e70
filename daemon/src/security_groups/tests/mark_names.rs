//! `MarkNames` across reloads and restarts, and its file's bounds.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::support::{group, policy};
use crate::security_groups::*;

/// A fresh directory, removed by the test that made it when it passes.
fn temp_dir(label: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("flowlogd-sg-marks-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ssh_policy(rule_id: &str) -> Policy {
    policy(&[group(
        "sg-web",
        "\"all\"",
        &[&format!("{rule_id} ingress accept 1 tcp 22/22 0.0.0.0/0")],
    )])
}

fn name(names: &MarkNames, rule: &str) -> Option<String> {
    names.name_of(mark_of(rule)).map(|n| n.to_string())
}

#[test]
fn reload_keeps_an_old_name() {
    let mut names = MarkNames::default();
    names.learn(&ssh_policy("old"));
    names.learn(&ssh_policy("new"));
    assert_eq!(name(&names, "sg-web:old").as_deref(), Some("sg-web:old"));
    assert_eq!(name(&names, "sg-web:new").as_deref(), Some("sg-web:new"));
    assert_eq!(names.len(), 2);
}

#[test]
fn restart_keeps_an_old_name() {
    let dir = temp_dir("restart");
    let mut first_run = MarkNames::default();
    first_run.learn(&ssh_policy("old"));
    first_run.save(&dir).unwrap();
    // The next run: the file, then its own config.
    let mut next_run = MarkNames::load(&dir).unwrap();
    next_run.learn(&ssh_policy("new"));
    assert_eq!(name(&next_run, "sg-web:old").as_deref(), Some("sg-web:old"));
    assert_eq!(name(&next_run, "sg-web:new").as_deref(), Some("sg-web:new"));
    next_run.save(&dir).unwrap();
    // Oldest first, the current config's last; written 0600, no temporary
    // file left.
    let text = std::fs::read_to_string(dir.join(MARK_NAMES_FILE)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "# flowlogd sg-marks 1: mark(hex) generation name",
            &format!("{:08x} 1 sg-web:old", mark_of("sg-web:old")),
            &format!("{:08x} 2 sg-web:new", mark_of("sg-web:new")),
        ]
    );
    let mode = std::fs::metadata(dir.join(MARK_NAMES_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!dir.join(format!("{MARK_NAMES_FILE}.tmp")).exists());
    // A third run still knows both.
    let third = MarkNames::load(&dir).unwrap();
    assert_eq!(name(&third, "sg-web:old").as_deref(), Some("sg-web:old"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_file_is_nothing_known() {
    let dir = temp_dir("none");
    let names = MarkNames::load(&dir).unwrap();
    assert_eq!(names.len(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn foreign_marks_and_defaults() {
    let mut names = MarkNames::default();
    names.learn(&ssh_policy("ssh"));
    // Without the flag a mark is another tool's, even with our bits.
    assert_eq!(names.name_of(mark_of("sg-web:ssh") & !MARK_FLAG), None);
    assert_eq!(names.name_of(0), None);
    assert_eq!(names.name_of(MARK_FLAG | 0x1234_5678), None);
    assert_eq!(
        names.name_of(DEFAULT_EGRESS_ACCEPT_MARK).as_deref(),
        Some("default")
    );
    assert_eq!(
        names.name_of(DEFAULT_INGRESS_DROP_MARK).as_deref(),
        Some("default")
    );
}

#[test]
fn the_current_config_wins_a_mark_an_old_name_had() {
    let dir = temp_dir("clash");
    let mark = mark_of("sg-web:now");
    let file =
        format!("# flowlogd sg-marks 1: mark(hex) generation name\n{mark:08x} 3 sg-gone:then\n");
    std::fs::write(dir.join(MARK_NAMES_FILE), file).unwrap();
    std::fs::set_permissions(
        dir.join(MARK_NAMES_FILE),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mut names = MarkNames::load(&dir).unwrap();
    assert_eq!(names.name_of(mark).as_deref(), Some("sg-gone:then"));
    names.learn(&ssh_policy("now"));
    assert_eq!(names.name_of(mark).as_deref(), Some("sg-web:now"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The file read holds at most MAX_REMEMBERED_NAMES; the oldest go.
#[test]
fn remembered_names_are_bounded_oldest_forgotten() {
    let dir = temp_dir("bound");
    let extra = 10;
    let mut file = String::from("# flowlogd sg-marks 1: mark(hex) generation name\n");
    for i in 0..MAX_REMEMBERED_NAMES + extra {
        let rule = format!("sg-x:r{i}");
        file.push_str(&format!("{:08x} {} {rule}\n", mark_of(&rule), i + 1));
    }
    std::fs::write(dir.join(MARK_NAMES_FILE), file).unwrap();
    std::fs::set_permissions(
        dir.join(MARK_NAMES_FILE),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mut names = MarkNames::load(&dir).unwrap();
    assert_eq!(names.len(), MAX_REMEMBERED_NAMES);
    assert_eq!(name(&names, "sg-x:r0"), None);
    assert_eq!(name(&names, &format!("sg-x:r{}", extra - 1)), None);
    assert!(name(&names, &format!("sg-x:r{extra}")).is_some());
    // The current config's rules come on top of the bound, and push out
    // the oldest of the rest only beyond it.
    names.learn(&ssh_policy("ssh"));
    assert_eq!(names.len(), MAX_REMEMBERED_NAMES + 1);
    names.learn(&ssh_policy("ssh2"));
    assert_eq!(names.len(), MAX_REMEMBERED_NAMES + 1);
    assert_eq!(name(&names, "sg-web:ssh2").as_deref(), Some("sg-web:ssh2"));
    assert_eq!(name(&names, "sg-web:ssh").as_deref(), Some("sg-web:ssh"));
    assert_eq!(name(&names, &format!("sg-x:r{extra}")), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_not_ours_or_malformed_is_refused() {
    let dir = temp_dir("refused");
    let path = dir.join(MARK_NAMES_FILE);
    let header = "# flowlogd sg-marks 1: mark(hex) generation name\n";
    let cases = [
        ("something else\n".to_owned(), "malformed at line 1"),
        (format!("{header}80000002 1\n"), "malformed at line 2"),
        (format!("{header}zz 1 sg-a:b\n"), "malformed at line 2"),
        // A name that could forge a text record's field.
        (
            format!("{header}80000002 1 sg-a:b c\n"),
            "malformed at line 2",
        ),
        // Not a mark of ours.
        (
            format!("{header}00000002 1 sg-a:b\n"),
            "malformed at line 2",
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&path, &text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = MarkNames::load(&dir).unwrap_err().to_string();
        assert_eq!(err, want, "{text}");
    }
    std::fs::write(&path, header).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = MarkNames::load(&dir).unwrap_err().to_string();
    assert!(err.contains("writable by group or others"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
