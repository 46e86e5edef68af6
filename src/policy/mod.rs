//! QoS policies: which connections get which service, and admission control.
//!
//! A [`Policy`] is a list of [`PolicyRule`]s read from a TOML file (see
//! `examples/policy.toml` for every key, documented line by line), plus host-wide limits,
//! shared rate pools and declared interfaces with their capacity. It implements
//! [`Admission`]: the engine asks it before any rule is loaded into the stack.
//!
//! # Without a file
//!
//! [`Policy::default`] (the same as an empty file) has no rules and admits every request
//! whose flowspec is valid within:
//!
//! * the budget of the interface the flow uses (see below): 75 %
//!   ([`DEFAULT_RESERVABLE_SHARE`]) of the link speed its driver reports; unlimited on
//!   loopback and on links that report no speed;
//! * at most [`DEFAULT_MAX_FLOW_RATE`] bytes/s (100 Mbit/s) per reservation
//!   (`[host] max_flow_rate`);
//! * at most [`DEFAULT_HOST_MAX_FLOWS`] reservations (`[host] max_flows`).
//!
//! There is no host-wide rate total unless the file sets `[host] max_rate`.
//!
//! # Interface budgets
//!
//! Admission books each reservation against the interface its flow uses, one budget per
//! interface, as a router does per outgoing link:
//!
//! * an `[[interface]]` the policy declares is charged with the flows of the local addresses
//!   it lists (every flow when it lists none) and with every flow that uses an interface of
//!   that name; its declared `capacity` is what may be reserved: a declared capacity already
//!   is the reservable amount (the tc enforcer builds its HTB root at it), no share is taken
//!   of it;
//! * a flow no declared interface covers is charged to the interface the kernel says it
//!   uses ([`InterfaceProbe`], [`KernelProbe`]): [`DEFAULT_RESERVABLE_SHARE`] of the link
//!   speed the driver reports (Cisco IOS reserves 75 % of an interface's bandwidth for RSVP
//!   by default); unlimited on a loopback device and on links reporting no speed (a link
//!   that is down, many virtual devices) — declare those to limit them.
//!
//! The interface a flow uses is approximated without a route lookup: the one holding its
//! sender address (the host shapes what it sends), or loopback when the receiver is a local
//! address too. A flow whose sender is not local but whose receiver is (a reservation on the
//! receiving side) is charged to the receiver's interface; a flow with neither address local
//! (an in-memory network) to no interface. Policy-based routing or a sender address held by
//! another interface than the route's (weak host model) can make the guess wrong: declare the
//! interface with its `addresses` then. [`Policy::interface_budgets`] reports each budget and
//! where its number comes from.
//!
//! # Matching
//!
//! A rule matches a flow when every `match` key it has matches (missing keys match anything)
//! and its schedule, if any, is active. Among matching rules the highest `priority` wins; equal
//! priorities go to the rule written first. "Local" is this host's end: [`Policy::lookup`]
//! treats the data *sender* as local (this host shapes what it sends) and, when no rule matches
//! that way, tries again with the receiver as local.
//!
//! # Owners
//!
//! A rule may also match on the local process that owns the connection, as IBM i's policies
//! matched user profiles and applications: `user` (a name, resolved to its uid through
//! `/etc/passwd` when the file is loaded, or a uid given as a number) and `program` (the
//! executable's name exactly as `/proc/<pid>/comm` shows it, at most [`MAX_PROGRAM_NAME`]
//! bytes). Loading fails, naming the file, line and column, for a user name `/etc/passwd`
//! does not know (users known only to a directory service such as LDAP are written as
//! uids) and for a program name longer than the kernel keeps.
//!
//! The owner ([`Owner`]) travels with the request ([`AdmissionRequest::owner`],
//! [`Policy::lookup`]'s `owner`):
//!
//! * qosd's sessions are owned by its client, known by its socket's `SO_PEERCRED`
//!   (effective uid, pid) and `/proc/<pid>/comm`;
//! * an agent embedded in an application owns its sessions as that process
//!   ([`Owner::current`]: its effective uid, its executable's name);
//! * a reservation belongs to the owner of its data sender's session on this host: the
//!   server's, for an accepted connection, whoever the receiver is.
//!
//! A rule with `user` or `program` matches only a request whose owner is known and equal; a
//! request without a known owner (one built without it, a flow no local session sends)
//! never matches it. Rules without these keys match whatever the owner.
//!
//! # Message authentication
//!
//! `[[integrity]]` tables give the RFC 2747 keys ([`Policy::integrity`]) an agent built with
//! the policy signs and verifies RSVP messages with (see [`crate::integrity`]): messages to
//! and from a neighbor in a table's `peer` prefix carry INTEGRITY made with its key, and a
//! message from such a neighbor without a valid one is dropped.
//!
//! ```toml
//! [[integrity]]
//! peer = "10.77.0.2/32"       # the neighbor's address or a prefix (an address alone: a host)
//! key_id = 1                  # the 48-bit Key Identifier, 0 to 2^48 - 1
//! algorithm = "hmac-md5"      # RFC 2747's HMAC-MD5, or "hmac-sha256"
//! secret = "a shared secret"  # or: secret_file = "/etc/qtoq/peer.key"
//! ```
//!
//! * Exactly one of `secret` (its UTF-8 bytes) and `secret_file` (the file's bytes, less
//!   one trailing `\n` or `\r\n`; binary secrets are fine). A relative `secret_file` is
//!   read from the policy file's directory ([`Policy::load`]; the current directory for
//!   [`Policy::from_toml_str`]), when the policy is loaded and again at every reload.
//! * A `secret_file` must be private to its owner, as ssh requires of private keys:
//!   loading **fails** (it does not merely warn) when the group or others have any
//!   permission on it (`mode & 0o077 != 0`; fix it with `chmod 600`), when it is missing
//!   or unreadable, not a regular file, larger than [`MAX_SECRET_FILE_BYTES`], or empty.
//!   An empty `secret` is refused too.
//! * Several tables may cover one neighbor, for a key rollover: each of their keys is
//!   accepted from it, and the one written last is used to send to it. Two tables with the
//!   same `key_id` for overlapping prefixes are refused (a receiver could not tell which
//!   key signed).
//! * Unknown keys in the table are refused, like everywhere in the file; every error names
//!   the file, line and column, and never shows a secret (nor does [`Policy`]'s `Debug`).
//! * [`Agent::reload_policy`](crate::Agent::reload_policy) (qosd: SIGHUP, `qosctl policy
//!   reload`) replaces the engine's keys with the reloaded file's, unless the agent was
//!   given keys of its own with
//!   [`AgentBuilder::integrity`](crate::agent::AgentBuilder::integrity).
//!
//! ```
//! use qtoq::integrity::Algorithm;
//! use qtoq::policy::Policy;
//!
//! let policy = Policy::from_toml_str(r#"
//!     [[integrity]]
//!     peer = "10.77.0.0/24"
//!     key_id = 1
//!     algorithm = "hmac-md5"
//!     secret = "old secret"
//!
//!     [[integrity]]           # the new key, which now sends
//!     peer = "10.77.0.0/24"
//!     key_id = 2
//!     algorithm = "hmac-sha256"
//!     secret = "new secret"
//! "#, "inline").unwrap();
//! let keys = policy.integrity();
//! let sending = keys.sending_key("10.77.0.2".parse().unwrap()).unwrap();
//! assert_eq!((sending.key_id.get(), sending.algorithm), (2, Algorithm::HmacSha256));
//! assert!(!format!("{policy:?}").contains("new secret"));
//! ```
//!
//! # Denials
//!
//! Exceeding a rule's own limits (`rate`, `bucket`, `peak`, `max_packet`, `max_flows`) or the
//! host's per-reservation `max_flow_rate`, a service or signaling mismatch and
//! `unmatched = "deny"` are *policy* failures: [`ErrorCode::POLICY_CONTROL_FAILURE`] (2),
//! value 0. Running out of shared capacity (a rule's `total_rate`, a pool, an interface's
//! budget, the host's `max_rate` and `max_flows`) is an *admission control* failure:
//! [`RsvpError::BANDWIDTH_UNAVAILABLE`] (code 1, value 2, RFC 2205 App. B); its reason names
//! the interface and where its budget comes from. A flowspec with a negative or non-finite
//! rate is [`RsvpError::BAD_FLOWSPEC`] (code 21, value 3, RFC 2210).
//!
//! [`ErrorCode::POLICY_CONTROL_FAILURE`]: crate::wire::ErrorCode::POLICY_CONTROL_FAILURE
//!
//! RSVP carries rates and sizes as f32, so limits are applied at that precision: a rule's
//! own limits are compared with the request after rounding them to f32, and shared capacity
//! gets a relative slack of `f32::EPSILON`, so that reservations filling a limit exactly in
//! decimal (three of `333333.33` in `1000000`) are not refused over rounding.

mod budget;
mod file;
mod matching;
pub mod units;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::flow::{
    Admission, AdmissionDenied, AdmissionGrant, AdmissionRequest, Flow, Owner, RuleId,
};
use crate::integrity::KeyChain;
use crate::wire::intserv::{FlowSpec, GuaranteedRspec, TokenBucket};
use crate::wire::RsvpError;

pub use budget::{
    BudgetSource, InterfaceAddress, InterfaceBudget, InterfaceProbe, KernelProbe, StaticProbe,
    UnlimitedReason, DEFAULT_RESERVABLE_SHARE, LOOPBACK_INTERFACE,
};
use budget::{Discovery, Pot};
pub use matching::{parse_dscp, Cidr, InvalidValue, PolicyTime, PortRange, Schedule, Weekday};

/// Most bytes/s one reservation may hold without a policy file (`[host] max_flow_rate`):
/// 100 Mbit/s. Interfaces without a reported speed (loopback) have no budget; this keeps a
/// single request from asking for any rate at all.
pub const DEFAULT_MAX_FLOW_RATE: f64 = 12_500_000.0;
/// Host-wide number of reservations without a policy file (`[host] max_flows`). One
/// reservation is one admission at its data sender, so a connection between two sockets of
/// the same host counts once.
pub const DEFAULT_HOST_MAX_FLOWS: u32 = 1024;

/// Largest policy file [`Policy::load`] reads: 1 MiB, far beyond any real policy.
pub const MAX_POLICY_FILE_BYTES: u64 = 1 << 20;

/// Largest `secret_file` of an `[[integrity]]` table that is read: 64 KiB, far beyond any
/// HMAC key (a longer key is hashed down to one block anyway).
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Why a policy file could not be loaded. Nothing of a bad file is ever applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {file}: {source}")]
    Io {
        /// The path as given.
        file: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_POLICY_FILE_BYTES`]; it is not read.
    #[error("policy file {file} is {size} bytes, more than the {max} accepted")]
    TooLarge {
        /// The path as given.
        file: String,
        /// Its size in bytes.
        size: u64,
        /// The limit, [`MAX_POLICY_FILE_BYTES`].
        max: u64,
    },
    /// The file is not valid TOML or holds a bad value; the position is 1-based.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The path (or the name given to [`Policy::from_toml_str`]).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What is wrong and what would be accepted.
        message: String,
    },
}

/// The service a rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Controlled-Load (RFC 2211).
    ControlledLoad,
    /// Guaranteed (RFC 2212).
    Guaranteed,
    /// DiffServ marking only, no per-flow reservation.
    DiffServ,
}

/// What a rule matches; `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Match {
    /// This host's address.
    pub local_addr: Option<Cidr>,
    /// This host's port.
    pub local_port: Option<PortRange>,
    /// The peer's address.
    pub remote_addr: Option<Cidr>,
    /// The peer's port.
    pub remote_port: Option<PortRange>,
    /// IP protocol number.
    pub protocol: Option<u8>,
    /// The local owner's (effective) user id: `user = "name"` (resolved through
    /// `/etc/passwd` when the policy is loaded) or `user = 1000`. Set, it matches only a
    /// request whose owner is known and has this uid (see [the module docs](self#owners)).
    pub user: Option<u32>,
    /// The local owner's executable name, exactly as `/proc/<pid>/comm` gives it (at most
    /// [`MAX_PROGRAM_NAME`] bytes). Set, it matches only a request whose owner is known and
    /// runs this program.
    pub program: Option<String>,
}

/// Longest program name a rule can match: the kernel keeps an executable's name in 16
/// bytes with its NUL (`TASK_COMM_LEN`), so `/proc/<pid>/comm` never shows more than 15.
pub const MAX_PROGRAM_NAME: usize = 15;

impl Match {
    /// Whether the connection `local` ↔ `remote` over `protocol`, owned locally by `owner`
    /// (`None`: no local owner is known), matches.
    pub fn matches(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        protocol: u8,
        owner: Option<&Owner>,
    ) -> bool {
        self.local_addr.is_none_or(|c| c.contains(local.ip()))
            && self.local_port.is_none_or(|p| p.contains(local.port()))
            && self.remote_addr.is_none_or(|c| c.contains(remote.ip()))
            && self.remote_port.is_none_or(|p| p.contains(remote.port()))
            && self.protocol.is_none_or(|p| p == protocol)
            && self.matches_owner(owner)
    }

    /// Whether `owner` satisfies the `user` and `program` keys: always when the rule has
    /// neither; never for an unknown owner (or an unknown uid or program) when it has one.
    pub fn matches_owner(&self, owner: Option<&Owner>) -> bool {
        self.user
            .is_none_or(|uid| owner.and_then(|o| o.uid) == Some(uid))
            && self
                .program
                .as_deref()
                .is_none_or(|program| owner.and_then(|o| o.program.as_deref()) == Some(program))
    }
}

/// Upper limits on a request's token bucket; for a `signaling = false` rule they are also the
/// reservation the rule installs. Rates are bytes/s, sizes bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Limits {
    /// Token rate `r` (and reserved rate `R` for guaranteed service).
    pub rate: Option<f64>,
    /// Bucket size `b`.
    pub bucket: Option<f64>,
    /// Peak rate `p`.
    pub peak: Option<f64>,
    /// Minimum policed unit `m`.
    pub min_policed: Option<u32>,
    /// Maximum packet size `M`.
    pub max_packet: Option<u32>,
}

/// One rule of a policy.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PolicyRule {
    /// Unique name, reported in grants and logs.
    pub name: String,
    /// Higher wins among matching rules.
    pub priority: i64,
    /// Position in the file; breaks priority ties (earlier wins).
    pub order: usize,
    /// What the rule applies to.
    pub matches: Match,
    /// The service granted.
    pub service: Service,
    /// `false` = IBM i's "rule marked with no signaling": the rule is loaded at
    /// accept time with [`PolicyRule::flowspec`], without RSVP.
    pub signaling: bool,
    /// DSCP to mark the flow with.
    pub dscp: Option<u8>,
    /// Per-request limits.
    pub limits: Limits,
    /// Most reservations this rule admits at once.
    pub max_flows: Option<u32>,
    /// Most bytes/s all of this rule's reservations may hold together.
    pub total_rate: Option<f64>,
    /// Name of the shared pool the rule's reservations draw from.
    pub pool: Option<String>,
    /// When the rule applies; `None` = always.
    pub schedule: Option<Schedule>,
}

impl PolicyRule {
    /// Whether the rule applies to `local` ↔ `remote`, owned locally by `owner`, at `now`.
    pub fn applies(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        protocol: u8,
        owner: Option<&Owner>,
        now: PolicyTime,
    ) -> bool {
        self.matches.matches(local, remote, protocol, owner)
            && self.schedule.is_none_or(|s| s.is_active(now))
    }

    /// The reservation an unsignaled (`signaling = false`) rule installs, built from its
    /// limits: `bucket` defaults to 1/10 s of `rate` (at least `max_packet`), `m` to 64,
    /// `M` to 1500. `None` for diffserv rules and rules without a rate.
    pub fn flowspec(&self) -> Option<FlowSpec> {
        let rate = self.limits.rate?;
        let max_packet = self.limits.max_packet.unwrap_or(1500);
        let bucket = self
            .limits
            .bucket
            .unwrap_or_else(|| (rate / 10.0).max(f64::from(max_packet)));
        let tspec = TokenBucket {
            rate: rate as f32,
            bucket: bucket as f32,
            peak: self.limits.peak.map_or(f32::INFINITY, |p| p as f32),
            min_policed: self.limits.min_policed.unwrap_or(64).min(max_packet),
            max_packet,
        };
        match self.service {
            Service::ControlledLoad => Some(FlowSpec::ControlledLoad(tspec)),
            Service::Guaranteed => Some(FlowSpec::Guaranteed {
                tspec,
                rspec: GuaranteedRspec {
                    rate: rate as f32,
                    slack: 0,
                },
            }),
            Service::DiffServ => None,
        }
    }
}

/// A named rate pool shared by the rules that name it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Pool {
    /// The name rules refer to.
    pub name: String,
    /// Most bytes/s the pool's reservations hold together.
    pub total_rate: f64,
}

/// An interface declared with its capacity: admission keeps reservations within it, and the
/// tc enforcer builds its HTB tree at that rate.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct InterfaceSpec {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// Capacity in bytes/s.
    pub capacity: f64,
    /// Local addresses whose flows use this interface; empty = every flow is charged to it.
    pub addresses: Vec<Cidr>,
}

impl InterfaceSpec {
    /// An interface with `capacity` bytes/s that every flow is charged to.
    pub fn new(name: impl Into<String>, capacity: f64) -> Self {
        InterfaceSpec {
            name: name.into(),
            capacity,
            addresses: Vec::new(),
        }
    }

    fn carries(&self, local: IpAddr) -> bool {
        self.addresses.is_empty() || self.addresses.iter().any(|c| c.contains(local))
    }
}

/// What to do with a request no rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmatched {
    /// Admit it within the host limits (the default).
    #[default]
    Admit,
    /// Refuse it with a policy error.
    Deny,
}

/// Host-wide settings (`[host]` in the file). Rates in bytes/s.
///
/// The defaults (no file, or no `[host]`): no host-wide rate total (each interface has its
/// budget, see [the module docs](self#interface-budgets)), at most [`DEFAULT_MAX_FLOW_RATE`]
/// per reservation and [`DEFAULT_HOST_MAX_FLOWS`] reservations, unmatched requests admitted,
/// schedules in UTC.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HostLimits {
    /// Most bytes/s of all reservations together (`max_rate`); `None` (the default) = no
    /// host-wide total, only the interfaces' budgets.
    pub max_rate: Option<f64>,
    /// Most bytes/s any one reservation may hold (`max_flow_rate`), whichever rule admits
    /// it; exceeding it is a policy failure (code 2). `None` = no limit.
    pub max_flow_rate: Option<f64>,
    /// Most reservations at once (`max_flows`); `None` = no limit.
    pub max_flows: Option<u32>,
    /// What happens to requests no rule matches.
    pub unmatched: Unmatched,
    /// Offset of local time from UTC in minutes, for schedules.
    pub utc_offset_minutes: i32,
}

impl Default for HostLimits {
    fn default() -> Self {
        HostLimits {
            max_rate: None,
            max_flow_rate: Some(DEFAULT_MAX_FLOW_RATE),
            max_flows: Some(DEFAULT_HOST_MAX_FLOWS),
            unmatched: Unmatched::Admit,
            utc_offset_minutes: 0,
        }
    }
}

/// Counters of admission decisions, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdmissionStats {
    /// Requests admitted (modifications included).
    pub admitted: u64,
    /// Requests denied.
    pub denied: u64,
    /// Reservations released.
    pub released: u64,
}

#[derive(Debug, Clone)]
struct Admitted {
    request: AdmissionRequest,
    rate: f64,
    rule: Option<usize>,
    /// The interface budgets it is booked against.
    pots: Pots,
}

/// A flow is charged to one interface, or to each declared interface covering it.
type Pots = smallvec::SmallVec<[Pot; 2]>;

/// A loaded policy and the reservations it has admitted.
///
/// # Interface budgets
///
/// Interfaces are discovered through an [`InterfaceProbe`] ([`KernelProbe`] unless
/// [`Policy::with_interface_probe`] says otherwise) and cached for the policy's life, so
/// that admission, which runs on every connection setup, costs no syscalls: loopback
/// addresses never ask the kernel; other addresses are looked up in one snapshot of the
/// host's addresses, retaken only for a local address it lacks; a link's speed is read once.
/// A reload ([`Policy::reload`], `Agent::reload_policy`) discovers again.
///
/// # Examples
///
/// ```
/// use qtoq::policy::{Policy, PolicyTime, Weekday};
/// use qtoq::flow::Flow;
///
/// let policy = Policy::from_toml_str(r#"
///     [[rule]]
///     name = "video"
///     service = "controlled-load"
///     rate = "8Mbit"
///     dscp = "AF41"
///     match = { local_port = "5000-5010" }
/// "#, "inline").unwrap();
/// let flow = Flow {
///     sender: "10.0.0.1:5004".parse().unwrap(),
///     receiver: "10.0.0.2:40000".parse().unwrap(),
///     protocol: 6,
/// };
/// let rule = policy.lookup(&flow, None, PolicyTime::new(Weekday::Mon, 9, 0)).unwrap();
/// assert_eq!(rule.name, "video");
/// assert_eq!(rule.dscp, Some(34));
/// ```
#[derive(Debug, Clone)]
pub struct Policy {
    origin: Option<String>,
    host: HostLimits,
    /// Sorted: highest priority first, then file order.
    rules: Vec<PolicyRule>,
    pools: Vec<Pool>,
    interfaces: Vec<InterfaceSpec>,
    /// The `[[integrity]]` keys, in file order. Their secrets' `Debug` is redacted.
    integrity: KeyChain,
    admitted: BTreeMap<RuleId, Admitted>,
    stats: AdmissionStats,
    clock: fn() -> SystemTime,
    discovery: Discovery,
}

impl Default for Policy {
    /// The documented default (see [the module docs](self#without-a-file)): no rules, the
    /// discovered interfaces' budgets, [`DEFAULT_MAX_FLOW_RATE`] per reservation and
    /// [`DEFAULT_HOST_MAX_FLOWS`] reservations.
    fn default() -> Self {
        Policy::from_parts(
            None,
            HostLimits::default(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            KeyChain::default(),
        )
    }
}

impl Policy {
    fn from_parts(
        origin: Option<String>,
        host: HostLimits,
        mut rules: Vec<PolicyRule>,
        pools: Vec<Pool>,
        interfaces: Vec<InterfaceSpec>,
        integrity: KeyChain,
    ) -> Self {
        rules.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.order.cmp(&b.order)));
        Policy {
            origin,
            host,
            rules,
            pools,
            interfaces,
            integrity,
            admitted: BTreeMap::new(),
            stats: AdmissionStats::default(),
            clock: SystemTime::now,
            discovery: Discovery::default(),
        }
    }

    /// Reads and validates a policy file.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Io`] when the file cannot be read (or is not UTF-8),
    /// [`PolicyError::TooLarge`] above [`MAX_POLICY_FILE_BYTES`], [`PolicyError::Invalid`]
    /// with the line and column of the first problem otherwise.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let io = |source| PolicyError::Io {
            file: file.clone(),
            source,
        };
        let (opened, metadata) = open_regular_file(path).map_err(io)?;
        let size = metadata.len();
        if size > MAX_POLICY_FILE_BYTES {
            return Err(PolicyError::TooLarge {
                file,
                size,
                max: MAX_POLICY_FILE_BYTES,
            });
        }
        // Read at most the limit even if the file grows meanwhile.
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(opened, MAX_POLICY_FILE_BYTES),
            &mut text,
        )
        .map_err(io)?;
        // A relative `secret_file` is read next to the policy file.
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        Self::parse(&text, &file, Some(dir))
    }

    /// Parses a policy from TOML text; `origin` names it in error messages. A relative
    /// `secret_file` of an `[[integrity]]` table is read from the current directory (with
    /// [`Policy::load`], from the policy file's).
    ///
    /// # Errors
    ///
    /// [`PolicyError::Invalid`] with the line and column of the first problem.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, PolicyError> {
        Self::parse(text, origin, None)
    }

    fn parse(text: &str, origin: &str, dir: Option<&Path>) -> Result<Self, PolicyError> {
        match file::parse(text, origin, dir) {
            Ok(policy) => {
                tracing::debug!(
                    origin,
                    rules = policy.rules.len(),
                    integrity_keys = policy.integrity.keys().len(),
                    "policy loaded"
                );
                Ok(policy)
            }
            Err(e) => {
                tracing::warn!(error = %e, "policy rejected");
                Err(e)
            }
        }
    }

    /// Replaces the clock used by [`Admission::admit`] and [`Policy::now`] (tests).
    pub fn with_clock(mut self, clock: fn() -> SystemTime) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces how interfaces are discovered for admission without a declared
    /// `[[interface]]` (default [`KernelProbe`]); what was discovered so far is forgotten.
    /// Tests inject a [`StaticProbe`] to be independent of the host's interfaces.
    pub fn with_interface_probe(mut self, probe: impl InterfaceProbe + 'static) -> Self {
        self.discovery = Discovery::new(Arc::new(probe));
        self
    }

    /// Where the policy came from, when it came from a file.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The rules, highest priority first.
    pub fn rules(&self) -> &[PolicyRule] {
        &self.rules
    }

    /// The declared interfaces.
    pub fn interfaces(&self) -> &[InterfaceSpec] {
        &self.interfaces
    }

    /// The shared pools.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// The host-wide settings.
    pub fn host(&self) -> &HostLimits {
        &self.host
    }

    /// The RFC 2747 INTEGRITY keys of the `[[integrity]]` tables, in file order (the last
    /// key covering a neighbor is the one used to send to it). An agent built with this
    /// policy signs and verifies with them (see [`AgentBuilder::integrity`] for keys given
    /// otherwise), and [`Agent::reload_policy`] replaces them.
    ///
    /// [`AgentBuilder::integrity`]: crate::agent::AgentBuilder::integrity
    /// [`Agent::reload_policy`]: crate::Agent::reload_policy
    pub fn integrity(&self) -> &KeyChain {
        &self.integrity
    }

    /// Admission counters.
    pub fn stats(&self) -> AdmissionStats {
        self.stats
    }

    /// The local time schedules are evaluated at, from the policy's clock and `utc_offset`.
    pub fn now(&self) -> PolicyTime {
        PolicyTime::from_system((self.clock)(), self.host.utc_offset_minutes)
    }

    /// The rule for the connection `local` ↔ `remote`, owned locally by `owner`, at `now`,
    /// if any.
    pub fn lookup_local(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        protocol: u8,
        owner: Option<&Owner>,
        now: PolicyTime,
    ) -> Option<&PolicyRule> {
        self.rules
            .iter()
            .find(|r| r.applies(local, remote, protocol, owner, now))
    }

    /// The rule for `flow`, owned on this host by `owner` (`None`: no local owner is known,
    /// and rules with `user` or `program` do not match), at `now`: first with the sender as
    /// the local end, then with the receiver as the local end (see the module docs).
    pub fn lookup(
        &self,
        flow: &Flow,
        owner: Option<&Owner>,
        now: PolicyTime,
    ) -> Option<&PolicyRule> {
        self.lookup_index(flow, owner, now).map(|i| &self.rules[i])
    }

    fn lookup_index(&self, flow: &Flow, owner: Option<&Owner>, now: PolicyTime) -> Option<usize> {
        let p = flow.protocol;
        self.rules
            .iter()
            .position(|r| r.applies(flow.sender, flow.receiver, p, owner, now))
            .or_else(|| {
                self.rules
                    .iter()
                    .position(|r| r.applies(flow.receiver, flow.sender, p, owner, now))
            })
    }

    /// Number of reservations currently admitted.
    pub fn admitted_count(&self) -> usize {
        self.admitted.len()
    }

    /// Bytes/s currently admitted in total.
    pub fn admitted_rate(&self) -> f64 {
        self.admitted.values().map(|a| a.rate).sum()
    }

    /// Every interface's budget: the declared interfaces first, in file order, then every
    /// interface of this host the probe lists (discovered on the first call after the policy
    /// was made, then from the cache), each with what is booked on it now and where its
    /// number comes from.
    pub fn interface_budgets(&mut self) -> Vec<InterfaceBudget> {
        self.discovery.discover_all();
        let booked = |pot: Pot| {
            self.admitted
                .values()
                .filter(|a| a.pots.contains(&pot))
                .fold((0.0, 0), |(rate, flows), a| (rate + a.rate, flows + 1))
        };
        let mut budgets: Vec<InterfaceBudget> = self
            .interfaces
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let (reserved, flows) = booked(Pot::Declared(i));
                InterfaceBudget {
                    name: spec.name.clone(),
                    capacity: Some(spec.capacity),
                    reservable: Some(spec.capacity),
                    reserved,
                    flows,
                    source: self.declared_source(),
                }
            })
            .collect();
        for (i, link) in self.discovery.links.iter().enumerate() {
            if self.interfaces.iter().any(|d| d.name == link.name) {
                continue;
            }
            let Some((capacity, reservable, source)) = link.budget() else {
                continue;
            };
            let (reserved, flows) = booked(Pot::Discovered(i));
            budgets.push(InterfaceBudget {
                name: link.name.clone(),
                capacity,
                reservable,
                reserved,
                flows,
                source: source.clone(),
            });
        }
        budgets
    }

    /// What may be reserved on `pot`, bytes/s; `None` = unlimited.
    fn reservable(&self, pot: Pot) -> Option<f64> {
        match pot {
            Pot::Declared(i) => Some(self.interfaces[i].capacity),
            Pot::Discovered(i) => self.discovery.links[i]
                .budget()
                .and_then(|(_, reservable, _)| reservable),
        }
    }

    /// `pot` as denials name it: the interface and where its number comes from.
    fn describe(&self, pot: Pot) -> String {
        match pot {
            Pot::Declared(i) => format!(
                "interface {} ({})",
                self.interfaces[i].name,
                self.declared_source()
            ),
            Pot::Discovered(i) => {
                let link = &self.discovery.links[i];
                match link.budget() {
                    Some((_, _, source)) => format!("interface {} ({source})", link.name),
                    None => format!("interface {}", link.name),
                }
            }
        }
    }

    fn declared_source(&self) -> BudgetSource {
        BudgetSource::Declared {
            origin: self.origin.as_deref().unwrap_or("(inline)").to_owned(),
        }
    }

    /// The interface budgets `flow` is booked against (see [the module
    /// docs](self#interface-budgets)).
    fn pots(&mut self, flow: &Flow) -> Pots {
        let (local, link) = self.discovery.route(flow);
        let declared: Pots = (0..self.interfaces.len())
            .filter(|&i| self.interfaces[i].carries(local))
            .map(Pot::Declared)
            .collect();
        if !declared.is_empty() {
            return declared;
        }
        let Some(link) = link else {
            return Pots::new();
        };
        let name = &self.discovery.links[link].name;
        if let Some(i) = self.interfaces.iter().position(|d| d.name == *name) {
            return smallvec::smallvec![Pot::Declared(i)];
        }
        self.discovery.budget(link);
        smallvec::smallvec![Pot::Discovered(link)]
    }

    /// [`Admission::admit`] at an explicit local time.
    ///
    /// # Errors
    ///
    /// [`AdmissionDenied`] with the RSVP error code and value (see the module docs); the
    /// policy's state is unchanged then.
    pub fn admit_at(
        &mut self,
        request: &AdmissionRequest,
        now: PolicyTime,
    ) -> Result<AdmissionGrant, AdmissionDenied> {
        let pots = self.pots(&request.flow);
        match self.decide(request, now, pots) {
            Ok((admitted, grant)) => {
                self.stats.admitted += 1;
                tracing::debug!(rule = %request.rule, flow = %request.flow, rate = admitted.rate,
                    owner = request.owner.as_ref().map(tracing::field::display),
                    policy = ?grant.policy, "admitted");
                self.admitted.insert(request.rule, admitted);
                Ok(grant)
            }
            Err(denied) => {
                self.stats.denied += 1;
                tracing::info!(rule = %request.rule, flow = %request.flow, error = %denied.error,
                    owner = request.owner.as_ref().map(tracing::field::display),
                    reason = %denied.reason, "admission denied");
                Err(denied)
            }
        }
    }

    /// The decision, without changing any state; `pots` are the flow's interface budgets.
    fn decide(
        &self,
        request: &AdmissionRequest,
        now: PolicyTime,
        pots: Pots,
    ) -> Result<(Admitted, AdmissionGrant), AdmissionDenied> {
        let spec = &request.flowspec;
        let tspec = spec.tspec();
        let rate = f64::from(spec.reserved_rate());
        let valid = |x: f32| x.is_finite() && x >= 0.0;
        if !valid(spec.reserved_rate())
            || !valid(tspec.rate)
            || !valid(tspec.bucket)
            || tspec.peak.is_nan()
            || tspec.peak < 0.0
        {
            return Err(AdmissionDenied::new(
                RsvpError::BAD_FLOWSPEC,
                format!(
                    "flowspec of {} has a negative or non-finite value",
                    request.flow
                ),
            ));
        }
        // Everything admitted except an earlier version of this very request.
        let others = || {
            self.admitted
                .iter()
                .filter(|(id, _)| **id != request.rule)
                .map(|(_, a)| a)
        };

        let rule_index = self.lookup_index(&request.flow, request.owner.as_ref(), now);
        let mut grant = AdmissionGrant::default();
        // Policy failures first (the rule's own limits, unmatched = deny, the host's cap per
        // reservation), then shared capacity.
        if let Some(i) = rule_index {
            let rule = &self.rules[i];
            check_rule(rule, request)?;
            if let Some(max) = rule.max_flows {
                let used = others().filter(|a| a.rule == Some(i)).count();
                if used >= max as usize {
                    return Err(AdmissionDenied::policy(format!(
                        "policy rule `{}` already has its max_flows = {max} reservations",
                        rule.name
                    )));
                }
            }
        } else if self.host.unmatched == Unmatched::Deny {
            return Err(AdmissionDenied::policy(format!(
                "no policy rule matches {} and unmatched requests are denied",
                request.flow
            )));
        }
        if let Some(max) = self.host.max_flow_rate {
            // A per-request limit, compared at the precision RSVP signals, like a rule's.
            let max = signaled_precision(max);
            if rate > max {
                return Err(AdmissionDenied::policy(format!(
                    "rate {} B/s exceeds the host max_flow_rate of {} B/s per reservation \
                     (set [host] max_flow_rate to allow more)",
                    grouped(rate),
                    grouped(max)
                )));
            }
        }

        if let Some(i) = rule_index {
            let rule = &self.rules[i];
            if let Some(total) = rule.total_rate {
                let used: f64 = others().filter(|a| a.rule == Some(i)).map(|a| a.rate).sum();
                check_room(used, rate, total, || {
                    format!("policy rule `{}` total_rate", rule.name)
                })?;
            }
            if let Some(pool_name) = &rule.pool {
                if let Some(pool) = self.pools.iter().find(|p| p.name == *pool_name) {
                    let used: f64 = others()
                        .filter(|a| {
                            a.rule.and_then(|r| self.rules[r].pool.as_ref()) == Some(pool_name)
                        })
                        .map(|a| a.rate)
                        .sum();
                    check_room(used, rate, pool.total_rate, || {
                        format!("pool `{pool_name}`")
                    })?;
                }
            }
            grant.dscp = rule.dscp;
            grant.policy = Some(rule.name.clone());
        }
        for &pot in &pots {
            if let Some(limit) = self.reservable(pot) {
                let used: f64 = others()
                    .filter(|a| a.pots.contains(&pot))
                    .map(|a| a.rate)
                    .sum();
                check_room(used, rate, limit, || self.describe(pot))?;
            }
        }
        if let Some(max) = self.host.max_rate {
            let used: f64 = others().map(|a| a.rate).sum();
            check_room(used, rate, max, || "host max_rate".to_string())?;
        }
        if let Some(max) = self.host.max_flows {
            if others().count() >= max as usize {
                return Err(AdmissionDenied::new(
                    RsvpError::BANDWIDTH_UNAVAILABLE,
                    format!("host already holds its max_flows = {max} reservations"),
                ));
            }
        }
        Ok((
            Admitted {
                request: request.clone(),
                rate,
                rule: rule_index,
                pots,
            },
            grant,
        ))
    }

    /// Replaces the rules, pools, interfaces, host limits and [integrity
    /// keys](Policy::integrity) with `new`'s and re-admits every
    /// current reservation under them, oldest first. Returns the ids that no longer fit: they
    /// are released here, and the caller tears them down (ResvErr, rule removal).
    pub fn reload(&mut self, new: Policy) -> Vec<RuleId> {
        let now = PolicyTime::from_system((self.clock)(), new.host.utc_offset_minutes);
        self.reload_at(new, now)
    }

    /// [`Policy::reload`] at an explicit local time.
    pub fn reload_at(&mut self, new: Policy, now: PolicyTime) -> Vec<RuleId> {
        let old = std::mem::take(&mut self.admitted);
        self.origin = new.origin;
        self.host = new.host;
        self.rules = new.rules;
        self.pools = new.pools;
        self.interfaces = new.interfaces;
        self.integrity = new.integrity;
        // The new policy's discovery: interfaces and link speeds are learnt again.
        self.discovery = new.discovery;
        let mut dropped = Vec::new();
        for (id, admitted) in old {
            let pots = self.pots(&admitted.request.flow);
            match self.decide(&admitted.request, now, pots) {
                Ok((again, _)) => {
                    self.admitted.insert(id, again);
                }
                Err(why) => {
                    tracing::info!(rule = %id, reason = %why, "reservation no longer fits the reloaded policy");
                    self.stats.released += 1;
                    dropped.push(id);
                }
            }
        }
        dropped
    }

    /// Re-checks every admitted reservation against the current policy at `now` (e.g. when a
    /// schedule window closes) and releases and returns those that no longer fit.
    pub fn revalidate_at(&mut self, now: PolicyTime) -> Vec<RuleId> {
        let same = Policy {
            admitted: BTreeMap::new(),
            ..self.clone()
        };
        self.reload_at(same, now)
    }
}

fn check_room(
    used: f64,
    rate: f64,
    limit: f64,
    what: impl FnOnce() -> String,
) -> Result<(), AdmissionDenied> {
    // `rate` and `used` are f32s as RSVP carries them, each up to half an f32 ulp (2^-24
    // relative) above the decimal value meant: reservations that fill a limit exactly in
    // decimal must still fit, so the limit gets that much slack (f32::EPSILON = 2^-23).
    if used + rate > limit + limit * f64::from(f32::EPSILON) {
        return Err(AdmissionDenied::new(
            RsvpError::BANDWIDTH_UNAVAILABLE,
            format!(
                "requested bandwidth unavailable on {}: {} B/s asked, {} of {} B/s already booked",
                what(),
                grouped(rate),
                grouped(used),
                grouped(limit)
            ),
        ));
    }
    Ok(())
}

/// `value` rounded to whole units with thousands separators: `93,750,000`.
fn grouped(value: f64) -> String {
    // An empty f64 sum is -0.0: shown as 0.
    let value = if value == 0.0 { 0.0 } else { value };
    let digits = format!("{:.0}", value.abs());
    if !value.is_finite() || digits.len() <= 3 {
        return format!("{value:.0}");
    }
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value < 0.0 {
        out.push('-');
    }
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `value` rounded to the f32 RSVP signals it as (values beyond f32 become infinite).
fn signaled_precision(value: f64) -> f64 {
    f64::from(value as f32)
}

/// The rule's own, per-request limits: policy failures (code 2).
fn check_rule(rule: &PolicyRule, request: &AdmissionRequest) -> Result<(), AdmissionDenied> {
    let name = &rule.name;
    let policy = |reason: String| Err(AdmissionDenied::policy(reason));
    if rule.signaling != request.signaled {
        return policy(if rule.signaling {
            format!("policy rule `{name}` requires RSVP signaling")
        } else {
            format!(
                "policy rule `{name}` is marked no signaling but an RSVP reservation was requested"
            )
        });
    }
    match (rule.service, &request.flowspec) {
        (Service::ControlledLoad, FlowSpec::ControlledLoad(_))
        | (Service::Guaranteed, FlowSpec::Guaranteed { .. })
        | (Service::DiffServ, _) => {}
        (Service::ControlledLoad, _) => {
            return policy(format!(
                "policy rule `{name}` grants controlled-load service only"
            ))
        }
        (Service::Guaranteed, _) => {
            return policy(format!(
                "policy rule `{name}` grants guaranteed service only"
            ))
        }
    }
    let spec = &request.flowspec;
    let tspec = spec.tspec();
    let limits = &rule.limits;
    let over = |what: &str, asked: f64, limit: Option<f64>| match limit {
        Some(limit) if asked > limit => policy(format!(
            "{what} {asked:.0} exceeds policy rule `{name}` limit {limit:.0}"
        )),
        _ => Ok(()),
    };
    // The flowspec holds f32s: compare against the limits at that precision, so that e.g.
    // a no-signaling rule's own flowspec (built from these limits) always fits them.
    let rate_limit = limits.rate.map(signaled_precision);
    over("rate (B/s)", f64::from(spec.reserved_rate()), rate_limit)?;
    over("token rate (B/s)", f64::from(tspec.rate), rate_limit)?;
    over(
        "bucket (B)",
        f64::from(tspec.bucket),
        limits.bucket.map(signaled_precision),
    )?;
    over(
        "peak (B/s)",
        f64::from(tspec.peak),
        limits.peak.map(signaled_precision),
    )?;
    over(
        "max packet (B)",
        f64::from(tspec.max_packet),
        limits.max_packet.map(f64::from),
    )?;
    over(
        "min policed unit (B)",
        f64::from(tspec.min_policed),
        limits.min_policed.map(f64::from),
    )?;
    Ok(())
}

impl Admission for Policy {
    fn admit(&mut self, request: &AdmissionRequest) -> Result<AdmissionGrant, AdmissionDenied> {
        let now = self.now();
        self.admit_at(request, now)
    }

    fn release(&mut self, rule: RuleId) {
        if self.admitted.remove(&rule).is_some() {
            self.stats.released += 1;
            tracing::debug!(%rule, "released");
        }
    }
}

/// Opens a file to read only if it is a regular file (its metadata returned too). Opened
/// non-blocking and checked before anything is read: a FIFO (or a device) in its place would
/// otherwise block the caller forever.
pub(crate) fn open_regular_file(
    path: &Path,
) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let metadata = opened.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((opened, metadata))
}

#[cfg(test)]
mod tests {
    use super::grouped;

    #[test]
    fn rates_in_messages_are_grouped_by_thousands() {
        assert_eq!(grouped(93_750_000.0), "93,750,000");
        assert_eq!(grouped(125_000.4), "125,000");
        assert_eq!(grouped(999.6), "1,000");
        assert_eq!(grouped(100.0), "100");
        assert_eq!(grouped(-0.0), "0");
        assert_eq!(grouped(-1234.0), "-1,234");
        assert_eq!(grouped(f64::INFINITY), "inf");
    }
}
