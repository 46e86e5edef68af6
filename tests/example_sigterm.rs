//! Issue 8, point 4: SIGTERM (what `kill`, systemd and container runtimes send) stops the
//! server example as cleanly as Ctrl-C. The README's namespace scenario with the real
//! example binaries: the `server` with `examples/policy.toml` and the tc enforcer in a server
//! network namespace, the `client` reserving through it from a client namespace; once the
//! reservation's HTB class is on `veth-qtoq`, the server gets SIGTERM. It must say so and
//! exit 0 with no class and no filter left and the interface's previous root qdisc back; the
//! client must hear the teardown and end normally. The server's tc journal goes to a state
//! directory of the test's (`--state-dir`), never /run/qtoq.
//!
//! The examples are built by the test itself (`cargo build --features tc --example server
//! --example client`, with the `cargo` that runs the tests): `cargo test --test
//! example_sigterm` does not build examples, and a binary left in `target/` by an earlier
//! build could be stale or built without `tc`. After `cargo test --all-features` the build is
//! a no-op. Needs root (netns, CAP_NET_ADMIN): without it the test says why and returns,
//! unless QTOQ_REQUIRE_PRIVILEGED=1, when it fails.
#![cfg(feature = "tc")]

mod example_support;
mod netns_support;
mod process_support;

use std::fs;

use example_support::{
    build_examples, poll, reservation_classes, signal, Process, Scratch, POLICY,
};
use netns_support::{Namespaces, StateDir, SERVER_IF, SERVER_IP};

const PORT: u16 = 5001;

#[test]
fn sigterm_stops_the_server_example_with_nothing_left_on_the_interface() {
    let Some(ns) = Namespaces::create() else {
        return;
    };
    let (server_bin, client_bin) = build_examples();
    let scratch = Scratch::new("sigterm");
    let state = StateDir::new();
    // A previous root qdisc that must come back.
    ns.tc(&[
        "qdisc", "add", "root", "handle", "9:", "pfifo", "limit", "55",
    ]);

    let listen = format!("{SERVER_IP}:{PORT}");
    let mut server = Process::spawn(
        "server",
        scratch.path(),
        &ns.server,
        &server_bin,
        &[
            "--listen",
            &listen,
            "--policy",
            POLICY,
            "--enforcer",
            "tc",
            "--state-dir",
            &state.path().display().to_string(),
        ],
    );
    server.wait_for_output("listening on");
    let mut client = Process::spawn(
        "client",
        scratch.path(),
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
