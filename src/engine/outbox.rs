//! The send side: message builders (Path, Resv, PathErr, ResvErr), the outbox the
//! handlers queue into, the local-delivery decision, and the flush that encodes what is left
//! into [`Transmit`]s.
//!
//! Messages handlers produce wait in `outbox` until their session is back in its slot, so the
//! local-delivery decision always sees the current state. Refresh reduction (RFC 2961,
//! `reduction.rs`) adds its flag, MESSAGE_ID and acknowledgments to each encoded message here,
//! before it is signed; a tear, error or ResvConf to a capable neighbor is also held for
//! retransmission until acknowledged (`reliable.rs`).

use std::net::{IpAddr, SocketAddr};

use smallvec::smallvec;

use super::msg::{router_alert, Descriptor, Descriptors, Filters, Hop, Msg};
use super::neighbors::MAX_DEFERRED;
use super::state::{LocalSender, Request, Rsb, Session};
use super::translate;
use super::{Engine, Event, SessionId, SessionKey, Style, Transmit};
use crate::wire::intserv::TokenBucket;
use crate::wire::{ErrorSpec, MsgType, RsvpError};

/// Where an error message goes: its session, the address of this host that reports it
/// (ERROR_SPEC node and source address) and the hop it is sent to (the next hop for a
/// ResvErr, the previous hop for a PathErr).
#[derive(Debug, Clone, Copy)]
pub(super) struct ErrorRoute {
    pub(super) session: SessionKey,
    pub(super) own: IpAddr,
    pub(super) to: IpAddr,
}

/// A message the handlers queued, waiting in the outbox for [`Engine::flush`].
pub(super) struct Queued {
    destination: IpAddr,
    source: IpAddr,
    what: Waiting,
}

/// What of a queued message waits: the outbox holds one per message sent, so it is kept small
/// (a [`Msg`] is not).
enum Waiting {
    /// Delivered locally or encoded when flushed; `local` is the local-delivery decision when
    /// it was made at once.
    Msg { msg: Box<Msg>, local: Option<bool> },
    /// Known not to be for this engine when queued, and encoded then (`None`: it could not
    /// be).
    Encoded {
        kind: MsgType,
        send_ttl: u8,
        message_id: u32,
        session: SessionKey,
        payload: Option<Vec<u8>>,
    },
}

impl Engine {
    pub(super) fn emit(&mut self, owner: SessionId, event: Event) {
        self.events.push_back((owner, event));
    }

    /// Queues a message; whether it is for this engine itself is decided when it is sent.
    fn queue(&mut self, msg: Msg, destination: IpAddr, source: IpAddr) {
        self.outbox.push(Queued {
            destination,
            source,
            what: Waiting::Msg {
                msg: Box::new(msg),
                local: None,
            },
        });
    }

    /// Queues a message about `session` (the session it is for, held by the caller): the
    /// local-delivery decision is made now, saving a lookup when it is sent.
    pub(super) fn queue_for(
        &mut self,
        session: &Session,
        msg: Msg,
        destination: IpAddr,
        source: IpAddr,
    ) {
        let local = self.config.local_delivery && self.is_for_session(session, &msg, destination);
        let what = if local {
            Waiting::Msg {
                msg: Box::new(msg),
                local: Some(true),
            }
        } else {
            // Its bytes do not depend on when it is encoded; the message itself is not
            // needed again.
            Waiting::Encoded {
                kind: msg.kind,
                send_ttl: msg.send_ttl,
                message_id: msg.message_id,
                session: msg.session,
                payload: translate::encode(&msg),
            }
        };
        self.outbox.push(Queued {
            destination,
            source,
            what,
        });
    }

    /// Sends (or delivers locally) what the handlers queued.
    ///
    /// While a datagram is being answered ([`Engine::handle_datagram`]) every transmit passes
    /// its budget here, whichever handler queued it (see [Bounds](super#bounds)): an error
    /// message needs an answer token of the datagram's neighbor; a message that does not fit
    /// in the bytes left of the budget is held back for the next `handle_timeout` if the
    /// neighbor has a token left, else suppressed. Both are counted.
    // Most calls (one per handler run, timeout and local delivery) find it empty: inlined,
    // that costs a comparison, and the work is out of line.
    #[inline]
    pub(super) fn flush(&mut self) {
        if !self.outbox.is_empty() {
            self.flush_queued();
        }
    }

    #[inline(never)]
    fn flush_queued(&mut self) {
        let mut outbox = std::mem::take(&mut self.outbox);
        for queued in outbox.drain(..) {
            let Queued {
                destination,
                source,
                what,
            } = queued;
            let (kind, send_ttl, mut message_id, session, payload) = match what {
                Waiting::Msg { msg, local } => {
                    let local = local.unwrap_or_else(|| {
                        self.config.local_delivery && self.is_for_us(&msg, destination)
                    });
                    if local {
                        let error = matches!(msg.kind, MsgType::PathErr | MsgType::ResvErr);
                        self.stats.errors_sent += u64::from(error);
                        self.stats.local_delivered += 1;
                        self.local.push_back((source, destination, *msg));
                        continue;
                    }
                    let payload = translate::encode(&msg);
                    (msg.kind, msg.send_ttl, msg.message_id, msg.session, payload)
                }
                Waiting::Encoded {
                    kind,
                    send_ttl,
                    message_id,
                    session,
                    payload,
                } => (kind, send_ttl, message_id, session, payload),
            };
            let error = matches!(kind, MsgType::PathErr | MsgType::ResvErr);
            let Some(mut payload) = payload else {
                self.stats.encode_failed += 1;
                continue;
            };
            // RFC 2961 §4: a tear, error or ResvConf to a capable neighbor gets an id of its
            // own and is retransmitted until acknowledged (`reliable.rs` holds its bytes).
            let held = self.reliable_wanted(kind, destination).then(|| {
                message_id = self.new_message_id();
                payload.clone()
            });
            // RFC 2961: the capability flag, the MESSAGE_ID, acknowledgments waiting.
            self.reduction_decorate(message_id, destination, &mut payload);
            // RFC 2747 §4.1: every datagram to a keyed neighbor carries INTEGRITY.
            if !self.sign_transmit(destination, &mut payload) {
                self.stats.encode_failed += 1;
                continue;
            }
            let transmit = Transmit {
                destination,
                source: Some(source),
                router_alert: router_alert(kind),
                ttl: send_ttl,
                payload,
            };
            let Some(answering) = self.answering else {
                if let Some(held) = held {
                    self.reliable_hold(message_id, &transmit, held, false);
                }
                self.stats.errors_sent += u64::from(error);
                self.stats.transmitted += 1;
                self.transmits.push_back(transmit);
                continue;
            };
            let fits = transmit.payload.len() <= answering.left;
            let token = (error || !fits)
                && (fits || self.deferred.len() < MAX_DEFERRED)
                && self.take_answer_token(answering.source, answering.now);
            if (error || !fits) && !token {
                self.stats.answers_suppressed += 1;
                tracing::debug!(?kind, ?session, %destination, "answer suppressed: over the datagram's budget or its neighbor's answer rate");
                continue;
            }
            if let Some(held) = held {
                self.reliable_hold(message_id, &transmit, held, true);
            }
            self.stats.errors_sent += u64::from(error);
            if fits {
                if let Some(answering) = &mut self.answering {
                    answering.left -= transmit.payload.len();
                }
                self.stats.transmitted += 1;
                self.transmits.push_back(transmit);
            } else {
                self.stats.answers_deferred += 1;
                self.deferred_at.get_or_insert(answering.now);
                self.deferred.push_back(transmit);
            }
        }
        // Keep the buffer for the next time.
        if self.outbox.is_empty() {
            self.outbox = outbox;
        }
    }

    /// Sends the answers held back by `flush`.
    // Called on every timeout; answers are seldom held back (see `flush`).
    #[inline]
    pub(super) fn send_deferred(&mut self) {
        self.deferred_at = None;
        if !self.deferred.is_empty() {
            self.send_deferred_held();
        }
    }

    #[inline(never)]
    fn send_deferred_held(&mut self) {
        let mut deferred = std::mem::take(&mut self.deferred);
        for mut transmit in deferred.drain(..) {
            // Signed again now: with the sequence number it had, it would reach its
            // neighbor after answers signed later (sent meanwhile, possibly more than the
            // replay window holds, when many answers were split by the budget).
            if !self.resign(&mut transmit) {
                self.stats.encode_failed += 1;
                continue;
            }
            self.stats.transmitted += 1;
            self.transmits.push_back(transmit);
        }
        // Keep the buffer for the next time.
        if self.deferred.is_empty() {
            self.deferred = deferred;
        }
    }

    /// Replaces the INTEGRITY of a transmit this engine signed with a fresh one (a new
    /// sequence number); `false` when it cannot be signed.
    fn resign(&mut self, transmit: &mut Transmit) -> bool {
        let payload = &mut transmit.payload;
        if !crate::integrity::carried(payload) {
            return true;
        }
        let object = usize::from(u16::from_be_bytes([payload[8], payload[9]]));
        payload.drain(8..8 + object);
        let Ok(len) = u16::try_from(payload.len()) else {
            return false;
        };
        payload[6..8].copy_from_slice(&len.to_be_bytes());
        self.sign_transmit(transmit.destination, &mut transmit.payload)
    }

    /// Whether `msg` sent to `destination` is for state of this very engine (see the module
    /// documentation, *Local delivery*).
    fn is_for_us(&self, msg: &Msg, destination: IpAddr) -> bool {
        // Sent to one of our own addresses it would only come back to us (or, when the
        // transport is not bound where it is sent, be lost): deliver it whatever it is for.
        if self.config.local_addrs.contains(&destination) {
            return true;
        }
        self.lookup(&msg.session)
            .and_then(|slot| self.sessions.get(slot as usize)?.as_ref())
            .is_some_and(|session| self.is_for_session(session, msg, destination))
    }

    /// Whether `msg` sent to `destination` is for `session` on this very engine.
    fn is_for_session(&self, session: &Session, msg: &Msg, destination: IpAddr) -> bool {
        if self.config.local_addrs.contains(&destination) {
            return true;
        }
        // Another loopback address may be another engine's (two agents in one process).
        let local_addr = destination.is_loopback();
        let own_sender = |session: &Session| {
            session
                .senders
                .iter()
                .any(|s| s.sender.ip() == destination || local_addr)
        };
        let own_receiver = local_addr || destination == session.key.destination.ip();
        match msg.kind {
            // Also when it holds that sender's path state without an owner left to hear it
            // (the receiver closed first): otherwise the sender's refreshes and PathTear go
            // out and may never come back, and the stale state waits for expiry.
            MsgType::Path | MsgType::PathTear => {
                own_receiver
                    && (session.audience().next().is_some()
                        || msg
                            .sender
                            .is_some_and(|s| session.psbs.iter().any(|p| p.sender == s)))
            }
            MsgType::Resv | MsgType::ResvTear | MsgType::PathErr => own_sender(session),
            MsgType::ResvErr | MsgType::ResvConf => own_receiver && session.has_receivers(),
            // The engine builds no other type (see `Msg::kind`).
            _ => false,
        }
    }

    pub(super) fn path_msg(&self, key: SessionKey, sender: &LocalSender) -> Msg {
        let mut msg = Msg::new(MsgType::Path, key);
        msg.hop = Some(Hop {
            addr: sender.sender.ip(),
            lih: 0,
        });
        msg.refresh_ms = Some(self.refresh_ms_u32());
        msg.sender = Some(sender.sender);
        msg.tspec = Some(sender.tspec);
        msg
    }

    /// The Resv (or, with `tear`, ResvTear) a receiver sends to previous hop `phop`.
    pub(super) fn resv_msg(
        &self,
        session: &Session,
        request: &Request,
        phop: Hop,
        tear: bool,
    ) -> Msg {
        let kind = if tear {
            MsgType::ResvTear
        } else {
            MsgType::Resv
        };
        let mut msg = Msg::new(kind, session.key);
        let own = session.key.destination.ip();
        msg.hop = Some(Hop {
            addr: own,
            lih: phop.lih,
        });
        msg.style = Some(request.style);
        let flowspec = (!tear).then_some(request.flowspec);
        let senders = session
            .psbs
            .iter()
            .filter(|p| p.phop.addr == phop.addr)
            .map(|p| p.sender);
        msg.descriptors = match request.style {
            Style::FixedFilter => senders
                .map(|s| Descriptor {
                    flowspec,
                    filters: smallvec![s],
                })
                .collect(),
            Style::SharedExplicit => smallvec![Descriptor {
                flowspec,
                filters: senders.collect(),
            }],
            Style::WildcardFilter => smallvec![Descriptor {
                flowspec,
                filters: Filters::new(),
            }],
        };
        if !tear {
            msg.refresh_ms = Some(self.refresh_ms_u32());
            let confirmed = session.recv.as_ref().is_some_and(|r| r.confirmed);
            if request.confirm && !confirmed {
                msg.confirm = Some(own);
            }
        }
        msg
    }

    /// A ResvErr from this host about `descriptors`, to the next hop `route.to`.
    pub(super) fn queue_resv_err(
        &mut self,
        route: ErrorRoute,
        style: Option<Style>,
        descriptors: Descriptors,
        error: RsvpError,
    ) {
        let ErrorRoute {
            session: key,
            own,
            to: nhop,
        } = route;
        let mut msg = Msg::new(MsgType::ResvErr, key);
        msg.hop = Some(Hop { addr: own, lih: 0 });
        msg.error = Some(ErrorSpec::new(own, error.code, error.value));
        msg.style = style;
        msg.descriptors = descriptors;
        tracing::debug!(session = ?key, %nhop, "sending ResvErr: {error}");
        self.queue(msg, nhop, own);
    }

    /// A PathErr from this host about `sender`'s path, to the previous hop `route.to`.
    pub(super) fn queue_path_err(
        &mut self,
        route: ErrorRoute,
        sender: Option<SocketAddr>,
        tspec: Option<TokenBucket>,
        error: RsvpError,
    ) {
        let ErrorRoute {
            session: key,
            own,
            to: phop,
        } = route;
        let mut msg = Msg::new(MsgType::PathErr, key);
        msg.error = Some(ErrorSpec::new(own, error.code, error.value));
        msg.sender = sender;
        msg.tspec = tspec;
        tracing::debug!(session = ?key, %phop, "sending PathErr: {error}");
        self.queue(msg, phop, own);
    }

    pub(super) fn rsb_descriptor(rsb: &Rsb) -> Descriptor {
        Descriptor {
            flowspec: Some(rsb.flowspec),
            filters: rsb.filter.senders().into(),
        }
    }
}
