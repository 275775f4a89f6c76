//! `contract-data-processor` and `contract-data-sink` on real Soroban ledgers (the load-test
//! set: LCM V1/V2, TxMeta V3/V4): `extract` agrees change for change with an independent
//! decoding by the Python stellar-sdk; the Flight and the gRPC stream hold exactly what
//! `extract` finds; the metrics carry the seed's names; the sink writes each change once
//! into PostgreSQL, however often it is run.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flowctl_components::arrow::flight::{endpoint, FlightFeed};
use flowctl_components::backoff::Backoff;
use flowctl_components::contract_data::batches;
use flowctl_proto::contract_data::contract_data_service_client::ContractDataServiceClient;
use flowctl_proto::contract_data::GetContractDataRequest;
use flowctl_testkit::postgres::{Durability, PgCluster};
use stellar_contract_data::{ContractDataChange, Extractor};
use support::{component, free_port, shared, wait_until, Proc};

const LOAD: &str = "load test network";
const PUBNET: &str = "Public Global Stellar Network ; September 2015";
const PROCESSOR: &str = env!("CARGO_BIN_EXE_contract-data-processor");

fn oracle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/contract_data_oracle.py")
}

fn has_stellar_sdk() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import stellar_sdk"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: python3 with stellar-sdk is not installed (`python3 -m pip install stellar-sdk` enables this test)");
    }
    ok
}

/// `contract-data-processor extract` of `inputs` checked by the oracle; its summary line.
fn extract_and_check(passphrase: &str, inputs: &[PathBuf]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("changes.jsonl");
    let out = Command::new(PROCESSOR)
        .args(["extract", "--network-passphrase", passphrase])
        .args(inputs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&records, &out.stdout).unwrap();
    let check = Command::new("python3")
        .arg(oracle())
        .args(["--passphrase", passphrase, "--records"])
        .arg(&records)
        .args(inputs)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        check.status.success(),
        "the stellar-sdk decoding disagrees:\n{said}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    said
}

#[test]
fn every_change_of_the_soroban_and_pubnet_ledgers_matches_an_independent_stellar_sdk_decoding() {
    let Some(root) = shared() else { return };
    if !has_stellar_sdk() {
        return;
    }
    for v in ["v22", "v23"] {
        let file = root.join(format!("loadtest/load-test-ledgers-{v}.xdr.zstd"));
        let said = extract_and_check(LOAD, &[file]);
        // Each busy ledger moves native XLM into 500 contracts' SAC balances.
        assert!(
            said.contains("1000 changes") && said.contains("1000 SAC balances"),
            "{v}: {said}"
        );
    }
    let pubnet = root.join("pubnet/ttp-example/ledgers-base64.txt");
    let said = extract_and_check(PUBNET, &[pubnet]);
    assert!(said.contains("5 ledgers, 0 changes"), "pre-Soroban: {said}");
    let lake = root.join("testnet/datastore/FFFFFFFF--0-63999");
    let files: Vec<PathBuf> = ["FFFFFC1A--997", "FFFFFC19--998", "FFFFFC18--999"]
        .iter()
        .map(|f| lake.join(format!("{f}.xdr.zstd")))
        .collect();
    let said = extract_and_check(support::TESTNET, &files);
    assert!(said.contains("3 ledgers"), "{said}");
}

#[test]
fn extract_names_a_bad_filter_and_a_reversed_range() {
    let out = Command::new(PROCESSOR)
        .args(["extract", "--network-passphrase", LOAD, "/dev/null"])
        .env("FILTER_CONTRACT_IDS", "CNOTACONTRACT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FILTER_CONTRACT_IDS=\"CNOTACONTRACT\""),
        "{err}"
    );
    let out = Command::new(PROCESSOR)
        .args([
            "extract",
            "--network-passphrase",
            LOAD,
            "--start",
            "9",
            "--end",
            "3",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--end 3 is before --start 9"));
}

/// The load-test ledgers 93 and 94 (protocol 23) and 95 (protocol 22): three in a row.
fn soroban_ledgers(root: &Path) -> Vec<stellar_xdr::LedgerCloseMeta> {
    let mut all = Vec::new();
    for v in ["v23", "v22"] {
        let file = root.join(format!("loadtest/load-test-ledgers-{v}.xdr.zstd"));
        for l in stellar_ledgers::open(&file, Default::default()).unwrap() {
            all.push(l.unwrap());
        }
    }
    all.retain(|l| (93..=95).contains(&stellar_ttp::ledger_sequence(l)));
    all.sort_by_key(stellar_ttp::ledger_sequence);
    assert_eq!(all.len(), 3);
    all
}

fn expected(ledgers: &[stellar_xdr::LedgerCloseMeta]) -> Vec<ContractDataChange> {
    let x = Extractor::new(LOAD);
    ledgers.iter().flat_map(|l| x.changes(l).unwrap()).collect()
}

/// A data-lake source of the Soroban ledgers and the processor reading it.
struct Pipeline {
    _dir: tempfile::TempDir,
    _source: Proc,
    processor: Proc,
    port: u16,
    health: u16,
    want: Vec<ContractDataChange>,
}

fn pipeline(processor_env: &[(&str, &str)]) -> Option<Pipeline> {
    let root = shared()?;
    let ledgers = soroban_ledgers(&root);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    flowctl_testkit::lake::write_lake(&lake, LOAD, &ledgers);
    let lake_url = lake.display().to_string();
    let (source_proc, source_port) = component(
        env!("CARGO_BIN_EXE_stellar-live-source"),
        &[
            ("BACKEND", "datalake"),
            ("DATALAKE_URL", &lake_url),
            ("NETWORK_PASSPHRASE", LOAD),
        ],
    );
    let source = format!("127.0.0.1:{source_port}");
    let health = free_port().to_string();
    let mut env = vec![
        ("SOURCE_ENDPOINT", source.as_str()),
        ("NETWORK_PASSPHRASE", LOAD),
        ("HEALTH_PORT", health.as_str()),
        ("BATCH_SIZE", "300"),
    ];
    env.extend_from_slice(processor_env);
    let (processor, port) = component(PROCESSOR, &env);
    Some(Pipeline {
        _dir: dir,
        _source: source_proc,
        processor,
        port,
        health: health.parse().unwrap(),
        want: expected(&ledgers),
    })
}

async fn flight_changes(port: u16, start: u32, end: u32) -> (Vec<ContractDataChange>, Vec<u32>) {
    let mut feed = FlightFeed::new(
        endpoint(&format!("127.0.0.1:{port}")).unwrap(),
        start,
        Some(end),
        Backoff::new(Duration::from_millis(20), Duration::from_millis(200)),
    );
    let (mut out, mut reached) = (Vec::new(), Vec::new());
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some((batch, through)) = feed.next().await.expect("the flight is read") {
            assert_eq!(batch.schema(), batches::schema());
            out.extend(batches::from_batch(&batch).unwrap());
            reached.push(through);
        }
    })
    .await
    .expect("a bounded flight ends by itself");
    (out, reached)
}

async fn grpc_changes(
    port: u16,
    contract_ids: Vec<String>,
) -> Vec<flowctl_proto::contract_data::ContractDataChange> {
    let mut client = ContractDataServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut stream = client
        .get_contract_data(GetContractDataRequest {
            start_ledger: 93,
            end_ledger: 95,
            contract_ids,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await.expect("the stream ends cleanly") {
        out.push(m);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_flight_and_the_grpc_stream_hold_exactly_the_changes_extract_finds() {
    let Some(p) = pipeline(&[]) else { return };
    assert_eq!(p.want.len(), 1000);
    let (flight, reached) = flight_changes(p.port, 93, 95).await;
    assert_eq!(flight, p.want, "the Flight's rows");
    // Batches of 300 rows or more end at a ledger boundary: 94 (500 rows), then 95.
    assert_eq!(reached, vec![94, 95]);
    let (tail, _) = flight_changes(p.port, 95, 95).await;
    let want_95: Vec<_> = p
        .want
        .iter()
        .filter(|c| c.ledger_sequence == 95)
        .cloned()
        .collect();
    assert_eq!(tail, want_95, "a flight of one ledger");

    // The same port serves ContractDataService.
    let messages = grpc_changes(p.port, Vec::new()).await;
    let want: Vec<_> = p
        .want
        .iter()
        .map(flowctl_components::contract_data::proto::to_message)
        .collect();
    assert_eq!(messages, want, "the gRPC stream");
    let sac = p.want[0].contract_id.clone();
    assert_eq!(grpc_changes(p.port, vec![sac]).await.len(), 1000);
    let other = stellar_strkey::Contract([9; 32]).to_string();
    assert!(grpc_changes(p.port, vec![other]).await.is_empty());
}

fn scrape(port: u16) -> String {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_keep_back_other_contracts_and_the_metrics_carry_the_seeds_names() {
    let other = stellar_strkey::Contract([9; 32]).to_string();
    let Some(p) = pipeline(&[("FILTER_CONTRACT_IDS", other.as_str())]) else {
        return;
    };
    let (flight, reached) = flight_changes(p.port, 93, 95).await;
    assert!(flight.is_empty(), "another contract's changes only");
    assert_eq!(reached.last(), Some(&95), "progress is still reported");
    let text = scrape(p.health);
    for (name, want) in [
        ("contract_data_contracts_processed_total", 0.0),
        ("contract_data_entries_skipped_total", 1000.0),
        ("contract_data_current_ledger", 95.0),
        ("contract_data_processing_errors_total", 0.0),
        ("contract_data_flowctl_registered", 0.0),
        ("contract_data_processing_duration_seconds_count", 3.0),
    ] {
        assert_eq!(metric(&text, name), Some(want), "{name} in\n{text}");
    }
    for name in [
        "contract_data_batches_created_total",
        "contract_data_bytes_processed_total",
        "contract_data_flowctl_heartbeats_sent_total",
        "contract_data_processing_latency_ms",
    ] {
        assert!(metric(&text, name).is_some(), "{name} in\n{text}");
    }
    assert!(metric(&text, "contract_data_bytes_processed_total").unwrap() > 100_000.0);
    drop(p.processor);
}

fn sink(processor_port: u16, pg: &PgCluster, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_contract-data-sink"));
    cmd.env_clear()
        .env("PROCESSOR_ENDPOINT", format!("127.0.0.1:{processor_port}"))
        .env("DATABASE_URL", pg.url())
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut done = None;
    wait_until(
        "the sink finishes its range",
        Duration::from_secs(60),
        || {
            done = child.try_wait().unwrap();
            done.is_some()
        },
    );
    child.wait_with_output().unwrap()
}

#[test]
fn the_sink_writes_each_change_once_with_its_full_balance_and_a_run_again_changes_nothing() {
    let Some(pg) = PgCluster::start(Durability::Off) else {
        return;
    };
    let Some(p) = pipeline(&[]) else { return };
    let range = [
        ("START_LEDGER", "93"),
        ("END_LEDGER", "95"),
        ("SINK_ID", "cd"),
    ];
    let out = sink(p.port, &pg, &range);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = |sql: &str| pg.query(sql).unwrap();
    assert_eq!(q("SELECT count(*) FROM contract_data.entries"), "1000");
    // Every change, with its key, value and balance, as extract found it.
    let rows = q(
        "SELECT string_agg(ledger_key_hash || ':' || ledger_sequence || ':' || \
                  change_index || ':' || key_xdr || ':' || val_xdr || ':' || balance_holder || \
                  ':' || balance::text, E'\\n' ORDER BY ledger_sequence, change_index) \
                  FROM contract_data.entries",
    );
    let want: Vec<String> = p
        .want
        .iter()
        .map(|c| {
            format!(
                "{}:{}:{}:{}:{}:{}:{}",
                c.ledger_key_hash,
                c.ledger_sequence,
                c.change_index,
                c.key_xdr,
                c.val_xdr.as_deref().unwrap(),
                c.balance_holder.as_deref().unwrap(),
                c.balance.as_deref().unwrap()
            )
        })
        .collect();
    assert_eq!(rows, want.join("\n"));
    assert_eq!(
        q("SELECT last_ledger || ' ' || events FROM contract_data.sink_checkpoints WHERE sink_id = 'cd@93-95'"),
        "95 1000"
    );
    // The latest state of each entry: one row per balance the ledgers touched.
    let live = q("SELECT count(*) FROM contract_data.current");
    let keys = q("SELECT count(DISTINCT ledger_key_hash) FROM contract_data.entries");
    assert_eq!(live, keys);
    assert_eq!(q("SELECT val->'map'->0->'val'->>'i128' = balance::text FROM contract_data.current LIMIT 1"), "t");

    // The same range again: written over, nothing doubled, nothing changed.
    let before = q("SELECT sum(xmin::text::bigint) FROM contract_data.entries");
    let out = sink(p.port, &pg, &range);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(q("SELECT count(*) FROM contract_data.entries"), "1000");
    assert_eq!(
        q("SELECT sum(xmin::text::bigint) FROM contract_data.entries"),
        before,
        "identical rows are not rewritten"
    );
}

#[test]
fn the_sink_names_a_missing_processor_address() {
    let out = Command::new(env!("CARGO_BIN_EXE_contract-data-sink"))
        .env_clear()
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PROCESSOR_ENDPOINT"));
}
