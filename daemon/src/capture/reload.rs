//! SIGHUP: the config is read again and governs what is emitted from then
//! on, while the open window, the flow table and every connection's
//! attributed counters carry over: no early close, no short window, nothing
//! lost or counted twice. A config that does not validate, or whose sinks
//! do not start, is refused and the daemon carries on with the old one.
//!
//! SIGUSR1 only reopens the sinks' outputs (logrotate); a reload does that
//! too, for the sinks it keeps running.

use super::build::{self, ConfigState};
use super::closer::WindowCloser;
use super::state::Capture;
use crate::config::{Config, MetadataSource};
use crate::eni::EniRegistry;
use crate::flows::{Clock, LossScope, SystemClock};

impl Capture {
    /// SIGUSR1 (and SIGHUP): the sinks reopen their outputs after what is
    /// queued, e.g. a file that logrotate moved away.
    pub(super) fn reopen_outputs(&self, why: &str) {
        log::info!("{why}: sinks reopen their outputs");
        self.dispatcher
            .flush_all(flowlogd_plugin_api::abi::FLUSH_REOPEN);
    }

    pub(super) fn reload(&mut self, closer: &mut WindowCloser) {
        log::info!("SIGHUP: reloading {}", self.config.path.display());
        // The loader refuses what start-up refuses, an empty or cut-short
        // file (a rewrite in place caught midway) among them, and reads
        // without blocking on a FIFO or reading without bound.
        let new = match crate::config::load(&self.config.path) {
            Ok(c) => c,
            Err(e) => return self.refuse_reload(&e.to_string()),
        };
        let state = match ConfigState::new(&new) {
            Ok(s) => s,
            Err(e) => return self.refuse_reload(&e.to_string()),
        };
        self.warn_restart_only_changes(&new);
        // What a running close owes, and a closed window still going out,
        // are emitted under the config they were captured under; queued
        // events are counted with the ENIs they happened on.
        closer.finish_running_dump(self);
        closer.emit_chunks(self, true);
        self.drain_conntrack(closer);
        self.drain_nflog(closer);
        let sinks = match self.swap_sinks(&new) {
            Ok(s) => s,
            Err(e) => return self.refuse_reload(&e.to_string()),
        };
        let old_registry = self.replace_registry(&new, state.registry);
        self.apply_limits(&new);
        if let Some((_, rejects)) = &mut self.nflog {
            *rejects = state.rejects;
        }
        self.config = new;
        self.config_loaded_unix = SystemClock.now_unix();
        self.restart_metadata_if_changed();
        self.reload_enforcement();
        self.learn_rule_names();
        self.reload_dump(closer, &old_registry);
        self.reopen_outputs("SIGHUP");
        let followed = self.table.stats().entries;
        log::info!(
            "reloaded: {} ENIs, {} flow logs, {} sinks ({} kept running{}); the open window {}-{} goes on, its sums \
             and {} live connections carried over",
            self.config.enis.len(),
            self.config.flow_logs.len(),
            self.config.sinks.len(),
            sinks.kept.len(),
            if sinks.restarted.is_empty() {
                String::new()
            } else {
                format!(", started {}", sinks.restarted.join(", "))
            },
            self.table.window_start(),
            self.table.next_deadline(),
            followed
        );
    }

    /// The reload is refused: everything runs on as it did.
    fn refuse_reload(&self, why: &str) {
        log::error!("reload refused, keeping the running config: {why}");
        self.reopen_outputs("SIGHUP");
    }

    fn warn_restart_only_changes(&self, new: &Config) {
        // The server thread keeps the socket it bound at start.
        if new.metrics_listen != self.config.metrics_listen {
            log::warn!("reload: a change of metrics.listen takes effect at the next restart");
        }
        // The rules and the bound group are set up at start with the
        // sockets; records say tcp-flags is unknown while it is not captured.
        if new.tcp_flags_group() != self.config.tcp_flags_group() {
            log::warn!(
                "reload: tcp-flags capture (a sink's field list naming tcp-flags, daemon.tcp_flags_nflog_group) \
                 changes at the next restart"
            );
        }
        let (old, new) = (&self.config.daemon, &new.daemon);
        for (what, changed) in [
            ("daemon.nflog_groups", new.nflog_groups != old.nflog_groups),
            (
                "daemon.install_tracking_table",
                new.install_tracking_table != old.install_tracking_table,
            ),
            (
                "daemon.conntrack_rcvbuf_bytes",
                new.conntrack_rcvbuf_bytes != old.conntrack_rcvbuf_bytes,
            ),
            (
                "daemon.conntrack_reliable_events",
                new.conntrack_reliable_events != old.conntrack_reliable_events,
            ),
            // The daemon is that user already, without the privilege to
            // become another.
            ("daemon.user", new.user != old.user),
            // The open window's sums are sized for the bound they grew
            // under; a new bound starts with a new table.
            (
                "daemon.window_memory_bytes",
                new.window_memory_bytes != old.window_memory_bytes,
            ),
        ] {
            if changed {
                log::warn!("reload: a change of {what} takes effect at the next restart");
            }
        }
    }

    /// Puts the new config's registry in place, with the interfaces as they
    /// are now, and renumbers the table's ENIs for it. Returns the old one.
    fn replace_registry(&mut self, new: &Config, mut registry: EniRegistry) -> EniRegistry {
        let now = SystemClock.now_unix();
        // The same service: what it said still holds, so ENIs it described
        // are not left waiting for it again.
        if let (Some(snapshot), MetadataSource::Ecs(ecs)) =
            (self.registry.metadata_snapshot(), &new.metadata)
        {
            if self
                .metadata
                .as_ref()
                .is_some_and(|w| w.config().base_url == ecs.base_url)
            {
                registry.adopt_snapshot(snapshot.clone());
            }
        }
        if let Err(e) = build::learn_interfaces(&mut registry, &mut self.route, now) {
            log::error!("reload: cannot list interfaces: {e}; they are learnt from events")
        }
        let counterparts = self.registry.counterparts_in(&registry);
        for (eni, to) in self.registry.indices().zip(&counterparts) {
            if to.is_none() {
                log::warn!(
                    "reload: ENI {} is not in the new config; what it carried in the open window is not emitted",
                    self.registry.ids(eni).eni_id
                );
            }
        }
        let r = self.table.renumber_enis(&counterparts);
        if r.sums_dropped > 0 || r.flows_detached > 0 {
            log::warn!(
                "reload: {} sums of the open window dropped and {} connections no longer followed, with ENIs \
                 the new config does not have",
                r.sums_dropped,
                r.flows_detached
            );
        }
        std::mem::replace(&mut self.registry, registry)
    }

    /// A new window length applies from the next window on (the open one
    /// keeps its bounds); a new `max_flows` at once.
    fn apply_limits(&mut self, new: &Config) {
        let (old, new) = (&self.config.daemon, &new.daemon);
        if new.capture_window_secs != old.capture_window_secs {
            log::info!(
                "reload: capture_window_secs {} -> {}: the open window keeps its end ({}), the next ones are {} s",
                old.capture_window_secs,
                new.capture_window_secs,
                self.table.next_deadline(),
                new.capture_window_secs
            );
        }
        if new.max_flows != old.max_flows {
            log::info!(
                "reload: max_flows {} -> {} ({} tracked now; none is dropped, new ones are refused while at the \
                 bound)",
                old.max_flows,
                new.max_flows,
                self.table.stats().entries
            );
        }
        self.table
            .set_limits(new.capture_window_secs, new.max_flows);
    }

    fn restart_metadata_if_changed(&mut self) {
        match &self.config.metadata {
            MetadataSource::Static => self.metadata = None,
            MetadataSource::Ecs(ecs) => {
                let same = self.metadata.as_ref().is_some_and(|w| {
                    w.config().base_url == ecs.base_url && w.config().ttl_secs == ecs.ttl_secs
                });
                if same {
                    self.after_registry_change();
                } else {
                    // Dropping the old handle ends its thread.
                    let ecs = ecs.clone();
                    self.start_metadata(&ecs);
                }
            }
        }
    }

    /// Reads the table with the new registry: connections that become ours
    /// (an ENI or address the old config did not capture) are baselined,
    /// the rest harvested into the open window.
    fn reload_dump(&mut self, closer: &mut WindowCloser, old: &EniRegistry) {
        let (table, registry, notify) = (&mut self.table, &self.registry, &mut self.notify);
        table.begin_dump();
        let result = self.dumper.dump(|entry| {
            table.on_reload_dump_entry(old, registry, &entry);
            notify.feed_watchdog_amid_work();
        });
        // Not judged for lost connections: it is not a window's dump.
        self.table.end_dump(false);
        match result {
            Ok(s) => self.stats.dump_parse_errors += s.parse_errors,
            Err(e) => {
                // Without a baseline, new connections are counted in full at
                // the next dump: say so rather than risk it silently.
                log::error!("reload: conntrack dump failed: {e}");
                self.table.mark_lost(LossScope::All);
            }
        }
        // DESTROY events the dump caused or raced with.
        self.drain_conntrack(closer);
    }
}
