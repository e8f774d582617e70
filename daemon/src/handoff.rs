//! Carrying attributed counters across a restart.
//!
//! Conntrack counters are cumulative and are never reset by us, so a
//! stopping daemon writes, per live connection, what it had attributed; the
//! next run baselines the table and then resumes those connections from the
//! handed-off counters. Bytes that flowed while no daemon ran are counted
//! in the new run's first window instead of being lost, and nothing is
//! counted twice. The file is consumed (deleted) at start.
//!
//! The file names the network namespace it was written in (the inode of
//! /proc/self/ns/net): conntrack ids are per namespace, so a handoff from
//! another namespace sharing the state directory is ignored.
//!
//! The file also says until when the previous run counted (the end of its
//! last window): a live connection created after that and not handed off
//! was created while no daemon ran, and the next run counts it in full
//! instead of baselining it.
//!
//! Format: a header line `flowlogd-handoff 2 <written-at> <netns>
//! <counted-until>` (files without the last field are read, and nothing is
//! counted in full), then one line per connection:
//! `<flow key> <orig packets> <orig bytes> <reply packets> <reply bytes>`.
//! Version 1 files (with a fingerprint column) are refused as malformed.
//!
//! Whoever writes the handoff decides what the next run counts, so it is
//! written only through [`state_file::write_atomically`] (never through a
//! symlink, mode 0600) and read only if it is still the daemon's own file
//! and not dated in the future.

use std::fmt::Write as _;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::flows::HandoffEntry;
use crate::state_file;

const FILE_NAME: &str = "conntrack-handoff";
const HEADER: &str = "flowlogd-handoff 2";
/// A handoff older than this is ignored: counting hours of traffic into
/// one window would mislead more than leaving it out.
pub const MAX_AGE_SECS: i64 = 3600;
/// A handoff dated more than this after now was not written by a previous
/// run of this host's clock: refused. Leaves room for a clock stepped back
/// a little by NTP between a stop and a start.
pub const MAX_FUTURE_SECS: i64 = 60;
/// Only the daemon reads it.
const FILE_MODE: u32 = 0o600;

/// The current network namespace, as `net:[<inode>]`.
fn netns_id() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// What a previous run handed off.
#[derive(Debug, PartialEq, Eq)]
pub struct Handoff {
    pub entries: Vec<HandoffEntry>,
    /// Unix seconds: the end of the previous run's last window.
    pub counted_until: Option<i64>,
}

/// Writes the handoff atomically (see [`state_file::write_atomically`]).
///
/// # Errors
/// The I/O error, with the path.
pub fn write(
    state_dir: &Path,
    written_at: i64,
    counted_until: i64,
    entries: &[HandoffEntry],
) -> io::Result<()> {
    let mut text = format!("{HEADER} {written_at} {} {counted_until}\n", netns_id());
    for e in entries {
        let [op, ob, rp, rb] = e.attributed;
        // Writing to a String cannot fail.
        let _ = writeln!(text, "{} {op} {ob} {rp} {rb}", e.key);
    }
    state_file::write_atomically(state_dir, FILE_NAME, text.as_bytes(), FILE_MODE)
}

/// Why a handoff file was not used.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    Malformed {
        line: usize,
    },
    TooOld {
        age_secs: i64,
    },
    OtherNamespace {
        written_in: String,
    },
    /// Not the daemon's own file any more (see [`state_file::check_own_file`]).
    NotOurs(String),
    InTheFuture {
        ahead_secs: i64,
    },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Malformed { line } => write!(f, "malformed at line {line}"),
            ReadError::TooOld { age_secs } => {
                write!(f, "written {age_secs} s ago, older than {MAX_AGE_SECS} s")
            }
            ReadError::NotOurs(why) => write!(f, "{why}: not trusted"),
            ReadError::InTheFuture { ahead_secs } => write!(
                f,
                "dated {ahead_secs} s in the future (more than {MAX_FUTURE_SECS} s): not written by a previous run \
                 of this host"
            ),
            ReadError::OtherNamespace { written_in } => {
                write!(
                    f,
                    "written in network namespace {written_in}, this is {}",
                    netns_id()
                )
            }
        }
    }
}

/// Reads and deletes the handoff; `Ok(None)` if there is none.
///
/// # Errors
/// Why it could not be used (it is deleted all the same).
pub fn take(state_dir: &Path, now: i64) -> Result<Option<Handoff>, ReadError> {
    let path = path_in(state_dir);
    let mut file = match state_file::open_nofollow(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            // A symlink (ELOOP) is removed too: unlink does not follow it.
            let _ = std::fs::remove_file(&path);
            return Err(ReadError::Io(e));
        }
    };
    let _ = std::fs::remove_file(&path);
    state_file::check_own_file(&file).map_err(ReadError::NotOurs)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(ReadError::Io)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix(HEADER))
        .map(|rest| rest.split_whitespace().collect())
        .unwrap_or_default();
    let written_at: i64 = header
        .first()
        .and_then(|t| t.parse().ok())
        .ok_or(ReadError::Malformed { line: 1 })?;
    let written_in = header.get(1).copied().unwrap_or("unknown");
    let counted_until = match header.get(2) {
        None => None,
        Some(t) => Some(t.parse().map_err(|_| ReadError::Malformed { line: 1 })?),
    };
    if written_in != netns_id() {
        return Err(ReadError::OtherNamespace {
            written_in: written_in.to_owned(),
        });
    }
    if written_at - now > MAX_FUTURE_SECS {
        return Err(ReadError::InTheFuture {
            ahead_secs: written_at - now,
        });
    }
    if now - written_at > MAX_AGE_SECS {
        return Err(ReadError::TooOld {
            age_secs: now - written_at,
        });
    }
    let mut entries = Vec::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<u64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
        let &[key, op, ob, rp, rb] = f.as_slice() else {
            return Err(ReadError::Malformed { line: i + 2 });
        };
        entries.push(HandoffEntry {
            key,
            attributed: [op, ob, rp, rb],
        });
    }
    Ok(Some(Handoff {
        entries,
        counted_until,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(label: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("flowlogd-handoff-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trips_and_is_consumed() {
        let dir = tmp("rt");
        let entries = vec![HandoffEntry {
            key: (3 << 32) | 77,
            attributed: [1, 60, 2, 120],
        }];
        write(&dir, 1000, 999, &entries).unwrap();
        assert_eq!(
            take(&dir, 1010).unwrap(),
            Some(Handoff {
                entries,
                counted_until: Some(999)
            })
        );
        assert!(take(&dir, 1010).unwrap().is_none(), "consumed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn too_old_or_malformed_is_refused() {
        let dir = tmp("old");
        write(&dir, 1000, 1000, &[]).unwrap();
        assert!(matches!(
            take(&dir, 1000 + MAX_AGE_SECS + 1),
            Err(ReadError::TooOld { .. })
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            path_in(&dir),
            format!("flowlogd-handoff 2 1000 {}\n1 2 3\n", netns_id()),
        )
        .unwrap();
        assert!(matches!(
            take(&dir, 1000),
            Err(ReadError::Malformed { line: 2 })
        ));
        // Written before the end of the last window was recorded: read,
        // nothing is counted in full.
        std::fs::write(
            path_in(&dir),
            format!("flowlogd-handoff 2 1000 {}\n1 2 3 4 5\n", netns_id()),
        )
        .unwrap();
        let old = take(&dir, 1000).unwrap().unwrap();
        assert_eq!((old.entries.len(), old.counted_until), (1, None));
        // A handoff from another network namespace (conntrack ids are per
        // namespace) is not applied.
        std::fs::write(path_in(&dir), "flowlogd-handoff 2 1000 net:[1]\n").unwrap();
        assert!(matches!(
            take(&dir, 1000),
            Err(ReadError::OtherNamespace { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_handoff_others_could_write_or_from_the_future_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmp("untrusted");
        let entries = [HandoffEntry {
            key: 1,
            attributed: [1, 2, 3, 4],
        }];
        // Written by the daemon: 0600, read back.
        write(&dir, 1000, 999, &entries).unwrap();
        let meta = std::fs::metadata(path_in(&dir)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(take(&dir, 1000).unwrap().is_some());
        // Made writable by others: refused, and consumed all the same.
        write(&dir, 1000, 999, &entries).unwrap();
        std::fs::set_permissions(path_in(&dir), std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = take(&dir, 1000).unwrap_err();
        assert!(matches!(e, ReadError::NotOurs(_)), "{e}");
        assert!(e.to_string().contains("mode 0666"), "{e}");
        assert!(!path_in(&dir).exists());
        // Dated beyond the allowed skew: refused; within it: read.
        write(&dir, 1000 + MAX_FUTURE_SECS + 1, 999, &entries).unwrap();
        assert!(matches!(
            take(&dir, 1000),
            Err(ReadError::InTheFuture { ahead_secs }) if ahead_secs == MAX_FUTURE_SECS + 1
        ));
        write(&dir, 1000 + MAX_FUTURE_SECS, 999, &entries).unwrap();
        assert!(take(&dir, 1000).unwrap().is_some());
        // A symlink in its place is not followed.
        let victim = dir.join("victim");
        std::fs::write(
            &victim,
            format!("flowlogd-handoff 2 1000 {} 999\n1 1 1 1 1\n", netns_id()),
        )
        .unwrap();
        std::os::unix::fs::symlink(&victim, path_in(&dir)).unwrap();
        assert!(matches!(take(&dir, 1000), Err(ReadError::Io(_))));
        assert!(victim.exists() && !path_in(&dir).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
