//! Token-transfer events from Stellar ledgers, with the semantics of stellar/go processors/token_transfer.
