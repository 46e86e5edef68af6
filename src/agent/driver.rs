//! The agent task: one loop over commands, datagrams, the engine's single timer, the rule
//! action being enforced and the bell sockets ring when their own calls left it work (see
//! [`core`](super::core)). Nothing in the loop awaits the enforcer: the action in flight is
//! one more branch, so a slow netlink request holds up neither signaling nor callers.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, info_span, trace, warn, Instrument, Span};

use super::core::{AgentCore, Core, CoreParts, Enforced, Enforcement};
use super::owners::{OwnerAdmission, Owners};
use super::transport::{Link, MAX_DATAGRAM};

/// The longest a stopping agent waits for its tears to be acknowledged (see
/// `Driver::linger`): the first two of RFC 2961's retransmissions (0.5 s and 1.5 s after the
/// first copy, with the defaults) fit.
const LINGER: Duration = Duration::from_secs(2);
use super::{Command, SharedPolicy};
use crate::enforce::Enforcer;
use crate::engine::{Engine, EngineConfig, Incoming};
use crate::flow::Admission;

pub(crate) struct DriverParts {
    pub(crate) id: u64,
    pub(crate) transport: &'static str,
    pub(crate) engine: EngineConfig,
    pub(crate) admission: Box<dyn Admission>,
    pub(crate) policy: SharedPolicy,
    pub(crate) custom_admission: bool,
    /// The engine's keys were given to the builder: a policy reload keeps them.
    pub(crate) keys_pinned: bool,
    pub(crate) enforcer: Box<dyn Enforcer>,
    pub(crate) link: Link,
    pub(crate) local_addrs: Vec<IpAddr>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    /// See [`Driver::relocatable`].
    pub(crate) relocatable: bool,
}

pub(crate) struct Driver {
    core: Arc<AgentCore>,
    link: Link,
    commands: mpsc::UnboundedReceiver<Command>,
    transport_malformed: u64,
    /// The rule action being applied, if any. Held here so it moves with the driver.
    enforcing: Option<Enforcement>,
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
        match self.core.try_lock() {
            Some(mut core) => core.end_streams(),
            None => {
                // A caller (or the future being dropped) holds the state right now: end the
                // streams once it lets go, from a thread that may block.
                let core = self.core.clone();
                let _ = std::thread::Builder::new()
                    .name("qtoq-agent-end".into())
                    .spawn(move || core.blocking_lock().end_streams());
            }
        }
    }
}

/// Owns a driver while it serves.
struct Serving(Option<Driver>);

impl Drop for Serving {
    /// Reached with a driver only when the serving future was dropped: its runtime is
    /// shutting down. A relocatable driver that still has handles moves its sockets, engine
    /// and sessions to a runtime on a thread of its own and goes on; peers see nothing. (A
    /// datagram being handled at that instant may be lost: soft state recovers. A rule action
    /// in flight moves along in the driver; the default agent's socket enforcer applies at
    /// once, so it has none that waits on the old runtime.)
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
    /// The task and the state it shares with the agent's handles.
    pub(crate) fn new(parts: DriverParts) -> (Driver, Arc<AgentCore>) {
        let span = info_span!("qtoq_agent", id = parts.id, transport = parts.transport);
        span.in_scope(|| {
            info!(link = ?parts.link, locals = ?parts.local_addrs, "qtoq agent started");
        });
        // The engine's requests get their owner (which the engine does not keep) on the way.
        let owners = Owners::default();
        let admission = OwnerAdmission::new(parts.admission, owners.clone());
        let mut engine = Engine::new(parts.engine, Box::new(admission));
        // INTEGRITY sequence numbers start from the UNIX time (RFC 2747 §3.2), so they keep
        // increasing across a restart of the agent without stable storage.
        engine.set_wall_clock(Instant::now(), std::time::SystemTime::now());
        let core = AgentCore::new(Core::new(CoreParts {
            engine,
            owners,
            enforcer: parts.enforcer,
            policy: parts.policy,
            custom_admission: parts.custom_admission,
            keys_pinned: parts.keys_pinned,
            span: span.clone(),
        }));
        let driver = Driver {
            core: core.clone(),
            link: parts.link,
            commands: parts.commands,
            transport_malformed: 0,
            enforcing: None,
            span,
            relocatable: parts.relocatable,
        };
        (driver, core)
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
            let timer = tokio::time::sleep(super::core::IDLE);
            tokio::pin!(timer);
            let mut stopped = None;
            let mut recheck = tokio::time::interval_at(
                tokio::time::Instant::now() + super::POLICY_RECHECK_PERIOD,
                super::POLICY_RECHECK_PERIOD,
            );
            recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let core = self.core.clone();
            loop {
                let deadline = {
                    let mut state = core.lock().await;
                    state.flush(&mut self.link).await;
                    if self.enforcing.is_none() {
                        self.enforcing = state.next_enforcement();
                    }
                    state.arm()
                };
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
                                // What it produced is flushed at the top of the loop.
                                core.lock().await.engine().handle_datagram(Instant::now(), Incoming {
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
                    () = &mut timer => core.lock().await.engine().handle_timeout(Instant::now()),
                    enforced = in_flight(&mut self.enforcing) => {
                        // Done: a finished future must not be polled again.
                        self.enforcing = None;
                        core.lock().await.enforced(enforced);
                    }
                    _ = recheck.tick() => {
                        core.lock().await.revalidate_policy();
                    }
                    () = core.woken() => {}
                }
            }
            // Nothing queued after this point is served: its senders see the agent stopped.
            self.commands.close();
            self.shut_down().await;
            if let Some(reply) = stopped {
                let _ = reply.send(());
            }
        }
        .instrument(span)
        .await
    }

    /// Every session released, every rule action applied (still off the state's lock, which
    /// owners releasing at the same time take), then the enforcer shut down.
    async fn shut_down(&mut self) {
        let core = self.core.clone();
        core.lock().await.stop();
        loop {
            {
                let mut state = core.lock().await;
                state.flush(&mut self.link).await;
                if self.enforcing.is_none() {
                    self.enforcing = state.next_enforcement();
                }
                if self.enforcing.is_none() {
                    break;
                }
            }
            let enforced = in_flight(&mut self.enforcing).await;
            self.enforcing = None;
            core.lock().await.enforced(enforced);
        }
        let enforcer = core.lock().await.stopped();
        if let Err(e) = enforcer.lock().await.shutdown().await {
            warn!(error = %e, "enforcer shutdown failed");
        }
        self.linger().await;
        let sessions = core.lock().await.engine().session_count();
        info!(sessions, "qtoq agent stopped");
    }

    /// After the teardown: while tears sent to refresh-reduction-capable neighbors wait for
    /// their acknowledgments, keeps receiving and retransmitting, at most [`LINGER`]. Without
    /// it a stopping agent's PathTears go once, and one lost datagram leaves the neighbor's
    /// state (and its reservation) until it expires.
    async fn linger(&mut self) {
        let core = self.core.clone();
        let until = Instant::now() + LINGER;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let deadline = {
                let mut state = core.lock().await;
                state.flush(&mut self.link).await;
                let waiting = state.engine().unacknowledged();
                if waiting == 0 || Instant::now() >= until {
                    if waiting > 0 {
                        debug!(waiting, "stopping with messages not acknowledged");
                    }
                    return;
                }
                state.arm().min(until)
            };
            tokio::select! {
                received = self.link.recv(&mut buf, &mut self.transport_malformed) => {
                    match received {
                        Ok(r) => {
                            let end = r.offset + r.len;
                            core.lock().await.engine().handle_datagram(Instant::now(), Incoming {
                                source: r.source,
                                destination: r.destination,
                                ttl: r.ttl,
                                payload: &buf[r.offset..end],
                            });
                        }
                        // As in `serve`: a persistent receive error must not spin the loop.
                        Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    core.lock().await.engine().handle_timeout(Instant::now());
                }
            }
        }
    }

    async fn command(&mut self, command: Command) {
        let mut state = self.core.lock().await;
        match command {
            Command::Release { session, reply } => state.release_by_owner(session, reply),
            Command::Stats { reply } => {
                let _ = reply.send(state.stats(self.transport_malformed));
            }
            Command::ReloadPolicy { policy, reply } => {
                let torn_down = state.reload_policy(*policy);
                state.flush(&mut self.link).await;
                // Answered once the rules are unloaded, as documented; the loop goes on.
                state.after_enforcement(Box::new(move || {
                    let _ = reply.send(torn_down);
                }));
            }
            Command::RevalidatePolicy { reply } => {
                let torn_down = state.revalidate_policy();
                state.flush(&mut self.link).await;
                state.after_enforcement(Box::new(move || {
                    let _ = reply.send(torn_down);
                }));
            }
            // Handled by the loop, which stops.
            Command::Shutdown { reply } => {
                let _ = reply.send(());
            }
        }
    }
}

/// The outcome of the rule action in flight; never resolves when there is none.
async fn in_flight(slot: &mut Option<Enforcement>) -> Enforced {
    match slot {
        Some(enforcement) => enforcement.await,
        None => std::future::pending().await,
    }
}
