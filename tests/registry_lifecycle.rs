//! A component's life in the registry, over real gRPC: register, heartbeat, list through both
//! APIs, TTL expiry, recovery, unregister; NOT_FOUND for an unknown id; runs across restarts.

mod registry_support;

use std::collections::HashMap;
use std::time::Duration;

use flowctl::registry::{HealthStatus, Registry, RegistryConfig, RegistryEvent, ServerOptions};
use flowctl_proto::flowctl::v1::{
    ComponentInfo, ComponentStatusRequest, ComponentType, DiscoveryRequest, HeartbeatRequest,
    ListComponentsRequest, RegisterRequest, UnregisterRequest,
};
use flowctl_proto::flowctl::{
    CreatePipelineRunRequest, GetPipelineRunRequest, ListPipelineRunsRequest, RunMetrics,
    RunStatus, ServiceHeartbeat, ServiceInfo, ServiceType, StopPipelineRunRequest,
    UpdatePipelineRunRequest,
};
use registry_support::{client, eventually, serve, start};
use tonic::Code;

fn fast() -> RegistryConfig {
    RegistryConfig {
        heartbeat_interval: Duration::from_millis(100),
        ttl: Some(Duration::from_secs(1)),
        ..Default::default()
    }
}

fn processor_info(component_id: &str) -> ServiceInfo {
    ServiceInfo {
        service_id: String::new(),
        service_type: ServiceType::Processor as i32,
        input_event_types: vec!["raw_ledger_service.RawLedger".into()],
        output_event_types: vec!["token_transfer.TokenTransferEvent".into()],
        health_endpoint: "http://127.0.0.1:8088/health".into(),
        max_inflight: 100,
        metadata: HashMap::from([("network".into(), "testnet".into())]),
        component_id: component_id.into(),
    }
}

fn v0_heartbeat(id: &str, processed: f64) -> ServiceHeartbeat {
    ServiceHeartbeat {
        service_id: id.into(),
        timestamp: None,
        metrics: HashMap::from([("total_processed".into(), processed)]),
    }
}

#[tokio::test]
async fn register_heartbeat_list_expire_recover_unregister() {
    let server = start(fast()).await;
    let mut c = client(&server.endpoint()).await;
    let mut events = server.registry.subscribe();

    // Register through flowctl.ControlPlane, as the Go components do.
    let ack =
        c.v0.register(processor_info("ttp-processor"))
            .await
            .unwrap()
            .into_inner();
    assert_eq!(
        ack.service_id, "ttp-processor",
        "the component id is the service id"
    );
    assert_eq!(ack.topic_names, ["token_transfer.TokenTransferEvent"]);
    c.v0.heartbeat(v0_heartbeat("ttp-processor", 42.0))
        .await
        .unwrap();

    // Register a sink through flowctl.v1 with a reported status.
    let response =
        c.v1.register_component(RegisterRequest {
            component: Some(ComponentInfo {
                name: "console sink".into(),
                r#type: ComponentType::Consumer as i32,
                input_event_types: vec!["token_transfer.TokenTransferEvent".into()],
                ..Default::default()
            }),
            component_id: "sink".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.service_id, "sink");
    c.v1.heartbeat(HeartbeatRequest {
        service_id: "sink".into(),
        status: HealthStatus::Degraded as i32,
        metrics: HashMap::from([("events_processed".into(), "7".into())]),
    })
    .await
    .unwrap();

    // Both APIs list both components with full status.
    let services = c.v0.list_services(()).await.unwrap().into_inner().services;
    assert_eq!(services.len(), 2);
    let p = services
        .iter()
        .find(|s| s.service_id == "ttp-processor")
        .unwrap();
    assert!(p.is_healthy);
    assert_eq!(p.component_id, "ttp-processor");
    assert_eq!(p.service_type, ServiceType::Processor as i32);
    assert_eq!(p.metrics["total_processed"], 42.0);
    assert!(p.last_heartbeat.is_some());
    let sink = services.iter().find(|s| s.service_id == "sink").unwrap();
    assert!(sink.is_healthy, "degraded still serves on the boolean API");
    assert_eq!(sink.service_type, ServiceType::Sink as i32);
    assert_eq!(sink.metrics["events_processed"], 7.0);

    let listed =
        c.v1.list_components(ListComponentsRequest {
            type_filter: 0,
            include_unhealthy: true,
        })
        .await
        .unwrap()
        .into_inner()
        .components;
    assert_eq!(listed.len(), 2);
    let status_of = |id: &str| {
        listed
            .iter()
            .find(|s| s.component.as_ref().unwrap().id == id)
            .unwrap()
            .status
    };
    assert_eq!(status_of("ttp-processor"), HealthStatus::Healthy as i32);
    assert_eq!(status_of("sink"), HealthStatus::Degraded as i32);
    let processor =
        c.v1.get_component_status(ComponentStatusRequest {
            service_id: "ttp-processor".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(processor.metrics["total_processed"], "42");
    assert!(processor.registered_at.is_some());
    assert_eq!(
        processor.component.unwrap().endpoint,
        "http://127.0.0.1:8088/health"
    );

    // A v1 heartbeat with UNKNOWN keeps the sink's own DEGRADED.
    c.v1.heartbeat(HeartbeatRequest {
        service_id: "sink".into(),
        status: 0,
        metrics: HashMap::new(),
    })
    .await
    .unwrap();
    assert_eq!(
        server.registry.status("sink").unwrap().health,
        HealthStatus::Degraded
    );

    // Silence past the TTL: unhealthy on both APIs, and the change is announced.
    assert!(
        eventually(Duration::from_secs(5), || {
            server.registry.status("ttp-processor").unwrap().health == HealthStatus::Unhealthy
        })
        .await
    );
    let v0_status =
        c.v0.get_service_status(processor_info("ttp-processor"))
            .await
            .unwrap()
            .into_inner();
    assert!(!v0_status.is_healthy);
    let healthy_only =
        c.v1.list_components(ListComponentsRequest {
            type_filter: 0,
            include_unhealthy: false,
        })
        .await
        .unwrap()
        .into_inner()
        .components;
    assert!(healthy_only
        .iter()
        .all(|s| s.component.as_ref().unwrap().id != "ttp-processor"));
    // The sweeper announces the expiry within a quarter of the TTL.
    let saw_expiry = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match events.recv().await {
                Ok(RegistryEvent::HealthChanged {
                    service_id, health, ..
                }) if service_id == "ttp-processor" && health == HealthStatus::Unhealthy => {
                    return true
                }
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(saw_expiry, "expiry is announced to subscribers");

    // The next heartbeat brings it back.
    c.v0.heartbeat(v0_heartbeat("ttp-processor", 43.0))
        .await
        .unwrap();
    let back =
        c.v0.get_service_status(processor_info("ttp-processor"))
            .await
            .unwrap()
            .into_inner();
    assert!(back.is_healthy);
    assert_eq!(back.metrics["total_processed"], 43.0);

    // Unregister: gone from both lists; its heartbeats now get NOT_FOUND.
    c.v1.unregister_component(UnregisterRequest {
        service_id: "ttp-processor".into(),
    })
    .await
    .unwrap();
    assert!(!server.registry.is_registered("ttp-processor"));
    let services = c.v0.list_services(()).await.unwrap().into_inner().services;
    assert_eq!(
        services
            .iter()
            .map(|s| s.service_id.as_str())
            .collect::<Vec<_>>(),
        ["sink"]
    );
    let err =
        c.v0.heartbeat(v0_heartbeat("ttp-processor", 44.0))
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn heartbeat_for_unknown_id_is_not_found_and_reregistering_recovers() {
    let server = start(fast()).await;
    let mut c = client(&server.endpoint()).await;
    // The Go ttp-processor invents an id when Register fails and heartbeats anyway.
    let err =
        c.v0.heartbeat(v0_heartbeat("processor-invented", 1.0))
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("register again"),
        "{}",
        err.message()
    );
    let err =
        c.v1.heartbeat(HeartbeatRequest {
            service_id: "nope".into(),
            status: 2,
            metrics: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err =
        c.v0.get_service_status(processor_info("nope"))
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // The registry is still fine, and re-registering makes heartbeats work.
    let ack =
        c.v0.register(processor_info(""))
            .await
            .unwrap()
            .into_inner();
    assert!(
        ack.service_id.starts_with("processor-"),
        "{}",
        ack.service_id
    );
    c.v0.heartbeat(v0_heartbeat(&ack.service_id, 1.0))
        .await
        .unwrap();
    assert!(server
        .registry
        .status(&ack.service_id)
        .unwrap()
        .is_healthy());
    server.stop().await;
}

#[tokio::test]
async fn discovery_filters_by_type_event_types_and_metadata() {
    let server = start(RegistryConfig::default()).await;
    let mut c = client(&server.endpoint()).await;
    c.v0.register(processor_info("proc")).await.unwrap();
    let mut source = processor_info("src");
    source.service_type = ServiceType::Source as i32;
    source.output_event_types = vec!["raw_ledger_service.RawLedger".into()];
    source.metadata = HashMap::from([("network".into(), "pubnet".into())]);
    c.v0.register(source).await.unwrap();
    let ids = |r: flowctl_proto::flowctl::v1::DiscoveryResponse| {
        let mut ids: Vec<String> = r.components.into_iter().map(|c| c.id).collect();
        ids.sort();
        ids
    };
    let by_event = DiscoveryRequest {
        r#type: 0,
        event_types: vec!["token_transfer.TokenTransferEvent".into()],
        metadata_filters: HashMap::new(),
    };
    assert_eq!(
        ids(c
            .v1
            .discover_components(by_event)
            .await
            .unwrap()
            .into_inner()),
        ["proc"]
    );
    let by_type = DiscoveryRequest {
        r#type: ComponentType::Source as i32,
        ..Default::default()
    };
    assert_eq!(
        ids(c
            .v1
            .discover_components(by_type)
            .await
            .unwrap()
            .into_inner()),
        ["src"]
    );
    let by_meta = DiscoveryRequest {
        metadata_filters: HashMap::from([("network".into(), "testnet".into())]),
        ..Default::default()
    };
    assert_eq!(
        ids(c
            .v1
            .discover_components(by_meta)
            .await
            .unwrap()
            .into_inner()),
        ["proc"]
    );
    server.stop().await;
}

#[tokio::test]
async fn runs_persist_across_a_registry_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || RegistryConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };

    let server = start(config()).await;
    let mut c = client(&server.operator_endpoint()).await;
    let finished =
        c.v0.create_pipeline_run(CreatePipelineRunRequest {
            run_id: String::new(),
            pipeline_name: "ttp".into(),
            config_yaml: "apiVersion: flowctl/v1\nkind: Pipeline\n".into(),
            component_ids: vec!["source".into(), "sink".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(finished.status(), RunStatus::Starting);
    c.v0.update_pipeline_run(UpdatePipelineRunRequest {
        run_id: finished.run_id.clone(),
        status: RunStatus::Failed as i32,
        metrics: Some(RunMetrics {
            events_processed: 99,
            ..Default::default()
        }),
        error: "sink: connection refused".into(),
    })
    .await
    .unwrap();
    let running =
        c.v0.create_pipeline_run(CreatePipelineRunRequest {
            run_id: "run-still-going".into(),
            pipeline_name: "ttp".into(),
            config_yaml: String::new(),
            component_ids: vec!["sink".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    c.v0.update_pipeline_run(UpdatePipelineRunRequest {
        run_id: running.run_id.clone(),
        status: RunStatus::Running as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    server.stop().await;
    drop(c);

    let server = start(config()).await;
    let mut c = client(&server.operator_endpoint()).await;
    let old =
        c.v0.get_pipeline_run(GetPipelineRunRequest {
            run_id: finished.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.status(), RunStatus::Failed);
    assert_eq!(old.error, "sink: connection refused");
    assert_eq!(old.metrics.unwrap().events_processed, 99);
    assert_eq!(old.config_yaml, "apiVersion: flowctl/v1\nkind: Pipeline\n");
    assert!(old.end_time.is_some());
    let runs =
        c.v0.list_pipeline_runs(ListPipelineRunsRequest {
            pipeline_name: "ttp".into(),
            status: 0,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(
        runs.iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(),
        ["run-still-going", finished.run_id.as_str()],
        "newest first"
    );
    // The run left running can still be finished by its remote creator after the restart.
    let done =
        c.v0.update_pipeline_run(UpdatePipelineRunRequest {
            run_id: "run-still".into(),
            status: RunStatus::Completed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status(), RunStatus::Completed);
    let err =
        c.v0.create_pipeline_run(CreatePipelineRunRequest {
            run_id: "run-still-going".into(),
            pipeline_name: "ttp".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    server.stop().await;
}

#[tokio::test]
async fn stop_pipeline_run_asks_the_in_process_owner() {
    let registry = Registry::open(RegistryConfig::default()).unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let server = serve(
        registry.clone(),
        Some(runtime.path()),
        ServerOptions::default(),
    )
    .await;
    let (owner, mut requests) = tokio::sync::mpsc::channel(1);
    let run = registry
        .create_run(flowctl::registry::NewRun {
            pipeline_name: "ttp".into(),
            owner: Some(owner),
            ..Default::default()
        })
        .unwrap();
    let supervisor = registry.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            supervisor
                .end_run(
                    &request.run_id,
                    RunStatus::Stopped,
                    Some("stopped by request".into()),
                )
                .unwrap();
            let _ = request.reply.send(Ok(()));
        }
    });
    let mut c = client(&server.operator_endpoint()).await;
    let stopped =
        c.v0.stop_pipeline_run(StopPipelineRunRequest {
            run_id: run.run_id[..6].to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.status(), RunStatus::Stopped);
    assert_eq!(stopped.error, "stopped by request");
    let again =
        c.v0.stop_pipeline_run(StopPipelineRunRequest {
            run_id: run.run_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    server.stop().await;
}

#[tokio::test]
async fn unix_socket_serves_the_same_registry() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(RegistryConfig::default()).unwrap();
    let server = serve(registry, Some(dir.path()), ServerOptions::default()).await;
    let socket = server.socket.clone().unwrap();
    let mut over_unix = client(&format!("unix:{}", socket.display())).await;
    over_unix
        .v0
        .register(processor_info("via-unix"))
        .await
        .unwrap();
    let mut over_tcp = client(&server.endpoint()).await;
    let services = over_tcp
        .v0
        .list_services(())
        .await
        .unwrap()
        .into_inner()
        .services;
    assert_eq!(services[0].service_id, "via-unix");
    server.stop().await;
    assert!(!socket.exists(), "the socket file is removed on shutdown");
}

#[tokio::test]
async fn grpc_health_service_reports_serving() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    let server = start(RegistryConfig::default()).await;
    let c = client(&server.endpoint()).await;
    let mut health = HealthClient::new(c.channel.clone());
    for service in ["", "flowctl.ControlPlane", "flowctl.v1.ControlPlaneService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    server.stop().await;
}
