//! Path state (RFC 2205 §3.1, RFC 2209): the sender-side command (`add_sender`) and the
//! Path, PathTear and PathErr handlers.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::msg::Msg;
use super::neighbors::NewState;
use super::outbox::ErrorRoute;
use super::receive::from_neighbor;
use super::refresh::answer;
use super::sessions::MAX_STATES_PER_SESSION;
use super::state::{LocalSender, Psb, Role, Session};
use super::timer::{Ms, NEVER};
use super::{CommandError, Engine, Event, SessionId};
use crate::wire::intserv::TokenBucket;
use crate::wire::{ErrorCode, RsvpError};

impl Engine {
    pub(super) fn cmd_add_sender(
        &mut self,
        now: Instant,
        id: SessionId,
        sender: SocketAddr,
        tspec: TokenBucket,
    ) -> Result<(), CommandError> {
        let now = self.clock.ms(now);
        let (slot, mut session, index) = self.owner_session(id)?;
        let problem = if !matches!(session.owners[index].role, Role::Primed | Role::Sender) {
            Some("add_sender needs a session that neither reserves nor has an unsignaled rule")
        } else if sender.is_ipv4() != session.key.destination.is_ipv4() {
            Some("the sender and the session destination must be of the same address family")
        } else if session
            .senders
            .iter()
            .any(|s| s.sender == sender && s.owner != id)
        {
            Some("this sender is already registered by another session")
        } else {
            None
        };
        if let Some(problem) = problem {
            self.put(slot, session);
            return Err(CommandError::Invalid(problem));
        }
        session.owners[index].role = Role::Sender;
        let position = match session.senders.iter().position(|s| s.sender == sender) {
            Some(i) => {
                // A changed Path is a trigger (RFC 2961): a new id, sent reliably.
                if session.senders[i].tspec != tspec {
                    self.reduction_trigger_sender(&mut session.senders[i]);
                }
                session.senders[i].tspec = tspec;
                i
            }
            None => {
                session.senders.push(LocalSender {
                    owner: id,
                    sender,
                    tspec,
                    next_at: NEVER,
                    wait_at: self.peer_wait_until(now),
                    fast: self.fast_start(),
                    answered: false,
                    rule: None,
                    previous: None,
                    tx_id: 0,
                    tx_acked: false,
                });
                let i = session.senders.len() - 1;
                self.reduction_trigger_sender(&mut session.senders[i]);
                i
            }
        };
        self.send_path(&mut session, position, now);
        self.put(slot, session);
        Ok(())
    }

    /// Sends local sender `index`'s Path and schedules the next one.
    pub(super) fn send_path(&mut self, session: &mut Session, index: usize, now: Ms) {
        let Some(local) = session.senders.get(index) else {
            return;
        };
        let (destination, source) = (session.key.destination.ip(), local.sender.ip());
        // RFC 2961: a refresh of acknowledged state goes in the neighbor's Srefresh instead
        // (`None`), and the round only looks in again after a few refresh periods.
        let Some(id) = self.reduction_path(session, index, now) else {
            let local = &mut session.senders[index];
            let mut fast = local.fast;
            let check = self.summarized(&mut fast, now);
            let local = &mut session.senders[index];
            local.fast = fast;
            local.next_at = check;
            return;
        };
        let local = &session.senders[index];
        let mut msg = self.path_msg(session.key, local);
        msg.message_id = id;
        self.queue_for(session, msg, destination, source);
        let local = &mut session.senders[index];
        let mut fast = local.fast;
        local.next_at = self.after_send(&mut fast, local.answered, now);
        session.senders[index].fast = fast;
    }

    pub(super) fn on_path(
        &mut self,
        now: Ms,
        source: IpAddr,
        destination: IpAddr,
        ttl: Option<u8>,
        msg: &Msg,
    ) {
        let (Some(hop), Some(sender), Some(tspec)) = (msg.hop, msg.sender, msg.tspec) else {
            return self.malformed(
                msg,
                "path without rsvp_hop, sender_template or sender_tspec",
            );
        };
        let refresh = match msg.refresh_ms {
            Some(r) if r > 0 => r,
            _ => return self.malformed(msg, "path without a usable time_values"),
        };
        let own = msg.session.destination.ip();
        // A host keeps path state only for sessions to itself (a Path travels to the
        // session's destination): anything else is no business of ours, not even an error.
        if !self.is_our_destination(own, destination) {
            return self.not_for_us(msg, source, destination);
        }
        // RFC 2205 §3.1.3: a Path's IP source is its sender; a hop that re-sends it with its
        // own address (UDP encapsulation) names itself in RSVP_HOP.
        if !from_neighbor(source, hop.addr) && !from_neighbor(source, sender.ip()) {
            let expected = format!("{} or {}", hop.addr, sender.ip());
            return self.wrong_neighbor(msg, source, &expected);
        }
        let refresh = self.peer_refresh(refresh);
        // RFC 2205 §2.9 / §3.8: RSVP hops intercept Path messages and so never decrement the
        // IP TTL; a received TTL other than Send_TTL means non-RSVP routers forwarded it.
        // The engine keeps no ADSPEC, so the break bit is not ours to set: we record it.
        let non_rsvp_hops = ttl.is_some_and(|ttl| ttl != msg.send_ttl);
        if non_rsvp_hops {
            self.stats.non_rsvp_hops += 1;
            tracing::debug!(
                session = ?msg.session,
                %sender,
                %source,
                previous_hop = %hop.addr,
                send_ttl = msg.send_ttl,
                ttl = ?ttl,
                "path crossed non-rsvp hops"
            );
        }
        // No room for this path state (the session table, or the session's senders): the
        // previous hop hears an RSVP system error rather than silence.
        let refuse = |engine: &mut Self| {
            engine.queue_path_err(
                ErrorRoute {
                    session: msg.session,
                    own,
                    to: hop.addr,
                },
                Some(sender),
                Some(tspec),
                RsvpError::new(ErrorCode::RSVP_SYSTEM_ERROR, 0),
            );
        };
        // New state from the network passes the bounds first (see `neighbors.rs`): the memory
        // cap, the neighbor's quotas and its new-state rate.
        let existing = self.lookup(&msg.session);
        let expires_at = now.saturating_add(self.lifetime(refresh));
        // The common case, an unchanged refresh of known path state, only moves its deadline:
        // done in place (see `refreshed_in_place`), as the full path below would.
        if let Some(slot) = existing {
            let psb = self
                .sessions
                .get_mut(slot as usize)
                .and_then(Option::as_mut)
                .and_then(|s| s.psbs.iter_mut().find(|p| p.sender == sender))
                .filter(|p| p.tspec == tspec && p.phop == hop);
            if let Some(psb) = psb {
                psb.non_rsvp_hops = non_rsvp_hops;
                psb.expires_at = expires_at;
                return self.refreshed_in_place(slot, expires_at);
            }
        }
        let held = existing.and_then(|slot| self.sessions.get(slot as usize)?.as_ref());
        let known = held.is_some_and(|s| s.psbs.iter().any(|p| p.sender == sender));
        let owned = held.is_some_and(|s| !s.owners.is_empty());
        let from = if known {
            super::neighbors::NO_NEIGHBOR
        } else {
            let kind = NewState::Path {
                session: existing.is_none(),
                owned,
            };
            match self.admit_state(kind, None) {
                Ok(from) => from,
                Err(_) => {
                    self.stats.rejected += 1;
                    return refuse(self);
                }
            }
        };
        let Some(slot) = self.slot_for(msg.session, true) else {
            self.stats.rejected += 1;
            tracing::warn!(
                limit = self.config.max_sessions,
                "session table full; path refused"
            );
            return refuse(self);
        };
        let Some(mut session) = self.take(slot) else {
            return;
        };
        if existing.is_none() {
            session.creator = from;
        }
        let fresh = match session.psbs.iter().position(|p| p.sender == sender) {
            // Another previous hop for this sender (a route change, RFC 2205 §3.1.3) is
            // believed from the sender itself or from the previous hop on record; otherwise
            // anyone could move the path state to itself and then tear it down.
            Some(i)
                if session.psbs[i].phop.addr != hop.addr
                    && !from_neighbor(source, sender.ip())
                    && !from_neighbor(source, session.psbs[i].phop.addr) =>
            {
                let expected = format!("{} or {}", session.psbs[i].phop.addr, sender.ip());
                self.put(slot, session);
                return self.wrong_neighbor(msg, source, &expected);
            }
            Some(i) => {
                let psb = &mut session.psbs[i];
                let changed = psb.tspec != tspec || psb.phop != hop;
                psb.tspec = tspec;
                psb.phop = hop;
                psb.non_rsvp_hops = non_rsvp_hops;
                psb.expires_at = expires_at;
                changed
            }
            None if session.psbs.len() >= MAX_STATES_PER_SESSION => {
                self.stats.rejected += 1;
                self.put(slot, session);
                return refuse(self);
            }
            None => {
                session.psbs.push(Psb {
                    sender,
                    tspec,
                    phop: hop,
                    expires_at,
                    non_rsvp_hops,
                    from,
                    rx_id: 0,
                    rx_deci: 0,
                });
                true
            }
        };
        if fresh {
            let audience: Vec<SessionId> = session.audience().collect();
            for id in audience {
                self.emit(id, Event::PathReceived { sender, tspec });
            }
            if let Some(recv) = &mut session.recv {
                // A sender was heard: the wait for one is over.
                recv.wait_at = NEVER;
                if !recv.confirmed {
                    recv.answered = false;
                    recv.fast = self.fast_start();
                }
            }
            // The Resv changes with the path state: a trigger (RFC 2961).
            self.reduction_trigger_recv(&mut session);
            self.send_resvs(&mut session, now);
        }
        self.put(slot, session);
    }

    pub(super) fn on_path_tear(&mut self, source: IpAddr, msg: Msg) {
        let Some(sender) = msg.sender else {
            return self.malformed(&msg, "pathtear without sender_template");
        };
        let Some((slot, mut session)) = self.take_for_message(&msg) else {
            return;
        };
        match session.psbs.iter().position(|p| p.sender == sender) {
            // Like the Path it tears: from its sender or its previous hop (RFC 2205 §3.1.3),
            // and naming the previous hop the path state records.
            Some(i)
                if msg.hop.is_some_and(|h| h.addr != session.psbs[i].phop.addr)
                    || (!from_neighbor(source, session.psbs[i].phop.addr)
                        && !from_neighbor(source, sender.ip())) =>
            {
                let expected = format!("{} or {}", session.psbs[i].phop.addr, sender.ip());
                self.wrong_neighbor(&msg, source, &expected);
            }
            Some(i) => {
                session.psbs.remove(i);
                let audience: Vec<SessionId> = session.audience().collect();
                for id in audience {
                    self.emit(
                        id,
                        Event::TornDown {
                            reason: format!("path torn down by sender {sender}"),
                        },
                    );
                }
                path_state_lost(&mut session);
            }
            None => self.stats.ignored += 1,
        }
        self.put(slot, session);
    }

    pub(super) fn on_path_err(&mut self, now: Ms, source: IpAddr, msg: Msg) {
        let Some(error) = msg.error else {
            return self.malformed(&msg, "patherr without error_spec");
        };
        self.stats.errors_received += 1;
        let Some((slot, mut session)) = self.take_for_message(&msg) else {
            return;
        };
        // A PathErr travels upstream hop by hop (RFC 2205 §3.1.3): it comes from a node our
        // Paths went to — the session's destination, or a next hop that sent us a Resv.
        let destination = session.key.destination.ip();
        if !from_neighbor(source, destination)
            && !session
                .rsbs
                .iter()
                .any(|r| from_neighbor(source, r.nhop.addr))
        {
            self.put(slot, session);
            let expected = format!("{destination} or a next hop with a reservation");
            return self.wrong_neighbor(&msg, source, &expected);
        }
        let mut told: Vec<SessionId> = Vec::new();
        let next = self.steady_refresh(now);
        for local in &mut session.senders {
            if msg.sender.is_none_or(|s| s == local.sender) {
                answer(
                    &mut local.answered,
                    &mut local.fast,
                    &mut local.next_at,
                    next,
                );
                // Answered, if by an error (reported as such): no `NoReceiver` any more.
                local.wait_at = NEVER;
                if !told.contains(&local.owner) {
                    told.push(local.owner);
                }
            }
        }
        if told.is_empty() {
            self.stats.ignored += 1;
        }
        for owner in told {
            self.emit(
                owner,
                Event::PathError {
                    error: error.error(),
                    node: error.node,
                },
            );
        }
        self.put(slot, session);
    }
}

/// With no path state left the receiver's Resv stops; its reservation starts over (and is
/// confirmed and announced again) when a Path comes back.
pub(super) fn path_state_lost(session: &mut Session) {
    if !session.psbs.is_empty() {
        return;
    }
    if let Some(recv) = session.recv.as_deref_mut() {
        recv.next_at = NEVER;
        recv.confirmed = false;
        recv.announced = false;
        recv.answered = false;
        recv.last_error = None;
    }
}
