//! Translates between the engine's [`Msg`] and the wire codec's [`Message`] ([`crate::wire`]
//! owns the bytes; this only maps one model onto the other).
//!
//! Both directions skip the intermediate [`Message`] on the way (its inline object list is
//! large to build, move and drop for each refresh): objects are encoded as they are built
//! ([`build`]) and kept as they are decoded ([`Message::decode_flat`], which validates exactly
//! as [`Message::decode`] does). The only bytes read here are those of a message the codec
//! refused with an error that RFC 2205 answers (unknown object class 13, unknown C-Type 14,
//! unknown style 6): the SESSION, RSVP_HOP and SENDER_TEMPLATE needed to address the
//! PathErr/ResvErr are picked out of it, bounds-checked.

use std::mem::ManuallyDrop;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smallvec::smallvec;

use super::msg::{is_rfc2205, Descriptor, Descriptors, Filters, Hop, Msg};
use super::SessionKey;
use crate::wire::intserv::FlowSpec;
use crate::wire::intserv::TokenBucket;
use crate::wire::{
    begin_message, class, finish_message, EncodeError, ErrorCode, ErrorSpec, FilterSpec, Message,
    MsgType, Object, ObjectSink, ResvConfirm, RsvpError, RsvpHop, Session, Style, TimeValues,
    WireError,
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

/// Where [`build`] puts a message's objects, in wire order.
trait Emit {
    fn push(&mut self, object: Object);
}

impl Emit for Message {
    fn push(&mut self, object: Object) {
        Message::push(self, object);
    }
}

/// The classes [`Encoder::push`] and [`Fields::take`] keep out of `Object`'s drop glue own no
/// heap: their bodies are `Copy`, checked here, so that one that ever gains some fails to
/// compile instead of leaking.
const _: () = {
    const fn copy<T: Copy>() {}
    copy::<Session>();
    copy::<RsvpHop>();
    copy::<TimeValues>();
    copy::<ErrorSpec>();
    copy::<Style>();
    copy::<FlowSpec>();
    copy::<FilterSpec>();
    copy::<TokenBucket>();
    copy::<ResvConfirm>();
};

/// Objects encoded as they come, after a common header (see [`encode`]).
struct Encoder {
    bytes: Vec<u8>,
    /// The first object that could not be encoded (the rest are skipped).
    error: Option<EncodeError>,
}

impl Emit for Encoder {
    // Inlined where each object is built, the encoder's match on its class folds away.
    #[inline(always)]
    fn push(&mut self, object: Object) {
        if self.error.is_none() {
            self.error = object.encode(&mut self.bytes).err();
        }
        // What `build` makes owns no heap: spare it `Object`'s drop glue, a call the compiler
        // does not fold away even where it knows the class.
        let object = ManuallyDrop::new(object);
        match *object {
            Object::Session(_)
            | Object::RsvpHop(_)
            | Object::TimeValues(_)
            | Object::ErrorSpec(_)
            | Object::Style(_)
            | Object::FlowSpec(_)
            | Object::FilterSpec(_)
            | Object::SenderTemplate(_)
            | Object::SenderTspec(_)
            | Object::ResvConfirm(_) => {}
            _ => drop(ManuallyDrop::into_inner(object)),
        }
    }
}

/// Appends the flow descriptor list of `style` (FF: pairs, SE: one flowspec then filters,
/// WF: one flowspec). With `flowspecs == false` only the filters (ResvTear).
fn push_descriptors(
    out: &mut impl Emit,
    style: Style,
    descriptors: &[Descriptor],
    flowspecs: bool,
) {
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

/// The wire message for `msg` (what [`encode`] encodes).
#[cfg(test)]
pub(crate) fn to_wire(msg: &Msg) -> Message {
    let mut out = Message::new(msg.kind).with_send_ttl(msg.send_ttl);
    build(msg, &mut out);
    out
}

/// The objects of `msg`, in wire order.
fn build(msg: &Msg, out: &mut impl Emit) {
    let session = Object::Session(Session::new(msg.session.destination, msg.session.protocol));
    let own = msg.session.destination.ip();
    let time_values = Object::TimeValues(TimeValues {
        refresh_period_ms: msg.refresh_ms.unwrap_or(0),
    });
    let known_style = msg.style.unwrap_or(Style::WildcardFilter);
    out.push(session);
    fn sender_descriptor(msg: &Msg, out: &mut impl Emit) {
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
    }
    match msg.kind {
        MsgType::Path => {
            out.push(hop_obj(msg.hop, own));
            out.push(time_values);
            sender_descriptor(msg, out);
        }
        MsgType::PathTear => {
            out.push(hop_obj(msg.hop, own));
            if let Some(sender) = msg.sender {
                out.push(Object::SenderTemplate(FilterSpec::new(sender)));
            }
        }
        MsgType::PathErr => {
            out.push(error_obj(msg.error, own));
            sender_descriptor(msg, out);
        }
        MsgType::Resv => {
            out.push(hop_obj(msg.hop, own));
            out.push(time_values);
            if let Some(receiver) = msg.confirm {
                out.push(Object::ResvConfirm(ResvConfirm { receiver }));
            }
            out.push(Object::Style(known_style));
            push_descriptors(out, known_style, &msg.descriptors, true);
        }
        MsgType::ResvTear => {
            out.push(hop_obj(msg.hop, own));
            out.push(Object::Style(known_style));
            push_descriptors(out, known_style, &msg.descriptors, false);
        }
        MsgType::ResvErr => {
            out.push(hop_obj(msg.hop, own));
            out.push(error_obj(msg.error, own));
            out.push(Object::Style(known_style));
            // The error flow descriptor names one reservation (FF: one filter).
            let first: Descriptors = msg
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
            push_descriptors(out, known_style, &first, true);
        }
        MsgType::ResvConf => {
            out.push(error_obj(msg.error, own));
            if let Some(receiver) = msg.confirm {
                out.push(Object::ResvConfirm(ResvConfirm { receiver }));
            }
            out.push(Object::Style(known_style));
            push_descriptors(out, known_style, &msg.descriptors, true);
        }
        // The engine builds no other type (see `Msg::kind`).
        _ => {}
    }
}

/// Encodes `msg`, objects straight to bytes (the same bytes as `to_wire`'s message
/// encodes to); `None` (logged) if the codec cannot express it.
pub(crate) fn encode(msg: &Msg) -> Option<Vec<u8>> {
    let mut out = Encoder {
        bytes: Vec::with_capacity(256),
        error: None,
    };
    begin_message(&mut out.bytes, msg.kind, 0, msg.send_ttl);
    build(msg, &mut out);
    let result = match out.error {
        Some(error) => Err(error),
        None => finish_message(&mut out.bytes, 0),
    };
    match result {
        Ok(_) => Some(out.bytes),
        Err(error) => {
            tracing::warn!(kind = ?msg.kind, session = ?msg.session, %error, "cannot encode message; not sent");
            None
        }
    }
}

/// `kind` if the engine processes it (the seven RFC 2205 types), else why not.
fn processed(kind: MsgType) -> Result<MsgType, Failure> {
    if is_rfc2205(kind) {
        Ok(kind)
    } else {
        Err(Failure {
            error: DecodeError::Unsupported(kind),
            answer: None,
        })
    }
}

/// The fields of a [`Msg`] gathered from a message's objects, in wire order, as they are
/// decoded ([`ObjectSink`]) or read from a [`Message`]. The first object of a class counts
/// (as for [`Message`]'s accessors); the format rules leave one of each that the engine reads,
/// except FLOWSPEC and FILTER_SPEC.
#[derive(Default)]
struct Fields {
    /// Objects pushed (the decoder's format rules need the count).
    count: usize,
    session: Option<SessionKey>,
    hop: Option<Hop>,
    refresh_ms: Option<u32>,
    error: Option<ErrorSpec>,
    confirm: Option<IpAddr>,
    style: Option<Style>,
    sender: Option<SocketAddr>,
    tspec: Option<TokenBucket>,
    flowspec: Option<FlowSpec>,
    /// The FLOWSPEC last seen: in force for the FILTER_SPECs after it (FF).
    last_flowspec: Option<FlowSpec>,
    /// One descriptor per FILTER_SPEC, with the FLOWSPEC in force for it: the FF shape, which
    /// [`finish`](Self::finish) reshapes for the style (known only then, in general).
    descriptors: Descriptors,
}

impl Fields {
    // Inlined where each object is decoded, the match on its class (and the object's drop)
    // folds away.
    #[inline(always)]
    fn take(&mut self, object: Object) {
        // The classes read own no heap; only the others go through `Object`'s drop glue, a
        // call the compiler does not fold away even where it knows the class.
        let object = ManuallyDrop::new(object);
        match *object {
            Object::Session(s) => {
                self.session.get_or_insert(SessionKey {
                    destination: s.socket_addr(),
                    protocol: s.protocol,
                });
            }
            Object::RsvpHop(h) => {
                self.hop.get_or_insert(Hop {
                    addr: h.address,
                    lih: h.lih,
                });
            }
            Object::TimeValues(t) => {
                self.refresh_ms.get_or_insert(t.refresh_period_ms);
            }
            Object::ErrorSpec(e) => {
                self.error.get_or_insert(e);
            }
            Object::ResvConfirm(c) => {
                self.confirm.get_or_insert(c.receiver);
            }
            Object::Style(s) => {
                self.style.get_or_insert(s);
            }
            Object::SenderTemplate(f) => {
                self.sender.get_or_insert(f.socket_addr());
            }
            Object::SenderTspec(t) => {
                self.tspec.get_or_insert(t);
            }
            Object::FlowSpec(f) => {
                self.flowspec.get_or_insert(f);
                self.last_flowspec = Some(f);
            }
            Object::FilterSpec(f) => self.descriptors.push(Descriptor {
                flowspec: self.last_flowspec,
                filters: smallvec![f.socket_addr()],
            }),
            _ => drop(ManuallyDrop::into_inner(object)),
        }
    }

    /// The [`Msg`] of a message of `kind` sent with `send_ttl`, or why there is none.
    fn finish(self, kind: MsgType, send_ttl: u8) -> Result<Msg, Failure> {
        let kind = processed(kind)?;
        let Some(session) = self.session else {
            return Err(Failure {
                error: DecodeError::NoSession,
                answer: None,
            });
        };
        let descriptors = match self.style {
            Some(Style::FixedFilter) | None => self.descriptors,
            Some(Style::SharedExplicit) => smallvec![Descriptor {
                flowspec: self.flowspec,
                filters: self
                    .descriptors
                    .into_iter()
                    .flat_map(|d| d.filters)
                    .collect(),
            }],
            Some(Style::WildcardFilter) => smallvec![Descriptor {
                flowspec: self.flowspec,
                filters: Filters::new(),
            }],
        };
        Ok(Msg {
            kind,
            send_ttl,
            session,
            hop: self.hop,
            refresh_ms: self.refresh_ms,
            error: self.error,
            confirm: self.confirm,
            style: self.style,
            sender: self.sender,
            tspec: self.tspec,
            descriptors,
            message_id: 0,
        })
    }
}

impl ObjectSink for Fields {
    #[inline(always)]
    fn len(&self) -> usize {
        self.count
    }

    #[inline(always)]
    fn push(&mut self, object: Object) {
        self.count += 1;
        self.take(object);
    }
}

/// The engine's view of a decoded wire message.
pub(crate) fn from_wire(message: &Message) -> Result<Msg, Failure> {
    let mut fields = Fields::default();
    for object in &message.objects {
        fields.take(object.clone());
    }
    fields.finish(message.msg_type(), message.send_ttl)
}

/// Decodes and validates a datagram.
pub(crate) fn decode(bytes: &[u8]) -> Result<Msg, Failure> {
    let mut fields = Fields::default();
    let decoded = match Message::decode_flat(bytes, &mut fields) {
        Ok(Some(header)) => return fields.finish(header.msg_type, header.send_ttl),
        // A Bundle (refresh reduction is off, or it would have been taken apart before).
        Ok(None) => Message::decode(bytes),
        Err(error) => Err(error),
    };
    match decoded {
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
    use crate::wire::intserv::GuaranteedRspec;
    use proptest::prelude::*;

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

    /// The engine's view of a decoded wire message as it was read before [`Fields`] (with
    /// [`Message`]'s accessors): the oracle [`decode`] is checked against.
    fn from_wire_by_accessors(message: &Message) -> Result<Msg, Failure> {
        let kind = processed(message.msg_type())?;
        let Some(session) = message.session() else {
            return Err(Failure {
                error: DecodeError::NoSession,
                answer: None,
            });
        };
        let style = message.style();
        let mut descriptors = Descriptors::new();
        match style {
            Some(Style::FixedFilter) | None => {
                for d in message.flow_descriptors() {
                    if let Some(filter) = d.filter {
                        descriptors.push(Descriptor {
                            flowspec: d.flowspec.copied(),
                            filters: smallvec![filter.socket_addr()],
                        });
                    }
                }
            }
            Some(Style::SharedExplicit) => descriptors.push(Descriptor {
                flowspec: message.flowspec().copied(),
                filters: message
                    .filter_specs()
                    .map(FilterSpec::socket_addr)
                    .collect(),
            }),
            Some(Style::WildcardFilter) => descriptors.push(Descriptor {
                flowspec: message.flowspec().copied(),
                filters: Filters::new(),
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

    /// [`decode`] as it was: the whole [`Message`] first.
    fn decode_by_message(bytes: &[u8]) -> Result<Msg, Failure> {
        match Message::decode(bytes) {
            Ok(message) => from_wire_by_accessors(&message),
            Err(error) => Err(Failure {
                answer: answer_for(bytes, &error).map(Box::new),
                error: DecodeError::Wire(error),
            }),
        }
    }

    fn any_addr(v6: bool, n: u8, port: u16) -> SocketAddr {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(n)))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
        };
        SocketAddr::new(ip, port)
    }

    fn any_flowspec(guaranteed: bool, rate: f32) -> FlowSpec {
        let tspec = TokenBucket::new(rate, 2000.0);
        if guaranteed {
            FlowSpec::Guaranteed {
                tspec,
                rspec: GuaranteedRspec {
                    rate: rate * 2.0,
                    slack: 10,
                },
            }
        } else {
            FlowSpec::ControlledLoad(tspec)
        }
    }

    /// A message the engine could build: every field filled in at random, whatever its kind
    /// reads (the families of its addresses may disagree, for the decoder to refuse).
    fn any_msg() -> impl Strategy<Value = Msg> {
        let kinds = prop::sample::select(
            MsgType::ALL
                .into_iter()
                .filter(|k| processed(*k).is_ok())
                .collect::<Vec<_>>(),
        );
        let styles = prop::option::of(prop::sample::select(vec![
            Style::FixedFilter,
            Style::SharedExplicit,
            Style::WildcardFilter,
        ]));
        let descriptor = (
            prop::option::of((any::<bool>(), 1.0f32..1e6)),
            prop::collection::vec((any::<bool>(), any::<u8>(), any::<u16>()), 0..3),
        )
            .prop_map(|(flowspec, filters)| Descriptor {
                flowspec: flowspec.map(|(g, rate)| any_flowspec(g, rate)),
                filters: filters
                    .into_iter()
                    .map(|(v6, n, port)| any_addr(v6, n, port))
                    .collect(),
            });
        (
            (kinds, any::<u8>(), any::<bool>(), any::<u16>(), any::<u8>()),
            (
                prop::option::of((any::<bool>(), any::<u32>())),
                prop::option::of(any::<u32>()),
                prop::option::of((any::<u8>(), any::<u16>())),
                prop::option::of(any::<bool>()),
            ),
            (
                styles,
                prop::option::of((any::<bool>(), any::<u16>())),
                prop::option::of(1.0f32..1e6),
                prop::collection::vec(descriptor, 0..3),
            ),
        )
            .prop_map(
                |((kind, ttl, v6, port, protocol), (hop, refresh, error, confirm), rest)| {
                    let (style, sender, tspec, descriptors) = rest;
                    let mut msg = Msg::new(
                        kind,
                        SessionKey {
                            destination: any_addr(v6, 2, port),
                            protocol,
                        },
                    );
                    msg.send_ttl = ttl;
                    msg.hop = hop.map(|(hv6, lih)| Hop {
                        addr: any_addr(hv6, 1, 0).ip(),
                        lih,
                    });
                    msg.refresh_ms = refresh;
                    msg.error = error.map(|(code, value)| {
                        ErrorSpec::new(any_addr(v6, 3, 0).ip(), ErrorCode(code), value)
                    });
                    msg.confirm = confirm.map(|cv6| any_addr(cv6, 4, 0).ip());
                    msg.style = style;
                    msg.sender = sender.map(|(sv6, sport)| any_addr(sv6, 5, sport));
                    msg.tspec = tspec.map(|rate| TokenBucket::new(rate, 100.0));
                    msg.descriptors = descriptors.into();
                    msg
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Objects encoded as they are built give the bytes of the [`Message`] they would
        /// have been collected in.
        #[test]
        fn encode_gives_the_bytes_of_the_wire_message(msg in any_msg()) {
            prop_assert_eq!(encode(&msg), to_wire(&msg).encode().ok());
        }

        /// Decoding object by object gives what decoding the whole [`Message`] and reading
        /// it with its accessors gave, refusals, errors and answers included: for messages
        /// the engine builds, and for those bytes altered (bytes changed, checksum cleared
        /// so the change is read on, an object added, the end cut off).
        #[test]
        fn decode_reads_what_the_wire_message_held(
            msg in any_msg(),
            changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            extra in prop::option::of((any::<u8>(), any::<u8>(), 0usize..3)),
            cut in prop::option::of(any::<prop::sample::Index>()),
        ) {
            let mut bytes = to_wire(&msg).encode().unwrap();
            if let Some((class_num, c_type, words)) = extra {
                bytes.extend_from_slice(&[0, 4 + 4 * words as u8, class_num, c_type]);
                bytes.extend(std::iter::repeat_n(0x5a, 4 * words));
                let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
                bytes[6..8].copy_from_slice(&len);
                bytes[2..4].copy_from_slice(&[0, 0]);
            }
            for (at, value) in &changes {
                let at = at.index(bytes.len());
                bytes[at] = *value;
                bytes[2..4].copy_from_slice(&[0, 0]);
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            let flat = format!("{:?}", decode(&bytes));
            prop_assert_eq!(flat, format!("{:?}", decode_by_message(&bytes)));
        }
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
                        filters: smallvec![sender],
                    },
                    Descriptor {
                        flowspec: Some(gs),
                        filters: smallvec![other],
                    },
                ],
            ),
            (
                Style::SharedExplicit,
                vec![Descriptor {
                    flowspec: Some(gs),
                    filters: smallvec![sender, other],
                }],
            ),
            (
                Style::WildcardFilter,
                vec![Descriptor {
                    flowspec: Some(cl),
                    filters: Filters::new(),
                }],
            ),
        ] {
            let mut resv = Msg::new(MsgType::Resv, key());
            resv.hop = hop;
            resv.refresh_ms = Some(1000);
            resv.confirm = Some(key().destination.ip());
            resv.style = Some(style);
            resv.descriptors = descriptors.clone().into();
            msgs.push(resv);
            let mut conf = Msg::new(MsgType::ResvConf, key());
            conf.error = Some(ErrorSpec::new(sender.ip(), ErrorCode::CONFIRMATION, 0));
            conf.confirm = Some(key().destination.ip());
            conf.style = Some(style);
            conf.descriptors = descriptors.clone().into();
            msgs.push(conf);
            let mut err = Msg::new(MsgType::ResvErr, key());
            err.hop = hop;
            err.error = error;
            err.style = Some(style);
            err.descriptors = descriptors[..1].iter().cloned().collect();
            msgs.push(err);
        }
        let mut tear = Msg::new(MsgType::ResvTear, key());
        tear.hop = hop;
        tear.style = Some(Style::FixedFilter);
        tear.descriptors = smallvec![Descriptor {
            flowspec: None,
            filters: smallvec![sender],
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
