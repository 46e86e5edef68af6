//! The default agent on a multi-thread runtime runs as a task of that runtime; when that
//! runtime shuts down while another runtime's connections still use the agent, the agent
//! moves to a thread of its own and their reservations go on.

mod agent_util;

use std::time::Duration;

use agent_util::*;
use qtoq::{Agent, QosEvent, QosListener, QosSpec, QosStream, Reservation};
use tokio::runtime::{Builder, Runtime};

fn multi_thread() -> Runtime {
    Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A listener and a connection through the default agent, both `Established`.
async fn established_pair() -> (QosStream, QosStream) {
    let listener = QosListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(
        QosStream::connect(addr, QosSpec::controlled_load(100_000, 8_192)),
        listener.accept()
    );
    let (client, (server, _)) = (client.unwrap(), accepted.unwrap());
    for (stream, what) in [(&client, "client"), (&server, "server")] {
        until(&mut stream.events(), what, |e| {
            matches!(e, QosEvent::Established { .. })
        })
        .await;
    }
    (client, server)
}

#[test]
fn the_default_agent_outlives_the_runtime_that_started_it() {
    let host = multi_thread();
    // The first use, on `host`: the default agent becomes a task of `host`.
    let started_on_host = host.block_on(async { Agent::default_agent().unwrap() });
    let other = multi_thread();
    let (client, server) = other.block_on(established_pair());
    let agent = client.agent().clone();
    assert!(
        format!("{agent:?}") == format!("{started_on_host:?}"),
        "one default agent per process"
    );
    drop(started_on_host);

    drop(host);

    other.block_on(async {
        // The agent lives on: the reservation stays, its events do not end, new setups work.
        assert!(
            agent.is_running(),
            "the default agent stopped with its runtime"
        );
        assert!(matches!(
            client.reservation(),
            Reservation::Established { .. }
        ));
        assert!(matches!(
            server.reservation(),
            Reservation::Established { .. }
        ));
        let mut events = client.events();
        let quiet = tokio::time::timeout(Duration::from_millis(200), async {
            while let Some(event) = futures::StreamExt::next(&mut events).await {
                if event.is_error_or_end() {
                    return Some(event);
                }
            }
            None
        })
        .await;
        assert!(
            quiet.is_err(),
            "the reservation ended with the runtime: {quiet:?}"
        );
        let (client2, server2) = established_pair().await;
        assert_eq!(agent.session_count().await.unwrap(), 4);
        for stream in [client, server, client2, server2] {
            stream.close().await.unwrap();
        }
        assert_eq!(agent.session_count().await.unwrap(), 0);
    });
}
