//! RFC 2961 refresh reduction: MESSAGE_ID and acknowledgments (reliable trigger messages),
//! Srefresh (summary refreshes), MESSAGE_ID_NACK, epochs, and the receiving of Bundles. See
//! the module documentation's *Refresh reduction (RFC 2961)* section for the behaviour; this
//! file holds the per-neighbor state and the byte work around the codec. Tears, errors and
//! ResvConfs are made reliable by `reliable.rs`, which holds their bytes: they take their ids
//! from here, and `on_ack` hands it their acknowledgments.
//!
//! Where the state lives:
//!
//! * a sending state (a local sender's Path, a receiver's Resv) keeps its own
//!   Message_Identifier and whether it was acknowledged (`tx_id`, `tx_acked` in `state.rs`);
//! * a received state (path state, reservation state) keeps the last Message_Identifier its
//!   neighbor sent for it and the neighbor's refresh period (`rx_id`, `rx_deci`), which is
//!   all a summary refresh needs to refresh it;
//! * per neighbor ([`Peer`]): whether it is Refresh-Reduction-Capable, its epoch, the index
//!   of its message ids that our states hold (stamped by its Srefresh messages), the summary
//!   of our acknowledged ids its states hold (sent from here in Srefresh ticks), and what
//!   waits to be sent to it (acknowledgments, NACKs, Srefresh messages sent but not
//!   acknowledged yet);
//! * engine-wide: our epoch, the next id, and the ids sent and not acknowledged yet (`unacked`,
//!   id → session key: only messages in flight, so it stays small; swept lazily when it has
//!   doubled).
//!
//! Steady state costs almost no session visit: an Srefresh tick walks a bucket of a
//! neighbor's summary, and a received Srefresh stamps its ids in the neighbor's index. A
//! session's timer fires only when the index hands one of its states back, about to expire,
//! and catches up with the stamps then ([`Engine::catch_up`]); the check round (`round.rs`)
//! looks in on our summarized states every 16 refresh periods or so, in table order.
//! The per-neighbor sets are kept exact by [`HeldId`]: what a session held when it was taken
//! out of the table and no longer holds when it is put back leaves them.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::ops::Range;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use super::idset::{stamp_of, RxEntry, RxIndex, Summary};
use super::msg::Msg;
use super::receive::from_neighbor;
use super::refresh::answer;
use super::state::Session;
use super::timer::{duration_ms_ceil, Ms, NEVER};
use super::{Engine, Incoming, SessionKey, Transmit, MAX_ACK_DELAY};
use crate::wire::{
    class, Message, MessageId, MessageIdEntries, MessageIdList, MsgType, Object, COMMON_HEADER_LEN,
    DEFAULT_SEND_TTL, FLAG_REFRESH_REDUCTION_CAPABLE, MAX_EPOCH, MESSAGE_ID_FLAG_ACK_DESIRED,
    RSVP_VERSION,
};

/// Most bytes of an Ack or Srefresh message this engine builds (room left in a 1 500-byte
/// MTU for the IP header, options and an INTEGRITY object).
const MAX_MESSAGE_BYTES: usize = 1400;
/// Bytes of one MESSAGE_ID, MESSAGE_ID_ACK or MESSAGE_ID_NACK object.
const ID_OBJECT_BYTES: usize = 12;
/// Most acknowledgments carried by one Path, Resv or other message (the rest go in Ack
/// messages).
const MAX_PIGGYBACK: usize = 16;
/// Most acknowledgments and NACKs waiting for one neighbor; more are dropped (the neighbor
/// retransmits, or its summary refresh is NACKed again). A full Ack message's worth goes at
/// the next timeout, without waiting for the ack delay.
const MAX_PENDING_ACKS: usize = 65_536;
/// Acknowledgments one Ack message carries.
const ACKS_PER_MESSAGE: usize = (MAX_MESSAGE_BYTES - COMMON_HEADER_LEN) / ID_OBJECT_BYTES;
/// Ids one Srefresh carries: what fits after the header, a MESSAGE_ID and the list header.
const IDS_PER_SREFRESH: usize = (MAX_MESSAGE_BYTES - COMMON_HEADER_LEN - ID_OBJECT_BYTES - 8) / 4;
/// Most Srefresh messages to one neighbor awaiting their acknowledgment.
const MAX_INFLIGHT: usize = 256;
/// Most NACKed ids waiting for the scan that finds their states.
const MAX_NACKED: usize = 1 << 20;
/// Least time between two scans of the session table for NACKed ids (ms): a neighbor's
/// restart NACKs every id over a refresh period, and one scan serves them all.
const NACK_SCAN_INTERVAL: Ms = 1000;

/// Refresh periods between two looks of the refresh round at a summarized state, on average
/// (see [`Engine::summary_check`]).
const SUMMARY_CHECK_PERIODS: u64 = 16;

/// The Refresh-Reduction-Capable flag, as a byte of the common header's first byte.
const RR_FLAG: u8 = FLAG_REFRESH_REDUCTION_CAPABLE;

/// An index of message ids to what holds them, swept when it has doubled.
#[derive(Debug)]
struct IdIndex<V> {
    map: HashMap<u32, V>,
    /// Sweep when the map holds more than this.
    sweep_at: usize,
}

impl<V> Default for IdIndex<V> {
    fn default() -> Self {
        IdIndex {
            map: HashMap::new(),
            sweep_at: 64,
        }
    }
}

impl<V> IdIndex<V> {
    fn insert(&mut self, id: u32, value: V) -> bool {
        self.map.insert(id, value);
        self.map.len() > self.sweep_at
    }

    fn swept(&mut self) {
        self.sweep_at = 2 * self.map.len() + 64;
    }

    fn heap_bytes(&self) -> usize {
        table_bytes(self.map.capacity(), std::mem::size_of::<(u32, V)>())
    }
}

/// Srefresh ticks per refresh period to a neighbor: each sends the next sixteenth of its
/// summary, so that its summary refreshes are spread over the period instead of all going at
/// once.
const SUMMARY_TICKS: usize = 16;

/// Bytes of a hashbrown table with room for `capacity` entries of `entry` bytes: buckets (a
/// power of two at 7/8 load) of the entry plus a control byte.
fn table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        (capacity * 8 / 7).next_power_of_two() * (entry + 1)
    }
}

/// A message id a taken session held, with the neighbor it is known by: `put` drops what the
/// session no longer holds from that neighbor's index (received ids) or summaries (our ids).
#[derive(Debug, Clone, Copy)]
pub(super) struct HeldId {
    slot: u32,
    ours: bool,
    peer: IpAddr,
    id: u32,
}

/// A sending state's refresh-reduction part (a local sender's Path or the receiver's Resv),
/// for [`Engine::reduction_send`].
struct Sending<'a> {
    id: u32,
    acked: bool,
    answered: &'a mut bool,
    fast: &'a mut super::state::Fast,
}

/// An Srefresh message sent and not acknowledged yet.
#[derive(Debug)]
struct Inflight {
    /// Its own MESSAGE_ID.
    id: u32,
    /// The ids it refreshes.
    ids: Vec<u32>,
    /// The address it is sent from.
    local: IpAddr,
    next_at: Ms,
    /// Retransmissions made.
    made: u8,
}

/// What refresh reduction knows about one neighbor (an IP address we exchange messages with).
#[derive(Debug)]
struct Peer {
    /// Its last message set the Refresh-Reduction-Capable flag.
    capable: bool,
    /// An Srefresh to it went unacknowledged through every retransmission, and it sent
    /// nothing since: no Bundles to it (see [`Engine::bundle_to`]).
    silent: bool,
    /// Its epoch, from the last MESSAGE_ID or MESSAGE_ID_LIST it sent.
    epoch: Option<u32>,
    /// Its message ids that states here hold, with when it last named them (see
    /// [`RxIndex`]). An Srefresh only stamps this index and never touches the sessions: a
    /// session lives far from its neighbors' ids in memory, and at a million sessions each
    /// touch is a cache miss. The index is also the timer of the states it covers (see
    /// [`Engine::sweep_rx`]), and it is exact: an id leaves it when its state goes or takes a
    /// new id (see [`HeldId`]), so an id it does not hold is NACKed.
    rx: RxIndex,
    /// When `rx` is swept next ([`NEVER`]: it is empty).
    rx_sweep_due: Ms,
    /// Our acknowledged ids its states hold, summary-refreshed from here (not from the
    /// states), per address of ours they are sent from (the neighbor checks the source
    /// against the state: a host may use several addresses).
    summarized: Vec<(IpAddr, Summary)>,
    /// Acknowledgments (`false`) and NACKs (`true`) to send: (epoch, id, nack).
    acks: Vec<(u32, u32, bool)>,
    /// The address of ours it knows (the one its messages were sent to, or our states use).
    local: Option<IpAddr>,
    /// When what waits in `acks` must go ([`NEVER`]: nothing waits)...
    due: Ms,
    /// ...and when the next Srefresh tick goes ([`NEVER`]: `summarized` is empty).
    summary_due: Ms,
    inflight: Vec<Inflight>,
}

impl Default for Peer {
    fn default() -> Self {
        Peer {
            capable: false,
            silent: false,
            epoch: None,
            rx: RxIndex::default(),
            rx_sweep_due: NEVER,
            acks: Vec::new(),
            summarized: Vec::new(),
            local: None,
            due: NEVER,
            summary_due: NEVER,
            inflight: Vec::new(),
        }
    }
}

impl Peer {
    fn idle(&self) -> bool {
        self.rx.is_empty()
            && self.acks.is_empty()
            && self.summarized.iter().all(|(_, s)| s.len() == 0)
            && self.inflight.is_empty()
    }
}

/// The engine's refresh-reduction state (see the file documentation).
#[derive(Debug)]
pub(super) struct Reduction {
    /// Our epoch (24 bits, random per engine: a restart is a new epoch).
    epoch: u32,
    next_id: u32,
    /// Our ids sent with ACK_Desired and not acknowledged yet → the session holding them.
    unacked: IdIndex<SessionKey>,
    peers: HashMap<IpAddr, Peer>,
    /// No sweep of idle peers before this.
    next_peer_sweep: Ms,
    /// Our Srefresh messages awaiting their acknowledgment → the neighbor they went to (the
    /// acknowledgment may come from another of its addresses).
    inflight: HashMap<u32, IpAddr>,
    /// NACKed ids of ours not found in `unacked`, for the next scan of the table.
    nacked: HashSet<u32>,
    next_nack_scan: Ms,
    /// Acknowledgments waiting, all neighbors together (skips lookups when none).
    pending_acks: usize,
    /// An index needs sweeping (done in the next timeout, when no session is taken out).
    sweep: bool,
    /// Ids the sessions taken out of the table hold (see [`HeldId`]).
    pub(super) held: Vec<HeldId>,
    /// The earliest deadline of the work above ([`NEVER`]: none).
    due: Ms,
}

impl Reduction {
    pub(super) fn new() -> Self {
        Reduction {
            epoch: new_epoch(),
            next_id: 1,
            unacked: IdIndex::default(),
            peers: HashMap::new(),
            inflight: HashMap::new(),
            next_peer_sweep: 0,
            nacked: HashSet::new(),
            next_nack_scan: 0,
            pending_acks: 0,
            sweep: false,
            held: Vec::new(),
            due: NEVER,
        }
    }

    /// Heap bytes of the indexes and queues (for [`Engine::state_bytes`]).
    pub(super) fn heap_bytes(&self) -> usize {
        let peers = self
            .peers
            .values()
            .map(|p| {
                p.rx.heap_bytes()
                    + p.acks.capacity() * 12
                    + p.summarized
                        .iter()
                        .map(|(_, s)| s.heap_bytes())
                        .sum::<usize>()
                    + p.summarized.capacity() * std::mem::size_of::<(IpAddr, Summary)>()
                    + p.inflight.capacity() * std::mem::size_of::<Inflight>()
                    + p.inflight
                        .iter()
                        .map(|i| i.ids.capacity() * 4)
                        .sum::<usize>()
            })
            .sum::<usize>();
        peers
            + table_bytes(self.peers.capacity(), std::mem::size_of::<(IpAddr, Peer)>())
            + self.held.capacity() * std::mem::size_of::<HeldId>()
            + self.unacked.heap_bytes()
            + table_bytes(
                self.inflight.capacity(),
                std::mem::size_of::<(u32, IpAddr)>(),
            )
            + table_bytes(self.nacked.capacity(), 4)
    }

    fn schedule(&mut self, at: Ms) {
        self.due = self.due.min(at);
    }
}

/// A fresh random 24-bit epoch (from the OS: two starts of an engine must differ, even with
/// the same configuration and RNG seed).
fn new_epoch() -> u32 {
    StdRng::from_os_rng().next_u32() & MAX_EPOCH
}

/// What the first look at a received datagram found.
pub(super) enum Received {
    /// An Ack, Srefresh or invalid RFC 2961 message: handled (or dropped) already.
    Consumed,
    /// A Bundle: its sub-messages, to be handled one by one.
    Bundle(Vec<Range<usize>>),
    /// An RFC 2205 message; what it carries of RFC 2961.
    Message(Scan),
}

/// The RFC 2961 objects of an RFC 2205 message, read from its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Scan {
    id: Option<MessageId>,
    acks: bool,
}

impl Scan {
    pub(super) fn is_empty(&self) -> bool {
        self.id.is_none() && !self.acks
    }
}

/// What a message with a MESSAGE_ID is about, kept while its handler consumes it.
#[derive(Debug)]
pub(super) struct Tag {
    id: MessageId,
    kind: MsgType,
    session: SessionKey,
    sender: Option<std::net::SocketAddr>,
    hop: Option<IpAddr>,
    refresh_ms: Option<u32>,
}

/// Walks the objects of a message (after its header): `(class, c_type, body)`, stopping at
/// the first malformed one (the codec refuses those anyway).
fn objects(payload: &[u8]) -> impl Iterator<Item = (u8, u8, &[u8])> {
    let mut offset = COMMON_HEADER_LEN;
    std::iter::from_fn(move || {
        let header = payload.get(offset..offset + 4)?;
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if len < 4 || len % 4 != 0 {
            return None;
        }
        let body = payload.get(offset + 4..offset + len)?;
        let (class_num, c_type) = (header[2], header[3]);
        offset += len;
        Some((class_num, c_type, body))
    })
    .take(crate::wire::MAX_OBJECTS)
}

fn message_id(body: &[u8]) -> Option<MessageId> {
    let b: &[u8; 8] = body.try_into().ok()?;
    Some(MessageId {
        flags: b[0],
        epoch: u32::from_be_bytes([0, b[1], b[2], b[3]]),
        id: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
    })
}

/// The one's-complement checksum field value for `bytes` (its own field taken as zero).
pub(super) fn fill_checksum(bytes: &mut [u8]) {
    bytes[2] = 0;
    bytes[3] = 0;
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], chunk.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let value = !(sum as u16);
    let value = if value == 0 { 0xffff } else { value };
    bytes[2..4].copy_from_slice(&value.to_be_bytes());
}

/// An object with a MESSAGE_ID layout: `class`, `c_type`, then flags, epoch and id.
fn id_object(class_num: u8, c_type: u8, flags: u8, epoch: u32, id: u32) -> [u8; 12] {
    let mut object = [0u8; 12];
    object[1] = 12;
    object[2] = class_num;
    object[3] = c_type;
    object[4..8].copy_from_slice(&((u32::from(flags) << 24) | (epoch & MAX_EPOCH)).to_be_bytes());
    object[8..12].copy_from_slice(&id.to_be_bytes());
    object
}

/// The sub-messages of a Bundle the codec accepted (after its optional INTEGRITY).
fn bundled(payload: &[u8]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut offset = COMMON_HEADER_LEN;
    if let Some(h) = payload.get(offset..offset + 4) {
        if h[0] >> 4 != RSVP_VERSION && h[2] == class::INTEGRITY {
            offset += usize::from(u16::from_be_bytes([h[0], h[1]]));
        }
    }
    while let Some(h) = payload.get(offset..offset + 8) {
        let len = usize::from(u16::from_be_bytes([h[6], h[7]]));
        if len < COMMON_HEADER_LEN || offset + len > payload.len() {
            break;
        }
        ranges.push(offset..offset + len);
        offset += len;
    }
    ranges
}

impl Engine {
    fn ack_delay_ms(&self) -> Ms {
        duration_ms_ceil(self.config.ack_delay.min(MAX_ACK_DELAY))
    }

    /// The delay before Srefresh retransmission `made + 1`: `Rf · factor^made`.
    pub(super) fn retransmit_delay(&self, made: u8) -> Ms {
        let factor = u64::from(self.config.retransmit_factor.max(1));
        let mut delay = duration_ms_ceil(self.config.fast_retransmit_initial);
        for _ in 0..made {
            delay = delay.saturating_mul(factor);
        }
        delay.min(u64::from(u32::MAX))
    }

    pub(super) fn retry_limit(&self) -> u8 {
        u8::try_from(self.config.fast_retransmit_count).unwrap_or(u8::MAX)
    }

    /// How long the refresh round (`round.rs`) takes to look in on a summarized state again:
    /// its refreshes go in its neighbor's Srefresh ticks, and the look only puts its id back in
    /// the neighbor's summary should it be missing there (every change that takes it out
    /// also gives the state a new trigger message, so that is a safety net, not a path).
    pub(super) fn summary_check(&self) -> Ms {
        u64::from(self.refresh_ms_u32()).saturating_mul(SUMMARY_CHECK_PERIODS)
    }

    /// Whether `id` is in a summary of ours to `peer` (for tests).
    #[cfg(test)]
    pub(super) fn in_summary(&self, peer: IpAddr, id: u32) -> bool {
        self.reduction
            .peers
            .get(&peer)
            .is_some_and(|p| p.summarized.iter().any(|(_, s)| s.iter().any(|i| i == id)))
    }

    /// Takes `id` out of our summaries, as if it had been lost (for tests).
    #[cfg(test)]
    pub(super) fn lose_from_summaries(&mut self, id: u32) {
        for p in self.reduction.peers.values_mut() {
            for (_, summary) in &mut p.summarized {
                summary.remove(id);
            }
        }
    }

    /// A new Message_Identifier (increasing within the epoch; a wrap starts a new epoch).
    pub(super) fn new_message_id(&mut self) -> u32 {
        let r = &mut self.reduction;
        let id = r.next_id;
        r.next_id = id.wrapping_add(1);
        if r.next_id == 0 {
            r.epoch = (r.epoch + 1) & MAX_EPOCH;
            r.next_id = 1;
        }
        id
    }

    /// The peer entry of `addr`, created if the table has room (bounded by
    /// [`NeighborLimits::max_neighbors`](super::NeighborLimits::max_neighbors); idle entries
    /// are forgotten to make room).
    fn peer_mut(&mut self, addr: IpAddr, now: Ms) -> Option<&mut Peer> {
        let limit = self.config.neighbor_limits.max_neighbors;
        let r = &mut self.reduction;
        if !r.peers.contains_key(&addr) && r.peers.len() >= limit {
            if now < r.next_peer_sweep {
                return None;
            }
            r.peers.retain(|_, p| !p.idle() || p.capable);
            if r.peers.len() >= limit {
                r.peers.retain(|_, p| !p.idle());
            }
            if r.peers.len() >= limit {
                r.next_peer_sweep = now.saturating_add(1000);
                return None;
            }
        }
        Some(r.peers.entry(addr).or_default())
    }

    /// Whether `addr` is known to be Refresh-Reduction-Capable (refresh reduction on).
    pub(super) fn capable(&self, addr: IpAddr) -> bool {
        self.config.refresh_reduction && self.reduction.peers.get(&addr).is_some_and(|p| p.capable)
    }

    /// Whether Bundles may go to `addr`: it is capable and not [`Peer::silent`].
    pub(super) fn bundle_to(&self, addr: IpAddr) -> bool {
        self.config.refresh_reduction
            && self
                .reduction
                .peers
                .get(&addr)
                .is_some_and(|p| p.capable && !p.silent)
    }

    /// Whether a sending state's message waits for its acknowledgment (it was sent with id
    /// `tx_id` to a capable `peer`): then only the acknowledgment stops its retransmissions.
    pub(super) fn awaiting_ack(&self, tx_id: u32, tx_acked: bool, peer: IpAddr) -> bool {
        tx_id != 0
            && !tx_acked
            && self.reduction.unacked.map.contains_key(&tx_id)
            && self.capable(peer)
    }

    /// Whether the receiver's Resv waits for its acknowledgment (see [`Self::awaiting_ack`]).
    pub(super) fn resv_awaiting_ack(&self, session: &Session) -> bool {
        let Some(recv) = session.recv.as_deref() else {
            return false;
        };
        let mut phops = session.psbs.iter().map(|p| p.phop.addr);
        let Some(phop) = phops.next() else {
            return false;
        };
        phops.all(|p| p == phop) && self.awaiting_ack(recv.tx_id, recv.tx_acked, phop)
    }

    /// Queues an acknowledgment (or NACK) for `peer`, due after the ack delay.
    fn queue_ack(&mut self, peer: IpAddr, local: IpAddr, epoch: u32, id: u32, nack: bool, now: Ms) {
        let due = now.saturating_add(self.ack_delay_ms());
        let Some(p) = self.peer_mut(peer, now) else {
            return;
        };
        if p.acks.len() >= MAX_PENDING_ACKS {
            return;
        }
        if !local.is_unspecified() {
            p.local = Some(local);
        }
        p.acks.push((epoch, id, nack));
        // A full Ack message waits for nothing more.
        let due = if p.acks.len() >= ACKS_PER_MESSAGE {
            now
        } else {
            due
        };
        p.due = p.due.min(due);
        self.reduction.pending_acks += 1;
        self.reduction.schedule(due);
    }

    // --- receiving ---------------------------------------------------------------------

    /// The first look at a datagram that passed the INTEGRITY gate (refresh reduction on):
    /// notes its sender's capability, handles Ack and Srefresh messages, splits Bundles and
    /// reads the RFC 2961 objects of any other message.
    pub(super) fn reduction_receive(&mut self, now: Instant, datagram: &Incoming<'_>) -> Received {
        let payload = datagram.payload;
        let (Some(&first), Some(&kind)) = (payload.first(), payload.get(1)) else {
            return Received::Message(Scan::default());
        };
        let source = datagram.source;
        let capable = first & RR_FLAG != 0;
        let ms = self.clock.ms(now);
        if let Some(p) = self.reduction.peers.get_mut(&source) {
            p.silent = false;
        }
        let known = self.reduction.peers.get(&source).map(|p| p.capable);
        // A Bundle's own header is not noted: it may be unsigned (its sub-messages carry the
        // INTEGRITY, see `bundle.rs`), and each sub-message carries the flag anyway.
        let bundle = kind == MsgType::Bundle.number();
        if !bundle && known != Some(capable) && (capable || known.is_some()) {
            if let Some(p) = self.peer_mut(source, ms) {
                p.capable = capable;
            }
            if known == Some(true) {
                self.downgraded(source, ms);
            }
        }
        match MsgType::from_number(kind) {
            Some(MsgType::Bundle) => match Message::decode(payload) {
                Ok(_) => {
                    self.stats.bundles_received += 1;
                    Received::Bundle(bundled(payload))
                }
                Err(error) => {
                    self.stats.malformed += 1;
                    tracing::debug!(%source, %error, "malformed bundle");
                    Received::Consumed
                }
            },
            Some(MsgType::Ack | MsgType::Srefresh) => {
                match Message::decode(payload) {
                    Ok(message) => self.on_reduction_message(ms, datagram, &message),
                    Err(error) => {
                        self.stats.malformed += 1;
                        tracing::debug!(%source, %error, "malformed ack or srefresh");
                    }
                }
                Received::Consumed
            }
            _ => {
                let mut scan = Scan::default();
                for (class_num, c_type, body) in objects(payload) {
                    match (class_num, c_type) {
                        (class::MESSAGE_ID, 1) => scan.id = message_id(body),
                        (class::MESSAGE_ID_ACK, 1 | 2) => scan.acks = true,
                        _ => {}
                    }
                }
                Received::Message(scan)
            }
        }
    }

    /// Before a decoded RFC 2205 message is handled: its acknowledgments are processed, its
    /// MESSAGE_ID's epoch noted, and `false` when it is older than the last message for the
    /// same state (out of order: dropped). Returns what to record after the handler ran.
    pub(super) fn reduction_admit(
        &mut self,
        now: Instant,
        datagram: &Incoming<'_>,
        scan: Scan,
        msg: &Msg,
    ) -> Result<Option<Tag>, ()> {
        let ms = self.clock.ms(now);
        let source = datagram.source;
        if scan.acks {
            for (class_num, c_type, body) in objects(datagram.payload) {
                if class_num == class::MESSAGE_ID_ACK {
                    if let Some(ack) = message_id(body) {
                        self.on_ack(ms, source, ack, c_type == 2);
                    }
                }
            }
        }
        let Some(id) = scan.id else {
            return Ok(None);
        };
        self.note_epoch(source, id.epoch, ms);
        let last = self.last_rx_id(msg, source);
        if last != 0 && id.id < last {
            self.stats.out_of_order += 1;
            tracing::debug!(kind = ?msg.kind, session = ?msg.session, %source, id = id.id, last, "out-of-order message dropped");
            // Still acknowledged: received, so its sender may stop retransmitting it.
            if id.flags & MESSAGE_ID_FLAG_ACK_DESIRED != 0 {
                self.queue_ack(source, datagram.destination, id.epoch, id.id, false, ms);
            }
            return Err(());
        }
        Ok(Some(Tag {
            id,
            kind: msg.kind,
            session: msg.session,
            sender: msg.sender,
            hop: msg.hop.map(|h| h.addr),
            refresh_ms: msg.refresh_ms,
        }))
    }

    /// After the handler ran: the state the message set up or refreshed records its id (and
    /// the neighbor's index points at it), and the message is acknowledged if asked.
    pub(super) fn reduction_after(&mut self, now: Instant, datagram: &Incoming<'_>, tag: Tag) {
        let ms = self.clock.ms(now);
        let source = datagram.source;
        let Tag {
            id,
            kind,
            session,
            sender,
            hop,
            refresh_ms,
        } = tag;
        let deci = refresh_ms.map_or(0, |r| {
            let r = r.clamp(
                super::MIN_REFRESH_PERIOD.as_millis() as u32,
                super::MAX_REFRESH_PERIOD.as_millis() as u32,
            );
            u16::try_from(r.div_ceil(100)).unwrap_or(u16::MAX)
        });
        // The state the message is about records its id, and the neighbor's index covers
        // it from now on: its deadline lives there (`expires_at` is NEVER while covered, see
        // `sweep_rx`), so that summary refreshes need not visit it. An id it held before
        // leaves the index (a summary refresh of it refreshes nothing now).
        let slot = match kind {
            MsgType::Path | MsgType::Resv => self.lookup(&session),
            _ => None,
        };
        let life = u32::try_from(self.lifetime(u32::from(deci.max(1)) * 100)).unwrap_or(u32::MAX);
        let covered = slot.is_some() && self.peer_mut(source, ms).is_some();
        let mut replaced: Option<u32> = None;
        let mut found = false;
        if let Some(s) = slot
            .and_then(|slot| self.sessions.get_mut(slot as usize))
            .and_then(Option::as_mut)
        {
            let mut record = |rx_id: &mut u32, rx_deci: &mut u16, expires_at: &mut Ms| {
                if *rx_id != 0 && *rx_id != id.id {
                    replaced = Some(*rx_id);
                }
                *rx_id = id.id;
                *rx_deci = deci;
                if covered {
                    *expires_at = NEVER;
                }
                found = true;
            };
            if kind == MsgType::Path {
                for p in s.psbs.iter_mut().filter(|p| Some(p.sender) == sender) {
                    record(&mut p.rx_id, &mut p.rx_deci, &mut p.expires_at);
                }
            } else {
                for r in s.rsbs.iter_mut().filter(|r| Some(r.nhop.addr) == hop) {
                    record(&mut r.rx_id, &mut r.rx_deci, &mut r.expires_at);
                }
            }
        }
        if let (Some(slot), true, true) = (slot, found, covered) {
            if let Some(p) = self.reduction.peers.get_mut(&source) {
                if let Some(old) = replaced {
                    p.rx.remove(old, Some(slot));
                }
                p.rx.insert(RxEntry {
                    id: id.id,
                    slot,
                    stamp: stamp_of(ms),
                    life,
                });
                // The sweep must come before this state's deadline (a quarter of the
                // shortest lifetime apart).
                let sweep = ms.saturating_add(u64::from(p.rx.min_life() / 4).max(1));
                if sweep < p.rx_sweep_due {
                    p.rx_sweep_due = sweep;
                    self.reduction.schedule(sweep);
                }
            }
        }
        if id.flags & MESSAGE_ID_FLAG_ACK_DESIRED != 0 {
            self.queue_ack(source, datagram.destination, id.epoch, id.id, false, ms);
        }
    }

    /// The last id recorded for the state `msg` is about (0: none). A tear older than it (a
    /// retransmission overtaken by a new Path or Resv) must not remove the new state. Only an
    /// id still in the neighbor's index counts: after the neighbor's restart (a new epoch)
    /// the index is empty, and its new ids, which start again, must not be taken for old
    /// ones.
    fn last_rx_id(&self, msg: &Msg, source: IpAddr) -> u32 {
        let Some(index) = self.reduction.peers.get(&source).map(|p| &p.rx) else {
            return 0;
        };
        let Some(session) = self
            .lookup(&msg.session)
            .and_then(|slot| self.sessions.get(slot as usize)?.as_ref())
        else {
            return 0;
        };
        let current = |id: &u32| index.get(*id).is_some();
        match msg.kind {
            MsgType::Path | MsgType::PathTear => session
                .psbs
                .iter()
                .filter(|p| Some(p.sender) == msg.sender)
                .map(|p| p.rx_id)
                .filter(current)
                .max()
                .unwrap_or(0),
            MsgType::Resv | MsgType::ResvTear => session
                .rsbs
                .iter()
                .filter(|r| msg.hop.is_some_and(|h| h.addr == r.nhop.addr))
                .filter(|r| from_neighbor(source, r.nhop.addr))
                .map(|r| r.rx_id)
                .filter(current)
                .max()
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Notes a neighbor's epoch: a new one means it restarted, and every id it sent before
    /// means nothing any more. Its index is emptied (no session is visited: their states
    /// keep their old ids, which no index holds now, so nothing refreshes them but the new
    /// messages, which record new ids).
    fn note_epoch(&mut self, source: IpAddr, epoch: u32, now: Ms) {
        let Some(p) = self.peer_mut(source, now) else {
            return;
        };
        match p.epoch {
            Some(e) if e == epoch => {}
            None => p.epoch = Some(epoch),
            Some(_) => {
                p.epoch = Some(epoch);
                let old = std::mem::take(&mut p.rx);
                p.rx_sweep_due = NEVER;
                self.stats.neighbor_restarts += 1;
                tracing::debug!(%source, epoch, "neighbor restarted (new epoch): its message ids are void");
                // Their states keep the deadlines the index gave them, on their own timers
                // now: the neighbor's new messages refresh them (with new ids), or they
                // expire.
                for entry in old.entries() {
                    self.uncover(entry, now);
                }
            }
        }
    }

    /// The state holding `entry`'s id is no longer covered by its neighbor's index: its own
    /// deadline (the entry's) goes back on its session's timer.
    fn uncover(&mut self, entry: &RxEntry, now: Ms) {
        let deadline = entry.deadline(now);
        let Some(session) = self
            .sessions
            .get_mut(entry.slot as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        let mut moved = false;
        for p in session.psbs.iter_mut().filter(|p| p.rx_id == entry.id) {
            if p.expires_at == NEVER {
                p.expires_at = deadline;
                moved = true;
            }
        }
        for r in session.rsbs.iter_mut().filter(|r| r.rx_id == entry.id) {
            if r.expires_at == NEVER {
                r.expires_at = deadline;
                moved = true;
            }
        }
        if moved {
            self.refreshed_in_place(entry.slot, deadline);
        }
    }

    /// Sweeps `addr`'s index: the states whose deadline comes before the next sweep go back
    /// on their own timers (to expire on time, or to be covered again by `catch_up` if a
    /// summary refresh comes first). The sweep runs every quarter of the shortest lifetime
    /// it covers, so no deadline passes between two sweeps unseen; in a steady state it finds
    /// nothing, having read the index in order.
    fn sweep_rx(&mut self, addr: IpAddr, now: Ms) {
        let Some(p) = self.reduction.peers.get_mut(&addr) else {
            return;
        };
        let interval = u64::from(p.rx.min_life() / 4).max(1);
        let next = now.saturating_add(interval);
        let mut due = Vec::new();
        // Deadlines before the sweep after next would be missed: take those now.
        p.rx.sweep(now, next.saturating_add(interval), &mut due);
        p.rx_sweep_due = if p.rx.is_empty() {
            NEVER
        } else {
            // The interval may have grown (the shortest lifetime went).
            now.saturating_add(u64::from(p.rx.min_life() / 4).max(1))
                .min(next)
        };
        let at = p.rx_sweep_due;
        self.reduction.schedule(at);
        for entry in &due {
            self.uncover(entry, now);
        }
    }

    /// An Ack or Srefresh message.
    fn on_reduction_message(&mut self, now: Ms, datagram: &Incoming<'_>, message: &Message) {
        let source = datagram.source;
        for (ack, m) in message.message_id_acks() {
            self.on_ack(now, source, *m, !ack);
        }
        if message.msg_type() != MsgType::Srefresh {
            return;
        }
        self.stats.srefresh_received += 1;
        if let Some(id) = message.message_id() {
            self.note_epoch(source, id.epoch, now);
            if id.flags & MESSAGE_ID_FLAG_ACK_DESIRED != 0 {
                self.queue_ack(source, datagram.destination, id.epoch, id.id, false, now);
            }
        }
        // NACKs answer ids we do not know; never more bytes of them than the Srefresh had.
        let mut nack_budget = datagram.payload.len() / ID_OBJECT_BYTES;
        let mut unknown: Vec<(u32, u32)> = Vec::new();
        for object in &message.objects {
            let Object::MessageIdList(list) = object else {
                continue;
            };
            self.note_epoch(source, list.epoch, now);
            // Unicast sessions: the source-list forms name the same ids (the sources matter
            // only for multicast Path state, which a host does not keep).
            let ids: Box<dyn Iterator<Item = u32> + '_> = match &list.entries {
                MessageIdEntries::Ids(ids) => Box::new(ids.iter().copied()),
                MessageIdEntries::Ipv4Sources(v) => Box::new(v.iter().map(|(id, _)| *id)),
                MessageIdEntries::Ipv6Sources(v) => Box::new(v.iter().map(|(id, _)| *id)),
                MessageIdEntries::Ipv4Multicast(v) => Box::new(v.iter().map(|e| e.0)),
                MessageIdEntries::Ipv6Multicast(v) => Box::new(v.iter().map(|e| e.0)),
            };
            // One stamp per id in the neighbor's index, nothing else: the index is the
            // timer of the states it covers (see [`Peer::rx`]). The ids come in increasing
            // order, so they are matched in one forward walk.
            let mut missing: Vec<u32> = Vec::new();
            let refreshed_ids = match self.reduction.peers.get_mut(&source) {
                Some(p) => p.rx.stamp_all(ids, now, &mut missing),
                None => {
                    missing.extend(ids);
                    0
                }
            };
            unknown.extend(missing.into_iter().map(|id| (list.epoch, id)));
            self.stats.srefresh_ids_refreshed += refreshed_ids;
        }
        for (epoch, id) in unknown {
            if nack_budget == 0 {
                break;
            }
            nack_budget -= 1;
            self.queue_ack(source, datagram.destination, epoch, id, true, now);
        }
    }

    /// A MESSAGE_ID_ACK (`nack == false`) or MESSAGE_ID_NACK for one of our ids.
    fn on_ack(&mut self, now: Ms, source: IpAddr, ack: MessageId, nack: bool) {
        tracing::trace!(%source, id = ack.id, nack, "message id acknowledgment");
        if ack.epoch != self.reduction.epoch & MAX_EPOCH {
            self.stats.ignored += 1;
            return;
        }
        if nack {
            self.stats.nacks_received += 1;
        }
        // A tear, error or ResvConf of ours (`reliable.rs`)? A NACK ends it too: the neighbor
        // holds nothing it is about.
        if self.reliable_acked(ack.id, nack) {
            return;
        }
        // An Srefresh of ours? (Its acknowledgment may come from another address of the
        // neighbor it went to.)
        if let Some(peer) = self.reduction.inflight.remove(&ack.id) {
            if let Some(p) = self.reduction.peers.get_mut(&peer) {
                if let Some(i) = p.inflight.iter().position(|f| f.id == ack.id) {
                    p.inflight.swap_remove(i);
                }
            }
            self.stats.acks_received += u64::from(!nack);
            return;
        }
        let key = self.reduction.unacked.map.remove(&ack.id);
        let slot = key.and_then(|key| self.lookup(&key));
        match slot {
            Some(slot) => {
                if nack || self.acked(now, slot, ack.id) {
                    self.stats.acks_received += u64::from(!nack);
                }
                if nack {
                    self.renew(now, slot, &[ack.id]);
                }
            }
            None if nack => {
                // Acknowledged before and summary-refreshed since: found by the next scan.
                if self.reduction.nacked.len() < MAX_NACKED {
                    self.reduction.nacked.insert(ack.id);
                    let at = now.max(self.reduction.next_nack_scan);
                    self.reduction.schedule(at);
                }
            }
            None => self.stats.ignored += 1,
        }
    }

    /// Our id `id` in the session at `slot` was acknowledged: its retransmissions stop and
    /// its refreshes may be summarized. `false` if no state holds it any more.
    fn acked(&mut self, now: Ms, slot: u32, id: u32) -> bool {
        let Some(mut session) = self.take(slot) else {
            return false;
        };
        let refresh_at = self.steady_refresh(now);
        let mut found = false;
        for local in session.senders.iter_mut().filter(|l| l.tx_id == id) {
            local.tx_acked = true;
            answer(
                &mut local.answered,
                &mut local.fast,
                &mut local.next_at,
                refresh_at,
            );
            found = true;
        }
        let request = session.merged_request();
        if let Some(recv) = session.recv.as_deref_mut().filter(|r| r.tx_id == id) {
            recv.tx_acked = true;
            // A Resv that asks for a confirmation is answered by the ResvConf: until it
            // comes, the Resv is retransmitted (a ResvConf is retransmitted too, but only to
            // a capable neighbor, and not after its retry limit).
            if !request.is_some_and(|r| r.confirm && !recv.confirmed) {
                answer(
                    &mut recv.answered,
                    &mut recv.fast,
                    &mut recv.next_at,
                    refresh_at,
                );
            }
            found = true;
        }
        self.put(slot, session);
        found
    }

    /// NACKed ids of the session at `slot`: their states get new ids and their full
    /// messages go now.
    fn renew(&mut self, now: Ms, slot: u32, ids: &[u32]) {
        let Some(mut session) = self.take(slot) else {
            return;
        };
        for index in 0..session.senders.len() {
            if ids.contains(&session.senders[index].tx_id) {
                self.reduction_trigger_sender(&mut session.senders[index]);
                self.send_path(&mut session, index, now);
            }
        }
        if session
            .recv
            .as_deref()
            .is_some_and(|r| ids.contains(&r.tx_id))
        {
            self.reduction_trigger_recv(&mut session);
            self.send_resvs(&mut session, now);
        }
        self.put(slot, session);
    }

    /// `source` stopped being Refresh-Reduction-Capable (it restarted without it): the states
    /// its Srefresh ticks refreshed get their full messages again, now (through the NACK
    /// scan, which finds them and renews them).
    fn downgraded(&mut self, source: IpAddr, now: Ms) {
        let Some(p) = self.reduction.peers.get_mut(&source) else {
            return;
        };
        let summarized = std::mem::take(&mut p.summarized);
        p.summary_due = NEVER;
        let nacked = &mut self.reduction.nacked;
        for (_, summary) in summarized {
            let room = MAX_NACKED.saturating_sub(nacked.len());
            nacked.extend(summary.iter().take(room));
        }
        tracing::debug!(%source, "neighbor no longer refresh-reduction capable: full refreshes");
        let at = now.max(self.reduction.next_nack_scan);
        self.reduction.schedule(at);
    }

    /// A session is taken out of the table: notes the message ids its states hold (see
    /// [`HeldId`]).
    pub(super) fn reduction_taken(&mut self, slot: u32, session: &Session) {
        let held = &mut self.reduction.held;
        for p in session.psbs.iter().filter(|p| p.rx_id != 0) {
            for peer in [p.phop.addr, p.sender.ip()] {
                held.push(HeldId {
                    slot,
                    ours: false,
                    peer,
                    id: p.rx_id,
                });
            }
        }
        for r in session.rsbs.iter().filter(|r| r.rx_id != 0) {
            held.push(HeldId {
                slot,
                ours: false,
                peer: r.nhop.addr,
                id: r.rx_id,
            });
        }
        let destination = session.key.destination.ip();
        for l in session.senders.iter().filter(|l| l.tx_acked) {
            held.push(HeldId {
                slot,
                ours: true,
                peer: destination,
                id: l.tx_id,
            });
        }
        if let Some(recv) = session.recv.as_deref().filter(|r| r.tx_acked) {
            for p in session.psbs.iter() {
                held.push(HeldId {
                    slot,
                    ours: true,
                    peer: p.phop.addr,
                    id: recv.tx_id,
                });
            }
        }
    }

    /// The session at `slot` goes back into the table (or is deleted, when empty): the ids
    /// it held and holds no more leave the neighbors' indexes and summaries.
    pub(super) fn reduction_put(&mut self, slot: u32, session: &Session) {
        let mut i = 0;
        while i < self.reduction.held.len() {
            let h = self.reduction.held[i];
            if h.slot != slot {
                i += 1;
                continue;
            }
            self.reduction.held.swap_remove(i);
            if h.ours {
                // The Resv goes on only while the neighbor's path state and a request do.
                let holds = session
                    .senders
                    .iter()
                    .any(|l| l.tx_acked && l.tx_id == h.id)
                    || (session
                        .recv
                        .as_deref()
                        .is_some_and(|r| r.tx_acked && r.tx_id == h.id)
                        && session.psbs.iter().any(|p| p.phop.addr == h.peer)
                        && session.has_receivers());
                if !holds {
                    self.unsummarize(h.peer, h.id);
                }
            } else {
                let holds = session.psbs.iter().any(|p| p.rx_id == h.id)
                    || session.rsbs.iter().any(|r| r.rx_id == h.id);
                if !holds {
                    if let Some(p) = self.reduction.peers.get_mut(&h.peer) {
                        p.rx.remove(h.id, Some(slot));
                    }
                }
            }
        }
    }

    /// Before the session's timers run: a received state its neighbor's index handed back
    /// (see [`Self::sweep_rx`]) and that a summary refresh has stamped since is covered by
    /// the index again, if the next sweep comes before its deadline; else its deadline
    /// catches up with the stamp (if later).
    pub(super) fn catch_up(&mut self, slot: u32, now: Ms) {
        let peers = &self.reduction.peers;
        let Some(session) = self
            .sessions
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        let cover = |id: u32, addrs: [IpAddr; 2], expires_at: &mut Ms| {
            if id == 0 || *expires_at == NEVER {
                return;
            }
            let Some((entry, sweep)) = addrs.iter().find_map(|a| {
                let p = peers.get(a)?;
                Some((p.rx.get(id).filter(|e| e.slot == slot)?, p.rx_sweep_due))
            }) else {
                return;
            };
            // Covered again only by a stamp newer than the state's own refresh (a full
            // message without an id, from a neighbor that stopped using them, refreshes the
            // state but not the stamp).
            let deadline = entry.deadline(now);
            if deadline >= *expires_at && deadline > sweep {
                *expires_at = NEVER;
            } else {
                *expires_at = (*expires_at).max(deadline);
            }
        };
        for p in session.psbs.iter_mut() {
            cover(p.rx_id, [p.phop.addr, p.sender.ip()], &mut p.expires_at);
        }
        for r in session.rsbs.iter_mut() {
            cover(r.rx_id, [r.nhop.addr; 2], &mut r.expires_at);
        }
    }

    /// The deadline of a received state (for inspection): its own, or its neighbor's
    /// index's while the index covers it.
    pub(super) fn rx_expiry(
        &self,
        now: Ms,
        slot: u32,
        rx_id: u32,
        peers: [IpAddr; 2],
        expires_at: Ms,
    ) -> Ms {
        if expires_at != NEVER || rx_id == 0 {
            return expires_at;
        }
        peers
            .iter()
            .find_map(|a| {
                self.reduction
                    .peers
                    .get(a)?
                    .rx
                    .get(rx_id)
                    .filter(|e| e.slot == slot)
            })
            .map_or(expires_at, |e| e.deadline(now))
    }

    // --- sending -----------------------------------------------------------------------

    /// A local sender's Path changed (or is new, or was NACKed): a new id, unacknowledged,
    /// retransmitted until answered.
    pub(super) fn reduction_trigger_sender(&mut self, local: &mut super::state::LocalSender) {
        if !self.config.refresh_reduction {
            return;
        }
        self.reduction.unacked.map.remove(&local.tx_id);
        local.tx_id = self.new_message_id();
        local.tx_acked = false;
        local.answered = false;
        local.fast = self.fast_start();
    }

    /// The receiver's Resv changed (or was NACKed): a new id, unacknowledged, retransmitted
    /// until answered.
    pub(super) fn reduction_trigger_recv(&mut self, session: &mut Session) {
        if !self.config.refresh_reduction || session.recv.is_none() {
            return;
        }
        let id = self.new_message_id();
        let fast = self.fast_start();
        if let Some(recv) = session.recv.as_deref_mut() {
            self.reduction.unacked.map.remove(&recv.tx_id);
            recv.tx_id = id;
            recv.tx_acked = false;
            recv.answered = false;
            recv.fast = fast;
        }
    }

    /// Sending local sender `index`'s Path: `None` when its refresh was summarized (queued
    /// for an Srefresh), else the Message_Identifier the full Path carries (0: none).
    pub(super) fn reduction_path(
        &mut self,
        session: &mut Session,
        index: usize,
        now: Ms,
    ) -> Option<u32> {
        let destination = session.key.destination.ip();
        if !self.capable(destination) {
            return Some(0);
        }
        let key = session.key;
        let local = session.senders.get_mut(index)?;
        let sending = Sending {
            id: local.tx_id,
            acked: local.tx_acked,
            answered: &mut local.answered,
            fast: &mut local.fast,
        };
        self.reduction_send(sending, destination, local.sender.ip(), key, now)
    }

    /// Sending the receiver's Resv to `phops` previous hops: as [`Self::reduction_path`]. Only
    /// a Resv to a single previous hop is acknowledged and summarized (one id per state).
    pub(super) fn reduction_resv(
        &mut self,
        session: &mut Session,
        phop: Option<IpAddr>,
        now: Ms,
    ) -> Option<u32> {
        let Some(phop) = phop.filter(|p| self.capable(*p)) else {
            return Some(0);
        };
        let key = session.key;
        let recv = session.recv.as_deref_mut()?;
        let sending = Sending {
            id: recv.tx_id,
            acked: recv.tx_acked,
            answered: &mut recv.answered,
            fast: &mut recv.fast,
        };
        self.reduction_send(sending, phop, key.destination.ip(), key, now)
    }

    /// A Path's or Resv's send to capable `peer` from `from`: summarized once acknowledged
    /// and refreshed (`None`); else the full message with its id, recorded as awaiting its
    /// acknowledgment.
    fn reduction_send(
        &mut self,
        state: Sending<'_>,
        peer: IpAddr,
        from: IpAddr,
        key: SessionKey,
        now: Ms,
    ) -> Option<u32> {
        let Sending {
            id,
            acked,
            answered,
            fast,
        } = state;
        if id == 0 {
            return Some(0);
        }
        let refresh = *answered || fast.left == 0;
        if acked && refresh {
            self.summarize(peer, from, id, now);
            return None;
        }
        if !acked && *answered && fast.left == 0 {
            // A refresh of an id never acknowledged (sent before the neighbor was known to
            // be capable, or every attempt lost): retransmitted until it is.
            *answered = false;
            *fast = self.fast_start();
        }
        if self.reduction.unacked.insert(id, key) {
            self.reduction.sweep = true;
        }
        Some(id)
    }

    /// The time between two Srefresh ticks to a neighbor (each sends the next
    /// `1/`[`SUMMARY_TICKS`] of its summary): uniform in `[R/32, 3R/32]`, so that each id is
    /// refreshed every `R` on average, the neighbors' ticks do not synchronize, and no
    /// interval exceeds `3R/2` (the lifetime the neighbor gives the state assumes that bound).
    fn summary_tick(&mut self) -> Ms {
        let r = u64::from(self.refresh_ms_u32());
        let tick = (r / SUMMARY_TICKS as u64).max(1);
        self.rng.random_range(tick / 2..=tick + tick / 2).max(1)
    }

    /// Our acknowledged `id`, sent from `local`, is refreshed by `peer`'s Srefresh ticks from
    /// now on (idempotent).
    fn summarize(&mut self, peer: IpAddr, local: IpAddr, id: u32, now: Ms) {
        let tick = self.summary_tick();
        let Some(p) = self.peer_mut(peer, now) else {
            return;
        };
        let index = match p.summarized.iter().position(|(from, _)| *from == local) {
            Some(i) => i,
            None => {
                p.summarized.push((local, Summary::default()));
                p.summarized.len() - 1
            }
        };
        p.summarized[index].1.insert(id);
        if p.summary_due == NEVER {
            p.summary_due = now.saturating_add(tick);
            let at = p.summary_due;
            self.reduction.schedule(at);
        }
    }

    /// `id` no longer names state `peer` holds from us: its summary refreshes stop.
    fn unsummarize(&mut self, peer: IpAddr, id: u32) {
        if let Some(p) = self.reduction.peers.get_mut(&peer) {
            for (_, summary) in &mut p.summarized {
                summary.remove(id);
            }
        }
    }

    /// Adds the Refresh-Reduction-Capable flag, the MESSAGE_ID `message_id` (0: none; with
    /// ACK_Desired) and acknowledgments waiting for `destination` to an encoded message
    /// (before it is signed).
    pub(super) fn reduction_decorate(
        &mut self,
        message_id: u32,
        destination: IpAddr,
        payload: &mut Vec<u8>,
    ) {
        if !self.config.refresh_reduction || payload.len() < COMMON_HEADER_LEN {
            return;
        }
        payload[0] |= RR_FLAG;
        let mut objects: Vec<u8> = Vec::new();
        if self.reduction.pending_acks > 0 {
            if let Some(p) = self.reduction.peers.get_mut(&destination) {
                let take = p.acks.len().min(MAX_PIGGYBACK);
                for (epoch, id, nack) in p.acks.drain(..take) {
                    let c_type = if nack { 2 } else { 1 };
                    objects.extend(id_object(class::MESSAGE_ID_ACK, c_type, 0, epoch, id));
                    if nack {
                        self.stats.nacks_sent += 1;
                    } else {
                        self.stats.acks_sent += 1;
                    }
                }
                self.reduction.pending_acks -= take;
            }
        }
        if message_id != 0 {
            let epoch = self.reduction.epoch;
            objects.extend(id_object(
                class::MESSAGE_ID,
                1,
                MESSAGE_ID_FLAG_ACK_DESIRED,
                epoch,
                message_id,
            ));
        }
        if objects.is_empty() {
            fill_checksum(payload);
            return;
        }
        let len = payload.len() + objects.len();
        let Ok(len16) = u16::try_from(len) else {
            fill_checksum(payload);
            return;
        };
        payload.splice(COMMON_HEADER_LEN..COMMON_HEADER_LEN, objects);
        payload[6..8].copy_from_slice(&len16.to_be_bytes());
        fill_checksum(payload);
    }

    /// The next instant refresh reduction has work due.
    pub(super) fn reduction_due(&self) -> Option<Instant> {
        if !self.config.refresh_reduction || self.reduction.due == NEVER {
            return None;
        }
        self.clock.instant(self.reduction.due)
    }

    /// Sends what is due: acknowledgments and NACKs (in Ack messages, or in the Srefresh
    /// going to the same neighbor), summary refreshes, Srefresh retransmissions; finds the
    /// states of NACKed ids; sweeps the indexes.
    pub(super) fn reduction_timeout(&mut self, now: Instant) {
        if !self.config.refresh_reduction {
            return;
        }
        let now = self.clock.ms(now);
        if self.reduction.sweep {
            self.reduction.sweep = false;
            self.sweep_indexes();
        }
        if self.reduction.due > now {
            return;
        }
        self.reduction.due = NEVER;
        if !self.reduction.nacked.is_empty() {
            if now >= self.reduction.next_nack_scan {
                self.reduction.next_nack_scan = now.saturating_add(NACK_SCAN_INTERVAL);
                self.scan_nacked(now);
            } else {
                let at = self.reduction.next_nack_scan;
                self.reduction.schedule(at);
            }
        }
        let due: Vec<IpAddr> = self
            .reduction
            .peers
            .iter()
            .filter(|(_, p)| {
                p.due <= now || p.summary_due <= now || p.inflight.iter().any(|f| f.next_at <= now)
            })
            .map(|(a, _)| *a)
            .collect();
        for addr in due {
            self.flush_peer(addr, now);
        }
        let sweeps: Vec<IpAddr> = self
            .reduction
            .peers
            .iter()
            .filter(|(_, p)| p.rx_sweep_due <= now)
            .map(|(a, _)| *a)
            .collect();
        for addr in sweeps {
            self.sweep_rx(addr, now);
        }
        let mut next = self.reduction.due;
        for p in self.reduction.peers.values() {
            next = next.min(p.due).min(p.summary_due).min(p.rx_sweep_due);
            for f in &p.inflight {
                next = next.min(f.next_at);
            }
        }
        self.reduction.due = next;
    }

    fn flush_peer(&mut self, addr: IpAddr, now: Ms) {
        let limit = self.retry_limit();
        let epoch = self.reduction.epoch;
        let Some(p) = self.reduction.peers.get_mut(&addr) else {
            return;
        };
        let mut retransmit: Vec<(u32, Vec<u32>, IpAddr)> = Vec::new();
        let mut given_up: Vec<Vec<u32>> = Vec::new();
        let mut i = 0;
        while i < p.inflight.len() {
            let f = &mut p.inflight[i];
            if f.next_at > now {
                i += 1;
            } else if f.made >= limit {
                let gone = p.inflight.swap_remove(i);
                self.reduction.inflight.remove(&gone.id);
                given_up.push(gone.ids);
            } else {
                f.made += 1;
                retransmit.push((f.id, f.ids.clone(), f.local));
                i += 1;
            }
        }
        // This tick's share of the summary (sent below).
        let ticking = p.summary_due <= now;
        let summary: Vec<(IpAddr, Vec<u32>)> = if ticking {
            p.summarized
                .iter_mut()
                .filter(|(_, s)| s.len() > 0)
                .map(|(local, s)| {
                    let mut ids = Vec::new();
                    s.next_tick(SUMMARY_TICKS, IDS_PER_SREFRESH, &mut ids);
                    (*local, ids)
                })
                .filter(|(_, ids)| !ids.is_empty())
                .collect()
        } else {
            Vec::new()
        };
        let more = p.summarized.iter().any(|(_, s)| s.len() > 0);
        // Acknowledgments due go now, and ride on the Srefresh when one goes too.
        let acks = if p.due <= now || (!summary.is_empty() && !p.acks.is_empty()) {
            p.due = NEVER;
            std::mem::take(&mut p.acks)
        } else {
            Vec::new()
        };
        let ack_local = p.local.unwrap_or(IpAddr::from([0u8; 4]));
        self.reduction.pending_acks -= acks.len();
        if !given_up.is_empty() {
            // Never acknowledged: the neighbor may not read our RFC 2961 messages (it
            // restarted without refresh reduction, say; or every copy was lost). Their states
            // get full messages (found by the next scan), and until the neighbor speaks
            // again no Bundle goes to it: one it dropped would take them all along.
            self.stats.srefresh_given_up += given_up.len() as u64;
            tracing::debug!(peer = %addr, "summary refresh never acknowledged: full refreshes");
            let nacked = &mut self.reduction.nacked;
            for id in given_up.into_iter().flatten() {
                if nacked.len() < MAX_NACKED {
                    nacked.insert(id);
                }
            }
            let at = now.max(self.reduction.next_nack_scan);
            self.reduction.schedule(at);
            if let Some(p) = self.reduction.peers.get_mut(&addr) {
                p.silent = true;
            }
        }
        if ticking {
            let next = if more {
                now.saturating_add(self.summary_tick())
            } else {
                NEVER
            };
            if let Some(p) = self.reduction.peers.get_mut(&addr) {
                p.summary_due = next;
            }
            self.reduction.schedule(next);
        }
        for (id, ids, from) in retransmit {
            self.stats.retransmissions += 1;
            self.send_srefresh(addr, from, id, &ids, &mut Vec::new(), epoch);
            let made = self
                .reduction
                .peers
                .get(&addr)
                .and_then(|p| p.inflight.iter().find(|f| f.id == id))
                .map_or(0, |f| f.made);
            let delay = self.retransmit_delay(made);
            if let Some(f) = self
                .reduction
                .peers
                .get_mut(&addr)
                .and_then(|p| p.inflight.iter_mut().find(|f| f.id == id))
            {
                f.next_at = now.saturating_add(delay);
            }
        }
        let mut acks = acks;
        let per_message = IDS_PER_SREFRESH;
        for (local, ids) in summary {
            for chunk in ids.chunks(per_message) {
                let id = self.new_message_id();
                self.send_srefresh(addr, local, id, chunk, &mut acks, epoch);
                let next_at = now.saturating_add(self.retransmit_delay(0));
                if let Some(p) = self.reduction.peers.get_mut(&addr) {
                    if p.inflight.len() < MAX_INFLIGHT {
                        self.reduction.inflight.insert(id, addr);
                        p.inflight.push(Inflight {
                            id,
                            ids: chunk.to_vec(),
                            local,
                            next_at,
                            made: 0,
                        });
                    }
                }
            }
        }
        let per_ack = ACKS_PER_MESSAGE;
        while !acks.is_empty() {
            let take = acks.len().min(per_ack);
            let mut message = Message::new(MsgType::Ack);
            for (epoch, id, nack) in acks.drain(..take) {
                message.push(ack_object(epoch, id, nack));
                self.count_ack(nack);
            }
            self.stats.ack_messages_sent += 1;
            self.send_reduction(addr, ack_local, &mut message);
        }
    }

    fn count_ack(&mut self, nack: bool) {
        if nack {
            self.stats.nacks_sent += 1;
        } else {
            self.stats.acks_sent += 1;
        }
    }

    /// An Srefresh to `peer` with its own MESSAGE_ID `id` (ACK_Desired) summarizing `ids`,
    /// carrying as many of `acks` as fit.
    fn send_srefresh(
        &mut self,
        peer: IpAddr,
        local: IpAddr,
        id: u32,
        ids: &[u32],
        acks: &mut Vec<(u32, u32, bool)>,
        epoch: u32,
    ) {
        let mut message = Message::new(MsgType::Srefresh);
        let room = MAX_MESSAGE_BYTES
            .saturating_sub(COMMON_HEADER_LEN + 2 * ID_OBJECT_BYTES + 4 * ids.len())
            / ID_OBJECT_BYTES;
        let take = acks.len().min(room);
        for (epoch, id, nack) in acks.drain(..take) {
            message.push(ack_object(epoch, id, nack));
            self.count_ack(nack);
        }
        message.push(Object::MessageId(MessageId {
            flags: MESSAGE_ID_FLAG_ACK_DESIRED,
            epoch,
            id,
        }));
        message.push(Object::MessageIdList(MessageIdList {
            flags: 0,
            epoch,
            entries: MessageIdEntries::Ids(ids.to_vec()),
        }));
        self.stats.srefresh_sent += 1;
        self.stats.srefresh_ids_sent += ids.len() as u64;
        self.send_reduction(peer, local, &mut message);
    }

    /// Encodes, signs and queues an Ack or Srefresh.
    fn send_reduction(&mut self, peer: IpAddr, local: IpAddr, message: &mut Message) {
        message.flags = RR_FLAG;
        message.send_ttl = DEFAULT_SEND_TTL;
        let Ok(mut payload) = message.encode() else {
            self.stats.encode_failed += 1;
            return;
        };
        if !self.sign_transmit(peer, &mut payload) {
            self.stats.encode_failed += 1;
            return;
        }
        self.stats.transmitted += 1;
        self.transmits.push_back(Transmit {
            destination: peer,
            source: (!local.is_unspecified()).then_some(local),
            router_alert: false,
            ttl: DEFAULT_SEND_TTL,
            payload,
        });
    }

    /// Finds the states of NACKed ids (acknowledged long ago, so no index holds them) in one
    /// pass over the table, and renews them.
    fn scan_nacked(&mut self, now: Ms) {
        let nacked = std::mem::take(&mut self.reduction.nacked);
        let mut hits: Vec<(u32, Vec<u32>)> = Vec::new();
        for (slot, session) in self.sessions.iter().enumerate() {
            let Some(session) = session else { continue };
            let ids: Vec<u32> = session
                .senders
                .iter()
                .map(|s| s.tx_id)
                .chain(session.recv.as_deref().map(|r| r.tx_id))
                .filter(|id| *id != 0 && nacked.contains(id))
                .collect();
            if !ids.is_empty() {
                hits.push((slot as u32, ids));
            }
        }
        // Ids no state holds any more (a change or removal we did not see): their summary
        // refreshes stop.
        let mut unknown = nacked;
        for (_, ids) in &hits {
            for id in ids {
                unknown.remove(id);
            }
        }
        if !unknown.is_empty() {
            for p in self.reduction.peers.values_mut() {
                for (_, summary) in &mut p.summarized {
                    for id in &unknown {
                        summary.remove(*id);
                    }
                }
            }
        }
        for (slot, ids) in hits {
            self.renew(now, slot, &ids);
        }
        self.flush();
    }

    /// Drops index entries whose state is gone or holds another id now.
    fn sweep_indexes(&mut self) {
        let sessions = &self.sessions;
        let index = &self.index;
        let holds_tx = |key: &SessionKey, id: u32| {
            index
                .get(key, sessions)
                .and_then(|slot| sessions.get(slot as usize)?.as_ref())
                .is_some_and(|s| {
                    s.senders.iter().any(|l| l.tx_id == id)
                        || s.recv.as_deref().is_some_and(|r| r.tx_id == id)
                })
        };
        let r = &mut self.reduction;
        r.unacked.map.retain(|id, key| holds_tx(key, *id));
        r.unacked.swept();
    }
}

fn ack_object(epoch: u32, id: u32, nack: bool) -> Object {
    let m = MessageId {
        flags: 0,
        epoch,
        id,
    };
    if nack {
        Object::MessageIdNack(m)
    } else {
        Object::MessageIdAck(m)
    }
}
