//! What `check-config` says about the security groups: the effective rule
//! order of each ENI, as `decide` walks it.

use super::policy::Policy;
use crate::config::{Config, OnDaemonDown, SgEnis};

/// The lines `check-config` prints, unindented headings first.
pub fn check_config_lines(cfg: &Config) -> Vec<String> {
    let policy = Policy::from_config(cfg);
    if !policy.is_enabled() {
        return vec!["security groups: none (no connection is decided by flowlogd)".to_owned()];
    }
    let e = &cfg.enforcement;
    let down = match e.on_daemon_down {
        OnDaemonDown::Accept => "accepted (queue bypass: fail open)",
        OnDaemonDown::Drop => "dropped (fail closed)",
    };
    let mut out = vec![format!(
        "security groups: {} enforced through NFQUEUE {}; while the daemon is down new connections are {down}",
        cfg.security_groups.len(),
        e.queue
    )];
    // The [[eni]] ENIs, then ids only a group lists (the metadata
    // service's), then every other ENI if an "all" group covers them.
    let mut enis: Vec<&str> = cfg.enis.iter().map(|e| e.ids.eni_id.as_str()).collect();
    for g in &cfg.security_groups {
        if let SgEnis::List(ids) = &g.enis {
            for id in ids {
                if !enis.contains(&id.as_str()) {
                    enis.push(id);
                }
            }
        }
    }
    let header = "    prio policy direction protocol ports cidr rule";
    for eni in enis {
        let groups: Vec<&str> = cfg
            .security_groups
            .iter()
            .filter(|g| g.enis.contains(eni))
            .map(|g| g.id.as_str())
            .collect();
        if groups.is_empty() {
            out.push(format!("  {eni}: in no security group, not enforced"));
            continue;
        }
        out.push(format!(
            "  {eni} ({}), rules in the order they are tried:",
            groups.join(", ")
        ));
        out.push(header.to_owned());
        out.extend(
            policy
                .effective_rules(eni)
                .iter()
                .map(|r| format!("    {r}")),
        );
    }
    let all: Vec<&str> = cfg
        .security_groups
        .iter()
        .filter(|g| g.enis == SgEnis::All)
        .map(|g| g.id.as_str())
        .collect();
    if !all.is_empty() {
        out.push(format!(
            "  any other ENI, e.g. one the metadata service reports later ({}):",
            all.join(", ")
        ));
        out.push(header.to_owned());
        out.extend(
            policy
                .effective_rules_elsewhere()
                .iter()
                .map(|r| format!("    {r}")),
        );
    }
    out
}
