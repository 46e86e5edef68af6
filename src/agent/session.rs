//! One session as its owner sees it: what a new session does first ([`Setup`]), the state
//! the agent and the owner's handles share ([`SessionShared`]: the event log and the current
//! [`Reservation`]), and the guard that releases the session when its owner lets go.
//!
//! The socket API reads this through its streams; the agent never names a socket type.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::oneshot;

use super::Agent;
use crate::engine::{Event, SessionId, SessionKey};
use crate::error::QosError;
use crate::flow::{Flow, Owner};
use crate::policy::Policy;
use crate::wire::intserv::{FlowSpec, TokenBucket};
use crate::wire::RsvpError;

/// What a new session does first.
#[derive(Debug)]
pub(crate) enum Setup {
    /// Server with RSVP: a local sender; PATH goes out, a RESV is expected.
    Sender {
        key: SessionKey,
        sender: SocketAddr,
        tspec: TokenBucket,
    },
    /// Client with RSVP: a receiver primed for the PATH, reserving on arrival.
    Receiver {
        key: SessionKey,
        flowspec: FlowSpec,
        confirm: bool,
    },
    /// Server without signaling: admission and rule load now.
    Unsignaled {
        key: SessionKey,
        flow: Flow,
        flowspec: FlowSpec,
    },
    /// Server, an accepted connection: what the listener chose, the rest from the agent's
    /// policy (see [`Setup::resolve`]). Becomes `Sender` or `Unsignaled`.
    Accepted {
        key: SessionKey,
        flow: Flow,
        /// `Some(false)`: a rule marked with no signaling; `None`: as the policy says.
        signaled: Option<bool>,
        /// `None`: the matching policy rule's, else `fallback`.
        flowspec: Option<FlowSpec>,
        fallback: FlowSpec,
    },
}

impl Setup {
    pub(super) fn key(&self) -> SessionKey {
        match self {
            Setup::Sender { key, .. }
            | Setup::Receiver { key, .. }
            | Setup::Unsignaled { key, .. }
            | Setup::Accepted { key, .. } => *key,
        }
    }

    pub(super) fn role(&self) -> &'static str {
        match self {
            Setup::Sender { .. } => "sender",
            Setup::Receiver { .. } => "receiver",
            Setup::Unsignaled { .. } => "unsignaled",
            Setup::Accepted { .. } => "accepted",
        }
    }

    /// The flow this host sends data for, which admission is asked for (after
    /// [`resolve`](Self::resolve)): a sender's or an unsignaled rule's; `None` for a
    /// receiver.
    pub(super) fn sent_flow(&self) -> Option<Flow> {
        match self {
            Setup::Sender { key, sender, .. } => Some(Flow {
                sender: *sender,
                receiver: key.destination,
                protocol: key.protocol,
            }),
            Setup::Unsignaled { flow, .. } | Setup::Accepted { flow, .. } => Some(*flow),
            Setup::Receiver { .. } => None,
        }
    }

    /// Whether the session is RSVP-signaled (after [`resolve`](Self::resolve)).
    pub(super) fn signaled(&self) -> bool {
        !matches!(self, Setup::Unsignaled { .. })
    }

    /// An accepted connection's setup with the caller's unset choices taken from the policy
    /// rule that matches its flow, owned locally by `owner`, now (IBM i's server looked the
    /// rule up on accept): RSVP unless the rule says `signaling = false`; the rule's
    /// reservation, else `fallback`. Other setups are returned as they are.
    pub(super) fn resolve(self, policy: &Policy, owner: Option<&Owner>) -> Setup {
        let Setup::Accepted {
            key,
            flow,
            signaled,
            flowspec,
            fallback,
        } = self
        else {
            return self;
        };
        let rule = if signaled.is_some() && flowspec.is_some() {
            None
        } else {
            policy.lookup(&flow, owner, policy.now())
        };
        let signaled = signaled.unwrap_or(rule.is_none_or(|rule| rule.signaling));
        let flowspec = flowspec
            .or_else(|| rule.and_then(|rule| rule.flowspec()))
            .unwrap_or(fallback);
        if signaled {
            Setup::Sender {
                key,
                sender: flow.sender,
                tspec: *flowspec.tspec(),
            }
        } else {
            Setup::Unsignaled {
                key,
                flow,
                flowspec,
            }
        }
    }
}

/// A session the agent opened for a connection.
pub(crate) struct Opened {
    pub(crate) id: SessionId,
    pub(crate) shared: Arc<SessionShared>,
    /// Whether it is RSVP-signaled (an accepted connection's setup is resolved by policy).
    pub(crate) signaled: bool,
}

pub(crate) struct OpenRequest {
    pub(super) setup: Setup,
    pub(super) peer: SocketAddr,
    pub(super) notify: bool,
    /// A duplicate of the data sender's socket, for enforcers that act on sockets.
    pub(super) socket: Option<OwnedFd>,
    /// The local process the session belongs to, when known: its policy rules may match
    /// on it (`user`, `program`).
    pub(super) owner: Option<Owner>,
    pub(super) reply: oneshot::Sender<Result<Opened, QosError>>,
}

/// How many events one connection keeps for its streams; older ones are dropped (and
/// counted) if nobody reads them. Signaling produces a handful per connection.
pub(crate) const EVENT_LOG_LIMIT: usize = 1024;

/// The current state of a session's reservation, as its owner sees it (a connection's is
/// `QosStream::reservation`).
///
/// A connection starts `Pending`. Against a peer that does not signal it becomes
/// [`NoSender`](Self::NoSender) (client) or [`NoReceiver`](Self::NoReceiver) (server) after
/// the agent's peer wait, and stays so unless the peer signals after all.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Reservation {
    /// Signaling is under way; no rule in force yet.
    Pending,
    /// The reservation is in force.
    Established {
        /// The reservation in force.
        flowspec: FlowSpec,
    },
    /// Admission control refused it.
    Denied {
        /// The RSVP error: an admission control failure (code 1) or a policy control failure
        /// (code 2).
        error: RsvpError,
        /// Why.
        reason: String,
    },
    /// An RSVP error was reported (PathErr / ResvErr).
    Failed {
        /// The RSVP error (code and value).
        error: RsvpError,
        /// The node that detected it.
        node: IpAddr,
    },
    /// Torn down, expired, or closed.
    Ended {
        /// Why.
        reason: String,
    },
    /// Client: no PATH came from the server within the agent's peer wait
    /// ([`AgentBuilder::peer_wait`](crate::agent::AgentBuilder::peer_wait), 3 s by default),
    /// as [`Event::NoSender`] reported — most likely the server does not use RSVP (a plain
    /// TCP server, or no agent on its host). Winsock GQoS called it `WSA_QOS_NO_SENDERS`.
    ///
    /// The connection runs best effort so far; the request stays primed, and a PATH that
    /// arrives later still establishes the reservation (then this becomes `Established`).
    NoSender,
    /// Server: no RESV came from the client within the agent's peer wait
    /// ([`AgentBuilder::peer_wait`](crate::agent::AgentBuilder::peer_wait), 3 s by default),
    /// as [`Event::NoReceiver`] reported — most likely the client does not use RSVP (a
    /// plain TCP client, or no agent on its host). Winsock GQoS called it
    /// `WSA_QOS_NO_RECEIVERS`.
    ///
    /// The connection runs best effort so far; the PATH goes on being refreshed, and a RESV
    /// that arrives later still establishes the reservation (then this becomes
    /// `Established`).
    NoReceiver,
}

struct SessionState {
    log: VecDeque<Event>,
    /// Sequence number of `log[0]`.
    base: u64,
    dropped: u64,
    wakers: Vec<Waker>,
    reservation: Reservation,
    ended: bool,
    notify: bool,
    /// Told each event as it is logged, and the end (qosd forwards to its client with it).
    tap: Option<Tap>,
}

/// What a [`Tap`] is told.
#[cfg_attr(not(feature = "daemon"), allow(dead_code))] // qosd's forwarding
pub(crate) enum Tapped<'a> {
    /// An event, as it is logged.
    Event(&'a Event),
    /// The session ended, for this reason.
    Ended(&'a str),
}

/// A callback told of a session's events in order as they happen, under the session's lock:
/// it must not block or take locks that are held while this session's state is read.
pub(crate) type Tap = Box<dyn Fn(Tapped<'_>) + Send + Sync>;

/// What the agent and a connection's handles share about one session.
pub(crate) struct SessionShared {
    state: Mutex<SessionState>,
}

impl fmt::Debug for SessionShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("SessionShared")
            .field("events", &(s.base + s.log.len() as u64))
            .field("reservation", &s.reservation)
            .field("ended", &s.ended)
            .finish()
    }
}

impl SessionShared {
    pub(crate) fn new(notify: bool) -> Arc<Self> {
        Arc::new(SessionShared {
            state: Mutex::new(SessionState {
                log: VecDeque::new(),
                base: 0,
                dropped: 0,
                wakers: Vec::new(),
                reservation: Reservation::Pending,
                ended: false,
                notify,
                tap: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `event`: updates the reservation and, unless the owner asked for quiet
    /// (`notify(false)`) and it is neither an error nor the end, appends it for the streams.
    /// (`NoSender`/`NoReceiver` are progress: quiet streams do not get them, the reservation
    /// shows them regardless.)
    pub(crate) fn push(&self, event: Event) {
        let wakers = {
            let mut s = self.lock();
            match &event {
                Event::Established { flowspec } => {
                    s.reservation = Reservation::Established {
                        flowspec: *flowspec,
                    }
                }
                Event::AdmissionDenied { error, reason } => {
                    s.reservation = Reservation::Denied {
                        error: *error,
                        reason: reason.clone(),
                    }
                }
                Event::PathError { error, node } | Event::ResvError { error, node } => {
                    s.reservation = Reservation::Failed {
                        error: *error,
                        node: *node,
                    }
                }
                Event::TornDown { reason } | Event::Expired { reason } => {
                    s.reservation = Reservation::Ended {
                        reason: reason.clone(),
                    }
                }
                // Only news while nothing else is known: never hides an error or the end.
                Event::NoSender { .. } if s.reservation == Reservation::Pending => {
                    s.reservation = Reservation::NoSender
                }
                Event::NoReceiver { .. } if s.reservation == Reservation::Pending => {
                    s.reservation = Reservation::NoReceiver
                }
                _ => {}
            }
            if !s.notify && !event.is_error_or_end() {
                return;
            }
            if s.log.len() >= EVENT_LOG_LIMIT {
                s.log.pop_front();
                s.base += 1;
                s.dropped += 1;
            }
            if let Some(tap) = &s.tap {
                tap(Tapped::Event(&event));
            }
            s.log.push_back(event);
            std::mem::take(&mut s.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Tells `tap` the events from `next` on that are logged already, then every later one as
    /// it is logged, and the end (at once if the session has ended). No event is told twice
    /// or missed: it all happens under the session's lock.
    #[cfg_attr(not(feature = "daemon"), allow(dead_code))] // qosd's forwarding
    pub(crate) fn set_tap(&self, next: u64, tap: Tap) {
        let mut s = self.lock();
        let start = next.saturating_sub(s.base) as usize;
        for event in s.log.iter().skip(start) {
            tap(Tapped::Event(event));
        }
        if s.ended {
            tap(Tapped::Ended(&ended_reason(&s.reservation)));
        } else {
            s.tap = Some(tap);
        }
    }

    /// The session is gone: streams end once they have read everything.
    pub(crate) fn end(&self, reason: &str) {
        let wakers = {
            let mut s = self.lock();
            if s.ended {
                return;
            }
            s.ended = true;
            if !matches!(s.reservation, Reservation::Ended { .. }) {
                s.reservation = Reservation::Ended {
                    reason: reason.to_owned(),
                };
            }
            if let Some(tap) = s.tap.take() {
                tap(Tapped::Ended(&ended_reason(&s.reservation)));
            }
            std::mem::take(&mut s.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    pub(crate) fn reservation(&self) -> Reservation {
        self.lock().reservation.clone()
    }

    /// The event at sequence number `*next` (advanced past events the bounded log
    /// dropped), `None` once the session ended and every event was read.
    pub(crate) fn poll_event(&self, next: &mut u64, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let mut s = self.lock();
        if *next < s.base {
            *next = s.base;
        }
        let index = (*next - s.base) as usize;
        if let Some(event) = s.log.get(index) {
            *next += 1;
            return Poll::Ready(Some(event.clone()));
        }
        if s.ended {
            return Poll::Ready(None);
        }
        if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            s.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The events from `*next` on that are already logged, without waiting; `*next` moves
    /// past them.
    #[cfg_attr(not(feature = "daemon"), allow(dead_code))] // qosd's open reply carries them
    pub(crate) fn logged_events(&self, next: &mut u64) -> Vec<Event> {
        let s = self.lock();
        if *next < s.base {
            *next = s.base;
        }
        let start = (*next - s.base) as usize;
        let events: Vec<Event> = s.log.iter().skip(start).cloned().collect();
        *next += events.len() as u64;
        events
    }

    /// How many events the bounded log dropped because nobody read them in time.
    pub(crate) fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

/// Why an ended session ended, for its owner.
fn ended_reason(reservation: &Reservation) -> String {
    match reservation {
        Reservation::Ended { reason } => reason.clone(),
        _ => "released".to_owned(),
    }
}

/// An open request's answer not yet read: dropped unread (the opener was cancelled after
/// the agent answered), it releases the session nobody will own.
pub(super) struct PendingOpen {
    pub(super) agent: Agent,
    pub(super) answer: oneshot::Receiver<Result<Opened, QosError>>,
}

impl Drop for PendingOpen {
    fn drop(&mut self) {
        if let Ok(Ok(opened)) = self.answer.try_recv() {
            self.agent.release_soon(opened.id);
        }
    }
}

/// Owns one session of an agent: releases it (in the background) when dropped.
pub(crate) struct SessionGuard {
    pub(super) agent: Agent,
    pub(crate) id: SessionId,
    pub(crate) shared: Arc<SessionShared>,
    /// Whether the session is RSVP-signaled.
    pub(crate) signaled: bool,
    pub(super) released: bool,
}

impl fmt::Debug for SessionGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionGuard")
            .field("id", &self.id)
            .field("agent", &self.agent.log_name())
            .finish()
    }
}

impl SessionGuard {
    /// Releases the session and waits until the agent has torn it down and unloaded its rule.
    pub(crate) async fn release(mut self) -> Result<(), QosError> {
        self.released = true;
        self.agent.release(self.id).await
    }

    /// Starts releasing the session (see [`Agent::begin_release`]): returns once the
    /// release is ahead of anything the agent is asked afterwards, with what resolves when
    /// it is done.
    #[cfg_attr(not(feature = "daemon"), allow(dead_code))] // qosd's side of the api
    pub(crate) async fn begin_release(
        mut self,
    ) -> futures::future::BoxFuture<'static, Result<(), QosError>> {
        self.released = true;
        self.agent.begin_release(self.id).await
    }

    pub(crate) fn agent(&self) -> &Agent {
        &self.agent
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if !self.released {
            self.agent.release_soon(self.id);
        }
    }
}
