//! The session index: [`SessionKey`] → slab slot, as an open-addressing table of 4-byte
//! entries (the keys live in the sessions themselves). A `HashMap<SessionKey, u32>` would
//! cost 40 bytes per bucket; this costs 4: the slot in the low 24 bits and 8 bits of the
//! key's hash above them, so that a probe only reads a session when the tags match. Hashing
//! a key is a few multiplications with a per-engine random seed (so that remote peers cannot
//! aim for collisions).

use std::cell::Cell;
use std::hash::BuildHasher;
use std::net::SocketAddr;

use super::state::Session;
use super::SessionKey;

const EMPTY: u32 = u32::MAX;
const SLOT_MASK: u32 = (1 << 24) - 1;

/// The table entry for `slot` with hash `hash`.
fn entry(hash: u64, slot: u32) -> u32 {
    ((hash >> 56) as u32) << 24 | (slot & SLOT_MASK)
}

#[derive(Debug)]
pub(crate) struct KeyIndex {
    table: Vec<u32>,
    len: usize,
    seed: u64,
    /// The slot after the last one found: tried first. Refreshes come in slot order (a
    /// classic neighbor's refresh rounds walk its sessions in the order it created them, the
    /// order its first Paths created ours in), and the session after the last one is in
    /// cache when the table's line is not.
    guess: Cell<u32>,
}

impl KeyIndex {
    pub(crate) fn new() -> Self {
        KeyIndex {
            table: Vec::new(),
            len: 0,
            seed: std::hash::RandomState::new().hash_one(0x5eed_u64),
            guess: Cell::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.table.capacity() * 4
    }

    fn hash(&self, key: &SessionKey) -> u64 {
        let (a, b) = match key.destination {
            SocketAddr::V4(v4) => (u64::from(v4.ip().to_bits()), 0),
            SocketAddr::V6(v6) => {
                let bits = v6.ip().to_bits();
                (bits as u64, (bits >> 64) as u64)
            }
        };
        let c = u64::from(key.destination.port()) | u64::from(key.protocol) << 16;
        let mut h = self.seed;
        for word in [a, b, c] {
            h = (h ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 29;
        }
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^ (h >> 32)
    }

    fn mask(&self) -> usize {
        self.table.len().wrapping_sub(1)
    }

    /// The slot of `key`. Sessions taken out of the slab are skipped.
    pub(crate) fn get(&self, key: &SessionKey, sessions: &[Option<Session>]) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        // Keys are unique in the slab: a session there with this key is the one.
        let guess = self.guess.get();
        if sessions
            .get(guess as usize)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.key == *key)
        {
            self.guess.set(guess.wrapping_add(1));
            return Some(guess);
        }
        let mask = self.mask();
        let hash = self.hash(key);
        let tag = entry(hash, 0);
        let mut i = hash as usize & mask;
        loop {
            let found = self.table[i];
            if found == EMPTY {
                return None;
            }
            let slot = found & SLOT_MASK;
            if found & !SLOT_MASK == tag
                && sessions
                    .get(slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| s.key == *key)
            {
                self.guess.set(slot.wrapping_add(1));
                return Some(slot);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `key` → `slot` (the key must not be present).
    pub(crate) fn insert(&mut self, key: &SessionKey, slot: u32, sessions: &[Option<Session>]) {
        if (self.len + 1) * 8 > self.table.len() * 7 {
            self.grow(sessions);
        }
        let mask = self.mask();
        let hash = self.hash(key);
        let mut i = hash as usize & mask;
        while self.table[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.table[i] = entry(hash, slot);
        self.len += 1;
    }

    fn grow(&mut self, sessions: &[Option<Session>]) {
        let size = (self.table.len() * 2).max(16);
        let old = std::mem::replace(&mut self.table, vec![EMPTY; size]);
        let mask = self.mask();
        for slot in old
            .into_iter()
            .filter(|s| *s != EMPTY)
            .map(|s| s & SLOT_MASK)
        {
            let Some(key) = sessions
                .get(slot as usize)
                .and_then(Option::as_ref)
                .map(|s| s.key)
            else {
                // Only present sessions are indexed while the table grows.
                debug_assert!(false, "indexed slot {slot} has no session");
                continue;
            };
            let hash = self.hash(&key);
            let mut i = hash as usize & mask;
            while self.table[i] != EMPTY {
                i = (i + 1) & mask;
            }
            self.table[i] = entry(hash, slot);
        }
    }

    /// Removes `slot`, whose key is `key` (the session may be out of the slab).
    pub(crate) fn remove(&mut self, key: &SessionKey, slot: u32, sessions: &[Option<Session>]) {
        if self.table.is_empty() {
            return;
        }
        let mask = self.mask();
        let mut i = self.hash(key) as usize & mask;
        loop {
            match self.table[i] {
                EMPTY => return,
                s if s & SLOT_MASK == slot => break,
                _ => i = (i + 1) & mask,
            }
        }
        // Backward-shift deletion keeps every probe sequence unbroken without tombstones.
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let moved = self.table[j];
            if moved == EMPTY {
                break;
            }
            let Some(home) = sessions
                .get((moved & SLOT_MASK) as usize)
                .and_then(Option::as_ref)
                .map(|s| self.hash(&s.key) as usize & mask)
            else {
                continue;
            };
            // Move `moved` into the hole unless its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.table[hole] = moved;
                hole = j;
            }
        }
        self.table[hole] = EMPTY;
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn key(i: u32) -> SessionKey {
        let ip = if i.is_multiple_of(3) {
            IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64))
        } else {
            IpAddr::V4(Ipv4Addr::from(i / 7))
        };
        SessionKey {
            destination: SocketAddr::new(ip, (i % 7) as u16),
            protocol: 6,
        }
    }

    #[test]
    fn index_finds_what_was_inserted_and_forgets_what_was_removed() {
        let mut index = KeyIndex::new();
        let mut sessions: Vec<Option<Session>> = Vec::new();
        for i in 0..2000u32 {
            sessions.push(Some(Session::new(key(i))));
            index.insert(&key(i), i, &sessions);
        }
        assert_eq!(index.len(), 2000);
        for i in 0..2000u32 {
            assert_eq!(index.get(&key(i), &sessions), Some(i));
        }
        // Remove every other one (a session is removed while out of the slab).
        for i in (0..2000u32).step_by(2) {
            let session = sessions[i as usize].take().unwrap();
            index.remove(&session.key, i, &sessions);
        }
        for i in 0..2000u32 {
            let want = (i % 2 == 1).then_some(i);
            assert_eq!(index.get(&key(i), &sessions), want, "key {i}");
        }
        assert_eq!(index.len(), 1000);
        assert_eq!(index.get(&key(5000), &sessions), None);
    }

    #[test]
    fn the_guessed_next_slot_never_answers_for_another_key() {
        let mut index = KeyIndex::new();
        let mut sessions: Vec<Option<Session>> = Vec::new();
        for i in 0..64u32 {
            sessions.push(Some(Session::new(key(i))));
            index.insert(&key(i), i, &sessions);
        }
        // Out of order (each guess names another key's session), in order (each guess
        // answers), after the last slot, and for a slot whose session was taken out.
        for i in [40u32, 3, 17, 18, 19, 20, 63, 0, 1] {
            assert_eq!(index.get(&key(i), &sessions), Some(i), "key {i}");
        }
        let taken = sessions[2].take().unwrap();
        assert_eq!(index.get(&key(2), &sessions), None);
        assert_eq!(index.get(&key(1000), &sessions), None);
        sessions[2] = Some(taken);
        assert_eq!(index.get(&key(2), &sessions), Some(2));
    }
}
