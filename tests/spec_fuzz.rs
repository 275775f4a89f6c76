//! The fuzz target's checks on a stable toolchain: every example pipeline and a fixed set of
//! mutants of each (seeded, so a failure reproduces) go through parse, resolve and the
//! supervisor's first steps without a panic and with every error positioned. The open-ended
//! search is `cargo +nightly fuzz run pipeline_file examples` (see fuzz/).

mod fuzz_common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SIGNIFICANT: &[u8] = b":-[]{}\"'&*\n #|>!%@,?09";
const EXTREMES: &[&str] = &[
    "18446744073709551615",
    "18446744073709551615s",
    "-1",
    "0",
    "1e400",
    ".inf",
    ".nan",
    "365d",
    "366d",
    "4294967296",
    "~",
    "[]",
    "{}",
    "\"\"",
    "*a",
    "&a x",
    "!!binary AAAA",
];

fn mutate(text: &str, rng: &mut StdRng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let i = rng.random_range(0..lines.len());
    match rng.random_range(0..5) {
        0 => {
            let mut bytes = lines[i].clone().into_bytes();
            if !bytes.is_empty() {
                let at = rng.random_range(0..bytes.len());
                bytes[at] = SIGNIFICANT[rng.random_range(0..SIGNIFICANT.len())];
            }
            lines[i] = String::from_utf8_lossy(&bytes).into_owned();
        }
        1 => {
            if let Some((key, _)) = lines[i].split_once(": ") {
                let value = EXTREMES[rng.random_range(0..EXTREMES.len())];
                lines[i] = format!("{key}: {value}");
            }
        }
        2 => {
            let copy = lines[i].clone();
            lines.insert(i, copy);
        }
        3 => {
            lines.remove(i);
        }
        _ => {
            let j = rng.random_range(0..lines.len());
            lines.swap(i, j);
        }
    }
    lines.join("\n")
}

#[test]
fn examples_and_their_mutants_never_panic_and_every_error_has_a_position() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut rng = StdRng::seed_from_u64(0x5eed_f10c);
    let mut exercised = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        fuzz_common::exercise(&text);
        let mut current = text.clone();
        for round in 0..300 {
            // Mostly one mutation of the original, sometimes a pile-up of several.
            if round % 4 == 0 {
                current = text.clone();
            }
            current = mutate(&current, &mut rng);
            let shown = current.clone();
            let outcome = std::panic::catch_unwind(|| fuzz_common::exercise(&shown));
            assert!(
                outcome.is_ok(),
                "{} mutant {round} panicked:\n{shown}",
                file.display()
            );
            exercised += 1;
        }
    }
    assert_eq!(exercised, files.len() * 300);
}
