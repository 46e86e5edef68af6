//! `cargo +nightly fuzz run roundtrip`: whatever decodes must encode, decode to the same value
//! and encode to the same bytes again (decode → encode → decode).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qtoq::wire::Message;

fuzz_target!(|data: &[u8]| {
    round_trip(data);
    // Mutations rarely keep the checksum right: also try the input with "no checksum sent".
    if data.len() >= 4 {
        let mut unchecked = data.to_vec();
        unchecked[2..4].fill(0);
        round_trip(&unchecked);
    }
});

fn round_trip(data: &[u8]) {
    if let Ok(msg) = Message::decode(data) {
        let bytes = msg.encode().expect("a decoded message is encodable");
        let again = Message::decode(&bytes).expect("a re-encoded message decodes");
        assert_eq!(again, msg);
        assert_eq!(again.encode(), Ok(bytes));
    }
}
