//! Refresh rounds: the steady per-state work of soft state goes by walks over the session
//! slab in slot order instead of by each state's own timer.
//!
//! Why: at scale, per-state timers fire in random slab order, and every refresh then pays
//! cache misses for its session and lists on both engines (the receiver's sessions were
//! created by our Paths, in our order, so it profits too). A walk in slot order reads the
//! slab front to back.
//!
//! Two rounds walk the slab, each over the states on it ([`OnRound`]):
//! - [`OnRound::Refresh`], laps of `R`: steady full refreshes (every refresh without refresh
//!   reduction; with it, those to neighbors that do not use it).
//! - [`OnRound::Check`], laps of `16 R`, with refresh reduction only: the safety-net look at
//!   each summarized state, which puts its id back in its neighbor's summary (its refreshes
//!   are the neighbor's Srefresh ticks, `reduction.rs`).
//!
//! How: a lap of `T` ticks (`T` = max(16, slots / 64)) visits every slot once; tick `k`
//! visits slots `[k·n/T, (k+1)·n/T)`. Ticks are `lap/T` apart, each jittered uniformly in
//! `[lap/2T, 3·lap/2T]`, so a lap lasts `lap` on average, its ticks (and this node's phase
//! against other nodes') are random, as RFC 2205 §3.7 asks to avoid synchronized refreshes,
//! and no lap lasts much beyond `lap`. A round idles after a lap that found no state on it
//! and that none joined.
//!
//! A state joins the refresh round when its fast retransmissions end (answered, or all
//! made): it is then due at the first visit at least `R/2` after its last send, so its next
//! refresh comes after `R/2` to `R/2` plus a lap (about `3R/2`), and then once per lap:
//! within RFC 2205's `[R/2, 3R/2]`. Triggers, fast retransmissions, waits and expiries keep
//! their per-session timers.

use std::time::Instant;

use rand::Rng;

use super::state::{Fast, OnRound};
use super::timer::{Ms, NEVER};
use super::Engine;

/// Slots a tick visits, about (the fewer, the smaller each burst of refreshes).
const SLOTS_PER_TICK: u64 = 64;
/// Ticks per lap at least, so that the lap's jitter averages out.
const MIN_TICKS: u64 = 16;

/// Where a round stands.
#[derive(Debug)]
pub(crate) struct Round {
    /// Next slot to visit.
    cursor: u32,
    /// Ticks in the current lap, fixed when it starts (0: no lap started).
    ticks: u32,
    /// Ticks done in the current lap.
    done: u32,
    /// When the next tick is due ([`NEVER`] while idle).
    due: Ms,
    /// The remainder of the ticks drawn so far (in `1/2T` ms), carried into the next one so
    /// that the ticks' mean stays exactly `lap/T` whatever `T`.
    carry: u64,
    /// This lap visited a state on the round...
    seen: bool,
    /// ...or one joined during it (perhaps behind the cursor): another lap follows.
    joined: bool,
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
            seen: false,
            joined: false,
        }
    }
}

/// The engine's two rounds: refresh, then check (see [`index`]).
pub(crate) fn rounds() -> [Round; 2] {
    [Round::new(), Round::new()]
}

/// The place of the `kind` round in the engine's rounds.
fn index(kind: OnRound) -> usize {
    usize::from(kind == OnRound::Check)
}

impl Engine {
    /// How long a lap of the `kind` round lasts on average.
    fn lap_ms(&self, kind: OnRound) -> Ms {
        if kind == OnRound::Check {
            self.summary_check()
        } else {
            self.refresh_ms()
        }
    }

    /// When a state that just sent (or was just answered) is next due on the `kind` round:
    /// half a lap from `now`. Starts the round if it was idle.
    pub(super) fn round_join(&mut self, kind: OnRound, now: Ms) -> Ms {
        let i = index(kind);
        self.rounds[i].joined = true;
        if self.rounds[i].due == NEVER {
            let tick = self.round_tick(kind, self.sessions.len());
            self.rounds[i].due = now.saturating_add(tick);
        }
        now.saturating_add(self.lap_ms(kind) / 2)
    }

    /// A state's refresh was summarized (RFC 2961: its neighbor's Srefresh ticks refresh
    /// it): the check round looks in on it again after half a lap to a lap and a half
    /// (`8 R` to `24 R`), a safety net that puts its id back in the summary. Returns its next
    /// check.
    pub(super) fn summarized(&mut self, fast: &mut Fast, now: Ms) -> Ms {
        fast.left = 0;
        fast.round = OnRound::Check;
        self.round_join(OnRound::Check, now)
    }

    /// A tick's interval for a slab of `slots`: `lap/T`, jittered uniformly by ±50 %.
    fn round_tick(&mut self, kind: OnRound, slots: usize) -> Ms {
        let parts = 2 * lap_ticks(slots);
        let lap = self.lap_ms(kind);
        let round = &mut self.rounds[index(kind)];
        let drawn = self.rng.random_range(lap..=3 * lap) + round.carry;
        round.carry = drawn % parts;
        drawn / parts
    }

    /// When the next tick of either round is due.
    pub(super) fn round_due(&self) -> Option<Instant> {
        let due = self.rounds.iter().map(|r| r.due).min().unwrap_or(NEVER);
        if due == NEVER {
            return None;
        }
        self.clock.instant(due)
    }

    /// Runs the rounds' ticks that are due.
    pub(super) fn round_timeout(&mut self, now: Instant) {
        if self.rounds.iter().all(|r| r.due == NEVER) {
            return;
        }
        let now = self.clock.ms(now);
        for kind in [OnRound::Refresh, OnRound::Check] {
            self.run_round(kind, now);
        }
    }

    /// Runs the `kind` round's ticks due at `now`: visits their slots.
    fn run_round(&mut self, kind: OnRound, now: Ms) {
        let i = index(kind);
        while self.rounds[i].due <= now {
            let slots = self.sessions.len();
            let empty = self.index.len() == 0;
            let round = &mut self.rounds[i];
            if empty || round.done == round.ticks {
                if empty || (round.ticks != 0 && !round.seen && !round.joined) {
                    // Nothing on this round: idle until a state joins.
                    *round = Round::new();
                    return;
                }
                round.cursor = 0;
                round.done = 0;
                round.seen = false;
                round.joined = false;
                round.ticks = u32::try_from(lap_ticks(slots)).unwrap_or(u32::MAX);
            }
            round.done += 1;
            let end = if round.done == round.ticks {
                slots
            } else {
                let share = slots as u64 * u64::from(round.done) / u64::from(round.ticks);
                usize::try_from(share).unwrap_or(slots)
            };
            let start = (round.cursor as usize).min(end);
            round.cursor = u32::try_from(end).unwrap_or(u32::MAX);
            let mut seen = false;
            for slot in start..end {
                seen |= self.round_visit(kind, slot as u32, now);
            }
            let tick = self.round_tick(kind, slots);
            let round = &mut self.rounds[i];
            round.seen |= seen;
            round.due = round.due.saturating_add(tick).max(now);
        }
    }

    /// Sends what is due on the `kind` round in the session at `slot`; whether the session
    /// has a state on that round.
    fn round_visit(&mut self, kind: OnRound, slot: u32, now: Ms) -> bool {
        let Some(session) = self.sessions.get(slot as usize).and_then(Option::as_ref) else {
            return false;
        };
        let on = |fast: &Fast| fast.round == kind;
        let senders = session.senders.iter().filter(|s| on(&s.fast));
        let recv = session.recv.as_deref().filter(|r| on(&r.fast));
        let seen = senders.clone().next().is_some() || recv.is_some();
        let senders_due = senders.clone().any(|s| s.next_at <= now);
        let recv_due = recv.is_some_and(|r| r.next_at <= now);
        if !senders_due && !recv_due {
            return seen;
        }
        let Some(mut session) = self.take_unchanged(slot) else {
            return seen;
        };
        for index in 0..session.senders.len() {
            let local = &session.senders[index];
            if on(&local.fast) && local.next_at <= now {
                self.send_path(&mut session, index, now);
            }
        }
        if recv_due {
            self.send_resvs(&mut session, now);
        }
        self.put_unchanged(slot, session);
        self.flush();
        seen
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
    use super::{index, OnRound, NEVER};
    use crate::flow::AdmitAll;
    use crate::wire::intserv::{FlowSpec, TokenBucket};

    const SENDER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const RECEIVER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    const R: Duration = Duration::from_secs(1);

    fn engine(addr: IpAddr, seed: u64, refresh_reduction: bool) -> Engine {
        let config = EngineConfig {
            refresh_period: R,
            rng_seed: seed,
            local_addrs: vec![addr],
            refresh_reduction,
            ..EngineConfig::default()
        };
        Engine::new(config, Box::new(AdmitAll))
    }

    /// `n` sessions from the sender (engine 0) to the receiver (engine 1), asked for at `now`.
    fn sessions(engines: &mut [Engine; 2], now: Instant, n: u16) {
        let spec = FlowSpec::ControlledLoad(TokenBucket::new(1000.0, 1000.0));
        for port in 1..=n {
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
    }

    /// A sender with refresh reduction and a receiver with it or not, `n` sessions between
    /// them, run for `periods` refresh periods; and the time then.
    fn pair(receiver_rr: bool, n: u16, periods: u32) -> ([Engine; 2], Instant) {
        let mut now = Instant::now();
        let mut engines = [engine(SENDER, 1, true), engine(RECEIVER, 2, receiver_rr)];
        sessions(&mut engines, now, n);
        let end = now + R * periods;
        run(&mut engines, &mut now, end);
        (engines, now)
    }

    /// Sessions of `engine` with path state.
    fn path_states(engine: &Engine) -> usize {
        let sessions = engine.sessions.iter().flatten();
        sessions.filter(|s| s.psbs.len() == 1).count()
    }

    /// Whether the `kind` round of `engine` runs.
    fn running(engine: &Engine, kind: OnRound) -> bool {
        engine.rounds[index(kind)].due != NEVER
    }

    /// With refresh reduction on both ends, each state passes the refresh round once (its
    /// first refresh is summarized) and then stays on the check round: the refresh round
    /// idles. With a receiver that does not use refresh reduction, the sender's full
    /// refreshes go by the refresh round, and the receiver keeps its path state.
    #[test]
    fn the_refresh_round_runs_only_while_full_refreshes_are_sent() {
        let (engines, _) = pair(true, 20, 5);
        for e in &engines {
            assert!(!running(e, OnRound::Refresh));
            assert!(running(e, OnRound::Check));
        }

        let (engines, _) = pair(false, 20, 30);
        assert!(running(&engines[0], OnRound::Refresh));
        assert!(!running(&engines[0], OnRound::Check));
        assert_eq!(engines[1].stats().expired, 0);
        assert_eq!(path_states(&engines[1]), 20);
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
        let (mut engines, mut now) = pair(true, 3, 5);
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
        assert_eq!(
            path_states(&engines[1]),
            3,
            "path state lost at the receiver"
        );
    }
}
