//! `flowctl backfill plan`: the shards of a range, as shell commands or an `sbatch --array`
//! script, run by the shell: together they write every event of the range exactly once.

mod e2e_common;

use std::path::Path;
use std::process::Command;

use e2e_common::*;

/// A synthetic range pipeline writing one JSONL file per shard; its network begins at ledger
/// 2 whatever a shard's first ledger, as the reference's does.
fn sharded_pipeline(dir: &Path) -> std::path::PathBuf {
    let file = ranged_pipeline(dir, "history", 2, 200, 0.0);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("history.jsonl", "history-${shard.id}.jsonl")
        .replace(
            "        SYNTHETIC_RATE:",
            "        SYNTHETIC_GENESIS: \"2\"\n        SYNTHETIC_RATE:",
        );
    assert!(text.contains("SYNTHETIC_GENESIS") && text.contains("${shard.id}"));
    std::fs::write(&file, text).unwrap();
    file
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
    let sink_env = format!(
        "        SINK: postgres\n        DATABASE_URL: \"{}\"\n        SINK_ID: history",
        pg.url()
    );
    let text: String = synthetic_pipeline("history", 2, 127, 0.0, &sink_env)
        .lines()
        .filter(|l| !l.contains("START_LEDGER") && !l.contains("END_LEDGER"))
        .map(|l| match l {
            "spec:" => "spec:\n  range: {from_ledger: 2, to_ledger: 127}\n".to_string(),
            _ => format!("{l}\n"),
        })
        .collect();
    let file = pipeline(dir.path(), "history", &text);
    let status = || {
        let out = Command::new(flowctl())
            .args(["backfill", "status", "-f"])
            .arg(&file)
            .args([
                "--from-ledger",
                "2",
                "--to-ledger",
                "127",
                "--shard-size",
                "64",
            ])
            .args(["-o", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["state"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // Before any shard ran the sink's tables do not even exist.
    assert_eq!(status(), ["missing", "missing"]);

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
    assert_eq!(status(), ["done", "missing"]);
}
