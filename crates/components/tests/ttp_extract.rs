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
