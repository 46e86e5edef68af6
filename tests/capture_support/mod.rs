//! A bounded `tshark` capture for tests that check the signaling on the wire.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Wireshark's expert severity for warnings (`PI_WARN`); anything at or above fails a test.
pub const PI_WARN: u32 = 0x0060_0000;

/// A capture filter for RSVP however it travels: UDP encapsulation (ports 1698/1699) or raw
/// IP (protocol 46).
pub const RSVP_FILTER: &str = "udp port 1698 or udp port 1699 or ip proto 46";

static CAPTURES: AtomicU32 = AtomicU32::new(0);

/// A running `tshark` capture, stopped and its file removed on drop (even on panic).
pub struct Capture {
    child: Option<Child>,
    /// The pcap file being written.
    pub path: PathBuf,
}

impl Capture {
    /// Starts capturing `filter` on `lo` (inside network namespace `netns` when given),
    /// bounded to 60 s and `max_packets`; returns once tshark reports it is capturing.
    pub fn start(netns: Option<&str>, filter: &str, max_packets: u32) -> Capture {
        Self::start_on(netns, "lo", filter, max_packets)
    }

    /// [`Capture::start`] on interface `interface`.
    pub fn start_on(
        netns: Option<&str>,
        interface: &str,
        filter: &str,
        max_packets: u32,
    ) -> Capture {
        let path = std::env::temp_dir().join(format!(
            "qtoq-capture-{}-{}.pcap",
            std::process::id(),
            CAPTURES.fetch_add(1, Ordering::Relaxed)
        ));
        // `ip netns exec` execs tshark, so the child's pid is tshark's either way.
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "tshark"]);
                c
            }
            None => Command::new("tshark"),
        };
        let mut child = command
            .args(["-i", interface, "-f", filter, "-a", "duration:60", "-c"])
            .arg(max_packets.to_string())
            .arg("-w")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tshark starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let mut capture = Capture {
            child: Some(child),
            path,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Capturing on") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            capture.stop();
            panic!("tshark did not start capturing");
        }
        // The capture filter is attached right after the banner; leave it a moment.
        std::thread::sleep(Duration::from_millis(300));
        capture
    }

    /// Stops tshark gracefully (SIGINT lets it flush the file).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("QTOQ_KEEP_CAPTURE").is_none() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Capture {
    /// Every packet of the capture that matches `display_filter` (RSVP on UDP port 1698 is
    /// dissected as RSVP too) as the values of `fields`, in order, as tshark prints them.
    pub fn fields(&self, display_filter: Option<&str>, fields: &[&str]) -> Vec<Vec<String>> {
        let mut cmd = Command::new("tshark");
        cmd.arg("-r").arg(&self.path).args([
            "-d",
            "udp.port==1698,rsvp",
            "-T",
            "fields",
            "-E",
            "separator=|",
        ]);
        if let Some(filter) = display_filter {
            cmd.args(["-Y", filter]);
        }
        for f in fields {
            cmd.args(["-e", f]);
        }
        let out = cmd.output().expect("tshark reads the capture");
        assert!(out.status.success(), "tshark -r failed: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let values: Vec<String> = line.split('|').map(str::to_owned).collect();
                assert_eq!(values.len(), fields.len(), "{line}");
                values
            })
            .collect()
    }
}

/// The highest of the severities in a `_ws.expert.severity` field (0 when there is none).
pub fn max_severity(field: &str) -> u32 {
    field
        .split(',')
        .filter_map(|s| s.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Whether `tshark` runs here.
pub fn tshark_installed() -> bool {
    Command::new("tshark")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the tshark checks can run: `false` (after saying why) when tshark is missing, a
/// failure instead when QTOQ_REQUIRE_PRIVILEGED=1 (as in CI).
pub fn tshark_or_skip() -> bool {
    if tshark_installed() {
        return true;
    }
    let reason = "tshark is not installed";
    assert!(
        std::env::var("QTOQ_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "{reason}"
    );
    eprintln!("skipped: {reason}");
    false
}
