//! Per-message-type format rules (RFC 2205 §3.1, RFC 2961 §§3–5, RFC 3097 §3), checked as the
//! objects stream by so every error knows its offset.

use super::class;
use super::error::WireError;
use super::header::MsgType;
use super::style::Style;

/// Bit of a known class in a `u64` class set. Known classes are 0–25 and 64 (CHALLENGE),
/// which takes bit 63: class 63 is not one this codec knows, so the two never meet.
const fn bit(class_num: u8) -> u64 {
    1u64 << if class_num >= 63 { 63 } else { class_num }
}

const fn bits(classes: &[u8]) -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < classes.len() {
        mask |= bit(classes[i]);
        i += 1;
    }
    mask
}

/// Classes that may appear at most once per message.
const SINGLETONS: u64 = bits(&[
    class::SESSION,
    class::RSVP_HOP,
    class::INTEGRITY,
    class::TIME_VALUES,
    class::ERROR_SPEC,
    class::SCOPE,
    class::STYLE,
    class::SENDER_TEMPLATE,
    class::SENDER_TSPEC,
    class::ADSPEC,
    class::RESV_CONFIRM,
    class::MESSAGE_ID,
]);

/// Objects any of the seven RFC 2205 messages may carry (RFC 2747, RFC 2961 additions).
const COMMON: u64 = bits(&[class::INTEGRITY, class::MESSAGE_ID, class::MESSAGE_ID_ACK]);

fn allowed(msg_type: MsgType) -> u64 {
    use class::*;
    match msg_type {
        MsgType::Path => {
            COMMON
                | bits(&[
                    SESSION,
                    RSVP_HOP,
                    TIME_VALUES,
                    POLICY_DATA,
                    SENDER_TEMPLATE,
                    SENDER_TSPEC,
                    ADSPEC,
                ])
        }
        MsgType::Resv => {
            COMMON
                | bits(&[
                    SESSION,
                    RSVP_HOP,
                    TIME_VALUES,
                    RESV_CONFIRM,
                    SCOPE,
                    POLICY_DATA,
                    STYLE,
                    FLOWSPEC,
                    FILTER_SPEC,
                ])
        }
        MsgType::PathErr => {
            COMMON
                | bits(&[
                    SESSION,
                    ERROR_SPEC,
                    POLICY_DATA,
                    SENDER_TEMPLATE,
                    SENDER_TSPEC,
                    ADSPEC,
                ])
        }
        MsgType::ResvErr => {
            COMMON
                | bits(&[
                    SESSION,
                    RSVP_HOP,
                    ERROR_SPEC,
                    SCOPE,
                    POLICY_DATA,
                    STYLE,
                    FLOWSPEC,
                    FILTER_SPEC,
                ])
        }
        MsgType::PathTear => {
            COMMON
                | bits(&[
                    SESSION,
                    RSVP_HOP,
                    POLICY_DATA,
                    SENDER_TEMPLATE,
                    SENDER_TSPEC,
                    ADSPEC,
                ])
        }
        MsgType::ResvTear => {
            COMMON
                | bits(&[
                    SESSION,
                    RSVP_HOP,
                    SCOPE,
                    POLICY_DATA,
                    STYLE,
                    FLOWSPEC,
                    FILTER_SPEC,
                ])
        }
        MsgType::ResvConf => {
            COMMON
                | bits(&[
                    SESSION,
                    ERROR_SPEC,
                    RESV_CONFIRM,
                    STYLE,
                    FLOWSPEC,
                    FILTER_SPEC,
                ])
        }
        MsgType::Bundle => bits(&[INTEGRITY]),
        MsgType::Ack => bits(&[INTEGRITY, MESSAGE_ID_ACK]),
        MsgType::Srefresh => bits(&[INTEGRITY, MESSAGE_ID_ACK, MESSAGE_ID, MESSAGE_ID_LIST]),
        MsgType::IntegrityChallenge => bits(&[CHALLENGE]),
        MsgType::IntegrityResponse => bits(&[INTEGRITY, CHALLENGE]),
    }
}

const fn required(msg_type: MsgType) -> &'static [u8] {
    use class::*;
    match msg_type {
        MsgType::Path => &[SESSION, RSVP_HOP, TIME_VALUES],
        MsgType::Resv => &[SESSION, RSVP_HOP, TIME_VALUES, STYLE, FLOWSPEC],
        MsgType::PathErr => &[SESSION, ERROR_SPEC],
        MsgType::ResvErr => &[SESSION, RSVP_HOP, ERROR_SPEC, STYLE],
        MsgType::PathTear => &[SESSION, RSVP_HOP],
        MsgType::ResvTear => &[SESSION, RSVP_HOP, STYLE],
        MsgType::ResvConf => &[SESSION, ERROR_SPEC, RESV_CONFIRM, STYLE, FLOWSPEC],
        MsgType::Bundle => &[],
        MsgType::Ack => &[MESSAGE_ID_ACK],
        MsgType::Srefresh => &[MESSAGE_ID_LIST],
        MsgType::IntegrityChallenge => &[CHALLENGE],
        MsgType::IntegrityResponse => &[INTEGRITY, CHALLENGE],
    }
}

/// [`required`] as a class set, computed at compile time.
fn required_set(msg_type: MsgType) -> u64 {
    match msg_type {
        MsgType::Path => const { bits(required(MsgType::Path)) },
        MsgType::Resv => const { bits(required(MsgType::Resv)) },
        MsgType::PathErr => const { bits(required(MsgType::PathErr)) },
        MsgType::ResvErr => const { bits(required(MsgType::ResvErr)) },
        MsgType::PathTear => const { bits(required(MsgType::PathTear)) },
        MsgType::ResvTear => const { bits(required(MsgType::ResvTear)) },
        MsgType::ResvConf => const { bits(required(MsgType::ResvConf)) },
        MsgType::Bundle => const { bits(required(MsgType::Bundle)) },
        MsgType::Ack => const { bits(required(MsgType::Ack)) },
        MsgType::Srefresh => const { bits(required(MsgType::Srefresh)) },
        MsgType::IntegrityChallenge => const { bits(required(MsgType::IntegrityChallenge)) },
        MsgType::IntegrityResponse => const { bits(required(MsgType::IntegrityResponse)) },
    }
}

/// Streaming checker: the decode walk calls `admit` (and the value hooks) per known object, then
/// `finish`.
#[derive(Debug)]
pub(crate) struct Checker {
    msg_type: MsgType,
    allowed: u64,
    seen: u64,
    style: Option<Style>,
    /// FLOWSPECs seen, FILTER_SPECs seen, and whether the last of the two was a FLOWSPEC.
    flowspecs: usize,
    filters: usize,
    pending_flowspec: Option<usize>,
    /// IP version of the SESSION, and the first address-bearing object seen before it.
    session_v6: Option<bool>,
    early_family: Option<(usize, u8, u8, bool)>,
}

impl Checker {
    pub(crate) fn new(msg_type: MsgType) -> Self {
        Checker {
            msg_type,
            allowed: allowed(msg_type),
            seen: 0,
            style: None,
            flowspecs: 0,
            filters: 0,
            pending_flowspec: None,
            session_v6: None,
            early_family: None,
        }
    }

    /// The class-level rules of one known object, from its header alone: allowed in this
    /// message type, not a duplicate singleton, and in order (INTEGRITY first, SENDER_TSPEC
    /// after SENDER_TEMPLATE, ADSPEC after SENDER_TSPEC). `index` is the number of objects
    /// kept before it. NULL and forwarded unknown objects skip this: they may sit anywhere.
    #[inline(always)]
    pub(crate) fn admit(
        &mut self,
        offset: usize,
        class_num: u8,
        c_type: u8,
        index: usize,
    ) -> Result<(), WireError> {
        let this = bit(class_num);
        if self.allowed & this == 0 || class_num > 64 {
            return Err(WireError::UnexpectedObject {
                offset,
                msg_type: self.msg_type,
                class_num,
                c_type,
            });
        }
        if self.seen & this & SINGLETONS != 0 {
            return Err(WireError::DuplicateObject {
                offset,
                class_num,
                c_type,
            });
        }
        self.seen |= this;
        // One test covers the three order rules in the common case (none of those classes).
        const ORDERED: u64 = bits(&[class::INTEGRITY, class::SENDER_TSPEC, class::ADSPEC]);
        if this & ORDERED != 0 {
            let reason = match class_num {
                class::INTEGRITY if index != 0 => {
                    Some("integrity must directly follow the common header")
                }
                class::SENDER_TSPEC if self.seen & bit(class::SENDER_TEMPLATE) == 0 => {
                    Some("sender tspec must follow the sender template")
                }
                class::ADSPEC if self.seen & bit(class::SENDER_TSPEC) == 0 => {
                    Some("adspec must follow the sender tspec")
                }
                _ => None,
            };
            if let Some(reason) = reason {
                return Err(WireError::ObjectOrder {
                    offset,
                    class_num,
                    c_type,
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Records the STYLE (after [`admit`](Self::admit)).
    #[inline(always)]
    pub(crate) fn style(&mut self, style: Style) {
        self.style = Some(style);
    }

    /// Records the SESSION's IP version and checks any address-bearing object seen before it.
    #[inline(always)]
    pub(crate) fn session(&mut self, v6: bool) -> Result<(), WireError> {
        self.session_v6 = Some(v6);
        match self.early_family {
            Some((offset, class_num, c_type, other)) if other != v6 => {
                Err(WireError::AddressFamilyMismatch {
                    offset,
                    class_num,
                    c_type,
                })
            }
            _ => Ok(()),
        }
    }

    /// Checks the IP version of an address-bearing object against the SESSION's.
    #[inline(always)]
    pub(crate) fn family(
        &mut self,
        offset: usize,
        class_num: u8,
        c_type: u8,
        v6: bool,
    ) -> Result<(), WireError> {
        match self.session_v6 {
            Some(session_v6) if session_v6 != v6 => {
                return Err(WireError::AddressFamilyMismatch {
                    offset,
                    class_num,
                    c_type,
                })
            }
            None if self.early_family.is_none() => {
                self.early_family = Some((offset, class_num, c_type, v6))
            }
            _ => {}
        }
        Ok(())
    }

    /// The flow-descriptor rules of a FLOWSPEC (`is_flowspec`) or FILTER_SPEC.
    pub(crate) fn flow_descriptor(
        &mut self,
        offset: usize,
        class_num: u8,
        c_type: u8,
        is_flowspec: bool,
    ) -> Result<(), WireError> {
        let Some(style) = self.style else {
            return Err(WireError::ObjectOrder {
                offset,
                class_num,
                c_type,
                reason: "flow descriptors must follow the style object",
            });
        };
        let bad = |reason| WireError::BadFlowDescriptor {
            offset,
            style,
            reason,
        };
        match (style, is_flowspec) {
            (Style::WildcardFilter, false) => {
                return Err(bad("a wildcard-filter reservation names no filter spec"))
            }
            (Style::WildcardFilter, true) if self.flowspecs > 0 => {
                return Err(bad("a wildcard-filter reservation has one flowspec"))
            }
            (Style::SharedExplicit, true) if self.flowspecs > 0 => {
                return Err(bad("a shared-explicit reservation has one flowspec"))
            }
            (Style::SharedExplicit, false)
                if self.flowspecs == 0 && self.msg_type != MsgType::ResvTear =>
            {
                return Err(bad("the shared flowspec must come before the filter specs"))
            }
            (Style::FixedFilter, true) if self.pending_flowspec.is_some() => {
                return Err(bad("each fixed-filter flowspec needs its filter spec"))
            }
            (Style::FixedFilter, false)
                if self.filters == 0
                    && self.flowspecs == 0
                    && self.msg_type != MsgType::ResvTear =>
            {
                return Err(bad("a fixed-filter list starts with a flowspec"))
            }
            (Style::FixedFilter, false)
                if self.msg_type == MsgType::ResvErr && self.filters > 0 =>
            {
                return Err(bad("a resverr carries one fixed-filter descriptor"))
            }
            _ => {}
        }
        if is_flowspec {
            self.flowspecs += 1;
            self.pending_flowspec = Some(offset);
        } else {
            self.filters += 1;
            self.pending_flowspec = None;
        }
        Ok(())
    }

    pub(crate) fn finish(&self, end: usize) -> Result<(), WireError> {
        if required_set(self.msg_type) & !self.seen != 0 {
            let required = required(self.msg_type);
            if let Some(class_num) = required.iter().find(|c| self.seen & bit(**c) == 0) {
                return Err(WireError::MissingObject {
                    msg_type: self.msg_type,
                    class_num: *class_num,
                });
            }
        }
        let template = self.seen & bit(class::SENDER_TEMPLATE) != 0;
        let tspec = self.seen & bit(class::SENDER_TSPEC) != 0;
        if template && !tspec && matches!(self.msg_type, MsgType::Path | MsgType::PathErr) {
            return Err(WireError::MissingObject {
                msg_type: self.msg_type,
                class_num: class::SENDER_TSPEC,
            });
        }
        if let Some(style) = self.style {
            let bad = |offset, reason| WireError::BadFlowDescriptor {
                offset,
                style,
                reason,
            };
            if style == Style::FixedFilter {
                if let Some(offset) = self.pending_flowspec {
                    return Err(bad(
                        offset,
                        "each fixed-filter flowspec needs its filter spec",
                    ));
                }
            }
            let needs_filter = style != Style::WildcardFilter
                && self.filters == 0
                && (self.flowspecs > 0 || self.msg_type == MsgType::ResvTear);
            if needs_filter {
                return Err(bad(
                    end,
                    "an explicit-style list needs at least one filter spec",
                ));
            }
        }
        Ok(())
    }
}
