//! The resolved pipeline: what the spec hands to the supervisor.
//!
//! Everything here is plain, validated data: ports are allocated, `${…}` references are
//! interpolated, secrets are read, defaults are filled in. The supervisor never looks at YAML,
//! and the spec never starts a process; this module is the one boundary between them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One pipeline, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelinePlan {
    /// `metadata.name`.
    pub name: String,
    /// The file it was read from, for messages.
    pub source_file: PathBuf,
    /// The pipeline file's text, kept for run records.
    pub config_yaml: String,
    /// Components in a dependency (topological) order: every component comes after
    /// everything it depends on.
    pub components: Vec<ComponentPlan>,
    /// The ledgers a bounded run covers (`spec.range`, or `--from-ledger`/`--to-ledger`).
    pub range: Option<LedgerRange>,
    /// A bounded run that writes no ledger for this long is reported stalled
    /// (`spec.range.stalled_after`, default 5 min); `None` never.
    pub stalled_after: Option<Duration>,
    /// How a backfill of the pipeline is cut and retried, where the file says.
    pub chunking: Chunking,
}

/// What a pipeline file says about cutting a long range into chunks and running them
/// (`spec.range.chunk_size`, `spec.range.max_workers`, `spec.retry_policy.max_attempts`):
/// the defaults of `flowctl backfill` and `flowctl chunks retry`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chunking {
    /// Ledgers in each shard (`--shard-size`).
    pub chunk_size: Option<u32>,
    /// Shards running at once (`--max-workers`; Slurm's `--array=…%N`).
    pub max_workers: Option<u32>,
    /// Attempts of a chunk before `chunks retry` gives up on it (`--max-attempts`).
    pub max_attempts: Option<u32>,
}

/// A range of ledgers: `from..=to`, or from `from` on, following the tip, without `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerRange {
    pub from: u32,
    pub to: Option<u32>,
}

impl std::fmt::Display for LedgerRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to {
            Some(to) => write!(f, "{}-{to}", self.from),
            None => write!(f, "{}-", self.from),
        }
    }
}

/// Where a component sits in the pipeline graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Source,
    Processor,
    Sink,
}

/// One supervised child process.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentPlan {
    /// The YAML `id`, unique within the pipeline.
    pub id: String,
    pub role: Role,
    /// The program as written (`ttp-processor`, `./bin/x`, `/usr/bin/x`). A bare name is looked
    /// up by the supervisor at spawn time (next to the flowctl binary, `/usr/lib/flowctl`,
    /// then `PATH`), so a missing program is a component failure, not a validation error.
    pub command: String,
    pub args: Vec<String>,
    /// The component's own variables, fully interpolated (from `env`, `secrets` and `config`).
    /// The supervisor adds the flowctl contract (`ENABLE_FLOWCTL`, `FLOWCTL_*`, `HEALTH_PORT`,
    /// `PORT`, `NOTIFY_SOCKET`) and `PATH`/`HOME`/`LANG` underneath: these win over them.
    pub env: BTreeMap<String, String>,
    /// Pass the supervisor's whole environment through (default false).
    pub inherit_env: bool,
    pub on_error: OnError,
    /// How `FLOWCTL_HEARTBEAT_INTERVAL` is written for it (`heartbeat_interval_format`).
    pub heartbeat_interval_format: HeartbeatFormat,
    pub working_dir: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub rlimits: Rlimits,
    /// Components from `inputs`: this one reads from them.
    pub inputs: Vec<String>,
    /// `inputs` ∪ `depends_on`: all must be ready before this one starts.
    pub depends_on: Vec<String>,
    /// Allocated ports, by name. `0` in the YAML has been replaced by a free port.
    pub ports: Vec<PortPlan>,
    /// The port of `/health`, given or allocated; injected as `HEALTH_PORT`.
    pub health_port: u16,
    pub restart: RestartPlan,
    pub readiness: Option<ProbePlan>,
    pub liveness: Option<ProbePlan>,
    pub stop: StopPlan,
    /// With a readiness check: not ready this long after the start, it is stopped and its
    /// restart policy decides (`start_timeout`, systemd's `TimeoutStartSec=`); `None` waits.
    pub start_timeout: Option<Duration>,
    /// The child must send sd_notify `WATCHDOG=1` at least this often, or it is restarted.
    pub watchdog: Option<Duration>,
    pub resources: Resources,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    pub name: String,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// Resource limits set with setrlimit before exec; `None` keeps the supervisor's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rlimits {
    pub nofile: Option<u64>,
    pub core: Option<u64>,
    pub nproc: Option<u64>,
}

/// cgroup limits (`resources.limits`): applied where the controller exists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Bytes, for `memory.max`.
    pub memory_max: Option<u64>,
    /// CPUs (e.g. 0.5), for `cpu.max`.
    pub cpu_max: Option<f64>,
    /// Tasks, for `pids.max`.
    pub pids_max: Option<u64>,
}

/// What a component does with a ledger it cannot handle (`on_error`), handed to it as
/// `FLOWCTL_ON_ERROR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop with an error naming the ledger.
    #[default]
    Fail,
    /// Record it as a dead letter with the control plane and go on with the next ledger.
    DeadLetter,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Fail => "fail",
            OnError::DeadLetter => "dead-letter",
        }
    }
}

/// How a component reads `FLOWCTL_HEARTBEAT_INTERVAL`: the Go components parse a Go
/// duration (`10s`), ttp-processor-demo's Node.js consumer a number of milliseconds (`10000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeartbeatFormat {
    #[default]
    Go,
    Millis,
}

impl HeartbeatFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            HeartbeatFormat::Go => "go",
            HeartbeatFormat::Millis => "millis",
        }
    }

    /// `interval` as a component of this kind reads it.
    pub fn render(self, interval: Duration) -> String {
        match self {
            HeartbeatFormat::Go => humantime::format_duration(interval).to_string(),
            HeartbeatFormat::Millis => interval.as_millis().to_string(),
        }
    }
}

/// systemd's `Restart=` vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// `no`: never restart.
    Never,
    /// `always` / `unless-stopped`: restart on any exit, clean or not.
    Always,
    /// `on-failure`: restart on a non-zero exit, a signal, or a failed liveness probe.
    OnFailure,
}

/// When and how fast a component is restarted (systemd: `RestartSec=`, `RestartSteps=`,
/// `RestartMaxDelaySec=`, `StartLimitBurst=`, `StartLimitIntervalSec=`).
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPlan {
    pub policy: RestartPolicy,
    /// Delay before the first restart.
    pub initial_delay: Duration,
    /// Each consecutive restart waits `multiplier` times longer…
    pub multiplier: f64,
    /// …up to this cap.
    pub max_delay: Duration,
    /// Random spread added to each delay, as a fraction of it (0.0–1.0).
    pub jitter: f64,
    /// A run at least this long resets the delay to `initial_delay`.
    pub reset_after: Duration,
    /// More than `start_limit_burst` starts within `start_limit_interval` → `failed`.
    pub start_limit_burst: u32,
    pub start_limit_interval: Duration,
    /// Restart this component when one it depends on restarts (default false: it reconnects).
    pub restart_with_dependencies: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProbePlan {
    pub check: ProbeCheck,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    /// Consecutive failures before the probe counts as failing.
    pub failure_threshold: u32,
    /// Consecutive successes before the probe counts as passing.
    pub success_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeCheck {
    /// HTTP GET on 127.0.0.1:port/path; 2xx passes.
    Http { port: u16, path: String },
    /// grpc.health.v1 Check on 127.0.0.1:port for `service` ("" = the server); SERVING passes.
    Grpc { port: u16, service: String },
    /// A TCP connect to 127.0.0.1:port succeeds.
    Tcp { port: u16 },
    /// argv; exit 0 passes.
    Exec { command: Vec<String> },
    /// The child sent sd_notify `READY=1` on the NOTIFY_SOCKET it was given.
    Notify,
    /// The child registered with the control plane under its component id.
    Registered,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopPlan {
    /// Signal number sent to the process group first (default SIGTERM).
    pub signal: i32,
    /// Then SIGKILL after this long (systemd: `TimeoutStopSec=`).
    pub timeout: Duration,
}

/// The ports running pipelines hold, so a reload can give each component the ports it already
/// has: then an unchanged pipeline file resolves to an identical plan and its components keep
/// running. Keyed by pipeline, then component id and port name (`None`: the health port).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldPorts(BTreeMap<String, BTreeMap<(String, Option<String>), u16>>);

impl HeldPorts {
    /// The ports allocated to `plans`.
    pub fn of(plans: &[PipelinePlan]) -> Self {
        let mut held = BTreeMap::new();
        for p in plans {
            let ports: &mut BTreeMap<_, _> = held.entry(p.name.clone()).or_default();
            for c in &p.components {
                ports.insert((c.id.clone(), None), c.health_port);
                for port in &c.ports {
                    ports.insert((c.id.clone(), Some(port.name.clone())), port.port);
                }
            }
        }
        HeldPorts(held)
    }

    /// The port `pipeline`'s `component` holds under `name` (`None`: its health port).
    pub fn get(&self, pipeline: &str, component: &str, name: Option<&str>) -> Option<u16> {
        self.0
            .get(pipeline)?
            .get(&(component.to_string(), name.map(str::to_string)))
            .copied()
    }

    /// Every port held by a pipeline other than `pipeline`: never to be handed to it.
    pub fn of_others<'a>(&'a self, pipeline: &'a str) -> impl Iterator<Item = u16> + 'a {
        self.0
            .iter()
            .filter(move |(name, _)| name.as_str() != pipeline)
            .flat_map(|(_, ports)| ports.values().copied())
            .filter(|&p| p != 0)
    }
}
