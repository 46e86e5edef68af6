//! `examples/qosd.service`, the systemd unit for qosd: it says what the README promises
//! (capabilities, runtime directory kept for crash recovery, reload, stop signal, restart,
//! the socket's group deciding who may connect), its `qosd` command line uses only flags
//! qosd has, and `systemd-analyze verify` accepts it without a warning (skipped, saying
//! why, where systemd-analyze is missing).
#![cfg(feature = "daemon")]

use std::collections::HashMap;
use std::process::Command;

const UNIT: &str = include_str!("../examples/qosd.service");
const QOSD: &str = env!("CARGO_BIN_EXE_qosd");

/// `Key=value` of the unit's `[Service]` section (continuation lines joined; a key given
/// twice keeps the last value).
fn service() -> HashMap<String, String> {
    let joined = UNIT.replace("\\\n", " ");
    let mut section = "";
    let mut keys = HashMap::new();
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]" {
            let (key, value) = line.split_once('=').expect("Key=value");
            keys.insert(
                key.to_owned(),
                value.split_whitespace().collect::<Vec<_>>().join(" "),
            );
        }
    }
    keys
}

#[test]
fn the_unit_says_what_qosd_needs() {
    let keys = service();
    let get = |key: &str| {
        keys.get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {key}= in [Service]"))
    };
    assert_eq!(get("AmbientCapabilities"), "CAP_NET_ADMIN CAP_NET_RAW");
    assert_eq!(get("CapabilityBoundingSet"), get("AmbientCapabilities"));
    assert_eq!(get("RuntimeDirectory"), "qtoq");
    // The tc journal must outlive a crash for the next qosd to restore the interfaces.
    assert_eq!(get("RuntimeDirectoryPreserve"), "yes");
    assert_eq!(get("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(get("KillSignal"), "SIGTERM");
    assert_eq!(get("Restart"), "on-failure");
    assert_eq!(get("Group"), "qtoq");
    let exec = get("ExecStart");
    for expected in [
        "--socket /run/qtoq/qosd.sock",
        "--state-dir /run/qtoq",
        "--mode 660",
    ] {
        assert!(
            exec.contains(expected),
            "ExecStart lacks {expected}: {exec}"
        );
    }
}

#[test]
fn the_units_command_line_uses_only_qosds_flags() {
    let keys = service();
    let exec = &keys["ExecStart"];
    let help = Command::new(QOSD)
        .arg("--help")
        .output()
        .expect("qosd --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in exec.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")),
            "qosd has no {flag}:\n{help}"
        );
    }
}

#[test]
fn systemd_analyze_accepts_the_unit() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipping: no systemd-analyze on this host");
        return;
    };
    if !version.status.success() {
        eprintln!("skipping: systemd-analyze --version failed");
        return;
    }
    // verify wants the ExecStart program to exist: point it at the qosd just built.
    let dir = std::env::temp_dir().join(format!("qtoq-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let unit = dir.join("qosd.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/qosd", QOSD)).expect("unit copy");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze verify");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed ({}):\n{stderr}",
        out.status
    );
    // Unknown keys and bad values are warnings, not failures: none allowed either.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("qosd.service"))
        .collect();
    assert!(warnings.is_empty(), "systemd-analyze warns:\n{stderr}");
}
