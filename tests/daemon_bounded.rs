//! A bounded pipeline under the daemon: when its sink has written the last ledger of
//! `spec.range`, the rest of it is drained and it shows as completed (status, `flowctl get
//! pipelines`, `STATUS=`, `/metrics`), nothing restarts, and a live pipeline beside it runs on.

mod daemon_common;
mod e2e_common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_common::{notify_socket, sup_status, write_config, SUP};
use e2e_common::{bin_dir, parse_jsonl, ranged_pipeline, reference_events};

fn pipeline<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no pipeline {name}: {status}"))
}

#[test]
fn a_bounded_pipeline_completes_under_the_daemon_and_a_live_one_keeps_running() {
    bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let (config, pipelines) = write_config(dir.path(), "");
    let bounded = ranged_pipeline(dir.path(), "backfill", 2, 31, 0.0);
    std::fs::copy(&bounded, pipelines.join("backfill.yaml")).unwrap();
    std::fs::write(
        pipelines.join("live.yaml"),
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: live}\nspec:\n  sources:\n    \
         - id: ticker\n      command: [sleep, '1000']\n",
    )
    .unwrap();
    let (notify_path, sock) = notify_socket(dir.path());
    let mut daemon = Command::new(SUP)
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let socket = dir.path().join("run/flowctl.sock");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if socket.exists() {
            let status = sup_status(&socket);
            if pipeline(&status, "backfill")["completed"] == true
                && pipeline(&status, "backfill")["components"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| c["state"] == "exited" || c["state"] == "stopped")
            {
                break status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the bounded pipeline did not complete: {}",
            std::fs::read_to_string(dir.path().join("stderr")).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let backfill = pipeline(&status, "backfill");
    for c in backfill["components"].as_array().unwrap() {
        assert_eq!(c["restarts"], 0, "{c}");
        assert!(c["pid"].is_null(), "{c}");
    }
    let live = pipeline(&status, "live");
    assert_eq!(live["completed"], false);
    assert!(live["components"][0]["pid"].is_i64(), "{live}");

    // What it wrote is the range's events, once.
    let events = parse_jsonl(&std::fs::read_to_string(dir.path().join("backfill.jsonl")).unwrap());
    assert_eq!(events, reference_events(2, 31));

    // `flowctl get pipelines` and systemd's STATUS= say so too.
    let get = Command::new(env!("CARGO_BIN_EXE_flowctl"))
        .args(["get", "pipelines", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&get.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("backfill"))
        .unwrap_or_else(|| panic!("{table}{}", String::from_utf8_lossy(&get.stderr)));
    assert!(row.contains("completed"), "{table}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]);
            if msg.contains("1 completed") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no STATUS= with `1 completed`");
    }

    // Its run record is completed, with its range and all of it done.
    let registry = format!("unix:{}", dir.path().join("run/registry.sock").display());
    let deadline = Instant::now() + Duration::from_secs(20);
    let row = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_flowctl"))
            .args(["pipelines", "runs", "backfill", "--endpoint", &registry])
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(row) = table.lines().find(|l| l.contains(" completed ")) {
            break row.to_string();
        }
        assert!(Instant::now() < deadline, "run not completed: {table}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(row.contains("2-31"), "{row}");
    assert!(row.contains("31 (30/30)"), "{row}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success());
}
