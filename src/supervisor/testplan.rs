//! Plans built in code rather than read from a pipeline file: for tests, benchmarks and
//! embedding. The values are the defaults a pipeline file gets when it says nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::plan::{
    ComponentPlan, PipelinePlan, ProbeCheck, ProbePlan, Resources, RestartPlan, RestartPolicy,
    Rlimits, Role, StopPlan,
};

/// A component running `id` as its command, with default restart and stop settings.
pub fn component(id: &str) -> ComponentPlan {
    ComponentPlan {
        id: id.to_string(),
        role: Role::Processor,
        command: id.to_string(),
        args: Vec::new(),
        env: BTreeMap::new(),
        inherit_env: false,
        on_error: Default::default(),
        heartbeat_interval_format: Default::default(),
        start_timeout: None,
        working_dir: None,
        user: None,
        group: None,
        rlimits: Rlimits::default(),
        inputs: Vec::new(),
        depends_on: Vec::new(),
        ports: Vec::new(),
        health_port: 0,
        restart: RestartPlan {
            policy: RestartPolicy::Always,
            initial_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_secs(30),
            jitter: 0.0,
            reset_after: Duration::from_secs(60),
            start_limit_burst: 5,
            start_limit_interval: Duration::from_secs(10),
            restart_with_dependencies: false,
        },
        readiness: None,
        liveness: None,
        stop: StopPlan {
            signal: libc::SIGTERM,
            timeout: Duration::from_secs(5),
        },
        watchdog: None,
        resources: Resources::default(),
    }
}

/// A probe with the given check, checked every `period`, passing or failing on one result.
pub fn probe(check: ProbeCheck, period: Duration) -> ProbePlan {
    ProbePlan {
        check,
        initial_delay: Duration::ZERO,
        period,
        timeout: Duration::from_secs(1),
        failure_threshold: 1,
        success_threshold: 1,
    }
}

/// A pipeline of these components, in the order given (which must already be a dependency
/// order).
pub fn pipeline(name: &str, components: Vec<ComponentPlan>) -> PipelinePlan {
    PipelinePlan {
        name: name.to_string(),
        source_file: PathBuf::from(format!("{name}.yaml")),
        config_yaml: String::new(),
        components,
        range: None,
        stalled_after: None,
        chunking: Default::default(),
    }
}
