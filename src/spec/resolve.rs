//! From the checked [`Pipeline`] to the [`PipelinePlan`] the supervisor runs: ports allocated,
//! `${…}` expanded, secrets read, upstream addresses injected, defaults filled in.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::defaults::Defaults;
use super::diag::Diagnostics;
use super::graph;
use super::interp::{self, Part};
use super::model::{At, Check, Component, Pipeline, PortRef, Probe};
use super::node::Pos;
use super::ports::Allocator;
use super::reader::Ctx;
use crate::plan::{
    ComponentPlan, HeldPorts, PipelinePlan, PortPlan, ProbeCheck, ProbePlan, RestartPlan, Role,
    StopPlan,
};

/// What resolution needs from its caller.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// Values for what components leave out.
    pub defaults: Defaults,
    /// The variables `${VAR}` reads; `None` reads flowctl's own environment.
    pub vars: Option<BTreeMap<String, String>>,
    /// Ports never to allocate (e.g. those other running pipelines use).
    pub reserved_ports: BTreeSet<u16>,
    /// On a reload, the ports running pipelines hold: a port the spec leaves to allocation
    /// goes back to the component that holds it (same pipeline, component and port name),
    /// and is never given to another pipeline.
    pub held_ports: HeldPorts,
    /// Replaces `spec.range` for this run (`flowctl run --from-ledger A --to-ledger B`).
    pub range: Option<crate::plan::LedgerRange>,
    /// A replay's copy, run beside the original: every port is allocated, the fixed ones too
    /// (its components find each other through the allocated ports), and `range` wins over
    /// the components' own START_LEDGER/END_LEDGER.
    pub replay_copy: bool,
    /// The shard of a backfill this run is (`flowctl run --shard-id`), for `${shard.id}`.
    pub shard_id: Option<String>,
}

/// The variable names the seeds' components read their upstream address from, by the role of
/// the reader and of the component it reads. Only the first input is injected: one variable
/// holds one address.
fn upstream_vars(reader: Role, input: Role) -> &'static [&'static str] {
    match (reader, input) {
        (Role::Sink, Role::Processor) => &["TTP_SERVICE_ADDRESS"],
        (Role::Processor | Role::Sink, _) => &["SOURCE_SERVICE_ADDRESS", "LIVE_SOURCE_ENDPOINT"],
        (Role::Source, _) => &[],
    }
}

struct Allocated {
    ports: Vec<PortPlan>,
    health_port: u16,
}

impl Allocated {
    /// A named port; `health` is the health port unless a port has that name.
    fn port(&self, name: &str) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.port)
            .or_else(|| (name == "health").then_some(self.health_port))
    }

    fn service_port(&self) -> Option<u16> {
        self.port("grpc").or(self.ports.first().map(|p| p.port))
    }
}

/// Set in a replay's components to its instance name (`NAME@FROM-TO`).
pub const REPLAY: &str = "FLOWCTL_REPLAY";

pub fn resolve(p: &Pipeline, opts: &ResolveOptions) -> Result<PipelinePlan, Diagnostics> {
    let mut ctx = Ctx::new(&p.file);
    let allocated = allocate_ports(&mut ctx, p, opts);
    if ctx.diags.has_errors() {
        return Err(ctx.diags);
    }
    let d = &opts.defaults;
    let range = opts.range.or(p.range);

    let mut plans: Vec<ComponentPlan> = Vec::with_capacity(p.components.len());
    for c in &p.components {
        let own = &allocated[&c.id];
        let render = |ctx: &mut Ctx, field: &str, value: &At<String>| -> Option<String> {
            let parts = match interp::parse(&value.value) {
                Ok(parts) => parts,
                Err(msg) => {
                    ctx.error(value.pos, format!("`{field}`: {msg}"));
                    return None;
                }
            };
            match interp::render(&parts, |part| lookup(part, own, &allocated, range, opts)) {
                Ok(s) if s.contains('\0') => {
                    ctx.error(
                        value.pos,
                        format!("`{field}` contains a NUL byte, which no process argument or variable can hold"),
                    );
                    None
                }
                Ok(s) => Some(s),
                Err(msg) => {
                    ctx.error(value.pos, format!("`{field}`: {msg}"));
                    None
                }
            }
        };

        let mut env = BTreeMap::new();
        for (k, v) in &c.env {
            if let Some(s) = render(&mut ctx, &format!("env.{k}"), v) {
                env.insert(k.clone(), s);
            }
        }
        let args: Vec<String> = c
            .args
            .iter()
            .filter_map(|a| render(&mut ctx, "args", a))
            .collect();
        for s in &c.secrets {
            match super::secrets::read(&s.host_path.value) {
                Ok(value) => {
                    env.insert(s.env.clone(), value);
                }
                Err(_) if !s.required && !s.host_path.value.exists() => {}
                Err(msg) => ctx.error(s.host_path.pos, format!("secret `{}`: {msg}", s.name)),
            }
        }
        // Sources and sinks learn the run's range as the seeds' components read it; their
        // own env wins.
        if opts.replay_copy {
            // Components may do otherwise in a replay (a JSONL sink refuses a file that
            // already holds the range rather than write nothing).
            env.insert(REPLAY.to_string(), p.name.clone());
        }
        if let (Some(range), Role::Source | Role::Sink) = (range, c.role) {
            if opts.replay_copy {
                env.remove(super::decode::START_LEDGER);
                env.remove(super::decode::END_LEDGER);
            }
            env.entry(super::decode::START_LEDGER.to_string())
                .or_insert_with(|| range.from.to_string());
            if let Some(to) = range.to {
                env.entry(super::decode::END_LEDGER.to_string())
                    .or_insert_with(|| to.to_string());
            }
        }
        if let Some(input) = c.inputs.first().and_then(|i| p.component(&i.value)) {
            if let Some(port) = allocated[&input.id].service_port() {
                for var in upstream_vars(c.role, input.role) {
                    env.entry(var.to_string())
                        .or_insert_with(|| format!("127.0.0.1:{port}"));
                }
            }
        }

        let readiness = c
            .readiness
            .as_ref()
            .and_then(|pr| probe(&mut ctx, c, own, pr, d));
        let liveness = c
            .liveness
            .as_ref()
            .and_then(|pr| probe(&mut ctx, c, own, pr, d));

        if let Some(dir) = &c.working_dir {
            if !dir.value.is_dir() {
                ctx.error(
                    dir.pos,
                    format!("`working_dir`: {} is not a directory", dir.value.display()),
                );
            }
        }
        if let Some(u) = &c.user {
            check_account(&mut ctx, u, "user");
        }
        if let Some(g) = &c.group {
            check_account(&mut ctx, g, "group");
        }

        // A component's own restart fields win over the pipeline's `retry_policy`.
        let r = &match &p.retry_policy {
            Some(shared) => c.restart.or(shared),
            None => c.restart.clone(),
        };
        let dr = &d.restart;
        let mut depends_on: Vec<String> = Vec::new();
        for dep in c.inputs.iter().chain(&c.depends_on) {
            if !depends_on.contains(&dep.value) {
                depends_on.push(dep.value.clone());
            }
        }
        // Without a readiness check a component is ready once started: nothing to time out.
        let start_timeout = Some(c.start_timeout.unwrap_or(d.start_timeout))
            .filter(|t| !t.is_zero() && readiness.is_some());
        plans.push(ComponentPlan {
            id: c.id.clone(),
            role: c.role,
            command: c.command.value.clone(),
            args,
            env,
            inherit_env: c.inherit_env.unwrap_or(d.inherit_env),
            on_error: c.on_error.unwrap_or_default(),
            heartbeat_interval_format: c.heartbeat_interval_format.unwrap_or_default(),
            working_dir: c.working_dir.as_ref().map(|w| w.value.clone()),
            user: c.user.as_ref().map(|u| u.value.clone()),
            group: c.group.as_ref().map(|g| g.value.clone()),
            rlimits: c.rlimits.clone(),
            inputs: c.inputs.iter().map(|i| i.value.clone()).collect(),
            depends_on,
            ports: own.ports.clone(),
            health_port: own.health_port,
            restart: RestartPlan {
                policy: r.policy.unwrap_or(dr.policy),
                initial_delay: r.initial_delay.unwrap_or(dr.initial_delay),
                multiplier: r.multiplier.unwrap_or(dr.multiplier),
                max_delay: r.max_delay.unwrap_or(dr.max_delay),
                jitter: r.jitter.unwrap_or(dr.jitter),
                reset_after: r.reset_after.unwrap_or(dr.reset_after),
                start_limit_burst: r.start_limit_burst.unwrap_or(dr.start_limit_burst),
                start_limit_interval: r.start_limit_interval.unwrap_or(dr.start_limit_interval),
                restart_with_dependencies: r
                    .with_dependencies
                    .unwrap_or(dr.restart_with_dependencies),
            },
            readiness,
            liveness,
            stop: StopPlan {
                signal: c.stop.signal.unwrap_or(d.stop.signal),
                timeout: c.stop.timeout.unwrap_or(d.stop.timeout),
            },
            watchdog: c.watchdog,
            start_timeout,
            resources: c.resources.clone(),
        });
    }
    if ctx.diags.has_errors() {
        return Err(ctx.diags);
    }

    let index: BTreeMap<&str, usize> = plans
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = plans
        .iter()
        .map(|c| {
            c.depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    let order = graph::order(&edges);
    let mut slots: Vec<Option<ComponentPlan>> = plans.into_iter().map(Some).collect();
    let components = order.into_iter().filter_map(|i| slots[i].take()).collect();
    Ok(PipelinePlan {
        name: p.name.clone(),
        source_file: p.file.clone(),
        config_yaml: p.text.clone(),
        components,
        range,
        stalled_after: Some(p.stalled_after.unwrap_or(DEFAULT_STALLED_AFTER))
            .filter(|d| !d.is_zero()),
        chunking: p.chunking,
    })
}

/// `spec.range.stalled_after` when the file leaves it out.
pub const DEFAULT_STALLED_AFTER: Duration = Duration::from_secs(300);

/// Fixed ports must not clash between components; the rest get free loopback ports.
fn allocate_ports(
    ctx: &mut Ctx,
    p: &Pipeline,
    opts: &ResolveOptions,
) -> BTreeMap<String, Allocated> {
    let mut fixed: BTreeMap<(u16, &str), (&str, Pos)> = BTreeMap::new();
    for c in &p.components {
        let declared = c
            .ports
            .iter()
            .filter(|_| !opts.replay_copy)
            .filter_map(|port| port.port.map(|n| (n, port.protocol.as_str(), port.pos)));
        let health = c
            .health_port
            .iter()
            .filter(|_| !opts.replay_copy)
            .map(|h| (h.value, "tcp", h.pos));
        for (n, proto, pos) in declared.chain(health) {
            match fixed.get(&(n, proto)) {
                Some((other, other_pos)) if *other != c.id => ctx.error(
                    pos,
                    format!(
                        "port {n} is also used by `{other}` (at {other_pos}); give one of them \
                         another port, or leave it out to have one allocated"
                    ),
                ),
                Some(_) => {}
                None => {
                    fixed.insert((n, proto), (&c.id, pos));
                }
            }
        }
    }
    let mut taken: BTreeSet<u16> = fixed
        .keys()
        .map(|(n, _)| *n)
        .chain(opts.reserved_ports.iter().copied())
        .chain(opts.held_ports.of_others(&p.name))
        .collect();
    // Ports a component already holds go back to it, unless a fixed port now claims them.
    let mut kept: BTreeMap<(&str, Option<&str>), u16> = BTreeMap::new();
    for c in &p.components {
        let auto = c
            .ports
            .iter()
            .filter(|port| port.port.is_none() || opts.replay_copy)
            .map(|port| Some(port.name.as_str()))
            .chain((c.health_port.is_none() || opts.replay_copy).then_some(None));
        for name in auto {
            if let Some(n) = opts.held_ports.get(&p.name, &c.id, name) {
                if n != 0 && taken.insert(n) {
                    kept.insert((c.id.as_str(), name), n);
                }
            }
        }
    }
    let mut alloc = Allocator::new(taken);
    let held = |id: &str, name: Option<&str>| kept.get(&(id, name)).copied();
    let mut out = BTreeMap::new();
    for c in &p.components {
        let mut ports = Vec::new();
        for port in &c.ports {
            let n = match port.port.filter(|_| !opts.replay_copy) {
                Some(n) => n,
                None => match held(&c.id, Some(&port.name))
                    .map_or_else(|| alloc.allocate(&port.protocol), Ok)
                {
                    Ok(n) => n,
                    Err(e) => {
                        ctx.error(
                            port.pos,
                            format!("cannot allocate port `{}`: {e}", port.name),
                        );
                        0
                    }
                },
            };
            ports.push(PortPlan {
                name: port.name.clone(),
                port: n,
                protocol: port.protocol.clone(),
            });
        }
        let health_port = match c.health_port.as_ref().filter(|_| !opts.replay_copy) {
            Some(h) => h.value,
            None => match held(&c.id, None) {
                Some(n) => n,
                None => alloc.allocate("tcp").unwrap_or_else(|e| {
                    ctx.error(c.pos, format!("cannot allocate a health port: {e}"));
                    0
                }),
            },
        };
        out.insert(c.id.clone(), Allocated { ports, health_port });
    }
    out
}

fn lookup(
    part: &Part,
    own: &Allocated,
    all: &BTreeMap<String, Allocated>,
    range: Option<crate::plan::LedgerRange>,
    opts: &ResolveOptions,
) -> Result<String, String> {
    let missing = |what: String| format!("{what} does not exist");
    match part {
        Part::Lit(s) => Ok(s.clone()),
        Part::RangeFrom => range.map(|r| r.from.to_string()).ok_or_else(|| {
            "`${range.from}` needs a ledger range: `spec.range` or `--from-ledger`".to_string()
        }),
        Part::RangeTo => range
            .and_then(|r| r.to)
            .map(|to| to.to_string())
            .ok_or_else(|| {
                "`${range.to}` needs a bounded range: `spec.range.to_ledger` or `--to-ledger`"
                    .to_string()
            }),
        Part::ShardId => opts.shard_id.clone().ok_or_else(|| {
            "`${shard.id}` is set only for a shard of a backfill (`flowctl run --shard-id S`)"
                .to_string()
        }),
        Part::OwnPort(name) => own
            .port(name)
            .map(|n| n.to_string())
            .ok_or_else(|| missing(format!("port `{name}`"))),
        Part::Port { id, name } => all
            .get(id)
            .and_then(|a| a.port(name))
            .map(|n| n.to_string())
            .ok_or_else(|| missing(format!("port `{id}.ports.{name}`"))),
        Part::Address(id) => all
            .get(id)
            .and_then(Allocated::service_port)
            .map(|n| format!("127.0.0.1:{n}"))
            .ok_or_else(|| missing(format!("the address of `{id}`"))),
        Part::Var(name) => {
            let value = match &opts.vars {
                Some(vars) => vars.get(name).cloned(),
                None => match std::env::var(name) {
                    Ok(v) => Some(v),
                    Err(std::env::VarError::NotPresent) => None,
                    Err(std::env::VarError::NotUnicode(_)) => {
                        return Err(format!(
                            "`${{{name}}}` is not valid UTF-8 in flowctl's environment"
                        ))
                    }
                },
            };
            value.ok_or_else(|| {
                format!(
                    "`${{{name}}}` is not set in flowctl's environment (set it, or write \
                     `$${{{name}}}` for a literal `${{{name}}}`)"
                )
            })
        }
    }
}

fn probe(
    ctx: &mut Ctx,
    c: &Component,
    own: &Allocated,
    pr: &Probe,
    d: &Defaults,
) -> Option<ProbePlan> {
    let port = |ctx: &mut Ctx, r: &Option<At<PortRef>>, default: Option<u16>| -> Option<u16> {
        match r {
            None => default.or_else(|| {
                ctx.error(pr.pos, format!("the probe of `{}` needs a `port`", c.id));
                None
            }),
            Some(At {
                value: PortRef::Number(n),
                ..
            }) => Some(*n),
            Some(At {
                value: PortRef::Name(name),
                pos,
            }) => own.port(name).or_else(|| {
                ctx.error(*pos, format!("`{}` has no port named `{name}`", c.id));
                None
            }),
        }
    };
    let check = match &pr.check {
        Check::Http { port: p, path } => ProbeCheck::Http {
            port: port(ctx, p, Some(own.health_port))?,
            path: path.clone(),
        },
        Check::Grpc { port: p, service } => ProbeCheck::Grpc {
            port: port(ctx, p, own.service_port())?,
            service: service.clone(),
        },
        Check::Tcp { port: p } => ProbeCheck::Tcp {
            port: port(ctx, p, own.service_port())?,
        },
        Check::Exec { command } => ProbeCheck::Exec {
            command: command.clone(),
        },
        Check::Notify => ProbeCheck::Notify,
        Check::Registered => ProbeCheck::Registered,
    };
    let t = &d.probe;
    Some(ProbePlan {
        check,
        initial_delay: pr.initial_delay.unwrap_or(t.initial_delay),
        period: pr.period.unwrap_or(t.period),
        timeout: pr.timeout.unwrap_or(t.timeout),
        failure_threshold: pr.failure_threshold.unwrap_or(t.failure_threshold),
        success_threshold: pr.success_threshold.unwrap_or(t.success_threshold),
    })
}

/// A user or group must exist on this host (a number is taken as an id as it is).
fn check_account(ctx: &mut Ctx, name: &At<String>, what: &str) {
    if name.value.parse::<u32>().is_ok() {
        return;
    }
    let found = if what == "user" {
        nix::unistd::User::from_name(&name.value).map(|u| u.is_some())
    } else {
        nix::unistd::Group::from_name(&name.value).map(|g| g.is_some())
    };
    match found {
        Ok(true) => {}
        Ok(false) => ctx.error(
            name.pos,
            format!("`{what}: {}`: no such {what} on this host", name.value),
        ),
        Err(e) => ctx.error(
            name.pos,
            format!("`{what}: {}`: cannot look it up: {e}", name.value),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(text: &str, opts: &ResolveOptions) -> PipelinePlan {
        let p = super::super::parse_str(Path::new("p.yaml"), text).unwrap();
        resolve(&p, opts).unwrap()
    }

    const TWO: &str = "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n  \
        sources:\n    - id: s\n      command: x\n      ports: [{name: grpc}]\n  \
        sinks:\n    - id: k\n      command: x\n      inputs: [s]\n";

    #[test]
    fn a_shard_names_its_output_from_its_range_and_id_and_without_them_the_error_says_what_is_needed(
    ) {
        let text = TWO.replace(
            "inputs: [s]\n",
            "inputs: [s]\n      env: {OUT: 'out-${shard.id}-${range.from}-${range.to}.jsonl'}\n",
        );
        let opts = ResolveOptions {
            range: Some(crate::plan::LedgerRange {
                from: 64,
                to: Some(127),
            }),
            shard_id: Some("1".into()),
            ..Default::default()
        };
        let shard = plan(&text, &opts);
        assert_eq!(shard.components[1].env["OUT"], "out-1-64-127.jsonl");

        let p = super::super::parse_str(Path::new("p.yaml"), &text).unwrap();
        let e = resolve(&p, &ResolveOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`${shard.id}` is set only for a shard"), "{e}");
        let open_ended = ResolveOptions {
            range: Some(crate::plan::LedgerRange { from: 64, to: None }),
            shard_id: Some("1".into()),
            ..Default::default()
        };
        let e = resolve(&p, &open_ended).unwrap_err().to_string();
        assert!(e.contains("`${range.to}` needs a bounded range"), "{e}");
    }

    #[test]
    fn held_ports_make_an_unchanged_file_resolve_to_the_same_plan() {
        let first = plan(TWO, &ResolveOptions::default());
        let opts = ResolveOptions {
            held_ports: HeldPorts::of(std::slice::from_ref(&first)),
            ..Default::default()
        };
        assert_eq!(plan(TWO, &opts), first);
    }

    #[test]
    fn a_held_port_taken_by_a_new_fixed_port_is_allocated_afresh() {
        let first = plan(TWO, &ResolveOptions::default());
        let grpc = first.components[0].ports[0].port;
        let fixed = TWO.replace(
            "command: x\n      inputs",
            &format!("command: x\n      health_port: {grpc}\n      inputs"),
        );
        let opts = ResolveOptions {
            held_ports: HeldPorts::of(std::slice::from_ref(&first)),
            ..Default::default()
        };
        let again = plan(&fixed, &opts);
        assert_eq!(again.components[1].health_port, grpc);
        assert_ne!(again.components[0].ports[0].port, grpc);
    }

    #[test]
    fn ports_held_by_another_pipeline_are_never_handed_out() {
        let other = plan(TWO, &ResolveOptions::default());
        let mut held = other.clone();
        held.name = "other".into();
        let opts = ResolveOptions {
            held_ports: HeldPorts::of(&[held]),
            ..Default::default()
        };
        let mine = plan(TWO, &opts);
        let taken: BTreeSet<u16> = other
            .components
            .iter()
            .flat_map(|c| c.ports.iter().map(|p| p.port).chain([c.health_port]))
            .collect();
        for c in &mine.components {
            assert!(!taken.contains(&c.health_port));
            assert!(c.ports.iter().all(|p| !taken.contains(&p.port)));
        }
    }
}
