//! qtoq in one process: a QoS server and a QoS client over loopback, with the default agent
//! (qosd when it runs, else embedded; the first line says which), through both server flows
//! of IBM i's `qtoq_accept` — a rule marked *no signaling*, then RSVP signaling — printing a
//! timeline of what happens on each end.
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! Exits 0 only if every step happened. Ctrl-C (SIGINT) or SIGTERM stops it cleanly: the
//! flow in progress is dropped (its connections and listener release their sessions), the
//! default agent is shut down (teardowns sent, rules unloaded), and the demo exits with the
//! status a shell gives a process that signal killed (130 or 143), as not every step happened.

mod stop;
mod which_agent;

use std::fmt::Display;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures::StreamExt;
use qtoq::wire::intserv::FlowSpec;
use qtoq::{Agent, QosEvent, QosListener, QosSpec, QosStream, Reservation, Signaling};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use stop::StopSignals;

/// How long any one step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes each flow transfers.
const TRANSFER: usize = 4 * 1024 * 1024;

#[derive(Clone, Copy)]
struct Timeline {
    start: Instant,
}

impl Timeline {
    fn say(&self, who: &str, what: impl Display) {
        let ms = self.start.elapsed().as_secs_f64() * 1e3;
        println!("[{ms:>9.3} ms] {who:<6} | {what}");
    }
}

fn describe(flowspec: &FlowSpec) -> String {
    match flowspec {
        FlowSpec::ControlledLoad(t) => format!(
            "controlled-load r={} B/s b={} B",
            t.rate as u64, t.bucket as u64
        ),
        FlowSpec::Guaranteed { tspec, rspec } => format!(
            "guaranteed R={} B/s b={} B S={} us",
            rspec.rate as u64, tspec.bucket as u64, rspec.slack
        ),
    }
}

fn event_text(event: &QosEvent) -> String {
    match event {
        QosEvent::PathReceived { sender, tspec } => format!(
            "event PathReceived from {sender}: sender offers r={} B/s",
            tspec.rate as u64
        ),
        QosEvent::ResvReceived { flowspec, style } => {
            format!("event ResvReceived ({style:?}): {}", describe(flowspec))
        }
        QosEvent::Established { flowspec } => {
            format!("event Established: {}", describe(flowspec))
        }
        QosEvent::Confirmed { flowspec } => format!("event Confirmed: {}", describe(flowspec)),
        QosEvent::TornDown { reason } => format!("event TornDown: {reason}"),
        QosEvent::Expired { reason } => format!("event Expired: {reason}"),
        // RSVP errors by their RFC 2205 names.
        QosEvent::PathError { error, node } => format!("event PathErr from {node}: {error}"),
        QosEvent::ResvError { error, node } => format!("event ResvErr from {node}: {error}"),
        QosEvent::AdmissionDenied { error, reason } => {
            format!("event AdmissionDenied: {reason} ({error})")
        }
        other => format!("event {other:?}"),
    }
}

/// Prints a connection's events until the stream ends; returns them.
fn watch(
    timeline: Timeline,
    who: &'static str,
    stream: &QosStream,
) -> tokio::task::JoinHandle<Vec<QosEvent>> {
    let mut events = stream.events();
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(event) = events.next().await {
            timeline.say(who, event_text(&event));
            seen.push(event);
        }
        seen
    })
}

async fn step<T, E: Display>(
    what: &str,
    future: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: timed out")),
    }
}

async fn wait_established(what: &str, stream: &QosStream) -> Result<FlowSpec, String> {
    let mut events = stream.events();
    step(what, async {
        while let Some(event) = events.next().await {
            if let QosEvent::Established { flowspec } = event {
                return Ok(flowspec);
            }
        }
        Err("event stream ended")
    })
    .await
}

async fn wait_torn_down(what: &str, stream: &QosStream) -> Result<(), String> {
    let mut events = stream.events();
    step(what, async {
        while let Some(event) = events.next().await {
            if matches!(event, QosEvent::TornDown { .. }) {
                return Ok(());
            }
        }
        Err("event stream ended")
    })
    .await
}

/// Sends `TRANSFER` bytes from `from` to `to` and checks they all arrived.
async fn transfer(
    timeline: Timeline,
    from: &mut (impl AsyncWriteExt + Unpin),
    to: &mut (impl AsyncReadExt + Unpin),
) -> Result<(), String> {
    let started = Instant::now();
    let chunk = vec![0x5a_u8; 64 * 1024];
    let send = async {
        let mut left = TRANSFER;
        while left > 0 {
            let n = left.min(chunk.len());
            from.write_all(&chunk[..n]).await?;
            left -= n;
        }
        from.flush().await
    };
    let receive = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < TRANSFER {
            let n = to.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            }
            got += n;
        }
        Ok(got)
    };
    let ((), received) = step("transfer", async { tokio::try_join!(send, receive) }).await?;
    let secs = started.elapsed().as_secs_f64();
    timeline.say(
        "data",
        format!(
            "{received} bytes server -> client in {:.1} ms ({:.0} MB/s)",
            secs * 1e3,
            received as f64 / secs / 1e6
        ),
    );
    Ok(())
}

async fn unsignaled_flow(t: Timeline) -> Result<(), String> {
    println!("\n== flow 1: qtoq_accept for a rule marked with no signaling ==");
    let spec = QosSpec::controlled_load(2_000_000, 128 * 1024);
    let listener = step(
        "bind",
        QosListener::builder()
            .signaling(Signaling::None)
            .spec(spec)
            .bind("127.0.0.1:0"),
    )
    .await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    t.say("server", format!("listening on {addr} (signaling: none)"));

    // As IBM i's API says: a client has nothing to signal for such a rule; asking is refused.
    match QosStream::builder()
        .signaling(Signaling::None)
        .connect(addr)
        .await
    {
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => t.say(
            "client",
            format!("qtoq_connect with no signaling refused: {e}"),
        ),
        other => {
            return Err(format!(
                "client with no signaling was not refused: {other:?}"
            ))
        }
    }
    t.say("client", "connecting with a plain TcpStream");
    let (client, accepted) = tokio::join!(
        step("connect", TcpStream::connect(addr)),
        step("accept", listener.accept())
    );
    let mut client = client?;
    let (mut server, peer) = accepted?;
    let server_events = watch(t, "server", &server);
    match server.reservation() {
        Reservation::Established { flowspec } => t.say(
            "server",
            format!(
                "accepted {peer}: admitted, rule loaded before accept returned ({}), session {:?}",
                describe(&flowspec),
                server.session_id()
            ),
        ),
        other => return Err(format!("rule not in force after accept: {other:?}")),
    }
    transfer(t, &mut server, &mut client).await?;
    t.say(
        "server",
        "qtoq_close: unload the rule, delete the session, close",
    );
    step("close", server.close()).await?;
    let events = step("server events", server_events).await?;
    if !events
        .iter()
        .any(|e| matches!(e, QosEvent::Established { .. }))
    {
        return Err(format!("server never reported Established: {events:?}"));
    }
    let mut rest = Vec::new();
    step("client sees the close", client.read_to_end(&mut rest)).await?;
    t.say("client", "connection closed by the server");
    Ok(())
}

async fn rsvp_flow(t: Timeline) -> Result<(), String> {
    println!("\n== flow 2: qtoq_accept / qtoq_connect with RSVP signaling ==");
    let spec = QosSpec::controlled_load(1_000_000, 64 * 1024);
    let listener = step(
        "bind",
        QosListener::builder().spec(spec).bind("127.0.0.1:0"),
    )
    .await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    t.say("server", format!("listening on {addr} (signaling: rsvp)"));
    t.say(
        "client",
        format!(
            "qtoq_connect to {addr} asking for {}",
            describe(&spec.flowspec())
        ),
    );
    let (client, accepted) = tokio::join!(
        step("connect", QosStream::connect(addr, spec)),
        step("accept", listener.accept())
    );
    let mut client = client?;
    let (mut server, peer) = accepted?;
    t.say(
        "server",
        format!(
            "accepted {peer}, session {:?}: PATH sent, waiting for RESV",
            server.session_id()
        ),
    );
    t.say(
        "client",
        format!(
            "connected from {}, session {:?}: primed for PATH",
            client.local_addr().map_err(|e| e.to_string())?,
            client.session_id()
        ),
    );
    let server_events = watch(t, "server", &server);
    let client_events = watch(t, "client", &client);
    let (s, c) = tokio::join!(
        wait_established("server Established", &server),
        wait_established("client Established", &client)
    );
    s?;
    let reserved = c?;
    t.say(
        "client",
        format!(
            "reservation in force end to end: {} B/s",
            reserved.reserved_rate() as u64
        ),
    );
    transfer(t, &mut server, &mut client).await?;
    t.say("client", "qtoq_close: ResvTear, delete the session, close");
    let agent = client.agent().clone();
    step("client close", client.close()).await?;
    wait_torn_down("server TornDown", &server).await?;
    t.say(
        "server",
        "qtoq_close: PathTear, unload the rule, delete the session, close",
    );
    step("server close", server.close()).await?;
    let server_seen = step("server events", server_events).await?;
    let client_seen = step("client events", client_events).await?;
    let has = |events: &[QosEvent], f: fn(&QosEvent) -> bool| events.iter().any(f);
    if !has(&server_seen, |e| matches!(e, QosEvent::ResvReceived { .. }))
        || !has(&client_seen, |e| matches!(e, QosEvent::PathReceived { .. }))
        || !has(&client_seen, |e| matches!(e, QosEvent::Confirmed { .. }))
    {
        return Err(format!(
            "missing signaling events: server {server_seen:?}, client {client_seen:?}"
        ));
    }
    let sessions = step("agent session count", agent.session_count()).await?;
    t.say("agent", format!("sessions left after teardown: {sessions}"));
    if sessions != 0 {
        return Err(format!("{sessions} sessions left behind"));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let t = Timeline {
        start: Instant::now(),
    };
    let setup = StopSignals::install().and_then(|signals| {
        // The default agent every listener and stream below uses, held so that a signal can
        // shut it down.
        Ok((signals, Agent::default_agent()?))
    });
    let (mut signals, agent) = match setup {
        Ok(setup) => setup,
        Err(e) => {
            eprintln!("\ndemo FAILED to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "qtoq demo: server and client in one process over loopback; agent: {}",
        which_agent::describe(&agent)
    );
    tokio::select! {
        code = both_flows(t) => code,
        signal = signals.recv() => {
            // The flow in progress is dropped here: its streams and listener release their
            // sessions; the shutdown tears down what is left and unloads every rule.
            if let Err(e) = agent.shutdown().await {
                eprintln!("\ndemo stopped by {signal}; agent shutdown failed: {e}");
                return ExitCode::FAILURE;
            }
            println!("\ndemo stopped by {signal}: sessions torn down, rules unloaded");
            ExitCode::from(signal.shell_status())
        }
    }
}

async fn both_flows(t: Timeline) -> ExitCode {
    for (name, result) in [
        ("no-signaling flow", unsignaled_flow(t).await),
        ("rsvp flow", rsvp_flow(t).await),
    ] {
        if let Err(e) = result {
            eprintln!("\ndemo FAILED in the {name}: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("\ndemo OK: every step happened");
    ExitCode::SUCCESS
}
