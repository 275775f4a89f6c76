//! `flowctl-sup run`: the daemon systemd starts. Every pipeline of the pipelines directory
//! under one supervisor, its readiness, status and watchdog reported to systemd, children's
//! output in the journal.
//!
//! The watchdog is pinged only after the supervisor's own loop has answered a status request,
//! so a wedged supervisor stops the pings and systemd restarts the daemon.
//!
//! SIGHUP, `flowctl-sup reload` and `systemctl reload` re-read the configuration and the
//! pipelines (see [`Reloader`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use flowctl_proto::flowctl::RunStatus;

use crate::api;
use crate::api::protocol::{RejectedFile, ReloadReport, Response, SupervisorStatus};
use crate::config::Config;
use crate::plan::PipelinePlan;
use crate::registry::embedded::EmbeddedRegistry;
use crate::supervisor::reload::{ChangeKind, ReloadDiff};
use crate::supervisor::{StateName, Supervisor, SupervisorHandle, SupervisorOptions};
use crate::systemd::journal;
use crate::systemd::notify::{Notifier, StatusLine};
use crate::systemd::SystemdEdge;

mod replays;

/// How `flowctl-sup run` was asked to run.
#[derive(Debug, Clone)]
pub struct DaemonArgs {
    pub config: PathBuf,
    /// Only `pipelines/NAME.yaml`, with its own runtime and state directories (one pipeline
    /// per `flowctl@NAME.service`).
    pub instance: Option<String>,
}

/// Runs until SIGTERM/SIGINT; returns the exit code.
pub fn run(args: DaemonArgs) -> anyhow::Result<i32> {
    let mut config = Config::load(&args.config)?;
    if let Some(name) = &args.instance {
        if name.is_empty() || name.contains('/') {
            anyhow::bail!("invalid instance name {name:?}");
        }
        config.paths.runtime_dir = config.paths.runtime_dir.join(name);
        config.paths.state_dir = config.paths.state_dir.join(name);
    }
    journal::init_daemon_logging(&config.log.level, &journal::JournalSockets::system())?;
    // Children are forked from this one long-lived thread, which their parent-death signal
    // is tied to (see the supervisor's spawn).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(run_async(config, args.instance, args.config))
}

async fn run_async(
    config: Config,
    instance: Option<String>,
    config_path: PathBuf,
) -> anyhow::Result<i32> {
    let edge = SystemdEdge::setup(&config);
    let mut plans = Vec::new();
    let set = match &instance {
        None => config.load_pipelines()?,
        Some(name) => {
            let file = config.paths.pipelines_dir.join(format!("{name}.yaml"));
            if !file.is_file() {
                anyhow::bail!("{}: no such pipeline file", file.display());
            }
            config.load_pipeline_files(vec![file])
        }
    };
    for rejected in &set.rejected {
        tracing::error!(file = %rejected.file.display(), "pipeline skipped:\n{}", rejected.reason);
    }
    for loaded in set.loaded {
        for notice in &loaded.notices {
            tracing::info!("{notice}");
        }
        plans.push(loaded.plan);
    }
    let names: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
    tracing::info!(
        "running {} pipeline(s) from {}: {}",
        names.len(),
        config.paths.pipelines_dir.display(),
        names.join(", ")
    );

    let socket = config.control_socket();
    let listener = api::socket::bind(&socket)?;
    let mut options = SupervisorOptions::new(&config.paths.runtime_dir);
    // One `flowctl@NAME` instance among several takes a free port; the system daemon the
    // configured one, which remote `flowctl list` users expect.
    let listen = match instance {
        Some(_) => std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        None => config.registry.listen,
    };
    let embedded = EmbeddedRegistry::start(
        listen,
        &config.paths.runtime_dir,
        &config.paths.state_dir,
        true,
        config.registry.serving()?,
    )
    .await
    .with_context(|| format!("cannot start the control plane on {listen}"))?;
    tracing::info!("control plane listening on {}", embedded.endpoint());
    options.endpoint = Some(embedded.endpoint());
    options.registry = Some(Arc::new(embedded.registry.clone()));
    options.log_sink = edge.child_logs.sink();
    let cgroups = match edge.containment {
        crate::systemd::cgroup::Containment::Cgroups(tree) => Some(Arc::new(tree)),
        crate::systemd::cgroup::Containment::ProcessGroups { .. } => None,
    };
    options.cgroups = cgroups.clone();
    let run_ids = options.run_ids.clone();
    let (supervisor, handle) = Supervisor::new(plans.clone(), options)?;
    let mut runs = PipelineRuns {
        runs: BTreeMap::new(),
        ids: run_ids,
    };
    for plan in &plans {
        runs.begin(&embedded, plan, &handle, Vec::new())?;
    }
    let (replay_tx, mut replay_rx) = tokio::sync::mpsc::channel(8);
    embedded.registry.set_replayer(replay_tx);
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(4);
    let server = tokio::spawn(api::server::serve_with_reload(
        listener,
        handle.clone(),
        Some(reload_tx),
    ));
    let metrics = crate::metrics::start(&config.metrics, handle.clone()).await;
    let running = tokio::spawn(supervisor.run());

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let notifier = edge.notifier.clone();
    let reloader = Reloader {
        config_path,
        instance,
        started_with: config.clone(),
        notifier: notifier.clone(),
    };
    let tick = notifier
        .watchdog_interval()
        .map_or(Duration::from_secs(1), |w| w.min(Duration::from_secs(1)));
    let mut ticker = tokio::time::interval(tick);
    let mut ready_sent = false;
    let mut last_status = String::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let Some(status) = handle.status().await else {
                    break;
                };
                let ended = runs.end_finished(&embedded, &status);
                replays::take_out(&handle, &ended).await;
                let line = status_line(&status);
                let text = line.to_string();
                if !ready_sent && settled(&status) {
                    notifier.ready(&text).ok();
                    tracing::info!("ready: {text}");
                    ready_sent = true;
                } else if !ready_sent {
                    // Still starting, and progressing: ask systemd for more time.
                    notifier.extend_timeout(tick * 5, &format!("starting: {text}")).ok();
                } else if text != last_status {
                    notifier.status(&text).ok();
                }
                last_status = text;
                notifier.watchdog().ok();
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                reloader.reload(&handle, &embedded, &mut runs, ready_sent).await;
            }
            Some(reply) = reload_rx.recv() => {
                let response = reloader.reload(&handle, &embedded, &mut runs, ready_sent).await;
                let _ = reply.send(response);
            }
            Some(request) = replay_rx.recv() => {
                let defaults = reloader.current_config().spec_defaults();
                let answer = replays::start(&request, &defaults, &handle, &embedded, &mut runs).await;
                let _ = request.reply.send(answer);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let stopping = format!("stopping: draining {} pipeline(s)", runs.len());
    notifier.stopping(&stopping).ok();
    tracing::info!("{stopping}");
    handle.shutdown();
    let summary = running.await.context("the supervisor task panicked")??;
    if let Some(tree) = &cgroups {
        tree.dissolve();
    }
    server.abort();
    if let Some(task) = &metrics {
        task.abort();
    }
    runs.end_all(&embedded);
    let _ = std::fs::remove_file(&socket);
    let failed: Vec<String> = summary
        .failed()
        .map(|f| format!("{}/{}", f.pipeline, f.id))
        .collect();
    if !failed.is_empty() {
        tracing::warn!(
            "stopped; failed for good before the stop: {}",
            failed.join(", ")
        );
    }
    Ok(0)
}

/// A run the daemon records: its id, the task answering `flowctl pipelines stop` for it, and
/// for a replay the dead letters it resolves when it completes.
struct ActiveRun {
    run_id: String,
    stop_task: tokio::task::JoinHandle<()>,
    resolves: Vec<String>,
}

/// The run record of each running pipeline in the embedded registry.
struct PipelineRuns {
    runs: BTreeMap<String, ActiveRun>,
    /// The supervisor's copy, which its processes get as `FLOWCTL_RUN_ID`.
    ids: crate::supervisor::env::RunIds,
}

impl PipelineRuns {
    fn len(&self) -> usize {
        self.runs.len()
    }

    /// Records the start of `plan`; returns its run id.
    fn begin(
        &mut self,
        embedded: &EmbeddedRegistry,
        plan: &PipelinePlan,
        handle: &SupervisorHandle,
        resolves: Vec<String>,
    ) -> anyhow::Result<String> {
        let (run_id, requests) = embedded.begin_run(plan)?;
        let ids = plan.components.iter().map(|c| c.id.clone()).collect();
        let stop_task =
            EmbeddedRegistry::serve_stop_requests(requests, plan.name.clone(), ids, handle.clone());
        let new = ActiveRun {
            run_id: run_id.clone(),
            stop_task,
            resolves,
        };
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(plan.name.clone(), run_id.clone());
        if let Some(old) = self.runs.insert(plan.name.clone(), new) {
            old.stop_task.abort();
            embedded.end_run(&old.run_id, RunStatus::Stopped, None);
        }
        Ok(run_id)
    }

    fn end(&mut self, embedded: &EmbeddedRegistry, pipeline: &str) {
        if let Some(run) = self.runs.remove(pipeline) {
            run.stop_task.abort();
            embedded.end_run(&run.run_id, RunStatus::Stopped, None);
        }
    }

    /// The run of `pipeline`, while it is recorded as active.
    fn run_of(&self, pipeline: &str) -> Option<&str> {
        self.runs.get(pipeline).map(|r| r.run_id.as_str())
    }

    /// Ends the runs that are over: a bounded pipeline that completed (once drained), and a
    /// replay with a component failed for good. Returns the replays that ended, for the
    /// daemon to take out of the supervisor.
    fn end_finished(
        &mut self,
        embedded: &EmbeddedRegistry,
        status: &SupervisorStatus,
    ) -> Vec<String> {
        let mut ended_replays = Vec::new();
        for p in &status.pipelines {
            let drained = p
                .components
                .iter()
                .all(|c| matches!(c.state, StateName::Exited | StateName::Stopped));
            let failed: Vec<String> = p
                .components
                .iter()
                .filter(|c| c.state == StateName::Failed)
                .map(|c| format!("{}: {}", c.id, c.reason.as_deref().unwrap_or("failed")))
                .collect();
            let replay = crate::replay::is_instance(&p.name);
            let outcome = if p.completed && drained {
                Ok(())
            } else if replay && !failed.is_empty() {
                Err(failed.join("; "))
            } else {
                continue;
            };
            let Some(run) = self.runs.remove(&p.name) else {
                continue;
            };
            run.stop_task.abort();
            match outcome {
                Ok(()) => {
                    tracing::info!(pipeline = %p.name, run = %run.run_id, "bounded run completed");
                    // The registry makes it completed_with_dead_letters if letters are open.
                    embedded.end_run(&run.run_id, RunStatus::Completed, None);
                    replays::resolve_letters(embedded, &run.run_id, &run.resolves);
                }
                Err(error) => {
                    tracing::warn!(pipeline = %p.name, run = %run.run_id, "replay failed: {error}");
                    embedded.end_run(&run.run_id, RunStatus::Failed, Some(error));
                }
            }
            if replay {
                ended_replays.push(p.name.clone());
            }
        }
        ended_replays
    }

    fn end_all(&mut self, embedded: &EmbeddedRegistry) {
        for name in self.runs.keys().cloned().collect::<Vec<_>>() {
            self.end(embedded, &name);
        }
    }

    /// A new pipeline gets a run; a removed one's run ends; a pipeline whose components
    /// changed ends its run and begins a new one with the new configuration, so the run
    /// history says which configuration ran when.
    fn apply(
        &mut self,
        diff: &ReloadDiff,
        plans: &[PipelinePlan],
        embedded: &EmbeddedRegistry,
        handle: &SupervisorHandle,
    ) {
        for change in &diff.pipelines {
            match change.kind {
                ChangeKind::Removed => self.end(embedded, &change.name),
                ChangeKind::Added | ChangeKind::Changed => {
                    let Some(plan) = plans.iter().find(|p| p.name == change.name) else {
                        continue;
                    };
                    if let Err(e) = self.begin(embedded, plan, handle, Vec::new()) {
                        tracing::warn!(pipeline = %plan.name, "cannot record its run: {e:#}");
                    }
                }
                ChangeKind::Unchanged => {}
            }
        }
    }
}

/// Re-reads the configuration file and the pipelines, and hands the supervisor the new set.
///
/// A configuration file that does not load rejects the whole reload: nothing changes. A
/// pipeline file that does not load is rejected alone, like at startup: the running version
/// of its pipeline (if any) keeps running unchanged, every other change still applies, and
/// the reply lists the rejection (so `flowctl-sup reload` exits non-zero). Only what decides
/// the pipelines is reloaded (the pipelines directory and `[defaults]`); a change to the
/// registry address, paths, logging or cgroups needs a restart, and the journal says so.
struct Reloader {
    config_path: PathBuf,
    instance: Option<String>,
    started_with: Config,
    notifier: Notifier,
}

impl Reloader {
    /// The configuration file as it is now (the one the daemon started with when it no
    /// longer loads): what a replay is resolved with.
    fn current_config(&self) -> Config {
        Config::load(&self.config_path).unwrap_or_else(|_| self.started_with.clone())
    }

    /// Reloads, telling systemd (`RELOADING=1`, then `READY=1`) once startup is over.
    async fn reload(
        &self,
        handle: &SupervisorHandle,
        embedded: &EmbeddedRegistry,
        runs: &mut PipelineRuns,
        ready_sent: bool,
    ) -> Response {
        if ready_sent {
            self.notifier.reloading("reloading the configuration").ok();
        }
        let response = self.apply(handle, embedded, runs).await;
        if ready_sent {
            if let Some(status) = handle.status().await {
                self.notifier.ready(&status_line(&status).to_string()).ok();
            }
        }
        response
    }

    async fn apply(
        &self,
        handle: &SupervisorHandle,
        embedded: &EmbeddedRegistry,
        runs: &mut PipelineRuns,
    ) -> Response {
        let config = match Config::load(&self.config_path) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!("reload rejected, nothing changed: {e}");
                return Response::error(format!("reload rejected, nothing changed: {e}"));
            }
        };
        self.warn_unreloadable(&config);
        let Some(running) = handle.plans().await else {
            return Response::error("the supervisor has stopped");
        };
        let files = match &self.instance {
            Some(name) => vec![config.paths.pipelines_dir.join(format!("{name}.yaml"))],
            None => match config.pipeline_files() {
                Ok(files) => files,
                Err(e) => {
                    let msg = format!(
                        "reload rejected, nothing changed: cannot read {}: {e}",
                        config.paths.pipelines_dir.display()
                    );
                    tracing::error!("{msg}");
                    return Response::error(msg);
                }
            },
        };
        let set = config.load_pipeline_files_holding(files, &running);
        let mut plans = Vec::new();
        for loaded in set.loaded {
            for notice in &loaded.notices {
                tracing::info!("{notice}");
            }
            plans.push(loaded.plan);
        }
        let mut rejected = Vec::new();
        for r in set.rejected {
            let kept = running
                .iter()
                .find(|p| p.source_file == r.file && !plans.iter().any(|n| n.name == p.name))
                .cloned();
            match &kept {
                Some(p) => tracing::error!(
                    file = %r.file.display(),
                    "pipeline rejected on reload; `{}` keeps running unchanged:\n{}",
                    p.name,
                    r.reason
                ),
                None => {
                    tracing::error!(file = %r.file.display(), "pipeline rejected on reload:\n{}", r.reason)
                }
            }
            rejected.push(RejectedFile {
                file: r.file.display().to_string(),
                error: r.reason,
                kept: kept.as_ref().map(|p| p.name.clone()),
            });
            plans.extend(kept);
        }
        // Replays come from no file: they run on to their end ledger.
        plans.extend(
            running
                .iter()
                .filter(|p| crate::replay::is_instance(&p.name))
                .cloned(),
        );
        let diff = match handle.reload(plans.clone()).await {
            Ok(diff) => diff,
            Err(e) => {
                tracing::error!("reload rejected, nothing changed: {e}");
                return Response::error(format!("reload rejected, nothing changed: {e}"));
            }
        };
        runs.apply(&diff, &plans, embedded, handle);
        tracing::info!("reloaded:\n{}", diff.to_string().trim_end());
        let report = ReloadReport { diff, rejected };
        if report.rejected.is_empty() {
            Response {
                reload: Some(report),
                ..Response::ok()
            }
        } else {
            let files: Vec<&str> = report.rejected.iter().map(|r| r.file.as_str()).collect();
            Response {
                ok: false,
                error: Some(format!(
                    "rejected {} (see below); everything else was applied\n{}",
                    files.join(", "),
                    report
                        .rejected
                        .iter()
                        .map(|r| r.error.as_str())
                        .collect::<Vec<_>>()
                        .join("\n")
                )),
                status: None,
                reload: Some(report),
            }
        }
    }

    /// Settings only read at startup: say so when they change instead of ignoring the edit.
    fn warn_unreloadable(&self, new: &Config) {
        let old = &self.started_with;
        let mut changed = Vec::new();
        if new.registry != old.registry {
            changed.push("[registry]");
        }
        if self.instance.is_none() && new.paths.runtime_dir != old.paths.runtime_dir
            || self.instance.is_none() && new.paths.state_dir != old.paths.state_dir
        {
            changed.push("[paths] runtime_dir/state_dir");
        }
        if new.log != old.log {
            changed.push("[log]");
        }
        if new.metrics != old.metrics {
            changed.push("[metrics]");
        }
        if new.cgroups != old.cgroups {
            changed.push("[cgroups]");
        }
        if !changed.is_empty() {
            tracing::warn!(
                "{} changed in {}: takes effect when the daemon restarts (systemctl restart flowctl)",
                changed.join(", "),
                self.config_path.display()
            );
        }
    }
}

/// Every component is ready, or has settled (exited, failed, stopped): nothing is still on
/// its way up, so systemd may consider the start done.
fn settled(status: &SupervisorStatus) -> bool {
    status
        .pipelines
        .iter()
        .flat_map(|p| &p.components)
        .all(|c| {
            c.ready
                || matches!(
                    c.state,
                    StateName::Exited | StateName::Failed | StateName::Stopped
                )
        })
}

fn status_line(status: &SupervisorStatus) -> StatusLine {
    let all = || status.pipelines.iter().flat_map(|p| &p.components);
    StatusLine {
        pipelines: status.pipelines.len(),
        components: all().count(),
        ready: all().filter(|c| c.ready).count(),
        failed: all().filter(|c| c.state == StateName::Failed).count(),
        completed: status.pipelines.iter().filter(|p| p.completed).count(),
        ledgers_per_sec: ledgers_per_sec(status),
    }
}

/// The sources' `ledgers_per_second` from their last heartbeats, summed over pipelines;
/// `None` when no running component reports one.
fn ledgers_per_sec(status: &SupervisorStatus) -> Option<f64> {
    let rates: Vec<f64> = status
        .pipelines
        .iter()
        .flat_map(|p| &p.components)
        .filter(|c| c.pid.is_some())
        .filter_map(|c| c.registration.as_ref()?.metrics.get("ledgers_per_second"))
        .filter_map(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .collect();
    (!rates.is_empty()).then(|| rates.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::protocol::{ComponentStatus, PipelineStatus};

    fn comp(state: StateName, ready: bool) -> ComponentStatus {
        ComponentStatus {
            ready,
            ..ComponentStatus::new("c", state)
        }
    }

    #[test]
    fn ready_waits_for_components_still_on_their_way_up() {
        let s = |cs: Vec<ComponentStatus>| SupervisorStatus {
            pipelines: vec![PipelineStatus {
                name: "p".into(),
                completed: false,
                stalled: None,
                components: cs,
            }],
        };
        assert!(settled(&s(vec![
            comp(StateName::Ready, true),
            comp(StateName::Failed, false)
        ])));
        assert!(!settled(&s(vec![
            comp(StateName::Ready, true),
            comp(StateName::Starting, false)
        ])));
        assert!(!settled(&s(vec![comp(StateName::Backoff, false)])));
        assert!(settled(&SupervisorStatus { pipelines: vec![] }));
        let line = status_line(&s(vec![
            comp(StateName::Ready, true),
            comp(StateName::Failed, false),
        ]));
        assert_eq!(line.to_string(), "1 pipeline, 1/2 ready, 1 failed");
    }

    #[test]
    fn status_line_shows_the_running_sources_reported_ledger_rate() {
        let with_rate = |pid: Option<i32>, rate: &str| {
            let mut c = comp(StateName::Ready, true);
            c.pid = pid;
            c.registration = Some(crate::api::protocol::RegistrationInfo {
                health: "healthy".into(),
                heartbeat_age_ms: Some(10),
                linked_by: None,
                metrics: [("ledgers_per_second".to_string(), rate.to_string())].into(),
            });
            c
        };
        let status = SupervisorStatus {
            pipelines: vec![
                PipelineStatus {
                    name: "a".into(),
                    completed: false,
                    stalled: None,
                    components: vec![with_rate(Some(10), "1000.5"), comp(StateName::Ready, true)],
                },
                PipelineStatus {
                    name: "b".into(),
                    completed: false,
                    stalled: None,
                    // A stopped source's last report is not a current rate; garbage is ignored.
                    components: vec![
                        with_rate(Some(11), "203.9"),
                        with_rate(None, "5000"),
                        with_rate(Some(12), "fast"),
                    ],
                },
            ],
        };
        assert_eq!(
            status_line(&status).to_string(),
            "2 pipelines, 5/5 ready, 0 failed, 1,204 ledgers/s"
        );
        let none = SupervisorStatus {
            pipelines: vec![PipelineStatus {
                name: "a".into(),
                completed: false,
                stalled: None,
                components: vec![comp(StateName::Ready, true)],
            }],
        };
        assert_eq!(
            status_line(&none).to_string(),
            "1 pipeline, 1/1 ready, 0 failed"
        );
    }
}
