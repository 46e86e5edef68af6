//! Enforcement backends: load, change and unload a [`Rule`] in the host's stack.
//!
//! The agent is written against the [`Enforcer`] trait. Backends:
//!
//! * [`SocketEnforcer`] (default, mostly unprivileged) — DSCP, `SO_PRIORITY` and
//!   `SO_MAX_PACING_RATE` on the data sender's socket;
//! * `TcEnforcer` (cargo feature `tc`, needs CAP_NET_ADMIN) — an HTB tree per declared
//!   interface with one class and one u32 filter per reservation, over netlink;
//! * [`Recording`] — records the calls, for tests;
//! * [`Chain`] — two backends together (tc shaping + socket marking).

use std::fmt;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};

use crate::flow::{Rule, RuleId};
use crate::wire::{ErrorCode, RsvpError};

mod chain;
mod socket;
#[cfg(feature = "tc")]
mod tc;

pub use chain::Chain;
pub use socket::{SocketEnforcer, SocketOptions, DEFAULT_PRIORITY};
#[cfg(feature = "tc")]
pub use tc::{TcEnforcer, CLASS_MINOR_FIRST, CLASS_MINOR_LAST, QDISC_MAJOR};

/// Where the host's QoS state lives: the tc backend's ownership journals (`<dir>/tc/…`),
/// qosd's lock and socket.
pub const DEFAULT_STATE_DIR: &str = "/run/qtoq";

/// Bytes of link-layer framing per packet that queueing disciplines count (Ethernet).
const LINK_OVERHEAD: u64 = 14;

/// The rate, in bytes/s *on the wire*, that carries `rule`'s reserved rate of application
/// payload.
///
/// qtoq rates are what the application moves (the API's bytes/s, the client's goodput),
/// while pacing and HTB count whole packets. With M-sized datagrams each packet carries
/// `M − IP − transport headers` bytes of payload in `M + 14` bytes of Ethernet frame, so the
/// wire rate is `r · (M + 14) / (M − headers)`: ×1514/1448 ≈ 1.046 for TCP over IPv4 with
/// M = 1500 (TCP counted with the timestamp option Linux sends). M is clamped to 576-65535.
pub fn wire_rate(rule: &Rule) -> f64 {
    let spec = &rule.flowspec;
    let max_packet = u64::from(spec.tspec().max_packet.clamp(576, 65_535));
    let ip = match rule.flow.sender.ip() {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => 40,
        _ => 20,
    };
    let transport = match rule.flow.protocol {
        crate::flow::IPPROTO_TCP => 32,
        17 => 8,
        _ => 0,
    };
    f64::from(spec.reserved_rate()) * (max_packet + LINK_OVERHEAD) as f64
        / (max_packet - ip - transport) as f64
}

/// Moves the calling *thread* into the network namespace at `path` (e.g.
/// `/run/netns/NAME`). Sockets and netlink connections the thread opens afterwards belong to
/// that namespace, and so do threads it spawns; sockets opened earlier stay where they were.
/// Used to run an agent, or a `TcEnforcer`'s netlink connection, inside a namespace.
///
/// # Errors
///
/// The OS error: no such namespace, or no CAP_SYS_ADMIN.
pub fn enter_network_namespace(path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let ns = std::fs::File::open(path)?;
    crate::sys::enter_network_namespace(ns.as_fd())
}

/// What a backend applied for a rule, for logs and inspection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// Readable summary, e.g. `"dscp=46 pacing=1000000B/s"` or `"htb 1:ff02 rate 8Mbit"`.
    pub summary: String,
}

/// Why a backend could not apply or remove a rule.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnforceError {
    /// The backend needs privileges the process lacks (e.g. CAP_NET_ADMIN for tc).
    #[error("{operation}: permission denied (needs {needs})")]
    PermissionDenied {
        /// What was attempted.
        operation: &'static str,
        /// The capability or privilege required.
        needs: &'static str,
    },
    /// The rule cannot be expressed by this backend (e.g. no socket for a socket backend).
    #[error("unsupported rule: {0}")]
    Unsupported(String),
    /// The kernel refused the operation.
    #[error("{operation}: {source}")]
    Kernel {
        /// What was attempted.
        operation: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another live qtoq process — or another enforcer of this one — manages the interface,
    /// as its journal says (tc backend).
    #[error(
        "interface {interface} is managed by qtoq process {pid} (journal {}); stop it first",
        journal.display()
    )]
    InUse {
        /// The interface.
        interface: String,
        /// The owner's pid.
        pid: u32,
        /// The journal naming the owner.
        journal: std::path::PathBuf,
    },
    /// The interface carries a qtoq tree (root qdisc `7174:`) that no journal accounts for,
    /// so nothing proves it is an orphan: it may be a live process's (tc backend).
    #[error(
        "interface {interface} has a qtoq tc tree (root qdisc 7174:) but no journal at {} says \
         whose; if no qtoq process uses it, remove it with `tc qdisc del dev {interface} root`",
        journal.display()
    )]
    Unowned {
        /// The interface.
        interface: String,
        /// Where its journal would be.
        journal: std::path::PathBuf,
    },
    /// The state directory, or a journal in it, could not be read or written (tc backend).
    #[error("{operation} {}: {source}", path.display())]
    State {
        /// What was attempted.
        operation: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// The error: from the OS, or `InvalidData` for a journal that does not parse.
        #[source]
        source: std::io::Error,
    },
}

impl EnforceError {
    /// The RSVP error this failure deserves, in the ResvErr and the events that report it:
    /// [`RsvpError::SERVICE_UNSUPPORTED`] (Traffic Control Error, 21/2) for rules the backend
    /// cannot express, [`ErrorCode::TRAFFIC_CONTROL_SYSTEM_ERROR`] (22, value 0) for kernel,
    /// privilege and ownership failures. The one place enforcer failures become RSVP errors.
    pub fn rsvp_error(&self) -> RsvpError {
        match self {
            EnforceError::Unsupported(_) => RsvpError::SERVICE_UNSUPPORTED,
            EnforceError::PermissionDenied { .. }
            | EnforceError::Kernel { .. }
            | EnforceError::InUse { .. }
            | EnforceError::Unowned { .. }
            | EnforceError::State { .. } => {
                RsvpError::new(ErrorCode::TRAFFIC_CONTROL_SYSTEM_ERROR, 0)
            }
        }
    }
}

/// A backend that loads rules into the stack.
///
/// The agent owns its enforcer and calls it from its task; `socket` is the connection's socket
/// when the agent has it (the data sender's socket for signaled sessions).
#[async_trait::async_trait]
pub trait Enforcer: Send + fmt::Debug {
    /// Loads a new rule.
    async fn install(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
    ) -> Result<Applied, EnforceError>;
    /// Changes an installed rule's parameters; on error the old rule stays in force.
    async fn modify(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
    ) -> Result<Applied, EnforceError>;
    /// Unloads a rule; unknown ids are not an error.
    async fn remove(
        &mut self,
        id: RuleId,
        socket: Option<BorrowedFd<'_>>,
    ) -> Result<(), EnforceError>;
    /// Removes everything this backend installed and restores what it replaced; called when
    /// the agent stops.
    async fn shutdown(&mut self) -> Result<(), EnforceError>;

    /// Loads a new rule at once, when the backend can without waiting (socket options can;
    /// netlink requests cannot): the agent then sets a reservation up within the application's
    /// own `accept`/`connect` instead of handing it to its task. `None` (the default) means
    /// "use [`install`](Self::install)"; nothing may have been applied then.
    fn install_now(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
    ) -> Option<Result<Applied, EnforceError>> {
        let _ = (rule, socket);
        None
    }

    /// [`modify`](Self::modify) at once, as [`install_now`](Self::install_now).
    fn modify_now(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
    ) -> Option<Result<Applied, EnforceError>> {
        let _ = (rule, socket);
        None
    }

    /// [`remove`](Self::remove) at once, as [`install_now`](Self::install_now).
    fn remove_now(
        &mut self,
        id: RuleId,
        socket: Option<BorrowedFd<'_>>,
    ) -> Option<Result<(), EnforceError>> {
        let _ = (id, socket);
        None
    }
}

#[async_trait::async_trait]
impl<E: Enforcer + ?Sized> Enforcer for Box<E> {
    async fn install(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
    ) -> Result<Applied, EnforceError> {
        (**self).install(rule, socket).await
    }
    async fn modify(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
    ) -> Result<Applied, EnforceError> {
        (**self).modify(rule, socket).await
    }
    async fn remove(
        &mut self,
        id: RuleId,
        socket: Option<BorrowedFd<'_>>,
    ) -> Result<(), EnforceError> {
        (**self).remove(id, socket).await
    }
    async fn shutdown(&mut self) -> Result<(), EnforceError> {
        (**self).shutdown().await
    }
    fn install_now(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
    ) -> Option<Result<Applied, EnforceError>> {
        (**self).install_now(rule, socket)
    }
    fn modify_now(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
    ) -> Option<Result<Applied, EnforceError>> {
        (**self).modify_now(rule, socket)
    }
    fn remove_now(
        &mut self,
        id: RuleId,
        socket: Option<BorrowedFd<'_>>,
    ) -> Option<Result<(), EnforceError>> {
        (**self).remove_now(id, socket)
    }
}

/// The backends a command line can name (`--enforcer socket|tc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnforcerKind {
    /// [`SocketEnforcer`]: marking and pacing on the sender's socket.
    Socket,
    /// `TcEnforcer` on the policy's interfaces, chained with a marking-only
    /// [`SocketEnforcer`] for the DSCP (feature `tc`).
    Tc,
}

/// A name that is not an [`EnforcerKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown enforcer `{name}`: use `socket` or `tc`")]
pub struct UnknownEnforcer {
    /// The name given.
    pub name: String,
}

impl std::str::FromStr for EnforcerKind {
    type Err = UnknownEnforcer;

    fn from_str(text: &str) -> Result<Self, UnknownEnforcer> {
        match text {
            "socket" => Ok(EnforcerKind::Socket),
            "tc" => Ok(EnforcerKind::Tc),
            other => Err(UnknownEnforcer {
                name: other.to_owned(),
            }),
        }
    }
}

impl EnforcerKind {
    /// Builds the backend; `interfaces` are the policy's declared interfaces (used by tc).
    ///
    /// # Errors
    ///
    /// [`EnforceError::Unsupported`] for `Tc` when the crate is built without the `tc`
    /// feature or no interface is declared; the tc backend's own errors otherwise.
    pub async fn build(
        self,
        interfaces: &[crate::policy::InterfaceSpec],
    ) -> Result<Box<dyn Enforcer>, EnforceError> {
        self.build_with_state_dir(interfaces, std::path::Path::new(DEFAULT_STATE_DIR))
            .await
    }

    /// As [`build`](Self::build), with the tc backend's ownership journal in `state_dir`
    /// (see [`TcEnforcer::with_state_dir`]) instead of [`DEFAULT_STATE_DIR`].
    ///
    /// # Errors
    ///
    /// As [`build`](Self::build).
    pub async fn build_with_state_dir(
        self,
        interfaces: &[crate::policy::InterfaceSpec],
        state_dir: &std::path::Path,
    ) -> Result<Box<dyn Enforcer>, EnforceError> {
        match self {
            EnforcerKind::Socket => Ok(Box::new(SocketEnforcer::new())),
            EnforcerKind::Tc => {
                if interfaces.is_empty() {
                    return Err(EnforceError::Unsupported(
                        "the tc enforcer needs at least one [[interface]] in the policy".into(),
                    ));
                }
                #[cfg(feature = "tc")]
                {
                    let tc = TcEnforcer::with_state_dir(interfaces, state_dir).await?;
                    Ok(Box::new(Chain::new(
                        tc,
                        SocketEnforcer::new().without_pacing(),
                    )))
                }
                #[cfg(not(feature = "tc"))]
                {
                    let _ = state_dir;
                    Err(EnforceError::Unsupported(
                        "qtoq was built without the `tc` feature".into(),
                    ))
                }
            }
        }
    }
}

/// One call recorded by [`Recording`].
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// `install(rule)`.
    Install(Rule),
    /// `modify(rule)`.
    Modify(Rule),
    /// `remove(id)`.
    Remove(RuleId),
    /// `shutdown()`.
    Shutdown,
}

/// An enforcer for tests: records every call and applies nothing.
///
/// Clones share the log, so a test keeps one clone and hands the other to the agent.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    log: Arc<Mutex<Vec<Recorded>>>,
}

impl Recording {
    /// A new, empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Recorded> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Ids of the rules installed and not yet removed.
    pub fn installed(&self) -> Vec<RuleId> {
        let mut live = Vec::new();
        for call in self.calls() {
            match call {
                Recorded::Install(rule) => live.push(rule.id),
                Recorded::Remove(id) => live.retain(|r| *r != id),
                Recorded::Modify(_) => {}
                Recorded::Shutdown => live.clear(),
            }
        }
        live
    }

    fn push(&self, call: Recorded) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
    }
}

#[async_trait::async_trait]
impl Enforcer for Recording {
    async fn install(
        &mut self,
        rule: &Rule,
        _socket: Option<BorrowedFd<'_>>,
    ) -> Result<Applied, EnforceError> {
        self.push(Recorded::Install(rule.clone()));
        Ok(Applied {
            summary: "recorded".into(),
        })
    }

    async fn modify(
        &mut self,
        rule: &Rule,
        _socket: Option<BorrowedFd<'_>>,
    ) -> Result<Applied, EnforceError> {
        self.push(Recorded::Modify(rule.clone()));
        Ok(Applied {
            summary: "recorded".into(),
        })
    }

    async fn remove(
        &mut self,
        id: RuleId,
        _socket: Option<BorrowedFd<'_>>,
    ) -> Result<(), EnforceError> {
        self.push(Recorded::Remove(id));
        Ok(())
    }

    async fn shutdown(&mut self) -> Result<(), EnforceError> {
        self.push(Recorded::Shutdown);
        Ok(())
    }
}
