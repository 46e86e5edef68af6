//! Byte-level helpers: a bounds-checked big-endian [`Reader`], the output [`Sink`] trait with
//! length back-filling, and the RFC 1071 checksum.

use std::net::{Ipv4Addr, Ipv6Addr};

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
    let mut sum: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        // Summing 32-bit halves and folding once at the end gives the same one's-complement
        // sum as 16-bit words (end-around carry); a u64 cannot overflow below 4 GiB of input.
        let word = u64::from_be_bytes([
            chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
        ]);
        sum += (word >> 32) + (word & 0xffff_ffff);
    }
    let mut rest = chunks.remainder().chunks_exact(2);
    for pair in &mut rest {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = rest.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
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
}
