//! The status as a table for people.

use std::fmt::Write;

use super::protocol::{LastExit, SupervisorStatus};

/// One row per component, columns aligned; a pipeline whose bounded run is done reads
/// `NAME (completed)`, so its exited components do not look like a failure.
pub fn table(status: &SupervisorStatus) -> String {
    let mut rows = vec![[
        "PIPELINE",
        "COMPONENT",
        "STATE",
        "PID",
        "RESTARTS",
        "READY",
        "UPTIME",
        "MEMORY",
        "CPU",
        "LAST EXIT",
        "NEXT START",
        "REGISTERED",
        "DETAIL",
    ]
    .map(String::from)];
    for pipeline in &status.pipelines {
        let name = if pipeline.completed {
            format!("{} (completed)", pipeline.name)
        } else if pipeline.stalled.is_some() {
            format!("{} (stalled)", pipeline.name)
        } else {
            pipeline.name.clone()
        };
        for c in &pipeline.components {
            let detail = match (&c.reason, &c.last_probe, &c.notify_status) {
                (_, Some(probe), _) if !probe.ok => {
                    format!("check: {}", probe.error.clone().unwrap_or_default())
                }
                (Some(reason), _, _) => reason.clone(),
                (None, _, Some(status)) => status.clone(),
                _ => String::new(),
            };
            let detail = match c.outside_group.as_slice() {
                [] => detail,
                pids => {
                    let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
                    let outside = format!("outside its group: {}", pids.join(", "));
                    if detail.is_empty() {
                        outside
                    } else {
                        format!("{detail}; {outside}")
                    }
                }
            };
            rows.push([
                name.clone(),
                c.id.clone(),
                c.state.to_string(),
                c.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                c.restarts.to_string(),
                if c.ready { "yes" } else { "no" }.to_string(),
                c.uptime_ms.map(ms).unwrap_or_else(|| "-".into()),
                c.usage
                    .and_then(|u| u.memory_bytes)
                    .map(bytes)
                    .unwrap_or_else(|| "-".into()),
                c.usage
                    .and_then(|u| u.cpu_usec)
                    .map(cpu)
                    .unwrap_or_else(|| "-".into()),
                match c.last_exit {
                    Some(LastExit::Code { code }) => format!("code {code}"),
                    Some(LastExit::Signal { signal }) => format!("signal {signal}"),
                    None => "-".into(),
                },
                c.next_restart_ms.map(ms).unwrap_or_else(|| "-".into()),
                match &c.registration {
                    Some(r) => {
                        let by = r
                            .linked_by
                            .as_ref()
                            .map(|by| format!(" by {by}"))
                            .unwrap_or_default();
                        match r.heartbeat_age_ms {
                            Some(age) => format!("{}{by}, beat {} ago", r.health, ms(age)),
                            None => format!("{}{by}, no beat yet", r.health),
                        }
                    }
                    None => "-".into(),
                },
                detail,
            ]);
        }
    }
    let mut widths = [0usize; 13];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn ms(ms: u64) -> String {
    let rounded = if ms >= 1000 { ms / 1000 * 1000 } else { ms };
    humantime::format_duration(std::time::Duration::from_millis(rounded)).to_string()
}

/// Bytes as systemd shows them (`12.4M`): powers of 1024, one decimal.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

/// CPU time: milliseconds under a second, then seconds with one decimal, then humantime.
fn cpu(usec: u64) -> String {
    match usec {
        0..=999_999 => format!("{}ms", usec / 1000),
        1_000_000..=59_999_999 => format!("{:.1}s", usec as f64 / 1e6),
        _ => {
            humantime::format_duration(std::time::Duration::from_secs(usec / 1_000_000)).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_cpu_read_like_systemctl_status() {
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(13 * 1024 * 1024 + 400 * 1024), "13.4M");
        assert_eq!(bytes(3 << 30), "3.0G");
        assert_eq!(cpu(43_210), "43ms");
        assert_eq!(cpu(1_260_000), "1.3s");
        assert_eq!(cpu(3_725_000_000), "1h 2m 5s");
    }
}
