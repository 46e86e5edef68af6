//! Translates between the engine's [`Msg`] and the wire codec's [`Message`] ([`crate::wire`]
//! owns the bytes; this only maps one model onto the other).
//!
//! Decoding leans entirely on [`Message::decode`] (which validates); the only bytes read
//! here are those of a message the codec refused with an error that RFC 2205 answers
//! (unknown object class 13, unknown C-Type 14, unknown style 6): the SESSION, RSVP_HOP and
//! SENDER_TEMPLATE needed to address the PathErr/ResvErr are picked out of it, bounds-checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::msg::{Descriptor, Hop, Msg};
use super::SessionKey;
use crate::wire::intserv::TokenBucket;
use crate::wire::{
    class, ErrorCode, ErrorSpec, FilterSpec, Message, MsgType, Object, ResvConfirm, RsvpError,
    RsvpHop, Session, Style, TimeValues, WireError,
};

/// Why a datagram could not become a [`Msg`], and how to answer it.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: DecodeError,
    pub(crate) answer: Option<Box<Answer>>,
}

/// Why a datagram is not a [`Msg`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The wire codec refused it (malformed or invalid).
    #[error(transparent)]
    Wire(WireError),
    /// A well-formed message of a type the host engine does not process (Bundle, Ack,
    /// Srefresh, challenges): not malformed, just ignored.
    #[error("{0:?} messages are not processed by the host engine")]
    Unsupported(MsgType),
    /// A message the codec accepted without a SESSION object.
    #[error("message without session")]
    NoSession,
}

impl Failure {
    /// Whether the message is well-formed but of a type the engine ignores.
    pub(crate) fn unsupported(&self) -> bool {
        matches!(self.error, DecodeError::Unsupported(_))
    }
}

/// What can be read of a refused message to address its error answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer {
    pub(crate) kind: MsgType,
    pub(crate) session: SessionKey,
    pub(crate) hop: Option<Hop>,
    pub(crate) sender: Option<SocketAddr>,
    pub(crate) error: RsvpError,
}

fn hop_obj(hop: Option<Hop>, fallback: IpAddr) -> Object {
    let hop = hop.unwrap_or(Hop {
        addr: fallback,
        lih: 0,
    });
    Object::RsvpHop(RsvpHop::new(hop.addr, hop.lih))
}

fn error_obj(error: Option<ErrorSpec>, fallback: IpAddr) -> Object {
    Object::ErrorSpec(error.unwrap_or(ErrorSpec::new(fallback, ErrorCode::CONFIRMATION, 0)))
}

/// Appends the flow descriptor list of `style` (FF: pairs, SE: one flowspec then filters,
/// WF: one flowspec). With `flowspecs == false` only the filters (ResvTear).
fn push_descriptors(out: &mut Message, style: Style, descriptors: &[Descriptor], flowspecs: bool) {
    match style {
        Style::FixedFilter => {
            for d in descriptors {
                for filter in &d.filters {
                    if let (true, Some(flowspec)) = (flowspecs, d.flowspec) {
                        out.push(Object::FlowSpec(flowspec));
                    }
                    out.push(Object::FilterSpec(FilterSpec::new(*filter)));
                }
            }
        }
        Style::SharedExplicit => {
            if let Some(d) = descriptors.first() {
                if let (true, Some(flowspec)) = (flowspecs, d.flowspec) {
                    out.push(Object::FlowSpec(flowspec));
                }
                for filter in &d.filters {
                    out.push(Object::FilterSpec(FilterSpec::new(*filter)));
                }
            }
        }
        Style::WildcardFilter => {
            if let Some(flowspec) = descriptors.first().and_then(|d| d.flowspec) {
                if flowspecs {
                    out.push(Object::FlowSpec(flowspec));
                }
            }
        }
    }
}

/// The wire message for `msg`.
pub(crate) fn to_wire(msg: &Msg) -> Message {
    let session = Object::Session(Session::new(msg.session.destination, msg.session.protocol));
    let own = msg.session.destination.ip();
    let time_values = Object::TimeValues(TimeValues {
        refresh_period_ms: msg.refresh_ms.unwrap_or(0),
    });
    let known_style = msg.style.unwrap_or(Style::WildcardFilter);
    let mut out = Message::new(msg.kind).with_send_ttl(msg.send_ttl);
    out.push(session);
    let sender_descriptor = |out: &mut Message| {
        if let Some(sender) = msg.sender {
            out.push(Object::SenderTemplate(FilterSpec::new(sender)));
            // A PathErr about a message we could not read has no Tspec to echo.
            let tspec = msg.tspec.unwrap_or(TokenBucket {
                rate: 0.0,
                bucket: 0.0,
                peak: 0.0,
                min_policed: 0,
                max_packet: 0,
            });
            out.push(Object::SenderTspec(tspec));
        }
    };
    match msg.kind {
        MsgType::Path => {
            out.push(hop_obj(msg.hop, own));
            out.push(time_values);
            sender_descriptor(&mut out);
        }
        MsgType::PathTear => {
            out.push(hop_obj(msg.hop, own));
            if let Some(sender) = msg.sender {
                out.push(Object::SenderTemplate(FilterSpec::new(sender)));
            }
        }
        MsgType::PathErr => {
            out.push(error_obj(msg.error, own));
            sender_descriptor(&mut out);
        }
        MsgType::Resv => {
            out.push(hop_obj(msg.hop, own));
            out.push(time_values);
            if let Some(receiver) = msg.confirm {
                out.push(Object::ResvConfirm(ResvConfirm { receiver }));
            }
            out.push(Object::Style(known_style));
            push_descriptors(&mut out, known_style, &msg.descriptors, true);
        }
        MsgType::ResvTear => {
            out.push(hop_obj(msg.hop, own));
            out.push(Object::Style(known_style));
            push_descriptors(&mut out, known_style, &msg.descriptors, false);
        }
        MsgType::ResvErr => {
            out.push(hop_obj(msg.hop, own));
            out.push(error_obj(msg.error, own));
            out.push(Object::Style(known_style));
            // The error flow descriptor names one reservation (FF: one filter).
            let first: Vec<Descriptor> = msg
                .descriptors
                .first()
                .map(|d| Descriptor {
                    flowspec: d.flowspec,
                    filters: match known_style {
                        Style::FixedFilter => d.filters.iter().take(1).copied().collect(),
                        _ => d.filters.clone(),
                    },
                })
                .filter(|d| d.flowspec.is_some())
                .into_iter()
                .collect();
            push_descriptors(&mut out, known_style, &first, true);
        }
        MsgType::ResvConf => {
            out.push(error_obj(msg.error, own));
            if let Some(receiver) = msg.confirm {
                out.push(Object::ResvConfirm(ResvConfirm { receiver }));
            }
            out.push(Object::Style(known_style));
            push_descriptors(&mut out, known_style, &msg.descriptors, true);
        }
        // The engine builds no other type (see `Msg::kind`).
        _ => {}
    }
    out
}

/// Encodes `msg`; `None` (logged) if the codec cannot express it.
pub(crate) fn encode(msg: &Msg) -> Option<Vec<u8>> {
    match to_wire(msg).encode() {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::warn!(kind = ?msg.kind, session = ?msg.session, %error, "cannot encode message; not sent");
            None
        }
    }
}

/// The engine's view of a decoded wire message.
pub(crate) fn from_wire(message: &Message) -> Result<Msg, Failure> {
    let kind = match message.msg_type() {
        kind @ (MsgType::Path
        | MsgType::Resv
        | MsgType::PathErr
        | MsgType::ResvErr
        | MsgType::PathTear
        | MsgType::ResvTear
        | MsgType::ResvConf) => kind,
        other => {
            return Err(Failure {
                error: DecodeError::Unsupported(other),
                answer: None,
            })
        }
    };
    let Some(session) = message.session() else {
        return Err(Failure {
            error: DecodeError::NoSession,
            answer: None,
        });
    };
    let style = message.style();
    let mut descriptors: Vec<Descriptor> = Vec::new();
    match style {
        Some(Style::FixedFilter) | None => {
            for d in message.flow_descriptors() {
                if let Some(filter) = d.filter {
                    descriptors.push(Descriptor {
                        flowspec: d.flowspec.copied(),
                        filters: vec![filter.socket_addr()],
                    });
                }
            }
        }
        Some(Style::SharedExplicit) => {
            let mut shared = Descriptor {
                flowspec: message.flowspec().copied(),
                filters: Vec::new(),
            };
            for d in message.flow_descriptors() {
                if let Some(filter) = d.filter {
                    shared.filters.push(filter.socket_addr());
                }
            }
            descriptors.push(shared);
        }
        Some(Style::WildcardFilter) => descriptors.push(Descriptor {
            flowspec: message.flowspec().copied(),
            filters: Vec::new(),
        }),
    }
    Ok(Msg {
        kind,
        send_ttl: message.send_ttl,
        session: SessionKey {
            destination: session.socket_addr(),
            protocol: session.protocol,
        },
        hop: message.rsvp_hop().map(|h| Hop {
            addr: h.address,
            lih: h.lih,
        }),
        refresh_ms: message.time_values().map(|t| t.refresh_period_ms),
        error: message.error_spec().copied(),
        confirm: message.resv_confirm().map(|c| c.receiver),
        style,
        sender: message.sender_template().map(FilterSpec::socket_addr),
        tspec: message.sender_tspec().copied(),
        descriptors,
        message_id: 0,
    })
}

/// Decodes and validates a datagram.
pub(crate) fn decode(bytes: &[u8]) -> Result<Msg, Failure> {
    match Message::decode(bytes) {
        Ok(message) => from_wire(&message),
        Err(error) => Err(Failure {
            answer: answer_for(bytes, &error).map(Box::new),
            error: DecodeError::Wire(error),
        }),
    }
}

/// The PathErr/ResvErr a refused Path/Resv deserves, when the RFC asks for one and the
/// message can be addressed.
fn answer_for(bytes: &[u8], error: &WireError) -> Option<Answer> {
    if error.discard_silently() {
        return None;
    }
    let answer = error.error_spec();
    if !matches!(
        answer.code,
        ErrorCode::UNKNOWN_RESERVATION_STYLE
            | ErrorCode::UNKNOWN_OBJECT_CLASS
            | ErrorCode::UNKNOWN_OBJECT_C_TYPE
    ) {
        return None;
    }
    let kind = match bytes.get(1)? {
        1 => MsgType::Path,
        2 => MsgType::Resv,
        _ => return None,
    };
    let mut session = None;
    let mut hop = None;
    let mut sender = None;
    let mut offset = 8;
    while let Some(header) = bytes.get(offset..offset + 4) {
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if len < 4 || len % 4 != 0 {
            break;
        }
        let Some(body) = bytes.get(offset + 4..offset + len) else {
            break;
        };
        match (header[2], header[3]) {
            (class::SESSION, 1 | 2) => {
                if let Some((ip, rest)) = split_ip(header[3], body) {
                    let [protocol, _flags, hi, lo] = *rest;
                    session = Some(SessionKey {
                        destination: SocketAddr::new(ip, u16::from_be_bytes([hi, lo])),
                        protocol,
                    });
                }
            }
            (class::RSVP_HOP, 1 | 2) => {
                if let Some((addr, &[a, b, c, d])) = split_ip(header[3], body) {
                    hop = Some(Hop {
                        addr,
                        lih: u32::from_be_bytes([a, b, c, d]),
                    });
                }
            }
            (class::SENDER_TEMPLATE, 1 | 2) => {
                if let Some((ip, &[_, _, hi, lo])) = split_ip(header[3], body) {
                    sender = Some(SocketAddr::new(ip, u16::from_be_bytes([hi, lo])));
                }
            }
            _ => {}
        }
        offset += len;
    }
    Some(Answer {
        kind,
        session: session?,
        hop,
        sender,
        error: answer,
    })
}

/// An IPv4 (C-Type 1) or IPv6 (C-Type 2) address at the start of `body`, and the 4 bytes
/// after it (which must be the rest of the body).
fn split_ip(c_type: u8, body: &[u8]) -> Option<(IpAddr, &[u8; 4])> {
    let (ip, rest): (IpAddr, &[u8]) = match c_type {
        1 => {
            let (a, rest) = body.split_first_chunk::<4>()?;
            (IpAddr::V4(Ipv4Addr::from(*a)), rest)
        }
        _ => {
            let (a, rest) = body.split_first_chunk::<16>()?;
            (IpAddr::V6(Ipv6Addr::from(*a)), rest)
        }
    };
    Some((ip, rest.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::intserv::{FlowSpec, GuaranteedRspec};

    fn key() -> SessionKey {
        SessionKey {
            destination: "10.0.0.2:4000".parse().unwrap(),
            protocol: 6,
        }
    }

    fn round_trip(msg: &Msg) -> Msg {
        let bytes = encode(msg).expect("encodable");
        decode(&bytes).unwrap_or_else(|f| panic!("{:?} did not decode: {}", msg.kind, f.error))
    }

    #[test]
    fn every_message_the_engine_sends_round_trips() {
        let sender: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let other: SocketAddr = "10.0.0.3:8080".parse().unwrap();
        let tspec = TokenBucket::new(1000.0, 2000.0);
        let cl = FlowSpec::ControlledLoad(tspec);
        let gs = FlowSpec::Guaranteed {
            tspec,
            rspec: GuaranteedRspec {
                rate: 1500.0,
                slack: 10,
            },
        };
        let hop = Some(Hop {
            addr: sender.ip(),
            lih: 7,
        });
        let error = Some(ErrorSpec::new(
            sender.ip(),
            ErrorCode::ADMISSION_CONTROL_FAILURE,
            2,
        ));
        let mut msgs = Vec::new();
        let mut path = Msg::new(MsgType::Path, key());
        path.hop = hop;
        path.refresh_ms = Some(30_000);
        path.sender = Some(sender);
        path.tspec = Some(tspec);
        msgs.push(path);
        for (style, descriptors) in [
            (
                Style::FixedFilter,
                vec![
                    Descriptor {
                        flowspec: Some(cl),
                        filters: vec![sender],
                    },
                    Descriptor {
                        flowspec: Some(gs),
                        filters: vec![other],
                    },
                ],
            ),
            (
                Style::SharedExplicit,
                vec![Descriptor {
                    flowspec: Some(gs),
                    filters: vec![sender, other],
                }],
            ),
            (
                Style::WildcardFilter,
                vec![Descriptor {
                    flowspec: Some(cl),
                    filters: vec![],
                }],
            ),
        ] {
            let mut resv = Msg::new(MsgType::Resv, key());
            resv.hop = hop;
            resv.refresh_ms = Some(1000);
            resv.confirm = Some(key().destination.ip());
            resv.style = Some(style);
            resv.descriptors = descriptors.clone();
            msgs.push(resv);
            let mut conf = Msg::new(MsgType::ResvConf, key());
            conf.error = Some(ErrorSpec::new(sender.ip(), ErrorCode::CONFIRMATION, 0));
            conf.confirm = Some(key().destination.ip());
            conf.style = Some(style);
            conf.descriptors = descriptors.clone();
            msgs.push(conf);
            let mut err = Msg::new(MsgType::ResvErr, key());
            err.hop = hop;
            err.error = error;
            err.style = Some(style);
            err.descriptors = descriptors[..1].to_vec();
            msgs.push(err);
        }
        let mut tear = Msg::new(MsgType::ResvTear, key());
        tear.hop = hop;
        tear.style = Some(Style::FixedFilter);
        tear.descriptors = vec![Descriptor {
            flowspec: None,
            filters: vec![sender],
        }];
        msgs.push(tear);
        let mut path_tear = Msg::new(MsgType::PathTear, key());
        path_tear.hop = hop;
        path_tear.sender = Some(sender);
        msgs.push(path_tear);
        let mut path_err = Msg::new(MsgType::PathErr, key());
        path_err.error = error;
        path_err.sender = Some(sender);
        path_err.tspec = Some(tspec);
        msgs.push(path_err);
        for msg in &msgs {
            assert_eq!(&round_trip(msg), msg);
        }
    }

    #[test]
    fn unknown_class_is_answered_with_code_13_and_the_session() {
        let mut path = Msg::new(MsgType::Path, key());
        path.hop = Some(Hop {
            addr: "10.0.0.1".parse().unwrap(),
            lih: 3,
        });
        path.refresh_ms = Some(30_000);
        path.sender = Some("10.0.0.1:8080".parse().unwrap());
        path.tspec = Some(TokenBucket::new(1.0, 1.0));
        // A valid Path plus an object of unknown class 0x20 (0bbbbbbb: reject), checksum 0.
        let mut bytes = encode(&path).unwrap();
        bytes.extend_from_slice(&[0, 8, 0x20, 1, 0, 0, 0, 0]);
        let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
        bytes[6..8].copy_from_slice(&len);
        bytes[2..4].copy_from_slice(&[0, 0]);
        let failure = decode(&bytes).unwrap_err();
        let answer = failure.answer.expect("answerable");
        assert_eq!(answer.kind, MsgType::Path);
        assert_eq!(answer.session, key());
        assert_eq!(
            answer.error,
            RsvpError::new(ErrorCode::UNKNOWN_OBJECT_CLASS, 0x2001)
        );
        assert_eq!(answer.hop.map(|h| h.lih), Some(3));
        assert_eq!(answer.sender, path.sender);
        // Garbage never yields an answer nor panics.
        for len in 0..64 {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert!(decode(&junk).is_err());
        }
    }

    #[test]
    fn refusals_say_why_in_types() {
        let ack = from_wire(&Message::new(MsgType::Ack)).unwrap_err();
        assert!(ack.unsupported());
        assert_eq!(
            ack.error.to_string(),
            "Ack messages are not processed by the host engine"
        );
        let no_session = from_wire(&Message::new(MsgType::Path)).unwrap_err();
        assert!(matches!(no_session.error, DecodeError::NoSession));
        assert!(!no_session.unsupported());
        let garbage = decode(&[0x10, 1, 0, 0]).unwrap_err();
        assert!(matches!(garbage.error, DecodeError::Wire(_)));
    }
}
