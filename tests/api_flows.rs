//! The seed's flows end to end over real loopback sockets, both ends in one agent (the
//! engine's same-host delivery), with the recording enforcer watching rule loads.

mod agent_util;

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use agent_util::*;
use futures::StreamExt;
use qtoq::agent::Transport;
use qtoq::enforce::{Recorded, Recording};
use qtoq::flow::{Admission, AdmissionDenied, AdmissionGrant, AdmissionRequest, RuleId};
use qtoq::wire::RsvpError;
use qtoq::{Agent, QosError, QosEvent, QosListener, QosSpec, QosStream, Reservation, Signaling};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn recorded_agent(ip: IpAddr, port: u16) -> (Agent, Recording) {
    let recording = Recording::new();
    let agent = Agent::builder()
        .transport(Transport::Udp { port })
        .local_addr(ip)
        .enforcer(Box::new(recording.clone()))
        .build()
        .expect("agent starts");
    (agent, recording)
}

fn spec() -> QosSpec {
    QosSpec::controlled_load(1_000_000, 65_536)
}

/// Server (accepting with RSVP) and client (connecting) of one agent, both established.
async fn rsvp_pair(agent: &Agent, ip: IpAddr) -> (QosStream, QosStream) {
    let listener = QosListener::builder()
        .agent(agent)
        .spec(spec())
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let (client, accepted) = tokio::join!(
        QosStream::builder()
            .agent(agent)
            .spec(spec())
            .bind(SocketAddr::new(ip, 0))
            .connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let client = client.unwrap();
    let (server, peer) = accepted.unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(server.peer_addr().unwrap(), client.local_addr().unwrap());
    assert_eq!(client.peer_addr().unwrap(), server.local_addr().unwrap());
    (server, client)
}

#[tokio::test]
async fn rsvp_flow_events_data_and_close() {
    let ip = unique_loopback();
    let (agent, recording) = recorded_agent(ip, qtoq::agent::RSVP_ENCAP_PORT);
    let (mut server, mut client) = rsvp_pair(&agent, ip).await;
    assert_ne!(server.session_id(), client.session_id());

    let mut server_events = server.events();
    let mut client_events = client.events();
    let s = until_established(&mut server_events, "server").await;
    assert_eq!(kinds(&s), ["ResvReceived", "Established"]);
    let c = until_established(&mut client_events, "client").await;
    assert_eq!(kinds(&c), ["PathReceived", "Confirmed", "Established"]);
    match &c[0] {
        QosEvent::PathReceived { sender, tspec } => {
            assert_eq!(*sender, server.local_addr().unwrap());
            assert_eq!(tspec.rate, 1_000_000.0);
        }
        other => panic!("{other:?}"),
    }
    match &s[1] {
        QosEvent::Established { flowspec } => assert_eq!(flowspec.reserved_rate(), 1_000_000.0),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        server.reservation(),
        Reservation::Established { .. }
    ));
    assert!(matches!(
        client.reservation(),
        Reservation::Established { .. }
    ));
    // The rule is loaded on the sender's side, for the server → client flow.
    let installed = recording.calls();
    match installed.as_slice() {
        [Recorded::Install(rule)] => {
            assert_eq!(rule.flow.sender, server.local_addr().unwrap());
            assert_eq!(rule.flow.receiver, client.local_addr().unwrap());
        }
        other => panic!("expected one install, got {other:?}"),
    }

    // Bytes pass through both ways.
    server.write_all(b"data from server").await.unwrap();
    let mut buf = [0u8; 16];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"data from server");
    client.write_all(b"ack").await.unwrap();
    let mut ack = [0u8; 3];
    server.read_exact(&mut ack).await.unwrap();
    assert_eq!(&ack, b"ack");

    // The client closes: the server sees TornDown, the client's stream ends.
    client.close().await.unwrap();
    let s = until(&mut server_events, "server TornDown", |e| {
        matches!(e, QosEvent::TornDown { .. })
    })
    .await;
    assert_eq!(kinds(&s), ["TornDown"]);
    let rest: Vec<_> = client_events.collect().await;
    assert!(
        rest.iter()
            .all(|e| !matches!(e, QosEvent::Established { .. })),
        "{rest:?}"
    );
    // The server reads the end of the connection, then closes: rule unloaded, nothing left.
    let mut end = Vec::new();
    server.read_to_end(&mut end).await.unwrap();
    assert!(end.is_empty());
    server.close().await.unwrap();
    until_no_sessions(&agent).await;
    assert!(recording.installed().is_empty(), "{:?}", recording.calls());
    assert!(matches!(
        recording.calls().last(),
        Some(Recorded::Remove(_))
    ));
}

#[tokio::test]
async fn server_close_tears_down_the_client() {
    let ip = unique_loopback();
    let (agent, recording) = recorded_agent(ip, qtoq::agent::RSVP_ENCAP_PORT);
    let (server, client) = rsvp_pair(&agent, ip).await;
    let mut client_events = client.events();
    until_established(&mut client_events, "client").await;
    server.close().await.unwrap();
    assert!(recording.installed().is_empty());
    until(&mut client_events, "client TornDown", |e| {
        matches!(e, QosEvent::TornDown { .. })
    })
    .await;
    assert!(matches!(client.reservation(), Reservation::Ended { .. }));
    client.close().await.unwrap();
    until_no_sessions(&agent).await;
}

#[tokio::test]
async fn drop_tears_down_in_the_background() {
    let ip = unique_loopback();
    let (agent, recording) = recorded_agent(ip, qtoq::agent::RSVP_ENCAP_PORT);
    let (mut server, client) = rsvp_pair(&agent, ip).await;
    let mut server_events = server.events();
    until_established(&mut server_events, "server").await;
    let client_events = client.events();
    drop(client);
    until(&mut server_events, "server TornDown", |e| {
        matches!(e, QosEvent::TornDown { .. })
    })
    .await;
    // The dropped client's event stream (which replays from the start) ends.
    let all: Vec<_> = tokio::time::timeout(EVENT_TIMEOUT, client_events.collect())
        .await
        .expect("client events end");
    assert_eq!(
        kinds(&all)[..3],
        ["PathReceived", "Confirmed", "Established"]
    );
    // The dropped client's socket really closed.
    let mut end = Vec::new();
    server.read_to_end(&mut end).await.unwrap();
    drop(server);
    until_no_sessions(&agent).await;
    assert!(recording.installed().is_empty(), "{:?}", recording.calls());
}

/// Admits every second request (the first is refused).
#[derive(Debug, Default)]
struct EveryOther {
    asked: u32,
}

impl Admission for EveryOther {
    fn admit(&mut self, _request: &AdmissionRequest) -> Result<AdmissionGrant, AdmissionDenied> {
        self.asked += 1;
        if self.asked % 2 == 1 {
            Err(AdmissionDenied::new(
                RsvpError::BANDWIDTH_UNAVAILABLE,
                "test pool exhausted",
            ))
        } else {
            Ok(AdmissionGrant {
                dscp: Some(46),
                policy: Some("every-other".into()),
            })
        }
    }
    fn release(&mut self, _rule: RuleId) {}
}

#[tokio::test]
async fn unsignaled_accept_loads_the_rule_before_returning() {
    let ip = unique_loopback();
    let (agent, recording) = recorded_agent(ip, qtoq::agent::RSVP_ENCAP_PORT);
    let listener = QosListener::builder()
        .agent(&agent)
        .signaling(Signaling::None)
        .spec(spec())
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let (client, accepted) = tokio::join!(
        TcpStream::connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let mut client = client.unwrap();
    let (mut server, peer) = accepted.unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(server.signaling(), Signaling::None);
    // Admission and rule load happened before accept returned.
    let live = recording.installed();
    assert_eq!(live.len(), 1, "{:?}", recording.calls());
    match recording.calls().as_slice() {
        [Recorded::Install(rule)] => {
            assert_eq!(rule.flow.sender, server.local_addr().unwrap());
            assert_eq!(rule.flow.receiver, peer);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        server.reservation(),
        Reservation::Established { .. }
    ));
    server.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    client.read_exact(&mut one).await.unwrap();
    server.close().await.unwrap();
    assert!(recording.installed().is_empty(), "{:?}", recording.calls());
    until_no_sessions(&agent).await;
}

#[tokio::test]
async fn unsignaled_denial_closes_that_connection_and_keeps_accepting() {
    let ip = unique_loopback();
    let recording = Recording::new();
    let agent = Agent::builder()
        .local_addr(ip)
        .admission(Box::new(EveryOther::default()))
        .enforcer(Box::new(recording.clone()))
        .build()
        .unwrap();
    let listener = QosListener::builder()
        .agent(&agent)
        .signaling(Signaling::None)
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();

    let (refused_client, refused) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let err = refused.expect_err("first connection is refused");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    match err.get_ref().and_then(|e| e.downcast_ref::<QosError>()) {
        Some(QosError::AdmissionDenied(denied)) => {
            assert_eq!(denied.error, RsvpError::BANDWIDTH_UNAVAILABLE);
            assert!(denied.reason.contains("exhausted"));
        }
        other => panic!("wrong source: {other:?}"),
    }
    // The refused connection was closed by the server.
    let mut refused_client = refused_client.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(EVENT_TIMEOUT, refused_client.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(recording.calls().is_empty(), "{:?}", recording.calls());

    // The listener keeps accepting; the second connection is admitted.
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (server, _) = accepted.expect("second connection admitted");
    match recording.calls().as_slice() {
        [Recorded::Install(rule)] => assert_eq!(rule.dscp, Some(46)),
        other => panic!("{other:?}"),
    }
    drop(client);
    server.close().await.unwrap();
    until_no_sessions(&agent).await;
}

#[tokio::test]
async fn client_without_signaling_is_invalid_and_creates_nothing() {
    let ip = unique_loopback();
    let (agent, _recording) = recorded_agent(ip, qtoq::agent::RSVP_ENCAP_PORT);
    let plain = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let err = QosStream::builder()
        .agent(&agent)
        .signaling(Signaling::None)
        .connect(plain.local_addr().unwrap())
        .await
        .expect_err("signaling none on a client");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(
        err.get_ref().and_then(|e| e.downcast_ref::<QosError>()),
        Some(&QosError::NoSignalingOnClient)
    );
    // No session, no connection attempt.
    let stats = agent.stats().await.unwrap();
    assert_eq!((stats.engine_owners, stats.engine_sessions), (0, 0));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), plain.accept())
            .await
            .is_err(),
        "a connection was made"
    );
}

#[tokio::test]
async fn quiet_connections_report_only_errors_and_the_end() {
    let ip = unique_loopback();
    let (agent, _recording) = recorded_agent(ip, qtoq::agent::RSVP_ENCAP_PORT);
    let listener = QosListener::builder()
        .agent(&agent)
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let (client, accepted) = tokio::join!(
        QosStream::builder()
            .agent(&agent)
            .notify(false)
            .connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let client = client.unwrap();
    let (server, _) = accepted.unwrap();
    let mut server_events = server.events();
    until_established(&mut server_events, "server").await;
    // The client's reservation is established but its stream said nothing.
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while !matches!(client.reservation(), Reservation::Established { .. }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            client.reservation()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut client_events = client.events();
    server.close().await.unwrap();
    let seen = until(&mut client_events, "client TornDown", |e| {
        matches!(e, QosEvent::TornDown { .. })
    })
    .await;
    assert_eq!(kinds(&seen), ["TornDown"]);
    drop(client);
    until_no_sessions(&agent).await;
}

#[tokio::test]
async fn accept_is_cancel_safe() {
    let ip = unique_loopback();
    let (agent, _recording) = recorded_agent(ip, qtoq::agent::RSVP_ENCAP_PORT);
    let listener = QosListener::builder()
        .agent(&agent)
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let connecting = tokio::spawn({
        let agent = agent.clone();
        async move { QosStream::builder().agent(&agent).connect(addr).await }
    });
    // Cancel accept again and again while the connection arrives and is set up.
    let mut cancelled = 0;
    let accepted = loop {
        match tokio::time::timeout(Duration::from_micros(50), listener.accept()).await {
            Ok(result) => break result.unwrap(),
            Err(_) => cancelled += 1,
        }
        assert!(cancelled < 200_000, "never accepted");
    };
    let client = connecting.await.unwrap().unwrap();
    assert_eq!(accepted.1, client.local_addr().unwrap());
    drop((accepted, client));
    until_no_sessions(&agent).await;
}

#[tokio::test]
async fn ipv6_rsvp_flow() {
    let ip = IpAddr::V6(Ipv6Addr::LOCALHOST);
    if !privileged("ipv6 loopback", std::net::UdpSocket::bind((ip, 0)).is_ok()) {
        return;
    }
    // ::1 is shared by every test: an ephemeral RSVP port keeps agents apart.
    let (agent, recording) = recorded_agent(ip, 0);
    let (server, client) = rsvp_pair(&agent, ip).await;
    assert!(server.local_addr().unwrap().is_ipv6());
    let mut server_events = server.events();
    let mut client_events = client.events();
    until_established(&mut server_events, "server").await;
    until_established(&mut client_events, "client").await;
    assert_eq!(recording.installed().len(), 1);
    client.close().await.unwrap();
    until(&mut server_events, "server TornDown", |e| {
        matches!(e, QosEvent::TornDown { .. })
    })
    .await;
    server.close().await.unwrap();
    until_no_sessions(&agent).await;
    assert!(recording.installed().is_empty());
}

#[tokio::test]
async fn default_agent_serves_both_ends() {
    let listener = QosListener::bind("127.0.0.1:0").await.unwrap();
    let (client, accepted) = tokio::join!(
        QosStream::connect(listener.local_addr().unwrap(), spec()),
        listener.accept()
    );
    let client = client.unwrap();
    let (server, _) = accepted.unwrap();
    let mut client_events = client.events();
    until_established(&mut client_events, "client").await;
    let agent = server.agent().clone();
    assert!(agent.is_running());
    drop((server, client, listener));
    // Owned sessions only: if another process holds 127.0.0.1:1698 the default agent runs on
    // a fallback port and the engine's own leftover path state waits for its expiry.
    until_no_owned_sessions(&agent).await;
}
