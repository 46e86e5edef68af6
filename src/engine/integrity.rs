//! RFC 2747 INTEGRITY in the engine: the receive-side gate every datagram passes before it
//! is decoded, the signing of every transmit to a keyed neighbor, and the integrity
//! handshake (RFC 2747 §4.3 with RFC 3097's message types). The byte work (digest, window,
//! sequence arithmetic) is [`crate::integrity`]'s; this file holds the per-neighbor state and
//! the rules. See the module documentation's *Integrity* section.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::{Engine, Incoming, Transmit};
use crate::integrity::{self, IntegrityError, KeyChain, KeyId, ReplayWindow, Verified};
use crate::wire::{
    Challenge, Message, MsgType, Object, DEFAULT_SEND_TTL, INTEGRITY_FLAG_HANDSHAKE,
};

/// Least time between two Integrity Challenges to one neighbor about one key.
pub const CHALLENGE_RETRY: Duration = Duration::from_secs(1);
/// Most Integrity Responses sent to one neighbor per second (challenges carry no INTEGRITY,
/// so anyone can send them; the answers only ever go to keyed neighbors).
pub const RESPONSES_PER_SECOND: u32 = 4;
/// Most outstanding challenges, neighbors with a response budget and replay windows kept.
const MAX_PENDING: usize = 4096;
const MAX_RESPONDERS: usize = 4096;
const MAX_WINDOWS: usize = 1 << 16;

/// A challenge sent and not yet answered.
#[derive(Debug, Clone, Copy)]
struct Pending {
    cookie: u64,
    sent_at: Instant,
}

/// The engine's INTEGRITY state (see the module documentation).
#[derive(Debug, Default)]
pub(super) struct IntegrityState {
    /// The last sequence number sent (one counter for every key: increasing per key too).
    last_sequence: u64,
    /// The UNIX time at an instant, from [`Engine::set_wall_clock`].
    wall: Option<(Instant, Duration)>,
    /// The latest instant the engine was called at.
    now: Option<Instant>,
    warned_no_wall_clock: bool,
    /// Per (neighbor, key id): the sequence numbers seen.
    windows: HashMap<(IpAddr, KeyId), ReplayWindow>,
    /// Per (neighbor, key id): the challenge awaiting its response.
    pending: HashMap<(IpAddr, KeyId), Pending>,
    /// Per neighbor: responses sent in the current second (its start, the count).
    responses: HashMap<IpAddr, (Instant, u32)>,
    /// Cookie generator, seeded from the OS on first use.
    rng: Option<StdRng>,
}

impl IntegrityState {
    pub(super) fn tick(&mut self, now: Instant) {
        if self.now.is_none_or(|t| now > t) {
            self.now = Some(now);
        }
    }

    /// Seconds since the UNIX epoch now (0 without a wall clock).
    fn unix_secs(&self) -> Option<u64> {
        let (at, wall) = self.wall?;
        let since = self
            .now
            .map_or(Duration::ZERO, |n| n.saturating_duration_since(at));
        Some((wall + since).as_secs())
    }

    fn next_sequence(&mut self) -> u64 {
        let secs = match self.unix_secs() {
            Some(secs) => secs,
            None => {
                if !self.warned_no_wall_clock {
                    self.warned_no_wall_clock = true;
                    tracing::warn!(
                        "signing without a wall clock (Engine::set_wall_clock): integrity \
                         sequence numbers will restart low after a restart and peers will drop \
                         them as replays"
                    );
                }
                0
            }
        };
        self.last_sequence = integrity::next_sequence(self.last_sequence, secs);
        self.last_sequence
    }

    fn cookie(&mut self) -> u64 {
        self.rng.get_or_insert_with(StdRng::from_os_rng).next_u64()
    }
}

impl Engine {
    /// Gives the engine the wall-clock time: `unix_time` is the time at `now` (the agent
    /// passes `SystemTime::now()` with `Instant::now()`; a simulation passes any time it
    /// likes). Later wall times are derived from the instants the engine is called with.
    ///
    /// Only INTEGRITY sequence numbers use it (RFC 2747 §3.2: the high 32 bits are the UNIX
    /// time in seconds), which is what keeps them increasing across a restart without stable
    /// storage. Call it before the first message is signed; calling it again (e.g. after the
    /// clock was corrected) never makes sequence numbers go back within a run.
    pub fn set_wall_clock(&mut self, now: Instant, unix_time: SystemTime) {
        let since_epoch = unix_time.duration_since(UNIX_EPOCH).unwrap_or_default();
        self.integrity.wall = Some((now, since_epoch));
        self.integrity.tick(now);
    }

    /// Keeps the replay state of (neighbor, key) pairs whose key is unchanged in `keys`, and
    /// forgets the rest (then replaces the chain).
    pub(super) fn replace_keys(&mut self, keys: KeyChain) {
        let old = &self.config.integrity;
        let same = |(addr, id): &(IpAddr, KeyId)| {
            let new = keys.receiving_key(*addr, *id);
            new.is_some() && new == old.receiving_key(*addr, *id)
        };
        self.integrity.windows.retain(|k, _| same(k));
        self.integrity.pending.retain(|k, _| same(k));
        self.config.integrity = keys;
    }

    /// Signs a transmit's payload when a key covers `destination` (RFC 2747 §4.1); `false`
    /// when it cannot be signed (too long), and then it must not be sent.
    pub(super) fn sign_transmit(&mut self, destination: IpAddr, payload: &mut Vec<u8>) -> bool {
        let Some(key) = self.config.integrity.sending_key(destination) else {
            return true;
        };
        let sequence = self.integrity.next_sequence();
        match integrity::sign(key, sequence, INTEGRITY_FLAG_HANDSHAKE, payload) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%destination, %error, "cannot sign message; not sent");
                false
            }
        }
    }

    /// The receive-side gate (RFC 2747 §4.2), run on the raw datagram before it is decoded:
    /// `true` when the message may be processed. Integrity Challenges and Responses are
    /// handled here and never go further.
    pub(super) fn integrity_gate(&mut self, now: Instant, datagram: &Incoming<'_>) -> bool {
        self.integrity.tick(now);
        let source = datagram.source;
        let payload = datagram.payload;
        let covered = self.config.integrity.covers(source);
        let challenge = MsgType::IntegrityChallenge.number();
        let response = MsgType::IntegrityResponse.number();
        let msg_type = payload.get(1).copied();
        if !covered && !integrity::carried(payload) {
            // Not keyed and not signed: RSVP as without INTEGRITY. A stray challenge or
            // response from such a neighbor is decoded and ignored like other types the host
            // does not process.
            return true;
        }
        if msg_type == Some(challenge) {
            // RFC 3097 / RFC 2747 §2.2: <Common Header> <CHALLENGE>, unsigned by format.
            self.answer_challenge(now, datagram);
            return false;
        }
        let verified = match integrity::verify(&self.config.integrity, source, payload) {
            Ok(v) => v,
            Err(error) => {
                match error {
                    IntegrityError::Missing => self.stats.integrity_missing += 1,
                    IntegrityError::UnknownKey(_) => self.stats.integrity_unknown_key += 1,
                    _ => self.stats.integrity_bad_digest += 1,
                }
                tracing::debug!(%source, %error, covered, "message dropped: integrity");
                return false;
            }
        };
        let pair = (source, verified.key_id);
        if msg_type == Some(response) {
            self.on_response(pair, verified, payload);
            return false;
        }
        if let Some(window) = self.integrity.windows.get_mut(&pair) {
            if window.accept(verified.sequence) {
                return true;
            }
            self.stats.integrity_replayed += 1;
            tracing::debug!(%source, key_id = %verified.key_id, sequence = verified.sequence,
                "message dropped: integrity sequence number replayed or too old");
            return false;
        }
        if verified.flags & INTEGRITY_FLAG_HANDSHAKE == 0 {
            // The sender does not answer challenges (RFC 2747 §2.1, H flag clear): its first
            // authentic message starts the window. The flag is under the digest, so a
            // replay of a message from a sender that sets it cannot take this way.
            if self.integrity.windows.len() >= MAX_WINDOWS {
                self.stats.integrity_unverified += 1;
                return false;
            }
            self.integrity
                .windows
                .insert(pair, ReplayWindow::new(verified.sequence));
            return true;
        }
        // No sequence state (we restarted, or never heard this neighbor): the message may
        // be a replay. Challenge and drop it; RSVP's refreshes bring its content again.
        self.stats.integrity_unverified += 1;
        tracing::debug!(%source, key_id = %verified.key_id,
            "message dropped: no integrity sequence state for this neighbor yet");
        self.send_challenge(now, pair, datagram);
        false
    }

    /// Sends an Integrity Challenge about `pair` (RFC 2747 §4.3), at most once per
    /// [`CHALLENGE_RETRY`], never larger than the message that prompted it.
    fn send_challenge(&mut self, now: Instant, pair: (IpAddr, KeyId), trigger: &Incoming<'_>) {
        let state = &mut self.integrity;
        let full = state.pending.len() >= MAX_PENDING;
        let cookie = match state.pending.get_mut(&pair) {
            Some(p) if now.saturating_duration_since(p.sent_at) < CHALLENGE_RETRY => return,
            Some(p) => {
                p.sent_at = now;
                p.cookie
            }
            None if full => return,
            None => {
                let cookie = state.cookie();
                state.pending.insert(
                    pair,
                    Pending {
                        cookie,
                        sent_at: now,
                    },
                );
                cookie
            }
        };
        let challenge = Challenge {
            key_id: pair.1.to_bytes(),
            cookie,
        };
        let Ok(payload) = Message::new(MsgType::IntegrityChallenge)
            .with(Object::Challenge(challenge))
            .encode()
        else {
            return;
        };
        // 28 bytes; the trigger carried a verified INTEGRITY, so it has at least 8 + 24.
        if payload.len() > trigger.payload.len() {
            return;
        }
        self.stats.challenges_sent += 1;
        tracing::debug!(neighbor = %pair.0, key_id = %pair.1, "sending integrity challenge");
        self.transmits.push_back(Transmit {
            destination: pair.0,
            source: Some(trigger.destination),
            router_alert: false,
            ttl: DEFAULT_SEND_TTL,
            payload,
        });
    }

    /// Answers a keyed neighbor's Integrity Challenge with a signed Integrity Response
    /// echoing its CHALLENGE, signed with the key it names (RFC 2747 §4.3), within
    /// [`RESPONSES_PER_SECOND`].
    fn answer_challenge(&mut self, now: Instant, datagram: &Incoming<'_>) {
        let source = datagram.source;
        let challenge = match Message::decode(datagram.payload) {
            Ok(message) => message.challenge().copied(),
            Err(_) => None,
        };
        let Some(challenge) = challenge else {
            self.stats.malformed += 1;
            return;
        };
        let key_id = KeyId::from_bytes(challenge.key_id);
        let Some(key) = self.config.integrity.receiving_key(source, key_id) else {
            self.stats.integrity_unknown_key += 1;
            tracing::debug!(%source, %key_id, "integrity challenge for a key we do not hold");
            return;
        };
        let responses = &mut self.integrity.responses;
        if !responses.contains_key(&source) && responses.len() >= MAX_RESPONDERS {
            responses
                .retain(|_, (since, _)| now.saturating_duration_since(*since) < CHALLENGE_RETRY);
            if responses.len() >= MAX_RESPONDERS {
                return;
            }
        }
        let (since, count) = responses.entry(source).or_insert((now, 0));
        if now.saturating_duration_since(*since) >= Duration::from_secs(1) {
            (*since, *count) = (now, 0);
        }
        if *count >= RESPONSES_PER_SECOND {
            tracing::debug!(%source, "integrity challenge not answered: too many this second");
            return;
        }
        *count += 1;
        let Ok(mut payload) = Message::new(MsgType::IntegrityResponse)
            .with(Object::Challenge(challenge))
            .encode()
        else {
            return;
        };
        let sequence = self.integrity.next_sequence();
        if integrity::sign(key, sequence, INTEGRITY_FLAG_HANDSHAKE, &mut payload).is_err() {
            return;
        }
        self.stats.challenges_answered += 1;
        tracing::debug!(%source, %key_id, "answering integrity challenge");
        self.transmits.push_back(Transmit {
            destination: source,
            source: Some(datagram.destination),
            router_alert: false,
            ttl: DEFAULT_SEND_TTL,
            payload,
        });
    }

    /// A verified Integrity Response: when it echoes the cookie of our challenge about the
    /// same key, its sequence number starts the neighbor's window (RFC 2747 §4.3).
    fn on_response(&mut self, pair: (IpAddr, KeyId), verified: Verified, payload: &[u8]) {
        let echoed = Message::decode(payload)
            .ok()
            .and_then(|m| m.challenge().copied());
        let matches = match (echoed, self.integrity.pending.get(&pair)) {
            (Some(c), Some(p)) => c.key_id == pair.1.to_bytes() && c.cookie == p.cookie,
            _ => false,
        };
        if !matches || self.integrity.windows.len() >= MAX_WINDOWS {
            self.stats.ignored += 1;
            tracing::debug!(neighbor = %pair.0, "integrity response ignored: no matching challenge");
            return;
        }
        self.integrity.pending.remove(&pair);
        self.integrity
            .windows
            .insert(pair, ReplayWindow::new(verified.sequence));
        self.stats.handshakes_completed += 1;
        tracing::debug!(neighbor = %pair.0, key_id = %pair.1, sequence = verified.sequence,
            "integrity handshake completed");
    }
}
