//! Decode and encode errors, each mapped to the RSVP ERROR_SPEC it deserves.

use super::class;
use super::error_spec::{ErrorCode, RsvpError};
use super::header::MsgType;
use super::primitive::BodyError;
use super::style::Style;

/// Why a message could not be decoded or validated.
///
/// Every variant says what was wrong and, where it applies, where: the byte `offset` from the
/// start of the message (of the object's header for object errors), the object's `class_num`
/// and `c_type`. [`WireError::error_spec`] turns it into the ERROR_SPEC code/value an RSVP node
/// answers with; [`WireError::discard_silently`] says when the RFC wants no answer at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than a common header (8).
    #[error("message too short: {len} bytes, the common header alone needs 8; drop it")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The common header's version is not 1.
    #[error("unsupported rsvp version {version} (only version 1 exists); drop the message")]
    BadVersion {
        /// Version found.
        version: u8,
    },
    /// The common header's message type is not one this codec knows.
    #[error("unknown rsvp message type {msg_type}; drop the message")]
    UnknownMsgType {
        /// Type found.
        msg_type: u8,
    },
    /// The common header's length disagrees with the bytes received (or is below 8 or not a
    /// multiple of 4).
    #[error("message length field says {declared} bytes but {available} bytes were received; the datagram is truncated or padded")]
    BadMessageLength {
        /// Length in the header.
        declared: usize,
        /// Bytes available.
        available: usize,
    },
    /// A non-zero checksum that does not match the message.
    #[error("checksum mismatch: header carries {found:#06x}, the message sums to {computed:#06x}; the message was corrupted in transit")]
    BadChecksum {
        /// Checksum field as received.
        found: u16,
        /// Checksum computed over the message.
        computed: u16,
    },
    /// An object header whose length is < 4, not a multiple of 4, or runs past the message.
    #[error("object at byte {offset} (class {class_num}, c-type {c_type}) has invalid length {length}: it must be a multiple of 4, at least 4, and fit in the message")]
    BadObjectLength {
        /// Offset of the object header.
        offset: usize,
        /// Length field.
        length: usize,
        /// Class-Num.
        class_num: u8,
        /// C-Type.
        c_type: u8,
    },
    /// Class-Num of the form `0bbbbbbb` that this node does not know (RFC 2205 §3.10).
    #[error("object at byte {offset}: unknown class {class_num} (c-type {c_type}) of the must-understand range; reject the message")]
    UnknownClass {
        /// Offset of the object header.
        offset: usize,
        /// Class-Num.
        class_num: u8,
        /// C-Type.
        c_type: u8,
    },
    /// A known class with a C-Type this node does not know.
    #[error("object at byte {offset}: unknown c-type {c_type} for class {class_num}")]
    UnknownCType {
        /// Offset of the object header.
        offset: usize,
        /// Class-Num.
        class_num: u8,
        /// C-Type.
        c_type: u8,
    },
    /// An object body of the wrong size or with invalid contents for its C-Type.
    #[error("object at byte {offset} (class {class_num}, c-type {c_type}) is malformed: {reason}")]
    Malformed {
        /// Offset of the object header.
        offset: usize,
        /// Class-Num.
        class_num: u8,
        /// C-Type.
        c_type: u8,
        /// What is wrong.
        reason: &'static str,
    },
    /// A STYLE object whose option vector is not WF, FF or SE.
    #[error("style object at byte {offset}: option vector {option_vector:#08x} is not a known reservation style (WF, FF or SE)")]
    UnknownStyle {
        /// Offset of the object header.
        offset: usize,
        /// The 24-bit option vector.
        option_vector: u32,
    },
    /// An IntServ body (RFC 2210) names a service this codec does not implement.
    #[error("object at byte {offset} (class {class_num}, c-type {c_type}): intserv service {service} is not supported (only controlled-load 5 and guaranteed 2)")]
    UnsupportedService {
        /// Offset of the object header.
        offset: usize,
        /// Class-Num.
        class_num: u8,
        /// C-Type.
        c_type: u8,
        /// Service number found.
        service: u8,
    },
    /// A malformed IntServ body: FLOWSPEC (class 9), SENDER_TSPEC (12) or ADSPEC (13).
    #[error(
        "object at byte {offset} (class {class_num}, c-type {c_type}): bad intserv body: {reason}"
    )]
    BadIntServ {
        /// Offset of the object header.
        offset: usize,
        /// Class-Num (9, 12 or 13).
        class_num: u8,
        /// C-Type.
        c_type: u8,
        /// What is wrong.
        reason: &'static str,
    },
    /// A required object is missing from the message.
    #[error("{msg_type:?} message lacks its required object of class {class_num}")]
    MissingObject {
        /// The message type.
        msg_type: MsgType,
        /// Class-Num of the missing object.
        class_num: u8,
    },
    /// An object this message type may not carry.
    #[error("object at byte {offset} (class {class_num}, c-type {c_type}) is not allowed in a {msg_type:?} message")]
    UnexpectedObject {
        /// Offset of the object header.
        offset: usize,
        /// The message type.
        msg_type: MsgType,
        /// Class-Num.
        class_num: u8,
        /// C-Type.
        c_type: u8,
    },
    /// A second copy of an object that may appear only once.
    #[error("object at byte {offset} (class {class_num}, c-type {c_type}) appears more than once")]
    DuplicateObject {
        /// Offset of the second copy.
        offset: usize,
        /// Class-Num.
        class_num: u8,
        /// C-Type.
        c_type: u8,
    },
    /// An object in a place the message format forbids.
    #[error(
        "object at byte {offset} (class {class_num}, c-type {c_type}) is out of order: {reason}"
    )]
    ObjectOrder {
        /// Offset of the object header.
        offset: usize,
        /// Class-Num.
        class_num: u8,
        /// C-Type.
        c_type: u8,
        /// Which rule was broken.
        reason: &'static str,
    },
    /// FLOWSPEC / FILTER_SPEC objects that do not form the flow descriptor list the style asks
    /// for (e.g. FF without FLOWSPEC/FILTER_SPEC pairs).
    #[error("flow descriptor list at byte {offset} does not fit style {style:?}: {reason}")]
    BadFlowDescriptor {
        /// Offset of the offending object (or of the message end when something is missing).
        offset: usize,
        /// The message's style.
        style: Style,
        /// What is wrong.
        reason: &'static str,
    },
    /// A filter, sender template or confirmation address of another IP version than the
    /// SESSION.
    #[error("object at byte {offset} (class {class_num}, c-type {c_type}) uses another ip version than the session")]
    AddressFamilyMismatch {
        /// Offset of the object header.
        offset: usize,
        /// Class-Num.
        class_num: u8,
        /// C-Type.
        c_type: u8,
    },
    /// A Bundle whose sub-messages are malformed (or nest another Bundle).
    #[error("bundle at byte {offset}: {reason}")]
    BadBundle {
        /// Offset of the offending sub-message.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// More objects than [`MAX_OBJECTS`](super::MAX_OBJECTS) in one message.
    #[error(
        "object at byte {offset} is one too many: a message may carry at most {limit} objects"
    )]
    TooManyObjects {
        /// Offset of the first object over the limit.
        offset: usize,
        /// The limit.
        limit: usize,
    },
    /// More FILTER_SPEC objects than [`MAX_FILTER_SPECS`](super::MAX_FILTER_SPECS) in one
    /// message.
    #[error("filter spec at byte {offset} is one too many: a message may carry at most {limit}")]
    TooManyFilterSpecs {
        /// Offset of the first FILTER_SPEC over the limit.
        offset: usize,
        /// The limit.
        limit: usize,
    },
    /// Validation of a message built in memory (`Message::validate`) only: the message cannot
    /// be expressed on the wire.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl WireError {
    /// The ERROR_SPEC error code and value this error deserves (RFC 2205 App. B).
    ///
    /// * unknown class → `(13, class << 8 | c_type)`, unknown C-Type → `(14, class << 8 | c_type)`;
    /// * unknown style → `(6, 0)`;
    /// * IntServ: unsupported service → `(21, 2)`, bad FLOWSPEC → `(21, 3)`, bad SENDER_TSPEC →
    ///   `(21, 4)`, bad ADSPEC → `(21, 5)` (the traffic-control sub-codes);
    /// * everything else → `(23, n)`, "RSVP system error" with an implementation-defined value
    ///   `n` that names the kind of malformation (1 too short, 2 bad version, 3 unknown message
    ///   type, 4 bad message length, 5 bad checksum, 6 bad object length, 7 malformed object,
    ///   8 missing object, 9 unexpected object, 10 duplicate object, 11 object order, 12 flow
    ///   descriptor list, 13 address family, 14 bundle, 15 too long, 16 unaligned, 17 too
    ///   many objects, 18 too many filter specs).
    ///
    /// # Examples
    ///
    /// ```
    /// use qtoq::wire::{ErrorCode, RsvpError, WireError};
    /// let err = WireError::UnknownClass { offset: 8, class_num: 99, c_type: 1 };
    /// assert_eq!(err.error_spec(), RsvpError::new(ErrorCode::UNKNOWN_OBJECT_CLASS, (99 << 8) | 1));
    /// ```
    pub fn error_spec(&self) -> RsvpError {
        let class_ctype = |class: u8, ctype: u8| (u16::from(class) << 8) | u16::from(ctype);
        let system = |value| RsvpError::new(ErrorCode::RSVP_SYSTEM_ERROR, value);
        match *self {
            WireError::UnknownClass {
                class_num, c_type, ..
            } => RsvpError::new(
                ErrorCode::UNKNOWN_OBJECT_CLASS,
                class_ctype(class_num, c_type),
            ),
            WireError::UnknownCType {
                class_num, c_type, ..
            } => RsvpError::new(
                ErrorCode::UNKNOWN_OBJECT_C_TYPE,
                class_ctype(class_num, c_type),
            ),
            WireError::UnknownStyle { .. } => {
                RsvpError::new(ErrorCode::UNKNOWN_RESERVATION_STYLE, 0)
            }
            WireError::UnsupportedService { .. } => RsvpError::SERVICE_UNSUPPORTED,
            WireError::BadIntServ { class_num, .. } => match class_num {
                class::FLOWSPEC => RsvpError::BAD_FLOWSPEC,
                class::SENDER_TSPEC => RsvpError::BAD_TSPEC,
                _ => RsvpError::BAD_ADSPEC,
            },
            WireError::TooShort { .. } => system(1),
            WireError::BadVersion { .. } => system(2),
            WireError::UnknownMsgType { .. } => system(3),
            WireError::BadMessageLength { .. } => system(4),
            WireError::BadChecksum { .. } => system(5),
            WireError::BadObjectLength { .. } => system(6),
            WireError::Malformed { .. } => system(7),
            WireError::MissingObject { .. } => system(8),
            WireError::UnexpectedObject { .. } => system(9),
            WireError::DuplicateObject { .. } => system(10),
            WireError::ObjectOrder { .. } => system(11),
            WireError::BadFlowDescriptor { .. } => system(12),
            WireError::AddressFamilyMismatch { .. } => system(13),
            WireError::BadBundle { .. } => system(14),
            WireError::TooManyObjects { .. } => system(17),
            WireError::TooManyFilterSpecs { .. } => system(18),
            WireError::Encode(
                EncodeError::MessageTooLong { .. } | EncodeError::ObjectTooLong { .. },
            ) => system(15),
            WireError::Encode(EncodeError::Unaligned { .. }) => system(16),
        }
    }

    /// `true` when RFC 2205 wants the message dropped without any error message: the common
    /// header itself is unusable (short, wrong version, unknown type, wrong length, bad
    /// checksum), so there is no session to address an answer to.
    pub fn discard_silently(&self) -> bool {
        matches!(
            self,
            WireError::TooShort { .. }
                | WireError::BadVersion { .. }
                | WireError::UnknownMsgType { .. }
                | WireError::BadMessageLength { .. }
                | WireError::BadChecksum { .. }
        )
    }

    /// Byte offset of the problem from the start of the message, when it has one.
    pub fn offset(&self) -> Option<usize> {
        match *self {
            WireError::BadObjectLength { offset, .. }
            | WireError::UnknownClass { offset, .. }
            | WireError::UnknownCType { offset, .. }
            | WireError::Malformed { offset, .. }
            | WireError::UnknownStyle { offset, .. }
            | WireError::UnsupportedService { offset, .. }
            | WireError::BadIntServ { offset, .. }
            | WireError::UnexpectedObject { offset, .. }
            | WireError::DuplicateObject { offset, .. }
            | WireError::ObjectOrder { offset, .. }
            | WireError::BadFlowDescriptor { offset, .. }
            | WireError::AddressFamilyMismatch { offset, .. }
            | WireError::BadBundle { offset, .. }
            | WireError::TooManyObjects { offset, .. }
            | WireError::TooManyFilterSpecs { offset, .. } => Some(offset),
            _ => None,
        }
    }

    /// `(class_num, c_type)` of the object at fault, when one is.
    pub fn object(&self) -> Option<(u8, u8)> {
        match *self {
            WireError::BadObjectLength {
                class_num, c_type, ..
            }
            | WireError::UnknownClass {
                class_num, c_type, ..
            }
            | WireError::UnknownCType {
                class_num, c_type, ..
            }
            | WireError::Malformed {
                class_num, c_type, ..
            }
            | WireError::UnsupportedService {
                class_num, c_type, ..
            }
            | WireError::BadIntServ {
                class_num, c_type, ..
            }
            | WireError::UnexpectedObject {
                class_num, c_type, ..
            }
            | WireError::DuplicateObject {
                class_num, c_type, ..
            }
            | WireError::ObjectOrder {
                class_num, c_type, ..
            }
            | WireError::AddressFamilyMismatch {
                class_num, c_type, ..
            } => Some((class_num, c_type)),
            WireError::Encode(ref error) => error.object(),
            WireError::UnknownStyle { .. } => Some((class::STYLE, 1)),
            WireError::MissingObject { class_num, .. } => Some((class_num, 0)),
            _ => None,
        }
    }
}

/// Why a message could not be encoded: something in it does not fit RSVP's fields. Decoded
/// messages always encode; this is for messages built in memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The message would exceed its 16-bit length field.
    #[error("message would be {length} bytes, above the 65535 an rsvp length field can express; split it")]
    MessageTooLong {
        /// The length it would have had.
        length: usize,
    },
    /// One object would exceed its 16-bit length field.
    #[error("object of class {class_num}, c-type {c_type} would be {length} bytes, above the 65535 an rsvp length field can express")]
    ObjectTooLong {
        /// Class-Num.
        class_num: u8,
        /// C-Type.
        c_type: u8,
        /// The length it would have had, header included.
        length: usize,
    },
    /// An opaque body whose length is not a multiple of 4.
    #[error("object of class {class_num}, c-type {c_type} has a {length}-byte opaque body; rsvp needs a multiple of 4, pad it")]
    Unaligned {
        /// Class-Num.
        class_num: u8,
        /// C-Type.
        c_type: u8,
        /// Body length.
        length: usize,
    },
}

impl EncodeError {
    /// `(class_num, c_type)` of the object at fault, when one is.
    pub fn object(&self) -> Option<(u8, u8)> {
        match *self {
            EncodeError::MessageTooLong { .. } => None,
            EncodeError::ObjectTooLong {
                class_num, c_type, ..
            }
            | EncodeError::Unaligned {
                class_num, c_type, ..
            } => Some((class_num, c_type)),
        }
    }
}

// Here rather than beside `BodyError`: the primitives sit below the error type.
impl BodyError {
    /// The [`WireError`] for this body error in the object at `offset` of class `class_num`,
    /// C-Type `c_type`.
    pub(crate) fn at(self, offset: usize, class_num: u8, c_type: u8) -> WireError {
        match self {
            BodyError::Size => WireError::Malformed {
                offset,
                class_num,
                c_type,
                reason: "body size is wrong for the c-type",
            },
            BodyError::CType => WireError::UnknownCType {
                offset,
                class_num,
                c_type,
            },
            BodyError::Invalid(reason) => WireError::Malformed {
                offset,
                class_num,
                c_type,
                reason,
            },
            BodyError::Style(option_vector) => WireError::UnknownStyle {
                offset,
                option_vector,
            },
            BodyError::Service(service) => WireError::UnsupportedService {
                offset,
                class_num,
                c_type,
                service,
            },
            BodyError::IntServ(reason) => WireError::BadIntServ {
                offset,
                class_num,
                c_type,
                reason,
            },
        }
    }
}
