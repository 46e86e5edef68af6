//! Data path: a `QosStream` moves bytes like the `TcpStream` inside it. Bulk (64 KiB) and
//! small (64 B) writes over loopback, QosStream and plain tokio TcpStream in the same run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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
    let (mut qos_server, mut qos_client, mut tcp_server, mut tcp_client, _agent) =
        rt.block_on(async {
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
            (
                accepted.unwrap().0,
                client.unwrap(),
                tcp_accepted.unwrap().0,
                tcp_client.unwrap(),
                agent,
            )
        });

    let mut bulk = c.benchmark_group("datapath_bulk_64KiB_writes");
    bulk.throughput(Throughput::Bytes(BULK_BYTES as u64));
    bulk.bench_function("tcp_stream", |b| {
        b.iter(|| {
            rt.block_on(transfer(
                &mut tcp_server,
                &mut tcp_client,
                BULK_BYTES,
                64 * 1024,
            ))
        })
    });
    bulk.bench_function("qos_stream", |b| {
        b.iter(|| {
            rt.block_on(transfer(
                &mut qos_server,
                &mut qos_client,
                BULK_BYTES,
                64 * 1024,
            ))
        })
    });
    bulk.finish();

    let mut small = c.benchmark_group("datapath_64B_writes");
    small.throughput(Throughput::Bytes(SMALL_BYTES as u64));
    small.bench_function("tcp_stream", |b| {
        b.iter(|| rt.block_on(transfer(&mut tcp_server, &mut tcp_client, SMALL_BYTES, 64)))
    });
    small.bench_function("qos_stream", |b| {
        b.iter(|| rt.block_on(transfer(&mut qos_server, &mut qos_client, SMALL_BYTES, 64)))
    });
    small.finish();
}

criterion_group!(benches, datapath);
criterion_main!(benches);
