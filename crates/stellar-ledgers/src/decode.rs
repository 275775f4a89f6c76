//! Decoders for each input kind. Every XDR read is limited to the input's length and a fixed
//! nesting depth, so hostile input cannot make the decoder allocate beyond it or recurse deep.

use std::io::{Cursor, Read};
use std::path::Path;

use stellar_xdr::{Frame, LedgerCloseMeta, LedgerCloseMetaBatch, Limited, Limits, ReadXdr};

use crate::error::{ErrorKind, ReadError};

/// Nesting depth far above any real ledger's, low enough to keep the stack safe.
const MAX_DEPTH: u32 = 500;

/// Largest decompressed object accepted: real batches are a few MB, a busy ledger ~2 MB.
const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Largest decompressed ledger accepted in a data-lake object: a busy ledger is ~2 MB.
pub const MAX_LEDGER_BYTES: u64 = 32 << 20;

fn limits(len: usize) -> Limits {
    Limits {
        depth: MAX_DEPTH,
        len,
    }
}

fn xdr_error(path: &Path, e: stellar_xdr::Error) -> ReadError {
    ReadError::new(path, None, ErrorKind::Xdr(e.to_string()))
}

/// The sequence number of a ledger, from its header.
pub fn ledger_sequence(ledger: &LedgerCloseMeta) -> u32 {
    match ledger {
        LedgerCloseMeta::V0(v) => v.ledger_header.header.ledger_seq,
        LedgerCloseMeta::V1(v) => v.ledger_header.header.ledger_seq,
        LedgerCloseMeta::V2(v) => v.ledger_header.header.ledger_seq,
    }
}

pub(crate) fn decompress(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, ReadError> {
    decompress_capped(path, bytes, MAX_DECOMPRESSED)
}

/// Inflates a zstd object, refusing it once it grows past `cap` bytes (a small object can
/// inflate to gigabytes), so memory stays bounded by the cap whatever the input.
pub fn decompress_capped(path: &Path, bytes: &[u8], cap: u64) -> Result<Vec<u8>, ReadError> {
    let cap = cap.min(MAX_DECOMPRESSED);
    let decoder = zstd::Decoder::new(bytes)
        .map_err(|e| ReadError::new(path, None, ErrorKind::Zstd(e.to_string())))?;
    let mut out = Vec::new();
    decoder
        .take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| ReadError::new(path, None, ErrorKind::Zstd(e.to_string())))?;
    if out.len() as u64 > cap {
        return Err(ReadError::new(
            path,
            None,
            ErrorKind::Zstd(format!(
                "decompresses to more than the limit of {cap} bytes"
            )),
        ));
    }
    Ok(out)
}

/// A decompressed data-lake object: one `LedgerCloseMetaBatch`.
pub fn decode_batch_object(path: &Path, content: &[u8]) -> Result<LedgerCloseMetaBatch, ReadError> {
    let batch = LedgerCloseMetaBatch::from_xdr(content, limits(content.len()))
        .map_err(|e| xdr_error(path, e))?;
    for (i, ledger) in batch.ledger_close_metas.iter().enumerate() {
        let expected = batch.start_sequence.wrapping_add(i as u32);
        let found = ledger_sequence(ledger);
        if found != expected {
            return Err(ReadError::new(
                path,
                Some(found),
                ErrorKind::Xdr(format!(
                    "batch {}-{} holds ledger {found} at position {}",
                    batch.start_sequence,
                    batch.end_sequence,
                    i + 1
                )),
            ));
        }
    }
    Ok(batch)
}

/// A decompressed stream of record-marked `LedgerCloseMeta` frames.
pub fn decode_frames(path: &Path, content: &[u8]) -> Result<Vec<LedgerCloseMeta>, ReadError> {
    let mut reader = Limited::new(Cursor::new(content), limits(content.len()));
    let mut ledgers = Vec::new();
    for (i, frame) in Frame::<LedgerCloseMeta>::read_xdr_iter(&mut reader).enumerate() {
        let Frame(ledger) = frame.map_err(|e| {
            let after = ledgers
                .last()
                .map(|l| format!(" (after ledger {})", ledger_sequence(l)))
                .unwrap_or_default();
            xdr_error(path, e).at(format!("frame {}{after}", i + 1))
        })?;
        ledgers.push(ledger);
    }
    Ok(ledgers)
}

/// Text with one base64 `LedgerCloseMeta` per line; blank lines are skipped.
pub fn decode_base64_lines(path: &Path, text: &[u8]) -> Result<Vec<LedgerCloseMeta>, ReadError> {
    let text = std::str::from_utf8(text)
        .map_err(|e| ReadError::new(path, None, ErrorKind::Base64(e.to_string())))?;
    let mut ledgers = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let ledger = LedgerCloseMeta::from_xdr_base64(line, limits(line.len()))
            .map_err(|e| xdr_error(path, e).at(format!("line {}", i + 1)))?;
        ledgers.push(ledger);
    }
    Ok(ledgers)
}

/// One raw `LedgerCloseMeta`, optionally behind the 4-byte version `0` of the older
/// `SerializedLedgerCloseMeta` union (lighthorizon / ledgerexporter files).
pub fn decode_raw(path: &Path, bytes: &[u8]) -> Result<LedgerCloseMeta, ReadError> {
    // LCM V0 also starts with four zero bytes, so try the prefixed form first and fall back.
    if bytes.len() > 4 && bytes[..4] == [0, 0, 0, 0] {
        if let Ok(ledger) = LedgerCloseMeta::from_xdr(&bytes[4..], limits(bytes.len())) {
            return Ok(ledger);
        }
    }
    LedgerCloseMeta::from_xdr(bytes, limits(bytes.len())).map_err(|e| xdr_error(path, e))
}
