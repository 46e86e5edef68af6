//! 1,000 concurrent reservations through one agent.

mod agent_util;

use std::net::SocketAddr;

use agent_util::*;
use qtoq::agent::Transport;
use qtoq::enforce::Recording;
use qtoq::{Agent, QosListener, QosSpec, QosStream};

const CONNECTIONS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_reservations_through_one_agent() {
    let ip = unique_loopback();
    let recording = Recording::new();
    let agent = Agent::builder()
        .transport(Transport::udp())
        .local_addr(ip)
        .enforcer(Box::new(recording.clone()))
        .build()
        .unwrap();
    let listener = QosListener::builder()
        .agent(&agent)
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();

    let server = tokio::spawn(async move {
        let mut servers = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            // Bounded: a connection that never surfaces fails the test instead of hanging it.
            let (stream, _) = tokio::time::timeout(EVENT_TIMEOUT, listener.accept())
                .await
                .expect("accept in time")
                .expect("accept");
            servers.push(tokio::spawn(async move {
                let mut events = stream.events();
                until_established(&mut events, "server").await;
                stream
            }));
        }
        let mut established = Vec::with_capacity(CONNECTIONS);
        for s in servers {
            established.push(s.await.expect("server task"));
        }
        established
    });
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let agent = agent.clone();
            tokio::spawn(async move {
                let stream = QosStream::builder()
                    .agent(&agent)
                    .spec(QosSpec::controlled_load(10_000 + i as u64, 4096))
                    // The agent's own address: independent of 127.0.0.1's port state.
                    .bind(SocketAddr::new(ip, 0))
                    .connect(addr)
                    .await
                    .expect("connect");
                let mut events = stream.events();
                until_established(&mut events, "client").await;
                stream
            })
        })
        .collect();
    let mut client_streams = Vec::with_capacity(CONNECTIONS);
    for c in clients {
        client_streams.push(c.await.expect("client task"));
    }
    let server_streams = server.await.expect("server");
    assert_eq!(recording.installed().len(), CONNECTIONS);
    let stats = agent.stats().await.unwrap();
    assert_eq!(stats.owned_sessions, 2 * CONNECTIONS);
    assert_eq!(stats.rules_in_force, CONNECTIONS);

    let closes: Vec<_> = client_streams
        .into_iter()
        .chain(server_streams)
        .map(|s| tokio::spawn(s.close()))
        .collect();
    for c in closes {
        c.await.unwrap().expect("close");
    }
    until_no_sessions(&agent).await;
    assert!(recording.installed().is_empty());
    assert_eq!(agent.stats().await.unwrap().rules_in_force, 0);
}
