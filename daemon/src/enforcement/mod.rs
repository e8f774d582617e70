//! Security groups enforced through NFQUEUE (issue #16): the daemon's own
//! nftables table `inet flowlogd_sg` sends the first packet of each new
//! connection on a covered ENI to a queue; the loop reads it, asks the
//! [`Policy`](crate::security_groups::Policy) and answers.
//!
//! `table` is the nftables side (install, the ENI interface set, removal),
//! `queue` the NFQUEUE socket, `verdict` the decision per packet and the
//! batch of verdicts per read.

mod queue;
mod table;
mod verdict;

pub use queue::{EnforcementQueue, QueueCounters};
pub use table::{remove_table, table_present, SgTable, TableSettings, SG_TABLE};
pub use verdict::{DrainResult, Enforcer, VerdictStats};

/// The queue rule's settings from `[enforcement]`.
pub fn settings_of(config: &crate::config::Config) -> TableSettings {
    TableSettings {
        queue: config.enforcement.queue,
        bypass: config.enforcement.on_daemon_down == crate::config::OnDaemonDown::Accept,
    }
}
