//! Classic refresh rounds: without refresh reduction, steady refreshes are sent by one walk
//! over the session slab per refresh period, in slot order, instead of by each state's own
//! timer.
//!
//! Why: at scale, per-state timers fire in random slab order, and every refresh then pays
//! cache misses for its session and lists on both engines (the receiver's sessions were
//! created by our Paths, in our order, so it profits too). A walk in slot order reads the
//! slab front to back.
//!
//! How: a lap of `T` ticks (`T` = max(16, slots / 64)) visits every slot once; tick `k`
//! visits slots `[k·n/T, (k+1)·n/T)`. Ticks are `R/T` apart, each jittered uniformly in
//! `[R/2T, 3R/2T]`, so a lap lasts `R` on average, its ticks (and this node's phase against
//! other nodes') are random, as RFC 2205 §3.7 asks to avoid synchronized refreshes, and no
//! lap lasts much beyond `R`.
//!
//! A state joins the round when its fast retransmissions end (answered, or all made): it is
//! then due at the first visit at least `R/2` after its last send, so its next refresh
//! comes after `R/2` to `R/2` plus a lap (about `3R/2`), and then once per lap: within
//! RFC 2205's `[R/2, 3R/2]`. Triggers, fast retransmissions, waits and expiries keep their
//! per-session timers. With refresh reduction the per-neighbor summaries batch refreshes
//! instead (`reduction.rs`), and rounds are off.

use std::time::Instant;

use rand::Rng;

use super::timer::{Ms, NEVER};
use super::Engine;

/// Slots a tick visits, about (the fewer, the smaller each burst of refreshes).
const SLOTS_PER_TICK: u64 = 64;
/// Ticks per lap at least, so that the lap's jitter averages out.
const MIN_TICKS: u64 = 16;

/// Where the round stands.
#[derive(Debug)]
pub(crate) struct Round {
    /// Next slot to visit.
    cursor: u32,
    /// Ticks in the current lap, fixed when it starts (0: no lap started).
    ticks: u32,
    /// Ticks done in the current lap.
    done: u32,
    /// When the next tick is due ([`NEVER`] while no lap runs).
    due: Ms,
    /// What whole milliseconds left of the ticks drawn so far, in `1/2T` ms: the ticks' mean
    /// stays exactly `R/T` whatever `T`.
    carry: u64,
}

impl Round {
    /// Idle: no lap runs until a state joins.
    pub(crate) const fn new() -> Self {
        Round {
            cursor: 0,
            ticks: 0,
            done: 0,
            due: NEVER,
            carry: 0,
        }
    }
}

impl Engine {
    /// Whether steady refreshes go by rounds (classic refreshes only).
    pub(super) fn rounds(&self) -> bool {
        !self.config.refresh_reduction
    }

    /// When a state that just sent (or was just answered) is next due in the round: `R/2`
    /// from `now`. Starts the round if it was idle.
    pub(super) fn round_join(&mut self, now: Ms) -> Ms {
        if self.round.due == NEVER {
            self.round.due = now.saturating_add(self.round_tick(self.sessions.len()));
        }
        now.saturating_add(self.refresh_ms() / 2)
    }

    /// A tick's interval for a slab of `slots`: `R/T`, jittered uniformly by ±50 %.
    fn round_tick(&mut self, slots: usize) -> Ms {
        let parts = 2 * lap_ticks(slots);
        let r = self.refresh_ms();
        let drawn = self.rng.random_range(r..=3 * r) + self.round.carry;
        self.round.carry = drawn % parts;
        drawn / parts
    }

    pub(super) fn round_due(&self) -> Option<Instant> {
        if self.round.due == NEVER {
            return None;
        }
        self.clock.instant(self.round.due)
    }

    /// Runs the round's ticks that are due: sends the refreshes due in the slots visited.
    pub(super) fn round_timeout(&mut self, now: Instant) {
        if self.round.due == NEVER {
            return;
        }
        let now = self.clock.ms(now);
        while self.round.due <= now {
            let slots = self.sessions.len();
            if self.round.done == self.round.ticks {
                if self.index.len() == 0 {
                    // Nothing to refresh: idle until a state joins again.
                    self.round = Round::new();
                    return;
                }
                self.round.cursor = 0;
                self.round.done = 0;
                self.round.ticks = u32::try_from(lap_ticks(slots)).unwrap_or(u32::MAX);
            }
            self.round.done += 1;
            let end = if self.round.done == self.round.ticks {
                slots
            } else {
                let share = slots as u64 * u64::from(self.round.done) / u64::from(self.round.ticks);
                usize::try_from(share).unwrap_or(slots)
            };
            let start = (self.round.cursor as usize).min(end);
            self.round.cursor = u32::try_from(end).unwrap_or(u32::MAX);
            for slot in start..end {
                self.round_visit(slot as u32, now);
            }
            let tick = self.round_tick(slots);
            self.round.due = self.round.due.saturating_add(tick).max(now);
        }
    }

    /// Sends the refreshes due in the session at `slot`.
    fn round_visit(&mut self, slot: u32, now: Ms) {
        let Some(session) = self.sessions.get(slot as usize).and_then(Option::as_ref) else {
            return;
        };
        let senders_due = session
            .senders
            .iter()
            .any(|s| s.fast.on_round && s.next_at <= now);
        let recv_due = session
            .recv
            .as_deref()
            .is_some_and(|r| r.fast.on_round && r.next_at <= now);
        if !senders_due && !recv_due {
            return;
        }
        let Some(mut session) = self.take_unchanged(slot) else {
            return;
        };
        for index in 0..session.senders.len() {
            let local = &session.senders[index];
            if local.fast.on_round && local.next_at <= now {
                self.send_path(&mut session, index, now);
            }
        }
        if recv_due {
            self.send_resvs(&mut session, now);
        }
        self.put_unchanged(slot, session);
        self.flush();
    }
}

/// Ticks in a lap over `slots` slots.
fn lap_ticks(slots: usize) -> u64 {
    (slots as u64).div_ceil(SLOTS_PER_TICK).max(MIN_TICKS)
}
