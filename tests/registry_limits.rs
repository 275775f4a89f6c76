//! Bounds on what comes over the wire: oversized ids, metadata and pipeline files are refused
//! with the field and the limit named, and run listings stay below the clients' message limit.

mod registry_support;

use std::collections::HashMap;
use std::process::Command;

use flowctl::registry::limits::{MAX_CONFIG_YAML_BYTES, MAX_ID_BYTES, MAX_METADATA_BYTES};
use flowctl::registry::RegistryConfig;
use flowctl_proto::flowctl::v1::{ComponentInfo, ComponentType, RegisterRequest};
use flowctl_proto::flowctl::{
    CreatePipelineRunRequest, ListPipelineRunsRequest, ServiceInfo, ServiceType,
};
use registry_support::{client, start};
use tonic::Code;

fn service(id: &str, metadata: HashMap<String, String>) -> ServiceInfo {
    ServiceInfo {
        service_id: id.into(),
        service_type: ServiceType::Processor as i32,
        metadata,
        ..Default::default()
    }
}

/// A pipeline file of exactly `bytes` bytes.
fn config_of(bytes: usize) -> String {
    let head = "metadata:\n  name: big\ndescription: ";
    format!("{head}{}\n", "x".repeat(bytes - head.len() - 1))
}

fn run(id: &str, config_yaml: String) -> CreatePipelineRunRequest {
    CreatePipelineRunRequest {
        run_id: id.into(),
        pipeline_name: "big".into(),
        config_yaml,
        component_ids: vec!["source".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn register_with_4_mib_metadata_is_refused_naming_the_field_and_limit() {
    let server = start(RegistryConfig::default()).await;
    let mut c = client(&server.endpoint()).await;

    // 4 MiB is over the message limit: refused before it is decoded.
    let huge = HashMap::from([("blob".to_string(), "x".repeat(4 << 20))]);
    let err = c.v0.register(service("huge", huge)).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err}");
    assert!(err.message().contains("limit"), "{err}");

    // Just over the metadata limit, on both APIs: the field and the limit are named.
    let over = HashMap::from([("blob".to_string(), "x".repeat(MAX_METADATA_BYTES))]);
    let err =
        c.v0.register(service("over", over.clone()))
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().starts_with("metadata:"), "{err}");
    assert!(err.message().contains("64 KiB"), "{err}");
    let err =
        c.v1.register_component(RegisterRequest {
            component: Some(ComponentInfo {
                id: "over".into(),
                r#type: ComponentType::Processor as i32,
                metadata: over,
                ..Default::default()
            }),
            component_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().starts_with("component.metadata:"), "{err}");
    assert!(err.message().contains("64 KiB"), "{err}");

    let too_many: HashMap<_, _> = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    let err = c.v0.register(service("many", too_many)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("limit of 64"), "{err}");

    let long_id = "s".repeat(MAX_ID_BYTES + 1);
    let err =
        c.v0.register(service(&long_id, HashMap::new()))
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().starts_with("service_id:"), "{err}");
    assert!(err.message().contains("256 bytes"), "{err}");

    // Nothing refused was kept, and the registry still serves a normal registration.
    for id in ["huge", "over", "many", long_id.as_str()] {
        assert!(!server.registry.is_registered(id), "{id} was registered");
    }
    let fits = HashMap::from([("name".to_string(), "x".repeat(1024))]);
    c.v0.register(service("fits", fits)).await.unwrap();
    assert!(server.registry.is_registered("fits"));
    server.stop().await;
}

#[tokio::test]
async fn a_run_with_a_2_mib_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(RegistryConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let mut c = client(&server.operator_endpoint()).await;

    let err =
        c.v0.create_pipeline_run(run("two-mib", config_of(2 << 20)))
            .await
            .unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::InvalidArgument),
        "{err}"
    );
    let err =
        c.v0.create_pipeline_run(run("one-over", config_of(MAX_CONFIG_YAML_BYTES + 1)))
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().starts_with("config_yaml:"), "{err}");
    assert!(err.message().contains("1 MiB"), "{err}");

    let runs =
        c.v0.list_pipeline_runs(ListPipelineRunsRequest::default())
            .await
            .unwrap()
            .into_inner();
    assert!(runs.runs.is_empty(), "a refused run was stored");
    c.v0.create_pipeline_run(run("at-limit", config_of(MAX_CONFIG_YAML_BYTES)))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn pipelines_list_still_works_after_many_runs_with_the_largest_allowed_config() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(RegistryConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    let mut c = client(&server.operator_endpoint()).await;
    let runs = 12;
    for i in 0..runs {
        c.v0.create_pipeline_run(run(
            &format!("run-{i:02}"),
            config_of(MAX_CONFIG_YAML_BYTES),
        ))
        .await
        .unwrap();
    }

    // 12 MiB of runs do not fit in one answer: the newest come back, flagged as truncated.
    let answer =
        c.v0.list_pipeline_runs(ListPipelineRunsRequest {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.truncated);
    assert!(!answer.runs.is_empty() && answer.runs.len() < runs);
    assert_eq!(answer.runs[0].run_id, format!("run-{:02}", runs - 1));

    let endpoint = server.endpoint();
    let run_cli = |args: &[&str]| {
        let endpoint = endpoint.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_flowctl"))
                .args(&args)
                .args(["--endpoint", &endpoint])
                .env_remove("FLOWCTL_ENDPOINT")
                .output()
                .unwrap()
        })
    };
    for args in [
        &["pipelines", "list"][..],
        &["pipelines", "runs", "big", "--limit", "50"],
    ] {
        let out = run_cli(args).await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
        assert!(stdout.contains("big"), "{args:?}: {stdout}");
        assert!(stderr.contains("more runs exist"), "{args:?}: {stderr}");
    }
    server.stop().await;
}

#[tokio::test]
async fn active_runs_past_the_limit_are_refused_until_one_ends() {
    use flowctl::registry::limits::MAX_ACTIVE_RUNS;
    use flowctl_proto::flowctl::{RunStatus, UpdatePipelineRunRequest};
    let server = start(RegistryConfig::default()).await;
    let mut c = client(&server.operator_endpoint()).await;
    for i in 0..MAX_ACTIVE_RUNS {
        c.v0.create_pipeline_run(run(&format!("r{i}"), String::new()))
            .await
            .unwrap();
    }
    let err =
        c.v0.create_pipeline_run(run("one-more", String::new()))
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("256 runs are active"), "{err}");
    c.v0.update_pipeline_run(UpdatePipelineRunRequest {
        run_id: "r0".into(),
        status: RunStatus::Completed as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    c.v0.create_pipeline_run(run("one-more", String::new()))
        .await
        .unwrap();
    server.stop().await;
}
