//! Why a ledger could not be turned into events.

/// A ledger the processor cannot derive events from. The reference implementation
/// fails the whole ledger in these cases too, so callers can count and skip it.
#[derive(Debug, thiserror::Error)]
pub enum TtpError {
    #[error("ledger {ledger}: transaction {index} has hash {hash} that matches no envelope in the tx set (wrong network passphrase?)")]
    UnknownTxHash {
        ledger: u32,
        index: usize,
        hash: String,
    },

    #[error("ledger {ledger}: could not hash envelope {index} of the tx set: {source}")]
    HashEnvelope {
        ledger: u32,
        index: usize,
        source: stellar_xdr::Error,
    },

    #[error("ledger {ledger}: transaction meta V{version} is too old for protocol {protocol} (V2 or later is required before protocol 10)")]
    BadMetaVersion {
        ledger: u32,
        version: u32,
        protocol: u32,
    },

    #[error("ledger {ledger}, tx {tx_hash}: {message}")]
    Transaction {
        ledger: u32,
        tx_hash: String,
        message: String,
    },

    #[error("ledger {ledger}, tx {tx_hash}, operation {op_index} ({op_type}): {message}")]
    Operation {
        ledger: u32,
        tx_hash: String,
        op_index: u32,
        op_type: &'static str,
        message: String,
    },
}
