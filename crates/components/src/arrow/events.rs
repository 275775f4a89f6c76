//! Token-transfer events as Arrow record batches: one flat, typed row per event, and back.
//!
//! The row keeps everything a `TokenTransferEvent` says, so a batch turned back into events
//! gives the same events (the analytics sink's JSON and WebSocket outputs are written from
//! them, in `ttp-sink`'s shape). Amounts are `Decimal128(38, 0)` in stroops; the few i128
//! amounts with 39 digits do not fit and are kept exactly, as text, in `amount_overflow`.

use std::sync::{Arc, LazyLock};

use arrow_array::builder::{
    BinaryBuilder, Decimal128Builder, StringBuilder, TimestampMicrosecondBuilder, UInt32Builder,
    UInt64Builder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, Decimal128Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use flowctl_proto::asset::{asset::AssetType, Asset, IssuedAsset};
use flowctl_proto::token_transfer::{
    muxed_info::Content, token_transfer_event::Event, Burn, Clawback, EventMeta, Fee, Mint,
    MuxedInfo, TokenTransferEvent, Transfer,
};

/// The largest amount `Decimal128(38, 0)` holds: 38 nines.
const DECIMAL_38_MAX: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;

/// Event kinds as `event_type` spells them.
pub const EVENT_TYPES: &[&str] = &["transfer", "mint", "burn", "clawback", "fee"];

/// `asset_type` values: the classic asset of the token, absent for custom SEP-41 tokens.
pub const NATIVE: &str = "native";
pub const ISSUED: &str = "issued";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let utc = Some(Arc::from("UTC"));
    Arc::new(Schema::new(vec![
        Field::new("ledger_sequence", DataType::UInt32, false),
        Field::new(
            "closed_at",
            DataType::Timestamp(TimeUnit::Microsecond, utc),
            false,
        ),
        Field::new("tx_hash", DataType::Utf8, false),
        Field::new("transaction_index", DataType::UInt32, false),
        // Absent for fee events.
        Field::new("operation_index", DataType::UInt32, true),
        // Plain strings on the wire (every Flight client reads them); Parquet
        // dictionary-encodes them on disk.
        Field::new("event_type", DataType::Utf8, false),
        Field::new("from", DataType::Utf8, true),
        Field::new("to", DataType::Utf8, true),
        Field::new("asset_type", DataType::Utf8, true),
        Field::new("asset_code", DataType::Utf8, true),
        Field::new("asset_issuer", DataType::Utf8, true),
        Field::new("contract_id", DataType::Utf8, false),
        Field::new("amount", DataType::Decimal128(38, 0), true),
        Field::new("amount_overflow", DataType::Utf8, true),
        // Who a payment was meant for inside the destination account (a muxed id or memo).
        Field::new("to_muxed_id", DataType::UInt64, true),
        Field::new("to_muxed_text", DataType::Utf8, true),
        Field::new("to_muxed_hash", DataType::Binary, true),
    ]))
});

/// The schema of every event batch.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Why a batch does not hold events of [`schema`], or an event cannot be a row.
#[derive(Debug, thiserror::Error)]
pub enum EventBatchError {
    #[error("event batch: {0}")]
    Arrow(#[from] ArrowError),
    #[error("event batch: column `{0}` is missing or has another type")]
    Column(&'static str),
    #[error("event batch row {row}: {message}")]
    Row { row: usize, message: String },
    #[error("event of ledger {ledger}: {message}")]
    Event { ledger: u32, message: String },
}

/// Appends events as rows and builds the batch.
pub struct EventBatchBuilder {
    ledger: UInt32Builder,
    closed_at: TimestampMicrosecondBuilder,
    tx_hash: StringBuilder,
    tx_index: UInt32Builder,
    op_index: UInt32Builder,
    event_type: StringBuilder,
    from: StringBuilder,
    to: StringBuilder,
    asset_type: StringBuilder,
    asset_code: StringBuilder,
    asset_issuer: StringBuilder,
    contract: StringBuilder,
    amount: Decimal128Builder,
    amount_overflow: StringBuilder,
    muxed_id: UInt64Builder,
    muxed_text: StringBuilder,
    muxed_hash: BinaryBuilder,
    rows: usize,
}

impl Default for EventBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBatchBuilder {
    pub fn new() -> Self {
        EventBatchBuilder {
            ledger: UInt32Builder::new(),
            closed_at: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            tx_hash: StringBuilder::new(),
            tx_index: UInt32Builder::new(),
            op_index: UInt32Builder::new(),
            event_type: StringBuilder::new(),
            from: StringBuilder::new(),
            to: StringBuilder::new(),
            asset_type: StringBuilder::new(),
            asset_code: StringBuilder::new(),
            asset_issuer: StringBuilder::new(),
            contract: StringBuilder::new(),
            amount: Decimal128Builder::new().with_data_type(DataType::Decimal128(38, 0)),
            amount_overflow: StringBuilder::new(),
            muxed_id: UInt64Builder::new(),
            muxed_text: StringBuilder::new(),
            muxed_hash: BinaryBuilder::new(),
            rows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// One event as a row. An event without a body or meta, or whose amount is not an
    /// integer, is refused: the processor never makes one.
    pub fn append(&mut self, e: &TokenTransferEvent) -> Result<(), EventBatchError> {
        let meta = e.meta.as_ref();
        let ledger = meta.map_or(0, |m| m.ledger_sequence);
        let bad = |message: &str| EventBatchError::Event {
            ledger,
            message: message.to_string(),
        };
        let meta = meta.ok_or_else(|| bad("no meta"))?;
        let body = e.event.as_ref().ok_or_else(|| bad("no event body"))?;
        let (kind, from, to, asset, amount) = match body {
            Event::Transfer(t) => ("transfer", Some(&t.from), Some(&t.to), &t.asset, &t.amount),
            Event::Mint(t) => ("mint", None, Some(&t.to), &t.asset, &t.amount),
            Event::Burn(t) => ("burn", Some(&t.from), None, &t.asset, &t.amount),
            Event::Clawback(t) => ("clawback", Some(&t.from), None, &t.asset, &t.amount),
            Event::Fee(t) => ("fee", Some(&t.from), None, &t.asset, &t.amount),
        };
        let value: i128 = amount
            .parse()
            .map_err(|_| bad(&format!("amount {amount:?} is not an integer")))?;
        let closed = meta.closed_at.unwrap_or_default();
        let micros = closed
            .seconds
            .checked_mul(1_000_000)
            .and_then(|s| s.checked_add(i64::from(closed.nanos / 1000)))
            .ok_or_else(|| bad("close time out of range"))?;

        self.ledger.append_value(meta.ledger_sequence);
        self.closed_at.append_value(micros);
        self.tx_hash.append_value(&meta.tx_hash);
        self.tx_index.append_value(meta.transaction_index);
        self.op_index.append_option(meta.operation_index);
        self.event_type.append_value(kind);
        self.from.append_option(from);
        self.to.append_option(to);
        match asset.as_ref().and_then(|a| a.asset_type.as_ref()) {
            Some(AssetType::Native(_)) => {
                self.asset_type.append_value(NATIVE);
                self.asset_code.append_null();
                self.asset_issuer.append_null();
            }
            Some(AssetType::IssuedAsset(i)) => {
                self.asset_type.append_value(ISSUED);
                self.asset_code.append_value(&i.asset_code);
                self.asset_issuer.append_value(&i.issuer);
            }
            None => {
                self.asset_type.append_null();
                self.asset_code.append_null();
                self.asset_issuer.append_null();
            }
        }
        self.contract.append_value(&meta.contract_address);
        if (-DECIMAL_38_MAX..=DECIMAL_38_MAX).contains(&value) {
            self.amount.append_value(value);
            self.amount_overflow.append_null();
        } else {
            self.amount.append_null();
            self.amount_overflow.append_value(amount);
        }
        let content = meta.to_muxed_info.as_ref().and_then(|m| m.content.as_ref());
        self.muxed_id.append_option(match content {
            Some(Content::Id(id)) => Some(*id),
            _ => None,
        });
        self.muxed_text.append_option(match content {
            Some(Content::Text(t)) => Some(t.as_str()),
            _ => None,
        });
        self.muxed_hash.append_option(match content {
            Some(Content::Hash(h)) => Some(h.as_slice()),
            _ => None,
        });
        self.rows += 1;
        Ok(())
    }

    /// The rows appended so far as a batch; the builder is empty again after.
    pub fn finish(&mut self) -> Result<RecordBatch, EventBatchError> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.ledger.finish()),
            Arc::new(self.closed_at.finish()),
            Arc::new(self.tx_hash.finish()),
            Arc::new(self.tx_index.finish()),
            Arc::new(self.op_index.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.from.finish()),
            Arc::new(self.to.finish()),
            Arc::new(self.asset_type.finish()),
            Arc::new(self.asset_code.finish()),
            Arc::new(self.asset_issuer.finish()),
            Arc::new(self.contract.finish()),
            Arc::new(self.amount.finish()),
            Arc::new(self.amount_overflow.finish()),
            Arc::new(self.muxed_id.finish()),
            Arc::new(self.muxed_text.finish()),
            Arc::new(self.muxed_hash.finish()),
        ];
        self.rows = 0;
        Ok(RecordBatch::try_new(schema(), columns)?)
    }
}

/// Events as one batch.
pub fn to_batch(events: &[TokenTransferEvent]) -> Result<RecordBatch, EventBatchError> {
    let mut b = EventBatchBuilder::new();
    for e in events {
        b.append(e)?;
    }
    b.finish()
}

fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &'static str,
) -> Result<&'a T, EventBatchError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or(EventBatchError::Column(name))
}

fn text(a: &StringArray, row: usize) -> Option<String> {
    (!a.is_null(row)).then(|| a.value(row).to_string())
}

/// The events of a batch of [`schema`], in row order.
pub fn from_batch(batch: &RecordBatch) -> Result<Vec<TokenTransferEvent>, EventBatchError> {
    let ledger: &UInt32Array = column(batch, "ledger_sequence")?;
    let closed_at: &TimestampMicrosecondArray = column(batch, "closed_at")?;
    let tx_hash: &StringArray = column(batch, "tx_hash")?;
    let tx_index: &UInt32Array = column(batch, "transaction_index")?;
    let op_index: &UInt32Array = column(batch, "operation_index")?;
    let event_type: &StringArray = column(batch, "event_type")?;
    let from: &StringArray = column(batch, "from")?;
    let to: &StringArray = column(batch, "to")?;
    let asset_type: &StringArray = column(batch, "asset_type")?;
    let asset_code: &StringArray = column(batch, "asset_code")?;
    let asset_issuer: &StringArray = column(batch, "asset_issuer")?;
    let contract: &StringArray = column(batch, "contract_id")?;
    let amount: &Decimal128Array = column(batch, "amount")?;
    let amount_overflow: &StringArray = column(batch, "amount_overflow")?;
    let muxed_id: &UInt64Array = column(batch, "to_muxed_id")?;
    let muxed_text: &StringArray = column(batch, "to_muxed_text")?;
    let muxed_hash: &BinaryArray = column(batch, "to_muxed_hash")?;

    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let bad = |message: String| EventBatchError::Row { row, message };
        let micros = closed_at.value(row);
        let closed = prost_types::Timestamp {
            seconds: micros.div_euclid(1_000_000),
            nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
        };
        let muxed = if !muxed_id.is_null(row) {
            Some(Content::Id(muxed_id.value(row)))
        } else if !muxed_text.is_null(row) {
            Some(Content::Text(muxed_text.value(row).to_string()))
        } else if !muxed_hash.is_null(row) {
            Some(Content::Hash(muxed_hash.value(row).to_vec()))
        } else {
            None
        };
        let meta = EventMeta {
            ledger_sequence: ledger.value(row),
            closed_at: Some(closed),
            tx_hash: tx_hash.value(row).to_string(),
            transaction_index: tx_index.value(row),
            operation_index: (!op_index.is_null(row)).then(|| op_index.value(row)),
            contract_address: contract.value(row).to_string(),
            to_muxed_info: muxed.map(|c| MuxedInfo { content: Some(c) }),
        };
        let asset = match (!asset_type.is_null(row)).then(|| asset_type.value(row)) {
            None => None,
            Some(NATIVE) => Some(Asset {
                asset_type: Some(AssetType::Native(true)),
            }),
            Some(ISSUED) => Some(Asset {
                asset_type: Some(AssetType::IssuedAsset(IssuedAsset {
                    asset_code: text(asset_code, row).unwrap_or_default(),
                    issuer: text(asset_issuer, row).unwrap_or_default(),
                })),
            }),
            Some(other) => return Err(bad(format!("asset_type {other:?} is not known"))),
        };
        let amount = if !amount.is_null(row) {
            amount.value(row).to_string()
        } else {
            text(amount_overflow, row)
                .ok_or_else(|| bad("neither amount nor amount_overflow is set".into()))?
        };
        let party = |a: &StringArray, name: &str| {
            text(a, row).ok_or_else(|| bad(format!("`{name}` is empty")))
        };
        let event = match (!event_type.is_null(row)).then(|| event_type.value(row)) {
            Some("transfer") => Event::Transfer(Transfer {
                from: party(from, "from")?,
                to: party(to, "to")?,
                asset,
                amount,
            }),
            Some("mint") => Event::Mint(Mint {
                to: party(to, "to")?,
                asset,
                amount,
            }),
            Some("burn") => Event::Burn(Burn {
                from: party(from, "from")?,
                asset,
                amount,
            }),
            Some("clawback") => Event::Clawback(Clawback {
                from: party(from, "from")?,
                asset,
                amount,
            }),
            Some("fee") => Event::Fee(Fee {
                from: party(from, "from")?,
                asset,
                amount,
            }),
            other => return Err(bad(format!("event_type {other:?} is not known"))),
        };
        out.push(TokenTransferEvent {
            meta: Some(meta),
            event: Some(event),
        });
    }
    Ok(out)
}

/// The ledger of each row, for checkpoints and partitions.
pub fn ledgers(batch: &RecordBatch) -> Result<&UInt32Array, EventBatchError> {
    column(batch, "ledger_sequence")
}

/// The close time of each row, in microseconds since the epoch.
pub fn close_times(batch: &RecordBatch) -> Result<&TimestampMicrosecondArray, EventBatchError> {
    column(batch, "closed_at")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(amount: &str, muxed: Option<Content>) -> TokenTransferEvent {
        TokenTransferEvent {
            meta: Some(EventMeta {
                ledger_sequence: 7,
                closed_at: Some(prost_types::Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                tx_hash: "ab".repeat(32),
                transaction_index: 2,
                operation_index: Some(1),
                contract_address: "CA".into(),
                to_muxed_info: muxed.map(|c| MuxedInfo { content: Some(c) }),
            }),
            event: Some(Event::Transfer(Transfer {
                from: "GA".into(),
                to: "GB".into(),
                asset: Some(Asset {
                    asset_type: Some(AssetType::IssuedAsset(IssuedAsset {
                        asset_code: "USDC".into(),
                        issuer: "GI".into(),
                    })),
                }),
                amount: amount.into(),
            })),
        }
    }

    #[test]
    fn events_survive_a_batch_whatever_their_amount_and_muxed_info() {
        let huge = i128::MAX.to_string();
        let events = vec![
            transfer("-5", Some(Content::Id(u64::MAX))),
            transfer(&huge, Some(Content::Text("memo".into()))),
            transfer(
                &DECIMAL_38_MAX.to_string(),
                Some(Content::Hash(vec![1; 32])),
            ),
            TokenTransferEvent {
                meta: Some(EventMeta {
                    operation_index: None,
                    ..transfer("0", None).meta.unwrap()
                }),
                event: Some(Event::Fee(Fee {
                    from: "GA".into(),
                    asset: None,
                    amount: "100".into(),
                })),
            },
        ];
        let batch = to_batch(&events).unwrap();
        assert_eq!(batch.schema(), schema());
        let amounts: &Decimal128Array = column(&batch, "amount").unwrap();
        assert!(amounts.is_null(1), "39 digits do not fit Decimal128(38, 0)");
        assert_eq!(amounts.value(2), DECIMAL_38_MAX);
        assert_eq!(from_batch(&batch).unwrap(), events);
    }

    #[test]
    fn an_amount_that_is_not_an_integer_is_refused_naming_its_ledger() {
        let err = to_batch(&[transfer("1.5", None)]).unwrap_err().to_string();
        assert_eq!(err, "event of ledger 7: amount \"1.5\" is not an integer");
    }

    #[test]
    fn a_batch_of_another_schema_is_an_error_naming_the_column() {
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "ledger_sequence",
                DataType::Utf8,
                false,
            )])),
            vec![Arc::new(StringArray::from(vec!["x"]))],
        )
        .unwrap();
        assert_eq!(
            from_batch(&other).unwrap_err().to_string(),
            "event batch: column `ledger_sequence` is missing or has another type"
        );
    }
}
