//! The status as a table for people.

use std::fmt::Write;

use super::protocol::{LastExit, SupervisorStatus};

/// One row per component, columns aligned.
pub fn table(status: &SupervisorStatus) -> String {
    let mut rows = vec![[
        "PIPELINE",
        "COMPONENT",
        "STATE",
        "PID",
        "RESTARTS",
        "READY",
        "UPTIME",
        "LAST EXIT",
        "NEXT START",
        "REGISTERED",
        "DETAIL",
    ]
    .map(String::from)];
    for pipeline in &status.pipelines {
        for c in &pipeline.components {
            let detail = match (&c.reason, &c.last_probe, &c.notify_status) {
                (_, Some(probe), _) if !probe.ok => {
                    format!("check: {}", probe.error.clone().unwrap_or_default())
                }
                (Some(reason), _, _) => reason.clone(),
                (None, _, Some(status)) => status.clone(),
                _ => String::new(),
            };
            rows.push([
                pipeline.name.clone(),
                c.id.clone(),
                c.state.to_string(),
                c.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                c.restarts.to_string(),
                if c.ready { "yes" } else { "no" }.to_string(),
                c.uptime_ms.map(ms).unwrap_or_else(|| "-".into()),
                match c.last_exit {
                    Some(LastExit::Code { code }) => format!("code {code}"),
                    Some(LastExit::Signal { signal }) => format!("signal {signal}"),
                    None => "-".into(),
                },
                c.next_restart_ms.map(ms).unwrap_or_else(|| "-".into()),
                match &c.registration {
                    Some(r) => match r.heartbeat_age_ms {
                        Some(age) => format!("{}, beat {} ago", r.health, ms(age)),
                        None => format!("{}, no beat yet", r.health),
                    },
                    None => "-".into(),
                },
                detail,
            ]);
        }
    }
    let mut widths = [0usize; 11];
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
