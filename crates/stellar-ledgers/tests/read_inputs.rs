//! Every input kind, read from the real fixtures in `../shared/testdata/stellar`.

use std::path::{Path, PathBuf};

use stellar_ledgers::{
    ledger_sequence, open, DataLake, DataLakeConfig, ErrorKind, InputKind, LedgerRange,
};

fn testdata() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/stellar");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: Stellar test data not found at {}", dir.display());
        None
    }
}

fn sequences(path: &Path, range: LedgerRange) -> (InputKind, Vec<u32>) {
    let ledgers = open(path, range).unwrap();
    let kind = ledgers.kind();
    (
        kind,
        ledgers.map(|l| ledger_sequence(&l.unwrap())).collect(),
    )
}

#[test]
fn base64_lines_keep_file_order() {
    let Some(data) = testdata() else { return };
    let (kind, seqs) = sequences(
        &data.join("pubnet/ttp-example/ledgers-base64.txt"),
        LedgerRange::default(),
    );
    assert_eq!(kind, InputKind::Base64Lines);
    assert_eq!(seqs, vec![6154623, 16154623, 26154623, 46154623, 36154623]);
}

#[test]
fn raw_file_with_version_prefix_decodes() {
    let Some(data) = testdata() else { return };
    let (kind, seqs) = sequences(
        &data.join("testnet/lighthorizon-1410048-1410367/ledgers/1410100"),
        LedgerRange::default(),
    );
    assert_eq!(kind, InputKind::RawXdr);
    assert_eq!(seqs, vec![1410100]);
}

#[test]
fn raw_file_without_version_prefix_decodes() {
    let Some(data) = testdata() else { return };
    let bytes =
        std::fs::read(data.join("testnet/lighthorizon-1410048-1410367/ledgers/1410100")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.xdr");
    std::fs::write(&bare, &bytes[4..]).unwrap();
    assert_eq!(sequences(&bare, LedgerRange::default()).1, vec![1410100]);
}

#[test]
fn zstd_batch_object_decodes() {
    let Some(data) = testdata() else { return };
    let path = data.join("testnet/datastore/FFFFFFFF--0-63999/FFFFFC19--998.xdr.zstd");
    assert_eq!(
        sequences(&path, LedgerRange::default()),
        (InputKind::ZstdBatch, vec![998])
    );
}

#[test]
fn zstd_frame_stream_decodes_every_frame() {
    let Some(data) = testdata() else { return };
    let (kind, seqs) = sequences(
        &data.join("loadtest/load-test-ledgers-v23.xdr.zstd"),
        LedgerRange::default(),
    );
    assert_eq!(kind, InputKind::ZstdFrames);
    assert_eq!(seqs, vec![93, 94, 97]);
    let (_, seqs) = sequences(
        &data.join("loadtest/load-test-ledgers-v22.xdr.zstd"),
        LedgerRange::new(Some(96), None),
    );
    assert_eq!(seqs, vec![98]);
}

#[test]
fn data_lake_directory_reads_a_range_through_its_manifest() {
    let Some(data) = testdata() else { return };
    let lake = data.join("testnet/datastore");
    let (kind, seqs) = sequences(&lake, LedgerRange::new(Some(997), Some(999)));
    assert_eq!(kind, InputKind::DataLake);
    assert_eq!(seqs, vec![997, 998, 999]);
    // Open-ended: up to the last object present.
    assert_eq!(
        sequences(&lake, LedgerRange::new(Some(998), None)).1,
        vec![998, 999]
    );
    assert_eq!(
        DataLake::open(&lake).unwrap().config().network_passphrase,
        "Test SDF Network ; September 2015"
    );
}

#[test]
fn data_lake_missing_ledger_in_a_bounded_range_is_an_error_naming_it() {
    let Some(data) = testdata() else { return };
    let err = open(
        &data.join("testnet/datastore"),
        LedgerRange::new(Some(998), Some(1001)),
    )
    .unwrap()
    .find_map(Result::err)
    .expect("ledger 1000 is missing");
    assert_eq!(err.ledger, Some(1000));
    assert!(
        err.to_string()
            .contains("ledger 1000 is not in the data lake"),
        "{err}"
    );
}

#[test]
fn data_lake_needs_a_start_ledger() {
    let Some(data) = testdata() else { return };
    let err = open(&data.join("testnet/datastore"), LedgerRange::default())
        .err()
        .unwrap();
    assert!(matches!(err.kind, ErrorKind::Usage(_)));
    assert!(err.to_string().contains("--start"), "{err}");
}

#[test]
fn object_keys_follow_the_galexie_layout() {
    let one = DataLakeConfig::parse(
        Path::new("m"),
        br#"{"networkPassphrase":"p","ledgersPerBatch":1,"batchesPerPartition":64000}"#,
    )
    .unwrap();
    assert_eq!(
        one.object_key(997),
        "FFFFFFFF--0-63999/FFFFFC1A--997.xdr.zstd"
    );
    assert_eq!(
        one.object_key(64000),
        "FFFF05FF--64000-127999/FFFF05FF--64000.xdr.zstd"
    );
    let many = DataLakeConfig::parse(
        Path::new("m"),
        br#"{"networkPassphrase":"p","ledgersPerBatch":64,"batchesPerPartition":1}"#,
    )
    .unwrap();
    assert_eq!(many.object_key(130), "FFFFFF7F--128-191.xdr.zstd");
}

#[test]
fn bad_manifest_is_an_error_naming_the_field() {
    let err = DataLakeConfig::parse(
        Path::new("lake/.config.json"),
        br#"{"networkPassphrase":"p","ledgersPerBatch":0,"batchesPerPartition":1}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "lake/.config.json: bad data-lake manifest: ledgersPerBatch must be at least 1"
    );
    let err = DataLakeConfig::parse(Path::new("m"), b"{}").unwrap_err();
    assert!(
        err.to_string()
            .contains("missing field `networkPassphrase`"),
        "{err}"
    );
}

#[test]
fn malformed_inputs_are_errors_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, [0u8, 0, 0, 0, 0, 0, 0, 9, 1, 2, 3]).unwrap();
    let err = open(&garbage, LedgerRange::default()).err().unwrap();
    assert!(
        err.to_string().starts_with(&format!(
            "{}: not a valid LedgerCloseMeta",
            garbage.display()
        )),
        "{err}"
    );

    let lines = dir.path().join("lines.txt");
    std::fs::write(&lines, "AAAA\n").unwrap();
    let err = open(&lines, LedgerRange::default()).err().unwrap();
    assert!(
        err.to_string()
            .contains("lines.txt: line 1: not a valid LedgerCloseMeta"),
        "{err}"
    );

    let zst = dir.path().join("x.zstd");
    std::fs::write(&zst, [0x28, 0xB5, 0x2F, 0xFD, 0, 0]).unwrap();
    assert!(matches!(
        open(&zst, LedgerRange::default()).err().unwrap().kind,
        ErrorKind::Zstd(_)
    ));
}

#[test]
fn truncated_frame_stream_names_the_frame_and_the_ledger_before_it() {
    let Some(data) = testdata() else { return };
    let compressed = std::fs::read(data.join("loadtest/load-test-ledgers-v22.xdr.zstd")).unwrap();
    let content = zstd::decode_all(&compressed[..]).unwrap();
    let err = stellar_ledgers::decode_frames(Path::new("cut"), &content[..content.len() - 100])
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cut: frame 2 (after ledger 95): not a valid LedgerCloseMeta"),
        "{err}"
    );
}

#[test]
fn a_lake_object_inflating_past_the_cap_is_refused_naming_the_object() {
    let lake = tempfile::tempdir().unwrap();
    std::fs::write(
        lake.path().join(".config.json"),
        br#"{"networkPassphrase":"Test SDF Network ; September 2015","ledgersPerBatch":1,"batchesPerPartition":1}"#,
    )
    .unwrap();
    let config = DataLake::open(lake.path()).unwrap().config().clone();
    // Zeros compress to almost nothing: a small object that inflates past one ledger's limit.
    let bomb = vec![0u8; (stellar_ledgers::MAX_LEDGER_BYTES + (1 << 20)) as usize];
    let compressed = zstd::encode_all(&bomb[..], 19).unwrap();
    assert!(compressed.len() < 64 * 1024, "{} bytes", compressed.len());
    let key = config.object_key(5);
    std::fs::write(lake.path().join(&key), &compressed).unwrap();

    let err = DataLake::open(lake.path())
        .unwrap()
        .read_batch(5)
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&key), "{message}");
    assert!(
        message.contains(&format!("limit of {} bytes", config.max_object_bytes())),
        "{message}"
    );
}
