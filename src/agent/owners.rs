//! Who owns a session, and each flow the agent sends for. [`Owner::current`] (this
//! process, the owner of an embedded agent's sessions) lives here rather than in
//! [`flow`](crate::flow), which stays free of OS calls.
//!
//! Each flow the agent sends for: the engine knows flows, not processes, so the
//! agent keeps the local owner of every data sender's session it opened here, beside the
//! engine rather than in its per-session state, and fills it into the engine's admission
//! requests on their way to admission control ([`OwnerAdmission`]).
//!
//! Only the data sender's sessions are entered (an accepted connection, signaled or not):
//! admission is asked where the data is sent from, for the flow `local sender → peer`. A
//! client's (receiver's) session is never admitted by this host, and its flow, seen from a
//! server of the same host, is the server's: it belongs to the server's owner.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::engine::SessionId;
use crate::flow::{
    Admission, AdmissionDenied, AdmissionGrant, AdmissionRequest, Flow, Owner, RuleId,
};

impl Owner {
    /// This process: its effective uid (read at each call: a server may drop privileges
    /// after it started), its executable name (`/proc/self/comm`, read once per process;
    /// `None` where it cannot be read) and its pid. The owner of the sessions an agent
    /// embedded in this process opens for its sockets.
    pub fn current() -> Self {
        static PROGRAM: OnceLock<Option<String>> = OnceLock::new();
        Owner {
            uid: Some(crate::sys::effective_uid()),
            program: PROGRAM.get_or_init(|| program_name("self")).clone(),
            pid: Some(std::process::id()),
        }
    }

    /// Process `pid`'s executable name, as policies match it (`/proc/<pid>/comm`).
    #[cfg(feature = "daemon")]
    pub(crate) fn program_of(pid: u32) -> Option<String> {
        program_name(&pid.to_string())
    }
}

/// `/proc/<process>/comm` without its newline; `None` when unreadable or empty.
fn program_name(process: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{process}/comm"))
        .ok()
        .map(|name| name.strip_suffix('\n').unwrap_or(&name).to_owned())
        .filter(|name| !name.is_empty())
}

/// The owner of each data sender's flow, shared by the agent's state (which enters and
/// removes them as sessions open and go) and the engine's admission wrapper (which reads
/// them, with the state locked: this lock is always taken last and held briefly).
#[derive(Debug, Clone, Default)]
pub(crate) struct Owners(Arc<Mutex<HashMap<Flow, (SessionId, Owner)>>>);

impl Owners {
    fn lock(&self) -> MutexGuard<'_, HashMap<Flow, (SessionId, Owner)>> {
        // A plain map: a panic elsewhere cannot leave it half-changed.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `session` sends `flow` for `owner` (replacing a session of the same flow that is
    /// still going away).
    pub(crate) fn insert(&self, flow: Flow, session: SessionId, owner: Owner) {
        self.lock().insert(flow, (session, owner));
    }

    /// `session` is gone: its flow has no owner any more (unless a newer session took it).
    pub(crate) fn remove(&self, flow: &Flow, session: SessionId) {
        let mut owners = self.lock();
        if owners.get(flow).is_some_and(|(s, _)| *s == session) {
            owners.remove(flow);
        }
    }

    /// The owner of `flow`, if a local session sends it.
    pub(crate) fn get(&self, flow: &Flow) -> Option<Owner> {
        self.lock().get(flow).map(|(_, owner)| owner.clone())
    }

    /// How many flows have an owner (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The engine's admission control: the agent's (its policy, or a custom one) with the
/// request's owner filled in from [`Owners`].
pub(crate) struct OwnerAdmission {
    inner: Box<dyn Admission>,
    owners: Owners,
}

impl OwnerAdmission {
    pub(crate) fn new(inner: Box<dyn Admission>, owners: Owners) -> Self {
        OwnerAdmission { inner, owners }
    }
}

impl Admission for OwnerAdmission {
    fn admit(&mut self, request: &AdmissionRequest) -> Result<AdmissionGrant, AdmissionDenied> {
        if request.owner.is_none() {
            if let Some(owner) = self.owners.get(&request.flow) {
                let mut request = request.clone();
                request.owner = Some(owner);
                return self.inner.admit(&request);
            }
        }
        self.inner.admit(request)
    }

    fn release(&mut self, rule: RuleId) {
        self.inner.release(rule);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::os::fd::AsFd;
    use std::time::Duration;

    use tokio::net::{TcpListener, TcpStream};

    use crate::agent::{
        Agent, Backend, MemoryNetwork, Reservation, SessionGuard, Setup, Transport,
    };
    use crate::enforce::{Recorded, Recording};
    use crate::engine::SessionKey;
    use crate::flow::{Flow, Owner, IPPROTO_TCP};
    use crate::policy::{Policy, StaticProbe};
    use crate::wire::intserv::{FlowSpec, TokenBucket};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn agent(policy: &str, recording: &Recording) -> Agent {
        let policy = Policy::from_toml_str(policy, "owners.toml")
            .expect("valid policy")
            .with_interface_probe(StaticProbe::new());
        Agent::builder()
            .transport(Transport::Memory(MemoryNetwork::new(7)))
            .local_addr(LOCALHOST)
            .policy(policy)
            .enforcer(Box::new(recording.clone()))
            .build()
            .expect("agent starts")
    }

    fn program(name: &str) -> Option<Owner> {
        Some(Owner::new(Some(1000), Some(name.to_owned())))
    }

    fn flowspec(rate: f32) -> FlowSpec {
        FlowSpec::ControlledLoad(TokenBucket::new(rate, 16_384.0))
    }

    /// One TCP connection on this host and its server's session, opened for `owner` as the
    /// listener does: what the caller leaves open comes from the policy.
    struct Connection {
        server: SessionGuard,
        flow: Flow,
        client_tcp: TcpStream,
        _server_tcp: TcpStream,
    }

    async fn accept(agent: &Agent, listener: &TcpListener, owner: Option<Owner>) -> Connection {
        let (client_tcp, accepted) = tokio::join!(
            TcpStream::connect(listener.local_addr().unwrap()),
            listener.accept()
        );
        let (client_tcp, server_tcp) = (client_tcp.unwrap(), accepted.unwrap().0);
        let flow = Flow {
            sender: server_tcp.local_addr().unwrap(),
            receiver: server_tcp.peer_addr().unwrap(),
            protocol: IPPROTO_TCP,
        };
        let setup = Setup::Accepted {
            key: SessionKey {
                destination: flow.receiver,
                protocol: IPPROTO_TCP,
            },
            flow,
            signaled: None,
            flowspec: None,
            fallback: flowspec(500_000.0),
        };
        let server = agent
            .open(setup, flow.receiver, true, server_tcp.as_fd(), owner)
            .await
            .expect("server session opens");
        Connection {
            server,
            flow,
            client_tcp,
            _server_tcp: server_tcp,
        }
    }

    /// The client's session of `connection`, reserving `rate`; owned by program `x`, which
    /// must not matter: admission is the data sender's.
    async fn reserve(agent: &Agent, connection: &Connection, rate: f32) -> SessionGuard {
        let setup = Setup::Receiver {
            key: SessionKey {
                destination: connection.flow.receiver,
                protocol: IPPROTO_TCP,
            },
            flowspec: flowspec(rate),
            confirm: false,
        };
        agent
            .open(
                setup,
                connection.flow.sender,
                true,
                connection.client_tcp.as_fd(),
                program("x"),
            )
            .await
            .expect("client session opens")
    }

    /// The server's reservation once it is no longer pending.
    async fn outcome(connection: &Connection) -> Reservation {
        let wait = async {
            loop {
                let reservation = connection.server.shared.reservation();
                if reservation != Reservation::Pending {
                    return reservation;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("the reservation is decided")
    }

    async fn owned_flows(agent: &Agent) -> usize {
        let Backend::Embedded(shared) = &agent.backend else {
            unreachable!("an embedded agent");
        };
        shared.core.lock().await.owners().len()
    }

    #[test]
    fn the_current_owner_is_this_process() {
        use std::os::unix::fs::MetadataExt;
        let me = Owner::current();
        assert_eq!(me.pid, Some(std::process::id()));
        // /proc/self belongs to the process's effective uid (the test binary is dumpable).
        let euid = std::fs::metadata("/proc/self").unwrap().uid();
        assert_eq!(me.uid, Some(euid));
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(me.program.as_deref(), Some(comm.trim_end_matches('\n')));
        assert!(me
            .program
            .is_some_and(|p| p.len() <= crate::policy::MAX_PROGRAM_NAME));
    }

    #[tokio::test]
    async fn a_program_rule_admits_only_its_owners_reservations() {
        let recording = Recording::new();
        let agent = agent(
            r#"
            [[rule]]
            name = "x-only"
            priority = 10
            service = "controlled-load"
            rate = "1Mbit"
            max_flows = 1
            match = { program = "x" }

            [[rule]]
            name = "others"
            service = "controlled-load"
            rate = "8Mbit"
            "#,
            &recording,
        );
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        let established = |r: &Reservation| matches!(r, Reservation::Established { .. });

        // x's first reservation fits its rule (1 Mbit/s = 125 000 B/s, one flow).
        let first = accept(&agent, &listener, program("x")).await;
        let _c1 = reserve(&agent, &first, 100_000.0).await;
        assert!(established(&outcome(&first).await));
        // Its second is over the rule's max_flows …
        let second = accept(&agent, &listener, program("x")).await;
        let _c2 = reserve(&agent, &second, 100_000.0).await;
        match outcome(&second).await {
            Reservation::Denied { reason, .. } => {
                assert!(reason.contains("`x-only`"), "{reason}");
                assert!(reason.contains("max_flows = 1"), "{reason}");
            }
            other => panic!("x's second reservation: {other:?}"),
        }
        // … while another program, and a connection without a known owner, get `others`:
        // no flow limit, up to 8 Mbit/s.
        let other = accept(&agent, &listener, program("y")).await;
        let _c3 = reserve(&agent, &other, 200_000.0).await;
        assert!(established(&outcome(&other).await));
        let unknown = accept(&agent, &listener, None).await;
        let _c4 = reserve(&agent, &unknown, 200_000.0).await;
        assert!(established(&outcome(&unknown).await));
        assert_eq!(recording.installed().len(), 3);

        // Only the data senders with an owner are entered; releasing them empties the map.
        assert_eq!(owned_flows(&agent).await, 3);
        for connection in [first, second, other, unknown] {
            connection.server.release().await.unwrap();
        }
        assert_eq!(owned_flows(&agent).await, 0);
    }

    #[tokio::test]
    async fn an_accepted_connection_resolves_its_setup_with_its_owner() {
        let recording = Recording::new();
        let agent = agent(
            r#"
            [[rule]]
            name = "x-unsignaled"
            service = "controlled-load"
            signaling = false
            rate = "1Mbit"
            match = { program = "x" }
            "#,
            &recording,
        );
        let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
        // x's connection takes the rule marked no signaling: its rule is loaded at once.
        let x = accept(&agent, &listener, program("x")).await;
        assert!(!x.server.signaled);
        let installed: Vec<FlowSpec> = recording
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Recorded::Install(rule) => Some(rule.flowspec),
                _ => None,
            })
            .collect();
        assert_eq!(installed.len(), 1);
        assert_eq!(installed[0].tspec().rate, 125_000.0);
        // Another program's (and an unknown owner's) is signaled as without a policy.
        let y = accept(&agent, &listener, program("y")).await;
        assert!(y.server.signaled);
        let unknown = accept(&agent, &listener, None).await;
        assert!(unknown.server.signaled);
        assert_eq!(recording.installed().len(), 1);
    }
}
