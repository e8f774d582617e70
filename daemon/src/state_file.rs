//! The daemon's state directory and the files it keeps there (the handoff,
//! the run marker, the sinks' spools).
//!
//! Everything in `state_dir` is written by the daemon (often as root) and
//! read back by the next run, so another user who can create files there
//! could make the daemon write through a planted symlink, or feed the next
//! run counters of their choosing. Hence one rule for every directory the
//! daemon keeps state in ([`check_dir`]): owned by the daemon's user or by
//! root, not writable by group or others (as sshd and sudo require of the
//! files they trust). Files are then created only fresh (`O_EXCL`), never
//! through a symlink (`O_NOFOLLOW`), and read back only if they are still
//! the daemon's own ([`check_own_file`]).

use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The bits that let group or others create, remove or rename entries.
const GROUP_OTHER_WRITE: u32 = 0o022;

/// The effective uid the daemon's files belong to.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// What to do when the directory itself is a symlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Symlink {
    /// Check its target: `state_dir` may be a link the operator made.
    Follow,
    /// Refuse: a directory the daemon created must not have become one.
    Refuse,
}

/// Whose directory is acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The daemon's effective user or root: what `run` requires.
    DaemonOrRoot,
    /// As `DaemonOrRoot`, or the uid the daemon becomes (`daemon.user`):
    /// before the drop, the directory is that user's.
    DaemonRootOr(u32),
    /// Anyone: for `check-config` run as root, which cannot know the user
    /// the daemon will run as (the unit's `User=`); it says whose it is.
    Anyone,
}

/// A directory the daemon will not keep state in, and why.
#[derive(Debug)]
pub struct UnsafeDir {
    pub path: PathBuf,
    pub why: String,
}

impl fmt::Display for UnsafeDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.why)
    }
}

impl std::error::Error for UnsafeDir {}

/// Applies the rule for a directory the daemon keeps state in: a
/// directory, owned by the daemon's effective user or root (as `owner`
/// says), not writable by group or others.
///
/// # Errors
/// [`UnsafeDir`] saying what is wrong and the command that fixes it; an
/// I/O error (a missing directory, say) is reported the same way.
pub fn check_dir(dir: &Path, symlink: Symlink, owner: Owner) -> Result<(), UnsafeDir> {
    let unsafe_dir = |why: String| UnsafeDir {
        path: dir.to_path_buf(),
        why,
    };
    let meta = match symlink {
        Symlink::Follow => std::fs::metadata(dir),
        Symlink::Refuse => std::fs::symlink_metadata(dir),
    }
    .map_err(|e| unsafe_dir(e.to_string()))?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir(
            "is a symlink (not followed here); remove it, the daemon makes the directory".into(),
        ));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("not a directory".into()));
    }
    let me = euid();
    let trusted = match owner {
        Owner::Anyone => true,
        Owner::DaemonOrRoot => meta.uid() == me || meta.uid() == 0,
        Owner::DaemonRootOr(user) => meta.uid() == me || meta.uid() == 0 || meta.uid() == user,
    };
    if !trusted {
        return Err(unsafe_dir(format!(
            "owned by uid {}, not by this daemon's user (uid {me}) or root: another user could plant the files \
             the daemon writes and reads there; run the daemon as that user, or chown {me} {}",
            meta.uid(),
            dir.display()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & GROUP_OTHER_WRITE != 0 {
        return Err(unsafe_dir(format!(
            "writable by group or others (mode {mode:04o}): another user could plant the files the daemon \
             writes and reads there; chmod go-w {} (the package makes /var/lib/flowlogd mode 0750, owned by \
             the flowlogd user)",
            dir.display()
        )));
    }
    Ok(())
}

/// Makes the state directory if it is missing (mode 0700, parents
/// included; owned by `user`'s uid and gid where the daemon becomes that
/// user) and applies [`check_dir`] to it.
///
/// # Errors
/// [`UnsafeDir`] when it cannot be made or breaks the rule.
pub fn prepare_dir(dir: &Path, user: Option<(u32, u32)>) -> Result<(), UnsafeDir> {
    let cannot = |e: io::Error| UnsafeDir {
        path: dir.to_path_buf(),
        why: format!("cannot create it: {e}"),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(cannot)?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(cannot)?;
        }
    }
    let owner = match user {
        Some((uid, _)) => Owner::DaemonRootOr(uid),
        None => Owner::DaemonOrRoot,
    };
    check_dir(dir, Symlink::Follow, owner)
}

/// Writes `dir/name` atomically with `bytes`: a fresh temporary file
/// `name.tmp` (`O_CREAT|O_EXCL|O_NOFOLLOW`, so neither a planted file nor a
/// symlink is ever written through) of `mode` (less the umask), synced,
/// renamed over `name` (rename replaces a symlink, it does not follow
/// it), and the directory synced so the rename survives a crash.
///
/// A temporary file left by a crash mid-write is removed first, but only
/// if it is a regular file of the daemon's own: anything else (a symlink,
/// another user's file) is left alone and the write fails, naming it.
///
/// # Errors
/// The I/O error, with the path.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    remove_stale_tmp(&tmp)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(with_path(&tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(with_path(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, &path).map_err(with_path(&path))?;
    sync_dir(dir).map_err(with_path(dir))
}

fn remove_stale_tmp(tmp: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(tmp) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(with_path(tmp)(e)),
    };
    if !meta.file_type().is_file() || meta.uid() != euid() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{}: in the way and not a file this daemon left ({}, owner uid {}); not removed, not written \
                 through: see who put it there, then remove it",
                tmp.display(),
                describe(&meta),
                meta.uid()
            ),
        ));
    }
    std::fs::remove_file(tmp).map_err(with_path(tmp))
}

fn describe(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Opens a state file for reading without following a symlink.
///
/// # Errors
/// The I/O error (`NotFound` kept as is, for "there is none").
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Whether an opened state file is still the daemon's own: a regular file
/// of its user, not writable by group or others. Anything else may have
/// been written by someone else and is not to be trusted.
///
/// # Errors
/// Why not, for the log.
pub fn check_own_file(file: &File) -> Result<(), String> {
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let me = euid();
    if meta.uid() != me {
        return Err(format!(
            "owned by uid {}, not by this daemon's user (uid {me})",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & GROUP_OTHER_WRITE != 0 {
        return Err(format!(
            "writable by group or others (mode {mode:04o}); the daemon writes it 0600"
        ));
    }
    Ok(())
}

/// Adds the path to an I/O error, for the operator.
pub fn with_path(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Syncs a directory, so that a rename or removal in it survives a crash.
///
/// # Errors
/// The I/O error.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "flowlogd-state-file-{label}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_directory_others_can_write_is_refused_with_the_fix() {
        let dir = tmp("modes");
        for mode in [0o777, 0o775, 0o757, 0o1777] {
            chmod(&dir, mode);
            let e = check_dir(&dir, Symlink::Follow, Owner::DaemonOrRoot)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&dir.display().to_string()) && e.contains("chmod go-w"),
                "{mode:o}: {e}"
            );
        }
        for mode in [0o700, 0o750, 0o755] {
            chmod(&dir, mode);
            check_dir(&dir, Symlink::Follow, Owner::DaemonOrRoot).unwrap();
        }
        // A symlink to a safe directory: followed for state_dir, refused
        // where the daemon made the directory itself.
        let link = dir.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        check_dir(&link, Symlink::Follow, Owner::DaemonOrRoot).unwrap();
        assert!(check_dir(&link, Symlink::Refuse, Owner::DaemonOrRoot).is_err());
        std::fs::remove_file(&link).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        if euid() != 0 {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let dir = tmp("owner");
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let e = check_dir(&dir, Symlink::Follow, Owner::DaemonOrRoot)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("owned by uid 65534") && e.contains("chown"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_planted_tmp_symlink_is_never_written_through() {
        let dir = tmp("symlink");
        let victim = dir.join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("state.tmp")).unwrap();
        let e = write_atomically(&dir, "state", b"new\n", 0o600).unwrap_err();
        assert!(e.to_string().contains("a symlink"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(!dir.join("state").exists());
        // The symlink was left for the operator to look at.
        assert!(std::fs::symlink_metadata(dir.join("state.tmp"))
            .unwrap()
            .file_type()
            .is_symlink());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_stale_tmp_of_ours_is_replaced_and_the_mode_kept() {
        let dir = tmp("stale");
        std::fs::write(dir.join("state.tmp"), "left by a crash").unwrap();
        write_atomically(&dir, "state", b"new\n", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("state")).unwrap(), "new\n");
        assert!(!dir.join("state.tmp").exists());
        let file = open_nofollow(&dir.join("state")).unwrap();
        assert_eq!(file.metadata().unwrap().mode() & 0o777, 0o600);
        check_own_file(&file).unwrap();
        chmod(&dir.join("state"), 0o666);
        let e = check_own_file(&open_nofollow(&dir.join("state")).unwrap()).unwrap_err();
        assert!(e.contains("mode 0666"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
