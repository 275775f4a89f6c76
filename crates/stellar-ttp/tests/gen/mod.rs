//! Builds small, internally consistent ledgers for semantics the fixtures lack.
#![allow(dead_code)]

use stellar_xdr::*;

pub const NET: &str = "Test SDF Network ; September 2015";

pub fn key(n: u8) -> [u8; 32] {
    [n; 32]
}

pub fn acct(n: u8) -> AccountId {
    AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key(n))))
}

pub fn g(n: u8) -> String {
    stellar_strkey::ed25519::PublicKey(key(n)).to_string()
}

pub fn mux(n: u8) -> MuxedAccount {
    MuxedAccount::Ed25519(Uint256(key(n)))
}

pub fn credit(code: &str, issuer: u8) -> Asset {
    let mut c = [0u8; 4];
    c[..code.len()].copy_from_slice(code.as_bytes());
    Asset::CreditAlphanum4(AlphaNum4 {
        asset_code: AssetCode4(c),
        issuer: acct(issuer),
    })
}

pub fn entry(data: LedgerEntryData) -> LedgerEntry {
    LedgerEntry {
        last_modified_ledger_seq: 1,
        data,
        ext: LedgerEntryExt::V0,
    }
}

pub fn account_entry(n: u8, balance: i64) -> LedgerEntry {
    entry(LedgerEntryData::Account(AccountEntry {
        account_id: acct(n),
        balance,
        seq_num: SequenceNumber(1),
        num_sub_entries: 0,
        inflation_dest: None,
        flags: 0,
        home_domain: Default::default(),
        thresholds: Thresholds([1, 0, 0, 0]),
        signers: Default::default(),
        ext: AccountEntryExt::V0,
    }))
}

pub fn trustline_entry(n: u8, asset: &Asset, balance: i64) -> LedgerEntry {
    let asset = match asset {
        Asset::CreditAlphanum4(a) => TrustLineAsset::CreditAlphanum4(a.clone()),
        Asset::CreditAlphanum12(a) => TrustLineAsset::CreditAlphanum12(a.clone()),
        Asset::Native => panic!("no native trustlines"),
    };
    entry(LedgerEntryData::Trustline(TrustLineEntry {
        account_id: acct(n),
        asset,
        balance,
        limit: i64::MAX,
        flags: 1,
        ext: TrustLineEntryExt::V0,
    }))
}

/// A `STATE`/`UPDATED` pair.
pub fn update(before: LedgerEntry, after: LedgerEntry) -> [LedgerEntryChange; 2] {
    [
        LedgerEntryChange::State(before),
        LedgerEntryChange::Updated(after),
    ]
}

pub fn changes(c: impl IntoIterator<Item = LedgerEntryChange>) -> LedgerEntryChanges {
    LedgerEntryChanges(c.into_iter().collect::<Vec<_>>().try_into().unwrap())
}

pub fn op(source: Option<MuxedAccount>, body: OperationBody) -> Operation {
    Operation {
        source_account: source,
        body,
    }
}

pub fn envelope(
    source: MuxedAccount,
    seq: i64,
    memo: Memo,
    ops: Vec<Operation>,
    soroban: bool,
) -> TransactionEnvelope {
    TransactionEnvelope::Tx(TransactionV1Envelope {
        tx: Transaction {
            source_account: source,
            fee: 1_000_000,
            seq_num: SequenceNumber(seq),
            cond: Preconditions::None,
            memo,
            operations: ops.try_into().unwrap(),
            ext: if soroban {
                TransactionExt::V1(SorobanTransactionData::default())
            } else {
                TransactionExt::V0
            },
        },
        signatures: Default::default(),
    })
}

/// A transaction as core reports it: envelope, result, fee changes and apply meta.
pub struct TxSpec {
    pub envelope: TransactionEnvelope,
    pub fee_charged: i64,
    pub results: Option<Vec<OperationResultTr>>, // None: the transaction failed
    pub fee_changes: LedgerEntryChanges,
    pub meta: TransactionMeta,
    pub post_apply_fee_changes: LedgerEntryChanges,
}

pub fn fee_update(n: u8, before: i64, fee: i64) -> LedgerEntryChanges {
    changes(update(
        account_entry(n, before),
        account_entry(n, before - fee),
    ))
}

fn result_pair(t: &TxSpec) -> TransactionResultPair {
    let hash = t.envelope.hash(stellar_ttp::network_id(NET)).unwrap();
    let result = match &t.results {
        Some(r) => TransactionResultResult::TxSuccess(
            r.iter()
                .cloned()
                .map(OperationResult::OpInner)
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
        ),
        None => TransactionResultResult::TxFailed(Default::default()),
    };
    TransactionResultPair {
        transaction_hash: Hash(hash),
        result: TransactionResult {
            fee_charged: t.fee_charged,
            result,
            ext: TransactionResultExt::V0,
        },
    }
}

fn header(seq: u32, protocol: u32) -> LedgerHeaderHistoryEntry {
    LedgerHeaderHistoryEntry {
        hash: Hash([0; 32]),
        header: LedgerHeader {
            ledger_version: protocol,
            ledger_seq: seq,
            scp_value: StellarValue {
                close_time: TimePoint(1_700_000_000),
                ..Default::default()
            },
            ..Default::default()
        },
        ext: LedgerHeaderHistoryEntryExt::V0,
    }
}

/// LCM V0 before protocol 20, V1 for 20–22, V2 from 23, as core writes them.
pub fn ledger(seq: u32, protocol: u32, txs: Vec<TxSpec>) -> LedgerCloseMeta {
    let envelopes: Vec<TransactionEnvelope> =
        txs.iter().rev().map(|t| t.envelope.clone()).collect();
    if protocol < 20 {
        return LedgerCloseMeta::V0(LedgerCloseMetaV0 {
            ledger_header: header(seq, protocol),
            tx_set: TransactionSet {
                previous_ledger_hash: Hash([0; 32]),
                txs: envelopes.try_into().unwrap(),
            },
            tx_processing: txs
                .iter()
                .map(|t| TransactionResultMeta {
                    result: result_pair(t),
                    fee_processing: t.fee_changes.clone(),
                    tx_apply_processing: t.meta.clone(),
                })
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
            upgrades_processing: Default::default(),
            scp_info: Default::default(),
        });
    }
    let tx_set = GeneralizedTransactionSet::V1(TransactionSetV1 {
        previous_ledger_hash: Hash([0; 32]),
        phases: vec![TransactionPhase::V0(
            vec![TxSetComponent::TxsetCompTxsMaybeDiscountedFee(
                TxSetComponentTxsMaybeDiscountedFee {
                    base_fee: None,
                    txs: envelopes.try_into().unwrap(),
                },
            )]
            .try_into()
            .unwrap(),
        )]
        .try_into()
        .unwrap(),
    });
    if protocol < 23 {
        return LedgerCloseMeta::V1(LedgerCloseMetaV1 {
            ledger_header: header(seq, protocol),
            tx_set,
            tx_processing: txs
                .iter()
                .map(|t| TransactionResultMeta {
                    result: result_pair(t),
                    fee_processing: t.fee_changes.clone(),
                    tx_apply_processing: t.meta.clone(),
                })
                .collect::<Vec<_>>()
                .try_into()
                .unwrap(),
            ..Default::default()
        });
    }
    LedgerCloseMeta::V2(LedgerCloseMetaV2 {
        ledger_header: header(seq, protocol),
        tx_set,
        tx_processing: txs
            .iter()
            .map(|t| TransactionResultMetaV1 {
                ext: ExtensionPoint::V0,
                result: result_pair(t),
                fee_processing: t.fee_changes.clone(),
                tx_apply_processing: t.meta.clone(),
                post_tx_apply_fee_processing: t.post_apply_fee_changes.clone(),
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
        ..Default::default()
    })
}

/// Classic meta (V2 before protocol 20 is what core writes from protocol 10; V3 after).
pub fn classic_meta(protocol: u32, ops: Vec<LedgerEntryChanges>) -> TransactionMeta {
    let operations: VecM<OperationMeta> = ops
        .into_iter()
        .map(|changes| OperationMeta { changes })
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    if protocol < 20 {
        TransactionMeta::V2(TransactionMetaV2 {
            tx_changes_before: Default::default(),
            operations,
            tx_changes_after: Default::default(),
        })
    } else {
        TransactionMeta::V3(TransactionMetaV3 {
            operations,
            ..Default::default()
        })
    }
}

pub fn events_json(lcm: &LedgerCloseMeta) -> Vec<serde_json::Value> {
    stellar_ttp::EventsProcessor::new(NET)
        .events_from_ledger(lcm)
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(&stellar_ttp::to_json(e)).unwrap())
        .collect()
}

pub fn sac(asset: &Asset) -> String {
    stellar_strkey::Contract(stellar_ttp::sac_contract_id(
        &stellar_ttp::network_id(NET),
        asset,
    ))
    .to_string()
}

pub fn sym(s: &str) -> ScVal {
    ScVal::Symbol(ScSymbol(s.try_into().unwrap()))
}

pub fn addr(n: u8) -> ScVal {
    ScVal::Address(ScAddress::Account(acct(n)))
}

pub fn contract_addr(id: [u8; 32]) -> ScVal {
    ScVal::Address(ScAddress::Contract(ContractId(Hash(id))))
}

pub fn string(s: &str) -> ScVal {
    ScVal::String(ScString(s.try_into().unwrap()))
}

pub fn i128(v: i64) -> ScVal {
    ScVal::I128(Int128Parts {
        hi: if v < 0 { -1 } else { 0 },
        lo: v as u64,
    })
}

pub fn contract_event(contract: [u8; 32], topics: Vec<ScVal>, data: ScVal) -> ContractEvent {
    ContractEvent {
        ext: ExtensionPoint::V0,
        contract_id: Some(ContractId(Hash(contract))),
        type_: ContractEventType::Contract,
        body: ContractEventBody::V0(ContractEventV0 {
            topics: topics.try_into().unwrap(),
            data,
        }),
    }
}

pub fn sac_id(asset: &Asset) -> [u8; 32] {
    stellar_ttp::sac_contract_id(&stellar_ttp::network_id(NET), asset)
}

pub fn invoke() -> OperationBody {
    OperationBody::InvokeHostFunction(InvokeHostFunctionOp {
        host_function: HostFunction::UploadContractWasm(Default::default()),
        auth: Default::default(),
    })
}
