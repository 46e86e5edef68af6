//! The engine fuzz target (`fuzz/fuzz_targets/engine.rs`) as a proptest, for CI: sequences of
//! datagrams from several sources (raw, templated, mutated), time advances, local API calls
//! and enforcer failures, with the invariants of `engine_fuzz_driver` checked after every step
//! (no panic, no datagram answered with more bytes than it has, state within the cap) and at
//! the end (rules balanced, all state and its accounting back to zero).

mod engine_fuzz_driver;

use engine_fuzz_driver::Sim;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn operation_sequences_keep_the_engine_invariants(
        data in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        Sim::run(&data);
    }
}

/// A fixed sequence that sets a reservation up between the two nodes (API on both, the
/// exchange, time) and then mangles it: the driver itself must reach the interesting states.
#[test]
fn the_driver_reaches_an_established_reservation() {
    // node 1 (10.0.0.2) reserves on 10.0.0.2:40000 (op 4: a = 1 → node 1, reserve; b = 0x50
    // → destination index 1 (10.0.0.2), port 40000); node 0 adds a sender (a = 2 → node 0,
    // add_sender; b = 0x58 → same key, sender port index (0x58 >> 2) % 4 = 2 → 8080).
    let data = [4, 1, 0x50, 4, 2, 0x58, 6, 50, 7, 20, 6, 10];
    let sim = Sim::run(&data);
    assert!(sim.datagrams >= 3, "{}", sim.datagrams);
    assert_eq!(sim.installs(), 1, "reservation installed");
}
