//! qosd: the host's QoS server. It owns the host's agent (RSVP transport, policy, enforcer,
//! one admission budget for every local application) and serves it to applications over a
//! Unix socket; qtoq applications find it there by themselves.
//!
//! ```text
//! qosd [--socket /run/qtoq/qosd.sock] [--state-dir /run/qtoq] [--policy FILE]
//!      [--enforcer socket|tc] [--transport udp|raw|auto] [--mode 660] [--group qtoq]
//! ```
//!
//! SIGTERM and SIGINT stop it cleanly (every session torn down, every rule unloaded, the
//! interfaces' previous root qdisc restored, the socket file removed); SIGHUP reloads the
//! policy file. Logs go to stderr, filtered by `RUST_LOG` (default `info`).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use qtoq::agent::protocol::DEFAULT_SOCKET;
use qtoq::agent::Transport;
use qtoq::daemon::Daemon;
use qtoq::enforce::{EnforcerKind, DEFAULT_STATE_DIR};
use qtoq::policy::Policy;
use qtoq::Agent;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "The host's QoS server: RSVP signaling, admission and enforcement for every local qtoq application"
)]
struct Args {
    /// The local API's socket (applications: QTOQ_SOCKET, default the same).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// The state directory: qosd's lock and the tc enforcer's journal of what it changed.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Policy file (TOML); default: the built-in default policy. SIGHUP reloads it.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Enforcement backend: socket options on the applications' sockets, or Linux tc (HTB
    /// on the policy's `[[interface]]`s) with DSCP marking on the sockets.
    #[arg(long, default_value = "socket")]
    enforcer: EnforcerKind,
    /// RSVP transport: UDP encapsulation (port 1698), raw IP protocol 46 (CAP_NET_RAW), or
    /// raw when permitted and UDP otherwise.
    #[arg(long, value_enum, default_value_t = TransportArg::Auto)]
    transport: TransportArg,
    /// The socket file's mode, in octal: who may connect (owner and group by default; give
    /// the applications' users that group, or 666 for everyone).
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    mode: u32,
    /// The group the socket file belongs to (a name or a gid): with `--mode 660`, its members
    /// (and root) may use qosd, nobody else.
    #[arg(long)]
    group: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TransportArg {
    Udp,
    Raw,
    Auto,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("`{text}` is not an octal file mode such as 660"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // The lock first: a second qosd touches nothing, not even the socket file.
    let _lock = match lock_state_dir(&args.state_dir) {
        Ok(lock) => lock,
        Err(message) => {
            eprintln!("qosd: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("qosd: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            eprintln!("qosd: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Takes `<dir>/qosd.lock` for this process's life (an `flock`, so a killed qosd leaves no
/// stale lock behind).
fn lock_state_dir(dir: &Path) -> Result<File, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the state directory {}: {e}", dir.display()))?;
    let path = dir.join("qosd.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(format!(
                "another qosd (pid {}) holds {}: stop it first, or give this one its own --state-dir and --socket",
                holder.trim(),
                path.display()
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(format!("cannot lock {}: {e}", path.display()))
        }
    }
    // Who holds it, for the message above; the lock itself is the flock.
    let _ = std::fs::write(&path, format!("{}\n", std::process::id()));
    let _ = file.as_fd();
    Ok(file)
}

/// The gid of `group`: a number, or a name from `/etc/group`.
fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group")
        .map_err(|e| format!("--group {group}: cannot read /etc/group: {e}"))?;
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse().ok()?;
            Some((name, gid))
        })
        .find_map(|(name, gid)| (name == group).then_some(gid))
        .ok_or_else(|| format!("--group {group}: no such group in /etc/group"))
}

async fn run(args: Args) -> Result<(), String> {
    let mut terminate = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP: {e}"))?;
    let policy = match &args.policy {
        Some(path) => Policy::load(path).map_err(|e| e.to_string())?,
        None => Policy::default(),
    };
    let enforcer = args
        .enforcer
        .build_with_state_dir(policy.interfaces(), &args.state_dir)
        .await
        .map_err(|e| format!("--enforcer: {e}"))?;
    let transport = match args.transport {
        TransportArg::Udp => Transport::udp(),
        TransportArg::Raw => Transport::Raw,
        TransportArg::Auto => Transport::raw_if_permitted(),
    };
    let agent = Agent::builder()
        .transport(transport)
        .policy(policy)
        .enforcer(enforcer)
        .build()
        .map_err(|e| format!("cannot start the agent: {e}"))?;
    let daemon = Daemon::bind(agent.clone(), &args.socket, args.mode, args.policy.clone())
        .await
        .map_err(|e| format!("cannot listen at {}: {e}", args.socket.display()))?;
    if let Some(group) = &args.group {
        let gid = group_id(group)?;
        std::os::unix::fs::chown(&args.socket, None, Some(gid)).map_err(|e| {
            format!(
                "--group {group}: cannot give {} to it: {e}",
                args.socket.display()
            )
        })?;
    }
    info!(socket = %args.socket.display(), transport = agent.transport(),
        bound = ?agent.bound_addrs(), enforcer = ?args.enforcer, "qosd ready");
    let stopped_by = loop {
        tokio::select! {
            served = daemon.serve() => {
                break Err(format!("the local api failed: {}", served.err().map_or_else(String::new, |e| e.to_string())));
            }
            _ = terminate.recv() => break Ok("SIGTERM"),
            _ = interrupt.recv() => break Ok("SIGINT"),
            _ = hangup.recv() => match daemon.reload_policy().await {
                Ok(torn_down) => info!(torn_down, "SIGHUP: policy reloaded"),
                Err(e) => warn!(error = %e, "SIGHUP: policy not reloaded"),
            },
        }
    };
    // Whatever stopped it: no new clients, every session torn down, every rule unloaded,
    // the interfaces restored.
    daemon.close();
    let shutdown = agent.shutdown().await;
    match (&stopped_by, shutdown) {
        (Ok(signal), Ok(())) => {
            info!("{signal}: sessions torn down, rules unloaded, interfaces restored; bye");
        }
        (_, Err(e)) => warn!(error = %e, "the agent's shutdown failed"),
        (Err(_), Ok(())) => {}
    }
    stopped_by.map(|_| ())
}
