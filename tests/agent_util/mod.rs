//! Helpers shared by the agent and API integration tests.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use qtoq::agent::Transport;
use qtoq::{Agent, QosEvent, QosEvents};

/// How long a test waits for one event before failing.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loopback address no other test (of this or another process) uses: 127.P.N.N' with P
/// from the pid and N from a counter, so agents can all bind the standard RSVP port.
pub fn unique_loopback() -> IpAddr {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let second = 16 + (pid % 200) as u8;
    let third = ((n / 250) % 250) as u8 + 1;
    let fourth = (n % 250) as u8 + 2;
    IpAddr::V4(Ipv4Addr::new(127, second, third, fourth))
}

/// An agent on its own loopback address with UDP encapsulation on the standard port.
pub fn udp_agent() -> Agent {
    Agent::builder()
        .transport(Transport::udp())
        .local_addr(unique_loopback())
        .build()
        .expect("agent starts")
}

/// The agent's (first) address.
pub fn addr_of(agent: &Agent) -> IpAddr {
    agent.local_addrs()[0]
}

/// Reads events until one matches `want`, returning all read (the match last). Panics on
/// timeout or end of stream, listing what was seen.
pub async fn until(
    events: &mut QosEvents,
    what: &str,
    want: impl Fn(&QosEvent) -> bool,
) -> Vec<QosEvent> {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(EVENT_TIMEOUT, events.next()).await {
            Ok(Some(event)) => {
                let done = want(&event);
                seen.push(event);
                if done {
                    return seen;
                }
            }
            Ok(None) => panic!("event stream ended before {what}; saw {seen:?}"),
            Err(_) => panic!("timed out waiting for {what}; saw {seen:?}"),
        }
    }
}

/// The kind of an event, for order assertions.
pub fn kind(event: &QosEvent) -> &'static str {
    match event {
        QosEvent::PathReceived { .. } => "PathReceived",
        QosEvent::ResvReceived { .. } => "ResvReceived",
        QosEvent::Established { .. } => "Established",
        QosEvent::Confirmed { .. } => "Confirmed",
        QosEvent::PathError { .. } => "PathError",
        QosEvent::ResvError { .. } => "ResvError",
        QosEvent::AdmissionDenied { .. } => "AdmissionDenied",
        QosEvent::TornDown { .. } => "TornDown",
        QosEvent::Expired { .. } => "Expired",
        _ => "other",
    }
}

pub fn kinds(events: &[QosEvent]) -> Vec<&'static str> {
    events.iter().map(kind).collect()
}

/// Waits until the agent holds no session (teardown is asynchronous on drop).
pub async fn until_no_sessions(agent: &Agent) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let count = agent.session_count().await.expect("agent running");
        if count == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent still holds {count} sessions"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether a test needing privileges (`what`) may run: true when we have them; otherwise
/// prints why and returns false, or panics if `QTOQ_REQUIRE_PRIVILEGED=1`.
pub fn privileged(what: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if std::env::var("QTOQ_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{what} is required (QTOQ_REQUIRE_PRIVILEGED=1) but not available");
    }
    eprintln!("skipping: {what} not available");
    false
}
