//! SEP-41 token events emitted by contracts (`transfer`, `mint`, `burn`, `clawback`).
//! Any contract may emit them; when the contract is the Stellar Asset Contract of the
//! asset named in the last topic, the event also gets that asset.

use flowctl_proto::token_transfer::{
    muxed_info, token_transfer_event::Event, MuxedInfo, TokenTransferEvent,
};
use stellar_xdr::{ContractEvent, ContractEventBody, ContractEventType, ScVal};

use crate::events::{self, Ctx};
use crate::keys::{self, Party};
use crate::ledger::Tx;

/// Token events of one operation's contract events; events that are not SEP-41 token
/// events are skipped, as they are not token movements.
pub fn operation_events(
    ctx: &mut Ctx<'_>,
    tx: &Tx<'_>,
    op_index: u32,
) -> Result<Vec<TokenTransferEvent>, String> {
    let raw = tx.contract_events(op_index)?;
    let mut out = Vec::with_capacity(raw.len());
    for ev in raw {
        if let Some(e) = parse(ctx, tx, op_index, ev) {
            out.push(e);
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Transfer,
    Mint,
    Burn,
    Clawback,
}

fn symbol(v: &ScVal) -> Option<&[u8]> {
    match v {
        ScVal::Symbol(s) => Some(s.0.as_slice()),
        _ => None,
    }
}

fn address(v: &ScVal) -> Option<Party> {
    match v {
        ScVal::Address(a) => Party::from_sc_address(a),
        _ => None,
    }
}

fn i128_string(v: &ScVal) -> Option<String> {
    match v {
        ScVal::I128(p) => Some((((p.hi as i128) << 64) | p.lo as i128).to_string()),
        _ => None,
    }
}

fn parse(
    ctx: &mut Ctx<'_>,
    tx: &Tx<'_>,
    op_index: u32,
    ev: &ContractEvent,
) -> Option<TokenTransferEvent> {
    if ev.type_ != ContractEventType::Contract {
        return None;
    }
    let contract = ev.contract_id.as_ref()?.0 .0;
    let ContractEventBody::V0(body) = &ev.body;
    let topics = &body.topics[..];
    if topics.len() < 2 {
        return None;
    }
    let kind = match symbol(&topics[0])? {
        b"transfer" => Kind::Transfer,
        b"mint" => Kind::Mint,
        b"burn" => Kind::Burn,
        b"clawback" => Kind::Clawback,
        _ => return None,
    };
    let v4 = match tx.meta_version() {
        3 => false,
        4 => true,
        _ => return None,
    };

    // V4 (CAP-67) data is the amount, or a map of the amount and the destination's muxed id.
    let (amount, muxed) = if v4 {
        match &body.data {
            ScVal::Map(m) => amount_and_muxed(m.as_ref()?)?,
            v => (i128_string(v)?, None),
        }
    } else {
        (i128_string(&body.data)?, None)
    };

    // Topic layout: V3 names the admin in mint and clawback, V4 (CAP-67) does not.
    let n = topics.len();
    let (from, to) = match (kind, v4) {
        (Kind::Transfer, _) => {
            if n < 3 {
                return None;
            }
            (Some(address(&topics[1])?), Some(address(&topics[2])?))
        }
        (Kind::Mint, false) | (Kind::Clawback, false) => {
            if n < 3 {
                return None;
            }
            address(&topics[1])?;
            let p = address(&topics[2])?;
            if kind == Kind::Mint {
                (None, Some(p))
            } else {
                (Some(p), None)
            }
        }
        (Kind::Mint, true) => (None, Some(address(&topics[1])?)),
        (Kind::Clawback, true) | (Kind::Burn, _) => (Some(address(&topics[1])?), None),
    };

    let mut meta = ctx.meta(tx, Some(op_index), keys::contract_strkey(&contract));
    meta.to_muxed_info = muxed;

    let expected_topics = match (kind, v4) {
        (Kind::Burn, false) => 3,
        (_, false) => 4,
        (Kind::Transfer, true) => 4,
        (_, true) => 3,
    };
    let sac_asset = if n == expected_topics {
        match &topics[n - 1] {
            ScVal::String(s) if !s.0.is_empty() => keys::parse_sep11_asset(s.0.as_slice())
                .filter(|a| keys::sac_contract_id(ctx.network_id, a) == contract),
            _ => None,
        }
    } else {
        None
    };

    if let (Some(asset), false, Kind::Transfer) = (&sac_asset, v4, kind) {
        // Before CAP-67 the SAC reported issuer mints and burns as transfers.
        return Some(ctx.movement(tx, op_index, asset, from?, to?, amount, false));
    }
    let asset = sac_asset.as_ref().map(keys::proto_asset);
    let s = |p: Option<Party>| p.map(|p| p.strkey()).unwrap_or_default();
    let e = match kind {
        Kind::Transfer => Event::Transfer(flowctl_proto::token_transfer::Transfer {
            from: s(from),
            to: s(to),
            asset,
            amount,
        }),
        Kind::Mint => Event::Mint(flowctl_proto::token_transfer::Mint {
            to: s(to),
            asset,
            amount,
        }),
        Kind::Burn => Event::Burn(flowctl_proto::token_transfer::Burn {
            from: s(from),
            asset,
            amount,
        }),
        Kind::Clawback => Event::Clawback(flowctl_proto::token_transfer::Clawback {
            from: s(from),
            asset,
            amount,
        }),
    };
    Some(events::event(meta, e))
}

/// The CAP-67 map form of event data: `amount` (required) and `to_muxed_id`.
fn amount_and_muxed(map: &stellar_xdr::ScMap) -> Option<(String, Option<MuxedInfo>)> {
    let mut amount = None;
    let mut muxed = None;
    for entry in map.0.iter() {
        match symbol(&entry.key)? {
            b"amount" => amount = Some(i128_string(&entry.val)?),
            b"to_muxed_id" => {
                let content = match &entry.val {
                    ScVal::U64(id) => muxed_info::Content::Id(*id),
                    ScVal::Bytes(b) => {
                        let mut h = vec![0u8; 32];
                        let n = b.0.len().min(32);
                        h[..n].copy_from_slice(&b.0[..n]);
                        muxed_info::Content::Hash(h)
                    }
                    ScVal::String(s) => muxed_info::Content::Text(
                        String::from_utf8_lossy(s.0.as_slice()).into_owned(),
                    ),
                    _ => return None,
                };
                muxed = Some(MuxedInfo {
                    content: Some(content),
                });
            }
            _ => {}
        }
    }
    Some((amount?, muxed))
}
