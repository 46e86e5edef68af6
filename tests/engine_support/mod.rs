//! Deterministic simulation harness for the engine (in the spirit of quinn's `Pair`): engines
//! joined by simulated links with delay, loss, duplication and reordering, a virtual clock,
//! a seeded RNG and a recording enforcer that checks the rule invariants as it goes.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qtoq::engine::{
    Engine, EngineConfig, Event, Incoming, RuleAction, RuleFailure, SessionId, SessionKey, Style,
};
use qtoq::flow::{Admission, AdmissionDenied, AdmissionGrant, AdmissionRequest, AdmitAll, RuleId};
use qtoq::wire::intserv::{FlowSpec, TokenBucket};
use qtoq::wire::RsvpError;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub const SEC: Duration = Duration::from_secs(1);

pub fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

pub fn sock(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

pub fn key(destination: SocketAddr) -> SessionKey {
    SessionKey {
        destination,
        protocol: 6,
    }
}

pub fn tspec() -> TokenBucket {
    TokenBucket::new(125_000.0, 10_000.0)
}

pub fn flowspec() -> FlowSpec {
    FlowSpec::ControlledLoad(tspec())
}

pub fn flowspec_rate(rate: f32) -> FlowSpec {
    FlowSpec::ControlledLoad(TokenBucket::new(rate, 10_000.0))
}

/// Link behaviour, per direction.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub delay: Duration,
    /// Extra random delay in `[0, jitter]` (reorders messages).
    pub jitter: Duration,
    pub loss: f64,
    pub duplicate: f64,
    /// Never drop more than this many consecutive copies of the same message stream
    /// (message type + session); `None`: no cap.
    pub max_consecutive_loss: Option<u32>,
    /// Drop everything (a silent or dead peer).
    pub down: bool,
}

impl Link {
    /// A link that drops everything (a silent or dead peer).
    pub fn down() -> Self {
        Link {
            down: true,
            ..Link::default()
        }
    }
}

impl Default for Link {
    fn default() -> Self {
        Link {
            delay: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            max_consecutive_loss: None,
            down: false,
        }
    }
}

/// An admission control whose answer tests can change, shared with the test body.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    pub deny: Arc<Mutex<Option<AdmissionDenied>>>,
    /// Admitted rule → flowspec currently held.
    pub held: Arc<Mutex<HashMap<RuleId, FlowSpec>>>,
}

impl Gate {
    pub fn deny_with(&self, error: RsvpError, reason: &str) {
        *self.deny.lock().unwrap() = Some(AdmissionDenied::new(error, reason));
    }
    pub fn allow(&self) {
        *self.deny.lock().unwrap() = None;
    }
    pub fn held(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Admission for Gate {
    fn admit(&mut self, request: &AdmissionRequest) -> Result<AdmissionGrant, AdmissionDenied> {
        if let Some(denied) = self.deny.lock().unwrap().clone() {
            return Err(denied);
        }
        self.held
            .lock()
            .unwrap()
            .insert(request.rule, request.flowspec);
        Ok(AdmissionGrant::default())
    }
    fn release(&mut self, rule: RuleId) {
        self.held.lock().unwrap().remove(&rule);
    }
}

/// One simulated host.
pub struct Node {
    pub name: &'static str,
    pub addr: IpAddr,
    pub engine: Engine,
    pub gate: Gate,
    /// Every event, with the virtual time it was drained at.
    pub events: Vec<(Instant, SessionId, Event)>,
    /// Every rule action, in order.
    pub actions: Vec<(Instant, RuleAction)>,
    /// What the recording enforcer answers to the next installs/modifies.
    pub fail_rules: Option<RuleFailure>,
    /// Rules the enforcer holds now.
    pub installed: BTreeMap<RuleId, SessionId>,
    /// Every datagram delivered to the node: (time, message type, source).
    pub received: Vec<(Instant, u8, IpAddr)>,
    /// Installs and removes per rule over the whole run.
    pub installs: HashMap<RuleId, u32>,
    pub removes: HashMap<RuleId, u32>,
}

impl Node {
    /// Path states (PSBs) the engine holds for session `id`.
    pub fn path_count(&self, id: SessionId) -> usize {
        self.engine.session_info(id).unwrap().paths.len()
    }

    /// Reservation states (RSBs) the engine holds for session `id`.
    pub fn reservation_count(&self, id: SessionId) -> usize {
        self.engine.session_info(id).unwrap().reservations.len()
    }

    pub fn events_of(&self, id: SessionId) -> Vec<Event> {
        self.events
            .iter()
            .filter(|(_, s, _)| *s == id)
            .map(|(_, _, e)| e.clone())
            .collect()
    }

    pub fn take_events(&mut self) -> Vec<(SessionId, Event)> {
        self.events.drain(..).map(|(_, s, e)| (s, e)).collect()
    }

    /// Times at which messages of `msg_type` were delivered to this node.
    pub fn received_at(&self, msg_type: u8) -> Vec<Instant> {
        self.received
            .iter()
            .filter(|(_, t, _)| *t == msg_type)
            .map(|(at, _, _)| *at)
            .collect()
    }

    pub fn install_count(&self) -> usize {
        self.actions
            .iter()
            .filter(|(_, a)| matches!(a, RuleAction::Install { .. }))
            .count()
    }

    pub fn remove_count(&self) -> usize {
        self.actions
            .iter()
            .filter(|(_, a)| matches!(a, RuleAction::Remove { .. }))
            .count()
    }

    /// Every Install has exactly one Remove, and nothing is left loaded.
    pub fn assert_rules_balanced(&self) {
        for (id, n) in &self.installs {
            assert_eq!(*n, 1, "{}: rule {id} installed {n} times", self.name);
            assert_eq!(
                self.removes.get(id).copied().unwrap_or(0),
                1,
                "{}: rule {id} not removed exactly once",
                self.name
            );
        }
        assert!(
            self.installed.is_empty(),
            "{}: rules left: {:?}",
            self.name,
            self.installed
        );
    }
}

#[derive(Debug)]
struct Packet {
    to: usize,
    from_addr: IpAddr,
    dst_addr: IpAddr,
    ttl: u8,
    payload: Vec<u8>,
}

/// The SESSION object of an encoded message (what names its stream for
/// [`Link::max_consecutive_loss`]), wherever it sits (RFC 2961 objects and INTEGRITY come
/// before it); the first 12 bytes after the header when there is none (Ack, Srefresh).
pub fn session_bytes(payload: &[u8]) -> &[u8] {
    let mut offset = 8;
    while let Some(h) = payload.get(offset..offset + 4) {
        let len = usize::from(u16::from_be_bytes([h[0], h[1]]));
        if len < 4 {
            break;
        }
        if h[2] == 1 {
            return payload.get(offset..offset + len).unwrap_or(&[]);
        }
        offset += len;
    }
    payload.get(8..20).unwrap_or(&[])
}

/// The sub-messages of a Bundle (after its 8-byte header; an INTEGRITY object first, which
/// the engine does not send, is not expected).
pub fn bundle_parts(payload: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut offset = 8;
    while let Some(h) = payload.get(offset..offset + 8) {
        let len = usize::from(u16::from_be_bytes([h[6], h[7]]));
        if len < 8 || offset + len > payload.len() {
            break;
        }
        parts.push(&payload[offset..offset + len]);
        offset += len;
    }
    parts
}

/// The simulated network.
pub struct Net {
    pub start: Instant,
    pub now: Instant,
    pub nodes: Vec<Node>,
    links: HashMap<(usize, usize), Link>,
    default_link: Link,
    in_flight: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    packets: HashMap<usize, Packet>,
    next_packet: usize,
    seq: u64,
    rng: SmallRng,
    consecutive_losses: HashMap<(usize, Vec<u8>), u32>,
    /// Per message type (common header byte 1): sent, dropped, duplicated.
    pub sent: HashMap<u8, u64>,
    pub dropped: HashMap<u8, u64>,
    pub undeliverable: u64,
    /// The first datagrams put on the wire (up to 64), for tests that replay or mutate them.
    pub captured: Vec<Vec<u8>>,
    /// When each datagram was sent, by whom, and its message type (the first 10 000).
    pub sent_log: Vec<(Instant, usize, u8)>,
    /// Bytes put on the wire (RSVP payloads), all nodes together.
    pub bytes_sent: u64,
    /// With `Some`, every datagram sent and every one delivered, in order (see [`Trace`]).
    pub trace: Option<Vec<Trace>>,
}

/// One datagram seen by [`Net::trace`]: sent by `node` (`delivered == false`) or delivered
/// to it (`true`).
#[derive(Debug, Clone)]
pub struct Trace {
    pub at: Instant,
    pub node: usize,
    pub delivered: bool,
    pub payload: Vec<u8>,
}

pub fn config(seed: u64) -> EngineConfig {
    let mut config = EngineConfig::default();
    config.rng_seed = seed;
    config
}

impl Net {
    pub fn new(seed: u64) -> Self {
        let start = Instant::now();
        Net {
            start,
            now: start,
            nodes: Vec::new(),
            links: HashMap::new(),
            default_link: Link::default(),
            in_flight: BinaryHeap::new(),
            packets: HashMap::new(),
            next_packet: 0,
            seq: 0,
            rng: SmallRng::seed_from_u64(seed),
            consecutive_losses: HashMap::new(),
            sent: HashMap::new(),
            dropped: HashMap::new(),
            undeliverable: 0,
            captured: Vec::new(),
            sent_log: Vec::new(),
            bytes_sent: 0,
            trace: None,
        }
    }

    /// Adds a host with the given address and engine configuration.
    pub fn add(&mut self, name: &'static str, addr: IpAddr, mut config: EngineConfig) -> usize {
        config.local_addrs.push(addr);
        let gate = Gate::default();
        let engine = Engine::new(config, Box::new(gate.clone()));
        self.nodes.push(Node {
            name,
            addr,
            engine,
            gate,
            events: Vec::new(),
            actions: Vec::new(),
            fail_rules: None,
            installed: BTreeMap::new(),
            received: Vec::new(),
            installs: HashMap::new(),
            removes: HashMap::new(),
        });
        self.nodes.len() - 1
    }

    /// Replaces a node's engine with a fresh one (a restarted host: all state lost). Rules the
    /// old engine had loaded are forgotten by the enforcer too (a restart flushes them).
    pub fn restart(&mut self, node: usize, config: EngineConfig) {
        let mut config = config;
        config.local_addrs.push(self.nodes[node].addr);
        let gate = Gate::default();
        let n = &mut self.nodes[node];
        n.engine = Engine::new(config, Box::new(gate.clone()));
        n.gate = gate;
        n.installed.clear();
        n.installs.clear();
        n.removes.clear();
        n.events.clear();
        n.actions.clear();
        n.received.clear();
    }

    pub fn set_link(&mut self, from: usize, to: usize, link: Link) {
        self.links.insert((from, to), link);
    }

    pub fn set_links(&mut self, link: Link) {
        self.default_link = link;
        self.links.clear();
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn link(&self, from: usize, to: usize) -> Link {
        self.links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default_link)
    }

    /// Drains every node's outputs: transmits go on the links, rule actions to the recording
    /// enforcer (which answers at once), events to the node's log.
    fn drain(&mut self) {
        loop {
            let mut progress = false;
            for i in 0..self.nodes.len() {
                while let Some(t) = self.nodes[i].engine.poll_transmit() {
                    progress = true;
                    self.route(i, t);
                }
                while let Some(action) = self.nodes[i].engine.poll_action() {
                    progress = true;
                    self.enforce(i, action);
                }
                let now = self.now;
                let node = &mut self.nodes[i];
                while let Some((id, event)) = node.engine.poll_event() {
                    node.events.push((now, id, event));
                }
            }
            if !progress {
                break;
            }
        }
    }

    fn enforce(&mut self, i: usize, action: RuleAction) {
        let now = self.now;
        let node = &mut self.nodes[i];
        node.actions.push((now, action.clone()));
        match action {
            RuleAction::Install { session, rule } => {
                *node.installs.entry(rule.id).or_default() += 1;
                assert!(
                    !node.removes.contains_key(&rule.id),
                    "{}: install after remove of {}",
                    node.name,
                    rule.id
                );
                match node.fail_rules.clone() {
                    None => {
                        node.installed.insert(rule.id, session);
                        node.engine.rule_outcome(now, rule.id, Ok(()));
                    }
                    Some(failure) => node.engine.rule_outcome(now, rule.id, Err(failure)),
                }
            }
            RuleAction::Modify { rule, .. } => {
                assert!(
                    node.installed.contains_key(&rule.id),
                    "{}: modify of a rule not loaded: {}",
                    node.name,
                    rule.id
                );
                let outcome = node.fail_rules.clone().map_or(Ok(()), Err);
                node.engine.rule_outcome(now, rule.id, outcome);
            }
            RuleAction::Remove { id, .. } => {
                let n = node.removes.entry(id).or_default();
                *n += 1;
                assert_eq!(*n, 1, "{}: {id} removed twice", node.name);
                assert!(
                    node.installs.contains_key(&id),
                    "{}: remove of a rule never installed: {id}",
                    node.name
                );
                node.installed.remove(&id);
            }
        }
    }

    fn route(&mut self, from: usize, t: qtoq::engine::Transmit) {
        let msg_type = t.payload.get(1).copied().unwrap_or(0);
        *self.sent.entry(msg_type).or_default() += 1;
        if self.captured.len() < 64 {
            self.captured.push(t.payload.clone());
        }
        if self.sent_log.len() < 10_000 {
            self.sent_log.push((self.now, from, msg_type));
        }
        self.bytes_sent += t.payload.len() as u64;
        if let Some(trace) = &mut self.trace {
            trace.push(Trace {
                at: self.now,
                node: from,
                delivered: false,
                payload: t.payload.clone(),
            });
        }
        let Some(to) = self.nodes.iter().position(|n| n.addr == t.destination) else {
            self.undeliverable += 1;
            return;
        };
        let link = self.link(from, to);
        // A Bundle's messages are each their own stream for the loss cap (it is lost only if
        // none of them is at its cap) and counted by their own types when dropped.
        let messages = if msg_type == 12 {
            bundle_parts(&t.payload)
        } else {
            vec![&t.payload[..]]
        };
        let streams: Vec<(usize, Vec<u8>)> = messages
            .iter()
            .map(|m| (to, [m.get(1..2).unwrap_or(&[]), session_bytes(m)].concat()))
            .collect();
        let lost = link.down || self.rng.random_bool(link.loss.clamp(0.0, 1.0));
        let capped = link.max_consecutive_loss.is_some_and(|cap| {
            streams
                .iter()
                .any(|s| self.consecutive_losses.get(s).copied().unwrap_or(0) >= cap)
        });
        if lost && (!capped || link.down) {
            for (stream, m) in streams.into_iter().zip(&messages) {
                *self.consecutive_losses.entry(stream).or_default() += 1;
                *self
                    .dropped
                    .entry(m.get(1).copied().unwrap_or(0))
                    .or_default() += 1;
            }
            return;
        }
        for stream in streams {
            self.consecutive_losses.insert(stream, 0);
        }
        let copies = if self.rng.random_bool(link.duplicate.clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if link.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_millis(self.rng.random_range(0..=link.jitter.as_millis() as u64))
            };
            let at = self.now + link.delay + jitter;
            let id = self.next_packet;
            self.next_packet += 1;
            self.packets.insert(
                id,
                Packet {
                    to,
                    from_addr: t.source.unwrap_or(self.nodes[from].addr),
                    dst_addr: t.destination,
                    ttl: t.ttl,
                    payload: t.payload.clone(),
                },
            );
            self.seq += 1;
            self.in_flight.push(Reverse((at, self.seq, id)));
        }
    }

    /// Hands raw bytes to a node's engine as if received from `from` (nothing drained).
    fn hand_over(&mut self, to: usize, from: IpAddr, payload: &[u8]) {
        let now = self.now;
        let dst = self.nodes[to].addr;
        self.nodes[to].engine.handle_datagram(
            now,
            Incoming {
                source: from,
                destination: dst,
                ttl: Some(64),
                payload,
            },
        );
    }

    /// Delivers raw bytes to a node as if received from `from`.
    pub fn inject(&mut self, to: usize, from: IpAddr, payload: &[u8]) {
        self.hand_over(to, from, payload);
        self.drain();
    }

    /// Like [`Net::inject`], and returns the bytes the node transmitted in answer, within
    /// the `handle_datagram` call (before rule actions are answered or timers run), with how
    /// many datagrams that was.
    pub fn inject_measured(&mut self, to: usize, from: IpAddr, payload: &[u8]) -> (usize, usize) {
        self.hand_over(to, from, payload);
        let mut answers = Vec::new();
        while let Some(t) = self.nodes[to].engine.poll_transmit() {
            answers.push(t);
        }
        let bytes = answers.iter().map(|t| t.payload.len()).sum();
        let count = answers.len();
        for t in answers {
            self.route(to, t);
        }
        self.drain();
        (bytes, count)
    }

    /// Runs a closure on a node's engine at the current virtual time, then drains.
    pub fn with<R>(&mut self, node: usize, f: impl FnOnce(&mut Engine, Instant) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.nodes[node].engine, now);
        self.drain();
        r
    }

    /// Advances virtual time by `d`, delivering packets and running timers as they fall due.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end);
    }

    pub fn run_until(&mut self, end: Instant) {
        self.drain();
        loop {
            let next_packet = self.in_flight.peek().map(|Reverse((at, _, _))| *at);
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.engine.poll_timeout())
                .min();
            let next = match (next_packet, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            while let Some(Reverse((at, _, id))) = self.in_flight.peek().copied() {
                if at > self.now {
                    break;
                }
                self.in_flight.pop();
                let Some(p) = self.packets.remove(&id) else {
                    continue;
                };
                let now = self.now;
                let msg_type = p.payload.get(1).copied().unwrap_or(0);
                self.nodes[p.to].received.push((now, msg_type, p.from_addr));
                if let Some(trace) = &mut self.trace {
                    trace.push(Trace {
                        at: now,
                        node: p.to,
                        delivered: true,
                        payload: p.payload.clone(),
                    });
                }
                self.nodes[p.to].engine.handle_datagram(
                    now,
                    Incoming {
                        source: p.from_addr,
                        destination: p.dst_addr,
                        ttl: Some(p.ttl),
                        payload: &p.payload,
                    },
                );
                self.drain();
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i]
                    .engine
                    .poll_timeout()
                    .is_some_and(|t| t <= self.now)
                {
                    let now = self.now;
                    self.nodes[i].engine.handle_timeout(now);
                    self.drain();
                }
            }
        }
        self.now = self.now.max(end);
    }

    /// Runs until the network is quiet and every timer has run out (bounded by `limit`).
    pub fn settle(&mut self, limit: Duration) {
        self.run_for(limit);
    }
}

/// A sender node and a receiver node with one signaled flow each way's owner.
pub struct Flow2 {
    pub net: Net,
    pub server: usize,
    pub client: usize,
    pub sender: SocketAddr,
    pub receiver: SocketAddr,
}

/// Two hosts 10.0.0.1 (server, data sender) and 10.0.0.2 (client, data receiver).
pub fn two_hosts(seed: u64) -> Flow2 {
    let mut net = Net::new(seed);
    let server = net.add("server", v4(1), config(seed ^ 1));
    let client = net.add("client", v4(2), config(seed ^ 2));
    Flow2 {
        net,
        server,
        client,
        sender: sock(v4(1), 8080),
        receiver: sock(v4(2), 40_000),
    }
}

/// As [`two_hosts`], with refresh reduction on or off at both (off: classic refreshes).
pub fn two_hosts_refreshing(seed: u64, refresh_reduction: bool) -> Flow2 {
    let mut f = two_hosts(seed);
    for node in [f.server, f.client] {
        let mut config = config(seed ^ node as u64);
        config.refresh_reduction = refresh_reduction;
        f.net.restart(node, config);
    }
    f
}

impl Flow2 {
    /// Client: primed + FF reservation with confirmation; server: session + sender.
    pub fn setup(&mut self, port: u16) -> (SessionId, SessionId) {
        let receiver = sock(self.receiver.ip(), port);
        let k = key(receiver);
        let c = self.net.with(self.client, |e, now| {
            let id = e.open_session(now, k).unwrap();
            e.reserve(now, id, Style::FixedFilter, flowspec(), true)
                .unwrap();
            id
        });
        let sender = self.sender;
        let s = self.net.with(self.server, |e, now| {
            let id = e.open_session(now, k).unwrap();
            e.add_sender(now, id, sender, tspec()).unwrap();
            id
        });
        (s, c)
    }
}

pub fn admit_all() -> Box<dyn Admission> {
    Box::new(AdmitAll)
}
