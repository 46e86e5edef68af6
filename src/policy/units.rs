//! Human-readable rates and sizes: `10Mbit`, `1.5MB/s`, `64KiB`.
//!
//! Accepted forms (whitespace between number and unit is allowed, the number may have a
//! fraction):
//!
//! * **rates** — a bare number is bytes per second. Bit rates: `bit`, `kbit`, `Mbit`, `Gbit`,
//!   `Tbit` (powers of 1000) and `Kibit`, `Mibit`, `Gibit` (powers of 1024); `/s` may follow
//!   (`10Mbit/s`). Byte rates: `B/s`, `kB/s`, `MB/s`, `GB/s` (powers of 1000) and `KiB/s`,
//!   `MiB/s`, `GiB/s` (powers of 1024). The prefix letter is case-insensitive (`mbit` =
//!   `Mbit`), the `b`/`B` is not: `bit` means bits, `B` means bytes. `bps`/`Bps`/`kbps` … are
//!   refused on purpose: `tc` reads `kbps` as kilo*bytes* while most people read kilo*bits*.
//! * **sizes** — a bare number is bytes. `B`, `kB`, `MB`, `GB` (powers of 1000) and `KiB`,
//!   `MiB`, `GiB` (powers of 1024); prefix case-insensitive as above.
//!
//! Results are bytes per second and bytes, as in the rest of the API.

use super::matching::InvalidValue;

/// The largest value accepted anywhere: RSVP carries rates and sizes as IEEE-754 single
/// precision floats, so nothing larger could ever be signaled.
pub const MAX_VALUE: f64 = f32::MAX as f64;

/// Parses a rate (see the module docs) into bytes per second.
///
/// # Errors
///
/// A message saying what is wrong and what is accepted.
///
/// # Examples
///
/// ```
/// use qtoq::policy::units::parse_rate;
/// assert_eq!(parse_rate("8Mbit").unwrap(), 1_000_000.0);
/// assert_eq!(parse_rate("1.5 MB/s").unwrap(), 1_500_000.0);
/// assert_eq!(parse_rate("1000").unwrap(), 1000.0);
/// assert!(parse_rate("10kbps").is_err());
/// ```
pub fn parse_rate(text: &str) -> Result<f64, InvalidValue> {
    let (number, unit) = split_number(text)?;
    let unit_lower = unit.to_ascii_lowercase();
    if unit_lower.ends_with("bps") {
        return Err(format!(
            "ambiguous rate unit `{unit}`: write bits as `kbit`/`Mbit` or bytes as `kB/s`/`MB/s`"
        )
        .into());
    }
    let bytes_per_unit = if unit.is_empty() {
        1.0
    } else if let Some(prefix) = unit
        .strip_suffix("bit/s")
        .or_else(|| unit.strip_suffix("bit"))
    {
        prefix_factor(prefix)
            .map(|f| f / 8.0)
            .ok_or_else(|| unknown_rate_unit(unit))?
    } else if let Some(prefix) = unit.strip_suffix("B/s") {
        prefix_factor(prefix).ok_or_else(|| unknown_rate_unit(unit))?
    } else {
        return Err(unknown_rate_unit(unit).into());
    };
    finish(number * bytes_per_unit, text)
}

/// Parses a size (see the module docs) into bytes.
///
/// # Errors
///
/// A message saying what is wrong and what is accepted.
///
/// # Examples
///
/// ```
/// use qtoq::policy::units::parse_size;
/// assert_eq!(parse_size("64KiB").unwrap(), 65_536.0);
/// assert_eq!(parse_size("1500").unwrap(), 1500.0);
/// assert!(parse_size("64Kib").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<f64, InvalidValue> {
    let (number, unit) = split_number(text)?;
    let factor = if unit.is_empty() {
        1.0
    } else if let Some(prefix) = unit.strip_suffix('B') {
        prefix_factor(prefix).ok_or_else(|| unknown_size_unit(unit))?
    } else {
        return Err(unknown_size_unit(unit).into());
    };
    finish(number * factor, text)
}

fn unknown_rate_unit(unit: &str) -> String {
    format!(
        "unknown rate unit `{unit}`: use a number of bytes/s or a unit like `kbit`, `Mbit`, \
         `Gbit`, `Mibit`, `kB/s`, `MB/s`, `MiB/s`"
    )
}

fn unknown_size_unit(unit: &str) -> String {
    format!(
        "unknown size unit `{unit}`: use a number of bytes or a unit like `B`, `kB`, `KiB`, \
         `MB`, `MiB`"
    )
}

/// Splits `"1.5 MB/s"` into `(1.5, "MB/s")`.
fn split_number(text: &str) -> Result<(f64, &str), InvalidValue> {
    let trimmed = text.trim();
    let end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(end);
    if digits.is_empty() {
        return Err(format!("`{text}` does not start with a number").into());
    }
    let number: f64 = digits
        .replace('_', "")
        .parse()
        .map_err(|_| format!("`{digits}` is not a number"))?;
    Ok((number, unit.trim_start()))
}

/// Multiplier for an SI (`k`, `M`, `G`, `T`) or IEC (`Ki`, `Mi`, `Gi`, `Ti`) prefix.
fn prefix_factor(prefix: &str) -> Option<f64> {
    let (letter, binary) = match prefix.as_bytes() {
        [] => return Some(1.0),
        [l] => (*l, false),
        [l, b'i'] => (*l, true),
        _ => return None,
    };
    let power = match letter.to_ascii_lowercase() {
        b'k' => 1,
        b'm' => 2,
        b'g' => 3,
        b't' => 4,
        _ => return None,
    };
    let base: f64 = if binary { 1024.0 } else { 1000.0 };
    Some(base.powi(power))
}

fn finish(value: f64, text: &str) -> Result<f64, InvalidValue> {
    if !value.is_finite() || value > MAX_VALUE {
        return Err(format!("`{text}` is too large").into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_rates_are_divided_by_eight() {
        assert_eq!(parse_rate("10Mbit").unwrap(), 1_250_000.0);
        assert_eq!(parse_rate("10 mbit/s").unwrap(), 1_250_000.0);
        assert_eq!(parse_rate("8kbit").unwrap(), 1000.0);
        assert_eq!(parse_rate("1Gbit").unwrap(), 125_000_000.0);
        assert_eq!(parse_rate("1Mibit").unwrap(), 131_072.0);
        assert_eq!(parse_rate("800bit").unwrap(), 100.0);
    }

    #[test]
    fn byte_rates_and_bare_numbers() {
        assert_eq!(parse_rate("1.5MB/s").unwrap(), 1_500_000.0);
        assert_eq!(parse_rate("2 KiB/s").unwrap(), 2048.0);
        assert_eq!(parse_rate("1_000_000").unwrap(), 1_000_000.0);
        assert_eq!(parse_rate("12B/s").unwrap(), 12.0);
    }

    #[test]
    fn ambiguous_and_unknown_rate_units_are_refused() {
        for bad in [
            "10kbps",
            "10Mbps",
            "10Bps",
            "10 furlongs",
            "Mbit",
            "",
            "1.2.3Mbit",
        ] {
            let err = parse_rate(bad).unwrap_err();
            assert!(!err.message().is_empty(), "{bad}");
        }
        assert!(parse_rate("10kbps")
            .unwrap_err()
            .message()
            .contains("ambiguous"));
        assert!(parse_rate("1e40").is_err());
        assert!(parse_rate("999999999999999999999999999999999999999999TB/s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64KiB").unwrap(), 65_536.0);
        assert_eq!(parse_size("64kB").unwrap(), 64_000.0);
        assert_eq!(parse_size("1.5 MiB").unwrap(), 1_572_864.0);
        assert_eq!(parse_size("1500B").unwrap(), 1500.0);
        assert_eq!(parse_size("9000").unwrap(), 9000.0);
        assert!(parse_size("64Kib").is_err());
        assert!(parse_size("64 KiB/s").is_err());
        assert!(parse_size("-1").is_err());
    }
}
