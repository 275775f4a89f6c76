//! `flowctl backfill plan`: the shards of a range, as shell commands or an `sbatch --array`
//! script, run by the shell: together they write every event of the range exactly once.

mod e2e_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e_common::*;

/// A synthetic range pipeline writing one JSONL file per shard (a synthetic ledger is the same
/// whatever a shard's first ledger).
fn sharded_pipeline(dir: &Path) -> std::path::PathBuf {
    let file = ranged_pipeline(dir, "history", 2, 200, 0.0);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("history.jsonl", "history-${shard.id}.jsonl");
    assert!(text.contains("${shard.id}"));
    std::fs::write(&file, text).unwrap();
    file
}

/// A synthetic pipeline `history` over `spec.range` 2..=`to`, at `rate` ledgers/s (0: as fast
/// as it goes), into the PostgreSQL sink `history` of `pg`; shards take their range from the
/// command line.
fn postgres_range_pipeline(
    dir: &Path,
    pg: &flowctl_testkit::postgres::PgCluster,
    to: u32,
    rate: f64,
) -> std::path::PathBuf {
    let sink_env = format!(
        "        SINK: postgres\n        DATABASE_URL: \"{}\"\n        SINK_ID: history",
        pg.url()
    );
    let text: String = synthetic_pipeline("history", 2, to, rate, &sink_env)
        .lines()
        .filter(|l| !l.contains("START_LEDGER") && !l.contains("END_LEDGER"))
        .map(|l| match l {
            "spec:" => format!("spec:\n  range: {{from_ledger: 2, to_ledger: {to}}}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    pipeline(dir, "history", &text)
}

/// The shards `flowctl backfill status -o json` lists, its exit checked.
fn shard_rows(mut status: Command) -> Vec<serde_json::Value> {
    let out = status.args(["-o", "json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array().expect("a list of shards").clone()
}

fn plan(dir: &Path, file: &Path, engine: &str, out: &Path) {
    let plan = Command::new(flowctl())
        .args(["backfill", "plan", "-f"])
        .arg(file)
        .args([
            "--from-ledger",
            "2",
            "--to-ledger",
            "200",
            "--shard-size",
            "64",
        ])
        .args(["--engine", engine, "-o"])
        .arg(out)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
}

/// A shell whose `flowctl` and bundled programs are the ones built here.
fn shell(dir: &Path) -> Command {
    let mut sh = Command::new("bash");
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    sh.env("PATH", path).env("TMPDIR", dir);
    sh
}

fn shard_events(dir: &Path, shard: usize) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(format!("history-{shard}.jsonl"))).unwrap();
    parse_jsonl(&text)
}

#[test]
fn the_shard_commands_of_a_backfill_write_every_event_of_the_range_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = sharded_pipeline(dir.path());
    let commands = dir.path().join("shards.sh");
    plan(dir.path(), &file, "commands", &commands);
    let text = std::fs::read_to_string(&commands).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    for (line, range) in lines.iter().zip(["2 --to-ledger 63", "64 --to-ledger 127"]) {
        assert!(line.contains(&format!("--from-ledger {range}")), "{line}");
    }
    let run = shell(dir.path()).arg(&commands).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let all: Vec<_> = (0..4).flat_map(|s| shard_events(dir.path(), s)).collect();
    assert_eq!(all, reference_events(2, 200));
}

#[test]
fn the_slurm_array_script_runs_the_shard_of_its_task_and_refuses_to_run_outside_slurm() {
    let dir = tempfile::tempdir().unwrap();
    let file = sharded_pipeline(dir.path());
    let script = dir.path().join("backfill.sbatch");
    plan(dir.path(), &file, "slurm", &script);
    let text = std::fs::read_to_string(&script).unwrap();
    for line in ["#SBATCH --array=0-3", "#SBATCH --requeue", "\"128 191\""] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    // What Slurm does for task 2 of the array.
    let task = shell(dir.path())
        .arg(&script)
        .env("SLURM_ARRAY_TASK_ID", "2")
        .env("SLURM_ARRAY_JOB_ID", "77")
        .output()
        .unwrap();
    assert!(
        task.status.success(),
        "{}",
        String::from_utf8_lossy(&task.stderr)
    );
    let reference: Vec<_> = reference_events(2, 200)
        .into_iter()
        .filter(|e| (128..=191).contains(&ledger_of(e)))
        .collect();
    assert_eq!(shard_events(dir.path(), 2), reference);

    let outside = shell(dir.path()).arg(&script).output().unwrap();
    assert!(!outside.status.success());
    let stderr = String::from_utf8_lossy(&outside.stderr);
    assert!(stderr.contains("run this script with sbatch"), "{stderr}");
}

#[test]
fn backfill_status_reads_each_shards_state_from_its_postgresql_checkpoint() {
    use flowctl_testkit::postgres::{Durability, PgCluster};
    let Some(pg) = PgCluster::start(Durability::Off) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = postgres_range_pipeline(dir.path(), &pg, 127, 0.0);
    let status = || {
        let mut cmd = Command::new(flowctl());
        cmd.args(["backfill", "status", "-f"]).arg(&file).args([
            "--from-ledger",
            "2",
            "--to-ledger",
            "127",
            "--shard-size",
            "64",
        ]);
        shard_rows(cmd)
            .iter()
            .map(|s| {
                (
                    s["state"].as_str().unwrap().to_string(),
                    s["epoch"].as_i64(),
                )
            })
            .collect::<Vec<_>>()
    };
    let states = || status().into_iter().map(|(s, _)| s).collect::<Vec<_>>();
    // Before any shard ran the sink's tables do not even exist.
    assert_eq!(states(), ["missing", "missing"]);

    let shard = run_cmd(dir.path(), &file)
        .args(["--from-ledger", "2", "--to-ledger", "63", "--shard-id", "0"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(
        shard.status.success(),
        "{}",
        String::from_utf8_lossy(&shard.stderr)
    );
    assert_eq!(
        status(),
        [("done".to_string(), Some(1)), ("missing".to_string(), None)],
        "shard 0 started once"
    );
}

#[test]
fn a_second_run_of_a_shard_fences_the_first_which_exits_65_without_a_restart() {
    use flowctl_testkit::postgres::{Durability, PgCluster};
    use std::io::Read;
    let Some(pg) = PgCluster::start(Durability::Off) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // 20 ledgers/s: the first copy is still at work when the second starts.
    let file = postgres_range_pipeline(dir.path(), &pg, 191, 20.0);
    let shard_1 = || {
        let s = &shard_rows(backfill_cmd(&file, "status"))[1];
        (
            s["state"].as_str().unwrap().to_string(),
            s["checkpoint"].as_i64(),
            s["epoch"].as_i64(),
        )
    };
    // Two hosts' copies of shard 1, each with its own runtime and state dir.
    let copy = |host: &str| {
        let mut cmd = Command::new(flowctl());
        cmd.arg("run")
            .arg(&file)
            .args([
                "--from-ledger",
                "64",
                "--to-ledger",
                "127",
                "--shard-id",
                "1",
            ])
            .arg("--runtime-dir")
            .arg(dir.path().join(format!("run-{host}")))
            .arg("--state-dir")
            .arg(dir.path().join(format!("state-{host}")))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let mut lost = copy("lost").spawn().unwrap();
    let mut lost_stderr = lost.stderr.take().unwrap();
    let lost_log = std::thread::spawn(move || {
        let mut text = String::new();
        lost_stderr.read_to_string(&mut text).unwrap();
        text
    });
    wait_for(
        "the first copy to commit a checkpoint",
        Duration::from_secs(60),
        || shard_1().1.is_some(),
    );
    let newer = copy("requeued").output().unwrap();
    assert!(
        newer.status.success(),
        "{}",
        String::from_utf8_lossy(&newer.stderr)
    );
    let status = lost.wait().unwrap();
    let log = lost_log.join().unwrap();
    assert_eq!(status.code(), Some(65), "{log}");
    assert!(
        log.contains("claimed by a newer copy (epoch 2 > mine 1)"),
        "{log}"
    );
    assert!(log.contains("was fenced"), "{log}");
    assert_eq!(shard_1(), ("done".to_string(), Some(127), Some(2)));
    let reference = reference_events(2, 191)
        .iter()
        .filter(|e| (64..=127).contains(&ledger_of(e)))
        .count();
    let rows = pg
        .query(
            "SELECT count(*), count(DISTINCT (ledger_sequence, transaction_index, \
             operation_index, event_index)) FROM ttp_events",
        )
        .unwrap();
    assert_eq!(rows.trim(), format!("{reference}|{reference}"));
}

/// `backfill` with the range's status read from PostgreSQL: `ARGS` after the sub-command,
/// `-f FILE` and the range.
fn backfill_cmd(file: &Path, verb: &str) -> Command {
    let mut cmd = Command::new(flowctl());
    cmd.args(["backfill", verb, "-f"]).arg(file).args([
        "--from-ledger",
        "2",
        "--to-ledger",
        "191",
        "--shard-size",
        "64",
    ]);
    cmd
}

#[test]
fn reconcile_writes_the_work_of_the_missing_and_stalled_shards_only_and_then_nothing() {
    use flowctl_testkit::postgres::{Durability, PgCluster};
    let Some(pg) = PgCluster::start(Durability::Off) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // 40 ledgers/s, so a shard can be killed halfway.
    let file = postgres_range_pipeline(dir.path(), &pg, 191, 40.0);
    let state = dir.path().join("state");
    let states = || {
        shard_rows(backfill_cmd(&file, "status"))
            .iter()
            .map(|s| {
                (
                    s["state"].as_str().unwrap().to_string(),
                    s["checkpoint"].as_i64(),
                )
            })
            .collect::<Vec<_>>()
    };

    let shard = |id: &str, from: &str, to: &str| {
        let mut cmd = run_cmd(dir.path(), &file);
        cmd.args(["--from-ledger", from, "--to-ledger", to, "--shard-id", id])
            .arg("--state-dir")
            .arg(&state);
        cmd
    };
    let done = shard("0", "2", "63").output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    // Shard 1 dies with its host halfway: its checkpoint row stays behind its end.
    let mut lost = shard("1", "64", "127")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        "shard 1 to commit a checkpoint",
        Duration::from_secs(60),
        || states()[1].1.is_some(),
    );
    kill9(lost.id() as i32);
    lost.wait().unwrap();
    let after_kill = states();
    let checkpoint = after_kill[1].1.unwrap();
    assert!((64..127).contains(&checkpoint), "{after_kill:?}");

    // Within the default minute a silent shard still counts as running: left alone.
    let script = dir.path().join("again.sbatch");
    let out = backfill_cmd(&file, "reconcile")
        .arg("-o")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("#SBATCH --array=2\n"), "{text}");

    let commands = dir.path().join("again.sh");
    let out = backfill_cmd(&file, "reconcile")
        .args(["--stalled-after", "0s", "--engine", "commands", "-o"])
        .arg(&commands)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 of 3 shards to run again"), "{stderr}");
    let text = std::fs::read_to_string(&commands).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("--from-ledger 64 --to-ledger 127 --shard-id 1"),
        "{text}"
    );
    assert!(
        lines[1].contains("--from-ledger 128 --to-ledger 191 --shard-id 2"),
        "{text}"
    );

    let run = shell(dir.path()).arg(&commands).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let log = String::from_utf8_lossy(&run.stderr);
    let resumed = format!("checkpoint={checkpoint} next={}", checkpoint + 1);
    assert!(
        log.contains(&resumed),
        "shard 1 did not resume at {resumed}:\n{log}"
    );
    assert!(states().iter().all(|(s, _)| s == "done"), "{:?}", states());
    // The killed shard picked up after its checkpoint: every event once, none missing.
    let rows = pg
        .query(
            "SELECT count(*), count(DISTINCT (ledger_sequence, transaction_index, \
             operation_index, event_index)), min(ledger_sequence), max(ledger_sequence) \
             FROM ttp_events",
        )
        .unwrap();
    let reference = reference_events(2, 191);
    let (first, last) = (
        ledger_of(&reference[0]),
        ledger_of(reference.last().unwrap()),
    );
    assert_eq!(
        rows.trim(),
        format!("{n}|{n}|{first}|{last}", n = reference.len()),
        "rows, distinct keys, first and last ledger"
    );

    let again = dir.path().join("nothing.sh");
    let out = backfill_cmd(&file, "reconcile")
        .args(["--stalled-after", "0s", "-o"])
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to run again"));
    assert!(
        !again.exists(),
        "no work is written when every shard is done"
    );
}

#[test]
fn shards_of_a_local_data_lake_end_on_its_object_boundaries_and_a_missing_manifest_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    std::fs::create_dir(&lake).unwrap();
    let file = ranged_pipeline(dir.path(), "lake", 2, 5000, 0.0);
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "        BACKEND: synthetic\n",
        &format!(
            "        BACKEND: datalake\n        DATALAKE_URL: \"{}\"\n",
            lake.display()
        ),
    );
    std::fs::write(&file, text).unwrap();
    let cut = || {
        Command::new(flowctl())
            .args(["backfill", "plan", "--engine", "commands", "-f"])
            .arg(&file)
            .args([
                "--from-ledger",
                "2",
                "--to-ledger",
                "5000",
                "--shard-size",
                "1000",
            ])
            .output()
            .unwrap()
    };
    let out = cut();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(".config.json") && stderr.contains("component `ledgers`"),
        "{stderr}"
    );

    // Objects of 100 ledgers: no shard may split one, nor a 64-ledger span.
    std::fs::write(
        lake.join(".config.json"),
        r#"{"networkPassphrase": "Test SDF Network ; September 2015",
            "ledgersPerBatch": 100, "batchesPerPartition": 64}"#,
    )
    .unwrap();
    let out = cut();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let starts: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            l.split("--from-ledger ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(starts, ["2", "1600", "3200", "4800"]);
}

// ---------- shards as chunk runs ----------

/// `flowctl chunks VERB … --state-dir DIR`, its output and exit code.
fn chunks(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(flowctl())
        .arg("chunks")
        .args(args)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The chunk runs of a backfill as `(chunk_id, status, attempt)`, in their listed order.
fn chunk_states(dir: &Path, backfill: &str) -> Vec<(String, String, i64)> {
    let (ok, out, err) = chunks(dir, &["list", "--run", backfill, "--all", "-o", "json"]);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    rows.as_array()
        .expect("a list of chunks")
        .iter()
        .map(|c| {
            (
                c["chunk_id"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["attempt"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

fn ids_with(states: &[(String, String, i64)], status: &str) -> Vec<String> {
    states
        .iter()
        .filter(|(_, s, _)| s == status)
        .map(|(id, _, _)| id.clone())
        .collect()
}

#[test]
fn shards_record_their_chunk_runs_and_verify_finds_a_lost_row_which_a_retry_writes_again() {
    use flowctl_testkit::postgres::{Durability, PgCluster};
    let Some(pg) = PgCluster::start(Durability::Off) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = postgres_range_pipeline(dir.path(), &pg, 200, 0.0);
    let commands = dir.path().join("shards.sh");
    plan(dir.path(), &file, "commands", &commands);
    let backfill = "backfill-history-2-200";
    let planned = chunk_states(dir.path(), backfill);
    let shard_ids: Vec<String> = (0..4).map(|s| format!("{backfill}/shard-{s}")).collect();
    assert_eq!(ids_with(&planned, "planned"), shard_ids, "{planned:?}");
    assert!(planned.iter().all(|(_, _, attempt)| *attempt == 0));

    let run = shell(dir.path()).arg(&commands).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let done = chunk_states(dir.path(), backfill);
    assert_eq!(ids_with(&done, "completed"), shard_ids, "{done:?}");
    assert!(done.iter().all(|(_, _, attempt)| *attempt == 1));

    let (ok, _, err) = chunks(dir.path(), &["verify", "--run", backfill]);
    assert!(ok, "{err}");
    assert_eq!(
        ids_with(&chunk_states(dir.path(), backfill), "verified"),
        shard_ids
    );

    // Rows lost from shard 1's range (64-127): verifying it again finds them missing.
    let lost = pg
        .query("WITH d AS (DELETE FROM ttp_events WHERE ledger_sequence BETWEEN 70 AND 72 RETURNING 1) SELECT count(*) FROM d")
        .expect("the delete runs");
    assert_ne!(lost, "0");
    let (ok, _, err) = chunks(dir.path(), &["verify", &shard_ids[1]]);
    assert!(!ok, "a mismatch fails the verification");
    assert!(err.contains("rows in the range"), "{err}");
    let (_, show, _) = chunks(dir.path(), &["show", &shard_ids[1], "-o", "json"]);
    let shown: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(shown["status"], "failed");
    assert_eq!(shown["failure_class"], "verification");

    // A retry marks it pending and writes the work of that shard alone; running it writes
    // the range again (attempt 2), which then verifies.
    let script = dir.path().join("again.sh");
    let (ok, _, err) = chunks(
        dir.path(),
        &[
            "retry",
            "--failed",
            "--run",
            backfill,
            "--script",
            script.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let again = std::fs::read_to_string(&script).unwrap();
    assert_eq!(again.lines().count(), 1, "{again}");
    assert!(
        again.contains("--from-ledger 64 --to-ledger 127 --shard-id 1"),
        "{again}"
    );
    let pending = chunk_states(dir.path(), backfill);
    assert_eq!(ids_with(&pending, "retry_pending"), [shard_ids[1].clone()]);
    let run = shell(dir.path()).arg(&script).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (ok, _, err) = chunks(dir.path(), &["verify", &shard_ids[1]]);
    assert!(ok, "{err}");
    let after = chunk_states(dir.path(), backfill);
    assert!(
        after.contains(&(shard_ids[1].clone(), "verified".into(), 2)),
        "{after:?}"
    );

    // backfill status shows each shard's chunk run beside its checkpoint.
    let mut status = Command::new(flowctl());
    status
        .args(["backfill", "status", "-f"])
        .arg(&file)
        .args([
            "--from-ledger",
            "2",
            "--to-ledger",
            "200",
            "--shard-size",
            "64",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let rows = shard_rows(status);
    let cells: Vec<(String, String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["state"].as_str().unwrap().to_string(),
                r["chunk_status"].as_str().unwrap().to_string(),
                r["chunk_attempt"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        cells,
        [
            ("done".into(), "verified".into(), 1),
            ("done".into(), "verified".into(), 2),
            ("done".into(), "verified".into(), 1),
            ("done".into(), "verified".into(), 1),
        ]
    );
}

/// A pipeline of one command component, over `spec.range`, whose process does `script`.
fn command_range_pipeline(dir: &Path, name: &str, script: &str) -> std::path::PathBuf {
    let text = format!(
        "apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: {name}
spec:
  range: {{from_ledger: 2, to_ledger: 127}}
  sinks:
    - id: writer
      command: /bin/sh
      args: [\"-c\", {script:?}]
      restart:
        policy: \"no\"
"
    );
    pipeline(dir, name, &text)
}

#[test]
fn a_failed_shard_records_its_failure_class_and_status_without_postgresql_reads_the_chunks() {
    let dir = tempfile::tempdir().unwrap();
    // Shard 0 exits 0 (its range written), shard 1 fails, shard 2 is killed by SIGKILL.
    let file = command_range_pipeline(
        dir.path(),
        "cmd",
        "case $START_LEDGER in 2) exit 0;; 64) exit 3;; *) kill -9 $$;; esac",
    );
    let commands = dir.path().join("shards.sh");
    let plan = Command::new(flowctl())
        .args(["backfill", "plan", "-f"])
        .arg(&file)
        .args([
            "--from-ledger",
            "2",
            "--to-ledger",
            "191",
            "--shard-size",
            "64",
        ])
        .args(["--engine", "commands", "-o"])
        .arg(&commands)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    // Each line on its own: a failing shard does not stop the others.
    for line in std::fs::read_to_string(&commands).unwrap().lines() {
        let _ = shell(dir.path()).args(["-c", line]).output().unwrap();
    }
    let backfill = "backfill-cmd-2-191";
    let show = |shard: usize| {
        let (ok, out, err) = chunks(
            dir.path(),
            &["show", &format!("{backfill}/shard-{shard}"), "-o", "json"],
        );
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    assert_eq!(show(0)["status"], "completed");
    let failed = show(1);
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["failure_class"], "retryable_infrastructure");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{failed}"
    );
    let killed = show(2);
    assert_eq!(killed["failure_class"], "oom", "{killed}");

    let mut status = Command::new(flowctl());
    status
        .args(["backfill", "status", "-f"])
        .arg(&file)
        .args([
            "--from-ledger",
            "2",
            "--to-ledger",
            "191",
            "--shard-size",
            "64",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    let states: Vec<String> = shard_rows(status)
        .iter()
        .map(|r| r["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["done", "failed", "failed"]);
}

#[test]
fn a_pipeline_in_the_go_ecosystems_form_is_cut_throttled_and_retried_as_its_range_and_retry_policy_say(
) {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts.log");
    // Every start of the writer is logged; the shard from 64 always fails.
    let script = format!(
        "echo $START_LEDGER >> {}; case $START_LEDGER in 64) exit 3;; esac",
        starts.display()
    );
    let text = format!(
        "apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: go
spec:
  range: {{start: 2, end: 191, chunkSize: 64, maxWorkers: 2}}
  retryPolicy: {{maxAttempts: 2, initialBackoff: 100ms, maxBackoff: 200ms}}
  sinks:
    - id: writer
      command: /bin/sh
      args: [\"-c\", {script:?}]
"
    );
    let file = pipeline(dir.path(), "go", &text);
    let backfill = |verb: &str, extra: &[&str]| {
        let out = Command::new(flowctl())
            .args(["backfill", verb, "-f"])
            .arg(&file)
            .args(extra)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    // No range or size on the command line: the file's.
    let sbatch = dir.path().join("go.sbatch");
    let said = backfill("plan", &["-o", sbatch.to_str().unwrap()]);
    for notice in [
        "`spec.range.start` (the Go ecosystem's name) is read as `spec.range.from_ledger`",
        "`spec.range.maxWorkers` (the Go ecosystem's name) is read as `spec.range.max_workers`",
        "`spec.retryPolicy` (the Go ecosystem's name) is read as `spec.retry_policy`",
    ] {
        assert!(said.contains(notice), "{notice} missing:\n{said}");
    }
    assert!(said.contains("3 shard(s) of `go`, ledgers 2-191"), "{said}");
    let script_text = std::fs::read_to_string(&sbatch).unwrap();
    assert!(
        script_text.contains("#SBATCH --array=0-2%2\n"),
        "{script_text}"
    );
    backfill(
        "plan",
        &["--max-workers", "3", "-o", sbatch.to_str().unwrap()],
    );
    let script_text = std::fs::read_to_string(&sbatch).unwrap();
    assert!(
        script_text.contains("#SBATCH --array=0-2%3\n"),
        "the flag wins over the file:\n{script_text}"
    );

    let commands = dir.path().join("shards.sh");
    backfill(
        "plan",
        &["--engine", "commands", "-o", commands.to_str().unwrap()],
    );
    let lines = std::fs::read_to_string(&commands).unwrap();
    let throttle = lines.lines().next().unwrap();
    assert!(
        throttle.starts_with("# at most 2 at once: xargs -P 2"),
        "{lines}"
    );
    // Run as the comment says: two at once.
    let xargs = shell(dir.path())
        .args(["-c", "xargs -P 2 -d '\\n' -n 1 sh -c < \"$0\""])
        .arg(&commands)
        .output()
        .unwrap();
    assert!(!xargs.status.success(), "the shard from 64 fails");
    let count = |ledger: &str| {
        std::fs::read_to_string(&starts)
            .unwrap()
            .lines()
            .filter(|l| *l == ledger)
            .count()
    };
    assert_eq!(
        (count("2"), count("64"), count("128")),
        (1, 2, 1),
        "maxAttempts: 2 starts the failing writer twice in its run"
    );
    let states = || -> Vec<String> {
        let mut status = Command::new(flowctl());
        status
            .args(["backfill", "status", "-f"])
            .arg(&file)
            .arg("--state-dir")
            .arg(dir.path().join("state"));
        shard_rows(status)
            .iter()
            .map(|r| r["state"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(states(), ["done", "failed", "done"]);

    // The file's maxAttempts is also how many attempts of a chunk `chunks retry` allows.
    let again = dir.path().join("again.sh");
    let (ok, _, err) = chunks(
        dir.path(),
        &["retry", "--failed", "--script", again.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    let _ = shell(dir.path()).arg(&again).output().unwrap();
    assert_eq!(count("64"), 4, "the second attempt starts it twice too");
    let (ok, _, err) = chunks(dir.path(), &["retry", "--failed"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("backfill-go-2-191/shard-1: not run again: it has had 2 attempt(s), the most allowed (2)"),
        "{err}"
    );
    let (ok, _, err) = chunks(dir.path(), &["retry", "--failed", "--max-attempts", "3"]);
    assert!(ok, "the flag wins over the file: {err}");
}
