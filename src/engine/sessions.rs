//! The session table: the slab of sessions, the key index into it, and the ids that name a
//! session's slot (owner and rule ids), with the owner lifecycle (open, release).
//!
//! Handlers take a session out of its slot while they work on it and put it back at the end
//! (`put` reschedules its timer or deletes it when empty). Keeping the slab apart
//! from the processing rules lets every handler share one way in and out of the table.

use std::time::Instant;

use super::msg::{Hop, Msg};
use super::state::{Owner, Role, Session};
use super::timer::Ms;
use super::{CommandError, Engine, Event, SessionId, SessionKey};
use crate::flow::RuleId;
use crate::wire::MsgType;

/// Bits of an owner or rule id that name the session's slab slot (the rest is a counter, so
/// ids are never reused).
const SLOT_BITS: u32 = 24;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
/// How many slots the slab may have: the last slot number stays unused, so that ids ending
/// in it name no session.
pub(super) const SLOT_LIMIT: u32 = (1 << SLOT_BITS) - 1;
/// Most path states (senders) and reservation states one session keeps from the network.
pub(super) const MAX_STATES_PER_SESSION: usize = 64;

impl Engine {
    /// A new rule id for the session in `slot` (the id carries the slot).
    pub(super) fn new_rule_id(&mut self, slot: u32) -> RuleId {
        let id = RuleId(self.next_rule << SLOT_BITS | u64::from(slot));
        self.next_rule += 1;
        id
    }

    /// The slot of the session an id (owner or rule) was made for.
    pub(super) fn slot_of(id: u64) -> u32 {
        (id & SLOT_MASK) as u32
    }

    /// The slot of `key`'s session, if it exists.
    pub(super) fn lookup(&self, key: &SessionKey) -> Option<u32> {
        self.index.get(key, &self.sessions)
    }

    /// The slot of `key`'s session, created if needed (`limited`: refuse beyond
    /// `max_sessions`).
    pub(super) fn slot_for(&mut self, key: SessionKey, limited: bool) -> Option<u32> {
        if let Some(slot) = self.lookup(&key) {
            return Some(slot);
        }
        if limited && self.index.len() >= self.config.max_sessions {
            return None;
        }
        let session = Session::new(key);
        self.account_new_session();
        let slot = match self.free.pop() {
            Some(slot) => {
                self.sessions[slot as usize] = Some(session);
                slot
            }
            None => {
                let limit = self.slot_limit;
                let Some(slot) = u32::try_from(self.sessions.len())
                    .ok()
                    .filter(|s| *s < limit)
                else {
                    self.account_deleted_session();
                    return None;
                };
                if self.sessions.len() == self.sessions.capacity() {
                    // Grow by an eighth: geometric (amortized O(1)) without doubling's slack.
                    let more = (self.sessions.len() / 8).max(16);
                    self.sessions.reserve_exact(more);
                }
                self.sessions.push(Some(session));
                slot
            }
        };
        self.index.insert(&key, slot, &self.sessions);
        Some(slot)
    }

    /// Takes a session out of its slot: its state leaves the accounted totals (see
    /// `neighbors.rs`) until `put` brings it back.
    pub(super) fn take(&mut self, slot: u32) -> Option<Session> {
        let session = self.sessions.get_mut(slot as usize)?.take()?;
        self.timers.forget(slot);
        self.account_session(&session, false);
        if self.config.refresh_reduction {
            self.reduction_taken(slot, &session);
        }
        Some(session)
    }

    /// Takes out the session a received message names; a message for no known session is
    /// counted as ignored (the caller answers with an error where the RFC asks for one).
    pub(super) fn take_for_message(&mut self, msg: &Msg) -> Option<(u32, Session)> {
        let Some(slot) = self.lookup(&msg.session) else {
            self.stats.ignored += 1;
            return None;
        };
        Some((slot, self.take(slot)?))
    }

    /// Puts a session back: deletes it when nothing is left, else makes sure its earliest
    /// deadline is in the timer wheel.
    pub(super) fn put(&mut self, slot: u32, mut session: Session) {
        if !self.reduction.held.is_empty() {
            self.reduction_put(slot, &session);
        }
        if session.is_empty() {
            self.index.remove(&session.key, slot, &self.sessions);
            self.free.push(slot);
            self.account_deleted_session();
            return;
        }
        self.account_session(&session, true);
        let next = session.next_deadline();
        if next < session.scheduled {
            session.scheduled = next;
            self.timers.push(next, slot);
        }
        if let Some(place) = self.sessions.get_mut(slot as usize) {
            *place = Some(session);
        }
    }

    /// A deadline of the session at `slot` was changed in place to `deadline` (a refresh: no
    /// list grew or shrank, nothing the accounting counts changed): the timer follows when
    /// it is now the earliest. Cheaper than `take` + `put`, which re-walk the session's
    /// lists for the accounting and read its owners (cache misses at scale).
    ///
    /// `scheduled` is never later than any deadline (see `put`), so only the changed one can
    /// move it.
    pub(super) fn refreshed_in_place(&mut self, slot: u32, deadline: Ms) {
        let Some(session) = self
            .sessions
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        if deadline < session.scheduled {
            session.scheduled = deadline;
            // The entry found live before is stale now (as after a `take`).
            self.timers.forget(slot);
            self.timers.push(deadline, slot);
        }
    }

    /// Takes a session out of its slot for work that changes no list and nothing else the
    /// accounting counts (only deadlines and per-state fields): its contribution stays in the
    /// totals, so nothing may consult them (`admit_state`) until `put_unchanged`.
    pub(super) fn take_unchanged(&mut self, slot: u32) -> Option<Session> {
        let session = self.sessions.get_mut(slot as usize)?.take()?;
        self.timers.forget(slot);
        Some(session)
    }

    /// Puts back a session taken with `take_unchanged` (not empty: nothing was removed).
    pub(super) fn put_unchanged(&mut self, slot: u32, mut session: Session) {
        debug_assert!(!session.is_empty());
        let next = session.next_deadline();
        if next < session.scheduled {
            session.scheduled = next;
            self.timers.push(next, slot);
        }
        if let Some(place) = self.sessions.get_mut(slot as usize) {
            *place = Some(session);
        }
    }

    pub(super) fn cmd_open_session(
        &mut self,
        now: Instant,
        key: SessionKey,
    ) -> Result<SessionId, CommandError> {
        self.clock.ms(now);
        // Owners are bounded by the caller, not by `max_sessions` (that limits the network).
        let Some(slot) = self.slot_for(key, false) else {
            tracing::warn!(session = ?key, "session slab full; session not opened");
            return Err(CommandError::TableFull);
        };
        let id = SessionId(self.next_session << SLOT_BITS | u64::from(slot));
        self.next_session += 1;
        self.owner_total += 1;
        let Some(mut session) = self.take(slot) else {
            return Ok(id);
        };
        session.owners.push(Owner {
            id,
            role: Role::Primed,
        });
        for psb in &session.psbs {
            self.events.push_back((
                id,
                Event::PathReceived {
                    sender: psb.sender,
                    tspec: psb.tspec,
                },
            ));
        }
        self.put(slot, session);
        Ok(id)
    }

    /// The slot and owner index of `id`, taking the session out.
    pub(super) fn owner_session(
        &mut self,
        id: SessionId,
    ) -> Result<(u32, Session, usize), CommandError> {
        let slot = Self::slot_of(id.0);
        let session = self.take(slot).ok_or(CommandError::UnknownSession(id))?;
        match session.owner_index(id) {
            Some(index) => Ok((slot, session, index)),
            None => {
                self.put(slot, session);
                Err(CommandError::UnknownSession(id))
            }
        }
    }

    pub(super) fn cmd_release(&mut self, now: Instant, id: SessionId) {
        let now = self.clock.ms(now);
        let Ok((slot, mut session, index)) = self.owner_session(id) else {
            return;
        };
        let owner = session.owners.remove(index);
        self.owner_total -= 1;
        match owner.role {
            Role::Primed => {}
            Role::Unsignaled(rule) => self.remove_rule(id, rule.id),
            Role::Sender => {
                let mut i = 0;
                while i < session.senders.len() {
                    if session.senders[i].owner != id {
                        i += 1;
                        continue;
                    }
                    let local = session.senders.remove(i);
                    let mut tear = Msg::new(MsgType::PathTear, session.key);
                    tear.hop = Some(Hop {
                        addr: local.sender.ip(),
                        lih: 0,
                    });
                    tear.sender = Some(local.sender);
                    tear.tspec = Some(local.tspec);
                    let (destination, source) = (session.key.destination.ip(), local.sender.ip());
                    self.queue_for(&session, tear, destination, source);
                    if let Some(rule) = local.rule {
                        self.remove_rule(id, rule.id);
                    }
                }
                // Reservations for senders that are gone mean nothing any more.
                let senders = &session.senders;
                session
                    .rsbs
                    .retain(|rsb| senders.iter().any(|s| rsb.filter.covers(s.sender)));
            }
            Role::Receiver(request) => {
                if session.has_receivers() {
                    self.request_changed(&mut session, now);
                } else {
                    let mut phops: Vec<Hop> = Vec::new();
                    for psb in &session.psbs {
                        if !phops.iter().any(|h| h.addr == psb.phop.addr) {
                            phops.push(psb.phop);
                        }
                    }
                    for phop in phops {
                        let tear = self.resv_msg(&session, &request, phop, true);
                        let source = session.key.destination.ip();
                        self.queue_for(&session, tear, phop.addr, source);
                    }
                    session.recv = None;
                }
            }
        }
        self.emit(
            id,
            Event::TornDown {
                reason: "released by the local owner".into(),
            },
        );
        self.put(slot, session);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use super::super::{CommandError, Engine, EngineConfig, SessionKey};
    use crate::flow::AdmitAll;

    fn key(port: u16) -> SessionKey {
        SessionKey {
            destination: SocketAddr::from(([10, 0, 0, 2], port)),
            protocol: 6,
        }
    }

    #[test]
    fn open_session_reports_a_full_table() {
        let mut engine = Engine::new(EngineConfig::default(), Box::new(AdmitAll));
        // The real limit is 2^24 - 1 sessions: too many for a unit test.
        engine.slot_limit = 2;
        let now = Instant::now();
        engine.open_session(now, key(1)).unwrap();
        let second = engine.open_session(now, key(2)).unwrap();
        // Another owner of a session that exists takes no slot.
        engine.open_session(now, key(1)).unwrap();
        assert_eq!(
            engine.open_session(now, key(3)),
            Err(CommandError::TableFull)
        );
        assert_eq!(engine.session_count(), 2);
        assert_eq!(engine.owner_count(), 3);
        // A released session gives its slot back.
        engine.release(now, second);
        let third = engine.open_session(now, key(3)).unwrap();
        assert!(engine.session_info(third).is_some());
    }
}
