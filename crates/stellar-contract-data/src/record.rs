//! One contract-data change, with the columns stellar-etl's contract-data output has.

use serde::Serialize;

/// What happened to the entry, with the XDR `LedgerEntryChangeType` number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeType {
    Created,
    Updated,
    Removed,
    Restored,
}

impl ChangeType {
    /// `LedgerEntryChangeType`: CREATED 0, UPDATED 1, REMOVED 2, (STATE 3), RESTORED 4.
    pub fn xdr(self) -> u32 {
        match self {
            ChangeType::Created => 0,
            ChangeType::Updated => 1,
            ChangeType::Removed => 2,
            ChangeType::Restored => 4,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Created => "created",
            ChangeType::Updated => "updated",
            ChangeType::Removed => "removed",
            ChangeType::Restored => "restored",
        }
    }

    pub fn from_xdr(n: u32) -> Option<Self> {
        Some(match n {
            0 => ChangeType::Created,
            1 => ChangeType::Updated,
            2 => ChangeType::Removed,
            4 => ChangeType::Restored,
            _ => return None,
        })
    }
}

/// A change of one `CONTRACT_DATA` entry. `(ledger_key_hash, ledger_sequence, change_index)`
/// is unique: an entry may change several times in one ledger (once per transaction that
/// writes it), and `change_index` is its position among the ledger's contract-data changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractDataChange {
    pub ledger_sequence: u32,
    /// The ledger's close time, seconds since the Unix epoch.
    pub closed_at: u64,
    /// Position among all contract-data changes of the ledger (before any filter), from 0.
    pub change_index: u32,
    pub change_type: ChangeType,
    /// The entry is gone from the live state after this change (removed or evicted).
    pub deleted: bool,
    /// Removed by the ledger's eviction scan (its TTL ran out), not by a transaction.
    pub evicted: bool,
    /// The contract whose storage this is (`C…`).
    pub contract_id: String,
    /// The key's `ScValType` as Go prints it, e.g. `ScValTypeScvLedgerKeyContractInstance`.
    pub contract_key_type: String,
    /// `ContractDataDurabilityPersistent` or `ContractDataDurabilityTemporary`.
    pub contract_durability: &'static str,
    /// On a Stellar Asset Contract's instance entry: its asset.
    pub asset_code: Option<String>,
    pub asset_issuer: Option<String>,
    /// `native`, `credit_alphanum4` or `credit_alphanum12`.
    pub asset_type: Option<&'static str>,
    /// On a Stellar Asset Contract balance entry: whose balance, and how much (i128, in
    /// stroops, as a decimal string: never truncated).
    pub balance_holder: Option<String>,
    pub balance: Option<String>,
    /// `None` for an evicted entry: the ledger names only its key.
    pub last_modified_ledger: Option<u32>,
    /// Hex SHA-256 of the entry's `LedgerKey` XDR (what its TTL entry is keyed by).
    pub ledger_key_hash: String,
    /// Base64 XDR of the key and value `ScVal`s.
    pub key_xdr: String,
    pub val_xdr: Option<String>,
    /// The key and value as JSON, in stellar-xdr's serde form.
    pub key: String,
    pub val: Option<String>,
    /// On a contract instance entry: `ContractExecutableTypeContractExecutableWasm` or
    /// `…StellarAsset`, and the Wasm's hash (hex).
    pub contract_instance_type: Option<String>,
    pub contract_instance_wasm_hash: Option<String>,
    /// The entry's TTL (`live_until_ledger_seq`) where this ledger set it; `None` when the
    /// ledger did not touch the TTL.
    pub expiration_ledger_seq: Option<u32>,
    /// The transaction that made the change (hex hash, 1-based apply order), and its
    /// operation (1-based) when an operation did; none for evictions and upgrades.
    pub tx_hash: Option<String>,
    pub transaction_index: Option<u32>,
    pub operation_index: Option<u32>,
}

#[derive(Serialize)]
struct Line<'a> {
    ledger_sequence: u32,
    closed_at: String,
    change_index: u32,
    ledger_entry_change: u32,
    change_type: ChangeType,
    deleted: bool,
    evicted: bool,
    contract_id: &'a str,
    contract_key_type: &'a str,
    contract_durability: &'a str,
    asset_code: Option<&'a str>,
    asset_issuer: Option<&'a str>,
    asset_type: Option<&'a str>,
    balance_holder: Option<&'a str>,
    balance: Option<&'a str>,
    last_modified_ledger: Option<u32>,
    ledger_key_hash: &'a str,
    key_xdr: &'a str,
    val_xdr: Option<&'a str>,
    key: &'a serde_json::value::RawValue,
    val: Option<&'a serde_json::value::RawValue>,
    contract_instance_type: Option<&'a str>,
    contract_instance_wasm_hash: Option<&'a str>,
    expiration_ledger_seq: Option<u32>,
    tx_hash: Option<&'a str>,
    transaction_index: Option<u32>,
    operation_index: Option<u32>,
}

/// RFC 3339 UTC, as the token-transfer events write it.
pub fn rfc3339(seconds: u64) -> String {
    stellar_ttp::json::timestamp(&prost_types::Timestamp {
        seconds: seconds as i64,
        nanos: 0,
    })
}

fn raw(json: &str) -> &serde_json::value::RawValue {
    // Made by serde_json from an ScVal, so it is JSON; `null` only if that ever failed.
    serde_json::from_str(json)
        .unwrap_or_else(|_| serde_json::from_str("null").expect("null is JSON"))
}

impl ContractDataChange {
    /// The record as one JSON object: every column, `null` where it has no value, `key` and
    /// `val` as JSON values.
    pub fn to_json(&self) -> String {
        let line = Line {
            ledger_sequence: self.ledger_sequence,
            closed_at: rfc3339(self.closed_at),
            change_index: self.change_index,
            ledger_entry_change: self.change_type.xdr(),
            change_type: self.change_type,
            deleted: self.deleted,
            evicted: self.evicted,
            contract_id: &self.contract_id,
            contract_key_type: &self.contract_key_type,
            contract_durability: self.contract_durability,
            asset_code: self.asset_code.as_deref(),
            asset_issuer: self.asset_issuer.as_deref(),
            asset_type: self.asset_type,
            balance_holder: self.balance_holder.as_deref(),
            balance: self.balance.as_deref(),
            last_modified_ledger: self.last_modified_ledger,
            ledger_key_hash: &self.ledger_key_hash,
            key_xdr: &self.key_xdr,
            val_xdr: self.val_xdr.as_deref(),
            key: raw(&self.key),
            val: self.val.as_deref().map(raw),
            contract_instance_type: self.contract_instance_type.as_deref(),
            contract_instance_wasm_hash: self.contract_instance_wasm_hash.as_deref(),
            expiration_ledger_seq: self.expiration_ledger_seq,
            tx_hash: self.tx_hash.as_deref(),
            transaction_index: self.transaction_index,
            operation_index: self.operation_index,
        };
        serde_json::to_string(&line).expect("a record always serialises")
    }
}
