//! The object header (length, Class-Num, C-Type) and the [`Object`] enum of every object this
//! codec knows, with the RFC 2205 §3.10 rules for unknown classes.

use super::class;
use super::error::{EncodeError, WireError};
use super::error_spec::ErrorSpec;
use super::hop::{ResvConfirm, RsvpHop, Scope, TimeValues};
use super::integrity::{Challenge, Integrity};
use super::intserv::{Adspec, FlowSpec, TokenBucket};
use super::primitive::{patch_u16, sink_len, BodyError, Sink};
use super::refresh::{MessageId, MessageIdList};
use super::session::{FilterSpec, Session};
use super::style::Style;
use super::validate::Checker;

/// POLICY_DATA object (class 14, C-Type 1): carried opaquely (RFC 2750 semantics are out of
/// scope).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyData {
    /// The body, a multiple of 4 bytes.
    pub body: Vec<u8>,
}

/// How many objects a [`Message`](super::Message) holds without a heap allocation: a Path
/// with Adspec or an FF Resv with one filter has 6, plus INTEGRITY and MESSAGE_ID 8.
pub const INLINE_OBJECTS: usize = 8;

/// The object list of a [`Message`](super::Message), in wire order: a vector (`push`,
/// `insert`, `extend`, indexing, slices, …) that keeps up to [`INLINE_OBJECTS`] objects inline
/// and moves to the heap only beyond that.
pub type Objects = smallvec::SmallVec<[Object; INLINE_OBJECTS]>;

/// Where decoded objects go: a [`Message`](super::Message)'s own list, or a caller that keeps
/// only what it reads (`Message::decode_flat`).
pub(crate) trait ObjectSink {
    /// How many objects were pushed (the format rules need the index of each).
    fn len(&self) -> usize;
    /// Takes the next object in wire order.
    fn push(&mut self, object: Object);
}

impl ObjectSink for Objects {
    #[inline(always)]
    fn len(&self) -> usize {
        Objects::len(self)
    }

    #[inline(always)]
    fn push(&mut self, object: Object) {
        Objects::push(self, object);
    }
}

/// One RSVP object, typed. Messages keep their objects in wire order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Object {
    /// NULL (class 0): ignored by receivers; kept so re-encoding is exact.
    Null {
        /// C-Type (ignored).
        c_type: u8,
        /// Body.
        body: Vec<u8>,
    },
    /// SESSION (class 1).
    Session(Session),
    /// RSVP_HOP (class 3).
    RsvpHop(RsvpHop),
    /// INTEGRITY (class 4).
    Integrity(Integrity),
    /// TIME_VALUES (class 5).
    TimeValues(TimeValues),
    /// ERROR_SPEC (class 6).
    ErrorSpec(ErrorSpec),
    /// SCOPE (class 7).
    Scope(Scope),
    /// STYLE (class 8).
    Style(Style),
    /// FLOWSPEC (class 9, IntServ C-Type 2).
    FlowSpec(FlowSpec),
    /// FILTER_SPEC (class 10).
    FilterSpec(FilterSpec),
    /// SENDER_TEMPLATE (class 11).
    SenderTemplate(FilterSpec),
    /// SENDER_TSPEC (class 12, IntServ C-Type 2).
    SenderTspec(TokenBucket),
    /// ADSPEC (class 13, IntServ C-Type 2), compact: inline like every fixed-size object
    /// (an `Object` is 48 bytes), allocating only for raw parameters.
    Adspec(Adspec),
    /// POLICY_DATA (class 14).
    PolicyData(PolicyData),
    /// RESV_CONFIRM (class 15).
    ResvConfirm(ResvConfirm),
    /// MESSAGE_ID (class 23).
    MessageId(MessageId),
    /// MESSAGE_ID_ACK (class 24, C-Type 1).
    MessageIdAck(MessageId),
    /// MESSAGE_ID_NACK (class 24, C-Type 2).
    MessageIdNack(MessageId),
    /// MESSAGE_ID_LIST (class 25).
    MessageIdList(MessageIdList),
    /// CHALLENGE (class 64).
    Challenge(Challenge),
    /// An unknown object of class `11bbbbbb`: forwarded unexamined and unmodified.
    Unknown {
        /// Class-Num (≥ 192).
        class_num: u8,
        /// C-Type.
        c_type: u8,
        /// Body, a multiple of 4 bytes.
        body: Vec<u8>,
    },
}

impl Object {
    /// Class-Num on the wire.
    pub fn class_num(&self) -> u8 {
        match self {
            Object::Null { .. } => class::NULL,
            Object::Session(_) => class::SESSION,
            Object::RsvpHop(_) => class::RSVP_HOP,
            Object::Integrity(_) => class::INTEGRITY,
            Object::TimeValues(_) => class::TIME_VALUES,
            Object::ErrorSpec(_) => class::ERROR_SPEC,
            Object::Scope(_) => class::SCOPE,
            Object::Style(_) => class::STYLE,
            Object::FlowSpec(_) => class::FLOWSPEC,
            Object::FilterSpec(_) => class::FILTER_SPEC,
            Object::SenderTemplate(_) => class::SENDER_TEMPLATE,
            Object::SenderTspec(_) => class::SENDER_TSPEC,
            Object::Adspec(_) => class::ADSPEC,
            Object::PolicyData(_) => class::POLICY_DATA,
            Object::ResvConfirm(_) => class::RESV_CONFIRM,
            Object::MessageId(_) => class::MESSAGE_ID,
            Object::MessageIdAck(_) | Object::MessageIdNack(_) => class::MESSAGE_ID_ACK,
            Object::MessageIdList(_) => class::MESSAGE_ID_LIST,
            Object::Challenge(_) => class::CHALLENGE,
            Object::Unknown { class_num, .. } => *class_num,
        }
    }

    /// C-Type on the wire.
    pub fn c_type(&self) -> u8 {
        match self {
            Object::Null { c_type, .. } | Object::Unknown { c_type, .. } => *c_type,
            Object::Session(s) => s.c_type(),
            Object::RsvpHop(h) => h.c_type(),
            Object::ErrorSpec(e) => e.c_type(),
            Object::Scope(s) => s.c_type(),
            Object::FilterSpec(f) | Object::SenderTemplate(f) => f.c_type(),
            Object::ResvConfirm(c) => c.c_type(),
            Object::MessageIdList(l) => l.c_type(),
            Object::FlowSpec(_) | Object::SenderTspec(_) | Object::Adspec(_) => 2,
            Object::MessageIdNack(_) => 2,
            Object::Integrity(_)
            | Object::TimeValues(_)
            | Object::Style(_)
            | Object::PolicyData(_)
            | Object::MessageId(_)
            | Object::MessageIdAck(_)
            | Object::Challenge(_) => 1,
        }
    }

    /// Decodes one object body, checks it against the message's format rules (`check`) and
    /// appends it to `out`; an unknown `10bbbbbb` object is dropped silently. `offset` is the
    /// object header's offset, for errors.
    // The whole function is inlined into the message walk, and the format rules are checked
    // here, from the class number and the values just decoded, so no object is read back
    // from the vector (and matched on a second time) to validate it.
    #[inline(always)]
    pub(crate) fn decode_into<O: ObjectSink>(
        out: &mut O,
        check: &mut Checker,
        offset: usize,
        class_num: u8,
        c_type: u8,
        body: &[u8],
    ) -> Result<(), WireError> {
        let at = |e: BodyError| e.at(offset, class_num, c_type);
        // Keeps a decoded known object: the class-level rules, then any rule that needs the
        // value (`$check`), then the push straight from registers (no temporary object).
        macro_rules! keep {
            ($value:expr, $object:expr) => {
                keep!($value, $object, |_value| Ok::<(), WireError>(()))
            };
            ($value:expr, $object:expr, $check:expr) => {{
                let value = $value.map_err(at)?;
                check.admit(offset, class_num, c_type, out.len())?;
                #[allow(clippy::redundant_closure_call)]
                ($check)(&value)?;
                out.push($object(value));
            }};
        }
        match class_num {
            class::NULL => out.push(Object::Null {
                c_type,
                body: body.to_vec(),
            }),
            class::SESSION => keep!(
                Session::decode(c_type, body),
                Object::Session,
                |s: &Session| check.session(s.destination.is_ipv6())
            ),
            class::RSVP_HOP => keep!(RsvpHop::decode(c_type, body), Object::RsvpHop),
            class::INTEGRITY => keep!(Integrity::decode(c_type, body), Object::Integrity),
            class::TIME_VALUES => keep!(TimeValues::decode(c_type, body), Object::TimeValues),
            class::ERROR_SPEC => keep!(ErrorSpec::decode(c_type, body), Object::ErrorSpec),
            class::SCOPE => keep!(Scope::decode(c_type, body), Object::Scope),
            class::STYLE => keep!(Style::decode(c_type, body), Object::Style, |s: &Style| {
                check.style(*s);
                Ok::<(), WireError>(())
            }),
            class::FLOWSPEC => keep!(
                FlowSpec::decode(c_type, body),
                Object::FlowSpec,
                |_: &FlowSpec| check.flow_descriptor(offset, class_num, c_type, true)
            ),
            class::FILTER_SPEC => keep!(
                FilterSpec::decode(c_type, body),
                Object::FilterSpec,
                |f: &FilterSpec| {
                    check.flow_descriptor(offset, class_num, c_type, false)?;
                    check.family(offset, class_num, c_type, f.address().is_ipv6())
                }
            ),
            class::SENDER_TEMPLATE => keep!(
                FilterSpec::decode(c_type, body),
                Object::SenderTemplate,
                |f: &FilterSpec| check.family(offset, class_num, c_type, f.address().is_ipv6())
            ),
            class::SENDER_TSPEC => {
                keep!(TokenBucket::decode_tspec(c_type, body), Object::SenderTspec)
            }
            class::ADSPEC => keep!(Adspec::decode(c_type, body), Object::Adspec),
            class::POLICY_DATA if c_type == 1 => keep!(
                Ok::<_, BodyError>(PolicyData {
                    body: body.to_vec()
                }),
                Object::PolicyData
            ),
            class::RESV_CONFIRM => keep!(
                ResvConfirm::decode(c_type, body),
                Object::ResvConfirm,
                |c: &ResvConfirm| check.family(offset, class_num, c_type, c.receiver.is_ipv6())
            ),
            class::MESSAGE_ID if c_type == 1 => keep!(MessageId::decode(body), Object::MessageId),
            class::MESSAGE_ID_ACK if c_type == 1 => {
                keep!(MessageId::decode(body), Object::MessageIdAck)
            }
            class::MESSAGE_ID_ACK if c_type == 2 => {
                keep!(MessageId::decode(body), Object::MessageIdNack)
            }
            class::MESSAGE_ID_LIST => {
                keep!(MessageIdList::decode(c_type, body), Object::MessageIdList)
            }
            class::CHALLENGE => keep!(Challenge::decode(c_type, body), Object::Challenge),
            class::POLICY_DATA | class::MESSAGE_ID | class::MESSAGE_ID_ACK => {
                return Err(at(BodyError::CType))
            }
            // RFC 2205 §3.10: the top two bits of an unknown class say what to do with it.
            0xc0..=0xff => out.push(Object::Unknown {
                class_num,
                c_type,
                body: body.to_vec(),
            }),
            0x80..=0xbf => {}
            _ => {
                return Err(WireError::UnknownClass {
                    offset,
                    class_num,
                    c_type,
                })
            }
        }
        Ok(())
    }

    /// Encodes the object, header included, back-filling its length.
    // Inlined where an object is built to be encoded at once (`engine::translate`), the
    // matches on its class fold away.
    #[inline(always)]
    pub(crate) fn encode<S: Sink>(&self, out: &mut S) -> Result<(), EncodeError> {
        let opaque_len = match self {
            Object::Null { body, .. }
            | Object::Unknown { body, .. }
            | Object::PolicyData(PolicyData { body }) => Some(body.len()),
            Object::Integrity(i) => Some(i.digest.len()),
            _ => None,
        };
        let aligned = match self {
            Object::Adspec(a) => a.aligned(),
            _ => opaque_len.is_none_or(|len| len % 4 == 0),
        };
        if !aligned {
            return Err(EncodeError::Unaligned {
                class_num: self.class_num(),
                c_type: self.c_type(),
                length: opaque_len.unwrap_or(0),
            });
        }
        let start = sink_len(out);
        // Length (back-filled), Class-Num, C-Type.
        out.put_slice(&[0, 0, self.class_num(), self.c_type()]);
        match self {
            Object::Null { body, .. } | Object::Unknown { body, .. } => out.put_slice(body),
            Object::PolicyData(p) => out.put_slice(&p.body),
            Object::Session(s) => s.encode_body(out),
            Object::RsvpHop(h) => h.encode_body(out),
            Object::Integrity(i) => i.encode_body(out),
            Object::TimeValues(t) => t.encode_body(out),
            Object::ErrorSpec(e) => e.encode_body(out),
            Object::Scope(s) => s.encode_body(out),
            Object::Style(s) => s.encode_body(out),
            Object::FlowSpec(f) => f.encode_body(out),
            Object::FilterSpec(f) | Object::SenderTemplate(f) => f.encode_body(out),
            Object::SenderTspec(t) => t.encode_tspec(out),
            Object::Adspec(a) => a.encode_body(out),
            Object::ResvConfirm(c) => c.encode_body(out),
            Object::MessageId(m) | Object::MessageIdAck(m) | Object::MessageIdNack(m) => {
                m.encode_body(out)
            }
            Object::MessageIdList(l) => l.encode_body(out),
            Object::Challenge(c) => c.encode_body(out),
        }
        let len = sink_len(out) - start;
        let Ok(len16) = u16::try_from(len) else {
            out.truncate_to(start);
            return Err(EncodeError::ObjectTooLong {
                class_num: self.class_num(),
                c_type: self.c_type(),
                length: len,
            });
        };
        patch_u16(out, start, len16);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_stay_small_with_the_adspec_inline() {
        // The Adspec's bool fields give the enum a niche for its tag: growing past 48 bytes
        // would cost every object of every message.
        assert_eq!(std::mem::size_of::<Adspec>(), 48);
        assert_eq!(std::mem::size_of::<Object>(), 48);
    }
}
