//! qosd as it runs on a host: the real `qosd` binary as a process of its own, the real
//! `server` and `client` examples as the applications (each a process, reaching qosd through
//! `QTOQ_SOCKET` as any qtoq application does), and `qosctl` to look at what qosd holds.
//!
//! Each test gets its own network namespace (loopback only is used: every process of a
//! test talks over 127.0.0.1 there, so RSVP's port 1698 and the servers' ports never
//! collide with another test or the host) and its own scratch directory for qosd's socket,
//! state directory and the processes' logs (never `/run/qtoq`). Every process is killed and
//! the namespaces removed when a test ends, failed or not. Waits are bounded and say what
//! they waited for.
//!
//! The examples are built by the test itself, as in `example_sigterm.rs` (`cargo build
//! --features daemon --example server --example client`): a no-op after `cargo test
//! --all-features`. Needs root (network namespaces): without it the namespace tests say why
//! and return, unless QTOQ_REQUIRE_PRIVILEGED=1, when they fail. The qosctl tests that need
//! no qosd run anywhere.
#![cfg(feature = "daemon")]

mod netns_support;
mod process_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use netns_support::Namespaces;
use process_support::{build_examples, poll, poll_for, signal, Process, Scratch};
use serde_json::Value;

const QOSD: &str = env!("CARGO_BIN_EXE_qosd");
const QOSCTL: &str = env!("CARGO_BIN_EXE_qosctl");
/// What the client examples reserve (`--rate`), bytes/s.
const RATE: f64 = 1_000_000.0;

/// The server and client examples, built once per test run with the `daemon` feature.
fn examples() -> &'static [PathBuf] {
    static BUILT: OnceLock<Vec<PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| build_examples("daemon", &["server", "client"]))
}

/// SIGKILL, and its exit reaped.
fn kill_9(process: &mut Process) {
    signal(process.pid(), libc::SIGKILL);
    process.wait();
}

/// A host for one test: a network namespace where qosd and the applications run (over its
/// loopback), a scratch directory, and qosd. Drop order: the applications, qosd, the
/// namespaces, the directory.
struct Host {
    apps: Vec<Process>,
    qosd: Option<Process>,
    ns: Namespaces,
    dir: Scratch,
    /// `--policy` of every qosd this host starts.
    policy: Option<PathBuf>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.apps.clear();
        self.qosd = None;
    }
}

impl Host {
    /// A host with qosd running (with `policy` as its policy file, if given); `None` when
    /// namespaces cannot be made and privileged tests are not required.
    fn start(policy: Option<&str>) -> Option<Host> {
        let ns = Namespaces::create()?;
        let dir = Scratch::new("qosd");
        let policy = policy.map(|text| {
            let path = dir.0.join("policy.toml");
            fs::write(&path, text).expect("write the policy");
            path
        });
        let mut host = Host {
            apps: Vec::new(),
            qosd: None,
            ns,
            dir,
            policy,
        };
        let qosd = host.spawn_qosd("qosd");
        host.qosd = Some(qosd);
        host.wait_for_qosd();
        Some(host)
    }

    fn socket(&self) -> PathBuf {
        self.dir.0.join("qosd.sock")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.0.join("state")
    }

    /// `ip netns exec <ns> <program> <args>` with `QTOQ_SOCKET` set, stdout and stderr to
    /// `<dir>/<name>.log`. `ip netns exec` execs the program: the child's pid is its.
    fn spawn(&self, name: &str, program: &Path, args: &[&str]) -> Process {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.ns.server])
            .arg(program)
            .args(args)
            .env("QTOQ_SOCKET", self.socket())
            .env("RUST_LOG", "info");
        Process::start(name, self.dir.0.join(format!("{name}.log")), command)
    }

    /// A qosd on this host's socket and state directory (UDP transport, socket enforcer).
    fn spawn_qosd(&self, name: &str) -> Process {
        let socket = self.socket();
        let state = self.state_dir();
        let mut args = vec![
            "--socket".to_owned(),
            socket.display().to_string(),
            "--state-dir".to_owned(),
            state.display().to_string(),
            "--transport".to_owned(),
            "udp".to_owned(),
            "--enforcer".to_owned(),
            "socket".to_owned(),
        ];
        if let Some(policy) = &self.policy {
            args.extend(["--policy".to_owned(), policy.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(name, Path::new(QOSD), &args)
    }

    fn wait_for_qosd(&self) {
        poll(
            "qosd answering `qosctl stats`",
            || self.qosctl(&["stats"]).status.success().then_some(()),
            || self.qosd_log(),
        );
    }

    fn qosd(&mut self) -> &mut Process {
        self.qosd.as_mut().expect("qosd was started")
    }

    fn qosd_log(&self) -> String {
        self.qosd.as_ref().map(Process::log).unwrap_or_default()
    }

    /// A server example on 127.0.0.1:`port`, with the default agent (qosd), once listening.
    fn server(&mut self, name: &str, port: u16) -> usize {
        let listen = format!("127.0.0.1:{port}");
        let server = self.spawn(name, &examples()[0], &["--listen", &listen]);
        server.wait_for("listening on");
        assert!(
            server.log().contains("agent qosd"),
            "{name} does not use qosd:\n{}",
            server.log()
        );
        self.apps.push(server);
        self.apps.len() - 1
    }

    /// A client example reserving `RATE` from 127.0.0.1:`port` for a minute, once connected.
    fn client(&mut self, name: &str, port: u16) -> usize {
        let connect = format!("127.0.0.1:{port}");
        let rate = format!("{}", RATE as u64);
        let args = ["--connect", &connect, "--rate", &rate, "--seconds", "60"];
        let client = self.spawn(name, &examples()[1], &args);
        client.wait_for("connected ");
        self.apps.push(client);
        self.apps.len() - 1
    }

    fn app(&self, index: usize) -> &Process {
        &self.apps[index]
    }

    /// `qosctl --socket <this host's> <args>`, run outside the namespace (the socket is a
    /// file: qosctl reaches qosd from anywhere on the host).
    fn qosctl(&self, args: &[&str]) -> Output {
        run_qosctl(Some(&self.socket()), args)
    }

    /// `qosctl sessions --json`, parsed.
    fn sessions(&self) -> Vec<Value> {
        let out = self.qosctl(&["sessions", "--json"]);
        assert!(
            out.status.success(),
            "qosctl sessions --json: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        match serde_json::from_slice(&out.stdout) {
            Ok(Value::Array(rows)) => rows,
            other => panic!(
                "qosctl sessions --json printed no JSON array ({other:?}):\n{}",
                String::from_utf8_lossy(&out.stdout)
            ),
        }
    }

    /// `qosctl stats --json`, parsed.
    fn stats(&self) -> Value {
        let out = self.qosctl(&["stats", "--json"]);
        assert!(
            out.status.success(),
            "qosctl stats --json: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("qosctl stats --json prints JSON")
    }

    /// The sessions of process `pid`.
    fn sessions_of(&self, pid: u32) -> Vec<Value> {
        self.sessions()
            .into_iter()
            .filter(|row| row["pid"] == pid)
            .collect()
    }

    /// A server example on port 5001 and a client example of it, once both ends' sessions
    /// are established: their indexes in `apps`.
    fn established_pair(&mut self) -> (usize, usize) {
        let server = self.server("server", 5001);
        let client = self.client("client", 5001);
        self.wait_for_state(server, "established");
        self.wait_for_state(client, "established");
        (server, client)
    }

    /// Waits until process `index` holds a session in `state`; returns its row.
    fn wait_for_state(&self, index: usize, state: &str) -> Value {
        let app = self.app(index);
        poll(
            &format!(
                "session of {} (pid {}) in state {state}",
                app.name,
                app.pid()
            ),
            || {
                self.sessions_of(app.pid())
                    .into_iter()
                    .find(|row| row["state"] == state)
            },
            || self.context(),
        )
    }

    /// Everything worth seeing when a step fails.
    fn context(&self) -> String {
        let mut text = format!(
            "qosctl sessions:\n{}\n",
            String::from_utf8_lossy(&self.qosctl(&["sessions"]).stdout)
        );
        for app in &self.apps {
            text.push_str(&format!(
                "--- {} (pid {}):\n{}\n",
                app.name,
                app.pid(),
                app.log()
            ));
        }
        text.push_str(&format!("--- qosd:\n{}", self.qosd_log()));
        text
    }
}

fn run_qosctl(socket: Option<&Path>, args: &[&str]) -> Output {
    let mut command = Command::new(QOSCTL);
    if let Some(socket) = socket {
        command.arg("--socket").arg(socket);
    }
    command
        .args(args)
        .env_remove("QTOQ_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("run qosctl")
}

/// The client example's own address, from its `connected A -> B` line.
fn client_address(client: &Process) -> String {
    let log = client.log();
    log.lines()
        .find_map(|line| line.strip_prefix("connected ")?.split(' ').next())
        .unwrap_or_else(|| panic!("no `connected` line from {}:\n{log}", client.name))
        .to_owned()
}

/// Point 1: two applications share one budget. A rule admits one reservation on ports
/// 5001-5002; two server processes, each with a client process, through the same qosd:
/// the first reservation is established, the second denied, as both ends of the second
/// connection hear and `qosctl sessions` shows.
#[test]
fn two_applications_share_one_budget() {
    let Some(mut host) = Host::start(Some(
        r#"
[[rule]]
name = "shared"
service = "controlled-load"
rate = "100Mbit"
max_flows = 1
match = { local_port = "5001-5002" }
"#,
    )) else {
        return;
    };
    let first_server = host.server("server-1", 5001);
    let second_server = host.server("server-2", 5002);
    let first_client = host.client("client-1", 5001);
    host.wait_for_state(first_server, "established");
    host.wait_for_state(first_client, "established");

    let second_client = host.client("client-2", 5002);
    host.app(second_client).wait_for("AdmissionDenied");
    host.app(second_server).wait_for("AdmissionDenied");
    assert!(
        host.app(second_server).log().contains("max_flows = 1"),
        "the second server was not refused by the rule's max_flows:\n{}",
        host.context()
    );
    host.wait_for_state(second_server, "denied");
    // The first is untouched, and only it is in force.
    let first = host.sessions_of(host.app(first_server).pid());
    assert_eq!(first.len(), 1, "{}", host.context());
    assert_eq!(first[0]["state"], "established", "{}", host.context());
    let second = host.sessions_of(host.app(second_server).pid());
    assert!(
        second.iter().all(|row| row["state"] != "established"),
        "{}",
        host.context()
    );
    assert_eq!(host.stats()["rules_in_force"], 1, "{}", host.context());
}

/// Point 2: `kill -9` of an application with an established reservation. Within a second
/// qosd has released its sessions (gone from `qosctl sessions`) and unloaded its rule
/// (`rules_in_force` 0), and the peer hears the teardown.
#[test]
fn kill_9_of_an_application_releases_its_sessions_at_once() {
    let Some(mut host) = Host::start(None) else {
        return;
    };
    let (server, client) = host.established_pair();
    assert_eq!(host.stats()["rules_in_force"], 1, "{}", host.context());

    let server_pid = host.app(server).pid();
    kill_9(&mut host.apps[server]);
    let killed = Instant::now();
    poll_for(
        Duration::from_secs(1),
        "release of the killed server's sessions and rule",
        || {
            let gone = host.sessions_of(server_pid).is_empty();
            (gone && host.stats()["rules_in_force"] == 0).then_some(())
        },
        || host.context(),
    );
    eprintln!("released {:?} after the kill", killed.elapsed());
    // The client's end hears the teardown: in its output, and in its session's state.
    host.app(client).wait_for("TornDown");
    poll(
        "the client's session no longer established",
        || {
            host.sessions_of(host.app(client).pid())
                .iter()
                .all(|row| row["state"] != "established")
                .then_some(())
        },
        || host.context(),
    );
}

/// Point 3: `qosctl sessions --json` lists exactly what is reserved: one row for each end
/// of the one connection, with its addresses, role, state, rate and owning process.
#[test]
fn qosctl_sessions_lists_exactly_what_is_reserved() {
    let Some(mut host) = Host::start(None) else {
        return;
    };
    let (server, client) = host.established_pair();
    let client_addr = client_address(host.app(client));
    let rows = host.sessions();
    assert_eq!(rows.len(), 2, "{}", host.context());
    let row = |pid: u32| {
        rows.iter()
            .find(|row| row["pid"] == pid)
            .unwrap_or_else(|| panic!("no session of pid {pid}:\n{}", host.context()))
    };
    let (sender, receiver) = (row(host.app(server).pid()), row(host.app(client).pid()));
    for (row, local, remote, role, program) in [
        (
            sender,
            "127.0.0.1:5001",
            client_addr.as_str(),
            "sender",
            "server",
        ),
        (
            receiver,
            client_addr.as_str(),
            "127.0.0.1:5001",
            "receiver",
            "client",
        ),
    ] {
        assert_eq!(row["local"], local, "{row}");
        assert_eq!(row["remote"], remote, "{row}");
        assert_eq!(row["role"], role, "{row}");
        assert_eq!(row["state"], "established", "{row}");
        assert_eq!(row["service"], "controlled_load", "{row}");
        assert_eq!(row["rate"].as_f64(), Some(RATE), "{row}");
        assert_eq!(row["program"], program, "{row}");
        assert!(row["age_ms"].is_u64(), "{row}");
    }
    // The table says the same, under its header.
    let table = String::from_utf8_lossy(&host.qosctl(&["sessions"]).stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("SESSION") && lines[0].contains("STATE"),
        "{table}"
    );
    for pid in [host.app(server).pid(), host.app(client).pid()] {
        assert!(
            lines[1..].iter().any(|line| line.contains("established")
                && line.contains("8 Mbit/s")
                && line.split_whitespace().any(|word| word == pid.to_string())),
            "no established 8 Mbit/s row of pid {pid}:\n{table}"
        );
    }
}

/// Point 4: SIGTERM of qosd with reservations open: it exits 0, removes its socket file, and
/// the applications' sessions end (their events say the agent went away).
#[test]
fn sigterm_stops_qosd_cleanly_and_the_applications_hear_it() {
    let Some(mut host) = Host::start(None) else {
        return;
    };
    let (server, client) = host.established_pair();
    for app in [server, client] {
        assert!(
            !host.app(app).log().contains("TornDown"),
            "{}",
            host.context()
        );
    }

    signal(host.qosd().pid(), libc::SIGTERM);
    let status = host.qosd().wait();
    assert!(
        status.success(),
        "qosd did not exit 0 on SIGTERM: {status}\n{}",
        host.qosd_log()
    );
    assert!(
        host.qosd_log().contains("SIGTERM: sessions torn down"),
        "{}",
        host.qosd_log()
    );
    assert!(
        !host.socket().exists(),
        "qosd left its socket file {}",
        host.socket().display()
    );
    // qosd tore each session down before it closed the connections: both ends' events
    // say so (and end there, the agent being gone).
    for app in [server, client] {
        host.app(app).wait_for("TornDown");
    }
    let out = host.qosctl(&["stats"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "qosctl after qosd stopped: {out:?}"
    );
}

/// Point 5: a second qosd on the same state directory is refused with a clear message and
/// status 2; the first goes on answering.
#[test]
fn a_second_qosd_on_the_same_state_dir_is_refused() {
    let Some(mut host) = Host::start(None) else {
        return;
    };
    let first_pid = host.qosd().pid();
    let mut second = host.spawn_qosd("qosd-2");
    let status = second.wait();
    let log = second.log();
    assert_eq!(status.code(), Some(2), "second qosd: {status}\n{log}");
    let lock = host.state_dir().join("qosd.lock");
    assert!(
        log.contains(&format!(
            "another qosd (pid {first_pid}) holds {}",
            lock.display()
        )),
        "the refusal does not name the first qosd and its lock:\n{log}"
    );
    assert!(host.socket().exists(), "the first qosd's socket is gone");
    let out = host.qosctl(&["stats"]);
    assert!(
        out.status.success(),
        "the first qosd no longer answers: {out:?}\n{}",
        host.qosd_log()
    );
    assert!(host.qosd().running(), "the first qosd stopped");
}

/// Point 6: qosctl with no qosd says so in one line, where it looked and how to start
/// qosd, and exits 2 — a missing socket and a stale one alike, for every command that needs
/// qosd. Needs no privilege.
#[test]
fn qosctl_without_qosd_says_so_in_one_line() {
    let dir = Scratch::new("qosctl");
    let missing = dir.0.join("missing.sock");
    // A socket file nobody listens behind (a killed qosd's).
    let stale = dir.0.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind a unix socket"));
    for (socket, says) in [(&missing, "no socket at"), (&stale, "nothing listens at")] {
        for args in [
            &["sessions", "--json"][..],
            &["stats"],
            &["watch"],
            &["policy", "reload"],
        ] {
            let out = run_qosctl(Some(socket), args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "qosctl {args:?}: {stderr}");
            assert!(out.stdout.is_empty(), "qosctl {args:?} printed to stdout");
            assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
            let expected = format!("qosctl: qosd is not running ({says} {}", socket.display());
            assert!(stderr.starts_with(&expected), "{stderr}");
            assert!(stderr.contains("start it with: qosd"), "{stderr}");
        }
    }
}

/// `policy check` and `decode` work on this host alone.
#[test]
fn qosctl_checks_policies_and_decodes_without_qosd() {
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policy.toml");
    let out = run_qosctl(None, &["policy", "check", policy]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains(": OK, ") && stdout.contains(" rules") && stdout.contains("rule video"),
        "{stdout}"
    );

    let dir = Scratch::new("qosctl");
    let bad = dir.0.join("bad.toml");
    fs::write(&bad, "[host]\nmax_flows = \"many\"\n").expect("write");
    let out = run_qosctl(None, &["policy", "check", &bad.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:2:13:", bad.display())),
        "no file:line:column in: {stderr}"
    );

    // Integrity keys are counted and listed, their secrets never shown.
    let keyed = dir.0.join("keyed.toml");
    fs::write(
        &keyed,
        "[[integrity]]\npeer = \"10.77.0.2\"\nkey_id = 7\nalgorithm = \"hmac-sha256\"\n\
         secret = \"never-printed\"\n",
    )
    .expect("write");
    let out = run_qosctl(None, &["policy", "check", &keyed.display().to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains(", 1 integrity keys"), "{stdout}");
    assert!(
        stdout.contains("integrity key 7 for 10.77.0.2/32: hmac-sha256"),
        "{stdout}"
    );
    assert!(!stdout.contains("never-printed"), "{stdout}");

    let path = qtoq::wire::Message::path(
        qtoq::wire::Session::new("192.0.2.2:5001".parse().expect("address"), 6),
        qtoq::wire::RsvpHop::new("192.0.2.1".parse().expect("address"), 1),
        qtoq::wire::TimeValues::new(Duration::from_secs(30)),
        qtoq::wire::FilterSpec::new("192.0.2.1:40000".parse().expect("address")),
        qtoq::wire::intserv::TokenBucket::new(125_000.0, 16_000.0),
        None,
    );
    let bytes = path.encode().expect("encode");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let out = run_qosctl(None, &["decode", &hex]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.starts_with(&format!("Path message: {} bytes", bytes.len())),
        "{stdout}"
    );
    let file = dir.0.join("message.bin");
    fs::write(&file, &bytes[..7]).expect("write");
    let out = run_qosctl(None, &["decode", "--file", &file.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("drops this silently"));
}

/// Point 7: qosd restarts under a running application. The server, started while the first
/// qosd ran, sets up its next connection through the new qosd, without a restart of its
/// own (its listener follows the default agent, which finds qosd again).
#[test]
fn an_application_sets_up_through_a_restarted_qosd() {
    let Some(mut host) = Host::start(None) else {
        return;
    };
    let server = host.server("server", 5001);
    let first_client = host.client("client-1", 5001);
    host.wait_for_state(server, "established");
    host.wait_for_state(first_client, "established");

    signal(host.qosd().pid(), libc::SIGTERM);
    let status = host.qosd().wait();
    assert!(status.success(), "qosd on SIGTERM: {status}");
    host.app(server).wait_for("TornDown");

    let qosd = host.spawn_qosd("qosd-restarted");
    host.qosd = Some(qosd);
    host.wait_for_qosd();
    let second_client = host.client("client-2", 5001);
    let row = host.wait_for_state(second_client, "established");
    assert_eq!(row["role"], "receiver");
    // The server's end of the new connection is set up by the new qosd too.
    let address = client_address(host.app(second_client));
    poll(
        "the server's session for the second connection, established",
        || {
            host.sessions_of(host.app(server).pid())
                .into_iter()
                .find(|row| row["remote"] == address.as_str() && row["state"] == "established")
        },
        || host.context(),
    );
    host.app(second_client).wait_for("Established");
    assert!(
        host.apps[server]
            .child
            .try_wait()
            .expect("try_wait")
            .is_none(),
        "the server is not the one that ran before the restart"
    );
}

/// SIGHUP and `qosctl policy reload` reload qosd's policy file: a reservation the new file no
/// longer admits is torn down (its server hears `AdmissionDenied`), and a file with an error
/// is refused whole, naming the position, with the old policy still in force.
#[test]
fn sighup_and_qosctl_reload_the_policy_file() {
    let Some(mut host) = Host::start(Some(
        r#"
[[rule]]
name = "generous"
service = "controlled-load"
rate = "100Mbit"
match = { local_port = 5001 }
"#,
    )) else {
        return;
    };
    let (server, client) = host.established_pair();
    let policy = host.policy.clone().expect("the host's policy file");

    // A broken file: refused whole, qosd says where, the reservation stays.
    fs::write(
        &policy,
        "[[rule]]\nname = \"broken\"\nservice = \"controlled-load\"\nrate = \"fast\"\n",
    )
    .expect("write");
    let out = host.qosctl(&["policy", "reload"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("policy.toml:4:"), "{said}");
    host.wait_for_state(server, "established");

    // A file that admits at most 1000 B/s here: SIGHUP tears the 1,000,000 B/s reservation
    // down.
    fs::write(
        &policy,
        r#"
[[rule]]
name = "stingy"
service = "controlled-load"
rate = 1000
match = { local_port = 5001 }
"#,
    )
    .expect("write");
    let qosd = host.qosd().pid();
    signal(qosd, libc::SIGHUP);
    host.app(server).wait_for("AdmissionDenied");
    assert!(
        host.qosd_log().contains("SIGHUP: policy reloaded"),
        "{}",
        host.context()
    );
    // The receiver hears the policy's refusal; the sender's rule is off.
    host.wait_for_state(client, "denied");
    let rows = host.sessions_of(host.app(server).pid());
    assert!(
        rows.iter().all(|row| row["state"] != "established"),
        "{}",
        host.context()
    );
    assert_eq!(host.stats()["rules_in_force"], 0, "{}", host.context());
    // Reloading again through qosctl: nothing more to tear down.
    let out = host.qosctl(&["policy", "reload"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("every reservation still fits"), "{said}");
}
