//! Time as data: one clock and one timer heap for every session.
//!
//! Deadlines are kept as milliseconds since the engine's epoch (the first `now` it saw), so a
//! deadline costs 8 bytes instead of an `Instant`'s 16. The heap holds at most a few entries
//! per session: each session remembers the one deadline it has scheduled; an entry whose
//! deadline no longer equals its session's scheduled one is stale and skipped when popped
//! (lazy deletion). A deadline that moved later is simply found not due when its old entry
//! pops, and rescheduled then.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Milliseconds since the engine's epoch.
pub(crate) type Ms = u64;

/// "No deadline".
pub(crate) const NEVER: Ms = Ms::MAX;

/// Converts between `Instant` and engine milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Clock {
    epoch: Option<Instant>,
}

impl Clock {
    /// Milliseconds since the epoch, rounded down; the first call fixes the epoch.
    pub(crate) fn ms(&mut self, now: Instant) -> Ms {
        let epoch = *self.epoch.get_or_insert(now);
        duration_ms_floor(now.saturating_duration_since(epoch))
    }

    /// The instant of a deadline (`None` before the epoch is known).
    pub(crate) fn instant(&self, at: Ms) -> Option<Instant> {
        let epoch = self.epoch?;
        epoch.checked_add(Duration::from_millis(at))
    }
}

/// Whole milliseconds in `d`, rounded down, saturating.
pub(crate) fn duration_ms_floor(d: Duration) -> Ms {
    u64::try_from(d.as_millis()).unwrap_or(NEVER - 1)
}

/// Whole milliseconds in `d`, rounded up (deadlines are never early), at least 1.
pub(crate) fn duration_ms_ceil(d: Duration) -> Ms {
    let ms = duration_ms_floor(d);
    let ms = if d > Duration::from_millis(ms) {
        ms.saturating_add(1)
    } else {
        ms
    };
    ms.max(1)
}

/// One min-heap of (deadline, session slot).
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Ms, u32)>>,
}

impl Timers {
    pub(crate) fn push(&mut self, at: Ms, slot: u32) {
        self.heap.push(Reverse((at, slot)));
    }

    /// The earliest entry (possibly stale).
    pub(crate) fn peek(&self) -> Option<(Ms, u32)> {
        self.heap.peek().map(|Reverse(entry)| *entry)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Ms) -> Option<(Ms, u32)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(entry)| entry),
            _ => None,
        }
    }

    /// Drops stale entries at the top so that `peek` shows a live deadline.
    pub(crate) fn prune(&mut self, mut is_live: impl FnMut(Ms, u32) -> bool) {
        while let Some(Reverse((at, slot))) = self.heap.peek().copied() {
            if is_live(at, slot) {
                break;
            }
            self.heap.pop();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Rebuilds the heap without stale entries when they outnumber live ones, so that
    /// memory stays proportional to the number of sessions.
    pub(crate) fn compact(&mut self, mut is_live: impl FnMut(Ms, u32) -> bool) {
        let entries = std::mem::take(&mut self.heap).into_vec();
        let live: Vec<_> = entries
            .into_iter()
            .filter(|Reverse((at, slot))| is_live(*at, *slot))
            .collect();
        self.heap = BinaryHeap::from(live);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_never_rounds_down() {
        assert_eq!(duration_ms_ceil(Duration::from_micros(1500)), 2);
        assert_eq!(duration_ms_ceil(Duration::from_millis(3)), 3);
        assert_eq!(duration_ms_ceil(Duration::ZERO), 1);
        assert_eq!(duration_ms_floor(Duration::from_micros(1999)), 1);
    }

    #[test]
    fn heap_pops_in_order_and_only_when_due() {
        let mut timers = Timers::default();
        timers.push(30, 1);
        timers.push(10, 2);
        timers.push(20, 3);
        assert_eq!(timers.pop_due(5), None);
        assert_eq!(timers.pop_due(25), Some((10, 2)));
        assert_eq!(timers.pop_due(25), Some((20, 3)));
        assert_eq!(timers.pop_due(25), None);
        assert_eq!(timers.peek(), Some((30, 1)));
    }

    #[test]
    fn clock_round_trips_deadlines() {
        let start = Instant::now();
        let mut clock = Clock::default();
        assert_eq!(clock.instant(5), None);
        assert_eq!(clock.ms(start), 0);
        assert_eq!(clock.ms(start + Duration::from_millis(1234)), 1234);
        assert_eq!(
            clock.instant(1234),
            Some(start + Duration::from_millis(1234))
        );
        // Instants before the epoch saturate instead of panicking.
        if let Some(before) = start.checked_sub(Duration::from_millis(1)) {
            assert_eq!(clock.ms(before), 0);
        }
    }
}
