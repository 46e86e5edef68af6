//! Messages that change or remove state are believed only from the neighbor that state
//! records (see the engine's "Neighbors" documentation): the same message forged from a
//! third-party address is dropped and counted, and from the real neighbor still works. A
//! host keeps path state only for sessions to itself, and a peer's refresh period is clamped.

mod engine_support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use engine_support::*;
use qtoq::engine::{Event, RuleAction, SessionId, MAX_REFRESH_PERIOD};
use qtoq::wire::intserv::FlowSpec;
use qtoq::wire::{
    ErrorCode, ErrorSpec, FilterSpec, Message, ResvConfirm, RsvpHop, Session, Style, TimeValues,
};

/// The third party.
fn forger() -> IpAddr {
    v4(7)
}

/// Two hosts with an established FF reservation with confirmation (server 10.0.0.1 sends to
/// client 10.0.0.2); the event logs are cleared.
fn established() -> (Flow2, SessionId, SessionId) {
    let mut f = two_hosts(60);
    let (s, c) = f.setup(40_000);
    f.net.run_for(Duration::from_secs(1));
    assert_eq!(f.net.nodes[f.server].install_count(), 1);
    assert!(f.net.nodes[f.client]
        .events_of(c)
        .iter()
        .any(|e| matches!(e, Event::Confirmed { .. })));
    f.net.nodes[f.server].events.clear();
    f.net.nodes[f.client].events.clear();
    (f, s, c)
}

fn wire_session(f: &Flow2) -> Session {
    Session::new(sock(f.receiver.ip(), 40_000), 6)
}

/// A Resv for the server's sender naming `hop` as its next hop.
fn resv(f: &Flow2, hop: IpAddr, flowspec: FlowSpec) -> Vec<u8> {
    Message::resv(
        wire_session(f),
        RsvpHop::new(hop, 0),
        TimeValues::new(Duration::from_secs(30)),
        Style::FixedFilter,
        flowspec,
        &[FilterSpec::new(f.sender)],
    )
    .encode()
    .unwrap()
}

/// A Path of the server's sender with previous hop `hop` and refresh period `refresh`.
/// One host, 10.0.0.2, and the data sender 10.0.0.1:8080 it hears Paths from.
fn lone_client(seed: u64) -> (Net, usize, SocketAddr) {
    let mut net = Net::new(seed);
    let client = net.add("client", v4(2), config(seed));
    (net, client, sock(v4(1), 8080))
}

/// A Path from `sender` (its own previous hop) refreshed every 30 s.
fn path_from(destination: SocketAddr, sender: SocketAddr) -> Vec<u8> {
    path(
        Session::new(destination, 6),
        sender,
        sender.ip(),
        TimeValues::new(Duration::from_secs(30)),
    )
}

fn path(session: Session, sender: SocketAddr, hop: IpAddr, refresh: TimeValues) -> Vec<u8> {
    Message::path(
        session,
        RsvpHop::new(hop, 0),
        refresh,
        FilterSpec::new(sender),
        tspec(),
        None,
    )
    .encode()
    .unwrap()
}

/// The rule the server's sender holds: its flowspec.
fn rule_flowspec(f: &Flow2, s: SessionId) -> FlowSpec {
    let info = f.net.nodes[f.server].engine.session_info(s).unwrap();
    assert_eq!(info.rules.len(), 1, "{info:?}");
    info.rules[0].flowspec
}

#[test]
fn a_forged_resv_tear_is_dropped_and_the_real_one_removes_the_rule() {
    let (mut f, _s, _c) = established();
    // Names the client as its next hop, arrives from somebody else.
    let tear = Message::resv_tear(
        wire_session(&f),
        RsvpHop::new(f.receiver.ip(), 0),
        Style::FixedFilter,
        &[FilterSpec::new(f.sender)],
    )
    .encode()
    .unwrap();
    let actions = f.net.nodes[f.server].actions.len();
    f.net.inject(f.server, forger(), &tear);
    let server = &f.net.nodes[f.server];
    assert_eq!(server.actions.len(), actions, "{:?}", server.actions);
    assert_eq!(server.remove_count(), 0);
    assert!(server.events.is_empty(), "{:?}", server.events);
    assert_eq!(server.engine.stats().wrong_neighbor, 1);

    f.net.inject(f.server, f.receiver.ip(), &tear);
    let server = &f.net.nodes[f.server];
    assert_eq!(server.remove_count(), 1);
    assert_eq!(server.engine.stats().wrong_neighbor, 1);
}

#[test]
fn a_forged_resv_is_dropped_and_the_real_one_modifies_the_rule() {
    let (mut f, s, _c) = established();
    let resv = resv(&f, f.receiver.ip(), flowspec_rate(1.0));
    let actions = f.net.nodes[f.server].actions.len();
    let sent = f.net.nodes[f.server].engine.stats().transmitted;
    f.net.inject(f.server, forger(), &resv);
    let server = &f.net.nodes[f.server];
    assert_eq!(server.actions.len(), actions, "{:?}", server.actions);
    assert!(server.events.is_empty(), "{:?}", server.events);
    assert_eq!(server.engine.stats().wrong_neighbor, 1);
    // Nothing answered the forger either.
    assert_eq!(server.engine.stats().transmitted, sent);
    assert_eq!(rule_flowspec(&f, s), flowspec());

    f.net.inject(f.server, f.receiver.ip(), &resv);
    let server = &f.net.nodes[f.server];
    assert!(
        server.actions[actions..]
            .iter()
            .any(|(_, a)| matches!(a, RuleAction::Modify { .. })),
        "{:?}",
        &server.actions[actions..]
    );
    assert!(server
        .events
        .iter()
        .any(|(_, _, e)| matches!(e, Event::ResvReceived { .. })));
    assert_eq!(server.engine.stats().wrong_neighbor, 1);
    assert_eq!(rule_flowspec(&f, s), flowspec_rate(1.0));
}

#[test]
fn a_resv_from_another_next_hop_cannot_shrink_or_replace_the_reservation() {
    let (mut f, s, _c) = established();
    let actions = f.net.nodes[f.server].actions.len();
    // The forger names itself: a reservation state of its own, next to the client's.
    for style in [Style::FixedFilter, Style::WildcardFilter] {
        let small = Message::resv(
            wire_session(&f),
            RsvpHop::new(forger(), 0),
            TimeValues::new(Duration::from_secs(30)),
            style,
            flowspec_rate(1.0),
            &[FilterSpec::new(f.sender)],
        )
        .encode()
        .unwrap();
        f.net.inject(f.server, forger(), &small);
    }
    let server = &f.net.nodes[f.server];
    assert_eq!(server.actions.len(), actions, "{:?}", server.actions);
    assert_eq!(rule_flowspec(&f, s), flowspec());
    let info = server.engine.session_info(s).unwrap();
    assert!(
        info.reservations
            .iter()
            .any(|r| r.next_hop == f.receiver.ip() && r.flowspec == flowspec()),
        "the client's reservation is still there: {info:?}"
    );
    // Its teardown takes only its own state.
    let tear = Message::resv_tear(
        wire_session(&f),
        RsvpHop::new(forger(), 0),
        Style::FixedFilter,
        &[FilterSpec::new(f.sender)],
    )
    .encode()
    .unwrap();
    f.net.inject(f.server, forger(), &tear);
    let server = &f.net.nodes[f.server];
    assert_eq!(server.actions.len(), actions, "{:?}", server.actions);
    assert_eq!(rule_flowspec(&f, s), flowspec());
    // Refreshes go on and keep the rule as it is.
    f.net.run_for(Duration::from_secs(200));
    assert_eq!(rule_flowspec(&f, s), flowspec());
    assert_eq!(f.net.nodes[f.server].install_count(), 1);
}

#[test]
fn a_forged_path_tear_is_dropped_and_the_real_one_tears_down() {
    let (mut f, _s, c) = established();
    let tear = Message::path_tear(
        wire_session(&f),
        RsvpHop::new(f.sender.ip(), 0),
        Some(FilterSpec::new(f.sender)),
    )
    .encode()
    .unwrap();
    let actions = f.net.nodes[f.client].actions.len();
    f.net.inject(f.client, forger(), &tear);
    let client = &f.net.nodes[f.client];
    assert!(client.events.is_empty(), "{:?}", client.events);
    assert_eq!(client.actions.len(), actions);
    assert_eq!(client.engine.stats().wrong_neighbor, 1);
    let info = client.engine.session_info(c).unwrap();
    assert_eq!(info.paths.len(), 1, "{info:?}");

    // Naming itself as the previous hop does not help.
    let own_hop = Message::path_tear(
        wire_session(&f),
        RsvpHop::new(forger(), 0),
        Some(FilterSpec::new(f.sender)),
    )
    .encode()
    .unwrap();
    f.net.inject(f.client, forger(), &own_hop);
    let client = &f.net.nodes[f.client];
    assert!(client.events.is_empty(), "{:?}", client.events);
    assert_eq!(client.engine.stats().wrong_neighbor, 2);

    f.net.inject(f.client, f.sender.ip(), &tear);
    let client = &f.net.nodes[f.client];
    assert!(client
        .events_of(c)
        .iter()
        .any(|e| matches!(e, Event::TornDown { .. })));
    assert_eq!(client.path_count(c), 0);
    assert_eq!(client.engine.stats().wrong_neighbor, 2);
}

#[test]
fn a_forged_path_cannot_move_the_path_state_to_the_forger() {
    let (mut f, _s, c) = established();
    // Names itself as the previous hop of the server's sender: were it believed, the client's
    // Resvs would go to the forger, and a PathTear from there would be the previous hop's.
    let moved = path(
        wire_session(&f),
        f.sender,
        forger(),
        TimeValues::new(Duration::from_secs(30)),
    );
    f.net.inject(f.client, forger(), &moved);
    let client = &f.net.nodes[f.client];
    assert_eq!(client.engine.stats().wrong_neighbor, 1);
    assert!(client.events.is_empty(), "{:?}", client.events);
    let info = client.engine.session_info(c).unwrap();
    assert_eq!(info.paths.len(), 1);
    assert_eq!(info.paths[0].previous_hop, f.sender.ip());
    let tear = Message::path_tear(
        wire_session(&f),
        RsvpHop::new(forger(), 0),
        Some(FilterSpec::new(f.sender)),
    )
    .encode()
    .unwrap();
    f.net.inject(f.client, forger(), &tear);
    assert_eq!(f.net.nodes[f.client].engine.stats().wrong_neighbor, 2);
    assert_eq!(f.net.nodes[f.client].path_count(c), 1);
    // A Path naming another hop than its datagram's source, and not from its sender, is
    // not believed either.
    let elsewhere = path(
        wire_session(&f),
        f.sender,
        v4(8),
        TimeValues::new(Duration::from_secs(30)),
    );
    f.net.inject(f.client, forger(), &elsewhere);
    assert_eq!(f.net.nodes[f.client].engine.stats().wrong_neighbor, 3);
    // The reservation is untouched through all of it.
    f.net.run_for(Duration::from_secs(200));
    let client = &f.net.nodes[f.client];
    assert!(client.events.is_empty(), "{:?}", client.events);
    assert_eq!(f.net.nodes[f.server].install_count(), 1);
    assert_eq!(f.net.nodes[f.server].remove_count(), 0);
}

#[test]
fn a_forged_path_err_is_dropped_and_one_from_the_receiver_is_reported() {
    let (mut f, s, _c) = established();
    let err = Message::path_err(
        wire_session(&f),
        ErrorSpec::new(forger(), ErrorCode::RSVP_SYSTEM_ERROR, 0),
        Some((FilterSpec::new(f.sender), tspec())),
    )
    .encode()
    .unwrap();
    f.net.inject(f.server, forger(), &err);
    let server = &f.net.nodes[f.server];
    assert!(server.events.is_empty(), "{:?}", server.events);
    assert_eq!(server.engine.stats().wrong_neighbor, 1);

    f.net.inject(f.server, f.receiver.ip(), &err);
    let server = &f.net.nodes[f.server];
    assert!(
        server
            .events_of(s)
            .iter()
            .any(|e| matches!(e, Event::PathError { .. })),
        "{:?}",
        server.events
    );
    assert_eq!(server.engine.stats().wrong_neighbor, 1);
}

#[test]
fn a_forged_resv_err_is_dropped_and_one_from_the_previous_hop_is_reported() {
    let (mut f, _s, c) = established();
    let err = Message::resv_err(
        wire_session(&f),
        RsvpHop::new(forger(), 0),
        ErrorSpec::new(forger(), ErrorCode::ADMISSION_CONTROL_FAILURE, 2),
        Style::FixedFilter,
        Some(flowspec()),
        &[FilterSpec::new(f.sender)],
    )
    .encode()
    .unwrap();
    f.net.inject(f.client, forger(), &err);
    let client = &f.net.nodes[f.client];
    assert!(client.events.is_empty(), "{:?}", client.events);
    assert_eq!(client.engine.stats().wrong_neighbor, 1);

    f.net.inject(f.client, f.sender.ip(), &err);
    let client = &f.net.nodes[f.client];
    let events = client.events_of(c);
    assert!(
        events.iter().any(|e| matches!(e, Event::ResvError { .. }))
            && events
                .iter()
                .any(|e| matches!(e, Event::AdmissionDenied { .. })),
        "{events:?}"
    );
    assert_eq!(client.engine.stats().wrong_neighbor, 1);
}

fn resv_conf(receiver: IpAddr, sender: SocketAddr, flowspec: FlowSpec) -> Vec<u8> {
    Message::resv_conf(
        Session::new(sock(receiver, 40_000), 6),
        ErrorSpec::new(sender.ip(), ErrorCode::CONFIRMATION, 0),
        ResvConfirm { receiver },
        Style::FixedFilter,
        flowspec,
        &[FilterSpec::new(sender)],
    )
    .encode()
    .unwrap()
}

fn confirmed_or_established(n: &Node, c: SessionId) -> usize {
    n.events_of(c)
        .iter()
        .filter(|e| matches!(e, Event::Confirmed { .. } | Event::Established { .. }))
        .count()
}

#[test]
fn a_resv_conf_is_believed_only_when_asked_for_and_from_upstream() {
    let mut net = Net::new(61);
    let client = net.add("client", v4(2), config(61));
    let (receiver, sender) = (v4(2), sock(v4(1), 8080));
    let k = key(sock(receiver, 40_000));
    let c = net.with(client, |e, now| e.open_session(now, k).unwrap());
    // The server's Path (the server itself is not simulated: what the client sends is lost).
    let session = Session::new(k.destination, 6);
    let p = path(
        session,
        sender,
        sender.ip(),
        TimeValues::new(Duration::from_secs(30)),
    );
    net.inject(client, sender.ip(), &p);
    // A receiver that asked for no confirmation: announced at once, once.
    net.with(client, |e, now| {
        e.reserve(now, c, Style::FixedFilter, flowspec(), false)
            .unwrap()
    });
    assert_eq!(confirmed_or_established(&net.nodes[client], c), 1);
    let huge = resv_conf(receiver, sender, flowspec_rate(1e9));
    net.inject(client, forger(), &huge);
    net.inject(client, sender.ip(), &huge);
    assert_eq!(confirmed_or_established(&net.nodes[client], c), 1);
    assert_eq!(net.nodes[client].engine.stats().wrong_neighbor, 2);

    // It asks now: not from a third party, even while it waits for one.
    net.with(client, |e, now| {
        e.reserve(now, c, Style::FixedFilter, flowspec(), true)
            .unwrap()
    });
    net.nodes[client].events.clear();
    net.inject(client, forger(), &huge);
    assert_eq!(confirmed_or_established(&net.nodes[client], c), 0);
    assert!(!net.nodes[client].engine.session_info(c).unwrap().confirmed);
    assert_eq!(net.nodes[client].engine.stats().wrong_neighbor, 3);
    // From the sender: believed, once.
    let conf = resv_conf(receiver, sender, flowspec());
    net.inject(client, sender.ip(), &conf);
    let confirmed = |n: &Node| {
        n.events_of(c)
            .iter()
            .filter(|e| matches!(e, Event::Confirmed { .. }))
            .count()
    };
    assert_eq!(confirmed(&net.nodes[client]), 1);
    assert!(net.nodes[client].engine.session_info(c).unwrap().confirmed);
    // Another one, the confirmation had: a duplicate, ignored; a forged one, counted.
    let ignored = net.nodes[client].engine.stats().ignored;
    net.inject(client, sender.ip(), &conf);
    net.inject(client, forger(), &huge);
    assert_eq!(confirmed(&net.nodes[client]), 1);
    assert_eq!(net.nodes[client].engine.stats().ignored, ignored + 1);
    assert_eq!(net.nodes[client].engine.stats().wrong_neighbor, 4);
}

#[test]
fn a_path_for_another_destination_keeps_no_state_and_gets_no_answer() {
    let (mut net, client, sender) = lone_client(62);
    let foreign = key(sock(v4(9), 40_000));
    // Even an owner of that session (nothing stops an API user from opening one) does not
    // make a Path to 10.0.0.9 this host's business.
    let c = net.with(client, |e, now| e.open_session(now, foreign).unwrap());
    let p = path_from(foreign.destination, sender);
    net.inject(client, sender.ip(), &p);
    let node = &net.nodes[client];
    assert_eq!(node.engine.stats().not_for_us, 1);
    assert_eq!(node.engine.stats().transmitted, 0);
    assert!(node.events.is_empty(), "{:?}", node.events);
    assert_eq!(node.path_count(c), 0);
    assert_eq!(node.engine.session_count(), 1);
    // Without an owner: no session at all.
    let other = key(sock(v4(9), 40_001));
    let p = path_from(other.destination, sender);
    net.inject(client, sender.ip(), &p);
    let node = &net.nodes[client];
    assert_eq!(node.engine.stats().not_for_us, 2);
    assert_eq!(node.engine.session_count(), 1);
    assert_eq!(node.engine.stats().transmitted, 0);

    // A Path to this host is kept.
    let ours = key(sock(v4(2), 40_000));
    let p = path_from(ours.destination, sender);
    net.inject(client, sender.ip(), &p);
    let node = &net.nodes[client];
    assert_eq!(node.engine.stats().not_for_us, 2);
    assert_eq!(node.engine.session_count(), 2);
}

#[test]
fn an_undecodable_path_for_another_destination_is_not_answered() {
    let (mut net, client, sender) = lone_client(63);
    let build = |destination: IpAddr| {
        let mut bytes = path(
            Session::new(sock(destination, 40_000), 6),
            sender,
            sender.ip(),
            TimeValues::new(Duration::from_secs(30)),
        );
        // An object of unknown class 0x20 (0bbbbbbb: answered with code 13), checksum 0.
        bytes.extend_from_slice(&[0, 8, 0x20, 1, 0, 0, 0, 0]);
        let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
        bytes[6..8].copy_from_slice(&len);
        bytes[2..4].copy_from_slice(&[0, 0]);
        bytes
    };
    net.inject(client, sender.ip(), &build(v4(9)));
    let stats = net.nodes[client].engine.stats().clone();
    assert_eq!(stats.not_for_us, 1);
    assert_eq!(stats.errors_sent, 0);
    assert_eq!(stats.transmitted, 0);
    // For this host it is answered (code 13) as before.
    net.inject(client, sender.ip(), &build(v4(2)));
    let stats = net.nodes[client].engine.stats().clone();
    assert_eq!(stats.not_for_us, 1);
    assert_eq!(stats.errors_sent, 1);
}

#[test]
fn a_huge_refresh_period_is_clamped_and_the_state_expires_in_time() {
    let (mut net, client, sender) = lone_client(64);
    let k = key(sock(v4(2), 40_000));
    let c = net.with(client, |e, now| e.open_session(now, k).unwrap());
    // R = 2^32 - 1 ms: 49.7 days between refreshes, state kept for 261 days.
    let p = path(
        Session::new(k.destination, 6),
        sender,
        sender.ip(),
        TimeValues {
            refresh_period_ms: u32::MAX,
        },
    );
    net.inject(client, sender.ip(), &p);
    assert_eq!(net.nodes[client].engine.stats().refresh_clamped, 1);
    // L = (K + 0.5) · 1.5 · R with K = 3 and R clamped to one hour: 5 h 15 min.
    let lifetime = MAX_REFRESH_PERIOD * 21 / 4;
    let expires = net.nodes[client].engine.session_info(c).unwrap().paths[0]
        .expires
        .unwrap();
    assert!(
        expires <= net.now + lifetime + SEC,
        "{:?}",
        expires - net.now
    );
    net.run_for(lifetime - Duration::from_secs(60));
    assert_eq!(
        net.nodes[client].path_count(c),
        1,
        "kept for the clamped lifetime"
    );
    net.run_for(Duration::from_secs(120));
    let node = &net.nodes[client];
    assert_eq!(node.path_count(c), 0);
    assert!(node
        .events_of(c)
        .iter()
        .any(|e| matches!(e, Event::Expired { .. })));
    assert_eq!(node.engine.stats().expired, 1);
}

#[test]
fn a_tiny_refresh_period_is_clamped_too() {
    let (mut net, client, sender) = lone_client(65);
    let k = key(sock(v4(2), 40_000));
    let c = net.with(client, |e, now| e.open_session(now, k).unwrap());
    let p = path(
        Session::new(k.destination, 6),
        sender,
        sender.ip(),
        TimeValues {
            refresh_period_ms: 1,
        },
    );
    net.inject(client, sender.ip(), &p);
    assert_eq!(net.nodes[client].engine.stats().refresh_clamped, 1);
    // 1 ms would give 6 ms; 100 ms gives 525 ms.
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.nodes[client].path_count(c), 1);
    net.run_for(Duration::from_millis(100));
    assert_eq!(net.nodes[client].path_count(c), 0);
}

#[test]
fn an_undecodable_message_naming_another_hop_is_not_answered() {
    let mut net = Net::new(66);
    let server = net.add("server", v4(1), config(66));
    // An undecodable Resv (unknown class 0x20) naming 10.0.0.9 as its next hop, sent by the
    // forger: the ResvErr would go to 10.0.0.9.
    let resv_from = |hop: IpAddr| {
        let mut bytes = Message::resv(
            Session::new(sock(v4(2), 40_000), 6),
            RsvpHop::new(hop, 0),
            TimeValues::new(Duration::from_secs(30)),
            Style::FixedFilter,
            flowspec(),
            &[FilterSpec::new(sock(v4(1), 8080))],
        )
        .encode()
        .unwrap();
        bytes.extend_from_slice(&[0, 8, 0x20, 1, 0, 0, 0, 0]);
        let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
        bytes[6..8].copy_from_slice(&len);
        bytes[2..4].copy_from_slice(&[0, 0]);
        bytes
    };
    net.inject(server, forger(), &resv_from(v4(9)));
    let stats = net.nodes[server].engine.stats().clone();
    assert_eq!(stats.wrong_neighbor, 1);
    assert_eq!(stats.errors_sent, 0);
    assert_eq!(stats.transmitted, 0);
    // Naming itself, it gets its answer (code 13).
    net.inject(server, forger(), &resv_from(forger()));
    let stats = net.nodes[server].engine.stats().clone();
    assert_eq!(stats.wrong_neighbor, 1);
    assert_eq!(stats.errors_sent, 1);
}
