//! `${…}` references in `env` values and `args`: a component learns its own allocated ports
//! (`${ports.grpc}`), another component's port or address (`${src.ports.grpc}`,
//! `${src.address}`), the run's ledger range and shard (`${range.from}`, `${range.to}`,
//! `${shard.id}`: one output per shard of a backfill), and the supervisor's environment
//! (`${PGPASSWORD}`). `$${` writes a literal `${`. An unset variable is an error, never an
//! empty string.

/// One piece of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    /// `${ports.NAME}`: this component's port.
    OwnPort(String),
    /// `${ID.ports.NAME}`.
    Port {
        id: String,
        name: String,
    },
    /// `${ID.address}`: `127.0.0.1:<its service port>`.
    Address(String),
    /// `${range.from}`: the run's first ledger.
    RangeFrom,
    /// `${range.to}`: the run's last ledger.
    RangeTo,
    /// `${shard.id}`: the shard a run is (`flowctl run --shard-id`).
    ShardId,
    /// `${VAR}` from the supervisor's environment.
    Var(String),
}

/// Splits a value into literal text and references.
pub fn parse(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        lit.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            lit.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let Some(end) = tail.find('}') else {
                return Err(format!(
                    "`${{` without a closing `}}` in `{text}` (write `$${{` for a literal `${{`)"
                ));
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(reference(&tail[..end])?);
            rest = &tail[end + 1..];
        } else {
            lit.push('$');
            rest = &after[1..];
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    Ok(parts)
}

fn reference(inner: &str) -> Result<Part, String> {
    let segs: Vec<&str> = inner.split('.').collect();
    let ok = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
    match segs.as_slice() {
        ["ports", name] if ok(name) => Ok(Part::OwnPort(name.to_string())),
        [id, "ports", name] if ok(id) && ok(name) => Ok(Part::Port {
            id: id.to_string(),
            name: name.to_string(),
        }),
        ["range", "from"] => Ok(Part::RangeFrom),
        ["range", "to"] => Ok(Part::RangeTo),
        ["shard", "id"] => Ok(Part::ShardId),
        [id, "address"] if ok(id) => Ok(Part::Address(id.to_string())),
        [var] if is_var_name(var) => Ok(Part::Var(var.to_string())),
        _ => Err(format!(
            "`${{{inner}}}` is not a reference: use `${{ports.NAME}}`, `${{ID.ports.NAME}}`, \
             `${{ID.address}}`, `${{range.from}}`, `${{range.to}}`, `${{shard.id}}` or `${{VARIABLE}}` (write `$${{` for a literal `${{`)"
        )),
    }
}

fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Joins the parts, asking `lookup` for each reference; the first failure is returned.
pub fn render(
    parts: &[Part],
    mut lookup: impl FnMut(&Part) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Lit(s) => out.push_str(s),
            other => out.push_str(&lookup(other)?),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Part {
        Part::Lit(s.into())
    }

    #[test]
    fn parses_every_reference_form() {
        assert_eq!(
            parse("127.0.0.1:${ports.grpc}").unwrap(),
            [lit("127.0.0.1:"), Part::OwnPort("grpc".into())]
        );
        assert_eq!(
            parse("${src.ports.grpc}/${src.address}${HOME}").unwrap(),
            [
                Part::Port {
                    id: "src".into(),
                    name: "grpc".into()
                },
                lit("/"),
                Part::Address("src".into()),
                Part::Var("HOME".into())
            ]
        );
    }

    #[test]
    fn dollar_dollar_brace_is_literal() {
        assert_eq!(parse("a$${X}b").unwrap(), [lit("a${X}b")]);
        assert_eq!(
            parse("cost $5 and $HOME").unwrap(),
            [lit("cost $5 and $HOME")]
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(parse("${unclosed").unwrap_err().contains("closing"));
        assert!(parse("${a.b.c.d}").unwrap_err().contains("not a reference"));
        assert!(parse("${}").is_err());
        assert!(parse("${1X}").is_err());
    }
}
