//! The value syntaxes operators already know: durations like systemd and Go (`10s`, `500ms`,
//! `1m30s`), memory like Kubernetes (`512Mi`, `1G`), CPUs like Kubernetes (`0.5`, `500m`), and
//! signals by name (`SIGTERM`, `TERM`) or number. Each parser returns a message that says what
//! was expected, for the caller to place.

use std::str::FromStr;
use std::time::Duration;

/// `10s`, `500ms`, `1m30s`, `2h`; `0` alone means zero. A bare number is refused: seconds or
/// milliseconds is exactly the confusion the Node and Go components already have.
pub fn duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("`{t}` has no unit: write e.g. `{t}s` or `{t}ms`"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{t}` is not a duration ({e}): write e.g. `10s`, `500ms`, `1m30s`"))
}

/// The longest duration a pipeline may give: a year. Longer ones cannot mean anything to a
/// supervisor, and `Instant + u64::MAX s` panics.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// The largest count a file may give (`start_limit_burst`, probe thresholds): far above any
/// real use, and small enough that counters and the start history stay small.
pub const MAX_COUNT: u32 = 1_000_000;

/// Refuses a duration over [`MAX_DURATION`], naming the allowed range.
pub fn within_max(d: Duration) -> Result<Duration, String> {
    if d > MAX_DURATION {
        return Err(format!(
            "`{}` is too long: allowed from 0 to 365d",
            humantime::format_duration(d)
        ));
    }
    Ok(d)
}

/// Bytes from `512Mi`, `1Gi`, `1G`, `100M`, `64k`, `1.5Gi` or a plain byte count. Binary
/// suffixes (`Ki`, `Mi`, `Gi`, `Ti`) are powers of 1024, decimal ones (`k`, `M`, `G`, `T`)
/// powers of 1000, as in Kubernetes.
pub fn memory(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let factor: u64 = match unit {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "`{t}` is not a memory size: write e.g. `512Mi`, `1Gi`, `1G` or a byte count"
            ))
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{t}` is not a memory size: write e.g. `512Mi`, `1Gi`, `1G`"))?;
    let bytes = value * factor as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{t}` is not a usable memory size"));
    }
    Ok(bytes.round() as u64)
}

/// CPUs from `0.5`, `2`, `1.0` or millicores `500m`.
pub fn cpu(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let bad = || format!("`{t}` is not a CPU amount: write e.g. `0.5`, `2` or `500m`");
    let cpus = match t.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().map_err(|_| bad())? / 1000.0,
        None => t.parse::<f64>().map_err(|_| bad())?,
    };
    if !cpus.is_finite() || cpus <= 0.0 {
        return Err(format!("`{t}` must be more than zero CPUs"));
    }
    Ok(cpus)
}

/// A signal number from `SIGTERM`, `TERM`, `sigint` or `15`.
pub fn signal(text: &str) -> Result<i32, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map(|s| s as i32)
            .map_err(|_| format!("`{t}` is not a signal number"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name)
        .map(|s| s as i32)
        .map_err(|_| format!("`{t}` is not a signal: write e.g. `SIGTERM`, `SIGINT` or `15`"))
}

/// An rlimit value: a count, or `unlimited`/`infinity`.
pub fn rlimit(text: &str) -> Result<u64, String> {
    let t = text.trim();
    match t {
        "unlimited" | "infinity" => Ok(libc::RLIM_INFINITY),
        _ => t
            .parse::<u64>()
            .map_err(|_| format!("`{t}` is not a limit: write a number or `unlimited`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert!(duration("10").unwrap_err().contains("no unit"));
        assert!(duration("ten seconds").is_err());
        assert!(within_max(MAX_DURATION).is_ok());
        assert!(within_max(MAX_DURATION + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn memory_binary_and_decimal_suffixes() {
        assert_eq!(memory("512Mi"), Ok(512 << 20));
        assert_eq!(memory("1G"), Ok(1_000_000_000));
        assert_eq!(memory("1.5Gi"), Ok(3 << 29));
        assert_eq!(memory("4096"), Ok(4096));
        assert!(memory("1GB").is_err());
        assert!(memory("0").is_err());
        assert!(memory("Mi").is_err());
    }

    #[test]
    fn cpu_fractions_and_millicores() {
        assert_eq!(cpu("0.5"), Ok(0.5));
        assert_eq!(cpu("500m"), Ok(0.5));
        assert_eq!(cpu("2"), Ok(2.0));
        assert!(cpu("0").is_err());
        assert!(cpu("half").is_err());
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(signal("SIGTERM"), Ok(libc::SIGTERM));
        assert_eq!(signal("int"), Ok(libc::SIGINT));
        assert_eq!(signal("9"), Ok(libc::SIGKILL));
        assert!(signal("SIGNOPE").is_err());
        assert!(signal("999").is_err());
    }

    #[test]
    fn rlimits_accept_unlimited() {
        assert_eq!(rlimit("65536"), Ok(65536));
        assert_eq!(rlimit("unlimited"), Ok(libc::RLIM_INFINITY));
        assert!(rlimit("-1").is_err());
    }
}
