//! Text forms of numbers, byte sizes, durations and booleans as they appear in config files,
//! flags and environment variables, and the human form used in tables.
//!
//! Invariant: every parser takes the key it parses for and names it in its error.

use crate::error::ConfigError;

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// A whole number (no sign, no fraction). `_` separators are allowed ("100_000").
pub fn parse_u64(key: &str, text: &str) -> Result<u64, ConfigError> {
    let t = text.trim();
    let digits: String = t.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(ConfigError::invalid(key, t, "expected a whole number"));
    }
    digits
        .parse::<u64>()
        .map_err(|_| ConfigError::invalid(key, t, "number too large"))
}

/// A byte count: a whole number, optionally with a unit (`KiB`, `MiB`, `GiB`, `KB`, `MB`,
/// `GB`, `B`; case-insensitive). Configs printed by `ballast-tune` always use plain numbers,
/// which etcd also reads.
pub fn parse_bytes(key: &str, text: &str) -> Result<u64, ConfigError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n = parse_u64(key, num).map_err(|_| {
        ConfigError::invalid(
            key,
            t,
            "expected a number of bytes, e.g. 2147483648 or 2GiB",
        )
    })?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" | "ki" => KIB,
        "m" | "mb" => 1000 * 1000,
        "mib" | "mi" => MIB,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" | "gi" => GIB,
        _ => {
            return Err(ConfigError::invalid(
                key,
                t,
                "unknown unit (use B, KiB, MiB, GiB, KB, MB or GB)",
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| ConfigError::invalid(key, t, "number too large"))
}

/// A Go-style duration ("1h30m", "30m", "90s", "250ms", "1.5h") in whole milliseconds.
pub fn parse_duration_ms(key: &str, text: &str) -> Result<u64, ConfigError> {
    let t = text.trim();
    let bad = || ConfigError::invalid(key, t, "expected a duration such as 30m, 1h30m or 90s");
    if t.is_empty() {
        return Err(bad());
    }
    let mut rest = t;
    let mut total_ms = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_ms = match &rest[..unit_end] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return Err(bad()),
        };
        rest = &rest[unit_end..];
        total_ms += n * unit_ms;
    }
    if !total_ms.is_finite() || total_ms > u64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(total_ms.round() as u64)
}

pub fn parse_bool_or_err(key: &str, text: &str) -> Result<bool, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(ConfigError::invalid(key, other, "expected true or false")),
    }
}

/// "512 MiB", "2 GiB", "1.5 MiB", "300 B": for tables and reasons, never for config files.
pub fn human_bytes(n: u64) -> String {
    let (value, unit) = if n >= GIB {
        (n as f64 / GIB as f64, "GiB")
    } else if n >= MIB {
        (n as f64 / MIB as f64, "MiB")
    } else if n >= KIB {
        (n as f64 / KIB as f64, "KiB")
    } else {
        return format!("{n} B");
    };
    if (value - value.round()).abs() < 0.005 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_with_and_without_units() {
        assert_eq!(parse_bytes("k", "2147483648").unwrap(), 2 * GIB);
        assert_eq!(parse_bytes("k", "2GiB").unwrap(), 2 * GIB);
        assert_eq!(parse_bytes("k", "512 MiB").unwrap(), 512 * MIB);
        assert_eq!(parse_bytes("k", "1MB").unwrap(), 1_000_000);
        let e = parse_bytes("quota-backend-bytes", "lots").unwrap_err();
        assert_eq!(e.key(), Some("quota-backend-bytes"));
        assert!(parse_bytes("k", "2 parsecs").is_err());
    }

    #[test]
    fn numbers_refuse_signs_and_fractions() {
        assert_eq!(parse_u64("k", "100_000").unwrap(), 100_000);
        assert!(parse_u64("k", "-1").is_err());
        assert!(parse_u64("k", "1.5").is_err());
        assert!(parse_u64("k", "").is_err());
    }

    #[test]
    fn durations_like_go() {
        assert_eq!(parse_duration_ms("k", "1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration_ms("k", "250ms").unwrap(), 250);
        assert_eq!(parse_duration_ms("k", "1.5h").unwrap(), 5_400_000);
        assert!(parse_duration_ms("k", "10").is_err());
        assert!(parse_duration_ms("k", "m").is_err());
        assert!(parse_duration_ms("k", "5 days").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512 * MIB), "512 MiB");
        assert_eq!(human_bytes(1_572_864), "1.5 MiB");
        assert_eq!(human_bytes(2 * GIB), "2 GiB");
        assert_eq!(human_bytes(12), "12 B");
    }
}
