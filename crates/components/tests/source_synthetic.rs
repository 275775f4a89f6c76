//! `stellar-live-source` with the synthetic backend, driven over gRPC as a real process.

mod support;
use support::{free_port, live_source, source_client};

use std::process::Command;
use std::time::{Duration, Instant};

use flowctl_proto::raw_ledger_service::{GetLedgerRangeRequest, RawLedger, StreamLedgersRequest};
use stellar_xdr::{LedgerCloseMeta, Limits, ReadXdr};
use tonic::transport::Channel;

fn seq_of(xdr: &[u8]) -> u32 {
    match LedgerCloseMeta::from_xdr(xdr, Limits::none()).expect("valid LedgerCloseMeta") {
        LedgerCloseMeta::V0(m) => m.ledger_header.header.ledger_seq,
        LedgerCloseMeta::V1(m) => m.ledger_header.header.ledger_seq,
        LedgerCloseMeta::V2(m) => m.ledger_header.header.ledger_seq,
    }
}

#[tokio::test]
async fn bounded_stream_serves_start_to_end_ledger_then_ends_cleanly() {
    let (_p, port) = live_source(&[
        ("BACKEND", "synthetic"),
        ("START_LEDGER", "10"),
        ("END_LEDGER", "19"),
        ("SYNTHETIC_TXS_PER_LEDGER", "20"),
    ]);
    let mut c = source_client(port).await;
    let mut stream = c
        .stream_raw_ledgers(StreamLedgersRequest { start_ledger: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(l) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the stream ends by itself")
        .expect("no error: a bounded stream ends cleanly")
    {
        assert_eq!(seq_of(&l.ledger_close_meta_xdr), l.sequence);
        seqs.push(l.sequence);
    }
    assert_eq!(seqs, (10..=19).collect::<Vec<_>>());
}

#[tokio::test]
async fn get_ledger_range_excludes_the_end_and_replays_identical_bytes() {
    let (_p, port) = live_source(&[("BACKEND", "synthetic"), ("START_LEDGER", "5")]);
    let mut c = source_client(port).await;
    let first = c
        .get_ledger_range(GetLedgerRangeRequest {
            start_ledger: 7,
            end_ledger: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let seqs: Vec<u32> = first.ledgers.iter().map(|l| l.sequence).collect();
    assert_eq!(seqs, vec![7, 8, 9]);
    // Going back rebuilds the ledgers from their epoch's start: the same bytes again.
    let again = c
        .get_ledger_range(GetLedgerRangeRequest {
            start_ledger: 5,
            end_ledger: 9,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.ledgers[2..], first.ledgers[..2]);
    let bad = c
        .get_ledger_range(GetLedgerRangeRequest {
            start_ledger: 9,
            end_ledger: 9,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("exclusive"), "{}", bad.message());
}

#[tokio::test]
async fn rate_limited_source_paces_ledgers() {
    let spawned = Instant::now();
    let (_p, port) = live_source(&[
        ("BACKEND", "synthetic"),
        ("START_LEDGER", "2"),
        ("SYNTHETIC_RATE", "20"),
        ("SYNTHETIC_TXS_PER_LEDGER", "5"),
    ]);
    let mut c = source_client(port).await;
    let mut stream = c
        .stream_raw_ledgers(StreamLedgersRequest { start_ledger: 2 })
        .await
        .unwrap()
        .into_inner();
    for want in 2..=30u32 {
        let l = stream.message().await.unwrap().unwrap();
        assert_eq!(l.sequence, want);
    }
    // Ledger 30 closes 28 ledgers after the first: at 20/s not before 1.4 s after start.
    assert!(
        spawned.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        spawned.elapsed()
    );
}

#[tokio::test]
async fn grpc_health_reports_serving() {
    let (_p, port) = live_source(&[("BACKEND", "synthetic")]);
    let _ = source_client(port).await;
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
    let r = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: "raw_ledger_service.RawLedgerService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn bad_settings_exit_with_a_message_naming_the_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_stellar-live-source"))
        .env_clear()
        .env("PORT", free_port().to_string())
        .env("BACKEND", "datalake")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DATALAKE_URL"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_stellar-live-source"))
        .env_clear()
        .env("PORT", free_port().to_string())
        .env("SYNTHETIC_PROTOCOL", "12")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("protocol_version 12"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_stellar-live-source"))
        .env_clear()
        .env("PORT", free_port().to_string())
        .env("START_LEDGER", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("START_LEDGER") && err.contains("got 1"),
        "{err}"
    );
}

/// Shards of one range run sources started at their own first ledgers: each ledger must be
/// the one a source started at ledger 2 serves, across an epoch boundary (64) included.
#[tokio::test]
async fn sources_started_at_different_ledgers_serve_the_same_bytes_for_each_ledger() {
    let range = |start: &'static str, from: u32, to: u32| async move {
        let (_p, port) = live_source(&[
            ("BACKEND", "synthetic"),
            ("START_LEDGER", start),
            // Small ledgers: a reply of many fits the gRPC message limit.
            ("SYNTHETIC_TXS_PER_LEDGER", "5"),
        ]);
        let mut c = source_client(port).await;
        let mut ledgers = Vec::new();
        // A reply holds at most 64 ledgers.
        for chunk_from in (from..to).step_by(32) {
            let reply = c
                .get_ledger_range(GetLedgerRangeRequest {
                    start_ledger: chunk_from,
                    end_ledger: (chunk_from + 32).min(to),
                })
                .await
                .unwrap();
            ledgers.extend(reply.into_inner().ledgers);
        }
        ledgers
    };
    // Compared ledger by ledger, naming the first that differs (not printing megabytes).
    let same = |got: &[RawLedger], want: &[RawLedger]| {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.sequence, w.sequence);
            assert!(
                g.ledger_close_meta_xdr == w.ledger_close_meta_xdr,
                "ledger {} differs",
                g.sequence
            );
        }
    };
    let from_two = range("2", 2, 80).await;
    let from_sixty = range("60", 60, 80).await;
    assert_eq!(from_sixty.len(), 20);
    same(&from_sixty, &from_two[58..]);
    // A later source asked for earlier ledgers builds them from their own epoch.
    let from_seventy = range("70", 6, 10).await;
    same(&from_seventy, &from_two[4..8]);
}

#[tokio::test]
async fn health_endpoint_reports_the_source_metrics() {
    let health = free_port();
    let (_p, port) = live_source(&[
        ("BACKEND", "synthetic"),
        ("START_LEDGER", "2"),
        ("END_LEDGER", "6"),
        ("HEALTH_PORT", &health.to_string()),
    ]);
    let mut c = source_client(port).await;
    let mut stream = c
        .stream_raw_ledgers(StreamLedgersRequest { start_ledger: 2 })
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", health)).unwrap();
        s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    })
    .await
    .unwrap();
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    let json: serde_json::Value =
        serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["metrics"]["ledgers_processed_total"], 5.0);
    assert_eq!(json["metrics"]["current_ledger"], 6.0);
    assert!(json["metrics"]["seconds_since_last_processed"].is_number());
    assert!(json["metrics"]["ledgers_per_second"].as_f64().unwrap() > 0.0);
}
