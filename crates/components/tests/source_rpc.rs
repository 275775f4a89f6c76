//! `stellar-live-source` with the RPC backend against a small JSON-RPC server on a real
//! socket, serving real testnet ledgers as base64 `metadataXdr`.

mod support;
use support::{source_client, Proc};

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use flowctl_proto::raw_ledger_service::StreamLedgersRequest;
use serde_json::{json, Value};

const FIRST: u32 = 1410048;

#[derive(Clone)]
struct Rpc {
    /// Raw LedgerCloseMeta XDR of FIRST, FIRST+1, …
    ledgers: Arc<Vec<Vec<u8>>>,
    latest: Arc<AtomicU32>,
    /// Requests to fail with HTTP 503 before answering.
    fail_first: Arc<AtomicU32>,
    /// (startLedger, limit) of every getLedgers answered.
    pages: Arc<Mutex<Vec<(u32, u32)>>>,
    /// A ledger left out of every page, as a faulty server might.
    skip: Option<u32>,
}

async fn handle(State(rpc): State<Rpc>, Json(req): Json<Value>) -> Response {
    if rpc
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    let latest = rpc.latest.load(Ordering::SeqCst);
    let id = req["id"].clone();
    let reply = match req["method"].as_str() {
        Some("getLatestLedger") => {
            json!({"jsonrpc": "2.0", "id": id, "result": {"sequence": latest}})
        }
        Some("getLedgers") => {
            let start = req["params"]["startLedger"].as_u64().unwrap() as u32;
            // A small page size so the source has to page.
            let limit = req["params"]["pagination"]["limit"]
                .as_u64()
                .unwrap_or(3)
                .min(3) as u32;
            if start < FIRST || start > latest {
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600,
                    "message": format!("start ledger must be between the oldest ledger: {FIRST} and the latest ledger: {latest}")}})
            } else {
                rpc.pages.lock().unwrap().push((start, limit));
                let end = (start + limit - 1).min(latest);
                let ledgers: Vec<Value> = (start..=end)
                    .filter(|s| Some(*s) != rpc.skip)
                    .map(|s| {
                        json!({
                            "hash": "00",
                            "sequence": s,
                            "ledgerCloseTime": "1654835024",
                            "headerXdr": "",
                            "metadataXdr": base64::engine::general_purpose::STANDARD
                                .encode(&rpc.ledgers[(s - FIRST) as usize]),
                        })
                    })
                    .collect();
                json!({"jsonrpc": "2.0", "id": id, "result": {
                    "ledgers": ledgers, "latestLedger": latest, "latestLedgerCloseTime": "0",
                    "oldestLedger": FIRST, "oldestLedgerCloseTime": "0", "cursor": end.to_string()}})
            }
        }
        _ => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "method not found"}})
        }
    };
    Json(reply).into_response()
}

fn fixture_ledgers(n: u32) -> Option<Vec<Vec<u8>>> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/stellar/testnet/lighthorizon-1410048-1410367/ledgers"
    ));
    if !dir.is_dir() {
        eprintln!("skipped: {} is absent", dir.display());
        return None;
    }
    Some(
        (FIRST..FIRST + n)
            .map(|s| {
                let bytes = std::fs::read(dir.join(s.to_string())).unwrap();
                assert_eq!(bytes[..4], [0, 0, 0, 0], "version prefix");
                bytes[4..].to_vec()
            })
            .collect(),
    )
}

#[tokio::test]
async fn rpc_backend_pages_retries_and_follows_the_tip_to_the_end_ledger() {
    let Some(ledgers) = fixture_ledgers(10) else {
        return;
    };
    let rpc = Rpc {
        ledgers: Arc::new(ledgers.clone()),
        latest: Arc::new(AtomicU32::new(FIRST + 4)),
        fail_first: Arc::new(AtomicU32::new(2)),
        pages: Arc::default(),
        skip: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rpc_addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/", post(handle))
        .with_state(rpc.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _source = Proc(
        Command::new(env!("CARGO_BIN_EXE_stellar-live-source"))
            .env_clear()
            .env("RUST_LOG", "warn")
            .env("PORT", port.to_string())
            .env("BACKEND", "rpc")
            .env("RPC_ENDPOINT", format!("http://{rpc_addr}/"))
            .env("NETWORK_PASSPHRASE", "Test SDF Network ; September 2015")
            .env("END_LEDGER", (FIRST + 9).to_string())
            .env("POLL_INTERVAL", "100ms")
            .spawn()
            .unwrap(),
    );
    let mut c = source_client(port).await;
    let mut stream = c
        .stream_raw_ledgers(StreamLedgersRequest {
            start_ledger: FIRST,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    for _ in 0..5 {
        let l = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("ledger before the tip")
            .unwrap()
            .unwrap();
        got.push(l);
    }
    // At the tip: nothing more until the network moves on.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), stream.message())
            .await
            .is_err()
    );
    rpc.latest.store(FIRST + 20, Ordering::SeqCst);
    while let Some(l) = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("stream goes on after the tip moved")
        .unwrap()
    {
        got.push(l);
    }
    let seqs: Vec<u32> = got.iter().map(|l| l.sequence).collect();
    assert_eq!(seqs, (FIRST..FIRST + 10).collect::<Vec<_>>());
    for (l, want) in got.iter().zip(&ledgers) {
        assert_eq!(&l.ledger_close_meta_xdr, want);
    }
    assert_eq!(
        rpc.fail_first.load(Ordering::SeqCst),
        0,
        "503s were retried"
    );
    let pages = rpc.pages.lock().unwrap().clone();
    assert!(pages.len() >= 4, "paged: {pages:?}");
}

#[tokio::test]
async fn rpc_backend_refuses_a_page_that_skips_a_ledger_naming_expected_and_found() {
    let Some(ledgers) = fixture_ledgers(6) else {
        return;
    };
    let rpc = Rpc {
        ledgers: Arc::new(ledgers),
        latest: Arc::new(AtomicU32::new(FIRST + 5)),
        fail_first: Arc::new(AtomicU32::new(0)),
        pages: Arc::default(),
        skip: Some(FIRST + 2),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rpc_addr = listener.local_addr().unwrap();
    let app = Router::new().route("/", post(handle)).with_state(rpc);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _source = Proc(
        Command::new(env!("CARGO_BIN_EXE_stellar-live-source"))
            .env_clear()
            .env("RUST_LOG", "warn")
            .env("PORT", port.to_string())
            .env("BACKEND", "rpc")
            .env("RPC_ENDPOINT", format!("http://{rpc_addr}/"))
            .env("NETWORK_PASSPHRASE", "Test SDF Network ; September 2015")
            .env("END_LEDGER", (FIRST + 5).to_string())
            .env("POLL_INTERVAL", "100ms")
            .spawn()
            .unwrap(),
    );
    let mut c = source_client(port).await;
    let mut stream = c
        .stream_raw_ledgers(StreamLedgersRequest {
            start_ledger: FIRST,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the stream neither ended nor failed")
        {
            Ok(Some(l)) => seqs.push(l.sequence),
            Ok(None) => panic!("the stream ended without an error after {seqs:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(seqs, vec![FIRST, FIRST + 1], "every ledger before the gap");
    let want = format!("expected ledger {}, found {}", FIRST + 2, FIRST + 3);
    assert!(err.message().contains(&want), "{}", err.message());
}
