//! `ttp-processor extract` as a user runs it: real files in, JSONL on stdout.

use std::path::{Path, PathBuf};
use std::process::Command;

fn shared() -> Option<PathBuf> {
    let found = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .skip(2)
        .map(|a| a.join("../shared/testdata/stellar"))
        .find(|p| p.is_dir());
    if found.is_none() {
        eprintln!("skipping: Stellar fixtures not found in ../shared/testdata/stellar");
    }
    found
}

fn extract(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ttp-processor"))
        .arg("extract")
        .args(args)
        .output()
        .unwrap()
}

fn parse_lines(s: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(s)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn golden(root: &Path, name: &str) -> Vec<serde_json::Value> {
    parse_lines(&std::fs::read(root.join(format!("golden/{name}.ttp-events.jsonl"))).unwrap())
}

const TESTNET: &str = "Test SDF Network ; September 2015";

#[test]
fn every_input_kind_extracts_the_golden_events() {
    let Some(root) = shared() else { return };
    let p = |rel: &str| root.join(rel).to_string_lossy().into_owned();
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "Public Global Stellar Network ; September 2015",
            vec![p("pubnet/ttp-example/ledgers-base64.txt")],
            "pubnet-ttp-example",
        ),
        (
            TESTNET,
            vec![
                "--start".into(),
                "997".into(),
                "--end".into(),
                "999".into(),
                p("testnet/datastore"),
            ],
            "testnet-datastore-997-999",
        ),
        (
            "load test network",
            vec![p("loadtest/load-test-ledgers-v22.xdr.zstd")],
            "loadtest-v22",
        ),
        (
            "load test network",
            vec![p("loadtest/load-test-ledgers-v23.xdr.zstd")],
            "loadtest-v23",
        ),
    ];
    for (passphrase, inputs, name) in cases {
        let mut args = vec!["--network-passphrase", passphrase];
        args.extend(inputs.iter().map(String::as_str));
        let out = extract(&args);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(parse_lines(&out.stdout), golden(&root, name), "{name}");
    }

    // Raw XDR files with the 4-byte version prefix, many inputs in one run.
    let dir = root.join("testnet/lighthorizon-1410048-1410367/ledgers");
    let files: Vec<String> = (1410048..=1410367)
        .map(|s| dir.join(s.to_string()).to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["--network-passphrase", TESTNET];
    args.extend(files.iter().map(String::as_str));
    let out = extract(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        parse_lines(&out.stdout),
        golden(&root, "testnet-lighthorizon-1410048-1410367")
    );
}

#[test]
fn a_corrupt_file_is_named_in_the_error_and_fails_the_run() {
    let Some(root) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("1410050");
    let good =
        std::fs::read(root.join("testnet/lighthorizon-1410048-1410367/ledgers/1410050")).unwrap();
    std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
    let out = extract(&["--network-passphrase", TESTNET, bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(bad.to_str().unwrap()), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_wrong_passphrase_names_the_file_and_ledger() {
    let Some(root) = shared() else { return };
    let file = root.join("testnet/lighthorizon-1410048-1410367/ledgers/1410048");
    let out = extract(&[
        "--network-passphrase",
        "not the network",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1410048") && err.contains("wrong network passphrase"),
        "{err}"
    );
}

#[test]
fn a_data_lake_without_start_is_a_usage_error() {
    let Some(root) = shared() else { return };
    let out = extract(&[
        "--network-passphrase",
        TESTNET,
        root.join("testnet/datastore").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--start"));
}

/// A one-ledger-per-object lake of synthetic ledgers `first..first+count`.
fn synthetic_lake(first: u32, count: u32) -> (tempfile::TempDir, stellar_ledgers::DataLakeConfig) {
    use stellar_xdr::{LedgerCloseMetaBatch, Limits, WriteXdr};
    let dir = tempfile::tempdir().unwrap();
    let m = stellar_ledgers::DataLakeConfig {
        network_passphrase: stellar_synth::DEFAULT_PASSPHRASE.into(),
        version: "1.0".into(),
        compression: "zstd".into(),
        ledgers_per_batch: 1,
        batches_per_partition: 64000,
    };
    std::fs::write(
        dir.path().join(".config.json"),
        format!(
            r#"{{"networkPassphrase":"{}","version":"1.0","compression":"zstd","ledgersPerBatch":1,"batchesPerPartition":64000}}"#,
            m.network_passphrase
        ),
    )
    .unwrap();
    let mut gen = stellar_synth::Generator::new(stellar_synth::Config {
        first_ledger: first,
        txs_per_ledger: 3,
        ..Default::default()
    })
    .unwrap();
    for _ in 0..count {
        let start = gen.next_sequence();
        let batch = LedgerCloseMetaBatch {
            start_sequence: start,
            end_sequence: start,
            ledger_close_metas: vec![gen.next_ledger()].try_into().unwrap(),
        };
        let key = dir.path().join(m.object_key(start));
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        let xdr = batch.to_xdr(Limits::none()).unwrap();
        std::fs::write(key, zstd::encode_all(&xdr[..], 3).unwrap()).unwrap();
    }
    (dir, m)
}

#[test]
fn extract_refuses_a_lake_whose_ledger_998_object_holds_ledger_999() {
    let (dir, m) = synthetic_lake(997, 4);
    let misplaced = dir.path().join(m.object_key(998));
    std::fs::rename(dir.path().join(m.object_key(999)), &misplaced).unwrap();
    let lake = dir.path().to_str().unwrap();
    let passphrase = stellar_synth::DEFAULT_PASSPHRASE;
    for bounds in [&["--end", "999"][..], &[]] {
        let mut args = vec!["--network-passphrase", passphrase, "--start", "997"];
        args.extend_from_slice(bounds);
        args.push(lake);
        let out = extract(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bounds:?}: exit 0; stderr: {err}");
        assert!(
            err.contains("expected ledger 998, found 999"),
            "{bounds:?}: {err}"
        );
        assert!(
            err.contains(misplaced.to_str().unwrap()),
            "{bounds:?}: {err}"
        );
    }

    // The same lake untouched extracts every ledger.
    let (whole, _) = synthetic_lake(997, 4);
    let out = extract(&[
        "--network-passphrase",
        passphrase,
        "--start",
        "997",
        "--end",
        "1000",
        whole.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
