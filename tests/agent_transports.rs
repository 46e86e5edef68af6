//! Two agents talking over each transport: UDP encapsulation on loopback, raw IP protocol
//! 46 (privileged), and the in-memory network with faults.

mod agent_util;

use std::time::Duration;

use agent_util::*;
use qtoq::agent::{MemoryNetwork, Transport};
use qtoq::engine::EngineConfig;
use qtoq::Agent;

#[tokio::test]
async fn two_agents_over_udp_on_loopback() {
    let server_agent = udp_agent();
    let client_agent = udp_agent();
    assert_eq!(
        server_agent.bound_addrs()[0].port(),
        qtoq::agent::RSVP_ENCAP_PORT
    );
    cross_agent_flow(&server_agent, &client_agent).await;
    let server_stats = server_agent.stats().await.unwrap();
    let client_stats = client_agent.stats().await.unwrap();
    // Signaling really crossed the transport, and the teardown left no state either side.
    assert!(server_stats.engine.transmitted >= 2, "{server_stats:?}");
    assert!(client_stats.engine.received >= 2, "{client_stats:?}");
    assert_eq!(
        server_stats.engine.malformed + client_stats.engine.malformed,
        0
    );
    assert_eq!(
        (server_stats.engine_sessions, client_stats.engine_sessions),
        (0, 0)
    );
}

fn can_open_raw() -> bool {
    socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(46)),
    )
    .is_ok()
}

#[tokio::test]
async fn two_agents_over_raw_ip() {
    if !privileged("CAP_NET_RAW (raw ip protocol 46)", can_open_raw()) {
        return;
    }
    let raw_agent = || {
        Agent::builder()
            .transport(Transport::Raw)
            .local_addr(unique_loopback())
            .build()
            .expect("raw agent")
    };
    let server_agent = raw_agent();
    let client_agent = raw_agent();
    cross_agent_flow(&server_agent, &client_agent).await;
    let client_stats = client_agent.stats().await.unwrap();
    assert!(client_stats.engine.received >= 2, "{client_stats:?}");
    assert_eq!(client_stats.transport_malformed, 0);
}

/// Memory-network agents still need real TCP for the data: they use loopback TCP but their
/// RSVP travels the simulated network, so the session addresses are the TCP ones.
#[tokio::test]
async fn memory_network_with_loss_still_establishes() {
    let network = MemoryNetwork::new(2205)
        .with_loss(0.2)
        .with_duplication(0.05)
        .with_delay(Duration::from_micros(100), Duration::from_millis(3));
    // The agents answer for two loopback addresses the TCP ends bind.
    let mut engine = EngineConfig::default();
    engine.fast_retransmit_initial = Duration::from_millis(20);
    engine.fast_retransmit_count = 10;
    engine.refresh_period = Duration::from_millis(300);
    let (server_agent, a, client_agent, b) = memory_agents(&network, &engine);
    for round in 0..5 {
        let (server, client, _) = established_pair(&server_agent, a, &client_agent, b).await;
        eprintln!("round {round}: established, {:?}", network.stats());
        client.close().await.unwrap();
        server.close().await.unwrap();
    }
    until_no_sessions(&server_agent).await;
    until_no_sessions(&client_agent).await;
    let stats = network.stats();
    assert!(stats.lost > 0, "the network lost nothing: {stats:?}");
}

/// A stopping agent lingers (at most 2 s) until its PathTears are acknowledged: with the
/// first copy lost, the retransmission still tears the client's state down, where without
/// the linger the client would only see its path state expire minutes later.
#[tokio::test]
async fn a_stopping_agent_retransmits_a_lost_path_tear() {
    use qtoq::QosEvent;

    let network = MemoryNetwork::new(2961);
    let (server_agent, a, client_agent, b) = memory_agents(&network, &EngineConfig::default());
    let (server, _client, mut client_events) =
        established_pair(&server_agent, a, &client_agent, b).await;

    // Everything is lost while the server stops, then the network heals.
    let lossy = network.clone().with_loss(1.0);
    let stopping = tokio::spawn(async move { server_agent.shutdown().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lost = lossy.stats().lost;
    assert!(
        lost > 0,
        "the first PathTear was not lost: {:?}",
        lossy.stats()
    );
    let _ = lossy.with_loss(0.0);
    // The retransmission 0.5 s after the first copy tears the client's session down.
    tokio::time::timeout(
        Duration::from_secs(5),
        until(&mut client_events, "client TornDown", |e| {
            matches!(e, QosEvent::TornDown { .. })
        }),
    )
    .await
    .expect("the PathTear came again while the server was stopping");
    stopping.await.unwrap().unwrap();
    drop(server);
}

/// Two agents on `network` with `engine`'s configuration, each answering for a loopback
/// address of its own: (server agent, its address, client agent, its address).
fn memory_agents(
    network: &MemoryNetwork,
    engine: &EngineConfig,
) -> (Agent, std::net::IpAddr, Agent, std::net::IpAddr) {
    let build = |ip| {
        Agent::builder()
            .transport(Transport::Memory(network.clone()))
            .local_addr(ip)
            .engine_config(engine.clone())
            .build()
            .expect("memory agent")
    };
    let (a, b) = (unique_loopback(), unique_loopback());
    (build(a), a, build(b), b)
}

/// A connection from `client_agent`'s address `b` to `server_agent`'s `a`, both ends
/// `Established`: the server's stream, the client's, and the client's remaining events.
async fn established_pair(
    server_agent: &Agent,
    a: std::net::IpAddr,
    client_agent: &Agent,
    b: std::net::IpAddr,
) -> (qtoq::QosStream, qtoq::QosStream, qtoq::QosEvents) {
    use qtoq::{QosListener, QosStream};
    use std::net::SocketAddr;

    let listener = QosListener::builder()
        .agent(server_agent)
        .bind(SocketAddr::new(a, 0))
        .await
        .unwrap();
    let (client, accepted) = tokio::join!(
        QosStream::builder()
            .agent(client_agent)
            .bind(SocketAddr::new(b, 0))
            .connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let client = client.unwrap();
    let (server, _) = accepted.unwrap();
    let (mut server_events, mut client_events) = (server.events(), client.events());
    until_established(&mut server_events, "server").await;
    until_established(&mut client_events, "client").await;
    (server, client, client_events)
}

/// Classic refreshes (no refresh reduction) go by the engine's refresh rounds: driven by the
/// agent's timer, they keep a reservation alive through many lifetimes at a short period.
#[tokio::test]
async fn classic_refresh_rounds_keep_a_reservation_through_many_lifetimes() {
    use futures::StreamExt;

    const R: Duration = Duration::from_millis(200);
    let network = MemoryNetwork::new(2205);
    let mut engine = EngineConfig::default();
    engine.refresh_reduction = false;
    engine.refresh_period = R;
    let (server_agent, a, client_agent, b) = memory_agents(&network, &engine);
    let (server, client, mut client_events) =
        established_pair(&server_agent, a, &client_agent, b).await;
    let before = server_agent.stats().await.unwrap().engine.transmitted;
    // 20 R: the state's lifetime, (K + 0.5) · 1.5 · R, is about 4 R.
    tokio::time::sleep(R * 20).await;
    let (server_stats, client_stats) = (
        server_agent.stats().await.unwrap(),
        client_agent.stats().await.unwrap(),
    );
    assert_eq!(server_stats.engine.expired, 0, "{server_stats:?}");
    assert_eq!(client_stats.engine.expired, 0, "{client_stats:?}");
    // One Path per round (R/2 at the soonest, 3R/2 at the latest).
    let paths = server_stats.engine.transmitted - before;
    assert!((12..=42).contains(&paths), "{paths} Paths in 20 R");
    let heard = tokio::time::timeout(Duration::from_millis(10), client_events.next()).await;
    assert!(heard.is_err(), "the client heard of a change: {heard:?}");
    client.close().await.unwrap();
    server.close().await.unwrap();
    until_no_sessions(&server_agent).await;
    until_no_sessions(&client_agent).await;
}
