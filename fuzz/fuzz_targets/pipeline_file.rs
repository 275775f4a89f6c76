//! Whole pipeline files, arbitrary bytes: parse and validate, resolve, and the supervisor's
//! first steps must never panic, and every error must carry its position.
//!
//! `cargo +nightly fuzz run pipeline_file ../examples -- -max_total_time=60` (from `fuzz/`).
#![no_main]

#[path = "../../tests/fuzz_common/mod.rs"]
mod fuzz_common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        fuzz_common::exercise(text);
    }
});
