//! The token-transfer processor: offline extraction to JSONL, and the gRPC component that
//! turns a raw ledger stream into `token_transfer_service.EventService` events.

pub mod config;
pub mod extract;
pub mod flight;
pub mod metrics;
pub mod readiness;
pub mod registration;
pub mod server;
pub mod service;
pub mod upstream;
