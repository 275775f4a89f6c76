//! `stellar-live-source` over a Galexie data lake on the local file system.

mod support;
use support::{free_port, live_source, source_client, stream_to_end, testnet_lake, Proc};

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use flowctl_proto::raw_ledger_service::{GetLedgerRangeRequest, StreamLedgersRequest};
use stellar_ledgers::DataLakeConfig as Manifest;
use stellar_xdr::{LedgerCloseMeta, LedgerCloseMetaBatch, Limits, ReadXdr, WriteXdr};

/// A source on the datalake backend; `env` may override anything.
fn source(env: &[(&str, &str)]) -> (Proc, u16) {
    live_source(&[&[("BACKEND", "datalake")], env].concat())
}

fn lcm_xdr(batch_file: &Path) -> Vec<Vec<u8>> {
    let raw = zstd::decode_all(std::fs::File::open(batch_file).unwrap()).unwrap();
    let batch = LedgerCloseMetaBatch::from_xdr(raw, Limits::none()).unwrap();
    batch
        .ledger_close_metas
        .iter()
        .map(|l| l.to_xdr(Limits::none()).unwrap())
        .collect()
}

#[test]
fn object_keys_follow_the_galexie_layout() {
    let m = |per_batch, per_partition| Manifest {
        network_passphrase: String::new(),
        version: "1.0".into(),
        compression: "zstd".into(),
        ledgers_per_batch: per_batch,
        batches_per_partition: per_partition,
    };
    assert_eq!(
        m(1, 64000).object_key(997),
        "FFFFFFFF--0-63999/FFFFFC1A--997.xdr.zstd"
    );
    assert_eq!(
        m(4, 2).object_key(10),
        "FFFFFFF7--8-15/FFFFFFF7--8-11.xdr.zstd"
    );
    assert_eq!(m(64, 1).object_key(130), "FFFFFF7F--128-191.xdr.zstd");
}

#[tokio::test]
async fn testnet_lake_serves_997_to_999_byte_identical_to_its_objects() {
    let Some(lake) = testnet_lake() else { return };
    let part = lake.join("FFFFFFFF--0-63999");
    let mut want = Vec::new();
    for f in [
        "FFFFFC1A--997.xdr.zstd",
        "FFFFFC19--998.xdr.zstd",
        "FFFFFC18--999.xdr.zstd",
    ] {
        want.extend(lcm_xdr(&part.join(f)));
    }
    let (_p, port) = source(&[
        ("DATALAKE_URL", lake.to_str().unwrap()),
        ("NETWORK_PASSPHRASE", "Test SDF Network ; September 2015"),
        ("START_LEDGER", "997"),
        ("END_LEDGER", "999"),
    ]);
    let mut c = source_client(port).await;
    let got = stream_to_end(&mut c, 997).await;
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![997, 998, 999]
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(&g.1, w);
    }
    let range = c
        .get_ledger_range(GetLedgerRangeRequest {
            start_ledger: 998,
            end_ledger: 1000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(range.ledgers.len(), 2);
    assert_eq!(range.ledgers[1].ledger_close_meta_xdr, want[2]);
}

/// Writes synthetic ledgers `first..first+4*files` as 4-ledger objects, 2 per partition.
fn write_objects(root: &Path, gen: &mut stellar_synth::Generator, files: u32) -> Vec<Vec<u8>> {
    let m = Manifest {
        network_passphrase: stellar_synth::DEFAULT_PASSPHRASE.into(),
        version: "1.0".into(),
        compression: "zstd".into(),
        ledgers_per_batch: 4,
        batches_per_partition: 2,
    };
    let mut all = Vec::new();
    for _ in 0..files {
        let start = gen.next_sequence();
        let ledgers: Vec<LedgerCloseMeta> = (0..4).map(|_| gen.next_ledger()).collect();
        all.extend(ledgers.iter().map(|l| l.to_xdr(Limits::none()).unwrap()));
        let batch = LedgerCloseMetaBatch {
            start_sequence: start,
            end_sequence: start + 3,
            ledger_close_metas: ledgers.try_into().unwrap(),
        };
        let key = root.join(m.object_key(start));
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        let tmp = key.with_extension("tmp");
        std::fs::write(
            &tmp,
            zstd::encode_all(&batch.to_xdr(Limits::none()).unwrap()[..], 3).unwrap(),
        )
        .unwrap();
        std::fs::rename(tmp, key).unwrap();
    }
    all
}

fn synthetic_lake() -> (tempfile::TempDir, stellar_synth::Generator, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".config.json"),
        format!(
            r#"{{"networkPassphrase":"{}","version":"1.0","compression":"zstd","ledgersPerBatch":4,"batchesPerPartition":2}}"#,
            stellar_synth::DEFAULT_PASSPHRASE
        ),
    )
    .unwrap();
    let mut gen = stellar_synth::Generator::new(stellar_synth::Config {
        first_ledger: 8,
        txs_per_ledger: 5,
        ..Default::default()
    })
    .unwrap();
    let ledgers = write_objects(dir.path(), &mut gen, 6);
    (dir, gen, ledgers)
}

#[tokio::test]
async fn multi_ledger_objects_are_read_across_files_and_partitions() {
    let (dir, _gen, ledgers) = synthetic_lake();
    let url = format!("file://{}", dir.path().display());
    let (_p, port) = source(&[
        ("DATALAKE_URL", &url),
        ("END_LEDGER", "29"),
        ("DATALAKE_PREFETCH", "3"),
    ]);
    let mut c = source_client(port).await;
    let mut stream = c
        .stream_raw_ledgers(StreamLedgersRequest { start_ledger: 10 })
        .await
        .unwrap()
        .into_inner();
    let mut want = 10u32;
    while let Some(l) = stream.message().await.unwrap() {
        assert_eq!(l.sequence, want);
        assert_eq!(l.ledger_close_meta_xdr, ledgers[(want - 8) as usize]);
        want += 1;
    }
    assert_eq!(want, 30, "stream ended right after END_LEDGER 29");
}

#[tokio::test]
async fn unbounded_stream_waits_at_the_tip_and_follows_new_objects() {
    let (dir, mut gen, ledgers) = synthetic_lake();
    let (_p, port) = source(&[
        ("DATALAKE_URL", dir.path().to_str().unwrap()),
        ("POLL_INTERVAL", "100ms"),
    ]);
    let mut c = source_client(port).await;
    let mut stream = c
        .stream_raw_ledgers(StreamLedgersRequest { start_ledger: 28 })
        .await
        .unwrap()
        .into_inner();
    for want in 28..32u32 {
        let l = stream.message().await.unwrap().unwrap();
        assert_eq!(l.sequence, want);
        assert_eq!(l.ledger_close_meta_xdr, ledgers[(want - 8) as usize]);
    }
    let idle = tokio::time::timeout(Duration::from_millis(700), stream.message()).await;
    assert!(idle.is_err(), "nothing past the tip yet");
    let more = write_objects(dir.path(), &mut gen, 1);
    for (i, want) in (32..36u32).enumerate() {
        let l = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("new object picked up")
            .unwrap()
            .unwrap();
        assert_eq!(l.sequence, want);
        assert_eq!(l.ledger_close_meta_xdr, more[i]);
    }
}

#[test]
fn a_directory_without_manifest_is_refused_naming_config_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stellar-live-source"))
        .env_clear()
        .env("PORT", free_port().to_string())
        .env("DATALAKE_URL", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(".config.json"), "{err}");
}

#[tokio::test]
async fn a_corrupt_object_ends_the_stream_with_an_error_naming_it() {
    let (dir, _gen, _ledgers) = synthetic_lake();
    let m = Manifest {
        network_passphrase: stellar_synth::DEFAULT_PASSPHRASE.into(),
        version: "1.0".into(),
        compression: "zstd".into(),
        ledgers_per_batch: 4,
        batches_per_partition: 2,
    };
    let key = m.object_key(16);
    std::fs::write(dir.path().join(&key), b"not zstd at all").unwrap();
    let (_p, port) = source(&[("DATALAKE_URL", dir.path().to_str().unwrap())]);
    let mut c = source_client(port).await;
    let mut stream = c
        .stream_raw_ledgers(StreamLedgersRequest { start_ledger: 12 })
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    let err = loop {
        match stream.message().await {
            Ok(Some(l)) => seqs.push(l.sequence),
            Ok(None) => panic!("the stream ended without an error"),
            Err(e) => break e,
        }
    };
    assert_eq!(
        seqs,
        vec![12, 13, 14, 15],
        "every ledger before the bad object"
    );
    assert!(err.message().contains(&key), "{}", err.message());
    assert!(err.message().contains("zstd"), "{}", err.message());
    // Asking again will not help: consumers are told so, and which ledger it is.
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err}");
    assert!(err.message().contains("ledger 16"), "{}", err.message());
}

#[tokio::test]
async fn with_dead_letters_but_no_control_plane_a_corrupt_object_still_ends_the_stream() {
    let (dir, _gen, _ledgers) = synthetic_lake();
    let m = Manifest {
        network_passphrase: stellar_synth::DEFAULT_PASSPHRASE.into(),
        version: "1.0".into(),
        compression: "zstd".into(),
        ledgers_per_batch: 4,
        batches_per_partition: 2,
    };
    std::fs::write(dir.path().join(m.object_key(16)), b"not zstd at all").unwrap();
    let (_p, port) = source(&[
        ("DATALAKE_URL", dir.path().to_str().unwrap()),
        ("FLOWCTL_ON_ERROR", "dead-letter"),
        ("ENABLE_FLOWCTL", "false"),
    ]);
    let mut c = source_client(port).await;
    let mut stream = c
        .stream_raw_ledgers(StreamLedgersRequest { start_ledger: 12 })
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    let err = loop {
        match stream.message().await {
            Ok(Some(l)) => seqs.push(l.sequence),
            Ok(None) => panic!("the stream ended without an error"),
            Err(e) => break e,
        }
    };
    assert_eq!(seqs, vec![12, 13, 14, 15]);
    assert_eq!(err.code(), tonic::Code::DataLoss, "{err}");
    assert!(err.message().contains("ledger 16"), "{}", err.message());
    assert!(
        err.message().contains("cannot record a dead letter"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_lake_object_inflating_past_the_cap_ends_the_stream_naming_the_object_and_limit() {
    let (dir, _gen, _ledgers) = synthetic_lake();
    let m = Manifest {
        network_passphrase: stellar_synth::DEFAULT_PASSPHRASE.into(),
        version: "1.0".into(),
        compression: "zstd".into(),
        ledgers_per_batch: 4,
        batches_per_partition: 2,
    };
    // Zeros compress to almost nothing: a small object inflating past 4 ledgers' maximum.
    let bomb = vec![0u8; (m.max_object_bytes() + (1 << 20)) as usize];
    let key = m.object_key(16);
    std::fs::write(
        dir.path().join(&key),
        zstd::encode_all(&bomb[..], 19).unwrap(),
    )
    .unwrap();
    drop(bomb);
    let (_p, port) = source(&[("DATALAKE_URL", dir.path().to_str().unwrap())]);
    let mut c = source_client(port).await;
    let mut stream = c
        .stream_raw_ledgers(StreamLedgersRequest { start_ledger: 12 })
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    let err = loop {
        match stream.message().await {
            Ok(Some(l)) => seqs.push(l.sequence),
            Ok(None) => panic!("the stream ended without an error"),
            Err(e) => break e,
        }
    };
    assert_eq!(seqs, vec![12, 13, 14, 15], "every ledger before the object");
    assert!(err.message().contains(&key), "{}", err.message());
    let limit = format!("limit of {} bytes", m.max_object_bytes());
    assert!(err.message().contains(&limit), "{}", err.message());
}

#[tokio::test]
async fn a_lake_object_holding_other_ledgers_ends_the_stream_naming_expected_and_found() {
    let (dir, _gen, _ledgers) = synthetic_lake();
    let m = Manifest {
        network_passphrase: stellar_synth::DEFAULT_PASSPHRASE.into(),
        version: "1.0".into(),
        compression: "zstd".into(),
        ledgers_per_batch: 4,
        batches_per_partition: 2,
    };
    // Ledgers 20..=23 in the place of 16..=19.
    let key = m.object_key(16);
    std::fs::copy(dir.path().join(m.object_key(20)), dir.path().join(&key)).unwrap();
    let (_p, port) = source(&[("DATALAKE_URL", dir.path().to_str().unwrap())]);
    let mut c = source_client(port).await;
    let mut stream = c
        .stream_raw_ledgers(StreamLedgersRequest { start_ledger: 12 })
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    let err = loop {
        match stream.message().await {
            Ok(Some(l)) => seqs.push(l.sequence),
            Ok(None) => panic!("the stream ended without an error after {seqs:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(seqs, vec![12, 13, 14, 15], "every ledger before the gap");
    assert!(err.message().contains(&key), "{}", err.message());
    assert!(
        err.message().contains("expected ledger 16, found 20"),
        "{}",
        err.message()
    );
}
