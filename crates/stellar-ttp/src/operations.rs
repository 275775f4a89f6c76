//! Events of classic operations, derived from the operation, its result and the ledger
//! entries it changed.

use std::collections::HashMap;

use flowctl_proto::token_transfer::TokenTransferEvent;
use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountMergeResult, Asset, ClaimAtom, ClaimableBalanceEntry, CreateClaimableBalanceResult,
    HashIdPreimage, HashIdPreimageRevokeId, InflationResult, LedgerEntryData, Limits,
    ManageBuyOfferResult, ManageSellOfferResult, Operation, OperationBody, OperationResult,
    OperationResultTr, PathPaymentStrictReceiveResult, PathPaymentStrictSendResult, PoolId,
    SequenceNumber, WriteXdr,
};

use crate::changes::{self, ChangeKind};
use crate::contract_events;
use crate::events::{self, Ctx};
use crate::keys::{self, Party};
use crate::ledger::Tx;

type Events = Vec<TokenTransferEvent>;

/// The source of an operation: its own, or the transaction's.
pub fn op_source(tx: &Tx<'_>, op: &Operation) -> Party {
    match &op.source_account {
        Some(m) => Party::from_muxed(m),
        None => Party::from_muxed(&tx.source_account()),
    }
}

/// Events of one operation of a successful transaction. `Ok(None)` means the operation
/// type never moves tokens.
pub fn operation_events(
    ctx: &mut Ctx<'_>,
    tx: &Tx<'_>,
    op_index: u32,
    op: &Operation,
    result: &OperationResult,
) -> Result<Option<Events>, String> {
    let tr = match result {
        OperationResult::OpInner(tr) => Some(tr),
        _ => None,
    };
    let src = op_source(tx, op);
    let missing = || {
        format!(
            "operation result does not match a successful {}",
            op.body.name()
        )
    };
    let events = match &op.body {
        OperationBody::CreateAccount(o) => vec![ctx.movement(
            tx,
            op_index,
            &Asset::Native,
            src,
            Party::from_account(&o.destination),
            o.starting_balance.to_string(),
            true,
        )],
        OperationBody::AccountMerge(dest) => match tr {
            Some(OperationResultTr::AccountMerge(AccountMergeResult::Success(balance))) => {
                vec![ctx.movement(
                    tx,
                    op_index,
                    &Asset::Native,
                    src,
                    Party::from_muxed(dest),
                    balance.to_string(),
                    true,
                )]
            }
            _ => return Err(missing()),
        },
        OperationBody::Payment(o) => vec![ctx.movement(
            tx,
            op_index,
            &o.asset,
            src,
            Party::from_muxed(&o.destination),
            o.amount.to_string(),
            true,
        )],
        OperationBody::CreateClaimableBalance(o) => match tr {
            Some(OperationResultTr::CreateClaimableBalance(
                CreateClaimableBalanceResult::Success(id),
            )) => {
                vec![ctx.movement(
                    tx,
                    op_index,
                    &o.asset,
                    src,
                    Party::from_balance_id(id),
                    o.amount.to_string(),
                    false,
                )]
            }
            _ => return Err(missing()),
        },
        OperationBody::ClaimClaimableBalance(o) => {
            let cb = single_removed_balance(tx, op_index, op)?;
            vec![ctx.movement(
                tx,
                op_index,
                &cb.asset,
                Party::from_balance_id(&o.balance_id),
                src,
                cb.amount.to_string(),
                true,
            )]
        }
        OperationBody::Clawback(o) => {
            let meta = ctx.asset_meta(tx, Some(op_index), &o.asset);
            vec![events::clawback(
                meta,
                Party::from_muxed(&o.from).unmuxed().strkey(),
                o.amount.to_string(),
                Some(keys::proto_asset(&o.asset)),
            )]
        }
        OperationBody::ClawbackClaimableBalance(o) => {
            let cb = single_removed_balance(tx, op_index, op)?;
            let meta = ctx.asset_meta(tx, Some(op_index), &cb.asset);
            vec![events::clawback(
                meta,
                Party::from_balance_id(&o.balance_id).strkey(),
                cb.amount.to_string(),
                Some(keys::proto_asset(&cb.asset)),
            )]
        }
        OperationBody::AllowTrust(_) | OperationBody::SetTrustLineFlags(_) => {
            revoked_pool_shares(ctx, tx, op_index)?
        }
        OperationBody::LiquidityPoolDeposit(_) => {
            let lp = single_pool(tx, op_index, op)?;
            for (amt, asset) in [(lp.delta_a, &lp.asset_a), (lp.delta_b, &lp.asset_b)] {
                if amt <= 0 {
                    return Err(format!(
                        "deposited amount ({amt}) for asset: {}, cannot be zero or negative for LiquidityPool: {}",
                        keys::AssetKey::of(asset),
                        Party::Pool(lp.id).strkey()
                    ));
                }
            }
            let pool = Party::Pool(lp.id);
            vec![
                ctx.movement(
                    tx,
                    op_index,
                    &lp.asset_a,
                    src,
                    pool,
                    lp.delta_a.to_string(),
                    false,
                ),
                ctx.movement(
                    tx,
                    op_index,
                    &lp.asset_b,
                    src,
                    pool,
                    lp.delta_b.to_string(),
                    false,
                ),
            ]
        }
        OperationBody::LiquidityPoolWithdraw(_) => {
            let lp = single_pool(tx, op_index, op)?;
            for (amt, asset) in [(lp.delta_a, &lp.asset_a), (lp.delta_b, &lp.asset_b)] {
                // Rounding can make a withdrawal return nothing of an asset.
                if amt < 0 {
                    return Err(format!(
                        "withdrawn amount ({amt}) for asset: {}, cannot be negative for LiquidityPool: {}",
                        keys::AssetKey::of(asset),
                        Party::Pool(lp.id).strkey()
                    ));
                }
            }
            let pool = Party::Pool(lp.id);
            vec![
                ctx.movement(
                    tx,
                    op_index,
                    &lp.asset_a,
                    pool,
                    src,
                    lp.delta_a.to_string(),
                    true,
                ),
                ctx.movement(
                    tx,
                    op_index,
                    &lp.asset_b,
                    pool,
                    src,
                    lp.delta_b.to_string(),
                    true,
                ),
            ]
        }
        OperationBody::ManageBuyOffer(_) => match tr {
            Some(OperationResultTr::ManageBuyOffer(ManageBuyOfferResult::Success(s))) => {
                trades(ctx, tx, op_index, src, &s.offers_claimed)
            }
            _ => return Err(missing()),
        },
        OperationBody::ManageSellOffer(_) | OperationBody::CreatePassiveSellOffer(_) => match tr {
            Some(OperationResultTr::ManageSellOffer(ManageSellOfferResult::Success(s)))
            | Some(OperationResultTr::CreatePassiveSellOffer(ManageSellOfferResult::Success(s))) => {
                trades(ctx, tx, op_index, src, &s.offers_claimed)
            }
            _ => return Err(missing()),
        },
        OperationBody::PathPaymentStrictSend(o) => match tr {
            Some(OperationResultTr::PathPaymentStrictSend(
                PathPaymentStrictSendResult::Success(s),
            )) => {
                let mut ev = trades(ctx, tx, op_index, src, &s.offers);
                ev.push(ctx.movement(
                    tx,
                    op_index,
                    &o.dest_asset,
                    src,
                    Party::from_muxed(&o.destination),
                    s.last.amount.to_string(),
                    true,
                ));
                ev
            }
            _ => return Err(missing()),
        },
        OperationBody::PathPaymentStrictReceive(o) => match tr {
            Some(OperationResultTr::PathPaymentStrictReceive(
                PathPaymentStrictReceiveResult::Success(s),
            )) => {
                let mut ev = trades(ctx, tx, op_index, src, &s.offers);
                ev.push(ctx.movement(
                    tx,
                    op_index,
                    &o.dest_asset,
                    src,
                    Party::from_muxed(&o.destination),
                    o.dest_amount.to_string(),
                    true,
                ));
                ev
            }
            _ => return Err(missing()),
        },
        OperationBody::Inflation => match tr {
            Some(OperationResultTr::Inflation(InflationResult::Success(payouts))) => {
                let meta = ctx.asset_meta(tx, Some(op_index), &Asset::Native);
                payouts
                    .iter()
                    .map(|p| {
                        events::mint(
                            meta.clone(),
                            Party::from_account(&p.destination).strkey(),
                            p.amount.to_string(),
                            Some(events::native()),
                        )
                    })
                    .collect()
            }
            _ => return Err(missing()),
        },
        OperationBody::InvokeHostFunction(_) => {
            contract_events::operation_events(ctx, tx, op_index)?
        }
        _ => return Ok(None),
    };
    Ok(Some(events))
}

/// Two events per trade: what the seller gave the taker and what the taker paid.
fn trades(
    ctx: &mut Ctx<'_>,
    tx: &Tx<'_>,
    op_index: u32,
    src: Party,
    claims: &[ClaimAtom],
) -> Events {
    // Trades name the taker's account, never a muxed id.
    let taker = src.unmuxed();
    let mut out = Vec::with_capacity(claims.len() * 2);
    for c in claims {
        let (seller, sold, amount_sold, bought, amount_bought) = match c {
            ClaimAtom::V0(a) => (
                Party::Account(a.seller_ed25519.0),
                &a.asset_sold,
                a.amount_sold,
                &a.asset_bought,
                a.amount_bought,
            ),
            ClaimAtom::OrderBook(a) => (
                Party::from_account(&a.seller_id),
                &a.asset_sold,
                a.amount_sold,
                &a.asset_bought,
                a.amount_bought,
            ),
            ClaimAtom::LiquidityPool(a) => (
                Party::Pool(a.liquidity_pool_id.0 .0),
                &a.asset_sold,
                a.amount_sold,
                &a.asset_bought,
                a.amount_bought,
            ),
        };
        out.push(ctx.movement(
            tx,
            op_index,
            sold,
            seller,
            taker,
            amount_sold.to_string(),
            false,
        ));
        out.push(ctx.movement(
            tx,
            op_index,
            bought,
            taker,
            seller,
            amount_bought.to_string(),
            false,
        ));
    }
    out
}

/// How one operation moved a liquidity pool's reserves (absolute amounts).
pub struct PoolDelta {
    pub id: [u8; 32],
    pub asset_a: Asset,
    pub asset_b: Asset,
    pub delta_a: i64,
    pub delta_b: i64,
}

/// The pools an operation touched, in ledger-key order (the order core's meta is
/// normalised to).
pub fn pool_deltas(tx: &Tx<'_>, op_index: u32) -> Result<Vec<PoolDelta>, String> {
    let raw = tx.operation_changes(op_index)?;
    let mut out = Vec::new();
    for c in changes::pair(raw)? {
        if !matches!(c.typed_entry().data, LedgerEntryData::LiquidityPool(_)) {
            continue;
        }
        let mut d = PoolDelta {
            id: [0; 32],
            asset_a: Asset::Native,
            asset_b: Asset::Native,
            delta_a: 0,
            delta_b: 0,
        };
        let (mut pre, mut post) = ((0i64, 0i64), (0i64, 0i64));
        for (side, slot) in [(c.pre, &mut pre), (c.post, &mut post)] {
            if let Some(e) = side {
                let LedgerEntryData::LiquidityPool(lp) = &e.data else {
                    return Err("liquidity pool change with a non-pool entry".into());
                };
                let stellar_xdr::LiquidityPoolEntryBody::LiquidityPoolConstantProduct(cp) =
                    &lp.body;
                d.id = lp.liquidity_pool_id.0 .0;
                d.asset_a = cp.params.asset_a.clone();
                d.asset_b = cp.params.asset_b.clone();
                *slot = (cp.reserve_a, cp.reserve_b);
            }
        }
        d.delta_a = post.0.wrapping_sub(pre.0).wrapping_abs();
        d.delta_b = post.1.wrapping_sub(pre.1).wrapping_abs();
        out.push(d);
    }
    out.sort_by_key(|d| d.id);
    Ok(out)
}

fn single_pool(tx: &Tx<'_>, op_index: u32, op: &Operation) -> Result<PoolDelta, String> {
    let mut pools = pool_deltas(tx, op_index)?;
    match pools.len() {
        0 => Err("no liquidity pool entry found in operation changes".into()),
        1 => Ok(pools.remove(0)),
        _ => Err(format!(
            "more than one Liquidiy pool entry found for operation: {}",
            op.body.name()
        )),
    }
}

/// Claimable balances an operation created or removed (updates do not count).
fn balances(
    tx: &Tx<'_>,
    op_index: u32,
    kind: ChangeKind,
) -> Result<Vec<ClaimableBalanceEntry>, String> {
    let raw = tx.operation_changes(op_index)?;
    let mut out = Vec::new();
    for c in changes::pair(raw)? {
        if c.kind != kind {
            continue;
        }
        if let LedgerEntryData::ClaimableBalance(cb) = &c.typed_entry().data {
            out.push(cb.clone());
        }
    }
    // Same ledger-key order as pools; ids are unique so this only normalises.
    out.sort_by(|a, b| balance_hash(a).cmp(balance_hash(b)));
    Ok(out)
}

fn balance_hash(cb: &ClaimableBalanceEntry) -> &[u8; 32] {
    let stellar_xdr::ClaimableBalanceId::ClaimableBalanceIdTypeV0(h) = &cb.balance_id;
    &h.0
}

fn single_removed_balance(
    tx: &Tx<'_>,
    op_index: u32,
    op: &Operation,
) -> Result<ClaimableBalanceEntry, String> {
    let mut cbs = balances(tx, op_index, ChangeKind::Removed)?;
    match cbs.len() {
        0 => Err("no claimable balance entry found in operation changes".into()),
        1 => Ok(cbs.remove(0)),
        _ => Err(format!(
            "more than one claimable entry found for operation: {}",
            op.body.name()
        )),
    }
}

/// Revoking a trustline's authorization redeems the account's pool shares in pools
/// holding that asset into claimable balances (CAP-38). Core does not say which
/// balance came from which pool, so the balance ids are recomputed from each pool
/// and matched against the balances the operation created.
fn revoked_pool_shares(ctx: &mut Ctx<'_>, tx: &Tx<'_>, op_index: u32) -> Result<Events, String> {
    let pools = pool_deltas(tx, op_index)?;
    if pools.is_empty() {
        return Ok(vec![]);
    }
    let created = balances(tx, op_index, ChangeKind::Created)?;
    if created.is_empty() {
        return Ok(vec![]);
    }
    let by_id: HashMap<[u8; 32], &ClaimableBalanceEntry> =
        created.iter().map(|cb| (*balance_hash(cb), cb)).collect();
    let tx_source = Party::from_muxed(&tx.source_account())
        .account_key()
        .expect("accounts have keys");
    let mut out = Vec::new();
    for lp in &pools {
        let mut from_this_pool = Vec::with_capacity(2);
        for asset in [&lp.asset_a, &lp.asset_b] {
            let id = revoke_balance_id(lp.id, asset, tx.seq_num(), tx_source, op_index)?;
            if let Some(cb) = by_id.get(&id) {
                from_this_pool.push(*cb);
            }
        }
        let pool = Party::Pool(lp.id);
        match from_this_pool.as_slice() {
            [] => {}
            [cb] => {
                // Only one balance: the trustor issues the other asset, which is burned.
                let (burned, burned_amount) = if cb.asset == lp.asset_a {
                    (&lp.asset_b, lp.delta_b)
                } else {
                    (&lp.asset_a, lp.delta_a)
                };
                out.push(ctx.movement(
                    tx,
                    op_index,
                    &cb.asset,
                    pool,
                    Party::from_balance_id(&cb.balance_id),
                    cb.amount.to_string(),
                    false,
                ));
                let meta = ctx.asset_meta(tx, Some(op_index), burned);
                out.push(events::burn(
                    meta,
                    pool.strkey(),
                    burned_amount.to_string(),
                    Some(keys::proto_asset(burned)),
                ));
            }
            [a, b] => {
                for cb in [a, b] {
                    out.push(ctx.movement(
                        tx,
                        op_index,
                        &cb.asset,
                        pool,
                        Party::from_balance_id(&cb.balance_id),
                        cb.amount.to_string(),
                        false,
                    ));
                }
            }
            _ => unreachable!("at most one balance per pool asset"),
        }
    }
    Ok(out)
}

/// The claimable balance id CAP-38 assigns to redeemed pool shares.
fn revoke_balance_id(
    pool: [u8; 32],
    asset: &Asset,
    seq_num: i64,
    tx_source: [u8; 32],
    op_index: u32,
) -> Result<[u8; 32], String> {
    let preimage = HashIdPreimage::PoolRevokeOpId(HashIdPreimageRevokeId {
        source_account: stellar_xdr::AccountId(stellar_xdr::PublicKey::PublicKeyTypeEd25519(
            stellar_xdr::Uint256(tx_source),
        )),
        seq_num: SequenceNumber(seq_num),
        op_num: op_index,
        liquidity_pool_id: PoolId(stellar_xdr::Hash(pool)),
        asset: asset.clone(),
    });
    let bytes = preimage
        .to_xdr(Limits::none())
        .map_err(|e| format!("failed to encode revoke id preimage: {e}"))?;
    Ok(Sha256::digest(&bytes).into())
}
