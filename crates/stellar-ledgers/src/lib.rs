//! Reading Stellar `LedgerCloseMeta` from the places ledgers are kept.
//!
//! One entry point, [`open`], takes a path and works out what it holds:
//!
//! | input | how it is recognised |
//! |---|---|
//! | a Galexie / CDP data lake | a directory with a `.config.json` manifest |
//! | a zstd `LedgerCloseMetaBatch` object | zstd magic; the content is not record-marked |
//! | a zstd stream of record-marked frames | zstd magic; the content starts with a record mark |
//! | base64 `LedgerCloseMeta` lines | the file is base64 text |
//! | one raw `LedgerCloseMeta` | anything else, with or without the 4-byte version prefix |
//!
//! Decoding bounds every read by the input's size, so malformed input is an error that names
//! the file (and the ledger, where known), never an unbounded allocation or a panic.

pub mod datalake;
mod decode;
mod error;
mod sequence;

use std::collections::VecDeque;
use std::path::Path;

pub use datalake::{DataLake, DataLakeConfig};
pub use decode::{
    decode_base64_lines, decode_batch_object, decode_frames, decode_raw, decompress_capped,
    ledger_sequence, MAX_LEDGER_BYTES,
};
pub use error::{ErrorKind, ReadError};
pub use sequence::{Continuity, Gap, Step};
pub use stellar_xdr::LedgerCloseMeta;

/// Inclusive bounds on the ledgers wanted; `None` is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerRange {
    pub start: Option<u32>,
    pub end: Option<u32>,
}

impl LedgerRange {
    pub fn new(start: Option<u32>, end: Option<u32>) -> Self {
        Self { start, end }
    }

    pub fn contains(&self, sequence: u32) -> bool {
        self.start.is_none_or(|s| sequence >= s) && self.end.is_none_or(|e| sequence <= e)
    }
}

/// What [`open`] found at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    DataLake,
    ZstdBatch,
    ZstdFrames,
    Base64Lines,
    RawXdr,
}

/// Ledgers read from one input, in the order the input holds them, filtered by the range.
pub struct Ledgers {
    kind: InputKind,
    inner: LedgersInner,
}

enum LedgersInner {
    Loaded(VecDeque<LedgerCloseMeta>),
    Lake(datalake::LakeLedgers),
}

impl Ledgers {
    pub fn kind(&self) -> InputKind {
        self.kind
    }
}

impl Iterator for Ledgers {
    type Item = Result<LedgerCloseMeta, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            LedgersInner::Loaded(ledgers) => ledgers.pop_front().map(Ok),
            LedgersInner::Lake(lake) => lake.next(),
        }
    }
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Opens any supported input. A data lake needs a range start (its manifest says nothing of
/// which ledgers it holds); files are read whole and filtered by the range.
pub fn open(path: &Path, range: LedgerRange) -> Result<Ledgers, ReadError> {
    let file_error = |kind| ReadError::new(path, None, kind);
    if path.is_dir() {
        let lake = DataLake::open(path)?;
        let start = range.start.ok_or_else(|| {
            file_error(ErrorKind::Usage(
                "a data lake needs a start ledger (--start N)".to_string(),
            ))
        })?;
        return Ok(Ledgers {
            kind: InputKind::DataLake,
            inner: LedgersInner::Lake(lake.ledgers(start, range.end)),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| file_error(ErrorKind::Io(e.to_string())))?;
    let (kind, ledgers) = decode_file(path, &bytes)?;
    let ledgers = ledgers
        .into_iter()
        .filter(|l| range.contains(ledger_sequence(l)))
        .collect();
    Ok(Ledgers {
        kind,
        inner: LedgersInner::Loaded(ledgers),
    })
}

/// Decodes a whole file's content, recognising its kind.
pub fn decode_file(
    path: &Path,
    bytes: &[u8],
) -> Result<(InputKind, Vec<LedgerCloseMeta>), ReadError> {
    if bytes.starts_with(&ZSTD_MAGIC) {
        let content = decode::decompress(path, bytes)?;
        // A record mark has the high bit set; a batch starts with a sequence number, which
        // never has (ledger sequences are far below 2^31).
        if content.first().is_some_and(|b| b & 0x80 != 0) {
            return Ok((InputKind::ZstdFrames, decode_frames(path, &content)?));
        }
        return Ok((
            InputKind::ZstdBatch,
            decode_batch_object(path, &content)?
                .ledger_close_metas
                .into(),
        ));
    }
    if looks_like_base64_text(bytes) {
        return Ok((InputKind::Base64Lines, decode_base64_lines(path, bytes)?));
    }
    Ok((InputKind::RawXdr, vec![decode_raw(path, bytes)?]))
}

fn looks_like_base64_text(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.iter().take(4096).all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'+' | b'/' | b'=' | b'\n' | b'\r' | b' ' | b'\t')
        })
}
