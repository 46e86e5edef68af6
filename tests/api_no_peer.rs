//! A peer without QoS (issue 8, point 6): a `QosStream` connected to a plain TCP server, and a
//! `QosListener` whose client is a plain `TcpStream`, are told `NoSender` / `NoReceiver` after
//! the agent's peer wait, their `reservation()` says so, and their bytes flow best effort; a
//! peer that signals late still establishes. Real agents on the test's runtime, with a short
//! wait; every wait for an event is bounded and fails with what was seen.

mod agent_util;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use agent_util::*;
use qtoq::agent::{MemoryNetwork, Transport};
use qtoq::{Agent, QosEvent, QosListener, QosSpec, QosStream, Reservation};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The peer wait of the agents under test.
const WAIT: Duration = Duration::from_millis(200);

fn agent_with_wait(transport: Transport, ip: IpAddr) -> Agent {
    Agent::builder()
        .transport(transport)
        .local_addr(ip)
        .peer_wait(WAIT)
        .build()
        .expect("agent starts")
}

fn spec() -> QosSpec {
    QosSpec::controlled_load(1_000_000, 65_536)
}

/// Polls `reservation` until it is `want`; fails after [`EVENT_TIMEOUT`] naming the last one.
async fn until_reservation(reservation: impl Fn() -> Reservation, want: Reservation) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let now = reservation();
        if now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for reservation {want:?}; it is {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Bytes go both ways between a QoS stream and a plain one.
async fn bytes_flow(qos: &mut QosStream, plain: &mut TcpStream) {
    qos.write_all(b"from the qos end").await.unwrap();
    let mut buf = [0u8; 16];
    plain.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"from the qos end");
    plain.write_all(b"from the plain end").await.unwrap();
    let mut buf = [0u8; 18];
    qos.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"from the plain end");
}

/// A plain TCP listener on an address no agent answers for.
async fn plain_server() -> TcpListener {
    TcpListener::bind(SocketAddr::new(unique_loopback(), 0))
        .await
        .unwrap()
}

/// A plain TCP connection from an address no agent answers for.
async fn plain_client(to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(unique_loopback(), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn a_client_of_a_plain_tcp_server_is_told_no_sender_and_its_bytes_flow() {
    let agent = agent_with_wait(Transport::udp(), unique_loopback());
    let server = plain_server().await;
    let opened = Instant::now();
    let (client, accepted) = tokio::join!(
        QosStream::builder()
            .agent(&agent)
            .spec(spec())
            .bind(SocketAddr::new(addr_of(&agent), 0))
            .connect(server.local_addr().unwrap()),
        server.accept()
    );
    let mut client = client.expect("connect");
    let (mut plain, _) = accepted.unwrap();
    let mut events = client.events();
    let seen = until(&mut events, "NoSender", |e| {
        matches!(e, QosEvent::NoSender { .. })
    })
    .await;
    // Nothing else before it, and not before the wait was over.
    let [QosEvent::NoSender { waited }] = seen[..] else {
        panic!("expected NoSender alone, saw {seen:?}");
    };
    assert!(waited >= WAIT, "{waited:?}");
    assert!(opened.elapsed() >= WAIT);
    assert_eq!(client.reservation(), Reservation::NoSender);
    bytes_flow(&mut client, &mut plain).await;
    client.close().await.expect("close");
    until(&mut events, "TornDown", |e| {
        matches!(e, QosEvent::TornDown { .. })
    })
    .await;
    until_no_sessions(&agent).await;
}

#[tokio::test]
async fn a_quiet_client_gets_no_no_sender_event_but_its_reservation_shows_it() {
    let agent = agent_with_wait(Transport::udp(), unique_loopback());
    let server = plain_server().await;
    let (client, accepted) = tokio::join!(
        QosStream::builder()
            .agent(&agent)
            .spec(spec())
            .notify(false)
            .bind(SocketAddr::new(addr_of(&agent), 0))
            .connect(server.local_addr().unwrap()),
        server.accept()
    );
    let client = client.expect("connect");
    let _plain = accepted.unwrap();
    until_reservation(|| client.reservation(), Reservation::NoSender).await;
    let mut events = client.events();
    client.close().await.expect("close");
    let seen = until(&mut events, "TornDown", |e| {
        matches!(e, QosEvent::TornDown { .. })
    })
    .await;
    assert_eq!(kinds(&seen), ["TornDown"], "{seen:?}");
    until_no_sessions(&agent).await;
}

#[tokio::test]
async fn a_server_whose_client_is_plain_tcp_is_told_no_receiver_and_its_bytes_flow() {
    let agent = agent_with_wait(Transport::udp(), unique_loopback());
    let listener = QosListener::builder()
        .agent(&agent)
        .spec(spec())
        .bind(SocketAddr::new(addr_of(&agent), 0))
        .await
        .unwrap();
    let (mut plain, accepted) = tokio::join!(
        plain_client(listener.local_addr().unwrap()),
        listener.accept()
    );
    let (mut server, _) = accepted.expect("accept");
    let mut events = server.events();
    let seen = until(&mut events, "NoReceiver", |e| {
        matches!(e, QosEvent::NoReceiver { .. })
    })
    .await;
    let [QosEvent::NoReceiver { waited }] = seen[..] else {
        panic!("expected NoReceiver alone, saw {seen:?}");
    };
    assert!(waited >= WAIT, "{waited:?}");
    assert_eq!(server.reservation(), Reservation::NoReceiver);
    bytes_flow(&mut server, &mut plain).await;
    server.close().await.expect("close");
    until_no_sessions(&agent).await;
}

#[tokio::test]
async fn peers_that_signal_late_still_establish_after_saying_they_were_absent() {
    // Every RSVP message takes 1 s, five times the peer wait: each end first says the other
    // is absent, then establishes when its messages arrive.
    let network = MemoryNetwork::new(8).with_delay(Duration::from_secs(1), Duration::from_secs(1));
    let (a, b) = (unique_loopback(), unique_loopback());
    let server_agent = agent_with_wait(Transport::Memory(network.clone()), a);
    let client_agent = agent_with_wait(Transport::Memory(network), b);
    let listener = QosListener::builder()
        .agent(&server_agent)
        .spec(spec())
        .bind(SocketAddr::new(a, 0))
        .await
        .unwrap();
    let (client, accepted) = tokio::join!(
        QosStream::builder()
            .agent(&client_agent)
            .spec(spec())
            .bind(SocketAddr::new(b, 0))
            .connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let client = client.expect("connect");
    let (server, _) = accepted.expect("accept");
    let mut server_events = server.events();
    let mut client_events = client.events();
    let c = until(&mut client_events, "client NoSender", |e| {
        matches!(e, QosEvent::NoSender { .. })
    })
    .await;
    assert_eq!(kinds(&c), ["NoSender"]);
    let s = until(&mut server_events, "server NoReceiver", |e| {
        matches!(e, QosEvent::NoReceiver { .. })
    })
    .await;
    assert_eq!(kinds(&s), ["NoReceiver"]);
    let s = until_established(&mut server_events, "server").await;
    assert_eq!(kinds(&s), ["ResvReceived", "Established"]);
    let c = until_established(&mut client_events, "client").await;
    assert_eq!(kinds(&c), ["PathReceived", "Confirmed", "Established"]);
    assert!(matches!(
        client.reservation(),
        Reservation::Established { .. }
    ));
    assert!(matches!(
        server.reservation(),
        Reservation::Established { .. }
    ));
    client.close().await.expect("client close");
    server.close().await.expect("server close");
    until_no_owned_sessions(&server_agent).await;
    until_no_owned_sessions(&client_agent).await;
}
