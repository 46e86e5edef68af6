//! Tests that run real binaries as processes: building the examples, processes killed when
//! a test ends, scratch directories, bounded polls. Shared by `example_sigterm.rs` and
//! `qosd_process.rs`.
#![allow(dead_code)]

use std::fs;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Building the examples from scratch on a slow machine.
pub const BUILD_WAIT: Duration = Duration::from_secs(900);
/// Any one step of a scenario.
pub const WAIT: Duration = Duration::from_secs(20);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Builds the `names` examples with `features` (`cargo build --features <features>
/// --example <name>...`, with the `cargo` that runs the tests: `cargo test --test X` does not
/// build examples, and a binary left in `target/` could be stale or built without the
/// features); returns their paths in the order of `names`.
pub fn build_examples(features: &str, names: &[&str]) -> Vec<PathBuf> {
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--features", features, "--message-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in names {
        cargo.args(["--example", name]);
    }
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
        "`cargo build --features {features}` of the examples {names:?} failed ({}):\n{}",
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
    names.iter().map(|name| executable(name)).collect()
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, signal) };
}

/// A scratch directory for one test (sockets, state, logs), removed on drop. Anyone may
/// traverse it (the temp dir's default mode), so an unprivileged process can reach a socket
/// in it.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(prefix: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("qtoq-{prefix}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A process started by a test, its stdout and stderr in a log file; killed (SIGKILL) on
/// drop if it is still running, so a failed assertion leaves nothing behind.
pub struct Process {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    /// Starts `command` with stdout and stderr to `log`.
    pub fn start(name: &str, log: PathBuf, mut command: Command) -> Self {
        let file = fs::File::create(&log).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Process {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its output contains `text`; panics with the output after `WAIT`.
    pub fn wait_for(&self, text: &str) {
        poll(
            &format!("{text:?} in the output of {}", self.name),
            || self.log().contains(text).then_some(()),
            || self.log(),
        );
    }

    /// Its exit status; panics (with its output) if it is still running after `WAIT`.
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
            thread::sleep(Duration::from_millis(20));
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

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `probe` until it returns `Some`, for at most `WAIT`; panics with `what` and the
/// last `context` otherwise.
pub fn poll<T>(what: &str, probe: impl FnMut() -> Option<T>, context: impl Fn() -> String) -> T {
    poll_for(WAIT, what, probe, context)
}

/// [`poll`] for at most `limit`.
pub fn poll_for<T>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {limit:?}:\n{}",
            context()
        );
        thread::sleep(Duration::from_millis(25));
    }
}
