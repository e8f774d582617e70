//! Opening a plugin file through a path only root and flowlogd's own user
//! can change, and checking the file that was opened, not its name.
//!
//! Checking a path's permissions and then loading it by name lets anyone who
//! can write a directory on that path swap the file in between (measured:
//! a renameat2(RENAME_EXCHANGE) loop in a 0777 plugin directory ran another
//! library's constructor as root in 75 of 200 runs). So, as OpenSSH's
//! `safe_path` does for authorized_keys, every component from `/` down must
//! be owned by root or the daemon's effective user and not writable by group
//! or others; the walk opens each component relative to the directory
//! descriptor already checked (`openat`, `O_NOFOLLOW`), so what is checked is
//! what is walked. The plugin itself is opened once and checked with `fstat`;
//! the loader then loads that descriptor through `/proc/self/fd/N`.
//!
//! Two decisions:
//! - A group- or world-writable directory WITH the sticky bit (`/tmp`) is
//!   accepted when its owner is trusted: in a sticky directory only an
//!   entry's owner, the directory's owner or root may rename or remove the
//!   entry, and the next component must itself be owned by root or the
//!   daemon's user, so nobody else can swap it. (OpenSSH refuses these too;
//!   we follow the kernel's own reasoning for `fs.protected_symlinks`.)
//! - Symbolic links are followed, not refused (packagers link plugin
//!   directories), but the link must be owned by root or the daemon's user
//!   (in a sticky directory anyone can make one) and its target's components
//!   are checked like any other, from `/` again for an absolute target.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use super::loader::LoadError;

/// As the kernel's limit on symbolic links followed in one lookup.
const MAX_SYMLINKS: u32 = 40;

/// Which kind of path component a check refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentKind {
    Directory,
    Symlink,
    File,
}

/// What is wrong with a refused path component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsafeReason {
    /// Writable by group and/or others (without the sticky bit, for a
    /// directory). `mode` is the permission bits.
    Writable { mode: u32 },
    /// Owned by neither root nor the daemon's effective user.
    Owner { uid: u32, euid: u32 },
    /// The plugin is not a regular file (a directory, FIFO, device...).
    NotRegularFile,
    /// More than [`MAX_SYMLINKS`] symbolic links on the way.
    TooManySymlinks,
}

/// The plugin file, open for reading, reached through trusted components.
#[derive(Debug)]
pub struct TrustedFile {
    pub file: File,
}

/// Opens `path` (made absolute against the working directory), checking
/// every directory and symbolic link on the way and then the open file.
///
/// # Errors
/// [`LoadError::Unsafe`] naming the component at fault and why;
/// [`LoadError::Open`] naming the component an I/O error happened at.
pub fn open_trusted(path: &Path) -> Result<TrustedFile, LoadError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let io_error = |at: &Path, e: io::Error| LoadError::Open {
        path: path.to_owned(),
        reason: if at == path {
            e.to_string()
        } else {
            format!("{}: {e}", at.display())
        },
    };
    let unsafe_at = |at: &Path, kind: ComponentKind, reason: UnsafeReason| LoadError::Unsafe {
        path: path.to_owned(),
        component: at.to_owned(),
        kind,
        reason,
    };
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map_err(|e| io_error(path, e))?
            .join(path)
    };
    let root_path = PathBuf::from("/");
    let root = open_at(None, OsStr::new("/"), libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| io_error(&root_path, e))?;
    let meta = root.metadata().map_err(|e| io_error(&root_path, e))?;
    check_directory(&meta, euid).map_err(|r| unsafe_at(&root_path, ComponentKind::Directory, r))?;

    let mut pending: VecDeque<OsString> = components(&absolute);
    // The checked directories from `/` down, for `..` and for `openat`.
    let mut dirs: Vec<(File, PathBuf)> = vec![(root, root_path)];
    let mut links_followed = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            if dirs.len() > 1 {
                dirs.pop();
            }
            continue;
        }
        let (dir, dir_path) = dirs.last().expect("the root is never popped");
        let here = dir_path.join(&name);
        let node = open_at(Some(dir), &name, libc::O_PATH | libc::O_NOFOLLOW)
            .map_err(|e| io_error(&here, e))?;
        let meta = node.metadata().map_err(|e| io_error(&here, e))?;
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            links_followed += 1;
            if links_followed > MAX_SYMLINKS {
                return Err(unsafe_at(
                    &here,
                    ComponentKind::Symlink,
                    UnsafeReason::TooManySymlinks,
                ));
            }
            check_owner(&meta, euid).map_err(|r| unsafe_at(&here, ComponentKind::Symlink, r))?;
            let target = read_link_at(dir, &name).map_err(|e| io_error(&here, e))?;
            if target.is_absolute() {
                dirs.truncate(1);
            }
            for c in components(&target).into_iter().rev() {
                pending.push_front(c);
            }
            continue;
        }
        if pending.is_empty() {
            // The plugin: open it for reading once and check what was
            // opened. O_NONBLOCK so that a FIFO put here cannot hang us
            // before fstat refuses it; it means nothing for a regular file.
            let file = open_at(
                Some(dir),
                &name,
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
            )
            .map_err(|e| io_error(&here, e))?;
            let meta = file.metadata().map_err(|e| io_error(&here, e))?;
            check_file(&meta, euid).map_err(|r| unsafe_at(&here, ComponentKind::File, r))?;
            return Ok(TrustedFile { file });
        }
        if !file_type.is_dir() {
            return Err(io_error(&here, io::Error::from_raw_os_error(libc::ENOTDIR)));
        }
        check_directory(&meta, euid).map_err(|r| unsafe_at(&here, ComponentKind::Directory, r))?;
        dirs.push((node, here));
    }
    // The path ended in a directory (`/`, `..`).
    let (_, last) = dirs.last().expect("the root is never popped");
    Err(unsafe_at(
        last,
        ComponentKind::File,
        UnsafeReason::NotRegularFile,
    ))
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn open_at(dir: Option<&File>, name: &OsStr, flags: libc::c_int) -> io::Result<File> {
    let name = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let dir_fd = dir.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir_fd` is a
    // descriptor we own (kept open by `dir`) or AT_FDCWD.
    let fd = unsafe { libc::openat(dir_fd, name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat just returned this descriptor; nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn read_link_at(dir: &File, name: &OsStr) -> io::Result<PathBuf> {
    let name = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `name` is NUL-terminated; `buf` is writable for its length;
    // the directory descriptor is kept open by `dir`.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(OsStr::from_bytes(&buf)))
}

fn check_owner(meta: &std::fs::Metadata, euid: u32) -> Result<(), UnsafeReason> {
    if meta.uid() == 0 || meta.uid() == euid {
        Ok(())
    } else {
        Err(UnsafeReason::Owner {
            uid: meta.uid(),
            euid,
        })
    }
}

fn check_directory(meta: &std::fs::Metadata, euid: u32) -> Result<(), UnsafeReason> {
    check_owner(meta, euid)?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 && mode & libc::S_ISVTX == 0 {
        return Err(UnsafeReason::Writable { mode });
    }
    Ok(())
}

fn check_file(meta: &std::fs::Metadata, euid: u32) -> Result<(), UnsafeReason> {
    let file_type = meta.file_type();
    if !file_type.is_file() || file_type.is_fifo() {
        return Err(UnsafeReason::NotRegularFile);
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(UnsafeReason::Writable { mode });
    }
    check_owner(meta, euid)
}

#[cfg(test)]
pub(crate) mod tests;
