//! `flowctl chunks retry` and `flowctl chunks verify`: the verbs that act on chunk runs.
//!
//! A retry marks each chosen chunk RETRY_PENDING. A backfill shard's chunk (one `backfill
//! plan` recorded) then has its work written again, as `backfill reconcile` writes it, for the
//! engine to run (`--submit` hands a Slurm script to `sbatch`); the run it starts records the
//! next attempt. A chunk another component reported is only marked: that component runs its
//! chunks itself. A verification counts each PostgreSQL sink's rows in a shard's range against
//! the events its checkpoint row says were committed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args as ClapArgs;
use flowctl_proto::flowctl::{ChunkRun, ChunkStatus};

use crate::backfill::{self, Shard};
use crate::chunks::{not_retried, Records, ShardChunk};
use crate::registry::chunks::{failure_word, status_word, ChunkFilter};
use crate::spec::{self, ResolveOptions};

/// Attempts of a chunk `retry` allows where neither the flag nor its pipeline file says.
const DEFAULT_MAX_ATTEMPTS: i32 = 3;

#[derive(Debug, ClapArgs)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "failed"])))]
pub(super) struct RetryArgs {
    /// The chunk to run again.
    pub(super) id: Option<String>,
    /// Every failed or aborted chunk (of --run, when given).
    #[arg(long)]
    pub(super) failed: bool,
    /// With --failed: only this run's (a backfill id, or a unique prefix of one).
    #[arg(long, value_name = "RUN", requires = "failed")]
    pub(super) run: Option<String>,
    /// Attempts after which a chunk is not run again (default: its pipeline file's
    /// `spec.retry_policy.max_attempts`, else 3).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub(super) max_attempts: Option<i32>,
    /// Also chunks whose failure running again does not fix (bad data, a schema) or that
    /// have had their attempts.
    #[arg(long)]
    pub(super) force: bool,
    /// How the shards' work is written: an `sbatch --array` script or one shell command each.
    #[arg(long, value_enum, default_value = "commands")]
    pub(super) engine: super::backfill::Engine,
    /// Write the work here (the Slurm script made executable) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub(super) script: Option<PathBuf>,
    /// Submit the script with `sbatch` (needs `--engine slurm` and `--script`).
    #[arg(long)]
    pub(super) submit: bool,
}

#[derive(Debug, ClapArgs)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "run"])))]
pub(super) struct VerifyArgs {
    /// The chunk to verify.
    pub(super) id: Option<String>,
    /// Every completed chunk of this run (a backfill id, or a unique prefix of one).
    #[arg(long, value_name = "RUN")]
    pub(super) run: Option<String>,
    /// The PostgreSQL sinks' database (default: each sink's DATABASE_URL in the file).
    #[arg(long, value_name = "URL")]
    pub(super) database_url: Option<String>,
}

/// The chunks a retry or verification acts on.
async fn chosen(
    records: &mut Records,
    id: Option<&str>,
    run: Option<&str>,
    statuses: &[ChunkStatus],
) -> anyhow::Result<Vec<ChunkRun>> {
    if let Some(id) = id {
        return match records.get(id).await? {
            Some(c) => Ok(vec![c]),
            None => anyhow::bail!("no chunk run {id:?}"),
        };
    }
    let mut out = Vec::new();
    for status in statuses {
        let filter = ChunkFilter {
            pipeline_run_id: run.map(str::to_string),
            status: Some(*status),
            ..Default::default()
        };
        out.extend(records.all(&filter).await?);
    }
    out.sort_by(|a, b| {
        (&a.pipeline_run_id, a.chunk_start, &a.chunk_id).cmp(&(
            &b.pipeline_run_id,
            b.chunk_start,
            &b.chunk_id,
        ))
    });
    Ok(out)
}

/// The pipeline of a shard's chunk, resolved as its shard's run resolves it.
fn shard_plan(shard: &ShardChunk) -> anyhow::Result<crate::plan::PipelinePlan> {
    let options = ResolveOptions {
        range: Some(crate::plan::LedgerRange {
            from: shard.from,
            to: Some(shard.to),
        }),
        shard_id: Some(shard.shard.clone()),
        ..Default::default()
    };
    let file = std::path::Path::new(&shard.file);
    spec::load_plan(file, &options)
        .map(|l| l.plan)
        .map_err(|diags| {
            let lines: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
            anyhow::anyhow!(
                "chunk {}: its pipeline file does not load:\n{}",
                shard.id(),
                lines.join("\n")
            )
        })
}

pub(super) async fn retry(mut records: Records, args: RetryArgs) -> anyhow::Result<i32> {
    if args.submit
        && (!matches!(args.engine, super::backfill::Engine::Slurm) || args.script.is_none())
    {
        anyhow::bail!("--submit hands a script to sbatch: give --engine slurm and --script FILE");
    }
    let statuses = [ChunkStatus::Failed, ChunkStatus::Aborted];
    let chunks = chosen(
        &mut records,
        args.id.as_deref(),
        args.run.as_deref(),
        &statuses,
    )
    .await?;
    // Shards to run again, by backfill: the work is written per backfill.
    let mut by_backfill: BTreeMap<String, Vec<ShardChunk>> = BTreeMap::new();
    let mut skipped = 0;
    let mut marked = 0;
    let mut file_attempts: BTreeMap<String, Option<u32>> = BTreeMap::new();
    for c in &chunks {
        let shard = ShardChunk::of_record(c);
        let from_file = shard.as_ref().and_then(|s| {
            *file_attempts.entry(s.file.clone()).or_insert_with(|| {
                spec::load_file(std::path::Path::new(&s.file))
                    .ok()
                    .and_then(|p| p.chunking.max_attempts)
            })
        });
        let max_attempts = args
            .max_attempts
            .or(from_file.map(|n| n.min(i32::MAX as u32) as i32))
            .unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if let Some(why) = not_retried(c, max_attempts, args.force) {
            crate::stderr_line!("flowctl: {}: not run again: {why}", c.chunk_id);
            skipped += 1;
            continue;
        }
        let pending = ChunkRun {
            chunk_id: c.chunk_id.clone(),
            attempt: c.attempt,
            status: ChunkStatus::RetryPending as i32,
            failure_class: c.failure_class,
            phase: "retry pending".into(),
            error: c.error.clone(),
            recommended_action: match &shard {
                Some(_) => "run the work `flowctl chunks retry` wrote".into(),
                None => format!("{} runs it again", c.component_id),
            },
            ..Default::default()
        };
        records.upsert(pending).await?;
        marked += 1;
        match shard {
            Some(shard) => by_backfill
                .entry(shard.backfill.clone())
                .or_default()
                .push(shard),
            None => crate::stderr_line!(
                "flowctl: {}: marked retry_pending; component {} runs it again",
                c.chunk_id,
                c.component_id
            ),
        }
    }
    if marked == 0 {
        crate::stderr_line!("flowctl: nothing to run again ({skipped} chunk(s) not retried)");
        return Ok(if skipped > 0 { 1 } else { 0 });
    }
    let mut out = String::new();
    for (backfill, again) in &by_backfill {
        out.push_str(&work_of(&mut records, backfill, again, &args).await?);
    }
    if !out.is_empty() {
        match &args.script {
            None => print!("{out}"),
            Some(path) => {
                std::fs::write(path, &out)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                if matches!(args.engine, super::backfill::Engine::Slurm) {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                        .with_context(|| format!("cannot make {} executable", path.display()))?;
                }
            }
        }
    }
    crate::stderr_line!(
        "flowctl: {marked} chunk(s) marked retry_pending ({} shard(s) to run again){}",
        by_backfill.values().map(Vec::len).sum::<usize>(),
        if skipped > 0 {
            format!(", {skipped} not retried")
        } else {
            String::new()
        }
    );
    if args.submit {
        super::backfill::submit(args.script.as_ref().expect("checked above"))?;
    }
    Ok(0)
}

/// The work of `again`, shards of `backfill`, as `backfill plan` writes it: the Slurm
/// script's task ids are the shards' indexes, so every shard of the backfill is read back.
async fn work_of(
    records: &mut Records,
    backfill: &str,
    again: &[ShardChunk],
    args: &RetryArgs,
) -> anyhow::Result<String> {
    let filter = ChunkFilter {
        pipeline_run_id: Some(backfill.to_string()),
        ..Default::default()
    };
    let mut shards: BTreeMap<usize, ShardChunk> = BTreeMap::new();
    for c in records.all(&filter).await? {
        if let Some(s) = ShardChunk::of_record(&c) {
            if let Ok(index) = s.shard.parse::<usize>() {
                shards.insert(index, s);
            }
        }
    }
    let count = shards.keys().next_back().map_or(0, |last| last + 1);
    if shards.len() != count {
        let missing: Vec<String> = (0..count)
            .filter(|i| !shards.contains_key(i))
            .map(|i| i.to_string())
            .collect();
        anyhow::bail!(
            "backfill {backfill}: the chunk runs of shard(s) {} are missing, so its work cannot \
             be written again: write it with `flowctl backfill reconcile`",
            missing.join(", ")
        );
    }
    let all: Vec<Shard> = shards.iter().map(|(i, s)| s.as_shard(*i)).collect();
    let only: Vec<usize> = again.iter().filter_map(|s| s.shard.parse().ok()).collect();
    let first = &again[0];
    let plan = shard_plan(first)?;
    let work = super::backfill::WorkArgs {
        engine: args.engine,
        max_workers: None,
        records: super::backfill::RecordArgs {
            state_dir: first.state_dir.as_ref().map(PathBuf::from),
            chunk_endpoint: first.chunk_endpoint.clone(),
        },
        output: None,
    };
    super::backfill::work_text(
        &work,
        std::path::Path::new(&first.file),
        &plan,
        &all,
        Some(&only),
    )
}

pub(super) async fn verify(mut records: Records, args: VerifyArgs) -> anyhow::Result<i32> {
    let chunks = chosen(
        &mut records,
        args.id.as_deref(),
        args.run.as_deref(),
        &[ChunkStatus::Completed],
    )
    .await?;
    if chunks.is_empty() {
        crate::stderr_line!("flowctl: no completed chunk run to verify");
        return Ok(0);
    }
    let (mut ok, mut bad) = (0, 0);
    for c in &chunks {
        let Some(shard) = ShardChunk::of_record(c) else {
            anyhow::bail!(
                "chunk {} was reported by component {}, not planned by `flowctl backfill \
                 plan`: flowctl does not know where it wrote",
                c.chunk_id,
                c.component_id
            );
        };
        let plan = shard_plan(&shard)?;
        let sinks = backfill::postgres_sinks(&plan, args.database_url.as_deref());
        if sinks.is_empty() {
            anyhow::bail!(
                "chunk {}: pipeline `{}` ({}) has no PostgreSQL sink (SINK: postgres) whose \
                 rows could be counted",
                c.chunk_id,
                plan.name,
                shard.file
            );
        }
        let mut checks = Vec::new();
        for sink in &sinks {
            let (client, connection) = tokio_postgres::connect(&sink.url, tokio_postgres::NoTls)
                .await
                .with_context(|| format!("cannot reach the database of sink {}", sink.component))?;
            tokio::spawn(connection);
            let check = crate::chunks::check_sink(&client, sink, &shard.as_shard(0))
                .await
                .with_context(|| format!("counting the rows of sink {}", sink.component))?;
            checks.push(check);
        }
        let result = crate::chunks::verified(c, &checks);
        let stored = records.upsert(result).await?;
        match stored.status() {
            ChunkStatus::Verified => {
                ok += 1;
                crate::stderr_line!("flowctl: {}: verified", stored.chunk_id);
            }
            status => {
                bad += 1;
                crate::stderr_line!(
                    "flowctl: {}: {} ({}): {}",
                    stored.chunk_id,
                    status_word(status),
                    failure_word(stored.failure_class()),
                    stored.error
                );
            }
        }
    }
    crate::stderr_line!("flowctl: {ok} verified, {bad} failed verification");
    Ok(if bad > 0 { 1 } else { 0 })
}
