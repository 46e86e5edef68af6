//! The example binaries as real processes in the test namespaces: building them, starting
//! them (as root through `ip netns exec`, or as an unprivileged user), their logs, bounded
//! waits, and signals. Shared by `tests/example_sigterm.rs` and `tests/qosd_tc.rs`.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::netns_support::Namespaces;

/// The README's policy: `veth-qtoq` at 20 Mbit/s, and its `video` rule grants ports
/// 5000-5099 up to 8 Mbit/s Controlled-Load (a request needs a peak rate, at most 20 Mbit/s).
pub const POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policy.toml");
/// Building the examples from scratch on a slow machine.
const BUILD_WAIT: Duration = Duration::from_secs(900);
/// Any one step of a scenario.
pub const WAIT: Duration = Duration::from_secs(20);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Builds the server and client examples with the `tc` feature; returns their paths.
///
/// `cargo test --test X` does not build examples, and a binary left in `target/` by an
/// earlier build could be stale or built without `tc`; so the test builds them, with the
/// `cargo` that runs the tests. After `cargo test --all-features` the build is a no-op.
pub fn build_examples() -> (PathBuf, PathBuf) {
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

pub fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) };
}

/// A scratch directory for logs and sockets, removed on drop. Anyone may traverse it (mode
/// 755), so an unprivileged process can reach a socket in it.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("qtoq-{what}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Who a process runs as: root (`ip netns exec`), or an unprivileged user and group.
#[derive(Debug, Clone, Copy)]
pub enum User {
    Root,
    Unprivileged { uid: u32, gid: u32 },
}

/// `nobody` / `nogroup`.
pub const NOBODY: User = User::Unprivileged {
    uid: 65534,
    gid: 65534,
};

/// A process started by the test; killed (SIGKILL) on drop if it is still running, so a
/// failed assertion leaves nothing behind.
pub struct Process {
    pub name: &'static str,
    pub child: Child,
    log: PathBuf,
}

impl Process {
    /// `ip netns exec <ns> <program> <args>` as root, stdout and stderr to
    /// `<dir>/<name>.log`. `ip netns exec` execs the program, so the child's pid is the
    /// program's. Applications find no qosd unless `env` names one (`QTOQ_SOCKET` points into
    /// `dir`, where nothing listens), whatever runs on the host.
    pub fn spawn(name: &'static str, dir: &Path, ns: &str, program: &Path, args: &[&str]) -> Self {
        Self::spawn_as(User::Root, name, dir, ns, program, args, &[])
    }

    /// As [`spawn`](Self::spawn), as `user` and with `env` added. An unprivileged process is
    /// started from a thread that entered namespace `ns` (children inherit their parent
    /// thread's network namespace), with `setuid`/`setgid` (std drops the supplementary
    /// groups): it keeps no capability.
    pub fn spawn_as(
        user: User,
        name: &'static str,
        dir: &Path,
        ns: &str,
        program: &Path,
        args: &[&str],
        env: &[(&str, &OsStr)],
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = fs::File::create(&log).expect("log file");
        let mut command = match user {
            User::Root => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(program);
                command
            }
            User::Unprivileged { uid, gid } => {
                use std::os::unix::process::CommandExt;
                let mut command = Command::new(program);
                command.uid(uid).gid(gid);
                command
            }
        };
        command
            .args(args)
            .env("QTOQ_SOCKET", dir.join("no-qosd-here.sock"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        let child = match user {
            User::Root => command.spawn(),
            User::Unprivileged { .. } => {
                let path = Namespaces::path(ns);
                thread::spawn(move || {
                    qtoq::enforce::enter_network_namespace(&path)
                        .expect("setns into the test namespace");
                    command.spawn()
                })
                .join()
                .expect("spawning thread")
            }
        }
        .unwrap_or_else(|e| panic!("start {name} ({}): {e}", program.display()));
        Process { name, child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status; panics (with its log) if it is still running after `WAIT`.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} still runs {WAIT:?} later; its output:\n{}",
                self.name,
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls until its log contains `text` (panics with the log if it exits first or after
    /// `WAIT`).
    pub fn wait_for_output(&mut self, text: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.log().contains(text) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "{} ended ({status}) before saying `{text}`; its output:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not say `{text}` within {WAIT:?}; its output:\n{}",
                self.name,
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
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
pub fn poll<T>(
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
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
pub fn reservation_classes(classes: &str) -> Vec<&str> {
    classes
        .lines()
        .filter(|l| {
            let id = l.split_whitespace().nth(2).unwrap_or("");
            !id.is_empty() && !id.ends_with(":1") && !id.ends_with(":2")
        })
        .collect()
}
