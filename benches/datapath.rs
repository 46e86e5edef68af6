//! Data path: a `QosStream` moves bytes like the `TcpStream` inside it. Bulk (64 KiB) and
//! small (64 B) writes over loopback, QosStream and plain tokio TcpStream in the same run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use qtoq::agent::Transport;
use qtoq::{Agent, QosListener, QosStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BULK_BYTES: usize = 16 * 1024 * 1024;
const SMALL_BYTES: usize = 1024 * 1024;

async fn transfer<W, R>(writer: &mut W, reader: &mut R, total: usize, chunk: usize)
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let data = vec![0x42u8; chunk];
    let write = async {
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk);
            writer.write_all(&data[..n]).await.unwrap();
            left -= n;
        }
    };
    let read = async {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        while got < total {
            let n = reader.read(&mut buf).await.unwrap();
            assert!(n > 0, "early eof");
            got += n;
        }
    };
    tokio::join!(write, read);
}

fn datapath(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ip = IpAddr::V4(Ipv4Addr::new(127, 251, (std::process::id() % 250) as u8, 1));
    let (qos_server, qos_client, tcp_server, tcp_client, tcp2_server, tcp2_client, _agent) = rt
        .block_on(async {
            // The recording enforcer: this bench measures what the stream wrapper costs, not
            // the reservation (the default socket enforcer would pace the sender at the
            // reserved 125 000 B/s).
            let agent = Agent::builder()
                .transport(Transport::udp())
                .local_addr(ip)
                .enforcer(Box::new(qtoq::enforce::Recording::new()))
                .build()
                .unwrap();
            let listener = QosListener::builder()
                .agent(&agent)
                .bind(SocketAddr::new(ip, 0))
                .await
                .unwrap();
            let (client, accepted) = tokio::join!(
                QosStream::builder()
                    .agent(&agent)
                    .connect(listener.local_addr().unwrap()),
                listener.accept()
            );
            let tcp = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
            let (tcp_client, tcp_accepted) =
                tokio::join!(TcpStream::connect(tcp.local_addr().unwrap()), tcp.accept());
            let (tcp2_client, tcp2_accepted) =
                tokio::join!(TcpStream::connect(tcp.local_addr().unwrap()), tcp.accept());
            (
                accepted.unwrap().0,
                client.unwrap(),
                tcp_accepted.unwrap().0,
                tcp_client.unwrap(),
                tcp2_accepted.unwrap().0,
                tcp2_client.unwrap(),
                agent,
            )
        });

    let mut pairs = Pairs {
        qos: (qos_server, qos_client),
        tcp: (tcp_server, tcp_client),
        tcp2: (tcp2_server, tcp2_client),
    };
    // Interleaved measurement: every iteration moves the same bytes over *all three*
    // connections, one after the other, and times only the one the bench names. Loopback
    // throughput drifts over seconds (softirq placement, buffer autotuning), so running the
    // connections minutes apart would measure the drift. `tcp_stream_second_connection` is an
    // A/A baseline: a second plain TcpStream shows how far two identical connections differ.
    for (group_name, total, chunk) in [
        ("datapath_bulk_64KiB_writes", BULK_BYTES, 64 * 1024),
        ("datapath_64B_writes", SMALL_BYTES, 64),
    ] {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Bytes(total as u64));
        for (name, which) in [
            ("tcp_stream", Which::Tcp),
            ("tcp_stream_second_connection", Which::Tcp2),
            ("qos_stream", Which::Qos),
        ] {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut timed = Duration::ZERO;
                        for _ in 0..iters {
                            timed += pairs.round(which, total, chunk).await;
                        }
                        timed
                    })
                })
            });
        }
        group.finish();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Which {
    Qos,
    Tcp,
    Tcp2,
}

struct Pairs {
    qos: (QosStream, QosStream),
    tcp: (TcpStream, TcpStream),
    tcp2: (TcpStream, TcpStream),
}

impl Pairs {
    /// One transfer over each connection; returns the time of the one asked for.
    async fn round(&mut self, which: Which, total: usize, chunk: usize) -> Duration {
        let mut timed = Duration::ZERO;
        for each in [Which::Qos, Which::Tcp, Which::Tcp2] {
            let t = Instant::now();
            match each {
                Which::Qos => transfer(&mut self.qos.0, &mut self.qos.1, total, chunk).await,
                Which::Tcp => transfer(&mut self.tcp.0, &mut self.tcp.1, total, chunk).await,
                Which::Tcp2 => transfer(&mut self.tcp2.0, &mut self.tcp2.1, total, chunk).await,
            }
            if each == which {
                timed = t.elapsed();
            }
        }
        timed
    }
}

criterion_group!(benches, datapath);
criterion_main!(benches);
