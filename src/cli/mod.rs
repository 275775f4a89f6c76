//! The `flowctl` command line: one file per subcommand. Each subcommand parses its own flags
//! (a clap `Args` struct in its file) and returns the process exit code.

pub mod logs;

use clap::{Parser, Subcommand};

pub mod run;
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
    /// Show a component's output from the journal.
    Logs(logs::LogsArgs),
}

impl Command {
    /// Runs the subcommand and returns the process exit code.
    pub fn run(self) -> anyhow::Result<i32> {
        match self {
            Command::Validate(args) => validate::run(args),
            Command::Logs(a) => a.run(),
        }
    }
}
