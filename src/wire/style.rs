//! STYLE (class 8, C-Type 1): the reservation style.

use super::primitive::BodyError;

/// Reservation style (RFC 2205 §1.3, option vector of §A.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Style {
    /// Wildcard-Filter: one reservation shared by all senders (option vector `0b10_001`).
    WildcardFilter,
    /// Fixed-Filter: one reservation per listed sender (`0b01_010`).
    FixedFilter,
    /// Shared-Explicit: one reservation shared by the listed senders (`0b10_010`).
    SharedExplicit,
}

impl Style {
    /// The 24-bit option vector: sharing control (2 bits) and sender selection (3 bits).
    pub fn option_vector(self) -> u32 {
        match self {
            Style::WildcardFilter => 0b10_001,
            Style::FixedFilter => 0b01_010,
            Style::SharedExplicit => 0b10_010,
        }
    }

    /// The style an option vector names, if any (reserved bits must be zero).
    pub fn from_option_vector(vector: u32) -> Option<Style> {
        match vector {
            0b10_001 => Some(Style::WildcardFilter),
            0b01_010 => Some(Style::FixedFilter),
            0b10_010 => Some(Style::SharedExplicit),
            _ => None,
        }
    }

    #[inline(always)]
    pub(crate) fn decode(c_type: u8, body: &[u8]) -> Result<Self, BodyError> {
        if c_type != 1 {
            return Err(BodyError::CType);
        }
        // Byte 0 holds flags; none are defined.
        let Ok([_flags, a, b, c]) = <[u8; 4]>::try_from(body) else {
            return Err(BodyError::Size);
        };
        let vector = u32::from_be_bytes([0, a, b, c]);
        Style::from_option_vector(vector).ok_or(BodyError::Style(vector))
    }

    pub(crate) fn encode_body<S: bytes::BufMut>(&self, out: &mut S) {
        out.put_u32(self.option_vector());
    }
}
