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

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    /// next one: the next write tries again.
    out: Option<OpenFile>,
    failed: Option<FailedBatch>,
}

struct OpenFile {
    writer: BufWriter<File>,
    /// Bytes in the file plus bytes held by `writer`.
    size: u64,
}

/// A batch whose write failed, and how many of its bytes the file took.
struct FailedBatch {
    bytes: Vec<u8>,
    done: usize,
}

impl RotatingFile {
    /// Creates the parent directory if needed and opens `config.path` for
    /// appending; the size of an existing file counts toward rotation.
    ///
    /// # Errors
    /// I/O errors, with the path in the message.
    pub fn open(config: &FileConfig) -> io::Result<RotatingFile> {
        if let Some(dir) = config.path.parent() {
            if !dir.exists() {
                DirBuilder::new()
                    .recursive(true)
                    .mode(DIR_MODE)
                    .create(dir)
                    .map_err(context("cannot create directory", dir))?;
            }
        }
        Ok(RotatingFile {
            out: Some(open_file(&config.path, config.file_mode)?),
            path: config.path.clone(),
            rotate_bytes: config.rotate_bytes,
            rotate_keep: config.rotate_keep,
            file_mode: config.file_mode,
            failed: None,
        })
    }

    /// Appends `batch` (whole lines, each ending in `\n`), rotating between
    /// lines as needed, then flushes the buffer so that readers see the
    /// whole batch at once.
    ///
    /// # Errors
    /// The first I/O error; call again with the same batch to resume.
    pub fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        let mut start = 0;
        if let Some(failed) = self.failed.take() {
            if failed.bytes == batch {
                start = failed.done;
            } else if !at_line_start(&failed.bytes, failed.done) {
                let line_end = failed.done + line_len(&failed.bytes[failed.done..]);
                self.write_from(&failed.bytes[..line_end], failed.done)?;
            }
        }
        self.write_from(batch, start)
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
                self.out = Some(open_file(&self.path, self.file_mode)?);
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
        self.out = Some(open_file(&self.path, self.file_mode)?);
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
    /// I/O errors, with the path; the old file stays in use.
    pub fn reopen(&mut self) -> io::Result<()> {
        let mut next = open_file(&self.path, self.file_mode)?;
        if let Some(old) = self.out.take() {
            let mut old = old.writer;
            // What the old file refuses goes to the new one rather than
            // being lost.
            let _ = old.flush();
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
    let size = file.metadata().map_err(context("cannot stat", path))?.len();
    Ok(OpenFile {
        writer: BufWriter::with_capacity(BUFFER_BYTES, file),
        size,
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
            RotatingFile::open(&FileConfig {
                path: self.0.join("flow.log"),
                format: Format::Text,
                rotate_bytes: 0,
                rotate_keep: 1,
                file_mode: 0o640,
            })
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
    fn a_new_batch_after_a_dropped_one_first_finishes_its_line() {
        let scratch = Scratch::new("finish-line");
        let mut f = failed_mid_line(&scratch);
        f.write_batch(b"next batch\n").unwrap();
        assert_eq!(scratch.content(), "line one\nline two\nnext batch\n");
    }
}
