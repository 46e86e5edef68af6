//! The Tokio driver ("QoS server"): owns a transport, the engine, one timer and the enforcer.
//!
//! An [`Agent`] is a cheap cloneable handle to a running agent. Sockets act on the agent's
//! state directly, as quinn's connections do: `accept` and `connect` open their session, run
//! the engine and load the rule (when the enforcer can without waiting) within their own
//! call, so a same-host setup completes there; the agent task sends datagrams, waits for
//! netlink and runs the timers. The task stops when the last handle (including those held by open
//! [`QosListener`](crate::QosListener)s and [`QosStream`](crate::QosStream)s) is gone, after
//! releasing every session, unloading every rule and shutting the enforcer down.
//!
//! The first `QosListener`/`QosStream` that is not given an agent starts the process's
//! *default agent* ([`Agent::default_agent`]): UDP encapsulation on port 1698 at every local
//! address, the documented default [`Policy`] (admission within each interface's budget) and the
//! [`SocketEnforcer`] (marking and pacing on the sender's socket). Started from a multi-thread
//! runtime it is a task of that runtime (no thread hop per socket operation) and moves to a
//! thread of its own if that runtime shuts down while others still use it; started from
//! anywhere else it runs on a thread of its own.
//!
//! # Files
//!
//! `core.rs` is the state behind the lock and the enforcement queue; `driver.rs` the task's
//! loop; `session.rs` what one session's owner shares with the agent (the event log, the
//! current [`Reservation`], the guard that releases it); `transport.rs` and `memory.rs` the
//! RSVP transports. The agent never names a socket-API type: the socket API
//! ([`QosListener`](crate::QosListener), [`QosStream`](crate::QosStream), [`QosEvents`](crate::QosEvents)) is a thin front end over
//! [`Agent`] and the session state, and a daemon can serve the same agent to other processes.
//!
//! # Policy
//!
//! An agent holds one [`Policy`] (default: [`Policy::default`]). It answers the engine's
//! admission requests, gives listeners the matching rule's spec and signaling (see
//! [`QosListenerBuilder`](crate::net::QosListenerBuilder)), and can be replaced at run time
//! with [`Agent::reload_policy`]: reservations that still fit stay; the others are torn
//! down with a ResvErr (code 2) and an `AdmissionDenied` event on their owner's stream.
//!
//! Rules may match on the local owner of a session (`user`, `program`; see
//! [the policy module](crate::policy#owners)). Sockets given an embedded agent open their
//! sessions as this process ([`Owner::current`](crate::flow::Owner::current)); qosd opens
//! its clients' as the client. The engine keeps no owner: the agent keeps the owner of each
//! data sender's flow it opened (`owners.rs`) and puts it in the engine's admission
//! requests on their way to the policy, or to a custom [`AgentBuilder::admission`].

mod core;
mod driver;
mod memory;
mod owners;
pub mod protocol;
mod remote;
mod session;
pub mod transport;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::runtime::RuntimeFlavor;
use tokio::sync::{mpsc, oneshot};

pub use memory::{MemoryNetwork, MemoryStats};
pub use session::Reservation;
#[cfg(test)]
pub(crate) use session::EVENT_LOG_LIMIT;
use session::{OpenRequest, Opened, PendingOpen};
pub(crate) use session::{SessionGuard, SessionShared, Setup};
#[cfg(feature = "daemon")]
pub(crate) use session::{Tap, Tapped};
pub use transport::{Transport, IPPROTO_RSVP, RSVP_ENCAP_PORT, RSVP_ENCAP_PORT_2};

use crate::enforce::{Enforcer, SocketEnforcer};
use crate::engine::{EngineConfig, SessionId, Stats};
use crate::error::QosError;
use crate::flow::{
    Admission, AdmissionDenied, AdmissionGrant, AdmissionRequest, Flow, Owner, RuleId,
};
use crate::integrity::KeyChain;
use crate::policy::{InterfaceBudget, Policy, PolicyError, PolicyRule};

/// How often an agent re-checks its admitted reservations against the policy's schedules
/// (see [`Agent::revalidate_policy`]).
pub const POLICY_RECHECK_PERIOD: Duration = Duration::from_secs(60);

pub(crate) enum Command {
    Release {
        session: SessionId,
        reply: Option<oneshot::Sender<Result<(), QosError>>>,
    },
    Stats {
        reply: oneshot::Sender<AgentStats>,
    },
    ReloadPolicy {
        policy: Box<Policy>,
        reply: oneshot::Sender<usize>,
    },
    RevalidatePolicy {
        reply: oneshot::Sender<usize>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// The agent's policy, shared by the engine (admission), listeners (lookups) and reloads.
#[derive(Clone)]
pub(crate) struct SharedPolicy(Arc<Mutex<Policy>>);

impl SharedPolicy {
    fn new(policy: Policy) -> Self {
        SharedPolicy(Arc::new(Mutex::new(policy)))
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Policy> {
        // A panic while holding the lock cannot leave the policy half-changed in a way that
        // matters more than stopping admission altogether would.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Admission for SharedPolicy {
    fn admit(&mut self, request: &AdmissionRequest) -> Result<AdmissionGrant, AdmissionDenied> {
        self.lock().admit(request)
    }

    fn release(&mut self, rule: RuleId) {
        self.lock().release(rule);
    }
}

/// What an agent holds and has done, for tests, logs and monitoring.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct AgentStats {
    /// Sessions owned by local connections, as the engine counts them.
    pub engine_owners: usize,
    /// RSVP sessions the engine holds any state for, including state received from peers
    /// that lingers until torn down or expired.
    pub engine_sessions: usize,
    /// Sessions owned by local connections (the agent's registry).
    pub owned_sessions: usize,
    /// Rules the enforcer has loaded and not yet unloaded.
    pub rules_in_force: usize,
    /// Rule changes waiting for the enforcer, including the one it is applying (netlink
    /// requests of the tc backend; the socket backend applies at once): a number that stays
    /// up means a slow or stuck enforcer. Signaling goes on meanwhile.
    pub enforce_queue: usize,
    /// The engine's counters.
    pub engine: Stats,
    /// Datagrams the transport failed to send.
    pub send_errors: u64,
    /// Datagrams the transport dropped before the engine (bad IP headers).
    pub transport_malformed: u64,
    /// Reservations the agent's policy holds as admitted (0 with a custom
    /// [`AgentBuilder::admission`]).
    pub policy_admitted: usize,
    /// Each interface's admission budget: how much may be reserved, how much is booked and
    /// where the number comes from ([`Policy::interface_budgets`]; empty with a custom
    /// [`AgentBuilder::admission`]).
    pub interfaces: Vec<InterfaceBudget>,
    /// INTEGRITY keys (RFC 2747) the engine signs and verifies with: the policy's
    /// `[[integrity]]` tables, or those given with [`AgentBuilder::integrity`]. Only their
    /// number: secrets never leave the agent.
    #[serde(default)]
    pub integrity_keys: usize,
}

struct AgentShared {
    commands: mpsc::UnboundedSender<Command>,
    /// The state sockets act on directly (see [`core`]).
    core: Arc<core::AgentCore>,
    id: u64,
    local_addrs: Vec<IpAddr>,
    bound: Vec<SocketAddr>,
    transport: &'static str,
    policy: SharedPolicy,
}

/// Handle to a running agent. Cheap to clone; the agent stops when the last handle is gone.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use std::time::Duration;
/// use qtoq::{Agent, QosListener};
///
/// let agent = Agent::builder()
///     .local_addr("127.0.0.1".parse().unwrap())
///     .refresh_period(Duration::from_secs(5))
///     .build()?;
/// let listener = QosListener::builder().agent(&agent).bind("127.0.0.1:0").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Agent {
    backend: Backend,
}

/// Where an agent's work is done.
#[derive(Clone)]
enum Backend {
    /// In this process: its own transport, engine, policy and enforcer.
    Embedded(Arc<AgentShared>),
    /// In qosd, the host's daemon, over its local API.
    Daemon(Arc<remote::RemoteAgent>),
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Embedded(shared) => f
                .debug_struct("Agent")
                .field("id", &shared.id)
                .field("transport", &shared.transport)
                .field("bound", &shared.bound)
                .finish_non_exhaustive(),
            Backend::Daemon(remote) => f.debug_struct("Agent").field("qosd", remote).finish(),
        }
    }
}

static NEXT_AGENT_ID: AtomicU64 = AtomicU64::new(1);

/// The process's default agent, held weakly so it stops when its last user is gone.
enum DefaultAgent {
    None,
    Embedded(Weak<AgentShared>),
    Daemon(Weak<remote::RemoteAgent>),
}

static DEFAULT_AGENT: Mutex<DefaultAgent> = Mutex::new(DefaultAgent::None);

impl Agent {
    /// A builder for an agent with its own transport, addresses, admission and enforcer.
    pub fn builder() -> AgentBuilder {
        AgentBuilder::new()
    }

    /// The process's default agent, started on first use: UDP encapsulation on port 1698 at
    /// every local address (an ephemeral port where 1698 is taken), the default [`Policy`]
    /// and the [`SocketEnforcer`]. It stops when the last handle is gone; the next call starts
    /// a new one. One process has one default agent at a time, whatever runtimes use it.
    ///
    /// Called from a multi-thread Tokio runtime (`#[tokio::main]`), the agent is a task of that
    /// runtime, so a setup costs task wake-ups rather than wake-ups of another thread; should
    /// that runtime shut down while handles remain (connections of another runtime), the agent
    /// moves, with its sockets and sessions, to a thread of its own and goes on. Called from a
    /// current-thread runtime or outside any, it runs on a thread of its own, where a blocked
    /// caller cannot stall it.
    ///
    /// The default policy admits valid requests within the budget of the interface each
    /// flow uses: 75 % ([`DEFAULT_RESERVABLE_SHARE`](crate::policy::DEFAULT_RESERVABLE_SHARE))
    /// of the link speed its driver reports, unlimited on loopback and on links that report
    /// none; at most [`DEFAULT_MAX_FLOW_RATE`](crate::policy::DEFAULT_MAX_FLOW_RATE) per
    /// reservation and [`DEFAULT_HOST_MAX_FLOWS`](crate::policy::DEFAULT_HOST_MAX_FLOWS)
    /// reservations (see the [`policy`](crate::policy#without-a-file) module).
    /// [`Agent::stats`] lists each interface's budget
    /// ([`AgentStats::interfaces`]).
    ///
    /// # Errors
    ///
    /// When no local address can be found or bound.
    pub fn default_agent() -> io::Result<Agent> {
        let mut slot = DEFAULT_AGENT.lock().unwrap_or_else(|e| e.into_inner());
        let alive = match &*slot {
            DefaultAgent::Embedded(weak) => weak.upgrade().map(Backend::Embedded),
            DefaultAgent::Daemon(weak) => weak.upgrade().map(Backend::Daemon),
            DefaultAgent::None => None,
        };
        if let Some(backend) = alive {
            let agent = Agent { backend };
            if agent.is_running() {
                return Ok(agent);
            }
        }
        let agent = match Agent::default_daemon() {
            Some(agent) => agent,
            None => Agent::default_embedded()?,
        };
        *slot = match &agent.backend {
            Backend::Embedded(shared) => DefaultAgent::Embedded(Arc::downgrade(shared)),
            Backend::Daemon(remote) => DefaultAgent::Daemon(Arc::downgrade(remote)),
        };
        Ok(agent)
    }

    /// qosd, when its socket ([`protocol::socket_path`]) exists and it answers; `None` (and
    /// why, logged) otherwise.
    fn default_daemon() -> Option<Agent> {
        let path = protocol::socket_path();
        if !path.exists() {
            tracing::info!(socket = %path.display(), "qtoq: no qosd socket; using an embedded agent");
            return None;
        }
        match Agent::daemon_blocking(&path) {
            Ok(agent) => Some(agent),
            Err(e) => {
                tracing::warn!(socket = %path.display(), error = %e,
                    "qtoq: qosd's socket exists but qosd does not answer; using an embedded agent");
                None
            }
        }
    }

    fn default_embedded() -> io::Result<Agent> {
        let mut builder = AgentBuilder::new();
        builder.default_agent = true;
        // On a multi-thread runtime the agent is one more task there: answering a socket
        // costs a task wake-up, not a wake-up of another thread (measured: the default path
        // took ~4x a plain TCP setup through an agent thread). A current-thread runtime
        // would stall the agent whenever its one thread blocks: those get a thread.
        let agent = match tokio::runtime::Handle::try_current() {
            Ok(runtime) if runtime.runtime_flavor() == RuntimeFlavor::MultiThread => {
                let (agent, driver) = builder.prepare()?;
                runtime.spawn(driver.run());
                agent
            }
            _ => builder.build_on_thread()?,
        };
        tracing::info!(?agent, "qtoq: embedded agent started");
        Ok(agent)
    }

    /// An agent that is qosd, the host's QoS daemon, listening at `path` (its `--socket`;
    /// applications usually let the default agent find it, see
    /// [`protocol::socket_path`]). Sockets given this agent behave as with an embedded one;
    /// qosd signals, admits within the host's one budget and loads the rules, and releases
    /// this process's sessions when it exits. The connection's reader runs on the current
    /// runtime.
    ///
    /// # Errors
    ///
    /// When nothing listens at `path`, it does not answer within 2 s, or it speaks another
    /// protocol version; outside a Tokio runtime.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let agent = qtoq::Agent::daemon("/run/qtoq/qosd.sock").await?;
    /// let listener = qtoq::QosListener::builder().agent(&agent).bind("0.0.0.0:5000").await?;
    /// # Ok(()) }
    /// ```
    pub async fn daemon(path: impl AsRef<std::path::Path>) -> io::Result<Agent> {
        let path = path.as_ref();
        let (stream, welcome) = remote::connect(path).await?;
        let id = NEXT_AGENT_ID.fetch_add(1, Ordering::Relaxed);
        Ok(Agent {
            backend: Backend::Daemon(remote::RemoteAgent::start(
                id,
                path.to_owned(),
                stream,
                welcome,
            )),
        })
    }

    /// As [`daemon`](Self::daemon), from synchronous code (the default agent): the reader
    /// runs on the current multi-thread runtime, else on a thread of its own.
    fn daemon_blocking(path: &std::path::Path) -> io::Result<Agent> {
        let (stream, welcome) = remote::connect_blocking(path)?;
        let id = NEXT_AGENT_ID.fetch_add(1, Ordering::Relaxed);
        let path = path.to_owned();
        let start = move || -> io::Result<Agent> {
            let stream = tokio::net::UnixStream::from_std(stream)?;
            Ok(Agent {
                backend: Backend::Daemon(remote::RemoteAgent::start(id, path, stream, welcome)),
            })
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) if runtime.runtime_flavor() == RuntimeFlavor::MultiThread => start(),
            _ => {
                let (ready_tx, ready_rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name("qtoq-qosd".into())
                    .spawn(move || {
                        let runtime = match agent_runtime() {
                            Ok(runtime) => runtime,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return;
                            }
                        };
                        runtime.block_on(async move {
                            let agent = start();
                            let running = agent.as_ref().ok().and_then(|a| match &a.backend {
                                Backend::Daemon(remote) => Some(Arc::downgrade(remote)),
                                Backend::Embedded(_) => None,
                            });
                            let _ = ready_tx.send(agent);
                            // The reader is a task of this runtime: keep it until the
                            // connection is over.
                            while running
                                .as_ref()
                                .and_then(std::sync::Weak::upgrade)
                                .is_some_and(|remote| remote.is_running())
                            {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        });
                    })?;
                ready_rx
                    .recv()
                    .map_err(|_| io::Error::other("the qosd connection thread failed to start"))?
            }
        }
    }

    /// The RSVP transport's name: `udp`, `raw` or `memory` (qosd's, through qosd).
    pub fn transport(&self) -> &str {
        match &self.backend {
            Backend::Embedded(shared) => shared.transport,
            Backend::Daemon(remote) => &remote.transport,
        }
    }

    /// Whether this agent is qosd (the host's daemon) rather than one in this process.
    pub fn uses_daemon(&self) -> bool {
        matches!(self.backend, Backend::Daemon(_))
    }

    /// The addresses this agent treats as its own (same-host delivery).
    pub fn local_addrs(&self) -> &[IpAddr] {
        match &self.backend {
            Backend::Embedded(shared) => &shared.local_addrs,
            Backend::Daemon(remote) => &remote.local_addrs,
        }
    }

    /// The socket addresses the transport is bound to (UDP: address and port; raw: address
    /// with port 0; in-memory: none).
    pub fn bound_addrs(&self) -> &[SocketAddr] {
        match &self.backend {
            Backend::Embedded(shared) => &shared.bound,
            Backend::Daemon(remote) => &remote.bound,
        }
    }

    /// Whether the agent task is still running (for qosd: whether the connection to it is
    /// up).
    pub fn is_running(&self) -> bool {
        match &self.backend {
            Backend::Embedded(shared) => !shared.commands.is_closed(),
            Backend::Daemon(remote) => remote.is_running(),
        }
    }

    /// What the agent holds and has done.
    ///
    /// # Errors
    ///
    /// `BrokenPipe` if the agent has stopped.
    pub async fn stats(&self) -> io::Result<AgentStats> {
        if let Backend::Daemon(remote) = &self.backend {
            return Ok(remote.stats().await?);
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Stats { reply })?;
        answer.await.map_err(|_| QosError::AgentStopped.into())
    }

    /// Number of sessions the agent holds for connections (the engine's owners and the
    /// agent's registry, whichever is larger): zero once every connection is closed and torn
    /// down.
    ///
    /// # Errors
    ///
    /// `BrokenPipe` if the agent has stopped.
    pub async fn session_count(&self) -> io::Result<usize> {
        let stats = self.stats().await?;
        Ok(stats.engine_owners.max(stats.owned_sessions))
    }

    /// Replaces the agent's policy at run time. Reservations admitted under the old policy
    /// are re-admitted under the new one, oldest first; those that no longer fit are torn
    /// down: their rule is unloaded, a ResvErr (code 2, policy control failure) goes to the
    /// receiver, and the owner's [`QosEvents`](crate::QosEvents) report
    /// [`QosEvent::AdmissionDenied`](crate::QosEvent::AdmissionDenied) then the error.
    /// Returns how many were torn down.
    ///
    /// New connections see the new policy at once (listener lookups and admission). With a
    /// custom [`AgentBuilder::admission`] the policy only serves lookups and nothing is torn
    /// down.
    ///
    /// The engine signs and verifies with the new policy's `[[integrity]]` keys from then
    /// on ([`Engine::set_keys`](crate::engine::Engine::set_keys)), unless the agent was
    /// given its keys with [`AgentBuilder::integrity`], which stay.
    ///
    /// # Errors
    ///
    /// `BrokenPipe` if the agent has stopped.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(agent: qtoq::Agent) -> Result<(), Box<dyn std::error::Error>> {
    /// let policy = qtoq::policy::Policy::load("/etc/qtoq/policy.toml")?;
    /// let torn_down = agent.reload_policy(policy).await?;
    /// println!("{torn_down} reservations no longer fit");
    /// # Ok(()) }
    /// ```
    pub async fn reload_policy(&self, policy: Policy) -> io::Result<usize> {
        self.embedded_only("reload_policy")?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::ReloadPolicy {
            policy: Box::new(policy),
            reply,
        })?;
        answer.await.map_err(|_| QosError::AgentStopped.into())
    }

    /// Re-checks every admitted reservation against the policy at the policy's current time
    /// and tears down, as [`reload_policy`](Self::reload_policy) does, those whose rule's
    /// schedule has closed. The agent also does this by itself every
    /// [`POLICY_RECHECK_PERIOD`]. Returns how many were torn down.
    ///
    /// # Errors
    ///
    /// `BrokenPipe` if the agent has stopped.
    pub async fn revalidate_policy(&self) -> io::Result<usize> {
        self.embedded_only("revalidate_policy")?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::RevalidatePolicy { reply })?;
        answer.await.map_err(|_| QosError::AgentStopped.into())
    }

    /// Stops the agent now, even while connections are open: every session is torn down
    /// (PathTear/ResvTear), every rule unloaded and the enforcer shut down (the tc backend
    /// restores the interfaces' previous root qdisc). Returns once that is done, and once the
    /// teardowns sent to refresh-reduction-capable neighbors are acknowledged (they are
    /// retransmitted meanwhile; at most 2 s more when a neighbor does not answer). Open streams
    /// keep their TCP connection; their events end, and later QoS operations report
    /// `BrokenPipe`. Without this call an agent stops when its last handle is gone.
    ///
    /// # Errors
    ///
    /// `BrokenPipe` if the agent had already stopped.
    pub async fn shutdown(&self) -> io::Result<()> {
        if let Backend::Daemon(remote) = &self.backend {
            // This process's part: qosd releases every session of the connection.
            remote.close();
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        self.send(Command::Shutdown { reply })?;
        answer.await.map_err(|_| QosError::AgentStopped.into())
    }

    /// The policy rule that applies now to `flow` owned locally by `owner` (`None`: no
    /// known owner; [`Owner::current`] for this process's own connections), if any (see
    /// [`Policy::lookup`]). With qosd the policy is qosd's: `None` here (qosd applies its
    /// rules on open).
    pub fn policy_rule(&self, flow: &Flow, owner: Option<&Owner>) -> Option<PolicyRule> {
        let Backend::Embedded(shared) = &self.backend else {
            return None;
        };
        let policy = shared.policy.lock();
        let now = policy.now();
        policy.lookup(flow, owner, now).cloned()
    }

    /// An error for operations only an embedded agent has.
    fn embedded_only(&self, operation: &str) -> io::Result<()> {
        match &self.backend {
            Backend::Embedded(_) => Ok(()),
            Backend::Daemon(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "Agent::{operation}: qosd owns the policy; reload its policy file with \
                     `qosctl policy reload` (or SIGHUP to qosd)"
                ),
            )),
        }
    }

    fn send(&self, command: Command) -> Result<(), QosError> {
        match &self.backend {
            Backend::Embedded(shared) => shared
                .commands
                .send(command)
                .map_err(|_| QosError::AgentStopped),
            Backend::Daemon(_) => Err(QosError::Daemon(
                "this operation is not part of qosd's local api".into(),
            )),
        }
    }

    /// Opens a session for the connection whose socket is `socket`; the returned guard
    /// releases it when dropped. An embedded agent sets the session up within this call as
    /// far as it can without waiting (see [`core`]) and keeps a duplicate of a
    /// data sender's socket for its enforcer; qosd gets the socket itself.
    ///
    /// `owner` is the local process the session belongs to (`None`: unknown), which policy
    /// rules may match on (`user`, `program`): an application's own connections are its
    /// own ([`Owner::current`]), qosd's sessions its client's. qosd ignores it: it knows
    /// its clients by their socket's credentials.
    pub(crate) async fn open(
        &self,
        setup: Setup,
        peer: SocketAddr,
        notify: bool,
        socket: BorrowedFd<'_>,
        owner: Option<Owner>,
    ) -> io::Result<SessionGuard> {
        let shared = match &self.backend {
            Backend::Embedded(shared) => shared,
            Backend::Daemon(remote) => {
                let (id, shared, signaled) = remote.open(setup, notify, socket).await?;
                return Ok(SessionGuard {
                    agent: self.clone(),
                    id,
                    shared,
                    signaled,
                    released: false,
                });
            }
        };
        // Enforcers act on the data sender's socket: the server's.
        let socket = match setup {
            Setup::Receiver { .. } => None,
            _ => Some(socket.try_clone_to_owned()?),
        };
        let (reply, answer) = oneshot::channel();
        // If this future is dropped while waiting for the lock nothing happened; once
        // `answer` exists, `PendingOpen` releases a session nobody read.
        let mut pending = PendingOpen {
            agent: self.clone(),
            answer,
        };
        let request = OpenRequest {
            setup,
            peer,
            notify,
            socket,
            owner,
            reply,
        };
        shared.core.act(|core| core.open(request)).await;
        let opened = (&mut pending.answer)
            .await
            .map_err(|_| QosError::AgentStopped)??;
        Ok(SessionGuard {
            agent: self.clone(),
            id: opened.id,
            shared: opened.shared,
            signaled: opened.signaled,
            released: false,
        })
    }

    /// Releases `session` and waits until it is torn down and its rule unloaded.
    pub(crate) async fn release(&self, session: SessionId) -> Result<(), QosError> {
        self.begin_release(session).await.await
    }

    /// Releases `session`: returns once the release is under way — ahead of anything this
    /// agent is asked afterwards (an embedded agent: done with the session's state), with
    /// what resolves when it is torn down and its rule unloaded. qosd serves a client's
    /// requests in order this way while their rules come off in the background.
    pub(crate) async fn begin_release(
        &self,
        session: SessionId,
    ) -> futures::future::BoxFuture<'static, Result<(), QosError>> {
        match &self.backend {
            Backend::Embedded(shared) => {
                let (reply, answer) = oneshot::channel();
                shared
                    .core
                    .act(|core| core.release_by_owner(session, Some(reply)))
                    .await;
                Box::pin(async move { answer.await.map_err(|_| QosError::AgentStopped)? })
            }
            Backend::Daemon(remote) => {
                let remote = remote.clone();
                Box::pin(async move { remote.release(session).await })
            }
        }
    }

    /// Releases `session` without waiting: at once when the state is free, through the task
    /// otherwise. Safe in `Drop`. A stopped agent has already released everything.
    fn release_soon(&self, session: SessionId) {
        let shared = match &self.backend {
            Backend::Embedded(shared) => shared,
            Backend::Daemon(remote) => return remote.release_soon(session),
        };
        let released = shared
            .core
            .try_act(|core| core.release_by_owner(session, None));
        if released.is_none() {
            let _ = self.send(Command::Release {
                session,
                reply: None,
            });
        }
    }

    /// A short name of the agent for logs: its id and where it runs.
    pub(crate) fn log_name(&self) -> String {
        match &self.backend {
            Backend::Embedded(shared) => format!("agent {}", shared.id),
            Backend::Daemon(remote) => format!("qosd (agent {})", remote.id),
        }
    }
}

/// The runtime of an agent on a thread of its own: one thread, the agent its only task.
fn agent_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Configures and starts an [`Agent`]. See [`Agent::builder`].
pub struct AgentBuilder {
    transport: Transport,
    local_addrs: Vec<IpAddr>,
    engine: EngineConfig,
    admission: Option<Box<dyn Admission>>,
    policy: Option<Policy>,
    /// Keys given with [`AgentBuilder::integrity`]: they win over the policy's.
    integrity: Option<KeyChain>,
    enforcer: Option<Box<dyn Enforcer>>,
    /// The process's default agent: skips addresses that cannot be bound, falls back to an
    /// ephemeral port, and moves to a thread of its own if its runtime stops.
    default_agent: bool,
}

impl fmt::Debug for AgentBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentBuilder")
            .field("transport", &self.transport)
            .field("local_addrs", &self.local_addrs)
            .field("engine", &self.engine)
            .field("custom_admission", &self.admission.is_some())
            .field("policy", &self.policy.as_ref().map(|p| p.origin()))
            .field("integrity", &self.integrity)
            .field("enforcer", &self.enforcer)
            .field("default_agent", &self.default_agent)
            .finish()
    }
}

impl Default for AgentBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentBuilder {
    /// UDP on port 1698, every local address, RFC 2205 timer defaults, the default
    /// [`Policy`], the [`SocketEnforcer`].
    pub fn new() -> Self {
        AgentBuilder {
            transport: Transport::udp(),
            local_addrs: Vec::new(),
            engine: EngineConfig::default(),
            admission: None,
            policy: None,
            integrity: None,
            enforcer: None,
            default_agent: false,
        }
    }

    /// The transport for RSVP messages (default [`Transport::udp`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Adds an address the agent binds and answers for; without any, every address of the
    /// host's interfaces is used. Give distinct loopback addresses (`127.0.0.2`,
    /// `127.0.0.3`, …) to run several agents on one host.
    pub fn local_addr(mut self, addr: IpAddr) -> Self {
        if !self.local_addrs.contains(&addr) {
            self.local_addrs.push(addr);
        }
        self
    }

    /// The refresh period `R` announced and used (default 30 s).
    pub fn refresh_period(mut self, period: Duration) -> Self {
        self.engine.refresh_period = period;
        self
    }

    /// How long a connection waits for its peer's first RSVP message before it is told that
    /// the peer does not signal: a server's [`QosEvent::NoReceiver`](crate::QosEvent) when no
    /// RESV answered its PATH, a client's [`QosEvent::NoSender`](crate::QosEvent) when no
    /// PATH came, and [`Reservation::NoReceiver`](crate::Reservation) /
    /// [`Reservation::NoSender`](crate::Reservation) (Winsock GQoS's `WSA_QOS_NO_RECEIVERS` /
    /// `WSA_QOS_NO_SENDERS`). The connection carries on best effort and a late peer still
    /// establishes.
    ///
    /// Default [`DEFAULT_PEER_WAIT`](crate::engine::DEFAULT_PEER_WAIT), 3 s (longer than the
    /// fast retransmissions of a lost first message take to repair it); `None` never tells.
    /// A wait shorter than the peer needs to answer reports it absent before it answers.
    pub fn peer_wait(mut self, wait: impl Into<Option<Duration>>) -> Self {
        self.engine.peer_wait = wait.into();
        self
    }

    /// Seed of the engine's refresh-jitter RNG.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.engine.rng_seed = seed;
        self
    }

    /// The whole engine configuration; its `local_addrs` are replaced by the agent's. Keys in
    /// its [`integrity`](EngineConfig::integrity), when there are any, count as given with
    /// [`AgentBuilder::integrity`] (unless that is called too: then its keys are used).
    pub fn engine_config(mut self, config: EngineConfig) -> Self {
        self.engine = config;
        self
    }

    /// The policy: admission control, listener defaults and the interfaces the tc enforcer
    /// shapes (default [`Policy::default`]: admits valid requests within each interface's
    /// budget).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Loads the policy from a TOML file (see `examples/policy.toml`).
    ///
    /// # Errors
    ///
    /// The policy's own error, naming the file, line and column; nothing is applied.
    pub fn policy_file(self, path: impl AsRef<std::path::Path>) -> Result<Self, PolicyError> {
        let policy = Policy::load(path)?;
        Ok(self.policy(policy))
    }

    /// The RFC 2747 INTEGRITY keys the agent signs and verifies with, instead of the
    /// policy's `[[integrity]]` tables.
    ///
    /// Without it the keys come from the policy ([`Policy::integrity`]; none with the
    /// default policy), and [`Agent::reload_policy`] replaces them with the reloaded
    /// policy's. Keys given here (or in [`engine_config`](Self::engine_config)'s
    /// `integrity`, when not empty) take precedence for the agent's whole life: the policy's
    /// keys are ignored, at build and at every reload, with a warning when it has some.
    /// An empty chain given here pins "no keys" the same way.
    pub fn integrity(mut self, keys: KeyChain) -> Self {
        self.integrity = Some(keys);
        self
    }

    /// Admission control asked before any rule is loaded, instead of the policy's (tests,
    /// or an external policy server). The policy still answers listener lookups.
    pub fn admission(mut self, admission: Box<dyn Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// The backend that loads rules (default: [`SocketEnforcer`]). For the tc backend build
    /// it with [`EnforcerKind::build`](crate::enforce::EnforcerKind::build) from the
    /// policy's interfaces, in the network namespace the agent serves.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use qtoq::enforce::EnforcerKind;
    /// use qtoq::policy::Policy;
    ///
    /// let policy = Policy::load("policy.toml")?;
    /// let enforcer = EnforcerKind::Tc.build(policy.interfaces()).await?;
    /// let agent = qtoq::Agent::builder().policy(policy).enforcer(enforcer).build()?;
    /// # Ok(()) }
    /// ```
    pub fn enforcer(mut self, enforcer: Box<dyn Enforcer>) -> Self {
        self.enforcer = Some(enforcer);
        self
    }

    /// Starts the agent as a task on the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// When called outside a Tokio runtime, when no local address is known, or when the
    /// transport cannot be opened (address in use, no `CAP_NET_RAW` for [`Transport::Raw`]).
    pub fn build(self) -> io::Result<Agent> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            io::Error::other("AgentBuilder::build must be called from within a tokio runtime")
        })?;
        let (agent, driver) = self.prepare()?;
        runtime.spawn(driver.run());
        Ok(agent)
    }

    /// Starts the agent on a thread of its own with a single-threaded runtime.
    fn build_on_thread(self) -> io::Result<Agent> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("qtoq-agent".into())
            .spawn(move || {
                let runtime = match agent_runtime() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match self.prepare() {
                        Ok((agent, driver)) => {
                            let _ = ready_tx.send(Ok(agent));
                            driver.run().await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("the qos agent thread failed to start"))?
    }

    fn prepare(mut self) -> io::Result<(Agent, driver::Driver)> {
        let locals = if self.local_addrs.is_empty() {
            if matches!(self.transport, Transport::Memory(_)) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "an agent on a memory network needs its addresses: use AgentBuilder::local_addr",
                ));
            }
            crate::sys::local_addresses()?
        } else {
            self.local_addrs.clone()
        };
        let link = transport::Link::open(&self.transport, &locals, self.default_agent)?;
        let policy = self.policy.take().unwrap_or_default();
        // The keys: given explicitly (pinned for the agent's life), else the policy's.
        let given = self.integrity.take().or_else(|| {
            (!self.engine.integrity.is_empty()).then(|| std::mem::take(&mut self.engine.integrity))
        });
        let keys_pinned = given.is_some();
        self.engine.integrity = match given {
            Some(keys) => {
                if !policy.integrity().is_empty() {
                    tracing::warn!(
                        policy = policy.origin().unwrap_or("(inline)"),
                        ignored = policy.integrity().keys().len(),
                        "the policy's integrity keys are ignored: the agent was given its keys"
                    );
                }
                keys
            }
            None => policy.integrity().clone(),
        };
        let policy = SharedPolicy::new(policy);
        let shared_policy = policy.clone();
        let id = NEXT_AGENT_ID.fetch_add(1, Ordering::Relaxed);
        self.engine.local_addrs = locals.clone();
        let (commands, rx) = mpsc::unbounded_channel();
        let bound = link.bound();
        let (driver, core) = driver::Driver::new(driver::DriverParts {
            id,
            transport: self.transport.name(),
            engine: self.engine,
            custom_admission: self.admission.is_some(),
            admission: self.admission.unwrap_or_else(|| Box::new(policy.clone())),
            policy: policy.clone(),
            keys_pinned,
            enforcer: self
                .enforcer
                .unwrap_or_else(|| Box::new(SocketEnforcer::new())),
            link,
            local_addrs: locals.clone(),
            commands: rx,
            relocatable: self.default_agent,
        });
        let shared = Arc::new(AgentShared {
            commands,
            core,
            id,
            local_addrs: locals.clone(),
            bound,
            transport: self.transport.name(),
            policy: shared_policy,
        });
        Ok((
            Agent {
                backend: Backend::Embedded(shared),
            },
            driver,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::{Agent, Backend, MemoryNetwork, Transport};
    use crate::engine::EngineConfig;
    use crate::integrity::{Algorithm, Key, KeyChain, KeyId, Secret};
    use crate::policy::{Policy, StaticProbe};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn policy(tables: &str) -> Policy {
        Policy::from_toml_str(tables, "keys.toml")
            .expect("valid policy")
            .with_interface_probe(StaticProbe::new())
    }

    fn one_key(peer: &str, id: u64, secret: &str) -> String {
        format!(
            "[[integrity]]\npeer = \"{peer}\"\nkey_id = {id}\nalgorithm = \"hmac-sha256\"\n\
             secret = \"{secret}\"\n"
        )
    }

    fn chain(id: u64, secret: &[u8]) -> KeyChain {
        KeyChain::new(vec![Key {
            peer: "10.9.0.0/16".parse().unwrap(),
            key_id: KeyId::new(id).unwrap(),
            algorithm: Algorithm::HmacMd5,
            secret: Secret::new(secret).unwrap(),
        }])
        .unwrap()
    }

    fn builder() -> super::AgentBuilder {
        Agent::builder()
            .transport(Transport::Memory(MemoryNetwork::new(11)))
            .local_addr(LOCALHOST)
    }

    /// The chain the agent's engine runs with, read under the agent's lock.
    async fn engine_keys(agent: &Agent) -> KeyChain {
        let Backend::Embedded(shared) = &agent.backend else {
            unreachable!("an embedded agent");
        };
        shared.core.lock().await.engine().config().integrity.clone()
    }

    #[tokio::test]
    async fn the_policys_keys_reach_the_engine_and_a_reload_replaces_them() {
        let first = policy(&one_key("10.77.0.2", 1, "first secret"));
        let first_keys = first.integrity().clone();
        assert_eq!(first_keys.keys().len(), 1);
        let agent = builder().policy(first).build().unwrap();
        assert_eq!(engine_keys(&agent).await, first_keys);
        assert_eq!(agent.stats().await.unwrap().integrity_keys, 1);

        // A rollover: the old key and a new one (which now sends), another secret.
        let second = policy(&format!(
            "{}{}",
            one_key("10.77.0.2", 1, "first secret"),
            one_key("10.77.0.0/24", 2, "second secret")
        ));
        let second_keys = second.integrity().clone();
        agent.reload_policy(second).await.unwrap();
        assert_eq!(engine_keys(&agent).await, second_keys);
        assert_eq!(agent.stats().await.unwrap().integrity_keys, 2);

        // Same identifier, another secret: still a different chain, and it is taken.
        let third = policy(&one_key("10.77.0.2", 1, "rotated secret"));
        let third_keys = third.integrity().clone();
        assert_ne!(third_keys, first_keys);
        agent.reload_policy(third).await.unwrap();
        assert_eq!(engine_keys(&agent).await, third_keys);

        // A policy without [[integrity]] removes them.
        agent.reload_policy(policy("")).await.unwrap();
        assert!(engine_keys(&agent).await.is_empty());
        assert_eq!(agent.stats().await.unwrap().integrity_keys, 0);
        agent.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn keys_given_to_the_builder_win_over_the_policys_and_survive_reloads() {
        let given = chain(7, b"given");
        let agent = builder()
            .policy(policy(&one_key("10.77.0.2", 1, "policy secret")))
            .integrity(given.clone())
            .build()
            .unwrap();
        assert_eq!(engine_keys(&agent).await, given);
        agent
            .reload_policy(policy(&one_key("10.77.0.3", 3, "other")))
            .await
            .unwrap();
        assert_eq!(engine_keys(&agent).await, given);
        agent.shutdown().await.unwrap();

        // Keys in the engine configuration count as given too.
        let config = EngineConfig {
            integrity: chain(8, b"configured"),
            ..EngineConfig::default()
        };
        let agent = builder()
            .engine_config(config)
            .policy(policy(&one_key("10.77.0.2", 1, "policy secret")))
            .build()
            .unwrap();
        assert_eq!(engine_keys(&agent).await, chain(8, b"configured"));
        agent.reload_policy(policy("")).await.unwrap();
        assert_eq!(engine_keys(&agent).await, chain(8, b"configured"));
        agent.shutdown().await.unwrap();

        // An explicitly empty chain pins "no keys".
        let agent = builder()
            .policy(policy(&one_key("10.77.0.2", 1, "policy secret")))
            .integrity(KeyChain::default())
            .build()
            .unwrap();
        assert!(engine_keys(&agent).await.is_empty());
        agent.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn without_a_policy_or_keys_nothing_is_signed() {
        let agent = builder().build().unwrap();
        assert!(engine_keys(&agent).await.is_empty());
        agent.shutdown().await.unwrap();
    }
}
