//! The names of the security groups' conntrack marks, for ACCEPT records:
//! learnt from each config (start, reload), remembered in `state_dir`
//! across restarts (a connection outlives the run that let it in), and
//! handed to the flow table, which asks them only for marks with
//! `MARK_FLAG`.

use super::state::Capture;
use crate::security_groups::{MarkNames, MARK_NAMES_FILE};

impl Capture {
    /// At start: the names of earlier runs, then this config's.
    pub(super) fn start_rule_names(&mut self) {
        let dir = &self.config.daemon.state_dir;
        self.mark_names = MarkNames::load(dir).unwrap_or_else(|e| {
            log::warn!(
                "{}: {e}; ACCEPT records of connections let in by rules of earlier runs carry no rule",
                dir.join(MARK_NAMES_FILE).display()
            );
            MarkNames::default()
        });
        self.learn_rule_names();
    }

    /// The config's rules join the names known (after a reload that took:
    /// the removed rules' names stay, for the connections they let in).
    /// The policy is the enforcer's (built once per start or reload):
    /// without enforcement no connection gets a new mark to name.
    pub(super) fn learn_rule_names(&mut self) {
        if let Some(e) = &self.enforcement {
            self.mark_names.learn(e.enforcer.policy());
            let dir = &self.config.daemon.state_dir;
            if let Err(e) = self.mark_names.save(dir) {
                log::warn!(
                    "cannot save the security groups' rule names: {e}; after a restart, connections let in by \
                     rules no longer configured carry no rule"
                );
            }
        }
        let names = self.mark_names.clone();
        self.table.set_rule_names(move |mark| names.name_of(mark));
    }
}
