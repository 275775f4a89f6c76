//! `on_error: dead-letter` on the PostgreSQL sink under `flowctl run`: a ledger whose events
//! the table rejects (a CHECK constraint) becomes one dead letter, every other ledger of the
//! range is stored exactly once, and the run ends `completed_with_dead_letters`. With
//! `on_error: fail` the same ledger fails the run, naming it.

mod e2e_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use e2e_common::*;
use flowctl_proto::flowctl::RunStatus;
use flowctl_testkit::postgres::{Durability, PgCluster};

const FROM: u32 = 3;
const TO: u32 = 12;
const REJECTED: u32 = 7;
const CONSTRAINT: &str = "no_ledger_7";

/// A synthetic range `FROM..=TO` into PostgreSQL, the sink's `on_error` as given; the range
/// is `spec.range`, so `--from-ledger/--to-ledger` can change it for one run.
fn pg_pipeline(dir: &Path, name: &str, pg: &PgCluster, on_error: &str) -> std::path::PathBuf {
    let sink_env = format!(
        "        SINK: postgres\n        DATABASE_URL: \"{}\"\n        SINK_ID: pg",
        pg.url()
    );
    let text: String = synthetic_pipeline(name, FROM, TO, 0.0, &sink_env)
        .lines()
        .filter(|l| !l.contains("START_LEDGER") && !l.contains("END_LEDGER"))
        .map(|l| match l {
            "spec:" => format!("spec:\n  range: {{from_ledger: {FROM}, to_ledger: {TO}}}\n"),
            "      command: ttp-sink" => format!("{l}\n      on_error: {on_error}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    pipeline(dir, name, &text)
}

/// `flowctl run FILE --state-dir DIR/STATE ARGS…` to its end.
fn run(dir: &Path, file: &Path, state: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = run_cmd(dir, file);
    cmd.arg("--state-dir").arg(dir.join(state)).args(args);
    Running::spawn(dir, cmd).finish(Duration::from_secs(120))
}

/// The sink's tables, made by a run of ledger `FROM` alone, then a constraint that ledger
/// `REJECTED`'s events break.
fn tables_with_a_constraint(dir: &Path, file: &Path, pg: &PgCluster) {
    let from = FROM.to_string();
    let setup = run(
        dir,
        file,
        "setup-state",
        &["--from-ledger", &from, "--to-ledger", &from],
    );
    assert_eq!(
        setup.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    pg.query(&format!(
        "ALTER TABLE ttp_events ADD CONSTRAINT {CONSTRAINT} \
         CHECK (ledger_sequence <> {REJECTED})"
    ))
    .expect("the constraint is added");
}

/// Rows per ledger in `ttp_events`.
fn stored_per_ledger(pg: &PgCluster) -> BTreeMap<u64, usize> {
    let text = pg
        .query(
            "SELECT coalesce(string_agg(ledger_sequence || ':' || n, ',' \
             ORDER BY ledger_sequence), '') FROM \
             (SELECT ledger_sequence, count(*) n FROM ttp_events GROUP BY 1) t",
        )
        .unwrap();
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (l, n) = p.split_once(':').unwrap();
            (l.parse().unwrap(), n.parse().unwrap())
        })
        .collect()
}

fn cli_json(args: &[&str], state: &Path) -> serde_json::Value {
    let out = std::process::Command::new(flowctl())
        .args(args)
        .args(["-o", "json", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "flowctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_ledger_the_table_rejects_becomes_one_sink_dead_letter_and_every_other_ledger_is_stored_once() {
    let Some(pg) = PgCluster::start(Durability::Off) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = pg_pipeline(dir.path(), "pg-dlq", &pg, "dead-letter");
    tables_with_a_constraint(dir.path(), &file, &pg);

    let out = run(dir.path(), &file, "state", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("1 dead letter"), "{stderr}");

    let mut want = BTreeMap::<u64, usize>::new();
    for e in reference_events(FROM, TO) {
        *want.entry(ledger_of(&e)).or_default() += 1;
    }
    assert_eq!(want.len(), (FROM..=TO).count(), "events in every ledger");
    want.remove(&u64::from(REJECTED));
    assert_eq!(stored_per_ledger(&pg), want, "every other ledger once");

    let state = dir.path().join("state");
    let letters = cli_json(&["dlq", "ls", "--pipeline", "pg-dlq"], &state);
    let letters = letters.as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["ledger"], REJECTED);
    assert_eq!(letter["component"], "sink");
    assert_eq!(letter["status"], "open");
    let reason = letter["reason"].as_str().unwrap();
    assert!(reason.contains(CONSTRAINT), "{reason}");
    assert!(reason.contains(&format!("ledger {REJECTED}")), "{reason}");
    assert!(letter["payload_size"].as_u64() > Some(2), "{letter}");

    // `flowctl pipelines runs` asks a daemon; the run history is read here directly.
    let registry = flowctl::registry::Registry::open(flowctl::registry::RegistryConfig {
        state_dir: Some(state),
        ..Default::default()
    })
    .unwrap();
    let run = registry
        .list_runs(Default::default())
        .unwrap()
        .into_iter()
        .next()
        .expect("a run was recorded");
    assert_eq!(run.status(), RunStatus::CompletedWithDeadLetters, "{run:?}");
}

#[test]
fn a_live_sink_heartbeats_dead_letters_total_once_it_set_a_ledger_aside() {
    let Some(pg) = PgCluster::start(Durability::Off) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let setup = pg_pipeline(dir.path(), "pg-setup", &pg, "dead-letter");
    tables_with_a_constraint(dir.path(), &setup, &pg);
    // A live run (no END_LEDGER) at 50 ledgers/s, its sink heartbeating often.
    let sink_env = format!(
        "        SINK: postgres\n        DATABASE_URL: \"{}\"\n        SINK_ID: pg\n        \
         FLOWCTL_HEARTBEAT_INTERVAL: 200ms",
        pg.url()
    );
    let text: String = synthetic_pipeline("pg-live", FROM, 0, 50.0, &sink_env)
        .lines()
        .map(|l| match l {
            "      command: ttp-sink" => format!("{l}\n      on_error: dead-letter\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    let file = pipeline(dir.path(), "pg-live", &text);
    let mut cmd = run_cmd(dir.path(), &file);
    let child = cmd
        .arg("--state-dir")
        .arg(dir.path().join("live-state"))
        .stdout(std::fs::File::create(dir.path().join("flowctl.stdout")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("flowctl.stderr")).unwrap())
        .spawn()
        .unwrap();
    let running = Running {
        child: Some(child),
        dir: dir.path().to_path_buf(),
    };
    let pid = running.ready_pid("sink", Duration::from_secs(60));
    // The control plane the supervisor handed the sink.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let endpoint = environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("FLOWCTL_ENDPOINT="))
        .expect("the sink has FLOWCTL_ENDPOINT")
        .to_string();
    let sink_metric = |name: &str| -> Option<f64> {
        let out = std::process::Command::new(flowctl())
            .args(["list", "-o", "json", "--endpoint", &endpoint])
            .output()
            .ok()?;
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        // Heartbeat values are listed as text.
        list.as_array()?
            .iter()
            .find(|c| c["component_id"] == "sink")?["metrics"][name]
            .as_str()?
            .parse()
            .ok()
    };
    // The letter is counted as it is recorded, the ledgers written just after.
    wait_for(
        "the sink's heartbeat to count the dead letter and the ledgers past it",
        Duration::from_secs(60),
        || {
            sink_metric("dead_letters_total") == Some(1.0)
                && sink_metric("last_ledger_written") >= Some(f64::from(REJECTED + 1))
        },
    );
    assert_eq!(
        pg.query(&format!(
            "SELECT count(*) FROM ttp_events WHERE ledger_sequence = {REJECTED}"
        ))
        .as_deref(),
        Some("0")
    );
}

#[test]
fn with_on_error_fail_a_ledger_the_table_rejects_fails_the_run_naming_the_ledger() {
    let Some(pg) = PgCluster::start(Durability::Off) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = pg_pipeline(dir.path(), "pg-fail", &pg, "fail");
    tables_with_a_constraint(dir.path(), &file, &pg);

    let out = run(dir.path(), &file, "state", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.starts_with("sink|")
            && l.contains(&format!("ledger {REJECTED}"))
            && l.contains(CONSTRAINT)),
        "{stderr}"
    );
    // Nothing of the rejected ledger, nothing after it is claimed done.
    let stored = stored_per_ledger(&pg);
    assert!(!stored.contains_key(&u64::from(REJECTED)), "{stored:?}");
}
