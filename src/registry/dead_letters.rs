//! Dead letters in SQLite under the state dir: the ledgers and events components set aside.
//!
//! A file of its own, `dead_letters.sqlite3`, beside the run store: a burst of reports
//! never waits on the run store's lock, `flowctl dlq --state-dir` opens it without touching
//! run history, and purging it (with a vacuum) leaves run history alone.
//!
//! One row per (pipeline, component, ledger) while open: the same ledger failing again adds
//! an attempt to its letter. Bounded: a payload keeps at most [`MAX_PAYLOAD_BYTES`], all
//! payloads together at most [`MAX_PAYLOAD_TOTAL_BYTES`] (past it a letter is kept without
//! its payload), resolved letters beyond [`MAX_LETTERS`] are evicted oldest first, and past
//! [`MAX_LETTERS`] open letters a new one is refused.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use flowctl_proto::flowctl::v1::{DeadLetter, DeadLetterStatus};
use rusqlite::{params, Connection, OptionalExtension};

use super::store::{ms_timestamp, timestamp_ms};

/// The file name of the dead-letter store inside the state dir.
pub const DEAD_LETTERS_DB: &str = "dead_letters.sqlite3";
/// The largest payload a letter keeps.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// All payloads together.
pub const MAX_PAYLOAD_TOTAL_BYTES: i64 = 256 * 1024 * 1024;
/// Letters kept, and open letters accepted.
pub const MAX_LETTERS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot create the state dir {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dead-letter store {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the dead-letter store holds {open} open letters, its limit: resolve or purge some \
         (flowctl dlq ls, flowctl dlq purge) before more can be recorded"
    )]
    Full { open: usize },
}

/// One failure as a component reports it.
#[derive(Debug, Clone, Default)]
pub struct NewDeadLetter {
    pub pipeline: String,
    pub component: String,
    pub run_id: String,
    pub ledger: u32,
    pub reason: String,
    pub payload: Vec<u8>,
    /// The sender already cut the payload short…
    pub payload_truncated: bool,
    /// …from this many bytes (0: the payload is whole).
    pub payload_size: u64,
}

/// Filters of a listing; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub pipeline: Option<String>,
    pub run_id: Option<String>,
    pub status: Option<DeadLetterStatus>,
    pub limit: usize,
}

pub struct DeadLetterStore {
    conn: Connection,
    path: PathBuf,
    max_letters: usize,
    max_payload_total: i64,
}

impl std::fmt::Debug for DeadLetterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterStore")
            .field("path", &self.path)
            .finish()
    }
}

pub fn status_word(status: DeadLetterStatus) -> &'static str {
    match status {
        DeadLetterStatus::Resolved => "resolved",
        _ => "open",
    }
}

fn parse_status(word: &str) -> DeadLetterStatus {
    match word {
        "resolved" => DeadLetterStatus::Resolved,
        _ => DeadLetterStatus::Open,
    }
}

const COLUMNS: &str = "id, pipeline, component, run_id, ledger, reason, payload_truncated,
    first_seen_ms, last_seen_ms, attempts, status, payload_size";

fn letter_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    let mut letter = DeadLetter {
        id: row.get::<_, i64>(0)?.to_string(),
        pipeline: row.get(1)?,
        component: row.get(2)?,
        run_id: row.get(3)?,
        ledger: row.get(4)?,
        reason: row.get(5)?,
        payload: Vec::new(),
        payload_truncated: row.get(6)?,
        first_seen: Some(ms_timestamp(row.get(7)?)),
        last_seen: Some(ms_timestamp(row.get(8)?)),
        attempts: row.get(9)?,
        status: 0,
        payload_size: row.get::<_, i64>(11)? as u64,
    };
    letter.set_status(parse_status(&row.get::<_, String>(10)?));
    Ok(letter)
}

fn now_ms(now: SystemTime) -> i64 {
    timestamp_ms(&super::store::system_time_timestamp(now))
}

impl DeadLetterStore {
    /// Opens (or creates) `<state_dir>/dead_letters.sqlite3`.
    pub fn open(state_dir: &Path) -> Result<Self, DeadLetterError> {
        std::fs::create_dir_all(state_dir).map_err(|source| DeadLetterError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(DEAD_LETTERS_DB);
        Self::start(Connection::open(&path), path)
    }

    /// A store that lives only as long as the process.
    pub fn in_memory() -> Result<Self, DeadLetterError> {
        Self::start(Connection::open_in_memory(), PathBuf::from(":memory:"))
    }

    fn start(conn: rusqlite::Result<Connection>, path: PathBuf) -> Result<Self, DeadLetterError> {
        let conn = conn.map_err(|source| DeadLetterError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let store = DeadLetterStore {
            conn,
            path,
            max_letters: MAX_LETTERS,
            max_payload_total: MAX_PAYLOAD_TOTAL_BYTES,
        };
        // Shards of a backfill on one host open one new file at once: the busy timeout comes
        // before the switch to WAL, and a set-up answered "busy" is tried again.
        super::store::set_up_retrying_busy(|| {
            store.conn.execute_batch(
                "PRAGMA busy_timeout = 5000;
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS dead_letters (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     pipeline TEXT NOT NULL,
                     component TEXT NOT NULL,
                     run_id TEXT NOT NULL,
                     ledger INTEGER NOT NULL,
                     reason TEXT NOT NULL,
                     payload BLOB NOT NULL,
                     payload_truncated INTEGER NOT NULL,
                     payload_size INTEGER NOT NULL,
                     first_seen_ms INTEGER NOT NULL,
                     last_seen_ms INTEGER NOT NULL,
                     attempts INTEGER NOT NULL,
                     status TEXT NOT NULL
                 );
                 CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_open
                     ON dead_letters (pipeline, component, ledger) WHERE status = 'open';
                 CREATE INDEX IF NOT EXISTS dead_letters_by_run ON dead_letters (run_id);",
            )
        })
        .map_err(|e| store.err(e))?;
        Ok(store)
    }

    /// The same store with other bounds (tests of the bounds).
    pub fn with_limits(mut self, max_letters: usize, max_payload_total: i64) -> Self {
        self.max_letters = max_letters.max(1);
        self.max_payload_total = max_payload_total;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> DeadLetterError {
        DeadLetterError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn count(&self, sql: &str) -> Result<i64, DeadLetterError> {
        self.conn
            .query_row(sql, [], |row| row.get(0))
            .map_err(|e| self.err(e))
    }

    /// Records a failure: a new letter (`true`), or another attempt of the open letter of
    /// the same pipeline, component and ledger (`false`).
    pub fn report(
        &self,
        mut new: NewDeadLetter,
        now: SystemTime,
    ) -> Result<(DeadLetter, bool), DeadLetterError> {
        let now = now_ms(now);
        if new.payload_size == 0 || (new.payload_size as usize) < new.payload.len() {
            new.payload_size = new.payload.len() as u64;
        }
        if new.payload.len() > MAX_PAYLOAD_BYTES {
            new.payload.truncate(MAX_PAYLOAD_BYTES);
            new.payload_truncated = true;
        }
        let existing: Option<(i64, i64)> = self
            .conn
            .query_row(
                "SELECT id, length(payload) FROM dead_letters
                 WHERE pipeline = ?1 AND component = ?2 AND ledger = ?3 AND status = 'open'",
                params![new.pipeline, new.component, new.ledger],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let held = existing.map(|(_, len)| len).unwrap_or(0);
        let stored = self.count("SELECT COALESCE(SUM(length(payload)), 0) FROM dead_letters")?;
        if stored - held + new.payload.len() as i64 > self.max_payload_total {
            // The letter matters more than its bytes: keep it, say the payload is missing.
            new.payload.clear();
            new.payload_truncated = true;
        }
        let created = match existing {
            Some((id, _)) => {
                self.conn
                    .execute(
                        "UPDATE dead_letters SET run_id = ?2, reason = ?3, payload = ?4,
                             payload_truncated = ?5, payload_size = ?6, last_seen_ms = ?7,
                             attempts = attempts + 1
                         WHERE id = ?1",
                        params![
                            id,
                            new.run_id,
                            new.reason,
                            new.payload,
                            new.payload_truncated,
                            new.payload_size as i64,
                            now
                        ],
                    )
                    .map_err(|e| self.err(e))?;
                false
            }
            None => {
                self.make_room()?;
                self.conn
                    .execute(
                        "INSERT INTO dead_letters (pipeline, component, run_id, ledger, reason,
                             payload, payload_truncated, payload_size, first_seen_ms,
                             last_seen_ms, attempts, status)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, 1, 'open')",
                        params![
                            new.pipeline,
                            new.component,
                            new.run_id,
                            new.ledger,
                            new.reason,
                            new.payload,
                            new.payload_truncated,
                            new.payload_size as i64,
                            now
                        ],
                    )
                    .map_err(|e| self.err(e))?;
                true
            }
        };
        let id = match existing {
            Some((id, _)) => id,
            None => self.conn.last_insert_rowid(),
        };
        let letter = self
            .get(&id.to_string())?
            .expect("the letter just written is there");
        Ok((letter, created))
    }

    /// Room for one more letter: resolved ones are evicted oldest first; open ones never are.
    fn make_room(&self) -> Result<(), DeadLetterError> {
        let total = self.count("SELECT COUNT(*) FROM dead_letters")? as usize;
        if total < self.max_letters {
            return Ok(());
        }
        let excess = total + 1 - self.max_letters;
        self.conn
            .execute(
                "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters
                     WHERE status = 'resolved' ORDER BY last_seen_ms, id LIMIT ?1)",
                params![excess as i64],
            )
            .map_err(|e| self.err(e))?;
        let open = self.count("SELECT COUNT(*) FROM dead_letters WHERE status = 'open'")? as usize;
        if open >= self.max_letters {
            return Err(DeadLetterError::Full { open });
        }
        Ok(())
    }

    /// A letter with its payload.
    pub fn get(&self, id: &str) -> Result<Option<DeadLetter>, DeadLetterError> {
        let Ok(id) = id.trim().parse::<i64>() else {
            return Ok(None);
        };
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS}, payload FROM dead_letters WHERE id = ?1"),
                params![id],
                |row| {
                    let mut letter = letter_row(row)?;
                    letter.payload = row.get(12)?;
                    Ok(letter)
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Letters newest first, without payloads; at most `filter.limit` (0: all).
    pub fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let limit = if filter.limit == 0 {
            -1
        } else {
            filter.limit as i64
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM dead_letters
                 WHERE (?1 IS NULL OR pipeline = ?1) AND (?2 IS NULL OR run_id = ?2)
                     AND (?3 IS NULL OR status = ?3)
                 ORDER BY last_seen_ms DESC, id DESC LIMIT ?4"
            ))
            .map_err(|e| self.err(e))?;
        let letters = stmt
            .query_map(
                params![
                    filter.pipeline,
                    filter.run_id,
                    filter.status.map(status_word),
                    limit
                ],
                letter_row,
            )
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(letters)
    }

    /// Open letters last reported by `run_id`.
    pub fn open_for_run(&self, run_id: &str) -> Result<u64, DeadLetterError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM dead_letters WHERE run_id = ?1 AND status = 'open'",
                params![run_id],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Marks a letter resolved; `None` when there is no such letter.
    pub fn resolve(
        &self,
        id: &str,
        now: SystemTime,
    ) -> Result<Option<DeadLetter>, DeadLetterError> {
        let Some(letter) = self.get(id)? else {
            return Ok(None);
        };
        if letter.status() != DeadLetterStatus::Resolved {
            // A resolved letter leaves the open index, so the ledger failing again opens a
            // new one.
            self.conn
                .execute(
                    "UPDATE dead_letters SET status = 'resolved', last_seen_ms = ?2 WHERE id = ?1",
                    params![letter.id.parse::<i64>().unwrap_or(-1), now_ms(now)],
                )
                .map_err(|e| self.err(e))?;
        }
        self.get(id)
    }

    /// After a replay run `run_id` completed: resolves each letter of `ids` that is still
    /// open and that the replay did not report again (a ledger failing again in the replay
    /// makes the replay its letter's last run). Returns the ids that stay open.
    pub fn resolve_replayed(
        &self,
        ids: &[String],
        run_id: &str,
        now: SystemTime,
    ) -> Result<Vec<String>, DeadLetterError> {
        let mut still_open = Vec::new();
        for id in ids {
            let Some(letter) = self.get(id)? else {
                continue;
            };
            if letter.status() != DeadLetterStatus::Open {
                continue;
            }
            if letter.run_id == run_id {
                still_open.push(id.clone());
            } else {
                self.resolve(id, now)?;
            }
        }
        Ok(still_open)
    }

    /// Deletes resolved letters (or all of them), of one pipeline or all; returns how many.
    pub fn purge(
        &self,
        resolved_only: bool,
        pipeline: Option<&str>,
    ) -> Result<u64, DeadLetterError> {
        let purged = self
            .conn
            .execute(
                "DELETE FROM dead_letters WHERE (?1 = 0 OR status = 'resolved')
                     AND (?2 IS NULL OR pipeline = ?2)",
                params![resolved_only, pipeline],
            )
            .map_err(|e| self.err(e))?;
        Ok(purged as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn failure(ledger: u32, reason: &str) -> NewDeadLetter {
        NewDeadLetter {
            pipeline: "ttp".into(),
            component: "source".into(),
            run_id: "run-1".into(),
            ledger,
            reason: reason.into(),
            payload: b"garbage".to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn the_same_ledger_failing_again_updates_its_open_letter() {
        let store = DeadLetterStore::in_memory().unwrap();
        let (first, created) = store.report(failure(998, "bad xdr"), at(100)).unwrap();
        assert!(created);
        let mut again = failure(998, "bad xdr at byte 4");
        again.run_id = "run-2".into();
        let (second, created) = store.report(again, at(200)).unwrap();
        assert!(!created);
        assert_eq!(second.id, first.id);
        assert_eq!(second.attempts, 2);
        assert_eq!(second.reason, "bad xdr at byte 4");
        assert_eq!(second.run_id, "run-2");
        assert_eq!(second.first_seen, Some(ms_timestamp(100_000)));
        assert_eq!(second.last_seen, Some(ms_timestamp(200_000)));
        assert_eq!(second.payload, b"garbage");
        assert_eq!(second.status(), DeadLetterStatus::Open);
        // Another ledger, or another component on the same ledger, is another letter.
        assert!(store.report(failure(999, "x"), at(300)).unwrap().1);
        let mut processor = failure(998, "x");
        processor.component = "ttp-processor".into();
        assert!(store.report(processor, at(300)).unwrap().1);
        assert_eq!(store.list(&DeadLetterFilter::default()).unwrap().len(), 3);
    }

    #[test]
    fn a_resolved_letter_stays_resolved_and_a_new_failure_opens_another() {
        let store = DeadLetterStore::in_memory().unwrap();
        let (letter, _) = store.report(failure(998, "bad"), at(1)).unwrap();
        let resolved = store.resolve(&letter.id, at(2)).unwrap().unwrap();
        assert_eq!(resolved.status(), DeadLetterStatus::Resolved);
        assert_eq!(store.open_for_run("run-1").unwrap(), 0);
        let (again, created) = store.report(failure(998, "bad"), at(3)).unwrap();
        assert!(created);
        assert_ne!(again.id, letter.id);
        assert_eq!(store.open_for_run("run-1").unwrap(), 1);
        assert!(store.resolve("12345", at(4)).unwrap().is_none());
        assert!(store.get("not-a-number").unwrap().is_none());
    }

    #[test]
    fn a_payload_over_one_mib_is_kept_cut_short_and_flagged() {
        let store = DeadLetterStore::in_memory().unwrap();
        let mut big = failure(1, "too big");
        big.payload = vec![1; MAX_PAYLOAD_BYTES + 10];
        let (letter, _) = store.report(big, at(1)).unwrap();
        assert!(letter.payload_truncated);
        assert_eq!(letter.payload.len(), MAX_PAYLOAD_BYTES);
        assert_eq!(letter.payload_size, (MAX_PAYLOAD_BYTES + 10) as u64);
        let (small, _) = store.report(failure(2, "small"), at(1)).unwrap();
        assert!(!small.payload_truncated);
        assert_eq!(small.payload_size, 7);
    }

    #[test]
    fn past_the_payload_budget_a_letter_is_kept_without_its_payload() {
        let store = DeadLetterStore::in_memory().unwrap().with_limits(10, 10);
        let (first, _) = store.report(failure(1, "a"), at(1)).unwrap();
        assert_eq!(first.payload, b"garbage");
        let (second, _) = store.report(failure(2, "b"), at(1)).unwrap();
        assert!(second.payload.is_empty());
        assert!(second.payload_truncated);
        assert_eq!(second.reason, "b");
    }

    #[test]
    fn past_the_letter_limit_resolved_letters_are_evicted_and_open_ones_refused() {
        let store = DeadLetterStore::in_memory()
            .unwrap()
            .with_limits(2, MAX_PAYLOAD_TOTAL_BYTES);
        let (a, _) = store.report(failure(1, "a"), at(1)).unwrap();
        store.report(failure(2, "b"), at(2)).unwrap();
        store.resolve(&a.id, at(3)).unwrap();
        // The resolved letter makes room.
        store.report(failure(3, "c"), at(4)).unwrap();
        assert!(store.get(&a.id).unwrap().is_none());
        // Two open letters: a third is refused with a clear error…
        let err = store.report(failure(4, "d"), at(5)).unwrap_err();
        assert!(matches!(err, DeadLetterError::Full { open: 2 }), "{err}");
        assert!(err.to_string().contains("flowctl dlq purge"), "{err}");
        // …while another attempt of an open one still counts.
        let (again, created) = store.report(failure(3, "c again"), at(6)).unwrap();
        assert!(!created);
        assert_eq!(again.attempts, 2);
    }

    #[test]
    fn listing_filters_and_purging_resolved_keeps_the_open_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeadLetterStore::open(dir.path()).unwrap();
        let (a, _) = store.report(failure(1, "a"), at(1)).unwrap();
        store.report(failure(2, "b"), at(2)).unwrap();
        let mut other = failure(3, "c");
        other.pipeline = "other".into();
        store.report(other, at(3)).unwrap();
        store.resolve(&a.id, at(4)).unwrap();
        let ttp = store
            .list(&DeadLetterFilter {
                pipeline: Some("ttp".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ttp.len(), 2);
        assert!(ttp.iter().all(|l| l.payload.is_empty()));
        let open = store
            .list(&DeadLetterFilter {
                status: Some(DeadLetterStatus::Open),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(open.iter().map(|l| l.ledger).collect::<Vec<_>>(), [3, 2]);
        assert_eq!(store.purge(true, None).unwrap(), 1);
        drop(store);
        // The letters are in the file, for the next process.
        let store = DeadLetterStore::open(dir.path()).unwrap();
        assert_eq!(store.list(&DeadLetterFilter::default()).unwrap().len(), 2);
        assert_eq!(store.purge(false, Some("other")).unwrap(), 1);
        assert_eq!(store.purge(false, None).unwrap(), 1);
    }
}
