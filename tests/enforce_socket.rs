//! The socket backend really sets IP_TOS / IPV6_TCLASS, SO_PRIORITY and SO_MAX_PACING_RATE on
//! a loopback TCP socket (read back with getsockopt) and reverts them on remove.

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;

use qtoq::enforce::{EnforceError, Enforcer, SocketEnforcer, SocketOptions};
use qtoq::flow::{Flow, Rule, RuleId};
use qtoq::wire::intserv::{FlowSpec, TokenBucket};
use qtoq::wire::{ErrorCode, RsvpError};

fn connected_pair(bind: &str) -> Option<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind(bind).ok()?;
    let client = TcpStream::connect(listener.local_addr().ok()?).ok()?;
    let (server, _) = listener.accept().ok()?;
    Some((server, client))
}

fn rule(id: u64, sender: &TcpStream, rate: f32, dscp: Option<u8>) -> Rule {
    Rule {
        id: RuleId(id),
        flow: Flow {
            sender: sender.local_addr().unwrap(),
            receiver: sender.peer_addr().unwrap(),
            protocol: 6,
        },
        flowspec: FlowSpec::ControlledLoad(TokenBucket::new(rate, 65_536.0)),
        dscp,
    }
}

#[tokio::test]
async fn ipv4_options_are_set_modified_and_reverted() {
    let (server, _client) = connected_pair("127.0.0.1:0").unwrap();
    // Start from non-default values so the revert is visible.
    let sock = socket2::SockRef::from(&server);
    sock.set_tos_v4(0x20).unwrap();
    sock.set_priority(2).unwrap();
    let before = SocketOptions::read(server.as_fd()).unwrap();
    assert_eq!(before.tos, Some(0x20));
    assert_eq!(before.priority, 2);
    assert_eq!(before.max_pacing_rate, u64::MAX);

    let mut enforcer = SocketEnforcer::new();
    let applied = enforcer
        .install(
            &rule(1, &server, 1_000_000.0, Some(46)),
            Some(server.as_fd()),
        )
        .await
        .unwrap();
    assert!(
        applied.summary.contains("pacing=1045580B/s"),
        "{}",
        applied.summary
    );
    let during = SocketOptions::read(server.as_fd()).unwrap();
    // DSCP EF in the upper six bits (TCP keeps the ECN bits to itself).
    assert_eq!(during.tos, Some(46 << 2));
    assert_eq!(during.priority, 6);
    // 1 000 000 B/s of payload travel in 1514-byte frames holding 1448 bytes each.
    assert_eq!(during.max_pacing_rate, 1_045_580);

    enforcer
        .modify(&rule(1, &server, 500_000.0, Some(34)), Some(server.as_fd()))
        .await
        .unwrap();
    let modified = SocketOptions::read(server.as_fd()).unwrap();
    assert_eq!(modified.tos, Some(34 << 2));
    assert_eq!(modified.max_pacing_rate, 522_790);

    enforcer
        .remove(RuleId(1), Some(server.as_fd()))
        .await
        .unwrap();
    assert_eq!(SocketOptions::read(server.as_fd()).unwrap(), before);
    assert_eq!(enforcer.installed_count(), 0);
    // Removing again (or an unknown id) is not an error.
    enforcer
        .remove(RuleId(1), Some(server.as_fd()))
        .await
        .unwrap();
}

#[tokio::test]
async fn ipv6_traffic_class_is_set_and_reverted() {
    let Some((server, _client)) = connected_pair("[::1]:0") else {
        eprintln!("skipping: no IPv6 loopback on this host");
        return;
    };
    let before = SocketOptions::read(server.as_fd()).unwrap();
    assert!(before.tclass.is_some());
    let mut enforcer = SocketEnforcer::new().with_priority(5);
    enforcer
        .install(&rule(7, &server, 250_000.0, Some(10)), Some(server.as_fd()))
        .await
        .unwrap();
    let during = SocketOptions::read(server.as_fd()).unwrap();
    assert_eq!(during.tclass.map(|t| t >> 2), Some(10));
    assert_eq!(during.priority, 5);
    // IPv6: 1428 bytes of payload per 1514-byte frame.
    assert_eq!(during.max_pacing_rate, 265_056);
    enforcer
        .remove(RuleId(7), Some(server.as_fd()))
        .await
        .unwrap();
    assert_eq!(SocketOptions::read(server.as_fd()).unwrap(), before);
}

#[tokio::test]
async fn without_dscp_the_marking_is_left_alone() {
    let (server, _client) = connected_pair("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&server).set_tos_v4(0x28).unwrap();
    let mut enforcer = SocketEnforcer::new();
    enforcer
        .install(&rule(2, &server, 1000.0, None), Some(server.as_fd()))
        .await
        .unwrap();
    let during = SocketOptions::read(server.as_fd()).unwrap();
    assert_eq!(during.tos, Some(0x28));
    assert_eq!(during.max_pacing_rate, 1045);
}

#[tokio::test]
async fn marking_only_leaves_pacing_alone() {
    let (server, _client) = connected_pair("127.0.0.1:0").unwrap();
    let mut enforcer = SocketEnforcer::new().without_pacing();
    enforcer
        .install(&rule(5, &server, 1000.0, Some(46)), Some(server.as_fd()))
        .await
        .unwrap();
    let during = SocketOptions::read(server.as_fd()).unwrap();
    assert_eq!(during.tos, Some(46 << 2));
    assert_eq!(during.max_pacing_rate, u64::MAX);
}

#[tokio::test]
async fn errors_carry_rsvp_codes() {
    let (server, _client) = connected_pair("127.0.0.1:0").unwrap();
    let mut enforcer = SocketEnforcer::new();
    let no_socket = enforcer
        .install(&rule(3, &server, 1000.0, None), None)
        .await
        .unwrap_err();
    assert!(
        matches!(no_socket, EnforceError::Unsupported(_)),
        "{no_socket}"
    );
    assert_eq!(no_socket.rsvp_error(), RsvpError::SERVICE_UNSUPPORTED);

    // Not a socket: the kernel refuses, the error is a system error (22).
    let file = std::fs::File::open("/dev/null").unwrap();
    let not_socket = enforcer
        .install(&rule(4, &server, 1000.0, None), Some(file.as_fd()))
        .await
        .unwrap_err();
    assert!(
        matches!(not_socket, EnforceError::Kernel { .. }),
        "{not_socket}"
    );
    assert_eq!(
        not_socket.rsvp_error().code,
        ErrorCode::TRAFFIC_CONTROL_SYSTEM_ERROR
    );
    assert_eq!(enforcer.installed_count(), 0);
}

/// Two rules on one socket, each given its own dup'd descriptor: the newest rule's options
/// apply, removing it re-applies the older one, and removing the last restores what the
/// socket had before any rule (not the first rule's marking and pacing).
#[tokio::test]
async fn two_rules_on_one_socket_restore_the_original_options() {
    let (server, _client) = connected_pair("127.0.0.1:0").unwrap();
    let sock = socket2::SockRef::from(&server);
    sock.set_tos_v4(0x20).unwrap();
    sock.set_priority(2).unwrap();
    let before = SocketOptions::read(server.as_fd()).unwrap();
    let fd_a = server.try_clone().unwrap();
    let fd_b = server.try_clone().unwrap();
    let mut enforcer = SocketEnforcer::new();

    enforcer
        .install(
            &rule(10, &server, 1_000_000.0, Some(46)),
            Some(fd_a.as_fd()),
        )
        .await
        .unwrap();
    let with_a = SocketOptions::read(server.as_fd()).unwrap();
    assert_eq!(with_a.tos, Some(46 << 2));
    assert_eq!(with_a.max_pacing_rate, 1_045_580);

    enforcer
        .install(&rule(11, &server, 500_000.0, Some(34)), Some(fd_b.as_fd()))
        .await
        .unwrap();
    let with_b = SocketOptions::read(server.as_fd()).unwrap();
    assert_eq!(with_b.tos, Some(34 << 2));
    assert_eq!(with_b.max_pacing_rate, 522_790);

    // Removing the older rule leaves the newer one in force.
    enforcer
        .remove(RuleId(10), Some(fd_a.as_fd()))
        .await
        .unwrap();
    assert_eq!(SocketOptions::read(server.as_fd()).unwrap(), with_b);

    enforcer
        .remove(RuleId(11), Some(fd_b.as_fd()))
        .await
        .unwrap();
    assert_eq!(SocketOptions::read(server.as_fd()).unwrap(), before);
    assert_eq!(enforcer.installed_count(), 0);
}

/// Removing the newest of two rules re-applies the remaining one; removing that one
/// restores the originals.
#[tokio::test]
async fn removing_the_newest_rule_reapplies_the_older_one() {
    let (server, _client) = connected_pair("127.0.0.1:0").unwrap();
    let before = SocketOptions::read(server.as_fd()).unwrap();
    let fd_a = server.try_clone().unwrap();
    let fd_b = server.try_clone().unwrap();
    let mut enforcer = SocketEnforcer::new();
    enforcer
        .install(
            &rule(20, &server, 1_000_000.0, Some(46)),
            Some(fd_a.as_fd()),
        )
        .await
        .unwrap();
    let with_a = SocketOptions::read(server.as_fd()).unwrap();
    enforcer
        .install(&rule(21, &server, 500_000.0, Some(34)), Some(fd_b.as_fd()))
        .await
        .unwrap();
    // A modify of the older rule is kept but the newer rule stays in force.
    let deferred = enforcer
        .modify(&rule(20, &server, 250_000.0, Some(10)), Some(fd_a.as_fd()))
        .await
        .unwrap();
    assert!(
        deferred.summary.contains("deferred"),
        "{}",
        deferred.summary
    );
    assert_eq!(
        SocketOptions::read(server.as_fd()).unwrap().tos,
        Some(34 << 2)
    );

    enforcer
        .remove(RuleId(21), Some(fd_b.as_fd()))
        .await
        .unwrap();
    let after_b = SocketOptions::read(server.as_fd()).unwrap();
    assert_eq!(after_b.tos, Some(10 << 2));
    assert_eq!(after_b.max_pacing_rate, 261_395);
    assert_ne!(after_b, with_a);

    enforcer
        .remove(RuleId(20), Some(fd_a.as_fd()))
        .await
        .unwrap();
    assert_eq!(SocketOptions::read(server.as_fd()).unwrap(), before);
}

#[tokio::test]
async fn dscp_above_63_is_refused_and_nothing_is_applied() {
    let (server, _client) = connected_pair("127.0.0.1:0").unwrap();
    let before = SocketOptions::read(server.as_fd()).unwrap();
    let mut enforcer = SocketEnforcer::new();
    for dscp in [64, 0x6e, 255] {
        let refused = enforcer
            .install(&rule(30, &server, 1000.0, Some(dscp)), Some(server.as_fd()))
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, EnforceError::Unsupported(m) if m.contains(&format!("dscp {dscp}"))),
            "{refused}"
        );
        assert_eq!(SocketOptions::read(server.as_fd()).unwrap(), before);
        assert_eq!(enforcer.installed_count(), 0);
    }
    // 63 is the largest code point and is accepted.
    enforcer
        .install(&rule(31, &server, 1000.0, Some(63)), Some(server.as_fd()))
        .await
        .unwrap();
    assert_eq!(
        SocketOptions::read(server.as_fd()).unwrap().tos,
        Some(63 << 2)
    );
    // A modify to an out-of-range DSCP leaves the installed rule's options in place.
    let during = SocketOptions::read(server.as_fd()).unwrap();
    enforcer
        .modify(&rule(31, &server, 2000.0, Some(64)), Some(server.as_fd()))
        .await
        .unwrap_err();
    assert_eq!(SocketOptions::read(server.as_fd()).unwrap(), during);
}
