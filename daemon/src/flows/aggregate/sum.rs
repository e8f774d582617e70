//! A record's sum: packets, bytes, the rule, the TCP flags and the part
//! of the window in which its traffic happened, in 20 bytes.

use super::RuleId;

/// A record's packets (40 bits) and bytes (56 bits) in 12 bytes of
/// 4-byte alignment: with a 16-byte IPv4 key, the rule's index and the
/// span the map's slot is 36 bytes, not 52 with two `u64`s and an `Arc`. The
/// window's sums are the largest part of the daemon's memory at a close.
/// One window's traffic of one tuple and direction stays far below the
/// bounds (10^12 packets, 7 * 10^16 bytes: a 100 Gbit/s flow for 60
/// days); should it reach them, the sum stops there and the window is
/// marked SKIPDATA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct PackedCounts([u32; 3]);

pub(super) const MAX_PACKETS: u64 = (1 << 40) - 1;
pub(super) const MAX_BYTES: u64 = (1 << 56) - 1;

impl PackedCounts {
    /// (packets, bytes).
    pub(super) fn get(self) -> (u64, u64) {
        let [a, b, c] = self.0.map(u128::from);
        let w = (a << 64) | (b << 32) | c;
        ((w >> 56) as u64, (w as u64) & MAX_BYTES)
    }

    /// Adds; `false` if a sum reached its bound and was cut there.
    pub(super) fn add(&mut self, packets: u64, bytes: u64) -> bool {
        let (p, b) = self.get();
        let (p, b) = (p.saturating_add(packets), b.saturating_add(bytes));
        let whole = p <= MAX_PACKETS && b <= MAX_BYTES;
        let w = (u128::from(p.min(MAX_PACKETS)) << 56) | u128::from(b.min(MAX_BYTES));
        self.0 = [(w >> 64) as u32, (w >> 32) as u32, w as u32];
        whole
    }
}

/// Seconds from the aggregate's base (its window's start) of the first
/// and last moment of a record's traffic. u16: `capture_window_secs` is
/// at most 3600, and a time past the range is clamped to it (the drain
/// clamps to the window anyway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) first: u16,
    /// [`OPEN_END`] for traffic still going on (a connection alive at the
    /// close) or whose end is unknown: the window's end.
    pub(super) last: u16,
}

/// `Span::last` of traffic that goes on past the window, or whose end is
/// not known.
pub(super) const OPEN_END: u16 = u16::MAX;

impl Span {
    /// No traffic yet: the first addition sets both ends.
    const EMPTY: Span = Span {
        first: u16::MAX,
        last: 0,
    };

    /// The span from `first` to `last` (Unix seconds; `None`: unknown, or
    /// for `last` still going on) relative to `base`. An unknown start is
    /// the base (the window's start).
    pub(super) fn of(base: i64, first: Option<i64>, last: Option<i64>) -> Span {
        Span {
            first: first.map_or(0, |t| offset(t - base)),
            last: last.map_or(OPEN_END, |t| offset(t - base)),
        }
    }

    /// The same moments relative to a base `shift` seconds later
    /// (negative: earlier).
    pub(super) fn rebased(self, shift: i64) -> Span {
        Span {
            first: offset(i64::from(self.first) - shift),
            last: if self.last == OPEN_END {
                OPEN_END
            } else {
                offset(i64::from(self.last) - shift)
            },
        }
    }

    fn union(self, other: Span) -> Span {
        Span {
            first: self.first.min(other.first),
            last: self.last.max(other.last),
        }
    }

    /// (start, end) in Unix seconds for a record of the window
    /// [`window_start`, `window_end`], of an aggregate whose base is `base`:
    /// clamped to the window.
    pub(super) fn within(self, base: i64, window_start: i64, window_end: i64) -> (i64, i64) {
        let start = (base + i64::from(self.first)).clamp(window_start, window_end);
        let end = if self.last == OPEN_END {
            window_end
        } else {
            (base + i64::from(self.last)).clamp(start, window_end)
        };
        (start, end)
    }
}

/// Seconds as an offset below [`OPEN_END`].
fn offset(secs: i64) -> u16 {
    secs.clamp(0, i64::from(OPEN_END) - 1) as u16
}

/// One record's sum. The rule's id and the TCP flags share a word
/// (`rule_id << 8 | flags`): REJECT records name a rule, TCP records carry
/// flags, and a separate byte would grow the slot by 4 bytes of padding.
#[derive(Clone, Copy, Debug)]
pub(super) struct RecordSum {
    pub(super) counts: PackedCounts,
    rule_and_flags: u32,
    pub(super) span: Span,
}

impl Default for RecordSum {
    fn default() -> Self {
        RecordSum {
            counts: PackedCounts::default(),
            rule_and_flags: 0,
            span: Span::EMPTY,
        }
    }
}

/// What one addition brings to a sum.
#[derive(Clone, Copy, Debug)]
pub(super) struct Addition {
    pub(super) counts: (u64, u64),
    pub(super) rule: RuleId,
    pub(super) tcp_flags: u8,
    pub(super) span: Span,
}

impl RecordSum {
    pub(super) fn packets(&self) -> u64 {
        self.counts.get().0
    }

    pub(super) fn bytes(&self) -> u64 {
        self.counts.get().1
    }

    pub(super) fn rule(&self) -> RuleId {
        RuleId(self.rule_and_flags >> 8)
    }

    /// `TCP_FLAG_*` bits OR-ed over what was added.
    pub(super) fn tcp_flags(&self) -> u8 {
        self.rule_and_flags as u8
    }

    pub(super) fn or_tcp_flags(&mut self, flags: u8) {
        self.rule_and_flags |= u32::from(flags);
    }

    /// This sum as an addition to another aggregate's, whose rules name
    /// this one's as `rule` and whose base is `shift` seconds later.
    pub(super) fn as_addition(&self, rule: RuleId, shift: i64) -> Addition {
        Addition {
            counts: self.counts.get(),
            rule,
            tcp_flags: self.tcp_flags(),
            span: self.span.rebased(shift),
        }
    }

    /// `false` if a sum reached its bound (see [`PackedCounts`]).
    pub(super) fn add(&mut self, a: &Addition) -> bool {
        if self.rule() == RuleId(0) {
            self.rule_and_flags |= a.rule.0 << 8;
        }
        self.or_tcp_flags(a.tcp_flags);
        self.span = self.span.union(a.span);
        self.counts.add(a.counts.0, a.counts.1)
    }
}
