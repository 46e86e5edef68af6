//! The example binaries as real processes in the test namespaces: building them, starting
//! them (as root through `ip netns exec`, or as an unprivileged user), their logs, bounded
//! waits, and signals. Shared by `tests/example_sigterm.rs` and `tests/qosd_tc.rs`; builds on
//! `process_support` (also `tests/qosd_process.rs`'s).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use crate::netns_support::Namespaces;

/// The README's policy: `veth-qtoq` at 20 Mbit/s, and its `video` rule grants ports
/// 5000-5099 up to 8 Mbit/s Controlled-Load (a request needs a peak rate, at most 20 Mbit/s).
pub const POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policy.toml");
/// Any one step of a scenario.
pub const WAIT: Duration = Duration::from_secs(20);

/// Builds the server and client examples with the `tc` feature; returns their paths (see
/// [`process_support::build_examples`](crate::process_support::build_examples)).
pub fn build_examples() -> (PathBuf, PathBuf) {
    let mut paths = crate::process_support::build_examples("tc", &["server", "client"]);
    let client = paths.pop().expect("the client example");
    let server = paths.pop().expect("the server example");
    (server, client)
}

pub use crate::process_support::Scratch;
// Not every test that includes this module polls or signals.
#[allow(unused_imports)]
pub use crate::process_support::{poll, signal};

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

// The example binaries are `process_support`'s processes, started in a test namespace.
pub use crate::process_support::Process;

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
        Process {
            name: name.to_owned(),
            child,
            log,
        }
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
