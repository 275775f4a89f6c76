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
