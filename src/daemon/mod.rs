//! qosd's server: the host's agent served to every local application over a Unix socket
//! (cargo feature `daemon`; the `qosd` binary is a thin command line around [`Daemon`]).
//!
//! Like the socket API, this is a front end over the [`Agent`]: each client connection
//! opens sessions for the TCP sockets its application passes along (`SCM_RIGHTS`), gets
//! their events, and owns them — when the connection closes, for whatever reason (exit,
//! crash, `kill -9`), its sessions are released at once: PathTear/ResvTear sent, rules
//! unloaded. The protocol is [`protocol`](crate::agent::protocol)'s.
//!
//! Each client is known by its `SO_PEERCRED` credentials (pid, uid, gid) and its
//! executable's name, which `qosctl sessions` shows beside every session: its sessions'
//! [`Owner`], which the policy's `user` and `program` keys match.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::agent::protocol::{
    encode_frame, write_frame, DaemonStats, FrameReader, OpenRole, OpenedSession, RemoteError,
    Reply, Request, SessionRow, PROTOCOL_VERSION,
};
use crate::agent::{Agent, Reservation, SessionGuard, SessionShared, Setup, Tapped};
use crate::engine::{Event, SessionKey};
use crate::flow::{Flow, Owner, IPPROTO_TCP};
use crate::policy::Policy;
use crate::wire::intserv::FlowSpec;

/// How many watched events a slow `qosctl watch` may lag behind before it misses some.
const WATCH_BACKLOG: usize = 4096;

/// The local API server of one agent.
#[derive(Debug)]
pub struct Daemon {
    listener: UnixListener,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    agent: Agent,
    socket: PathBuf,
    policy_file: Option<PathBuf>,
    sessions: Mutex<HashMap<u64, SessionInfo>>,
    watchers: broadcast::Sender<Watched>,
    /// Set when the daemon closes: every client connection ends.
    closing: tokio::sync::watch::Sender<bool>,
    /// Requests that could not be read or served, for logs and stats.
    bad_requests: std::sync::atomic::AtomicU64,
    /// Client connections open now, and since the start.
    clients: std::sync::atomic::AtomicU64,
    clients_total: std::sync::atomic::AtomicU64,
}

/// What `qosctl sessions` shows of a session beside its live state.
#[derive(Debug, Clone)]
struct SessionInfo {
    local: SocketAddr,
    remote: SocketAddr,
    role: &'static str,
    peer: Peer,
    opened: Instant,
    shared: Arc<SessionShared>,
}

#[derive(Debug, Clone)]
struct Watched {
    session: u64,
    pid: Option<u32>,
    event: Event,
}

/// A client process, by its socket credentials: the owner of its sessions.
type Peer = Owner;

/// The client at the other end of `stream`: its effective uid and pid (`SO_PEERCRED`) and
/// its executable name (`/proc/<pid>/comm`), as policies and `qosctl` name programs.
fn peer_of(stream: &UnixStream) -> Peer {
    let Ok(cred) = stream.peer_cred() else {
        return Peer::default();
    };
    let pid = cred.pid().and_then(|pid| u32::try_from(pid).ok());
    let owner = Owner::new(Some(cred.uid()), pid.and_then(Owner::program_of));
    match pid {
        Some(pid) => owner.with_pid(pid),
        None => owner,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps: a panic elsewhere cannot leave them half-changed.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Daemon {
    /// Listens at `socket` for `agent`'s clients: a stale socket file is replaced, the new
    /// one gets `mode` (e.g. `0o660`: the owner and the group may connect). `policy_file` is
    /// what [`Request::ReloadPolicy`] reloads.
    ///
    /// # Errors
    ///
    /// When `socket`'s directory cannot be created or the socket bound; when another qosd
    /// answers at `socket` (`AddrInUse`).
    pub async fn bind(
        agent: Agent,
        socket: &Path,
        mode: u32,
        policy_file: Option<PathBuf>,
    ) -> io::Result<Daemon> {
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if socket.exists() {
            if UnixStream::connect(socket).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another qosd answers at {}", socket.display()),
                ));
            }
            // Left by a qosd that was killed: nobody listens behind it.
            std::fs::remove_file(socket)?;
        }
        let listener = UnixListener::bind(socket)?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))?;
        let (watchers, _) = broadcast::channel(WATCH_BACKLOG);
        Ok(Daemon {
            listener,
            shared: Arc::new(Shared {
                agent,
                socket: socket.to_owned(),
                policy_file,
                sessions: Mutex::new(HashMap::new()),
                watchers,
                closing: tokio::sync::watch::Sender::new(false),
                bad_requests: std::sync::atomic::AtomicU64::new(0),
                clients: std::sync::atomic::AtomicU64::new(0),
                clients_total: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// Serves clients until the listener fails; each client is a task of its own.
    ///
    /// # Errors
    ///
    /// The listener's error.
    pub async fn serve(&self) -> io::Result<()> {
        let mut next_client = 1u64;
        let mut closing = self.shared.closing.subscribe();
        loop {
            let (stream, _) = tokio::select! {
                accepted = self.listener.accept() => accepted?,
                _ = closing.wait_for(|closing| *closing) => return Ok(()),
            };
            let peer = peer_of(&stream);
            let client = next_client;
            next_client += 1;
            let span = info_span!("qosd_client", client, pid = ?peer.pid, program = ?peer.program);
            tokio::spawn(serve_client(self.shared.clone(), stream, peer).instrument(span));
        }
    }

    /// The agent this daemon serves.
    pub fn agent(&self) -> &Agent {
        &self.shared.agent
    }

    /// Ends every client connection (their sessions are released as when a client goes) and
    /// takes no new ones: the first step of qosd's shutdown. [`serve`](Self::serve) returns.
    pub fn close(&self) {
        self.shared.closing.send_replace(true);
        self.remove_socket();
    }

    /// Removes the socket file (on shutdown).
    pub fn remove_socket(&self) {
        if let Err(e) = std::fs::remove_file(&self.shared.socket) {
            debug!(error = %e, "socket file already gone");
        }
    }

    /// Reloads the policy file qosd was started with (SIGHUP, `qosctl policy reload`):
    /// how many reservations no longer fit and were torn down.
    ///
    /// # Errors
    ///
    /// The policy file's error (file:line:column), or no file to reload.
    pub async fn reload_policy(&self) -> Result<usize, String> {
        self.shared.reload_policy().await
    }
}

impl Shared {
    async fn reload_policy(&self) -> Result<usize, String> {
        let Some(file) = &self.policy_file else {
            return Err("qosd was started without --policy: there is no file to reload".into());
        };
        let policy = Policy::load(file).map_err(|e| e.to_string())?;
        let torn_down = self
            .agent
            .reload_policy(policy)
            .await
            .map_err(|e| e.to_string())?;
        info!(file = %file.display(), torn_down, "policy reloaded");
        Ok(torn_down)
    }

    fn rows(&self) -> Vec<SessionRow> {
        let now = Instant::now();
        // Copied out first: a session's state is read without the table locked (forwarders
        // take the table's lock from within a session's).
        let sessions: Vec<(u64, SessionInfo)> = lock(&self.sessions)
            .iter()
            .map(|(&session, info)| (session, info.clone()))
            .collect();
        let mut rows: Vec<SessionRow> = sessions
            .iter()
            .map(|(session, info)| {
                let session = *session;
                let reservation = info.shared.reservation();
                let (state, flowspec) = match &reservation {
                    Reservation::Pending => ("pending", None),
                    Reservation::Established { flowspec } => ("established", Some(*flowspec)),
                    Reservation::Denied { .. } => ("denied", None),
                    Reservation::Failed { .. } => ("failed", None),
                    Reservation::Ended { .. } => ("ended", None),
                    Reservation::NoSender => ("no_sender", None),
                    Reservation::NoReceiver => ("no_receiver", None),
                };
                SessionRow {
                    session,
                    local: info.local,
                    remote: info.remote,
                    role: info.role.to_owned(),
                    state: state.to_owned(),
                    service: flowspec.map(|f| service_name(&f).to_owned()),
                    rate: flowspec.map(|f| f64::from(f.reserved_rate())),
                    pid: info.peer.pid,
                    uid: info.peer.uid,
                    program: info.peer.program.clone(),
                    age: now.saturating_duration_since(info.opened),
                }
            })
            .collect();
        rows.sort_by_key(|row| row.session);
        rows
    }
}

fn service_name(flowspec: &FlowSpec) -> &'static str {
    match flowspec {
        FlowSpec::ControlledLoad(_) => "controlled_load",
        FlowSpec::Guaranteed { .. } => "guaranteed",
    }
}

/// One client: its requests, its sessions (released when it goes), its outgoing frames.
async fn serve_client(shared: Arc<Shared>, stream: UnixStream, peer: Peer) {
    let stream = Arc::new(stream);
    let mut reader = FrameReader::new();
    match reader.read::<Request>(&stream).await {
        Ok(Some(Request::Hello { version })) if version == PROTOCOL_VERSION => {}
        Ok(Some(Request::Hello { version })) => {
            shared.count_bad(&format!("a client of protocol version {version} refused"));
            refuse(&stream, format!("qosd speaks protocol version {PROTOCOL_VERSION}, the client {version}: use a qosd and a qtoq of the same release")).await;
            return;
        }
        Ok(Some(other)) => {
            shared.count_bad("a request before the hello");
            refuse(
                &stream,
                format!("the first request must be a hello, not {other:?}"),
            )
            .await;
            return;
        }
        Ok(None) => return,
        Err(e) => {
            shared.count_bad(&e.to_string());
            refuse(&stream, format!("not a qosd hello: {e}")).await;
            return;
        }
    }
    let welcome = Reply::Welcome {
        version: PROTOCOL_VERSION,
        local_addrs: shared.agent.local_addrs().to_vec(),
        bound: shared.agent.bound_addrs().to_vec(),
        transport: shared.agent.transport().to_owned(),
    };
    let out = Outgoing::new(stream.clone());
    out.send(welcome);
    let writer = tokio::spawn(out.clone().write_queued());
    info!(uid = ?peer.uid, "client connected");
    let _connected = ClientCount::new(&shared);
    let mut client = Client {
        shared: shared.clone(),
        peer,
        out: out.clone(),
        sessions: HashMap::new(),
    };
    let mut closing = shared.closing.subscribe();
    loop {
        let read = tokio::select! {
            read = reader.read_frame(&stream) => read,
            _ = closing.wait_for(|closing| *closing) => break,
        };
        let frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                // Broken framing or a failed socket: nothing after it can be trusted.
                if e.kind() == io::ErrorKind::InvalidData {
                    shared.count_bad(&e.to_string());
                } else {
                    debug!(error = %e, "client connection failed");
                }
                break;
            }
        };
        // A descriptor travels with the frame it belongs to; one left over from a frame
        // that needed none is closed here rather than given to a later open.
        let fd = reader.take_fd();
        match serde_json::from_slice::<Request>(&frame) {
            Ok(request) => client.handle(request, fd).await,
            Err(e) => {
                // Answer the request it was meant to be, when its tag can be read at all, so
                // its sender does not wait for a reply that never comes.
                let tag = serde_json::from_slice::<serde_json::Value>(&frame)
                    .ok()
                    .and_then(|value| value.get("tag")?.as_u64());
                client.error(tag, format!("request not understood: {e}"));
            }
        }
    }
    let sessions = client.sessions.len();
    // Dropping the guards releases every session: teardowns go out, rules come off.
    for (id, _) in client.sessions.drain() {
        lock(&shared.sessions).remove(&id);
    }
    info!(released = sessions, "client gone; its sessions released");
    drop(client);
    // What is queued still goes out (Ended of released sessions); then the connection closes
    // even though event forwarders and watchers still hold senders.
    out.finish();
    let _ = writer.await;
}

/// Counts a client connection while it is open.
struct ClientCount<'a>(&'a Shared);

impl<'a> ClientCount<'a> {
    fn new(shared: &'a Shared) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        shared.clients.fetch_add(1, Relaxed);
        shared.clients_total.fetch_add(1, Relaxed);
        ClientCount(shared)
    }
}

impl Drop for ClientCount<'_> {
    fn drop(&mut self) {
        self.0
            .clients
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn refuse(stream: &UnixStream, reason: String) {
    if let Ok(frame) = encode_frame(&Reply::Refused {
        version: PROTOCOL_VERSION,
        reason,
    }) {
        let _ = write_frame(stream, &frame, None).await;
    }
}

/// A client's outgoing frames, in order. A frame is written at once by whoever sends it when
/// nothing is queued or being written (no task hop on the common path: the socket buffer has
/// room); otherwise it waits in the queue for the client's writer task.
#[derive(Debug)]
struct Outgoing {
    stream: Arc<UnixStream>,
    state: Mutex<OutgoingState>,
    /// Rung when the queue gains a frame or the client is finished.
    wake: tokio::sync::Notify,
    /// Becomes `true` once nothing more will be written (client gone or not reading).
    gone: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct OutgoingState {
    queue: std::collections::VecDeque<Vec<u8>>,
    /// The writer task is writing a frame it took from the queue.
    writing: bool,
    /// The client finished: the writer drains the queue and stops.
    finishing: bool,
    /// Nothing more is written.
    closed: bool,
}

impl Outgoing {
    fn new(stream: Arc<UnixStream>) -> Arc<Self> {
        Arc::new(Outgoing {
            stream,
            state: Mutex::new(OutgoingState::default()),
            wake: tokio::sync::Notify::new(),
            gone: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Queues `reply` (or writes it at once); `false` once the client is gone.
    fn send(&self, reply: Reply) -> bool {
        let frame = match encode_frame(&reply) {
            Ok(frame) => frame,
            Err(e) => {
                warn!(error = %e, "reply could not be encoded; dropped");
                return true;
            }
        };
        let mut state = lock(&self.state);
        if state.closed {
            return false;
        }
        if state.queue.is_empty() && !state.writing {
            match self.stream.try_write(&frame) {
                Ok(sent) if sent == frame.len() => return true,
                Ok(sent) => state.queue.push_back(frame[sent..].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => state.queue.push_back(frame),
                Err(e) => {
                    debug!(error = %e, "client stopped reading");
                    state.closed = true;
                    drop(state);
                    self.gone.send_replace(true);
                    return false;
                }
            }
        } else {
            state.queue.push_back(frame);
        }
        drop(state);
        self.wake.notify_one();
        true
    }

    /// The client is finished: what is queued still goes out, then writing stops.
    fn finish(&self) {
        lock(&self.state).finishing = true;
        self.wake.notify_one();
    }

    /// Resolves once nothing more will be written to the client.
    async fn closed(&self) {
        let mut gone = self.gone.subscribe();
        let _ = gone.wait_for(|gone| *gone).await;
    }

    /// The writer task: writes what `send` could not, in order, until finished.
    async fn write_queued(self: Arc<Self>) {
        enum Next {
            Write(Vec<u8>),
            Wait,
            Stop,
        }
        loop {
            let next = {
                let mut state = lock(&self.state);
                match state.queue.pop_front() {
                    Some(frame) => {
                        state.writing = true;
                        Next::Write(frame)
                    }
                    None if state.finishing => {
                        state.writing = false;
                        state.closed = true;
                        Next::Stop
                    }
                    None => {
                        state.writing = false;
                        Next::Wait
                    }
                }
            };
            match next {
                // A permit left by `send` or `finish` since the check is kept by Notify.
                Next::Wait => self.wake.notified().await,
                Next::Stop => break,
                Next::Write(frame) => {
                    if let Err(e) = write_frame(&self.stream, &frame, None).await {
                        debug!(error = %e, "client stopped reading");
                        lock(&self.state).closed = true;
                        break;
                    }
                }
            }
        }
        self.gone.send_replace(true);
    }
}

impl Shared {
    fn stats(&self) -> DaemonStats {
        use std::sync::atomic::Ordering::Relaxed;
        DaemonStats {
            clients: self.clients.load(Relaxed),
            clients_total: self.clients_total.load(Relaxed),
            bad_requests: self.bad_requests.load(Relaxed),
        }
    }

    fn count_bad(&self, what: &str) {
        let count = self
            .bad_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        warn!(count, error = what, "bad request from a client");
    }
}

struct Client {
    shared: Arc<Shared>,
    peer: Peer,
    out: Arc<Outgoing>,
    sessions: HashMap<u64, SessionGuard>,
}

impl Client {
    async fn handle(&mut self, request: Request, fd: Option<OwnedFd>) {
        match request {
            Request::Hello { .. } => self.error(None, "hello was already said".into()),
            Request::Open { tag, role, notify } => {
                let opened = match fd {
                    Some(fd) => self.open(role, notify, fd).await,
                    None => Err(RemoteError::Refused(
                        "open needs the connection's TCP socket passed along (SCM_RIGHTS)".into(),
                    )),
                };
                match opened {
                    Ok((opened, next, state)) => {
                        let session = opened.session;
                        // The reply is queued before the forwarder starts: the client learns
                        // of the session before any event of it arrives.
                        self.out.send(Reply::Opened {
                            tag,
                            result: Ok(opened),
                        });
                        state.set_tap(next, self.forwarder(session));
                    }
                    Err(error) => {
                        self.out.send(Reply::Opened {
                            tag,
                            result: Err(error),
                        });
                    }
                }
            }
            Request::Release { tag, session } => {
                let Some(guard) = self.sessions.remove(&session) else {
                    self.out.send(Reply::Released {
                        tag,
                        result: Err(RemoteError::Refused(format!(
                            "no session {session} of this client"
                        ))),
                    });
                    return;
                };
                lock(&self.shared.sessions).remove(&session);
                // Started here, so it is ahead of the client's next request (an open of a
                // new connection from the same port must not meet this session's
                // teardown); the wait for the rule to come off goes on in the background
                // while the client's other requests are served.
                let done = guard.begin_release().await;
                let out = self.out.clone();
                tokio::spawn(async move {
                    let result = done.await.map_err(|e| RemoteError::from(&e));
                    out.send(Reply::Released { tag, result });
                });
            }
            Request::Stats { tag } => match self.shared.agent.stats().await {
                Ok(stats) => {
                    self.out.send(Reply::Stats {
                        tag,
                        stats: Box::new(stats),
                        daemon: self.shared.stats(),
                    });
                }
                Err(e) => self.error(Some(tag), e.to_string()),
            },
            Request::Sessions { tag } => {
                self.out.send(Reply::Sessions {
                    tag,
                    sessions: self.shared.rows(),
                });
            }
            Request::Watch { tag } => {
                let mut watched = self.shared.watchers.subscribe();
                let out = self.out.clone();
                out.send(Reply::Watching { tag });
                tokio::spawn(async move {
                    loop {
                        let next = tokio::select! {
                            next = watched.recv() => next,
                            // The client is gone: stop watching for it.
                            () = out.closed() => return,
                        };
                        match next {
                            Ok(w) => {
                                let reply = Reply::Watched {
                                    session: w.session,
                                    pid: w.pid,
                                    event: w.event,
                                };
                                if !out.send(reply) {
                                    return;
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(missed)) => {
                                warn!(missed, "a watcher fell behind; events skipped");
                            }
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                    }
                });
            }
            Request::ReloadPolicy { tag } => {
                let result = self.shared.reload_policy().await;
                self.out.send(Reply::PolicyReloaded { tag, result });
            }
        }
    }

    /// Forwards session `session`'s events to this client and to watchers, as they happen
    /// (a tap on the session's state: no task between the agent and the client's socket),
    /// and tells the client when the session is gone.
    fn forwarder(&self, session: u64) -> crate::agent::Tap {
        let shared = self.shared.clone();
        let out = self.out.clone();
        let pid = self.peer.pid;
        Box::new(move |tapped| match tapped {
            Tapped::Event(event) => {
                if shared.watchers.receiver_count() > 0 {
                    let _ = shared.watchers.send(Watched {
                        session,
                        pid,
                        event: event.clone(),
                    });
                }
                out.send(Reply::Event {
                    session,
                    event: event.clone(),
                });
            }
            Tapped::Ended(reason) => {
                lock(&shared.sessions).remove(&session);
                out.send(Reply::Ended {
                    session,
                    reason: reason.to_owned(),
                });
            }
        })
    }

    fn error(&self, tag: Option<u64>, message: String) {
        self.shared.count_bad(&message);
        self.out.send(Reply::Error { tag, message });
    }

    /// Opens a session for the TCP connection `fd`: its addresses come from the socket
    /// itself, not from the client.
    async fn open(
        &mut self,
        role: OpenRole,
        notify: bool,
        fd: OwnedFd,
    ) -> Result<(OpenedSession, u64, Arc<SessionShared>), RemoteError> {
        let (local, remote) =
            tcp_addresses(&fd).map_err(|e| RemoteError::Refused(e.to_string()))?;
        let (setup, role_name) = match role {
            OpenRole::Server {
                signaled,
                flowspec,
                fallback,
            } => (
                Setup::Accepted {
                    key: SessionKey {
                        destination: remote,
                        protocol: IPPROTO_TCP,
                    },
                    flow: Flow {
                        sender: local,
                        receiver: remote,
                        protocol: IPPROTO_TCP,
                    },
                    signaled,
                    flowspec,
                    fallback,
                },
                None,
            ),
            OpenRole::Client { flowspec, confirm } => (
                Setup::Receiver {
                    key: SessionKey {
                        destination: local,
                        protocol: IPPROTO_TCP,
                    },
                    flowspec,
                    confirm,
                },
                Some("receiver"),
            ),
        };
        let guard = self
            .shared
            .agent
            .open(setup, remote, notify, fd.as_fd(), Some(self.peer.clone()))
            .await
            .map_err(|e| {
                match e
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<crate::QosError>())
                {
                    Some(qos) => RemoteError::from(qos),
                    None => RemoteError::Refused(e.to_string()),
                }
            })?;
        let session = guard.id.0;
        let signaled = guard.signaled;
        let role = role_name.unwrap_or(if signaled { "sender" } else { "unsignaled" });
        info!(session, %local, %remote, role, "session opened");
        lock(&self.shared.sessions).insert(
            session,
            SessionInfo {
                local,
                remote,
                role,
                peer: self.peer.clone(),
                opened: Instant::now(),
                shared: guard.shared.clone(),
            },
        );
        // What happened within the open travels with the reply; the rest follows it, from
        // event `next` on.
        let mut next = 0;
        let events = guard.shared.logged_events(&mut next);
        let state = guard.shared.clone();
        self.sessions.insert(session, guard);
        Ok((
            OpenedSession {
                session,
                signaled,
                events,
            },
            next,
            state,
        ))
    }
}

/// The local and remote address of a connected TCP socket.
fn tcp_addresses(fd: &OwnedFd) -> io::Result<(SocketAddr, SocketAddr)> {
    let socket = socket2::SockRef::from(fd);
    if socket.r#type()? != socket2::Type::STREAM {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket passed along is not a TCP stream",
        ));
    }
    let address = |a: socket2::SockAddr| {
        a.as_socket().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the socket passed along is not an IPv4 or IPv6 socket",
            )
        })
    };
    let local = address(socket.local_addr()?)?;
    let remote = address(socket.peer_addr().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("the socket passed along is not connected: {e}"),
        )
    })?)?;
    Ok((local, remote))
}
