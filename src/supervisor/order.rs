//! Start and stop order across a pipeline's components, as pure questions over their states.
//!
//! Start follows the graph: a component starts once everything in its `depends_on` is ready.
//! Stop drains: components with no inputs (sources) stop first, then each component once all of
//! its inputs have stopped, so events in flight still reach the sinks.

use super::state::State;

/// Whether a dependency in `state` lets its dependents start.
///
/// A dependency that finished cleanly (`exited`) counts as satisfied: a bounded job that did
/// its work before its dependents came up must not hold them back forever.
pub fn satisfies_dependents(state: &State) -> bool {
    matches!(state, State::Ready | State::Exited)
}

/// Whether a pending component may start, given the states of what it depends on.
pub fn may_start<'a>(deps: impl IntoIterator<Item = &'a State>) -> bool {
    deps.into_iter().all(satisfies_dependents)
}

/// Whether a component may be told to stop during a drain, given the states of its inputs.
pub fn may_stop<'a>(inputs: impl IntoIterator<Item = &'a State>) -> bool {
    inputs.into_iter().all(|s| !s.is_running())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::state::StopIntent;

    #[test]
    fn start_waits_for_every_dependency() {
        assert!(may_start([]));
        assert!(may_start([&State::Ready, &State::Exited]));
        for blocking in [
            State::Pending,
            State::Starting,
            State::Backoff,
            State::Stopping(StopIntent::Halt),
            State::Failed,
            State::Stopped,
        ] {
            assert!(!may_start([&State::Ready, &blocking]), "{blocking:?}");
        }
    }

    #[test]
    fn drain_waits_until_inputs_are_down() {
        assert!(may_stop([]));
        assert!(may_stop([&State::Stopped, &State::Exited, &State::Backoff]));
        assert!(!may_stop([
            &State::Stopped,
            &State::Stopping(StopIntent::Halt)
        ]));
        assert!(!may_stop([&State::Ready]));
        assert!(!may_stop([&State::Starting]));
    }
}
