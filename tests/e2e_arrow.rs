//! The Arrow data plane under `flowctl run`: `stellar-arrow-source` → `ttp-arrow-processor`
//! → `arrow-analytics-sink` into a Parquet dataset that DuckDB and pyarrow read back holding
//! exactly Stellar's golden events, and a sink killed with SIGKILL mid-stream that leaves
//! every event once and never a partial file in sight.

mod e2e_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e_common::*;

const PUBNET: &str = "Public Global Stellar Network ; September 2015";

/// Where a pipeline's ledgers come from.
enum Ledgers<'a> {
    Lake(&'a Path),
    /// Synthetic ledgers at this many a second.
    Synthetic(f64),
}

/// A pipeline of the three Arrow components into Parquet under `out`.
fn arrow_pipeline(
    dir: &Path,
    name: &str,
    ledgers: Ledgers,
    passphrase: &str,
    range: (u32, u32),
    out: &Path,
    sink_env: &str,
) -> PathBuf {
    let formats = if sink_env.contains("OUTPUT_FORMATS") {
        ""
    } else {
        "        OUTPUT_FORMATS: parquet\n"
    };
    let sink_env = format!("{formats}{sink_env}");
    let backend = match ledgers {
        Ledgers::Lake(lake) => format!("DATALAKE_URL: \"{}\"", lake.display()),
        Ledgers::Synthetic(rate) => format!("BACKEND: synthetic\n        SYNTHETIC_RATE: \"{rate}\"\n        SYNTHETIC_TXS_PER_LEDGER: \"10\""),
    };
    let text = format!(
        "apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: {name}
spec:
  range: {{from_ledger: {}, to_ledger: {}}}
  sources:
    - id: ledgers
      command: stellar-arrow-source
      env:
        {backend}
        NETWORK_PASSPHRASE: \"{passphrase}\"
      restart: {{initial_delay: 100ms}}
  processors:
    - id: ttp
      command: ttp-arrow-processor
      inputs: [ledgers]
      env:
        NETWORK_PASSPHRASE: \"{passphrase}\"
        MAX_BACKOFF: 500ms
      restart: {{initial_delay: 100ms}}
  sinks:
    - id: sink
      command: arrow-analytics-sink
      inputs: [ttp]
      env:
        OUTPUT_DIR: \"{}\"
        MAX_BACKOFF: 500ms
{sink_env}
      restart: {{initial_delay: 100ms}}
",
        range.0,
        range.1,
        out.display()
    );
    pipeline(dir, name, &text)
}

fn has_python_readers() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import duckdb, pyarrow.dataset"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED: python3 with duckdb and pyarrow is not installed \
             (`python3 -m pip install duckdb pyarrow` enables this test)"
        );
    }
    ok
}

/// The dataset's events in the golden JSON shape, read by `reader` (duckdb or pyarrow).
fn parquet_events(reader: &str, root: &Path) -> Vec<serde_json::Value> {
    let script = repo().join("crates/components/tests/support/parquet_events.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(reader)
        .arg(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{reader}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_jsonl(&String::from_utf8_lossy(&out.stdout))
}

fn assert_same(ours: &[serde_json::Value], want: &[serde_json::Value], what: &str) {
    for (i, (o, w)) in ours.iter().zip(want).enumerate() {
        assert_eq!(o, w, "{what}: event {i} differs");
    }
    assert_eq!(ours.len(), want.len(), "{what}: event count");
}

fn run_ok(dir: &Path, file: &Path, extra: &[&str]) {
    let mut cmd = run_cmd(dir, file);
    cmd.args(extra);
    let o = Running::spawn(dir, cmd).finish(Duration::from_secs(120));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_testnet_lake_and_pubnet_ledgers_land_in_parquet_holding_exactly_the_golden_events() {
    let Some(root) = testdata() else { return };
    if !has_python_readers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("testnet");
    let lake = root.join("testnet/datastore");
    let file = arrow_pipeline(
        dir.path(),
        "arrow-testnet",
        Ledgers::Lake(&lake),
        TESTNET,
        (997, 999),
        &out,
        "",
    );
    run_ok(dir.path(), &file, &[]);
    let golden = golden_997_999(&root);
    assert_same(&parquet_events("duckdb", &out), &golden, "duckdb");
    assert_same(&parquet_events("pyarrow", &out), &golden, "pyarrow");
    assert!(
        out.join("date=2024-02-06").is_dir(),
        "Hive-partitioned by close date"
    );

    // Five pubnet ledgers years apart, a bounded run each, into one dataset.
    let text = std::fs::read_to_string(root.join("pubnet/ttp-example/ledgers-base64.txt")).unwrap();
    let mut pubnet: Vec<stellar_xdr::LedgerCloseMeta> = text
        .lines()
        .map(|l| {
            use stellar_xdr::ReadXdr;
            stellar_xdr::LedgerCloseMeta::from_xdr_base64(l, stellar_xdr::Limits::none()).unwrap()
        })
        .collect();
    pubnet.sort_by_key(stellar_ledgers::ledger_sequence);
    let pubnet_lake = dir.path().join("pubnet-lake");
    flowctl_testkit::lake::write_lake(&pubnet_lake, PUBNET, &pubnet);
    let out = dir.path().join("pubnet");
    let first = stellar_ledgers::ledger_sequence(&pubnet[0]);
    let file = arrow_pipeline(
        dir.path(),
        "arrow-pubnet",
        Ledgers::Lake(&pubnet_lake),
        PUBNET,
        (first, first),
        &out,
        "",
    );
    for l in &pubnet {
        let seq = stellar_ledgers::ledger_sequence(l).to_string();
        run_ok(
            dir.path(),
            &file,
            &["--from-ledger", &seq, "--to-ledger", &seq],
        );
    }
    let golden = parse_jsonl(
        &std::fs::read_to_string(root.join("golden/pubnet-ttp-example.ttp-events.jsonl")).unwrap(),
    );
    // The golden file is in the input's order; the dataset in ledger order.
    let mut golden_sorted = golden.clone();
    golden_sorted.sort_by_key(ledger_of);
    assert_eq!(golden_sorted.len(), 1222);
    assert_same(
        &parquet_events("duckdb", &out),
        &golden_sorted,
        "duckdb pubnet",
    );
    assert_same(
        &parquet_events("pyarrow", &out),
        &golden_sorted,
        "pyarrow pubnet",
    );
}

/// Every `*.parquet` visible under `root` (a reader's glob skips dot-names).
fn visible_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(parts) = std::fs::read_dir(root) else {
        return out;
    };
    for part in parts.flatten() {
        let Ok(files) = std::fs::read_dir(part.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(".parquet") && !name.starts_with('.') {
                out.push(f.path());
            }
        }
    }
    out
}

#[test]
fn a_sink_killed_mid_stream_leaves_every_event_once_and_no_partial_file_in_sight() {
    if !has_python_readers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("parquet");
    let (start, end) = (2, 301);
    let file = arrow_pipeline(
        dir.path(),
        "arrow-kill",
        Ledgers::Synthetic(60.0),
        TESTNET,
        (start, end),
        &out,
        "        FLUSH_INTERVAL: 200ms",
    );
    let run = Running::start(dir.path(), &file);
    let pid = run.ready_pid("sink", Duration::from_secs(30));
    // Every file that becomes visible is whole: its footer reads, at any moment.
    let mut checked = BTreeSet::new();
    let check_visible = |checked: &mut BTreeSet<PathBuf>| {
        for f in visible_files(&out) {
            if checked.insert(f.clone()) {
                let reader = std::fs::File::open(&f)
                    .map_err(|e| e.to_string())
                    .and_then(|file| {
                        parquet::file::reader::SerializedFileReader::new(file)
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = reader {
                    panic!("{} is visible but not whole: {e}", f.display());
                }
            }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while checked.len() < 3 && Instant::now() < deadline {
        check_visible(&mut checked);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(checked.len() >= 3, "files appear as the sink flushes");
    kill9(pid);
    // The supervisor's view shows the killed sink until it reaps it: wait for the new one.
    wait_for("flowctl restarts the sink", Duration::from_secs(30), || {
        run.component("sink").is_some_and(|c| {
            c["restarts"].as_u64() >= Some(1) && c["pid"].as_i64() != Some(i64::from(pid))
        })
    });
    // The restarted sink's files too, until the run ends.
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = std::thread::spawn({
        let (out, finished) = (out.clone(), finished.clone());
        move || {
            let mut checked = checked;
            while !finished.load(std::sync::atomic::Ordering::SeqCst) {
                for f in visible_files(&out) {
                    if checked.insert(f.clone()) {
                        let file = std::fs::File::open(&f).unwrap();
                        assert!(
                            parquet::file::reader::SerializedFileReader::new(file).is_ok(),
                            "{} is visible but not whole",
                            f.display()
                        );
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    let o = run.finish(Duration::from_secs(90));
    finished.store(true, std::sync::atomic::Ordering::SeqCst);
    watch.join().expect("no partial file was visible");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let want = reference_events(start, end);
    assert!(want.len() > 1000, "{} events", want.len());
    assert_same(&parquet_events("pyarrow", &out), &want, "after the kill");
}

#[test]
fn the_arrow_example_runs_and_duckdb_counts_its_events_by_type_as_the_readme_shows() {
    if !has_python_readers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = run_cmd(dir.path(), &repo().join("examples/arrow-analytics.yaml"));
    cmd.current_dir(dir.path());
    let o = Running::spawn(dir.path(), cmd).finish(Duration::from_secs(120));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let query = "SELECT event_type, count(*) AS events, sum(amount) AS stroops \
                 FROM read_parquet('analytics-out/**/*.parquet', hive_partitioning = true) \
                 GROUP BY event_type ORDER BY events DESC";
    let out = Command::new("python3")
        .args([
            "-c",
            &format!("import duckdb; print(duckdb.sql(\"{query}\").fetchall())"),
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = String::from_utf8_lossy(&out.stdout);
    // The same ledgers through the gRPC pipeline, counted by type.
    let want = reference_events(2, 201);
    for kind in ["fee", "transfer"] {
        let n = want.iter().filter(|e| e.get(kind).is_some()).count();
        assert!(n > 0);
        assert!(
            counts.contains(&format!("('{kind}', {n}, ")),
            "{kind}: {n} expected in {counts}"
        );
    }
}

#[test]
fn the_arrow_components_register_with_the_seeds_types_and_metadata_and_heartbeat_their_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("parquet");
    let file = arrow_pipeline(
        dir.path(),
        "arrow-registered",
        Ledgers::Synthetic(20.0),
        TESTNET,
        (2, 1000),
        &out,
        "        OUTPUT_FORMATS: parquet,websocket\n        WEBSOCKET_PORT: \"0\"",
    );
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "      env:\n",
        "      env:\n        FLOWCTL_HEARTBEAT_INTERVAL: 200ms\n",
    );
    std::fs::write(&file, text).unwrap();
    let run = Running::start(dir.path(), &file);
    let pid = run.ready_pid("sink", Duration::from_secs(30));
    let endpoint = endpoint_of(pid);
    let wanted = [
        ("ledgers", "source", "arrow_batches_sent_total"),
        ("ttp", "processor", "events_extracted_total"),
        ("sink", "sink", "websocket_connections"),
    ];
    let mut listed = serde_json::Value::Null;
    let all_there = |listed: &serde_json::Value| {
        wanted.iter().all(|(id, _, metric)| {
            listed.as_array().is_some_and(|a| {
                a.iter()
                    .any(|s| s["service_id"] == *id && s["metrics"].get(*metric).is_some())
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !all_there(&listed) {
        std::thread::sleep(Duration::from_millis(100));
        let o = Command::new(flowctl())
            .args(["list", "--endpoint", &endpoint, "-o", "json"])
            .output()
            .unwrap();
        listed = serde_json::from_slice(&o.stdout).unwrap_or_default();
    }
    assert!(all_there(&listed), "{listed:#}");
    let service = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service_id"] == id)
            .unwrap()
            .clone()
    };
    for (id, kind, _) in wanted {
        assert_eq!(service(id)["type"], kind);
    }
    // The seed's registration: event types and metadata.
    let source = service("ledgers");
    assert_eq!(
        source["output_event_types"],
        serde_json::json!(["stellar_ledger_service.StellarLedger"])
    );
    for (k, v) in [
        ("network", TESTNET),
        ("storage_type", "synthetic"),
        ("backend_type", "synthetic"),
        ("batch_size", "1000"),
        ("compression", "none"),
    ] {
        assert_eq!(source["metadata"][k], v, "{source}");
    }
    let processor = service("ttp");
    assert_eq!(
        processor["input_event_types"],
        serde_json::json!(["stellar_ledger_service.StellarLedger"])
    );
    assert_eq!(
        processor["output_event_types"],
        serde_json::json!(["ttp_event_service.TTPEvent"])
    );
    assert_eq!(
        processor["metadata"]["processor_type"],
        "ttp_event_extraction"
    );
    assert_eq!(
        processor["metadata"]["event_types"],
        "transfer,mint,burn,clawback,fee"
    );
    let sink = service("sink");
    assert_eq!(
        sink["input_event_types"],
        serde_json::json!(["ttp_event_service.TTPEvent"])
    );
    assert_eq!(sink["metadata"]["output_formats"], "parquet,websocket");
    assert_eq!(sink["metadata"]["websocket_enabled"], "true");
    let endpoints = sink["metadata"]["endpoints"].as_str().unwrap();
    assert!(
        endpoints.starts_with("ws://127.0.0.1:") && endpoints.ends_with("/ws"),
        "{endpoints}"
    );
}
