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
}

#[derive(Debug, ClapArgs)]
#[command(group(ArgGroup::new("size").required(true).args(["shards", "shard_size"])))]
struct PlanArgs {
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
    #[arg(long, value_enum, default_value = "slurm")]
    engine: Engine,
    /// Where each shard records its run (`flowctl run --state-dir`); default: each host's.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Write here (the Slurm script made executable) instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: Option<PathBuf>,
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
        }
    }
}

fn plan(args: PlanArgs) -> anyhow::Result<i32> {
    let sizing = match (args.shards, args.shard_size) {
        (Some(n), _) => Sizing::Count(n),
        (None, Some(k)) => Sizing::Ledgers(k),
        (None, None) => unreachable!("clap requires --shards or --shard-size"),
    };
    let shards = match backfill::shards(args.from_ledger, args.to_ledger, sizing) {
        Ok(shards) => shards,
        Err(e) => {
            crate::stderr_line!("flowctl: {e}");
            return Ok(1);
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
    let loaded = match spec::load_plan(&file, &options) {
        Ok(loaded) => loaded,
        Err(diags) => {
            for d in &diags {
                crate::stderr_line!("{d}");
            }
            return Ok(1);
        }
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
        plan: &loaded.plan,
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
        loaded.plan.name,
        args.from_ledger,
        args.to_ledger
    );
    Ok(0)
}
