//! A read-only view of one `LedgerCloseMeta`: its header and its transactions in apply
//! order, each joined with its envelope (the tx set is in a different order, so envelopes
//! are matched by hash under the network id).

use std::collections::HashMap;

use stellar_xdr::{
    GeneralizedTransactionSet, LedgerCloseMeta, LedgerEntryChanges, LedgerHeader, MuxedAccount,
    Operation, OperationResult, TransactionEnvelope, TransactionMeta, TransactionPhase,
    TransactionResultPair, TransactionResultResult, TxSetComponent,
};

use crate::error::TtpError;

/// One applied transaction with everything the event rules read.
pub struct Tx<'a> {
    /// 1-based position in apply order (SEP-35).
    pub index: u32,
    pub hash_hex: String,
    pub envelope: &'a TransactionEnvelope,
    pub result: &'a TransactionResultPair,
    pub meta: &'a TransactionMeta,
    pub fee_changes: &'a LedgerEntryChanges,
    /// Protocol 23+: fee refunds applied after all transactions.
    pub post_apply_fee_changes: Option<&'a LedgerEntryChanges>,
    pub ledger_sequence: u32,
    pub protocol_version: u32,
}

pub fn header(lcm: &LedgerCloseMeta) -> &LedgerHeader {
    match lcm {
        LedgerCloseMeta::V0(m) => &m.ledger_header.header,
        LedgerCloseMeta::V1(m) => &m.ledger_header.header,
        LedgerCloseMeta::V2(m) => &m.ledger_header.header,
    }
}

pub fn sequence(lcm: &LedgerCloseMeta) -> u32 {
    header(lcm).ledger_seq
}

pub fn tx_count(lcm: &LedgerCloseMeta) -> usize {
    match lcm {
        LedgerCloseMeta::V0(m) => m.tx_processing.len(),
        LedgerCloseMeta::V1(m) => m.tx_processing.len(),
        LedgerCloseMeta::V2(m) => m.tx_processing.len(),
    }
}

fn envelopes(lcm: &LedgerCloseMeta) -> Vec<&TransactionEnvelope> {
    let set: &GeneralizedTransactionSet = match lcm {
        LedgerCloseMeta::V0(m) => return m.tx_set.txs.iter().collect(),
        LedgerCloseMeta::V1(m) => &m.tx_set,
        LedgerCloseMeta::V2(m) => &m.tx_set,
    };
    let GeneralizedTransactionSet::V1(set) = set;
    let mut out = Vec::new();
    for phase in set.phases.iter() {
        match phase {
            TransactionPhase::V0(components) => {
                for c in components.iter() {
                    let TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) = c;
                    out.extend(c.txs.iter());
                }
            }
            TransactionPhase::V1(parallel) => {
                for stage in parallel.execution_stages.iter() {
                    for cluster in stage.0.iter() {
                        out.extend(cluster.0.iter());
                    }
                }
            }
        }
    }
    out
}

fn meta_version(meta: &TransactionMeta) -> u32 {
    match meta {
        TransactionMeta::V0(_) => 0,
        TransactionMeta::V1(_) => 1,
        TransactionMeta::V2(_) => 2,
        TransactionMeta::V3(_) => 3,
        TransactionMeta::V4(_) => 4,
    }
}

/// The transactions of a ledger in apply order.
pub fn transactions<'a>(
    lcm: &'a LedgerCloseMeta,
    network_id: &[u8; 32],
) -> Result<Vec<Tx<'a>>, TtpError> {
    let hdr = header(lcm);
    let ledger = hdr.ledger_seq;
    let protocol = hdr.ledger_version;
    let mut by_hash: HashMap<[u8; 32], &TransactionEnvelope> = HashMap::new();
    for (index, env) in envelopes(lcm).into_iter().enumerate() {
        let hash = env
            .hash(*network_id)
            .map_err(|source| TtpError::HashEnvelope {
                ledger,
                index,
                source,
            })?;
        by_hash.insert(hash, env);
    }

    type Parts<'a> = (
        &'a TransactionResultPair,
        &'a LedgerEntryChanges,
        &'a TransactionMeta,
        Option<&'a LedgerEntryChanges>,
    );
    let parts: Vec<Parts<'a>> = match lcm {
        LedgerCloseMeta::V0(m) => m
            .tx_processing
            .iter()
            .map(|p| (&p.result, &p.fee_processing, &p.tx_apply_processing, None))
            .collect(),
        LedgerCloseMeta::V1(m) => m
            .tx_processing
            .iter()
            .map(|p| (&p.result, &p.fee_processing, &p.tx_apply_processing, None))
            .collect(),
        LedgerCloseMeta::V2(m) => m
            .tx_processing
            .iter()
            .map(|p| {
                (
                    &p.result,
                    &p.fee_processing,
                    &p.tx_apply_processing,
                    Some(&p.post_tx_apply_fee_processing),
                )
            })
            .collect(),
    };

    // Before protocol 10 the meta of old cores lacked the data fee and operation
    // changes need; such ledgers must be re-ingested with a newer core.
    if protocol < 10 {
        for (_, fee, meta, _) in &parts {
            let v = meta_version(meta);
            if v < 2 && !fee.is_empty() {
                return Err(TtpError::BadMetaVersion {
                    ledger,
                    version: v,
                    protocol,
                });
            }
        }
    }

    let mut txs = Vec::with_capacity(parts.len());
    for (i, (result, fee_changes, meta, post)) in parts.into_iter().enumerate() {
        let hash = result.transaction_hash.0;
        let Some(envelope) = by_hash.get(&hash) else {
            return Err(TtpError::UnknownTxHash {
                ledger,
                index: i + 1,
                hash: hex(&hash),
            });
        };
        txs.push(Tx {
            index: (i + 1) as u32,
            hash_hex: hex(&hash),
            envelope,
            result,
            meta,
            fee_changes,
            post_apply_fee_changes: post,
            ledger_sequence: ledger,
            protocol_version: protocol,
        });
    }
    Ok(txs)
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

impl<'a> Tx<'a> {
    /// The account paying the fee: the fee-bump source for fee-bump transactions.
    pub fn fee_account(&self) -> MuxedAccount {
        match self.envelope {
            TransactionEnvelope::TxV0(e) => {
                MuxedAccount::Ed25519(e.tx.source_account_ed25519.clone())
            }
            TransactionEnvelope::Tx(e) => e.tx.source_account.clone(),
            TransactionEnvelope::TxFeeBump(e) => e.tx.fee_source.clone(),
        }
    }

    /// The (inner) transaction's source account.
    pub fn source_account(&self) -> MuxedAccount {
        match self.envelope {
            TransactionEnvelope::TxV0(e) => {
                MuxedAccount::Ed25519(e.tx.source_account_ed25519.clone())
            }
            TransactionEnvelope::Tx(e) => e.tx.source_account.clone(),
            TransactionEnvelope::TxFeeBump(e) => {
                let stellar_xdr::FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                inner.tx.source_account.clone()
            }
        }
    }

    pub fn operations(&self) -> &'a [Operation] {
        match self.envelope {
            TransactionEnvelope::TxV0(e) => &e.tx.operations,
            TransactionEnvelope::Tx(e) => &e.tx.operations,
            TransactionEnvelope::TxFeeBump(e) => {
                let stellar_xdr::FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                &inner.tx.operations
            }
        }
    }

    pub fn memo(&self) -> &'a stellar_xdr::Memo {
        match self.envelope {
            TransactionEnvelope::TxV0(e) => &e.tx.memo,
            TransactionEnvelope::Tx(e) => &e.tx.memo,
            TransactionEnvelope::TxFeeBump(e) => {
                let stellar_xdr::FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                &inner.tx.memo
            }
        }
    }

    pub fn seq_num(&self) -> i64 {
        match self.envelope {
            TransactionEnvelope::TxV0(e) => e.tx.seq_num.0,
            TransactionEnvelope::Tx(e) => e.tx.seq_num.0,
            TransactionEnvelope::TxFeeBump(e) => {
                let stellar_xdr::FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                inner.tx.seq_num.0
            }
        }
    }

    /// Soroban transactions carry resource data in their (inner) transaction ext.
    pub fn is_soroban(&self) -> bool {
        let ext = match self.envelope {
            TransactionEnvelope::TxV0(_) => return false,
            TransactionEnvelope::Tx(e) => &e.tx.ext,
            TransactionEnvelope::TxFeeBump(e) => {
                let stellar_xdr::FeeBumpTransactionInnerTx::Tx(inner) = &e.tx.inner_tx;
                &inner.tx.ext
            }
        };
        matches!(ext, stellar_xdr::TransactionExt::V1(_))
    }

    pub fn successful(&self) -> bool {
        matches!(
            self.result.result.result,
            TransactionResultResult::TxSuccess(_)
                | TransactionResultResult::TxFeeBumpInnerSuccess(_)
        )
    }

    pub fn internal_error(&self) -> bool {
        matches!(
            self.result.result.result,
            TransactionResultResult::TxInternalError
        )
    }

    pub fn operation_results(&self) -> &'a [OperationResult] {
        use stellar_xdr::InnerTransactionResultResult as Inner;
        match &self.result.result.result {
            TransactionResultResult::TxSuccess(r) | TransactionResultResult::TxFailed(r) => r,
            TransactionResultResult::TxFeeBumpInnerSuccess(p)
            | TransactionResultResult::TxFeeBumpInnerFailed(p) => match &p.result.result {
                Inner::TxSuccess(r) | Inner::TxFailed(r) => r,
                _ => &[],
            },
            _ => &[],
        }
    }

    pub fn meta_version(&self) -> u32 {
        meta_version(self.meta)
    }

    /// The ledger entry changes an operation made; empty when the meta has none for it.
    pub fn operation_changes(
        &self,
        op_index: u32,
    ) -> Result<&'a [stellar_xdr::LedgerEntryChange], String> {
        if self.internal_error() && self.protocol_version <= 12 {
            return Ok(&[]);
        }
        let i = op_index as usize;
        let changes: Option<&'a LedgerEntryChanges> = match self.meta {
            TransactionMeta::V0(_) => return Err("TransactionMeta.V=0 not supported".into()),
            TransactionMeta::V1(m) => m.operations.get(i).map(|o| &o.changes),
            TransactionMeta::V2(m) => m.operations.get(i).map(|o| &o.changes),
            TransactionMeta::V3(m) => m.operations.get(i).map(|o| &o.changes),
            TransactionMeta::V4(m) => m.operations.get(i).map(|o| &o.changes),
        };
        Ok(changes.map(|c| &c.0[..]).unwrap_or(&[]))
    }

    /// Contract events of an operation (TxMeta V3 keeps them per transaction).
    pub fn contract_events(
        &self,
        op_index: u32,
    ) -> Result<&'a [stellar_xdr::ContractEvent], String> {
        Ok(match self.meta {
            TransactionMeta::V0(_) => return Err("unsupported TransactionMeta version: 0".into()),
            TransactionMeta::V1(_) | TransactionMeta::V2(_) => &[],
            TransactionMeta::V3(m) => m.soroban_meta.as_ref().map_or(&[][..], |s| &s.events[..]),
            TransactionMeta::V4(m) => m
                .operations
                .get(op_index as usize)
                .map_or(&[][..], |o| &o.events[..]),
        })
    }

    /// The transaction's own (not fee) change groups: before, each operation, after.
    pub fn change_groups(&self) -> Result<Vec<&'a [stellar_xdr::LedgerEntryChange]>, String> {
        let skip_ops = self.internal_error() && self.protocol_version <= 12;
        let mut out: Vec<&'a [stellar_xdr::LedgerEntryChange]> = Vec::new();
        macro_rules! groups {
            ($before:expr, $ops:expr, $after:expr) => {{
                out.push(&$before.0[..]);
                if !skip_ops {
                    for op in $ops.iter() {
                        out.push(&op.changes.0[..]);
                    }
                    if let Some(after) = $after {
                        out.push(&after.0[..]);
                    }
                }
            }};
        }
        match self.meta {
            TransactionMeta::V0(_) => return Err("TransactionMeta.V=0 not supported".into()),
            TransactionMeta::V1(m) => {
                groups!(m.tx_changes, m.operations, None::<&LedgerEntryChanges>)
            }
            TransactionMeta::V2(m) => {
                groups!(m.tx_changes_before, m.operations, Some(&m.tx_changes_after))
            }
            TransactionMeta::V3(m) => {
                groups!(m.tx_changes_before, m.operations, Some(&m.tx_changes_after))
            }
            TransactionMeta::V4(m) => {
                groups!(m.tx_changes_before, m.operations, Some(&m.tx_changes_after))
            }
        }
        Ok(out)
    }

    pub fn tx_changes_after(&self) -> Option<&'a LedgerEntryChanges> {
        match self.meta {
            TransactionMeta::V3(m) => Some(&m.tx_changes_after),
            TransactionMeta::V4(m) => Some(&m.tx_changes_after),
            _ => None,
        }
    }
}
