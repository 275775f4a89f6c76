//! The pipeline files in `examples/` as an operator uses them: every one validates, and the
//! quickstart and the seed pipelines run under `flowctl run`.

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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let mut ledgers = console_ledgers(&out, "console");
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

/// The ledgers of the console sink's lines (`ID| ledger N tx T …`) in `out`, in print order.
fn console_ledgers(out: &std::process::Output, id: &str) -> Vec<u64> {
    let prefix = format!("{id}| ledger ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|l| {
            l.split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .collect()
}

#[test]
fn seed_ttp_processing_pipeline_runs_to_its_end_ledger_on_the_bundled_components() {
    // The file keeps the original's fixed ports; another program holding one is not our bug.
    for port in [50051, 50052, 8088, 8089, 3000] {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            eprintln!("skipped: port {port}, which the seed pipeline fixes, is in use");
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Running::start(
        dir.path(),
        &repo().join("examples/seed-ttp-processing-pipeline.yaml"),
    )
    .finish(Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let mut ledgers = console_ledgers(&out, "consumer-app");
    assert!(ledgers.windows(2).all(|w| w[0] <= w[1]), "in ledger order");
    let events = ledgers.len();
    ledgers.dedup();
    assert_eq!(ledgers, (2..=21).collect::<Vec<u64>>(), "{stderr}");
    // 4 transactions a ledger, each paying a fee: at least that many events.
    assert!(events >= 20 * 4, "{events} events");
}
