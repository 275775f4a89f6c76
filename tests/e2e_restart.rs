//! Components killed mid-stream under `flowctl run`: the supervisor restarts them and the
//! events still arrive each exactly once, compared with an undisturbed run of the same
//! deterministic synthetic ledgers.

mod e2e_common;

use std::path::Path;
use std::time::Duration;

use flowctl_testkit::postgres::{Durability, PgCluster};

use e2e_common::*;

const START: u32 = 2;
const END: u32 = 81;
/// Ledgers per second: slow enough that there is a middle to kill in.
const RATE: f64 = 16.0;

#[test]
fn source_killed_mid_stream_is_restarted_and_the_sink_gets_no_gap_and_no_duplicate() {
    bin_dir();
    let reference = reference_events(START, END);
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("events.jsonl");
    let file = pipeline(
        dir.path(),
        "kill-source",
        &synthetic_pipeline(
            "kill-source",
            START,
            END,
            RATE,
            &format!(
                "        SINK: jsonl\n        OUTPUT_FILE: \"{}\"\n        FLUSH_INTERVAL: 20ms",
                out_file.display()
            ),
        ),
    );
    let run = Running::start(dir.path(), &file);
    let pid = run.ready_pid("ledgers", Duration::from_secs(60));
    let quarter = reference.len() / 4;
    wait_for("a quarter of the events", Duration::from_secs(60), || {
        lines_so_far(&out_file) >= quarter
    });
    // The components registered with the in-process control plane, and status shows it.
    wait_for(
        "the processor's registration in status",
        Duration::from_secs(30),
        || {
            run.component("ttp")
                .is_some_and(|c| c["registration"]["health"].is_string())
        },
    );
    kill9(pid);
    wait_for("the source's restart", Duration::from_secs(30), || {
        run.component("ledgers").is_some_and(|c| {
            c["restarts"].as_u64() >= Some(1) && c["pid"].as_i64() != Some(pid as i64)
        })
    });
    let written_at_kill = lines_so_far(&out_file);
    let out = run.finish(Duration::from_secs(120));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(written_at_kill < reference.len(), "killed before the end");
    let got = parse_jsonl(&std::fs::read_to_string(&out_file).unwrap());
    assert_eq!(got.len(), reference.len(), "no gap, no duplicate");
    assert!(got == reference, "the same events in the same order");
}

/// A throwaway PostgreSQL cluster (fsync off), stopped on drop.
type Pg = PgCluster;

fn count(pg: &Pg) -> usize {
    pg.query("SELECT count(*) FROM ttp_events")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn postgres_sink_env(pg: &Pg) -> String {
    format!(
        "        SINK: postgres\n        DATABASE_URL: \"{}\"\n        SINK_ID: e2e\n        FLUSH_EVENTS: \"200\"\n        FLUSH_INTERVAL: 20ms",
        pg.url()
    )
}

fn run_to_end(dir: &Path, file: &Path) {
    let out = Running::start(dir, file).finish(Duration::from_secs(180));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn postgres_sink_under_flowctl_run_stores_the_golden_count_of_the_datalake_range() {
    let Some(root) = testdata() else { return };
    let Some(pg) = Pg::start(Durability::Off) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(
        dir.path(),
        "pg-datalake",
        &format!(
            "apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: pg-datalake
spec:
  sources:
    - id: datalake
      command: stellar-live-source
      env:
        BACKEND: datalake
        DATALAKE_URL: \"{lake}\"
        NETWORK_PASSPHRASE: \"{TESTNET}\"
  processors:
    - id: ttp
      command: ttp-processor
      inputs: [datalake]
      env:
        NETWORK_PASSPHRASE: \"{TESTNET}\"
  sinks:
    - id: pg
      command: ttp-sink
      inputs: [ttp]
      env:
        SINK: postgres
        DATABASE_URL: \"{url}\"
        SINK_ID: pg
        START_LEDGER: \"997\"
        END_LEDGER: \"999\"
",
            lake = root.join("testnet/datastore").display(),
            url = pg.url()
        ),
    );
    run_to_end(dir.path(), &file);
    assert_eq!(count(&pg), golden_997_999(&root).len());
    assert_eq!(
        pg.query("SELECT last_ledger FROM ttp_sink_checkpoints WHERE sink_id = 'pg@997-999'")
            .as_deref(),
        Some("999"),
        "checkpoint at the last ledger"
    );
}

#[test]
fn postgres_sink_killed_mid_stream_is_restarted_and_stores_every_event_exactly_once() {
    bin_dir();
    let Some(pg) = Pg::start(Durability::Off) else {
        return;
    };
    let reference = reference_events(START, END);
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(
        dir.path(),
        "kill-sink",
        &synthetic_pipeline("kill-sink", START, END, RATE, &postgres_sink_env(&pg)),
    );
    let run = Running::start(dir.path(), &file);
    let pid = run.ready_pid("sink", Duration::from_secs(60));
    let quarter = reference.len() / 4;
    wait_for(
        "a quarter of the events in the table",
        Duration::from_secs(60),
        || count(&pg) >= quarter,
    );
    kill9(pid);
    let stored_at_kill = count(&pg);
    wait_for("the sink's restart", Duration::from_secs(30), || {
        run.component("sink").is_some_and(|c| {
            c["restarts"].as_u64() >= Some(1) && c["pid"].as_i64() != Some(pid as i64)
        })
    });
    let out = run.finish(Duration::from_secs(180));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stored_at_kill < reference.len(), "killed before the end");
    // The table's key is the natural key, so a duplicate would have been refused or merged:
    // the count alone says no event is missing, and the per-ledger counts say where.
    assert_eq!(count(&pg), reference.len(), "every event once");
    let mut want = std::collections::BTreeMap::<u64, usize>::new();
    for e in &reference {
        *want.entry(ledger_of(e)).or_default() += 1;
    }
    let per_ledger = pg
        .query("SELECT string_agg(ledger_sequence || ':' || n, ',' ORDER BY ledger_sequence) FROM (SELECT ledger_sequence, count(*) n FROM ttp_events GROUP BY 1) t")
        .unwrap();
    let got: std::collections::BTreeMap<u64, usize> = per_ledger
        .split(',')
        .map(|p| {
            let (l, n) = p.split_once(':').unwrap();
            (l.parse().unwrap(), n.parse().unwrap())
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        pg.query(&format!(
            "SELECT last_ledger FROM ttp_sink_checkpoints WHERE sink_id = 'e2e@{START}-{END}'"
        ))
        .as_deref(),
        Some(END.to_string().as_str())
    );
}
