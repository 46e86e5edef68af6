//! Sans-IO RSVP codec (RFC 2205 messages and objects, RFC 2210 IntServ bodies; the formats
//! of RFC 2747 INTEGRITY, RFC 2961 refresh reduction and the RFC 3097 integrity handshake,
//! which the engine does not act on yet). No tokio, no sockets, no clock.
//!
//! [`Message::decode`] parses and validates one message; [`Message::encode`] writes it back
//! with its checksum, or says with an [`EncodeError`] why it cannot. A [`Message`] keeps its
//! [`Object`]s in wire order, so decoding then encoding a well-formed message reproduces its
//! bytes (a zero checksum is filled in), and unknown `11bbbbbb` objects are forwarded in
//! place. Every decode failure is a [`WireError`] that knows where it happened and which
//! ERROR_SPEC it deserves (an [`RsvpError`]: a typed [`ErrorCode`] and its value).
//!
//! The layout follows smoltcp's `wire` and rustls' `msgs`: one file per object family, a
//! bounds-checked reader, a writer that back-fills lengths.
//!
//! # Layers
//!
//! The modules form a DAG; each imports only modules listed before it (bottom first):
//!
//! 1. `primitive`: the byte reader and writer, checksum, address fields, `BodyError`;
//!    `class`: the Class-Num constants; `header`: [`MsgType`] and the common-header constants.
//! 2. The object bodies, each on `primitive` alone: `session`, `hop` (RSVP_HOP, TIME_VALUES,
//!    SCOPE, RESV_CONFIRM), `style`, `error_spec`, `intserv`, `integrity`, `refresh`.
//! 3. `error`: [`WireError`], [`EncodeError`] (needs `class`, `header`, `style`, `error_spec`).
//! 4. `validate`: the per-message-type format rules the decode walk applies.
//! 5. `object`: the [`Object`] enum, dispatching to the bodies and checking each object.
//! 6. `message`: [`Message`], decode and encode.
//! 7. [`dump`]: readable dumps of messages and decode errors.
//!
//! # Examples
//!
//! ```
//! use qtoq::wire::{Message, MsgType, WireError};
//!
//! // A Path whose common header announces 12 bytes but only 8 arrived.
//! let truncated = [0x10, 1, 0, 0, 64, 0, 0, 12];
//! let err = Message::decode(&truncated).unwrap_err();
//! assert!(matches!(err, WireError::BadMessageLength { .. }));
//! assert!(err.discard_silently());
//! ```

// In layer order (see above), bottom first.
pub mod class;
mod header;
mod primitive;

mod error_spec;
mod hop;
mod integrity;
pub mod intserv;
mod refresh;
mod session;
mod style;

mod error;
mod validate;

mod object;

mod message;

pub mod dump;

pub use error::{EncodeError, WireError};
pub use error_spec::{ErrorCode, ErrorSpec, RsvpError, ERROR_FLAG_IN_PLACE, ERROR_FLAG_NOT_GUILTY};
pub use header::{
    MsgType, COMMON_HEADER_LEN, DEFAULT_SEND_TTL, FLAG_REFRESH_REDUCTION_CAPABLE, RSVP_VERSION,
};
pub use hop::{ResvConfirm, RsvpHop, Scope, TimeValues};
pub use integrity::{Challenge, Integrity, INTEGRITY_FLAG_HANDSHAKE};
pub use intserv::{
    Adspec, AdspecGeneral, AdspecParts, ControlledLoadAdspec, FlowSpec, GuaranteedAdspec,
    GuaranteedRspec, RawFragment, RawParam, TokenBucket,
};
pub(crate) use message::{begin_message, finish_message};
pub use message::{FlowDescriptor, FlowDescriptors, Message, MAX_FILTER_SPECS, MAX_OBJECTS};
pub(crate) use object::ObjectSink;
pub use object::{Object, Objects, PolicyData, INLINE_OBJECTS};
pub use refresh::{
    MessageId, MessageIdEntries, MessageIdList, MAX_EPOCH, MESSAGE_ID_FLAG_ACK_DESIRED,
};
pub use session::{FilterSpec, SenderTemplate, Session, SESSION_FLAG_E_POLICE};
pub use style::Style;
