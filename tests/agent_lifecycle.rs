//! The agent's life: it stops when the last handle is gone, after tearing everything down;
//! dropped connections are torn down across agents too.

mod agent_util;

use std::net::SocketAddr;
use std::time::Duration;

use agent_util::*;
use qtoq::agent::Transport;
use qtoq::enforce::{Recorded, Recording};
use qtoq::{Agent, QosEvent, QosListener, QosStream, Signaling};
use tokio::net::TcpStream;

#[tokio::test]
async fn agent_stops_after_teardown_when_the_last_handle_is_gone() {
    let ip = unique_loopback();
    let recording = Recording::new();
    let agent = Agent::builder()
        .local_addr(ip)
        .enforcer(Box::new(recording.clone()))
        .build()
        .unwrap();
    let listener = QosListener::builder()
        .agent(&agent)
        .signaling(Signaling::None)
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let (client, accepted) = tokio::join!(
        TcpStream::connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let (server, _) = accepted.unwrap();
    assert_eq!(recording.installed().len(), 1);
    let events = server.events();
    // Every handle goes at once: the agent itself, the listener's, the stream's.
    drop((agent, listener, server, client));
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    while recording.calls().last() != Some(&Recorded::Shutdown) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            recording.calls()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let calls = recording.calls();
    assert!(
        matches!(
            calls.as_slice(),
            [
                Recorded::Install(_),
                Recorded::Remove(_),
                Recorded::Shutdown
            ]
        ),
        "{calls:?}"
    );
    // The connection's event stream ended with the agent.
    let seen: Vec<_> =
        tokio::time::timeout(EVENT_TIMEOUT, futures::StreamExt::collect::<Vec<_>>(events))
            .await
            .expect("events end");
    assert!(
        matches!(seen.first(), Some(QosEvent::Established { .. })),
        "{seen:?}"
    );
    // Its UDP port is free again: a new agent can take the address.
    Agent::builder()
        .local_addr(ip)
        .build()
        .expect("address free again");
}

#[tokio::test]
async fn dropping_a_client_tears_down_across_agents() {
    let server_agent = udp_agent();
    let client_agent = udp_agent();
    let listener = QosListener::builder()
        .agent(&server_agent)
        .bind(SocketAddr::new(addr_of(&server_agent), 0))
        .await
        .unwrap();
    let (client, accepted) = tokio::join!(
        QosStream::builder()
            .agent(&client_agent)
            .bind(SocketAddr::new(addr_of(&client_agent), 0))
            .connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let client = client.unwrap();
    let (server, _) = accepted.unwrap();
    let mut server_events = server.events();
    until_established(&mut server_events, "server").await;
    let mut client_events = client.events();
    until_established(&mut client_events, "client").await;
    drop(client);
    until(&mut server_events, "server TornDown", |e| {
        matches!(e, QosEvent::TornDown { .. })
    })
    .await;
    // The client's session is gone; the server's PATH state there lives on until PathTear.
    until_no_owned_sessions(&client_agent).await;
    drop(server);
    until_no_sessions(&server_agent).await;
    // The server's PathTear reached the client agent: no state left there either.
    until_no_sessions(&client_agent).await;
}

#[test]
fn raw_if_permitted_matches_the_privilege() {
    let raw_allowed = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(46)),
    )
    .is_ok();
    let chosen = Transport::raw_if_permitted();
    assert_eq!(matches!(chosen, Transport::Raw), raw_allowed);
    assert_eq!(chosen.name(), if raw_allowed { "raw" } else { "udp" });
}

#[test]
fn build_outside_a_runtime_is_an_error() {
    let err = Agent::builder()
        .local_addr(unique_loopback())
        .build()
        .expect_err("no runtime");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}
