//! Issue 12: refresh reduction between two hosts. The `server` and `client` examples run in
//! two network namespaces with `--refresh-period 300` (ms); `tshark` captures the signaling on
//! the veth. With RFC 2961 on both ends, the capture must show Path and Resv carrying
//! MESSAGE_ID, acknowledgements (ACK messages or MESSAGE_ID_ACK objects), and Srefresh
//! messages carrying the message ids in place of full refreshes — all with the
//! Refresh-Reduction-Capable flag, all dissected without warnings — and the reservation must
//! stay up while the refreshes are summaries.
//!
//! Needs root (namespaces, capture) and tshark: without them the test says why and returns,
//! unless QTOQ_REQUIRE_PRIVILEGED=1, when it fails.
#![cfg(feature = "tc")]

mod capture_support;
mod example_support;
mod netns_support;
mod process_support;

use capture_support::{max_severity, tshark_or_skip, Capture, PI_WARN, RSVP_FILTER};
use example_support::{build_examples, Process, Scratch};
use netns_support::{Namespaces, CLIENT_IP, SERVER_IF, SERVER_IP};

const PORT: u16 = 5004;

/// One dissected RSVP message.
#[derive(Debug)]
struct Seen {
    src: String,
    msg: u8,
    flags: u8,
    message_id: bool,
    acked: bool,
    listed: usize,
    max_severity: u32,
    malformed: bool,
}

fn dissect(capture: &Capture) -> Vec<Seen> {
    let fields = [
        "ip.src",
        "rsvp.msg",
        "rsvp.flags",
        "rsvp.message_id.message_id",
        "rsvp.message_id_ack.message_id",
        "rsvp.message_id_list.message_id",
        "_ws.expert.severity",
        "_ws.malformed",
    ];
    capture
        .fields(Some("rsvp"), &fields)
        .into_iter()
        .map(|f| {
            let hex = f[2].trim_start_matches("0x");
            Seen {
                src: f[0].clone(),
                msg: f[1].parse().unwrap_or_else(|_| panic!("not rsvp: {f:?}")),
                flags: u8::from_str_radix(hex, 16).unwrap_or(0),
                message_id: !f[3].is_empty(),
                acked: !f[4].is_empty(),
                listed: f[5].split(',').filter(|v| !v.is_empty()).count(),
                max_severity: max_severity(&f[6]),
                malformed: !f[7].is_empty(),
            }
        })
        .collect()
}

#[test]
fn examples_with_a_short_refresh_period_use_summary_refreshes() {
    let Some(ns) = Namespaces::create() else {
        return;
    };
    if !tshark_or_skip() {
        return;
    }
    let (server_bin, client_bin) = build_examples();
    let scratch = Scratch::new("refresh-reduction");
    let mut capture = Capture::start_on(Some(&ns.server), SERVER_IF, RSVP_FILTER, 2000);
    let listen = format!("{SERVER_IP}:{PORT}");
    let mut server = Process::spawn(
        "server",
        scratch.path(),
        &ns.server,
        &server_bin,
        &["--listen", &listen, "--refresh-period", "300"],
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
            "--refresh-period",
            "300",
            "--rate",
            "100000",
            "--seconds",
            "5",
        ],
    );
    let status = client.wait();
    let logs = || format!("server:\n{}\nclient:\n{}", server.log(), client.log());
    assert!(status.success(), "client: {status}\n{}", logs());
    assert!(
        client.log().contains("Established"),
        "no reservation:\n{}",
        logs()
    );
    assert!(
        !client.log().contains("Expired") && !server.log().contains("Expired"),
        "state expired while refreshed by summaries:\n{}",
        logs()
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    capture.stop();

    let seen = dissect(&capture);
    let ours: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.src == SERVER_IP || s.src == CLIENT_IP)
        .collect();
    let with_id = |msg: u8| ours.iter().any(|s| s.msg == msg && s.message_id);
    assert!(with_id(1), "no Path with MESSAGE_ID: {ours:#?}");
    assert!(with_id(2), "no Resv with MESSAGE_ID: {ours:#?}");
    assert!(
        ours.iter().any(|s| s.acked),
        "no MESSAGE_ID_ACK (in an ACK or piggybacked): {ours:#?}"
    );
    let srefresh: Vec<&&Seen> = ours.iter().filter(|s| s.msg == 15).collect();
    assert!(
        srefresh.len() >= 4 && srefresh.iter().all(|s| s.listed >= 1),
        "too few Srefresh messages with a MESSAGE_ID_LIST in 5 s at R = 300 ms: {ours:#?}"
    );
    for s in &ours {
        assert!(
            s.flags & 0x01 != 0,
            "not flagged refresh-reduction capable: {s:?}"
        );
        assert!(
            s.max_severity < PI_WARN && !s.malformed,
            "tshark warns: {s:?}"
        );
    }
    // Summaries replace full refreshes: far fewer full Paths and Resvs than Srefreshes.
    let full = ours.iter().filter(|s| s.msg == 1 || s.msg == 2).count();
    assert!(
        full < srefresh.len(),
        "{full} full Path/Resv against {} Srefresh: {ours:#?}",
        srefresh.len()
    );
    eprintln!(
        "{} RSVP messages: {full} full Path/Resv, {} Srefresh",
        ours.len(),
        srefresh.len()
    );
}
