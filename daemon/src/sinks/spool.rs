//! A sink's durable spool: records its memory queue could not hold, that
//! arrived while the sink failed, or that were still queued at shutdown,
//! kept on disk until the sink acknowledges them, also across a restart.
//!
//! Layout of `state_dir/spool/<sink>/`:
//! - `<id>.seg`: append-only segments, ids in hex, oldest first. A new
//!   spool starts at id 2^40 so that batches older than everything spooled
//!   (the memory queue at shutdown) can go into a segment *before* the
//!   first one, keeping delivery in order.
//! - `ack`: `<segment id> <offset>` while the oldest segment is partly
//!   acknowledged: the frames before `offset` were delivered. Absent when
//!   no segment is partly acknowledged. Written without fsync: losing it
//!   replays a few batches (delivery is at least once), never loses any.
//! - `lock`: held with `flock` while a daemon uses the spool, so two
//!   processes (a daemon and `flowlogd replay`, or two daemons sharing a
//!   state directory) never interleave.
//!
//! A frame is one batch: a 16-byte header (magic `FLS1`, payload length,
//! record count, CRC-32 of count and payload, little-endian) and the records
//! as JSON lines, the format sinks already write (plus the extras a record
//! carries: `format::write_json_full`), so a spool can be read with
//! `tail -c +17` in an emergency. Lines without extras (spools of older
//! versions) read with the extras unknown. A crash mid-write leaves a torn
//! frame at a segment's end: opening the spool checks every frame and cuts
//! the segment at the first that does not check out, so garbage is never
//! replayed.
//!
//! A segment is removed once every frame in it was acknowledged (the
//! segment first, then `ack`: a crash between the two leaves an `ack` that
//! names a missing segment, which is ignored).

use std::collections::VecDeque;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowlogd_plugin_api::record::RecordView;
use flowlogd_plugin_api::{format, EniIds, FlowRecord};

use crate::state_file::{self, Owner, Symlink};

const MAGIC: [u8; 4] = *b"FLS1";
const HEADER_LEN: u64 = 16;
/// A frame claiming more than this is corrupt: the host writes batches of
/// a few thousand records (a few MB).
const MAX_PAYLOAD: u64 = 256 << 20;
const FIRST_SEGMENT_ID: u64 = 1 << 40;
/// Segments are removed whole, so a spool being replayed gives space
/// back in steps of at most this.
const SEGMENT_MAX_BYTES: u64 = 64 << 20;
const ACK_FILE: &str = "ack";
const LOCK_FILE: &str = "lock";
const SEGMENT_SUFFIX: &str = ".seg";
/// Records per frame: a spool near its bound keeps all but the last few
/// hundred KB it could hold, and a frame is read back in one piece.
pub const FRAME_RECORDS: usize = 1024;

/// Why the spool could not be opened or written.
#[derive(Debug)]
pub enum SpoolError {
    /// An I/O error, with the path it concerns.
    Io { path: PathBuf, source: io::Error },
    /// Another process holds the spool's lock.
    Locked { path: PathBuf },
    /// The directory is not safe to keep records in.
    Unsafe { path: PathBuf, why: String },
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpoolError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            SpoolError::Locked { path } => write!(
                f,
                "{}: the spool is in use by another flowlogd process; daemons that run at the same time \
                 (one per network namespace, say) need a daemon.state_dir each",
                path.display()
            ),
            SpoolError::Unsafe { path, why } => write!(f, "{}: {why}", path.display()),
        }
    }
}

impl std::error::Error for SpoolError {}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Why batches were not put in the spool.
#[derive(Debug)]
pub enum AppendError {
    /// The spool is at `spool_max_bytes` (from `prepend`).
    Full { max_bytes: u64 },
    /// The write failed (a full disk, say); the segment was cut back.
    Io(SpoolError),
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::Full { max_bytes } => {
                write!(f, "the spool is full (spool_max_bytes = {max_bytes})")
            }
            AppendError::Io(e) => write!(f, "cannot write the spool: {e}"),
        }
    }
}

/// What opening found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Records waiting from an earlier run.
    pub records: u64,
    pub bytes: u64,
    /// Bytes cut from segments whose frames did not check out (a torn tail
    /// after a crash, or corruption).
    pub cut_bytes: u64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    len: u64,
    /// Records in frames not yet acknowledged.
    records: u64,
}

/// A batch read from the spool, to be acknowledged once delivered.
pub struct SpooledBatch {
    pub records: Vec<FlowRecord>,
    segment_id: u64,
    end_offset: u64,
    /// Records the frame's header counts (those that did not parse are
    /// counted as lost by the caller).
    pub header_records: u64,
}

/// One sink's spool. Not shared between threads by itself: the dispatcher
/// keeps it under its queue's lock.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_max: u64,
    segments: VecDeque<Segment>,
    /// Bytes of the oldest segment already acknowledged.
    acked_offset: u64,
    /// Append handle on the newest segment.
    writer: Option<File>,
    /// Segment files total, acknowledged prefix included (it is on disk).
    bytes: u64,
    /// Written since the last `sync`.
    dirty: bool,
    _lock: File,
}

/// A sink name as a directory name: bytes other than `[A-Za-z0-9_-]` are
/// written `%XX`, so any TOML key maps to one directory and none escapes
/// `spool/` (`..`, `/`).
pub fn dir_name(sink: &str) -> String {
    let mut out = String::with_capacity(sink.len());
    for b in sink.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Spool {
    /// Opens (creating it, mode 0700) the spool in `dir`, locks it, checks
    /// every frame, and cuts what does not check out.
    ///
    /// # Errors
    /// The directory cannot be made or read, breaks the rule of state
    /// directories ([`state_file::check_dir`]), or another process holds
    /// its lock.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Spool, OpenReport), SpoolError> {
        // 0700 from the start, the spool root (`state_dir/spool`) too.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        check_dir_is_private(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = open_private(&lock_path, false)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(SpoolError::Locked { path: lock_path });
            }
            return Err(io_err(&lock_path)(e));
        }
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            else {
                continue;
            };
            ids.push(id);
        }
        ids.sort_unstable();
        let ack = read_ack(&dir.join(ACK_FILE));
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_max: (max_bytes / 8).clamp(64 << 10, SEGMENT_MAX_BYTES),
            segments: VecDeque::new(),
            acked_offset: 0,
            writer: None,
            bytes: 0,
            dirty: false,
            _lock: lock,
        };
        let mut report = OpenReport::default();
        for id in ids {
            let path = spool.segment_path(id);
            let start = match ack {
                // Wholly acknowledged before a crash kept it from going.
                Some((ack_id, _)) if id < ack_id => {
                    std::fs::remove_file(&path).map_err(io_err(&path))?;
                    continue;
                }
                Some((ack_id, offset)) if id == ack_id => offset,
                _ => 0,
            };
            let scan = scan_segment(&path, start)?;
            if scan.valid_len < scan.file_len {
                let cut = scan.file_len - scan.valid_len;
                log::warn!(
                    "spool {}: cut {cut} bytes at offset {} that do not form whole, intact batches (a write \
                     torn by a crash, or corruption)",
                    path.display(),
                    scan.valid_len
                );
                report.cut_bytes += cut;
                let f = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.set_len(scan.valid_len).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
            }
            if scan.records == 0 {
                // Nothing left to deliver in it.
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            if spool.segments.is_empty() {
                spool.acked_offset = start;
            }
            spool.bytes += scan.valid_len;
            report.records += scan.records;
            spool.segments.push_back(Segment {
                id,
                len: scan.valid_len,
                records: scan.records,
            });
        }
        let front_is_acked = matches!(
            (spool.segments.front(), ack),
            (Some(front), Some((ack_id, _))) if front.id == ack_id
        );
        if !front_is_acked || spool.acked_offset == 0 {
            spool.acked_offset = 0;
            remove_if_present(&dir.join(ACK_FILE))?;
        }
        report.bytes = spool.bytes;
        Ok((spool, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// No record waits in the spool.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Records waiting (not yet acknowledged).
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}{SEGMENT_SUFFIX}"))
    }

    /// Appends `records` after everything spooled, in frames of at most
    /// [`FRAME_RECORDS`]. Returns how many were kept: fewer than all when
    /// the spool reached `spool_max_bytes` (the first that did not fit and
    /// everything after it are not kept).
    ///
    /// # Errors
    /// [`AppendError::Io`] when a write fails (the segment is cut back to
    /// its last whole frame, so nothing torn stays behind; the frames
    /// before it are kept).
    pub fn append(&mut self, records: &[FlowRecord]) -> Result<u64, AppendError> {
        let mut kept = 0u64;
        for chunk in records.chunks(FRAME_RECORDS) {
            let frame = encode_frame(chunk);
            if self.bytes + frame.len() as u64 > self.max_bytes {
                break;
            }
            self.append_frame(&frame, chunk.len() as u64)?;
            kept += chunk.len() as u64;
        }
        Ok(kept)
    }

    fn append_frame(&mut self, frame: &[u8], records: u64) -> Result<(), AppendError> {
        let needs_segment = match self.segments.back() {
            None => true,
            Some(back) => self.writer.is_none() || back.len + frame.len() as u64 > self.segment_max,
        };
        if needs_segment {
            let id = self.segments.back().map_or(FIRST_SEGMENT_ID, |s| s.id + 1);
            let path = self.segment_path(id);
            let file = open_private(&path, true).map_err(AppendError::Io)?;
            self.segments.push_back(Segment {
                id,
                len: 0,
                records: 0,
            });
            self.writer = Some(file);
        }
        let back = self
            .segments
            .back_mut()
            .expect("a segment was just ensured");
        let path = self.dir.join(format!("{:016x}{SEGMENT_SUFFIX}", back.id));
        let writer = self.writer.as_mut().expect("a writer was just ensured");
        if let Err(e) = writer.write_all(frame) {
            // Cut a partial frame off so that nothing torn stays behind
            // a frame written later.
            let _ = writer.set_len(back.len);
            let _ = writer.seek(SeekFrom::Start(back.len));
            return Err(AppendError::Io(io_err(&path)(e)));
        }
        back.len += frame.len() as u64;
        back.records += records;
        self.bytes += frame.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Puts `batches` before everything spooled: they are older (the memory
    /// queue at shutdown, or when its sink started failing). Written to a
    /// new segment before the oldest and made durable at once. Returns how
    /// many records (from the first) were kept: all of them, or with
    /// `partial`, as many frames as fit under `spool_max_bytes`.
    ///
    /// If the oldest segment is partly acknowledged (which the dispatcher's
    /// order rules out), they are appended instead, out of order but kept.
    ///
    /// # Errors
    /// [`AppendError::Full`] if not all fit and not `partial`;
    /// [`AppendError::Io`]. On error nothing of `batches` was kept.
    pub fn prepend(
        &mut self,
        batches: &[&[FlowRecord]],
        partial: bool,
    ) -> Result<u64, AppendError> {
        let mut frames = Vec::new();
        let mut total = 0u64;
        let mut kept_records = 0u64;
        'batches: for b in batches {
            for chunk in b.chunks(FRAME_RECORDS) {
                let frame = encode_frame(chunk);
                if self.bytes + total + frame.len() as u64 > self.max_bytes {
                    if partial {
                        break 'batches;
                    }
                    return Err(AppendError::Full {
                        max_bytes: self.max_bytes,
                    });
                }
                total += frame.len() as u64;
                kept_records += chunk.len() as u64;
                frames.push((frame, chunk.len() as u64));
            }
        }
        if frames.is_empty() {
            return Ok(0);
        }
        if self.acked_offset > 0 || self.segments.is_empty() {
            if self.acked_offset > 0 {
                log::warn!(
                    "spool {}: older batches appended behind newer ones (the oldest segment is partly delivered)",
                    self.dir.display()
                );
            }
            for (frame, records) in &frames {
                self.append_frame(frame, *records)?;
            }
            self.sync().map_err(AppendError::Io)?;
            return Ok(kept_records);
        }
        let id = self.segments.front().expect("not empty").id - 1;
        let path = self.segment_path(id);
        let write = || -> Result<(), SpoolError> {
            let mut f = open_private(&path, true)?;
            for (frame, _) in &frames {
                f.write_all(frame).map_err(io_err(&path))?;
            }
            f.sync_all().map_err(io_err(&path))?;
            sync_dir(&self.dir)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&path);
            return Err(AppendError::Io(e));
        }
        self.segments.push_front(Segment {
            id,
            len: total,
            records: kept_records,
        });
        self.bytes += total;
        Ok(kept_records)
    }

    /// Makes what was appended durable (at a window close, at shutdown).
    ///
    /// # Errors
    /// The fsync error, with the segment's path.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        if !self.dirty {
            return Ok(());
        }
        if let (Some(w), Some(back)) = (&self.writer, self.segments.back()) {
            let path = self.segment_path(back.id);
            w.sync_data().map_err(io_err(&path))?;
        }
        sync_dir(&self.dir)?;
        self.dirty = false;
        Ok(())
    }

    /// The oldest batch not yet acknowledged, if any. A frame that no
    /// longer checks out (the disk changed under us) is skipped with the
    /// rest of its segment and logged; `lost` counts its records.
    ///
    /// # Errors
    /// A read error, with the segment's path.
    pub fn oldest(&mut self, lost: &mut u64) -> Result<Option<SpooledBatch>, SpoolError> {
        loop {
            let Some(front) = self.segments.front() else {
                return Ok(None);
            };
            let (id, len) = (front.id, front.len);
            let path = self.segment_path(id);
            match read_frame(&path, self.acked_offset, len)? {
                Some(frame) => {
                    let records = decode_records(&frame.payload, &path);
                    return Ok(Some(SpooledBatch {
                        records,
                        segment_id: id,
                        end_offset: self.acked_offset + HEADER_LEN + frame.payload.len() as u64,
                        header_records: frame.records,
                    }));
                }
                None => {
                    let skipped = self.segments.front().map_or(0, |s| s.records);
                    log::error!(
                        "spool {}: the batch at offset {} does not check out any more; skipping the rest of the \
                         segment ({skipped} records)",
                        path.display(),
                        self.acked_offset
                    );
                    *lost += skipped;
                    self.remove_front()?;
                }
            }
        }
    }

    /// Marks `batch` delivered (or rejected): it is never handed out again.
    ///
    /// # Errors
    /// Removing a finished segment or writing `ack` failed.
    pub fn acknowledge(&mut self, batch: &SpooledBatch) -> Result<(), SpoolError> {
        let Some(front) = self.segments.front_mut() else {
            return Ok(());
        };
        if front.id != batch.segment_id || batch.end_offset <= self.acked_offset {
            return Ok(());
        }
        self.acked_offset = batch.end_offset;
        front.records = front.records.saturating_sub(batch.header_records);
        if self.acked_offset >= front.len {
            return self.remove_front();
        }
        let ack = self.dir.join(ACK_FILE);
        let tmp = self.dir.join(format!("{ACK_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = open_private(&tmp, true)?;
        writeln!(f, "{:016x} {}", front.id, self.acked_offset).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &ack).map_err(io_err(&ack))
    }

    fn remove_front(&mut self) -> Result<(), SpoolError> {
        let Some(front) = self.segments.pop_front() else {
            return Ok(());
        };
        if self.segments.is_empty() {
            self.writer = None;
        }
        self.bytes = self.bytes.saturating_sub(front.len);
        self.acked_offset = 0;
        let path = self.segment_path(front.id);
        remove_if_present(&path)?;
        remove_if_present(&self.dir.join(ACK_FILE))
    }
}

fn remove_if_present(path: &Path) -> Result<(), SpoolError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Records in a spool are the sinks' own business: a spool directory of
/// the daemon's own that group or others can read is made 0700 (it was
/// made before this rule, or with another umask); then the rule of every
/// state directory applies ([`state_file::check_dir`]), a symlink refused.
fn check_dir_is_private(dir: &Path) -> Result<(), SpoolError> {
    let meta = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
    if meta.is_dir() && meta.uid() == state_file::euid() && meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(dir))?;
    }
    state_file::check_dir(dir, Symlink::Refuse, Owner::DaemonOrRoot).map_err(|e| {
        SpoolError::Unsafe {
            path: e.path,
            why: e.why,
        }
    })
}

/// Opens a file in the spool without following symlinks, mode 0600;
/// `create_new` for segments and temp files.
fn open_private(path: &Path, create_new: bool) -> Result<File, SpoolError> {
    let mut o = OpenOptions::new();
    o.read(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if create_new {
        o.create_new(true);
    } else {
        o.create(true);
    }
    o.open(path).map_err(io_err(path))
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn read_ack(path: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    let id = u64::from_str_radix(parts.next()?, 16).ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some((id, offset))
}

fn frame_crc(records: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&records.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn encode_frame(records: &[FlowRecord]) -> Vec<u8> {
    let mut payload = String::with_capacity(records.len() * 320);
    for r in records {
        let ffi = r.to_ffi();
        // SAFETY: `ffi` borrows `r`'s strings, which are UTF-8 and outlive
        // this call.
        let view = unsafe { RecordView::new(&ffi) };
        // The full form, not a sink's field list: a record that waited
        // here reaches its sink with every field it was made with.
        format::write_json_full(&mut payload, &view);
        payload.push('\n');
    }
    let count = u32::try_from(records.len()).expect("a batch holds fewer than 2^32 records");
    let mut frame = Vec::with_capacity(HEADER_LEN as usize + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(
        &u32::try_from(payload.len())
            .expect("a batch is smaller than 4 GiB")
            .to_le_bytes(),
    );
    frame.extend_from_slice(&count.to_le_bytes());
    frame.extend_from_slice(&frame_crc(count, payload.as_bytes()).to_le_bytes());
    frame.extend_from_slice(payload.as_bytes());
    frame
}

struct Frame {
    records: u64,
    payload: Vec<u8>,
}

/// The frame at `offset` of a segment of `len` bytes, or `None` if it does
/// not check out (torn, corrupt, or not a frame).
fn read_frame(path: &Path, offset: u64, len: u64) -> Result<Option<Frame>, SpoolError> {
    if offset + HEADER_LEN > len {
        return Ok(None);
    }
    let mut f = File::open(path).map_err(io_err(path))?;
    f.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
    let mut header = [0u8; HEADER_LEN as usize];
    f.read_exact(&mut header).map_err(io_err(path))?;
    let Some((payload_len, records, crc)) = parse_header(&header) else {
        return Ok(None);
    };
    if offset + HEADER_LEN + payload_len > len {
        return Ok(None);
    }
    let mut payload = vec![0u8; payload_len as usize];
    f.read_exact(&mut payload).map_err(io_err(path))?;
    if frame_crc(records, &payload) != crc {
        return Ok(None);
    }
    Ok(Some(Frame {
        records: records.into(),
        payload,
    }))
}

fn parse_header(header: &[u8; HEADER_LEN as usize]) -> Option<(u64, u32, u32)> {
    if header[0..4] != MAGIC {
        return None;
    }
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let payload_len = u64::from(word(4));
    if payload_len > MAX_PAYLOAD {
        return None;
    }
    Some((payload_len, word(8), word(12)))
}

struct SegmentScan {
    file_len: u64,
    /// Up to the end of the last frame that checks out.
    valid_len: u64,
    /// Records in the checked frames from the start offset on.
    records: u64,
}

/// Checks every frame of a segment from `start` on (the acknowledged part
/// before it was checked when it was written and is never read again).
fn scan_segment(path: &Path, start: u64) -> Result<SegmentScan, SpoolError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let file_len = f.metadata().map_err(io_err(path))?.len();
    let mut reader = io::BufReader::with_capacity(1 << 20, &mut f);
    if start > file_len {
        return Ok(SegmentScan {
            file_len,
            valid_len: file_len,
            records: 0,
        });
    }
    reader.seek(SeekFrom::Start(start)).map_err(io_err(path))?;
    let mut offset = start;
    let mut records = 0u64;
    let mut payload = Vec::new();
    loop {
        if offset + HEADER_LEN > file_len {
            break;
        }
        let mut header = [0u8; HEADER_LEN as usize];
        reader.read_exact(&mut header).map_err(io_err(path))?;
        let Some((payload_len, count, crc)) = parse_header(&header) else {
            break;
        };
        if offset + HEADER_LEN + payload_len > file_len {
            break;
        }
        payload.resize(payload_len as usize, 0);
        reader.read_exact(&mut payload).map_err(io_err(path))?;
        if frame_crc(count, &payload) != crc {
            break;
        }
        offset += HEADER_LEN + payload_len;
        records += u64::from(count);
    }
    Ok(SegmentScan {
        file_len,
        valid_len: offset,
        records,
    })
}

/// The records of a frame's payload. A line that does not parse (which a
/// checked frame written by this daemon never has) is logged and left out.
fn decode_records(payload: &[u8], path: &Path) -> Vec<FlowRecord> {
    let text = String::from_utf8_lossy(payload);
    let mut out = Vec::new();
    let mut last_eni: Option<Arc<EniIds>> = None;
    for line in text.lines().filter(|l| !l.is_empty()) {
        match format::parse_json(line) {
            Ok(mut r) => {
                // Records of one ENI share their ids, as they did when
                // they were made.
                match &last_eni {
                    Some(e) if **e == *r.eni => r.eni = Arc::clone(e),
                    _ => last_eni = Some(Arc::clone(&r.eni)),
                }
                out.push(r);
            }
            Err(e) => log::error!("spool {}: a record does not parse: {e}", path.display()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use flowlogd_plugin_api::{Action, Direction, FlowFields, LogStatus};

    fn tmp(label: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("flowlogd-spool-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn records(first: u64, n: u64) -> Vec<FlowRecord> {
        let eni = Arc::new(EniIds {
            eni_id: "eni-1".into(),
            vswitch_id: "vsw-1".into(),
            vpc_id: "vpc-1".into(),
            vm_id: "i-1".into(),
            account_id: "1".into(),
        });
        (first..first + n)
            .map(|i| FlowRecord {
                eni: Arc::clone(&eni),
                flow: Some(FlowFields {
                    srcaddr: "10.0.0.1".parse().unwrap(),
                    srcport: 1000,
                    dstaddr: "10.0.0.2".parse().unwrap(),
                    dstport: 80,
                    protocol: 6,
                    direction: Direction::Out,
                    packets: i,
                    bytes: i * 100,
                    action: Action::Accept,
                    extras: Default::default(),
                }),
                start: 0,
                end: 600,
                log_status: LogStatus::Ok,
                rule: None,
            })
            .collect()
    }

    fn packets(rs: &[FlowRecord]) -> Vec<u64> {
        rs.iter().map(|r| r.flow.unwrap().packets).collect()
    }

    /// Reads and acknowledges everything, returning the packets fields.
    fn drain(spool: &mut Spool) -> Vec<u64> {
        let mut out = Vec::new();
        let mut lost = 0;
        for _ in 0..10_000 {
            let Some(b) = spool.oldest(&mut lost).unwrap() else {
                break;
            };
            out.extend(packets(&b.records));
            spool.acknowledge(&b).unwrap();
        }
        assert_eq!(lost, 0);
        out
    }

    fn seg_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn batches_come_back_in_order_and_leave_once_acknowledged() {
        let dir = tmp("order");
        let (mut s, report) = Spool::open(&dir, 1 << 30).unwrap();
        assert_eq!(report, OpenReport::default());
        s.append(&records(0, 3)).unwrap();
        s.append(&records(3, 2)).unwrap();
        assert_eq!(s.records(), 5);
        let mut lost = 0;
        let b = s.oldest(&mut lost).unwrap().unwrap();
        assert_eq!(packets(&b.records), vec![0, 1, 2]);
        // Not acknowledged: handed out again.
        let again = s.oldest(&mut lost).unwrap().unwrap();
        assert_eq!(packets(&again.records), vec![0, 1, 2]);
        s.acknowledge(&b).unwrap();
        assert_eq!(s.records(), 2);
        assert_eq!(drain(&mut s), vec![3, 4]);
        assert!(s.is_empty());
        assert!(seg_files(&dir).is_empty(), "a delivered segment is removed");
        assert!(!dir.join(ACK_FILE).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A record that waited in the spool comes back with the extras it was
    /// made with; a segment of an older version (no extras in its lines)
    /// still reads, with them unknown.
    #[test]
    fn records_keep_their_extras_across_the_spool() {
        let dir = tmp("extras");
        let mut rs = records(0, 3);
        rs[1].flow.as_mut().unwrap().extras = flowlogd_plugin_api::FlowExtras {
            pkt_srcaddr: Some("192.0.2.1".parse().unwrap()),
            pkt_dstaddr: Some("198.51.100.2".parse().unwrap()),
            flow_start: Some(17),
            flow_end: Some(42),
            tcp_flags: Some(19),
        };
        rs[2].flow.as_mut().unwrap().extras.flow_end = Some(599);
        {
            let (mut s, _) = Spool::open(&dir, 1 << 30).unwrap();
            s.append(&rs).unwrap();
            s.sync().unwrap();
        }
        let (mut s, report) = Spool::open(&dir, 1 << 30).unwrap();
        assert_eq!(report.records, 3);
        let mut lost = 0;
        let b = s.oldest(&mut lost).unwrap().unwrap();
        assert_eq!(b.records, rs);
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();

        // An older daemon's frame: the plain 18-field JSON lines.
        let old = "{\"version\":1,\"vswitch-id\":\"vsw-1\",\"vm-id\":\"i-1\",\"vpc-id\":\"vpc-1\",\
                   \"account-id\":\"1\",\"eni-id\":\"eni-1\",\"srcaddr\":\"10.0.0.1\",\"srcport\":1000,\
                   \"dstaddr\":\"10.0.0.2\",\"dstport\":80,\"protocol\":6,\"direction\":\"out\",\
                   \"packets\":0,\"bytes\":0,\"start\":0,\"end\":600,\"log-status\":\"OK\",\
                   \"action\":\"ACCEPT\"}\n";
        assert_eq!(decode_records(old.as_bytes(), &dir), records(0, 1));
    }

    #[test]
    fn a_restart_resumes_after_the_acknowledged_batches() {
        let dir = tmp("restart");
        {
            let (mut s, _) = Spool::open(&dir, 1 << 30).unwrap();
            for i in 0..4 {
                s.append(&records(i * 10, 10)).unwrap();
            }
            s.sync().unwrap();
            let mut lost = 0;
            let b = s.oldest(&mut lost).unwrap().unwrap();
            s.acknowledge(&b).unwrap();
        }
        let (mut s, report) = Spool::open(&dir, 1 << 30).unwrap();
        assert_eq!(report.records, 30);
        assert_eq!(report.cut_bytes, 0);
        assert_eq!(drain(&mut s), (10..40).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_and_never_replayed() {
        let dir = tmp("torn");
        let whole_len;
        {
            let (mut s, _) = Spool::open(&dir, 1 << 30).unwrap();
            s.append(&records(0, 5)).unwrap();
            s.sync().unwrap();
            whole_len = s.bytes();
        }
        let seg = seg_files(&dir).pop().unwrap();
        // A crash in the middle of the second batch's write.
        let second = encode_frame(&records(5, 5));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&second[..second.len() / 2]).unwrap();
        drop(f);
        let (mut s, report) = Spool::open(&dir, 1 << 30).unwrap();
        assert_eq!(report.records, 5);
        assert_eq!(report.cut_bytes, (second.len() / 2) as u64);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), whole_len);
        // Appending after the cut gives intact frames.
        s.append(&records(10, 1)).unwrap();
        assert_eq!(drain(&mut s), vec![0, 1, 2, 3, 4, 10]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let dir = tmp("flip");
        {
            let (mut s, _) = Spool::open(&dir, 1 << 30).unwrap();
            s.append(&records(0, 5)).unwrap();
            s.append(&records(5, 5)).unwrap();
        }
        let seg = seg_files(&dir).pop().unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        let last = bytes.len() - 10;
        bytes[last] ^= 0x20;
        std::fs::write(&seg, &bytes).unwrap();
        let (mut s, report) = Spool::open(&dir, 1 << 30).unwrap();
        assert_eq!(report.records, 5);
        assert!(report.cut_bytes > 0);
        assert_eq!(drain(&mut s), vec![0, 1, 2, 3, 4]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_spool_refuses_and_keeps_what_it_has() {
        let dir = tmp("full");
        // The largest of the frames below (more digits in its counters).
        let frame_len = encode_frame(&records(100, 10)).len() as u64;
        let (mut s, _) = Spool::open(&dir, frame_len * 2 + 1).unwrap();
        s.append(&records(0, 10)).unwrap();
        s.append(&records(0, 10)).unwrap();
        assert_eq!(s.append(&records(0, 10)).unwrap(), 0);
        assert_eq!(s.records(), 20);
        // Older batches at shutdown: as many as fit, oldest first.
        let (mut s, _) = {
            drop(s);
            std::fs::remove_dir_all(&dir).unwrap();
            Spool::open(&dir, frame_len * 2 + 1).unwrap()
        };
        s.append(&records(100, 10)).unwrap();
        let (a, b) = (records(0, 10), records(10, 10));
        assert!(matches!(
            s.prepend(&[&a, &b], false),
            Err(AppendError::Full { .. })
        ));
        assert_eq!(s.prepend(&[&a, &b], true).unwrap(), 10);
        assert_eq!(drain(&mut s), (0..10).chain(100..110).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn older_batches_go_before_the_spooled_ones() {
        let dir = tmp("prepend");
        {
            let (mut s, _) = Spool::open(&dir, 1 << 30).unwrap();
            s.append(&records(10, 2)).unwrap();
            let older_a = records(0, 3);
            let older_b = records(3, 2);
            assert_eq!(s.prepend(&[&older_a, &older_b], false).unwrap(), 5);
            s.sync().unwrap();
        }
        // Also after a restart.
        let (mut s, report) = Spool::open(&dir, 1 << 30).unwrap();
        assert_eq!(report.records, 7);
        assert_eq!(drain(&mut s), vec![0, 1, 2, 3, 4, 10, 11]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn segments_roll_and_are_removed_as_they_are_delivered() {
        let dir = tmp("roll");
        // 64 KiB segments (the smallest); each batch is about 25 KB.
        let (mut s, _) = Spool::open(&dir, 512 << 10).unwrap();
        for i in 0..12 {
            s.append(&records(i * 100, 100)).unwrap();
        }
        let segments = seg_files(&dir).len();
        assert!(segments >= 3, "{segments} segments");
        let mut lost = 0;
        for _ in 0..4 {
            let b = s.oldest(&mut lost).unwrap().unwrap();
            s.acknowledge(&b).unwrap();
        }
        assert!(seg_files(&dir).len() < segments, "delivered segments stay");
        assert_eq!(drain(&mut s), (400..1200).collect::<Vec<_>>());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_large_batch_is_kept_in_frames_as_far_as_it_fits() {
        let dir = tmp("frames");
        let frame_len = encode_frame(&records(0, FRAME_RECORDS as u64)).len() as u64;
        // Room for two whole frames and a bit.
        let (mut s, _) = Spool::open(&dir, frame_len * 2 + frame_len / 2).unwrap();
        let big = records(0, 3 * FRAME_RECORDS as u64);
        assert_eq!(s.append(&big).unwrap(), 2 * FRAME_RECORDS as u64);
        assert_eq!(
            drain(&mut s),
            (0..2 * FRAME_RECORDS as u64).collect::<Vec<_>>()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_process_cannot_use_a_spool_in_use() {
        let dir = tmp("lock");
        let (_held, _) = Spool::open(&dir, 1 << 30).unwrap();
        // flock locks belong to the open file description, so a second
        // open in this process conflicts as another process would.
        assert!(matches!(
            Spool::open(&dir, 1 << 30),
            Err(SpoolError::Locked { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sink_names_map_to_one_safe_directory_each() {
        assert_eq!(dir_name("sls-main_2"), "sls-main_2");
        assert_eq!(dir_name(".."), "%2E%2E");
        assert_eq!(dir_name("a/b"), "a%2Fb");
        assert_ne!(dir_name("a.b"), dir_name("a_b"));
    }
}
