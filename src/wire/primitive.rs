//! Byte-level primitives every other wire module builds on: a bounds-checked big-endian
//! [`Reader`], the output [`Sink`] trait with length back-filling, the RFC 1071 checksum, the
//! IPv4/IPv6 address fields shared by several objects, and [`BodyError`], what an object body
//! decoder returns. Nothing here knows about objects or messages.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, BytesMut};

/// A forward-only cursor over a byte slice. Every read checks the bounds first and returns
/// `None` instead of panicking.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u24(&mut self) -> Option<u32> {
        let [a, b, c] = self.array()?;
        Some(u32::from_be_bytes([0, a, b, c]))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn f32(&mut self) -> Option<f32> {
        Some(f32::from_bits(self.u32()?))
    }

    pub(crate) fn ipv4(&mut self) -> Option<Ipv4Addr> {
        Some(Ipv4Addr::from(self.array::<4>()?))
    }

    pub(crate) fn ipv6(&mut self) -> Option<Ipv6Addr> {
        Some(Ipv6Addr::from(self.array::<16>()?))
    }
}

/// Why an object body failed to decode; the caller adds offset, class and C-Type (see
/// `BodyError::at` in `error.rs`, which turns it into a [`WireError`](super::WireError)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Wrong body size for the C-Type.
    Size,
    /// Unknown C-Type of a known class.
    CType,
    /// Invalid contents.
    Invalid(&'static str),
    /// STYLE option vector unknown.
    Style(u32),
    /// IntServ service number not supported.
    Service(u8),
    /// Malformed IntServ body.
    IntServ(&'static str),
}

/// Writes an IPv4 (4 bytes) or IPv6 (16 bytes) address.
pub(crate) fn put_ip<S: BufMut>(out: &mut S, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => out.put_slice(&a.octets()),
        IpAddr::V6(a) => out.put_slice(&a.octets()),
    }
}

/// Decodes the IPv4 (C-Type 1) / IPv6 (C-Type 2) address at the start of a body that must be
/// exactly the address plus `trailer` bytes.
pub(crate) fn decode_addr(c_type: u8, body: &[u8], trailer: usize) -> Result<IpAddr, BodyError> {
    let mut r = Reader::new(body);
    match c_type {
        1 if body.len() == 4 + trailer => Ok(IpAddr::V4(r.ipv4().ok_or(BodyError::Size)?)),
        2 if body.len() == 16 + trailer => Ok(IpAddr::V6(r.ipv6().ok_or(BodyError::Size)?)),
        1 | 2 => Err(BodyError::Size),
        _ => Err(BodyError::CType),
    }
}

/// Where encoded messages go: a `Vec<u8>` or a `BytesMut`. Lengths and the checksum are
/// back-filled through `as_mut`; a failed encode truncates back to where it started.
pub(crate) trait Sink: BufMut + AsMut<[u8]> {
    fn truncate_to(&mut self, len: usize);
}

impl Sink for Vec<u8> {
    fn truncate_to(&mut self, len: usize) {
        self.truncate(len);
    }
}

impl Sink for BytesMut {
    fn truncate_to(&mut self, len: usize) {
        self.truncate(len);
    }
}

/// Current length of the sink.
pub(crate) fn sink_len<S: Sink>(out: &mut S) -> usize {
    out.as_mut().len()
}

/// Writes a `u16` at `at` (a back-fill of a length written as a placeholder).
pub(crate) fn patch_u16<S: Sink>(out: &mut S, at: usize, value: u16) {
    if let Some(slot) = out.as_mut().get_mut(at..at + 2) {
        slot.copy_from_slice(&value.to_be_bytes());
    }
}

/// RFC 1071 Internet checksum of `data`: the one's complement of the one's-complement sum of
/// its 16-bit words (an odd trailing byte is padded with zero).
pub(crate) fn checksum(data: &[u8]) -> u16 {
    // RFC 1071 §2(B): the sum does not depend on byte order. Summing native-order 32-bit
    // words into a u64 (no byte swap per word, a loop the compiler can vectorize) and
    // swapping the folded 16-bit result once gives the big-endian sum; a u64 cannot overflow
    // below 16 GiB of input.
    let mut words = data.chunks_exact(4);
    let mut sum: u64 = words
        .by_ref()
        .map(|w| u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
        .sum();
    // 1 to 3 trailing bytes, zero-padded at the end as RFC 1071 pads an odd byte.
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    if let Some(head) = tail.get_mut(..rest.len()) {
        head.copy_from_slice(rest);
    }
    sum += u64::from(u32::from_ne_bytes(tail));
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::from_be(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), Some(0x0102));
        assert_eq!(r.u16(), None);
        assert_eq!(r.u8(), Some(3));
        assert!(r.is_empty());
        assert_eq!(r.take(usize::MAX), None);
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3 example: words 0001 f203 f4f5 f6f7 sum to ddf2, checksum 220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6]),
            !0xdcfbu16
        );
    }

    #[test]
    fn checksum_matches_a_word_by_word_sum_at_every_length() {
        let reference = |data: &[u8]| {
            let mut sum = 0u32;
            for pair in data.chunks(2) {
                sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
            }
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            !(sum as u16)
        };
        let data: Vec<u8> = (0u32..300).map(|i| (i * 167 + 13) as u8 ^ 0xa5).collect();
        for len in 0..data.len() {
            for start in 0..3 {
                let slice = &data[start..len.max(start)];
                assert_eq!(checksum(slice), reference(slice), "length {}", slice.len());
            }
        }
        assert_eq!(checksum(&[0xff; 64]), 0);
    }
}
