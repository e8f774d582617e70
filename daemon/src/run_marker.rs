//! Telling a clean stop from an unclean one.
//!
//! A capturing run keeps the file `state_dir/running`. It is written when
//! capture begins, right where the previous run's handoff is taken, and a
//! clean shutdown removes it only after the handoff is written. So a start
//! that finds the marker and no usable handoff knows that the previous run
//! was capturing and never finished its stop: it was killed (kill -9, the
//! OOM killer), crashed (a plugin that segfaults), the host went down, or
//! the handoff could not be written. That run's open window was never
//! emitted, and what its live connections carried since its last window
//! close is in no handoff, so the new run's first window is marked SKIPDATA
//! for every ENI: the loss is reported, never silent.
//!
//! Format: one line `flowlogd-running 1 <pid> <started-at> <boot-id>
//! <netns>`. The boot id (/proc/sys/kernel/random/boot_id) tells a crash
//! from a reboot in the log; the pid lets `remove-tracking-table` refuse to
//! pull the table from under a running daemon.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::state_file::{self, sync_dir, with_path};

const FILE_NAME: &str = "running";
const HEADER: &str = "flowlogd-running 1";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The marker of a capturing run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunMarker {
    pub pid: u32,
    /// Unix seconds at which it began capturing.
    pub started_at: i64,
    pub boot_id: String,
    /// `net:[<inode>]`: conntrack and the tracking table are per namespace.
    pub netns: String,
}

impl RunMarker {
    /// The marker of this process, capturing since `started_at`.
    pub fn current(started_at: i64) -> RunMarker {
        RunMarker {
            pid: std::process::id(),
            started_at,
            boot_id: boot_id(),
            netns: std::fs::read_link("/proc/self/ns/net")
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown".into()),
        }
    }

    fn to_line(&self) -> String {
        format!(
            "{HEADER} {} {} {} {}\n",
            self.pid, self.started_at, self.boot_id, self.netns
        )
    }

    fn parse(text: &str) -> Option<RunMarker> {
        let mut f = text
            .lines()
            .next()?
            .strip_prefix(HEADER)?
            .split_whitespace();
        let marker = RunMarker {
            pid: f.next()?.parse().ok()?,
            started_at: f.next()?.parse().ok()?,
            boot_id: f.next()?.to_owned(),
            netns: f.next()?.to_owned(),
        };
        f.next().is_none().then_some(marker)
    }
}

/// This boot's id; "unknown" if the kernel does not say (then a reboot
/// cannot be told from a crash, which changes only the log's wording).
pub fn boot_id() -> String {
    std::fs::read_to_string(BOOT_ID)
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
        .unwrap_or_else(|| "unknown".into())
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// What a start finds of the previous run.
#[derive(Debug, PartialEq, Eq)]
pub enum Previous {
    /// No marker: a first start, or the previous run stopped cleanly.
    None,
    Marker(RunMarker),
    /// Something is there but cannot be read or parsed: a run was there.
    Unreadable(String),
}

/// Reads the marker without following a symlink.
pub fn read(state_dir: &Path) -> Previous {
    let path = path_in(state_dir);
    let opened = state_file::open_nofollow(&path);
    let mut text = String::new();
    match opened.and_then(|mut f| f.read_to_string(&mut text)) {
        Ok(_) => match RunMarker::parse(&text) {
            Some(m) => Previous::Marker(m),
            None => Previous::Unreadable(format!("{}: malformed", path.display())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Previous::None,
        Err(e) => Previous::Unreadable(format!("{}: {e}", path.display())),
    }
}

/// Writes the marker atomically (see [`state_file::write_atomically`]:
/// a planted file or symlink is never written through). Mode 0644:
/// `remove-tracking-table` reads it to see whether a daemon runs.
///
/// # Errors
/// The I/O error, with the path.
pub fn write(state_dir: &Path, marker: &RunMarker) -> io::Result<()> {
    state_file::write_atomically(state_dir, FILE_NAME, marker.to_line().as_bytes(), 0o644)
}

/// Removes the marker (a clean stop); no marker is not an error.
///
/// # Errors
/// The I/O error, with the path.
pub fn remove(state_dir: &Path) -> io::Result<()> {
    let path = path_in(state_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(state_dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(with_path(&path))
}

/// A previous run that was capturing and did not stop cleanly.
#[derive(Debug, PartialEq, Eq)]
pub struct UncleanStop {
    previous: Previous,
    /// The marker names another boot than this one.
    rebooted: bool,
}

/// What a start makes of the marker it found.
#[derive(Debug, PartialEq, Eq)]
pub enum Judgement {
    /// A first start, or the previous run stopped cleanly.
    Clean,
    /// The previous run was capturing and did not stop cleanly.
    Unclean(UncleanStop),
    /// The marker is that of another flowlogd running now with the same
    /// state directory (a shared `state_dir`, e.g. daemons of several
    /// network namespaces): not a previous run of this one. Its marker is
    /// left alone, and this run's own unclean stop cannot be detected.
    Shared(RunMarker),
}

/// Whether the previous run stopped uncleanly: a marker (or something
/// unreadable in its place) and no handoff used. A handoff that was used
/// means the previous run emitted its last window and handed off what it
/// attributed; if it died after that (between the handoff and removing
/// the marker), nothing of the window was lost to capture. `here` is this
/// run's marker; `is_live_flowlogd` says whether a pid is a flowlogd
/// running now ([`is_live_flowlogd`]; a parameter for the tests).
///
/// A reboot counts as unclean too: conntrack starts empty, so there is
/// nothing to resume anyway, but the previous run's open window was still
/// never emitted, and SKIPDATA is the honest report of that.
pub fn judge(
    previous: Previous,
    handoff_used: bool,
    here: &RunMarker,
    is_live_flowlogd: impl Fn(u32) -> bool,
) -> Judgement {
    if handoff_used {
        return Judgement::Clean;
    }
    let rebooted = match &previous {
        Previous::None => return Judgement::Clean,
        Previous::Marker(m) => {
            let known = m.boot_id != "unknown" && here.boot_id != "unknown";
            let rebooted = known && m.boot_id != here.boot_id;
            // Our own pid can only be the marker's if its process is gone
            // and the pid was recycled to us.
            if !rebooted && m.pid != here.pid && is_live_flowlogd(m.pid) {
                return Judgement::Shared(m.clone());
            }
            rebooted
        }
        Previous::Unreadable(_) => false,
    };
    Judgement::Unclean(UncleanStop { previous, rebooted })
}

impl fmt::Display for UncleanStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const LOST: &str =
            "its open window was never emitted and what flowed since its last window close is not \
                            counted";
        match &self.previous {
            Previous::Marker(m) if self.rebooted => write!(
                f,
                "the previous run (pid {}, capturing since {}) was still capturing when the host went down (the \
                 boot id changed): {LOST}",
                m.pid, m.started_at
            ),
            Previous::Marker(m) => write!(
                f,
                "the previous run (pid {}, capturing since {}) did not stop cleanly (killed, e.g. kill -9 or the OOM \
                 killer, or crashed) and left no handoff: {LOST}",
                m.pid, m.started_at
            ),
            Previous::Unreadable(why) => write!(
                f,
                "a previous run left a marker that cannot be read ({why}) and no handoff, so it did not stop \
                 cleanly: {LOST}"
            ),
            Previous::None => write!(f, "no previous run"),
        }
    }
}

/// Whether `pid` is a running process named flowlogd (in this pid
/// namespace); a zombie (killed, not yet reaped) is not running.
pub fn is_live_flowlogd(pid: u32) -> bool {
    // /proc/<pid>/stat: `pid (comm) state ...`; comm may hold spaces and
    // parentheses, so the state follows the last ')'.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].split_whitespace().next();
    comm == "flowlogd" && !matches!(state, Some("Z" | "X"))
}

/// The daemon that is capturing with this state directory right now, if
/// any: a marker from this boot whose pid is a live `flowlogd`.
pub fn running_daemon(state_dir: &Path) -> Option<RunMarker> {
    let Previous::Marker(m) = read(state_dir) else {
        return None;
    };
    (m.boot_id == boot_id() && is_live_flowlogd(m.pid)).then_some(m)
}

/// Removes the marker if it is this process's (a clean stop); another
/// daemon's marker in a shared state directory is left alone.
///
/// # Errors
/// The I/O error, with the path.
pub fn remove_own(state_dir: &Path) -> io::Result<()> {
    match read(state_dir) {
        Previous::Marker(m) if m.pid == std::process::id() => remove(state_dir),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(label: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("flowlogd-marker-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn marker(boot: &str) -> RunMarker {
        RunMarker {
            pid: 4242,
            started_at: 1_714_557_797,
            boot_id: boot.into(),
            netns: "net:[4026531840]".into(),
        }
    }

    #[test]
    fn round_trips_and_is_removed() {
        let dir = tmp("rt");
        assert_eq!(read(&dir), Previous::None);
        let m = RunMarker::current(1000);
        assert_eq!(m.pid, std::process::id());
        write(&dir, &m).unwrap();
        assert_eq!(read(&dir), Previous::Marker(m.clone()));
        // Written again (a start after a crash) it is replaced, not refused.
        std::fs::write(dir.join("running.tmp"), "left by a crash").unwrap();
        write(&dir, &m).unwrap();
        assert_eq!(read(&dir), Previous::Marker(m));
        assert!(!dir.join("running.tmp").exists());
        remove(&dir).unwrap();
        assert_eq!(read(&dir), Previous::None);
        remove(&dir).expect("removing no marker is not an error");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_modes_and_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmp("links");
        std::fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        // A symlink planted as the temporary file is not written through
        // (nor removed: the write fails, naming it), nor is one planted as
        // the marker (it is replaced).
        std::os::unix::fs::symlink(&victim, dir.join("running.tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, path_in(&dir)).unwrap();
        assert!(matches!(read(&dir), Previous::Unreadable(_)));
        let e = write(&dir, &marker("b")).unwrap_err();
        assert!(e.to_string().contains("running.tmp"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        std::fs::remove_file(dir.join("running.tmp")).unwrap();
        write(&dir, &marker("b")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        let meta = std::fs::symlink_metadata(path_in(&dir)).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o644 & !umask());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The process's umask, from /proc (umask(2) would have to change it).
    fn umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
            .unwrap_or(0o022)
    }

    #[test]
    fn malformed_marker_is_unreadable_not_absent() {
        let dir = tmp("bad");
        std::fs::create_dir_all(&dir).unwrap();
        for text in [
            "",
            "flowlogd-running 1 12\n",
            "flowlogd-running 1 1 2 b n extra\n",
            "garbage",
        ] {
            std::fs::write(path_in(&dir), text).unwrap();
            assert!(matches!(read(&dir), Previous::Unreadable(_)), "{text:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn here() -> RunMarker {
        RunMarker {
            pid: 7,
            ..marker("b")
        }
    }

    fn unclean(j: Judgement) -> UncleanStop {
        match j {
            Judgement::Unclean(u) => u,
            other => panic!("expected unclean, got {other:?}"),
        }
    }

    const DEAD: fn(u32) -> bool = |_| false;

    #[test]
    fn first_start_and_clean_stop_are_not_unclean() {
        // No marker: a first start (or a clean stop), whatever the handoff.
        assert_eq!(
            judge(Previous::None, false, &here(), DEAD),
            Judgement::Clean
        );
        assert_eq!(judge(Previous::None, true, &here(), DEAD), Judgement::Clean);
        // Marker and a handoff used: died after handing off, nothing lost.
        assert_eq!(
            judge(Previous::Marker(marker("b")), true, &here(), DEAD),
            Judgement::Clean
        );
    }

    #[test]
    fn marker_without_handoff_is_unclean_and_says_why() {
        let crash = unclean(judge(Previous::Marker(marker("b")), false, &here(), DEAD));
        assert!(!crash.rebooted);
        let text = crash.to_string();
        assert!(
            text.contains("pid 4242") && text.contains("did not stop cleanly"),
            "{text}"
        );

        let reboot = unclean(judge(Previous::Marker(marker("a")), false, &here(), DEAD));
        assert!(reboot.rebooted);
        assert!(reboot.to_string().contains("boot id changed"), "{reboot}");

        // Without a boot id a reboot cannot be told; still unclean.
        let unknown = RunMarker {
            boot_id: "unknown".into(),
            ..here()
        };
        let u = unclean(judge(Previous::Marker(marker("a")), false, &unknown, DEAD));
        assert!(!u.rebooted);

        let unreadable = unclean(judge(
            Previous::Unreadable("x: malformed".into()),
            false,
            &here(),
            DEAD,
        ));
        assert!(
            unreadable.to_string().contains("x: malformed"),
            "{unreadable}"
        );
    }

    #[test]
    fn a_live_daemon_sharing_the_state_dir_is_not_a_previous_run() {
        let live = |pid| pid == 4242;
        assert_eq!(
            judge(Previous::Marker(marker("b")), false, &here(), live),
            Judgement::Shared(marker("b"))
        );
        // The same pid in another boot is not that daemon.
        assert!(matches!(
            judge(Previous::Marker(marker("a")), false, &here(), live),
            Judgement::Unclean(_)
        ));
        // Our own pid, recycled from a dead run, is not another daemon.
        let me = RunMarker {
            pid: 4242,
            ..here()
        };
        assert!(matches!(
            judge(Previous::Marker(marker("b")), false, &me, live),
            Judgement::Unclean(_)
        ));
    }

    #[test]
    fn only_the_own_marker_is_removed() {
        let dir = tmp("own");
        write(&dir, &marker("b")).unwrap();
        remove_own(&dir).unwrap();
        assert_eq!(
            read(&dir),
            Previous::Marker(marker("b")),
            "another daemon's"
        );
        write(&dir, &RunMarker::current(1)).unwrap();
        remove_own(&dir).unwrap();
        assert_eq!(read(&dir), Previous::None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn running_daemon_is_a_live_flowlogd_of_this_boot() {
        let dir = tmp("live");
        // This test process is alive but is not named flowlogd.
        write(&dir, &RunMarker::current(1)).unwrap();
        assert_eq!(running_daemon(&dir), None);
        write(&dir, &marker("another-boot")).unwrap();
        assert_eq!(running_daemon(&dir), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
