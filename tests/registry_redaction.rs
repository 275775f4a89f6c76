//! Secrets in a run's pipeline file never leave the registry: every read over real gRPC, and
//! `flowctl pipelines get -o json`, shows them masked.

mod registry_support;

use std::time::Duration;

use flowctl::registry::RegistryConfig;
use flowctl_proto::flowctl::{
    CreatePipelineRunRequest, GetPipelineRunRequest, ListPipelineRunsRequest,
};
use registry_support::{client, start};

const FILE: &str = "apiVersion: flowctl/v1
kind: Pipeline
metadata: {name: ttp}
spec:
  sinks:
    - id: db
      command: ttp-sink
      config: {password: hunter2-inline, host: db.local}
      env:
        DATABASE_URL: postgres://ttp:hunter2-in-dsn@db.local:5432/ttp
        PGPASSWORD: hunter2-env
        AWS_SECRET_ACCESS_KEY: hunter2-aws
        SINK: postgres
";

#[tokio::test]
async fn pipeline_run_reads_show_no_password_of_the_pipeline_file() {
    let server = start(RegistryConfig::default()).await;
    let mut c = client(&server.operator_endpoint()).await;
    let created =
        c.v0.create_pipeline_run(CreatePipelineRunRequest {
            run_id: "r1".into(),
            pipeline_name: "ttp".into(),
            config_yaml: FILE.into(),
            component_ids: vec!["db".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got =
        c.v0.get_pipeline_run(GetPipelineRunRequest {
            run_id: "r1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let listed =
        c.v0.list_pipeline_runs(ListPipelineRunsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .runs;
    assert_eq!(listed.len(), 1);
    for shown in [
        &created.config_yaml,
        &got.config_yaml,
        &listed[0].config_yaml,
    ] {
        assert!(!shown.contains("hunter2"), "a secret was shown:\n{shown}");
        assert!(
            shown.contains("postgres://ttp:<redacted>@db.local:5432/ttp"),
            "{shown}"
        );
        assert!(shown.contains("PGPASSWORD: <redacted>"), "{shown}");
        assert!(
            shown.contains("password: <redacted>, host: db.local"),
            "{shown}"
        );
        assert!(shown.contains("SINK: postgres"), "{shown}");
    }

    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_flowctl"))
            .args(["pipelines", "get", "r1", "-o", "json", "--endpoint"])
            .arg(server.endpoint())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("<redacted>"), "{stdout}");
    assert!(!stdout.contains("hunter2"), "{stdout}");
    server.stop().await;
}
