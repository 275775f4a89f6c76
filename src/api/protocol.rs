//! The control socket's protocol: one JSON request per line, one JSON response per line.

use serde::{Deserialize, Serialize};

use crate::supervisor::StateName;

/// What a client asks. `component` is `ID` or `PIPELINE/ID` (needed only when two pipelines
/// have a component of that id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Status,
    Start {
        component: String,
    },
    Stop {
        component: String,
    },
    Restart {
        component: String,
    },
    /// Re-read the configuration and the pipelines directory and apply what changed. Only
    /// the daemon (`flowctl-sup run`) reloads.
    Reload,
}

/// The answer: `ok` with an optional status, or an error message for the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SupervisorStatus>,
    /// What a reload did; with `ok: false` when some pipeline file was rejected (the others
    /// were still applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadReport>,
}

/// The outcome of a reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub diff: crate::supervisor::reload::ReloadDiff,
    /// Pipeline files that did not load; the running version of each keeps running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedFile {
    pub file: String,
    /// The spec's diagnostics, one per line.
    pub error: String,
    /// The pipeline from that file that keeps running as it was, if one was running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
}

impl std::fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.diff)?;
        for r in &self.rejected {
            match &r.kept {
                Some(name) => writeln!(
                    f,
                    "{}: rejected, pipeline `{name}` keeps running unchanged:\n{}",
                    r.file, r.error
                )?,
                None => writeln!(f, "{}: rejected:\n{}", r.file, r.error)?,
            }
        }
        Ok(())
    }
}

impl Response {
    pub fn ok() -> Self {
        Response {
            ok: true,
            error: None,
            status: None,
            reload: None,
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(message.into()),
            status: None,
            reload: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupervisorStatus {
    pub pipelines: Vec<PipelineStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineStatus {
    pub name: String,
    pub components: Vec<ComponentStatus>,
    /// Every sink finished by itself (a bounded run): the rest was drained, nothing restarts.
    #[serde(default)]
    pub completed: bool,
    /// Its bounded run has written no ledger for `spec.range.stalled_after`: why, as the
    /// run record says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentStatus {
    pub id: String,
    pub state: StateName,
    pub pid: Option<i32>,
    /// Starts after the first one, automatic or requested.
    pub restarts: u32,
    pub ready: bool,
    /// How long the current process has run; `None` when none runs.
    pub uptime_ms: Option<u64>,
    pub last_exit: Option<LastExit>,
    /// Time left before the next start, in `backoff`.
    pub next_restart_ms: Option<u64>,
    pub last_probe: Option<LastProbe>,
    /// Why it is in its state (the exit, the start limit, the OS error…).
    pub reason: Option<String>,
    /// The last sd_notify `STATUS=` text.
    pub notify_status: Option<String>,
    /// What the control plane knows of it; absent when it has not registered (or no control
    /// plane runs in this supervisor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<RegistrationInfo>,
    /// Memory and CPU from its cgroup; absent without per-component cgroups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResourceUsage>,
    /// Live processes it started that left its process group (a double-forked daemon); they
    /// are stopped with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside_group: Vec<i32>,
}

impl ComponentStatus {
    /// A component in `state` with nothing else known yet: no process, no exit, no probe.
    pub fn new(id: impl Into<String>, state: StateName) -> Self {
        ComponentStatus {
            id: id.into(),
            state,
            pid: None,
            restarts: 0,
            ready: false,
            uptime_ms: None,
            last_exit: None,
            next_restart_ms: None,
            last_probe: None,
            reason: None,
            notify_status: None,
            registration: None,
            usage: None,
            outside_group: Vec::new(),
        }
    }
}

/// What a component's cgroup has used: all of its processes, grandchildren included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceUsage {
    /// `memory.current`; absent without the memory controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU time since the cgroup was made (`usage_usec` of `cpu.stat`), over every restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_usec: Option<u64>,
}

impl From<crate::systemd::cgroup::Usage> for ResourceUsage {
    fn from(u: crate::systemd::cgroup::Usage) -> Self {
        ResourceUsage {
            memory_bytes: u.memory_bytes,
            cpu_usec: u.cpu_usec,
        }
    }
}

/// A component's registration with the control plane, as `flowctl-sup status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationInfo {
    /// `healthy`, `degraded`, `unhealthy` …: the registry's decision from the heartbeats.
    pub health: String,
    /// Time since the last heartbeat; `None` before the first one.
    pub heartbeat_age_ms: Option<u64>,
    /// How the registration was tied to the component: `peer process`, `component id`,
    /// `metadata` or `health port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_by: Option<String>,
    /// The metrics of the last heartbeat, as text.
    pub metrics: std::collections::BTreeMap<String, String>,
}

/// How the last process ended: `{"code": N}` or `{"signal": N}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LastExit {
    Code { code: i32 },
    Signal { signal: i32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastProbe {
    pub ok: bool,
    pub error: Option<String>,
}
