//! Throughput of the bundled components, printed as plain figures:
//! - the synthetic source over gRPC (ledgers/s, MB/s), as fast as possible;
//! - the PostgreSQL sink: direct batched writes, a replay of them, and the whole `GetTTPEvents` → PostgreSQL
//!   path (events/s). The PostgreSQL part needs the server binaries (apt `postgresql`).
//!
//! - the processor's work in-process (decode + events, no I/O) on the ledgers the synthetic
//!   source generates, the reference `benches/e2e.sh` compares the whole pipeline with.
//!
//! Run: `cargo bench -p flowctl-components --bench throughput [-- source|postgres|inprocess
//! [LEDGERS [TXS_PER_LEDGER]]]` (everything by default).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowctl_components::processor::service::process_raw;
use flowctl_components::sink::driver::{Driver, Target};
use flowctl_components::sink::health::Readiness;
use flowctl_components::sink::postgres::PgSink;
use flowctl_components::sink::LedgerEvents;
use flowctl_components::source::metrics::SourceMetrics;
use flowctl_components::source::server::LedgerService;
use flowctl_components::source::{synthetic::Synthetic, Backend};
use flowctl_proto::asset::{asset::AssetType, Asset};
use flowctl_proto::raw_ledger_service::raw_ledger_service_client::RawLedgerServiceClient;
use flowctl_proto::raw_ledger_service::raw_ledger_service_server::RawLedgerServiceServer;
use flowctl_proto::raw_ledger_service::StreamLedgersRequest;
use flowctl_proto::token_transfer::token_transfer_event::Event;
use flowctl_proto::token_transfer::{EventMeta, Fee, TokenTransferEvent, Transfer};
use flowctl_proto::token_transfer_service::event_service_server::{
    EventService, EventServiceServer,
};
use flowctl_proto::token_transfer_service::GetEventsRequest;
use flowctl_testkit::postgres::{Durability, PgCluster};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

const LEDGERS: u32 = 100;
const EVENTS_PER_LEDGER: u32 = 1000;

fn main() {
    // `cargo bench` passes `--bench`; the rest are ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let what = args.first().map(String::as_str).unwrap_or("all");
    let number = |i: usize, default: u32| {
        args.get(i)
            .map(|a| a.parse().unwrap_or_else(|e| panic!("{a}: {e}")))
            .unwrap_or(default)
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        if matches!(what, "all" | "source") {
            source_bench().await;
        }
        if matches!(what, "all" | "postgres") {
            match PgCluster::start(Durability::Default) {
                Some(pg) => {
                    sink_direct(&pg).await;
                    sink_pipeline(&pg).await;
                }
                None => println!("postgres: skipped (no server binaries)"),
            }
        }
    });
    if matches!(what, "all" | "inprocess") {
        in_process(number(1, 2000), number(2, 50));
    }
}

/// The processor's per-ledger work (`process_raw`: decode the XDR, derive the events, build
/// their protobuf messages) on one thread, over the ledgers `stellar-live-source` generates
/// with `BACKEND=synthetic START_LEDGER=2 SYNTHETIC_TXS_PER_LEDGER=txs` (the same seed and
/// protocol defaults), generated before the clock starts.
fn in_process(ledgers: u32, txs: u32) {
    let mut gen = stellar_synth::Generator::new(stellar_synth::Config {
        txs_per_ledger: txs,
        ..Default::default()
    })
    .unwrap();
    let raw: Vec<Vec<u8>> = (0..ledgers).map(|_| gen.next_ledger_xdr()).collect();
    let processor = stellar_ttp::EventsProcessor::new(stellar_synth::DEFAULT_PASSPHRASE);
    let t0 = Instant::now();
    let mut events = 0usize;
    for xdr in &raw {
        events += process_raw(&processor, xdr).unwrap().len();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "in-process: {ledgers} ledgers, {events} events, {secs:.2} s: {:.0} ledgers/s, {:.0} events/s",
        f64::from(ledgers) / secs,
        events as f64 / secs
    );
}

async fn source_bench() {
    for (protocol, txs) in [(23, 50u32), (23, 200), (22, 50)] {
        let cfg = stellar_synth::Config {
            protocol_version: protocol,
            txs_per_ledger: txs,
            ..Default::default()
        };
        let backend = Arc::new(Backend::Synthetic(Synthetic::new(cfg, 0.0).unwrap()));
        let service = LedgerService::new(
            backend,
            2,
            None,
            Duration::from_millis(100),
            Arc::new(SourceMetrics::default()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RawLedgerServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut c = RawLedgerServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20);
        let mut s = c
            .stream_raw_ledgers(StreamLedgersRequest { start_ledger: 2 })
            .await
            .unwrap()
            .into_inner();
        let n = 2000 / (txs / 50);
        let t0 = Instant::now();
        let mut bytes = 0usize;
        for _ in 0..n {
            bytes += s
                .message()
                .await
                .unwrap()
                .unwrap()
                .ledger_close_meta_xdr
                .len();
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "synthetic source p{protocol} {txs} tx/ledger: {:.0} ledgers/s, {:.1} MB/s ({n} ledgers, {:.0} KB each)",
            f64::from(n) / secs,
            bytes as f64 / secs / 1e6,
            bytes as f64 / f64::from(n) / 1e3
        );
        server.abort();
    }
}

fn events(ledger: u32) -> Vec<TokenTransferEvent> {
    let native = Some(Asset {
        asset_type: Some(AssetType::Native(true)),
    });
    (0..EVENTS_PER_LEDGER)
        .map(|i| {
            let tx = i / 2 + 1;
            let meta = EventMeta {
                ledger_sequence: ledger,
                closed_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000 + i64::from(ledger) * 5,
                    nanos: 0,
                }),
                tx_hash: format!("{ledger:032x}{tx:032x}"),
                transaction_index: tx,
                operation_index: (i % 2 == 1).then_some(1),
                contract_address: "CDLZFC3SYJYDZT7K67VZ75HPJVIEUVNIXF47ZG2FB2RMQQVU2HHGCYSC".into(),
                to_muxed_info: None,
            };
            let from = "GDB6H4XQL3PJ6PKD754FTXCDD2L3HQPWZ4PL7HENIVFV2N7VFUTOE2DF".to_string();
            let event = if i % 2 == 0 {
                Event::Fee(Fee {
                    from,
                    asset: native.clone(),
                    amount: "100".into(),
                })
            } else {
                Event::Transfer(Transfer {
                    from,
                    to: "GA2ROVQ27NB346IIKYMWNLC7LNH7C6OT6CTMDSDDXEKMF64NJZSJN7UZ".into(),
                    asset: native.clone(),
                    amount: (1_000_000 + i).to_string(),
                })
            };
            TokenTransferEvent {
                meta: Some(meta),
                event: Some(event),
            }
        })
        .collect()
}

async fn sink_direct(pg: &PgCluster) {
    let mut sink = PgSink::new(&pg.url(), "bench-direct", Readiness::default());
    sink.checkpoint().await.unwrap();
    let batches: Vec<Vec<LedgerEvents>> = (1..=LEDGERS)
        .collect::<Vec<_>>()
        .chunks(5)
        .map(|c| {
            c.iter()
                .map(|l| LedgerEvents {
                    ledger: *l,
                    events: events(*l),
                })
                .collect()
        })
        .collect();
    let t0 = Instant::now();
    for b in &batches {
        sink.write(b, b.last().unwrap().ledger).await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = f64::from(LEDGERS * EVENTS_PER_LEDGER);
    println!(
        "postgres sink, direct batched writes (5,000 events a transaction): {:.0} events/s",
        n / secs
    );
    // A replay of what is stored: every row compared, none rewritten.
    let t0 = Instant::now();
    for b in &batches {
        sink.write(b, b.last().unwrap().ledger).await.unwrap();
    }
    println!(
        "postgres sink, replay of stored ledgers (rows compared, none rewritten): {:.0} events/s",
        n / t0.elapsed().as_secs_f64()
    );
    pg.query("TRUNCATE ttp_events")
        .expect("TRUNCATE ttp_events");
}

#[derive(Clone)]
struct Feed(Arc<Vec<Vec<TokenTransferEvent>>>);
type EventStream = Pin<Box<dyn Stream<Item = Result<TokenTransferEvent, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for Feed {
    type GetTTPEventsStream = EventStream;
    async fn get_ttp_events(
        &self,
        request: Request<GetEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = request.into_inner();
        let all = self.0.clone();
        let it = (r.start_ledger..=r.end_ledger)
            .flat_map(move |l| all[(l - 1) as usize].clone())
            .map(Ok);
        Ok(Response::new(Box::pin(tokio_stream::iter(it))))
    }
}

async fn sink_pipeline(pg: &PgCluster) {
    let feed = Feed(Arc::new((1..=LEDGERS).map(events).collect()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EventServiceServer::new(feed))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let readiness = Readiness::default();
    let driver = Driver {
        addr: addr.to_string(),
        start: 1,
        end: Some(LEDGERS),
        target: Target::Postgres(PgSink::new(&pg.url(), "bench-pipeline", readiness.clone())),
        readiness,
        metrics: Default::default(),
        flush_events: 5000,
        flush_interval: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        dead_letters: None,
    };
    let t0 = Instant::now();
    let s = driver.run().await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "postgres sink, GetTTPEvents -> PostgreSQL: {:.0} events/s ({} events)",
        s.events as f64 / secs,
        s.events
    );
}
