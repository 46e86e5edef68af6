//! `Chain`: a rule is in both backends or in neither.

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;

use qtoq::enforce::{
    Chain, EnforceError, Enforcer, Recorded, Recording, SocketEnforcer, SocketOptions,
};
use qtoq::flow::{Flow, Rule, RuleId};
use qtoq::wire::intserv::{FlowSpec, TokenBucket};
use qtoq::wire::RsvpError;

fn rule(id: u64, rate: f32) -> Rule {
    Rule {
        id: RuleId(id),
        flow: Flow {
            sender: "127.0.0.1:1".parse().unwrap(),
            receiver: "127.0.0.1:2".parse().unwrap(),
            protocol: 6,
        },
        flowspec: FlowSpec::ControlledLoad(TokenBucket::new(rate, 10_000.0)),
        dscp: Some(46),
    }
}

#[tokio::test]
async fn failure_of_the_second_backend_undoes_the_first() {
    let log = Recording::new();
    let mut chain = Chain::new(log.clone(), SocketEnforcer::new());
    // No socket: the socket backend refuses, the recording backend must be rolled back.
    let err = chain.install(&rule(1, 1000.0), None).await.unwrap_err();
    assert!(matches!(err, EnforceError::Unsupported(_)));
    assert_eq!(
        log.calls(),
        vec![
            Recorded::Install(rule(1, 1000.0)),
            Recorded::Remove(RuleId(1))
        ]
    );
    assert!(log.installed().is_empty());
}

#[tokio::test]
async fn both_backends_apply_modify_and_remove() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let before = SocketOptions::read(server.as_fd()).unwrap();

    let log = Recording::new();
    let mut chain = Chain::new(log.clone(), SocketEnforcer::new().without_pacing());
    let applied = chain
        .install(&rule(1, 1000.0), Some(server.as_fd()))
        .await
        .unwrap();
    assert!(
        applied.summary.starts_with("recorded; dscp=46"),
        "{}",
        applied.summary
    );
    assert_eq!(
        SocketOptions::read(server.as_fd()).unwrap().tos,
        Some(46 << 2)
    );
    // A modification the socket backend refuses (no socket) puts the first one back.
    assert!(chain.modify(&rule(1, 2000.0), None).await.is_err());
    assert_eq!(
        log.calls()[1..],
        [
            Recorded::Modify(rule(1, 2000.0)),
            Recorded::Modify(rule(1, 1000.0))
        ]
    );
    chain.remove(RuleId(1), Some(server.as_fd())).await.unwrap();
    assert_eq!(SocketOptions::read(server.as_fd()).unwrap(), before);
    assert!(log.installed().is_empty());
    chain.shutdown().await.unwrap();
    assert_eq!(log.calls().last(), Some(&Recorded::Shutdown));
}

#[tokio::test]
async fn enforcer_kinds_by_name() {
    use qtoq::enforce::EnforcerKind;
    assert_eq!("socket".parse::<EnforcerKind>(), Ok(EnforcerKind::Socket));
    assert_eq!("tc".parse::<EnforcerKind>(), Ok(EnforcerKind::Tc));
    assert!("netem".parse::<EnforcerKind>().is_err());
    // A boxed backend is a backend.
    let mut boxed = EnforcerKind::Socket.build(&[]).await.unwrap();
    let err = boxed.install(&rule(1, 1.0), None).await.unwrap_err();
    assert_eq!(err.rsvp_error(), RsvpError::SERVICE_UNSUPPORTED);
    // tc without declared interfaces cannot shape anything.
    let err = EnforcerKind::Tc.build(&[]).await.unwrap_err();
    assert!(err.to_string().contains("[[interface]]"), "{err}");
}
