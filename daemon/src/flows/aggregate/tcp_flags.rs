//! TCP flags of accepted packets (from the `tcpflags` NFLOG group), kept
//! beside the window's sums until the sums go out. They come per packet,
//! while the connection's counters come from conntrack later (at its
//! DESTROY or the close's dump), so the flags cannot be added to a sum
//! when they arrive: they wait here under the key of the record they
//! belong to, and are OR-ed into that record's sum when the sums are
//! emitted (early, or at the close).

use std::collections::HashMap;

use super::keys::{AnyKey, RecordKey, V4Key, V6Key};
use super::tables::{SumTables, Sums};
use super::{map_bytes, map_bytes_growing, SumHasher};
use crate::eni::EniIndex;

/// Flags waiting for their ACCEPT sums, per record key.
#[derive(Default)]
pub(super) struct PendingTcpFlags {
    v4: HashMap<V4Key, u8, SumHasher>,
    v6: HashMap<V6Key, u8, SumHasher>,
}

impl PendingTcpFlags {
    /// Heap bytes now, counted like the sums' (see `map_bytes`).
    pub(super) fn bytes(&self) -> usize {
        map_bytes(&self.v4) + map_bytes(&self.v6)
    }

    /// Heap bytes while one more key is added, if the map it goes to has
    /// to grow for it (both tables allocated during the rehash); `None` if
    /// it fits without growing.
    pub(super) fn bytes_growing_for(&self, key: &AnyKey) -> Option<usize> {
        match key {
            AnyKey::V4(k) if !self.v4.contains_key(k) => {
                map_bytes_growing(&self.v4).map(|g| g + map_bytes(&self.v6))
            }
            AnyKey::V6(k) if !self.v6.contains_key(k) => {
                map_bytes_growing(&self.v6).map(|g| g + map_bytes(&self.v4))
            }
            _ => None,
        }
    }

    pub(super) fn add(&mut self, key: AnyKey, flags: u8) {
        match key {
            AnyKey::V4(k) => *self.v4.entry(k).or_default() |= flags,
            AnyKey::V6(k) => *self.v6.entry(k).or_default() |= flags,
        }
    }

    /// Keys waiting.
    pub(super) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// ORs the flags into the sums of their keys (the plain record and any
    /// NATed or other-rule ones of the same ENI-side key) and forgets the flags that
    /// found one: those sums are about to be emitted, and flags seen later
    /// go with the record the connection's later counters make.
    pub(super) fn apply_to(&mut self, sums: &mut SumTables) {
        if self.len() == 0 {
            return;
        }
        let mut used = Vec::new();
        self.apply_to_nat(&mut sums.nat4, &mut used);
        self.apply_to_nat(&mut sums.nat6, &mut used);
        self.apply_to_nat(&mut sums.ruled, &mut used);
        self.v4.retain(|k, flags| match sums.v4.get_mut(k) {
            Some(sum) => {
                sum.or_tcp_flags(*flags);
                false
            }
            None => true,
        });
        self.v6.retain(|k, flags| match sums.v6.get_mut(k) {
            Some(sum) => {
                sum.or_tcp_flags(*flags);
                false
            }
            None => true,
        });
        for key in used {
            match key {
                AnyKey::V4(k) => self.v4.remove(&k),
                AnyKey::V6(k) => self.v6.remove(&k),
            };
        }
    }

    /// ORs flags into NATed sums by their plain key, noting the keys used
    /// (not removed yet: several NATed records may share one).
    fn apply_to_nat<K: RecordKey>(&self, nat: &mut Sums<K>, used: &mut Vec<AnyKey>) {
        for (k, sum) in nat.iter_mut() {
            let plain = k.plain();
            let flags = match &plain {
                AnyKey::V4(p) => self.v4.get(p),
                AnyKey::V6(p) => self.v6.get(p),
            };
            if let Some(&flags) = flags {
                sum.or_tcp_flags(flags);
                used.push(plain);
            }
        }
    }

    /// Empties it; returns how many keys it held.
    pub(super) fn take_count(&mut self) -> usize {
        let n = self.len();
        *self = PendingTcpFlags::default();
        n
    }

    /// Takes `other`'s flags in.
    pub(super) fn absorb(&mut self, other: PendingTcpFlags) {
        for (k, f) in other.v4 {
            self.add(AnyKey::V4(k), f);
        }
        for (k, f) in other.v6 {
            self.add(AnyKey::V6(k), f);
        }
    }

    /// ENI `i` is now `map(i)`; flags of ENIs that are gone are dropped.
    pub(super) fn renumber(&mut self, map: impl Fn(EniIndex) -> Option<EniIndex>) {
        let old = std::mem::take(self);
        for (mut k, f) in old.v4 {
            if let Some(eni) = map(k.rest.eni) {
                k.rest.eni = eni;
                self.add(AnyKey::V4(k), f);
            }
        }
        for (mut k, f) in old.v6 {
            if let Some(eni) = map(k.rest.eni) {
                k.rest.eni = eni;
                self.add(AnyKey::V6(k), f);
            }
        }
    }
}
