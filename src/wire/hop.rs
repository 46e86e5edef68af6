//! RSVP_HOP (class 3), TIME_VALUES (5), SCOPE (7) and RESV_CONFIRM (15).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::primitive::{decode_addr, put_ip, BodyError, Reader};

/// RSVP_HOP object (class 3): the previous (Path) or next (Resv) RSVP hop — C-Type 1 IPv4,
/// 2 IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RsvpHop {
    /// Address of the interface that sent the message.
    pub address: IpAddr,
    /// Logical Interface Handle, echoed back unchanged by the neighbour.
    pub lih: u32,
}

impl RsvpHop {
    /// A hop at `address` with logical interface handle `lih`.
    pub fn new(address: IpAddr, lih: u32) -> Self {
        RsvpHop { address, lih }
    }

    /// C-Type on the wire: 1 (IPv4) or 2 (IPv6).
    pub fn c_type(&self) -> u8 {
        if self.address.is_ipv4() {
            1
        } else {
            2
        }
    }

    #[inline(always)]
    pub(crate) fn decode(c_type: u8, body: &[u8]) -> Result<Self, BodyError> {
        if c_type == 1 {
            let Ok([a, b, c, d, lih @ ..]) = <[u8; 8]>::try_from(body) else {
                return Err(BodyError::Size);
            };
            return Ok(RsvpHop {
                address: IpAddr::V4([a, b, c, d].into()),
                lih: u32::from_be_bytes(lih),
            });
        }
        let address = decode_addr(c_type, body, 4)?;
        let lih = Reader::new(&body[body.len() - 4..])
            .u32()
            .ok_or(BodyError::Size)?;
        Ok(RsvpHop { address, lih })
    }

    pub(crate) fn encode_body<S: bytes::BufMut>(&self, out: &mut S) {
        put_ip(out, self.address);
        out.put_u32(self.lih);
    }
}

/// TIME_VALUES object (class 5, C-Type 1): the sender's refresh period `R`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeValues {
    /// Refresh period in milliseconds.
    pub refresh_period_ms: u32,
}

impl TimeValues {
    /// Time values for refresh period `period` (saturating at `u32::MAX` ms).
    pub fn new(period: Duration) -> Self {
        TimeValues {
            refresh_period_ms: u32::try_from(period.as_millis()).unwrap_or(u32::MAX),
        }
    }

    /// The refresh period `R`.
    pub fn refresh_period(&self) -> Duration {
        Duration::from_millis(u64::from(self.refresh_period_ms))
    }

    #[inline(always)]
    pub(crate) fn decode(c_type: u8, body: &[u8]) -> Result<Self, BodyError> {
        if c_type != 1 {
            return Err(BodyError::CType);
        }
        let Ok(period) = <[u8; 4]>::try_from(body) else {
            return Err(BodyError::Size);
        };
        Ok(TimeValues {
            refresh_period_ms: u32::from_be_bytes(period),
        })
    }

    pub(crate) fn encode_body<S: bytes::BufMut>(&self, out: &mut S) {
        out.put_u32(self.refresh_period_ms);
    }
}

/// SCOPE object (class 7): the senders a wildcard-style message applies to — C-Type 1 IPv4
/// list, 2 IPv6 list. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// C-Type 1: IPv4 sender addresses.
    Ipv4(Vec<Ipv4Addr>),
    /// C-Type 2: IPv6 sender addresses.
    Ipv6(Vec<Ipv6Addr>),
}

impl Scope {
    /// C-Type on the wire.
    pub fn c_type(&self) -> u8 {
        match self {
            Scope::Ipv4(_) => 1,
            Scope::Ipv6(_) => 2,
        }
    }

    /// Number of addresses listed.
    pub fn len(&self) -> usize {
        match self {
            Scope::Ipv4(list) => list.len(),
            Scope::Ipv6(list) => list.len(),
        }
    }

    /// `true` when no address is listed (never the case for a decoded SCOPE).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn decode(c_type: u8, body: &[u8]) -> Result<Self, BodyError> {
        let width = match c_type {
            1 => 4,
            2 => 16,
            _ => return Err(BodyError::CType),
        };
        if body.is_empty() || !body.len().is_multiple_of(width) {
            return Err(BodyError::Size);
        }
        let chunks = body.chunks_exact(width);
        Ok(if c_type == 1 {
            Scope::Ipv4(
                chunks
                    .map(|c| Ipv4Addr::from(<[u8; 4]>::try_from(c).unwrap_or_default()))
                    .collect(),
            )
        } else {
            Scope::Ipv6(
                chunks
                    .map(|c| Ipv6Addr::from(<[u8; 16]>::try_from(c).unwrap_or_default()))
                    .collect(),
            )
        })
    }

    pub(crate) fn encode_body<S: bytes::BufMut>(&self, out: &mut S) {
        match self {
            Scope::Ipv4(list) => list.iter().for_each(|a| out.put_slice(&a.octets())),
            Scope::Ipv6(list) => list.iter().for_each(|a| out.put_slice(&a.octets())),
        }
    }
}

/// RESV_CONFIRM object (class 15): where the ResvConf goes — C-Type 1 IPv4, 2 IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResvConfirm {
    /// The receiver asking for confirmation.
    pub receiver: IpAddr,
}

impl ResvConfirm {
    /// C-Type on the wire: 1 (IPv4) or 2 (IPv6).
    pub fn c_type(&self) -> u8 {
        if self.receiver.is_ipv4() {
            1
        } else {
            2
        }
    }

    #[inline(always)]
    pub(crate) fn decode(c_type: u8, body: &[u8]) -> Result<Self, BodyError> {
        Ok(ResvConfirm {
            receiver: decode_addr(c_type, body, 0)?,
        })
    }

    pub(crate) fn encode_body<S: bytes::BufMut>(&self, out: &mut S) {
        put_ip(out, self.receiver);
    }
}
