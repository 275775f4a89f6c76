//! The ledger source: serves `raw_ledger_service.RawLedgerService` from one of three
//! backends (a Galexie data lake, Stellar RPC, or the synthetic generator).

pub mod config;
pub mod datalake;
pub mod flight;
pub mod metrics;
pub mod rpc;
pub mod server;
pub mod synthetic;

use flowctl_proto::raw_ledger_service::RawLedger;

/// Why a backend could not deliver ledgers.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("data lake {url}: {message}")]
    DataLake { url: String, message: String },
    #[error("data lake object {key}: {message}")]
    Object { key: String, message: String },
    #[error("Stellar RPC {endpoint}: {message}")]
    Rpc { endpoint: String, message: String },
    #[error("ledger {seq}: {message}")]
    Ledger { seq: u32, message: String },
    /// The ledger's data is there but does not decode: asking again will not help.
    #[error("ledger {seq}: {message}")]
    Unreadable { seq: u32, message: String },
    #[error("the backend returned ledger {got} where {due} was due")]
    Order { got: u32, due: u32 },
    #[error("synthetic generator: {0}")]
    Synthetic(#[from] stellar_synth::ConfigError),
}

/// Where ledgers come from. An enum rather than a trait object: the set is closed and each
/// variant's `fetch` is an ordinary `async fn`.
pub enum Backend {
    DataLake(datalake::DataLake),
    Rpc(rpc::RpcClient),
    Synthetic(synthetic::Synthetic),
}

impl Backend {
    /// Up to `max` consecutive ledgers from `from` on. Fewer (or none) when the backend's
    /// tip is reached; the caller waits and asks again.
    pub async fn fetch(&self, from: u32, max: u32) -> Result<Vec<RawLedger>, SourceError> {
        match self {
            Backend::DataLake(b) => b.fetch(from, max).await,
            Backend::Rpc(b) => b.fetch(from, max).await,
            Backend::Synthetic(b) => b.fetch(from, max).await,
        }
    }

    /// The newest ledger the backend can serve now, when it knows.
    pub async fn latest(&self) -> Result<Option<u32>, SourceError> {
        match self {
            Backend::DataLake(_) => Ok(None),
            Backend::Rpc(b) => b.latest().await.map(Some),
            Backend::Synthetic(b) => Ok(Some(b.latest())),
        }
    }

    /// How many ledgers one `fetch` should ask for.
    pub fn batch_size(&self) -> u32 {
        match self {
            Backend::DataLake(b) => b.batch_size(),
            Backend::Rpc(_) => rpc::PAGE_LIMIT,
            Backend::Synthetic(_) => 16,
        }
    }
}
