//! Net balance changes per (holder, asset), computed two independent ways: from events and
//! from ledger entry changes. They must agree; the protocol < 8 correction and the
//! conservation check both rest on that.

use std::collections::BTreeMap;

use flowctl_proto::token_transfer::{token_transfer_event::Event, TokenTransferEvent};
use stellar_xdr::{LedgerEntry, LedgerEntryChange, LedgerEntryData};

use crate::changes;
use crate::keys::{AssetKey, Party};

/// A holder's balance of an asset in one ledger entry.
type Holding = (String, AssetKey, i128);

/// (holder strkey, asset) → net change in stroops. Zero entries are dropped.
pub type Deltas = BTreeMap<(String, AssetKey), i128>;

fn add(m: &mut Deltas, holder: String, asset: AssetKey, delta: i128) {
    // Contract balances live in contract data with no standard layout; they are not tracked.
    if holder.starts_with('C') {
        return;
    }
    let key = (holder, asset);
    let v = m.entry(key.clone()).or_insert(0);
    *v += delta;
    if *v == 0 {
        m.remove(&key);
    }
}

/// Balance deltas implied by events. Events of custom tokens (no asset) are skipped.
pub fn from_events<'e>(
    events: impl IntoIterator<Item = &'e TokenTransferEvent>,
) -> Result<Deltas, String> {
    let mut m = Deltas::new();
    for e in events {
        let amount = |s: &str| {
            s.parse::<i128>()
                .map_err(|_| format!("event amount {s:?} is not an integer"))
        };
        match e.event.as_ref() {
            Some(Event::Fee(f)) => add(
                &mut m,
                f.from.clone(),
                AssetKey::Native,
                -amount(&f.amount)?,
            ),
            Some(Event::Transfer(t)) => {
                let Some(a) = t.asset.as_ref().and_then(AssetKey::of_proto) else {
                    continue;
                };
                let v = amount(&t.amount)?;
                add(&mut m, t.from.clone(), a.clone(), -v);
                add(&mut m, t.to.clone(), a, v);
            }
            Some(Event::Mint(t)) => {
                let Some(a) = t.asset.as_ref().and_then(AssetKey::of_proto) else {
                    continue;
                };
                add(&mut m, t.to.clone(), a, amount(&t.amount)?);
            }
            Some(Event::Burn(t)) => {
                let Some(a) = t.asset.as_ref().and_then(AssetKey::of_proto) else {
                    continue;
                };
                add(&mut m, t.from.clone(), a, -amount(&t.amount)?);
            }
            Some(Event::Clawback(t)) => {
                let Some(a) = t.asset.as_ref().and_then(AssetKey::of_proto) else {
                    continue;
                };
                add(&mut m, t.from.clone(), a, -amount(&t.amount)?);
            }
            None => return Err("event without a kind".into()),
        }
    }
    Ok(m)
}

/// Balance deltas recorded in ledger entry change groups (accounts, trustlines,
/// claimable balances and pool reserves).
pub fn from_changes<'c>(
    groups: impl IntoIterator<Item = &'c [LedgerEntryChange]>,
) -> Result<Deltas, String> {
    let mut m = Deltas::new();
    for group in groups {
        for c in changes::pair(group)? {
            let (pre, post) = (c.pre, c.post);
            match &c.typed_entry().data {
                LedgerEntryData::Account(_) => {
                    let side = |e: Option<&LedgerEntry>| -> Result<Option<(String, i128)>, String> {
                        match e.map(|e| &e.data) {
                            None => Ok(None),
                            Some(LedgerEntryData::Account(a)) => Ok(Some((
                                Party::from_account(&a.account_id).strkey(),
                                a.balance as i128,
                            ))),
                            Some(_) => Err("account change with a non-account entry".into()),
                        }
                    };
                    let (a, b) = (side(pre)?, side(post)?);
                    let holder = b
                        .as_ref()
                        .or(a.as_ref())
                        .map(|x| x.0.clone())
                        .unwrap_or_default();
                    let delta = b.map_or(0, |x| x.1) - a.map_or(0, |x| x.1);
                    add(&mut m, holder, AssetKey::Native, delta);
                }
                LedgerEntryData::Trustline(_) => {
                    let side =
                        |e: Option<&LedgerEntry>| -> Result<Option<Option<Holding>>, String> {
                            match e.map(|e| &e.data) {
                                None => Ok(None),
                                Some(LedgerEntryData::Trustline(t)) => {
                                    Ok(Some(AssetKey::of_trustline(&t.asset).map(|a| {
                                        (
                                            Party::from_account(&t.account_id).strkey(),
                                            a,
                                            t.balance as i128,
                                        )
                                    })))
                                }
                                Some(_) => {
                                    Err("trustline change with a non-trustline entry".into())
                                }
                            }
                        };
                    let (a, b) = (side(pre)?, side(post)?);
                    // Pool-share trustlines are not token balances.
                    if matches!(a, Some(None)) || matches!(b, Some(None)) {
                        continue;
                    }
                    let (a, b) = (a.flatten(), b.flatten());
                    let (holder, asset) = match b.as_ref().or(a.as_ref()) {
                        Some(x) => (x.0.clone(), x.1.clone()),
                        None => continue,
                    };
                    let delta = b.map_or(0, |x| x.2) - a.map_or(0, |x| x.2);
                    add(&mut m, holder, asset, delta);
                }
                LedgerEntryData::ClaimableBalance(_) => {
                    let side = |e: Option<&LedgerEntry>| -> Result<Option<(String, AssetKey, i128)>, String> {
                        match e.map(|e| &e.data) {
                            None => Ok(None),
                            Some(LedgerEntryData::ClaimableBalance(cb)) => Ok(Some((
                                Party::from_balance_id(&cb.balance_id).strkey(),
                                AssetKey::of(&cb.asset),
                                cb.amount as i128,
                            ))),
                            Some(_) => Err("claimable balance change with another entry".into()),
                        }
                    };
                    let (a, b) = (side(pre)?, side(post)?);
                    let Some((holder, asset, _)) = b.clone().or(a.clone()) else {
                        continue;
                    };
                    let delta = b.map_or(0, |x| x.2) - a.map_or(0, |x| x.2);
                    add(&mut m, holder, asset, delta);
                }
                LedgerEntryData::LiquidityPool(_) => {
                    type Side = Option<(String, AssetKey, AssetKey, i128, i128)>;
                    let side = |e: Option<&LedgerEntry>| -> Result<Side, String> {
                        match e.map(|e| &e.data) {
                            None => Ok(None),
                            Some(LedgerEntryData::LiquidityPool(lp)) => {
                                let stellar_xdr::LiquidityPoolEntryBody::LiquidityPoolConstantProduct(cp) = &lp.body;
                                Ok(Some((
                                    Party::Pool(lp.liquidity_pool_id.0 .0).strkey(),
                                    AssetKey::of(&cp.params.asset_a),
                                    AssetKey::of(&cp.params.asset_b),
                                    cp.reserve_a as i128,
                                    cp.reserve_b as i128,
                                )))
                            }
                            Some(_) => Err("liquidity pool change with another entry".into()),
                        }
                    };
                    let (a, b) = (side(pre)?, side(post)?);
                    let Some((holder, asset_a, asset_b, _, _)) = b.clone().or(a.clone()) else {
                        continue;
                    };
                    let da = b.as_ref().map_or(0, |x| x.3) - a.as_ref().map_or(0, |x| x.3);
                    let db = b.as_ref().map_or(0, |x| x.4) - a.as_ref().map_or(0, |x| x.4);
                    add(&mut m, holder.clone(), asset_a, da);
                    add(&mut m, holder, asset_b, db);
                }
                _ => {}
            }
        }
    }
    Ok(m)
}
