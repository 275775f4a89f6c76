//! Contract-data changes as Arrow record batches: one flat row per change, every column of
//! [`ContractDataChange`], and back. `balance` is text: an i128 has up to 39 digits, one
//! more than `Decimal128(38, 0)` holds, and a balance must never be rounded.

use std::sync::{Arc, LazyLock};

use arrow_array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampSecondArray, UInt32Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use stellar_contract_data::{ChangeType, ContractDataChange};

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let number = |name: &str, nullable| Field::new(name, DataType::UInt32, nullable);
    Arc::new(Schema::new(vec![
        number("ledger_sequence", false),
        Field::new(
            "closed_at",
            DataType::Timestamp(TimeUnit::Second, Some(Arc::from("UTC"))),
            false,
        ),
        number("change_index", false),
        number("ledger_entry_change", false),
        text("change_type", false),
        Field::new("deleted", DataType::Boolean, false),
        Field::new("evicted", DataType::Boolean, false),
        text("contract_id", false),
        text("contract_key_type", false),
        text("contract_durability", false),
        text("asset_code", true),
        text("asset_issuer", true),
        text("asset_type", true),
        text("balance_holder", true),
        text("balance", true),
        number("last_modified_ledger", true),
        text("ledger_key_hash", false),
        text("key_xdr", false),
        text("val_xdr", true),
        text("key", false),
        text("val", true),
        text("contract_instance_type", true),
        text("contract_instance_wasm_hash", true),
        number("expiration_ledger_seq", true),
        text("tx_hash", true),
        number("transaction_index", true),
        number("operation_index", true),
    ]))
});

/// The schema of every contract-data batch.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("contract-data batch: {0}")]
    Arrow(#[from] ArrowError),
    #[error("contract-data batch: column `{0}` is missing or has another type")]
    Column(&'static str),
    #[error("contract-data batch row {row}: {message}")]
    Row { row: usize, message: String },
}

/// The changes as one batch, in order.
pub fn to_batch(changes: &[ContractDataChange]) -> Result<RecordBatch, BatchError> {
    fn text<'a>(
        changes: &'a [ContractDataChange],
        f: impl Fn(&'a ContractDataChange) -> Option<&'a str>,
    ) -> ArrayRef {
        Arc::new(changes.iter().map(f).collect::<StringArray>())
    }
    fn number(
        changes: &[ContractDataChange],
        f: impl Fn(&ContractDataChange) -> Option<u32>,
    ) -> ArrayRef {
        Arc::new(changes.iter().map(f).collect::<UInt32Array>())
    }
    let c = changes;
    let closed: TimestampSecondArray = c.iter().map(|r| Some(r.closed_at as i64)).collect();
    let columns: Vec<ArrayRef> = vec![
        number(c, |r| Some(r.ledger_sequence)),
        Arc::new(closed.with_timezone("UTC")),
        number(c, |r| Some(r.change_index)),
        number(c, |r| Some(r.change_type.xdr())),
        text(c, |r| Some(r.change_type.as_str())),
        Arc::new(c.iter().map(|r| Some(r.deleted)).collect::<BooleanArray>()),
        Arc::new(c.iter().map(|r| Some(r.evicted)).collect::<BooleanArray>()),
        text(c, |r| Some(&r.contract_id)),
        text(c, |r| Some(&r.contract_key_type)),
        text(c, |r| Some(r.contract_durability)),
        text(c, |r| r.asset_code.as_deref()),
        text(c, |r| r.asset_issuer.as_deref()),
        text(c, |r| r.asset_type),
        text(c, |r| r.balance_holder.as_deref()),
        text(c, |r| r.balance.as_deref()),
        number(c, |r| r.last_modified_ledger),
        text(c, |r| Some(&r.ledger_key_hash)),
        text(c, |r| Some(&r.key_xdr)),
        text(c, |r| r.val_xdr.as_deref()),
        text(c, |r| Some(&r.key)),
        text(c, |r| r.val.as_deref()),
        text(c, |r| r.contract_instance_type.as_deref()),
        text(c, |r| r.contract_instance_wasm_hash.as_deref()),
        number(c, |r| r.expiration_ledger_seq),
        text(c, |r| r.tx_hash.as_deref()),
        number(c, |r| r.transaction_index),
        number(c, |r| r.operation_index),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

struct Columns<'b>(&'b RecordBatch);

impl<'b> Columns<'b> {
    fn get<T: 'static>(&self, name: &'static str) -> Result<&'b T, BatchError> {
        self.0
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or(BatchError::Column(name))
    }
}

fn opt_text(a: &StringArray, i: usize) -> Option<String> {
    a.is_valid(i).then(|| a.value(i).to_string())
}

fn opt_number(a: &UInt32Array, i: usize) -> Option<u32> {
    a.is_valid(i).then(|| a.value(i))
}

/// The changes a batch of [`schema`] holds, in row order.
pub fn from_batch(batch: &RecordBatch) -> Result<Vec<ContractDataChange>, BatchError> {
    let c = Columns(batch);
    let ledger = c.get::<UInt32Array>("ledger_sequence")?;
    let closed = c.get::<TimestampSecondArray>("closed_at")?;
    let index = c.get::<UInt32Array>("change_index")?;
    let change = c.get::<UInt32Array>("ledger_entry_change")?;
    let deleted = c.get::<BooleanArray>("deleted")?;
    let evicted = c.get::<BooleanArray>("evicted")?;
    let contract = c.get::<StringArray>("contract_id")?;
    let key_type = c.get::<StringArray>("contract_key_type")?;
    let durability = c.get::<StringArray>("contract_durability")?;
    let code = c.get::<StringArray>("asset_code")?;
    let issuer = c.get::<StringArray>("asset_issuer")?;
    let asset_type = c.get::<StringArray>("asset_type")?;
    let holder = c.get::<StringArray>("balance_holder")?;
    let balance = c.get::<StringArray>("balance")?;
    let modified = c.get::<UInt32Array>("last_modified_ledger")?;
    let key_hash = c.get::<StringArray>("ledger_key_hash")?;
    let key_xdr = c.get::<StringArray>("key_xdr")?;
    let val_xdr = c.get::<StringArray>("val_xdr")?;
    let key = c.get::<StringArray>("key")?;
    let val = c.get::<StringArray>("val")?;
    let instance = c.get::<StringArray>("contract_instance_type")?;
    let wasm = c.get::<StringArray>("contract_instance_wasm_hash")?;
    let expiration = c.get::<UInt32Array>("expiration_ledger_seq")?;
    let tx_hash = c.get::<StringArray>("tx_hash")?;
    let tx_index = c.get::<UInt32Array>("transaction_index")?;
    let op_index = c.get::<UInt32Array>("operation_index")?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let row = |message: String| BatchError::Row { row: i, message };
        let change_type = ChangeType::from_xdr(change.value(i)).ok_or_else(|| {
            row(format!(
                "ledger_entry_change {} is not a change",
                change.value(i)
            ))
        })?;
        let contract_durability = match durability.value(i) {
            "ContractDataDurabilityPersistent" => "ContractDataDurabilityPersistent",
            "ContractDataDurabilityTemporary" => "ContractDataDurabilityTemporary",
            other => return Err(row(format!("contract_durability {other:?} is unknown"))),
        };
        let asset_type = match asset_type.is_valid(i).then(|| asset_type.value(i)) {
            None => None,
            Some("native") => Some("native"),
            Some("credit_alphanum4") => Some("credit_alphanum4"),
            Some("credit_alphanum12") => Some("credit_alphanum12"),
            Some(other) => return Err(row(format!("asset_type {other:?} is unknown"))),
        };
        out.push(ContractDataChange {
            ledger_sequence: ledger.value(i),
            closed_at: closed.value(i).max(0) as u64,
            change_index: index.value(i),
            change_type,
            deleted: deleted.value(i),
            evicted: evicted.value(i),
            contract_id: contract.value(i).to_string(),
            contract_key_type: key_type.value(i).to_string(),
            contract_durability,
            asset_code: opt_text(code, i),
            asset_issuer: opt_text(issuer, i),
            asset_type,
            balance_holder: opt_text(holder, i),
            balance: opt_text(balance, i),
            last_modified_ledger: opt_number(modified, i),
            ledger_key_hash: key_hash.value(i).to_string(),
            key_xdr: key_xdr.value(i).to_string(),
            val_xdr: opt_text(val_xdr, i),
            key: key.value(i).to_string(),
            val: opt_text(val, i),
            contract_instance_type: opt_text(instance, i),
            contract_instance_wasm_hash: opt_text(wasm, i),
            expiration_ledger_seq: opt_number(expiration, i),
            tx_hash: opt_text(tx_hash, i),
            transaction_index: opt_number(tx_index, i),
            operation_index: opt_number(op_index, i),
        });
    }
    Ok(out)
}
