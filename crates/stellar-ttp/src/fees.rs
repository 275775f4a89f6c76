//! Fee events. Classic transactions pay `fee_charged`. Soroban transactions are charged
//! the full resource fee up front and refunded the unused part later; CAP-67 shows the
//! refund as a second fee event with a negative amount.

use flowctl_proto::token_transfer::TokenTransferEvent;
use stellar_xdr::{LedgerEntryChange, LedgerEntryData};

use crate::events::{self, Ctx};
use crate::keys::{self, Party};
use crate::ledger::Tx;

/// The fee event of a transaction and, for Soroban transactions with a refund, the refund.
pub fn fee_events(
    ctx: &mut Ctx<'_>,
    tx: &Tx<'_>,
) -> Result<(TokenTransferEvent, Option<TokenTransferEvent>), String> {
    let fee_account = tx.fee_account();
    let payer = Party::from_muxed(&fee_account).unmuxed();
    let payer_s = payer.strkey();
    let meta = ctx.asset_meta(tx, None, &stellar_xdr::Asset::Native);
    if !tx.is_soroban() {
        let fee = tx.result.result.fee_charged;
        return Ok((events::fee(meta, payer_s, fee.to_string()), None));
    }

    let key = payer.account_key().expect("fee payers are accounts");
    let (start, end) = balance_span(tx.fee_changes.iter(), &key);
    if end > start {
        return Err(format!(
            "invalid fee: fee account balance grew from {start} to {end} while paying fees"
        ));
    }
    let charged = start.wrapping_sub(end);
    let first = events::fee(meta.clone(), payer_s.clone(), charged.to_string());

    // Before protocol 23 the refund is in txChangesAfter, from 23 on in the post-apply fee
    // processing; only one of the two moves the balance.
    let after = match tx.tx_changes_after() {
        Some(c) => c.iter(),
        None => {
            return Err(format!(
                "soroban transaction with TransactionMeta V{}",
                tx.meta_version()
            ))
        }
    };
    let post = tx.post_apply_fee_changes.map(|c| &c.0[..]).unwrap_or(&[]);
    let (start, end) = balance_span(after.chain(post.iter()), &key);
    if start > end {
        return Err(format!(
            "invalid soroban resource refund: balance fell from {start} to {end}"
        ));
    }
    let refund = end.wrapping_sub(start);
    let second =
        (refund > 0).then(|| events::fee(meta, payer_s, refund.wrapping_neg().to_string()));
    Ok((first, second))
}

/// The account's balance in the last `STATE` and the last `UPDATED` entry of the changes
/// (0 when absent), which brackets what one fee step did to it.
fn balance_span<'a>(
    changes: impl Iterator<Item = &'a LedgerEntryChange>,
    key: &[u8; 32],
) -> (i64, i64) {
    let (mut start, mut end) = (0, 0);
    for c in changes {
        match c {
            LedgerEntryChange::State(e) => {
                if let LedgerEntryData::Account(a) = &e.data {
                    if &keys::account_key(&a.account_id) == key {
                        start = a.balance;
                    }
                }
            }
            LedgerEntryChange::Updated(e) => {
                if let LedgerEntryData::Account(a) = &e.data {
                    if &keys::account_key(&a.account_id) == key {
                        end = a.balance;
                    }
                }
            }
            _ => {}
        }
    }
    (start, end)
}
