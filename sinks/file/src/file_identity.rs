//! Whether the sink's path still names the file it has open.
//!
//! An open file stays writable after its path was removed (`rm`, `rm -rf` of
//! its directory) or moved away (logrotate without a `postrotate` signal):
//! writes succeed, and without a check the sink would go on reporting
//! records delivered into a file that nobody can read. The kernel names a
//! file by (device, inode); `stat(path)` against the numbers taken from the
//! open file at open tells whether the path still leads to it, and the open
//! file's link count tells whether it still exists anywhere.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// (device, inode) of a file: what stays the same across renames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub fn of(meta: &fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// What `path` leads to, compared with the open file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathState {
    /// The open file.
    Same,
    /// Nothing: the file (or a directory above it) was removed or moved.
    Missing,
    /// Another file (moved away and a new one created in its place).
    Other,
}

/// `stat(path)` compared with `open`: one system call.
///
/// # Errors
/// `stat` errors other than "not found" (a path component that became a
/// file, a permission change): the path cannot be written either.
pub fn path_state(path: &Path, open: FileId) -> io::Result<PathState> {
    match fs::metadata(path) {
        Ok(meta) if FileId::of(&meta) == open => Ok(PathState::Same),
        Ok(_) => Ok(PathState::Other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PathState::Missing),
        Err(e) => Err(e),
    }
}

/// Whether the open file has no name left anywhere: what is written to it
/// is lost when it is closed. (A file moved away keeps its link.)
///
/// # Errors
/// `fstat` errors.
pub fn is_deleted(file: &File) -> io::Result<bool> {
    Ok(file.metadata()?.nlink() == 0)
}
