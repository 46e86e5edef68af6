//! A QoS server: accepts connections with a reservation and sends bulk data to each client
//! until it disconnects.
//!
//! ```text
//! cargo run --example server -- --listen 0.0.0.0:7878 --signaling rsvp --rate 1000000
//! cargo run --features tc --example server -- --listen 10.77.0.1:5001 \
//!     --policy examples/policy.toml --enforcer tc
//! ```
//!
//! Like any qtoq application it uses the default agent: qosd, the host's daemon, when it
//! runs (`$QTOQ_SOCKET`, else /run/qtoq/qosd.sock), an agent embedded in this process
//! otherwise. `--policy` (admission rules, interfaces and `[[integrity]]` keys; give the
//! client the same keys with `client --policy`), `--enforcer` and `--state-dir` configure
//! an agent, which only an embedded one can honour: given any of them, the server builds an
//! agent of its own even when qosd runs, and says so (that agent then needs the RSVP port,
//! and with tc the interfaces, that qosd holds: stop qosd first). It prints which agent it
//! uses.
//!
//! Run `examples/client.rs` on another host (or network namespace) against it. Without
//! `--rate`/`--signaling` each connection gets what the matching policy rule says. Ctrl-C
//! (SIGINT) or SIGTERM (`kill`, systemd, container runtimes) stops the server cleanly: with
//! its own agent, sessions torn down, rules unloaded, the tc tree removed and the
//! interfaces' previous root qdisc restored; through qosd, its connection to qosd closed, so
//! qosd releases its sessions. The server then exits 0.

mod stop;
mod which_agent;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures::StreamExt;
use qtoq::agent::protocol::socket_path;
use qtoq::enforce::{EnforcerKind, DEFAULT_STATE_DIR};
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
    /// Policy file (TOML, see examples/policy.toml) of this server's own agent: its rules and
    /// limits, the [[interface]]s tc shapes, and the [[integrity]] keys RSVP messages with
    /// clients are signed and checked with; default: the built-in default policy. Without
    /// --policy, --enforcer and --state-dir the server uses the default agent: qosd when it
    /// runs.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Enforcement backend of this server's own agent: `socket` (marking and pacing, mostly
    /// unprivileged; the default) or `tc` (HTB on the policy's [[interface]]s; needs
    /// CAP_NET_ADMIN and the `tc` feature).
    #[arg(long)]
    enforcer: Option<EnforcerKind>,
    /// Where this server's own tc enforcer keeps its journal (default /run/qtoq).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// RSVP refresh period R of this server's own agent, in milliseconds: how often Path and
    /// Resv state is refreshed (default 30000, RFC 2205's 30 s; 100 to 3600000). Given, the
    /// server uses an agent of its own, since qosd keeps the host's period.
    #[arg(long, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    refresh_period: Option<u64>,
}

impl Args {
    /// The flags that ask for an agent of this process, as given (empty: the default agent).
    fn own_agent_flags(&self) -> Vec<&'static str> {
        [
            (self.policy.is_some(), "--policy"),
            (self.enforcer.is_some(), "--enforcer"),
            (self.state_dir.is_some(), "--state-dir"),
            (self.refresh_period.is_some(), "--refresh-period"),
        ]
        .into_iter()
        .filter_map(|(given, flag)| given.then_some(flag))
        .collect()
    }
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
    let flags = args.own_agent_flags();
    let agent = if flags.is_empty() {
        let agent = Agent::default_agent()?;
        eprintln!("agent: {}", which_agent::describe(&agent));
        agent
    } else {
        let socket = socket_path();
        if Agent::daemon(&socket).await.is_ok() {
            eprintln!(
                "note: qosd is running at {}, but {} {} this server use an agent of its own \
                 instead (its own policy and enforcer, outside qosd's budget; it needs the RSVP \
                 port, and with tc the interfaces, that qosd holds); without {} it would go \
                 through qosd",
                socket.display(),
                flags.join(" and "),
                if flags.len() == 1 { "makes" } else { "make" },
                if flags.len() == 1 { "it" } else { "them" },
            );
        }
        let agent = embedded_agent(&args).await?;
        eprintln!(
            "agent: {}, policy {}, enforcer {}",
            which_agent::describe(&agent),
            args.policy.as_ref().map_or_else(
                || "built-in default".to_owned(),
                |p| p.display().to_string()
            ),
            enforcer_name(args.enforcer)
        );
        agent
    };
    let (served, stopped_by) = tokio::select! {
        served = serve_all(&agent, &args) => (served, None),
        signal = signals.recv() => {
            eprintln!("{signal}: stopping the agent");
            (Ok(()), Some(signal))
        }
    };
    // Whatever ended the serving (a signal, the last connection, an error such as a listen
    // address in use): tear every session down, unload every rule and restore the
    // interfaces before exiting (through qosd: close the connection, qosd does it).
    agent.shutdown().await?;
    if let Some(signal) = stopped_by {
        if agent.uses_daemon() {
            eprintln!("stopped by {signal}: connection to qosd closed, qosd released the sessions");
        } else {
            eprintln!(
                "stopped by {signal}: sessions torn down, rules unloaded, interfaces restored"
            );
        }
    }
    served
}

fn enforcer_name(kind: Option<EnforcerKind>) -> &'static str {
    match kind {
        Some(EnforcerKind::Tc) => "tc",
        _ => "socket",
    }
}

/// This server's own agent, as `--policy`, `--enforcer` and `--state-dir` say.
async fn embedded_agent(args: &Args) -> Result<Agent, Box<dyn std::error::Error>> {
    let policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::default(),
    };
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let enforcer = args
        .enforcer
        .unwrap_or(EnforcerKind::Socket)
        .build_with_state_dir(policy.interfaces(), &state_dir)
        .await
        .map_err(|e| {
            let hint = if cfg!(feature = "tc") {
                "(needs CAP_NET_ADMIN and an [[interface]] in the policy)"
            } else {
                "(rebuild with `--features tc`)"
            };
            format!("--enforcer {}: {e} {hint}", enforcer_name(args.enforcer))
        })?;
    let mut builder = Agent::builder().policy(policy).enforcer(enforcer);
    if let Some(ms) = args.refresh_period {
        builder = builder.refresh_period(Duration::from_millis(ms));
    }
    Ok(builder.build()?)
}

/// Listens and serves until `--connections` connections have come and gone (forever with
/// 0).
async fn serve_all(agent: &Agent, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    // The default agent is not pinned: should qosd restart, the listener finds the new one.
    let mut builder = QosListener::builder();
    if !args.own_agent_flags().is_empty() {
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
        "listening on {} (signaling {:?}, rate {}, agent {})",
        listener.local_addr()?,
        args.signaling,
        args.rate
            .map_or_else(|| "from the policy".to_owned(), |r| format!("{r} B/s")),
        if agent.uses_daemon() {
            "qosd"
        } else {
            "embedded"
        },
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
