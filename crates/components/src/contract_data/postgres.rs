//! `contract_data.entries`: one row per contract-data change, loaded with binary COPY in
//! batches and keyed by `(ledger_key_hash, ledger_sequence, change_index)`. That key is
//! really unique: an entry written by two transactions of one ledger has two changes, which
//! the seed's `UNIQUE (contract_id, ledger_sequence)` would fold into one.
//!
//! Each batch is one transaction: COPY into a temporary table, `INSERT … ON CONFLICT` into
//! `entries` (a replayed row is replaced only when it differs, so an identical replay writes
//! nothing), and the checkpoint row of [`crate::sink::pg`] moved to the batch's last ledger.
//! A sink killed at any point resumes after the last committed batch: no change is lost or
//! doubled. `contract_data.current` is the latest state of each live entry.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use stellar_contract_data::ContractDataChange;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use crate::sink::health::Readiness;
use crate::sink::pg::{checkpoints_ddl, Failure, Op, PrepareSchema, Session, DDL_LOCK};
use crate::sink::SinkError;

const CHECKPOINTS: &str = "contract_data.sink_checkpoints";

/// The columns in table order: name, type in `entries`, type in the load table (what COPY
/// sends; text where the value is cast on insert).
const COLUMNS: &[(&str, &str, Type)] = &[
    ("ledger_key_hash", "TEXT NOT NULL", Type::TEXT),
    ("ledger_sequence", "BIGINT NOT NULL", Type::INT8),
    ("change_index", "INTEGER NOT NULL", Type::INT4),
    ("contract_id", "TEXT NOT NULL", Type::TEXT),
    ("contract_key_type", "TEXT NOT NULL", Type::TEXT),
    ("contract_durability", "TEXT NOT NULL", Type::TEXT),
    ("asset_code", "TEXT", Type::TEXT),
    ("asset_issuer", "TEXT", Type::TEXT),
    ("asset_type", "TEXT", Type::TEXT),
    ("balance_holder", "TEXT", Type::TEXT),
    // An i128: up to 39 digits.
    ("balance", "NUMERIC(39, 0)", Type::TEXT),
    ("last_modified_ledger", "BIGINT", Type::INT8),
    ("ledger_entry_change", "INTEGER NOT NULL", Type::INT4),
    ("deleted", "BOOLEAN NOT NULL", Type::BOOL),
    ("evicted", "BOOLEAN NOT NULL", Type::BOOL),
    ("closed_at", "TIMESTAMPTZ NOT NULL", Type::TIMESTAMPTZ),
    ("key_xdr", "TEXT NOT NULL", Type::TEXT),
    ("val_xdr", "TEXT", Type::TEXT),
    ("key", "JSONB NOT NULL", Type::TEXT),
    ("val", "JSONB", Type::TEXT),
    ("contract_instance_type", "TEXT", Type::TEXT),
    ("contract_instance_wasm_hash", "TEXT", Type::TEXT),
    ("expiration_ledger_seq", "BIGINT", Type::INT8),
    ("tx_hash", "TEXT", Type::TEXT),
    ("transaction_index", "INTEGER", Type::INT4),
    ("operation_index", "INTEGER", Type::INT4),
];

const KEY: &str = "ledger_key_hash, ledger_sequence, change_index";

fn entries_ddl() -> String {
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|(name, ty, _)| format!("    {name} {ty}"))
        .collect();
    format!(
        "CREATE SCHEMA IF NOT EXISTS contract_data;
CREATE TABLE IF NOT EXISTS contract_data.entries (
{},
    PRIMARY KEY ({KEY})
);
CREATE INDEX IF NOT EXISTS entries_contract_ledger
    ON contract_data.entries (contract_id, ledger_sequence);
CREATE INDEX IF NOT EXISTS entries_balance_holder
    ON contract_data.entries (balance_holder) WHERE balance_holder IS NOT NULL;
CREATE OR REPLACE VIEW contract_data.current AS
    SELECT * FROM (
        SELECT DISTINCT ON (ledger_key_hash) *
        FROM contract_data.entries
        ORDER BY ledger_key_hash, ledger_sequence DESC, change_index DESC
    ) latest
    WHERE NOT deleted;
{}",
        columns.join(",\n"),
        checkpoints_ddl(CHECKPOINTS)
    )
}

/// The per-connection load table: emptied by every commit.
fn load_ddl() -> String {
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|(name, _, ty)| format!("{name} {}", ty.name()))
        .collect();
    format!(
        "CREATE TEMPORARY TABLE IF NOT EXISTS entries_load ({}) ON COMMIT DELETE ROWS",
        columns.join(", ")
    )
}

fn copy_sql() -> String {
    let names: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
    format!(
        "COPY entries_load ({}) FROM STDIN (FORMAT binary)",
        names.join(", ")
    )
}

fn insert_sql() -> String {
    let names: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
    let selected: Vec<String> = COLUMNS
        .iter()
        .map(|(name, ty, _)| match *ty {
            t if t.starts_with("NUMERIC") => format!("{name}::numeric"),
            t if t.starts_with("JSONB") => format!("{name}::jsonb"),
            _ => name.to_string(),
        })
        .collect();
    let updated: Vec<String> = names
        .iter()
        .map(|n| format!("{n} = EXCLUDED.{n}"))
        .collect();
    format!(
        "INSERT INTO contract_data.entries ({names})
         SELECT {selected} FROM entries_load
         ON CONFLICT ({KEY}) DO UPDATE SET {updated}
         WHERE (contract_data.entries.*) IS DISTINCT FROM (EXCLUDED.*)",
        names = names.join(", "),
        selected = selected.join(", "),
        updated = updated.join(", ")
    )
}

async fn prepare(client: &mut Client) -> Result<(), Failure> {
    let present: bool = client
        .query_one(
            "SELECT to_regclass('contract_data.entries') IS NOT NULL
                AND to_regclass('contract_data.sink_checkpoints') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !present {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
            .await?;
        tx.batch_execute(&entries_ddl()).await?;
        tx.commit().await?;
    }
    client.batch_execute(&load_ddl()).await?;
    Ok(())
}

fn schema() -> PrepareSchema {
    Arc::new(|c: &mut Client| -> Op<'_, ()> { Box::pin(prepare(c)) })
}

/// Writes contract-data changes into `contract_data.entries`, checkpointed.
pub struct EntriesSink {
    session: Session,
}

impl EntriesSink {
    /// A sink that connects (and creates the schema) on first use; `row` names its
    /// checkpoint (see [`crate::sink::pg::checkpoint_id`]).
    pub fn new(url: &str, row: &str, readiness: Readiness) -> Self {
        EntriesSink {
            session: Session::new(url, row, CHECKPOINTS, readiness, schema()),
        }
    }

    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.session = self.session.with_max_backoff(d);
        self
    }

    pub async fn checkpoint(&mut self) -> Result<u32, SinkError> {
        self.session.checkpoint().await
    }

    pub async fn reset_checkpoint(&mut self, ledger: u32) -> Result<(), SinkError> {
        self.session.reset_checkpoint(ledger).await
    }

    /// Writes the changes of complete ledgers and moves the checkpoint to `through`, in one
    /// transaction that commits only while this process's claim holds. Retries until
    /// committed.
    pub async fn write(
        &mut self,
        changes: &[ContractDataChange],
        through: u32,
    ) -> Result<(), SinkError> {
        let changes = Arc::new(changes.to_vec());
        let (copy, insert) = (Arc::new(copy_sql()), Arc::new(insert_sql()));
        self.session
            .with_retry("writing contract data", move |c, claim| {
                let (changes, copy, insert) = (changes.clone(), copy.clone(), insert.clone());
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    claim.fence(&tx).await?;
                    if !changes.is_empty() {
                        let sink = tx.copy_in(copy.as_str()).await?;
                        let types: Vec<Type> = COLUMNS.iter().map(|c| c.2.clone()).collect();
                        let writer = BinaryCopyInWriter::new(sink, &types);
                        let mut writer = std::pin::pin!(writer);
                        for r in changes.iter() {
                            let values = row(r);
                            let values: Vec<&(dyn ToSql + Sync)> =
                                values.iter().map(|v| v.as_ref() as _).collect();
                            writer.as_mut().write(&values).await?;
                        }
                        writer.finish().await?;
                        tx.execute(insert.as_str(), &[]).await?;
                    }
                    claim.advance(&tx, through, changes.len() as i64).await?;
                    Ok(tx.commit().await?)
                })
            })
            .await
    }
}

/// A change's values in [`COLUMNS`] order.
fn row(r: &ContractDataChange) -> Vec<Box<dyn ToSql + Sync + Send + '_>> {
    let closed = SystemTime::UNIX_EPOCH + Duration::from_secs(r.closed_at);
    let int4 = |v: Option<u32>| v.map(|v| v as i32);
    let int8 = |v: Option<u32>| v.map(i64::from);
    vec![
        Box::new(r.ledger_key_hash.as_str()),
        Box::new(i64::from(r.ledger_sequence)),
        Box::new(r.change_index as i32),
        Box::new(r.contract_id.as_str()),
        Box::new(r.contract_key_type.as_str()),
        Box::new(r.contract_durability),
        Box::new(r.asset_code.as_deref()),
        Box::new(r.asset_issuer.as_deref()),
        Box::new(r.asset_type),
        Box::new(r.balance_holder.as_deref()),
        Box::new(r.balance.as_deref()),
        Box::new(int8(r.last_modified_ledger)),
        Box::new(r.change_type.xdr() as i32),
        Box::new(r.deleted),
        Box::new(r.evicted),
        Box::new(closed),
        Box::new(r.key_xdr.as_str()),
        Box::new(r.val_xdr.as_deref()),
        Box::new(r.key.as_str()),
        Box::new(r.val.as_deref()),
        Box::new(r.contract_instance_type.as_deref()),
        Box::new(r.contract_instance_wasm_hash.as_deref()),
        Box::new(int8(r.expiration_ledger_seq)),
        Box::new(r.tx_hash.as_deref()),
        Box::new(int4(r.transaction_index)),
        Box::new(int4(r.operation_index)),
    ]
}
