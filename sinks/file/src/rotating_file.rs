//! An append-only file of lines, rotated by size by renaming, the way log
//! collectors that follow renames (Logtail, Filebeat) expect: the file they
//! are reading is complete when it is renamed, is never truncated, and a
//! line never straddles two files.
//!
//! Retries without duplicates: a batch whose write fails is kept together
//! with how many of its bytes the file already took (bytes accepted by the
//! `BufWriter` count: it keeps what it could not write and writes it at the
//! next flush). When the host retries with the same batch, as it does after
//! `Retry`, writing resumes at that byte; a line is neither duplicated nor
//! lost. If the host sends a different batch instead (it gave up on the old
//! one), the old batch's half-written line, if any, is finished first so the
//! file holds only whole records.
//!
//! Following the path: before each batch, at each window end and after a
//! write error, `stat(path)` is compared with the open file (see
//! `file_identity`). A file moved away or replaced without a reopen is left
//! to whoever moved it and a new one is opened at `path`. A file deleted
//! while open (`rm`, `rm -rf` of its directory) is checked for after each
//! batch too (`fstat`): a batch that went into a deleted file is written
//! again to a new file, and only then reported written, so no record is
//! reported delivered into a deleted file. A missing directory is created
//! again as at start; if that fails the write fails (the host retries and
//! keeps the records).
//!
//! What is left: records of a batch that was confirmed written are the
//! operator's once the file is deleted later (as with any delivered file).
//! A batch racing a move lands in the moved file: not lost, only there. On NFS a removed open file is renamed (`.nfsXXXX`), not
//! unlinked, so it looks moved, not deleted: the one batch racing the
//! removal is lost there.
//!
//! Cost: one `stat` and one `fstat` per write call, about 0.3 and 0.15 µs
//! (ext4, release build); a write call of one record went from 0.4 to
//! 1.2 µs, one of 1024 records (the host's largest) takes 150 µs either
//! way. Cheap enough to check every batch rather than only at window end.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use flowlogd_plugin_api::HostLog;

use crate::file_identity::{self, FileId, PathState};
use crate::options::FileConfig;

/// Larger than any record line, so a line normally reaches the file in one
/// `write(2)` together with its neighbours.
const BUFFER_BYTES: usize = 64 * 1024;
/// A directory created for the log file: the daemon and the group that
/// reads its logs, nobody else.
const DIR_MODE: u32 = 0o750;

pub struct RotatingFile {
    path: PathBuf,
    rotate_bytes: u64,
    rotate_keep: u32,
    file_mode: u32,
    /// `None` after a rotation renamed the file but could not create the
    /// next one, or after the file was found deleted and no new one could
    /// be created: the next write tries again.
    out: Option<OpenFile>,
    failed: Option<FailedBatch>,
    /// The host's log, for what happened to the file behind our back.
    log: HostLog,
    /// Runs between the path check and the write: lets a test delete the
    /// file exactly in the window the check after the write is there for.
    #[cfg(test)]
    between_check_and_write: Option<Box<dyn FnOnce() + Send>>,
}

struct OpenFile {
    writer: BufWriter<File>,
    /// Bytes in the file plus bytes held by `writer`.
    size: u64,
    /// Which file this is, to tell whether `path` still leads to it.
    id: FileId,
}

/// A batch whose write failed, and how many of its bytes the file took.
struct FailedBatch {
    bytes: Vec<u8>,
    done: usize,
}

impl RotatingFile {
    /// Creates the parent directory if needed and opens `config.path` for
    /// appending; the size of an existing file counts toward rotation.
    /// What happens to the file later is logged through `log`.
    ///
    /// # Errors
    /// I/O errors, with the path in the message.
    pub fn open(config: &FileConfig, log: HostLog) -> io::Result<RotatingFile> {
        if let Some(dir) = config.path.parent() {
            if !dir.exists() {
                create_dir(dir)?;
            }
        }
        Ok(RotatingFile {
            out: Some(open_file(&config.path, config.file_mode)?),
            path: config.path.clone(),
            rotate_bytes: config.rotate_bytes,
            rotate_keep: config.rotate_keep,
            file_mode: config.file_mode,
            failed: None,
            log,
            #[cfg(test)]
            between_check_and_write: None,
        })
    }

    /// Appends `batch` (whole lines, each ending in `\n`), rotating between
    /// lines as needed, then flushes the buffer so that readers see the
    /// whole batch at once. Returns only once the batch is in a file that
    /// `path` or a name it was moved to still leads to.
    ///
    /// # Errors
    /// The first I/O error; call again with the same batch to resume.
    pub fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        match self.try_write_batch(batch) {
            Ok(()) => Ok(()),
            // The error may come from the file having gone away (found
            // deleted after the write, ESTALE on NFS): if so, the batch goes
            // to the new file now rather than at the host's retry.
            Err(e) => {
                if self.follow_path()? {
                    self.try_write_batch(batch)
                } else {
                    Err(e)
                }
            }
        }
    }

    fn try_write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        self.follow_path()?;
        #[cfg(test)]
        if let Some(race) = self.between_check_and_write.take() {
            race();
        }
        let mut start = 0;
        if let Some(failed) = self.failed.take() {
            if failed.bytes == batch {
                start = failed.done;
            } else if !at_line_start(&failed.bytes, failed.done) {
                let line_end = failed.done + line_len(&failed.bytes[failed.done..]);
                self.write_from(&failed.bytes[..line_end], failed.done)?;
            }
        }
        self.write_from(batch, start)?;
        // The path was checked before the write, but the file may have been
        // deleted since; then the batch is in no file anyone can read.
        if self.open_file_is_deleted()? {
            self.failed = Some(FailedBatch {
                bytes: batch.to_vec(),
                done: 0,
            });
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} was deleted while being written", self.path.display()),
            ));
        }
        Ok(())
    }

    /// Writes `batch[pos..]` and flushes; on failure remembers how far it got.
    fn write_from(&mut self, batch: &[u8], mut pos: usize) -> io::Result<()> {
        let result = self
            .write_lines(batch, &mut pos)
            .and_then(|()| self.flush());
        if result.is_err() {
            self.failed = Some(FailedBatch {
                bytes: batch.to_vec(),
                done: pos,
            });
        }
        result
    }

    fn write_lines(&mut self, batch: &[u8], pos: &mut usize) -> io::Result<()> {
        while *pos < batch.len() {
            let rest = &batch[*pos..];
            let line_len = line_len(rest);
            if self.out.is_none() {
                self.out = Some(self.open_path()?);
            }
            // Rotate only between lines: the rest of a half-written line
            // (after a failure) belongs in the file that has its start.
            if at_line_start(batch, *pos) && self.is_full(line_len as u64) {
                self.rotate()?;
            }
            let out = self.out.as_mut().expect("opened or rotated above");
            match out.writer.write(&rest[..line_len]) {
                Ok(0) => {
                    return Err(context("cannot write", &self.path)(
                        io::ErrorKind::WriteZero.into(),
                    ))
                }
                Ok(n) => {
                    *pos += n;
                    out.size += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(context("cannot write", &self.path)(e)),
            }
        }
        Ok(())
    }

    /// Whether a line of `len` bytes must go to a new file. A line longer
    /// than `rotate_bytes` still goes whole into an empty file.
    fn is_full(&self, len: u64) -> bool {
        let size = self.out.as_ref().map_or(0, |o| o.size);
        self.rotate_bytes != 0 && size > 0 && size + len > self.rotate_bytes
    }

    /// path.(k) -> path.(k+1) for k = keep-1 .. 1 (the rename over path.keep
    /// deletes the oldest), path -> path.1, then a new file at path.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some(out) = self.out.as_mut() {
            // A collector following the rename reads the old file to its end
            // and never looks at it again: all of it must be there first.
            out.writer
                .flush()
                .map_err(context("cannot write", &self.path))?;
            // The window-end fsync reaches only the current file, so make
            // the file durable now, while it is still ours.
            out.writer
                .get_ref()
                .sync_data()
                .map_err(context("cannot fsync", &self.path))?;
        }
        for k in (1..self.rotate_keep).rev() {
            rename_if_exists(&numbered(&self.path, k), &numbered(&self.path, k + 1))?;
        }
        // Not found: someone moved the file away without asking for a reopen;
        // what we wrote is in the moved file, so just start a new one.
        rename_if_exists(&self.path, &numbered(&self.path, 1))?;
        // The buffer is empty, so dropping the old writer writes nothing.
        self.out = None;
        // Best effort: files beyond rotate_keep left by an earlier, larger
        // setting. Failing here must not fail the batch.
        let mut k = self.rotate_keep + 1;
        while fs::remove_file(numbered(&self.path, k)).is_ok() {
            k += 1;
        }
        self.out = Some(self.open_path()?);
        Ok(())
    }

    /// Writes out buffered lines.
    ///
    /// # Errors
    /// I/O errors, with the path; the unwritten bytes stay buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(out) => out
                .writer
                .flush()
                .map_err(context("cannot write", &self.path)),
            None => Ok(()),
        }
    }

    /// Flushes, then `fdatasync`s the current file.
    ///
    /// # Errors
    /// I/O errors, with the path.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush()?;
        match self.out.as_ref() {
            Some(out) => out
                .writer
                .get_ref()
                .sync_data()
                .map_err(context("cannot fsync", &self.path)),
            None => Ok(()),
        }
    }

    /// Closes the file and opens `path` again: after logrotate moved the
    /// file away, new lines go to a new file at `path`.
    ///
    /// # Errors
    /// I/O errors, with the path; the old file stays in use unless it was
    /// deleted (then the next write tries `path` again).
    pub fn reopen(&mut self) -> io::Result<()> {
        // Asked for, so nothing to warn about unless the file was deleted
        // (a batch half written into it must start again in the new one).
        if self.open_file_is_deleted()? {
            self.drop_deleted_file();
        }
        let next = self.open_path()?;
        self.switch_to(next)
    }

    /// Checks that `path` still leads to the open file. If not, logs what
    /// happened and switches to a new file at `path`, creating its
    /// directory again if it was removed. Returns whether it switched.
    ///
    /// # Errors
    /// `stat` errors other than "not found", and what stops a new file from
    /// being created; the records are then not written (the host retries).
    pub fn follow_path(&mut self) -> io::Result<bool> {
        let Some(out) = self.out.as_ref() else {
            // Nothing open: the next write opens `path` anyway.
            return Ok(false);
        };
        let state = file_identity::path_state(&self.path, out.id)
            .map_err(context("cannot stat", &self.path))?;
        if state == PathState::Same {
            return Ok(false);
        }
        let path = self.path.display().to_string();
        if self.open_file_is_deleted()? {
            self.log.warn(&format!(
                "{path} was deleted while open (the file or its directory was removed); \
                 opening a new {path}, and the batch being written, if any, is written again there"
            ));
            self.drop_deleted_file();
            self.out = Some(self.open_path()?);
        } else {
            let what = match state {
                PathState::Missing => "was moved away",
                _ => "was replaced by another file",
            };
            self.log.warn(&format!(
                "{path} {what} without a reopen; what was written is in the moved \
                 file, new records go to {path}"
            ));
            let next = self.open_path()?;
            self.switch_to(next)?;
        }
        Ok(true)
    }

    fn open_file_is_deleted(&self) -> io::Result<bool> {
        match self.out.as_ref() {
            Some(out) => file_identity::is_deleted(out.writer.get_ref())
                .map_err(context("cannot stat the open file", &self.path)),
            None => Ok(false),
        }
    }

    /// Forgets a file nobody can read any more: what it holds of a failed
    /// batch counts as not written, and its unwritten buffer, which is part
    /// of that batch, is dropped rather than carried to the next file.
    fn drop_deleted_file(&mut self) {
        if let Some(failed) = self.failed.as_mut() {
            failed.done = 0;
        }
        if let Some(old) = self.out.take() {
            // into_parts: dropping the BufWriter itself would write the
            // buffer into the deleted file.
            drop(old.writer.into_parts());
        }
    }

    /// Makes `next` the open file; what the old file's buffer still holds
    /// goes to the new one rather than being lost.
    fn switch_to(&mut self, mut next: OpenFile) -> io::Result<()> {
        if let Some(old) = self.out.take() {
            let mut old = old.writer;
            let _ = old.flush();
            // The window-end fsync reaches only the current file, so the
            // old one, moved away with our records in it, gets it now.
            if let Err(e) = old.get_ref().sync_data() {
                self.log.warn(&format!(
                    "cannot fsync the file moved away from {}: {e}",
                    self.path.display()
                ));
            }
            let (_, unwritten) = old.into_parts();
            let unwritten = unwritten.unwrap_or_else(|panicked| panicked.into_inner());
            next.writer
                .write_all(&unwritten)
                .map_err(context("cannot write", &self.path))?;
            next.size += unwritten.len() as u64;
        }
        self.out = Some(next);
        Ok(())
    }

    /// Opens `path`, creating its directory again (and saying so) if it was
    /// removed since the start.
    fn open_path(&self) -> io::Result<OpenFile> {
        match open_file(&self.path, self.file_mode) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let Some(dir) = self.path.parent() else {
                    return Err(e);
                };
                create_dir(dir)?;
                self.log.warn(&format!(
                    "directory {} was removed; created it again with mode {DIR_MODE:04o} as at start",
                    dir.display()
                ));
                open_file(&self.path, self.file_mode)
            }
            result => result,
        }
    }
}

/// Creates `dir` and its missing parents with `DIR_MODE`.
fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(context("cannot create directory", dir))
}

/// Opens `path` for appending, creating it with `mode` if missing.
fn open_file(path: &Path, mode: u32) -> io::Result<OpenFile> {
    // O_APPEND: if something else truncates the file (logrotate's
    // copytruncate), we go on at its new end instead of leaving a hole.
    let created = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(mode)
        .open(path);
    let file = match created {
        Ok(file) => {
            // The umask may have cleared bits the operator asked for.
            file.set_permissions(Permissions::from_mode(mode))
                .map_err(context("cannot set the mode of", path))?;
            file
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(context("cannot open", path))?,
        Err(e) => return Err(context("cannot create", path)(e)),
    };
    let meta = file.metadata().map_err(context("cannot stat", path))?;
    Ok(OpenFile {
        writer: BufWriter::with_capacity(BUFFER_BYTES, file),
        size: meta.len(),
        id: FileId::of(&meta),
    })
}

/// The length of the first line of `bytes`, with its `\n`.
fn line_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |i| i + 1)
}

fn at_line_start(batch: &[u8], pos: usize) -> bool {
    pos == 0 || batch[pos - 1] == b'\n'
}

/// `path.k`
fn numbered(path: &Path, k: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{k}"));
    PathBuf::from(s)
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
            e.kind(),
            format!("cannot rename {} to {}: {e}", from.display(), to.display()),
        )),
        _ => Ok(()),
    }
}

/// Adds what was being done and the path to an I/O error, for the operator.
fn context<'a>(what: &'a str, path: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Format;

    /// A file in a fresh temp directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "flowlogd-sink-file-unit-{name}-{}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&dir);
            Scratch(dir)
        }
        fn open(&self) -> RotatingFile {
            RotatingFile::open(
                &FileConfig {
                    path: self.0.join("flow.log"),
                    format: Format::Text,
                    rotate_bytes: 0,
                    rotate_keep: 1,
                    file_mode: 0o640,
                    fields: Default::default(),
                },
                HostLog::stderr(),
            )
            .unwrap()
        }
        fn content(&self) -> String {
            fs::read_to_string(self.0.join("flow.log")).unwrap()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const OLD: &[u8] = b"line one\nline two\nline three\n";

    /// The state after a write of OLD failed 5 bytes into its second line.
    fn failed_mid_line(scratch: &Scratch) -> RotatingFile {
        let mut f = scratch.open();
        let done = "line one\nline ".len();
        f.write_batch(&OLD[..done]).unwrap();
        f.failed = Some(FailedBatch {
            bytes: OLD.to_vec(),
            done,
        });
        f
    }

    #[test]
    fn a_retried_batch_resumes_where_it_failed() {
        let scratch = Scratch::new("resume");
        let mut f = failed_mid_line(&scratch);
        f.write_batch(OLD).unwrap();
        assert_eq!(scratch.content().as_bytes(), OLD);
        assert!(f.failed.is_none());
    }

    #[test]
    fn a_batch_written_into_a_file_deleted_after_the_check_is_written_again() {
        let scratch = Scratch::new("race");
        let mut f = scratch.open();
        f.write_batch(b"before\n").unwrap();
        let dir = scratch.0.clone();
        // The directory goes after the check before the batch found the
        // file in place: the write itself succeeds, into a deleted file.
        f.between_check_and_write = Some(Box::new(move || fs::remove_dir_all(dir).unwrap()));
        f.write_batch(OLD).unwrap();
        assert!(f.between_check_and_write.is_none(), "the race did not run");
        assert_eq!(scratch.content().as_bytes(), OLD);
        assert!(f.failed.is_none());
        // And the next batch goes on in the new file.
        f.write_batch(b"after\n").unwrap();
        assert_eq!(
            scratch.content(),
            format!("{}after\n", String::from_utf8_lossy(OLD))
        );
    }

    #[test]
    fn a_new_batch_after_a_dropped_one_first_finishes_its_line() {
        let scratch = Scratch::new("finish-line");
        let mut f = failed_mid_line(&scratch);
        f.write_batch(b"next batch\n").unwrap();
        assert_eq!(scratch.content(), "line one\nline two\nnext batch\n");
    }
}
