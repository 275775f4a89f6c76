//! Every bundled component, as a real process, exits with status 0 soon after SIGTERM in
//! each state it can wait in: at the tip, streaming to a consumer that does not read,
//! waiting on an upstream (or control plane) that accepts connections and never answers.
//! The bound is generous for a loaded machine; what matters is that none waits for its
//! supervisor's 10 s stop timeout and SIGKILL.

mod support;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowctl_components::sink::checkpoint;
use flowctl_proto::raw_ledger_service::StreamLedgersRequest;
use flowctl_proto::token_transfer_service::event_service_client::EventServiceClient;
use flowctl_proto::token_transfer_service::GetEventsRequest;
use support::{exit_within, live_source, source_client, ttp_processor, ttp_sink, wait_until, Proc};

/// Well under the supervisor's 10 s stop timeout, well over the ~1 s a stop takes.
const BOUND: Duration = Duration::from_secs(5);

/// A port that accepts connections and never sends a byte; `accepted` counts them.
struct Silent {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

fn silent() -> Silent {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    Silent { port, accepted }
}

/// Sends SIGTERM and asserts the process exits with status 0 within [`BOUND`].
async fn terminate(what: &str, mut p: Proc) {
    let pid = p.0.id().to_string();
    let sent = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let s = exit_within(&mut p, BOUND);
        (s, p)
    })
    .await
    .unwrap()
    .0;
    let status = status.unwrap_or_else(|| panic!("{what} still runs {BOUND:?} after SIGTERM"));
    eprintln!("{what} exited {:?} after SIGTERM", sent.elapsed());
    assert_eq!(status.code(), Some(0), "{what}: {status}");
}

/// A client of the processor on `port`, once it listens.
async fn processor_client(port: u16) -> EventServiceClient<tonic::transport::Channel> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match EventServiceClient::connect(format!("http://127.0.0.1:{port}")).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("processor never listened: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn events_from(
    port: u16,
    start: u32,
    end: u32,
) -> tonic::Streaming<flowctl_proto::token_transfer::TokenTransferEvent> {
    processor_client(port)
        .await
        .get_ttp_events(GetEventsRequest {
            start_ledger: start,
            end_ledger: end,
        })
        .await
        .unwrap()
        .into_inner()
}

fn synthetic(rate: &str) -> (Proc, u16) {
    live_source(&[
        ("BACKEND", "synthetic"),
        ("START_LEDGER", "2"),
        ("SYNTHETIC_RATE", rate),
        ("SYNTHETIC_TXS_PER_LEDGER", "10"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_following_the_tip_exits_promptly_on_sigterm() {
    // Registered with a control plane that never answers, too.
    let registry = silent();
    let registry_addr = format!("127.0.0.1:{}", registry.port);
    let (source, port) = live_source(&[
        ("BACKEND", "synthetic"),
        ("START_LEDGER", "2"),
        ("SYNTHETIC_RATE", "2"),
        ("ENABLE_FLOWCTL", "true"),
        ("FLOWCTL_ENDPOINT", &registry_addr),
        ("HEALTH_PORT", "0"),
    ]);
    let mut stream = source_client(port)
        .await
        .stream_raw_ledgers(StreamLedgersRequest { start_ledger: 2 })
        .await
        .unwrap()
        .into_inner();
    // Ledgers close every half second: after the second the source waits for the third.
    for want in [2, 3] {
        let l = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a ledger")
            .unwrap()
            .unwrap();
        assert_eq!(l.sequence, want);
    }
    wait_until("the registration attempt", Duration::from_secs(30), || {
        registry.accepted.load(Ordering::SeqCst) > 0
    });
    terminate("stellar-live-source", source).await;
    // The stream did not end as if it were complete.
    let end = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let err = end.expect_err("the stream ends with an error, not cleanly");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_streaming_to_a_consumer_that_does_not_read_exits_promptly_on_sigterm() {
    let (source, port) = synthetic("0");
    let mut stream = source_client(port)
        .await
        .stream_raw_ledgers(StreamLedgersRequest { start_ledger: 2 })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    // Not reading from here on: the windows and buffers fill and the source's sends block.
    // (However full they are when the signal comes, the source must stop.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    terminate("stellar-live-source", source).await;
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_opening_a_data_lake_that_does_not_answer_exits_promptly_on_sigterm() {
    let lake = silent();
    let endpoint = format!("http://127.0.0.1:{}", lake.port);
    let (source, _) = live_source(&[
        ("DATALAKE_URL", "s3://lake/ledgers"),
        ("DATALAKE_ENDPOINT", &endpoint),
    ]);
    wait_until(
        "the request for the lake's manifest",
        Duration::from_secs(30),
        || lake.accepted.load(Ordering::SeqCst) > 0,
    );
    terminate("stellar-live-source", source).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_streaming_to_a_consumer_that_does_not_read_exits_promptly_on_sigterm() {
    let (_source, source_port) = synthetic("0");
    let (processor, port) = ttp_processor(source_port, &[]);
    let mut stream = events_from(port, 2, 0).await;
    tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    // As above: from here on nothing is read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    terminate("ttp-processor", processor).await;
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_at_the_tip_ends_a_bounded_stream_with_unavailable_on_sigterm() {
    let (_source, source_port) = synthetic("4");
    let (processor, port) = ttp_processor(source_port, &[]);
    // Ledgers 2..=1000 are asked for; only the first few exist when the signal comes.
    let mut stream = events_from(port, 2, 1000).await;
    let mut last = 0;
    while last < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("an event")
            .unwrap()
            .unwrap();
        last = ev.meta.unwrap().ledger_sequence;
    }
    terminate("ttp-processor", processor).await;
    let end = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let err = end.expect_err("a stream stopped before its end ledger must not end cleanly");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_waiting_on_a_source_that_does_not_answer_exits_promptly_on_sigterm() {
    let source = silent();
    let (processor, port) = ttp_processor(source.port, &[]);
    let stream = events_from(port, 2, 0).await;
    wait_until(
        "the processor's connection",
        Duration::from_secs(30),
        || source.accepted.load(Ordering::SeqCst) > 0,
    );
    terminate("ttp-processor", processor).await;
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_waiting_on_a_processor_that_does_not_answer_exits_promptly_on_sigterm() {
    let processor = silent();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let sink = ttp_sink(
        processor.port,
        &[
            ("SINK", "jsonl"),
            ("OUTPUT_FILE", out.to_str().unwrap()),
            ("START_LEDGER", "2"),
        ],
    );
    wait_until("the sink's connection", Duration::from_secs(30), || {
        processor.accepted.load(Ordering::SeqCst) > 0
    });
    terminate("ttp-sink", sink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_following_the_tip_exits_promptly_on_sigterm_with_what_it_wrote_checkpointed() {
    let (_source, source_port) = synthetic("20");
    let (_processor, port) = ttp_processor(source_port, &[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.jsonl");
    let sink = ttp_sink(
        port,
        &[
            ("SINK", "jsonl"),
            ("OUTPUT_FILE", out.to_str().unwrap()),
            ("START_LEDGER", "2"),
            ("FLUSH_INTERVAL", "20ms"),
        ],
    );
    let size = || std::fs::metadata(&out).map_or(0, |m| m.len());
    let stored = || checkpoint::load(&checkpoint::path_for(&out)).unwrap();
    // Mid-way between two checkpoints: lines written after the last one.
    wait_until("lines after a checkpoint", Duration::from_secs(60), || {
        stored().is_some_and(|c| c.last_ledger > 0 && size() > c.offset)
    });
    terminate("ttp-sink", sink).await;
    let c = stored().unwrap();
    assert_eq!(c.offset, size(), "everything written is checkpointed");
    let text = std::fs::read_to_string(&out).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(
        last["meta"]["ledgerSequence"].as_u64(),
        Some(u64::from(c.last_ledger)),
        "the checkpoint names the last ledger written"
    );
}
