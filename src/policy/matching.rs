//! The pieces a policy rule matches on: address prefixes, port ranges, protocols, DSCP names
//! and schedules (days of the week and a time-of-day window).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// An address prefix such as `10.0.0.0/8` or `2001:db8::/32`; a plain address is a `/32`
/// (`/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// The prefix `network/prefix_len`; host bits of `network` are cleared.
    ///
    /// # Errors
    ///
    /// When `prefix_len` is longer than the address.
    pub fn new(network: IpAddr, prefix_len: u8) -> Result<Self, InvalidValue> {
        let max = if network.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(format!(
                "prefix length /{prefix_len} is longer than the address ({max} bits)"
            )
            .into());
        }
        let network = mask(network, prefix_len);
        Ok(Cidr {
            network,
            prefix_len,
        })
    }

    /// Whether `addr` lies in the prefix. IPv4 prefixes also match IPv4-mapped IPv6 addresses
    /// (`::ffff:10.0.0.1`), which is how dual-stack sockets report IPv4 peers.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match (self.network, addr) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return false,
            },
            (_, addr) => addr,
        };
        if self.network.is_ipv4() != addr.is_ipv4() {
            return false;
        }
        mask(addr, self.prefix_len) == self.network
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }
}

fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6((bits & keep).into())
        }
    }
}

impl FromStr for Cidr {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 or IPv6 address"))?;
        let prefix_len = match len {
            Some(len) => len
                .trim()
                .parse()
                .map_err(|_| format!("`{len}` is not a prefix length"))?,
            None if network.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(network, prefix_len)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// An inclusive port range; a single port is `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest port matched.
    pub first: u16,
    /// Highest port matched.
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = InvalidValue;

    /// `"5000"` or `"5000-5100"`.
    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        let parse = |s: &str| {
            s.trim()
                .parse::<u16>()
                .map_err(|_| format!("`{s}` is not a port number (0-65535)"))
        };
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let port = parse(text)?;
                (port, port)
            }
        };
        if first > last {
            return Err(format!("port range `{text}` is empty (first > last)").into());
        }
        Ok(PortRange { first, last })
    }
}

/// Parses an IP protocol: `tcp`, `udp` or a number 0-255.
pub(crate) fn parse_protocol(text: &str) -> Result<u8, InvalidValue> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        other => other
            .parse()
            .map_err(|_| format!("unknown protocol `{text}`: use `tcp`, `udp` or 0-255").into()),
    }
}

/// Parses a DiffServ code point name: `EF`, `AF11`…`AF43`, `CS0`…`CS7`, `BE`/`default`,
/// `VA` (voice-admit), `LE` (lower effort), or a number 0-63.
///
/// # Errors
///
/// A message listing what is accepted.
///
/// # Examples
///
/// ```
/// use qtoq::policy::parse_dscp;
/// assert_eq!(parse_dscp("EF"), Ok(46));
/// assert_eq!(parse_dscp("af41"), Ok(34));
/// assert_eq!(parse_dscp("CS3"), Ok(24));
/// assert!(parse_dscp("AF51").is_err());
/// ```
pub fn parse_dscp(text: &str) -> Result<u8, InvalidValue> {
    let upper = text.trim().to_ascii_uppercase();
    let bad = || {
        format!("unknown DSCP `{text}`: use EF, AF11-AF43, CS0-CS7, BE, VA, LE or a number 0-63")
    };
    let digits = |s: &str| -> Option<Vec<u8>> {
        s.bytes()
            .map(|b| b.is_ascii_digit().then(|| b - b'0'))
            .collect()
    };
    match upper.as_str() {
        "EF" => Ok(46),
        "BE" | "DEFAULT" => Ok(0),
        "VA" | "VOICE-ADMIT" => Ok(44),
        "LE" => Ok(1),
        s if s.starts_with("AF") => match digits(&s[2..]).as_deref() {
            Some(&[class @ 1..=4, drop @ 1..=3]) => Ok(8 * class + 2 * drop),
            _ => Err(bad().into()),
        },
        s if s.starts_with("CS") => match digits(&s[2..]).as_deref() {
            Some(&[class @ 0..=7]) => Ok(8 * class),
            _ => Err(bad().into()),
        },
        s => match s.parse::<u8>() {
            Ok(n) if n <= 63 => Ok(n),
            _ => Err(bad().into()),
        },
    }
}

/// Day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    fn index(self) -> usize {
        self as usize
    }

    fn parse(text: &str) -> Result<Weekday, InvalidValue> {
        let lower = text.trim().to_ascii_lowercase();
        let prefix = lower.get(..3).unwrap_or("");
        let day = match prefix {
            "mon" => Weekday::Mon,
            "tue" => Weekday::Tue,
            "wed" => Weekday::Wed,
            "thu" => Weekday::Thu,
            "fri" => Weekday::Fri,
            "sat" => Weekday::Sat,
            "sun" => Weekday::Sun,
            _ => return Err(format!("unknown day `{text}`: use mon, tue, … sun").into()),
        };
        Ok(day)
    }
}

/// A point in local time as schedules see it: the day of the week and the minute of the day.
///
/// Evaluation takes it as an argument, so schedules are testable; [`PolicyTime::from_system`]
/// derives it from the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyTime {
    /// Day of the week.
    pub weekday: Weekday,
    /// Minutes since local midnight, 0-1439.
    pub minute_of_day: u16,
}

impl PolicyTime {
    /// `weekday` at `hour:minute` (values out of range are wrapped into the day).
    pub fn new(weekday: Weekday, hour: u8, minute: u8) -> Self {
        PolicyTime {
            weekday,
            minute_of_day: (u16::from(hour) * 60 + u16::from(minute)) % MINUTES_PER_DAY,
        }
    }

    /// The local time of `time` at a fixed offset from UTC in minutes (`+60` for UTC+1). There
    /// is no time-zone database: daylight-saving changes need a policy reload with the new
    /// offset.
    pub fn from_system(time: SystemTime, utc_offset_minutes: i32) -> Self {
        let secs = match time.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        let minutes = secs.div_euclid(60) + i64::from(utc_offset_minutes);
        let days = minutes.div_euclid(i64::from(MINUTES_PER_DAY));
        let minute_of_day = minutes.rem_euclid(i64::from(MINUTES_PER_DAY)) as u16;
        // 1970-01-01 was a Thursday (index 3 from Monday).
        let weekday = Weekday::ALL[(days + 3).rem_euclid(7) as usize];
        PolicyTime {
            weekday,
            minute_of_day,
        }
    }
}

const MINUTES_PER_DAY: u16 = 24 * 60;

/// When a rule applies: a set of days and an optional time-of-day window.
///
/// The window is `[start, end)` in local minutes; `start > end` wraps past midnight
/// (`22:00-06:00`). Days and window are checked independently against the same local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    days: [bool; 7],
    window: Option<(u16, u16)>,
}

impl Schedule {
    /// Parses `days` (each entry a day like `mon` or a range like `mon-fri`; empty = every day)
    /// and an optional `"HH:MM-HH:MM"` window.
    ///
    /// # Errors
    ///
    /// A message naming the bad day or time.
    pub fn parse(days: &[&str], window: Option<&str>) -> Result<Self, InvalidValue> {
        let mut set = [days.is_empty(); 7];
        for entry in days {
            match entry.split_once('-') {
                Some((a, b)) => {
                    let (first, last) = (Weekday::parse(a)?, Weekday::parse(b)?);
                    let mut day = first.index();
                    loop {
                        set[day] = true;
                        if day == last.index() {
                            break;
                        }
                        day = (day + 1) % 7;
                    }
                }
                None => set[Weekday::parse(entry)?.index()] = true,
            }
        }
        let window = match window {
            None => None,
            Some(text) => {
                let (a, b) = text
                    .split_once('-')
                    .ok_or_else(|| format!("time window `{text}` must look like `08:00-18:00`"))?;
                // `24:00` ends the day; as a start it is the next midnight, i.e. `00:00`.
                let (start, end) = (parse_clock(a)? % MINUTES_PER_DAY, parse_clock(b)?);
                if start == end {
                    return Err(format!("time window `{text}` is empty").into());
                }
                Some((start, end))
            }
        };
        Ok(Schedule { days: set, window })
    }

    /// Whether the schedule is active at `now`.
    pub fn is_active(&self, now: PolicyTime) -> bool {
        if !self.days[now.weekday.index()] {
            return false;
        }
        match self.window {
            None => true,
            Some((start, end)) if start < end => (start..end).contains(&now.minute_of_day),
            Some((start, end)) => now.minute_of_day >= start || now.minute_of_day < end,
        }
    }
}

/// `"HH:MM"` → minutes, 0-1440; `24:00` (1440) is allowed as the end of the day, so that
/// `00:00-24:00` is the whole day rather than an empty window.
fn parse_clock(text: &str) -> Result<u16, InvalidValue> {
    let bad = || format!("`{text}` is not a time of day like `08:30`");
    let (h, m) = text.trim().split_once(':').ok_or_else(bad)?;
    // Digits only: `parse` would also take `+8`.
    let all_digits =
        |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(h) || !all_digits(m) {
        return Err(bad().into());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad().into());
    }
    Ok(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!net.contains("2001:db8::1".parse().unwrap()));
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(host.prefix_len(), 32);
        assert!(host.contains("192.0.2.7".parse().unwrap()));
        assert!(!host.contains("192.0.2.8".parse().unwrap()));
        let any: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("203.0.113.1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        // Host bits are cleared, so the display shows the network.
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn port_ranges() {
        let r: PortRange = "5000-5100".parse().unwrap();
        assert!(r.contains(5000) && r.contains(5100) && !r.contains(5101) && !r.contains(4999));
        let single: PortRange = "80".parse().unwrap();
        assert!(single.contains(80) && !single.contains(81));
        assert!("6000-5000".parse::<PortRange>().is_err());
        assert!("70000".parse::<PortRange>().is_err());
    }

    #[test]
    fn dscp_names() {
        assert_eq!(parse_dscp("EF"), Ok(46));
        assert_eq!(parse_dscp("AF11"), Ok(10));
        assert_eq!(parse_dscp("AF43"), Ok(38));
        assert_eq!(parse_dscp("cs7"), Ok(56));
        assert_eq!(parse_dscp("BE"), Ok(0));
        assert_eq!(parse_dscp("63"), Ok(63));
        for bad in ["AF44", "AF5", "CS8", "64", "XX", "AF"] {
            assert!(parse_dscp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schedules_days_and_windows() {
        let office = Schedule::parse(&["mon-fri"], Some("08:00-18:00")).unwrap();
        assert!(office.is_active(PolicyTime::new(Weekday::Wed, 12, 0)));
        assert!(office.is_active(PolicyTime::new(Weekday::Mon, 8, 0)));
        assert!(!office.is_active(PolicyTime::new(Weekday::Mon, 18, 0)));
        assert!(!office.is_active(PolicyTime::new(Weekday::Sat, 12, 0)));
        let night = Schedule::parse(&[], Some("22:00-06:00")).unwrap();
        assert!(night.is_active(PolicyTime::new(Weekday::Sun, 23, 30)));
        assert!(night.is_active(PolicyTime::new(Weekday::Tue, 5, 59)));
        assert!(!night.is_active(PolicyTime::new(Weekday::Tue, 6, 0)));
        let weekend = Schedule::parse(&["fri-mon"], None).unwrap();
        assert!(weekend.is_active(PolicyTime::new(Weekday::Sun, 3, 0)));
        assert!(weekend.is_active(PolicyTime::new(Weekday::Mon, 3, 0)));
        assert!(!weekend.is_active(PolicyTime::new(Weekday::Tue, 3, 0)));
        assert!(Schedule::parse(&["funday"], None).is_err());
        assert!(Schedule::parse(&[], Some("25:00-26:00")).is_err());
        assert!(Schedule::parse(&[], Some("10:00-10:00")).is_err());
    }

    #[test]
    fn policy_time_from_system_clock() {
        // 2024-01-01T00:00:00Z was a Monday.
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_704_067_200);
        assert_eq!(
            PolicyTime::from_system(t, 0),
            PolicyTime::new(Weekday::Mon, 0, 0)
        );
        // UTC-1 is still Sunday 23:00.
        assert_eq!(
            PolicyTime::from_system(t, -60),
            PolicyTime::new(Weekday::Sun, 23, 0)
        );
        assert_eq!(
            PolicyTime::from_system(t, 90),
            PolicyTime::new(Weekday::Mon, 1, 30)
        );
    }
}

/// A policy value that does not parse (an address prefix, port range, DSCP name, day, time
/// window, rate or size): what was wrong and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidValue {
    message: String,
}

impl InvalidValue {
    /// What was wrong and what would be accepted, e.g. "`99:00` is not a time of day like
    /// `08:30`".
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<String> for InvalidValue {
    fn from(message: String) -> Self {
        InvalidValue { message }
    }
}

impl From<InvalidValue> for String {
    fn from(invalid: InvalidValue) -> Self {
        invalid.message
    }
}
