//! Many setups at once through one connection to qosd (`daemon::Daemon` in this process,
//! the application's side `Agent::daemon`): every open gets its own TCP socket, every
//! reservation is established. Opens and releases written back to back arrive in one read
//! on qosd's side; a descriptor must go to the frame it was sent with (before the fix, an
//! open that followed another request in the same read lost its socket to it: "open needs
//! the connection's TCP socket passed along").
#![cfg(feature = "daemon")]

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use qtoq::agent::{MemoryNetwork, Transport};
use qtoq::daemon::Daemon;
use qtoq::{Agent, QosEvent, QosListener, QosSpec, QosStream};

const CONCURRENT: usize = 64;
const ROUNDS: usize = 5;
const WAIT: Duration = Duration::from_secs(20);

async fn established(stream: &QosStream) {
    let mut events = stream.events();
    while let Some(event) = events.next().await {
        if matches!(event, QosEvent::Established { .. }) {
            return;
        }
        assert!(!event.is_error_or_end(), "setup failed: {event:?}");
    }
    panic!("event stream ended before Established");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_setups_through_one_qosd_connection_all_get_their_socket() {
    let dir = std::env::temp_dir().join(format!("qtoq-qosd-concurrent-{}", std::process::id()));
    let socket = dir.join("qosd.sock");
    let ip = "127.0.0.1".parse().unwrap();
    let daemon_agent = Agent::builder()
        .transport(Transport::Memory(MemoryNetwork::new(7)))
        .local_addr(ip)
        .build()
        .expect("qosd's agent");
    let daemon = Daemon::bind(daemon_agent.clone(), &socket, 0o600, None)
        .await
        .expect("bind qosd's socket");
    let served = tokio::spawn(async move {
        let _ = daemon.serve().await;
    });
    let app = Agent::daemon(&socket).await.expect("connect to qosd");
    let listener = QosListener::builder()
        .agent(&app)
        .spec(QosSpec::controlled_load(1_000_000, 65_536))
        .bind(SocketAddr::new(ip, 0))
        .await
        .expect("listen");
    let addr = listener.local_addr().unwrap();
    for round in 0..ROUNDS {
        let setups = (0..CONCURRENT).map(|_| async {
            let (client, server) = tokio::join!(
                async {
                    let stream = QosStream::builder()
                        .agent(&app)
                        .spec(QosSpec::controlled_load(1_000_000, 65_536))
                        .bind(SocketAddr::new(ip, 0))
                        .connect(addr)
                        .await
                        .expect("connect through qosd");
                    established(&stream).await;
                    stream
                },
                async {
                    let (stream, _) = listener.accept().await.expect("accept through qosd");
                    established(&stream).await;
                    stream
                }
            );
            (client, server)
        });
        let pairs = tokio::time::timeout(WAIT, futures::future::join_all(setups))
            .await
            .unwrap_or_else(|_| panic!("round {round}: setups not done within {WAIT:?}"));
        assert_eq!(pairs.len(), CONCURRENT);
        // Dropped at once: the releases go out back to back with the next round's opens.
        drop(pairs);
    }
    app.shutdown().await.expect("close the connection");
    served.abort();
    daemon_agent
        .shutdown()
        .await
        .expect("qosd's agent shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
