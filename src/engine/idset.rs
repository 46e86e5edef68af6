//! The two per-neighbor tables of refresh reduction, laid out for summary refreshes at scale:
//! [`Summary`] (our acknowledged ids a neighbor's states hold) and [`RxIndex`] (the
//! neighbor's ids our states hold).
//!
//! Both are arrays sorted by id rather than hash tables. Message ids increase (RFC 2961
//! §4.3: a node gives each new or changed state a higher id than the last), so new entries
//! are appended; a removal marks its entry gone and the gone ones are compacted away when
//! they are a quarter. In return an Srefresh is built by reading a slice of [`Summary`] in
//! order, and a received Srefresh, whose ids come in increasing order, is matched against
//! [`RxIndex`] by one forward walk ([`RxIndex::stamp_all`]): memory read in order, where a
//! hash table takes two cache misses per id at a million entries.
//!
//! A neighbor that gives a new state a lower id than the last (against the RFC, or a
//! malicious one) costs nothing worse: such ids wait in a small hash table until the next
//! sweep sorts them in.

use std::collections::HashMap;

use super::timer::Ms;

/// Marks a removed [`RxIndex`] entry.
const GONE_SLOT: u32 = u32::MAX;

/// Our acknowledged ids that one neighbor's states hold, sent from one address of ours, in
/// increasing order. Srefresh ticks send it a slice at a time ([`Summary::next_tick`]).
///
/// A removed id keeps its place (so the array stays sorted and a lookup is a binary search)
/// and is marked in a bitmap; removed ones are compacted away when they are a quarter.
#[derive(Debug, Default)]
pub(super) struct Summary {
    ids: Vec<u32>,
    /// One bit per entry of `ids`: removed.
    removed: Vec<u64>,
    /// Entries marked removed.
    gone: usize,
    /// Where the next slice starts.
    cursor: usize,
    /// Ids owed to the next tick, in `1/ticks` (see [`Summary::next_tick`]).
    owed: usize,
}

impl Summary {
    /// Live ids.
    pub(super) fn len(&self) -> usize {
        self.ids.len() - self.gone
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.ids.capacity() * 4 + self.removed.capacity() * 8
    }

    fn is_removed(&self, at: usize) -> bool {
        self.removed
            .get(at / 64)
            .is_some_and(|word| word >> (at % 64) & 1 == 1)
    }

    fn mark(&mut self, at: usize, removed: bool) {
        if self.removed.len() <= at / 64 {
            self.removed.resize(at / 64 + 1, 0);
        }
        let bit = 1u64 << (at % 64);
        if removed {
            self.removed[at / 64] |= bit;
        } else {
            self.removed[at / 64] &= !bit;
        }
    }

    /// Adds `id`; `false` if it was there already.
    pub(super) fn insert(&mut self, id: u32) -> bool {
        match self.ids.binary_search(&id) {
            Ok(at) if self.is_removed(at) => {
                self.mark(at, false);
                self.gone -= 1;
                true
            }
            Ok(_) => false,
            Err(at) if at == self.ids.len() => {
                // Increasing ids append.
                self.ids.push(id);
                true
            }
            Err(_) => {
                // Lower than the last: only after our own id counter wrapped (a new epoch).
                // The bitmap would shift: compact first, so that it is all clear.
                self.compact();
                let at = self.ids.binary_search(&id).unwrap_or_else(|at| at);
                self.ids.insert(at, id);
                if at < self.cursor {
                    self.cursor += 1;
                }
                true
            }
        }
    }

    /// Removes `id`; `false` if it was not there.
    pub(super) fn remove(&mut self, id: u32) -> bool {
        match self.ids.binary_search(&id) {
            Ok(at) if !self.is_removed(at) => {
                self.mark(at, true);
                self.gone += 1;
                if self.gone * 4 >= self.ids.len() {
                    self.compact();
                }
                true
            }
            _ => false,
        }
    }

    /// The ids of the next of `ticks` ticks that share the summary: `len / ticks` of them,
    /// the remainder carried over, so that `ticks` ticks name each id once.
    ///
    /// Ids wait until a full message's worth (`batch`) or the whole summary is owed, so
    /// that a small summary goes in one Srefresh per round rather than one per tick.
    pub(super) fn next_tick(&mut self, ticks: usize, batch: usize, out: &mut Vec<u32>) {
        let ticks = ticks.max(1);
        let len = self.len();
        self.owed = (self.owed + len).min(len * ticks);
        let n = self.owed / ticks;
        if n > 0 && n >= batch.min(len) {
            self.owed -= n * ticks;
            self.next_slice(n, out);
        }
    }

    /// The next `n` live ids in order, wrapping at the end (each call continues where the
    /// last stopped, so `k` calls of `len / k` ids cover every id once).
    pub(super) fn next_slice(&mut self, n: usize, out: &mut Vec<u32>) {
        let len = self.ids.len();
        let mut taken = 0;
        let mut looked = 0;
        while taken < n && looked < len {
            if self.cursor >= len {
                self.cursor = 0;
            }
            let at = self.cursor;
            self.cursor += 1;
            looked += 1;
            if !self.is_removed(at) {
                out.push(self.ids[at]);
                taken += 1;
            }
        }
    }

    /// Every live id (in order).
    pub(super) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids
            .iter()
            .enumerate()
            .filter(|(at, _)| !self.is_removed(*at))
            .map(|(_, id)| *id)
    }

    /// Drops the removed entries (the cursor keeps its place among the live ones).
    fn compact(&mut self) {
        if self.gone == 0 {
            return;
        }
        let mut kept = 0;
        let mut cursor = 0;
        for at in 0..self.ids.len() {
            if at == self.cursor {
                cursor = kept;
            }
            if !self.is_removed(at) {
                self.ids[kept] = self.ids[at];
                kept += 1;
            }
        }
        if self.cursor >= self.ids.len() {
            cursor = kept;
        }
        self.ids.truncate(kept);
        self.removed.clear();
        self.gone = 0;
        self.cursor = cursor;
        if self.ids.capacity() > 2 * self.ids.len() + 16 {
            self.ids.shrink_to(self.ids.len() + self.ids.len() / 4);
        }
    }
}

/// One of a neighbor's message ids that a state here holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RxEntry {
    pub(super) id: u32,
    /// The session slot holding the state ([`GONE_SLOT`] once removed).
    pub(super) slot: u32,
    /// When the neighbor last named the id (in its message or an Srefresh): engine
    /// milliseconds, their low 32 bits. Ages are read with wrapping arithmetic, exact for 49
    /// days; an entry is swept long before (a state lives at most 5 h 15 min unrefreshed).
    pub(super) stamp: u32,
    /// The state's lifetime (ms): it expires `life` after the stamp.
    pub(super) life: u32,
}

impl RxEntry {
    /// The age of the stamp at `now`.
    fn age(&self, now: Ms) -> u32 {
        stamp_of(now).wrapping_sub(self.stamp)
    }

    /// The state's deadline, seen at `now`.
    pub(super) fn deadline(&self, now: Ms) -> Ms {
        let refreshed = now.saturating_sub(u64::from(self.age(now)));
        refreshed.saturating_add(u64::from(self.life))
    }
}

/// `now` as an [`RxEntry::stamp`].
pub(super) fn stamp_of(now: Ms) -> u32 {
    now as u32
}

/// A neighbor's message ids that states here hold, sorted by id, with the time each was last
/// named: the index a received Srefresh is matched against, and the timer of those states
/// (see [`RxIndex::sweep`]).
#[derive(Debug, Default)]
pub(super) struct RxIndex {
    sorted: Vec<RxEntry>,
    /// Entries marked [`GONE_SLOT`] in `sorted`.
    gone: usize,
    /// Ids that came lower than the last of `sorted`, until the next sweep sorts them in.
    late: HashMap<u32, RxEntry>,
    /// The shortest `life` of the entries (the sweep interval follows from it).
    min_life: u32,
}

impl RxIndex {
    /// Live entries.
    pub(super) fn len(&self) -> usize {
        self.sorted.len() - self.gone + self.late.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let late = if self.late.capacity() == 0 {
            0
        } else {
            (self.late.capacity() * 8 / 7).next_power_of_two() * (size_of::<(u32, RxEntry)>() + 1)
        };
        self.sorted.capacity() * size_of::<RxEntry>() + late
    }

    /// The shortest lifetime of the entries (0: none yet).
    pub(super) fn min_life(&self) -> u32 {
        self.min_life
    }

    /// Records `entry` (replacing an entry of the same id).
    pub(super) fn insert(&mut self, entry: RxEntry) {
        self.min_life = if self.min_life == 0 {
            entry.life
        } else {
            self.min_life.min(entry.life)
        };
        if self.sorted.last().is_none_or(|last| last.id < entry.id) {
            self.sorted.push(entry);
            return;
        }
        match self.sorted.binary_search_by_key(&entry.id, |e| e.id) {
            Ok(at) => {
                if self.sorted[at].slot == GONE_SLOT {
                    self.gone -= 1;
                }
                self.sorted[at] = entry;
            }
            Err(_) => {
                self.late.insert(entry.id, entry);
            }
        }
    }

    /// The live entry of `id`.
    pub(super) fn get(&self, id: u32) -> Option<&RxEntry> {
        match self.sorted.binary_search_by_key(&id, |e| e.id) {
            Ok(at) => Some(&self.sorted[at]).filter(|e| e.slot != GONE_SLOT),
            Err(_) => self.late.get(&id),
        }
    }

    /// Removes `id` if the state at `slot` is what it names (`None`: whatever it names).
    pub(super) fn remove(&mut self, id: u32, slot: Option<u32>) -> bool {
        let matches = |e: &RxEntry| e.slot != GONE_SLOT && slot.is_none_or(|s| s == e.slot);
        match self.sorted.binary_search_by_key(&id, |e| e.id) {
            Ok(at) if matches(&self.sorted[at]) => {
                self.sorted[at].slot = GONE_SLOT;
                self.gone += 1;
                true
            }
            Ok(_) => false,
            Err(_) => {
                if self.late.get(&id).is_some_and(matches) {
                    self.late.remove(&id);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Stamps every id of `ids` held here with `now`; the ones not held go to `unknown`.
    /// Returns how many were stamped. Ids in increasing order are matched by one forward
    /// walk (galloping from the last match), others by a search each.
    pub(super) fn stamp_all(
        &mut self,
        ids: impl Iterator<Item = u32>,
        now: Ms,
        unknown: &mut Vec<u32>,
    ) -> u64 {
        let stamp = stamp_of(now);
        let mut stamped = 0;
        let mut from = 0usize;
        let mut previous: Option<u32> = None;
        for id in ids {
            if previous.is_some_and(|p| id <= p) {
                from = 0;
            }
            previous = Some(id);
            let at = gallop(&self.sorted[from..], id).map(|i| i + from);
            let hit = match at {
                Ok(at) => {
                    from = at;
                    let e = &mut self.sorted[at];
                    (e.slot != GONE_SLOT).then_some(e)
                }
                Err(at) => {
                    from = at;
                    self.late.get_mut(&id)
                }
            };
            match hit {
                Some(e) => {
                    e.stamp = stamp;
                    stamped += 1;
                }
                None => unknown.push(id),
            }
        }
        stamped
    }

    /// Compacts gone entries (when they are a quarter), sorts late ones in, and returns the
    /// live entries whose deadline falls before `until`: their states' own timers take over
    /// from here (precise to the millisecond; the sweep itself runs far less often).
    pub(super) fn sweep(&mut self, now: Ms, until: Ms, due: &mut Vec<RxEntry>) {
        if !self.late.is_empty() {
            self.sorted.extend(self.late.drain().map(|(_, e)| e));
            self.sorted.sort_unstable_by_key(|e| e.id);
        }
        if self.gone > 0 && self.gone * 4 >= self.sorted.len() {
            self.sorted.retain(|e| e.slot != GONE_SLOT);
            self.gone = 0;
            if self.sorted.capacity() > 2 * self.sorted.len() + 16 {
                self.sorted
                    .shrink_to(self.sorted.len() + self.sorted.len() / 4);
            }
        }
        let mut min_life = 0u32;
        for e in self.sorted.iter().filter(|e| e.slot != GONE_SLOT) {
            min_life = if min_life == 0 {
                e.life
            } else {
                min_life.min(e.life)
            };
            if e.deadline(now) < until {
                due.push(*e);
            }
        }
        self.min_life = min_life;
    }

    /// Every live entry.
    pub(super) fn entries(&self) -> impl Iterator<Item = &RxEntry> + '_ {
        self.sorted
            .iter()
            .filter(|e| e.slot != GONE_SLOT)
            .chain(self.late.values())
    }
}

/// Exponential then binary search for `id` in `sorted` (which is in increasing id order):
/// cheap when the id is near the front, as the next id of an Srefresh is.
fn gallop(sorted: &[RxEntry], id: u32) -> Result<usize, usize> {
    let mut bound = 1;
    while bound < sorted.len() && sorted[bound - 1].id < id {
        bound *= 2;
    }
    let lo = bound / 2;
    let hi = bound.min(sorted.len());
    match sorted[lo.min(hi)..hi].binary_search_by_key(&id, |e| e.id) {
        Ok(i) => Ok(i + lo.min(hi)),
        Err(i) => Err(i + lo.min(hi)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn entry(id: u32, slot: u32, stamp: u32) -> RxEntry {
        RxEntry {
            id,
            slot,
            stamp,
            life: 1000,
        }
    }

    #[test]
    fn summary_slices_cover_every_id_once_per_round() {
        let mut s = Summary::default();
        for id in 1..=100 {
            assert!(s.insert(id));
        }
        assert!(!s.insert(50));
        for id in (2..=100).step_by(2) {
            assert!(s.remove(id));
        }
        assert!(!s.remove(2));
        assert_eq!(s.len(), 50);
        let mut seen = Vec::new();
        for _ in 0..5 {
            s.next_slice(10, &mut seen);
        }
        let expected: Vec<u32> = (1..=100).step_by(2).collect();
        assert_eq!(seen, expected);
        // The next round starts over.
        let mut again = Vec::new();
        s.next_slice(3, &mut again);
        assert_eq!(again, vec![1, 3, 5]);

        // Ticks: 50 ids over 16 ticks, each id once.
        let mut s = Summary::default();
        for id in 1..=50 {
            s.insert(id);
        }
        let mut ticked = Vec::new();
        let mut sizes = Vec::new();
        for _ in 0..16 {
            let before = ticked.len();
            s.next_tick(16, 1, &mut ticked);
            sizes.push(ticked.len() - before);
        }
        assert_eq!(ticked, (1..=50).collect::<Vec<u32>>());
        assert!(sizes.iter().all(|n| (3..=4).contains(n)), "{sizes:?}");
        // Fewer ids than ticks: each still once per 16 ticks.
        let mut s = Summary::default();
        s.insert(7);
        let mut ticked = Vec::new();
        for _ in 0..16 {
            s.next_tick(16, 1, &mut ticked);
        }
        assert_eq!(ticked, vec![7]);
        // Batched: 50 ids owed at 20 a message go in three messages a round, not sixteen.
        let mut s = Summary::default();
        for id in 1..=50 {
            s.insert(id);
        }
        let mut ticked = Vec::new();
        let mut sends = 0;
        for _ in 0..16 {
            let before = ticked.len();
            s.next_tick(16, 20, &mut ticked);
            sends += usize::from(ticked.len() > before);
        }
        assert_eq!(sends, 2, "{ticked:?}");
        assert!(ticked.len() >= 40 && ticked.len() <= 50);
    }

    #[test]
    fn rx_index_stamps_in_one_walk_and_sweeps_what_is_due() {
        let mut index = RxIndex::default();
        for id in (10..=1000).step_by(10) {
            index.insert(entry(id, id, 0));
        }
        index.insert(entry(5, 5, 0)); // late
        assert!(index.remove(20, Some(20)));
        assert!(!index.remove(30, Some(999)), "another state's id");
        let mut unknown = Vec::new();
        let ids = [5, 10, 20, 25, 30, 990, 1000, 1001];
        let stamped = index.stamp_all(ids.into_iter(), 500, &mut unknown);
        assert_eq!(stamped, 5);
        assert_eq!(unknown, vec![20, 25, 1001]);
        assert_eq!(index.get(990).map(|e| e.stamp), Some(500));
        assert_eq!(index.get(40).map(|e| e.stamp), Some(0));
        // At 900 ms the unstamped entries (deadline 1000) are due before 1100; the stamped
        // ones (deadline 1500) are not.
        let mut due = Vec::new();
        index.sweep(900, 1100, &mut due);
        let due: BTreeSet<u32> = due.iter().map(|e| e.id).collect();
        assert!(!due.contains(&5) && !due.contains(&10) && !due.contains(&990));
        assert!(due.contains(&40) && !due.contains(&20));
        assert!(!due.contains(&30));
        assert_eq!(due.len(), 100 - 5);
    }

    proptest! {
        /// The index agrees with a plain map under any sequence of operations.
        #[test]
        fn rx_index_matches_a_map(ops in proptest::collection::vec((0u8..4, 1u32..200, 0u32..8), 0..300)) {
            let mut index = RxIndex::default();
            let mut model: BTreeMap<u32, RxEntry> = BTreeMap::new();
            let mut now = 0u64;
            for (op, id, slot) in ops {
                now += 1;
                match op {
                    0 => {
                        let e = entry(id, slot, stamp_of(now));
                        index.insert(e);
                        model.insert(id, e);
                    }
                    1 => {
                        let removed = index.remove(id, Some(slot));
                        let expect = model.get(&id).is_some_and(|e| e.slot == slot);
                        prop_assert_eq!(removed, expect);
                        if expect {
                            model.remove(&id);
                        }
                    }
                    2 => {
                        let mut ids: Vec<u32> = (id..id + 20).collect();
                        if slot % 2 == 0 {
                            ids.reverse();
                        }
                        let mut unknown = Vec::new();
                        let n = index.stamp_all(ids.iter().copied(), now, &mut unknown);
                        let mut expect_unknown = Vec::new();
                        let mut expect_n = 0;
                        for i in &ids {
                            match model.get_mut(i) {
                                Some(e) => { e.stamp = stamp_of(now); expect_n += 1; }
                                None => expect_unknown.push(*i),
                            }
                        }
                        prop_assert_eq!(n, expect_n);
                        prop_assert_eq!(unknown, expect_unknown);
                    }
                    _ => {
                        let mut due = Vec::new();
                        index.sweep(now, now + 500, &mut due);
                    }
                }
                prop_assert_eq!(index.len(), model.len());
                for (id, e) in &model {
                    prop_assert_eq!(index.get(*id), Some(e));
                }
                let listed: BTreeSet<u32> = index.entries().map(|e| e.id).collect();
                prop_assert_eq!(listed, model.keys().copied().collect::<BTreeSet<u32>>());
            }
        }

        /// The summary agrees with a set, and slices cover it.
        #[test]
        fn summary_matches_a_set(ops in proptest::collection::vec((any::<bool>(), 1u32..300), 0..300)) {
            let mut summary = Summary::default();
            let mut model: BTreeSet<u32> = BTreeSet::new();
            for (add, id) in ops {
                if add {
                    prop_assert_eq!(summary.insert(id), model.insert(id));
                } else {
                    prop_assert_eq!(summary.remove(id), model.remove(&id));
                }
                prop_assert_eq!(summary.len(), model.len());
                let mut slice = Vec::new();
                summary.next_slice(model.len(), &mut slice);
                let got: BTreeSet<u32> = slice.iter().copied().collect();
                prop_assert_eq!(&got, &model);
                prop_assert_eq!(summary.iter().collect::<BTreeSet<u32>>(), model.clone());
            }
        }
    }
}
