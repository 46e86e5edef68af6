//! The TOML policy file: raw (spanned) representation and its validation into a [`Policy`].
//!
//! Parsing happens in two passes: `toml` + serde produce the raw tables with the byte span of
//! every value, then validation turns them into typed rules. Both passes report the first
//! problem as `file:line:column: message`; nothing is applied until the whole file is valid.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::integrity::{Algorithm, Key, KeyChain, KeyError, KeyId, Prefix, Secret};

use super::matching::{parse_dscp, parse_protocol, Cidr, PortRange, Schedule};
use super::units::{parse_rate, parse_size};
use super::{
    HostLimits, InterfaceSpec, Limits, Match, Policy, PolicyError, PolicyRule, Pool, Service,
    Unmatched, MAX_PROGRAM_NAME, MAX_SECRET_FILE_BYTES,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    host: Option<RawHost>,
    #[serde(default, rename = "pool")]
    pools: Vec<RawPool>,
    #[serde(default, rename = "interface")]
    interfaces: Vec<RawInterface>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
    #[serde(default)]
    integrity: Vec<RawIntegrity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegrity {
    peer: Spanned<String>,
    key_id: Spanned<i64>,
    algorithm: Spanned<String>,
    secret: Option<Spanned<RawSecret>>,
    secret_file: Option<Spanned<String>>,
}

/// `secret = "…"`: taken as any TOML value so that a value of the wrong type is refused
/// without serde quoting it back (it may be someone's secret); `Debug` never shows it.
#[derive(Deserialize)]
#[serde(from = "toml::Value")]
struct RawSecret(Result<String, &'static str>);

impl From<toml::Value> for RawSecret {
    fn from(value: toml::Value) -> Self {
        RawSecret(match value {
            toml::Value::String(text) => Ok(text),
            other => Err(other.type_str()),
        })
    }
}

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawSecret(..)")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    max_rate: Option<Spanned<RawValue>>,
    max_flow_rate: Option<Spanned<RawValue>>,
    max_flows: Option<Spanned<i64>>,
    unmatched: Option<Spanned<String>>,
    utc_offset: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: Spanned<String>,
    total_rate: Spanned<RawValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Spanned<String>,
    capacity: Spanned<RawValue>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    #[serde(default)]
    priority: Option<Spanned<i64>>,
    service: Spanned<String>,
    #[serde(default)]
    signaling: Option<bool>,
    dscp: Option<Spanned<RawValue>>,
    #[serde(rename = "match", default)]
    matches: Option<RawMatch>,
    rate: Option<Spanned<RawValue>>,
    bucket: Option<Spanned<RawValue>>,
    peak: Option<Spanned<RawValue>>,
    min_policed: Option<Spanned<RawValue>>,
    max_packet: Option<Spanned<RawValue>>,
    max_flows: Option<Spanned<i64>>,
    total_rate: Option<Spanned<RawValue>>,
    pool: Option<Spanned<String>>,
    schedule: Option<RawSchedule>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    local_addr: Option<Spanned<String>>,
    local_port: Option<Spanned<RawValue>>,
    remote_addr: Option<Spanned<String>>,
    remote_port: Option<Spanned<RawValue>>,
    protocol: Option<Spanned<RawValue>>,
    user: Option<Spanned<RawValue>>,
    program: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    #[serde(default)]
    days: Vec<Spanned<String>>,
    time: Option<Spanned<String>>,
}

/// A number or a string with units: TOML lets users write either.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawValue {
    Integer(i64),
    Float(f64),
    Text(String),
}

impl RawValue {
    fn as_text(&self) -> String {
        match self {
            RawValue::Integer(n) => n.to_string(),
            RawValue::Float(x) => x.to_string(),
            RawValue::Text(s) => s.clone(),
        }
    }
}

/// Turns byte spans into `file:line:column` errors.
struct Locator<'a> {
    origin: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> PolicyError {
        let (line, column) = match span {
            Some(span) => line_column(self.text, span.start),
            None => (1, 1),
        };
        PolicyError::Invalid {
            file: self.origin.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    fn at<T>(&self, value: &Spanned<T>, message: impl Into<String>) -> PolicyError {
        self.error(Some(value.span()), message)
    }

    fn rate(&self, value: &Spanned<RawValue>, what: &str) -> Result<f64, PolicyError> {
        let rate = parse_rate(&value.get_ref().as_text())
            .map_err(|e| self.at(value, format!("{what}: {e}")))?;
        // Tested as the f32 RSVP signals it: `1e-50` would otherwise pass and become 0.
        if rate as f32 <= 0.0 {
            return Err(self.at(value, format!("{what} must be greater than zero")));
        }
        Ok(rate)
    }

    fn size(&self, value: &Spanned<RawValue>, what: &str) -> Result<f64, PolicyError> {
        parse_size(&value.get_ref().as_text()).map_err(|e| self.at(value, format!("{what}: {e}")))
    }

    fn count(&self, value: &Spanned<i64>, what: &str) -> Result<u32, PolicyError> {
        u32::try_from(*value.get_ref())
            .map_err(|_| self.at(value, format!("{what} must be between 0 and {}", u32::MAX)))
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Parses and validates a whole policy file; user names are looked up in the system's
/// user database, and a relative `secret_file` is read from `base` (the policy file's
/// directory; `None`: the current directory).
pub(super) fn parse(text: &str, origin: &str, base: Option<&Path>) -> Result<Policy, PolicyError> {
    parse_with_users(text, origin, base, UserDatabase::System(None))
}

fn parse_with_users(
    text: &str,
    origin: &str,
    base: Option<&Path>,
    mut users: UserDatabase,
) -> Result<Policy, PolicyError> {
    let locator = Locator { origin, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        // serde's untagged-enum message is unhelpful; say what the value may be.
        let message = e.message().trim().replace(
            "data did not match any variant of untagged enum RawValue",
            "expected a number or a string with a unit",
        );
        locator.error(e.span(), message)
    })?;

    let host = match &raw.host {
        None => HostLimits::default(),
        Some(h) => validate_host(&locator, h)?,
    };

    let mut pools = Vec::new();
    for p in &raw.pools {
        if pools.iter().any(|q: &Pool| q.name == *p.name.get_ref()) {
            return Err(locator.at(&p.name, format!("duplicate pool `{}`", p.name.get_ref())));
        }
        pools.push(Pool {
            name: p.name.get_ref().clone(),
            total_rate: locator.rate(&p.total_rate, "pool total_rate")?,
        });
    }

    let mut interfaces = Vec::new();
    for i in &raw.interfaces {
        let name = i.name.get_ref();
        if !valid_interface_name(name) {
            return Err(locator.at(
                &i.name,
                format!(
                    "`{}` is not a valid interface name (1-15 bytes, not `.` or `..`, no `/`, \
                     `:`, whitespace or control characters)",
                    name.escape_debug()
                ),
            ));
        }
        if interfaces.iter().any(|x: &InterfaceSpec| x.name == *name) {
            return Err(locator.at(&i.name, format!("duplicate interface `{name}`")));
        }
        let mut addresses = Vec::new();
        for a in &i.addresses {
            addresses.push(a.get_ref().parse::<Cidr>().map_err(|e| locator.at(a, e))?);
        }
        interfaces.push(InterfaceSpec {
            name: name.clone(),
            capacity: locator.rate(&i.capacity, "interface capacity")?,
            addresses,
        });
    }

    let mut names = HashSet::new();
    let mut rules = Vec::new();
    for (index, r) in raw.rules.iter().enumerate() {
        let rule = validate_rule(&locator, r, &pools, &mut users, index)?;
        if !names.insert(rule.name.clone()) {
            return Err(locator.at(&r.name, format!("duplicate rule name `{}`", rule.name)));
        }
        rules.push(rule);
    }

    let integrity = validate_integrity(&locator, &raw.integrity, base)?;

    Ok(Policy::from_parts(
        Some(origin.to_string()),
        host,
        rules,
        pools,
        interfaces,
        integrity,
    ))
}

/// The `[[integrity]]` tables, in file order (the last key covering a neighbor sends).
fn validate_integrity(
    locator: &Locator<'_>,
    tables: &[RawIntegrity],
    base: Option<&Path>,
) -> Result<KeyChain, PolicyError> {
    let mut keys = Vec::with_capacity(tables.len());
    for t in tables {
        let peer: Prefix = t
            .peer
            .get_ref()
            .parse()
            .map_err(|e: KeyError| locator.at(&t.peer, e.to_string()))?;
        let key_id = u64::try_from(*t.key_id.get_ref())
            .ok()
            .and_then(KeyId::new)
            .ok_or_else(|| {
                locator.at(
                    &t.key_id,
                    format!(
                        "integrity key_id {} is not a 48-bit Key Identifier: it is between 0 \
                         and {}",
                        t.key_id.get_ref(),
                        KeyId::MAX
                    ),
                )
            })?;
        let algorithm: Algorithm = t
            .algorithm
            .get_ref()
            .parse()
            .map_err(|e: KeyError| locator.at(&t.algorithm, e.to_string()))?;
        let secret =
            match (&t.secret, &t.secret_file) {
                (Some(_), Some(file)) => {
                    return Err(locator.at(
                        file,
                        "give either secret or secret_file in an [[integrity]] table, not both",
                    ))
                }
                (None, None) => {
                    return Err(locator.at(
                        &t.peer,
                        "this [[integrity]] table has no secret: give secret = \"…\" or \
                     secret_file = \"path\"",
                    ))
                }
                (Some(inline), None) => match &inline.get_ref().0 {
                    Ok(text) => Secret::new(text.as_bytes())
                        .map_err(|e| locator.at(inline, e.to_string()))?,
                    Err(kind) => {
                        return Err(locator.at(
                            inline,
                            format!("integrity secret must be a string, not {kind}"),
                        ))
                    }
                },
                (None, Some(file)) => read_secret_file(&resolve(base, file.get_ref()))
                    .map_err(|e| locator.at(file, e))?,
            };
        keys.push(Key {
            peer,
            key_id,
            algorithm,
            secret,
        });
        // Checked as each key is added, so the error points at the second of a pair.
        if let Err(e) = KeyChain::new(keys.clone()) {
            return Err(locator.at(&t.key_id, e.to_string()));
        }
    }
    KeyChain::new(keys).map_err(|e| locator.error(None, e.to_string()))
}

/// `file` as written, relative to `base` (the policy file's directory) unless absolute.
fn resolve(base: Option<&Path>, file: &str) -> PathBuf {
    let file = Path::new(file);
    match base {
        Some(base) if file.is_relative() => base.join(file),
        _ => file.to_path_buf(),
    }
}

/// Reads a `secret_file`: a regular file, private to its owner (no permission bit for the
/// group or others, as ssh requires of private keys), not empty once one trailing newline
/// (`\n` or `\r\n`) is removed. Errors name the file and never show its contents.
fn read_secret_file(path: &Path) -> Result<Secret, String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    let shown = path.display();
    let io = |e: std::io::Error| format!("cannot read integrity secret_file {shown}: {e}");
    let (opened, metadata) = super::open_regular_file(path).map_err(io)?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "integrity secret_file {shown} is accessible to its group or others (mode \
             {mode:04o}): a secret must be private to its owner, run `chmod 600 {shown}`"
        ));
    }
    if metadata.len() > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "integrity secret_file {shown} is {} bytes, more than the {MAX_SECRET_FILE_BYTES} \
             accepted",
            metadata.len()
        ));
    }
    let mut bytes = Vec::new();
    opened
        .take(MAX_SECRET_FILE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    Secret::new(bytes).map_err(|_| {
        format!(
            "integrity secret_file {shown} is empty (a trailing newline is not part of the secret)"
        )
    })
}

/// The kernel's rule (`dev_valid_name`), plus no control characters: netlink carries the name
/// NUL-terminated, so a NUL or newline would never name a real interface.
fn valid_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

fn validate_host(locator: &Locator<'_>, h: &RawHost) -> Result<HostLimits, PolicyError> {
    let mut host = HostLimits::default();
    if let Some(rate) = &h.max_rate {
        host.max_rate = Some(locator.rate(rate, "host max_rate")?);
    }
    if let Some(rate) = &h.max_flow_rate {
        host.max_flow_rate = Some(locator.rate(rate, "host max_flow_rate")?);
    }
    if let Some(n) = &h.max_flows {
        host.max_flows = Some(locator.count(n, "host max_flows")?);
    }
    if let Some(u) = &h.unmatched {
        host.unmatched = match u.get_ref().as_str() {
            "admit" => Unmatched::Admit,
            "deny" => Unmatched::Deny,
            other => {
                return Err(locator.at(
                    u,
                    format!("unmatched must be \"admit\" or \"deny\", not `{other}`"),
                ))
            }
        };
    }
    if let Some(off) = &h.utc_offset {
        host.utc_offset_minutes =
            parse_utc_offset(off.get_ref()).map_err(|e| locator.at(off, e))?;
    }
    Ok(host)
}

/// `"+02:00"`, `"-05:30"`, `"Z"` → minutes east of UTC.
fn parse_utc_offset(text: &str) -> Result<i32, String> {
    let bad = || format!("utc_offset `{text}` must look like `+01:00`, `-05:30` or `Z`");
    if text == "Z" || text == "UTC" {
        return Ok(0);
    }
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    // Two digits each: `parse` alone would take `+-05:00` or `+01:-30` as offsets.
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return Err(bad());
    }
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 14 || m >= 60 {
        return Err(bad());
    }
    Ok(sign * (h * 60 + m))
}

fn validate_rule(
    locator: &Locator<'_>,
    r: &RawRule,
    pools: &[Pool],
    users: &mut UserDatabase,
    index: usize,
) -> Result<PolicyRule, PolicyError> {
    let name = r.name.get_ref().trim().to_string();
    if name.is_empty() {
        return Err(locator.at(&r.name, "rule name must not be empty"));
    }
    let service = match r.service.get_ref().as_str() {
        "controlled-load" => Service::ControlledLoad,
        "guaranteed" => Service::Guaranteed,
        "diffserv" => Service::DiffServ,
        other => {
            return Err(locator.at(
                &r.service,
                format!(
                    "unknown service `{other}`: use \"controlled-load\", \"guaranteed\" or \
                     \"diffserv\""
                ),
            ))
        }
    };
    let signaling = r.signaling.unwrap_or(service != Service::DiffServ);
    if signaling && service == Service::DiffServ {
        return Err(locator.at(
            &r.service,
            "a diffserv rule only marks packets and cannot be signaled: set signaling = false",
        ));
    }
    let dscp = match &r.dscp {
        None => None,
        Some(d) => Some(parse_dscp(&d.get_ref().as_text()).map_err(|e| locator.at(d, e))?),
    };
    if service == Service::DiffServ && dscp.is_none() {
        return Err(locator.at(&r.service, "a diffserv rule needs a dscp"));
    }

    let m = r.matches.as_ref();
    let default_match = RawMatch::default();
    let m = m.unwrap_or(&default_match);
    let cidr = |v: &Option<Spanned<String>>| -> Result<Option<Cidr>, PolicyError> {
        v.as_ref()
            .map(|s| s.get_ref().parse::<Cidr>().map_err(|e| locator.at(s, e)))
            .transpose()
    };
    let ports = |v: &Option<Spanned<RawValue>>| -> Result<Option<PortRange>, PolicyError> {
        v.as_ref()
            .map(|s| {
                s.get_ref()
                    .as_text()
                    .parse::<PortRange>()
                    .map_err(|e| locator.at(s, e))
            })
            .transpose()
    };
    let matches = Match {
        local_addr: cidr(&m.local_addr)?,
        local_port: ports(&m.local_port)?,
        remote_addr: cidr(&m.remote_addr)?,
        remote_port: ports(&m.remote_port)?,
        protocol: m
            .protocol
            .as_ref()
            .map(|p| parse_protocol(&p.get_ref().as_text()).map_err(|e| locator.at(p, e)))
            .transpose()?,
        user: m
            .user
            .as_ref()
            .map(|u| resolve_user(u.get_ref(), users).map_err(|e| locator.at(u, e)))
            .transpose()?,
        program: m
            .program
            .as_ref()
            .map(|p| program_name(p.get_ref()).map_err(|e| locator.at(p, e)))
            .transpose()?,
    };

    let limits = Limits {
        rate: r
            .rate
            .as_ref()
            .map(|v| locator.rate(v, "rate"))
            .transpose()?,
        bucket: r
            .bucket
            .as_ref()
            .map(|v| locator.size(v, "bucket"))
            .transpose()?,
        peak: r
            .peak
            .as_ref()
            .map(|v| locator.rate(v, "peak"))
            .transpose()?,
        min_policed: r
            .min_policed
            .as_ref()
            .map(|v| whole_bytes(locator, v, "min_policed"))
            .transpose()?,
        max_packet: r
            .max_packet
            .as_ref()
            .map(|v| whole_bytes(locator, v, "max_packet"))
            .transpose()?,
    };
    if let (Some(rate), Some(peak), Some(span)) = (limits.rate, limits.peak, r.peak.as_ref()) {
        if peak < rate {
            return Err(locator.at(span, "peak must not be lower than rate"));
        }
    }
    if let (Some(m_), Some(big_m), Some(span)) =
        (limits.min_policed, limits.max_packet, r.max_packet.as_ref())
    {
        if big_m < m_ {
            return Err(locator.at(span, "max_packet must not be smaller than min_policed"));
        }
    }
    if !signaling && service != Service::DiffServ && limits.rate.is_none() {
        return Err(locator.at(
            &r.name,
            "a rule with signaling = false needs a rate: it is the reservation the rule installs",
        ));
    }

    let pool = match &r.pool {
        None => None,
        Some(p) => {
            let found = pools.iter().position(|q| q.name == *p.get_ref());
            Some(found.map(|_| p.get_ref().clone()).ok_or_else(|| {
                locator.at(
                    p,
                    format!("unknown pool `{}`: declare it with [[pool]]", p.get_ref()),
                )
            })?)
        }
    };

    let schedule = match &r.schedule {
        None => None,
        Some(s) => {
            let days: Vec<&str> = s.days.iter().map(|d| d.get_ref().as_str()).collect();
            match Schedule::parse(&days, s.time.as_ref().map(|t| t.get_ref().as_str())) {
                Ok(schedule) => Some(schedule),
                Err(e) => {
                    // Point at the offending entry.
                    let span = s
                        .days
                        .iter()
                        .find(|d| Schedule::parse(&[d.get_ref()], None).is_err())
                        .map(|d| d.span())
                        .or_else(|| s.time.as_ref().map(|t| t.span()))
                        .unwrap_or_else(|| r.name.span());
                    return Err(locator.error(Some(span), e));
                }
            }
        }
    };

    Ok(PolicyRule {
        name,
        priority: r.priority.as_ref().map_or(0, |p| *p.get_ref()),
        order: index,
        matches,
        service,
        signaling,
        dscp,
        limits,
        max_flows: r
            .max_flows
            .as_ref()
            .map(|n| locator.count(n, "max_flows"))
            .transpose()?,
        total_rate: r
            .total_rate
            .as_ref()
            .map(|v| locator.rate(v, "total_rate"))
            .transpose()?,
        pool,
        schedule,
    })
}

/// Where `user = "name"` is looked up: the system's `/etc/passwd` (read on first use, once
/// per file), or a given text (tests).
enum UserDatabase {
    System(Option<String>),
    #[cfg(test)]
    Text(&'static str),
}

/// Where [`UserDatabase::System`] reads users from.
const PASSWD_FILE: &str = "/etc/passwd";

impl UserDatabase {
    fn text(&mut self) -> Result<&str, String> {
        match self {
            UserDatabase::System(Some(text)) => Ok(text),
            UserDatabase::System(cached) => {
                let text = std::fs::read_to_string(PASSWD_FILE)
                    .map_err(|e| format!("cannot read {PASSWD_FILE} to resolve user names: {e}"))?;
                Ok(cached.insert(text))
            }
            #[cfg(test)]
            UserDatabase::Text(text) => Ok(text),
        }
    }
}

/// `user = "name"` (a name in the user database) or `user = 1000` (a uid) → the uid.
fn resolve_user(value: &RawValue, users: &mut UserDatabase) -> Result<u32, String> {
    match value {
        RawValue::Integer(uid) => u32::try_from(*uid)
            .ok()
            // (uid_t)-1 is no user: the kernel never gives it to a process.
            .filter(|uid| *uid != u32::MAX)
            .ok_or_else(|| {
                format!(
                    "user {uid} is not a uid: a uid is between 0 and {}",
                    u32::MAX - 1
                )
            }),
        RawValue::Float(_) => Err("user must be a user name or a uid (a whole number)".into()),
        RawValue::Text(name) => {
            if let Some(uid) = passwd_uid(users.text()?, name) {
                return Ok(uid);
            }
            let hint = if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
                format!(" (for uid {name} write the number without quotes: user = {name})")
            } else {
                " (users known only to a directory service such as LDAP are given by uid: \
                 user = 1000)"
                    .to_owned()
            };
            Err(format!(
                "unknown user `{}`: not in {PASSWD_FILE}{hint}",
                name.escape_debug()
            ))
        }
    }
}

/// The uid of `name` in `passwd(5)` text (`name:password:uid:gid:gecos:home:shell`); the
/// first entry wins, as `getpwnam` reads it. Comments, blank lines, NIS `+`/`-` entries and
/// malformed lines are skipped.
fn passwd_uid(passwd: &str, name: &str) -> Option<u32> {
    if name.is_empty() {
        return None;
    }
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        fields.next()?.trim().parse().ok()
    })
}

/// `program = "name"`, checked to be a name `/proc/<pid>/comm` can show.
fn program_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("program must not be empty".into());
    }
    if name.contains(['\0', '\n']) {
        return Err("program must not contain a NUL or a newline".into());
    }
    if name.len() > MAX_PROGRAM_NAME {
        // The kernel cuts bytes, not characters.
        let cut = (0..=MAX_PROGRAM_NAME)
            .rev()
            .find(|&i| name.is_char_boundary(i))
            .map_or("", |i| &name[..i]);
        return Err(format!(
            "program `{}` is {} bytes, but the kernel keeps only the first {MAX_PROGRAM_NAME} \
             bytes of an executable's name (/proc/<pid>/comm), so it would never match: \
             write program = \"{}\"",
            name.escape_debug(),
            name.len(),
            cut.escape_debug()
        ));
    }
    Ok(name.to_owned())
}

fn whole_bytes(
    locator: &Locator<'_>,
    value: &Spanned<RawValue>,
    what: &str,
) -> Result<u32, PolicyError> {
    let bytes = locator.size(value, what)?;
    if bytes.fract() != 0.0 || bytes > f64::from(u32::MAX) {
        return Err(locator.at(value, format!("{what} must be a whole number of bytes")));
    }
    Ok(bytes as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters() {
        let text = "a\nbé = 1\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 2), (2, 1));
        // "bé " is 4 bytes, 3 characters.
        assert_eq!(line_column(text, 2 + 4), (2, 4));
        assert_eq!(line_column(text, 999), (3, 1));
    }

    const PASSWD: &str = "\
# a comment
root:x:0:0:root:/root:/bin/bash

+nisuser
alice:x:1000:1000:Alice:/home/alice:/bin/sh
broken:x
bob:x:not-a-number:1001::/home/bob:/bin/sh
alice:x:2000:2000:second alice:/home/a2:/bin/sh
";

    fn rule_with(key: &str) -> String {
        format!("[[rule]]\nname = \"r\"\nservice = \"controlled-load\"\nmatch = {{ {key} }}\n")
    }

    fn parse_users(key: &str) -> Result<Policy, PolicyError> {
        parse_with_users(&rule_with(key), "t.toml", None, UserDatabase::Text(PASSWD))
    }

    #[test]
    fn passwd_lines_give_uids() {
        assert_eq!(passwd_uid(PASSWD, "root"), Some(0));
        // The first entry wins, as getpwnam reads the file.
        assert_eq!(passwd_uid(PASSWD, "alice"), Some(1000));
        assert_eq!(passwd_uid(PASSWD, "broken"), None);
        assert_eq!(passwd_uid(PASSWD, "bob"), None);
        assert_eq!(passwd_uid(PASSWD, "+nisuser"), None);
        assert_eq!(passwd_uid(PASSWD, "carol"), None);
        assert_eq!(passwd_uid(PASSWD, ""), None);
    }

    #[test]
    fn user_names_resolve_at_load_time() {
        let policy = parse_users(r#"user = "alice""#).unwrap();
        assert_eq!(policy.rules()[0].matches.user, Some(1000));
        let policy = parse_users("user = 0").unwrap();
        assert_eq!(policy.rules()[0].matches.user, Some(0));
    }

    #[test]
    fn unknown_users_and_bad_uids_are_load_errors() {
        let at = |key: &str| match parse_users(key) {
            Err(PolicyError::Invalid {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("{key}: {other:?}"),
        };
        // Line 4: `match = { user = "carol" }`; the value starts at column 18.
        let (line, column, message) = at(r#"user = "carol""#);
        assert_eq!((line, column), (4, 18));
        assert!(message.contains("unknown user `carol`"), "{message}");
        assert!(message.contains("/etc/passwd"), "{message}");
        let (_, _, message) = at(r#"user = "1000""#);
        assert!(message.contains("user = 1000"), "{message}");
        for bad in [
            "user = -1",
            "user = 4294967295",
            "user = 4294967296",
            "user = 1.5",
        ] {
            let (line, column, _) = at(bad);
            assert_eq!((line, column), (4, 18), "{bad}");
        }
    }

    #[test]
    fn program_names_are_what_comm_can_show() {
        let policy = parse_users(r#"program = "fifteen-bytes-ok""#);
        assert!(policy.is_err(), "16 bytes");
        let policy = parse_users(r#"program = "fifteen-bytes-o""#).unwrap();
        assert_eq!(
            policy.rules()[0].matches.program.as_deref(),
            Some("fifteen-bytes-o")
        );
        let Err(PolicyError::Invalid {
            line,
            column,
            message,
            ..
        }) = parse_users(r#"program = "postgres-replicator""#)
        else {
            panic!("a 19-byte program name was accepted");
        };
        assert_eq!((line, column), (4, 21));
        assert!(message.contains("only the first 15 bytes"), "{message}");
        assert!(
            message.contains(r#"program = "postgres-replic""#),
            "{message}"
        );
        // Cut at a character boundary: "é" is two bytes.
        let err = parse_users(r#"program = "aaaaaaaaaaaaaaé""#).unwrap_err();
        assert!(err.to_string().contains(r#""aaaaaaaaaaaaaa""#), "{err}");
        assert!(parse_users(r#"program = """#).is_err());
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("+02:00"), Ok(120));
        assert_eq!(parse_utc_offset("-05:30"), Ok(-330));
        assert_eq!(parse_utc_offset("Z"), Ok(0));
        assert!(parse_utc_offset("2").is_err());
        assert!(parse_utc_offset("+15:00").is_err());
    }
}
