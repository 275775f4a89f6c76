//! The ttp-processor component against a real in-test ledger source over gRPC.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use flowctl_components::processor::{config::ComponentConfig, server::Component};
use support::{
    assert_same, collect_to_end, events, golden_between, lighthorizon, shared, FixtureSource,
    RunningSource, TESTNET,
};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};

async fn start_component(
    upstream: SocketAddr,
) -> (
    SocketAddr,
    Arc<flowctl_components::processor::metrics::Metrics>,
) {
    start_component_with(upstream, None).await
}

async fn start_component_with(
    upstream: SocketAddr,
    dead_letters: Option<flowctl_sdk::DeadLetters>,
) -> (
    SocketAddr,
    Arc<flowctl_components::processor::metrics::Metrics>,
) {
    let vars = [
        ("PORT", "0".to_string()),
        ("SOURCE_SERVICE_ADDRESS", upstream.to_string()),
        ("NETWORK_PASSPHRASE", TESTNET.to_string()),
    ];
    let config =
        ComponentConfig::from_env(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
            .unwrap();
    let component = Component::bind(&config, dead_letters).await.unwrap();
    let addr = component.local_addr();
    let metrics = component.metrics();
    tokio::spawn(component.serve(flowctl_components::shutdown::Shutdown::never()));
    (addr, metrics)
}

async fn health(addr: SocketAddr) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = HealthClient::new(channel);
    let r = c
        .check(HealthCheckRequest {
            service: "token_transfer_service.EventService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(r.status).unwrap()
}

async fn wait_for_health(addr: SocketAddr, want: ServingStatus) {
    for _ in 0..100 {
        if health(addr).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("health never became {want:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_streams_give_the_golden_events_and_end_after_end_ledger() {
    let Some(root) = shared() else { return };
    let (ledgers, golden) = lighthorizon(&root);
    let source = FixtureSource::new(Arc::new(ledgers));
    let opened = source.streams_opened.clone();
    let (_running, upstream) = RunningSource::start(source, "127.0.0.1:0".parse().unwrap());
    let (addr, metrics) = start_component(upstream).await;

    // Two consumers at once, each with its own upstream stream.
    let whole = tokio::spawn(collect_to_end(events(addr, 1410048, 1410367).await));
    let part = tokio::spawn(collect_to_end(events(addr, 1410100, 1410110).await));
    assert_same(&whole.await.unwrap(), &golden);
    assert_same(
        &part.await.unwrap(),
        &golden_between(&golden, 1410100, 1410110),
    );
    assert!(
        opened.load(Ordering::SeqCst) >= 2,
        "each consumer has its own upstream stream"
    );

    let m: std::collections::HashMap<_, _> = metrics.snapshot().into_iter().collect();
    assert_eq!(m["success_count"], 331.0);
    assert_eq!(m["error_count"], 0.0);
    assert_eq!(m["last_processed_ledger"], 1410367.0);
    assert_eq!(
        m["total_events_emitted"],
        (golden.len() + golden_between(&golden, 1410100, 1410110).len()) as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_restart_resumes_from_the_next_ledger_without_gap_or_duplicate() {
    let Some(root) = shared() else { return };
    let (ledgers, golden) = lighthorizon(&root);
    let ledgers = Arc::new(ledgers);
    let mut first = FixtureSource::new(ledgers.clone());
    first.pause_after = Some(1410200);
    let last_sent = first.last_sent.clone();
    let (running, upstream) = RunningSource::start(first, "127.0.0.1:0".parse().unwrap());
    let (addr, _) = start_component(upstream).await;
    wait_for_health(addr, ServingStatus::Serving).await;

    let stream = events(addr, 1410048, 1410367).await;
    let consumer = tokio::spawn(collect_to_end(stream));
    for _ in 0..400 {
        if last_sent.load(Ordering::SeqCst) == 1410200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        last_sent.load(Ordering::SeqCst),
        1410200,
        "the source reached its pause"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Kill the source mid-stream: the component reports not ready while it is gone.
    running.kill();
    wait_for_health(addr, ServingStatus::NotServing).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The new source repeats some ledgers before the requested one; they must be dropped.
    let mut second = FixtureSource::new(ledgers);
    second.overlap = 5;
    let starts = second.starts.clone();
    let (_running, _) = RunningSource::start(second, upstream);
    wait_for_health(addr, ServingStatus::Serving).await;

    assert_same(&consumer.await.unwrap(), &golden);
    assert_eq!(
        starts.lock().unwrap().first(),
        Some(&1410201),
        "resumed from the ledger after the last one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_skips_a_ledger_is_asked_again_from_the_missing_one_and_no_event_is_lost() {
    let Some(root) = shared() else { return };
    let (ledgers, golden) = lighthorizon(&root);
    let mut source = FixtureSource::new(Arc::new(ledgers));
    source.skip_once = Some(1410100);
    let starts = source.starts.clone();
    let (_running, upstream) = RunningSource::start(source, "127.0.0.1:0".parse().unwrap());
    let (addr, _) = start_component(upstream).await;
    wait_for_health(addr, ServingStatus::Serving).await;

    let stream = events(addr, 1410048, 1410367).await;
    assert_same(&collect_to_end(stream).await, &golden);
    assert_eq!(
        starts.lock().unwrap()[..],
        [1410048, 1410100],
        "after the gap the processor asked for the missing ledger"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_until_the_source_is_reachable() {
    let Some(root) = shared() else { return };
    let (ledgers, _) = lighthorizon(&root);
    // Reserve a port for the source, then leave it closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (addr, _) = start_component(port).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(health(addr).await, ServingStatus::NotServing);
    let (_running, _) = RunningSource::start(FixtureSource::new(Arc::new(ledgers)), port);
    wait_for_health(addr, ServingStatus::Serving).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_cannot_be_processed_is_counted_and_the_stream_goes_on() {
    let Some(root) = shared() else { return };
    let (mut ledgers, golden) = lighthorizon(&root);
    ledgers.truncate(10);
    // Ledger 1410052 arrives corrupted.
    ledgers[4].1.truncate(100);
    let (_running, upstream) = RunningSource::start(
        FixtureSource::new(Arc::new(ledgers)),
        "127.0.0.1:0".parse().unwrap(),
    );
    let (addr, metrics) = start_component(upstream).await;
    let ours = collect_to_end(events(addr, 1410048, 1410057).await).await;
    let want: Vec<_> = golden_between(&golden, 1410048, 1410057)
        .into_iter()
        .filter(|g| g["meta"]["ledgerSequence"] != 1410052)
        .collect();
    assert_same(&ours, &want);
    let m: std::collections::HashMap<_, _> = metrics.snapshot().into_iter().collect();
    assert_eq!(m["error_count"], 1.0);
    assert_eq!(m["success_count"], 9.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dead_letters_a_ledger_that_cannot_be_recorded_ends_the_stream_naming_it() {
    let Some(root) = shared() else { return };
    let (mut ledgers, golden) = lighthorizon(&root);
    ledgers.truncate(10);
    ledgers[4].1.truncate(100);
    let (_running, upstream) = RunningSource::start(
        FixtureSource::new(Arc::new(ledgers)),
        "127.0.0.1:0".parse().unwrap(),
    );
    // No control plane to record the letter in: the ledger must not be skipped silently.
    let config = flowctl_sdk::Config::from_lookup("", |k| {
        (k == "ENABLE_FLOWCTL").then(|| "false".to_string())
    })
    .unwrap();
    let letters = flowctl_sdk::DeadLetters::new(&config);
    let (addr, _metrics) = start_component_with(upstream, Some(letters.clone())).await;
    let mut stream = events(addr, 1410048, 1410057).await;
    let mut seen = Vec::new();
    let err = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match stream.message().await {
                Ok(Some(e)) => seen.push(e.meta.unwrap().ledger_sequence),
                Ok(None) => panic!("the stream ended cleanly past an unrecorded ledger"),
                Err(status) => break status,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err}");
    assert!(err.message().contains("ledger 1410052"), "{err}");
    assert!(
        err.message().contains("cannot record a dead letter"),
        "{err}"
    );
    // Everything before it came through.
    let before = golden_between(&golden, 1410048, 1410051).len();
    assert_eq!(seen.len(), before);
    assert!(seen.iter().all(|l| *l < 1410052));
    assert_eq!(letters.total(), 0);
}
