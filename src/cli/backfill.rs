//! `flowctl backfill plan`: a long range cut into shards, written as work for an engine that
//! places it (an `sbatch --array` script for Slurm, or one shell command per shard);
//! `status` reads where each shard stands from its sinks' checkpoint rows, and `reconcile`
//! writes (or submits) the work of the shards not done, since Slurm does not run again a task
//! that exited non-zero.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand, ValueEnum};

use crate::backfill::{self, Sizing};
use crate::spec::{self, ResolveOptions};

#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: BackfillCommand,
}

#[derive(Debug, Subcommand)]
enum BackfillCommand {
    /// Cut FROM..=TO into shards (on multiples of 64 ledgers) and write the work for the
    /// engine: each shard is `flowctl run FILE --from-ledger X --to-ledger Y --shard-id S`.
    Plan(PlanArgs),
    /// Each shard's state from its PostgreSQL sinks' checkpoint rows: done, running (a
    /// checkpoint moved in the last minute), stalled, or missing; EPOCH counts the runs of
    /// the shard that claimed its row (above 1: it was started more than once); CHUNK is its
    /// chunk run's status and attempt. Without PostgreSQL sinks, the chunk runs decide.
    Status(StatusArgs),
    /// The work of the shards not done (missing or stalled; running ones are left alone), as
    /// `plan` writes it, each shard keeping its task id; `--submit` hands it to `sbatch`.
    Reconcile(ReconcileArgs),
}

/// The range and how it is cut: the same for `plan` and `status`. The file's `spec.range`
/// gives what is left out.
#[derive(Debug, ClapArgs)]
struct ShardArgs {
    /// The pipeline file every shard runs.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    /// The first ledger (default: the file's `spec.range.from_ledger`).
    #[arg(long, value_name = "LEDGER")]
    from_ledger: Option<u32>,
    /// The last ledger, included (default: the file's `spec.range.to_ledger`).
    #[arg(long, value_name = "LEDGER")]
    to_ledger: Option<u32>,
    /// About this many shards (make many more than hosts: a slow or lost host costs little).
    #[arg(long, value_name = "N", conflicts_with = "shard_size")]
    shards: Option<u32>,
    /// Shards of this many ledgers, rounded up to a multiple of 64 (default: the file's
    /// `spec.range.chunk_size`).
    #[arg(long, value_name = "K")]
    shard_size: Option<u32>,
    /// Ledgers in each object of the pipeline's data lake, when it is on object storage and
    /// its objects do not divide 64 (a local lake's `.config.json` is read instead).
    #[arg(long, value_name = "K")]
    ledgers_per_file: Option<u32>,
}

/// Where each shard's checkpoints are, and when a silent one counts as stalled.
#[derive(Debug, ClapArgs)]
struct CheckpointArgs {
    /// The PostgreSQL sinks' database (default: each sink's DATABASE_URL in the file).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// A begun shard whose checkpoint has not moved for this long is stalled, not running.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    stalled_after: std::time::Duration,
}

/// What work is written for which engine, and where.
#[derive(Debug, ClapArgs)]
pub(super) struct WorkArgs {
    #[arg(long, value_enum, default_value = "slurm")]
    pub(super) engine: Engine,
    /// At most this many shards run at once (Slurm's `--array=…%N`; default: the file's
    /// `spec.range.max_workers`, else as many as the engine places).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(super) max_workers: Option<u32>,
    #[command(flatten)]
    pub(super) records: RecordArgs,
    /// Write here (the Slurm script made executable) instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub(super) output: Option<PathBuf>,
}

/// Where the shards record their runs and chunk runs.
#[derive(Debug, ClapArgs)]
pub(super) struct RecordArgs {
    /// Where each shard records its run (`flowctl run --state-dir`); default: each host's.
    /// The shards' chunk runs are recorded in its store too, unless --chunk-endpoint is given.
    #[arg(long, value_name = "DIR")]
    pub(super) state_dir: Option<PathBuf>,
    /// A control plane every host reaches (a `flowctl server`) where the shards' chunk runs
    /// are recorded, instead of the state dir's store.
    #[arg(long, value_name = "HOST:PORT")]
    pub(super) chunk_endpoint: Option<String>,
}

#[derive(Debug, ClapArgs)]
struct PlanArgs {
    #[command(flatten)]
    range: ShardArgs,
    #[command(flatten)]
    work: WorkArgs,
}

#[derive(Debug, ClapArgs)]
struct ReconcileArgs {
    #[command(flatten)]
    range: ShardArgs,
    #[command(flatten)]
    checkpoints: CheckpointArgs,
    #[command(flatten)]
    work: WorkArgs,
    /// Submit the script with `sbatch` (needs `--engine slurm` and `-o`), printing its job id.
    #[arg(long)]
    submit: bool,
}

#[derive(Debug, ClapArgs)]
struct StatusArgs {
    #[command(flatten)]
    range: ShardArgs,
    #[command(flatten)]
    checkpoints: CheckpointArgs,
    #[command(flatten)]
    records: RecordArgs,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: super::list::Output,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum Engine {
    /// An `sbatch --array` script: one task per shard, `--requeue`.
    Slurm,
    /// One shell command per line, a shard each.
    Commands,
}

impl Args {
    pub fn run(self) -> anyhow::Result<i32> {
        match self.command {
            BackfillCommand::Plan(args) => plan(args),
            BackfillCommand::Status(args) => status(args),
            BackfillCommand::Reconcile(args) => reconcile(args),
        }
    }
}

/// A backfill's range, cut into shards, and its pipeline as its first shard resolves it.
struct Cut {
    shards: Vec<backfill::Shard>,
    file: PathBuf,
    plan: crate::plan::PipelinePlan,
    from: u32,
    to: u32,
}

impl Cut {
    /// The backfill's id, from the pipeline and the whole range.
    fn backfill_id(&self) -> String {
        crate::chunks::backfill_id(&self.plan.name, self.from, self.to)
    }
}

fn print_diagnostics(diags: &spec::Diagnostics) {
    for d in diags {
        crate::stderr_line!("{d}");
    }
}

/// The cut of the range the flags and the file's `spec.range` say; problems are printed and
/// answered with `None`.
fn shards_and_plan(args: &ShardArgs) -> anyhow::Result<Option<Cut>> {
    let file = std::path::absolute(&args.file)
        .with_context(|| format!("{}: cannot make the path absolute", args.file.display()))?;
    let pipeline = match spec::load_file(&file) {
        Ok(p) => p,
        Err(diags) => {
            print_diagnostics(&diags);
            return Ok(None);
        }
    };
    print_diagnostics(&pipeline.notices);
    let from = args.from_ledger.or(pipeline.range.map(|r| r.from));
    let to = args.to_ledger.or(pipeline.range.and_then(|r| r.to));
    let (Some(from), Some(to)) = (from, to) else {
        crate::stderr_line!(
            "flowctl: {}: a backfill needs a bounded range: give --from-ledger and --to-ledger, \
             or `spec.range.from_ledger` and `to_ledger` in the file",
            args.file.display()
        );
        return Ok(None);
    };
    let sizing = match (
        args.shards,
        args.shard_size.or(pipeline.chunking.chunk_size),
    ) {
        (Some(n), _) => Sizing::Count(n),
        (None, Some(k)) => Sizing::Ledgers(k),
        (None, None) => {
            crate::stderr_line!(
                "flowctl: {}: say how the range is cut: --shards N or --shard-size K, or \
                 `spec.range.chunk_size` in the file",
                args.file.display()
            );
            return Ok(None);
        }
    };
    // Every shard must resolve: check the file once, as its first shard will run it (the
    // first shard starts at the range's first ledger whatever the cut).
    let options = ResolveOptions {
        range: Some(crate::plan::LedgerRange {
            from,
            to: Some(to.max(from)),
        }),
        shard_id: Some("0".into()),
        ..Default::default()
    };
    let plan = match spec::resolve(&pipeline, &options) {
        Ok(plan) => plan,
        Err(diags) => {
            print_diagnostics(&diags);
            return Ok(None);
        }
    };
    let cut = backfill::alignment(&plan, args.ledgers_per_file)
        .and_then(|align| backfill::shards(from, to, sizing, align));
    match cut {
        Ok(shards) => Ok(Some(Cut {
            shards,
            file,
            plan,
            from,
            to,
        })),
        Err(e) => {
            crate::stderr_line!("flowctl: {}: {e}", args.file.display());
            Ok(None)
        }
    }
}

fn plan(args: PlanArgs) -> anyhow::Result<i32> {
    let Some(cut) = shards_and_plan(&args.range)? else {
        return Ok(1);
    };
    let backfill = cut.backfill_id();
    let Cut {
        shards, file, plan, ..
    } = &cut;
    // Recorded before the work is handed out, so no shard starts unrecorded.
    let (new, known) = runtime()?
        .block_on(async {
            let mut records = chunk_records(&args.work.records).await?;
            let (mut new, mut known) = (0, 0);
            for shard in shards {
                let chunk = shard_chunk(&backfill, file, plan, &args.work, shard);
                // A plan written again leaves the shards already recorded as they stand.
                if records.get(&chunk.id()).await?.is_some() {
                    known += 1;
                } else {
                    records.upsert(chunk.planned()).await?;
                    new += 1;
                }
            }
            anyhow::Ok((new, known))
        })
        .with_context(|| format!("cannot record the chunk runs of backfill {backfill}"))?;
    write_work(&args.work, file, plan, shards, None)?;
    crate::stderr_line!(
        "flowctl: {} shard(s) of `{}`, ledgers {}-{}: backfill {backfill} ({new} chunk run(s) \
         recorded planned{})",
        shards.len(),
        plan.name,
        cut.from,
        cut.to,
        if known > 0 {
            format!(", {known} already recorded")
        } else {
            String::new()
        }
    );
    Ok(0)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A shard as its chunk run names it.
fn shard_chunk(
    backfill: &str,
    file: &std::path::Path,
    plan: &crate::plan::PipelinePlan,
    work: &WorkArgs,
    shard: &backfill::Shard,
) -> crate::chunks::ShardChunk {
    crate::chunks::ShardChunk {
        backfill: backfill.to_string(),
        shard: shard.index.to_string(),
        pipeline: plan.name.clone(),
        file: file.display().to_string(),
        from: shard.from,
        to: shard.to,
        state_dir: work
            .records
            .state_dir
            .as_ref()
            .map(|d| d.display().to_string()),
        chunk_endpoint: work.records.chunk_endpoint.clone(),
    }
}

/// Where the shards' chunk runs are recorded: --chunk-endpoint's control plane, else the
/// store of --state-dir (default: this user's, as `flowctl run` picks it).
pub(super) async fn chunk_records(records: &RecordArgs) -> anyhow::Result<crate::chunks::Records> {
    match &records.chunk_endpoint {
        Some(endpoint) => crate::chunks::Records::remote(endpoint).await,
        None => {
            let dir = records
                .state_dir
                .clone()
                .unwrap_or_else(crate::registry::server::default_state_dir);
            crate::chunks::Records::store(&dir)
        }
    }
}

/// The work of `only` (all shards when `None`) for the engine.
pub(super) fn work_text(
    args: &WorkArgs,
    file: &std::path::Path,
    plan: &crate::plan::PipelinePlan,
    shards: &[backfill::Shard],
    only: Option<&[usize]>,
) -> anyhow::Result<String> {
    // The flowctl that wrote the plan runs it, where it is installed the same on every host.
    let flowctl = std::env::current_exe()
        .ok()
        .filter(|p| p.starts_with("/usr"))
        .map_or_else(|| "flowctl".to_string(), |p| p.display().to_string());
    let file = file.display().to_string();
    let state_dir = args
        .records
        .state_dir
        .as_ref()
        .map(|d| d.display().to_string());
    let first = shards.first().map_or(0, |s| s.from);
    let last = shards.last().map_or(0, |s| s.to);
    let backfill = crate::chunks::backfill_id(&plan.name, first, last);
    let work = backfill::Work {
        flowctl: &flowctl,
        file: &file,
        state_dir: state_dir.as_deref(),
        plan,
        shards,
        only,
        backfill: &backfill,
        chunk_endpoint: args.records.chunk_endpoint.as_deref(),
        max_workers: args.max_workers.or(plan.chunking.max_workers),
    };
    Ok(match args.engine {
        Engine::Slurm => work.slurm(),
        Engine::Commands => work.commands(),
    })
}

/// Writes the work of `only` (all shards when `None`) for the engine.
pub(super) fn write_work(
    args: &WorkArgs,
    file: &std::path::Path,
    plan: &crate::plan::PipelinePlan,
    shards: &[backfill::Shard],
    only: Option<&[usize]>,
) -> anyhow::Result<()> {
    let text = work_text(args, file, plan, shards, only)?;
    match &args.output {
        None => std::io::stdout().write_all(text.as_bytes())?,
        Some(out) => {
            std::fs::write(out, &text)
                .with_context(|| format!("cannot write {}", out.display()))?;
            if matches!(args.engine, Engine::Slurm) {
                std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o755))
                    .with_context(|| format!("cannot make {} executable", out.display()))?;
            }
        }
    }
    Ok(())
}

/// The checkpoint rows of the shards by `(database, key)`.
async fn checkpoint_rows(
    sinks: &[backfill::PgSink],
    shards: &[backfill::Shard],
) -> anyhow::Result<std::collections::BTreeMap<(String, String), backfill::CheckpointRow>> {
    let mut rows = std::collections::BTreeMap::new();
    for (url, ids) in backfill::by_database(sinks, shards) {
        let names: Vec<&str> = sinks
            .iter()
            .filter(|s| s.url == url)
            .map(|s| s.component.as_str())
            .collect();
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .with_context(|| {
                format!("cannot reach the database of sink(s) {}", names.join(", "))
            })?;
        tokio::spawn(connection);
        // A database no sink of this version has opened yet has no epoch column: 0 there.
        let found = client
            .query(
                "SELECT sink_id, last_ledger, \
                 EXTRACT(EPOCH FROM now() - updated_at)::float8, \
                 COALESCE((to_jsonb(c) ->> 'epoch')::bigint, 0) \
                 FROM ttp_sink_checkpoints c WHERE sink_id = ANY($1)",
                &[&ids],
            )
            .await;
        let found = match found {
            Ok(found) => found,
            // No sink has written yet: every shard is missing.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                Vec::new()
            }
            Err(e) => anyhow::bail!("reading ttp_sink_checkpoints: {e}"),
        };
        for row in found {
            let id: String = row.get(0);
            let checkpoint = backfill::CheckpointRow {
                last_ledger: row.get(1),
                age_secs: row.get(2),
                epoch: row.get(3),
            };
            rows.insert((url.clone(), id), checkpoint);
        }
    }
    Ok(rows)
}

/// The shards with their states, read from the sinks' checkpoint rows (or, for a pipeline
/// without PostgreSQL sinks, from the shards' chunk runs), and their chunk runs.
struct Reading {
    shards: Vec<backfill::Shard>,
    file: PathBuf,
    plan: crate::plan::PipelinePlan,
    states: Vec<backfill::ShardStatus>,
    /// Each shard's chunk run by shard index, where one is recorded.
    chunks: std::collections::BTreeMap<usize, flowctl_proto::flowctl::ChunkRun>,
}

fn read_states(
    range: &ShardArgs,
    checkpoints: &CheckpointArgs,
    records: &RecordArgs,
) -> anyhow::Result<Option<Reading>> {
    let Some(cut) = shards_and_plan(range)? else {
        return Ok(None);
    };
    let backfill = cut.backfill_id();
    let Cut {
        shards, file, plan, ..
    } = cut;
    let sinks = backfill::postgres_sinks(&plan, checkpoints.database_url.as_deref());
    let rt = runtime()?;
    let chunks = rt.block_on(async {
        let filter = crate::registry::chunks::ChunkFilter {
            pipeline_run_id: Some(backfill.clone()),
            ..Default::default()
        };
        // A status never makes a store where none was planned.
        let default_dir = crate::registry::server::default_state_dir();
        let unplanned = records.chunk_endpoint.is_none()
            && !records
                .state_dir
                .as_ref()
                .unwrap_or(&default_dir)
                .join(crate::registry::store::RUNS_DB)
                .exists();
        if unplanned {
            return Ok(Vec::new());
        }
        chunk_records(records).await?.all(&filter).await
    });
    let chunks: std::collections::BTreeMap<usize, _> = match chunks {
        Ok(chunks) => chunks
            .into_iter()
            .filter_map(|c| {
                let shard = crate::chunks::ShardChunk::of_record(&c)?;
                let index: usize = shard.shard.parse().ok()?;
                let planned = shards.get(index)?;
                // A chunk of another cut of the same range is not this shard's.
                (planned.from == shard.from && planned.to == shard.to).then_some((index, c))
            })
            .collect(),
        // The checkpoints still tell where the shards stand.
        Err(e) if !sinks.is_empty() => {
            crate::stderr_line!(
                "flowctl: warning: cannot read the chunk runs of backfill {backfill}: {e:#}"
            );
            Default::default()
        }
        Err(e) => {
            return Err(e.context(format!(
                "{}: no PostgreSQL sink (SINK: postgres) keeps checkpoints, and the chunk runs \
                 of backfill {backfill} cannot be read",
                range.file.display()
            )))
        }
    };
    let states = if sinks.is_empty() {
        backfill::chunk_states(&shards, &chunks, checkpoints.stalled_after)
    } else {
        let rows = rt.block_on(checkpoint_rows(&sinks, &shards))?;
        backfill::shard_states(
            &sinks,
            &shards,
            &rows,
            checkpoints.stalled_after.as_secs_f64(),
        )
    };
    Ok(Some(Reading {
        shards,
        file,
        plan,
        states,
        chunks,
    }))
}

/// A chunk run as a status cell: `completed#2` (its status and attempt).
fn chunk_cell(c: &flowctl_proto::flowctl::ChunkRun) -> String {
    format!(
        "{}#{}",
        crate::registry::chunks::status_word(c.status()),
        c.attempt
    )
}

fn status(args: StatusArgs) -> anyhow::Result<i32> {
    let Some(Reading {
        shards,
        states,
        chunks,
        ..
    }) = read_states(&args.range, &args.checkpoints, &args.records)?
    else {
        return Ok(1);
    };
    let count = |state| states.iter().filter(|s| s.state == state).count();
    let summary = format!(
        "{} done, {} running, {} stalled, {} failed, {} missing (of {} shards)",
        count(backfill::ShardState::Done),
        count(backfill::ShardState::Running),
        count(backfill::ShardState::Stalled),
        count(backfill::ShardState::Failed),
        count(backfill::ShardState::Missing),
        shards.len()
    );
    match args.output {
        super::list::Output::Json => {
            let items: Vec<_> = states
                .iter()
                .map(|s| {
                    let chunk = chunks.get(&s.shard.index);
                    serde_json::json!({
                        "shard": s.shard.index, "from_ledger": s.shard.from,
                        "to_ledger": s.shard.to, "state": s.state.word(),
                        "checkpoint": s.checkpoint, "checkpoint_age_secs": s.age_secs,
                        "epoch": s.epoch,
                        "chunk_id": chunk.map(|c| c.chunk_id.clone()),
                        "chunk_status": chunk.map(|c| crate::registry::chunks::status_word(c.status())),
                        "chunk_attempt": chunk.map(|c| c.attempt),
                        "chunk_failure": chunk
                            .filter(|c| c.failure_class != 0)
                            .map(|c| crate::registry::chunks::failure_word(c.failure_class())),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
        super::list::Output::Table => {
            let rows: Vec<Vec<String>> = states
                .iter()
                .map(|s| {
                    vec![
                        s.shard.index.to_string(),
                        format!("{}-{}", s.shard.from, s.shard.to),
                        s.state.word().to_string(),
                        s.checkpoint.map(|c| c.to_string()).unwrap_or_default(),
                        s.age_secs.map(|a| format!("{a:.0}s")).unwrap_or_default(),
                        s.epoch.map(|e| e.to_string()).unwrap_or_default(),
                        chunks
                            .get(&s.shard.index)
                            .map(chunk_cell)
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            super::list::print_table(
                &[
                    "SHARD",
                    "RANGE",
                    "STATE",
                    "CHECKPOINT",
                    "AGE",
                    "EPOCH",
                    "CHUNK",
                ],
                &rows,
            );
            println!("{summary}");
        }
    }
    Ok(0)
}

fn reconcile(args: ReconcileArgs) -> anyhow::Result<i32> {
    if args.submit && (!matches!(args.work.engine, Engine::Slurm) || args.work.output.is_none()) {
        anyhow::bail!("--submit hands a script to sbatch: give --engine slurm and -o OUT");
    }
    let Some(reading) = read_states(&args.range, &args.checkpoints, &args.work.records)? else {
        return Ok(1);
    };
    let left: Vec<usize> = reading
        .states
        .iter()
        .filter(|s| {
            matches!(
                s.state,
                backfill::ShardState::Missing
                    | backfill::ShardState::Stalled
                    | backfill::ShardState::Failed
            )
        })
        .map(|s| s.shard.index)
        .collect();
    let running = reading
        .states
        .iter()
        .filter(|s| s.state == backfill::ShardState::Running)
        .count();
    if left.is_empty() {
        crate::stderr_line!(
            "flowctl: nothing to run again: {} of {} shards done, {running} running",
            reading.shards.len() - running,
            reading.shards.len()
        );
        return Ok(0);
    }
    write_work(
        &args.work,
        &reading.file,
        &reading.plan,
        &reading.shards,
        Some(&left),
    )?;
    crate::stderr_line!(
        "flowctl: {} of {} shards to run again ({running} running left alone)",
        left.len(),
        reading.shards.len()
    );
    if args.submit {
        submit(args.work.output.as_ref().expect("checked above"))?;
    }
    Ok(0)
}

/// Hands a written script to `sbatch`, printing the job id it answers.
pub(super) fn submit(script: &std::path::Path) -> anyhow::Result<()> {
    let out = std::process::Command::new("sbatch")
        .arg("--parsable")
        .arg(script)
        .output()
        .context("cannot run sbatch (is Slurm's client installed and on PATH?)")?;
    if !out.status.success() {
        anyhow::bail!(
            "sbatch {} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
    Ok(())
}
