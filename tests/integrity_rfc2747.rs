//! Interop with RFC 2747 as written, not with our own signer: the keyed digest is computed
//! here from the RFC's text (§2.1 placement, §4.1/§4.2: HMAC over the whole message with the
//! digest field and the checksum field zero; the checksum computed last, over the digest),
//! using `hmac` with `md-5` / `sha2` directly. Our engine's transmits must carry that digest,
//! and a message signed this way (and a handshake answered this way) must be accepted and
//! acted on.

mod engine_support;

use std::time::{Duration, UNIX_EPOCH};

use engine_support::*;
use hmac::{Hmac, Mac};
use qtoq::engine::{Event, Style};
use qtoq::integrity::{Algorithm, Key, KeyChain, KeyId, Secret};
use qtoq::wire::{
    Challenge, FilterSpec, Integrity, Message, MsgType, Object, RsvpHop, Session, TimeValues,
};

const SECRET: &[u8] = b"rfc 2747 shared secret";
const KEY_ID: u64 = 0x0102_0304_0506;

fn key(algorithm: Algorithm) -> Key {
    Key {
        peer: "10.0.0.1/32".parse().unwrap(),
        key_id: KeyId::new(KEY_ID).unwrap(),
        algorithm,
        secret: Secret::new(SECRET).unwrap(),
    }
}

/// RFC 1071 one's-complement sum, complemented.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The RFC 2747 digest of a signed message: the INTEGRITY object sits at offset 8 (right
/// after the common header), its digest at 8 + 4 (object header) + 16 (flags, reserved, key
/// id, sequence); both it and the checksum (bytes 2..4) are taken as zero.
fn rfc_digest(algorithm: Algorithm, message: &[u8]) -> Vec<u8> {
    let mut copy = message.to_vec();
    copy[2..4].fill(0);
    let len = usize::from(u16::from_be_bytes([copy[8], copy[9]]));
    copy[28..8 + len].fill(0);
    match algorithm {
        Algorithm::HmacMd5 => {
            let mut mac = Hmac::<md5::Md5>::new_from_slice(SECRET).unwrap();
            mac.update(&copy);
            mac.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
            mac.update(&copy);
            mac.finalize().into_bytes().to_vec()
        }
    }
}

/// Signs `message` by hand, as RFC 2747 §4.1 says: INTEGRITY first with a zero digest and
/// a zero checksum, digest over everything, then the checksum.
fn rfc_sign(algorithm: Algorithm, flags: u8, sequence: u64, mut message: Message) -> Vec<u8> {
    let mut key_id = [0u8; 6];
    key_id.copy_from_slice(&KEY_ID.to_be_bytes()[2..]);
    message.objects.insert(
        0,
        Object::Integrity(Integrity {
            flags,
            key_id,
            sequence,
            digest: vec![0; algorithm.digest_len()],
        }),
    );
    let mut bytes = message.encode().unwrap();
    let digest = rfc_digest(algorithm, &bytes);
    bytes[28..28 + digest.len()].copy_from_slice(&digest);
    bytes[2..4].fill(0);
    let sum = checksum(&bytes);
    bytes[2..4].copy_from_slice(&sum.to_be_bytes());
    bytes
}

/// The server's Path for the client's session at 10.0.0.2:40000.
fn path() -> Message {
    Message::path(
        Session::new(sock(v4(2), 40_000), 6),
        RsvpHop::new(v4(1), 0),
        TimeValues::new(Duration::from_secs(30)),
        FilterSpec::new(sock(v4(1), 8080)),
        tspec(),
        None,
    )
}

/// A client engine keyed for the peer 10.0.0.1, primed for the session.
fn client(algorithm: Algorithm) -> (Net, usize, qtoq::engine::SessionId) {
    let mut net = Net::new(3);
    let mut c = config(3);
    c.integrity = KeyChain::new(vec![key(algorithm)]).unwrap();
    let client = net.add("client", v4(2), c);
    let w = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    net.with(client, |e, now| e.set_wall_clock(now, w));
    let id = net.with(client, |e, now| {
        let id = e
            .open_session(now, engine_support::key(sock(v4(2), 40_000)))
            .unwrap();
        e.reserve(now, id, Style::FixedFilter, flowspec(), false)
            .unwrap();
        id
    });
    (net, client, id)
}

fn check_transmit(algorithm: Algorithm, bytes: &[u8]) -> u64 {
    // §2.1: class 4, C-Type 1, right after the common header, the length fitting the digest.
    assert_eq!(bytes[10..12], [4, 1]);
    let len = usize::from(u16::from_be_bytes([bytes[8], bytes[9]]));
    assert_eq!(len, 20 + algorithm.digest_len());
    assert_eq!(bytes[12], 0x01, "H flag");
    assert_eq!(bytes[13], 0, "reserved");
    assert_eq!(bytes[14..20], KEY_ID.to_be_bytes()[2..]);
    assert_eq!(&bytes[28..8 + len], rfc_digest(algorithm, bytes).as_slice());
    // The checksum was computed last, over the digest: the whole message sums to 0xffff.
    assert_eq!(checksum(bytes), 0);
    u64::from_be_bytes(bytes[20..28].try_into().unwrap())
}

#[test]
fn a_hand_signed_path_is_accepted_and_our_resv_carries_the_rfc_digest() {
    for algorithm in [Algorithm::HmacMd5, Algorithm::HmacSha256] {
        // H clear: this sender does not do handshakes, so its first message starts the window.
        let (mut net, client, id) = client(algorithm);
        let seq = 1_700_000_000u64 << 32;
        net.inject(client, v4(1), &rfc_sign(algorithm, 0, seq, path()));
        let events = net.nodes[client].events_of(id);
        assert!(
            matches!(events.as_slice(), [Event::PathReceived { .. }, ..]),
            "{events:?}"
        );
        // The Resv went to 10.0.0.1 (not in the simulated net: captured only). It is longer
        // than the Path it answers, so it leaves at the next timeout (the engine's Bounds).
        net.run_for(Duration::from_millis(10));
        let resv = net.captured.iter().find(|b| b[1] == 2).expect("a Resv");
        let first = check_transmit(algorithm, resv);
        assert!(first >> 32 >= 1_700_000_000, "clock-based sequence number");
        // The same Path again is a replay; a tampered one a bad digest.
        net.inject(client, v4(1), &rfc_sign(algorithm, 0, seq, path()));
        let mut tampered = rfc_sign(algorithm, 0, seq + 1, path());
        tampered[40] ^= 1;
        net.inject(client, v4(1), &tampered);
        let st = net.nodes[client].engine.stats();
        assert_eq!((st.integrity_replayed, st.integrity_bad_digest), (1, 1));
        assert_eq!(
            net.nodes[client].events_of(id),
            events,
            "nothing more happened"
        );
    }
}

#[test]
fn a_hand_made_handshake_is_accepted() {
    let algorithm = Algorithm::HmacMd5;
    let (mut net, client, id) = client(algorithm);
    let seq = 1_700_000_000u64 << 32;
    // H set: the client has no sequence state for us, so it challenges instead of accepting.
    net.inject(client, v4(1), &rfc_sign(algorithm, 1, seq, path()));
    assert!(net.nodes[client].events_of(id).is_empty());
    let challenge = net
        .captured
        .iter()
        .find(|b| b[1] == MsgType::IntegrityChallenge.number())
        .expect("a challenge");
    // RFC 2747 §2.2 / RFC 3097: <Common Header> <CHALLENGE>, 8 + 20 bytes, our key id.
    assert_eq!(challenge.len(), 28);
    let decoded = Message::decode(challenge).unwrap();
    let asked = *decoded.challenge().unwrap();
    assert_eq!(asked.key_id, KEY_ID.to_be_bytes()[2..]);
    // A response with the wrong cookie is ignored; the right one starts the window.
    let respond = |cookie, seq| {
        rfc_sign(
            algorithm,
            1,
            seq,
            Message::new(MsgType::IntegrityResponse).with(Object::Challenge(Challenge {
                key_id: asked.key_id,
                cookie,
            })),
        )
    };
    net.inject(client, v4(1), &respond(asked.cookie ^ 1, seq + 10));
    assert_eq!(net.nodes[client].engine.stats().handshakes_completed, 0);
    net.inject(client, v4(1), &respond(asked.cookie, seq + 10));
    assert_eq!(net.nodes[client].engine.stats().handshakes_completed, 1);
    // Below the response's number: refused; above: accepted and acted on.
    net.inject(client, v4(1), &rfc_sign(algorithm, 1, seq + 5, path()));
    assert!(net.nodes[client].events_of(id).is_empty());
    net.inject(client, v4(1), &rfc_sign(algorithm, 1, seq + 11, path()));
    let events = net.nodes[client].events_of(id);
    assert!(
        matches!(events.as_slice(), [Event::PathReceived { .. }, ..]),
        "{events:?}"
    );
    // And a challenge from us is answered with a response carrying the RFC digest.
    let ours = Message::new(MsgType::IntegrityChallenge)
        .with(Object::Challenge(Challenge {
            key_id: asked.key_id,
            cookie: 0xfeed,
        }))
        .encode()
        .unwrap();
    net.captured.clear();
    net.inject(client, v4(1), &ours);
    let response = net
        .captured
        .iter()
        .find(|b| b[1] == MsgType::IntegrityResponse.number())
        .expect("a response");
    check_transmit(algorithm, response);
    let echoed = *Message::decode(response).unwrap().challenge().unwrap();
    assert_eq!(echoed.cookie, 0xfeed);
}
