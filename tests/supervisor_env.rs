//! What a child process is started with: environment, process group, directory, limits,
//! where its output goes.

mod supervisor_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flowctl::logsink::Stream;
use flowctl::plan::PortPlan;
use flowctl::supervisor::testplan;
use supervisor_common::*;

#[tokio::test]
async fn child_sees_exact_environment() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env.json");
    let mut c = kit("ttp-processor", &["--env-file", env_file.to_str().unwrap()]);
    c.health_port = 18088;
    c.ports = vec![PortPlan {
        name: "grpc".into(),
        port: 50052,
        protocol: "tcp".into(),
    }];
    c.env
        .insert("SOURCE_SERVICE_ADDRESS".into(), "127.0.0.1:50051".into());
    c.env
        .insert("FLOWCTL_HEARTBEAT_INTERVAL".into(), "10000".into());
    let mut opts = options(dir.path());
    opts.endpoint = Some("127.0.0.1:8080".into());
    opts.run_ids
        .write()
        .unwrap()
        .insert("p".into(), "run-42".into());
    let run = start_with(
        testplan::pipeline("p", vec![c]),
        opts,
        tempfile::tempdir().unwrap(),
    );
    let seen: BTreeMap<String, String> =
        serde_json::from_str(&read_when_present(&env_file, Duration::from_secs(5)).await).unwrap();

    let mut want: BTreeMap<String, String> = [
        ("ENABLE_FLOWCTL", "true"),
        ("FLOWCTL_ENDPOINT", "127.0.0.1:8080"),
        ("FLOWCTL_COMPONENT_ID", "ttp-processor"),
        ("FLOWCTL_SERVICE_ID", "ttp-processor"),
        ("FLOWCTL_HEARTBEAT_INTERVAL", "10000"),
        ("FLOWCTL_HEARTBEAT_INTERVAL_MS", "10000"),
        ("FLOWCTL_ATTEMPT", "1"),
        ("FLOWCTL_RUN_ID", "run-42"),
        ("HEALTH_PORT", "18088"),
        ("HEALTH_ENDPOINT", "http://127.0.0.1:18088/health"),
        ("FLOWCTL_ON_ERROR", "fail"),
        ("PORT", "50052"),
        ("SOURCE_SERVICE_ADDRESS", "127.0.0.1:50051"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    want.insert(
        "PATH".into(),
        std::env::var("PATH").unwrap_or_else(|_| flowctl::supervisor::env::DEFAULT_PATH.into()),
    );
    for key in ["HOME", "LANG"] {
        if let Ok(v) = std::env::var(key) {
            want.insert(key.into(), v);
        }
    }
    assert_eq!(seen, want);
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn a_child_restarted_after_a_crash_is_told_its_second_attempt_of_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env.json");
    let mut c = kit(
        "loader",
        &[
            "--env-file",
            env_file.to_str().unwrap(),
            "--exit-code",
            "1",
            "--after-ms",
            "100",
        ],
    );
    c.restart.initial_delay = Duration::from_millis(50);
    let opts = options(dir.path());
    opts.run_ids
        .write()
        .unwrap()
        .insert("p".into(), "run-9".into());
    let run = start_with(
        testplan::pipeline("p", vec![c]),
        opts,
        tempfile::tempdir().unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let seen = loop {
        let text = std::fs::read_to_string(&env_file).unwrap_or_default();
        if let Ok(env) = serde_json::from_str::<BTreeMap<String, String>>(&text) {
            if env.get("FLOWCTL_ATTEMPT").map(String::as_str) == Some("2") {
                break env;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no second start: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(seen["FLOWCTL_RUN_ID"], "run-9");
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn inherit_env_passes_the_supervisor_environment() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env.json");
    let mut c = kit("c", &["--env-file", env_file.to_str().unwrap()]);
    c.inherit_env = true;
    let run = start(testplan::pipeline("p", vec![c]));
    let seen: BTreeMap<String, String> =
        serde_json::from_str(&read_when_present(&env_file, Duration::from_secs(5)).await).unwrap();
    for (k, v) in std::env::vars() {
        if k != "PATH" {
            assert_eq!(seen.get(&k), Some(&v), "{k}");
        }
    }
    assert_eq!(
        seen["ENABLE_FLOWCTL"], "false",
        "no endpoint: components are told not to register"
    );
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn child_runs_in_own_group_in_working_dir_with_rlimits() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = kit("c", &[]);
    c.working_dir = Some(dir.path().to_path_buf());
    c.rlimits.nofile = Some(321);
    c.rlimits.core = Some(0);
    let run = start(testplan::pipeline("p", vec![c]));
    let pid = wait_for(&run.handle, "c", Duration::from_secs(5), |c| c.ready)
        .await
        .pid
        .unwrap();
    // SAFETY: getpgid has no memory-safety preconditions.
    assert_eq!(unsafe { libc::getpgid(pid) }, pid, "own process group");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        dir.path().canonicalize().unwrap()
    );
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = |name: &str| {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(line("Max open files").contains("321 321"), "{limits}");
    assert!(line("Max core file size").contains("0 0"), "{limits}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("\nSigQ:"), "sanity");
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn child_output_lines_reach_the_log_sink_by_component() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(CaptureSink::default());
    let mut opts = options(dir.path());
    opts.log_sink = sink.clone();
    let c = kit("talker", &["--say", "hello ledger 7", "--exit-code", "0"]);
    let mut plan = testplan::pipeline("p", vec![c]);
    plan.components[0].restart.policy = flowctl::plan::RestartPolicy::OnFailure;
    opts.exit_when_done = true;
    let run = start_with(plan, opts, tempfile::tempdir().unwrap());
    run.task.await.unwrap();
    // `run` returns only after the output still in the pipes has reached the sink.
    let mut lines = sink.0.lock().unwrap().clone();
    lines.sort_by_key(|(_, s, _)| *s == Stream::Stderr);
    assert_eq!(
        lines,
        vec![
            (
                "talker".to_string(),
                Stream::Stdout,
                "hello ledger 7".to_string()
            ),
            (
                "talker".to_string(),
                Stream::Stderr,
                "hello ledger 7".to_string()
            ),
        ]
    );
    drop(dir);
}

#[tokio::test]
async fn child_runs_as_configured_user_and_group() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        eprintln!("skipped: no user `nobody` on this host");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env_dir = tempfile::tempdir_in("/tmp").unwrap();
    // The child writes as `nobody`: give it a directory it may write to.
    std::fs::set_permissions(
        env_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let env_file = env_dir.path().join("env.json");
    let mut c = kit("c", &["--env-file", env_file.to_str().unwrap()]);
    c.user = Some("nobody".into());
    let run = start_with(
        testplan::pipeline("p", vec![c]),
        options(dir.path()),
        tempfile::tempdir().unwrap(),
    );
    let seen: BTreeMap<String, String> =
        serde_json::from_str(&read_when_present(&env_file, Duration::from_secs(5)).await).unwrap();
    assert_eq!(seen["HOME"], nobody.dir.display().to_string());
    let pid = component(&run.handle, "c").await.pid.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ids = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("Uid:"), vec![nobody.uid.as_raw(); 4]);
    assert_eq!(ids("Gid:"), vec![nobody.gid.as_raw(); 4]);
    run.handle.shutdown();
    run.task.await.unwrap();
}

#[tokio::test]
async fn unknown_user_fails_the_component_with_a_clear_reason() {
    let mut c = kit("c", &[]);
    c.user = Some("flowctl-no-such-user".into());
    let run = start(testplan::pipeline("p", vec![c]));
    let status = wait_for(&run.handle, "c", Duration::from_secs(5), |c| {
        c.state == flowctl::supervisor::StateName::Failed
    })
    .await;
    assert_eq!(
        status.reason.as_deref(),
        Some("user `flowctl-no-such-user` does not exist")
    );
    run.handle.shutdown();
    run.task.await.unwrap();
}
