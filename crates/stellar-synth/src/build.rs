//! Building one ledger: plan the transactions, charge fees, apply them in order (as
//! stellar-core does: all fees first, then each transaction, then P23+ refunds), and record
//! every entry touched as a `State`/`Updated` pair.

use std::collections::HashMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use stellar_xdr::{
    Asset, ClaimAtom, ClaimOfferAtom, ContractDataDurability, ContractEvent, ContractEventBody,
    ContractEventType, ContractEventV0, ContractId, DecoratedSignature, DependentTxCluster,
    ExtensionPoint, GeneralizedTransactionSet, Hash, HostFunction, Int128Parts, InvokeContractArgs,
    InvokeHostFunctionOp, InvokeHostFunctionResult, LedgerCloseMeta, LedgerCloseMetaExt,
    LedgerCloseMetaV1, LedgerCloseMetaV2, LedgerEntryChange, LedgerEntryChanges, LedgerFootprint,
    LedgerHeader, LedgerHeaderExt, LedgerHeaderHistoryEntry, LedgerHeaderHistoryEntryExt,
    LedgerKey, LedgerKeyAccount, LedgerKeyContractData, Memo, MuxedAccount, MuxedAccountMed25519,
    Operation, OperationBody, OperationMeta, OperationMetaV2, OperationResult, OperationResultTr,
    ParallelTxExecutionStage, ParallelTxsComponent, PathPaymentStrictReceiveOp,
    PathPaymentStrictReceiveResult, PathPaymentStrictReceiveResultSuccess, PaymentOp,
    PaymentResult, Preconditions, ScAddress, ScVal, SequenceNumber, SimplePaymentResult,
    SorobanResources, SorobanTransactionData, SorobanTransactionDataExt, SorobanTransactionMeta,
    SorobanTransactionMetaExt, SorobanTransactionMetaExtV1, SorobanTransactionMetaV2, StellarValue,
    StellarValueExt, TimeBounds, TimePoint, Transaction, TransactionEnvelope, TransactionExt,
    TransactionMeta, TransactionMetaV3, TransactionMetaV4, TransactionPhase, TransactionResult,
    TransactionResultExt, TransactionResultMeta, TransactionResultMetaV1, TransactionResultPair,
    TransactionResultResult, TransactionSetV1, TransactionV1Envelope, TxSetComponent,
    TxSetComponentTxsMaybeDiscountedFee, Uint256, VecM,
};

use crate::accounts::{World, NATIVE_SAC_TRANSFER, XLM_PER_USDC};
use crate::hash::{transaction_hash, xdr_hash, XdrHasher};
use crate::Config;

const BASE_FEE: u32 = 100;
const BASE_RESERVE: u32 = 5_000_000;
/// An account keeps at least this much XLM (2 base reserves plus one per sub-entry, rounded up).
const MIN_BALANCE: i64 = 3 * BASE_RESERVE as i64;
const TOTAL_COINS: i64 = 1_000_000_000_000_000_000;

pub struct LedgerParams<'a> {
    pub seq: u32,
    pub close_time: u64,
    pub prev_header_hash: [u8; 32],
    pub fee_pool: &'a mut i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NativePayment,
    UsdcPayment,
    PathPayment,
    SacTransfer,
}

/// A transaction decided but not yet applied.
struct Planned {
    kind: Kind,
    src: usize,
    dst: usize,
    /// XLM or USDC stroops the destination receives.
    amount: i64,
    /// Moved into the tx set once the ledger is assembled.
    envelope: Option<TransactionEnvelope>,
    hash: [u8; 32],
    /// Charged before apply (inclusion fee, plus the whole resource fee for Soroban).
    upfront_fee: i64,
    /// Soroban only: the part of the refundable resource fee given back after apply.
    refund: i64,
    resource_fee: i64,
}

impl Planned {
    fn soroban(&self) -> bool {
        self.kind == Kind::SacTransfer
    }
}

/// What applying one transaction produced.
struct Applied {
    result: TransactionResult,
    fee_processing: Vec<LedgerEntryChange>,
    tx_changes_before: Vec<LedgerEntryChange>,
    op_changes: Option<Vec<LedgerEntryChange>>,
    op_events: Vec<ContractEvent>,
    tx_changes_after: Vec<LedgerEntryChange>,
    post_apply_fee: Vec<LedgerEntryChange>,
}

pub fn ledger(
    cfg: &Config,
    network_id: &[u8; 32],
    rng: &mut ChaCha8Rng,
    world: &mut World,
    p: LedgerParams<'_>,
) -> LedgerCloseMeta {
    let v2 = cfg.protocol_version >= 23;
    let mut planned = plan(cfg, network_id, rng, world, p.close_time);
    // Classic transactions form phase 0 and are applied first, Soroban ones phase 1.
    planned.sort_by_key(|t| t.soroban());

    let mut applied: Vec<Applied> = Vec::with_capacity(planned.len());
    // Fees for every transaction are charged before any is applied.
    for t in &planned {
        let mut fee_processing = Vec::new();
        update_account(world, t.src, p.seq, &mut fee_processing, |a| {
            a.balance -= t.upfront_fee
        });
        applied.push(Applied {
            result: TransactionResult {
                fee_charged: 0,
                result: TransactionResultResult::TxSuccess(VecM::default()),
                ext: TransactionResultExt::V0,
            },
            fee_processing,
            tx_changes_before: Vec::new(),
            op_changes: None,
            op_events: Vec::new(),
            tx_changes_after: Vec::new(),
            post_apply_fee: Vec::new(),
        });
    }
    for (t, a) in planned.iter().zip(applied.iter_mut()) {
        apply(world, p.seq, t, a);
    }
    // From protocol 23 on, refunds happen after all transactions are applied.
    for (t, a) in planned.iter().zip(applied.iter_mut()) {
        if t.refund > 0 {
            let changes = if v2 {
                &mut a.post_apply_fee
            } else {
                &mut a.tx_changes_after
            };
            update_account(world, t.src, p.seq, changes, |acc| acc.balance += t.refund);
        }
    }
    let fees: i64 = applied.iter().map(|a| a.result.fee_charged).sum();
    *p.fee_pool += fees;

    let tx_set = tx_set(&mut planned, p.prev_header_hash, v2);
    let header = LedgerHeader {
        ledger_version: cfg.protocol_version,
        previous_ledger_hash: Hash(p.prev_header_hash),
        scp_value: StellarValue {
            tx_set_hash: Hash(xdr_hash(&tx_set)),
            close_time: TimePoint(p.close_time),
            upgrades: VecM::default(),
            ext: StellarValueExt::Basic,
        },
        tx_set_result_hash: Hash(result_set_hash(&planned, &applied)),
        bucket_list_hash: Hash(rng.random()),
        ledger_seq: p.seq,
        total_coins: TOTAL_COINS,
        fee_pool: *p.fee_pool,
        inflation_seq: 0,
        id_pool: world.offer.id as u64,
        base_fee: BASE_FEE,
        base_reserve: BASE_RESERVE,
        max_tx_set_size: 1000,
        skip_list: Default::default(),
        ext: LedgerHeaderExt::V0,
    };
    let ledger_header = LedgerHeaderHistoryEntry {
        hash: Hash(xdr_hash(&header)),
        header,
        ext: LedgerHeaderHistoryEntryExt::V0,
    };
    let soroban_state_size = 10_000_000 + u64::from(p.seq % 1000) * 64;

    let metas = planned.iter().zip(applied).map(|(t, a)| {
        let Applied {
            result,
            fee_processing,
            tx_changes_before,
            op_changes,
            op_events,
            tx_changes_after,
            post_apply_fee,
        } = a;
        let meta = tx_meta(
            t,
            AppliedChanges {
                tx_changes_before,
                op_changes,
                op_events,
                tx_changes_after,
            },
            v2,
        );
        (result, fee_processing, meta, post_apply_fee)
    });
    let pair = |t: &Planned, result| TransactionResultPair {
        transaction_hash: Hash(t.hash),
        result,
    };
    if v2 {
        let tx_processing: Vec<TransactionResultMetaV1> = planned
            .iter()
            .zip(metas)
            .map(|(t, (result, fee, meta, post))| TransactionResultMetaV1 {
                ext: ExtensionPoint::V0,
                result: pair(t, result),
                fee_processing: changes(fee),
                tx_apply_processing: meta,
                post_tx_apply_fee_processing: changes(post),
            })
            .collect();
        LedgerCloseMeta::V2(LedgerCloseMetaV2 {
            ext: LedgerCloseMetaExt::V0,
            ledger_header,
            tx_set,
            tx_processing: tx_processing.try_into().expect("tx count fits"),
            upgrades_processing: VecM::default(),
            scp_info: VecM::default(),
            total_byte_size_of_live_soroban_state: soroban_state_size,
            evicted_keys: VecM::default(),
        })
    } else {
        let tx_processing: Vec<TransactionResultMeta> = planned
            .iter()
            .zip(metas)
            .map(|(t, (result, fee, meta, _))| TransactionResultMeta {
                result: pair(t, result),
                fee_processing: changes(fee),
                tx_apply_processing: meta,
            })
            .collect();
        LedgerCloseMeta::V1(LedgerCloseMetaV1 {
            ext: LedgerCloseMetaExt::V0,
            ledger_header,
            tx_set,
            tx_processing: tx_processing.try_into().expect("tx count fits"),
            upgrades_processing: VecM::default(),
            scp_info: VecM::default(),
            total_byte_size_of_live_soroban_state: soroban_state_size,
            evicted_keys: VecM::default(),
            unused: VecM::default(),
        })
    }
}

/// Chooses this ledger's transactions and builds their signed envelopes.
fn plan(
    cfg: &Config,
    network_id: &[u8; 32],
    rng: &mut ChaCha8Rng,
    world: &World,
    close_time: u64,
) -> Vec<Planned> {
    let n_accounts = world.accounts.len();
    let mut next_seq_num: HashMap<usize, i64> = HashMap::new();
    (0..cfg.txs_per_ledger)
        .map(|_| {
            let kind = match rng.random_range(0..100) {
                0..50 => Kind::NativePayment,
                50..65 => Kind::UsdcPayment,
                65..80 => Kind::PathPayment,
                _ => Kind::SacTransfer,
            };
            let src = rng.random_range(1..n_accounts);
            let mut dst = rng.random_range(1..n_accounts - 1);
            if dst >= src {
                dst += 1;
            }
            // 0.01 to 500 units, most of them small.
            let units: i64 = rng.random_range(1..=50_000);
            let amount = units * units / 50_000 * 100_000 + 100_000;
            let seq_num = next_seq_num
                .entry(src)
                .or_insert(world.accounts[src].seq)
                .checked_add(1)
                .expect("sequence numbers do not overflow");
            next_seq_num.insert(src, seq_num);

            let src_key = world.accounts[src].key;
            let dst_key = world.accounts[dst].key;
            let memo = match rng.random_range(0..10) {
                0 => Memo::Id(rng.random_range(1..1_000_000_000)),
                1 => Memo::Text("synthetic".try_into().expect("short text")),
                _ => Memo::None,
            };
            let destination = if kind == Kind::NativePayment && rng.random_range(0..10) == 0 {
                MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
                    id: rng.random_range(1..1_000_000),
                    ed25519: Uint256(dst_key),
                })
            } else {
                MuxedAccount::Ed25519(Uint256(dst_key))
            };
            let (body, ext, resource_fee, refund) = match kind {
                Kind::NativePayment | Kind::UsdcPayment => {
                    let asset = if kind == Kind::NativePayment {
                        Asset::Native
                    } else {
                        world.usdc()
                    };
                    let op = PaymentOp {
                        destination,
                        asset,
                        amount,
                    };
                    (OperationBody::Payment(op), TransactionExt::V0, 0, 0)
                }
                Kind::PathPayment => {
                    let op = PathPaymentStrictReceiveOp {
                        send_asset: Asset::Native,
                        send_max: amount * XLM_PER_USDC + amount,
                        destination,
                        dest_asset: world.usdc(),
                        dest_amount: amount,
                        path: VecM::default(),
                    };
                    (
                        OperationBody::PathPaymentStrictReceive(op),
                        TransactionExt::V0,
                        0,
                        0,
                    )
                }
                Kind::SacTransfer => {
                    let resource_fee: i64 = rng.random_range(40_000..120_000);
                    let refund = rng.random_range(0..resource_fee / 2);
                    let sac = ScAddress::Contract(ContractId(Hash(world.native_sac)));
                    let args: Vec<ScVal> = vec![
                        account_address(src_key),
                        account_address(dst_key),
                        i128_val(amount),
                    ];
                    let op = InvokeHostFunctionOp {
                        host_function: HostFunction::InvokeContract(InvokeContractArgs {
                            contract_address: sac.clone(),
                            function_name: NATIVE_SAC_TRANSFER.try_into().expect("symbol"),
                            args: args.try_into().expect("three args"),
                        }),
                        auth: VecM::default(),
                    };
                    let footprint = LedgerFootprint {
                        read_only: vec![LedgerKey::ContractData(LedgerKeyContractData {
                            contract: sac,
                            key: ScVal::LedgerKeyContractInstance,
                            durability: ContractDataDurability::Persistent,
                        })]
                        .try_into()
                        .expect("one key"),
                        read_write: vec![account_key(src_key), account_key(dst_key)]
                            .try_into()
                            .expect("two keys"),
                    };
                    let data = SorobanTransactionData {
                        ext: SorobanTransactionDataExt::V0,
                        resources: SorobanResources {
                            footprint,
                            instructions: rng.random_range(1_000_000..3_000_000),
                            disk_read_bytes: 500,
                            write_bytes: 300,
                        },
                        resource_fee,
                    };
                    (
                        OperationBody::InvokeHostFunction(op),
                        TransactionExt::V1(data),
                        resource_fee,
                        refund,
                    )
                }
            };
            let fee_bid = BASE_FEE + rng.random_range(0..3) * 50;
            let tx = Transaction {
                source_account: MuxedAccount::Ed25519(Uint256(src_key)),
                fee: fee_bid + resource_fee as u32,
                seq_num: SequenceNumber(seq_num),
                cond: Preconditions::Time(TimeBounds {
                    min_time: TimePoint(0),
                    max_time: TimePoint(close_time + 300),
                }),
                memo,
                operations: vec![Operation {
                    source_account: None,
                    body,
                }]
                .try_into()
                .expect("one operation"),
                ext,
            };
            let hash = transaction_hash(network_id, &tx);
            let mut signature = [0u8; 64];
            rng.fill(&mut signature[..]);
            let envelope = TransactionEnvelope::Tx(TransactionV1Envelope {
                tx,
                signatures: vec![DecoratedSignature {
                    hint: stellar_xdr::SignatureHint(src_key[28..].try_into().expect("4 bytes")),
                    signature: stellar_xdr::Signature(
                        signature.to_vec().try_into().expect("64 bytes"),
                    ),
                }]
                .try_into()
                .expect("one signature"),
            });
            Planned {
                kind,
                src,
                dst,
                amount,
                envelope: Some(envelope),
                hash,
                // Inclusion fees are charged at the base fee, whatever was bid.
                upfront_fee: i64::from(BASE_FEE) + resource_fee,
                refund,
                resource_fee,
            }
        })
        .collect()
}

/// Applies one transaction whose fee is already charged: bumps the sequence number, then runs
/// the operation if the source can afford it, else fails the transaction (fee kept).
fn apply(world: &mut World, seq: u32, t: &Planned, a: &mut Applied) {
    update_account(world, t.src, seq, &mut a.tx_changes_before, |acc| {
        acc.seq += 1
    });
    let src = &world.accounts[t.src];
    let xlm_needed = match t.kind {
        Kind::NativePayment | Kind::SacTransfer => t.amount,
        Kind::PathPayment => t.amount * XLM_PER_USDC,
        Kind::UsdcPayment => 0,
    };
    let affordable = src.balance - xlm_needed >= MIN_BALANCE
        && (t.kind != Kind::UsdcPayment || src.usdc >= t.amount)
        && (t.kind != Kind::PathPayment
            || (world.offer.amount >= t.amount && world.accounts[0].usdc >= t.amount));
    let fee_charged = t.upfront_fee - t.refund;
    if !affordable {
        let failure = match t.kind {
            Kind::NativePayment | Kind::UsdcPayment => {
                OperationResultTr::Payment(PaymentResult::Underfunded)
            }
            Kind::PathPayment => OperationResultTr::PathPaymentStrictReceive(
                PathPaymentStrictReceiveResult::Underfunded,
            ),
            Kind::SacTransfer => {
                OperationResultTr::InvokeHostFunction(InvokeHostFunctionResult::Trapped)
            }
        };
        a.result = TransactionResult {
            fee_charged,
            result: TransactionResultResult::TxFailed(
                vec![OperationResult::OpInner(failure)]
                    .try_into()
                    .expect("one result"),
            ),
            ext: TransactionResultExt::V0,
        };
        return;
    }
    let mut ops = Vec::new();
    let op_result = match t.kind {
        Kind::NativePayment => {
            update_account(world, t.src, seq, &mut ops, |acc| acc.balance -= t.amount);
            update_account(world, t.dst, seq, &mut ops, |acc| acc.balance += t.amount);
            OperationResultTr::Payment(PaymentResult::Success)
        }
        Kind::UsdcPayment => {
            update_usdc(world, t.src, seq, &mut ops, -t.amount);
            update_usdc(world, t.dst, seq, &mut ops, t.amount);
            OperationResultTr::Payment(PaymentResult::Success)
        }
        Kind::PathPayment => {
            let xlm = t.amount * XLM_PER_USDC;
            update_account(world, t.src, seq, &mut ops, |acc| acc.balance -= xlm);
            // The market maker's offer: sells USDC, receives XLM.
            let before = world.offer_entry();
            world.offer.amount -= t.amount;
            world.offer.last_modified = seq;
            ops.push(LedgerEntryChange::State(before));
            ops.push(LedgerEntryChange::Updated(world.offer_entry()));
            update_account(world, 0, seq, &mut ops, |acc| acc.balance += xlm);
            update_usdc(world, 0, seq, &mut ops, -t.amount);
            update_usdc(world, t.dst, seq, &mut ops, t.amount);
            OperationResultTr::PathPaymentStrictReceive(PathPaymentStrictReceiveResult::Success(
                PathPaymentStrictReceiveResultSuccess {
                    offers: vec![ClaimAtom::OrderBook(ClaimOfferAtom {
                        seller_id: world.accounts[0].id(),
                        offer_id: world.offer.id,
                        asset_sold: world.usdc(),
                        amount_sold: t.amount,
                        asset_bought: Asset::Native,
                        amount_bought: xlm,
                    })]
                    .try_into()
                    .expect("one claim"),
                    last: SimplePaymentResult {
                        destination: world.accounts[t.dst].id(),
                        asset: world.usdc(),
                        amount: t.amount,
                    },
                },
            ))
        }
        Kind::SacTransfer => {
            update_account(world, t.src, seq, &mut ops, |acc| acc.balance -= t.amount);
            update_account(world, t.dst, seq, &mut ops, |acc| acc.balance += t.amount);
            let topics: Vec<ScVal> = vec![
                ScVal::Symbol(NATIVE_SAC_TRANSFER.try_into().expect("symbol")),
                account_address(world.accounts[t.src].key),
                account_address(world.accounts[t.dst].key),
                ScVal::String(stellar_xdr::ScString(
                    "native".try_into().expect("short string"),
                )),
            ];
            a.op_events.push(ContractEvent {
                ext: ExtensionPoint::V0,
                contract_id: Some(ContractId(Hash(world.native_sac))),
                type_: ContractEventType::Contract,
                body: ContractEventBody::V0(ContractEventV0 {
                    topics: topics.try_into().expect("four topics"),
                    data: i128_val(t.amount),
                }),
            });
            OperationResultTr::InvokeHostFunction(InvokeHostFunctionResult::Success(Hash(
                xdr_hash(&ScVal::Void),
            )))
        }
    };
    a.op_changes = Some(ops);
    a.result = TransactionResult {
        fee_charged,
        result: TransactionResultResult::TxSuccess(
            vec![OperationResult::OpInner(op_result)]
                .try_into()
                .expect("one result"),
        ),
        ext: TransactionResultExt::V0,
    };
}

/// The parts of [`Applied`] that go into a transaction's meta, taken by value so the entry
/// changes move into the ledger instead of being copied.
struct AppliedChanges {
    tx_changes_before: Vec<LedgerEntryChange>,
    op_changes: Option<Vec<LedgerEntryChange>>,
    op_events: Vec<ContractEvent>,
    tx_changes_after: Vec<LedgerEntryChange>,
}

fn tx_meta(t: &Planned, a: AppliedChanges, v2: bool) -> TransactionMeta {
    let refundable = t.resource_fee / 2;
    let fee_ext = SorobanTransactionMetaExt::V1(SorobanTransactionMetaExtV1 {
        ext: ExtensionPoint::V0,
        total_non_refundable_resource_fee_charged: t.resource_fee - refundable,
        total_refundable_resource_fee_charged: refundable - t.refund,
        rent_fee_charged: 0,
    });
    let success = a.op_changes.is_some();
    let events: VecM<ContractEvent> = a.op_events.try_into().expect("events fit");
    if v2 {
        // A transaction here has at most one operation, so its events move into it.
        let operations: Vec<OperationMetaV2> = a
            .op_changes
            .map(|c| OperationMetaV2 {
                ext: ExtensionPoint::V0,
                changes: changes(c),
                events,
            })
            .into_iter()
            .collect();
        TransactionMeta::V4(TransactionMetaV4 {
            ext: ExtensionPoint::V0,
            tx_changes_before: changes(a.tx_changes_before),
            operations: operations.try_into().expect("ops fit"),
            tx_changes_after: changes(a.tx_changes_after),
            soroban_meta: t.soroban().then(|| SorobanTransactionMetaV2 {
                ext: fee_ext,
                return_value: success.then_some(ScVal::Void),
            }),
            events: VecM::default(),
            diagnostic_events: VecM::default(),
        })
    } else {
        let operations: Vec<OperationMeta> = a
            .op_changes
            .into_iter()
            .map(|c| OperationMeta {
                changes: changes(c),
            })
            .collect();
        TransactionMeta::V3(TransactionMetaV3 {
            ext: ExtensionPoint::V0,
            tx_changes_before: changes(a.tx_changes_before),
            operations: operations.try_into().expect("ops fit"),
            tx_changes_after: changes(a.tx_changes_after),
            soroban_meta: t.soroban().then(|| SorobanTransactionMeta {
                ext: fee_ext,
                events,
                return_value: ScVal::Void,
                diagnostic_events: VecM::default(),
            }),
        })
    }
}

/// The hash of the ledger's `TransactionResultSet`, written pair by pair: the set itself is
/// never built, as its results go on into `tx_processing`.
fn result_set_hash(planned: &[Planned], applied: &[Applied]) -> [u8; 32] {
    let mut h = XdrHasher::new();
    h.write(&u32::try_from(planned.len()).expect("result count fits"));
    for (t, a) in planned.iter().zip(applied) {
        // A TransactionResultPair is its hash followed by its result.
        h.write(&Hash(t.hash)).write(&a.result);
    }
    h.finish()
}

fn tx_set(
    planned: &mut [Planned],
    prev_header_hash: [u8; 32],
    v2: bool,
) -> GeneralizedTransactionSet {
    let mut classic = Vec::new();
    let mut soroban = Vec::new();
    for t in planned {
        let envelope = t
            .envelope
            .take()
            .expect("each envelope goes into one tx set");
        if t.soroban() {
            soroban.push(envelope);
        } else {
            classic.push(envelope);
        }
    }
    let component = |txs: Vec<TransactionEnvelope>| -> Vec<TxSetComponent> {
        if txs.is_empty() {
            return Vec::new();
        }
        vec![TxSetComponent::TxsetCompTxsMaybeDiscountedFee(
            TxSetComponentTxsMaybeDiscountedFee {
                base_fee: Some(i64::from(BASE_FEE)),
                txs: txs.try_into().expect("txs fit"),
            },
        )]
    };
    let classic_phase = TransactionPhase::V0(component(classic).try_into().expect("fits"));
    let soroban_phase = if v2 {
        let stages: Vec<ParallelTxExecutionStage> = if soroban.is_empty() {
            Vec::new()
        } else {
            vec![ParallelTxExecutionStage(
                vec![DependentTxCluster(soroban.try_into().expect("txs fit"))]
                    .try_into()
                    .expect("one cluster"),
            )]
        };
        TransactionPhase::V1(ParallelTxsComponent {
            base_fee: Some(i64::from(BASE_FEE)),
            execution_stages: stages.try_into().expect("one stage"),
        })
    } else {
        TransactionPhase::V0(component(soroban).try_into().expect("fits"))
    };
    GeneralizedTransactionSet::V1(TransactionSetV1 {
        previous_ledger_hash: Hash(prev_header_hash),
        phases: vec![classic_phase, soroban_phase]
            .try_into()
            .expect("two phases"),
    })
}

fn update_account(
    world: &mut World,
    idx: usize,
    seq: u32,
    out: &mut Vec<LedgerEntryChange>,
    f: impl FnOnce(&mut crate::accounts::Account),
) {
    let acc = &mut world.accounts[idx];
    out.push(LedgerEntryChange::State(acc.entry()));
    f(acc);
    acc.last_modified = seq;
    out.push(LedgerEntryChange::Updated(acc.entry()));
}

fn update_usdc(
    world: &mut World,
    idx: usize,
    seq: u32,
    out: &mut Vec<LedgerEntryChange>,
    delta: i64,
) {
    let issuer = world.issuer;
    let acc = &mut world.accounts[idx];
    out.push(LedgerEntryChange::State(acc.usdc_entry(issuer)));
    acc.usdc += delta;
    acc.usdc_last_modified = seq;
    out.push(LedgerEntryChange::Updated(acc.usdc_entry(issuer)));
}

fn changes(v: Vec<LedgerEntryChange>) -> LedgerEntryChanges {
    LedgerEntryChanges(v.try_into().expect("changes fit"))
}

fn account_address(key: [u8; 32]) -> ScVal {
    ScVal::Address(ScAddress::Account(crate::accounts::account_id(key)))
}

fn account_key(key: [u8; 32]) -> LedgerKey {
    LedgerKey::Account(LedgerKeyAccount {
        account_id: crate::accounts::account_id(key),
    })
}

fn i128_val(v: i64) -> ScVal {
    ScVal::I128(Int128Parts {
        hi: if v < 0 { -1 } else { 0 },
        lo: v as u64,
    })
}
