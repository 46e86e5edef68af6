//! Many setups at once through one connection to qosd (`daemon::Daemon` in this process,
//! the application's side `Agent::daemon`): every open gets its own TCP socket, every
//! reservation is established. Opens and releases written back to back arrive in one read
//! on qosd's side; a descriptor must go to the frame it was sent with (before the fix, an
//! open that followed another request in the same read lost its socket to it: "open needs
//! the connection's TCP socket passed along").
//!
//! And a connection dropped and made again at once from the same port: the old session's
//! release (from `Drop`) must reach qosd before the new open, or its PathTear tears the new
//! session down (an embedded agent orders them; through qosd the release was written by a
//! task of its own, which a later open could overtake).
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

/// qosd in this process on a temporary socket, its agent on a memory network at
/// 127.0.0.1, and the application's agent connected to it.
struct InProcessQosd {
    dir: std::path::PathBuf,
    served: tokio::task::JoinHandle<()>,
    daemon_agent: Agent,
    app: Agent,
}

impl InProcessQosd {
    async fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("qtoq-{name}-{}", std::process::id()));
        let socket = dir.join("qosd.sock");
        let daemon_agent = Agent::builder()
            .transport(Transport::Memory(MemoryNetwork::new(7)))
            .local_addr(IP.parse().unwrap())
            .build()
            .expect("qosd's agent");
        let daemon = Daemon::bind(daemon_agent.clone(), &socket, 0o600, None)
            .await
            .expect("bind qosd's socket");
        let served = tokio::spawn(async move {
            let _ = daemon.serve().await;
        });
        let app = Agent::daemon(&socket).await.expect("connect to qosd");
        InProcessQosd {
            dir,
            served,
            daemon_agent,
            app,
        }
    }

    async fn stop(self) {
        self.app.shutdown().await.expect("close the connection");
        self.served.abort();
        self.daemon_agent
            .shutdown()
            .await
            .expect("qosd's agent shutdown");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const IP: &str = "127.0.0.1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_made_again_from_the_same_port_is_not_torn_down_by_the_old_ones_release() {
    let qosd = InProcessQosd::start("qosd-same-port").await;
    let ip = IP.parse().unwrap();
    let listener = QosListener::builder()
        .agent(&qosd.app)
        .spec(QosSpec::controlled_load(1_000_000, 65_536))
        .bind(SocketAddr::new(ip, 0))
        .await
        .expect("listen");
    let addr = listener.local_addr().unwrap();
    // A free port for the client to come from every time.
    let port = std::net::TcpListener::bind((IP, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    for round in 0..20 {
        let (client, server) = tokio::time::timeout(WAIT, async {
            tokio::join!(
                async {
                    let stream = QosStream::builder()
                        .agent(&qosd.app)
                        .spec(QosSpec::controlled_load(1_000_000, 65_536))
                        .bind(SocketAddr::new(ip, port))
                        .connect(addr)
                        .await
                        .unwrap_or_else(|e| panic!("round {round}: connect: {e}"));
                    established(&stream).await;
                    stream
                },
                async {
                    let (stream, _) = listener.accept().await.expect("accept");
                    established(&stream).await;
                    stream
                }
            )
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: no setup within {WAIT:?}"));
        // Closed with a reset (no TIME_WAIT), so the port is free again at once; the
        // sessions are released from `Drop`.
        socket2::SockRef::from(client.tcp())
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER");
        drop((client, server));
    }
    qosd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_setups_through_one_qosd_connection_all_get_their_socket() {
    let qosd = InProcessQosd::start("qosd-concurrent").await;
    let app = &qosd.app;
    let ip = IP.parse().unwrap();
    let listener = QosListener::builder()
        .agent(app)
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
                        .agent(app)
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
    qosd.stop().await;
}
