//! The PostgreSQL sink: one row per event, keyed by its natural key (ledger, transaction
//! index, operation index, event index in the ledger) so replays never duplicate, and a
//! checkpoint (the last complete ledger) committed in the same transaction as the events.
//! A row already stored is replaced only when the replayed event differs from it, so a replay
//! after a processor fix corrects it and an identical replay writes nothing.
//!
//! The checkpoint row of a live run (no `END_LEDGER`) is named by the sink id; a bounded run
//! has its own, `SINK_ID@FROM-TO` (see [`checkpoint_id`]), so a backfill or a replay of an old
//! range is neither skipped because of the live checkpoint nor moves it. A bounded run
//! started again after a kill resumes from its own row; one whose row says the range is
//! complete writes it again from `FROM` (a new replay; rows that did not change stay as they
//! are). The row also counts the events committed with it since its range was (re)started
//! (`events`), which `flowctl chunks verify` compares with the rows found in the range.
//!
//! Each process of a sink claims its checkpoint row when it first connects: the row's
//! `epoch` goes up by one and the process remembers it. Every batch transaction first locks
//! the row (`SELECT epoch … FOR UPDATE`) and commits only while the epoch is still its own, so
//! a copy left running on a host the scheduler gave up on (its shard requeued elsewhere) has
//! its next batch refused and stops with [`SinkError::Fenced`] (exit code
//! [`flowctl_sdk::EXIT_FENCED`]) instead of overwriting the newer copy's rows. A reconnect
//! after an outage does not claim again: that would let a stale copy fence the live one.
//!
//! With `PG_PARTITION_LEDGERS=N`, `ttp_events` is partitioned by range of `ledger_sequence`,
//! `ttp_events_<from>_<to>` of `N` ledgers each, and each batch creates the partitions its
//! ledgers need before its transaction. DDL (tables, the `epoch` column of an older database,
//! partitions) runs under one transaction-scoped advisory lock, so sinks starting together do
//! not race on the catalog, and never inside a batch transaction, so it cannot deadlock with
//! another sink's batch.
//!
//! While the database is unreachable it retries with backoff and reports not-ready; the
//! batch stays in memory, so no event is lost. A data error (SQLSTATE class 22 or 23: a
//! value or a constraint of the table rejects an event) is [`SinkError::Rejected`], never
//! retried.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_postgres::Client;

use super::fields::flat;
use super::health::Readiness;
use super::pg::{checkpoints_ddl, describe, Failure, Op, PrepareSchema, Session, DDL_LOCK};
use super::{LedgerEvents, SinkError};
use stellar_ttp::to_json as event_json;

const EVENTS_COLUMNS: &str = "
    ledger_sequence   BIGINT      NOT NULL,
    transaction_index INTEGER     NOT NULL,
    -- 0 for fee events, which belong to no operation; operations count from 1.
    operation_index   INTEGER     NOT NULL,
    event_index       INTEGER     NOT NULL,
    closed_at         TIMESTAMPTZ,
    tx_hash           TEXT        NOT NULL,
    contract_address  TEXT        NOT NULL,
    event_type        TEXT        NOT NULL,
    from_address      TEXT,
    to_address        TEXT,
    asset             TEXT,
    amount            NUMERIC     NOT NULL,
    event             JSONB       NOT NULL,
    PRIMARY KEY (ledger_sequence, transaction_index, operation_index, event_index)";

/// What exists already: `ttp_events`'s relkind (`r` plain, `p` partitioned) and partition
/// key, and whether the checkpoint table has its `epoch` and `events` columns. Reads the
/// catalog only, so a sink that finds everything in place takes no lock.
const LAYOUT: &str = "
SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('ttp_events')),
       pg_get_partkeydef(to_regclass('ttp_events')),
       (SELECT COUNT(*) = 2 FROM pg_attribute
        WHERE attrelid = to_regclass('ttp_sink_checkpoints')
          AND attname IN ('epoch', 'events') AND NOT attisdropped)";

/// The checkpoint rows of `ttp-sink`s.
const CHECKPOINTS_TABLE: &str = "ttp_sink_checkpoints";

/// `ttp_events`'s schema step, partitioned or not.
fn ttp_schema(partition_ledgers: Option<u32>) -> PrepareSchema {
    std::sync::Arc::new(move |c: &mut Client| -> Op<'_, ()> {
        Box::pin(prepare_schema(c, partition_ledgers))
    })
}

const INSERT: &str = "
INSERT INTO ttp_events (ledger_sequence, transaction_index, operation_index, event_index,
    closed_at, tx_hash, contract_address, event_type, from_address, to_address, asset,
    amount, event)
SELECT l, t, o, e, c::timestamptz, h, ca, k, f, tt, a, am::numeric, ev::jsonb
FROM unnest($1::bigint[], $2::int[], $3::int[], $4::int[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
            $13::text[])
    AS u(l, t, o, e, c, h, ca, k, f, tt, a, am, ev)
ON CONFLICT (ledger_sequence, transaction_index, operation_index, event_index) DO UPDATE
SET closed_at = EXCLUDED.closed_at, tx_hash = EXCLUDED.tx_hash,
    contract_address = EXCLUDED.contract_address, event_type = EXCLUDED.event_type,
    from_address = EXCLUDED.from_address, to_address = EXCLUDED.to_address,
    asset = EXCLUDED.asset, amount = EXCLUDED.amount, event = EXCLUDED.event
WHERE (ttp_events.closed_at, ttp_events.tx_hash, ttp_events.contract_address,
       ttp_events.event_type, ttp_events.from_address, ttp_events.to_address,
       ttp_events.asset, ttp_events.amount, ttp_events.event)
    IS DISTINCT FROM
      (EXCLUDED.closed_at, EXCLUDED.tx_hash, EXCLUDED.contract_address,
       EXCLUDED.event_type, EXCLUDED.from_address, EXCLUDED.to_address,
       EXCLUDED.asset, EXCLUDED.amount, EXCLUDED.event)";

pub use super::pg::checkpoint_id;

/// Rows per INSERT statement.
const CHUNK: usize = 5000;

pub struct PgSink {
    session: Session,
    /// Ledgers per partition of `ttp_events` (`PG_PARTITION_LEDGERS`); `None`: one table.
    partition_ledgers: Option<u32>,
    /// Partitions known to exist, by first ledger.
    partitions: BTreeSet<u64>,
}

impl PgSink {
    /// A sink that connects (and creates the schema) on first use.
    pub fn new(url: &str, sink_id: &str, readiness: Readiness) -> Self {
        PgSink {
            session: Session::new(url, sink_id, CHECKPOINTS_TABLE, readiness, ttp_schema(None)),
            partition_ledgers: None,
            partitions: BTreeSet::new(),
        }
    }

    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.session = self.session.with_max_backoff(d);
        self
    }

    /// `ttp_events` partitioned by ranges of `ledgers` ledgers (`PG_PARTITION_LEDGERS`).
    pub fn with_partitions(mut self, ledgers: Option<u32>) -> Self {
        self.partition_ledgers = ledgers.filter(|n| *n > 0);
        self.session = self.session.with_schema(ttp_schema(self.partition_ledgers));
        self
    }

    /// This process's epoch on its checkpoint row, once it has connected.
    pub fn epoch(&self) -> Option<i64> {
        self.session.epoch()
    }

    /// The last complete ledger recorded for this sink, 0 when none.
    pub async fn checkpoint(&mut self) -> Result<u32, SinkError> {
        self.session.checkpoint().await
    }

    /// Moves the checkpoint to `ledger`, also backwards.
    pub async fn reset_checkpoint(&mut self, ledger: u32) -> Result<(), SinkError> {
        self.session.reset_checkpoint(ledger).await
    }

    /// Writes the events of complete ledgers and moves the checkpoint to `through`, in one
    /// transaction, which commits only while this process's claim on the checkpoint row
    /// holds. Retries until committed.
    pub async fn write(&mut self, batch: &[LedgerEvents], through: u32) -> Result<(), SinkError> {
        self.ensure_partitions(batch).await?;
        let rows = std::sync::Arc::new(Rows::from(batch));
        self.session
            .with_retry("writing events", move |c, claim| {
                let rows = rows.clone();
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    claim.fence(&tx).await?;
                    let stmt = tx.prepare(INSERT).await?;
                    for start in (0..rows.len()).step_by(CHUNK) {
                        let end = (start + CHUNK).min(rows.len());
                        let r = rows.slice(start, end);
                        tx.execute(
                            &stmt,
                            &[
                                &r.0, &r.1, &r.2, &r.3, &r.4, &r.5, &r.6, &r.7, &r.8, &r.9, &r.10,
                                &r.11, &r.12,
                            ],
                        )
                        .await?;
                    }
                    claim.advance(&tx, through, rows.len() as i64).await?;
                    Ok(tx.commit().await?)
                })
            })
            .await
    }

    /// Creates the partitions of `ttp_events` that the batch's events fall in and that are not
    /// known to exist, in a transaction of their own before the batch's.
    async fn ensure_partitions(&mut self, batch: &[LedgerEvents]) -> Result<(), SinkError> {
        let Some(n) = self.partition_ledgers else {
            return Ok(());
        };
        let wanted: BTreeSet<u64> = batch
            .iter()
            .filter(|l| !l.events.is_empty())
            .map(|l| partition_start(l.ledger, n))
            .filter(|s| !self.partitions.contains(s))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let starts: Vec<u64> = wanted.iter().copied().collect();
        self.session
            .with_retry("creating partitions", move |c, _| {
                let starts = starts.clone();
                Box::pin(async move {
                    let names: Vec<String> = starts.iter().map(|s| partition_name(*s, n)).collect();
                    let missing: Vec<bool> = c
                        .query(
                            "SELECT to_regclass(name) IS NULL FROM unnest($1::text[]) AS name",
                            &[&names],
                        )
                        .await?
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                    if !missing.contains(&true) {
                        return Ok(());
                    }
                    let tx = c.transaction().await?;
                    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
                        .await?;
                    for (start, _) in starts.iter().zip(&missing).filter(|(_, m)| **m) {
                        let sql = format!(
                            "CREATE TABLE IF NOT EXISTS {} PARTITION OF ttp_events \
                         FOR VALUES FROM ({start}) TO ({})",
                            partition_name(*start, n),
                            start + u64::from(n)
                        );
                        if let Err(e) = tx.batch_execute(&sql).await {
                            return Err(partition_error(e, *start, n));
                        }
                    }
                    Ok(tx.commit().await?)
                })
            })
            .await?;
        self.partitions.extend(wanted);
        Ok(())
    }
}

/// Creates what is missing of the schema (under the DDL lock), then checks that `ttp_events`
/// is laid out as `PG_PARTITION_LEDGERS` says: a table made the other way is an error, never
/// changed behind the operator's back.
async fn prepare_schema(
    client: &mut Client,
    partition_ledgers: Option<u32>,
) -> Result<(), Failure> {
    let layout = |r: tokio_postgres::Row| -> (Option<String>, Option<String>, bool) {
        (r.get(0), r.get(1), r.get(2))
    };
    let mut found = layout(client.query_one(LAYOUT, &[]).await?);
    if found.0.is_none() || !found.2 {
        let partitioning = match partition_ledgers {
            Some(_) => " PARTITION BY RANGE (ledger_sequence)",
            None => "",
        };
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS ttp_events ({EVENTS_COLUMNS}\n){partitioning};{}",
            checkpoints_ddl(CHECKPOINTS_TABLE)
        );
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DDL_LOCK])
            .await?;
        tx.batch_execute(&ddl).await?;
        tx.commit().await?;
        found = layout(client.query_one(LAYOUT, &[]).await?);
    }
    let (kind, key, _) = found;
    let message = match (kind.as_deref(), partition_ledgers) {
        (Some("p"), Some(_)) if key.as_deref() == Some("RANGE (ledger_sequence)") => return Ok(()),
        (Some("r"), None) => return Ok(()),
        (Some("p"), Some(n)) => format!(
            "table ttp_events is partitioned by {}, not by RANGE (ledger_sequence) as \
             PG_PARTITION_LEDGERS={n} needs: use another database, or move the table aside",
            key.unwrap_or_default()
        ),
        (Some("p"), None) => "table ttp_events is partitioned, but PG_PARTITION_LEDGERS is not \
             set: set it to the ledgers per partition the table was made with (see its \
             partitions, ttp_events_<from>_<to>)"
            .to_string(),
        (Some("r"), Some(n)) => format!(
            "table ttp_events is not partitioned, but PG_PARTITION_LEDGERS={n} asks for \
             partitions by ledger range: unset PG_PARTITION_LEDGERS to write into it as it is, \
             or move the table aside to have it made partitioned"
        ),
        (other, _) => format!(
            "ttp_events is not a table (relkind {}): move it aside",
            other.unwrap_or("none")
        ),
    };
    Err(Failure::Sink(SinkError::Postgres(message)))
}

/// The first ledger of the partition of `ledger`, partitions being `n` ledgers long and
/// starting at multiples of `n`.
fn partition_start(ledger: u32, n: u32) -> u64 {
    u64::from(ledger) / u64::from(n) * u64::from(n)
}

/// `ttp_events_<from>_<to>`, both ledgers included.
fn partition_name(start: u64, n: u32) -> String {
    format!("ttp_events_{start}_{}", start + u64::from(n) - 1)
}

/// A partition that cannot be created: when it would overlap one already there, the table's
/// partitions were made with another `PG_PARTITION_LEDGERS`.
fn partition_error(e: tokio_postgres::Error, start: u64, n: u32) -> Failure {
    let overlap = e.code() == Some(&tokio_postgres::error::SqlState::INVALID_OBJECT_DEFINITION);
    if !overlap {
        return Failure::Db(e);
    }
    Failure::Sink(SinkError::Postgres(format!(
        "creating partition {} of table ttp_events for PG_PARTITION_LEDGERS={n}: {}; its \
         partitions were made with another PG_PARTITION_LEDGERS: use that value",
        partition_name(start, n),
        describe(&e)
    )))
}

/// Column arrays for one INSERT … SELECT FROM unnest(…).
#[derive(Default)]
struct Rows {
    ledger: Vec<i64>,
    tx: Vec<i32>,
    op: Vec<i32>,
    index: Vec<i32>,
    closed_at: Vec<Option<String>>,
    tx_hash: Vec<String>,
    contract: Vec<String>,
    kind: Vec<String>,
    from: Vec<Option<String>>,
    to: Vec<Option<String>>,
    asset: Vec<Option<String>>,
    amount: Vec<String>,
    json: Vec<String>,
}

type Slice<'a> = (
    &'a [i64],
    &'a [i32],
    &'a [i32],
    &'a [i32],
    &'a [Option<String>],
    &'a [String],
    &'a [String],
    &'a [String],
    &'a [Option<String>],
    &'a [Option<String>],
    &'a [Option<String>],
    &'a [String],
    &'a [String],
);

impl Rows {
    fn from(batch: &[LedgerEvents]) -> Rows {
        let mut r = Rows::default();
        for l in batch {
            for (i, ev) in l.events.iter().enumerate() {
                let meta = ev.meta.clone().unwrap_or_default();
                let f = flat(ev);
                r.ledger.push(i64::from(l.ledger));
                r.tx.push(meta.transaction_index as i32);
                r.op.push(meta.operation_index.unwrap_or(0) as i32);
                r.index.push(i as i32);
                r.closed_at.push(meta.closed_at.map(|t| {
                    let st = std::time::UNIX_EPOCH
                        + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
                    humantime::format_rfc3339(st).to_string()
                }));
                r.tx_hash.push(meta.tx_hash);
                r.contract.push(meta.contract_address);
                r.kind
                    .push(f.as_ref().map_or("unknown", |f| f.kind).to_string());
                r.from
                    .push(f.as_ref().and_then(|f| f.from.map(str::to_string)));
                r.to.push(f.as_ref().and_then(|f| f.to.map(str::to_string)));
                r.asset.push(f.as_ref().and_then(|f| f.asset.clone()));
                r.amount
                    .push(f.as_ref().map_or("0", |f| f.amount).to_string());
                r.json.push(event_json(ev));
            }
        }
        r
    }

    fn len(&self) -> usize {
        self.ledger.len()
    }

    fn slice(&self, a: usize, b: usize) -> Slice<'_> {
        (
            &self.ledger[a..b],
            &self.tx[a..b],
            &self.op[a..b],
            &self.index[a..b],
            &self.closed_at[a..b],
            &self.tx_hash[a..b],
            &self.contract[a..b],
            &self.kind[a..b],
            &self.from[a..b],
            &self.to[a..b],
            &self.asset[a..b],
            &self.amount[a..b],
            &self.json[a..b],
        )
    }
}
