//! The sinks of `ttp-sink`: read `EventService.GetTTPEvents` and write the events to the
//! console, a JSON-lines file (with a sidecar checkpoint), or PostgreSQL (idempotent, with a
//! checkpoint).

pub mod checkpoint;
pub mod driver;
pub mod fields;
pub mod health;
pub mod jsonl_file;
pub mod metrics;
pub mod output;
pub mod postgres;

use flowctl_proto::token_transfer::TokenTransferEvent;

/// The events of one ledger, all of them, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEvents {
    pub ledger: u32,
    pub events: Vec<TokenTransferEvent>,
}

/// Why a sink could not write.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("event service {addr}: {message}")]
    Upstream { addr: String, message: String },
}
