//! `flowctl run FILE`: one pipeline in the foreground.
//!
//! Prints where its control socket is, stops gracefully (drain order) on Ctrl-C or SIGTERM,
//! exits 0 when every component finished well and 1 when one failed for good, naming it and
//! saying why.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::api;
use crate::logsink::{LogSink, StderrSink};
use crate::plan::PipelinePlan;
use crate::spec::{self, ResolveOptions};
use crate::supervisor::{RunSummary, Supervisor, SupervisorOptions};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Directory of the control socket (`DIR/flowctl.sock`) and the components' notify
    /// sockets. Default: /run/flowctl for root, $XDG_RUNTIME_DIR/flowctl otherwise.
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,

    /// Control plane address given to components as FLOWCTL_ENDPOINT (without it they are
    /// told ENABLE_FLOWCTL=false).
    #[arg(long, value_name = "HOST:PORT")]
    pub endpoint: Option<String>,
}

/// Loads the file (every problem reported as `FILE:LINE:COL: error: …`) and runs it.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let loaded = match spec::load_plan(&args.file, &ResolveOptions::default()) {
        Ok(loaded) => loaded,
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            return Ok(1);
        }
    };
    for notice in &loaded.notices {
        eprintln!("{notice}");
    }
    run_plan(
        loaded.plan,
        RunOptions {
            runtime_dir: args.runtime_dir,
            endpoint: args.endpoint,
            log_sink: Arc::new(StderrSink),
        },
    )
}

/// How `flowctl run` runs a pipeline.
pub struct RunOptions {
    /// `--runtime-dir`: the control socket is `DIR/flowctl.sock` (default: per user).
    pub runtime_dir: Option<PathBuf>,
    /// Control plane address given to components as `FLOWCTL_ENDPOINT`.
    pub endpoint: Option<String>,
    pub log_sink: Arc<dyn LogSink>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            runtime_dir: None,
            endpoint: None,
            log_sink: Arc::new(StderrSink),
        }
    }
}

/// Runs `plan` until it is done or stopped, on a current-thread runtime: every child is
/// forked from this one long-lived thread, which its parent-death signal is tied to.
pub fn run_plan(plan: PipelinePlan, options: RunOptions) -> anyhow::Result<i32> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(run_plan_async(plan, options))
}

/// [`run_plan`] on the caller's runtime.
pub async fn run_plan_async(plan: PipelinePlan, options: RunOptions) -> anyhow::Result<i32> {
    let runtime_dir = api::socket::runtime_dir(options.runtime_dir.as_deref())?;
    let socket = api::socket::socket_path(&runtime_dir);
    let listener = api::socket::bind(&socket)?;
    let name = plan.name.clone();
    let mut sup_options = SupervisorOptions::new(&runtime_dir);
    sup_options.endpoint = options.endpoint;
    sup_options.log_sink = options.log_sink;
    sup_options.exit_when_done = true;
    sup_options.stop_on_failure = true;
    let (supervisor, handle) = Supervisor::new(vec![plan], sup_options)?;
    let server = tokio::spawn(api::server::serve(listener, handle.clone()));
    eprintln!(
        "flowctl: running pipeline `{name}`; control socket {} (flowctl-sup --socket {} status)",
        socket.display(),
        socket.display()
    );

    let stop = handle.clone();
    let signals = tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            let which = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            eprintln!("flowctl: {which}: stopping pipeline `{name}` (sources first)");
            stop.shutdown();
        }
    });

    let summary = supervisor.run().await;
    signals.abort();
    server.abort();
    let _ = std::fs::remove_file(&socket);
    Ok(report(&summary?))
}

/// Says what failed and picks the exit code.
fn report(summary: &RunSummary) -> i32 {
    let mut code = 0;
    for failed in summary.failed() {
        code = 1;
        eprintln!(
            "flowctl: component `{}` of pipeline `{}` failed: {}",
            failed.id,
            failed.pipeline,
            failed.reason.as_deref().unwrap_or("no reason recorded")
        );
    }
    code
}
