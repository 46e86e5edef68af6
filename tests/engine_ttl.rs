//! RFC 2205 §2.9 non-RSVP hop detection: a Path whose received IP TTL differs from its
//! common header's Send_TTL crossed routers that do not speak RSVP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use qtoq::engine::{Engine, EngineConfig, Incoming, SessionId, SessionKey};
use qtoq::flow::AdmitAll;
use qtoq::wire::intserv::TokenBucket;
use qtoq::wire::{FilterSpec, Message, RsvpHop, Session, TimeValues};

const SEND_TTL: u8 = 64;

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn receiver_key() -> SessionKey {
    SessionKey {
        destination: SocketAddr::new(v4(2), 40_000),
        protocol: 6,
    }
}

fn sender() -> SocketAddr {
    SocketAddr::new(v4(1), 50_000)
}

/// A receiver host at 10.0.0.2 with one primed session.
fn receiver() -> (Engine, SessionId, Instant) {
    let mut config = EngineConfig::default();
    config.local_addrs = vec![v4(2)];
    let mut engine = Engine::new(config, Box::new(AdmitAll));
    let now = Instant::now();
    let id = engine.open_session(now, receiver_key()).unwrap();
    (engine, id, now)
}

fn path_bytes(send_ttl: u8) -> Vec<u8> {
    let key = receiver_key();
    Message::path(
        Session::new(key.destination, key.protocol),
        RsvpHop::new(v4(1), 0),
        TimeValues::new(Duration::from_secs(30)),
        FilterSpec::new(sender()),
        TokenBucket::new(125_000.0, 10_000.0),
        None,
    )
    .with_send_ttl(send_ttl)
    .encode()
    .unwrap()
}

/// Delivers a Path sent with [`SEND_TTL`] that arrived with IP TTL `ttl`; returns the path
/// state's flag.
fn deliver(engine: &mut Engine, id: SessionId, now: Instant, ttl: Option<u8>) -> bool {
    engine.handle_datagram(
        now,
        Incoming {
            source: v4(1),
            destination: v4(2),
            ttl,
            payload: &path_bytes(SEND_TTL),
        },
    );
    let info = engine.session_info(id).expect("session is open");
    assert_eq!(info.paths.len(), 1, "the path state was recorded");
    assert_eq!(info.paths[0].sender, sender());
    info.paths[0].non_rsvp_hops
}

#[test]
fn path_with_ttl_below_send_ttl_records_and_counts_non_rsvp_hops() {
    let (mut engine, id, now) = receiver();
    assert!(deliver(&mut engine, id, now, Some(SEND_TTL - 2)));
    assert_eq!(engine.stats().non_rsvp_hops, 1);
    assert_eq!(engine.stats().malformed, 0);
    // Every such refresh is counted.
    assert!(deliver(&mut engine, id, now, Some(SEND_TTL - 2)));
    assert_eq!(engine.stats().non_rsvp_hops, 2);
}

#[test]
fn path_with_ttl_equal_to_send_ttl_crossed_only_rsvp_hops() {
    let (mut engine, id, now) = receiver();
    assert!(!deliver(&mut engine, id, now, Some(SEND_TTL)));
    assert_eq!(engine.stats().non_rsvp_hops, 0);
    assert_eq!(engine.stats().received, 1);
}

#[test]
fn path_with_unknown_ttl_allows_no_conclusion() {
    let (mut engine, id, now) = receiver();
    assert!(!deliver(&mut engine, id, now, None));
    assert_eq!(engine.stats().non_rsvp_hops, 0);
    assert_eq!(engine.stats().received, 1);
}

#[test]
fn refresh_over_an_rsvp_only_route_clears_the_flag() {
    let (mut engine, id, now) = receiver();
    assert!(deliver(&mut engine, id, now, Some(SEND_TTL - 1)));
    assert!(!deliver(&mut engine, id, now, Some(SEND_TTL)));
    assert_eq!(engine.stats().non_rsvp_hops, 1);
    // And back again when the route changes once more.
    assert!(deliver(&mut engine, id, now, Some(SEND_TTL - 3)));
    assert_eq!(engine.stats().non_rsvp_hops, 2);
}

#[test]
fn locally_delivered_path_has_no_non_rsvp_hops() {
    let mut config = EngineConfig::default();
    config.local_addrs = vec![v4(2)];
    let mut engine = Engine::new(config, Box::new(AdmitAll));
    let now = Instant::now();
    let local_sender = SocketAddr::new(v4(2), 50_000);
    let receiver = engine.open_session(now, receiver_key()).unwrap();
    let sending = engine.open_session(now, receiver_key()).unwrap();
    engine
        .add_sender(
            now,
            sending,
            local_sender,
            TokenBucket::new(125_000.0, 10_000.0),
        )
        .expect("sender added");
    assert!(
        engine.stats().local_delivered >= 1,
        "the path stayed on this host"
    );
    let info = engine.session_info(receiver).expect("session is open");
    assert_eq!(info.paths.len(), 1);
    assert_eq!(info.paths[0].sender, local_sender);
    assert!(!info.paths[0].non_rsvp_hops);
    assert_eq!(engine.stats().non_rsvp_hops, 0);
}
