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
//! `--rate`/`--signaling` each connection gets what the matching policy rule says. Without
//! `--policy` and `--enforcer` the server uses the process's default agent: qosd, the host's
//! daemon, when it answers at `$QTOQ_SOCKET` (default `/run/qtoq/qosd.sock`), else an
//! embedded agent with the default policy and the socket enforcer. Ctrl-C
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
    /// Policy file (TOML, see examples/policy.toml) of an agent of the server's own; default:
    /// the default agent (qosd when it runs, else the built-in default policy).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Enforcement backend of an agent of the server's own: `socket` (marking and pacing,
    /// mostly unprivileged) or `tc` (HTB on the policy's [[interface]]s; needs CAP_NET_ADMIN
    /// and the `tc` feature); default: the default agent's (qosd's, else `socket`).
    #[arg(long)]
    enforcer: Option<EnforcerKind>,
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
    let agent = if args.policy.is_none() && args.enforcer.is_none() {
        // The process's default agent: qosd when it answers, else an embedded one. Held
        // here so it lives as long as the server; the listener, bound without an agent of
        // its own, follows the default agent should qosd restart.
        Which::Default(Agent::default_agent()?)
    } else {
        Which::Own(own_agent(&args).await?)
    };
    let enforcer_name = match (&agent, args.enforcer) {
        (Which::Default(default), _) if default.uses_daemon() => "qosd's",
        (_, Some(EnforcerKind::Tc)) => "tc",
        _ => "socket",
    };
    let (served, stopped_by) = tokio::select! {
        served = serve_all(agent.own(), &args, enforcer_name) => (served, None),
        signal = signals.recv() => {
            eprintln!("{signal}: stopping the agent");
            (Ok(()), Some(signal))
        }
    };
    // Whatever ended the serving (a signal, the last connection, an error such as a listen
    // address in use): tear every session down, unload every rule and restore the
    // interfaces before exiting.
    match &agent {
        Which::Own(own) => own.shutdown().await?,
        // The default agent in use now (a new one if qosd restarted): qosd releases this
        // process's sessions, an embedded agent tears them down. One that already stopped
        // has nothing left to do.
        Which::Default(_) => {
            let current = Agent::default_agent()?;
            if current.is_running() {
                current.shutdown().await?;
            }
        }
    }
    if let Some(signal) = stopped_by {
        eprintln!("stopped by {signal}: sessions torn down, rules unloaded, interfaces restored");
    }
    served
}

/// The server's agent: one of its own, or the process's default agent.
enum Which {
    Own(Agent),
    Default(Agent),
}

impl Which {
    fn own(&self) -> Option<&Agent> {
        match self {
            Which::Own(agent) => Some(agent),
            Which::Default(_) => None,
        }
    }
}

/// An agent of the server's own, with `--policy` and `--enforcer`.
async fn own_agent(args: &Args) -> Result<Agent, Box<dyn std::error::Error>> {
    let kind = args.enforcer.unwrap_or(EnforcerKind::Socket);
    let policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::default(),
    };
    let enforcer = kind.build(policy.interfaces()).await.map_err(|e| {
        let hint = if cfg!(feature = "tc") {
            "(needs CAP_NET_ADMIN and an [[interface]] in the policy)"
        } else {
            "(rebuild with `--features tc`)"
        };
        let name = if kind == EnforcerKind::Tc {
            "tc"
        } else {
            "socket"
        };
        format!("--enforcer {name}: {e} {hint}")
    })?;
    Ok(Agent::builder().policy(policy).enforcer(enforcer).build()?)
}

/// Listens and serves until `--connections` connections have come and gone (forever with
/// 0).
async fn serve_all(
    agent: Option<&Agent>,
    args: &Args,
    enforcer_name: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = QosListener::builder();
    if let Some(agent) = agent {
        builder = builder.agent(agent);
    }
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
