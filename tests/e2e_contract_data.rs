//! Soroban contract data under `flowctl run`: a data lake of the busy load-test ledgers →
//! `contract-data-processor` → `contract-data-sink` into a real PostgreSQL, with the sink
//! killed by SIGKILL inside a batch transaction; every change is in the table once.

mod e2e_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e_common::*;
use flowctl_testkit::postgres::{Durability, PgCluster};

const LOAD: &str = "load test network";

/// The load-test ledgers 93, 94 (protocol 23) and 95 (protocol 22) as a data lake.
fn soroban_lake(root: &Path, lake: &Path) {
    let mut ledgers = Vec::new();
    for v in ["v23", "v22"] {
        let file = root.join(format!("loadtest/load-test-ledgers-{v}.xdr.zstd"));
        for l in stellar_ledgers::open(&file, Default::default()).unwrap() {
            let l = l.unwrap();
            if (93..=95).contains(&stellar_ledgers::ledger_sequence(&l)) {
                ledgers.push(l);
            }
        }
    }
    ledgers.sort_by_key(stellar_ledgers::ledger_sequence);
    assert_eq!(ledgers.len(), 3);
    flowctl_testkit::lake::write_lake(lake, LOAD, &ledgers);
}

fn contract_data_pipeline(dir: &Path, lake: &Path, pg: &PgCluster) -> std::path::PathBuf {
    let text = format!(
        "apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: contract-data-kill
spec:
  range: {{from_ledger: 93, to_ledger: 95}}
  sources:
    - id: ledgers
      command: stellar-live-source
      env:
        BACKEND: datalake
        DATALAKE_URL: \"{}\"
        NETWORK_PASSPHRASE: \"{LOAD}\"
  processors:
    - id: contract-data
      command: contract-data-processor
      inputs: [ledgers]
      env:
        NETWORK_PASSPHRASE: \"{LOAD}\"
        BATCH_SIZE: \"100\"
        MAX_BACKOFF: 500ms
  sinks:
    - id: sink
      command: contract-data-sink
      inputs: [contract-data]
      env:
        DATABASE_URL: \"{}\"
        SINK_ID: cd
        MAX_BACKOFF: 500ms
      restart: {{initial_delay: 100ms}}
",
        lake.display(),
        pg.url()
    );
    pipeline(dir, "contract-data-kill", &text)
}

#[test]
fn a_sink_killed_inside_a_batch_transaction_leaves_every_contract_data_change_once() {
    let Some(root) = testdata() else { return };
    let Some(pg) = PgCluster::start(Durability::Off) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    soroban_lake(&root, &lake);
    let file = contract_data_pipeline(dir.path(), &lake, &pg);
    let q = |sql: &str| pg.query(sql).unwrap_or_default();

    // A first run of ledger 93 alone (no changes) makes the schema.
    let o = Running::spawn(dir.path(), {
        let mut c = run_cmd(dir.path(), &file);
        c.args(["--from-ledger", "93", "--to-ledger", "93"]);
        c
    })
    .finish(Duration::from_secs(60));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(q("SELECT count(*) FROM contract_data.entries"), "0");

    // Ledger 95's rows wait inside their transaction while `hold` has a row: the sink is
    // killed there, after ledger 94's batch committed.
    q("CREATE TABLE hold (x int);
       INSERT INTO hold VALUES (1);
       CREATE FUNCTION hold_95() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         WHILE EXISTS (SELECT 1 FROM public.hold) LOOP PERFORM pg_sleep(0.02); END LOOP;
         RETURN NEW;
       END $$;
       CREATE TRIGGER hold_95 BEFORE INSERT ON contract_data.entries
         FOR EACH ROW WHEN (NEW.ledger_sequence = 95) EXECUTE FUNCTION hold_95();
       SELECT 1");
    let run = Running::start(dir.path(), &file);
    let pid = run.ready_pid("sink", Duration::from_secs(30));
    wait_for(
        "ledger 94 committed, 95 held",
        Duration::from_secs(60),
        || {
            q("SELECT last_ledger FROM contract_data.sink_checkpoints WHERE sink_id = 'cd@93-95'")
            == "94"
            && q("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO contract_data.entries%' AND state = 'active'")
                == "1"
        },
    );
    assert_eq!(q("SELECT count(*) FROM contract_data.entries"), "500");
    kill9(pid);
    // The dead sink's transaction is rolled back, and the hold lifted.
    q("SELECT pg_terminate_backend(pid) FROM pg_stat_activity
       WHERE query LIKE 'INSERT INTO contract_data.entries%' AND pid <> pg_backend_pid()");
    q("DELETE FROM hold");
    wait_for("flowctl restarts the sink", Duration::from_secs(30), || {
        run.component("sink").is_some_and(|c| {
            c["restarts"].as_u64() >= Some(1) && c["pid"].as_i64() != Some(i64::from(pid))
        })
    });
    let o = run.finish(Duration::from_secs(90));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Exactly the changes extract finds, each once.
    let extract = Command::new(bin_dir().join("contract-data-processor"))
        .args([
            "extract",
            "--network-passphrase",
            LOAD,
            "--start",
            "93",
            "--end",
            "95",
        ])
        .arg(&lake)
        .output()
        .unwrap();
    assert!(
        extract.status.success(),
        "{}",
        String::from_utf8_lossy(&extract.stderr)
    );
    let want: Vec<String> = parse_jsonl(&String::from_utf8_lossy(&extract.stdout))
        .iter()
        .map(|c| {
            format!(
                "{}:{}:{}:{}",
                c["ledger_key_hash"].as_str().unwrap(),
                c["ledger_sequence"],
                c["change_index"],
                c["balance"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(want.len(), 1000);
    let rows = q(
        "SELECT string_agg(ledger_key_hash || ':' || ledger_sequence || ':' || \
                  change_index || ':' || balance::text, E'\\n' \
                  ORDER BY ledger_sequence, change_index) FROM contract_data.entries",
    );
    assert_eq!(rows, want.join("\n"), "every change once, after the kill");
    // The restarted sink claimed the row (a new epoch) and counted only what it committed.
    assert_eq!(
        q("SELECT last_ledger || ' ' || events || ' ' || (epoch >= 2) FROM contract_data.sink_checkpoints WHERE sink_id = 'cd@93-95'"),
        "95 1000 true"
    );
}
