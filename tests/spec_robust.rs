//! Broken pipeline files get positioned errors, never a panic.

use std::path::Path;

use flowctl::spec::{parse_str, resolve, ResolveOptions};

fn seed() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/seed-ttp-processing-pipeline.yaml");
    std::fs::read_to_string(path).unwrap()
}

/// Parses `text`; every error must carry a line and column inside the file.
fn check(text: &str) {
    let lines = text.lines().count().max(1) as u32;
    match parse_str(Path::new("m.yaml"), text) {
        Ok(p) => {
            // Whatever parses also resolves or fails with positioned errors.
            if let Err(d) = resolve(
                &p,
                &ResolveOptions {
                    vars: Some(Default::default()),
                    ..Default::default()
                },
            ) {
                for e in d.errors() {
                    let pos = e.pos.unwrap_or_else(|| panic!("no position: {e}\n{text}"));
                    assert!(pos.line >= 1 && pos.line <= lines + 1, "{e}");
                }
            }
        }
        Err(d) => {
            assert!(d.has_errors());
            for e in d.errors() {
                let pos = e.pos.unwrap_or_else(|| panic!("no position: {e}\n{text}"));
                assert!(pos.line >= 1 && pos.line <= lines + 1, "{e}\n{text}");
                assert!(pos.col >= 1, "{e}");
            }
        }
    }
}

#[test]
fn every_line_removed_gives_positioned_errors_or_a_valid_pipeline() {
    let text = seed();
    let lines: Vec<&str> = text.lines().collect();
    for i in 0..lines.len() {
        let mut m = lines.clone();
        m.remove(i);
        check(&m.join("\n"));
    }
}

#[test]
fn every_truncation_gives_positioned_errors_or_a_valid_pipeline() {
    let text = seed();
    for (i, _) in text.char_indices().step_by(11) {
        check(&text[..i]);
    }
}

#[test]
fn values_replaced_by_odd_ones_give_positioned_errors() {
    let text = seed();
    let odd = [
        "[]",
        "{}",
        "~",
        "-1",
        "99999999999999999999999",
        "\"${\"",
        "!!binary aGk=",
        "*nope",
        "&a x",
        "'",
        "0x",
        "1e400",
    ];
    for (i, line) in text.lines().enumerate() {
        let Some((key, _)) = line.split_once(": ") else {
            continue;
        };
        for o in odd {
            let mut m: Vec<String> = text.lines().map(String::from).collect();
            m[i] = format!("{key}: {o}");
            check(&m.join("\n"));
        }
    }
}

/// A pipeline with `labels` labels and, on its source, `env` environment variables; the label
/// `K{dup}` is written a second time after the last one when `dup` is given. (The YAML parser
/// caps a document at 250k nodes, so one file holds at most ~124k such keys.)
fn wide_pipeline(labels: usize, env: usize, dup: Option<usize>) -> String {
    let mut text = String::from(
        "apiVersion: flowctl/v1\nkind: Pipeline\nmetadata:\n  name: wide\n  labels:\n",
    );
    for i in 0..labels {
        text.push_str(&format!("    K{i}: v{i}\n"));
    }
    if let Some(d) = dup {
        text.push_str(&format!("    K{d}: again\n"));
    }
    text.push_str("spec:\n  sources:\n    - id: src\n      command: [\"true\"]\n      env:\n");
    for i in 0..env {
        text.push_str(&format!("        VAR_{i}: \"{i}\"\n"));
    }
    text
}

#[test]
fn a_map_of_a_hundred_thousand_keys_parses_and_resolves() {
    let text = wide_pipeline(10, 100_000, None);
    let p = parse_str(Path::new("wide.yaml"), &text).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(p.components[0].env.len(), 100_000);
    let plan = resolve(
        &p,
        &ResolveOptions {
            vars: Some(Default::default()),
            ..Default::default()
        },
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let env = &plan.components[0].env;
    assert_eq!(env.get("VAR_99999").map(String::as_str), Some("99999"));
}

#[test]
fn a_duplicate_among_a_hundred_thousand_keys_is_reported_with_both_positions() {
    let text = wide_pipeline(100_000, 1, Some(41_999));
    let d = parse_str(Path::new("wide.yaml"), &text).unwrap_err();
    let errors: Vec<String> = d.errors().map(|e| e.to_string()).collect();
    // `K41999` is first written on line 6 + 41999; the repeat follows the last label.
    assert_eq!(
        errors,
        ["wide.yaml:100006:5: error: duplicate key `K41999` in `metadata.labels` (first set at 42005:5)"],
    );
}

#[test]
fn a_file_past_the_parsers_node_budget_is_refused_as_too_large_with_its_limit() {
    let text = wide_pipeline(10, 130_000, None);
    let d = parse_str(Path::new("huge.yaml"), &text).unwrap_err();
    let errors: Vec<String> = d.errors().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert!(e.starts_with("huge.yaml:"), "{e}");
    assert!(
        e.contains("too large for a pipeline file: it has more than 250000 YAML nodes"),
        "{e}"
    );
    assert!(!e.contains("budget"), "{e}");
}

#[test]
fn a_file_nested_past_the_parsers_depth_budget_is_refused_as_too_deep() {
    // 40 levels pass the parser and stop at the budget; 100,000 would overflow any thread's
    // stack if the parser recursed all the way down.
    for depth in [40, 100_000] {
        let mut text =
            String::from("apiVersion: flowctl/v1\nkind: Pipeline\nmetadata:\n  labels: ");
        text.push_str(&"[".repeat(depth));
        text.push_str(&"]".repeat(depth));
        text.push('\n');
        let d = parse_str(Path::new("deep.yaml"), &text).unwrap_err();
        let e = d
            .errors()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(e.contains("nesting deeper than 32 levels"), "{depth}: {e}");
    }
}
