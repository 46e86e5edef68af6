//! Enforcement backends: load, change and unload a [`Rule`] in the host's stack.
//!
//! CONTRACT NOTE (removed when implemented): the [`Enforcer`] trait, [`EnforceError`] and
//! [`Recording`] are the interface the agent is written against; backends (socket options,
//! Linux tc) are added beside them.

use std::fmt;
use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex};

use crate::flow::{Rule, RuleId};

/// What a backend applied for a rule, for logs and `qosctl`.
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
}

impl EnforceError {
    /// The RSVP ERROR_SPEC (code, value) this failure deserves: 21 (traffic control error)
    /// for rules the backend cannot express, 22 (traffic control system error) for kernel and
    /// privilege failures.
    pub fn rsvp_error(&self) -> (u8, u16) {
        match self {
            EnforceError::Unsupported(_) => (21, 2),
            EnforceError::PermissionDenied { .. } | EnforceError::Kernel { .. } => (22, 0),
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
