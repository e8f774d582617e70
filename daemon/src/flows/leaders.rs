//! The open window's leaders, for `flowlogd top`: its largest records by
//! bytes and by packets, its largest REJECT records by packets (with the
//! rule that dropped them) and per-ENI totals, kept up to date as the
//! window's sums grow.
//!
//! Why kept as the sums grow rather than found when asked: the issue asks
//! that a `top` request cost the capture loop "one copy of the top-N, not
//! a table walk", and the sums of a busy window hold millions of keys.
//! Sums only grow within a window, so a bounded list is exact when it
//! takes each key whose new sum passes its smallest member (the evicted
//! member was the smallest, and nothing outside the list is larger). The
//! cost per added sum is a comparison with that smallest member, per
//! list, and an addition to the ENI's totals; only a sum that enters a
//! list, or grows inside it, scans its [`TOP_N`] entries. Nothing is
//! allocated once a list is full; a rule name is an `Arc` clone. The loop
//! copies the lists into its published snapshot (`Leaders::view`, at most
//! every 500 ms), and control-socket requests read that copy, so any number
//! of `top` clients cost the loop nothing more.
//!
//! Limits, said where `top` is documented: the sums hold what the window
//! attributed so far (connections that ended, the deltas of events, and
//! every dropped packet); a live connection's counters come in at its end
//! or at the window's close. After the sums were emitted early at their
//! memory bound, a key entering a list counts from that moment (members
//! keep their totals).

use std::sync::Arc;

use flowlogd_plugin_api::{Action, Direction};

use super::aggregate::FlowTuple;
use crate::eni::EniIndex;

/// Entries per list: a screen's worth.
pub const TOP_N: usize = 20;

/// One record of the open window, as `top` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    pub eni: EniIndex,
    pub direction: Direction,
    pub action: Action,
    pub tuple: FlowTuple,
    pub packets: u64,
    pub bytes: u64,
    /// The firewall rule of a REJECT record, if NFLOG named one.
    pub rule: Option<Arc<str>>,
}

impl Leader {
    fn same_record(
        &self,
        eni: EniIndex,
        direction: Direction,
        action: Action,
        t: &FlowTuple,
    ) -> bool {
        self.eni == eni && self.direction == direction && self.action == action && self.tuple == *t
    }
}

/// One ENI's traffic in the open window so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EniTotals {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Packets of REJECT records (both directions), included above.
    pub rejected_packets: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rank {
    Bytes,
    Packets,
}

/// A bounded list, largest first once viewed.
#[derive(Debug)]
struct Board {
    rank: Rank,
    entries: Vec<Leader>,
    /// The smallest member's value once the list is full; 0 before.
    floor: u64,
}

impl Board {
    fn new(rank: Rank) -> Board {
        Board {
            rank,
            entries: Vec::new(),
            floor: 0,
        }
    }

    fn value(&self, packets: u64, bytes: u64) -> u64 {
        match self.rank {
            Rank::Bytes => bytes,
            Rank::Packets => packets,
        }
    }

    /// A record's sum is now `sum` after adding `delta` (packets, bytes).
    fn offer(&mut self, r: &Added<'_>) {
        let v = self.value(r.sum.0, r.sum.1);
        let below_floor = self.entries.len() == TOP_N && v <= self.floor;
        // A sum at or below the floor can only be a member's whose sum in
        // the map restarted at an early emit; without one, skip the search.
        if below_floor && !r.sums_restarted {
            return;
        }
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.same_record(r.eni, r.direction, r.action, &r.tuple))
        {
            // Members add the deltas: after an early emit the key's sum in
            // the map restarted, the member's total did not.
            e.packets = e.packets.saturating_add(r.delta.0);
            e.bytes = e.bytes.saturating_add(r.delta.1);
        } else if below_floor {
            return;
        } else {
            let leader = Leader {
                eni: r.eni,
                direction: r.direction,
                action: r.action,
                tuple: r.tuple,
                packets: r.sum.0,
                bytes: r.sum.1,
                rule: r.rule.cloned(),
            };
            if self.entries.len() < TOP_N {
                if self.entries.capacity() == 0 {
                    self.entries.reserve_exact(TOP_N);
                }
                self.entries.push(leader);
            } else if let Some(smallest) = self.smallest() {
                self.entries[smallest] = leader;
            }
        }
        if self.entries.len() == TOP_N {
            self.floor = self
                .entries
                .iter()
                .map(|e| self.value(e.packets, e.bytes))
                .min()
                .unwrap_or(0);
        }
    }

    fn smallest(&self) -> Option<usize> {
        (0..self.entries.len()).min_by_key(|&i| {
            let e = &self.entries[i];
            self.value(e.packets, e.bytes)
        })
    }

    /// The members, largest first (ties by tuple, for a stable screen).
    fn sorted(&self) -> Vec<Leader> {
        let mut v = self.entries.clone();
        v.sort_by(|a, b| {
            self.value(b.packets, b.bytes)
                .cmp(&self.value(a.packets, a.bytes))
                .then_with(|| a.tuple.cmp(&b.tuple))
        });
        v
    }

    fn renumber(&mut self, map: impl Fn(EniIndex) -> Option<EniIndex>) {
        self.entries.retain_mut(|e| match map(e.eni) {
            Some(to) => {
                e.eni = to;
                true
            }
            None => false,
        });
        if self.entries.len() < TOP_N {
            self.floor = 0;
        }
    }
}

/// What one addition to the sums was.
pub(crate) struct Added<'a> {
    pub eni: EniIndex,
    pub direction: Direction,
    pub action: Action,
    /// As the record shows it (ports zeroed where the protocol has none).
    pub tuple: FlowTuple,
    /// (packets, bytes) added.
    pub delta: (u64, u64),
    /// The key's (packets, bytes) in the sums now.
    pub sum: (u64, u64),
    pub rule: Option<&'a Arc<str>>,
    /// The window's sums were emitted early at least once, so `sum` may
    /// have restarted below what a member of a list already holds.
    pub sums_restarted: bool,
}

/// The open window's leaders and per-ENI totals.
#[derive(Debug)]
pub(crate) struct Leaders {
    by_bytes: Board,
    by_packets: Board,
    rejects: Board,
    /// By ENI index.
    totals: Vec<EniTotals>,
}

impl Default for Leaders {
    fn default() -> Self {
        Leaders {
            by_bytes: Board::new(Rank::Bytes),
            by_packets: Board::new(Rank::Packets),
            rejects: Board::new(Rank::Packets),
            totals: Vec::new(),
        }
    }
}

/// A copy of the leaders, for the snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeadersView {
    pub by_bytes: Vec<Leader>,
    pub by_packets: Vec<Leader>,
    /// REJECT records by packets.
    pub rejects: Vec<Leader>,
    /// ENIs with traffic, by index.
    pub totals: Vec<(EniIndex, EniTotals)>,
}

impl Leaders {
    pub(crate) fn note(&mut self, r: &Added<'_>) {
        let i = r.eni.get();
        if self.totals.len() <= i {
            self.totals.resize(i + 1, EniTotals::default());
        }
        let t = &mut self.totals[i];
        let (p, b) = r.delta;
        match r.direction {
            Direction::In => {
                t.packets_in = t.packets_in.saturating_add(p);
                t.bytes_in = t.bytes_in.saturating_add(b);
            }
            Direction::Out => {
                t.packets_out = t.packets_out.saturating_add(p);
                t.bytes_out = t.bytes_out.saturating_add(b);
            }
        }
        if r.action == Action::Reject {
            t.rejected_packets = t.rejected_packets.saturating_add(p);
            self.rejects.offer(r);
        }
        self.by_bytes.offer(r);
        self.by_packets.offer(r);
    }

    /// A reload renumbered the ENIs: ENI `i` is now `map(i)`, or gone.
    pub(crate) fn renumber(&mut self, map: impl Fn(EniIndex) -> Option<EniIndex> + Copy) {
        self.by_bytes.renumber(map);
        self.by_packets.renumber(map);
        self.rejects.renumber(map);
        let old = std::mem::take(&mut self.totals);
        for (i, t) in old.into_iter().enumerate() {
            if let Some(to) = EniIndex::new(i).and_then(map) {
                if self.totals.len() <= to.get() {
                    self.totals.resize(to.get() + 1, EniTotals::default());
                }
                self.totals[to.get()] = t;
            }
        }
    }

    pub(crate) fn view(&self) -> LeadersView {
        LeadersView {
            by_bytes: self.by_bytes.sorted(),
            by_packets: self.by_packets.sorted(),
            rejects: self.rejects.sorted(),
            totals: self
                .totals
                .iter()
                .enumerate()
                .filter(|(_, t)| **t != EniTotals::default())
                .filter_map(|(i, t)| Some((EniIndex::new(i)?, *t)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn tuple(src_last: u8, port: u16) -> FlowTuple {
        FlowTuple {
            src: IpAddr::from([10, 0, 0, src_last]),
            src_port: 40000,
            dst: IpAddr::from([10, 0, 1, 1]),
            dst_port: port,
            protocol: 17,
        }
    }

    fn eni(i: usize) -> EniIndex {
        EniIndex::new(i).unwrap()
    }

    /// Adds like the sums do: keeps each key's sum, offers it.
    struct Sums {
        leaders: Leaders,
        sums: std::collections::HashMap<(usize, FlowTuple, bool), (u64, u64)>,
        /// An early emit happened: the sums restarted from zero.
        restarted: bool,
    }

    impl Sums {
        fn add(&mut self, e: usize, t: FlowTuple, reject: bool, packets: u64, bytes: u64) {
            let s = self.sums.entry((e, t, reject)).or_default();
            s.0 += packets;
            s.1 += bytes;
            let sum = *s;
            let rule: Arc<str> = Arc::from("sg:deny");
            self.leaders.note(&Added {
                eni: eni(e),
                direction: Direction::In,
                action: if reject {
                    Action::Reject
                } else {
                    Action::Accept
                },
                tuple: t,
                delta: (packets, bytes),
                sum,
                rule: reject.then_some(&rule),
                sums_restarted: self.restarted,
            });
        }
    }

    #[test]
    fn the_lists_are_the_largest_sums_whatever_the_order_they_grew_in() {
        let mut s = Sums {
            leaders: Leaders::default(),
            sums: Default::default(),
            restarted: false,
        };
        // 60 keys, each growing in several steps, interleaved so that keys
        // enter, leave and come back to the lists.
        let n = 3 * TOP_N as u16;
        for round in 1..=5u64 {
            for k in 0..n {
                let grow = u64::from(k % 7 + 1) * round;
                s.add(
                    0,
                    tuple(1, 1000 + k),
                    false,
                    grow,
                    grow * (u64::from(k) + 100),
                );
            }
        }
        for k in 0..5u16 {
            s.add(1, tuple(9, 2000 + k), true, u64::from(k) + 1, 28);
        }
        let v = s.leaders.view();
        // What a full walk of the sums would say.
        let mut all: Vec<(u64, u64)> = s.sums.values().copied().collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.1));
        let expected: Vec<u64> = all.iter().take(TOP_N).map(|s| s.1).collect();
        assert_eq!(v.by_bytes.len(), TOP_N);
        assert_eq!(
            v.by_bytes.iter().map(|l| l.bytes).collect::<Vec<_>>(),
            expected
        );
        all.sort_by_key(|s| std::cmp::Reverse(s.0));
        let expected: Vec<u64> = all.iter().take(TOP_N).map(|s| s.0).collect();
        assert_eq!(
            v.by_packets.iter().map(|l| l.packets).collect::<Vec<_>>(),
            expected
        );
        // Each member's counts are its key's sum.
        for l in v.by_bytes.iter().chain(&v.by_packets) {
            let reject = l.action == Action::Reject;
            assert_eq!(
                s.sums[&(l.eni.get(), l.tuple, reject)],
                (l.packets, l.bytes)
            );
        }
        // Rejects: only REJECT records, by packets, with their rule.
        assert_eq!(v.rejects.len(), 5);
        assert_eq!(v.rejects[0].packets, 5);
        assert_eq!(v.rejects[0].tuple.dst_port, 2004);
        assert_eq!(v.rejects[0].rule.as_deref(), Some("sg:deny"));
        // Totals per ENI.
        assert_eq!(v.totals.len(), 2);
        let (e1, t1) = v.totals[1];
        assert_eq!(e1, eni(1));
        assert_eq!(
            (t1.packets_in, t1.bytes_in, t1.rejected_packets),
            (15, 140, 15)
        );
        let sum0: u64 = s
            .sums
            .iter()
            .filter(|(k, _)| k.0 == 0)
            .map(|(_, v)| v.1)
            .sum();
        assert_eq!(v.totals[0].1.bytes_in, sum0);
        assert_eq!(v.totals[0].1.packets_out, 0);
    }

    /// After an early emit a key's sum in the map starts again from zero,
    /// below the floor of a full list; a member still adds what it gets,
    /// and a key that is no member does not push one out.
    #[test]
    fn a_member_whose_sum_restarted_at_an_early_emit_keeps_counting() {
        let mut s = Sums {
            leaders: Leaders::default(),
            sums: Default::default(),
            restarted: false,
        };
        for k in 0..TOP_N as u16 {
            s.add(0, tuple(1, 1000 + k), false, 10, 1000);
        }
        let top = tuple(1, 1000);
        s.add(0, top, false, 5, 500);
        // The early emit: the sums restart, the lists keep their members.
        s.sums.clear();
        s.restarted = true;
        s.add(0, top, false, 1, 100);
        s.add(0, tuple(1, 3000), false, 1, 100);
        let v = s.leaders.view();
        assert_eq!(v.by_bytes.len(), TOP_N);
        assert_eq!((v.by_bytes[0].tuple, v.by_bytes[0].bytes), (top, 1600));
        assert_eq!((v.by_packets[0].tuple, v.by_packets[0].packets), (top, 16));
        assert!(
            v.by_bytes.iter().all(|l| l.tuple.dst_port != 3000),
            "a key below the floor entered: {:?}",
            v.by_bytes
        );
        assert_eq!(v.by_bytes.iter().map(|l| l.bytes).min(), Some(1000));
    }

    #[test]
    fn a_reload_renumbers_and_drops_the_enis_that_are_gone() {
        let mut s = Sums {
            leaders: Leaders::default(),
            sums: Default::default(),
            restarted: false,
        };
        s.add(0, tuple(1, 1), false, 1, 100);
        s.add(1, tuple(2, 2), false, 2, 200);
        // ENI 0 is gone, ENI 1 becomes 0.
        let to = [None, Some(eni(0))];
        s.leaders
            .renumber(|e: EniIndex| to.get(e.get()).copied().flatten());
        let v = s.leaders.view();
        assert_eq!(v.by_bytes.len(), 1);
        assert_eq!((v.by_bytes[0].eni, v.by_bytes[0].bytes), (eni(0), 200));
        assert_eq!(
            v.totals,
            vec![(
                eni(0),
                EniTotals {
                    packets_in: 2,
                    bytes_in: 200,
                    ..EniTotals::default()
                }
            )]
        );
    }
}
