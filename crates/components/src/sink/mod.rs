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
pub mod pg;
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
    /// The store refused the events (a value or a constraint of the table): writing them
    /// again cannot succeed.
    #[error("PostgreSQL rejected the events{}: {message}", of_ledger(*.ledger))]
    Rejected {
        /// The ledger whose events were refused, once the batch was tried ledger by ledger.
        ledger: Option<u32>,
        message: String,
    },
    /// A ledger to set aside could not be recorded as a dead letter.
    #[error("{0}")]
    DeadLetter(String),
    #[error("event service {addr}: {message}")]
    Upstream { addr: String, message: String },
    /// Another copy of this sink claimed its checkpoint row since this one did (a shard
    /// requeued elsewhere while this copy still ran): nothing more may be written by it.
    #[error("{}", fenced(row, *theirs, *mine))]
    Fenced {
        row: String,
        /// The row's epoch now; `None` when the row is gone.
        theirs: Option<i64>,
        mine: i64,
    },
}

impl SinkError {
    /// The process's exit code for this error: [`flowctl_sdk::EXIT_FENCED`] when fenced, so
    /// that flowctl does not restart it, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            SinkError::Fenced { .. } => flowctl_sdk::EXIT_FENCED,
            _ => 1,
        }
    }
}

fn fenced(row: &str, theirs: Option<i64>, mine: i64) -> String {
    let whose = match theirs {
        Some(n) if n > mine => format!("was claimed by a newer copy (epoch {n} > mine {mine})"),
        Some(n) => format!("has epoch {n}, not mine ({mine}): it was changed by hand"),
        None => format!("is gone (mine had epoch {mine}): it was deleted by hand"),
    };
    format!("checkpoint row {row} {whose}: this copy is stale, stopping without writing")
}

fn of_ledger(ledger: Option<u32>) -> String {
    ledger
        .map(|l| format!(" of ledger {l}"))
        .unwrap_or_default()
}
