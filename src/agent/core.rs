//! The agent's state: the engine, the enforcer and the sessions of local connections, behind
//! one lock that both the agent task and the sockets' own calls take.
//!
//! quinn's shape: a connection's API calls lock its state and act on it directly, and the
//! driver task only does what needs waiting (I/O, timers). Here `accept`/`connect` open their
//! session, run the engine and, when the enforcer can apply a rule at once (socket options),
//! load it, all within the caller's own call; for a same-host connection the whole exchange
//! (PATH, RESV, admission, rule load, ResvConf) completes there. What must wait (datagrams to
//! send, a netlink request, an earlier timer) is left for the agent task, which is woken for
//! it. Measured: a setup through an agent task cost two cross-thread wake-ups per round trip
//! on a multi-thread runtime.
//!
//! # Enforcement off the signaling loop
//!
//! The enforcer has its own lock ([`SharedEnforcer`]), apart from this state: nothing awaits
//! it while holding the state. A rule action the enforcer cannot apply at once joins a FIFO
//! here; the task takes the oldest ([`Core::next_enforcement`]) as a `'static` future that
//! owns the enforcer's lock, polls it as one more branch of its loop beside datagrams, timers
//! and commands, and hands its outcome back ([`Core::enforced`]), which feeds the engine and
//! starts the next. So a slow netlink request delays rule changes, not signaling: other
//! sessions' refreshes, timers and `accept`/`connect` go on meanwhile.
//!
//! Order: what must not be reordered is one rule's (and one session's, whose rules act on
//! the same socket) actions, e.g. an install and the remove of the same rule. One action in
//! flight at a time and a FIFO give it: an action whose session or rule has one waiting or in
//! flight queues behind it, and the synchronous fast path ([`Enforcer::install_now`] …) only
//! runs when neither is so and the enforcer's lock is free (it is held while an action is in
//! flight). Actions of other sessions may pass queued ones on that path. The enforcer takes
//! `&mut self`, so one slow call still delays the agent's other rule changes (not its
//! signaling).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Mutex, MutexGuard, Notify};
use tracing::{debug, info, info_span, trace, warn, Span};

use super::owners::Owners;
use super::transport::Link;
use super::{AgentStats, OpenRequest, Opened, SessionShared, Setup, SharedPolicy};
use crate::enforce::{Applied, EnforceError, Enforcer};
use crate::engine::{CommandError, Engine, Event, RuleAction, RuleFailure, SessionId, Style};
use crate::error::QosError;
use crate::flow::{AdmissionDenied, Flow, Rule, RuleId};
use crate::policy::Policy;

/// How far away "no timer" is: the task's sleep is parked there.
pub(crate) const IDLE: Duration = Duration::from_secs(24 * 60 * 60);

/// The agent's enforcer, locked apart from its state (see [the module](self)).
pub(crate) type SharedEnforcer = Arc<Mutex<Box<dyn Enforcer>>>;

/// One waiting rule action being applied: owns the enforcer's lock until it resolves; the
/// task polls it and hands the result to [`Core::enforced`].
pub(crate) type Enforcement = Pin<Box<dyn Future<Output = Enforced> + Send>>;

/// What the enforcer made of one rule action.
pub(crate) enum Enforced {
    Installed {
        session: SessionId,
        rule: Rule,
        result: Result<Applied, EnforceError>,
    },
    Modified {
        id: RuleId,
        result: Result<Applied, EnforceError>,
    },
    Removed {
        session: SessionId,
        id: RuleId,
        result: Result<(), EnforceError>,
    },
}

/// Something to do once the rule actions queued before it are applied.
type AfterEnforcement = Box<dyn FnOnce() + Send>;

/// The agent's state and the bell that wakes its task.
pub(crate) struct AgentCore {
    state: Mutex<Core>,
    wake: Notify,
}

impl AgentCore {
    pub(crate) fn new(core: Core) -> Arc<Self> {
        Arc::new(AgentCore {
            state: Mutex::new(core),
            wake: Notify::new(),
        })
    }

    pub(crate) async fn lock(&self) -> MutexGuard<'_, Core> {
        self.state.lock().await
    }

    /// Outside any runtime only (it blocks the thread).
    pub(crate) fn blocking_lock(&self) -> MutexGuard<'_, Core> {
        self.state.blocking_lock()
    }

    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, Core>> {
        self.state.try_lock().ok()
    }

    /// Runs a caller's operation on the state, then wakes the agent task if the operation
    /// left it work (datagrams, waiting rule changes, an earlier timer): every caller goes
    /// through here so none can forget the wake.
    pub(crate) async fn act<R>(&self, op: impl FnOnce(&mut Core) -> R) -> R {
        let mut core = self.state.lock().await;
        let result = op(&mut core);
        self.wake_if_needed(&core);
        result
    }

    /// [`act`](Self::act) without waiting for the state: `None` (nothing done) when it is
    /// busy. Safe in `Drop`.
    pub(crate) fn try_act<R>(&self, op: impl FnOnce(&mut Core) -> R) -> Option<R> {
        let mut core = self.state.try_lock().ok()?;
        let result = op(&mut core);
        self.wake_if_needed(&core);
        Some(result)
    }

    fn wake_if_needed(&self, core: &Core) {
        if core.needs_task() {
            self.wake.notify_one();
        }
    }

    /// Resolves when a caller left the task work (at once if one did since the last time).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

struct SessionEntry {
    shared: Arc<SessionShared>,
    /// The data sender's socket (a duplicate), for enforcers acting on sockets; shared with
    /// an enforcement in flight, so it closes after both are done.
    socket: Option<Arc<OwnedFd>>,
    span: Span,
    /// The data sender's flow, when the session has an entry in [`Core::owners`].
    owned_flow: Option<Flow>,
    /// Released by its owner (or the agent): removed once the engine's teardown actions had
    /// the socket.
    released: bool,
    release_reply: Option<oneshot::Sender<Result<(), QosError>>>,
    removal_error: Option<String>,
}

struct UnsignaledOutcome {
    session: SessionId,
    reply: oneshot::Sender<Result<Opened, QosError>>,
    outcome: Result<(), RuleFailure>,
}

/// What [`Core::new`] needs.
pub(crate) struct CoreParts {
    pub(crate) engine: Engine,
    pub(crate) enforcer: Box<dyn Enforcer>,
    pub(crate) policy: SharedPolicy,
    /// Read by the engine's admission wrapper (see [`owners`](super::owners)).
    pub(crate) owners: Owners,
    pub(crate) custom_admission: bool,
    /// The engine's INTEGRITY keys were given to the builder: a reload keeps them.
    pub(crate) keys_pinned: bool,
    pub(crate) span: Span,
}

pub(crate) struct Core {
    engine: Engine,
    enforcer: SharedEnforcer,
    sessions: HashMap<SessionId, SessionEntry>,
    /// Unsignaled admissions whose owner waits for the rule load.
    pending_unsignaled: HashMap<RuleId, oneshot::Sender<Result<Opened, QosError>>>,
    /// Unsignaled owners whose rule load has an outcome: answered once the session's state
    /// holds every event the outcome produced, so that `reservation()` says `Established` the
    /// moment `accept` returns.
    unsignaled_outcomes: Vec<UnsignaledOutcome>,
    /// Loaded rules and the session each belongs to.
    rules_in_force: HashMap<RuleId, SessionId>,
    /// Rule actions the enforcer could not apply at once, and every later action of their
    /// session or rule: the task applies them, oldest first, one at a time.
    waiting: VecDeque<RuleAction>,
    /// The action the task is applying (taken from `waiting`).
    in_flight: Option<RuleAction>,
    /// Actions ever queued in `waiting`, and ever applied from it: FIFO and one at a time, so
    /// every action queued before the `queued`-th is applied once `settled` reaches it.
    queued: u64,
    settled: u64,
    /// Waiting for the actions queued before them: (`queued` then, what to do).
    after_enforcement: Vec<(u64, AfterEnforcement)>,
    policy: SharedPolicy,
    /// The local owner of each data sender's session, for admission.
    owners: Owners,
    /// The policy only serves lookups: a reload tears nothing down.
    custom_admission: bool,
    /// The engine's INTEGRITY keys were given to the builder, not taken from the policy: a
    /// policy reload leaves them.
    keys_pinned: bool,
    send_errors: u64,
    /// The deadline the task's timer is set to: an earlier one needs the task.
    armed: Instant,
    /// The task has stopped (or is gone): nothing new is opened.
    stopped: bool,
    span: Span,
}

impl Core {
    pub(crate) fn new(parts: CoreParts) -> Core {
        Core {
            engine: parts.engine,
            enforcer: Arc::new(Mutex::new(parts.enforcer)),
            sessions: HashMap::new(),
            pending_unsignaled: HashMap::new(),
            unsignaled_outcomes: Vec::new(),
            rules_in_force: HashMap::new(),
            waiting: VecDeque::new(),
            in_flight: None,
            queued: 0,
            settled: 0,
            after_enforcement: Vec::new(),
            policy: parts.policy,
            owners: parts.owners,
            custom_admission: parts.custom_admission,
            keys_pinned: parts.keys_pinned,
            send_errors: 0,
            armed: Instant::now(),
            stopped: false,
            span: parts.span,
        }
    }

    pub(crate) fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The owners of the data senders' flows (tests).
    #[cfg(test)]
    pub(crate) fn owners(&self) -> &Owners {
        &self.owners
    }

    /// Whether the task has something to do that a caller's call could not: datagrams to
    /// send, a rule action to start (one in flight already wakes it when done), or a timer
    /// earlier than the one it has set.
    fn needs_task(&self) -> bool {
        self.engine.has_transmit()
            || (self.in_flight.is_none() && !self.waiting.is_empty())
            || self.engine.poll_timeout().is_some_and(|t| t < self.armed)
    }

    /// The engine's next deadline, which the task now sets its timer to.
    pub(crate) fn arm(&mut self) -> Instant {
        self.armed = self
            .engine
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + IDLE);
        self.armed
    }

    pub(crate) fn stats(&self, transport_malformed: u64) -> AgentStats {
        let (policy_admitted, interfaces) = if self.custom_admission {
            (0, Vec::new())
        } else {
            let mut policy = self.policy.lock();
            (policy.admitted_count(), policy.interface_budgets())
        };
        AgentStats {
            engine_owners: self.engine.owner_count(),
            engine_sessions: self.engine.session_count(),
            owned_sessions: self.sessions.len(),
            rules_in_force: self.rules_in_force.len(),
            enforce_queue: self.waiting.len() + usize::from(self.in_flight.is_some()),
            engine: self.engine.stats().clone(),
            send_errors: self.send_errors,
            transport_malformed,
            policy_admitted,
            interfaces,
            integrity_keys: self.engine.config().integrity.keys().len(),
        }
    }

    /// Opens a session and runs it as far as it goes now; `request.reply` is answered when
    /// the session exists (and, without signaling, once its rule is loaded or refused).
    pub(crate) fn open(&mut self, request: OpenRequest) {
        let OpenRequest {
            setup,
            peer,
            notify,
            socket,
            owner,
            reply,
        } = request;
        if self.stopped {
            let _ = reply.send(Err(QosError::AgentStopped));
            return;
        }
        let setup = setup.resolve(&self.policy.lock(), owner.as_ref());
        let signaled = setup.signaled();
        let now = Instant::now();
        let id = match self.engine.open_session(now, setup.key()) {
            Ok(id) => id,
            Err(e) => {
                // Nothing was opened: the caller gets the error as for a refused command.
                self.span
                    .in_scope(|| warn!(key = ?setup.key(), error = %e, "session refused"));
                let _ = reply.send(Err(QosError::Command(e)));
                return;
            }
        };
        let span = info_span!(parent: &self.span, "qtoq_session", session = id.0, %peer, role = setup.role());
        span.in_scope(|| debug!(key = ?setup.key(), owner = owner.as_ref().map(tracing::field::display), "session opened"));
        // Before the engine runs: a same-host setup is admitted within the calls below.
        let owned_flow = setup.sent_flow().zip(owner).map(|(flow, owner)| {
            self.owners.insert(flow, id, owner);
            flow
        });
        let shared = SessionShared::new(notify);
        self.sessions.insert(
            id,
            SessionEntry {
                shared: shared.clone(),
                socket: socket.map(Arc::new),
                span,
                owned_flow,
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
            // Resolved above; kept total without a panic.
            Setup::Accepted { .. } => Err(CommandError::Invalid("an unresolved accepted setup")),
        };
        match result {
            Err(e) => {
                self.in_session(id, |_| warn!(error = %e, "session refused"));
                let error = match e {
                    CommandError::Denied(denied) => {
                        shared.push(Event::AdmissionDenied {
                            error: denied.error,
                            reason: denied.reason.clone(),
                        });
                        QosError::AdmissionDenied(denied)
                    }
                    other => QosError::Command(other),
                };
                self.release(id);
                self.drain();
                let _ = reply.send(Err(error));
            }
            Ok(None) => {
                if reply
                    .send(Ok(Opened {
                        id,
                        shared,
                        signaled,
                    }))
                    .is_err()
                {
                    // The caller gave up (cancelled accept/connect): nobody owns the session.
                    self.release(id);
                }
                self.drain();
            }
            Ok(Some(rule)) => {
                // The owner waits until the rule is loaded (or refused): IBM i's step
                // "admission control is performed, the rule is sent to the TCP/IP stack".
                self.pending_unsignaled.insert(rule, reply);
                self.drain();
                let install_waits = self.pending().any(
                    |action| matches!(action, RuleAction::Install { rule: r, .. } if r.id == rule),
                );
                if !install_waits {
                    if let Some(reply) = self.pending_unsignaled.remove(&rule) {
                        // No install came for the admitted rule (nothing to load): admitted.
                        self.unsignaled_outcomes.push(UnsignaledOutcome {
                            session: id,
                            reply,
                            outcome: Ok(()),
                        });
                        self.drain();
                    }
                }
            }
        }
    }

    /// The owner releases `session` (`close` or drop); `reply` is answered once it is torn
    /// down and its rule unloaded.
    pub(crate) fn release_by_owner(
        &mut self,
        session: SessionId,
        reply: Option<oneshot::Sender<Result<(), QosError>>>,
    ) {
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
        self.drain();
    }

    /// Replaces the policy, and the engine's INTEGRITY keys with its keys unless they were
    /// given to the builder; reservations that no longer fit lose their rule with a policy
    /// failure (ResvErr code 2 to the receiver, `AdmissionDenied` to the owner).
    pub(crate) fn reload_policy(&mut self, new: Policy) -> usize {
        let origin = new.origin().unwrap_or("(inline)").to_owned();
        let keys = new.integrity().keys().len();
        if self.keys_pinned {
            if keys > 0 {
                warn!(%origin, ignored = keys,
                    "the reloaded policy's integrity keys are ignored: the agent was given its keys");
            }
        } else {
            // Before anything the reload sends (ResvErrs of what no longer fits).
            if self.engine.config().integrity != *new.integrity() {
                info!(%origin, keys, "integrity keys replaced");
            }
            self.engine.set_keys(new.integrity().clone());
        }
        let dropped = self.policy.lock().reload(new);
        info!(%origin, torn_down = dropped.len(), "policy reloaded");
        let reason = format!("the reloaded policy {origin} no longer admits this reservation");
        self.revoke(dropped, &reason)
    }

    /// Re-checks the admitted reservations at the policy's current time (schedules).
    pub(crate) fn revalidate_policy(&mut self) -> usize {
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
    }

    /// Tears down the reservations of rules the policy released.
    fn revoke(&mut self, dropped: Vec<RuleId>, reason: &str) -> usize {
        if self.custom_admission {
            // The policy admitted nothing here: its verdicts concern no reservation.
            return 0;
        }
        let now = Instant::now();
        // A policy control failure, as the policy would have refused it now.
        let revoked = AdmissionDenied::policy(reason).error;
        for id in &dropped {
            if let Some(entry) = self
                .rules_in_force
                .get(id)
                .and_then(|session| self.sessions.get(session))
            {
                entry
                    .span
                    .in_scope(|| info!(rule = %id, reason, "reservation revoked by the policy"));
                entry.shared.push(Event::AdmissionDenied {
                    error: revoked,
                    reason: reason.to_owned(),
                });
            }
            // The engine unloads the rule, tells the receiver (ResvErr) and the owner.
            self.engine.rule_outcome(
                now,
                *id,
                Err(RuleFailure {
                    error: revoked,
                    reason: reason.to_owned(),
                }),
            );
        }
        self.drain();
        dropped.len()
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
                if reply
                    .send(Ok(Opened {
                        id,
                        shared,
                        signaled: false,
                    }))
                    .is_err()
                {
                    self.release(id);
                }
            }
            Err(failure) => {
                self.release(id);
                let _ = reply.send(Err(QosError::RuleFailed {
                    error: failure.error,
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

    /// Moves everything the engine produced that needs no waiting to where it goes: rule
    /// changes the enforcer can apply at once, events to the owners, answers to unsignaled
    /// owners. Datagrams stay for the task's [`flush`](Self::flush), rule changes that must
    /// wait for its [`next_enforcement`](Self::next_enforcement).
    fn drain(&mut self) {
        while self.drain_once() {}
        self.remove_released();
    }

    /// One round of [`drain`](Self::drain); whether anything moved.
    fn drain_once(&mut self) -> bool {
        let mut progressed = false;
        while let Some(action) = self.engine.poll_action() {
            progressed = true;
            if self.must_wait(&action) {
                self.enqueue(action);
            } else if let Some(action) = self.apply_now(action) {
                self.enqueue(action);
            }
        }
        while let Some((id, event)) = self.engine.poll_event() {
            progressed = true;
            let Some(entry) = self.sessions.get(&id) else {
                continue;
            };
            entry.span.in_scope(|| info!(?event, "qos event"));
            entry.shared.push(event);
        }
        // Only now: the events of these outcomes (`Established`) are in the sessions' state.
        // A failed load releases its session, which the next round drains.
        for UnsignaledOutcome {
            session,
            reply,
            outcome,
        } in std::mem::take(&mut self.unsignaled_outcomes)
        {
            progressed = true;
            self.answer_unsignaled(session, reply, outcome);
        }
        progressed
    }

    /// What [`drain`](Self::drain) leaves for the task, but rule changes: datagrams out on
    /// `link`, then a drain. No enforcer call: those run in [`Enforcement`]s.
    pub(crate) async fn flush(&mut self, link: &mut Link) {
        loop {
            let mut progressed = false;
            while let Some(transmit) = self.engine.poll_transmit() {
                progressed = true;
                // The engine delivers messages for this host's own addresses to itself, so
                // everything polled here is for another host.
                trace!(to = %transmit.destination, len = transmit.payload.len(), "datagram sent");
                if let Err(e) = link.send(&transmit).await {
                    self.send_errors += 1;
                    debug!(to = %transmit.destination, error = %e, "transport send failed");
                }
            }
            if self.drain_once() {
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        self.remove_released();
    }

    /// Drops released sessions whose rule changes are all done (the socket duplicate closes
    /// only after its rule was unloaded, so the connection's FIN goes out after it).
    fn remove_released(&mut self) {
        let released: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(id, e)| e.released && !self.pending().any(|a| action_session(a) == **id))
            .map(|(id, _)| *id)
            .collect();
        for id in released {
            if let Some(entry) = self.sessions.remove(&id) {
                if let Some(flow) = &entry.owned_flow {
                    self.owners.remove(flow, id);
                }
                entry.shared.end("closed");
                let result = match entry.removal_error {
                    Some(e) => Err(QosError::RuleRemoval(e)),
                    None => Ok(()),
                };
                if let Some(reply) = entry.release_reply {
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// The rule actions waiting or in flight.
    fn pending(&self) -> impl Iterator<Item = &RuleAction> {
        self.in_flight.iter().chain(self.waiting.iter())
    }

    /// Whether `action` must queue behind an action of its session or rule that waits or is
    /// in flight (see [the module](self)).
    fn must_wait(&self, action: &RuleAction) -> bool {
        let (session, rule) = (action_session(action), action_rule(action));
        self.pending()
            .any(|a| action_session(a) == session || action_rule(a) == rule)
    }

    fn enqueue(&mut self, action: RuleAction) {
        self.queued += 1;
        self.waiting.push_back(action);
    }

    /// Applies `action` if the enforcer can without waiting; otherwise hands it back (also
    /// when the enforcer is busy with an action in flight).
    fn apply_now(&mut self, action: RuleAction) -> Option<RuleAction> {
        let enforced =
            {
                let Ok(mut enforcer) = self.enforcer.try_lock() else {
                    return Some(action);
                };
                let socket = self
                    .sessions
                    .get(&action_session(&action))
                    .and_then(|e| e.socket.as_deref())
                    .map(AsFd::as_fd);
                match &action {
                    RuleAction::Install { session, rule } => enforcer
                        .install_now(rule, socket)
                        .map(|result| Enforced::Installed {
                            session: *session,
                            rule: rule.clone(),
                            result,
                        }),
                    RuleAction::Modify { rule, .. } => {
                        enforcer
                            .modify_now(rule, socket)
                            .map(|result| Enforced::Modified {
                                id: rule.id,
                                result,
                            })
                    }
                    RuleAction::Remove { session, id } => {
                        enforcer
                            .remove_now(*id, socket)
                            .map(|result| Enforced::Removed {
                                session: *session,
                                id: *id,
                                result,
                            })
                    }
                }
            };
        match enforced {
            Some(enforced) => {
                self.settle(enforced);
                None
            }
            None => Some(action),
        }
    }

    /// Starts the oldest waiting rule action when none is in flight: the task polls it off
    /// this state's lock and hands its outcome to [`enforced`](Self::enforced).
    pub(crate) fn next_enforcement(&mut self) -> Option<Enforcement> {
        if self.in_flight.is_some() {
            return None;
        }
        let action = self.waiting.pop_front()?;
        self.in_flight = Some(action.clone());
        let enforcer = self.enforcer.clone();
        let socket = self
            .sessions
            .get(&action_session(&action))
            .and_then(|e| e.socket.clone());
        Some(Box::pin(async move {
            let mut enforcer = enforcer.lock_owned().await;
            let socket = socket.as_deref().map(AsFd::as_fd);
            match action {
                RuleAction::Install { session, rule } => {
                    let result = enforcer.install(&rule, socket).await;
                    Enforced::Installed {
                        session,
                        rule,
                        result,
                    }
                }
                RuleAction::Modify { rule, .. } => Enforced::Modified {
                    id: rule.id,
                    result: enforcer.modify(&rule, socket).await,
                },
                RuleAction::Remove { session, id } => Enforced::Removed {
                    session,
                    id,
                    result: enforcer.remove(id, socket).await,
                },
            }
        }))
    }

    /// The in-flight action is done: its outcome goes to the engine, and whatever waited for
    /// it (releases, unsignaled owners, [`after_enforcement`](Self::after_enforcement)) is
    /// answered.
    pub(crate) fn enforced(&mut self, enforced: Enforced) {
        self.in_flight = None;
        self.settled += 1;
        self.settle(enforced);
        self.drain();
        let settled = self.settled;
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.after_enforcement)
            .into_iter()
            .partition(|(queued, _)| *queued <= settled);
        self.after_enforcement = later;
        for (_, then) in ready {
            then();
        }
    }

    /// Runs `then` once every rule action queued so far is applied: at once if none waits.
    pub(crate) fn after_enforcement(&mut self, then: AfterEnforcement) {
        if self.settled >= self.queued {
            then();
        } else {
            self.after_enforcement.push((self.queued, then));
        }
    }

    fn settle(&mut self, enforced: Enforced) {
        match enforced {
            Enforced::Installed {
                session,
                rule,
                result,
            } => self.installed(session, &rule, result),
            Enforced::Modified { id, result } => self.modified(id, result),
            Enforced::Removed {
                session,
                id,
                result,
            } => self.removed(session, id, result),
        }
    }

    fn installed(
        &mut self,
        session: SessionId,
        rule: &Rule,
        result: Result<Applied, EnforceError>,
    ) {
        let span = self
            .sessions
            .get(&session)
            .map_or_else(|| self.span.clone(), |e| e.span.clone());
        let outcome = match result {
            Ok(applied) => {
                span.in_scope(|| info!(rule = %rule.id, flow = %rule.flow, applied = %applied.summary, "rule loaded"));
                self.rules_in_force.insert(rule.id, session);
                Ok(())
            }
            Err(e) => {
                span.in_scope(|| warn!(rule = %rule.id, error = %e, "rule load failed"));
                Err(rule_failure(&e))
            }
        };
        self.engine
            .rule_outcome(Instant::now(), rule.id, outcome.clone());
        if let Some(reply) = self.pending_unsignaled.remove(&rule.id) {
            self.unsignaled_outcomes.push(UnsignaledOutcome {
                session,
                reply,
                outcome,
            });
        }
    }

    fn modified(&mut self, id: RuleId, result: Result<Applied, EnforceError>) {
        let outcome = result.map(|_| ()).map_err(|e| rule_failure(&e));
        self.engine.rule_outcome(Instant::now(), id, outcome);
    }

    fn removed(&mut self, session: SessionId, id: RuleId, result: Result<(), EnforceError>) {
        self.rules_in_force.remove(&id);
        match result {
            Err(e) => {
                warn!(rule = %id, error = %e, "rule unload failed");
                if let Some(entry) = self.sessions.get_mut(&session) {
                    entry.removal_error = Some(e.to_string());
                }
            }
            Ok(()) => self.in_session(session, |_| info!(rule = %id, "rule unloaded")),
        }
    }

    /// The agent stops: nothing new is opened, every session is released. The task then
    /// applies the rule actions that leaves and calls [`stopped`](Self::stopped).
    pub(crate) fn stop(&mut self) {
        self.stopped = true;
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.release(id);
        }
        self.drain();
    }

    /// Every rule action is applied: owners still waiting for a rule load are told the agent
    /// stopped. Returns the enforcer, for its shutdown (off this state's lock).
    pub(crate) fn stopped(&mut self) -> SharedEnforcer {
        for (_, reply) in self.pending_unsignaled.drain() {
            let _ = reply.send(Err(QosError::AgentStopped));
        }
        self.enforcer.clone()
    }

    /// The agent task is gone without its teardown: the streams end instead of waiting.
    pub(crate) fn end_streams(&mut self) {
        self.stopped = true;
        for entry in self.sessions.values() {
            entry.shared.end("the qos agent stopped");
        }
    }
}

fn action_session(action: &RuleAction) -> SessionId {
    match action {
        RuleAction::Install { session, .. }
        | RuleAction::Modify { session, .. }
        | RuleAction::Remove { session, .. } => *session,
    }
}

fn action_rule(action: &RuleAction) -> RuleId {
    match action {
        RuleAction::Install { rule, .. } | RuleAction::Modify { rule, .. } => rule.id,
        RuleAction::Remove { id, .. } => *id,
    }
}

fn rule_failure(e: &EnforceError) -> RuleFailure {
    RuleFailure {
        error: e.rsvp_error(),
        reason: e.to_string(),
    }
}
