//! A rule marked with no signaling is in force when `accept` returns: `reservation()` says
//! `Established` at that very moment, whatever the scheduling (regression: the owner used to
//! be answered before the session's state learned of the rule load, so a multi-thread runtime
//! could see `Pending`).

mod agent_util;

use std::net::SocketAddr;

use agent_util::*;
use qtoq::{Agent, QosListener, QosSpec, Reservation, Signaling};
use tokio::net::TcpStream;

const CONNECTIONS: usize = 200;

/// Accepts `CONNECTIONS` plain TCP clients one after another on an unsignaled listener and
/// checks each stream's reservation the instant `accept` returns.
async fn every_accept_returns_established(agent: Option<&Agent>, ip: std::net::IpAddr) {
    let spec = QosSpec::controlled_load(10_000, 4_096);
    let mut builder = QosListener::builder().signaling(Signaling::None).spec(spec);
    if let Some(agent) = agent {
        builder = builder.agent(agent);
    }
    let listener = builder.bind(SocketAddr::new(ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The clients connect from other worker threads, so the accept side and the agent's
    // answer race as they would in a real server.
    let clients = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..CONNECTIONS {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        held
    });
    let mut not_ready = Vec::new();
    let mut streams = Vec::new();
    for i in 0..CONNECTIONS {
        let (stream, _) = listener.accept().await.unwrap();
        match stream.reservation() {
            Reservation::Established { flowspec } => assert_eq!(flowspec, spec.flowspec()),
            other => not_ready.push((i, other)),
        }
        streams.push(stream);
    }
    assert!(
        not_ready.is_empty(),
        "{} of {CONNECTIONS} accepts returned before the rule was in force: {:?}",
        not_ready.len(),
        &not_ready[..not_ready.len().min(5)]
    );
    for stream in streams {
        stream.close().await.unwrap();
    }
    drop(clients.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsignaled_accept_is_established_on_return_with_an_explicit_agent() {
    let agent = udp_agent();
    every_accept_returns_established(Some(&agent), addr_of(&agent)).await;
    assert_eq!(agent.session_count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsignaled_accept_is_established_on_return_with_the_default_agent() {
    every_accept_returns_established(None, "127.0.0.1".parse().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsignaled_accept_is_established_on_return_when_the_enforcer_makes_the_task_wait() {
    // The recording enforcer applies nothing at once, as a netlink backend: the rule load and
    // the answer come from the agent's task rather than from the accepting call.
    let agent = qtoq::Agent::builder()
        .local_addr(unique_loopback())
        .enforcer(Box::new(qtoq::enforce::Recording::new()))
        .build()
        .unwrap();
    every_accept_returns_established(Some(&agent), addr_of(&agent)).await;
    assert_eq!(agent.session_count().await.unwrap(), 0);
}
