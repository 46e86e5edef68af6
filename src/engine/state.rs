//! Per-session soft state: local owners, local senders (our PSBs), received path state
//! (PSBs), received reservation state (RSBs) and the receiver's Resv refresh state.
//!
//! Kept compact on purpose (the engine holds up to millions of sessions): deadlines are 8-byte
//! engine milliseconds, lists are `Vec`s that stay unallocated when empty, and rarely used
//! parts are boxed.

use std::net::{IpAddr, SocketAddr};
use std::ops::{Deref, DerefMut};

use super::msg::Hop;
use super::neighbors::NO_NEIGHBOR;
use super::timer::{Ms, NEVER};
use super::{SessionId, SessionKey, Style};
use crate::flow::{Flow, RuleId};
use crate::wire::intserv::{FlowSpec, TokenBucket};
use crate::wire::RsvpError;

/// Everything the engine knows about one RSVP session (one [`SessionKey`]).
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) key: SessionKey,
    /// The deadline of this session's live timer entry ([`NEVER`] when none).
    pub(crate) scheduled: Ms,
    /// Local owners (API handles) of this session.
    pub(crate) owners: List<Owner>,
    /// Senders on this host (the path state we originate).
    pub(crate) senders: List<LocalSender>,
    /// Path state received from previous hops.
    pub(crate) psbs: List<Psb>,
    /// Reservation state received from next hops.
    pub(crate) rsbs: List<Rsb>,
    /// Refresh state of the Resv this host sends as a receiver (boxed: sender-only sessions,
    /// the many, do not pay for it).
    pub(crate) recv: Option<Box<RecvState>>,
    /// The neighbor whose Path created the session (its slot in the neighbor table), or
    /// [`NO_NEIGHBOR`]: charged to its session quota while the session lives.
    pub(crate) creator: u32,
}

impl Session {
    pub(crate) fn new(key: SessionKey) -> Self {
        Session {
            key,
            scheduled: NEVER,
            owners: List::new(),
            senders: List::new(),
            psbs: List::new(),
            rsbs: List::new(),
            recv: None,
            creator: NO_NEIGHBOR,
        }
    }

    /// No owner and no soft state left: the session can be deleted.
    pub(crate) fn is_empty(&self) -> bool {
        self.owners.is_empty()
            && self.senders.is_empty()
            && self.psbs.is_empty()
            && self.rsbs.is_empty()
    }

    /// The earliest deadline of any state in the session.
    pub(crate) fn next_deadline(&self) -> Ms {
        let senders = self.senders.iter().map(|s| s.fast.timed(s.next_at));
        let psbs = self.psbs.iter().map(|p| p.expires_at);
        let rsbs = self.rsbs.iter().map(|r| r.expires_at);
        let waits = self.senders.iter().map(|s| s.wait_at);
        let recv = self
            .recv
            .as_deref()
            .map(|r| r.fast.timed(r.next_at).min(r.wait_at));
        senders
            .chain(waits)
            .chain(psbs)
            .chain(rsbs)
            .chain(recv)
            .min()
            .unwrap_or(NEVER)
    }

    pub(crate) fn owner_index(&self, id: SessionId) -> Option<usize> {
        self.owners.iter().position(|o| o.id == id)
    }

    /// Owners that listen for path state (primed or reserving receivers).
    pub(crate) fn audience(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.owners
            .iter()
            .filter(|o| matches!(o.role, Role::Primed | Role::Receiver(_)))
            .map(|o| o.id)
    }

    /// Owners that asked for a reservation.
    pub(crate) fn receivers(&self) -> impl Iterator<Item = (SessionId, &Request)> + '_ {
        self.owners.iter().filter_map(|o| match &o.role {
            Role::Receiver(request) => Some((o.id, &**request)),
            _ => None,
        })
    }

    /// The reservation this host asks for as a receiver: the first receiver's style, the
    /// largest flowspec of all local receivers, confirmation if any asked for it.
    pub(crate) fn merged_request(&self) -> Option<Request> {
        let mut merged: Option<Request> = None;
        for (_, request) in self.receivers() {
            match &mut merged {
                None => merged = Some(*request),
                Some(m) => {
                    if request.flowspec.reserved_rate() > m.flowspec.reserved_rate() {
                        m.flowspec = request.flowspec;
                    }
                    m.confirm |= request.confirm;
                }
            }
        }
        merged
    }

    /// Heap bytes this session owns (its lists and boxes).
    pub(crate) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let boxed = self
            .owners
            .iter()
            .map(|o| match o.role {
                Role::Unsignaled(_) => size_of::<UnsignaledRule>(),
                Role::Receiver(_) => size_of::<Request>(),
                _ => 0,
            })
            .sum::<usize>();
        self.owners.len() * size_of::<Owner>() + boxed + self.state_heap_bytes()
    }

    /// Heap bytes of everything but the owners: what handling a message from the network
    /// can change (owners change by commands only), computed without reading the owners.
    pub(crate) fn state_heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let filters = self
            .rsbs
            .iter()
            .map(|r| match &r.filter {
                Filter::Many(list) => list.len() * size_of::<SocketAddr>(),
                _ => 0,
            })
            .sum::<usize>();
        let modifying =
            self.senders.iter().filter(|s| s.previous.is_some()).count() * size_of::<FlowSpec>();
        self.senders.len() * size_of::<LocalSender>()
            + self.psbs.len() * size_of::<Psb>()
            + self.rsbs.len() * size_of::<Rsb>()
            + self.recv.as_ref().map_or(0, |_| size_of::<RecvState>())
            + filters
            + modifying
    }

    pub(crate) fn has_receivers(&self) -> bool {
        self.receivers().next().is_some()
    }
}

/// One local owner (one connection's handle) of a session.
#[derive(Debug)]
pub(crate) struct Owner {
    pub(crate) id: SessionId,
    pub(crate) role: Role,
}

/// What a local owner does with its session.
#[derive(Debug)]
pub(crate) enum Role {
    /// Opened, nothing asked yet: waits for a PATH (`rapi_session`).
    Primed,
    /// Has local senders (`rapi_sender`).
    Sender,
    /// Asked for a reservation (`rapi_reserve`). Boxed: inline, the request would grow
    /// every owner, the senders' too (the many), from 24 to 56 bytes.
    Receiver(Box<Request>),
    /// A rule marked *no signaling*.
    Unsignaled(Box<UnsignaledRule>),
}

/// A receiver's reservation request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Request {
    pub(crate) style: Style,
    pub(crate) flowspec: FlowSpec,
    pub(crate) confirm: bool,
}

/// The rule of an unsignaled owner.
#[derive(Debug)]
pub(crate) struct UnsignaledRule {
    pub(crate) id: RuleId,
    pub(crate) flow: Flow,
    pub(crate) flowspec: FlowSpec,
    pub(crate) installed: bool,
}

/// Fast retransmission of a first message that was not answered yet.
///
/// Only the count is kept: the delay before the next retransmission follows from it (the
/// configured initial delay, doubled for each retransmission already made), which keeps the
/// states that embed this one a word smaller.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fast {
    /// Retransmissions left.
    pub(crate) left: u8,
    /// The refresh round (`round.rs`) that sends this state next, if one does: its `next_at`
    /// is then the earliest time that round may, and its session's timer leaves it alone.
    pub(crate) round: OnRound,
}

impl Fast {
    /// The deadline of the next send (`next_at`) as its session's timer sees it: none
    /// while a refresh round sends it (`round.rs`).
    pub(crate) fn timed(&self, next_at: Ms) -> Ms {
        if self.round == OnRound::No {
            next_at
        } else {
            NEVER
        }
    }
}

/// Which refresh round (`round.rs`) a state is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum OnRound {
    /// None: its session's timer sends it (a trigger, a fast retransmission), if anything.
    #[default]
    No,
    /// Steady full refreshes, about once per `R`.
    Refresh,
    /// RFC 2961: a summarized state's safety-net look, about once per `16 R`.
    Check,
}

/// A sender on this host: the Path we originate and refresh, and the rule it got.
#[derive(Debug)]
pub(crate) struct LocalSender {
    pub(crate) owner: SessionId,
    pub(crate) sender: SocketAddr,
    pub(crate) tspec: TokenBucket,
    /// Next Path (retransmission or refresh).
    pub(crate) next_at: Ms,
    /// When the owner is told that no Resv came (`Event::NoReceiver`); [`NEVER`] once an
    /// answer arrived, once told, or without a peer wait.
    pub(crate) wait_at: Ms,
    pub(crate) fast: Fast,
    /// A Resv or PathErr answered our Path: fast retransmission stops.
    pub(crate) answered: bool,
    pub(crate) rule: Option<SenderRule>,
    /// Refresh reduction (RFC 2961, `reduction.rs`): our Message_Identifier of the current
    /// Path (0: none yet)...
    pub(crate) tx_id: u32,
    /// ...and whether the receiver acknowledged it (then refreshes go as Srefresh).
    pub(crate) tx_acked: bool,
    /// While a `Modify` is outstanding: the flowspec that stays in force if it fails (boxed:
    /// rare, and inline it would grow every sender by a third).
    pub(crate) previous: Option<Box<FlowSpec>>,
}

/// The enforcement rule of a local sender's reservation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SenderRule {
    pub(crate) id: RuleId,
    /// The flowspec in force (or being installed / modified to).
    pub(crate) flowspec: FlowSpec,
    pub(crate) state: RuleState,
    pub(crate) dscp: Option<u8>,
}

/// Where a rule's last action stands. One action per rule is outstanding at most; changes
/// wait for [`Engine::rule_outcome`](super::Engine::rule_outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleState {
    /// `Install` emitted, outcome not known yet.
    Installing,
    /// Loaded.
    Installed,
    /// `Modify` emitted; [`LocalSender::previous`] stays in force if it fails.
    Modifying,
}

/// Path state received from a previous hop (PSB).
#[derive(Debug)]
pub(crate) struct Psb {
    pub(crate) sender: SocketAddr,
    pub(crate) tspec: TokenBucket,
    pub(crate) phop: Hop,
    pub(crate) expires_at: Ms,
    /// The last Path arrived with an IP TTL other than its Send_TTL (RFC 2205 §2.9).
    pub(crate) non_rsvp_hops: bool,
    /// The neighbor charged for this state (its slot), or [`NO_NEIGHBOR`].
    pub(crate) from: u32,
    /// Refresh reduction (`reduction.rs`): the last Message_Identifier received for it from
    /// its neighbor's current epoch (0: none)...
    pub(crate) rx_id: u32,
    /// ...and its sender's refresh period in units of 100 ms, rounded up (0: unknown), which
    /// a summary refresh (Srefresh, that carries none) needs for the lifetime. Inline fields,
    /// not a struct: they fill the padding.
    pub(crate) rx_deci: u16,
}

/// Which senders a received reservation covers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    /// FF: one sender.
    One(SocketAddr),
    /// SE: the listed senders.
    Many(Box<[SocketAddr]>),
    /// WF: every sender.
    All,
}

impl Filter {
    pub(crate) fn covers(&self, sender: SocketAddr) -> bool {
        match self {
            Filter::One(s) => *s == sender,
            Filter::Many(list) => list.contains(&sender),
            Filter::All => true,
        }
    }

    pub(crate) fn senders(&self) -> Vec<SocketAddr> {
        match self {
            Filter::One(s) => vec![*s],
            Filter::Many(list) => list.to_vec(),
            Filter::All => Vec::new(),
        }
    }
}

/// Reservation state received from a next hop (RSB).
#[derive(Debug)]
pub(crate) struct Rsb {
    pub(crate) nhop: Hop,
    pub(crate) style: Style,
    pub(crate) filter: Filter,
    pub(crate) flowspec: FlowSpec,
    /// RESV_CONFIRM: where to send the ResvConf.
    pub(crate) confirm: Option<IpAddr>,
    pub(crate) expires_at: Ms,
    /// The RSVP error this flowspec was refused with; refreshes of the same
    /// flowspec are answered with the same ResvErr and not admitted again.
    pub(crate) refused: Option<RsvpError>,
    /// The neighbor charged for this state (its slot), or [`NO_NEIGHBOR`].
    pub(crate) from: u32,
    /// Refresh reduction (`reduction.rs`): the last Message_Identifier received for it from
    /// its neighbor's current epoch (0: none)...
    pub(crate) rx_id: u32,
    /// ...and its sender's refresh period in units of 100 ms, rounded up (0: unknown), which
    /// a summary refresh (Srefresh, that carries none) needs for the lifetime. Inline fields,
    /// not a struct: they fill the padding.
    pub(crate) rx_deci: u16,
}

/// The receiver side's Resv refresh state (one per session: local requests are merged).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvState {
    /// Next Resv (retransmission or refresh); [`NEVER`] while there is no path state.
    pub(crate) next_at: Ms,
    /// When the receivers are told that no Path came (`Event::NoSender`); [`NEVER`] once a
    /// Path arrived, once told, or without a peer wait.
    pub(crate) wait_at: Ms,
    pub(crate) fast: Fast,
    /// A ResvConf or ResvErr answered our Resv: fast retransmission stops.
    pub(crate) answered: bool,
    /// The ResvConf for the current request arrived.
    pub(crate) confirmed: bool,
    /// `Established` was announced for the current request.
    pub(crate) announced: bool,
    /// The last ResvErr reported to the owners (repeats are not reported again).
    pub(crate) last_error: Option<RsvpError>,
    /// The request the Resv state was built for (a change restarts confirmation).
    pub(crate) request: Option<Request>,
    /// Refresh reduction (`reduction.rs`): our Message_Identifier of the current Resv (0:
    /// none yet)...
    pub(crate) tx_id: u32,
    /// ...and whether the previous hop acknowledged it.
    pub(crate) tx_acked: bool,
}

impl RecvState {
    pub(crate) fn new() -> Self {
        RecvState {
            next_at: NEVER,
            wait_at: NEVER,
            fast: Fast::default(),
            answered: false,
            confirmed: false,
            announced: false,
            last_error: None,
            request: None,
            tx_id: 0,
            tx_acked: false,
        }
    }
}

/// A list that costs 16 bytes when empty and allocates exactly what it holds: sessions have
/// one or two entries per list, and a `Vec` would reserve four.
#[derive(Debug)]
pub(crate) struct List<T>(Option<Box<[T]>>);

impl<T> List<T> {
    pub(crate) const fn new() -> Self {
        List(None)
    }

    fn take_vec(&mut self) -> Vec<T> {
        self.0.take().map(Vec::from).unwrap_or_default()
    }

    fn set(&mut self, items: Vec<T>) {
        self.0 = (!items.is_empty()).then(|| items.into_boxed_slice());
    }

    pub(crate) fn push(&mut self, item: T) {
        let mut items = self.take_vec();
        items.reserve_exact(1);
        items.push(item);
        self.set(items);
    }

    pub(crate) fn remove(&mut self, index: usize) -> T {
        let mut items = self.take_vec();
        let item = items.remove(index);
        self.set(items);
        item
    }

    pub(crate) fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        if self.is_empty() {
            return;
        }
        let mut items = self.take_vec();
        items.retain(keep);
        self.set(items);
    }
}

impl<T> Deref for List<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl<T> DerefMut for List<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.0.as_deref_mut().unwrap_or_default()
    }
}

impl<'a, T> IntoIterator for &'a List<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a, T> IntoIterator for &'a mut List<T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_allocates_exactly_and_behaves_like_a_vec() {
        let mut list: List<u32> = List::new();
        assert!(list.is_empty());
        list.push(1);
        list.push(2);
        list.push(3);
        assert_eq!(&*list, &[1, 2, 3]);
        assert_eq!(list.remove(1), 2);
        list.retain(|x| *x != 1);
        assert_eq!(&*list, &[3]);
        list[0] = 7;
        assert_eq!(list.first(), Some(&7));
        list.retain(|_| false);
        assert!(list.0.is_none());
    }

    #[test]
    fn state_stays_compact() {
        use std::mem::size_of;
        // Budget of the per-session goal (≤ 512 bytes with maps and timers): keep the parts
        // from growing unnoticed.
        assert!(
            size_of::<Session>() <= 128,
            "session {}",
            size_of::<Session>()
        );
        assert!(
            size_of::<LocalSender>() <= 144,
            "sender {}",
            size_of::<LocalSender>()
        );
        assert!(size_of::<Rsb>() <= 136, "rsb {}", size_of::<Rsb>());
        assert!(size_of::<Psb>() <= 96, "psb {}", size_of::<Psb>());
        assert!(size_of::<Owner>() <= 24, "owner {}", size_of::<Owner>());
        // 72 since refresh reduction (the Resv's message id and its ack: 5 bytes past 64).
        assert!(
            size_of::<RecvState>() <= 72,
            "recv {}",
            size_of::<RecvState>()
        );
    }
}
