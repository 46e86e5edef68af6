//! Issue 8, point 4: SIGTERM (what `kill`, systemd and container runtimes send) stops the
//! server example as cleanly as Ctrl-C. The README's namespace scenario with the real
//! example binaries: the `server` with `examples/policy.toml` and the tc enforcer in a server
//! network namespace, the `client` reserving through it from a client namespace; once the
//! reservation's HTB class is on `veth-qtoq`, the server gets SIGTERM. It must say so and
//! exit 0 with no class and no filter left and the interface's previous root qdisc back; the
//! client must hear the teardown and end normally.
//!
//! The examples are built by the test itself (`cargo build --features tc --example server
//! --example client`, with the `cargo` that runs the tests): `cargo test --test
//! example_sigterm` does not build examples, and a binary left in `target/` by an earlier
//! build could be stale or built without `tc`. After `cargo test --all-features` the build is
//! a no-op. Needs root (netns, CAP_NET_ADMIN): without it the test says why and returns,
//! unless QTOQ_REQUIRE_PRIVILEGED=1, when it fails.
#![cfg(feature = "tc")]

mod netns_support;

use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use netns_support::{Namespaces, SERVER_IF, SERVER_IP};

/// The README's policy: `veth-qtoq` at 20 Mbit/s, and its `video` rule grants the port up to
/// 8 Mbit/s Controlled-Load (a request needs a peak rate, at most 20 Mbit/s).
const POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policy.toml");
const PORT: u16 = 5001;
/// Building the examples from scratch on a slow machine.
const BUILD_WAIT: Duration = Duration::from_secs(900);
/// Any one step of the scenario.
const WAIT: Duration = Duration::from_secs(20);

/// Builds the server and client examples with the `tc` feature; returns their paths.
fn build_examples() -> (PathBuf, PathBuf) {
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--features", "tc", "--message-format", "json"])
        .args(["--example", "server", "--example", "client"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !cfg!(debug_assertions) {
        cargo.arg("--release");
    }
    let child = cargo.spawn().expect("run cargo");
    let pid = child.id();
    let (done_tx, done_rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    let out: Output = match done_rx.recv_timeout(BUILD_WAIT) {
        Ok(out) => out.expect("wait for cargo"),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("building the examples took longer than {BUILD_WAIT:?}");
        }
    };
    assert!(
        out.status.success(),
        "`cargo build --features tc --example server --example client` failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let executable = |name: &str| -> PathBuf {
        out.stdout
            .as_slice()
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
            .find(|m| {
                m["reason"] == "compiler-artifact"
                    && m["target"]["name"] == name
                    && m["target"]["kind"][0] == "example"
            })
            .and_then(|m| m["executable"].as_str().map(PathBuf::from))
            .unwrap_or_else(|| panic!("cargo reported no executable for the {name} example"))
    };
    (executable("server"), executable("client"))
}

fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) };
}

/// A scratch directory for the logs, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("qtoq-sigterm-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A process started by the test; killed (SIGKILL) on drop if it is still running, so a
/// failed assertion leaves nothing behind.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// `ip netns exec <ns> <program> <args>`, stdout and stderr to `<dir>/<name>.log`. `ip
    /// netns exec` execs the program, so the child's pid is the program's.
    fn spawn(name: &'static str, dir: &Path, ns: &str, program: &Path, args: &[&str]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = fs::File::create(&log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start the {name} example: {e}"));
        Process { name, child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status; panics (with its log) if it is still running after `WAIT`.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the {} example still runs {WAIT:?} later; its output:\n{}",
                self.name,
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `probe` until it returns `Some`, for at most `WAIT`; panics with `what` and the
/// last `context` otherwise.
fn poll<T>(what: &str, mut probe: impl FnMut() -> Option<T>, context: impl Fn() -> String) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {WAIT:?}:\n{}",
            context()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Classes other than the tree's root (x:1) and best-effort (x:2) classes, as `tc` lists
/// them: "class htb 7174:1000 parent 7174:1 ...".
fn reservation_classes(classes: &str) -> Vec<&str> {
    classes
        .lines()
        .filter(|l| {
            let id = l.split_whitespace().nth(2).unwrap_or("");
            !id.is_empty() && !id.ends_with(":1") && !id.ends_with(":2")
        })
        .collect()
}

#[test]
fn sigterm_stops_the_server_example_with_nothing_left_on_the_interface() {
    let Some(ns) = Namespaces::create() else {
        return;
    };
    let (server_bin, client_bin) = build_examples();
    let scratch = Scratch::new();
    // A previous root qdisc that must come back.
    ns.tc(&[
        "qdisc", "add", "root", "handle", "9:", "pfifo", "limit", "55",
    ]);

    let listen = format!("{SERVER_IP}:{PORT}");
    let mut server = Process::spawn(
        "server",
        &scratch.0,
        &ns.server,
        &server_bin,
        &["--listen", &listen, "--policy", POLICY, "--enforcer", "tc"],
    );
    poll(
        "`listening on` from the server",
        || server.log().contains("listening on").then_some(()),
        || server.log(),
    );
    let mut client = Process::spawn(
        "client",
        &scratch.0,
        &ns.client,
        &client_bin,
        &[
            "--connect",
            &listen,
            "--rate",
            "1000000",
            "--peak",
            "2500000",
            "--seconds",
            "120",
        ],
    );
    let class = poll(
        "reservation class on veth-qtoq",
        || {
            let classes = ns.tc(&["class", "show"]);
            reservation_classes(&classes)
                .first()
                .map(|c| (*c).to_owned())
        },
        || {
            format!(
                "tc class show dev {SERVER_IF}:\n{}\nserver:\n{}\nclient:\n{}",
                ns.tc(&["class", "show"]),
                server.log(),
                client.log()
            )
        },
    );
    eprintln!("reservation in force: {class}");

    // The pid is the server's (not a wrapper's): SIGTERM goes to the example itself.
    let comm = fs::read_to_string(format!("/proc/{}/comm", server.child.id())).unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "server",
        "the pid to signal is not the server's"
    );
    signal(server.child.id(), libc::SIGTERM);
    let status = server.wait();
    let server_log = server.log();
    assert!(
        status.success(),
        "the server example did not stop cleanly on SIGTERM: {status}; its output:\n{server_log}"
    );
    assert!(
        server_log.contains("stopped by SIGTERM"),
        "the server did not say which signal stopped it:\n{server_log}"
    );

    let classes = ns.tc(&["class", "show"]);
    assert_eq!(
        classes.trim(),
        "",
        "classes left on {SERVER_IF}; server:\n{server_log}"
    );
    let filters = ns.tc(&["filter", "show"]);
    assert_eq!(
        filters.trim(),
        "",
        "filters left on {SERVER_IF}; server:\n{server_log}"
    );
    let qdiscs = ns.tc(&["qdisc", "show"]);
    assert!(!qdiscs.contains("htb"), "HTB left on {SERVER_IF}: {qdiscs}");
    assert!(
        qdiscs.contains("qdisc pfifo 9: root"),
        "previous root qdisc not restored: {qdiscs}"
    );

    // The client heard the teardown (the server agent's PathTear), then the connection
    // closed and it ended as usual.
    let status = client.wait();
    let client_log = client.log();
    assert!(status.success(), "client: {status}\n{client_log}");
    assert!(
        client_log.contains("TornDown") && client_log.contains("goodput_bytes_per_s="),
        "client output:\n{client_log}"
    );
}
