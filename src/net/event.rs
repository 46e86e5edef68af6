//! The event stream of one connection: [`QosEvents`] of [`QosEvent`]s, and the current
//! [`Reservation`].

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use crate::wire::intserv::FlowSpec;

/// How many events one connection keeps for its streams; older ones are dropped (and
/// counted) if nobody reads them. Signaling produces a handful per connection.
const EVENT_LOG_LIMIT: usize = 1024;

/// Something that happened to a connection's reservation (the engine's event, unchanged).
pub use crate::engine::Event as QosEvent;

/// The current state of a connection's reservation (see `QosStream::reservation`).
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
        /// RSVP error code.
        code: u8,
        /// RSVP error value.
        value: u16,
        /// Why.
        reason: String,
    },
    /// An RSVP error was reported (PathErr / ResvErr).
    Failed {
        /// RSVP error code.
        code: u8,
        /// RSVP error value.
        value: u16,
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
    /// as [`QosEvent::NoSender`] reported — most likely the server does not use RSVP (a plain
    /// TCP server, or no agent on its host). Winsock GQoS called it `WSA_QOS_NO_SENDERS`.
    ///
    /// The connection runs best effort so far; the request stays primed, and a PATH that
    /// arrives later still establishes the reservation (then this becomes `Established`).
    NoSender,
    /// Server: no RESV came from the client within the agent's peer wait
    /// ([`AgentBuilder::peer_wait`](crate::agent::AgentBuilder::peer_wait), 3 s by default),
    /// as [`QosEvent::NoReceiver`] reported — most likely the client does not use RSVP (a
    /// plain TCP client, or no agent on its host). Winsock GQoS called it
    /// `WSA_QOS_NO_RECEIVERS`.
    ///
    /// The connection runs best effort so far; the PATH goes on being refreshed, and a RESV
    /// that arrives later still establishes the reservation (then this becomes
    /// `Established`).
    NoReceiver,
}

struct SessionState {
    log: VecDeque<QosEvent>,
    /// Sequence number of `log[0]`.
    base: u64,
    dropped: u64,
    wakers: Vec<Waker>,
    reservation: Reservation,
    ended: bool,
    notify: bool,
}

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
    pub(crate) fn push(&self, event: QosEvent) {
        let wakers = {
            let mut s = self.lock();
            match &event {
                QosEvent::Established { flowspec } => {
                    s.reservation = Reservation::Established {
                        flowspec: *flowspec,
                    }
                }
                QosEvent::AdmissionDenied {
                    code,
                    value,
                    reason,
                } => {
                    s.reservation = Reservation::Denied {
                        code: *code,
                        value: *value,
                        reason: reason.clone(),
                    }
                }
                QosEvent::PathError { code, value, node }
                | QosEvent::ResvError { code, value, node } => {
                    s.reservation = Reservation::Failed {
                        code: *code,
                        value: *value,
                        node: *node,
                    }
                }
                QosEvent::TornDown { reason } | QosEvent::Expired { reason } => {
                    s.reservation = Reservation::Ended {
                        reason: reason.clone(),
                    }
                }
                // Only news while nothing else is known: never hides an error or the end.
                QosEvent::NoSender { .. } if s.reservation == Reservation::Pending => {
                    s.reservation = Reservation::NoSender
                }
                QosEvent::NoReceiver { .. } if s.reservation == Reservation::Pending => {
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
            s.log.push_back(event);
            std::mem::take(&mut s.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
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
            std::mem::take(&mut s.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    pub(crate) fn reservation(&self) -> Reservation {
        self.lock().reservation.clone()
    }
}

/// The events of one connection, in order, as a [`futures::Stream`].
///
/// Every `QosEvents` of a connection starts at its first event, so one taken after `accept`
/// or `connect` returned still sees what happened before. The stream ends after the session is
/// gone (closed, dropped, or its agent stopped) and every event was read.
///
/// # Examples
///
/// ```no_run
/// # async fn f(stream: qtoq::QosStream) {
/// use futures::StreamExt;
/// use qtoq::QosEvent;
///
/// let mut events = stream.events();
/// while let Some(event) = events.next().await {
///     if let QosEvent::Established { flowspec } = event {
///         println!("reserved {} B/s", flowspec.reserved_rate());
///         break;
///     }
/// }
/// # }
/// ```
pub struct QosEvents {
    shared: Arc<SessionShared>,
    next: u64,
}

impl fmt::Debug for QosEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QosEvents")
            .field("next", &self.next)
            .field("session", &self.shared)
            .finish()
    }
}

impl QosEvents {
    pub(crate) fn new(shared: Arc<SessionShared>) -> Self {
        QosEvents { shared, next: 0 }
    }

    /// How many events this connection dropped because nobody read them in time.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().dropped
    }
}

impl futures::Stream for QosEvents {
    type Item = QosEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<QosEvent>> {
        let this = self.get_mut();
        let mut s = this.shared.lock();
        if this.next < s.base {
            this.next = s.base;
        }
        let index = (this.next - s.base) as usize;
        if let Some(event) = s.log.get(index) {
            this.next += 1;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::intserv::TokenBucket;
    use futures::StreamExt;

    fn flowspec() -> FlowSpec {
        FlowSpec::ControlledLoad(TokenBucket::new(1000.0, 100.0))
    }

    #[tokio::test]
    async fn every_stream_sees_every_event_then_ends() {
        let shared = SessionShared::new(true);
        let mut early = QosEvents::new(shared.clone());
        shared.push(QosEvent::Established {
            flowspec: flowspec(),
        });
        let mut late = QosEvents::new(shared.clone());
        assert_eq!(
            shared.reservation(),
            Reservation::Established {
                flowspec: flowspec()
            }
        );
        let waiter = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(e) = early.next().await {
                seen.push(e);
            }
            seen
        });
        shared.push(QosEvent::TornDown {
            reason: "peer".into(),
        });
        shared.end("closed");
        let seen = waiter.await.unwrap();
        assert_eq!(seen.len(), 2);
        assert!(matches!(seen[1], QosEvent::TornDown { .. }));
        assert_eq!(late.next().await, Some(seen[0].clone()));
        assert_eq!(late.next().await, Some(seen[1].clone()));
        assert_eq!(late.next().await, None);
        assert!(matches!(shared.reservation(), Reservation::Ended { reason } if reason == "peer"));
    }

    #[tokio::test]
    async fn quiet_sessions_only_report_errors_and_the_end() {
        let shared = SessionShared::new(false);
        shared.push(QosEvent::Established {
            flowspec: flowspec(),
        });
        shared.push(QosEvent::Expired {
            reason: "path".into(),
        });
        shared.end("closed");
        let all: Vec<_> = QosEvents::new(shared.clone()).collect().await;
        assert_eq!(
            all,
            vec![QosEvent::Expired {
                reason: "path".into()
            }]
        );
    }

    #[tokio::test]
    async fn no_peer_is_progress_shown_by_the_reservation_until_something_else_happens() {
        use std::time::Duration;
        let waited = Duration::from_secs(3);
        let quiet = SessionShared::new(false);
        quiet.push(QosEvent::NoSender { waited });
        assert_eq!(quiet.reservation(), Reservation::NoSender);
        // A late peer establishes after all.
        quiet.push(QosEvent::Established {
            flowspec: flowspec(),
        });
        assert_eq!(
            quiet.reservation(),
            Reservation::Established {
                flowspec: flowspec()
            }
        );
        quiet.end("closed");
        let all: Vec<_> = QosEvents::new(quiet).collect().await;
        assert!(all.is_empty(), "quiet streams get no progress: {all:?}");

        let loud = SessionShared::new(true);
        loud.push(QosEvent::NoReceiver { waited });
        assert_eq!(loud.reservation(), Reservation::NoReceiver);
        loud.push(QosEvent::ResvError {
            code: 21,
            value: 1,
            node: IpAddr::from([127, 0, 0, 1]),
        });
        // It never hides what is known already.
        loud.push(QosEvent::NoReceiver { waited });
        assert!(matches!(
            loud.reservation(),
            Reservation::Failed { code: 21, .. }
        ));
        loud.end("closed");
        let all: Vec<_> = QosEvents::new(loud).collect().await;
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], QosEvent::NoReceiver { waited });
        assert!(!all[0].is_error_or_end());
    }

    #[test]
    fn the_log_is_bounded() {
        let shared = SessionShared::new(true);
        for _ in 0..EVENT_LOG_LIMIT + 10 {
            shared.push(QosEvent::Confirmed {
                flowspec: flowspec(),
            });
        }
        let events = QosEvents::new(shared);
        assert_eq!(events.dropped(), 10);
    }
}
