//! The processing rules (RFC 2205 §3, RFC 2209, host side): commands, received messages and
//! timers acting on session state.
//!
//! Handlers take the session out of its slab slot while they work on it and put it back at
//! the end (which reschedules its timer or deletes it when empty). Messages they produce go to
//! `outbox` and are sent (or delivered locally) after the session is back in place, so the
//! local-delivery decision always sees the current state.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;

use super::codec;
use super::msg::{Descriptor, ErrorInfo, Hop, Kind, Msg};
use super::state::{
    Fast, Filter, LocalSender, Owner, Psb, RecvState, Request, Role, Rsb, RuleState, SenderRule,
    Session, UnsignaledRule,
};
use super::timer::{duration_ms_ceil, Ms, NEVER};
use super::{
    CommandError, Engine, Event, Incoming, RuleAction, RuleFailure, SessionId, SessionKey, Style,
    Transmit,
};
use crate::flow::{AdmissionRequest, Flow, Rule, RuleId};
use crate::wire::intserv::{FlowSpec, TokenBucket};

/// Bits of an owner or rule id that name the session's slab slot (the rest is a counter, so
/// ids are never reused).
const SLOT_BITS: u32 = 24;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
/// Most path states (senders) and reservation states one session keeps from the network.
const MAX_STATES_PER_SESSION: usize = 64;
/// Most locally delivered messages processed in one call (a guard against ping-pong).
const LOCAL_BUDGET: usize = 100_000;
/// RSVP error codes (RFC 2205 Appendix B).
const NO_PATH: u8 = 3;
const NO_SENDER: u8 = 4;
const CONFLICTING_STYLE: u8 = 5;
const RSVP_SYSTEM_ERROR: u8 = 23;

/// Why a rule goes away.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// The next hop sent a ResvTear.
    Teardown(IpAddr),
    /// The reservation state timed out.
    Expired,
    /// The next hop no longer asks for it.
    Withdrawn,
}

/// A readable name of an RSVP error code.
pub(crate) fn error_name(code: u8) -> &'static str {
    match code {
        0 => "confirmation",
        1 => "admission control failure",
        2 => "policy control failure",
        3 => "no path information for this resv",
        4 => "no sender information for this resv",
        5 => "conflicting reservation style",
        6 => "unknown reservation style",
        7 => "conflicting destination ports",
        8 => "conflicting sender ports",
        12 => "service preempted",
        13 => "unknown object class",
        14 => "unknown object c-type",
        20 => "api error",
        21 => "traffic control error",
        22 => "traffic control system error",
        23 => "rsvp system error",
        _ => "unknown error",
    }
}

impl Engine {
    // ----------------------------------------------------------------------------------
    // plumbing

    fn refresh_ms(&self) -> Ms {
        // TIME_VALUES carries 32 bits of milliseconds.
        duration_ms_ceil(self.config.refresh_period).clamp(2, u64::from(u32::MAX))
    }

    /// Our refresh period as carried in TIME_VALUES.
    fn refresh_ms_u32(&self) -> u32 {
        u32::try_from(self.refresh_ms()).unwrap_or(u32::MAX)
    }

    /// A refresh interval: uniform in `[0.5 R, 1.5 R]`.
    fn jitter(&mut self) -> Ms {
        let r = self.refresh_ms();
        self.rng.random_range(r / 2..=r + r / 2)
    }

    /// State lifetime for a peer refreshing every `peer_r` ms: `(K + 0.5) · 1.5 · R`, rounded
    /// up, plus one tick so that it is never early.
    fn lifetime(&self, peer_r: u32) -> Ms {
        let k = u64::from(self.config.keep_multiplier.max(1));
        let r = u64::from(peer_r);
        (2 * k + 1)
            .saturating_mul(3)
            .saturating_mul(r)
            .div_ceil(4)
            .saturating_add(1)
    }

    fn fast_start(&self) -> Fast {
        Fast {
            left: u8::try_from(self.config.fast_retransmit_count).unwrap_or(u8::MAX),
        }
    }

    /// The delay until the next fast retransmission when `left` remain: the initial delay,
    /// doubled for each retransmission already made, at most `u32::MAX` ms.
    fn fast_delay(&self, left: u8) -> Ms {
        let made = u32::from(self.fast_start().left.saturating_sub(left));
        let cap = u64::from(u32::MAX);
        duration_ms_ceil(self.config.fast_retransmit_initial)
            .min(cap)
            .saturating_mul(1 << made.min(32))
            .min(cap)
    }

    /// The deadline of a peer wait that starts at `now` ([`NEVER`] when waits are off).
    fn peer_wait_until(&self, now: Ms) -> Ms {
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
    fn after_send(&mut self, fast: &mut Fast, answered: bool, now: Ms) -> Ms {
        if !answered && fast.left > 0 {
            let delay = self.fast_delay(fast.left);
            fast.left -= 1;
            now.saturating_add(delay)
        } else {
            fast.left = 0;
            now.saturating_add(self.jitter())
        }
    }

    /// A new rule id for the session in `slot` (the id carries the slot).
    fn new_rule_id(&mut self, slot: u32) -> RuleId {
        let id = RuleId(self.next_rule << SLOT_BITS | u64::from(slot));
        self.next_rule += 1;
        id
    }

    /// The slot of the session an id (owner or rule) was made for.
    fn slot_of(id: u64) -> u32 {
        (id & SLOT_MASK) as u32
    }

    /// The slot of `key`'s session, if it exists.
    fn lookup(&self, key: &SessionKey) -> Option<u32> {
        self.index.get(key, &self.sessions)
    }

    /// The slot of `key`'s session, created if needed (`limited`: refuse beyond
    /// `max_sessions`).
    fn slot_for(&mut self, key: SessionKey, limited: bool) -> Option<u32> {
        if let Some(slot) = self.lookup(&key) {
            return Some(slot);
        }
        if limited && self.index.len() >= self.config.max_sessions {
            return None;
        }
        let session = Session::new(key);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.sessions[slot as usize] = Some(session);
                slot
            }
            None => {
                let slot = u32::try_from(self.sessions.len())
                    .ok()
                    // The last slot number stays unused: ids ending in it name no session.
                    .filter(|s| u64::from(*s) < SLOT_MASK)?;
                if self.sessions.len() == self.sessions.capacity() {
                    // Grow by an eighth: geometric (amortized O(1)) without doubling's slack.
                    let more = (self.sessions.len() / 8).max(16);
                    self.sessions.reserve_exact(more);
                }
                self.sessions.push(Some(session));
                slot
            }
        };
        self.index.insert(&key, slot, &self.sessions);
        Some(slot)
    }

    fn take(&mut self, slot: u32) -> Option<Session> {
        self.sessions.get_mut(slot as usize)?.take()
    }

    /// Takes out the session a received message names; a message for no known session is
    /// counted as ignored (the caller answers with an error where the RFC asks for one).
    fn take_for_message(&mut self, msg: &Msg) -> Option<(u32, Session)> {
        let Some(slot) = self.lookup(&msg.session) else {
            self.stats.ignored += 1;
            return None;
        };
        Some((slot, self.take(slot)?))
    }

    /// Puts a session back: deletes it when nothing is left, else makes sure its earliest
    /// deadline is in the timer wheel.
    fn put(&mut self, slot: u32, mut session: Session) {
        if session.is_empty() {
            self.index.remove(&session.key, slot, &self.sessions);
            self.free.push(slot);
            return;
        }
        let next = session.next_deadline();
        if next < session.scheduled {
            session.scheduled = next;
            self.timers.push(next, slot);
        }
        if let Some(place) = self.sessions.get_mut(slot as usize) {
            *place = Some(session);
        }
    }

    fn emit(&mut self, owner: SessionId, event: Event) {
        self.events.push_back((owner, event));
    }

    /// Queues a message; whether it is for this engine itself is decided when it is sent.
    fn queue(&mut self, msg: Msg, destination: IpAddr, source: IpAddr) {
        self.outbox.push((msg, destination, source, None));
    }

    /// Queues a message about `session` (the session it is for, held by the caller): the
    /// local-delivery decision is made now, saving a lookup when it is sent.
    fn queue_for(&mut self, session: &Session, msg: Msg, destination: IpAddr, source: IpAddr) {
        let local = self.config.local_delivery && self.is_for_session(session, &msg, destination);
        self.outbox.push((msg, destination, source, Some(local)));
    }

    /// Sends (or delivers locally) what the handlers queued.
    pub(super) fn flush(&mut self) {
        let mut outbox = std::mem::take(&mut self.outbox);
        for (msg, destination, source, local) in outbox.drain(..) {
            let local = local
                .unwrap_or_else(|| self.config.local_delivery && self.is_for_us(&msg, destination));
            if local {
                self.stats.local_delivered += 1;
                self.local.push_back((source, destination, msg));
                continue;
            }
            let Some(payload) = codec::encode(&msg) else {
                self.stats.encode_failed += 1;
                continue;
            };
            self.stats.transmitted += 1;
            self.transmits.push_back(Transmit {
                destination,
                source: Some(source),
                router_alert: msg.kind.router_alert(),
                ttl: msg.send_ttl,
                payload,
            });
        }
        // Keep the buffer for the next time.
        if self.outbox.is_empty() {
            self.outbox = outbox;
        }
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
            Kind::Path | Kind::PathTear => {
                own_receiver
                    && (session.audience().next().is_some()
                        || msg
                            .sender
                            .is_some_and(|s| session.psbs.iter().any(|p| p.sender == s)))
            }
            Kind::Resv | Kind::ResvTear | Kind::PathErr => own_sender(session),
            Kind::ResvErr | Kind::ResvConf => own_receiver && session.has_receivers(),
        }
    }

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

    // ----------------------------------------------------------------------------------
    // message builders

    fn path_msg(&self, key: SessionKey, sender: &LocalSender) -> Msg {
        let mut msg = Msg::new(Kind::Path, key);
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
    fn resv_msg(&self, session: &Session, request: &Request, phop: Hop, tear: bool) -> Msg {
        let kind = if tear { Kind::ResvTear } else { Kind::Resv };
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
                    filters: vec![s],
                })
                .collect(),
            Style::SharedExplicit => vec![Descriptor {
                flowspec,
                filters: senders.collect(),
            }],
            Style::WildcardFilter => vec![Descriptor {
                flowspec,
                filters: Vec::new(),
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

    /// A ResvErr from this host (`own`) about `descriptors`, to next hop `nhop`.
    #[allow(clippy::too_many_arguments)]
    fn queue_resv_err(
        &mut self,
        key: SessionKey,
        own: IpAddr,
        nhop: IpAddr,
        style: Option<Style>,
        descriptors: Vec<Descriptor>,
        code: u8,
        value: u16,
    ) {
        let mut msg = Msg::new(Kind::ResvErr, key);
        msg.hop = Some(Hop { addr: own, lih: 0 });
        msg.error = Some(ErrorInfo {
            node: own,
            flags: 0,
            code,
            value,
        });
        msg.style = style;
        msg.descriptors = descriptors;
        self.stats.errors_sent += 1;
        tracing::debug!(session = ?key, %nhop, code, value, "sending ResvErr: {}", error_name(code));
        self.queue(msg, nhop, own);
    }

    /// A PathErr from this host (`own`) about `sender`'s path, to previous hop `phop`.
    #[allow(clippy::too_many_arguments)]
    fn queue_path_err(
        &mut self,
        key: SessionKey,
        own: IpAddr,
        phop: IpAddr,
        sender: Option<SocketAddr>,
        tspec: Option<TokenBucket>,
        code: u8,
        value: u16,
    ) {
        let mut msg = Msg::new(Kind::PathErr, key);
        msg.error = Some(ErrorInfo {
            node: own,
            flags: 0,
            code,
            value,
        });
        msg.sender = sender;
        msg.tspec = tspec;
        self.stats.errors_sent += 1;
        tracing::debug!(session = ?key, %phop, code, value, "sending PathErr: {}", error_name(code));
        self.queue(msg, phop, own);
    }

    fn rsb_descriptor(rsb: &Rsb) -> Descriptor {
        Descriptor {
            flowspec: Some(rsb.flowspec),
            filters: rsb.filter.senders(),
        }
    }

    // ----------------------------------------------------------------------------------
    // commands

    pub(super) fn cmd_open_session(&mut self, now: Instant, key: SessionKey) -> SessionId {
        self.clock.ms(now);
        // Owners are bounded by the caller, not by `max_sessions` (that limits the network).
        let Some(slot) = self.slot_for(key, false) else {
            // 2^24 sessions: an id that names nothing (every command on it fails).
            let id = SessionId(self.next_session << SLOT_BITS | SLOT_MASK);
            self.next_session += 1;
            tracing::error!("session slab full; session {id:?} has no state");
            return id;
        };
        let id = SessionId(self.next_session << SLOT_BITS | u64::from(slot));
        self.next_session += 1;
        self.owner_total += 1;
        let Some(mut session) = self.take(slot) else {
            return id;
        };
        session.owners.push(Owner {
            id,
            role: Role::Primed,
        });
        for psb in &session.psbs {
            self.events.push_back((
                id,
                Event::PathReceived {
                    sender: psb.sender,
                    tspec: psb.tspec,
                },
            ));
        }
        self.put(slot, session);
        id
    }

    /// The slot and owner index of `id`, taking the session out.
    fn owner_session(&mut self, id: SessionId) -> Result<(u32, Session, usize), CommandError> {
        let slot = Self::slot_of(id.0);
        let session = self.take(slot).ok_or(CommandError::UnknownSession(id))?;
        match session.owner_index(id) {
            Some(index) => Ok((slot, session, index)),
            None => {
                self.put(slot, session);
                Err(CommandError::UnknownSession(id))
            }
        }
    }

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
                });
                session.senders.len() - 1
            }
        };
        self.send_path(&mut session, position, now);
        self.put(slot, session);
        Ok(())
    }

    /// Sends local sender `index`'s Path and schedules the next one.
    fn send_path(&mut self, session: &mut Session, index: usize, now: Ms) {
        let Some(local) = session.senders.get(index) else {
            return;
        };
        let msg = self.path_msg(session.key, local);
        let (destination, source) = (session.key.destination.ip(), local.sender.ip());
        self.queue_for(session, msg, destination, source);
        let local = &mut session.senders[index];
        let mut fast = local.fast;
        local.next_at = self.after_send(&mut fast, local.answered, now);
        session.senders[index].fast = fast;
    }

    pub(super) fn cmd_reserve(
        &mut self,
        now: Instant,
        id: SessionId,
        style: Style,
        flowspec: FlowSpec,
        confirm: bool,
    ) -> Result<(), CommandError> {
        let now = self.clock.ms(now);
        let (slot, mut session, index) = self.owner_session(id)?;
        if !matches!(session.owners[index].role, Role::Primed | Role::Receiver(_)) {
            self.put(slot, session);
            return Err(CommandError::Invalid(
                "reserve needs a session that neither sends nor has an unsignaled rule",
            ));
        }
        session.owners[index].role = Role::Receiver(Request {
            style,
            flowspec,
            confirm,
        });
        self.request_changed(&mut session, now);
        self.put(slot, session);
        Ok(())
    }

    /// The merged local request changed: restart confirmation and fast retransmission and
    /// send the Resv now if there is path state.
    fn request_changed(&mut self, session: &mut Session, now: Ms) {
        let merged = session.merged_request();
        if session.recv.is_none() {
            // A new receiver state: it waits for a Path unless one is here already.
            let mut recv = RecvState::new();
            if session.psbs.is_empty() {
                recv.wait_at = self.peer_wait_until(now);
            }
            session.recv = Some(Box::new(recv));
        }
        let Some(recv) = session.recv.as_deref_mut() else {
            return;
        };
        if recv.request == merged {
            return;
        }
        recv.request = merged;
        recv.confirmed = false;
        recv.announced = false;
        recv.answered = false;
        recv.last_error = None;
        recv.fast = self.fast_start();
        self.send_resvs(session, now);
    }

    /// Sends the receiver's Resv to every previous hop and schedules the next one.
    fn send_resvs(&mut self, session: &mut Session, now: Ms) {
        let request = session.merged_request();
        let has_paths = !session.psbs.is_empty();
        let Some(recv) = session.recv.as_deref_mut() else {
            return;
        };
        let Some(request) = request.filter(|_| has_paths) else {
            recv.next_at = NEVER;
            return;
        };
        let mut phops: Vec<Hop> = Vec::with_capacity(1);
        for psb in &session.psbs {
            if !phops.iter().any(|h| h.addr == psb.phop.addr) {
                phops.push(psb.phop);
            }
        }
        for phop in phops {
            let msg = self.resv_msg(session, &request, phop, false);
            self.queue_for(session, msg, phop.addr, session.key.destination.ip());
        }
        let Some(recv) = session.recv.as_deref_mut() else {
            return;
        };
        let mut fast = recv.fast;
        let answered = recv.answered;
        let next_at = self.after_send(&mut fast, answered, now);
        recv.fast = fast;
        recv.next_at = next_at;
        if !request.confirm && !recv.announced {
            recv.announced = true;
            let receivers: Vec<SessionId> = session.receivers().map(|(id, _)| id).collect();
            for id in receivers {
                self.emit(
                    id,
                    Event::Established {
                        flowspec: request.flowspec,
                    },
                );
            }
        }
    }

    pub(super) fn cmd_admit_unsignaled(
        &mut self,
        now: Instant,
        id: SessionId,
        flow: Flow,
        flowspec: FlowSpec,
    ) -> Result<RuleId, CommandError> {
        self.clock.ms(now);
        let (slot, mut session, index) = self.owner_session(id)?;
        if !matches!(session.owners[index].role, Role::Primed) {
            self.put(slot, session);
            return Err(CommandError::Invalid(
                "admit_unsignaled needs a fresh session (no sender, reservation or rule yet)",
            ));
        }
        let rule = self.new_rule_id(slot);
        let request = AdmissionRequest {
            rule,
            flow,
            flowspec,
            sender_tspec: None,
            signaled: false,
        };
        match self.admission.admit(&request) {
            Ok(grant) => {
                self.rule_total += 1;
                session.owners[index].role = Role::Unsignaled(Box::new(UnsignaledRule {
                    id: rule,
                    flow,
                    flowspec,
                    installed: false,
                }));
                self.actions.push_back(RuleAction::Install {
                    session: id,
                    rule: Rule {
                        id: rule,
                        flow,
                        flowspec,
                        dscp: grant.dscp,
                    },
                });
                self.put(slot, session);
                Ok(rule)
            }
            Err(denied) => {
                tracing::debug!(%flow, %denied, "unsignaled rule refused");
                self.put(slot, session);
                Err(CommandError::Denied(denied))
            }
        }
    }

    /// Emits the `Remove` of a rule and returns its resources.
    fn remove_rule(&mut self, owner: SessionId, id: RuleId) {
        self.rule_total -= 1;
        self.admission.release(id);
        self.actions
            .push_back(RuleAction::Remove { session: owner, id });
    }

    pub(super) fn cmd_release(&mut self, now: Instant, id: SessionId) {
        let now = self.clock.ms(now);
        let Ok((slot, mut session, index)) = self.owner_session(id) else {
            return;
        };
        let owner = session.owners.remove(index);
        self.owner_total -= 1;
        match owner.role {
            Role::Primed => {}
            Role::Unsignaled(rule) => self.remove_rule(id, rule.id),
            Role::Sender => {
                let mut i = 0;
                while i < session.senders.len() {
                    if session.senders[i].owner != id {
                        i += 1;
                        continue;
                    }
                    let local = session.senders.remove(i);
                    let mut tear = Msg::new(Kind::PathTear, session.key);
                    tear.hop = Some(Hop {
                        addr: local.sender.ip(),
                        lih: 0,
                    });
                    tear.sender = Some(local.sender);
                    tear.tspec = Some(local.tspec);
                    let (destination, source) = (session.key.destination.ip(), local.sender.ip());
                    self.queue_for(&session, tear, destination, source);
                    if let Some(rule) = local.rule {
                        self.remove_rule(id, rule.id);
                    }
                }
                // Reservations for senders that are gone mean nothing any more.
                let senders = &session.senders;
                session
                    .rsbs
                    .retain(|rsb| senders.iter().any(|s| rsb.filter.covers(s.sender)));
            }
            Role::Receiver(request) => {
                if session.has_receivers() {
                    self.request_changed(&mut session, now);
                } else {
                    let mut phops: Vec<Hop> = Vec::new();
                    for psb in &session.psbs {
                        if !phops.iter().any(|h| h.addr == psb.phop.addr) {
                            phops.push(psb.phop);
                        }
                    }
                    for phop in phops {
                        let tear = self.resv_msg(&session, &request, phop, true);
                        let source = session.key.destination.ip();
                        self.queue_for(&session, tear, phop.addr, source);
                    }
                    session.recv = None;
                }
            }
        }
        self.emit(
            id,
            Event::TornDown {
                reason: "released by the local owner".into(),
            },
        );
        self.put(slot, session);
    }

    pub(super) fn cmd_rule_outcome(
        &mut self,
        now: Instant,
        id: RuleId,
        outcome: Result<(), RuleFailure>,
    ) {
        self.clock.ms(now);
        let slot = Self::slot_of(id.0);
        let Some(mut session) = self.take(slot) else {
            tracing::debug!(rule = %id, "outcome for a rule that is gone; ignored");
            return;
        };
        // An unsignaled owner's rule?
        if let Some(index) = session
            .owners
            .iter()
            .position(|o| matches!(&o.role, Role::Unsignaled(r) if r.id == id))
        {
            let owner = session.owners[index].id;
            if let Role::Unsignaled(rule) = &mut session.owners[index].role {
                match outcome {
                    Ok(()) => {
                        rule.installed = true;
                        let flowspec = rule.flowspec;
                        self.emit(owner, Event::Established { flowspec });
                    }
                    Err(failure) => {
                        let node = rule.flow.sender.ip();
                        session.owners[index].role = Role::Primed;
                        self.remove_rule(owner, id);
                        self.emit(
                            owner,
                            Event::ResvError {
                                code: failure.code,
                                value: failure.value,
                                node,
                            },
                        );
                    }
                }
            }
            self.put(slot, session);
            return;
        }
        let Some(index) = session
            .senders
            .iter()
            .position(|s| s.rule.is_some_and(|r| r.id == id))
        else {
            self.put(slot, session);
            return;
        };
        let local = &session.senders[index];
        let (owner, sender) = (local.owner, local.sender);
        let Some(mut rule) = local.rule else {
            self.put(slot, session);
            return;
        };
        // The reservation the rule serves: the largest unrefused one covering the sender.
        let serving = best_rsb(&session.rsbs, sender, Some(rule.flowspec));
        match outcome {
            Ok(()) => {
                rule.state = RuleState::Installed;
                session.senders[index].rule = Some(rule);
                session.senders[index].previous = None;
                self.emit(
                    owner,
                    Event::Established {
                        flowspec: rule.flowspec,
                    },
                );
                if let Some(b) = serving {
                    self.queue_confirm(&session, b, sender);
                }
            }
            Err(failure) => {
                tracing::debug!(rule = %id, code = failure.code, reason = %failure.reason, "rule failed");
                match rule.state {
                    RuleState::Modifying => {
                        let previous = session.senders[index]
                            .previous
                            .take()
                            .map_or(rule.flowspec, |b| *b);
                        // The old parameters stay in force; give the pools back their view.
                        let request = AdmissionRequest {
                            rule: id,
                            flow: flow_of(session.key, sender),
                            flowspec: previous,
                            sender_tspec: Some(session.senders[index].tspec),
                            signaled: true,
                        };
                        if let Err(denied) = self.admission.admit(&request) {
                            tracing::warn!(rule = %id, %denied, "restoring the previous admission failed");
                        }
                        rule.flowspec = previous;
                        rule.state = RuleState::Installed;
                        session.senders[index].rule = Some(rule);
                    }
                    _ => {
                        session.senders[index].rule = None;
                        self.remove_rule(owner, id);
                    }
                }
                let own = sender.ip();
                if let Some(b) = serving {
                    let rsb = &mut session.rsbs[b];
                    rsb.refused = Some((failure.code, failure.value));
                    let (nhop, style, descriptor) =
                        (rsb.nhop.addr, rsb.style, Self::rsb_descriptor(rsb));
                    self.queue_resv_err(
                        session.key,
                        own,
                        nhop,
                        Some(style),
                        vec![descriptor],
                        failure.code,
                        failure.value,
                    );
                }
                self.emit(
                    owner,
                    Event::ResvError {
                        code: failure.code,
                        value: failure.value,
                        node: own,
                    },
                );
            }
        }
        // Changes that waited for this outcome.
        self.reconcile(slot, &mut session, Loss::Withdrawn);
        self.put(slot, session);
    }

    /// A ResvConf for reservation `b` if it asked for one.
    fn queue_confirm(&mut self, session: &Session, b: usize, sender: SocketAddr) {
        let Some(rsb) = session.rsbs.get(b) else {
            return;
        };
        let Some(receiver) = rsb.confirm else {
            return;
        };
        let own = sender.ip();
        let mut msg = Msg::new(Kind::ResvConf, session.key);
        msg.error = Some(ErrorInfo {
            node: own,
            flags: 0,
            code: 0,
            value: 0,
        });
        msg.confirm = Some(receiver);
        msg.style = Some(rsb.style);
        msg.descriptors = vec![Self::rsb_descriptor(rsb)];
        self.queue_for(session, msg, receiver, own);
    }

    // ----------------------------------------------------------------------------------
    // reservations on the sender side

    /// Brings each local sender's rule in line with the reservations that cover it: install,
    /// modify or remove, asking admission control first.
    fn reconcile(&mut self, slot: u32, session: &mut Session, loss: Loss) {
        for index in 0..session.senders.len() {
            // Each refusal marks one reservation, so this ends.
            for _ in 0..=session.rsbs.len() {
                let local = &session.senders[index];
                let (owner, sender, tspec) = (local.owner, local.sender, local.tspec);
                let best = best_rsb(&session.rsbs, sender, None);
                let covered = session.rsbs.iter().any(|r| r.filter.covers(sender));
                match (local.rule, best) {
                    (Some(rule), _) if rule.state != RuleState::Installed => break,
                    (None, None) => break,
                    (Some(rule), None) => {
                        if covered {
                            // Only refused requests left: the admitted parameters stay.
                            break;
                        }
                        session.senders[index].rule = None;
                        self.remove_rule(owner, rule.id);
                        let event = match loss {
                            Loss::Teardown(by) => Event::TornDown {
                                reason: format!("reservation torn down by {by}"),
                            },
                            Loss::Expired => Event::Expired {
                                reason: "reservation state expired (no resv refresh)".into(),
                            },
                            Loss::Withdrawn => Event::TornDown {
                                reason: "reservation no longer requested".into(),
                            },
                        };
                        self.emit(owner, event);
                        break;
                    }
                    (rule, Some(b)) => {
                        let flowspec = session.rsbs[b].flowspec;
                        if rule.is_some_and(|r| r.flowspec == flowspec) {
                            break;
                        }
                        let id = match rule {
                            Some(r) => r.id,
                            None => self.new_rule_id(slot),
                        };
                        let flow = flow_of(session.key, sender);
                        let request = AdmissionRequest {
                            rule: id,
                            flow,
                            flowspec,
                            sender_tspec: Some(tspec),
                            signaled: true,
                        };
                        match self.admission.admit(&request) {
                            Ok(grant) => {
                                let (state, dscp) = match rule {
                                    Some(r) => {
                                        session.senders[index].previous =
                                            Some(Box::new(r.flowspec));
                                        (RuleState::Modifying, grant.dscp.or(r.dscp))
                                    }
                                    None => {
                                        self.rule_total += 1;
                                        (RuleState::Installing, grant.dscp)
                                    }
                                };
                                session.senders[index].rule = Some(SenderRule {
                                    id,
                                    flowspec,
                                    state,
                                    dscp,
                                });
                                let rule = Rule {
                                    id,
                                    flow,
                                    flowspec,
                                    dscp,
                                };
                                self.actions.push_back(match state {
                                    RuleState::Installing => RuleAction::Install {
                                        session: owner,
                                        rule,
                                    },
                                    _ => RuleAction::Modify {
                                        session: owner,
                                        rule,
                                    },
                                });
                                break;
                            }
                            Err(denied) => {
                                tracing::debug!(%flow, %denied, "reservation refused");
                                let rsb = &mut session.rsbs[b];
                                rsb.refused = Some((denied.code, denied.value));
                                let (nhop, style, descriptor) =
                                    (rsb.nhop.addr, rsb.style, Self::rsb_descriptor(rsb));
                                self.queue_resv_err(
                                    session.key,
                                    sender.ip(),
                                    nhop,
                                    Some(style),
                                    vec![descriptor],
                                    denied.code,
                                    denied.value,
                                );
                                self.emit(
                                    owner,
                                    Event::AdmissionDenied {
                                        code: denied.code,
                                        value: denied.value,
                                        reason: denied.reason,
                                    },
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    // ----------------------------------------------------------------------------------
    // received messages

    pub(super) fn on_datagram(&mut self, now: Instant, datagram: Incoming<'_>) {
        self.stats.received += 1;
        match codec::decode(datagram.payload) {
            Ok(msg) => self.on_msg(
                now,
                datagram.source,
                datagram.destination,
                datagram.ttl,
                msg,
            ),
            Err(failure) if failure.unsupported => {
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
    fn answer_undecodable(&mut self, datagram: Incoming<'_>, answer: codec::Answer) {
        let own = datagram.destination;
        match answer.kind {
            Kind::Path => {
                let phop = answer.hop.map_or(datagram.source, |h| h.addr);
                self.queue_path_err(
                    answer.session,
                    own,
                    phop,
                    answer.sender,
                    None,
                    answer.code,
                    answer.value,
                );
            }
            Kind::Resv => {
                let nhop = answer.hop.map_or(datagram.source, |h| h.addr);
                self.queue_resv_err(
                    answer.session,
                    own,
                    nhop,
                    None,
                    Vec::new(),
                    answer.code,
                    answer.value,
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
            Kind::Path => self.on_path(now, source, ttl, msg),
            Kind::PathTear => self.on_path_tear(msg),
            Kind::PathErr => self.on_path_err(now, msg),
            Kind::Resv => self.on_resv(now, destination, msg),
            Kind::ResvTear => self.on_resv_tear(msg),
            Kind::ResvErr => self.on_resv_err(now, msg),
            Kind::ResvConf => self.on_resv_conf(now, msg),
        }
    }

    fn malformed(&mut self, msg: &Msg, what: &str) {
        self.stats.malformed += 1;
        tracing::debug!(kind = ?msg.kind, session = ?msg.session, "malformed message: {what}");
    }

    fn on_path(&mut self, now: Ms, source: IpAddr, ttl: Option<u8>, msg: Msg) {
        let (Some(hop), Some(sender), Some(tspec)) = (msg.hop, msg.sender, msg.tspec) else {
            return self.malformed(
                &msg,
                "path without rsvp_hop, sender_template or sender_tspec",
            );
        };
        let refresh = match msg.refresh_ms {
            Some(r) if r > 0 => r,
            _ => return self.malformed(&msg, "path without a usable time_values"),
        };
        let own = msg.session.destination.ip();
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
        let Some(slot) = self.slot_for(msg.session, true) else {
            self.stats.rejected += 1;
            tracing::warn!(
                limit = self.config.max_sessions,
                "session table full; path refused"
            );
            self.queue_path_err(
                msg.session,
                own,
                hop.addr,
                Some(sender),
                Some(tspec),
                RSVP_SYSTEM_ERROR,
                0,
            );
            return;
        };
        let Some(mut session) = self.take(slot) else {
            return;
        };
        let expires_at = now.saturating_add(self.lifetime(refresh));
        let fresh = match session.psbs.iter().position(|p| p.sender == sender) {
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
                self.queue_path_err(
                    msg.session,
                    own,
                    hop.addr,
                    Some(sender),
                    Some(tspec),
                    RSVP_SYSTEM_ERROR,
                    0,
                );
                return;
            }
            None => {
                session.psbs.push(Psb {
                    sender,
                    tspec,
                    phop: hop,
                    expires_at,
                    non_rsvp_hops,
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
            self.send_resvs(&mut session, now);
        }
        self.put(slot, session);
    }

    fn on_path_tear(&mut self, msg: Msg) {
        let Some(sender) = msg.sender else {
            return self.malformed(&msg, "pathtear without sender_template");
        };
        let Some((slot, mut session)) = self.take_for_message(&msg) else {
            return;
        };
        match session.psbs.iter().position(|p| p.sender == sender) {
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

    fn on_path_err(&mut self, now: Ms, msg: Msg) {
        let Some(error) = msg.error else {
            return self.malformed(&msg, "patherr without error_spec");
        };
        self.stats.errors_received += 1;
        let Some((slot, mut session)) = self.take_for_message(&msg) else {
            return;
        };
        let mut told: Vec<SessionId> = Vec::new();
        let next = now.saturating_add(self.jitter());
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
                    code: error.code,
                    value: error.value,
                    node: error.node,
                },
            );
        }
        self.put(slot, session);
    }

    fn on_resv(&mut self, now: Ms, destination: IpAddr, msg: Msg) {
        let (Some(hop), Some(style)) = (msg.hop, msg.style) else {
            return self.malformed(&msg, "resv without rsvp_hop or style");
        };
        let refresh = match msg.refresh_ms {
            Some(r) if r > 0 => r,
            _ => return self.malformed(&msg, "resv without a usable time_values"),
        };
        if msg.descriptors.is_empty() {
            return self.malformed(&msg, "resv without flow descriptors");
        }
        let found = self
            .lookup(&msg.session)
            .and_then(|slot| Some((slot, self.take(slot)?)));
        match found {
            Some((slot, mut session)) if !session.senders.is_empty() => {
                self.resv_into(slot, &mut session, now, hop, style, refresh, &msg);
                self.put(slot, session);
            }
            other => {
                // RFC 2209 (Resv without path state): ResvErr "no path information".
                if let Some((slot, session)) = other {
                    self.put(slot, session);
                }
                self.stats.rejected += 1;
                self.queue_resv_err(
                    msg.session,
                    destination,
                    hop.addr,
                    msg.style,
                    msg.descriptors,
                    NO_PATH,
                    0,
                );
            }
        }
    }

    /// A Resv for a session with local senders.
    #[allow(clippy::too_many_arguments)]
    fn resv_into(
        &mut self,
        slot: u32,
        session: &mut Session,
        now: Ms,
        hop: Hop,
        style: Style,
        refresh: u32,
        msg: &Msg,
    ) {
        let own = session.senders[0].sender.ip();
        if session
            .rsbs
            .iter()
            .any(|r| r.nhop.addr != hop.addr && r.style != style)
        {
            self.stats.rejected += 1;
            self.queue_resv_err(
                msg.session,
                own,
                hop.addr,
                msg.style,
                msg.descriptors.clone(),
                CONFLICTING_STYLE,
                0,
            );
            return;
        }
        // Flow descriptors → (filter, flowspec); an FF flowspec may be carried over from the
        // previous descriptor (RFC 2205 §3.1.4).
        let mut entries: Vec<(Filter, FlowSpec, Descriptor)> = Vec::new();
        let mut carried: Option<FlowSpec> = None;
        for descriptor in &msg.descriptors {
            let Some(flowspec) = descriptor.flowspec.or(carried) else {
                return self.malformed(msg, "resv flow descriptor without flowspec");
            };
            carried = Some(flowspec);
            match style {
                Style::FixedFilter => {
                    for filter in &descriptor.filters {
                        entries.push((
                            Filter::One(*filter),
                            flowspec,
                            Descriptor {
                                flowspec: Some(flowspec),
                                filters: vec![*filter],
                            },
                        ));
                    }
                }
                Style::SharedExplicit => entries.push((
                    Filter::Many(descriptor.filters.clone().into_boxed_slice()),
                    flowspec,
                    descriptor.clone(),
                )),
                Style::WildcardFilter => entries.push((Filter::All, flowspec, descriptor.clone())),
            }
            if style != Style::FixedFilter {
                break;
            }
        }
        let expires_at = now.saturating_add(self.lifetime(refresh));
        let mut confirm_for: Vec<usize> = Vec::new();
        for (filter, flowspec, descriptor) in entries {
            if !session.senders.iter().any(|s| filter.covers(s.sender)) {
                self.stats.rejected += 1;
                self.queue_resv_err(
                    msg.session,
                    own,
                    hop.addr,
                    msg.style,
                    vec![descriptor],
                    NO_SENDER,
                    0,
                );
                continue;
            }
            let existing = session
                .rsbs
                .iter()
                .position(|r| r.nhop.addr == hop.addr && r.filter == filter);
            let (index, changed) = match existing {
                Some(i) => {
                    let rsb = &mut session.rsbs[i];
                    let changed = rsb.flowspec != flowspec || rsb.style != style;
                    if changed {
                        rsb.flowspec = flowspec;
                        rsb.style = style;
                        rsb.refused = None;
                    }
                    rsb.nhop = hop;
                    rsb.confirm = msg.confirm;
                    rsb.expires_at = expires_at;
                    (i, changed)
                }
                None if session.rsbs.len() >= MAX_STATES_PER_SESSION => {
                    self.stats.rejected += 1;
                    self.queue_resv_err(
                        msg.session,
                        own,
                        hop.addr,
                        msg.style,
                        vec![descriptor],
                        RSVP_SYSTEM_ERROR,
                        0,
                    );
                    continue;
                }
                None => {
                    session.rsbs.push(Rsb {
                        nhop: hop,
                        style,
                        filter: filter.clone(),
                        flowspec,
                        confirm: msg.confirm,
                        expires_at,
                        refused: None,
                    });
                    (session.rsbs.len() - 1, true)
                }
            };
            // Our Paths are answered: no more fast retransmission.
            let mut owners: Vec<SessionId> = Vec::new();
            for index in 0..session.senders.len() {
                let local = &session.senders[index];
                if !filter.covers(local.sender) {
                    continue;
                }
                if !owners.contains(&local.owner) {
                    owners.push(local.owner);
                }
                if !local.answered {
                    let next = now.saturating_add(self.jitter());
                    let local = &mut session.senders[index];
                    answer(
                        &mut local.answered,
                        &mut local.fast,
                        &mut local.next_at,
                        next,
                    );
                    // A receiver was heard: the wait for one is over.
                    local.wait_at = NEVER;
                }
            }
            if changed {
                for owner in owners {
                    self.emit(owner, Event::ResvReceived { flowspec, style });
                }
            } else if let Some((code, value)) = session.rsbs[index].refused {
                // A refresh of a refused request: the same answer again.
                let descriptor = Self::rsb_descriptor(&session.rsbs[index]);
                self.queue_resv_err(
                    msg.session,
                    own,
                    hop.addr,
                    Some(style),
                    vec![descriptor],
                    code,
                    value,
                );
            } else if msg.confirm.is_some() {
                confirm_for.push(index);
            }
        }
        self.reconcile(slot, session, Loss::Withdrawn);
        // A refresh that still asks for confirmation of a reservation in force.
        for index in confirm_for {
            let Some(rsb) = session.rsbs.get(index) else {
                continue;
            };
            let in_force = session.senders.iter().find(|s| {
                rsb.filter.covers(s.sender)
                    && s.rule.is_some_and(|r| {
                        r.state == RuleState::Installed && r.flowspec == rsb.flowspec
                    })
            });
            if let Some(local) = in_force {
                let sender = local.sender;
                self.queue_confirm(session, index, sender);
            }
        }
    }

    fn on_resv_tear(&mut self, msg: Msg) {
        let Some(hop) = msg.hop else {
            return self.malformed(&msg, "resvtear without rsvp_hop");
        };
        let Some((slot, mut session)) = self.take_for_message(&msg) else {
            return;
        };
        let torn: Vec<SocketAddr> = msg
            .descriptors
            .iter()
            .flat_map(|d| d.filters.iter().copied())
            .collect();
        let wildcard = msg.style == Some(Style::WildcardFilter) || torn.is_empty();
        let before = session.rsbs.len();
        session.rsbs.retain(|rsb| {
            let hit = rsb.nhop.addr == hop.addr
                && (wildcard || torn.iter().any(|s| rsb.filter.covers(*s)));
            !hit
        });
        if session.rsbs.len() == before {
            self.stats.ignored += 1;
        } else {
            self.reconcile(slot, &mut session, Loss::Teardown(hop.addr));
        }
        self.put(slot, session);
    }

    fn on_resv_err(&mut self, now: Ms, msg: Msg) {
        let Some(error) = msg.error else {
            return self.malformed(&msg, "resverr without error_spec");
        };
        self.stats.errors_received += 1;
        let Some((slot, mut session)) = self.take_for_message(&msg) else {
            return;
        };
        let receivers: Vec<SessionId> = session.receivers().map(|(id, _)| id).collect();
        let next = now.saturating_add(self.jitter());
        match &mut session.recv {
            Some(recv) if !receivers.is_empty() => {
                answer(&mut recv.answered, &mut recv.fast, &mut recv.next_at, next);
                let pair = (error.code, error.value);
                if recv.last_error != Some(pair) {
                    recv.last_error = Some(pair);
                    for id in receivers {
                        self.events.push_back((
                            id,
                            Event::ResvError {
                                code: error.code,
                                value: error.value,
                                node: error.node,
                            },
                        ));
                        if matches!(error.code, 1 | 2) {
                            self.events.push_back((
                                id,
                                Event::AdmissionDenied {
                                    code: error.code,
                                    value: error.value,
                                    reason: format!(
                                        "{} reported by {} (value {})",
                                        error_name(error.code),
                                        error.node,
                                        error.value
                                    ),
                                },
                            ));
                        }
                    }
                }
            }
            _ => self.stats.ignored += 1,
        }
        self.put(slot, session);
    }

    fn on_resv_conf(&mut self, now: Ms, msg: Msg) {
        let Some((slot, mut session)) = self.take_for_message(&msg) else {
            return;
        };
        let receivers: Vec<SessionId> = session.receivers().map(|(id, _)| id).collect();
        let request = session.merged_request();
        let next = now.saturating_add(self.jitter());
        match (&mut session.recv, request) {
            (Some(recv), Some(request)) if !receivers.is_empty() => {
                answer(&mut recv.answered, &mut recv.fast, &mut recv.next_at, next);
                if !recv.confirmed {
                    recv.confirmed = true;
                    recv.announced = true;
                    recv.last_error = None;
                    let flowspec = msg
                        .descriptors
                        .first()
                        .and_then(|d| d.flowspec)
                        .unwrap_or(request.flowspec);
                    for id in receivers {
                        self.events.push_back((id, Event::Confirmed { flowspec }));
                        self.events.push_back((id, Event::Established { flowspec }));
                    }
                }
            }
            _ => self.stats.ignored += 1,
        }
        self.put(slot, session);
    }

    // ----------------------------------------------------------------------------------
    // timers

    pub(super) fn on_timeout(&mut self, now: Instant) {
        let now = self.clock.ms(now);
        while let Some((at, slot)) = self.timers.pop_due(now) {
            let Some(mut session) = self.take(slot) else {
                continue;
            };
            if session.scheduled != at {
                // Stale entry: the session rescheduled since.
                self.put(slot, session);
                continue;
            }
            session.scheduled = NEVER;
            self.run_timers(slot, &mut session, now);
            self.put(slot, session);
            self.flush();
        }
    }

    fn run_timers(&mut self, slot: u32, session: &mut Session, now: Ms) {
        for index in 0..session.senders.len() {
            if session.senders[index].next_at <= now {
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
        if session.recv.as_ref().is_some_and(|r| r.next_at <= now) {
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

/// With no path state left the receiver's Resv stops; its reservation starts over (and is
/// confirmed and announced again) when a Path comes back.
fn path_state_lost(session: &mut Session) {
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

/// The first answer to a message stops its fast retransmission: the next send becomes a
/// refresh at `refresh_at`.
fn answer(answered: &mut bool, fast: &mut Fast, next_at: &mut Ms, refresh_at: Ms) {
    if !*answered && fast.left > 0 && *next_at != NEVER {
        *next_at = refresh_at;
    }
    *answered = true;
    fast.left = 0;
}

/// The flow a local sender's reservation is for.
fn flow_of(key: SessionKey, sender: SocketAddr) -> Flow {
    Flow {
        sender,
        receiver: key.destination,
        protocol: key.protocol,
    }
}

/// The unrefused reservation with the largest rate covering `sender` (first on ties); with
/// `equal`, preferably one asking exactly for that flowspec.
fn best_rsb(rsbs: &[Rsb], sender: SocketAddr, equal: Option<FlowSpec>) -> Option<usize> {
    let candidates = || {
        rsbs.iter()
            .enumerate()
            .filter(|(_, r)| r.refused.is_none() && r.filter.covers(sender))
    };
    if let Some(flowspec) = equal {
        if let Some((i, _)) = candidates().find(|(_, r)| r.flowspec == flowspec) {
            return Some(i);
        }
    }
    let mut best: Option<(usize, f32)> = None;
    for (i, rsb) in candidates() {
        let rate = rsb.flowspec.reserved_rate();
        if best.is_none_or(|(_, b)| rate > b) {
            best = Some((i, rate));
        }
    }
    best.map(|(i, _)| i)
}

/// Whether a timer entry is the live one of its session.
fn is_live(sessions: &[Option<Session>], at: Ms, slot: u32) -> bool {
    sessions
        .get(slot as usize)
        .and_then(Option::as_ref)
        .is_some_and(|s| s.scheduled == at)
}
