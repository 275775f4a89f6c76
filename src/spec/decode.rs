//! From the YAML tree to the typed [`Pipeline`]: the schema of `apiVersion: flowctl/v1`,
//! `kind: Pipeline`. Accepts the fields pipelines written for the Go flowctl use and the
//! supervisor's own; refuses container-only fields with the reason.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::bundled;
use super::model::{
    At, Check, Component, Pipeline, Port, PortRef, Probe, RestartSpec, Secret, StopSpec,
};
use super::node::{Node, Pos, Value};
use super::reader::{scalar_text, suggest, Ctx, Obj};
use super::units;
use crate::plan::{HeartbeatFormat, OnError, Resources, RestartPolicy, Rlimits, Role};

const TOP: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const METADATA: &[&str] = &["name", "namespace", "labels", "annotations", "description"];
const SPEC: &[&str] = &[
    "description",
    "driver",
    "sources",
    "processors",
    "sinks",
    "config",
    "pipelines",
    "range",
    "retry_policy",
    // The Go ecosystem's proposal.
    "retryPolicy",
];
const RANGE: &[&str] = &[
    "from_ledger",
    "to_ledger",
    "stalled_after",
    "chunk_size",
    "max_workers",
    // The Go ecosystem's proposal.
    "start",
    "end",
    "chunkSize",
    "maxWorkers",
];
/// The Go ecosystem's proposal's names for what `spec.range` says, and ours.
const RANGE_ALIASES: &[(&str, &str)] = &[
    ("start", "from_ledger"),
    ("end", "to_ledger"),
    ("chunkSize", "chunk_size"),
    ("maxWorkers", "max_workers"),
];
const COMPONENT: &[&str] = &[
    // The Go flowctl's fields.
    "id",
    "type",
    "image",
    "command",
    "args",
    "env",
    "config",
    "inputs",
    "depends_on",
    "input_event_types",
    "output_event_types",
    "ports",
    "health_check",
    "health_port",
    "restart_policy",
    "resources",
    "replicas",
    "secrets",
    "volumes",
    // The supervisor's.
    "working_dir",
    "user",
    "group",
    "inherit_env",
    "rlimits",
    "restart",
    "readiness",
    "liveness",
    "stop",
    "watchdog",
    "on_error",
    "heartbeat_interval_format",
    "start_timeout",
    "retry_policy",
    // The Go ecosystem's proposal.
    "retryPolicy",
];
const PORT: &[&str] = &["name", "containerPort", "hostPort", "protocol"];
const RESOURCES: &[&str] = &["requests", "limits"];
const RESOURCE_LIST: &[&str] = &["cpu", "memory", "pids"];
const RLIMITS: &[&str] = &["nofile", "core", "nproc"];
const SECRET: &[&str] = &[
    "name",
    "host_path",
    "env",
    "required",
    "type",
    "labels",
    "container_path",
    "mode",
];
const RESTART: &[&str] = &[
    "policy",
    "initial_delay",
    "multiplier",
    "max_delay",
    "jitter",
    "reset_after",
    "start_limit_burst",
    "start_limit_interval",
    "with_dependencies",
];
const RETRY_POLICY: &[&str] = &[
    "max_attempts",
    "initial_delay",
    "max_delay",
    "multiplier",
    // The Go ecosystem's proposal.
    "maxAttempts",
    "initialDelay",
    "initialBackoff",
    "maxDelay",
    "maxBackoff",
    "backoffMultiplier",
];
/// Each field of a retry policy: ours, then the proposal's spellings of it.
const RETRY_ALIASES: &[(&str, &[&str])] = &[
    ("max_attempts", &["maxAttempts"]),
    ("initial_delay", &["initialDelay", "initialBackoff"]),
    ("max_delay", &["maxDelay", "maxBackoff"]),
    ("multiplier", &["backoffMultiplier"]),
];
const PROBE_CHECKS: &[&str] = &["http", "grpc", "tcp", "exec", "notify", "registered"];
const PROBE: &[&str] = &[
    "http",
    "grpc",
    "tcp",
    "exec",
    "notify",
    "registered",
    "initial_delay",
    "period",
    "timeout",
    "failure_threshold",
    "success_threshold",
];
const STOP: &[&str] = &["signal", "timeout"];

const DRIVERS: &[&str] = &["process", "local", "dag"];
const CONTAINER_DRIVERS: &[&str] = &["docker", "container", "kubernetes", "k8s", "nomad"];
const RESTART_POLICIES: &[&str] = &["no", "always", "on-failure", "unless-stopped"];
const ON_ERROR: &[&str] = &["fail", "dead-letter"];
const HEARTBEAT_FORMATS: &[&str] = &["go", "millis"];

pub const API_VERSION: &str = "flowctl/v1";

/// The node of field `ours` of `o`, or of one of `theirs` (other tools' names for it, read
/// with a notice saying what they are read as); the field's full name comes with it. Two
/// names of one field at once are an error.
fn aliased<'n>(
    ctx: &mut Ctx,
    o: &Obj<'n>,
    section: &str,
    ours: &str,
    theirs: &[&str],
) -> Option<(&'n Node, String)> {
    let written: Vec<&str> = std::iter::once(ours)
        .chain(theirs.iter().copied())
        .filter(|k| o.has(k))
        .collect();
    let full = |key: &str| match section {
        "" => key.to_string(),
        _ => format!("{section}.{key}"),
    };
    let (&first, rest) = written.split_first()?;
    if let Some(&second) = rest.first() {
        let pos = o.key_pos(second).unwrap_or(o.pos);
        ctx.error(
            pos,
            format!(
                "`{}` and `{}` both set `{}`: keep one",
                full(first),
                full(second),
                full(ours)
            ),
        );
        return None;
    }
    if first != ours {
        let pos = o.key_pos(first).unwrap_or(o.pos);
        ctx.notice(
            pos,
            format!(
                "`{}` (the Go ecosystem's name) is read as `{}`",
                full(first),
                full(ours)
            ),
        );
    }
    Some((o.get(first)?, full(first)))
}

fn range_field<'n>(ctx: &mut Ctx, o: &Obj<'n>, ours: &str) -> Option<(&'n Node, String)> {
    let theirs: Vec<&str> = RANGE_ALIASES
        .iter()
        .filter(|(_, o)| *o == ours)
        .map(|(t, _)| *t)
        .collect();
    aliased(ctx, o, "spec.range", ours, &theirs)
}

/// `spec.range: {from_ledger: A, to_ledger: B}`; without `to_ledger` the run follows the tip.
/// `stalled_after`, `chunk_size` and `max_workers` go into `p`. The Go ecosystem's proposal's
/// `{start, end, chunkSize, maxWorkers}` are read as ours.
fn range(ctx: &mut Ctx, n: &Node, p: &mut Pipeline) -> Option<crate::plan::LedgerRange> {
    let o = ctx.object(n, "spec.range", RANGE)?;
    if let Some(after) = o.get("stalled_after") {
        p.stalled_after = ctx.duration(after, "spec.range.stalled_after");
    }
    if let Some((n, field)) = range_field(ctx, &o, "chunk_size") {
        p.chunking.chunk_size = ctx.count(n, &field, 1);
    }
    if let Some((n, field)) = range_field(ctx, &o, "max_workers") {
        p.chunking.max_workers = ctx.count(n, &field, 1);
    }
    let to_field = range_field(ctx, &o, "to_ledger");
    let Some((from_node, from_field)) = range_field(ctx, &o, "from_ledger") else {
        if !o.has("from_ledger") && !o.has("start") {
            ctx.error(
                o.pos,
                "`spec.range` needs `from_ledger`, the first ledger of the run",
            );
        }
        return None;
    };
    let from = ctx.int(from_node, &from_field, 1, u32::MAX.into())? as u32;
    let to = match to_field {
        None => None,
        Some((to_node, to_field)) => {
            let to = ctx.int(to_node, &to_field, 1, u32::MAX.into())? as u32;
            if to < from {
                ctx.error(
                    to_node.pos,
                    format!(
                        "`{to_field}` ({to}) is before `{}` ({from})",
                        from_field.trim_start_matches("spec.range.")
                    ),
                );
                return None;
            }
            Some(to)
        }
    };
    Some(crate::plan::LedgerRange { from, to })
}

/// `retry_policy` (or the Go ecosystem's `retryPolicy`): `{max_attempts, initial_delay,
/// max_delay, multiplier}` in the proposal's spellings too. It is a restart policy of
/// `on-failure` whose `max_attempts` starts are all a run gives a component.
fn retry_policy(ctx: &mut Ctx, n: &Node, field: &str) -> Option<(RestartSpec, Option<u32>)> {
    let o = ctx.object(n, field, RETRY_POLICY)?;
    let mut r = RestartSpec {
        policy: Some(RestartPolicy::OnFailure),
        ..Default::default()
    };
    let mut max_attempts = None;
    for (ours, theirs) in RETRY_ALIASES {
        let Some((n, name)) = aliased(ctx, &o, field, ours, theirs) else {
            continue;
        };
        match *ours {
            "max_attempts" => {
                max_attempts = ctx.count(n, &name, 1);
                r.start_limit_burst = max_attempts;
                // Attempts of the whole run, not of a window.
                r.start_limit_interval = Some(units::MAX_DURATION);
            }
            "initial_delay" => r.initial_delay = ctx.duration(n, &name),
            "max_delay" => r.max_delay = ctx.duration(n, &name),
            _ => {
                r.multiplier = ctx.float(n, &name);
                if r.multiplier.is_some_and(|m| m < 1.0) {
                    ctx.error(
                        n.pos,
                        format!("`{name}` must be at least 1 (1 keeps the delay constant)"),
                    );
                }
            }
        }
    }
    if let (Some(a), Some(b)) = (r.initial_delay, r.max_delay) {
        if b < a {
            ctx.error(
                o.pos,
                format!("`{field}`: its maximum delay is shorter than its initial delay"),
            );
        }
    }
    Some((r, max_attempts))
}

/// The variables a source or sink reads its range from, as the seeds' components do.
pub const START_LEDGER: &str = "START_LEDGER";
pub const END_LEDGER: &str = "END_LEDGER";

/// A source's or sink's own `START_LEDGER`/`END_LEDGER` wins over `spec.range`; say so where
/// it says something else.
fn contradicted_ranges(ctx: &mut Ctx, p: &Pipeline) {
    let Some(range) = p.range else { return };
    for c in p.components.iter().filter(|c| c.role != Role::Processor) {
        for (var, wanted, field) in [
            (START_LEDGER, Some(range.from), "from_ledger"),
            (END_LEDGER, range.to, "to_ledger"),
        ] {
            let Some(own) = c.env.get(var) else { continue };
            let differs = match wanted {
                Some(w) => own.value.trim() != w.to_string(),
                None => true,
            };
            if differs {
                let range_says = wanted.map_or("to follow the tip".to_string(), |w| w.to_string());
                ctx.notice(
                    own.pos,
                    format!(
                        "`{}` sets {var}={} but `spec.range.{field}` says {range_says}; the \
                         component's own value is used",
                        c.id, own.value
                    ),
                );
            }
        }
    }
}

/// Reads the whole document; every problem goes to `ctx`. Returns what could be read, which
/// is only meaningful when `ctx` holds no error.
pub fn pipeline(ctx: &mut Ctx, root: &Node, text: &str) -> Pipeline {
    let file = ctx.file.to_path_buf();
    let mut p = Pipeline {
        file: file.clone(),
        text: text.to_string(),
        name: String::new(),
        namespace: None,
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        description: None,
        driver: None,
        components: Vec::new(),
        range: None,
        stalled_after: None,
        chunking: Default::default(),
        retry_policy: None,
        notices: Default::default(),
    };
    if root.value == Value::Null {
        ctx.error(
            root.pos,
            format!("the file is empty: a pipeline starts with `apiVersion: {API_VERSION}` and `kind: Pipeline`"),
        );
        return p;
    }
    let Some(top) = ctx.object(root, "the pipeline file", TOP) else {
        return p;
    };

    match top.get("apiVersion") {
        None => ctx.error(top.pos, format!("missing `apiVersion: {API_VERSION}`")),
        Some(n) => {
            if let Some(v) = ctx.string(n, "apiVersion") {
                if v != API_VERSION {
                    ctx.error(
                        n.pos,
                        format!(
                            "`apiVersion: {v}` is not supported: write `apiVersion: {API_VERSION}`"
                        ),
                    );
                }
            }
        }
    }
    match top.get("kind") {
        None => ctx.error(top.pos, "missing `kind: Pipeline`"),
        Some(n) => {
            if let Some(v) = ctx.string(n, "kind") {
                if v != "Pipeline" {
                    ctx.error(
                        n.pos,
                        format!(
                            "`kind: {v}` is not supported: a pipeline file has `kind: Pipeline`"
                        ),
                    );
                }
            }
        }
    }

    let mut meta_description = None;
    match top.get("metadata") {
        None => ctx.error(top.pos, "missing `metadata` with the pipeline's `name`"),
        Some(n) => {
            if let Some(m) = ctx.object(n, "metadata", METADATA) {
                match m.get("name") {
                    None => ctx.error(m.pos, "missing `metadata.name`"),
                    Some(n) => {
                        if let Some(name) = ctx.nonempty(n, "metadata.name") {
                            if !is_name(&name, true) {
                                ctx.error(
                                    n.pos,
                                    format!(
                                        "pipeline name `{name}` may only contain letters, digits, `-`, `_` and `.`, \
                                         starting with a letter or digit (it names files and units)"
                                    ),
                                );
                            }
                            p.name = name;
                        }
                    }
                }
                if let Some(n) = m.get("namespace") {
                    p.namespace = ctx.string(n, "metadata.namespace");
                }
                if let Some(n) = m.get("labels") {
                    p.labels = plain_map(ctx.string_map(n, "metadata.labels"));
                }
                if let Some(n) = m.get("annotations") {
                    p.annotations = plain_map(ctx.string_map(n, "metadata.annotations"));
                }
                if let Some(n) = m.get("description") {
                    meta_description = ctx.string(n, "metadata.description");
                }
            }
        }
    }

    let Some(spec_node) = top.get("spec") else {
        ctx.error(
            top.pos,
            "missing `spec` with the pipeline's sources, processors and sinks",
        );
        return p;
    };
    let Some(spec) = ctx.object(spec_node, "spec", SPEC) else {
        return p;
    };
    p.description = spec
        .get("description")
        .and_then(|n| ctx.string(n, "spec.description"))
        .or(meta_description);
    if let Some(n) = spec.get("driver") {
        p.driver = driver(ctx, n);
    }
    if let Some(n) = spec.get("range") {
        p.range = range(ctx, n, &mut p);
    }
    if let Some((n, field)) = aliased(ctx, &spec, "spec", "retry_policy", &["retryPolicy"]) {
        if let Some((r, max_attempts)) = retry_policy(ctx, n, &field) {
            p.retry_policy = Some(r);
            p.chunking.max_attempts = max_attempts;
        }
    }
    if let Some(pos) = spec.key_pos("pipelines") {
        ctx.error(
            pos,
            "`spec.pipelines` runs whole pipelines as container images; flowctl runs processes: \
             write each pipeline in its own file (they run side by side under flowctl-sup)",
        );
    }
    let shared_config = spec
        .get("config")
        .map(|n| config_env(ctx, n, "spec.config"))
        .unwrap_or_default();

    for (key, role) in [
        ("sources", Role::Source),
        ("processors", Role::Processor),
        ("sinks", Role::Sink),
    ] {
        if let Some(list) = spec.get(key) {
            for item in ctx.list(list, key) {
                if let Some(c) = component(ctx, item, role, &shared_config) {
                    p.components.push(c);
                }
            }
        }
    }
    if p.components.is_empty() && !ctx.diags.has_errors() {
        ctx.error(
            spec.pos,
            "the pipeline has no components: add `sources`, `processors` or `sinks`",
        );
    }
    contradicted_ranges(ctx, &p);
    p
}

fn plain_map(entries: Vec<(At<String>, At<String>)>) -> BTreeMap<String, String> {
    entries
        .into_iter()
        .map(|(k, v)| (k.value, v.value))
        .collect()
}

/// Ids and names end up in `${ID.address}`, unit names and file names.
fn is_name(s: &str, allow_dot: bool) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || (allow_dot && c == '.'))
}

fn driver(ctx: &mut Ctx, n: &Node) -> Option<String> {
    let d = ctx.string(n, "spec.driver")?;
    let lower = d.to_ascii_lowercase();
    if DRIVERS.contains(&lower.as_str()) {
        return Some(lower);
    }
    if CONTAINER_DRIVERS.contains(&lower.as_str()) {
        ctx.error(
            n.pos,
            format!(
                "`driver: {d}`: flowctl runs processes, not containers. Remove `driver` (or write \
                 `driver: process`) and give each component the program to run, e.g. \
                 `command: [\"/usr/local/bin/my-processor\", \"--flag\"]`; bundled components \
                 ({}) need no command",
                bundled::commands()
            ),
        );
        return None;
    }
    let hint = suggest(&d, DRIVERS)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    ctx.error(
        n.pos,
        format!("unknown driver `{d}` (known: {}){hint}", DRIVERS.join(", ")),
    );
    None
}

fn component(
    ctx: &mut Ctx,
    node: &Node,
    role: Role,
    shared_config: &[(String, At<String>)],
) -> Option<Component> {
    let what = match role {
        Role::Source => "source",
        Role::Processor => "processor",
        Role::Sink => "sink",
    };
    // Name the component in messages about its keys when its id can be read.
    let peeked = match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| scalar_text(k).as_deref() == Some("id"))
            .and_then(|(_, v)| scalar_text(v)),
        _ => None,
    };
    let label = match &peeked {
        Some(id) => format!("{what} `{id}`"),
        None => what.to_string(),
    };
    let o = ctx.object(node, &label, COMPONENT)?;
    let Some(id_node) = o.get("id") else {
        ctx.error(o.pos, format!("{what} is missing `id`"));
        return None;
    };
    let id = ctx.nonempty(id_node, "id")?;
    if !is_name(&id, false) {
        ctx.error(
            id_node.pos,
            format!(
                "component id `{id}` may only contain letters, digits, `-` and `_`, starting with a \
                 letter or digit (it is used in `${{{id}.address}}` references)"
            ),
        );
    }
    let what = label;

    let mut c = Component {
        id: id.clone(),
        pos: id_node.pos,
        role,
        kind: o.get("type").and_then(|n| ctx.string(n, "type")),
        command: At::new(String::new(), o.pos),
        args: Vec::new(),
        env: BTreeMap::new(),
        secrets: Vec::new(),
        inputs: o
            .get("inputs")
            .map(|n| ctx.string_list(n, "inputs"))
            .unwrap_or_default(),
        depends_on: o
            .get("depends_on")
            .map(|n| ctx.string_list(n, "depends_on"))
            .unwrap_or_default(),
        input_event_types: strings(ctx, &o, "input_event_types"),
        output_event_types: strings(ctx, &o, "output_event_types"),
        ports: Vec::new(),
        health_port: None,
        readiness: None,
        liveness: None,
        restart: RestartSpec::default(),
        stop: StopSpec::default(),
        watchdog: None,
        resources: Resources::default(),
        rlimits: Rlimits::default(),
        working_dir: None,
        user: None,
        group: None,
        inherit_env: None,
        on_error: None,
        heartbeat_interval_format: None,
        start_timeout: None,
    };

    let (argv, implied_env) = program(ctx, &o, &c, &what);
    let mut argv = argv.into_iter();
    if let Some(program) = argv.next() {
        c.command = program;
    }
    c.args = argv.collect();
    if let Some(n) = o.get("args") {
        c.args.extend(ctx.string_list(n, "args"));
    }
    environment(ctx, &o, &mut c, implied_env, shared_config);

    if let Some(n) = o.get("ports") {
        c.ports = ports(ctx, n);
    }
    if c.ports.is_empty() && role != Role::Sink {
        // Sources and processors serve the stream their readers pull: give them a port.
        c.ports.push(Port {
            name: "grpc".into(),
            port: None,
            protocol: "tcp".into(),
            pos: c.pos,
        });
    }
    if let Some(n) = o.get("health_port") {
        c.health_port = ctx
            .int(n, "health_port", 0, 65535)
            .filter(|p| *p != 0)
            .map(|p| At::new(p as u16, n.pos));
    }

    // Restart: the Go flowctl's `restart_policy` or our `restart`.
    if let Some(n) = o.get("restart_policy") {
        c.restart.policy = restart_policy(ctx, n, "restart_policy");
    }
    if let Some(n) = o.get("restart") {
        restart(ctx, n, &mut c.restart, o.has("restart_policy"));
    }
    if let Some((n, field)) = aliased(ctx, &o, "", "retry_policy", &["retryPolicy"]) {
        for other in ["restart", "restart_policy"] {
            if let Some(pos) = o.key_pos(other) {
                ctx.error(
                    pos,
                    format!(
                        "`{other}` and `{field}` both say how `{}` is restarted: keep one",
                        c.id
                    ),
                );
            }
        }
        if let Some((r, _)) = retry_policy(ctx, n, &field) {
            c.restart = r;
        }
    }

    if let Some(n) = o.get("readiness") {
        c.readiness = probe(ctx, n, "readiness");
    }
    if let Some(n) = o.get("liveness") {
        c.liveness = probe(ctx, n, "liveness");
    }
    if let Some(n) = o.get("health_check") {
        if let Some(hc) = ctx.string(n, "health_check") {
            legacy_health_check(ctx, n, &hc, &mut c);
        }
    } else if c.readiness.is_none() {
        if let Some(hp) = &c.health_port {
            // The Go flowctl's `health_port` alone: its components serve `/health` there.
            c.readiness = Some(http_probe(None, "/health".into(), hp.pos));
        } else if bundled::is_command(&c.command.value) {
            // Bundled components serve `/health` on HEALTH_PORT.
            c.readiness = Some(http_probe(None, "/health".into(), c.command.pos));
        }
    }

    if let Some(n) = o.get("stop") {
        c.stop = stop(ctx, n);
    }
    if let Some(n) = o.get("watchdog") {
        c.watchdog = ctx.duration(n, "watchdog");
        if c.watchdog.is_some_and(|d| d.is_zero()) {
            ctx.error(
                n.pos,
                "`watchdog` must be longer than zero (or leave it out)",
            );
        }
    }
    if let Some(n) = o.get("resources") {
        c.resources = resources(ctx, n);
    }
    if let Some(n) = o.get("rlimits") {
        c.rlimits = rlimits(ctx, n);
    }
    if let Some(n) = o.get("working_dir") {
        if let Some(dir) = ctx.nonempty(n, "working_dir") {
            c.working_dir = Some(At::new(relative_to_file(ctx.file, &dir), n.pos));
        }
    }
    if let Some(n) = o.get("user") {
        c.user = ctx.nonempty(n, "user").map(|s| At::new(s, n.pos));
    }
    if let Some(n) = o.get("group") {
        c.group = ctx.nonempty(n, "group").map(|s| At::new(s, n.pos));
    }
    if let Some(n) = o.get("inherit_env") {
        c.inherit_env = ctx.bool(n, "inherit_env");
    }
    if let Some(n) = o.get("on_error") {
        c.on_error = on_error(ctx, n);
    }
    if let Some(n) = o.get("start_timeout") {
        c.start_timeout = ctx.duration(n, "start_timeout");
    }
    if let Some(n) = o.get("heartbeat_interval_format") {
        c.heartbeat_interval_format = heartbeat_format(ctx, n);
    }
    if let Some(n) = o.get("replicas") {
        if let Some(r) = ctx.int(n, "replicas", i128::MIN, i128::MAX) {
            if r != 1 {
                ctx.error(
                    n.pos,
                    format!(
                        "`replicas: {r}`: flowctl runs one process per component. Leave \
                         `replicas` out, or split the work by ledger range into several \
                         pipelines or components with distinct ids"
                    ),
                );
            }
        }
    }
    if let Some(pos) = o.key_pos("volumes") {
        ctx.error(
            pos,
            "`volumes` mount host paths into a container; flowctl runs processes, which see the \
             host's files directly: remove `volumes` and pass the paths in `env` or `args`",
        );
    }
    Some(c)
}

/// The program: `command`, else the bundled component an `image` or a registry `type` names.
/// Returns argv and the variables the image implies.
fn program(
    ctx: &mut Ctx,
    o: &Obj,
    c: &Component,
    what: &str,
) -> (Vec<At<String>>, &'static [(&'static str, &'static str)]) {
    let id = &c.id;
    let mut argv: Vec<At<String>> = match o.get("command") {
        None => Vec::new(),
        Some(n) => match &n.value {
            Value::Seq(_) => ctx.string_list(n, "command"),
            _ => ctx.string_at(n, "command").into_iter().collect(),
        },
    };
    let image = o.get("image").and_then(|n| ctx.string_at(n, "image"));
    let mut implied_env: &'static [(&'static str, &'static str)] = &[];
    if let Some(cmd_node) = o.get("command") {
        if argv.is_empty() || argv[0].value.trim().is_empty() {
            ctx.error(cmd_node.pos, "`command` must name a program");
        }
        if let Some(image) = &image {
            ctx.notice(
                image.pos,
                format!(
                    "`image: {}` is ignored: flowctl runs `command` as a process",
                    image.value
                ),
            );
        }
    } else if let Some(image) = &image {
        match bundled::from_image(&image.value) {
            Some(b) => {
                argv.push(At::new(b.command.to_string(), image.pos));
                implied_env = b.env;
                ctx.notice(
                    image.pos,
                    bundled_notice(&format!("image `{}`", image.value), b),
                );
            }
            None => ctx.error(
                image.pos,
                format!(
                    "`image: {}`: flowctl runs processes, not containers. Install the program on \
                     this host and write `command: [\"/path/to/program\", \"--flag\"]` instead \
                     (bundled components need no command: {})",
                    image.value,
                    bundled::commands()
                ),
            ),
        }
    } else if let Some(res) = c.kind.as_deref().and_then(bundled::from_type) {
        let kind = c.kind.clone().unwrap_or_default();
        let pos = o.get("type").map_or(o.pos, |n| n.pos);
        match res {
            Ok(b) => {
                argv.push(At::new(b.command.to_string(), pos));
                implied_env = b.env;
                ctx.notice(pos, bundled_notice(&format!("`type: {kind}`"), b));
            }
            Err(name) => ctx.error(
                pos,
                format!(
                    "`type: {kind}`: `{name}` is not bundled with flowctl and flowctl does not \
                     fetch components; install it on this host and write \
                     `command: [\"/path/to/{name}\"]` (bundled: {})",
                    bundled::commands()
                ),
            ),
        }
    } else {
        ctx.error(
            c.pos,
            format!(
                "{what} has no `command`: write the program to run, e.g. \
                 `command: [\"/usr/local/bin/{id}\"]` (or name a bundled component: {})",
                bundled::commands()
            ),
        );
    }
    (argv, implied_env)
}

/// Variables before expansion: what the image implied, then `config` (the pipeline's, then
/// the component's), then `env` on top; and the secrets, which may not repeat an `env` name.
fn environment(
    ctx: &mut Ctx,
    o: &Obj,
    c: &mut Component,
    implied_env: &[(&str, &str)],
    shared_config: &[(String, At<String>)],
) {
    for (k, v) in implied_env {
        c.env
            .insert(k.to_string(), At::new(v.to_string(), c.command.pos));
    }
    for (k, v) in shared_config {
        c.env.insert(k.clone(), v.clone());
    }
    if let Some(n) = o.get("config") {
        for (k, v) in config_env(ctx, n, "config") {
            c.env.insert(k, v);
        }
    }
    let mut explicit = BTreeMap::new();
    if let Some(n) = o.get("env") {
        for (k, v) in ctx.string_map(n, "env") {
            if let Err(msg) = check_env_name(&k.value) {
                ctx.error(k.pos, msg);
                continue;
            }
            explicit.insert(k.value.clone(), k.pos);
            c.env.insert(k.value, v);
        }
    }
    if let Some(n) = o.get("secrets") {
        c.secrets = secrets(ctx, n);
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for s in &c.secrets {
            if explicit.contains_key(&s.env) {
                ctx.error(
                    s.pos,
                    format!(
                        "`{}` is set both in `env` and by secret `{}`: keep one",
                        s.env, s.name
                    ),
                );
            }
            if let Some(other) = seen.insert(&s.env, &s.name) {
                ctx.error(
                    s.pos,
                    format!("secrets `{other}` and `{}` both set `{}`", s.name, s.env),
                );
            }
        }
    }
}

fn bundled_notice(named_by: &str, b: bundled::Bundled) -> String {
    let env: Vec<String> = b.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let with = if env.is_empty() {
        String::new()
    } else {
        format!(" with {} (unless `env` sets it)", env.join(" "))
    };
    format!(
        "{named_by} runs the bundled `{}`{with}: flowctl runs processes, not containers",
        b.command
    )
}

fn strings(ctx: &mut Ctx, o: &Obj, key: &str) -> Vec<String> {
    o.get(key)
        .map(|n| ctx.string_list(n, key))
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.value)
        .collect()
}

pub fn check_env_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('=') || name.contains('\0') {
        Err(format!(
            "`{name}` is not a valid environment variable name (empty, or contains `=`)"
        ))
    } else {
        Ok(())
    }
}

/// `config:` keys become variables in upper case (`network_passphrase` →
/// `NETWORK_PASSPHRASE`), as the Go flowctl passes config to registry components. Characters
/// other than letters, digits and `_` become `_`; lists and mappings are passed as JSON.
fn config_env(ctx: &mut Ctx, node: &Node, field: &str) -> Vec<(String, At<String>)> {
    let entries = match &node.value {
        Value::Null => return Vec::new(),
        Value::Map(entries) => entries,
        other => {
            ctx.error(
                node.pos,
                format!("`{field}` must be a mapping, found {}", other.kind()),
            );
            return Vec::new();
        }
    };
    let mut out: Vec<(String, At<String>)> = Vec::new();
    let mut taken: HashSet<String> = HashSet::with_capacity(entries.len());
    for (k, v) in entries {
        let Some(key) = ctx.string(k, &format!("key of {field}")) else {
            continue;
        };
        let name: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        if name.is_empty() {
            ctx.error(k.pos, format!("empty key in `{field}`"));
            continue;
        }
        if !taken.insert(name.clone()) {
            ctx.error(
                k.pos,
                format!("`{field}.{key}` gives `{name}` a second time"),
            );
            continue;
        }
        let value = match &v.value {
            Value::Null => String::new(),
            Value::Seq(_) | Value::Map(_) => to_json(v).to_string(),
            _ => scalar_text(v).unwrap_or_default(),
        };
        out.push((name, At::new(value, v.pos)));
    }
    out
}

fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(n) => i64::try_from(*n)
            .map(J::from)
            .unwrap_or_else(|_| J::String(n.to_string())),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::Str(s) => J::String(s.clone()),
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (scalar_text(k).unwrap_or_default(), to_json(v)))
                .collect(),
        ),
    }
}

fn relative_to_file(file: &Path, path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        return p;
    }
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
        _ => p,
    }
}

fn secrets(ctx: &mut Ctx, node: &Node) -> Vec<Secret> {
    let mut out = Vec::new();
    for item in ctx.list(node, "secrets") {
        let Some(o) = ctx.object(item, "secret", SECRET) else {
            continue;
        };
        if let Some(pos) = o.key_pos("container_path") {
            ctx.error(
                pos,
                "`container_path` mounts the secret into a container; flowctl runs processes: \
                 set `env` to pass the file's content, or give the program `host_path` itself",
            );
        }
        if let Some(pos) = o.key_pos("mode") {
            ctx.error(
                pos,
                "`mode` is a container mount option; the file's own mode applies (it must not \
                 be readable by everyone)",
            );
        }
        if let Some(n) = o.get("type") {
            ctx.string(n, "type");
        }
        if let Some(n) = o.get("labels") {
            ctx.string_map(n, "labels");
        }
        let name = match o.get("name") {
            Some(n) => ctx.nonempty(n, "name"),
            None => {
                ctx.error(o.pos, "secret is missing `name`");
                None
            }
        };
        let host_path = match o.get("host_path") {
            Some(n) => ctx
                .nonempty(n, "host_path")
                .map(|p| At::new(relative_to_file(ctx.file, &p), n.pos)),
            None => {
                ctx.error(o.pos, "secret is missing `host_path` (the file holding it)");
                None
            }
        };
        let env = match o.get("env") {
            Some(n) => ctx.nonempty(n, "env").filter(|e| match check_env_name(e) {
                Ok(()) => true,
                Err(msg) => {
                    ctx.error(n.pos, msg);
                    false
                }
            }),
            None => {
                ctx.error(
                    o.pos,
                    "secret is missing `env`: the variable that receives the file's content",
                );
                None
            }
        };
        let required = o
            .get("required")
            .and_then(|n| ctx.bool(n, "required"))
            .unwrap_or(true);
        if let (Some(name), Some(host_path), Some(env)) = (name, host_path, env) {
            out.push(Secret {
                name,
                host_path,
                env,
                required,
                pos: o.pos,
            });
        }
    }
    out
}

fn ports(ctx: &mut Ctx, node: &Node) -> Vec<Port> {
    let mut out: Vec<(Option<String>, Port)> = Vec::new();
    for (i, item) in ctx.list(node, "ports").iter().enumerate() {
        let Some(o) = ctx.object(item, "port", PORT) else {
            continue;
        };
        let name = o.get("name").and_then(|n| {
            let s = ctx.nonempty(n, "name")?;
            if !is_name(&s, false) {
                ctx.error(
                    n.pos,
                    format!("port name `{s}` may only contain letters, digits, `-` and `_`"),
                );
                return None;
            }
            Some(s)
        });
        let host = o
            .get("hostPort")
            .and_then(|n| ctx.int(n, "hostPort", 0, 65535))
            .map(|p| p as u16);
        let container = o
            .get("containerPort")
            .and_then(|n| ctx.int(n, "containerPort", 0, 65535))
            .map(|p| p as u16);
        let protocol = match o.get("protocol") {
            None => "tcp".to_string(),
            Some(n) => match ctx.string(n, "protocol").map(|s| s.to_ascii_lowercase()) {
                Some(p) if p == "tcp" || p == "udp" => p,
                Some(p) => {
                    ctx.error(n.pos, format!("`protocol: {p}`: write `tcp` or `udp`"));
                    "tcp".into()
                }
                None => "tcp".into(),
            },
        };
        let label = name.clone().unwrap_or_else(|| format!("#{}", i + 1));
        match (host.filter(|p| *p != 0), container.filter(|p| *p != 0)) {
            (None, Some(cp)) => ctx.notice(
                o.key_pos("containerPort").unwrap_or(o.pos),
                format!(
                    "port {label}: no `hostPort`, so a free port is allocated; `containerPort: {cp}` \
                     has no meaning for a process (pass the port with `${{ports.NAME}}`)"
                ),
            ),
            (Some(hp), Some(cp)) if hp != cp => ctx.notice(
                o.key_pos("containerPort").unwrap_or(o.pos),
                format!(
                    "port {label}: a process has one port number; it is `hostPort: {hp}` \
                     (`containerPort: {cp}` is ignored)"
                ),
            ),
            _ => {}
        }
        out.push((
            name,
            Port {
                name: String::new(),
                port: host.filter(|p| *p != 0),
                protocol,
                pos: o.pos,
            },
        ));
    }
    // Unnamed ports: the first is the service port `grpc` unless one has that name already.
    let mut grpc_taken = out.iter().any(|(n, _)| n.as_deref() == Some("grpc"));
    let mut ports = Vec::new();
    for (i, (name, mut port)) in out.into_iter().enumerate() {
        port.name = match name {
            Some(n) => n,
            None if !grpc_taken => {
                grpc_taken = true;
                "grpc".into()
            }
            None => format!("port{}", i + 1),
        };
        if let Some(first) = ports.iter().find(|p: &&Port| p.name == port.name) {
            ctx.error(
                port.pos,
                format!(
                    "port name `{}` is used twice (first at {})",
                    port.name, first.pos
                ),
            );
            continue;
        }
        ports.push(port);
    }
    ports
}

fn on_error(ctx: &mut Ctx, n: &Node) -> Option<OnError> {
    let s = ctx.string(n, "on_error")?;
    match s.as_str() {
        "fail" => Some(OnError::Fail),
        "dead-letter" => Some(OnError::DeadLetter),
        _ => {
            let hint = suggest(&s, ON_ERROR)
                .map(|h| format!("; did you mean `{h}`?"))
                .unwrap_or_default();
            ctx.error(
                n.pos,
                format!(
                    "`on_error: {s}` is not known (known: {}){hint}",
                    ON_ERROR.join(", ")
                ),
            );
            None
        }
    }
}

fn heartbeat_format(ctx: &mut Ctx, n: &Node) -> Option<HeartbeatFormat> {
    let s = ctx.string(n, "heartbeat_interval_format")?;
    match s.as_str() {
        "go" => Some(HeartbeatFormat::Go),
        "millis" => Some(HeartbeatFormat::Millis),
        _ => {
            let hint = suggest(&s, HEARTBEAT_FORMATS)
                .map(|h| format!("; did you mean `{h}`?"))
                .unwrap_or_default();
            ctx.error(
                n.pos,
                format!(
                    "`heartbeat_interval_format: {s}` is not known (known: `go` for a Go \
                     duration such as `10s`, `millis` for milliseconds such as `10000`){hint}"
                ),
            );
            None
        }
    }
}

fn restart_policy(ctx: &mut Ctx, n: &Node, field: &str) -> Option<RestartPolicy> {
    let s = ctx.string(n, field)?;
    match s.as_str() {
        // YAML 1.1 reads a bare `no` as false; its text is still `no`.
        "no" => Some(RestartPolicy::Never),
        "always" | "unless-stopped" => Some(RestartPolicy::Always),
        "on-failure" => Some(RestartPolicy::OnFailure),
        _ => {
            let hint = suggest(&s, RESTART_POLICIES)
                .map(|h| format!("; did you mean `{h}`?"))
                .unwrap_or_default();
            ctx.error(
                n.pos,
                format!(
                    "`{field}: {s}` is not a restart policy (known: {}){hint}",
                    RESTART_POLICIES.join(", ")
                ),
            );
            None
        }
    }
}

fn restart(ctx: &mut Ctx, n: &Node, r: &mut RestartSpec, has_legacy: bool) {
    let conflict = |ctx: &mut Ctx, pos: Pos| {
        ctx.error(
            pos,
            "the restart policy is set twice: keep `restart_policy` or `restart.policy`, not both",
        )
    };
    if !matches!(n.value, Value::Map(_) | Value::Null) {
        // `restart: on-failure` shorthand.
        if has_legacy {
            conflict(ctx, n.pos);
        }
        r.policy = restart_policy(ctx, n, "restart");
        return;
    }
    let Some(o) = ctx.object(n, "restart", RESTART) else {
        return;
    };
    if let Some(p) = o.get("policy") {
        if has_legacy {
            conflict(ctx, p.pos);
        }
        r.policy = restart_policy(ctx, p, "restart.policy");
    }
    r.initial_delay = o
        .get("initial_delay")
        .and_then(|n| ctx.duration(n, "restart.initial_delay"));
    r.max_delay = o
        .get("max_delay")
        .and_then(|n| ctx.duration(n, "restart.max_delay"));
    r.reset_after = o
        .get("reset_after")
        .and_then(|n| ctx.duration(n, "restart.reset_after"));
    r.start_limit_interval = o
        .get("start_limit_interval")
        .and_then(|n| ctx.duration(n, "restart.start_limit_interval"));
    if let Some(n) = o.get("multiplier") {
        r.multiplier = ctx.float(n, "restart.multiplier");
        if r.multiplier.is_some_and(|m| m < 1.0) {
            ctx.error(
                n.pos,
                "`restart.multiplier` must be at least 1 (1 keeps the delay constant)",
            );
        }
    }
    if let Some(n) = o.get("jitter") {
        r.jitter = ctx.float(n, "restart.jitter");
        if r.jitter.is_some_and(|j| !(0.0..=1.0).contains(&j)) {
            ctx.error(
                n.pos,
                "`restart.jitter` is a fraction of the delay, from 0 to 1",
            );
        }
    }
    if let Some(n) = o.get("start_limit_burst") {
        r.start_limit_burst = ctx.count(n, "restart.start_limit_burst", 1);
    }
    if let Some(n) = o.get("with_dependencies") {
        r.with_dependencies = ctx.bool(n, "restart.with_dependencies");
    }
    if let (Some(a), Some(b), Some(n)) = (r.initial_delay, r.max_delay, o.get("max_delay")) {
        if b < a {
            ctx.error(
                n.pos,
                "`restart.max_delay` is shorter than `restart.initial_delay`",
            );
        }
    }
}

fn http_probe(port: Option<At<PortRef>>, path: String, pos: Pos) -> Probe {
    Probe {
        check: Check::Http { port, path },
        pos,
        initial_delay: None,
        period: None,
        timeout: None,
        failure_threshold: None,
        success_threshold: None,
    }
}

/// The Go flowctl's `health_check` (a path like `/health`, or a URL) on `health_port`.
fn legacy_health_check(ctx: &mut Ctx, n: &Node, hc: &str, c: &mut Component) {
    let hc = hc.trim();
    let (port, path) = if let Some(rest) = hc
        .strip_prefix("http://")
        .or_else(|| hc.strip_prefix("https://"))
    {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let port = match authority.rsplit_once(':') {
            Some((_, p)) => match p.parse::<u16>() {
                Ok(p) if p != 0 => Some(p),
                _ => {
                    ctx.error(n.pos, format!("`health_check: {hc}` has no valid port"));
                    return;
                }
            },
            None => None,
        };
        (port, if path.is_empty() { "/" } else { path })
    } else if hc.starts_with('/') {
        (None, hc)
    } else {
        ctx.error(
            n.pos,
            format!("`health_check: {hc}` must be a path such as `/health` or an http:// URL"),
        );
        return;
    };
    if c.readiness.is_some() {
        ctx.notice(
            n.pos,
            "`health_check` is ignored: `readiness` says how this component is probed",
        );
        return;
    }
    let port = match (port, &c.health_port) {
        (Some(p), Some(hp)) if p != hp.value => {
            ctx.error(
                n.pos,
                format!(
                    "`health_check` uses port {p} but `health_port` is {}",
                    hp.value
                ),
            );
            return;
        }
        (Some(p), None) => {
            c.health_port = Some(At::new(p, n.pos));
            None
        }
        _ => None,
    };
    c.readiness = Some(http_probe(port, path.to_string(), n.pos));
}

fn port_ref(ctx: &mut Ctx, n: &Node, field: &str) -> Option<At<PortRef>> {
    let r = match &n.value {
        Value::Int(_) => PortRef::Number(ctx.int(n, field, 1, 65535)? as u16),
        _ => {
            let s = ctx.nonempty(n, field)?;
            match s.parse::<u16>() {
                Ok(p) if p != 0 => PortRef::Number(p),
                _ => PortRef::Name(s),
            }
        }
    };
    Some(At::new(r, n.pos))
}

fn probe(ctx: &mut Ctx, n: &Node, field: &str) -> Option<Probe> {
    let mut p = Probe {
        check: Check::Notify,
        pos: n.pos,
        initial_delay: None,
        period: None,
        timeout: None,
        failure_threshold: None,
        success_threshold: None,
    };
    if let Some(word) = scalar_text(n) {
        p.check = match word.as_str() {
            "notify" => Check::Notify,
            "registered" => Check::Registered,
            _ => {
                ctx.error(
                    n.pos,
                    format!(
                        "`{field}: {word}`: write `notify`, `registered`, or a mapping with one of \
                         {}",
                        PROBE_CHECKS.join(", ")
                    ),
                );
                return None;
            }
        };
        return Some(p);
    }
    let o = ctx.object(n, field, PROBE)?;
    let mut checks: Vec<&str> = PROBE_CHECKS.iter().copied().filter(|k| o.has(k)).collect();
    checks.sort_by_key(|k| o.key_pos(k));
    match checks.as_slice() {
        [] => {
            ctx.error(
                o.pos,
                format!("`{field}` needs one check: {}", PROBE_CHECKS.join(", ")),
            );
            return None;
        }
        [_] => {}
        [_, second, ..] => {
            ctx.error(
                o.key_pos(second).unwrap_or(o.pos),
                format!(
                    "`{field}` has more than one check ({}): a probe runs one",
                    checks.join(", ")
                ),
            );
            return None;
        }
    }
    let kind = checks[0];
    let body = o.get(kind)?;
    let f = format!("{field}.{kind}");
    p.check = match kind {
        "http" => {
            let b = ctx.object(body, &f, &["port", "path"])?;
            let port = b
                .get("port")
                .and_then(|n| port_ref(ctx, n, &format!("{f}.port")));
            let path = match b.get("path") {
                None => "/health".to_string(),
                Some(n) => {
                    let s = ctx.nonempty(n, &format!("{f}.path"))?;
                    if !s.starts_with('/') {
                        ctx.error(n.pos, format!("`{f}.path` must start with `/`"));
                    }
                    s
                }
            };
            Check::Http { port, path }
        }
        "grpc" => {
            let b = ctx.object(body, &f, &["port", "service"])?;
            Check::Grpc {
                port: b
                    .get("port")
                    .and_then(|n| port_ref(ctx, n, &format!("{f}.port"))),
                service: b
                    .get("service")
                    .and_then(|n| ctx.string(n, &format!("{f}.service")))
                    .unwrap_or_default(),
            }
        }
        "tcp" => {
            let b = ctx.object(body, &f, &["port"])?;
            Check::Tcp {
                port: b
                    .get("port")
                    .and_then(|n| port_ref(ctx, n, &format!("{f}.port"))),
            }
        }
        "exec" => {
            let b = ctx.object(body, &f, &["command"])?;
            let Some(cmd) = b.get("command") else {
                ctx.error(b.pos, format!("`{f}` needs `command`"));
                return None;
            };
            let argv: Vec<String> = match &cmd.value {
                Value::Seq(_) => ctx.string_list(cmd, &format!("{f}.command")),
                _ => ctx
                    .string_at(cmd, &format!("{f}.command"))
                    .into_iter()
                    .collect(),
            }
            .into_iter()
            .map(|s| s.value)
            .collect();
            if argv.is_empty() || argv[0].trim().is_empty() {
                ctx.error(cmd.pos, format!("`{f}.command` must name a program"));
                return None;
            }
            Check::Exec { command: argv }
        }
        _ => {
            // notify / registered: `true` or an empty mapping.
            let on = match &body.value {
                Value::Null => true,
                Value::Map(m) if m.is_empty() => true,
                Value::Bool(b) => *b,
                _ => false,
            };
            if !on {
                ctx.error(
                    body.pos,
                    format!("`{f}` takes `true`; to turn the probe off, remove `{field}`"),
                );
                return None;
            }
            if kind == "notify" {
                Check::Notify
            } else {
                Check::Registered
            }
        }
    };
    p.initial_delay = o
        .get("initial_delay")
        .and_then(|n| ctx.duration(n, &format!("{field}.initial_delay")));
    for (key, slot) in [("period", &mut p.period), ("timeout", &mut p.timeout)] {
        if let Some(n) = o.get(key) {
            *slot = ctx.duration(n, &format!("{field}.{key}"));
            if slot.is_some_and(|d| d.is_zero()) {
                ctx.error(n.pos, format!("`{field}.{key}` must be longer than zero"));
            }
        }
    }
    p.failure_threshold = o
        .get("failure_threshold")
        .and_then(|n| ctx.count(n, &format!("{field}.failure_threshold"), 1));
    p.success_threshold = o
        .get("success_threshold")
        .and_then(|n| ctx.count(n, &format!("{field}.success_threshold"), 1));
    Some(p)
}

fn stop(ctx: &mut Ctx, n: &Node) -> StopSpec {
    let mut s = StopSpec::default();
    let Some(o) = ctx.object(n, "stop", STOP) else {
        return s;
    };
    if let Some(n) = o.get("signal") {
        s.signal = ctx
            .string(n, "stop.signal")
            .and_then(|t| ctx.parsed(n, "stop.signal", units::signal(&t)));
    }
    if let Some(n) = o.get("timeout") {
        s.timeout = ctx.duration(n, "stop.timeout");
    }
    s
}

fn resources(ctx: &mut Ctx, n: &Node) -> Resources {
    let mut r = Resources::default();
    let Some(o) = ctx.object(n, "resources", RESOURCES) else {
        return r;
    };
    for key in ["requests", "limits"] {
        let Some(list) = o.get(key) else { continue };
        let Some(l) = ctx.object(list, &format!("resources.{key}"), RESOURCE_LIST) else {
            continue;
        };
        // Requests are checked but have no process equivalent: only limits are applied.
        let limits = key == "limits";
        if let Some(n) = l.get("cpu") {
            let f = format!("resources.{key}.cpu");
            let v = ctx
                .string(n, &f)
                .and_then(|t| ctx.parsed(n, &f, units::cpu(&t)));
            if limits {
                r.cpu_max = v;
            }
        }
        if let Some(n) = l.get("memory") {
            let f = format!("resources.{key}.memory");
            let v = ctx
                .string(n, &f)
                .and_then(|t| ctx.parsed(n, &f, units::memory(&t)));
            if limits {
                r.memory_max = v;
            }
        }
        if let Some(n) = l.get("pids") {
            let v = ctx
                .int(n, &format!("resources.{key}.pids"), 1, u64::MAX.into())
                .map(|p| p as u64);
            if limits {
                r.pids_max = v;
            }
        }
    }
    r
}

fn rlimits(ctx: &mut Ctx, n: &Node) -> Rlimits {
    let mut r = Rlimits::default();
    let Some(o) = ctx.object(n, "rlimits", RLIMITS) else {
        return r;
    };
    for (key, slot) in [
        ("nofile", &mut r.nofile),
        ("core", &mut r.core),
        ("nproc", &mut r.nproc),
    ] {
        if let Some(n) = o.get(key) {
            let f = format!("rlimits.{key}");
            *slot = ctx
                .string(n, &f)
                .and_then(|t| ctx.parsed(n, &f, units::rlimit(&t)));
        }
    }
    r
}
