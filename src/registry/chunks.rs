//! Chunk runs: bounded units of historical work (a backfill's shard, a loader's ledger range)
//! as the components doing them report them (`UpsertChunkRun`, the Go flowctl v0.0.10's
//! contract), kept in the table `chunk_runs` of the run store's file (`runs.sqlite3`).
//!
//! One record per chunk; a report is merged into it:
//! - A report without a chunk id (the Go reporter's progress reports) is the chunk
//!   `RUN/COMPONENT/START-END` ([`derived_chunk_id`]).
//! - A report of an older attempt than the stored one is refused ([`ChunkError::StaleAttempt`]):
//!   a copy left running on a lost host cannot overwrite the copy that replaced it.
//! - A chunk keeps its run, component and range: a report naming others is refused.
//! - Status, failure class, phase, error and recommended action are replaced (they say where
//!   the chunk stands now). An UNKNOWN status is RUNNING, as the Go reporter means it; an
//!   attempt of 0 is 1, except for a PLANNED chunk (not run yet).
//! - `started_at` stays that of the attempt's first report (or its time); `completed_at` and
//!   `verified_at` are the report's, or its time when it completes, fails, aborts or verifies;
//!   a new attempt clears them. Row counts, verification and metadata merge key by key.
//!
//! Listing orders by chunk start, attempt and chunk id, then applies the limit, then pages
//! with a cursor on that order (the Go flowctl stopped at 100 rows before sorting).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use flowctl_proto::flowctl::{ChunkRun, ChunkStatus, FailureClass};
use rusqlite::{params, Connection, OptionalExtension};

use super::store::{ms_timestamp, set_up_retrying_busy, timestamp_ms, StoreError, RUNS_DB};

pub const DEFAULT_LIST_LIMIT: usize = 100;
pub const MAX_LIST_LIMIT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "chunk {chunk_id} is at attempt {stored}; a report of attempt {reported} comes from an \
         older copy and is not recorded"
    )]
    StaleAttempt {
        chunk_id: String,
        stored: i32,
        reported: i32,
    },
}

/// Filters of a listing; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct ChunkFilter {
    pub pipeline_run_id: Option<String>,
    pub component_id: Option<String>,
    pub status: Option<ChunkStatus>,
    /// 0: [`DEFAULT_LIST_LIMIT`]; at most [`MAX_LIST_LIMIT`].
    pub limit: usize,
    /// The previous page's `next_page_token`.
    pub page_token: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChunkPage {
    pub chunks: Vec<ChunkRun>,
    /// Empty when nothing follows.
    pub next_page_token: String,
}

/// The chunk a report without a chunk id is about.
pub fn derived_chunk_id(run_id: &str, component_id: &str, start: i64, end: i64) -> String {
    format!("{run_id}/{component_id}/{start}-{end}")
}

const STATUSES: &[(ChunkStatus, &str)] = &[
    (ChunkStatus::Unknown, "unknown"),
    (ChunkStatus::Planned, "planned"),
    (ChunkStatus::Dispatched, "dispatched"),
    (ChunkStatus::Running, "running"),
    (ChunkStatus::Completed, "completed"),
    (ChunkStatus::Verified, "verified"),
    (ChunkStatus::Failed, "failed"),
    (ChunkStatus::RetryPending, "retry_pending"),
    (ChunkStatus::Aborted, "aborted"),
];

const FAILURES: &[(FailureClass, &str)] = &[
    (FailureClass::Unknown, "unknown"),
    (
        FailureClass::RetryableInfrastructure,
        "retryable_infrastructure",
    ),
    (FailureClass::NonRetryableData, "non_retryable_data"),
    (FailureClass::NonRetryableSchema, "non_retryable_schema"),
    (FailureClass::Verification, "verification"),
    (FailureClass::AllocationLost, "allocation_lost"),
    (FailureClass::Oom, "oom"),
];

/// The word stored and shown for a status.
pub fn status_word(status: ChunkStatus) -> &'static str {
    STATUSES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or("unknown", |(_, w)| w)
}

fn normal(word: &str, prefix: &str) -> String {
    let w = word.trim().to_ascii_lowercase().replace('-', "_");
    w.strip_prefix(prefix).map(str::to_string).unwrap_or(w)
}

/// A status from its word (`retry-pending`, `retry_pending`, `CHUNK_STATUS_RETRY_PENDING`).
pub fn parse_status_word(word: &str) -> Option<ChunkStatus> {
    let w = normal(word, "chunk_status_");
    STATUSES.iter().find(|(_, n)| *n == w).map(|(s, _)| *s)
}

pub fn failure_word(class: FailureClass) -> &'static str {
    FAILURES
        .iter()
        .find(|(c, _)| *c == class)
        .map_or("unknown", |(_, w)| w)
}

pub fn parse_failure_word(word: &str) -> Option<FailureClass> {
    let w = normal(word, "failure_class_");
    FAILURES.iter().find(|(_, n)| *n == w).map(|(c, _)| *c)
}

pub struct ChunkStore {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for ChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStore")
            .field("path", &self.path)
            .finish()
    }
}

const COLUMNS: &str = "chunk_id, pipeline_run_id, component_id, chunk_start, chunk_end, attempt,
    status, failure_class, phase, error, recommended_action, started_at_ms, completed_at_ms,
    verified_at_ms, row_counts, verification, metadata, updated_at_ms";

impl ChunkStore {
    /// Opens (or creates) the table in `<state_dir>/runs.sqlite3`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(RUNS_DB);
        Self::start(Connection::open(&path), path)
    }

    pub fn in_memory() -> Result<Self, StoreError> {
        Self::start(Connection::open_in_memory(), PathBuf::from(":memory:"))
    }

    fn start(conn: rusqlite::Result<Connection>, path: PathBuf) -> Result<Self, StoreError> {
        let conn = conn.map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let store = ChunkStore { conn, path };
        set_up_retrying_busy(|| {
            store.conn.execute_batch(
                "PRAGMA busy_timeout = 5000;
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS chunk_runs (
                     chunk_id TEXT PRIMARY KEY,
                     pipeline_run_id TEXT NOT NULL,
                     component_id TEXT NOT NULL,
                     chunk_start INTEGER NOT NULL,
                     chunk_end INTEGER NOT NULL,
                     attempt INTEGER NOT NULL,
                     status TEXT NOT NULL,
                     failure_class TEXT NOT NULL,
                     phase TEXT NOT NULL,
                     error TEXT NOT NULL,
                     recommended_action TEXT NOT NULL,
                     started_at_ms INTEGER,
                     completed_at_ms INTEGER,
                     verified_at_ms INTEGER,
                     row_counts TEXT NOT NULL,
                     verification TEXT NOT NULL,
                     metadata TEXT NOT NULL,
                     updated_at_ms INTEGER NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS chunk_runs_in_order
                     ON chunk_runs (chunk_start, attempt, chunk_id);
                 CREATE INDEX IF NOT EXISTS chunk_runs_by_run
                     ON chunk_runs (pipeline_run_id, chunk_start, attempt, chunk_id);",
            )
        })
        .map_err(|e| store.err(e))?;
        Ok(store)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn bad_row(&self, id: &str, field: &'static str, detail: String) -> StoreError {
        StoreError::BadRow {
            path: self.path.clone(),
            run_id: id.to_string(),
            field,
            detail,
        }
    }

    pub fn get(&self, chunk_id: &str) -> Result<Option<ChunkRun>, StoreError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM chunk_runs WHERE chunk_id = ?1"),
                params![chunk_id],
                raw_row,
            )
            .optional()
            .map_err(|e| self.err(e))?;
        row.map(|r| self.decode(r)).transpose()
    }

    /// Merges a report into the stored record and returns the record as stored.
    pub fn upsert(&self, report: ChunkRun, now: SystemTime) -> Result<ChunkRun, ChunkError> {
        let invalid = |m: String| Err(ChunkError::Invalid(m));
        let status = ChunkStatus::try_from(report.status).map_err(|_| {
            ChunkError::Invalid(format!("status: {} is not a ChunkStatus", report.status))
        })?;
        let class = FailureClass::try_from(report.failure_class).map_err(|_| {
            ChunkError::Invalid(format!(
                "failure_class: {} is not a FailureClass",
                report.failure_class
            ))
        })?;
        let status = if status == ChunkStatus::Unknown {
            ChunkStatus::Running
        } else {
            status
        };
        if report.attempt < 0 {
            return invalid(format!("attempt: {} is negative", report.attempt));
        }
        let attempt = match (report.attempt, status) {
            (0, ChunkStatus::Planned) => 0,
            (0, _) => 1,
            (n, _) => n,
        };
        let mut id = report.chunk_id.clone();
        if id.is_empty() {
            if report.pipeline_run_id.is_empty() && report.component_id.is_empty() {
                return invalid(
                    "chunk_id: empty, and no pipeline_run_id or component_id to name the chunk by"
                        .into(),
                );
            }
            id = derived_chunk_id(
                &report.pipeline_run_id,
                &report.component_id,
                report.chunk_start,
                report.chunk_end,
            );
        }
        let stored = self.get(&id)?;
        let now_ts = super::store::system_time_timestamp(now);
        let mut c = match stored {
            Some(old) => {
                if attempt < old.attempt {
                    return Err(ChunkError::StaleAttempt {
                        chunk_id: id,
                        stored: old.attempt,
                        reported: attempt,
                    });
                }
                for (field, theirs, ours) in [
                    (
                        "pipeline_run_id",
                        &report.pipeline_run_id,
                        &old.pipeline_run_id,
                    ),
                    ("component_id", &report.component_id, &old.component_id),
                ] {
                    if !theirs.is_empty() && theirs != ours {
                        return invalid(format!(
                            "{field}: chunk {id} belongs to {ours:?}, not {theirs:?}"
                        ));
                    }
                }
                let range_given = report.chunk_start != 0 || report.chunk_end != 0;
                if range_given
                    && (report.chunk_start, report.chunk_end) != (old.chunk_start, old.chunk_end)
                {
                    return invalid(format!(
                        "chunk {id} is ledgers {}-{}, not {}-{}",
                        old.chunk_start, old.chunk_end, report.chunk_start, report.chunk_end
                    ));
                }
                let mut c = old.clone();
                if attempt > old.attempt {
                    c.started_at = None;
                    c.completed_at = None;
                    c.verified_at = None;
                }
                c
            }
            None => {
                if report.chunk_start < 0 || report.chunk_end < report.chunk_start {
                    return invalid(format!(
                        "chunk {id}: the range {}-{} is not a range of ledgers (start >= 0, \
                         end >= start)",
                        report.chunk_start, report.chunk_end
                    ));
                }
                ChunkRun {
                    chunk_id: id.clone(),
                    pipeline_run_id: report.pipeline_run_id.clone(),
                    component_id: report.component_id.clone(),
                    chunk_start: report.chunk_start,
                    chunk_end: report.chunk_end,
                    ..Default::default()
                }
            }
        };
        c.attempt = attempt;
        c.status = status as i32;
        c.failure_class = class as i32;
        c.phase = report.phase;
        c.error = report.error;
        c.recommended_action = report.recommended_action;
        if report.started_at.is_some() && c.started_at.is_none() {
            c.started_at = report.started_at;
        }
        if c.started_at.is_none() && status == ChunkStatus::Running {
            c.started_at = Some(now_ts);
        }
        let ends = matches!(
            status,
            ChunkStatus::Completed
                | ChunkStatus::Verified
                | ChunkStatus::Failed
                | ChunkStatus::Aborted
        );
        if report.completed_at.is_some() {
            c.completed_at = report.completed_at;
        } else if ends && c.completed_at.is_none() {
            c.completed_at = Some(now_ts);
        }
        if report.verified_at.is_some() {
            c.verified_at = report.verified_at;
        } else if status == ChunkStatus::Verified {
            c.verified_at = Some(now_ts);
        }
        c.row_counts.extend(report.row_counts);
        c.verification.extend(report.verification);
        c.metadata.extend(report.metadata);
        c.updated_at = Some(now_ts);
        self.put(&c)?;
        Ok(c)
    }

    fn put(&self, c: &ChunkRun) -> Result<(), StoreError> {
        let json = |m: &HashMap<String, String>| serde_json::to_string(m).unwrap_or_default();
        let ts = |t: &Option<prost_types::Timestamp>| t.as_ref().map(timestamp_ms);
        self.conn
            .execute(
                &format!(
                    "INSERT OR REPLACE INTO chunk_runs ({COLUMNS}) VALUES
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
                ),
                params![
                    c.chunk_id,
                    c.pipeline_run_id,
                    c.component_id,
                    c.chunk_start,
                    c.chunk_end,
                    c.attempt,
                    status_word(c.status()),
                    failure_word(c.failure_class()),
                    c.phase,
                    c.error,
                    c.recommended_action,
                    ts(&c.started_at),
                    ts(&c.completed_at),
                    ts(&c.verified_at),
                    serde_json::to_string(&c.row_counts).unwrap_or_default(),
                    json(&c.verification),
                    json(&c.metadata),
                    ts(&c.updated_at).unwrap_or(0),
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Distinct run ids of chunks that start with `prefix`.
    pub fn run_ids_with_prefix(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let escaped = super::store::like_escaped(prefix);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT pipeline_run_id FROM chunk_runs
                 WHERE pipeline_run_id LIKE ?1 || '%' ESCAPE '\\' ORDER BY 1 LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let ids = stmt
            .query_map(params![escaped, limit as i64], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(ids)
    }

    /// The run a filter names: itself when chunks of it exist, else the one run it is a
    /// unique prefix of.
    fn resolve_run(&self, run: &str) -> Result<String, ChunkError> {
        let exact: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM chunk_runs WHERE pipeline_run_id = ?1)",
                params![run],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if exact {
            return Ok(run.to_string());
        }
        let mut found = self.run_ids_with_prefix(run, 6)?;
        match found.len() {
            0 | 1 => Ok(found.pop().unwrap_or_else(|| run.to_string())),
            _ => Err(ChunkError::Invalid(format!(
                "pipeline_run_id: {run:?} is ambiguous, the start of several runs' ids ({}{}): give \
                 more of it",
                found[..found.len().min(5)].join(", "),
                if found.len() > 5 { ", …" } else { "" }
            ))),
        }
    }

    pub fn list(&self, filter: &ChunkFilter) -> Result<ChunkPage, ChunkError> {
        let limit = match filter.limit {
            0 => DEFAULT_LIST_LIMIT,
            n => n.min(MAX_LIST_LIMIT),
        };
        let run = match &filter.pipeline_run_id {
            Some(r) if !r.is_empty() => Some(self.resolve_run(r)?),
            _ => None,
        };
        let after = match filter.page_token.as_deref().filter(|t| !t.is_empty()) {
            None => None,
            Some(token) => Some(parse_token(token)?),
        };
        let (a_start, a_attempt, a_id) = after.unwrap_or((i64::MIN, i32::MIN, String::new()));
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM chunk_runs
                 WHERE (?1 IS NULL OR pipeline_run_id = ?1) AND (?2 IS NULL OR component_id = ?2)
                   AND (?3 IS NULL OR status = ?3)
                   AND (chunk_start, attempt, chunk_id) > (?4, ?5, ?6)
                 ORDER BY chunk_start, attempt, chunk_id LIMIT ?7"
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(
                params![
                    run,
                    filter.component_id.as_deref().filter(|c| !c.is_empty()),
                    filter.status.map(status_word),
                    a_start,
                    a_attempt,
                    a_id,
                    (limit + 1) as i64
                ],
                raw_row,
            )
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        let more = rows.len() > limit;
        let chunks = rows
            .into_iter()
            .take(limit)
            .map(|r| self.decode(r))
            .collect::<Result<Vec<_>, _>>()?;
        let next_page_token = match (more, chunks.last()) {
            (true, Some(last)) => token_after(last),
            _ => String::new(),
        };
        Ok(ChunkPage {
            chunks,
            next_page_token,
        })
    }

    fn decode(&self, r: RawRow) -> Result<ChunkRun, StoreError> {
        let status = parse_status_word(&r.status)
            .ok_or_else(|| self.bad_row(&r.chunk_id, "status", r.status.clone()))?;
        let class = parse_failure_word(&r.failure_class)
            .ok_or_else(|| self.bad_row(&r.chunk_id, "failure_class", r.failure_class.clone()))?;
        let map = |field: &'static str, text: &str| {
            serde_json::from_str::<HashMap<String, String>>(text)
                .map_err(|e| self.bad_row(&r.chunk_id, field, e.to_string()))
        };
        let row_counts: HashMap<String, i64> = serde_json::from_str(&r.row_counts)
            .map_err(|e| self.bad_row(&r.chunk_id, "row_counts", e.to_string()))?;
        Ok(ChunkRun {
            verification: map("verification", &r.verification)?,
            metadata: map("metadata", &r.metadata)?,
            row_counts,
            chunk_id: r.chunk_id,
            pipeline_run_id: r.pipeline_run_id,
            component_id: r.component_id,
            chunk_start: r.chunk_start,
            chunk_end: r.chunk_end,
            attempt: r.attempt,
            status: status as i32,
            failure_class: class as i32,
            phase: r.phase,
            error: r.error,
            recommended_action: r.recommended_action,
            started_at: r.started_at_ms.map(ms_timestamp),
            completed_at: r.completed_at_ms.map(ms_timestamp),
            verified_at: r.verified_at_ms.map(ms_timestamp),
            updated_at: Some(ms_timestamp(r.updated_at_ms)),
        })
    }
}

/// The cursor after `c`: its place in the listing order.
pub fn token_after(c: &ChunkRun) -> String {
    format!("{}:{}:{}", c.chunk_start, c.attempt, c.chunk_id)
}

fn parse_token(token: &str) -> Result<(i64, i32, String), ChunkError> {
    let bad = || {
        ChunkError::Invalid(format!(
            "page_token: {token:?} is not a token this control plane gave"
        ))
    };
    let mut parts = token.splitn(3, ':');
    let start = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let attempt = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let id = parts.next().ok_or_else(bad)?.to_string();
    Ok((start, attempt, id))
}

struct RawRow {
    chunk_id: String,
    pipeline_run_id: String,
    component_id: String,
    chunk_start: i64,
    chunk_end: i64,
    attempt: i32,
    status: String,
    failure_class: String,
    phase: String,
    error: String,
    recommended_action: String,
    started_at_ms: Option<i64>,
    completed_at_ms: Option<i64>,
    verified_at_ms: Option<i64>,
    row_counts: String,
    verification: String,
    metadata: String,
    updated_at_ms: i64,
}

fn raw_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        chunk_id: row.get(0)?,
        pipeline_run_id: row.get(1)?,
        component_id: row.get(2)?,
        chunk_start: row.get(3)?,
        chunk_end: row.get(4)?,
        attempt: row.get(5)?,
        status: row.get(6)?,
        failure_class: row.get(7)?,
        phase: row.get(8)?,
        error: row.get(9)?,
        recommended_action: row.get(10)?,
        started_at_ms: row.get(11)?,
        completed_at_ms: row.get(12)?,
        verified_at_ms: row.get(13)?,
        row_counts: row.get(14)?,
        verification: row.get(15)?,
        metadata: row.get(16)?,
        updated_at_ms: row.get(17)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn progress(run: &str, start: i64, end: i64, attempt: i32) -> ChunkRun {
        ChunkRun {
            pipeline_run_id: run.into(),
            component_id: "loader".into(),
            chunk_start: start,
            chunk_end: end,
            attempt,
            ..Default::default()
        }
    }

    #[test]
    fn a_report_without_an_id_is_its_ranges_chunk_and_later_reports_merge_into_it() {
        let store = ChunkStore::in_memory().unwrap();
        let first = store.upsert(progress("r1", 100, 199, 0), at(10)).unwrap();
        assert_eq!(first.chunk_id, "r1/loader/100-199");
        assert_eq!(first.status(), ChunkStatus::Running);
        assert_eq!(first.attempt, 1);
        assert_eq!(first.started_at.unwrap().seconds, 10);
        let mut done = progress("r1", 100, 199, 1);
        done.status = ChunkStatus::Completed as i32;
        done.row_counts.insert("ledgers".into(), 100);
        let done = store.upsert(done, at(20)).unwrap();
        assert_eq!(
            done.started_at.unwrap().seconds,
            10,
            "kept within the attempt"
        );
        assert_eq!(done.completed_at.unwrap().seconds, 20);
        assert_eq!(done.row_counts["ledgers"], 100);
        assert_eq!(store.get("r1/loader/100-199").unwrap().unwrap(), done);
        // A second attempt starts afresh.
        let again = store.upsert(progress("r1", 100, 199, 2), at(30)).unwrap();
        assert_eq!(again.started_at.unwrap().seconds, 30);
        assert_eq!(again.completed_at, None);
        assert_eq!(again.row_counts["ledgers"], 100, "maps merge");
    }

    #[test]
    fn a_report_of_an_older_attempt_is_refused_and_the_record_stays() {
        let store = ChunkStore::in_memory().unwrap();
        store.upsert(progress("r", 1, 64, 2), at(1)).unwrap();
        let mut zombie = progress("r", 1, 64, 1);
        zombie.status = ChunkStatus::Completed as i32;
        match store.upsert(zombie, at(2)) {
            Err(ChunkError::StaleAttempt {
                stored: 2,
                reported: 1,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let kept = store.get("r/loader/1-64").unwrap().unwrap();
        assert_eq!((kept.attempt, kept.status()), (2, ChunkStatus::Running));
    }

    #[test]
    fn bad_reports_are_refused_naming_the_field() {
        let store = ChunkStore::in_memory().unwrap();
        let refused = |c: ChunkRun| match store.upsert(c, at(1)) {
            Err(ChunkError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(refused(progress("r", 10, 5, 1)).contains("10-5"));
        assert!(
            refused(progress("", 0, 5, 1).tap(|c| c.component_id.clear())).starts_with("chunk_id")
        );
        assert!(refused(progress("r", 1, 5, 1).tap(|c| c.status = 99)).starts_with("status: 99"));
        assert!(
            refused(progress("r", 1, 5, 1).tap(|c| c.failure_class = -3))
                .starts_with("failure_class: -3")
        );
        assert!(refused(progress("r", 1, 5, -1)).contains("negative"));
        store.upsert(progress("r", 1, 5, 1), at(1)).unwrap();
        let mut moved = progress("r", 1, 5, 1);
        moved.chunk_id = "r/loader/1-5".into();
        moved.chunk_end = 9;
        assert!(refused(moved).contains("is ledgers 1-5, not 1-9"));
        let mut other_run = progress("s", 1, 5, 1);
        other_run.chunk_id = "r/loader/1-5".into();
        assert!(refused(other_run).contains("belongs to \"r\""));
    }

    trait Tap: Sized {
        fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
    }
    impl Tap for ChunkRun {
        fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
            f(&mut self);
            self
        }
    }

    #[test]
    fn listing_orders_before_its_limit_and_pages_through_every_chunk_once() {
        let store = ChunkStore::in_memory().unwrap();
        // 250 chunks reported in a scrambled order, some with two attempts.
        let mut order: Vec<i64> = (0..250).collect();
        order.sort_by_key(|i| (i * 7919) % 250);
        for i in &order {
            store
                .upsert(
                    progress("big", i * 64, i * 64 + 63, 1 + (*i % 3 == 0) as i32),
                    at(1),
                )
                .unwrap();
        }
        store.upsert(progress("other", 0, 1, 1), at(1)).unwrap();
        let first = store
            .list(&ChunkFilter {
                pipeline_run_id: Some("big".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(first.chunks.len(), DEFAULT_LIST_LIMIT);
        assert_eq!(first.chunks[0].chunk_start, 0, "the smallest start first");
        let mut seen: Vec<i64> = Vec::new();
        let mut filter = ChunkFilter {
            pipeline_run_id: Some("bi".into()),
            limit: 40,
            ..Default::default()
        };
        loop {
            let page = store.list(&filter).unwrap();
            seen.extend(page.chunks.iter().map(|c| c.chunk_start));
            if page.next_page_token.is_empty() {
                break;
            }
            filter.page_token = Some(page.next_page_token);
        }
        assert_eq!(seen, (0..250).map(|i| i * 64).collect::<Vec<_>>());
        let bad = store.list(&ChunkFilter {
            page_token: Some("nonsense".into()),
            ..Default::default()
        });
        assert!(matches!(bad, Err(ChunkError::Invalid(m)) if m.starts_with("page_token")));
        let ambiguous = store.list(&ChunkFilter {
            pipeline_run_id: Some("".into()),
            ..Default::default()
        });
        assert_eq!(
            ambiguous.unwrap().chunks.len(),
            DEFAULT_LIST_LIMIT,
            "no filter"
        );
        store.upsert(progress("bix", 0, 1, 1), at(1)).unwrap();
        let ambiguous = store.list(&ChunkFilter {
            pipeline_run_id: Some("bi".into()),
            ..Default::default()
        });
        assert!(matches!(ambiguous, Err(ChunkError::Invalid(m)) if m.contains("big, bix")));
    }

    #[test]
    fn status_and_failure_words_read_back_in_every_spelling() {
        for (s, w) in STATUSES {
            assert_eq!(parse_status_word(w), Some(*s));
            assert_eq!(status_word(*s), *w);
        }
        assert_eq!(
            parse_status_word("CHUNK_STATUS_RETRY_PENDING"),
            Some(ChunkStatus::RetryPending)
        );
        assert_eq!(
            parse_status_word("retry-pending"),
            Some(ChunkStatus::RetryPending)
        );
        assert_eq!(parse_failure_word("OOM"), Some(FailureClass::Oom));
        assert_eq!(parse_status_word("sleeping"), None);
    }

    #[test]
    fn records_survive_reopening_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let stored = ChunkStore::open(dir.path())
            .unwrap()
            .upsert(progress("r", 1, 2, 1), at(5))
            .unwrap();
        let reopened = ChunkStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get(&stored.chunk_id).unwrap(), Some(stored));
    }
}
