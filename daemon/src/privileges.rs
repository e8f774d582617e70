//! After start-up the daemon keeps CAP_NET_ADMIN and nothing else, and
//! becomes `daemon.user` where one is set.
//!
//! What runs before the drop (as started, root or the unit's user): the
//! `nft` child that installs the tracking table, the sysctl writes, opening
//! and binding the netlink sockets, preparing `state_dir`. What runs after
//! it needs only CAP_NET_ADMIN (conntrack dumps, SO_RCVBUFFORCE when a
//! buffer grows after an overrun, a dump socket opened again) and files the
//! daemon's user may write: the spools, the handoff and the run marker in
//! `state_dir`, and what sink plugins open, at start and at every reload.
//! Sink plugins are loaded after the drop, so their code never runs with
//! more than that, and what a reload does works at start too.
//!
//! Capability sets are per thread: the drop happens while the capture
//! thread is the only one, so every thread started later (sink workers,
//! the metadata worker) inherits the reduced sets.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{AccessFlags, Gid, Uid};

use crate::config::DaemonUser;

/// The one capability the daemon keeps: the conntrack and NFLOG netlink
/// groups and dumps, and receive buffers beyond `rmem_max`.
const KEPT: Capability = Capability::CAP_NET_ADMIN;

/// Why privileges could not be dropped; the daemon does not run on with
/// more than it should.
#[derive(Debug)]
pub enum PrivilegeError {
    /// Other threads run already; they would keep their capabilities.
    Threads(usize),
    Caps {
        what: &'static str,
        source: caps::errors::CapsError,
    },
    Prctl {
        what: &'static str,
        source: nix::Error,
    },
    ListThreads(io::Error),
    Switch {
        user: String,
        what: &'static str,
        source: nix::Error,
    },
    /// `daemon.user` is set and the daemon runs as another, unprivileged user.
    CannotSwitch {
        user: String,
        uid: u32,
    },
    StateDirNotWritable {
        path: PathBuf,
        who: String,
        fix: String,
    },
}

impl fmt::Display for PrivilegeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivilegeError::Threads(n) => write!(
                f,
                "cannot drop privileges: {n} threads run already and would keep their capabilities"
            ),
            PrivilegeError::Caps { what, source } => {
                write!(f, "cannot drop privileges: {what}: {source}")
            }
            PrivilegeError::Prctl { what, source } => {
                write!(f, "cannot drop privileges: {what}: {source}")
            }
            PrivilegeError::ListThreads(e) => {
                write!(f, "cannot drop privileges: cannot list this process's threads in /proc/self/task: {e}")
            }
            PrivilegeError::Switch { user, what, source } => {
                write!(f, "cannot switch to daemon.user {user:?}: {what}: {source}")
            }
            PrivilegeError::CannotSwitch { user, uid } => write!(
                f,
                "cannot switch to daemon.user {user:?}: the daemon runs as uid {uid} without CAP_SETUID and \
                 CAP_SETGID (start it as root, or as that user, or remove the key)"
            ),
            PrivilegeError::StateDirNotWritable { path, who, fix } => write!(
                f,
                "state_dir {} is not writable by {who} once privileges are dropped: {fix}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PrivilegeError {}

fn caps_err(what: &'static str) -> impl FnOnce(caps::errors::CapsError) -> PrivilegeError {
    move |source| PrivilegeError::Caps { what, source }
}

/// After the drop: the daemon can still write in `state_dir` (spools,
/// handoff, run marker). Checked with the process's own credentials.
///
/// # Errors
/// [`PrivilegeError::StateDirNotWritable`] when it cannot.
pub fn check_state_dir(dir: &Path, user: Option<&DaemonUser>) -> Result<(), PrivilegeError> {
    match nix::unistd::access(dir, AccessFlags::W_OK | AccessFlags::X_OK) {
        Ok(()) => Ok(()),
        Err(_) => {
            let (who, owner) = match user {
                Some(u) => (format!("user {}", u.name), u.name.clone()),
                None => {
                    let uid = Uid::current();
                    (
                        format!("uid {uid} (without CAP_DAC_OVERRIDE)"),
                        format!("uid {uid}"),
                    )
                }
            };
            Err(PrivilegeError::StateDirNotWritable {
                path: dir.to_owned(),
                fix: format!(
                    "chown it to {owner} (and what is in it, e.g. an earlier run's spool){}",
                    if user.is_none() {
                        ", or set daemon.user to its owner"
                    } else {
                        ""
                    }
                ),
                who,
            })
        }
    }
}

/// What [`keep_only_net_admin`] did, for the log.
pub struct DropReport {
    /// Capabilities taken from the permitted set, sorted.
    dropped: Vec<Capability>,
    /// Capabilities taken from the bounding set.
    bounding_dropped: usize,
    /// The bounding set still holds these (no CAP_SETPCAP to clear it).
    bounding_left: usize,
    user: Option<DaemonUser>,
}

impl fmt::Display for DropReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "privileges: keeping only {KEPT}")?;
        if self.dropped.is_empty() {
            write!(f, " (no other capability was held)")?;
        } else {
            let names: Vec<String> = self.dropped.iter().map(|c| c.to_string()).collect();
            write!(f, "; dropped {}: {}", names.len(), names.join(" "))?;
        }
        write!(f, "; bounding set: {} removed", self.bounding_dropped)?;
        if self.bounding_left > 0 {
            write!(
                f,
                ", {} left (no CAP_SETPCAP to remove them; no_new_privs keeps them unreachable)",
                self.bounding_left
            )?;
        }
        write!(f, "; no_new_privs set")?;
        match &self.user {
            Some(u) => write!(
                f,
                "; running as user {} (uid {}, gid {})",
                u.name, u.uid, u.gid
            ),
            None => write!(f, "; running as uid {}", Uid::current()),
        }
    }
}

/// Threads of this process, from /proc/self/task.
fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Drops every capability but CAP_NET_ADMIN from the permitted, effective
/// and bounding sets, clears the inheritable and ambient sets, sets
/// no_new_privs, and switches to `user` (keeping CAP_NET_ADMIN across the
/// switch). Must be called while this is the only thread.
///
/// # Errors
/// A [`PrivilegeError`]; the caller stops, rather than run on with more
/// than it should.
pub fn keep_only_net_admin(user: Option<&DaemonUser>) -> Result<DropReport, PrivilegeError> {
    // Capability sets are per thread; setuid is made process-wide by libc,
    // capset is not.
    let threads = thread_count().map_err(PrivilegeError::ListThreads)?;
    if threads != 1 {
        return Err(PrivilegeError::Threads(threads));
    }
    let permitted =
        caps::read(None, CapSet::Permitted).map_err(caps_err("reading the permitted set"))?;
    let effective =
        caps::read(None, CapSet::Effective).map_err(caps_err("reading the effective set"))?;

    // The bounding set first: removing from it needs CAP_SETPCAP, which
    // goes with the rest below.
    let mut bounding_dropped = 0;
    let mut bounding_left = 0;
    let can_setpcap = effective.contains(&Capability::CAP_SETPCAP);
    for cap in caps::read(None, CapSet::Bounding).map_err(caps_err("reading the bounding set"))? {
        if cap == KEPT {
            continue;
        }
        if can_setpcap {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(caps_err("clearing the bounding set"))?;
            bounding_dropped += 1;
        } else {
            bounding_left += 1;
        }
    }

    if let Some(u) = user {
        switch_user(u, &effective)?;
    }

    let kept: CapsHashSet = permitted.iter().copied().filter(|c| *c == KEPT).collect();
    // Under the unit the sets are right already: no capset then, which its
    // system call filter may refuse.
    let sets = [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable];
    let current: Vec<CapsHashSet> = sets
        .iter()
        .map(|set| caps::read(None, *set))
        .collect::<Result<_, _>>()
        .map_err(caps_err("reading the capability sets"))?;
    if current != [kept.clone(), kept.clone(), CapsHashSet::new()] {
        // Effective first: it must stay within the permitted set at each step.
        caps::set(None, CapSet::Effective, &kept).map_err(caps_err("setting the effective set"))?;
        caps::set(None, CapSet::Permitted, &kept).map_err(caps_err("setting the permitted set"))?;
        caps::clear(None, CapSet::Inheritable).map_err(caps_err("clearing the inheritable set"))?;
    }
    // Ambient capabilities (the unit grants CAP_NET_ADMIN so) only serve
    // the `nft` child at start-up; nothing is executed after it.
    caps::clear(None, CapSet::Ambient).map_err(caps_err("clearing the ambient set"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|source| PrivilegeError::Prctl {
        what: "setting no_new_privs",
        source,
    })?;

    let mut dropped: Vec<Capability> = permitted.into_iter().filter(|c| *c != KEPT).collect();
    dropped.sort_by_key(|c| c.index());
    Ok(DropReport {
        dropped,
        bounding_dropped,
        bounding_left,
        user: user.cloned(),
    })
}

/// setgroups, setgid and setuid to `user`, with PR_SET_KEEPCAPS so that
/// the permitted set (CAP_NET_ADMIN) survives the change of uid.
fn switch_user(user: &DaemonUser, effective: &CapsHashSet) -> Result<(), PrivilegeError> {
    let (uid, gid) = (Uid::from_raw(user.uid), Gid::from_raw(user.gid));
    if Uid::current() == uid && Uid::effective() == uid && Gid::current() == gid {
        // Started as that user already (the unit's User=).
        return Ok(());
    }
    if !effective.contains(&Capability::CAP_SETUID) || !effective.contains(&Capability::CAP_SETGID)
    {
        return Err(PrivilegeError::CannotSwitch {
            user: user.name.clone(),
            uid: Uid::current().as_raw(),
        });
    }
    let fail = |what: &'static str| {
        move |source| PrivilegeError::Switch {
            user: user.name.clone(),
            what,
            source,
        }
    };
    nix::sys::prctl::set_keepcaps(true).map_err(fail("PR_SET_KEEPCAPS"))?;
    let name = std::ffi::CString::new(user.name.as_str()).expect("validated: no NUL");
    // The user's supplementary groups (e.g. one that may read a sink's
    // directory), as login would give them; root's are gone.
    nix::unistd::initgroups(&name, gid).map_err(fail("initgroups"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(fail("setresgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(fail("setresuid"))?;
    nix::sys::prctl::set_keepcaps(false).map_err(fail("clearing PR_SET_KEEPCAPS"))?;
    Ok(())
}
