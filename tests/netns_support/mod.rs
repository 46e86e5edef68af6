//! Network namespaces for tests: two namespaces joined by a veth pair, removed on drop, and
//! threads that run inside one of them (setns on that thread only, so tests stay parallel).
//! Shared by the tc enforcer tests and the API contention tests.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use qtoq::enforce::enter_network_namespace;

pub const SERVER_IF: &str = "veth-qtoq";
pub const CLIENT_IF: &str = "veth-peer";
pub const SERVER_IP: &str = "10.77.0.1";
pub const CLIENT_IP: &str = "10.77.0.2";
/// 20 Mbit/s.
pub const CAPACITY: f64 = 2_500_000.0;
/// 8 Mbit/s.
pub const RESERVED: f32 = 1_000_000.0;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{:?}: {}",
            args,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Two namespaces joined by a veth pair; both are deleted on drop.
pub struct Namespaces {
    /// Name of the server-side namespace (holds `SERVER_IF`, 10.77.0.1/24).
    pub server: String,
    /// Name of the client-side namespace (holds `CLIENT_IF`, 10.77.0.2/24).
    pub client: String,
}

impl Namespaces {
    /// `None` (after printing why) when this host cannot create namespaces and privileged
    /// tests are not required.
    pub fn create() -> Option<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("qtoq-{}-{n}", std::process::id());
        let server = format!("{base}-s");
        let client = format!("{base}-c");
        if let Err(why) = run(&["ip", "netns", "add", &server]) {
            let reason = format!("cannot create network namespaces (needs root): {why}");
            if std::env::var("QTOQ_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
                panic!("{reason}");
            }
            eprintln!("skipping: {reason}");
            return None;
        }
        // From here on the guard owns whatever exists.
        let ns = Namespaces { server, client };
        let setup = [
            vec!["ip", "netns", "add", &ns.client],
            vec![
                "ip", "-n", &ns.server, "link", "add", SERVER_IF, "type", "veth", "peer", "name",
                CLIENT_IF, "netns", &ns.client,
            ],
            vec![
                "ip",
                "-n",
                &ns.server,
                "addr",
                "add",
                "10.77.0.1/24",
                "dev",
                SERVER_IF,
            ],
            vec![
                "ip",
                "-n",
                &ns.client,
                "addr",
                "add",
                "10.77.0.2/24",
                "dev",
                CLIENT_IF,
            ],
            vec!["ip", "-n", &ns.server, "link", "set", SERVER_IF, "up"],
            vec!["ip", "-n", &ns.client, "link", "set", CLIENT_IF, "up"],
            vec!["ip", "-n", &ns.server, "link", "set", "lo", "up"],
            vec!["ip", "-n", &ns.client, "link", "set", "lo", "up"],
        ];
        for cmd in setup {
            if let Err(why) = run(&cmd) {
                panic!("namespace setup failed: {why}");
            }
        }
        Some(ns)
    }

    pub fn path(name: &str) -> String {
        format!("/run/netns/{name}")
    }

    /// `tc <object> <verb> dev veth-qtoq <rest>` inside the server namespace.
    pub fn tc(&self, args: &[&str]) -> String {
        let verb = args
            .iter()
            .position(|a| ["show", "add", "del"].contains(a))
            .expect("a tc verb");
        let mut cmd = vec!["ip", "netns", "exec", &self.server, "tc"];
        cmd.extend_from_slice(&args[..=verb]);
        cmd.extend_from_slice(&["dev", SERVER_IF]);
        cmd.extend_from_slice(&args[verb + 1..]);
        run(&cmd).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace destroys its veth end, and with it the peer.
        for name in [&self.server, &self.client] {
            if let Err(e) = run(&["ip", "netns", "del", name]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Runs `body` on a new thread inside namespace `ns`, on its own current-thread runtime.
pub fn in_netns<F, Fut, T>(ns: &str, body: F) -> thread::JoinHandle<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let path = Namespaces::path(ns);
    thread::spawn(move || {
        enter_network_namespace(&path).expect("setns into the test namespace");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(body())
    })
}

/// A state directory for the tc enforcer's journals, private to one test (never
/// `/run/qtoq`); removed on drop.
pub struct StateDir(pub PathBuf);

impl StateDir {
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("qtoq-state-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("state dir");
        StateDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Every journal (`*.json`) below the directory.
    pub fn journals(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "json") {
                    found.push(path);
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.0, &mut found);
        found
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
