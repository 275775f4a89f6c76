//! `stellar-arrow-source` → `ttp-arrow-processor` over Arrow Flight: the processor's flight
//! holds exactly Stellar's golden token-transfer events, another toolchain's Flight client
//! (pyarrow) reads it, and a flight survives its source restarting.

mod support;

use std::path::Path;
use std::time::Duration;

use flowctl_components::arrow::events;
use flowctl_components::arrow::flight::{endpoint, FlightFeed};
use flowctl_components::backoff::Backoff;
use support::{assert_same, component, golden_between, json, shared, wait_until, Proc, TESTNET};

const PUBNET: &str = "Public Global Stellar Network ; September 2015";

fn arrow_source(env: &[(&str, &str)]) -> (Proc, u16) {
    component(env!("CARGO_BIN_EXE_stellar-arrow-source"), env)
}

fn arrow_processor(source_port: u16, passphrase: &str, env: &[(&str, &str)]) -> (Proc, u16) {
    let source = format!("127.0.0.1:{source_port}");
    let mut all = vec![
        ("SOURCE_ENDPOINT", source.as_str()),
        ("NETWORK_PASSPHRASE", passphrase),
    ];
    all.extend_from_slice(env);
    component(env!("CARGO_BIN_EXE_ttp-arrow-processor"), &all)
}

/// Every event of the flight `start..=end` on `port`, as golden-shaped JSON, and the ledgers
/// its batches said they reached.
async fn flight_events(port: u16, start: u32, end: u32) -> (Vec<serde_json::Value>, Vec<u32>) {
    let mut feed = FlightFeed::new(
        endpoint(&format!("127.0.0.1:{port}")).unwrap(),
        start,
        Some(end),
        Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
    );
    let mut out = Vec::new();
    let mut reached = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some((batch, through)) = feed.next().await.expect("the flight is read") {
            assert_eq!(batch.schema(), events::schema());
            out.extend(events::from_batch(&batch).unwrap().iter().map(json));
            reached.push(through);
        }
    })
    .await
    .expect("a bounded flight ends by itself");
    (out, reached)
}

fn golden(root: &Path, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(root.join("golden").join(name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn the_processors_flight_of_the_testnet_lake_holds_exactly_the_golden_events() {
    let Some(root) = shared() else { return };
    let lake = root.join("testnet/datastore");
    let (_source, source_port) = arrow_source(&[
        ("DATALAKE_URL", lake.to_str().unwrap()),
        ("NETWORK_PASSPHRASE", TESTNET),
    ]);
    let (_processor, port) = arrow_processor(source_port, TESTNET, &[]);
    let (ours, reached) = flight_events(port, 997, 999).await;
    assert_same(
        &ours,
        &golden(&root, "testnet-datastore-997-999.ttp-events.jsonl"),
    );
    assert_eq!(reached.last(), Some(&999));
}

#[tokio::test]
async fn lighthorizon_and_pubnet_ledgers_through_a_lake_give_the_golden_events_event_for_event() {
    let Some(root) = shared() else { return };
    // 320 consecutive testnet ledgers with mints, burns and clawbacks.
    let (raw, lighthorizon_golden) = support::lighthorizon(&root);
    let ledgers: Vec<stellar_xdr::LedgerCloseMeta> = raw
        .iter()
        .map(|(_, xdr)| {
            use stellar_xdr::ReadXdr;
            stellar_xdr::LedgerCloseMeta::from_xdr(xdr, stellar_xdr::Limits::none()).unwrap()
        })
        .collect();
    let lake = tempfile::tempdir().unwrap();
    flowctl_testkit::lake::write_lake(lake.path(), TESTNET, &ledgers);
    let (_source, source_port) = arrow_source(&[
        ("DATALAKE_URL", lake.path().to_str().unwrap()),
        ("NETWORK_PASSPHRASE", TESTNET),
        ("BATCH_SIZE", "50"),
    ]);
    let (_processor, port) = arrow_processor(source_port, TESTNET, &[]);
    let (ours, reached) = flight_events(port, 1410048, 1410367).await;
    assert_same(&ours, &lighthorizon_golden);
    assert!(
        reached.len() >= 7,
        "batches of at most 50 ledgers: {reached:?}"
    );

    // Five pubnet ledgers years apart (protocols 2 to 19): a flight of one ledger each.
    let text = std::fs::read_to_string(root.join("pubnet/ttp-example/ledgers-base64.txt")).unwrap();
    let pubnet: Vec<stellar_xdr::LedgerCloseMeta> = text
        .lines()
        .map(|l| {
            use stellar_xdr::ReadXdr;
            stellar_xdr::LedgerCloseMeta::from_xdr_base64(l, stellar_xdr::Limits::none()).unwrap()
        })
        .collect();
    let lake = tempfile::tempdir().unwrap();
    flowctl_testkit::lake::write_lake(lake.path(), PUBNET, &pubnet);
    let (_source, source_port) = arrow_source(&[
        ("DATALAKE_URL", lake.path().to_str().unwrap()),
        ("NETWORK_PASSPHRASE", PUBNET),
    ]);
    let (_processor, port) = arrow_processor(source_port, PUBNET, &[]);
    let pubnet_golden = golden(&root, "pubnet-ttp-example.ttp-events.jsonl");
    let mut total = 0;
    for l in &pubnet {
        let seq = stellar_ttp::ledger_sequence(l);
        let (ours, _) = flight_events(port, seq, seq).await;
        assert_same(&ours, &golden_between(&pubnet_golden, seq, seq));
        total += ours.len();
    }
    assert_eq!(total, 1222);
}

#[tokio::test]
async fn event_types_keeps_only_the_named_events_and_counts_the_rest_as_filtered() {
    let Some(root) = shared() else { return };
    let lake = root.join("testnet/datastore");
    let (_source, source_port) = arrow_source(&[
        ("DATALAKE_URL", lake.to_str().unwrap()),
        ("NETWORK_PASSPHRASE", TESTNET),
    ]);
    let health = support::free_port().to_string();
    let (_processor, port) = arrow_processor(
        source_port,
        TESTNET,
        &[("EVENT_TYPES", "transfer"), ("HEALTH_PORT", &health)],
    );
    let (ours, _) = flight_events(port, 997, 999).await;
    let transfers: Vec<_> = golden(&root, "testnet-datastore-997-999.ttp-events.jsonl")
        .into_iter()
        .filter(|g| g.get("transfer").is_some())
        .collect();
    assert_eq!(transfers.len(), 6);
    assert_same(&ours, &transfers);
    let metrics = reqwest::get(format!("http://127.0.0.1:{health}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "events_extracted_total 23",
        "events_filtered_total 17",
        "ledgers_processed_total 3",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.ends_with(line) || l.contains(&format!("_{line}"))),
            "{line} missing:\n{metrics}"
        );
    }
}

#[test]
fn a_bad_event_types_value_is_refused_naming_it_and_the_known_types() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ttp-arrow-processor"))
        .env_clear()
        .env("SOURCE_ENDPOINT", "127.0.0.1:1")
        .env("NETWORK_PASSPHRASE", TESTNET)
        .env("EVENT_TYPES", "transfer,payment")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("EVENT_TYPES: \"payment\" is not an event type (known: transfer, mint, burn, clawback, fee)"),
        "{err}"
    );
}

#[tokio::test]
async fn a_flight_resumes_from_the_ledger_after_the_last_whole_one_when_its_source_restarts() {
    let source_port = support::free_port();
    let port_text = source_port.to_string();
    let synthetic = [
        ("PORT", port_text.as_str()),
        ("SYNTHETIC_RATE", "40"),
        ("START_LEDGER", "2"),
        ("BATCH_SIZE", "4"),
    ];
    let (source, _) = arrow_source(&synthetic);
    let (_processor, port) = arrow_processor(source_port, stellar_synth::DEFAULT_PASSPHRASE, &[]);
    // Read the whole range in the background while the source is killed and restarted.
    let reader = tokio::spawn(flight_events(port, 2, 90));
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(source);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_again, _) = arrow_source(&synthetic);
    let (ours, reached) = reader.await.unwrap();
    assert!(reached.windows(2).all(|w| w[0] < w[1]), "{reached:?}");
    // The same range read in one go from a source that never stopped.
    let (_steady, steady_port) = arrow_source(&[("START_LEDGER", "2")]);
    let (_p2, port2) = arrow_processor(steady_port, stellar_synth::DEFAULT_PASSPHRASE, &[]);
    let (want, _) = flight_events(port2, 2, 90).await;
    assert!(!want.is_empty());
    assert_same(&ours, &want);
}

#[test]
fn pyarrow_flight_reads_the_processors_flight_with_the_same_events() {
    let Some(root) = shared() else { return };
    let has_pyarrow = std::process::Command::new("python3")
        .args(["-c", "import pyarrow.flight"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_pyarrow {
        eprintln!("SKIPPED: python3 with pyarrow is not installed (`python3 -m pip install pyarrow` enables this test)");
        return;
    }
    let lake = root.join("testnet/datastore");
    let (_source, source_port) = arrow_source(&[
        ("DATALAKE_URL", lake.to_str().unwrap()),
        ("NETWORK_PASSPHRASE", TESTNET),
    ]);
    let (_processor, port) = arrow_processor(source_port, TESTNET, &[]);
    wait_until("the processor listens", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/flight_events.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(format!("grpc://127.0.0.1:{port}"))
        .args(["997", "999"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_same(
        &ours,
        &golden(&root, "testnet-datastore-997-999.ttp-events.jsonl"),
    );
}
