//! `flowctl pipelines list|runs|get|stop`: pipeline run history and stopping a run.

use std::collections::BTreeMap;

use clap::{Args as ClapArgs, Subcommand};
use flowctl_proto::flowctl::{
    GetPipelineRunRequest, ListPipelineRunsRequest, PipelineRun, RunStatus, StopPipelineRunRequest,
};
use serde_json::json;

use super::list::{
    ago, block_on, print_table, rfc3339, short_duration, status_error, timestamp_time, Conn, Output,
};
use crate::registry::store::{parse_status_word, status_word};

#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    command: PipelinesCommand,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Subcommand)]
enum PipelinesCommand {
    /// Pipelines seen in the run history, with their latest run.
    List,
    /// Runs of one pipeline, newest first.
    Runs {
        /// The pipeline's metadata.name.
        name: String,
        /// How many runs to show.
        #[arg(long, default_value_t = 10)]
        limit: i32,
        /// Only runs in this status (starting, running, completed, failed, stopped).
        #[arg(long, value_parser = parse_status)]
        status: Option<RunStatus>,
    },
    /// One run in detail. A unique prefix of the run id is enough.
    Get { run_id: String },
    /// Stops a running pipeline run. A unique prefix of the run id is enough.
    Stop { run_id: String },
}

fn parse_status(s: &str) -> Result<RunStatus, String> {
    parse_status_word(&s.to_ascii_lowercase())
        .filter(|s| *s != RunStatus::Unknown)
        .ok_or_else(|| format!("{s:?} is not one of starting, running, completed, failed, stopped"))
}

impl Args {
    pub fn run(self) -> anyhow::Result<i32> {
        block_on(async move {
            match self.command {
                PipelinesCommand::List => list_pipelines(&self.conn).await,
                PipelinesCommand::Runs {
                    name,
                    limit,
                    status,
                } => {
                    let request = ListPipelineRunsRequest {
                        pipeline_name: name,
                        status: status.unwrap_or(RunStatus::Unknown) as i32,
                        limit,
                    };
                    let runs = self
                        .conn
                        .connect()
                        .await?
                        .v0
                        .list_pipeline_runs(request)
                        .await;
                    let answer = runs.map_err(status_error)?.into_inner();
                    note_truncated(answer.truncated, answer.runs.len());
                    print_runs(&self.conn, &answer.runs)
                }
                PipelinesCommand::Get { run_id } => {
                    let run = self
                        .conn
                        .connect()
                        .await?
                        .v0
                        .get_pipeline_run(GetPipelineRunRequest { run_id })
                        .await;
                    print_run(&self.conn, &run.map_err(status_error)?.into_inner())
                }
                PipelinesCommand::Stop { run_id } => {
                    let run = self
                        .conn
                        .connect()
                        .await?
                        .v0
                        .stop_pipeline_run(StopPipelineRunRequest { run_id })
                        .await;
                    print_run(&self.conn, &run.map_err(status_error)?.into_inner())
                }
            }
        })
    }
}

/// Says on stderr, so tables and JSON on stdout stay whole, that older runs were left out.
fn note_truncated(truncated: bool, shown: usize) {
    if truncated {
        eprintln!(
            "note: more runs exist; only the newest {shown} fit in one answer from the registry"
        );
    }
}

/// How many runs of history `list` looks at.
const HISTORY: i32 = 1000;

/// Pipeline names with their latest run, from the run history.
pub async fn list_pipelines(conn: &Conn) -> anyhow::Result<i32> {
    let request = ListPipelineRunsRequest {
        pipeline_name: String::new(),
        status: 0,
        limit: HISTORY,
    };
    let answer = conn
        .connect()
        .await?
        .v0
        .list_pipeline_runs(request)
        .await
        .map_err(status_error)?
        .into_inner();
    note_truncated(answer.truncated, answer.runs.len());
    let runs = answer.runs;
    // Runs come newest first, so the first one seen per name is the latest.
    let mut pipelines: BTreeMap<String, (PipelineRun, usize)> = BTreeMap::new();
    for run in runs {
        pipelines
            .entry(run.pipeline_name.clone())
            .or_insert_with(|| (run, 0))
            .1 += 1;
    }
    match conn.output {
        Output::Json => {
            let items: Vec<_> = pipelines
                .values()
                .map(|(latest, count)| json!({"name": latest.pipeline_name, "runs": count, "latest_run": run_json(latest)}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&items)?);
        }
        Output::Table => {
            if pipelines.is_empty() {
                println!("no pipeline runs recorded");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = pipelines
                .values()
                .map(|(latest, count)| {
                    vec![
                        latest.pipeline_name.clone(),
                        status_word(latest.status()).to_string(),
                        short_id(&latest.run_id),
                        latest.start_time.as_ref().map(ago).unwrap_or_default(),
                        count.to_string(),
                    ]
                })
                .collect();
            print_table(
                &["PIPELINE", "STATUS", "LATEST RUN", "STARTED", "RUNS"],
                &rows,
            );
        }
    }
    Ok(0)
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

fn duration(run: &PipelineRun) -> String {
    let Some(start) = run.start_time.as_ref().map(timestamp_time) else {
        return String::new();
    };
    let end = run
        .end_time
        .as_ref()
        .map(timestamp_time)
        .unwrap_or_else(std::time::SystemTime::now);
    short_duration(end.duration_since(start).unwrap_or_default())
}

pub fn run_json(run: &PipelineRun) -> serde_json::Value {
    let m = run.metrics.clone().unwrap_or_default();
    let components: BTreeMap<_, _> = m
        .component_metrics
        .iter()
        .map(|(id, c)| {
            (
                id.clone(),
                json!({
                    "events_in": c.events_in, "events_out": c.events_out,
                    "bytes_in": c.bytes_in, "bytes_out": c.bytes_out,
                    "processing_time_ms": c.processing_time_ms,
                }),
            )
        })
        .collect();
    json!({
        "run_id": run.run_id,
        "pipeline_id": run.pipeline_id,
        "pipeline_name": run.pipeline_name,
        "status": status_word(run.status()),
        "start_time": run.start_time.as_ref().map(rfc3339),
        "end_time": run.end_time.as_ref().map(rfc3339),
        "error": run.error,
        "component_ids": run.component_ids,
        "from_ledger": (run.from_ledger > 0).then_some(run.from_ledger),
        "to_ledger": (run.to_ledger > 0).then_some(run.to_ledger),
        "last_ledger_done": (run.last_ledger_done > 0).then_some(run.last_ledger_done),
        "metrics": {
            "events_processed": m.events_processed,
            "events_per_second": m.events_per_second,
            "bytes_processed": m.bytes_processed,
            "components": components,
        },
        "config_yaml": run.config_yaml,
    })
}

fn print_runs(conn: &Conn, runs: &[PipelineRun]) -> anyhow::Result<i32> {
    match conn.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&runs.iter().map(run_json).collect::<Vec<_>>())?
        ),
        Output::Table => {
            if runs.is_empty() {
                println!("no runs");
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = runs
                .iter()
                .map(|r| {
                    vec![
                        short_id(&r.run_id),
                        r.pipeline_name.clone(),
                        status_word(r.status()).to_string(),
                        r.start_time.as_ref().map(ago).unwrap_or_default(),
                        duration(r),
                        range_text(r),
                        done_text(r),
                        r.metrics
                            .as_ref()
                            .map(|m| m.events_processed)
                            .unwrap_or(0)
                            .to_string(),
                        r.error.clone(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "RUN", "PIPELINE", "STATUS", "STARTED", "DURATION", "RANGE", "DONE", "EVENTS",
                    "ERROR",
                ],
                &rows,
            );
        }
    }
    Ok(0)
}

/// `A-B`, `A-` (following the tip) or empty for a run without a range.
fn range_text(run: &PipelineRun) -> String {
    match (run.from_ledger, run.to_ledger) {
        (0, _) => String::new(),
        (from, 0) => format!("{from}-"),
        (from, to) => format!("{from}-{to}"),
    }
}

/// The last ledger the sinks wrote, and of how many in a bounded range.
fn done_text(run: &PipelineRun) -> String {
    let done = run.last_ledger_done;
    match (run.from_ledger, run.to_ledger) {
        _ if done == 0 => String::new(),
        (from, to) if from > 0 && to >= from => {
            let count = u64::from(to - from) + 1;
            let written = u64::from(done.clamp(from - 1, to) - (from - 1));
            format!("{done} ({written}/{count})")
        }
        _ => done.to_string(),
    }
}

fn print_run(conn: &Conn, run: &PipelineRun) -> anyhow::Result<i32> {
    if let Output::Json = conn.output {
        println!("{}", serde_json::to_string_pretty(&run_json(run))?);
        return Ok(0);
    }
    let m = run.metrics.clone().unwrap_or_default();
    println!("Run:        {}", run.run_id);
    println!("Pipeline:   {}", run.pipeline_name);
    println!("Status:     {}", status_word(run.status()));
    println!(
        "Started:    {}",
        run.start_time.as_ref().map(rfc3339).unwrap_or_default()
    );
    if let Some(end) = &run.end_time {
        println!("Ended:      {}", rfc3339(end));
    }
    println!("Duration:   {}", duration(run));
    if run.from_ledger > 0 {
        println!("Range:      {}", range_text(run));
        println!("Done:       {}", done_text(run));
    }
    if !run.error.is_empty() {
        println!("Error:      {}", run.error);
    }
    println!(
        "Events:     {} ({:.1}/s)",
        m.events_processed, m.events_per_second
    );
    println!("Bytes:      {}", m.bytes_processed);
    if !run.component_ids.is_empty() {
        println!("Components:");
        let rows: Vec<Vec<String>> = run
            .component_ids
            .iter()
            .map(|id| {
                let c = m.component_metrics.get(id).cloned().unwrap_or_default();
                vec![
                    format!("  {id}"),
                    c.events_in.to_string(),
                    c.events_out.to_string(),
                    c.bytes_in.to_string(),
                    c.bytes_out.to_string(),
                ]
            })
            .collect();
        print_table(
            &[
                "  COMPONENT",
                "EVENTS IN",
                "EVENTS OUT",
                "BYTES IN",
                "BYTES OUT",
            ],
            &rows,
        );
    }
    Ok(0)
}
