//! Bounded ledger-range runs: `spec.range` and `flowctl run --from-ledger/--to-ledger` reach
//! the bundled source and sink, the run completes with exactly the range's events, and the
//! run record carries the range and how far the sinks got.

mod e2e_common;

use std::path::Path;
use std::time::Duration;

use e2e_common::*;
use flowctl_proto::flowctl::RunStatus;

fn run_to_end(dir: &Path, file: &Path, extra: &[&str]) -> std::process::Output {
    let out = run_cmd(dir, file)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn last_run(dir: &Path) -> flowctl_proto::flowctl::PipelineRun {
    let registry = flowctl::registry::Registry::open(flowctl::registry::RegistryConfig {
        state_dir: Some(dir.join("state")),
        ..Default::default()
    })
    .unwrap();
    let runs = registry.list_runs(Default::default()).unwrap();
    runs.into_iter().next().expect("a run was recorded")
}

#[test]
fn spec_range_bounds_the_run_and_the_run_record_carries_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = ranged_pipeline(dir.path(), "ranged", 2, 41, 0.0);
    run_to_end(dir.path(), &file, &[]);
    let events = parse_jsonl(&std::fs::read_to_string(dir.path().join("ranged.jsonl")).unwrap());
    assert_eq!(events, reference_events(2, 41));
    let run = last_run(dir.path());
    assert_eq!(run.status(), RunStatus::Completed);
    assert_eq!((run.from_ledger, run.to_ledger), (2, 41));
    assert_eq!(run.last_ledger_done, 41, "{run:?}");
}

#[test]
fn from_and_to_ledger_on_the_command_line_replace_spec_range_for_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = ranged_pipeline(dir.path(), "ranged", 2, 41, 0.0);
    run_to_end(
        dir.path(),
        &file,
        &["--from-ledger", "10", "--to-ledger", "20"],
    );
    let events = parse_jsonl(&std::fs::read_to_string(dir.path().join("ranged.jsonl")).unwrap());
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| (10..=20).contains(&ledger_of(e))));
    assert_eq!(events, reference_events(10, 20));
    let run = last_run(dir.path());
    assert_eq!((run.from_ledger, run.to_ledger), (10, 20));

    // A range that ends before it starts is refused before anything runs.
    let bad = run_cmd(dir.path(), &file)
        .args(["--from-ledger", "30", "--to-ledger", "20"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--to-ledger 20 is before --from-ledger 30"),
        "{stderr}"
    );
}

#[test]
fn a_bounded_run_killed_with_kill_9_and_started_again_writes_every_event_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = ranged_pipeline(dir.path(), "ranged", 2, 301, 100.0);
    let out = dir.path().join("ranged.jsonl");
    let mut first = run_cmd(dir.path(), &file)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "the first run to write events",
        Duration::from_secs(60),
        || lines_so_far(&out) > 200,
    );
    // flowctl run and, through their parent-death signal, its components die mid-range.
    kill9(first.id() as i32);
    first.wait().unwrap();
    let written = lines_so_far(&out);
    assert!(written > 0);

    run_to_end(dir.path(), &file, &[]);
    let events = parse_jsonl(&std::fs::read_to_string(&out).unwrap());
    let reference = reference_events(2, 301);
    assert!(
        written < reference.len(),
        "the kill came after the end ({written} lines)"
    );
    assert_eq!(events.len(), reference.len(), "duplicates or gaps");
    assert_eq!(events, reference);
}

#[test]
fn a_shard_writes_its_range_into_the_output_its_id_and_range_name_and_its_run_is_named_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = ranged_pipeline(dir.path(), "backfill", 2, 41, 0.0);
    // One output per shard, named from the run's shard and range.
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "backfill.jsonl",
        "backfill-${shard.id}-${range.from}-${range.to}.jsonl",
    );
    std::fs::write(&file, text).unwrap();
    run_to_end(
        dir.path(),
        &file,
        &["--from-ledger", "7", "--to-ledger", "15", "--shard-id", "3"],
    );
    let out = dir.path().join("backfill-3-7-15.jsonl");
    let events = parse_jsonl(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(events, reference_events(7, 15));
    let run = last_run(dir.path());
    assert_eq!(run.pipeline_name, "backfill@shard-3");
    assert_eq!(run.status(), RunStatus::Completed);

    // A shard id that could not name a file is refused.
    let bad = run_cmd(dir.path(), &file)
        .args([
            "--from-ledger",
            "7",
            "--to-ledger",
            "15",
            "--shard-id",
            "../x",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("a shard id is 1 to 64 letters"), "{stderr}");
}
