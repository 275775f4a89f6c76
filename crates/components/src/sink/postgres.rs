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
//! are).
//!
//! While the database is unreachable it retries with backoff and reports not-ready; the
//! batch stays in memory, so no event is lost. A data error (SQLSTATE class 22 or 23: a
//! value or a constraint of the table rejects an event) is [`SinkError::Rejected`], never
//! retried.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::fields::flat;
use super::health::Readiness;
use super::{LedgerEvents, SinkError};
use stellar_ttp::to_json as event_json;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ttp_events (
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
    PRIMARY KEY (ledger_sequence, transaction_index, operation_index, event_index)
);
CREATE TABLE IF NOT EXISTS ttp_sink_checkpoints (
    sink_id     TEXT        PRIMARY KEY,
    last_ledger BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);";

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

const CHECKPOINT: &str = "
INSERT INTO ttp_sink_checkpoints (sink_id, last_ledger) VALUES ($1, $2)
ON CONFLICT (sink_id) DO UPDATE
SET last_ledger = GREATEST(ttp_sink_checkpoints.last_ledger, EXCLUDED.last_ledger),
    updated_at = now()";

/// Sets the checkpoint as given, also backwards: a completed range written again.
const RESET_CHECKPOINT: &str = "
INSERT INTO ttp_sink_checkpoints (sink_id, last_ledger) VALUES ($1, $2)
ON CONFLICT (sink_id) DO UPDATE SET last_ledger = EXCLUDED.last_ledger, updated_at = now()";

/// The name of a sink's checkpoint row: the sink id for a live run, `SINK_ID@FROM-TO` for a
/// bounded one, so that each range keeps its own progress.
pub fn checkpoint_id(sink_id: &str, start: u32, end: Option<u32>) -> String {
    match end {
        None => sink_id.to_string(),
        Some(end) => format!("{sink_id}@{start}-{end}"),
    }
}

/// Rows per INSERT statement.
const CHUNK: usize = 5000;

pub struct PgSink {
    url: String,
    sink_id: String,
    client: Option<Client>,
    readiness: Readiness,
    max_backoff: Duration,
}

impl PgSink {
    /// A sink that connects (and creates the schema) on first use.
    pub fn new(url: &str, sink_id: &str, readiness: Readiness) -> Self {
        PgSink {
            url: url.to_string(),
            sink_id: sink_id.to_string(),
            client: None,
            readiness,
            max_backoff: Duration::from_secs(10),
        }
    }

    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    async fn connect_once(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection closed");
            }
        });
        client.batch_execute(SCHEMA).await?;
        Ok(client)
    }

    /// Runs `op` until it succeeds, reconnecting with backoff on connection-class errors.
    /// Errors that retrying cannot fix (bad SQL data, permissions) are returned.
    async fn with_retry<T>(
        &mut self,
        what: &str,
        mut op: impl for<'c> FnMut(
            &'c mut Client,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'c>,
        >,
    ) -> Result<T, SinkError> {
        let mut delay = Duration::from_millis(100);
        loop {
            if self.client.as_ref().is_none_or(|c| c.is_closed()) {
                match self.connect_once().await {
                    Ok(c) => self.client = Some(c),
                    Err(e) if retryable(&e) => {
                        self.wait(what, &e, &mut delay).await;
                        continue;
                    }
                    Err(e) => return Err(SinkError::Postgres(describe(&e))),
                }
            }
            let client = self.client.as_mut().expect("connected above");
            match op(client).await {
                Ok(v) => {
                    self.readiness.set_ready();
                    return Ok(v);
                }
                Err(e) if retryable(&e) => {
                    self.client = None;
                    self.wait(what, &e, &mut delay).await;
                }
                Err(e) if rejected(&e) => {
                    return Err(SinkError::Rejected {
                        ledger: None,
                        message: format!("{what}: {}", describe(&e)),
                    })
                }
                Err(e) => return Err(SinkError::Postgres(format!("{what}: {}", describe(&e)))),
            }
        }
    }

    async fn wait(&self, what: &str, e: &tokio_postgres::Error, delay: &mut Duration) {
        let reason = format!("database unavailable ({what}): {}", describe(e));
        tracing::warn!(retry_in = ?*delay, "{reason}");
        self.readiness.set_unhealthy(reason);
        tokio::time::sleep(*delay).await;
        *delay = (*delay * 2).min(self.max_backoff);
    }

    /// The last complete ledger recorded for this sink, 0 when none.
    pub async fn checkpoint(&mut self) -> Result<u32, SinkError> {
        let id = self.sink_id.clone();
        let last: Option<i64> = self
            .with_retry("reading the checkpoint", move |c| {
                let id = id.clone();
                Box::pin(async move {
                    let row = c
                        .query_opt(
                            "SELECT last_ledger FROM ttp_sink_checkpoints WHERE sink_id = $1",
                            &[&id],
                        )
                        .await?;
                    Ok(row.map(|r| r.get::<_, i64>(0)))
                })
            })
            .await?;
        Ok(last.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// Moves the checkpoint to `ledger`, also backwards.
    pub async fn reset_checkpoint(&mut self, ledger: u32) -> Result<(), SinkError> {
        let id = self.sink_id.clone();
        self.with_retry("resetting the checkpoint", move |c| {
            let id = id.clone();
            Box::pin(async move {
                c.execute(RESET_CHECKPOINT, &[&id, &i64::from(ledger)])
                    .await
                    .map(drop)
            })
        })
        .await
    }

    /// Writes the events of complete ledgers and moves the checkpoint to `through`, in one
    /// transaction. Retries until committed.
    pub async fn write(&mut self, batch: &[LedgerEvents], through: u32) -> Result<(), SinkError> {
        let rows = std::sync::Arc::new(Rows::from(batch));
        let id = self.sink_id.clone();
        self.with_retry("writing events", move |c| {
            let rows = rows.clone();
            let id = id.clone();
            Box::pin(async move {
                let tx = c.transaction().await?;
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
                tx.execute(CHECKPOINT, &[&id, &i64::from(through)]).await?;
                tx.commit().await
            })
        })
        .await
    }
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

/// Connection trouble, a server going away, or overload: worth waiting for.
fn retryable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            matches!(class, "08" | "57" | "53" | "40")
        }
    }
}

/// A value or a constraint of the table refuses the data (SQLSTATE class 22 data exception,
/// 23 integrity constraint violation): the same events would fail again.
fn rejected(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|code| matches!(&code.code()[..2], "22" | "23"))
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                src = inner.source();
            }
            s
        }
    }
}
