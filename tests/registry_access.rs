//! Who may do what on the registry a supervisor runs: its own children register and heartbeat
//! as themselves, a local user on loopback TCP may only read, and runs are managed over the
//! unix socket or with the operator token. Real `flowctl run`, real bundled components.

mod e2e_common;
mod registry_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e_common::*;
use flowctl::registry::client::{connect, ClientOptions, RegistryClient};
use flowctl::registry::{Registry, RegistryConfig, ServerOptions};
use flowctl_proto::flowctl::v1::UnregisterRequest;
use flowctl_proto::flowctl::{
    CreatePipelineRunRequest, ListPipelineRunsRequest, RunStatus, ServiceHeartbeat, ServiceInfo,
    ServiceType, StopPipelineRunRequest,
};
use tonic::Code;

async fn client(endpoint: &str, token: Option<&str>) -> RegistryClient {
    let mut options = ClientOptions::from_env(endpoint);
    options.token = token.map(str::to_string);
    connect(&options).await.expect("connect")
}

async fn services(c: &mut RegistryClient) -> Vec<String> {
    c.v0.list_services(())
        .await
        .unwrap()
        .into_inner()
        .services
        .into_iter()
        .map(|s| s.service_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_user_over_tcp_cannot_impersonate_unregister_or_stop_what_the_supervisor_runs() {
    let dir = tempfile::tempdir().unwrap();
    // Slow enough to still be running when the test is done with it.
    let sink_env = format!(
        "        SINK: jsonl\n        OUTPUT_FILE: \"{}\"",
        dir.path().join("events.jsonl").display()
    );
    let file = pipeline(
        dir.path(),
        "slow",
        &synthetic_pipeline("slow", 2, 100_000, 2.0, &sink_env),
    );
    let child = run_cmd(dir.path(), &file)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdout(std::fs::File::create(dir.path().join("flowctl.stdout")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("flowctl.stderr")).unwrap())
        .spawn()
        .unwrap();
    let mut running = Running {
        child: Some(child),
        dir: dir.path().to_path_buf(),
    };
    let ttp_pid = tokio::task::spawn_blocking({
        let r = Running {
            child: None,
            dir: dir.path().to_path_buf(),
        };
        move || r.ready_pid("ttp", Duration::from_secs(60))
    })
    .await
    .unwrap();
    let tcp = endpoint_of(ttp_pid);
    let mut stranger = client(&tcp, None).await;

    // The supervised components registered over that same TCP endpoint, unchallenged.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids = services(&mut stranger).await;
        if ["ledgers", "ttp", "sink"]
            .iter()
            .all(|id| ids.iter().any(|s| s == id))
        {
            break;
        }
        assert!(Instant::now() < deadline, "components registered: {ids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let fake = stranger
        .v0
        .register(ServiceInfo {
            component_id: "ttp".into(),
            service_type: ServiceType::Processor as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(fake.code(), Code::PermissionDenied, "{fake}");
    assert!(fake.message().contains("unix socket"), "{fake}");
    let beat = stranger
        .v0
        .heartbeat(ServiceHeartbeat {
            service_id: "ttp".into(),
            timestamp: None,
            metrics: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(beat.code(), Code::PermissionDenied, "{beat}");
    let gone = stranger
        .v1
        .unregister_component(UnregisterRequest {
            service_id: "ttp".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::PermissionDenied, "{gone}");
    assert!(services(&mut stranger).await.contains(&"ttp".to_string()));

    // Reading runs is allowed; stopping one is not.
    let runs = stranger
        .v0
        .list_pipeline_runs(ListPipelineRunsRequest {
            pipeline_name: "slow".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    let run = runs
        .iter()
        .find(|r| r.status() == RunStatus::Running)
        .expect("the running run is listed")
        .run_id
        .clone();
    let stop = stranger
        .v0
        .stop_pipeline_run(StopPipelineRunRequest {
            run_id: run.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(stop.code(), Code::PermissionDenied, "{stop}");
    assert!(stop.message().contains("StopPipelineRun"), "{stop}");
    let created = stranger
        .v0
        .create_pipeline_run(CreatePipelineRunRequest {
            pipeline_name: "slow".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(created.code(), Code::PermissionDenied, "{created}");
    assert!(
        running
            .child
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "flowctl run is still running"
    );

    // The operator, over the unix socket, may stop it.
    let socket = dir.path().join("run/registry.sock");
    let mut operator = client(&format!("unix:{}", socket.display()), None).await;
    let stopped = operator
        .v0
        .stop_pipeline_run(StopPipelineRunRequest { run_id: run })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.status(), RunStatus::Stopped);
    let out = running.finish(Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopped through the control plane"),
        "{stderr}"
    );
    assert!(out.status.success(), "{stderr}");
}

#[tokio::test]
async fn in_a_supervisor_the_operator_token_manages_runs_over_tcp_and_its_absence_does_not() {
    let registry = Registry::open(RegistryConfig::default()).unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let server = registry_support::serve(
        registry,
        Some(runtime.path()),
        ServerOptions {
            token: Some("op-s3cret".into()),
            in_supervisor: true,
            ..Default::default()
        },
    )
    .await;
    let new_run = || CreatePipelineRunRequest {
        pipeline_name: "p".into(),
        ..Default::default()
    };
    let mut with_token = client(&server.endpoint(), Some("op-s3cret")).await;
    with_token.v0.create_pipeline_run(new_run()).await.unwrap();
    // Even the operator's registrations work over TCP (the test process is nobody's child).
    with_token
        .v0
        .register(ServiceInfo {
            component_id: "by-hand".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let mut without = client(&server.endpoint(), None).await;
    let err = without.v0.create_pipeline_run(new_run()).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let err = without
        .v0
        .register(ServiceInfo {
            component_id: "intruder".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.message().contains("this supervisor started"), "{err}");
    // Reads stay open on loopback; a wrong token is refused outright.
    assert_eq!(services(&mut without).await, vec!["by-hand".to_string()]);
    let mut wrong = client(&server.endpoint(), Some("guess")).await;
    let err = wrong.v0.list_services(()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    server.stop().await;
}

#[tokio::test]
async fn a_standalone_registry_lets_local_components_register_but_manages_runs_only_for_the_operator(
) {
    let server = registry_support::start(RegistryConfig::default()).await;
    let mut tcp = client(&server.endpoint(), None).await;
    tcp.v0
        .register(ServiceInfo {
            component_id: "go-processor".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    tcp.v0
        .heartbeat(ServiceHeartbeat {
            service_id: "go-processor".into(),
            timestamp: None,
            metrics: HashMap::new(),
        })
        .await
        .unwrap();
    let err = tcp
        .v0
        .create_pipeline_run(CreatePipelineRunRequest {
            pipeline_name: "p".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let mut unix = client(&server.operator_endpoint(), None).await;
    unix.v0
        .create_pipeline_run(CreatePipelineRunRequest {
            pipeline_name: "p".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn replays_are_for_the_operator_and_a_control_plane_without_pipelines_refuses_them_saying_where_to_replay(
) {
    use flowctl_proto::flowctl::v1::StartReplayRequest;
    let registry = Registry::open(RegistryConfig::default()).unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let server = registry_support::serve(
        registry,
        Some(runtime.path()),
        ServerOptions {
            token: Some("op-s3cret".into()),
            in_supervisor: true,
            ..Default::default()
        },
    )
    .await;
    let replay = |from, to| StartReplayRequest {
        pipeline: "ttp".into(),
        from_ledger: from,
        to_ledger: to,
        resolve_dead_letters: vec![],
    };
    let mut without = client(&server.endpoint(), None).await;
    let err = without.replay.start_replay(replay(2, 9)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(
        err.message().contains("StartReplay is for operators"),
        "{err}"
    );

    let mut operator = client(&server.endpoint(), Some("op-s3cret")).await;
    let err = operator
        .replay
        .start_replay(replay(9, 2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(
        err.message()
            .contains("to_ledger 2 is before from_ledger 9"),
        "{err}"
    );
    // No daemon answers replays here.
    let err = operator
        .replay
        .start_replay(replay(2, 9))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("flowctl replay -f FILE"), "{err}");
    server.stop().await;
}
