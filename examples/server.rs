//! A QoS server: accepts connections with a reservation and sends bulk data to each client
//! until it disconnects.
//!
//! ```text
//! cargo run --example server -- --listen 0.0.0.0:7878 --signaling rsvp --rate 1000000
//! cargo run --features tc --example server -- --listen 10.77.0.1:5001 \
//!     --policy examples/policy.toml --enforcer tc
//! ```
//!
//! Run `examples/client.rs` on another host (or network namespace) against it. Without
//! `--rate`/`--signaling` each connection gets what the matching policy rule says. Ctrl-C
//! (SIGINT) or SIGTERM (`kill`, systemd, container runtimes) stops the agent cleanly: sessions
//! torn down, rules unloaded, the tc tree removed and the interfaces' previous root qdisc
//! restored; the server then exits 0.

mod stop;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use futures::StreamExt;
use qtoq::enforce::EnforcerKind;
use qtoq::policy::Policy;
use qtoq::{Agent, QosEvent, QosListener, QosSpec, QosStream, Signaling};
use tokio::io::AsyncWriteExt;

use stop::StopSignals;

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
    /// How the reservation is signaled (default: as the matching policy rule says; RSVP
    /// when none does).
    #[arg(long, value_enum)]
    signaling: Option<SignalingArg>,
    /// Token bucket rate of the sender's traffic (and of an unsignaled rule), bytes/s
    /// (default: the matching policy rule's rate, else 125000).
    #[arg(long)]
    rate: Option<u64>,
    /// Token bucket size, bytes (with --rate).
    #[arg(long, default_value_t = 65_536)]
    bucket: u64,
    /// Stop after this many connections (0: serve forever).
    #[arg(long, default_value_t = 0)]
    connections: u64,
    /// Policy file (TOML, see examples/policy.toml); default: the built-in default policy.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Enforcement backend: `socket` (marking and pacing, mostly unprivileged) or `tc`
    /// (HTB on the policy's [[interface]]s; needs CAP_NET_ADMIN and the `tc` feature).
    #[arg(long, default_value = "socket")]
    enforcer: EnforcerKind,
}

async fn serve(mut stream: QosStream, peer: SocketAddr) {
    let start = Instant::now();
    let mut events = stream.events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match event {
                // RSVP errors by their RFC 2205 names.
                QosEvent::PathError { error, node } => {
                    eprintln!("[{peer}] PathErr from {node}: {error}")
                }
                QosEvent::ResvError { error, node } => {
                    eprintln!("[{peer}] ResvErr from {node}: {error}")
                }
                QosEvent::AdmissionDenied { error, reason } => {
                    eprintln!("[{peer}] AdmissionDenied: {reason} ({error})")
                }
                other => eprintln!("[{peer}] {other:?}"),
            }
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
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Before the enforcer loads anything: from here on a signal waits for the cleanup.
    let mut signals = StopSignals::install()?;
    let enforcer_name = match args.enforcer {
        EnforcerKind::Tc => "tc",
        _ => "socket",
    };
    let policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::default(),
    };
    let enforcer = args
        .enforcer
        .build(policy.interfaces())
        .await
        .map_err(|e| {
            let hint = if cfg!(feature = "tc") {
                "(needs CAP_NET_ADMIN and an [[interface]] in the policy)"
            } else {
                "(rebuild with `--features tc`)"
            };
            format!("--enforcer {enforcer_name}: {e} {hint}")
        })?;
    let agent = Agent::builder().policy(policy).enforcer(enforcer).build()?;
    let (served, stopped_by) = tokio::select! {
        served = serve_all(&agent, &args, enforcer_name) => (served, None),
        signal = signals.recv() => {
            eprintln!("{signal}: stopping the agent");
            (Ok(()), Some(signal))
        }
    };
    // Whatever ended the serving (a signal, the last connection, an error such as a listen
    // address in use): tear every session down, unload every rule and restore the
    // interfaces before exiting.
    agent.shutdown().await?;
    if let Some(signal) = stopped_by {
        eprintln!("stopped by {signal}: sessions torn down, rules unloaded, interfaces restored");
    }
    served
}

/// Listens and serves until `--connections` connections have come and gone (forever with
/// 0).
async fn serve_all(
    agent: &Agent,
    args: &Args,
    enforcer_name: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = QosListener::builder().agent(agent);
    if let Some(signaling) = args.signaling {
        builder = builder.signaling(match signaling {
            SignalingArg::Rsvp => Signaling::Rsvp,
            SignalingArg::None => Signaling::None,
        });
    }
    if let Some(rate) = args.rate {
        builder = builder.spec(QosSpec::controlled_load(rate, args.bucket));
    }
    let listener = builder.bind(args.listen).await?;
    eprintln!(
        "listening on {} (signaling {:?}, rate {}, enforcer {enforcer_name})",
        listener.local_addr()?,
        args.signaling,
        args.rate
            .map_or_else(|| "from the policy".to_owned(), |r| format!("{r} B/s")),
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
