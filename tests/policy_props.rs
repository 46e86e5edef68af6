//! Robustness properties of policies: any text either loads or is refused with a
//! `file:line:column` error, unit parsing never panics and round-trips, and admission keeps
//! its books exactly under random admit / modify / release / reload sequences (checked
//! against an independent model of the limits: rules, pools, a declared and a discovered
//! interface, the host's totals and per-reservation cap). Plus one regression test per bug
//! fixed.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use qtoq::flow::{Admission, AdmissionRequest, Flow, RuleId};
use qtoq::policy::units::{parse_rate, parse_size, MAX_VALUE};
use qtoq::policy::{Cidr, Policy, PolicyError, PolicyTime, Schedule, StaticProbe, Weekday};
use qtoq::wire::intserv::{FlowSpec, TokenBucket};
use qtoq::wire::ErrorCode;

const NOON: PolicyTime = PolicyTime {
    weekday: Weekday::Wed,
    minute_of_day: 12 * 60,
};

/// A file using every section and most keys; the seed of the mutation test.
const FULL: &str = r#"
[host]
max_rate = "1Gbit"
max_flows = 100
unmatched = "admit"
utc_offset = "+01:00"

[[pool]]
name = "video"
total_rate = "40Mbit"

[[interface]]
name = "eth0"
capacity = "100Mbit"
addresses = ["10.0.0.0/8", "2001:db8::/32"]

[[rule]]
name = "video"
priority = 10
service = "controlled-load"
dscp = "AF41"
rate = "8Mbit"
bucket = "64KiB"
peak = "16Mbit"
min_policed = 64
max_packet = "1500B"
max_flows = 4
pool = "video"
match = { local_addr = "10.0.0.0/24", local_port = "5000-5010", remote_addr = "0.0.0.0/0", protocol = "tcp" }
schedule = { days = ["mon-fri"], time = "08:00-18:00" }

[[rule]]
name = "voice"
service = "guaranteed"
dscp = 46
rate = 12500
total_rate = "1MB/s"
match = { remote_port = 5060 }

[[rule]]
name = "bulk"
service = "diffserv"
signaling = false
dscp = "CS1"
"#;

/// Checks the contract of a refused text: an `Invalid` error whose position lies inside the
/// text and whose Display form starts with `origin:line:column: `.
fn check_refusal(text: &str, err: &PolicyError) -> Result<(), TestCaseError> {
    match err {
        PolicyError::Invalid {
            file,
            line,
            column,
            message,
        } => {
            prop_assert_eq!(file, "p.toml");
            prop_assert!(*line >= 1 && *column >= 1);
            let lines = text.split('\n').count();
            prop_assert!(*line <= lines, "line {} of {} lines", line, lines);
            let line_len = text
                .split('\n')
                .nth(line - 1)
                .map_or(0, |l| l.chars().count());
            prop_assert!(
                *column <= line_len + 1,
                "column {} past {}",
                column,
                line_len
            );
            prop_assert!(!message.is_empty());
            let shown = err.to_string();
            let prefix = format!("p.toml:{line}:{column}: ");
            prop_assert!(shown.starts_with(&prefix), "{}", shown);
        }
        other => prop_assert!(false, "not an Invalid error: {other:?}"),
    }
    Ok(())
}

/// Snippets that make mutations reach validation rather than stop at TOML syntax.
const SNIPPETS: &[&str] = &[
    "\"",
    "=",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\n",
    "#",
    "-",
    ".",
    "0",
    "-1",
    "1e400",
    "nan",
    "inf",
    "\"10kbps\"",
    "\"99999999999999999999999999999999999999999TB/s\"",
    "\"0\"",
    "\"-5Mbit\"",
    "\"10.0.0.0/33\"",
    "\"::/129\"",
    "\"70000\"",
    "\"6000-5000\"",
    "\"AF51\"",
    "\"25:00-26:00\"",
    "\"24:00-24:00\"",
    "\"sun-sat\"",
    "\"+-05:00\"",
    "\"é\"",
    "\"\\u0000\"",
    "[[rule]]\nname = \"x\"\nservice = \"guaranteed\"\n",
    "[[pool]]\nname = \"video\"\ntotal_rate = 1\n",
    "[[interface]]\nname = \"..\"\ncapacity = 1\n",
    "9223372036854775807",
    "-9223372036854775808",
    "4294967296",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, snippet: usize },
    InsertChar { at: usize, c: char },
    Duplicate { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 0..SNIPPETS.len())
            .prop_map(|(at, snippet)| Mutation::Insert { at, snippet }),
        (any::<usize>(), any::<char>()).prop_map(|(at, c)| Mutation::InsertChar { at, c }),
        (any::<usize>(), 1usize..200).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
    ]
}

/// Applies `m` at a char boundary of `text`.
fn mutate(text: &str, m: &Mutation) -> String {
    let boundary = |at: usize| {
        let mut at = at % (text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        at
    };
    let mut out = text.to_string();
    match *m {
        Mutation::Delete { at, len } => {
            let start = boundary(at);
            let end = boundary((start + len).min(text.len()));
            out.replace_range(start..end.max(start), "");
        }
        Mutation::Insert { at, snippet } => out.insert_str(boundary(at), SNIPPETS[snippet]),
        Mutation::InsertChar { at, c } => out.insert(boundary(at), c),
        Mutation::Duplicate { at, len } => {
            let start = boundary(at);
            let end = boundary((start + len).min(text.len())).max(start);
            let piece = text[start..end].to_string();
            out.insert_str(end, &piece);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_loads_or_is_refused_with_a_position(text in ".{0,300}") {
        if let Err(e) = Policy::from_toml_str(&text, "p.toml") {
            check_refusal(&text, &e)?;
        }
    }

    #[test]
    fn arbitrary_bytes_load_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = Policy::from_toml_str(&text, "p.toml") {
            check_refusal(&text, &e)?;
        }
    }

    #[test]
    fn mutated_valid_files_load_or_are_refused_with_a_position(
        mutations in proptest::collection::vec(mutation(), 1..6)
    ) {
        let mut text = FULL.to_string();
        for m in &mutations {
            text = mutate(&text, m);
        }
        match Policy::from_toml_str(&text, "p.toml") {
            Ok(policy) => {
                // Whatever loaded is usable: lookups and admissions neither panic nor
                // break the books.
                let mut policy = policy;
                let flow = Flow {
                    sender: "10.0.0.1:5001".parse().unwrap(),
                    receiver: "192.0.2.1:40000".parse().unwrap(),
                    protocol: 6,
                };
                let _ = policy.lookup(&flow, None, NOON);
                let req = AdmissionRequest::new(RuleId(1), flow, FlowSpec::ControlledLoad(TokenBucket::new(1000.0, 1500.0)));
                let admitted = policy.admit_at(&req, NOON).is_ok();
                prop_assert_eq!(policy.admitted_count(), usize::from(admitted));
                policy.release(RuleId(1));
                prop_assert_eq!(policy.admitted_count(), 0);
            }
            Err(e) => check_refusal(&text, &e)?,
        }
    }

    #[test]
    fn unit_parsing_never_panics_and_stays_in_range(text in ".{0,40}") {
        for result in [parse_rate(&text), parse_size(&text)] {
            match result {
                Ok(v) => prop_assert!(v.is_finite() && (0.0..=MAX_VALUE).contains(&v), "{v}"),
                Err(e) => prop_assert!(!e.message().is_empty()),
            }
        }
    }

    #[test]
    fn unit_parsing_of_unit_like_text_never_panics(
        number in "[0-9_.]{0,12}",
        space in "[ ]{0,2}",
        unit in "(|[kKmMgGtTxé]i?)(bit|bit/s|B|B/s|bps|Bps|b|/s)?",
    ) {
        let text = format!("{number}{space}{unit}");
        for v in [parse_rate(&text), parse_size(&text)].into_iter().flatten() {
            prop_assert!(v.is_finite() && (0.0..=MAX_VALUE).contains(&v), "{text}: {v}");
        }
    }

    #[test]
    fn rates_round_trip(value in 0u64..1_000_000_000, frac in 0u32..1000, unit in 0usize..10) {
        const UNITS: [(&str, f64); 10] = [
            ("", 1.0),
            ("bit", 0.125),
            ("kbit", 125.0),
            ("Mbit/s", 125_000.0),
            ("Gbit", 125_000_000.0),
            ("Kibit", 128.0),
            ("B/s", 1.0),
            ("kB/s", 1000.0),
            ("MiB/s", 1_048_576.0),
            ("GB/s", 1e9),
        ];
        let (name, factor) = UNITS[unit];
        let number = format!("{value}.{frac:03}");
        let expected = number.parse::<f64>().unwrap() * factor;
        let parsed = parse_rate(&format!("{number}{name}")).unwrap();
        prop_assert!((parsed - expected).abs() <= expected * 1e-12, "{parsed} vs {expected}");
        // A space between number and unit and an underscore in the number are the same.
        let spaced = parse_rate(&format!("{value}_.{frac:03} {name}")).unwrap();
        prop_assert_eq!(spaced, parsed);
    }

    #[test]
    fn sizes_round_trip(value in 0u64..10_000_000, unit in 0usize..6) {
        const UNITS: [(&str, f64); 6] = [
            ("", 1.0),
            ("B", 1.0),
            ("kB", 1000.0),
            ("KiB", 1024.0),
            ("MiB", 1_048_576.0),
            ("GB", 1e9),
        ];
        let (name, factor) = UNITS[unit];
        prop_assert_eq!(parse_size(&format!("{value}{name}")).unwrap(), value as f64 * factor);
    }

    #[test]
    fn units_refuse_negative_non_finite_and_overflowing_values(
        value in 1u64..u64::MAX,
        unit in prop::sample::select(vec!["", "B/s", "Mbit", "TB/s", "GiB/s"]),
    ) {
        let negative_rate = format!("-{value}{unit}");
        let negative_size = format!("-{value}");
        prop_assert!(parse_rate(&negative_rate).is_err());
        prop_assert!(parse_size(&negative_size).is_err());
        for bad in ["NaN", "nan", "inf", "infinity", "-inf", "+5", "1e5", "0x10"] {
            prop_assert!(parse_rate(bad).is_err(), "{}", bad);
            prop_assert!(parse_size(bad).is_err(), "{}", bad);
        }
        // Past what f32 (the wire format) holds: refused, never infinite.
        let huge = format!("{value}{}", "0".repeat(40));
        let huge_rate = format!("{huge}{unit}");
        prop_assert!(parse_rate(&huge_rate).is_err());
        prop_assert!(parse_size(&huge).is_err());
    }

    /// Regression (f32 precision): a rule's limits are f64 but RSVP carries f32, so a
    /// `signaling = false` rule's own flowspec could round just above its `rate` and be
    /// refused by that very rule, and `n` reservations of a rule's rate could overflow a
    /// pool of exactly `n` times it.
    #[test]
    fn a_no_signaling_rule_admits_its_own_flowspec(
        rate in 1u64..4_000_000_000,
        frac in 0u32..1000,
        flows in 1u32..5,
        guaranteed in any::<bool>(),
    ) {
        let rate_text = format!("{rate}.{frac:03}");
        let rate_value: f64 = rate_text.parse().unwrap();
        let service = if guaranteed { "guaranteed" } else { "controlled-load" };
        let text = format!(
            "[host]\nmax_rate = \"1000GB/s\"\nmax_flow_rate = \"1000GB/s\"\n\
             [[pool]]\nname = \"p\"\ntotal_rate = {pool}\n\
             [[rule]]\nname = \"fixed\"\nservice = \"{service}\"\nsignaling = false\n\
             rate = \"{rate_text}\"\nbucket = \"{rate_text}\"\npool = \"p\"\n",
            pool = rate_value * f64::from(flows),
        );
        let mut policy = Policy::from_toml_str(&text, "p.toml").unwrap();
        let flowspec = policy.rules()[0].flowspec().unwrap();
        for id in 0..u64::from(flows) {
            let req = {
 let mut r = AdmissionRequest::new(RuleId(id), Flow {
                    sender: format!("10.0.0.1:{}", 1000 + id).parse().unwrap(),
                    receiver: "10.0.0.2:80".parse().unwrap(),
                    protocol: 6,
                }, flowspec);
r.signaled = false;
 r
 };
            let admitted = policy.admit_at(&req, NOON);
            prop_assert!(admitted.is_ok(), "flow {id} of {flows} at {rate_text}: {admitted:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Admission invariants against a model.
// ---------------------------------------------------------------------------------------------

/// The limits of one version of the admission test policy, mirrored by the model.
#[derive(Debug, Clone, Copy)]
struct Limits {
    host_rate: f64,
    host_flows: usize,
    /// `[host] max_flow_rate`.
    flow_rate: f64,
    pool: f64,
    iface: f64,
    rule_a_rate: f64,
    rule_a_flows: usize,
    rule_c_total: f64,
}

const VERSIONS: [Limits; 3] = [
    Limits {
        host_rate: 4_000_000.0,
        host_flows: 6,
        flow_rate: 2_500_000.0,
        pool: 3_000_000.0,
        iface: 2_500_000.0,
        rule_a_rate: 2_000_000.0,
        rule_a_flows: 3,
        rule_c_total: 1_000_000.0,
    },
    // Shrunk: reload must drop what no longer fits.
    Limits {
        host_rate: 2_000_000.0,
        host_flows: 3,
        flow_rate: 1_000_000.0,
        pool: 1_000_000.0,
        iface: 1_000_000.0,
        rule_a_rate: 500_000.0,
        rule_a_flows: 1,
        rule_c_total: 300_000.0,
    },
    // Grown.
    Limits {
        host_rate: 10_000_000.0,
        host_flows: 9,
        flow_rate: 12_500_000.0,
        pool: 6_000_000.0,
        iface: 5_000_000.0,
        rule_a_rate: 4_000_000.0,
        rule_a_flows: 5,
        rule_c_total: 3_000_000.0,
    },
];

fn policy_text(l: &Limits) -> String {
    format!(
        r#"
[host]
max_rate = {host_rate}
max_flows = {host_flows}
max_flow_rate = {flow_rate}

[[pool]]
name = "p"
total_rate = {pool}

[[interface]]
name = "eth0"
capacity = {iface}
addresses = ["10.0.0.0/24"]

[[rule]]
name = "a"
service = "controlled-load"
rate = {rule_a_rate}
max_flows = {rule_a_flows}
pool = "p"
match = {{ local_port = "1000-1999" }}

[[rule]]
name = "b"
service = "controlled-load"
pool = "p"
match = {{ local_port = "2000-2999" }}

[[rule]]
name = "c"
service = "controlled-load"
total_rate = {rule_c_total}
match = {{ local_port = "3000-3999" }}

[[rule]]
name = "d"
service = "controlled-load"
signaling = false
rate = 1000
match = {{ local_port = "4000-4999" }}
"#,
        host_rate = l.host_rate,
        host_flows = l.host_flows,
        flow_rate = l.flow_rate,
        pool = l.pool,
        iface = l.iface,
        rule_a_rate = l.rule_a_rate,
        rule_a_flows = l.rule_a_flows,
        rule_c_total = l.rule_c_total,
    )
}

/// Reserved rates, including ones without a short binary fraction (0.1, 1/3), whose repeated
/// admission and release must leave no residue behind.
const RATES: [f32; 9] = [
    0.0,
    0.1,
    1.0 / 3.0,
    1000.0,
    12_500.5,
    333_333.33,
    999_999.9,
    1_000_000.0,
    2_500_000.0,
];

/// The rule a port class selects: a, b, c, d, or none (5000+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    A,
    B,
    C,
    D,
    Unmatched,
}

const CLASSES: [Class; 5] = [Class::A, Class::B, Class::C, Class::D, Class::Unmatched];

#[derive(Debug, Clone, Copy)]
struct Held {
    class: Class,
    on_iface: bool,
    rate: f64,
}

#[derive(Debug, Clone)]
enum Op {
    Admit {
        id: u64,
        class: usize,
        on_iface: bool,
        rate: usize,
    },
    Release {
        id: u64,
    },
    Reload {
        version: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..8, 0..CLASSES.len(), any::<bool>(), 0..RATES.len())
            .prop_map(|(id, class, on_iface, rate)| Op::Admit { id, class, on_iface, rate }),
        3 => (0u64..10).prop_map(|id| Op::Release { id }),
        1 => (0..VERSIONS.len()).prop_map(|version| Op::Reload { version }),
    ]
}

/// The reservable rate of eth1, the interface discovery finds for the senders not on the
/// declared eth0: 75 % of its 20 Mbit/s.
const ETH1_RESERVABLE: f64 = 1_875_000.0;

/// The model's host: 10.0.0.1 on eth0 (declared by the policy, whose capacity wins over the
/// speed reported here), 10.0.1.1 on eth1 at 20 Mbit/s.
fn probe() -> StaticProbe {
    StaticProbe::new()
        .interface("eth0", Some(1000), &["10.0.0.1".parse().unwrap()])
        .interface("eth1", Some(20), &["10.0.1.1".parse().unwrap()])
}

/// The model test's policy of one version, on the model's host.
fn model_policy(limits: &Limits) -> Policy {
    Policy::from_toml_str(&policy_text(limits), "p.toml")
        .unwrap()
        .with_interface_probe(probe())
}

/// A request of rule `class` from 10.0.0.1 (on the declared eth0) or else from 10.0.1.1 (on
/// the discovered eth1).
fn admission_request(id: u64, class: Class, on_iface: bool, rate: f32) -> AdmissionRequest {
    let port = match class {
        Class::A => 1000,
        Class::B => 2000,
        Class::C => 3000,
        Class::D => 4000,
        Class::Unmatched => 5000,
    } + id as u16;
    let host = if on_iface { "10.0.0.1" } else { "10.0.1.1" };
    AdmissionRequest::new(
        RuleId(id),
        Flow {
            sender: format!("{host}:{port}").parse().unwrap(),
            receiver: "192.0.2.9:40000".parse().unwrap(),
            protocol: 6,
        },
        FlowSpec::ControlledLoad(TokenBucket::new(rate, 3000.0)),
    )
}

/// A limit as admission applies it: reservations are f32s, each up to 2^-24 above the
/// decimal value meant, so limits carry a relative slack of f32::EPSILON (2^-23).
fn with_slack(limit: f64) -> f64 {
    limit + limit * f64::from(f32::EPSILON)
}

/// The model's decision: `None` = admit, `Some(code)` = deny with that RSVP error code.
fn expected(held: &BTreeMap<u64, Held>, limits: &Limits, id: u64, new: Held) -> Option<ErrorCode> {
    let others = || held.iter().filter(|(k, _)| **k != id).map(|(_, h)| h);
    let sum = |f: &dyn Fn(&Held) -> bool| others().filter(|h| f(h)).map(|h| h.rate).sum::<f64>();
    let policy_failure = match new.class {
        Class::A => {
            new.rate > limits.rule_a_rate
                || others().filter(|h| h.class == Class::A).count() >= limits.rule_a_flows
        }
        Class::D => true, // signaling = false, but the request is signaled
        _ => false,
    } || new.rate > limits.flow_rate;
    if policy_failure {
        return Some(ErrorCode::POLICY_CONTROL_FAILURE);
    }
    let in_pool = |h: &Held| matches!(h.class, Class::A | Class::B);
    let short = (new.class == Class::C
        && sum(&|h| h.class == Class::C) + new.rate > with_slack(limits.rule_c_total))
        || (in_pool(&new) && sum(&in_pool) + new.rate > with_slack(limits.pool))
        || (new.on_iface && sum(&|h| h.on_iface) + new.rate > with_slack(limits.iface))
        || (!new.on_iface && sum(&|h| !h.on_iface) + new.rate > with_slack(ETH1_RESERVABLE))
        || sum(&|_| true) + new.rate > with_slack(limits.host_rate)
        || others().count() >= limits.host_flows;
    short.then_some(ErrorCode::ADMISSION_CONTROL_FAILURE)
}

/// Everything the model holds fits the limits, and the policy agrees with the model.
fn check_books(
    policy: &mut Policy,
    held: &BTreeMap<u64, Held>,
    limits: &Limits,
) -> Result<(), TestCaseError> {
    let sum =
        |f: &dyn Fn(&Held) -> bool| held.values().filter(|h| f(h)).map(|h| h.rate).sum::<f64>();
    let pool = sum(&|h| matches!(h.class, Class::A | Class::B));
    let iface = sum(&|h| h.on_iface);
    let total = sum(&|_| true);
    prop_assert!(
        (0.0..=with_slack(limits.pool)).contains(&pool),
        "pool usage {}",
        pool
    );
    prop_assert!(
        (0.0..=with_slack(limits.iface)).contains(&iface),
        "interface usage {}",
        iface
    );
    prop_assert!(
        (0.0..=with_slack(limits.host_rate)).contains(&total),
        "host usage {}",
        total
    );
    prop_assert!(sum(&|h| h.class == Class::C) <= with_slack(limits.rule_c_total));
    prop_assert!(held.values().filter(|h| h.class == Class::A).count() <= limits.rule_a_flows);
    prop_assert!(held.len() <= limits.host_flows);
    prop_assert_eq!(policy.admitted_count(), held.len());
    // Each interface's books: the declared eth0 and the discovered eth1, kept apart.
    let eth1 = sum(&|h| !h.on_iface);
    prop_assert!(eth1 <= with_slack(ETH1_RESERVABLE), "eth1 usage {}", eth1);
    let budgets = policy.interface_budgets();
    let booked = |name: &str| {
        budgets
            .iter()
            .find(|b| b.name == name)
            .map_or((0.0, 0), |b| (b.reserved, b.flows))
    };
    let count = |on: bool| held.values().filter(|h| h.on_iface == on).count();
    prop_assert_eq!(booked("eth0"), (iface, count(true)));
    prop_assert_eq!(booked("eth1"), (eth1, count(false)));
    prop_assert_eq!(budgets.len(), 2, "{:?}", budgets);
    // Sums of f32 values of these magnitudes are exact in f64, in any order.
    prop_assert_eq!(policy.admitted_rate(), total);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn admission_books_stay_exact_under_random_operations(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let mut limits = VERSIONS[0];
        let mut policy = model_policy(&limits);
        let mut held: BTreeMap<u64, Held> = BTreeMap::new();
        for op in &ops {
            match *op {
                Op::Admit { id, class, on_iface, rate } => {
                    let class = CLASSES[class];
                    let new = Held { class, on_iface, rate: f64::from(RATES[rate]) };
                    let want = expected(&held, &limits, id, new);
                    let before = policy.stats();
                    let got = policy.admit_at(&admission_request(id, class, on_iface, RATES[rate]), NOON);
                    match (&got, want) {
                        (Ok(_), None) => {
                            held.insert(id, new);
                            prop_assert_eq!(policy.stats().admitted, before.admitted + 1);
                        }
                        // A denied modification keeps the old admission: the model is
                        // unchanged and check_books compares it with the policy.
                        (Err(denied), Some(code)) => {
                            prop_assert_eq!(denied.error.code, code, "{}", denied.reason);
                            prop_assert_eq!(policy.stats().denied, before.denied + 1);
                        }
                        _ => prop_assert!(false, "{op:?}: got {got:?}, model says {want:?} with {held:?}"),
                    }
                }
                Op::Release { id } => {
                    // Unknown ids (8, 9, or already released) are harmless.
                    policy.release(RuleId(id));
                    held.remove(&id);
                }
                Op::Reload { version } => {
                    limits = VERSIONS[version];
                    let new = model_policy(&limits);
                    let before = held.clone();
                    let dropped = policy.reload_at(new, NOON);
                    for id in &dropped {
                        prop_assert!(held.remove(&id.0).is_some(), "dropped unknown {id}");
                    }
                    // Re-admission is oldest first: everything kept must fit again, and
                    // every dropped one must not have fitted beside the ones kept before it.
                    let mut kept = BTreeMap::new();
                    for (id, h) in before {
                        let fits = expected(&kept, &limits, id, h);
                        if held.contains_key(&id) {
                            prop_assert_eq!(fits, None, "kept {} does not fit", id);
                            kept.insert(id, h);
                        } else {
                            prop_assert!(fits.is_some(), "dropped {} fits", id);
                        }
                    }
                }
            }
            check_books(&mut policy, &held, &limits)?;
        }
        for id in 0..10 {
            policy.release(RuleId(id));
        }
        prop_assert_eq!(policy.admitted_count(), 0);
        prop_assert_eq!(policy.admitted_rate(), 0.0);
        // No residue: the whole pool (within host, interface and per-reservation cap) is
        // available again.
        let full = limits
            .pool
            .min(limits.host_rate)
            .min(limits.flow_rate)
            .min(ETH1_RESERVABLE) as f32;
        let req = admission_request(0, Class::B, false, full);
        prop_assert!(policy.admit_at(&req, NOON).is_ok());
    }
}

#[test]
fn repeated_fractional_admissions_leave_no_residue() {
    let limits = VERSIONS[0];
    let mut policy = model_policy(&limits);
    for round in 0..1000u64 {
        for (i, rate) in [0.1f32, 1.0 / 3.0, 0.7, 12_500.5].into_iter().enumerate() {
            let id = round * 4 + i as u64;
            policy
                .admit_at(&admission_request(id % 8, Class::B, true, rate), NOON)
                .unwrap();
            policy.release(RuleId(id % 8));
        }
    }
    assert_eq!(policy.admitted_rate(), 0.0);
    // Exactly the interface capacity, on the interface: still fits.
    let req = admission_request(1, Class::B, true, limits.iface as f32);
    assert!(policy.admit_at(&req, NOON).is_ok());
    let more = admission_request(2, Class::B, true, 1.0);
    assert_eq!(
        policy.admit_at(&more, NOON).unwrap_err().error.code,
        ErrorCode::ADMISSION_CONTROL_FAILURE
    );
}

// ---------------------------------------------------------------------------------------------
// Regression tests of the bugs fixed in this review, and edge cases checked.
// ---------------------------------------------------------------------------------------------

fn refusal(text: &str) -> (usize, usize, String) {
    match Policy::from_toml_str(text, "p.toml") {
        Err(PolicyError::Invalid {
            line,
            column,
            message,
            ..
        }) => (line, column, message),
        other => panic!("expected a refusal of {text:?}, got {other:?}"),
    }
}

/// Regression: a rate whose f32 rounds up (999 999 999 → 1e9) made a no-signaling rule refuse
/// its own flowspec with "rate exceeds policy rule limit".
#[test]
fn a_rate_rounding_up_in_f32_still_admits_its_own_rule() {
    let mut policy = Policy::from_toml_str(
        "[host]\nmax_rate = \"10GB/s\"\nmax_flow_rate = \"10GB/s\"\n\
         [[pool]]\nname = \"p\"\ntotal_rate = 2999999997\n\
         [[rule]]\nname = \"r\"\nservice = \"controlled-load\"\nsignaling = false\n\
         rate = 999999999\npool = \"p\"\n",
        "p.toml",
    )
    .unwrap();
    let flowspec = policy.rules()[0].flowspec().unwrap();
    assert_eq!(flowspec.reserved_rate(), 1e9);
    for id in 0..3 {
        let req = {
            let mut r = AdmissionRequest::new(
                RuleId(id),
                Flow {
                    sender: format!("10.0.0.1:{}", 1000 + id).parse().unwrap(),
                    receiver: "10.0.0.2:80".parse().unwrap(),
                    protocol: 6,
                },
                flowspec,
            );
            r.signaled = false;
            r
        };
        policy.admit_at(&req, NOON).unwrap();
    }
    // The pool is full: a 4th is refused for bandwidth, not for policy.
    let mut req = admission_request(9, Class::B, false, 1e9);
    req.flow.sender = "10.0.0.1:1009".parse().unwrap();
    req.signaled = false;
    req.flowspec = flowspec;
    assert_eq!(
        policy.admit_at(&req, NOON).unwrap_err().error.code,
        ErrorCode::ADMISSION_CONTROL_FAILURE
    );
}

/// Regression: a positive rate too small for f32 (`1e-50`) was accepted and signaled as 0.
#[test]
fn rates_vanishing_in_f32_are_refused() {
    for bad in [
        "1e-50",
        "\"0.0000000000000000000000000000000000000000000001\"",
        "0",
        "0.0",
    ] {
        let (line, column, message) = refusal(&format!(
            "[[rule]]\nname = \"r\"\nservice = \"guaranteed\"\nrate = {bad}\n"
        ));
        assert_eq!((line, column), (4, 8), "{bad}");
        assert!(message.contains("greater than zero"), "{bad}: {message}");
    }
    Policy::from_toml_str(
        "[[rule]]\nname = \"r\"\nservice = \"guaranteed\"\nrate = 1e-3\n",
        "p.toml",
    )
    .unwrap();
}

/// Regression: `24:00` was accepted as the end of the day but folded to `00:00`, so the
/// whole-day window `00:00-24:00` was refused as empty.
#[test]
fn whole_day_and_end_of_day_windows() {
    let day = Schedule::parse(&["mon"], Some("00:00-24:00")).unwrap();
    assert!(day.is_active(PolicyTime::new(Weekday::Mon, 0, 0)));
    assert!(day.is_active(PolicyTime::new(Weekday::Mon, 23, 59)));
    assert!(!day.is_active(PolicyTime::new(Weekday::Tue, 0, 0)));
    let evening = Schedule::parse(&[], Some("18:00-24:00")).unwrap();
    assert!(evening.is_active(PolicyTime::new(Weekday::Fri, 23, 59)));
    assert!(!evening.is_active(PolicyTime::new(Weekday::Sat, 0, 0)));
    assert!(!evening.is_active(PolicyTime::new(Weekday::Fri, 17, 59)));
    let to_midnight = Schedule::parse(&[], Some("22:00-00:00")).unwrap();
    assert!(to_midnight.is_active(PolicyTime::new(Weekday::Fri, 23, 59)));
    assert!(!to_midnight.is_active(PolicyTime::new(Weekday::Fri, 0, 0)));
    assert!(Schedule::parse(&[], Some("00:00-00:00")).is_err());
    // Signs, spaces inside numbers and 3-digit fields are not times.
    for bad in [
        "+8:00-18:00",
        "08:00-+18:00",
        "008:00-18:00",
        "08:0 0-18:00",
        "24:01-01:00",
    ] {
        assert!(Schedule::parse(&[], Some(bad)).is_err(), "{bad}");
    }
    // Across midnight, days and window are checked independently (documented): the part
    // after midnight belongs to the day it falls on.
    let friday_night = Schedule::parse(&["fri"], Some("22:00-06:00")).unwrap();
    assert!(friday_night.is_active(PolicyTime::new(Weekday::Fri, 23, 0)));
    assert!(friday_night.is_active(PolicyTime::new(Weekday::Fri, 5, 0)));
    assert!(!friday_night.is_active(PolicyTime::new(Weekday::Sat, 5, 0)));
    // In a file, the whole-day window loads.
    Policy::from_toml_str(
        "[[rule]]\nname = \"r\"\nservice = \"guaranteed\"\nschedule = { time = \"00:00-24:00\" }\n",
        "p.toml",
    )
    .unwrap();
}

/// Regression: `utc_offset` took the sign twice (`+-05:00`) or a negative minute field
/// (`+01:-30`) as valid offsets.
#[test]
fn malformed_utc_offsets_are_refused_with_their_position() {
    for bad in [
        "+-05:00",
        "+01:-30",
        "-+01:00",
        "+1:00",
        "+01:0",
        "+ 1:00",
        "+01:00:00",
    ] {
        let (line, column, message) = refusal(&format!("[host]\nutc_offset = \"{bad}\"\n"));
        assert_eq!((line, column), (2, 14), "{bad}");
        assert!(message.contains("utc_offset"), "{bad}: {message}");
    }
    for good in ["+01:00", "-05:30", "+14:00", "Z"] {
        Policy::from_toml_str(&format!("[host]\nutc_offset = \"{good}\"\n"), "p.toml").unwrap();
    }
}

/// Regression: interface names the kernel can never have (`.`, `..`, `:`, tabs, control
/// characters) were accepted and only failed later in the tc backend.
#[test]
fn impossible_interface_names_are_refused() {
    for bad in [
        ".",
        "..",
        "eth0:1",
        "a\\tb",
        "a\\u0000b",
        "a\\nb",
        "",
        "sixteen-chars-xx",
    ] {
        let (line, column, message) = refusal(&format!(
            "[[interface]]\nname = \"{bad}\"\ncapacity = \"10Mbit\"\n"
        ));
        assert_eq!((line, column), (2, 8), "{bad}");
        assert!(message.contains("interface name"), "{bad}: {message}");
    }
    for good in ["eth0", "veth-a.1", "fifteen-chars-x", "br_lan"] {
        Policy::from_toml_str(
            &format!("[[interface]]\nname = \"{good}\"\ncapacity = \"10Mbit\"\n"),
            "p.toml",
        )
        .unwrap();
    }
}

/// Regression: loading a FIFO (or another non-regular file) blocked forever in `open`.
#[test]
fn loading_a_fifo_is_refused_without_blocking() {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "qtoq-policy-fifo-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let status = std::process::Command::new("mkfifo").arg(&path).status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("skipping: mkfifo is not available ({status:?})");
        return;
    }
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _guard = Remove(path.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let loader_path = path.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Policy::load(&loader_path).map(|_| ()));
    });
    let result = rx.recv_timeout(Duration::from_secs(10));
    if result.is_err() {
        // Unblock the stuck loader before failing, so that the thread does not linger.
        let _ = std::fs::OpenOptions::new().write(true).open(&path);
    }
    let err = result.expect("Policy::load blocked on a FIFO").unwrap_err();
    assert!(matches!(err, PolicyError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("regular file"), "{err}");
    // A directory is refused the same way.
    let err = Policy::load(std::env::temp_dir()).unwrap_err();
    assert!(err.to_string().contains("regular file"), "{err}");
}

#[test]
fn cidr_edges() {
    let all4: Cidr = "0.0.0.0/0".parse().unwrap();
    let all6: Cidr = "::/0".parse().unwrap();
    for addr in ["0.0.0.0", "255.255.255.255", "::ffff:1.2.3.4"] {
        assert!(all4.contains(addr.parse().unwrap()), "{addr}");
    }
    assert!(!all4.contains("2001:db8::1".parse().unwrap()));
    assert!(all6.contains("::".parse().unwrap()));
    assert!(all6.contains("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()));
    assert!(!all6.contains("1.2.3.4".parse().unwrap()));
    let host4: Cidr = "255.255.255.255/32".parse().unwrap();
    assert!(host4.contains("255.255.255.255".parse().unwrap()));
    assert!(!host4.contains("255.255.255.254".parse().unwrap()));
    let host6: Cidr = "2001:db8::1/128".parse().unwrap();
    assert!(host6.contains("2001:db8::1".parse().unwrap()));
    assert!(!host6.contains("2001:db8::".parse().unwrap()));
    // IPv4-compatible (not mapped) addresses are not IPv4.
    let net: Cidr = "10.0.0.0/8".parse().unwrap();
    assert!(!net.contains("::10.0.0.1".parse().unwrap()));
    for bad in [
        "1.2.3.4/33",
        "::/129",
        "1.2.3.4/",
        "/8",
        "1.2.3.4/-1",
        "1.2.3.4/256",
    ] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad}");
    }
}

proptest! {
    #[test]
    fn cidr_containment_agrees_with_integer_arithmetic(addr in any::<u32>(), net in any::<u32>(), len in 0u8..=32) {
        let cidr = Cidr::new(std::net::Ipv4Addr::from(net).into(), len).unwrap();
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
        prop_assert_eq!(
            cidr.contains(std::net::Ipv4Addr::from(addr).into()),
            addr & mask == net & mask
        );
    }

    #[test]
    fn cidr6_containment_agrees_with_integer_arithmetic(addr in any::<u128>(), net in any::<u128>(), len in 0u8..=128) {
        let cidr = Cidr::new(std::net::Ipv6Addr::from(net).into(), len).unwrap();
        let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
        prop_assert_eq!(
            cidr.contains(std::net::Ipv6Addr::from(addr).into()),
            addr & mask == net & mask
        );
    }

    /// Priority ties go to file order, whatever the priorities and the order of the file.
    #[test]
    fn priority_ties_go_to_the_rule_written_first(priorities in proptest::collection::vec(-3i64..3, 1..8)) {
        let mut text = String::new();
        for (i, p) in priorities.iter().enumerate() {
            text.push_str(&format!(
                "[[rule]]\nname = \"r{i}\"\npriority = {p}\nservice = \"controlled-load\"\n"
            ));
        }
        let policy = Policy::from_toml_str(&text, "p.toml").unwrap();
        let flow = Flow {
            sender: "10.0.0.1:1".parse().unwrap(),
            receiver: "10.0.0.2:2".parse().unwrap(),
            protocol: 6,
        };
        let best = *priorities.iter().max().unwrap();
        let first = priorities.iter().position(|p| *p == best).unwrap();
        let expected = format!("r{first}");
        prop_assert_eq!(&policy.lookup(&flow, None, NOON).unwrap().name, &expected);
    }
}
