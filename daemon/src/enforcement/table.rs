//! The table `inet flowlogd_sg` and the queue rule: for the interfaces of
//! covered ENIs (the set `covered`), the first packet of each new
//! connection goes to the daemon's NFQUEUE.
//!
//! The queue itself is the xtables NFQUEUE target, in a chain
//! `FLOWLOGD_SG` of table mangle (IPv4 and IPv6, jumped to from
//! PREROUTING and POSTROUTING), not nftables' `queue` statement: kernels
//! built without CONFIG_NFT_QUEUE (the test machines' among them) have
//! only the xtables target, which every distribution kernel has. The nft
//! table does the matching (interface set, loopback, `ct state new`) and
//! marks the packet with [`QUEUE_BIT`]; the mangle rule queues packets
//! with that bit and without MARK_FLAG.
//!
//! Priorities around mangle (-150), all after conntrack (-200, so `ct
//! state` is known) and before DNAT (-100) and SNAT (100): the addresses
//! decided on are the ones the ENI saw for arriving packets; for leaving
//! ones, the source before SNAT.
//! - -160 `arriving` / `leaving`: mark the first packets to queue. A
//!   forwarded connection already decided on arrival (its ct mark has
//!   MARK_FLAG) is not queued a second time on leaving.
//! - -150 mangle: queued. An accept verdict is NF_REPEAT with the packet
//!   mark set to the rule's mark: mangle runs again and lets it pass.
//! - -149 `arriving_verdict` / `leaving_verdict`: the mark of an accept
//!   verdict is copied into the connection (`ct mark`), the packet's is
//!   cleared; a packet that passed unqueued (bypass: no daemon) loses the
//!   queue bit again.
//!
//! `--queue-bypass` (on_daemon_down = "accept") lets packets through while
//! no process reads the queue; without it they are dropped.
//!
//! Both stay when the daemon stops, so a restart (or a crash) does what
//! on_daemon_down says; `flowlogd remove-tracking-table` removes them.
//! After start-up the daemon keeps only CAP_NET_ADMIN and may no longer be
//! root: the children get that capability as ambient, so updates of the
//! interface set (ENIs coming and going) and reloads still work. Those run
//! without waiting: the loop looks at the children's exit later.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use crate::child;
use crate::security_groups::MARK_FLAG;

/// `family name` of the table, as `nft` spells it.
pub const SG_TABLE: &str = "inet flowlogd_sg";
/// The mangle chain (IPv4 and IPv6) that holds the queue rule.
pub const XT_CHAIN: &str = "FLOWLOGD_SG";
/// The packet mark bit that sends a packet to the queue. Rule marks
/// (MARK_FLAG set) are never queued, whatever their other bits.
pub const QUEUE_BIT: u32 = 0x4000_0000;

const SBIN_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];
/// The xtables tools of both families.
const XT_FAMILIES: [(&str, &str); 2] = [
    ("iptables", "iptables-restore"),
    ("ip6tables", "ip6tables-restore"),
];

/// What the queue rule depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSettings {
    pub queue: u16,
    /// on_daemon_down = "accept": `--queue-bypass`.
    pub bypass: bool,
}

/// The nft table's text, loaded in one transaction. Chains are declared
/// (made if absent), flushed and filled: they replace what a previous run
/// left. The set is only declared: the interfaces the previous run
/// enforced on stay in it until this run has learnt its own (the loop
/// rewrites it then), so a restart leaves no moment in which new
/// connections on a covered ENI pass unqueued. `ifaces` are added to it.
pub(crate) fn ruleset(ifaces: &BTreeSet<String>) -> String {
    let flag = format!("{MARK_FLAG:#010x}");
    let both = format!("{:#010x}", MARK_FLAG | QUEUE_BIT);
    let bit = format!("{QUEUE_BIT:#010x}");
    let not_bit = format!("{:#010x}", !QUEUE_BIT);
    let to_queue = format!("ct state new meta mark & {both} == 0 meta mark set meta mark | {bit}");
    let verdict = format!(
        "\t\tmeta mark & {flag} == {flag} ct mark set meta mark meta mark set 0 accept comment \"flowlogd: an accept verdict, its rule carried into the connection\"\n\
         \t\tmeta mark & {both} == {bit} meta mark set meta mark & {not_bit} comment \"flowlogd: passed unqueued (no daemon, bypass)\"\n"
    );
    let chains = [
        ("arriving", "prerouting priority -160"),
        ("arriving_verdict", "prerouting priority -149"),
        ("leaving", "postrouting priority -160"),
        ("leaving_verdict", "postrouting priority -149"),
    ];
    let mut text = format!("table {SG_TABLE} {{\n\tset covered {{\n\t\ttype ifname;\n\t}}\n");
    for (name, hook) in chains {
        text.push_str(&format!(
            "\tchain {name} {{\n\t\ttype filter hook {hook}; policy accept;\n\t}}\n"
        ));
    }
    text.push_str("}\n");
    for (name, _) in chains {
        text.push_str(&format!("flush chain {SG_TABLE} {name}\n"));
    }
    text.push_str(&format!(
        "table {SG_TABLE} {{\n\
         \tchain arriving {{\n\
         \t\tiifname @covered meta iiftype != loopback {to_queue} comment \"flowlogd: first packet arriving on a covered ENI, to the queue\"\n\
         \t}}\n\
         \tchain arriving_verdict {{\n{verdict}\t}}\n\
         \tchain leaving {{\n\
         \t\toifname @covered meta oiftype != loopback ct mark & {flag} == 0 {to_queue} comment \"flowlogd: first packet leaving by a covered ENI, to the queue\"\n\
         \t}}\n\
         \tchain leaving_verdict {{\n{verdict}\t}}\n}}\n"
    ));
    if !ifaces.is_empty() {
        text.push_str(&format!(
            "add element {SG_TABLE} covered {{ {} }}\n",
            quoted(ifaces)
        ));
    }
    text
}

/// The mangle chain's text for `iptables-restore --noflush`: declaring
/// the chain flushes it, so this replaces its rule atomically.
pub(crate) fn xt_chain(settings: TableSettings) -> String {
    format!(
        "*mangle\n:{XT_CHAIN} - [0:0]\n-A {XT_CHAIN} -m mark --mark {:#010x}/{:#010x} -m comment --comment \"flowlogd: security groups\" -j NFQUEUE --queue-num {}{}\nCOMMIT\n",
        QUEUE_BIT,
        MARK_FLAG | QUEUE_BIT,
        settings.queue,
        if settings.bypass { " --queue-bypass" } else { "" }
    )
}

fn quoted(ifaces: &BTreeSet<String>) -> String {
    ifaces
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The set's new content, in one transaction.
fn set_update(ifaces: &BTreeSet<String>) -> String {
    let mut text = format!("flush set {SG_TABLE} covered\n");
    if !ifaces.is_empty() {
        text.push_str(&format!(
            "add element {SG_TABLE} covered {{ {} }}\n",
            quoted(ifaces)
        ));
    }
    text
}

/// The installed table and queue rule as the daemon last wrote them, and
/// the children still running.
pub struct SgTable {
    settings: TableSettings,
    ifaces: BTreeSet<String>,
    running: Vec<(Child, &'static str)>,
    /// Changes that came while children ran: written when they end.
    set_behind: bool,
    xt_behind: bool,
}

impl SgTable {
    /// Installs the table and the queue rules (replacing what a previous
    /// run left), waiting for the tools: start-up needs to know they are
    /// there.
    ///
    /// # Errors
    /// A tool missing or refusing, worded for the operator.
    pub fn install(settings: TableSettings, ifaces: BTreeSet<String>) -> Result<SgTable, String> {
        let found = table_present();
        // The queue rule first: it queues only marked packets, and nothing
        // marks them before the table is there.
        for (tool, restore) in XT_FAMILIES {
            run_wait(restore, &["--noflush"], Some(&xt_chain(settings)))?;
            for hook in ["PREROUTING", "POSTROUTING"] {
                let jump = ["-t", "mangle", "-C", hook, "-j", XT_CHAIN];
                if run_wait(tool, &jump, None).is_err() {
                    run_wait(tool, &["-t", "mangle", "-I", hook, "-j", XT_CHAIN], None)?;
                }
            }
        }
        run_wait("nft", &["-f", "-"], Some(&ruleset(&ifaces)))?;
        log::info!(
            "{} nftables table {SG_TABLE} and mangle chain {XT_CHAIN} (IPv4, IPv6): the first packet of each new connection \
             on {} goes to NFQUEUE {}{}; they stay across restarts (`flowlogd remove-tracking-table` removes them)",
            if found { "renewed" } else { "installed" },
            describe(&ifaces),
            settings.queue,
            if settings.bypass {
                " with bypass (on_daemon_down = \"accept\": while no daemon reads the queue, packets pass)"
            } else {
                " without bypass (on_daemon_down = \"drop\": while no daemon reads the queue, new connections are dropped)"
            }
        );
        Ok(SgTable {
            settings,
            ifaces,
            running: Vec::new(),
            set_behind: false,
            xt_behind: false,
        })
    }

    pub fn settings(&self) -> TableSettings {
        self.settings
    }

    /// Sets the covered interfaces; the set is rewritten if they changed.
    pub fn set_interfaces(&mut self, ifaces: BTreeSet<String>) {
        if ifaces != self.ifaces {
            log::info!("security groups: enforcing on {}", describe(&ifaces));
            self.ifaces = ifaces;
            self.set_behind = true;
        }
        self.poll();
    }

    /// New queue number or on_daemon_down (a reload): the queue rules are
    /// written again.
    pub fn set_settings(&mut self, settings: TableSettings) {
        if settings != self.settings {
            self.settings = settings;
            self.xt_behind = true;
        }
        self.poll();
    }

    /// Reaps finished children and starts the next ones if a change
    /// waits. Never waits for a child.
    pub fn poll(&mut self) {
        self.running
            .retain_mut(|(child, what)| match child.try_wait() {
                Ok(None) => true,
                Ok(Some(status)) => {
                    if !status.success() {
                        log::error!(
                            "failed to {what} ({status}): {}; enforcement keeps the previous state",
                            stderr_of(child)
                        );
                    }
                    false
                }
                Err(e) => {
                    log::error!("waiting for the child that would {what}: {e}");
                    false
                }
            });
        if !self.running.is_empty() {
            return;
        }
        if std::mem::take(&mut self.set_behind) {
            self.start(
                "nft",
                &["-f", "-"],
                set_update(&self.ifaces),
                "update the set of covered interfaces",
            );
        }
        if std::mem::take(&mut self.xt_behind) {
            let text = xt_chain(self.settings);
            for (_, restore) in XT_FAMILIES {
                self.start(
                    restore,
                    &["--noflush"],
                    text.clone(),
                    "rewrite the queue rule",
                );
            }
        }
    }

    fn start(&mut self, tool: &str, args: &[&str], text: String, what: &'static str) {
        match spawn(tool, args, Some(&text)) {
            Ok(child) => self.running.push((child, what)),
            Err(e) => log::error!("cannot {what}: {e}"),
        }
    }

    /// Waits for running children (shutdown).
    pub fn finish(&mut self) {
        for (mut child, what) in self.running.drain(..) {
            if let Ok(status) = child.wait() {
                if !status.success() {
                    log::error!("failed to {what} ({status}): {}", stderr_of(&mut child));
                }
            }
        }
    }
}

fn describe(ifaces: &BTreeSet<String>) -> String {
    if ifaces.is_empty() {
        "no interface yet".to_owned()
    } else {
        format!("interfaces {}", quoted(ifaces))
    }
}

fn find_tool(name: &str) -> Option<PathBuf> {
    SBIN_DIRS
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

/// Starts `tool args` with `input` on its standard input. The text is a
/// few hundred bytes, far less than a pipe holds, so writing it never
/// waits.
fn spawn(tool: &str, args: &[&str], input: Option<&str>) -> Result<Child, String> {
    let path = find_tool(tool).ok_or_else(|| format!("{tool} not found in /usr/sbin or /sbin"))?;
    let mut command = child::minimal_command(&path);
    command
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only raw syscalls (capget, capset,
    // prctl) run, which are async-signal-safe; no allocation, no lock.
    unsafe {
        command.pre_exec(keep_net_admin_across_exec);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if let (Some(mut stdin), Some(text)) = (child.stdin.take(), input) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("writing to {tool}: {e}"))?;
    }
    Ok(child)
}

/// Runs `tool args` to its end.
fn run_wait(tool: &str, args: &[&str], input: Option<&str>) -> Result<(), String> {
    let mut child = spawn(tool, args, input)?;
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {tool}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    Err(format!(
        "{tool} {} failed: {}",
        args.join(" "),
        stderr_of(&mut child)
    ))
}

fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = io::Read::read_to_string(&mut e, &mut err);
    }
    err.trim().to_owned()
}

const CAP_NET_ADMIN: u32 = 12;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// In the child: CAP_NET_ADMIN, if permitted, made inheritable and
/// ambient, so `nft` (not root after the daemon dropped its privileges)
/// keeps it across exec. Failing is not an error here: `nft` then reports
/// that it may not change the ruleset, and the daemon logs that.
fn keep_net_admin_across_exec() -> io::Result<()> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data are valid for the kernel's v3 layout (two
    // CapData), and live across the calls.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return Ok(());
        }
        let bit = 1u32 << CAP_NET_ADMIN;
        if data[0].permitted & bit == 0 {
            return Ok(());
        }
        data[0].inheritable |= bit;
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
            return Ok(());
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            CAP_NET_ADMIN as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
    Ok(())
}

/// Whether this namespace has the nft table.
pub fn table_present() -> bool {
    run_wait("nft", &["list", "table", "inet", "flowlogd_sg"], None).is_ok()
}

/// Removes the table and the mangle chains with their jumps; `Ok(false)`
/// if there was none of them.
///
/// # Errors
/// A tool failing, worded for the operator.
pub fn remove_table() -> Result<bool, String> {
    let mut removed = false;
    if table_present() {
        run_wait(
            "nft",
            &["-f", "-"],
            Some(&format!("delete table {SG_TABLE}\n")),
        )?;
        removed = true;
    }
    for (tool, _) in XT_FAMILIES {
        if find_tool(tool).is_none()
            || run_wait(tool, &["-t", "mangle", "-n", "-L", XT_CHAIN], None).is_err()
        {
            continue;
        }
        for hook in ["PREROUTING", "POSTROUTING"] {
            // A jump inserted twice (by hand) goes too; bounded.
            for _ in 0..8 {
                if run_wait(tool, &["-t", "mangle", "-D", hook, "-j", XT_CHAIN], None).is_err() {
                    break;
                }
            }
        }
        run_wait(tool, &["-t", "mangle", "-F", XT_CHAIN], None)?;
        run_wait(tool, &["-t", "mangle", "-X", XT_CHAIN], None)?;
        removed = true;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_marks_new_connections_of_the_set_and_copies_a_verdicts_mark() {
        let ifaces: BTreeSet<String> = ["eth0".to_owned(), "eth1".to_owned()].into();
        let text = ruleset(&ifaces);
        assert!(
            text.contains("add element inet flowlogd_sg covered { \"eth0\", \"eth1\" }"),
            "{text}"
        );
        assert!(
            !text.contains("delete"),
            "the set keeps the previous run's interfaces"
        );
        assert!(text.contains("ct mark set meta mark meta mark set 0 accept"));
        assert!(text.contains("meta mark set meta mark | 0x40000000"));
        assert!(!ruleset(&BTreeSet::new()).contains("add element"));
    }

    #[test]
    fn the_queue_rule_bypasses_only_when_failing_open() {
        let open = xt_chain(TableSettings {
            queue: 7,
            bypass: true,
        });
        assert!(open.contains("--mark 0x40000000/0xc0000000"), "{open}");
        assert!(
            open.contains("-j NFQUEUE --queue-num 7 --queue-bypass"),
            "{open}"
        );
        let closed = xt_chain(TableSettings {
            queue: 7,
            bypass: false,
        });
        assert!(closed.contains("--queue-num 7\n") && !closed.contains("bypass"));
    }
}
