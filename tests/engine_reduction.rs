//! RFC 2961 refresh reduction between simulated hosts: reliable triggers under loss, summary
//! refreshes, neighbors without refresh reduction, restarts (epochs) and NACKs.

mod engine_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use engine_support::*;
use qtoq::engine::{EngineConfig, Event, RuleFailure, SessionId, Style, MAX_BUNDLE_BYTES};
use qtoq::wire::intserv::TokenBucket;
use qtoq::wire::{
    ErrorCode, Message, MessageId, MsgType, Object, RsvpError, MESSAGE_ID_FLAG_ACK_DESIRED,
};

const R: Duration = Duration::from_secs(30);

/// A trigger message: the node that sent it, its epoch and its id.
type Trigger = (usize, u32, u32);
/// The staged retransmissions (RFC 2961 §6, defaults): Rf = 500 ms, doubling, Rl = 3: the
/// last attempt leaves 3.5 s after the first and arrives a link delay (5 ms) later; 10 ms to
/// spare.
const REPAIR_BOUND: Duration = Duration::from_millis(3500 + 5 + 10);

/// The messages of a datagram (a Bundle's sub-messages), decoded.
fn messages(payload: &[u8]) -> Vec<Message> {
    match Message::decode(payload) {
        Ok(m) if m.msg_type() == MsgType::Bundle => m.bundled,
        Ok(m) => vec![m],
        Err(e) => panic!("undecodable datagram on the wire: {e}"),
    }
}

fn rr_flag(payload: &[u8]) -> bool {
    payload[0] & 0x0f & qtoq::wire::FLAG_REFRESH_REDUCTION_CAPABLE != 0
}

/// A session from `sender_node` (data sender) to `receiver_node` on `port`: the receiver
/// reserves (FF, with confirmation), the sender registers.
fn session(
    net: &mut Net,
    sender_node: usize,
    receiver_node: usize,
    port: u16,
) -> (SessionId, SessionId) {
    let receiver = sock(net.nodes[receiver_node].addr, port);
    let sender = sock(net.nodes[sender_node].addr, 8080);
    let k = key(receiver);
    let c = net.with(receiver_node, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.reserve(now, id, Style::FixedFilter, flowspec(), true)
            .unwrap();
        id
    });
    let s = net.with(sender_node, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.add_sender(now, id, sender, tspec()).unwrap();
        id
    });
    (s, c)
}

fn no_spurious_end(node: &Node) {
    for (at, id, event) in &node.events {
        assert!(
            !matches!(event, Event::Expired { .. } | Event::TornDown { .. }),
            "{}: {id:?} at {at:?}: {event:?}",
            node.name
        );
    }
    assert_eq!(node.engine.stats().expired, 0, "{}", node.name);
}

fn established(node: &Node, id: SessionId) -> bool {
    node.events_of(id)
        .iter()
        .any(|e| matches!(e, Event::Established { .. }))
}

fn rr_config(seed: u64) -> EngineConfig {
    config(seed)
}

fn classic_config(seed: u64) -> EngineConfig {
    let mut config = config(seed);
    config.refresh_reduction = false;
    config
}

#[test]
fn ten_hours_at_ten_percent_loss_repair_every_trigger_and_expire_nothing() {
    let mut f = two_hosts(71);
    f.net.set_links(Link {
        loss: 0.1,
        ..Link::default()
    });
    f.net.trace = Some(Vec::new());
    let sessions: Vec<_> = (0..20).map(|i| f.setup(45_000 + i)).collect();
    // Triggers all along: every 10 minutes a reservation and a sender's Tspec change.
    let sender = f.sender;
    for step in 0..60usize {
        f.net.run_for(Duration::from_secs(600));
        let (s, c) = sessions[step % sessions.len()];
        let rate = 100_000.0 + step as f32 * 1000.0;
        f.net.with(f.client, |e, now| {
            e.reserve(now, c, Style::FixedFilter, flowspec_rate(rate), true)
                .unwrap()
        });
        f.net.with(f.server, |e, now| {
            e.add_sender(now, s, sender, TokenBucket::new(rate, 10_000.0))
                .unwrap()
        });
    }
    f.net.run_for(Duration::from_secs(120));
    assert!(f.net.elapsed() >= Duration::from_secs(10 * 3600));
    for node in &f.net.nodes {
        no_spurious_end(node);
    }
    for (s, c) in &sessions {
        assert!(established(&f.net.nodes[f.server], *s));
        assert!(established(&f.net.nodes[f.client], *c));
    }
    // Summary refreshes did the refreshing.
    for node in &f.net.nodes {
        let st = node.engine.stats();
        assert!(st.srefresh_ids_sent > 20 * 600, "{}: {st:?}", node.name);
        assert_eq!(st.out_of_order, 0);
    }

    // Every trigger (a Path or Resv with a MESSAGE_ID asking for an ack): from its first
    // send to its first arrival at the peer (the state is in sync: repaired), and to the
    // acknowledgment reaching its sender (after which refreshes are summaries).
    let trace = f.net.trace.take().unwrap();
    let mut sends: HashMap<Trigger, Vec<Instant>> = HashMap::new();
    let mut arrivals: HashMap<Trigger, Instant> = HashMap::new();
    let mut acks: HashMap<Trigger, Instant> = HashMap::new();
    // Per sending state, its ids in the order they were first sent.
    let mut states: HashMap<String, Vec<(Instant, Trigger)>> = HashMap::new();
    for t in &trace {
        for m in messages(&t.payload) {
            let trigger = matches!(m.msg_type(), MsgType::Path | MsgType::Resv);
            let id = m.message_id().filter(|_| trigger);
            if !t.delivered {
                if let Some(id) = id {
                    assert_ne!(id.flags & MESSAGE_ID_FLAG_ACK_DESIRED, 0);
                    let key = (t.node, id.epoch, id.id);
                    if !sends.contains_key(&key) {
                        let state = format!("{} {:?} {:?}", t.node, m.msg_type(), m.session());
                        states.entry(state).or_default().push((t.at, key));
                    }
                    sends.entry(key).or_default().push(t.at);
                }
                continue;
            }
            // Two nodes: what node `t.node` receives, the other one sent.
            if let Some(id) = id {
                arrivals
                    .entry((1 - t.node, id.epoch, id.id))
                    .or_insert(t.at);
            }
            for (ack, a) in m.message_id_acks() {
                if ack {
                    acks.entry((t.node, a.epoch, a.id)).or_insert(t.at);
                }
            }
        }
    }
    // An id replaced by the next one before it was acknowledged (two changes in a row) is
    // not owed an acknowledgment: its state's next id is.
    let mut superseded = std::collections::HashSet::new();
    for ids in states.values() {
        for pair in ids.windows(2) {
            let (id, next_sent) = (pair[0].1, pair[1].0);
            if acks.get(&id).is_none_or(|acked| *acked > next_sent) {
                superseded.insert(id);
            }
        }
    }
    let (mut repaired, mut fallbacks, mut max_repair) = (0, 0, Duration::ZERO);
    for (id, at) in sends.iter().filter(|(id, _)| !superseded.contains(*id)) {
        assert!(acks.contains_key(id), "trigger {id:?} never acknowledged");
        let arrived = *arrivals
            .get(id)
            .unwrap_or_else(|| panic!("trigger {id:?} never arrived"));
        let attempts = at.iter().filter(|t| **t <= arrived).count();
        let took = arrived - at[0];
        if attempts > 1 {
            repaired += 1;
        }
        if attempts <= 4 {
            // Repaired by the staged retransmissions (or not lost at all).
            assert!(
                took <= REPAIR_BOUND,
                "{id:?}: {attempts} attempts, {took:?}"
            );
            max_repair = max_repair.max(took);
        } else {
            // All four attempts lost: the next refresh carries it again.
            fallbacks += 1;
            assert!(took <= R * 3 / 2 + REPAIR_BOUND, "{id:?}: {took:?}");
        }
    }
    println!(
        "{} triggers ({} superseded), {repaired} lost and repaired by retransmission, \
         {fallbacks} fell back to a refresh, longest repair {max_repair:?}",
        sends.len(),
        superseded.len()
    );
    assert!(sends.len() >= 200, "{}", sends.len());
    assert!(repaired >= 10, "losses were repaired: {repaired}");
    assert!(fallbacks * 100 <= sends.len(), "{fallbacks}");
    // A lost trigger costs about a second, not a refresh period.
    assert!(max_repair > Duration::from_millis(400) && max_repair <= REPAIR_BOUND);

    for (s, c) in sessions {
        f.net.with(f.client, |e, now| e.release(now, c));
        f.net.with(f.server, |e, now| e.release(now, s));
    }
    f.net.set_links(Link::default());
    f.net.run_for(Duration::from_secs(300));
    f.net.nodes[f.server].assert_rules_balanced();
}

#[test]
fn a_neighbor_without_refresh_reduction_gets_classic_refreshes_both_ways() {
    let mut net = Net::new(81);
    let rr = net.add("rr", v4(1), rr_config(1));
    let classic = net.add("classic", v4(2), classic_config(2));
    net.trace = Some(Vec::new());
    let one = session(&mut net, rr, classic, 40_000);
    let other = session(&mut net, classic, rr, 41_000);
    net.run_for(Duration::from_secs(1800));
    for node in &net.nodes {
        no_spurious_end(node);
    }
    assert!(established(&net.nodes[rr], one.0) && established(&net.nodes[classic], one.1));
    assert!(established(&net.nodes[classic], other.0) && established(&net.nodes[rr], other.1));
    let trace = net.trace.take().unwrap();
    let (mut paths, mut resvs) = (0, 0);
    for t in trace.iter().filter(|t| !t.delivered) {
        let kind = t.payload[1];
        if t.node == rr {
            // The flag says what we can do; nothing else of RFC 2961 goes to the classic host.
            assert!(rr_flag(&t.payload));
            assert!(
                ![12, 13, 15].contains(&kind),
                "type {kind} sent to a classic host"
            );
            for m in messages(&t.payload) {
                assert!(m.message_id().is_none(), "{m:?}");
                assert_eq!(m.message_id_acks().count(), 0);
            }
            paths += u32::from(kind == 1);
            resvs += u32::from(kind == 2);
        } else {
            assert!(!rr_flag(&t.payload));
        }
    }
    // Full refreshes every 0.5R..1.5R: about 60 of each in 30 minutes.
    assert!((40..=90).contains(&paths), "paths {paths}");
    assert!((40..=90).contains(&resvs), "resvs {resvs}");
    let st = net.nodes[rr].engine.stats();
    assert_eq!(
        (st.srefresh_sent, st.acks_sent, st.ack_messages_sent),
        (0, 0, 0)
    );
}

#[test]
fn a_restarted_neighbor_is_a_new_epoch_and_state_comes_back_without_teardown() {
    let mut f = two_hosts(91);
    let sessions: Vec<_> = (0..10).map(|i| f.setup(46_000 + i)).collect();
    f.net.run_for(Duration::from_secs(300));
    let before = f.net.nodes[f.client].engine.stats().clone();
    assert!(before.srefresh_ids_refreshed > 0, "{before:?}");

    // The server (data sender) restarts: new epoch, its ids start low again.
    f.net.restart(f.server, config(91 ^ 1));
    let sender = f.sender;
    let mut servers = Vec::new();
    for (i, _) in sessions.iter().enumerate() {
        let k = key(sock(f.receiver.ip(), 46_000 + i as u16));
        servers.push(f.net.with(f.server, |e, now| {
            let id = e.open_session(now, k).unwrap();
            e.add_sender(now, id, sender, tspec()).unwrap();
            id
        }));
    }
    f.net.run_for(Duration::from_secs(300));
    let client = &f.net.nodes[f.client];
    let st = client.engine.stats();
    assert!(st.neighbor_restarts >= 1, "{st:?}");
    // Without voiding the old ids, the new Paths (lower ids) would be dropped as old.
    assert_eq!(st.out_of_order, 0);
    // The restarted server's Srefreshes... and the client's, which it did not know: NACKed,
    // then full Resvs set the reservations up again.
    let server = &f.net.nodes[f.server];
    assert!(
        server.engine.stats().nacks_sent > 0,
        "{:?}",
        server.engine.stats()
    );
    assert!(client.engine.stats().nacks_received > 0);
    for id in &servers {
        assert!(established(server, *id), "{:?}", server.events_of(*id));
    }
    no_spurious_end(client);
    no_spurious_end(server);

    // Now the client restarts: the server's summary refreshes are NACKed and its full Paths
    // come back; the new client's reservations are set up again.
    f.net.restart(f.client, config(91 ^ 2));
    let mut clients = Vec::new();
    for i in 0..sessions.len() {
        let k = key(sock(f.receiver.ip(), 46_000 + i as u16));
        clients.push(f.net.with(f.client, |e, now| {
            let id = e.open_session(now, k).unwrap();
            e.reserve(now, id, Style::FixedFilter, flowspec(), true)
                .unwrap();
            id
        }));
    }
    f.net.run_for(Duration::from_secs(300));
    let (server, client) = (&f.net.nodes[f.server], &f.net.nodes[f.client]);
    assert!(client.engine.stats().nacks_sent > 0);
    for id in &clients {
        assert!(established(client, *id), "{:?}", client.events_of(*id));
    }
    // The server's reservations never went away: the new client's Resvs refreshed them.
    no_spurious_end(server);
    no_spurious_end(client);
    assert_eq!(server.installed.len(), sessions.len());
}

/// The MESSAGE_ID of the last Path (`kind` 1) or Resv (2) `node` sent.
fn last_id(net: &Net, node: usize, kind: u8) -> Option<MessageId> {
    net.trace
        .as_ref()?
        .iter()
        .rev()
        .filter(|t| !t.delivered && t.node == node && t.payload[1] == kind)
        .find_map(|t| messages(&t.payload)[0].message_id().copied())
}

#[test]
fn a_nack_brings_back_the_full_message_and_changed_state_gets_a_new_id() {
    let mut f = two_hosts(101);
    f.net.trace = Some(Vec::new());
    let (s, c) = f.setup(47_000);
    f.net.run_for(Duration::from_secs(200));
    let path_id = last_id(&f.net, f.server, 1).expect("a path with a message id");
    let resv_id = last_id(&f.net, f.client, 2).expect("a resv with a message id");
    let server_stats = f.net.nodes[f.server].engine.stats().clone();
    assert!(server_stats.srefresh_ids_sent > 0, "{server_stats:?}");

    // The client says it does not know the Path's id.
    f.net.trace = Some(Vec::new());
    let mut nack = Message::new(MsgType::Ack).with(Object::MessageIdNack(MessageId {
        flags: 0,
        epoch: path_id.epoch,
        id: path_id.id,
    }));
    nack.flags = qtoq::wire::FLAG_REFRESH_REDUCTION_CAPABLE;
    let bytes = nack.encode().unwrap();
    let at = f.net.now;
    f.net.inject(f.server, f.receiver.ip(), &bytes);
    f.net.run_for(Duration::from_millis(100));
    let trace = f.net.trace.clone().unwrap();
    let full = trace
        .iter()
        .find(|t| !t.delivered && t.node == f.server && t.payload[1] == 1)
        .expect("the full path comes back at once");
    assert!(
        full.at - at <= Duration::from_millis(20),
        "{:?}",
        full.at - at
    );
    let renewed = *messages(&full.payload)[0].message_id().unwrap();
    assert!(renewed.id > path_id.id, "{renewed:?} after {path_id:?}");
    assert_eq!(renewed.epoch, path_id.epoch);
    assert_eq!(f.net.nodes[f.server].engine.stats().nacks_received, 1);

    // A changed reservation is a trigger with a new id; so is a changed Tspec.
    f.net.with(f.client, |e, now| {
        e.reserve(now, c, Style::FixedFilter, flowspec_rate(50_000.0), true)
            .unwrap()
    });
    let sender = f.sender;
    f.net.with(f.server, |e, now| {
        e.add_sender(now, s, sender, TokenBucket::new(60_000.0, 10_000.0))
            .unwrap()
    });
    f.net.run_for(Duration::from_secs(5));
    let new_resv = last_id(&f.net, f.client, 2).unwrap();
    let new_path = last_id(&f.net, f.server, 1).unwrap();
    assert!(new_resv.id > resv_id.id && new_path.id > renewed.id);
    // And they were acknowledged: refreshes go back to summaries, nothing expires.
    f.net.run_for(Duration::from_secs(300));
    let trace = f.net.trace.take().unwrap();
    let late = |kind: u8| {
        trace
            .iter()
            .filter(|t| !t.delivered && t.payload[1] == kind && t.at > at + Duration::from_secs(60))
            .count()
    };
    assert_eq!(
        (late(1), late(2)),
        (0, 0),
        "full refreshes after the changes were acked"
    );
    assert!(late(15) > 0);
    for node in &f.net.nodes {
        no_spurious_end(node);
    }
}

/// Bytes on the wire over 10 refresh periods of steady state, `n` sessions between two hosts.
fn steady_bytes(n: u16, refresh_reduction: bool) -> (u64, u64) {
    let mut f = two_hosts_refreshing(111, refresh_reduction);
    for i in 0..n {
        f.setup(10_000 + i);
    }
    f.net.run_for(R * 3);
    let (bytes, datagrams) = (f.net.bytes_sent, f.net.sent.values().sum::<u64>());
    f.net.run_for(R * 10);
    for node in &f.net.nodes {
        no_spurious_end(node);
    }
    (
        f.net.bytes_sent - bytes,
        f.net.sent.values().sum::<u64>() - datagrams,
    )
}

#[test]
fn summary_refreshes_take_ten_times_fewer_bytes_than_full_refreshes() {
    let n = 1000;
    let (classic, classic_datagrams) = steady_bytes(n, false);
    let (reduced, reduced_datagrams) = steady_bytes(n, true);
    let per = |b: u64| b as f64 / 10.0 / f64::from(n);
    println!(
        "{n} sessions, per refresh interval and session: classic {:.1} B ({} datagrams), \
         refresh reduction {:.2} B ({} datagrams), {:.1}x fewer bytes",
        per(classic),
        classic_datagrams,
        per(reduced),
        reduced_datagrams,
        classic as f64 / reduced as f64
    );
    assert!(reduced * 10 <= classic, "{reduced} vs {classic}");
}

/// Summaries are per neighbor and exact: a changed state's old id and a torn-down state's id
/// leave them at once, so no Srefresh ever names an id the neighbor no longer holds (which it
/// would NACK), and once every session is gone no Srefresh goes at all.
#[test]
fn summaries_follow_changes_and_teardowns_exactly() {
    let mut f = two_hosts(131);
    let sessions: Vec<_> = (0..20).map(|i| f.setup(47_000 + i)).collect();
    f.net.run_for(R * 4);
    let refreshed = |f: &Flow2| {
        (
            f.net.nodes[f.server].engine.stats().srefresh_ids_refreshed,
            f.net.nodes[f.client].engine.stats().srefresh_ids_refreshed,
        )
    };
    let (server0, client0) = refreshed(&f);
    assert!(server0 > 0 && client0 > 0, "summary refreshes both ways");

    // Five senders change their Tspec: new ids, sent reliably; the old ids stop.
    let sender = f.sender;
    let wider = TokenBucket::new(250_000.0, 20_000.0);
    for (s, _) in &sessions[..5] {
        f.net.with(f.server, |e, now| {
            e.add_sender(now, *s, sender, wider).unwrap()
        });
    }
    // Five receivers go: their Resvs stop (ResvTear), and five senders go (PathTear).
    for (_, c) in &sessions[5..10] {
        f.net.with(f.client, |e, now| e.release(now, *c));
    }
    for (s, _) in &sessions[10..15] {
        f.net.with(f.server, |e, now| e.release(now, *s));
    }
    f.net.run_for(R * 6);
    for node in [f.server, f.client] {
        let st = f.net.nodes[node].engine.stats();
        assert_eq!(st.nacks_sent, 0, "{}: {st:?}", f.net.nodes[node].name);
        assert_eq!(st.nacks_received, 0, "{}: {st:?}", f.net.nodes[node].name);
        assert_eq!(st.expired, 0, "{}: {st:?}", f.net.nodes[node].name);
    }
    // The sessions left alone and the changed ones are still summary-refreshed.
    let (server1, client1) = refreshed(&f);
    assert!(server1 > server0 && client1 > client0);

    // Everything goes: after that, not one more Srefresh either way.
    for (s, c) in &sessions {
        f.net.with(f.server, |e, now| e.release(now, *s));
        f.net.with(f.client, |e, now| e.release(now, *c));
    }
    f.net.run_for(R);
    let sent =
        |f: &Flow2| [f.server, f.client].map(|n| f.net.nodes[n].engine.stats().srefresh_sent);
    let before = sent(&f);
    f.net.run_for(R * 4);
    assert_eq!(
        sent(&f),
        before,
        "Srefresh naming ids of state that is gone"
    );
    for node in [f.server, f.client] {
        assert_eq!(f.net.nodes[node].engine.session_count(), 0);
        assert_eq!(f.net.nodes[node].engine.stats().nacks_sent, 0);
    }
}

/// A neighbor that restarts without refresh reduction cannot say so while it has nothing to
/// send (a receiver waits for a Path): it ignores our Srefresh messages, which are then
/// never acknowledged. Given up, they count as NACKs: the states they named get their full
/// messages again, the neighbor's answer (without the capable flag) makes them classic, and
/// its reservations come back.
#[test]
fn a_neighbor_restarted_without_refresh_reduction_gets_full_messages_again() {
    let mut f = two_hosts(137);
    let sessions: Vec<_> = (0..10).map(|i| f.setup(48_000 + i)).collect();
    f.net.run_for(R * 4);
    assert!(f.net.nodes[f.server].engine.stats().srefresh_sent > 0);

    f.net.restart(f.client, classic_config(137 ^ 2));
    let mut clients = Vec::new();
    for i in 0..sessions.len() {
        let k = key(sock(f.receiver.ip(), 48_000 + i as u16));
        clients.push(f.net.with(f.client, |e, now| {
            let id = e.open_session(now, k).unwrap();
            e.reserve(now, id, Style::FixedFilter, flowspec(), true)
                .unwrap();
            id
        }));
    }
    // Within two refresh periods: the next tick's Srefresh, its retransmissions (3.5 s),
    // then the full Paths.
    f.net.run_for(R * 2);
    let client = &f.net.nodes[f.client];
    for id in &clients {
        assert!(established(client, *id), "{:?}", client.events_of(*id));
    }
    // And from then on classic refreshes keep them, with nothing expiring on either side.
    f.net.run_for(R * 10);
    let server = &f.net.nodes[f.server];
    assert!(
        server.engine.stats().srefresh_given_up > 0,
        "{:?}",
        server.engine.stats()
    );
    no_spurious_end(server);
    no_spurious_end(&f.net.nodes[f.client]);
    assert_eq!(server.installed.len(), sessions.len());
}

// --- reliable tears, errors and confirmations (RFC 2961 §4) ---------------------------

const RESV_ERR: u8 = 4;
const PATH_TEAR: u8 = 5;
const RESV_TEAR: u8 = 6;

/// Datagrams of `msg_type` `node` sent so far.
fn sent_count(net: &Net, node: usize, msg_type: u8) -> usize {
    net.sent_log
        .iter()
        .filter(|(_, n, t)| *n == node && *t == msg_type)
        .count()
}

/// A node's reliable-delivery counters: (sent, retransmissions, given up).
fn reliable(net: &Net, node: usize) -> (u64, u64, u64) {
    let st = net.nodes[node].engine.stats();
    (
        st.reliable_sent,
        st.reliable_retransmissions,
        st.reliable_given_up,
    )
}

/// Asserts how `reliable` changed on `node` since `before` (its stats in the message).
#[track_caller]
fn assert_reliable_since(net: &Net, node: usize, before: (u64, u64, u64), want: (u64, u64, u64)) {
    let now = reliable(net, node);
    let since = (now.0 - before.0, now.1 - before.1, now.2 - before.2);
    assert_eq!(since, want, "{:?}", net.nodes[node].engine.stats());
}

/// Two capable hosts with one established session (each knows the other is capable).
fn reliable_pair(seed: u64) -> (Flow2, SessionId, SessionId) {
    let mut f = two_hosts(seed);
    let (s, c) = f.setup(48_000);
    f.net.run_for(Duration::from_secs(5));
    assert!(established(&f.net.nodes[f.server], s));
    assert!(established(&f.net.nodes[f.client], c));
    (f, s, c)
}

/// Runs `f` on `node` with everything it sends at once lost.
fn lost<R>(
    net: &mut Net,
    node: usize,
    f: impl FnOnce(&mut qtoq::engine::Engine, Instant) -> R,
) -> R {
    let other = 1 - node;
    net.set_link(node, other, Link::down());
    let r = net.with(node, f);
    net.set_links(Link::default());
    r
}

#[test]
fn a_lost_path_tear_is_retransmitted_and_removes_the_path_state_within_a_second() {
    let (mut f, s, c) = reliable_pair(121);
    let paths = |f: &Flow2| f.net.nodes[f.client].path_count(c);
    assert_eq!(paths(&f), 1);
    let r0 = reliable(&f.net, f.server);
    lost(&mut f.net, f.server, |e, now| e.release(now, s));
    assert_eq!(sent_count(&f.net, f.server, PATH_TEAR), 1);
    // The retransmission after Rf = 500 ms; without it the state would wait for its
    // lifetime (minutes).
    f.net.run_for(Duration::from_millis(600));
    assert_eq!(paths(&f), 0);
    assert_eq!(sent_count(&f.net, f.server, PATH_TEAR), 2);
    f.net.run_for(Duration::from_secs(10));
    assert_reliable_since(&f.net, f.server, r0, (1, 1, 0));
    // Acknowledged: no more copies.
    assert_eq!(sent_count(&f.net, f.server, PATH_TEAR), 2);
}

#[test]
fn a_lost_resv_tear_is_retransmitted_and_removes_the_reservation_within_a_second() {
    let (mut f, s, c) = reliable_pair(122);
    let reservations = |f: &Flow2| f.net.nodes[f.server].reservation_count(s);
    assert_eq!(reservations(&f), 1);
    assert_eq!(f.net.nodes[f.server].installed.len(), 1);
    let r0 = reliable(&f.net, f.client);
    lost(&mut f.net, f.client, |e, now| e.release(now, c));
    f.net.run_for(Duration::from_millis(600));
    assert_eq!(reservations(&f), 0);
    assert!(f.net.nodes[f.server].installed.is_empty());
    f.net.run_for(Duration::from_secs(10));
    assert_reliable_since(&f.net, f.client, r0, (1, 1, 0));
    assert_eq!(sent_count(&f.net, f.client, RESV_TEAR), 2);
}

#[test]
fn an_acknowledged_tear_is_not_retransmitted() {
    let (mut f, s, _c) = reliable_pair(123);
    f.net.trace = Some(Vec::new());
    let acks_before = f.net.nodes[f.server].engine.stats().acks_received;
    let r0 = reliable(&f.net, f.server);
    f.net.with(f.server, |e, now| e.release(now, s));
    f.net.run_for(Duration::from_secs(10));
    let st = f.net.nodes[f.server].engine.stats();
    assert_reliable_since(&f.net, f.server, r0, (1, 0, 0));
    assert!(st.acks_received > acks_before);
    assert_eq!(sent_count(&f.net, f.server, PATH_TEAR), 1);
    // It asked for the acknowledgment.
    let trace = f.net.trace.take().unwrap();
    let tear = trace
        .iter()
        .find(|t| !t.delivered && t.payload[1] == PATH_TEAR)
        .unwrap();
    let id = messages(&tear.payload)[0].message_id().copied().unwrap();
    assert_ne!(id.flags & MESSAGE_ID_FLAG_ACK_DESIRED, 0);
}

#[test]
fn a_neighbor_without_refresh_reduction_gets_tears_without_message_id_sent_once() {
    let mut net = Net::new(124);
    let rr = net.add("rr", v4(1), rr_config(1));
    let classic = net.add("classic", v4(2), classic_config(2));
    let (s, c) = session(&mut net, rr, classic, 40_000);
    net.run_for(Duration::from_secs(5));
    assert!(established(&net.nodes[rr], s));
    net.trace = Some(Vec::new());
    lost(&mut net, rr, |e, now| e.release(now, s));
    net.run_for(Duration::from_secs(10));
    let trace = net.trace.take().unwrap();
    let tears: Vec<_> = trace
        .iter()
        .filter(|t| !t.delivered && t.payload[1] == PATH_TEAR)
        .collect();
    assert_eq!(tears.len(), 1);
    assert!(messages(&tears[0].payload)[0].message_id().is_none());
    let st = net.nodes[rr].engine.stats();
    assert_eq!(
        (st.reliable_sent, st.reliable_retransmissions),
        (0, 0),
        "{st:?}"
    );
    // As in RFC 2205: the lost tear leaves the state to its lifetime.
    let info = net.nodes[classic].engine.session_info(c).unwrap();
    assert_eq!(info.paths.len(), 1);
}

#[test]
fn a_lost_resv_err_is_retransmitted_until_acknowledged() {
    let (mut f, _s, c) = reliable_pair(125);
    let rule = *f.net.nodes[f.server].installed.keys().next().unwrap();
    let failure = RuleFailure {
        error: RsvpError::new(ErrorCode::POLICY_CONTROL_FAILURE, 0),
        reason: "revoked".into(),
    };
    let r0 = reliable(&f.net, f.server);
    lost(&mut f.net, f.server, |e, now| {
        e.rule_outcome(now, rule, Err(failure))
    });
    assert_eq!(sent_count(&f.net, f.server, RESV_ERR), 1);
    f.net.run_for(Duration::from_millis(600));
    let resv_error = |f: &Flow2| {
        f.net.nodes[f.client]
            .events_of(c)
            .iter()
            .any(|e| matches!(e, Event::ResvError { .. }))
    };
    assert!(resv_error(&f));
    f.net.run_for(Duration::from_secs(10));
    assert_reliable_since(&f.net, f.server, r0, (1, 1, 0));
    assert_eq!(sent_count(&f.net, f.server, RESV_ERR), 2);
}

#[test]
fn a_lost_path_err_is_retransmitted_with_its_id_until_acknowledged() {
    let mut f = two_hosts(126);
    let mut config = config(126 ^ 2);
    // One path state from the server: its second sender is refused with a PathErr.
    config.neighbor_limits.paths = 1;
    f.net.restart(f.client, config);
    let (s, _c) = f.setup(48_000);
    f.net.run_for(Duration::from_secs(5));
    assert!(established(&f.net.nodes[f.server], s));
    f.net.trace = Some(Vec::new());
    let k = key(sock(f.receiver.ip(), 48_001));
    let sender = f.sender;
    let second = f.net.with(f.server, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.add_sender(now, id, sender, tspec()).unwrap();
        id
    });
    // The PathErr answering the Path is lost.
    f.net.set_link(f.client, f.server, Link::down());
    f.net.run_for(Duration::from_millis(6));
    f.net.set_links(Link::default());
    let trace = f.net.trace.clone().unwrap();
    // (Sub-messages of Bundles included.)
    let path_err_ids = |t: &Trace| -> Vec<MessageId> {
        messages(&t.payload)
            .iter()
            .filter(|m| m.msg_type() == MsgType::PathErr)
            .filter_map(|m| m.message_id().copied())
            .collect()
    };
    let id = trace
        .iter()
        .filter(|t| !t.delivered)
        .find_map(|t| path_err_ids(t).first().copied())
        .expect("a PathErr");
    f.net.run_for(Duration::from_secs(10));
    let trace = f.net.trace.take().unwrap();
    assert!(
        trace
            .iter()
            .any(|t| t.delivered && path_err_ids(t).contains(&id)),
        "the PathErr {id:?} came again"
    );
    assert!(f.net.nodes[f.server]
        .events_of(second)
        .iter()
        .any(|e| matches!(e, Event::PathError { .. })));
    let st = f.net.nodes[f.client].engine.stats();
    assert!(st.reliable_retransmissions >= 1, "{st:?}");
    assert_eq!(st.reliable_given_up, 0, "{st:?}");
}

#[test]
fn a_duplicate_tear_is_acknowledged_again_so_its_sender_stops() {
    let (mut f, s, c) = reliable_pair(127);
    // The tear arrives, but its acknowledgments are lost for a while.
    f.net.set_link(f.client, f.server, Link::down());
    f.net.with(f.server, |e, now| e.release(now, s));
    f.net.run_for(Duration::from_millis(700));
    assert_eq!(f.net.nodes[f.client].path_count(c), 0);
    f.net.set_links(Link::default());
    f.net.run_for(Duration::from_secs(10));
    let st = f.net.nodes[f.server].engine.stats();
    // Sent at 0, 0.5 s (acknowledged, lost) and 1.5 s (acknowledged): then no more.
    assert_eq!(
        (st.reliable_retransmissions, st.reliable_given_up),
        (2, 0),
        "{st:?}"
    );
    assert_eq!(sent_count(&f.net, f.server, PATH_TEAR), 3);
}

#[test]
fn a_retransmitted_tear_overtaken_by_a_new_path_leaves_the_new_state() {
    let (mut f, s, c) = reliable_pair(128);
    lost(&mut f.net, f.server, |e, now| e.release(now, s));
    // The sender comes back at once: a new Path (a newer id) goes before the tear's
    // retransmission.
    let k = key(sock(f.receiver.ip(), 48_000));
    let sender = f.sender;
    f.net.with(f.server, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.add_sender(now, id, sender, tspec()).unwrap();
    });
    f.net.run_for(Duration::from_secs(10));
    assert_eq!(sent_count(&f.net, f.server, PATH_TEAR), 2);
    let client = &f.net.nodes[f.client];
    assert_eq!(client.path_count(c), 1);
    assert_eq!(client.engine.stats().out_of_order, 1);
    // Acknowledged all the same.
    let st = f.net.nodes[f.server].engine.stats();
    assert_eq!(
        (st.reliable_retransmissions, st.reliable_given_up),
        (1, 0),
        "{st:?}"
    );
}

#[test]
fn unacknowledged_tears_stop_after_the_retry_limit_and_are_forgotten() {
    let (mut f, s, _c) = reliable_pair(129);
    f.net.set_link(f.server, f.client, Link::down());
    f.net.set_link(f.client, f.server, Link::down());
    let r0 = reliable(&f.net, f.server);
    let before = f.net.nodes[f.server].engine.state_bytes();
    f.net.with(f.server, |e, now| e.release(now, s));
    let holding = f.net.nodes[f.server].engine.state_bytes();
    let tear_len = f
        .net
        .captured
        .iter()
        .rev()
        .find(|p| p[1] == PATH_TEAR)
        .map_or(0, Vec::len);
    f.net.run_for(Duration::from_secs(60));
    // Rl = 3 retransmissions (0.5 s, 1.5 s, 3.5 s), given up a last interval later.
    assert_reliable_since(&f.net, f.server, r0, (1, 3, 1));
    assert_eq!(sent_count(&f.net, f.server, PATH_TEAR), 4);
    // The copy held was freed (nothing else changed meanwhile: the links are down).
    let after = f.net.nodes[f.server].engine.state_bytes();
    println!("state bytes: {before} with the session, {holding} holding the tear, {after} after");
    assert!(
        tear_len > 0 && after + tear_len <= holding,
        "{after} + {tear_len} vs {holding}"
    );
}

// --- Bundles sent (RFC 2961 §3) -------------------------------------------------------------

/// The sub-messages of a Bundle's bytes, each as its own slice (after the 8-byte header).
fn sub_messages(payload: &[u8]) -> Vec<&[u8]> {
    let mut subs = Vec::new();
    let mut offset = 8;
    while offset < payload.len() {
        let len = usize::from(u16::from_be_bytes([
            payload[offset + 6],
            payload[offset + 7],
        ]));
        assert!(
            len >= 8 && offset + len <= payload.len(),
            "sub-message length {len}"
        );
        subs.push(&payload[offset..offset + len]);
        offset += len;
    }
    subs
}

/// Checks every Bundle a node sent (in the trace): within the size limit, the RR flag set,
/// the Send_TTL of its sub-messages, at least two sub-messages each of which decodes alone as
/// an RFC 2205 message. Returns (datagrams, messages) sent by `node`: RSVP datagrams and
/// the messages in them (a Bundle counts its sub-messages).
fn check_sent(trace: &[Trace], node: usize) -> (usize, usize) {
    let (mut datagrams, mut messages) = (0, 0);
    for t in trace.iter().filter(|t| !t.delivered && t.node == node) {
        datagrams += 1;
        if t.payload[1] != MsgType::Bundle.number() {
            messages += 1;
            continue;
        }
        assert!(t.payload.len() <= MAX_BUNDLE_BYTES, "{}", t.payload.len());
        assert!(rr_flag(&t.payload));
        let bundle = Message::decode(&t.payload).expect("a valid bundle");
        assert!(
            bundle.integrity().is_none(),
            "sub-messages carry the INTEGRITY"
        );
        let subs = sub_messages(&t.payload);
        assert!(subs.len() >= 2, "a bundle of {}", subs.len());
        assert_eq!(subs.len(), bundle.bundled.len());
        for sub in subs {
            let m = Message::decode(sub).expect("each sub-message decodes alone");
            assert!((1..=7).contains(&m.msg_type().number()), "{m:?}");
            assert_eq!(
                sub[4], t.payload[4],
                "Send_TTL of the bundle and its messages"
            );
            assert!(rr_flag(sub));
            messages += 1;
        }
    }
    (datagrams, messages)
}

/// `n` sessions from `server` to `client`, each side opened in one batch of API calls (one
/// drain: what they queue goes out together).
fn batch_sessions(
    net: &mut Net,
    server: usize,
    client: usize,
    first_port: u16,
    n: u16,
) -> Vec<(SessionId, SessionId)> {
    let (server_addr, client_addr) = (net.nodes[server].addr, net.nodes[client].addr);
    let keys: Vec<_> = (0..n)
        .map(|i| key(sock(client_addr, first_port + i)))
        .collect();
    let clients: Vec<SessionId> = net.with(client, |e, now| {
        keys.iter()
            .map(|k| {
                let id = e.open_session(now, *k).unwrap();
                e.reserve(now, id, Style::FixedFilter, flowspec(), true)
                    .unwrap();
                id
            })
            .collect()
    });
    let servers: Vec<SessionId> = net.with(server, |e, now| {
        keys.iter()
            .map(|k| {
                let id = e.open_session(now, *k).unwrap();
                e.add_sender(now, id, sock(server_addr, 8080), tspec())
                    .unwrap();
                id
            })
            .collect()
    });
    servers.into_iter().zip(clients).collect()
}

/// Many sessions set up at once between two capable hosts: returns the (datagrams,
/// messages) each host sent and the hosts' stats.
fn setup_many(bundling: bool, n: u16) -> ((usize, usize), (usize, usize), Flow2) {
    let mut f = two_hosts(121);
    for node in [f.server, f.client] {
        let mut config = config(121 ^ node as u64);
        config.bundling = bundling;
        f.net.restart(node, config);
    }
    // One session first: each host learns the other is capable.
    let first = f.setup(48_000);
    f.net.run_for(Duration::from_secs(5));
    f.net.trace = Some(Vec::new());
    let transmitted =
        |f: &Flow2, node: usize| f.net.nodes[node].engine.stats().transmitted as usize;
    let before = (transmitted(&f, f.server), transmitted(&f, f.client));
    let sessions = batch_sessions(&mut f.net, f.server, f.client, 48_001, n);
    f.net.run_for(Duration::from_secs(10));
    for (s, c) in sessions.iter().chain([&first]) {
        assert!(
            established(&f.net.nodes[f.server], *s),
            "bundling {bundling}"
        );
        assert!(
            established(&f.net.nodes[f.client], *c),
            "bundling {bundling}"
        );
    }
    assert_eq!(f.net.nodes[f.server].installed.len(), usize::from(n) + 1);
    for node in &f.net.nodes {
        no_spurious_end(node);
        let st = node.engine.stats();
        assert_eq!(st.malformed + st.out_of_order, 0, "{st:?}");
    }
    let trace = f.net.trace.take().unwrap();
    let server = check_sent(&trace, f.server);
    let client = check_sent(&trace, f.client);
    // `transmitted` counts datagrams: a Bundle is one.
    assert_eq!(transmitted(&f, f.server) - before.0, server.0);
    assert_eq!(transmitted(&f, f.client) - before.1, client.0);
    (server, client, f)
}

#[test]
fn many_sessions_set_up_at_once_go_in_bundles_and_all_are_established() {
    let n = 200;
    let (server, client, f) = setup_many(true, n);
    let (s, c) = (
        f.net.nodes[f.server].engine.stats(),
        f.net.nodes[f.client].engine.stats(),
    );
    println!(
        "{n} sessions: server sent {} messages in {} datagrams ({} bundles), client {} in {} \
         ({} bundles)",
        server.1, server.0, s.bundles_sent, client.1, client.0, c.bundles_sent
    );
    // The server's Paths went out together: in Bundles of several each.
    assert!(
        s.bundles_sent > 0 && s.bundled_messages >= u64::from(n),
        "{s:?}"
    );
    // (Its ResvConfs answer Resvs, mostly one by one.)
    assert!(server.0 * 2 <= server.1, "{server:?}");
    // The client's Resvs answer Bundles: those over a datagram's budget are held back for a
    // moment, and then go in Bundles too.
    assert!(c.bundles_sent > 0, "{c:?}");
    assert!(client.0 < client.1, "{client:?}");
    assert_eq!(
        s.bundles_received + c.bundles_received,
        s.bundles_sent + c.bundles_sent
    );
    // Every bundled message counted once.
    let bundled = |(datagrams, messages): (usize, usize), st: &qtoq::engine::Stats| {
        messages - datagrams == (st.bundled_messages - st.bundles_sent) as usize
    };
    assert!(bundled(server, s) && bundled(client, c));

    // Without bundling: the same setup, one datagram per message.
    let (server_off, client_off, f) = setup_many(false, n);
    for node in &f.net.nodes {
        assert_eq!(node.engine.stats().bundles_sent, 0);
    }
    assert_eq!(server_off.0, server_off.1);
    assert_eq!(client_off.0, client_off.1);
    assert!(server.0 * 2 <= server_off.0, "{server:?} vs {server_off:?}");
    assert!(client.0 < client_off.0, "{client:?} vs {client_off:?}");
}

#[test]
fn a_neighbor_without_refresh_reduction_never_gets_a_bundle() {
    let mut net = Net::new(131);
    let rr = net.add("rr", v4(1), rr_config(1));
    let classic = net.add("classic", v4(2), classic_config(2));
    net.trace = Some(Vec::new());
    // Both ways, many sessions at once, after each host has heard the other.
    let one = session(&mut net, rr, classic, 40_000);
    net.run_for(Duration::from_secs(5));
    let to_classic = batch_sessions(&mut net, rr, classic, 41_000, 50);
    let from_classic = batch_sessions(&mut net, classic, rr, 42_000, 50);
    net.run_for(Duration::from_secs(200));
    for (s, c) in to_classic.iter().chain([&one]) {
        assert!(established(&net.nodes[rr], *s) && established(&net.nodes[classic], *c));
    }
    for (s, c) in &from_classic {
        assert!(established(&net.nodes[classic], *s) && established(&net.nodes[rr], *c));
    }
    let trace = net.trace.take().unwrap();
    for t in trace.iter().filter(|t| !t.delivered) {
        assert_ne!(
            t.payload[1],
            MsgType::Bundle.number(),
            "a bundle from node {}",
            t.node
        );
    }
    assert_eq!(check_sent(&trace, rr).0, check_sent(&trace, rr).1);
    assert_eq!(net.nodes[rr].engine.stats().bundles_sent, 0);
    for node in &net.nodes {
        no_spurious_end(node);
    }
}

#[test]
fn bundles_between_keyed_hosts_carry_signed_sub_messages_and_nothing_is_dropped() {
    use qtoq::integrity::{self, Algorithm, Key, KeyChain, KeyId, Secret};
    use std::time::UNIX_EPOCH;
    for algorithm in [Algorithm::HmacMd5, Algorithm::HmacSha256] {
        let k = Key {
            peer: "10.0.0.0/24".parse().unwrap(),
            key_id: KeyId::new(7).unwrap(),
            algorithm,
            secret: Secret::new(b"bundled secret".to_vec()).unwrap(),
        };
        let chain = KeyChain::new(vec![k]).unwrap();
        let mut f = two_hosts(141);
        for node in [f.server, f.client] {
            let now = f.net.now;
            let engine = &mut f.net.nodes[node].engine;
            engine.set_keys(chain.clone());
            engine.set_wall_clock(now, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        }
        // First contact (and the integrity handshake both ways) with one session.
        let first = f.setup(49_000);
        f.net.run_for(Duration::from_secs(10));
        f.net.trace = Some(Vec::new());
        let drops = |st: &qtoq::engine::Stats| {
            [
                st.integrity_missing,
                st.integrity_bad_digest,
                st.integrity_replayed,
                st.integrity_unknown_key,
                st.integrity_unverified,
            ]
        };
        let before: Vec<_> = f
            .net
            .nodes
            .iter()
            .map(|n| drops(n.engine.stats()))
            .collect();
        let sessions = batch_sessions(&mut f.net, f.server, f.client, 49_001, 100);
        f.net.run_for(Duration::from_secs(10));
        for (s, c) in sessions.iter().chain([&first]) {
            assert!(established(&f.net.nodes[f.server], *s));
            assert!(established(&f.net.nodes[f.client], *c));
        }
        let trace = f.net.trace.take().unwrap();
        let mut bundles = 0;
        for t in trace.iter().filter(|t| !t.delivered) {
            let subs = if t.payload[1] == MsgType::Bundle.number() {
                bundles += 1;
                sub_messages(&t.payload)
            } else {
                vec![&t.payload[..]]
            };
            for sub in subs {
                integrity::verify(&chain, v4(1), sub).expect("every message signed");
            }
        }
        check_sent(&trace, f.server);
        check_sent(&trace, f.client);
        assert!(bundles > 0);
        // Nothing dropped by the INTEGRITY gate since the handshake of first contact.
        for (node, before) in f.net.nodes.iter().zip(before) {
            let st = node.engine.stats();
            assert!(st.bundles_sent > 0, "{}: {st:?}", node.name);
            assert_eq!(drops(st), before, "{}: {st:?}", node.name);
            no_spurious_end(node);
        }
    }
}

#[test]
fn a_forged_sub_message_in_an_unsigned_bundle_from_a_keyed_neighbor_is_dropped() {
    use qtoq::integrity::{Algorithm, Key, KeyChain, KeyId, Secret};
    let k = Key {
        peer: "10.0.0.0/24".parse().unwrap(),
        key_id: KeyId::new(7).unwrap(),
        algorithm: Algorithm::HmacMd5,
        secret: Secret::new(b"bundled secret".to_vec()).unwrap(),
    };
    let mut f = two_hosts(151);
    f.net.nodes[f.client]
        .engine
        .set_keys(KeyChain::new(vec![k]).unwrap());
    let (_, c) = f.setup(50_000);
    // An unsigned Path from the keyed server's address, alone and bundled: neither counts.
    let path = f.net.captured[0].clone();
    assert_eq!(path[1], 1);
    let mut bundle = Message::bundle(vec![
        Message::decode(&path).unwrap(),
        Message::decode(&path).unwrap(),
    ]);
    bundle.flags = qtoq::wire::FLAG_REFRESH_REDUCTION_CAPABLE;
    let bytes = bundle.encode().unwrap();
    let before = f.net.nodes[f.client].engine.stats().integrity_missing;
    f.net.inject(f.client, f.sender.ip(), &bytes);
    let st = f.net.nodes[f.client].engine.stats();
    assert_eq!(st.integrity_missing, before + 2, "{st:?}");
    assert!(!established(&f.net.nodes[f.client], c));
    assert!(f.net.nodes[f.client].events_of(c).is_empty());
}
