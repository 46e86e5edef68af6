//! Hostile input: arbitrary bytes and mutated valid messages never panic the engine, are
//! counted, and never create rules.

mod engine_support;

use std::time::Duration;

use engine_support::*;
use proptest::prelude::*;

/// The messages of a real setup between the two hosts, as transmitted.
fn valid_messages() -> Vec<Vec<u8>> {
    let mut f = two_hosts(40);
    let (s, c) = f.setup(40_000);
    f.net.run_for(Duration::from_secs(100));
    f.net.with(f.client, |e, now| e.release(now, c));
    f.net.with(f.server, |e, now| e.release(now, s));
    let out = f.net.captured.clone();
    // Path, Resv, ResvConf, refreshes, ResvTear, PathTear.
    assert!(out.len() >= 5, "captured {}", out.len());
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_and_mutated_datagrams_never_panic(
        junk in proptest::collection::vec(any::<u8>(), 0..300),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        which in any::<usize>(),
        cut in any::<usize>(),
    ) {
        let valid = valid_messages();
        let mut f = two_hosts(41);
        let (s, _c) = f.setup(40_000);
        f.net.run_for(Duration::from_secs(1));
        let installs = f.net.nodes[f.server].install_count();
        let mut mutated = valid[which % valid.len()].clone();
        for (at, byte) in flips {
            let len = mutated.len();
            mutated[at % len] ^= byte | 1;
        }
        let truncated = mutated[..cut % (mutated.len() + 1)].to_vec();
        for (node, bytes) in [
            (f.client, junk.clone()),
            (f.server, junk),
            (f.client, mutated.clone()),
            (f.server, mutated),
            (f.server, truncated),
        ] {
            let from = v4(7);
            f.net.inject(node, from, &bytes);
        }
        f.net.run_for(Duration::from_secs(300));
        let server = &f.net.nodes[f.server];
        // Nothing hostile created a rule (a mutation may, rarely, still be a valid teardown).
        prop_assert_eq!(server.install_count(), installs);
        let info = server.engine.session_info(s).unwrap();
        prop_assert!(info.rules.len() <= 1);
        for node in &f.net.nodes {
            let stats = node.engine.stats();
            prop_assert!(stats.received >= stats.malformed);
        }
    }
}

#[test]
fn a_path_flood_is_capped_by_max_sessions_and_answered() {
    use qtoq::engine::NeighborLimits;
    use qtoq::wire::{FilterSpec, Message, RsvpHop, Session, TimeValues};
    let mut net = Net::new(42);
    let victim = net.add("victim", v4(2), {
        let mut config = config(42);
        config.max_sessions = 8;
        config
    });
    let attacker = net.add("attacker", v4(9), config(43));
    for port in 0..100u16 {
        let path = Message::path(
            Session::new(sock(v4(2), 1000 + port), 6),
            RsvpHop::new(v4(9), 0),
            TimeValues::new(Duration::from_secs(30)),
            FilterSpec::new(sock(v4(9), 5000)),
            tspec(),
            None,
        )
        .encode()
        .unwrap();
        net.inject(victim, v4(9), &path);
    }
    net.run_for(Duration::from_millis(100));
    let stats = net.nodes[victim].engine.stats().clone();
    assert_eq!(net.nodes[victim].engine.session_count(), 8);
    assert_eq!(stats.rejected, 92);
    // The attacker got PathErr code 23 for the refused Paths its answer bucket allowed (its
    // burst, all at one instant); the rest were suppressed and counted.
    let burst = u64::from(NeighborLimits::default().answer_burst);
    assert_eq!(stats.errors_sent, burst);
    assert_eq!(stats.answers_suppressed, 92 - burst);
    let answered = net.nodes[attacker]
        .received
        .iter()
        .filter(|(_, t, _)| *t == 3)
        .count();
    assert_eq!(answered as u64, burst);
    // The state times out: nothing is kept for ever.
    net.run_for(Duration::from_secs(200));
    assert_eq!(net.nodes[victim].engine.session_count(), 0);
}
