//! The policy and the enforcer wired into the agent and the API: the default policy and
//! enforcer, policies from files, listener specs/signaling and DSCP from the matching rule,
//! and run-time reloads that tear down exactly the reservations that no longer fit.

mod agent_util;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;

use agent_util::*;
use qtoq::agent::Transport;
use qtoq::enforce::{wire_rate, Recorded, Recording, SocketOptions, DEFAULT_PRIORITY};
use qtoq::flow::{Flow, Rule, RuleId};
use qtoq::policy::{BudgetSource, Policy, PolicyError, UnlimitedReason, DEFAULT_MAX_FLOW_RATE};
use qtoq::wire::ErrorCode;
use qtoq::{Agent, QosError, QosEvent, QosListener, QosSpec, QosStream, Signaling};
use tokio::net::TcpStream;

fn agent_with(policy: Policy) -> (Agent, Recording) {
    let recording = Recording::new();
    let agent = Agent::builder()
        .transport(Transport::Udp { port: 0 })
        .local_addr(unique_loopback())
        .policy(policy)
        .enforcer(Box::new(recording.clone()))
        .build()
        .expect("agent starts");
    (agent, recording)
}

fn policy(text: &str) -> Policy {
    Policy::from_toml_str(text, "test.toml").expect("valid policy")
}

fn installed_rules(recording: &Recording) -> Vec<Rule> {
    let live = recording.installed();
    recording
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Recorded::Install(rule) if live.contains(&rule.id) => Some(rule),
            _ => None,
        })
        .collect()
}

fn is_established(e: &QosEvent) -> bool {
    matches!(e, QosEvent::Established { .. })
}

/// A server stream (RSVP, the listener's spec) and its client reserving `rate`, both
/// established, on one agent.
async fn reserved_pair(agent: &Agent, listener: &QosListener, rate: u64) -> (QosStream, QosStream) {
    let ip = addr_of(agent);
    let (client, accepted) = tokio::join!(
        QosStream::builder()
            .agent(agent)
            .spec(QosSpec::controlled_load(rate, 16_384))
            .bind(SocketAddr::new(ip, 0))
            .connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let client = client.expect("connect");
    let (server, _) = accepted.expect("accept");
    until(&mut server.events(), "server Established", is_established).await;
    until(&mut client.events(), "client Established", is_established).await;
    (server, client)
}

#[tokio::test]
async fn reload_tears_down_only_what_no_longer_fits() {
    let (agent, recording) = agent_with(policy(
        r#"
        [[rule]]
        name = "bulk"
        service = "controlled-load"
        rate = "8Mbit"
        "#,
    ));
    let listener = QosListener::builder()
        .agent(&agent)
        .spec(QosSpec::controlled_load(1_000_000, 65_536))
        .bind(SocketAddr::new(addr_of(&agent), 0))
        .await
        .unwrap();
    let (small_server, small_client) = reserved_pair(&agent, &listener, 50_000).await;
    let (big_server, big_client) = reserved_pair(&agent, &listener, 500_000).await;
    let stats = agent.stats().await.unwrap();
    assert_eq!((stats.rules_in_force, stats.policy_admitted), (2, 2));
    let big_rule = installed_rules(&recording)
        .into_iter()
        .find(|r| r.flowspec.reserved_rate() == 500_000.0)
        .expect("the big reservation's rule")
        .id;

    // 100 000 B/s per reservation from now on: the 500 000 one no longer fits.
    let torn_down = agent
        .reload_policy(policy(
            r#"
            [[rule]]
            name = "bulk"
            service = "controlled-load"
            rate = 100000
            "#,
        ))
        .await
        .unwrap();
    assert_eq!(torn_down, 1);

    let server_events = until(&mut big_server.events(), "server ResvError", |e| {
        matches!(e, QosEvent::ResvError { .. })
    })
    .await;
    assert!(
        server_events
            .iter()
            .any(|e| matches!(e, QosEvent::AdmissionDenied { error, .. } if error.code == ErrorCode::POLICY_CONTROL_FAILURE)),
        "owner told of the policy denial: {server_events:?}"
    );
    // The receiver hears it through the ResvErr (code 2).
    until(&mut big_client.events(), "client AdmissionDenied", |e| {
        matches!(e, QosEvent::AdmissionDenied { error, .. } if error.code == ErrorCode::POLICY_CONTROL_FAILURE)
    })
    .await;
    assert!(recording.calls().contains(&Recorded::Remove(big_rule)));
    let stats = agent.stats().await.unwrap();
    assert_eq!((stats.rules_in_force, stats.policy_admitted), (1, 1));
    let kept = installed_rules(&recording);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].flowspec.reserved_rate(), 50_000.0);
    // The kept one sees no error and no end (refreshes may still report progress).
    let mut small_events = small_server.events();
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
        while let Some(event) = futures::StreamExt::next(&mut small_events).await {
            seen.push(event);
        }
    })
    .await;
    assert!(
        !seen.iter().any(QosEvent::is_error_or_end),
        "the reservation that still fits was disturbed: {seen:?}"
    );

    for stream in [small_client, small_server, big_client, big_server] {
        stream.close().await.unwrap();
    }
    until_no_sessions(&agent).await;
    let stats = agent.stats().await.unwrap();
    assert_eq!((stats.rules_in_force, stats.policy_admitted), (0, 0));
    assert!(recording.installed().is_empty());
}

#[tokio::test]
async fn listener_takes_spec_signaling_and_dscp_from_the_matching_rule() {
    let (agent, recording) = agent_with(policy(
        r#"
        [[rule]]
        name = "no-signaling"
        service = "controlled-load"
        signaling = false
        rate = 300000
        dscp = "EF"
        "#,
    ));
    let ip = addr_of(&agent);
    // Neither spec nor signaling given: the rule decides (no signaling, 300 000 B/s).
    let listener = QosListener::builder()
        .agent(&agent)
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let (_plain, accepted) = tokio::join!(
        TcpStream::connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let (stream, _) = accepted.unwrap();
    assert_eq!(stream.signaling(), Signaling::None);
    let rules = installed_rules(&recording);
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].flowspec.reserved_rate(), 300_000.0);
    assert_eq!(rules[0].dscp, Some(46), "EF from the grant");

    // An explicit spec takes precedence over the rule's (and is admitted under it).
    let explicit = QosListener::builder()
        .agent(&agent)
        .spec(QosSpec::controlled_load(100_000, 8_192))
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let (_plain2, accepted) = tokio::join!(
        TcpStream::connect(explicit.local_addr().unwrap()),
        explicit.accept()
    );
    let (stream2, _) = accepted.unwrap();
    assert_eq!(stream2.signaling(), Signaling::None);
    let rates: Vec<f32> = installed_rules(&recording)
        .iter()
        .map(|r| r.flowspec.reserved_rate())
        .collect();
    assert_eq!(rates, [300_000.0, 100_000.0]);
    stream.close().await.unwrap();
    stream2.close().await.unwrap();
    until_no_sessions(&agent).await;
    assert!(recording.installed().is_empty());
}

#[tokio::test]
async fn rsvp_listener_announces_the_rule_spec_and_marks_with_its_dscp() {
    let (agent, recording) = agent_with(policy(
        r#"
        [[rule]]
        name = "video"
        service = "controlled-load"
        rate = 200000
        dscp = "AF41"
        "#,
    ));
    let listener = QosListener::builder()
        .agent(&agent)
        .bind(SocketAddr::new(addr_of(&agent), 0))
        .await
        .unwrap();
    let (client, accepted) = tokio::join!(
        QosStream::builder()
            .agent(&agent)
            .spec(QosSpec::controlled_load(150_000, 16_384))
            .bind(SocketAddr::new(addr_of(&agent), 0))
            .connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let client = client.unwrap();
    let (server, _) = accepted.unwrap();
    assert_eq!(server.signaling(), Signaling::Rsvp);
    let seen = until(&mut client.events(), "client Established", is_established).await;
    let announced = seen
        .iter()
        .find_map(|e| match e {
            QosEvent::PathReceived { tspec, .. } => Some(*tspec),
            _ => None,
        })
        .expect("PathReceived");
    // The rule's rate, and its default bucket of 1/10 s of it.
    assert_eq!((announced.rate, announced.bucket), (200_000.0, 20_000.0));
    until(&mut server.events(), "server Established", is_established).await;
    let rules = installed_rules(&recording);
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].dscp, Some(34), "AF41 from the grant");
    assert_eq!(rules[0].flowspec.reserved_rate(), 150_000.0);
    client.close().await.unwrap();
    server.close().await.unwrap();
    until_no_sessions(&agent).await;
}

#[test]
fn policy_file_errors_name_the_file_and_position() {
    let dir = std::env::temp_dir().join(format!("qtoq-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"x\"\nservice = \"controlled-load\"\nrate = \"8 furlongs\"\n",
    )
    .unwrap();
    let err = Agent::builder().policy_file(&bad).unwrap_err();
    let message = err.to_string();
    std::fs::remove_dir_all(&dir).ok();
    match err {
        PolicyError::Invalid { file, line, .. } => {
            assert!(file.ends_with("bad.toml"), "{file}");
            assert_eq!(line, 4, "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(
        Agent::builder()
            .policy_file(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policy.toml"))
            .is_ok(),
        "the example policy loads"
    );
    assert!(matches!(
        Agent::builder().policy_file("/nonexistent/qtoq.toml"),
        Err(PolicyError::Io { .. })
    ));
}

/// Without `.policy`/`.enforcer`: the default policy (loopback budget unlimited, a cap per
/// reservation) and the socket enforcer, whose options are read back on the connection's
/// socket and gone after close.
#[tokio::test]
async fn default_agent_uses_the_default_policy_and_the_socket_enforcer() {
    let ip: IpAddr = unique_loopback();
    let agent = Agent::builder()
        .transport(Transport::Udp { port: 0 })
        .local_addr(ip)
        .build()
        .unwrap();
    let rate = 1_000_000;
    let listener = QosListener::builder()
        .agent(&agent)
        .signaling(Signaling::None)
        .spec(QosSpec::controlled_load(rate, 65_536))
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let (_plain, accepted) = tokio::join!(
        TcpStream::connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let (stream, peer) = accepted.unwrap();
    let socket = stream.tcp().as_fd().try_clone_to_owned().unwrap();
    let applied = SocketOptions::read(socket.as_fd()).unwrap();
    let expected_pacing = wire_rate(&Rule {
        id: RuleId(0),
        flow: Flow {
            sender: stream.local_addr().unwrap(),
            receiver: peer,
            protocol: 6,
        },
        flowspec: QosSpec::controlled_load(rate, 65_536).flowspec(),
        dscp: None,
    }) as u64;
    assert_eq!(applied.priority, DEFAULT_PRIORITY, "{applied:?}");
    assert!(
        applied.max_pacing_rate.abs_diff(expected_pacing) <= 1,
        "pacing {applied:?}, expected {expected_pacing}"
    );
    assert_eq!(agent.stats().await.unwrap().policy_admitted, 1);
    stream.close().await.unwrap();
    let reverted = SocketOptions::read(socket.as_fd()).unwrap();
    assert_eq!(reverted.priority, 0, "{reverted:?}");
    assert_eq!(reverted.max_pacing_rate, u64::MAX, "{reverted:?}");
    assert_eq!(reverted.tos, Some(0), "{reverted:?}");

    // The reservation was booked on loopback, whose budget has no limit.
    let lo = agent
        .stats()
        .await
        .unwrap()
        .interfaces
        .into_iter()
        .find(|b| b.name == "lo")
        .expect("a loopback budget");
    assert_eq!(
        lo.source,
        BudgetSource::Unlimited(UnlimitedReason::Loopback)
    );
    assert_eq!((lo.reservable, lo.flows), (None, 0), "{lo:?}");

    // The default policy's cap per reservation: a reservation above it is a policy failure,
    // even on unlimited loopback.
    let too_big = QosListener::builder()
        .agent(&agent)
        .signaling(Signaling::None)
        // 1% above: the cap is compared at f32 precision, not more loosely.
        .spec(QosSpec::controlled_load(
            DEFAULT_MAX_FLOW_RATE as u64 + DEFAULT_MAX_FLOW_RATE as u64 / 100,
            65_536,
        ))
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let (_plain, accepted) = tokio::join!(
        TcpStream::connect(too_big.local_addr().unwrap()),
        too_big.accept()
    );
    let err = accepted.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    let source = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<QosError>())
        .expect("typed source");
    assert!(
        matches!(source, QosError::AdmissionDenied(d) if d.error.code == ErrorCode::POLICY_CONTROL_FAILURE && d.reason.contains("max_flow_rate")),
        "{source:?}"
    );
    until_no_sessions(&agent).await;
    assert_eq!(agent.stats().await.unwrap().policy_admitted, 0);
}

/// The test clock of `schedule_close_tears_down_on_revalidation`, seconds since the epoch.
static SCHEDULE_CLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn schedule_clock() -> std::time::SystemTime {
    std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(SCHEDULE_CLOCK.load(std::sync::atomic::Ordering::SeqCst))
}

#[tokio::test]
async fn schedule_close_tears_down_on_revalidation() {
    use std::sync::atomic::Ordering;
    // Monday 1970-01-05, 09:30 UTC: inside the rule's window.
    let monday_0930 = 4 * 86_400 + 9 * 3_600 + 30 * 60;
    SCHEDULE_CLOCK.store(monday_0930, Ordering::SeqCst);
    let (agent, recording) = agent_with(
        policy(
            r#"
            [host]
            unmatched = "deny"

            [[rule]]
            name = "office-hours"
            service = "controlled-load"
            signaling = false
            rate = 100000
            schedule = { days = ["mon"], time = "09:00-10:00" }
            "#,
        )
        .with_clock(schedule_clock),
    );
    let ip = addr_of(&agent);
    let listener = QosListener::builder()
        .agent(&agent)
        .bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let (_plain, accepted) = tokio::join!(
        TcpStream::connect(listener.local_addr().unwrap()),
        listener.accept()
    );
    let (stream, _) = accepted.expect("admitted inside the window");
    assert_eq!(recording.installed().len(), 1);
    // Still inside: nothing happens.
    assert_eq!(agent.revalidate_policy().await.unwrap(), 0);
    assert_eq!(recording.installed().len(), 1);

    SCHEDULE_CLOCK.store(monday_0930 + 3_600, Ordering::SeqCst);
    assert_eq!(agent.revalidate_policy().await.unwrap(), 1);
    let seen = until(&mut stream.events(), "ResvError", |e| {
        matches!(e, QosEvent::ResvError { .. })
    })
    .await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, QosEvent::AdmissionDenied { error, .. } if error.code == ErrorCode::POLICY_CONTROL_FAILURE)),
        "{seen:?}"
    );
    assert!(recording.installed().is_empty());
    assert_eq!(agent.stats().await.unwrap().policy_admitted, 0);
    stream.close().await.unwrap();
    until_no_sessions(&agent).await;
}
