//! What the ttp-processor tests share: the fixtures and a real in-test ledger source.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowctl_proto::raw_ledger_service::raw_ledger_service_client::RawLedgerServiceClient;
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
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub const TESTNET: &str = "Test SDF Network ; September 2015";

/// A child process killed and reaped when the test ends, pass or fail.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `stellar-live-source` on a free port, with `env` in an otherwise empty environment (and
/// `RUST_LOG=warn`); a later entry of `env` wins over an earlier one.
pub fn live_source(env: &[(&str, &str)]) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stellar-live-source"));
    cmd.env_clear()
        .env("PORT", port.to_string())
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    (Proc(cmd.spawn().expect("start stellar-live-source")), port)
}

/// `ttp-processor` on a free port, reading the source on `source_port`, in an otherwise
/// empty environment (and `RUST_LOG=warn`).
pub fn ttp_processor(source_port: u16, env: &[(&str, &str)]) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ttp-processor"));
    cmd.env_clear()
        .env("PORT", port.to_string())
        .env("SOURCE_SERVICE_ADDRESS", format!("127.0.0.1:{source_port}"))
        .env("NETWORK_PASSPHRASE", stellar_synth::DEFAULT_PASSPHRASE)
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    (Proc(cmd.spawn().expect("start ttp-processor")), port)
}

/// `ttp-sink` reading the processor on `processor_port`, with `env` in an otherwise empty
/// environment (and `RUST_LOG=warn`).
pub fn ttp_sink(processor_port: u16, env: &[(&str, &str)]) -> Proc {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ttp-sink"));
    cmd.env_clear()
        .env("TTP_SERVICE_ADDRESS", format!("127.0.0.1:{processor_port}"))
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("start ttp-sink"))
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The exit status of `p` once it exits, within `timeout`; `None` if it is still running.
pub fn exit_within(p: &mut Proc, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            return Some(s);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A client of the source on `port`, once it listens (30 s at most).
pub async fn source_client(port: u16) -> RawLedgerServiceClient<Channel> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match RawLedgerServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            Ok(c) => return c,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("source never listened: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Every ledger of a bounded stream from `start` as (sequence, XDR), each within 30 s.
pub async fn stream_to_end(
    client: &mut RawLedgerServiceClient<Channel>,
    start: u32,
) -> Vec<(u32, Vec<u8>)> {
    let mut stream = client
        .stream_raw_ledgers(StreamLedgersRequest {
            start_ledger: start,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(l) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the stream ends after END_LEDGER")
        .unwrap()
    {
        got.push((l.sequence, l.ledger_close_meta_xdr.to_vec()));
    }
    got
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn shared() -> Option<PathBuf> {
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

/// The shared testnet data lake (Galexie layout), or `None` with a skip message when absent.
pub fn testnet_lake() -> Option<PathBuf> {
    let lake = shared()?.join("testnet/datastore");
    if lake.join(".config.json").is_file() {
        Some(lake)
    } else {
        eprintln!("skipped: {} is absent", lake.display());
        None
    }
}

/// The 320 consecutive lighthorizon ledgers as raw XDR, and their golden events.
pub fn lighthorizon(root: &Path) -> (Vec<(u32, Vec<u8>)>, Vec<serde_json::Value>) {
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
pub struct FixtureSource {
    pub ledgers: Arc<Vec<(u32, Vec<u8>)>>,
    pub pause_after: Option<u32>,
    pub overlap: u32,
    pub streams_opened: Arc<AtomicU32>,
    /// The start ledger of every stream request, in order.
    pub starts: Arc<std::sync::Mutex<Vec<u32>>>,
    pub last_sent: Arc<AtomicU32>,
    /// Leaves this ledger out of the first stream only: a source with a hole in its data.
    pub skip_once: Option<u32>,
}

impl FixtureSource {
    pub fn new(ledgers: Arc<Vec<(u32, Vec<u8>)>>) -> Self {
        FixtureSource {
            ledgers,
            pause_after: None,
            overlap: 0,
            streams_opened: Arc::new(AtomicU32::new(0)),
            starts: Default::default(),
            last_sent: Arc::new(AtomicU32::new(0)),
            skip_once: None,
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
        let first_stream = self.streams_opened.fetch_add(1, Ordering::SeqCst) == 0;
        let skip = self.skip_once.filter(|_| first_stream);
        let start = request.into_inner().start_ledger;
        self.starts.lock().unwrap().push(start);
        let from = start.saturating_sub(self.overlap);
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let me = self.clone();
        tokio::spawn(async move {
            for (seq, xdr) in me.ledgers.iter() {
                if *seq < from || Some(*seq) == skip {
                    continue;
                }
                let raw = RawLedger {
                    sequence: *seq,
                    ledger_close_meta_xdr: xdr.clone().into(),
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
pub struct RunningSource {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningSource {
    pub fn start(source: FixtureSource, addr: SocketAddr) -> (Self, SocketAddr) {
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

    pub fn kill(mut self) {
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

pub async fn events(
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

pub fn json(e: &flowctl_proto::token_transfer::TokenTransferEvent) -> serde_json::Value {
    serde_json::from_str(&stellar_ttp::to_json(e)).unwrap()
}

pub fn golden_between(
    golden: &[serde_json::Value],
    start: u32,
    end: u32,
) -> Vec<serde_json::Value> {
    golden
        .iter()
        .filter(|g| {
            let s = g["meta"]["ledgerSequence"].as_u64().unwrap() as u32;
            (start..=end).contains(&s)
        })
        .cloned()
        .collect()
}

pub async fn collect_to_end(
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

pub fn assert_same(ours: &[serde_json::Value], golden: &[serde_json::Value]) {
    for (i, (o, g)) in ours.iter().zip(golden).enumerate() {
        assert_eq!(o, g, "event {i} differs");
    }
    assert_eq!(ours.len(), golden.len(), "event count");
}

/// A bundled binary of this crate on a free port, in an otherwise empty environment (and
/// `RUST_LOG=warn`), listening when this returns. A port taken by another test between
/// asking and binding makes the component exit: it is started again on other ports.
pub fn component(binary: &str, env: &[(&str, &str)]) -> (Proc, u16) {
    for _ in 0..5 {
        let mut port = free_port();
        let mut cmd = std::process::Command::new(binary);
        cmd.env_clear()
            .env("PORT", port.to_string())
            .env("HEALTH_PORT", free_port().to_string())
            .env("RUST_LOG", "warn");
        for (k, v) in env {
            if *k == "PORT" {
                port = v.parse().expect("PORT is a number");
            }
            cmd.env(k, v);
        }
        let mut p = Proc(cmd.spawn().expect("start the component"));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if p.0.try_wait().unwrap().is_some() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (p, port);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("{binary} did not start listening in five attempts");
}
