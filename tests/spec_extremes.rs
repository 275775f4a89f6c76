//! A pipeline file with every duration and count at the largest value allowed validates, runs
//! its first restart and stops cleanly: bounds at parse time leave the supervisor's clock
//! arithmetic nothing to overflow on.

mod supervisor_common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use supervisor_common::{alive, testkit};

const YEAR: &str = "365d";
const MILLION: u32 = 1_000_000;

fn extreme_pipeline(kit: &str, pid_file: &str) -> String {
    format!(
        "apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: extremes
spec:
  sources:
    - id: steady
      command: {kit}
      args: [--pid-file, {pid_file}]
      stop: {{timeout: {YEAR}}}
      liveness: {{exec: {{command: ['true']}}, period: {YEAR}, timeout: {YEAR}, failure_threshold: {MILLION}}}
  sinks:
    - id: crashing
      command: {kit}
      args: [--exit-code, '3', --after-ms, '50']
      inputs: [steady]
      restart:
        policy: always
        initial_delay: {YEAR}
        max_delay: {YEAR}
        start_limit_burst: {MILLION}
        start_limit_interval: {YEAR}
      stop: {{timeout: {YEAR}}}
      readiness: {{tcp: {{port: 1}}, period: {YEAR}, timeout: {YEAR}, initial_delay: {YEAR}, failure_threshold: {MILLION}, success_threshold: {MILLION}}}
"
    )
}

#[test]
fn a_pipeline_at_every_limit_validates_restarts_and_stops_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("steady.pid");
    let file = dir.path().join("extremes.yaml");
    std::fs::write(
        &file,
        extreme_pipeline(
            &testkit().display().to_string(),
            &pid_file.display().to_string(),
        ),
    )
    .unwrap();
    let flowctl = env!("CARGO_BIN_EXE_flowctl");
    let validated = Command::new(flowctl)
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "{}",
        String::from_utf8_lossy(&validated.stderr)
    );

    let socket = dir.path().join("run/flowctl.sock");
    let mut run = Command::new(flowctl)
        .arg("run")
        .arg(&file)
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .arg("--no-registry")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    // The crashing sink exits; its next start is a year away.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_flowctl-sup"))
            .arg("--socket")
            .arg(&socket)
            .args(["status", "--json"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let backoff_ms = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v["pipelines"][0]["components"]
                    .as_array()?
                    .iter()
                    .find(|c| c["id"] == "crashing")?["next_restart_ms"]
                    .as_u64()
            });
        // Nearly a year (365 d is 31,536,000,000 ms).
        if backoff_ms.is_some_and(|ms| ms > 31_000_000_000) {
            break;
        }
        assert!(
            run.try_wait().unwrap().is_none(),
            "flowctl run ended: {}",
            std::fs::read_to_string(dir.path().join("stderr")).unwrap()
        );
        assert!(Instant::now() < deadline, "no year-long backoff: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let steady: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // SAFETY: signalling the flowctl process this test started.
    unsafe { libc::kill(run.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "flowctl run did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Ended by a signal it handles, not by a crash.
    assert!(status.code().is_some(), "{status:?}: {stderr}");
    assert!(!alive(steady), "the steady component outlived flowctl run");
}
