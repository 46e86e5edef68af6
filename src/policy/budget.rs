//! Per-interface admission budgets: which interface a flow uses, and how much of it may be
//! reserved (see the module docs of [`policy`](super), "Interface budgets").

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use crate::flow::Flow;

/// Share of a link's reported speed that admission may reserve on an interface the policy
/// does not declare: 75 %, the RSVP default of router practice (Cisco IOS `ip rsvp
/// bandwidth` without a value reserves 75 % of the interface bandwidth). The rest is left to
/// best-effort traffic and to the signaling itself.
pub const DEFAULT_RESERVABLE_SHARE: f64 = 0.75;

/// The name Linux gives the loopback device in every network namespace. Flows from a
/// loopback address are charged to it without asking the kernel.
pub const LOOPBACK_INTERFACE: &str = "lo";

/// Bytes per second in one Mbit/s.
const BYTES_PER_MBIT: f64 = 125_000.0;

/// Addresses remembered as "no interface holds it" before the list is cleared: bounds the
/// memory a stream of unknown senders can take (clearing only costs a later re-discovery).
const MAX_UNKNOWN_ADDRESSES: usize = 1024;

/// One address of one of this host's interfaces, as an [`InterfaceProbe`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InterfaceAddress {
    /// The address.
    pub addr: IpAddr,
    /// The name of the interface that holds it, e.g. `eth0`.
    pub interface: String,
    /// The interface is a loopback device (`IFF_LOOPBACK`): no link, no speed.
    pub loopback: bool,
}

impl InterfaceAddress {
    /// `addr` held by `interface`.
    pub fn new(addr: IpAddr, interface: impl Into<String>, loopback: bool) -> Self {
        InterfaceAddress {
            addr,
            interface: interface.into(),
            loopback,
        }
    }
}

/// Where a [`Policy`](super::Policy) learns this host's interfaces for admission without a
/// declared `[[interface]]`: [`KernelProbe`] by default; tests inject a fixed table with
/// [`Policy::with_interface_probe`](super::Policy::with_interface_probe).
///
/// The policy caches what it learns (see [`Policy`](super::Policy#interface-budgets)), so a
/// probe is asked rarely: never for loopback addresses.
pub trait InterfaceProbe: fmt::Debug + Send + Sync {
    /// Every address of this host's interfaces with the interface holding it.
    ///
    /// # Errors
    ///
    /// When the list cannot be read; the policy then charges the flow to no interface.
    fn addresses(&self) -> io::Result<Vec<InterfaceAddress>>;

    /// The link speed of `interface` in Mbit/s as its driver reports it; `None` when it
    /// reports none.
    ///
    /// # Errors
    ///
    /// When the speed cannot be read; the policy then treats it as not reported.
    fn link_speed(&self, interface: &str) -> io::Result<Option<u64>>;
}

/// The kernel's view, in the calling thread's network namespace: `getifaddrs` for the
/// addresses, the `SIOCETHTOOL` ioctl (`ETHTOOL_GSET`, the number `ethtool IFACE` and
/// `/sys/class/net/IFACE/speed` show) for the link speed. Loopback devices, links that are
/// down and virtual devices without ethtool support report no speed. Needs no privileges.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelProbe;

impl InterfaceProbe for KernelProbe {
    fn addresses(&self) -> io::Result<Vec<InterfaceAddress>> {
        Ok(crate::sys::interface_addresses()?
            .into_iter()
            .map(|a| InterfaceAddress::new(a.addr, a.interface, a.loopback))
            .collect())
    }

    fn link_speed(&self, interface: &str) -> io::Result<Option<u64>> {
        crate::sys::link_speed_mbit(interface)
    }
}

/// A fixed interface table: for tests, or for hosts whose links are known in advance.
///
/// # Examples
///
/// ```
/// use qtoq::policy::{Policy, StaticProbe};
///
/// let probe = StaticProbe::new()
///     .interface("eth0", Some(1000), &["192.0.2.1".parse().unwrap()])
///     .loopback("lo", &["127.0.0.1".parse().unwrap()]);
/// let policy = Policy::default().with_interface_probe(probe);
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticProbe {
    addresses: Vec<InterfaceAddress>,
    speeds: HashMap<String, u64>,
}

impl StaticProbe {
    /// No interfaces.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an interface with its reported speed (Mbit/s, `None` = none reported) and
    /// addresses.
    pub fn interface(mut self, name: &str, speed_mbit: Option<u64>, addrs: &[IpAddr]) -> Self {
        if let Some(speed) = speed_mbit {
            self.speeds.insert(name.to_owned(), speed);
        }
        self.addresses
            .extend(addrs.iter().map(|a| InterfaceAddress::new(*a, name, false)));
        self
    }

    /// Adds a loopback device with its addresses.
    pub fn loopback(mut self, name: &str, addrs: &[IpAddr]) -> Self {
        self.addresses
            .extend(addrs.iter().map(|a| InterfaceAddress::new(*a, name, true)));
        self
    }
}

impl InterfaceProbe for StaticProbe {
    fn addresses(&self) -> io::Result<Vec<InterfaceAddress>> {
        Ok(self.addresses.clone())
    }

    fn link_speed(&self, interface: &str) -> io::Result<Option<u64>> {
        Ok(self.speeds.get(interface).copied())
    }
}

/// Why an interface's budget has no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum UnlimitedReason {
    /// A loopback device: traffic never leaves the host.
    Loopback,
    /// The driver reports no link speed (unknown, link down, or no ethtool support).
    NoSpeedReported,
}

impl fmt::Display for UnlimitedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnlimitedReason::Loopback => "loopback",
            UnlimitedReason::NoSpeedReported => "its driver reports no link speed",
        })
    }
}

/// Where an interface's budget comes from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum BudgetSource {
    /// Declared in the policy (`[[interface]]` with its `capacity`): the whole capacity is
    /// reservable.
    Declared {
        /// The policy that declares it (file path or the name given to
        /// [`Policy::from_toml_str`](super::Policy::from_toml_str)).
        origin: String,
    },
    /// `share` of the link speed the driver reports.
    LinkSpeed {
        /// The reported speed.
        mbit_per_s: u64,
        /// The reservable share, [`DEFAULT_RESERVABLE_SHARE`].
        share: f64,
    },
    /// No limit.
    Unlimited(UnlimitedReason),
}

impl fmt::Display for BudgetSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetSource::Declared { origin } => write!(f, "capacity declared in {origin}"),
            BudgetSource::LinkSpeed { mbit_per_s, share } => write!(
                f,
                "{} % of the {mbit_per_s} Mbit/s link speed its driver reports",
                share * 100.0
            ),
            BudgetSource::Unlimited(reason) => write!(f, "unlimited: {reason}"),
        }
    }
}

/// One interface's admission budget, from
/// [`Policy::interface_budgets`](super::Policy::interface_budgets) and
/// [`AgentStats::interfaces`](crate::agent::AgentStats::interfaces). Rates in bytes/s.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct InterfaceBudget {
    /// The interface's name.
    pub name: String,
    /// The link's capacity: the declared capacity or the reported link speed; `None` =
    /// unlimited.
    pub capacity: Option<f64>,
    /// What admission books against: the declared capacity, or the reservable share of the
    /// link speed; `None` = unlimited.
    pub reservable: Option<f64>,
    /// Booked by the reservations admitted now.
    pub reserved: f64,
    /// Reservations admitted now that are charged to it.
    pub flows: usize,
    /// Where `capacity` and `reservable` come from.
    pub source: BudgetSource,
}

impl fmt::Display for InterfaceBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interface {}: ", self.name)?;
        match self.reservable {
            Some(limit) => write!(f, "{limit:.0} B/s reservable")?,
            None => f.write_str("unlimited")?,
        }
        write!(
            f,
            " ({}), {:.0} B/s booked by {} reservations",
            self.source, self.reserved, self.flows
        )
    }
}

/// A pot admission charges a reservation to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pot {
    /// Index into the policy's declared interfaces.
    Declared(usize),
    /// Index into the discovered interfaces ([`Discovery`]); stable for the policy's life.
    Discovered(usize),
}

/// A discovered interface.
#[derive(Debug, Clone)]
pub(super) struct Link {
    pub(super) name: String,
    loopback: bool,
    /// Reservable bytes/s (`None` = unlimited) and its source, read on first use.
    budget: Option<(Option<f64>, BudgetSource)>,
}

impl Link {
    /// The link's capacity and reservable rate, once its budget was read.
    pub(super) fn budget(&self) -> Option<(Option<f64>, Option<f64>, &BudgetSource)> {
        let (reservable, source) = self.budget.as_ref()?;
        let capacity = match source {
            BudgetSource::LinkSpeed { mbit_per_s, .. } => Some(*mbit_per_s as f64 * BYTES_PER_MBIT),
            _ => None,
        };
        Some((capacity, *reservable, source))
    }
}

/// What a policy has learnt of this host's interfaces, cached for its whole life.
///
/// Admission runs on every connection setup, so it must not cost syscalls: loopback
/// addresses never ask the probe, and other addresses are answered from one snapshot of the
/// host's address list, taken on first need. A new snapshot is taken only when a flow's local
/// end is an address the snapshot lacks (an address added since), once per such address:
/// the addresses of an in-memory network are never found, and must not cost a snapshot per
/// setup. Link speeds are read once per interface. Everything is discovered again when the
/// policy is replaced ([`Policy::reload`](super::Policy::reload), e.g. after an interface
/// changed speed or an address moved); a schedule revalidation keeps the cache. A snapshot
/// is not retaken periodically: a stale one only mischarges a flow whose address moved to
/// another interface, until the next reload.
#[derive(Clone)]
pub(super) struct Discovery {
    probe: Arc<dyn InterfaceProbe>,
    /// Local address → index into `links`, from the last snapshot.
    addresses: HashMap<IpAddr, usize>,
    /// Every interface seen since the policy was made; indices never change.
    pub(super) links: Vec<Link>,
    snapshot_taken: bool,
    /// Addresses a snapshot taken for them did not hold: they make no new snapshot. Checked
    /// after `addresses`, so one a later snapshot holds is found there.
    unknown: HashSet<IpAddr>,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("probe", &self.probe)
            .field(
                "links",
                &self.links.iter().map(|l| &l.name).collect::<Vec<_>>(),
            )
            .field("addresses", &self.addresses.len())
            .finish_non_exhaustive()
    }
}

impl Default for Discovery {
    fn default() -> Self {
        Discovery::new(Arc::new(KernelProbe))
    }
}

impl Discovery {
    pub(super) fn new(probe: Arc<dyn InterfaceProbe>) -> Self {
        Discovery {
            probe,
            addresses: HashMap::new(),
            links: Vec::new(),
            snapshot_taken: false,
            unknown: HashSet::new(),
        }
    }

    /// The flow's local end and the interface it is charged to. The flow is taken to leave
    /// through the interface holding its sender address when that is local, or through
    /// loopback when its receiver is local too; a flow whose sender is not local but whose
    /// receiver is (a reservation on the receiving side) is charged to the receiver's
    /// interface. A flow neither of whose addresses is local is charged to none.
    pub(super) fn route(&mut self, flow: &Flow) -> (IpAddr, Option<usize>) {
        let (sender, receiver) = (flow.sender.ip(), flow.receiver.ip());
        if let Some(link) = self.holder(sender, true) {
            // The receiver is usually remote: the snapshot answers without a new one.
            if self.holder(receiver, false).is_some() {
                return (sender, Some(self.loopback_link()));
            }
            return (sender, Some(link));
        }
        match self.holder(receiver, true) {
            Some(link) => (receiver, Some(link)),
            None => (sender, None),
        }
    }

    /// The interface holding the local address `ip`; with `refresh`, an address the
    /// snapshot lacks makes a new snapshot, once per address.
    fn holder(&mut self, ip: IpAddr, refresh: bool) -> Option<usize> {
        if ip.is_loopback() {
            return Some(self.loopback_link());
        }
        if !self.snapshot_taken {
            self.snapshot();
        }
        if let Some(link) = self.addresses.get(&ip) {
            return Some(*link);
        }
        if !refresh || self.unknown.contains(&ip) {
            return None;
        }
        self.snapshot();
        let found = self.addresses.get(&ip).copied();
        if found.is_none() {
            if self.unknown.len() >= MAX_UNKNOWN_ADDRESSES {
                self.unknown.clear();
            }
            self.unknown.insert(ip);
        }
        found
    }

    /// Replaces the address map with the probe's current list; interfaces already known keep
    /// their index (admitted reservations refer to it) and their budget.
    fn snapshot(&mut self) {
        self.snapshot_taken = true;
        match self.probe.addresses() {
            Ok(list) => {
                self.addresses.clear();
                for a in list {
                    let link = self.link(&a.interface, a.loopback);
                    self.addresses.insert(a.addr, link);
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot list the host's interfaces; flows are charged to no interface"
                );
            }
        }
    }

    fn link(&mut self, name: &str, loopback: bool) -> usize {
        if let Some(i) = self.links.iter().position(|l| l.name == name) {
            self.links[i].loopback |= loopback;
            return i;
        }
        self.links.push(Link {
            name: name.to_owned(),
            loopback,
            budget: None,
        });
        self.links.len() - 1
    }

    /// The loopback device: the one a snapshot flagged, else [`LOOPBACK_INTERFACE`].
    fn loopback_link(&mut self) -> usize {
        match self.links.iter().position(|l| l.loopback) {
            Some(i) => i,
            None => self.link(LOOPBACK_INTERFACE, true),
        }
    }

    /// Reads the budget of `link` unless known: reservable bytes/s (`None` = unlimited).
    pub(super) fn budget(&mut self, link: usize) -> Option<f64> {
        if let Some((reservable, _)) = &self.links[link].budget {
            return *reservable;
        }
        let l = &self.links[link];
        let (reservable, source) = if l.loopback {
            (None, BudgetSource::Unlimited(UnlimitedReason::Loopback))
        } else {
            let speed = self.probe.link_speed(&l.name).unwrap_or_else(|e| {
                tracing::warn!(
                    interface = %l.name,
                    error = %e,
                    "cannot read the link speed; the interface is unlimited"
                );
                None
            });
            match speed {
                Some(mbit_per_s) => (
                    Some(mbit_per_s as f64 * BYTES_PER_MBIT * DEFAULT_RESERVABLE_SHARE),
                    BudgetSource::LinkSpeed {
                        mbit_per_s,
                        share: DEFAULT_RESERVABLE_SHARE,
                    },
                ),
                None => (
                    None,
                    BudgetSource::Unlimited(UnlimitedReason::NoSpeedReported),
                ),
            }
        };
        tracing::debug!(interface = %l.name, reservable, %source, "interface budget discovered");
        self.links[link].budget = Some((reservable, source));
        reservable
    }

    /// Takes a snapshot if none was taken and reads every interface's budget: for a full
    /// report of the host's interfaces.
    pub(super) fn discover_all(&mut self) {
        if !self.snapshot_taken {
            self.snapshot();
        }
        for link in 0..self.links.len() {
            self.budget(link);
        }
    }
}
