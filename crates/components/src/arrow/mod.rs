//! The Arrow data plane: ledgers and token-transfer events as Arrow record batches served
//! over Arrow Flight, shared by `stellar-arrow-source`, `ttp-arrow-processor` and
//! `arrow-analytics-sink`.
//!
//! A flight is a range of ledgers. Its batches never split a ledger, so a reader that lost
//! its stream asks again from the ledger after the last one it has whole.

pub mod events;
pub mod flight;
pub mod ledgers;
pub mod ticket;
