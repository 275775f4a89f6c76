//! Strict, error-collecting reading of the YAML tree: every getter records what is wrong with
//! its node and returns `None`, so one pass reports every problem of the file.

use std::collections::hash_map::{Entry, HashMap};
use std::path::Path;
use std::time::Duration;

use super::diag::{Diagnostic, Diagnostics};
use super::model::At;
use super::node::{Node, Pos, Value};

/// The file being read and what has been said about it so far.
pub struct Ctx<'f> {
    pub file: &'f Path,
    pub diags: Diagnostics,
}

impl<'f> Ctx<'f> {
    pub fn new(file: &'f Path) -> Self {
        Self {
            file,
            diags: Diagnostics::new(),
        }
    }

    pub fn error(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(self.file, pos, msg));
    }

    pub fn notice(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.push(Diagnostic::notice(self.file, pos, msg));
    }

    /// A mapping whose keys must all be in `allowed`; an unknown key is an error with the
    /// closest known key as a hint. `what` names the mapping in messages ("component", "port").
    pub fn object<'n>(
        &mut self,
        node: &'n Node,
        what: &str,
        allowed: &[&'static str],
    ) -> Option<Obj<'n>> {
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => {
                return Some(Obj {
                    pos: node.pos,
                    entries: Vec::new(),
                })
            }
            other => {
                self.error(
                    node.pos,
                    format!("{what} must be a mapping, found {}", other.kind()),
                );
                return None;
            }
        };
        let mut obj = Obj {
            pos: node.pos,
            entries: Vec::new(),
        };
        for (k, v) in entries {
            let Some(key) = scalar_text(k) else {
                self.error(
                    k.pos,
                    format!("keys of {what} must be strings, found {}", k.value.kind()),
                );
                continue;
            };
            if let Some((_, first, _)) = obj.entries.iter().find(|(name, _, _)| *name == key) {
                let first = first.pos;
                self.error(
                    k.pos,
                    format!("duplicate key `{key}` in {what} (first set at {first})"),
                );
                continue;
            }
            if !allowed.contains(&key.as_str()) {
                let msg = match suggest(&key, allowed) {
                    Some(s) => format!("unknown key `{key}` in {what}; did you mean `{s}`?"),
                    None => format!(
                        "unknown key `{key}` in {what} (known keys: {})",
                        allowed.join(", ")
                    ),
                };
                self.error(k.pos, msg);
                continue;
            }
            obj.entries.push((key, k, v));
        }
        Some(obj)
    }

    /// Any scalar as text (`8088` → "8088", `yes` → "yes"), as the Go flowctl's string
    /// fields accept them. Null and collections are errors.
    pub fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match scalar_text(node) {
            Some(s) => Some(s),
            None => {
                self.error(
                    node.pos,
                    format!("`{field}` must be a string, found {}", node.value.kind()),
                );
                None
            }
        }
    }

    pub fn string_at(&mut self, node: &Node, field: &str) -> Option<At<String>> {
        self.string(node, field).map(|s| At::new(s, node.pos))
    }

    /// A string that must not be empty.
    pub fn nonempty(&mut self, node: &Node, field: &str) -> Option<String> {
        let s = self.string(node, field)?;
        if s.trim().is_empty() {
            self.error(node.pos, format!("`{field}` must not be empty"));
            return None;
        }
        Some(s)
    }

    /// A list of scalars; null is an empty list.
    pub fn string_list(&mut self, node: &Node, field: &str) -> Vec<At<String>> {
        match &node.value {
            Value::Null => Vec::new(),
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| self.string_at(item, &format!("{field}[{i}]")))
                .collect(),
            other => {
                let hint = if matches!(other, Value::Str(_)) {
                    format!(
                        ": write `{field}: [\"{}\"]`",
                        scalar_text(node).unwrap_or_default()
                    )
                } else {
                    String::new()
                };
                self.error(
                    node.pos,
                    format!("`{field}` must be a list, found {}{hint}", other.kind()),
                );
                Vec::new()
            }
        }
    }

    /// A list of arbitrary nodes; null is an empty list.
    pub fn list<'n>(&mut self, node: &'n Node, field: &str) -> &'n [Node] {
        match &node.value {
            Value::Null => &[],
            Value::Seq(items) => items,
            other => {
                self.error(
                    node.pos,
                    format!("`{field}` must be a list, found {}", other.kind()),
                );
                &[]
            }
        }
    }

    /// A mapping of scalar to scalar (`env`, `labels`); null values are empty strings, as in
    /// the Go flowctl.
    pub fn string_map(&mut self, node: &Node, field: &str) -> Vec<(At<String>, At<String>)> {
        let entries = match &node.value {
            Value::Null => return Vec::new(),
            Value::Map(entries) => entries,
            other => {
                self.error(
                    node.pos,
                    format!("`{field}` must be a mapping, found {}", other.kind()),
                );
                return Vec::new();
            }
        };
        let mut out: Vec<(At<String>, At<String>)> = Vec::new();
        // Where each key was first written: a map of 100k keys must not cost 100k² compares.
        let mut first_at: HashMap<String, Pos> = HashMap::with_capacity(entries.len());
        for (k, v) in entries {
            let Some(key) = self.string_at(k, &format!("key of {field}")) else {
                continue;
            };
            match first_at.entry(key.value.clone()) {
                Entry::Occupied(first) => {
                    let first = *first.get();
                    self.error(
                        k.pos,
                        format!(
                            "duplicate key `{}` in `{field}` (first set at {first})",
                            key.value
                        ),
                    );
                    continue;
                }
                Entry::Vacant(slot) => {
                    slot.insert(key.pos);
                }
            }
            let value = match &v.value {
                Value::Null => Some(At::new(String::new(), v.pos)),
                _ => self.string_at(v, &format!("{field}.{}", key.value)),
            };
            if let Some(value) = value {
                out.push((key, value));
            }
        }
        out
    }

    pub fn bool(&mut self, node: &Node, field: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            other => {
                self.error(
                    node.pos,
                    format!("`{field}` must be true or false, found {}", other.kind()),
                );
                None
            }
        }
    }

    /// An integer in `min..=max`; a quoted number is accepted.
    pub fn int(&mut self, node: &Node, field: &str, min: i128, max: i128) -> Option<i128> {
        let n = match &node.value {
            Value::Int(n) => Some(*n),
            Value::Str(s) => s.trim().parse::<i128>().ok(),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.error(
                    node.pos,
                    format!("`{field}` must be between {min} and {max}, found {n}"),
                );
                None
            }
            None => {
                self.error(
                    node.pos,
                    format!("`{field}` must be an integer, found {}", describe(node)),
                );
                None
            }
        }
    }

    /// A count from `min` to [`super::units::MAX_COUNT`].
    pub fn count(&mut self, node: &Node, field: &str, min: u32) -> Option<u32> {
        self.int(node, field, min.into(), super::units::MAX_COUNT.into())
            .map(|n| n as u32)
    }

    /// A number (integer or decimal).
    pub fn float(&mut self, node: &Node, field: &str) -> Option<f64> {
        match &node.value {
            Value::Int(n) => Some(*n as f64),
            Value::Float(f) if f.is_finite() => Some(*f),
            _ => {
                self.error(
                    node.pos,
                    format!("`{field}` must be a number, found {}", describe(node)),
                );
                None
            }
        }
    }

    /// A duration no longer than [`super::units::MAX_DURATION`], so the supervisor's clock
    /// arithmetic (backoff, stop timeouts, probe periods) can never overflow.
    pub fn duration(&mut self, node: &Node, field: &str) -> Option<Duration> {
        let text = self.string(node, field)?;
        let bounded = super::units::duration(&text).and_then(super::units::within_max);
        self.parsed(node, field, bounded)
    }

    /// Places a unit parser's message on the node.
    pub fn parsed<T>(&mut self, node: &Node, field: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(msg) => {
                self.error(node.pos, format!("`{field}`: {msg}"));
                None
            }
        }
    }
}

/// A checked mapping: known keys only, each once.
pub struct Obj<'n> {
    pub pos: Pos,
    entries: Vec<(String, &'n Node, &'n Node)>,
}

impl<'n> Obj<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, _, v)| *v)
    }

    /// Where the key itself is written, for errors about the entry as a whole.
    pub fn key_pos(&self, key: &str) -> Option<Pos> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, k, _)| k.pos)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// A scalar's text; `None` for null and collections.
pub fn scalar_text(node: &Node) -> Option<String> {
    match &node.value {
        Value::Str(s) => Some(s.clone()),
        Value::Bool(b) => Some(node.raw.clone().unwrap_or_else(|| b.to_string())),
        Value::Int(n) => Some(node.raw.clone().unwrap_or_else(|| n.to_string())),
        Value::Float(f) => Some(node.raw.clone().unwrap_or_else(|| f.to_string())),
        Value::Null | Value::Seq(_) | Value::Map(_) => None,
    }
}

fn describe(node: &Node) -> String {
    match scalar_text(node) {
        Some(s) => format!("`{s}`"),
        None => node.value.kind().to_string(),
    }
}

/// The known word closest to `word`, if one is close enough to be a likely typo
/// (`comand` → `command`, `depends-on` → `depends_on`, `containerport` → `containerPort`).
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let w = norm(word);
    candidates
        .iter()
        .map(|c| (*c, strsim::jaro_winkler(&w, &norm(c))))
        .filter(|(_, score)| *score >= 0.85)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["command", "args", "depends_on", "containerPort", "inputs"];
        assert_eq!(suggest("comand", &keys), Some("command"));
        assert_eq!(suggest("depends-on", &keys), Some("depends_on"));
        assert_eq!(suggest("containerport", &keys), Some("containerPort"));
        assert_eq!(suggest("input", &keys), Some("inputs"));
        assert_eq!(suggest("xyzzy", &keys), None);
    }
}
