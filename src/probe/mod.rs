//! Readiness and liveness checks.
//!
//! A check is one question asked of a running component (an HTTP GET, a gRPC health check, a
//! TCP connect, a command, an sd_notify message, a registration). A [`Threshold`] turns its
//! stream of answers into the two facts the state machine cares about: the check started
//! passing, or started failing. The supervisor runs each check as a small task that reports
//! every answer back, so the status can show the last one.

pub mod exec;
pub mod grpc;
pub mod http;
pub mod notify;
pub mod registered;
pub mod tcp;
pub mod threshold;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use registered::Registrations;
pub use threshold::Threshold;

use crate::plan::{ProbeCheck, ProbePlan};

/// Which question a check answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// May dependents start, is it `ready`?
    Readiness,
    /// Is it still alive, or must it be restarted?
    Liveness,
}

/// One answer, and whether it moved the check across a threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeUpdate {
    pub kind: ProbeKind,
    /// `Err` holds what went wrong, for the status.
    pub result: Result<(), String>,
    /// `Some(passing)` when this answer crossed the success or failure threshold.
    pub crossed: Option<bool>,
}

/// What a check may need to know about the component it checks.
#[derive(Clone)]
pub struct ProbeTarget {
    pub pipeline: Arc<str>,
    pub component: Arc<str>,
    /// The component's environment, given to exec checks.
    pub env: Arc<BTreeMap<String, String>>,
    pub working_dir: Option<std::path::PathBuf>,
    /// Where bare exec-check commands are looked up.
    pub search_dirs: Arc<[std::path::PathBuf]>,
    pub registry: Option<Arc<dyn Registrations>>,
}

/// Asks `check` once, giving up after `timeout`.
pub async fn check_once(
    check: &ProbeCheck,
    timeout: Duration,
    target: &ProbeTarget,
) -> Result<(), String> {
    let answer = async {
        match check {
            ProbeCheck::Http { port, path } => http::check(*port, path).await,
            ProbeCheck::Grpc { port, service } => grpc::check(*port, service, timeout).await,
            ProbeCheck::Tcp { port } => tcp::check(*port).await,
            ProbeCheck::Registered => registered::check(target),
            ProbeCheck::Notify => Err("notify checks are answered by the notify socket".into()),
            // Exec keeps its own timeout: it must kill the command's group when it fires.
            ProbeCheck::Exec { .. } => Ok(()),
        }
    };
    if let ProbeCheck::Exec { command } = check {
        return exec::check(command, timeout, target).await;
    }
    match tokio::time::timeout(timeout, answer).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "timed out after {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// Second check of a readiness probe that has not passed yet; each later gap doubles, up to
/// the probe's period.
const STARTUP_RETRY: Duration = Duration::from_millis(50);

/// Asks a periodic check (any but `notify`) forever, reporting each answer to `report`.
/// Ends when `report` returns false (nobody listens any more).
///
/// Until a readiness check first passes, checks come sooner than the period (from 50 ms,
/// doubling), as Docker's `start_interval` does: dependents wait on it, and a component
/// usually needs milliseconds, not a whole period, to open its port.
pub async fn run_periodic(
    kind: ProbeKind,
    plan: ProbePlan,
    target: ProbeTarget,
    mut report: impl FnMut(ProbeUpdate) -> bool,
) {
    tokio::time::sleep(plan.initial_delay).await;
    let period = plan.period.max(Duration::from_millis(10));
    let mut startup_retry = (kind == ProbeKind::Readiness).then_some(STARTUP_RETRY.min(period));
    let mut threshold = Threshold::new(plan.success_threshold, plan.failure_threshold);
    loop {
        let asked = tokio::time::Instant::now();
        let result = check_once(&plan.check, plan.timeout, &target).await;
        let crossed = threshold.record(result.is_ok());
        if !report(ProbeUpdate {
            kind,
            result,
            crossed,
        }) {
            return;
        }
        if crossed == Some(true) {
            startup_retry = None;
        }
        let wait = match startup_retry {
            Some(retry) => {
                startup_retry = Some((retry * 2).min(period));
                retry
            }
            None => period,
        };
        // A check that overran its slot is followed by the next one at once, not a burst.
        tokio::time::sleep_until(asked + wait).await;
    }
}
