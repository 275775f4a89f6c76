//! `flowctl replay`: a bounded copy of a pipeline over a range of ledgers, beside the live
//! pipeline (`--pipeline NAME`, run by the daemon) or in the foreground (`-f FILE`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgGroup, Args};
use flowctl_proto::flowctl::v1::StartReplayRequest;
use flowctl_proto::flowctl::{GetPipelineRunRequest, PipelineRun, RunStatus};
use serde_json::json;

use super::list::{block_on, status_error, Conn, Output};
use super::run::{component_cgroups, run_plan, RegistryChoice, RunOptions};
use crate::logsink::StderrSink;
use crate::registry::client::RegistryClient;
use crate::registry::store::status_word;
use crate::replay::{self, ReplayRange};
use crate::spec::{self, ResolveOptions};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["file", "pipeline"])))]
pub struct ReplayArgs {
    /// Replay this pipeline file in the foreground, without a daemon (like `flowctl run`).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Ask the daemon to replay this installed pipeline beside the live one, as the instance
    /// NAME@FROM-TO with its own ports, processes and run record.
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,

    /// The first ledger of the range.
    #[arg(long, value_name = "LEDGER")]
    pub from_ledger: u32,

    /// The last ledger of the range, included.
    #[arg(long, value_name = "LEDGER")]
    pub to_ledger: u32,

    /// With --pipeline: follow the replay to its end; exit 0 only when it completed.
    #[arg(long, requires = "pipeline")]
    pub wait: bool,

    /// With -f: where the run history and dead letters are kept (as `flowctl run`).
    #[arg(long, value_name = "DIR", conflicts_with = "pipeline")]
    pub state_dir: Option<PathBuf>,

    /// With -f: directory of the control socket (as `flowctl run`).
    #[arg(long, value_name = "DIR", conflicts_with = "pipeline")]
    pub runtime_dir: Option<PathBuf>,

    /// With -f: process groups only, no cgroups (as `flowctl run`).
    #[arg(long, conflicts_with = "pipeline")]
    pub no_cgroups: bool,

    #[command(flatten)]
    pub conn: Conn,
}

pub fn run(args: ReplayArgs) -> anyhow::Result<i32> {
    let range = match ReplayRange::new(args.from_ledger, args.to_ledger) {
        Ok(range) => range,
        Err(e) => anyhow::bail!("--from-ledger/--to-ledger: {e}"),
    };
    match (&args.file, &args.pipeline) {
        (Some(file), _) => foreground(file, range, &args, Vec::new()),
        (None, Some(pipeline)) => {
            let pipeline = pipeline.clone();
            block_on(async move {
                let mut client = args.conn.connect().await?;
                let started = start(&mut client, &pipeline, range, Vec::new()).await?;
                follow(&mut client, &args.conn, &started, args.wait).await
            })
        }
        (None, None) => unreachable!("clap requires -f or --pipeline"),
    }
}

/// Runs the copy of the pipeline in `file` over `range` in the foreground, as `flowctl run`
/// does; `resolves` are dead letters to resolve when it completes.
pub fn foreground(
    file: &std::path::Path,
    range: ReplayRange,
    args: &ReplayArgs,
    resolves: Vec<String>,
) -> anyhow::Result<i32> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => anyhow::bail!("{}: cannot read the pipeline file: {e}", file.display()),
    };
    foreground_text(file, &text, range, args, resolves)
}

/// [`foreground`] of pipeline text already read (a run record's), named `file` in messages.
pub fn foreground_text(
    file: &std::path::Path,
    text: &str,
    range: ReplayRange,
    args: &ReplayArgs,
    resolves: Vec<String>,
) -> anyhow::Result<i32> {
    crate::supervisor::fdlimit::raise();
    let parsed = spec::parse_str(file, text).and_then(|mut pipeline| {
        pipeline.name = replay::instance_name(&pipeline.name, range);
        let options = ResolveOptions {
            range: Some(range.into()),
            replay_copy: true,
            ..Default::default()
        };
        let notices = std::mem::take(&mut pipeline.notices);
        spec::resolve(&pipeline, &options).map(|plan| (plan, notices))
    });
    let (plan, notices) = match parsed {
        Ok(loaded) => loaded,
        Err(diags) => {
            for d in &diags {
                crate::stderr_line!("{d}");
            }
            return Ok(1);
        }
    };
    for notice in &notices {
        crate::stderr_line!("{notice}");
    }
    run_plan(
        plan,
        RunOptions {
            runtime_dir: args.runtime_dir.clone(),
            registry: match &args.conn.endpoint {
                Some(endpoint) => RegistryChoice::Remote(endpoint.clone()),
                None => RegistryChoice::InProcess {
                    state_dir: args.state_dir.clone(),
                },
            },
            log_sink: Arc::new(StderrSink),
            cgroups: component_cgroups(!args.no_cgroups),
            must_complete: true,
            resolve_dead_letters: resolves,
            chunk: None,
        },
    )
}

/// A replay the daemon started.
pub struct Started {
    pub run_id: String,
    pub instance: String,
}

/// Asks the daemon's control plane for the replay.
pub async fn start(
    client: &mut RegistryClient,
    pipeline: &str,
    range: ReplayRange,
    resolves: Vec<String>,
) -> anyhow::Result<Started> {
    let answer = client
        .replay
        .start_replay(StartReplayRequest {
            pipeline: pipeline.to_string(),
            from_ledger: range.from,
            to_ledger: range.to,
            resolve_dead_letters: resolves,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    Ok(Started {
        run_id: answer.run_id,
        instance: answer.instance,
    })
}

/// Says the replay started; with `wait`, follows its run to the end: 0 when it completed.
pub async fn follow(
    client: &mut RegistryClient,
    conn: &Conn,
    started: &Started,
    wait: bool,
) -> anyhow::Result<i32> {
    let Started { run_id, instance } = started;
    if !wait {
        match conn.output {
            Output::Json => println!("{}", json!({"run_id": run_id, "instance": instance})),
            Output::Table => println!(
                "replay {instance} started: run {run_id} (follow it with `flowctl pipelines get {run_id}`)"
            ),
        }
        return Ok(0);
    }
    eprintln!("flowctl: replay {instance} started: run {run_id}");
    let run = wait_for_end(client, run_id, instance).await?;
    let code = match run.status() {
        RunStatus::Completed | RunStatus::CompletedWithDeadLetters => 0,
        _ => 1,
    };
    match conn.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&super::pipelines::run_json(&run))?
        ),
        Output::Table => {
            let events = run.metrics.as_ref().map_or(0, |m| m.events_processed);
            let mut line = format!(
                "replay {instance} {}: {events} event(s)",
                status_word(run.status())
            );
            if !run.error.is_empty() {
                line.push_str(&format!("; {}", run.error));
            }
            println!("{line}");
        }
    }
    if run.status() == RunStatus::CompletedWithDeadLetters {
        eprintln!(
            "flowctl: list its dead letters with `flowctl dlq ls --pipeline {}`",
            replay::base_name(instance)
        );
    }
    Ok(code)
}

/// Polls the run until it is over, saying on stderr how far it got when that changes.
async fn wait_for_end(
    client: &mut RegistryClient,
    run_id: &str,
    instance: &str,
) -> anyhow::Result<PipelineRun> {
    let mut shown = 0;
    loop {
        let run = client
            .v0
            .get_pipeline_run(GetPipelineRunRequest {
                run_id: run_id.to_string(),
            })
            .await
            .map_err(status_error)?
            .into_inner();
        match run.status() {
            RunStatus::Starting | RunStatus::Running | RunStatus::Unknown => {}
            _ => return Ok(run),
        }
        if run.last_ledger_done > shown {
            shown = run.last_ledger_done;
            eprintln!("flowctl: {instance}: through ledger {shown}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
