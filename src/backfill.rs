//! Backfills: a long range of ledgers cut into shards that an existing engine places on hosts
//! (`flowctl backfill plan`). Each shard is a bounded `flowctl run --shard-id`, which resumes
//! from its sink's checkpoint when run again; flowctl itself never schedules them.

use crate::plan::PipelinePlan;

/// Shard boundaries fall on multiples of this, as Horizon's parallel reingestion cuts its
/// ranges: data-lake files hold 1 or 64 ledgers (or a divisor of 64), so no file is split
/// between two shards.
pub const ALIGN: u32 = 64;

/// More shards than this is a mistake of units (a shard size in ledgers given as a count).
pub const MAX_SHARDS: usize = 100_000;

/// One shard: ledgers `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub from: u32,
    pub to: u32,
}

/// How big the shards are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sizing {
    /// About this many shards.
    Count(u32),
    /// Shards of this many ledgers (rounded up to a multiple of [`ALIGN`]).
    Ledgers(u32),
}

/// Cuts `from..=to` at multiples of the shard size (itself a multiple of `align`, which is
/// [`ALIGN`] or a multiple of it): the first and last shards may be shorter, the others are
/// whole.
pub fn shards(from: u32, to: u32, sizing: Sizing, align: u32) -> Result<Vec<Shard>, String> {
    let align = u64::from(align.max(1));
    if from == 0 {
        return Err("--from-ledger 0: ledgers start at 1".into());
    }
    if to < from {
        return Err(format!("--to-ledger {to} is before --from-ledger {from}"));
    }
    let len = u64::from(to - from) + 1;
    let size = match sizing {
        Sizing::Count(0) => return Err("--shards 0: at least one shard".into()),
        Sizing::Ledgers(0) => return Err("--shard-size 0: at least one ledger".into()),
        Sizing::Count(n) => len.div_ceil(u64::from(n)),
        Sizing::Ledgers(k) => u64::from(k),
    };
    let size = size.div_ceil(align) * align;
    let mut out = Vec::new();
    let mut start = u64::from(from);
    while start <= u64::from(to) {
        let cut = (start / size + 1) * size;
        let end = (cut - 1).min(u64::from(to));
        out.push(Shard {
            index: out.len(),
            from: start as u32,
            to: end as u32,
        });
        if out.len() > MAX_SHARDS {
            return Err(format!(
                "over {MAX_SHARDS} shards of {size} ledgers: give a bigger --shard-size"
            ));
        }
        start = end + 1;
    }
    Ok(out)
}

/// What shard boundaries must be multiples of for this pipeline: [`ALIGN`], and each local
/// data lake's objects (`ledgersPerBatch` of its `.config.json`), so that no object is read by
/// two shards. A lake on object storage is not read here; its batches are taken to divide 64,
/// as Galexie's (1 or 64 ledgers) do, unless `ledgers_per_file` says otherwise.
pub fn alignment(plan: &PipelinePlan, ledgers_per_file: Option<u32>) -> Result<u32, String> {
    let mut align = u64::from(ALIGN);
    let mut widen = |batch: u64| align = lcm(align, batch);
    if let Some(k) = ledgers_per_file {
        if k == 0 {
            return Err(
                "--ledgers-per-file 0: a data-lake object holds at least one ledger".into(),
            );
        }
        widen(u64::from(k));
    }
    for c in &plan.components {
        let Some(url) = c.env.get("DATALAKE_URL") else {
            continue;
        };
        if url.contains("://") && !url.starts_with("file://") {
            continue;
        }
        let root = std::path::Path::new(url.strip_prefix("file://").unwrap_or(url));
        let manifest = root.join(stellar_ledgers::datalake::MANIFEST);
        let json = std::fs::read(&manifest).map_err(|e| {
            format!(
                "component `{}`: cannot read the data lake's manifest {}: {e}",
                c.id,
                manifest.display()
            )
        })?;
        let config = stellar_ledgers::datalake::DataLakeConfig::parse(&manifest, &json)
            .map_err(|e| format!("component `{}`: {e}", c.id))?;
        widen(u64::from(config.ledgers_per_batch));
    }
    u32::try_from(align).map_err(|_| {
        format!("shard boundaries would have to be multiples of {align} ledgers: too large")
    })
}

fn lcm(a: u64, b: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    a / gcd(a, b) * b
}

/// The work of a backfill, for an engine to place.
pub struct Work<'a> {
    /// The `flowctl` every host runs.
    pub flowctl: &'a str,
    /// The pipeline file, absolute.
    pub file: &'a str,
    /// `--state-dir` of every shard's run, if one is given.
    pub state_dir: Option<&'a str>,
    pub plan: &'a PipelinePlan,
    /// Every shard of the range: a task's index is its place here.
    pub shards: &'a [Shard],
    /// The shards to run (by index), when not all: `backfill reconcile`'s unfinished ones.
    pub only: Option<&'a [usize]>,
    /// The backfill's id: each shard records itself as its chunk run `ID/shard-S`.
    pub backfill: &'a str,
    /// Where the shards record their chunk runs, when not in their own state dir.
    pub chunk_endpoint: Option<&'a str>,
    /// At most this many shards run at once.
    pub max_workers: Option<u32>,
}

impl Work<'_> {
    /// What runs one shard: `flowctl run`, its own runtime dir so shards share a host.
    fn run_command(&self, from: &str, to: &str, shard: &str, runtime: &str) -> String {
        let mut cmd = format!(
            "{} run {} --from-ledger {from} --to-ledger {to} --shard-id {shard} \
             --runtime-dir {runtime}",
            quote(self.flowctl),
            quote(self.file)
        );
        if let Some(dir) = self.state_dir {
            cmd.push_str(&format!(" --state-dir {}", quote(dir)));
        }
        cmd.push_str(&format!(" --backfill-id {}", quote(self.backfill)));
        if let Some(endpoint) = self.chunk_endpoint {
            cmd.push_str(&format!(" --chunk-endpoint {}", quote(endpoint)));
        }
        cmd
    }

    fn selected(&self) -> impl Iterator<Item = &Shard> {
        self.shards
            .iter()
            .filter(|s| self.only.is_none_or(|only| only.contains(&s.index)))
    }

    /// One shell command a line, a shard each.
    pub fn commands(&self) -> String {
        let mut out = String::new();
        if let Some(w) = self.max_workers {
            // A comment line is a no-op to `sh` and to `xargs … sh -c`.
            out.push_str(&format!(
                "# at most {w} at once: xargs -P {w} -d '\\n' -n 1 sh -c < THIS_FILE\n"
            ));
        }
        for s in self.selected() {
            let runtime = format!(
                "\"${{TMPDIR:-/tmp}}\"/flowctl-backfill-{}-{}",
                self.plan.name, s.index
            );
            out.push_str(&self.run_command(
                &s.from.to_string(),
                &s.to.to_string(),
                &s.index.to_string(),
                &runtime,
            ));
            out.push('\n');
        }
        out
    }

    /// An `sbatch --array` script: one task per shard, requeued when its host is lost, with
    /// the pipeline's summed resource limits as its request.
    pub fn slurm(&self) -> String {
        let (plan, shards) = (self.plan, self.shards);
        let mut out = String::from("#!/bin/bash\n");
        out.push_str(&format!(
            "#SBATCH --job-name=flowctl-backfill-{}\n",
            plan.name
        ));
        let tasks: Vec<usize> = self.selected().map(|s| s.index).collect();
        let throttle = self.max_workers.map_or(String::new(), |w| format!("%{w}"));
        out.push_str(&format!(
            "#SBATCH --array={}{throttle}\n",
            array_spec(&tasks)
        ));
        out.push_str("#SBATCH --requeue\n");
        out.push_str(&format!(
            "#SBATCH --output=flowctl-backfill-{}-%A_%a.out\n",
            plan.name
        ));
        let cpus: f64 = plan
            .components
            .iter()
            .filter_map(|c| c.resources.cpu_max)
            .sum();
        if cpus > 0.0 {
            out.push_str(&format!("#SBATCH --cpus-per-task={}\n", cpus.ceil() as u64));
        }
        let memory: u64 = plan
            .components
            .iter()
            .filter_map(|c| c.resources.memory_max)
            .sum();
        if memory > 0 {
            out.push_str(&format!("#SBATCH --mem={}M\n", memory.div_ceil(1 << 20)));
        }
        out.push_str(&format!(
            "# {} of {} shards of {}, ledgers {}-{}; a shard run again resumes from its sink's \
             checkpoint.\n",
            tasks.len(),
            shards.len(),
            plan.name,
            shards.first().map_or(0, |s| s.from),
            shards.last().map_or(0, |s| s.to),
        ));
        out.push_str("set -euo pipefail\nranges=(\n");
        for s in shards {
            out.push_str(&format!("  \"{} {}\"\n", s.from, s.to));
        }
        out.push_str(")\n");
        out.push_str("task=${SLURM_ARRAY_TASK_ID:?run this script with sbatch}\n");
        out.push_str("read -r from to <<<\"${ranges[$task]}\"\n");
        out.push_str("exec ");
        out.push_str(&self.run_command(
            "\"$from\"",
            "\"$to\"",
            "\"$task\"",
            "\"${TMPDIR:-/tmp}/flowctl-backfill-${SLURM_ARRAY_JOB_ID:-$$}-$task\"",
        ));
        out.push('\n');
        out
    }
}

/// Slurm's `--array` list: runs of consecutive tasks as `A-B`, the others alone.
fn array_spec(tasks: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tasks.len() {
        let mut j = i;
        while j + 1 < tasks.len() && tasks[j + 1] == tasks[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            tasks[i].to_string()
        } else {
            format!("{}-{}", tasks[i], tasks[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// A PostgreSQL sink of the pipeline: where its shards' checkpoint rows are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSink {
    pub component: String,
    /// The sink's checkpoint name as it picks it: `SINK_ID`, else `COMPONENT_ID`, else its
    /// component id (`FLOWCTL_COMPONENT_ID`).
    pub sink_id: String,
    pub url: String,
}

impl PgSink {
    /// The checkpoint row of `shard`: a bounded run's, `SINK_ID@FROM-TO`, as the sink names it.
    pub fn key(&self, shard: &Shard) -> String {
        format!("{}@{}-{}", self.sink_id, shard.from, shard.to)
    }
}

/// The pipeline's sinks with `SINK: postgres`; `url` replaces their `DATABASE_URL`.
pub fn postgres_sinks(plan: &PipelinePlan, url: Option<&str>) -> Vec<PgSink> {
    plan.components
        .iter()
        .filter(|c| c.role == crate::plan::Role::Sink)
        .filter(|c| c.env.get("SINK").is_some_and(|s| s == "postgres"))
        .filter_map(|c| {
            let url = url
                .map(str::to_string)
                .or_else(|| c.env.get("DATABASE_URL").cloned())?;
            let sink_id = c
                .env
                .get("SINK_ID")
                .or_else(|| c.env.get("COMPONENT_ID"))
                .cloned()
                .unwrap_or_else(|| c.id.clone());
            Some(PgSink {
                component: c.id.clone(),
                sink_id,
                url,
            })
        })
        .collect()
}

/// Where a shard stands, by its sinks' checkpoints (the least advanced sink decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShardState {
    /// Every sink's checkpoint is at the shard's last ledger.
    Done,
    /// A checkpoint moved lately.
    Running,
    /// Begun, but no checkpoint moved lately: its run died (reconcile runs it again).
    Stalled,
    /// Its chunk run failed or was aborted (pipelines without PostgreSQL sinks, whose chunk
    /// runs tell their state); reconcile runs it again.
    Failed,
    /// No checkpoint row: never begun.
    Missing,
}

impl ShardState {
    pub fn word(self) -> &'static str {
        match self {
            ShardState::Done => "done",
            ShardState::Running => "running",
            ShardState::Stalled => "stalled",
            ShardState::Failed => "failed",
            ShardState::Missing => "missing",
        }
    }
}

/// A sink's checkpoint row of a shard, as read from its database.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointRow {
    /// The last ledger committed, 0 when none yet (a run claims the row when it starts).
    pub last_ledger: i64,
    /// Seconds since the row last changed.
    pub age_secs: f64,
    /// How many times a run of the shard claimed the row: above 1, it was started more than
    /// once (0 on a row written before fencing existed).
    pub epoch: i64,
}

/// One shard's state, with its least advanced sink's checkpoint, that row's age and epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardStatus {
    pub shard: Shard,
    pub state: ShardState,
    /// `None` until a ledger is committed.
    pub checkpoint: Option<i64>,
    pub age_secs: Option<f64>,
    pub epoch: Option<i64>,
}

/// Decides each shard's state from the checkpoint rows found by `(database, key)`. A row
/// with no ledger committed yet is a begun shard: running, or stalled once silent too long.
pub fn shard_states(
    sinks: &[PgSink],
    shards: &[Shard],
    rows: &std::collections::BTreeMap<(String, String), CheckpointRow>,
    running_within_secs: f64,
) -> Vec<ShardStatus> {
    shards
        .iter()
        .map(|shard| {
            let of_sink = |sink: &PgSink| {
                let row = rows.get(&(sink.url.clone(), sink.key(shard)));
                let state = match row {
                    None => ShardState::Missing,
                    Some(r) if r.last_ledger >= i64::from(shard.to) => ShardState::Done,
                    Some(r) if r.age_secs <= running_within_secs => ShardState::Running,
                    Some(_) => ShardState::Stalled,
                };
                (state, row.copied())
            };
            let (state, row) = sinks
                .iter()
                .map(of_sink)
                .max_by_key(|(state, _)| *state)
                .unwrap_or((ShardState::Missing, None));
            ShardStatus {
                shard: *shard,
                state,
                checkpoint: row.map(|r| r.last_ledger).filter(|l| *l > 0),
                age_secs: row.map(|r| r.age_secs),
                epoch: row.map(|r| r.epoch),
            }
        })
        .collect()
}

/// Each shard's state from its chunk run alone: done once completed or verified, running
/// while its record moved within `stalled_after` (a run reports as it starts and ends, so a
/// long shard's RUNNING record goes quiet: only an older one than that is stalled), failed
/// when failed or aborted, missing when planned or unrecorded.
pub fn chunk_states(
    shards: &[Shard],
    chunks: &std::collections::BTreeMap<usize, flowctl_proto::flowctl::ChunkRun>,
    stalled_after: std::time::Duration,
) -> Vec<ShardStatus> {
    use flowctl_proto::flowctl::ChunkStatus;
    let now = std::time::SystemTime::now();
    shards
        .iter()
        .map(|shard| {
            let chunk = chunks.get(&shard.index);
            let age_secs = chunk.and_then(|c| c.updated_at.as_ref()).map(|t| {
                let at = std::time::UNIX_EPOCH
                    + std::time::Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
                now.duration_since(at).unwrap_or_default().as_secs_f64()
            });
            let state = match chunk.map(|c| c.status()) {
                Some(ChunkStatus::Completed | ChunkStatus::Verified) => ShardState::Done,
                Some(ChunkStatus::Running | ChunkStatus::Dispatched) => {
                    if age_secs.is_some_and(|a| a > stalled_after.as_secs_f64()) {
                        ShardState::Stalled
                    } else {
                        ShardState::Running
                    }
                }
                Some(ChunkStatus::Failed | ChunkStatus::Aborted | ChunkStatus::RetryPending) => {
                    ShardState::Failed
                }
                Some(ChunkStatus::Planned | ChunkStatus::Unknown) | None => ShardState::Missing,
            };
            ShardStatus {
                shard: *shard,
                state,
                checkpoint: None,
                age_secs,
                epoch: chunk.map(|c| i64::from(c.attempt)),
            }
        })
        .collect()
}

/// The checkpoint keys to read, by database.
pub fn by_database(sinks: &[PgSink], shards: &[Shard]) -> Vec<(String, Vec<String>)> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for sink in sinks {
        out.entry(sink.url.clone())
            .or_default()
            .extend(shards.iter().map(|s| sink.key(s)));
    }
    out.into_iter().collect()
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '-' | '_' | '=' | ':'))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(v: &[Shard]) -> Vec<(u32, u32)> {
        v.iter().map(|s| (s.from, s.to)).collect()
    }

    #[test]
    fn shards_cut_on_multiples_of_64_and_cover_the_range_once() {
        let v = shards(100, 300, Sizing::Ledgers(64), ALIGN).unwrap();
        assert_eq!(ranges(&v), [(100, 127), (128, 191), (192, 255), (256, 300)]);
        // A size that is no multiple of 64 is rounded up; a count gives about that many.
        assert_eq!(
            ranges(&shards(1, 200, Sizing::Ledgers(50), ALIGN).unwrap())[0],
            (1, 63)
        );
        let three = shards(2, 5001, Sizing::Count(3), ALIGN).unwrap();
        assert_eq!(three.len(), 3);
        assert_eq!((three[0].from, three[2].to), (2, 5001));
        for pair in three.windows(2) {
            assert_eq!(pair[0].to + 1, pair[1].from);
            assert_eq!(pair[1].from % ALIGN, 0);
        }
        assert_eq!(
            ranges(&shards(7, 7, Sizing::Count(10), ALIGN).unwrap()),
            [(7, 7)]
        );
    }

    #[test]
    fn a_range_or_size_that_makes_no_shards_is_refused_naming_the_flag() {
        assert!(shards(0, 9, Sizing::Count(2), ALIGN)
            .unwrap_err()
            .contains("--from-ledger 0"));
        assert!(shards(9, 2, Sizing::Count(2), ALIGN)
            .unwrap_err()
            .contains("before"));
        assert!(shards(1, 9, Sizing::Count(0), ALIGN)
            .unwrap_err()
            .contains("--shards 0"));
        let e = shards(1, u32::MAX, Sizing::Ledgers(1), ALIGN).unwrap_err();
        assert!(e.contains("bigger --shard-size"), "{e}");
    }

    #[test]
    fn a_shard_is_done_running_stalled_or_missing_by_its_least_advanced_sink() {
        let sink = |id: &str| PgSink {
            component: id.into(),
            sink_id: id.into(),
            url: "db".into(),
        };
        let sinks = [sink("a"), sink("b")];
        let v = shards(64, 319, Sizing::Ledgers(64), ALIGN).unwrap();
        let mut rows = std::collections::BTreeMap::new();
        let mut put = |id: &str, s: &Shard, last_ledger: i64, age_secs: f64| {
            let row = CheckpointRow {
                last_ledger,
                age_secs,
                epoch: 1,
            };
            rows.insert(("db".to_string(), sink(id).key(s)), row);
        };
        put("a", &v[0], 127, 500.0);
        put("b", &v[0], 127, 500.0);
        put("a", &v[1], 191, 1.0);
        put("b", &v[1], 150, 2.0);
        put("a", &v[2], 255, 1.0);
        put("b", &v[2], 200, 600.0);
        let states: Vec<ShardState> = shard_states(&sinks, &v, &rows, 60.0)
            .iter()
            .map(|s| s.state)
            .collect();
        use ShardState::*;
        assert_eq!(states, [Done, Running, Stalled, Missing]);
        assert_eq!(sinks[0].key(&v[1]), "a@128-191");
    }

    #[test]
    fn a_claimed_row_without_a_ledger_is_a_begun_shard_with_no_checkpoint_and_its_epoch() {
        let sink = PgSink {
            component: "a".into(),
            sink_id: "a".into(),
            url: "db".into(),
        };
        let v = shards(64, 191, Sizing::Ledgers(64), ALIGN).unwrap();
        let claimed = |age_secs| CheckpointRow {
            last_ledger: 0,
            age_secs,
            epoch: 2,
        };
        let rows = [(0, claimed(1.0)), (1, claimed(600.0))]
            .into_iter()
            .map(|(i, r)| (("db".to_string(), sink.key(&v[i])), r))
            .collect();
        let got = shard_states(std::slice::from_ref(&sink), &v, &rows, 60.0);
        let seen: Vec<_> = got
            .iter()
            .map(|s| (s.state, s.checkpoint, s.epoch))
            .collect();
        assert_eq!(
            seen,
            [
                (ShardState::Running, None, Some(2)),
                (ShardState::Stalled, None, Some(2))
            ]
        );
    }

    #[test]
    fn boundaries_fall_on_data_lake_objects_of_any_size() {
        // Objects of 100 ledgers: boundaries on multiples of lcm(64, 100) = 1600.
        let v = shards(1, 5000, Sizing::Ledgers(1000), lcm(64, 100) as u32).unwrap();
        assert_eq!(
            ranges(&v),
            [(1, 1599), (1600, 3199), (3200, 4799), (4800, 5000)]
        );
        assert_eq!(lcm(64, 1), 64);
        assert_eq!(lcm(64, 32), 64);
    }

    #[test]
    fn an_array_of_some_tasks_lists_runs_as_ranges() {
        assert_eq!(array_spec(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_spec(&[1, 3, 4, 5, 9]), "1,3-5,9");
        assert_eq!(array_spec(&[7]), "7");
    }

    #[test]
    fn a_path_with_spaces_or_quotes_stays_one_shell_word() {
        assert_eq!(quote("/srv/p.yaml"), "/srv/p.yaml");
        assert_eq!(quote("/srv/my p's.yaml"), "'/srv/my p'\\''s.yaml'");
    }
}
