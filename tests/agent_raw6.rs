//! Raw IPv6 transport end to end: two agents on raw IP protocol 46 over IPv6 run the RSVP
//! flow, and a tshark capture shows Path and PathTear carrying the Hop-by-Hop Router Alert
//! option with value 1 ("RSVP", RFC 2711), Resv without it, all dissecting without warnings.
//!
//! IPv6 loopback has only `::1`, and two raw agents need an address each, so the test creates
//! a network namespace of its own (`qtoq6-<pid>-<n>`), gives its `lo` two `fd00::` addresses,
//! and runs the agents on a thread that entered it (`setns` on that thread only, so parallel
//! tests are unaffected). A Drop guard deletes the namespace even when an assertion fails.
//! Needs root (CAP_NET_RAW, CAP_SYS_ADMIN, tshark capture): without it the test says why and
//! returns, unless QTOQ_REQUIRE_PRIVILEGED=1, when it fails.

mod agent_util;
mod capture_support;
mod netns_support;

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agent_util::{cross_agent_flow, privileged};
use capture_support::{max_severity, Capture, PI_WARN};
use netns_support::run;
use qtoq::agent::Transport;
use qtoq::Agent;

const SERVER_IP: &str = "fd00:5eed::1";
const CLIENT_IP: &str = "fd00:5eed::2";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    run(&["id", "-u"]).is_ok_and(|uid| uid.trim() == "0")
}

/// A namespace with `lo` up and the two test addresses on it; deleted on drop.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create() -> Namespace {
        let name = format!(
            "qtoq6-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]).unwrap_or_else(|e| panic!("{e}"));
        // From here on the guard owns the namespace.
        let ns = Namespace { name };
        for ip in [SERVER_IP, CLIENT_IP] {
            let cidr = format!("{ip}/128");
            run(&[
                "ip", "-n", &ns.name, "addr", "add", &cidr, "dev", "lo", "nodad",
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        }
        run(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]).unwrap_or_else(|e| panic!("{e}"));
        ns
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Err(e) = run(&["ip", "netns", "del", &self.name]) {
            eprintln!("could not delete namespace {}: {e}", self.name);
        }
    }
}

/// One dissected RSVP message.
#[derive(Debug)]
struct Dissected {
    src: IpAddr,
    dst: IpAddr,
    hop_limit: u8,
    /// Values of the IPv6 Router Alert options present (none: no option).
    router_alert: Vec<u16>,
    msg: u8,
    send_ttl: u8,
    session: String,
    max_severity: u32,
    malformed: bool,
}

fn dissect(capture: &Capture) -> Vec<Dissected> {
    let fields = [
        "ipv6.src",
        "ipv6.dst",
        "ipv6.hlim",
        "ipv6.opt.router_alert",
        "rsvp.msg",
        "rsvp.sending_ttl",
        "rsvp.session.destination_address",
        "_ws.expert.severity",
        "_ws.malformed",
    ];
    capture
        .fields(None, &fields)
        .into_iter()
        .map(|f| Dissected {
            src: f[0].parse().unwrap_or_else(|_| panic!("ipv6.src: {f:?}")),
            dst: f[1].parse().unwrap_or_else(|_| panic!("ipv6.dst: {f:?}")),
            hop_limit: f[2].parse().unwrap_or_else(|_| panic!("hlim: {f:?}")),
            router_alert: f[3]
                .split(',')
                .filter(|v| !v.is_empty())
                .map(|v| v.parse().unwrap_or_else(|_| panic!("router alert: {f:?}")))
                .collect(),
            msg: f[4].parse().unwrap_or_else(|_| panic!("not rsvp: {f:?}")),
            send_ttl: f[5].parse().unwrap_or_else(|_| panic!("send ttl: {f:?}")),
            session: f[6].to_owned(),
            max_severity: max_severity(&f[7]),
            malformed: !f[8].is_empty(),
        })
        .collect()
}

fn tshark_installed() -> bool {
    Command::new("tshark")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn raw_ipv6_agents_signal_with_hop_by_hop_router_alert() {
    if !privileged("root (network namespace, raw sockets)", is_root())
        || !privileged("tshark", tshark_installed())
    {
        return;
    }
    let ns = Namespace::create();
    let mut capture = Capture::start(Some(&ns.name), "ip6 protochain 46", 200);
    let ns_path = ns.path();
    let flow = std::thread::spawn(move || {
        qtoq::enforce::enter_network_namespace(&ns_path).expect("setns into the test namespace");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let raw_agent = |ip: &str| {
                Agent::builder()
                    .transport(Transport::Raw)
                    .local_addr(ip.parse().unwrap())
                    .build()
                    .expect("raw ipv6 agent")
            };
            let (server_agent, client_agent) = (raw_agent(SERVER_IP), raw_agent(CLIENT_IP));
            let addrs = cross_agent_flow(&server_agent, &client_agent).await;
            let server_stats = server_agent.stats().await.unwrap();
            let client_stats = client_agent.stats().await.unwrap();
            // The messages crossed the raw sockets (not same-agent delivery) and all decoded.
            assert!(client_stats.engine.received >= 2, "{client_stats:?}");
            assert!(server_stats.engine.received >= 2, "{server_stats:?}");
            for stats in [&server_stats, &client_stats] {
                assert_eq!(stats.engine.malformed, 0, "{stats:?}");
                assert_eq!(stats.transport_malformed, 0, "{stats:?}");
                assert_eq!(stats.send_errors, 0, "{stats:?}");
            }
            addrs
        })
    });
    let (server, client) = match flow.join() {
        Ok(addrs) => addrs,
        Err(panic) => std::panic::resume_unwind(panic),
    };
    // Let the last datagrams reach the capture file.
    std::thread::sleep(Duration::from_millis(300));
    capture.stop();
    let messages = dissect(&capture);
    eprintln!("{messages:#?}");
    let find = |msg: u8| {
        messages
            .iter()
            .find(|m| m.msg == msg)
            .unwrap_or_else(|| panic!("no rsvp message type {msg} in {messages:#?}"))
    };
    for m in &messages {
        assert!(!m.malformed, "malformed: {m:?}");
        assert!(m.max_severity < PI_WARN, "expert warning: {m:?}");
        assert_eq!(m.session, client.ip().to_string(), "{m:?}");
        // The IPv6 hop limit is the common header's Send_TTL (no router in between).
        assert_eq!(m.hop_limit, m.send_ttl, "{m:?}");
    }
    let path = find(1);
    assert_eq!((path.src, path.dst), (server.ip(), client.ip()));
    assert_eq!(path.router_alert, [1], "Path carries Router Alert = RSVP");
    let path_tear = find(5);
    assert_eq!((path_tear.src, path_tear.dst), (server.ip(), client.ip()));
    assert_eq!(
        path_tear.router_alert,
        [1],
        "PathTear carries Router Alert = RSVP"
    );
    let resv = find(2);
    assert_eq!((resv.src, resv.dst), (client.ip(), server.ip()));
    assert!(
        resv.router_alert.is_empty(),
        "Resv goes hop by hop, no Router Alert: {resv:?}"
    );
}
