//! Replays under the daemon (`flowctl replay --pipeline`, `flowctl dlq replay`): the copy
//! `NAME@FROM-TO` of an installed pipeline joins the supervisor beside it, and leaves it once
//! its run has ended (see `PipelineRuns::end_finished`).

use std::time::SystemTime;

use tonic::Status;

use super::PipelineRuns;
use crate::registry::embedded::EmbeddedRegistry;
use crate::registry::ReplayRequest;
use crate::replay;
use crate::spec::{Defaults, ResolveOptions};
use crate::supervisor::SupervisorHandle;

/// Starts the replay `request` asks for; answers its run id and instance name.
pub(super) async fn start(
    request: &ReplayRequest,
    defaults: &Defaults,
    handle: &SupervisorHandle,
    embedded: &EmbeddedRegistry,
    runs: &mut PipelineRuns,
) -> Result<(String, String), Status> {
    let stopping = || Status::unavailable("the daemon is stopping");
    let running = handle.plans().await.ok_or_else(stopping)?;
    let name = &request.pipeline;
    let Some(live) = running
        .iter()
        .find(|p| p.name == *name && !replay::is_instance(&p.name))
    else {
        return Err(Status::not_found(format!(
            "no pipeline named {name:?} is installed (flowctl get pipelines lists them)"
        )));
    };
    let instance = replay::instance_name(name, request.range);
    if running.iter().any(|p| p.name == instance) {
        let run = runs.run_of(&instance).unwrap_or("?");
        return Err(Status::already_exists(format!(
            "{instance} is already running (run {run}); follow it with `flowctl pipelines get {run}`"
        )));
    }
    let copy = replay::copy_of(
        live,
        request.range,
        &running,
        ResolveOptions {
            defaults: defaults.clone(),
            ..Default::default()
        },
    )
    .map_err(|diags| {
        Status::failed_precondition(format!(
            "cannot make {instance} from {}:\n{}",
            live.source_file.display(),
            diags.to_string().trim_end()
        ))
    })?;
    let mut plans = running.clone();
    plans.push(copy.clone());
    handle
        .reload(plans)
        .await
        .map_err(|e| Status::internal(format!("cannot start {instance}: {e}")))?;
    let run_id = runs
        .begin(
            embedded,
            &copy,
            handle,
            request.resolve_dead_letters.clone(),
        )
        .map_err(|e| Status::internal(format!("cannot record the run of {instance}: {e:#}")))?;
    tracing::info!(pipeline = %name, instance = %instance, run = %run_id, "replay started");
    Ok((run_id, instance))
}

/// Takes replays whose run ended out of the supervisor (what still runs of a failed one is
/// drained and stopped).
pub(super) async fn take_out(handle: &SupervisorHandle, ended: &[String]) {
    if ended.is_empty() {
        return;
    }
    let Some(running) = handle.plans().await else {
        return;
    };
    let kept = running
        .into_iter()
        .filter(|p| !ended.contains(&p.name))
        .collect();
    if let Err(e) = handle.reload(kept).await {
        tracing::warn!("cannot take out the replays {}: {e}", ended.join(", "));
    }
}

/// After a replay completed: the letters it was to resolve, unless it failed on their
/// ledgers again.
pub(super) fn resolve_letters(embedded: &EmbeddedRegistry, run_id: &str, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let resolved =
        embedded
            .registry
            .dead_letters()
            .resolve_replayed(ids, run_id, SystemTime::now());
    match resolved {
        Ok(open) if open.is_empty() => {
            tracing::info!(run = %run_id, letters = %ids.join(","), "dead letters resolved by their replay")
        }
        Ok(open) => tracing::warn!(
            run = %run_id,
            "the replay failed on the ledgers of dead letters {} again; they stay open",
            open.join(", ")
        ),
        Err(e) => tracing::warn!(run = %run_id, "cannot resolve the replayed dead letters: {e}"),
    }
}
