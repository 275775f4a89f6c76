//! The pipeline files in `examples/` as an operator uses them: every one validates, and the
//! quickstart runs to a clean end under `flowctl run`.

mod e2e_common;

use std::process::Command;
use std::time::Duration;

use e2e_common::*;

fn examples() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_pipeline_validates() {
    let files = examples();
    assert!(files.len() >= 7, "examples: {files:?}");
    for file in files {
        let out = Command::new(flowctl())
            .arg("validate")
            .arg(&file)
            // examples/postgres.yaml takes it from flowctl's environment.
            .env("DATABASE_URL", "postgres://flowctl@localhost/flowctl")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} does not validate:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn quickstart_prints_the_events_of_fifty_ledgers_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = Running::start(dir.path(), &repo().join("examples/ttp-pipeline.yaml"))
        .finish(Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // The console sink's lines (`ledger N tx T …`), prefixed by its id.
    let mut ledgers: Vec<u64> = stdout
        .lines()
        .chain(stderr.lines())
        .filter_map(|l| l.strip_prefix("console| ledger "))
        .map(|l| {
            l.split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .collect();
    assert!(ledgers.len() > 50, "events printed:\n{stderr}");
    assert!(ledgers.windows(2).all(|w| w[0] <= w[1]), "in ledger order");
    ledgers.dedup();
    // Every ledger pays fees, so every ledger of the range has events.
    assert_eq!(ledgers, (2..=51).collect::<Vec<u64>>());
}

#[test]
fn seed_token_pipeline_starts_the_bundled_components_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(
        dir.path(),
        &repo().join("examples/seed-stellar-token-pipeline.yaml"),
    );
    run.ready_pid("stellar-live-source", Duration::from_secs(60));
    run.ready_pid("token-transfer-processor", Duration::from_secs(60));
    let pid = run.child.as_ref().unwrap().id() as i32;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = run.finish(Duration::from_secs(30));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
