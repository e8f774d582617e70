//! Time: the injected clock and the wall-clock-aligned capture windows.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the flow table reads the time from: the system clock in the
/// daemon, a [`FakeClock`] in tests.
pub trait Clock {
    /// Unix seconds.
    fn now_unix(&self) -> i64;
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now_unix(&self) -> i64 {
        (**self).now_unix()
    }
}

impl<C: Clock + ?Sized> Clock for Rc<C> {
    fn now_unix(&self) -> i64 {
        (**self).now_unix()
    }
}

/// The wall clock. Windows are aligned to it (records carry wall-clock
/// times), so it is `SystemTime`, not a monotonic clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }
}

/// A clock set by hand: for tests, and for replaying captured traffic
/// at the times it was captured.
#[derive(Debug)]
pub struct FakeClock {
    now: Cell<i64>,
}

impl FakeClock {
    pub fn new(now: i64) -> FakeClock {
        FakeClock {
            now: Cell::new(now),
        }
    }

    pub fn set(&self, now: i64) {
        self.now.set(now);
    }

    pub fn advance(&self, secs: i64) {
        self.now.set(self.now.get() + secs);
    }
}

impl Clock for FakeClock {
    fn now_unix(&self) -> i64 {
        self.now.get()
    }
}

/// A capture window `[start, end)` in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureWindow {
    pub start: i64,
    pub end: i64,
}

impl CaptureWindow {
    /// The aligned window of `length_secs` that contains `t`: for 600 s,
    /// 10:03:17 is in 10:00:00–10:10:00.
    pub fn containing(t: i64, length_secs: u32) -> CaptureWindow {
        let start = t - t.rem_euclid(i64::from(length_secs.max(1)));
        CaptureWindow {
            start,
            end: start + i64::from(length_secs.max(1)),
        }
    }

    /// The window that follows one closed at `closed_at` when the clock
    /// reads `now`: it starts where the last one ended and ends at the first
    /// aligned boundary after both. If the loop woke up more than a window
    /// late (a suspended VM, a clock step), one longer window covers the gap
    /// instead of a burst of empty windows closed back to back.
    pub fn after(closed_at: i64, now: i64, length_secs: u32) -> CaptureWindow {
        CaptureWindow {
            start: closed_at,
            end: CaptureWindow::containing(closed_at.max(now), length_secs).end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-05-01 10:03:17 UTC.
    const T: i64 = 1_714_557_797;
    const TEN: i64 = 1_714_557_600;

    #[test]
    fn window_aligns_to_the_wall_clock() {
        let w = CaptureWindow::containing(T, 600);
        assert_eq!(
            w,
            CaptureWindow {
                start: TEN,
                end: TEN + 600
            }
        );
        assert_eq!(CaptureWindow::containing(TEN, 600).start, TEN);
        assert_eq!(CaptureWindow::containing(TEN - 1, 600).end, TEN);
        assert_eq!(
            CaptureWindow::containing(T, 60),
            CaptureWindow {
                start: T - 17,
                end: T + 43
            }
        );
        assert_eq!(
            CaptureWindow::containing(-1, 600),
            CaptureWindow {
                start: -600,
                end: 0
            }
        );
    }

    #[test]
    fn window_after_a_close() {
        // On time: the next aligned window.
        assert_eq!(
            CaptureWindow::after(TEN, TEN, 600),
            CaptureWindow {
                start: TEN,
                end: TEN + 600
            }
        );
        // Woke 2 s late: still the next aligned window.
        assert_eq!(
            CaptureWindow::after(TEN, TEN + 2, 600),
            CaptureWindow {
                start: TEN,
                end: TEN + 600
            }
        );
        // Woke 25 min late: one window up to the boundary after now.
        assert_eq!(
            CaptureWindow::after(TEN, TEN + 1500, 600),
            CaptureWindow {
                start: TEN,
                end: TEN + 1800
            }
        );
        // Early close (SIGTERM at 10:03:17): the rest of the aligned window.
        assert_eq!(
            CaptureWindow::after(T, T, 600),
            CaptureWindow {
                start: T,
                end: TEN + 600
            }
        );
    }

    #[test]
    fn fake_clock_moves_only_when_told() {
        let c = Rc::new(FakeClock::new(5));
        let shared: &dyn Clock = &c;
        c.advance(10);
        assert_eq!(shared.now_unix(), 15);
        c.set(3);
        assert_eq!(shared.now_unix(), 3);
        assert!(SystemClock.now_unix() > 1_700_000_000);
    }
}
