//! The supervisor's event loop: carries out the state machine's actions and turns what
//! happens (exits, timers, check answers, notify messages, operator requests) into events.
//!
//! One task owns every component; everything else (the reap loop, timers, checks, the control
//! socket) talks to it through one channel. Decisions stay in `state.rs`, `restart.rs` and
//! `order.rs`; this file only executes them.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::command::{self, search_dirs};
use super::descendants::{self, Leftovers, ProcId, Record};
use super::env::{child_env, EnvInputs};
use super::order;
use super::reaper::{self, ExitStatus, Exited};
use super::reload::{self, ReloadDiff};
use super::restart::{Outcome, RestartHistory};
use super::slots::Slots;
use super::spawn::{self, resolve_identity, SpawnSpec};
use super::state::{next, Action, Ctx, Event, State, StopIntent};
use crate::api::protocol::{
    ComponentStatus, LastExit, LastProbe, PipelineStatus, Request, Response, SupervisorStatus,
};
use crate::logsink::{self, LogSink, StderrSink};
use crate::plan::{ComponentPlan, PipelinePlan, ProbeCheck};
use crate::probe::notify::{self, NotifyEvent, NotifyMessage};
use crate::probe::{self, ProbeKind, ProbeTarget, ProbeUpdate, Registrations};

mod leftovers;

/// How a supervisor runs.
#[derive(Clone)]
pub struct SupervisorOptions {
    /// Per-component notify sockets are created under `RUNTIME_DIR/notify/`.
    pub runtime_dir: PathBuf,
    /// The control plane's address, given to components as `FLOWCTL_ENDPOINT`.
    pub endpoint: Option<String>,
    pub log_sink: Arc<dyn LogSink>,
    /// Answers `registered` checks; `None` until a registry runs in this process.
    pub registry: Option<Arc<dyn Registrations>>,
    /// Return once every component is done (`exited`, `failed` or `stopped`): a bounded run.
    pub exit_when_done: bool,
    /// Stop the whole pipeline when a component fails for good.
    pub stop_on_failure: bool,
    /// Where bare command names are looked up; `None` = next to the running binary,
    /// `/usr/lib/flowctl`, then `PATH`.
    pub search_dirs: Option<Vec<PathBuf>>,
    /// One cgroup per component under a delegated subtree; `None`: process groups only.
    pub cgroups: Option<Arc<crate::systemd::cgroup::CgroupTree>>,
    /// Each pipeline's current run id, given to its processes as `FLOWCTL_RUN_ID`.
    pub run_ids: super::env::RunIds,
}

impl SupervisorOptions {
    pub fn new(runtime_dir: impl Into<PathBuf>) -> Self {
        SupervisorOptions {
            runtime_dir: runtime_dir.into(),
            endpoint: None,
            log_sink: Arc::new(StderrSink),
            registry: None,
            exit_when_done: false,
            stop_on_failure: false,
            search_dirs: None,
            cgroups: None,
            run_ids: Default::default(),
        }
    }
}

/// Why a supervisor cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("pipeline `{pipeline}`: component `{component}` depends on `{missing}`, which is not in the pipeline")]
    UnknownDependency {
        pipeline: String,
        component: String,
        missing: String,
    },
    #[error("pipeline `{pipeline}` has two components named `{component}`")]
    DuplicateComponent { pipeline: String, component: String },
    #[error("two pipelines are named `{0}`")]
    DuplicatePipeline(String),
    #[error("cannot watch for exiting children: {0}")]
    Reaper(#[source] std::io::Error),
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub components: Vec<FinalState>,
    /// The pipelines that completed: every sink finished by itself and the rest was drained.
    pub completed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FinalState {
    pub pipeline: String,
    pub id: String,
    pub state: super::StateName,
    pub reason: Option<String>,
    /// What all its processes used together: CPU summed, the highest peak RSS.
    pub used: reaper::Usage,
    /// How many of its processes were started.
    pub spawns: u32,
    /// Its last process ignored the stop signal and was SIGKILLed after this stop timeout.
    pub killed_after: Option<Duration>,
    /// It failed for good because it was fenced (a newer copy of it owns its work).
    pub fenced: bool,
}

impl RunSummary {
    /// Components that failed for good.
    pub fn failed(&self) -> impl Iterator<Item = &FinalState> {
        self.components
            .iter()
            .filter(|c| c.state == super::StateName::Failed)
    }
}

/// Talks to a running supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    tx: mpsc::UnboundedSender<Msg>,
}

impl SupervisorHandle {
    /// Answers a control request (the control socket's entry point).
    pub async fn request(&self, request: Request) -> Response {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Api(request, reply)).is_err() {
            return Response::error("the supervisor has stopped");
        }
        rx.await
            .unwrap_or_else(|_| Response::error("the supervisor has stopped"))
    }

    pub async fn status(&self) -> Option<SupervisorStatus> {
        self.request(Request::Status).await.status
    }

    /// Starts the graceful stop of everything (drain order); `run` returns when it is done.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Msg::Shutdown);
    }

    /// Replaces the running pipelines with `pipelines`: unchanged components keep running,
    /// changed ones restart with their new plan, removed ones are drained and stopped, new
    /// ones start in dependency order. Answers once every change is under way (stops
    /// signalled, new components pending), not when they have finished.
    pub async fn reload(&self, pipelines: Vec<PipelinePlan>) -> Result<ReloadDiff, String> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Reload(pipelines, reply)).is_err() {
            return Err("the supervisor has stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("the supervisor has stopped".into()))
    }

    /// The plans of the pipelines it runs (not those being removed), in the order it runs them.
    pub async fn plans(&self) -> Option<Vec<PipelinePlan>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Plans(reply)).ok()?;
        rx.await.ok()
    }
}

enum Msg {
    Exit {
        idx: usize,
        generation: u64,
        exited: Exited,
    },
    Timer {
        idx: usize,
        timer: u64,
    },
    Probe {
        idx: usize,
        generation: u64,
        update: ProbeUpdate,
    },
    Notify {
        idx: usize,
        generation: u64,
        event: NotifyEvent,
    },
    Api(Request, oneshot::Sender<Response>),
    Reload(
        Vec<PipelinePlan>,
        oneshot::Sender<Result<ReloadDiff, String>>,
    ),
    Plans(oneshot::Sender<Vec<PipelinePlan>>),
    /// Look for processes that left their component's group; end those whose component
    /// stopped.
    Survey,
    Shutdown,
}

/// How often the supervisor looks for processes that left their component's group.
const SURVEY_PERIOD: Duration = Duration::from_secs(1);

/// One component's runtime record.
struct Component {
    pipeline: Arc<str>,
    id: Arc<str>,
    plan: ComponentPlan,
    deps: Vec<usize>,
    inputs: Vec<usize>,
    dependents: Vec<usize>,
    state: State,
    history: RestartHistory,
    /// Counts spawns; messages about an older process are ignored.
    generation: u64,
    pid: Option<i32>,
    /// The start time of `pid` (`/proc/PID/stat`), so a reused pid is never taken for it.
    main_start: Option<u64>,
    started_at: Option<Instant>,
    spawns: u32,
    last_exit: Option<ExitStatus>,
    /// What its reaped processes used, accumulated over restarts.
    used: reaper::Usage,
    reason: Option<String>,
    last_probe: Option<LastProbe>,
    notify_status: Option<String>,
    notify_socket: Option<tokio::net::UnixDatagram>,
    env: Arc<BTreeMap<String, String>>,
    timer: Option<(JoinHandle<()>, Instant)>,
    /// Counts armed timers; a timer message with an older number is stale.
    timer_id: u64,
    probes: Vec<JoinHandle<()>>,
    /// The drain has told it to stop.
    drained: bool,
    /// Its cgroup, once it has been started under a delegated subtree.
    cgroup: Option<crate::systemd::cgroup::ComponentCgroup>,
    /// A reload removed it: it is drained, then leaves its slot once stopped.
    retiring: bool,
    /// Its current process outlived its stop timeout and was SIGKILLed.
    killed_after: Option<Duration>,
}

impl Component {
    fn new(pipeline: Arc<str>, plan: ComponentPlan) -> Self {
        Component {
            pipeline,
            id: Arc::from(plan.id.as_str()),
            plan,
            deps: Vec::new(),
            inputs: Vec::new(),
            dependents: Vec::new(),
            state: State::Pending,
            history: RestartHistory::default(),
            generation: 0,
            pid: None,
            main_start: None,
            started_at: None,
            spawns: 0,
            last_exit: None,
            used: reaper::Usage::default(),
            reason: None,
            last_probe: None,
            notify_status: None,
            notify_socket: None,
            env: Arc::new(BTreeMap::new()),
            timer: None,
            timer_id: 0,
            probes: Vec::new(),
            drained: false,
            cgroup: None,
            retiring: false,
            killed_after: None,
        }
    }
}

/// One pipeline as the supervisor runs it.
struct Group {
    /// The plan it runs now (after the last reload).
    plan: PipelinePlan,
    /// Its components' slots in dependency order, then those being removed.
    members: Vec<usize>,
    /// A reload removed the pipeline: it goes away once its components have stopped.
    removed: bool,
    /// Every sink finished by itself: the rest is drained and the pipeline is done.
    completed: bool,
}

/// The supervisor of one or more pipelines.
pub struct Supervisor {
    options: SupervisorOptions,
    components: Slots<Component>,
    pipelines: Vec<Group>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// Zero-delay timers: handled before waiting for anything else, so a zero backoff
    /// restarts without a trip through the timer wheel.
    immediate: VecDeque<Msg>,
    shutting_down: bool,
    search_dirs: Arc<[PathBuf]>,
    parent_env: Vec<(String, String)>,
    /// Tasks copying children's output to the log sink; awaited (briefly) at the end so a
    /// bounded run does not lose its last lines.
    forwarders: Vec<JoinHandle<()>>,
    /// Processes that left their component's process group, by the slot of the component.
    leftovers: Leftovers<usize>,
    /// This process, as the record names it.
    me: ProcId,
    /// What the record file says now.
    record: Record,
    /// The last pid handed out when the periodic survey last looked.
    last_pid_surveyed: Option<i32>,
}

/// A leftover's generation: the component's process it came from.
type Generation = u64;

impl Supervisor {
    /// Prepares to run `pipelines` (nothing starts before [`Supervisor::run`]).
    pub fn new(
        pipelines: Vec<PipelinePlan>,
        options: SupervisorOptions,
    ) -> Result<(Supervisor, SupervisorHandle), SupervisorError> {
        check_plans(&pipelines)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let parent_env: Vec<(String, String)> = std::env::vars().collect();
        let dirs = match &options.search_dirs {
            Some(dirs) => dirs.clone(),
            None => {
                let exe_dir = std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(|d| d.to_path_buf()));
                let path = parent_env
                    .iter()
                    .find(|(k, _)| k == "PATH")
                    .map(|(_, v)| v.as_str());
                search_dirs(exe_dir.as_deref(), path)
            }
        };
        let handle = SupervisorHandle { tx: tx.clone() };
        let mut supervisor = Supervisor {
            options,
            components: Slots::default(),
            pipelines: Vec::new(),
            tx,
            rx,
            immediate: VecDeque::new(),
            shutting_down: false,
            search_dirs: Arc::from(dirs),
            parent_env,
            forwarders: Vec::new(),
            leftovers: Leftovers::default(),
            me: descendants::stat(std::process::id() as i32)
                .map(|p| p.id)
                .unwrap_or(ProcId {
                    pid: std::process::id() as i32,
                    start: 0,
                }),
            record: Record::default(),
            last_pid_surveyed: None,
        };
        for plan in pipelines {
            supervisor.add_pipeline(plan);
        }
        Ok((supervisor, handle))
    }

    /// Adds a pipeline whose components all start pending (plans already checked).
    fn add_pipeline(&mut self, plan: PipelinePlan) {
        let name: Arc<str> = Arc::from(plan.name.as_str());
        let members = plan
            .components
            .iter()
            .map(|c| {
                self.components
                    .push(Component::new(name.clone(), c.clone()))
            })
            .collect();
        self.pipelines.push(Group {
            plan,
            members,
            removed: false,
            completed: false,
        });
        self.link(self.pipelines.len() - 1);
    }

    /// Recomputes the dependency indices of a pipeline's components from its plan. Components
    /// being removed keep theirs: they only look at them to drain in order.
    fn link(&mut self, group: usize) {
        let members = self.pipelines[group].members.clone();
        let live: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| !self.components[i].retiring)
            .collect();
        let index: BTreeMap<String, usize> = live
            .iter()
            .map(|&i| (self.components[i].id.to_string(), i))
            .collect();
        let find = |names: &[String]| -> Vec<usize> {
            let mut v: Vec<usize> = names.iter().filter_map(|n| index.get(n).copied()).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        for &i in &live {
            let c = &self.components[i];
            let deps: Vec<String> = c
                .plan
                .depends_on
                .iter()
                .chain(&c.plan.inputs)
                .cloned()
                .collect();
            let (deps, inputs) = (find(&deps), find(&c.plan.inputs));
            let c = &mut self.components[i];
            c.deps = deps;
            c.inputs = inputs;
            c.dependents.clear();
        }
        for &i in &live {
            for d in self.components[i].deps.clone() {
                self.components[d].dependents.push(i);
            }
        }
    }

    /// Runs until shut down (or, with `exit_when_done`, until every component is done).
    /// Must be called from a tokio runtime; see `spawn.rs` on which thread spawns.
    pub async fn run(mut self) -> Result<RunSummary, SupervisorError> {
        if let Err(e) = reaper::become_subreaper() {
            tracing::warn!(
                "cannot become a child subreaper: {e}; orphaned grandchildren go to PID 1"
            );
        }
        let reap_loop = reaper::start().map_err(SupervisorError::Reaper)?;
        self.end_predecessors();
        let tx = self.tx.clone();
        let surveys = tokio::spawn(async move {
            let mut every = tokio::time::interval(SURVEY_PERIOD);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if tx.send(Msg::Survey).is_err() {
                    return;
                }
            }
        });
        loop {
            self.drive();
            if self.finished() {
                break;
            }
            let msg = match self.immediate.pop_front() {
                Some(msg) => msg,
                None => match self.rx.recv().await {
                    Some(msg) => msg,
                    None => break,
                },
            };
            self.handle(msg);
        }
        surveys.abort();
        self.end_leftovers().await;
        let _ = std::fs::remove_file(descendants::record_path(&self.options.runtime_dir));
        reap_loop.abort();
        // Output still in the pipes of processes that just ended; a leftover holding a pipe
        // open does not hold the supervisor for more than a second.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        for task in self.forwarders.drain(..) {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
        for c in self.components.values_mut() {
            c.probes.drain(..).for_each(|p| p.abort());
            if let Some((t, _)) = c.timer.take() {
                t.abort();
            }
        }
        Ok(RunSummary {
            components: self
                .components
                .values()
                .map(|c| FinalState {
                    pipeline: c.pipeline.to_string(),
                    id: c.id.to_string(),
                    state: c.state.name(),
                    reason: c.reason.clone(),
                    used: c.used,
                    spawns: c.spawns,
                    killed_after: c.killed_after,
                    fenced: c.state == State::Failed
                        && c.last_exit.map(Outcome::of) == Some(Outcome::Fenced),
                })
                .collect(),
            completed: self
                .pipelines
                .iter()
                .filter(|g| g.completed)
                .map(|g| g.plan.name.clone())
                .collect(),
        })
    }

    fn finished(&self) -> bool {
        let all_done = self.components.values().all(|c| c.state.is_final());
        all_done && (self.shutting_down || self.options.exit_when_done)
    }

    /// Marks the pipelines whose ends are done: every component that nothing depends on (the
    /// sinks) exited cleanly. Sources and processors are servers that never end on their own,
    /// so this is how a bounded pipeline finishes: what is still running of it is drained.
    fn note_completed_pipelines(&mut self) {
        for group in self
            .pipelines
            .iter_mut()
            .filter(|g| !g.completed && !g.removed)
        {
            let members: Vec<&Component> = group
                .members
                .iter()
                .filter_map(|&i| self.components.get(i))
                .filter(|c| !c.retiring)
                .collect();
            let mut ends = members
                .iter()
                .filter(|c| c.dependents.is_empty())
                .peekable();
            if ends.peek().is_some() && ends.all(|c| c.state == State::Exited) {
                tracing::info!(pipeline = %group.plan.name, "every sink finished: the pipeline is complete, stopping the rest of it");
                group.completed = true;
            }
        }
    }

    /// Starts what may start, drains what may stop.
    fn drive(&mut self) {
        loop {
            // Checked on every pass: a start attempted in the previous pass may have failed.
            if !self.shutting_down
                && self.options.stop_on_failure
                && self.components.values().any(|c| c.state == State::Failed)
            {
                tracing::info!("a component failed for good: stopping the pipeline");
                self.shutting_down = true;
            }
            self.note_completed_pipelines();
            let completed: std::collections::HashSet<&str> = self
                .pipelines
                .iter()
                .filter(|g| g.completed)
                .map(|g| g.plan.name.as_str())
                .collect();
            let going = |c: &Component| {
                self.shutting_down || c.retiring || completed.contains(&*c.pipeline)
            };
            let (mut stop, mut start) = (Vec::new(), Vec::new());
            for i in self.components.indices() {
                let c = &self.components[i];
                if going(c) {
                    // A component a reload removes waits only for inputs that go too; the
                    // others keep running.
                    let inputs_down = order::may_stop(
                        c.inputs
                            .iter()
                            .filter_map(|&d| self.components.get(d))
                            .filter(|d| going(d))
                            .map(|d| &d.state),
                    );
                    if !c.drained && (inputs_down || !c.state.is_running()) {
                        stop.push(i);
                    }
                } else if c.state == State::Pending
                    && order::may_start(c.deps.iter().map(|&d| &self.components[d].state))
                {
                    start.push(i);
                }
            }
            if stop.is_empty() && start.is_empty() {
                break;
            }
            for i in stop {
                self.components[i].drained = true;
                self.feed(i, Event::StopRequested);
            }
            for i in start {
                self.feed(i, Event::DepsReady);
            }
        }
        self.release_retired();
    }

    /// Components a reload removed leave their slots once they have stopped; a removed
    /// pipeline goes once its last component has.
    fn release_retired(&mut self) {
        let done: Vec<usize> = self
            .components
            .iter()
            .filter(|(_, c)| c.retiring && c.state.is_final())
            .map(|(i, _)| i)
            .collect();
        if done.is_empty() {
            return;
        }
        for i in &done {
            if let Some(mut c) = self.components.remove(*i) {
                c.probes.drain(..).for_each(|p| p.abort());
                if let Some((t, _)) = c.timer.take() {
                    t.abort();
                }
                tracing::info!(pipeline = %c.pipeline, component = %c.id, "removed by the reload");
            }
        }
        for group in &mut self.pipelines {
            group.members.retain(|i| !done.contains(i));
        }
        self.pipelines
            .retain(|g| !(g.removed && g.members.is_empty()));
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Exit {
                idx,
                generation,
                exited,
            } => self.on_exit(idx, generation, exited),
            Msg::Timer { idx, timer } => {
                let Some(c) = self.components.get_mut(idx) else {
                    return;
                };
                if c.timer_id != timer {
                    return;
                }
                c.timer = None;
                let event = match c.state {
                    State::Backoff => Event::BackoffElapsed,
                    State::Stopping(_) => Event::StopTimeout,
                    State::Starting => {
                        tracing::warn!(
                            pipeline = %c.pipeline,
                            component = %c.id,
                            "not ready within {} (start_timeout): stopping it; its restart \
                             policy decides what follows",
                            humantime::format_duration(c.plan.start_timeout.unwrap_or_default())
                        );
                        Event::StartTimedOut
                    }
                    _ => return,
                };
                self.feed(idx, event);
            }
            Msg::Probe {
                idx,
                generation,
                update,
            } => self.on_probe(idx, generation, update),
            Msg::Notify {
                idx,
                generation,
                event,
            } => self.on_notify(idx, generation, event),
            Msg::Api(request, reply) => {
                let response = self.on_request(request);
                let _ = reply.send(response);
            }
            Msg::Reload(plans, reply) => {
                let _ = reply.send(self.reload(plans));
            }
            Msg::Plans(reply) => {
                let _ = reply.send(self.plans());
            }
            Msg::Survey => {
                // A full look at /proc only when some process was created since the last one.
                let last_pid = descendants::last_pid();
                if last_pid.is_none() || last_pid != self.last_pid_surveyed {
                    self.survey();
                    self.last_pid_surveyed = last_pid;
                }
                self.sweep();
                self.save_record();
            }
            Msg::Shutdown => {
                if !self.shutting_down {
                    tracing::info!(
                        "stopping: sources first, then each component once its inputs are down"
                    );
                }
                self.shutting_down = true;
            }
        }
    }

    fn on_exit(&mut self, idx: usize, generation: u64, exited: Exited) {
        let Exited { status, at, usage } = exited;
        let Some(c) = self.components.get_mut(idx) else {
            return;
        };
        if c.generation != generation {
            return;
        }
        let Some(pid) = c.pid.take() else { return };
        if let Some(registry) = &self.options.registry {
            registry.process_exited(pid as u32);
        }
        c.main_start = None;
        // The main process is the component: whatever it left in its group goes too, so a
        // restart never races a leftover holding its port.
        let _ = spawn::signal_group(pid, libc::SIGKILL);
        // …and so does whatever left the group (a double-forked daemon).
        if let Some(cg) = &c.cgroup {
            if let Err(e) = cg.kill_now() {
                tracing::warn!(component = %c.id, "cgroup.kill: {e}");
            }
        }
        c.last_exit = Some(status);
        c.used = c.used.combined(usage);
        let ran_for = c
            .started_at
            .take()
            .map(|s| at.saturating_duration_since(s))
            .unwrap_or_default();
        let outcome = Outcome::of(status);
        tracing::info!(
            pipeline = %c.pipeline,
            component = %c.id,
            pid,
            cpu_ms = usage.cpu.as_millis() as u64,
            max_rss_kib = usage.max_rss_kib,
            "{status} after {usage}"
        );
        self.feed(
            idx,
            Event::Exited {
                outcome,
                ran_for,
                description: status.to_string(),
            },
        );
        self.sweep();
    }

    fn on_probe(&mut self, idx: usize, generation: u64, update: ProbeUpdate) {
        let Some(c) = self.components.get_mut(idx) else {
            return;
        };
        if c.generation != generation {
            return;
        }
        c.last_probe = Some(LastProbe {
            ok: update.result.is_ok(),
            error: update.result.as_ref().err().cloned(),
        });
        let event = match (update.kind, update.crossed) {
            (ProbeKind::Readiness, Some(true)) => Event::ReadinessPassed,
            (ProbeKind::Readiness, Some(false)) => Event::ReadinessFailed,
            (ProbeKind::Liveness, Some(false)) => Event::LivenessFailed {
                reason: format!(
                    "liveness check failed: {}",
                    update.result.err().unwrap_or_default()
                ),
            },
            (_, _) => return,
        };
        self.feed(idx, event);
    }

    fn on_notify(&mut self, idx: usize, generation: u64, event: NotifyEvent) {
        let Some(c) = self.components.get_mut(idx) else {
            return;
        };
        if c.generation != generation {
            return;
        }
        let notify_readiness = matches!(
            c.plan.readiness.as_ref().map(|p| &p.check),
            Some(ProbeCheck::Notify)
        );
        match event {
            NotifyEvent::Message(NotifyMessage::Ready) if notify_readiness => {
                c.last_probe = Some(LastProbe {
                    ok: true,
                    error: None,
                });
                self.feed(idx, Event::ReadinessPassed);
            }
            NotifyEvent::Message(NotifyMessage::Status(text)) => c.notify_status = Some(text),
            NotifyEvent::Message(_) => {}
            NotifyEvent::WatchdogExpired(limit) => {
                let reason = format!(
                    "watchdog: no WATCHDOG=1 within {}",
                    humantime::format_duration(limit)
                );
                c.last_probe = Some(LastProbe {
                    ok: false,
                    error: Some(reason.clone()),
                });
                self.feed(idx, Event::LivenessFailed { reason });
            }
        }
    }

    fn on_request(&mut self, request: Request) -> Response {
        let (component, event) = match request {
            Request::Status => {
                return Response {
                    status: Some(self.status()),
                    ..Response::ok()
                }
            }
            Request::Reload => {
                return Response::error(
                    "this supervisor does not reload: only the daemon (flowctl-sup run) does",
                )
            }
            Request::Start { component } => (component, Event::StartRequested),
            Request::Stop { component } => (component, Event::StopRequested),
            Request::Restart { component } => (component, Event::RestartRequested),
        };
        if self.shutting_down && event != Event::StopRequested {
            return Response::error("the supervisor is stopping");
        }
        match self.find(&component) {
            Ok(idx) => {
                tracing::info!(component = %component, "operator request: {event:?}");
                self.feed(idx, event);
                Response::ok()
            }
            Err(message) => Response::error(message),
        }
    }

    /// The plans of the pipelines that are not being removed.
    fn plans(&self) -> Vec<PipelinePlan> {
        self.pipelines
            .iter()
            .filter(|g| !g.removed)
            .map(|g| g.plan.clone())
            .collect()
    }

    /// Applies a new set of pipelines (see [`SupervisorHandle::reload`]). Nothing changes when
    /// the new set is inconsistent.
    fn reload(&mut self, new: Vec<PipelinePlan>) -> Result<ReloadDiff, String> {
        if self.shutting_down {
            return Err("the supervisor is stopping".into());
        }
        check_plans(&new).map_err(|e| e.to_string())?;
        let diff = reload::diff(&self.plans(), &new);
        let mut new: BTreeMap<String, PipelinePlan> =
            new.into_iter().map(|p| (p.name.clone(), p)).collect();
        for change in &diff.pipelines {
            let group = self
                .pipelines
                .iter()
                .position(|g| !g.removed && g.plan.name == change.name);
            match (group, new.remove(&change.name)) {
                (Some(g), None) => {
                    tracing::info!(pipeline = %change.name, "reload: pipeline removed, draining it");
                    self.pipelines[g].removed = true;
                    for i in self.pipelines[g].members.clone() {
                        self.components[i].retiring = true;
                    }
                }
                (None, Some(plan)) => {
                    tracing::info!(pipeline = %change.name, "reload: new pipeline");
                    self.add_pipeline(plan);
                }
                (Some(g), Some(plan)) => self.replace_pipeline(g, plan),
                (None, None) => {}
            }
        }
        Ok(diff)
    }

    /// Moves a running pipeline to its new plan, component by component.
    fn replace_pipeline(&mut self, g: usize, plan: PipelinePlan) {
        let name = self.pipelines[g].plan.name.clone();
        let pipeline: Arc<str> = Arc::from(name.as_str());
        let mut members = Vec::new();
        let mut current: BTreeMap<String, usize> = BTreeMap::new();
        for &i in &self.pipelines[g].members {
            let c = &self.components[i];
            if !c.retiring {
                current.insert(c.id.to_string(), i);
            }
        }
        for new in &plan.components {
            match current.remove(&new.id) {
                Some(i) if self.components[i].plan == *new => members.push(i),
                Some(i) => {
                    tracing::info!(pipeline = %name, component = %new.id, "reload: plan changed, restarting");
                    self.change_plan(i, new.clone());
                    members.push(i);
                }
                None => {
                    tracing::info!(pipeline = %name, component = %new.id, "reload: new component");
                    members.push(
                        self.components
                            .push(Component::new(pipeline.clone(), new.clone())),
                    );
                }
            }
        }
        // What is left was removed from the pipeline.
        for (id, i) in current {
            tracing::info!(pipeline = %name, component = %id, "reload: component removed, stopping it");
            self.components[i].retiring = true;
            members.push(i);
        }
        for &i in &self.pipelines[g].members {
            if self.components[i].retiring && !members.contains(&i) {
                members.push(i);
            }
        }
        self.pipelines[g] = Group {
            plan,
            members,
            removed: false,
            completed: false,
        };
        self.link(g);
    }

    /// A component's plan changed: restart it with the new one. The process still running is
    /// stopped the way its old plan says (signal, timeout) before the new plan takes over. An
    /// operator's stop stays in force; a component that had failed or finished gets a fresh
    /// start with the new plan and a clean restart history.
    fn change_plan(&mut self, idx: usize, plan: ComponentPlan) {
        let event = match self.components[idx].state {
            State::Pending | State::Stopped | State::Stopping(StopIntent::Halt) => None,
            State::Starting | State::Ready | State::Backoff | State::Stopping(_) => {
                Some(Event::RestartRequested)
            }
            State::Exited | State::Failed => Some(Event::StartRequested),
        };
        if let Some(event) = event {
            self.feed(idx, event);
        }
        let c = &mut self.components[idx];
        c.plan = plan;
        c.history = RestartHistory::default();
    }

    /// `ID` or `PIPELINE/ID`.
    fn find(&self, name: &str) -> Result<usize, String> {
        let (pipeline, id) = match name.split_once('/') {
            Some((p, id)) => (Some(p), id),
            None => (None, name),
        };
        let matches: Vec<usize> = self
            .components
            .iter()
            .filter(|(_, c)| {
                !c.retiring && &*c.id == id && pipeline.is_none_or(|p| &*c.pipeline == p)
            })
            .map(|(i, _)| i)
            .collect();
        match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!("no component `{name}`")),
            _ => Err(format!(
                "`{name}` is in several pipelines: write PIPELINE/{id}"
            )),
        }
    }

    fn status(&self) -> SupervisorStatus {
        let now = Instant::now();
        SupervisorStatus {
            pipelines: self
                .pipelines
                .iter()
                .map(|group| PipelineStatus {
                    name: group.plan.name.clone(),
                    completed: group.completed,
                    stalled: self
                        .options
                        .registry
                        .as_ref()
                        .and_then(|r| r.run_stalled(&group.plan.name)),
                    components: group
                        .members
                        .iter()
                        .map(|&i| {
                            let c = &self.components[i];
                            ComponentStatus {
                                id: c.id.to_string(),
                                state: c.state.name(),
                                pid: c.pid,
                                restarts: c.spawns.saturating_sub(1),
                                ready: c.state == State::Ready,
                                uptime_ms: c
                                    .started_at
                                    .map(|s| now.saturating_duration_since(s).as_millis() as u64),
                                last_exit: c.last_exit.map(|e| match e {
                                    ExitStatus::Code(code) => LastExit::Code { code },
                                    ExitStatus::Signal(signal) => LastExit::Signal { signal },
                                }),
                                next_restart_ms: match (&c.state, &c.timer) {
                                    (State::Backoff, Some((_, at))) => {
                                        Some(at.saturating_duration_since(now).as_millis() as u64)
                                    }
                                    (State::Backoff, None) => Some(0),
                                    _ => None,
                                },
                                last_probe: c.last_probe.clone(),
                                reason: c.reason.clone(),
                                notify_status: c.notify_status.clone(),
                                registration: self
                                    .options
                                    .registry
                                    .as_ref()
                                    .and_then(|r| r.registration(&c.pipeline, &c.id)),
                                usage: c
                                    .cgroup
                                    .as_ref()
                                    .and_then(|cg| cg.usage().ok())
                                    .map(Into::into),
                                outside_group: self
                                    .leftovers
                                    .procs
                                    .iter()
                                    .filter(|(id, l)| l.owner == i && descendants::alive(**id))
                                    .map(|(id, _)| id.pid)
                                    .collect(),
                            }
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// Runs the transition function and carries out its actions.
    fn feed(&mut self, idx: usize, event: Event) {
        let c = &self.components[idx];
        let ctx = Ctx {
            plan: &c.plan,
            history: &c.history,
            now: Instant::now(),
            jitter: rand::random::<f64>(),
        };
        let (state, actions) = next(&c.state, &event, &ctx);
        if state != c.state {
            tracing::info!(
                pipeline = %c.pipeline,
                component = %c.id,
                "{} -> {}",
                c.state.name(),
                state.name()
            );
        }
        let stopped_now = state == State::Stopped && c.state != State::Stopped;
        self.components[idx].state = state;
        if stopped_now {
            // Stopped on purpose: the control plane should not list it as a service (unless a
            // reload already runs a new component of the same name, which registers itself).
            if let Some(registry) = &self.options.registry {
                let c = &self.components[idx];
                let twin = self.components.iter().any(|(i, o)| {
                    i != idx && !o.retiring && o.pipeline == c.pipeline && o.id == c.id
                });
                if !twin {
                    registry.unregister(&c.pipeline, &c.id);
                }
            }
        }
        for action in actions {
            self.execute(idx, action);
        }
    }

    fn execute(&mut self, idx: usize, action: Action) {
        match action {
            Action::Spawn => match self.spawn(idx) {
                Ok(()) => self.feed(idx, Event::Spawned),
                Err(StartFailure {
                    message,
                    lacks_resources,
                }) => {
                    tracing::error!(component = %self.components[idx].id, "{message}");
                    self.feed(
                        idx,
                        Event::SpawnFailed {
                            error: message,
                            lacks_resources,
                        },
                    )
                }
            },
            Action::StartProbes => self.start_probes(idx),
            Action::StopProbes => {
                let c = &mut self.components[idx];
                c.probes.drain(..).for_each(|p| p.abort());
                c.notify_socket = None;
            }
            Action::Signal(signal) => {
                self.signal(idx, signal);
                // While the process still runs, what it started outside its group can be told
                // by ancestry; then it gets the same signal.
                self.survey();
                self.sweep();
            }
            Action::Kill => {
                let c = &mut self.components[idx];
                c.killed_after = Some(c.plan.stop.timeout);
                tracing::warn!(
                    pipeline = %c.pipeline,
                    component = %c.id,
                    "still running {:?} after the stop signal: SIGKILL to the process group",
                    c.plan.stop.timeout
                );
                self.signal(idx, libc::SIGKILL);
                for (id, l) in &self.leftovers.procs {
                    if l.owner == idx {
                        descendants::signal_if_same(*id, libc::SIGKILL);
                    }
                }
            }
            Action::ArmStopTimer(delay) | Action::ArmStartTimer(delay) => {
                self.arm_timer(idx, delay)
            }
            Action::ArmBackoff { delay, attempt } => {
                self.components[idx].history.attempt = attempt;
                self.arm_timer(idx, delay);
            }
            Action::CancelTimer => {
                let c = &mut self.components[idx];
                c.timer_id += 1;
                if let Some((t, _)) = c.timer.take() {
                    t.abort();
                }
            }
            Action::ResetHistory => self.components[idx].history = RestartHistory::default(),
            Action::SetReason(reason) => self.components[idx].reason = reason,
            Action::RestartDependents => {
                for d in self.components[idx].dependents.clone() {
                    self.feed(d, Event::DependencyRestarted);
                }
            }
        }
    }

    fn signal(&self, idx: usize, signal: i32) {
        let c = &self.components[idx];
        if let Some(pid) = c.pid {
            if let Err(e) = spawn::signal_group(pid, signal) {
                tracing::warn!(component = %c.id, "cannot signal process group {pid}: {e}");
            }
        }
    }

    fn arm_timer(&mut self, idx: usize, delay: Duration) {
        let c = &mut self.components[idx];
        c.timer_id += 1;
        if let Some((t, _)) = c.timer.take() {
            t.abort();
        }
        let msg = Msg::Timer {
            idx,
            timer: c.timer_id,
        };
        if delay.is_zero() {
            self.immediate.push_back(msg);
            return;
        }
        let tx = self.tx.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(msg);
        });
        // Delays are bounded at parse time; saturate anyway rather than panic on a clock edge.
        let now = Instant::now();
        c.timer = Some((task, now.checked_add(delay).unwrap_or(now)));
    }

    fn needs_notify_socket(plan: &ComponentPlan) -> bool {
        plan.watchdog.is_some()
            || [&plan.readiness, &plan.liveness]
                .iter()
                .any(|p| matches!(p.as_ref().map(|p| &p.check), Some(ProbeCheck::Notify)))
    }

    /// Starts the component's process. `Err` says why, for the status, and whether it was a
    /// lack of resources worth retrying.
    fn spawn(&mut self, idx: usize) -> Result<(), StartFailure> {
        let runtime_dir = self.options.runtime_dir.clone();
        let c = &mut self.components[idx];
        let identity = resolve_identity(c.plan.user.as_deref(), c.plan.group.as_deref())?;
        let program = command::resolve(
            &c.plan.command,
            c.plan.working_dir.as_deref(),
            &self.search_dirs,
        )
        .map_err(|e| e.to_string())?;
        let notify_path = if Self::needs_notify_socket(&c.plan) {
            let dir = runtime_dir.join("notify");
            create_private_dir(&dir)
                .map_err(|e| StartFailure::io(format!("cannot create {}", dir.display()), &e))?;
            let path = dir.join(format!("{}.{}.sock", c.pipeline, c.id));
            let socket = notify::bind(&path, identity.as_ref().map(|i| i.uid)).map_err(|e| {
                StartFailure::io(
                    format!("cannot create notify socket {}", path.display()),
                    &e,
                )
            })?;
            c.notify_socket = Some(socket);
            Some(path)
        } else {
            None
        };
        let run_id = self
            .options
            .run_ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&*c.pipeline)
            .cloned();
        let env = child_env(
            &c.plan,
            &EnvInputs {
                endpoint: self.options.endpoint.as_deref(),
                notify_socket: notify_path.as_deref(),
                user_home: identity.as_ref().and_then(|i| i.home.as_deref()),
                parent: &self.parent_env,
                run_id: run_id.as_deref(),
                attempt: c.spawns + 1,
            },
        );
        let join = match &self.options.cgroups {
            Some(tree) => {
                let cg = tree.component(&c.pipeline, &c.id).map_err(|e| match &e {
                    // Out of fds making the cgroup is as passing as out of fds forking.
                    crate::systemd::cgroup::CgroupError::Io { source, .. } => StartFailure {
                        message: format!("cannot create its cgroup: {e}"),
                        lacks_resources: lacks_resources(source),
                    },
                    _ => format!("cannot create its cgroup: {e}").into(),
                })?;
                for missing in cg
                    .apply_limits(&c.plan.resources)
                    .map_err(|e| format!("cannot set its cgroup limits: {e}"))?
                {
                    tracing::debug!(component = %c.id, "{missing}");
                }
                let join = cg
                    .join_on_exec()
                    .map_err(|e| format!("cannot open its cgroup: {e}"))?;
                c.cgroup = Some(cg);
                Some(join)
            }
            None => None,
        };
        let generation = c.generation + 1;
        let tx = self.tx.clone();
        let direct_output = self.options.log_sink.direct_output(&c.pipeline, &c.id);
        let spawned = spawn::spawn(
            &SpawnSpec {
                program: &program,
                args: &c.plan.args,
                env: &env,
                working_dir: c.plan.working_dir.as_deref(),
                identity: identity.as_ref(),
                rlimits: &c.plan.rlimits,
                capture_output: true,
                direct_output: direct_output.as_ref(),
                cgroup: join.as_ref(),
            },
            Box::new(move |exited| {
                let _ = tx.send(Msg::Exit {
                    idx,
                    generation,
                    exited,
                });
            }),
        )
        .map_err(|e| StartFailure::io(format!("cannot run {}", program.display()), &e))?;
        let now = Instant::now();
        c.generation = generation;
        c.pid = Some(spawned.pid);
        if let Some(registry) = &self.options.registry {
            registry.process_started(&c.pipeline, &c.id, spawned.pid as u32, c.plan.health_port);
        }
        c.main_start = descendants::stat(spawned.pid).map(|p| p.id.start);
        c.started_at = Some(now);
        c.spawns += 1;
        c.killed_after = None;
        c.history.record_start(
            now,
            c.plan.restart.start_limit_interval,
            c.plan.restart.start_limit_burst,
        );
        c.env = Arc::new(env);
        c.last_probe = None;
        tracing::info!(pipeline = %c.pipeline, component = %c.id, pid = spawned.pid, "started {}", program.display());
        self.forwarders.retain(|t| !t.is_finished());
        for (fd, stream) in [
            (spawned.stdout, logsink::Stream::Stdout),
            (spawned.stderr, logsink::Stream::Stderr),
        ] {
            if let Some(fd) = fd {
                let sink = self.options.log_sink.clone();
                let origin = logsink::LineOrigin {
                    pipeline: c.pipeline.clone(),
                    component: c.id.clone(),
                    restart: c.spawns - 1,
                    pid: spawned.pid as u32,
                };
                self.forwarders.push(tokio::spawn(async move {
                    let id = origin.component.clone();
                    if let Err(e) = logsink::forward(fd, sink, origin, stream).await {
                        tracing::warn!(component = %id, "reading output: {e}");
                    }
                }));
            }
        }
        self.save_record();
        Ok(())
    }

    fn start_probes(&mut self, idx: usize) {
        let tx = self.tx.clone();
        let registry = self.options.registry.clone();
        let search_dirs = self.search_dirs.clone();
        let c = &mut self.components[idx];
        let generation = c.generation;
        let target = ProbeTarget {
            pipeline: c.pipeline.clone(),
            component: c.id.clone(),
            env: c.env.clone(),
            working_dir: c.plan.working_dir.clone(),
            search_dirs,
            registry,
        };
        for (kind, plan) in [
            (ProbeKind::Readiness, &c.plan.readiness),
            (ProbeKind::Liveness, &c.plan.liveness),
        ] {
            let Some(plan) = plan.clone() else { continue };
            if plan.check == ProbeCheck::Notify {
                continue;
            }
            let tx = tx.clone();
            c.probes.push(tokio::spawn(probe::run_periodic(
                kind,
                plan,
                target.clone(),
                move |update| {
                    tx.send(Msg::Probe {
                        idx,
                        generation,
                        update,
                    })
                    .is_ok()
                },
            )));
        }
        if let Some(socket) = c.notify_socket.take() {
            let watchdog = c.plan.watchdog.or_else(|| {
                c.plan
                    .liveness
                    .as_ref()
                    .filter(|p| p.check == ProbeCheck::Notify)
                    .map(|p| p.period * p.failure_threshold.max(1) + p.initial_delay)
            });
            c.probes.push(tokio::spawn(notify::listen(
                socket,
                watchdog,
                move |event| {
                    tx.send(Msg::Notify {
                        idx,
                        generation,
                        event,
                    })
                    .is_ok()
                },
            )));
        }
    }
}

/// Why a component's process could not be started.
#[derive(Debug)]
struct StartFailure {
    message: String,
    /// The host ran short of fds, processes or memory: a retry may succeed, unlike a missing
    /// program or a bad user.
    lacks_resources: bool,
}

impl StartFailure {
    fn io(context: String, error: &std::io::Error) -> Self {
        StartFailure {
            message: format!("{context}: {error}"),
            lacks_resources: lacks_resources(error),
        }
    }
}

impl From<String> for StartFailure {
    fn from(message: String) -> Self {
        StartFailure {
            message,
            lacks_resources: false,
        }
    }
}

/// Whether an error from creating pipes, sockets or the process (fork, exec, setuid) means
/// the host or the supervisor ran out of something that may come back.
fn lacks_resources(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM)
    )
}

/// Every component's dependencies are in its pipeline, and names are unique: what the
/// supervisor relies on when it links components by index.
fn check_plans(pipelines: &[PipelinePlan]) -> Result<(), SupervisorError> {
    let mut names = std::collections::BTreeSet::new();
    for pipeline in pipelines {
        if !names.insert(pipeline.name.as_str()) {
            return Err(SupervisorError::DuplicatePipeline(pipeline.name.clone()));
        }
        let mut ids = std::collections::BTreeSet::new();
        for c in &pipeline.components {
            if !ids.insert(c.id.as_str()) {
                return Err(SupervisorError::DuplicateComponent {
                    pipeline: pipeline.name.clone(),
                    component: c.id.clone(),
                });
            }
        }
        for c in &pipeline.components {
            if let Some(missing) = c
                .depends_on
                .iter()
                .chain(&c.inputs)
                .find(|n| !ids.contains(n.as_str()))
            {
                return Err(SupervisorError::UnknownDependency {
                    pipeline: pipeline.name.clone(),
                    component: c.id.clone(),
                    missing: missing.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Creates `dir` (and parents) that others may traverse but not list: a component running as another user reaches its own notify socket by name, and nothing else.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_fds_processes_or_memory_is_a_lack_of_resources() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::EAGAIN, libc::ENOMEM] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert!(lacks_resources(&e), "{e}");
            assert!(StartFailure::io("cannot run x".into(), &e).lacks_resources);
        }
    }

    #[test]
    fn a_missing_or_unexecutable_program_is_a_permanent_start_failure() {
        for errno in [
            libc::ENOENT,
            libc::EACCES,
            libc::ENOEXEC,
            libc::EISDIR,
            libc::EPERM,
        ] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert!(!lacks_resources(&e), "{e}");
        }
        assert!(!lacks_resources(&std::io::Error::other("no errno")));
        assert!(!StartFailure::from("user `nobody2` does not exist".to_string()).lacks_resources);
    }
}
