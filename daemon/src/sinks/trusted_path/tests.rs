//! The path check: each way a component can let someone else swap the
//! plugin is refused, naming that component; safe layouts are accepted.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use flowlogd_tests::require_root;

use super::{open_trusted, ComponentKind, UnsafeReason};
use crate::sinks::loader::LoadError;

/// A root-owned (when run as root) 0755 scratch directory under the temp
/// directory, removed on drop.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new(label: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "flowlogd-unit-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).unwrap();
        set_mode(&path, 0o755);
        Scratch(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `dir/sub/plugin.so`, 0644, with `sub` of the given mode.
fn plugin_in(scratch: &Scratch, sub_mode: u32) -> (PathBuf, PathBuf) {
    let sub = scratch.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let so = sub.join("plugin.so");
    std::fs::write(&so, b"not really a library").unwrap();
    set_mode(&so, 0o644);
    set_mode(&sub, sub_mode);
    (sub, so)
}

fn refusal(path: &Path) -> (PathBuf, ComponentKind, UnsafeReason) {
    match open_trusted(path) {
        Err(LoadError::Unsafe {
            component,
            kind,
            reason,
            ..
        }) => (component, kind, reason),
        other => panic!("{}: expected a refusal, got {other:?}", path.display()),
    }
}

#[test]
fn a_plugin_in_a_safe_directory_is_opened() {
    let scratch = Scratch::new("safe");
    let (_, so) = plugin_in(&scratch, 0o755);
    open_trusted(&so).unwrap();
    // `..` and `.` are walked, not skipped past.
    open_trusted(&scratch.path().join("sub/../sub/./plugin.so")).unwrap();
}

#[test]
fn world_or_group_writable_directory_is_refused_naming_it() {
    for mode in [0o777, 0o775, 0o757] {
        let scratch = Scratch::new("writable-dir");
        let (sub, so) = plugin_in(&scratch, mode);
        assert_eq!(
            refusal(&so),
            (
                sub.clone(),
                ComponentKind::Directory,
                UnsafeReason::Writable { mode }
            )
        );
        let message = open_trusted(&so).unwrap_err().to_string();
        assert!(
            message.contains(&format!(
                "refused: directory {} is writable by",
                sub.display()
            )),
            "{message}"
        );
    }
}

#[test]
fn a_writable_directory_higher_up_is_refused() {
    let scratch = Scratch::new("writable-parent");
    let (_, so) = plugin_in(&scratch, 0o755);
    set_mode(scratch.path(), 0o777);
    assert_eq!(
        refusal(&so),
        (
            scratch.path().to_owned(),
            ComponentKind::Directory,
            UnsafeReason::Writable { mode: 0o777 }
        )
    );
}

#[test]
fn a_sticky_world_writable_directory_owned_by_root_or_us_is_accepted() {
    // Like /tmp: others can add entries but not rename or remove ours.
    let scratch = Scratch::new("sticky");
    let (_, so) = plugin_in(&scratch, 0o1777);
    open_trusted(&so).unwrap();
}

#[test]
fn a_symlink_into_a_world_writable_directory_is_refused_naming_the_target_directory() {
    let scratch = Scratch::new("symlink");
    let (sub, _) = plugin_in(&scratch, 0o777);
    let link = scratch.path().join("plugins");
    std::os::unix::fs::symlink(&sub, &link).unwrap();
    assert_eq!(
        refusal(&link.join("plugin.so")),
        (
            sub.clone(),
            ComponentKind::Directory,
            UnsafeReason::Writable { mode: 0o777 }
        )
    );
    // A relative link, and a link as the last component, too.
    let relative = scratch.path().join("relative");
    std::os::unix::fs::symlink("sub", &relative).unwrap();
    assert_eq!(refusal(&relative.join("plugin.so")).0, sub);
    let last = scratch.path().join("last.so");
    std::os::unix::fs::symlink("sub/plugin.so", &last).unwrap();
    assert_eq!(refusal(&last).0, sub);
    // Once the target directory is safe, the same links are followed.
    set_mode(&sub, 0o755);
    open_trusted(&link.join("plugin.so")).unwrap();
    open_trusted(&last).unwrap();
}

#[test]
fn a_symlink_loop_is_refused() {
    let scratch = Scratch::new("loop");
    let a = scratch.path().join("a.so");
    std::os::unix::fs::symlink("b.so", &a).unwrap();
    std::os::unix::fs::symlink("a.so", scratch.path().join("b.so")).unwrap();
    let (_, kind, reason) = refusal(&a);
    assert_eq!(
        (kind, reason),
        (ComponentKind::Symlink, UnsafeReason::TooManySymlinks)
    );
}

#[test]
fn a_directory_or_fifo_is_not_a_plugin() {
    let scratch = Scratch::new("not-file");
    let (sub, _) = plugin_in(&scratch, 0o755);
    assert_eq!(refusal(&sub).2, UnsafeReason::NotRegularFile);
    let fifo = scratch.path().join("fifo.so");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    assert_eq!(refusal(&fifo).2, UnsafeReason::NotRegularFile);
}

#[test]
fn components_owned_by_another_user_are_refused() {
    // Needs root to chown. It stays a unit test (the ownership rules it
    // checks are private to this module) behind the workspace's one gate.
    if !require_root("components_owned_by_another_user_are_refused") {
        return;
    }
    let scratch = Scratch::new("owner");
    let (sub, so) = plugin_in(&scratch, 0o755);
    std::os::unix::fs::chown(&sub, Some(65534), None).unwrap();
    assert_eq!(
        refusal(&so),
        (
            sub.clone(),
            ComponentKind::Directory,
            UnsafeReason::Owner {
                uid: 65534,
                euid: 0
            }
        )
    );
    std::os::unix::fs::chown(&sub, Some(0), None).unwrap();
    std::os::unix::fs::chown(&so, Some(65534), None).unwrap();
    assert_eq!(
        refusal(&so),
        (
            so.clone(),
            ComponentKind::File,
            UnsafeReason::Owner {
                uid: 65534,
                euid: 0
            }
        )
    );
    assert!(open_trusted(&so)
        .unwrap_err()
        .to_string()
        .contains("file is owned by uid 65534, not root, and flowlogd runs as root"));
    // A symlink anyone could have made in a sticky directory.
    std::os::unix::fs::chown(&so, Some(0), None).unwrap();
    let link = scratch.path().join("link.so");
    std::os::unix::fs::symlink(&so, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(65534), None).unwrap();
    assert_eq!(
        refusal(&link),
        (
            link.clone(),
            ComponentKind::Symlink,
            UnsafeReason::Owner {
                uid: 65534,
                euid: 0
            }
        )
    );
}
