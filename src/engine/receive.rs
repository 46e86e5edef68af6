//! The receive side: decoding a datagram, answering what cannot be decoded, running the
//! messages delivered locally, and dispatching each message to its handler.
//!
//! Every message, from the network or delivered locally, reaches the handlers through
//! `on_msg`: a receive-side check that must see every message (INTEGRITY, RFC 2747) goes
//! there.

use std::net::IpAddr;
use std::time::Instant;

use super::msg::Msg;
use super::outbox::ErrorRoute;
use super::refresh::is_live;
use super::translate;
use super::{Engine, Incoming};
use crate::wire::MsgType;

/// Most locally delivered messages processed in one call (a guard against ping-pong).
const LOCAL_BUDGET: usize = 100_000;

impl Engine {
    /// Processes messages delivered to ourselves (which may produce more).
    pub(super) fn drain_local(&mut self, now: Instant) {
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
        let sessions = &self.sessions;
        self.timers.prune(|at, slot| is_live(sessions, at, slot));
    }

    pub(super) fn on_datagram(&mut self, now: Instant, datagram: Incoming<'_>) {
        self.stats.received += 1;
        match translate::decode(datagram.payload) {
            Ok(msg) => {
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
        self.flush();
    }

    /// Answers a message the codec refused with the error it deserves (13/14), when enough of
    /// it could be read to address the answer.
    fn answer_undecodable(&mut self, datagram: Incoming<'_>, answer: translate::Answer) {
        let own = datagram.destination;
        match answer.kind {
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
                    Vec::new(),
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
            MsgType::Path => self.on_path(now, source, ttl, msg),
            MsgType::PathTear => self.on_path_tear(msg),
            MsgType::PathErr => self.on_path_err(now, msg),
            MsgType::Resv => self.on_resv(now, destination, msg),
            MsgType::ResvTear => self.on_resv_tear(msg),
            MsgType::ResvErr => self.on_resv_err(now, msg),
            MsgType::ResvConf => self.on_resv_conf(now, msg),
            // Refused when decoded and never built (see `Msg::kind`); ignored like them.
            _ => self.stats.ignored += 1,
        }
    }

    pub(super) fn malformed(&mut self, msg: &Msg, what: &str) {
        self.stats.malformed += 1;
        tracing::debug!(kind = ?msg.kind, session = ?msg.session, "malformed message: {what}");
    }
}
