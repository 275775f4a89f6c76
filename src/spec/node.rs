//! The YAML layer: a document tree where every node knows where it was written.
//!
//! serde-saphyr deserialises straight into types and stops at the first mismatch. To report
//! every problem of a file at once, the spec is first read into this untyped tree (only YAML
//! syntax errors stop here), and the typed model is then built from it by hand, collecting
//! errors as it goes.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A 1-based line and column in the pipeline file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    pub const fn new(line: u32, col: u32) -> Self {
        Self { line, col }
    }

    fn from_location(loc: &serde_saphyr::Location) -> Self {
        Self {
            line: u32::try_from(loc.line()).unwrap_or(u32::MAX),
            col: u32::try_from(loc.column()).unwrap_or(u32::MAX),
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
    /// Source text of a number or boolean (`1.10`, `0x1F`, `yes`), when the parser knew it.
    pub raw: Option<String>,
    span: Option<(usize, usize)>,
}

/// What a node holds. Scalars keep their source text so that `1.10` in an `env` map stays
/// `1.10` and does not become `1.1`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    /// A word for messages: "expected a string, found a list".
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// The parser's limits: its defaults, but nesting at most 32 deep. A pipeline file needs
/// about ten levels, and each level costs the recursive parse stack; 64 levels overflow a
/// 2 MiB thread stack in a debug build.
fn budget() -> serde_saphyr::Budget {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = 32;
    budget
}

/// Parses a whole document. An empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, (Pos, String)> {
    // Duplicate keys reach the tree and are reported by the reader with both positions.
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        budget: Some(budget()),
    };
    match serde_saphyr::from_str_with_options::<Option<Node>>(text, options) {
        Ok(Some(node)) => Ok(node.with_raw_scalars(text)),
        Ok(None) => Ok(Node {
            pos: Pos::new(1, 1),
            value: Value::Null,
            raw: None,
            span: None,
        }),
        Err(err) => {
            let pos = err
                .location()
                .map(|l| Pos::from_location(&l))
                .filter(|p| p.line > 0)
                .unwrap_or(Pos::new(1, 1));
            Err((pos, syntax_message(&err)))
        }
    }
}

/// The parser's message without its location and snippet: our diagnostics carry the location.
fn syntax_message(err: &serde_saphyr::Error) -> String {
    use serde_saphyr::MessageFormatter;
    if let Some(breach) = budget_breach(err) {
        return too_large(breach);
    }
    let msg = serde_saphyr::DefaultMessageFormatter.format_message(err);
    let msg: String = msg
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // Scanner errors repeat their position inside the text ("line 2 column 4: …").
    let msg = msg.trim();
    let msg = match msg.strip_prefix("error: ") {
        Some(rest) => rest,
        None => msg,
    };
    let msg = match msg.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((pos, rest)) if pos.contains(" column ") => rest,
        _ => msg,
    };
    if msg.contains("recursion limit exceeded") {
        return format!(
            "the file is too large for a pipeline file: it has nesting deeper than {} levels, \
             the most allowed",
            budget().max_depth
        );
    }
    if msg.contains("multiple YAML documents") {
        return "a pipeline file holds one YAML document: split it at `---` into one file per \
                pipeline"
            .to_string();
    }
    format!("invalid YAML: {msg}")
}

fn budget_breach(mut err: &serde_saphyr::Error) -> Option<&serde_saphyr::budget::BudgetBreach> {
    use serde_saphyr::Error;
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = err {
        err = error;
    }
    match err {
        Error::Budget { breach, .. } => Some(breach),
        _ => None,
    }
}

/// The parser's limits (serde-saphyr's default budget), said as limits of a pipeline file.
fn too_large(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    let budget = budget();
    let what = match breach {
        B::Nodes { .. } => format!(
            "more than {} YAML nodes (keys, values and list items)",
            budget.max_nodes
        ),
        B::Depth { .. } => format!("nesting deeper than {} levels", budget.max_depth),
        B::Events { .. } => format!("more than {} YAML events", budget.max_events),
        B::Aliases { .. } | B::AliasAnchorRatio { .. } => "too many aliases (`*name`)".into(),
        B::Anchors { .. } => "too many anchors (`&name`)".into(),
        B::Documents { .. } => "too many YAML documents".into(),
        B::ScalarBytes { .. } => format!(
            "more than {} MiB of text in values",
            budget.max_total_scalar_bytes >> 20
        ),
        other => format!("more than the parser allows ({other:?})"),
    };
    format!("the file is too large for a pipeline file: it has {what}, the most allowed")
}

impl Node {
    /// Keeps numbers' and booleans' source text where the parser gives byte offsets.
    fn with_raw_scalars(mut self, text: &str) -> Node {
        self.fill_raw(text);
        self
    }

    fn fill_raw(&mut self, text: &str) {
        match &mut self.value {
            Value::Bool(_) | Value::Int(_) | Value::Float(_) => {
                self.raw = self
                    .span
                    .and_then(|(o, l)| text.get(o..o + l))
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty());
            }
            Value::Seq(items) => items.iter_mut().for_each(|n| n.fill_raw(text)),
            Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.fill_raw(text);
                v.fill_raw(text);
            }),
            Value::Null | Value::Str(_) => {}
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(deserializer)?;
        let span = spanned.referenced.span();
        let span = match (span.byte_offset(), span.byte_len()) {
            (Some(o), Some(l)) => usize::try_from(o).ok().zip(usize::try_from(l).ok()),
            _ => None,
        };
        Ok(Node {
            pos: Pos::from_location(&spanned.referenced),
            value: spanned.value,
            raw: None,
            span,
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        match i128::try_from(v) {
            Ok(v) => Ok(Value::Int(v)),
            Err(_) => Ok(Value::Str(v.to_string())),
        }
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<Node, Node>()? {
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_carry_line_and_column() {
        let n = parse("a: 1\nb:\n  - x\n  - {c: d}\n").unwrap();
        let Value::Map(entries) = &n.value else {
            panic!("{n:?}")
        };
        assert_eq!(entries[0].0.pos, Pos::new(1, 1));
        assert_eq!(entries[0].1.pos, Pos::new(1, 4));
        let Value::Seq(items) = &entries[1].1.value else {
            panic!()
        };
        assert_eq!(items[0].pos, Pos::new(3, 5));
        let Value::Map(inner) = &items[1].value else {
            panic!()
        };
        assert_eq!(inner[0].1.pos, Pos::new(4, 9));
    }

    #[test]
    fn scalars_keep_their_source_text() {
        let n = parse("[1.10, 0x1F, yes, '7']").unwrap();
        let Value::Seq(items) = n.value else { panic!() };
        let raws: Vec<_> = items.iter().map(|n| n.raw.clone()).collect();
        assert_eq!(
            raws,
            [
                Some("1.10".into()),
                Some("0x1F".into()),
                Some("yes".into()),
                None
            ]
        );
        assert_eq!(items[3].value, Value::Str("7".into()));
    }

    #[test]
    fn syntax_error_has_position_and_no_snippet() {
        let (pos, msg) = parse("a: 1\n  b: 2\n").unwrap_err();
        assert_eq!(pos, Pos::new(2, 4));
        assert!(msg.starts_with("invalid YAML: "), "{msg}");
        assert!(!msg.contains('\n') && !msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn duplicate_keys_reach_the_tree() {
        let n = parse("a: 1\na: 2\n").unwrap();
        let Value::Map(entries) = n.value else {
            panic!()
        };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse("# nothing\n").unwrap().value, Value::Null);
    }
}
