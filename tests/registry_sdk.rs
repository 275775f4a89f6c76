//! The component SDK against a real registry, and without one.

mod registry_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowctl::registry::{Registry, RegistryConfig, ServerOptions};
use flowctl_sdk::{Backoff, Component, Config, Health, Metrics, ServiceType};
use registry_support::{eventually, serve, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sdk_config(endpoint: &str, component_id: &str) -> Config {
    let vars = [
        ("TTP_PROCESSOR_ENABLE_FLOWCTL", "true".to_string()),
        ("FLOWCTL_ENDPOINT", endpoint.to_string()),
        ("FLOWCTL_COMPONENT_ID", component_id.to_string()),
        ("FLOWCTL_HEARTBEAT_INTERVAL", "50ms".to_string()),
        ("HEALTH_PORT", "0".to_string()),
    ];
    Config::from_lookup("TTP_PROCESSOR", |k| {
        vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    })
    .unwrap()
}

fn fast_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
    }
}

/// A plain HTTP/1.0 GET: (status code, body).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let code = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn sdk_registers_heartbeats_metrics_and_unregisters_on_shutdown() {
    let server = start(RegistryConfig::default()).await;
    let processed = Arc::new(AtomicU64::new(0));
    let counter = processed.clone();
    let handle = Component::new(
        sdk_config(&server.endpoint(), "ttp"),
        ServiceType::Processor,
    )
    .with_event_types(
        &["raw_ledger_service.RawLedger"],
        &["token_transfer.TokenTransferEvent"],
    )
    .with_metrics(move || {
        Metrics::from([(
            "total_processed".to_string(),
            counter.load(Ordering::Relaxed) as f64,
        )])
    })
    .with_backoff(fast_backoff())
    .start()
    .await
    .unwrap();
    processed.store(17, Ordering::Relaxed);
    let registry = server.registry.clone();
    assert!(
        eventually(Duration::from_secs(5), || {
            registry
                .status("ttp")
                .and_then(|s| s.metric("total_processed"))
                == Some(17.0)
        })
        .await,
        "heartbeats carry the provider's metrics"
    );
    let status = registry.status("ttp").unwrap();
    assert_eq!(
        status.service_type,
        flowctl_proto::flowctl::ServiceType::Processor
    );
    assert_eq!(
        status.info.output_event_types,
        ["token_transfer.TokenTransferEvent"]
    );
    let health_addr = handle.health_addr().unwrap();
    assert_eq!(status.info.endpoint, format!("http://{health_addr}/health"));
    assert_eq!(handle.service_id().as_deref(), Some("ttp"));

    let (code, body) = http_get(health_addr, "/health").await;
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "healthy");
    assert_eq!(json["registered"], true);
    assert_eq!(json["metrics"]["total_processed"], 17.0);

    handle.shutdown().await;
    assert!(
        !registry.is_registered("ttp"),
        "graceful shutdown unregisters"
    );
    server.stop().await;
}

#[tokio::test]
async fn sdk_registers_again_after_the_registry_restarts() {
    let server = start(RegistryConfig::default()).await;
    let addr = server.addr;
    let handle = Component::new(sdk_config(&server.endpoint(), "sink-1"), ServiceType::Sink)
        .with_backoff(fast_backoff())
        .start()
        .await
        .unwrap();
    let first = server.registry.clone();
    assert!(eventually(Duration::from_secs(5), || first.is_registered("sink-1")).await);
    server.stop().await;

    // A new registry on the same address knows nothing: the next heartbeat gets NOT_FOUND.
    let fresh = Registry::open(RegistryConfig::default()).unwrap();
    let server = serve(
        fresh.clone(),
        None,
        ServerOptions {
            listen: Some(addr),
            ..Default::default()
        },
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || fresh.is_registered("sink-1")).await,
        "the component registered again with the restarted registry"
    );
    // Forgotten while running (e.g. unregistered by mistake): it registers again too.
    fresh.unregister("sink-1");
    assert!(eventually(Duration::from_secs(5), || fresh.is_registered("sink-1")).await);
    handle.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn sdk_keeps_serving_without_a_registry_and_registers_once_one_appears() {
    let port = closed_port();
    let endpoint = format!("127.0.0.1:{port}");
    let began = Instant::now();
    let handle = Component::new(sdk_config(&endpoint, "lonely"), ServiceType::Source)
        .with_metrics(|| Metrics::from([("last_processed_ledger".to_string(), 501.0)]))
        .with_backoff(fast_backoff())
        .start()
        .await
        .unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "start does not wait for the control plane"
    );
    let addr = handle.health_addr().unwrap();
    assert!(
        addr.ip().is_loopback(),
        "health endpoints bind loopback by default"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, body) = http_get(addr, "/health").await;
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["registered"], false);
    assert!(json["uptime_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(http_get(addr, "/live").await.0, 200);
    assert_eq!(http_get(addr, "/ready").await.0, 503);
    handle.set_ready(true);
    assert_eq!(http_get(addr, "/ready").await.0, 200);
    handle.set_health(Health::Unhealthy);
    assert_eq!(http_get(addr, "/health").await.0, 503);
    handle.set_health(Health::Degraded);
    let (code, body) = http_get(addr, "/health").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"degraded\""), "{body}");
    let (code, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("# TYPE ttp_processor_last_processed_ledger gauge"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ttp_processor_last_processed_ledger 501"),
        "{metrics}"
    );
    assert!(metrics.contains("ttp_processor_ready 1"), "{metrics}");
    assert!(
        metrics.contains("ttp_processor_flowctl_registered 0"),
        "{metrics}"
    );

    // The registry comes up late: the component registers without being restarted.
    let registry = Registry::open(RegistryConfig::default()).unwrap();
    let listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let server = serve(
        registry.clone(),
        None,
        ServerOptions {
            listen,
            ..Default::default()
        },
    )
    .await;
    assert!(eventually(Duration::from_secs(5), || registry.is_registered("lonely")).await);
    handle.shutdown().await;
    server.stop().await;
}

#[tokio::test]
async fn sdk_disabled_serves_http_and_never_registers() {
    let server = start(RegistryConfig::default()).await;
    let vars = [
        ("FLOWCTL_ENDPOINT", server.endpoint()),
        ("HEALTH_PORT", "0".to_string()),
    ];
    let config = Config::from_lookup("", |k| {
        vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    assert!(!config.enabled);
    let handle = Component::new(config, ServiceType::Sink)
        .start()
        .await
        .unwrap();
    assert_eq!(
        http_get(handle.health_addr().unwrap(), "/live").await.0,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.registry.is_empty());
    handle.shutdown().await;
    server.stop().await;
}
