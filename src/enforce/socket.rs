//! The socket-option backend: DSCP, priority and pacing on the sender's own socket.

use std::collections::HashMap;
use std::io;
use std::os::fd::BorrowedFd;

use socket2::SockRef;

use super::{Applied, EnforceError, Enforcer};
use crate::flow::{Rule, RuleId};
use crate::sys;

/// `SO_PRIORITY` given to reserved flows by default: 6 (`TC_PRIO_INTERACTIVE`), the highest
/// value an unprivileged process may set; `pfifo_fast` puts it in its first band.
pub const DEFAULT_PRIORITY: u32 = 6;

/// The largest DSCP: the code point is the upper six bits of the TOS / traffic class byte.
const MAX_DSCP: u8 = 0x3f;

/// The QoS-relevant options of a socket, as read back from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketOptions {
    /// `IP_TOS` (IPv4 sockets and IPv6 sockets carrying IPv4-mapped traffic), DSCP << 2 | ECN.
    pub tos: Option<u32>,
    /// `IPV6_TCLASS` (IPv6 sockets only).
    pub tclass: Option<u32>,
    /// `SO_PRIORITY`.
    pub priority: u32,
    /// `SO_MAX_PACING_RATE` in bytes/s; `u64::MAX` = unlimited.
    pub max_pacing_rate: u64,
}

impl SocketOptions {
    /// Reads the options of `socket` with `getsockopt`.
    ///
    /// # Errors
    ///
    /// The OS error, e.g. when `socket` is not a socket.
    pub fn read(socket: BorrowedFd<'_>) -> io::Result<Self> {
        let sock = SockRef::from(&socket);
        let v6 = sock.local_addr()?.is_ipv6();
        Ok(SocketOptions {
            tos: match v6 {
                false => Some(sock.tos_v4()?),
                // Linux keeps IP_TOS on IPv6 sockets too (used for IPv4-mapped peers).
                true => sock.tos_v4().ok(),
            },
            tclass: if v6 { Some(sock.tclass_v6()?) } else { None },
            priority: sock.priority()?,
            max_pacing_rate: sys::max_pacing_rate(socket)?,
        })
    }

    /// Writes every option that is `Some`/set; stops at the first error.
    fn write(&self, socket: BorrowedFd<'_>) -> Result<(), EnforceError> {
        let sock = SockRef::from(&socket);
        if let Some(tos) = self.tos {
            sock.set_tos_v4(tos)
                .map_err(|e| kernel("setsockopt IP_TOS", e))?;
        }
        if let Some(tclass) = self.tclass {
            sock.set_tclass_v6(tclass)
                .map_err(|e| kernel("setsockopt IPV6_TCLASS", e))?;
        }
        sock.set_priority(self.priority)
            .map_err(|e| kernel("setsockopt SO_PRIORITY", e))?;
        sys::set_max_pacing_rate(socket, self.max_pacing_rate)
            .map_err(|e| kernel("setsockopt SO_MAX_PACING_RATE", e))
    }
}

fn kernel(operation: &'static str, source: io::Error) -> EnforceError {
    if source.kind() == io::ErrorKind::PermissionDenied {
        EnforceError::PermissionDenied {
            operation,
            needs: "CAP_NET_ADMIN",
        }
    } else {
        EnforceError::Kernel { operation, source }
    }
}

/// One installed rule: which socket it is on and what it wants there.
#[derive(Debug, Clone, Copy)]
struct Installed {
    /// `SO_COOKIE` of the socket: the same for every dup'd descriptor of it.
    socket: u64,
    /// The options this rule sets while it is the newest on its socket.
    wanted: SocketOptions,
}

/// One socket carrying rules.
#[derive(Debug, Clone)]
struct Marked {
    /// What the socket had before its first rule: restored when its last rule goes.
    original: SocketOptions,
    /// Its rules in install order; the last one's options are on the socket.
    rules: Vec<RuleId>,
}

/// Marks and paces the sender's socket: DSCP through `IP_TOS` / `IPV6_TCLASS`, `SO_PRIORITY`,
/// and `SO_MAX_PACING_RATE` at the reserved rate (as a [`wire_rate`](super::wire_rate), so
/// the application gets the reserved payload rate; Linux's `fq` qdisc or TCP's internal pacing
/// then keep the flow at its reservation).
///
/// Several rules may share one socket (whichever descriptor of it each is given: sockets are
/// told apart by `SO_COOKIE`). The socket's options from before its first rule are remembered
/// once; while rules are on it the *last installed* one's options apply (a [`modify`] of an
/// older rule is kept and takes effect when the newer ones are gone); removing a rule
/// re-applies the newest remaining one, and removing the last restores the originals.
///
/// [`modify`]: Enforcer::modify
///
/// Works without privileges for priorities 0-6; it only reaches the data *sender's* own
/// socket, so the agent hands it that socket (`install` without one is
/// [`EnforceError::Unsupported`]). It shapes the flow itself but cannot protect it from other
/// traffic: that is what the `tc` backend is for.
///
/// # Examples
///
/// ```
/// use qtoq::enforce::SocketEnforcer;
/// let enforcer = SocketEnforcer::new().with_priority(4);
/// # let _ = enforcer;
/// ```
#[derive(Debug)]
pub struct SocketEnforcer {
    priority: Option<u32>,
    pace: bool,
    installed: HashMap<RuleId, Installed>,
    sockets: HashMap<u64, Marked>,
}

impl Default for SocketEnforcer {
    fn default() -> Self {
        SocketEnforcer {
            priority: None,
            pace: true,
            installed: HashMap::new(),
            sockets: HashMap::new(),
        }
    }
}

impl SocketEnforcer {
    /// A socket backend with [`DEFAULT_PRIORITY`] and pacing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks (DSCP, priority) without pacing: for use beside the tc backend, which shapes
    /// (see [`Chain`](super::Chain)).
    pub fn without_pacing(mut self) -> Self {
        self.pace = false;
        self
    }

    /// Uses `priority` for `SO_PRIORITY` (values above 6 need CAP_NET_ADMIN).
    pub fn with_priority(mut self, priority: u32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Number of rules currently installed.
    pub fn installed_count(&self) -> usize {
        self.installed.len()
    }

    /// The options `rule` wants on a socket that currently has `base`.
    fn wanted(&self, rule: &Rule, base: &SocketOptions) -> SocketOptions {
        let with_dscp = |old: u32| match rule.dscp {
            // Keep the ECN bits the stack manages.
            Some(dscp) => (u32::from(dscp) << 2) | (old & 0x3),
            None => old,
        };
        // Pacing counts whole packets; the reservation is payload.
        let rate = super::wire_rate(rule);
        let pacing = if !self.pace {
            base.max_pacing_rate
        } else if rate.is_finite() && rate >= 1.0 {
            rate.min(u64::MAX as f64) as u64
        } else {
            sys::PACING_UNLIMITED
        };
        SocketOptions {
            tos: base.tos.map(with_dscp),
            tclass: base.tclass.map(with_dscp),
            priority: self.priority.unwrap_or(DEFAULT_PRIORITY),
            max_pacing_rate: pacing,
        }
    }

    fn apply(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
        modify: bool,
    ) -> Result<Applied, EnforceError> {
        let socket = socket.ok_or_else(|| {
            EnforceError::Unsupported(format!(
                "the socket backend needs the sending socket of {}",
                rule.flow
            ))
        })?;
        if let Some(dscp) = rule.dscp.filter(|&d| d > MAX_DSCP) {
            tracing::warn!(rule = %rule.id, dscp, "dscp out of range, rule refused");
            return Err(EnforceError::Unsupported(format!(
                "dscp {dscp} of rule {} is out of range: a DSCP is 6 bits (0-{MAX_DSCP})",
                rule.id
            )));
        }
        let cookie = sys::socket_cookie(socket).map_err(|e| kernel("getsockopt SO_COOKIE", e))?;
        let previous = self.installed.get(&rule.id).copied();
        if let Some(previous) = previous.filter(|p| p.socket != cookie) {
            return Err(EnforceError::Unsupported(format!(
                "rule {} is installed on another socket (cookie {}); remove it before \
                 installing it on this one",
                rule.id, previous.socket
            )));
        }
        let now = SocketOptions::read(socket).map_err(|e| kernel("getsockopt", e))?;
        let marked = self.sockets.get(&cookie);
        // Every rule builds on the untouched socket, never on another rule's options.
        let original = marked.map_or(now, |m| m.original);
        let wanted = self.wanted(rule, &original);
        // An older rule that is modified stays behind the newer ones (last installed wins).
        let shadowed = previous.is_some()
            && marked
                .and_then(|m| m.rules.last())
                .is_some_and(|&n| n != rule.id);
        if !shadowed {
            if let Err(e) = wanted.write(socket) {
                // Leave the socket as it was: the old rules' options, or untouched.
                if let Err(undo) = now.write(socket) {
                    tracing::warn!(rule = %rule.id, error = %undo, "could not restore socket options");
                }
                return Err(e);
            }
        }
        let marked = self.sockets.entry(cookie).or_insert_with(|| Marked {
            original,
            rules: Vec::new(),
        });
        if !marked.rules.contains(&rule.id) {
            marked.rules.push(rule.id);
        }
        self.installed.insert(
            rule.id,
            Installed {
                socket: cookie,
                wanted,
            },
        );
        let pacing = if wanted.max_pacing_rate == sys::PACING_UNLIMITED {
            "unlimited".to_string()
        } else {
            format!("{}B/s", wanted.max_pacing_rate)
        };
        let mut summary = format!(
            "dscp={} priority={} pacing={pacing}",
            rule.dscp.map_or("unchanged".to_string(), |d| d.to_string()),
            wanted.priority
        );
        if shadowed {
            summary.push_str(" (deferred: a newer rule on the socket applies)");
        }
        tracing::debug!(rule = %rule.id, flow = %rule.flow, %summary, modify, "socket options set");
        Ok(Applied { summary })
    }

    /// Unloads rule `id` (socket options are plain system calls: nothing to wait for).
    fn unload(&mut self, id: RuleId, socket: Option<BorrowedFd<'_>>) -> Result<(), EnforceError> {
        let Some(installed) = self.installed.remove(&id) else {
            return Ok(());
        };
        let Some(marked) = self.sockets.get_mut(&installed.socket) else {
            return Ok(());
        };
        let was_newest = marked.rules.last() == Some(&id);
        marked.rules.retain(|&r| r != id);
        // What the socket must carry now: the newest remaining rule's options, or the
        // originals once no rule is left; nothing changes when an older rule goes.
        let restore = match marked.rules.last() {
            None => {
                let original = marked.original;
                self.sockets.remove(&installed.socket);
                Some(original)
            }
            Some(newest) if was_newest => self.installed.get(newest).map(|n| n.wanted),
            Some(_) => None,
        };
        // Without the socket (already closed) there is nothing left to revert.
        if let (Some(options), Some(socket)) = (restore, socket) {
            options.write(socket)?;
            tracing::debug!(rule = %id, "socket options restored");
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Enforcer for SocketEnforcer {
    async fn install(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
    ) -> Result<Applied, EnforceError> {
        self.apply(rule, socket, false)
    }

    async fn modify(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
    ) -> Result<Applied, EnforceError> {
        self.apply(rule, socket, true)
    }

    async fn remove(
        &mut self,
        id: RuleId,
        socket: Option<BorrowedFd<'_>>,
    ) -> Result<(), EnforceError> {
        self.unload(id, socket)
    }

    async fn shutdown(&mut self) -> Result<(), EnforceError> {
        // The options live and die with their sockets; the agent removes rules of sockets
        // that are still open before it stops.
        self.installed.clear();
        self.sockets.clear();
        Ok(())
    }

    // Socket options are plain system calls: always done at once.
    fn install_now(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
    ) -> Option<Result<Applied, EnforceError>> {
        Some(self.apply(rule, socket, false))
    }

    fn modify_now(
        &mut self,
        rule: &Rule,
        socket: Option<BorrowedFd<'_>>,
    ) -> Option<Result<Applied, EnforceError>> {
        Some(self.apply(rule, socket, true))
    }

    fn remove_now(
        &mut self,
        id: RuleId,
        socket: Option<BorrowedFd<'_>>,
    ) -> Option<Result<(), EnforceError>> {
        Some(self.unload(id, socket))
    }
}
