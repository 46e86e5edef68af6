//! ERROR_SPEC (class 6): IPv4 and IPv6.

use std::net::IpAddr;

use super::primitive::{decode_addr, put_ip, BodyError, Reader};

/// ERROR_SPEC flag `InPlace` (RFC 2205 §A.5): the reservation is still in place.
pub const ERROR_FLAG_IN_PLACE: u8 = 0x01;
/// ERROR_SPEC flag `NotGuilty` (RFC 2205 §A.5): this receiver's request did not cause it.
pub const ERROR_FLAG_NOT_GUILTY: u8 = 0x02;

/// ERROR_SPEC object (class 6): an error (or, with code 0, a confirmation) — C-Type 1 IPv4,
/// 2 IPv6. The codes are RFC 2205 Appendix B's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorSpec {
    /// The node that detected the error.
    pub node: IpAddr,
    /// Flags (`ERROR_FLAG_IN_PLACE`, `ERROR_FLAG_NOT_GUILTY`).
    pub flags: u8,
    /// Error code (0 = confirmation, 1 admission failure, …, 13/14 unknown class/C-Type).
    pub code: u8,
    /// Error value, meaning depends on the code.
    pub value: u16,
}

impl ErrorSpec {
    /// An error detected at `node`.
    pub fn new(node: IpAddr, code: u8, value: u16) -> Self {
        ErrorSpec {
            node,
            flags: 0,
            code,
            value,
        }
    }

    /// C-Type on the wire: 1 (IPv4) or 2 (IPv6).
    pub fn c_type(&self) -> u8 {
        if self.node.is_ipv4() {
            1
        } else {
            2
        }
    }

    #[inline(always)]
    pub(crate) fn decode(c_type: u8, body: &[u8]) -> Result<Self, BodyError> {
        let node = decode_addr(c_type, body, 4)?;
        let mut r = Reader::new(&body[body.len() - 4..]);
        let (Some(flags), Some(code), Some(value)) = (r.u8(), r.u8(), r.u16()) else {
            return Err(BodyError::Size);
        };
        Ok(ErrorSpec {
            node,
            flags,
            code,
            value,
        })
    }

    pub(crate) fn encode_body<S: bytes::BufMut>(&self, out: &mut S) {
        put_ip(out, self.node);
        out.put_u8(self.flags);
        out.put_u8(self.code);
        out.put_u16(self.value);
    }
}
