//! A QoS client: connects with an RSVP reservation, receives for a while, and prints one line
//! `goodput_bytes_per_s=<n> reserved_bytes_per_s=<n>`.
//!
//! ```text
//! cargo run --example client -- --connect 127.0.0.1:7878 --rate 1000000 --bucket 65536 --seconds 5
//! ```
//!
//! It uses the default agent (qosd when it runs, else one embedded in this process) and says
//! which. Ctrl-C (SIGINT) or SIGTERM ends the receiving early, as the end of `--seconds` would: the
//! stream is closed (ResvTear, session deleted), the line is printed for the time received,
//! and the client exits 0.

mod stop;
mod which_agent;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
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
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut signals = StopSignals::install()?;
    // The default agent the stream below uses (qosd when it runs), held for the whole run.
    let agent = Agent::default_agent()?;
    eprintln!("agent: {}", which_agent::describe(&agent));
    let mut spec = QosSpec::controlled_load(args.rate, args.bucket);
    if let Some(peak) = args.peak {
        spec = spec.peak(peak);
    }
    let mut stream = tokio::select! {
        stream = QosStream::connect(args.connect, spec) => stream?,
        signal = signals.recv() => {
            // Dropping the connect future releases the session it opened.
            eprintln!("stopped by {signal} while connecting");
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
    Ok(())
}
