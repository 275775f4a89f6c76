//! The life of one component as a pure transition function.
//!
//! [`next`] looks at the current [`State`], one [`Event`] and a read-only [`Ctx`], and answers
//! with the new state and the [`Action`]s to carry out. It never touches a process, a clock or a
//! socket: the runner in `runner.rs` turns actions into signals, spawns and timers and feeds
//! what happens back as events. The `match` is exhaustive over (state, event), so adding a
//! state or an event does not compile until every case has been decided.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::restart::{decide, Decision, Outcome, RestartHistory};
use crate::plan::ComponentPlan;

/// Where a component is in its life. Names match the status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Waiting for everything in `depends_on` to be ready.
    Pending,
    /// Running, not (yet) ready.
    Starting,
    /// Running and its readiness check passes.
    Ready,
    /// Ended; waiting out the restart delay.
    Backoff,
    /// Stop signal sent to the process group; waiting for the main process to end.
    Stopping(StopIntent),
    /// Ended and the restart policy leaves it ended (a clean finish).
    Exited,
    /// Ended for good in a way that needs an operator: start limit, policy `no` after a
    /// failure, or a program that cannot be started.
    Failed,
    /// Stopped on request.
    Stopped,
}

/// Why a component is being stopped, which decides what its exit leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopIntent {
    /// Stop and stay stopped.
    Halt,
    /// Stop, then start again at once (operator restart or a dependency's restart).
    Restart,
    /// The liveness check or watchdog failed: the exit counts as a failure for the policy.
    Recover { reason: String },
}

/// The state's name in status output and the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateName {
    Pending,
    Starting,
    Ready,
    Backoff,
    Stopping,
    Exited,
    Failed,
    Stopped,
}

impl State {
    pub fn name(&self) -> StateName {
        match self {
            State::Pending => StateName::Pending,
            State::Starting => StateName::Starting,
            State::Ready => StateName::Ready,
            State::Backoff => StateName::Backoff,
            State::Stopping(_) => StateName::Stopping,
            State::Exited => StateName::Exited,
            State::Failed => StateName::Failed,
            State::Stopped => StateName::Stopped,
        }
    }

    /// Whether a process of this component may be alive.
    pub fn is_running(&self) -> bool {
        matches!(self, State::Starting | State::Ready | State::Stopping(_))
    }

    /// Whether nothing more happens to it without an operator.
    pub fn is_final(&self) -> bool {
        matches!(self, State::Exited | State::Failed | State::Stopped)
    }
}

impl StateName {
    /// The name `flowctl-sup status` prints, also a metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Pending => "pending",
            StateName::Starting => "starting",
            StateName::Ready => "ready",
            StateName::Backoff => "backoff",
            StateName::Stopping => "stopping",
            StateName::Exited => "exited",
            StateName::Failed => "failed",
            StateName::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for StateName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened to a component.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Everything it depends on is ready.
    DepsReady,
    /// Its process was started.
    Spawned,
    /// Its program could not be started: for good (not found, not executable, bad user…), or
    /// for `lacks_resources` (no fd, process or memory left), which the policy may retry.
    SpawnFailed {
        error: String,
        lacks_resources: bool,
    },
    /// Its main process ended after running for `ran_for`; `description` says how
    /// ("exited with code 3", "killed by signal 9").
    Exited {
        outcome: Outcome,
        ran_for: Duration,
        description: String,
    },
    /// The readiness check reached its success threshold.
    ReadinessPassed,
    /// The readiness check reached its failure threshold.
    ReadinessFailed,
    /// The liveness check reached its failure threshold, or the watchdog expired.
    LivenessFailed { reason: String },
    /// Its start timeout passed before its readiness check did.
    StartTimedOut,
    /// The restart delay is over.
    BackoffElapsed,
    /// The stop timeout is over and the main process is still there.
    StopTimeout,
    /// An operator or the shutdown sequence asks it to stop.
    StopRequested,
    /// An operator asks it to start.
    StartRequested,
    /// An operator asks it to restart.
    RestartRequested,
    /// A component it depends on is restarting.
    DependencyRestarted,
}

/// Something the runner must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start the process (the runner answers with `Spawned` or `SpawnFailed`).
    Spawn,
    /// Start the readiness/liveness checks and the watchdog of the new process.
    StartProbes,
    /// Stop them.
    StopProbes,
    /// Send this signal to the whole process group.
    Signal(i32),
    /// SIGKILL the whole process group.
    Kill,
    /// Deliver `StopTimeout` after this long.
    ArmStopTimer(Duration),
    /// Deliver `StartTimedOut` after this long, unless it becomes ready first.
    ArmStartTimer(Duration),
    /// Deliver `BackoffElapsed` after `delay`, and remember `attempt` for the next delay.
    ArmBackoff { delay: Duration, attempt: u32 },
    /// Forget a pending timer.
    CancelTimer,
    /// Forget past restarts: an operator started it anew.
    ResetHistory,
    /// Why it is in its state, for the status (`None` clears it).
    SetReason(Option<String>),
    /// Tell dependents that ask for it (`restart_with_dependencies`) to restart too.
    RestartDependents,
}

/// What `next` may read besides the state and the event.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub plan: &'a ComponentPlan,
    pub history: &'a RestartHistory,
    pub now: Instant,
    /// A number in `[0, 1)` for the restart jitter.
    pub jitter: f64,
}

/// The transition function.
pub fn next(state: &State, event: &Event, ctx: &Ctx<'_>) -> (State, Vec<Action>) {
    use Event as E;
    use State as S;
    let stay = || (state.clone(), Vec::new());
    match (state, event) {
        (S::Pending, E::DepsReady) => (S::Starting, vec![Action::Spawn]),
        (S::Pending, E::StopRequested) => (S::Stopped, vec![]),
        (
            S::Pending,
            E::Spawned
            | E::SpawnFailed { .. }
            | E::Exited { .. }
            | E::ReadinessPassed
            | E::ReadinessFailed
            | E::LivenessFailed { .. }
            | E::StartTimedOut
            | E::BackoffElapsed
            | E::StopTimeout
            | E::StartRequested
            | E::RestartRequested
            | E::DependencyRestarted,
        ) => stay(),

        (S::Starting | S::Ready, E::Spawned) => {
            if ctx.plan.readiness.is_none() {
                return (S::Ready, vec![Action::StartProbes]);
            }
            let mut actions = vec![Action::StartProbes];
            actions.extend(ctx.plan.start_timeout.map(Action::ArmStartTimer));
            (S::Starting, actions)
        }
        (
            S::Starting | S::Ready,
            E::SpawnFailed {
                error,
                lacks_resources: false,
            },
        ) => (S::Failed, vec![Action::SetReason(Some(error.clone()))]),
        (
            S::Starting | S::Ready,
            E::SpawnFailed {
                error,
                lacks_resources: true,
            },
        ) => {
            // Retried like a crash; nothing ran, so nothing downstream has to restart.
            let (state, mut actions) =
                after_exit(ctx, Outcome::Failure, Duration::ZERO, error, vec![]);
            actions.retain(|a| *a != Action::RestartDependents);
            (state, actions)
        }
        (
            S::Starting | S::Ready,
            E::Exited {
                outcome,
                ran_for,
                description,
            },
        ) => after_exit(ctx, *outcome, *ran_for, description, vec![]),
        (S::Starting, E::ReadinessPassed) => (S::Ready, vec![Action::CancelTimer]),
        (S::Ready, E::ReadinessPassed) => stay(),
        (S::Starting, E::StartTimedOut) => {
            let after = ctx.plan.start_timeout.unwrap_or_default();
            stop(
                ctx,
                StopIntent::Recover {
                    reason: format!(
                        "not ready within {} (start_timeout)",
                        humantime::format_duration(after)
                    ),
                },
            )
        }
        (S::Ready, E::StartTimedOut) => stay(),
        (S::Starting | S::Ready, E::ReadinessFailed) => (S::Starting, vec![]),
        (S::Starting | S::Ready, E::LivenessFailed { reason }) => stop(
            ctx,
            StopIntent::Recover {
                reason: reason.clone(),
            },
        ),
        (S::Starting | S::Ready, E::StopRequested) => stop(ctx, StopIntent::Halt),
        (S::Starting | S::Ready, E::RestartRequested) => stop(ctx, StopIntent::Restart),
        (S::Starting | S::Ready, E::DependencyRestarted) => {
            if ctx.plan.restart.restart_with_dependencies {
                stop(ctx, StopIntent::Restart)
            } else {
                stay()
            }
        }
        (
            S::Starting | S::Ready,
            E::DepsReady | E::BackoffElapsed | E::StopTimeout | E::StartRequested,
        ) => stay(),

        (S::Backoff, E::BackoffElapsed) => (S::Pending, vec![]),
        (S::Backoff, E::StopRequested) => (S::Stopped, vec![Action::CancelTimer]),
        (S::Backoff, E::StartRequested | E::RestartRequested) => {
            (S::Pending, vec![Action::CancelTimer])
        }
        (
            S::Backoff,
            E::DepsReady
            | E::Spawned
            | E::SpawnFailed { .. }
            | E::Exited { .. }
            | E::ReadinessPassed
            | E::ReadinessFailed
            | E::LivenessFailed { .. }
            | E::StartTimedOut
            | E::StopTimeout
            | E::DependencyRestarted,
        ) => stay(),

        (
            S::Stopping(intent),
            E::Exited {
                ran_for,
                description,
                ..
            },
        ) => match intent {
            StopIntent::Halt => (
                S::Stopped,
                vec![Action::CancelTimer, Action::SetReason(None)],
            ),
            StopIntent::Restart => (
                S::Pending,
                vec![Action::CancelTimer, Action::RestartDependents],
            ),
            StopIntent::Recover { reason } => after_exit(
                ctx,
                Outcome::Failure,
                *ran_for,
                &format!("{reason} ({description} after the stop signal)"),
                vec![Action::CancelTimer],
            ),
        },
        (S::Stopping(_), E::StopTimeout) => (state.clone(), vec![Action::Kill]),
        (S::Stopping(_), E::StopRequested) => (S::Stopping(StopIntent::Halt), vec![]),
        (S::Stopping(_), E::RestartRequested | E::StartRequested) => {
            (S::Stopping(StopIntent::Restart), vec![])
        }
        (
            S::Stopping(_),
            E::DepsReady
            | E::Spawned
            | E::SpawnFailed { .. }
            | E::ReadinessPassed
            | E::ReadinessFailed
            | E::LivenessFailed { .. }
            | E::StartTimedOut
            | E::BackoffElapsed
            | E::DependencyRestarted,
        ) => stay(),

        (S::Exited | S::Failed | S::Stopped, E::StartRequested | E::RestartRequested) => (
            S::Pending,
            vec![Action::ResetHistory, Action::SetReason(None)],
        ),
        (
            S::Exited | S::Failed | S::Stopped,
            E::DepsReady
            | E::Spawned
            | E::SpawnFailed { .. }
            | E::Exited { .. }
            | E::ReadinessPassed
            | E::ReadinessFailed
            | E::LivenessFailed { .. }
            | E::StartTimedOut
            | E::BackoffElapsed
            | E::StopTimeout
            | E::StopRequested
            | E::DependencyRestarted,
        ) => stay(),
    }
}

/// Stop the process group: configured signal now, SIGKILL when the timeout passes.
fn stop(ctx: &Ctx<'_>, intent: StopIntent) -> (State, Vec<Action>) {
    (
        State::Stopping(intent),
        vec![
            Action::StopProbes,
            Action::Signal(ctx.plan.stop.signal),
            Action::ArmStopTimer(ctx.plan.stop.timeout),
        ],
    )
}

/// The process ended on its own (or after a failed liveness check): ask the restart policy.
fn after_exit(
    ctx: &Ctx<'_>,
    outcome: Outcome,
    ran_for: Duration,
    description: &str,
    mut actions: Vec<Action>,
) -> (State, Vec<Action>) {
    actions.push(Action::StopProbes);
    match decide(
        &ctx.plan.restart,
        ctx.history,
        outcome,
        ran_for,
        ctx.now,
        ctx.jitter,
    ) {
        Decision::Restart { delay, attempt } => {
            actions.push(Action::SetReason(Some(description.to_string())));
            actions.push(Action::ArmBackoff { delay, attempt });
            actions.push(Action::RestartDependents);
            (State::Backoff, actions)
        }
        Decision::Done => {
            actions.push(Action::SetReason(Some(description.to_string())));
            (State::Exited, actions)
        }
        Decision::GiveUp { reason } => {
            actions.push(Action::SetReason(Some(format!("{description}; {reason}"))));
            (State::Failed, actions)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::testplan::component;

    fn exited(outcome: Outcome) -> Event {
        Event::Exited {
            outcome,
            ran_for: Duration::from_millis(5),
            description: "exited with code 1".into(),
        }
    }

    fn run(state: State, event: Event, with_readiness: bool) -> (State, Vec<Action>) {
        let mut plan = component("c");
        if with_readiness {
            plan.readiness = Some(crate::plan::ProbePlan {
                check: crate::plan::ProbeCheck::Tcp { port: 1 },
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                failure_threshold: 1,
                success_threshold: 1,
            });
        }
        plan.restart.initial_delay = Duration::from_millis(100);
        let history = RestartHistory::default();
        let ctx = Ctx {
            plan: &plan,
            history: &history,
            now: Instant::now(),
            jitter: 0.0,
        };
        next(&state, &event, &ctx)
    }

    fn stop_actions() -> Vec<Action> {
        vec![
            Action::StopProbes,
            Action::Signal(libc::SIGTERM),
            Action::ArmStopTimer(Duration::from_secs(5)),
        ]
    }

    #[test]
    fn transition_table() {
        use Action as A;
        use State as S;
        let recover = S::Stopping(StopIntent::Recover {
            reason: "liveness".into(),
        });
        let rows: Vec<(State, Event, bool, State, Vec<Action>)> = vec![
            (
                S::Pending,
                Event::DepsReady,
                false,
                S::Starting,
                vec![A::Spawn],
            ),
            (S::Pending, Event::StopRequested, false, S::Stopped, vec![]),
            (S::Pending, Event::StartRequested, false, S::Pending, vec![]),
            (
                S::Starting,
                Event::Spawned,
                false,
                S::Ready,
                vec![A::StartProbes],
            ),
            (
                S::Starting,
                Event::Spawned,
                true,
                S::Starting,
                vec![A::StartProbes],
            ),
            (
                S::Starting,
                Event::SpawnFailed {
                    error: "nope: No such file or directory (os error 2)".into(),
                    lacks_resources: false,
                },
                false,
                S::Failed,
                vec![A::SetReason(Some(
                    "nope: No such file or directory (os error 2)".into(),
                ))],
            ),
            (
                S::Starting,
                Event::SpawnFailed {
                    error: "cannot run x: Too many open files (os error 24)".into(),
                    lacks_resources: true,
                },
                false,
                S::Backoff,
                vec![
                    A::StopProbes,
                    A::SetReason(Some(
                        "cannot run x: Too many open files (os error 24)".into(),
                    )),
                    A::ArmBackoff {
                        delay: Duration::from_millis(100),
                        attempt: 1,
                    },
                ],
            ),
            (
                S::Starting,
                Event::ReadinessPassed,
                true,
                S::Ready,
                vec![A::CancelTimer],
            ),
            (S::Ready, Event::ReadinessFailed, true, S::Starting, vec![]),
            (
                S::Ready,
                exited(Outcome::Failure),
                false,
                S::Backoff,
                vec![
                    A::StopProbes,
                    A::SetReason(Some("exited with code 1".into())),
                    A::ArmBackoff {
                        delay: Duration::from_millis(100),
                        attempt: 1,
                    },
                    A::RestartDependents,
                ],
            ),
            (
                S::Ready,
                Event::LivenessFailed {
                    reason: "liveness".into(),
                },
                false,
                recover.clone(),
                stop_actions(),
            ),
            (
                S::Ready,
                Event::StopRequested,
                false,
                S::Stopping(StopIntent::Halt),
                stop_actions(),
            ),
            (
                S::Ready,
                Event::RestartRequested,
                false,
                S::Stopping(StopIntent::Restart),
                stop_actions(),
            ),
            (
                S::Ready,
                Event::DependencyRestarted,
                false,
                S::Ready,
                vec![],
            ),
            (S::Backoff, Event::BackoffElapsed, false, S::Pending, vec![]),
            (
                S::Backoff,
                Event::StopRequested,
                false,
                S::Stopped,
                vec![A::CancelTimer],
            ),
            (
                S::Backoff,
                Event::RestartRequested,
                false,
                S::Pending,
                vec![A::CancelTimer],
            ),
            (
                S::Stopping(StopIntent::Halt),
                Event::StopTimeout,
                false,
                S::Stopping(StopIntent::Halt),
                vec![A::Kill],
            ),
            (
                S::Stopping(StopIntent::Halt),
                exited(Outcome::Failure),
                false,
                S::Stopped,
                vec![A::CancelTimer, A::SetReason(None)],
            ),
            (
                S::Stopping(StopIntent::Restart),
                exited(Outcome::Success),
                false,
                S::Pending,
                vec![A::CancelTimer, A::RestartDependents],
            ),
            (
                S::Stopping(StopIntent::Restart),
                Event::StopRequested,
                false,
                S::Stopping(StopIntent::Halt),
                vec![],
            ),
            (
                recover,
                exited(Outcome::Success),
                false,
                S::Backoff,
                vec![
                    A::CancelTimer,
                    A::StopProbes,
                    A::SetReason(Some(
                        "liveness (exited with code 1 after the stop signal)".into(),
                    )),
                    A::ArmBackoff {
                        delay: Duration::from_millis(100),
                        attempt: 1,
                    },
                    A::RestartDependents,
                ],
            ),
            (S::Exited, Event::DepsReady, false, S::Exited, vec![]),
            (
                S::Failed,
                Event::StartRequested,
                false,
                S::Pending,
                vec![A::ResetHistory, A::SetReason(None)],
            ),
            (
                S::Stopped,
                Event::RestartRequested,
                false,
                S::Pending,
                vec![A::ResetHistory, A::SetReason(None)],
            ),
            (S::Stopped, Event::StopRequested, false, S::Stopped, vec![]),
        ];
        for (i, (state, event, readiness, want_state, want_actions)) in rows.into_iter().enumerate()
        {
            let (got_state, got_actions) = run(state.clone(), event.clone(), readiness);
            assert_eq!(
                (got_state, got_actions),
                (want_state, want_actions),
                "row {i}: {state:?} + {event:?}"
            );
        }
    }

    #[test]
    fn dependency_restart_restarts_only_when_asked() {
        let mut plan = component("c");
        plan.restart.restart_with_dependencies = true;
        let history = RestartHistory::default();
        let ctx = Ctx {
            plan: &plan,
            history: &history,
            now: Instant::now(),
            jitter: 0.0,
        };
        let (state, _) = next(&State::Ready, &Event::DependencyRestarted, &ctx);
        assert_eq!(state, State::Stopping(StopIntent::Restart));
    }

    #[test]
    fn a_start_timeout_is_armed_cancelled_by_readiness_and_stops_for_the_restart_policy() {
        let mut plan = component("c");
        plan.readiness = Some(crate::plan::ProbePlan {
            check: crate::plan::ProbeCheck::Registered,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failure_threshold: 1,
            success_threshold: 1,
        });
        plan.start_timeout = Some(Duration::from_secs(90));
        plan.restart.initial_delay = Duration::from_millis(100);
        let history = RestartHistory::default();
        let ctx = Ctx {
            plan: &plan,
            history: &history,
            now: Instant::now(),
            jitter: 0.0,
        };
        assert_eq!(
            next(&State::Starting, &Event::Spawned, &ctx),
            (
                State::Starting,
                vec![
                    Action::StartProbes,
                    Action::ArmStartTimer(Duration::from_secs(90))
                ]
            )
        );
        assert_eq!(
            next(&State::Starting, &Event::ReadinessPassed, &ctx),
            (State::Ready, vec![Action::CancelTimer])
        );
        assert_eq!(
            next(&State::Ready, &Event::StartTimedOut, &ctx).0,
            State::Ready
        );
        let (state, actions) = next(&State::Starting, &Event::StartTimedOut, &ctx);
        let reason = "not ready within 1m 30s (start_timeout)".to_string();
        assert_eq!(
            state,
            State::Stopping(StopIntent::Recover {
                reason: reason.clone()
            })
        );
        assert_eq!(actions, stop_actions());
        // Once it is down, the restart policy decides, as for any failure.
        let (state, actions) = next(&state, &exited(Outcome::Failure), &ctx);
        assert_eq!(state, State::Backoff);
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, Action::SetReason(Some(r)) if r.starts_with(&reason))),
            "{actions:?}"
        );
        plan.restart.policy = crate::plan::RestartPolicy::Never;
        let ctx = Ctx {
            plan: &plan,
            history: &history,
            now: Instant::now(),
            jitter: 0.0,
        };
        let (state, _) = next(
            &State::Stopping(StopIntent::Recover { reason }),
            &exited(Outcome::Failure),
            &ctx,
        );
        assert_eq!(state, State::Failed);
        // Without a start timeout nothing is armed.
        plan.start_timeout = None;
        let ctx = Ctx {
            plan: &plan,
            history: &history,
            now: Instant::now(),
            jitter: 0.0,
        };
        assert_eq!(
            next(&State::Starting, &Event::Spawned, &ctx).1,
            vec![Action::StartProbes]
        );
    }

    #[test]
    fn clean_exit_under_on_failure_is_exited() {
        let mut plan = component("c");
        plan.restart.policy = crate::plan::RestartPolicy::OnFailure;
        let history = RestartHistory::default();
        let ctx = Ctx {
            plan: &plan,
            history: &history,
            now: Instant::now(),
            jitter: 0.0,
        };
        let (state, _) = next(&State::Ready, &exited(Outcome::Success), &ctx);
        assert_eq!(state, State::Exited);
        let (state, actions) = next(&State::Ready, &exited(Outcome::Failure), &ctx);
        assert_eq!(state, State::Backoff);
        assert!(actions.contains(&Action::RestartDependents));
    }

    #[test]
    fn a_fenced_exit_fails_for_good_under_restart_always_and_restarts_nothing_downstream() {
        let mut plan = component("c");
        plan.restart.policy = crate::plan::RestartPolicy::Always;
        let history = RestartHistory::default();
        let ctx = Ctx {
            plan: &plan,
            history: &history,
            now: Instant::now(),
            jitter: 0.0,
        };
        let (state, actions) = next(&State::Ready, &exited(Outcome::Fenced), &ctx);
        assert_eq!(state, State::Failed);
        assert!(!actions.contains(&Action::RestartDependents), "{actions:?}");
        assert!(
            actions.iter().any(|a| matches!(
                a,
                Action::SetReason(Some(r)) if r.contains("fenced")
            )),
            "{actions:?}"
        );
    }
}
