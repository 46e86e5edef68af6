//! The agent task: one loop over commands, datagrams and the engine's single timer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, info_span, trace, warn, Instrument, Span};

use super::transport::{Link, MAX_DATAGRAM};
use super::{AgentStats, Command, OpenRequest, Opened, Setup, SharedPolicy};
use crate::enforce::Enforcer;
use crate::engine::{
    CommandError, Engine, EngineConfig, Incoming, RuleAction, RuleFailure, SessionId, Style,
};
use crate::flow::{Admission, RuleId};
use crate::net::event::SessionShared;
use crate::net::{QosError, QosEvent};
use crate::policy::{Policy, ERROR_POLICY};

/// How far away "no timer" is: the sleep is parked there.
const IDLE: Duration = Duration::from_secs(24 * 60 * 60);

pub(crate) struct DriverParts {
    pub(crate) id: u64,
    pub(crate) transport: &'static str,
    pub(crate) engine: EngineConfig,
    pub(crate) admission: Box<dyn Admission>,
    pub(crate) policy: SharedPolicy,
    pub(crate) custom_admission: bool,
    pub(crate) enforcer: Box<dyn Enforcer>,
    pub(crate) link: Link,
    pub(crate) local_addrs: Vec<IpAddr>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    /// See [`Driver::relocatable`].
    pub(crate) relocatable: bool,
}

struct SessionEntry {
    shared: Arc<SessionShared>,
    /// The data sender's socket (a duplicate), for enforcers acting on sockets.
    socket: Option<OwnedFd>,
    span: Span,
    /// Released by its owner (or the agent): removed at the end of the current drain, after
    /// the engine's teardown actions had the socket.
    released: bool,
    release_reply: Option<oneshot::Sender<Result<(), QosError>>>,
    removal_error: Option<String>,
}

struct UnsignaledOutcome {
    session: SessionId,
    reply: oneshot::Sender<Result<Opened, QosError>>,
    outcome: Result<(), RuleFailure>,
}

pub(crate) struct Driver {
    engine: Engine,
    link: Link,
    enforcer: Box<dyn Enforcer>,
    commands: mpsc::UnboundedReceiver<Command>,
    sessions: HashMap<SessionId, SessionEntry>,
    /// Unsignaled admissions whose owner waits for the rule load.
    pending_unsignaled: HashMap<RuleId, oneshot::Sender<Result<Opened, QosError>>>,
    /// Unsignaled owners whose rule load has an outcome: answered at the end of the drain,
    /// once the session's state holds every event the outcome produced, so that
    /// `reservation()` says `Established` the moment `accept` returns.
    unsignaled_outcomes: Vec<UnsignaledOutcome>,
    /// Loaded rules and the session each belongs to.
    rules_in_force: HashMap<RuleId, SessionId>,
    policy: SharedPolicy,
    /// The policy only serves lookups: a reload tears nothing down.
    custom_admission: bool,
    send_errors: u64,
    transport_malformed: u64,
    span: Span,
    /// The default agent, hosted by the first multi-thread runtime that asked for it: if
    /// that runtime shuts down while handles remain (connections of other runtimes), the
    /// driver moves to a thread of its own instead of ending their sessions.
    relocatable: bool,
}

impl Drop for Driver {
    /// Dropped without its teardown (its runtime shut down, or a panic): the sessions'
    /// streams end instead of waiting forever for an agent that is gone.
    fn drop(&mut self) {
        // Handles see the agent stopped before its streams end.
        self.commands.close();
        for entry in self.sessions.values() {
            entry.shared.end("the qos agent stopped");
        }
    }
}

/// Owns a driver while it serves.
struct Serving(Option<Driver>);

impl Drop for Serving {
    /// Reached with a driver only when the serving future was dropped: its runtime is
    /// shutting down. A relocatable driver that still has handles moves its sockets, engine
    /// and sessions to a runtime on a thread of its own and goes on; peers see nothing. (An
    /// action or datagram being handled at that instant may be lost: soft state recovers.)
    fn drop(&mut self) {
        let Some(mut driver) = self.0.take() else {
            return;
        };
        if !driver.relocatable || driver.commands.is_closed() {
            return;
        }
        let detached = match driver.link.detach() {
            Ok(detached) => detached,
            Err(e) => {
                warn!(error = %e, "qtoq agent: its runtime stopped and it could not move");
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("qtoq-agent".into())
            .spawn(move || {
                let runtime = match super::agent_runtime() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        warn!(error = %e, "qtoq agent: no runtime to move to");
                        return;
                    }
                };
                runtime.block_on(async move {
                    match detached.attach() {
                        Ok(link) => {
                            // The old sockets deregister from the stopped runtime here; the
                            // duplicates carry on.
                            driver.link = link;
                            driver.span.in_scope(|| {
                                info!("qtoq agent: its runtime stopped; moved to its own thread")
                            });
                            driver.run().await;
                        }
                        Err(e) => warn!(error = %e, "qtoq agent: could not move its sockets"),
                    }
                });
            });
        if let Err(e) = spawned {
            warn!(error = %e, "qtoq agent: no thread to move to");
        }
    }
}

impl Driver {
    pub(crate) fn new(parts: DriverParts) -> Driver {
        let span = info_span!("qtoq_agent", id = parts.id, transport = parts.transport);
        span.in_scope(|| {
            info!(link = ?parts.link, locals = ?parts.local_addrs, "qtoq agent started");
        });
        Driver {
            engine: Engine::new(parts.engine, parts.admission),
            link: parts.link,
            enforcer: parts.enforcer,
            commands: parts.commands,
            sessions: HashMap::new(),
            pending_unsignaled: HashMap::new(),
            unsignaled_outcomes: Vec::new(),
            rules_in_force: HashMap::new(),
            policy: parts.policy,
            custom_admission: parts.custom_admission,
            send_errors: 0,
            transport_malformed: 0,
            span,
            relocatable: parts.relocatable,
        }
    }

    /// Serves until stopped. Dropped before that (its runtime shut down), a relocatable
    /// driver carries on on a thread of its own; any other ends its sessions' streams.
    pub(crate) async fn run(self) {
        let mut serving = Serving(Some(self));
        if let Some(driver) = serving.0.as_mut() {
            driver.serve().await;
        }
        // Served to the end: nothing to move.
        serving.0 = None;
    }

    async fn serve(&mut self) {
        let span = self.span.clone();
        async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let timer = tokio::time::sleep(IDLE);
            tokio::pin!(timer);
            let mut stopped = None;
            let mut recheck = tokio::time::interval_at(
                tokio::time::Instant::now() + super::POLICY_RECHECK_PERIOD,
                super::POLICY_RECHECK_PERIOD,
            );
            recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                self.drain().await;
                let deadline = self
                    .engine
                    .poll_timeout()
                    .unwrap_or_else(|| Instant::now() + IDLE);
                if timer.deadline().into_std() != deadline {
                    timer.as_mut().reset(deadline.into());
                }
                tokio::select! {
                    command = self.commands.recv() => match command {
                        Some(Command::Shutdown { reply }) => {
                            stopped = Some(reply);
                            break;
                        }
                        Some(command) => self.command(command).await,
                        None => break,
                    },
                    received = self.link.recv(&mut buf, &mut self.transport_malformed) => {
                        match received {
                            Ok(r) => {
                                let end = r.offset + r.len;
                                trace!(from = %r.source, len = r.len, "datagram received");
                                self.engine.handle_datagram(Instant::now(), Incoming {
                                    source: r.source,
                                    destination: r.destination,
                                    ttl: r.ttl,
                                    payload: &buf[r.offset..end],
                                });
                            }
                            Err(e) => {
                                // Receive errors are transient (ICMP feedback, memory pressure);
                                // pause briefly so a persistent one cannot spin the loop.
                                debug!(error = %e, "transport receive error");
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }
                    }
                    () = &mut timer => self.engine.handle_timeout(Instant::now()),
                    _ = recheck.tick() => {
                        self.revalidate_policy().await;
                    }
                }
            }
            // Nothing queued after this point is served: its senders see the agent stopped.
            self.commands.close();
            self.shutdown().await;
            if let Some(reply) = stopped {
                let _ = reply.send(());
            }
        }
        .instrument(span)
        .await
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Open(request) => self.open(request).await,
            Command::Release { session, reply } => {
                match self.sessions.get_mut(&session) {
                    Some(entry) => {
                        entry.release_reply = reply;
                        self.release(session);
                    }
                    None => {
                        if let Some(reply) = reply {
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
                self.drain().await;
            }
            Command::Stats { reply } => {
                let _ = reply.send(AgentStats {
                    engine_owners: self.engine.owner_count(),
                    engine_sessions: self.engine.session_count(),
                    owned_sessions: self.sessions.len(),
                    rules_in_force: self.rules_in_force.len(),
                    engine: self.engine.stats().clone(),
                    send_errors: self.send_errors,
                    transport_malformed: self.transport_malformed,
                    policy_admitted: if self.custom_admission {
                        0
                    } else {
                        self.policy.lock().admitted_count()
                    },
                    interfaces: if self.custom_admission {
                        Vec::new()
                    } else {
                        self.policy.lock().interface_budgets()
                    },
                });
            }
            Command::ReloadPolicy { policy, reply } => {
                let torn_down = self.reload_policy(*policy).await;
                let _ = reply.send(torn_down);
            }
            Command::RevalidatePolicy { reply } => {
                let torn_down = self.revalidate_policy().await;
                let _ = reply.send(torn_down);
            }
            // Handled by the loop, which stops.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }

    /// Replaces the policy; reservations that no longer fit lose their rule with a policy
    /// failure (ResvErr code 2 to the receiver, `AdmissionDenied` to the owner).
    async fn reload_policy(&mut self, new: Policy) -> usize {
        let origin = new.origin().unwrap_or("(inline)").to_owned();
        let dropped = self.policy.lock().reload(new);
        info!(%origin, torn_down = dropped.len(), "policy reloaded");
        let reason = format!("the reloaded policy {origin} no longer admits this reservation");
        self.revoke(dropped, &reason).await
    }

    /// Re-checks the admitted reservations at the policy's current time (schedules).
    async fn revalidate_policy(&mut self) -> usize {
        let dropped = {
            let mut policy = self.policy.lock();
            let now = policy.now();
            policy.revalidate_at(now)
        };
        if !dropped.is_empty() {
            info!(torn_down = dropped.len(), "policy schedule closed");
        }
        self.revoke(
            dropped,
            "the policy's schedule no longer admits this reservation",
        )
        .await
    }

    /// Tears down the reservations of rules the policy released.
    async fn revoke(&mut self, dropped: Vec<RuleId>, reason: &str) -> usize {
        if self.custom_admission {
            // The policy admitted nothing here: its verdicts concern no reservation.
            return 0;
        }
        let now = Instant::now();
        for id in &dropped {
            if let Some(entry) = self
                .rules_in_force
                .get(id)
                .and_then(|session| self.sessions.get(session))
            {
                entry
                    .span
                    .in_scope(|| info!(rule = %id, reason, "reservation revoked by the policy"));
                entry.shared.push(QosEvent::AdmissionDenied {
                    code: ERROR_POLICY,
                    value: 0,
                    reason: reason.to_owned(),
                });
            }
            // The engine unloads the rule, tells the receiver (ResvErr) and the owner.
            self.engine.rule_outcome(
                now,
                *id,
                Err(RuleFailure {
                    code: ERROR_POLICY,
                    value: 0,
                    reason: reason.to_owned(),
                }),
            );
        }
        self.drain().await;
        dropped.len()
    }

    async fn open(&mut self, request: OpenRequest) {
        let OpenRequest {
            setup,
            peer,
            notify,
            socket,
            reply,
        } = request;
        let now = Instant::now();
        let id = self.engine.open_session(now, setup.key());
        let span = info_span!(parent: &self.span, "qtoq_session", session = id.0, %peer, role = setup.role());
        span.in_scope(|| debug!(key = ?setup.key(), "session opened"));
        let shared = SessionShared::new(notify);
        self.sessions.insert(
            id,
            SessionEntry {
                shared: shared.clone(),
                socket,
                span,
                released: false,
                release_reply: None,
                removal_error: None,
            },
        );
        let result = match setup {
            Setup::Sender { sender, tspec, .. } => self
                .engine
                .add_sender(now, id, sender, tspec)
                .map(|()| None),
            Setup::Receiver {
                flowspec, confirm, ..
            } => self
                .engine
                .reserve(now, id, Style::FixedFilter, flowspec, confirm)
                .map(|()| None),
            Setup::Unsignaled { flow, flowspec, .. } => self
                .engine
                .admit_unsignaled(now, id, flow, flowspec)
                .map(Some),
        };
        match result {
            Err(e) => {
                self.in_session(id, |_| warn!(error = %e, "session refused"));
                let error = match e {
                    CommandError::Denied(denied) => {
                        shared.push(QosEvent::AdmissionDenied {
                            code: denied.code,
                            value: denied.value,
                            reason: denied.reason.clone(),
                        });
                        QosError::AdmissionDenied(denied)
                    }
                    other => QosError::Command(other),
                };
                self.release(id);
                self.drain().await;
                let _ = reply.send(Err(error));
            }
            Ok(None) => {
                if reply.send(Ok(Opened { id, shared })).is_err() {
                    // The caller gave up (cancelled accept/connect): nobody owns the session.
                    self.release(id);
                }
                self.drain().await;
            }
            Ok(Some(rule)) => {
                // The owner waits until the rule is loaded (or refused): IBM i's step "admission
                // control is performed, the rule is sent to the TCP/IP stack".
                self.pending_unsignaled.insert(rule, reply);
                self.drain().await;
                if let Some(reply) = self.pending_unsignaled.remove(&rule) {
                    // No install came for the admitted rule (nothing to load): it is admitted.
                    self.unsignaled_outcomes.push(UnsignaledOutcome {
                        session: id,
                        reply,
                        outcome: Ok(()),
                    });
                    self.drain().await;
                }
            }
        }
    }

    /// Answers a waiting unsignaled owner; a failed load releases the session.
    fn answer_unsignaled(
        &mut self,
        id: SessionId,
        reply: oneshot::Sender<Result<Opened, QosError>>,
        outcome: Result<(), RuleFailure>,
    ) {
        let Some(shared) = self.sessions.get(&id).map(|e| e.shared.clone()) else {
            let _ = reply.send(Err(QosError::AgentStopped));
            return;
        };
        match outcome {
            Ok(()) => {
                if reply.send(Ok(Opened { id, shared })).is_err() {
                    self.release(id);
                }
            }
            Err(failure) => {
                self.release(id);
                let _ = reply.send(Err(QosError::RuleFailed {
                    code: failure.code,
                    value: failure.value,
                    reason: failure.reason,
                }));
            }
        }
    }

    fn release(&mut self, id: SessionId) {
        if let Some(entry) = self.sessions.get_mut(&id) {
            if entry.released {
                return;
            }
            entry.released = true;
            entry.span.in_scope(|| debug!("session released"));
        }
        self.engine.release(Instant::now(), id);
    }

    fn in_session(&self, id: SessionId, f: impl FnOnce(&SessionEntry)) {
        if let Some(entry) = self.sessions.get(&id) {
            entry.span.in_scope(|| f(entry));
        }
    }

    /// Moves everything the engine produced to where it goes until it has nothing more:
    /// datagrams to the transport, rule changes
    /// to the enforcer, events to the sessions' owners. Then drops released sessions.
    async fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(transmit) = self.engine.poll_transmit() {
                progressed = true;
                // The engine delivers messages for this host's own addresses to itself, so
                // everything polled here is for another host.
                trace!(to = %transmit.destination, len = transmit.payload.len(), "datagram sent");
                if let Err(e) = self.link.send(&transmit).await {
                    self.send_errors += 1;
                    debug!(to = %transmit.destination, error = %e, "transport send failed");
                }
            }
            while let Some(action) = self.engine.poll_action() {
                progressed = true;
                self.apply(action).await;
            }
            while let Some((id, event)) = self.engine.poll_event() {
                progressed = true;
                let Some(entry) = self.sessions.get(&id) else {
                    continue;
                };
                entry.span.in_scope(|| info!(?event, "qos event"));
                entry.shared.push(event);
            }
            // Only now: the events of these outcomes (`Established`) are in the sessions'
            // state. A failed load releases its session, which the next round drains.
            for UnsignaledOutcome {
                session,
                reply,
                outcome,
            } in std::mem::take(&mut self.unsignaled_outcomes)
            {
                progressed = true;
                self.answer_unsignaled(session, reply, outcome);
            }
            if !progressed {
                break;
            }
        }
        let released: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.released)
            .map(|(id, _)| *id)
            .collect();
        for id in released {
            if let Some(entry) = self.sessions.remove(&id) {
                entry.shared.end("closed");
                let result = match entry.removal_error {
                    Some(e) => Err(QosError::RuleRemoval(e)),
                    None => Ok(()),
                };
                if let Some(reply) = entry.release_reply {
                    let _ = reply.send(result);
                }
                // Dropping the entry closes the socket duplicate: the connection's FIN goes
                // out only after its rule was unloaded.
            }
        }
    }

    async fn apply(&mut self, action: RuleAction) {
        let now = Instant::now();
        match action {
            RuleAction::Install { session, rule } => {
                let entry = self.sessions.get(&session);
                let socket = entry.and_then(|e| e.socket.as_ref()).map(|s| s.as_fd());
                let span = entry.map_or_else(|| self.span.clone(), |e| e.span.clone());
                let result = self.enforcer.install(&rule, socket).await;
                let outcome = match result {
                    Ok(applied) => {
                        span.in_scope(|| info!(rule = %rule.id, flow = %rule.flow, applied = %applied.summary, "rule loaded"));
                        self.rules_in_force.insert(rule.id, session);
                        Ok(())
                    }
                    Err(e) => {
                        span.in_scope(|| warn!(rule = %rule.id, error = %e, "rule load failed"));
                        let (code, value) = e.rsvp_error();
                        Err(RuleFailure {
                            code,
                            value,
                            reason: e.to_string(),
                        })
                    }
                };
                self.engine.rule_outcome(now, rule.id, outcome.clone());
                if let Some(reply) = self.pending_unsignaled.remove(&rule.id) {
                    self.unsignaled_outcomes.push(UnsignaledOutcome {
                        session,
                        reply,
                        outcome,
                    });
                }
            }
            RuleAction::Modify { session, rule } => {
                let entry = self.sessions.get(&session);
                let socket = entry.and_then(|e| e.socket.as_ref()).map(|s| s.as_fd());
                let outcome = match self.enforcer.modify(&rule, socket).await {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let (code, value) = e.rsvp_error();
                        Err(RuleFailure {
                            code,
                            value,
                            reason: e.to_string(),
                        })
                    }
                };
                self.engine.rule_outcome(now, rule.id, outcome);
            }
            RuleAction::Remove { session, id } => {
                let entry = self.sessions.get_mut(&session);
                let socket = entry
                    .as_ref()
                    .and_then(|e| e.socket.as_ref())
                    .map(|s| s.as_fd());
                let result = self.enforcer.remove(id, socket).await;
                self.rules_in_force.remove(&id);
                if let Err(e) = result {
                    warn!(rule = %id, error = %e, "rule unload failed");
                    if let Some(entry) = self.sessions.get_mut(&session) {
                        entry.removal_error = Some(e.to_string());
                    }
                } else {
                    self.in_session(session, |_| info!(rule = %id, "rule unloaded"));
                }
            }
        }
    }

    /// Every handle is gone: release every session, unload every rule, stop the enforcer.
    async fn shutdown(&mut self) {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.release(id);
        }
        self.drain().await;
        for (_, reply) in self.pending_unsignaled.drain() {
            let _ = reply.send(Err(QosError::AgentStopped));
        }
        if let Err(e) = self.enforcer.shutdown().await {
            warn!(error = %e, "enforcer shutdown failed");
        }
        info!(sessions = self.engine.session_count(), "qtoq agent stopped");
    }
}
