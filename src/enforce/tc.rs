//! The Linux tc backend: an HTB tree per declared interface, one class and one u32 filter
//! per reservation, all over rtnetlink.
//!
//! Tree on each interface (handles in hex, `7174` is "qt"):
//!
//! ```text
//! 7174:      htb root qdisc, default class 7174:2
//! └─ 7174:1     root class, rate = ceil = capacity
//!    ├─ 7174:2     best effort, rate = capacity − reserved, ceil = capacity
//!    └─ 7174:1000… one class per reservation (7174:1000-7174:fffe), u32 filter at
//!                  priority = the class minor on the flow's 5-tuple
//! ```
//!
//! The kernel lacks nothing here, but `netlink-packet-route` has no HTB types, so the HTB
//! option structs (`tc_htb_glob`, `tc_htb_opt`) and the u32 selector are encoded here.
//!
//! # The ownership journal
//!
//! Before it replaces an interface's root qdisc, the enforcer writes a journal (write-ahead)
//! to `<state_dir>/tc/<ifname>.json` — [`DEFAULT_STATE_DIR`] is
//! `/run/qtoq` — or, in any
//! network namespace other than the host's (PID 1's), to
//! `<state_dir>/tc/net-<inode>/<ifname>.json`: namespaces reuse interface names and share
//! `/run`. The directories are created with mode 0755: a journal holds nothing `tc qdisc
//! show` does not tell any user, and a diagnostic tool may read who owns an interface; a
//! journal directory that group or others may write is refused, since start-up acts on its
//! files. A journal is JSON holding the format version, the owner (its pid and its start
//! time, field 22 of `/proc/<pid>/stat`, so a reused pid does not pass for it), the
//! interface's name, index and network namespace, the handle of our root qdisc, and the
//! previous root qdisc as the hex of its netlink message (`struct tcmsg` and attributes,
//! exactly what is sent to restore it), or `null` for the kernel's default. Classes and
//! filters are not listed: they all hang under our root qdisc, and deleting (or replacing)
//! it removes them. A journal is written atomically (temporary file, fsync, rename) and
//! removed by a [`shutdown`](Enforcer::shutdown) once the interface is restored; a failed
//! restore keeps it, for a later start to retry.
//!
//! # Start-up
//!
//! Start-ups in one namespace take turns (an `flock` on its journal directory). For each
//! interface:
//!
//! * a journal whose owner runs — the pid exists, is no zombie and started at the recorded
//!   time — and is another process, or another live enforcer of this one: refused with
//!   [`EnforceError::InUse`], nothing touched;
//! * a journal whose owner is gone (killed, crashed, or an enforcer of this process dropped
//!   without shutdown): its tree, if still at the root of the same interface, is replaced
//!   by the recorded previous qdisc (or deleted, for the kernel default), the journal
//!   removed, and the start goes on as a fresh one;
//! * no journal but a root qdisc with our handle: refused with [`EnforceError::Unowned`],
//!   nothing touched — nothing proves it is an orphan (it may be a live process's that uses
//!   another state directory); `tc qdisc del dev <ifname> root` clears it by hand.
//!
//! Library users embedding an agent get the same protection: a second process on the same
//! interface is refused. The state directory must be writable, which the CAP_NET_ADMIN the
//! backend needs anyway usually goes with. Owners are pids of the journal's pid namespace:
//! processes in different pid namespaces should not share a state directory.

use super::DEFAULT_STATE_DIR;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, Nla, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use rtnetlink::packet_route::RouteNetlinkMessage;

use self::journal::{DirectoryLock, Journal, Owner};
use super::{Applied, EnforceError, Enforcer};
use crate::flow::{Rule, RuleId};
use crate::policy::InterfaceSpec;

mod journal;

/// Major number of the root qdisc qtoq installs (`7174:` — "qt"). On start-up, a root qdisc
/// with this handle is removed only when a journal proves its owner is gone (see the module
/// docs).
pub const QDISC_MAJOR: u16 = 0x7174;
/// Handle of the root qdisc qtoq installs.
const ROOT_HANDLE: TcHandle = TcHandle {
    major: QDISC_MAJOR,
    minor: 0,
};
/// Minor of the root class.
const ROOT_MINOR: u16 = 1;
/// Minor of the best-effort (default) class.
const BEST_EFFORT_MINOR: u16 = 2;
/// First minor given to a reservation's class.
pub const CLASS_MINOR_FIRST: u16 = 0x1000;
/// Last minor given to a reservation's class.
pub const CLASS_MINOR_LAST: u16 = 0xfffe;

const TCA_OPTIONS: u16 = 2;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
const TCA_U32_CLASSID: u16 = 1;
const TCA_U32_SEL: u16 = 5;
const TC_U32_TERMINAL: u8 = 1;
const TC_LINKLAYER_ETHERNET: u8 = 1;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// Bytes of link-layer framing per packet (Ethernet).
const LINK_OVERHEAD: u64 = super::LINK_OVERHEAD;
/// HTB's time unit: 64 ns ("psched ticks").
const PSCHED_TICK_NS: u128 = 64;

/// The root qdisc an interface had before qtoq replaced it.
#[derive(Debug, Clone)]
struct SavedQdisc {
    handle: TcHandle,
    attributes: Vec<TcAttribute>,
}

impl SavedQdisc {
    /// The request body that puts it back at the root of `ifindex`.
    fn message(&self, ifindex: i32) -> TcMessage {
        let mut qdisc = TcMessage::with_index(ifindex);
        qdisc.header.parent = TcHandle::ROOT;
        qdisc.header.handle = self.handle;
        qdisc.attributes = self.attributes.clone();
        qdisc
    }
}

#[derive(Debug)]
struct Prepared {
    ifindex: i32,
    /// `None`: the kernel's default qdisc, restored by deleting ours.
    previous: Option<SavedQdisc>,
    minors: BTreeSet<u16>,
    reserved: u64,
}

#[derive(Debug)]
struct TcInterface {
    spec: InterfaceSpec,
    capacity: u64,
    prepared: Option<Prepared>,
    /// The journal this enforcer claimed (see `journal::claim`); released on drop.
    journal: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
struct Installed {
    interface: usize,
    minor: u16,
    rate: u64,
    ethertype: u16,
}

/// HTB + u32 enforcement over netlink (cargo feature `tc`; needs CAP_NET_ADMIN).
///
/// On creation it replaces the root qdisc of every declared interface with an HTB tree (see
/// the module docs), after journaling the change and undoing what a dead owner's journal
/// records; interfaces that a live process manages, or that carry a qtoq tree no journal
/// accounts for, are refused. Each installed rule gets an HTB class with `rate` = the
/// reserved rate scaled up by the header bytes of M-sized packets (qtoq rates are
/// application bytes/s, HTB counts Ethernet frames: ×1514/1448 for TCP over IPv4 with
/// M = 1500), `ceil` = the peak rate or the capacity (traffic beyond the reservation borrows
/// like best effort, as Controlled-Load asks), `burst` = the bucket, and a u32 filter on the
/// flow's 5-tuple (IPv4 and IPv6 without extension headers; IPv4 options are not expected).
/// [`Enforcer::shutdown`] puts the previous root qdisc back in place of the tree and removes
/// the journals. Dropped without shutdown, the enforcer leaves tree and journals behind; the
/// next enforcer on those interfaces restores them — one of this process, or of any process
/// once this one has exited (until then, other processes are refused).
///
/// The netlink socket belongs to the network namespace of the thread that creates the
/// enforcer (see [`enter_network_namespace`](super::enter_network_namespace)), and so do the
/// journals.
#[derive(Debug)]
pub struct TcEnforcer {
    handle: rtnetlink::Handle,
    interfaces: Vec<TcInterface>,
    installed: HashMap<RuleId, Installed>,
    /// This process, as journals record it.
    owner: Owner,
    /// Inode of the netlink socket's network namespace.
    netns: u64,
    /// This namespace's journal directory (canonical, so claims compare equal).
    directory: PathBuf,
}

impl Drop for TcEnforcer {
    fn drop(&mut self) {
        // Dropped without a successful shutdown, the journals stay on disk: a later enforcer
        // of this process then treats them as a dead owner's and restores the interfaces.
        for interface in &mut self.interfaces {
            if let Some(path) = interface.journal.take() {
                journal::release(&path);
            }
        }
    }
}

fn state_error(operation: &'static str, path: &Path, source: io::Error) -> EnforceError {
    EnforceError::State {
        operation,
        path: path.to_owned(),
        source,
    }
}

fn handle_u32(handle: TcHandle) -> u32 {
    (u32::from(handle.major) << 16) | u32::from(handle.minor)
}

fn io_error(operation: &'static str, source: io::Error) -> EnforceError {
    if source.raw_os_error() == Some(libc::EPERM)
        || source.kind() == io::ErrorKind::PermissionDenied
    {
        EnforceError::PermissionDenied {
            operation,
            needs: "CAP_NET_ADMIN",
        }
    } else {
        EnforceError::Kernel { operation, source }
    }
}

fn netlink_error(operation: &'static str, error: rtnetlink::Error) -> EnforceError {
    match error {
        rtnetlink::Error::NetlinkError(msg) => io_error(operation, msg.to_io()),
        other => io_error(operation, io::Error::other(other.to_string())),
    }
}

fn is_gone(error: &EnforceError) -> bool {
    matches!(error, EnforceError::Kernel { source, .. }
        if matches!(source.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENODEV)))
}

impl TcEnforcer {
    /// [`with_state_dir`](Self::with_state_dir) with
    /// [`DEFAULT_STATE_DIR`] (`/run/qtoq`).
    ///
    /// # Errors
    ///
    /// As [`with_state_dir`](Self::with_state_dir).
    pub async fn new(interfaces: &[InterfaceSpec]) -> Result<Self, EnforceError> {
        Self::with_state_dir(interfaces, DEFAULT_STATE_DIR).await
    }

    /// Opens a netlink connection (on the current Tokio runtime) and installs the HTB tree on
    /// every interface in `interfaces`, journaling each one under `state_dir` first; a dead
    /// owner's journal is applied (its interface restored) on the way. See the module docs
    /// for the journal and the start-up rules.
    ///
    /// # Errors
    ///
    /// [`EnforceError::InUse`] when a live qtoq process (or another enforcer of this one)
    /// manages an interface, [`EnforceError::Unowned`] when an interface carries a qtoq tree
    /// without a journal, [`EnforceError::State`] when the journal directory cannot be created
    /// or a journal cannot be read, parsed or written; [`EnforceError::PermissionDenied`]
    /// without CAP_NET_ADMIN, [`EnforceError::Kernel`] when an interface does not exist or
    /// the kernel refuses the tree, [`EnforceError::Unsupported`] outside a Tokio runtime or
    /// for an interface without a usable capacity or name. Nothing is left changed: trees
    /// already installed are removed again (a dead owner's interface stays restored).
    pub async fn with_state_dir(
        interfaces: &[InterfaceSpec],
        state_dir: impl AsRef<Path>,
    ) -> Result<Self, EnforceError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EnforceError::Unsupported(
                "the tc backend must be created inside a Tokio runtime".into(),
            ));
        }
        let mut list = Vec::new();
        for spec in interfaces {
            if !(spec.capacity.is_finite() && spec.capacity >= 1.0) {
                return Err(EnforceError::Unsupported(format!(
                    "interface {} has no usable capacity",
                    spec.name
                )));
            }
            // The name becomes a file name.
            if spec.name.is_empty()
                || spec.name.contains('/')
                || spec.name == "."
                || spec.name == ".."
            {
                return Err(EnforceError::Unsupported(format!(
                    "{:?} is not an interface name",
                    spec.name
                )));
            }
            list.push(TcInterface {
                spec: spec.clone(),
                capacity: spec.capacity as u64,
                prepared: None,
                journal: None,
            });
        }
        // Read on this thread, before the socket is opened on it: the socket talks to this
        // thread's namespace, and the journals are kept per namespace.
        let netns = journal::current_netns()
            .map_err(|e| state_error("read", Path::new("/proc/thread-self/ns/net"), e))?;
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| io_error("open rtnetlink socket", e))?;
        tokio::spawn(connection);
        let owner =
            Owner::current().map_err(|e| state_error("read", Path::new("/proc/self/stat"), e))?;
        let directory = journal::directory(state_dir.as_ref(), netns);
        // Serialises start-ups on this namespace: one at a time judges and takes journals.
        let lock = DirectoryLock::acquire(&directory)
            .await
            .map_err(|e| state_error("create and lock the state directory", &directory, e))?;
        let directory = std::fs::canonicalize(&directory)
            .map_err(|e| state_error("resolve the state directory", &directory, e))?;
        let mut enforcer = TcEnforcer {
            handle,
            interfaces: list,
            installed: HashMap::new(),
            owner,
            netns,
            directory,
        };
        for index in 0..enforcer.interfaces.len() {
            if let Err(e) = enforcer.prepare(index).await {
                if let Err(undo) = enforcer.shutdown().await {
                    tracing::warn!(error = %undo, "could not undo partial tc setup");
                }
                // Shutdown could not prune the directory while we held its lock.
                drop(lock);
                journal::prune(&enforcer.directory);
                return Err(e);
            }
        }
        drop(lock);
        Ok(enforcer)
    }

    /// Sends one request and waits for its acknowledgement.
    async fn ack(
        &mut self,
        operation: &'static str,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(), EnforceError> {
        let mut request = NetlinkMessage::from(message);
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        let mut responses = self
            .handle
            .request(request)
            .map_err(|e| netlink_error(operation, e))?;
        while let Some(response) = responses.next().await {
            if let NetlinkPayload::Error(err) = response.payload {
                if err.code.is_some() {
                    return Err(io_error(operation, err.to_io()));
                }
            }
        }
        Ok(())
    }

    /// Dumps the root-level qdiscs of `ifindex`.
    async fn root_qdisc(&mut self, ifindex: i32) -> Result<Option<TcMessage>, EnforceError> {
        let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetQueueDiscipline(
            TcMessage::with_index(ifindex),
        ));
        request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        let mut responses = self
            .handle
            .request(request)
            .map_err(|e| netlink_error("dump qdiscs", e))?;
        let mut root = None;
        while let Some(response) = responses.next().await {
            match response.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewQueueDiscipline(m))
                    if m.header.index == ifindex && m.header.parent == TcHandle::ROOT =>
                {
                    root = Some(m);
                }
                NetlinkPayload::Error(err) if err.code.is_some() => {
                    return Err(io_error("dump qdiscs", err.to_io()));
                }
                _ => {}
            }
        }
        Ok(root)
    }

    async fn ifindex(&mut self, name: &str) -> Result<i32, EnforceError> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(Some(link)) => i32::try_from(link.header.index).map_err(|_| {
                EnforceError::Unsupported(format!("interface {name} has an out-of-range index"))
            }),
            Ok(None) => Err(io_error(
                "look up interface",
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no interface named {name}"),
                ),
            )),
            Err(e) => Err(netlink_error("look up interface", e)),
        }
    }

    /// Replaces the interface's root qdisc with the qtoq HTB tree, journaled first.
    async fn prepare(&mut self, index: usize) -> Result<(), EnforceError> {
        let name = self.interfaces[index].spec.name.clone();
        let capacity = self.interfaces[index].capacity;
        let ifindex = self.ifindex(&name).await?;
        let path = journal::path(&self.directory, &name);
        if !journal::claim(&path) {
            return Err(EnforceError::InUse {
                interface: name,
                pid: self.owner.pid,
                journal: path,
            });
        }
        self.interfaces[index].journal = Some(path.clone());
        self.recover(&name, ifindex, &path).await?;
        let current = self.root_qdisc(ifindex).await?;
        if current
            .as_ref()
            .is_some_and(|m| m.header.handle.major == QDISC_MAJOR)
        {
            // Without a journal nothing proves the tree is an orphan: it may be a live
            // process's whose journal lives elsewhere (another state directory).
            return Err(EnforceError::Unowned {
                interface: name,
                journal: path,
            });
        }
        let previous = current.as_ref().and_then(saved);
        let record = Journal::new(
            self.owner,
            &name,
            ifindex,
            self.netns,
            handle_u32(ROOT_HANDLE),
            previous.as_ref().map(|p| p.message(ifindex)).as_ref(),
        );
        // Write-ahead: the journal is on disk before the kernel changes.
        journal::write(&path, &record).map_err(|e| state_error("write the journal", &path, e))?;
        let mut qdisc = TcMessage::with_index(ifindex);
        qdisc.header.parent = TcHandle::ROOT;
        qdisc.header.handle = ROOT_HANDLE;
        qdisc.attributes.push(TcAttribute::Kind("htb".into()));
        qdisc.attributes.push(TcAttribute::Options(vec![raw(
            TCA_HTB_INIT,
            htb_glob(BEST_EFFORT_MINOR),
        )]));
        if let Err(e) = self
            .ack(
                "install htb root qdisc",
                RouteNetlinkMessage::NewQueueDiscipline(qdisc),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            .await
        {
            // The kernel refused the replace, so nothing changed: nothing to journal.
            if let Err(undo) = journal::remove(&path) {
                tracing::warn!(journal = %path.display(), error = %undo,
                    "could not remove the journal of a tree never installed");
            }
            return Err(e);
        }
        self.interfaces[index].prepared = Some(Prepared {
            ifindex,
            previous,
            minors: BTreeSet::new(),
            reserved: 0,
        });
        let root = HtbClass::new(capacity, capacity, burst_for(capacity), 0);
        self.put_class(ifindex, ROOT_MINOR, 0, &root, true).await?;
        let best_effort = HtbClass::new(capacity, capacity, burst_for(capacity), 1);
        self.put_class(ifindex, BEST_EFFORT_MINOR, ROOT_MINOR, &best_effort, true)
            .await?;
        tracing::info!(interface = %name, capacity, journal = %path.display(),
            "tc htb tree installed");
        Ok(())
    }

    /// Applies the journal at `path`, if any: refuses when its owner lives; when it is gone,
    /// restores the root qdisc it replaced (if its tree is still there) and removes the
    /// journal.
    async fn recover(&mut self, name: &str, ifindex: i32, path: &Path) -> Result<(), EnforceError> {
        let record = match journal::read(path) {
            Ok(None) => return Ok(()),
            Ok(Some(Ok(record))) => record,
            Ok(Some(Err(why))) => {
                return Err(state_error(
                    "parse the journal",
                    path,
                    io::Error::new(io::ErrorKind::InvalidData, why),
                ))
            }
            Err(e) => return Err(state_error("read the journal", path, e)),
        };
        let owner = record.owner();
        // A journal naming this process that no live enforcer claims (the claim above
        // succeeded) belongs to one dropped without shutdown: as good as dead.
        if owner != self.owner && owner.is_alive() {
            return Err(EnforceError::InUse {
                interface: name.to_owned(),
                pid: owner.pid,
                journal: path.to_owned(),
            });
        }
        let current = self.root_qdisc(ifindex).await?;
        // Only the dead owner's own tree is undone: on a re-created interface (another
        // index), or when someone replaced the tree since, nothing of it is left.
        let theirs = record.ifindex == ifindex
            && current
                .as_ref()
                .is_some_and(|m| handle_u32(m.header.handle) == record.root_handle);
        if theirs {
            let previous = record.previous_message().map_err(|why| {
                state_error(
                    "parse the journal",
                    path,
                    io::Error::new(io::ErrorKind::InvalidData, why),
                )
            })?;
            self.restore(ifindex, previous.as_ref().and_then(saved))
                .await?;
            tracing::info!(interface = %name, pid = record.pid, journal = %path.display(),
                "restored the root qdisc a qtoq process that is gone had replaced");
        } else {
            tracing::info!(interface = %name, pid = record.pid, journal = %path.display(),
                "removing the journal of a qtoq process that is gone: none of its tc tree is left");
        }
        journal::remove(path).map_err(|e| state_error("remove the journal", path, e))
    }

    /// Puts `previous` back at the root of `ifindex` in place of the qtoq tree (whose
    /// classes and filters go with it).
    async fn restore(
        &mut self,
        ifindex: i32,
        previous: Option<SavedQdisc>,
    ) -> Result<(), EnforceError> {
        match previous {
            // One replace grafts the previous qdisc and destroys ours: no moment with neither.
            Some(previous) => {
                self.ack(
                    "restore previous root qdisc",
                    RouteNetlinkMessage::NewQueueDiscipline(previous.message(ifindex)),
                    NLM_F_CREATE | NLM_F_REPLACE,
                )
                .await
            }
            // The kernel's default comes back once ours is deleted.
            None => match self.delete_root(ifindex).await {
                Err(e) if is_gone(&e) => Ok(()),
                other => other,
            },
        }
    }

    async fn delete_root(&mut self, ifindex: i32) -> Result<(), EnforceError> {
        let mut qdisc = TcMessage::with_index(ifindex);
        qdisc.header.parent = TcHandle::ROOT;
        qdisc.header.handle = ROOT_HANDLE;
        self.ack(
            "delete htb root qdisc",
            RouteNetlinkMessage::DelQueueDiscipline(qdisc),
            0,
        )
        .await
    }

    async fn put_class(
        &mut self,
        ifindex: i32,
        minor: u16,
        parent_minor: u16,
        class: &HtbClass,
        create: bool,
    ) -> Result<(), EnforceError> {
        let mut msg = TcMessage::with_index(ifindex);
        msg.header.handle = TcHandle {
            major: QDISC_MAJOR,
            minor,
        };
        msg.header.parent = TcHandle {
            major: QDISC_MAJOR,
            minor: parent_minor,
        };
        msg.attributes.push(TcAttribute::Kind("htb".into()));
        msg.attributes.push(TcAttribute::Options(class.options()));
        let flags = if create { NLM_F_CREATE | NLM_F_EXCL } else { 0 };
        let operation = if create {
            "add htb class"
        } else {
            "change htb class"
        };
        self.ack(operation, RouteNetlinkMessage::NewTrafficClass(msg), flags)
            .await
    }

    async fn delete_class(&mut self, ifindex: i32, minor: u16) -> Result<(), EnforceError> {
        let mut msg = TcMessage::with_index(ifindex);
        msg.header.handle = TcHandle {
            major: QDISC_MAJOR,
            minor,
        };
        msg.header.parent = TcHandle {
            major: QDISC_MAJOR,
            minor: ROOT_MINOR,
        };
        self.ack(
            "delete htb class",
            RouteNetlinkMessage::DelTrafficClass(msg),
            0,
        )
        .await
    }

    fn filter_message(ifindex: i32, priority: u16, ethertype: u16) -> TcMessage {
        let mut msg = TcMessage::with_index(ifindex);
        msg.header.parent = TcHandle {
            major: QDISC_MAJOR,
            minor: 0,
        };
        // tcm_info: priority in the upper half, protocol (network order) in the lower.
        msg.header.info = (u32::from(priority) << 16) | u32::from(ethertype.to_be());
        msg
    }

    async fn add_filter(
        &mut self,
        ifindex: i32,
        minor: u16,
        rule: &Rule,
    ) -> Result<u16, EnforceError> {
        let (ethertype, selector) =
            u32_selector(rule.flow.sender, rule.flow.receiver, rule.flow.protocol);
        let mut msg = Self::filter_message(ifindex, minor, ethertype);
        msg.attributes.push(TcAttribute::Kind("u32".into()));
        let classid = (u32::from(QDISC_MAJOR) << 16) | u32::from(minor);
        msg.attributes.push(TcAttribute::Options(vec![
            raw(TCA_U32_CLASSID, classid.to_ne_bytes().to_vec()),
            raw(TCA_U32_SEL, selector),
        ]));
        self.ack(
            "add u32 filter",
            RouteNetlinkMessage::NewTrafficFilter(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await?;
        Ok(ethertype)
    }

    async fn delete_filter(
        &mut self,
        ifindex: i32,
        minor: u16,
        ethertype: u16,
    ) -> Result<(), EnforceError> {
        let mut msg = Self::filter_message(ifindex, minor, ethertype);
        msg.attributes.push(TcAttribute::Kind("u32".into()));
        self.ack(
            "delete u32 filter",
            RouteNetlinkMessage::DelTrafficFilter(msg),
            0,
        )
        .await
    }

    /// Re-rates the best-effort class to what the reservations leave (at least 1%).
    async fn resize_best_effort(
        &mut self,
        index: usize,
        reserved: u64,
    ) -> Result<(), EnforceError> {
        let capacity = self.interfaces[index].capacity;
        let Some(ifindex) = self.interfaces[index].prepared.as_ref().map(|p| p.ifindex) else {
            return Ok(());
        };
        let rate = capacity.saturating_sub(reserved).max(capacity / 100).max(1);
        let class = HtbClass::new(rate, capacity, burst_for(capacity), 1);
        self.put_class(ifindex, BEST_EFFORT_MINOR, ROOT_MINOR, &class, false)
            .await?;
        if let Some(p) = self.interfaces[index].prepared.as_mut() {
            p.reserved = reserved;
        }
        Ok(())
    }

    /// The declared interface the flow leaves through: the one holding the sender's address
    /// (kernel addresses first, then the declared `addresses`), or the only one declared.
    async fn interface_for(&mut self, sender: SocketAddr) -> Result<usize, EnforceError> {
        let ip = canonical(sender.ip());
        let mut addresses = self.handle.address().get().execute();
        let mut owner = None;
        while let Some(msg) = addresses
            .try_next()
            .await
            .map_err(|e| netlink_error("dump addresses", e))?
        {
            let has = msg.attributes.iter().any(|a| {
                matches!(a, AddressAttribute::Address(x) | AddressAttribute::Local(x) if canonical(*x) == ip)
            });
            if has {
                owner = Some(msg.header.index);
            }
        }
        let found = self.interfaces.iter().position(|i| {
            i.prepared
                .as_ref()
                .is_some_and(|p| owner.is_some_and(|o| i64::from(o) == i64::from(p.ifindex)))
        });
        let found = found
            .or_else(|| {
                self.interfaces
                    .iter()
                    .position(|i| i.spec.addresses.iter().any(|c| c.contains(ip)))
            })
            .or((self.interfaces.len() == 1).then_some(0));
        found.ok_or_else(|| {
            EnforceError::Unsupported(format!(
                "no declared interface carries traffic from {ip}; declare it with [[interface]]"
            ))
        })
    }

    fn class_for(rule: &Rule, capacity: u64) -> Result<HtbClass, EnforceError> {
        let spec = &rule.flowspec;
        let tspec = spec.tspec();
        let reserved = f64::from(spec.reserved_rate());
        if !(reserved.is_finite() && reserved >= 1.0) {
            return Err(EnforceError::Unsupported(format!(
                "reserved rate {reserved} of {} cannot be shaped",
                rule.flow
            )));
        }
        // HTB counts whole Ethernet frames; qtoq rates are application bytes/s.
        let max_packet = u64::from(tspec.max_packet.clamp(576, 65_535));
        let rate = super::wire_rate(rule).min(u64::MAX as f64) as u64;
        let peak = f64::from(tspec.peak);
        let ceil = if peak.is_finite() && peak >= reserved {
            (peak as u64).clamp(rate, capacity.max(rate))
        } else {
            capacity.max(rate)
        };
        let bucket = f64::from(tspec.bucket);
        let burst = if bucket.is_finite() && bucket > 0.0 {
            (bucket as u64).max(2 * (max_packet + LINK_OVERHEAD))
        } else {
            burst_for(rate)
        };
        Ok(HtbClass::new(rate, ceil, burst, 1))
    }

    async fn install_rule(&mut self, rule: &Rule) -> Result<Applied, EnforceError> {
        let index = self.interface_for(rule.flow.sender).await?;
        let capacity = self.interfaces[index].capacity;
        let class = Self::class_for(rule, capacity)?;
        let Some(prepared) = self.interfaces[index].prepared.as_mut() else {
            return Err(EnforceError::Unsupported(
                "interface is not prepared".into(),
            ));
        };
        let ifindex = prepared.ifindex;
        let minor = (CLASS_MINOR_FIRST..=CLASS_MINOR_LAST)
            .find(|m| !prepared.minors.contains(m))
            .ok_or_else(|| EnforceError::Unsupported("no free tc class id left".into()))?;
        let old_reserved = prepared.reserved;
        let reserved = old_reserved.saturating_add(class.rate);
        self.resize_best_effort(index, reserved).await?;
        if let Err(e) = self
            .put_class(ifindex, minor, ROOT_MINOR, &class, true)
            .await
        {
            self.undo_resize(index, old_reserved).await;
            return Err(e);
        }
        let ethertype = match self.add_filter(ifindex, minor, rule).await {
            Ok(ethertype) => ethertype,
            Err(e) => {
                if let Err(undo) = self.delete_class(ifindex, minor).await {
                    tracing::warn!(error = %undo, "could not remove class after failed filter");
                }
                self.undo_resize(index, old_reserved).await;
                return Err(e);
            }
        };
        if let Some(p) = self.interfaces[index].prepared.as_mut() {
            p.minors.insert(minor);
        }
        self.installed.insert(
            rule.id,
            Installed {
                interface: index,
                minor,
                rate: class.rate,
                ethertype,
            },
        );
        let summary = format!(
            "htb {QDISC_MAJOR:x}:{minor:x} on {} rate {}B/s ceil {}B/s burst {}B",
            self.interfaces[index].spec.name, class.rate, class.ceil, class.burst
        );
        tracing::debug!(rule = %rule.id, flow = %rule.flow, %summary, "tc rule installed");
        Ok(Applied { summary })
    }

    async fn undo_resize(&mut self, index: usize, reserved: u64) {
        if let Err(e) = self.resize_best_effort(index, reserved).await {
            tracing::warn!(error = %e, "could not restore the best-effort class rate");
        }
    }
}

/// The root qdisc worth restoring, or `None` for the kernel's default (handle `0:`).
fn saved(message: &TcMessage) -> Option<SavedQdisc> {
    if message.header.handle.major == 0 {
        return None;
    }
    let attributes = message
        .attributes
        .iter()
        .filter_map(|a| match a {
            TcAttribute::Kind(k) => Some(TcAttribute::Kind(k.clone())),
            // Options of kinds netlink-packet-route does not know come back as one opaque
            // attribute holding the whole TCA_OPTIONS: re-emit it unwrapped.
            TcAttribute::Options(options) => match options.as_slice() {
                [TcOption::Other(nla)] if nla.kind() == TCA_OPTIONS => {
                    let mut value = vec![0; nla.value_len()];
                    nla.emit_value(&mut value);
                    Some(TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, value)))
                }
                _ => Some(TcAttribute::Options(options.clone())),
            },
            _ => None,
        })
        .collect();
    Some(SavedQdisc {
        handle: message.header.handle,
        attributes,
    })
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn raw(kind: u16, value: Vec<u8>) -> TcOption {
    TcOption::Other(DefaultNla::new(kind, value))
}

/// tc's default burst: one timer tick (1 ms) at `rate` plus an MTU-sized packet.
fn burst_for(rate: u64) -> u64 {
    rate / 1000 + 1600
}

/// `struct tc_htb_glob`: version 3, r2q 10, the default class.
fn htb_glob(default_minor: u16) -> Vec<u8> {
    [3u32, 10, u32::from(default_minor), 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct HtbClass {
    rate: u64,
    ceil: u64,
    burst: u64,
    prio: u32,
}

impl HtbClass {
    fn new(rate: u64, ceil: u64, burst: u64, prio: u32) -> Self {
        HtbClass {
            rate: rate.max(1),
            ceil: ceil.max(rate).max(1),
            burst,
            prio,
        }
    }

    /// `TCA_OPTIONS` of an HTB class: `tc_htb_opt`, plus 64-bit rates when needed.
    fn options(&self) -> Vec<TcOption> {
        let cburst = burst_for(self.ceil).max(self.burst.min(self.ceil));
        let quantum = (self.rate / 10).clamp(1514, 200_000) as u32;
        let mut opt = Vec::with_capacity(44);
        ratespec(&mut opt, self.rate);
        ratespec(&mut opt, self.ceil);
        for value in [
            ticks(self.burst, self.rate),
            ticks(cburst, self.ceil),
            quantum,
            0, // level: computed by the kernel
            self.prio,
        ] {
            opt.extend_from_slice(&value.to_ne_bytes());
        }
        let mut options = vec![raw(TCA_HTB_PARMS, opt)];
        if self.rate > u64::from(u32::MAX) {
            options.push(raw(TCA_HTB_RATE64, self.rate.to_ne_bytes().to_vec()));
        }
        if self.ceil > u64::from(u32::MAX) {
            options.push(raw(TCA_HTB_CEIL64, self.ceil.to_ne_bytes().to_vec()));
        }
        options
    }
}

/// `struct tc_ratespec` with a link layer set, so the kernel needs no rate table.
fn ratespec(out: &mut Vec<u8>, rate: u64) {
    out.push(0); // cell_log
    out.push(TC_LINKLAYER_ETHERNET);
    out.extend_from_slice(&0u16.to_ne_bytes()); // overhead
    out.extend_from_slice(&0i16.to_ne_bytes()); // cell_align
    out.extend_from_slice(&0u16.to_ne_bytes()); // mpu
    out.extend_from_slice(&(rate.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
}

/// Time to send `bytes` at `rate` bytes/s, in psched ticks.
fn ticks(bytes: u64, rate: u64) -> u32 {
    let ns = u128::from(bytes) * 1_000_000_000 / u128::from(rate.max(1));
    (ns / PSCHED_TICK_NS).min(u128::from(u32::MAX)) as u32
}

/// A u32 selector matching protocol, addresses and ports of one flow (offsets from the
/// network header: no IPv4 options, no IPv6 extension headers), and the ethertype it needs.
fn u32_selector(sender: SocketAddr, receiver: SocketAddr, protocol: u8) -> (u16, Vec<u8>) {
    // (mask, value, offset) with mask and value as the big-endian word at that offset.
    let mut keys: Vec<(u32, u32, i32)> = Vec::new();
    let ports = (u32::from(sender.port()) << 16) | u32::from(receiver.port());
    let ethertype = match (canonical(sender.ip()), canonical(receiver.ip())) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            keys.push((0x00ff_0000, u32::from(protocol) << 16, 8));
            keys.push((u32::MAX, u32::from(src), 12));
            keys.push((u32::MAX, u32::from(dst), 16));
            keys.push((u32::MAX, ports, 20));
            ETH_P_IP
        }
        (src, dst) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V6(v6) => v6,
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            };
            keys.push((0x0000_ff00, u32::from(protocol) << 8, 4));
            for (base, addr) in [(8, v6(src)), (24, v6(dst))] {
                for (i, word) in addr.octets().chunks_exact(4).enumerate() {
                    let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
                    keys.push((u32::MAX, word, base + 4 * i as i32));
                }
            }
            keys.push((u32::MAX, ports, 40));
            ETH_P_IPV6
        }
    };
    let mut sel = Vec::with_capacity(16 + 16 * keys.len());
    sel.push(TC_U32_TERMINAL); // flags
    sel.push(0); // offshift
    sel.push(keys.len() as u8); // nkeys
    sel.push(0); // pad
    sel.extend_from_slice(&0u16.to_ne_bytes()); // offmask
    sel.extend_from_slice(&0u16.to_ne_bytes()); // off
    sel.extend_from_slice(&0i16.to_ne_bytes()); // offoff
    sel.extend_from_slice(&0i16.to_ne_bytes()); // hoff
    sel.extend_from_slice(&0u32.to_ne_bytes()); // hmask
    for (mask, value, offset) in keys {
        sel.extend_from_slice(&mask.to_be_bytes());
        sel.extend_from_slice(&value.to_be_bytes());
        sel.extend_from_slice(&offset.to_ne_bytes());
        sel.extend_from_slice(&0i32.to_ne_bytes()); // offmask
    }
    (ethertype, sel)
}

#[async_trait::async_trait]
impl Enforcer for TcEnforcer {
    async fn install(
        &mut self,
        rule: &Rule,
        _socket: Option<BorrowedFd<'_>>,
    ) -> Result<Applied, EnforceError> {
        if self.installed.contains_key(&rule.id) {
            return self.modify(rule, None).await;
        }
        self.install_rule(rule).await
    }

    async fn modify(
        &mut self,
        rule: &Rule,
        _socket: Option<BorrowedFd<'_>>,
    ) -> Result<Applied, EnforceError> {
        let Some(installed) = self.installed.get(&rule.id).copied() else {
            return self.install_rule(rule).await;
        };
        let index = installed.interface;
        let capacity = self.interfaces[index].capacity;
        let class = Self::class_for(rule, capacity)?;
        let Some(prepared) = self.interfaces[index].prepared.as_ref() else {
            return Err(EnforceError::Unsupported(
                "interface is not prepared".into(),
            ));
        };
        let ifindex = prepared.ifindex;
        let old_reserved = prepared.reserved;
        let reserved = old_reserved - installed.rate.min(old_reserved) + class.rate;
        // Shrink best effort first when growing, last when shrinking: never oversubscribe.
        if class.rate > installed.rate {
            self.resize_best_effort(index, reserved).await?;
        }
        if let Err(e) = self
            .put_class(ifindex, installed.minor, ROOT_MINOR, &class, false)
            .await
        {
            self.undo_resize(index, old_reserved).await;
            return Err(e);
        }
        if class.rate <= installed.rate {
            self.undo_resize(index, reserved).await;
        }
        if let Some(entry) = self.installed.get_mut(&rule.id) {
            entry.rate = class.rate;
        }
        Ok(Applied {
            summary: format!(
                "htb {QDISC_MAJOR:x}:{:x} rate {}B/s ceil {}B/s burst {}B",
                installed.minor, class.rate, class.ceil, class.burst
            ),
        })
    }

    async fn remove(
        &mut self,
        id: RuleId,
        _socket: Option<BorrowedFd<'_>>,
    ) -> Result<(), EnforceError> {
        let Some(installed) = self.installed.remove(&id) else {
            return Ok(());
        };
        let index = installed.interface;
        let Some(ifindex) = self.interfaces[index].prepared.as_ref().map(|p| p.ifindex) else {
            return Ok(());
        };
        let result = async {
            match self
                .delete_filter(ifindex, installed.minor, installed.ethertype)
                .await
            {
                Err(e) if !is_gone(&e) => return Err(e),
                _ => {}
            }
            match self.delete_class(ifindex, installed.minor).await {
                Err(e) if !is_gone(&e) => return Err(e),
                _ => {}
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            // Keep the bookkeeping so a later remove or shutdown can retry.
            self.installed.insert(id, installed);
            return Err(e);
        }
        let reserved = self.interfaces[index].prepared.as_mut().map_or(0, |p| {
            p.minors.remove(&installed.minor);
            p.reserved.saturating_sub(installed.rate)
        });
        self.undo_resize(index, reserved).await;
        tracing::debug!(rule = %id, "tc rule removed");
        Ok(())
    }

    async fn shutdown(&mut self) -> Result<(), EnforceError> {
        self.installed.clear();
        let mut first_error = None;
        for index in 0..self.interfaces.len() {
            let Some(prepared) = self.interfaces[index].prepared.take() else {
                continue;
            };
            let name = self.interfaces[index].spec.name.clone();
            let result = self.restore(prepared.ifindex, prepared.previous).await;
            // Only a restored interface loses its journal: otherwise a later start retries.
            let result = match (result, self.interfaces[index].journal.take()) {
                (Ok(()), Some(path)) => {
                    let removed = journal::remove(&path)
                        .map_err(|e| state_error("remove the journal", &path, e));
                    journal::release(&path);
                    removed
                }
                (result, path) => {
                    self.interfaces[index].journal = path;
                    result
                }
            };
            match result {
                Ok(()) => {
                    tracing::info!(interface = %name, "tc tree removed, previous qdisc restored")
                }
                Err(e) => {
                    tracing::warn!(interface = %name, error = %e, "tc shutdown failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        journal::prune(&self.directory);
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_64ns_units() {
        // 1 MB at 1 MB/s is one second = 15 625 000 ticks of 64 ns.
        assert_eq!(ticks(1_000_000, 1_000_000), 15_625_000);
        assert_eq!(ticks(u64::MAX, 1), u32::MAX);
    }

    #[test]
    fn htb_options_layout() {
        let class = HtbClass::new(1_000_000, 2_500_000, 65_536, 1);
        let options = class.options();
        assert_eq!(options.len(), 1);
        assert_eq!(options[0].value_len(), 44);
        let big = HtbClass::new(5_000_000_000, 6_000_000_000, 100_000, 0);
        assert_eq!(big.options().len(), 3);
    }

    #[test]
    fn ipv4_selector_matches_the_five_tuple() {
        let (ethertype, sel) = u32_selector(
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:40000".parse().unwrap(),
            6,
        );
        assert_eq!(ethertype, ETH_P_IP);
        assert_eq!(sel[2], 4);
        assert_eq!(sel.len(), 16 + 4 * 16);
        // Second key: source address at offset 12.
        assert_eq!(&sel[32..40], &[0xff, 0xff, 0xff, 0xff, 10, 0, 0, 1]);
        assert_eq!(i32::from_ne_bytes(sel[40..44].try_into().unwrap()), 12);
        // Ports key: 5000 (0x1388) then 40000 (0x9c40).
        assert_eq!(&sel[68..72], &[0x13, 0x88, 0x9c, 0x40]);
    }

    #[test]
    fn ipv6_selector_has_ten_keys() {
        let (ethertype, sel) = u32_selector(
            "[2001:db8::1]:1".parse().unwrap(),
            "[2001:db8::2]:2".parse().unwrap(),
            6,
        );
        assert_eq!(ethertype, ETH_P_IPV6);
        assert_eq!(sel[2], 10);
        // Mapped IPv4 flows use the IPv4 layout.
        let (ethertype, _) = u32_selector(
            "[::ffff:10.0.0.1]:1".parse().unwrap(),
            "[::ffff:10.0.0.2]:2".parse().unwrap(),
            6,
        );
        assert_eq!(ethertype, ETH_P_IP);
    }

    #[test]
    fn reservation_class_adds_framing_and_borrows_to_capacity() {
        let rule = Rule {
            id: RuleId(1),
            flow: crate::flow::Flow {
                sender: "10.0.0.1:1".parse().unwrap(),
                receiver: "10.0.0.2:2".parse().unwrap(),
                protocol: 6,
            },
            flowspec: crate::wire::intserv::FlowSpec::ControlledLoad(
                crate::wire::intserv::TokenBucket::new(1_000_000.0, 65_536.0),
            ),
            dscp: None,
        };
        let class = TcEnforcer::class_for(&rule, 2_500_000).unwrap();
        // 1448 bytes of payload in every 1514-byte frame.
        assert_eq!(class.rate, 1_000_000 * 1514 / 1448);
        assert_eq!(class.ceil, 2_500_000);
        assert_eq!(class.burst, 65_536);
    }
}
