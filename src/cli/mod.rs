//! The `flowctl` command line: one file per subcommand. Each subcommand parses its own flags
//! (a clap `Args` struct in its file) and returns the process exit code.

use clap::{Parser, Subcommand};

pub mod apply;
pub mod backfill;
pub mod chunk_work;
pub mod chunks;
pub mod delete;
pub mod dlq;
pub mod get;
pub mod list;
pub mod logs;
pub mod pipelines;
pub mod replay;
pub mod run;
pub mod server;
pub mod text;
pub mod validate;

#[derive(Debug, Parser)]
#[command(
    name = "flowctl",
    version,
    about = "Run and inspect Stellar data pipelines"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check pipeline files and print every problem as FILE:LINE:COL: error: MESSAGE.
    Validate(validate::ValidateArgs),
    /// Run one pipeline in the foreground until it finishes or Ctrl-C stops it.
    Run(run::RunArgs),
    /// Replay a range of ledgers: a bounded copy of a pipeline, beside the live one (daemon)
    /// or in the foreground (-f FILE).
    Replay(replay::ReplayArgs),
    /// Backfills: cut a long range into shards for an engine that places them (plan), see where
    /// each shard stands (status) and write the work of those not done (reconcile).
    Backfill(backfill::Args),
    /// Chunk runs, the records of bounded historical work (backfill shards, loaders'
    /// ranges): list, show ID, retry ID|--failed, verify ID|--run RUN.
    Chunks(chunks::Args),
    /// Show a component's output from the journal.
    Logs(logs::LogsArgs),
    /// Run the registry (control plane) alone, for components that run elsewhere.
    Server(server::Args),
    /// List the components registered with the registry.
    List(list::Args),
    /// Pipeline run history: list, runs NAME, get RUN_ID, stop RUN_ID.
    Pipelines(pipelines::Args),
    /// Dead letters: the ledgers components set aside (ls, show ID, purge).
    Dlq(dlq::Args),
    /// Show a kind of resource: pipelines or services.
    Get(get::Args),
    /// Install a pipeline file into the running daemon (validate, write, reload).
    Apply(apply::ApplyArgs),
    /// Remove a pipeline from the running daemon (drained and stopped).
    Delete(delete::DeleteArgs),
}

impl Command {
    /// Runs the subcommand and returns the process exit code.
    pub fn run(self) -> anyhow::Result<i32> {
        match self {
            Command::Validate(args) => validate::run(args),
            Command::Run(args) => run::run(args),
            Command::Replay(args) => replay::run(args),
            Command::Backfill(args) => args.run(),
            Command::Logs(a) => a.run(),
            Command::Server(args) => args.run(),
            Command::List(args) => args.run(),
            Command::Pipelines(args) => args.run(),
            Command::Dlq(args) => args.run(),
            Command::Chunks(args) => args.run(),
            Command::Get(args) => args.run(),
            Command::Apply(args) => apply::run(args),
            Command::Delete(args) => delete::run(args),
        }
    }
}
