//! Admission arithmetic: rule limits, pools, interfaces, host limits, release, modification
//! without a killer reservation, reload; per-interface budgets from an injected interface
//! table (never this host's NICs).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use qtoq::flow::{Admission, AdmissionRequest, Flow, RuleId};
use qtoq::policy::{
    BudgetSource, InterfaceAddress, InterfaceBudget, InterfaceProbe, Policy, PolicyTime,
    StaticProbe, UnlimitedReason, Weekday, DEFAULT_HOST_MAX_FLOWS, DEFAULT_MAX_FLOW_RATE,
    DEFAULT_RESERVABLE_SHARE,
};
use qtoq::wire::intserv::{FlowSpec, GuaranteedRspec, TokenBucket};
use qtoq::wire::{ErrorCode, RsvpError};

const NOON: PolicyTime = PolicyTime {
    weekday: Weekday::Wed,
    minute_of_day: 12 * 60,
};

fn request(id: u64, sender_port: u16, rate: f32) -> AdmissionRequest {
    AdmissionRequest::new(
        RuleId(id),
        Flow {
            sender: format!("10.0.0.1:{sender_port}").parse().unwrap(),
            receiver: "10.0.0.2:40000".parse().unwrap(),
            protocol: 6,
        },
        FlowSpec::ControlledLoad(TokenBucket::new(rate, 10_000.0)),
    )
}

/// A policy whose interface discovery knows no interface: the 10.0.0.x flows of these tests
/// are charged to declared interfaces only, whatever this host's NICs are.
fn policy(text: &str) -> Policy {
    Policy::from_toml_str(text, "t")
        .unwrap()
        .with_interface_probe(StaticProbe::new())
}

#[test]
fn rule_rate_limit_is_a_policy_failure() {
    let mut p = policy(
        r#"
        [[rule]]
        name = "r"
        service = "controlled-load"
        rate = "8Mbit"
        dscp = "EF"
        "#,
    );
    let grant = p.admit_at(&request(1, 5000, 1_000_000.0), NOON).unwrap();
    assert_eq!(grant.dscp, Some(46));
    assert_eq!(grant.policy.as_deref(), Some("r"));
    let denied = p
        .admit_at(&request(2, 5001, 1_000_001.0), NOON)
        .unwrap_err();
    assert_eq!(
        denied.error,
        RsvpError::new(ErrorCode::POLICY_CONTROL_FAILURE, 0)
    );
    assert!(denied.reason.contains("exceeds"), "{}", denied.reason);
    assert_eq!(p.admitted_count(), 1);
    assert_eq!(p.stats().denied, 1);
}

#[test]
fn pools_are_shared_between_rules_and_refilled_by_release() {
    let mut p = policy(
        r#"
        [host]
        max_rate = "1Gbit"

        [[pool]]
        name = "shared"
        total_rate = 3_000_000

        [[rule]]
        name = "a"
        service = "controlled-load"
        pool = "shared"
        match = { local_port = 5000 }

        [[rule]]
        name = "b"
        service = "controlled-load"
        pool = "shared"
        match = { local_port = 6000 }
        "#,
    );
    p.admit_at(&request(1, 5000, 2_000_000.0), NOON).unwrap();
    p.admit_at(&request(2, 6000, 1_000_000.0), NOON).unwrap();
    let denied = p.admit_at(&request(3, 6000, 1.0), NOON).unwrap_err();
    assert_eq!(denied.error, RsvpError::BANDWIDTH_UNAVAILABLE);
    assert!(denied.reason.contains("pool `shared`"), "{}", denied.reason);
    p.release(RuleId(1));
    p.admit_at(&request(3, 6000, 2_000_000.0), NOON).unwrap();
    assert_eq!(p.admitted_rate(), 3_000_000.0);
    // Releasing unknown ids is harmless.
    p.release(RuleId(99));
    assert_eq!(p.stats().released, 1);
}

#[test]
fn rule_total_rate_and_max_flows() {
    let mut p = policy(
        r#"
        [[rule]]
        name = "r"
        service = "controlled-load"
        total_rate = 1000
        max_flows = 2
        "#,
    );
    p.admit_at(&request(1, 1, 400.0), NOON).unwrap();
    p.admit_at(&request(2, 2, 400.0), NOON).unwrap();
    let third = p.admit_at(&request(3, 3, 1.0), NOON).unwrap_err();
    assert_eq!(
        third.error.code,
        ErrorCode::POLICY_CONTROL_FAILURE,
        "{}",
        third.reason
    );
    assert!(third.reason.contains("max_flows"));
    // Modifying an existing one to exceed total_rate: bandwidth unavailable.
    let bigger = p.admit_at(&request(2, 2, 700.0), NOON).unwrap_err();
    assert_eq!(bigger.error, RsvpError::BANDWIDTH_UNAVAILABLE);
    // Up to the exact limit is fine (the old 400 is not counted twice).
    p.admit_at(&request(2, 2, 600.0), NOON).unwrap();
    assert_eq!(p.admitted_rate(), 1000.0);
}

#[test]
fn failed_modification_keeps_the_old_reservation() {
    let mut p = policy(
        r#"
        [[interface]]
        name = "eth0"
        capacity = "20Mbit"
        "#,
    );
    p.admit_at(&request(1, 1, 1_000_000.0), NOON).unwrap();
    p.admit_at(&request(2, 2, 1_000_000.0), NOON).unwrap();
    // 2.5 MB/s capacity: growing rule 1 to 2 MB/s would need 3 MB/s.
    let denied = p.admit_at(&request(1, 1, 2_000_000.0), NOON).unwrap_err();
    assert_eq!(denied.error, RsvpError::BANDWIDTH_UNAVAILABLE);
    assert!(
        denied.reason.contains("interface eth0"),
        "{}",
        denied.reason
    );
    assert_eq!(p.admitted_count(), 2);
    assert_eq!(p.admitted_rate(), 2_000_000.0);
    // A modification that fits replaces the old one in place.
    p.admit_at(&request(1, 1, 1_500_000.0), NOON).unwrap();
    assert_eq!(p.admitted_rate(), 2_500_000.0);
}

#[test]
fn interfaces_only_count_their_addresses() {
    let mut p = policy(
        r#"
        [[interface]]
        name = "eth0"
        capacity = 1000
        addresses = ["10.0.0.0/24"]
        [[interface]]
        name = "eth1"
        capacity = 1000
        addresses = ["192.168.0.0/24"]
        "#,
    );
    p.admit_at(&request(1, 1, 1000.0), NOON).unwrap();
    assert!(p.admit_at(&request(2, 2, 1.0), NOON).is_err());
    let mut other = request(3, 3, 1000.0);
    other.flow.sender = "192.168.0.5:3".parse().unwrap();
    p.admit_at(&other, NOON).unwrap();
}

/// The default has no host-wide pot any more (it was 100 Mbit/s for the whole host): flows on
/// no known interface are only capped per reservation, at 100 Mbit/s, a policy failure.
#[test]
fn default_policy_caps_each_reservation_not_the_host() {
    let mut p = Policy::default().with_interface_probe(StaticProbe::new());
    p.admit_at(&request(1, 1, 12_000_000.0), NOON).unwrap();
    p.admit_at(&request(2, 2, 600_000.0), NOON).unwrap();
    p.admit_at(&request(3, 3, 12_500_000.0), NOON).unwrap();
    assert_eq!(p.admitted_rate(), 25_100_000.0);
    let denied = p.admit_at(&request(4, 4, 12_500_001.0), NOON).unwrap_err();
    assert_eq!(
        denied.error,
        RsvpError::new(ErrorCode::POLICY_CONTROL_FAILURE, 0)
    );
    assert!(denied.reason.contains("max_flow_rate"), "{}", denied.reason);
    // A configured host total still applies.
    let mut p = policy("[host]\nmax_rate = \"100Mbit\"\n");
    p.admit_at(&request(1, 1, 12_000_000.0), NOON).unwrap();
    let denied = p.admit_at(&request(2, 2, 600_000.0), NOON).unwrap_err();
    assert_eq!(denied.error, RsvpError::BANDWIDTH_UNAVAILABLE);
    assert!(denied.reason.contains("host max_rate"), "{}", denied.reason);
    p.admit_at(&request(2, 2, 500_000.0), NOON).unwrap();
}

#[test]
fn signaling_and_service_mismatches_are_policy_failures() {
    let mut p = policy(
        r#"
        [[rule]]
        name = "quiet"
        service = "controlled-load"
        signaling = false
        rate = 1000
        match = { local_port = 1 }

        [[rule]]
        name = "cl"
        service = "controlled-load"
        match = { local_port = 2 }
        "#,
    );
    let signaled = p.admit_at(&request(1, 1, 100.0), NOON).unwrap_err();
    assert_eq!(signaled.error.code, ErrorCode::POLICY_CONTROL_FAILURE);
    let mut quiet = request(1, 1, 100.0);
    quiet.signaled = false;
    p.admit_at(&quiet, NOON).unwrap();
    let mut guaranteed = request(2, 2, 100.0);
    guaranteed.flowspec = FlowSpec::Guaranteed {
        tspec: TokenBucket::new(100.0, 1000.0),
        rspec: GuaranteedRspec {
            rate: 100.0,
            slack: 0,
        },
    };
    let wrong = p.admit_at(&guaranteed, NOON).unwrap_err();
    assert_eq!(wrong.error.code, ErrorCode::POLICY_CONTROL_FAILURE);
    assert!(wrong.reason.contains("controlled-load"));
}

#[test]
fn unmatched_deny_and_bad_flowspecs() {
    let mut p = policy("[host]\nunmatched = \"deny\"\n");
    let denied = p.admit_at(&request(1, 1, 1.0), NOON).unwrap_err();
    assert_eq!(denied.error.code, ErrorCode::POLICY_CONTROL_FAILURE);
    let mut p = Policy::default();
    for bad in [f32::NAN, -1.0, f32::INFINITY] {
        let denied = p.admit_at(&request(1, 1, bad), NOON).unwrap_err();
        assert_eq!(denied.error, RsvpError::BAD_FLOWSPEC, "{bad}");
    }
    assert_eq!(p.admitted_count(), 0);
}

#[test]
fn reload_keeps_what_fits_and_returns_the_rest() {
    let mut p = policy(
        r#"
        [[rule]]
        name = "r"
        service = "controlled-load"
        total_rate = 3000
        "#,
    );
    for id in 1..=3 {
        p.admit_at(&request(id, id as u16, 1000.0), NOON).unwrap();
    }
    let smaller = policy(
        r#"
        [[rule]]
        name = "r"
        service = "controlled-load"
        total_rate = 2000
        "#,
    );
    // Oldest first: rules 1 and 2 stay, 3 is dropped.
    assert_eq!(p.reload_at(smaller, NOON), vec![RuleId(3)]);
    assert_eq!(p.admitted_count(), 2);
    assert!(p.admit_at(&request(4, 4, 1.0), NOON).is_err());
    p.release(RuleId(1));
    p.admit_at(&request(4, 4, 1000.0), NOON).unwrap();
}

#[test]
fn schedule_end_is_noticed_by_revalidation() {
    let mut p = policy(
        r#"
        [host]
        unmatched = "deny"
        [[rule]]
        name = "office"
        service = "controlled-load"
        schedule = { time = "08:00-18:00" }
        "#,
    );
    p.admit_at(&request(1, 1, 10.0), NOON).unwrap();
    assert!(p.revalidate_at(NOON).is_empty());
    assert_eq!(
        p.revalidate_at(PolicyTime::new(Weekday::Wed, 19, 0)),
        vec![RuleId(1)]
    );
    assert_eq!(p.admitted_count(), 0);
}

#[test]
fn admission_trait_uses_the_policy_clock() {
    fn monday_3am() -> std::time::SystemTime {
        // 2024-01-01T03:00:00Z, a Monday.
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_704_067_200 + 3 * 3600)
    }
    let mut p = policy(
        r#"
        [host]
        unmatched = "deny"
        [[rule]]
        name = "night"
        service = "controlled-load"
        schedule = { days = ["mon"], time = "02:00-04:00" }
        "#,
    )
    .with_clock(monday_3am);
    assert_eq!(p.now(), PolicyTime::new(Weekday::Mon, 3, 0));
    let grant = Admission::admit(&mut p, &request(1, 1, 1.0)).unwrap();
    assert_eq!(grant.policy.as_deref(), Some("night"));
}

// ---------------------------------------------------------------------------------------------
// Per-interface budgets without a declared interface.
// ---------------------------------------------------------------------------------------------

const ETH0: &str = "192.0.2.1";
const ETH1: &str = "198.51.100.1";
const REMOTE: &str = "203.0.113.9";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// eth0 at 1000 Mbit/s, eth1 at 100 Mbit/s, a no-speed tunnel, and loopback.
fn host() -> StaticProbe {
    StaticProbe::new()
        .interface("eth0", Some(1000), &[ip(ETH0)])
        .interface("eth1", Some(100), &[ip(ETH1)])
        .interface("tun0", None, &[ip("10.8.0.1")])
        .loopback("lo", &[ip("127.0.0.1"), ip("::1")])
}

/// A reservation of `rate` B/s for data from `sender` to `receiver`.
fn flow_request(id: u64, sender: &str, receiver: &str, rate: f32) -> AdmissionRequest {
    let mut r = request(id, 1, rate);
    r.flow.sender = std::net::SocketAddr::new(ip(sender), 1000 + (id % 60_000) as u16);
    r.flow.receiver = std::net::SocketAddr::new(ip(receiver), 80);
    r
}

/// No per-reservation cap in the way of filling a link with a few requests.
fn uncapped(probe: impl InterfaceProbe + 'static) -> Policy {
    Policy::from_toml_str("[host]\nmax_flow_rate = \"1000Gbit\"\n", "uncapped.toml")
        .unwrap()
        .with_interface_probe(probe)
}

fn budget(p: &mut Policy, name: &str) -> InterfaceBudget {
    let budgets = p.interface_budgets();
    budgets
        .iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("no budget for {name} in {budgets:?}"))
        .clone()
}

#[test]
fn an_undeclared_interface_reserves_75_percent_of_its_link_speed() {
    assert_eq!(DEFAULT_RESERVABLE_SHARE, 0.75);
    let mut p = uncapped(host());
    // 1000 Mbit/s = 125,000,000 B/s; 75 % of it is reservable, exactly (and no more than
    // the f32 rounding slack of 2^-23, 11 B/s here).
    p.admit_at(&flow_request(1, ETH0, REMOTE, 93_750_000.0), NOON)
        .unwrap();
    let denied = p
        .admit_at(&flow_request(2, ETH0, REMOTE, 100.0), NOON)
        .unwrap_err();
    assert_eq!(denied.error, RsvpError::BANDWIDTH_UNAVAILABLE);
    assert!(
        denied.reason.contains(
            "interface eth0 (75 % of the 1000 Mbit/s link speed its driver reports): \
             100 B/s asked, 93,750,000 of 93,750,000 B/s already booked"
        ),
        "{}",
        denied.reason
    );
    let eth0 = budget(&mut p, "eth0");
    assert_eq!(eth0.capacity, Some(125_000_000.0));
    assert_eq!(eth0.reservable, Some(93_750_000.0));
    assert_eq!((eth0.reserved, eth0.flows), (93_750_000.0, 1));
    assert_eq!(
        eth0.source,
        BudgetSource::LinkSpeed {
            mbit_per_s: 1000,
            share: 0.75
        }
    );
    assert!(
        eth0.to_string().contains("93750000 B/s reservable"),
        "{eth0}"
    );
}

#[test]
fn each_interface_has_its_own_budget() {
    let mut p = uncapped(host());
    // eth1: 100 Mbit/s → 9,375,000 B/s, filled exactly.
    for id in 0..3 {
        p.admit_at(&flow_request(id, ETH1, REMOTE, 3_125_000.0), NOON)
            .unwrap();
    }
    let full = p
        .admit_at(&flow_request(3, ETH1, REMOTE, 100.0), NOON)
        .unwrap_err();
    assert!(full.reason.contains("interface eth1"), "{}", full.reason);
    // eth0 is untouched by eth1's bookings, and its bookings leave eth1 full, not fuller.
    p.admit_at(&flow_request(10, ETH0, REMOTE, 90_000_000.0), NOON)
        .unwrap();
    let eth1 = budget(&mut p, "eth1");
    assert_eq!((eth1.reserved, eth1.flows), (9_375_000.0, 3));
    let eth0 = budget(&mut p, "eth0");
    assert_eq!((eth0.reserved, eth0.flows), (90_000_000.0, 1));
    // Releasing on eth1 makes room on eth1 only.
    p.release(RuleId(0));
    p.admit_at(&flow_request(3, ETH1, REMOTE, 3_125_000.0), NOON)
        .unwrap();
    assert!(p
        .admit_at(&flow_request(11, ETH0, REMOTE, 3_750_100.0), NOON)
        .is_err());
}

#[test]
fn loopback_and_links_without_speed_are_unlimited() {
    let mut p = uncapped(host());
    for id in 0..50 {
        p.admit_at(&flow_request(id, "127.0.0.1", "127.0.0.1", 1e9), NOON)
            .unwrap();
        p.admit_at(&flow_request(100 + id, "10.8.0.1", REMOTE, 1e9), NOON)
            .unwrap();
    }
    let lo = budget(&mut p, "lo");
    assert_eq!(
        lo.source,
        BudgetSource::Unlimited(UnlimitedReason::Loopback)
    );
    assert_eq!((lo.capacity, lo.reservable, lo.flows), (None, None, 50));
    let tun = budget(&mut p, "tun0");
    assert_eq!(
        tun.source,
        BudgetSource::Unlimited(UnlimitedReason::NoSpeedReported)
    );
    assert_eq!((tun.capacity, tun.reservable, tun.flows), (None, None, 50));
    // IPv6 loopback is the same device.
    p.admit_at(&flow_request(200, "::1", "::1", 1e9), NOON)
        .unwrap();
    assert_eq!(budget(&mut p, "lo").flows, 51);
}

#[test]
fn a_flow_to_a_local_address_goes_through_loopback() {
    let mut p = uncapped(host());
    // eth1 holds 9,375,000 B/s; a flow from eth1's address to eth0's stays in the host.
    p.admit_at(&flow_request(1, ETH1, ETH0, 50_000_000.0), NOON)
        .unwrap();
    assert_eq!(budget(&mut p, "lo").flows, 1);
    assert_eq!(budget(&mut p, "eth1").flows, 0);
    p.admit_at(&flow_request(2, ETH1, REMOTE, 9_375_000.0), NOON)
        .unwrap();
}

#[test]
fn a_receiver_side_flow_is_charged_to_the_receivers_interface() {
    let mut p = uncapped(host());
    // The sender is remote: the data arrives over the interface holding the receiver.
    p.admit_at(&flow_request(1, REMOTE, ETH1, 9_000_000.0), NOON)
        .unwrap();
    let denied = p
        .admit_at(&flow_request(2, ETH1, REMOTE, 500_000.0), NOON)
        .unwrap_err();
    assert!(
        denied.reason.contains("interface eth1"),
        "{}",
        denied.reason
    );
    assert_eq!(budget(&mut p, "eth1").flows, 1);
    // Neither end local (an in-memory network): charged to no interface.
    p.admit_at(&flow_request(3, "10.99.0.1", REMOTE, 1e9), NOON)
        .unwrap();
    let booked: usize = p.interface_budgets().iter().map(|b| b.flows).sum();
    assert_eq!(booked, 1);
    assert_eq!(p.admitted_count(), 2);
}

#[test]
fn a_declared_interface_overrides_discovery() {
    let mut p = Policy::from_toml_str(
        r#"
        [[interface]]
        name = "eth0"
        capacity = "20Mbit"
        addresses = ["10.77.0.0/16"]
        "#,
        "decl.toml",
    )
    .unwrap()
    .with_interface_probe(host());
    // 192.0.2.1 is not among the declared addresses, but the kernel puts it on eth0: the
    // declared 2,500,000 B/s is the budget, all of it reservable (no 75 %).
    p.admit_at(&flow_request(1, ETH0, REMOTE, 2_500_000.0), NOON)
        .unwrap();
    let denied = p
        .admit_at(&flow_request(2, ETH0, REMOTE, 100.0), NOON)
        .unwrap_err();
    assert!(
        denied
            .reason
            .contains("interface eth0 (capacity declared in decl.toml)"),
        "{}",
        denied.reason
    );
    let eth0 = budget(&mut p, "eth0");
    assert_eq!(
        eth0.source,
        BudgetSource::Declared {
            origin: "decl.toml".into()
        }
    );
    assert_eq!(
        (eth0.capacity, eth0.reservable, eth0.flows),
        (Some(2_500_000.0), Some(2_500_000.0), 1)
    );
    // Listed once: declared first, the discovered twin is not repeated.
    assert_eq!(
        p.interface_budgets()
            .iter()
            .filter(|b| b.name == "eth0")
            .count(),
        1
    );
    // Other interfaces keep their discovered budget.
    p.admit_at(&flow_request(3, ETH1, REMOTE, 9_375_000.0), NOON)
        .unwrap();
}

#[test]
fn max_flow_rate_caps_every_reservation_and_max_flows_counts_them() {
    let mut p = Policy::default().with_interface_probe(host());
    assert_eq!(p.host().max_flow_rate, Some(DEFAULT_MAX_FLOW_RATE));
    p.admit_at(
        &flow_request(1, "127.0.0.1", "127.0.0.1", 12_500_000.0),
        NOON,
    )
    .unwrap();
    let denied = p
        .admit_at(
            &flow_request(2, "127.0.0.1", "127.0.0.1", 12_600_000.0),
            NOON,
        )
        .unwrap_err();
    assert_eq!(
        denied.error,
        RsvpError::new(ErrorCode::POLICY_CONTROL_FAILURE, 0)
    );
    assert!(denied.reason.contains("max_flow_rate"), "{}", denied.reason);
    // Even a rule that allows more is capped by the host.
    let mut p = policy(
        r#"
        [[rule]]
        name = "big"
        service = "controlled-load"
        rate = "1Gbit"
        "#,
    );
    assert_eq!(
        p.admit_at(&request(1, 1, 20_000_000.0), NOON)
            .unwrap_err()
            .error,
        RsvpError::new(ErrorCode::POLICY_CONTROL_FAILURE, 0)
    );
    // The default count: 1024 reservations on loopback, not one more.
    let mut p = Policy::default().with_interface_probe(host());
    let count = u64::from(DEFAULT_HOST_MAX_FLOWS);
    for id in 0..count {
        p.admit_at(&flow_request(id, "127.0.0.1", "127.0.0.1", 125_000.0), NOON)
            .unwrap();
    }
    let denied = p
        .admit_at(&flow_request(count, "127.0.0.1", "127.0.0.1", 1.0), NOON)
        .unwrap_err();
    assert_eq!(denied.error, RsvpError::BANDWIDTH_UNAVAILABLE);
    assert!(denied.reason.contains("max_flows"), "{}", denied.reason);
}

/// A `StaticProbe` that counts how often it is asked.
#[derive(Debug, Clone, Default)]
struct Counting {
    inner: StaticProbe,
    listed: Arc<AtomicUsize>,
    speeds: Arc<AtomicUsize>,
}

impl Counting {
    fn new(inner: StaticProbe) -> Self {
        Counting {
            inner,
            ..Counting::default()
        }
    }

    fn calls(&self) -> (usize, usize) {
        (
            self.listed.load(Ordering::SeqCst),
            self.speeds.load(Ordering::SeqCst),
        )
    }
}

impl InterfaceProbe for Counting {
    fn addresses(&self) -> std::io::Result<Vec<InterfaceAddress>> {
        self.listed.fetch_add(1, Ordering::SeqCst);
        self.inner.addresses()
    }

    fn link_speed(&self, interface: &str) -> std::io::Result<Option<u64>> {
        self.speeds.fetch_add(1, Ordering::SeqCst);
        self.inner.link_speed(interface)
    }
}

#[test]
fn discovery_is_cached_and_loopback_never_asks() {
    let probe = Counting::new(host());
    let mut p = uncapped(probe.clone());
    for id in 0..100 {
        p.admit_at(&flow_request(id, "127.0.0.1", "127.0.0.1", 1000.0), NOON)
            .unwrap();
    }
    assert_eq!(probe.calls(), (0, 0), "loopback flows asked the kernel");
    // A known address: one listing and one speed read, then nothing however many flows.
    for id in 100..300 {
        let remote = format!("203.0.113.{}", id % 200);
        p.admit_at(&flow_request(id, ETH0, &remote, 1000.0), NOON)
            .unwrap();
        p.release(RuleId(id));
    }
    assert_eq!(probe.calls(), (1, 1));
    // Neither end local (an in-memory network): one new listing for each address (it might
    // have been added since), once.
    for id in 300..310 {
        p.admit_at(&flow_request(id, "10.99.0.1", REMOTE, 1000.0), NOON)
            .unwrap();
    }
    assert_eq!(probe.calls(), (3, 1));
}

#[test]
fn reload_discovers_again_and_keeps_what_fits() {
    let probe = Counting::new(host());
    let mut p = uncapped(probe.clone());
    for id in 1..=3 {
        p.admit_at(&flow_request(id, ETH1, REMOTE, 3_000_000.0), NOON)
            .unwrap();
    }
    // eth1 renegotiated to 10 Mbit/s: 937,500 B/s reservable; the new policy learns it.
    let slower = Counting::new(
        StaticProbe::new()
            .interface("eth1", Some(10), &[ip(ETH1)])
            .interface("eth0", Some(1000), &[ip(ETH0)]),
    );
    let new = uncapped(slower.clone());
    assert_eq!(
        p.reload_at(new, NOON),
        vec![RuleId(1), RuleId(2), RuleId(3)]
    );
    assert_eq!(slower.calls(), (1, 1));
    assert_eq!(p.admitted_count(), 0);
    p.admit_at(&flow_request(4, ETH1, REMOTE, 937_500.0), NOON)
        .unwrap();
    assert!(p
        .admit_at(&flow_request(5, ETH1, REMOTE, 100.0), NOON)
        .is_err());
    p.admit_at(&flow_request(6, ETH0, REMOTE, 90_000_000.0), NOON)
        .unwrap();
    // A reload to the same links keeps everything; schedule revalidation asks nothing.
    let same = uncapped(slower.clone());
    assert!(p.reload_at(same, NOON).is_empty());
    let calls = slower.calls();
    assert!(p.revalidate_at(NOON).is_empty());
    assert_eq!(slower.calls(), calls);
    assert_eq!(budget(&mut p, "eth1").reserved, 937_500.0);
    assert_eq!(
        probe.calls(),
        (1, 1),
        "the replaced probe is not asked again"
    );
}
