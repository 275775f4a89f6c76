//! What a reload changes: the running plans against the newly loaded ones, as a pure diff.
//!
//! Components are compared by their whole resolved plan (command, args, env, ports, probes,
//! restart and stop settings, dependencies…). Spec resolution reuses the ports a running
//! component already holds, so an unchanged file resolves to an identical plan and its
//! components keep running with the same pid. A component whose plan differs in anything is
//! restarted with the new plan; components that depend on it keep running (they reconnect,
//! as after any restart of their upstream) unless their own plan changed too (e.g. the
//! upstream's address moved) or they ask for `restart.with_dependencies`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::PipelinePlan;

/// What a reload does, pipeline by pipeline. Names are sorted, so the same change always
/// reads the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadDiff {
    pub pipelines: Vec<PipelineChange>,
}

/// One pipeline's part of a reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineChange {
    pub name: String,
    pub kind: ChangeKind,
    /// Components that keep running untouched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<String>,
    /// Components restarted with a new plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// Components started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<String>,
    /// Components drained and stopped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Not in the running set: every component starts.
    Added,
    /// Gone from the pipelines directory: every component is drained and stopped.
    Removed,
    /// Some component was changed, added or removed.
    Changed,
    Unchanged,
}

impl PipelineChange {
    fn new(name: &str, kind: ChangeKind) -> Self {
        PipelineChange {
            name: name.to_string(),
            kind,
            unchanged: Vec::new(),
            changed: Vec::new(),
            added: Vec::new(),
            removed: Vec::new(),
        }
    }
}

impl ReloadDiff {
    /// Whether the reload changes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.pipelines
            .iter()
            .all(|p| p.kind == ChangeKind::Unchanged)
    }

    pub fn pipelines_of(&self, kind: ChangeKind) -> impl Iterator<Item = &str> {
        self.pipelines
            .iter()
            .filter(move |p| p.kind == kind)
            .map(|p| p.name.as_str())
    }
}

/// Compares the running plans with the new ones.
pub fn diff(running: &[PipelinePlan], new: &[PipelinePlan]) -> ReloadDiff {
    let old: BTreeMap<&str, &PipelinePlan> = running.iter().map(|p| (p.name.as_str(), p)).collect();
    let new: BTreeMap<&str, &PipelinePlan> = new.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut names: Vec<&str> = old.keys().chain(new.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    let mut out = ReloadDiff::default();
    for name in names {
        let change = match (old.get(name), new.get(name)) {
            (None, Some(p)) => {
                let mut c = PipelineChange::new(name, ChangeKind::Added);
                c.added = sorted(p.components.iter().map(|c| c.id.clone()));
                c
            }
            (Some(p), None) => {
                let mut c = PipelineChange::new(name, ChangeKind::Removed);
                c.removed = sorted(p.components.iter().map(|c| c.id.clone()));
                c
            }
            (Some(before), Some(after)) => components(name, before, after),
            (None, None) => unreachable!("every name comes from one of the two sets"),
        };
        out.pipelines.push(change);
    }
    out
}

fn components(name: &str, before: &PipelinePlan, after: &PipelinePlan) -> PipelineChange {
    let mut c = PipelineChange::new(name, ChangeKind::Unchanged);
    for plan in &after.components {
        match before.components.iter().find(|b| b.id == plan.id) {
            None => c.added.push(plan.id.clone()),
            Some(b) if b == plan => c.unchanged.push(plan.id.clone()),
            Some(_) => c.changed.push(plan.id.clone()),
        }
    }
    for b in &before.components {
        if !after.components.iter().any(|a| a.id == b.id) {
            c.removed.push(b.id.clone());
        }
    }
    for list in [
        &mut c.unchanged,
        &mut c.changed,
        &mut c.added,
        &mut c.removed,
    ] {
        list.sort();
    }
    if !(c.changed.is_empty() && c.added.is_empty() && c.removed.is_empty()) {
        c.kind = ChangeKind::Changed;
    }
    c
}

fn sorted(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = ids.collect();
    v.sort();
    v
}

impl std::fmt::Display for ReloadDiff {
    /// One line per pipeline: `demo: restarted sink; started extra; unchanged source`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pipelines.is_empty() {
            return writeln!(f, "no pipelines");
        }
        for p in &self.pipelines {
            let list = |ids: &[String]| ids.join(", ");
            match p.kind {
                ChangeKind::Added => writeln!(f, "{}: added, starting {}", p.name, list(&p.added))?,
                ChangeKind::Removed => {
                    writeln!(f, "{}: removed, stopping {}", p.name, list(&p.removed))?
                }
                ChangeKind::Unchanged => writeln!(f, "{}: unchanged", p.name)?,
                ChangeKind::Changed => {
                    let mut parts = Vec::new();
                    for (verb, ids) in [
                        ("restarted", &p.changed),
                        ("started", &p.added),
                        ("stopped", &p.removed),
                        ("unchanged", &p.unchanged),
                    ] {
                        if !ids.is_empty() {
                            parts.push(format!("{verb} {}", list(ids)));
                        }
                    }
                    writeln!(f, "{}: {}", p.name, parts.join("; "))?
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::testplan;

    fn pipeline(name: &str, components: &[(&str, &str)]) -> PipelinePlan {
        testplan::pipeline(
            name,
            components
                .iter()
                .map(|(id, arg)| {
                    let mut c = testplan::component(id);
                    c.args = vec![arg.to_string()];
                    c
                })
                .collect(),
        )
    }

    fn ids(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// (running, new, expected per pipeline: name, kind, unchanged, changed, added, removed)
    #[test]
    fn diff_sorts_components_into_unchanged_changed_added_removed() {
        type Row<'a> = (
            Vec<PipelinePlan>,
            Vec<PipelinePlan>,
            Vec<(&'a str, ChangeKind, &'a str, &'a str, &'a str, &'a str)>,
        );
        use ChangeKind::*;
        let rows: Vec<Row> = vec![
            // Nothing running, nothing loaded.
            (vec![], vec![], vec![]),
            // Identical plans: nothing to do.
            (
                vec![pipeline("a", &[("s", "1"), ("k", "1")])],
                vec![pipeline("a", &[("s", "1"), ("k", "1")])],
                vec![("a", Unchanged, "k s", "", "", "")],
            ),
            // Order of components does not matter, only their plans.
            (
                vec![pipeline("a", &[("s", "1"), ("k", "1")])],
                vec![pipeline("a", &[("k", "1"), ("s", "1")])],
                vec![("a", Unchanged, "k s", "", "", "")],
            ),
            // One component's arguments changed.
            (
                vec![pipeline("a", &[("s", "1"), ("k", "1")])],
                vec![pipeline("a", &[("s", "1"), ("k", "2")])],
                vec![("a", Changed, "s", "k", "", "")],
            ),
            // A component added and one removed in the same pipeline.
            (
                vec![pipeline("a", &[("s", "1"), ("old", "1")])],
                vec![pipeline("a", &[("s", "1"), ("new", "1")])],
                vec![("a", Changed, "s", "", "new", "old")],
            ),
            // A new pipeline and a removed one; an untouched one in between.
            (
                vec![pipeline("b", &[("x", "1")]), pipeline("c", &[("y", "1")])],
                vec![pipeline("a", &[("z", "1")]), pipeline("b", &[("x", "1")])],
                vec![
                    ("a", Added, "", "", "z", ""),
                    ("b", Unchanged, "x", "", "", ""),
                    ("c", Removed, "", "", "", "y"),
                ],
            ),
        ];
        for (i, (running, new, expected)) in rows.into_iter().enumerate() {
            let got = diff(&running, &new);
            let want = ReloadDiff {
                pipelines: expected
                    .into_iter()
                    .map(|(name, kind, u, c, a, r)| PipelineChange {
                        name: name.into(),
                        kind,
                        unchanged: ids(u),
                        changed: ids(c),
                        added: ids(a),
                        removed: ids(r),
                    })
                    .collect(),
            };
            assert_eq!(got, want, "row {i}");
        }
    }

    #[test]
    fn a_changed_port_or_env_is_a_change() {
        let before = pipeline("a", &[("s", "1")]);
        let mut env = before.clone();
        env.components[0].env.insert("X".into(), "1".into());
        let mut port = before.clone();
        port.components[0].health_port += 1;
        for after in [env, port] {
            let d = diff(std::slice::from_ref(&before), &[after]);
            assert_eq!(d.pipelines[0].changed, ids("s"));
        }
        let same = diff(std::slice::from_ref(&before), std::slice::from_ref(&before));
        assert!(same.is_empty());
    }

    #[test]
    fn summary_reads_one_line_per_pipeline() {
        let d = diff(
            &[
                pipeline("a", &[("s", "1"), ("k", "1")]),
                pipeline("gone", &[("x", "1")]),
            ],
            &[
                pipeline("a", &[("s", "1"), ("k", "2"), ("n", "1")]),
                pipeline("fresh", &[("y", "1")]),
            ],
        );
        assert_eq!(
            d.to_string(),
            "a: restarted k; started n; unchanged s\n\
             fresh: added, starting y\n\
             gone: removed, stopping x\n"
        );
    }
}
