//! Whether and when a component that stopped on its own is started again.
//!
//! This is the one place restart policy lives: the policy (systemd's `Restart=`), the
//! exponential delay (`RestartSec=`, `RestartSteps=`, `RestartMaxDelaySec=`), the reset after a
//! stable run, and the start limit (`StartLimitBurst=` within `StartLimitIntervalSec=`). It is
//! plain arithmetic over plain data, so it is tested without processes or clocks.
//!
//! A component that exits with [`FENCED_EXIT_CODE`] is never restarted, whatever its policy:
//! it found a newer copy of itself owning its work (a backfill shard requeued on another host
//! while this copy still ran), and starting it again would only fence the newer one in turn.
//! It is systemd's `RestartPreventExitStatus=65`, for every component.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::reaper::ExitStatus;
use crate::plan::{RestartPlan, RestartPolicy};

/// The exit code of a fenced component, `flowctl_sdk::EXIT_FENCED` (`EX_DATAERR`).
pub const FENCED_EXIT_CODE: i32 = 65;

/// What the supervisor remembers of a component's past starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestartHistory {
    /// Consecutive quick restarts so far: the exponent of the next delay.
    pub attempt: u32,
    /// When recent starts happened, oldest first (only those inside the start-limit window
    /// matter; older ones are dropped by [`RestartHistory::record_start`]).
    pub starts: VecDeque<Instant>,
}

impl RestartHistory {
    /// Notes a start at `now`, forgetting starts that fell out of the window and all but the
    /// last `burst` (the limit only asks whether there were `burst` of them; 0 means no limit),
    /// so a crash loop inside a long window cannot grow the history.
    pub fn record_start(&mut self, now: Instant, window: Duration, burst: u32) {
        while let Some(first) = self.starts.front() {
            if now.saturating_duration_since(*first) > window {
                self.starts.pop_front();
            } else {
                break;
            }
        }
        self.starts.push_back(now);
        while self.starts.len() > burst as usize {
            self.starts.pop_front();
        }
    }

    fn starts_within(&self, now: Instant, window: Duration) -> usize {
        self.starts
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= window)
            .count()
    }
}

/// How the process ended, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit code 0.
    Success,
    /// A non-zero code, a signal, or a failed liveness check / watchdog.
    Failure,
    /// Exit code [`FENCED_EXIT_CODE`]: a newer copy owns its work.
    Fenced,
}

impl Outcome {
    /// How the policy sees a process that ended with `status`.
    pub fn of(status: ExitStatus) -> Outcome {
        match status {
            ExitStatus::Code(0) => Outcome::Success,
            ExitStatus::Code(FENCED_EXIT_CODE) => Outcome::Fenced,
            ExitStatus::Code(_) | ExitStatus::Signal(_) => Outcome::Failure,
        }
    }
}

/// The verdict for a component whose process ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Start it again after `delay`; `attempt` is the new value of [`RestartHistory::attempt`].
    Restart { delay: Duration, attempt: u32 },
    /// It is done and that is fine (a clean exit the policy does not restart).
    Done,
    /// It is done and that is a failure; `reason` is shown in the status.
    GiveUp { reason: String },
}

/// Decides what follows the end of a run that lasted `ran_for`.
///
/// `jitter_sample` is a number in `[0, 1)` drawn by the caller, so that the decision itself
/// stays deterministic.
pub fn decide(
    plan: &RestartPlan,
    history: &RestartHistory,
    outcome: Outcome,
    ran_for: Duration,
    now: Instant,
    jitter_sample: f64,
) -> Decision {
    let wants_restart = match (plan.policy, outcome) {
        (_, Outcome::Fenced) => {
            return Decision::GiveUp {
                reason: format!(
                    "fenced: a newer copy of it owns its work (exit code {FENCED_EXIT_CODE}); \
                     not restarted"
                ),
            }
        }
        (RestartPolicy::Always, _) => true,
        (RestartPolicy::OnFailure, Outcome::Failure) => true,
        (RestartPolicy::OnFailure, Outcome::Success) => false,
        (RestartPolicy::Never, _) => false,
    };
    if !wants_restart {
        return match outcome {
            Outcome::Success => Decision::Done,
            Outcome::Failure | Outcome::Fenced => Decision::GiveUp {
                reason: "restart policy is `no`".to_string(),
            },
        };
    }
    let burst = plan.start_limit_burst as usize;
    if burst > 0 && history.starts_within(now, plan.start_limit_interval) >= burst {
        return Decision::GiveUp {
            reason: format!(
                "start limit reached: {} starts within {} (restart.start_limit)",
                burst,
                humantime::format_duration(plan.start_limit_interval)
            ),
        };
    }
    let attempt = if ran_for >= plan.reset_after {
        0
    } else {
        history.attempt
    };
    Decision::Restart {
        delay: backoff_delay(plan, attempt, jitter_sample),
        attempt: attempt.saturating_add(1),
    }
}

/// `initial_delay × multiplier^attempt`, capped at `max_delay`, plus up to `jitter` of itself
/// (still capped: the cap is a promise to the operator).
pub fn backoff_delay(plan: &RestartPlan, attempt: u32, jitter_sample: f64) -> Duration {
    let cap = plan.max_delay.as_secs_f64();
    let multiplier = if plan.multiplier.is_finite() && plan.multiplier >= 1.0 {
        plan.multiplier
    } else {
        1.0
    };
    let exponent = attempt.min(1024) as i32;
    let base = (plan.initial_delay.as_secs_f64() * multiplier.powi(exponent)).min(cap);
    let jitter = plan.jitter.clamp(0.0, 1.0) * jitter_sample.clamp(0.0, 1.0);
    let secs = (base * (1.0 + jitter)).min(cap);
    if secs.is_finite() && secs > 0.0 {
        // A cap near u64::MAX seconds rounds up past what a Duration holds.
        Duration::try_from_secs_f64(secs).unwrap_or(plan.max_delay)
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(policy: RestartPolicy) -> RestartPlan {
        RestartPlan {
            policy,
            initial_delay: Duration::from_millis(100),
            multiplier: 2.0,
            max_delay: Duration::from_millis(1000),
            jitter: 0.0,
            reset_after: Duration::from_secs(10),
            start_limit_burst: 5,
            start_limit_interval: Duration::from_secs(60),
            restart_with_dependencies: false,
        }
    }

    #[test]
    fn delay_doubles_until_cap() {
        let p = plan(RestartPolicy::Always);
        let delays: Vec<u128> = (0..6)
            .map(|a| backoff_delay(&p, a, 0.0).as_millis())
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn backoff_with_a_cap_of_u64_max_seconds_does_not_panic() {
        let mut p = plan(RestartPolicy::Always);
        p.initial_delay = Duration::from_secs(u64::MAX);
        p.max_delay = Duration::from_secs(u64::MAX);
        assert_eq!(backoff_delay(&p, 3, 1.0), Duration::from_secs(u64::MAX));
    }

    #[test]
    fn jitter_spreads_but_never_passes_cap() {
        let mut p = plan(RestartPolicy::Always);
        p.jitter = 0.5;
        assert_eq!(backoff_delay(&p, 0, 0.5).as_millis(), 125);
        assert_eq!(backoff_delay(&p, 3, 0.99).as_millis(), 1000);
    }

    #[test]
    fn policy_table() {
        let now = Instant::now();
        let h = RestartHistory::default();
        let short = Duration::from_millis(1);
        let rows = [
            (RestartPolicy::Never, Outcome::Success, "done"),
            (RestartPolicy::Never, Outcome::Failure, "give up"),
            (RestartPolicy::OnFailure, Outcome::Success, "done"),
            (RestartPolicy::OnFailure, Outcome::Failure, "restart"),
            (RestartPolicy::Always, Outcome::Success, "restart"),
            (RestartPolicy::Always, Outcome::Failure, "restart"),
            (RestartPolicy::Never, Outcome::Fenced, "give up"),
            (RestartPolicy::OnFailure, Outcome::Fenced, "give up"),
            (RestartPolicy::Always, Outcome::Fenced, "give up"),
        ];
        for (policy, outcome, want) in rows {
            let got = match decide(&plan(policy), &h, outcome, short, now, 0.0) {
                Decision::Restart { .. } => "restart",
                Decision::Done => "done",
                Decision::GiveUp { .. } => "give up",
            };
            assert_eq!(got, want, "{policy:?} {outcome:?}");
        }
    }

    #[test]
    fn exit_code_65_is_fenced_and_never_restarted_even_with_start_limit_off() {
        let rows = [
            (ExitStatus::Code(0), Outcome::Success),
            (ExitStatus::Code(1), Outcome::Failure),
            (ExitStatus::Code(65), Outcome::Fenced),
            (ExitStatus::Signal(9), Outcome::Failure),
        ];
        for (status, want) in rows {
            assert_eq!(Outcome::of(status), want, "{status}");
        }
        let mut p = plan(RestartPolicy::Always);
        p.start_limit_burst = 0;
        let d = decide(
            &p,
            &RestartHistory::default(),
            Outcome::Fenced,
            Duration::from_secs(3600),
            Instant::now(),
            0.0,
        );
        match d {
            Decision::GiveUp { reason } => assert!(reason.starts_with("fenced"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stable_run_resets_the_delay() {
        let now = Instant::now();
        let p = plan(RestartPolicy::Always);
        let h = RestartHistory {
            attempt: 4,
            starts: VecDeque::new(),
        };
        let quick = decide(&p, &h, Outcome::Failure, Duration::from_secs(1), now, 0.0);
        assert_eq!(
            quick,
            Decision::Restart {
                delay: Duration::from_millis(1000),
                attempt: 5
            }
        );
        let stable = decide(&p, &h, Outcome::Failure, Duration::from_secs(10), now, 0.0);
        assert_eq!(
            stable,
            Decision::Restart {
                delay: Duration::from_millis(100),
                attempt: 1
            }
        );
    }

    #[test]
    fn a_crash_loop_inside_a_year_long_window_keeps_only_burst_starts_and_still_gives_up() {
        let base = Instant::now();
        let mut p = plan(RestartPolicy::Always);
        p.start_limit_interval = crate::spec::units::MAX_DURATION;
        let mut h = RestartHistory::default();
        for i in 0..10_000 {
            h.record_start(
                base + Duration::from_millis(i),
                p.start_limit_interval,
                p.start_limit_burst,
            );
        }
        assert_eq!(h.starts.len(), p.start_limit_burst as usize);
        let now = base + Duration::from_secs(20);
        assert!(matches!(
            decide(&p, &h, Outcome::Failure, Duration::ZERO, now, 0.0),
            Decision::GiveUp { .. }
        ));
        let mut unlimited = RestartHistory::default();
        for i in 0..1000 {
            unlimited.record_start(base + Duration::from_millis(i), p.start_limit_interval, 0);
        }
        assert!(unlimited.starts.is_empty());
    }

    #[test]
    fn start_limit_gives_up_only_inside_the_window() {
        let base = Instant::now();
        let p = plan(RestartPolicy::Always);
        let mut h = RestartHistory::default();
        for i in 0..5 {
            h.record_start(
                base + Duration::from_secs(i),
                p.start_limit_interval,
                p.start_limit_burst,
            );
        }
        let now = base + Duration::from_secs(5);
        assert!(matches!(
            decide(&p, &h, Outcome::Failure, Duration::ZERO, now, 0.0),
            Decision::GiveUp { .. }
        ));
        let later = base + Duration::from_secs(61);
        assert!(matches!(
            decide(&p, &h, Outcome::Failure, Duration::ZERO, later, 0.0),
            Decision::Restart { .. }
        ));
        let mut unlimited = p.clone();
        unlimited.start_limit_burst = 0;
        assert!(matches!(
            decide(&unlimited, &h, Outcome::Failure, Duration::ZERO, now, 0.0),
            Decision::Restart { .. }
        ));
    }
}
