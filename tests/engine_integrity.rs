//! RFC 2747 INTEGRITY between two simulated hosts: signed setup, forged / unsigned /
//! replayed datagrams dropped and counted without effect, key rollover, the integrity
//! handshake after a restart (with a replay injected right after it), and sequence numbers
//! that keep increasing across a restart.

mod engine_support;

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine_support::*;
use qtoq::engine::{Engine, EngineConfig, Event, Stats, Style};
use qtoq::flow::AdmitAll;
use qtoq::integrity::{self, Algorithm, Key, KeyChain, KeyId, Secret};
use qtoq::wire::{Message, MsgType, RsvpHop, Session, Style as WireStyle};

const PATH: u8 = 1;
const RESV: u8 = 2;
const SREFRESH: u8 = 15;

fn key(id: u64, algorithm: Algorithm) -> Key {
    Key {
        peer: "10.0.0.0/24".parse().unwrap(),
        key_id: KeyId::new(id).unwrap(),
        algorithm,
        secret: Secret::new(format!("secret number {id}").into_bytes()).unwrap(),
    }
}

fn chain(keys: &[Key]) -> KeyChain {
    KeyChain::new(keys.to_vec()).unwrap()
}

/// A fake wall clock: 2023-11-14 plus the simulation's elapsed time plus `skew`.
fn wall(net: &Net, skew: Duration) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000) + net.elapsed() + skew
}

fn keyed_config(seed: u64, keys: &KeyChain) -> EngineConfig {
    let mut c = config(seed);
    c.integrity = keys.clone();
    c
}

/// Two hosts with `keys` on both ends and the fake wall clock.
fn keyed_hosts(seed: u64, keys: &[Key]) -> Flow2 {
    let mut f = two_hosts(seed);
    for node in [f.server, f.client] {
        let now = f.net.now;
        let w = wall(&f.net, Duration::ZERO);
        let engine = &mut f.net.nodes[node].engine;
        engine.set_keys(chain(keys));
        engine.set_wall_clock(now, w);
    }
    f
}

fn established(node: &Node, id: qtoq::engine::SessionId) -> bool {
    node.events_of(id)
        .iter()
        .any(|e| matches!(e, Event::Established { .. }))
}

fn ended(node: &Node) -> bool {
    node.events.iter().any(|(_, _, e)| e.is_error_or_end())
}

/// The INTEGRITY of an encoded message.
fn integrity_of(bytes: &[u8]) -> qtoq::wire::Integrity {
    Message::decode(bytes)
        .expect("valid message")
        .integrity()
        .cloned()
        .expect("INTEGRITY present")
}

fn drops(stats: &Stats) -> [u64; 5] {
    [
        stats.integrity_missing,
        stats.integrity_unknown_key,
        stats.integrity_bad_digest,
        stats.integrity_replayed,
        stats.integrity_unverified,
    ]
}

#[test]
fn signed_setup_establishes_and_every_transmit_carries_a_valid_integrity() {
    for algorithm in [Algorithm::HmacMd5, Algorithm::HmacSha256] {
        let keys = [key(7, algorithm)];
        let mut f = keyed_hosts(21, &keys);
        let (s, c) = f.setup(40_000);
        f.net.run_for(Duration::from_secs(10));
        let (server, client) = (&f.net.nodes[f.server], &f.net.nodes[f.client]);
        assert!(established(server, s), "{:?}", server.events);
        assert!(established(client, c), "{:?}", client.events);
        assert_eq!(server.installed.len(), 1);
        // First contact: each side challenged the other once and got its answer.
        for node in [server, client] {
            let st = node.engine.stats();
            assert_eq!(st.handshakes_completed, 1, "{}: {st:?}", node.name);
            assert_eq!(st.challenges_answered, 1, "{}: {st:?}", node.name);
            assert_eq!(st.integrity_missing + st.integrity_bad_digest, 0);
            assert_eq!(st.integrity_replayed + st.integrity_unknown_key, 0);
        }
        let chain = chain(&keys);
        let mut sequences = Vec::new();
        assert!(f.net.captured.len() > 6);
        for bytes in &f.net.captured {
            if bytes[1] == MsgType::IntegrityChallenge.number() {
                // <Common Header> <CHALLENGE>: unsigned by format (RFC 2747 §2.2).
                assert!(!integrity::carried(bytes));
                continue;
            }
            let i = integrity_of(bytes);
            assert_eq!(i.flags, 1, "H flag: we answer challenges");
            assert_eq!(i.digest.len(), algorithm.digest_len());
            // Both hosts are in the key's prefix: the source does not matter for the lookup.
            let ok = integrity::verify(&chain, v4(1), bytes).expect("valid digest");
            assert_eq!(ok.key_id.get(), 7);
            sequences.push(ok.sequence);
        }
        // Clock-based: the high 32 bits are the (fake) UNIX seconds.
        assert!(sequences.iter().all(|s| s >> 32 >= 1_700_000_000));
    }
}

/// An established pair with one key; returns it and the session ids.
fn keyed_pair(seed: u64) -> (Flow2, qtoq::engine::SessionId, qtoq::engine::SessionId) {
    let mut f = keyed_hosts(seed, &[key(7, Algorithm::HmacMd5)]);
    let (s, c) = f.setup(40_000);
    f.net.run_for(Duration::from_secs(10));
    assert!(established(&f.net.nodes[f.server], s));
    assert!(established(&f.net.nodes[f.client], c));
    (f, s, c)
}

#[test]
fn unsigned_forged_bad_and_replayed_datagrams_are_dropped_without_effect() {
    let (mut f, _, _) = keyed_pair(22);
    let (server, client) = (f.server, f.client);
    let first_path = f
        .net
        .captured
        .iter()
        .find(|b| b[1] == PATH)
        .unwrap()
        .clone();
    let a_resv = f
        .net
        .captured
        .iter()
        .find(|b| b[1] == RESV)
        .unwrap()
        .clone();
    let before_server = f.net.nodes[server].engine.stats().clone();
    let before_client = f.net.nodes[client].engine.stats().clone();
    let events = (
        f.net.nodes[server].events.len(),
        f.net.nodes[client].events.len(),
    );
    let actions = f.net.nodes[server].actions.len();
    let transmitted = f.net.nodes[server].engine.stats().transmitted;

    // 1. A replay of the first Path (its sequence number is long below the window).
    f.net.inject(client, v4(1), &first_path);
    // 2. A ResvTear from the client's address without INTEGRITY: would tear down.
    let receiver = sock(v4(2), 40_000);
    let tear = Message::resv_tear(
        Session::new(receiver, 6),
        RsvpHop::new(v4(2), 0),
        WireStyle::FixedFilter,
        &[qtoq::wire::FilterSpec::new(f.sender)],
    );
    let tear_bytes = tear.encode().unwrap();
    f.net.inject(server, v4(2), &tear_bytes);
    // 3. The same ResvTear signed with a key the server does not hold.
    let mut wrong_key = tear_bytes.clone();
    integrity::sign(&key(8, Algorithm::HmacMd5), u64::MAX - 1, 1, &mut wrong_key).unwrap();
    f.net.inject(server, v4(2), &wrong_key);
    // 4. Signed with the right key id but the wrong secret: a bad digest.
    let mut bad_secret = key(7, Algorithm::HmacMd5);
    bad_secret.secret = Secret::new(*b"guessed").unwrap();
    let mut forged = tear_bytes.clone();
    integrity::sign(&bad_secret, u64::MAX - 1, 1, &mut forged).unwrap();
    f.net.inject(server, v4(2), &forged);
    // 5. A captured Resv with one digest bit flipped.
    let mut flipped = a_resv.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    f.net.inject(server, v4(2), &flipped);
    // 6. The captured Resv replayed as is.
    f.net.inject(server, v4(2), &a_resv);
    // 7. A signed message from an address no key covers: INTEGRITY without a security
    //    association is dropped too.
    let mut stranger = first_path.clone();
    stranger[2..4].fill(0);
    f.net
        .inject(client, "192.0.2.9".parse::<IpAddr>().unwrap(), &stranger);

    let st = f.net.nodes[server].engine.stats();
    let ct = f.net.nodes[client].engine.stats();
    let diff = |a: [u64; 5], b: [u64; 5]| -> [u64; 5] { std::array::from_fn(|i| a[i] - b[i]) };
    // missing, unknown key, bad digest, replayed, unverified
    assert_eq!(diff(drops(st), drops(&before_server)), [1, 1, 2, 1, 0]);
    assert_eq!(diff(drops(ct), drops(&before_client)), [0, 1, 0, 1, 0]);
    // Nothing happened: no event, no rule change, nothing sent back (no error, no challenge).
    assert_eq!(f.net.nodes[server].events.len(), events.0);
    assert_eq!(f.net.nodes[client].events.len(), events.1);
    assert_eq!(f.net.nodes[server].actions.len(), actions);
    assert_eq!(st.transmitted, transmitted);
    assert_eq!(st.errors_sent + ct.errors_sent, 0);
    assert_eq!(st.challenges_sent, before_server.challenges_sent);
    // And the reservation lives on.
    f.net.run_for(Duration::from_secs(120));
    assert!(!ended(&f.net.nodes[server]) && !ended(&f.net.nodes[client]));
    assert_eq!(f.net.nodes[server].installed.len(), 1);
}

#[test]
fn rollover_accepts_the_old_and_new_keys_and_sends_with_the_new() {
    let (mut f, _, _) = keyed_pair(23);
    let (server, client) = (f.server, f.client);
    let old = key(7, Algorithm::HmacMd5);
    let new = key(9, Algorithm::HmacSha256);
    f.net.nodes[server]
        .engine
        .set_keys(chain(&[old.clone(), new.clone()]));
    f.net.nodes[client]
        .engine
        .set_keys(chain(&[old.clone(), new.clone()]));
    let handshakes = f.net.nodes[client].engine.stats().handshakes_completed;
    let seen_before = f.net.captured.len();
    // Refreshes now go out with the new key (summary refreshes too: RFC 2961 is on).
    let mut new_key_sends = 0;
    for _ in 0..6 {
        f.net.captured.clear();
        f.net.run_for(Duration::from_secs(20));
        for bytes in &f.net.captured {
            if bytes[1] == PATH || bytes[1] == RESV || bytes[1] == SREFRESH {
                let i = integrity_of(bytes);
                assert_eq!(KeyId::from_bytes(i.key_id), new.key_id);
                new_key_sends += 1;
            }
        }
    }
    assert!(seen_before > 0 && new_key_sends >= 4, "{new_key_sends}");
    // A new key for a neighbor is a new sequence stream: one handshake for it.
    assert_eq!(
        f.net.nodes[client].engine.stats().handshakes_completed,
        handshakes + 1
    );
    assert!(!ended(&f.net.nodes[server]) && !ended(&f.net.nodes[client]));
    assert_eq!(f.net.nodes[server].installed.len(), 1);
    // The old key is still accepted: a fresh message signed with it (its window was kept).
    let c = f.net.nodes[client].engine.stats().clone();
    let mut old_signed = old_path(&f);
    let next = u64::MAX / 2;
    integrity::sign(&old, next, 1, &mut old_signed).unwrap();
    f.net.inject(client, v4(1), &old_signed);
    let after = f.net.nodes[client].engine.stats();
    assert_eq!(drops(after), drops(&c), "old-key message accepted");
    // Once the old key is removed it is refused.
    f.net.nodes[client]
        .engine
        .set_keys(chain(std::slice::from_ref(&new)));
    let mut old_signed = old_path(&f);
    integrity::sign(&old, next + 1, 1, &mut old_signed).unwrap();
    f.net.inject(client, v4(1), &old_signed);
    assert_eq!(
        f.net.nodes[client].engine.stats().integrity_unknown_key,
        c.integrity_unknown_key + 1
    );
}

/// An unsigned Path of the server's flow, as the server would send it.
fn old_path(f: &Flow2) -> Vec<u8> {
    Message::path(
        Session::new(sock(v4(2), 40_000), 6),
        RsvpHop::new(v4(1), 0),
        qtoq::wire::TimeValues::new(Duration::from_secs(30)),
        qtoq::wire::FilterSpec::new(f.sender),
        tspec(),
        None,
    )
    .encode()
    .unwrap()
}

#[test]
fn a_restarted_host_challenges_refuses_replays_and_the_reservation_comes_back() {
    let (mut f, _, _) = keyed_pair(24);
    let (server, client) = (f.server, f.client);
    let keys = chain(&[key(7, Algorithm::HmacMd5)]);
    // Every Path the server sent so far, as an attacker would have recorded them.
    let recorded: Vec<Vec<u8>> = f
        .net
        .captured
        .iter()
        .filter(|b| b[1] == PATH)
        .cloned()
        .collect();
    assert!(!recorded.is_empty());
    f.net.run_for(Duration::from_secs(5));

    // The client restarts: sequence state gone.
    f.net.restart(client, keyed_config(99, &keys));
    let w = wall(&f.net, Duration::ZERO);
    f.net.with(client, |e, now| e.set_wall_clock(now, w));
    // The application comes back and asks again.
    let k = key_of(sock(v4(2), 40_000));
    let c = f.net.with(client, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.reserve(now, id, Style::FixedFilter, flowspec(), true)
            .unwrap();
        id
    });
    // Right after the restart a replayed Path is NOT accepted: the client challenges the
    // server and drops it.
    let sent_before = f
        .net
        .sent
        .get(&MsgType::IntegrityChallenge.number())
        .copied();
    for replay in &recorded {
        f.net.inject(client, v4(1), replay);
    }
    let st = f.net.nodes[client].engine.stats().clone();
    assert_eq!(st.integrity_unverified, recorded.len() as u64, "{st:?}");
    assert_eq!(st.challenges_sent, 1, "one outstanding challenge: {st:?}");
    assert_eq!(
        f.net
            .sent
            .get(&MsgType::IntegrityChallenge.number())
            .copied(),
        Some(sent_before.unwrap_or(0) + 1)
    );
    assert!(f.net.nodes[client].events_of(c).is_empty());
    // The server answers; the challenge's answer starts the client's window at the
    // server's current sequence number, so the recorded Paths stay refused.
    f.net.run_for(Duration::from_millis(100));
    assert_eq!(f.net.nodes[client].engine.stats().handshakes_completed, 1);
    assert_eq!(f.net.nodes[server].engine.stats().challenges_answered, 2);
    let replayed = f.net.nodes[client].engine.stats().integrity_replayed;
    for replay in &recorded {
        f.net.inject(client, v4(1), replay);
    }
    assert_eq!(
        f.net.nodes[client].engine.stats().integrity_replayed,
        replayed + recorded.len() as u64
    );
    assert!(f.net.nodes[client].events_of(c).is_empty());
    // The server's next refresh is fresh: the reservation is set up again.
    f.net.run_for(Duration::from_secs(90));
    assert!(
        established(&f.net.nodes[client], c),
        "{:?}",
        f.net.nodes[client].events
    );
    assert!(
        !ended(&f.net.nodes[server]),
        "{:?}",
        f.net.nodes[server].events
    );
    assert_eq!(f.net.nodes[server].installed.len(), 1);
}

fn key_of(destination: std::net::SocketAddr) -> qtoq::engine::SessionKey {
    engine_support::key(destination)
}

#[test]
fn sequence_numbers_keep_increasing_across_a_restart() {
    let keys = chain(&[key(7, Algorithm::HmacMd5)]);
    let start = std::time::Instant::now();
    let epoch = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let session = engine_support::key(sock(v4(2), 40_000));
    // One run of a sender: its Paths' sequence numbers over `secs` seconds of refreshes.
    let run = |offset: Duration, secs: u64| -> Vec<u64> {
        let mut config = config(5);
        config.integrity = keys.clone();
        config.local_addrs.push(v4(1));
        let mut engine = Engine::new(config, Box::new(AdmitAll));
        let t0 = start + offset;
        engine.set_wall_clock(t0, epoch + offset);
        let id = engine.open_session(t0, session).unwrap();
        engine
            .add_sender(t0, id, sock(v4(1), 8080), tspec())
            .unwrap();
        let mut seqs = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(secs) {
            while let Some(t) = engine.poll_transmit() {
                seqs.push(integrity_of(&t.payload).sequence);
            }
            now = engine.poll_timeout().unwrap();
            engine.handle_timeout(now);
        }
        seqs
    };
    let first = run(Duration::ZERO, 100);
    // Restarted two seconds after its last message, state lost.
    let second = run(Duration::from_secs(102), 100);
    assert!(first.len() > 3 && second.len() > 3);
    let all: Vec<u64> = first.iter().chain(&second).copied().collect();
    assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:x?}");
}

#[test]
fn a_restarted_sender_is_accepted_by_a_peer_that_kept_its_state() {
    let (mut f, _, c) = keyed_pair(25);
    let (server, client) = (f.server, f.client);
    let keys = chain(&[key(7, Algorithm::HmacMd5)]);
    f.net.run_for(Duration::from_secs(5));
    f.net.restart(server, keyed_config(98, &keys));
    let w = wall(&f.net, Duration::ZERO);
    f.net.with(server, |e, now| e.set_wall_clock(now, w));
    let sender = f.sender;
    let k = engine_support::key(sock(v4(2), 40_000));
    let s = f.net.with(server, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.add_sender(now, id, sender, tspec()).unwrap();
        id
    });
    let before = f.net.nodes[client].engine.stats().clone();
    // The restarted server has no state for the client: it challenges the client's next
    // Resv refresh and takes the one after.
    f.net.run_for(Duration::from_secs(90));
    let after = f.net.nodes[client].engine.stats();
    // The client kept its window: the restarted server's clock-based numbers are above it,
    // so none of its messages was dropped and no handshake was needed on this side.
    assert_eq!(drops(after), drops(&before), "{after:?}");
    assert_eq!(after.handshakes_completed, before.handshakes_completed);
    assert_eq!(f.net.nodes[server].engine.stats().handshakes_completed, 1);
    assert!(
        established(&f.net.nodes[server], s),
        "{:?}",
        f.net.nodes[server].events
    );
    assert!(
        !ended(&f.net.nodes[client]),
        "{:?}",
        f.net.nodes[client].events_of(c)
    );
}

#[test]
fn each_retransmission_of_a_tear_is_signed_anew_and_not_taken_for_a_replay() {
    let (mut f, s, c) = keyed_pair(23);
    f.net.trace = Some(Vec::new());
    let retransmitted = f.net.nodes[f.server]
        .engine
        .stats()
        .reliable_retransmissions;
    // The tear and its first retransmission arrive; their acknowledgments are lost.
    f.net.set_link(f.client, f.server, Link::down());
    f.net.with(f.server, |e, now| e.release(now, s));
    f.net.run_for(Duration::from_millis(700));
    f.net.set_links(Link::default());
    f.net.run_for(Duration::from_secs(10));
    let tears: Vec<_> = f
        .net
        .trace
        .take()
        .unwrap()
        .into_iter()
        .filter(|t| !t.delivered && t.payload[1] == MsgType::PathTear.number())
        .collect();
    // Sent at 0, 0.5 s and 1.5 s (the third one's acknowledgment gets through).
    assert_eq!(tears.len(), 3);
    let chain = chain(&[key(7, Algorithm::HmacMd5)]);
    let sequences: Vec<u64> = tears
        .iter()
        .map(|t| {
            integrity::verify(&chain, v4(1), &t.payload)
                .unwrap()
                .sequence
        })
        .collect();
    assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
    let client = f.net.nodes[f.client].engine.stats();
    assert_eq!(client.integrity_replayed, 0, "{client:?}");
    let server = f.net.nodes[f.server].engine.stats();
    assert_eq!(
        server.reliable_retransmissions - retransmitted,
        2,
        "{server:?}"
    );
    assert_eq!(server.reliable_given_up, 0);
    assert_eq!(f.net.nodes[f.client].path_count(c), 0);
}
