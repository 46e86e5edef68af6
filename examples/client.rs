//! A QoS client: connects with an RSVP reservation, receives for a while, and prints one line
//! `goodput_bytes_per_s=<n> reserved_bytes_per_s=<n>`.
//!
//! ```text
//! cargo run --example client -- --connect 127.0.0.1:7878 --rate 1000000 --bucket 65536 --seconds 5
//! cargo run --example client -- --connect 10.77.0.1:5001 --policy client-policy.toml
//! ```
//!
//! It uses the default agent (qosd when it runs, else one embedded in this process) and says
//! which. `--policy FILE` configures an agent, which only an embedded one can honour: given
//! it, the client builds an agent of its own with that policy (its admission limits and its
//! `[[integrity]]` keys, with which RSVP messages to and from the server are signed and
//! checked) even when qosd runs, and says so (that agent then needs the RSVP port qosd
//! holds: stop qosd first), as `server --policy` does. Ctrl-C (SIGINT) or SIGTERM ends the
//! receiving early, as the end of `--seconds` would: the stream is closed (ResvTear, session
//! deleted), the line is printed for the time received, and the client exits 0. An error
//! (a bad policy file, a refused connection) is printed and the client exits 1.

mod stop;
mod which_agent;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use qtoq::agent::protocol::socket_path;
use qtoq::policy::Policy;
use qtoq::{Agent, QosEvent, QosSpec, QosStream};
use tokio::io::AsyncReadExt;

use stop::StopSignals;

#[derive(Debug, Parser)]
#[command(about = "qtoq QoS client: receives with a reservation and reports goodput")]
struct Args {
    /// The server to connect to.
    #[arg(long, default_value = "127.0.0.1:7878")]
    connect: SocketAddr,
    /// Rate to reserve, bytes/s.
    #[arg(long, default_value_t = 1_000_000)]
    rate: u64,
    /// Token bucket size, bytes.
    #[arg(long, default_value_t = 65_536)]
    bucket: u64,
    /// Peak rate, bytes/s (default: none; policies with a `peak` limit need one).
    #[arg(long)]
    peak: Option<u64>,
    /// How long to receive.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Policy file (TOML, see examples/policy.toml) of this client's own agent: admission
    /// limits, and the [[integrity]] keys RSVP messages with the server are signed and
    /// checked with. Without it the client uses the default agent: qosd when it runs.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// RSVP refresh period R of this client's own agent, in milliseconds: how often Path and
    /// Resv state is refreshed (default 30000, RFC 2205's 30 s; 100 to 3600000). Given, the
    /// client uses an agent of its own, since qosd keeps the host's period.
    #[arg(long, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    refresh_period: Option<u64>,
}

/// How long the client waits, after the server closed the connection, for the server's
/// teardown to be reported.
const TEARDOWN_GRACE: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The agent the stream uses: the default one (qosd when it runs), or with `--policy` one
/// of this process's own.
async fn agent(args: &Args) -> Result<Agent, Box<dyn std::error::Error>> {
    if args.policy.is_none() && args.refresh_period.is_none() {
        let agent = Agent::default_agent()?;
        eprintln!("agent: {}", which_agent::describe(&agent));
        return Ok(agent);
    }
    let socket = socket_path();
    if Agent::daemon(&socket).await.is_ok() {
        eprintln!(
            "note: qosd is running at {}, but --policy or --refresh-period makes this client use \
             an agent of its own instead (its own policy, keys and refresh period; it needs the \
             RSVP port qosd holds); without them it would go through qosd",
            socket.display()
        );
    }
    let policy = match &args.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::default(),
    };
    let keys = policy.integrity().keys().len();
    let mut builder = Agent::builder().policy(policy);
    if let Some(ms) = args.refresh_period {
        builder = builder.refresh_period(Duration::from_millis(ms));
    }
    let agent = builder.build()?;
    eprintln!(
        "agent: {}, policy {}, {keys} integrity keys",
        which_agent::describe(&agent),
        args.policy.as_ref().map_or_else(
            || "built-in default".to_owned(),
            |p| p.display().to_string()
        )
    );
    Ok(agent)
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut signals = StopSignals::install()?;
    // The agent the stream below uses, held for the whole run.
    let agent = agent(&args).await?;
    let mut spec = QosSpec::controlled_load(args.rate, args.bucket);
    if let Some(peak) = args.peak {
        spec = spec.peak(peak);
    }
    let own_agent = args.policy.is_some() || args.refresh_period.is_some();
    let mut builder = QosStream::builder().spec(spec);
    if own_agent {
        builder = builder.agent(&agent);
    }
    let mut stream = tokio::select! {
        stream = builder.connect(args.connect) => stream?,
        signal = signals.recv() => {
            // Dropping the connect future releases the session it opened.
            eprintln!("stopped by {signal} while connecting");
            if own_agent {
                agent.shutdown().await?;
            }
            return Ok(());
        }
    };
    eprintln!(
        "connected {} -> {}, session {:?}",
        stream.local_addr()?,
        stream.peer_addr()?,
        stream.session_id()
    );
    let reserved = Arc::new(Mutex::new(0u64));
    let mut events = stream.events();
    let reserved_by_events = reserved.clone();
    // Set once the reservation is gone (torn down or expired).
    let (gone_tx, mut gone) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            match &event {
                // RSVP errors by their RFC 2205 names.
                QosEvent::PathError { error, node } => eprintln!("PathErr from {node}: {error}"),
                QosEvent::ResvError { error, node } => eprintln!("ResvErr from {node}: {error}"),
                QosEvent::AdmissionDenied { error, reason } => {
                    eprintln!("AdmissionDenied: {reason} ({error})")
                }
                other => eprintln!("{other:?}"),
            }
            match event {
                QosEvent::Established { flowspec } => {
                    *reserved_by_events.lock().unwrap_or_else(|e| e.into_inner()) =
                        flowspec.reserved_rate() as u64;
                }
                QosEvent::TornDown { .. } | QosEvent::Expired { .. } => {
                    *reserved_by_events.lock().unwrap_or_else(|e| e.into_inner()) = 0;
                    let _ = gone_tx.send(true);
                }
                _ => {}
            }
        }
    });
    let start = Instant::now();
    let until = start + Duration::from_secs(args.seconds);
    let mut buf = vec![0u8; 64 * 1024];
    let mut received: u64 = 0;
    loop {
        tokio::select! {
            read = tokio::time::timeout_at(until.into(), stream.read(&mut buf)) => match read {
                Ok(Ok(n)) if n > 0 => received += n as u64,
                Ok(Ok(_)) => {
                    // The server closed the connection: its teardown (a PathTear) is sent
                    // at the same moment and may arrive just after the end of the data, so
                    // give it a moment to be reported before closing our side.
                    let _ = tokio::time::timeout(TEARDOWN_GRACE, gone.wait_for(|gone| *gone)).await;
                    break;
                }
                _ => break,
            },
            signal = signals.recv() => {
                eprintln!("stopped by {signal}: closing the stream");
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let reserved_rate = *reserved.lock().unwrap_or_else(|e| e.into_inner());
    stream.close().await?;
    println!(
        "goodput_bytes_per_s={} reserved_bytes_per_s={}",
        (received as f64 / secs) as u64,
        reserved_rate
    );
    if own_agent {
        // Its own agent says goodbye to its peers (PathTear/ResvTear of anything left).
        agent.shutdown().await?;
    }
    Ok(())
}
