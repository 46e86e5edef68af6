//! INTEGRITY (class 4, RFC 2747) and CHALLENGE (class 64, RFC 3097): formats only — no keys,
//! no digest computation.

use super::primitive::{BodyError, Reader};

/// INTEGRITY flag `H` (RFC 3097): the sender supports the integrity handshake.
pub const INTEGRITY_FLAG_HANDSHAKE: u8 = 0x01;

/// INTEGRITY object (class 4, C-Type 1, RFC 2747 §2.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Integrity {
    /// Flags (`INTEGRITY_FLAG_HANDSHAKE`).
    pub flags: u8,
    /// 48-bit key identifier.
    pub key_id: [u8; 6],
    /// 64-bit sequence number (monotonically increasing per key).
    pub sequence: u64,
    /// Keyed message digest (e.g. 16 bytes for HMAC-MD5); a non-empty multiple of 4 bytes.
    pub digest: Vec<u8>,
}

impl Integrity {
    pub(crate) fn decode(c_type: u8, body: &[u8]) -> Result<Self, BodyError> {
        if c_type != 1 {
            return Err(BodyError::CType);
        }
        let mut r = Reader::new(body);
        let (Some(flags), Some(_reserved), Some(key_id), Some(sequence)) =
            (r.u8(), r.u8(), r.array::<6>(), r.u64())
        else {
            return Err(BodyError::Size);
        };
        let digest = r.rest();
        if digest.is_empty() {
            return Err(BodyError::Invalid("integrity object carries no digest"));
        }
        Ok(Integrity {
            flags,
            key_id,
            sequence,
            digest: digest.to_vec(),
        })
    }

    pub(crate) fn encode_body<S: bytes::BufMut>(&self, out: &mut S) {
        out.put_u8(self.flags);
        out.put_u8(0);
        out.put_slice(&self.key_id);
        out.put_u64(self.sequence);
        out.put_slice(&self.digest);
    }
}

/// CHALLENGE object (class 64, C-Type 1, RFC 3097 §3): a cookie the responder must echo under
/// its INTEGRITY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Challenge {
    /// 48-bit key identifier the challenge is about.
    pub key_id: [u8; 6],
    /// 64-bit challenge cookie.
    pub cookie: u64,
}

impl Challenge {
    #[inline(always)]
    pub(crate) fn decode(c_type: u8, body: &[u8]) -> Result<Self, BodyError> {
        if c_type != 1 {
            return Err(BodyError::CType);
        }
        if body.len() != 16 {
            return Err(BodyError::Size);
        }
        let mut r = Reader::new(body);
        let (Some(_reserved), Some(key_id), Some(cookie)) = (r.u16(), r.array::<6>(), r.u64())
        else {
            return Err(BodyError::Size);
        };
        Ok(Challenge { key_id, cookie })
    }

    pub(crate) fn encode_body<S: bytes::BufMut>(&self, out: &mut S) {
        out.put_u16(0);
        out.put_slice(&self.key_id);
        out.put_u64(self.cookie);
    }
}
