//! Soroban contract-data changes from Stellar ledgers: one record per change of a
//! `CONTRACT_DATA` ledger entry (created, updated, removed, evicted, restored), in ledger
//! order, with the columns of stellar-etl's contract-data output — the contract, the key and
//! value (XDR and JSON), the entry's durability and TTL, and where the entry is a Stellar
//! Asset Contract's, its asset or a holder's balance.
//!
//! Pure: no I/O. Give it decoded `LedgerCloseMeta`s and the network passphrase (which the
//! Stellar Asset Contracts' ids derive from).

mod extract;
mod filter;
mod record;
mod sac;

pub use extract::{ExtractError, Extractor};
pub use filter::{Filter, FilterError};
pub use record::{ChangeType, ContractDataChange};
