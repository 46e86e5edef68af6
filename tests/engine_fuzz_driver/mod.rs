//! Drives two engines with a sequence of operations decoded from raw bytes (datagrams with
//! source addresses, templated and mutated messages, time advances, local API calls, enforcer
//! failures) and checks the invariants after each: no panic, no datagram answered with more
//! bytes than it has, state within the cap, and at the end every rule installed was removed
//! exactly once and all state is gone. Shared by `tests/engine_fuzz.rs` (proptest, in CI) and
//! `fuzz/fuzz_targets/engine.rs` (cargo-fuzz).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use qtoq::engine::{
    Engine, EngineConfig, Incoming, RuleAction, RuleFailure, SessionId, SessionKey, Style,
};
use qtoq::flow::{AdmitAll, RuleId};
use qtoq::wire::intserv::{FlowSpec, TokenBucket};
use qtoq::wire::{
    ErrorCode, ErrorSpec, FilterSpec, Message, Object, ResvConfirm, RsvpError, RsvpHop, Session,
    Style as WireStyle, TimeValues,
};

/// The state cap the fuzzed engines run with.
pub const CAP: usize = 64 << 10;
/// What sessions a local owner opened may hold beyond the cap (the cap does not refuse them).
const OWNED_ALLOWANCE: usize = 256 << 10;

fn addr(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, [1, 2, 9, 8][usize::from(i % 4)]))
}

fn port(i: u8) -> u16 {
    [40_000, 40_001, 8080, 5000][usize::from(i % 4)]
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        a.to_vec()
    }
}

struct Node {
    engine: Engine,
    addr: IpAddr,
    installed: HashMap<RuleId, u32>,
    removed: HashMap<RuleId, u32>,
    loaded: HashMap<RuleId, ()>,
    fail: bool,
}

/// The two engines, their clock and what they sent.
pub struct Sim {
    nodes: Vec<Node>,
    now: Instant,
    owners: Vec<(usize, SessionId)>,
    captured: Vec<Vec<u8>>,
    /// Largest answer/datagram byte ratio seen (for reports).
    pub max_ratio: f64,
    pub datagrams: u64,
}

fn config(seed: u64, addr: IpAddr) -> EngineConfig {
    let mut config = EngineConfig::default();
    config.rng_seed = seed;
    config.local_addrs.push(addr);
    config.max_state_bytes = CAP;
    config.refresh_period = Duration::from_secs(5);
    config
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    pub fn new() -> Self {
        let nodes = (0..2u8)
            .map(|i| {
                let addr = addr(i);
                Node {
                    engine: Engine::new(config(u64::from(i) + 1, addr), Box::new(AdmitAll)),
                    addr,
                    installed: HashMap::new(),
                    removed: HashMap::new(),
                    loaded: HashMap::new(),
                    fail: false,
                }
            })
            .collect();
        Sim {
            nodes,
            now: Instant::now(),
            owners: Vec::new(),
            captured: Vec::new(),
            max_ratio: 0.0,
            datagrams: 0,
        }
    }

    /// Delivers `payload` from `source` to node `to`, checks its answer's size, and moves
    /// everything the engines then send (between themselves, in turn checked).
    fn deliver(&mut self, to: usize, source: IpAddr, payload: &[u8]) {
        let mut queue = vec![(to, source, payload.to_vec())];
        let mut hops = 0;
        while let Some((to, source, payload)) = queue.pop() {
            hops += 1;
            if hops > 10_000 {
                break;
            }
            let now = self.now;
            let node = &mut self.nodes[to];
            node.engine.handle_datagram(
                now,
                Incoming {
                    source,
                    destination: node.addr,
                    ttl: Some(64),
                    payload: &payload,
                },
            );
            self.datagrams += 1;
            let mut answered = 0;
            while let Some(t) = self.nodes[to].engine.poll_transmit() {
                answered += t.payload.len();
                self.route(to, t, &mut queue);
            }
            assert!(
                answered <= payload.len(),
                "{answered} bytes answered to a {}-byte datagram",
                payload.len()
            );
            if !payload.is_empty() {
                self.max_ratio = self.max_ratio.max(answered as f64 / payload.len() as f64);
            }
            self.settle(&mut queue);
        }
    }

    fn route(
        &mut self,
        from: usize,
        t: qtoq::engine::Transmit,
        queue: &mut Vec<(usize, IpAddr, Vec<u8>)>,
    ) {
        if self.captured.len() < 32 {
            self.captured.push(t.payload.clone());
        }
        let source = t.source.unwrap_or(self.nodes[from].addr);
        if let Some(to) = self.nodes.iter().position(|n| n.addr == t.destination) {
            queue.push((to, source, t.payload));
        }
    }

    /// Answers rule actions, runs timers due now, and collects what that sends.
    fn settle(&mut self, queue: &mut Vec<(usize, IpAddr, Vec<u8>)>) {
        for i in 0..self.nodes.len() {
            let now = self.now;
            loop {
                let mut progress = false;
                while let Some(action) = self.nodes[i].engine.poll_action() {
                    progress = true;
                    self.enforce(i, action);
                }
                if self.nodes[i]
                    .engine
                    .poll_timeout()
                    .is_some_and(|t| t <= now)
                {
                    progress = true;
                    self.nodes[i].engine.handle_timeout(now);
                }
                while let Some(t) = self.nodes[i].engine.poll_transmit() {
                    progress = true;
                    self.route(i, t, queue);
                }
                while self.nodes[i].engine.poll_event().is_some() {}
                if !progress {
                    break;
                }
            }
        }
    }

    fn enforce(&mut self, i: usize, action: RuleAction) {
        let now = self.now;
        let node = &mut self.nodes[i];
        match action {
            RuleAction::Install { rule, .. } => {
                let n = node.installed.entry(rule.id).or_default();
                *n += 1;
                assert_eq!(*n, 1, "rule {} installed twice", rule.id);
                assert!(!node.removed.contains_key(&rule.id), "install after remove");
                if node.fail {
                    let failure = RuleFailure {
                        error: RsvpError::new(ErrorCode::TRAFFIC_CONTROL_ERROR, 1),
                        reason: "fuzz".into(),
                    };
                    node.engine.rule_outcome(now, rule.id, Err(failure));
                } else {
                    node.loaded.insert(rule.id, ());
                    node.engine.rule_outcome(now, rule.id, Ok(()));
                }
            }
            RuleAction::Modify { rule, .. } => {
                assert!(
                    node.installed.contains_key(&rule.id),
                    "modify of an unknown rule"
                );
                node.engine.rule_outcome(now, rule.id, Ok(()));
            }
            RuleAction::Remove { id, .. } => {
                let n = node.removed.entry(id).or_default();
                *n += 1;
                assert_eq!(*n, 1, "rule {id} removed twice");
                assert!(
                    node.installed.contains_key(&id),
                    "remove of a rule never installed"
                );
                node.loaded.remove(&id);
            }
        }
    }

    /// Rules installed over the run, on both nodes.
    pub fn installs(&self) -> usize {
        self.nodes.iter().map(|n| n.installed.len()).sum()
    }

    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        let mut queue = Vec::new();
        loop {
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.engine.poll_timeout())
                .min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.settle(&mut queue);
                    while let Some((to, source, payload)) = queue.pop() {
                        self.deliver(to, source, &payload);
                    }
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn check_bounded(&self) {
        for node in &self.nodes {
            let bytes = node.engine.stats().state_bytes as usize;
            assert!(bytes <= CAP + OWNED_ALLOWANCE, "state {bytes} bytes");
        }
    }

    fn templated(&self, r: &mut Reader<'_>) -> Vec<u8> {
        let b = [
            r.byte().unwrap_or(0),
            r.byte().unwrap_or(0),
            r.byte().unwrap_or(0),
        ];
        let session = Session::new(SocketAddr::new(addr(b[1] >> 4), port(b[1])), 6);
        let hop = RsvpHop::new(addr(b[2]), u32::from(b[2] >> 2));
        let sender = FilterSpec::new(SocketAddr::new(addr(b[2] >> 4), port(b[2] >> 6)));
        let tv = TimeValues {
            refresh_period_ms: [0, 1, 1000, 5000, 30_000, u32::MAX][usize::from(b[0] >> 3) % 6],
        };
        let tspec = TokenBucket::new(f32::from(b[0]) * 1000.0, 10_000.0);
        let flowspec = FlowSpec::ControlledLoad(tspec);
        let style = [
            WireStyle::FixedFilter,
            WireStyle::SharedExplicit,
            WireStyle::WildcardFilter,
        ][usize::from(b[1] & 3) % 3];
        let error = ErrorSpec::new(addr(b[2]), ErrorCode(b[0] % 25), u16::from(b[1]));
        let n_filters = usize::from(b[2] % 5);
        let filters: Vec<FilterSpec> = (0..n_filters)
            .map(|i| {
                FilterSpec::new(SocketAddr::new(
                    addr((i as u8).wrapping_add(b[0])),
                    port((i as u8).wrapping_add(b[1])),
                ))
            })
            .collect();
        let msg = match b[0] % 7 {
            0 => Message::path(session, hop, tv, sender, tspec, None),
            1 => {
                let mut m = Message::resv(session, hop, tv, style, flowspec, &filters);
                if b[1] & 0x80 != 0 {
                    m.push(Object::ResvConfirm(ResvConfirm {
                        receiver: addr(b[2]),
                    }));
                }
                m
            }
            2 => Message::path_tear(session, hop, Some(sender)),
            3 => Message::resv_tear(session, hop, style, &filters),
            4 => Message::path_err(session, error, Some((sender, tspec))),
            5 => Message::resv_err(
                session,
                hop,
                error,
                style,
                Some(flowspec),
                &filters[..filters.len().min(1)],
            ),
            _ => Message::resv_conf(
                session,
                error,
                ResvConfirm {
                    receiver: addr(b[1]),
                },
                style,
                flowspec,
                &filters,
            ),
        };
        msg.encode().unwrap_or_default()
    }

    fn api(&mut self, r: &mut Reader<'_>) {
        let (a, b) = (r.byte().unwrap_or(0), r.byte().unwrap_or(0));
        let now = self.now;
        let node = usize::from(a & 1);
        // The sessions of the templated messages: toward either node, ports 40000/40001.
        let key = SessionKey {
            destination: SocketAddr::new(addr(b >> 4), [40_000, 40_001][usize::from(b & 1)]),
            protocol: 6,
        };
        let own = self.nodes[node].addr;
        let engine = &mut self.nodes[node].engine;
        match (a >> 1) % 5 {
            0 | 1 => {
                if let Ok(id) = engine.open_session(now, key) {
                    let result = if a >> 1 & 1 == 0 {
                        let style = [
                            Style::FixedFilter,
                            Style::SharedExplicit,
                            Style::WildcardFilter,
                        ][usize::from(b >> 1) % 3];
                        let flowspec = FlowSpec::ControlledLoad(TokenBucket::new(
                            f32::from(b) * 100.0 + 1.0,
                            10_000.0,
                        ));
                        engine.reserve(now, id, style, flowspec, b & 0x40 != 0)
                    } else {
                        let sender = SocketAddr::new(own, port(b >> 2));
                        engine.add_sender(now, id, sender, TokenBucket::new(125_000.0, 10_000.0))
                    };
                    let _ = result;
                    self.owners.push((node, id));
                }
            }
            2 | 3 => {
                if !self.owners.is_empty() {
                    let (node, id) = self.owners.remove(usize::from(b) % self.owners.len());
                    self.nodes[node].engine.release(now, id);
                }
            }
            _ => self.nodes[node].fail = b & 1 == 1,
        }
        let mut queue = Vec::new();
        self.settle(&mut queue);
        while let Some((to, source, payload)) = queue.pop() {
            self.deliver(to, source, &payload);
        }
    }

    /// Runs the operations `data` encodes, checking the invariants after each, then the end
    /// state.
    pub fn run(data: &[u8]) -> Sim {
        let mut sim = Sim::new();
        let mut r = Reader(data);
        let mut ops = 0;
        while let Some(op) = r.byte() {
            ops += 1;
            if ops > 256 {
                break;
            }
            match op % 8 {
                0 => {
                    let source = addr(r.byte().unwrap_or(0));
                    let to = usize::from(r.byte().unwrap_or(0) & 1);
                    let len = usize::from(r.byte().unwrap_or(0)) * 2;
                    let payload = r.take(len);
                    sim.deliver(to, source, &payload);
                }
                1 | 2 => {
                    let source = addr(r.byte().unwrap_or(0));
                    let to = usize::from(op >> 3 & 1);
                    let payload = sim.templated(&mut r);
                    sim.deliver(to, source, &payload);
                }
                3 => {
                    if let Some(mut payload) = (!sim.captured.is_empty()).then(|| {
                        sim.captured[usize::from(r.byte().unwrap_or(0)) % sim.captured.len()]
                            .clone()
                    }) {
                        let (at, flip) =
                            (usize::from(r.byte().unwrap_or(0)), r.byte().unwrap_or(1));
                        if !payload.is_empty() {
                            let len = payload.len();
                            payload[at % len] ^= flip | 1;
                        }
                        let to = usize::from(op >> 3 & 1);
                        sim.deliver(to, addr(r.byte().unwrap_or(0)), &payload);
                    }
                }
                4 | 5 => sim.api(&mut r),
                6 => {
                    let ms = u64::from(r.byte().unwrap_or(0)) * 40;
                    sim.advance(Duration::from_millis(ms));
                }
                _ => sim.advance(Duration::from_secs(u64::from(r.byte().unwrap_or(0)) * 4)),
            }
            sim.check_bounded();
        }
        sim.finish();
        sim
    }

    /// Releases every owner and lets all state expire: rules balanced, nothing left.
    fn finish(&mut self) {
        let now = self.now;
        for (node, id) in std::mem::take(&mut self.owners) {
            self.nodes[node].engine.release(now, id);
        }
        for node in &mut self.nodes {
            node.fail = false;
        }
        let mut queue = Vec::new();
        self.settle(&mut queue);
        while let Some((to, source, payload)) = queue.pop() {
            self.deliver(to, source, &payload);
        }
        // Longer than any lifetime a TIME_VALUES can announce (2^32 ms refreshes).
        for _ in 0..40 {
            self.advance(Duration::from_secs(86_400 * 10));
        }
        for node in &self.nodes {
            for (id, n) in &node.installed {
                assert_eq!(*n, 1);
                assert_eq!(node.removed.get(id), Some(&1), "rule {id} not removed");
            }
            assert!(node.loaded.is_empty(), "rules left loaded");
            assert_eq!(node.engine.owner_count(), 0);
            assert_eq!(node.engine.session_count(), 0, "sessions left");
            assert_eq!(
                node.engine.stats().state_bytes,
                0,
                "state accounting drifted"
            );
            assert_eq!(node.engine.rule_count(), 0);
        }
    }
}
