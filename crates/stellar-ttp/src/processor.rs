//! The ledger → events entry point and the event order of a ledger.

use flowctl_proto::token_transfer::{token_transfer_event::Event, TokenTransferEvent};
use stellar_xdr::{Asset, LedgerCloseMeta, Operation};

use crate::balances;
use crate::error::TtpError;
use crate::events::{self, Ctx};
use crate::fees;
use crate::keys::{self, AssetKey};
use crate::ledger::{self, Tx};
use crate::operations;

/// Derives token-transfer events from ledgers of one network.
#[derive(Clone, Debug)]
pub struct EventsProcessor {
    passphrase: String,
    network_id: [u8; 32],
}

/// The events of one transaction, split the way the ledger order needs them.
pub struct TransactionEvents {
    pub fee: TokenTransferEvent,
    pub refund: Option<TokenTransferEvent>,
    pub operations: Vec<TokenTransferEvent>,
}

impl EventsProcessor {
    pub fn new(network_passphrase: impl Into<String>) -> Self {
        let passphrase = network_passphrase.into();
        let network_id = keys::network_id(&passphrase);
        EventsProcessor {
            passphrase,
            network_id,
        }
    }

    pub fn network_passphrase(&self) -> &str {
        &self.passphrase
    }

    pub fn network_id(&self) -> &[u8; 32] {
        &self.network_id
    }

    /// All events of a ledger in order: every transaction's fee first, then each
    /// transaction's operation events. Soroban refunds follow their transaction's
    /// operations before protocol 23 and close the ledger from protocol 23 on, matching
    /// when core applies them.
    pub fn events_from_ledger(
        &self,
        lcm: &LedgerCloseMeta,
    ) -> Result<Vec<TokenTransferEvent>, TtpError> {
        let hdr = ledger::header(lcm);
        let p23 = hdr.ledger_version >= 23;
        let mut ctx = Ctx::new(&self.network_id, hdr.scp_value.close_time.0);
        let txs = ledger::transactions(lcm, &self.network_id)?;
        let mut fees = Vec::with_capacity(txs.len());
        let mut ops = Vec::new();
        let mut refunds = Vec::new();
        for tx in &txs {
            let t = self.transaction_events(&mut ctx, tx)?;
            fees.push(t.fee);
            ops.extend(t.operations);
            if let Some(r) = t.refund {
                if p23 {
                    refunds.push(r);
                } else {
                    ops.push(r);
                }
            }
        }
        fees.extend(ops);
        fees.extend(refunds);
        Ok(fees)
    }

    /// The events of one transaction. Failed transactions only pay fees.
    pub(crate) fn transaction_events(
        &self,
        ctx: &mut Ctx<'_>,
        tx: &Tx<'_>,
    ) -> Result<TransactionEvents, TtpError> {
        let tx_err = |message: String| TtpError::Transaction {
            ledger: tx.ledger_sequence,
            tx_hash: tx.hash_hex.clone(),
            message,
        };
        let (fee, refund) = fees::fee_events(ctx, tx).map_err(tx_err)?;
        let mut out = TransactionEvents {
            fee,
            refund,
            operations: Vec::new(),
        };
        if !tx.successful() {
            return Ok(out);
        }
        let results = tx.operation_results();
        for (i, op) in tx.operations().iter().enumerate() {
            let i = i as u32;
            let op_err = |message: String| TtpError::Operation {
                ledger: tx.ledger_sequence,
                tx_hash: tx.hash_hex.clone(),
                op_index: i,
                op_type: op.body.name(),
                message,
            };
            let result = results.get(i as usize).ok_or_else(|| {
                op_err("the transaction result has no result for this operation".into())
            })?;
            let Some(mut events) =
                operations::operation_events(ctx, tx, i, op, result).map_err(op_err)?
            else {
                continue;
            };
            if tx.protocol_version < 8 {
                reconcile_native(ctx, tx, i, op, &mut events).map_err(op_err)?;
            }
            out.operations.extend(events);
        }
        Ok(out)
    }
}

/// Before protocol 8 core had bugs that created or destroyed lumens in some operations
/// (CAP-67, "retroactively emitting events"). Whatever the source account's lumen balance
/// did beyond the derived events becomes a mint (listed first) or a burn (listed last).
fn reconcile_native(
    ctx: &mut Ctx<'_>,
    tx: &Tx<'_>,
    op_index: u32,
    op: &Operation,
    events: &mut Vec<TokenTransferEvent>,
) -> Result<(), String> {
    let raw = tx.operation_changes(op_index)?;
    let from_changes = balances::from_changes([raw])?;
    let from_events = balances::from_events(events.iter())?;
    let holder = operations::op_source(tx, op).unmuxed().strkey();
    let key = (holder.clone(), AssetKey::Native);
    let diff =
        from_changes.get(&key).copied().unwrap_or(0) - from_events.get(&key).copied().unwrap_or(0);
    if diff == 0 {
        return Ok(());
    }
    let meta = ctx.asset_meta(tx, Some(op_index), &Asset::Native);
    if diff > 0 {
        events.insert(
            0,
            events::mint(meta, holder, diff.to_string(), Some(events::native())),
        );
    } else {
        events.push(events::burn(
            meta,
            holder,
            (-diff).to_string(),
            Some(events::native()),
        ));
    }
    Ok(())
}

/// The asset of an event, if it is a classic asset or a SAC token.
pub fn event_asset(e: &TokenTransferEvent) -> Option<&flowctl_proto::asset::Asset> {
    match e.event.as_ref()? {
        Event::Transfer(t) => t.asset.as_ref(),
        Event::Mint(t) => t.asset.as_ref(),
        Event::Burn(t) => t.asset.as_ref(),
        Event::Clawback(t) => t.asset.as_ref(),
        Event::Fee(t) => t.asset.as_ref(),
    }
}
