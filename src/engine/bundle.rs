//! RFC 2961 §3 Bundle messages sent: the RSVP messages queued for one Refresh-Reduction-Capable
//! neighbor are packed into Bundles just before they are handed out ([`Engine::poll_transmit`]).
//!
//! How RFC 2961 is read here:
//!
//! * **Who gets Bundles** (§3.3): only a neighbor known to be capable — its last message set
//!   the Refresh-Reduction-Capable flag — and every sub-message is one that would have gone to
//!   that same neighbor alone: same IP destination, same source address of ours. The Bundle's
//!   IP destination is that neighbor.
//! * **Which messages**: Path, Resv, PathErr, ResvErr, PathTear, ResvTear and ResvConf. Path,
//!   PathTear and ResvConf are sent to the session's destination with Router Alert (so RSVP
//!   routers on the way intercept them); a host sends them to the receiving host, and when
//!   that host is itself a capable neighbor — it sent us RSVP messages directly, which it only
//!   does when no RSVP router is between us (else its Resvs go to that router) — it is the
//!   next RSVP hop, and a Bundle addressed to it is what §3.3 describes. Summary refreshes
//!   rest on the same reading (`reduction.rs` sends a capable receiving host Srefreshes).
//!   Ack, Srefresh and integrity handshake messages go alone.
//! * **The Bundle's header** (§3.1): type 12, the Refresh-Reduction-Capable flag set (the
//!   receiver notes capability from every message), its checksum filled in, and the Send_TTL
//!   of its sub-messages, which is also the IP TTL it is sent with (§3.1: "the IP TTL value
//!   with which the message was sent"): only messages of one Send_TTL share a Bundle, so the
//!   receiver's non-RSVP-hop check (IP TTL against each sub-message's Send_TTL) reads as if
//!   each had come alone. Sent without Router Alert (§3.3: Bundles are addressed to the
//!   neighbor).
//! * **INTEGRITY** (§3.1, §3.2 with RFC 2747): the Bundle format has no INTEGRITY of its own;
//!   "individual sub-messages may carry their own checksum as well as the INTEGRITY object".
//!   So each sub-message keeps the INTEGRITY it was signed with when it was queued, and the
//!   Bundle is not signed: its receiver checks each sub-message as if it came alone
//!   (`receive.rs`), with sequence numbers in the order they were sent. (A Bundle received
//!   with an INTEGRITY object first is still accepted, gated whole.)
//! * **Size and delay** (§3.3): at most [`MAX_BUNDLE_BYTES`]; no message is delayed to be
//!   bundled — what is queued between two `poll_transmit` calls is packed, greedily and in
//!   order, and a Bundle of one is not made.
//!
//! Answers produced while a datagram is handled ([`Engine::handle_datagram`]) are never packed:
//! the per-datagram answer budget (see [Bounds](super#bounds)) charges each of them as the
//! datagram it is, and a Bundle header would add bytes it did not charge. Those held back for
//! the next timeout are packed then, outside any budget like the rest of that timeout's output.

use std::collections::HashMap;
use std::net::IpAddr;

use super::msg::is_rfc2205;
use super::reduction::fill_checksum;
use super::{Engine, Transmit, MAX_BUNDLE_BYTES};
use crate::wire::{MsgType, COMMON_HEADER_LEN, FLAG_REFRESH_REDUCTION_CAPABLE, RSVP_VERSION};

impl Engine {
    /// Packs the transmits queued since the last call (those past `settled`) into Bundles
    /// where [`EngineConfig::bundling`](super::EngineConfig::bundling) allows; afterwards every
    /// transmit is settled.
    // Runs on every `poll_transmit`: kept a few instructions, inlined, with the packing itself
    // (seldom needed) out of line.
    #[inline]
    pub(super) fn pack_transmits(&mut self) {
        let from = self.settled.min(self.transmits.len());
        if self.transmits.len() - from >= 2 && self.config.bundling && self.config.refresh_reduction
        {
            self.pack_from(from);
        }
        self.settled = self.transmits.len();
    }

    #[inline(never)]
    fn pack_from(&mut self, from: usize) {
        let tail: Vec<Transmit> = self.transmits.drain(from..).collect();
        // Groups in queue order (a Bundle takes its first member's place); per destination,
        // the group still open for more members.
        let mut groups: Vec<Vec<Transmit>> = Vec::with_capacity(tail.len());
        let mut open: HashMap<IpAddr, (usize, usize)> = HashMap::new();
        for transmit in tail {
            if !self.bundleable(&transmit) {
                // Nothing queued after it to the same neighbor may overtake it.
                open.remove(&transmit.destination);
                groups.push(vec![transmit]);
                continue;
            }
            let len = transmit.payload.len();
            match open.get_mut(&transmit.destination) {
                Some((index, bytes))
                    if *bytes + len <= MAX_BUNDLE_BYTES
                        && groups[*index][0].source == transmit.source
                        && groups[*index][0].ttl == transmit.ttl =>
                {
                    *bytes += len;
                    groups[*index].push(transmit);
                }
                _ => {
                    open.insert(
                        transmit.destination,
                        (groups.len(), COMMON_HEADER_LEN + len),
                    );
                    groups.push(vec![transmit]);
                }
            }
        }
        for mut group in groups {
            if group.len() == 1 {
                self.transmits.extend(group.pop());
            } else {
                let bundle = self.bundle(group);
                self.transmits.push_back(bundle);
            }
        }
    }

    /// Whether a queued transmit may go in a Bundle: an RFC 2205 message from a known address
    /// of ours, small enough to share one, to a neighbor known to be capable.
    fn bundleable(&self, transmit: &Transmit) -> bool {
        let kind = transmit
            .payload
            .get(1)
            .and_then(|t| MsgType::from_number(*t));
        kind.is_some_and(is_rfc2205)
            && transmit.source.is_some()
            && 2 * transmit.payload.len() + COMMON_HEADER_LEN <= MAX_BUNDLE_BYTES
            && self.bundle_to(transmit.destination)
    }

    /// The Bundle of `members` (two or more, one destination, source and TTL; see the file
    /// documentation for its header).
    fn bundle(&mut self, members: Vec<Transmit>) -> Transmit {
        let len = COMMON_HEADER_LEN + members.iter().map(|m| m.payload.len()).sum::<usize>();
        let first = &members[0];
        let (destination, source, ttl) = (first.destination, first.source, first.ttl);
        let mut payload = Vec::with_capacity(len);
        // Within MAX_BUNDLE_BYTES, so the length fits its 16 bits.
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        payload.extend_from_slice(&[
            (RSVP_VERSION << 4) | FLAG_REFRESH_REDUCTION_CAPABLE,
            MsgType::Bundle.number(),
            0,
            0,
            ttl,
            0,
        ]);
        payload.extend_from_slice(&len16.to_be_bytes());
        for member in &members {
            payload.extend_from_slice(&member.payload);
        }
        fill_checksum(&mut payload);
        let count = members.len() as u64;
        self.stats.bundles_sent += 1;
        self.stats.bundled_messages += count;
        // Each member was counted as a datagram when it was queued; the Bundle is one.
        self.stats.transmitted = self.stats.transmitted.saturating_sub(count - 1);
        tracing::trace!(%destination, messages = count, bytes = len, "bundle");
        Transmit {
            destination,
            source,
            router_alert: false,
            ttl,
            payload,
        }
    }
}
