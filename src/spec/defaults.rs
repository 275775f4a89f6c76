//! What a component gets for what its spec leaves out. The values follow systemd where it has
//! one (`Restart=on-failure`, `TimeoutStopSec=` 10 s here against systemd's 90 s because
//! pipeline components drain in seconds, `StartLimitBurst=5` in `StartLimitIntervalSec=10s`),
//! and Kubernetes' probe vocabulary for probes. The daemon's configuration file can replace
//! them by passing its own [`Defaults`] in [`super::ResolveOptions`].

use std::time::Duration;

use crate::plan::{RestartPlan, RestartPolicy, StopPlan};

/// Timing of readiness and liveness probes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeTiming {
    /// Wait this long after start before the first check (default 0).
    pub initial_delay: Duration,
    /// Check every (default 1 s). A readiness check that has not passed yet comes sooner: 50 ms
    /// after the first, then doubling up to this.
    pub period: Duration,
    /// A check taking longer fails (default 1 s).
    pub timeout: Duration,
    /// Consecutive failures before the probe counts as failing (default 3).
    pub failure_threshold: u32,
    /// Consecutive successes before it counts as passing (default 1).
    pub success_threshold: u32,
}

/// Defaults for every component of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// Restart on failure; first retry after 100 ms, doubling up to 30 s; a run of 60 s resets
    /// the delay; more than 5 starts within 10 s marks the component `failed`; no jitter; a
    /// dependency's restart does not restart its dependents.
    pub restart: RestartPlan,
    /// SIGTERM to the process group, SIGKILL 10 s later.
    pub stop: StopPlan,
    pub probe: ProbeTiming,
    /// Whether children see the supervisor's whole environment (default false).
    pub inherit_env: bool,
    /// Not ready this long after its start, a component is stopped and its restart policy
    /// decides (systemd's `TimeoutStartSec=`, 90 s); zero waits for ever.
    pub start_timeout: Duration,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            restart: RestartPlan {
                policy: RestartPolicy::OnFailure,
                initial_delay: Duration::from_millis(100),
                multiplier: 2.0,
                max_delay: Duration::from_secs(30),
                jitter: 0.0,
                reset_after: Duration::from_secs(60),
                start_limit_burst: 5,
                start_limit_interval: Duration::from_secs(10),
                restart_with_dependencies: false,
            },
            stop: StopPlan {
                signal: libc::SIGTERM,
                timeout: Duration::from_secs(10),
            },
            probe: ProbeTiming {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                failure_threshold: 3,
                success_threshold: 1,
            },
            inherit_env: false,
            start_timeout: Duration::from_secs(90),
        }
    }
}
