//! Raw ledgers as Arrow record batches: one row a ledger, its header facts typed and its
//! `LedgerCloseMeta` XDR whole. Only the front of the XDR is decoded (the header and the
//! transaction set, up to the count of applied transactions), not the meta that follows.

use std::io::Cursor;
use std::sync::{Arc, LazyLock};

use arrow_array::builder::{
    LargeBinaryBuilder, StringBuilder, TimestampMicrosecondBuilder, UInt32Builder,
};
use arrow_array::{Array, LargeBinaryArray, RecordBatch, UInt32Array};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use flowctl_proto::raw_ledger_service::RawLedger;
use stellar_xdr::{
    ExtensionPoint, GeneralizedTransactionSet, LedgerHeaderHistoryEntry, Limited, Limits, ReadXdr,
    TransactionSet,
};

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("ledger_sequence", DataType::UInt32, false),
        Field::new(
            "closed_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
            false,
        ),
        Field::new("ledger_hash", DataType::Utf8, false),
        Field::new("protocol_version", DataType::UInt32, false),
        Field::new("transaction_count", DataType::UInt32, false),
        // Large: a batch of busy ledgers can pass the 2 GiB a 32-bit offset reaches.
        Field::new("ledger_close_meta", DataType::LargeBinary, false),
    ]))
});

/// The schema of every ledger batch.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// A ledger's header facts, read from the front of its XDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub sequence: u32,
    pub close_time: u64,
    pub hash_hex: String,
    pub protocol_version: u32,
    pub transaction_count: u32,
}

/// The header facts of a `LedgerCloseMeta` (V0, V1 or V2). Lengths read off the bytes are
/// bounded by the bytes themselves.
pub fn header(xdr: &[u8]) -> Result<Header, String> {
    let limits = Limits {
        depth: 500,
        len: xdr.len(),
    };
    let mut r = Limited::new(Cursor::new(xdr), limits);
    let bad = |what: &str, e: stellar_xdr::Error| format!("not a LedgerCloseMeta ({what}: {e})");
    let version = i32::read_xdr(&mut r).map_err(|e| bad("version", e))?;
    if !(0..=2).contains(&version) {
        return Err(format!(
            "LedgerCloseMeta version {version} is not known (0, 1 or 2)"
        ));
    }
    if version >= 1 {
        ExtensionPoint::read_xdr(&mut r).map_err(|e| bad("ext", e))?;
    }
    let entry = LedgerHeaderHistoryEntry::read_xdr(&mut r).map_err(|e| bad("header", e))?;
    if version == 0 {
        TransactionSet::read_xdr(&mut r).map_err(|e| bad("tx set", e))?;
    } else {
        GeneralizedTransactionSet::read_xdr(&mut r).map_err(|e| bad("tx set", e))?;
    }
    // The applied transactions: the length of `tx_processing`, which comes next.
    let transaction_count = u32::read_xdr(&mut r).map_err(|e| bad("tx processing", e))?;
    let h = &entry.header;
    Ok(Header {
        sequence: h.ledger_seq,
        close_time: h.scp_value.close_time.0,
        hash_hex: entry.hash.0.iter().map(|b| format!("{b:02x}")).collect(),
        protocol_version: h.ledger_version,
        transaction_count,
    })
}

/// Appends ledgers as rows and builds the batch.
#[derive(Default)]
pub struct LedgerBatchBuilder {
    sequence: UInt32Builder,
    closed_at: TimestampMicrosecondBuilder,
    hash: StringBuilder,
    protocol: UInt32Builder,
    tx_count: UInt32Builder,
    xdr: LargeBinaryBuilder,
    rows: usize,
    bytes: usize,
}

impl LedgerBatchBuilder {
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// XDR bytes appended since the last batch.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// One ledger as a row. A ledger whose XDR does not decode, or whose header names
    /// another sequence than the one it was served as, is refused.
    pub fn append(&mut self, ledger: &RawLedger) -> Result<(), String> {
        let h = header(&ledger.ledger_close_meta_xdr)
            .map_err(|e| format!("ledger {}: {e}", ledger.sequence))?;
        if h.sequence != ledger.sequence {
            return Err(format!(
                "ledger {}: its header says ledger {}",
                ledger.sequence, h.sequence
            ));
        }
        let micros = i64::try_from(h.close_time)
            .ok()
            .and_then(|s| s.checked_mul(1_000_000))
            .ok_or_else(|| {
                format!(
                    "ledger {}: close time {} out of range",
                    h.sequence, h.close_time
                )
            })?;
        self.sequence.append_value(h.sequence);
        self.closed_at.append_value(micros);
        self.hash.append_value(&h.hash_hex);
        self.protocol.append_value(h.protocol_version);
        self.tx_count.append_value(h.transaction_count);
        self.xdr.append_value(&ledger.ledger_close_meta_xdr);
        self.rows += 1;
        self.bytes += ledger.ledger_close_meta_xdr.len();
        Ok(())
    }

    /// The rows appended so far as a batch; the builder is empty again after.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(self.sequence.finish()),
                Arc::new(self.closed_at.finish().with_timezone("UTC")),
                Arc::new(self.hash.finish()),
                Arc::new(self.protocol.finish()),
                Arc::new(self.tx_count.finish()),
                Arc::new(self.xdr.finish()),
            ],
        )
    }
}

/// Each row's sequence and XDR, in row order.
pub fn rows(batch: &RecordBatch) -> Result<Vec<(u32, &[u8])>, String> {
    let seq = batch
        .column_by_name("ledger_sequence")
        .and_then(|c| c.as_any().downcast_ref::<UInt32Array>())
        .ok_or("ledger batch: column `ledger_sequence` is missing or has another type")?;
    let xdr = batch
        .column_by_name("ledger_close_meta")
        .and_then(|c| c.as_any().downcast_ref::<LargeBinaryArray>())
        .ok_or("ledger batch: column `ledger_close_meta` is missing or has another type")?;
    Ok((0..batch.num_rows())
        .map(|i| {
            let bytes: &[u8] = if xdr.is_null(i) { &[] } else { xdr.value(i) };
            (seq.value(i), bytes)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{LedgerCloseMeta, WriteXdr};

    fn synthetic(first: u32, count: u32) -> Vec<LedgerCloseMeta> {
        let cfg = stellar_synth::Config {
            first_ledger: first,
            txs_per_ledger: 5,
            ..stellar_synth::Config::default()
        };
        let mut g = stellar_synth::Generator::new(cfg).unwrap();
        (0..count).map(|_| g.next_ledger()).collect()
    }

    #[test]
    fn the_header_read_off_the_front_agrees_with_a_full_decode() {
        for lcm in synthetic(2, 3) {
            let xdr = lcm.to_xdr(Limits::none()).unwrap();
            let h = header(&xdr).unwrap();
            assert_eq!(h.sequence, stellar_ttp::ledger_sequence(&lcm));
            assert_eq!(
                h.transaction_count as usize,
                stellar_ttp::transaction_count(&lcm)
            );
            assert_eq!(h.transaction_count, 5);
        }
    }

    #[test]
    fn truncated_or_foreign_bytes_are_an_error_not_a_panic() {
        let xdr = synthetic(2, 1)[0].to_xdr(Limits::none()).unwrap();
        // Cut inside the header or the transaction set (the meta after them is not read).
        for cut in [0, 3, 4, 40, 200] {
            assert!(header(&xdr[..cut]).is_err(), "cut at {cut}");
        }
        assert!(header(&[0, 0, 0, 9]).unwrap_err().contains("version 9"));
    }

    #[test]
    fn a_batch_holds_each_ledger_whole_and_refuses_a_mislabelled_one() {
        let ledgers: Vec<RawLedger> = synthetic(10, 2)
            .iter()
            .map(|l| RawLedger {
                sequence: stellar_ttp::ledger_sequence(l),
                ledger_close_meta_xdr: l.to_xdr(Limits::none()).unwrap().into(),
            })
            .collect();
        let mut b = LedgerBatchBuilder::default();
        for l in &ledgers {
            b.append(l).unwrap();
        }
        let batch = b.finish().unwrap();
        assert_eq!(batch.schema(), schema());
        let got = rows(&batch).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0, 11);
        assert!(got[1].1 == &ledgers[1].ledger_close_meta_xdr[..]);
        let wrong = RawLedger {
            sequence: 99,
            ..ledgers[0].clone()
        };
        assert_eq!(
            b.append(&wrong).unwrap_err(),
            "ledger 99: its header says ledger 10"
        );
    }
}
