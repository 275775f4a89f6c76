//! Soroban contract data: `contract-data-processor` turns a raw ledger stream into the
//! contract-data changes of `stellar-contract-data`, served as an Arrow Flight and as
//! `contract_data.ContractDataService`; `contract-data-sink` writes the Flight into
//! PostgreSQL.

pub mod batches;
pub mod metrics;
pub mod postgres;
pub mod proto;
pub mod service;
