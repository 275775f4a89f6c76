//! Conservation check: for every transaction, the net balance change the events describe
//! per (holder, asset) equals what the ledger entry changes recorded.

use stellar_xdr::LedgerCloseMeta;

use crate::balances::{self, Deltas};
use crate::error::TtpError;
use crate::events::Ctx;
use crate::ledger;
use crate::processor::EventsProcessor;

/// A transaction whose events do not add up to its ledger changes.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Events(#[from] TtpError),
    #[error("ledger {ledger}, tx {tx_hash}: {message}")]
    Changes {
        ledger: u32,
        tx_hash: String,
        message: String,
    },
    #[error("ledger {ledger}, tx {tx_hash}: balance deltas differ between events and ledger changes:\n{diff}")]
    Mismatch {
        ledger: u32,
        tx_hash: String,
        diff: String,
    },
}

/// Checks every transaction of a ledger.
pub fn verify_events(
    processor: &EventsProcessor,
    lcm: &LedgerCloseMeta,
) -> Result<(), VerifyError> {
    let hdr = ledger::header(lcm);
    let mut ctx = Ctx::new(processor.network_id(), hdr.scp_value.close_time.0);
    for tx in ledger::transactions(lcm, processor.network_id())? {
        let t = processor.transaction_events(&mut ctx, &tx)?;
        let events = std::iter::once(&t.fee)
            .chain(t.refund.iter())
            .chain(t.operations.iter());
        let from_events =
            balances::from_events(events).map_err(|message| VerifyError::Changes {
                ledger: tx.ledger_sequence,
                tx_hash: tx.hash_hex.clone(),
                message,
            })?;
        let changes_err = |message: String| VerifyError::Changes {
            ledger: tx.ledger_sequence,
            tx_hash: tx.hash_hex.clone(),
            message,
        };
        let mut groups = vec![&tx.fee_changes.0[..]];
        groups.extend(tx.change_groups().map_err(changes_err)?);
        if let Some(post) = tx.post_apply_fee_changes {
            groups.push(&post.0[..]);
        }
        let from_changes = balances::from_changes(groups).map_err(changes_err)?;
        if from_events != from_changes {
            return Err(VerifyError::Mismatch {
                ledger: tx.ledger_sequence,
                tx_hash: tx.hash_hex.clone(),
                diff: describe(&from_events, &from_changes),
            });
        }
    }
    Ok(())
}

fn describe(events: &Deltas, changes: &Deltas) -> String {
    let mut out = String::new();
    let keys: std::collections::BTreeSet<_> = events.keys().chain(changes.keys()).collect();
    for k in keys {
        let (e, c) = (
            events.get(k).copied().unwrap_or(0),
            changes.get(k).copied().unwrap_or(0),
        );
        if e != c {
            out.push_str(&format!(
                "  {} {}: events {e}, ledger changes {c}\n",
                k.0, k.1
            ));
        }
    }
    out
}
