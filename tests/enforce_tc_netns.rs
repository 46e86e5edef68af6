//! The tc backend in real network namespaces: the HTB tree is installed and removed without
//! leftovers, the previous root qdisc comes back, and IPv6 traffic lands in its class. The
//! ownership journal (crash recovery, refusing live owners) is tested in
//! `tests/enforce_tc_journal.rs`; the contention test (a reservation really protects a flow on
//! a saturated link) runs through the public API in `tests/enforce_contention_api.rs`.
//!
//! Each test creates its own namespaces (`qtoq-<pid>-<n>-s`/`-c`, see `netns_support`) joined
//! by a veth pair and deletes them in a Drop guard, even when an assertion fails. The enforcer
//! and the sockets run on threads that entered a namespace with
//! `qtoq::enforce::enter_network_namespace` (setns on that thread only), so the test process
//! itself never leaves the host namespace and tests run in parallel safely. Needs root
//! (CAP_NET_ADMIN + CAP_SYS_ADMIN): without it the tests say why and return, unless QTOQ_REQUIRE_PRIVILEGED=1, when they fail.
#![cfg(feature = "tc")]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use qtoq::enforce::{Enforcer, TcEnforcer};
use qtoq::flow::{Flow, Rule, RuleId};
use qtoq::policy::InterfaceSpec;
use qtoq::wire::intserv::{FlowSpec, TokenBucket};
use qtoq::wire::ErrorCode;

mod netns_support;

use netns_support::{
    in_netns, run, Namespaces, StateDir, CAPACITY, CLIENT_IF, RESERVED, SERVER_IF,
};

fn interface() -> InterfaceSpec {
    InterfaceSpec::new(SERVER_IF, CAPACITY)
}

fn rule(id: u64, sender: SocketAddr, receiver: SocketAddr, rate: f32) -> Rule {
    Rule {
        id: RuleId(id),
        flow: Flow {
            sender,
            receiver,
            protocol: 6,
        },
        flowspec: FlowSpec::ControlledLoad(TokenBucket::new(rate, 65_536.0)),
        dscp: None,
    }
}

#[test]
fn tree_install_remove_and_restore_leave_nothing_behind() {
    let Some(ns) = Namespaces::create() else {
        return;
    };
    // A previous root qdisc that must come back.
    ns.tc(&[
        "qdisc", "add", "root", "handle", "9:", "pfifo", "limit", "77",
    ]);

    let state = StateDir::new();
    let state_dir = state.path().to_owned();

    // The enforcer lives on a namespace thread; the test drives it step by step and
    // inspects with `tc` in between.
    let (step_tx, step_rx) = mpsc::channel::<&'static str>();
    let (done_tx, done_rx) = mpsc::channel::<Result<String, String>>();
    let worker = in_netns(&ns.server, move || async move {
        let mut enforcer = match TcEnforcer::with_state_dir(&[interface()], &state_dir).await {
            Ok(e) => e,
            Err(e) => {
                let _ = done_tx.send(Err(e.to_string()));
                return;
            }
        };
        let _ = done_tx.send(Ok("ready".into()));
        let v4 = rule(
            1,
            "10.77.0.1:5000".parse().unwrap(),
            "10.77.0.2:40000".parse().unwrap(),
            RESERVED,
        );
        let v6 = rule(
            2,
            "[fd00::1]:5001".parse().unwrap(),
            "[fd00::2]:40001".parse().unwrap(),
            200_000.0,
        );
        while let Ok(step) = step_rx.recv() {
            let result = match step {
                "install" => {
                    async {
                        let a = enforcer.install(&v4, None).await?;
                        let b = enforcer.install(&v6, None).await?;
                        Ok(format!("{} | {}", a.summary, b.summary))
                    }
                    .await
                }
                "modify" => enforcer
                    .modify(&rule(1, v4.flow.sender, v4.flow.receiver, 500_000.0), None)
                    .await
                    .map(|a| a.summary),
                "remove" => {
                    async {
                        enforcer.remove(RuleId(1), None).await?;
                        enforcer.remove(RuleId(2), None).await?;
                        // Unknown ids are not an error.
                        enforcer.remove(RuleId(3), None).await?;
                        Ok(String::new())
                    }
                    .await
                }
                "shutdown" => enforcer.shutdown().await.map(|()| String::new()),
                _ => unreachable!(),
            };
            let _ = done_tx.send(result.map_err(|e: qtoq::enforce::EnforceError| e.to_string()));
        }
    });
    let step = |name: &'static str| -> String {
        step_tx.send(name).unwrap();
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("enforcer thread answered")
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    // Creation.
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .unwrap_or_else(|e| panic!("TcEnforcer::with_state_dir: {e}"));
    assert_eq!(
        state.journals().len(),
        1,
        "one journal for the one interface"
    );
    let qdisc = ns.tc(&["qdisc", "show"]);
    assert!(qdisc.contains("htb 7174: root"), "{qdisc}");
    let classes = ns.tc(&["class", "show"]);
    assert!(classes.contains("class htb 7174:1 root"), "{classes}");
    assert!(
        classes.contains("class htb 7174:2 parent 7174:1"),
        "{classes}"
    );
    assert!(classes.contains("rate 20Mbit ceil 20Mbit"), "{classes}");

    let summary = step("install");
    assert!(summary.contains("7174:1000"), "{summary}");
    let classes = ns.tc(&["-s", "class", "show"]);
    assert!(
        classes.contains("class htb 7174:1000 parent 7174:1"),
        "{classes}"
    );
    assert!(
        classes.contains("class htb 7174:1001 parent 7174:1"),
        "{classes}"
    );
    // 1 000 000 B/s of TCP payload in 1514-byte frames ≈ 8.36 Mbit/s; borrows up to 20 Mbit.
    assert!(classes.contains("rate 8364Kbit ceil 20Mbit"), "{classes}");
    let filters = ns.tc(&["filter", "show"]);
    assert!(filters.contains("flowid 7174:1000"), "{filters}");
    assert!(filters.contains("flowid 7174:1001"), "{filters}");
    assert!(filters.contains("protocol ipv6"), "{filters}");
    // 10.77.0.1 -> 10.77.0.2, ports 5000 -> 40000.
    assert!(
        filters.contains("match 0a4d0001/ffffffff at 12"),
        "{filters}"
    );
    assert!(
        filters.contains("match 0a4d0002/ffffffff at 16"),
        "{filters}"
    );
    assert!(
        filters.contains("match 13889c40/ffffffff at 20"),
        "{filters}"
    );
    assert!(
        filters.contains("match 00060000/00ff0000 at 8"),
        "{filters}"
    );

    step("modify");
    let classes = ns.tc(&["class", "show"]);
    assert!(classes.contains("rate 4182Kbit ceil 20Mbit"), "{classes}");

    step("remove");
    let classes = ns.tc(&["class", "show"]);
    assert!(!classes.contains("7174:10"), "{classes}");
    // Best effort gets the whole capacity back.
    assert!(
        classes.contains("class htb 7174:2 parent 7174:1 prio 1 rate 20Mbit"),
        "{classes}"
    );
    assert_eq!(ns.tc(&["filter", "show"]).trim(), "", "filters left behind");

    step("shutdown");
    let qdisc = ns.tc(&["qdisc", "show"]);
    assert!(!qdisc.contains("7174"), "{qdisc}");
    assert!(qdisc.contains("qdisc pfifo 9: root"), "{qdisc}");
    assert!(qdisc.contains("limit 77p"), "{qdisc}");
    assert_eq!(ns.tc(&["class", "show"]).trim(), "");
    assert_eq!(state.journals(), Vec::<std::path::PathBuf>::new());
    drop(step_tx);
    worker.join().unwrap();
}

#[test]
fn unknown_interface_is_a_kernel_error_with_code_22() {
    let Some(ns) = Namespaces::create() else {
        return;
    };
    let state = StateDir::new();
    let state_dir = state.path().to_owned();
    let worker = in_netns(&ns.server, move || async move {
        TcEnforcer::with_state_dir(&[InterfaceSpec::new("nosuchif0", CAPACITY)], &state_dir)
            .await
            .map(|_| ())
    });
    let err = worker.join().unwrap().unwrap_err();
    assert_eq!(
        err.rsvp_error().code,
        ErrorCode::TRAFFIC_CONTROL_SYSTEM_ERROR,
        "{err}"
    );
    assert!(err.to_string().contains("look up interface"), "{err}");
}

/// Real IPv6 traffic of a reserved flow lands in its class (the u32 offsets are right), and
/// other traffic in the best-effort class.
#[test]
fn ipv6_flow_is_classified_into_its_class() {
    let Some(ns) = Namespaces::create() else {
        return;
    };
    for (name, dev, addr) in [
        (&ns.server, SERVER_IF, "fd00:77::1/64"),
        (&ns.client, CLIENT_IF, "fd00:77::2/64"),
    ] {
        run(&["ip", "-n", name, "addr", "add", addr, "dev", dev, "nodad"]).unwrap();
    }
    let client_ns = ns.client.clone();
    let state = StateDir::new();
    let state_dir = state.path().to_owned();
    let server = in_netns(&ns.server, move || async move {
        let mut enforcer = TcEnforcer::with_state_dir(&[interface()], &state_dir)
            .await
            .expect("tc");
        let listener = TcpListener::bind("[fd00:77::1]:5001").expect("bind");
        // The client binds a known port so the rule can name the whole 5-tuple in advance.
        let client = in_netns(&client_ns, || async {
            let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
            socket.bind(&"[fd00:77::2]:40001".parse::<SocketAddr>().unwrap().into())?;
            socket.connect(&"[fd00:77::1]:5001".parse::<SocketAddr>().unwrap().into())?;
            let mut stream: TcpStream = socket.into();
            let mut sink = Vec::new();
            stream.read_to_end(&mut sink)?;
            Ok::<_, std::io::Error>(sink.len())
        });
        let (mut stream, peer) = listener.accept().expect("accept");
        let reserved = rule(1, stream.local_addr().unwrap(), peer, 200_000.0);
        assert_eq!(reserved.flow.receiver.port(), 40001);
        enforcer.install(&reserved, None).await.expect("install");
        stream.write_all(&vec![1u8; 300_000]).expect("send");
        stream.shutdown(Shutdown::Both).ok();
        let received = client.join().unwrap().expect("client");
        let stats = run(&["tc", "-s", "class", "show", "dev", SERVER_IF]).unwrap();
        enforcer.shutdown().await.expect("shutdown");
        (received, stats)
    });
    let (received, stats) = server.join().unwrap();
    assert_eq!(received, 300_000);
    // "class htb 7174:1000 ... \n Sent <bytes> bytes <pkts> pkt"
    let sent_by = |class: &str| -> u64 {
        let at = stats.find(&format!("class htb {class} ")).expect(class);
        let tail = &stats[at..];
        let sent = tail.find("Sent ").expect("Sent") + 5;
        tail[sent..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(sent_by("7174:1000") >= 300_000, "{stats}");
    assert!(sent_by("7174:1000") > 10 * sent_by("7174:2"), "{stats}");
}
