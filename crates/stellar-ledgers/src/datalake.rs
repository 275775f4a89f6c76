//! The Galexie / CDP data-lake layout: a `.config.json` manifest at the root, partition
//! folders `%08X--START-END/` and objects `%08X--START[-END].xdr.zstd`, each a zstd
//! `LedgerCloseMetaBatch`. The hex part is `u32::MAX - start`, so newer ledgers sort first.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use stellar_xdr::LedgerCloseMeta;

use crate::decode::{decode_batch_object, decompress_capped, ledger_sequence, MAX_LEDGER_BYTES};
use crate::error::{ErrorKind, ReadError};
use crate::sequence::{Continuity, Step};

pub const MANIFEST: &str = ".config.json";

/// The manifest Galexie writes at the data lake's root.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataLakeConfig {
    pub network_passphrase: String,
    #[serde(default)]
    pub version: String,
    #[serde(default = "default_compression")]
    pub compression: String,
    pub ledgers_per_batch: u32,
    pub batches_per_partition: u32,
}

fn default_compression() -> String {
    "zstd".to_string()
}

impl DataLakeConfig {
    /// Parses and checks a manifest; `origin` names it in errors.
    pub fn parse(origin: &Path, json: &[u8]) -> Result<Self, ReadError> {
        let manifest_error = |m: String| ReadError::new(origin, None, ErrorKind::Manifest(m));
        let config: Self =
            serde_json::from_slice(json).map_err(|e| manifest_error(e.to_string()))?;
        if config.ledgers_per_batch == 0 {
            return Err(manifest_error("ledgersPerBatch must be at least 1".into()));
        }
        if config.batches_per_partition == 0 {
            return Err(manifest_error(
                "batchesPerPartition must be at least 1".into(),
            ));
        }
        if config.compression != "zstd" {
            return Err(manifest_error(format!(
                "compression {:?} is not supported (only \"zstd\")",
                config.compression
            )));
        }
        Ok(config)
    }

    /// The most bytes one object may inflate to: its ledgers times the per-ledger maximum.
    pub fn max_object_bytes(&self) -> u64 {
        u64::from(self.ledgers_per_batch) * MAX_LEDGER_BYTES
    }

    /// Inflates one object of this lake, refusing it past [`Self::max_object_bytes`].
    pub fn decompress_object(&self, path: &Path, bytes: &[u8]) -> Result<Vec<u8>, ReadError> {
        decompress_capped(path, bytes, self.max_object_bytes())
    }

    /// The first ledger of the object holding `sequence`.
    pub fn batch_start(&self, sequence: u32) -> u32 {
        sequence - sequence % self.ledgers_per_batch
    }

    /// The object key (relative to the lake's root) of the object holding `sequence`.
    pub fn object_key(&self, sequence: u32) -> String {
        let mut key = String::new();
        let per_partition =
            u64::from(self.ledgers_per_batch) * u64::from(self.batches_per_partition);
        if self.batches_per_partition > 1 {
            let start = (u64::from(sequence) / per_partition * per_partition) as u32;
            let end = (u64::from(start) + per_partition - 1).min(u64::from(u32::MAX)) as u32;
            key.push_str(&format!("{:08X}--{start}-{end}/", u32::MAX - start));
        }
        let start = self.batch_start(sequence);
        let end = start.saturating_add(self.ledgers_per_batch - 1);
        key.push_str(&format!("{:08X}--{start}", u32::MAX - start));
        if end != start {
            key.push_str(&format!("-{end}"));
        }
        key.push_str(".xdr.");
        key.push_str(&self.compression);
        key
    }
}

/// A data lake on a local filesystem.
#[derive(Debug, Clone)]
pub struct DataLake {
    root: PathBuf,
    config: DataLakeConfig,
}

impl DataLake {
    pub fn open(root: &Path) -> Result<Self, ReadError> {
        let manifest = root.join(MANIFEST);
        let json = std::fs::read(&manifest).map_err(|e| {
            ReadError::new(
                &manifest,
                None,
                ErrorKind::Io(format!(
                    "{e} (a data lake has a {MANIFEST} manifest at its root)"
                )),
            )
        })?;
        Ok(Self {
            root: root.to_path_buf(),
            config: DataLakeConfig::parse(&manifest, &json)?,
        })
    }

    pub fn config(&self) -> &DataLakeConfig {
        &self.config
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The ledgers of the object that holds `sequence`, or `Ok(None)` when that object does
    /// not exist (yet): the end of what the lake holds.
    pub fn read_batch(&self, sequence: u32) -> Result<Option<Vec<LedgerCloseMeta>>, ReadError> {
        let path = self.root.join(self.config.object_key(sequence));
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ReadError::new(
                    &path,
                    Some(sequence),
                    ErrorKind::Io(e.to_string()),
                ))
            }
        };
        let content = self
            .config
            .decompress_object(&path, &bytes)
            .map_err(|e| ReadError {
                ledger: Some(sequence),
                ..e
            })?;
        let batch = decode_batch_object(&path, &content)?;
        Ok(Some(batch.ledger_close_metas.into()))
    }

    /// Ledgers `start..=end` in order; without an end, up to the last object present.
    pub fn ledgers(self, start: u32, end: Option<u32>) -> LakeLedgers {
        LakeLedgers {
            lake: self,
            next: Continuity::starting_at(start),
            end,
            pending: Vec::new().into_iter(),
            pending_path: PathBuf::new(),
            done: false,
        }
    }
}

/// Iterator over a lake's ledgers, reading one object at a time.
pub struct LakeLedgers {
    lake: DataLake,
    next: Continuity,
    end: Option<u32>,
    pending: std::vec::IntoIter<LedgerCloseMeta>,
    /// The object `pending` came from, for errors.
    pending_path: PathBuf,
    done: bool,
}

impl Iterator for LakeLedgers {
    type Item = Result<LedgerCloseMeta, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let next = self.next.expected();
            if self.done || self.end.is_some_and(|end| next > end) {
                return None;
            }
            if let Some(ledger) = self.pending.next() {
                let sequence = ledger_sequence(&ledger);
                match self.next.check(sequence) {
                    Ok(Step::Repeat) => continue,
                    Ok(Step::Deliver) => {}
                    Err(gap) => {
                        // An object holding the wrong ledger must not silently skip one.
                        self.done = true;
                        return Some(Err(ReadError::new(
                            &self.pending_path,
                            Some(gap.expected),
                            ErrorKind::Missing(gap.to_string()),
                        )));
                    }
                }
                if sequence == u32::MAX {
                    self.done = true;
                }
                return Some(Ok(ledger));
            }
            let path = self.lake.root.join(self.lake.config.object_key(next));
            match self.lake.read_batch(next) {
                Ok(Some(ledgers)) => {
                    if !ledgers.iter().any(|l| ledger_sequence(l) >= next) {
                        self.done = true;
                        return Some(Err(ReadError::new(
                            &path,
                            Some(next),
                            ErrorKind::Missing("the object does not hold this ledger".into()),
                        )));
                    }
                    self.pending = ledgers.into_iter();
                    self.pending_path = path;
                }
                Ok(None) => {
                    self.done = true;
                    // A bounded read must find every ledger it asked for; an open one ends
                    // at the last object present.
                    if let Some(end) = self.end {
                        return Some(Err(ReadError::new(
                            &path,
                            Some(next),
                            ErrorKind::Missing(format!(
                                "ledger {next} is not in the data lake (wanted up to {end})"
                            )),
                        )));
                    }
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
