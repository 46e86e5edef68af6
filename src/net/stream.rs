//! [`QosStream`]: `qtoq_connect`, the connection with its reservation, and `qtoq_close`.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, ToSocketAddrs};

use super::{agent_or_default, QosEvents, QosSpec, Signaling};
use crate::agent::Reservation;
use crate::agent::{SessionGuard, Setup};
use crate::engine::{SessionId, SessionKey};
use crate::error::QosError;
use crate::flow::{Owner, IPPROTO_TCP};
use crate::Agent;

/// A TCP connection with a QoS reservation: a plain `AsyncRead + AsyncWrite` byte stream
/// (bytes pass straight through to the `TcpStream`) plus the reservation's
/// [`events`](Self::events).
///
/// Returned by [`QosListener::accept`](crate::QosListener::accept) (server, data sender) and
/// [`QosStream::connect`] (client, data receiver). [`close`](Self::close) tears the
/// reservation down, unloads the rule, deletes the session and then closes the socket;
/// dropping the stream does the same in the background.
///
/// # A peer without QoS
///
/// When the other end does not signal — a plain TCP peer, or a host without an RSVP agent —
/// no PATH (client) or RESV (server) ever comes. After the agent's peer wait
/// ([`AgentBuilder::peer_wait`](crate::agent::AgentBuilder::peer_wait), 3 s by default) the
/// events say [`QosEvent::NoSender`](crate::QosEvent::NoSender) /
/// [`QosEvent::NoReceiver`](crate::QosEvent::NoReceiver) and [`reservation`](Self::reservation)
/// turns [`Reservation::NoSender`] / [`Reservation::NoReceiver`], as Winsock GQoS's
/// `WSA_QOS_NO_SENDERS` / `WSA_QOS_NO_RECEIVERS` did. The bytes flow best effort all the
/// same, and a peer that signals late still establishes the reservation.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use futures::StreamExt;
/// use qtoq::{QosEvent, QosSpec, QosStream};
/// use tokio::io::AsyncReadExt;
///
/// let mut stream = QosStream::connect("127.0.0.1:7000", QosSpec::controlled_load(1_000_000, 65_536)).await?;
/// let mut events = stream.events();
/// let mut buf = [0; 4096];
/// let n = stream.read(&mut buf).await?;
/// while let Some(event) = events.next().await {
///     if matches!(event, QosEvent::Established { .. }) { break; }
/// }
/// stream.close().await?;
/// # Ok(()) }
/// ```
#[pin_project]
pub struct QosStream {
    #[pin]
    tcp: TcpStream,
    session: SessionGuard,
    local: SocketAddr,
    peer: SocketAddr,
    signaling: Signaling,
}

impl fmt::Debug for QosStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QosStream")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .field("session", &self.session.id)
            .field("signaling", &self.signaling)
            .field("reservation", &self.session.shared.reservation())
            .finish()
    }
}

impl QosStream {
    /// Connects to `addr` with an RSVP-signaled reservation of `spec` (this side is the data
    /// receiver: it answers the server's PATH with a RESV and asks for confirmation). Uses the
    /// default agent.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a spec that can never be a valid flowspec ([`QosSpec::validate`]);
    /// otherwise as `TcpStream::connect`; `BrokenPipe` if the agent stopped.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes (in `select!`, or under a `timeout`) leaves
    /// nothing behind: no TCP connection, and no session (one already opened is released).
    /// Nothing carries over to the next call, which starts over.
    pub async fn connect<A: ToSocketAddrs>(addr: A, spec: QosSpec) -> io::Result<QosStream> {
        QosStream::builder().spec(spec).connect(addr).await
    }

    /// A builder to choose spec, signaling, notification, agent and local address.
    pub fn builder() -> QosStreamBuilder {
        QosStreamBuilder::default()
    }

    pub(crate) fn from_parts(
        tcp: TcpStream,
        session: SessionGuard,
        local: SocketAddr,
        peer: SocketAddr,
        signaling: Signaling,
    ) -> QosStream {
        QosStream {
            tcp,
            session,
            local,
            peer,
            signaling,
        }
    }

    /// The local address of the connection.
    ///
    /// # Errors
    ///
    /// Never today; `io::Result` for symmetry with `TcpStream::local_addr`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    /// The peer's address.
    ///
    /// # Errors
    ///
    /// Never today; `io::Result` for symmetry with `TcpStream::peer_addr`.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }

    /// The QoS session id the agent assigned to this connection.
    pub fn session_id(&self) -> SessionId {
        self.session.id
    }

    /// How this connection's reservation is signaled.
    pub fn signaling(&self) -> Signaling {
        self.signaling
    }

    /// The connection's event stream. Every call returns a stream that starts at the
    /// connection's first event, so nothing is missed by asking late.
    pub fn events(&self) -> QosEvents {
        QosEvents::new(self.session.shared.clone())
    }

    /// The reservation's current state.
    pub fn reservation(&self) -> Reservation {
        self.session.shared.reservation()
    }

    /// The agent that signals this connection.
    pub fn agent(&self) -> &Agent {
        self.session.agent()
    }

    /// The underlying socket, for socket options (`set_nodelay`, …).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// `qtoq_close`: tears the reservation down (PathTear/ResvTear), unloads the rule,
    /// deletes the session, then shuts the socket down and closes it.
    ///
    /// # Errors
    ///
    /// When the rule could not be unloaded (`Other`, [`QosError::RuleRemoval`] source) or
    /// the agent stopped; the socket is closed either way.
    pub async fn close(self) -> io::Result<()> {
        let QosStream {
            mut tcp, session, ..
        } = self;
        let released = session.release().await;
        // The peer may already have gone: a failed shutdown is not the caller's problem.
        let _ = tcp.shutdown().await;
        drop(tcp);
        released.map_err(io::Error::from)
    }
}

impl AsyncRead for QosStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().tcp.poll_read(cx, buf)
    }
}

impl AsyncWrite for QosStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().tcp.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().tcp.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().tcp.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().tcp.poll_shutdown(cx)
    }
}

/// Builds a client [`QosStream`]. See [`QosStream::builder`].
#[derive(Debug, Clone, Default)]
pub struct QosStreamBuilder {
    spec: QosSpec,
    signaling: Signaling,
    notify: Option<bool>,
    agent: Option<Agent>,
    bind: Option<SocketAddr>,
}

impl QosStreamBuilder {
    /// The reservation to ask for (default [`QosSpec::default`]).
    pub fn spec(mut self, spec: QosSpec) -> Self {
        self.spec = spec;
        self
    }

    /// Must stay [`Signaling::Rsvp`]: [`Signaling::None`] makes `connect` fail with
    /// `InvalidInput`, as IBM i's `qtoq_connect` says the client has nothing to signal.
    pub fn signaling(mut self, signaling: Signaling) -> Self {
        self.signaling = signaling;
        self
    }

    /// Whether the event stream reports progress (`true`, default) or only errors and the
    /// end (`false`). `NoSender` is progress: quiet streams do not get it, but
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

    /// The local address (and port, 0 for any) to connect from.
    pub fn bind(mut self, local: SocketAddr) -> Self {
        self.bind = Some(local);
        self
    }

    /// Connects, then opens the connection's session as a receiver primed for the server's
    /// PATH. IBM i's `qtoq_connect` primes the session first so that no PATH arrives
    /// unexpected; here a PATH that arrives between the two is kept as path state, as RFC 2205
    /// hosts keep it for any session, and answered the moment the session opens, so nothing
    /// is missed and no route lookup is needed to learn this end's address beforehand.
    ///
    /// # Errors
    ///
    /// `InvalidInput` ([`QosError::NoSignalingOnClient`]) with `Signaling::None`, and
    /// `InvalidInput` ([`QosError::InvalidSpec`]) for a spec [`QosSpec::validate`] refuses,
    /// both before anything is created; otherwise as `TcpStream::connect`, or `BrokenPipe` if the agent
    /// stopped.
    ///
    /// # Cancel safety
    ///
    /// As [`QosStream::connect`]: a dropped connect leaves neither a connection nor a session.
    pub async fn connect<A: ToSocketAddrs>(self, addr: A) -> io::Result<QosStream> {
        if self.signaling == Signaling::None {
            return Err(QosError::NoSignalingOnClient.into());
        }
        self.spec.validate().map_err(QosError::from)?;
        let agent = agent_or_default(self.agent.as_ref())?;
        let mut last_error = None;
        for peer in tokio::net::lookup_host(addr).await? {
            match self.connect_one(&agent, peer).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "could not resolve to any address",
            )
        }))
    }

    async fn connect_one(&self, agent: &Agent, peer: SocketAddr) -> io::Result<QosStream> {
        let tcp = match self.bind {
            None => TcpStream::connect(peer).await?,
            Some(local) => {
                let socket = if peer.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(local)?;
                socket.connect(peer).await?
            }
        };
        // The session is keyed by this end's address, known now without a route lookup of
        // our own. A PATH that reaches the agent before the session is opened is not lost:
        // the engine keeps path state for any session (RFC 2205) and answers it with the RESV
        // as soon as the session is opened below.
        let local = tcp.local_addr()?;
        let session = agent
            .open(
                Setup::Receiver {
                    key: SessionKey {
                        destination: local,
                        protocol: IPPROTO_TCP,
                    },
                    flowspec: self.spec.flowspec(),
                    confirm: true,
                },
                peer,
                self.notify.unwrap_or(true),
                tcp.as_fd(),
                Some(Owner::current()),
            )
            .await?;
        Ok(QosStream::from_parts(
            tcp,
            session,
            local,
            peer,
            Signaling::Rsvp,
        ))
    }
}
