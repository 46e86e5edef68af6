//! Time as data: one clock and one timer wheel for every session.
//!
//! Deadlines are kept as milliseconds since the engine's epoch (the first `now` it saw), so a
//! deadline costs 8 bytes instead of an `Instant`'s 16. The wheel holds about one entry per
//! session: each session remembers the one deadline it has scheduled; an entry whose deadline
//! no longer equals its session's scheduled one is stale and skipped when it fires (lazy
//! deletion). A deadline that moved later is simply found not due when its old entry fires,
//! and rescheduled then.

use std::time::{Duration, Instant};

/// Milliseconds since the engine's epoch.
pub(crate) type Ms = u64;

/// "No deadline".
pub(crate) const NEVER: Ms = Ms::MAX;

/// Converts between `Instant` and engine milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Clock {
    epoch: Option<Instant>,
    /// The latest time converted (what the engine last heard `now` was).
    latest: Ms,
}

impl Clock {
    /// Milliseconds since the epoch, rounded down; the first call fixes the epoch.
    pub(crate) fn ms(&mut self, now: Instant) -> Ms {
        let epoch = *self.epoch.get_or_insert(now);
        let ms = duration_ms_floor(now.saturating_duration_since(epoch));
        self.latest = self.latest.max(ms);
        ms
    }

    /// The latest time [`Clock::ms`] converted (0 before the first).
    pub(crate) fn latest(&self) -> Ms {
        self.latest
    }

    /// The instant of a deadline (`None` before the epoch is known).
    pub(crate) fn instant(&self, at: Ms) -> Option<Instant> {
        let epoch = self.epoch?;
        epoch.checked_add(Duration::from_millis(at))
    }
}

/// Whole milliseconds in `d`, rounded down, saturating.
pub(crate) fn duration_ms_floor(d: Duration) -> Ms {
    // Seconds and sub-second milliseconds rather than `as_millis` (a `u128` division): the
    // clock converts several instants per message.
    d.as_secs()
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(u64::from(d.subsec_millis())))
        .unwrap_or(NEVER - 1)
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

/// Bits of a packed entry that hold the session slot (the rest is the deadline).
const SLOT_BITS: u32 = 24;
/// Deadlines are capped to what a packed entry holds (2^40 ms, about 34 years).
const MAX_AT: Ms = (1 << (64 - SLOT_BITS)) - 1;

/// Wheel geometry: 6 levels of 64 slots; a slot of level `l` spans 64^l ms, so the wheel
/// reaches 2^36 ms (about two years) ahead; farther deadlines wait in the top level and are
/// placed again when their slot comes round.
const LEVELS: usize = 6;
const LEVEL_BITS: u32 = 6;
const SLOTS: usize = 1 << LEVEL_BITS;
const SPAN: Ms = 1 << (LEVEL_BITS as usize * LEVELS);

/// Emptied slot lists kept for reuse (at most this many, of at most `SPARE_CAPACITY`
/// entries each: a few KiB): deadlines move down the wheel into empty lists all the time, and
/// without them each move would allocate a list and each fired slot free one.
const SPARE_LISTS: usize = 64;
const SPARE_CAPACITY: usize = 64;

fn pack(at: Ms, slot: u32) -> u64 {
    at.min(MAX_AT) << SLOT_BITS | u64::from(slot & ((1 << SLOT_BITS) - 1))
}

fn unpack(entry: u64) -> (Ms, u32) {
    let at = entry >> SLOT_BITS;
    let at = if at == MAX_AT { NEVER } else { at };
    (at, (entry & ((1 << SLOT_BITS) - 1)) as u32)
}

fn slot_range(level: usize) -> Ms {
    1 << (LEVEL_BITS as usize * level)
}

/// One hierarchical timing wheel of (deadline, session slot) entries for every session, in
/// the manner of the kernel's and tokio's: inserting is O(1), and an entry moves down at most
/// once per level before it fires, where a heap pays O(log n) cache misses per operation.
/// Entries are packed `u64`s (deadline in the high 40 bits, slot in the low 24).
///
/// Deadlines are exact to the millisecond: the last level fires at the entry's own
/// millisecond. [`peek`](Self::peek) may name an earlier instant than the first real
/// deadline (the start of a coarse slot whose entries still have to move down); waking up
/// then is harmless.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    /// Everything before `elapsed` has been handed out.
    elapsed: Ms,
    /// `LEVELS * SLOTS` lists, allocated on the first push.
    slots: Vec<Vec<u64>>,
    /// Per level, a bit per non-empty slot.
    occupied: [u64; LEVELS],
    /// Entries due at or before `elapsed`, not yet handed out.
    ready: Vec<u64>,
    len: usize,
    /// Emptied lists for reuse (see [`SPARE_LISTS`]).
    spare: Vec<Vec<u64>>,
    /// An entry [`prune`](Self::prune) found live at the head of the wheel, so that the next
    /// prune (one per engine call) need not look at its session again. The engine forgets it
    /// ([`forget`](Self::forget)) whenever it takes that session out of the slab, the only way
    /// a session's scheduled deadline changes or it goes away.
    verified: Option<u64>,
}

impl Timers {
    pub(crate) fn push(&mut self, at: Ms, slot: u32) {
        self.len += 1;
        let entry = pack(at, slot);
        if at <= self.elapsed {
            self.ready.push(entry);
        } else {
            self.place(entry);
        }
    }

    /// Puts a future entry in the slot of the level its distance from `elapsed` asks for.
    fn place(&mut self, entry: u64) {
        if self.slots.is_empty() {
            self.slots = (0..LEVELS * SLOTS).map(|_| Vec::new()).collect();
        }
        let (at, _) = unpack(entry);
        // Beyond the wheel's reach: wait in the top level, placed again when it comes round.
        let key = at.min(self.elapsed + SPAN - 1);
        let masked = ((self.elapsed ^ key) | (SLOTS as u64 - 1)).min(SPAN - 1);
        let level = (63 - masked.leading_zeros()) as usize / LEVEL_BITS as usize;
        let index = ((key >> (LEVEL_BITS as usize * level)) & (SLOTS as u64 - 1)) as usize;
        let list = &mut self.slots[level * SLOTS + index];
        if list.capacity() == 0 {
            if let Some(spare) = self.spare.pop() {
                *list = spare;
            }
        }
        list.push(entry);
        self.occupied[level] |= 1 << index;
    }

    /// Keeps an emptied list for reuse, or frees it.
    fn recycle(&mut self, mut list: Vec<u64>) {
        if list.capacity() <= SPARE_CAPACITY && self.spare.len() < SPARE_LISTS {
            list.clear();
            self.spare.push(list);
        }
    }

    /// The session in `slot` is being changed: an entry of it verified by `prune` may no
    /// longer be live.
    pub(crate) fn forget(&mut self, slot: u32) {
        if self.verified.is_some_and(|e| unpack(e).1 == slot) {
            self.verified = None;
        }
    }

    /// The next slot to process: (level, index, the instant it starts).
    fn next_expiration(&self) -> Option<(usize, usize, Ms)> {
        for level in 0..LEVELS {
            let occupied = self.occupied[level];
            if occupied == 0 {
                continue;
            }
            let range = slot_range(level);
            let now_index = ((self.elapsed / range) % SLOTS as u64) as usize;
            let level_range = range * SLOTS as u64;
            let level_start = self.elapsed & !(level_range - 1);
            // Only the top level can hold entries in the slot `elapsed` is in, and they are
            // one turn ahead (farther than the wheel reaches): they come after all others.
            let others = occupied & !(1 << now_index);
            if others == 0 {
                let deadline = level_start + now_index as u64 * range + level_range;
                return Some((level, now_index, deadline));
            }
            let zeros = others.rotate_right(now_index as u32).trailing_zeros() as usize;
            let index = (zeros + now_index) % SLOTS;
            let mut deadline = level_start + index as u64 * range;
            if deadline <= self.elapsed {
                // The top level wraps round: a slot "before" now is one turn ahead.
                deadline += level_range;
            }
            return Some((level, index, deadline));
        }
        None
    }

    /// Empties a slot whose start has come: due entries become ready, the others move down.
    fn process(&mut self, level: usize, index: usize, deadline: Ms) {
        let entries = std::mem::take(&mut self.slots[level * SLOTS + index]);

        self.occupied[level] &= !(1 << index);
        self.elapsed = self.elapsed.max(deadline);
        for &entry in &entries {
            let (at, _) = unpack(entry);
            if at <= self.elapsed {
                self.ready.push(entry);
            } else {
                self.place(entry);
            }
        }
        self.recycle(entries);
    }

    /// The earliest instant something may be due (possibly stale, possibly early).
    pub(crate) fn peek(&self) -> Option<(Ms, u32)> {
        if let Some(entry) = self.ready.iter().min() {
            return Some(unpack(*entry));
        }
        self.next_expiration().map(|(_, _, at)| (at, u32::MAX))
    }

    /// Removes and returns an entry due at `now`, earliest slots first.
    pub(crate) fn pop_due(&mut self, now: Ms) -> Option<(Ms, u32)> {
        loop {
            if let Some(entry) = self.ready.pop() {
                self.len -= 1;
                return Some(unpack(entry));
            }
            match self.next_expiration() {
                Some((level, index, deadline)) if deadline <= now => {
                    self.process(level, index, deadline)
                }
                _ => {
                    // Nothing starts before `now`: every entry stays where it is.
                    self.elapsed = self.elapsed.max(now);
                    return None;
                }
            }
        }
    }

    /// Drops stale entries ahead of the first live one, so that `peek` does not name a
    /// deadline nobody has any more (and an idle engine reports no deadline at all).
    ///
    /// An entry found live stays so for later calls until [`forget`](Self::forget) names its
    /// slot: `is_live` is not asked about it again.
    pub(crate) fn prune(&mut self, mut is_live: impl FnMut(Ms, u32) -> bool) {
        let before = self.ready.len();
        self.ready.retain(|e| {
            let (at, slot) = unpack(*e);
            is_live(at, slot)
        });
        self.len -= before - self.ready.len();
        if !self.ready.is_empty() {
            return;
        }
        while let Some((level, index, _)) = self.next_expiration() {
            let list = &mut self.slots[level * SLOTS + index];
            // Each stale entry is looked at once: it is removed as it is found (the last entry
            // takes its place and is looked at next).
            while let Some(&entry) = list.first() {
                if self.verified == Some(entry) {
                    return;
                }
                let (at, slot) = unpack(entry);
                if is_live(at, slot) {
                    self.verified = Some(entry);
                    return;
                }
                list.swap_remove(0);
                self.len -= 1;
            }
            let list = std::mem::take(list);
            self.recycle(list);
            self.occupied[level] &= !(1 << index);
        }
    }

    /// Entries held (live and stale).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        let lists: usize = self
            .slots
            .iter()
            .chain(&self.spare)
            .map(Vec::capacity)
            .sum();
        (lists + self.ready.capacity()) * std::mem::size_of::<u64>()
            + (self.slots.capacity() + self.spare.capacity()) * std::mem::size_of::<Vec<u64>>()
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
    fn wheel_pops_in_order_and_only_when_due() {
        let mut timers = Timers::default();
        timers.push(30, 1);
        timers.push(10, 2);
        timers.push(20, 3);
        assert_eq!(timers.pop_due(5), None);
        assert_eq!(timers.pop_due(25), Some((10, 2)));
        assert_eq!(timers.pop_due(25), Some((20, 3)));
        assert_eq!(timers.pop_due(25), None);
        assert_eq!(timers.peek().map(|(at, _)| at), Some(30));
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn wheel_agrees_with_a_sorted_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut timers = Timers::default();
        let mut model: Vec<(Ms, u32)> = Vec::new();
        let mut now: Ms = 0;
        for round in 0..12_000u32 {
            if rng.random_bool(0.6) {
                let ahead = match rng.random_range(0..10) {
                    0 => rng.random_range(0..1 << 40),
                    1..=3 => rng.random_range(0..300_000),
                    _ => rng.random_range(0..5_000),
                };
                let at = (now + ahead).min(MAX_AT - 1);
                let slot = round & 0xff_ffff;
                timers.push(at, slot);
                model.push((at, slot));
            } else {
                // Far jumps (beyond the wheel's two-year reach), but within the 34 years an
                // entry can name.
                now += match rng.random_range(0..10) {
                    0 => rng.random_range(0..1 << 37),
                    _ => rng.random_range(0..20_000),
                };
                now = now.min(1 << 39);
                if let Some((next, _)) = timers.peek() {
                    let first = model.iter().map(|e| e.0).min().unwrap();
                    assert!(next <= first.max(now), "peek {next} after first {first}");
                }
                let mut got = Vec::new();
                let mut last = 0;
                while let Some(entry) = timers.pop_due(now) {
                    assert!(entry.0 >= last, "out of order");
                    last = entry.0;
                    got.push(entry);
                }
                let mut want: Vec<_> = model.iter().copied().filter(|e| e.0 <= now).collect();
                model.retain(|e| e.0 > now);
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want, "round {round} now {now}");
                assert_eq!(timers.len(), model.len());
            }
        }
    }

    #[test]
    fn prune_drops_stale_entries_until_a_live_one() {
        let mut timers = Timers::default();
        for at in [5, 6, 7, 100_000] {
            timers.push(at, at as u32);
        }
        timers.prune(|at, _| at != 5 && at != 6);
        assert_eq!(timers.peek().map(|(at, _)| at), Some(7));
        // Found live, it is not looked at again until its session changes.
        timers.prune(|_, _| panic!("asked again"));
        timers.forget(7);
        timers.prune(|_, _| false);
        assert_eq!(timers.peek(), None);
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn packing_keeps_order_slot_and_caps_far_deadlines() {
        assert_eq!(unpack(pack(12_345, 0xab_cdef)), (12_345, 0xab_cdef));
        assert!(pack(1, 0xff_ffff) < pack(2, 0));
        assert_eq!(unpack(pack(NEVER, 7)), (NEVER, 7));
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
