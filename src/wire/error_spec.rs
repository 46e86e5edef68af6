//! ERROR_SPEC (class 6), IPv4 and IPv6, and the RSVP error it carries: [`ErrorCode`] and
//! [`RsvpError`] (code and value, RFC 2205 Appendix B).

use std::fmt;
use std::net::IpAddr;

use super::primitive::{decode_addr, put_ip, BodyError, Reader};

/// ERROR_SPEC flag `InPlace` (RFC 2205 §A.5): the reservation is still in place.
pub const ERROR_FLAG_IN_PLACE: u8 = 0x01;
/// ERROR_SPEC flag `NotGuilty` (RFC 2205 §A.5): this receiver's request did not cause it.
pub const ERROR_FLAG_NOT_GUILTY: u8 = 0x02;

/// An RSVP error code: the ERROR_SPEC's 8-bit Error Code (RFC 2205 Appendix B).
///
/// A newtype rather than an enum, as rustls' `AlertDescription` or quinn's
/// `TransportErrorCode`: every byte received is representable, and the codes the RFC names
/// are associated constants. `Display` prints the RFC's name and the number.
///
/// # Examples
///
/// ```
/// use qtoq::wire::ErrorCode;
/// assert_eq!(ErrorCode::ADMISSION_CONTROL_FAILURE.to_string(), "Admission Control failure (1)");
/// assert_eq!(ErrorCode(99).to_string(), "error code 99");
/// ```
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct ErrorCode(pub u8);

impl ErrorCode {
    /// 0: Confirmation (the ERROR_SPEC of a ResvConf; the value is 0 too).
    pub const CONFIRMATION: ErrorCode = ErrorCode(0);
    /// 1: Admission Control failure; the value holds a sub-code (see [`RsvpError`]).
    pub const ADMISSION_CONTROL_FAILURE: ErrorCode = ErrorCode(1);
    /// 2: Policy Control failure (values per RFC 2750).
    pub const POLICY_CONTROL_FAILURE: ErrorCode = ErrorCode(2);
    /// 3: No path information for this Resv message.
    pub const NO_PATH_INFORMATION: ErrorCode = ErrorCode(3);
    /// 4: No sender information for this Resv message.
    pub const NO_SENDER_INFORMATION: ErrorCode = ErrorCode(4);
    /// 5: Conflicting reservation style.
    pub const CONFLICTING_RESERVATION_STYLE: ErrorCode = ErrorCode(5);
    /// 6: Unknown reservation style.
    pub const UNKNOWN_RESERVATION_STYLE: ErrorCode = ErrorCode(6);
    /// 7: Conflicting dest ports.
    pub const CONFLICTING_DEST_PORTS: ErrorCode = ErrorCode(7);
    /// 8: Conflicting sender ports.
    pub const CONFLICTING_SENDER_PORTS: ErrorCode = ErrorCode(8);
    /// 12: Service preempted.
    pub const SERVICE_PREEMPTED: ErrorCode = ErrorCode(12);
    /// 13: Unknown object class; the value is `Class-Num << 8 | C-Type`.
    pub const UNKNOWN_OBJECT_CLASS: ErrorCode = ErrorCode(13);
    /// 14: Unknown object C-Type; the value is `Class-Num << 8 | C-Type`.
    pub const UNKNOWN_OBJECT_C_TYPE: ErrorCode = ErrorCode(14);
    /// 20: Reserved for use by the API.
    pub const API_ERROR: ErrorCode = ErrorCode(20);
    /// 21: Traffic Control Error; the value holds a sub-code (see [`RsvpError`]).
    pub const TRAFFIC_CONTROL_ERROR: ErrorCode = ErrorCode(21);
    /// 22: Traffic Control System error; the value is system-specific.
    pub const TRAFFIC_CONTROL_SYSTEM_ERROR: ErrorCode = ErrorCode(22);
    /// 23: RSVP System error; the value is implementation-specific (this codec's are listed
    /// at [`WireError::error_spec`](super::WireError::error_spec)).
    pub const RSVP_SYSTEM_ERROR: ErrorCode = ErrorCode(23);

    /// The RFC 2205 name of a code it defines.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "Confirmation",
            1 => "Admission Control failure",
            2 => "Policy Control failure",
            3 => "No path information for this Resv message",
            4 => "No sender information for this Resv message",
            5 => "Conflicting reservation style",
            6 => "Unknown reservation style",
            7 => "Conflicting dest ports",
            8 => "Conflicting sender ports",
            12 => "Service preempted",
            13 => "Unknown object class",
            14 => "Unknown object C-Type",
            20 => "API error",
            21 => "Traffic Control Error",
            22 => "Traffic Control System error",
            23 => "RSVP System error",
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "error code {}", self.0),
        }
    }
}

impl From<u8> for ErrorCode {
    fn from(code: u8) -> Self {
        ErrorCode(code)
    }
}

impl From<ErrorCode> for u8 {
    fn from(code: ErrorCode) -> Self {
        code.0
    }
}

/// An RSVP error: the Error Code and 16-bit Error Value an ERROR_SPEC carries (RFC 2205
/// Appendix B), without the node and flags.
///
/// `Display` prints the code and, where the RFCs give the value a meaning, that meaning: the
/// globally-defined sub-codes of Admission Control failure (1) and Traffic Control Error
/// (21), the class and C-Type of codes 13 and 14; otherwise the value as a number.
///
/// # Examples
///
/// ```
/// use qtoq::wire::{ErrorCode, RsvpError};
/// let error = RsvpError::new(ErrorCode::ADMISSION_CONTROL_FAILURE, 2);
/// assert_eq!(
///     error.to_string(),
///     "Admission Control failure (1): requested bandwidth unavailable (2)"
/// );
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct RsvpError {
    /// The Error Code.
    pub code: ErrorCode,
    /// The Error Value; its meaning depends on the code.
    pub value: u16,
}

impl RsvpError {
    /// Admission Control failure (1), globally-defined sub-code 1: delay bound cannot be met.
    pub const DELAY_BOUND_NOT_MET: RsvpError =
        RsvpError::new(ErrorCode::ADMISSION_CONTROL_FAILURE, 1);
    /// Admission Control failure (1), globally-defined sub-code 2: requested bandwidth
    /// unavailable.
    pub const BANDWIDTH_UNAVAILABLE: RsvpError =
        RsvpError::new(ErrorCode::ADMISSION_CONTROL_FAILURE, 2);
    /// Admission Control failure (1), globally-defined sub-code 3: MTU in flowspec larger
    /// than interface MTU.
    pub const MTU_TOO_BIG: RsvpError = RsvpError::new(ErrorCode::ADMISSION_CONTROL_FAILURE, 3);
    /// Traffic Control Error (21), sub-code 1: service conflict.
    pub const SERVICE_CONFLICT: RsvpError = RsvpError::new(ErrorCode::TRAFFIC_CONTROL_ERROR, 1);
    /// Traffic Control Error (21), sub-code 2: service unsupported.
    pub const SERVICE_UNSUPPORTED: RsvpError = RsvpError::new(ErrorCode::TRAFFIC_CONTROL_ERROR, 2);
    /// Traffic Control Error (21), sub-code 3: bad flowspec value.
    pub const BAD_FLOWSPEC: RsvpError = RsvpError::new(ErrorCode::TRAFFIC_CONTROL_ERROR, 3);
    /// Traffic Control Error (21), sub-code 4: bad tspec value.
    pub const BAD_TSPEC: RsvpError = RsvpError::new(ErrorCode::TRAFFIC_CONTROL_ERROR, 4);
    /// Traffic Control Error (21), sub-code 5: bad adspec value.
    pub const BAD_ADSPEC: RsvpError = RsvpError::new(ErrorCode::TRAFFIC_CONTROL_ERROR, 5);

    /// The error `code` with value `value`.
    pub const fn new(code: ErrorCode, value: u16) -> Self {
        RsvpError { code, value }
    }
}

impl From<RsvpError> for (u8, u16) {
    fn from(error: RsvpError) -> Self {
        (error.code.0, error.value)
    }
}

/// The globally-defined sub-code names of codes 1 (RFC 2205 App. B) and 21 (RFC 2205 App. B,
/// the services of RFC 2210/2211/2212).
fn sub_code_name(code: ErrorCode, sub: u16) -> Option<&'static str> {
    Some(match RsvpError::new(code, sub) {
        RsvpError::DELAY_BOUND_NOT_MET => "delay bound cannot be met",
        RsvpError::BANDWIDTH_UNAVAILABLE => "requested bandwidth unavailable",
        RsvpError::MTU_TOO_BIG => "MTU in flowspec larger than interface MTU",
        RsvpError::SERVICE_CONFLICT => "service conflict",
        RsvpError::SERVICE_UNSUPPORTED => "service unsupported",
        RsvpError::BAD_FLOWSPEC => "bad flowspec value",
        RsvpError::BAD_TSPEC => "bad tspec value",
        RsvpError::BAD_ADSPEC => "bad adspec value",
        _ => return None,
    })
}

impl fmt::Display for RsvpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        let value = self.value;
        match self.code {
            ErrorCode::ADMISSION_CONTROL_FAILURE | ErrorCode::TRAFFIC_CONTROL_ERROR => {
                // `ssur cccc cccc cccc`: ss = who defines the 12-bit sub-code, u = the
                // message is informational (state may be updated), r reserved.
                let sub = value & 0x0fff;
                match value >> 14 {
                    0b00 => match sub_code_name(self.code, sub) {
                        Some(name) => write!(f, ": {name} ({sub})")?,
                        None => write!(f, ": sub-code {sub}")?,
                    },
                    0b10 => write!(f, ": organization-specific sub-code {sub}")?,
                    0b11 => write!(f, ": service-specific sub-code {sub}")?,
                    _ => write!(f, ": value {value:#06x}")?,
                }
                if value & 0x2000 != 0 {
                    f.write_str(", informational")?;
                }
                Ok(())
            }
            ErrorCode::UNKNOWN_OBJECT_CLASS | ErrorCode::UNKNOWN_OBJECT_C_TYPE => {
                write!(f, ": class {}, c-type {}", value >> 8, value & 0xff)
            }
            _ if value == 0 => Ok(()),
            _ => write!(f, ": value {value}"),
        }
    }
}

/// ERROR_SPEC object (class 6): an error (or, with code 0, a confirmation) — C-Type 1 IPv4,
/// 2 IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorSpec {
    /// The node that detected the error.
    pub node: IpAddr,
    /// Flags (`ERROR_FLAG_IN_PLACE`, `ERROR_FLAG_NOT_GUILTY`).
    pub flags: u8,
    /// Error code (RFC 2205 Appendix B).
    pub code: ErrorCode,
    /// Error value, meaning depends on the code.
    pub value: u16,
}

impl ErrorSpec {
    /// An error detected at `node`.
    pub fn new(node: IpAddr, code: ErrorCode, value: u16) -> Self {
        ErrorSpec {
            node,
            flags: 0,
            code,
            value,
        }
    }

    /// The error carried: code and value.
    pub fn error(&self) -> RsvpError {
        RsvpError::new(self.code, self.value)
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
            code: ErrorCode(code),
            value,
        })
    }

    pub(crate) fn encode_body<S: bytes::BufMut>(&self, out: &mut S) {
        put_ip(out, self.node);
        out.put_u8(self.flags);
        out.put_u8(self.code.0);
        out.put_u16(self.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_print_the_rfc_name_and_number() {
        assert_eq!(ErrorCode::CONFIRMATION.to_string(), "Confirmation (0)");
        assert_eq!(
            ErrorCode::UNKNOWN_OBJECT_C_TYPE.to_string(),
            "Unknown object C-Type (14)"
        );
        assert_eq!(
            ErrorCode::RSVP_SYSTEM_ERROR.to_string(),
            "RSVP System error (23)"
        );
        // Unassigned codes keep their number.
        assert_eq!(ErrorCode(9).to_string(), "error code 9");
        assert_eq!(ErrorCode(255).to_string(), "error code 255");
        assert_eq!(ErrorCode(9).name(), None);
        assert_eq!(u8::from(ErrorCode::from(21)), 21);
    }

    #[test]
    fn errors_decode_the_values_the_rfcs_define() {
        let show = |code, value| RsvpError::new(code, value).to_string();
        assert_eq!(
            show(ErrorCode::ADMISSION_CONTROL_FAILURE, 3),
            "Admission Control failure (1): MTU in flowspec larger than interface MTU (3)"
        );
        assert_eq!(
            show(ErrorCode::TRAFFIC_CONTROL_ERROR, 4),
            "Traffic Control Error (21): bad tspec value (4)"
        );
        assert_eq!(
            show(ErrorCode::TRAFFIC_CONTROL_ERROR, 0x2002),
            "Traffic Control Error (21): service unsupported (2), informational"
        );
        assert_eq!(
            show(ErrorCode::ADMISSION_CONTROL_FAILURE, 0xc007),
            "Admission Control failure (1): service-specific sub-code 7"
        );
        assert_eq!(
            show(ErrorCode::ADMISSION_CONTROL_FAILURE, 9),
            "Admission Control failure (1): sub-code 9"
        );
        assert_eq!(
            show(ErrorCode::UNKNOWN_OBJECT_CLASS, (42 << 8) | 7),
            "Unknown object class (13): class 42, c-type 7"
        );
        assert_eq!(
            show(ErrorCode::TRAFFIC_CONTROL_SYSTEM_ERROR, 17),
            "Traffic Control System error (22): value 17"
        );
        assert_eq!(show(ErrorCode::CONFIRMATION, 0), "Confirmation (0)");
        assert_eq!(show(ErrorCode(99), 1), "error code 99: value 1");
        let pair: (u8, u16) = RsvpError::new(ErrorCode::POLICY_CONTROL_FAILURE, 5).into();
        assert_eq!(pair, (2, 5));
    }

    #[test]
    fn error_specs_round_trip_with_their_typed_code() {
        for (node, c_type) in [("192.0.2.9", 1), ("2001:db8::9", 2)] {
            for code in [ErrorCode::ADMISSION_CONTROL_FAILURE, ErrorCode(200)] {
                let mut spec = ErrorSpec::new(node.parse().unwrap(), code, 0x2002);
                spec.flags = ERROR_FLAG_IN_PLACE;
                let mut body = Vec::new();
                spec.encode_body(&mut body);
                assert_eq!(spec.c_type(), c_type);
                let back = ErrorSpec::decode(c_type, &body).unwrap();
                assert_eq!(back, spec);
                assert_eq!(back.error(), RsvpError::new(code, 0x2002));
                // The code is the byte before the 16-bit value.
                assert_eq!(body[body.len() - 3], code.0);
            }
        }
    }
}
