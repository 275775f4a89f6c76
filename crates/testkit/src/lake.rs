//! Galexie data lakes written from ledgers, for the tests of the components that read one.

use std::path::Path;

use stellar_xdr::{LedgerCloseMeta, LedgerCloseMetaBatch, Limits, WriteXdr};

/// Writes `ledgers` under `root` as a data lake of one ledger an object (zstd, with its
/// `.config.json`).
pub fn write_lake(root: &Path, passphrase: &str, ledgers: &[LedgerCloseMeta]) {
    let config = stellar_ledgers::DataLakeConfig {
        network_passphrase: passphrase.into(),
        version: "1.0".into(),
        compression: "zstd".into(),
        ledgers_per_batch: 1,
        batches_per_partition: 64000,
    };
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(
        root.join(".config.json"),
        serde_json::json!({
            "networkPassphrase": passphrase,
            "version": "1.0",
            "compression": "zstd",
            "ledgersPerBatch": 1,
            "batchesPerPartition": 64000,
        })
        .to_string(),
    )
    .unwrap();
    for l in ledgers {
        let seq = stellar_ledgers::ledger_sequence(l);
        let batch = LedgerCloseMetaBatch {
            start_sequence: seq,
            end_sequence: seq,
            ledger_close_metas: vec![l.clone()].try_into().unwrap(),
        };
        let key = root.join(config.object_key(seq));
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        let bytes = batch.to_xdr(Limits::none()).unwrap();
        std::fs::write(&key, zstd::encode_all(&bytes[..], 3).unwrap()).unwrap();
    }
}
