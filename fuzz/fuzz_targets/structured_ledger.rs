//! Structurally valid ledgers with arbitrary content, to reach the event rules that random
//! bytes rarely decode into.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stellar_xdr::LedgerCloseMeta;

#[path = "common.rs"]
mod common;

fuzz_target!(|lcm: LedgerCloseMeta| {
    common::exercise(&lcm);
});
