//! The registry as the supervisor runs it: in-process, on a loopback address (given to the
//! components as `FLOWCTL_ENDPOINT`) and on `RUNTIME_DIR/registry.sock`, with one run record
//! per pipeline start.

use std::net::SocketAddr;
use std::path::Path;

use flowctl_proto::flowctl::RunStatus;
use tokio::sync::{mpsc, oneshot};

use super::{
    NewRun, Registry, RegistryConfig, RegistryServer, ServerOptions, StopRequest, REGISTRY_SOCKET,
};
use crate::plan::PipelinePlan;

/// A running in-process registry. Dropping it stops serving.
pub struct EmbeddedRegistry {
    pub registry: Registry,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl EmbeddedRegistry {
    /// Opens the run store under `state_dir` and starts serving, with the token, TLS and
    /// connection limits of `serving` (its addresses are these). `sole_owner`: this process is
    /// the only supervisor using the state dir (the daemon), so runs left active there belong
    /// to a vanished predecessor and are marked failed; several `flowctl run`s may share a
    /// state dir and leave each other's runs alone.
    pub async fn start(
        listen: SocketAddr,
        runtime_dir: &Path,
        state_dir: &Path,
        sole_owner: bool,
        serving: ServerOptions,
    ) -> anyhow::Result<Self> {
        let registry = Registry::open(RegistryConfig {
            state_dir: Some(state_dir.to_path_buf()),
            ..Default::default()
        })?;
        if sole_owner {
            registry.fail_orphaned_runs("the supervisor that owned this run is gone")?;
        }
        let server = RegistryServer::bind(
            registry.clone(),
            ServerOptions {
                listen: Some(listen),
                unix_socket: Some(runtime_dir.join(REGISTRY_SOCKET)),
                in_supervisor: true,
                ..serving
            },
        )
        .await?;
        let addr = server.local_addr().expect("bound to a TCP address");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        tokio::spawn(registry.clone().sweep_forever());
        Ok(EmbeddedRegistry {
            registry,
            addr,
            stop: Some(stop),
        })
    }

    /// The `FLOWCTL_ENDPOINT` of the components.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Records the start of a pipeline; stop requests for the run (`flowctl pipelines stop`)
    /// arrive on the returned channel.
    pub fn begin_run(
        &self,
        plan: &PipelinePlan,
    ) -> anyhow::Result<(String, mpsc::Receiver<StopRequest>)> {
        let (owner, requests) = mpsc::channel(4);
        let run = self.registry.create_run(NewRun {
            pipeline_name: plan.name.clone(),
            config_yaml: plan.config_yaml.clone(),
            component_ids: plan.components.iter().map(|c| c.id.clone()).collect(),
            owner: Some(owner),
            from_ledger: plan.range.map_or(0, |r| r.from),
            to_ledger: plan.range.and_then(|r| r.to).unwrap_or(0),
            stalled_after: plan.stalled_after,
            ..Default::default()
        })?;
        self.registry.update_run(
            &run.run_id,
            super::RunUpdate {
                status: Some(RunStatus::Running),
                ..Default::default()
            },
        )?;
        Ok((run.run_id, requests))
    }

    /// Stops the pipeline of each stop request by stopping its components through the
    /// supervisor's handle, then answers the request.
    pub fn serve_stop_requests(
        mut requests: mpsc::Receiver<StopRequest>,
        pipeline: String,
        component_ids: Vec<String>,
        handle: crate::supervisor::SupervisorHandle,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                tracing::info!(pipeline = %pipeline, run = %request.run_id, "stop requested through the control plane");
                let mut errors = Vec::new();
                for id in &component_ids {
                    let component = format!("{pipeline}/{id}");
                    let response = handle
                        .request(crate::api::Request::Stop { component })
                        .await;
                    if let Some(error) = response.error {
                        errors.push(error);
                    }
                }
                let answer = if errors.is_empty() {
                    Ok(())
                } else {
                    Err(errors.join("; "))
                };
                let _ = request.reply.send(answer);
            }
        })
    }

    /// Records how a run ended.
    pub fn end_run(&self, run_id: &str, status: RunStatus, error: Option<String>) {
        if let Err(e) = self.registry.end_run(run_id, status, error) {
            tracing::warn!("cannot record the end of run {run_id}: {e}");
        }
    }
}

impl Drop for EmbeddedRegistry {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
