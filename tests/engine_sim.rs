//! Two hosts joined by a simulated network with a virtual clock: setup, soft-state refresh
//! and expiry, teardown, errors, duplicates/reordering, loss and restarts. Every scenario
//! asserts the exact events and rule actions.

mod engine_support;

use std::time::Duration;

use engine_support::*;
use qtoq::engine::{Event, RuleAction, RuleFailure, SessionId, Style, DEFAULT_PEER_WAIT};
use qtoq::flow::Flow;
use qtoq::wire::intserv::TokenBucket;
use qtoq::wire::{
    ErrorCode, FilterSpec, Message, RsvpError, RsvpHop, Session, Style as WireStyle, TimeValues,
};

const PATH: u8 = 1;
const RESV: u8 = 2;
const SREFRESH: u8 = 15;
const R: Duration = Duration::from_secs(30);
/// L = (K + 0.5) · 1.5 · R with K = 3.
const L: Duration = Duration::from_millis(157_500);
const TICK: Duration = Duration::from_millis(1);

fn established_pair() -> (Flow2, qtoq::engine::SessionId, qtoq::engine::SessionId) {
    let mut f = two_hosts(11);
    let (s, c) = f.setup(40_000);
    f.net.run_for(Duration::from_secs(1));
    (f, s, c)
}

#[test]
fn setup_of_the_signaled_flow_gives_exact_events_and_one_install() {
    let (f, s, c) = established_pair();
    let receiver = sock(v4(2), 40_000);
    let server = &f.net.nodes[f.server];
    let client = &f.net.nodes[f.client];
    assert_eq!(
        server.events_of(s),
        vec![
            Event::ResvReceived {
                flowspec: flowspec(),
                style: Style::FixedFilter
            },
            Event::Established {
                flowspec: flowspec()
            },
        ]
    );
    assert_eq!(
        client.events_of(c),
        vec![
            Event::PathReceived {
                sender: f.sender,
                tspec: tspec()
            },
            Event::Confirmed {
                flowspec: flowspec()
            },
            Event::Established {
                flowspec: flowspec()
            },
        ]
    );
    assert_eq!(server.actions.len(), 1);
    let RuleAction::Install { session, rule } = &server.actions[0].1 else {
        panic!("expected install: {:?}", server.actions);
    };
    assert_eq!(*session, s);
    assert_eq!(
        rule.flow,
        Flow {
            sender: f.sender,
            receiver,
            protocol: 6
        }
    );
    assert!(client.actions.is_empty(), "the receiver loads no rule");
    // One Path and one Resv did it: the answers stopped the fast retransmissions.
    assert_eq!(f.net.sent.get(&PATH), Some(&1));
    assert_eq!(f.net.sent.get(&RESV), Some(&1));
    // Inspection agrees.
    let info = server.engine.session_info(s).unwrap();
    assert_eq!(info.rules.len(), 1);
    assert!(info.rules[0].installed);
    assert_eq!(info.reservations.len(), 1);
    assert_eq!(info.reservations[0].next_hop, v4(2));
    let info = client.engine.session_info(c).unwrap();
    assert!(info.confirmed);
    assert_eq!(info.paths[0].previous_hop, v4(1));
}

#[test]
fn unsignaled_flow_installs_without_any_message() {
    let mut f = two_hosts(12);
    let flow = Flow {
        sender: f.sender,
        receiver: f.receiver,
        protocol: 6,
    };
    let id = f.net.with(f.server, |e, now| {
        let id = e.open_session(now, key(flow.receiver)).unwrap();
        e.admit_unsignaled(now, id, flow, flowspec()).unwrap();
        id
    });
    f.net.run_for(Duration::from_secs(600));
    let server = &f.net.nodes[f.server];
    assert_eq!(server.install_count(), 1);
    assert_eq!(
        server.events_of(id),
        vec![Event::Established {
            flowspec: flowspec()
        }]
    );
    assert!(f.net.sent.is_empty());
    f.net.with(f.server, |e, now| e.release(now, id));
    f.net.nodes[f.server].assert_rules_balanced();
}

/// As [`established_pair`] with classic refreshes (no RFC 2961 refresh reduction): every
/// refresh is a full Path or Resv.
fn classic_pair() -> (Flow2, qtoq::engine::SessionId, qtoq::engine::SessionId) {
    let mut f = two_hosts_refreshing(11, false);
    let (s, c) = f.setup(40_000);
    f.net.run_for(Duration::from_secs(1));
    (f, s, c)
}

#[test]
fn ten_hours_of_refreshes_without_loss_never_expire() {
    // Classic refreshes: the gaps between full Paths are the refresh intervals (with refresh
    // reduction they are summary refreshes; `engine_reduction.rs` covers those).
    let (mut f, s, c) = classic_pair();
    f.net.run_for(Duration::from_secs(10 * 3600));
    let server = &f.net.nodes[f.server];
    let client = &f.net.nodes[f.client];
    assert_eq!(server.events_of(s).len(), 2, "{:?}", server.events_of(s));
    assert_eq!(client.events_of(c).len(), 3, "{:?}", client.events_of(c));
    assert_eq!(server.actions.len(), 1);
    assert_eq!(server.engine.stats().expired, 0);
    assert_eq!(client.engine.stats().expired, 0);
    // Refreshes every 0.5R..1.5R: about 1200 of each over 10 h.
    let paths = f.net.sent[&PATH];
    let resvs = f.net.sent[&RESV];
    assert!((900..=1500).contains(&paths), "paths: {paths}");
    assert!((900..=1500).contains(&resvs), "resvs: {resvs}");
    // Refresh gaps stay within [0.5R, 1.5R].
    let arrivals = client.received_at(PATH);
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= R / 2 - TICK && gap <= R * 3 / 2 + TICK,
            "gap {gap:?}"
        );
    }
}

/// Classic refreshes go by rounds over the session slab (`round.rs`): each lap refreshes the
/// sessions in slot order (the order they were created in here), which keeps a large
/// engine's refreshes in memory order, and still refreshes every Path and Resv once per
/// `R` on average, never sooner than `R/2` nor later than `3R/2` after the last.
#[test]
fn classic_refreshes_go_in_slot_order_rounds_within_half_to_one_and_a_half_r() {
    const SESSIONS: u16 = 300;
    const LAPS: u32 = 10;
    let mut f = two_hosts_refreshing(17, false);
    for i in 0..SESSIONS {
        f.setup(40_000 + i);
    }
    // Past the first sends and their answers: every state is on the round.
    f.net.run_for(R * 2);
    f.net.trace = Some(Vec::new());
    let start = f.net.now;
    f.net.run_for(R * LAPS);
    let trace = f.net.trace.take().unwrap();
    let port = |payload: &[u8]| {
        let session = session_bytes(payload);
        u16::from_be_bytes([session[10], session[11]])
    };
    let mut sent: std::collections::BTreeMap<(u8, u16), Vec<std::time::Instant>> =
        Default::default();
    let mut path_order = Vec::new();
    for t in trace.iter().filter(|t| !t.delivered) {
        let kind = t.payload[1];
        assert!(kind == PATH || kind == RESV, "only refreshes: {kind}");
        let from = if kind == PATH { f.server } else { f.client };
        assert_eq!(
            t.node, from,
            "Paths from the sender, Resvs from the receiver"
        );
        sent.entry((kind, port(&t.payload))).or_default().push(t.at);
        if kind == PATH {
            path_order.push(port(&t.payload));
        }
    }
    assert_eq!(
        sent.len(),
        2 * usize::from(SESSIONS),
        "every Path and Resv refreshed"
    );
    for ((kind, port), times) in &sent {
        let laps = u32::try_from(times.len()).unwrap();
        assert!(
            (LAPS - 1..=LAPS + 1).contains(&laps),
            "{kind}/{port}: {laps} refreshes in {LAPS} R"
        );
        assert!(times[0] - start <= R * 3 / 2 + TICK, "{kind}/{port}: first");
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= R / 2 - TICK && gap <= R * 3 / 2 + TICK,
                "{kind}/{port}: gap {gap:?}"
            );
        }
    }
    // Slot order: the ports only go down where a lap starts again (with each state's own
    // jittered timer, about every other Path would).
    let descents = path_order.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(
        (LAPS as usize - 1..=LAPS as usize + 1).contains(&descents),
        "{descents} descents in {} Paths",
        path_order.len()
    );
    assert_eq!(f.net.nodes[f.server].engine.stats().expired, 0);
    assert_eq!(f.net.nodes[f.client].engine.stats().expired, 0);
    // With every session released, the round stops within a lap: no timer is left.
    for node in [f.server, f.client] {
        let ids: std::collections::BTreeSet<_> = f.net.nodes[node]
            .events
            .iter()
            .map(|(_, id, _)| *id)
            .collect();
        assert_eq!(ids.len(), usize::from(SESSIONS));
        for id in ids {
            f.net.with(node, |e, now| e.release(now, id));
        }
    }
    f.net.run_for(R * 2);
    for node in [f.server, f.client] {
        let engine = &f.net.nodes[node].engine;
        assert_eq!(engine.session_count(), 0);
        assert_eq!(engine.poll_timeout(), None, "node {node}");
    }
}

/// The refresh round under churn: sessions opened and released while laps run (the table
/// grows mid-lap, freed slots are reused) still have every Path and Resv refreshed within
/// `[R/2, 3R/2]`, and nothing expires.
#[test]
fn classic_refresh_rounds_hold_their_bounds_while_sessions_come_and_go() {
    let mut f = two_hosts_refreshing(23, false);
    let mut open: std::collections::VecDeque<(u16, SessionId, SessionId)> = Default::default();
    let mut next_port = 40_000u16;
    let mut add = |f: &mut Flow2, open: &mut std::collections::VecDeque<_>, n: u16| {
        for _ in 0..n {
            let (s, c) = f.setup(next_port);
            open.push_back((next_port, s, c));
            next_port += 1;
        }
    };
    add(&mut f, &mut open, 100);
    f.net.run_for(R * 2);
    f.net.trace = Some(Vec::new());
    let mut released = std::collections::BTreeSet::new();
    // Every R/4 for 12 R: 12 more sessions, and the 4 oldest released (so the table both
    // grows and reuses slots).
    for _ in 0..48 {
        add(&mut f, &mut open, 12);
        for _ in 0..4 {
            let (port, s, c) = open.pop_front().unwrap();
            f.net.with(f.server, |e, now| e.release(now, s));
            f.net.with(f.client, |e, now| e.release(now, c));
            released.insert(port);
        }
        f.net.run_for(R / 4);
    }
    let trace = f.net.trace.take().unwrap();
    let mut sent: std::collections::BTreeMap<(u8, u16), Vec<std::time::Instant>> =
        Default::default();
    for t in trace.iter().filter(|t| !t.delivered) {
        let kind = t.payload[1];
        if kind == PATH || kind == RESV {
            let session = session_bytes(&t.payload);
            let port = u16::from_be_bytes([session[10], session[11]]);
            sent.entry((kind, port)).or_default().push(t.at);
        }
    }
    let mut checked = 0;
    for ((kind, port), times) in sent.iter().filter(|((_, p), _)| !released.contains(p)) {
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= R / 2 - TICK && gap <= R * 3 / 2 + TICK,
                "{kind}/{port}: gap {gap:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 1000, "{checked} gaps checked");
    // Every session still open was refreshed up to the end: none went a round without.
    let end = f.net.now;
    for (port, _, _) in &open {
        for kind in [PATH, RESV] {
            let last = *sent[&(kind, *port)].last().unwrap();
            assert!(
                end - last <= R * 3 / 2 + TICK,
                "{kind}/{port}: silent since {:?}",
                end - last
            );
        }
    }
    assert_eq!(f.net.nodes[f.server].engine.stats().expired, 0);
    assert_eq!(f.net.nodes[f.client].engine.stats().expired, 0);
}

#[test]
fn twenty_percent_loss_for_an_hour_sets_up_and_never_expires_within_k_minus_1_losses() {
    let mut f = two_hosts(13);
    f.net.set_links(Link {
        loss: 0.2,
        max_consecutive_loss: Some(2), // K − 1
        ..Link::default()
    });
    let sessions: Vec<_> = (0..40).map(|i| f.setup(41_000 + i)).collect();
    let start = f.net.now;
    f.net.run_for(Duration::from_secs(3600));
    let server = &f.net.nodes[f.server];
    let client = &f.net.nodes[f.client];
    let mut fast = 0;
    for (s, c) in &sessions {
        // Server side: Path (≤ 3 tries, 1.5 s) then Resv (≤ 3 tries, 1.5 s more).
        let at = server
            .events
            .iter()
            .find(|(_, id, e)| id == s && matches!(e, Event::Established { .. }))
            .map(|(at, _, _)| *at)
            .expect("server established");
        assert!(
            at - start <= Duration::from_secs(4),
            "server setup took {:?}",
            at - start
        );
        let at = client
            .events
            .iter()
            .find(|(_, id, e)| id == c && matches!(e, Event::Established { .. }))
            .map(|(at, _, _)| *at)
            .expect("client established");
        // The confirmation may need one refresh if both fast tries of it were lost.
        assert!(at - start <= R * 3 / 2 + Duration::from_secs(5));
        if at - start <= Duration::from_secs(4) {
            fast += 1;
        }
        assert!(!server
            .events_of(*s)
            .iter()
            .any(|e| matches!(e, Event::Expired { .. })));
        assert!(!client
            .events_of(*c)
            .iter()
            .any(|e| matches!(e, Event::Expired { .. })));
    }
    assert!(
        fast >= 30,
        "only {fast} of 40 confirmed within the fast retransmissions"
    );
    // (Refresh reduction batches the 40 sessions' refreshes into one Srefresh per period
    // each way, so an hour is only a few hundred datagrams.)
    assert!(
        f.net.dropped.values().sum::<u64>() > 100,
        "loss happened: {:?}",
        f.net.dropped
    );
    assert_eq!(server.install_count(), 40);
    assert_eq!(server.remove_count(), 0);
    assert_eq!(server.engine.stats().expired, 0);
    assert_eq!(client.engine.stats().expired, 0);
}

#[test]
fn uncapped_loss_still_establishes_every_session() {
    let mut f = two_hosts(14);
    f.net.set_links(Link {
        loss: 0.2,
        ..Link::default()
    });
    let sessions: Vec<_> = (0..40).map(|i| f.setup(42_000 + i)).collect();
    f.net.run_for(Duration::from_secs(300));
    for (s, c) in sessions {
        assert!(f.net.nodes[f.server]
            .events_of(s)
            .iter()
            .any(|e| matches!(e, Event::Established { .. })));
        assert!(f.net.nodes[f.client]
            .events_of(c)
            .iter()
            .any(|e| matches!(e, Event::Established { .. })));
    }
}

#[test]
fn silent_receiver_expires_the_reservation_after_l_within_one_tick() {
    let (mut f, s, _c) = established_pair();
    f.net.run_for(Duration::from_secs(100));
    // The client goes silent (its messages no longer reach the server).
    f.net.set_link(f.client, f.server, Link::down());
    let silent_from = f.net.now;
    f.net.run_for(Duration::from_secs(400));
    let server = &f.net.nodes[f.server];
    // The last refresh of the reservation: a Resv, or (RFC 2961) an Srefresh naming it.
    let last_resv = *server
        .received_at(RESV)
        .iter()
        .chain(&server.received_at(SREFRESH))
        .filter(|at| **at <= silent_from)
        .max()
        .unwrap();
    let removed_at = server
        .actions
        .iter()
        .find(|(_, a)| matches!(a, RuleAction::Remove { .. }))
        .map(|(at, _)| *at)
        .expect("rule removed");
    assert!(
        removed_at >= last_resv + L,
        "expired early: {:?}",
        removed_at - last_resv
    );
    assert!(
        removed_at <= last_resv + L + TICK,
        "expired late: {:?}",
        removed_at - last_resv
    );
    assert_eq!(
        server.events_of(s).last(),
        Some(&Event::Expired {
            reason: "reservation state expired (no resv refresh)".into()
        })
    );
    assert_eq!(server.remove_count(), 1);
    assert_eq!(server.engine.rule_count(), 0);
}

#[test]
fn silent_sender_expires_the_path_state_at_the_receiver() {
    let (mut f, s, c) = established_pair();
    f.net.set_link(f.server, f.client, Link::down());
    let silent_from = f.net.now;
    f.net.run_for(Duration::from_secs(400));
    let client = &f.net.nodes[f.client];
    let last_path = *client.received_at(PATH).iter().max().unwrap();
    assert!(last_path <= silent_from);
    let (expired_at, _, event) = client
        .events
        .iter()
        .find(|(_, id, e)| *id == c && matches!(e, Event::Expired { .. }))
        .expect("path state expired")
        .clone();
    assert!(expired_at >= last_path + L && expired_at <= last_path + L + TICK);
    assert_eq!(
        event,
        Event::Expired {
            reason: format!("path state of sender {} expired", f.sender)
        }
    );
    // With no path state the client stops sending Resvs, so the server's reservation
    // expires too and its rule goes.
    let server = &f.net.nodes[f.server];
    assert_eq!(server.remove_count(), 1);
    assert!(matches!(
        server.events_of(s).last(),
        Some(Event::Expired { .. })
    ));
}

#[test]
fn path_tear_reaches_the_receiver_and_removes_the_rule() {
    let (mut f, s, c) = established_pair();
    f.net.with(f.server, |e, now| e.release(now, s));
    f.net.run_for(Duration::from_secs(1));
    let server = &f.net.nodes[f.server];
    let client = &f.net.nodes[f.client];
    assert_eq!(server.remove_count(), 1);
    assert_eq!(
        server.events_of(s).last(),
        Some(&Event::TornDown {
            reason: "released by the local owner".into()
        })
    );
    assert_eq!(
        client.events_of(c).last(),
        Some(&Event::TornDown {
            reason: format!("path torn down by sender {}", f.sender)
        })
    );
    assert_eq!(server.engine.session_count(), 0);
    assert_eq!(client.path_count(c), 0);
    f.net.with(f.client, |e, now| e.release(now, c));
    f.net.run_for(Duration::from_secs(600));
    assert_eq!(f.net.nodes[f.client].engine.session_count(), 0);
    f.net.nodes[f.server].assert_rules_balanced();
}

#[test]
fn resv_tear_removes_the_rule_at_once() {
    let (mut f, s, c) = established_pair();
    f.net.with(f.client, |e, now| e.release(now, c));
    f.net.run_for(Duration::from_millis(100));
    let server = &f.net.nodes[f.server];
    assert_eq!(server.remove_count(), 1);
    assert_eq!(
        server.events_of(s).last(),
        Some(&Event::TornDown {
            reason: format!("reservation torn down by {}", v4(2))
        })
    );
    // The sender keeps its Path up; the client host keeps the path state without an owner.
    f.net.run_for(Duration::from_secs(600));
    assert_eq!(f.net.nodes[f.server].install_count(), 1);
    assert_eq!(f.net.nodes[f.client].engine.session_count(), 1);
    f.net.with(f.server, |e, now| e.release(now, s));
    f.net.run_for(Duration::from_secs(1));
    assert_eq!(f.net.nodes[f.client].engine.session_count(), 0);
    f.net.nodes[f.server].assert_rules_balanced();
}

#[test]
fn admission_denied_reaches_the_receiver_with_the_reason() {
    let mut f = two_hosts(15);
    f.net.nodes[f.server].gate.deny_with(
        RsvpError::BANDWIDTH_UNAVAILABLE,
        "requested bandwidth unavailable",
    );
    let (s, c) = f.setup(40_000);
    f.net.run_for(Duration::from_secs(300));
    let server = &f.net.nodes[f.server];
    let client = &f.net.nodes[f.client];
    assert_eq!(
        server.events_of(s),
        vec![
            Event::ResvReceived {
                flowspec: flowspec(),
                style: Style::FixedFilter
            },
            Event::AdmissionDenied {
                error: RsvpError::BANDWIDTH_UNAVAILABLE,
                reason: "requested bandwidth unavailable".into()
            },
        ]
    );
    assert_eq!(
        client.events_of(c),
        vec![
            Event::PathReceived {
                sender: f.sender,
                tspec: tspec()
            },
            Event::ResvError {
                error: RsvpError::BANDWIDTH_UNAVAILABLE,
                node: v4(1)
            },
            Event::AdmissionDenied {
                error: RsvpError::BANDWIDTH_UNAVAILABLE,
                reason: "refused by 10.0.0.1".into()
            },
        ]
    );
    assert_eq!(server.install_count(), 0);
    // Resources freed: a modified request is admitted and established.
    f.net.nodes[f.server].gate.allow();
    let smaller = flowspec_rate(50_000.0);
    f.net
        .with(f.client, |e, now| {
            e.reserve(now, c, Style::FixedFilter, smaller, true)
        })
        .unwrap();
    f.net.run_for(Duration::from_secs(1));
    assert_eq!(
        f.net.nodes[f.client].events_of(c).last(),
        Some(&Event::Established { flowspec: smaller })
    );
    assert_eq!(f.net.nodes[f.server].install_count(), 1);
}

#[test]
fn enforcer_failure_is_a_resv_err_21_and_an_install_remove_pair() {
    let mut f = two_hosts(16);
    f.net.nodes[f.server].fail_rules = Some(RuleFailure {
        error: RsvpError::SERVICE_UNSUPPORTED,
        reason: "cannot express the rule".into(),
    });
    let (s, c) = f.setup(40_000);
    f.net.run_for(Duration::from_secs(100));
    let server = &f.net.nodes[f.server];
    assert_eq!(server.install_count(), 1);
    assert_eq!(server.remove_count(), 1);
    assert_eq!(
        server.events_of(s).last(),
        Some(&Event::ResvError {
            error: RsvpError::SERVICE_UNSUPPORTED,
            node: v4(1)
        })
    );
    assert_eq!(
        f.net.nodes[f.client].events_of(c).last(),
        Some(&Event::ResvError {
            error: RsvpError::SERVICE_UNSUPPORTED,
            node: v4(1)
        })
    );
    server.assert_rules_balanced();
}

fn resv_bytes(session_port: u16, style: WireStyle, sender: std::net::SocketAddr) -> Vec<u8> {
    Message::resv(
        Session::new(sock(v4(2), session_port), 6),
        RsvpHop::new(v4(9), 0),
        TimeValues::new(R),
        style,
        flowspec(),
        &[FilterSpec::new(sender)],
    )
    .encode()
    .unwrap()
}

/// The error codes of the ResvErrs the server sent in answer to injected messages (all to
/// the stranger).
fn resv_err_codes(f: &mut Flow2) -> Vec<ErrorCode> {
    let mut codes = Vec::new();
    while let Some(t) = f.net.nodes[f.server].engine.poll_transmit() {
        let msg = Message::decode(&t.payload).unwrap();
        if let Some(e) = msg.error_spec() {
            codes.push(e.code);
            assert_eq!(t.destination, v4(9));
        }
    }
    codes
}

#[test]
fn impossible_resvs_are_answered_with_the_rfc_errors() {
    let (mut f, _s, _c) = established_pair();
    let stranger = v4(9);
    let rejected = f.net.nodes[f.server].engine.stats().rejected;
    // No path state for this session: code 3.
    let now = f.net.now;
    let bytes = resv_bytes(1, WireStyle::FixedFilter, f.sender);
    f.net.nodes[f.server].engine.handle_datagram(
        now,
        qtoq::engine::Incoming {
            source: stranger,
            destination: v4(1),
            ttl: Some(64),
            payload: &bytes,
        },
    );
    // A sender this host does not have: code 4.
    let bytes = resv_bytes(40_000, WireStyle::FixedFilter, sock(v4(1), 9999));
    f.net.nodes[f.server].engine.handle_datagram(
        now,
        qtoq::engine::Incoming {
            source: stranger,
            destination: v4(1),
            ttl: Some(64),
            payload: &bytes,
        },
    );
    // A style that conflicts with the client's FF reservation: code 5.
    let bytes = resv_bytes(40_000, WireStyle::SharedExplicit, f.sender);
    f.net.nodes[f.server].engine.handle_datagram(
        now,
        qtoq::engine::Incoming {
            source: stranger,
            destination: v4(1),
            ttl: Some(64),
            payload: &bytes,
        },
    );
    // An unknown style (option vector 0): code 6, answered from what could be read.
    let mut bytes = resv_bytes(40_000, WireStyle::FixedFilter, f.sender);
    let style_at = bytes
        .windows(4)
        .position(|w| w == [0, 8, 8, 1])
        .expect("style object");
    bytes[style_at + 4..style_at + 8].copy_from_slice(&[0, 0, 0, 0]);
    bytes[2..4].copy_from_slice(&[0, 0]);
    f.net.nodes[f.server].engine.handle_datagram(
        now,
        qtoq::engine::Incoming {
            source: stranger,
            destination: v4(1),
            ttl: Some(64),
            payload: &bytes,
        },
    );
    // A ResvErr is a few bytes longer than the one-filter Resv it answers: over the Resv's
    // budget, it is held back for the next timeout (due at once), not dropped.
    assert_eq!(
        f.net.nodes[f.server].engine.poll_timeout(),
        Some(now),
        "answers held back"
    );
    f.net.nodes[f.server].engine.handle_timeout(now);
    // (The code 6 answer, without a flow descriptor, fitted and went first.)
    let mut codes = resv_err_codes(&mut f);
    codes.sort_by_key(|c| c.0);
    assert_eq!(
        codes,
        [
            ErrorCode::NO_PATH_INFORMATION,
            ErrorCode::NO_SENDER_INFORMATION,
            ErrorCode::CONFLICTING_RESERVATION_STYLE,
            ErrorCode::UNKNOWN_RESERVATION_STYLE,
        ]
    );
    let stats = f.net.nodes[f.server].engine.stats();
    assert_eq!(stats.rejected, rejected + 4);
    assert_eq!(stats.malformed, 1);
    // Nothing changed for the real reservation.
    assert_eq!(f.net.nodes[f.server].install_count(), 1);
    assert_eq!(f.net.nodes[f.server].remove_count(), 0);
}

#[test]
fn unknown_class_and_ctype_in_a_path_are_answered_with_path_err_13_and_14() {
    let mut f = two_hosts(17);
    let (s, _c) = f.setup(40_000);
    f.net.run_for(Duration::from_secs(1));
    let path = Message::path(
        Session::new(sock(v4(2), 40_000), 6),
        RsvpHop::new(v4(1), 0),
        TimeValues::new(R),
        FilterSpec::new(f.sender),
        tspec(),
        None,
    )
    .encode()
    .unwrap();
    for (object, code, value) in [
        (
            [0u8, 8, 0x21, 1],
            ErrorCode::UNKNOWN_OBJECT_CLASS,
            0x2101u16,
        ),
        ([0u8, 8, 5, 9], ErrorCode::UNKNOWN_OBJECT_C_TYPE, 0x0509),
    ] {
        let mut bytes = path.clone();
        if object[2] == 5 {
            // Replace TIME_VALUES' C-Type 1 by 9.
            let at = bytes.windows(4).position(|w| w == [0, 8, 5, 1]).unwrap();
            bytes[at + 3] = 9;
        } else {
            bytes.extend_from_slice(&object);
            bytes.extend_from_slice(&[0, 0, 0, 0]);
            let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
            bytes[6..8].copy_from_slice(&len);
        }
        bytes[2..4].copy_from_slice(&[0, 0]);
        f.net.inject(f.client, v4(1), &bytes);
        f.net.run_for(Duration::from_millis(100));
        assert_eq!(
            f.net.nodes[f.server].events_of(s).last(),
            Some(&Event::PathError {
                error: RsvpError::new(code, value),
                node: v4(2)
            })
        );
    }
    assert_eq!(f.net.nodes[f.client].engine.stats().malformed, 2);
    assert_eq!(f.net.nodes[f.client].engine.stats().errors_sent, 2);
}

#[test]
fn duplicated_and_reordered_messages_change_nothing() {
    let mut f = two_hosts(18);
    f.net.set_links(Link {
        delay: Duration::from_millis(20),
        jitter: Duration::from_millis(200),
        duplicate: 0.5,
        ..Link::default()
    });
    let sessions: Vec<_> = (0..20).map(|i| f.setup(43_000 + i)).collect();
    f.net.run_for(Duration::from_secs(3600));
    let server = &f.net.nodes[f.server];
    let client = &f.net.nodes[f.client];
    for (s, c) in &sessions {
        assert_eq!(
            server.events_of(*s),
            vec![
                Event::ResvReceived {
                    flowspec: flowspec(),
                    style: Style::FixedFilter
                },
                Event::Established {
                    flowspec: flowspec()
                },
            ]
        );
        assert_eq!(
            client.events_of(*c),
            vec![
                Event::PathReceived {
                    sender: f.sender,
                    tspec: tspec()
                },
                Event::Confirmed {
                    flowspec: flowspec()
                },
                Event::Established {
                    flowspec: flowspec()
                },
            ]
        );
    }
    assert_eq!(server.install_count(), 20);
    assert_eq!(server.remove_count(), 0);
    // Teardown with duplicates: every rule removed exactly once (the harness checks).
    for (s, c) in &sessions {
        let (s, c) = (*s, *c);
        f.net.with(f.server, |e, now| e.release(now, s));
        f.net.with(f.client, |e, now| e.release(now, c));
    }
    f.net.run_for(Duration::from_secs(600));
    f.net.nodes[f.server].assert_rules_balanced();
    assert_eq!(f.net.nodes[f.server].engine.session_count(), 0);
    assert_eq!(f.net.nodes[f.client].engine.session_count(), 0);
}

#[test]
fn restarted_receiver_recovers_on_the_next_path_refresh() {
    let (mut f, s, _c) = established_pair();
    f.net.run_for(Duration::from_secs(50));
    f.net.restart(f.client, config(99));
    let restarted = f.net.now;
    // The receiving application comes back and asks again.
    let k = key(sock(v4(2), 40_000));
    let c = f.net.with(f.client, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.reserve(now, id, Style::FixedFilter, flowspec(), true)
            .unwrap();
        id
    });
    f.net.run_for(R * 2);
    let client = &f.net.nodes[f.client];
    let (at, _, _) = client
        .events
        .iter()
        .find(|(_, id, e)| *id == c && matches!(e, Event::Established { .. }))
        .expect("re-established")
        .clone();
    assert!(at - restarted <= R * 3 / 2 + Duration::from_secs(1));
    // The server's next Path refresh came later than the peer wait: the restarted receiver
    // said so first, then established as usual.
    let path_at = client
        .events
        .iter()
        .find(|(_, id, e)| *id == c && matches!(e, Event::PathReceived { .. }))
        .map(|(at, _, _)| *at)
        .expect("path received");
    assert!(path_at - restarted > DEFAULT_PEER_WAIT);
    assert_eq!(client.events_of(c), late_sender_events(f.sender));
    // The server never lost its reservation.
    let server = &f.net.nodes[f.server];
    assert_eq!(server.remove_count(), 0);
    assert_eq!(server.events_of(s).len(), 2);
}

#[test]
fn restarted_sender_recovers_on_the_next_resv_refresh() {
    let (mut f, _s, c) = established_pair();
    f.net.run_for(Duration::from_secs(50));
    f.net.restart(f.server, config(98));
    let restarted = f.net.now;
    let k = key(sock(v4(2), 40_000));
    let sender = f.sender;
    let s = f.net.with(f.server, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.add_sender(now, id, sender, tspec()).unwrap();
        id
    });
    f.net.run_for(R * 2);
    let server = &f.net.nodes[f.server];
    let (at, _, _) = server
        .events
        .iter()
        .find(|(_, id, e)| *id == s && matches!(e, Event::Established { .. }))
        .expect("re-established")
        .clone();
    assert!(at - restarted <= R * 3 / 2 + Duration::from_secs(1));
    // The client's next Resv refresh came later than the peer wait: the restarted sender
    // said so first, then the late Resv established as usual.
    assert!(at - restarted > DEFAULT_PEER_WAIT);
    assert_eq!(
        server.events_of(s),
        vec![
            Event::NoReceiver {
                waited: DEFAULT_PEER_WAIT
            },
            Event::ResvReceived {
                flowspec: flowspec(),
                style: Style::FixedFilter
            },
            Event::Established {
                flowspec: flowspec()
            },
        ]
    );
    assert_eq!(server.install_count(), 1);
    // The client saw nothing but its first setup.
    assert_eq!(f.net.nodes[f.client].events_of(c).len(), 3);
}

#[test]
fn guaranteed_shared_explicit_and_wildcard_reservations_work() {
    for (i, style) in [Style::SharedExplicit, Style::WildcardFilter]
        .into_iter()
        .enumerate()
    {
        let mut f = two_hosts(20 + i as u64);
        let k = key(f.receiver);
        let gs = qtoq::wire::intserv::FlowSpec::Guaranteed {
            tspec: TokenBucket::new(1e6, 1e4),
            rspec: qtoq::wire::intserv::GuaranteedRspec {
                rate: 2e6,
                slack: 100,
            },
        };
        let c = f.net.with(f.client, |e, now| {
            let id = e.open_session(now, k).unwrap();
            e.reserve(now, id, style, gs, false).unwrap();
            id
        });
        let sender = f.sender;
        let s = f.net.with(f.server, |e, now| {
            let id = e.open_session(now, k).unwrap();
            e.add_sender(now, id, sender, tspec()).unwrap();
            id
        });
        f.net.run_for(Duration::from_secs(5));
        assert_eq!(
            f.net.nodes[f.server].events_of(s),
            vec![
                Event::ResvReceived {
                    flowspec: gs,
                    style
                },
                Event::Established { flowspec: gs },
            ]
        );
        // No confirmation asked: established when the Resv went out.
        assert_eq!(
            f.net.nodes[f.client].events_of(c),
            vec![
                Event::PathReceived {
                    sender: f.sender,
                    tspec: tspec()
                },
                Event::Established { flowspec: gs },
            ]
        );
    }
}

#[test]
fn ipv6_hosts_establish_and_tear_down() {
    use std::net::{IpAddr, Ipv6Addr};
    let a = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let b = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));
    let mut net = Net::new(30);
    let server = net.add("server", a, config(31));
    let client = net.add("client", b, config(32));
    let (sender, receiver) = (sock(a, 8080), sock(b, 40_000));
    let c = net.with(client, |e, now| {
        let id = e.open_session(now, key(receiver)).unwrap();
        e.reserve(now, id, Style::FixedFilter, flowspec(), true)
            .unwrap();
        id
    });
    let s = net.with(server, |e, now| {
        let id = e.open_session(now, key(receiver)).unwrap();
        e.add_sender(now, id, sender, tspec()).unwrap();
        id
    });
    net.run_for(Duration::from_secs(120));
    assert_eq!(
        net.nodes[client].events_of(c),
        vec![
            Event::PathReceived {
                sender,
                tspec: tspec()
            },
            Event::Confirmed {
                flowspec: flowspec()
            },
            Event::Established {
                flowspec: flowspec()
            },
        ]
    );
    assert_eq!(net.nodes[server].install_count(), 1);
    // Mixed families are refused up front.
    let v4_sender = sock(v4(1), 1);
    assert!(net
        .with(server, |e, now| e.add_sender(now, s, v4_sender, tspec()))
        .is_err());
    net.with(server, |e, now| e.release(now, s));
    net.with(client, |e, now| e.release(now, c));
    net.run_for(Duration::from_secs(1));
    net.nodes[server].assert_rules_balanced();
    assert_eq!(net.nodes[server].engine.session_count(), 0);
    assert_eq!(net.nodes[client].engine.session_count(), 0);
}

#[test]
fn unanswered_first_path_is_retransmitted_fast_then_refreshed() {
    let mut f = two_hosts(50);
    // The client host is unreachable: nothing answers.
    f.net.set_link(f.server, f.client, Link::down());
    let start = f.net.now;
    let (s, c) = f.setup(40_000);
    f.net.run_for(Duration::from_secs(60));
    let times: Vec<Duration> = f
        .net
        .sent_log
        .iter()
        .filter(|(_, from, t)| *from == f.server && *t == PATH)
        .map(|(at, _, _)| *at - start)
        .collect();
    // First Path, then 500 ms, 1 s, 2 s later (doubling, 3 times), then refreshes.
    assert_eq!(
        &times[..4],
        &[
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_millis(1500),
            Duration::from_millis(3500)
        ]
    );
    let refresh = times[4] - times[3];
    assert!(refresh >= R / 2 && refresh <= R * 3 / 2, "{refresh:?}");
    // Nobody answered: after the peer wait each end says so, once, and nothing else.
    let server = &f.net.nodes[f.server];
    assert_eq!(
        server.events,
        vec![(
            start + DEFAULT_PEER_WAIT,
            s,
            Event::NoReceiver {
                waited: DEFAULT_PEER_WAIT
            }
        )]
    );
    let client = &f.net.nodes[f.client];
    assert_eq!(
        client.events,
        vec![(
            start + DEFAULT_PEER_WAIT,
            c,
            Event::NoSender {
                waited: DEFAULT_PEER_WAIT
            }
        )]
    );
}

#[test]
fn policy_refusal_is_reported_with_code_2() {
    let mut f = two_hosts(51);
    f.net.nodes[f.server].gate.deny_with(
        RsvpError::new(ErrorCode::POLICY_CONTROL_FAILURE, 5),
        "policy forbids this flow",
    );
    let (s, c) = f.setup(40_000);
    f.net.run_for(Duration::from_secs(10));
    assert_eq!(
        f.net.nodes[f.server].events_of(s).last(),
        Some(&Event::AdmissionDenied {
            error: RsvpError::new(ErrorCode::POLICY_CONTROL_FAILURE, 5),
            reason: "policy forbids this flow".into()
        })
    );
    assert_eq!(
        f.net.nodes[f.client].events_of(c)[1..],
        [
            Event::ResvError {
                error: RsvpError::new(ErrorCode::POLICY_CONTROL_FAILURE, 5),
                node: v4(1)
            },
            Event::AdmissionDenied {
                error: RsvpError::new(ErrorCode::POLICY_CONTROL_FAILURE, 5),
                reason: "refused by 10.0.0.1".into()
            },
        ]
    );
    assert_eq!(f.net.nodes[f.server].install_count(), 0);
}

#[test]
fn a_new_path_after_teardown_is_reserved_confirmed_and_announced_again() {
    let (mut f, s, c) = established_pair();
    f.net.with(f.server, |e, now| e.release(now, s));
    f.net.run_for(Duration::from_secs(5));
    let k = key(sock(v4(2), 40_000));
    let sender = f.sender;
    let s2 = f.net.with(f.server, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.add_sender(now, id, sender, tspec()).unwrap();
        id
    });
    f.net.run_for(Duration::from_secs(5));
    let path = Event::PathReceived {
        sender: f.sender,
        tspec: tspec(),
    };
    let confirmed = Event::Confirmed {
        flowspec: flowspec(),
    };
    let established = Event::Established {
        flowspec: flowspec(),
    };
    assert_eq!(
        f.net.nodes[f.client].events_of(c),
        vec![
            path.clone(),
            confirmed.clone(),
            established.clone(),
            Event::TornDown {
                reason: format!("path torn down by sender {}", f.sender)
            },
            path,
            confirmed,
            established,
        ]
    );
    let server = &f.net.nodes[f.server];
    assert_eq!(server.install_count(), 2);
    assert_eq!(server.remove_count(), 1);
    assert!(matches!(
        server.events_of(s2).last(),
        Some(Event::Established { .. })
    ));
}

// ------------------------------------------------------------------------------------------
// A peer that does not signal (issue 8, point 6): NoSender / NoReceiver after the peer wait.

/// The events of `id` on `node` with the virtual time they were drained at.
fn timed_events(node: &Node, id: qtoq::engine::SessionId) -> Vec<(std::time::Instant, Event)> {
    node.events
        .iter()
        .filter(|(_, s, _)| *s == id)
        .map(|(at, _, e)| (*at, e.clone()))
        .collect()
}

/// What a client whose server signals only after the peer wait sees: told there is no
/// sender, then the usual PATH, confirmation and establishment.
fn late_sender_events(sender: std::net::SocketAddr) -> Vec<Event> {
    vec![
        Event::NoSender {
            waited: DEFAULT_PEER_WAIT,
        },
        Event::PathReceived {
            sender,
            tspec: tspec(),
        },
        Event::Confirmed {
            flowspec: flowspec(),
        },
        Event::Established {
            flowspec: flowspec(),
        },
    ]
}

fn is_peer_wait(event: &Event) -> bool {
    matches!(event, Event::NoSender { .. } | Event::NoReceiver { .. })
}

#[test]
fn receiver_without_a_path_says_no_sender_at_the_wait_then_a_late_path_establishes() {
    let mut f = two_hosts(60);
    let start = f.net.now;
    let k = key(f.receiver);
    let c = f.net.with(f.client, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.reserve(now, id, Style::FixedFilter, flowspec(), true)
            .unwrap();
        id
    });
    // Nothing sent, nothing told before the wait is over.
    f.net.run_until(start + DEFAULT_PEER_WAIT - TICK);
    assert!(f.net.nodes[f.client].events.is_empty());
    f.net.run_until(start + DEFAULT_PEER_WAIT);
    assert_eq!(
        timed_events(&f.net.nodes[f.client], c),
        vec![(
            start + DEFAULT_PEER_WAIT,
            Event::NoSender {
                waited: DEFAULT_PEER_WAIT
            }
        )]
    );
    assert!(f.net.sent.is_empty(), "nothing goes on the wire for it");
    // The server turns up late: its Path is answered as usual.
    f.net.run_for(Duration::from_secs(7));
    let sender = f.sender;
    let s = f.net.with(f.server, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.add_sender(now, id, sender, tspec()).unwrap();
        id
    });
    f.net.run_for(Duration::from_secs(600));
    let client = &f.net.nodes[f.client];
    assert_eq!(client.events_of(c), late_sender_events(f.sender));
    assert_eq!(
        f.net.nodes[f.server].events_of(s),
        vec![
            Event::ResvReceived {
                flowspec: flowspec(),
                style: Style::FixedFilter
            },
            Event::Established {
                flowspec: flowspec()
            },
        ]
    );
    assert_eq!(f.net.nodes[f.server].install_count(), 1);
}

#[test]
fn sender_without_a_resv_says_no_receiver_at_the_wait_then_a_late_resv_establishes() {
    let mut f = two_hosts(61);
    let start = f.net.now;
    let k = key(f.receiver);
    let sender = f.sender;
    let s = f.net.with(f.server, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.add_sender(now, id, sender, tspec()).unwrap();
        id
    });
    // The client host gets the Path but nobody there asks for a reservation (yet).
    f.net.run_until(start + DEFAULT_PEER_WAIT - TICK);
    assert!(f.net.nodes[f.server].events.is_empty());
    f.net.run_until(start + DEFAULT_PEER_WAIT);
    assert_eq!(
        timed_events(&f.net.nodes[f.server], s),
        vec![(
            start + DEFAULT_PEER_WAIT,
            Event::NoReceiver {
                waited: DEFAULT_PEER_WAIT
            }
        )]
    );
    // Only Paths went out (the first and its fast retransmissions): nothing for the wait.
    assert_eq!(f.net.sent.keys().copied().collect::<Vec<_>>(), vec![PATH]);
    f.net.run_for(Duration::from_secs(20));
    let c = f.net.with(f.client, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.reserve(now, id, Style::FixedFilter, flowspec(), true)
            .unwrap();
        id
    });
    f.net.run_for(Duration::from_secs(600));
    assert_eq!(
        f.net.nodes[f.server].events_of(s),
        vec![
            Event::NoReceiver {
                waited: DEFAULT_PEER_WAIT
            },
            Event::ResvReceived {
                flowspec: flowspec(),
                style: Style::FixedFilter
            },
            Event::Established {
                flowspec: flowspec()
            },
        ]
    );
    // The path state was there when the client asked: it waited for nothing.
    assert_eq!(
        f.net.nodes[f.client].events_of(c),
        vec![
            Event::PathReceived {
                sender: f.sender,
                tspec: tspec()
            },
            Event::Confirmed {
                flowspec: flowspec()
            },
            Event::Established {
                flowspec: flowspec()
            },
        ]
    );
    assert_eq!(f.net.nodes[f.server].install_count(), 1);
}

#[test]
fn one_lost_path_and_one_lost_resv_per_session_do_not_make_a_peer_look_absent() {
    let mut f = two_hosts(62);
    f.net.set_links(Link {
        loss: 0.5,
        max_consecutive_loss: Some(1),
        ..Link::default()
    });
    let sessions: Vec<_> = (0..40).map(|i| f.setup(44_000 + i)).collect();
    // Within the wait only first messages and their retransmissions are sent (refreshes
    // come after R/2 = 15 s): some of them were lost.
    f.net.run_for(DEFAULT_PEER_WAIT);
    assert!(
        f.net.dropped.get(&PATH).is_some_and(|n| *n >= 10)
            && f.net.dropped.get(&RESV).is_some_and(|n| *n >= 10),
        "first messages were lost: {:?}",
        f.net.dropped
    );
    f.net.run_for(Duration::from_secs(600));
    for (s, c) in sessions {
        for (node, id) in [(f.server, s), (f.client, c)] {
            let events = f.net.nodes[node].events_of(id);
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, Event::Established { .. })),
                "{events:?}"
            );
            assert!(!events.iter().any(is_peer_wait), "{events:?}");
        }
    }
}

#[test]
fn sessions_released_before_the_wait_say_nothing_and_leave_no_timer() {
    let mut f = two_hosts(63);
    // Neither end hears the other.
    let down = Link::down();
    f.net.set_links(down);
    let (s, c) = f.setup(40_000);
    f.net
        .run_for(DEFAULT_PEER_WAIT - Duration::from_millis(500));
    f.net.with(f.server, |e, now| e.release(now, s));
    f.net.with(f.client, |e, now| e.release(now, c));
    f.net.run_for(Duration::from_secs(600));
    let released = |reason: &str| {
        vec![Event::TornDown {
            reason: reason.into(),
        }]
    };
    assert_eq!(
        f.net.nodes[f.server].events_of(s),
        released("released by the local owner")
    );
    assert_eq!(
        f.net.nodes[f.client].events_of(c),
        released("released by the local owner")
    );
    for node in [f.server, f.client] {
        assert_eq!(f.net.nodes[node].engine.session_count(), 0);
        assert_eq!(f.net.nodes[node].engine.poll_timeout(), None);
    }
}

#[test]
fn a_second_receiver_left_behind_is_still_told_and_a_released_one_is_not() {
    let mut f = two_hosts(64);
    let k = key(f.receiver);
    let (first, second) = f.net.with(f.client, |e, now| {
        let a = e.open_session(now, k).unwrap();
        e.reserve(now, a, Style::FixedFilter, flowspec(), true)
            .unwrap();
        let b = e.open_session(now, k).unwrap();
        e.reserve(now, b, Style::FixedFilter, flowspec_rate(1000.0), true)
            .unwrap();
        (a, b)
    });
    f.net.run_for(Duration::from_secs(1));
    f.net.with(f.client, |e, now| e.release(now, first));
    f.net.run_for(Duration::from_secs(60));
    let client = &f.net.nodes[f.client];
    assert_eq!(
        client.events_of(first),
        vec![Event::TornDown {
            reason: "released by the local owner".into()
        }]
    );
    assert_eq!(
        client.events_of(second),
        vec![Event::NoSender {
            waited: DEFAULT_PEER_WAIT
        }]
    );
}

#[test]
fn the_wait_is_configurable_can_be_turned_off_and_reports_a_late_timer() {
    // Turned off: a silent peer stays silent.
    let mut net = Net::new(65);
    let off = net.add("off", v4(1), {
        let mut config = config(65);
        config.peer_wait = None;
        config
    });
    let (s, c) = net.with(off, |e, now| {
        let s = e.open_session(now, key(sock(v4(7), 1))).unwrap();
        e.add_sender(now, s, sock(v4(1), 80), tspec()).unwrap();
        let c = e.open_session(now, key(sock(v4(1), 2))).unwrap();
        e.reserve(now, c, Style::FixedFilter, flowspec(), true)
            .unwrap();
        (s, c)
    });
    net.run_for(Duration::from_secs(600));
    assert!(net.nodes[off].events_of(s).is_empty());
    assert!(net.nodes[off].events_of(c).is_empty());

    // A short wait, and a caller that runs the timers late: `waited` says how long it was.
    let mut engine = qtoq::engine::Engine::new(
        {
            let mut config = config(66);
            config.peer_wait = Some(Duration::from_millis(200));
            config
        },
        admit_all(),
    );
    let start = std::time::Instant::now();
    let id = engine.open_session(start, key(sock(v4(1), 3))).unwrap();
    engine
        .reserve(start, id, Style::FixedFilter, flowspec(), false)
        .unwrap();
    // (The wheel may name an earlier wake-up than the deadline; waking early is harmless.)
    assert!(engine
        .poll_timeout()
        .is_some_and(|at| at <= start + Duration::from_millis(200)));
    engine.handle_timeout(start + Duration::from_millis(199));
    assert_eq!(engine.poll_event(), None);
    engine.handle_timeout(start + Duration::from_millis(750));
    assert_eq!(
        engine.poll_event(),
        Some((
            id,
            Event::NoSender {
                waited: Duration::from_millis(750)
            }
        ))
    );
    assert_eq!(
        engine.poll_timeout(),
        None,
        "told once, nothing left to wait for"
    );
}
