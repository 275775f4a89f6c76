//! Checks across components: unique ids, `inputs`/`depends_on` that exist, no cycles, sources
//! without inputs, and `${…}` references and probe ports that point at something real.

use std::collections::BTreeMap;

use super::graph;
use super::interp::{self, Part};
use super::model::{At, Check, Component, Pipeline, PortRef};
use super::reader::{suggest, Ctx};
use crate::plan::Role;

pub fn check(ctx: &mut Ctx, p: &Pipeline) {
    let mut first: BTreeMap<&str, &Component> = BTreeMap::new();
    for c in &p.components {
        match first.get(c.id.as_str()) {
            Some(prev) => ctx.error(
                c.pos,
                format!(
                    "component id `{}` is used twice (first at {}); ids are unique across \
                     sources, processors and sinks",
                    c.id, prev.pos
                ),
            ),
            None => {
                first.insert(&c.id, c);
            }
        }
    }
    let ids: Vec<&str> = first.keys().copied().collect();

    let index: BTreeMap<&str, usize> = p
        .components
        .iter()
        .enumerate()
        .rev()
        .map(|(i, c)| (c.id.as_str(), i))
        .collect();
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); p.components.len()];
    let mut edge_pos: BTreeMap<(usize, usize), At<String>> = BTreeMap::new();
    for (i, c) in p.components.iter().enumerate() {
        if c.role == Role::Source {
            if let Some(first) = c.inputs.first() {
                ctx.error(
                    first.pos,
                    format!(
                        "source `{}` has `inputs`, but sources produce data and read from no \
                         component: make it a processor, or use `depends_on` to order its start",
                        c.id
                    ),
                );
            }
        }
        for (field, refs) in [("inputs", &c.inputs), ("depends_on", &c.depends_on)] {
            for r in refs {
                if r.value == c.id {
                    ctx.error(
                        r.pos,
                        format!("`{field}` of `{}` names the component itself", c.id),
                    );
                    continue;
                }
                match index.get(r.value.as_str()) {
                    Some(&j) => {
                        edges[i].push(j);
                        edge_pos.entry((i, j)).or_insert_with(|| r.clone());
                    }
                    None => ctx.error(r.pos, unknown_component(&r.value, field, &ids)),
                }
            }
        }
    }
    for cycle in graph::cycles(&edges) {
        let names: Vec<&str> = cycle.iter().map(|&i| p.components[i].id.as_str()).collect();
        let from = cycle[0];
        let to = cycle[1 % cycle.len()];
        let pos = edge_pos
            .get(&(from, to))
            .map_or(p.components[from].pos, |a| a.pos);
        ctx.error(
            pos,
            format!(
                "dependency cycle: {} → {}; no component in it could ever start",
                names.join(" → "),
                names[0]
            ),
        );
    }

    for c in &p.components {
        references(ctx, p, c, &ids);
        for probe in [&c.readiness, &c.liveness].into_iter().flatten() {
            probe_port(ctx, c, &probe.check, probe.pos);
        }
    }
}

fn unknown_component(name: &str, field: &str, ids: &[&str]) -> String {
    let hint = suggest(name, ids)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    format!("`{field}` names `{name}`, which is not a component of this pipeline{hint}")
}

/// `${…}` in env values and args: syntax, and that the components and ports exist.
fn references(ctx: &mut Ctx, p: &Pipeline, c: &Component, ids: &[&str]) {
    let values = c
        .env
        .iter()
        .map(|(k, v)| (format!("env.{k}"), v))
        .chain(c.args.iter().map(|a| ("args".to_string(), a)));
    for (field, value) in values {
        let parts = match interp::parse(&value.value) {
            Ok(parts) => parts,
            Err(msg) => {
                ctx.error(value.pos, format!("`{field}`: {msg}"));
                continue;
            }
        };
        for part in parts {
            let problem = match &part {
                Part::OwnPort(name) => (!has_port(c, name)).then(|| no_port(c, name)),
                Part::Port { id, name } => match p.component(id) {
                    None => Some(unknown_reference(id, ids)),
                    Some(other) => (!has_port(other, name)).then(|| no_port(other, name)),
                },
                Part::Address(id) => match p.component(id) {
                    None => Some(unknown_reference(id, ids)),
                    Some(other) => other.ports.is_empty().then(|| {
                        format!(
                            "`${{{id}.address}}`: `{id}` has no ports; give it one, e.g. \
                             `ports: [{{name: grpc}}]`"
                        )
                    }),
                },
                Part::Lit(_) | Part::Var(_) | Part::RangeFrom | Part::RangeTo | Part::ShardId => {
                    None
                }
            };
            if let Some(msg) = problem {
                ctx.error(value.pos, format!("`{field}`: {msg}"));
            }
        }
    }
}

/// `health` names the health port unless a port is called that.
fn has_port(c: &Component, name: &str) -> bool {
    name == "health" || c.port(name).is_some()
}

fn unknown_reference(id: &str, ids: &[&str]) -> String {
    let hint = suggest(id, ids)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    format!("`${{{id}.…}}` names `{id}`, which is not a component of this pipeline{hint}")
}

fn no_port(c: &Component, name: &str) -> String {
    let names: Vec<&str> = c.ports.iter().map(|p| p.name.as_str()).collect();
    let known = if names.is_empty() {
        "it has only health".to_string()
    } else {
        format!("it has {} and health", names.join(", "))
    };
    let hint = suggest(name, &names)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    format!("`{}` has no port named `{name}` ({known}){hint}", c.id)
}

fn probe_port(ctx: &mut Ctx, c: &Component, check: &Check, pos: super::node::Pos) {
    let (port, what) = match check {
        Check::Http { port, .. } => (port, "http"),
        Check::Grpc { port, .. } => (port, "grpc"),
        Check::Tcp { port } => (port, "tcp"),
        _ => return,
    };
    match port {
        Some(At {
            value: PortRef::Name(name),
            pos,
        }) if !has_port(c, name) => ctx.error(*pos, format!("probe port: {}", no_port(c, name))),
        None if what != "http" && c.ports.is_empty() => ctx.error(
            pos,
            format!(
                "the {what} probe of `{}` needs a `port`: the component has no ports",
                c.id
            ),
        ),
        _ => {}
    }
}
