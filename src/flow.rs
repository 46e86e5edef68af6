//! Shared vocabulary of the layers: flows, rules and the admission-control contract.
//!
//! The [`engine`](crate::engine) decides *when* a reservation needs a rule; the
//! [`policy`](crate::policy) layer decides *whether* it may have one (through [`Admission`]);
//! an [`enforce`](crate::enforce) backend loads the [`Rule`] into the stack.

use std::fmt;
use std::net::SocketAddr;

use crate::wire::intserv::{FlowSpec, TokenBucket};
use crate::wire::{ErrorCode, RsvpError};

/// IP protocol number of TCP, the protocol every qtoq session carries.
pub const IPPROTO_TCP: u8 = 6;

/// One data flow in the direction the data travels: sender → receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    /// The data sender's address and port (RSVP SENDER_TEMPLATE / FILTER_SPEC).
    pub sender: SocketAddr,
    /// The data receiver's address and port (RSVP SESSION destination).
    pub receiver: SocketAddr,
    /// IP protocol number (6 for TCP).
    pub protocol: u8,
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} proto {}",
            self.sender, self.receiver, self.protocol
        )
    }
}

/// Identifies one installed enforcement rule for as long as it lives.
///
/// Allocated by the engine, unique within one engine for its whole life (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleId(pub u64);

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule#{}", self.0)
    }
}

/// What an enforcement backend loads into the stack for one admitted reservation.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The rule's identity; `modify` and `remove` name it.
    pub id: RuleId,
    /// The flow the rule applies to.
    pub flow: Flow,
    /// The reserved service and its parameters (the RESV's FLOWSPEC, or the policy's for an
    /// unsignaled rule).
    pub flowspec: FlowSpec,
    /// DiffServ code point to mark the flow's packets with, when the policy names one.
    pub dscp: Option<u8>,
}

/// A request to admit (or re-admit with new parameters) one reservation.
///
/// Built by the engine; [`AdmissionRequest::new`] builds one for tests and tools. It may
/// grow, hence `#[non_exhaustive]`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AdmissionRequest {
    /// The rule this admission is for. Re-admitting the same id is a *modification*: on
    /// denial the previously admitted parameters stay in force.
    pub rule: RuleId,
    /// The flow to be reserved.
    pub flow: Flow,
    /// The reservation asked for.
    pub flowspec: FlowSpec,
    /// The sender's traffic description, when known (from the PATH's SENDER_TSPEC).
    pub sender_tspec: Option<TokenBucket>,
    /// `true` when the reservation is RSVP-signaled, `false` for a rule marked *no signaling*.
    pub signaled: bool,
    /// The local process that owns the flow's data sender on this host, when known.
    ///
    /// The engine knows flows, not processes, and always builds requests with `None`; an
    /// [`Agent`](crate::Agent) fills it in, before its admission control sees the request,
    /// for the sessions it opened for a local owner (see [`Owner`]). `None` for a request
    /// no local owner is known for.
    pub owner: Option<Owner>,
}

impl AdmissionRequest {
    /// A signaled request for `flow` with no sender TSpec; set the other fields as needed.
    ///
    /// ```
    /// use qtoq::flow::{AdmissionRequest, Flow, RuleId};
    /// use qtoq::wire::intserv::{FlowSpec, TokenBucket};
    ///
    /// let flow = Flow {
    ///     sender: "10.0.0.1:5000".parse().unwrap(),
    ///     receiver: "10.0.0.2:80".parse().unwrap(),
    ///     protocol: 6,
    /// };
    /// let mut request = AdmissionRequest::new(
    ///     RuleId(1),
    ///     flow,
    ///     FlowSpec::ControlledLoad(TokenBucket::new(125_000.0, 16_384.0)),
    /// );
    /// request.signaled = false;
    /// assert_eq!(request.sender_tspec, None);
    /// ```
    pub fn new(rule: RuleId, flow: Flow, flowspec: FlowSpec) -> Self {
        AdmissionRequest {
            rule,
            flow,
            flowspec,
            sender_tspec: None,
            signaled: true,
            owner: None,
        }
    }
}

/// The local process a session belongs to: who opened it on this host.
///
/// Policies may match on it (`user`, `program`; see the [`policy`](crate::policy#owners)
/// module). qosd knows each client by its socket's `SO_PEERCRED` (effective uid, pid) and
/// the executable name `/proc/<pid>/comm` gives; an agent embedded in an application owns
/// its sessions as that process ([`Owner::current`]).
///
/// # Examples
///
/// ```
/// use qtoq::flow::Owner;
///
/// let owner = Owner::new(Some(1000), Some("backupd".into())).with_pid(4242);
/// assert_eq!(owner.uid, Some(1000));
/// assert_eq!(owner.program.as_deref(), Some("backupd"));
/// assert_eq!(owner.pid, Some(4242));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Owner {
    /// The process's effective user id.
    pub uid: Option<u32>,
    /// The process's executable name as the kernel keeps it (`/proc/<pid>/comm`: at most
    /// 15 bytes, longer names cut there).
    pub program: Option<String>,
    /// The process id, for logs.
    pub pid: Option<u32>,
}

impl Owner {
    /// An owner known by user id and program name; the pid is unknown.
    pub fn new(uid: Option<u32>, program: Option<String>) -> Self {
        Owner {
            uid,
            program,
            pid: None,
        }
    }

    /// The same owner with its process id.
    pub fn with_pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::with_capacity(3);
        if let Some(program) = &self.program {
            parts.push(format!("program {program}"));
        }
        if let Some(uid) = self.uid {
            parts.push(format!("uid {uid}"));
        }
        if let Some(pid) = self.pid {
            parts.push(format!("pid {pid}"));
        }
        if parts.is_empty() {
            f.write_str("an unknown owner")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// The outcome of a successful admission: what the rule should carry besides the flowspec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionGrant {
    /// DSCP the matching policy asks for.
    pub dscp: Option<u8>,
    /// Name of the policy rule that admitted the request, for logs and monitoring.
    pub policy: Option<String>,
}

/// Why an admission request was refused, with the RSVP error its ResvErr carries.
///
/// # Examples
///
/// ```
/// use qtoq::flow::AdmissionDenied;
/// use qtoq::wire::RsvpError;
/// let denied = AdmissionDenied::admission(2, "pool full");
/// assert_eq!(denied.error, RsvpError::BANDWIDTH_UNAVAILABLE);
/// assert_eq!(
///     denied.to_string(),
///     "pool full (Admission Control failure (1): requested bandwidth unavailable (2))"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{reason} ({error})")]
pub struct AdmissionDenied {
    /// The RSVP error: usually [`ErrorCode::ADMISSION_CONTROL_FAILURE`] (the value a sub-code
    /// such as 2, bandwidth unavailable) or [`ErrorCode::POLICY_CONTROL_FAILURE`].
    pub error: RsvpError,
    /// Human-readable explanation.
    pub reason: String,
}

impl AdmissionDenied {
    /// A refusal with `error`.
    pub fn new(error: RsvpError, reason: impl Into<String>) -> Self {
        AdmissionDenied {
            error,
            reason: reason.into(),
        }
    }

    /// An admission control failure (code 1) with sub-code `value` (RFC 2205 App. B: 1 delay
    /// bound, 2 bandwidth, 3 MTU).
    pub fn admission(value: u16, reason: impl Into<String>) -> Self {
        Self::new(
            RsvpError::new(ErrorCode::ADMISSION_CONTROL_FAILURE, value),
            reason,
        )
    }

    /// A policy control failure (code 2, value 0).
    pub fn policy(reason: impl Into<String>) -> Self {
        Self::new(RsvpError::new(ErrorCode::POLICY_CONTROL_FAILURE, 0), reason)
    }
}

/// Admission control, asked by the engine before any rule is installed.
///
/// Implemented by [`policy`](crate::policy); tests may supply a simple one.
pub trait Admission: Send {
    /// Admits `request` or says why not. For a rule id already admitted this is a modification
    /// and must leave the earlier admission in place when it fails.
    fn admit(&mut self, request: &AdmissionRequest) -> Result<AdmissionGrant, AdmissionDenied>;
    /// Returns the resources held by `rule` to the pools. Unknown ids are ignored.
    fn release(&mut self, rule: RuleId);
}

/// An [`Admission`] that admits everything: useful in tests and as a last resort.
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitAll;

impl Admission for AdmitAll {
    fn admit(&mut self, _request: &AdmissionRequest) -> Result<AdmissionGrant, AdmissionDenied> {
        Ok(AdmissionGrant::default())
    }
    fn release(&mut self, _rule: RuleId) {}
}
