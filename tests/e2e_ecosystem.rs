//! The ecosystem's own components under `flowctl run`, played by Python grpcio stand-ins that
//! register as ttp-processor-demo's Go processor and Node.js consumer do: without a
//! `component_id`, the consumer reading `FLOWCTL_HEARTBEAT_INTERVAL` as milliseconds.
//! Skipped (with a message) where Python or grpcio-tools is missing.

mod e2e_common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e_common::*;

fn grpc_tools_available() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import grpc_tools"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        eprintln!(
            "SKIPPED: python3 with grpcio-tools is not installed \
             (`python3 -m pip install grpcio-tools` enables this test)"
        );
    }
    found
}

/// A pipeline component running the stand-in with `args`, its stubs generated into `stubs`.
fn stand_in(stubs: &Path, args: &str) -> String {
    let root = repo();
    format!(
        "command: [python3, \"{}\", --proto-dir, \"{}\", --out, \"{}\"{args}]",
        root.join("tests/wire/python/eco_component.py").display(),
        root.join("proto").display(),
        stubs.display(),
    )
}

fn sup_status_table(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flowctl-sup"))
        .arg("--socket")
        .arg(socket(dir))
        .arg("status")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_registration_without_component_id_is_linked_by_its_process_passes_readiness_and_goes_on_kill_9(
) {
    if !grpc_tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stubs = dir.path().join("stubs");
    let file = pipeline(
        dir.path(),
        "eco",
        &format!(
            "apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: eco
spec:
  processors:
    - id: processor
      {}
      readiness: {{registered: true}}
      restart:
        initial_delay: 3s
  sinks:
    - id: after
      command: [sleep, \"600\"]
      inputs: [processor]
",
            stand_in(&stubs, "")
        ),
    );
    let run = Running::start(dir.path(), &file);
    let pid = run.ready_pid("processor", Duration::from_secs(60));
    let status = run.component("processor").unwrap();
    assert_eq!(
        status["registration"]["linked_by"], "peer process",
        "{status}"
    );
    // Its dependent started once `registered` passed.
    wait_for("the dependent to start", Duration::from_secs(10), || {
        run.component("after").is_some_and(|c| c["ready"] == true)
    });
    let table = sup_status_table(dir.path());
    assert!(table.contains("by peer process"), "{table}");

    kill9(pid);
    // Within the restart delay the dead process's registration is already gone.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let c = run.component("processor").unwrap();
        if c["state"] == "backoff" && c["registration"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "registration kept: {c}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let again = run.ready_pid("processor", Duration::from_secs(60));
    assert_ne!(again, pid);
    let c = run.component("processor").unwrap();
    assert_eq!(c["registration"]["linked_by"], "peer process", "{c}");

    // One registration for it, not one per process it has had.
    let listed = Command::new(flowctl())
        .args(["list", "--endpoint"])
        .arg(endpoint_of(again))
        .args(["-o", "json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&listed.stderr)));
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["processor"]);
}

#[test]
fn a_consumer_reading_the_interval_as_milliseconds_is_warned_about_once_and_millis_format_fixes_it()
{
    if !grpc_tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(
        dir.path(),
        "node",
        &format!(
            "apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: node
spec:
  sources:
    - id: consumer
      {}
      readiness: {{registered: true}}
    - id: fixed
      {}
      heartbeat_interval_format: millis
      readiness: {{registered: true}}
",
            stand_in(
                &dir.path().join("stubs-a"),
                ", --interval-as, millis, --service-type, \"4\""
            ),
            stand_in(
                &dir.path().join("stubs-b"),
                ", --interval-as, millis, --service-type, \"4\""
            ),
        ),
    );
    let run = Running::start(dir.path(), &file);
    run.ready_pid("consumer", Duration::from_secs(60));
    run.ready_pid("fixed", Duration::from_secs(60));
    let stderr = || std::fs::read_to_string(dir.path().join("flowctl.stderr")).unwrap();
    wait_for("the warning", Duration::from_secs(10), || {
        stderr().contains("component consumer heartbeats every")
    });
    // Heartbeating on for a while does not repeat it.
    std::thread::sleep(Duration::from_secs(2));
    let text = stderr();
    assert_eq!(
        text.matches("component consumer heartbeats every").count(),
        1,
        "{text}"
    );
    assert!(text.contains("heartbeat_interval_format: millis"), "{text}");
    assert!(!text.contains("component fixed heartbeats"), "{text}");

    // Type 4 is shown by name.
    let listed = Command::new(flowctl())
        .args(["list", "--endpoint"])
        .arg(endpoint_of(run.ready_pid("fixed", Duration::from_secs(5))))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("fixed") && l.contains("consumer")),
        "{table}"
    );
}

#[test]
fn a_component_never_ready_is_stopped_at_its_start_timeout_and_restarted_by_its_policy() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(
        dir.path(),
        "stuck",
        "apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: stuck
spec:
  processors:
    - id: silent
      command: [sleep, \"600\"]
      readiness: {registered: true}
      start_timeout: 1s
      restart:
        policy: on-failure
        initial_delay: 100ms
  sinks:
    - id: after
      command: [sleep, \"600\"]
      inputs: [silent]
",
    );
    let run = Running::start(dir.path(), &file);
    let first = Instant::now();
    wait_for(
        "a restart after the start timeout",
        Duration::from_secs(10),
        || {
            run.component("silent")
                .is_some_and(|c| c["restarts"].as_u64() >= Some(1))
        },
    );
    assert!(first.elapsed() >= Duration::from_secs(1));
    let c = run.component("silent").unwrap();
    assert!(
        c["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not ready within 1s (start_timeout)")),
        "{c}"
    );
    let after = run.component("after").unwrap();
    assert_eq!(after["state"], "pending", "{after}");
}

#[test]
fn a_bounded_run_whose_ledgers_stop_advancing_is_shown_stalled_in_status_and_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let file = pipeline(
        dir.path(),
        "hang",
        "apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: hang
spec:
  range: {from_ledger: 100, to_ledger: 200, stalled_after: 1s}
  sources:
    - id: source
      command: [sleep, \"600\"]
  sinks:
    - id: sink
      command: [sleep, \"600\"]
      inputs: [source]
",
    );
    let run = Running::start(dir.path(), &file);
    let stderr = || std::fs::read_to_string(dir.path().join("flowctl.stderr")).unwrap();
    wait_for("the stall on stderr", Duration::from_secs(20), || {
        stderr().contains("stalled: no ledger of 100-200 written yet")
    });
    let table = sup_status_table(dir.path());
    assert!(table.contains("hang (stalled)"), "{table}");
    let out = Command::new(env!("CARGO_BIN_EXE_flowctl-sup"))
        .arg("--socket")
        .arg(socket(dir.path()))
        .args(["status", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = v.get("status").unwrap_or(&v);
    let stalled = status["pipelines"][0]["stalled"]
        .as_str()
        .unwrap_or_default();
    assert!(stalled.contains("spec.range.stalled_after"), "{v}");
    drop(run);
}
