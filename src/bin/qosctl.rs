//! qosctl: looks at what qosd, the host's QoS daemon, holds and does.
//!
//! ```text
//! qosctl [--socket PATH] sessions [--json]     every session: addresses, state, rate, owner
//! qosctl [--socket PATH] watch [--json]        live events of every session, until Ctrl-C
//! qosctl [--socket PATH] stats [--json]        the agent's counters and interface budgets
//! qosctl policy check FILE                     parse a policy file here (no qosd needed):
//!                                              its rules, interfaces, pools, integrity keys
//! qosctl [--socket PATH] policy reload         qosd reloads its --policy file
//! qosctl decode HEX | --file FILE              pretty-print one RSVP message
//! ```
//!
//! The socket is `--socket`, else `$QTOQ_SOCKET`, else `/run/qtoq/qosd.sock`. Exit status:
//! 0 done, 1 the request failed (a bad policy file, a bad message, qosd's error), 2 qosd
//! cannot be reached (not running, or not answering).

use std::fmt::{self, Display};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use qtoq::agent::protocol::{socket_path, Client, Reply, Request, SessionRow, DEFAULT_SOCKET};
use qtoq::agent::AgentStats;
use qtoq::engine::Event;
use qtoq::policy::Policy;
use qtoq::wire::dump;
use qtoq::wire::intserv::FlowSpec;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Look at what qosd, the host's QoS daemon, holds and does"
)]
struct Cli {
    /// qosd's socket (default: $QTOQ_SOCKET, else /run/qtoq/qosd.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every session qosd holds: addresses, role, state, reservation, owning process, age.
    Sessions {
        /// One JSON array of session objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every event of every session as it happens, one per line, until interrupted.
    Watch {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// The agent's counters: sessions, rules, enforce queue, datagrams, errors, budgets.
    Stats {
        /// The counters as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check a policy file, or have qosd reload its own.
    Policy {
        #[command(subcommand)]
        action: PolicyCommand,
    },
    /// Decode and pretty-print one RSVP message (an IP header of protocol 46 in front of it
    /// is skipped).
    Decode {
        /// The message as hex (spaces, colons allowed); read from stdin when neither this
        /// nor --file is given.
        hex: Option<String>,
        /// Read the message's raw bytes from this file instead.
        #[arg(long, conflicts_with = "hex")]
        file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Parse a policy file here and summarize its rules, interfaces, pools and integrity
    /// keys (never their secrets; qosd is not asked).
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
    /// Have qosd reload the policy file it was started with (as SIGHUP does).
    Reload,
}

/// Why qosctl stops early, and with which status.
enum Failure {
    /// The request failed: status 1.
    Failed(String),
    /// qosd cannot be reached: status 2.
    Unreachable(String),
    /// The reader of our output went away (`qosctl watch | head`): status 0, nothing said.
    Closed,
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::BrokenPipe {
            Failure::Closed
        } else {
            Failure::Failed(error.to_string())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let socket = cli.socket.clone().unwrap_or_else(socket_path);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("qosctl: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, &socket)) {
        Ok(()) | Err(Failure::Closed) => ExitCode::SUCCESS,
        Err(Failure::Failed(message)) => {
            eprintln!("qosctl: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Unreachable(message)) => {
            eprintln!("qosctl: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command, socket: &Path) -> Result<(), Failure> {
    match command {
        Command::Sessions { json } => sessions(socket, json).await,
        Command::Watch { json } => watch(socket, json).await,
        Command::Stats { json } => stats(socket, json).await,
        Command::Policy {
            action: PolicyCommand::Check { file },
        } => check_policy(&file),
        Command::Policy {
            action: PolicyCommand::Reload,
        } => reload_policy(socket).await,
        Command::Decode { hex, file } => decode(hex, file),
    }
}

/// Writes `text` to stdout (a closed pipe ends qosctl quietly).
fn emit(text: impl Display) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, Failure> {
    serde_json::to_string(value).map_err(|e| Failure::Failed(format!("cannot write JSON: {e}")))
}

/// Connects to qosd; when it cannot, one line saying so, where, and how to start it.
async fn connect(socket: &Path) -> Result<Client, Failure> {
    Client::connect(socket)
        .await
        .map_err(|e| Failure::Unreachable(unreachable(socket, &e)))
}

fn unreachable(socket: &Path, error: &io::Error) -> String {
    let start = if socket == Path::new(DEFAULT_SOCKET) {
        "qosd --policy /etc/qtoq/policy.toml".to_owned()
    } else {
        format!(
            "qosd --socket {} --policy /etc/qtoq/policy.toml",
            socket.display()
        )
    };
    let hint = format!("set QTOQ_SOCKET or --socket, start it with: {start}");
    let path = socket.display();
    match error.kind() {
        io::ErrorKind::NotFound => {
            format!("qosd is not running (no socket at {path}; {hint})")
        }
        io::ErrorKind::ConnectionRefused if !error.to_string().contains("protocol version") => {
            format!("qosd is not running (nothing listens at {path}; {hint})")
        }
        io::ErrorKind::PermissionDenied => format!(
            "cannot reach qosd at {path}: permission denied (qosd's --mode lets its owner and group in: run qosctl as one of them)"
        ),
        io::ErrorKind::TimedOut => {
            format!("qosd at {path} does not answer ({error}); is it stuck?")
        }
        _ => format!("cannot reach qosd at {path}: {error}"),
    }
}

/// qosd's answer to `request`; an error answer fails the command.
async fn ask(client: &mut Client, request: impl FnOnce(u64) -> Request) -> Result<Reply, Failure> {
    match client.request(request).await {
        Ok(Reply::Error { message, .. }) => Err(Failure::Failed(format!("qosd: {message}"))),
        Ok(reply) => Ok(reply),
        Err(e) => Err(Failure::Unreachable(format!("qosd stopped answering: {e}"))),
    }
}

fn unexpected(reply: &Reply) -> Failure {
    Failure::Failed(format!("unexpected answer from qosd: {reply:?}"))
}

async fn sessions(socket: &Path, json: bool) -> Result<(), Failure> {
    let mut client = connect(socket).await?;
    let rows = match ask(&mut client, |tag| Request::Sessions { tag }).await? {
        Reply::Sessions { sessions, .. } => sessions,
        other => return Err(unexpected(&other)),
    };
    if json {
        return emit(to_json(&rows)?);
    }
    if rows.is_empty() {
        return emit("no sessions");
    }
    emit(session_table(&rows).trim_end())
}

/// The sessions as a table with a header, columns aligned.
fn session_table(rows: &[SessionRow]) -> String {
    let dash = || "-".to_owned();
    let header = [
        "SESSION", "LOCAL", "REMOTE", "ROLE", "STATE", "SERVICE", "RATE", "PID", "UID", "PROGRAM",
        "AGE",
    ]
    .map(str::to_owned);
    let mut lines = vec![header.to_vec()];
    for row in rows {
        lines.push(vec![
            row.session.to_string(),
            row.local.to_string(),
            row.remote.to_string(),
            row.role.clone(),
            row.state.clone(),
            row.service.clone().unwrap_or_else(dash),
            row.rate.map_or_else(dash, rate_text),
            row.pid.map_or_else(dash, |pid| pid.to_string()),
            row.uid.map_or_else(dash, |uid| uid.to_string()),
            row.program.clone().unwrap_or_else(dash),
            age_text(row.age),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            lines
                .iter()
                .map(|line| line[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut table = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        table.push_str(cells.join("  ").trim_end());
        table.push('\n');
    }
    table
}

/// A rate in bytes/s as bits per second with a unit: `8 Mbit/s`.
fn rate_text(bytes_per_s: f64) -> String {
    let bits = bytes_per_s * 8.0;
    let (value, unit) = [(1e9, "Gbit/s"), (1e6, "Mbit/s"), (1e3, "kbit/s")]
        .into_iter()
        .find(|(scale, _)| bits >= *scale)
        .map_or((bits, "bit/s"), |(scale, unit)| (bits / scale, unit));
    let number = format!("{value:.2}");
    let number = number.trim_end_matches('0').trim_end_matches('.');
    format!("{number} {unit}")
}

/// A session's age: `850ms`, `42s`, `3m04s`, `2h05m`, `3d04h`.
fn age_text(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0 => format!("{}ms", age.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

async fn watch(socket: &Path, json: bool) -> Result<(), Failure> {
    let mut client = connect(socket).await?;
    match ask(&mut client, |tag| Request::Watch { tag }).await? {
        Reply::Watching { .. } => {}
        other => return Err(unexpected(&other)),
    }
    if !json {
        emit(format_args!(
            "watching qosd at {} (Ctrl-C to stop)",
            socket.display()
        ))?;
    }
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let reply = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            reply = client.next() => reply,
        };
        let (session, pid, event) = match reply {
            Ok(Some(Reply::Watched {
                session,
                pid,
                event,
            })) => (session, pid, event),
            Ok(Some(_)) => continue,
            Ok(None) => return Err(Failure::Unreachable("qosd closed the connection".into())),
            Err(e) => return Err(Failure::Unreachable(format!("qosd stopped answering: {e}"))),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if json {
            let line = serde_json::json!({
                "time_ms": u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
                "session": session,
                "pid": pid,
                "event": event,
            });
            emit(line)?;
        } else {
            let pid = pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string());
            emit(format_args!(
                "{}  session {session:<6} pid {pid:<7} {}",
                utc_time(now),
                event_text(&event)
            ))?;
        }
    }
}

/// `HH:MM:SS.mmmZ`, UTC.
fn utc_time(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        since_epoch.subsec_millis()
    )
}

fn flowspec_text(flowspec: &FlowSpec) -> String {
    match flowspec {
        FlowSpec::ControlledLoad(_) => {
            format!(
                "controlled-load {}",
                rate_text(f64::from(flowspec.reserved_rate()))
            )
        }
        FlowSpec::Guaranteed { .. } => {
            format!(
                "guaranteed {}",
                rate_text(f64::from(flowspec.reserved_rate()))
            )
        }
    }
}

/// An event, briefly.
fn event_text(event: &Event) -> String {
    match event {
        Event::PathReceived { sender, tspec } => format!(
            "PATH from {sender}: sender sends {}",
            rate_text(f64::from(tspec.rate))
        ),
        Event::ResvReceived { flowspec, .. } => {
            format!("RESV received: {}", flowspec_text(flowspec))
        }
        Event::Established { flowspec } => format!("established: {}", flowspec_text(flowspec)),
        Event::Confirmed { flowspec } => format!("confirmed: {}", flowspec_text(flowspec)),
        Event::PathError { error, node } => format!("PathErr from {node}: {error}"),
        Event::ResvError { error, node } => format!("ResvErr from {node}: {error}"),
        Event::AdmissionDenied { error, reason } => {
            format!("admission denied: {reason} ({error})")
        }
        Event::TornDown { reason } => format!("torn down: {reason}"),
        Event::Expired { reason } => format!("expired: {reason}"),
        other => format!("{other:?}"),
    }
}

async fn stats(socket: &Path, json: bool) -> Result<(), Failure> {
    let mut client = connect(socket).await?;
    let stats = match ask(&mut client, |tag| Request::Stats { tag }).await? {
        Reply::Stats { stats, .. } => stats,
        other => return Err(unexpected(&other)),
    };
    if json {
        return emit(to_json(&stats)?);
    }
    emit(StatsText(&stats))
}

/// The counters, readable.
struct StatsText<'a>(&'a AgentStats);

impl Display for StatsText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let e = &s.engine;
        writeln!(
            f,
            "sessions:        {} opened by applications ({} RSVP sessions with state)",
            s.owned_sessions, s.engine_sessions
        )?;
        writeln!(f, "rules in force:  {}", s.rules_in_force)?;
        writeln!(f, "enforce queue:   {}", s.enforce_queue)?;
        writeln!(f, "admitted:        {} reservations", s.policy_admitted)?;
        writeln!(f, "integrity keys:  {}", s.integrity_keys)?;
        writeln!(
            f,
            "datagrams:       {} in, {} out, {} delivered on this host",
            e.received, e.transmitted, e.local_delivered
        )?;
        writeln!(
            f,
            "errors:          {} malformed, {} rejected, {} send errors, {} bad IP headers, \
             {} error messages sent, {} received, {} states expired",
            e.malformed,
            e.rejected,
            s.send_errors,
            s.transport_malformed,
            e.errors_sent,
            e.errors_received,
            e.expired
        )?;
        if s.interfaces.is_empty() {
            write!(f, "interfaces:      no budgets")
        } else {
            write!(f, "interfaces:")?;
            for budget in &s.interfaces {
                write!(f, "\n  {budget}")?;
            }
            Ok(())
        }
    }
}

fn check_policy(file: &Path) -> Result<(), Failure> {
    let policy = Policy::load(file).map_err(|e| Failure::Failed(e.to_string()))?;
    let rules = policy.rules();
    let keys = policy.integrity().keys();
    emit(format_args!(
        "{}: OK, {} rules, {} interfaces, {} pools, {} integrity keys",
        file.display(),
        rules.len(),
        policy.interfaces().len(),
        policy.pools().len(),
        keys.len()
    ))?;
    for rule in rules {
        let mut line = format!(
            "  rule {} (priority {}): {:?}",
            rule.name, rule.priority, rule.service
        );
        if let Some(rate) = rule.limits.rate {
            line.push_str(&format!(", rate up to {}", rate_text(rate)));
        }
        if !rule.signaling {
            line.push_str(", no signaling");
        }
        if let Some(max) = rule.max_flows {
            line.push_str(&format!(", at most {max} flows"));
        }
        if let Some(total) = rule.total_rate {
            line.push_str(&format!(", {} in all", rate_text(total)));
        }
        if let Some(pool) = &rule.pool {
            line.push_str(&format!(", pool {pool}"));
        }
        if rule.schedule.is_some() {
            line.push_str(", on a schedule");
        }
        emit(line)?;
    }
    // Never the secret: which neighbors are signed with, and with which key.
    for key in keys {
        emit(format_args!(
            "  integrity key {} for {}: {}",
            key.key_id, key.peer, key.algorithm
        ))?;
    }
    Ok(())
}

async fn reload_policy(socket: &Path) -> Result<(), Failure> {
    let mut client = connect(socket).await?;
    match ask(&mut client, |tag| Request::ReloadPolicy { tag }).await? {
        Reply::PolicyReloaded { result: Ok(0), .. } => {
            emit("policy reloaded: every reservation still fits")
        }
        Reply::PolicyReloaded {
            result: Ok(torn_down),
            ..
        } => emit(format_args!(
            "policy reloaded: {torn_down} reservations no longer fit and were torn down"
        )),
        Reply::PolicyReloaded { result: Err(e), .. } => Err(Failure::Failed(format!(
            "qosd did not reload its policy: {e}"
        ))),
        other => Err(unexpected(&other)),
    }
}

fn decode(hex: Option<String>, file: Option<PathBuf>) -> Result<(), Failure> {
    let bytes = match (hex, file) {
        (_, Some(file)) => std::fs::read(&file)
            .map_err(|e| Failure::Failed(format!("cannot read {}: {e}", file.display())))?,
        (Some(hex), None) => dump::parse_hex(&hex).map_err(|e| Failure::Failed(e.to_string()))?,
        (None, None) => {
            let mut text = String::new();
            io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::Failed(format!("cannot read stdin: {e}")))?;
            dump::parse_hex(&text).map_err(|e| Failure::Failed(e.to_string()))?
        }
    };
    match dump::describe(&bytes) {
        Ok(text) => emit(text.trim_end()),
        Err(text) => Err(Failure::Failed(format!(
            "not a valid RSVP message\n{}",
            text.trim_end()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_ages_read_well() {
        assert_eq!(rate_text(1_000_000.0), "8 Mbit/s");
        assert_eq!(rate_text(125_000.0), "1 Mbit/s");
        assert_eq!(rate_text(2_500.5), "20 kbit/s");
        assert_eq!(rate_text(100.0), "800 bit/s");
        assert_eq!(age_text(Duration::from_millis(850)), "850ms");
        assert_eq!(age_text(Duration::from_secs(184)), "3m04s");
        assert_eq!(age_text(Duration::from_secs(7_500)), "2h05m");
    }

    #[test]
    fn the_table_is_aligned_under_its_header() {
        // As qosd sends it.
        let row: SessionRow = serde_json::from_value(serde_json::json!({
            "session": 7, "local": "127.0.0.1:5001", "remote": "127.0.0.1:40000",
            "role": "sender", "state": "established", "service": "controlled_load",
            "rate": 1e6, "pid": 4242, "uid": 0, "program": "server", "age_ms": 3000,
        }))
        .expect("a session row");
        let table = session_table(&[row]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        let column = |line: &str, word: &str| line.find(word).expect(word);
        assert_eq!(column(lines[0], "STATE"), column(lines[1], "established"));
        assert_eq!(column(lines[0], "PID"), column(lines[1], "4242"));
        assert!(lines[1].contains("8 Mbit/s"), "{table}");
    }
}
