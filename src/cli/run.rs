//! `flowctl run FILE`: one pipeline in the foreground.
//!
//! Prints where its control socket is, stops gracefully (drain order) on Ctrl-C or SIGTERM,
//! exits 0 when every component finished well and 1 when one failed for good or had to be
//! SIGKILLed after its stop timeout, naming it and saying why; 65 when the only failure is a
//! component that was fenced (a newer copy of its shard owns the work: this run is stale).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::api;
use crate::logsink::{LogSink, StderrSink};
use crate::plan::PipelinePlan;
use crate::registry::{self, embedded::EmbeddedRegistry};
use crate::spec::{self, ResolveOptions};
use crate::supervisor::{RunSummary, StateName, Supervisor, SupervisorOptions};
use crate::systemd::cgroup::CgroupTree;
use flowctl_proto::flowctl::RunStatus;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Directory of the control socket (`DIR/flowctl.sock`) and the components' notify
    /// sockets. Default: /run/flowctl for root, $XDG_RUNTIME_DIR/flowctl otherwise.
    #[arg(long, value_name = "DIR")]
    pub runtime_dir: Option<PathBuf>,

    /// Use this control plane (e.g. a `flowctl server`) instead of running one in-process;
    /// components get it as FLOWCTL_ENDPOINT.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "no_registry")]
    pub endpoint: Option<String>,

    /// Run no control plane: components are told ENABLE_FLOWCTL=false and `registered`
    /// checks cannot pass.
    #[arg(long)]
    pub no_registry: bool,

    /// Where the in-process control plane keeps run history (runs.sqlite3). Default:
    /// /var/lib/flowctl for root, $XDG_STATE_HOME/flowctl (~/.local/state/flowctl) otherwise.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Contain components in process groups only, without cgroups of their own (by default
    /// each component gets one when the host allows: a delegated or writable cgroup v2).
    #[arg(long)]
    pub no_cgroups: bool,

    /// Run the ledgers from this one on, instead of the file's `spec.range` (sources and sinks
    /// get it as START_LEDGER, unless their own env sets it).
    #[arg(long, value_name = "LEDGER")]
    pub from_ledger: Option<u32>,

    /// The last ledger of the run, included (END_LEDGER); without it the run follows the tip.
    #[arg(long, value_name = "LEDGER", requires = "from_ledger")]
    pub to_ledger: Option<u32>,

    /// This run is shard S of a backfill: the file's `${shard.id}` is S and the run is
    /// recorded as NAME@shard-S (letters, digits, `-`, `_`, `.`).
    #[arg(long, value_name = "S", requires = "to_ledger", value_parser = parse_shard_id)]
    pub shard_id: Option<String>,

    /// With --shard-id: the backfill the shard belongs to (`backfill plan` writes it). The run
    /// records itself as the chunk run BACKFILL/shard-S: running with the next attempt, then
    /// completed, failed (with a failure class) or aborted.
    #[arg(long, value_name = "ID", requires = "shard_id", value_parser = crate::chunks::parse_backfill_id)]
    pub backfill_id: Option<String>,

    /// Record the shard's chunk run with this control plane instead of the run's own (its
    /// in-process one, or --endpoint's).
    #[arg(long, value_name = "HOST:PORT", requires = "backfill_id")]
    pub chunk_endpoint: Option<String>,
}

fn parse_shard_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?}: a shard id is 1 to 64 letters, digits, `-`, `_` or `.`"
        ))
    }
}

impl RunArgs {
    /// The range given on the command line, checked.
    fn range(&self) -> anyhow::Result<Option<crate::plan::LedgerRange>> {
        let Some(from) = self.from_ledger else {
            return Ok(None);
        };
        if from == 0 {
            anyhow::bail!("--from-ledger 0: ledgers start at 1");
        }
        if let Some(to) = self.to_ledger.filter(|to| *to < from) {
            anyhow::bail!("--to-ledger {to} is before --from-ledger {from}");
        }
        Ok(Some(crate::plan::LedgerRange {
            from,
            to: self.to_ledger,
        }))
    }
}

/// Loads the file (every problem reported as `FILE:LINE:COL: error: …`) and runs it.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    crate::supervisor::fdlimit::raise();
    let options = ResolveOptions {
        range: args.range()?,
        shard_id: args.shard_id.clone(),
        ..Default::default()
    };
    let mut loaded = match spec::load_plan(&args.file, &options) {
        Ok(loaded) => loaded,
        Err(diags) => {
            for d in &diags {
                crate::stderr_line!("{d}");
            }
            return Ok(1);
        }
    };
    for notice in &loaded.notices {
        crate::stderr_line!("{notice}");
    }
    let chunk = match (&args.backfill_id, &args.shard_id, options.range) {
        (Some(backfill), Some(shard), Some(range)) => Some(crate::chunks::ShardChunk {
            backfill: backfill.clone(),
            shard: shard.clone(),
            pipeline: loaded.plan.name.clone(),
            file: std::path::absolute(&args.file)
                .unwrap_or_else(|_| args.file.clone())
                .display()
                .to_string(),
            from: range.from,
            to: range.to.unwrap_or(range.from),
            state_dir: args.state_dir.as_ref().map(|d| d.display().to_string()),
            chunk_endpoint: args.chunk_endpoint.clone(),
        }),
        _ => None,
    };
    if let Some(shard) = &args.shard_id {
        loaded.plan.name = format!("{}@shard-{shard}", loaded.plan.name);
    }
    run_plan(
        loaded.plan,
        RunOptions {
            runtime_dir: args.runtime_dir,
            registry: match (args.endpoint, args.no_registry) {
                (Some(endpoint), _) => RegistryChoice::Remote(endpoint),
                (None, true) => RegistryChoice::None,
                (None, false) => RegistryChoice::InProcess {
                    state_dir: args.state_dir,
                },
            },
            log_sink: Arc::new(StderrSink),
            cgroups: component_cgroups(!args.no_cgroups),
            chunk,
            ..Default::default()
        },
    )
}

/// One cgroup per component when `wanted` and the host allows; else process groups only.
pub fn component_cgroups(wanted: bool) -> Option<Arc<CgroupTree>> {
    match crate::systemd::cgroup::Containment::setup(wanted) {
        crate::systemd::cgroup::Containment::Cgroups(tree) => Some(Arc::new(tree)),
        crate::systemd::cgroup::Containment::ProcessGroups { .. } => None,
    }
}

/// How `flowctl run` runs a pipeline.
pub struct RunOptions {
    /// `--runtime-dir`: the control socket is `DIR/flowctl.sock` (default: per user).
    pub runtime_dir: Option<PathBuf>,
    /// The control plane the components register with.
    pub registry: RegistryChoice,
    pub log_sink: Arc<dyn LogSink>,
    /// One cgroup per component (a delegated subtree, or one made in flowctl's own cgroup,
    /// removed at the end); `None`: process groups only.
    pub cgroups: Option<Arc<CgroupTree>>,
    /// A replay: exit 1 unless the range completed (a stop before its end is a failure).
    pub must_complete: bool,
    /// Dead letters this run replays: resolved when it completes without failing on them
    /// again (in-process control plane only).
    pub resolve_dead_letters: Vec<String>,
    /// This run is a backfill's shard: the chunk run it records.
    pub chunk: Option<crate::chunks::ShardChunk>,
}

/// Which control plane a run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryChoice {
    /// None: components are told `ENABLE_FLOWCTL=false`.
    None,
    /// One elsewhere, at this address.
    Remote(String),
    /// One in this process, with run history under `state_dir` (default per user).
    InProcess { state_dir: Option<PathBuf> },
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            runtime_dir: None,
            registry: RegistryChoice::None,
            log_sink: Arc::new(StderrSink),
            cgroups: None,
            must_complete: false,
            resolve_dead_letters: Vec::new(),
            chunk: None,
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
    let pipeline = plan.name.clone();
    let sinks: Vec<String> = plan
        .components
        .iter()
        .filter(|c| c.role == crate::plan::Role::Sink)
        .map(|c| c.id.clone())
        .collect();
    let remote_registry = match &options.registry {
        RegistryChoice::Remote(endpoint) => Some(endpoint.clone()),
        _ => None,
    };
    let mut sup_options = SupervisorOptions::new(&runtime_dir);
    // Where `flowctl dlq --state-dir` finds this run's dead letters.
    let mut letters_dir = None;
    let embedded = match options.registry {
        RegistryChoice::None => None,
        RegistryChoice::Remote(endpoint) => {
            sup_options.endpoint = Some(endpoint);
            None
        }
        RegistryChoice::InProcess { state_dir } => {
            let state_dir = state_dir.unwrap_or_else(registry::server::default_state_dir);
            // The plan's free ports were found and let go of, so the kernel may hand one of
            // them out again for a port 0: pick the control plane's port apart from them.
            let planned: std::collections::HashSet<u16> = plan
                .components
                .iter()
                .flat_map(|c| c.ports.iter().map(|p| p.port).chain([c.health_port]))
                .collect();
            let port = (0..20)
                .find_map(|_| {
                    let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).ok()?;
                    let port = probe.local_addr().ok()?.port();
                    (!planned.contains(&port)).then_some(port)
                })
                .unwrap_or(0);
            let embedded = EmbeddedRegistry::start(
                SocketAddr::from(([127, 0, 0, 1], port)),
                &runtime_dir,
                &state_dir,
                false,
                Default::default(),
            )
            .await
            .with_context(|| {
                format!(
                    "cannot start the control plane (state dir {})",
                    state_dir.display()
                )
            })?;
            sup_options.endpoint = Some(embedded.endpoint());
            sup_options.registry = Some(Arc::new(embedded.registry.clone()));
            letters_dir = Some(state_dir);
            Some(embedded)
        }
    };
    let run = match &embedded {
        Some(embedded) => Some(embedded.begin_run(&plan)?),
        None => None,
    };
    if let Some((run_id, _)) = &run {
        sup_options
            .run_ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(plan.name.clone(), run_id.clone());
    }
    sup_options.log_sink = options.log_sink;
    sup_options.cgroups = options.cgroups.clone();
    sup_options.exit_when_done = true;
    sup_options.stop_on_failure = true;
    // Installed before any component starts, so an early Ctrl-C or SIGTERM drains the
    // pipeline instead of killing flowctl outright.
    use tokio::signal::unix::{signal, SignalKind};
    let interrupts = signal(SignalKind::interrupt());
    let terminates = signal(SignalKind::terminate());
    let (supervisor, handle) = Supervisor::new(vec![plan], sup_options)?;
    let server = tokio::spawn(api::server::serve(listener, handle.clone()));
    crate::stderr_line!(
        "flowctl: running pipeline `{name}`; control socket {} (flowctl-sup --socket {} status)",
        socket.display(),
        socket.display()
    );

    // What the registry has to tell the operator; `flowctl run` has no log but stderr.
    let notices = embedded.as_ref().map(|embedded| {
        let mut events = embedded.registry.subscribe();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(registry::RegistryEvent::HeartbeatTooFast { message, .. }) => {
                        crate::stderr_line!("flowctl: warning: {message}");
                    }
                    Ok(registry::RegistryEvent::RunStalled {
                        run_id, message, ..
                    }) => {
                        crate::stderr_line!("flowctl: warning: run {run_id} {message}");
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        })
    });

    let stop = handle.clone();
    let signals = tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (interrupts, terminates) else {
            return;
        };
        loop {
            let which = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            crate::stderr_line!("flowctl: {which}: stopping pipeline `{name}` (sources first)");
            stop.shutdown();
        }
    });

    let (run_id, stop_requests) = run.unzip();
    let remote_stop = stop_requests.map(|mut requests| {
        let stop = handle.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                crate::stderr_line!(
                    "flowctl: run {} stopped through the control plane",
                    request.run_id
                );
                stop.shutdown();
                let _ = request.reply.send(Ok(()));
            }
        })
    });
    if let (Some(embedded), Some(run_id)) = (&embedded, &run_id) {
        crate::stderr_line!(
            "flowctl: control plane at {} (run {run_id})",
            embedded.endpoint()
        );
    }
    let mut chunk = match options.chunk {
        Some(chunk) => {
            let records = match (&chunk.chunk_endpoint, &embedded, &remote_registry) {
                (Some(endpoint), _, _) | (None, None, Some(endpoint)) => {
                    crate::chunks::Records::remote(endpoint).await
                }
                (None, Some(embedded), _) => {
                    Ok(crate::chunks::Records::Local(embedded.registry.clone()))
                }
                (None, None, None) => Err(anyhow::anyhow!(
                    "this run has no control plane (--no-registry): give --chunk-endpoint"
                )),
            };
            ShardReport::start(chunk, records, run_id.as_deref().unwrap_or("")).await
        }
        None => None,
    };

    let progress = chunk.as_ref().and_then(|report| {
        let records = report.records.duplicate()?;
        let registry = embedded.as_ref().map(|e| e.registry.clone());
        Some(tokio::spawn(ShardReport::keep_fresh(
            report.chunk.clone(),
            report.attempt,
            records,
            registry.zip(run_id.clone()),
        )))
    });

    let summary = supervisor.run().await;
    if let Some(task) = progress {
        task.abort();
    }
    if let Some(tree) = &options.cgroups {
        tree.dissolve();
    }
    for task in remote_stop.into_iter().chain(notices) {
        task.abort();
    }
    if let (Some(embedded), Some(run_id), Ok(summary)) = (&embedded, &run_id, &summary) {
        let failed: Vec<String> = summary
            .failed()
            .map(|f| format!("{}: {}", f.id, f.reason.as_deref().unwrap_or("failed")))
            .chain(summary.components.iter().filter_map(|c| {
                c.killed_after
                    .map(|_| format!("{}: SIGKILLed after its stop timeout", c.id))
            }))
            .collect();
        // Components stopped because every sink finished are part of completing, not an
        // interruption.
        let completed = summary.completed.contains(&pipeline);
        let stopped = summary
            .components
            .iter()
            .any(|c| c.state == StateName::Stopped);
        let (status, error) = if !failed.is_empty() {
            (RunStatus::Failed, Some(failed.join("; ")))
        } else if stopped && !completed {
            (RunStatus::Stopped, None)
        } else {
            // The registry makes it completed_with_dead_letters if letters are open.
            (RunStatus::Completed, None)
        };
        embedded.end_run(run_id, status, error);
        if completed && !options.resolve_dead_letters.is_empty() {
            let open = embedded.registry.dead_letters().resolve_replayed(
                &options.resolve_dead_letters,
                run_id,
                std::time::SystemTime::now(),
            );
            match open {
                Ok(open) if open.is_empty() => crate::stderr_line!(
                    "flowctl: dead letter(s) {} resolved",
                    options.resolve_dead_letters.join(", ")
                ),
                Ok(open) => crate::stderr_line!(
                    "flowctl: the replay failed on the ledgers of dead letter(s) {} again; they stay open",
                    open.join(", ")
                ),
                Err(e) => crate::stderr_line!("flowctl: cannot resolve the dead letters: {e}"),
            }
        }
    }
    if let (Some(chunk), Ok(summary)) = (&mut chunk, &summary) {
        let rows = match (&embedded, &run_id) {
            (Some(embedded), Some(run_id)) => embedded
                .registry
                .get_run(run_id)
                .ok()
                .and_then(|run| run.metrics)
                .map(|m| {
                    m.component_metrics
                        .into_iter()
                        .filter(|(id, _)| sinks.contains(id))
                        .map(|(id, m)| (id, m.events_in))
                        .collect()
                })
                .unwrap_or_default(),
            _ => Default::default(),
        };
        chunk.finish(outcome(summary, &pipeline, rows)).await;
    }
    let letters = match (&embedded, &run_id) {
        (Some(embedded), Some(run_id)) => embedded
            .registry
            .dead_letters()
            .open_for_run(run_id)
            .unwrap_or(0),
        _ => 0,
    };
    signals.abort();
    server.abort();
    let _ = std::fs::remove_file(&socket);
    let summary = summary?;
    let mut code = report(&summary);
    if options.must_complete && code == 0 && !summary.completed.contains(&pipeline) {
        code = 1;
        crate::stderr_line!(
            "flowctl: `{pipeline}` stopped before its end ledger; the same command resumes it"
        );
    }
    if letters > 0 {
        let dir = letters_dir
            .map(|d| format!(" --state-dir {}", d.display()))
            .unwrap_or_default();
        crate::stderr_line!(
            "flowctl: pipeline `{pipeline}` completed with {letters} dead letter(s); list them \
             with `flowctl dlq ls --pipeline {}{dir}`",
            crate::replay::base_name(&pipeline)
        );
    }
    Ok(code)
}

/// A backfill shard's chunk run, as this run records it.
struct ShardReport {
    chunk: crate::chunks::ShardChunk,
    records: crate::chunks::Records,
    attempt: i32,
}

impl ShardReport {
    /// Records the shard running, with the attempt after the stored one. A control plane
    /// that cannot be reached costs the record, never the shard's work: it is said and the
    /// run goes on.
    async fn start(
        chunk: crate::chunks::ShardChunk,
        records: anyhow::Result<crate::chunks::Records>,
        run_id: &str,
    ) -> Option<ShardReport> {
        let id = chunk.id();
        let begun = async {
            let mut records = records?;
            let attempt = records.get(&id).await?.map_or(0, |c| c.attempt) + 1;
            records.upsert(chunk.running(attempt, run_id)).await?;
            anyhow::Ok((records, attempt))
        };
        match begun.await {
            Ok((records, attempt)) => {
                crate::stderr_line!("flowctl: chunk run {id}: attempt {attempt}");
                Some(ShardReport {
                    chunk,
                    records,
                    attempt,
                })
            }
            Err(e) => {
                crate::stderr_line!("flowctl: warning: cannot record chunk run {id}: {e:#}");
                None
            }
        }
    }

    /// Refreshes the RUNNING record every [`crate::chunks::PROGRESS_EVERY`] with the last
    /// ledger the run's sinks wrote (from this run's record in `run`, when it has one).
    async fn keep_fresh(
        chunk: crate::chunks::ShardChunk,
        attempt: i32,
        mut records: crate::chunks::Records,
        run: Option<(crate::registry::Registry, String)>,
    ) {
        let mut every = tokio::time::interval(crate::chunks::PROGRESS_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            let through = run.as_ref().and_then(|(registry, id)| {
                let done = registry.get_run(id).ok()?.last_ledger_done;
                (done > 0).then_some(done)
            });
            if let Err(e) = records.upsert(chunk.progress(attempt, through)).await {
                tracing::debug!(chunk = %chunk.id(), error = %e, "cannot refresh the chunk run");
            }
        }
    }

    async fn finish(&mut self, outcome: crate::chunks::Outcome) {
        let record = self.chunk.finished(self.attempt, &outcome);
        let id = record.chunk_id.clone();
        let status = crate::registry::chunks::status_word(record.status());
        match self.records.upsert(record).await {
            Ok(_) => crate::stderr_line!("flowctl: chunk run {id}: {status}"),
            Err(e) => {
                crate::stderr_line!(
                    "flowctl: warning: cannot record chunk run {id} {status}: {e:#}"
                )
            }
        }
    }
}

/// How the run ended, for its chunk record.
fn outcome(
    summary: &RunSummary,
    pipeline: &str,
    rows: std::collections::HashMap<String, i64>,
) -> crate::chunks::Outcome {
    let failed: Vec<_> = summary.failed().collect();
    if !failed.is_empty() {
        return crate::chunks::Outcome::Failed {
            reasons: failed
                .iter()
                .map(|f| format!("{}: {}", f.id, f.reason.as_deref().unwrap_or("failed")))
                .collect(),
            fenced: failed.iter().all(|f| f.fenced),
            // SIGKILL that flowctl sent after a stop timeout is not the kernel's.
            killed: failed.iter().any(|f| {
                f.killed_after.is_none()
                    && f.reason
                        .as_deref()
                        .is_some_and(|r| r.contains("killed by signal 9"))
            }),
        };
    }
    if summary.completed.iter().any(|p| p == pipeline) {
        crate::chunks::Outcome::Completed { rows }
    } else {
        crate::chunks::Outcome::Stopped
    }
}

/// Says what each component used and what failed, and picks the exit code.
fn report(summary: &RunSummary) -> i32 {
    for c in summary.components.iter().filter(|c| c.spawns > 0) {
        let processes = match c.spawns {
            1 => String::new(),
            n => format!(" over {n} processes"),
        };
        crate::stderr_line!("flowctl: `{}` used {}{processes}", c.id, c.used);
    }
    let mut code = 0;
    for killed in summary.components.iter() {
        let Some(timeout) = killed.killed_after else {
            continue;
        };
        code = 1;
        crate::stderr_line!(
            "flowctl: component `{}` of pipeline `{}` did not stop within its stop timeout ({}) and was killed with SIGKILL",
            killed.id,
            killed.pipeline,
            humantime::format_duration(timeout)
        );
    }
    let mut fenced = false;
    for failed in summary.failed() {
        let reason = failed.reason.as_deref().unwrap_or("no reason recorded");
        if failed.fenced {
            fenced = true;
            crate::stderr_line!(
                "flowctl: component `{}` of pipeline `{}` was fenced: {reason}; a newer run of \
                 this work owns it, so this run stopped",
                failed.id,
                failed.pipeline,
            );
            continue;
        }
        code = 1;
        crate::stderr_line!(
            "flowctl: component `{}` of pipeline `{}` failed: {reason}",
            failed.id,
            failed.pipeline,
        );
    }
    if fenced && code == 0 {
        code = crate::supervisor::restart::FENCED_EXIT_CODE;
    }
    code
}
