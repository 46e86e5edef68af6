//! Policy files: parsing, validation, error positions, matching.

use qtoq::flow::Flow;
use qtoq::policy::{Policy, PolicyError, PolicyTime, Service, Weekday};

fn flow(sender: &str, receiver: &str) -> Flow {
    Flow {
        sender: sender.parse().unwrap(),
        receiver: receiver.parse().unwrap(),
        protocol: 6,
    }
}

const MONDAY_NOON: PolicyTime = PolicyTime {
    weekday: Weekday::Mon,
    minute_of_day: 12 * 60,
};

/// The (line, column, message) of a rejected file.
fn error_at(text: &str) -> (usize, usize, String) {
    match Policy::from_toml_str(text, "test.toml") {
        Err(PolicyError::Invalid {
            file,
            line,
            column,
            message,
        }) => {
            assert_eq!(file, "test.toml");
            (line, column, message)
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("file was accepted:\n{text}"),
    }
}

#[test]
fn the_example_policy_file_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/policy.toml");
    let policy = Policy::load(path).unwrap();
    assert!(policy.rules().len() >= 3);
    assert_eq!(policy.interfaces()[0].name, "veth-qtoq");
    assert_eq!(policy.interfaces()[0].capacity, 2_500_000.0);
    assert!(policy.rules().iter().any(|r| !r.signaling));
}

#[test]
fn a_full_rule_is_read_with_units() {
    let policy = Policy::from_toml_str(
        r#"
        [host]
        max_rate = "1Gbit"
        max_flow_rate = "200Mbit"
        max_flows = 10
        unmatched = "deny"
        utc_offset = "+01:00"

        [[pool]]
        name = "video"
        total_rate = "50Mbit"

        [[interface]]
        name = "eth0"
        capacity = "100Mbit"
        addresses = ["10.0.0.0/24"]

        [[rule]]
        name = "video"
        priority = 5
        service = "guaranteed"
        dscp = "AF41"
        rate = "8Mbit"
        bucket = "64KiB"
        peak = "1.5MB/s"
        min_policed = 64
        max_packet = "1500B"
        max_flows = 4
        total_rate = "20Mbit"
        pool = "video"
        match = { local_addr = "10.0.0.1", local_port = "5000-5010", remote_addr = "10.1.0.0/16", protocol = "tcp" }
        schedule = { days = ["mon-fri"], time = "08:00-18:00" }
        "#,
        "test.toml",
    )
    .unwrap();
    let rule = &policy.rules()[0];
    assert_eq!(rule.name, "video");
    assert_eq!(rule.service, Service::Guaranteed);
    assert!(rule.signaling);
    assert_eq!(rule.dscp, Some(34));
    assert_eq!(rule.limits.rate, Some(1_000_000.0));
    assert_eq!(rule.limits.bucket, Some(65_536.0));
    assert_eq!(rule.limits.peak, Some(1_500_000.0));
    assert_eq!(rule.limits.max_packet, Some(1500));
    assert_eq!(rule.total_rate, Some(2_500_000.0));
    assert_eq!(policy.host().max_rate, Some(125_000_000.0));
    assert_eq!(policy.host().max_flow_rate, Some(25_000_000.0));
    assert_eq!(policy.host().utc_offset_minutes, 60);
    assert_eq!(policy.pools()[0].total_rate, 6_250_000.0);
    assert_eq!(policy.interfaces()[0].capacity, 12_500_000.0);
}

#[test]
fn errors_name_file_line_and_column() {
    // Bad unit: points at the value.
    let (line, column, message) =
        error_at("[[rule]]\nname = \"a\"\nservice = \"controlled-load\"\nrate = \"10kbps\"\n");
    assert_eq!((line, column), (4, 8));
    assert!(message.contains("ambiguous"), "{message}");

    // Unknown key: reported by the TOML layer with a position.
    let (line, _, message) =
        error_at("[[rule]]\nname = \"a\"\nservice = \"guaranteed\"\nrat = 5\n");
    assert_eq!(line, 4);
    assert!(message.contains("rat"), "{message}");

    // TOML syntax error.
    let (line, _, _) = error_at("[host]\nmax_rate = \n");
    assert_eq!(line, 2);

    // Bad CIDR inside an inline table.
    let (line, column, message) = error_at(
        "[[rule]]\nname = \"a\"\nservice = \"guaranteed\"\nmatch = { remote_addr = \"10.0.0.0/40\" }\n",
    );
    assert_eq!((line, column), (4, 25));
    assert!(message.contains("prefix length"), "{message}");

    // Bad DSCP, bad service, bad day, unknown pool, duplicate names.
    let (line, _, m) = error_at(
        "[[rule]]\nname = \"a\"\nservice = \"diffserv\"\nsignaling = false\ndscp = \"AF51\"\n",
    );
    assert_eq!(line, 5);
    assert!(m.contains("DSCP"), "{m}");
    let (line, _, m) = error_at("[[rule]]\nname = \"a\"\nservice = \"best\"\n");
    assert_eq!(line, 3);
    assert!(m.contains("unknown service"), "{m}");
    let (line, _, m) = error_at("[[rule]]\nname = \"a\"\nservice = \"guaranteed\"\nschedule = { days = [\"mon\", \"someday\"] }\n");
    assert_eq!(line, 4);
    assert!(m.contains("someday"), "{m}");
    let (line, _, m) =
        error_at("[[rule]]\nname = \"a\"\nservice = \"guaranteed\"\npool = \"nope\"\n");
    assert_eq!(line, 4);
    assert!(m.contains("unknown pool"), "{m}");
    let (line, _, m) = error_at(
        "[[rule]]\nname = \"a\"\nservice = \"guaranteed\"\n[[rule]]\nname = \"a\"\nservice = \"guaranteed\"\n",
    );
    assert_eq!(line, 5);
    assert!(m.contains("duplicate"), "{m}");

    // A no-signaling rule without a rate cannot install anything.
    let (_, _, m) =
        error_at("[[rule]]\nname = \"a\"\nservice = \"controlled-load\"\nsignaling = false\n");
    assert!(m.contains("needs a rate"), "{m}");

    // A per-reservation cap of zero or without a unit bits/bytes can tell apart is refused.
    let (line, column, m) = error_at("[host]\nmax_flow_rate = 0\n");
    assert_eq!((line, column), (2, 17));
    assert!(m.contains("max_flow_rate"), "{m}");
    let (line, _, m) = error_at("[host]\nmax_flow_rate = \"10Mbps\"\n");
    assert_eq!(line, 2);
    assert!(m.contains("ambiguous"), "{m}");

    // The Display form is file:line:column: message.
    let err = Policy::from_toml_str("[host]\nmax_flows = -1\n", "p.toml").unwrap_err();
    assert!(err.to_string().starts_with("p.toml:2:13: "), "{err}");
}

#[test]
fn oversized_file_is_refused_unread() {
    let path = std::env::temp_dir().join(format!("qtoq-policy-big-{}.toml", std::process::id()));
    let line = "# padding padding padding padding padding padding padding padding\n";
    std::fs::write(&path, line.repeat(20_000)).unwrap();
    let result = Policy::load(&path);
    std::fs::remove_file(&path).unwrap();
    let err = result.unwrap_err();
    assert!(matches!(err, PolicyError::TooLarge { .. }), "{err}");
}

#[test]
fn missing_file_is_an_io_error() {
    let err = Policy::load("/nonexistent/qtoq-policy.toml").unwrap_err();
    assert!(matches!(err, PolicyError::Io { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/qtoq-policy.toml"));
}

#[test]
fn priority_then_file_order_decides_between_matching_rules() {
    let policy = Policy::from_toml_str(
        r#"
        [[rule]]
        name = "broad"
        service = "controlled-load"
        match = { remote_addr = "10.0.0.0/8" }

        [[rule]]
        name = "narrow-but-low"
        service = "controlled-load"
        priority = -1
        match = { remote_addr = "10.1.2.0/24" }

        [[rule]]
        name = "ports"
        service = "controlled-load"
        priority = 10
        match = { local_port = "5000-5099" }

        [[rule]]
        name = "ports-later"
        service = "controlled-load"
        priority = 10
        match = { local_port = "5000" }
        "#,
        "t",
    )
    .unwrap();
    let name = |f: Flow| policy.lookup(&f, None, MONDAY_NOON).map(|r| r.name.clone());
    assert_eq!(
        name(flow("192.168.0.1:5000", "10.1.2.3:4000")).as_deref(),
        Some("ports")
    );
    assert_eq!(
        name(flow("192.168.0.1:6000", "10.1.2.3:4000")).as_deref(),
        Some("broad")
    );
    assert_eq!(name(flow("192.168.0.1:6000", "11.0.0.1:4000")), None);
    // The receiver as local end: the second orientation matches port 5050 locally.
    assert_eq!(
        name(flow("11.0.0.1:4000", "192.168.0.1:5050")).as_deref(),
        Some("ports")
    );
}

#[test]
fn protocol_and_remote_port_match() {
    let policy = Policy::from_toml_str(
        r#"
        [[rule]]
        name = "udp-only"
        service = "controlled-load"
        match = { protocol = "udp", remote_port = 9000 }
        "#,
        "t",
    )
    .unwrap();
    let mut f = flow("10.0.0.1:1000", "10.0.0.2:9000");
    assert!(policy.lookup(&f, None, MONDAY_NOON).is_none());
    f.protocol = 17;
    assert!(policy.lookup(&f, None, MONDAY_NOON).is_some());
    f.receiver = "10.0.0.2:9001".parse().unwrap();
    assert!(policy.lookup(&f, None, MONDAY_NOON).is_none());
}

#[test]
fn schedules_switch_rules_by_time() {
    let policy = Policy::from_toml_str(
        r#"
        [[rule]]
        name = "office"
        service = "controlled-load"
        priority = 1
        schedule = { days = ["mon-fri"], time = "08:00-18:00" }

        [[rule]]
        name = "always"
        service = "controlled-load"
        "#,
        "t",
    )
    .unwrap();
    let f = flow("10.0.0.1:1", "10.0.0.2:2");
    let at = |d, h| {
        policy
            .lookup(&f, None, PolicyTime::new(d, h, 0))
            .unwrap()
            .name
            .clone()
    };
    assert_eq!(at(Weekday::Tue, 9), "office");
    assert_eq!(at(Weekday::Tue, 19), "always");
    assert_eq!(at(Weekday::Sat, 9), "always");
}

#[test]
fn no_signaling_rule_provides_the_flowspec() {
    let policy = Policy::from_toml_str(
        r#"
        [[rule]]
        name = "bulk"
        service = "controlled-load"
        signaling = false
        rate = "8Mbit"
        dscp = "CS1"
        "#,
        "t",
    )
    .unwrap();
    let rule = policy
        .lookup(&flow("10.0.0.1:1", "10.0.0.2:2"), None, MONDAY_NOON)
        .unwrap();
    assert!(!rule.signaling);
    let spec = rule.flowspec().unwrap();
    assert_eq!(spec.reserved_rate(), 1_000_000.0);
    assert_eq!(spec.tspec().bucket, 100_000.0);
    assert_eq!(rule.dscp, Some(8));
}

#[test]
fn empty_file_is_the_default_policy() {
    let empty = Policy::from_toml_str("", "t").unwrap();
    let default = Policy::default();
    assert_eq!(empty.host(), default.host());
    // No host-wide rate total: each interface has its budget; a per-reservation cap instead.
    assert_eq!(default.host().max_rate, None);
    assert_eq!(
        default.host().max_flow_rate,
        Some(qtoq::policy::DEFAULT_MAX_FLOW_RATE)
    );
    assert_eq!(qtoq::policy::DEFAULT_MAX_FLOW_RATE, 12_500_000.0);
    assert_eq!(
        default.host().max_flows,
        Some(qtoq::policy::DEFAULT_HOST_MAX_FLOWS)
    );
    assert!(default.rules().is_empty());
    assert!(default.interfaces().is_empty());
}
