//! `flowctl logs COMPONENT`: a component's output from the journal, through `journalctl`.
//!
//! Matches both ways a child's output reaches the journal (see `systemd::journal`): relayed
//! entries carry `FLOWCTL_COMPONENT`, stream entries only `SYSLOG_IDENTIFIER` under the
//! daemon's unit. journalctl ORs the two groups (`+`), so either mode is found.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// The component id.
    pub component: String,
    /// Only this pipeline's component of that name.
    #[arg(short, long)]
    pub pipeline: Option<String>,
    /// Keep printing new entries.
    #[arg(short, long)]
    pub follow: bool,
    /// Show the last N entries.
    #[arg(short = 'n', long = "lines", value_name = "N")]
    pub lines: Option<u32>,
    /// Entries since a time, as journalctl reads it ("2026-11-24 03:00", "1h ago", "today").
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// The daemon's unit, for stream-mode entries (`flowctl@NAME.service` for an instance;
    /// "" for any, when the daemon does not run under systemd).
    #[arg(long, default_value = "flowctl.service")]
    pub unit: String,
}

impl LogsArgs {
    /// journalctl's arguments for this request.
    pub fn journalctl_args(&self) -> Vec<String> {
        let mut args = vec!["--no-hostname".to_string()];
        if self.follow {
            args.push("--follow".into());
        }
        if let Some(n) = self.lines {
            args.push(format!("--lines={n}"));
        }
        if let Some(t) = &self.since {
            args.push(format!("--since={t}"));
        }
        args.push(format!("FLOWCTL_COMPONENT={}", self.component));
        if let Some(p) = &self.pipeline {
            args.push(format!("FLOWCTL_PIPELINE={p}"));
        }
        args.push("+".into());
        args.push(format!("SYSLOG_IDENTIFIER={}", self.component));
        if !self.unit.is_empty() {
            args.push(format!("_SYSTEMD_UNIT={}", self.unit));
        }
        args
    }

    pub fn run(self) -> anyhow::Result<i32> {
        if !Path::new("/run/systemd/journal").is_dir() {
            anyhow::bail!(
                "there is no journal on this host: flowctl-sup writes its components' output to \
                 its own stderr, prefixed with the component id (`{}| …`)",
                self.component
            );
        }
        let err = Command::new("journalctl")
            .args(self.journalctl_args())
            .exec();
        anyhow::bail!("could not run journalctl: {err} (install systemd's journalctl)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(component: &str) -> LogsArgs {
        LogsArgs {
            component: component.into(),
            pipeline: None,
            follow: false,
            lines: None,
            since: None,
            unit: "flowctl.service".into(),
        }
    }

    #[test]
    fn matches_relayed_or_streamed_entries_of_the_component() {
        assert_eq!(
            args("ttp-processor").journalctl_args(),
            [
                "--no-hostname",
                "FLOWCTL_COMPONENT=ttp-processor",
                "+",
                "SYSLOG_IDENTIFIER=ttp-processor",
                "_SYSTEMD_UNIT=flowctl.service"
            ]
        );
    }

    #[test]
    fn an_empty_unit_matches_streamed_entries_from_anywhere() {
        let mut a = args("sink");
        a.unit = String::new();
        let got = a.journalctl_args();
        assert_eq!(got.last().unwrap(), "SYSLOG_IDENTIFIER=sink");
        assert!(!got.iter().any(|a| a.starts_with("_SYSTEMD_UNIT")));
    }

    #[test]
    fn follow_lines_since_and_pipeline_are_passed_on() {
        let mut a = args("sink");
        a.follow = true;
        a.lines = Some(50);
        a.since = Some("1h ago".into());
        a.pipeline = Some("ttp".into());
        let got = a.journalctl_args();
        assert_eq!(
            got[..5],
            [
                "--no-hostname",
                "--follow",
                "--lines=50",
                "--since=1h ago",
                "FLOWCTL_COMPONENT=sink"
            ]
        );
        assert_eq!(got[5], "FLOWCTL_PIPELINE=ttp");
    }
}
