//! `flowctl run`'s ending: exit codes for bounded pipelines, failures, and SIGTERM.

mod supervisor_common;

use std::sync::Arc;
use std::time::Duration;

use flowctl::api::{self, Request};
use flowctl::cli::run::{run_plan_async, RegistryChoice, RunOptions};
use flowctl::plan::RestartPolicy;
use flowctl::supervisor::testplan;
use supervisor_common::*;

fn quiet(dir: &std::path::Path) -> RunOptions {
    RunOptions {
        runtime_dir: Some(dir.join("run")),
        registry: RegistryChoice::None,
        log_sink: Arc::new(CaptureSink::default()),
        cgroups: None,
        ..Default::default()
    }
}

#[tokio::test]
async fn run_exits_zero_when_every_component_finishes_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = kit("source", &["--exit-code", "0", "--after-ms", "100"]);
    source.restart.policy = RestartPolicy::OnFailure;
    let mut sink = kit("sink", &["--exit-code", "0", "--after-ms", "200"]);
    sink.restart.policy = RestartPolicy::OnFailure;
    sink.inputs = vec!["source".into()];
    sink.depends_on = vec!["source".into()];
    let code = tokio::time::timeout(
        Duration::from_secs(10),
        run_plan_async(
            testplan::pipeline("bounded", vec![source, sink]),
            quiet(dir.path()),
        ),
    )
    .await
    .expect("a bounded pipeline ends by itself")
    .unwrap();
    assert_eq!(code, 0);
    assert!(
        !dir.path().join("run/flowctl.sock").exists(),
        "socket removed"
    );
}

#[tokio::test]
async fn run_exits_one_when_a_component_fails_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = kit("bad", &["--exit-code", "7"]);
    bad.restart.policy = RestartPolicy::Never;
    let steady = kit("steady", &[]);
    let code = tokio::time::timeout(
        Duration::from_secs(10),
        run_plan_async(
            testplan::pipeline("p", vec![bad, steady]),
            quiet(dir.path()),
        ),
    )
    .await
    .expect("a failure stops the pipeline")
    .unwrap();
    assert_eq!(code, 1);
}

#[tokio::test]
async fn run_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = api::socket::socket_path(&dir.path().join("run"));
    let task = tokio::spawn(run_plan_async(
        testplan::pipeline("p", vec![kit("forever", &[])]),
        quiet(dir.path()),
    ));
    // Wait until it serves its socket and the component runs.
    loop {
        let s = socket.clone();
        let ready = tokio::task::spawn_blocking(move || {
            api::client::request(&s, &Request::Status)
                .ok()
                .and_then(|r| r.status)
                .is_some_and(|s| s.pipelines[0].components[0].ready)
        })
        .await
        .unwrap();
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // SAFETY: signalling our own process; the run's handler turns it into a graceful stop.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    let code = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("SIGTERM stops the run")
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
}

#[tokio::test]
async fn run_serves_the_control_plane_to_its_components_and_records_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env.json");
    let mut only = kit(
        "only",
        &[
            "--exit-code",
            "0",
            "--after-ms",
            "100",
            "--env-file",
            env_file.to_str().unwrap(),
        ],
    );
    only.restart.policy = RestartPolicy::OnFailure;
    let state_dir = dir.path().join("state");
    let options = RunOptions {
        registry: RegistryChoice::InProcess {
            state_dir: Some(state_dir.clone()),
        },
        ..quiet(dir.path())
    };
    let code = tokio::time::timeout(
        Duration::from_secs(10),
        run_plan_async(testplan::pipeline("recorded", vec![only]), options),
    )
    .await
    .expect("a bounded pipeline ends by itself")
    .unwrap();
    assert_eq!(code, 0);

    let env: std::collections::HashMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&env_file).unwrap()).unwrap();
    assert_eq!(env["ENABLE_FLOWCTL"], "true");
    let endpoint: std::net::SocketAddr = env["FLOWCTL_ENDPOINT"].parse().unwrap();
    assert!(
        endpoint.ip().is_loopback() && endpoint.port() != 0,
        "{endpoint}"
    );

    let registry = flowctl::registry::Registry::open(flowctl::registry::RegistryConfig {
        state_dir: Some(state_dir),
        ..Default::default()
    })
    .unwrap();
    let runs = registry.list_runs(Default::default()).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].pipeline_name, "recorded");
    assert_eq!(runs[0].component_ids, vec!["only".to_string()]);
    assert_eq!(
        runs[0].status,
        flowctl_proto::flowctl::RunStatus::Completed as i32
    );
}
