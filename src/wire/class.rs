//! Class-Num values (RFC 2205 App. A, RFC 2747, RFC 2961, RFC 3097).

/// NULL: ignored padding, may appear anywhere.
pub const NULL: u8 = 0;
/// SESSION.
pub const SESSION: u8 = 1;
/// RSVP_HOP.
pub const RSVP_HOP: u8 = 3;
/// INTEGRITY (RFC 2747).
pub const INTEGRITY: u8 = 4;
/// TIME_VALUES.
pub const TIME_VALUES: u8 = 5;
/// ERROR_SPEC.
pub const ERROR_SPEC: u8 = 6;
/// SCOPE.
pub const SCOPE: u8 = 7;
/// STYLE.
pub const STYLE: u8 = 8;
/// FLOWSPEC.
pub const FLOWSPEC: u8 = 9;
/// FILTER_SPEC.
pub const FILTER_SPEC: u8 = 10;
/// SENDER_TEMPLATE.
pub const SENDER_TEMPLATE: u8 = 11;
/// SENDER_TSPEC.
pub const SENDER_TSPEC: u8 = 12;
/// ADSPEC.
pub const ADSPEC: u8 = 13;
/// POLICY_DATA.
pub const POLICY_DATA: u8 = 14;
/// RESV_CONFIRM.
pub const RESV_CONFIRM: u8 = 15;
/// MESSAGE_ID (RFC 2961).
pub const MESSAGE_ID: u8 = 23;
/// MESSAGE_ID_ACK (C-Type 1) and MESSAGE_ID_NACK (C-Type 2) (RFC 2961).
pub const MESSAGE_ID_ACK: u8 = 24;
/// MESSAGE_ID_LIST (RFC 2961).
pub const MESSAGE_ID_LIST: u8 = 25;
/// CHALLENGE (RFC 3097).
pub const CHALLENGE: u8 = 64;
