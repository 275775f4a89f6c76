//! The testnet data lake through the whole pipeline under `flowctl run`: the events in the
//! JSON-lines file are exactly the golden ones.

mod e2e_common;

use std::time::Duration;

use e2e_common::*;

#[test]
fn datalake_ledgers_997_to_999_give_exactly_the_golden_events_in_the_jsonl_file() {
    let Some(root) = testdata() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("events.jsonl");
    let file = pipeline(
        dir.path(),
        "datalake",
        &format!(
            "apiVersion: flowctl/v1
kind: Pipeline
metadata:
  name: testnet-datalake
spec:
  sources:
    - id: datalake
      command: stellar-live-source
      env:
        BACKEND: datalake
        DATALAKE_URL: \"{lake}\"
        NETWORK_PASSPHRASE: \"{TESTNET}\"
        START_LEDGER: \"997\"
        END_LEDGER: \"999\"
  processors:
    - id: ttp
      command: ttp-processor
      inputs: [datalake]
      env:
        NETWORK_PASSPHRASE: \"{TESTNET}\"
  sinks:
    - id: jsonl
      command: ttp-sink
      inputs: [ttp]
      env:
        SINK: jsonl
        OUTPUT_FILE: \"{out}\"
        START_LEDGER: \"997\"
        END_LEDGER: \"999\"
",
            lake = root.join("testnet/datastore").display(),
            out = out_file.display()
        ),
    );
    let out = Running::start(dir.path(), &file).finish(Duration::from_secs(120));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = parse_jsonl(&std::fs::read_to_string(&out_file).unwrap());
    let golden = golden_997_999(&root);
    assert_eq!(got.len(), golden.len());
    for (i, (g, w)) in got.iter().zip(&golden).enumerate() {
        assert_eq!(g, w, "event {i}");
    }
}

#[test]
fn example_testnet_datalake_writes_the_golden_events_next_to_the_repository() {
    // The example itself, as documented: relative paths from the repository root.
    let Some(root) = testdata() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The example appends to ttp-events.jsonl at the repository root: run a copy whose working
    // directory is a temp dir holding a link to the shared data, so the repository stays clean.
    let work = dir.path().join("repo");
    std::fs::create_dir_all(work.join("examples")).unwrap();
    std::os::unix::fs::symlink(
        root.parent().unwrap().parent().unwrap(),
        dir.path().join("shared"),
    )
    .unwrap();
    let text = std::fs::read_to_string(repo().join("examples/testnet-datalake.yaml")).unwrap();
    let file = work.join("examples/testnet-datalake.yaml");
    std::fs::write(&file, text).unwrap();
    let out = Running::start(dir.path(), &file).finish(Duration::from_secs(120));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = parse_jsonl(&std::fs::read_to_string(work.join("ttp-events.jsonl")).unwrap());
    assert_eq!(got, golden_997_999(&root));
}
