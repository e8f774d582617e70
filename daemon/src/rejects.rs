//! REJECT records: turning packets that firewall drop rules logged through
//! NFLOG into flow table entries. Dropped packets never confirm a conntrack
//! entry, so this is the only place they are seen.

use std::collections::HashMap;
use std::sync::Arc;

use flowlogd_plugin_api::Direction;

use crate::eni::EniRegistry;
use crate::flows::{Clock, FlowTable, LossScope};
use crate::model::LoggedPacket;
use crate::packet;

/// What happened to logged packets that gave no record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectStats {
    /// The prefix is not `flowlogd:<security-group>:<rule>` (another tool's
    /// log rule on the same group) and prefixes are required.
    pub foreign_prefix: u64,
    /// Neither indev nor outdev is a configured ENI (loopback, an
    /// interface nobody configured).
    pub not_on_an_eni: u64,
    /// The copied headers could not be read; the ENI's window is SKIPDATA.
    pub bad_headers: u64,
}

/// Turns logged packets into REJECT records.
pub struct RejectCapture {
    require_prefix: bool,
    /// Rule names by prefix, so a packet costs no allocation once its
    /// rule has been seen.
    rules: HashMap<Box<[u8]>, Option<Arc<str>>>,
    /// The last prefix seen and its rule: drops come in runs of one rule,
    /// and a byte comparison is cheaper than hashing the prefix again. (An
    /// empty prefix names no rule, which is where this starts.)
    last_prefix: Vec<u8>,
    last_rule: Option<Arc<str>>,
    stats: RejectStats,
}

/// Bound on distinct prefixes remembered: prefixes come from the operator's
/// ruleset, a few dozen; beyond this they are looked up without caching.
const MAX_CACHED_PREFIXES: usize = 4096;

impl RejectCapture {
    pub fn new(require_prefix: bool) -> RejectCapture {
        RejectCapture {
            require_prefix,
            rules: HashMap::new(),
            last_prefix: Vec::new(),
            last_rule: None,
            stats: RejectStats::default(),
        }
    }

    pub fn stats(&self) -> RejectStats {
        self.stats
    }

    /// Makes `last_rule` the rule named by `prefix` (`None`: not a
    /// flowlogd prefix).
    fn look_up_rule(&mut self, prefix: &[u8]) {
        if self.last_prefix == prefix {
            return;
        }
        self.last_rule = match self.rules.get(prefix) {
            Some(rule) => rule.clone(),
            None => {
                let rule = std::str::from_utf8(prefix)
                    .ok()
                    .and_then(packet::rule_of_prefix)
                    .map(Arc::from);
                if self.rules.len() < MAX_CACHED_PREFIXES {
                    self.rules.insert(prefix.into(), rule.clone());
                }
                rule
            }
        };
        self.last_prefix.clear();
        self.last_prefix.extend_from_slice(prefix);
    }

    /// One logged packet: arriving on an ENI (indev) it is an `in` record of
    /// that ENI, leaving by one (outdev) an `out` record. A packet with
    /// both (a forwarded packet) arrived on indev and never left, so it is
    /// `in` on indev's ENI.
    pub fn on_packet<C: Clock>(
        &mut self,
        registry: &EniRegistry,
        table: &mut FlowTable<C>,
        p: &LoggedPacket<'_>,
    ) {
        self.look_up_rule(p.prefix);
        let rule = self.last_rule.as_ref();
        if rule.is_none() && self.require_prefix {
            self.stats.foreign_prefix += 1;
            return;
        }
        let on_eni = match (p.indev, p.outdev) {
            (Some(i), _) => registry.by_ifindex(i).map(|e| (e, Direction::In)),
            (None, Some(o)) => registry.by_ifindex(o).map(|e| (e, Direction::Out)),
            (None, None) => None,
        };
        let Some((eni, direction)) = on_eni else {
            self.stats.not_on_an_eni += 1;
            return;
        };
        let headers = match packet::parse(p.payload) {
            Ok(h) => h,
            Err(e) => {
                self.stats.bad_headers += 1;
                log::debug!(
                    "nflog: unreadable packet on ENI {}: {e}",
                    registry.ids(eni).eni_id
                );
                table.mark_lost(LossScope::Eni(eni));
                return;
            }
        };
        table.add_reject_at(
            p.timestamp,
            eni,
            direction,
            headers.tuple(),
            1,
            headers.ip_len,
            rule,
            // The dropped packet's own flags: exact, and free (the copy
            // holds its TCP header); records show them only while
            // tcp-flags is captured.
            headers.aws_tcp_flags(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_follows_every_change_of_prefix() {
        let mut r = RejectCapture::new(true);
        for (prefix, rule) in [
            ("flowlogd:sg-1:ssh", Some("sg-1:ssh")),
            ("flowlogd:sg-1:ssh", Some("sg-1:ssh")),
            ("flowlogd:sg-1:rdp ", Some("sg-1:rdp")),
            ("other-tool: ", None),
            ("flowlogd:sg-1:ssh", Some("sg-1:ssh")),
            ("", None),
            ("flowlogd:sg-1:rdp ", Some("sg-1:rdp")),
        ] {
            r.look_up_rule(prefix.as_bytes());
            assert_eq!(r.last_rule.as_deref(), rule, "{prefix:?}");
        }
        // Each distinct prefix was parsed and kept once.
        assert_eq!(r.rules.len(), 4);
    }
}
