//! The tc backend's ownership journal in real network namespaces: an owner killed with
//! SIGKILL (a real separate process) is refused while it runs and has its interface restored
//! by the next enforcer once it is gone; a qtoq tree without a journal is refused and left
//! alone; two enforcers of one process cannot share an interface; an enforcer dropped
//! without shutdown is cleaned up by the next one.
//!
//! Namespaces as in `tests/enforce_tc_netns.rs` (`netns_support`: created per test, deleted
//! in a Drop guard even when an assertion fails), and a state directory per test under the
//! temporary directory, never `/run/qtoq`. The killed owner is this test binary run again
//! (`owner_process`, which returns at once unless its environment names a namespace) with the namespace and state directory in its
//! environment. Needs root: without it the tests say why and return, unless
//! QTOQ_REQUIRE_PRIVILEGED=1, when they fail.
#![cfg(feature = "tc")]

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qtoq::enforce::{EnforceError, Enforcer, TcEnforcer};
use qtoq::flow::{Flow, Rule, RuleId};
use qtoq::policy::InterfaceSpec;
use qtoq::wire::intserv::{FlowSpec, TokenBucket};

mod netns_support;

use netns_support::{in_netns, Namespaces, StateDir, CAPACITY, RESERVED, SERVER_IF};

const CHILD_NS: &str = "QTOQ_TEST_OWNER_NS";
const CHILD_STATE: &str = "QTOQ_TEST_OWNER_STATE";
const WAIT: Duration = Duration::from_secs(20);

fn interface() -> InterfaceSpec {
    InterfaceSpec::new(SERVER_IF, CAPACITY)
}

fn rule() -> Rule {
    Rule {
        id: RuleId(1),
        flow: Flow {
            sender: "10.77.0.1:5000".parse().unwrap(),
            receiver: "10.77.0.2:40000".parse().unwrap(),
            protocol: 6,
        },
        flowspec: FlowSpec::ControlledLoad(TokenBucket::new(RESERVED, 65_536.0)),
        dscp: None,
    }
}

/// `TcEnforcer::with_state_dir` in the server namespace; on success the enforcer is shut
/// down again at once. Returns the error, if any.
fn start_and_stop(ns: &Namespaces, state: &Path) -> Result<(), EnforceError> {
    let state = state.to_owned();
    in_netns(&ns.server, move || async move {
        let mut enforcer = TcEnforcer::with_state_dir(&[interface()], &state).await?;
        enforcer.shutdown().await
    })
    .join()
    .unwrap()
}

/// The root qdisc of the server interface, as `tc -j qdisc show` describes it.
fn root_qdisc(ns: &Namespaces) -> serde_json::Value {
    let text = ns.tc(&["-j", "qdisc", "show"]);
    let all: serde_json::Value = serde_json::from_str(&text).expect("tc -j output");
    all.as_array()
        .and_then(|list| list.iter().find(|q| q["root"] == true))
        .cloned()
        .unwrap_or_else(|| panic!("no root qdisc in {text}"))
}

/// The owner process: this binary again, running `owner_process` (below).
struct Owner {
    child: Child,
    log: std::path::PathBuf,
}

impl Owner {
    fn spawn(ns: &Namespaces, state: &StateDir) -> Self {
        let log = state.path().join("owner.log");
        let file = fs::File::create(&log).expect("log file");
        let child = Command::new(std::env::current_exe().expect("test binary"))
            .args(["owner_process", "--exact", "--nocapture"])
            .env(CHILD_NS, &ns.server)
            .env(CHILD_STATE, state.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start the owner process");
        Owner { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the owner installed its rule.
    fn wait_ready(&mut self, state: &StateDir) {
        let ready = state.path().join("ready");
        let deadline = Instant::now() + WAIT;
        while !ready.exists() {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("the owner process ended ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the owner process is not ready after {WAIT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, and reap it.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the owner");
        self.child.wait().expect("reap the owner");
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The owner's side of `a_killed_owner_is_refused_while_it_runs_and_undone_after`: creates
/// an enforcer in the namespace named by the environment, installs a rule, says it is
/// ready and waits to be killed. Not a test of its own: without that environment (a normal
/// run) it returns at once; it is a `#[test]` so that the test binary can run it alone.
#[test]
fn owner_process() {
    let (Ok(ns), Ok(state)) = (std::env::var(CHILD_NS), std::env::var(CHILD_STATE)) else {
        return;
    };
    let state = std::path::PathBuf::from(state);
    let ready = state.join("ready");
    in_netns(&ns, move || async move {
        let mut enforcer = TcEnforcer::with_state_dir(&[interface()], &state)
            .await
            .expect("owner: TcEnforcer::with_state_dir");
        enforcer
            .install(&rule(), None)
            .await
            .expect("owner: install");
        fs::write(&ready, b"").expect("owner: ready file");
        // Until SIGKILL: no shutdown ever runs.
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    })
    .join()
    .unwrap();
}

#[test]
fn a_killed_owner_is_refused_while_it_runs_and_undone_after() {
    let Some(ns) = Namespaces::create() else {
        return;
    };
    let state = StateDir::new();
    ns.tc(&[
        "qdisc", "add", "root", "handle", "9:", "tbf", "rate", "1mbit", "burst", "32kbit",
        "latency", "400ms",
    ]);
    let original = root_qdisc(&ns);
    assert_eq!(original["kind"], "tbf", "{original}");
    // tbf's own inner class.
    let original_classes = ns.tc(&["class", "show"]);

    let mut owner = Owner::spawn(&ns, &state);
    owner.wait_ready(&state);
    let owner_pid = owner.child.id();
    let journals = state.journals();
    assert_eq!(journals.len(), 1, "{journals:?}");
    let journal = fs::read_to_string(&journals[0]).unwrap();
    let recorded: serde_json::Value = serde_json::from_str(&journal).unwrap();
    assert_eq!(recorded["pid"], owner_pid, "{journal}");
    assert_eq!(recorded["ifname"], SERVER_IF, "{journal}");
    assert!(recorded["previous"].is_string(), "{journal}");

    // While it runs, a second process is refused and changes nothing.
    let err = start_and_stop(&ns, state.path()).unwrap_err();
    assert!(
        matches!(&err, EnforceError::InUse { interface, pid, .. }
            if interface == SERVER_IF && *pid == owner_pid),
        "{err:?}"
    );
    assert!(err.to_string().contains("stop it first"), "{err}");
    assert!(ns.tc(&["class", "show"]).contains("7174:1000"));
    assert!(ns.tc(&["filter", "show"]).contains("flowid 7174:1000"));
    assert_eq!(fs::read_to_string(&journals[0]).unwrap(), journal);

    owner.kill();
    // SIGKILL ran no cleanup: the tree and the journal are still there.
    assert_eq!(root_qdisc(&ns)["kind"], "htb");
    assert!(ns.tc(&["class", "show"]).contains("7174:1000"));
    assert!(journals[0].exists());

    // The next enforcer restores the tbf, installs its own tree, and its shutdown leaves
    // the tbf exactly as it was, and no journal.
    start_and_stop(&ns, state.path()).expect("start after the owner died");
    assert_eq!(root_qdisc(&ns), original);
    assert_eq!(ns.tc(&["class", "show"]), original_classes);
    assert_eq!(ns.tc(&["filter", "show"]).trim(), "");
    assert_eq!(state.journals(), Vec::<std::path::PathBuf>::new());
}

#[test]
fn a_tree_without_a_journal_is_refused_and_left_alone() {
    let Some(ns) = Namespaces::create() else {
        return;
    };
    let state = StateDir::new();
    // A qtoq tree whose journal is elsewhere (another state directory, a live process).
    let other = StateDir::new();
    let other_dir = other.path().to_owned();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let owner = in_netns(&ns.server, move || async move {
        let mut enforcer = TcEnforcer::with_state_dir(&[interface()], &other_dir)
            .await
            .expect("other enforcer");
        enforcer.install(&rule(), None).await.expect("install");
        ready_tx.send(()).unwrap();
        let _ = release_rx.recv();
        enforcer.shutdown().await.expect("shutdown");
    });
    ready_rx.recv_timeout(WAIT).expect("other enforcer ready");
    let before = ns.tc(&["class", "show"]);
    assert!(before.contains("7174:1000"), "{before}");

    let err = start_and_stop(&ns, state.path()).unwrap_err();
    assert!(
        matches!(&err, EnforceError::Unowned { interface, .. } if interface == SERVER_IF),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("tc qdisc del dev {SERVER_IF} root")),
        "{err}"
    );
    assert_eq!(ns.tc(&["class", "show"]), before);
    assert!(ns.tc(&["filter", "show"]).contains("flowid 7174:1000"));
    assert_eq!(state.journals(), Vec::<std::path::PathBuf>::new());

    release_tx.send(()).unwrap();
    owner.join().unwrap();
    assert_eq!(ns.tc(&["class", "show"]).trim(), "");
}

#[test]
fn two_enforcers_of_one_process_cannot_share_an_interface() {
    let Some(ns) = Namespaces::create() else {
        return;
    };
    let state = StateDir::new();
    let dir = state.path().to_owned();
    let (first, second) = in_netns(&ns.server, move || async move {
        let mut first = TcEnforcer::with_state_dir(&[interface()], &dir)
            .await
            .expect("first enforcer");
        first.install(&rule(), None).await.expect("install");
        let second = TcEnforcer::with_state_dir(&[interface()], &dir)
            .await
            .map(|_| ());
        let classes = netns_support::run(&["tc", "class", "show", "dev", SERVER_IF]).unwrap();
        first.shutdown().await.expect("shutdown");
        (classes, second)
    })
    .join()
    .unwrap();
    let err = second.unwrap_err();
    assert!(
        matches!(&err, EnforceError::InUse { pid, .. } if *pid == std::process::id()),
        "{err:?}"
    );
    // The first enforcer's tree survived the attempt.
    assert!(first.contains("7174:1000"), "{first}");
}

#[test]
fn an_enforcer_dropped_without_shutdown_is_undone_by_the_next() {
    let Some(ns) = Namespaces::create() else {
        return;
    };
    let state = StateDir::new();
    ns.tc(&[
        "qdisc", "add", "root", "handle", "9:", "pfifo", "limit", "77",
    ]);
    let original = root_qdisc(&ns);
    let dir = state.path().to_owned();
    in_netns(&ns.server, move || async move {
        let mut enforcer = TcEnforcer::with_state_dir(&[interface()], &dir).await?;
        enforcer.install(&rule(), None).await?;
        // "Crash": drop without shutdown.
        Ok::<_, EnforceError>(())
    })
    .join()
    .unwrap()
    .unwrap();
    assert!(ns.tc(&["class", "show"]).contains("7174:1000"));
    assert_eq!(state.journals().len(), 1);

    let dir = state.path().to_owned();
    let (classes, filters) = in_netns(&ns.server, move || async move {
        let mut enforcer = TcEnforcer::with_state_dir(&[interface()], &dir).await?;
        let classes = netns_support::run(&["tc", "class", "show", "dev", SERVER_IF]).unwrap();
        let filters = netns_support::run(&["tc", "filter", "show", "dev", SERVER_IF]).unwrap();
        enforcer.shutdown().await?;
        Ok::<_, EnforceError>((classes, filters))
    })
    .join()
    .unwrap()
    .unwrap();
    // A fresh tree: the dropped enforcer's class and filter are gone.
    assert!(classes.contains("7174:2"), "{classes}");
    assert!(!classes.contains("7174:1000"), "{classes}");
    assert_eq!(filters.trim(), "");
    // And the root qdisc from before the first enforcer is back.
    assert_eq!(root_qdisc(&ns), original);
    assert_eq!(state.journals(), Vec::<std::path::PathBuf>::new());
}
