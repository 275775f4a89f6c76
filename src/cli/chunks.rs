//! `flowctl chunks list|show|retry|verify`: chunk runs, over the registry or straight from a
//! state dir's store.

use std::path::PathBuf;

use clap::{Args as ClapArgs, Subcommand};
use flowctl_proto::flowctl::{ChunkRun, ChunkStatus};
use serde_json::json;

use super::list::{ago, block_on, print_table, rfc3339, Conn, Output};
use crate::chunks::Records;
use crate::registry::chunks::{failure_word, parse_status_word, status_word, ChunkFilter};
use crate::registry::store::RUNS_DB;

#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: ChunksCommand,
    #[command(flatten)]
    conn: Conn,
    /// Read and change the store in this state dir directly instead of asking the registry.
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ChunksCommand {
    /// Chunk runs by chunk start, then attempt.
    List {
        /// Only this run's (a unique prefix of its id is enough).
        #[arg(long, value_name = "RUN")]
        run: Option<String>,
        /// Only this component's.
        #[arg(long, value_name = "ID")]
        component: Option<String>,
        /// Only those in this status (planned, dispatched, running, completed, verified,
        /// failed, retry-pending, aborted).
        #[arg(long, value_parser = parse_status)]
        status: Option<ChunkStatus>,
        /// How many to show (at most 1000 a page).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Every matching chunk, page after page.
        #[arg(long)]
        all: bool,
    },
    /// One chunk run in detail.
    Show { id: String },
    /// Mark failed chunks retry_pending and write their shards' work again.
    Retry(super::chunk_work::RetryArgs),
    /// Check completed shards' rows in their PostgreSQL sinks: verified, or failed.
    Verify(super::chunk_work::VerifyArgs),
}

fn parse_status(s: &str) -> Result<ChunkStatus, String> {
    parse_status_word(s)
        .filter(|s| *s != ChunkStatus::Unknown)
        .ok_or_else(|| {
            format!(
                "{s:?} is not one of planned, dispatched, running, completed, verified, failed, \
                 retry-pending, aborted"
            )
        })
}

impl Args {
    pub fn run(self) -> anyhow::Result<i32> {
        block_on(async move {
            let records = match &self.state_dir {
                Some(dir) => {
                    if !dir.join(RUNS_DB).exists() {
                        anyhow::bail!("{} holds no run store ({RUNS_DB})", dir.display());
                    }
                    Records::store(dir)?
                }
                None => Records::Remote(Box::new(self.conn.connect().await?)),
            };
            let output = self.conn.output;
            match self.command {
                ChunksCommand::List {
                    run,
                    component,
                    status,
                    limit,
                    all,
                } => {
                    let filter = ChunkFilter {
                        pipeline_run_id: run,
                        component_id: component,
                        status,
                        limit,
                        page_token: None,
                    };
                    list(records, filter, all, output).await
                }
                ChunksCommand::Show { id } => show(records, &id, output).await,
                ChunksCommand::Retry(args) => super::chunk_work::retry(records, args).await,
                ChunksCommand::Verify(args) => super::chunk_work::verify(records, args).await,
            }
        })
    }
}

async fn list(
    mut records: Records,
    filter: ChunkFilter,
    all: bool,
    output: Output,
) -> anyhow::Result<i32> {
    let (chunks, more) = if all {
        (records.all(&filter).await?, false)
    } else {
        let page = records.page(&filter).await?;
        let more = !page.next_page_token.is_empty();
        (page.chunks, more)
    };
    if more {
        eprintln!(
            "note: more chunk runs match; {} shown (--limit N, or --all)",
            chunks.len()
        );
    }
    match output {
        Output::Json => {
            let items: Vec<_> = chunks.iter().map(chunk_json).collect();
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
        Output::Table => {
            if chunks.is_empty() {
                println!("no chunk runs");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = chunks
                .iter()
                .map(|c| {
                    vec![
                        c.chunk_id.clone(),
                        c.pipeline_run_id.clone(),
                        c.component_id.clone(),
                        format!("{}-{}", c.chunk_start, c.chunk_end),
                        c.attempt.to_string(),
                        status_word(c.status()).to_string(),
                        failure(c),
                        if c.phase.is_empty() {
                            "-".into()
                        } else {
                            c.phase.clone()
                        },
                        c.row_counts.values().sum::<i64>().to_string(),
                        c.updated_at.as_ref().map(ago).unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "CHUNK ID",
                    "RUN",
                    "COMPONENT",
                    "RANGE",
                    "ATTEMPT",
                    "STATUS",
                    "FAILURE",
                    "PHASE",
                    "ROWS",
                    "AGE",
                ],
                &rows,
            );
        }
    }
    Ok(0)
}

fn failure(c: &ChunkRun) -> String {
    match c.failure_class {
        0 => "-".into(),
        _ => failure_word(c.failure_class()).into(),
    }
}

fn sorted<V: Clone>(map: &std::collections::HashMap<String, V>) -> Vec<(String, V)> {
    let mut v: Vec<(String, V)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn chunk_json(c: &ChunkRun) -> serde_json::Value {
    let time = |t: &Option<prost_types::Timestamp>| t.as_ref().map(rfc3339);
    json!({
        "chunk_id": c.chunk_id,
        "pipeline_run_id": c.pipeline_run_id,
        "component_id": c.component_id,
        "chunk_start": c.chunk_start,
        "chunk_end": c.chunk_end,
        "attempt": c.attempt,
        "status": status_word(c.status()),
        "failure_class": failure_word(c.failure_class()),
        "phase": c.phase,
        "error": c.error,
        "recommended_action": c.recommended_action,
        "started_at": time(&c.started_at),
        "completed_at": time(&c.completed_at),
        "verified_at": time(&c.verified_at),
        "updated_at": time(&c.updated_at),
        "row_counts": c.row_counts,
        "verification": c.verification,
        "metadata": c.metadata,
    })
}

async fn show(mut records: Records, id: &str, output: Output) -> anyhow::Result<i32> {
    let Some(c) = records.get(id).await? else {
        anyhow::bail!("no chunk run {id:?}");
    };
    if matches!(output, Output::Json) {
        println!("{}", serde_json::to_string_pretty(&chunk_json(&c))?);
        return Ok(0);
    }
    let esc = super::text::escape;
    println!("Chunk ID:      {}", esc(&c.chunk_id));
    println!("Run ID:        {}", esc(&c.pipeline_run_id));
    println!("Component:     {}", esc(&c.component_id));
    println!("Range:         {}-{}", c.chunk_start, c.chunk_end);
    println!("Attempt:       {}", c.attempt);
    println!("Status:        {}", status_word(c.status()));
    println!("Phase:         {}", esc(&c.phase));
    if c.failure_class != 0 {
        println!("Failure:       {}", failure_word(c.failure_class()));
    }
    if !c.error.is_empty() {
        println!("Error:         {}", esc(&c.error));
    }
    if !c.recommended_action.is_empty() {
        println!("Next action:   {}", esc(&c.recommended_action));
    }
    for (label, t) in [
        ("Started:       ", &c.started_at),
        ("Completed:     ", &c.completed_at),
        ("Verified:      ", &c.verified_at),
        ("Updated:       ", &c.updated_at),
    ] {
        if let Some(t) = t {
            println!("{label}{}", rfc3339(t));
        }
    }
    for (title, pairs) in [
        (
            "Row counts",
            sorted(&c.row_counts)
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect::<Vec<_>>(),
        ),
        ("Verification", sorted(&c.verification)),
        ("Metadata", sorted(&c.metadata)),
    ] {
        if !pairs.is_empty() {
            println!("\n{title}:");
            for (k, v) in pairs {
                println!("  {}: {}", esc(&k), esc(&v));
            }
        }
    }
    Ok(0)
}
