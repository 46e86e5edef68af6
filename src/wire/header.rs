//! The common header's fields (RFC 2205 §3.1.1): [`MsgType`], the version, flags and
//! defaults. `Message` (in `message.rs`) reads and writes the header itself.

/// Length of the RSVP common header.
pub const COMMON_HEADER_LEN: usize = 8;
/// The only RSVP version.
pub const RSVP_VERSION: u8 = 1;
/// Common-header flag: the sender supports refresh reduction (RFC 2961).
pub const FLAG_REFRESH_REDUCTION_CAPABLE: u8 = 0x01;
/// Send_TTL the constructors use.
pub const DEFAULT_SEND_TTL: u8 = 64;

/// RSVP message type (common header, RFC 2205 §3.1.1, RFC 2961, RFC 3097).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum MsgType {
    /// 1: Path.
    Path,
    /// 2: Resv.
    Resv,
    /// 3: PathErr.
    PathErr,
    /// 4: ResvErr.
    ResvErr,
    /// 5: PathTear.
    PathTear,
    /// 6: ResvTear.
    ResvTear,
    /// 7: ResvConf.
    ResvConf,
    /// 12: Bundle (RFC 2961).
    Bundle,
    /// 13: Ack (RFC 2961).
    Ack,
    /// 15: Srefresh (RFC 2961).
    Srefresh,
    /// 25: Integrity Challenge (RFC 3097).
    IntegrityChallenge,
    /// 26: Integrity Response (RFC 3097).
    IntegrityResponse,
}

impl MsgType {
    /// All message types, in numeric order.
    pub const ALL: [MsgType; 12] = [
        MsgType::Path,
        MsgType::Resv,
        MsgType::PathErr,
        MsgType::ResvErr,
        MsgType::PathTear,
        MsgType::ResvTear,
        MsgType::ResvConf,
        MsgType::Bundle,
        MsgType::Ack,
        MsgType::Srefresh,
        MsgType::IntegrityChallenge,
        MsgType::IntegrityResponse,
    ];

    /// The number on the wire.
    pub fn number(self) -> u8 {
        match self {
            MsgType::Path => 1,
            MsgType::Resv => 2,
            MsgType::PathErr => 3,
            MsgType::ResvErr => 4,
            MsgType::PathTear => 5,
            MsgType::ResvTear => 6,
            MsgType::ResvConf => 7,
            MsgType::Bundle => 12,
            MsgType::Ack => 13,
            MsgType::Srefresh => 15,
            MsgType::IntegrityChallenge => 25,
            MsgType::IntegrityResponse => 26,
        }
    }

    /// The type a wire number names, if any.
    pub fn from_number(number: u8) -> Option<MsgType> {
        MsgType::ALL.into_iter().find(|t| t.number() == number)
    }
}
