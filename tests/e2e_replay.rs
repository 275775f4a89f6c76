//! `flowctl replay`: a bounded copy of a pipeline over a range, run by the daemon beside the
//! live pipeline (which keeps its processes) or in the foreground. Overlapping replays into
//! PostgreSQL leave every event of their ranges exactly once.

mod daemon_common;
mod e2e_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use daemon_common::{sup_status, write_config, SUP};
use e2e_common::{
    bin_dir, flowctl, ledger_of, parse_jsonl, pipeline, reference_events, synthetic_pipeline,
};
use flowctl_testkit::postgres::{Durability, PgCluster};

/// The live pipeline follows the tip from above the replayed ranges, so every row of those
/// ranges is a replay's (a synthetic ledger is the same in every run, whatever its start).
const LIVE_FROM: u32 = 200;

fn flowctl_at(dir: &Path, args: &[&str]) -> Output {
    let endpoint = format!("unix:{}", dir.join("run/registry.sock").display());
    Command::new(flowctl())
        .args(args)
        .args(["--endpoint", &endpoint])
        .output()
        .unwrap()
}

/// `flowctl replay --pipeline live --from-ledger FROM --to-ledger TO --wait -o json`.
fn replay_and_wait(dir: &Path, from: u32, to: u32) -> Output {
    let (from, to) = (from.to_string(), to.to_string());
    flowctl_at(
        dir,
        &[
            "replay",
            "--pipeline",
            "live",
            "--from-ledger",
            &from,
            "--to-ledger",
            &to,
            "--wait",
            "-o",
            "json",
        ],
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Rows per ledger in `ttp_events` among `from..=to`.
fn stored(pg: &PgCluster, from: u32, to: u32) -> BTreeMap<u64, usize> {
    let rows = pg
        .query(&format!(
            "SELECT string_agg(ledger_sequence || ':' || n, ',' ORDER BY ledger_sequence) FROM \
             (SELECT ledger_sequence, count(*) n FROM ttp_events \
              WHERE ledger_sequence BETWEEN {from} AND {to} GROUP BY 1) t"
        ))
        .unwrap_or_default();
    rows.split(',')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (l, n) = pair.split_once(':').unwrap();
            (l.parse().unwrap(), n.parse().unwrap())
        })
        .collect()
}

fn per_ledger(events: &[serde_json::Value]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts.entry(ledger_of(e)).or_default() += 1;
    }
    counts
}

fn live_pids(status: &serde_json::Value) -> Vec<i64> {
    let live = status["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "live")
        .unwrap_or_else(|| panic!("no live pipeline: {status}"));
    live["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["pid"].as_i64().unwrap_or(0))
        .collect()
}

/// `flowctl-sup run` on a config of [`write_config`], stopped with SIGTERM when dropped.
struct Daemon {
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl Daemon {
    fn start(dir: &Path, config: &Path) -> Daemon {
        let child = Command::new(SUP)
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            dir: dir.to_path_buf(),
            child,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.join("run/flowctl.sock")
    }

    /// The pids of the `live` pipeline's components, once they all run.
    fn live_pids_once_running(&self) -> Vec<i64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.socket().exists() {
                let pids = live_pids(&sup_status(&self.socket()));
                if pids.iter().all(|p| *p > 0) {
                    return pids;
                }
            }
            assert!(Instant::now() < deadline, "live never ran:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

#[test]
fn overlapping_replays_under_the_daemon_write_each_event_once_run_on_through_a_reload_and_leave_the_live_pipelines_processes_alone(
) {
    bin_dir();
    let Some(pg) = PgCluster::start(Durability::Off) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (config, pipelines) = write_config(dir.path(), "");
    let sink_env = format!(
        "        SINK: postgres\n        DATABASE_URL: \"{}\"\n        SINK_ID: live",
        pg.url()
    );
    let live = synthetic_pipeline("live", LIVE_FROM, 0, 20.0, &sink_env);
    std::fs::write(pipelines.join("live.yaml"), live).unwrap();
    let daemon = Daemon::start(dir.path(), &config);
    let log = || daemon.log();
    let socket = daemon.socket();
    let before = daemon.live_pids_once_running();

    let first = replay_and_wait(dir.path(), 2, 31);
    assert!(first.status.success(), "{}\n{}", text(&first), log());
    let run: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["pipeline_name"], "live@2-31");
    assert_eq!(run["from_ledger"], 2);
    assert_eq!(run["to_ledger"], 31);
    // Its own sink's count (the final heartbeat of its goodbye), not the live sink's.
    let written: usize = per_ledger(&reference_events(2, 31)).values().sum();
    assert_eq!(run["metrics"]["events_processed"], written as u64, "{run}");

    // Overlapping the first: ledgers 20..=31 are written again, and stay once. A reload while
    // it runs leaves it running: a replay comes from no file.
    let endpoint = format!("unix:{}", dir.path().join("run/registry.sock").display());
    let second = Command::new(flowctl())
        .args(["replay", "--pipeline", "live", "--from-ledger", "20"])
        .args(["--to-ledger", "45", "--wait", "--endpoint", &endpoint])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sup_status(&socket)["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "live@20-45")
    {
        assert!(
            Instant::now() < deadline,
            "the replay never started:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let reload = Command::new(SUP)
        .arg("--socket")
        .arg(&socket)
        .arg("reload")
        .output()
        .unwrap();
    assert!(reload.status.success(), "{}", text(&reload));
    let second = second.wait_with_output().unwrap();
    assert!(second.status.success(), "{}\n{}", text(&second), log());
    assert!(
        text(&second).contains("replay live@20-45 completed"),
        "{}",
        text(&second)
    );
    assert_eq!(stored(&pg, 2, 45), per_ledger(&reference_events(2, 45)));

    // The live pipeline ran on, the same processes; the replays left the supervisor.
    let status = sup_status(&socket);
    assert_eq!(live_pids(&status), before, "{status}");
    let names: Vec<&str> = status["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["live"], "{status}");

    let runs = flowctl_at(
        dir.path(),
        &["pipelines", "runs", "live@20-45", "-o", "json"],
    );
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs[0]["status"], "completed", "{runs}");
    assert_eq!(runs[0]["last_ledger_done"], 45, "{runs}");

    // A pipeline that is not installed is named in the refusal.
    let unknown = flowctl_at(
        dir.path(),
        &[
            "replay",
            "--pipeline",
            "nope",
            "--from-ledger",
            "2",
            "--to-ledger",
            "3",
        ],
    );
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("no pipeline named \"nope\""),
        "{}",
        text(&unknown)
    );

    drop(daemon);
}

#[test]
fn a_foreground_replay_writes_its_range_whatever_ledgers_the_file_names_and_fails_rather_than_write_nothing(
) {
    bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("replayed.jsonl");
    let file = pipeline(
        dir.path(),
        "backfill",
        &synthetic_pipeline(
            "backfill",
            900_000,
            0,
            0.0,
            &format!(
                "        SINK: jsonl\n        OUTPUT_FILE: \"{}\"",
                out.display()
            ),
        ),
    );
    let run = Command::new(flowctl())
        .arg("replay")
        .arg("-f")
        .arg(&file)
        .args(["--from-ledger", "5", "--to-ledger", "14", "--no-cgroups"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("backfill@5-14"), "{}", text(&run));
    let events = parse_jsonl(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(events, reference_events(5, 14));

    // Again into the same file: it already holds the range and only grows in ledger order, so
    // the replay fails saying so instead of completing with nothing written.
    let again = Command::new(flowctl())
        .arg("replay")
        .arg("-f")
        .arg(&file)
        .args(["--from-ledger", "5", "--to-ledger", "14", "--no-cgroups"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        text(&again).contains("already holds ledgers through 14")
            && text(&again).contains("another OUTPUT_FILE"),
        "{}",
        text(&again)
    );
    assert_eq!(parse_jsonl(&std::fs::read_to_string(&out).unwrap()), events);

    // An empty or reversed range is refused before anything starts.
    let reversed = Command::new(flowctl())
        .arg("replay")
        .arg("-f")
        .arg(&file)
        .args(["--from-ledger", "14", "--to-ledger", "5"])
        .output()
        .unwrap();
    assert!(!reversed.status.success());
    assert!(
        text(&reversed).contains("to_ledger 5 is before from_ledger 14"),
        "{}",
        text(&reversed)
    );
}

#[test]
fn a_replay_whose_component_fails_for_good_ends_failed_naming_it_and_leaves_the_supervisor() {
    bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let (config, pipelines) = write_config(dir.path(), "");
    let out = dir.path().join("live.jsonl");
    // Ledger 1 is the synthetic network's genesis: a replay of 1..=31 asks for a ledger it
    // cannot build, so its source fails at every start until its start limit.
    let live = synthetic_pipeline(
        "live",
        LIVE_FROM,
        0,
        20.0,
        &format!(
            "        SINK: jsonl\n        OUTPUT_FILE: \"{}\"",
            out.display()
        ),
    )
    .replace(
        "      restart:\n        initial_delay: 100ms\n  processors:",
        "      restart:\n        initial_delay: 100ms\n        start_limit_burst: 2\n  processors:",
    );
    assert!(live.contains("start_limit_burst: 2"), "{live}");
    std::fs::write(pipelines.join("live.yaml"), live).unwrap();
    let daemon = Daemon::start(dir.path(), &config);
    let log = || daemon.log();
    let socket = daemon.socket();
    let before = daemon.live_pids_once_running();
    let replay = replay_and_wait(dir.path(), 1, 31);
    assert_eq!(
        replay.status.code(),
        Some(1),
        "{}\n{}",
        text(&replay),
        log()
    );
    let run: serde_json::Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap();
    assert!(error.starts_with("ledgers: "), "{run}");
    let status = sup_status(&socket);
    assert_eq!(live_pids(&status), before, "{status}");
    assert_eq!(status["pipelines"].as_array().unwrap().len(), 1, "{status}");

    drop(daemon);
}
