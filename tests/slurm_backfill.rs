//! `flowctl backfill plan --engine slurm` on a real Slurm cluster of three simulated hosts
//! (network namespaces, a slurmd each, one slurmctld and munged), writing into one
//! PostgreSQL on the bridge: three hosts run the range at least 2.5 times as fast as one, and
//! a host lost mid-shard costs nothing but time: its task is requeued, resumes after its
//! checkpoint, and every event is written once.

mod e2e_common;
mod slurm_cluster;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e_common::*;
use flowctl_testkit::postgres::{Durability, PgCluster};
use slurm_cluster::Cluster;

/// Each worker's pace (the synthetic source's `SYNTHETIC_RATE`): slow enough that three
/// workers on a 2-core machine are bound by it, not by the CPU.
const RATE: f64 = 40.0;
const FROM: u32 = 2;
const TO: u32 = 1535;
/// Six shards of 256 ledgers (6.4 s each): two rounds on three hosts, six on one.
const SHARD_SIZE: u32 = 256;
const SHARDS: usize = 6;

/// Ledgers `from..=to` of shard `i`, as `backfill plan` cuts the range.
fn shard(i: usize) -> (u32, u32) {
    let from = (i as u32 * SHARD_SIZE).max(FROM);
    (from, ((i as u32 + 1) * SHARD_SIZE - 1).min(TO))
}

/// The backfill pipeline: synthetic ledgers at [`RATE`] → ttp-processor → ttp-sink into
/// `database`, reached on the bridge's address.
fn pipeline_file(dir: &Path, url: &str) -> PathBuf {
    let sink_env = format!(
        "        SINK: postgres\n        DATABASE_URL: \"{url}\"\n        SINK_ID: history"
    );
    let text: String = synthetic_pipeline("history", FROM, TO, RATE, &sink_env)
        .lines()
        .filter(|l| !l.contains("START_LEDGER") && !l.contains("END_LEDGER"))
        .map(|l| match l {
            "spec:" => format!("spec:\n  range: {{from_ledger: {FROM}, to_ledger: {TO}}}\n"),
            _ => format!("{l}\n"),
        })
        .collect();
    pipeline(dir, "history", &text)
}

/// A `flowctl backfill VERB -f FILE` over the test's range and cut.
fn backfill(verb: &str, file: &Path) -> Command {
    let mut cmd = Command::new(flowctl());
    cmd.args(["backfill", verb, "-f"]).arg(file).args([
        "--from-ledger",
        &FROM.to_string(),
        "--to-ledger",
        &TO.to_string(),
        "--shard-size",
        &SHARD_SIZE.to_string(),
    ]);
    cmd
}

fn ok(mut cmd: Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One phase's own database, pipeline file and `sbatch` script.
struct Phase {
    dir: PathBuf,
    database: String,
    file: PathBuf,
    script: PathBuf,
}

impl Phase {
    fn new(root: &Path, pg: &PgCluster, gateway: &str, name: &str) -> Phase {
        let dir = root.join(name);
        std::fs::create_dir(&dir).unwrap();
        pg.query(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE");
        let file = pipeline_file(&dir, &pg.url_on(gateway, name));
        let script = dir.join("backfill.sbatch");
        let mut plan = backfill("plan", &file);
        plan.args(["--engine", "slurm", "-o"])
            .arg(&script)
            .arg("--state-dir")
            .arg(dir.join("state"));
        ok(plan);
        let text = std::fs::read_to_string(&script).unwrap();
        assert!(
            text.contains(&format!("#SBATCH --array=0-{}\n", SHARDS - 1))
                && text.contains("#SBATCH --requeue\n"),
            "{text}"
        );
        Phase {
            dir,
            database: name.to_string(),
            file,
            script,
        }
    }

    /// The script's output of task `index` of `job` (its last start's, after a requeue).
    fn task_log(&self, job: &str, index: usize) -> String {
        std::fs::read_to_string(
            self.dir
                .join(format!("flowctl-backfill-history-{job}_{index}.out")),
        )
        .unwrap_or_default()
    }

    fn checkpoint(&self, pg: &PgCluster, index: usize) -> Option<i64> {
        let (from, to) = shard(index);
        pg.query_in(
            &self.database,
            &format!(
                "SELECT last_ledger FROM ttp_sink_checkpoints WHERE sink_id = 'history@{from}-{to}'"
            ),
        )?
        .parse()
        .ok()
    }

    fn events_per_ledger(&self, pg: &PgCluster) -> BTreeMap<u64, u64> {
        let rows = pg
            .query_in(
                &self.database,
                "SELECT ledger_sequence, count(*) FROM ttp_events GROUP BY 1 ORDER BY 1",
            )
            .expect("ttp_events");
        rows.lines()
            .map(|l| {
                let (a, b) = l.split_once('|').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect()
    }

    /// Each shard's state and epoch (how many times its sink started), by `flowctl backfill
    /// status`.
    fn states(&self) -> Vec<(String, i64)> {
        let mut status = backfill("status", &self.file);
        status.args(["-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&ok(status).stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["state"].as_str().unwrap().to_string(),
                    s["epoch"].as_i64().unwrap_or(0),
                )
            })
            .collect()
    }
}

fn per_ledger(events: &[serde_json::Value]) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for e in events {
        *m.entry(ledger_of(e)).or_default() += 1;
    }
    m
}

/// A `psql` session kept open, fed one line at a time.
struct Session(std::process::Child);

impl Session {
    fn open(url: &str) -> Session {
        let psql = flowctl_testkit::postgres::server_bin()
            .unwrap()
            .join("psql");
        let child = Command::new(psql)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Session(child)
    }

    fn send(&self, sql: &str) {
        use std::io::Write;
        let mut stdin = self.0.stdin.as_ref().unwrap();
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// `PATH` for the tasks: the script runs the `flowctl` it finds there, built here.
fn task_path() -> String {
    format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Submits the phase's script and waits for every task to complete: the seconds it took and
/// where each task ran.
fn run_all(cluster: &Cluster, phase: &Phase, args: &[&str]) -> (f64, Vec<slurm_cluster::Ended>) {
    let start = Instant::now();
    let job = cluster.submit(&phase.script, args, &phase.dir, &[("PATH", &task_path())]);
    let ended = cluster.wait_ended(&job, Duration::from_secs(90));
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(ended.len(), SHARDS, "{ended:?}");
    for e in &ended {
        assert!(
            e.state == "COMPLETED" && e.exit_code == "0:0",
            "task {e:?}:\n{}",
            phase.task_log(&job, e.index)
        );
    }
    (secs, ended)
}

#[test]
fn three_slurm_hosts_backfill_2_5_times_as_fast_as_one_and_a_lost_hosts_shard_resumes_from_its_checkpoint(
) {
    bin_dir();
    let reference = per_ledger(&reference_events(FROM, TO));
    assert_eq!(
        reference.len() as u32,
        TO - FROM + 1,
        "a ledger without events"
    );
    let Some(cluster) = Cluster::start(3, 1) else {
        return;
    };
    let Some(pg) = PgCluster::start_reachable(Durability::Off, cluster.gateway(), "10.0.0.0/8")
    else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let ledgers = f64::from(TO - FROM + 1);

    // One host, then three: the same shards.
    let one = Phase::new(root.path(), &pg, cluster.gateway(), "one_host");
    let (one_secs, ended) = run_all(&cluster, &one, &["--nodelist=host1"]);
    assert!(ended.iter().all(|e| e.node == "host1"), "{ended:?}");
    assert_eq!(one.events_per_ledger(&pg), reference);

    let three = Phase::new(root.path(), &pg, cluster.gateway(), "three_hosts");
    let (three_secs, ended) = run_all(&cluster, &three, &[]);
    for h in cluster.hosts() {
        assert!(ended.iter().any(|e| e.node == h.name), "{ended:?}");
    }
    assert_eq!(three.events_per_ledger(&pg), reference);

    let (r1, r3) = (ledgers / one_secs, ledgers / three_secs);
    eprintln!(
        "slurm backfill: 1 host {r1:.0} ledgers/s, 3 hosts {r3:.0} ledgers/s ({:.2}×), \
         {SHARDS} shards of {SHARD_SIZE} ledgers at {RATE} ledgers/s a worker",
        r3 / r1
    );
    assert!(
        r3 >= 2.5 * r1,
        "3 hosts {r3:.1} ledgers/s is not 2.5× 1 host {r1:.1} ledgers/s"
    );

    // host2 is lost halfway through a shard, in the middle of a transaction of its sink: its
    // slurmd and the shard's processes die.
    let lost = Phase::new(root.path(), &pg, cluster.gateway(), "lost_host");
    let job = cluster.submit(&lost.script, &[], &lost.dir, &[("PATH", &task_path())]);
    let mut victim = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while victim.is_none() {
        assert!(
            Instant::now() < deadline,
            "no shard got halfway on host2: {:?}",
            cluster.tasks(&job)
        );
        for t in cluster.tasks(&job) {
            if t.node != "host2" || t.state != "RUNNING" {
                continue;
            }
            let (from, to) = shard(t.index);
            let quarter = i64::from((to - from) / 4);
            if lost
                .checkpoint(&pg, t.index)
                .is_some_and(|c| c >= i64::from(from) + quarter && c <= i64::from(to) - quarter)
            {
                victim = Some(t.index);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let victim = victim.unwrap();
    let (from, to) = shard(victim);
    // Every sink's next batch waits at its insert, its transaction open, until host2's does.
    let hold = Session::open(&pg.url_on("127.0.0.1", &lost.database));
    hold.send("BEGIN; LOCK TABLE ttp_events IN SHARE MODE;");
    let host2 = &cluster.hosts()[1].addr;
    wait_for(
        "host2's sink to wait in an open transaction",
        Duration::from_secs(30),
        || {
            pg.query_in(
                &lost.database,
                &format!(
                    "SELECT count(*) > 0 FROM pg_stat_activity WHERE client_addr = '{host2}' \
                     AND xact_start IS NOT NULL AND wait_event_type = 'Lock'"
                ),
            )
            .is_some_and(|waits| waits == "t")
        },
    );
    let at_kill = lost.checkpoint(&pg, victim).unwrap();
    cluster.lose("host2");
    cluster.set_down("host2", "lost");
    hold.send("ROLLBACK;");
    drop(hold);
    // The dead sink's transaction never committed: its checkpoint stays where it was.
    std::thread::sleep(Duration::from_secs(1));
    let checkpoint = lost.checkpoint(&pg, victim).unwrap();
    assert!(
        checkpoint == at_kill && checkpoint > i64::from(from) && checkpoint < i64::from(to),
        "shard {victim} ({from}-{to}): checkpoint {checkpoint} after the kill, {at_kill} at it"
    );

    let ended = cluster.wait_ended(&job, Duration::from_secs(120));
    assert_eq!(ended.len(), SHARDS, "{ended:?}");
    let again = ended.iter().find(|e| e.index == victim).unwrap();
    assert!(
        again.restarts == 1 && again.node != "host2",
        "shard {victim} was not requeued onto another host: {again:?}"
    );
    for e in &ended {
        assert!(
            e.state == "COMPLETED" && e.exit_code == "0:0",
            "task {e:?}:\n{}",
            lost.task_log(&job, e.index)
        );
    }
    let log = lost.task_log(&job, victim);
    let resumed = format!("checkpoint={checkpoint} next={}", checkpoint + 1);
    assert!(
        log.contains(&resumed),
        "shard {victim} did not resume at {resumed}:\n{log}"
    );
    eprintln!(
        "slurm backfill: host2 lost in shard {victim} ({from}-{to}) at checkpoint {checkpoint}; \
         requeued onto {}, resumed at {}",
        again.node,
        checkpoint + 1
    );

    // Slurm ran the lost task again: reconcile finds nothing left to run.
    let mut reconcile = backfill("reconcile", &lost.file);
    let again_script = lost.dir.join("again.sbatch");
    reconcile
        .args([
            "--stalled-after",
            "0s",
            "--engine",
            "slurm",
            "--submit",
            "-o",
        ])
        .arg(&again_script)
        .env("SLURM_CONF", cluster.conf())
        .env("PATH", task_path());
    let out = ok(reconcile);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nothing to run again"), "{stderr}");
    assert!(!again_script.exists());
    // Every shard done; the lost one's sink started twice, the others once.
    let states = lost.states();
    for (i, (state, epoch)) in states.iter().enumerate() {
        let starts = if i == victim { 2 } else { 1 };
        assert!(state == "done" && *epoch == starts, "shard {i}: {states:?}");
    }
    // Every event once, no ledger missing, though a shard's open transaction died.
    assert_eq!(lost.events_per_ledger(&pg), reference);
}
