//! Random interactions (commands, drops, time advances, admission and enforcer failures)
//! against the engine's invariants:
//! - no rule is loaded without a live reservation (or an unsignaled owner) behind it;
//! - every installed rule is removed exactly once (checked by the recording enforcer as it
//!   goes, and at the end);
//! - admission control holds resources for exactly the rules the engine tracks;
//! - no session state is left once every owner released and the timers ran out.

mod engine_support;

use std::time::Duration;

use engine_support::*;
use proptest::prelude::*;
use qtoq::engine::{OwnerRole, RuleFailure, SessionId, Style};
use qtoq::flow::Flow;
use qtoq::wire::{ErrorCode, RsvpError};

#[derive(Debug, Clone)]
enum Op {
    /// Client primes + reserves, server adds its sender, on connection `port`.
    Open(u8),
    /// Server side only (the client comes later, or never).
    OpenServer(u8),
    /// Client side only.
    OpenClient(u8),
    ReleaseServer(u8),
    ReleaseClient(u8),
    /// The client changes its reservation.
    Modify(u8, u32),
    Unsignaled(u8),
    ReleaseUnsignaled(u8),
    Advance(u32),
    Loss(u8),
    Deny(bool),
    FailRules(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..6).prop_map(Op::Open),
        1 => (0u8..6).prop_map(Op::OpenServer),
        1 => (0u8..6).prop_map(Op::OpenClient),
        2 => (0u8..6).prop_map(Op::ReleaseServer),
        2 => (0u8..6).prop_map(Op::ReleaseClient),
        1 => ((0u8..6), 1u32..1_000_000).prop_map(|(p, r)| Op::Modify(p, r)),
        1 => (0u8..4).prop_map(Op::Unsignaled),
        1 => (0u8..4).prop_map(Op::ReleaseUnsignaled),
        5 => (1u32..200_000).prop_map(Op::Advance),
        1 => (0u8..60).prop_map(Op::Loss),
        1 => any::<bool>().prop_map(Op::Deny),
        1 => any::<bool>().prop_map(Op::FailRules),
    ]
}

struct World {
    f: Flow2,
    servers: Vec<Option<SessionId>>,
    clients: Vec<Option<SessionId>>,
    unsignaled: Vec<Option<SessionId>>,
}

impl World {
    fn port(i: u8) -> u16 {
        45_000 + u16::from(i)
    }

    fn open_client(&mut self, i: u8) {
        if self.clients[i as usize].is_some() {
            return;
        }
        let k = key(sock(v4(2), Self::port(i)));
        let id = self.f.net.with(self.f.client, |e, now| {
            let id = e.open_session(now, k).unwrap();
            e.reserve(now, id, Style::FixedFilter, flowspec(), true)
                .unwrap();
            id
        });
        self.clients[i as usize] = Some(id);
    }

    fn open_server(&mut self, i: u8) {
        if self.servers[i as usize].is_some() {
            return;
        }
        let k = key(sock(v4(2), Self::port(i)));
        let sender = self.f.sender;
        let id = self.f.net.with(self.f.server, |e, now| {
            let id = e.open_session(now, k).unwrap();
            e.add_sender(now, id, sender, tspec()).unwrap();
            id
        });
        self.servers[i as usize] = Some(id);
    }

    fn apply(&mut self, op: &Op) {
        let (server, client) = (self.f.server, self.f.client);
        match *op {
            Op::Open(i) => {
                self.open_client(i);
                self.open_server(i);
            }
            Op::OpenServer(i) => self.open_server(i),
            Op::OpenClient(i) => self.open_client(i),
            Op::ReleaseServer(i) => {
                if let Some(id) = self.servers[i as usize].take() {
                    self.f.net.with(server, |e, now| e.release(now, id));
                }
            }
            Op::ReleaseClient(i) => {
                if let Some(id) = self.clients[i as usize].take() {
                    self.f.net.with(client, |e, now| e.release(now, id));
                }
            }
            Op::Modify(i, rate) => {
                if let Some(id) = self.clients[i as usize] {
                    self.f
                        .net
                        .with(client, |e, now| {
                            e.reserve(
                                now,
                                id,
                                Style::FixedFilter,
                                flowspec_rate(rate as f32),
                                true,
                            )
                        })
                        .unwrap();
                }
            }
            Op::Unsignaled(i) => {
                if self.unsignaled[i as usize].is_some() {
                    return;
                }
                let flow = Flow {
                    sender: sock(v4(1), 9000 + u16::from(i)),
                    receiver: sock(v4(3), 9000),
                    protocol: 6,
                };
                let id = self.f.net.with(server, |e, now| {
                    let id = e.open_session(now, key(flow.receiver)).unwrap();
                    match e.admit_unsignaled(now, id, flow, flowspec()) {
                        Ok(_) => Some(id),
                        Err(_) => {
                            e.release(now, id);
                            None
                        }
                    }
                });
                self.unsignaled[i as usize] = id;
            }
            Op::ReleaseUnsignaled(i) => {
                if let Some(id) = self.unsignaled[i as usize].take() {
                    self.f.net.with(server, |e, now| e.release(now, id));
                }
            }
            Op::Advance(ms) => self.f.net.run_for(Duration::from_millis(u64::from(ms))),
            Op::Loss(p) => self.f.net.set_links(Link {
                loss: f64::from(p) / 100.0,
                duplicate: 0.05,
                jitter: Duration::from_millis(30),
                ..Link::default()
            }),
            Op::Deny(deny) => {
                if deny {
                    self.f.net.nodes[server]
                        .gate
                        .deny_with(RsvpError::BANDWIDTH_UNAVAILABLE, "no bandwidth");
                } else {
                    self.f.net.nodes[server].gate.allow();
                }
            }
            Op::FailRules(fail) => {
                self.f.net.nodes[server].fail_rules = fail.then(|| RuleFailure {
                    error: RsvpError::new(ErrorCode::TRAFFIC_CONTROL_SYSTEM_ERROR, 0),
                    reason: "kernel said no".into(),
                });
            }
        }
    }

    fn check(&self) {
        let now = self.f.net.now;
        for node in &self.f.net.nodes {
            // Every loaded rule is backed by live state in the engine.
            for (rule, owner) in &node.installed {
                let info = node
                    .engine
                    .session_info(*owner)
                    .unwrap_or_else(|| panic!("{}: rule {rule} of a gone owner", node.name));
                let mine = info
                    .rules
                    .iter()
                    .find(|r| r.id == *rule)
                    .unwrap_or_else(|| panic!("{}: rule {rule} unknown to its owner", node.name));
                if info.role == OwnerRole::Sender {
                    let live = info.reservations.iter().any(|r| {
                        r.expires.is_some_and(|t| t >= now)
                            && (r.senders.is_empty() || r.senders.contains(&mine.flow.sender))
                    });
                    assert!(
                        live,
                        "{}: rule {rule} without a live reservation",
                        node.name
                    );
                } else {
                    assert_eq!(info.role, OwnerRole::Unsignaled);
                }
            }
            assert_eq!(
                node.gate.held(),
                node.engine.rule_count(),
                "{}: admission holds resources for other rules than the engine",
                node.name
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_interactions_keep_the_invariants(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..50),
    ) {
        let mut world = World {
            f: two_hosts(seed),
            servers: vec![None; 6],
            clients: vec![None; 6],
            unsignaled: vec![None; 4],
        };
        for op in &ops {
            world.apply(op);
            world.check();
        }
        // Everyone leaves; the network heals; the timers run out.
        world.f.net.set_links(Link::default());
        for i in 0..6u8 {
            world.apply(&Op::ReleaseServer(i));
            world.apply(&Op::ReleaseClient(i));
        }
        for i in 0..4u8 {
            world.apply(&Op::ReleaseUnsignaled(i));
        }
        world.check();
        world.f.net.run_for(Duration::from_secs(1200));
        for node in &world.f.net.nodes {
            node.assert_rules_balanced();
            prop_assert_eq!(node.engine.session_count(), 0, "{} keeps sessions", node.name);
            prop_assert_eq!(node.engine.owner_count(), 0);
            prop_assert_eq!(node.engine.rule_count(), 0);
            prop_assert_eq!(node.gate.held(), 0);
            prop_assert_eq!(node.engine.poll_timeout(), None);
        }
    }
}
