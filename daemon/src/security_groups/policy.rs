//! The rules of every ENI, in decision order, and the decision itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use flowlogd_plugin_api::Direction;

use super::cidr::Cidr;
use super::marks::{
    default_rule_name, RuleMark, DEFAULT_EGRESS_ACCEPT_MARK, DEFAULT_INGRESS_DROP_MARK,
};
use crate::config::{direction_name, Config, RuleAction, SgEnis, SgProtocol};

/// The first packet of a new connection, as seen on an enforced ENI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirstPacket {
    /// `In` = ingress (arriving on the ENI), `Out` = egress.
    pub direction: Direction,
    /// IANA protocol number.
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// 0 for protocols without ports.
    pub src_port: u16,
    pub dst_port: u16,
}

/// What to do with a new connection, and the rule that said so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub accept: bool,
    pub rule: RuleMark,
}

/// One line of an ENI's effective rule order (for `check-config`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleView {
    /// `None` for the two defaults, which come after every rule.
    pub priority: Option<u8>,
    pub policy: RuleAction,
    pub direction: Direction,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `all`.
    pub protocol: &'static str,
    /// `22/22`, `-1/-1`.
    pub port_range: String,
    /// The peer network; `any` for the defaults.
    pub cidr: String,
    pub rule: RuleMark,
}

impl std::fmt::Display for RuleView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let priority = self
            .priority
            .map_or_else(|| "-".to_owned(), |p| p.to_string());
        write!(
            f,
            "{priority:>3} {:<6} {:<7} {:<6} {:<11} {:<18} {}",
            self.policy.as_str(),
            direction_name(self.direction),
            self.protocol,
            self.port_range,
            self.cidr,
            self.rule.name
        )
    }
}

#[derive(Clone, Debug)]
struct Rule {
    direction: Direction,
    action: RuleAction,
    priority: u8,
    protocol: SgProtocol,
    ports: Option<(u16, u16)>,
    cidr: Cidr,
    mark: RuleMark,
}

impl Rule {
    fn matches(&self, p: &FirstPacket) -> bool {
        let peer = match p.direction {
            Direction::In => p.src,
            Direction::Out => p.dst,
        };
        self.direction == p.direction
            && self.protocol.matches(p.protocol)
            && self
                .ports
                .is_none_or(|(lo, hi)| (lo..=hi).contains(&p.dst_port))
            && self.cidr.contains(peer)
    }
}

/// The security groups of a config, ready to decide.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Rules of the ENIs some group lists by id (with those of the
    /// `"all"` groups), in decision order.
    listed: HashMap<String, Arc<[Rule]>>,
    /// Rules of every other ENI: those of the `"all"` groups, if any.
    everyone: Option<Arc<[Rule]>>,
    /// Every configured rule's mark, in file order.
    marks: Vec<RuleMark>,
}

fn default_ingress() -> RuleMark {
    RuleMark {
        mark: DEFAULT_INGRESS_DROP_MARK,
        name: default_rule_name(),
    }
}

fn default_egress() -> RuleMark {
    RuleMark {
        mark: DEFAULT_EGRESS_ACCEPT_MARK,
        name: default_rule_name(),
    }
}

impl Policy {
    pub fn from_config(cfg: &Config) -> Policy {
        // (group index, rule index, rule): the position breaks ties.
        let mut all_rules: Vec<(usize, usize, Rule)> = Vec::new();
        let mut marks = Vec::new();
        for (gi, g) in cfg.security_groups.iter().enumerate() {
            for (ri, r) in g.rules.iter().enumerate() {
                let mark = RuleMark::of_rule(&format!("{}:{}", g.id, r.id));
                marks.push(mark.clone());
                all_rules.push((
                    gi,
                    ri,
                    Rule {
                        direction: r.direction,
                        action: r.policy,
                        priority: r.priority,
                        protocol: r.protocol,
                        ports: r.ports,
                        cidr: r.cidr,
                        mark,
                    },
                ));
            }
        }
        let ordered = |in_group: &dyn Fn(&SgEnis) -> bool| -> Arc<[Rule]> {
            let mut rules: Vec<&(usize, usize, Rule)> = all_rules
                .iter()
                .filter(|(gi, _, _)| in_group(&cfg.security_groups[*gi].enis))
                .collect();
            // Lowest priority number first; at equal priority drop before
            // accept; then the file's order (groups, then rules).
            rules.sort_by_key(|(gi, ri, r)| (r.priority, r.action == RuleAction::Accept, *gi, *ri));
            rules.into_iter().map(|(_, _, r)| r.clone()).collect()
        };
        let mut listed = HashMap::new();
        for g in &cfg.security_groups {
            if let SgEnis::List(ids) = &g.enis {
                for id in ids {
                    if !listed.contains_key(id) {
                        listed.insert(id.clone(), ordered(&|e: &SgEnis| e.contains(id)));
                    }
                }
            }
        }
        let everyone = cfg
            .security_groups
            .iter()
            .any(|g| g.enis == SgEnis::All)
            .then(|| ordered(&|e: &SgEnis| *e == SgEnis::All));
        Policy {
            listed,
            everyone,
            marks,
        }
    }

    /// Whether any `[[security_group]]` is configured.
    pub fn is_enabled(&self) -> bool {
        !self.listed.is_empty() || self.everyone.is_some()
    }

    /// Whether the ENI is in some group, i.e. its new connections are
    /// decided here.
    pub fn covers(&self, eni_id: &str) -> bool {
        self.rules_of(eni_id).is_some()
    }

    fn rules_of(&self, eni_id: &str) -> Option<&Arc<[Rule]>> {
        self.listed.get(eni_id).or(self.everyone.as_ref())
    }

    /// The verdict on a new connection's first packet on ENI `eni_id`.
    /// The first matching rule in decision order decides; none: ingress
    /// drop, egress accept (`default`). An ENI the policy does not cover
    /// is not enforced: accepted as `default` (a packet queued just before
    /// a reload took the ENI out of every group).
    pub fn decide(&self, eni_id: &str, p: &FirstPacket) -> Decision {
        let Some(rules) = self.rules_of(eni_id) else {
            return Decision {
                accept: true,
                rule: default_egress(),
            };
        };
        match rules.iter().find(|r| r.matches(p)) {
            Some(r) => Decision {
                accept: r.action == RuleAction::Accept,
                rule: r.mark.clone(),
            },
            None => match p.direction {
                Direction::In => Decision {
                    accept: false,
                    rule: default_ingress(),
                },
                Direction::Out => Decision {
                    accept: true,
                    rule: default_egress(),
                },
            },
        }
    }

    /// The rules of ENI `eni_id` in the order they are tried, then the two
    /// defaults; empty for an ENI the policy does not cover.
    pub fn effective_rules(&self, eni_id: &str) -> Vec<RuleView> {
        views(self.rules_of(eni_id))
    }

    /// The rules of an ENI no group lists by id (one the metadata service
    /// reports later, say): those of the `"all"` groups; empty if there
    /// are none.
    pub fn effective_rules_elsewhere(&self) -> Vec<RuleView> {
        views(self.everyone.as_ref())
    }

    /// Every configured rule's mark and name, in file order (the defaults
    /// are not among them).
    pub fn rule_marks(&self) -> &[RuleMark] {
        &self.marks
    }
}

/// `rules` as check-config shows them, then the two defaults.
fn views(rules: Option<&Arc<[Rule]>>) -> Vec<RuleView> {
    let Some(rules) = rules else {
        return Vec::new();
    };
    let mut out: Vec<RuleView> = rules
        .iter()
        .map(|r| RuleView {
            priority: Some(r.priority),
            policy: r.action,
            direction: r.direction,
            protocol: r.protocol.as_str(),
            port_range: match r.ports {
                Some((lo, hi)) => format!("{lo}/{hi}"),
                None => "-1/-1".to_owned(),
            },
            cidr: r.cidr.to_string(),
            rule: r.mark.clone(),
        })
        .collect();
    for (direction, policy, rule) in [
        (Direction::In, RuleAction::Drop, default_ingress()),
        (Direction::Out, RuleAction::Accept, default_egress()),
    ] {
        out.push(RuleView {
            priority: None,
            policy,
            direction,
            protocol: "all",
            port_range: "-1/-1".to_owned(),
            cidr: "any".to_owned(),
            rule,
        });
    }
    out
}
