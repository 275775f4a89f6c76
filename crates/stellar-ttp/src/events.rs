//! Building `TokenTransferEvent`s: the meta every event carries, the five event kinds,
//! and the rule that turns a movement into a mint, burn or transfer.

use std::collections::HashMap;

use flowctl_proto::asset as proto_asset;
use flowctl_proto::token_transfer::{
    muxed_info, token_transfer_event::Event, Burn, Clawback, EventMeta, Fee, Mint, MuxedInfo,
    TokenTransferEvent, Transfer,
};
use stellar_xdr::{Asset, Memo};

use crate::keys::{self, Party};
use crate::ledger::Tx;

/// Per-ledger state shared by all event builders: the network and a cache of SAC
/// contract addresses, since hashing the same asset for every event is the hot path.
pub struct Ctx<'n> {
    pub network_id: &'n [u8; 32],
    pub closed_at: prost_types::Timestamp,
    contracts: HashMap<Asset, String>,
}

impl<'n> Ctx<'n> {
    pub fn new(network_id: &'n [u8; 32], close_time: u64) -> Self {
        Ctx {
            network_id,
            closed_at: prost_types::Timestamp {
                seconds: close_time as i64,
                nanos: 0,
            },
            contracts: HashMap::new(),
        }
    }

    pub fn contract_address(&mut self, asset: &Asset) -> String {
        if let Some(c) = self.contracts.get(asset) {
            return c.clone();
        }
        let c = keys::contract_strkey(&keys::sac_contract_id(self.network_id, asset));
        self.contracts.insert(asset.clone(), c.clone());
        c
    }

    pub fn meta(&self, tx: &Tx<'_>, op_index: Option<u32>, contract_address: String) -> EventMeta {
        EventMeta {
            ledger_sequence: tx.ledger_sequence,
            closed_at: Some(self.closed_at),
            tx_hash: tx.hash_hex.clone(),
            transaction_index: tx.index,
            // SEP-35 operation indexes are 1-based.
            operation_index: op_index.map(|i| i + 1),
            contract_address,
            to_muxed_info: None,
        }
    }

    pub fn asset_meta(&mut self, tx: &Tx<'_>, op_index: Option<u32>, asset: &Asset) -> EventMeta {
        let c = self.contract_address(asset);
        self.meta(tx, op_index, c)
    }

    /// A movement of a classic asset between two parties. The issuer of a credit asset
    /// does not hold it: paying from the issuer mints, paying to it burns (CAP-67).
    #[allow(clippy::too_many_arguments)]
    pub fn movement(
        &mut self,
        tx: &Tx<'_>,
        op_index: u32,
        asset: &Asset,
        from: Party,
        to: Party,
        amount: String,
        with_muxed_info: bool,
    ) -> TokenTransferEvent {
        let issuer = keys::issuer_key(asset);
        let is_issuer = |p: &Party| issuer.is_some() && p.account_key() == issuer;
        let (from_issuer, to_issuer) = (is_issuer(&from), is_issuer(&to));
        let mut meta = self.asset_meta(tx, Some(op_index), asset);
        let asset = Some(keys::proto_asset(asset));
        let from_s = from.unmuxed().strkey();
        let to_s = to.unmuxed().strkey();
        let is_burn = to_issuer && !from_issuer;
        if with_muxed_info && !is_burn {
            meta.to_muxed_info = destination_muxed_info(to, tx);
        }
        // An issuer paying itself is a transfer (seen on pubnet), not a mint and a burn.
        let event = if from_issuer && !to_issuer {
            Event::Mint(Mint {
                to: to_s,
                asset,
                amount,
            })
        } else if to_issuer && !from_issuer {
            Event::Burn(Burn {
                from: from_s,
                asset,
                amount,
            })
        } else {
            Event::Transfer(Transfer {
                from: from_s,
                to: to_s,
                asset,
                amount,
            })
        };
        TokenTransferEvent {
            meta: Some(meta),
            event: Some(event),
        }
    }
}

/// Who the payment was meant for inside the destination account: the muxed id of an
/// `M…` destination, else the transaction memo. Only accounts get it, never pools or
/// claimable balances.
pub fn destination_muxed_info(to: Party, tx: &Tx<'_>) -> Option<MuxedInfo> {
    match to {
        Party::Muxed { id, .. } => Some(muxed_id(id)),
        Party::Account(_) => memo_muxed_info(tx.memo()),
        _ => None,
    }
}

pub fn muxed_id(id: u64) -> MuxedInfo {
    MuxedInfo {
        content: Some(muxed_info::Content::Id(id)),
    }
}

fn memo_muxed_info(memo: &Memo) -> Option<MuxedInfo> {
    let content = match memo {
        Memo::None => return None,
        Memo::Id(id) => muxed_info::Content::Id(*id),
        Memo::Text(t) => {
            muxed_info::Content::Text(String::from_utf8_lossy(t.as_slice()).into_owned())
        }
        Memo::Hash(h) | Memo::Return(h) => muxed_info::Content::Hash(h.0.to_vec()),
    };
    Some(MuxedInfo {
        content: Some(content),
    })
}

pub fn event(meta: EventMeta, e: Event) -> TokenTransferEvent {
    TokenTransferEvent {
        meta: Some(meta),
        event: Some(e),
    }
}

pub fn fee(meta: EventMeta, from: String, amount: String) -> TokenTransferEvent {
    event(
        meta,
        Event::Fee(Fee {
            from,
            asset: Some(native()),
            amount,
        }),
    )
}

pub fn mint(
    meta: EventMeta,
    to: String,
    amount: String,
    asset: Option<proto_asset::Asset>,
) -> TokenTransferEvent {
    event(meta, Event::Mint(Mint { to, asset, amount }))
}

pub fn burn(
    meta: EventMeta,
    from: String,
    amount: String,
    asset: Option<proto_asset::Asset>,
) -> TokenTransferEvent {
    event(
        meta,
        Event::Burn(Burn {
            from,
            asset,
            amount,
        }),
    )
}

pub fn clawback(
    meta: EventMeta,
    from: String,
    amount: String,
    asset: Option<proto_asset::Asset>,
) -> TokenTransferEvent {
    event(
        meta,
        Event::Clawback(Clawback {
            from,
            asset,
            amount,
        }),
    )
}

pub fn native() -> proto_asset::Asset {
    proto_asset::Asset {
        asset_type: Some(proto_asset::asset::AssetType::Native(true)),
    }
}
