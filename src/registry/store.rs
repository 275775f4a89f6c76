//! Pipeline run history in SQLite under the state dir.
//!
//! One table, `runs`, readable with the `sqlite3` shell: status as a word, times as Unix
//! milliseconds, per-component metrics and component ids as JSON text. Rows are kept newest
//! first up to a retention limit; runs still starting or running are never pruned.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowctl_proto::flowctl::{ComponentMetrics, PipelineRun, RunMetrics, RunStatus};
use rusqlite::{params, Connection, OptionalExtension};

/// The file name of the run store inside the state dir.
pub const RUNS_DB: &str = "runs.sqlite3";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state dir {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("run store {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("run store {}: row {run_id} has a bad {field}: {detail}", path.display())]
    BadRow {
        path: PathBuf,
        run_id: String,
        field: &'static str,
        detail: String,
    },
}

/// Filters of a run listing; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub pipeline_name: Option<String>,
    pub status: Option<RunStatus>,
    pub limit: usize,
}

pub struct RunStore {
    conn: Connection,
    path: PathBuf,
    retention: usize,
}

impl std::fmt::Debug for RunStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunStore")
            .field("path", &self.path)
            .finish()
    }
}

/// Runs the idempotent set-up of a store file that other processes may be opening at the
/// same moment (the shards of a backfill on one host, with one `--state-dir`). SQLite answers
/// "busy" at once, without waiting, where waiting could deadlock (two openers of a new file
/// upgrading their locks), so the set-up is tried again.
pub(super) fn set_up_retrying_busy(
    mut set_up: impl FnMut() -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let mut tries = 0;
    loop {
        match set_up() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 100 =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10 + 10 * (tries % 5)));
            }
            done => return done,
        }
    }
}

impl RunStore {
    /// Opens (or creates) `<state_dir>/runs.sqlite3`.
    pub fn open(state_dir: &Path, retention: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(RUNS_DB);
        let conn = Connection::open(&path);
        Self::start(conn, path, retention)
    }

    /// A store that lives only as long as the process (tests, or no state dir wanted).
    pub fn in_memory(retention: usize) -> Result<Self, StoreError> {
        Self::start(
            Connection::open_in_memory(),
            PathBuf::from(":memory:"),
            retention,
        )
    }

    /// The store on a just-opened connection, its schema in place.
    fn start(
        conn: rusqlite::Result<Connection>,
        path: PathBuf,
        retention: usize,
    ) -> Result<Self, StoreError> {
        let conn = conn.map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let store = RunStore {
            conn,
            path,
            retention: retention.max(1),
        };
        store.init()?;
        Ok(store)
    }

    /// Sets the store up, waiting for other processes opening it at the same time (the shards
    /// of a backfill on one host, with one `--state-dir`).
    fn init(&self) -> Result<(), StoreError> {
        set_up_retrying_busy(|| self.init_once()).map_err(|e| self.err(e))
    }

    fn init_once(&self) -> rusqlite::Result<()> {
        self.conn.execute_batch(
            "PRAGMA busy_timeout = 5000;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;",
        )?;
        // One write transaction: two openers that both found a column missing would both
        // add it, and one would fail.
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS runs (
                 run_id TEXT PRIMARY KEY,
                 pipeline_id TEXT NOT NULL,
                 pipeline_name TEXT NOT NULL,
                 status TEXT NOT NULL,
                 start_time_ms INTEGER NOT NULL,
                 end_time_ms INTEGER,
                 config_yaml TEXT NOT NULL,
                 events_processed INTEGER NOT NULL DEFAULT 0,
                 events_per_second REAL NOT NULL DEFAULT 0,
                 bytes_processed INTEGER NOT NULL DEFAULT 0,
                 component_metrics TEXT NOT NULL DEFAULT '{}',
                 error TEXT NOT NULL DEFAULT '',
                 component_ids TEXT NOT NULL DEFAULT '[]'
             );
             CREATE INDEX IF NOT EXISTS runs_by_start ON runs (start_time_ms DESC);
             CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline_name, start_time_ms DESC);",
        )?;
        // Columns added after the first release: a store written by an older flowctl gains
        // them, with 0 (no range) for its runs.
        for column in ["from_ledger", "to_ledger", "last_ledger_done"] {
            let present: bool = tx.query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('runs') WHERE name = ?1",
                params![column],
                |row| row.get(0),
            )?;
            if !present {
                tx.execute_batch(&format!(
                    "ALTER TABLE runs ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
                ))?;
            }
        }
        tx.commit()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Inserts or replaces a run, then prunes finished runs beyond the retention limit.
    pub fn put(&self, run: &PipelineRun) -> Result<(), StoreError> {
        let metrics = run.metrics.clone().unwrap_or_default();
        let component_metrics = component_metrics_json(&metrics.component_metrics);
        let component_ids = serde_json::to_string(&run.component_ids).unwrap_or_default();
        self.conn
            .execute(
                "INSERT OR REPLACE INTO runs (run_id, pipeline_id, pipeline_name, status,
                     start_time_ms, end_time_ms, config_yaml, events_processed, events_per_second,
                     bytes_processed, component_metrics, error, component_ids, from_ledger,
                     to_ledger, last_ledger_done)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                params![
                    run.run_id,
                    run.pipeline_id,
                    run.pipeline_name,
                    status_word(run.status()),
                    run.start_time.as_ref().map(timestamp_ms).unwrap_or(0),
                    run.end_time.as_ref().map(timestamp_ms),
                    run.config_yaml,
                    metrics.events_processed,
                    metrics.events_per_second,
                    metrics.bytes_processed,
                    component_metrics,
                    run.error,
                    component_ids,
                    run.from_ledger,
                    run.to_ledger,
                    run.last_ledger_done,
                ],
            )
            .map_err(|e| self.err(e))?;
        self.prune()
    }

    fn prune(&self) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM runs WHERE status NOT IN ('starting', 'running') AND run_id NOT IN (
                     SELECT run_id FROM runs ORDER BY start_time_ms DESC, rowid DESC LIMIT ?1)",
                params![self.retention as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn get(&self, run_id: &str) -> Result<Option<PipelineRun>, StoreError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM runs WHERE run_id = ?1"),
                params![run_id],
                raw_row,
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|r| self.decode(r)).transpose()
    }

    /// Run ids starting with `prefix`, at most `limit` of them.
    pub fn ids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let escaped = like_escaped(prefix);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id FROM runs WHERE run_id LIKE ?1 || '%' ESCAPE '\\'
                 ORDER BY start_time_ms DESC, rowid DESC LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let ids = stmt
            .query_map(params![escaped, limit as i64], |row| {
                row.get::<_, String>(0)
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(ids)
    }

    /// Runs newest first.
    pub fn list(&self, filter: &RunFilter) -> Result<Vec<PipelineRun>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM runs
                 WHERE (?1 IS NULL OR pipeline_name = ?1) AND (?2 IS NULL OR status = ?2)
                 ORDER BY start_time_ms DESC, rowid DESC LIMIT ?3"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![
                    filter.pipeline_name,
                    filter.status.map(status_word),
                    filter.limit as i64
                ],
                raw_row,
            )
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        rows.into_iter().map(|r| self.decode(r)).collect()
    }

    /// Runs that were starting or running when the store was last written.
    pub fn unfinished(&self) -> Result<Vec<PipelineRun>, StoreError> {
        let mut runs = self.list(&RunFilter {
            status: Some(RunStatus::Running),
            limit: usize::MAX >> 1,
            ..Default::default()
        })?;
        runs.extend(self.list(&RunFilter {
            status: Some(RunStatus::Starting),
            limit: usize::MAX >> 1,
            ..Default::default()
        })?);
        Ok(runs)
    }

    fn decode(&self, raw: RawRow) -> Result<PipelineRun, StoreError> {
        let bad = |field, detail: String| StoreError::BadRow {
            path: self.path.clone(),
            run_id: raw.run_id.clone(),
            field,
            detail,
        };
        let status = parse_status_word(&raw.status)
            .ok_or_else(|| bad("status", format!("unknown status {:?}", raw.status)))?;
        let component_metrics = parse_component_metrics(&raw.component_metrics)
            .map_err(|e| bad("component_metrics", e))?;
        let component_ids: Vec<String> = serde_json::from_str(&raw.component_ids)
            .map_err(|e| bad("component_ids", e.to_string()))?;
        Ok(PipelineRun {
            run_id: raw.run_id.clone(),
            pipeline_id: raw.pipeline_id,
            pipeline_name: raw.pipeline_name,
            status: status as i32,
            start_time: Some(ms_timestamp(raw.start_time_ms)),
            end_time: raw.end_time_ms.map(ms_timestamp),
            config_yaml: raw.config_yaml,
            metrics: Some(RunMetrics {
                events_processed: raw.events_processed,
                events_per_second: raw.events_per_second,
                bytes_processed: raw.bytes_processed,
                component_metrics,
            }),
            error: raw.error,
            component_ids,
            from_ledger: raw.from_ledger,
            to_ledger: raw.to_ledger,
            last_ledger_done: raw.last_ledger_done,
        })
    }
}

const COLUMNS: &str = "run_id, pipeline_id, pipeline_name, status, start_time_ms, end_time_ms,
    config_yaml, events_processed, events_per_second, bytes_processed, component_metrics, error,
    component_ids, from_ledger, to_ledger, last_ledger_done";

struct RawRow {
    run_id: String,
    pipeline_id: String,
    pipeline_name: String,
    status: String,
    start_time_ms: i64,
    end_time_ms: Option<i64>,
    config_yaml: String,
    events_processed: i64,
    events_per_second: f64,
    bytes_processed: i64,
    component_metrics: String,
    error: String,
    component_ids: String,
    from_ledger: u32,
    to_ledger: u32,
    last_ledger_done: u32,
}

fn raw_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        run_id: row.get(0)?,
        pipeline_id: row.get(1)?,
        pipeline_name: row.get(2)?,
        status: row.get(3)?,
        start_time_ms: row.get(4)?,
        end_time_ms: row.get(5)?,
        config_yaml: row.get(6)?,
        events_processed: row.get(7)?,
        events_per_second: row.get(8)?,
        bytes_processed: row.get(9)?,
        component_metrics: row.get(10)?,
        error: row.get(11)?,
        component_ids: row.get(12)?,
        from_ledger: row.get(13)?,
        to_ledger: row.get(14)?,
        last_ledger_done: row.get(15)?,
    })
}

/// `text` for a `LIKE … ESCAPE '\'` pattern: its wildcards taken literally.
pub(super) fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The word stored for a status (and shown by the CLI).
pub fn status_word(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Unknown => "unknown",
        RunStatus::Starting => "starting",
        RunStatus::Running => "running",
        RunStatus::Completed => "completed",
        RunStatus::Failed => "failed",
        RunStatus::Stopped => "stopped",
        RunStatus::CompletedWithDeadLetters => "completed_with_dead_letters",
    }
}

pub fn parse_status_word(word: &str) -> Option<RunStatus> {
    Some(match word {
        "unknown" => RunStatus::Unknown,
        "starting" => RunStatus::Starting,
        "running" => RunStatus::Running,
        "completed" => RunStatus::Completed,
        "failed" => RunStatus::Failed,
        "stopped" => RunStatus::Stopped,
        "completed_with_dead_letters" => RunStatus::CompletedWithDeadLetters,
        _ => return None,
    })
}

fn component_metrics_json(metrics: &HashMap<String, ComponentMetrics>) -> String {
    let map: serde_json::Map<String, serde_json::Value> = metrics
        .iter()
        .map(|(id, m)| {
            (
                id.clone(),
                serde_json::json!({
                    "events_in": m.events_in,
                    "events_out": m.events_out,
                    "bytes_in": m.bytes_in,
                    "bytes_out": m.bytes_out,
                    "processing_time_ms": m.processing_time_ms,
                }),
            )
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn parse_component_metrics(text: &str) -> Result<HashMap<String, ComponentMetrics>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let int = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_i64()).unwrap_or(0);
    Ok(object
        .iter()
        .map(|(id, v)| {
            (
                id.clone(),
                ComponentMetrics {
                    events_in: int(v, "events_in"),
                    events_out: int(v, "events_out"),
                    bytes_in: int(v, "bytes_in"),
                    bytes_out: int(v, "bytes_out"),
                    processing_time_ms: v
                        .get("processing_time_ms")
                        .and_then(|x| x.as_f64())
                        .unwrap_or(0.0),
                },
            )
        })
        .collect())
}

pub fn timestamp_ms(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000
}

pub fn ms_timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn system_time_timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, name: &str, start_ms: i64, status: RunStatus) -> PipelineRun {
        PipelineRun {
            run_id: id.into(),
            pipeline_id: name.into(),
            pipeline_name: name.into(),
            status: status as i32,
            start_time: Some(ms_timestamp(start_ms)),
            config_yaml: "kind: Pipeline\n".into(),
            metrics: Some(RunMetrics {
                events_processed: 7,
                component_metrics: [(
                    "sink".to_string(),
                    ComponentMetrics {
                        events_in: 7,
                        ..Default::default()
                    },
                )]
                .into_iter()
                .collect(),
                ..Default::default()
            }),
            component_ids: vec!["src".into(), "sink".into()],
            ..Default::default()
        }
    }

    #[test]
    fn shards_opening_one_new_state_dir_at_once_all_open_its_run_and_dead_letter_stores() {
        // Backfill shards on one host start together with one --state-dir, and each opens
        // both of its files.
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let openers: Vec<_> = (0..6)
                .map(|_| {
                    let (dir, start) = (dir.path().to_path_buf(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        super::super::dead_letters::DeadLetterStore::open(&dir)
                            .map_err(|e| e.to_string())?;
                        RunStore::open(&dir, 10)
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    })
                })
                .collect();
            for o in openers {
                o.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn round_trips_and_lists_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(dir.path(), 100).unwrap();
        store
            .put(&run("a", "p", 1000, RunStatus::Completed))
            .unwrap();
        store.put(&run("b", "p", 3000, RunStatus::Failed)).unwrap();
        store
            .put(&run("c", "q", 2000, RunStatus::Completed))
            .unwrap();
        assert_eq!(
            store.get("a").unwrap().unwrap(),
            run("a", "p", 1000, RunStatus::Completed)
        );
        let ids = |runs: Vec<PipelineRun>| runs.into_iter().map(|r| r.run_id).collect::<Vec<_>>();
        let all = store
            .list(&RunFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ids(all), ["b", "c", "a"]);
        let p = RunFilter {
            pipeline_name: Some("p".into()),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(ids(store.list(&p).unwrap()), ["b", "a"]);
        let failed = RunFilter {
            status: Some(RunStatus::Failed),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(ids(store.list(&failed).unwrap()), ["b"]);
    }

    #[test]
    fn retention_prunes_oldest_finished_runs_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(dir.path(), 2).unwrap();
        store
            .put(&run("old-running", "p", 1, RunStatus::Running))
            .unwrap();
        for i in 0..5 {
            store
                .put(&run(&format!("r{i}"), "p", 10 + i, RunStatus::Completed))
                .unwrap();
        }
        let all = store
            .list(&RunFilter {
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        let ids: Vec<_> = all.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["r4", "r3", "old-running"]);
    }

    #[test]
    fn prefix_lookup_treats_wildcards_literally() {
        let dir = tempfile::tempdir().unwrap();
        let store = RunStore::open(dir.path(), 100).unwrap();
        store
            .put(&run("ab_1", "p", 1, RunStatus::Completed))
            .unwrap();
        store
            .put(&run("abx1", "p", 2, RunStatus::Completed))
            .unwrap();
        assert_eq!(store.ids_with_prefix("ab_", 10).unwrap(), ["ab_1"]);
        assert_eq!(store.ids_with_prefix("ab", 10).unwrap(), ["abx1", "ab_1"]);
        assert!(store.ids_with_prefix("%", 10).unwrap().is_empty());
    }
}
