//! `flowctl get pipelines|services`: kubectl-style listing of what the registry knows.

use clap::{Args as ClapArgs, ValueEnum};

use super::list::{block_on, list_services, Conn};
use super::pipelines::list_pipelines;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Resource {
    /// Pipelines in the run history with their latest run (as `flowctl pipelines list`).
    Pipelines,
    /// Registered components (as `flowctl list`).
    Services,
}

#[derive(Debug, ClapArgs)]
pub struct Args {
    #[arg(value_enum)]
    resource: Resource,
    #[command(flatten)]
    conn: Conn,
}

impl Args {
    pub fn run(self) -> anyhow::Result<i32> {
        block_on(async move {
            match self.resource {
                Resource::Pipelines => list_pipelines(&self.conn).await,
                Resource::Services => list_services(&self.conn).await,
            }
        })
    }
}
