//! Bounds on what the network can make the engine hold and send (see
//! [Bounds](super#bounds)): the per-neighbor table (quotas, token buckets), the accounting of
//! state bytes against [`EngineConfig::max_state_bytes`](super::EngineConfig::max_state_bytes),
//! and the answer budget of the datagram being processed.
//!
//! A *neighbor* is the IP source address of received datagrams. State created by a datagram
//! (a session, a path state, a reservation state) records the neighbor's slot in this table;
//! `take` subtracts a session's contribution from its neighbors' counts and `put` adds it back,
//! so every way state goes away (teardown, expiry, release) is accounted without the handlers
//! knowing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use super::state::Session;
use super::timer::Ms;
use super::{Engine, NeighborLimits};

/// The neighbor slot of state that no neighbor is charged for (created by local delivery).
pub(crate) const NO_NEIGHBOR: u32 = u32::MAX;

/// Bytes the accounting charges for one session besides its lists: its slab slot and its
/// share of the key index and timer wheel.
pub(crate) const SESSION_BYTES: usize = std::mem::size_of::<Option<Session>>() + 16;

/// Bytes the accounting charges for one tracked neighbor (entry and map slot).
pub(crate) const NEIGHBOR_BYTES: usize =
    std::mem::size_of::<Neighbor>() + std::mem::size_of::<(IpAddr, u32)>() + 8;

/// Most messages held back for a later send at once (see [`Answering`]); more are suppressed.
pub(crate) const MAX_DEFERRED: usize = 1024;

/// A token bucket in milli-tokens: `rate` tokens per second refill it up to `burst`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    milli: u64,
    at: Ms,
}

impl Bucket {
    fn full(burst: u32, now: Ms) -> Self {
        Bucket {
            milli: u64::from(burst) * 1000,
            at: now,
        }
    }

    fn refill(&mut self, rate: u32, burst: u32, now: Ms) {
        let elapsed = now.saturating_sub(self.at);
        // Tokens per second are milli-tokens per millisecond.
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(u64::from(rate)))
            .min(u64::from(burst) * 1000);
        self.at = self.at.max(now);
    }

    /// Takes one token if there is one.
    fn take(&mut self, rate: u32, burst: u32, now: Ms) -> bool {
        self.refill(rate, burst, now);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }

    fn is_full(&mut self, rate: u32, burst: u32, now: Ms) -> bool {
        self.refill(rate, burst, now);
        self.milli >= u64::from(burst) * 1000
    }
}

/// What the engine holds for and allows one neighbor.
#[derive(Debug, Clone)]
pub(crate) struct Neighbor {
    pub(crate) addr: IpAddr,
    /// Sessions a Path of this neighbor created, alive.
    pub(crate) sessions: u32,
    /// Path states (PSBs) from this neighbor.
    pub(crate) paths: u32,
    /// Reservation states (RSBs) from this neighbor.
    pub(crate) resvs: u32,
    /// New state this neighbor may create.
    pub(crate) new_state: Bucket,
    /// Error messages and held-back answers this neighbor may cause.
    pub(crate) answers: Bucket,
}

impl Neighbor {
    fn holds_state(&self) -> bool {
        self.sessions > 0 || self.paths > 0 || self.resvs > 0
    }
}

/// The table of neighbors: a slab (state records slots) and an address map.
#[derive(Debug, Default)]
pub(crate) struct Neighbors {
    slots: Vec<Option<Neighbor>>,
    free: Vec<u32>,
    by_addr: HashMap<IpAddr, u32>,
    /// No sweep for idle neighbors before this (a sweep that found none waits a while).
    next_sweep: Ms,
}

impl Neighbors {
    pub(crate) fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub(crate) fn get_mut(&mut self, slot: u32) -> Option<&mut Neighbor> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// The slot of `addr`, tracked anew if needed; `None` when the table is full of neighbors
    /// that hold state or were heard recently.
    fn slot(&mut self, addr: IpAddr, limits: &NeighborLimits, now: Ms) -> Option<u32> {
        if let Some(&slot) = self.by_addr.get(&addr) {
            return Some(slot);
        }
        if self.by_addr.len() >= limits.max_neighbors {
            self.sweep(limits, now);
            if self.by_addr.len() >= limits.max_neighbors {
                return None;
            }
        }
        let neighbor = Neighbor {
            addr,
            sessions: 0,
            paths: 0,
            resvs: 0,
            new_state: Bucket::full(limits.new_state_burst, now),
            answers: Bucket::full(limits.answer_burst, now),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(neighbor);
                slot
            }
            None => {
                self.slots.push(Some(neighbor));
                u32::try_from(self.slots.len() - 1).ok()?
            }
        };
        self.by_addr.insert(addr, slot);
        Some(slot)
    }

    /// Forgets every neighbor that holds no state and whose buckets are full again (it has
    /// been quiet for as long as they take to refill): nothing is lost by forgetting it.
    fn sweep(&mut self, limits: &NeighborLimits, now: Ms) {
        if now < self.next_sweep {
            return;
        }
        let mut freed = 0;
        for (slot, place) in self.slots.iter_mut().enumerate() {
            let Some(n) = place else { continue };
            let idle = !n.holds_state()
                && n.new_state
                    .is_full(limits.new_state_rate, limits.new_state_burst, now)
                && n.answers
                    .is_full(limits.answer_rate, limits.answer_burst, now);
            if idle {
                self.by_addr.remove(&n.addr);
                *place = None;
                self.free.push(slot as u32);
                freed += 1;
            }
        }
        if freed == 0 {
            // All busy: do not scan again for every datagram of a flood.
            self.next_sweep = now.saturating_add(1000);
        }
    }
}

/// The datagram being answered: its source, what its answers may still take (its own length
/// in bytes, see [Bounds](super#bounds)), and when it arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answering {
    pub(crate) source: IpAddr,
    pub(crate) left: usize,
    pub(crate) now: Instant,
}

/// Why new state from the network was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The engine's state is at [`EngineConfig::max_state_bytes`](super::EngineConfig).
    Memory,
    /// The neighbor's quota or new-state rate, or a full neighbor table.
    Neighbor,
}

/// The kind of state a datagram wants to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NewState {
    /// A path state, in a new session when `session`; `owned` when a local owner opened the
    /// session (its path state is what the owner waits for: not refused by the state cap).
    Path { session: bool, owned: bool },
    /// A reservation state holding `filters` senders.
    Resv { filters: usize },
}

impl Engine {
    /// State bytes as accounted (see [`super::Stats::state_bytes`]).
    pub(super) fn accounted_bytes(&self) -> usize {
        usize::try_from(self.stats.state_bytes).unwrap_or(usize::MAX)
    }

    fn set_state_bytes(&mut self, bytes: usize) {
        self.stats.state_bytes = bytes as u64;
    }

    /// A session joins the slab (empty): charge its slot.
    pub(super) fn account_new_session(&mut self) {
        let bytes = self.accounted_bytes() + SESSION_BYTES;
        self.set_state_bytes(bytes);
    }

    /// A session leaves the slab (deleted): release its slot.
    pub(super) fn account_deleted_session(&mut self) {
        let bytes = self.accounted_bytes().saturating_sub(SESSION_BYTES);
        self.set_state_bytes(bytes);
    }

    /// The bytes of a session kept accounted while out (`take_unchanged`) went from `before`
    /// to `after`.
    pub(super) fn account_state_bytes(&mut self, before: usize, after: usize) {
        let bytes = (self.accounted_bytes() + after).saturating_sub(before);
        self.set_state_bytes(bytes);
    }

    /// A session is taken out of (`add == false`) or put back into (`add == true`) its slot:
    /// its lists' bytes and its neighbors' counts leave or join the totals.
    pub(super) fn account_session(&mut self, session: &Session, add: bool) {
        let heap = session.heap_bytes();
        let bytes = if add {
            self.accounted_bytes() + heap
        } else {
            self.accounted_bytes().saturating_sub(heap)
        };
        self.set_state_bytes(bytes);
        let step = |count: &mut u32| {
            *count = if add {
                count.saturating_add(1)
            } else {
                count.saturating_sub(1)
            };
        };
        if session.creator != NO_NEIGHBOR {
            if let Some(n) = self.neighbors.get_mut(session.creator) {
                step(&mut n.sessions);
            }
        }
        for psb in &session.psbs {
            if let Some(n) = self.neighbors.get_mut(psb.from) {
                step(&mut n.paths);
            }
        }
        for rsb in &session.rsbs {
            if let Some(n) = self.neighbors.get_mut(rsb.from) {
                step(&mut n.resvs);
            }
        }
    }

    /// Whether the network may create state of `kind` now, charging the neighbor's new-state
    /// bucket: `Ok` with the neighbor slot to record in the state ([`NO_NEIGHBOR`] for state
    /// from local delivery, which is not limited), or why not (counted in [`super::Stats`]).
    ///
    /// `held` is the session the state goes into when the caller has taken it out of the slab
    /// (its contribution is then missing from the totals).
    pub(super) fn admit_state(
        &mut self,
        kind: NewState,
        held: Option<&Session>,
    ) -> Result<u32, Refusal> {
        let Some((source, now)) = self.origin else {
            return Ok(NO_NEIGHBOR);
        };
        let now = self.clock.ms(now);
        use std::mem::size_of;
        // The cap refuses unsolicited state: sessions no local owner opened and their path
        // states. A Resv's state is for a local sender and a Path's for an owner's session:
        // bounded by the owners (and the neighbor quotas below), so a flood that fills the
        // cap does not keep the owners' reservations from being set up.
        let cost = match kind {
            NewState::Path {
                session,
                owned: false,
            } => Some(size_of::<super::state::Psb>() + if session { SESSION_BYTES } else { 0 }),
            NewState::Path { owned: true, .. } | NewState::Resv { .. } => None,
        };
        let held_bytes = held.map_or(0, Session::heap_bytes);
        let total = self.accounted_bytes() + NEIGHBOR_BYTES * self.neighbors.len();
        if cost.is_some_and(|cost| total + held_bytes + cost > self.config.max_state_bytes) {
            self.stats.memory_refused += 1;
            self.stats.memory_full = true;
            tracing::debug!(%source, bytes = total, "state memory cap reached; new state refused");
            return Err(Refusal::Memory);
        }
        if cost.is_some() {
            self.stats.memory_full = false;
        }
        let limits = &self.config.neighbor_limits;
        let Some(slot) = self.neighbors.slot(source, limits, now) else {
            self.stats.neighbor_refused += 1;
            tracing::debug!(%source, "neighbor table full; new state refused");
            return Err(Refusal::Neighbor);
        };
        let in_held = |f: &dyn Fn(&Session) -> usize| held.map_or(0, f);
        let held_paths = in_held(&|s| s.psbs.iter().filter(|p| p.from == slot).count());
        let held_resvs = in_held(&|s| s.rsbs.iter().filter(|r| r.from == slot).count());
        let held_session = in_held(&|s| usize::from(s.creator == slot));
        let Some(n) = self.neighbors.get_mut(slot) else {
            return Err(Refusal::Neighbor);
        };
        let over = match kind {
            NewState::Path { session, .. } => {
                n.paths as usize + held_paths >= limits.paths
                    || (session && n.sessions as usize + held_session >= limits.sessions)
            }
            NewState::Resv { .. } => n.resvs as usize + held_resvs >= limits.reservations,
        };
        if over
            || !n
                .new_state
                .take(limits.new_state_rate, limits.new_state_burst, now)
        {
            self.stats.neighbor_refused += 1;
            tracing::debug!(%source, ?kind, quota = over, "neighbor quota or rate reached; new state refused");
            return Err(Refusal::Neighbor);
        }
        Ok(slot)
    }

    /// Takes one answer token of the neighbor whose datagram is being answered.
    pub(super) fn take_answer_token(&mut self, source: IpAddr, now: Instant) -> bool {
        let now = self.clock.ms(now);
        let limits = &self.config.neighbor_limits;
        let Some(slot) = self.neighbors.slot(source, limits, now) else {
            return false;
        };
        let (rate, burst) = (limits.answer_rate, limits.answer_burst);
        self.neighbors
            .get_mut(slot)
            .is_some_and(|n| n.answers.take(rate, burst, now))
    }
}
