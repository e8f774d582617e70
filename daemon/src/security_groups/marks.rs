//! The conntrack mark that names the rule which accepted a connection.

use std::sync::Arc;

/// Every mark flowlogd sets has this bit, so that marks other tools set
/// (without it) are never read as rule names.
pub const MARK_FLAG: u32 = 0x8000_0000;
/// The implicit egress accept of a basic security group. Configured rules
/// get even marks ([`mark_of`]), so the defaults' odd ones never collide.
pub const DEFAULT_EGRESS_ACCEPT_MARK: u32 = MARK_FLAG | 1;
/// The implicit ingress drop.
pub const DEFAULT_INGRESS_DROP_MARK: u32 = MARK_FLAG | 3;
/// The rule name of both defaults, in records.
pub const DEFAULT_RULE_NAME: &str = "default";

/// [`DEFAULT_RULE_NAME`] as the one `Arc` every default decision and
/// record shares: a default is decided per new connection and named per
/// harvested one, so it must not allocate each time.
pub fn default_rule_name() -> Arc<str> {
    static NAME: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    Arc::clone(NAME.get_or_init(|| Arc::from(DEFAULT_RULE_NAME)))
}

/// The deciding rule, as the conntrack mark that carries it and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleMark {
    pub mark: u32,
    /// `sg-web:allow-ssh`, or `default`.
    pub name: Arc<str>,
}

impl RuleMark {
    /// The mark of the configured rule `name` (`sg-id:rule-id`).
    pub fn of_rule(name: &str) -> RuleMark {
        RuleMark {
            mark: mark_of(name),
            name: name.into(),
        }
    }
}

/// The mark of rule `name`: a hash of the name, so that it is the same in
/// every run and after every reload without any state (a restart keeps
/// the marks of connections alive in the kernel meaningful). FNV-1a, fixed
/// here, because std's hashers may change between Rust releases. The low
/// bit is cleared (odd marks are the defaults'); collisions among the
/// configured rules are refused by config validation.
pub fn mark_of(name: &str) -> u32 {
    const FNV_OFFSET: u32 = 0x811c_9dc5;
    const FNV_PRIME: u32 = 0x0100_0193;
    let hash = name.bytes().fold(FNV_OFFSET, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(FNV_PRIME)
    });
    MARK_FLAG | (hash & 0x7fff_fffe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_fixed_values() {
        // Pinned: a changed hash would rename every connection alive
        // across an upgrade.
        assert_eq!(mark_of(""), MARK_FLAG | (0x811c_9dc5 & 0x7fff_fffe));
        assert_eq!(mark_of("sg-web:allow-ssh"), mark_of("sg-web:allow-ssh"));
        assert_ne!(mark_of("sg-web:allow-ssh"), mark_of("sg-web:allow-sshx"));
        assert_eq!(mark_of("a"), 0xe40c_292c);
        assert_eq!(mark_of("a") & 1, 0);
        assert_ne!(mark_of("a") & MARK_FLAG, 0);
    }
}
