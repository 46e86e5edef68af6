//! Admission arithmetic: rule limits, pools, interfaces, host limits, release, modification
//! without a killer reservation, reload.

use qtoq::flow::{Admission, AdmissionRequest, Flow, RuleId};
use qtoq::policy::{Policy, PolicyTime, Weekday};
use qtoq::wire::intserv::{FlowSpec, GuaranteedRspec, TokenBucket};

const NOON: PolicyTime = PolicyTime {
    weekday: Weekday::Wed,
    minute_of_day: 12 * 60,
};

fn request(id: u64, sender_port: u16, rate: f32) -> AdmissionRequest {
    AdmissionRequest {
        rule: RuleId(id),
        flow: Flow {
            sender: format!("10.0.0.1:{sender_port}").parse().unwrap(),
            receiver: "10.0.0.2:40000".parse().unwrap(),
            protocol: 6,
        },
        flowspec: FlowSpec::ControlledLoad(TokenBucket::new(rate, 10_000.0)),
        sender_tspec: None,
        signaled: true,
    }
}

fn policy(text: &str) -> Policy {
    Policy::from_toml_str(text, "t").unwrap()
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
    assert_eq!((denied.code, denied.value), (2, 0));
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
    assert_eq!((denied.code, denied.value), (1, 2));
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
    assert_eq!(third.code, 2, "{}", third.reason);
    assert!(third.reason.contains("max_flows"));
    // Modifying an existing one to exceed total_rate: bandwidth unavailable.
    let bigger = p.admit_at(&request(2, 2, 700.0), NOON).unwrap_err();
    assert_eq!((bigger.code, bigger.value), (1, 2));
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
    assert_eq!((denied.code, denied.value), (1, 2));
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

#[test]
fn default_policy_has_a_host_wide_limit() {
    let mut p = Policy::default();
    p.admit_at(&request(1, 1, 12_000_000.0), NOON).unwrap();
    let denied = p.admit_at(&request(2, 2, 600_000.0), NOON).unwrap_err();
    assert_eq!((denied.code, denied.value), (1, 2));
    assert!(denied.reason.contains("host max_rate"));
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
    assert_eq!(signaled.code, 2);
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
    assert_eq!(wrong.code, 2);
    assert!(wrong.reason.contains("controlled-load"));
}

#[test]
fn unmatched_deny_and_bad_flowspecs() {
    let mut p = policy("[host]\nunmatched = \"deny\"\n");
    let denied = p.admit_at(&request(1, 1, 1.0), NOON).unwrap_err();
    assert_eq!(denied.code, 2);
    let mut p = Policy::default();
    for bad in [f32::NAN, -1.0, f32::INFINITY] {
        let denied = p.admit_at(&request(1, 1, bad), NOON).unwrap_err();
        assert_eq!((denied.code, denied.value), (21, 3), "{bad}");
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
