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
/// Waits for `Established` on `events` (`who` names the end if it never comes); returns the
/// events seen, as [`until`].
pub async fn until_established(events: &mut QosEvents, who: &str) -> Vec<QosEvent> {
    until(events, &format!("{who} Established"), |e| {
        matches!(e, QosEvent::Established { .. })
    })
    .await
}

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
        QosEvent::NoSender { .. } => "NoSender",
        QosEvent::NoReceiver { .. } => "NoReceiver",
        _ => "other",
    }
}

pub fn kinds(events: &[QosEvent]) -> Vec<&'static str> {
    events.iter().map(kind).collect()
}

/// Waits until the agent holds no session for a connection (teardown is asynchronous on
/// drop) and, once every end is closed, no RSVP state at all.
pub async fn until_no_sessions(agent: &Agent) {
    until_clean(agent, true).await
}

/// Waits until the agent holds no session for a connection; RSVP state a live peer keeps
/// refreshing may remain.
pub async fn until_no_owned_sessions(agent: &Agent) {
    until_clean(agent, false).await
}

async fn until_clean(agent: &Agent, no_state: bool) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let stats = agent.stats().await.expect("agent running");
        let count = agent.session_count().await.expect("agent running");
        if count == 0 && (!no_state || stats.engine_sessions == 0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent still holds {count} sessions: {stats:?}"
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

/// Runs the RSVP flow between a server on `server_agent` and a client on `client_agent`
/// (each bound to the agent's first address): both ends established with the expected
/// events in order, data through, the client closes and the server sees `TornDown`, the
/// server closes, and neither agent holds a session afterwards. Returns the server's and the
/// client's TCP addresses.
pub async fn cross_agent_flow(
    server_agent: &Agent,
    client_agent: &Agent,
) -> (std::net::SocketAddr, std::net::SocketAddr) {
    use qtoq::{QosListener, QosSpec, QosStream};
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let spec = QosSpec::controlled_load(500_000, 32_768);
    let listener = QosListener::builder()
        .agent(server_agent)
        .spec(spec)
        .bind(SocketAddr::new(addr_of(server_agent), 0))
        .await
        .unwrap();
    let (client, accepted) = tokio::join!(
        QosStream::builder()
            .agent(client_agent)
            .spec(spec)
            .bind(SocketAddr::new(addr_of(client_agent), 0))
            .connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let mut client = client.expect("connect");
    let (mut server, _) = accepted.expect("accept");
    let mut server_events = server.events();
    let mut client_events = client.events();
    let s = until(&mut server_events, "server Established", |e| {
        matches!(e, QosEvent::Established { .. })
    })
    .await;
    let c = until(&mut client_events, "client Established", |e| {
        matches!(e, QosEvent::Established { .. })
    })
    .await;
    assert_eq!(kinds(&s), ["ResvReceived", "Established"]);
    assert_eq!(kinds(&c), ["PathReceived", "Confirmed", "Established"]);
    let addrs = (server.local_addr().unwrap(), client.local_addr().unwrap());
    server.write_all(b"over the wire").await.unwrap();
    let mut buf = [0u8; 13];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"over the wire");
    client.close().await.expect("client close");
    until(&mut server_events, "server TornDown", |e| {
        matches!(e, QosEvent::TornDown { .. })
    })
    .await;
    server.close().await.expect("server close");
    until_no_sessions(server_agent).await;
    until_no_sessions(client_agent).await;
    addrs
}
