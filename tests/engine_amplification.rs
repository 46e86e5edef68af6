//! The engine is no reflector and no memory sink: what it transmits in answer to one
//! datagram is never more bytes than the datagram, a Resv with thousands of filter specs
//! costs one refusal, and a flood of Paths from one address neither takes more than its
//! quotas and the state cap nor keeps another peer's reservation from being set up.

mod engine_support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use engine_support::*;
use proptest::prelude::*;
use qtoq::engine::{Event, NeighborLimits, Style};
use qtoq::wire::{
    FilterSpec, Message, MsgType, Object, RsvpHop, Session, Style as WireStyle, TimeValues,
    MAX_FILTER_SPECS,
};

const R: Duration = Duration::from_secs(30);

/// A Resv from `nhop` for the session `v4(2):port` with one FLOWSPEC and `filters`
/// FILTER_SPECs (FF with the flowspec carried over, or SE), built object by object.
fn resv_with_filters(port: u16, style: WireStyle, nhop: IpAddr, filters: &[FilterSpec]) -> Vec<u8> {
    let mut msg = Message::new(MsgType::Resv);
    msg.push(Object::Session(Session::new(sock(v4(2), port), 6)))
        .push(Object::RsvpHop(RsvpHop::new(nhop, 0)))
        .push(Object::TimeValues(TimeValues::new(R)))
        .push(Object::Style(style))
        .push(Object::FlowSpec(flowspec()));
    for filter in filters {
        msg.push(Object::FilterSpec(*filter));
    }
    msg.encode().expect("encodable")
}

fn bogus_filters(n: usize) -> Vec<FilterSpec> {
    (0..n)
        .map(|i| FilterSpec::new(sock(IpAddr::from([10, 9, (i >> 8) as u8, i as u8]), 7)))
        .collect()
}

/// A Path of `v4(9)` for `destination` (`sender_port` from `v4(9)`).
fn path_bytes(destination: std::net::SocketAddr, protocol: u8, sender_port: u16) -> Vec<u8> {
    Message::path(
        Session::new(destination, protocol),
        RsvpHop::new(v4(9), 0),
        TimeValues::new(R),
        FilterSpec::new(sock(v4(9), sender_port)),
        tspec(),
        None,
    )
    .encode()
    .unwrap()
}

/// Appends raw objects (class, c-type, body length) to an encoded message and fixes its
/// length (checksum zeroed: not checked).
fn append_objects(mut bytes: Vec<u8>, objects: &[(u8, u8, usize)]) -> Vec<u8> {
    for &(class, c_type, body) in objects {
        let len = u16::try_from(4 + body).unwrap_or(4);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&[class, c_type]);
        bytes.extend(std::iter::repeat_n(0x5a, usize::from(len) - 4));
    }
    bytes.truncate(65_532);
    let len = u16::try_from(bytes.len()).unwrap().to_be_bytes();
    bytes[6..8].copy_from_slice(&len);
    bytes[2..4].copy_from_slice(&[0, 0]);
    bytes
}

/// The messages of a real setup between the two hosts, as transmitted.
fn valid_messages() -> Vec<Vec<u8>> {
    let mut f = two_hosts(40);
    let (s, c) = f.setup(40_000);
    f.net.run_for(Duration::from_secs(100));
    f.net.with(f.client, |e, now| e.release(now, c));
    f.net.with(f.server, |e, now| e.release(now, s));
    f.net.captured.clone()
}

fn count_type(node: &Node, msg_type: u8, since: usize) -> usize {
    node.received[since..]
        .iter()
        .filter(|(_, t, _)| *t == msg_type)
        .count()
}

#[test]
fn a_resv_with_5450_filter_specs_is_refused_whole_without_answers() {
    let mut f = two_hosts(50);
    let (s, _c) = f.setup(40_000);
    f.net.run_for(SEC);
    let attacker = f.net.add("attacker", v4(9), config(51));
    let bytes = resv_with_filters(40_000, WireStyle::FixedFilter, v4(9), &bogus_filters(5450));
    assert!(bytes.len() > 65_000, "{}", bytes.len());
    let before = f.net.nodes[f.server].engine.stats().clone();
    let started = Instant::now();
    let (answered, datagrams) = f.net.inject_measured(f.server, v4(9), &bytes);
    let spent = started.elapsed();
    f.net.run_for(SEC);
    let stats = f.net.nodes[f.server].engine.stats().clone();
    println!(
        "5450-filter resv: {} bytes in, {answered} bytes in {datagrams} datagrams out; {spent:?}",
        bytes.len()
    );
    assert!(answered <= bytes.len());
    assert_eq!(stats.malformed, before.malformed + 1, "refused at decode");
    assert_eq!(
        count_type(&f.net.nodes[attacker], 4, 0),
        0,
        "no ResvErr for a message refused whole"
    );
    // Well under the 3 ms per datagram it cost when every filter spec was a reservation.
    assert!(spent < Duration::from_millis(50), "{spent:?}");
    // The real reservation is untouched.
    let info = f.net.nodes[f.server].engine.session_info(s).unwrap();
    assert_eq!(info.reservations.len(), 1);
}

#[test]
fn a_resv_with_64_bogus_filter_specs_is_answered_within_its_budget_and_rate() {
    let mut f = two_hosts(52);
    f.setup(40_000);
    f.net.run_for(SEC);
    let attacker = f.net.add("attacker", v4(9), config(53));
    let bytes = resv_with_filters(
        40_000,
        WireStyle::FixedFilter,
        v4(9),
        &bogus_filters(MAX_FILTER_SPECS),
    );
    let burst = NeighborLimits::default().answer_burst as usize;
    let mut errors = 0;
    for round in 0..5 {
        let since = f.net.nodes[attacker].received.len();
        let (answered, datagrams) = f.net.inject_measured(f.server, v4(9), &bytes);
        assert!(
            answered <= bytes.len(),
            "round {round}: {answered} > {}",
            bytes.len()
        );
        // Each FF ResvErr names one filter spec: 64 of them would be 6 400 bytes.
        assert!(datagrams < 10, "{datagrams}");
        f.net.run_for(Duration::from_millis(10));
        errors += count_type(&f.net.nodes[attacker], 4, since);
    }
    // Five such Resvs within 50 ms: 320 errors deserved, the neighbor's answer burst sent
    // (and what its rate refilled meanwhile: 32/s, one or two).
    assert!(errors <= burst + 2, "{errors} ResvErrs");
    assert!(errors > 0);
    let stats = f.net.nodes[f.server].engine.stats();
    assert_eq!(
        stats.answers_suppressed as usize + errors,
        5 * MAX_FILTER_SPECS
    );
}

#[test]
fn a_flood_of_100k_paths_stays_within_quotas_and_the_cap_and_starves_no_one() {
    // About 4 500 flood sessions fit: the cap binds before the neighbor's new-state bucket
    // (4 096 at once, 1 024/s) lets the flood reach its 16 384-session quota.
    let cap = 1 << 20;
    let mut net = Net::new(60);
    let server = net.add("server", v4(1), config(61));
    let victim = net.add("victim", v4(2), {
        let mut config = config(62);
        config.max_state_bytes = cap;
        config
    });
    let attacker = net.add("attacker", v4(9), config(63));
    let started = Instant::now();
    let mut sent_bytes = 0usize;
    let mut answered_bytes = 0usize;
    let mut peak = 0u64;
    let mut legit = None;
    let total = 100_000u32;
    for i in 0..total {
        // Distinct sessions on the victim's own address: ports and two protocols.
        let port = (i % 60_000) as u16 + 1024;
        let protocol = if i < 60_000 { 6 } else { 17 };
        let bytes = path_bytes(sock(v4(2), port), protocol, 5000);
        sent_bytes += bytes.len();
        answered_bytes += net.inject_measured(victim, v4(9), &bytes).0;
        if i % 1000 == 999 {
            net.run_for(Duration::from_millis(10));
            peak = peak.max(net.nodes[victim].engine.stats().state_bytes);
        }
        if i == total / 2 {
            // Mid-flood, a real server sets up a reservation with the victim.
            let k = key(sock(v4(2), 40_000));
            let c = net.with(victim, |e, now| {
                let id = e.open_session(now, k).unwrap();
                e.reserve(now, id, Style::FixedFilter, flowspec(), true)
                    .unwrap();
                id
            });
            net.with(server, |e, now| {
                let id = e.open_session(now, k).unwrap();
                e.add_sender(now, id, sock(v4(1), 8080), tspec()).unwrap();
            });
            legit = Some(c);
        }
    }
    net.run_for(Duration::from_secs(2));
    let elapsed = started.elapsed();
    let engine = &net.nodes[victim].engine;
    let stats = engine.stats().clone();
    peak = peak.max(stats.state_bytes);
    println!(
        "flood: {total} paths ({sent_bytes} bytes) → {answered_bytes} bytes answered; {} sessions; \
         state {} accounted / {} measured, peak {peak}, cap {cap}; neighbor refusals {}, memory \
         refusals {}, answers suppressed {}; {elapsed:?}",
        engine.session_count(),
        stats.state_bytes,
        engine.state_bytes(),
        stats.neighbor_refused,
        stats.memory_refused,
        stats.answers_suppressed,
    );
    // The legitimate reservation was established despite the flood.
    let c = legit.unwrap();
    let events = net.nodes[victim].events_of(c);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Established { .. })),
        "{events:?}"
    );
    assert_eq!(net.nodes[server].install_count(), 1);
    // Memory stayed under the cap (plus the owner's own session, which the cap does not
    // refuse), as accounted and as measured.
    assert!(peak as usize <= cap + 4096, "peak {peak} over cap {cap}");
    assert!(
        engine.state_bytes() <= cap * 3 / 2,
        "{}",
        engine.state_bytes()
    );
    assert!(stats.memory_full);
    assert!(stats.memory_refused > 0);
    // The flood's sessions are bounded by the cap long before its quota.
    assert!(engine.session_count() < 16_384);
    // No amplification: the PathErrs the refusals earned are rate limited.
    assert!(answered_bytes <= sent_bytes / 100, "{answered_bytes}");
    assert!(net.nodes[attacker].received.len() < 1000);
}

#[test]
fn a_flood_from_one_address_stops_at_its_quotas() {
    let mut net = Net::new(64);
    let victim = net.add("victim", v4(2), {
        let mut config = config(65);
        config.neighbor_limits.sessions = 500;
        config.neighbor_limits.new_state_burst = 200;
        config.neighbor_limits.new_state_rate = 100;
        config
    });
    net.add("attacker", v4(9), config(66));
    net.add("other", v4(8), config(67));
    for i in 0..2000u16 {
        let bytes = path_bytes(sock(v4(2), 1000 + i), 6, 5000);
        net.inject(victim, v4(9), &bytes);
    }
    // At once: the burst.
    assert_eq!(net.nodes[victim].engine.session_count(), 200);
    // Over 10 s: the rate, up to the quota.
    for i in 0..2000u16 {
        let bytes = path_bytes(sock(v4(2), 10_000 + i), 6, 5000);
        net.inject(victim, v4(9), &bytes);
        net.run_for(Duration::from_millis(5));
    }
    assert_eq!(net.nodes[victim].engine.session_count(), 500);
    // Another address is not held back by the first one's quota.
    let other = Message::path(
        Session::new(sock(v4(2), 30_000), 6),
        RsvpHop::new(v4(8), 0),
        TimeValues::new(R),
        FilterSpec::new(sock(v4(8), 5000)),
        tspec(),
        None,
    )
    .encode()
    .unwrap();
    net.inject(victim, v4(8), &other);
    assert_eq!(net.nodes[victim].engine.session_count(), 501);
    // Everything expires, and the accounting returns to nothing.
    net.run_for(Duration::from_secs(300));
    let engine = &net.nodes[victim].engine;
    assert_eq!(engine.session_count(), 0);
    assert_eq!(engine.stats().state_bytes, 0);
}

/// One hostile input of the corpus.
#[derive(Debug, Clone)]
enum Hostile {
    Junk(Vec<u8>),
    Mutated {
        which: usize,
        flips: Vec<(usize, u8)>,
        cut: Option<usize>,
    },
    ManyFilters {
        n: usize,
        style: u8,
        real: bool,
        nhop: u8,
    },
    ManyObjects {
        n: usize,
        class: u8,
        body: usize,
        resv: bool,
    },
}

fn hostile() -> impl Strategy<Value = Hostile> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..400).prop_map(Hostile::Junk),
        (
            any::<usize>(),
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            proptest::option::of(any::<usize>())
        )
            .prop_map(|(which, flips, cut)| Hostile::Mutated { which, flips, cut }),
        (0usize..200, 0u8..3, any::<bool>(), any::<u8>()).prop_map(|(n, style, real, nhop)| {
            Hostile::ManyFilters {
                n,
                style,
                real,
                nhop,
            }
        }),
        (
            0usize..400,
            prop_oneof![Just(0u8), Just(128), Just(200), Just(14), Just(192)],
            0usize..16,
            any::<bool>()
        )
            .prop_map(|(n, class, body, resv)| Hostile::ManyObjects {
                n,
                class,
                body: body * 4,
                resv
            }),
    ]
}

fn build(h: &Hostile, valid: &[Vec<u8>], sender: std::net::SocketAddr) -> Vec<u8> {
    match h {
        Hostile::Junk(bytes) => bytes.clone(),
        Hostile::Mutated { which, flips, cut } => {
            let mut m = valid[which % valid.len()].clone();
            for &(at, byte) in flips {
                let len = m.len();
                m[at % len] ^= byte | 1;
            }
            if let Some(cut) = cut {
                m.truncate(cut % (m.len() + 1));
            }
            m
        }
        Hostile::ManyFilters {
            n,
            style,
            real,
            nhop,
        } => {
            let style = [
                WireStyle::FixedFilter,
                WireStyle::SharedExplicit,
                WireStyle::WildcardFilter,
            ][usize::from(*style)];
            let mut filters = bogus_filters(*n);
            if *real {
                filters.insert(0, FilterSpec::new(sender));
            }
            resv_with_filters(40_000, style, IpAddr::from([10, 0, 0, *nhop]), &filters)
        }
        Hostile::ManyObjects {
            n,
            class,
            body,
            resv,
        } => {
            let base = if *resv {
                resv_with_filters(
                    40_000,
                    WireStyle::FixedFilter,
                    v4(9),
                    &[FilterSpec::new(sender)],
                )
            } else {
                path_bytes(sock(v4(2), 40_000), 6, 6000)
            };
            let objects: Vec<(u8, u8, usize)> = (0..*n).map(|_| (*class, 1, *body)).collect();
            append_objects(base, &objects)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever arrives, each datagram's answer (transmitted within its `handle_datagram`) is
    /// at most as many bytes as the datagram, and nothing panics; answers held back stay
    /// within the neighbor's answer burst.
    #[test]
    fn no_datagram_is_answered_with_more_bytes_than_it_has(
        inputs in proptest::collection::vec(hostile(), 1..8),
    ) {
        let valid = valid_messages();
        let mut f = two_hosts(70);
        f.setup(40_000);
        f.net.run_for(SEC);
        let sender = f.sender;
        let mut deferred = 0;
        for h in &inputs {
            let bytes = build(h, &valid, sender);
            for node in [f.server, f.client] {
                let before = f.net.nodes[node].engine.stats().answers_deferred;
                let (answered, _) = f.net.inject_measured(node, v4(9), &bytes);
                prop_assert!(
                    answered <= bytes.len(),
                    "{h:?}: {answered} bytes answered to {}", bytes.len()
                );
                deferred += f.net.nodes[node].engine.stats().answers_deferred - before;
            }
        }
        prop_assert!(deferred <= 2 * u64::from(NeighborLimits::default().answer_burst));
        f.net.run_for(Duration::from_secs(400));
        for node in &f.net.nodes {
            let stats = node.engine.stats();
            prop_assert!(stats.received >= stats.malformed);
        }
    }
}
