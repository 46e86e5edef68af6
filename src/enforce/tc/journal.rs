//! The tc backend's ownership journal: one JSON file per interface recording what this
//! process changed in the kernel, written before the change, so a later start can tell a
//! live owner from a dead one and restore exactly what a dead one replaced.
//!
//! Also here: the owner check (`/proc/<pid>/stat`), the per-namespace journal directory, the
//! lock that serialises start-ups, and the set of journals live enforcers of this process
//! hold.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rtnetlink::packet_core::{Emitable, Parseable};
use rtnetlink::packet_route::tc::TcMessage;
use serde::{Deserialize, Serialize};

/// Version of the journal format this code writes and understands.
pub(super) const FORMAT_VERSION: u32 = 1;

/// How long a start-up waits for another one on the same namespace to finish.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// One interface's journal (`<state_dir>/tc/[net-<inode>/]<ifname>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Journal {
    /// [`FORMAT_VERSION`].
    pub(super) version: u32,
    /// The owner's pid.
    pub(super) pid: u32,
    /// The owner's start time (`/proc/<pid>/stat` field 22, clock ticks since boot): a pid
    /// reused by another process does not pass for the owner.
    pub(super) start_time: u64,
    /// The interface.
    pub(super) ifname: String,
    /// Its index when the journal was written (a re-created interface has another).
    pub(super) ifindex: i32,
    /// Inode of the network namespace (`/proc/thread-self/ns/net`), for diagnostics.
    pub(super) netns: u64,
    /// Handle of the root qdisc the owner installs (`major << 16`).
    pub(super) root_handle: u32,
    /// The root qdisc to put back: the `RTM_NEWQDISC` message body (`struct tcmsg` and its
    /// attributes) as netlink bytes, in hex; `None` for the kernel's default qdisc, restored
    /// by deleting ours.
    pub(super) previous: Option<String>,
}

impl Journal {
    /// The journal of `owner`, replacing the root qdisc of `ifname` with `root_handle`.
    pub(super) fn new(
        owner: Owner,
        ifname: &str,
        ifindex: i32,
        netns: u64,
        root_handle: u32,
        previous: Option<&TcMessage>,
    ) -> Self {
        Journal {
            version: FORMAT_VERSION,
            pid: owner.pid,
            start_time: owner.start_time,
            ifname: ifname.to_owned(),
            ifindex,
            netns,
            root_handle,
            previous: previous.map(|m| {
                let mut bytes = vec![0; m.buffer_len()];
                m.emit(&mut bytes);
                hex(&bytes)
            }),
        }
    }

    /// The owner recorded.
    pub(super) fn owner(&self) -> Owner {
        Owner {
            pid: self.pid,
            start_time: self.start_time,
        }
    }

    /// The recorded previous root qdisc, parsed back into a netlink message.
    pub(super) fn previous_message(&self) -> Result<Option<TcMessage>, String> {
        let Some(text) = &self.previous else {
            return Ok(None);
        };
        let bytes = unhex(text).ok_or("`previous` is not hex")?;
        TcMessage::parse(&bytes)
            .map(Some)
            .map_err(|e| format!("`previous` is not a tc message: {e}"))
    }

    pub(super) fn to_json(&self) -> Vec<u8> {
        // A struct of strings and integers always serialises.
        let mut text = serde_json::to_vec_pretty(self).unwrap_or_default();
        text.push(b'\n');
        text
    }

    /// Parses a journal; an unknown version is an error (its fields cannot be trusted).
    pub(super) fn from_json(text: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let version: Version = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        if version.version != FORMAT_VERSION {
            return Err(format!(
                "format version {} (this qtoq understands {FORMAT_VERSION})",
                version.version
            ));
        }
        serde_json::from_slice(text).map_err(|e| e.to_string())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// A process, identified across pid reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Owner {
    pub(super) pid: u32,
    pub(super) start_time: u64,
}

impl Owner {
    /// This process.
    pub(super) fn current() -> io::Result<Self> {
        let pid = std::process::id();
        match start_time(pid)? {
            Some(start_time) => Ok(Owner { pid, start_time }),
            None => Err(io::Error::other("/proc/self/stat: unreadable start time")),
        }
    }

    /// Whether the process still runs: its pid exists, is not a zombie (whose sockets, and
    /// so its hold on anything, are gone) and started when recorded. When `/proc` cannot
    /// tell, it counts as alive: nothing is removed on a guess.
    pub(super) fn is_alive(&self) -> bool {
        match start_time(self.pid) {
            Ok(Some(start)) => start == self.start_time,
            Ok(None) => false,
            Err(_) => true,
        }
    }
}

/// Start time (field 22 of `/proc/<pid>/stat`) of a running process; `None` when there is
/// no such process or it is a zombie.
pub(super) fn start_time(pid: u32) -> io::Result<Option<u64>> {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => match parse_stat(&text) {
            Some(('Z' | 'X', _)) => Ok(None),
            Some((_, start)) => Ok(Some(start)),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/{pid}/stat: unexpected format"),
            )),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// State (field 3) and start time (field 22) from a `/proc/<pid>/stat` line. The command
/// name (field 2) is in parentheses and may hold spaces and parentheses itself, so fields
/// are counted from the last `)`.
fn parse_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4..=21 lie between the state and the start time.
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

/// Inode of a network namespace link such as `/proc/thread-self/ns/net` (`net:[4026531840]`).
fn netns_inode(link: &str) -> io::Result<u64> {
    let target = fs::read_link(link)?;
    target
        .to_str()
        .and_then(|t| t.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{link} -> {}: not a network namespace", target.display()),
            )
        })
}

/// The calling thread's network namespace: the one its netlink sockets talk to.
pub(super) fn current_netns() -> io::Result<u64> {
    netns_inode("/proc/thread-self/ns/net")
}

/// Directory of the journals for namespace `netns`: `<state_dir>/tc` for the host's
/// namespace (PID 1's), `<state_dir>/tc/net-<inode>` for any other, since interfaces of
/// different namespaces may share a name while `/run` is shared (`ip netns exec`).
pub(super) fn directory(state_dir: &Path, netns: u64) -> PathBuf {
    let tc = state_dir.join("tc");
    match netns_inode("/proc/1/ns/net") {
        Ok(host) if host == netns => tc,
        _ => tc.join(format!("net-{netns}")),
    }
}

/// The journal file of `ifname` in `directory`.
pub(super) fn path(directory: &Path, ifname: &str) -> PathBuf {
    directory.join(format!("{ifname}.json"))
}

/// Creates the journal directory (mode 0755: the journals are no secret — `tc qdisc show`
/// tells anyone as much — and a diagnostic tool may read who owns an interface; only root
/// writes them) and refuses one that others may write, since start-up acts on its files as
/// root.
pub(super) fn create_directory(directory: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(directory)?;
    let mode = fs::metadata(directory)?.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("writable by group or others (mode {:o})", mode & 0o7777),
        ));
    }
    Ok(())
}

/// Reads the journal at `path`; `Ok(None)` when there is none.
pub(super) fn read(path: &Path) -> io::Result<Option<Result<Journal, String>>> {
    match fs::read(path) {
        Ok(text) => Ok(Some(Journal::from_json(&text))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `journal` to `path` atomically: a temporary file, synced, renamed over `path`,
/// then the directory synced, so a crash leaves the old journal or the new one, never half.
pub(super) fn write(path: &Path, journal: &Journal) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".{}.tmp", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&temporary)?;
        file.write_all(&journal.to_json())?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written?;
    sync_parent(path)
}

/// Removes the journal at `path` (none is fine).
pub(super) fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    sync_parent(path)
}

/// Removes a namespace's journal directory (`net-<inode>`) once it holds no journal, so
/// short-lived namespaces leave nothing in the state directory. Only when no start-up holds
/// its lock; one that waits for it notices the removal (see [`DirectoryLock::acquire`]).
pub(super) fn prune(directory: &Path) {
    let is_namespace_dir = directory
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("net-"));
    if !is_namespace_dir {
        return;
    }
    if let Ok(file) = fs::File::open(directory) {
        if file.try_lock().is_ok() {
            // Fails, as it should, while another interface's journal is there.
            let _ = fs::remove_dir(directory);
        }
    }
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// An exclusive `flock` on a journal directory, held while an enforcer reads journals and
/// takes interfaces over, so two start-ups cannot both judge one journal; released on drop.
#[derive(Debug)]
pub(super) struct DirectoryLock {
    _file: fs::File,
}

impl DirectoryLock {
    /// Creates the directory if needed (see [`create_directory`]) and locks it, waiting at
    /// most `LOCK_WAIT` for another start-up.
    pub(super) async fn acquire(directory: &Path) -> io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            create_directory(directory)?;
            let file = fs::File::open(directory)?;
            // Not a blocking flock: that would stall the runtime thread.
            while !try_lock(&file)? {
                if Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("another qtoq start-up held the lock for {LOCK_WAIT:?}"),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // A shutdown may have pruned the directory while we waited: lock the new one.
            let locked = file.metadata()?;
            match fs::metadata(directory) {
                Ok(now) if (now.dev(), now.ino()) == (locked.dev(), locked.ino()) => {
                    return Ok(DirectoryLock { _file: file });
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Journals held by live enforcers of this process: a journal naming this process is a
/// live owner's when listed here, and an enforcer dropped without `shutdown` otherwise.
static HELD: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Claims `path` for an enforcer of this process; `false` when another one holds it.
pub(super) fn claim(path: &Path) -> bool {
    HELD.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(path.to_owned())
}

/// Releases a claim.
pub(super) fn release(path: &Path) {
    HELD.lock().unwrap_or_else(|e| e.into_inner()).remove(path);
}

/// An exclusive `flock` on `file` without waiting: `false` while someone else holds it.
fn try_lock(file: &fs::File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::DefaultNla;
    use rtnetlink::packet_route::tc::{TcAttribute, TcHandle};

    /// A tbf root qdisc as `saved` keeps it: kind and the opaque TCA_OPTIONS.
    fn tbf() -> TcMessage {
        let mut m = TcMessage::with_index(7);
        m.header.parent = TcHandle::ROOT;
        m.header.handle = TcHandle { major: 9, minor: 0 };
        m.attributes.push(TcAttribute::Kind("tbf".into()));
        m.attributes.push(TcAttribute::Other(DefaultNla::new(
            2,
            vec![8, 0, 1, 0, 0xaa, 0xbb, 0xcc, 0xdd],
        )));
        m
    }

    #[test]
    fn journal_round_trips_with_the_netlink_bytes() {
        let owner = Owner {
            pid: 4242,
            start_time: 123_456_789,
        };
        let journal = Journal::new(owner, "veth0", 7, 4026531840, 0x7174_0000, Some(&tbf()));
        let text = journal.to_json();
        let back = Journal::from_json(&text).unwrap();
        assert_eq!(back, journal);
        assert_eq!(back.owner(), owner);
        let message = back.previous_message().unwrap().unwrap();
        assert_eq!(message.header.index, 7);
        assert_eq!(message.header.parent, TcHandle::ROOT);
        assert_eq!(message.header.handle, TcHandle { major: 9, minor: 0 });
        assert_eq!(message.attributes[0], TcAttribute::Kind("tbf".into()));
        // The parser wraps the options of kinds it does not know; kept as the enforcer keeps
        // a dumped qdisc (`saved`), the message has the very bytes stored again.
        let restore = super::super::saved(&message).unwrap().message(7);
        assert_eq!(restore, tbf());
        let mut bytes = vec![0; restore.buffer_len()];
        restore.emit(&mut bytes);
        assert_eq!(Some(hex(&bytes)), journal.previous);
        // The JSON is readable by people too.
        let value: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(value["pid"], 4242);
        assert_eq!(value["ifname"], "veth0");

        let default = Journal::new(owner, "veth0", 7, 1, 0x7174_0000, None);
        let back = Journal::from_json(&default.to_json()).unwrap();
        assert_eq!(back.previous, None);
        assert_eq!(back.previous_message().unwrap(), None);
    }

    #[test]
    fn unknown_versions_and_bad_bytes_are_refused() {
        let owner = Owner {
            pid: 1,
            start_time: 1,
        };
        let mut journal = Journal::new(owner, "veth0", 7, 1, 0x7174_0000, None);
        journal.version = FORMAT_VERSION + 1;
        let err = Journal::from_json(&journal.to_json()).unwrap_err();
        assert!(err.contains("format version"), "{err}");
        assert!(Journal::from_json(b"{\"version\": 1}").is_err());
        journal.version = FORMAT_VERSION;
        journal.previous = Some("0g".into());
        assert!(journal.previous_message().is_err());
        journal.previous = Some("00".into());
        assert!(journal.previous_message().is_err());
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "77 (a) b (c) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 \
                    100 18446744073709551615\n";
        assert_eq!(parse_stat(line), Some(('S', 987_654)));
        assert_eq!(parse_stat("77 (x) Z 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_owner_check_needs_the_pid_and_its_start_time() {
        let me = Owner::current().unwrap();
        assert!(me.is_alive());
        // Same pid, another start time: a reused pid is not the owner.
        let reused = Owner {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.is_alive());

        // A running child is alive with its own start time; once it exited but is not
        // reaped yet it is a zombie: gone.
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        let pid = child.id();
        let child_owner = Owner {
            pid,
            start_time: start_time(pid).unwrap().expect("child runs"),
        };
        assert!(child_owner.is_alive());
        let deadline = Instant::now() + Duration::from_secs(10);
        while start_time(pid).unwrap().is_some() {
            assert!(
                Instant::now() < deadline,
                "child {pid} never became a zombie"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!child_owner.is_alive());
        child.wait().unwrap();
        // Reaped: no such pid.
        assert_eq!(start_time(pid).unwrap(), None);
    }
}
