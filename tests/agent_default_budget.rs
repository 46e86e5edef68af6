//! The default agent's admission budget (issue 8, point 2): without a policy file admission
//! books against each flow's interface, and loopback has no limit, so 200 concurrent
//! 125,000 B/s reservations on 127.0.0.1 (25 MB/s, twice the old host-wide 100 Mbit/s pot)
//! through the default agent are all established. And the kernel's link speed, read in the
//! namespace the policy runs in, makes a veth's budget.

mod agent_util;
mod netns_support;

use std::time::Duration;

use futures::StreamExt;
use netns_support::{in_netns, Namespaces, CLIENT_IP, SERVER_IF, SERVER_IP};
use qtoq::flow::{AdmissionRequest, Flow, RuleId};
use qtoq::policy::{BudgetSource, InterfaceBudget, Policy, PolicyTime, UnlimitedReason, Weekday};
use qtoq::wire::intserv::{FlowSpec, TokenBucket};
use qtoq::wire::RsvpError;
use qtoq::{Agent, QosEvent, QosEvents, QosListener, QosSpec, QosStream};

const STREAMS: usize = 200;
const RATE: u64 = 125_000;
/// Per stream: generous, as 200 setups share two cores with other test binaries.
const STREAM_TIMEOUT: Duration = Duration::from_secs(20);

/// Reads `events` until `Established`; fails (never hangs) on an error, the end of the
/// stream or the timeout, saying which stream and what it saw.
async fn established(mut events: QosEvents, what: String) -> Result<(), String> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + STREAM_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(QosEvent::Established { .. })) => return Ok(()),
            Ok(Some(event)) if event.is_error_or_end() => {
                return Err(format!(
                    "{what}: {event:?} before Established (saw {seen:?})"
                ))
            }
            Ok(Some(event)) => seen.push(event),
            Ok(None) => return Err(format!("{what}: events ended (saw {seen:?})")),
            Err(_) => {
                return Err(format!(
                    "{what}: no Established within {STREAM_TIMEOUT:?} (saw {seen:?})"
                ))
            }
        }
    }
}

fn loopback_budget(budgets: &[InterfaceBudget]) -> &InterfaceBudget {
    budgets
        .iter()
        .find(|b| b.name == "lo")
        .unwrap_or_else(|| panic!("no budget for lo in {budgets:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_loopback_reservations_through_the_default_agent() {
    // Plain bind/connect: no builder agent, no policy file.
    let listener = QosListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let agent = Agent::default_agent().expect("default agent");
    assert!(listener.agent().is_running());

    let server = tokio::spawn(async move {
        let mut streams = Vec::with_capacity(STREAMS);
        for _ in 0..STREAMS {
            let (stream, _) = listener.accept().await.expect("accept");
            streams.push(stream);
        }
        streams
    });
    let clients = futures::future::join_all(
        (0..STREAMS).map(|_| QosStream::connect(addr, QosSpec::controlled_load(RATE, 16_384))),
    )
    .await;
    let clients: Vec<QosStream> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| c.unwrap_or_else(|e| panic!("connect {i}: {e}")))
        .collect();
    let servers = tokio::time::timeout(STREAM_TIMEOUT, server)
        .await
        .expect("all connections accepted in time")
        .expect("accept task");

    let waits = clients
        .iter()
        .enumerate()
        .map(|(i, s)| established(s.events(), format!("client {i}")))
        .chain(
            servers
                .iter()
                .enumerate()
                .map(|(i, s)| established(s.events(), format!("server {i}"))),
        );
    let failures: Vec<String> = futures::future::join_all(waits)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} ends not established; first: {:?}",
        failures.len(),
        2 * STREAMS,
        &failures[..failures.len().min(3)]
    );

    // One admission per reservation (at its sender), all on loopback's unlimited budget.
    let stats = agent.stats().await.expect("agent running");
    assert_eq!(stats.policy_admitted, STREAMS, "{stats:?}");
    let lo = loopback_budget(&stats.interfaces);
    assert_eq!(
        lo.source,
        BudgetSource::Unlimited(UnlimitedReason::Loopback)
    );
    assert_eq!((lo.capacity, lo.reservable), (None, None), "{lo:?}");
    assert_eq!(lo.flows, STREAMS, "{lo:?}");
    assert_eq!(lo.reserved, (STREAMS as u64 * RATE) as f64, "{lo:?}");

    for stream in clients.into_iter().chain(servers) {
        stream.close().await.expect("close");
    }
    let deadline = tokio::time::Instant::now() + STREAM_TIMEOUT;
    loop {
        let count = agent.session_count().await.expect("agent running");
        if count == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the default agent still holds {count} sessions after every stream closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = agent.stats().await.expect("agent running");
    assert_eq!(stats.policy_admitted, 0, "{stats:?}");
    let lo = loopback_budget(&stats.interfaces);
    assert_eq!((lo.flows, lo.reserved), (0, 0.0), "{lo:?}");
}

fn request(id: u64, sender: &str, receiver: &str, rate: f32) -> AdmissionRequest {
    AdmissionRequest::new(
        RuleId(id),
        Flow {
            sender: format!("{sender}:{}", 5000 + id).parse().unwrap(),
            receiver: format!("{receiver}:6000").parse().unwrap(),
            protocol: 6,
        },
        FlowSpec::ControlledLoad(TokenBucket::new(rate, 65_536.0)),
    )
}

/// The kernel probe in a namespace: the veth (which reports 10000 Mbit/s) gets 75 % of it,
/// read through the ioctl in the policy's own namespace (not the host's sysfs), and a flow
/// between two local addresses is booked on the namespace's loopback.
#[test]
fn the_kernel_link_speed_of_a_veth_makes_its_budget() {
    let Some(ns) = Namespaces::create() else {
        return;
    };
    let budgets = in_netns(&ns.server, || async {
        let now = PolicyTime::new(Weekday::Mon, 12, 0);
        let mut policy =
            Policy::from_toml_str("[host]\nmax_flow_rate = \"100Gbit\"\n", "t").expect("policy");
        // 10000 Mbit/s = 1,250,000,000 B/s, 75 % reservable: 937,500,000.
        policy
            .admit_at(&request(1, SERVER_IP, CLIENT_IP, 900_000_000.0), now)
            .expect("within the veth's budget");
        let denied = policy
            .admit_at(&request(2, SERVER_IP, CLIENT_IP, 40_000_000.0), now)
            .expect_err("beyond the veth's budget");
        assert_eq!(denied.error, RsvpError::BANDWIDTH_UNAVAILABLE);
        assert!(
            denied.reason.contains(
                "interface veth-qtoq (75 % of the 10000 Mbit/s link speed its driver reports)"
            ),
            "{}",
            denied.reason
        );
        policy
            .admit_at(&request(3, SERVER_IP, SERVER_IP, 40_000_000.0), now)
            .expect("a flow inside the namespace is on loopback");
        policy.interface_budgets()
    })
    .join()
    .expect("namespace thread");
    let veth = budgets
        .iter()
        .find(|b| b.name == SERVER_IF)
        .unwrap_or_else(|| panic!("no {SERVER_IF} in {budgets:?}"));
    assert_eq!(
        veth.source,
        BudgetSource::LinkSpeed {
            mbit_per_s: 10_000,
            share: 0.75
        }
    );
    assert_eq!(veth.capacity, Some(1_250_000_000.0));
    assert_eq!(veth.reservable, Some(937_500_000.0));
    assert_eq!((veth.reserved, veth.flows), (900_000_000.0, 1));
    let lo = loopback_budget(&budgets);
    assert_eq!(
        lo.source,
        BudgetSource::Unlimited(UnlimitedReason::Loopback)
    );
    assert_eq!(lo.flows, 1);
    // The namespace's interfaces only: the host's eth0 and others are not there.
    assert_eq!(budgets.len(), 2, "{budgets:?}");
}
