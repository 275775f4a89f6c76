//! `ttp-sink` with the JSON-lines and console outputs, fed the golden events of real
//! ledgers by an in-test `EventService`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Command;
use std::time::UNIX_EPOCH;

use base64::Engine;
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
