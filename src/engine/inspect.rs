//! Read-only views of the engine's state, for logs, monitoring and tests.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::state::{Role, RuleState};
use super::{Engine, SessionId, SessionKey, Style};
use crate::flow::{Flow, RuleId};
use crate::wire::intserv::{FlowSpec, TokenBucket};
use crate::wire::RsvpError;

/// What a local owner does with its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnerRole {
    /// Opened, waiting for a PATH.
    Primed,
    /// Has local senders.
    Sender,
    /// Asked for a reservation.
    Receiver,
    /// Holds a rule marked *no signaling*.
    Unsignaled,
}

/// Path state received for a session.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PathInfo {
    /// The data sender.
    pub sender: SocketAddr,
    /// Its SENDER_TSPEC.
    pub tspec: TokenBucket,
    /// The previous hop (RSVP_HOP).
    pub previous_hop: IpAddr,
    /// When the state expires unless refreshed.
    pub expires: Option<Instant>,
    /// The last Path arrived with an IP TTL other than its common header's Send_TTL: routers
    /// that do not speak RSVP lie between the previous hop and us, so the reservation may not
    /// hold end to end (RFC 2205 §2.9). `false` when the transport did not report the TTL.
    pub non_rsvp_hops: bool,
}

/// Reservation state received for a session (on the data sender's side).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReservationInfo {
    /// The next hop the Resv came from.
    pub next_hop: IpAddr,
    /// Its style.
    pub style: Style,
    /// The senders it covers (empty: all, wildcard).
    pub senders: Vec<SocketAddr>,
    /// The reservation asked for.
    pub flowspec: FlowSpec,
    /// When the state expires unless refreshed.
    pub expires: Option<Instant>,
    /// The RSVP error it was refused with, if it was.
    pub refused: Option<RsvpError>,
}

/// A rule the engine asked the enforcer for.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RuleInfo {
    /// Its id.
    pub id: RuleId,
    /// The flow it applies to.
    pub flow: Flow,
    /// The parameters in force (or being applied).
    pub flowspec: FlowSpec,
    /// `true` once the enforcer confirmed it ([`Engine::rule_outcome`]).
    pub installed: bool,
}

/// One owner's view of its session: [`Engine::session_info`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The RSVP session.
    pub key: SessionKey,
    /// What this owner does.
    pub role: OwnerRole,
    /// Path state known for the session.
    pub paths: Vec<PathInfo>,
    /// Reservation state known for the session.
    pub reservations: Vec<ReservationInfo>,
    /// This owner's rules.
    pub rules: Vec<RuleInfo>,
    /// Receiver side: the ResvConf for the current request arrived.
    pub confirmed: bool,
}

impl Engine {
    /// What the engine holds for the owner `id`, or `None` for an unknown (released) id.
    pub fn session_info(&self, id: SessionId) -> Option<SessionInfo> {
        let slot = (id.0 & 0xff_ffff) as usize;
        let session = self.sessions.get(slot)?.as_ref()?;
        let owner = session.owners.iter().find(|o| o.id == id)?;
        let key = session.key;
        let mut rules = Vec::new();
        let role = match &owner.role {
            Role::Primed => OwnerRole::Primed,
            Role::Receiver(_) => OwnerRole::Receiver,
            Role::Sender => OwnerRole::Sender,
            Role::Unsignaled(rule) => {
                rules.push(RuleInfo {
                    id: rule.id,
                    flow: rule.flow,
                    flowspec: rule.flowspec,
                    installed: rule.installed,
                });
                OwnerRole::Unsignaled
            }
        };
        for local in session.senders.iter().filter(|s| s.owner == id) {
            if let Some(rule) = local.rule {
                rules.push(RuleInfo {
                    id: rule.id,
                    flow: Flow {
                        sender: local.sender,
                        receiver: key.destination,
                        protocol: key.protocol,
                    },
                    flowspec: rule.flowspec,
                    installed: rule.state != RuleState::Installing,
                });
            }
        }
        Some(SessionInfo {
            key,
            role,
            paths: session
                .psbs
                .iter()
                .map(|p| PathInfo {
                    sender: p.sender,
                    tspec: p.tspec,
                    previous_hop: p.phop.addr,
                    expires: self.clock.instant(self.rx_expiry(
                        self.clock.latest(),
                        slot as u32,
                        p.rx_id,
                        [p.phop.addr, p.sender.ip()],
                        p.expires_at,
                    )),
                    non_rsvp_hops: p.non_rsvp_hops,
                })
                .collect(),
            reservations: session
                .rsbs
                .iter()
                .map(|r| ReservationInfo {
                    next_hop: r.nhop.addr,
                    style: r.style,
                    senders: r.filter.senders(),
                    flowspec: r.flowspec,
                    expires: self.clock.instant(self.rx_expiry(
                        self.clock.latest(),
                        slot as u32,
                        r.rx_id,
                        [r.nhop.addr; 2],
                        r.expires_at,
                    )),
                    refused: r.refused,
                })
                .collect(),
            rules,
            confirmed: session.recv.as_ref().is_some_and(|r| r.confirmed),
        })
    }

    /// Approximate bytes of engine state, heap included (for the memory goal and monitoring).
    pub fn state_bytes(&self) -> usize {
        use std::mem::size_of;
        let mut bytes = size_of::<Self>()
            + self.sessions.capacity() * size_of::<Option<super::state::Session>>()
            + self.free.capacity() * 4
            + self.index.heap_bytes()
            + self.timers.heap_bytes()
            + self.reduction.heap_bytes()
            + self.reliable.heap_bytes();
        for session in self.sessions.iter().flatten() {
            bytes += session.heap_bytes();
        }
        bytes
    }
}
