//! Signing and verifying encoded messages (RFC 2747 §4.1, §4.2), sequence numbers (§3.2) and
//! the INTEGRITY object's place in the bytes (§2.1).
//!
//! Everything here works on the encoded message, not on [`crate::wire::Message`]: the digest
//! covers the bytes exactly as sent, and a receiver checks it before decoding anything else.

use std::net::IpAddr;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};

use super::{Algorithm, Key, KeyChain, KeyId};
use crate::wire::{class, COMMON_HEADER_LEN, RSVP_VERSION};

/// INTEGRITY's C-Type.
const C_TYPE: u8 = 1;
/// Object header, Flags, reserved, Key Identifier and Sequence Number: what precedes the
/// digest in an INTEGRITY object.
const FIXED_LEN: usize = 4 + 1 + 1 + 6 + 8;
/// Where the digest starts in a signed message.
const DIGEST_AT: usize = COMMON_HEADER_LEN + FIXED_LEN;
/// The common header's checksum field.
const CHECKSUM_AT: usize = 2;

/// The INTEGRITY object's length for `algorithm`: 20 bytes and the digest.
pub fn object_len(algorithm: Algorithm) -> usize {
    FIXED_LEN + algorithm.digest_len()
}

/// What a verified INTEGRITY object said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The key that signed (its identifier).
    pub key_id: KeyId,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// The sender's sequence number: fresh or not is for a [`ReplayWindow`](super::ReplayWindow)
    /// to say.
    pub sequence: u64,
    /// The Flags byte ([`INTEGRITY_FLAG_HANDSHAKE`](crate::wire::INTEGRITY_FLAG_HANDSHAKE)).
    pub flags: u8,
}

/// Why a message did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// No INTEGRITY object directly after the common header (or not even a common header).
    #[error("the message carries no integrity object")]
    Missing,
    /// No key with this identifier covers the sender (RFC 2747 §4.2: no security association).
    #[error("no integrity key {0} for this sender")]
    UnknownKey(KeyId),
    /// The keyed digest is wrong (or of the wrong length for the key's algorithm).
    #[error("the integrity digest does not verify")]
    BadDigest,
}

/// Why a message could not be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The bytes are not one encoded message (shorter than a header, or its length field
    /// disagrees).
    #[error("not an encoded rsvp message")]
    NotAMessage,
    /// The message already carries INTEGRITY.
    #[error("the message is already signed")]
    AlreadySigned,
    /// With INTEGRITY the message would exceed 65 535 bytes.
    #[error("a signed message would be {0} bytes, more than rsvp's 16-bit length allows")]
    TooLong(usize),
}

/// The fields of the INTEGRITY object right after the common header, if there is one.
struct Found {
    flags: u8,
    key_id: KeyId,
    sequence: u64,
    /// The digest's byte range in the message.
    digest: std::ops::Range<usize>,
}

/// The common header's length field, when it matches `message.len()`.
fn message_len(message: &[u8]) -> Option<usize> {
    let header = message.get(..COMMON_HEADER_LEN)?;
    let len = usize::from(u16::from_be_bytes([header[6], header[7]]));
    (len == message.len() && header[0] >> 4 == RSVP_VERSION).then_some(len)
}

/// Whether the object header at `COMMON_HEADER_LEN` is an INTEGRITY object's. Also right for
/// a Bundle (RFC 2961): a sub-message there starts with version 1 in the top nibble, which as
/// an object length would be at least 4096 bytes, longer than any INTEGRITY.
fn integrity_header(message: &[u8]) -> Option<usize> {
    let obj = message.get(COMMON_HEADER_LEN..COMMON_HEADER_LEN + 4)?;
    let len = usize::from(u16::from_be_bytes([obj[0], obj[1]]));
    (obj[2] == class::INTEGRITY && obj[3] == C_TYPE && obj[0] >> 4 != RSVP_VERSION).then_some(len)
}

fn find(message: &[u8]) -> Option<Found> {
    let total = message_len(message)?;
    let len = integrity_header(message)?;
    // A digest of at least 4 bytes, in whole words, inside the message (RFC 2747 §2.1).
    if len < FIXED_LEN + 4 || len % 4 != 0 || COMMON_HEADER_LEN + len > total {
        return None;
    }
    let body = &message[COMMON_HEADER_LEN + 4..COMMON_HEADER_LEN + len];
    let mut key_id = [0u8; 6];
    key_id.copy_from_slice(&body[2..8]);
    let mut sequence = [0u8; 8];
    sequence.copy_from_slice(&body[8..16]);
    Some(Found {
        flags: body[0],
        key_id: KeyId::from_bytes(key_id),
        sequence: u64::from_be_bytes(sequence),
        digest: DIGEST_AT..COMMON_HEADER_LEN + len,
    })
}

/// Whether `message` carries an INTEGRITY object where RFC 2747 puts it (directly after the
/// common header), well-formed or not worth verifying.
pub fn carried(message: &[u8]) -> bool {
    message_len(message).is_some() && integrity_header(message).is_some()
}

/// The keyed digest of `message` with its checksum field and the digest field `digest` taken
/// as zero (RFC 2747 §4.1 step 1, §4.2), over the whole message, fed in pieces: nothing is
/// copied.
fn compute(key: &Key, message: &[u8], digest: std::ops::Range<usize>) -> Mac2 {
    let zeros = [0u8; 32];
    let mut mac = Mac2::new(key);
    mac.update(&message[..CHECKSUM_AT]);
    mac.update(&zeros[..2]);
    mac.update(&message[CHECKSUM_AT + 2..digest.start]);
    mac.update(&zeros[..digest.len().min(zeros.len())]);
    mac.update(&message[digest.end..]);
    mac
}

/// HMAC of either algorithm, without boxing.
enum Mac2 {
    Md5(Hmac<md5::Md5>),
    Sha256(Hmac<sha2::Sha256>),
}

impl Mac2 {
    fn new(key: &Key) -> Mac2 {
        let secret = key.secret.expose();
        // HMAC takes keys of any length: `new_from_slice` cannot fail.
        match key.algorithm {
            Algorithm::HmacMd5 => {
                Mac2::Md5(<Hmac<md5::Md5> as KeyInit>::new_from_slice(secret).expect("any length"))
            }
            Algorithm::HmacSha256 => Mac2::Sha256(
                <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).expect("any length"),
            ),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Mac2::Md5(m) => m.update(data),
            Mac2::Sha256(m) => m.update(data),
        }
    }

    fn finish_into(self, out: &mut [u8]) {
        match self {
            Mac2::Md5(m) => out.copy_from_slice(&m.finalize().into_bytes()),
            Mac2::Sha256(m) => out.copy_from_slice(&m.finalize().into_bytes()),
        }
    }

    /// Constant-time comparison (`hmac`'s `verify_slice`).
    fn verify(self, expected: &[u8]) -> bool {
        match self {
            Mac2::Md5(m) => m.verify_slice(expected).is_ok(),
            Mac2::Sha256(m) => m.verify_slice(expected).is_ok(),
        }
    }
}

/// Signs an encoded message (RFC 2747 §4.1): inserts an INTEGRITY object with `key`'s
/// identifier, `sequence` and `flags` directly after the common header (§2.1: "the INTEGRITY
/// object is placed immediately after the common header"), fixes the length field, computes
/// the keyed digest over the whole message with the digest field and the checksum field zero,
/// writes the digest, then computes the checksum last, so that it covers the digest (a zero
/// sum is sent as `0xffff`, as [`Message::encode`](crate::wire::Message::encode) does).
///
/// # Errors
///
/// [`SignError`] when `message` is not one encoded message, is signed already, or would
/// grow beyond 65 535 bytes; `message` is then unchanged.
pub fn sign(key: &Key, sequence: u64, flags: u8, message: &mut Vec<u8>) -> Result<(), SignError> {
    let len = message_len(message).ok_or(SignError::NotAMessage)?;
    if integrity_header(message).is_some() {
        return Err(SignError::AlreadySigned);
    }
    let obj_len = object_len(key.algorithm);
    let total = len + obj_len;
    let total16 = u16::try_from(total).map_err(|_| SignError::TooLong(total))?;
    let mut object = [0u8; FIXED_LEN + 32];
    object[..2].copy_from_slice(&(obj_len as u16).to_be_bytes());
    object[2] = class::INTEGRITY;
    object[3] = C_TYPE;
    object[4] = flags;
    object[6..12].copy_from_slice(&key.key_id.to_bytes());
    object[12..20].copy_from_slice(&sequence.to_be_bytes());
    message.splice(
        COMMON_HEADER_LEN..COMMON_HEADER_LEN,
        object[..obj_len].iter().copied(),
    );
    message[6..8].copy_from_slice(&total16.to_be_bytes());
    message[CHECKSUM_AT..CHECKSUM_AT + 2].fill(0);
    let digest = DIGEST_AT..DIGEST_AT + key.algorithm.digest_len();
    compute(key, message, digest.clone()).finish_into(&mut message[digest]);
    let sum = checksum(message);
    let sum = if sum == 0 { 0xffff } else { sum };
    message[CHECKSUM_AT..CHECKSUM_AT + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Verifies the INTEGRITY of a message received from `source` (RFC 2747 §4.2): the object
/// must be directly after the common header, its key identifier must name a key of `chain`
/// covering `source`, and its digest, recomputed with the digest and checksum fields zero,
/// must match (compared in constant time). The sequence number is *not* judged here: see
/// [`ReplayWindow`](super::ReplayWindow).
///
/// # Errors
///
/// [`IntegrityError`]: missing object, no such key for `source`, or a bad digest.
pub fn verify(
    chain: &KeyChain,
    source: IpAddr,
    message: &[u8],
) -> Result<Verified, IntegrityError> {
    let found = find(message).ok_or(IntegrityError::Missing)?;
    let key = chain
        .receiving_key(source, found.key_id)
        .ok_or(IntegrityError::UnknownKey(found.key_id))?;
    if found.digest.len() != key.algorithm.digest_len() {
        return Err(IntegrityError::BadDigest);
    }
    let expected = &message[found.digest.clone()];
    if !compute(key, message, found.digest.clone()).verify(expected) {
        return Err(IntegrityError::BadDigest);
    }
    Ok(Verified {
        key_id: found.key_id,
        algorithm: key.algorithm,
        sequence: found.sequence,
        flags: found.flags,
    })
}

/// The next sequence number to send after `last`, at `unix_secs` seconds since the UNIX
/// epoch (RFC 2747 §3.2): the low 32 bits of the time in seconds in the high 32 bits, a
/// message counter in the low 32 bits, reset every second — and never less than `last + 1`,
/// so the numbers only grow within one run even if the clock steps back or more than 2^32
/// messages go out in one second. A restarted sender starts above everything it sent before
/// as long as the restart takes more than a second (the RFC's own assumption) and its clock
/// did not step back: no stable storage needed.
pub fn next_sequence(last: u64, unix_secs: u64) -> u64 {
    let clock = (unix_secs & 0xffff_ffff) << 32;
    clock.max(last.saturating_add(1))
}

/// RFC 1071 checksum of `data` (the common header's, computed over the whole message).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for w in words.by_ref() {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::{Prefix, Secret};
    use crate::wire::{Message, MsgType, Object, INTEGRITY_FLAG_HANDSHAKE};

    fn key(id: u64, algorithm: Algorithm) -> Key {
        Key {
            peer: "10.0.0.0/24".parse::<Prefix>().unwrap(),
            key_id: KeyId::new(id).unwrap(),
            algorithm,
            secret: Secret::new(*b"secret").unwrap(),
        }
    }

    /// An Integrity Response before signing (the codec refuses it without INTEGRITY, so
    /// only the signed one is decoded).
    fn message() -> Vec<u8> {
        Message::new(MsgType::IntegrityResponse)
            .with(Object::Challenge(crate::wire::Challenge {
                key_id: [0, 0, 0, 0, 0, 7],
                cookie: 42,
            }))
            .encode()
            .unwrap()
    }

    #[test]
    fn signed_messages_decode_and_verify_and_tampering_fails() {
        for algorithm in [Algorithm::HmacMd5, Algorithm::HmacSha256] {
            let k = key(7, algorithm);
            let chain = KeyChain::new(vec![k.clone()]).unwrap();
            let mut bytes = message();
            let before = bytes.len();
            sign(&k, 99, INTEGRITY_FLAG_HANDSHAKE, &mut bytes).unwrap();
            assert_eq!(bytes.len(), before + object_len(algorithm));
            assert!(carried(&bytes));
            // The codec accepts it, checksum included, with INTEGRITY first.
            let decoded = Message::decode(&bytes).unwrap();
            let integrity = decoded.integrity().unwrap();
            assert_eq!(integrity.sequence, 99);
            assert_eq!(integrity.digest.len(), algorithm.digest_len());
            let source = "10.0.0.9".parse().unwrap();
            let ok = verify(&chain, source, &bytes).unwrap();
            assert_eq!((ok.sequence, ok.flags, ok.key_id.get()), (99, 1, 7));
            assert_eq!(sign(&k, 1, 0, &mut bytes), Err(SignError::AlreadySigned));
            // Any flipped bit of the message fails, the checksum field excepted (not covered).
            for i in 0..bytes.len() {
                if (CHECKSUM_AT..CHECKSUM_AT + 2).contains(&i) {
                    continue;
                }
                let mut bad = bytes.clone();
                bad[i] ^= 0x10;
                assert!(verify(&chain, source, &bad).is_err(), "byte {i}");
            }
            let elsewhere = "10.0.1.9".parse().unwrap();
            assert!(matches!(
                verify(&chain, elsewhere, &bytes),
                Err(IntegrityError::UnknownKey(_))
            ));
            assert_eq!(
                verify(&chain, source, &message()),
                Err(IntegrityError::Missing)
            );
        }
    }

    #[test]
    fn sequence_numbers_follow_the_clock_and_never_go_back() {
        assert_eq!(next_sequence(0, 5), 5 << 32);
        assert_eq!(next_sequence(5 << 32, 5), (5 << 32) + 1);
        assert_eq!(next_sequence((6 << 32) + 3, 5), (6 << 32) + 4);
        assert_eq!(next_sequence((5 << 32) + 9, 6), 6 << 32);
    }
}
