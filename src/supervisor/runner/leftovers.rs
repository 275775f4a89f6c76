//! The runner's part in ending processes that left their component's process group: when
//! to look for them, whose they are, when to signal them, and the record a successor reads
//! (see `descendants.rs` for the /proc side).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::{Generation, Msg, Supervisor};
use crate::supervisor::descendants::{self, Leftover, Origin, ProcId};
use crate::supervisor::reaper;
use crate::supervisor::state::State;

/// Processes that left their component's process group (see `descendants.rs`).
impl Supervisor {
    /// Ends what a killed supervisor with this runtime directory left running.
    pub(super) fn end_predecessors(&mut self) {
        let path = descendants::record_path(&self.options.runtime_dir);
        let ended = descendants::end_predecessors(&path, Duration::from_secs(2));
        if !ended.is_empty() {
            let pids: Vec<String> = ended.iter().map(|id| id.pid.to_string()).collect();
            tracing::warn!(
                "ended {} process(es) a killed supervisor left running: {}",
                ended.len(),
                pids.join(", ")
            );
        }
        self.record.boot = descendants::boot_id();
        self.record.supervisor = Some(self.me);
        let _ = std::fs::create_dir_all(&self.options.runtime_dir);
        self.save_record();
    }

    /// Finds processes that left their component's group and says whose they are.
    pub(super) fn survey(&mut self) {
        let procs = descendants::all();
        let mains: HashMap<i32, usize> = self
            .components
            .iter()
            .filter_map(|(i, c)| c.pid.map(|p| (p, i)))
            .collect();
        let found = descendants::survey(self.me.pid, &procs, &mains, &reaper::is_registered);
        let mut owners: HashMap<i32, Option<(usize, Generation)>> = Default::default();
        for (info, origin) in found {
            if self.leftovers.procs.contains_key(&info.id) {
                continue;
            }
            let owner = match origin {
                Origin::Under(i) => Some((i, self.components[i].generation)),
                Origin::Orphan { top } => *owners
                    .entry(top)
                    .or_insert_with(|| self.owner_of_orphan(top, &procs)),
            };
            let Some((owner, generation)) = owner else {
                continue;
            };
            let c = &self.components[owner];
            tracing::info!(
                pipeline = %c.pipeline,
                component = %c.id,
                pid = info.id.pid,
                "process {} left the component's process group; it is stopped with the component",
                info.id.pid
            );
            self.leftovers.procs.insert(
                info.id,
                Leftover {
                    owner,
                    generation,
                    signalled: None,
                },
            );
        }
        let live: HashSet<ProcId> = procs.iter().map(|p| p.id).collect();
        self.leftovers.procs.retain(|id, _| live.contains(id));
    }

    /// Whose a process re-parented to the supervisor is: that of a known leftover it was
    /// below, else the component named by the `FLOWCTL_COMPONENT_ID` it inherited (of
    /// same-named components, the one whose process started last before it).
    fn owner_of_orphan(
        &self,
        top: i32,
        procs: &[descendants::ProcInfo],
    ) -> Option<(usize, Generation)> {
        let top_info = procs.iter().find(|p| p.id.pid == top)?;
        if let Some(l) = self.leftovers.procs.get(&top_info.id) {
            return Some((l.owner, l.generation));
        }
        let id = descendants::component_id_of(top)?;
        let (idx, c) = self
            .components
            .iter()
            .filter(|(_, c)| *c.id == *id)
            .max_by_key(|(_, c)| {
                (
                    c.main_start.is_some_and(|s| s <= top_info.id.start),
                    c.main_start,
                )
            })?;
        // Started after the running process: it is that one's; otherwise an older one's.
        let current = c.pid.is_some() && c.main_start.is_some_and(|s| s <= top_info.id.start);
        Some((idx, c.generation.wrapping_sub(u64::from(!current))))
    }

    /// Sends the stop signal to each leftover whose component's process has stopped or ended
    /// (or was replaced), and SIGKILL once its stop timeout has passed.
    pub(super) fn sweep(&mut self) {
        let now = Instant::now();
        let mut next_check: Option<Duration> = None;
        for (id, l) in self.leftovers.procs.iter_mut() {
            let Some(c) = self.components.get(l.owner) else {
                descendants::signal_if_same(*id, libc::SIGKILL);
                continue;
            };
            let ends = c.pid.is_none()
                || c.generation != l.generation
                || matches!(c.state, State::Stopping(_));
            if !ends {
                continue;
            }
            match l.signalled {
                None => {
                    tracing::info!(
                        pipeline = %c.pipeline,
                        component = %c.id,
                        "stopping process {} it left outside its process group",
                        id.pid
                    );
                    descendants::signal_if_same(*id, c.plan.stop.signal);
                    l.signalled = Some(now);
                    next_check = Some(
                        next_check.map_or(c.plan.stop.timeout, |d| d.min(c.plan.stop.timeout)),
                    );
                }
                Some(at) if now.saturating_duration_since(at) >= c.plan.stop.timeout => {
                    if descendants::signal_if_same(*id, libc::SIGKILL) {
                        tracing::warn!(
                            pipeline = %c.pipeline,
                            component = %c.id,
                            "process {} still running {:?} after the stop signal: SIGKILL",
                            id.pid,
                            c.plan.stop.timeout
                        );
                    }
                }
                Some(_) => {}
            }
        }
        if let Some(delay) = next_check {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(Msg::Survey);
            });
        }
    }

    /// Rewrites the record file when what it should say changed.
    pub(super) fn save_record(&mut self) {
        if self.record.supervisor.is_none() {
            return; // not running yet
        }
        let mains = self
            .components
            .values()
            .filter_map(|c| {
                Some(ProcId {
                    pid: c.pid?,
                    start: c.main_start?,
                })
            })
            .collect();
        let leftovers = self.leftovers.procs.keys().copied().collect();
        if self.record.mains == mains && self.record.leftovers == leftovers {
            return;
        }
        self.record.mains = mains;
        self.record.leftovers = leftovers;
        let path = descendants::record_path(&self.options.runtime_dir);
        if let Err(e) = self.record.save(&path) {
            tracing::debug!("cannot write {}: {e}", path.display());
        }
    }

    /// At the end of a run: every leftover gets its stop signal, then SIGKILL after its
    /// timeout, and the run returns once they are gone.
    pub(super) async fn end_leftovers(&mut self) {
        self.survey();
        let longest = self
            .leftovers
            .procs
            .values()
            .filter_map(|l| self.components.get(l.owner))
            .map(|c| c.plan.stop.timeout)
            .max()
            .unwrap_or_default();
        let deadline = Instant::now() + longest + Duration::from_secs(2);
        while !self.leftovers.procs.is_empty() && Instant::now() < deadline {
            self.sweep();
            tokio::time::sleep(Duration::from_millis(20)).await;
            reaper::reap_all();
            let live: Vec<ProcId> = self
                .leftovers
                .procs
                .keys()
                .copied()
                .filter(|id| descendants::alive(*id))
                .collect();
            self.leftovers.procs.retain(|id, _| live.contains(id));
        }
    }
}
