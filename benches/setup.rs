//! Reservation setup latency: `QosStream::connect` + `QosListener::accept` until both ends
//! report `Established`, beside a plain `TcpStream::connect` + `accept` in the same run.
//!
//! Besides criterion's estimates it prints p50/p99 of every measured setup and the setups/s
//! of 64 concurrent setups. With the `daemon` feature the multi-thread group adds setup
//! through qosd (an in-process `daemon::Daemon` on a temporary socket, the application side
//! `Agent::daemon`) beside the embedded agent and plain TCP.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;
use qtoq::agent::Transport;
use qtoq::{Agent, QosEvent, QosListener, QosSpec, QosStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const CONCURRENT: usize = 64;
/// Client addresses rotated through: a client binds before it connects (the session names
/// its address), so one address offers at most ~28k ports while TIME_WAIT remnants (60 s)
/// hold them; criterion runs more setups than that. The agents own these addresses, as a
/// host's agent owns the host's.
const CLIENT_ADDRS: u8 = 50;
const ONE_AGENT_BLOCK: u8 = 100;
const TWO_AGENTS_BLOCK: u8 = 150;

fn loopback(n: u8) -> IpAddr {
    // 127.250.P.n: away from the tests' addresses, one per bench process.
    IpAddr::V4(Ipv4Addr::new(127, 250, (std::process::id() % 250) as u8, n))
}

async fn established(stream: &QosStream) {
    let mut events = stream.events();
    while let Some(event) = events.next().await {
        if matches!(event, QosEvent::Established { .. }) {
            return;
        }
        // A refused or torn-down setup must stop the bench, not hang it.
        assert!(!event.is_error_or_end(), "setup failed: {event:?}");
    }
    panic!("event stream ended before Established");
}

fn client_addr(block: u8, i: u64) -> IpAddr {
    loopback(block + (i % u64::from(CLIENT_ADDRS)) as u8)
}

/// One setup: connect + accept, both ends Established. Returns the streams to close untimed.
async fn qos_setup(agent: &Agent, listener: &QosListener, bind: IpAddr) -> (QosStream, QosStream) {
    let addr = listener.local_addr().unwrap();
    let client = async {
        let stream = QosStream::builder()
            .agent(agent)
            .spec(QosSpec::controlled_load(1_000_000, 65_536))
            .bind(SocketAddr::new(bind, 0))
            .connect(addr)
            .await
            .unwrap();
        established(&stream).await;
        stream
    };
    let server = async {
        let (stream, _) = listener.accept().await.unwrap();
        established(&stream).await;
        stream
    };
    tokio::join!(client, server)
}

async fn tcp_setup(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let client = client.unwrap();
    no_time_wait(&client);
    (client, server.unwrap().0)
}

/// Closes with a reset instead of leaving TIME_WAIT behind: tens of thousands of setups would
/// otherwise fill the host's TIME_WAIT table (and slow every later port search) during a run.
fn no_time_wait(stream: &TcpStream) {
    socket2::SockRef::from(stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

/// `iters` setups one after another: each `setup(i)` is timed and kept for the percentiles,
/// and its `teardown` runs untimed and completes before the next setup.
async fn timed<T, S: Future<Output = T>, D: Future<Output = ()>>(
    iters: u64,
    samples: &Mutex<Vec<Duration>>,
    mut setup: impl FnMut(u64) -> S,
    mut teardown: impl FnMut(T) -> D,
) -> Duration {
    let mut total = Duration::ZERO;
    for i in 0..iters {
        let t = Instant::now();
        let done = setup(i).await;
        let d = t.elapsed();
        total += d;
        samples.lock().unwrap().push(d);
        teardown(done).await;
    }
    total
}

/// Teardown is not part of setup: done untimed, fully, before the next.
async fn close_pair((client, server): (QosStream, QosStream)) {
    no_time_wait(client.tcp());
    client.close().await.unwrap();
    server.close().await.unwrap();
}

fn percentiles(name: &str, samples: &Mutex<Vec<Duration>>) {
    let mut s = samples.lock().unwrap().clone();
    if s.is_empty() {
        return;
    }
    s.sort();
    let at = |p: f64| s[((s.len() as f64 * p) as usize).min(s.len() - 1)];
    println!(
        "{name}: n={} p50={:?} p99={:?}",
        s.len(),
        at(0.50),
        at(0.99)
    );
}

fn setup(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server_ip = loopback(1);
    // The default policy, as applications get it: admission is part of every setup. On
    // loopback its budget is unlimited, so the 64 concurrent 1 MB/s reservations all fit
    // (the former host-wide 100 Mbit/s pot admitted only 12 of them).
    let (one_agent, listener, two_a, two_b, listener_two, tcp_listener) = rt.block_on(async {
        let one = (0..CLIENT_ADDRS)
            .fold(
                Agent::builder()
                    .transport(Transport::udp())
                    .local_addr(server_ip),
                |b, i| b.local_addr(client_addr(ONE_AGENT_BLOCK, u64::from(i))),
            )
            .build()
            .unwrap();
        let listener = QosListener::builder()
            .agent(&one)
            .spec(QosSpec::controlled_load(1_000_000, 65_536))
            .bind(SocketAddr::new(server_ip, 0))
            .await
            .unwrap();
        // Two agents talking over real UDP on loopback (two hosts' worth of work).
        let a = Agent::builder().local_addr(loopback(3)).build().unwrap();
        let b = (0..CLIENT_ADDRS)
            .fold(Agent::builder(), |b, i| {
                b.local_addr(client_addr(TWO_AGENTS_BLOCK, u64::from(i)))
            })
            .build()
            .unwrap();
        let listener_two = QosListener::builder()
            .agent(&a)
            .spec(QosSpec::controlled_load(1_000_000, 65_536))
            .bind(SocketAddr::new(loopback(3), 0))
            .await
            .unwrap();
        let tcp = TcpListener::bind(SocketAddr::new(loopback(2), 0))
            .await
            .unwrap();
        (one, listener, a, b, listener_two, tcp)
    });

    let tcp_samples = Arc::new(Mutex::new(Vec::new()));
    let one_samples = Arc::new(Mutex::new(Vec::new()));
    let two_samples = Arc::new(Mutex::new(Vec::new()));
    let mut group = c.benchmark_group("setup");
    group.bench_function("tcp_connect_accept", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed(
                iters,
                &tcp_samples,
                |_| tcp_setup(&tcp_listener),
                |pair| async move { drop(pair) },
            ))
        })
    });
    group.bench_function("qos_established_both_ends_one_agent", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed(
                iters,
                &one_samples,
                |i| qos_setup(&one_agent, &listener, client_addr(ONE_AGENT_BLOCK, i)),
                close_pair,
            ))
        })
    });
    group.bench_function("qos_established_both_ends_two_agents_udp", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed(
                iters,
                &two_samples,
                |i| qos_setup(&two_b, &listener_two, client_addr(TWO_AGENTS_BLOCK, i)),
                close_pair,
            ))
        })
    });
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    group.bench_function("tcp_connect_accept_x64_concurrent", |b| {
        b.iter_custom(|iters| concurrent(&rt, iters, |_| async { tcp_setup(&tcp_listener).await }))
    });
    group.bench_function("qos_established_x64_concurrent_one_agent", |b| {
        b.iter_custom(|iters| {
            let (agent, listener) = (&one_agent, &listener);
            concurrent(&rt, iters, |i| async move {
                let (client, server) =
                    qos_setup(agent, listener, client_addr(ONE_AGENT_BLOCK, i as u64)).await;
                no_time_wait(client.tcp());
                (client, server)
            })
        })
    });
    group.finish();
    let (mt_tcp_samples, mt_default_samples) = setup_as_users_get_it(c);
    let _ = &two_a;
    percentiles("setup/tcp_connect_accept", &tcp_samples);
    percentiles("setup/qos_established_both_ends_one_agent", &one_samples);
    percentiles(
        "setup/qos_established_both_ends_two_agents_udp",
        &two_samples,
    );
    percentiles("setup_mt/tcp_connect_accept", &mt_tcp_samples);
    percentiles(
        "setup_mt/qos_established_both_ends_default_agent",
        &mt_default_samples,
    );
}

/// Setup as an application gets it: `#[tokio::main]`'s multi-thread runtime (one worker per
/// core), the lazily started default agent and its default policy, the work in a spawned
/// task; beside plain TCP on the same runtime.
fn setup_as_users_get_it(c: &mut Criterion) -> (Samples, Samples) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (tcp_listener, listener) = rt.block_on(async {
        let tcp = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
        let qos = QosListener::builder()
            .spec(QosSpec::controlled_load(1_000_000, 65_536))
            .bind(SocketAddr::new(ip, 0))
            .await
            .unwrap();
        (Arc::new(tcp), Arc::new(qos))
    });
    let tcp_samples: Samples = Arc::default();
    let default_samples: Samples = Arc::default();
    let mut group = c.benchmark_group("setup_mt");
    group.bench_function("tcp_connect_accept", |b| {
        b.iter_custom(|iters| {
            let (listener, samples) = (tcp_listener.clone(), tcp_samples.clone());
            rt.block_on(rt.spawn(async move {
                timed(
                    iters,
                    &samples,
                    |_| tcp_setup(&listener),
                    |pair| async move { drop(pair) },
                )
                .await
            }))
            .unwrap()
        })
    });
    let explicit_samples: Samples = Arc::default();
    let (explicit, explicit_listener) = rt.block_on(async {
        let agent = Agent::builder().local_addr(loopback(4)).build().unwrap();
        let listener = QosListener::builder()
            .agent(&agent)
            .spec(QosSpec::controlled_load(1_000_000, 65_536))
            .bind(SocketAddr::new(loopback(4), 0))
            .await
            .unwrap();
        (agent, Arc::new(listener))
    });
    #[cfg_attr(not(feature = "daemon"), allow(unused_mut))]
    let mut variants = vec![
        (
            "qos_established_both_ends_default_agent",
            None,
            listener.clone(),
            default_samples.clone(),
        ),
        (
            "qos_established_both_ends_explicit_agent",
            Some(explicit.clone()),
            explicit_listener.clone(),
            explicit_samples.clone(),
        ),
    ];
    // Through qosd: a daemon::Daemon serving an embedded agent of its own (the explicit
    // agent's shape, on its own loopback address) on a temporary socket, in this process
    // and runtime; the application side is Agent::daemon on that socket. Every setup
    // crosses the local api (open, the socket passed over SCM_RIGHTS, events back).
    #[cfg(feature = "daemon")]
    let qosd = QosdBench::start(&rt);
    #[cfg(feature = "daemon")]
    variants.push((
        "qos_established_both_ends_qosd",
        Some(qosd.app.clone()),
        qosd.listener.clone(),
        qosd.samples.clone(),
    ));
    for (name, agent, listener, samples) in variants {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (listener, samples, agent) = (listener.clone(), samples.clone(), agent.clone());
                rt.block_on(rt.spawn(async move {
                    let addr = listener.local_addr().unwrap();
                    let (agent, listener) = (&agent, &listener);
                    let one_task_setup = |_| async move {
                        tokio::join!(
                            async {
                                let mut builder = QosStream::builder()
                                    .spec(QosSpec::controlled_load(1_000_000, 65_536));
                                if let Some(agent) = agent {
                                    // From the agent's own address, as in the benches above.
                                    builder = builder
                                        .agent(agent)
                                        .bind(SocketAddr::new(agent.local_addrs()[0], 0));
                                }
                                let stream = builder.connect(addr).await.unwrap();
                                established(&stream).await;
                                stream
                            },
                            async {
                                let (stream, _) = listener.accept().await.unwrap();
                                established(&stream).await;
                                stream
                            }
                        )
                    };
                    timed(iters, &samples, one_task_setup, close_pair).await
                }))
                .unwrap()
            })
        });
    }
    // Setups/s: 64 at once, plain TCP, the explicit agent and qosd on this runtime.
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    group.bench_function("tcp_connect_accept_x64_concurrent", |b| {
        b.iter_custom(|iters| concurrent(&rt, iters, |_| async { tcp_setup(&tcp_listener).await }))
    });
    #[cfg_attr(not(feature = "daemon"), allow(unused_mut))]
    let mut concurrent_variants = vec![(
        "qos_established_x64_concurrent_explicit_agent",
        explicit.clone(),
        explicit_listener.clone(),
    )];
    #[cfg(feature = "daemon")]
    concurrent_variants.push((
        "qos_established_x64_concurrent_qosd",
        qosd.app.clone(),
        qosd.listener.clone(),
    ));
    for (name, agent, listener) in concurrent_variants {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (agent, listener) = (&agent, &listener);
                let bind = agent.local_addrs()[0];
                concurrent(&rt, iters, |_| async move {
                    let (client, server) = qos_setup(agent, listener, bind).await;
                    no_time_wait(client.tcp());
                    (client, server)
                })
            })
        });
    }
    group.finish();
    percentiles(
        "setup_mt/qos_established_both_ends_explicit_agent",
        &explicit_samples,
    );
    #[cfg(feature = "daemon")]
    {
        percentiles("setup_mt/qos_established_both_ends_qosd", &qosd.samples);
        qosd.stop(&rt);
    }
    server_in_its_own_task(c, &rt, &tcp_listener, &listener);
    (tcp_samples, default_samples)
}

/// The same through the default agent, shaped as servers are written: the server accepts in
/// a task of its own and hands over each connection once established; the measured task
/// connects, waits for `Established` and for the server's connection. Plain TCP in the same
/// shape beside it.
fn server_in_its_own_task(
    c: &mut Criterion,
    rt: &Runtime,
    tcp_listener: &Arc<TcpListener>,
    qos_listener: &Arc<QosListener>,
) {
    let (tcp_accepted, tcp_handed) = tokio::sync::mpsc::unbounded_channel();
    let (qos_accepted, qos_handed) = tokio::sync::mpsc::unbounded_channel();
    // Shared by the measuring tasks of successive batches (locked uncontended: a few ns).
    let tcp_handed = Arc::new(tokio::sync::Mutex::new(tcp_handed));
    let qos_handed = Arc::new(tokio::sync::Mutex::new(qos_handed));
    let (tcp_server, qos_server) = (tcp_listener.clone(), qos_listener.clone());
    rt.spawn(async move {
        while let Ok((stream, _)) = tcp_server.accept().await {
            if tcp_accepted.send(stream).is_err() {
                break;
            }
        }
    });
    rt.spawn(async move {
        while let Ok((stream, _)) = qos_server.accept().await {
            established(&stream).await;
            if qos_accepted.send(stream).is_err() {
                break;
            }
        }
    });
    let (tcp_addr, qos_addr) = (
        tcp_listener.local_addr().unwrap(),
        qos_listener.local_addr().unwrap(),
    );
    let tcp_samples: Samples = Arc::default();
    let qos_samples: Samples = Arc::default();
    let mut group = c.benchmark_group("setup_mt_server_task");
    group.bench_function("tcp_connect_accept", |b| {
        b.iter_custom(|iters| {
            let (handed, samples) = (tcp_handed.clone(), tcp_samples.clone());
            rt.block_on(rt.spawn(async move {
                let handed = &handed;
                let setup = |_| async move {
                    let client = TcpStream::connect(tcp_addr).await.unwrap();
                    (client, handed.lock().await.recv().await.unwrap())
                };
                let teardown = |(client, server): (TcpStream, TcpStream)| async move {
                    no_time_wait(&client);
                    drop(server);
                };
                timed(iters, &samples, setup, teardown).await
            }))
            .unwrap()
        })
    });
    group.bench_function("qos_established_both_ends_default_agent", |b| {
        b.iter_custom(|iters| {
            let (handed, samples) = (qos_handed.clone(), qos_samples.clone());
            rt.block_on(rt.spawn(async move {
                let handed = &handed;
                let setup = |_| async move {
                    let client =
                        QosStream::connect(qos_addr, QosSpec::controlled_load(1_000_000, 65_536))
                            .await
                            .unwrap();
                    established(&client).await;
                    (client, handed.lock().await.recv().await.unwrap())
                };
                timed(iters, &samples, setup, close_pair).await
            }))
            .unwrap()
        })
    });
    group.finish();
    percentiles("setup_mt_server_task/tcp_connect_accept", &tcp_samples);
    percentiles(
        "setup_mt_server_task/qos_established_both_ends_default_agent",
        &qos_samples,
    );
}

type Samples = Arc<Mutex<Vec<Duration>>>;

/// qosd in this process for the benches: its daemon task, the application's agent (the
/// daemon's client), a listener of that agent, and the samples.
#[cfg(feature = "daemon")]
struct QosdBench {
    dir: std::path::PathBuf,
    served: tokio::task::JoinHandle<()>,
    daemon_agent: Agent,
    app: Agent,
    listener: Arc<QosListener>,
    samples: Samples,
}

#[cfg(feature = "daemon")]
impl QosdBench {
    fn start(rt: &Runtime) -> QosdBench {
        let dir = std::env::temp_dir().join(format!("qtoq-bench-qosd-{}", std::process::id()));
        let socket = dir.join("qosd.sock");
        rt.block_on(async {
            let daemon_agent = Agent::builder().local_addr(loopback(5)).build().unwrap();
            let daemon = qtoq::daemon::Daemon::bind(daemon_agent.clone(), &socket, 0o600, None)
                .await
                .unwrap();
            let served = tokio::spawn(async move {
                let _ = daemon.serve().await;
            });
            let app = Agent::daemon(&socket).await.unwrap();
            assert!(app.uses_daemon());
            let listener = QosListener::builder()
                .agent(&app)
                .spec(QosSpec::controlled_load(1_000_000, 65_536))
                .bind(SocketAddr::new(loopback(5), 0))
                .await
                .unwrap();
            QosdBench {
                dir,
                served,
                daemon_agent,
                app,
                listener: Arc::new(listener),
                samples: Arc::default(),
            }
        })
    }

    fn stop(self, rt: &Runtime) {
        rt.block_on(async {
            self.app.shutdown().await.unwrap();
            self.served.abort();
            self.daemon_agent.shutdown().await.unwrap();
        });
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `CONCURRENT` setups at once per iteration; their streams are dropped untimed and the
/// agent drained before the next iteration.
fn concurrent<F, Fut, T>(rt: &Runtime, iters: u64, make: F) -> Duration
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    rt.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let t = Instant::now();
            let pairs = futures::future::join_all((0..CONCURRENT).map(&make)).await;
            total += t.elapsed();
            drop(pairs);
            // Let background teardown finish outside the measurement.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        total
    })
}

criterion_group!(benches, setup);
criterion_main!(benches);
