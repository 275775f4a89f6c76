//! The registry's state: registered components and pipeline runs, in one place.
//!
//! Both gRPC APIs and the supervisor go through [`Registry`]. Registrations live in memory
//! only: after a restart of the registry a component's next heartbeat gets `NOT_FOUND` and it
//! registers again (the SDK and the Go components do so). Runs are persisted in the
//! [`RunStore`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use flowctl_proto::flowctl::v1::{ComponentInfo, ComponentType};
use flowctl_proto::flowctl::{ComponentMetrics, PipelineRun, RunMetrics, RunStatus, ServiceType};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::dead_letters::{DeadLetterError, DeadLetterStore};
use super::health::{self, HealthStatus, Liveness};
use super::link::{self, Candidate, Claims, LinkedBy};
use super::store::{system_time_timestamp, timestamp_ms, RunFilter, RunStore, StoreError};

/// How the registry judges liveness and keeps history.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// The interval components are told to heartbeat at (`FLOWCTL_HEARTBEAT_INTERVAL`).
    pub heartbeat_interval: Duration,
    /// Silence after which a component is unhealthy; `None` means 3 × `heartbeat_interval`.
    pub ttl: Option<Duration>,
    /// Where the run store lives; `None` keeps runs in memory only.
    pub state_dir: Option<PathBuf>,
    /// Finished runs kept in the store, newest first.
    pub run_retention: usize,
    /// How long `StopPipelineRun` waits for the owner of a run to stop it.
    pub stop_timeout: Duration,
    /// How long a registration linked to no supervised component stays listed once it is
    /// unhealthy (silent past the TTL); then it is dropped and counted.
    pub unlinked_retention: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            heartbeat_interval: Duration::from_secs(10),
            ttl: None,
            state_dir: None,
            run_retention: 1000,
            stop_timeout: Duration::from_secs(120),
            unlinked_retention: Duration::from_secs(300),
        }
    }
}

impl RegistryConfig {
    pub fn ttl(&self) -> Duration {
        self.ttl.unwrap_or(self.heartbeat_interval * 3)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("service {0:?} is not registered (register again)")]
    ServiceNotFound(String),
    #[error("service {service_id:?} belongs to another supervised component, not to {caller}")]
    NotYours { service_id: String, caller: String },
    #[error("{0}")]
    Full(String),
    #[error("no pipeline run matches {0:?}")]
    RunNotFound(String),
    #[error("run id prefix {prefix:?} is ambiguous; it matches {}", matches.join(", "))]
    AmbiguousRun {
        prefix: String,
        matches: Vec<String>,
    },
    #[error("a pipeline run with id {0:?} already exists")]
    RunExists(String),
    #[error("pipeline run {run_id} already ended ({status})")]
    RunEnded {
        run_id: String,
        status: &'static str,
    },
    #[error("{0}")]
    InvalidArgument(String),
    #[error(
        "pipeline run {run_id} is owned by a process this registry cannot stop \
         (components still heartbeating: {}); stop it where it runs", live.join(", ")
    )]
    LiveOwner { run_id: String, live: Vec<String> },
    #[error("the owner of pipeline run {run_id} could not stop it: {reason}")]
    StopFailed { run_id: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    DeadLetters(#[from] DeadLetterError),
    #[error(transparent)]
    Chunks(#[from] super::chunks::ChunkError),
}

/// A metric value as the component sent it: `flowctl.ControlPlane` sends numbers,
/// `flowctl.v1` sends text.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Number(f64),
    Text(String),
}

impl MetricValue {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            MetricValue::Number(n) => Some(*n),
            MetricValue::Text(t) => t.trim().parse().ok(),
        }
    }

    pub fn to_text(&self) -> String {
        match self {
            MetricValue::Number(n) => n.to_string(),
            MetricValue::Text(t) => t.clone(),
        }
    }
}

/// Which API a component registered through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `flowctl.ControlPlane` (the Go components).
    V0,
    /// `flowctl.v1.ControlPlaneService`.
    V1,
}

/// A component the supervisor started: `pipeline/component`. Registrations made by its
/// processes carry it, so only they may heartbeat or unregister them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SupervisedComponent {
    pub pipeline: String,
    pub component: String,
}

impl std::fmt::Display for SupervisedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.pipeline, self.component)
    }
}

/// What a component said about itself when it registered.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Wanted service id (`FLOWCTL_SERVICE_ID`, v1 `ComponentInfo.id`); may be empty.
    pub service_id: String,
    /// `FLOWCTL_COMPONENT_ID`: ties the registration to a supervised process; may be empty.
    pub component_id: String,
    pub api: Api,
    pub service_type: ServiceType,
    /// The v1 view (name, version, endpoint, event types, metadata).
    pub info: ComponentInfo,
    pub max_inflight: i32,
}

/// One registered component as the supervisor and the APIs see it.
#[derive(Debug, Clone)]
pub struct ComponentRegistration {
    pub service_id: String,
    pub component_id: String,
    pub api: Api,
    pub service_type: ServiceType,
    pub info: ComponentInfo,
    pub max_inflight: i32,
    pub registered_at: SystemTime,
    pub last_heartbeat: Option<SystemTime>,
    /// Time since the last heartbeat (or since registration, if none yet).
    pub silent_for: Duration,
    /// The effective status (see [`health::decide`]).
    pub health: HealthStatus,
    /// The latest status the component reported itself.
    pub reported: HealthStatus,
    pub metrics: HashMap<String, MetricValue>,
    /// The supervised component whose process registered it; `None` for registrations made
    /// by an operator, in process, or on a registry that supervises nothing.
    pub owner: Option<SupervisedComponent>,
    /// The supervised component it belongs to and how that was found (see [`link`]).
    pub linked: Option<(SupervisedComponent, LinkedBy)>,
}

impl ComponentRegistration {
    pub fn is_healthy(&self) -> bool {
        health::is_healthy(self.health)
    }

    /// How long ago the last heartbeat arrived (`None` before the first one).
    pub fn last_heartbeat_age(&self) -> Option<Duration> {
        self.last_heartbeat
            .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).and_then(MetricValue::as_f64)
    }
}

/// A change the supervisor (or anyone) may react to. Heartbeats that change nothing are not
/// events, so a busy registry does not flood subscribers.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryEvent {
    Registered {
        service_id: String,
        component_id: String,
    },
    Unregistered {
        service_id: String,
        component_id: String,
    },
    HealthChanged {
        service_id: String,
        component_id: String,
        health: HealthStatus,
    },
    /// A bounded run has made no progress for its `stalled_after` (announced once per stall).
    RunStalled {
        run_id: String,
        pipeline: String,
        message: String,
    },
    /// It heartbeats far faster than it was told to (announced once per component).
    HeartbeatTooFast {
        service_id: String,
        component_id: String,
        /// The mean gap between its recent heartbeats.
        every: Duration,
        /// What to tell the operator: the component and the fix.
        message: String,
    },
}

/// Heartbeats closer together than a tenth of the interval, this many in a row, are a
/// component misreading `FLOWCTL_HEARTBEAT_INTERVAL` rather than jitter or a catch-up.
const FAST_BEATS_TO_WARN: u32 = 20;

/// Asks the owner of a running pipeline (the supervisor) to stop it. The owner answers on
/// `reply` once the pipeline has stopped, or with the reason it could not.
#[derive(Debug)]
pub struct StopRequest {
    pub run_id: String,
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// The channel on which a run's owner receives [`StopRequest`]s.
pub type RunOwner = mpsc::Sender<StopRequest>;

/// Asks the supervisor that runs the pipelines (the daemon) to start a replay. It answers on
/// `reply` with the replay's run id and instance name, or with why it cannot.
#[derive(Debug)]
pub struct ReplayRequest {
    pub pipeline: String,
    pub range: crate::replay::ReplayRange,
    /// Dead letters to resolve when the replay completes without failing on them again.
    pub resolve_dead_letters: Vec<String>,
    pub reply: oneshot::Sender<Result<(String, String), tonic::Status>>,
}

/// The channel on which the daemon receives [`ReplayRequest`]s.
pub type Replayer = mpsc::Sender<ReplayRequest>;

/// A run to create.
#[derive(Debug, Default)]
pub struct NewRun {
    /// Wanted id; a fresh UUID when `None` or empty.
    pub run_id: Option<String>,
    pub pipeline_name: String,
    pub config_yaml: String,
    /// The `FLOWCTL_COMPONENT_ID`s of the run's components: their heartbeat metrics are
    /// summed into the run's metrics.
    pub component_ids: Vec<String>,
    /// Who can stop the run; `None` when the creator is a remote client.
    pub owner: Option<RunOwner>,
    /// The ledger range of a bounded run; 0 leaves that end open.
    pub from_ledger: u32,
    pub to_ledger: u32,
    /// A bounded run that makes no progress for this long is reported stalled.
    pub stalled_after: Option<Duration>,
}

/// A change to a run; `None` fields are left as they are.
#[derive(Debug, Default, Clone)]
pub struct RunUpdate {
    pub status: Option<RunStatus>,
    /// Metrics given by the caller replace the ones summed from heartbeats from then on.
    pub metrics: Option<RunMetrics>,
    pub error: Option<String>,
}

struct Entry {
    registration: Registration,
    registered_at: SystemTime,
    last_heartbeat: Option<SystemTime>,
    last_seen: Instant,
    reported: HealthStatus,
    metrics: HashMap<String, MetricValue>,
    /// The health last announced as an event.
    announced: HealthStatus,
    owner: Option<SupervisedComponent>,
    linked: Option<(SupervisedComponent, LinkedBy)>,
    /// Consecutive heartbeats that came far sooner than the interval, and when the run began.
    fast_beats: u32,
    fast_since: Instant,
}

impl Entry {
    /// What a sink reports as `last_ledger_written`.
    fn last_ledger_written(&self) -> Option<u32> {
        if self.registration.service_type != ServiceType::Sink {
            return None;
        }
        let ledger = self.metrics.get("last_ledger_written")?.as_f64()?;
        (ledger >= 1.0).then(|| ledger.min(u32::MAX as f64) as u32)
    }

    fn liveness(&self) -> Liveness {
        Liveness {
            last_seen: self.last_seen,
            reported: self.reported,
        }
    }

    fn snapshot(&self, service_id: &str, now: Instant, ttl: Duration) -> ComponentRegistration {
        let r = &self.registration;
        ComponentRegistration {
            service_id: service_id.to_string(),
            component_id: r.component_id.clone(),
            api: r.api,
            service_type: r.service_type,
            info: r.info.clone(),
            max_inflight: r.max_inflight,
            registered_at: self.registered_at,
            last_heartbeat: self.last_heartbeat,
            silent_for: now.saturating_duration_since(self.last_seen),
            health: health::decide(self.liveness(), now, ttl),
            reported: self.reported,
            metrics: self.metrics.clone(),
            owner: self.owner.clone(),
            linked: self.linked.clone(),
        }
    }
}

struct ActiveRun {
    run: PipelineRun,
    owner: Option<RunOwner>,
    /// The caller gave metrics: stop summing heartbeats.
    explicit_metrics: bool,
    /// Last metrics seen per component, kept when a component goes away.
    seen: HashMap<String, ComponentMetrics>,
    /// The last ledger each sink reported written, kept when it goes away.
    sink_ledgers: HashMap<String, u32>,
    stalled_after: Option<Duration>,
    /// The last progress seen (ledger done, events counted) and when it changed.
    progress: ((u32, i64), Instant),
    /// Why it is stalled, once reported.
    stalled: Option<String>,
}

impl ActiveRun {
    /// Notes what a component of this run reports; a run is as far as its slowest sink.
    fn saw(&mut self, component_id: &str, entry: &Entry) {
        self.seen
            .insert(component_id.to_string(), component_metrics(&entry.metrics));
        if let Some(ledger) = entry.last_ledger_written() {
            self.sink_ledgers.insert(component_id.to_string(), ledger);
            if let Some(done) = self.sink_ledgers.values().min() {
                self.run.last_ledger_done = *done;
            }
        }
    }
}

struct Runs {
    store: RunStore,
    active: HashMap<String, ActiveRun>,
}

struct Inner {
    config: RegistryConfig,
    ttl: Duration,
    services: RwLock<HashMap<String, Entry>>,
    /// The live processes the supervisor started, by pid.
    supervised: RwLock<HashMap<u32, SupervisedComponent>>,
    /// Counts the starts in `supervised`: a connection no supervised process held can only
    /// come to belong to one after a start.
    supervised_starts: std::sync::atomic::AtomicU64,
    runs: Mutex<Runs>,
    dead_letters: Mutex<DeadLetterStore>,
    chunks: Mutex<super::chunks::ChunkStore>,
    /// The `HEALTH_PORT` of each supervised component, for linking by health endpoint.
    health_ports: RwLock<HashMap<SupervisedComponent, u16>>,
    /// Unlinked registrations dropped after staying unhealthy past the retention.
    dropped_unlinked: std::sync::atomic::AtomicU64,
    /// Components already warned about heartbeating too fast.
    warned_fast: Mutex<std::collections::HashSet<String>>,
    /// Set by a daemon that runs pipelines; without it replays are refused.
    replayer: Mutex<Option<Replayer>>,
    events: broadcast::Sender<RegistryEvent>,
}

/// The control plane's state. Cheap to clone; every clone is the same registry.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.inner.config)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Registry {
    /// Opens the run store and picks up runs that were still active when it was last written
    /// (they have no owner any more; a remote creator can still update them).
    pub fn open(config: RegistryConfig) -> Result<Registry, RegistryError> {
        let store = match &config.state_dir {
            Some(dir) => RunStore::open(dir, config.run_retention)?,
            None => RunStore::in_memory(config.run_retention)?,
        };
        let active = store
            .unfinished()?
            .into_iter()
            .map(|run| {
                let seen = run
                    .metrics
                    .as_ref()
                    .map(|m| m.component_metrics.clone())
                    .unwrap_or_default();
                (
                    run.run_id.clone(),
                    ActiveRun {
                        run,
                        owner: None,
                        explicit_metrics: false,
                        seen,
                        sink_ledgers: HashMap::new(),
                        stalled_after: None,
                        progress: ((0, 0), Instant::now()),
                        stalled: None,
                    },
                )
            })
            .collect();
        let dead_letters = match &config.state_dir {
            Some(dir) => DeadLetterStore::open(dir)?,
            None => DeadLetterStore::in_memory()?,
        };
        let chunks = match &config.state_dir {
            Some(dir) => super::chunks::ChunkStore::open(dir)?,
            None => super::chunks::ChunkStore::in_memory()?,
        };
        let (events, _) = broadcast::channel(1024);
        Ok(Registry {
            inner: Arc::new(Inner {
                ttl: config.ttl(),
                config,
                services: RwLock::new(HashMap::new()),
                supervised: RwLock::new(HashMap::new()),
                supervised_starts: Default::default(),
                runs: Mutex::new(Runs { store, active }),
                dead_letters: Mutex::new(dead_letters),
                chunks: Mutex::new(chunks),
                warned_fast: Mutex::default(),
                health_ports: RwLock::default(),
                dropped_unlinked: Default::default(),
                replayer: Mutex::new(None),
                events,
            }),
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.inner.config
    }

    /// Replays asked for through the control plane go to `replayer` from now on.
    pub fn set_replayer(&self, replayer: Replayer) {
        *lock(&self.inner.replayer) = Some(replayer);
    }

    /// Who starts replays, if anyone does here.
    pub fn replayer(&self) -> Option<Replayer> {
        lock(&self.inner.replayer).clone()
    }

    /// The id of the newest active run of `pipeline`, if any (dead letters reported without
    /// a run id belong to it).
    pub fn active_run_of(&self, pipeline: &str) -> Option<String> {
        let runs = lock(&self.inner.runs);
        runs.active
            .values()
            .filter(|a| a.run.pipeline_name == pipeline)
            .max_by_key(|a| a.run.start_time.as_ref().map(timestamp_ms))
            .map(|a| a.run.run_id.clone())
    }

    /// The chunk runs, beside the run history.
    pub fn chunks(&self) -> std::sync::MutexGuard<'_, super::chunks::ChunkStore> {
        lock(&self.inner.chunks)
    }

    /// The dead-letter store, beside the run store.
    pub fn dead_letters(&self) -> std::sync::MutexGuard<'_, DeadLetterStore> {
        lock(&self.inner.dead_letters)
    }

    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// Registry changes. A subscriber that lags gets `RecvError::Lagged` and should re-read
    /// [`Registry::list`].
    pub fn subscribe(&self) -> broadcast::Receiver<RegistryEvent> {
        self.inner.events.subscribe()
    }

    fn emit(&self, event: RegistryEvent) {
        // No subscriber is fine: nobody is watching.
        let _ = self.inner.events.send(event);
    }

    fn services_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.inner
            .services
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn services_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.inner
            .services
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    // ---- components -------------------------------------------------------------------------

    /// Registers (or re-registers) a component and returns its service id: the component id
    /// when given, else the wanted service id, else a generated one. In-process and operator
    /// registrations have no owner and replace whatever holds that id.
    pub fn register(&self, registration: Registration) -> String {
        self.register_owned(registration, None)
            .expect("a registration without an owner is never refused")
    }

    /// Registers for `owner`, the supervised component whose process asked. An id another
    /// supervised component holds is not taken over: the newcomer is registered as
    /// `pipeline/component` instead (two pipelines may both have a `source`).
    pub fn register_owned(
        &self,
        mut registration: Registration,
        owner: Option<SupervisedComponent>,
    ) -> Result<String, RegistryError> {
        let linked = link::decide(
            &Claims {
                component_id: &registration.component_id,
                metadata: Some(&registration.info.metadata),
                health_endpoint: &registration.info.endpoint,
            },
            owner.as_ref(),
            &self.live_components(),
        );
        if let Some((component, _)) = &linked {
            if registration.component_id.is_empty() {
                registration.component_id.clone_from(&component.component);
            }
        }
        let mut services = self.services_write();
        let mut service_id = if !registration.component_id.is_empty() {
            registration.component_id.clone()
        } else if !registration.service_id.is_empty() {
            registration.service_id.clone()
        } else {
            let kind = match registration.service_type {
                ServiceType::Unspecified => "service",
                known => service_type_name(known),
            };
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("{kind}-{}", &id[..12])
        };
        if let Some(owner) = &owner {
            let held_by_another = |id: &str| {
                services
                    .get(id)
                    .and_then(|e| e.owner.as_ref())
                    .is_some_and(|o| o != owner)
            };
            if held_by_another(&service_id) {
                service_id = owner.to_string();
                if held_by_another(&service_id) {
                    return Err(RegistryError::NotYours {
                        service_id,
                        caller: owner.to_string(),
                    });
                }
            }
        }
        if !services.contains_key(&service_id) && services.len() >= super::limits::MAX_SERVICES {
            return Err(RegistryError::Full(format!(
                "the registry already holds {} services, the most it keeps; unregister some first",
                super::limits::MAX_SERVICES
            )));
        }
        registration.service_id = service_id.clone();
        registration.info.id = service_id.clone();
        let component_id = registration.component_id.clone();
        let entry = Entry {
            registration,
            registered_at: SystemTime::now(),
            last_heartbeat: None,
            last_seen: Instant::now(),
            reported: HealthStatus::Unknown,
            metrics: HashMap::new(),
            announced: HealthStatus::Healthy,
            owner,
            linked: linked.clone(),
            fast_beats: 0,
            fast_since: Instant::now(),
        };
        services.insert(service_id.clone(), entry);
        drop(services);
        tracing::info!(
            service_id,
            component_id,
            linked_by = linked.as_ref().map_or("nothing", |(_, by)| by.as_str()),
            "component registered"
        );
        self.emit(RegistryEvent::Registered {
            service_id: service_id.clone(),
            component_id,
        });
        Ok(service_id)
    }

    /// Who owns a registration: `None` if `service_id` is not registered, `Some(None)` if
    /// nobody in particular does.
    pub fn owner_of(&self, service_id: &str) -> Option<Option<SupervisedComponent>> {
        let services = self.services_read();
        let key = Self::key_for(&services, service_id)?;
        services.get(&key).map(|e| e.owner.clone())
    }

    // ---- supervised processes ---------------------------------------------------------------

    /// The supervisor started `pid` for `component`: connections from it (or its descendants)
    /// act for that component.
    pub fn process_started(&self, pid: u32, component: SupervisedComponent) {
        self.inner
            .supervised
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid, component);
        self.inner
            .supervised_starts
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// How many supervised processes have been started so far.
    pub fn supervised_starts(&self) -> u64 {
        self.inner
            .supervised_starts
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The `HEALTH_PORT` the supervisor gave `component`.
    pub fn component_health_port(&self, component: SupervisedComponent, port: u16) {
        self.inner
            .health_ports
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(component, port);
    }

    /// `pid` has exited: when it was its component's last live process, the registrations
    /// linked to that component go too (a restarted process registers anew, so a crash loop
    /// does not pile up dead registrations).
    pub fn process_exited(&self, pid: u32) {
        let gone = {
            let mut supervised = self
                .inner
                .supervised
                .write()
                .unwrap_or_else(|p| p.into_inner());
            supervised
                .remove(&pid)
                .filter(|c| !supervised.values().any(|other| other == c))
        };
        let Some(component) = gone else { return };
        let linked: Vec<String> = self
            .services_read()
            .iter()
            .filter(|(_, e)| e.linked.as_ref().is_some_and(|(c, _)| *c == component))
            .map(|(id, _)| id.clone())
            .collect();
        for id in linked {
            tracing::info!(service_id = %id, component = %component, "its process exited");
            self.unregister(&id);
        }
    }

    /// The components with a live process, for linking registrations to them.
    fn live_components(&self) -> Vec<Candidate> {
        let ports = self
            .inner
            .health_ports
            .read()
            .unwrap_or_else(|p| p.into_inner());
        let mut live: Vec<Candidate> = Vec::new();
        for component in self.supervised_processes().into_values() {
            if !live.iter().any(|c| c.component == component) {
                live.push(Candidate {
                    health_port: ports.get(&component).copied().unwrap_or(0),
                    component,
                });
            }
        }
        live
    }

    /// How many unlinked registrations were dropped after staying unhealthy.
    pub fn dropped_unlinked(&self) -> u64 {
        self.inner
            .dropped_unlinked
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The live supervised processes.
    pub fn supervised_processes(&self) -> HashMap<u32, SupervisedComponent> {
        self.inner
            .supervised
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a heartbeat. `status` is the component's own report (`Unknown` keeps the
    /// previous one); `metrics`, when not empty, replace the previous set.
    pub fn heartbeat(
        &self,
        service_id: &str,
        status: HealthStatus,
        metrics: HashMap<String, MetricValue>,
    ) -> Result<(), RegistryError> {
        let now = Instant::now();
        let mut too_fast = None;
        let changed = {
            let mut services = self.services_write();
            let entry = services
                .get_mut(service_id)
                .ok_or_else(|| RegistryError::ServiceNotFound(service_id.to_string()))?;
            if now.saturating_duration_since(entry.last_seen)
                < self.inner.config.heartbeat_interval / 10
            {
                if entry.fast_beats == 0 {
                    entry.fast_since = entry.last_seen;
                }
                entry.fast_beats += 1;
                if entry.fast_beats == FAST_BEATS_TO_WARN {
                    let every =
                        now.saturating_duration_since(entry.fast_since) / FAST_BEATS_TO_WARN;
                    too_fast = Some((entry.registration.component_id.clone(), every));
                }
            } else {
                entry.fast_beats = 0;
            }
            entry.last_seen = now;
            entry.last_heartbeat = Some(SystemTime::now());
            entry.reported = health::merge_reported(entry.reported, status);
            if !metrics.is_empty() {
                // Update in place: the long-lived map and its keys stay where they are, so
                // tens of thousands of heartbeats a second do not fragment the heap.
                entry.metrics.retain(|k, _| metrics.contains_key(k));
                for (name, value) in metrics {
                    match entry.metrics.get_mut(&name) {
                        Some(slot) => *slot = value,
                        None => {
                            entry.metrics.insert(name, value);
                        }
                    }
                }
            }
            let health = health::decide(entry.liveness(), now, self.inner.ttl);
            if health != entry.announced {
                entry.announced = health;
                Some((entry.registration.component_id.clone(), health))
            } else {
                None
            }
        };
        if let Some((component_id, health)) = changed {
            self.emit(RegistryEvent::HealthChanged {
                service_id: service_id.to_string(),
                component_id,
                health,
            });
        }
        if let Some((component_id, every)) = too_fast {
            self.warn_too_fast(service_id, component_id, every);
        }
        Ok(())
    }

    /// Says once per component that it misreads the interval, and how to fix it.
    fn warn_too_fast(&self, service_id: &str, component_id: String, every: Duration) {
        let name = if component_id.is_empty() {
            service_id.to_string()
        } else {
            component_id.clone()
        };
        if !lock(&self.inner.warned_fast).insert(name.clone()) {
            return;
        }
        let told = humantime::format_duration(self.inner.config.heartbeat_interval);
        let message = format!(
            "component {name} heartbeats every {every:?} though it was told \
             FLOWCTL_HEARTBEAT_INTERVAL={told}: it reads the interval as milliseconds (and \
             takes `{told}` for a few of them). Set `heartbeat_interval_format: millis` on \
             component {name} in the pipeline file"
        );
        tracing::warn!(component = %name, "{message}");
        self.emit(RegistryEvent::HeartbeatTooFast {
            service_id: service_id.to_string(),
            component_id,
            every,
            message,
        });
    }

    /// Re-evaluates every component's health and announces the changes (TTL expiry has no
    /// heartbeat to trigger it). Returns how many changed.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut changes = Vec::new();
        // Both come from flags: a retention of u64::MAX seconds means never, not a panic.
        let stale_after = self
            .inner
            .ttl
            .saturating_add(self.inner.config.unlinked_retention);
        let stale: Vec<String> = self
            .services_read()
            .iter()
            .filter(|(_, e)| {
                e.linked.is_none() && now.saturating_duration_since(e.last_seen) >= stale_after
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if self.unregister(&id) {
                let n = self
                    .inner
                    .dropped_unlinked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                tracing::info!(
                    service_id = %id,
                    dropped = n,
                    "dropped: linked to no supervised component and silent for {} \
                     (TTL plus unlinked retention); {n} dropped so far",
                    humantime::format_duration(stale_after)
                );
            }
        }
        {
            let mut services = self.services_write();
            for (id, entry) in services.iter_mut() {
                let health = health::decide(entry.liveness(), now, self.inner.ttl);
                if health != entry.announced {
                    entry.announced = health;
                    changes.push(RegistryEvent::HealthChanged {
                        service_id: id.clone(),
                        component_id: entry.registration.component_id.clone(),
                        health,
                    });
                }
            }
        }
        let n = changes.len();
        for event in changes {
            if let RegistryEvent::HealthChanged {
                service_id, health, ..
            } = &event
            {
                tracing::info!(
                    service_id,
                    health = health::status_name(*health),
                    "component health changed"
                );
            }
            self.emit(event);
        }
        n
    }

    /// Runs [`Registry::sweep`] for ever, often enough to notice an expiry within a quarter
    /// of the TTL.
    pub async fn sweep_forever(self) {
        let period = (self.inner.ttl / 4).clamp(Duration::from_millis(20), Duration::from_secs(5));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_flush = Instant::now();
        loop {
            tick.tick().await;
            self.sweep();
            self.check_stalls();
            if last_flush.elapsed() >= RUN_FLUSH_PERIOD {
                last_flush = Instant::now();
                if let Err(e) = self.flush_active_runs() {
                    tracing::warn!(error = %e, "cannot save run metrics");
                }
            }
        }
    }

    /// Reports each bounded run whose ledgers have stopped advancing for its `stalled_after`:
    /// in its record's `error`, the log and a [`RegistryEvent::RunStalled`]. A run that moves
    /// again is no longer stalled. Returns the runs newly stalled.
    pub fn check_stalls(&self) -> Vec<String> {
        let now = Instant::now();
        let mut newly = Vec::new();
        let mut events = Vec::new();
        {
            let mut runs = lock(&self.inner.runs);
            let ids: Vec<String> = runs
                .active
                .iter()
                .filter(|(_, a)| a.run.to_ledger > 0 && a.stalled_after.is_some())
                .filter(|(_, a)| a.run.status == RunStatus::Running as i32)
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                let Some(mut active) = runs.active.remove(&id) else {
                    continue;
                };
                self.refresh(&mut active);
                let events_done = active
                    .run
                    .metrics
                    .as_ref()
                    .map_or(0, |m| m.events_processed);
                let seen = (active.run.last_ledger_done, events_done);
                if seen != active.progress.0 {
                    active.progress = (seen, now);
                    if active.stalled.take().is_some() {
                        active.run.error.clear();
                        tracing::info!(run_id = %id, "run moves again: no longer stalled");
                    }
                } else if let (None, Some(after)) = (&active.stalled, active.stalled_after) {
                    let quiet = now.saturating_duration_since(active.progress.1);
                    if quiet >= after {
                        let run = active.run.clone();
                        let at = if run.last_ledger_done > 0 {
                            format!("past ledger {}", run.last_ledger_done)
                        } else {
                            "yet".to_string()
                        };
                        let message = format!(
                            "stalled: no ledger of {}-{} written {at} for {} \
                             (spec.range.stalled_after)",
                            run.from_ledger,
                            run.to_ledger,
                            humantime::format_duration(Duration::from_secs(quiet.as_secs())),
                        );
                        tracing::warn!(run_id = %id, pipeline = %run.pipeline_name, "{message}");
                        active.run.error.clone_from(&message);
                        events.push(RegistryEvent::RunStalled {
                            run_id: id.clone(),
                            pipeline: run.pipeline_name.clone(),
                            message: message.clone(),
                        });
                        active.stalled = Some(message);
                        newly.push(id.clone());
                        if let Err(e) = runs.store.put(&active.run) {
                            tracing::warn!(error = %e, "cannot save the stalled run");
                        }
                    }
                }
                runs.active.insert(id, active);
            }
        }
        for event in events {
            self.emit(event);
        }
        newly
    }

    /// Why the current run of `pipeline` is stalled, when it is.
    pub fn run_stalled(&self, pipeline: &str) -> Option<String> {
        let runs = lock(&self.inner.runs);
        runs.active
            .values()
            .filter(|a| a.run.pipeline_name == pipeline)
            .max_by_key(|a| a.run.start_time.as_ref().map(timestamp_ms))
            .and_then(|a| a.stalled.clone())
    }

    /// Saves the summed metrics of every active run, so that history keeps recent numbers
    /// even if the process dies before the run ends.
    pub fn flush_active_runs(&self) -> Result<(), RegistryError> {
        let mut runs = lock(&self.inner.runs);
        let ids: Vec<String> = runs.active.keys().cloned().collect();
        for id in ids {
            if let Some(mut active) = runs.active.remove(&id) {
                self.refresh(&mut active);
                let saved = runs.store.put(&active.run);
                runs.active.insert(id, active);
                saved?;
            }
        }
        Ok(())
    }

    /// Ends, as failed, every active run that has no owner: after a supervisor restart these
    /// are runs of the previous process, which nobody will end. Returns the ids ended.
    pub fn fail_orphaned_runs(&self, reason: &str) -> Result<Vec<String>, RegistryError> {
        let orphans: Vec<String> = lock(&self.inner.runs)
            .active
            .iter()
            .filter(|(_, a)| a.owner.as_ref().is_none_or(|o| o.is_closed()))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &orphans {
            self.end_run(id, RunStatus::Failed, Some(reason.to_string()))?;
        }
        Ok(orphans)
    }

    fn key_for(services: &HashMap<String, Entry>, id: &str) -> Option<String> {
        if services.contains_key(id) {
            return Some(id.to_string());
        }
        services
            .iter()
            .find(|(_, e)| !id.is_empty() && e.registration.component_id == id)
            .map(|(k, _)| k.clone())
    }

    /// [`Self::key_for`] among the registrations that can be `pipeline`'s: a component the
    /// supervisor started counts only for its own pipeline's runs (a replay's `sink` is not
    /// the live pipeline's), one it did not start for any.
    fn key_for_run(services: &HashMap<String, Entry>, pipeline: &str, id: &str) -> Option<String> {
        let ours = |e: &Entry| e.owner.as_ref().is_none_or(|o| o.pipeline == pipeline);
        if services.get(id).is_some_and(ours) {
            return Some(id.to_string());
        }
        services
            .iter()
            .find(|(_, e)| !id.is_empty() && e.registration.component_id == id && ours(e))
            .map(|(k, _)| k.clone())
    }

    /// Whether a component with this component id (or service id) is registered.
    pub fn is_registered(&self, id: &str) -> bool {
        Self::key_for(&self.services_read(), id).is_some()
    }

    /// The registration of a component by component id or service id.
    pub fn status(&self, id: &str) -> Option<ComponentRegistration> {
        let services = self.services_read();
        let key = Self::key_for(&services, id)?;
        services
            .get(&key)
            .map(|e| e.snapshot(&key, Instant::now(), self.inner.ttl))
    }

    /// Every registration, sorted by service id.
    pub fn list(&self) -> Vec<ComponentRegistration> {
        let now = Instant::now();
        let mut all: Vec<_> = self
            .services_read()
            .iter()
            .map(|(k, e)| e.snapshot(k, now, self.inner.ttl))
            .collect();
        all.sort_by(|a, b| a.service_id.cmp(&b.service_id));
        all
    }

    /// How many components are registered.
    pub fn len(&self) -> usize {
        self.services_read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes a component (by component id or service id), e.g. when the supervisor has
    /// stopped it or it shut down. Its last metrics stay in the runs it belongs to. Returns
    /// whether it was registered.
    pub fn unregister(&self, id: &str) -> bool {
        let removed = {
            let mut services = self.services_write();
            Self::key_for(&services, id).and_then(|k| services.remove(&k).map(|e| (k, e)))
        };
        let Some((service_id, entry)) = removed else {
            return false;
        };
        let component_id = entry.registration.component_id.clone();
        {
            let mut runs = lock(&self.inner.runs);
            let pipeline = entry.owner.as_ref().map(|o| o.pipeline.as_str());
            for active in runs.active.values_mut() {
                if pipeline.is_some_and(|p| p != active.run.pipeline_name) {
                    continue;
                }
                for cid in [&component_id, &service_id] {
                    if active.run.component_ids.iter().any(|c| c == cid) {
                        active.saw(cid, &entry);
                    }
                }
            }
        }
        tracing::info!(service_id, component_id, "component unregistered");
        self.emit(RegistryEvent::Unregistered {
            service_id,
            component_id,
        });
        true
    }

    // ---- runs -------------------------------------------------------------------------------

    /// Creates a run in status `starting` and returns it.
    pub fn create_run(&self, new: NewRun) -> Result<PipelineRun, RegistryError> {
        if new.pipeline_name.trim().is_empty() {
            return Err(RegistryError::InvalidArgument(
                "pipeline_name must not be empty".into(),
            ));
        }
        let run_id = match new.run_id {
            Some(id) if !id.is_empty() => id,
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let mut runs = lock(&self.inner.runs);
        if runs.active.contains_key(&run_id) || runs.store.get(&run_id)?.is_some() {
            return Err(RegistryError::RunExists(run_id));
        }
        // Active runs are kept whole in memory and are never pruned: bound them.
        if runs.active.len() >= super::limits::MAX_ACTIVE_RUNS {
            return Err(RegistryError::Full(format!(
                "{} runs are active, the most the registry keeps; end some first \
                 (UpdatePipelineRun with a final status, or flowctl pipelines stop)",
                super::limits::MAX_ACTIVE_RUNS
            )));
        }
        let run = PipelineRun {
            run_id: run_id.clone(),
            pipeline_id: new.pipeline_name.clone(),
            pipeline_name: new.pipeline_name,
            status: RunStatus::Starting as i32,
            start_time: Some(system_time_timestamp(SystemTime::now())),
            end_time: None,
            config_yaml: new.config_yaml,
            metrics: Some(RunMetrics::default()),
            error: String::new(),
            component_ids: new.component_ids,
            from_ledger: new.from_ledger,
            to_ledger: new.to_ledger,
            last_ledger_done: 0,
        };
        runs.store.put(&run)?;
        runs.active.insert(
            run_id,
            ActiveRun {
                run: run.clone(),
                owner: new.owner,
                explicit_metrics: false,
                seen: HashMap::new(),
                sink_ledgers: HashMap::new(),
                stalled_after: new.stalled_after,
                progress: ((0, 0), Instant::now()),
                stalled: None,
            },
        );
        Ok(run)
    }

    /// Finds the one run whose id is `id`, or starts with `id`.
    pub fn resolve_run_id(&self, id: &str) -> Result<String, RegistryError> {
        let runs = lock(&self.inner.runs);
        Self::resolve_locked(&runs, id)
    }

    fn resolve_locked(runs: &Runs, id: &str) -> Result<String, RegistryError> {
        if id.is_empty() {
            return Err(RegistryError::InvalidArgument(
                "run_id must not be empty".into(),
            ));
        }
        if runs.active.contains_key(id) || runs.store.get(id)?.is_some() {
            return Ok(id.to_string());
        }
        let mut matches: Vec<String> = runs.store.ids_with_prefix(id, 10)?;
        for key in runs.active.keys().filter(|k| k.starts_with(id)) {
            if !matches.contains(key) {
                matches.push(key.clone());
            }
        }
        match matches.len() {
            0 => Err(RegistryError::RunNotFound(id.to_string())),
            1 => Ok(matches.remove(0)),
            _ => Err(RegistryError::AmbiguousRun {
                prefix: id.to_string(),
                matches,
            }),
        }
    }

    /// Sums the heartbeat metrics of an active run's components into it.
    fn refresh(&self, active: &mut ActiveRun) {
        if !active.explicit_metrics {
            {
                let services = self.services_read();
                for cid in active.run.component_ids.clone() {
                    let pipeline = &active.run.pipeline_name;
                    if let Some(key) = Self::key_for_run(&services, pipeline, &cid) {
                        active.saw(&cid, &services[&key]);
                    }
                }
            }
            let start_ms = active
                .run
                .start_time
                .as_ref()
                .map(timestamp_ms)
                .unwrap_or(0);
            let end_ms = active
                .run
                .end_time
                .as_ref()
                .map(timestamp_ms)
                .unwrap_or_else(|| timestamp_ms(&system_time_timestamp(SystemTime::now())));
            active.run.metrics = Some(sum_metrics(&active.seen, end_ms - start_ms));
        }
    }

    /// Changes a run; a terminal status (completed, failed, stopped) ends it.
    pub fn update_run(
        &self,
        run_id: &str,
        update: RunUpdate,
    ) -> Result<PipelineRun, RegistryError> {
        let mut runs = lock(&self.inner.runs);
        let run_id = Self::resolve_locked(&runs, run_id)?;
        let Some(mut active) = runs.active.remove(&run_id) else {
            let run = runs
                .store
                .get(&run_id)?
                .ok_or_else(|| RegistryError::RunNotFound(run_id.clone()))?;
            return Err(RegistryError::RunEnded {
                run_id,
                status: super::store::status_word(run.status()),
            });
        };
        if let Some(metrics) = update.metrics {
            active.explicit_metrics = true;
            active.run.metrics = Some(metrics);
        }
        if let Some(error) = update.error {
            active.run.error = error;
        }
        let mut ended = false;
        if let Some(status) = update.status.filter(|s| *s != RunStatus::Unknown) {
            active.run.status = status as i32;
            if is_terminal(status) {
                active.run.end_time = Some(system_time_timestamp(SystemTime::now()));
                ended = true;
            }
        }
        self.refresh(&mut active);
        let run = active.run.clone();
        if let Err(e) = runs.store.put(&run) {
            runs.active.insert(run_id, active);
            return Err(e.into());
        }
        if !ended {
            runs.active.insert(run_id, active);
        }
        Ok(run)
    }

    /// Ends a run with a terminal status and an optional error.
    pub fn end_run(
        &self,
        run_id: &str,
        status: RunStatus,
        error: Option<String>,
    ) -> Result<PipelineRun, RegistryError> {
        if !is_terminal(status) {
            return Err(RegistryError::InvalidArgument(format!(
                "a run ends as completed, failed or stopped, not {}",
                super::store::status_word(status)
            )));
        }
        // A run that completed leaving letters open says so.
        let status = match status {
            RunStatus::Completed if self.dead_letters().open_for_run(run_id)? > 0 => {
                RunStatus::CompletedWithDeadLetters
            }
            other => other,
        };
        self.update_run(
            run_id,
            RunUpdate {
                status: Some(status),
                metrics: None,
                error,
            },
        )
    }

    /// One run by id or unique id prefix, with fresh metrics if it is active.
    pub fn get_run(&self, id: &str) -> Result<PipelineRun, RegistryError> {
        let mut runs = lock(&self.inner.runs);
        let run_id = Self::resolve_locked(&runs, id)?;
        if let Some(mut active) = runs.active.remove(&run_id) {
            self.refresh(&mut active);
            let run = active.run.clone();
            runs.active.insert(run_id, active);
            return Ok(run);
        }
        runs.store
            .get(&run_id)?
            .ok_or(RegistryError::RunNotFound(run_id))
    }

    /// Runs newest first; `limit` 0 means 10.
    pub fn list_runs(&self, mut filter: RunFilter) -> Result<Vec<PipelineRun>, RegistryError> {
        if filter.limit == 0 {
            filter.limit = 10;
        }
        let mut runs = lock(&self.inner.runs);
        let mut list = runs.store.list(&filter)?;
        for run in &mut list {
            if let Some(mut active) = runs.active.remove(&run.run_id) {
                self.refresh(&mut active);
                *run = active.run.clone();
                runs.active.insert(run.run_id.clone(), active);
            }
        }
        Ok(list)
    }

    /// Stops a run. With an owner (the supervisor that started it), asks it to stop the
    /// pipeline and waits for the answer. Without one, the run is only marked stopped when no
    /// component of it is still alive; otherwise this is an error saying so.
    pub async fn stop_run(&self, id: &str) -> Result<PipelineRun, RegistryError> {
        let (run_id, owner, component_ids) = {
            let runs = lock(&self.inner.runs);
            let run_id = Self::resolve_locked(&runs, id)?;
            match runs.active.get(&run_id) {
                Some(active) => (
                    run_id,
                    active.owner.clone(),
                    active.run.component_ids.clone(),
                ),
                None => {
                    let run = runs
                        .store
                        .get(&run_id)?
                        .ok_or_else(|| RegistryError::RunNotFound(run_id.clone()))?;
                    return Err(RegistryError::RunEnded {
                        run_id,
                        status: super::store::status_word(run.status()),
                    });
                }
            }
        };
        if let Some(owner) = owner.filter(|o| !o.is_closed()) {
            let (reply, answer) = oneshot::channel();
            let request = StopRequest {
                run_id: run_id.clone(),
                reply,
            };
            let stop_failed = |reason: String| RegistryError::StopFailed {
                run_id: run_id.clone(),
                reason,
            };
            owner
                .send(request)
                .await
                .map_err(|_| stop_failed("the owner has gone away".into()))?;
            match tokio::time::timeout(self.inner.config.stop_timeout, answer).await {
                Err(_) => {
                    return Err(stop_failed(format!(
                        "no answer within {}",
                        humantime::format_duration(self.inner.config.stop_timeout)
                    )))
                }
                Ok(Err(_)) => return Err(stop_failed("the owner dropped the request".into())),
                Ok(Ok(Err(reason))) => return Err(stop_failed(reason)),
                Ok(Ok(Ok(()))) => {}
            }
            // The owner normally ends the run itself; make sure it is marked.
            return match self.end_run(&run_id, RunStatus::Stopped, None) {
                Err(RegistryError::RunEnded { .. }) => self.get_run(&run_id),
                other => other,
            };
        }
        let live: Vec<String> = component_ids
            .iter()
            .filter(|cid| {
                self.status(cid)
                    .is_some_and(|s| s.health != HealthStatus::Unhealthy)
            })
            .cloned()
            .collect();
        if !live.is_empty() {
            return Err(RegistryError::LiveOwner { run_id, live });
        }
        self.end_run(
            &run_id,
            RunStatus::Stopped,
            Some("marked stopped by request: no live owner and no live component to stop".into()),
        )
    }
}

/// How often the sweeper saves active runs' metrics.
const RUN_FLUSH_PERIOD: Duration = Duration::from_secs(10);

fn is_terminal(status: RunStatus) -> bool {
    matches!(
        status,
        RunStatus::Completed
            | RunStatus::CompletedWithDeadLetters
            | RunStatus::Failed
            | RunStatus::Stopped
    )
}

fn first(metrics: &HashMap<String, MetricValue>, names: &[&str]) -> Option<f64> {
    names
        .iter()
        .find_map(|n| metrics.get(*n).and_then(MetricValue::as_f64))
}

/// One component's heartbeat metrics in the run's terms. The names of the Go components
/// (`total_processed`, `total_events_emitted`, `processing_latency_ms`) and plain ones
/// (`events_in`, `events_out`, `bytes_in`, `bytes_out`) are understood.
pub fn component_metrics(metrics: &HashMap<String, MetricValue>) -> ComponentMetrics {
    let int = |names: &[&str]| first(metrics, names).unwrap_or(0.0).max(0.0) as i64;
    ComponentMetrics {
        events_in: int(&[
            "events_in",
            "events_received",
            "events_processed",
            "total_processed",
        ]),
        events_out: int(&["events_out", "events_emitted", "total_events_emitted"]),
        bytes_in: int(&["bytes_in", "bytes_received"]),
        bytes_out: int(&["bytes_out", "bytes_sent"]),
        processing_time_ms: first(metrics, &["processing_time_ms", "processing_latency_ms"])
            .unwrap_or(0.0),
    }
}

/// Run totals. The same events pass through every stage (a processor's events out are its
/// sink's events in), so a sum would count them once per stage: `events_processed` is the
/// count of the stage that handled the most (a component's events out, or its events in when
/// it emits nothing, as a sink), and `bytes_processed` likewise the most bytes any stage read.
pub fn sum_metrics(
    per_component: &HashMap<String, ComponentMetrics>,
    elapsed_ms: i64,
) -> RunMetrics {
    let events: i64 = per_component
        .values()
        .map(|m| {
            if m.events_out > 0 {
                m.events_out
            } else {
                m.events_in
            }
        })
        .max()
        .unwrap_or(0);
    let bytes: i64 = per_component
        .values()
        .map(|m| m.bytes_in)
        .max()
        .unwrap_or(0);
    let seconds = elapsed_ms as f64 / 1000.0;
    RunMetrics {
        events_processed: events,
        events_per_second: if seconds > 0.0 {
            events as f64 / seconds
        } else {
            0.0
        },
        bytes_processed: bytes,
        component_metrics: per_component.clone(),
    }
}

/// The v1 component type of a `flowctl.ControlPlane` service type. Type 4 is `PIPELINE` in
/// our proto and the Go one, but `CONSUMER` in the proto ttp-processor-demo's Node.js consumer
/// was built from, and only consumers send it: it is read as one.
pub fn component_type_of(service_type: ServiceType) -> ComponentType {
    match service_type {
        ServiceType::Source => ComponentType::Source,
        ServiceType::Processor => ComponentType::Processor,
        ServiceType::Sink | ServiceType::Pipeline => ComponentType::Consumer,
        ServiceType::Unspecified => ComponentType::Unspecified,
    }
}

/// How a `flowctl.ControlPlane` service type is shown (type 4: see [`component_type_of`]).
pub fn service_type_name(service_type: ServiceType) -> &'static str {
    match service_type {
        ServiceType::Source => "source",
        ServiceType::Processor => "processor",
        ServiceType::Sink => "sink",
        ServiceType::Pipeline => "consumer",
        ServiceType::Unspecified => "-",
    }
}

/// The `flowctl.ControlPlane` service type of a v1 component type.
pub fn service_type_of(component_type: ComponentType) -> ServiceType {
    match component_type {
        ComponentType::Source => ServiceType::Source,
        ComponentType::Processor => ServiceType::Processor,
        ComponentType::Consumer => ServiceType::Sink,
        ComponentType::Unspecified => ServiceType::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(component_id: &str) -> Registration {
        Registration {
            service_id: String::new(),
            component_id: component_id.into(),
            api: Api::V0,
            service_type: ServiceType::Processor,
            info: ComponentInfo::default(),
            max_inflight: 0,
        }
    }

    fn num(pairs: &[(&str, f64)]) -> HashMap<String, MetricValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), MetricValue::Number(*v)))
            .collect()
    }

    #[test]
    fn a_component_heartbeating_far_faster_than_told_is_warned_about_once() {
        let registry = Registry::open(RegistryConfig::default()).unwrap();
        let mut events = registry.subscribe();
        let id = registry.register(reg("consumer"));
        for _ in 0..3 * FAST_BEATS_TO_WARN {
            registry
                .heartbeat(&id, HealthStatus::Unknown, HashMap::new())
                .unwrap();
        }
        let mut warnings = Vec::new();
        while let Ok(event) = events.try_recv() {
            if let RegistryEvent::HeartbeatTooFast {
                component_id,
                every,
                ..
            } = event
            {
                warnings.push((component_id, every));
            }
        }
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].0, "consumer");
        assert!(warnings[0].1 < Duration::from_secs(1));

        // Heartbeats at the interval's pace are never a warning.
        let slow = Registry::open(RegistryConfig {
            heartbeat_interval: Duration::from_millis(20),
            ..RegistryConfig::default()
        })
        .unwrap();
        let mut events = slow.subscribe();
        let id = slow.register(reg("processor"));
        for _ in 0..FAST_BEATS_TO_WARN + 2 {
            std::thread::sleep(Duration::from_millis(3));
            slow.heartbeat(&id, HealthStatus::Unknown, HashMap::new())
                .unwrap();
        }
        while let Ok(event) = events.try_recv() {
            assert!(
                !matches!(event, RegistryEvent::HeartbeatTooFast { .. }),
                "{event:?}"
            );
        }
    }

    fn supervised(pipeline: &str, component: &str) -> SupervisedComponent {
        SupervisedComponent {
            pipeline: pipeline.into(),
            component: component.into(),
        }
    }

    #[test]
    fn a_registration_without_component_id_is_linked_by_health_port_and_goes_with_its_process() {
        let registry = Registry::open(RegistryConfig::default()).unwrap();
        let consumer = supervised("ttp", "consumer");
        registry.component_health_port(consumer.clone(), 18089);
        registry.process_started(4242, consumer.clone());
        let mut r = reg("");
        r.service_type = ServiceType::Pipeline;
        r.info.endpoint = "http://127.0.0.1:18089/health".into();
        let id = registry.register(r);
        assert_eq!(
            id, "consumer",
            "the component id is filled in from the link"
        );
        let status = registry.status("consumer").unwrap();
        assert_eq!(status.linked, Some((consumer, LinkedBy::HealthPort)));

        // One the supervisor cannot tie to anything stays unlinked.
        let stranger = registry.register(reg(""));
        assert!(registry.status(&stranger).unwrap().linked.is_none());

        registry.process_exited(4242);
        assert!(!registry.is_registered("consumer"), "gone with its process");
        assert!(registry.is_registered(&stranger), "unlinked ones stay");
    }

    #[test]
    fn unlinked_registrations_silent_past_ttl_and_retention_are_dropped_and_counted() {
        let registry = Registry::open(RegistryConfig {
            ttl: Some(Duration::from_millis(20)),
            unlinked_retention: Duration::from_millis(30),
            ..RegistryConfig::default()
        })
        .unwrap();
        let linked = supervised("ttp", "processor");
        registry.process_started(4343, linked.clone());
        let mut processor = reg("");
        processor
            .info
            .metadata
            .insert("component_id".into(), "processor".into());
        registry.register(processor);
        assert_eq!(
            registry.status("processor").unwrap().linked,
            Some((linked, LinkedBy::Metadata))
        );
        let stale = registry.register(reg(""));
        std::thread::sleep(Duration::from_millis(25));
        registry.sweep();
        assert!(
            registry.is_registered(&stale),
            "unhealthy, still within retention"
        );
        std::thread::sleep(Duration::from_millis(40));
        registry.sweep();
        assert!(!registry.is_registered(&stale));
        assert_eq!(registry.dropped_unlinked(), 1);
        assert!(
            registry.is_registered("processor"),
            "a linked one stays listed while its process lives"
        );
    }

    #[test]
    fn a_retention_of_the_largest_duration_keeps_unlinked_registrations_instead_of_panicking() {
        let registry = Registry::open(RegistryConfig {
            ttl: Some(Duration::from_millis(20)),
            unlinked_retention: Duration::MAX,
            ..RegistryConfig::default()
        })
        .unwrap();
        let stale = registry.register(reg(""));
        std::thread::sleep(Duration::from_millis(30));
        registry.sweep();
        assert!(registry.is_registered(&stale));
        assert_eq!(registry.dropped_unlinked(), 0);
    }

    #[test]
    fn a_bounded_run_whose_sinks_stop_advancing_is_reported_stalled_until_it_moves_again() {
        let registry = Registry::open(RegistryConfig::default()).unwrap();
        let mut events = registry.subscribe();
        let run = registry
            .create_run(NewRun {
                pipeline_name: "ttp".into(),
                component_ids: vec!["sink".into()],
                from_ledger: 10,
                to_ledger: 20,
                stalled_after: Some(Duration::from_millis(50)),
                ..Default::default()
            })
            .unwrap();
        registry
            .update_run(
                &run.run_id,
                RunUpdate {
                    status: Some(RunStatus::Running),
                    ..Default::default()
                },
            )
            .unwrap();
        let mut sink = reg("sink");
        sink.service_type = ServiceType::Sink;
        registry.register(sink);
        let wrote = |ledger: f64| {
            registry
                .heartbeat(
                    "sink",
                    HealthStatus::Unknown,
                    num(&[("last_ledger_written", ledger)]),
                )
                .unwrap()
        };
        wrote(12.0);
        assert!(registry.check_stalls().is_empty());
        std::thread::sleep(Duration::from_millis(30));
        wrote(13.0);
        assert!(registry.check_stalls().is_empty(), "it moved");
        std::thread::sleep(Duration::from_millis(70));
        assert_eq!(registry.check_stalls(), vec![run.run_id.clone()]);
        assert!(registry.check_stalls().is_empty(), "reported once");
        let error = registry.get_run(&run.run_id).unwrap().error;
        assert!(
            error.starts_with("stalled: no ledger of 10-20 written past ledger 13 for"),
            "{error}"
        );
        assert_eq!(registry.run_stalled("ttp"), Some(error.clone()));
        let mut announced = 0;
        while let Ok(event) = events.try_recv() {
            if let RegistryEvent::RunStalled { message, .. } = event {
                assert_eq!(message, error);
                announced += 1;
            }
        }
        assert_eq!(announced, 1);

        wrote(14.0);
        registry.check_stalls();
        assert_eq!(registry.run_stalled("ttp"), None);
        assert_eq!(registry.get_run(&run.run_id).unwrap().error, "");
    }

    #[test]
    fn service_type_4_is_a_consumer_whichever_proto_named_it() {
        // PIPELINE in ours and the Go proto, CONSUMER in the Node.js consumer's: both 4.
        assert_eq!(ServiceType::Pipeline as i32, 4);
        assert_eq!(service_type_name(ServiceType::Pipeline), "consumer");
        assert_eq!(
            component_type_of(ServiceType::Pipeline),
            ComponentType::Consumer
        );
        let mut r = reg("");
        r.service_type = ServiceType::Pipeline;
        let registry = Registry::open(RegistryConfig::default()).unwrap();
        assert!(registry.register(r).starts_with("consumer-"));
        for (t, name) in [
            (ServiceType::Source, "source"),
            (ServiceType::Processor, "processor"),
            (ServiceType::Sink, "sink"),
            (ServiceType::Unspecified, "-"),
        ] {
            assert_eq!(service_type_name(t), name);
        }
    }

    #[test]
    fn service_id_is_the_component_id_when_given() {
        let r = Registry::open(RegistryConfig::default()).unwrap();
        assert_eq!(r.register(reg("ttp")), "ttp");
        let mut anonymous = reg("");
        anonymous.service_id = "wanted".into();
        assert_eq!(r.register(anonymous), "wanted");
        let generated = r.register(reg(""));
        assert!(generated.starts_with("processor-"), "{generated}");
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn a_heartbeat_replaces_the_whole_metric_set() {
        let r = Registry::open(RegistryConfig::default()).unwrap();
        r.register(reg("c"));
        r.heartbeat("c", HealthStatus::Unknown, num(&[("a", 1.0), ("b", 2.0)]))
            .unwrap();
        r.heartbeat("c", HealthStatus::Unknown, num(&[("b", 3.0), ("c", 4.0)]))
            .unwrap();
        let s = r.status("c").unwrap();
        assert_eq!(
            (s.metric("a"), s.metric("b"), s.metric("c")),
            (None, Some(3.0), Some(4.0))
        );
    }

    #[test]
    fn heartbeat_for_unknown_id_is_not_found() {
        let r = Registry::open(RegistryConfig::default()).unwrap();
        let err = r
            .heartbeat("ghost", HealthStatus::Unknown, HashMap::new())
            .unwrap_err();
        assert!(matches!(err, RegistryError::ServiceNotFound(ref id) if id == "ghost"));
    }

    #[test]
    fn unknown_heartbeat_keeps_degraded_and_empty_metrics_keep_previous() {
        let r = Registry::open(RegistryConfig::default()).unwrap();
        r.register(reg("c"));
        r.heartbeat("c", HealthStatus::Degraded, num(&[("x", 1.0)]))
            .unwrap();
        r.heartbeat("c", HealthStatus::Unknown, HashMap::new())
            .unwrap();
        let s = r.status("c").unwrap();
        assert_eq!(s.health, HealthStatus::Degraded);
        assert_eq!(s.metric("x"), Some(1.0));
    }

    #[test]
    fn run_metrics_count_each_event_once_across_stages_and_survive_unregister() {
        let r = Registry::open(RegistryConfig::default()).unwrap();
        r.register(reg("proc"));
        r.register(reg("sink"));
        let run = r
            .create_run(NewRun {
                pipeline_name: "p".into(),
                component_ids: vec!["proc".into(), "sink".into()],
                ..Default::default()
            })
            .unwrap();
        r.heartbeat(
            "proc",
            HealthStatus::Unknown,
            num(&[("total_processed", 5.0), ("total_events_emitted", 40.0)]),
        )
        .unwrap();
        r.heartbeat(
            "sink",
            HealthStatus::Unknown,
            num(&[("events_processed", 40.0), ("bytes_in", 100.0)]),
        )
        .unwrap();
        let m = r.get_run(&run.run_id).unwrap().metrics.unwrap();
        // The 40 events the processor emitted are the 40 the sink took: counted once.
        assert_eq!(m.events_processed, 40);
        assert_eq!(m.bytes_processed, 100);
        assert_eq!(m.component_metrics["proc"].events_out, 40);
        r.unregister("proc");
        let ended = r.end_run(&run.run_id, RunStatus::Completed, None).unwrap();
        assert_eq!(
            ended.metrics.unwrap().component_metrics["proc"].events_out,
            40
        );
        assert!(ended.end_time.is_some());
        let again = r.update_run(&run.run_id, RunUpdate::default()).unwrap_err();
        assert!(matches!(again, RegistryError::RunEnded { .. }));
    }

    #[test]
    fn a_replays_run_counts_its_own_components_not_the_live_pipelines_of_the_same_ids() {
        let r = Registry::open(RegistryConfig::default()).unwrap();
        let owned = |pipeline: &str| {
            r.register_owned(
                reg("sink"),
                Some(SupervisedComponent {
                    pipeline: pipeline.into(),
                    component: "sink".into(),
                }),
            )
            .unwrap()
        };
        let (live_id, replay_id) = (owned("live"), owned("live@2-31"));
        assert_eq!(
            (live_id.as_str(), replay_id.as_str()),
            ("sink", "live@2-31/sink")
        );
        let run = |pipeline: &str| {
            r.create_run(NewRun {
                pipeline_name: pipeline.into(),
                component_ids: vec!["sink".into()],
                ..Default::default()
            })
            .unwrap()
            .run_id
        };
        let (live, replay) = (run("live"), run("live@2-31"));
        for (id, events) in [(&live_id, 1000.0), (&replay_id, 30.0)] {
            r.heartbeat(
                id,
                HealthStatus::Unknown,
                num(&[("events_processed", events)]),
            )
            .unwrap();
        }
        let events = |run: &str| r.get_run(run).unwrap().metrics.unwrap().events_processed;
        assert_eq!((events(&live), events(&replay)), (1000, 30));
        // The replay's last word, at its unregistration, is not credited to the live run.
        r.heartbeat(
            &replay_id,
            HealthStatus::Unknown,
            num(&[("events_processed", 31.0)]),
        )
        .unwrap();
        r.unregister(&replay_id);
        assert_eq!((events(&live), events(&replay)), (1000, 31));
    }

    #[test]
    fn a_completed_run_that_left_dead_letters_open_ends_completed_with_dead_letters() {
        let r = Registry::open(RegistryConfig::default()).unwrap();
        let new = || NewRun {
            pipeline_name: "p".into(),
            ..Default::default()
        };
        let (clean, with_letters) = (r.create_run(new()).unwrap(), r.create_run(new()).unwrap());
        let report = super::super::dead_letters::NewDeadLetter {
            pipeline: "p".into(),
            component: "source".into(),
            run_id: with_letters.run_id.clone(),
            ledger: 998,
            reason: "bad".into(),
            ..Default::default()
        };
        r.dead_letters()
            .report(report, std::time::SystemTime::now())
            .unwrap();
        let ended = |id: &str, status| r.end_run(id, status, None).unwrap().status();
        assert_eq!(
            ended(&clean.run_id, RunStatus::Completed),
            RunStatus::Completed
        );
        assert_eq!(
            ended(&with_letters.run_id, RunStatus::Completed),
            RunStatus::CompletedWithDeadLetters
        );
        // A failed run stays failed, letters or not.
        let failed = r.create_run(new()).unwrap();
        let mut report = super::super::dead_letters::NewDeadLetter {
            pipeline: "p".into(),
            component: "sink".into(),
            run_id: failed.run_id.clone(),
            ..Default::default()
        };
        report.ledger = 1;
        r.dead_letters()
            .report(report, std::time::SystemTime::now())
            .unwrap();
        assert_eq!(ended(&failed.run_id, RunStatus::Failed), RunStatus::Failed);
    }

    #[test]
    fn orphaned_runs_from_a_previous_process_are_failed() {
        let dir = tempfile::tempdir().unwrap();
        let config = || RegistryConfig {
            state_dir: Some(dir.path().into()),
            ..Default::default()
        };
        let before = Registry::open(config()).unwrap();
        let run = before
            .create_run(NewRun {
                pipeline_name: "p".into(),
                ..Default::default()
            })
            .unwrap();
        drop(before);
        let after = Registry::open(config()).unwrap();
        let (owner, _requests) = mpsc::channel(1);
        let owned = after
            .create_run(NewRun {
                pipeline_name: "p".into(),
                owner: Some(owner),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            after.fail_orphaned_runs("flowctl-sup restarted").unwrap(),
            std::slice::from_ref(&run.run_id)
        );
        let failed = after.get_run(&run.run_id).unwrap();
        assert_eq!(failed.status(), RunStatus::Failed);
        assert_eq!(failed.error, "flowctl-sup restarted");
        assert_eq!(
            after.get_run(&owned.run_id).unwrap().status(),
            RunStatus::Starting
        );
    }

    #[test]
    fn flushed_run_metrics_reach_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let config = || RegistryConfig {
            state_dir: Some(dir.path().into()),
            ..Default::default()
        };
        let r = Registry::open(config()).unwrap();
        r.register(reg("sink"));
        let run = r
            .create_run(NewRun {
                pipeline_name: "p".into(),
                component_ids: vec!["sink".into()],
                ..Default::default()
            })
            .unwrap();
        r.heartbeat("sink", HealthStatus::Unknown, num(&[("events_in", 12.0)]))
            .unwrap();
        r.flush_active_runs().unwrap();
        drop(r);
        let reopened = RunStore::open(dir.path(), 10).unwrap();
        assert_eq!(
            reopened
                .get(&run.run_id)
                .unwrap()
                .unwrap()
                .metrics
                .unwrap()
                .events_processed,
            12
        );
    }

    #[test]
    fn run_prefix_must_be_unique() {
        let r = Registry::open(RegistryConfig::default()).unwrap();
        for id in ["abc-1", "abc-2", "xyz"] {
            r.create_run(NewRun {
                run_id: Some(id.into()),
                pipeline_name: "p".into(),
                ..Default::default()
            })
            .unwrap();
        }
        assert_eq!(r.resolve_run_id("xy").unwrap(), "xyz");
        assert_eq!(r.resolve_run_id("abc-1").unwrap(), "abc-1");
        match r.resolve_run_id("abc").unwrap_err() {
            RegistryError::AmbiguousRun { matches, .. } => assert_eq!(matches.len(), 2),
            other => panic!("{other}"),
        }
        assert!(matches!(
            r.resolve_run_id("nope"),
            Err(RegistryError::RunNotFound(_))
        ));
    }

    #[tokio::test]
    async fn stop_without_owner_refuses_while_components_live() {
        let r = Registry::open(RegistryConfig::default()).unwrap();
        r.register(reg("proc"));
        let run = r
            .create_run(NewRun {
                pipeline_name: "p".into(),
                component_ids: vec!["proc".into()],
                ..Default::default()
            })
            .unwrap();
        assert!(matches!(
            r.stop_run(&run.run_id).await,
            Err(RegistryError::LiveOwner { .. })
        ));
        r.unregister("proc");
        let stopped = r.stop_run(&run.run_id).await.unwrap();
        assert_eq!(stopped.status(), RunStatus::Stopped);
        assert!(stopped.error.contains("no live owner"), "{}", stopped.error);
    }

    #[tokio::test]
    async fn stop_with_owner_asks_the_owner() {
        let r = Registry::open(RegistryConfig::default()).unwrap();
        let (owner, mut requests) = mpsc::channel(1);
        let run = r
            .create_run(NewRun {
                pipeline_name: "p".into(),
                owner: Some(owner),
                ..Default::default()
            })
            .unwrap();
        let r2 = r.clone();
        let supervisor = tokio::spawn(async move {
            let request = requests.recv().await.unwrap();
            r2.end_run(
                &request.run_id,
                RunStatus::Stopped,
                Some("stopped by operator".into()),
            )
            .unwrap();
            request.reply.send(Ok(())).unwrap();
        });
        let stopped = r.stop_run(&run.run_id[..8]).await.unwrap();
        supervisor.await.unwrap();
        assert_eq!(stopped.status(), RunStatus::Stopped);
        assert_eq!(stopped.error, "stopped by operator");
    }
}
