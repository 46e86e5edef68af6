//! Sans-IO RSVP soft-state engine for hosts (RFC 2205, processing rules of RFC 2209).
//!
//! Written in the style of `quinn-proto`: no tokio, no sockets, no system clock. The caller
//! feeds three kinds of input — datagrams ([`Engine::handle_datagram`]), local API commands
//! ([`Engine::open_session`], [`Engine::add_sender`], [`Engine::reserve`],
//! [`Engine::admit_unsignaled`], [`Engine::release`]) and timeouts ([`Engine::handle_timeout`])
//! — and drains the outputs: [`Engine::poll_transmit`], [`Engine::poll_event`],
//! [`Engine::poll_action`], and [`Engine::poll_timeout`] for the next deadline.
//!
//! CONTRACT NOTE (removed when implemented): the public signatures in this file are the
//! interface the agent (`src/agent`) is written against. Implementations may add items and
//! private state freely; changing a signature here must be coordinated.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::flow::{Admission, Flow, Rule, RuleId};
use crate::wire::intserv::{FlowSpec, TokenBucket};

/// Engine-local handle of one RSVP session as seen by one local owner (one connection).
///
/// Unique for the engine's life, never reused; the public API exposes it as
/// `QosStream::session_id()`.
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

/// Reservation style (RFC 2205 §1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Style {
    /// Fixed-Filter: one reservation per listed sender.
    FixedFilter,
    /// Shared-Explicit: one reservation shared by the listed senders.
    SharedExplicit,
    /// Wildcard-Filter: one reservation shared by all senders.
    WildcardFilter,
}

/// Engine configuration; [`Default`] gives the RFC 2205 defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Refresh period `R` this host announces in TIME_VALUES (default 30 s).
    pub refresh_period: Duration,
    /// `K`, the number of refreshes that may be lost before state expires (default 3).
    pub keep_multiplier: u32,
    /// First retransmission delay of an unanswered first Path/Resv (default 500 ms, doubling).
    pub fast_retransmit_initial: Duration,
    /// How many fast retransmissions are made before falling back to refreshes (default 3).
    pub fast_retransmit_count: u32,
    /// Addresses of this host: messages sent to one of them are delivered to the engine itself.
    pub local_addrs: Vec<IpAddr>,
    /// Seed of the refresh-jitter RNG (deterministic tests pass a fixed seed).
    pub rng_seed: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            refresh_period: Duration::from_secs(30),
            keep_multiplier: 3,
            fast_retransmit_initial: Duration::from_millis(500),
            fast_retransmit_count: 3,
            local_addrs: Vec::new(),
            rng_seed: 0x5eed,
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

/// What a session's owner is told. The public API maps these onto `QosEvent`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A PATH for the session arrived (receiver side): the sender and its traffic.
    PathReceived {
        /// The data sender.
        sender: SocketAddr,
        /// The sender's SENDER_TSPEC.
        tspec: TokenBucket,
    },
    /// A RESV arrived (sender side) asking for this reservation.
    ResvReceived {
        /// The requested reservation.
        flowspec: FlowSpec,
        /// The requested style.
        style: Style,
    },
    /// The reservation is in place: sender side when the rule is loaded, receiver side when the
    /// ResvConf arrived (or when the Resv was sent, if no confirmation was asked).
    Established {
        /// The reservation now in force.
        flowspec: FlowSpec,
    },
    /// A ResvConf arrived for this session's reservation.
    Confirmed {
        /// The confirmed reservation.
        flowspec: FlowSpec,
    },
    /// A PathErr arrived (sender side) or was generated.
    PathError {
        /// RSVP error code.
        code: u8,
        /// RSVP error value.
        value: u16,
        /// Node that detected the error.
        node: IpAddr,
    },
    /// A ResvErr arrived (receiver side) or was generated.
    ResvError {
        /// RSVP error code.
        code: u8,
        /// RSVP error value.
        value: u16,
        /// Node that detected the error.
        node: IpAddr,
    },
    /// Admission control refused the reservation (locally, or reported by the peer's ResvErr
    /// code 1/2).
    AdmissionDenied {
        /// RSVP error code (1 or 2).
        code: u8,
        /// RSVP error value.
        value: u16,
        /// Why.
        reason: String,
    },
    /// The peer tore the session down (PathTear / ResvTear) or the owner released it.
    TornDown {
        /// Why, readable.
        reason: String,
    },
    /// Soft state expired: the peer stopped refreshing.
    Expired {
        /// Which state expired, readable.
        reason: String,
    },
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

/// Why the enforcer could not apply a rule: becomes a ResvErr with code 21 (traffic control
/// error) or 22 (policy/system error) and an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFailure {
    /// RSVP error code (21 or 22).
    pub code: u8,
    /// RSVP error value.
    pub value: u16,
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
}

/// Counters of what the engine saw, for logs and `qosctl`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handled.
    pub received: u64,
    /// Datagrams that failed to decode or validate.
    pub malformed: u64,
    /// Valid messages answered with an error (unknown session, no path state, …).
    pub rejected: u64,
    /// Datagrams produced.
    pub transmitted: u64,
}

/// The RSVP engine. See the [module documentation](self).
pub struct Engine {
    _config: EngineConfig,
    _admission: Box<dyn Admission>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

#[allow(unused_variables, clippy::todo)] // CONTRACT: bodies are the engine work (issue 3)
impl Engine {
    /// Creates an engine that asks `admission` before installing any rule.
    pub fn new(config: EngineConfig, admission: Box<dyn Admission>) -> Self {
        Engine {
            _config: config,
            _admission: admission,
        }
    }

    /// Creates a session for a local owner (`rapi_session`). A receiver session is primed to
    /// wait for the PATH of `key`.
    pub fn open_session(&mut self, now: Instant, key: SessionKey) -> SessionId {
        todo!()
    }

    /// Registers a local sender on the session (`rapi_sender`): a PATH goes out now and on every
    /// refresh; the engine expects a RESV.
    pub fn add_sender(
        &mut self,
        now: Instant,
        session: SessionId,
        sender: SocketAddr,
        tspec: TokenBucket,
    ) -> Result<(), CommandError> {
        todo!()
    }

    /// Asks for a reservation (`rapi_reserve`) on a receiver session. If no PATH has arrived
    /// yet the request waits for it; the RESV goes to the previous hop from RSVP_HOP.
    pub fn reserve(
        &mut self,
        now: Instant,
        session: SessionId,
        style: Style,
        flowspec: FlowSpec,
        confirm: bool,
    ) -> Result<(), CommandError> {
        todo!()
    }

    /// A rule marked *no signaling*: admission now, then a `RuleAction::Install`; no RSVP
    /// message is ever sent for this session.
    pub fn admit_unsignaled(
        &mut self,
        now: Instant,
        session: SessionId,
        flow: Flow,
        flowspec: FlowSpec,
    ) -> Result<RuleId, CommandError> {
        todo!()
    }

    /// Tears the session down (`rapi_release` / `qtoq_close`): PathTear / ResvTear as its role
    /// asks, rules removed, state deleted. Unknown ids are ignored.
    pub fn release(&mut self, now: Instant, session: SessionId) {
        todo!()
    }

    /// Tells the engine what became of a `RuleAction::Install`/`Modify`. On failure the
    /// reservation is refused with a ResvErr (code 21/22) and an event.
    pub fn rule_outcome(&mut self, now: Instant, id: RuleId, outcome: Result<(), RuleFailure>) {
        todo!()
    }

    /// Processes one received datagram. Bad input is counted, logged and answered with the
    /// RFC's error where one exists; it never panics.
    pub fn handle_datagram(&mut self, now: Instant, datagram: Incoming<'_>) {
        todo!()
    }

    /// Runs every timer due at or before `now` (refreshes, retransmissions, expiry).
    pub fn handle_timeout(&mut self, now: Instant) {
        todo!()
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) must be called, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        todo!()
    }

    /// Next event for a session's owner.
    pub fn poll_event(&mut self) -> Option<(SessionId, Event)> {
        todo!()
    }

    /// Next rule change for the enforcer.
    pub fn poll_action(&mut self) -> Option<RuleAction> {
        todo!()
    }

    /// Number of sessions with any state.
    pub fn session_count(&self) -> usize {
        todo!()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        todo!()
    }
}
