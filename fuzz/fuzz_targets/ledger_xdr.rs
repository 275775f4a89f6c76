//! Raw bytes as the component receives them from a ledger source.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stellar_xdr::{LedgerCloseMeta, Limits, ReadXdr};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { depth: 500, len: data.len() };
    if let Ok(lcm) = LedgerCloseMeta::from_xdr(data, limits) {
        common::exercise(&lcm);
    }
});
