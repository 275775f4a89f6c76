//! The pipeline as written, checked and typed, before anything on the host is touched: no port
//! is allocated, no secret read, no `${…}` expanded yet. [`super::resolve`] turns it into a
//! [`crate::plan::PipelinePlan`].
//!
//! Values that later steps may still reject keep their position ([`At`]), so those errors point
//! at the line too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::diag::Diagnostics;
use super::node::Pos;
use crate::plan::{HeartbeatFormat, OnError, Resources, RestartPolicy, Rlimits, Role};

/// A value and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct At<T> {
    pub value: T,
    pub pos: Pos,
}

impl<T> At<T> {
    pub fn new(value: T, pos: Pos) -> Self {
        Self { value, pos }
    }
}

/// One `kind: Pipeline` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub file: PathBuf,
    /// The file's text, kept for run records.
    pub text: String,
    /// `metadata.name`.
    pub name: String,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `spec.description`, else `metadata.description`.
    pub description: Option<String>,
    /// `spec.driver` as written (`process`, `local`, `dag` or absent: all the same here).
    pub driver: Option<String>,
    /// Sources, then processors, then sinks, each in file order.
    pub components: Vec<Component>,
    /// `spec.range`: the ledgers a bounded run covers.
    pub range: Option<crate::plan::LedgerRange>,
    /// `spec.range.stalled_after`; zero never reports a stall.
    pub stalled_after: Option<Duration>,
    /// `spec.range.chunk_size`, `max_workers` and `spec.retry_policy.max_attempts`.
    pub chunking: crate::plan::Chunking,
    /// `spec.retry_policy`: every component's restart where its own says nothing.
    pub retry_policy: Option<RestartSpec>,
    /// Things the operator should know that do not stop the pipeline (a bundled component
    /// standing in for an image, an ignored `image`).
    pub notices: Diagnostics,
}

impl Pipeline {
    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.id == id)
    }
}

/// One component, with every field the supervisor cares about.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub id: String,
    /// Where the component's `id` is written.
    pub pos: Pos,
    pub role: Role,
    /// `type`, as written (`source`, `stellar-live-source@v1.0.0`, …).
    pub kind: Option<String>,
    /// The program: from `command`, or the bundled component an `image`/`type` names.
    pub command: At<String>,
    pub args: Vec<At<String>>,
    /// Variables before `${…}` expansion: bundled defaults, then `config`, then `env` on top.
    pub env: BTreeMap<String, At<String>>,
    pub secrets: Vec<Secret>,
    pub inputs: Vec<At<String>>,
    pub depends_on: Vec<At<String>>,
    pub input_event_types: Vec<String>,
    pub output_event_types: Vec<String>,
    pub ports: Vec<Port>,
    pub health_port: Option<At<u16>>,
    pub readiness: Option<Probe>,
    pub liveness: Option<Probe>,
    pub restart: RestartSpec,
    pub stop: StopSpec,
    pub watchdog: Option<Duration>,
    pub resources: Resources,
    pub rlimits: Rlimits,
    /// Relative paths are taken from the pipeline file's directory.
    pub working_dir: Option<At<PathBuf>>,
    pub user: Option<At<String>>,
    pub group: Option<At<String>>,
    pub inherit_env: Option<bool>,
    pub on_error: Option<OnError>,
    pub heartbeat_interval_format: Option<HeartbeatFormat>,
    /// `start_timeout`; zero waits for ever.
    pub start_timeout: Option<Duration>,
}

impl Component {
    pub fn port(&self, name: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The port others connect to: the one named `grpc`, else the first.
    pub fn service_port(&self) -> Option<&Port> {
        self.port("grpc").or_else(|| self.ports.first())
    }
}

/// One entry of `ports`.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    /// As written; an unnamed port is `grpc` when no other port has that name, else `port<N>`.
    pub name: String,
    /// `hostPort`; `None` (absent or `0`) means the supervisor allocates a free one.
    pub port: Option<u16>,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub pos: Pos,
}

/// A probe port: a number, or the name of one of the component's ports (`health` is the
/// health port).
#[derive(Debug, Clone, PartialEq)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Port defaults to the health port, path to `/health`.
    Http {
        port: Option<At<PortRef>>,
        path: String,
    },
    /// Port defaults to the service port.
    Grpc {
        port: Option<At<PortRef>>,
        service: String,
    },
    /// Port defaults to the service port.
    Tcp {
        port: Option<At<PortRef>>,
    },
    Exec {
        command: Vec<String>,
    },
    Notify,
    Registered,
}

/// A readiness or liveness probe; unset timings take the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub check: Check,
    pub pos: Pos,
    pub initial_delay: Option<Duration>,
    pub period: Option<Duration>,
    pub timeout: Option<Duration>,
    pub failure_threshold: Option<u32>,
    pub success_threshold: Option<u32>,
}

/// `restart` and the Go flowctl's `restart_policy`; unset fields take the defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestartSpec {
    pub policy: Option<RestartPolicy>,
    pub initial_delay: Option<Duration>,
    pub multiplier: Option<f64>,
    pub max_delay: Option<Duration>,
    pub jitter: Option<f64>,
    pub reset_after: Option<Duration>,
    pub start_limit_burst: Option<u32>,
    pub start_limit_interval: Option<Duration>,
    pub with_dependencies: Option<bool>,
}

impl RestartSpec {
    /// This spec, with `fallback`'s fields where it leaves them unset.
    pub fn or(&self, fallback: &RestartSpec) -> RestartSpec {
        RestartSpec {
            policy: self.policy.or(fallback.policy),
            initial_delay: self.initial_delay.or(fallback.initial_delay),
            multiplier: self.multiplier.or(fallback.multiplier),
            max_delay: self.max_delay.or(fallback.max_delay),
            jitter: self.jitter.or(fallback.jitter),
            reset_after: self.reset_after.or(fallback.reset_after),
            start_limit_burst: self.start_limit_burst.or(fallback.start_limit_burst),
            start_limit_interval: self.start_limit_interval.or(fallback.start_limit_interval),
            with_dependencies: self.with_dependencies.or(fallback.with_dependencies),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopSpec {
    pub signal: Option<i32>,
    pub timeout: Option<Duration>,
}

/// `secrets: [{name, host_path, env}]`: the variable `env` gets the file's content.
#[derive(Debug, Clone, PartialEq)]
pub struct Secret {
    pub name: String,
    /// Absolute, or made so from the pipeline file's directory.
    pub host_path: At<PathBuf>,
    pub env: String,
    /// `required: false` lets a missing file leave the variable unset.
    pub required: bool,
    pub pos: Pos,
}
