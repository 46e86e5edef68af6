//! A slow enforcer does not stall signaling (issue "Structure", point 5): while one rule load
//! of an agent is stuck (a netlink request that takes long), that agent still sets new
//! sessions up, refreshes the established ones and answers `accept`/`connect`; the stuck
//! session is established once its load completes, and a release of it waits for the load
//! (one rule's actions stay in order). Two agents on the in-memory network; the stuck load
//! is held by the test, and every wait is bounded.

mod agent_util;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_util::*;
use qtoq::agent::{MemoryNetwork, Transport};
use qtoq::enforce::{Applied, EnforceError, Enforcer, Recorded, Recording};
use qtoq::engine::EngineConfig;
use qtoq::flow::{Rule, RuleId};
use qtoq::{Agent, QosEvent, QosListener, QosSpec, QosStream, Reservation};
use tokio::sync::Notify;

/// The agents' refresh period: short, so a few refreshes fit in a test.
const REFRESH: Duration = Duration::from_millis(100);

/// How long a step that should not block may take.
const STEP: Duration = Duration::from_secs(5);

/// An enforcer whose installs for flows from one port wait until the test lets them go;
/// everything else is applied at once (on the synchronous path, as socket options are).
#[derive(Debug, Clone, Default)]
struct Gated {
    log: Arc<Mutex<Vec<Recorded>>>,
    /// Installs for flows sent from this port wait (0: none).
    held_port: Arc<AtomicU16>,
    /// Rung when a held install starts.
    entered: Arc<Notify>,
    /// Lets held installs go on.
    release: Arc<Notify>,
}

impl Gated {
    fn calls(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    fn push(&self, call: Recorded) {
        self.log.lock().unwrap().push(call);
    }

    fn held(&self, rule: &Rule) -> bool {
        rule.flow.sender.port() == self.held_port.load(Ordering::SeqCst)
    }

    fn applied() -> Applied {
        Applied {
            summary: "gated".into(),
        }
    }
}

#[async_trait::async_trait]
impl Enforcer for Gated {
    async fn install(
        &mut self,
        rule: &Rule,
        _socket: Option<BorrowedFd<'_>>,
    ) -> Result<Applied, EnforceError> {
        if self.held(rule) {
            let released = self.release.notified();
            self.entered.notify_one();
            released.await;
        }
        self.push(Recorded::Install(rule.clone()));
        Ok(Self::applied())
    }

    async fn modify(
        &mut self,
        rule: &Rule,
        _socket: Option<BorrowedFd<'_>>,
    ) -> Result<Applied, EnforceError> {
        self.push(Recorded::Modify(rule.clone()));
        Ok(Self::applied())
    }

    async fn remove(
        &mut self,
        id: RuleId,
        _socket: Option<BorrowedFd<'_>>,
    ) -> Result<(), EnforceError> {
        self.push(Recorded::Remove(id));
        Ok(())
    }

    async fn shutdown(&mut self) -> Result<(), EnforceError> {
        self.push(Recorded::Shutdown);
        Ok(())
    }

    fn install_now(
        &mut self,
        rule: &Rule,
        _socket: Option<BorrowedFd<'_>>,
    ) -> Option<Result<Applied, EnforceError>> {
        if self.held(rule) {
            return None;
        }
        self.push(Recorded::Install(rule.clone()));
        Some(Ok(Self::applied()))
    }

    fn remove_now(
        &mut self,
        id: RuleId,
        _socket: Option<BorrowedFd<'_>>,
    ) -> Option<Result<(), EnforceError>> {
        self.push(Recorded::Remove(id));
        Some(Ok(()))
    }
}

fn agent(network: &MemoryNetwork, ip: IpAddr, enforcer: Box<dyn Enforcer>) -> Agent {
    let mut config = EngineConfig::default();
    config.refresh_period = REFRESH;
    config.fast_retransmit_initial = Duration::from_millis(20);
    Agent::builder()
        .transport(Transport::Memory(network.clone()))
        .local_addr(ip)
        .engine_config(config)
        .peer_wait(None)
        .enforcer(enforcer)
        .build()
        .expect("memory agent")
}

/// `x` with the gated enforcer (the data senders' side, where rules load) and `y`.
struct Setup {
    x: Agent,
    y: Agent,
    gate: Gated,
}

fn setup() -> Setup {
    let network = MemoryNetwork::new(5);
    let gate = Gated::default();
    let x = agent(&network, unique_loopback(), Box::new(gate.clone()));
    let y = agent(&network, unique_loopback(), Box::new(Recording::new()));
    Setup { x, y, gate }
}

/// A listener on `server`'s address, and `server`'s end of one connection from `client`'s,
/// and the client's end. `before_connect` runs once the listener's port is known.
async fn session(
    server: &Agent,
    client: &Agent,
    before_connect: impl FnOnce(u16),
) -> (QosStream, QosStream) {
    let spec = QosSpec::controlled_load(500_000, 32_768);
    let listener = QosListener::builder()
        .agent(server)
        .spec(spec)
        .bind(SocketAddr::new(addr_of(server), 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    before_connect(addr.port());
    let (client, accepted) = tokio::join!(
        QosStream::builder()
            .agent(client)
            .spec(spec)
            .bind(SocketAddr::new(addr_of(client), 0))
            .connect(addr),
        listener.accept()
    );
    (accepted.expect("accept").0, client.expect("connect"))
}

async fn established(stream: &QosStream, what: &str) {
    until(&mut stream.events(), what, |e| {
        matches!(e, QosEvent::Established { .. })
    })
    .await;
}

/// `x`'s stats, bounded: a stuck agent task does not answer.
async fn stats(agent: &Agent) -> qtoq::agent::AgentStats {
    tokio::time::timeout(STEP, agent.stats())
        .await
        .expect("the agent answers its stats while a rule load is stuck")
        .expect("agent running")
}

/// Starts a session A from `x` to `y` whose rule load on `x` is held; returns once the load
/// has started.
async fn held_session(s: &Setup) -> (QosStream, QosStream) {
    let gate = s.gate.clone();
    let (server, client) = session(&s.x, &s.y, |port| {
        gate.held_port.store(port, Ordering::SeqCst)
    })
    .await;
    tokio::time::timeout(STEP, s.gate.entered.notified())
        .await
        .expect("A's rule load starts");
    (server, client)
}

fn installs(calls: &[Recorded]) -> usize {
    calls
        .iter()
        .filter(|c| matches!(c, Recorded::Install(_)))
        .count()
}

#[tokio::test]
async fn a_stuck_rule_load_stalls_neither_new_sessions_nor_refreshes() {
    let s = setup();

    // C: established before anything is stuck.
    let (c_server, c_client) = session(&s.x, &s.y, |_| {}).await;
    established(&c_server, "C server Established").await;
    established(&c_client, "C client Established").await;
    let mut c_client_events = c_client.events();

    // A: its rule load on x does not return.
    let (a_server, a_client) = held_session(&s).await;
    assert_eq!(a_server.reservation(), Reservation::Pending);

    // (1) B, with x as the client (its rule loads on y): set up end to end through x,
    // whose `connect` and signaling go on.
    let (b_server, b_client) = tokio::time::timeout(STEP, async {
        let (b_server, b_client) = session(&s.y, &s.x, |_| {}).await;
        established(&b_server, "B server Established").await;
        established(&b_client, "B client Established").await;
        (b_server, b_client)
    })
    .await
    .expect("B set up through x while A's rule load is stuck");

    // (2) C keeps being refreshed by x over several refresh periods.
    let before = stats(&s.x).await;
    assert_eq!(before.enforce_queue, 1, "A's load is in flight: {before:?}");
    tokio::time::sleep(REFRESH * 8).await;
    let after = stats(&s.x).await;
    assert!(
        after.engine.transmitted >= before.engine.transmitted + 4,
        "x kept sending refreshes: {} then {}",
        before.engine.transmitted,
        after.engine.transmitted
    );
    assert!(
        after.engine.received >= before.engine.received + 4,
        "x kept handling y's refreshes: {} then {}",
        before.engine.received,
        after.engine.received
    );
    // Longer than C's state lifetime at y without refreshes (K = 3: 5.25 R): still there.
    assert!(
        matches!(c_client.reservation(), Reservation::Established { .. }),
        "{:?}",
        c_client.reservation()
    );
    while let Some(event) =
        futures::FutureExt::now_or_never(futures::StreamExt::next(&mut c_client_events)).flatten()
    {
        assert!(!event.is_error_or_end(), "C's client saw {event:?}");
    }
    assert_eq!(a_server.reservation(), Reservation::Pending);
    let installs_while_stuck = installs(&s.gate.calls());

    // A's load completes: A is established.
    s.gate.release.notify_one();
    established(&a_server, "A server Established").await;
    established(&a_client, "A client Established").await;
    assert_eq!(installs(&s.gate.calls()), installs_while_stuck + 1);
    assert_eq!(stats(&s.x).await.enforce_queue, 0);

    for stream in [a_client, a_server, b_client, b_server, c_client, c_server] {
        tokio::time::timeout(STEP, stream.close())
            .await
            .expect("close")
            .expect("close");
    }
    until_no_owned_sessions(&s.x).await;
    until_no_owned_sessions(&s.y).await;
}

#[tokio::test]
async fn a_release_during_a_stuck_load_unloads_after_it() {
    let s = setup();
    let (a_server, a_client) = held_session(&s).await;
    let held_port = s.gate.held_port.load(Ordering::SeqCst);

    // The owner closes A while its load is stuck: `close` waits for the unload, which waits
    // for the load.
    let mut closing = tokio::spawn(a_server.close());
    assert!(
        tokio::time::timeout(REFRESH * 3, &mut closing)
            .await
            .is_err(),
        "close returned before the rule load it must follow"
    );
    assert!(s.gate.calls().is_empty(), "{:?}", s.gate.calls());

    s.gate.release.notify_one();
    tokio::time::timeout(STEP, closing)
        .await
        .expect("close returns once the rule is unloaded")
        .expect("close task")
        .expect("close");
    let calls = s.gate.calls();
    let [Recorded::Install(rule), Recorded::Remove(removed)] = calls.as_slice() else {
        panic!("expected A's install then its remove: {calls:?}");
    };
    assert_eq!(rule.flow.sender.port(), held_port);
    assert_eq!(*removed, rule.id);

    a_client.close().await.expect("client close");
    until_no_owned_sessions(&s.x).await;
    until_no_owned_sessions(&s.y).await;
}

#[tokio::test]
async fn shutdown_waits_for_a_stuck_load_and_its_unload() {
    let s = setup();
    let (_a_server, _a_client) = held_session(&s).await;
    let x = s.x.clone();
    let mut stopping = tokio::spawn(async move { x.shutdown().await });
    assert!(
        tokio::time::timeout(REFRESH * 3, &mut stopping)
            .await
            .is_err(),
        "shutdown returned with a rule load in flight"
    );
    s.gate.release.notify_one();
    tokio::time::timeout(STEP, stopping)
        .await
        .expect("shutdown returns once the load is done")
        .expect("shutdown task")
        .expect("shutdown");
    let calls = s.gate.calls();
    assert!(
        matches!(
            calls.as_slice(),
            [
                Recorded::Install(_),
                Recorded::Remove(_),
                Recorded::Shutdown
            ]
        ),
        "{calls:?}"
    );
}
