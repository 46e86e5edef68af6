//! The local API between applications and `qosd`, the host's QoS daemon: what travels over
//! its Unix socket, and how.
//!
//! # Framing and encoding
//!
//! Each message is one frame: a 4-byte big-endian length, then that many bytes of JSON
//! (tokio-util's length-delimited codec; frames above [`MAX_FRAME`] are refused). JSON was
//! chosen over a compact binary encoding on purpose:
//!
//! * it is self-describing, so a client of another version, or something that is not a qtoq
//!   client at all, gets a clear "unknown message" or version error instead of a garbled
//!   decode that happens to succeed;
//! * the same serde types print `qosctl --json` output, and a frame can be read with `socat`
//!   when something goes wrong on a production host;
//! * its cost is small beside what a setup does anyway: a few µs per message against a
//!   setup's signaling, admission and rule load.
//!
//! # The conversation
//!
//! The client opens with [`Request::Hello`] carrying [`PROTOCOL_VERSION`]; qosd answers
//! [`Reply::Welcome`], or [`Reply::Refused`] naming both versions and closes. Then requests
//! carry a client-chosen `tag` that their reply repeats; [`Reply::Event`] and
//! [`Reply::Ended`] arrive whenever something happens to one of the client's sessions.
//!
//! [`Request::Open`] travels with the application's TCP socket attached (`SCM_RIGHTS`):
//! qosd takes the connection's addresses from that socket, not from a claim, and applies
//! socket options (DSCP, priority, pacing) to it with its own privileges. Every session a
//! client opened is its own: when its connection closes (exit, crash, `kill -9`), qosd
//! releases them at once.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use crate::engine::Event;
use crate::error::QosError;
use crate::flow::AdmissionDenied;
use crate::wire::intserv::FlowSpec;
use crate::wire::RsvpError;

/// The version of this protocol; a client and a qosd of different versions refuse each
/// other with a message naming both.
pub const PROTOCOL_VERSION: u32 = 1;

/// Where qosd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/qtoq/qosd.sock";

/// The environment variable that names qosd's socket for applications (overrides
/// [`DEFAULT_SOCKET`]).
pub const SOCKET_ENV: &str = "QTOQ_SOCKET";

/// Largest frame either side accepts, in bytes. Every message is far smaller; a stats or
/// sessions reply of a busy host is the largest.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// The socket path applications use: `$QTOQ_SOCKET`, or [`DEFAULT_SOCKET`].
pub fn socket_path() -> std::path::PathBuf {
    std::env::var_os(SOCKET_ENV)
        .filter(|path| !path.is_empty())
        .map(Into::into)
        .unwrap_or_else(|| DEFAULT_SOCKET.into())
}

/// A message from a client to qosd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// The first message: the client's protocol version.
    Hello {
        /// [`PROTOCOL_VERSION`] of the client.
        version: u32,
    },
    /// Opens a session for the TCP connection whose socket travels with this frame.
    Open {
        /// Repeated by the reply.
        tag: u64,
        /// What the connection's end does.
        role: OpenRole,
        /// Whether the client wants progress events, not only errors and the end.
        notify: bool,
    },
    /// Releases one of the client's sessions; the reply comes once its rule is unloaded.
    Release {
        /// Repeated by the reply.
        tag: u64,
        /// The session, as [`Reply::Opened`] named it.
        session: u64,
    },
    /// The agent's counters ([`Reply::Stats`]).
    Stats {
        /// Repeated by the reply.
        tag: u64,
    },
    /// Every session qosd holds, of every client ([`Reply::Sessions`]).
    Sessions {
        /// Repeated by the reply.
        tag: u64,
    },
    /// From now on, every event of every session, as [`Reply::Watched`].
    Watch {
        /// Repeated by the first reply ([`Reply::Watching`]).
        tag: u64,
    },
    /// Reloads the policy file qosd was started with ([`Reply::PolicyReloaded`]).
    ReloadPolicy {
        /// Repeated by the reply.
        tag: u64,
    },
}

/// What the connection's end does (see IBM i's three flows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OpenRole {
    /// An accepted connection: the server is the data sender. Unset choices are the matching
    /// policy rule's in qosd (RSVP unless the rule says `signaling = false`), then `fallback`.
    Server {
        /// `Some(false)`: a rule marked with no signaling; `None`: as the policy says.
        signaled: Option<bool>,
        /// The reservation; `None`: the policy rule's, or `fallback`.
        flowspec: Option<FlowSpec>,
        /// The reservation when neither the caller nor the policy names one.
        fallback: FlowSpec,
    },
    /// A connecting client: the data receiver, reserving when the server's PATH arrives.
    Client {
        /// The reservation to request.
        flowspec: FlowSpec,
        /// Whether to ask for a confirmation (ResvConf).
        confirm: bool,
    },
}

/// A message from qosd to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reply {
    /// The answer to a [`Request::Hello`] of the same version.
    Welcome {
        /// [`PROTOCOL_VERSION`] of qosd.
        version: u32,
        /// The addresses qosd's agent treats as its own.
        local_addrs: Vec<IpAddr>,
        /// Where its RSVP transport is bound.
        bound: Vec<SocketAddr>,
        /// Its transport (`udp`, `raw`).
        transport: String,
    },
    /// The answer to a [`Request::Hello`] of another version (or to anything before a
    /// hello); qosd closes the connection after it.
    Refused {
        /// [`PROTOCOL_VERSION`] of qosd.
        version: u32,
        /// Why, readable.
        reason: String,
    },
    /// A session was opened, or why not.
    Opened {
        /// The request's tag.
        tag: u64,
        /// The session, or why it was refused.
        result: Result<OpenedSession, RemoteError>,
    },
    /// Something happened to one of the client's sessions.
    Event {
        /// The session.
        session: u64,
        /// What happened.
        event: Event,
    },
    /// One of the client's sessions is gone (its agent released it).
    Ended {
        /// The session.
        session: u64,
        /// Why.
        reason: String,
    },
    /// A release is done: the session is torn down and its rule unloaded.
    Released {
        /// The request's tag.
        tag: u64,
        /// Whether the rule came off cleanly.
        result: Result<(), RemoteError>,
    },
    /// The agent's counters, as `Agent::stats` gives them, and qosd's own.
    Stats {
        /// The request's tag.
        tag: u64,
        /// The agent's counters.
        stats: Box<super::AgentStats>,
        /// qosd's counters.
        #[serde(default)]
        daemon: DaemonStats,
    },
    /// Every session qosd holds.
    Sessions {
        /// The request's tag.
        tag: u64,
        /// One row per session.
        sessions: Vec<SessionRow>,
    },
    /// Watching has begun.
    Watching {
        /// The request's tag.
        tag: u64,
    },
    /// An event of some client's session (after [`Request::Watch`]).
    Watched {
        /// The session.
        session: u64,
        /// Its owner's process id.
        pid: Option<u32>,
        /// What happened.
        event: Event,
    },
    /// The policy file was reloaded, or why not.
    PolicyReloaded {
        /// The request's tag.
        tag: u64,
        /// How many reservations no longer fit and were torn down, or the policy error.
        result: Result<usize, String>,
    },
    /// A request qosd could not read or cannot serve; the connection stays open.
    Error {
        /// The tag of the request, when it could be read.
        tag: Option<u64>,
        /// What went wrong.
        message: String,
    },
}

/// qosd's own counters (beside its agent's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DaemonStats {
    /// Client connections open now.
    pub clients: u64,
    /// Client connections since qosd started.
    pub clients_total: u64,
    /// Requests that could not be read or served (logged with the reason).
    pub bad_requests: u64,
}

/// A session qosd opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenedSession {
    /// Its id, unique for qosd's life.
    pub session: u64,
    /// Whether it is RSVP-signaled (`false`: a rule marked with no signaling).
    pub signaled: bool,
    /// What already happened to it within the open (e.g. `Established` for a rule marked
    /// with no signaling): the session's state is as complete when the open returns as
    /// with an embedded agent. Later events come as [`Reply::Event`].
    pub events: Vec<Event>,
}

/// Why qosd refused or failed a request, as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RemoteError {
    /// Admission control refused the connection's rule.
    #[error("admission denied: {0}")]
    AdmissionDenied(AdmissionDenied),
    /// The enforcer could not load the rule.
    #[error("the enforcement rule could not be loaded: {reason} ({error})")]
    RuleFailed {
        /// The RSVP error this failure deserves.
        error: RsvpError,
        /// Why.
        reason: String,
    },
    /// The enforcer could not unload the rule.
    #[error("the enforcement rule could not be removed: {0}")]
    RuleRemoval(String),
    /// The request was refused: an unknown session, a missing socket, a full table.
    #[error("{0}")]
    Refused(String),
    /// qosd's agent has stopped.
    #[error("qosd's agent has stopped")]
    Stopped,
}

impl From<&QosError> for RemoteError {
    fn from(error: &QosError) -> Self {
        match error {
            QosError::AdmissionDenied(denied) => RemoteError::AdmissionDenied(denied.clone()),
            QosError::RuleFailed { error, reason } => RemoteError::RuleFailed {
                error: *error,
                reason: reason.clone(),
            },
            QosError::RuleRemoval(reason) => RemoteError::RuleRemoval(reason.clone()),
            QosError::AgentStopped => RemoteError::Stopped,
            other => RemoteError::Refused(other.to_string()),
        }
    }
}

impl From<RemoteError> for QosError {
    fn from(error: RemoteError) -> Self {
        match error {
            RemoteError::AdmissionDenied(denied) => QosError::AdmissionDenied(denied),
            RemoteError::RuleFailed { error, reason } => QosError::RuleFailed { error, reason },
            RemoteError::RuleRemoval(reason) => QosError::RuleRemoval(reason),
            RemoteError::Stopped => QosError::AgentStopped,
            RemoteError::Refused(reason) => QosError::Daemon(reason),
        }
    }
}

/// One session in [`Reply::Sessions`] (`qosctl sessions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    /// The session's id.
    pub session: u64,
    /// This host's end of the connection.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
    /// `sender` (a server with RSVP), `receiver` (a client) or `unsignaled`.
    pub role: String,
    /// `pending`, `established`, `denied`, `failed`, `ended`, `no_sender` or `no_receiver`.
    pub state: String,
    /// The service, when a reservation is in force (`controlled_load`, `guaranteed`).
    pub service: Option<String>,
    /// The reserved rate in bytes/s, when a reservation is in force.
    pub rate: Option<f64>,
    /// The owning process.
    pub pid: Option<u32>,
    /// Its user id.
    pub uid: Option<u32>,
    /// Its executable's name.
    pub program: Option<String>,
    /// How long ago the session was opened (in JSON `age_ms`: whole milliseconds, as
    /// `qosctl sessions --json` prints it).
    #[serde(rename = "age_ms", with = "millis")]
    pub age: Duration,
}

/// A [`Duration`] as whole milliseconds (a plain JSON number rather than serde's
/// `{secs, nanos}`).
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Reads frames from one side of the local API, collecting the descriptors that come with
/// them (see [`FrameReader::take_fd`]).
#[derive(Debug)]
pub(crate) struct FrameReader {
    buf: BytesMut,
    codec: LengthDelimitedCodec,
    /// Descriptors received, each with the stream offset where the read that brought it
    /// ended. The kernel ends a read right after the data a descriptor was sent with, and a
    /// sender attaches it to the first bytes of its frame: so it belongs to the frame whose
    /// bytes hold that offset (not to the oldest frame decoded since, which may be an
    /// earlier frame that arrived in the same read).
    fds: VecDeque<(u64, OwnedFd)>,
    /// Descriptors of the last read, before they join `fds`.
    received: Vec<OwnedFd>,
    /// Bytes read from the stream so far.
    read_total: u64,
    /// The stream offsets where the frame last returned starts and ends.
    frame_start: u64,
    frame_end: u64,
}

impl FrameReader {
    pub(crate) fn new() -> Self {
        FrameReader {
            buf: BytesMut::with_capacity(8192),
            codec: codec(),
            fds: VecDeque::new(),
            received: Vec::new(),
            read_total: 0,
            frame_start: 0,
            frame_end: 0,
        }
    }

    /// The next frame decoded as `T`; `None` at a clean end of the stream.
    ///
    /// # Errors
    ///
    /// As [`read_frame`](Self::read_frame); `InvalidData` for a frame that is not a `T`.
    pub(crate) async fn read<T: DeserializeOwned>(
        &mut self,
        stream: &UnixStream,
    ) -> io::Result<Option<T>> {
        let Some(frame) = self.read_frame(stream).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&frame)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad frame: {e}")))
    }

    /// The next frame's bytes; `None` at a clean end of the stream.
    ///
    /// # Errors
    ///
    /// The socket's error; `InvalidData` for a frame above [`MAX_FRAME`] or a stream that
    /// ends inside a frame. The connection cannot be trusted after any of those.
    pub(crate) async fn read_frame(&mut self, stream: &UnixStream) -> io::Result<Option<BytesMut>> {
        loop {
            if let Some(frame) = self.frame()? {
                // Every byte read and no longer buffered (the codec may hold the next
                // frame's header) has been decoded.
                self.frame_start = self.frame_end;
                self.frame_end = self.read_total - self.buf.len() as u64;
                return Ok(Some(frame));
            }
            let mut chunk = [0u8; 8192];
            let read = stream
                .async_io(Interest::READABLE, || {
                    crate::sys::recv_with_fds(stream.as_fd(), &mut chunk, &mut self.received)
                })
                .await;
            let read = read?;
            self.read_total += read as u64;
            let at = self.read_total;
            self.fds.extend(self.received.drain(..).map(|fd| (at, fd)));
            self.buf.extend_from_slice(&chunk[..read]);
            if read == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the local api connection closed inside a frame",
                    ))
                };
            }
        }
    }

    /// The descriptor that came with the frame just read, if any. Descriptors of earlier
    /// frames that were not taken are closed.
    #[cfg_attr(not(feature = "daemon"), allow(dead_code))] // qosd's side of the api
    pub(crate) fn take_fd(&mut self) -> Option<OwnedFd> {
        while self
            .fds
            .front()
            .is_some_and(|(at, _)| *at <= self.frame_start)
        {
            self.fds.pop_front();
        }
        match self.fds.front() {
            Some((at, _)) if *at <= self.frame_end => self.fds.pop_front().map(|(_, fd)| fd),
            _ => None,
        }
    }

    fn frame(&mut self) -> io::Result<Option<BytesMut>> {
        self.codec.decode(&mut self.buf)
    }
}

/// The codec both sides frame with: a 4-byte big-endian length, at most [`MAX_FRAME`].
fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Encodes `message` as one frame.
pub(crate) fn encode_frame<T: Serialize>(message: &T) -> io::Result<Vec<u8>> {
    let body =
        serde_json::to_vec(message).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut out = BytesMut::with_capacity(4 + body.len());
    codec().encode(Bytes::from(body), &mut out)?;
    Ok(out.to_vec())
}

/// Writes one frame, with `fd` attached to its first byte when given. Callers serialize
/// their writes (one writer at a time), so frames never interleave.
pub(crate) async fn write_frame(
    stream: &UnixStream,
    frame: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut rest = frame;
    if let Some(fd) = fd {
        let sent = stream
            .async_io(Interest::WRITABLE, || {
                crate::sys::send_with_fd(stream.as_fd(), frame, fd)
            })
            .await?;
        rest = &frame[sent..];
    }
    while !rest.is_empty() {
        stream.writable().await?;
        match stream.try_write(rest) {
            Ok(sent) => rest = &rest[sent..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A plain client of qosd's local API for tools such as `qosctl`: one request at a time,
/// no sessions of its own.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use qtoq::agent::protocol::{socket_path, Client, Reply, Request};
///
/// let mut qosd = Client::connect(socket_path()).await?;
/// if let Reply::Sessions { sessions, .. } = qosd.request(|tag| Request::Sessions { tag }).await? {
///     println!("{} sessions", sessions.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    reader: FrameReader,
    next_tag: u64,
}

impl Client {
    /// Connects to qosd at `path` and says hello.
    ///
    /// # Errors
    ///
    /// `NotFound`/`ConnectionRefused` when qosd does not run there, a timeout after 2 s, or
    /// a version mismatch (`ConnectionRefused`, naming both versions).
    pub async fn connect(path: impl AsRef<std::path::Path>) -> io::Result<Client> {
        let (stream, _welcome) = super::remote::connect(path.as_ref()).await?;
        Ok(Client {
            stream,
            reader: FrameReader::new(),
            next_tag: 1,
        })
    }

    /// Sends the request `make` builds with a fresh tag and returns its reply (frames of
    /// other requests, e.g. watched events, that arrive first are skipped).
    ///
    /// # Errors
    ///
    /// The connection's errors; `UnexpectedEof` when qosd closes it first.
    pub async fn request(&mut self, make: impl FnOnce(u64) -> Request) -> io::Result<Reply> {
        let tag = self.next_tag;
        self.next_tag += 1;
        write_frame(&self.stream, &encode_frame(&make(tag))?, None).await?;
        loop {
            let reply = self.next().await?.ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "qosd closed the connection")
            })?;
            if reply_tag(&reply) == Some(tag) {
                return Ok(reply);
            }
        }
    }

    /// The next frame from qosd (after [`Request::Watch`]: the watched events); `None` when
    /// qosd closed the connection.
    ///
    /// # Errors
    ///
    /// The connection's errors, or a frame that is not a [`Reply`].
    pub async fn next(&mut self) -> io::Result<Option<Reply>> {
        self.reader.read(&self.stream).await
    }
}

/// The tag a reply answers, if it answers a request.
pub(crate) fn reply_tag(reply: &Reply) -> Option<u64> {
    match reply {
        Reply::Opened { tag, .. }
        | Reply::Released { tag, .. }
        | Reply::Stats { tag, .. }
        | Reply::Sessions { tag, .. }
        | Reply::Watching { tag }
        | Reply::PolicyReloaded { tag, .. } => Some(*tag),
        Reply::Error { tag, .. } => *tag,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::intserv::TokenBucket;

    /// Every value a request carries survives JSON, including an unbounded peak rate
    /// (infinity, which JSON cannot write as a number).
    #[test]
    fn requests_survive_the_trip() {
        let open = Request::Open {
            tag: 7,
            role: OpenRole::Server {
                signaled: None,
                flowspec: Some(FlowSpec::ControlledLoad(TokenBucket::new(1e6, 65_536.0))),
                fallback: FlowSpec::ControlledLoad(TokenBucket::new(125_000.0, 16_384.0)),
            },
            notify: true,
        };
        let frame = encode_frame(&open).expect("encodes");
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        let back: Request = serde_json::from_slice(&frame[4..]).expect("decodes");
        assert_eq!(back, open);
    }

    /// A session row's age is a number of milliseconds in JSON (`qosctl sessions --json`).
    #[test]
    fn session_rows_carry_their_age_in_milliseconds() {
        let row = SessionRow {
            session: 3,
            local: "127.0.0.1:5001".parse().expect("address"),
            remote: "127.0.0.1:40000".parse().expect("address"),
            role: "sender".into(),
            state: "established".into(),
            service: Some("controlled_load".into()),
            rate: Some(1e6),
            pid: Some(42),
            uid: Some(0),
            program: Some("server".into()),
            age: Duration::from_millis(1_500),
        };
        let json = serde_json::to_value(&row).expect("encodes");
        assert_eq!(json["age_ms"], 1_500);
        assert_eq!(json["rate"], 1e6);
        assert_eq!(json["local"], "127.0.0.1:5001");
        let back: SessionRow = serde_json::from_value(json).expect("decodes");
        assert_eq!(back, row);
    }

    /// Frames written back to back arrive in one read: a descriptor belongs to the frame it
    /// was sent with, not to the first frame decoded after it came (an open following a
    /// release in the same read lost its socket to the release).
    #[tokio::test]
    async fn a_descriptor_goes_to_the_frame_it_came_with() {
        let (a, b) = UnixStream::pair().expect("socket pair");
        let passed = std::fs::File::open("/dev/null").expect("a descriptor to pass");
        let first = encode_frame(&Request::Sessions { tag: 1 }).expect("encodes");
        let second = encode_frame(&Request::Sessions { tag: 2 }).expect("encodes");
        let third = encode_frame(&Request::Sessions { tag: 3 }).expect("encodes");
        write_frame(&a, &first, None).await.expect("write");
        write_frame(&a, &second, Some(passed.as_fd()))
            .await
            .expect("write");
        write_frame(&a, &third, None).await.expect("write");
        let mut reader = FrameReader::new();
        let mut fds = Vec::new();
        for tag in 1..=3u64 {
            let request: Request = reader.read(&b).await.expect("read").expect("a frame");
            assert_eq!(request, Request::Sessions { tag });
            fds.push(reader.take_fd().is_some());
        }
        assert_eq!(fds, [false, true, false]);
    }

    #[test]
    fn errors_keep_their_kind_across_the_api() {
        let denied = QosError::AdmissionDenied(AdmissionDenied::policy("no rule"));
        let remote = RemoteError::from(&denied);
        let json = serde_json::to_vec(&remote).expect("encodes");
        let back: RemoteError = serde_json::from_slice(&json).expect("decodes");
        assert_eq!(QosError::from(back), denied);
        assert_eq!(
            QosError::from(RemoteError::Refused("full".into())),
            QosError::Daemon("full".into())
        );
    }
}
