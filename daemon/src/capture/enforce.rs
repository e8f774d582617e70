//! The capture loop's side of security-group enforcement (issue #16):
//! opening the table and the queue at start, the queue's handler, the set
//! of enforced interfaces following the registry, and reloads.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::closer::WindowCloser;
use super::error::RunError;
use super::state::Capture;
use crate::config::Config;
use crate::enforcement::{self, EnforcementQueue, Enforcer, SgTable};
use crate::eni::EniRegistry;
use crate::flows::LossScope;
use crate::security_groups::Policy;

/// How often a busy queue's kernel counters are read (a file read in
/// /proc); a window's close always reads them.
const KERNEL_DROPS_CHECK: Duration = Duration::from_millis(500);

/// The queue, and the table that feeds it.
pub(super) struct Enforcement {
    pub(super) enforcer: Enforcer,
    pub(super) table: SgTable,
    /// The kernel's drops of this queue (full queue, full socket) seen so
    /// far, and when they were last read.
    kernel_drops_seen: u64,
    kernel_drops_read: Instant,
}

/// Packets the kernel dropped at this queue so far (it was full, or its
/// socket was): they got no verdict, so no REJECT record either.
fn kernel_drops(enforcer: &Enforcer) -> u64 {
    enforcer
        .queue_counters()
        .map_or(0, |k| k.queue_dropped + k.user_dropped)
}

/// Opens the queue and installs the table when the config has security
/// groups (with the start-up's privileges); says what a table left by a
/// run with security groups means when it has none.
///
/// # Errors
/// The queue cannot be bound or the table installed: the daemon does not
/// run half-enforcing.
pub(super) fn open(config: &Config) -> Result<Option<Enforcement>, RunError> {
    let policy = Policy::from_config(config);
    if !policy.is_enabled() {
        if enforcement::table_present() {
            log::warn!(
                "no [[security_group]] in the config, but table {} from an earlier run is in place: removing it",
                enforcement::SG_TABLE
            );
            if let Err(e) = enforcement::remove_table() {
                log::error!("{e}");
            }
        }
        return Ok(None);
    }
    let settings = enforcement::settings_of(config);
    // The queue first: with bypass off, a table without a reader would
    // drop every new connection.
    let queue = EnforcementQueue::open(settings.queue).map_err(|source| RunError::Io {
        what: "cannot open the security groups' NFQUEUE",
        source,
    })?;
    let table = SgTable::install(settings, BTreeSet::new()).map_err(|e| RunError::Io {
        what: "cannot install the security groups' nftables table",
        source: std::io::Error::other(e),
    })?;
    let enforcer = Enforcer::new(queue, Arc::new(policy));
    Ok(Some(Enforcement {
        kernel_drops_seen: kernel_drops(&enforcer),
        kernel_drops_read: Instant::now(),
        enforcer,
        table,
    }))
}

/// The interface names of the ENIs `policy` covers, as the registry knows
/// them now.
fn covered_interfaces(registry: &EniRegistry, policy: &Policy) -> BTreeSet<String> {
    registry
        .indices()
        .filter(|eni| policy.covers(&registry.ids(*eni).eni_id))
        .filter_map(|eni| registry.interface_name(eni).map(str::to_owned))
        .collect()
}

impl Capture {
    /// The queue is readable: decide and answer what waits.
    pub(super) fn drain_enforcement(&mut self, closer: &mut WindowCloser) {
        let Some(e) = &mut self.enforcement else {
            return;
        };
        let r = e.enforcer.drain(&self.registry, &mut self.table);
        let mut spills = closer.spills(&self.config, &self.dispatcher);
        spills.send(&mut self.table, &self.registry);
        self.flags.drain_pending |= r.more_pending;
        e.table.poll();
        if e.kernel_drops_read.elapsed() >= KERNEL_DROPS_CHECK {
            self.note_queue_drops();
        }
    }

    /// Packets the kernel dropped at the queue since the last look (a
    /// flood filled it faster than the loop answers) were dropped without
    /// a verdict and without a REJECT record: the windows of the covered
    /// ENIs are marked SKIPDATA, and it is logged. Called while the queue
    /// is busy and at each window's close, so drops land in the window
    /// they happened in or the next.
    pub(super) fn note_queue_drops(&mut self) {
        let Some(e) = &mut self.enforcement else {
            return;
        };
        e.kernel_drops_read = Instant::now();
        let now = kernel_drops(&e.enforcer);
        let new = now.saturating_sub(e.kernel_drops_seen);
        e.kernel_drops_seen = now;
        if new == 0 {
            return;
        }
        let policy = e.enforcer.policy();
        let covered: Vec<_> = self
            .registry
            .indices()
            .filter(|eni| policy.covers(&self.registry.ids(*eni).eni_id))
            .collect();
        for eni in &covered {
            self.table.mark_lost(LossScope::Eni(*eni));
        }
        log::warn!(
            "security groups: the kernel dropped {new} new-connection packets at NFQUEUE {} (queue or socket \
             full) before the daemon could decide them; they have no REJECT record, so this window is \
             SKIPDATA for the {} covered ENIs",
            e.enforcer.queue_number(),
            covered.len()
        );
    }

    /// After the registry changed (interfaces came or went, a reload): the
    /// table's set follows the covered ENIs' interfaces.
    pub(super) fn update_enforced_interfaces(&mut self) {
        let Some(e) = &mut self.enforcement else {
            return;
        };
        let ifaces = covered_interfaces(&self.registry, e.enforcer.policy());
        e.table.set_interfaces(ifaces);
    }

    /// A reload took: the new policy decides new connections at once
    /// (established ones keep their conntrack mark); a new queue number
    /// or on_daemon_down rewrites the table; no security groups any more
    /// removes it. Security groups added by a reload to a config that had
    /// none take effect at the next restart (the queue is opened with the
    /// start-up's privileges and sockets).
    pub(super) fn reload_enforcement(&mut self) {
        let policy = Policy::from_config(&self.config);
        let Some(e) = &mut self.enforcement else {
            if policy.is_enabled() {
                log::warn!(
                    "reload: [[security_group]] added; enforcement starts at the next restart"
                );
            }
            return;
        };
        if !policy.is_enabled() {
            e.table.finish();
            match enforcement::remove_table() {
                Ok(_) => log::warn!(
                    "reload: no [[security_group]] any more: removed table {} and stopped enforcing (new \
                     connections pass unqueued)",
                    enforcement::SG_TABLE
                ),
                Err(err) => log::error!("reload: no [[security_group]] any more, but {err}"),
            }
            self.enforcement = None;
            return;
        }
        let settings = enforcement::settings_of(&self.config);
        if settings != e.table.settings() {
            if let Err(err) = e.enforcer.rebind(settings.queue) {
                log::error!(
                    "reload: cannot move to NFQUEUE {}: {err}; keeping queue {}",
                    settings.queue,
                    e.enforcer.queue_number()
                );
            } else {
                e.table.set_settings(settings);
                // Another queue's counters from here on.
                e.kernel_drops_seen = kernel_drops(&e.enforcer);
            }
        }
        e.enforcer.set_policy(Arc::new(policy));
        self.update_enforced_interfaces();
        log::info!(
            "reload: security groups replaced; new connections are decided by the new rules"
        );
    }

    /// Shutdown: the table stays (on_daemon_down governs until the next
    /// start); a pending set update is finished first.
    pub(super) fn leave_enforcement(&mut self) {
        if let Some(e) = &mut self.enforcement {
            e.table.finish();
            log::info!(
                "left nftables table {} in place: while no daemon reads NFQUEUE {}, new connections on covered ENIs {}",
                enforcement::SG_TABLE,
                e.enforcer.queue_number(),
                if e.table.settings().bypass { "pass (on_daemon_down = \"accept\")" } else { "are dropped (on_daemon_down = \"drop\")" }
            );
        }
    }
}
