//! Walks a ledger's changes in the order they were applied and keeps those of
//! `CONTRACT_DATA` entries: each transaction's fee, meta (before, per operation, after) and
//! post-apply fee changes in apply order, then the ledger's evictions, then its upgrades —
//! the order of Stellar's `LedgerChangeReader`.

use std::collections::HashMap;

use base64::Engine;
use sha2::{Digest, Sha256};
use stellar_ttp::changes::{pair, ChangeKind};
use stellar_xdr::{
    ContractDataDurability, ContractDataEntry, LedgerCloseMeta, LedgerEntry, LedgerEntryChange,
    LedgerEntryData, LedgerHeader, LedgerKey, LedgerKeyContractData, Limits, ScAddress, ScVal,
    TransactionMeta, WriteXdr,
};

use crate::record::{ChangeType, ContractDataChange};
use crate::sac;

/// Why a ledger's contract-data changes cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("ledger {ledger}: {message}")]
pub struct ExtractError {
    pub ledger: u32,
    pub message: String,
}

/// Extracts the contract-data changes of ledgers of one network.
#[derive(Clone, Debug)]
pub struct Extractor {
    network_id: [u8; 32],
}

/// Where a change comes from.
#[derive(Clone, Copy)]
enum Origin {
    Tx {
        index: u32,
        hash: [u8; 32],
        operation: Option<u32>,
    },
    /// The ledger itself: its eviction scan or an upgrade.
    Ledger,
}

enum Subject<'a> {
    Entry(&'a LedgerEntry, &'a ContractDataEntry),
    Evicted(&'a LedgerKeyContractData),
}

struct Found<'a> {
    change: ChangeType,
    subject: Subject<'a>,
    origin: Origin,
}

/// The contract-data changes of one ledger and the TTLs it set, in apply order.
#[derive(Default)]
struct Walk<'a> {
    found: Vec<Found<'a>>,
    /// The last `live_until_ledger_seq` the ledger gave each key hash; `None` once removed.
    ttl: HashMap<[u8; 32], Option<u32>>,
}

impl<'a> Walk<'a> {
    fn group(&mut self, raw: &'a [LedgerEntryChange], origin: Origin) -> Result<(), String> {
        // Most groups touch accounts and trustlines only: pair none of them.
        if !raw.iter().any(|c| soroban_entry(change_entry(c))) {
            return Ok(());
        }
        for c in pair(raw)? {
            let entry = c.typed_entry();
            match &entry.data {
                LedgerEntryData::ContractData(_) => {
                    let change = match c.kind {
                        ChangeKind::Created => ChangeType::Created,
                        ChangeKind::Updated => ChangeType::Updated,
                        ChangeKind::Removed => ChangeType::Removed,
                        ChangeKind::Restored => ChangeType::Restored,
                    };
                    // A removal shows the entry as it was; the others as it is now.
                    let shown = c.post.unwrap_or(entry);
                    let LedgerEntryData::ContractData(data) = &shown.data else {
                        return Err("a contract-data entry changed into another type".into());
                    };
                    self.found.push(Found {
                        change,
                        subject: Subject::Entry(shown, data),
                        origin,
                    });
                }
                LedgerEntryData::Ttl(t) => {
                    let live_until = match c.post.map(|p| &p.data) {
                        Some(LedgerEntryData::Ttl(now)) => Some(now.live_until_ledger_seq),
                        _ => None,
                    };
                    self.ttl.insert(t.key_hash.0, live_until);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn change_entry(c: &LedgerEntryChange) -> Option<&LedgerEntry> {
    match c {
        LedgerEntryChange::Created(e)
        | LedgerEntryChange::Updated(e)
        | LedgerEntryChange::State(e)
        | LedgerEntryChange::Restored(e) => Some(e),
        LedgerEntryChange::Removed(_) => None,
    }
}

fn soroban_entry(e: Option<&LedgerEntry>) -> bool {
    matches!(
        e.map(|e| &e.data),
        Some(LedgerEntryData::ContractData(_) | LedgerEntryData::Ttl(_))
    )
}

fn header(lcm: &LedgerCloseMeta) -> &LedgerHeader {
    match lcm {
        LedgerCloseMeta::V0(m) => &m.ledger_header.header,
        LedgerCloseMeta::V1(m) => &m.ledger_header.header,
        LedgerCloseMeta::V2(m) => &m.ledger_header.header,
    }
}

/// A transaction's meta as (before, per operation, after) groups.
fn meta_groups(meta: &TransactionMeta) -> Vec<(&[LedgerEntryChange], Option<u32>)> {
    fn ops<'m>(
        changes: impl Iterator<Item = &'m [LedgerEntryChange]>,
    ) -> impl Iterator<Item = (&'m [LedgerEntryChange], Option<u32>)> {
        changes.enumerate().map(|(i, c)| (c, Some(i as u32 + 1)))
    }
    let mut out = Vec::new();
    match meta {
        TransactionMeta::V0(operations) => {
            out.extend(ops(operations.iter().map(|o| &o.changes[..])));
        }
        TransactionMeta::V1(m) => {
            out.push((&m.tx_changes[..], None));
            out.extend(ops(m.operations.iter().map(|o| &o.changes[..])));
        }
        TransactionMeta::V2(m) => {
            out.push((&m.tx_changes_before[..], None));
            out.extend(ops(m.operations.iter().map(|o| &o.changes[..])));
            out.push((&m.tx_changes_after[..], None));
        }
        TransactionMeta::V3(m) => {
            out.push((&m.tx_changes_before[..], None));
            out.extend(ops(m.operations.iter().map(|o| &o.changes[..])));
            out.push((&m.tx_changes_after[..], None));
        }
        TransactionMeta::V4(m) => {
            out.push((&m.tx_changes_before[..], None));
            out.extend(ops(m.operations.iter().map(|o| &o.changes[..])));
            out.push((&m.tx_changes_after[..], None));
        }
    }
    out
}

impl Extractor {
    pub fn new(passphrase: &str) -> Self {
        Extractor {
            network_id: stellar_ttp::network_id(passphrase),
        }
    }

    /// Every contract-data change of the ledger, in apply order, unfiltered.
    pub fn changes(&self, lcm: &LedgerCloseMeta) -> Result<Vec<ContractDataChange>, ExtractError> {
        let hdr = header(lcm);
        let ledger = hdr.ledger_seq;
        let fail = |message: String| ExtractError { ledger, message };
        let mut walk = Walk::default();
        // (result's tx hash, fee changes, meta, post-apply fee changes) in apply order.
        type Parts<'a> = (
            &'a [u8; 32],
            &'a [LedgerEntryChange],
            &'a TransactionMeta,
            Option<&'a [LedgerEntryChange]>,
        );
        let parts: Vec<Parts<'_>> = match lcm {
            LedgerCloseMeta::V0(m) => m
                .tx_processing
                .iter()
                .map(|p| {
                    let h = &p.result.transaction_hash.0;
                    (h, &p.fee_processing[..], &p.tx_apply_processing, None)
                })
                .collect(),
            LedgerCloseMeta::V1(m) => m
                .tx_processing
                .iter()
                .map(|p| {
                    let h = &p.result.transaction_hash.0;
                    (h, &p.fee_processing[..], &p.tx_apply_processing, None)
                })
                .collect(),
            LedgerCloseMeta::V2(m) => m
                .tx_processing
                .iter()
                .map(|p| {
                    let h = &p.result.transaction_hash.0;
                    let post = Some(&p.post_tx_apply_fee_processing[..]);
                    (h, &p.fee_processing[..], &p.tx_apply_processing, post)
                })
                .collect(),
        };
        for (i, (hash, fee, meta, post)) in parts.into_iter().enumerate() {
            let tx = |operation| Origin::Tx {
                index: i as u32 + 1,
                hash: *hash,
                operation,
            };
            let context = |e: String| fail(format!("transaction {}: {e}", i + 1));
            walk.group(fee, tx(None)).map_err(context)?;
            for (group, operation) in meta_groups(meta) {
                walk.group(group, tx(operation)).map_err(context)?;
            }
            if let Some(post) = post {
                walk.group(post, tx(None)).map_err(context)?;
            }
        }
        let (evicted, upgrades) = match lcm {
            LedgerCloseMeta::V0(m) => (&[][..], &m.upgrades_processing[..]),
            LedgerCloseMeta::V1(m) => (&m.evicted_keys[..], &m.upgrades_processing[..]),
            LedgerCloseMeta::V2(m) => (&m.evicted_keys[..], &m.upgrades_processing[..]),
        };
        for key in evicted {
            match key {
                LedgerKey::ContractData(k) => walk.found.push(Found {
                    change: ChangeType::Removed,
                    subject: Subject::Evicted(k),
                    origin: Origin::Ledger,
                }),
                // An evicted entry's TTL goes with it.
                LedgerKey::Ttl(t) => {
                    walk.ttl.insert(t.key_hash.0, None);
                }
                _ => {}
            }
        }
        for upgrade in upgrades {
            walk.group(&upgrade.changes, Origin::Ledger)
                .map_err(|e| fail(format!("upgrade: {e}")))?;
        }

        let closed_at = hdr.scp_value.close_time.0;
        let mut out = Vec::with_capacity(walk.found.len());
        for (index, f) in walk.found.iter().enumerate() {
            let record = self
                .record(ledger, closed_at, index as u32, f, &walk.ttl)
                .map_err(fail)?;
            out.push(record);
        }
        Ok(out)
    }

    fn record(
        &self,
        ledger: u32,
        closed_at: u64,
        change_index: u32,
        found: &Found<'_>,
        ttl: &HashMap<[u8; 32], Option<u32>>,
    ) -> Result<ContractDataChange, String> {
        let (contract, key, durability, val, last_modified) = match found.subject {
            Subject::Entry(entry, d) => (
                &d.contract,
                &d.key,
                d.durability,
                Some(&d.val),
                Some(entry.last_modified_ledger_seq),
            ),
            Subject::Evicted(k) => (&k.contract, &k.key, k.durability, None, None),
        };
        let key_bytes = xdr(key, "key")?;
        let key_hash = ledger_key_hash(contract, &key_bytes, durability)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let json = |v: &ScVal| serde_json::to_string(v).map_err(|e| format!("ScVal as JSON: {e}"));

        let mut r = ContractDataChange {
            ledger_sequence: ledger,
            closed_at,
            change_index,
            change_type: found.change,
            deleted: found.change == ChangeType::Removed,
            evicted: matches!(found.subject, Subject::Evicted(_)),
            contract_id: contract.to_string(),
            contract_key_type: format!("ScValTypeScv{}", key.discriminant().name()),
            contract_durability: match durability {
                ContractDataDurability::Persistent => "ContractDataDurabilityPersistent",
                ContractDataDurability::Temporary => "ContractDataDurabilityTemporary",
            },
            asset_code: None,
            asset_issuer: None,
            asset_type: None,
            balance_holder: None,
            balance: None,
            last_modified_ledger: last_modified,
            ledger_key_hash: hex(&key_hash),
            key_xdr: b64.encode(&key_bytes),
            val_xdr: None,
            key: json(key)?,
            val: None,
            contract_instance_type: None,
            contract_instance_wasm_hash: None,
            expiration_ledger_seq: ttl.get(&key_hash).copied().flatten(),
            tx_hash: None,
            transaction_index: None,
            operation_index: None,
        };
        if let Origin::Tx {
            index,
            hash,
            operation,
        } = found.origin
        {
            r.tx_hash = Some(hex(&hash));
            r.transaction_index = Some(index);
            r.operation_index = operation;
        }
        if let Some(val) = val {
            r.val_xdr = Some(b64.encode(xdr(val, "value")?));
            r.val = Some(json(val)?);
            if let ScVal::ContractInstance(instance) = val {
                r.contract_instance_type = Some(format!(
                    "ContractExecutableTypeContractExecutable{}",
                    instance.executable.name()
                ));
                if let stellar_xdr::ContractExecutable::Wasm(h) = &instance.executable {
                    r.contract_instance_wasm_hash = Some(hex(&h.0));
                }
            }
            if let (ScVal::LedgerKeyContractInstance, ScAddress::Contract(id)) = (key, contract) {
                if let Some(asset) = sac::instance_asset(&self.network_id, &id.0 .0, val) {
                    let (code, issuer, kind) = sac::asset_columns(&asset);
                    (r.asset_code, r.asset_issuer, r.asset_type) = (code, issuer, Some(kind));
                }
            }
            if let Some((holder, amount)) = sac::balance(key, val) {
                r.balance_holder = Some(holder);
                r.balance = Some(amount.to_string());
            }
        }
        Ok(r)
    }
}

fn xdr(v: &ScVal, what: &str) -> Result<Vec<u8>, String> {
    v.to_xdr(Limits::none())
        .map_err(|e| format!("cannot encode the entry's {what}: {e}"))
}

/// SHA-256 of `LedgerKey::ContractData{contract, key, durability}`'s XDR, written from its
/// parts so that the key is neither cloned nor encoded twice.
fn ledger_key_hash(
    contract: &ScAddress,
    key_xdr: &[u8],
    durability: ContractDataDurability,
) -> Result<[u8; 32], String> {
    let mut h = Sha256::new();
    h.update((stellar_xdr::LedgerEntryType::ContractData as i32).to_be_bytes());
    h.update(
        contract
            .to_xdr(Limits::none())
            .map_err(|e| format!("cannot encode the entry's contract: {e}"))?,
    );
    h.update(key_xdr);
    h.update((durability as i32).to_be_bytes());
    Ok(h.finalize().into())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_hash_is_the_hash_of_the_whole_ledger_keys_xdr() {
        let k = LedgerKeyContractData {
            contract: ScAddress::Contract(stellar_xdr::ContractId(stellar_xdr::Hash([3; 32]))),
            key: ScVal::LedgerKeyContractInstance,
            durability: ContractDataDurability::Persistent,
        };
        let whole = LedgerKey::ContractData(k.clone())
            .to_xdr(Limits::none())
            .unwrap();
        let want: [u8; 32] = Sha256::digest(&whole).into();
        let got = ledger_key_hash(&k.contract, &xdr(&k.key, "key").unwrap(), k.durability);
        assert_eq!(got.unwrap(), want);
        let temp = ledger_key_hash(
            &k.contract,
            &xdr(&k.key, "key").unwrap(),
            ContractDataDurability::Temporary,
        );
        assert_ne!(temp.unwrap(), want);
    }
}
