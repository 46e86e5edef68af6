//! tc enforcement through qosd, with real processes in network namespaces the tests create:
//! qosd (the binary, as root, `--enforcer tc`, `examples/policy.toml` declaring the veth's
//! `[[interface]]`), the `server` example as the unprivileged user `nobody` finding qosd by
//! `QTOQ_SOCKET`, and the `client` example in the other namespace.
//!
//! * An application without any capability gets its reservation's HTB class from qosd; the
//!   same server as `nobody` without qosd cannot install tc (its own agent: permission
//!   denied, CAP_NET_ADMIN missing) and leaves the interface as it was.
//! * SIGTERM of qosd with a reservation open: no class or filter left, the `tbf` that was
//!   the root qdisc before back with its parameters, no journal, the socket file removed,
//!   exit 0; the client hears the teardown.
//! * SIGKILL of qosd with a reservation open: the HTB tree stays; qosd started again on the
//!   same state directory restores the `tbf` (the dead qosd's journal), then installs a fresh
//!   tree of its own; its SIGTERM leaves the `tbf` again.
//! * qosd as an unprivileged user with only the capabilities `examples/qosd.service` gives
//!   it (CAP_NET_ADMIN, CAP_NET_RAW; through `setpriv`, skipped where it is missing) does
//!   all of the above for `nobody`'s server.
//!
//! Sockets, logs and state directories are temporary directories of each test, never
//! /run/qtoq; namespaces and processes go in Drop guards, so a failed assertion leaves
//! nothing behind. Every wait is bounded. Needs root: without it the tests say why and
//! return, unless QTOQ_REQUIRE_PRIVILEGED=1, when they fail.
#![cfg(feature = "daemon")]

mod example_support;
mod netns_support;
mod process_support;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use example_support::{build_examples, poll, signal, Process, Scratch, User, NOBODY, POLICY};
use netns_support::{Namespaces, StateDir, SERVER_IF, SERVER_IP};

const QOSD: &str = env!("CARGO_BIN_EXE_qosd");
/// In the policy's `video` rule (ports 5000-5099 at 10.77.0.0/16).
const PORT: u16 = 5001;

fn listen() -> String {
    format!("{SERVER_IP}:{PORT}")
}

/// One scenario's world: namespaces, examples, scratch and state directories.
struct World {
    // Dropped in this order: processes are the tests' locals (dropped first), then the
    // namespaces, then the directories.
    ns: Namespaces,
    server_bin: PathBuf,
    client_bin: PathBuf,
    scratch: Scratch,
    state: StateDir,
}

impl World {
    fn create(what: &str) -> Option<World> {
        let ns = Namespaces::create()?;
        let (server_bin, client_bin) = build_examples();
        Some(World {
            ns,
            server_bin,
            client_bin,
            scratch: Scratch::new(what),
            state: StateDir::new(),
        })
    }

    fn socket(&self) -> PathBuf {
        self.scratch.path().join("qosd.sock")
    }

    /// qosd as root in the server namespace; returns once it is ready.
    fn start_qosd(&self, name: &'static str) -> Process {
        self.start_qosd_via(name, &[])
    }

    /// qosd in the server namespace started through `wrapper` (a command that execs its
    /// arguments, such as `setpriv ...`; none: qosd itself), as root; returns once it is
    /// ready.
    fn start_qosd_via(&self, name: &'static str, wrapper: &[&str]) -> Process {
        let socket = self.socket().display().to_string();
        let state = self.state.path().display().to_string();
        let mut argv = wrapper.to_vec();
        argv.extend_from_slice(&[
            QOSD,
            "--socket",
            &socket,
            "--state-dir",
            &state,
            "--policy",
            POLICY,
            "--enforcer",
            "tc",
            "--transport",
            "udp",
            // Anyone may connect: the unprivileged server must.
            "--mode",
            "666",
        ]);
        let mut qosd = Process::spawn_as(
            User::Root,
            name,
            self.scratch.path(),
            &self.ns.server,
            Path::new(argv[0]),
            &argv[1..],
            // Plain logs in the failure messages.
            &[("NO_COLOR", OsStr::new("1"))],
        );
        qosd.wait_for_output("qosd ready");
        assert!(self.socket().exists(), "no socket file once ready");
        qosd
    }

    /// The server example as `user`, finding qosd (if any) at this world's socket.
    fn start_server(&self, name: &'static str, user: User, extra: &[&str]) -> Process {
        let listen = listen();
        let mut args = vec!["--listen", listen.as_str()];
        args.extend_from_slice(extra);
        let socket = self.socket();
        Process::spawn_as(
            user,
            name,
            self.scratch.path(),
            &self.ns.server,
            &self.server_bin,
            &args,
            &[("QTOQ_SOCKET", socket.as_os_str())],
        )
    }

    /// The client example (root, its own embedded agent) reserving 1 MB/s from the server.
    fn start_client(&self) -> Process {
        Process::spawn(
            "client",
            self.scratch.path(),
            &self.ns.client,
            &self.client_bin,
            &[
                "--connect",
                &listen(),
                "--rate",
                "1000000",
                "--peak",
                "2500000",
                "--seconds",
                "120",
            ],
        )
    }

    /// qosd, the server as `nobody` through it and a client: returns them once the
    /// reservation's class is on the interface.
    fn reservation_through_qosd(&self) -> (Process, Process, Process, String) {
        let qosd = self.start_qosd("qosd");
        let (server, client, class) = self.reservation_through(&qosd);
        (qosd, server, client, class)
    }

    /// The server as `nobody` through the running `qosd` and a client: returns them once
    /// the reservation's class is on the interface.
    fn reservation_through(&self, qosd: &Process) -> (Process, Process, String) {
        let mut server = self.start_server("server", NOBODY, &[]);
        server.wait_for_output("listening on");
        let client = self.start_client();
        let class = poll(
            "reservation class on veth-qtoq",
            || reservation_classes(&self.ns).into_iter().next(),
            || {
                format!(
                    "tc class show dev {SERVER_IF}:\n{}\nqosd:\n{}\nserver:\n{}\nclient:\n{}",
                    self.ns.tc(&["class", "show"]),
                    qosd.log(),
                    server.log(),
                    client.log()
                )
            },
        );
        (server, client, class)
    }

    /// Puts a `tbf` root qdisc on the server interface; returns it and the classes as
    /// `tc` shows them (tbf's own inner class).
    fn tbf_root(&self) -> (serde_json::Value, String) {
        self.ns.tc(&[
            "qdisc", "add", "root", "handle", "9:", "tbf", "rate", "1mbit", "burst", "32kbit",
            "latency", "400ms",
        ]);
        let original = root_qdisc(&self.ns);
        assert_eq!(original["kind"], "tbf", "{original}");
        (original, self.ns.tc(&["class", "show"]))
    }
}

/// The handles of the HTB classes with a minor of at least 0x1000 (reservations; the root
/// and best-effort classes are x:1 and x:2). From `tc class show`'s text: the iproute2 of
/// the test hosts (6.1) prints classes as text even with `-j` ("class htb 7174:1000 parent
/// 7174:1 ...").
fn reservation_classes(ns: &Namespaces) -> Vec<String> {
    ns.tc(&["class", "show"])
        .lines()
        .filter_map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["class", "htb", handle, ..] => Some(handle.to_owned()),
                _ => None,
            },
        )
        .filter(|handle| {
            handle
                .split_once(':')
                .and_then(|(_, minor)| u32::from_str_radix(minor, 16).ok())
                .is_some_and(|minor| minor >= 0x1000)
        })
        .collect()
}

/// The root qdisc of the server interface, as `tc -j qdisc show` describes it.
fn root_qdisc(ns: &Namespaces) -> serde_json::Value {
    let text = ns.tc(&["-j", "qdisc", "show"]);
    let all: serde_json::Value = serde_json::from_str(&text).expect("tc -j output");
    all.as_array()
        .and_then(|list| list.iter().find(|q| q["root"] == true))
        .cloned()
        .unwrap_or_else(|| panic!("no root qdisc in {text}"))
}

/// `Uid:` and `CapEff:` of a running process.
fn credentials(pid: u32) -> (String, String) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    };
    (field("Uid:"), field("CapEff:"))
}

/// SIGTERM to qosd; it must exit 0 having said so.
fn sigterm(qosd: &mut Process) -> String {
    signal(qosd.pid(), libc::SIGTERM);
    let status = qosd.wait();
    let log = qosd.log();
    assert!(
        status.success(),
        "qosd did not stop cleanly on SIGTERM: {status}; its output:\n{log}"
    );
    assert!(
        log.contains("SIGTERM: sessions torn down, rules unloaded, interfaces restored"),
        "qosd did not say it stopped cleanly:\n{log}"
    );
    log
}

#[test]
fn an_unprivileged_application_gets_its_tc_class_through_qosd() {
    let Some(world) = World::create("qosd-tc-nobody") else {
        return;
    };
    let ns = &world.ns;

    // Without qosd, `nobody`'s server cannot install tc itself: its own agent's tc enforcer
    // is refused by the kernel (its state directory is writable by it, so what fails is the
    // missing CAP_NET_ADMIN), and the interface stays as it was.
    let own_state = world.scratch.path().join("nobody-state");
    fs::create_dir(&own_state).expect("state dir");
    fs::set_permissions(&own_state, fs::Permissions::from_mode(0o777)).expect("chmod");
    let own_state = own_state.display().to_string();
    let qdiscs_before = ns.tc(&["qdisc", "show"]);
    let mut alone = world.start_server(
        "server-alone",
        NOBODY,
        &[
            "--policy",
            POLICY,
            "--enforcer",
            "tc",
            "--state-dir",
            &own_state,
        ],
    );
    let status = alone.wait();
    let log = alone.log();
    assert!(
        !status.success(),
        "nobody's server installed tc without qosd:\n{log}"
    );
    assert!(
        log.contains("--enforcer tc:") && log.contains("permission denied"),
        "nobody's own tc enforcer did not fail for want of permission:\n{log}"
    );
    assert_eq!(ns.tc(&["qdisc", "show"]), qdiscs_before, "{log}");
    assert_eq!(reservation_classes(ns), Vec::<String>::new());

    // Through qosd the same unprivileged server gets its reservation's class.
    let (mut qosd, server, _client, class) = world.reservation_through_qosd();
    let server_log = server.log();
    assert!(
        server_log.contains(&format!("agent: qosd at {}", world.socket().display())),
        "the server did not say it uses qosd:\n{server_log}"
    );
    let (uid, caps) = credentials(server.pid());
    assert!(uid.starts_with("65534"), "the server runs as {uid}");
    assert_eq!(caps, "0000000000000000", "the server has capabilities");
    let filters = ns.tc(&["filter", "show"]);
    assert!(
        filters.contains(&format!("flowid {class}")),
        "no filter for {class}: {filters}"
    );
    eprintln!("nobody's reservation through qosd: class {class}");
    sigterm(&mut qosd);
}

#[test]
fn sigterm_of_qosd_with_reservations_open_restores_the_interface() {
    let Some(world) = World::create("qosd-tc-sigterm") else {
        return;
    };
    let ns = &world.ns;
    let (original, original_classes) = world.tbf_root();

    let (mut qosd, mut server, mut client, class) = world.reservation_through_qosd();
    assert_eq!(root_qdisc(ns)["kind"], "htb");
    assert_eq!(world.state.journals().len(), 1);
    eprintln!("reservation in force: {class}; SIGTERM to qosd");
    let log = sigterm(&mut qosd);

    assert_eq!(
        reservation_classes(ns),
        Vec::<String>::new(),
        "qosd:\n{log}"
    );
    assert_eq!(
        ns.tc(&["class", "show"]),
        original_classes,
        "classes left; qosd:\n{log}"
    );
    assert_eq!(
        ns.tc(&["filter", "show"]).trim(),
        "",
        "filters left; qosd:\n{log}"
    );
    assert_eq!(
        root_qdisc(ns),
        original,
        "the tbf is not back as it was; qosd:\n{log}"
    );
    assert_eq!(world.state.journals(), Vec::<PathBuf>::new());
    assert!(!world.socket().exists(), "socket file left behind");

    // qosd's PathTear reached the client; the server heard its sessions end.
    client.wait_for_output("TornDown");
    server.wait_for_output("TornDown");
}

#[test]
fn sigkill_of_qosd_leaves_the_tree_and_the_next_qosd_restores_it() {
    let Some(world) = World::create("qosd-tc-sigkill") else {
        return;
    };
    let ns = &world.ns;
    let (original, original_classes) = world.tbf_root();

    let (mut qosd, _server, _client, class) = world.reservation_through_qosd();
    let killed_pid = qosd.pid();
    qosd.kill();
    // No cleanup ran: the tree, the class, the journal and the socket file are still there.
    assert_eq!(root_qdisc(ns)["kind"], "htb");
    assert!(
        reservation_classes(ns).contains(&class),
        "{}",
        ns.tc(&["class", "show"])
    );
    let journals = world.state.journals();
    assert_eq!(journals.len(), 1, "{journals:?}");
    assert!(world.socket().exists());

    // The next qosd on the same state directory: the dead one's tree goes (the tbf it
    // replaced restored), a fresh tree of its own comes, and the stale socket is replaced.
    let mut again = world.start_qosd("qosd-again");
    let log = again.log();
    assert!(
        log.contains("restored the root qdisc a qtoq process that is gone had replaced")
            && log.contains(&killed_pid.to_string()),
        "the new qosd did not restore the killed one's interface:\n{log}"
    );
    assert_eq!(root_qdisc(ns)["kind"], "htb");
    assert_eq!(
        reservation_classes(ns),
        Vec::<String>::new(),
        "the new tree is not fresh:\n{}",
        ns.tc(&["class", "show"])
    );
    assert_eq!(ns.tc(&["filter", "show"]).trim(), "");
    let journals = world.state.journals();
    assert_eq!(journals.len(), 1, "{journals:?}");
    let record: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&journals[0]).expect("journal"))
            .expect("journal json");
    assert_eq!(record["pid"], again.pid(), "{record}");

    let log = sigterm(&mut again);
    assert_eq!(root_qdisc(ns), original, "qosd:\n{log}");
    assert_eq!(ns.tc(&["class", "show"]), original_classes);
    assert_eq!(ns.tc(&["filter", "show"]).trim(), "");
    assert_eq!(world.state.journals(), Vec::<PathBuf>::new());
    assert!(!world.socket().exists(), "socket file left behind");
}

#[test]
fn qosd_needs_no_more_than_the_units_capabilities() {
    let Some(world) = World::create("qosd-tc-caps") else {
        return;
    };
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipping: no setpriv (util-linux) to start qosd with the unit's capabilities");
        return;
    }
    let ns = &world.ns;
    // As the unit's RuntimeDirectory: the socket's and the state's directories are qosd's.
    for dir in [world.scratch.path(), world.state.path()] {
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).expect("chown");
    }
    let (original, original_classes) = world.tbf_root();
    // User=, AmbientCapabilities= and CapabilityBoundingSet= of examples/qosd.service.
    let caps = "-all,+net_admin,+net_raw";
    let mut qosd = world.start_qosd_via(
        "qosd-unit-caps",
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            &format!("--bounding-set={caps}"),
        ],
    );
    let (uid, effective) = credentials(qosd.pid());
    assert!(uid.starts_with("65534"), "qosd runs as {uid}");
    // CAP_NET_ADMIN (12) and CAP_NET_RAW (13), nothing else.
    assert_eq!(effective, "0000000000003000", "qosd's capabilities");

    let (_server, _client, class) = world.reservation_through(&qosd);
    eprintln!("reservation through qosd with the unit's capabilities: {class}");
    let log = sigterm(&mut qosd);
    assert_eq!(root_qdisc(ns), original, "qosd:\n{log}");
    assert_eq!(ns.tc(&["class", "show"]), original_classes);
    assert_eq!(ns.tc(&["filter", "show"]).trim(), "");
    assert!(!world.socket().exists(), "socket file left behind");
}
