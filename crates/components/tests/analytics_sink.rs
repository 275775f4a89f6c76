//! The analytics sink's JSON and WebSocket outputs, and its Parquet dataset after a crash:
//! JSON lines in `ttp-sink`'s shape, a feed that keeps a reading client whole and drops one
//! that stopped reading without ever holding the writer up, and a dataset reopened after a
//! flush killed between its files and its checkpoint.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use flowctl_components::analytics::dataset::{FlushPolicy, ParquetDataset, CHECKPOINT};
use flowctl_components::analytics::feed::{Feed, CLIENT_QUEUE};
use flowctl_components::analytics::metrics::AnalyticsMetrics;
use flowctl_components::analytics::{OutputFormats, Outputs, OutputsConfig};
use flowctl_components::arrow::events;
use flowctl_components::shutdown::Shutdown;
use flowctl_proto::token_transfer::TokenTransferEvent;
use futures::StreamExt;

/// Real events: synthetic ledgers from 2 on through Stellar's token-transfer semantics, a
/// batch (and its last ledger) for each ledger.
fn ledger_batches(count: u32) -> Vec<(Vec<TokenTransferEvent>, RecordBatch, u32)> {
    let mut g = stellar_synth::Generator::new(stellar_synth::Config {
        first_ledger: 2,
        txs_per_ledger: 10,
        ..Default::default()
    })
    .unwrap();
    let p = stellar_ttp::EventsProcessor::new(stellar_synth::DEFAULT_PASSPHRASE);
    (0..count)
        .map(|_| {
            let lcm = g.next_ledger();
            let evs = p.events_from_ledger(&lcm).unwrap();
            let batch = events::to_batch(&evs).unwrap();
            (evs, batch, stellar_ttp::ledger_sequence(&lcm))
        })
        .collect()
}

fn config(dir: &Path, formats: &str) -> OutputsConfig {
    OutputsConfig {
        formats: OutputFormats::parse(formats).unwrap(),
        dir: dir.to_path_buf(),
        json_file: None,
        flush: FlushPolicy {
            rows: 1000,
            interval: Duration::from_secs(3600),
        },
    }
}

#[test]
fn json_lines_are_ttp_sinks_lines_and_resume_after_their_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let batches = ledger_batches(6);
    let metrics = Arc::new(AnalyticsMetrics::new(OutputFormats::parse("json").unwrap()));
    let mut out = Outputs::open(&config(dir.path(), "json"), metrics.clone()).unwrap();
    assert_eq!(out.resume_from(), None);
    for (_, batch, through) in &batches[..4] {
        out.write(batch, *through).unwrap();
    }
    out.finish().unwrap();
    drop(out);
    let mut out = Outputs::open(&config(dir.path(), "json"), metrics).unwrap();
    assert_eq!(out.resume_from(), Some(batches[3].2 + 1));
    for (_, batch, through) in &batches[4..] {
        out.write(batch, *through).unwrap();
    }
    out.finish().unwrap();
    let text = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let want: Vec<String> = batches
        .iter()
        .flat_map(|(evs, _, _)| evs.iter().map(stellar_ttp::to_json))
        .collect();
    assert!(want.len() > 50);
    assert_eq!(text.lines().collect::<Vec<_>>(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_keeps_a_reading_client_whole_and_drops_one_that_stopped_reading() {
    let dir = tempfile::tempdir().unwrap();
    let formats = OutputFormats::parse("websocket").unwrap();
    let metrics = Arc::new(AnalyticsMetrics::new(formats));
    let (feed, addr) = Feed::serve(
        "127.0.0.1:0".parse().unwrap(),
        metrics.clone(),
        Shutdown::never(),
    )
    .await
    .unwrap();
    let url = format!("ws://{addr}/ws");
    let (mut reader, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (_stalled, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let clients = feed.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while clients.clients() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(clients.clients(), 2);
    let mut out = Outputs::open(&config(dir.path(), "websocket"), metrics.clone())
        .unwrap()
        .with_feed(feed);

    let batches = ledger_batches(20);
    let want: Vec<String> = batches
        .iter()
        .flat_map(|(evs, _, _)| evs.iter().map(stellar_ttp::to_json))
        .collect();
    // Far more messages than a client's queue holds, sent without waiting for anyone.
    let rounds = CLIENT_QUEUE / want.len() * 16 + 1;
    let total = want.len() * rounds;
    // The reading client reads as the events go out.
    let read = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < total {
            match reader.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                    got.push(t.to_string())
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        got
    });
    let started = Instant::now();
    for _ in 0..rounds {
        for (_, batch, through) in &batches {
            out.write(batch, *through).unwrap();
            // A live pace: a reader that keeps up is never behind by a queue's worth.
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the writer is never held up by a client"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while metrics.websocket_clients_dropped.load(Ordering::Relaxed) == 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metrics.websocket_clients_dropped.load(Ordering::Relaxed),
        1,
        "the client that stopped reading is dropped"
    );
    drop(out);
    // The reader has every event, in order.
    let got = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the reader gets every message")
        .unwrap();
    assert_eq!(got.len(), total);
    let repeated: Vec<&String> = want.iter().cycle().take(total).collect();
    assert!(
        got.iter().zip(&repeated).all(|(a, b)| a == *b),
        "the reader's messages are the events in order"
    );
}

#[test]
fn a_flush_killed_before_its_checkpoint_is_undone_on_open_and_written_again_once() {
    let dir = tempfile::tempdir().unwrap();
    let batches = ledger_batches(6);
    let policy = FlushPolicy {
        rows: usize::MAX,
        interval: Duration::from_secs(3600),
    };
    let mut ds = ParquetDataset::open(dir.path(), policy).unwrap();
    for (_, batch, through) in &batches[..3] {
        ds.write(batch, *through).unwrap();
    }
    ds.flush().unwrap();
    let checkpoint = std::fs::read(dir.path().join(CHECKPOINT)).unwrap();
    for (_, batch, through) in &batches[3..] {
        ds.write(batch, *through).unwrap();
    }
    ds.flush().unwrap();
    drop(ds);
    // As if killed after the second flush's files were renamed but before its checkpoint,
    // with a temp file of a third flush half written.
    std::fs::write(dir.path().join(CHECKPOINT), &checkpoint).unwrap();
    let partition = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("date="))
        .unwrap()
        .path();
    let half = partition.join(".part-0000000099-0000000100.parquet.tmp");
    std::fs::write(&half, b"PAR1 half").unwrap();
    let parts = |p: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(parts(&partition).len(), 3);

    let mut ds = ParquetDataset::open(dir.path(), policy).unwrap();
    assert_eq!(ds.resume_from(), Some(batches[2].2 + 1));
    assert_eq!(
        parts(&partition),
        [format!(
            "part-{:010}-{:010}.parquet",
            batches[0].2, batches[2].2
        )],
        "the uncheckpointed file and the temp file are gone"
    );
    for (_, batch, through) in &batches[3..] {
        ds.write(batch, *through).unwrap();
    }
    ds.flush().unwrap();
    // Every event once, in order.
    let mut got = Vec::new();
    for name in parts(&partition) {
        let file = std::fs::File::open(partition.join(name)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            got.extend(events::from_batch(&b.unwrap()).unwrap());
        }
    }
    let want: Vec<TokenTransferEvent> = batches.into_iter().flat_map(|(e, _, _)| e).collect();
    assert!(
        got == want,
        "{} events read, {} written",
        got.len(),
        want.len()
    );
}

#[test]
fn a_dataset_without_its_checkpoint_but_with_part_files_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("date=2024-02-06");
    std::fs::create_dir_all(&part).unwrap();
    std::fs::write(part.join("part-0000000997-0000000999.parquet"), b"x").unwrap();
    let err = ParquetDataset::open(dir.path(), FlushPolicy::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("_checkpoint.json"), "{err}");
    assert!(err.contains("part-0000000997-0000000999.parquet"), "{err}");
    assert!(
        part.join("part-0000000997-0000000999.parquet").exists(),
        "nothing is deleted"
    );
    std::fs::write(dir.path().join(CHECKPOINT), b"{not json").unwrap();
    let err = ParquetDataset::open(dir.path(), FlushPolicy::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("not a dataset checkpoint"), "{err}");
}

#[tokio::test]
async fn a_client_sending_a_large_message_is_closed_and_the_feed_goes_on() {
    use futures::SinkExt;
    let formats = OutputFormats::parse("websocket").unwrap();
    let metrics = Arc::new(AnalyticsMetrics::new(formats));
    let (feed, addr) = Feed::serve(
        "127.0.0.1:0".parse().unwrap(),
        metrics.clone(),
        Shutdown::never(),
    )
    .await
    .unwrap();
    let url = format!("ws://{addr}/ws");
    let (mut big, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let _ = big
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "x".repeat(1 << 20).into(),
        ))
        .await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match big.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the sender of 1 MiB is disconnected");
    let (mut reader, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while feed.clients() != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    feed.send("{\"still\":\"on\"}");
    let msg = tokio::time::timeout(Duration::from_secs(10), reader.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(msg.into_text().unwrap().as_str(), "{\"still\":\"on\"}");
}
