//! Both ends on one host with one engine (the embedded agent's demo on loopback): messages to
//! the host itself are delivered to the engine, nothing is transmitted.

mod engine_support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use engine_support::*;
use qtoq::engine::{Event, RuleAction, Style};
use qtoq::wire::RsvpError;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn signaled_flow_on_one_host_establishes_refreshes_and_tears_down() {
    let mut net = Net::new(7);
    let host = net.add("host", LOOPBACK, config(7));
    let server_addr = sock(LOOPBACK, 8080);
    let client_addr = sock(LOOPBACK, 40_001);
    let k = key(client_addr);

    // Client primes its session and asks for the reservation before any PATH exists.
    let client = net.with(host, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.reserve(now, id, Style::FixedFilter, flowspec(), true)
            .unwrap();
        id
    });
    assert!(net.nodes[host].events.is_empty());
    // Server: session for the connection, sender = server.
    let server = net.with(host, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.add_sender(now, id, server_addr, tspec()).unwrap();
        id
    });

    let node = &net.nodes[host];
    assert_eq!(
        node.events_of(client),
        vec![
            Event::PathReceived {
                sender: server_addr,
                tspec: tspec()
            },
            Event::Confirmed {
                flowspec: flowspec()
            },
            Event::Established {
                flowspec: flowspec()
            },
        ]
    );
    assert_eq!(
        node.events_of(server),
        vec![
            Event::ResvReceived {
                flowspec: flowspec(),
                style: Style::FixedFilter
            },
            Event::Established {
                flowspec: flowspec()
            },
        ]
    );
    assert_eq!(node.actions.len(), 1);
    match &node.actions[0].1 {
        RuleAction::Install { session, rule } => {
            assert_eq!(*session, server);
            assert_eq!(rule.flow.sender, server_addr);
            assert_eq!(rule.flow.receiver, client_addr);
            assert_eq!(rule.flow.protocol, 6);
            assert_eq!(rule.flowspec, flowspec());
        }
        other => panic!("expected an install, got {other:?}"),
    }
    let stats = node.engine.stats().clone();
    assert_eq!(stats.transmitted, 0, "nothing goes on the wire");
    assert!(
        stats.local_delivered >= 3,
        "path, resv, resvconf: {stats:?}"
    );

    // An hour of refreshes: no new events, no expiry, refreshes keep flowing locally.
    net.run_for(Duration::from_secs(3600));
    let node = &net.nodes[host];
    assert_eq!(node.events.len(), 5, "{:?}", node.events);
    assert_eq!(node.engine.stats().expired, 0);
    assert!(node.engine.stats().local_delivered > stats.local_delivered + 200);
    assert_eq!(node.engine.stats().transmitted, 0);

    // Server closes: PathTear reaches the client, the rule goes.
    net.with(host, |e, now| e.release(now, server));
    let node = &net.nodes[host];
    assert_eq!(
        node.events_of(client).last(),
        Some(&Event::TornDown {
            reason: format!("path torn down by sender {server_addr}")
        })
    );
    assert!(matches!(
        node.events_of(server).last(),
        Some(Event::TornDown { .. })
    ));
    assert_eq!(node.remove_count(), 1);
    net.with(host, |e, now| e.release(now, client));
    net.run_for(Duration::from_secs(600));
    let node = &net.nodes[host];
    node.assert_rules_balanced();
    assert_eq!(node.engine.session_count(), 0);
    assert_eq!(node.engine.owner_count(), 0);
    assert_eq!(node.engine.poll_timeout(), None);
    assert_eq!(node.engine.stats().transmitted, 0);
}

#[test]
fn receiver_opened_after_the_path_still_gets_it() {
    let mut net = Net::new(8);
    let host = net.add("host", LOOPBACK, config(8));
    let server_addr = sock(LOOPBACK, 8080);
    let k = key(sock(LOOPBACK, 40_002));
    net.with(host, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.add_sender(now, id, server_addr, tspec()).unwrap();
    });
    // No receiver yet, but the destination is one of our addresses: the Path is ours, and
    // its path state is kept for a later owner.
    let stats = net.nodes[host].engine.stats().clone();
    assert_eq!(
        (stats.transmitted, stats.local_delivered),
        (0, 1),
        "{stats:?}"
    );
    let client = net.with(host, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.reserve(now, id, Style::FixedFilter, flowspec(), true)
            .unwrap();
        id
    });
    let events = net.nodes[host].events_of(client);
    assert_eq!(
        events.first(),
        Some(&Event::PathReceived {
            sender: server_addr,
            tspec: tspec()
        })
    );
    assert!(events.contains(&Event::Established {
        flowspec: flowspec()
    }));
    assert_eq!(net.nodes[host].engine.stats().transmitted, 0);
}

#[test]
fn another_engine_on_another_loopback_address_is_reached_through_the_transport() {
    let mut net = Net::new(13);
    let host = net.add("host", LOOPBACK, config(13));
    let other = net.add("other", OTHER_LOOPBACK, config(14));
    let server_addr = sock(LOOPBACK, 8080);
    let k = key(sock(OTHER_LOOPBACK, 40_006));
    let server = net.with(host, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.add_sender(now, id, server_addr, tspec()).unwrap();
        id
    });
    // Loopback, but not ours and no state of ours is for it: it goes out.
    assert_eq!(net.nodes[host].engine.stats().transmitted, 1);
    net.run_for(Duration::from_millis(10));
    let client = open_client(&mut net, other, k);
    net.run_for(Duration::from_millis(100));
    assert!(net.nodes[other]
        .events_of(client)
        .contains(&Event::Established {
            flowspec: flowspec()
        }));
    assert!(net.nodes[host]
        .events_of(server)
        .contains(&Event::Established {
            flowspec: flowspec()
        }));
    assert!(net.nodes[host].engine.stats().transmitted >= 2);
    assert!(net.nodes[other].engine.stats().transmitted >= 1);
}

#[test]
fn unsignaled_rule_sends_nothing_and_is_removed_on_release() {
    let mut net = Net::new(9);
    let host = net.add("host", LOOPBACK, config(9));
    let flow = qtoq::flow::Flow {
        sender: sock(LOOPBACK, 8080),
        receiver: sock(LOOPBACK, 40_003),
        protocol: 6,
    };
    let (id, rule) = net.with(host, |e, now| {
        let id = e.open_session(now, key(flow.receiver)).unwrap();
        let rule = e.admit_unsignaled(now, id, flow, flowspec()).unwrap();
        (id, rule)
    });
    let node = &net.nodes[host];
    assert_eq!(node.install_count(), 1);
    assert_eq!(
        node.events_of(id),
        vec![Event::Established {
            flowspec: flowspec()
        }]
    );
    assert!(node.installed.contains_key(&rule));
    // Signaling on an unsignaled session is refused.
    assert!(net
        .with(host, |e, now| e.add_sender(now, id, flow.sender, tspec()))
        .is_err());
    net.with(host, |e, now| e.release(now, id));
    let node = &net.nodes[host];
    node.assert_rules_balanced();
    assert_eq!(node.engine.stats().transmitted, 0);
    assert_eq!(node.engine.stats().local_delivered, 0);
    assert_eq!(node.engine.session_count(), 0);

    // Admission refusal: an error, nothing installed, nothing left.
    net.nodes[host]
        .gate
        .deny_with(RsvpError::BANDWIDTH_UNAVAILABLE, "no bandwidth left");
    let denied = net.with(host, |e, now| {
        let id = e.open_session(now, key(flow.receiver)).unwrap();
        let r = e.admit_unsignaled(now, id, flow, flowspec());
        e.release(now, id);
        r
    });
    match denied {
        Err(qtoq::engine::CommandError::Denied(d)) => {
            assert_eq!(d.error, RsvpError::BANDWIDTH_UNAVAILABLE)
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    assert_eq!(net.nodes[host].install_count(), 1);
    assert_eq!(net.nodes[host].engine.session_count(), 0);
}

#[test]
fn a_thousand_same_host_reservations_through_one_engine() {
    let mut net = Net::new(10);
    let host = net.add("host", LOOPBACK, config(10));
    let server_addr = sock(LOOPBACK, 8080);
    let mut pairs = Vec::new();
    for i in 0..1000u16 {
        let k = key(sock(LOOPBACK, 20_000 + i));
        let client = net.with(host, |e, now| {
            let id = e.open_session(now, k).unwrap();
            e.reserve(now, id, Style::FixedFilter, flowspec(), true)
                .unwrap();
            id
        });
        let server = net.with(host, |e, now| {
            let id = e.open_session(now, k).unwrap();
            e.add_sender(now, id, server_addr, tspec()).unwrap();
            id
        });
        pairs.push((server, client));
    }
    net.run_for(Duration::from_secs(120));
    let node = &net.nodes[host];
    for (server, client) in &pairs {
        assert!(
            node.events_of(*client).contains(&Event::Established {
                flowspec: flowspec()
            }),
            "client {client:?}: {:?}",
            node.events_of(*client)
        );
        assert!(node.events_of(*server).contains(&Event::Established {
            flowspec: flowspec()
        }));
    }
    assert_eq!(node.install_count(), 1000);
    assert_eq!(node.engine.session_count(), 1000);
    for (server, client) in pairs {
        net.with(host, |e, now| {
            e.release(now, server);
            e.release(now, client);
        });
    }
    net.run_for(Duration::from_secs(1));
    net.nodes[host].assert_rules_balanced();
    assert_eq!(net.nodes[host].engine.session_count(), 0);
}

/// The client's address is this host's but not one the transport brings messages back to (the
/// agent bound to 127.0.0.1, the client on 127.0.0.2): whatever is not delivered locally is
/// lost, as it is on a real host.
const OTHER_LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Opens a receiver for `k` that asks for a confirmed FF reservation.
fn open_client(net: &mut Net, host: usize, k: qtoq::engine::SessionKey) -> qtoq::engine::SessionId {
    net.with(host, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.reserve(now, id, Style::FixedFilter, flowspec(), true)
            .unwrap();
        id
    })
}

#[test]
fn receiver_closing_first_leaves_no_stale_path_for_a_reused_port() {
    let mut net = Net::new(11);
    let host = net.add("host", LOOPBACK, config(11));
    let server_addr = sock(LOOPBACK, 8080);
    let k = key(sock(OTHER_LOOPBACK, 40_004));
    let client = open_client(&mut net, host, k);
    let server = net.with(host, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.add_sender(now, id, server_addr, tspec()).unwrap();
        id
    });
    assert!(net.nodes[host]
        .events_of(client)
        .contains(&Event::Established {
            flowspec: flowspec()
        }));

    // The receiver closes first; the sender's PathTear must still reach the path state.
    net.with(host, |e, now| e.release(now, client));
    net.run_for(Duration::from_secs(1));
    net.with(host, |e, now| e.release(now, server));
    let node = &net.nodes[host];
    assert_eq!(
        node.engine.session_count(),
        0,
        "path state outlived both owners"
    );
    assert_eq!(
        node.engine.stats().transmitted,
        0,
        "{:?}",
        node.engine.stats()
    );
    node.assert_rules_balanced();

    // A new client on the same port sees no stale sender, so no ResvErr and no retransmit:
    // only, after the peer wait, that no sender is there.
    let again = open_client(&mut net, host, k);
    net.run_for(Duration::from_secs(5));
    let events = net.nodes[host].events_of(again);
    assert_eq!(
        events,
        vec![Event::NoSender {
            waited: qtoq::engine::DEFAULT_PEER_WAIT
        }],
        "stale state answered"
    );
    assert_eq!(net.nodes[host].engine.stats().transmitted, 0);
}

#[test]
fn sender_refreshes_keep_path_state_after_the_receiver_closed() {
    let mut net = Net::new(12);
    let host = net.add("host", LOOPBACK, config(12));
    let server_addr = sock(LOOPBACK, 8080);
    let k = key(sock(OTHER_LOOPBACK, 40_005));
    let client = open_client(&mut net, host, k);
    net.with(host, |e, now| {
        let id = e.open_session(now, k).unwrap();
        e.add_sender(now, id, server_addr, tspec()).unwrap();
    });
    net.with(host, |e, now| e.release(now, client));

    // Ten minutes of refreshes with no receiver: they are delivered here, nothing expires.
    let before = net.nodes[host].engine.stats().local_delivered;
    net.run_for(Duration::from_secs(600));
    let stats = net.nodes[host].engine.stats().clone();
    assert_eq!(stats.expired, 0, "{stats:?}");
    assert_eq!(stats.transmitted, 0, "{stats:?}");
    assert!(stats.local_delivered >= before + 10, "{stats:?}");

    // A later receiver on the port finds the live path at once and gets its reservation.
    let later = open_client(&mut net, host, k);
    let events = net.nodes[host].events_of(later);
    assert_eq!(
        events.first(),
        Some(&Event::PathReceived {
            sender: server_addr,
            tspec: tspec()
        })
    );
    assert!(events.contains(&Event::Established {
        flowspec: flowspec()
    }));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::ResvError { .. } | Event::Expired { .. })),
        "{events:?}"
    );
}
