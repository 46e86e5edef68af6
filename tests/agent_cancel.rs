//! Cancellation and agent loss: a cancelled accept/connect leaks no session even when the
//! agent had already answered, and event streams end when the agent's runtime goes away.

mod agent_util;

use std::net::SocketAddr;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use agent_util::*;
use qtoq::enforce::Recording;
use qtoq::{Agent, QosListener, QosSpec, QosStream, Signaling};
use tokio::net::TcpStream;

/// Waits until the agent's registry holds `want` sessions for connections.
async fn until_owned(agent: &Agent, want: usize) {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let stats = agent.stats().await.expect("agent running");
        if stats.owned_sessions == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent never held {want} sessions: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// An agent whose enforcer applies nothing at once (it waits like a netlink backend does):
/// an unsignaled setup's answer then waits for the agent task.
fn waiting_enforcer_agent() -> Agent {
    Agent::builder()
        .local_addr(unique_loopback())
        .enforcer(Box::new(Recording::new()))
        .build()
        .expect("agent starts")
}

#[tokio::test]
async fn a_connect_cancelled_at_any_point_leaks_no_session() {
    let agent = udp_agent();
    let ip = addr_of(&agent);
    let server = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    // Cancelled after 1, 2, … polls until one connect runs to completion.
    for polls in 1.. {
        let mut completed = false;
        {
            let mut connect = pin!(QosStream::builder()
                .spec(QosSpec::controlled_load(100_000, 10_000))
                .agent(&agent)
                .bind(SocketAddr::new(ip, 0))
                .connect(server.local_addr().unwrap()));
            for _ in 0..polls {
                if let Poll::Ready(stream) = futures::poll!(connect.as_mut()) {
                    drop(stream.expect("connect"));
                    completed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        until_no_owned_sessions(&agent).await;
        if completed {
            break;
        }
        assert!(polls < 1000, "the connect never completed");
    }
}

#[tokio::test]
async fn a_listener_dropped_with_an_answered_setup_leaks_no_session() {
    let agent = waiting_enforcer_agent();
    let ip = addr_of(&agent);
    let listener = QosListener::builder()
        .agent(&agent)
        .signaling(Signaling::None)
        .spec(QosSpec::controlled_load(100_000, 10_000))
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    {
        let mut accept = pin!(listener.accept());
        // The connection is accepted and its setup starts; accept waits for the rule load,
        // which the agent's task does.
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        while agent.stats().await.unwrap().owned_sessions == 0 {
            assert!(matches!(futures::poll!(accept.as_mut()), Poll::Pending));
            assert!(tokio::time::Instant::now() < deadline, "never accepted");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // The agent answers into the setup the listener keeps ...
    until_owned(&agent, 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    // ... and the listener goes before any accept returned it.
    drop(listener);
    until_no_owned_sessions(&agent).await;
}

#[tokio::test]
async fn events_end_when_the_agents_runtime_goes_away() {
    let agent_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let agent = {
        let _inside = agent_runtime.enter();
        Agent::builder()
            .local_addr(unique_loopback())
            .build()
            .unwrap()
    };
    let ip = addr_of(&agent);
    let listener = QosListener::builder()
        .agent(&agent)
        .signaling(Signaling::None)
        .spec(QosSpec::controlled_load(100_000, 10_000))
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let (_client, accepted) = tokio::join!(
        TcpStream::connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let (server, _) = accepted.unwrap();
    let events = server.events();
    // The agent task is dropped without its teardown (its runtime is gone).
    agent_runtime.shutdown_background();
    let seen = tokio::time::timeout(EVENT_TIMEOUT, futures::StreamExt::collect::<Vec<_>>(events))
        .await
        .expect("the event stream ends once the agent is gone");
    assert!(!seen.is_empty(), "the established event was logged first");
    assert!(!agent.is_running());
}
