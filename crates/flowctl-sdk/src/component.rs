//! The component's side of flowctl: build from the environment, start, then shut down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flowctl_proto::flowctl::ServiceInfo;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::control::{Backoff, ControlLoop};
use crate::env::{Config, ConfigError};
use crate::metrics::{Metrics, MetricsProvider, NoMetrics, ProviderCollector};

/// The component's role, as the control plane records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    Source,
    Processor,
    Sink,
}

impl ServiceType {
    fn proto(self) -> flowctl_proto::flowctl::ServiceType {
        use flowctl_proto::flowctl::ServiceType as P;
        match self {
            ServiceType::Source => P::Source,
            ServiceType::Processor => P::Processor,
            ServiceType::Sink => P::Sink,
        }
    }
}

/// What `/health` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Working, but impaired (e.g. reconnecting upstream); `/health` still answers 200.
    Degraded,
    /// `/health` answers 503.
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
        }
    }

    pub(crate) fn serving(self) -> bool {
        !matches!(self, Health::Unhealthy)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot serve health endpoints on {addr} (HEALTH_PORT): {source}")]
    HealthBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// State shared by the control loop, the HTTP endpoints and the [`Handle`].
pub(crate) struct Shared {
    pub name: String,
    pub config: Config,
    pub started: Instant,
    pub provider: Arc<dyn MetricsProvider>,
    pub prometheus: prometheus_client::registry::Registry,
    ready: AtomicBool,
    health: AtomicU8,
    service_id: Mutex<Option<String>>,
    /// Heartbeats the control plane took, and those it did not.
    pub heartbeats_sent: AtomicU64,
    pub heartbeat_errors: AtomicU64,
}

impl Shared {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            0 => Health::Healthy,
            1 => Health::Degraded,
            _ => Health::Unhealthy,
        }
    }

    pub fn service_id(&self) -> Option<String> {
        self.service_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_service_id(&self, id: Option<String>) {
        *self.service_id.lock().unwrap_or_else(|p| p.into_inner()) = id;
    }
}

/// Builds a component's flowctl integration.
///
/// ```no_run
/// # async fn demo() -> Result<(), flowctl_sdk::StartError> {
/// use flowctl_sdk::{Component, Metrics, ServiceType};
/// let handle = Component::from_env("TTP_PROCESSOR", ServiceType::Processor)?
///     .with_metrics(|| Metrics::from([("total_processed".to_string(), 42.0)]))
///     .start()
///     .await?;
/// handle.set_ready(true);
/// // … serve …
/// handle.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Component {
    name: String,
    service_type: ServiceType,
    config: Config,
    provider: Arc<dyn MetricsProvider>,
    input_event_types: Vec<String>,
    output_event_types: Vec<String>,
    metadata: Vec<(String, String)>,
    backoff: Backoff,
    default_health_port: Option<u16>,
    /// The prefix of the Prometheus names; the component's name when `None`.
    metrics_namespace: Option<String>,
    /// Metrics of the component's own kinds (histograms, counters) served beside the rest.
    collectors: Vec<Box<dyn prometheus_client::collector::Collector>>,
}

impl Component {
    /// Reads the env contract with `prefix` (e.g. `TTP_PROCESSOR`); the component's name is
    /// the prefix in lower-kebab case (`ttp-processor`).
    pub fn from_env(prefix: &str, service_type: ServiceType) -> Result<Component, ConfigError> {
        Ok(Component::new(Config::from_env(prefix)?, service_type))
    }

    /// From an already-read [`Config`].
    pub fn new(config: Config, service_type: ServiceType) -> Component {
        let name = if config.prefix.is_empty() {
            "component".to_string()
        } else {
            config.prefix.to_ascii_lowercase().replace('_', "-")
        };
        Component {
            name,
            service_type,
            config,
            provider: Arc::new(NoMetrics),
            input_event_types: Vec::new(),
            output_event_types: Vec::new(),
            metadata: Vec::new(),
            backoff: Backoff::default(),
            default_health_port: None,
            metrics_namespace: None,
            collectors: Vec::new(),
        }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The prefix of every name on `/metrics` (`contract_data` gives
    /// `contract_data_flowctl_registered`); the component's name by default.
    pub fn with_metrics_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.metrics_namespace = Some(namespace.into());
        self
    }

    /// Serves `collector`'s metrics on `/metrics` too, as they are (names included): for
    /// histograms and counters, which the named numbers of [`Component::with_metrics`]
    /// cannot express.
    pub fn with_collector(
        mut self,
        collector: impl prometheus_client::collector::Collector + 'static,
    ) -> Self {
        self.collectors.push(Box::new(collector));
        self
    }

    /// Where heartbeats, `/health` and `/metrics` get their numbers.
    pub fn with_metrics(mut self, provider: impl MetricsProvider) -> Self {
        self.provider = Arc::new(provider);
        self
    }

    /// Event types read and written (e.g. `token_transfer.TokenTransferEvent`).
    pub fn with_event_types(mut self, inputs: &[&str], outputs: &[&str]) -> Self {
        self.input_event_types = inputs.iter().map(|s| s.to_string()).collect();
        self.output_event_types = outputs.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Registration retry pacing (default 500 ms doubling to 30 s).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The health port used when `HEALTH_PORT` is not set (without one, no HTTP endpoints).
    pub fn with_default_health_port(mut self, port: u16) -> Self {
        self.default_health_port = Some(port);
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves the health endpoints and, when `ENABLE_FLOWCTL` is set, starts registering in
    /// the background. Returns at once: an absent control plane never delays the component.
    /// Fails only when the health port cannot be bound.
    pub async fn start(mut self) -> Result<Handle, StartError> {
        let namespace = crate::metrics::prometheus_name(
            "",
            self.metrics_namespace.as_deref().unwrap_or(&self.name),
        );
        let collectors = std::mem::take(&mut self.collectors);
        let started = Instant::now();
        let shared = Arc::new_cyclic(|weak: &std::sync::Weak<Shared>| {
            let mut prometheus = prometheus_client::registry::Registry::default();
            let weak = weak.clone();
            let extra = move || {
                let mut m = Metrics::new();
                if let Some(s) = weak.upgrade() {
                    m.insert("up".into(), 1.0);
                    m.insert("ready".into(), if s.is_ready() { 1.0 } else { 0.0 });
                    m.insert("uptime_seconds".into(), s.started.elapsed().as_secs_f64());
                    m.insert(
                        "flowctl_registered".into(),
                        if s.service_id().is_some() { 1.0 } else { 0.0 },
                    );
                    let sent = s.heartbeats_sent.load(Ordering::Relaxed);
                    let failed = s.heartbeat_errors.load(Ordering::Relaxed);
                    m.insert("flowctl_heartbeats_sent_total".into(), sent as f64);
                    m.insert("flowctl_heartbeat_errors_total".into(), failed as f64);
                }
                m
            };
            prometheus.register_collector(Box::new(ProviderCollector {
                namespace,
                provider: self.provider.clone(),
                extra: Arc::new(extra),
            }));
            for c in collectors {
                prometheus.register_collector(c);
            }
            Shared {
                name: self.name.clone(),
                config: self.config.clone(),
                started,
                provider: self.provider.clone(),
                prometheus,
                ready: AtomicBool::new(false),
                health: AtomicU8::new(0),
                service_id: Mutex::new(None),
                heartbeats_sent: AtomicU64::new(0),
                heartbeat_errors: AtomicU64::new(0),
            }
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();

        let mut health_addr = None;
        if let Some(port) = self.config.health_port.or(self.default_health_port) {
            let addr = SocketAddr::new(self.config.health_bind, port);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::HealthBind { addr, source })?;
            let local = listener.local_addr().unwrap_or(addr);
            health_addr = Some(local);
            let app = crate::http::router(shared.clone());
            let mut stop = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "health endpoints stopped");
                }
            }));
            tracing::info!(addr = %local, "serving /health /ready /live /metrics");
        }

        if self.config.enabled {
            let health_endpoint = health_addr
                .map(|a| format!("http://{a}/health"))
                .unwrap_or_default();
            let mut metadata: std::collections::HashMap<String, String> =
                self.metadata.into_iter().collect();
            metadata
                .entry("name".into())
                .or_insert_with(|| self.name.clone());
            metadata
                .entry("version".into())
                .or_insert_with(|| env!("CARGO_PKG_VERSION").into());
            if let Some(port) = self.config.port {
                metadata
                    .entry("port".into())
                    .or_insert_with(|| port.to_string());
            }
            let info = ServiceInfo {
                service_id: self.config.service_id.clone().unwrap_or_default(),
                service_type: self.service_type.proto() as i32,
                input_event_types: self.input_event_types,
                output_event_types: self.output_event_types,
                health_endpoint,
                max_inflight: 0,
                metadata,
                component_id: self.config.component_id.clone().unwrap_or_default(),
            };
            let control = ControlLoop {
                shared: shared.clone(),
                info,
                backoff: self.backoff,
                stop: stop_rx,
            };
            tasks.push(tokio::spawn(control.run()));
        } else {
            tracing::info!("flowctl integration disabled (ENABLE_FLOWCTL is not true)");
        }
        Ok(Handle {
            shared,
            stop: stop_tx,
            tasks,
            health_addr,
        })
    }
}

/// The longest [`Handle::shutdown`] takes: a component's stop must not wait for its
/// supervisor's SIGKILL.
pub const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// A started component integration. Dropping it without [`Handle::shutdown`] leaves the
/// background tasks running until the runtime ends.
pub struct Handle {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    health_addr: Option<SocketAddr>,
}

impl Handle {
    /// What `/ready` answers (false until set).
    pub fn set_ready(&self, ready: bool) {
        self.shared.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.shared.is_ready()
    }

    /// What `/health` answers (healthy until set).
    pub fn set_health(&self, health: Health) {
        let v = match health {
            Health::Healthy => 0,
            Health::Degraded => 1,
            Health::Unhealthy => 2,
        };
        self.shared.health.store(v, Ordering::Relaxed);
    }

    /// The id the control plane gave, while registered.
    pub fn service_id(&self) -> Option<String> {
        self.shared.service_id()
    }

    /// Where the health endpoints listen (useful with `HEALTH_PORT=0`).
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Unregisters (when registered), stops heartbeats and the health endpoints.
    /// Within [`SHUTDOWN_TIMEOUT`] at most, however the control plane and the health clients
    /// behave: what has not finished by then is abandoned.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_TIMEOUT;
        for mut task in self.tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                tracing::debug!("a control-plane task did not stop in time; abandoning it");
                task.abort();
            }
        }
    }
}
