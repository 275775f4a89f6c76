//! Event semantics the fixtures do not exercise, on generated ledgers: issuer mints and
//! burns, muxed destinations and memos, the protocol < 8 correction, CAP-67 and pre-CAP-67
//! SEP-41 events, refund ordering, pool-share revocation and the remaining classic
//! operations. Where a generated ledger records balances, the conservation check must hold.

mod gen;

use gen::*;
use serde_json::{json, Value};
use stellar_ttp::{verify_events, EventsProcessor, TtpError};
use stellar_xdr::*;

const CLOSED_AT: &str = "2023-11-14T22:13:20Z";

fn tx_hash(env: &TransactionEnvelope) -> String {
    env.hash(stellar_ttp::network_id(NET))
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn meta(
    seq: u32,
    hash: &str,
    tx: u32,
    op: Option<u32>,
    contract: &str,
    muxed: Option<Value>,
) -> Value {
    let mut m = json!({
        "ledgerSequence": seq, "closedAt": CLOSED_AT, "txHash": hash,
        "transactionIndex": tx, "contractAddress": contract,
    });
    if let Some(op) = op {
        m["operationIndex"] = json!(op);
    }
    if let Some(x) = muxed {
        m["toMuxedInfo"] = x;
    }
    m
}

fn native() -> Value {
    json!({"native": true})
}

fn issued(code: &str, issuer: u8) -> Value {
    json!({"issuedAsset": {"assetCode": code, "issuer": g(issuer)}})
}

fn pool(n: u8) -> String {
    stellar_strkey::LiquidityPool(key(n)).to_string()
}

fn balance(id: [u8; 32]) -> String {
    stellar_strkey::ClaimableBalance::V0(id).to_string()
}

fn contract(id: [u8; 32]) -> String {
    stellar_strkey::Contract(id).to_string()
}

fn payment(source: Option<MuxedAccount>, to: MuxedAccount, asset: Asset, amount: i64) -> Operation {
    op(
        source,
        OperationBody::Payment(PaymentOp {
            destination: to,
            asset,
            amount,
        }),
    )
}

fn assert_events(lcm: &LedgerCloseMeta, want: &[Value]) {
    let got = events_json(lcm);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "event {i}");
    }
    assert_eq!(got.len(), want.len(), "event count: {got:#?}");
}

#[test]
fn payments_mint_from_the_issuer_burn_to_it_and_carry_muxed_ids_or_memos() {
    let usd = credit("USD", 9);
    let to_muxed_b = MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
        id: 99,
        ed25519: Uint256(key(2)),
    });
    let env = envelope(
        mux(1),
        5,
        Memo::Id(7),
        vec![
            payment(None, mux(2), Asset::Native, 100),
            payment(Some(mux(9)), mux(1), usd.clone(), 50),
            payment(None, mux(9), usd.clone(), 20),
            payment(Some(mux(9)), mux(9), usd.clone(), 5),
            payment(None, to_muxed_b, Asset::Native, 10),
        ],
        false,
    );
    let hash = tx_hash(&env);
    let ops = vec![
        changes(
            update(account_entry(1, 9_500), account_entry(1, 9_400))
                .into_iter()
                .chain(update(account_entry(2, 1_000), account_entry(2, 1_100))),
        ),
        changes(update(
            trustline_entry(1, &usd, 0),
            trustline_entry(1, &usd, 50),
        )),
        changes(update(
            trustline_entry(1, &usd, 50),
            trustline_entry(1, &usd, 30),
        )),
        changes([]),
        changes(
            update(account_entry(1, 9_400), account_entry(1, 9_390))
                .into_iter()
                .chain(update(account_entry(2, 1_100), account_entry(2, 1_110))),
        ),
    ];
    let ok = OperationResultTr::Payment(PaymentResult::Success);
    let lcm = ledger(
        100,
        21,
        vec![TxSpec {
            envelope: env,
            fee_charged: 500,
            results: Some(vec![ok.clone(), ok.clone(), ok.clone(), ok.clone(), ok]),
            fee_changes: fee_update(1, 10_000, 500),
            meta: classic_meta(21, ops),
            post_apply_fee_changes: changes([]),
        }],
    );
    let xlm = sac(&Asset::Native);
    let usd_c = sac(&usd);
    let memo = Some(json!({"id": "7"}));
    assert_events(
        &lcm,
        &[
            json!({"meta": meta(100, &hash, 1, None, &xlm, None), "fee": {"from": g(1), "asset": native(), "amount": "500"}}),
            json!({"meta": meta(100, &hash, 1, Some(1), &xlm, memo.clone()), "transfer": {"from": g(1), "to": g(2), "asset": native(), "amount": "100"}}),
            json!({"meta": meta(100, &hash, 1, Some(2), &usd_c, memo.clone()), "mint": {"to": g(1), "asset": issued("USD", 9), "amount": "50"}}),
            json!({"meta": meta(100, &hash, 1, Some(3), &usd_c, None), "burn": {"from": g(1), "asset": issued("USD", 9), "amount": "20"}}),
            json!({"meta": meta(100, &hash, 1, Some(4), &usd_c, memo), "transfer": {"from": g(9), "to": g(9), "asset": issued("USD", 9), "amount": "5"}}),
            json!({"meta": meta(100, &hash, 1, Some(5), &xlm, Some(json!({"id": "99"}))), "transfer": {"from": g(1), "to": g(2), "asset": native(), "amount": "10"}}),
        ],
    );
    verify_events(&EventsProcessor::new(NET), &lcm).unwrap();
}

fn reconciling_tx(seq: i64, source_after: i64) -> TxSpec {
    let env = envelope(
        mux(1),
        seq,
        Memo::None,
        vec![payment(None, mux(2), Asset::Native, 100)],
        false,
    );
    let ops = vec![changes(
        update(account_entry(1, 9_900), account_entry(1, source_after))
            .into_iter()
            .chain(update(account_entry(2, 0), account_entry(2, 100))),
    )];
    TxSpec {
        envelope: env,
        fee_charged: 100,
        results: Some(vec![OperationResultTr::Payment(PaymentResult::Success)]),
        fee_changes: fee_update(1, 10_000, 100),
        meta: classic_meta(7, ops),
        post_apply_fee_changes: changes([]),
    }
}

#[test]
fn before_protocol_8_unexplained_lumen_changes_become_a_leading_mint_or_trailing_burn() {
    // The source lost 70 (30 were created) in one tx and 130 (30 destroyed) in the other.
    let (created, destroyed) = (reconciling_tx(1, 9_830), reconciling_tx(2, 9_770));
    let (h1, h2) = (tx_hash(&created.envelope), tx_hash(&destroyed.envelope));
    let lcm = ledger(50, 7, vec![created, destroyed]);
    let xlm = sac(&Asset::Native);
    let fee = |h: &str, i| json!({"meta": meta(50, h, i, None, &xlm, None), "fee": {"from": g(1), "asset": native(), "amount": "100"}});
    let transfer = |h: &str, i| json!({"meta": meta(50, h, i, Some(1), &xlm, None), "transfer": {"from": g(1), "to": g(2), "asset": native(), "amount": "100"}});
    assert_events(
        &lcm,
        &[
            fee(&h1, 1),
            fee(&h2, 2),
            json!({"meta": meta(50, &h1, 1, Some(1), &xlm, None), "mint": {"to": g(1), "asset": native(), "amount": "30"}}),
            transfer(&h1, 1),
            transfer(&h2, 2),
            json!({"meta": meta(50, &h2, 2, Some(1), &xlm, None), "burn": {"from": g(1), "asset": native(), "amount": "30"}}),
        ],
    );
    // The fee-only balance view still conserves per transaction with the correction.
    let p = EventsProcessor::new(NET);
    let mut single = reconciling_tx(3, 9_830);
    single.fee_changes = fee_update(1, 10_000, 100);
    verify_events(&p, &ledger(51, 7, vec![single])).unwrap();
}

#[test]
fn old_meta_before_protocol_10_is_rejected_with_the_ledger_named() {
    let mut t = reconciling_tx(1, 9_800);
    t.meta = TransactionMeta::V1(TransactionMetaV1 {
        tx_changes: Default::default(),
        operations: Default::default(),
    });
    let err = EventsProcessor::new(NET)
        .events_from_ledger(&ledger(52, 7, vec![t]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            TtpError::BadMetaVersion {
                ledger: 52,
                version: 1,
                protocol: 7
            }
        ),
        "{err}"
    );
}

#[test]
fn a_wrong_passphrase_is_reported_as_an_unknown_transaction_hash() {
    let lcm = ledger(53, 21, vec![reconciling_tx(1, 9_800)]);
    let err = EventsProcessor::new("another network")
        .events_from_ledger(&lcm)
        .unwrap_err();
    assert!(
        matches!(
            err,
            TtpError::UnknownTxHash {
                ledger: 53,
                index: 1,
                ..
            }
        ),
        "{err}"
    );
}

fn soroban_tx(
    source: u8,
    seq: i64,
    events: Vec<ContractEvent>,
    protocol: u32,
    refund: i64,
) -> TxSpec {
    let env = envelope(mux(source), seq, Memo::None, vec![op(None, invoke())], true);
    let fee_changes = fee_update(source, 10_000, 1_000);
    let refund_changes = changes(update(
        account_entry(source, 9_000),
        account_entry(source, 9_000 + refund),
    ));
    let result =
        OperationResultTr::InvokeHostFunction(InvokeHostFunctionResult::Success(Hash([0; 32])));
    let (meta, post) = if protocol >= 23 {
        (
            TransactionMeta::V4(TransactionMetaV4 {
                operations: vec![OperationMetaV2 {
                    ext: ExtensionPoint::V0,
                    changes: changes([]),
                    events: events.try_into().unwrap(),
                }]
                .try_into()
                .unwrap(),
                ..Default::default()
            }),
            refund_changes,
        )
    } else {
        (
            TransactionMeta::V3(TransactionMetaV3 {
                operations: vec![OperationMeta {
                    changes: changes([]),
                }]
                .try_into()
                .unwrap(),
                tx_changes_after: refund_changes,
                soroban_meta: Some(SorobanTransactionMeta {
                    ext: SorobanTransactionMetaExt::V0,
                    events: events.try_into().unwrap(),
                    return_value: ScVal::Void,
                    diagnostic_events: Default::default(),
                }),
                ..Default::default()
            }),
            changes([]),
        )
    };
    TxSpec {
        envelope: env,
        fee_charged: 777,
        results: Some(vec![result]),
        fee_changes,
        meta,
        post_apply_fee_changes: post,
    }
}

fn map(entries: Vec<(&str, ScVal)>) -> ScVal {
    ScVal::Map(Some(ScMap(
        entries
            .into_iter()
            .map(|(k, v)| ScMapEntry {
                key: sym(k),
                val: v,
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
    )))
}

#[test]
fn cap67_token_events_with_muxed_data_and_refunds_closing_a_protocol_23_ledger() {
    let usd = credit("USD", 9);
    let custom = [7u8; 32];
    let holder = [8u8; 32];
    let usd_sep11 = format!("USD:{}", g(9));
    let tx1_events = vec![
        contract_event(
            sac_id(&Asset::Native),
            vec![
                sym("transfer"),
                addr(1),
                contract_addr(holder),
                string("native"),
            ],
            map(vec![("amount", i128(500)), ("to_muxed_id", ScVal::U64(42))]),
        ),
        contract_event(custom, vec![sym("transfer"), addr(1), addr(2)], i128(77)),
        contract_event(custom, vec![sym("approve"), addr(1), addr(2)], i128(1)),
        contract_event(
            sac_id(&usd),
            vec![sym("mint"), addr(2), string(&usd_sep11)],
            map(vec![
                ("amount", i128(9)),
                (
                    "to_muxed_id",
                    ScVal::Bytes(ScBytes(vec![1, 2, 3].try_into().unwrap())),
                ),
            ]),
        ),
        // Names an asset whose contract is not the emitter: a token event without an asset.
        contract_event(
            sac_id(&Asset::Native),
            vec![sym("transfer"), addr(1), addr(2), string(&usd_sep11)],
            i128(3),
        ),
        contract_event(
            custom,
            vec![sym("transfer"), addr(1), addr(2)],
            ScVal::U32(5),
        ),
    ];
    let tx2_events = vec![contract_event(custom, vec![sym("burn"), addr(2)], i128(5))];
    let (t1, t2) = (
        soroban_tx(1, 1, tx1_events, 23, 300),
        soroban_tx(2, 1, tx2_events, 23, 100),
    );
    let (h1, h2) = (tx_hash(&t1.envelope), tx_hash(&t2.envelope));
    let lcm = ledger(200, 23, vec![t1, t2]);
    let xlm = sac(&Asset::Native);
    let mut hash = vec![1u8, 2, 3];
    hash.resize(32, 0);
    use base64::Engine;
    let hash_b64 = base64::engine::general_purpose::STANDARD.encode(&hash);
    let fee = |h: &str, i, from, amount: &str| json!({"meta": meta(200, h, i, None, &xlm, None), "fee": {"from": g(from), "asset": native(), "amount": amount}});
    assert_events(
        &lcm,
        &[
            fee(&h1, 1, 1, "1000"),
            fee(&h2, 2, 2, "1000"),
            json!({"meta": meta(200, &h1, 1, Some(1), &xlm, Some(json!({"id": "42"}))), "transfer": {"from": g(1), "to": contract(holder), "asset": native(), "amount": "500"}}),
            json!({"meta": meta(200, &h1, 1, Some(1), &contract(custom), None), "transfer": {"from": g(1), "to": g(2), "amount": "77"}}),
            json!({"meta": meta(200, &h1, 1, Some(1), &sac(&usd), Some(json!({"hash": hash_b64}))), "mint": {"to": g(2), "asset": issued("USD", 9), "amount": "9"}}),
            json!({"meta": meta(200, &h1, 1, Some(1), &xlm, None), "transfer": {"from": g(1), "to": g(2), "amount": "3"}}),
            json!({"meta": meta(200, &h2, 2, Some(1), &contract(custom), None), "burn": {"from": g(2), "amount": "5"}}),
            fee(&h1, 1, 1, "-300"),
            fee(&h2, 2, 2, "-100"),
        ],
    );
}

#[test]
fn before_cap67_sac_transfers_by_the_issuer_are_mints_and_burns_and_refunds_follow_their_tx() {
    let usd = credit("USD", 9);
    let usd_sep11 = format!("USD:{}", g(9));
    let usd_c = sac_id(&usd);
    let events = vec![
        contract_event(
            usd_c,
            vec![sym("transfer"), addr(9), addr(2), string(&usd_sep11)],
            i128(40),
        ),
        contract_event(
            usd_c,
            vec![sym("transfer"), addr(2), addr(9), string(&usd_sep11)],
            i128(10),
        ),
        contract_event(
            usd_c,
            vec![sym("transfer"), addr(2), addr(3), string(&usd_sep11)],
            i128(4),
        ),
        contract_event(
            usd_c,
            vec![sym("mint"), addr(9), addr(2), string(&usd_sep11)],
            i128(3),
        ),
        contract_event(
            usd_c,
            vec![sym("burn"), addr(2), string(&usd_sep11)],
            i128(2),
        ),
        contract_event(
            usd_c,
            vec![sym("clawback"), addr(9), addr(2), string(&usd_sep11)],
            i128(1),
        ),
        // V4-shaped data is not a pre-CAP-67 token event.
        contract_event(
            usd_c,
            vec![sym("transfer"), addr(2), addr(3), string(&usd_sep11)],
            map(vec![("amount", i128(1))]),
        ),
    ];
    let (t1, t2) = (
        soroban_tx(1, 1, events, 22, 50),
        soroban_tx(2, 1, vec![], 22, 0),
    );
    let (h1, h2) = (tx_hash(&t1.envelope), tx_hash(&t2.envelope));
    let lcm = ledger(300, 22, vec![t1, t2]);
    let xlm = sac(&Asset::Native);
    let c = sac(&usd);
    let usd_j = issued("USD", 9);
    assert_events(
        &lcm,
        &[
            json!({"meta": meta(300, &h1, 1, None, &xlm, None), "fee": {"from": g(1), "asset": native(), "amount": "1000"}}),
            json!({"meta": meta(300, &h2, 2, None, &xlm, None), "fee": {"from": g(2), "asset": native(), "amount": "1000"}}),
            json!({"meta": meta(300, &h1, 1, Some(1), &c, None), "mint": {"to": g(2), "asset": usd_j, "amount": "40"}}),
            json!({"meta": meta(300, &h1, 1, Some(1), &c, None), "burn": {"from": g(2), "asset": usd_j, "amount": "10"}}),
            json!({"meta": meta(300, &h1, 1, Some(1), &c, None), "transfer": {"from": g(2), "to": g(3), "asset": usd_j, "amount": "4"}}),
            json!({"meta": meta(300, &h1, 1, Some(1), &c, None), "mint": {"to": g(2), "asset": usd_j, "amount": "3"}}),
            json!({"meta": meta(300, &h1, 1, Some(1), &c, None), "burn": {"from": g(2), "asset": usd_j, "amount": "2"}}),
            json!({"meta": meta(300, &h1, 1, Some(1), &c, None), "clawback": {"from": g(2), "asset": usd_j, "amount": "1"}}),
            json!({"meta": meta(300, &h1, 1, None, &xlm, None), "fee": {"from": g(1), "asset": native(), "amount": "-50"}}),
        ],
    );
}

fn lp_entry(id: u8, a: &Asset, b: &Asset, ra: i64, rb: i64) -> LedgerEntry {
    entry(LedgerEntryData::LiquidityPool(LiquidityPoolEntry {
        liquidity_pool_id: PoolId(Hash(key(id))),
        body: LiquidityPoolEntryBody::LiquidityPoolConstantProduct(
            LiquidityPoolEntryConstantProduct {
                params: LiquidityPoolConstantProductParameters {
                    asset_a: a.clone(),
                    asset_b: b.clone(),
                    fee: 30,
                },
                reserve_a: ra,
                reserve_b: rb,
                total_pool_shares: 1000,
                pool_shares_trust_line_count: 1,
            },
        ),
    }))
}

fn cb_entry(id: [u8; 32], asset: &Asset, amount: i64) -> LedgerEntry {
    entry(LedgerEntryData::ClaimableBalance(ClaimableBalanceEntry {
        balance_id: ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(id)),
        claimants: Default::default(),
        asset: asset.clone(),
        amount,
        ext: ClaimableBalanceEntryExt::V0,
    }))
}

fn cb_key(id: [u8; 32]) -> LedgerKey {
    LedgerKey::ClaimableBalance(LedgerKeyClaimableBalance {
        balance_id: ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(id)),
    })
}

#[test]
fn revoking_a_trustline_redeems_pool_shares_into_balances_and_burns_the_trustors_own_asset() {
    use sha2::Digest;
    let (eur, usd) = (credit("EUR", 1), credit("USD", 9));
    // The issuer of USD revokes account 1's USD trustline; account 1 issues EUR.
    let env = envelope(
        mux(9),
        77,
        Memo::None,
        vec![op(
            None,
            OperationBody::SetTrustLineFlags(SetTrustLineFlagsOp {
                trustor: acct(1),
                asset: usd.clone(),
                clear_flags: 1,
                set_flags: 0,
            }),
        )],
        false,
    );
    let hash = tx_hash(&env);
    let preimage = HashIdPreimage::PoolRevokeOpId(HashIdPreimageRevokeId {
        source_account: acct(9),
        seq_num: SequenceNumber(77),
        op_num: 0,
        liquidity_pool_id: PoolId(Hash(key(5))),
        asset: usd.clone(),
    });
    let cb_id: [u8; 32] = sha2::Sha256::digest(preimage.to_xdr(Limits::none()).unwrap()).into();
    let op_changes = changes(
        update(
            lp_entry(5, &eur, &usd, 1_000, 2_000),
            lp_entry(5, &eur, &usd, 900, 1_800),
        )
        .into_iter()
        .chain([LedgerEntryChange::Created(cb_entry(cb_id, &usd, 200))]),
    );
    let lcm = ledger(
        400,
        21,
        vec![TxSpec {
            envelope: env,
            fee_charged: 100,
            results: Some(vec![OperationResultTr::SetTrustLineFlags(
                SetTrustLineFlagsResult::Success,
            )]),
            fee_changes: fee_update(9, 10_000, 100),
            meta: classic_meta(21, vec![op_changes]),
            post_apply_fee_changes: changes([]),
        }],
    );
    let xlm = sac(&Asset::Native);
    assert_events(
        &lcm,
        &[
            json!({"meta": meta(400, &hash, 1, None, &xlm, None), "fee": {"from": g(9), "asset": native(), "amount": "100"}}),
            json!({"meta": meta(400, &hash, 1, Some(1), &sac(&usd), None), "transfer": {"from": pool(5), "to": balance(cb_id), "asset": issued("USD", 9), "amount": "200"}}),
            json!({"meta": meta(400, &hash, 1, Some(1), &sac(&eur), None), "burn": {"from": pool(5), "asset": issued("EUR", 1), "amount": "100"}}),
        ],
    );
    verify_events(&EventsProcessor::new(NET), &lcm).unwrap();
}

#[test]
fn path_payments_emit_two_events_per_trade_then_the_delivery() {
    let (eur, usd) = (credit("EUR", 8), credit("USD", 9));
    let dest = MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
        id: 5,
        ed25519: Uint256(key(2)),
    });
    let env = envelope(
        mux(1),
        3,
        Memo::None,
        vec![op(
            None,
            OperationBody::PathPaymentStrictSend(PathPaymentStrictSendOp {
                send_asset: Asset::Native,
                send_amount: 100,
                destination: dest,
                dest_asset: usd.clone(),
                dest_min: 1,
                path: vec![eur.clone()].try_into().unwrap(),
            }),
        )],
        false,
    );
    let hash = tx_hash(&env);
    let result = OperationResultTr::PathPaymentStrictSend(PathPaymentStrictSendResult::Success(
        PathPaymentStrictSendResultSuccess {
            offers: vec![
                ClaimAtom::LiquidityPool(ClaimLiquidityAtom {
                    liquidity_pool_id: PoolId(Hash(key(5))),
                    asset_sold: eur.clone(),
                    amount_sold: 50,
                    asset_bought: Asset::Native,
                    amount_bought: 100,
                }),
                ClaimAtom::OrderBook(ClaimOfferAtom {
                    seller_id: acct(3),
                    offer_id: 1,
                    asset_sold: usd.clone(),
                    amount_sold: 20,
                    asset_bought: eur.clone(),
                    amount_bought: 50,
                }),
            ]
            .try_into()
            .unwrap(),
            last: SimplePaymentResult {
                destination: acct(2),
                asset: usd.clone(),
                amount: 20,
            },
        },
    ));
    let lcm = ledger(
        500,
        21,
        vec![TxSpec {
            envelope: env,
            fee_charged: 100,
            results: Some(vec![result]),
            fee_changes: fee_update(1, 10_000, 100),
            meta: classic_meta(21, vec![changes([])]),
            post_apply_fee_changes: changes([]),
        }],
    );
    let (xlm, e, u) = (sac(&Asset::Native), sac(&eur), sac(&usd));
    let t = |c: &str, from: String, to: String, asset: Value, amount: &str, muxed| json!({"meta": meta(500, &hash, 1, Some(1), c, muxed), "transfer": {"from": from, "to": to, "asset": asset, "amount": amount}});
    assert_events(
        &lcm,
        &[
            json!({"meta": meta(500, &hash, 1, None, &xlm, None), "fee": {"from": g(1), "asset": native(), "amount": "100"}}),
            t(&e, pool(5), g(1), issued("EUR", 8), "50", None),
            t(&xlm, g(1), pool(5), native(), "100", None),
            t(&u, g(3), g(1), issued("USD", 9), "20", None),
            t(&e, g(1), g(3), issued("EUR", 8), "50", None),
            t(
                &u,
                g(1),
                g(2),
                issued("USD", 9),
                "20",
                Some(json!({"id": "5"})),
            ),
        ],
    );
}

#[test]
fn claimable_balances_clawbacks_account_lifecycle_and_inflation() {
    let usd = credit("USD", 9);
    let created = [4u8; 32];
    let clawed = [6u8; 32];
    let muxed_a = MuxedAccount::MuxedEd25519(MuxedAccountMed25519 {
        id: 3,
        ed25519: Uint256(key(1)),
    });
    let env = envelope(
        mux(9),
        11,
        Memo::Text("hi".try_into().unwrap()),
        vec![
            op(
                None,
                OperationBody::CreateClaimableBalance(CreateClaimableBalanceOp {
                    asset: usd.clone(),
                    amount: 10,
                    claimants: Default::default(),
                }),
            ),
            op(
                None,
                OperationBody::ClawbackClaimableBalance(ClawbackClaimableBalanceOp {
                    balance_id: ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(clawed)),
                }),
            ),
            op(
                None,
                OperationBody::Clawback(ClawbackOp {
                    asset: usd.clone(),
                    from: muxed_a,
                    amount: 4,
                }),
            ),
            op(
                Some(mux(1)),
                OperationBody::CreateAccount(CreateAccountOp {
                    destination: acct(4),
                    starting_balance: 1_000,
                }),
            ),
            op(Some(mux(1)), OperationBody::AccountMerge(mux(2))),
            op(
                Some(mux(2)),
                OperationBody::ClaimClaimableBalance(ClaimClaimableBalanceOp {
                    balance_id: ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(created)),
                }),
            ),
            op(None, OperationBody::Inflation),
            op(
                None,
                OperationBody::BumpSequence(BumpSequenceOp {
                    bump_to: SequenceNumber(12),
                }),
            ),
        ],
        false,
    );
    let hash = tx_hash(&env);
    let results = vec![
        OperationResultTr::CreateClaimableBalance(CreateClaimableBalanceResult::Success(
            ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash(created)),
        )),
        OperationResultTr::ClawbackClaimableBalance(ClawbackClaimableBalanceResult::Success),
        OperationResultTr::Clawback(ClawbackResult::Success),
        OperationResultTr::CreateAccount(CreateAccountResult::Success),
        OperationResultTr::AccountMerge(AccountMergeResult::Success(123)),
        OperationResultTr::ClaimClaimableBalance(ClaimClaimableBalanceResult::Success),
        OperationResultTr::Inflation(InflationResult::Success(
            vec![
                InflationPayout {
                    destination: acct(2),
                    amount: 11,
                },
                InflationPayout {
                    destination: acct(3),
                    amount: 12,
                },
            ]
            .try_into()
            .unwrap(),
        )),
        OperationResultTr::BumpSequence(BumpSequenceResult::Success),
    ];
    let removed = |id, amount| {
        changes([
            LedgerEntryChange::State(cb_entry(id, &usd, amount)),
            LedgerEntryChange::Removed(cb_key(id)),
        ])
    };
    let ops = vec![
        changes([]),
        removed(clawed, 7),
        changes([]),
        changes([]),
        changes([]),
        removed(created, 10),
        changes([]),
        changes([]),
    ];
    // A failed transaction in the same ledger pays its fee and nothing else.
    let failed_env = envelope(
        mux(3),
        1,
        Memo::None,
        vec![payment(None, mux(2), Asset::Native, 5)],
        false,
    );
    let failed_hash = tx_hash(&failed_env);
    let lcm = ledger(
        600,
        21,
        vec![
            TxSpec {
                envelope: env,
                fee_charged: 800,
                results: Some(results),
                fee_changes: fee_update(9, 10_000, 800),
                meta: classic_meta(21, ops),
                post_apply_fee_changes: changes([]),
            },
            TxSpec {
                envelope: failed_env,
                fee_charged: 100,
                results: None,
                fee_changes: fee_update(3, 10_000, 100),
                meta: classic_meta(21, vec![]),
                post_apply_fee_changes: changes([]),
            },
        ],
    );
    let (xlm, u) = (sac(&Asset::Native), sac(&usd));
    let text = Some(json!({"text": "hi"}));
    let m = |op, c: &str, muxed| meta(600, &hash, 1, Some(op), c, muxed);
    assert_events(
        &lcm,
        &[
            json!({"meta": meta(600, &hash, 1, None, &xlm, None), "fee": {"from": g(9), "asset": native(), "amount": "800"}}),
            json!({"meta": meta(600, &failed_hash, 2, None, &xlm, None), "fee": {"from": g(3), "asset": native(), "amount": "100"}}),
            json!({"meta": m(1, &u, None), "mint": {"to": balance(created), "asset": issued("USD", 9), "amount": "10"}}),
            json!({"meta": m(2, &u, None), "clawback": {"from": balance(clawed), "asset": issued("USD", 9), "amount": "7"}}),
            json!({"meta": m(3, &u, None), "clawback": {"from": g(1), "asset": issued("USD", 9), "amount": "4"}}),
            json!({"meta": m(4, &xlm, text.clone()), "transfer": {"from": g(1), "to": g(4), "asset": native(), "amount": "1000"}}),
            json!({"meta": m(5, &xlm, text.clone()), "transfer": {"from": g(1), "to": g(2), "asset": native(), "amount": "123"}}),
            json!({"meta": m(6, &u, text), "transfer": {"from": balance(created), "to": g(2), "asset": issued("USD", 9), "amount": "10"}}),
            json!({"meta": m(7, &xlm, None), "mint": {"to": g(2), "asset": native(), "amount": "11"}}),
            json!({"meta": m(7, &xlm, None), "mint": {"to": g(3), "asset": native(), "amount": "12"}}),
        ],
    );
}

#[test]
fn a_claim_without_its_balance_in_the_changes_fails_the_ledger_with_the_operation_named() {
    let env = envelope(
        mux(2),
        1,
        Memo::None,
        vec![op(
            None,
            OperationBody::ClaimClaimableBalance(ClaimClaimableBalanceOp {
                balance_id: ClaimableBalanceId::ClaimableBalanceIdTypeV0(Hash([4; 32])),
            }),
        )],
        false,
    );
    let lcm = ledger(
        700,
        21,
        vec![TxSpec {
            envelope: env,
            fee_charged: 100,
            results: Some(vec![OperationResultTr::ClaimClaimableBalance(
                ClaimClaimableBalanceResult::Success,
            )]),
            fee_changes: fee_update(2, 10_000, 100),
            meta: classic_meta(21, vec![changes([])]),
            post_apply_fee_changes: changes([]),
        }],
    );
    let err = EventsProcessor::new(NET)
        .events_from_ledger(&lcm)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("ledger 700")
            && msg.contains("operation 0")
            && msg.contains("no claimable balance"),
        "{msg}"
    );
}
