//! `cargo +nightly fuzz run engine`: sequences of datagrams (raw, templated, mutated; several
//! source addresses) between two engines, interleaved with time advances, local API calls and
//! enforcer failures. After every step: no panic, no datagram answered with more bytes than it
//! has, state within the cap; at the end: every rule installed removed exactly once, and all
//! state (and its accounting) gone. The driver is shared with `tests/engine_fuzz.rs`, which
//! runs it as a proptest in CI.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/engine_fuzz_driver/mod.rs"]
mod engine_fuzz_driver;

fuzz_target!(|data: &[u8]| {
    engine_fuzz_driver::Sim::run(data);
});
