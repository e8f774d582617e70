//! Making sure the current network namespace tracks connections, with
//! per-connection counters and timestamps.
//!
//! A namespace tracks nothing until some rule needs conntrack: the
//! conntrack hooks are registered per namespace on first use (nft_ct,
//! xt_conntrack, NAT ...). `TrackingTable` is the daemon's own minimal such
//! rule. Counters and timestamps are conntrack extensions added when an
//! entry is created, so the sysctls only affect connections that start
//! after they are set.
//!
//! Ordering: the sysctl files exist only once nf_conntrack is loaded.
//! Installing the table or opening a ctnetlink socket loads it, so do one of
//! those before `read_sysctls`/`ensure_sysctls`.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::child;

/// Per-namespace sysctls (they apply to the namespace of the process).
const SYSCTL_DIR: &str = "/proc/sys/net/netfilter";
const ACCT: &str = "nf_conntrack_acct";
const TIMESTAMP: &str = "nf_conntrack_timestamp";
/// 1: every new connection gets the event extension. The default, 2, adds
/// it only while some process listens, so a connection created while the
/// daemon was not running never sends its DESTROY event (and its final
/// counters) even after the daemon starts listening.
const EVENTS: &str = "nf_conntrack_events";

const TABLE_FAMILY: &str = "inet";
const TABLE_NAME: &str = "flowlogd";

/// Where the `nft` binary is looked for before PATH.
const NFT_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];

/// The daemon's table. Its first job is to reference `ct`, which makes the
/// namespace register the conntrack hooks for IPv4 and IPv6 (the table is
/// `inet`). The rules have no verdict and the chains accept by policy, so
/// no packet's fate changes. Priority -150 (mangle) runs after conntrack
/// (-200), so the counters show new connections for an operator looking.
/// The leading `table` + `delete table` make the load replace the table
/// the previous run left in place, in the same transaction.
const RULESET: &str = r#"table inet flowlogd
delete table inet flowlogd
table inet flowlogd {
	chain track_in {
		type filter hook prerouting priority -150; policy accept;
		ct state new counter comment "flowlogd: enables connection tracking, no verdict"
	}
	chain track_out {
		type filter hook output priority -150; policy accept;
		ct state new counter comment "flowlogd: enables connection tracking, no verdict"
	}
"#;

/// Its second job, only when some sink's field list names `tcp-flags`:
/// copy the headers of TCP control packets (SYN, FIN or RST set; never a
/// plain ACK or data segment) to the daemon's NFLOG group `{group}`, at the
/// points where the packet's fate is decided:
///
/// - arriving: the input and forward hooks at priority 1000, after every
///   standard priority (filter 0, DNAT -100, SNAT 100, conntrack helpers
///   300), so a packet the firewall drops in those hooks is never seen
///   here. Its addresses are after NAT then, not the ENI wire's: the
///   daemon takes the wire's from the conntrack entry the group attaches
///   (NFULNL_CFG_F_CONNTRACK) where the kernel can attach it
///   (CONFIG_NETFILTER_NETLINK_GLUE_CT); where it cannot, packets of
///   connections without NAT are exact from their headers, and those of
///   NAT'd connections are told apart by the prefix `{nat_prefix}` (their
///   flags cannot be placed: the window is marked, see `tcp_flags`).
/// - leaving: postrouting at priority 1000, after SNAT (100), so the
///   headers are what goes on the wire and the packet passed the output or
///   forward filter.
///
/// Loopback is left out (it is no ENI's); only packets that belong to a
/// connection (`ct state`) are copied, since only those have an ACCEPT
/// record to add flags to. snaplen 128 copies the headers (IPv6 with
/// extension headers included), not the data. Drops in a chain of priority
/// above 1000 are not seen as drops: flowlogd's rules must come last. The
/// arriving hooks jump to one chain so that a packet is matched once.
const TCP_FLAGS_CHAINS: &str = r#"	chain tcp_flags_in {
		type filter hook input priority 1000; policy accept;
		meta iiftype != loopback tcp flags & (fin | syn | rst) != 0 ct state new,established,related jump tcp_flags_arriving
	}
	chain tcp_flags_forward {
		type filter hook forward priority 1000; policy accept;
		meta iiftype != loopback tcp flags & (fin | syn | rst) != 0 ct state new,established,related jump tcp_flags_arriving
	}
	chain tcp_flags_arriving {
		ct status & (snat | dnat) == 0 counter log group {group} snaplen 128 return comment "flowlogd: tcp-flags, arriving, after the firewall"
		counter log prefix "{nat_prefix}" group {group} snaplen 128 comment "flowlogd: tcp-flags, arriving on a NAT'd connection, after the firewall"
	}
	chain tcp_flags_out {
		type filter hook postrouting priority 1000; policy accept;
		meta oiftype != loopback tcp flags & (fin | syn | rst) != 0 ct state new,established,related counter log group {group} snaplen 128 comment "flowlogd: tcp-flags, leaving, after SNAT"
	}
"#;

/// The table's text: the tracking chains, and the tcp-flags chains logging
/// to `tcp_flags_group` if it is set.
fn ruleset(tcp_flags_group: Option<u16>) -> String {
    let mut text = RULESET.to_owned();
    if let Some(group) = tcp_flags_group {
        text.push_str(
            &TCP_FLAGS_CHAINS
                .replace("{group}", &group.to_string())
                .replace("{nat_prefix}", crate::tcp_flags::NAT_PREFIX),
        );
    }
    text.push_str("}\n");
    text
}

/// Declaring the table first makes the delete succeed whether or not it
/// exists.
const REMOVE_RULESET: &str = "table inet flowlogd\ndelete table inet flowlogd\n";

/// The state of the conntrack sysctls; `None` when the file is absent
/// (nf_conntrack not loaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConntrackSysctls {
    pub acct: Option<bool>,
    pub timestamp: Option<bool>,
    /// nf_conntrack_events == 1 (events for every connection).
    pub events: Option<bool>,
}

/// What `ensure_sysctls` changed: the sysctl names it set to 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SysctlReport {
    pub enabled: Vec<&'static str>,
}

/// Errors of this module, worded for the operator.
#[derive(Debug)]
pub enum TrackingError {
    /// nf_conntrack is not loaded, so its sysctls do not exist yet.
    ConntrackNotLoaded {
        path: PathBuf,
    },
    /// A sysctl is off and the daemon may not turn it on.
    SysctlOff {
        name: &'static str,
        what: &'static str,
    },
    SysctlRead {
        path: PathBuf,
        source: io::Error,
    },
    SysctlWrite {
        path: PathBuf,
        source: io::Error,
    },
    NftMissing,
    NftSpawn {
        path: PathBuf,
        source: io::Error,
    },
    NftFailed {
        action: &'static str,
        path: PathBuf,
        stderr: String,
    },
}

impl fmt::Display for TrackingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackingError::ConntrackNotLoaded { path } => write!(
                f,
                "{} does not exist: nf_conntrack is not loaded (install the tracking table or \
                 open the conntrack sockets first, or run `modprobe nf_conntrack`)",
                path.display()
            ),
            TrackingError::SysctlOff { name, what } => write!(
                f,
                "conntrack {what} is not on for every connection: set net.netfilter.{name}=1 \
                 (sysctl -w net.netfilter.{name}=1, or a file in /etc/sysctl.d/), or set \
                 daemon.enable_conntrack_accounting = true"
            ),
            TrackingError::SysctlRead { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TrackingError::SysctlWrite { path, source } => write!(
                f,
                "cannot write 1 to {}: {source} (the daemon needs CAP_NET_ADMIN in its network \
                 namespace)",
                path.display()
            ),
            TrackingError::NftMissing => write!(
                f,
                "the nft binary was not found in /usr/sbin, /sbin or PATH: install nftables, or \
                 set daemon.install_tracking_table = false if the host firewall already uses \
                 conntrack"
            ),
            TrackingError::NftSpawn { path, source } => {
                write!(f, "cannot run {}: {source}", path.display())
            }
            TrackingError::NftFailed {
                action,
                path,
                stderr,
            } => write!(
                f,
                "{} failed to {action} table {TABLE_FAMILY} {TABLE_NAME}: {}",
                path.display(),
                stderr.trim()
            ),
        }
    }
}

impl std::error::Error for TrackingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrackingError::SysctlRead { source, .. }
            | TrackingError::SysctlWrite { source, .. }
            | TrackingError::NftSpawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Read net.netfilter.nf_conntrack_acct and nf_conntrack_timestamp of the
/// current network namespace.
pub fn read_sysctls() -> ConntrackSysctls {
    read_sysctls_in(Path::new(SYSCTL_DIR))
}

/// Make sure accounting and timestamps are on. With `enable`, turn off ones
/// on and report which; without, fail naming what to set.
///
/// # Errors
///
/// `ConntrackNotLoaded` when the sysctl files are absent, `SysctlOff` when
/// one is off and `enable` is false, `SysctlRead`/`SysctlWrite` on I/O
/// errors.
pub fn ensure_sysctls(enable: bool) -> Result<SysctlReport, TrackingError> {
    ensure_sysctls_in(Path::new(SYSCTL_DIR), enable)
}

fn read_sysctls_in(dir: &Path) -> ConntrackSysctls {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()
            .map(|v| v.trim() != "0")
    };
    ConntrackSysctls {
        acct: read(ACCT),
        timestamp: read(TIMESTAMP),
        events: std::fs::read_to_string(dir.join(EVENTS))
            .ok()
            .map(|v| v.trim() == "1"),
    }
}

fn ensure_sysctls_in(dir: &Path, enable: bool) -> Result<SysctlReport, TrackingError> {
    let mut report = SysctlReport::default();
    for (name, what) in [
        (ACCT, "accounting"),
        (TIMESTAMP, "timestamping"),
        (EVENTS, "event delivery"),
    ] {
        let path = dir.join(name);
        let value = match std::fs::read_to_string(&path) {
            Ok(v) => v,
            // nf_conntrack_events is missing on kernels built without
            // CONFIG_NF_CONNTRACK_EVENTS; only then would events be absent
            // too, and the socket open would have failed already.
            Err(e) if e.kind() == io::ErrorKind::NotFound && name == EVENTS => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TrackingError::ConntrackNotLoaded { path })
            }
            Err(source) => return Err(TrackingError::SysctlRead { path, source }),
        };
        let on = if name == EVENTS {
            value.trim() == "1"
        } else {
            value.trim() != "0"
        };
        if on {
            continue;
        }
        if !enable {
            return Err(TrackingError::SysctlOff { name, what });
        }
        std::fs::write(&path, "1\n").map_err(|source| TrackingError::SysctlWrite {
            path: path.clone(),
            source,
        })?;
        report.enabled.push(name);
    }
    Ok(report)
}

/// The daemon's nftables table `inet flowlogd` in the current network
/// namespace. It outlives the process on purpose: removed at exit, the
/// namespace would stop tracking until the next start, and packets of live
/// connections in that gap would never be counted (the issue measured 10-38
/// of 3,000 lost across a restart). It goes only with [`remove_table`]
/// (`flowlogd remove-tracking-table`, run by the package's removal scripts).
#[derive(Debug)]
pub struct TrackingTable {
    found_existing: bool,
}

impl TrackingTable {
    /// Install the table; one already there (left by the previous run, as
    /// it should be) is renewed in the same transaction. Installing is
    /// idempotent: the `ct` expressions of the new rules take their
    /// reference on the conntrack hooks before the old ones drop theirs, so
    /// tracking never pauses.
    ///
    /// # Errors
    ///
    /// `NftMissing` when no nft binary is found, `NftSpawn`/`NftFailed`
    /// when it cannot run or rejects the ruleset (e.g. without
    /// CAP_NET_ADMIN).
    pub fn install() -> Result<Self, TrackingError> {
        Self::install_with_tcp_flags(None)
    }

    /// [`TrackingTable::install`], with the tcp-flags chains logging to
    /// `tcp_flags_group` if it is set (without, a table that had them loses
    /// them).
    ///
    /// # Errors
    ///
    /// As [`TrackingTable::install`].
    pub fn install_with_tcp_flags(tcp_flags_group: Option<u16>) -> Result<Self, TrackingError> {
        let nft = find_nft().ok_or(TrackingError::NftMissing)?;
        let found_existing = table_exists(&nft);
        run_nft(&nft, &ruleset(tcp_flags_group), "install")?;
        Ok(TrackingTable { found_existing })
    }

    /// Whether the table was already there (the previous run's, kept in
    /// place across the restart).
    pub fn found_existing(&self) -> bool {
        self.found_existing
    }
}

/// Whether the table `inet flowlogd` exists in this namespace (false also
/// when nft is missing: then nothing can have installed it).
pub fn table_present() -> bool {
    find_nft().is_some_and(|nft| table_exists(&nft))
}

/// Delete the table from this namespace; `Ok(false)` when there was none.
///
/// # Errors
///
/// `NftMissing`, `NftSpawn`/`NftFailed` when nft cannot run or fails.
pub fn remove_table() -> Result<bool, TrackingError> {
    let nft = find_nft().ok_or(TrackingError::NftMissing)?;
    let existed = table_exists(&nft);
    // The ruleset deletes whether or not the table exists, so a table
    // someone else removed in between is not an error.
    run_nft(&nft, REMOVE_RULESET, "remove")?;
    Ok(existed)
}

fn table_exists(nft: &Path) -> bool {
    child::minimal_command(nft)
        .args(["list", "table", TABLE_FAMILY, TABLE_NAME])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn find_nft() -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    NFT_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(path_dirs)
        .map(|dir| dir.join("nft"))
        .find(|candidate| candidate.is_file())
}

fn run_nft(nft: &Path, ruleset: &str, action: &'static str) -> Result<(), TrackingError> {
    let spawn_error = |source| TrackingError::NftSpawn {
        path: nft.to_path_buf(),
        source,
    };
    let mut child = child::minimal_command(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error (nft exited early) shows in its status and stderr.
        let _ = stdin.write_all(ruleset.as_bytes());
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    if !output.status.success() {
        return Err(TrackingError::NftFailed {
            action,
            path: nft.to_path_buf(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("flowlogd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn tcp_flags_chains_only_when_asked_for() {
        let plain = ruleset(None);
        assert!(!plain.contains("log group"), "{plain}");
        assert!(plain.ends_with("\t}\n}\n"), "{plain}");
        let flags = ruleset(Some(65000));
        assert_eq!(flags.matches("group 65000 snaplen 128").count(), 3);
        assert!(
            flags.contains("log prefix \"flowlogd:nat\" group 65000"),
            "{flags}"
        );
        for hook in [
            "hook input priority 1000",
            "hook forward priority 1000",
            "hook postrouting priority 1000",
        ] {
            assert!(flags.contains(hook), "{hook}: {flags}");
        }
        assert!(flags.ends_with("\t}\n}\n"), "{flags}");
    }

    #[test]
    fn sysctls_absent_mean_module_not_loaded() {
        let dir = temp_dir("sysctl-absent");
        assert_eq!(
            read_sysctls_in(&dir),
            ConntrackSysctls {
                acct: None,
                timestamp: None,
                events: None,
            }
        );
        let err = ensure_sysctls_in(&dir, true).unwrap_err();
        assert!(
            matches!(err, TrackingError::ConntrackNotLoaded { .. }),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sysctls_off_without_enable_say_what_to_set() {
        let dir = temp_dir("sysctl-off");
        std::fs::write(dir.join(ACCT), "0\n").unwrap();
        std::fs::write(dir.join(TIMESTAMP), "1\n").unwrap();
        assert_eq!(
            read_sysctls_in(&dir),
            ConntrackSysctls {
                acct: Some(false),
                timestamp: Some(true),
                events: None,
            }
        );
        let err = ensure_sysctls_in(&dir, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "conntrack accounting is not on for every connection: set net.netfilter.nf_conntrack_acct=1 (sysctl -w \
             net.netfilter.nf_conntrack_acct=1, or a file in /etc/sysctl.d/), or set \
             daemon.enable_conntrack_accounting = true"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sysctls_off_with_enable_are_written_and_reported() {
        let dir = temp_dir("sysctl-enable");
        std::fs::write(dir.join(ACCT), "0\n").unwrap();
        std::fs::write(dir.join(TIMESTAMP), "0\n").unwrap();
        // 2 (the default): events only while someone listens.
        std::fs::write(dir.join(EVENTS), "2\n").unwrap();
        let report = ensure_sysctls_in(&dir, true).unwrap();
        assert_eq!(report.enabled, vec![ACCT, TIMESTAMP, EVENTS]);
        assert_eq!(
            read_sysctls_in(&dir),
            ConntrackSysctls {
                acct: Some(true),
                timestamp: Some(true),
                events: Some(true),
            }
        );
        // Nothing left to change.
        assert_eq!(
            ensure_sysctls_in(&dir, false).unwrap(),
            SysctlReport::default()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
