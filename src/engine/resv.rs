//! Reservation requests (RFC 2205 §3.1.4, RFC 2209): the receiver-side command (`reserve`),
//! sending Resvs and ResvConfs, and the Resv, ResvTear, ResvErr and ResvConf handlers.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use smallvec::{smallvec, SmallVec};

use super::msg::{Descriptor, Hop, Msg};
use super::neighbors::NewState;
use super::outbox::ErrorRoute;
use super::receive::from_neighbor;
use super::refresh::answer;
use super::rules::Loss;
use super::sessions::MAX_STATES_PER_SESSION;
use super::state::{Filter, RecvState, Request, Role, Rsb, RuleState, Session};
use super::timer::{Ms, NEVER};
use super::{CommandError, Engine, Event, SessionId, Style};
use crate::wire::intserv::FlowSpec;
use crate::wire::{ErrorCode, ErrorSpec, MsgType, RsvpError};

/// A Resv being applied to a session with local senders: what each step needs of it.
struct ResvIn<'a> {
    msg: &'a Msg,
    /// Its next hop (RSVP_HOP): where its state is kept and errors go.
    hop: Hop,
    style: Style,
    /// This host's address in the session (its first local sender's): the error node.
    own: IpAddr,
    now: Ms,
    /// When reservation state it creates or refreshes expires.
    expires_at: Ms,
}

impl ResvIn<'_> {
    /// Where a ResvErr about this Resv goes.
    fn route(&self) -> ErrorRoute {
        ErrorRoute {
            session: self.msg.session,
            own: self.own,
            to: self.hop.addr,
        }
    }
}

/// One reservation a Resv asks for: which senders and how much.
struct ResvEntry {
    filter: Filter,
    flowspec: FlowSpec,
}

/// The flow descriptor that names a reservation in an error: the one it came from (built only
/// then, so that a refresh allocates no copy of it).
fn entry_descriptor(filter: &Filter, flowspec: FlowSpec) -> Descriptor {
    Descriptor {
        flowspec: Some(flowspec),
        filters: filter.senders().into(),
    }
}

/// The reservations of one Resv (one for SE and WF, typically one for FF): inline, as Resvs
/// are handled once per refresh of every session.
type ResvEntries = SmallVec<[ResvEntry; 2]>;

impl Engine {
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
        session.owners[index].role = Role::Receiver(Box::new(Request {
            style,
            flowspec,
            confirm,
        }));
        self.request_changed(&mut session, now);
        self.put(slot, session);
        Ok(())
    }

    /// The merged local request changed: restart confirmation and fast retransmission and
    /// send the Resv now if there is path state.
    pub(super) fn request_changed(&mut self, session: &mut Session, now: Ms) {
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
        self.reduction_trigger_recv(session);
        self.send_resvs(session, now);
    }

    /// Sends the receiver's Resv to every previous hop and schedules the next one.
    pub(super) fn send_resvs(&mut self, session: &mut Session, now: Ms) {
        let request = session.merged_request();
        let has_paths = !session.psbs.is_empty();
        let Some(recv) = session.recv.as_deref_mut() else {
            return;
        };
        let Some(request) = request.filter(|_| has_paths) else {
            recv.next_at = NEVER;
            return;
        };
        // Inline: every refresh of every receiver passes here, and hosts have one previous hop.
        let mut phops: SmallVec<[Hop; 2]> = SmallVec::new();
        for psb in &session.psbs {
            if !phops.iter().any(|h| h.addr == psb.phop.addr) {
                phops.push(psb.phop);
            }
        }
        // RFC 2961 (one previous hop): a refresh of acknowledged state goes in an Srefresh.
        let single = (phops.len() == 1).then(|| phops[0].addr);
        let summarized = match self.reduction_resv(session, single, now) {
            Some(id) => {
                for phop in phops {
                    let mut msg = self.resv_msg(session, &request, phop, false);
                    msg.message_id = id;
                    self.queue_for(session, msg, phop.addr, session.key.destination.ip());
                }
                false
            }
            None => true,
        };
        let Some(recv) = session.recv.as_deref_mut() else {
            return;
        };
        let mut fast = recv.fast;
        let answered = recv.answered;
        // Summarized: the neighbor's Srefresh ticks refresh it (see `send_path`).
        let next_at = if summarized {
            self.summarized(&mut fast, now)
        } else {
            self.after_send(&mut fast, answered, now)
        };
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

    /// A ResvConf for reservation `b` if it asked for one.
    pub(super) fn queue_confirm(&mut self, session: &Session, b: usize, sender: SocketAddr) {
        let Some(rsb) = session.rsbs.get(b) else {
            return;
        };
        let Some(receiver) = rsb.confirm else {
            return;
        };
        let own = sender.ip();
        let mut msg = Msg::new(MsgType::ResvConf, session.key);
        msg.error = Some(ErrorSpec::new(own, ErrorCode::CONFIRMATION, 0));
        msg.confirm = Some(receiver);
        msg.style = Some(rsb.style);
        msg.descriptors = smallvec![Self::rsb_descriptor(rsb)];
        self.queue_for(session, msg, receiver, own);
    }

    // By reference: only an error answer needs its descriptors (cloned then).
    pub(super) fn on_resv(&mut self, now: Ms, source: IpAddr, destination: IpAddr, msg: &Msg) {
        let (Some(hop), Some(style)) = (msg.hop, msg.style) else {
            return self.malformed(msg, "resv without rsvp_hop or style");
        };
        let refresh = match msg.refresh_ms {
            Some(r) if r > 0 => r,
            _ => return self.malformed(msg, "resv without a usable time_values"),
        };
        if msg.descriptors.is_empty() {
            return self.malformed(msg, "resv without flow descriptors");
        }
        // Resvs travel hop by hop (RFC 2205 §3.1.4): the datagram comes from the next hop its
        // RSVP_HOP names, and the reservation state is kept per next hop, so a Resv can only
        // refresh or change what its own source asked for.
        if !from_neighbor(source, hop.addr) {
            return self.wrong_neighbor(msg, source, &hop.addr.to_string());
        }
        let refresh = self.peer_refresh(refresh);
        // A Resv that only refreshes reservations on record (each of its filters known from
        // this next hop) adds no state and asks no quota: its session stays accounted while
        // out (`take_unchanged`) and only a change of its bytes is booked, without the walks
        // of `take` + `put` (and the read of its owners, which a Resv cannot change).
        // Read once, for this check and to apply it (`resv_into`).
        let entries = resv_entries(msg, style);
        let known = |s: &Session| {
            entries.as_ref().is_some_and(|entries| {
                entries.iter().all(|e| {
                    s.rsbs
                        .iter()
                        .any(|r| r.nhop.addr == hop.addr && r.filter == e.filter)
                })
            })
        };
        let found = self.lookup(&msg.session).and_then(|slot| {
            let only_known = known(self.sessions.get(slot as usize)?.as_ref()?);
            let session = if only_known {
                self.take_unchanged(slot)?
            } else {
                self.take(slot)?
            };
            Some((slot, session, only_known))
        });
        let put = |engine: &mut Self, slot: u32, session: Session, known: bool| {
            if known {
                engine.put_unchanged(slot, session);
            } else {
                engine.put(slot, session);
            }
        };
        match found {
            Some((slot, mut session, known)) if !session.senders.is_empty() => {
                let before = known.then(|| session.state_heap_bytes());
                #[cfg(debug_assertions)]
                let lists = (session.owners.len(), session.psbs.len(), session.rsbs.len());
                let resv = ResvIn {
                    msg,
                    hop,
                    style,
                    own: session.senders[0].sender.ip(),
                    now,
                    expires_at: now.saturating_add(self.lifetime(refresh)),
                };
                self.resv_into(slot, &mut session, &resv, entries);
                if let Some(before) = before {
                    #[cfg(debug_assertions)]
                    debug_assert_eq!(
                        lists,
                        (session.owners.len(), session.psbs.len(), session.rsbs.len()),
                        "a refreshing resv changed the lists"
                    );
                    // A modification (its `previous` box) may come or go.
                    self.account_state_bytes(before, session.state_heap_bytes());
                }
                put(self, slot, session, known);
            }
            other => {
                // RFC 2209 (Resv without path state): ResvErr "no path information".
                if let Some((slot, session, known)) = other {
                    put(self, slot, session, known);
                }
                self.stats.rejected += 1;
                self.queue_resv_err(
                    ErrorRoute {
                        session: msg.session,
                        own: destination,
                        to: hop.addr,
                    },
                    msg.style,
                    msg.descriptors.clone(),
                    RsvpError::new(ErrorCode::NO_PATH_INFORMATION, 0),
                );
            }
        }
    }

    /// A Resv for a session with local senders; `entries` are its reservations
    /// ([`resv_entries`]).
    fn resv_into(
        &mut self,
        slot: u32,
        session: &mut Session,
        resv: &ResvIn<'_>,
        entries: Option<ResvEntries>,
    ) {
        if session
            .rsbs
            .iter()
            .any(|r| r.nhop.addr != resv.hop.addr && r.style != resv.style)
        {
            self.stats.rejected += 1;
            self.queue_resv_err(
                resv.route(),
                resv.msg.style,
                resv.msg.descriptors.clone(),
                RsvpError::new(ErrorCode::CONFLICTING_RESERVATION_STYLE, 0),
            );
            return;
        }
        let Some(entries) = entries else {
            return self.malformed(resv.msg, "resv flow descriptor without flowspec");
        };
        let mut confirm_for: Vec<usize> = Vec::new();
        for entry in entries {
            confirm_for.extend(self.resv_entry(session, resv, entry));
        }
        self.reconcile(slot, session, Loss::Withdrawn);
        self.confirm_in_force(session, &confirm_for);
    }

    /// Applies one reservation of a Resv: refused (no such sender, table full), stored, or
    /// refreshed. Returns its index when it is an unchanged refresh that asks for a
    /// confirmation.
    fn resv_entry(
        &mut self,
        session: &mut Session,
        resv: &ResvIn<'_>,
        entry: ResvEntry,
    ) -> Option<usize> {
        let ResvEntry { filter, flowspec } = entry;
        let stored = if session.senders.iter().any(|s| filter.covers(s.sender)) {
            // New state from the network passes the bounds first (see `neighbors.rs`).
            let known = session
                .rsbs
                .iter()
                .any(|r| r.nhop.addr == resv.hop.addr && r.filter == filter);
            let from = if known {
                Ok(super::neighbors::NO_NEIGHBOR)
            } else {
                let filters = match &filter {
                    Filter::Many(list) => list.len(),
                    _ => 0,
                };
                self.admit_state(NewState::Resv { filters }, Some(session))
            };
            from.ok()
                .and_then(|from| store_rsb(session, resv, &filter, flowspec, from))
                .ok_or(ErrorCode::RSVP_SYSTEM_ERROR)
        } else {
            Err(ErrorCode::NO_SENDER_INFORMATION)
        };
        let (index, changed) = match stored {
            Ok(stored) => stored,
            Err(code) => {
                self.stats.rejected += 1;
                let error = RsvpError::new(code, 0);
                self.queue_resv_err(
                    resv.route(),
                    resv.msg.style,
                    smallvec![entry_descriptor(&filter, flowspec)],
                    error,
                );
                return None;
            }
        };
        let owners = self.paths_answered(session, &filter, resv.now);
        if changed {
            let style = resv.style;
            for owner in owners {
                self.emit(owner, Event::ResvReceived { flowspec, style });
            }
        } else if let Some(error) = session.rsbs[index].refused {
            // A refresh of a refused request: the same answer again.
            let descriptor = Self::rsb_descriptor(&session.rsbs[index]);
            self.queue_resv_err(resv.route(), Some(resv.style), smallvec![descriptor], error);
        } else if resv.msg.confirm.is_some() {
            return Some(index);
        }
        None
    }

    /// A Resv covering `filter` answers the Paths of the local senders it covers: no more
    /// fast retransmission, no more waiting for a receiver. Returns their owners.
    fn paths_answered(
        &mut self,
        session: &mut Session,
        filter: &Filter,
        now: Ms,
    ) -> SmallVec<[SessionId; 2]> {
        let mut owners: SmallVec<[SessionId; 2]> = SmallVec::new();
        for index in 0..session.senders.len() {
            let local = &session.senders[index];
            if !filter.covers(local.sender) {
                continue;
            }
            if !owners.contains(&local.owner) {
                owners.push(local.owner);
            }
            // A Path waiting for its RFC 2961 acknowledgment is answered by it alone: this Resv
            // may answer an earlier Path.
            let destination = session.key.destination.ip();
            if !local.answered && !self.awaiting_ack(local.tx_id, local.tx_acked, destination) {
                let next = self.steady_refresh(now);
                let local = &mut session.senders[index];
                answer(
                    &mut local.answered,
                    &mut local.fast,
                    &mut local.next_at,
                    next,
                );
            }
            // A receiver was heard: the wait for one is over (an RFC 2961 acknowledgment may
            // have answered the Path already).
            session.senders[index].wait_at = NEVER;
        }
        owners
    }

    /// ResvConfs for refreshes that still ask for confirmation of a reservation in force.
    fn confirm_in_force(&mut self, session: &Session, confirm_for: &[usize]) {
        for &index in confirm_for {
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

    pub(super) fn on_resv_tear(&mut self, source: IpAddr, msg: Msg) {
        let Some(hop) = msg.hop else {
            return self.malformed(&msg, "resvtear without rsvp_hop");
        };
        // Like a Resv: from the next hop it names, and it removes only that hop's state.
        if !from_neighbor(source, hop.addr) {
            return self.wrong_neighbor(&msg, source, &hop.addr.to_string());
        }
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

    pub(super) fn on_resv_err(&mut self, now: Ms, source: IpAddr, msg: Msg) {
        let Some(error) = msg.error else {
            return self.malformed(&msg, "resverr without error_spec");
        };
        self.stats.errors_received += 1;
        let Some((slot, mut session)) = self.take_for_message(&msg) else {
            return;
        };
        // A ResvErr travels downstream hop by hop (RFC 2205 §3.1.5): it comes from a node our
        // Resvs went to, a previous hop (or sender) of the path state.
        if !from_upstream(&session, source) {
            self.put(slot, session);
            return self.wrong_neighbor(&msg, source, "a previous hop or sender of the session");
        }
        let receivers: Vec<SessionId> = session.receivers().map(|(id, _)| id).collect();
        let next = self.steady_refresh(now);
        // A Resv waiting for its RFC 2961 acknowledgment is answered by it alone.
        let awaiting = self.resv_awaiting_ack(&session);
        match &mut session.recv {
            Some(recv) if !receivers.is_empty() => {
                if !awaiting {
                    answer(&mut recv.answered, &mut recv.fast, &mut recv.next_at, next);
                }
                let reported = error.error();
                if recv.last_error != Some(reported) {
                    recv.last_error = Some(reported);
                    for id in receivers {
                        self.events.push_back((
                            id,
                            Event::ResvError {
                                error: reported,
                                node: error.node,
                            },
                        ));
                        if matches!(
                            error.code,
                            ErrorCode::ADMISSION_CONTROL_FAILURE
                                | ErrorCode::POLICY_CONTROL_FAILURE
                        ) {
                            self.events.push_back((
                                id,
                                Event::AdmissionDenied {
                                    error: reported,
                                    reason: format!("refused by {}", error.node),
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

    pub(super) fn on_resv_conf(&mut self, now: Ms, source: IpAddr, msg: Msg) {
        let Some((slot, mut session)) = self.take_for_message(&msg) else {
            return;
        };
        // A ResvConf goes straight to the receiver from the node that confirms, for a host
        // the sender (or a previous hop where the reservation merged, RFC 2205 §3.1.4).
        if !from_upstream(&session, source) {
            self.put(slot, session);
            return self.wrong_neighbor(&msg, source, "a previous hop or sender of the session");
        }
        let receivers: Vec<SessionId> = session.receivers().map(|(id, _)| id).collect();
        let request = session.merged_request();
        let awaiting = self.resv_awaiting_ack(&session);
        match (&mut session.recv, request) {
            (Some(recv), Some(request)) if !receivers.is_empty() => {
                if !request.confirm {
                    // Nobody asked for it: not to be believed.
                    self.wrong_neighbor(&msg, source, "a requested confirmation");
                } else if recv.confirmed {
                    // Asked for and had already: a duplicate, or an answer to a Resv
                    // retransmitted before the first confirmation came.
                    self.stats.ignored += 1;
                } else {
                    let next = self.steady_refresh(now);
                    if !awaiting {
                        answer(&mut recv.answered, &mut recv.fast, &mut recv.next_at, next);
                    }
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
}

/// Whether a datagram from `source` comes from upstream of the session: a previous hop or a
/// sender of its path state, where its Resvs went (see [`from_neighbor`]).
fn from_upstream(session: &Session, source: IpAddr) -> bool {
    source.is_unspecified()
        || session
            .psbs
            .iter()
            .any(|p| from_neighbor(source, p.phop.addr) || from_neighbor(source, p.sender.ip()))
}

/// A Resv's flow descriptors as reservations; an FF flowspec may be carried over from the
/// previous descriptor (RFC 2205 §3.1.4). `None` when a descriptor has no flowspec to use.
fn resv_entries(msg: &Msg, style: Style) -> Option<ResvEntries> {
    let mut entries = ResvEntries::new();
    let mut carried: Option<FlowSpec> = None;
    for descriptor in &msg.descriptors {
        let flowspec = descriptor.flowspec.or(carried)?;
        carried = Some(flowspec);
        match style {
            Style::FixedFilter => {
                for filter in &descriptor.filters {
                    entries.push(ResvEntry {
                        filter: Filter::One(*filter),
                        flowspec,
                    });
                }
            }
            Style::SharedExplicit => entries.push(ResvEntry {
                filter: Filter::Many(descriptor.filters.clone().into_boxed_slice()),
                flowspec,
            }),
            // A WF descriptor names no sender (`entry_descriptor` gives it back as it came).
            Style::WildcardFilter => entries.push(ResvEntry {
                filter: Filter::All,
                flowspec,
            }),
        }
        if style != Style::FixedFilter {
            break;
        }
    }
    Some(entries)
}

/// Stores (or refreshes) the reservation state of `resv` for `filter`: its index and whether
/// it is new or changed; `None` when the session holds as many as it may.
fn store_rsb(
    session: &mut Session,
    resv: &ResvIn<'_>,
    filter: &Filter,
    flowspec: FlowSpec,
    from: u32,
) -> Option<(usize, bool)> {
    let existing = session
        .rsbs
        .iter()
        .position(|r| r.nhop.addr == resv.hop.addr && r.filter == *filter);
    match existing {
        Some(i) => {
            let rsb = &mut session.rsbs[i];
            let changed = rsb.flowspec != flowspec || rsb.style != resv.style;
            if changed {
                rsb.flowspec = flowspec;
                rsb.style = resv.style;
                rsb.refused = None;
            }
            rsb.nhop = resv.hop;
            rsb.confirm = resv.msg.confirm;
            rsb.expires_at = resv.expires_at;
            Some((i, changed))
        }
        None if session.rsbs.len() >= MAX_STATES_PER_SESSION => None,
        None => {
            session.rsbs.push(Rsb {
                nhop: resv.hop,
                style: resv.style,
                filter: filter.clone(),
                flowspec,
                confirm: resv.msg.confirm,
                expires_at: resv.expires_at,
                refused: None,
                from,
                rx_id: 0,
                rx_deci: 0,
            });
            Some((session.rsbs.len() - 1, true))
        }
    }
}
