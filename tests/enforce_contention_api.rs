//! Issue 5's proof through the public API, in two network namespaces joined by a veth pair:
//! a server-namespace [`Agent`] with a policy declaring the server veth at 20 Mbit/s and the
//! tc enforcer, a client-namespace agent, RSVP over UDP between them across the veth.
//!
//! * Contention: a [`QosListener`] sends bulk data to one [`QosStream`] client with an
//!   8 Mbit/s Controlled-Load reservation and to greedy best-effort plain TCP connections;
//!   the reserved flow gets ≥ 95% of its reservation, and clearly less without it.
//! * Teardown by `close`, by expiry (the peer agent crashes silently) and by
//!   [`Agent::shutdown`] each leave no HTB class, no filter and no socket option behind
//!   (`tc class show`, `tc filter show`, `getsockopt` on the server stream's socket).
//!
//! The tests of this file run one at a time (a lock): the goodput measurement must not share
//! the CPU with another namespace's traffic. Needs root (netns, CAP_NET_ADMIN): without it
//! the tests say why and return, unless QTOQ_REQUIRE_PRIVILEGED=1, when they fail.
#![cfg(feature = "tc")]

mod netns_support;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures::StreamExt;
use qtoq::enforce::{EnforcerKind, SocketOptions};
use qtoq::policy::Policy;
use qtoq::{Agent, QosEvent, QosEvents, QosListener, QosSpec, QosStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use netns_support::{in_netns, Namespaces, CAPACITY, CLIENT_IP, RESERVED, SERVER_IP};

/// The server namespace's policy: the veth at 20 Mbit/s; connections from the QoS port may
/// reserve up to 8 Mbit/s Controlled-Load, marked AF41. Listeners take their spec from it.
const POLICY: &str = r#"
[[interface]]
name = "veth-qtoq"
capacity = "20Mbit"

[[rule]]
name = "bulk-reserved"
service = "controlled-load"
rate = "8Mbit"
dscp = "AF41"
match = { local_port = 5001 }
"#;

const QOS_PORT: u16 = 5001;
const BEST_EFFORT_PORT: u16 = 5002;
const BEST_EFFORT_FLOWS: usize = 6;
const WARM_UP: Duration = Duration::from_millis(1500);
const WINDOW: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(15);
/// AF41 in the TOS byte.
const AF41_TOS: u32 = 34 << 2;

/// One test at a time (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The server agent: the contention policy and the tc enforcer (chained with socket
/// marking), built in the calling thread's namespace.
async fn server_agent() -> Agent {
    let policy = Policy::from_toml_str(POLICY, "contention.toml").expect("policy");
    let enforcer = EnforcerKind::Tc
        .build(policy.interfaces())
        .await
        .expect("tc enforcer");
    Agent::builder()
        .local_addr(SERVER_IP.parse().unwrap())
        .policy(policy)
        .enforcer(enforcer)
        .build()
        .expect("server agent")
}

fn client_agent(refresh: Duration) -> Agent {
    Agent::builder()
        .local_addr(CLIENT_IP.parse().unwrap())
        .refresh_period(refresh)
        .build()
        .expect("client agent")
}

/// The client's reservation: 8 Mbit/s, 64 KiB bucket, in bytes as everywhere in the API.
fn reservation() -> QosSpec {
    QosSpec::controlled_load(RESERVED as u64, 65_536)
}

/// Waits for the first event `pick` accepts; panics with what came instead.
async fn until(events: &mut QosEvents, what: &str, pick: impl Fn(&QosEvent) -> bool) -> QosEvent {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.next().await {
            if pick(&event) {
                return Some(event);
            }
            seen.push(event);
        }
        None
    })
    .await;
    match found {
        Ok(Some(event)) => event,
        _ => panic!("no {what} event; saw {seen:?}"),
    }
}

/// Reservation classes (anything but the root 7174:1 and best-effort 7174:2) and filters
/// on the server veth.
fn leftovers(ns: &Namespaces) -> (Vec<String>, String) {
    leftovers_in(&ns.server)
}

fn assert_no_leftovers(ns: &Namespaces, when: &str) {
    let (classes, filters) = leftovers(ns);
    assert!(
        classes.is_empty(),
        "{when}: reservation classes left: {classes:?}"
    );
    assert_eq!(filters, "", "{when}: filters left behind");
}

fn assert_marked(socket: &OwnedFd) {
    let marked = SocketOptions::read(socket.as_fd()).expect("getsockopt");
    assert_eq!(marked.tos, Some(AF41_TOS), "AF41 marking: {marked:?}");
}

fn assert_unmarked(socket: &OwnedFd, when: &str) {
    let options = SocketOptions::read(socket.as_fd()).expect("getsockopt");
    assert_eq!(options.tos, Some(0), "{when}: IP_TOS left: {options:?}");
    assert_eq!(options.priority, 0, "{when}: SO_PRIORITY left: {options:?}");
    assert_eq!(
        options.max_pacing_rate,
        u64::MAX,
        "{when}: pacing left: {options:?}"
    );
}

/// Goodput (bytes/s at the receiving application) over the measurement window.
#[derive(Debug)]
struct Goodput {
    qos_flow: f64,
    best_effort: Vec<f64>,
}

impl Goodput {
    fn total(&self) -> f64 {
        self.qos_flow + self.best_effort.iter().sum::<f64>()
    }
}

/// What the server thread reports to the test.
enum Step {
    Listening,
    /// Bulk sending started; `Some` = the reservation's class, as `tc` listed it.
    Sending(Option<String>),
}

async fn send_until(stop: Arc<AtomicBool>, mut sink: impl tokio::io::AsyncWrite + Unpin) {
    let chunk = vec![0x5a_u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if sink.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = sink.shutdown().await;
}

/// One run: a QosListener (policy spec, RSVP) and a plain listener in the server
/// namespace send bulk to one QoS-port connection and `BEST_EFFORT_FLOWS` plain ones. With
/// `reserve` the QoS-port client is a `QosStream` reserving 8 Mbit/s through its own agent;
/// without, a plain TCP connection (the server's PATH goes unanswered: no rule).
///
/// With `reserve`, it also checks teardown by `close`: once the server closes its stream,
/// no class, filter or socket option remains.
fn contention_run(ns: &Namespaces, reserve: bool) -> Goodput {
    let received: Arc<Vec<AtomicU64>> =
        Arc::new((0..=BEST_EFFORT_FLOWS).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let (step_tx, step_rx) = mpsc::channel::<Step>();
    let (closed_tx, closed_rx) = mpsc::channel::<OwnedFd>();

    let server_stop = stop.clone();
    let server_ns = ns.server.clone();
    let server = in_netns(&ns.server, move || async move {
        let agent = server_agent().await;
        let listener = QosListener::builder()
            .agent(&agent)
            .bind((SERVER_IP, QOS_PORT))
            .await
            .expect("qos listener");
        let plain = TcpListener::bind((SERVER_IP, BEST_EFFORT_PORT))
            .await
            .expect("plain listener");
        step_tx.send(Step::Listening).unwrap();
        let (stream, _) = listener.accept().await.expect("qos accept");
        let mut best_effort = Vec::new();
        for _ in 0..BEST_EFFORT_FLOWS {
            best_effort.push(plain.accept().await.expect("accept").0);
        }
        // The spec came from the policy rule: the PATH announced 8 Mbit/s.
        let socket = stream.tcp().as_fd().try_clone_to_owned().unwrap();
        let class = if reserve {
            let mut events = stream.events();
            until(&mut events, "Established", |e| {
                matches!(e, QosEvent::Established { .. })
            })
            .await;
            assert_marked(&socket);
            Some(tc_show(&server_ns, "class"))
        } else {
            None
        };
        step_tx.send(Step::Sending(class)).unwrap();
        let mut writers = Vec::new();
        for tcp in best_effort {
            writers.push(tokio::spawn(send_until(server_stop.clone(), tcp)));
        }
        // The QoS stream is written here, so it can be closed (not just dropped) after.
        let mut stream = stream;
        let chunk = vec![0xa5_u8; 64 * 1024];
        while !server_stop.load(Ordering::Relaxed) {
            if stream.write_all(&chunk).await.is_err() {
                break;
            }
        }
        stream.close().await.expect("close tears down cleanly");
        closed_tx.send(socket).unwrap();
        for w in writers {
            let _ = w.await;
        }
        agent.shutdown().await.expect("agent shutdown");
    });
    assert!(matches!(
        step_rx.recv_timeout(WAIT).expect("server listening"),
        Step::Listening
    ));

    let client_received = received.clone();
    let client = in_netns(&ns.client, move || async move {
        let agent = client_agent(Duration::from_secs(30));
        let mut readers = Vec::new();
        let qos_counter = client_received.clone();
        if reserve {
            let mut stream = QosStream::builder()
                .agent(&agent)
                .spec(reservation())
                .connect((SERVER_IP, QOS_PORT))
                .await
                .expect("qos connect");
            readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    qos_counter[0].fetch_add(n as u64, Ordering::Relaxed);
                }
                let _ = stream.close().await;
            }));
        } else {
            let tcp = TcpStream::connect((SERVER_IP, QOS_PORT))
                .await
                .expect("connect");
            readers.push(tokio::spawn(count(tcp, qos_counter, 0)));
        }
        for id in 1..=BEST_EFFORT_FLOWS {
            let tcp = TcpStream::connect((SERVER_IP, BEST_EFFORT_PORT))
                .await
                .expect("connect");
            readers.push(tokio::spawn(count(tcp, client_received.clone(), id)));
        }
        for r in readers {
            let _ = r.await;
        }
        drop(agent);
    });

    match step_rx.recv_timeout(WAIT).expect("server sending") {
        Step::Sending(Some(classes)) => {
            // 1 000 000 B/s of payload ≈ 8.36 Mbit/s of frames, may borrow up to 20 Mbit/s.
            assert!(
                classes.contains("class htb 7174:1000 parent 7174:1")
                    && classes.contains("rate 8364Kbit ceil 20Mbit"),
                "reservation class: {classes}"
            );
        }
        Step::Sending(None) => assert!(!reserve),
        Step::Listening => unreachable!(),
    }
    thread::sleep(WARM_UP);
    let snapshot = || -> Vec<u64> { received.iter().map(|c| c.load(Ordering::Relaxed)).collect() };
    let (start, before) = (Instant::now(), snapshot());
    thread::sleep(WINDOW);
    let (elapsed, after) = (start.elapsed().as_secs_f64(), snapshot());
    stop.store(true, Ordering::Relaxed);

    let socket = closed_rx.recv_timeout(WAIT).expect("server closed");
    if reserve {
        assert_no_leftovers(ns, "after close");
        assert_unmarked(&socket, "after close");
    }
    server.join().expect("server thread");
    client.join().expect("client thread");
    let rates: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) as f64 / elapsed)
        .collect();
    Goodput {
        qos_flow: rates[0],
        best_effort: rates[1..].to_vec(),
    }
}

async fn count(mut tcp: TcpStream, counters: Arc<Vec<AtomicU64>>, id: usize) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = tcp.read(&mut buf).await {
        if n == 0 {
            break;
        }
        counters[id].fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Issue 5's contention test, through `Agent`/`QosListener`/`QosStream`: 20 Mbit/s declared
/// capacity, one flow with an 8 Mbit/s Controlled-Load reservation signaled with RSVP over
/// UDP between the namespaces' agents, six greedy best-effort flows; the HTB root at
/// 20 Mbit/s is the bottleneck (the veth itself is not limited).
#[test]
fn reservation_through_the_api_protects_a_flow_on_a_saturated_link() {
    let _serial = serial();
    let Some(ns) = Namespaces::create() else {
        return;
    };
    let with = contention_run(&ns, true);
    // The agent's shutdown removed the tree.
    assert!(!ns.tc(&["qdisc", "show"]).contains("7174"));
    let without = contention_run(&ns, false);
    for (name, run) in [
        ("with reservation", &with),
        ("without reservation", &without),
    ] {
        eprintln!(
            "{name}: qos flow {:.0} B/s ({:.1}% of {RESERVED}), best effort {:?} B/s, total {:.0} B/s",
            run.qos_flow,
            100.0 * run.qos_flow / f64::from(RESERVED),
            run.best_effort.iter().map(|r| r.round()).collect::<Vec<_>>(),
            run.total()
        );
    }
    // The link was saturated in both runs (goodput, so below the 2.5 MB/s of frames).
    for run in [&with, &without] {
        assert!(run.total() > 0.85 * CAPACITY, "link not saturated: {run:?}");
        assert!(
            run.total() <= 1.02 * CAPACITY,
            "HTB root did not limit: {run:?}"
        );
    }
    assert!(
        with.qos_flow >= 0.95 * f64::from(RESERVED),
        "reserved flow got {:.0} B/s, less than 95% of its {RESERVED} B/s reservation",
        with.qos_flow
    );
    assert!(
        without.qos_flow < 0.75 * f64::from(RESERVED),
        "without the reservation the flow still got {:.0} B/s: the competition is too weak",
        without.qos_flow
    );
}

/// The client agent crashes (its runtime is dropped: no ResvTear ever goes out). With its
/// 300 ms refresh period the server's reservation state expires in about 1.6 s; the rule
/// goes with it.
#[test]
fn expiry_of_a_silent_peer_leaves_nothing_behind() {
    let _serial = serial();
    let Some(ns) = Namespaces::create() else {
        return;
    };
    let (crash_tx, crash_rx) = mpsc::channel::<()>();
    let (listening_tx, listening_rx) = mpsc::channel::<()>();
    let server_ns = ns.server.clone();
    let server = in_netns(&ns.server, move || async move {
        let agent = server_agent().await;
        let listener = QosListener::builder()
            .agent(&agent)
            .bind((SERVER_IP, QOS_PORT))
            .await
            .expect("qos listener");
        listening_tx.send(()).unwrap();
        let (stream, _) = listener.accept().await.expect("accept");
        let mut events = stream.events();
        until(&mut events, "Established", |e| {
            matches!(e, QosEvent::Established { .. })
        })
        .await;
        let socket = stream.tcp().as_fd().try_clone_to_owned().unwrap();
        assert_marked(&socket);
        let (classes, _) = leftovers_in(&server_ns);
        assert_eq!(classes.len(), 1, "one reservation class: {classes:?}");
        crash_tx.send(()).unwrap();
        let expired = until(&mut events, "Expired", |e| {
            matches!(e, QosEvent::Expired { .. })
        })
        .await;
        // The step that reports the expiry queues the rule's unload; the netlink request
        // runs after it, off the signaling loop: wait until nothing is queued or in force.
        let deadline = Instant::now() + WAIT;
        let stats = loop {
            let stats = agent.stats().await.unwrap();
            if stats.enforce_queue == 0 && stats.rules_in_force == 0 {
                break stats;
            }
            assert!(Instant::now() < deadline, "rule still in force: {stats:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(stats.policy_admitted, 0, "{stats:?}");
        let (classes, filters) = leftovers_in(&server_ns);
        assert!(classes.is_empty(), "after expiry: classes {classes:?}");
        assert_eq!(filters, "", "after expiry: filters left");
        assert_unmarked(&socket, "after expiry");
        drop(stream);
        agent.shutdown().await.unwrap();
        expired
    });
    listening_rx.recv_timeout(WAIT).expect("server listening");
    let client_ns = Namespaces::path(&ns.client);
    let client = thread::spawn(move || {
        qtoq::enforce::enter_network_namespace(&client_ns).expect("setns");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let held = runtime.block_on(async {
            let agent = client_agent(Duration::from_millis(300));
            let stream = QosStream::builder()
                .agent(&agent)
                .spec(reservation())
                .connect((SERVER_IP, QOS_PORT))
                .await
                .expect("connect");
            // Keep the agent running (this runtime drives it) until the crash.
            tokio::task::spawn_blocking(move || crash_rx.recv_timeout(WAIT))
                .await
                .unwrap()
                .expect("told to crash");
            (agent, stream)
        });
        // The crash: the agent's task is dropped with the runtime, no teardown is sent.
        drop(runtime);
        drop(held);
    });
    let expired = server.join().expect("server thread");
    client.join().expect("client thread");
    assert!(matches!(expired, QosEvent::Expired { .. }));
    assert!(!ns.tc(&["qdisc", "show"]).contains("7174"));
}

/// `tc <what> show dev veth-qtoq` in the server namespace.
fn tc_show(server_ns: &str, what: &str) -> String {
    netns_support::run(&[
        "ip",
        "netns",
        "exec",
        server_ns,
        "tc",
        what,
        "show",
        "dev",
        netns_support::SERVER_IF,
    ])
    .unwrap_or_else(|e| panic!("{e}"))
}

fn leftovers_in(server_ns: &str) -> (Vec<String>, String) {
    // "class htb 7174:1000 parent 7174:1 ...": the third word is the class id.
    let classes = tc_show(server_ns, "class")
        .lines()
        .filter(|l| {
            let id = l.split_whitespace().nth(2).unwrap_or("");
            id.starts_with("7174:") && id != "7174:1" && id != "7174:2"
        })
        .map(str::to_owned)
        .collect();
    (classes, tc_show(server_ns, "filter").trim().to_owned())
}

/// `Agent::shutdown` while the connection stays open: the client hears the teardown, the
/// server's rule, class, filter, socket options and whole HTB tree are gone, and the
/// interface's previous root qdisc is back.
#[test]
fn agent_shutdown_with_open_connections_leaves_nothing_behind() {
    let _serial = serial();
    let Some(ns) = Namespaces::create() else {
        return;
    };
    ns.tc(&[
        "qdisc", "add", "root", "handle", "9:", "pfifo", "limit", "55",
    ]);
    let (listening_tx, listening_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let server_ns = ns.server.clone();
    let server = in_netns(&ns.server, move || async move {
        let agent = server_agent().await;
        let listener = QosListener::builder()
            .agent(&agent)
            .bind((SERVER_IP, QOS_PORT))
            .await
            .expect("qos listener");
        listening_tx.send(()).unwrap();
        let (stream, _) = listener.accept().await.expect("accept");
        let mut events = stream.events();
        until(&mut events, "Established", |e| {
            matches!(e, QosEvent::Established { .. })
        })
        .await;
        let socket = stream.tcp().as_fd().try_clone_to_owned().unwrap();
        assert_marked(&socket);
        assert_eq!(leftovers_in(&server_ns).0.len(), 1, "one reservation class");

        agent.shutdown().await.expect("shutdown");
        assert!(!agent.is_running());
        let (classes, filters) = leftovers_in(&server_ns);
        assert!(classes.is_empty(), "after shutdown: {classes:?}");
        assert_eq!(filters, "", "after shutdown: filters left");
        assert_unmarked(&socket, "after shutdown");
        // The stream's events end; the agent is gone for later calls.
        let rest = tokio::time::timeout(WAIT, events.by_ref().collect::<Vec<_>>())
            .await
            .expect("events end after shutdown");
        assert!(
            rest.iter().any(|e| matches!(e, QosEvent::TornDown { .. })),
            "{rest:?}"
        );
        assert_eq!(
            agent.stats().await.unwrap_err().kind(),
            std::io::ErrorKind::BrokenPipe
        );
        // The client saw the PathTear before the connection goes.
        let _ = done_rx.recv_timeout(WAIT);
        drop((stream, listener));
    });
    listening_rx.recv_timeout(WAIT).expect("server listening");
    let client = in_netns(&ns.client, move || async move {
        let agent = client_agent(Duration::from_secs(30));
        let stream = QosStream::builder()
            .agent(&agent)
            .spec(reservation())
            .connect((SERVER_IP, QOS_PORT))
            .await
            .expect("connect");
        let mut events = stream.events();
        // The server's PathTear reaches the client's agent.
        until(&mut events, "TornDown", |e| {
            matches!(e, QosEvent::TornDown { .. })
        })
        .await;
        done_tx.send(()).unwrap();
    });
    client.join().expect("client thread");
    server.join().expect("server thread");
    let qdisc = ns.tc(&["qdisc", "show"]);
    assert!(!qdisc.contains("7174"), "{qdisc}");
    assert!(
        qdisc.contains("qdisc pfifo 9: root"),
        "previous root qdisc: {qdisc}"
    );
}
