//! RSVP message authentication (RFC 2747, message types of RFC 3097): keys, signing,
//! verification and replay protection.
//!
//! Sans-IO like [`crate::wire`] and [`crate::engine`]: no sockets, no clock of its own.
//! The [`engine`](crate::engine) signs every message it sends to a peer it has a key for
//! and verifies every message from such a peer before it is acted on (see its *Integrity*
//! section for the handshake and the counters).
//!
//! # Keys
//!
//! A [`Key`] is used with the neighbors in its [`Prefix`]: with one of those a message must
//! carry INTEGRITY made with a key of that prefix. Several keys may cover one neighbor (a
//! rollover): all of them are accepted, and the one listed last in the [`KeyChain`] is used
//! to send. Keys usually come from the policy file's `[[integrity]]` tables.
//!
//! # On the wire (RFC 2747)
//!
//! * **Placement** (§2.1): the INTEGRITY object (class 4, C-Type 1) comes immediately after
//!   the common header: Flags (bit `0x01`, `H`: the sender answers Integrity Challenges,
//!   RFC 2747 §2.1 / §4.3), a reserved byte, the 48-bit Key Identifier, the 64-bit Sequence
//!   Number and the keyed digest (16 bytes for HMAC-MD5, 32 for HMAC-SHA-256).
//! * **Digest** ([`sign`], §4.1): the HMAC over the *whole* message, common header included,
//!   with the digest field and the common header's checksum field set to zero; the digest is
//!   written, and only then is the checksum computed, so the checksum covers the digest and
//!   the digest does not cover the checksum. [`verify`] (§4.2) recomputes it the same way and
//!   compares in constant time.
//! * **Sequence numbers** ([`next_sequence`], §3.2): monotonically increasing per key, with no
//!   stable storage: the high 32 bits are the low 32 bits of the UNIX time in seconds, the low
//!   32 bits a counter reset each second. The caller supplies the time (sans-IO).
//! * **Replay** ([`ReplayWindow`], §3, §4.2): a receiver accepts each sequence number once,
//!   within a window of the last 64 below the highest seen (reordering tolerated, replays
//!   and anything older refused).
//! * **Handshake** (§4.3, message types 25 and 26 of RFC 3097, which replaced RFC 2747's 11
//!   and 12): a receiver without sequence state for a sender (after its own restart) sends
//!   an Integrity Challenge (a CHALLENGE object: the key identifier and a cookie) and starts
//!   its window from the sequence number of the signed Integrity Response that echoes the
//!   cookie. The engine runs it; the formats are [`crate::wire::Challenge`] and
//!   [`crate::wire::Integrity`].

mod digest;
mod window;

pub use digest::{
    carried, next_sequence, object_len, sign, verify, IntegrityError, SignError, Verified,
};
pub use window::ReplayWindow;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The keyed digest algorithm of a [`Key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC-MD5 (RFC 2104), RFC 2747's mandatory algorithm: a 16-byte digest.
    HmacMd5,
    /// HMAC-SHA-256 (RFC 2104, FIPS 180-4): a 32-byte digest.
    HmacSha256,
}

impl Algorithm {
    /// The digest's length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Algorithm::HmacMd5 => 16,
            Algorithm::HmacSha256 => 32,
        }
    }

    /// The name used in policy files: `"hmac-md5"` or `"hmac-sha256"`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacMd5 => "hmac-md5",
            Algorithm::HmacSha256 => "hmac-sha256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s {
            "hmac-md5" => Ok(Algorithm::HmacMd5),
            "hmac-sha256" => Ok(Algorithm::HmacSha256),
            other => Err(KeyError::UnknownAlgorithm(other.to_owned())),
        }
    }
}

/// The 48-bit Key Identifier of RFC 2747 §2.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(u64);

impl KeyId {
    /// The largest key identifier: 2^48 − 1.
    pub const MAX: u64 = (1 << 48) - 1;

    /// A key identifier; `None` above [`KeyId::MAX`].
    pub fn new(id: u64) -> Option<KeyId> {
        (id <= Self::MAX).then_some(KeyId(id))
    }

    /// The identifier as a number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The six bytes carried in the INTEGRITY object (network order).
    pub fn to_bytes(self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    /// The identifier carried as six bytes in an INTEGRITY object.
    pub fn from_bytes(bytes: [u8; 6]) -> KeyId {
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(&bytes);
        KeyId(u64::from_be_bytes(b))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An address prefix: the neighbors a [`Key`] is used with (`"10.77.0.2/32"`, `"fd00::/64"`;
/// an address without a length is a host prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// A prefix of `len` bits of `addr` (the bits beyond it are cleared). An error when `len`
    /// exceeds the address's width.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, KeyError> {
        let width = if addr.is_ipv4() { 32 } else { 128 };
        if len > width {
            return Err(KeyError::Prefix(format!(
                "{addr}/{len}: the prefix length exceeds {width}"
            )));
        }
        Ok(Prefix {
            addr: mask(addr, len),
            len,
        })
    }

    /// The prefix's address (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    // A length in bits, not a count of items: `is_empty` would mean nothing.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether `addr` lies in the prefix. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        addr.is_ipv4() == self.addr.is_ipv4() && mask(addr, self.len) == self.addr
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(a) => {
            let bits = u32::from(a) & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(bits.into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a) & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(bits.into())
        }
    }
}

impl FromStr for Prefix {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::Prefix(format!("{s:?} is not an address or address/length"));
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let len = match len {
            Some(l) => l.trim().parse().map_err(|_| bad())?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Prefix::new(addr, len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A shared secret. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret from its bytes; an error when empty.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret, KeyError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        Ok(Secret(bytes))
    }

    /// The secret's bytes (the HMAC key).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// One INTEGRITY key: used with the neighbors in `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The neighbors this key is used with.
    pub peer: Prefix,
    /// The Key Identifier carried in INTEGRITY.
    pub key_id: KeyId,
    /// The keyed digest.
    pub algorithm: Algorithm,
    /// The shared secret.
    pub secret: Secret,
}

/// The keys an engine signs and verifies with, in the order given (the last key covering a
/// neighbor is the one used to send to it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChain {
    keys: Vec<Key>,
}

impl KeyChain {
    /// A key chain from keys in order (older first). Two keys with the same identifier for
    /// overlapping prefixes are refused: a receiver could not tell which one signed.
    pub fn new(keys: Vec<Key>) -> Result<KeyChain, KeyError> {
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[..i] {
                if a.key_id == b.key_id
                    && (a.peer.contains(b.peer.addr) || b.peer.contains(a.peer.addr))
                {
                    return Err(KeyError::DuplicateKeyId {
                        key_id: a.key_id,
                        first: b.peer,
                        second: a.peer,
                    });
                }
            }
        }
        Ok(KeyChain { keys })
    }

    /// Whether the chain holds no key (then nothing is signed or required).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, in order.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Whether messages from or to `neighbor` must carry INTEGRITY.
    pub fn covers(&self, neighbor: IpAddr) -> bool {
        self.keys.iter().any(|k| k.peer.contains(neighbor))
    }

    /// The key used to send to `neighbor`: the last one covering it.
    pub fn sending_key(&self, neighbor: IpAddr) -> Option<&Key> {
        self.keys.iter().rev().find(|k| k.peer.contains(neighbor))
    }

    /// The key `key_id` if it covers `neighbor`.
    pub fn receiving_key(&self, neighbor: IpAddr, key_id: KeyId) -> Option<&Key> {
        self.keys
            .iter()
            .rev()
            .find(|k| k.key_id == key_id && k.peer.contains(neighbor))
    }
}

/// Why a key could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The algorithm name is not one we know.
    #[error("unknown integrity algorithm {0:?}: use \"hmac-md5\" or \"hmac-sha256\"")]
    UnknownAlgorithm(String),
    /// The peer prefix could not be read.
    #[error("bad integrity peer: {0}")]
    Prefix(String),
    /// The key identifier does not fit in 48 bits.
    #[error("integrity key_id {0} does not fit in 48 bits (at most 281474976710655)")]
    KeyIdRange(u64),
    /// The secret is empty.
    #[error("the integrity secret is empty")]
    EmptySecret,
    /// Two keys share an identifier for overlapping neighbors.
    #[error("integrity key_id {key_id} is given twice for overlapping peers {first} and {second}")]
    DuplicateKeyId {
        /// The identifier.
        key_id: KeyId,
        /// The first key's peer.
        first: Prefix,
        /// The second key's peer.
        second: Prefix,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_match() {
        let p: Prefix = "10.77.0.0/16".parse().unwrap();
        assert!(p.contains("10.77.3.4".parse().unwrap()));
        assert!(!p.contains("10.78.0.1".parse().unwrap()));
        assert!(p.contains("::ffff:10.77.0.9".parse().unwrap()));
        let host: Prefix = "fd00::1".parse().unwrap();
        assert_eq!(host.len(), 128);
        assert!(host.contains("fd00::1".parse().unwrap()));
        assert!(!host.contains("fd00::2".parse().unwrap()));
        assert!("10.0.0.1/33".parse::<Prefix>().is_err());
        assert!("ten/8".parse::<Prefix>().is_err());
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn key_ids_are_48_bits() {
        assert!(KeyId::new(KeyId::MAX + 1).is_none());
        let id = KeyId::new(0x0102_0304_0506).unwrap();
        assert_eq!(id.to_bytes(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(KeyId::from_bytes(id.to_bytes()), id);
    }

    #[test]
    fn the_last_covering_key_sends_and_all_receive() {
        let key = |id, peer: &str| Key {
            peer: peer.parse().unwrap(),
            key_id: KeyId::new(id).unwrap(),
            algorithm: Algorithm::HmacMd5,
            secret: Secret::new(*b"s").unwrap(),
        };
        let chain = KeyChain::new(vec![key(1, "10.0.0.2"), key(2, "10.0.0.0/24")]).unwrap();
        let peer = "10.0.0.2".parse().unwrap();
        assert_eq!(chain.sending_key(peer).unwrap().key_id.get(), 2);
        assert!(chain.receiving_key(peer, KeyId::new(1).unwrap()).is_some());
        assert!(chain
            .receiving_key("10.0.0.3".parse().unwrap(), KeyId::new(1).unwrap())
            .is_none());
        assert!(!chain.covers("10.0.1.1".parse().unwrap()));
        assert!(KeyChain::new(vec![key(1, "10.0.0.2"), key(1, "10.0.0.0/24")]).is_err());
        assert!(format!("{:?}", chain.keys()[0].secret).contains("1 bytes"));
    }
}
