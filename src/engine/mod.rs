//! Sans-IO RSVP soft-state engine for hosts (RFC 2205, processing rules of RFC 2209).
//!
//! Written in the style of `quinn-proto`: no tokio, no sockets, no system clock. The caller
//! feeds three kinds of input — datagrams ([`Engine::handle_datagram`]), local API commands
//! ([`Engine::open_session`], [`Engine::add_sender`], [`Engine::reserve`],
//! [`Engine::admit_unsignaled`], [`Engine::release`]) and timeouts ([`Engine::handle_timeout`])
//! — and drains the outputs: [`Engine::poll_transmit`], [`Engine::poll_event`],
//! [`Engine::poll_action`], and [`Engine::poll_timeout`] for the next deadline.
//!
//! # Where things are
//!
//! Like quinn-proto, the table of sessions and the send and receive paths are kept apart
//! from the per-session protocol logic; each file holds one concern:
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the public types and the entry points above |
//! | `sessions.rs` | the slab of sessions, the key index, owner and rule ids, open and release |
//! | `receive.rs` | decoding, undecodable input, and `on_msg`, the one gate every message passes |
//! | `path.rs` | `add_sender`; the Path, PathTear and PathErr handlers |
//! | `resv.rs` | `reserve`; sending Resv and ResvConf; the Resv, ResvTear, ResvErr and ResvConf handlers |
//! | `rules.rs` | unsignaled admission, rule reconciliation, enforcer outcomes |
//! | `refresh.rs` | refresh and lifetime arithmetic, fast retransmission, peer waits, timeouts |
//! | `outbox.rs` | message builders, the outbox, local delivery, the flush into [`Transmit`]s |
//! | `translate.rs` | the engine's messages to and from [`crate::wire`]'s |
//! | `integrity.rs` | the INTEGRITY gate, signing of transmits, the integrity handshake |
//! | `reduction.rs` | RFC 2961 refresh reduction: message ids, acks, Srefresh, epochs, Bundles received |
//! | `idset.rs` | refresh reduction's per-neighbor tables: our summarized ids, the neighbor's ids we hold |
//! | `reliable.rs` | RFC 2961 reliable delivery of tears, errors and ResvConfs (held copies) |
//! | `bundle.rs` | RFC 2961 Bundles sent: packing queued transmits to a capable neighbor |
//! | `state.rs`, `index.rs`, `timer.rs`, `inspect.rs` | session state, key index, timer wheel, inspection |
//!
//! # Names
//!
//! * An **RSVP session** is RFC 2205's: the data flows to one destination address, protocol
//!   and port, named by a [`SessionKey`] (the SESSION object on the wire). The engine holds
//!   one state per RSVP session, with its path and reservation state.
//! * A **session** of the API is one local owner's part in an RSVP session, named by a
//!   [`SessionId`]: a sender (a server's connection), a receiver (a client's) or an
//!   unsignaled rule. Several owners can share one RSVP session; events and commands are
//!   per owner. IBM i's API called this the session id too.
//!
//! # Local delivery
//!
//! A message addressed to one of [`EngineConfig::local_addrs`] is delivered to the engine
//! itself *instead of* being transmitted, whatever it is for: sent, it would only come back
//! (or be lost, when the transport is not bound where it is sent). One addressed to another
//! loopback address or to an address of one of its own sessions is delivered locally when it
//! is *for* state this engine holds (a Path or PathTear for a session with a primed or
//! reserving owner or holding that sender's path state, a Resv, ResvTear or PathErr for a
//! session with local senders, a ResvErr or ResvConf for a session with local receivers), as
//! an RSVP daemon does for its own applications. Everything else is transmitted, so two
//! engines on one host with their own addresses (two agents in one process) still talk
//! through their transports. Local deliveries are counted in [`Stats::local_delivered`], not
//! in [`Stats::transmitted`]. [`EngineConfig::local_delivery`] turns this off (every message
//! is then transmitted and the transport is expected to bring it back).
//!
//! # Neighbors
//!
//! RSVP without INTEGRITY (RFC 2747) has no keys, but a host can still refuse to let a third
//! party change state that another neighbor set up. The datagram's IP source
//! ([`Incoming::source`]; a locally delivered message carries the address it was sent from)
//! is compared with what the state records:
//!
//! - a **Path** must come from its sender (RFC 2205 §3.1.3: a Path's IP source is the
//!   sender's) or from the previous hop its RSVP_HOP names (a hop that re-sends it from its
//!   own address, as over UDP); one that names another previous hop than the path state
//!   records (a route change) is believed only from the sender or the recorded previous hop —
//!   else anyone could move the path state to itself, draw the receiver's Resvs and tear it;
//! - a **PathTear** must come from the path state's sender or previous hop and name that
//!   previous hop in its RSVP_HOP;
//! - a **Resv** or **ResvTear** must come from the next hop its RSVP_HOP names (they travel
//!   hop by hop). Reservation state is kept per next hop, so one can only refresh, change or
//!   remove what its own source asked for: a Resv from a new address is a reservation of its
//!   own (RFC 2205's merging; for an FF sender, another next hop's), and the rule a local
//!   sender gets is the largest admitted reservation covering it — a smaller one from
//!   elsewhere never shrinks it, a larger one is admission control's to refuse;
//! - a **PathErr** must come from a node our Paths went to: the session's destination, or a
//!   next hop that sent a Resv for it (a host records no other next hop, so a PathErr from a
//!   router that never sent one is not believed);
//! - a **ResvErr** or **ResvConf** must come from a node our Resvs went to or that answers
//!   for them: a previous hop or sender of the session's path state. A ResvConf is believed
//!   only while a local receiver asked for a confirmation and has not had it; one nobody
//!   asked for is dropped the same way, a repeat of one already had is [`Stats::ignored`].
//!
//! A Path or Resv the codec refuses (unknown object class or C-Type) is answered at the hop
//! it names only under the same condition, so that no one can aim those errors elsewhere.
//!
//! What fails is dropped without a trace in the state, an event, a rule action or an error
//! sent back, counted in [`Stats::wrong_neighbor`] and logged at debug level. A source given
//! as the unspecified address (a transport that does not know it) is not checked; every
//! transport of [`crate::agent`] knows it (UDP and raw sockets report the peer, the in-memory
//! network the address sent from). This is no authentication: a forger that can send with
//! the neighbor's address is not stopped (that takes INTEGRITY).
//!
//! A host keeps path state only for **sessions to itself**: a Path travels to its session's
//! destination, so one whose destination is neither the address the datagram was sent to
//! ([`Incoming::destination`]) nor one of [`EngineConfig::local_addrs`] is dropped and
//! counted in [`Stats::not_for_us`], with no state and no answer (not even the PathErr an
//! undecodable one would get). The agent's transports report the address each datagram
//! arrived at (their sockets are bound to one address each; raw IPv4 reads the IP header), a
//! locally delivered Path carries its session's destination, and two engines on one host
//! (different `127.x` addresses) each see their own.
//!
//! A peer's **refresh period** R (its TIME_VALUES) is clamped to
//! [`MIN_REFRESH_PERIOD`]`..=`[`MAX_REFRESH_PERIOD`] (100 ms to 1 h) before the lifetime of
//! the state follows from it (see [Soft state](self#soft-state)), so no peer can keep state
//! alive for longer than 5 h 15 min (with `K = 3`) after its last refresh; clamped values
//! are counted in [`Stats::refresh_clamped`].
//!
//! # Soft state
//!
//! Paths and Resvs are refreshed every `[0.5 R, 1.5 R]`: R is
//! [`EngineConfig::refresh_period`], the jitter comes from a [`SmallRng`] seeded with
//! [`EngineConfig::rng_seed`]. Steady full refreshes go by the **refresh round**: one walk
//! over the session table per `R`, in table order, in at least 16 jittered ticks of about 64
//! sessions each, so that a large engine refreshes its sessions in memory order (a refresh
//! costs about half as much at 100k sessions as with one random timer per state); each state
//! is refreshed once per round, at least `R / 2` after its previous send. With
//! [refresh reduction](self#refresh-reduction-rfc-2961), refreshes of acknowledged state go
//! in per-neighbor summaries instead, and a second round with laps of `16 R` only looks in
//! on them as a safety net; the refresh round then carries the full refreshes to neighbors
//! that do not use refresh reduction, and idles when there are none.
//! Received state expires after
//! `L = (K + 0.5) · 1.5 · R` with the *sender's* `R` from its TIME_VALUES, clamped to
//! [`MIN_REFRESH_PERIOD`]`..=`[`MAX_REFRESH_PERIOD`]. The first Path of a
//! local sender and the first Resv of a receiver are retransmitted after
//! [`EngineConfig::fast_retransmit_initial`], growing by [`EngineConfig::retransmit_factor`]
//! (doubling), [`EngineConfig::fast_retransmit_count`] times, until answered (a Resv or
//! PathErr answers a Path; a ResvConf or ResvErr answers a Resv; with
//! [refresh reduction](self#refresh-reduction-rfc-2961), the acknowledgment of its
//! MESSAGE_ID). All deadlines of all sessions live in one hierarchical timer wheel.
//!
//! # Waiting for the peer
//!
//! A peer that runs no RSVP at all — a plain TCP server or client, or a host without an
//! agent — never answers, and RSVP itself has no message for that. So a local sender
//! ([`Engine::add_sender`]) that has had neither a Resv nor a PathErr within
//! [`EngineConfig::peer_wait`] tells its owner [`Event::NoReceiver`], and a receiver session
//! ([`Engine::reserve`]) that has had no Path within it tells its receivers
//! [`Event::NoSender`], once (Winsock GQoS's `WSA_QOS_NO_RECEIVERS` / `WSA_QOS_NO_SENDERS`).
//! Nothing is sent for it and nothing stops: Paths are still refreshed, the request stays
//! primed, and a late Resv or Path sets the reservation up as usual. The wait is one more
//! deadline of the session in the same timer wheel, disarmed by the answer or by the
//! session's release. Unsignaled sessions ([`Engine::admit_unsignaled`]) have no peer to
//! wait for.
//!
//! # Refresh reduction (RFC 2961)
//!
//! With [`EngineConfig::refresh_reduction`] (the default) every message sent sets the
//! Refresh-Reduction-Capable flag of the common header, and what a neighbor — an IP address
//! we exchange messages with — last sent says whether *it* is capable. To a neighbor that is
//! not (or not known yet) nothing else changes: classic full refreshes, no RFC 2961 object
//! (a MESSAGE_ID is of a class an RFC 2205 node must reject), so mixed networks work. To a
//! capable neighbor (`reduction.rs` holds the machinery):
//!
//! * **Reliable triggers.** A new or changed Path (a new sender, a new Tspec) or Resv (a new
//!   request, new path state) gets a new Message_Identifier and carries a MESSAGE_ID with
//!   ACK_Desired; it is retransmitted after [`EngineConfig::fast_retransmit_initial`] (`Rf`),
//!   each time [`EngineConfig::retransmit_factor`] (`1 + Δ`) longer, up to
//!   [`EngineConfig::fast_retransmit_count`] (`Rl`) times (0.5 s, 1 s, 2 s by default), until
//!   the MESSAGE_ID_ACK comes: a lost trigger is repaired within about a second, not a
//!   refresh period. While it waits for its ack, a Resv, ResvConf or ResvErr (which may answer
//!   an earlier message) does not stop the retransmissions; a Resv asking for confirmation is
//!   retransmitted until its ResvConf too. A full refresh of a message never acknowledged
//!   (sent before the neighbor was known to be capable, or every attempt lost) is retransmitted
//!   the same way.
//! * **Reliable tears, errors and confirmations.** A PathTear, ResvTear, PathErr, ResvErr or
//!   ResvConf gets a Message_Identifier of its own with ACK_Desired and is retransmitted on
//!   the same schedule until acknowledged (or NACKed: the neighbor holds nothing it is about),
//!   so a lost PathTear no longer leaves the neighbor's state until it expires. Having no
//!   state to be rebuilt from, its encoded bytes are held (at most 4 096 messages and 4 MiB,
//!   the oldest dropped beyond: [`Stats::reliable_dropped`]) and decorated and signed anew for
//!   each retransmission. The retransmissions of an answer to a datagram take answer tokens
//!   of their destination (see [Bounds](self#bounds)). A received tear older than the last id
//!   of the state it names (a retransmission overtaken by a new Path or Resv) is out of order
//!   and dropped; out-of-order messages are still acknowledged.
//! * **Summary refreshes.** Once a Path or Resv is acknowledged, its id joins its neighbor's
//!   summary, and the neighbor's own timer refreshes them all: every `R / 16` (jittered
//!   uniformly in `[R/32, 3R/32]`) a tick sends the next sixteenth of the summary, in order,
//!   in Srefresh messages (MESSAGE_ID_LIST, up to 1 400 bytes each, about 340 ids; a small
//!   summary waits for a message's worth or the whole of it), themselves sent with
//!   ACK_Desired and retransmitted like triggers; each id is so refreshed about every `R`.
//!   The check round (see [Soft state](self#soft-state)) looks in on the state only every
//!   16 refresh periods or so, a safety net, in table order rather than by a timer per
//!   state. An
//!   Srefresh received stamps each id it names in the neighbor's index, matched in one
//!   forward walk (ids come in increasing order), and touches no session: at a million
//!   sessions each touch is a cache miss. That index is also the timer of the states it
//!   covers: a sweep every quarter of their shortest lifetime hands a state whose deadline
//!   comes before the next sweep back to its session's timer, which expires it on time
//!   unless a stamp came first. An id we do not hold is answered with a MESSAGE_ID_NACK,
//!   and a NACK for one of our ids sends that state's full message at once with a new id;
//!   so does an Srefresh never acknowledged after its retransmissions (the neighbor does not
//!   read them: it restarted without refresh reduction), and a neighbor that stops being
//!   capable gets the full messages of all its summarized states. The source-list forms of
//!   the list (C-Types 2–5) are read as plain ids: a host keeps only unicast state. A Resv to
//!   more than one previous hop is refreshed in full.
//! * **Acknowledgments** wait at most [`EngineConfig::ack_delay`] (20 ms, at most
//!   [`MAX_ACK_DELAY`]) for a message going to the same neighbor anyway and ride on it (up to
//!   16 per message), else go in an Ack message (or the Srefresh then sent). They are answers
//!   of a few bytes each sent from a timer, never more NACK bytes than the Srefresh that
//!   caused them, and at most 65 536 wait per neighbor (a full Ack message's worth goes at
//!   once).
//! * **Order and epochs.** Each received path or reservation state keeps the last id its
//!   neighbor sent for it; a message with a smaller one is out of order and dropped
//!   ([`Stats::out_of_order`]). Ids increase per engine within its epoch, a random 24-bit
//!   number per engine start: a neighbor's new epoch means it restarted, and all its former
//!   ids are void ([`Stats::neighbor_restarts`]).
//! * **Bundles** received are taken apart and each message handled as if received alone. A
//!   Bundle without INTEGRITY (RFC 2961 §3.2 gives it none) has each sub-message pass the
//!   INTEGRITY gate on its own; one with an INTEGRITY object first is gated whole.
//! * **Bundles sent** ([`EngineConfig::bundling`], on by default): the RSVP messages
//!   (Path, Resv, their tears and errors, ResvConf) queued for one capable neighbor between
//!   two [`Engine::poll_transmit`] calls — a batch of API calls, one timeout's refreshes and
//!   retransmissions, the answers held back for a timeout — go in Bundles of up to
//!   [`MAX_BUNDLE_BYTES`], in order; a lone message goes alone. No message waits to be
//!   bundled. Answers produced inside [`Engine::handle_datagram`] are never bundled (their
//!   byte budget stays as described under [Bounds](self#bounds)). A Bundle goes to the
//!   neighbor's address without Router Alert, with the Send_TTL of its sub-messages (only
//!   messages of one Send_TTL share one), the Refresh-Reduction-Capable flag set, and no
//!   INTEGRITY of its own: each sub-message carries its own (see `bundle.rs`). Acks and
//!   Srefresh messages go alone.
//!
//! Where the state lives: a sending state keeps its id and whether it was acknowledged (5
//! bytes inside the structs), a received state its neighbor's last id and refresh period (6
//! bytes, in padding); per neighbor, an index of its ids our states hold (16 bytes an entry:
//! id, session slot, stamp, lifetime), the summary of our acknowledged ids (4 bytes an
//! entry), both arrays sorted by id (ids increase, so entries append), pending
//! acknowledgments and Srefresh messages in flight; engine-wide, the ids in flight (sent,
//! not acknowledged yet). The index and summaries are exact: when a session is put back
//! into the table after a change, the ids it held and holds no more leave them. With refresh
//! reduction off, received RFC 2961 messages are ignored (as unsupported) and their objects
//! skipped.
//!
//! # Memory and time
//!
//! Sessions live in one slab indexed by a 4-byte-per-bucket open-addressing table; owner and
//! rule ids carry their session's slot (so no further maps), lists allocate exactly what they
//! hold, and every session has at most one live entry in a single timer wheel (lazy deletion).
//! See `benches/engine.rs` for the measured bytes per session and CPU per refresh.
//!
//! # Bounds
//!
//! What the network can make the engine send and hold is bounded, so that it is neither a
//! reflector nor a memory sink (`neighbors.rs` holds the machinery):
//!
//! | bound | default | refused or excess |
//! |---|---|---|
//! | objects per message ([`MAX_OBJECTS`](crate::wire::MAX_OBJECTS)) | 256 | [`WireError::TooManyObjects`](crate::wire::WireError::TooManyObjects), dropped, [`Stats::malformed`] |
//! | FILTER_SPECs per message ([`MAX_FILTER_SPECS`](crate::wire::MAX_FILTER_SPECS)) | 64 | [`WireError::TooManyFilterSpecs`](crate::wire::WireError::TooManyFilterSpecs), dropped, [`Stats::malformed`] |
//! | bytes transmitted in answer to one datagram | the datagram's length | held back or suppressed (below) |
//! | error messages and held-back answers per neighbor | [`NeighborLimits::answer_rate`] 32/s, [`NeighborLimits::answer_burst`] 64 | [`Stats::answers_suppressed`] |
//! | sessions created by one neighbor's Paths | [`NeighborLimits::sessions`] 16 384 | [`Stats::neighbor_refused`] |
//! | path states from one neighbor | [`NeighborLimits::paths`] 65 536 | [`Stats::neighbor_refused`] |
//! | reservation states from one neighbor | [`NeighborLimits::reservations`] 65 536 | [`Stats::neighbor_refused`] |
//! | new states per neighbor | [`NeighborLimits::new_state_rate`] 1 024/s, [`NeighborLimits::new_state_burst`] 4 096 | [`Stats::neighbor_refused`] |
//! | neighbors tracked | [`NeighborLimits::max_neighbors`] 4 096 (idle ones forgotten) | [`Stats::neighbor_refused`] |
//! | bytes of state | [`EngineConfig::max_state_bytes`] 256 MiB | [`Stats::memory_refused`], [`Stats::memory_full`] |
//! | sessions | [`EngineConfig::max_sessions`] 2^20 | [`Stats::rejected`] |
//! | path / reservation states per session | 64 | [`Stats::rejected`] |
//!
//! A *neighbor* is the IP source address of a datagram. Processing one datagram costs at most
//! its 64 filter specs against a session's 64 states, whatever it carries.
//!
//! **Answers.** While [`Engine::handle_datagram`] runs, every message it would transmit — an
//! error, a Resv a new Path triggers, a ResvConf — passes one gate in the flush (not the
//! handlers): it is sent if it fits in the bytes the datagram's budget has left (its own
//! length, so nothing transmitted within the call outweighs what caused it). Every error
//! message also takes a token of the neighbor's answer bucket. A message over the budget is
//! held back — sent by the next [`Engine::handle_timeout`], which [`Engine::poll_timeout`]
//! makes due at once — if the neighbor has a token left (and at most 1 024 are held), and is
//! suppressed otherwise. A Resv answering a Path is a few bytes longer than it, so it is
//! typically held back for that moment; soft state heals whatever is suppressed (the Resv's
//! own retransmission timer sends it again). So a bogus Resv of 64 filter specs earns a few
//! ResvErrs, not 64, and a flood of them from one address at most 32 error messages a second.
//! Messages the local API, the enforcer's outcomes and timers cause are not limited.
//!
//! **State.** New state from a datagram — a session its Path creates, a path state, a
//! reservation state — is charged to its neighbor: it must fit the neighbor's quotas, take a
//! token of its new-state bucket, and (for a session no local owner opened, and its path
//! state) fit under [`EngineConfig::max_state_bytes`]; otherwise the message is refused like
//! a full table (PathErr / ResvErr code 23, within the answer bounds) and counted. Path state
//! in a session a local owner opened and reservation state for local senders are not refused
//! by the byte cap — they are what the owners wait for, bounded by the owners and the
//! neighbor quotas — so a flood that fills it does not keep a peer's reservation from being
//! set up. [`Stats::state_bytes`] is the gauge the cap is checked against, kept as sessions
//! are taken out of and put back into the table, so expiry and teardown are accounted
//! wherever they happen. State the engine delivers to itself is not charged to anyone.
//! [`NeighborLimits::unlimited`] lifts the per-neighbor limits (the engine benchmark's million
//! sessions between two peers needs that, and a larger cap).
//!
//! # Rules
//!
//! Rules are installed on the data sender's side (where the traffic can be shaped and marked):
//! for each local sender the largest admitted reservation that covers it. Every
//! [`RuleAction::Install`] is followed by exactly one [`RuleAction::Remove`] of the same id —
//! also when the install failed ([`Engine::rule_outcome`] with an error), so an enforcer may
//! treat `Remove` of an unknown id as a no-op. One action per rule is outstanding at a time:
//! a change that arrives while an `Install`/`Modify` waits for its outcome is applied after it.
//!
//! # Integrity
//!
//! With keys ([`EngineConfig::integrity`], [`Engine::set_keys`]; [`crate::integrity`] has
//! the formats) the engine authenticates messages hop by hop as RFC 2747 asks:
//!
//! * **Sending**: every datagram to a neighbor a key covers ([`Transmit::destination`])
//!   carries INTEGRITY made with the last key covering it, with the `H` flag set (we answer
//!   challenges) and the next sequence number. Messages delivered locally are not signed.
//!   Sequence numbers follow the wall clock (§3.2), which the engine, sans-IO, is told with
//!   [`Engine::set_wall_clock`]; without it they start low, and a peer that kept its state
//!   drops them as replays after a restart.
//! * **Receiving**: a datagram from a covered neighbor is verified on its raw bytes before
//!   anything is decoded: no INTEGRITY, a key identifier we do not hold for that neighbor,
//!   a bad digest or a sequence number already seen (or below the 64-entry window) drop it,
//!   counted in [`Stats::integrity_missing`], [`Stats::integrity_unknown_key`],
//!   [`Stats::integrity_bad_digest`] and [`Stats::integrity_replayed`], logged at debug, and
//!   never acted on: no event, no state, no error message back. Every key covering the
//!   neighbor is accepted (a rollover). A datagram *with* INTEGRITY from a neighbor no key
//!   covers is dropped too ([`Stats::integrity_unknown_key`]): RFC 2747 §4.2 discards a
//!   message whose key identifier and sender match no security association, and accepting it
//!   while ignoring the object would let a forged signature look authenticated.
//! * **Handshake** (§4.3; Integrity Challenge 25 and Response 26 of RFC 3097): an authentic
//!   message from a neighbor for which no sequence state is held (after our restart, or the
//!   first contact) could be a replay, so it is dropped
//!   ([`Stats::integrity_unverified`]) and the neighbor is sent a Challenge with a fresh
//!   cookie from an OS-seeded generator, about the key it used; its signed Response echoing
//!   the cookie starts the window at the Response's sequence number
//!   ([`Stats::handshakes_completed`]). Until then its messages are dropped; RSVP's refreshes
//!   and retransmissions bring their content again. One challenge is outstanding per
//!   neighbor and key, re-sent at most every [`CHALLENGE_RETRY`] and only when another
//!   message arrives (there is no timer); a Challenge is 28 bytes, smaller than any message
//!   that carries INTEGRITY, so it never amplifies. A sender whose INTEGRITY has `H` clear
//!   cannot be challenged: its first authentic message starts its window. Challenges we
//!   receive from a covered neighbor are answered with a Response signed with the key they
//!   name ([`Stats::challenges_answered`]), at most [`RESPONSES_PER_SECOND`] per neighbor
//!   (a Challenge carries no INTEGRITY, so anyone can send one; the answer, 64 or 80 bytes,
//!   only ever goes to a keyed neighbor).
//! * **Key changes**: [`Engine::set_keys`] keeps the windows of keys that stay unchanged.
//!
//! # Errors
//!
//! Messages that cannot happen by the RFC are answered with its error and counted in
//! [`Stats::rejected`]: a Resv for a session without path state (code 3), for senders this
//! host does not have (4), with a style that conflicts with the session's reservations (5) or
//! is unknown (6); a refused admission (1 or 2, as the [`Admission`] said); an enforcer
//! failure (21/22 from [`RuleFailure`]); objects of unknown class or C-Type (13/14, from the
//! codec). A Resv's ResvErr goes to its next hop, a Path's PathErr to its previous hop.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::flow::{Admission, Flow, Rule, RuleId};
use crate::integrity::KeyChain;
use crate::wire::intserv::{FlowSpec, TokenBucket};
use crate::wire::RsvpError;

mod bundle;
mod idset;
mod index;
mod inspect;
mod integrity;
mod msg;
mod neighbors;
mod outbox;
mod path;
mod receive;
mod reduction;
mod refresh;
mod reliable;
mod resv;
mod round;
mod rules;
mod sessions;
mod state;
mod timer;
mod translate;

use index::KeyIndex;
pub use inspect::{OwnerRole, PathInfo, ReservationInfo, RuleInfo, SessionInfo};
pub use integrity::{CHALLENGE_RETRY, RESPONSES_PER_SECOND};
use msg::Msg;
use neighbors::{Answering, Neighbors};
use state::Session;
use timer::{Clock, Timers};

/// Engine-local handle of one RSVP session as seen by one local owner.
///
/// Unique for the engine's life, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// RSVP SESSION: (destination address, protocol, destination port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    /// The data receiver's address and port.
    pub destination: SocketAddr,
    /// IP protocol number (6 for TCP).
    pub protocol: u8,
}

// One reservation style for the codec and the engine: the STYLE object's option vector is
// the wire's business (`Style::option_vector`), the engine only matches on the variants.
pub use crate::wire::Style;

/// Engine configuration; [`Default`] gives the RFC 2205 defaults.
///
/// Non-exhaustive (it grows): start from [`EngineConfig::default`] and set the fields you
/// need.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Refresh period `R` this host announces in TIME_VALUES (default 30 s), taken as
    /// [`MIN_REFRESH_PERIOD`] or [`MAX_REFRESH_PERIOD`] when outside them.
    pub refresh_period: Duration,
    /// `K`, the number of refreshes that may be lost before state expires (default 3).
    pub keep_multiplier: u32,
    /// First retransmission delay of an unanswered first Path/Resv, and with refresh
    /// reduction of every unacknowledged trigger message: RFC 2961's `Rf` (default 500 ms).
    pub fast_retransmit_initial: Duration,
    /// How many retransmissions are made before falling back to refreshes: RFC 2961's retry
    /// limit `Rl` (default 3).
    pub fast_retransmit_count: u32,
    /// Each retransmission waits this many times longer than the one before: RFC 2961's
    /// `1 + Δ` (default 2, the RFC's `Δ = 1`: 0.5 s, 1 s, 2 s). At least 1.
    pub retransmit_factor: u32,
    /// RFC 2961 refresh reduction (default `true`; see
    /// [Refresh reduction](self#refresh-reduction-rfc-2961)): the Refresh-Reduction-Capable
    /// flag on everything sent; to neighbors that set it too, trigger messages with a
    /// MESSAGE_ID that is acknowledged and retransmitted until it is, and refreshes of
    /// acknowledged state summarized in Srefresh messages. Neighbors that do not set the flag
    /// get classic refreshes. `false`: none of it (received RFC 2961 messages are ignored).
    pub refresh_reduction: bool,
    /// How long an acknowledgment, a MESSAGE_ID_NACK or a summary refresh may wait to be
    /// carried by another message to the same neighbor or batched with others (default
    /// 20 ms). Taken as [`MAX_ACK_DELAY`] (100 ms) when longer: it must stay well below the
    /// first retransmission delay.
    pub ack_delay: Duration,
    /// This engine's own addresses (the transport's): messages sent to one of them are
    /// delivered to the engine itself; to another loopback address, only when they are for
    /// state this engine holds (see [Local delivery](self#local-delivery)). Two engines on
    /// one host must not share one.
    pub local_addrs: Vec<IpAddr>,
    /// Seed of the refresh-jitter RNG (deterministic tests pass a fixed seed).
    pub rng_seed: u64,
    /// Deliver messages for this engine's own state to itself instead of transmitting them
    /// (see [Local delivery](self#local-delivery); default `true`).
    pub local_delivery: bool,
    /// Most sessions the engine keeps; a Path that would create more is refused with a
    /// PathErr (code 23) and counted (default 1 048 576, about 350 MB of state at most).
    /// Sessions opened through the API are not limited by it.
    pub max_sessions: usize,
    /// How long a local sender waits for the first Resv, and a local receiver for the first
    /// Path, before its owner is told [`Event::NoReceiver`] / [`Event::NoSender`] (see
    /// [Waiting for the peer](self#waiting-for-the-peer)); `None`: never told. Default
    /// [`DEFAULT_PEER_WAIT`] (3 s).
    pub peer_wait: Option<Duration>,
    /// The RFC 2747 INTEGRITY keys: messages to and from a neighbor a key covers are signed
    /// and must verify (default: none, nothing signed or required). Replaced at run time with
    /// [`Engine::set_keys`]. Give the engine the wall clock too ([`Engine::set_wall_clock`]):
    /// see [Integrity](self#integrity).
    pub integrity: KeyChain,
    /// RFC 2961 Bundle messages (default `true`; only with [`Self::refresh_reduction`], and
    /// only to neighbors known to be Refresh-Reduction-Capable; see
    /// [Refresh reduction](self#refresh-reduction-rfc-2961)): RSVP messages queued for one
    /// such neighbor between two [`Engine::poll_transmit`] calls are packed into Bundles of
    /// up to [`MAX_BUNDLE_BYTES`]. `false`: every message goes in its own datagram (received
    /// Bundles are still taken apart).
    pub bundling: bool,
    /// Most bytes of state (sessions, path and reservation states, tracked neighbors, as
    /// [`Stats::state_bytes`] accounts them) the engine holds before it refuses new state
    /// from the network (dropped, counted in [`Stats::memory_refused`], [`Stats::memory_full`]
    /// set). Sessions and states the local API creates are not refused (the caller bounds
    /// them) but count. Default [`DEFAULT_MAX_STATE_BYTES`] (256 MiB). See
    /// [Bounds](self#bounds).
    pub max_state_bytes: usize,
    /// What one neighbor (one IP source address) may make this engine hold and send (see
    /// [Bounds](self#bounds)).
    pub neighbor_limits: NeighborLimits,
}

/// The default [`EngineConfig::ack_delay`]: 20 ms.
pub const DEFAULT_ACK_DELAY: Duration = Duration::from_millis(20);

/// The longest [`EngineConfig::ack_delay`]: 100 ms (longer ones are taken as it).
pub const MAX_ACK_DELAY: Duration = Duration::from_millis(100);

/// Most bytes of a Bundle message the engine sends (header and sub-messages with their
/// INTEGRITY objects): 1 400, as its Ack and Srefresh messages, which leaves room in a
/// 1 500-byte MTU for the IP header and options.
pub const MAX_BUNDLE_BYTES: usize = 1400;

/// The default [`EngineConfig::max_state_bytes`]: 256 MiB, about 700 000 sessions of
/// network-created path state.
pub const DEFAULT_MAX_STATE_BYTES: usize = 256 << 20;

/// What one neighbor — one IP source address of received datagrams — may make the engine
/// hold and send; see [Bounds](self#bounds). [`Default`] gives limits that no legitimate
/// peer of a host reaches (thousands of reservations, a burst of thousands of new ones) while
/// a flood from one address cannot take the whole engine.
///
/// Non-exhaustive: start from [`NeighborLimits::default`] (or [`NeighborLimits::unlimited`])
/// and set the fields you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NeighborLimits {
    /// Most sessions a neighbor's Paths may create and keep alive (sessions a local owner
    /// opened are not counted). Default 16 384.
    pub sessions: usize,
    /// Most path states (one per sender and session) from one neighbor. Default 65 536.
    pub paths: usize,
    /// Most reservation states from one neighbor. Default 65 536.
    pub reservations: usize,
    /// New states (path or reservation states, sessions with them) a neighbor may create per
    /// second, on average... Default 1 024.
    pub new_state_rate: u32,
    /// ...and at once (the bucket size). Default 4 096.
    pub new_state_burst: u32,
    /// Error messages (PathErr, ResvErr) and held-back answers (see
    /// [Bounds](self#bounds)) one neighbor's datagrams may cause per second... Default 32.
    pub answer_rate: u32,
    /// ...and at once. Default 64.
    pub answer_burst: u32,
    /// Most neighbors tracked at once; neighbors that hold no state and have been quiet are
    /// forgotten to make room, and while the table is full of others a new neighbor can
    /// create no state and cause no error message. Default 4 096.
    pub max_neighbors: usize,
}

impl Default for NeighborLimits {
    fn default() -> Self {
        NeighborLimits {
            sessions: 16_384,
            paths: 65_536,
            reservations: 65_536,
            new_state_rate: 1024,
            new_state_burst: 4096,
            answer_rate: 32,
            answer_burst: 64,
            max_neighbors: 4096,
        }
    }
}

impl NeighborLimits {
    /// No per-neighbor limit at all (benchmarks, or a peer that is trusted entirely): quotas
    /// and buckets at their maximum. The amplification budget of each datagram and
    /// [`EngineConfig::max_state_bytes`] still apply.
    pub fn unlimited() -> Self {
        NeighborLimits {
            sessions: usize::MAX,
            paths: usize::MAX,
            reservations: usize::MAX,
            new_state_rate: u32::MAX,
            new_state_burst: u32::MAX,
            answer_rate: u32::MAX,
            answer_burst: u32::MAX,
            max_neighbors: usize::MAX,
        }
    }
}

/// The shortest refresh period `R` the engine uses: 100 ms.
///
/// A peer's TIME_VALUES below it is taken as 100 ms (its state then lives
/// `(K + 0.5) · 1.5 · 100 ms`, 525 ms with `K = 3`), and so is an
/// [`EngineConfig::refresh_period`] below it. Counted in [`Stats::refresh_clamped`].
pub const MIN_REFRESH_PERIOD: Duration = Duration::from_millis(100);

/// The longest refresh period `R` the engine uses: 1 hour.
///
/// A peer's TIME_VALUES above it is taken as 1 hour, so state it sets up expires at most
/// `(K + 0.5) · 1.5 · 1 h` (5 h 15 min with `K = 3`) after its last refresh — not the 261 days
/// the 32-bit field allows. An [`EngineConfig::refresh_period`] above it is taken as 1 hour
/// too (peers running this engine would clamp it anyway). Counted in
/// [`Stats::refresh_clamped`].
pub const MAX_REFRESH_PERIOD: Duration = Duration::from_secs(3600);

/// The default [`EngineConfig::peer_wait`]: 3 s.
///
/// The first Path or Resv is retransmitted 0.5 s, 1.5 s and 3.5 s after it was first sent
/// (the default [`EngineConfig::fast_retransmit_initial`], doubling): 3 s covers the first two
/// retransmissions and their answers' round trips with room to spare, so one or even two lost
/// messages do not make a present peer look absent, while an application still hears within
/// a few seconds of `connect`/`accept` that its peer signals nothing — well before it would
/// time out waiting for a reservation.
pub const DEFAULT_PEER_WAIT: Duration = Duration::from_secs(3);

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            refresh_period: Duration::from_secs(30),
            keep_multiplier: 3,
            fast_retransmit_initial: Duration::from_millis(500),
            fast_retransmit_count: 3,
            retransmit_factor: 2,
            refresh_reduction: true,
            ack_delay: DEFAULT_ACK_DELAY,
            local_addrs: Vec::new(),
            rng_seed: 0x5eed,
            local_delivery: true,
            max_sessions: 1 << 20,
            peer_wait: Some(DEFAULT_PEER_WAIT),
            integrity: KeyChain::default(),
            bundling: true,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            neighbor_limits: NeighborLimits::default(),
        }
    }
}

/// A datagram received by the transport.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// IP source address of the datagram.
    pub source: IpAddr,
    /// IP destination address of the datagram.
    pub destination: IpAddr,
    /// IP TTL / hop limit as received, when the transport knows it (RFC 2205 §3.1.1
    /// compares it with the common header's Send_TTL).
    pub ttl: Option<u8>,
    /// The RSVP message (common header first).
    pub payload: &'a [u8],
}

/// A datagram the engine wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it (next hop or session destination).
    pub destination: IpAddr,
    /// Source address to send from, when it matters (the RSVP_HOP address).
    pub source: Option<IpAddr>,
    /// `true` for Path, PathTear and ResvConf-style messages that routers must intercept
    /// (IP Router Alert option on raw transports).
    pub router_alert: bool,
    /// IP TTL to send with (equals the common header's Send_TTL).
    pub ttl: u8,
    /// The encoded RSVP message, checksum filled in.
    pub payload: Vec<u8>,
}

/// Something that happened to a session's reservation, told to its owner, in order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Event {
    /// Client (data receiver): the server's PATH arrived.
    PathReceived {
        /// The data sender.
        sender: SocketAddr,
        /// The sender's traffic description.
        tspec: TokenBucket,
    },
    /// Server (data sender): the client's RESV arrived.
    ResvReceived {
        /// The reservation requested.
        flowspec: FlowSpec,
        /// The reservation style requested.
        style: Style,
    },
    /// The reservation is in force: on the server when the RESV was admitted and the rule
    /// loaded (or, without signaling, when the rule was loaded); on the client when the
    /// confirmation arrived.
    Established {
        /// The reservation in force.
        flowspec: FlowSpec,
    },
    /// A reservation confirmation (ResvConf) arrived.
    Confirmed {
        /// The confirmed reservation.
        flowspec: FlowSpec,
    },
    /// A PathErr arrived or was generated.
    PathError {
        /// The RSVP error (code and value, RFC 2205 Appendix B).
        error: RsvpError,
        /// The node that detected the error.
        node: IpAddr,
    },
    /// A ResvErr arrived or was generated.
    ResvError {
        /// The RSVP error (code and value, RFC 2205 Appendix B).
        error: RsvpError,
        /// The node that detected the error.
        node: IpAddr,
    },
    /// Admission control refused the reservation, here or at the peer.
    AdmissionDenied {
        /// The RSVP error: an admission control failure (code 1) or a policy control failure
        /// (code 2).
        error: RsvpError,
        /// Why.
        reason: String,
    },
    /// The reservation was torn down (by the peer, or by `close`/drop here).
    TornDown {
        /// Why.
        reason: String,
    },
    /// The peer stopped refreshing and the soft state expired.
    Expired {
        /// Which state expired.
        reason: String,
    },
    /// Client (data receiver): no PATH arrived within [`EngineConfig::peer_wait`] of the
    /// reservation request (Winsock GQoS's `WSA_QOS_NO_SENDERS`). Most likely the server
    /// does not signal at all — a plain TCP server, or a host without an RSVP agent — or its
    /// PATHs do not get through.
    ///
    /// Status, not an error: the connection carries on best effort, nothing is sent on the
    /// wire for it, and a PATH that arrives later is answered as usual (`PathReceived`, then
    /// `Established`). Told once at most (to every receiver of the session), and never once
    /// a PATH has arrived or the session was released.
    NoSender {
        /// How long the receiver waited (the configured wait; longer only if the timer ran
        /// late).
        waited: Duration,
    },
    /// Server (data sender): no RESV (nor a PathErr) answered the PATH within
    /// [`EngineConfig::peer_wait`] of the sender's registration (Winsock GQoS's
    /// `WSA_QOS_NO_RECEIVERS`). Most likely the client does not signal at all — a plain TCP
    /// client, or a host without an RSVP agent — or the messages do not get through.
    ///
    /// Status, not an error: the connection carries on best effort, the PATH goes on being
    /// refreshed, nothing else is sent for it, and a RESV that arrives later is admitted as
    /// usual (`ResvReceived`, then `Established`). Told at most once per sender, and never
    /// once an answer has arrived or the session was released.
    NoReceiver {
        /// How long the sender waited (the configured wait; longer only if the timer ran
        /// late).
        waited: Duration,
    },
}

impl Event {
    /// Whether this event is an error or the end, the kinds delivered with `.notify(false)`.
    ///
    /// [`Event::NoSender`] and [`Event::NoReceiver`] are neither: they report a peer that has
    /// not signaled (yet), and the reservation may still follow.
    pub fn is_error_or_end(&self) -> bool {
        matches!(
            self,
            Event::PathError { .. }
                | Event::ResvError { .. }
                | Event::AdmissionDenied { .. }
                | Event::TornDown { .. }
                | Event::Expired { .. }
        )
    }
}

/// A change the enforcer must apply. Every `Install` is followed, eventually, by exactly one
/// `Remove` of the same id.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleAction {
    /// Load a new rule for an admitted reservation.
    Install {
        /// The session the rule belongs to.
        session: SessionId,
        /// The rule.
        rule: Rule,
    },
    /// Change an installed rule's parameters (a modified reservation that passed admission).
    Modify {
        /// The session the rule belongs to.
        session: SessionId,
        /// The rule with its new parameters.
        rule: Rule,
    },
    /// Unload a rule.
    Remove {
        /// The session the rule belonged to.
        session: SessionId,
        /// The rule to remove.
        id: RuleId,
    },
}

/// Why the enforcer could not apply a rule (or the policy revoked it): becomes a ResvErr
/// with `error` and an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFailure {
    /// The RSVP error: a traffic control error (21) or traffic control system error (22)
    /// from [`EnforceError::rsvp_error`](crate::enforce::EnforceError::rsvp_error), or a
    /// policy control failure (2) for a revoked reservation.
    pub error: RsvpError,
    /// Why, readable.
    pub reason: String,
}

/// Errors of local commands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The session id is not (or no longer) known.
    #[error("unknown session {0:?}")]
    UnknownSession(SessionId),
    /// The command does not fit the session's role (e.g. `add_sender` on a receiver session).
    #[error("invalid command for this session: {0}")]
    Invalid(&'static str),
    /// Admission control refused an unsignaled rule.
    #[error(transparent)]
    Denied(#[from] crate::flow::AdmissionDenied),
    /// The session table has no room for another session (2^24 - 1 sessions, counting those
    /// learned from the network).
    #[error("session table full: release (close) sessions before opening more")]
    TableFull,
}

/// Counters of what the engine saw, for logs and monitoring.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams handled.
    pub received: u64,
    /// Datagrams that failed to decode or validate.
    pub malformed: u64,
    /// Valid messages answered with an error (unknown session, no path state, …).
    pub rejected: u64,
    /// Datagrams produced (a Bundle is one).
    pub transmitted: u64,
    /// Messages delivered to this engine itself (see [Local delivery](self#local-delivery)).
    pub local_delivered: u64,
    /// PathErr and ResvErr messages sent (transmitted, held back for a later send, or
    /// delivered locally); suppressed ones are in [`Stats::answers_suppressed`].
    pub errors_sent: u64,
    /// PathErr and ResvErr messages received.
    pub errors_received: u64,
    /// Path and reservation states that timed out.
    pub expired: u64,
    /// Messages this host ignored because they are not for it or arrived for state it no
    /// longer has (e.g. a ResvConf for a released session, a duplicate teardown).
    pub ignored: u64,
    /// Path messages whose received IP TTL differed from their Send_TTL: non-RSVP routers
    /// forwarded them (RFC 2205 §2.9). Paths with an unknown TTL are not counted.
    pub non_rsvp_hops: u64,
    /// Messages this engine built but the codec could not encode (too long for RSVP's 16-bit
    /// lengths): logged and not sent.
    pub encode_failed: u64,
    /// Messages dropped because they did not come from the neighbor the state they would
    /// change or remove records, or from a node this host signals to (PathErr, ResvErr,
    /// ResvConf), and ResvConfs nobody asked for (see [Neighbors](self#neighbors)).
    pub wrong_neighbor: u64,
    /// Path messages dropped because their session's destination is not this host (see
    /// [Neighbors](self#neighbors)): a host keeps path state only for sessions to itself.
    pub not_for_us: u64,
    /// Path and Resv messages whose TIME_VALUES refresh period was outside
    /// [`MIN_REFRESH_PERIOD`]`..=`[`MAX_REFRESH_PERIOD`] and was clamped to it.
    pub refresh_clamped: u64,
    /// Datagrams dropped because a keyed neighbor sent them without INTEGRITY (see
    /// [Integrity](self#integrity)).
    pub integrity_missing: u64,
    /// Datagrams dropped because their INTEGRITY names a key this engine does not hold for
    /// their sender (also: INTEGRITY from a neighbor no key covers, and Integrity Challenges
    /// about a key we do not hold).
    pub integrity_unknown_key: u64,
    /// Datagrams dropped because their keyed digest did not verify.
    pub integrity_bad_digest: u64,
    /// Datagrams dropped because their sequence number was seen already or is older than
    /// the replay window.
    pub integrity_replayed: u64,
    /// Authentic datagrams dropped because the sender's sequence state is not known yet (an
    /// integrity handshake is under way).
    pub integrity_unverified: u64,
    /// Integrity Challenges sent (RFC 2747 §4.3).
    pub challenges_sent: u64,
    /// Integrity Challenges answered with an Integrity Response.
    pub challenges_answered: u64,
    /// Integrity Responses that answered our challenge and started a replay window.
    pub handshakes_completed: u64,
    /// Messages not sent because of the [bounds](self#bounds) on answers: over their
    /// datagram's byte budget with no answer token of its neighbor left, or errors beyond the
    /// neighbor's answer rate. (Soft state heals: a suppressed Resv is sent again by its
    /// retransmission or refresh timer.)
    pub answers_suppressed: u64,
    /// Messages over their datagram's byte budget sent a moment later instead, within the
    /// neighbor's answer rate (see [Bounds](self#bounds)).
    pub answers_deferred: u64,
    /// New state from the network refused by a per-neighbor quota or new-state rate, or
    /// because the neighbor table was full ([`NeighborLimits`]).
    pub neighbor_refused: u64,
    /// New state from the network refused because the engine held
    /// [`EngineConfig::max_state_bytes`].
    pub memory_refused: u64,
    /// Whether the last attempt to create state from the network found the engine at
    /// [`EngineConfig::max_state_bytes`] (a gauge: cleared by the next one that fits).
    pub memory_full: bool,
    /// Bytes of state as the engine accounts them against
    /// [`EngineConfig::max_state_bytes`] (a gauge): per session its slot, index and timer
    /// share and its lists (owners, senders, path and reservation states with their filter
    /// lists); tracked neighbors are added when the cap is checked. Close to, and never far
    /// above, [`Engine::state_bytes`], which measures capacities exactly (refresh reduction's
    /// message-id indexes are counted there, not here).
    pub state_bytes: u64,
    /// Refresh reduction (RFC 2961, see [Refresh reduction](self#refresh-reduction-rfc-2961)):
    /// MESSAGE_ID_ACK objects sent (in Ack messages or carried by other messages).
    pub acks_sent: u64,
    /// MESSAGE_ID_ACK objects received that acknowledged one of our messages.
    pub acks_received: u64,
    /// MESSAGE_ID_NACK objects sent (for summary-refreshed ids we hold no state for).
    pub nacks_sent: u64,
    /// MESSAGE_ID_NACK objects received for our ids (each brings back a full message).
    pub nacks_received: u64,
    /// Srefresh messages sent (retransmissions included).
    pub srefresh_sent: u64,
    /// Srefresh messages never acknowledged after every retransmission: the neighbor does
    /// not process them (it restarted without refresh reduction, say), so the states they
    /// named get their full messages again, as if NACKed.
    pub srefresh_given_up: u64,
    /// Message ids summary-refreshed in the Srefresh messages sent.
    pub srefresh_ids_sent: u64,
    /// Srefresh messages received.
    pub srefresh_received: u64,
    /// Message ids in the Srefresh messages received that refreshed state.
    pub srefresh_ids_refreshed: u64,
    /// Ack messages (type 13) sent.
    pub ack_messages_sent: u64,
    /// Path and Resv messages sent again while unanswered or unacknowledged (staged
    /// retransmissions, and refreshes of a message never answered), and Srefresh messages
    /// sent again while unacknowledged.
    pub retransmissions: u64,
    /// Bundle messages received (their sub-messages are processed one by one).
    pub bundles_received: u64,
    /// Bundle messages sent ([`EngineConfig::bundling`]); each counts as one datagram in
    /// [`Stats::transmitted`].
    pub bundles_sent: u64,
    /// Messages sent inside the Bundles of [`Stats::bundles_sent`].
    pub bundled_messages: u64,
    /// Messages dropped as out of order: a MESSAGE_ID older than the last one seen for the
    /// same state.
    pub out_of_order: u64,
    /// Neighbors seen to restart (a new MESSAGE_ID epoch): their former ids were voided.
    pub neighbor_restarts: u64,
    /// PathTear, ResvTear, PathErr, ResvErr and ResvConf messages sent to a capable neighbor
    /// with a MESSAGE_ID asking for an acknowledgment, held for retransmission until it
    /// comes (first transmissions; see [Refresh reduction](self#refresh-reduction-rfc-2961)).
    pub reliable_sent: u64,
    /// Retransmissions of those messages.
    pub reliable_retransmissions: u64,
    /// Those messages given up unacknowledged after the last retransmission (or because the
    /// neighbor stopped doing refresh reduction).
    pub reliable_given_up: u64,
    /// Those messages dropped from the retransmission queue because it held 4 096 messages
    /// or 4 MiB (the oldest goes; it was sent once).
    pub reliable_dropped: u64,
}

/// The RSVP engine. See the [module documentation](self).
pub struct Engine {
    config: EngineConfig,
    admission: Box<dyn Admission>,
    clock: Clock,
    /// Session slab; `None` marks a free slot (listed in `free`).
    sessions: Vec<Option<Session>>,
    free: Vec<u32>,
    /// Slots the slab may grow to ([`sessions::SLOT_LIMIT`]; unit tests lower it).
    slot_limit: u32,
    /// Session key → slot.
    index: KeyIndex,
    /// Open owners and tracked rules (their ids carry their session's slot, so no map is
    /// needed to find them).
    owner_total: usize,
    rule_total: usize,
    timers: Timers,
    rng: SmallRng,
    next_session: u64,
    next_rule: u64,
    transmits: VecDeque<Transmit>,
    /// How many transmits at the front of `transmits` are final: the rest may still be
    /// packed into Bundles (`bundle.rs`).
    settled: usize,
    events: VecDeque<(SessionId, Event)>,
    actions: VecDeque<RuleAction>,
    /// Messages handlers produced, sent once their session is back in place.
    outbox: Vec<outbox::Queued>,
    /// Messages delivered to ourselves, processed before the call that produced them returns.
    local: VecDeque<(IpAddr, IpAddr, Msg)>,
    stats: Stats,
    /// INTEGRITY sequence numbers, replay windows and handshakes (`integrity.rs`).
    integrity: integrity::IntegrityState,
    /// Per-neighbor quotas and buckets (see [Bounds](self#bounds)).
    neighbors: Neighbors,
    /// The source and arrival of the datagram whose message is being handled (`None` for
    /// local deliveries, commands and timers): new state is charged to it.
    origin: Option<(IpAddr, Instant)>,
    /// The datagram being answered and its byte budget (`None` outside `handle_datagram`).
    answering: Option<Answering>,
    /// Answers over their datagram's budget, sent at the next `handle_timeout` (due at once).
    deferred: VecDeque<Transmit>,
    deferred_at: Option<Instant>,
    /// RFC 2961 refresh reduction: epoch, message ids, neighbors' capabilities and ids,
    /// pending acknowledgments and summary refreshes (`reduction.rs`).
    reduction: reduction::Reduction,
    /// RFC 2961 reliable delivery of tears, errors and ResvConfs: copies held until
    /// acknowledged (`reliable.rs`).
    reliable: reliable::Reliable,
    /// Refresh rounds: steady refreshes and summarized states' checks in slot order
    /// (`round.rs`).
    rounds: [round::Round; 2],
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("sessions", &self.index.len())
            .field("owners", &self.owner_total)
            .field("rules", &self.rule_total)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Creates an engine that asks `admission` before installing any rule.
    ///
    /// # Examples
    ///
    /// ```
    /// use qtoq::engine::{Engine, EngineConfig};
    /// use qtoq::flow::AdmitAll;
    ///
    /// let engine = Engine::new(EngineConfig::default(), Box::new(AdmitAll));
    /// assert_eq!(engine.session_count(), 0);
    /// assert_eq!(engine.poll_timeout(), None);
    /// ```
    pub fn new(config: EngineConfig, admission: Box<dyn Admission>) -> Self {
        let rng = SmallRng::seed_from_u64(config.rng_seed);
        Engine {
            config,
            admission,
            clock: Clock::default(),
            sessions: Vec::new(),
            free: Vec::new(),
            slot_limit: sessions::SLOT_LIMIT,
            index: KeyIndex::new(),
            owner_total: 0,
            rule_total: 0,
            timers: Timers::default(),
            rng,
            next_session: 1,
            next_rule: 1,
            transmits: VecDeque::new(),
            settled: 0,
            events: VecDeque::new(),
            actions: VecDeque::new(),
            outbox: Vec::new(),
            local: VecDeque::new(),
            stats: Stats::default(),
            integrity: integrity::IntegrityState::default(),
            neighbors: Neighbors::default(),
            origin: None,
            answering: None,
            deferred: VecDeque::new(),
            deferred_at: None,
            reduction: reduction::Reduction::new(),
            rounds: round::rounds(),
            reliable: reliable::Reliable::new(),
        }
    }

    /// Creates a session for a local owner (`rapi_session`). A receiver session is primed to
    /// wait for the PATH of `key`.
    ///
    /// If path state for `key` is already known, an [`Event::PathReceived`] for each sender
    /// is queued at once.
    ///
    /// # Errors
    ///
    /// [`CommandError::TableFull`] when `key` has no session yet and the session table has no
    /// room for one (nothing is changed).
    pub fn open_session(
        &mut self,
        now: Instant,
        key: SessionKey,
    ) -> Result<SessionId, CommandError> {
        let id = self.cmd_open_session(now, key)?;
        self.drain_local(now);
        Ok(id)
    }

    /// Registers a local sender on the session (`rapi_sender`): a PATH goes out now and on every
    /// refresh; the engine expects a RESV.
    ///
    /// # Errors
    ///
    /// [`CommandError::UnknownSession`] for an unknown id; [`CommandError::Invalid`] when the
    /// session is a receiver or unsignaled session, or `sender` and the destination are of
    /// different address families. Adding the same sender again updates its Tspec.
    pub fn add_sender(
        &mut self,
        now: Instant,
        session: SessionId,
        sender: SocketAddr,
        tspec: TokenBucket,
    ) -> Result<(), CommandError> {
        let result = self.cmd_add_sender(now, session, sender, tspec);
        self.drain_local(now);
        result
    }

    /// Asks for a reservation (`rapi_reserve`) on a receiver session. If no PATH has arrived
    /// yet the request waits for it; the RESV goes to the previous hop from RSVP_HOP.
    ///
    /// Asking again replaces the request (a modified reservation).
    ///
    /// # Errors
    ///
    /// [`CommandError::UnknownSession`] for an unknown id; [`CommandError::Invalid`] when the
    /// session has local senders or an unsignaled rule.
    pub fn reserve(
        &mut self,
        now: Instant,
        session: SessionId,
        style: Style,
        flowspec: FlowSpec,
        confirm: bool,
    ) -> Result<(), CommandError> {
        let result = self.cmd_reserve(now, session, style, flowspec, confirm);
        self.drain_local(now);
        result
    }

    /// A rule marked *no signaling*: admission now, then a `RuleAction::Install`; no RSVP
    /// message is ever sent for this session.
    ///
    /// # Errors
    ///
    /// [`CommandError::Denied`] when admission control refuses; [`CommandError::UnknownSession`]
    /// and [`CommandError::Invalid`] (the session already sends, receives or has a rule).
    pub fn admit_unsignaled(
        &mut self,
        now: Instant,
        session: SessionId,
        flow: Flow,
        flowspec: FlowSpec,
    ) -> Result<RuleId, CommandError> {
        self.cmd_admit_unsignaled(now, session, flow, flowspec)
    }

    /// Tears the session down (`rapi_release` / `qtoq_close`): PathTear / ResvTear as its role
    /// asks, rules removed, state deleted. Unknown ids are ignored.
    ///
    /// The owner gets a last [`Event::TornDown`].
    pub fn release(&mut self, now: Instant, session: SessionId) {
        self.cmd_release(now, session);
        self.drain_local(now);
    }

    /// Tells the engine what became of a `RuleAction::Install`/`Modify`. On failure the
    /// reservation is refused with a ResvErr carrying the failure's error and an event.
    ///
    /// A failed `Install` is followed by a `Remove` of the same id (see [Rules](self#rules)).
    /// Outcomes for rules already removed are ignored.
    ///
    /// A failure reported for a rule that is *already in force* withdraws it the same way
    /// (`Remove`, ResvErr with the failure's error toward the receiver, event to the owner): the
    /// agent uses this when a policy reload or a closing schedule window revokes a reservation
    /// (code 2, policy control failure).
    pub fn rule_outcome(&mut self, now: Instant, id: RuleId, outcome: Result<(), RuleFailure>) {
        self.cmd_rule_outcome(now, id, outcome);
        self.drain_local(now);
    }

    /// Processes one received datagram. Bad input is counted, logged and answered with the
    /// RFC's error where one exists; it never panics.
    ///
    /// What is transmitted in answer is never more bytes than `datagram.payload`; more is
    /// held back for a moment or suppressed (see [Bounds](self#bounds)).
    pub fn handle_datagram(&mut self, now: Instant, datagram: Incoming<'_>) {
        // What was queued before may be bundled; this datagram's answers may not.
        self.pack_transmits();
        self.answering = Some(Answering {
            source: datagram.source,
            left: datagram.payload.len(),
            now,
        });
        self.on_datagram(now, datagram);
        self.drain_local(now);
        self.answering = None;
        self.settled = self.transmits.len();
    }

    /// Runs every timer due at or before `now` (refreshes, retransmissions, expiry), and
    /// sends the answers held back (see [Bounds](self#bounds)).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.integrity.tick(now);
        self.send_deferred();
        self.on_timeout(now);
        self.round_timeout(now);
        self.reduction_timeout(now);
        self.reliable_timeout(now);
        self.drain_local(now);
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) must be called, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self
            .timers
            .peek()
            .and_then(|(at, _)| self.clock.instant(at));
        let reduction = self.reduction_due();
        let reliable = self.reliable_due();
        let round = self.round_due();
        [timer, self.deferred_at, reduction, reliable, round]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether a datagram waits for [`poll_transmit`](Self::poll_transmit).
    pub fn has_transmit(&self) -> bool {
        !self.transmits.is_empty()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.pack_transmits();
        let transmit = self.transmits.pop_front()?;
        self.settled = self.settled.saturating_sub(1);
        Some(transmit)
    }

    /// Next event for a session's owner.
    pub fn poll_event(&mut self) -> Option<(SessionId, Event)> {
        self.events.pop_front()
    }

    /// Next rule change for the enforcer.
    pub fn poll_action(&mut self) -> Option<RuleAction> {
        self.actions.pop_front()
    }

    /// Tears, errors and ResvConfs sent to Refresh-Reduction-Capable neighbors and not
    /// acknowledged yet: they are retransmitted until they are (see
    /// [Refresh reduction](self#refresh-reduction-rfc-2961)). A driver that stops may linger
    /// while this is not zero, so that its last PathTears survive a lost datagram.
    pub fn unacknowledged(&self) -> usize {
        self.reliable_held()
    }

    /// Number of sessions with any state.
    pub fn session_count(&self) -> usize {
        self.index.len()
    }

    /// Number of local owners (open [`SessionId`]s).
    pub fn owner_count(&self) -> usize {
        self.owner_total
    }

    /// Number of rules installed or being installed (each will get exactly one
    /// [`RuleAction::Remove`]).
    pub fn rule_count(&self) -> usize {
        self.rule_total
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Replaces the INTEGRITY keys ([`EngineConfig::integrity`]), e.g. after a policy
    /// reload. The replay window (and any challenge outstanding) of a neighbor whose key
    /// remains unchanged (same identifier, algorithm and secret) is kept; those of keys
    /// removed or changed are forgotten (a neighbor is then challenged again).
    pub fn set_keys(&mut self, keys: KeyChain) {
        self.replace_keys(keys);
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }
}
