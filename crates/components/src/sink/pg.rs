//! What every PostgreSQL sink shares: the connection, retried with backoff while the
//! database is away; its checkpoint row, claimed with a new epoch by each process so that
//! a stale copy cannot commit (see [`super::postgres`] for why); and the error classes that
//! tell a retry from a rejection.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{Client, NoTls, Transaction};

use super::health::Readiness;
use super::SinkError;

/// The key of the advisory lock every sink takes around DDL on the database.
pub const DDL_LOCK: i64 = 0x7474_705f_6464_6c00; // "ttp_ddl\0"

/// The checkpoint table `table`, and its `epoch` and `events` columns added to one made
/// before they existed (`events` is NULL there: not counted from the start of the range).
pub fn checkpoints_ddl(table: &str) -> String {
    format!(
        "
CREATE TABLE IF NOT EXISTS {table} (
    sink_id     TEXT        PRIMARY KEY,
    last_ledger BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Raised by each process of the sink when it starts; only the latest may commit.
    epoch       BIGINT      NOT NULL DEFAULT 0,
    -- Rows committed with this checkpoint since the range was (re)started: what a check of
    -- the range's rows expects to find.
    events      BIGINT               DEFAULT 0
);
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS events BIGINT;
ALTER TABLE {table} ALTER COLUMN events SET DEFAULT 0;"
    )
}

/// The name of a sink's checkpoint row: the sink id for a live run, `SINK_ID@FROM-TO` for a
/// bounded one, so that each range keeps its own progress.
pub fn checkpoint_id(sink_id: &str, start: u32, end: Option<u32>) -> String {
    match end {
        None => sink_id.to_string(),
        Some(end) => format!("{sink_id}@{start}-{end}"),
    }
}

/// Why an operation on the database did not succeed: the database's error (retried when it is
/// a connection problem), or a verdict of the sink's own.
pub enum Failure {
    Db(tokio_postgres::Error),
    Sink(SinkError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Db(e)
    }
}

pub type Op<'c, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, Failure>> + Send + 'c>>;

/// Creates (or checks) a sink's tables on each new connection, before the claim.
pub type PrepareSchema = Arc<dyn for<'c> Fn(&'c mut Client) -> Op<'c, ()> + Send + Sync>;

/// The statements on one checkpoint table, for one row.
struct RowSql {
    table: &'static str,
    row: String,
    claim: String,
    fence: String,
    advance: String,
    read: String,
    reset: String,
}

/// This process's claim on its checkpoint row, given to every operation.
#[derive(Clone)]
pub struct Claim {
    sql: Arc<RowSql>,
    epoch: i64,
}

impl Claim {
    /// Locks the row for the rest of `tx` and checks that it is still this process's;
    /// refuses otherwise (the caller's transaction then rolls back when dropped).
    pub async fn fence(&self, tx: &Transaction<'_>) -> Result<(), Failure> {
        let theirs: Option<i64> = tx
            .query_opt(&self.sql.fence, &[&self.sql.row])
            .await?
            .map(|r| r.get(0));
        if theirs == Some(self.epoch) {
            return Ok(());
        }
        Err(Failure::Sink(SinkError::Fenced {
            row: self.sql.row.clone(),
            theirs,
            mine: self.epoch,
        }))
    }

    /// Moves the (fenced) row to `through`, counting `rows` more committed with it.
    pub async fn advance(
        &self,
        tx: &Transaction<'_>,
        through: u32,
        rows: i64,
    ) -> Result<(), Failure> {
        tx.execute(
            &self.sql.advance,
            &[&self.sql.row, &i64::from(through), &rows],
        )
        .await?;
        Ok(())
    }

    /// The row's name.
    pub fn row(&self) -> &str {
        &self.sql.row
    }
}

pub struct Session {
    url: String,
    client: Option<Client>,
    readiness: Readiness,
    max_backoff: Duration,
    prepare: PrepareSchema,
    sql: Arc<RowSql>,
    /// This process's claim on its checkpoint row, taken on the first connection only.
    epoch: Option<i64>,
}

impl Session {
    /// A session that connects (and prepares the schema, then claims row `row` of
    /// `checkpoints`) on first use.
    pub fn new(
        url: &str,
        row: &str,
        checkpoints: &'static str,
        readiness: Readiness,
        prepare: PrepareSchema,
    ) -> Self {
        let t = checkpoints;
        let sql = RowSql {
            table: t,
            row: row.to_string(),
            claim: format!(
                "INSERT INTO {t} (sink_id, last_ledger, epoch) VALUES ($1, 0, 1)
                 ON CONFLICT (sink_id) DO UPDATE
                 SET epoch = {t}.epoch + 1, updated_at = now()
                 RETURNING epoch"
            ),
            fence: format!("SELECT epoch FROM {t} WHERE sink_id = $1 FOR UPDATE"),
            // The row exists: it was claimed, and the fence locked it.
            advance: format!(
                "UPDATE {t} SET last_ledger = GREATEST(last_ledger, $2), updated_at = now(),
                     events = events + $3
                 WHERE sink_id = $1"
            ),
            read: format!("SELECT last_ledger FROM {t} WHERE sink_id = $1"),
            // Also backwards: a completed range written again, its rows counted from none.
            reset: format!(
                "UPDATE {t} SET last_ledger = $2, updated_at = now(), events = 0
                 WHERE sink_id = $1"
            ),
        };
        Session {
            url: url.to_string(),
            client: None,
            readiness,
            max_backoff: Duration::from_secs(10),
            prepare,
            sql: Arc::new(sql),
            epoch: None,
        }
    }

    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    pub fn with_schema(mut self, prepare: PrepareSchema) -> Self {
        self.prepare = prepare;
        self
    }

    /// This process's epoch on its checkpoint row, once it has connected.
    pub fn epoch(&self) -> Option<i64> {
        self.epoch
    }

    pub fn checkpoint_table(&self) -> &'static str {
        self.sql.table
    }

    async fn connect(&mut self) -> Result<Client, Failure> {
        let (mut client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection closed");
            }
        });
        (self.prepare)(&mut client).await?;
        if self.epoch.is_none() {
            let epoch: i64 = client
                .query_one(&self.sql.claim, &[&self.sql.row])
                .await?
                .get(0);
            tracing::info!(
                checkpoint = %self.sql.row,
                epoch,
                "claimed the checkpoint row: older copies of this sink can no longer commit"
            );
            self.epoch = Some(epoch);
        }
        Ok(client)
    }

    /// Runs `op` until it succeeds, reconnecting with backoff on connection-class errors.
    /// Errors that retrying cannot fix (bad SQL data, permissions, a fenced copy) are
    /// returned. `op` gets the client and this process's claim.
    pub async fn with_retry<T>(
        &mut self,
        what: &str,
        mut op: impl for<'c> FnMut(&'c mut Client, Claim) -> Op<'c, T>,
    ) -> Result<T, SinkError> {
        let mut delay = Duration::from_millis(100);
        loop {
            if self.client.as_ref().is_none_or(|c| c.is_closed()) {
                match self.connect().await {
                    Ok(c) => self.client = Some(c),
                    Err(Failure::Db(e)) if retryable(&e) => {
                        self.wait(what, &e, &mut delay).await;
                        continue;
                    }
                    Err(Failure::Db(e)) => return Err(SinkError::Postgres(describe(&e))),
                    Err(Failure::Sink(e)) => return Err(e),
                }
            }
            let claim = Claim {
                sql: self.sql.clone(),
                epoch: self.epoch.expect("claimed on connecting"),
            };
            let client = self.client.as_mut().expect("connected above");
            match op(client, claim).await {
                Ok(v) => {
                    self.readiness.set_ready();
                    return Ok(v);
                }
                Err(Failure::Sink(e)) => return Err(e),
                Err(Failure::Db(e)) if retryable(&e) => {
                    self.client = None;
                    self.wait(what, &e, &mut delay).await;
                }
                Err(Failure::Db(e)) if rejected(&e) => {
                    return Err(SinkError::Rejected {
                        ledger: None,
                        message: format!("{what}: {}", describe(&e)),
                    })
                }
                Err(Failure::Db(e)) => {
                    return Err(SinkError::Postgres(format!("{what}: {}", describe(&e))))
                }
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

    /// The last complete ledger recorded for this row, 0 when none.
    pub async fn checkpoint(&mut self) -> Result<u32, SinkError> {
        let last: Option<i64> = self
            .with_retry("reading the checkpoint", move |c, claim| {
                Box::pin(async move {
                    let row = c.query_opt(&claim.sql.read, &[&claim.sql.row]).await?;
                    Ok(row.map(|r| r.get::<_, i64>(0)))
                })
            })
            .await?;
        Ok(last.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// Moves the checkpoint to `ledger`, also backwards.
    pub async fn reset_checkpoint(&mut self, ledger: u32) -> Result<(), SinkError> {
        self.with_retry("resetting the checkpoint", move |c, claim| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                claim.fence(&tx).await?;
                tx.execute(&claim.sql.reset, &[&claim.sql.row, &i64::from(ledger)])
                    .await?;
                Ok(tx.commit().await?)
            })
        })
        .await
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
/// 23 integrity constraint violation): the same rows would fail again.
fn rejected(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|code| matches!(&code.code()[..2], "22" | "23"))
}

pub fn describe(e: &tokio_postgres::Error) -> String {
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
