//! [`QosListener`]: `qtoq_accept`, async.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs};
use tokio::sync::Mutex;

use super::{agent_or_default, QosSpec, QosStream, Signaling};
use crate::agent::Setup;
use crate::engine::SessionKey;
use crate::flow::{Flow, Owner, IPPROTO_TCP};
use crate::Agent;

type Setting = BoxFuture<'static, io::Result<(QosStream, SocketAddr)>>;

/// A TCP listener whose accepted connections carry a QoS reservation (the server side of
/// IBM i's `qtoq_accept`).
///
/// With [`Signaling::Rsvp`] (the default) each accepted connection gets an RSVP session with
/// the server as the data sender: the stream is returned at once and its
/// [`events`](QosStream::events) report the client's RESV and the rule load. With
/// [`Signaling::None`] admission control and the rule load happen before `accept` returns.
///
/// A client that does not signal (a plain `TcpStream`, or a host without an RSVP agent)
/// never answers the PATH: after the agent's peer wait
/// ([`AgentBuilder::peer_wait`](crate::agent::AgentBuilder::peer_wait), 3 s by default) its
/// stream's events say [`QosEvent::NoReceiver`](crate::QosEvent::NoReceiver) and its
/// [`reservation`](QosStream::reservation) turns
/// [`Reservation::NoReceiver`](crate::Reservation::NoReceiver) (Winsock GQoS's
/// `WSA_QOS_NO_RECEIVERS`); the connection is served best effort, the PATH keeps being
/// refreshed, and a RESV that comes late still establishes the reservation.
///
/// # Spec and signaling from the policy
///
/// For each accepted connection the agent's [`Policy`](crate::policy::Policy) is looked up
/// ([`Agent::policy_rule`]) with the server as the data sender. Unless the builder was given
/// them explicitly (which always takes precedence):
///
/// * the signaling is [`Signaling::None`] when the matching rule says `signaling = false`
///   (IBM i's "rule marked with no signaling"), [`Signaling::Rsvp`] otherwise;
/// * the spec is the matching rule's
///   ([`PolicyRule::flowspec`](crate::policy::PolicyRule::flowspec)), or
///   [`QosSpec::default`] when no rule matches or the rule has no rate.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use qtoq::{QosListener, QosSpec, Signaling};
/// use tokio::io::AsyncWriteExt;
///
/// let listener = QosListener::builder()
///     .signaling(Signaling::Rsvp)
///     .spec(QosSpec::controlled_load(1_000_000, 65_536))
///     .bind("127.0.0.1:7000")
///     .await?;
/// loop {
///     let (mut stream, peer) = listener.accept().await?;
///     tokio::spawn(async move {
///         let _ = stream.write_all(b"hello").await;
///         let _ = stream.close().await;
///     });
/// }
/// # }
/// ```
pub struct QosListener {
    listener: TcpListener,
    agent: Agent,
    /// Bound without an agent of its own: setups use the process's default agent, a new one
    /// when the one it was bound with has stopped (qosd restarted).
    follows_default: bool,
    /// Explicit signaling; `None` = from the matching policy rule.
    signaling: Option<Signaling>,
    /// Explicit spec; `None` = from the matching policy rule.
    spec: Option<QosSpec>,
    notify: bool,
    /// Connections accepted whose session setup is still under way; kept here so a
    /// cancelled `accept` loses none of them.
    setting_up: Mutex<FuturesUnordered<Setting>>,
}

impl fmt::Debug for QosListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QosListener")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("signaling", &self.signaling)
            .field("spec", &self.spec)
            .field("notify", &self.notify)
            .field("agent", &self.agent)
            .finish()
    }
}

impl QosListener {
    /// Binds a listener on the default agent; each connection's signaling and spec come from
    /// the matching policy rule (see
    /// [the type's docs](QosListener#spec-and-signaling-from-the-policy)).
    ///
    /// # Errors
    ///
    /// As `tokio::net::TcpListener::bind`, or when the default agent cannot start.
    pub async fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<QosListener> {
        QosListener::builder().bind(addr).await
    }

    /// A builder to choose signaling, spec, notification and agent.
    pub fn builder() -> QosListenerBuilder {
        QosListenerBuilder::default()
    }

    /// The local address the listener is bound to.
    ///
    /// # Errors
    ///
    /// As `TcpListener::local_addr`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The agent this listener's connections are signaled by: the one it was bound with. A
    /// listener bound on the default agent (no [`QosListenerBuilder::agent`]) sets up later
    /// connections through the process's new default agent when that one has stopped — e.g.
    /// when qosd, the host's daemon, was restarted.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// Accepts a connection and sets up its reservation.
    ///
    /// With [`Signaling::Rsvp`] this returns as soon as the session exists and the PATH is
    /// on its way. With [`Signaling::None`] it returns once admission control passed and the
    /// rule is loaded; a connection that fails is closed and reported as an error
    /// (`PermissionDenied` with a [`QosError::AdmissionDenied`](crate::QosError) source, or
    /// `Other` with [`QosError::RuleFailed`](crate::QosError)); the listener stays usable and
    /// the next call accepts the next connection.
    ///
    /// # Errors
    ///
    /// TCP accept errors, admission/rule failures as above, `BrokenPipe` if the agent stopped.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: a connection accepted while its setup is under way is kept
    /// by the listener and returned by the next call.
    pub async fn accept(&self) -> io::Result<(QosStream, SocketAddr)> {
        let mut setting_up = self.setting_up.lock().await;
        loop {
            tokio::select! {
                biased;
                Some(ready) = setting_up.next(), if !setting_up.is_empty() => return ready,
                accepted = self.listener.accept() => {
                    let (tcp, peer) = accepted?;
                    setting_up.push(self.set_up(tcp, peer));
                }
            }
        }
    }

    /// Starts the session setup of an accepted connection; the returned future finishes it.
    fn set_up(&self, tcp: TcpStream, peer: SocketAddr) -> Setting {
        let agent = self.agent.clone();
        let follows_default = self.follows_default;
        let spec = self.spec;
        let notify = self.notify;
        let signaling = self.signaling;
        Box::pin(async move {
            let local = tcp.local_addr()?;
            let key = SessionKey {
                destination: peer,
                protocol: IPPROTO_TCP,
            };
            let flow = Flow {
                sender: local,
                receiver: peer,
                protocol: IPPROTO_TCP,
            };
            // The default agent it was bound with has stopped (qosd went away, or it was shut
            // down): the process's default agent now, which finds qosd again once it is back.
            let agent = if follows_default && !agent.is_running() {
                Agent::default_agent()?
            } else {
                agent
            };
            // What the builder left open, the agent's policy decides (qosd's, through qosd).
            let setup = Setup::Accepted {
                key,
                flow,
                signaled: signaling.map(|s| s == Signaling::Rsvp),
                flowspec: spec.map(|spec| spec.flowspec()),
                fallback: QosSpec::default().flowspec(),
            };
            // This process owns the connection (qosd knows it by its socket's credentials).
            let owner = Some(Owner::current());
            match agent.open(setup, peer, notify, tcp.as_fd(), owner).await {
                Ok(session) => {
                    let signaling = if session.signaled {
                        Signaling::Rsvp
                    } else {
                        Signaling::None
                    };
                    Ok((
                        QosStream::from_parts(tcp, session, local, peer, signaling),
                        peer,
                    ))
                }
                Err(e) => {
                    tracing::info!(%peer, error = %e, "connection refused by qos setup, closed");
                    drop(tcp);
                    Err(e)
                }
            }
        })
    }
}

/// Listen backlog when none is given: a QoS server accepts bursts of connections (each
/// accept also waits for a short agent round trip), more than the usual 128.
const DEFAULT_BACKLOG: u32 = 1024;

/// Builds a [`QosListener`]. See [`QosListener::builder`].
#[derive(Debug, Clone, Default)]
pub struct QosListenerBuilder {
    signaling: Option<Signaling>,
    spec: Option<QosSpec>,
    notify: Option<bool>,
    agent: Option<Agent>,
    backlog: Option<u32>,
}

impl QosListenerBuilder {
    /// RSVP signaling or a rule marked with no signaling, for every connection. Without it
    /// the matching policy rule decides (RSVP unless the rule says `signaling = false`).
    pub fn signaling(mut self, signaling: Signaling) -> Self {
        self.signaling = Some(signaling);
        self
    }

    /// The reservation each connection gets. Without it: the matching policy rule's, or
    /// [`QosSpec::default`] when no rule with a rate matches.
    pub fn spec(mut self, spec: QosSpec) -> Self {
        self.spec = Some(spec);
        self
    }

    /// Whether connections' event streams report progress (`true`, default) or stay quiet
    /// except for errors and the end (`false`, like `REQ_SIGNAL_NORET_EVENTS`). `NoReceiver`
    /// is progress: quiet streams do not get it, but
    /// [`QosStream::reservation`] shows it either way.
    pub fn notify(mut self, notify: bool) -> Self {
        self.notify = Some(notify);
        self
    }

    /// The agent to use instead of the process's default one.
    pub fn agent(mut self, agent: &Agent) -> Self {
        self.agent = Some(agent.clone());
        self
    }

    /// The listen backlog (default 1024; the kernel caps it at `net.core.somaxconn`).
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// Binds the listener (trying each address `addr` resolves to, like
    /// `tokio::net::TcpListener::bind`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an explicit spec that can never be a valid flowspec
    /// ([`QosSpec::validate`]); as `tokio::net::TcpListener::bind`, or when the default agent
    /// cannot start.
    pub async fn bind<A: ToSocketAddrs>(self, addr: A) -> io::Result<QosListener> {
        if let Some(spec) = &self.spec {
            spec.validate().map_err(crate::QosError::from)?;
        }
        let agent = agent_or_default(self.agent.as_ref())?;
        let backlog = self.backlog.unwrap_or(DEFAULT_BACKLOG);
        let mut last_error = None;
        let mut bound = None;
        for addr in tokio::net::lookup_host(addr).await? {
            match listen(addr, backlog) {
                Ok(listener) => {
                    bound = Some(listener);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let listener = match (bound, last_error) {
            (Some(listener), _) => listener,
            (None, Some(e)) => return Err(e),
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "could not resolve to any address",
                ))
            }
        };
        Ok(QosListener {
            listener,
            agent,
            follows_default: self.agent.is_none(),
            signaling: self.signaling,
            spec: self.spec,
            notify: self.notify.unwrap_or(true),
            setting_up: Mutex::new(FuturesUnordered::new()),
        })
    }
}

fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As tokio and std do: a restarted server can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
