//! The capture loop's side of security-group enforcement (issue #16):
//! opening the table and the queue at start, the queue's handler, the set
//! of enforced interfaces following the registry, and reloads.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::closer::WindowCloser;
use super::error::RunError;
use super::state::Capture;
use crate::config::Config;
use crate::enforcement::{self, EnforcementQueue, Enforcer, SgTable};
use crate::eni::EniRegistry;
use crate::security_groups::Policy;

/// The queue, and the table that feeds it.
pub(super) struct Enforcement {
    pub(super) enforcer: Enforcer,
    pub(super) table: SgTable,
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
    let queue =
        EnforcementQueue::open(settings.queue, settings.bypass).map_err(|source| RunError::Io {
            what: "cannot open the security groups' NFQUEUE",
            source,
        })?;
    let table = SgTable::install(settings, BTreeSet::new()).map_err(|e| RunError::Io {
        what: "cannot install the security groups' nftables table",
        source: std::io::Error::other(e),
    })?;
    Ok(Some(Enforcement {
        enforcer: Enforcer::new(queue, Arc::new(policy)),
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
            if let Err(err) = e.enforcer.rebind(settings.queue, settings.bypass) {
                log::error!(
                    "reload: cannot move to NFQUEUE {}: {err}; keeping queue {}",
                    settings.queue,
                    e.enforcer.queue_number()
                );
            } else {
                e.table.set_settings(settings);
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
