//! A QoS server: accepts connections with a reservation and sends bulk data to each client
//! until it disconnects.
//!
//! ```text
//! cargo run --example server -- --listen 0.0.0.0:7878 --signaling rsvp --rate 1000000
//! ```
//!
//! Run `examples/client.rs` on another host (or network namespace) against it.

use std::net::SocketAddr;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use futures::StreamExt;
use qtoq::{QosListener, QosSpec, QosStream, Signaling};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SignalingArg {
    /// RSVP signaling: the client's RESV decides the reservation.
    Rsvp,
    /// A rule marked with no signaling: admission and rule load on accept.
    None,
}

#[derive(Debug, Parser)]
#[command(about = "qtoq QoS server: sends bulk data to each client")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// How the reservation is signaled.
    #[arg(long, value_enum, default_value = "rsvp")]
    signaling: SignalingArg,
    /// Token bucket rate of the sender's traffic (and of an unsignaled rule), bytes/s.
    #[arg(long, default_value_t = 1_000_000)]
    rate: u64,
    /// Token bucket size, bytes.
    #[arg(long, default_value_t = 65_536)]
    bucket: u64,
    /// Stop after this many connections (0: serve forever).
    #[arg(long, default_value_t = 0)]
    connections: u64,
    // Room for what the policy/enforcement layer brings: `--policy FILE` (rules and
    // admission pools) and `--enforcer recording|socket|tc`.
}

async fn serve(mut stream: QosStream, peer: SocketAddr) {
    let start = Instant::now();
    let mut events = stream.events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            eprintln!("[{peer}] {event:?}");
        }
    });
    let chunk = vec![0xa5_u8; 64 * 1024];
    let mut sent: u64 = 0;
    // Bulk send until the client goes away.
    while stream.write_all(&chunk).await.is_ok() {
        sent += chunk.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "[{peer}] done: {sent} bytes in {secs:.2} s ({:.0} B/s)",
        sent as f64 / secs.max(1e-9)
    );
    if let Err(e) = stream.close().await {
        eprintln!("[{peer}] close: {e}");
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let signaling = match args.signaling {
        SignalingArg::Rsvp => Signaling::Rsvp,
        SignalingArg::None => Signaling::None,
    };
    let listener = QosListener::builder()
        .signaling(signaling)
        .spec(QosSpec::controlled_load(args.rate, args.bucket))
        .bind(args.listen)
        .await?;
    eprintln!(
        "listening on {} (signaling {:?}, rate {} B/s)",
        listener.local_addr()?,
        signaling,
        args.rate
    );
    let mut served = 0;
    let mut tasks = Vec::new();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                eprintln!("accepted {peer}, session {:?}", stream.session_id());
                tasks.push(tokio::spawn(serve(stream, peer)));
                served += 1;
                if args.connections != 0 && served >= args.connections {
                    break;
                }
            }
            // A refused connection (admission) is closed; keep serving the others.
            Err(e) => eprintln!("connection refused: {e}"),
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}
