//! Refresh rounds: the steady per-state work of soft state goes by walks over the session
//! slab in slot order instead of by each state's own timer. Without refresh reduction that
//! work is the classic refreshes themselves, one walk per refresh period; with it, only the
//! summarized states' safety-net look (see the end).
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
//! per-session timers.
//!
//! With refresh reduction the per-neighbor summaries batch the refreshes of acknowledged
//! state (`reduction.rs`); the round then has laps of `16 R` and carries only the safety-net
//! look at each summarized state (which puts its id back in its neighbor's summary), and the
//! other steady refreshes (to neighbors without refresh reduction) keep their own jittered
//! timers.

use std::time::Instant;

use rand::Rng;

use super::state::Fast;
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
    /// The remainder of the ticks drawn so far (in `1/2T` ms), carried into the next one so
    /// that the ticks' mean stays exactly `lap/T` whatever `T`.
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
    /// Whether steady full refreshes go by rounds: without refresh reduction. (With it, only
    /// the summarized states' checks do, see [`Self::summarized`].)
    pub(super) fn classic_rounds(&self) -> bool {
        !self.config.refresh_reduction
    }

    /// How long a lap lasts on average: `R` for classic refreshes; with refresh reduction the
    /// summarized states' check period (`16 R`).
    fn lap_ms(&self) -> Ms {
        if self.classic_rounds() {
            self.refresh_ms()
        } else {
            self.summary_check()
        }
    }

    /// When a state that just sent (or was just answered) is next due in the round: half a
    /// lap from `now`. Starts the round if it was idle.
    pub(super) fn round_join(&mut self, now: Ms) -> Ms {
        if self.round.due == NEVER {
            self.round.due = now.saturating_add(self.round_tick(self.sessions.len()));
        }
        now.saturating_add(self.lap_ms() / 2)
    }

    /// A state's refresh was summarized (RFC 2961: its neighbor's Srefresh ticks refresh
    /// it): the round looks in on it again after half a lap to a lap and a half (`8 R` to
    /// `24 R`), a safety net that puts its id back in the summary, in slot order instead of
    /// by a timer per state. Returns its next check.
    pub(super) fn summarized(&mut self, fast: &mut Fast, now: Ms) -> Ms {
        fast.left = 0;
        fast.on_round = true;
        self.round_join(now)
    }

    /// A tick's interval for a slab of `slots`: `lap/T`, jittered uniformly by ±50 %.
    fn round_tick(&mut self, slots: usize) -> Ms {
        let parts = 2 * lap_ticks(slots);
        let r = self.lap_ms();
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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::{Duration, Instant};

    use super::super::{Engine, EngineConfig, Incoming, RuleAction, SessionKey, Style};
    use crate::flow::AdmitAll;
    use crate::wire::intserv::{FlowSpec, TokenBucket};

    const SENDER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const RECEIVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    const R: Duration = Duration::from_secs(1);

    fn engine(addr: IpAddr, seed: u64) -> Engine {
        let config = EngineConfig {
            refresh_period: R,
            rng_seed: seed,
            local_addrs: vec![addr],
            ..EngineConfig::default()
        };
        Engine::new(config, Box::new(AdmitAll))
    }

    /// Runs both engines' timers and moves their datagrams until `end`.
    fn run(engines: &mut [Engine; 2], now: &mut Instant, end: Instant) {
        loop {
            for (from, to) in [(0, 1), (1, 0)] {
                while let Some(t) = engines[from].poll_transmit() {
                    let source = t.source.unwrap_or([SENDER, RECEIVER][from]);
                    engines[to].handle_datagram(
                        *now,
                        Incoming {
                            source,
                            destination: t.destination,
                            ttl: Some(t.ttl),
                            payload: &t.payload,
                        },
                    );
                }
            }
            while let Some(action) = engines[0].poll_action() {
                if let RuleAction::Install { rule, .. } = action {
                    engines[0].rule_outcome(*now, rule.id, Ok(()));
                }
            }
            if engines.iter().any(Engine::has_transmit) {
                continue;
            }
            let next = engines.iter().filter_map(Engine::poll_timeout).min();
            match next {
                Some(at) if at <= end => {
                    *now = (*now).max(at);
                    for e in engines.iter_mut() {
                        e.handle_timeout(*now);
                    }
                }
                _ => break,
            }
        }
        *now = end;
    }

    /// With refresh reduction, the round's look at a summarized state is the safety net that
    /// puts its id back in its neighbor's summary: an id lost from the summary comes back
    /// (or, once the neighbor's state expired, the NACK of it brings a full Path), and every
    /// session keeps its path state at the receiver.
    #[test]
    fn the_round_puts_a_summarized_id_lost_from_its_summary_back() {
        let mut now = Instant::now();
        let mut engines = [engine(SENDER, 1), engine(RECEIVER, 2)];
        let spec = FlowSpec::ControlledLoad(TokenBucket::new(1000.0, 1000.0));
        for port in 1..=3u16 {
            let key = SessionKey {
                destination: SocketAddr::new(RECEIVER, port),
                protocol: 6,
            };
            let c = engines[1].open_session(now, key).unwrap();
            engines[1]
                .reserve(now, c, Style::FixedFilter, spec, false)
                .unwrap();
            let s = engines[0].open_session(now, key).unwrap();
            engines[0]
                .add_sender(
                    now,
                    s,
                    SocketAddr::new(SENDER, 9000),
                    TokenBucket::new(1000.0, 1000.0),
                )
                .unwrap();
        }
        let end = now + R * 5;
        run(&mut engines, &mut now, end);
        let ids = |e: &Engine| -> Vec<u32> {
            e.sessions
                .iter()
                .flatten()
                .flat_map(|s| s.senders.iter().map(|l| l.tx_id))
                .collect()
        };
        let held = ids(&engines[0]);
        assert_eq!(held.len(), 3);
        assert!(held.iter().all(|&id| engines[0].in_summary(RECEIVER, id)));
        engines[0].lose_from_summaries(held[0]);
        assert!(!engines[0].in_summary(RECEIVER, held[0]));
        // A lap and a half of the round (16 R each) later, at most.
        let end = now + R * 30;
        run(&mut engines, &mut now, end);
        let held = ids(&engines[0]);
        assert!(
            held.iter().all(|&id| engines[0].in_summary(RECEIVER, id)),
            "ids {held:?} not all summarized again"
        );
        let paths = engines[1]
            .sessions
            .iter()
            .flatten()
            .filter(|s| s.psbs.len() == 1)
            .count();
        assert_eq!(paths, 3, "path state lost at the receiver");
    }
}
