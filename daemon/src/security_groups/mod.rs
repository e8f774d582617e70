//! Security groups: the configured rules as a [`Policy`] that decides the
//! first packet of each new connection, and the conntrack marks that carry
//! the deciding rule into the connection ([`RuleMark`], [`MarkNames`]).
//! The nftables table and the NFQUEUE that ask for decisions are not here.

mod cidr;
mod mark_names;
mod marks;
mod policy;
mod report;

pub use cidr::{Cidr, CidrError};
pub use mark_names::{MarkNames, MarkNamesError, MARK_NAMES_FILE, MAX_REMEMBERED_NAMES};
pub use marks::{
    mark_of, RuleMark, DEFAULT_EGRESS_ACCEPT_MARK, DEFAULT_INGRESS_DROP_MARK, DEFAULT_RULE_NAME,
    MARK_FLAG,
};
pub use policy::{Decision, FirstPacket, Policy, RuleView};
pub use report::check_config_lines;

#[cfg(test)]
mod tests;
