//! One pipeline file through everything it reaches before a process starts: parse and
//! validate, resolve, the supervisor's plan checks, and every component's restart decision
//! for every outcome at the extremes of its own durations. Shared by the fuzz target
//! (`fuzz/fuzz_targets/pipeline_file.rs`) and the stable corpus test (`tests/spec_fuzz.rs`).
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use flowctl::spec::{parse_str, resolve, ResolveOptions};
use flowctl::supervisor::restart::{decide, Outcome, RestartHistory};
use flowctl::supervisor::{Supervisor, SupervisorOptions};

/// Panics if a file makes any step panic or yields a diagnostic without a position.
pub fn exercise(text: &str) {
    let file = Path::new("fuzz.yaml");
    let pipeline = match parse_str(file, text) {
        Ok(p) => p,
        Err(d) => return positioned(&d),
    };
    let options = ResolveOptions {
        vars: Some(Default::default()),
        ..Default::default()
    };
    let plan = match resolve(&pipeline, &options) {
        Ok(plan) => plan,
        Err(d) => return positioned(&d),
    };
    let now = Instant::now();
    for c in &plan.components {
        let r = &c.restart;
        let mut history = RestartHistory::default();
        for i in 0..3 {
            history.record_start(
                now + Duration::from_millis(i),
                r.start_limit_interval,
                r.start_limit_burst,
            );
        }
        let later = now + r.start_limit_interval;
        for outcome in [Outcome::Success, Outcome::Failure, Outcome::Fenced] {
            for ran_for in [
                Duration::ZERO,
                r.reset_after,
                r.max_delay,
                r.start_limit_interval,
            ] {
                for jitter in [0.0, 0.5, 0.999_999] {
                    let _ = decide(r, &history, outcome, ran_for, later, jitter);
                }
            }
        }
    }
    let runtime = std::env::temp_dir().join("flowctl-fuzz-runtime");
    // Plans a pipeline file resolved to must be plans the supervisor takes or refuses in words.
    if let Err(e) = Supervisor::new(vec![plan], SupervisorOptions::new(runtime)) {
        assert!(!e.to_string().is_empty());
    }
}

fn positioned(d: &flowctl::spec::Diagnostics) {
    for e in d.errors() {
        let shown = e.to_string();
        assert!(
            shown.starts_with("fuzz.yaml:"),
            "a diagnostic without a position: {shown}"
        );
    }
}
