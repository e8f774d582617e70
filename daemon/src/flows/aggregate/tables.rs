//! A window's sums, in one table per kind of key: plain IPv4 and IPv6
//! records, and records of NATed connections, which carry the packet's
//! addresses on the other side of NAT as part of their key.
//!
//! NATed records are apart so that the plain ones, nearly all of them on
//! most hosts, keep their small keys; a plain record's pkt-srcaddr and
//! pkt-dstaddr are its srcaddr and dstaddr. Connections whose ENI-side
//! tuple is the same but whose addresses behind NAT differ (or one NATed,
//! one not) therefore give one record each in a window, not one record
//! with wrong pkt-* addresses.
//!
//! Likewise a record whose key a sum of another rule already holds (two
//! connections on the same ports let through or dropped by different
//! rules in one window) goes to its own sum in `ruled`, keyed also by its
//! rule: each record's counts are exactly its rule's.

use std::collections::HashMap;
use std::net::IpAddr;

use super::keys::{AnyKey, KeyRest, Nat4Key, Nat6Key, RecordKey, RuledKey, SumKey, V4Key, V6Key};
use super::sum::{Addition, RecordSum};
use super::{map_bytes, mark, FlowTuple, RuleId, Rules, SumHasher};
use crate::eni::EniIndex;

pub(super) type Sums<K> = HashMap<K, RecordSum, SumHasher>;

#[derive(Default)]
pub(super) struct SumTables {
    pub(super) v4: Sums<V4Key>,
    pub(super) v6: Sums<V6Key>,
    pub(super) nat4: Sums<Nat4Key>,
    pub(super) nat6: Sums<Nat6Key>,
    pub(super) ruled: Sums<RuledKey>,
}

/// A key's table in [`SumTables`].
pub(super) trait InTables: RecordKey + Send + 'static {
    fn table(t: &SumTables) -> &Sums<Self>;
    fn table_mut(t: &mut SumTables) -> &mut Sums<Self>;
}

macro_rules! in_tables {
    ($key:ty, $field:ident) => {
        impl InTables for $key {
            fn table(t: &SumTables) -> &Sums<Self> {
                &t.$field
            }
            fn table_mut(t: &mut SumTables) -> &mut Sums<Self> {
                &mut t.$field
            }
        }
    };
}

in_tables!(V4Key, v4);
in_tables!(V6Key, v6);
in_tables!(Nat4Key, nat4);
in_tables!(Nat6Key, nat6);
in_tables!(RuledKey, ruled);

/// One sum as the drain needs it: key, tuple, the packet's addresses
/// behind NAT (`None`: the tuple's), sum.
pub(super) type SumItem = (KeyRest, FlowTuple, Option<(IpAddr, IpAddr)>, RecordSum);

/// A table being drained; dropping it frees the table.
pub(super) type SumIter = Box<dyn ExactSizeIterator<Item = SumItem> + Send>;

impl SumTables {
    /// Adds `a` to the sum of `key`, or, if both name a rule and the rules
    /// differ, to the sum of `key` under `a`'s rule in `ruled`; `false` if
    /// it reached its bound. Also returns that sum's (packets, bytes) now.
    /// Traffic without a rule joins the sum and takes its rule, as REJECT
    /// records of NFLOG groups without a prefix always have.
    #[must_use]
    pub(super) fn add<K: InTables>(&mut self, key: K, a: &Addition) -> (bool, (u64, u64)) {
        let unnamed = RuleId::default();
        match K::table(self).get(&key) {
            Some(sum) if a.rule != unnamed && sum.rule() != unnamed && sum.rule() != a.rule => {
                add_to(&mut self.ruled, RuledKey::of(&key, a.rule), a)
            }
            _ => add_to(K::table_mut(self), key, a),
        }
    }

    /// [`SumTables::add`] to the key's own table.
    #[must_use]
    pub(super) fn add_at_origin(&mut self, key: SumKey, a: &Addition) -> (bool, (u64, u64)) {
        match key {
            SumKey::Plain(AnyKey::V4(k)) => self.add(k, a),
            SumKey::Plain(AnyKey::V6(k)) => self.add(k, a),
            SumKey::Nat4(k) => self.add(k, a),
            SumKey::Nat6(k) => self.add(k, a),
        }
    }

    /// Adds `records`, whose rules are `from`'s and base `shift` seconds
    /// later, into these sums, whose rules are `rules`.
    fn merge_into<K: InTables>(
        &mut self,
        rules: &mut Rules,
        skipped: &mut Vec<bool>,
        records: Sums<K>,
        (from, shift): (&Rules, i64),
    ) {
        for (k, s) in records {
            let rule = rules.intern(from.get(s.rule()).as_ref());
            if !self
                .add_at_origin(k.origin(), &s.as_addition(rule, -shift))
                .0
            {
                mark(skipped, k.rest().eni);
            }
        }
    }

    /// [`SumTables::renumber`] for one table.
    fn renumber_in<K: InTables>(
        &mut self,
        skipped: &mut Vec<bool>,
        map: impl Fn(EniIndex) -> Option<EniIndex>,
    ) -> usize {
        let mut dropped = 0;
        for (k, s) in std::mem::take(K::table_mut(self)) {
            let Some(eni) = map(k.rest().eni) else {
                dropped += 1;
                continue;
            };
            let k = k.with_eni(eni);
            if !self
                .add_at_origin(k.origin(), &s.as_addition(s.rule(), 0))
                .0
            {
                mark(skipped, eni);
            }
        }
        dropped
    }

    pub(super) fn len(&self) -> usize {
        self.v4.len() + self.v6.len() + self.nat4.len() + self.nat6.len() + self.ruled.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes of the tables (see `map_bytes`).
    pub(super) fn bytes(&self) -> usize {
        map_bytes(&self.v4)
            + map_bytes(&self.v6)
            + map_bytes(&self.nat4)
            + map_bytes(&self.nat6)
            + map_bytes(&self.ruled)
    }

    /// Takes out the sums of the ENIs `held` says.
    pub(super) fn take_held(&mut self, held: &[bool]) -> SumTables {
        if !held.contains(&true) {
            return SumTables::default();
        }
        SumTables {
            v4: take_held(&mut self.v4, held),
            v6: take_held(&mut self.v6, held),
            nat4: take_held(&mut self.nat4, held),
            nat6: take_held(&mut self.nat6, held),
            ruled: take_held(&mut self.ruled, held),
        }
    }

    /// Adds `other`'s sums, whose rules are `from`'s and whose base is
    /// `shift` seconds after this one's, into these, whose rules are
    /// `rules` (a sum that reaches its bound marks its ENI in `skipped`).
    pub(super) fn merge(
        &mut self,
        rules: &mut Rules,
        skipped: &mut Vec<bool>,
        other: SumTables,
        (from, shift): (&Rules, i64),
    ) {
        let from = (from, shift);
        self.merge_into(rules, skipped, other.v4, from);
        self.merge_into(rules, skipped, other.v6, from);
        self.merge_into(rules, skipped, other.nat4, from);
        self.merge_into(rules, skipped, other.nat6, from);
        self.merge_into(rules, skipped, other.ruled, from);
    }

    /// The sums under their ENI's new index (`map`; two old ENIs may
    /// become one); returns how many had none and were dropped.
    pub(super) fn renumber(
        &mut self,
        skipped: &mut Vec<bool>,
        map: impl Fn(EniIndex) -> Option<EniIndex> + Copy,
    ) -> usize {
        self.renumber_in::<V4Key>(skipped, map)
            + self.renumber_in::<V6Key>(skipped, map)
            + self.renumber_in::<Nat4Key>(skipped, map)
            + self.renumber_in::<Nat6Key>(skipped, map)
            + self.renumber_in::<RuledKey>(skipped, map)
    }

    /// ENIs of the sums, with repeats.
    pub(super) fn enis(&self) -> impl Iterator<Item = EniIndex> + '_ {
        (self.v4.keys().map(|k| k.rest().eni))
            .chain(self.v6.keys().map(|k| k.rest().eni))
            .chain(self.nat4.keys().map(|k| k.rest().eni))
            .chain(self.nat6.keys().map(|k| k.rest().eni))
            .chain(self.ruled.keys().map(|k| k.rest().eni))
    }

    /// The tables to drain, empty ones left out.
    pub(super) fn into_iters(self) -> Vec<SumIter> {
        [
            iter_of(self.v4),
            iter_of(self.v6),
            iter_of(self.nat4),
            iter_of(self.nat6),
            iter_of(self.ruled),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

fn iter_of<K: InTables>(sums: Sums<K>) -> Option<SumIter> {
    if sums.is_empty() {
        return None;
    }
    let it = sums
        .into_iter()
        .map(|(k, s)| (k.rest(), k.tuple(), k.pkt(), s));
    Some(Box::new(it))
}

/// Adds `a` to the sum of `key`; `false` if it reached its bound. Also
/// returns the key's (packets, bytes) now.
#[must_use]
fn add_to<K: RecordKey>(sums: &mut Sums<K>, key: K, a: &Addition) -> (bool, (u64, u64)) {
    let sum = sums.entry(key).or_default();
    let whole = sum.add(a);
    (whole, sum.counts.get())
}

/// Takes the records of held ENIs out of `sums`.
fn take_held<K: RecordKey>(sums: &mut Sums<K>, held: &[bool]) -> Sums<K> {
    let mut out = Sums::default();
    sums.retain(|k, s| {
        if !held.get(k.rest().eni.get()).copied().unwrap_or(false) {
            return true;
        }
        out.insert(*k, *s);
        false
    });
    out
}
