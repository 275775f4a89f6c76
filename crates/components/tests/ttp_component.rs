//! The ttp-processor component against a real in-test ledger source over gRPC.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowctl_components::processor::{config::ComponentConfig, server::Component};
use flowctl_proto::raw_ledger_service::raw_ledger_service_server::{
    RawLedgerService, RawLedgerServiceServer,
};
use flowctl_proto::raw_ledger_service::{
    GetLedgerRangeRequest, GetLedgerRangeResponse, RawLedger, StreamLedgersRequest,
};
use flowctl_proto::token_transfer_service::event_service_client::EventServiceClient;
use flowctl_proto::token_transfer_service::GetEventsRequest;
use stellar_xdr::{Limits, WriteXdr};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};

const TESTNET: &str = "Test SDF Network ; September 2015";

fn shared() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = manifest
        .ancestors()
        .skip(2)
        .map(|a| a.join("../shared/testdata/stellar"))
        .find(|p| p.is_dir());
    if found.is_none() {
        eprintln!("skipping: Stellar fixtures not found in ../shared/testdata/stellar");
    }
    found
}

/// The 320 consecutive lighthorizon ledgers as raw XDR, and their golden events.
fn lighthorizon(root: &Path) -> (Vec<(u32, Vec<u8>)>, Vec<serde_json::Value>) {
    let dir = root.join("testnet/lighthorizon-1410048-1410367/ledgers");
    let mut ledgers = Vec::new();
    for seq in 1410048..=1410367u32 {
        for l in stellar_ledgers::open(&dir.join(seq.to_string()), Default::default()).unwrap() {
            ledgers.push((seq, l.unwrap().to_xdr(Limits::none()).unwrap()));
        }
    }
    let golden = std::fs::read_to_string(
        root.join("golden/testnet-lighthorizon-1410048-1410367.ttp-events.jsonl"),
    )
    .unwrap()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    (ledgers, golden)
}

/// A `RawLedgerService` over fixture ledgers, like a live source: it streams from the
/// requested ledger on, optionally stops sending after `pause_after` (staying open), and
/// optionally repeats `overlap` ledgers before the requested start.
#[derive(Clone)]
struct FixtureSource {
    ledgers: Arc<Vec<(u32, Vec<u8>)>>,
    pause_after: Option<u32>,
    overlap: u32,
    streams_opened: Arc<AtomicU32>,
    /// The start ledger of every stream request, in order.
    starts: Arc<std::sync::Mutex<Vec<u32>>>,
    last_sent: Arc<AtomicU32>,
}

impl FixtureSource {
    fn new(ledgers: Arc<Vec<(u32, Vec<u8>)>>) -> Self {
        FixtureSource {
            ledgers,
            pause_after: None,
            overlap: 0,
            streams_opened: Arc::new(AtomicU32::new(0)),
            starts: Default::default(),
            last_sent: Arc::new(AtomicU32::new(0)),
        }
    }
}

type LedgerStream = Pin<Box<dyn Stream<Item = Result<RawLedger, Status>> + Send>>;

#[tonic::async_trait]
impl RawLedgerService for FixtureSource {
    type StreamRawLedgersStream = LedgerStream;

    async fn stream_raw_ledgers(
        &self,
        request: Request<StreamLedgersRequest>,
    ) -> Result<Response<LedgerStream>, Status> {
        self.streams_opened.fetch_add(1, Ordering::SeqCst);
        let start = request.into_inner().start_ledger;
        self.starts.lock().unwrap().push(start);
        let from = start.saturating_sub(self.overlap);
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let me = self.clone();
        tokio::spawn(async move {
            for (seq, xdr) in me.ledgers.iter() {
                if *seq < from {
                    continue;
                }
                let raw = RawLedger {
                    sequence: *seq,
                    ledger_close_meta_xdr: xdr.clone(),
                };
                if tx.send(Ok(raw)).await.is_err() {
                    return;
                }
                me.last_sent.store(*seq, Ordering::SeqCst);
                if me.pause_after == Some(*seq) {
                    break;
                }
            }
            // A live source waits for the next ledger rather than ending the stream.
            tx.closed().await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_ledger_range(
        &self,
        _: Request<GetLedgerRangeRequest>,
    ) -> Result<Response<GetLedgerRangeResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

/// A source running on its own runtime and thread, so that stopping it drops every
/// connection at once, as a killed process would.
struct RunningSource {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningSource {
    fn start(source: FixtureSource, addr: SocketAddr) -> (Self, SocketAddr) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
                bound_tx.send(listener.local_addr().unwrap()).unwrap();
                let server = tonic::transport::Server::builder()
                    .add_service(RawLedgerServiceServer::new(source))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
                tokio::select! {
                    _ = server => {}
                    _ = stopped => {}
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        let bound = bound_rx.recv().unwrap();
        (
            RunningSource {
                stop: Some(stop),
                thread: Some(thread),
            },
            bound,
        )
    }

    fn kill(mut self) {
        self.stop.take().map(|s| s.send(()));
        self.thread.take().map(|t| t.join());
    }
}

impl Drop for RunningSource {
    fn drop(&mut self) {
        self.stop.take().map(|s| s.send(()));
        self.thread.take().map(|t| t.join());
    }
}

async fn start_component(
    upstream: SocketAddr,
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
    let component = Component::bind(&config).await.unwrap();
    let addr = component.local_addr();
    let metrics = component.metrics();
    tokio::spawn(component.serve(std::future::pending()));
    (addr, metrics)
}

async fn events(
    addr: SocketAddr,
    start: u32,
    end: u32,
) -> tonic::Streaming<flowctl_proto::token_transfer::TokenTransferEvent> {
    let mut client = EventServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    client
        .get_ttp_events(GetEventsRequest {
            start_ledger: start,
            end_ledger: end,
        })
        .await
        .unwrap()
        .into_inner()
}

fn json(e: &flowctl_proto::token_transfer::TokenTransferEvent) -> serde_json::Value {
    serde_json::from_str(&stellar_ttp::to_json(e)).unwrap()
}

fn golden_between(golden: &[serde_json::Value], start: u32, end: u32) -> Vec<serde_json::Value> {
    golden
        .iter()
        .filter(|g| {
            let s = g["meta"]["ledgerSequence"].as_u64().unwrap() as u32;
            (start..=end).contains(&s)
        })
        .cloned()
        .collect()
}

async fn collect_to_end(
    mut stream: tonic::Streaming<flowctl_proto::token_transfer::TokenTransferEvent>,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let deadline = Duration::from_secs(60);
    tokio::time::timeout(deadline, async {
        while let Some(e) = stream.message().await.expect("the stream ends cleanly") {
            out.push(json(&e));
        }
    })
    .await
    .expect("a bounded stream ends by itself after end_ledger");
    out
}

fn assert_same(ours: &[serde_json::Value], golden: &[serde_json::Value]) {
    for (i, (o, g)) in ours.iter().zip(golden).enumerate() {
        assert_eq!(o, g, "event {i} differs");
    }
    assert_eq!(ours.len(), golden.len(), "event count");
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
