//! Every message type encodes, decodes back to the same value and re-encodes byte for byte.

mod wire_support;

use qtoq::wire::*;
use wire_support::*;

#[test]
fn every_message_type_round_trips_byte_exact() {
    for (name, msg) in all_messages() {
        let bytes = msg.encode().unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = Message::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back, msg, "{name}");
        assert_eq!(back.encode().unwrap(), bytes, "{name}");
        msg.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
