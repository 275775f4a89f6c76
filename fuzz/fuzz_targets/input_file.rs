//! Whole input files as `ttp-processor extract` reads them (kind detection included).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, ledgers)) = stellar_ledgers::decode_file(std::path::Path::new("fuzz-input"), data) {
        for lcm in &ledgers {
            common::exercise(lcm);
        }
    }
});
