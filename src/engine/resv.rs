//! Reservation requests (RFC 2205 §3.1.4, RFC 2209): the receiver-side command (`reserve`),
//! sending Resvs and ResvConfs, and the Resv, ResvTear, ResvErr and ResvConf handlers.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::msg::{Descriptor, ErrorInfo, Hop, Kind, Msg};
use super::outbox::{error_name, CONFLICTING_STYLE, NO_PATH, NO_SENDER, RSVP_SYSTEM_ERROR};
use super::refresh::answer;
use super::rules::Loss;
use super::sessions::MAX_STATES_PER_SESSION;
use super::state::{Filter, RecvState, Request, Role, Rsb, RuleState, Session};
use super::timer::{Ms, NEVER};
use super::{CommandError, Engine, Event, SessionId, Style};
use crate::wire::intserv::FlowSpec;

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

    /// A ResvConf for reservation `b` if it asked for one.
    pub(super) fn queue_confirm(&mut self, session: &Session, b: usize, sender: SocketAddr) {
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

    pub(super) fn on_resv(&mut self, now: Ms, destination: IpAddr, msg: Msg) {
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

    pub(super) fn on_resv_tear(&mut self, msg: Msg) {
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

    pub(super) fn on_resv_err(&mut self, now: Ms, msg: Msg) {
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

    pub(super) fn on_resv_conf(&mut self, now: Ms, msg: Msg) {
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
}
