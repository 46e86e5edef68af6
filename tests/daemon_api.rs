//! qosd's local API in process: a `Daemon` serving an agent on a socket in a temporary
//! directory, applications' agents through `Agent::daemon`. The three flows and events behave
//! as with an embedded agent; a client that goes away has its sessions released; a qosd that
//! goes away ends streams and fails setups at once; bad input on the socket gets clear
//! answers and never takes qosd down. (The real binaries, as processes, are in
//! `tests/qosd_process.rs`.)
#![cfg(feature = "daemon")]

mod agent_util;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent_util::*;
use futures::StreamExt;
use qtoq::agent::protocol::{Client, Reply, Request, PROTOCOL_VERSION};
use qtoq::daemon::Daemon;
use qtoq::{Agent, QosEvent, QosListener, QosSpec, QosStream, Reservation, Signaling};

const WAIT: Duration = Duration::from_secs(10);

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("qtoq-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// qosd in process: its own UDP agent on a loopback address of its own.
struct Qosd {
    daemon: Arc<Daemon>,
    agent: Agent,
    socket: PathBuf,
    serving: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl Qosd {
    async fn start(name: &str) -> Qosd {
        let dir = TempDir::new(name);
        let socket = dir.0.join("qosd.sock");
        let agent = udp_agent();
        let daemon = Arc::new(
            Daemon::bind(agent.clone(), &socket, 0o600, None)
                .await
                .expect("qosd binds"),
        );
        let serving = tokio::spawn({
            let daemon = daemon.clone();
            async move {
                let _ = daemon.serve().await;
            }
        });
        Qosd {
            daemon,
            agent,
            socket,
            serving,
            _dir: dir,
        }
    }

    async fn app(&self) -> Agent {
        Agent::daemon(&self.socket).await.expect("app connects")
    }

    /// qosd goes away as it does on SIGTERM: no more clients, every session torn down.
    async fn stop(self) {
        self.daemon.close();
        self.serving.await.expect("serve returns once closed");
        self.agent.shutdown().await.expect("agent shutdown");
    }
}

fn local(qosd: &Qosd) -> SocketAddr {
    SocketAddr::new(addr_of(&qosd.agent), 0)
}

/// A listener of `app` whose connections get a rule marked with no signaling.
async fn unsignaled_listener(qosd: &Qosd, app: &Agent) -> (QosListener, SocketAddr) {
    let listener = QosListener::builder()
        .agent(app)
        .signaling(Signaling::None)
        .spec(QosSpec::controlled_load(10_000, 4_096))
        .bind(local(qosd))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_flows_work_through_qosd() {
    let qosd = Qosd::start("flows").await;
    let server_app = qosd.app().await;
    let client_app = qosd.app().await;
    assert!(server_app.uses_daemon() && client_app.uses_daemon());

    // Server accept for a rule marked with no signaling: in force when accept returns.
    let spec = QosSpec::controlled_load(50_000, 8_192);
    let listener = QosListener::builder()
        .agent(&server_app)
        .signaling(Signaling::None)
        .spec(spec)
        .bind(local(&qosd))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    assert_eq!(
        stream.reservation(),
        Reservation::Established {
            flowspec: spec.flowspec()
        }
    );
    stream.close().await.unwrap();
    drop(plain);

    // A client asking for no signaling gets a clear error, through qosd as without.
    let refused = QosStream::builder()
        .agent(&client_app)
        .signaling(Signaling::None)
        .connect(addr)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::InvalidInput);

    // RSVP on both ends: PATH out from the server's session, RESV back from the client's.
    let listener = QosListener::builder()
        .agent(&server_app)
        .signaling(Signaling::Rsvp)
        .spec(spec)
        .bind(local(&qosd))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(
        QosStream::builder()
            .agent(&client_app)
            .spec(spec)
            .connect(addr),
        listener.accept()
    );
    let client = client.unwrap();
    let (server, _) = accepted.unwrap();
    let mut server_events = server.events();
    let mut client_events = client.events();
    until_established(&mut server_events, "server").await;
    until_established(&mut client_events, "client").await;
    let stats = server_app.stats().await.unwrap();
    assert!(stats.rules_in_force >= 1, "{stats:?}");
    client.close().await.unwrap();
    server.close().await.unwrap();
    until_no_owned_sessions(&qosd.agent).await;
    qosd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_has_its_sessions_released() {
    let qosd = Qosd::start("gone").await;
    let app = qosd.app().await;
    let (listener, addr) = unsignaled_listener(&qosd, &app).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let plain = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        held.push((plain, stream));
    }
    assert_eq!(qosd.agent.stats().await.unwrap().owned_sessions, 3);
    // The streams are never closed: the application's connection to qosd just ends (as at
    // exit or kill -9, where nothing runs), and qosd releases what it owned.
    let streams: Vec<QosStream> = held.into_iter().map(|(_, s)| s).collect();
    std::mem::forget(streams);
    drop(listener);
    app.shutdown().await.unwrap();
    until_no_owned_sessions(&qosd.agent).await;
    assert_eq!(qosd.agent.stats().await.unwrap().rules_in_force, 0);
    qosd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_qosd_goes_away_streams_end_and_setups_fail_at_once() {
    let qosd = Qosd::start("away").await;
    let app = qosd.app().await;
    let (listener, addr) = unsignaled_listener(&qosd, &app).await;
    let _plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let mut events = stream.events();
    qosd.stop().await;
    let seen = tokio::time::timeout(WAIT, events.by_ref().collect::<Vec<_>>())
        .await
        .expect("the event stream ends when qosd goes");
    assert!(
        seen.iter().any(|e| matches!(e, QosEvent::TornDown { .. })),
        "{seen:?}"
    );
    tokio::time::timeout(WAIT, async {
        while app.is_running() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the application sees qosd gone");
    // A new setup through the gone qosd fails at once, with an error that says so.
    let _plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    let failed = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(failed.to_string().contains("qosd"), "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_the_socket_gets_clear_answers() {
    let qosd = Qosd::start("bad").await;
    let socket = qosd.socket.clone();

    // Another protocol version: refused, naming both versions.
    let answer = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || {
            let mut raw = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            raw.set_read_timeout(Some(WAIT)).unwrap();
            send(&mut raw, br#"{"type":"hello","version":999}"#);
            receive(&mut raw)
        }
    })
    .await
    .unwrap();
    match answer {
        Some(Reply::Refused { version, reason }) => {
            assert_eq!(version, PROTOCOL_VERSION);
            assert!(reason.contains("999"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Garbage after a good hello: an error naming the tag it could read; the connection
    // stays usable.
    let replies = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || {
            let mut raw = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            raw.set_read_timeout(Some(WAIT)).unwrap();
            send(&mut raw, format!(r#"{{"type":"hello","version":{PROTOCOL_VERSION}}}"#).as_bytes());
            let welcome = receive(&mut raw);
            send(&mut raw, br#"{"type":"open","tag":5,"role":"nonsense"}"#);
            let garbled = receive(&mut raw);
            // An open without the connection's socket attached.
            send(
                &mut raw,
                br#"{"type":"open","tag":6,"role":{"client":{"flowspec":{"ControlledLoad":{"rate":1000.0,"bucket":1000.0,"peak":null,"min_policed":64,"max_packet":1500}},"confirm":true}},"notify":true}"#,
            );
            let no_socket = receive(&mut raw);
            send(&mut raw, br#"{"type":"release","tag":7,"session":12345}"#);
            let unknown = receive(&mut raw);
            // A length beyond what qosd accepts: the connection is closed.
            raw.write_all(&u32::MAX.to_be_bytes()).unwrap();
            let closed = receive(&mut raw);
            (welcome, garbled, no_socket, unknown, closed)
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(replies.0, Some(Reply::Welcome { .. })),
        "{:?}",
        replies.0
    );
    assert!(
        matches!(&replies.1, Some(Reply::Error { tag: Some(5), message }) if message.contains("not understood")),
        "{:?}",
        replies.1
    );
    assert!(
        matches!(&replies.2, Some(Reply::Opened { tag: 6, result: Err(e) }) if e.to_string().contains("SCM_RIGHTS")),
        "{:?}",
        replies.2
    );
    assert!(
        matches!(
            &replies.3,
            Some(Reply::Released {
                tag: 7,
                result: Err(_)
            })
        ),
        "{:?}",
        replies.3
    );
    assert!(replies.4.is_none(), "{:?}", replies.4);

    // qosd is unharmed.
    let mut client = Client::connect(&socket).await.expect("qosd still answers");
    let stats = client.request(|tag| Request::Stats { tag }).await.unwrap();
    match stats {
        // The refused hello, the unreadable open and the oversized frame; the open without a
        // socket and the unknown release were answered as refusals of valid requests.
        Reply::Stats { daemon, .. } => {
            assert_eq!(daemon.bad_requests, 3, "{daemon:?}");
            assert_eq!(daemon.clients, 1, "{daemon:?}");
        }
        other => panic!("expected stats, got {other:?}"),
    }
    qosd.stop().await;
}

fn send(raw: &mut std::os::unix::net::UnixStream, body: &[u8]) {
    raw.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
    raw.write_all(body).unwrap();
}

/// The next reply, or `None` when qosd closed the connection.
fn receive(raw: &mut std::os::unix::net::UnixStream) -> Option<Reply> {
    let mut len = [0u8; 4];
    raw.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    raw.read_exact(&mut body).ok()?;
    Some(serde_json::from_slice(&body).expect("qosd's replies parse"))
}

/// qosd's reload (SIGHUP, `qosctl policy reload`) re-reads the policy file and its
/// `[[integrity]]` keys, secret files included, and the engine takes the new ones; a file
/// whose secret file is refused changes nothing. Applications see the count in the stats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reload_gives_the_engine_the_new_integrity_keys() {
    use std::os::unix::fs::PermissionsExt;

    let dir = TempDir::new("integrity-reload");
    let secret = |name: &str, mode: u32| {
        let path = dir.0.join(name);
        std::fs::write(&path, b"shared secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let table = |peer: &str, id: u64, file: &str| {
        format!(
            "[[integrity]]\npeer = \"{peer}\"\nkey_id = {id}\nalgorithm = \"hmac-md5\"\n\
             secret_file = \"{file}\"\n"
        )
    };
    secret("a.key", 0o600);
    let policy_file = dir.0.join("policy.toml");
    std::fs::write(&policy_file, table("10.77.0.2", 1, "a.key")).unwrap();
    let policy = qtoq::policy::Policy::load(&policy_file).unwrap();
    assert_eq!(policy.integrity().keys().len(), 1);
    let agent = Agent::builder()
        .transport(qtoq::agent::Transport::udp())
        .local_addr(unique_loopback())
        .policy(policy)
        .build()
        .unwrap();
    let socket = dir.0.join("qosd.sock");
    let daemon = Daemon::bind(agent.clone(), &socket, 0o600, Some(policy_file.clone()))
        .await
        .unwrap();
    assert_eq!(agent.stats().await.unwrap().integrity_keys, 1);

    // A rollover: a second key, from a second file (relative to the policy file).
    secret("b.key", 0o400);
    std::fs::write(
        &policy_file,
        format!(
            "{}{}",
            table("10.77.0.2", 1, "a.key"),
            table("10.77.0.0/24", 2, "b.key")
        ),
    )
    .unwrap();
    assert_eq!(daemon.reload_policy().await, Ok(0));
    assert_eq!(agent.stats().await.unwrap().integrity_keys, 2);

    // A secret file others may read: the reload is refused whole, the keys stay.
    secret("c.key", 0o644);
    std::fs::write(&policy_file, table("10.77.0.2", 3, "c.key")).unwrap();
    let refused = daemon.reload_policy().await.unwrap_err();
    assert!(
        refused.contains("c.key") && refused.contains("chmod 600"),
        "{refused}"
    );
    assert!(!refused.contains("shared secret"), "{refused}");
    assert_eq!(agent.stats().await.unwrap().integrity_keys, 2);

    // Without [[integrity]]: no keys.
    std::fs::write(&policy_file, "").unwrap();
    assert_eq!(daemon.reload_policy().await, Ok(0));
    assert_eq!(agent.stats().await.unwrap().integrity_keys, 0);
    daemon.close();
    agent.shutdown().await.unwrap();
}
