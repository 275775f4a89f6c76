//! `flowctl backfill plan`: a long range cut into shards, written as work for an engine that
//! places it (an `sbatch --array` script for Slurm, or one shell command per shard).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgGroup, Args as ClapArgs, Subcommand, ValueEnum};

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
    /// checkpoint moved in the last minute), stalled, or missing.
    Status(StatusArgs),
}

/// The range and how it is cut: the same for `plan` and `status`.
#[derive(Debug, ClapArgs)]
#[command(group(ArgGroup::new("size").required(true).args(["shards", "shard_size"])))]
struct ShardArgs {
    /// The pipeline file every shard runs.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
    #[arg(long, value_name = "LEDGER")]
    from_ledger: u32,
    /// The last ledger, included.
    #[arg(long, value_name = "LEDGER")]
    to_ledger: u32,
    /// About this many shards (make many more than hosts: a slow or lost host costs little).
    #[arg(long, value_name = "N")]
    shards: Option<u32>,
    /// Shards of this many ledgers (rounded up to a multiple of 64).
    #[arg(long, value_name = "K")]
    shard_size: Option<u32>,
}

#[derive(Debug, ClapArgs)]
struct PlanArgs {
    #[command(flatten)]
    range: ShardArgs,
    #[arg(long, value_enum, default_value = "slurm")]
    engine: Engine,
    /// Where each shard records its run (`flowctl run --state-dir`); default: each host's.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Write here (the Slurm script made executable) instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: Option<PathBuf>,
}

#[derive(Debug, ClapArgs)]
struct StatusArgs {
    #[command(flatten)]
    range: ShardArgs,
    /// The PostgreSQL sinks' database (default: each sink's DATABASE_URL in the file).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: super::list::Output,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Engine {
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
        }
    }
}

/// The shards of the range and the pipeline as its first shard resolves it; `Err(1)`-style
/// problems are printed and answered with `None`.
fn shards_and_plan(
    args: &ShardArgs,
) -> anyhow::Result<Option<(Vec<backfill::Shard>, PathBuf, crate::plan::PipelinePlan)>> {
    let sizing = match (args.shards, args.shard_size) {
        (Some(n), _) => Sizing::Count(n),
        (None, Some(k)) => Sizing::Ledgers(k),
        (None, None) => unreachable!("clap requires --shards or --shard-size"),
    };
    let shards = match backfill::shards(args.from_ledger, args.to_ledger, sizing) {
        Ok(shards) => shards,
        Err(e) => {
            crate::stderr_line!("flowctl: {e}");
            return Ok(None);
        }
    };
    // Every shard must resolve: check the file once, as its first shard will run it.
    let file = std::path::absolute(&args.file)
        .with_context(|| format!("{}: cannot make the path absolute", args.file.display()))?;
    let first = shards[0];
    let options = ResolveOptions {
        range: Some(crate::plan::LedgerRange {
            from: first.from,
            to: Some(first.to),
        }),
        shard_id: Some("0".into()),
        ..Default::default()
    };
    match spec::load_plan(&file, &options) {
        Ok(loaded) => Ok(Some((shards, file, loaded.plan))),
        Err(diags) => {
            for d in &diags {
                crate::stderr_line!("{d}");
            }
            Ok(None)
        }
    }
}

fn plan(args: PlanArgs) -> anyhow::Result<i32> {
    let Some((shards, file, plan)) = shards_and_plan(&args.range)? else {
        return Ok(1);
    };
    // The flowctl that wrote the plan runs it, where it is installed the same on every host.
    let flowctl = std::env::current_exe()
        .ok()
        .filter(|p| p.starts_with("/usr"))
        .map_or_else(|| "flowctl".to_string(), |p| p.display().to_string());
    let file = file.display().to_string();
    let state_dir = args.state_dir.as_ref().map(|d| d.display().to_string());
    let work = backfill::Work {
        flowctl: &flowctl,
        file: &file,
        state_dir: state_dir.as_deref(),
        plan: &plan,
        shards: &shards,
    };
    let text = match args.engine {
        Engine::Slurm => work.slurm(),
        Engine::Commands => work.commands(),
    };
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
    crate::stderr_line!(
        "flowctl: {} shard(s) of `{}`, ledgers {}-{}",
        shards.len(),
        plan.name,
        args.range.from_ledger,
        args.range.to_ledger
    );
    Ok(0)
}

/// The checkpoint rows of the shards, `(database, key) → (last ledger, age in seconds)`.
async fn checkpoint_rows(
    sinks: &[backfill::PgSink],
    shards: &[backfill::Shard],
) -> anyhow::Result<std::collections::BTreeMap<(String, String), (i64, f64)>> {
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
        let found = client
            .query(
                "SELECT sink_id, last_ledger, \
                 EXTRACT(EPOCH FROM now() - updated_at)::float8 \
                 FROM ttp_sink_checkpoints WHERE sink_id = ANY($1)",
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
            let last: i64 = row.get(1);
            let age: f64 = row.get(2);
            rows.insert((url.clone(), id), (last, age));
        }
    }
    Ok(rows)
}

/// A shard's checkpoint moved this recently: it is running.
const RUNNING_WITHIN_SECS: f64 = 60.0;

fn status(args: StatusArgs) -> anyhow::Result<i32> {
    let Some((shards, _, plan)) = shards_and_plan(&args.range)? else {
        return Ok(1);
    };
    let sinks = backfill::postgres_sinks(&plan, args.database_url.as_deref());
    if sinks.is_empty() {
        anyhow::bail!(
            "{}: no PostgreSQL sink (SINK: postgres) keeps checkpoints to read the shards from",
            args.range.file.display()
        );
    }
    let rows = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(checkpoint_rows(&sinks, &shards))?;
    let states = backfill::shard_states(&sinks, &shards, &rows, RUNNING_WITHIN_SECS);
    let count = |state| states.iter().filter(|s| s.state == state).count();
    let summary = format!(
        "{} done, {} running, {} stalled, {} missing (of {} shards)",
        count(backfill::ShardState::Done),
        count(backfill::ShardState::Running),
        count(backfill::ShardState::Stalled),
        count(backfill::ShardState::Missing),
        shards.len()
    );
    match args.output {
        super::list::Output::Json => {
            let items: Vec<_> = states
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "shard": s.shard.index, "from_ledger": s.shard.from,
                        "to_ledger": s.shard.to, "state": s.state.word(),
                        "checkpoint": s.checkpoint, "checkpoint_age_secs": s.age_secs,
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
                    ]
                })
                .collect();
            super::list::print_table(&["SHARD", "RANGE", "STATE", "CHECKPOINT", "AGE"], &rows);
            println!("{summary}");
        }
    }
    Ok(0)
}
