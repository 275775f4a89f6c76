//! Token-transfer events (transfer, mint, burn, clawback, fee) from Stellar ledgers, with
//! the semantics of CAP-67 and SEP-41 as Stellar's reference processor derives them:
//! from operations, their results and the ledger entry changes, for every protocol.
//!
//! Pure: no I/O. Give it decoded `LedgerCloseMeta`s and a network passphrase.

mod balances;
pub mod changes;
mod contract_events;
mod error;
mod events;
mod fees;
pub mod json;
mod keys;
mod ledger;
mod operations;
mod processor;
mod verify;

pub use error::TtpError;
pub use flowctl_proto::token_transfer::TokenTransferEvent;
pub use json::{to_json, write_json};
pub use keys::{network_id, sac_contract_id, Party};
pub use processor::{event_asset, EventsProcessor};
pub use verify::{verify_events, VerifyError};

/// The sequence number of a ledger.
pub fn ledger_sequence(lcm: &stellar_xdr::LedgerCloseMeta) -> u32 {
    ledger::sequence(lcm)
}

/// How many transactions a ledger applied.
pub fn transaction_count(lcm: &stellar_xdr::LedgerCloseMeta) -> usize {
    ledger::tx_count(lcm)
}
