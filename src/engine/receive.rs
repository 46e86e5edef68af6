//! The receive side: decoding a datagram, answering what cannot be decoded, running the
//! messages delivered locally, and dispatching each message to its handler.
//!
//! Every message, from the network or delivered locally, reaches the handlers through
//! `on_msg`. Datagrams from the network first pass the INTEGRITY gate (`integrity.rs`, RFC
//! 2747), on their raw bytes, before they are decoded.

use std::net::IpAddr;
use std::time::Instant;

use super::msg::{Descriptors, Msg};
use super::outbox::ErrorRoute;
use super::reduction;
use super::refresh::is_live;
use super::translate;
use super::{Engine, Incoming};
use crate::wire::MsgType;

/// Most locally delivered messages processed in one call (a guard against ping-pong).
const LOCAL_BUDGET: usize = 100_000;

impl Engine {
    /// Processes messages delivered to ourselves (which may produce more).
    pub(super) fn drain_local(&mut self, now: Instant) {
        self.integrity.tick(now);
        self.flush();
        let mut budget = LOCAL_BUDGET;
        while let Some((source, destination, msg)) = self.local.pop_front() {
            // Delivered without an IP layer: received TTL equals Send_TTL by construction.
            let ttl = Some(msg.send_ttl);
            self.on_msg(now, source, destination, ttl, msg);
            self.flush();
            budget -= 1;
            if budget == 0 {
                tracing::warn!(
                    left = self.local.len(),
                    "local delivery budget exhausted; the rest waits for the next call"
                );
                break;
            }
        }
        self.reliable_schedule(now);
        let sessions = &self.sessions;
        self.timers.prune(|at, slot| is_live(sessions, at, slot));
    }

    pub(super) fn on_datagram(&mut self, now: Instant, datagram: Incoming<'_>) {
        self.stats.received += 1;
        // A Bundle without INTEGRITY of its own (RFC 2961 §3.2 gives it none): each of its
        // sub-messages passes the gate instead, as if it came alone (see `bundle.rs`).
        let gate_parts = self.config.refresh_reduction
            && datagram.payload.get(1) == Some(&MsgType::Bundle.number())
            && !crate::integrity::carried(datagram.payload);
        // RFC 2747 §4.2: authenticated (or refused, or a handshake message) before anything
        // is read; only local deliveries skip this.
        if !gate_parts && !self.integrity_gate(now, &datagram) {
            self.flush();
            return;
        }
        self.on_message(now, datagram, gate_parts);
        self.flush();
    }

    /// One message of a datagram (the datagram itself, or a sub-message of a Bundle); with
    /// `gate_parts`, a Bundle's sub-messages pass the INTEGRITY gate one by one.
    fn on_message(&mut self, now: Instant, datagram: Incoming<'_>, gate_parts: bool) {
        // RFC 2961 (`reduction.rs`): Ack, Srefresh and Bundle messages, and the MESSAGE_ID
        // and acknowledgments other messages carry.
        let mut scan = reduction::Scan::default();
        if self.config.refresh_reduction {
            match self.reduction_receive(now, &datagram) {
                reduction::Received::Consumed => return,
                reduction::Received::Bundle(parts) => {
                    for part in parts {
                        let part = Incoming {
                            payload: &datagram.payload[part],
                            ..datagram
                        };
                        if gate_parts && !self.integrity_gate(now, &part) {
                            continue;
                        }
                        self.on_message(now, part, false);
                    }
                    return;
                }
                reduction::Received::Message(found) => scan = found,
            }
        }
        match translate::decode(datagram.payload) {
            Ok(msg) => {
                let tag = if scan.is_empty() {
                    None
                } else {
                    match self.reduction_admit(now, &datagram, scan, &msg) {
                        Ok(tag) => tag,
                        Err(()) => return,
                    }
                };
                // State this message creates is charged to its source (see `neighbors.rs`).
                self.origin = Some((datagram.source, now));
                self.on_msg(
                    now,
                    datagram.source,
                    datagram.destination,
                    datagram.ttl,
                    msg,
                );
                self.origin = None;
                if let Some(tag) = tag {
                    self.reduction_after(now, &datagram, tag);
                }
            }
            Err(failure) if failure.unsupported() => {
                self.stats.ignored += 1;
                tracing::debug!(source = %datagram.source, error = %failure.error, "message ignored");
            }
            Err(failure) => {
                self.stats.malformed += 1;
                tracing::debug!(source = %datagram.source, error = %failure.error, "malformed rsvp message");
                if let Some(answer) = failure.answer {
                    self.answer_undecodable(datagram, *answer);
                }
            }
        }
    }

    /// Answers a message the codec refused with the error it deserves (13/14), when enough of
    /// it could be read to address the answer.
    fn answer_undecodable(&mut self, datagram: Incoming<'_>, answer: translate::Answer) {
        let own = datagram.destination;
        match answer.kind {
            MsgType::Path if !self.is_our_destination(answer.session.destination.ip(), own) => {
                // Not ours to answer: it could only be a Path someone aimed at us by mistake
                // or on purpose (see Neighbors).
                self.stats.not_for_us += 1;
                return;
            }
            // The error goes to the hop the message names: only when that hop (or, for a
            // Path, its sender) sent it, as for a decodable one (see Neighbors) — else the
            // answer would be aimed at whoever the sender chose.
            MsgType::Path | MsgType::Resv if !answer_from_named_hop(&answer, datagram.source) => {
                self.stats.wrong_neighbor += 1;
                tracing::debug!(
                    kind = ?answer.kind,
                    session = ?answer.session,
                    source = %datagram.source,
                    "undecodable message naming another hop: not answered"
                );
                return;
            }
            MsgType::Path => {
                let phop = answer.hop.map_or(datagram.source, |h| h.addr);
                self.queue_path_err(
                    ErrorRoute {
                        session: answer.session,
                        own,
                        to: phop,
                    },
                    answer.sender,
                    None,
                    answer.error,
                );
            }
            MsgType::Resv => {
                let nhop = answer.hop.map_or(datagram.source, |h| h.addr);
                self.queue_resv_err(
                    ErrorRoute {
                        session: answer.session,
                        own,
                        to: nhop,
                    },
                    None,
                    Descriptors::new(),
                    answer.error,
                );
            }
            _ => return,
        }
        self.stats.rejected += 1;
    }

    /// `ttl` is the IP TTL / hop limit the message arrived with, `None` when unknown.
    fn on_msg(
        &mut self,
        now: Instant,
        source: IpAddr,
        destination: IpAddr,
        ttl: Option<u8>,
        msg: Msg,
    ) {
        let now = self.clock.ms(now);
        tracing::trace!(kind = ?msg.kind, session = ?msg.session, %source, "rsvp message");
        match msg.kind {
            MsgType::Path => self.on_path(now, source, destination, ttl, &msg),
            MsgType::PathTear => self.on_path_tear(source, msg),
            MsgType::PathErr => self.on_path_err(now, source, msg),
            MsgType::Resv => self.on_resv(now, source, destination, &msg),
            MsgType::ResvTear => self.on_resv_tear(source, msg),
            MsgType::ResvErr => self.on_resv_err(now, source, msg),
            MsgType::ResvConf => self.on_resv_conf(now, source, msg),
            // Refused when decoded and never built (see `Msg::kind`); ignored like them.
            _ => self.stats.ignored += 1,
        }
    }

    /// Drops a message that changes or removes state but does not come from the neighbor
    /// that state records (see [Neighbors](super#neighbors)).
    pub(super) fn wrong_neighbor(&mut self, msg: &Msg, source: IpAddr, expected: &str) {
        self.stats.wrong_neighbor += 1;
        tracing::debug!(
            kind = ?msg.kind,
            session = ?msg.session,
            %source,
            expected,
            "message from the wrong neighbor dropped"
        );
    }

    /// Whether a session to `session_destination` is this host's: its address is the one the
    /// datagram was sent to, or one of [`EngineConfig::local_addrs`](super::EngineConfig).
    /// With neither known (an unspecified datagram destination and no local addresses
    /// configured) there is nothing to compare with, and it is taken to be.
    pub(super) fn is_our_destination(
        &self,
        session_destination: IpAddr,
        datagram_destination: IpAddr,
    ) -> bool {
        let ours = session_destination.to_canonical();
        let locals = &self.config.local_addrs;
        if datagram_destination.is_unspecified() {
            return locals.is_empty() || locals.iter().any(|a| a.to_canonical() == ours);
        }
        datagram_destination.to_canonical() == ours
            || locals.iter().any(|a| a.to_canonical() == ours)
    }

    /// Drops a Path for a session whose destination is not this host (see
    /// [Neighbors](super#neighbors)): no state, no answer.
    pub(super) fn not_for_us(&mut self, msg: &Msg, source: IpAddr, destination: IpAddr) {
        self.stats.not_for_us += 1;
        tracing::debug!(
            kind = ?msg.kind,
            session = ?msg.session,
            %source,
            %destination,
            "path for a destination that is not this host's dropped"
        );
    }

    pub(super) fn malformed(&mut self, msg: &Msg, what: &str) {
        self.stats.malformed += 1;
        tracing::debug!(kind = ?msg.kind, session = ?msg.session, "malformed message: {what}");
    }
}

/// Whether an undecodable Path or Resv came from the hop its RSVP_HOP names (or, a Path,
/// from its sender), or names none: then its error may be sent there.
fn answer_from_named_hop(answer: &translate::Answer, source: IpAddr) -> bool {
    let from_sender = answer.kind == MsgType::Path
        && answer.sender.is_some_and(|s| from_neighbor(source, s.ip()));
    answer
        .hop
        .is_none_or(|h| from_neighbor(source, h.addr) || from_sender)
}

/// Whether a datagram from `source` comes from `neighbor`. A transport that does not know the
/// source gives the unspecified address: then it is not checked. IPv4-mapped IPv6 addresses
/// compare equal to their IPv4 address.
pub(super) fn from_neighbor(source: IpAddr, neighbor: IpAddr) -> bool {
    source.is_unspecified() || source.to_canonical() == neighbor.to_canonical()
}
