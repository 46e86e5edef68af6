//! The signaling on the wire, as Wireshark sees it: capture two agents talking over loopback
//! (UDP encapsulation and raw IP), dissect, and check the messages and their fields.

mod agent_util;
mod capture_support;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_util::*;
use capture_support::{max_severity, Capture, PI_WARN};
use qtoq::agent::Transport;
use qtoq::Agent;

/// One dissected RSVP message.
#[derive(Debug)]
struct Dissected {
    src: IpAddr,
    dst: IpAddr,
    router_alert: bool,
    msg: u8,
    session: Option<SocketAddr>,
    proto: String,
    sender: Option<SocketAddr>,
    tspec_rate: String,
    flowspec_rate: String,
    style: String,
    max_severity: u32,
    malformed: bool,
}

fn dissect(capture: &Capture) -> Vec<Dissected> {
    let fields = [
        "ip.src",
        "ip.dst",
        "ip.opt.type",
        "rsvp.msg",
        "rsvp.session.ip",
        "rsvp.session.port",
        "rsvp.session.proto",
        "rsvp.sender.ip",
        "rsvp.sender.port",
        "rsvp.tspec.token_bucket_rate",
        "rsvp.flowspec.token_bucket_rate",
        "rsvp.style.style",
        "_ws.expert.severity",
        "_ws.malformed",
    ];
    capture
        .fields(None, &fields)
        .into_iter()
        .map(|f| {
            let addr =
                |ip: &str, port: &str| Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?));
            Dissected {
                src: f[0].parse().expect("ip.src"),
                dst: f[1].parse().expect("ip.dst"),
                router_alert: f[2].split(',').any(|t| t == "148"),
                msg: f[3].parse().unwrap_or_else(|_| panic!("not rsvp: {f:?}")),
                session: addr(&f[4], &f[5]),
                proto: f[6].to_owned(),
                sender: addr(&f[7], &f[8]),
                tspec_rate: f[9].to_owned(),
                flowspec_rate: f[10].to_owned(),
                style: f[11].to_owned(),
                max_severity: max_severity(&f[12]),
                malformed: !f[13].is_empty(),
            }
        })
        .collect()
}

fn tshark_available() -> bool {
    let tshark = Command::new("tshark")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // Capturing needs root (or the capture capabilities given to dumpcap).
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    tshark && root
}

async fn capture_flow(transport: Transport, filter_proto: &str) {
    let agent = || {
        Agent::builder()
            .transport(transport.clone())
            .local_addr(unique_loopback())
            .build()
            .expect("agent")
    };
    let (server_agent, client_agent) = (agent(), agent());
    let server_ip = addr_of(&server_agent);
    let mut capture = Capture::start(None, &format!("({filter_proto}) and host {server_ip}"), 500);
    let (server, client) = cross_agent_flow(&server_agent, &client_agent).await;
    // Let the last datagrams reach the capture before stopping it.
    tokio::time::sleep(Duration::from_millis(300)).await;
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
        // RFC 2961 Ack and Srefresh messages (acknowledging the ResvConf, say) name no
        // session.
        if [13, 15].contains(&m.msg) {
            continue;
        }
        // Every message is about this connection's session: data flows server -> client.
        assert_eq!(m.session, Some(client), "{m:?}");
        assert_eq!(m.proto, "6", "{m:?}");
    }
    let path = find(1);
    assert_eq!((path.src, path.dst), (server.ip(), client.ip()));
    assert_eq!(path.sender, Some(server));
    assert_eq!(path.tspec_rate, "500000");
    let resv = find(2);
    assert_eq!((resv.src, resv.dst), (client.ip(), server.ip()));
    assert_eq!(
        resv.sender,
        Some(server),
        "Resv FILTER_SPEC names the sender"
    );
    assert_eq!(resv.flowspec_rate, "500000");
    assert_eq!(resv.style, "0x00000a", "fixed-filter style");
    let path_tear = find(5);
    assert_eq!((path_tear.src, path_tear.dst), (server.ip(), client.ip()));
    let resv_tear = find(6);
    assert_eq!((resv_tear.src, resv_tear.dst), (client.ip(), server.ip()));
    if matches!(transport, Transport::Raw) {
        assert!(
            path.router_alert,
            "raw Path carries the Router Alert option"
        );
        assert!(
            path_tear.router_alert,
            "raw PathTear carries the Router Alert option"
        );
        assert!(!resv.router_alert, "Resv goes hop by hop, no Router Alert");
    }
}

#[tokio::test]
async fn udp_signaling_dissects_cleanly() {
    if !privileged("tshark with capture rights", tshark_available()) {
        return;
    }
    capture_flow(Transport::udp(), "udp port 1698").await;
}

#[tokio::test]
async fn raw_signaling_dissects_cleanly() {
    if !privileged("tshark with capture rights", tshark_available()) {
        return;
    }
    capture_flow(Transport::Raw, "ip proto 46").await;
}
