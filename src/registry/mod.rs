//! The control plane: components register and heartbeat here; pipeline runs are recorded here.
//!
//! The supervisor runs it in-process; `flowctl server` runs it alone. The pieces:
//! - [`health`]: the pure rule deciding a component's health from its heartbeats.
//! - [`state`]: [`Registry`], the one place the state lives, and the supervisor's API to it.
//! - [`store`]: run history in SQLite under the state dir.
//! - [`chunks`]: chunk runs (bounded units of historical work), beside the run history.
//! - [`dead_letters`]: the ledgers and events components set aside, beside the run history.
//! - [`grpc`]: `flowctl.ControlPlane` and `flowctl.v1.ControlPlaneService` over the registry,
//!   and `flowctl.v1.DeadLetterService` over its dead-letter store.
//! - [`replay_grpc`]: `flowctl.v1.ReplayService`, handing replays to the daemon.
//! - [`server`]: TCP and unix-socket serving, bearer token and mutual TLS.
//! - [`access`]: who may call what: the operator, the processes the supervisor started, anyone.
//! - [`connections`]: capped TCP connections that must start talking promptly.
//! - `peer`: which supervised process is behind a TCP connection.
//! - [`client`]: connecting to a registry (CLI, tests).
//! - [`limits`]: the largest ids, maps, pipeline files and messages the registry accepts.
//! - [`redact`]: pipeline files as readers see them: secret values and URL passwords masked,
//!   in every run the gRPC services return.
//!
//! # For the supervisor
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use flowctl::registry::{Registry, RegistryConfig, RegistryServer, ServerOptions, NewRun};
//! let registry = Registry::open(RegistryConfig {
//!     state_dir: Some("/var/lib/flowctl".into()),
//!     ..Default::default()
//! })?;
//! let server = RegistryServer::bind(registry.clone(), ServerOptions {
//!     listen: Some("127.0.0.1:0".parse()?),
//!     unix_socket: Some("/run/flowctl/registry.sock".into()),
//!     ..Default::default()
//! }).await?;
//! let endpoint = server.local_addr().unwrap(); // → FLOWCTL_ENDPOINT of the children
//! tokio::spawn(server.serve(std::future::pending()));
//! let mut changes = registry.subscribe(); // Registered / Unregistered / HealthChanged
//! // `registered` readiness probe and status output:
//! let up = registry.is_registered("ttp-processor");
//! let status = registry.status("ttp-processor"); // registered_at, last_heartbeat_age(), health, metrics
//! // Runs a previous supervisor left active cannot be ended by anyone else:
//! registry.fail_orphaned_runs("flowctl-sup restarted while the run was active")?;
//! // One run per pipeline start; `owner` receives StopRequests from `flowctl pipelines stop`.
//! let (owner, mut stop_requests) = tokio::sync::mpsc::channel(4);
//! let run = registry.create_run(NewRun {
//!     pipeline_name: "ttp".into(),
//!     component_ids: vec!["source".into(), "ttp-processor".into()],
//!     owner: Some(owner),
//!     ..Default::default()
//! })?;
//! // … update_run(&run.run_id, RunUpdate { status: Some(RunStatus::Running), .. }),
//! // unregister(component_id) when a component is stopped, end_run(..) at the end.
//! // Run metrics are summed from the components' heartbeats whenever a run is read or
//! // updated, and saved every 10 s while it is active.
//! // A StopRequest is answered once the pipeline has stopped:
//! if let Some(request) = stop_requests.recv().await {
//!     // … stop the pipeline's components …
//!     let _ = request.reply.send(Ok(()));
//! }
//! # Ok(()) }
//! ```

pub mod access;
pub mod chunks;
pub mod client;
pub mod connections;
pub mod dead_letter_grpc;
pub mod dead_letters;
pub mod embedded;
pub mod grpc;
pub mod health;
pub mod limits;
pub mod link;
mod peer;
mod probe;
pub mod redact;
pub mod replay_grpc;
pub mod server;
pub mod state;
pub mod store;

pub use health::HealthStatus;
pub use server::{RegistryServer, ServerError, ServerOptions, TlsFiles, REGISTRY_SOCKET};
pub use state::{component_type_of, service_type_name};
pub use state::{
    ComponentRegistration, MetricValue, NewRun, Registry, RegistryConfig, RegistryError,
    RegistryEvent, ReplayRequest, Replayer, RunOwner, RunUpdate, StopRequest, SupervisedComponent,
};
pub use store::RunFilter;
