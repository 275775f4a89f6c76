//! Pipeline files: `apiVersion: flowctl/v1`, `kind: Pipeline`.
//!
//! Reading a file has two steps. [`load_file`] parses and checks it without touching the host
//! (this is what `flowctl validate` reports on first). [`resolve`] then makes it runnable:
//! allocates free ports, expands `${…}`, reads secrets, injects upstream addresses and fills in
//! [`Defaults`]. [`load_plan`] does both.
//!
//! Every problem is reported, not just the first, as `FILE:LINE:COL: error: MESSAGE`
//! ([`Diagnostics`]).
//!
//! # What a component may say
//!
//! The fields of pipelines written for the Go flowctl (`id, type, image, command, args, env,
//! config, inputs, depends_on, input_event_types, output_event_types, ports, health_check,
//! health_port, restart_policy, resources, replicas, secrets`) and the supervisor's own
//! (`working_dir, user, group, inherit_env, rlimits, restart, readiness, liveness, stop,
//! watchdog, retry_policy`; the Go ecosystem's `retryPolicy` is read as it, as `spec.range`'s
//! `start, end, chunkSize, maxWorkers` are read as `from_ledger, to_ledger, chunk_size,
//! max_workers`, with a notice). Container-only fields (`volumes`, `spec.pipelines`,
//! container drivers, images other than the bundled components) are refused with the reason.
//!
//! # Ports and references
//!
//! A port whose `hostPort` is `0` or absent gets a free loopback port; an unnamed port is
//! `grpc` (the one `PORT` and `${ID.address}` use) unless another has that name; a source or
//! processor that declares no port gets a `grpc` port. Every component has a health port,
//! `health_port` or allocated, which references and probes call `health`. Env values and args may use `${ports.NAME}`, `${ID.ports.NAME}`,
//! `${ID.address}` (`127.0.0.1:<its grpc port, else its first port>`), `${VAR}` from flowctl's
//! environment (unset is an error) and `$${` for a literal `${`.
//!
//! A component reading others through `inputs` also gets its first input's address under the
//! names the Stellar components read, unless it sets them: `SOURCE_SERVICE_ADDRESS` and
//! `LIVE_SOURCE_ENDPOINT` for a processor (or a sink reading a source), `TTP_SERVICE_ADDRESS`
//! for a sink reading a processor.

mod bundled;
mod decode;
mod defaults;
mod diag;
mod graph;
mod interp;
mod model;
mod node;
mod ports;
mod reader;
mod resolve;
mod secrets;
pub(crate) mod units;
mod validate;

use std::path::Path;

pub use defaults::{Defaults, ProbeTiming};
pub use diag::{Diagnostic, Diagnostics, Severity};
pub use model::{
    At, Check, Component, Pipeline, Port, PortRef, Probe, RestartSpec, Secret, StopSpec,
};
pub use node::Pos;
pub use resolve::ResolveOptions;

use crate::plan::PipelinePlan;

/// A runnable pipeline and what the operator should be told about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub plan: PipelinePlan,
    /// Notices (never errors), one per line when displayed.
    pub notices: Diagnostics,
}

/// Reads, parses and checks a pipeline file. Touches nothing else on the host.
pub fn load_file(path: &Path) -> Result<Pipeline, Diagnostics> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_str(path, &text),
        Err(e) => {
            Err(Diagnostic::file_error(path, format!("cannot read the pipeline file: {e}")).into())
        }
    }
}

/// [`load_file`] on text already in memory; `file` names it in messages and is the base of
/// relative `working_dir` and secret paths.
pub fn parse_str(file: &Path, text: &str) -> Result<Pipeline, Diagnostics> {
    let root = match node::parse(text) {
        Ok(root) => root,
        Err((pos, msg)) => return Err(Diagnostic::error(file, pos, msg).into()),
    };
    let mut ctx = reader::Ctx::new(file);
    let mut pipeline = decode::pipeline(&mut ctx, &root, text);
    validate::check(&mut ctx, &pipeline);
    let mut diags = ctx.diags;
    diags.sort();
    if diags.has_errors() {
        return Err(diags);
    }
    pipeline.notices = diags;
    Ok(pipeline)
}

/// Makes a checked pipeline runnable: see the module documentation.
pub fn resolve(pipeline: &Pipeline, opts: &ResolveOptions) -> Result<PipelinePlan, Diagnostics> {
    resolve::resolve(pipeline, opts).map_err(|mut d| {
        d.sort();
        d
    })
}

/// [`load_file`] then [`resolve`]. On failure the diagnostics hold the notices too.
pub fn load_plan(path: &Path, opts: &ResolveOptions) -> Result<Loaded, Diagnostics> {
    let pipeline = load_file(path)?;
    match resolve(&pipeline, opts) {
        Ok(plan) => Ok(Loaded {
            plan,
            notices: pipeline.notices,
        }),
        Err(errors) => {
            let mut all = pipeline.notices;
            all.extend(errors);
            all.sort();
            Err(all)
        }
    }
}
