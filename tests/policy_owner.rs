//! Rules that match on the local owner (`user`, `program`): loading against this host's user
//! database, lookup and admission with and without a known owner.

use qtoq::flow::{AdmissionRequest, Flow, Owner, RuleId};
use qtoq::policy::{Policy, PolicyError, PolicyTime, StaticProbe, Weekday};
use qtoq::wire::intserv::{FlowSpec, TokenBucket};

const NOON: PolicyTime = PolicyTime {
    weekday: Weekday::Wed,
    minute_of_day: 12 * 60,
};

fn flow(sender_port: u16) -> Flow {
    Flow {
        sender: format!("10.0.0.1:{sender_port}").parse().unwrap(),
        receiver: "10.0.0.2:40000".parse().unwrap(),
        protocol: 6,
    }
}

fn request(id: u64, sender_port: u16, rate: f32, owner: Option<Owner>) -> AdmissionRequest {
    let mut request = AdmissionRequest::new(
        RuleId(id),
        flow(sender_port),
        FlowSpec::ControlledLoad(TokenBucket::new(rate, 10_000.0)),
    );
    request.owner = owner;
    request
}

fn policy(text: &str) -> Policy {
    Policy::from_toml_str(text, "owner.toml")
        .unwrap()
        .with_interface_probe(StaticProbe::new())
}

const OWNER_RULES: &str = r#"
    [[rule]]
    name = "backup"
    priority = 10
    service = "controlled-load"
    rate = "1Mbit"
    max_flows = 1
    match = { program = "backupd" }

    [[rule]]
    name = "alice"
    priority = 5
    service = "controlled-load"
    rate = "2Mbit"
    match = { user = 1000, local_port = "5000-5999" }

    [[rule]]
    name = "anyone"
    service = "controlled-load"
    rate = "4Mbit"
"#;

fn backupd() -> Owner {
    Owner::new(Some(1000), Some("backupd".into())).with_pid(77)
}

#[test]
fn user_root_is_uid_zero_and_numbers_are_uids() {
    // Every Linux host's /etc/passwd names root.
    let p = policy(
        r#"
        [[rule]]
        name = "root"
        service = "controlled-load"
        match = { user = "root" }
        [[rule]]
        name = "uid"
        service = "controlled-load"
        match = { user = 1000, program = "nginx" }
        "#,
    );
    let rule = |name: &str| p.rules().iter().find(|r| r.name == name).unwrap().clone();
    assert_eq!(rule("root").matches.user, Some(0));
    assert_eq!(rule("uid").matches.user, Some(1000));
    assert_eq!(rule("uid").matches.program.as_deref(), Some("nginx"));
}

#[test]
fn an_unknown_user_is_a_load_error_at_its_value() {
    let text = "[[rule]]\nname = \"r\"\nservice = \"controlled-load\"\n\
                match = { user = \"no-such-user-qtoq\" }\n";
    match Policy::from_toml_str(text, "owner.toml") {
        Err(PolicyError::Invalid {
            file,
            line,
            column,
            message,
        }) => {
            assert_eq!((file.as_str(), line, column), ("owner.toml", 4, 18));
            assert!(
                message.contains("unknown user `no-such-user-qtoq`"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_program_name_longer_than_comm_is_a_load_error() {
    let text = "[[rule]]\nname = \"r\"\nservice = \"controlled-load\"\n\
                match = { program = \"a-very-long-daemon-name\" }\n";
    let err = Policy::from_toml_str(text, "owner.toml").unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("owner.toml:4:21: "), "{message}");
    assert!(message.contains("first 15 bytes"), "{message}");
}

#[test]
fn owner_rules_match_only_a_known_equal_owner() {
    let p = policy(OWNER_RULES);
    let name =
        |port: u16, owner: Option<&Owner>| p.lookup(&flow(port), owner, NOON).unwrap().name.clone();
    // No owner known (an embedded peer's flow, a request from the engine alone).
    assert_eq!(name(5000, None), "anyone");
    // An owner, but neither the program nor the uid is known.
    assert_eq!(name(5000, Some(&Owner::default())), "anyone");
    assert_eq!(name(5000, Some(&backupd())), "backup");
    let alice = Owner::new(Some(1000), Some("rsync".into()));
    assert_eq!(name(5000, Some(&alice)), "alice");
    // Every key must match: alice's rule is for ports 5000-5999.
    assert_eq!(name(7000, Some(&alice)), "anyone");
    let bob = Owner::new(Some(1001), Some("backupd2".into()));
    assert_eq!(name(5000, Some(&bob)), "anyone");
    // Case and length matter: comm is compared exactly.
    let upper = Owner::new(None, Some("Backupd".into()));
    assert_eq!(name(5000, Some(&upper)), "anyone");
}

#[test]
fn admission_applies_the_owners_rule() {
    let mut p = policy(OWNER_RULES);
    // backupd's rule allows 1 Mbit/s (125 000 B/s) and one flow.
    let grant = p
        .admit_at(&request(1, 5000, 125_000.0, Some(backupd())), NOON)
        .unwrap();
    assert_eq!(grant.policy.as_deref(), Some("backup"));
    let denied = p
        .admit_at(&request(2, 5001, 100_000.0, Some(backupd())), NOON)
        .unwrap_err();
    assert!(denied.reason.contains("max_flows = 1"), "{denied}");
    let denied = p
        .admit_at(&request(3, 5002, 200_000.0, Some(backupd())), NOON)
        .unwrap_err();
    assert!(denied.reason.contains("`backup`"), "{denied}");
    // The same flows without an owner fall to `anyone` (4 Mbit/s, no flow limit).
    for id in [2, 3] {
        let grant = p
            .admit_at(&request(id, 5000 + id as u16, 200_000.0, None), NOON)
            .unwrap();
        assert_eq!(grant.policy.as_deref(), Some("anyone"));
    }
}

#[test]
fn a_reload_re_admits_with_the_owner_admitted() {
    let mut p = policy(OWNER_RULES);
    p.admit_at(&request(1, 5000, 125_000.0, Some(backupd())), NOON)
        .unwrap();
    p.admit_at(&request(2, 5001, 125_000.0, None), NOON)
        .unwrap();
    // The new policy gives backupd less than it holds: only its reservation goes.
    let smaller = OWNER_RULES.replacen("rate = \"1Mbit\"", "rate = \"512kbit\"", 1);
    let dropped = p.reload_at(policy(&smaller), NOON);
    assert_eq!(dropped, vec![RuleId(1)]);
}
