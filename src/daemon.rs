//! `flowctl-sup run`: the daemon systemd starts. Every pipeline of the pipelines directory
//! under one supervisor, its readiness, status and watchdog reported to systemd, children's
//! output in the journal.
//!
//! The watchdog is pinged only after the supervisor's own loop has answered a status request,
//! so a wedged supervisor stops the pings and systemd restarts the daemon.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use flowctl_proto::flowctl::RunStatus;

use crate::api;
use crate::api::protocol::SupervisorStatus;
use crate::config::Config;
use crate::registry::embedded::EmbeddedRegistry;
use crate::supervisor::{StateName, Supervisor, SupervisorOptions};
use crate::systemd::journal;
use crate::systemd::notify::StatusLine;
use crate::systemd::SystemdEdge;

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
        .block_on(run_async(config, args.instance))
}

async fn run_async(config: Config, instance: Option<String>) -> anyhow::Result<i32> {
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
    )
    .await
    .with_context(|| format!("cannot start the control plane on {listen}"))?;
    tracing::info!("control plane listening on {}", embedded.endpoint());
    options.endpoint = Some(embedded.endpoint());
    options.registry = Some(Arc::new(embedded.registry.clone()));
    let mut runs = Vec::new();
    for plan in &plans {
        let (run_id, requests) = embedded.begin_run(plan)?;
        runs.push((
            run_id,
            requests,
            plan.name.clone(),
            plan.components
                .iter()
                .map(|c| c.id.clone())
                .collect::<Vec<_>>(),
        ));
    }
    options.log_sink = edge.child_logs.sink();
    if let crate::systemd::cgroup::Containment::Cgroups(tree) = edge.containment {
        options.cgroups = Some(Arc::new(tree));
    }
    let (supervisor, handle) = Supervisor::new(plans, options)?;
    let server = tokio::spawn(api::server::serve(listener, handle.clone()));
    let metrics = crate::metrics::start(&config.metrics, handle.clone()).await;
    let run_ids: Vec<String> = runs.iter().map(|(id, ..)| id.clone()).collect();
    let stop_tasks: Vec<_> = runs
        .into_iter()
        .map(|(_, requests, pipeline, ids)| {
            EmbeddedRegistry::serve_stop_requests(requests, pipeline, ids, handle.clone())
        })
        .collect();
    let running = tokio::spawn(supervisor.run());

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let notifier = edge.notifier.clone();
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
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let stopping = format!("stopping: draining {} pipeline(s)", names.len());
    notifier.stopping(&stopping).ok();
    tracing::info!("{stopping}");
    handle.shutdown();
    let summary = running.await.context("the supervisor task panicked")??;
    server.abort();
    if let Some(task) = &metrics {
        task.abort();
    }
    for task in stop_tasks {
        task.abort();
    }
    for run_id in &run_ids {
        embedded.end_run(run_id, RunStatus::Stopped, None);
    }
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
        ledgers_per_sec: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::protocol::{ComponentStatus, PipelineStatus};

    fn comp(state: StateName, ready: bool) -> ComponentStatus {
        ComponentStatus {
            id: "c".into(),
            state,
            pid: None,
            restarts: 0,
            ready,
            uptime_ms: None,
            last_exit: None,
            next_restart_ms: None,
            last_probe: None,
            reason: None,
            notify_status: None,
            registration: None,
            usage: None,
        }
    }

    #[test]
    fn ready_waits_for_components_still_on_their_way_up() {
        let s = |cs: Vec<ComponentStatus>| SupervisorStatus {
            pipelines: vec![PipelineStatus {
                name: "p".into(),
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
}
