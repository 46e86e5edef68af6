//! RFC 2961 §4 reliable delivery of the messages that leave no state of their own behind:
//! PathTear, ResvTear, PathErr, ResvErr and ResvConf sent to a Refresh-Reduction-Capable
//! neighbor carry a MESSAGE_ID with ACK_Desired and are retransmitted on the trigger
//! schedule (`Rf`, `Δ`, `Rl`) until their MESSAGE_ID_ACK comes — or a NACK, which says the
//! neighbor holds nothing the message is about (for a tear, the goal).
//!
//! A Path or Resv is rebuilt from its state for each retransmission; these messages have no
//! state to rebuild them from, so a copy of the encoded bytes is held here. It is kept
//! without the RFC 2961 objects and INTEGRITY: each retransmission is decorated again (the
//! same id, the acknowledgments waiting *then*) and signed with a fresh sequence number,
//! since a neighbor's replay window drops a signed datagram it has seen already. What is
//! held is bounded by count and bytes; over either the oldest copy is dropped (its message
//! went once, as without refresh reduction).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use super::timer::{Ms, NEVER};
use super::{Engine, Transmit};
use crate::wire::MsgType;

/// Most messages held for retransmission.
const MAX_HELD: usize = 4096;
/// Most bytes of messages held for retransmission.
const MAX_HELD_BYTES: usize = 4 << 20;

/// A message sent and not acknowledged yet.
#[derive(Debug)]
struct Held {
    destination: IpAddr,
    source: IpAddr,
    router_alert: bool,
    ttl: u8,
    /// Encoded, without the RFC 2961 objects and INTEGRITY.
    payload: Vec<u8>,
    /// The first copy answered a datagram: each retransmission is an answer too, and takes
    /// a token of its destination's answer bucket (see [Bounds](super#bounds)).
    answer: bool,
    /// [`NEVER`] until scheduled (the flush that holds it does not know the time).
    next_at: Ms,
    /// Retransmissions made.
    made: u8,
}

/// The messages held for retransmission (see the file documentation).
#[derive(Debug)]
pub(super) struct Reliable {
    /// By message id: ids increase, so the first is the oldest (but at an epoch wrap, where
    /// dropping another one instead does no harm).
    held: BTreeMap<u32, Held>,
    /// Bytes of the payloads held.
    bytes: usize,
    /// Ids held since the last [`Engine::reliable_schedule`].
    fresh: Vec<u32>,
    /// The earliest `next_at` ([`NEVER`]: none).
    due: Ms,
}

impl Reliable {
    pub(super) fn new() -> Self {
        Reliable {
            held: BTreeMap::new(),
            bytes: 0,
            fresh: Vec::new(),
            due: NEVER,
        }
    }

    /// Heap bytes of what is held (for [`Engine::state_bytes`]).
    pub(super) fn heap_bytes(&self) -> usize {
        // B-tree nodes hold up to 11 entries and are at least half full.
        let entry = std::mem::size_of::<(u32, Held)>();
        self.held.len() * entry * 3 / 2 + self.bytes + self.fresh.capacity() * 4
    }

    fn remove(&mut self, id: u32) -> Option<Held> {
        let held = self.held.remove(&id)?;
        self.bytes -= held.payload.capacity();
        Some(held)
    }
}

/// Whether a message of `kind` is delivered reliably here (Path and Resv are, by their state).
fn reliable_kind(kind: MsgType) -> bool {
    matches!(
        kind,
        MsgType::PathTear
            | MsgType::ResvTear
            | MsgType::PathErr
            | MsgType::ResvErr
            | MsgType::ResvConf
    )
}

impl Engine {
    /// Messages held for retransmission.
    pub(super) fn reliable_held(&self) -> usize {
        self.reliable.held.len()
    }

    /// Whether a message of `kind` to `destination` is to be delivered reliably: it gets a
    /// message id, and its bytes go to [`Self::reliable_hold`] once sent.
    pub(super) fn reliable_wanted(&self, kind: MsgType, destination: IpAddr) -> bool {
        reliable_kind(kind) && self.capable(destination)
    }

    /// Holds `payload` (encoded, undecorated) of the message with id `id` sent as
    /// `transmit`, until acknowledged. `answer`: it answered a datagram.
    pub(super) fn reliable_hold(
        &mut self,
        id: u32,
        transmit: &Transmit,
        payload: Vec<u8>,
        answer: bool,
    ) {
        let r = &mut self.reliable;
        r.bytes += payload.capacity();
        r.held.insert(
            id,
            Held {
                destination: transmit.destination,
                source: transmit.source.unwrap_or(IpAddr::from([0u8; 4])),
                router_alert: transmit.router_alert,
                ttl: transmit.ttl,
                payload,
                answer,
                next_at: NEVER,
                made: 0,
            },
        );
        r.fresh.push(id);
        self.stats.reliable_sent += 1;
        while r.held.len() > MAX_HELD || r.bytes > MAX_HELD_BYTES {
            let Some(oldest) = r.held.keys().next().copied() else {
                break;
            };
            r.remove(oldest);
            self.stats.reliable_dropped += 1;
        }
    }

    /// Schedules the first retransmission of the messages held since the last call (at the
    /// end of every entry point, which knows the time).
    pub(super) fn reliable_schedule(&mut self, now: Instant) {
        if self.reliable.fresh.is_empty() {
            return;
        }
        let at = self.clock.ms(now).saturating_add(self.retransmit_delay(0));
        let r = &mut self.reliable;
        for id in r.fresh.drain(..) {
            if let Some(held) = r.held.get_mut(&id) {
                held.next_at = at;
                r.due = r.due.min(at);
            }
        }
    }

    /// An acknowledgment (or NACK) of our id `id`: `true` when it was for a message held
    /// here, which is then forgotten.
    pub(super) fn reliable_acked(&mut self, id: u32, nack: bool) -> bool {
        if self.reliable.remove(id).is_none() {
            return false;
        }
        self.stats.acks_received += u64::from(!nack);
        true
    }

    /// The next retransmission due, if any.
    pub(super) fn reliable_due(&self) -> Option<Instant> {
        if self.reliable.due == NEVER {
            return None;
        }
        self.clock.instant(self.reliable.due)
    }

    /// Retransmits what is due; forgets what reached the retry limit unacknowledged.
    pub(super) fn reliable_timeout(&mut self, now: Instant) {
        // Nothing held (every timeout of a classic run): spare the conversion of `now`, which
        // `handle_timeout` has made already.
        if self.reliable.due == NEVER {
            return;
        }
        let ms = self.clock.ms(now);
        if self.reliable.due > ms {
            return;
        }
        let limit = self.retry_limit();
        let due: Vec<u32> = self
            .reliable
            .held
            .iter()
            .filter(|(_, h)| h.next_at <= ms)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(held) = self.reliable.held.get(&id) else {
                continue;
            };
            let (destination, made, answer) = (held.destination, held.made, held.answer);
            if made >= limit || !self.capable(destination) {
                // Given up: the message went `Rl + 1` times, or the neighbor no longer does
                // RFC 2961 (a MESSAGE_ID would be refused).
                self.reliable.remove(id);
                self.stats.reliable_given_up += 1;
                tracing::debug!(%destination, id, "unacknowledged message given up");
                continue;
            }
            if answer && !self.take_answer_token(destination, now) {
                self.reliable.remove(id);
                self.stats.answers_suppressed += 1;
                continue;
            }
            let Some(held) = self.reliable.held.get(&id) else {
                continue;
            };
            let mut payload = held.payload.clone();
            let transmit = Transmit {
                destination,
                source: (!held.source.is_unspecified()).then_some(held.source),
                router_alert: held.router_alert,
                ttl: held.ttl,
                payload: Vec::new(),
            };
            // Decorated and signed anew: the same id, fresh acknowledgments, a fresh
            // INTEGRITY sequence number.
            self.reduction_decorate(id, destination, &mut payload);
            if !self.sign_transmit(destination, &mut payload) {
                self.reliable.remove(id);
                self.stats.encode_failed += 1;
                continue;
            }
            let next_at = ms.saturating_add(self.retransmit_delay(made + 1));
            if let Some(held) = self.reliable.held.get_mut(&id) {
                held.made = made + 1;
                held.next_at = next_at;
            }
            self.stats.reliable_retransmissions += 1;
            self.stats.transmitted += 1;
            self.transmits.push_back(Transmit {
                payload,
                ..transmit
            });
        }
        self.reliable.due = self
            .reliable
            .held
            .values()
            .map(|h| h.next_at)
            .min()
            .unwrap_or(NEVER);
    }
}
