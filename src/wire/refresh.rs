//! RFC 2961 refresh-reduction objects: MESSAGE_ID (class 23), MESSAGE_ID_ACK / NACK (24),
//! MESSAGE_ID_LIST (25).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::primitive::{BodyError, Reader};

/// MESSAGE_ID flag `ACK_Desired`.
pub const MESSAGE_ID_FLAG_ACK_DESIRED: u8 = 0x01;

/// Largest epoch: the field is 24 bits wide.
pub const MAX_EPOCH: u32 = 0x00ff_ffff;

/// MESSAGE_ID (class 23, C-Type 1) and the MESSAGE_ID_ACK / MESSAGE_ID_NACK (class 24, C-Type
/// 1 / 2) that answer it: they share one layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// Flags (`MESSAGE_ID_FLAG_ACK_DESIRED` on MESSAGE_ID; none on ACK/NACK).
    pub flags: u8,
    /// 24-bit epoch of the sender (bits above 24 are not sent).
    pub epoch: u32,
    /// Message identifier, increasing per sender.
    pub id: u32,
}

impl MessageId {
    #[inline(always)]
    pub(crate) fn decode(body: &[u8]) -> Result<Self, BodyError> {
        if body.len() != 8 {
            return Err(BodyError::Size);
        }
        let mut r = Reader::new(body);
        let (Some(flags), Some(epoch), Some(id)) = (r.u8(), r.u24(), r.u32()) else {
            return Err(BodyError::Size);
        };
        Ok(MessageId { flags, epoch, id })
    }

    pub(crate) fn encode_body<S: bytes::BufMut>(&self, out: &mut S) {
        out.put_u32((u32::from(self.flags) << 24) | (self.epoch & MAX_EPOCH));
        out.put_u32(self.id);
    }
}

/// The entries of a MESSAGE_ID_LIST, one variant per C-Type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageIdEntries {
    /// C-Type 1: message identifiers.
    Ids(Vec<u32>),
    /// C-Type 2: (message identifier, IPv4 source) pairs.
    Ipv4Sources(Vec<(u32, Ipv4Addr)>),
    /// C-Type 3: (message identifier, IPv6 source) pairs.
    Ipv6Sources(Vec<(u32, Ipv6Addr)>),
    /// C-Type 4: (message identifier, IPv4 source, IPv4 destination).
    Ipv4Multicast(Vec<(u32, Ipv4Addr, Ipv4Addr)>),
    /// C-Type 5: (message identifier, IPv6 source, IPv6 destination).
    Ipv6Multicast(Vec<(u32, Ipv6Addr, Ipv6Addr)>),
}

impl MessageIdEntries {
    /// Number of entries.
    pub fn len(&self) -> usize {
        match self {
            MessageIdEntries::Ids(v) => v.len(),
            MessageIdEntries::Ipv4Sources(v) => v.len(),
            MessageIdEntries::Ipv6Sources(v) => v.len(),
            MessageIdEntries::Ipv4Multicast(v) => v.len(),
            MessageIdEntries::Ipv6Multicast(v) => v.len(),
        }
    }

    /// `true` when there is no entry (never the case for a decoded list).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// MESSAGE_ID_LIST object (class 25, C-Types 1–5): the summary refresh of many states.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageIdList {
    /// Flags (none defined).
    pub flags: u8,
    /// 24-bit epoch.
    pub epoch: u32,
    /// The listed states.
    pub entries: MessageIdEntries,
}

impl MessageIdList {
    /// C-Type on the wire.
    pub fn c_type(&self) -> u8 {
        match self.entries {
            MessageIdEntries::Ids(_) => 1,
            MessageIdEntries::Ipv4Sources(_) => 2,
            MessageIdEntries::Ipv6Sources(_) => 3,
            MessageIdEntries::Ipv4Multicast(_) => 4,
            MessageIdEntries::Ipv6Multicast(_) => 5,
        }
    }

    pub(crate) fn decode(c_type: u8, body: &[u8]) -> Result<Self, BodyError> {
        let width = match c_type {
            1 => 4,
            2 => 8,
            3 => 20,
            4 => 12,
            5 => 36,
            _ => return Err(BodyError::CType),
        };
        let mut r = Reader::new(body);
        let (Some(flags), Some(epoch)) = (r.u8(), r.u24()) else {
            return Err(BodyError::Size);
        };
        if r.is_empty() || !r.remaining().is_multiple_of(width) {
            return Err(BodyError::Size);
        }
        let count = r.remaining() / width;
        let bad = BodyError::Size;
        let entries = match c_type {
            1 => MessageIdEntries::Ids((0..count).filter_map(|_| r.u32()).collect()),
            2 => MessageIdEntries::Ipv4Sources(
                (0..count)
                    .filter_map(|_| Some((r.u32()?, r.ipv4()?)))
                    .collect(),
            ),
            3 => MessageIdEntries::Ipv6Sources(
                (0..count)
                    .filter_map(|_| Some((r.u32()?, r.ipv6()?)))
                    .collect(),
            ),
            4 => MessageIdEntries::Ipv4Multicast(
                (0..count)
                    .filter_map(|_| Some((r.u32()?, r.ipv4()?, r.ipv4()?)))
                    .collect(),
            ),
            _ => MessageIdEntries::Ipv6Multicast(
                (0..count)
                    .filter_map(|_| Some((r.u32()?, r.ipv6()?, r.ipv6()?)))
                    .collect(),
            ),
        };
        if entries.len() != count {
            return Err(bad);
        }
        Ok(MessageIdList {
            flags,
            epoch,
            entries,
        })
    }

    pub(crate) fn encode_body<S: bytes::BufMut>(&self, out: &mut S) {
        out.put_u32((u32::from(self.flags) << 24) | (self.epoch & MAX_EPOCH));
        match &self.entries {
            MessageIdEntries::Ids(v) => v.iter().for_each(|id| out.put_u32(*id)),
            MessageIdEntries::Ipv4Sources(v) => v.iter().for_each(|(id, src)| {
                out.put_u32(*id);
                out.put_slice(&src.octets());
            }),
            MessageIdEntries::Ipv6Sources(v) => v.iter().for_each(|(id, src)| {
                out.put_u32(*id);
                out.put_slice(&src.octets());
            }),
            MessageIdEntries::Ipv4Multicast(v) => v.iter().for_each(|(id, src, dst)| {
                out.put_u32(*id);
                out.put_slice(&src.octets());
                out.put_slice(&dst.octets());
            }),
            MessageIdEntries::Ipv6Multicast(v) => v.iter().for_each(|(id, src, dst)| {
                out.put_u32(*id);
                out.put_slice(&src.octets());
                out.put_slice(&dst.octets());
            }),
        }
    }
}
