//! `cargo +nightly fuzz run decode`: any bytes, decode must return (never panic, hang or
//! allocate without bound), and every error must map to an ERROR_SPEC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qtoq::wire::{ErrorCode, Message};

fuzz_target!(|data: &[u8]| {
    check(data);
    // Mutations rarely keep the checksum right: also try the input with "no checksum sent",
    // so they reach the object parser.
    if data.len() >= 4 {
        let mut unchecked = data.to_vec();
        unchecked[2..4].fill(0);
        check(&unchecked);
    }
});

fn check(data: &[u8]) {
    match Message::decode(data) {
        Ok(msg) => {
            let _ = msg.msg_type();
        }
        Err(err) => {
            let code = err.error_spec().code;
            assert!(
                code != ErrorCode::CONFIRMATION,
                "every error deserves a non-zero error code"
            );
            let _ = err.to_string();
        }
    }
}
