//! The event stream of one connection: [`QosEvents`] of [`QosEvent`]s, read from the
//! session state the agent keeps for the connection.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::agent::SessionShared;

/// Something that happened to a connection's reservation (the engine's event, unchanged).
pub use crate::engine::Event as QosEvent;

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
        self.shared.dropped()
    }
}

impl futures::Stream for QosEvents {
    type Item = QosEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<QosEvent>> {
        let this = self.get_mut();
        this.shared.poll_event(&mut this.next, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::Reservation;
    use crate::wire::intserv::FlowSpec;
    use crate::wire::intserv::TokenBucket;
    use crate::wire::RsvpError;
    use futures::StreamExt;
    use std::net::IpAddr;

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
            error: RsvpError::SERVICE_CONFLICT,
            node: IpAddr::from([127, 0, 0, 1]),
        });
        // It never hides what is known already.
        loud.push(QosEvent::NoReceiver { waited });
        assert!(matches!(
            loud.reservation(),
            Reservation::Failed {
                error: RsvpError::SERVICE_CONFLICT,
                ..
            }
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
        for _ in 0..crate::agent::EVENT_LOG_LIMIT + 10 {
            shared.push(QosEvent::Confirmed {
                flowspec: flowspec(),
            });
        }
        let events = QosEvents::new(shared);
        assert_eq!(events.dropped(), 10);
    }
}
