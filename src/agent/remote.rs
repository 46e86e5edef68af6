//! An agent that is `qosd`: the host daemon's agent, reached over its local API
//! ([`protocol`](super::protocol)).
//!
//! The application's sockets behave exactly as with an embedded agent; what differs is who
//! signals, admits and loads rules (qosd, for every process of the host, within one budget)
//! and what happens when this process dies (qosd releases its sessions at once).
//!
//! One task reads qosd's frames: replies go to the request that waits for them (by tag),
//! events to their session's state, which the socket API reads as usual. Requests are
//! written by the caller itself, one frame at a time. When the connection ends, every
//! waiting request fails, every session's events end after a `TornDown` saying why, and
//! the agent reports itself stopped, so the default agent starts afresh on next use (and
//! finds qosd again once it is back).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::protocol::{
    encode_frame, write_frame, FrameReader, OpenRole, OpenedSession, Reply, Request,
    PROTOCOL_VERSION,
};
use super::session::SessionShared;
use super::{AgentStats, Setup};
use crate::engine::{Event, SessionId};
use crate::error::QosError;

/// How long connecting to qosd and its hello may take before the application gives up on it.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to qosd, shared by an [`Agent`](super::Agent)'s handles.
pub(crate) struct RemoteAgent {
    pub(crate) id: u64,
    path: PathBuf,
    stream: Arc<UnixStream>,
    /// Held while a frame is written, so frames never interleave.
    write: tokio::sync::Mutex<()>,
    /// Sessions released from `Drop`, in order, not yet written: the next writer writes
    /// their releases before its own frame, so a release always reaches qosd before any
    /// request made after it (a new connection from the same port must not be torn down
    /// by the release of the old one).
    dropped: Mutex<Vec<u64>>,
    state: Arc<Mutex<RemoteState>>,
    closed: Arc<AtomicBool>,
    next_tag: AtomicU64,
    pub(crate) local_addrs: Vec<IpAddr>,
    pub(crate) bound: Vec<SocketAddr>,
    pub(crate) transport: String,
    /// Where the reader runs; releases from `Drop` are written from a task there.
    runtime: tokio::runtime::Handle,
}

impl fmt::Debug for RemoteAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteAgent")
            .field("id", &self.id)
            .field("socket", &self.path)
            .field("transport", &self.transport)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct RemoteState {
    pending: HashMap<u64, Pending>,
    sessions: HashMap<u64, Arc<SessionShared>>,
}

/// A request waiting for its reply.
struct Pending {
    reply: oneshot::Sender<(Reply, Option<Arc<SessionShared>>)>,
    /// For an open: whether the session's owner wants progress events.
    notify: Option<bool>,
}

fn lock(state: &Mutex<RemoteState>) -> MutexGuard<'_, RemoteState> {
    // The state is a pair of maps; a panic elsewhere cannot leave them half-changed.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// What qosd said in its welcome.
pub(crate) struct Welcome {
    local_addrs: Vec<IpAddr>,
    bound: Vec<SocketAddr>,
    transport: String,
}

/// Connects to qosd at `path` and says hello, blocking for at most [`CONNECT_TIMEOUT`]
/// (the default agent is started from synchronous code). The stream is returned
/// non-blocking, ready for a runtime.
pub(crate) fn connect_blocking(
    path: &Path,
) -> io::Result<(std::os::unix::net::UnixStream, Welcome)> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("qosd at {}: {e}", path.display())))?;
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    stream.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    stream.write_all(&encode_frame(&Request::Hello {
        version: PROTOCOL_VERSION,
    })?)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > super::protocol::MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} does not speak qosd's protocol", path.display()),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    let reply: Reply = serde_json::from_slice(&body).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} does not speak qosd's protocol: {e}", path.display()),
        )
    })?;
    let welcome = welcome(reply, path)?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)?;
    stream.set_nonblocking(true)?;
    Ok((stream, welcome))
}

/// Connects to qosd at `path` and says hello, on the current runtime.
pub(crate) async fn connect(path: &Path) -> io::Result<(UnixStream, Welcome)> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting to qosd timed out"))?
        .map_err(|e| io::Error::new(e.kind(), format!("qosd at {}: {e}", path.display())))?;
    let hello = encode_frame(&Request::Hello {
        version: PROTOCOL_VERSION,
    })?;
    let mut reader = FrameReader::new();
    let reply = tokio::time::timeout(CONNECT_TIMEOUT, async {
        write_frame(&stream, &hello, None).await?;
        reader.read::<Reply>(&stream).await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "qosd did not answer its hello"))??
    .ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("qosd at {} closed the connection", path.display()),
        )
    })?;
    Ok((stream, welcome(reply, path)?))
}

fn welcome(reply: Reply, path: &Path) -> io::Result<Welcome> {
    match reply {
        Reply::Welcome {
            version,
            local_addrs,
            bound,
            transport,
        } if version == PROTOCOL_VERSION => Ok(Welcome {
            local_addrs,
            bound,
            transport,
        }),
        Reply::Welcome { version, .. } | Reply::Refused { version, .. } => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "qosd at {} speaks protocol version {version}, this library {PROTOCOL_VERSION}: \
                 use a qosd and a qtoq of the same release",
                path.display()
            ),
        )),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "qosd at {} answered its hello with {other:?}",
                path.display()
            ),
        )),
    }
}

impl RemoteAgent {
    /// Starts serving a connected, welcomed `stream` on the current runtime.
    pub(crate) fn start(id: u64, path: PathBuf, stream: UnixStream, welcome: Welcome) -> Arc<Self> {
        let stream = Arc::new(stream);
        let state = Arc::new(Mutex::new(RemoteState::default()));
        let closed = Arc::new(AtomicBool::new(false));
        let agent = Arc::new(RemoteAgent {
            id,
            path: path.clone(),
            stream: stream.clone(),
            write: tokio::sync::Mutex::new(()),
            dropped: Mutex::new(Vec::new()),
            state: state.clone(),
            closed: closed.clone(),
            next_tag: AtomicU64::new(1),
            local_addrs: welcome.local_addrs,
            bound: welcome.bound,
            transport: welcome.transport,
            runtime: tokio::runtime::Handle::current(),
        });
        info!(agent = id, socket = %path.display(), "qtoq agent: using qosd");
        tokio::spawn(read_replies(
            stream,
            state,
            closed,
            Arc::downgrade(&agent),
            path,
        ));
        agent
    }

    /// Whether the connection to qosd is still up.
    pub(crate) fn is_running(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    fn gone(&self) -> QosError {
        QosError::Daemon(format!(
            "qosd at {} closed the connection",
            self.path.display()
        ))
    }

    /// Sends `request` (made with a fresh tag) and waits for its reply.
    async fn call(
        &self,
        request: impl FnOnce(u64) -> Request,
        notify: Option<bool>,
        socket: Option<BorrowedFd<'_>>,
    ) -> Result<(Reply, Option<Arc<SessionShared>>), QosError> {
        if !self.is_running() {
            return Err(self.gone());
        }
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let frame = encode_frame(&request(tag)).map_err(|e| QosError::Daemon(e.to_string()))?;
        let (reply, answer) = oneshot::channel();
        lock(&self.state)
            .pending
            .insert(tag, Pending { reply, notify });
        // Dropped before the reply (a cancelled caller): the entry goes, and an open that
        // qosd answered anyway is released by the reader (see `read_replies`).
        let _forget = ForgetTag {
            state: &self.state,
            tag,
        };
        {
            let _writing = self.write.lock().await;
            let written = match self.write_dropped().await {
                Ok(()) => write_frame(&self.stream, &frame, socket).await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                debug!(error = %e, "writing to qosd failed");
                return Err(self.gone());
            }
        }
        answer.await.map_err(|_| self.gone())
    }

    /// Writes the releases `release_soon` queued; the caller holds `write`. Nobody waits
    /// for their replies (the reader ignores replies without a waiter).
    async fn write_dropped(&self) -> io::Result<()> {
        let sessions = std::mem::take(&mut *self.dropped.lock().unwrap_or_else(|e| e.into_inner()));
        for session in sessions {
            let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
            write_frame(
                &self.stream,
                &encode_frame(&Request::Release { tag, session })?,
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// Opens a session for the connection whose socket is `socket`.
    pub(crate) async fn open(
        &self,
        setup: Setup,
        notify: bool,
        socket: BorrowedFd<'_>,
    ) -> Result<(SessionId, Arc<SessionShared>, bool), QosError> {
        let role = match setup {
            Setup::Accepted {
                signaled,
                flowspec,
                fallback,
                ..
            } => OpenRole::Server {
                signaled,
                flowspec,
                fallback,
            },
            Setup::Receiver {
                flowspec, confirm, ..
            } => OpenRole::Client { flowspec, confirm },
            Setup::Sender { .. } | Setup::Unsignaled { .. } => {
                return Err(QosError::Daemon(
                    "qosd resolves a server's setup itself: open it as accepted".into(),
                ))
            }
        };
        let (reply, shared) = self
            .call(
                |tag| Request::Open { tag, role, notify },
                Some(notify),
                Some(socket),
            )
            .await?;
        match (reply, shared) {
            (
                Reply::Opened {
                    result:
                        Ok(OpenedSession {
                            session, signaled, ..
                        }),
                    ..
                },
                Some(shared),
            ) => Ok((SessionId(session), shared, signaled)),
            (
                Reply::Opened {
                    result: Err(error), ..
                },
                _,
            ) => Err(error.into()),
            (other, _) => Err(unexpected(&other)),
        }
    }

    /// Releases `session` and waits until qosd has torn it down and unloaded its rule.
    pub(crate) async fn release(&self, session: SessionId) -> Result<(), QosError> {
        let (reply, _) = self
            .call(
                |tag| Request::Release {
                    tag,
                    session: session.0,
                },
                None,
                None,
            )
            .await?;
        match reply {
            Reply::Released { result, .. } => result.map_err(Into::into),
            other => Err(unexpected(&other)),
        }
    }

    /// Releases `session` without waiting (from `Drop`): queued at once, so it is written
    /// before any request made after this call, and written by a task unless another
    /// request comes first.
    pub(crate) fn release_soon(self: &Arc<Self>, session: SessionId) {
        if !self.is_running() {
            return;
        }
        self.dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(session.0);
        let agent = self.clone();
        self.runtime.spawn(async move {
            let _writing = agent.write.lock().await;
            if let Err(e) = agent.write_dropped().await {
                debug!(session = session.0, error = %e, "release through qosd failed");
            }
        });
    }

    /// qosd's agent counters.
    pub(crate) async fn stats(&self) -> Result<AgentStats, QosError> {
        match self.call(|tag| Request::Stats { tag }, None, None).await?.0 {
            Reply::Stats { stats, .. } => Ok(*stats),
            other => Err(unexpected(&other)),
        }
    }

    /// Ends this process's use of qosd: it releases every session this connection opened.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let _ = socket2::SockRef::from(&self.stream.as_fd()).shutdown(std::net::Shutdown::Both);
    }
}

impl Drop for RemoteAgent {
    /// The last handle is gone: the connection closes, and qosd releases what is left.
    fn drop(&mut self) {
        self.close();
    }
}

/// Removes a waiting request's entry when its caller stops waiting.
struct ForgetTag<'a> {
    state: &'a Mutex<RemoteState>,
    tag: u64,
}

impl Drop for ForgetTag<'_> {
    fn drop(&mut self) {
        lock(self.state).pending.remove(&self.tag);
    }
}

fn unexpected(reply: &Reply) -> QosError {
    match reply {
        Reply::Error { message, .. } => QosError::Daemon(message.clone()),
        other => QosError::Daemon(format!("unexpected answer from qosd: {other:?}")),
    }
}

/// The reader: routes qosd's frames until the connection ends, then fails what waits.
async fn read_replies(
    stream: Arc<UnixStream>,
    state: Arc<Mutex<RemoteState>>,
    closed: Arc<AtomicBool>,
    agent: std::sync::Weak<RemoteAgent>,
    path: PathBuf,
) {
    let mut reader = FrameReader::new();
    let why = loop {
        let reply = match reader.read::<Reply>(&stream).await {
            Ok(Some(reply)) => reply,
            Ok(None) => break "qosd closed the connection".to_owned(),
            Err(e) => break format!("the connection to qosd failed: {e}"),
        };
        route(reply, &state, &agent);
    };
    closed.store(true, Ordering::Release);
    let (pending, sessions) = {
        let mut state = lock(&state);
        (
            std::mem::take(&mut state.pending),
            std::mem::take(&mut state.sessions),
        )
    };
    if !sessions.is_empty() {
        warn!(socket = %path.display(), sessions = sessions.len(), reason = %why,
            "qtoq agent: qosd went away; its sessions have ended");
    } else {
        debug!(socket = %path.display(), reason = %why, "qtoq agent: qosd connection closed");
    }
    // Waiting requests see their channel closed: "qosd closed the connection".
    drop(pending);
    let reason = format!("{why} ({})", path.display());
    for shared in sessions.into_values() {
        shared.push(Event::TornDown {
            reason: reason.clone(),
        });
        shared.end(&reason);
    }
}

fn route(reply: Reply, state: &Mutex<RemoteState>, agent: &std::sync::Weak<RemoteAgent>) {
    match &reply {
        Reply::Event { session, event } => {
            if let Some(shared) = lock(state).sessions.get(session) {
                shared.push(event.clone());
            }
            return;
        }
        Reply::Ended { session, reason } => {
            if let Some(shared) = lock(state).sessions.remove(session) {
                shared.end(reason);
            }
            return;
        }
        _ => {}
    }
    let Some(tag) = super::protocol::reply_tag(&reply) else {
        debug!(?reply, "unexpected frame from qosd ignored");
        return;
    };
    let mut state_guard = lock(state);
    let Some(pending) = state_guard.pending.remove(&tag) else {
        // Nobody waits (a cancelled caller): a session opened for it has no owner.
        if let Reply::Opened {
            result: Ok(opened), ..
        } = &reply
        {
            drop(state_guard);
            if let Some(agent) = agent.upgrade() {
                agent.release_soon(SessionId(opened.session));
            }
        }
        return;
    };
    let shared = match (&reply, pending.notify) {
        (
            Reply::Opened {
                result: Ok(opened), ..
            },
            Some(notify),
        ) => {
            // Registered before anything else is read, so no event of it can be missed; what
            // happened within the open is in before its opener sees the session.
            let shared = SessionShared::new(notify);
            for event in &opened.events {
                shared.push(event.clone());
            }
            state_guard.sessions.insert(opened.session, shared.clone());
            Some(shared)
        }
        _ => None,
    };
    drop(state_guard);
    if let Err((reply, shared)) = pending.reply.send((reply, shared)) {
        // The caller went away between our lookup and now: release what it opened.
        if let (
            Reply::Opened {
                result: Ok(opened), ..
            },
            Some(_),
        ) = (reply, shared)
        {
            lock(state).sessions.remove(&opened.session);
            if let Some(agent) = agent.upgrade() {
                agent.release_soon(SessionId(opened.session));
            }
        }
    }
}
