//! [`Message`]: the common header and the object list; decode (syntax + per-type validation),
//! encode, typed accessors and constructors.

use bytes::BytesMut;

use super::class;
use super::error::{EncodeError, WireError};
use super::error_spec::ErrorSpec;
use super::header::{MsgType, COMMON_HEADER_LEN, DEFAULT_SEND_TTL, RSVP_VERSION};
use super::hop::{ResvConfirm, RsvpHop, Scope, TimeValues};
use super::integrity::{Challenge, Integrity};
use super::intserv::{Adspec, FlowSpec, TokenBucket};
use super::object::{Object, ObjectSink, Objects, PolicyData};
use super::primitive::{checksum, patch_u16, sink_len, Reader, Sink};
use super::refresh::MessageId;
use super::session::{FilterSpec, Session};
use super::style::Style;
use super::validate;

/// Most objects one message may carry (unknown `10bbbbbb` objects, which are dropped, count
/// too); a Bundle's sub-messages are limited one by one. [`Message::decode`] refuses a message
/// with more with [`WireError::TooManyObjects`].
///
/// A Resv with [`MAX_FILTER_SPECS`] fixed-filter descriptors needs `2 × 64` objects plus a
/// handful: 256 leaves room for POLICY_DATA and the like while keeping the work and memory
/// one datagram can cost bounded.
pub const MAX_OBJECTS: usize = 256;

/// Most FILTER_SPEC objects one message may carry: an SE filter list, or FF descriptors.
/// [`Message::decode`] refuses a message with more with [`WireError::TooManyFilterSpecs`].
///
/// 64 is as many senders as a host keeps path or reservation states for in one session, so a
/// legitimate reservation never needs more; an attacker's 5 000-filter Resv no longer becomes
/// 5 000 reservations to check and 5 000 errors to answer.
pub const MAX_FILTER_SPECS: usize = 64;

/// One RSVP message: common header fields and the objects in wire order.
///
/// Keeping the objects as a list in wire order (rather than one field per class) is what makes
/// `decode` → `encode` byte-exact and lets unknown `11bbbbbb` objects keep their place. Typed
/// accessors ([`session`](Self::session), [`flow_descriptors`](Self::flow_descriptors), …)
/// give the structured view.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use qtoq::wire::{Message, MsgType, RsvpHop, Session, FilterSpec, TimeValues};
/// use qtoq::wire::intserv::TokenBucket;
///
/// let path = Message::path(
///     Session::new("192.0.2.2:5001".parse().unwrap(), 6),
///     RsvpHop::new("192.0.2.1".parse().unwrap(), 0),
///     TimeValues::new(Duration::from_secs(30)),
///     FilterSpec::new("192.0.2.1:40000".parse().unwrap()),
///     TokenBucket::new(125_000.0, 10_000.0),
///     None,
/// );
/// let bytes = path.encode()?;
/// let back = Message::decode(&bytes)?;
/// assert_eq!(back.msg_type(), MsgType::Path);
/// assert_eq!(back, path);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Message type.
    pub msg_type: MsgType,
    /// Common-header flags (4 bits; `FLAG_REFRESH_REDUCTION_CAPABLE`).
    pub flags: u8,
    /// Send_TTL: the IP TTL the message was sent with.
    pub send_ttl: u8,
    /// Objects in wire order. For a Bundle only its optional INTEGRITY.
    pub objects: Objects,
    /// Bundle only: the bundled sub-messages, in order (never Bundles themselves).
    pub bundled: Vec<Message>,
}

impl Message {
    /// An empty message of type `msg_type` (flags 0, Send_TTL 64); add objects with
    /// [`push`](Self::push) / [`with`](Self::with).
    pub fn new(msg_type: MsgType) -> Self {
        Message {
            msg_type,
            flags: 0,
            send_ttl: DEFAULT_SEND_TTL,
            objects: Objects::new(),
            bundled: Vec::new(),
        }
    }

    /// The message type.
    pub fn msg_type(&self) -> MsgType {
        self.msg_type
    }

    /// Appends an object.
    pub fn push(&mut self, object: Object) -> &mut Self {
        self.objects.push(object);
        self
    }

    /// Appends an object (by-value builder form).
    pub fn with(mut self, object: Object) -> Self {
        self.objects.push(object);
        self
    }

    /// Sets Send_TTL (builder form).
    pub fn with_send_ttl(mut self, send_ttl: u8) -> Self {
        self.send_ttl = send_ttl;
        self
    }

    /// A Path: `SESSION RSVP_HOP TIME_VALUES SENDER_TEMPLATE SENDER_TSPEC [ADSPEC]`.
    pub fn path(
        session: Session,
        hop: RsvpHop,
        time_values: TimeValues,
        sender_template: FilterSpec,
        sender_tspec: TokenBucket,
        adspec: Option<Adspec>,
    ) -> Self {
        let mut msg = Message::with_capacity(MsgType::Path, 6);
        msg.objects.extend([
            Object::Session(session),
            Object::RsvpHop(hop),
            Object::TimeValues(time_values),
            Object::SenderTemplate(sender_template),
            Object::SenderTspec(sender_tspec),
        ]);
        if let Some(adspec) = adspec {
            msg.objects.push(Object::Adspec(adspec));
        }
        msg
    }

    /// A Resv: `SESSION RSVP_HOP TIME_VALUES STYLE` and the flow descriptor list for `style`:
    /// WF → `FLOWSPEC` (`filters` ignored); FF → a `FLOWSPEC FILTER_SPEC` pair per filter; SE →
    /// `FLOWSPEC` then every `FILTER_SPEC`. Add a RESV_CONFIRM with [`push`](Self::push) to ask
    /// for a ResvConf.
    pub fn resv(
        session: Session,
        hop: RsvpHop,
        time_values: TimeValues,
        style: Style,
        flowspec: FlowSpec,
        filters: &[FilterSpec],
    ) -> Self {
        let mut msg = Message::with_capacity(MsgType::Resv, 5 + 2 * filters.len());
        msg.objects.extend([
            Object::Session(session),
            Object::RsvpHop(hop),
            Object::TimeValues(time_values),
            Object::Style(style),
        ]);
        msg.push_flow_descriptors(style, Some(flowspec), filters);
        msg
    }

    /// A PathErr: `SESSION ERROR_SPEC [SENDER_TEMPLATE SENDER_TSPEC]`.
    pub fn path_err(
        session: Session,
        error: ErrorSpec,
        sender: Option<(FilterSpec, TokenBucket)>,
    ) -> Self {
        let mut msg = Message::with_capacity(MsgType::PathErr, 4);
        msg.objects
            .extend([Object::Session(session), Object::ErrorSpec(error)]);
        if let Some((template, tspec)) = sender {
            msg.objects.push(Object::SenderTemplate(template));
            msg.objects.push(Object::SenderTspec(tspec));
        }
        msg
    }

    /// A ResvErr: `SESSION RSVP_HOP ERROR_SPEC STYLE [error flow descriptor]` (for FF give
    /// exactly one filter).
    pub fn resv_err(
        session: Session,
        hop: RsvpHop,
        error: ErrorSpec,
        style: Style,
        flowspec: Option<FlowSpec>,
        filters: &[FilterSpec],
    ) -> Self {
        let mut msg = Message::with_capacity(MsgType::ResvErr, 5 + 2 * filters.len());
        msg.objects.extend([
            Object::Session(session),
            Object::RsvpHop(hop),
            Object::ErrorSpec(error),
            Object::Style(style),
        ]);
        if flowspec.is_some() {
            msg.push_flow_descriptors(style, flowspec, filters);
        }
        msg
    }

    /// A PathTear: `SESSION RSVP_HOP [SENDER_TEMPLATE]`.
    pub fn path_tear(session: Session, hop: RsvpHop, sender: Option<FilterSpec>) -> Self {
        let mut msg = Message::with_capacity(MsgType::PathTear, 3);
        msg.objects
            .extend([Object::Session(session), Object::RsvpHop(hop)]);
        if let Some(template) = sender {
            msg.objects.push(Object::SenderTemplate(template));
        }
        msg
    }

    /// A ResvTear: `SESSION RSVP_HOP STYLE` and the filters being torn down (none for WF).
    pub fn resv_tear(session: Session, hop: RsvpHop, style: Style, filters: &[FilterSpec]) -> Self {
        let mut msg = Message::with_capacity(MsgType::ResvTear, 3 + filters.len());
        msg.objects.extend([
            Object::Session(session),
            Object::RsvpHop(hop),
            Object::Style(style),
        ]);
        if style != Style::WildcardFilter {
            msg.objects
                .extend(filters.iter().copied().map(Object::FilterSpec));
        }
        msg
    }

    /// A ResvConf: `SESSION ERROR_SPEC RESV_CONFIRM STYLE` and the flow descriptor list (as
    /// for [`resv`](Self::resv)). The ERROR_SPEC of a confirmation has code 0.
    pub fn resv_conf(
        session: Session,
        error: ErrorSpec,
        confirm: ResvConfirm,
        style: Style,
        flowspec: FlowSpec,
        filters: &[FilterSpec],
    ) -> Self {
        let mut msg = Message::with_capacity(MsgType::ResvConf, 5 + 2 * filters.len());
        msg.objects.extend([
            Object::Session(session),
            Object::ErrorSpec(error),
            Object::ResvConfirm(confirm),
            Object::Style(style),
        ]);
        msg.push_flow_descriptors(style, Some(flowspec), filters);
        msg
    }

    /// A Bundle (RFC 2961) of `messages` (which must not be Bundles).
    pub fn bundle(messages: Vec<Message>) -> Self {
        let mut msg = Message::new(MsgType::Bundle);
        msg.bundled = messages;
        msg
    }

    fn with_capacity(msg_type: MsgType, objects: usize) -> Self {
        let mut msg = Message::new(msg_type);
        msg.objects.reserve_exact(objects);
        msg
    }

    fn push_flow_descriptors(
        &mut self,
        style: Style,
        flowspec: Option<FlowSpec>,
        filters: &[FilterSpec],
    ) {
        match (style, flowspec) {
            (Style::WildcardFilter, Some(f)) => self.objects.push(Object::FlowSpec(f)),
            (Style::FixedFilter, Some(f)) => {
                for filter in filters {
                    self.objects.push(Object::FlowSpec(f));
                    self.objects.push(Object::FilterSpec(*filter));
                }
            }
            (Style::SharedExplicit, Some(f)) => {
                self.objects.push(Object::FlowSpec(f));
                self.objects
                    .extend(filters.iter().copied().map(Object::FilterSpec));
            }
            (_, None) => self
                .objects
                .extend(filters.iter().copied().map(Object::FilterSpec)),
        }
    }

    // --- typed accessors -----------------------------------------------------------------

    fn find<'a, T>(&'a self, pick: impl Fn(&'a Object) -> Option<T>) -> Option<T> {
        self.objects.iter().find_map(pick)
    }

    /// The SESSION object.
    pub fn session(&self) -> Option<&Session> {
        self.find(|o| match o {
            Object::Session(s) => Some(s),
            _ => None,
        })
    }

    /// The RSVP_HOP object.
    pub fn rsvp_hop(&self) -> Option<&RsvpHop> {
        self.find(|o| match o {
            Object::RsvpHop(h) => Some(h),
            _ => None,
        })
    }

    /// The TIME_VALUES object.
    pub fn time_values(&self) -> Option<&TimeValues> {
        self.find(|o| match o {
            Object::TimeValues(t) => Some(t),
            _ => None,
        })
    }

    /// The STYLE object.
    pub fn style(&self) -> Option<Style> {
        self.find(|o| match o {
            Object::Style(s) => Some(*s),
            _ => None,
        })
    }

    /// The ERROR_SPEC object.
    pub fn error_spec(&self) -> Option<&ErrorSpec> {
        self.find(|o| match o {
            Object::ErrorSpec(e) => Some(e),
            _ => None,
        })
    }

    /// The SCOPE object.
    pub fn scope(&self) -> Option<&Scope> {
        self.find(|o| match o {
            Object::Scope(s) => Some(s),
            _ => None,
        })
    }

    /// The RESV_CONFIRM object.
    pub fn resv_confirm(&self) -> Option<&ResvConfirm> {
        self.find(|o| match o {
            Object::ResvConfirm(c) => Some(c),
            _ => None,
        })
    }

    /// The INTEGRITY object.
    pub fn integrity(&self) -> Option<&Integrity> {
        self.find(|o| match o {
            Object::Integrity(i) => Some(i),
            _ => None,
        })
    }

    /// The CHALLENGE object.
    pub fn challenge(&self) -> Option<&Challenge> {
        self.find(|o| match o {
            Object::Challenge(c) => Some(c),
            _ => None,
        })
    }

    /// The MESSAGE_ID object.
    pub fn message_id(&self) -> Option<&MessageId> {
        self.find(|o| match o {
            Object::MessageId(m) => Some(m),
            _ => None,
        })
    }

    /// The SENDER_TEMPLATE object.
    pub fn sender_template(&self) -> Option<&FilterSpec> {
        self.find(|o| match o {
            Object::SenderTemplate(f) => Some(f),
            _ => None,
        })
    }

    /// The SENDER_TSPEC object.
    pub fn sender_tspec(&self) -> Option<&TokenBucket> {
        self.find(|o| match o {
            Object::SenderTspec(t) => Some(t),
            _ => None,
        })
    }

    /// The ADSPEC object.
    pub fn adspec(&self) -> Option<&Adspec> {
        self.find(|o| match o {
            Object::Adspec(a) => Some(a),
            _ => None,
        })
    }

    /// The first FLOWSPEC object.
    pub fn flowspec(&self) -> Option<&FlowSpec> {
        self.find(|o| match o {
            Object::FlowSpec(f) => Some(f),
            _ => None,
        })
    }

    /// Every FILTER_SPEC, in order.
    pub fn filter_specs(&self) -> impl Iterator<Item = &FilterSpec> + '_ {
        self.objects.iter().filter_map(|o| match o {
            Object::FilterSpec(f) => Some(f),
            _ => None,
        })
    }

    /// Every POLICY_DATA, in order.
    pub fn policy_data(&self) -> impl Iterator<Item = &PolicyData> + '_ {
        self.objects.iter().filter_map(|o| match o {
            Object::PolicyData(p) => Some(p),
            _ => None,
        })
    }

    /// Every MESSAGE_ID_ACK (`true`) and MESSAGE_ID_NACK (`false`), in order.
    pub fn message_id_acks(&self) -> impl Iterator<Item = (bool, &MessageId)> + '_ {
        self.objects.iter().filter_map(|o| match o {
            Object::MessageIdAck(m) => Some((true, m)),
            Object::MessageIdNack(m) => Some((false, m)),
            _ => None,
        })
    }

    /// The reservations of a Resv-like message: one [`FlowDescriptor`] per FILTER_SPEC with
    /// the flowspec in force for it (FF: the preceding FLOWSPEC, SE: the shared one), or a
    /// single descriptor without filter for WF. Allocation-free.
    pub fn flow_descriptors(&self) -> FlowDescriptors<'_> {
        FlowDescriptors {
            objects: self.objects.iter(),
            flowspec: None,
            wildcard: self.style() == Some(Style::WildcardFilter),
        }
    }

    // --- decode --------------------------------------------------------------------------

    /// Decodes and validates one RSVP message (common header first).
    ///
    /// Checks the header (version 1, known type, length equal to `bytes.len()`, checksum
    /// unless 0), every object (length, class rules of RFC 2205 §3.10, size and contents per
    /// C-Type, IntServ inner lengths) and the message format of its type (required objects,
    /// order, flow descriptors).
    ///
    /// # Errors
    ///
    /// A [`WireError`] saying what is wrong and where; [`WireError::error_spec`] gives the
    /// ERROR_SPEC to answer with.
    ///
    /// # Allocations
    ///
    /// None for a message of at most [`INLINE_OBJECTS`](super::INLINE_OBJECTS) objects whose
    /// objects are all fixed-size (every typical Path, Resv, tear, error or confirmation,
    /// ADSPEC included). Otherwise: one per variable-size body (NULL, INTEGRITY digest,
    /// POLICY_DATA, unknown `11bbbbbb` object, MESSAGE_ID_LIST entries); for an ADSPEC with
    /// content kept raw, its raw tail, lists and items; the object list's own growth beyond
    /// the inline capacity; and the list of a Bundle's messages.
    /// `tests/wire_alloc.rs` counts them.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        Message::decode_at(bytes, 0, true)
    }

    fn decode_at(bytes: &[u8], base: usize, allow_bundle: bool) -> Result<Message, WireError> {
        let (header, r) = decode_header(bytes, base, allow_bundle)?;
        // The message is built in the returned value itself (one exit, no early return
        // after this point): moving it out of a local would copy every inline object.
        let mut result = Ok(Message {
            msg_type: header.msg_type,
            flags: header.flags,
            send_ttl: header.send_ttl,
            // Inline up to INLINE_OBJECTS: a typical message needs no allocation at all.
            objects: Objects::new(),
            bundled: Vec::new(),
        });
        if let Ok(msg) = &mut result {
            let body = if msg.msg_type == MsgType::Bundle {
                msg.decode_bundle_body(r, base, bytes.len())
            } else {
                decode_objects(msg.msg_type, &mut msg.objects, r, base, bytes.len())
            };
            if let Err(error) = body {
                result = Err(error);
            }
        }
        result
    }

    /// Decodes and validates one RSVP message other than a Bundle exactly as
    /// [`decode`](Self::decode) does, handing its objects to `out` instead of building a
    /// [`Message`] (the engine keeps only the fields it reads). `Ok(None)` for a Bundle whose
    /// header is valid: decode that with [`decode`](Self::decode).
    pub(crate) fn decode_flat<O: ObjectSink>(
        bytes: &[u8],
        out: &mut O,
    ) -> Result<Option<Header>, WireError> {
        let (header, r) = decode_header(bytes, 0, true)?;
        if header.msg_type == MsgType::Bundle {
            return Ok(None);
        }
        decode_objects(header.msg_type, out, r, 0, bytes.len())?;
        Ok(Some(header))
    }

    /// Decodes a Bundle's optional INTEGRITY and its sub-messages; `r` starts after the
    /// common header, `len` is the whole Bundle's length.
    fn decode_bundle_body(
        &mut self,
        mut r: Reader<'_>,
        base: usize,
        len: usize,
    ) -> Result<(), WireError> {
        let mut check = validate::Checker::new(MsgType::Bundle);
        let check = &mut check;
        let r = &mut r;
        let total = base + COMMON_HEADER_LEN + r.remaining();
        // An optional INTEGRITY object comes first; a sub-message starts with version 1 in the
        // top nibble, which as an object length would be ≥ 4096 bytes: no INTEGRITY is that big.
        if let Some([hi, _, class_num, _]) = r.clone().array::<4>() {
            if hi >> 4 != RSVP_VERSION && class_num == class::INTEGRITY {
                let offset = total - r.remaining();
                let (class_num, c_type, body) = read_object(r, offset)?;
                Object::decode_into(&mut self.objects, check, offset, class_num, c_type, body)?;
            }
        }
        while !r.is_empty() {
            let offset = total - r.remaining();
            let bad = |reason| WireError::BadBundle { offset, reason };
            let Some([_, _, _, _, _, _, hi, lo]) = r.clone().array::<8>() else {
                return Err(bad("sub-message shorter than a common header"));
            };
            let len = usize::from(u16::from_be_bytes([hi, lo]));
            if len < COMMON_HEADER_LEN || len % 4 != 0 {
                return Err(bad("sub-message length is invalid"));
            }
            let Some(sub) = r.take(len) else {
                return Err(bad("sub-message runs past the bundle"));
            };
            self.bundled.push(Message::decode_at(sub, offset, false)?);
        }
        if self.bundled.is_empty() {
            return Err(WireError::BadBundle {
                offset: total,
                reason: "bundle carries no message",
            });
        }
        check.finish(base + len)
    }

    /// Validates a message built in memory against the same format rules `decode` applies
    /// (offsets in the error are those the encoding would have).
    ///
    /// # Errors
    ///
    /// The [`WireError`] `decode` would return for the encoded message's format, or
    /// [`WireError::Encode`] when it cannot be encoded at all.
    pub fn validate(&self) -> Result<(), WireError> {
        let mut bytes = Vec::new();
        self.encode_to_vec(&mut bytes)?;
        Message::decode(&bytes).map(|_| ())
    }

    // --- encode --------------------------------------------------------------------------

    /// Encodes the message with its checksum filled in.
    ///
    /// # Errors
    ///
    /// An [`EncodeError`] when the message cannot be expressed on the wire: longer than
    /// 65 535 bytes (or one of its objects is), or an opaque body not a multiple of 4 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(256);
        self.encode_to_vec(&mut out)?;
        Ok(out)
    }

    /// Appends the encoded message to `out`; returns its length. On error `out` is unchanged.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    pub fn encode_to_vec(&self, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        self.encode_sink(out)
    }

    /// Appends the encoded message to `out`; returns its length. On error `out` is unchanged.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    pub fn encode_into(&self, out: &mut BytesMut) -> Result<usize, EncodeError> {
        self.encode_sink(out)
    }

    fn encode_sink<S: Sink>(&self, out: &mut S) -> Result<usize, EncodeError> {
        let start = sink_len(out);
        let result = self.encode_unchecked(out, start);
        if result.is_err() {
            out.truncate_to(start);
        }
        result
    }

    fn encode_unchecked<S: Sink>(&self, out: &mut S, start: usize) -> Result<usize, EncodeError> {
        begin_message(out, self.msg_type, self.flags, self.send_ttl);
        for obj in &self.objects {
            obj.encode(out)?;
        }
        for sub in &self.bundled {
            let sub_start = sink_len(out);
            sub.encode_unchecked(out, sub_start)?;
        }
        finish_message(out, start)
    }
}

/// Writes a common header whose checksum and length [`finish_message`] fills in once the
/// objects follow it.
#[inline]
pub(crate) fn begin_message<S: Sink>(out: &mut S, msg_type: MsgType, flags: u8, send_ttl: u8) {
    // Version and flags, type, checksum (filled last), Send_TTL, reserved, length
    // (back-filled): written at once, as each write to a sink checks its room.
    out.put_slice(&[
        (RSVP_VERSION << 4) | (flags & 0x0f),
        msg_type.number(),
        0,
        0,
        send_ttl,
        0,
        0,
        0,
    ]);
}

/// Fills in the length and checksum of the message written from `start` to the end of `out`;
/// returns its length.
pub(crate) fn finish_message<S: Sink>(out: &mut S, start: usize) -> Result<usize, EncodeError> {
    let len = sink_len(out) - start;
    let len16 = u16::try_from(len).map_err(|_| EncodeError::MessageTooLong { length: len })?;
    patch_u16(out, start + 6, len16);
    let sum = out.as_mut().get(start..).map(checksum).unwrap_or(0);
    // 0 means "no checksum sent"; the one's-complement twin of 0 is 0xffff.
    patch_u16(out, start + 2, if sum == 0 { 0xffff } else { sum });
    Ok(len)
}

/// The common header fields of a decoded message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) msg_type: MsgType,
    pub(crate) flags: u8,
    pub(crate) send_ttl: u8,
}

/// Checks the common header of a message at `base` in its datagram (version, known type,
/// length, checksum, no nested Bundle); returns it and a reader past it.
fn decode_header(
    bytes: &[u8],
    base: usize,
    allow_bundle: bool,
) -> Result<(Header, Reader<'_>), WireError> {
    let mut r = Reader::new(bytes);
    let Some([vers_flags, type_num, sum_hi, sum_lo, send_ttl, _, len_hi, len_lo]) = r.array()
    else {
        return Err(WireError::TooShort { len: bytes.len() });
    };
    let found = u16::from_be_bytes([sum_hi, sum_lo]);
    let len = u16::from_be_bytes([len_hi, len_lo]);
    let version = vers_flags >> 4;
    if version != RSVP_VERSION {
        return Err(WireError::BadVersion { version });
    }
    let msg_type =
        MsgType::from_number(type_num).ok_or(WireError::UnknownMsgType { msg_type: type_num })?;
    let declared = usize::from(len);
    if declared != bytes.len() || declared < COMMON_HEADER_LEN || declared % 4 != 0 {
        return Err(WireError::BadMessageLength {
            declared,
            available: bytes.len(),
        });
    }
    // A valid message sums (field included) to 0xffff, so its checksum() is 0.
    if found != 0 && checksum(bytes) != 0 {
        return Err(WireError::BadChecksum {
            found,
            computed: expected_checksum(bytes),
        });
    }
    if msg_type == MsgType::Bundle && !allow_bundle {
        return Err(WireError::BadBundle {
            offset: base,
            reason: "a bundle may not contain another bundle",
        });
    }
    let header = Header {
        msg_type,
        flags: vers_flags & 0x0f,
        send_ttl,
    };
    Ok((header, r))
}

/// Decodes and checks the objects of a message other than a Bundle; `r` starts after the
/// common header, `len` is the whole message's length.
#[inline(always)]
fn decode_objects<O: ObjectSink>(
    msg_type: MsgType,
    out: &mut O,
    mut r: Reader<'_>,
    base: usize,
    len: usize,
) -> Result<(), WireError> {
    let mut check = validate::Checker::new(msg_type);
    let (mut objects, mut filters) = (0usize, 0usize);
    while !r.is_empty() {
        let offset = base + len - r.remaining();
        let (class_num, c_type, body) = read_object(&mut r, offset)?;
        objects += 1;
        if objects > MAX_OBJECTS {
            return Err(WireError::TooManyObjects {
                offset,
                limit: MAX_OBJECTS,
            });
        }
        if class_num == class::FILTER_SPEC {
            filters += 1;
            if filters > MAX_FILTER_SPECS {
                return Err(WireError::TooManyFilterSpecs {
                    offset,
                    limit: MAX_FILTER_SPECS,
                });
            }
        }
        Object::decode_into(out, &mut check, offset, class_num, c_type, body)?;
    }
    check.finish(base + len)
}

/// The checksum a message should carry (its checksum field taken as zero).
fn expected_checksum(bytes: &[u8]) -> u16 {
    let mut sum = !checksum(bytes); // one's-complement sum of all words, field included
    let field = bytes
        .get(2..4)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .unwrap_or(0);
    // Remove the field from the sum (one's-complement subtraction), then complement.
    let (diff, borrow) = sum.overflowing_sub(field);
    sum = if borrow { diff.wrapping_sub(1) } else { diff };
    let value = !sum;
    if value == 0 {
        0xffff
    } else {
        value
    }
}

/// Reads one object header and body, checking the length before anything else is read.
fn read_object<'a>(r: &mut Reader<'a>, offset: usize) -> Result<(u8, u8, &'a [u8]), WireError> {
    let remaining = r.remaining();
    let Some([len_hi, len_lo, class_num, c_type]) = r.array() else {
        return Err(WireError::BadObjectLength {
            offset,
            length: remaining,
            class_num: 0,
            c_type: 0,
        });
    };
    let length = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    // Length ≥ 4 guarantees progress (CVE-2005-1281); the body is taken only after the bounds
    // check (CVE-2017-13048).
    let body = if length >= 4 && length % 4 == 0 {
        r.take(length - 4)
    } else {
        None
    };
    let Some(body) = body else {
        return Err(WireError::BadObjectLength {
            offset,
            length,
            class_num,
            c_type,
        });
    };
    Ok((class_num, c_type, body))
}

/// One reservation in a Resv-like message; see [`Message::flow_descriptors`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowDescriptor<'a> {
    /// The flowspec in force for this filter (absent in a ResvTear that omits it).
    pub flowspec: Option<&'a FlowSpec>,
    /// The sender filter (`None` for WF).
    pub filter: Option<&'a FilterSpec>,
}

/// Iterator returned by [`Message::flow_descriptors`].
#[derive(Debug, Clone)]
pub struct FlowDescriptors<'a> {
    objects: std::slice::Iter<'a, Object>,
    flowspec: Option<&'a FlowSpec>,
    wildcard: bool,
}

impl<'a> Iterator for FlowDescriptors<'a> {
    type Item = FlowDescriptor<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        for obj in self.objects.by_ref() {
            match obj {
                Object::FlowSpec(f) if self.wildcard => {
                    return Some(FlowDescriptor {
                        flowspec: Some(f),
                        filter: None,
                    })
                }
                Object::FlowSpec(f) => self.flowspec = Some(f),
                Object::FilterSpec(f) if !self.wildcard => {
                    return Some(FlowDescriptor {
                        flowspec: self.flowspec,
                        filter: Some(f),
                    })
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_stays_small_with_its_objects_inline() {
        // The inline object list is what a message costs to move: keep it in view.
        assert!(std::mem::size_of::<Message>() <= 8 * 48 + 48);
    }

    #[test]
    fn encoding_what_rsvp_lengths_cannot_express_fails_typed() {
        // One POLICY_DATA body past 65535 bytes: its own length field overflows first.
        let big = Message::new(MsgType::Path).with(Object::PolicyData(PolicyData {
            body: vec![0; 70_000],
        }));
        let err = big.encode().unwrap_err();
        assert_eq!(
            err,
            EncodeError::ObjectTooLong {
                class_num: class::POLICY_DATA,
                c_type: 1,
                length: 70_004,
            }
        );
        assert!(err.to_string().contains("70004 bytes"), "{err}");
        // The caller's buffer is left as it was.
        let mut out = vec![7u8; 3];
        assert_eq!(big.encode_to_vec(&mut out), Err(err.clone()));
        assert_eq!(out, [7, 7, 7]);
        // Validation reports it as the RSVP system error it would deserve.
        assert_eq!(big.validate(), Err(WireError::Encode(err)));
    }
}
