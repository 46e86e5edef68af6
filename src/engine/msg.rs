//! The engine's own view of an RSVP message: only what host processing needs, already
//! validated. [`translate`](super::translate) maps it to and from [`crate::wire`]; local delivery
//! passes it around without encoding.

use std::net::{IpAddr, SocketAddr};

use smallvec::SmallVec;

use super::{SessionKey, Style};
use crate::wire::intserv::{FlowSpec, TokenBucket};
use crate::wire::{ErrorSpec, MsgType, DEFAULT_SEND_TTL};

/// Whether routers on the way must intercept a message of `kind` (IP Router Alert on raw
/// transports).
pub(crate) fn router_alert(kind: MsgType) -> bool {
    matches!(kind, MsgType::Path | MsgType::PathTear | MsgType::ResvConf)
}

/// Whether `kind` is one of the seven RFC 2205 types, the only ones the engine processes as
/// messages (the others are RFC 2961's and RFC 3097's, handled on their own).
pub(crate) fn is_rfc2205(kind: MsgType) -> bool {
    matches!(
        kind,
        MsgType::Path
            | MsgType::Resv
            | MsgType::PathErr
            | MsgType::ResvErr
            | MsgType::PathTear
            | MsgType::ResvTear
            | MsgType::ResvConf
    )
}

/// RSVP_HOP: the neighbour's address and its logical interface handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hop {
    pub(crate) addr: IpAddr,
    pub(crate) lih: u32,
}

/// The senders a flow descriptor names: inline up to one (FF, and most SE), so that a Resv
/// refreshed, decoded or built allocates nothing for them.
pub(crate) type Filters = SmallVec<[SocketAddr; 1]>;

/// The flow descriptors of a message: inline up to one (SE, WF, FF with one sender).
pub(crate) type Descriptors = SmallVec<[Descriptor; 1]>;

/// One flow descriptor of a Resv-family message.
///
/// FF: one descriptor per sender (`filters.len() == 1`); SE: one descriptor, many filters;
/// WF: one descriptor, no filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Descriptor {
    pub(crate) flowspec: Option<FlowSpec>,
    pub(crate) filters: Filters,
}

/// A validated RSVP message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Msg {
    /// One of the seven RFC 2205 types: the others are refused when decoded
    /// ([`translate::from_wire`](super::translate::from_wire)) and never built.
    pub(crate) kind: MsgType,
    pub(crate) send_ttl: u8,
    pub(crate) session: SessionKey,
    /// RSVP_HOP (Path, Resv, PathTear, ResvTear, ResvErr).
    pub(crate) hop: Option<Hop>,
    /// TIME_VALUES refresh period, milliseconds (Path, Resv).
    pub(crate) refresh_ms: Option<u32>,
    /// ERROR_SPEC (PathErr, ResvErr, ResvConf).
    pub(crate) error: Option<ErrorSpec>,
    /// RESV_CONFIRM receiver address (Resv, ResvConf).
    pub(crate) confirm: Option<IpAddr>,
    /// STYLE (Resv family).
    pub(crate) style: Option<Style>,
    /// SENDER_TEMPLATE (Path, PathTear, PathErr).
    pub(crate) sender: Option<SocketAddr>,
    /// SENDER_TSPEC (Path, PathErr).
    pub(crate) tspec: Option<TokenBucket>,
    /// Flow descriptors (Resv family).
    pub(crate) descriptors: Descriptors,
    /// Our RFC 2961 Message_Identifier to send with it (MESSAGE_ID with ACK_Desired, added
    /// when it is encoded, `reduction.rs`); 0: none. Not read from received messages.
    pub(crate) message_id: u32,
}

impl Msg {
    /// An empty message of `kind` for `session`; the builders below fill it in.
    pub(crate) fn new(kind: MsgType, session: SessionKey) -> Self {
        Msg {
            kind,
            send_ttl: DEFAULT_SEND_TTL,
            session,
            hop: None,
            refresh_ms: None,
            error: None,
            confirm: None,
            style: None,
            sender: None,
            tspec: None,
            descriptors: Descriptors::new(),
            message_id: 0,
        }
    }
}
