//! `ttp-sink` with the JSON-lines and console outputs, fed the golden events of real
//! ledgers by an in-test `EventService`, or by the real source and processor.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use flowctl_components::sink::checkpoint;
use flowctl_proto::asset::{asset::AssetType, Asset, IssuedAsset};
use flowctl_proto::token_transfer::muxed_info::Content;
use flowctl_proto::token_transfer::token_transfer_event::Event;
use flowctl_proto::token_transfer::{
    Burn, Clawback, EventMeta, Fee, Mint, MuxedInfo, TokenTransferEvent, Transfer,
};
use flowctl_proto::token_transfer_service::event_service_server::{
    EventService, EventServiceServer,
};
use flowctl_proto::token_transfer_service::GetEventsRequest;
use serde_json::Value;
use support::{exit_within, live_source, ttp_processor, ttp_sink, wait_until, Proc};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

fn golden(name: &str) -> Option<Vec<Value>> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/stellar/golden/"
    ))
    .join(name);
    let Ok(text) = std::fs::read_to_string(&p) else {
        eprintln!("skipped: {} is absent", p.display());
        return None;
    };
    Some(
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

/// The test's own reading of the JSON mapping, to feed the server.
fn from_json(v: &Value) -> TokenTransferEvent {
    let m = &v["meta"];
    let closed = humantime::parse_rfc3339(m["closedAt"].as_str().unwrap()).unwrap();
    let muxed = m.get("toMuxedInfo").map(|x| MuxedInfo {
        content: Some(if let Some(t) = x.get("text") {
            Content::Text(t.as_str().unwrap().into())
        } else if let Some(id) = x.get("id") {
            Content::Id(id.as_str().unwrap().parse().unwrap())
        } else {
            Content::Hash(
                base64::engine::general_purpose::STANDARD
                    .decode(x["hash"].as_str().unwrap())
                    .unwrap(),
            )
        }),
    });
    let meta = EventMeta {
        ledger_sequence: m["ledgerSequence"].as_u64().unwrap() as u32,
        closed_at: Some(prost_types::Timestamp {
            seconds: closed.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64,
            nanos: 0,
        }),
        tx_hash: m["txHash"].as_str().unwrap().into(),
        transaction_index: m["transactionIndex"].as_u64().unwrap() as u32,
        operation_index: m.get("operationIndex").map(|o| o.as_u64().unwrap() as u32),
        contract_address: m["contractAddress"].as_str().unwrap_or_default().into(),
        to_muxed_info: muxed,
    };
    let s = |b: &Value, k: &str| b[k].as_str().unwrap_or_default().to_string();
    let asset = |b: &Value| {
        b.get("asset").map(|a| Asset {
            asset_type: Some(if a.get("native").is_some() {
                AssetType::Native(true)
            } else {
                let i = &a["issuedAsset"];
                AssetType::IssuedAsset(IssuedAsset {
                    asset_code: s(i, "assetCode"),
                    issuer: s(i, "issuer"),
                })
            }),
        })
    };
    let event = if let Some(b) = v.get("transfer") {
        Event::Transfer(Transfer {
            from: s(b, "from"),
            to: s(b, "to"),
            asset: asset(b),
            amount: s(b, "amount"),
        })
    } else if let Some(b) = v.get("mint") {
        Event::Mint(Mint {
            to: s(b, "to"),
            asset: asset(b),
            amount: s(b, "amount"),
        })
    } else if let Some(b) = v.get("burn") {
        Event::Burn(Burn {
            from: s(b, "from"),
            asset: asset(b),
            amount: s(b, "amount"),
        })
    } else if let Some(b) = v.get("clawback") {
        Event::Clawback(Clawback {
            from: s(b, "from"),
            asset: asset(b),
            amount: s(b, "amount"),
        })
    } else {
        let b = &v["fee"];
        Event::Fee(Fee {
            from: s(b, "from"),
            asset: asset(b),
            amount: s(b, "amount"),
        })
    };
    TokenTransferEvent {
        meta: Some(meta),
        event: Some(event),
    }
}

#[derive(Clone)]
struct Golden(Vec<TokenTransferEvent>);

type EventStream = Pin<Box<dyn Stream<Item = Result<TokenTransferEvent, Status>> + Send>>;

#[tonic::async_trait]
impl EventService for Golden {
    type GetTTPEventsStream = EventStream;
    async fn get_ttp_events(
        &self,
        request: Request<GetEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = request.into_inner();
        let events: Vec<Result<TokenTransferEvent, Status>> = self
            .0
            .iter()
            .filter(|e| {
                let l = e.meta.as_ref().unwrap().ledger_sequence;
                l >= r.start_ledger && l <= r.end_ledger
            })
            .cloned()
            .map(Ok)
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(events))))
    }
}

async fn serve(events: Vec<TokenTransferEvent>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EventServiceServer::new(Golden(events)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

async fn jsonl_equals_golden(name: &str, start: u32, end: u32) {
    let Some(want) = golden(name) else { return };
    let addr = serve(want.iter().map(from_json).collect()).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let status = tokio::task::spawn_blocking({
        let out = out.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_ttp-sink"))
                .env_clear()
                .env("SINK", "jsonl")
                .env("OUTPUT_FILE", &out)
                .env("TTP_SERVICE_ADDRESS", addr.to_string())
                .env("START_LEDGER", start.to_string())
                .env("END_LEDGER", end.to_string())
                .status()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(status.success());
    let got: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "line {}", i + 1);
    }
}

#[tokio::test]
async fn jsonl_output_of_testnet_997_999_equals_the_golden_file() {
    jsonl_equals_golden("testnet-datastore-997-999.ttp-events.jsonl", 997, 999).await;
}

#[tokio::test]
async fn jsonl_output_with_mints_burns_clawbacks_and_muxed_info_equals_the_golden_file() {
    jsonl_equals_golden(
        "testnet-lighthorizon-1410048-1410367.ttp-events.jsonl",
        1410048,
        1410367,
    )
    .await;
}

#[tokio::test]
async fn console_output_prints_one_line_per_event() {
    let Some(want) = golden("testnet-datastore-997-999.ttp-events.jsonl") else {
        return;
    };
    let addr = serve(want.iter().map(from_json).collect()).await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ttp-sink"))
            .env_clear()
            .env("TTP_SERVICE_ADDRESS", addr.to_string())
            .env("START_LEDGER", "997")
            .env("END_LEDGER", "999")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 23);
    assert!(lines[0].starts_with("ledger 997 tx 1 fee"), "{}", lines[0]);
    assert_eq!(lines.iter().filter(|l| l.contains(" transfer ")).count(), 6);
}

/// A JSON-lines sink of synthetic ledgers `FIRST..=LAST` from the real source and processor.
fn file_sink(processor_port: u16, out: &std::path::Path, first: u32, last: u32) -> Proc {
    ttp_sink(
        processor_port,
        &[
            ("SINK", "jsonl"),
            ("OUTPUT_FILE", out.to_str().unwrap()),
            ("START_LEDGER", &first.to_string()),
            ("END_LEDGER", &last.to_string()),
            ("FLUSH_INTERVAL", "50ms"),
            ("FLUSH_EVENTS", "300"),
        ],
    )
}

fn run_to_end(mut sink: Proc) {
    let status = exit_within(&mut sink, Duration::from_secs(120)).expect("the sink finishes");
    assert!(status.success(), "the sink exited with {status}");
}

#[test]
fn file_sink_killed_three_times_writes_each_event_exactly_once() {
    const FIRST: u32 = 2;
    const LAST: u32 = 401;
    // Ledgers close at 100 a second, so the kills land while the sink follows the source.
    let (_source, source_port) = live_source(&[
        ("BACKEND", "synthetic"),
        ("START_LEDGER", &FIRST.to_string()),
        ("END_LEDGER", &LAST.to_string()),
        ("SYNTHETIC_RATE", "100"),
        ("SYNTHETIC_TXS_PER_LEDGER", "10"),
    ]);
    let (_processor, port) = ttp_processor(source_port, &[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let size = || std::fs::metadata(&out).map_or(0, |m| m.len());
    let stored = || checkpoint::load(&checkpoint::path_for(&out)).unwrap();
    let minute = Duration::from_secs(60);

    // 1. Mid-way through the first batches, before any checkpoint names a ledger.
    let sink = file_sink(port, &out, FIRST, LAST);
    wait_until("the first lines", minute, || size() > 0);
    drop(sink);
    let first = stored().expect("a checkpoint exists from the start");
    assert!(
        size() > first.offset,
        "the kill left lines after the checkpoint"
    );

    // 2. After a checkpoint naming a ledger, with more lines written after it.
    let sink = file_sink(port, &out, FIRST, LAST);
    wait_until("a checkpoint and lines after it", minute, || {
        stored().is_some_and(|c| c.last_ledger > 0 && size() > c.offset)
    });
    drop(sink);

    // 3. Soon after the restart, once it has cut off that tail and written past it again,
    // while it catches up with the source.
    let at_kill = size();
    let sink = file_sink(port, &out, FIRST, LAST);
    wait_until("lines after the restart", minute, || {
        size() > at_kill + 1000
    });
    drop(sink);

    run_to_end(file_sink(port, &out, FIRST, LAST));
    let clean = dir.path().join("clean.jsonl");
    run_to_end(file_sink(port, &clean, FIRST, LAST));

    let killed = std::fs::read_to_string(&out).unwrap();
    let once = std::fs::read_to_string(&clean).unwrap();
    let (killed, once): (Vec<&str>, Vec<&str>) = (killed.lines().collect(), once.lines().collect());
    let distinct: std::collections::HashSet<&str> = killed.iter().copied().collect();
    assert!(
        once.len() > 1000,
        "the clean run wrote {} events",
        once.len()
    );
    assert_eq!(distinct.len(), killed.len(), "duplicated lines");
    assert_eq!(killed.len(), once.len(), "event count");
    assert!(
        killed == once,
        "the killed run's lines differ from the clean run's"
    );
    assert_eq!(stored().unwrap().last_ledger, LAST);
}

#[test]
fn a_checkpoint_beyond_the_end_of_its_output_is_an_error_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    std::fs::write(&out, "{}\n").unwrap();
    let ckpt = checkpoint::path_for(&out);
    std::fs::write(&ckpt, r#"{"last_ledger":9,"offset":4096}"#).unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_ttp-sink"))
            .env_clear()
            .env("SINK", "jsonl")
            .env("OUTPUT_FILE", &out)
            .env("TTP_SERVICE_ADDRESS", "127.0.0.1:1")
            .output()
            .unwrap()
    };
    let o = run();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains(&ckpt.display().to_string()), "{err}");
    assert!(err.contains(&out.display().to_string()), "{err}");
    assert!(err.contains("4096"), "{err}");

    std::fs::write(&ckpt, "not json").unwrap();
    let o = run();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains(&ckpt.display().to_string()), "{err}");
    assert!(err.contains("not a checkpoint"), "{err}");
    // Neither refusal touched the output.
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "{}\n");
}

#[test]
fn a_bounded_run_into_a_file_that_already_holds_later_ledgers_writes_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    std::fs::write(&out, "{}\n").unwrap();
    let ckpt = checkpoint::path_for(&out);
    std::fs::write(&ckpt, r#"{"last_ledger":500,"offset":3}"#).unwrap();
    // No processor listens there: the sink must not even ask.
    let o = Command::new(env!("CARGO_BIN_EXE_ttp-sink"))
        .env_clear()
        .env("SINK", "jsonl")
        .env("OUTPUT_FILE", &out)
        .env("START_LEDGER", "100")
        .env("END_LEDGER", "119")
        .env("TTP_SERVICE_ADDRESS", "127.0.0.1:1")
        .env("ENABLE_FLOWCTL", "false")
        .env("HEALTH_PORT", support::free_port().to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("nothing to write"), "{err}");
    assert!(err.contains("another OUTPUT_FILE"), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "{}\n");
    assert_eq!(
        checkpoint::load(&ckpt).unwrap().map(|c| c.last_ledger),
        Some(500)
    );
}

/// Streams its events to every request, then keeps the stream open, as a processor at the
/// tip does.
#[derive(Clone)]
struct AtTheTip(Vec<TokenTransferEvent>);

#[tonic::async_trait]
impl EventService for AtTheTip {
    type GetTTPEventsStream = EventStream;
    async fn get_ttp_events(
        &self,
        _: Request<GetEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let events = tokio_stream::iter(self.0.clone().into_iter().map(Ok));
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::chain(
            events,
            tokio_stream::pending(),
        ))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_checkpoints_what_it_wrote_while_the_stream_is_quiet() {
    let event = |ledger| TokenTransferEvent {
        meta: Some(EventMeta {
            ledger_sequence: ledger,
            ..Default::default()
        }),
        event: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EventServiceServer::new(AtTheTip(vec![
                event(10),
                event(11),
            ])))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let _sink = ttp_sink(
        addr.port(),
        &[
            ("SINK", "jsonl"),
            ("OUTPUT_FILE", out.to_str().unwrap()),
            ("START_LEDGER", "10"),
        ],
    );
    // Ledger 10 is complete once 11 starts; nothing comes after that.
    let ckpt = checkpoint::path_for(&out);
    let stored = move || checkpoint::load(&ckpt).unwrap();
    tokio::task::spawn_blocking(move || {
        wait_until("ledger 10 checkpointed", Duration::from_secs(30), || {
            stored().is_some_and(|c| c.last_ledger == 10)
        })
    })
    .await
    .unwrap();
    let c = checkpoint::load(&checkpoint::path_for(&out))
        .unwrap()
        .unwrap();
    assert_eq!(c.offset, std::fs::metadata(&out).unwrap().len());
}

/// Answers every request as the Go ttp-processor does when its source's stream ends before
/// the end of a bounded request: the events of the first ledger asked for, then
/// `Unavailable`. Counts the requests.
#[derive(Clone)]
struct EndsEarly(Arc<std::sync::atomic::AtomicUsize>);

#[tonic::async_trait]
impl EventService for EndsEarly {
    type GetTTPEventsStream = EventStream;
    async fn get_ttp_events(
        &self,
        request: Request<GetEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ledger = request.into_inner().start_ledger;
        let event = TokenTransferEvent {
            meta: Some(EventMeta {
                ledger_sequence: ledger,
                ..Default::default()
            }),
            event: None,
        };
        let items = vec![Ok(event), Err(Status::unavailable("source stream ended"))];
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_whose_upstream_ends_each_stream_early_backs_off_instead_of_reconnecting_at_a_fixed_pace(
) {
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EventServiceServer::new(EndsEarly(requests.clone())))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let _sink = ttp_sink(
        addr.port(),
        &[
            ("SINK", "jsonl"),
            ("OUTPUT_FILE", out.to_str().unwrap()),
            ("START_LEDGER", "10"),
            ("END_LEDGER", "12"),
            ("MAX_BACKOFF", "2s"),
        ],
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let asked = requests.load(std::sync::atomic::Ordering::Relaxed);
    // At a fixed 100 ms that would be about 50; doubling from 100 ms (each wait drawn from its
    // upper half) to the 2 s cap allows at most 8 in 5 s.
    assert!((2..=9).contains(&asked), "{asked} requests in 5 s");
    let written = std::fs::read_to_string(&out).unwrap_or_default();
    assert_eq!(
        written, "",
        "ledger 10 never completed, so nothing is written"
    );
}
