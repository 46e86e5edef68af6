//! Rules on the data sender's side: unsignaled admission, reconciling each local sender's
//! rule with the reservations that cover it, and the enforcer's outcomes.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use smallvec::smallvec;

use super::outbox::ErrorRoute;
use super::state::{Role, Rsb, RuleState, SenderRule, Session, UnsignaledRule};
use super::{CommandError, Engine, Event, RuleAction, RuleFailure, SessionId, SessionKey};
use crate::flow::{AdmissionRequest, Flow, Rule, RuleId};
use crate::wire::intserv::FlowSpec;

/// Why a rule goes away.
#[derive(Debug, Clone, Copy)]
pub(super) enum Loss {
    /// The next hop sent a ResvTear.
    Teardown(IpAddr),
    /// The reservation state timed out.
    Expired,
    /// The next hop no longer asks for it.
    Withdrawn,
}

impl Engine {
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
            owner: None,
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
    pub(super) fn remove_rule(&mut self, owner: SessionId, id: RuleId) {
        self.rule_total -= 1;
        self.admission.release(id);
        self.actions
            .push_back(RuleAction::Remove { session: owner, id });
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
                                error: failure.error,
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
                tracing::debug!(rule = %id, error = %failure.error, reason = %failure.reason, "rule failed");
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
                            owner: None,
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
                    rsb.refused = Some(failure.error);
                    let (nhop, style, descriptor) =
                        (rsb.nhop.addr, rsb.style, Self::rsb_descriptor(rsb));
                    self.queue_resv_err(
                        ErrorRoute {
                            session: session.key,
                            own,
                            to: nhop,
                        },
                        Some(style),
                        smallvec![descriptor],
                        failure.error,
                    );
                }
                self.emit(
                    owner,
                    Event::ResvError {
                        error: failure.error,
                        node: own,
                    },
                );
            }
        }
        // Changes that waited for this outcome.
        self.reconcile(slot, &mut session, Loss::Withdrawn);
        self.put(slot, session);
    }

    /// Brings each local sender's rule in line with the reservations that cover it: install,
    /// modify or remove, asking admission control first.
    pub(super) fn reconcile(&mut self, slot: u32, session: &mut Session, loss: Loss) {
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
                            owner: None,
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
                                let error = denied.error;
                                rsb.refused = Some(error);
                                let (nhop, style, descriptor) =
                                    (rsb.nhop.addr, rsb.style, Self::rsb_descriptor(rsb));
                                self.queue_resv_err(
                                    ErrorRoute {
                                        session: session.key,
                                        own: sender.ip(),
                                        to: nhop,
                                    },
                                    Some(style),
                                    smallvec![descriptor],
                                    error,
                                );
                                self.emit(
                                    owner,
                                    Event::AdmissionDenied {
                                        error,
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
}

/// The flow a local sender's reservation is for.
pub(super) fn flow_of(key: SessionKey, sender: SocketAddr) -> Flow {
    Flow {
        sender,
        receiver: key.destination,
        protocol: key.protocol,
    }
}

/// The unrefused reservation with the largest rate covering `sender` (first on ties); with
/// `equal`, preferably one asking exactly for that flowspec.
pub(super) fn best_rsb(rsbs: &[Rsb], sender: SocketAddr, equal: Option<FlowSpec>) -> Option<usize> {
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
