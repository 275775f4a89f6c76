//! Backfill shards as chunk runs: the record each shard has in the control plane's chunk
//! store, what a shard's run reports there as it starts and ends, the check of its sinks that
//! verifies it, and which failed chunks are worth running again.
//!
//! `flowctl backfill plan` records every shard PLANNED (attempt 0); the shard's
//! `flowctl run --shard-id S --backfill-id B` marks it RUNNING with the next attempt, then
//! COMPLETED, FAILED (with a failure class) or ABORTED; `flowctl chunks verify` counts each
//! PostgreSQL sink's rows in the shard's range against the events its checkpoint row says
//! were committed, and marks it VERIFIED or FAILED (verification); `flowctl chunks retry`
//! marks failed ones RETRY_PENDING and writes their work again. The store's merge rules
//! (`registry::chunks`) refuse a report of an older attempt, so a zombie copy of a shard on a
//! lost host cannot overwrite the record of the copy that replaced it.

use std::collections::HashMap;

use flowctl_proto::flowctl::{
    ChunkRun, ChunkStatus, FailureClass, GetChunkRunRequest, ListChunkRunsRequest,
    UpsertChunkRunRequest,
};

use crate::backfill::{PgSink, Shard};
use crate::registry::chunks::{ChunkFilter, ChunkPage, ChunkStore};

/// How often a shard's run refreshes its RUNNING record; `backfill status` takes a record
/// quiet for longer than its `--stalled-after` (default 60 s) for a stalled shard.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

/// Metadata keys of a shard's chunk record: what `chunks retry` needs to run it again.
pub mod meta {
    /// The pipeline file, absolute.
    pub const FILE: &str = "flowctl_file";
    /// The shard id (`--shard-id`).
    pub const SHARD: &str = "flowctl_shard";
    /// The pipeline's `metadata.name`.
    pub const PIPELINE: &str = "flowctl_pipeline";
    /// The `--state-dir` the shards were planned with, when one was.
    pub const STATE_DIR: &str = "flowctl_state_dir";
    /// Where a shard reports its chunk (`--chunk-endpoint`), when not its own control plane.
    pub const CHUNK_ENDPOINT: &str = "flowctl_chunk_endpoint";
    /// The id of the pipeline run that ran the latest attempt.
    pub const RUN_ID: &str = "flowctl_run_id";
    /// The host it ran on.
    pub const HOST: &str = "host";
    /// The Slurm job and array task of the latest attempt, when Slurm placed it.
    pub const SLURM_JOB: &str = "slurm_job_id";
}

/// The id of a backfill: its chunks' `pipeline_run_id`. The same plan arguments give the
/// same id, so a plan written again, `status` and `reconcile` find the same records.
pub fn backfill_id(pipeline: &str, from: u32, to: u32) -> String {
    format!("backfill-{pipeline}-{from}-{to}")
}

/// A backfill id is made of a pipeline name and two ledgers: letters, digits, `-`, `_`, `.`,
/// `@`.
pub fn parse_backfill_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?}: a backfill id is 1 to 200 letters, digits, `-`, `_`, `.` or `@`"
        ))
    }
}

/// One shard of a backfill, as its chunk record names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardChunk {
    pub backfill: String,
    pub shard: String,
    pub pipeline: String,
    pub file: String,
    pub from: u32,
    pub to: u32,
    pub state_dir: Option<String>,
    pub chunk_endpoint: Option<String>,
}

impl ShardChunk {
    /// `BACKFILL/shard-S`.
    pub fn id(&self) -> String {
        format!("{}/shard-{}", self.backfill, self.shard)
    }

    fn record(&self, status: ChunkStatus, attempt: i32) -> ChunkRun {
        let mut metadata = HashMap::from([
            (meta::FILE.to_string(), self.file.clone()),
            (meta::SHARD.to_string(), self.shard.clone()),
            (meta::PIPELINE.to_string(), self.pipeline.clone()),
        ]);
        if let Some(dir) = &self.state_dir {
            metadata.insert(meta::STATE_DIR.to_string(), dir.clone());
        }
        if let Some(endpoint) = &self.chunk_endpoint {
            metadata.insert(meta::CHUNK_ENDPOINT.to_string(), endpoint.clone());
        }
        ChunkRun {
            chunk_id: self.id(),
            pipeline_run_id: self.backfill.clone(),
            component_id: self.pipeline.clone(),
            chunk_start: i64::from(self.from),
            chunk_end: i64::from(self.to),
            attempt,
            status: status as i32,
            metadata,
            ..Default::default()
        }
    }

    /// The record `backfill plan` makes: not run yet.
    pub fn planned(&self) -> ChunkRun {
        let mut c = self.record(ChunkStatus::Planned, 0);
        c.phase = "planned".into();
        c
    }

    /// What a shard's run reports as it starts: its attempt is one past the stored one.
    pub fn running(&self, attempt: i32, run_id: &str) -> ChunkRun {
        let mut c = self.record(ChunkStatus::Running, attempt);
        c.phase = "running".into();
        c.metadata
            .insert(meta::RUN_ID.to_string(), run_id.to_string());
        if let Ok(host) = nix::unistd::gethostname() {
            c.metadata
                .insert(meta::HOST.to_string(), host.to_string_lossy().into_owned());
        }
        let slurm = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(job) = slurm("SLURM_ARRAY_JOB_ID").or_else(|| slurm("SLURM_JOB_ID")) {
            let task = slurm("SLURM_ARRAY_TASK_ID")
                .map(|t| format!("_{t}"))
                .unwrap_or_default();
            c.metadata
                .insert(meta::SLURM_JOB.to_string(), format!("{job}{task}"));
        }
        c
    }

    /// What a shard's run reports while it runs, so its record stays fresh (a quiet RUNNING
    /// record is a stalled shard): the last ledger its sinks wrote, when known.
    pub fn progress(&self, attempt: i32, through: Option<u32>) -> ChunkRun {
        let mut c = self.record(ChunkStatus::Running, attempt);
        c.phase = match through {
            Some(l) if l >= self.from => format!("through ledger {l}"),
            _ => "running".into(),
        };
        c
    }

    /// What a shard's run reports as it ends.
    pub fn finished(&self, attempt: i32, outcome: &Outcome) -> ChunkRun {
        let mut c = self.record(ChunkStatus::Running, attempt);
        let retry = format!("flowctl chunks retry {}", self.id());
        match outcome {
            Outcome::Completed { rows } => {
                c.status = ChunkStatus::Completed as i32;
                c.phase = "written".into();
                c.row_counts = rows.clone();
                c.recommended_action = format!("flowctl chunks verify {}", self.id());
            }
            Outcome::Stopped => {
                c.status = ChunkStatus::Aborted as i32;
                c.phase = "stopped".into();
                c.failure_class = FailureClass::AllocationLost as i32;
                c.error = "the run was stopped before the shard's last ledger (a signal: \
                           scancel, a time limit, a preemption or Ctrl-C)"
                    .into();
                c.recommended_action = retry;
            }
            Outcome::Failed {
                reasons,
                fenced,
                killed,
            } => {
                c.status = ChunkStatus::Failed as i32;
                c.phase = "failed".into();
                c.error = reasons.join("; ");
                let class = if *fenced {
                    FailureClass::AllocationLost
                } else if *killed {
                    FailureClass::Oom
                } else {
                    FailureClass::RetryableInfrastructure
                };
                c.failure_class = class as i32;
                c.recommended_action = match class {
                    FailureClass::AllocationLost => {
                        "none: a newer copy of this shard owns its work".into()
                    }
                    FailureClass::Oom => format!(
                        "give the shard more memory (the pipeline's resources) or smaller \
                         shards, then {retry}"
                    ),
                    _ => retry,
                };
            }
        }
        c
    }

    /// The shard a record describes, from its metadata; `None` for chunks reported by other
    /// components (they run and retry their chunks themselves).
    pub fn of_record(c: &ChunkRun) -> Option<ShardChunk> {
        let get = |k: &str| c.metadata.get(k).cloned();
        Some(ShardChunk {
            backfill: c.pipeline_run_id.clone(),
            shard: get(meta::SHARD)?,
            pipeline: get(meta::PIPELINE)?,
            file: get(meta::FILE)?,
            from: u32::try_from(c.chunk_start).ok()?,
            to: u32::try_from(c.chunk_end).ok()?,
            state_dir: get(meta::STATE_DIR),
            chunk_endpoint: get(meta::CHUNK_ENDPOINT),
        })
    }

    pub fn as_shard(&self, index: usize) -> Shard {
        Shard {
            index,
            from: self.from,
            to: self.to,
        }
    }
}

/// How a shard's run ended, as its chunk records it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every sink reached the last ledger; rows written per sink component.
    Completed { rows: HashMap<String, i64> },
    /// Stopped by a signal before the end.
    Stopped,
    /// A component failed for good.
    Failed {
        reasons: Vec<String>,
        /// It was fenced: a newer copy owns the shard.
        fenced: bool,
        /// A process was killed by SIGKILL that flowctl did not send: the kernel's OOM killer
        /// or a memory limit of the allocation.
        killed: bool,
    },
}

/// One PostgreSQL sink's rows in a shard's range, against its checkpoint row.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkCheck {
    pub component: String,
    /// `SINK_ID@FROM-TO`.
    pub checkpoint_row: String,
    /// `None`: no checkpoint row.
    pub last_ledger: Option<i64>,
    /// Events the checkpoint row says were committed; `None` when it was written by a sink
    /// that did not count them.
    pub events_committed: Option<i64>,
    /// Rows of `ttp_events` in the range.
    pub rows_in_range: i64,
}

impl SinkCheck {
    /// Why this sink's rows do not verify the shard, if they don't.
    pub fn problem(&self, to: u32) -> Option<String> {
        let row = &self.checkpoint_row;
        match (self.last_ledger, self.events_committed) {
            (None, _) => Some(format!("no checkpoint row {row}: the shard never ran")),
            (Some(l), _) if l < i64::from(to) => Some(format!(
                "checkpoint row {row} is at ledger {l}, before the shard's last ledger {to}"
            )),
            (Some(_), None) => Some(format!(
                "checkpoint row {row} does not count its events (written by an older sink): \
                 run the shard again to count them"
            )),
            (Some(_), Some(n)) if n != self.rows_in_range => Some(format!(
                "{} rows in the range, but checkpoint row {row} counts {n} events committed",
                self.rows_in_range
            )),
            _ => None,
        }
    }
}

/// Reads one sink's checkpoint row of `shard` and counts its rows in the range.
pub async fn check_sink(
    client: &tokio_postgres::Client,
    sink: &PgSink,
    shard: &Shard,
) -> Result<SinkCheck, tokio_postgres::Error> {
    let key = sink.key(shard);
    // A database no sink counting events has opened yet has no `events` column.
    let row = client
        .query_opt(
            "SELECT last_ledger, (to_jsonb(c) ->> 'events')::bigint \
             FROM ttp_sink_checkpoints c WHERE sink_id = $1",
            &[&key],
        )
        .await?;
    let rows_in_range: i64 = client
        .query_one(
            "SELECT count(*) FROM ttp_events WHERE ledger_sequence BETWEEN $1 AND $2",
            &[&i64::from(shard.from), &i64::from(shard.to)],
        )
        .await?
        .get(0);
    Ok(SinkCheck {
        component: sink.component.clone(),
        checkpoint_row: key,
        last_ledger: row.as_ref().map(|r| r.get(0)),
        events_committed: row.and_then(|r| r.get(1)),
        rows_in_range,
    })
}

/// The record a verification makes of `chunk` from its sinks' checks: VERIFIED when every
/// sink's rows are all there, else FAILED with the verification failure class.
pub fn verified(chunk: &ChunkRun, checks: &[SinkCheck]) -> ChunkRun {
    let to = u32::try_from(chunk.chunk_end).unwrap_or(u32::MAX);
    let mut c = ChunkRun {
        chunk_id: chunk.chunk_id.clone(),
        pipeline_run_id: chunk.pipeline_run_id.clone(),
        component_id: chunk.component_id.clone(),
        chunk_start: chunk.chunk_start,
        chunk_end: chunk.chunk_end,
        attempt: chunk.attempt,
        ..Default::default()
    };
    let mut problems = Vec::new();
    for check in checks {
        c.row_counts
            .insert(check.component.clone(), check.rows_in_range);
        c.verification.insert(
            format!("{}.rows_in_range", check.component),
            check.rows_in_range.to_string(),
        );
        c.verification.insert(
            format!("{}.events_committed", check.component),
            check
                .events_committed
                .map_or("not counted".into(), |n| n.to_string()),
        );
        c.verification.insert(
            format!("{}.checkpoint", check.component),
            check.last_ledger.map_or("none".into(), |l| l.to_string()),
        );
        if let Some(p) = check.problem(to) {
            problems.push(format!("{}: {p}", check.component));
        }
    }
    c.phase = "verified".into();
    if problems.is_empty() {
        c.status = ChunkStatus::Verified as i32;
        c.verification.insert("result".into(), "ok".into());
    } else {
        c.status = ChunkStatus::Failed as i32;
        c.failure_class = FailureClass::Verification as i32;
        c.error = problems.join("; ");
        c.verification.insert("result".into(), "mismatch".into());
        c.recommended_action = format!(
            "flowctl chunks retry {} (the shard is written again from its first ledger)",
            chunk.chunk_id
        );
    }
    c
}

/// Why a chunk is not run again by `chunks retry`, if it isn't: only failed or aborted
/// chunks are, not those whose failure running again cannot fix (bad data or schema) unless
/// forced, and none past `max_attempts`.
pub fn not_retried(c: &ChunkRun, max_attempts: i32, force: bool) -> Option<String> {
    let status = c.status();
    if !matches!(
        status,
        ChunkStatus::Failed | ChunkStatus::Aborted | ChunkStatus::RetryPending
    ) {
        return Some(format!(
            "it is {}, not failed",
            crate::registry::chunks::status_word(status)
        ));
    }
    let class = c.failure_class();
    if !force
        && matches!(
            class,
            FailureClass::NonRetryableData | FailureClass::NonRetryableSchema
        )
    {
        return Some(format!(
            "its failure ({}) is not fixed by running it again: fix the cause, then --force",
            crate::registry::chunks::failure_word(class)
        ));
    }
    if !force && c.attempt >= max_attempts {
        return Some(format!(
            "it has had {} attempt(s), the most allowed ({max_attempts}): --force to run it again",
            c.attempt
        ));
    }
    None
}

/// Where chunk records are read and written: this process's control plane, a store opened
/// straight from a state dir, or a control plane elsewhere.
pub enum Records {
    Local(crate::registry::Registry),
    Store(ChunkStore),
    Remote(Box<crate::registry::client::RegistryClient>),
}

impl Records {
    /// The control plane at `endpoint` (`host:port`, `http(s)://…` or `unix:/path`).
    pub async fn remote(endpoint: &str) -> anyhow::Result<Records> {
        let options = crate::registry::client::ClientOptions::from_env(endpoint);
        Ok(Records::Remote(Box::new(
            crate::registry::client::connect(&options).await?,
        )))
    }

    /// A second handle on the same records, for a task of its own; `None` for a store opened
    /// directly (open it again instead).
    pub fn duplicate(&self) -> Option<Records> {
        match self {
            Records::Local(r) => Some(Records::Local(r.clone())),
            Records::Store(_) => None,
            Records::Remote(c) => Some(Records::Remote(c.clone())),
        }
    }

    /// The chunk store of `state_dir`, opened directly.
    pub fn store(state_dir: &std::path::Path) -> anyhow::Result<Records> {
        Ok(Records::Store(ChunkStore::open(state_dir)?))
    }

    pub async fn get(&mut self, id: &str) -> anyhow::Result<Option<ChunkRun>> {
        match self {
            Records::Local(r) => Ok(r.chunks().get(id)?),
            Records::Store(s) => Ok(s.get(id)?),
            Records::Remote(c) => {
                let request = GetChunkRunRequest {
                    chunk_id: id.to_string(),
                };
                match c.v0.get_chunk_run(request).await {
                    Ok(chunk) => Ok(Some(chunk.into_inner())),
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
                    Err(s) => Err(crate::cli::list::status_error(s)),
                }
            }
        }
    }

    /// Merges a report into the record (see `registry::chunks` for the rules).
    pub async fn upsert(&mut self, chunk: ChunkRun) -> anyhow::Result<ChunkRun> {
        let now = std::time::SystemTime::now();
        match self {
            Records::Local(r) => Ok(r.chunks().upsert(chunk, now)?),
            Records::Store(s) => Ok(s.upsert(chunk, now)?),
            Records::Remote(c) => {
                let request = UpsertChunkRunRequest { chunk: Some(chunk) };
                let stored = c.v0.upsert_chunk_run(request).await;
                Ok(stored.map_err(crate::cli::list::status_error)?.into_inner())
            }
        }
    }

    /// One page of records.
    pub async fn page(&mut self, filter: &ChunkFilter) -> anyhow::Result<ChunkPage> {
        match self {
            Records::Local(r) => Ok(r.chunks().list(filter)?),
            Records::Store(s) => Ok(s.list(filter)?),
            Records::Remote(c) => {
                let request = ListChunkRunsRequest {
                    pipeline_run_id: filter.pipeline_run_id.clone().unwrap_or_default(),
                    component_id: filter.component_id.clone().unwrap_or_default(),
                    status: filter.status.map_or(0, |s| s as i32),
                    limit: i32::try_from(filter.limit).unwrap_or(i32::MAX),
                    page_token: filter.page_token.clone().unwrap_or_default(),
                };
                let answer = c.v0.list_chunk_runs(request).await;
                let answer = answer.map_err(crate::cli::list::status_error)?.into_inner();
                Ok(ChunkPage {
                    chunks: answer.chunks,
                    next_page_token: answer.next_page_token,
                })
            }
        }
    }

    /// Every record the filter matches, page after page, in the store's order.
    pub async fn all(&mut self, filter: &ChunkFilter) -> anyhow::Result<Vec<ChunkRun>> {
        let mut filter = filter.clone();
        filter.limit = crate::registry::chunks::MAX_LIST_LIMIT;
        let mut out = Vec::new();
        loop {
            let page = self.page(&filter).await?;
            out.extend(page.chunks);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            filter.page_token = Some(page.next_page_token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard() -> ShardChunk {
        ShardChunk {
            backfill: backfill_id("ttp", 1000, 1999),
            shard: "3".into(),
            pipeline: "ttp".into(),
            file: "/etc/flowctl/ttp.yaml".into(),
            from: 1192,
            to: 1255,
            state_dir: Some("/var/lib/flowctl".into()),
            chunk_endpoint: None,
        }
    }

    #[test]
    fn a_planned_shard_reads_back_from_its_record_as_the_same_shard() {
        let planned = shard().planned();
        assert_eq!(planned.chunk_id, "backfill-ttp-1000-1999/shard-3");
        assert_eq!(planned.status(), ChunkStatus::Planned);
        assert_eq!(planned.attempt, 0);
        assert_eq!(ShardChunk::of_record(&planned), Some(shard()));
        let mut foreign = planned.clone();
        foreign.metadata.clear();
        assert_eq!(ShardChunk::of_record(&foreign), None);
    }

    #[test]
    fn an_outcome_gives_the_status_and_failure_class_a_retry_decides_on() {
        let s = shard();
        let failed = |fenced, killed| {
            s.finished(
                2,
                &Outcome::Failed {
                    reasons: vec!["sink: exited with code 1".into()],
                    fenced,
                    killed,
                },
            )
        };
        assert_eq!(
            failed(false, false).failure_class(),
            FailureClass::RetryableInfrastructure
        );
        assert_eq!(failed(false, true).failure_class(), FailureClass::Oom);
        assert_eq!(
            failed(true, false).failure_class(),
            FailureClass::AllocationLost
        );
        let stopped = s.finished(2, &Outcome::Stopped);
        assert_eq!(stopped.status(), ChunkStatus::Aborted);
        let done = s.finished(
            2,
            &Outcome::Completed {
                rows: HashMap::from([("sink".to_string(), 42)]),
            },
        );
        assert_eq!(done.status(), ChunkStatus::Completed);
        assert_eq!(done.row_counts["sink"], 42);
        assert_eq!(not_retried(&failed(false, false), 3, false), None);
        assert!(not_retried(&done, 3, false).unwrap().contains("completed"));
        let mut data = failed(false, false);
        data.failure_class = FailureClass::NonRetryableData as i32;
        assert!(not_retried(&data, 3, false).unwrap().contains("--force"));
        assert_eq!(not_retried(&data, 3, true), None);
        let mut exhausted = failed(false, false);
        exhausted.attempt = 3;
        assert!(not_retried(&exhausted, 3, false)
            .unwrap()
            .contains("the most allowed (3)"));
    }

    #[test]
    fn verification_passes_only_when_every_sink_has_exactly_the_rows_it_committed() {
        let planned = shard().planned();
        let check = |last, committed, rows| SinkCheck {
            component: "pg".into(),
            checkpoint_row: "pg@1192-1255".into(),
            last_ledger: last,
            events_committed: committed,
            rows_in_range: rows,
        };
        let ok = verified(&planned, &[check(Some(1255), Some(600), 600)]);
        assert_eq!(ok.status(), ChunkStatus::Verified);
        assert_eq!(ok.row_counts["pg"], 600);
        for (bad, says) in [
            (check(Some(1255), Some(600), 598), "598 rows in the range"),
            (
                check(Some(1200), Some(80), 80),
                "before the shard's last ledger",
            ),
            (check(None, None, 0), "never ran"),
            (check(Some(1255), None, 600), "does not count its events"),
        ] {
            let v = verified(&planned, &[check(Some(1255), Some(1), 1), bad]);
            assert_eq!(v.status(), ChunkStatus::Failed);
            assert_eq!(v.failure_class(), FailureClass::Verification);
            assert!(v.error.contains(says), "{} lacks {says:?}", v.error);
        }
    }
}
