//! Soft state in time: refresh intervals and jitter, state lifetimes, fast retransmission
//! and peer waits, and what happens when a session's deadline falls due.
//!
//! The timer wheel and clock themselves are in [`timer`](super::timer); this is the engine
//! side that decides the deadlines and acts on them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::path::path_state_lost;
use super::rules::Loss;
use super::state::{Fast, OnRound, Session};
use super::timer::{duration_ms_ceil, Ms, NEVER};
use super::{Engine, Event, SessionId, MAX_REFRESH_PERIOD, MIN_REFRESH_PERIOD};

/// [`MIN_REFRESH_PERIOD`] and [`MAX_REFRESH_PERIOD`] in milliseconds (both fit TIME_VALUES'
/// 32 bits).
const MIN_REFRESH_MS: u32 = MIN_REFRESH_PERIOD.as_millis() as u32;
const MAX_REFRESH_MS: u32 = MAX_REFRESH_PERIOD.as_millis() as u32;

impl Engine {
    pub(super) fn refresh_ms(&self) -> Ms {
        duration_ms_ceil(self.config.refresh_period)
            .clamp(u64::from(MIN_REFRESH_MS), u64::from(MAX_REFRESH_MS))
    }

    /// A peer's refresh period `R` from its TIME_VALUES (not zero), clamped to
    /// [`MIN_REFRESH_PERIOD`]`..=`[`MAX_REFRESH_PERIOD`]: the lifetime of the state it
    /// refreshes follows from it, and an `R` of 2^32 - 1 ms would keep that state for
    /// 261 days. A clamped value is counted and logged.
    pub(super) fn peer_refresh(&mut self, r: u32) -> u32 {
        let clamped = r.clamp(MIN_REFRESH_MS, MAX_REFRESH_MS);
        if clamped != r {
            self.stats.refresh_clamped += 1;
            tracing::debug!(
                refresh_ms = r,
                clamped_ms = clamped,
                "peer refresh period out of range; clamped"
            );
        }
        clamped
    }

    /// Our refresh period as carried in TIME_VALUES.
    pub(super) fn refresh_ms_u32(&self) -> u32 {
        u32::try_from(self.refresh_ms()).unwrap_or(u32::MAX)
    }

    /// State lifetime for a peer refreshing every `peer_r` ms: `(K + 0.5) · 1.5 · R`, rounded
    /// up, plus one tick so that it is never early.
    pub(super) fn lifetime(&self, peer_r: u32) -> Ms {
        lifetime_ms(self.config.keep_multiplier, peer_r)
    }

    pub(super) fn fast_start(&self) -> Fast {
        Fast {
            left: u8::try_from(self.config.fast_retransmit_count).unwrap_or(u8::MAX),
            round: OnRound::No,
        }
    }

    /// When a state in steady refresh (answered, or its fast retransmissions made) may be
    /// sent next by the refresh round (`round.rs`), which sends it then.
    pub(super) fn steady_refresh(&mut self, now: Ms) -> Ms {
        self.round_join(OnRound::Refresh, now)
    }

    /// The delay until the next fast retransmission when `left` remain: the initial delay,
    /// times [`retransmit_factor`](super::EngineConfig::retransmit_factor) for each
    /// retransmission already made, at most `u32::MAX` ms.
    fn fast_delay(&self, left: u8) -> Ms {
        let made = self.fast_start().left.saturating_sub(left);
        let cap = u64::from(u32::MAX);
        let factor = u64::from(self.config.retransmit_factor.max(1));
        let mut delay = duration_ms_ceil(self.config.fast_retransmit_initial).min(cap);
        for _ in 0..made {
            delay = delay.saturating_mul(factor).min(cap);
        }
        delay
    }

    /// The deadline of a peer wait that starts at `now` ([`NEVER`] when waits are off).
    pub(super) fn peer_wait_until(&self, now: Ms) -> Ms {
        self.config
            .peer_wait
            .map_or(NEVER, |wait| now.saturating_add(duration_ms_ceil(wait)))
    }

    /// How long a peer wait due at `at` has lasted at `now` (the configured wait, plus how
    /// late the timer ran).
    fn waited(&self, at: Ms, now: Ms) -> Duration {
        let wait = self.config.peer_wait.map_or(0, duration_ms_ceil);
        Duration::from_millis(wait.saturating_add(now.saturating_sub(at)))
    }

    /// When to send next after a send: the next fast retransmission while unanswered, else a
    /// jittered refresh.
    pub(super) fn after_send(&mut self, fast: &mut Fast, answered: bool, now: Ms) -> Ms {
        if !answered && fast.left < self.fast_start().left {
            // Sent again while unanswered (a staged retransmission).
            self.stats.retransmissions += 1;
        }
        if !answered && fast.left > 0 {
            let delay = self.fast_delay(fast.left);
            fast.left -= 1;
            fast.round = OnRound::No;
            now.saturating_add(delay)
        } else {
            fast.left = 0;
            fast.round = OnRound::Refresh;
            self.steady_refresh(now)
        }
    }

    pub(super) fn on_timeout(&mut self, now: Instant) {
        let now = self.clock.ms(now);
        while let Some((at, slot)) = self.timers.pop_due(now) {
            let Some(session) = self.sessions.get(slot as usize).and_then(Option::as_ref) else {
                continue;
            };
            if session.scheduled != at {
                // Stale entry: the session rescheduled since (nothing to do, not even a
                // `take`).
                continue;
            }
            // Summary refreshes stamped only the neighbors' indexes: the deadlines catch up
            // first.
            if self.config.refresh_reduction {
                self.catch_up(slot, now);
            }
            let Some(session) = self.sessions.get(slot as usize).and_then(Option::as_ref) else {
                continue;
            };
            // Only expiry removes state here: without it (refreshes sent, waits ended) no list
            // changes and the session skips the accounting walks of `take` + `put`.
            let expiring = session.psbs.iter().any(|p| p.expires_at <= now)
                || session.rsbs.iter().any(|r| r.expires_at <= now);
            let taken = if expiring {
                self.take(slot)
            } else {
                self.take_unchanged(slot)
            };
            let Some(mut session) = taken else {
                continue;
            };
            session.scheduled = NEVER;
            #[cfg(debug_assertions)]
            let before = (session.heap_bytes(), session.psbs.len(), session.rsbs.len());
            self.run_timers(slot, &mut session, now);
            #[cfg(debug_assertions)]
            if !expiring {
                let after = (session.heap_bytes(), session.psbs.len(), session.rsbs.len());
                debug_assert_eq!(before, after, "a timer without expiry changed the lists");
            }
            if expiring {
                self.put(slot, session);
            } else {
                self.put_unchanged(slot, session);
            }
            self.flush();
        }
    }

    fn run_timers(&mut self, slot: u32, session: &mut Session, now: Ms) {
        for index in 0..session.senders.len() {
            let local = &session.senders[index];
            if local.fast.timed(local.next_at) <= now {
                self.send_path(session, index, now);
            }
            let local = &mut session.senders[index];
            if local.wait_at <= now {
                // No Resv (nor PathErr) answered our Path in time: say so, once. Nothing is
                // sent; the Path goes on being refreshed and a late Resv still establishes.
                let (at, owner, sender) = (local.wait_at, local.owner, local.sender);
                local.wait_at = NEVER;
                let waited = self.waited(at, now);
                tracing::debug!(session = ?session.key, %sender, ?waited, "no resv yet: no receiver");
                self.emit(owner, Event::NoReceiver { waited });
            }
        }
        if session.psbs.iter().any(|p| p.expires_at <= now) {
            let mut expired: Vec<SocketAddr> = Vec::new();
            session.psbs.retain(|p| {
                let gone = p.expires_at <= now;
                if gone {
                    expired.push(p.sender);
                }
                !gone
            });
            self.stats.expired += expired.len() as u64;
            let audience: Vec<SessionId> = session.audience().collect();
            for sender in expired {
                tracing::debug!(session = ?session.key, %sender, "path state expired");
                for &id in &audience {
                    self.emit(
                        id,
                        Event::Expired {
                            reason: format!("path state of sender {sender} expired"),
                        },
                    );
                }
            }
            path_state_lost(session);
        }
        if session.rsbs.iter().any(|r| r.expires_at <= now) {
            let before = session.rsbs.len();
            session.rsbs.retain(|r| r.expires_at > now);
            self.stats.expired += (before - session.rsbs.len()) as u64;
            tracing::debug!(session = ?session.key, "reservation state expired");
            self.reconcile(slot, session, Loss::Expired);
        }
        if session
            .recv
            .as_ref()
            .is_some_and(|r| r.fast.timed(r.next_at) <= now)
        {
            self.send_resvs(session, now);
        }
        if let Some(recv) = session.recv.as_deref_mut().filter(|r| r.wait_at <= now) {
            // No Path arrived in time (the wait is disarmed by the first one): say so, once.
            // The request stays primed; a late Path still gets its Resv.
            let at = recv.wait_at;
            recv.wait_at = NEVER;
            let waited = self.waited(at, now);
            tracing::debug!(session = ?session.key, ?waited, "no path yet: no sender");
            let receivers: Vec<SessionId> = session.receivers().map(|(id, _)| id).collect();
            for id in receivers {
                self.emit(id, Event::NoSender { waited });
            }
        }
    }
}

/// State lifetime for a peer refreshing every `peer_r` ms with keep multiplier `keep`:
/// `(K + 0.5) · 1.5 · R`, rounded up, plus one tick so that it is never early.
pub(super) fn lifetime_ms(keep: u32, peer_r: u32) -> Ms {
    let k = u64::from(keep.max(1));
    let r = u64::from(peer_r);
    (2 * k + 1)
        .saturating_mul(3)
        .saturating_mul(r)
        .div_ceil(4)
        .saturating_add(1)
}

/// The first answer to a message stops its fast retransmission: the next send becomes a
/// steady refresh on the refresh round, at `refresh_at` at the soonest
/// ([`Engine::steady_refresh`]).
pub(super) fn answer(answered: &mut bool, fast: &mut Fast, next_at: &mut Ms, refresh_at: Ms) {
    if !*answered && fast.left > 0 && *next_at != NEVER {
        *next_at = refresh_at;
        fast.round = OnRound::Refresh;
    }
    *answered = true;
    fast.left = 0;
}

/// Whether a timer entry is the live one of its session.
pub(super) fn is_live(sessions: &[Option<Session>], at: Ms, slot: u32) -> bool {
    sessions
        .get(slot as usize)
        .and_then(Option::as_ref)
        .is_some_and(|s| s.scheduled == at)
}
