//! The JSON form of an event: the protobuf JSON mapping of `TokenTransferEvent`
//! (camelCase, 64-bit integers and amounts as strings, RFC 3339 `closedAt`, absent fields
//! omitted), one object per line.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use flowctl_proto::asset::{asset::AssetType, Asset};
use flowctl_proto::token_transfer::muxed_info::Content;
use flowctl_proto::token_transfer::token_transfer_event::Event;
use flowctl_proto::token_transfer::TokenTransferEvent;
use serde_json::{json, Map, Value};

/// One event as a compact JSON line (without the newline).
pub fn event_json(ev: &TokenTransferEvent) -> String {
    let mut obj = Map::new();
    if let Some(m) = &ev.meta {
        let mut meta = Map::new();
        meta.insert("ledgerSequence".into(), json!(m.ledger_sequence));
        if let Some(ts) = &m.closed_at {
            let t = UNIX_EPOCH + Duration::new(ts.seconds.max(0) as u64, ts.nanos.max(0) as u32);
            meta.insert(
                "closedAt".into(),
                json!(humantime::format_rfc3339(t).to_string()),
            );
        }
        meta.insert("txHash".into(), json!(m.tx_hash));
        meta.insert("transactionIndex".into(), json!(m.transaction_index));
        if let Some(op) = m.operation_index {
            meta.insert("operationIndex".into(), json!(op));
        }
        meta.insert("contractAddress".into(), json!(m.contract_address));
        if let Some(content) = m.to_muxed_info.as_ref().and_then(|x| x.content.as_ref()) {
            let v = match content {
                Content::Text(t) => json!({ "text": t }),
                Content::Id(id) => json!({ "id": id.to_string() }),
                Content::Hash(h) => {
                    json!({ "hash": base64::engine::general_purpose::STANDARD.encode(h) })
                }
            };
            meta.insert("toMuxedInfo".into(), v);
        }
        obj.insert("meta".into(), Value::Object(meta));
    }
    let body = |from: Option<&str>, to: Option<&str>, asset: &Option<Asset>, amount: &str| {
        let mut b = Map::new();
        if let Some(f) = from {
            b.insert("from".into(), json!(f));
        }
        if let Some(t) = to {
            b.insert("to".into(), json!(t));
        }
        if let Some(a) = asset_json(asset) {
            b.insert("asset".into(), a);
        }
        b.insert("amount".into(), json!(amount));
        Value::Object(b)
    };
    match &ev.event {
        Some(Event::Transfer(t)) => {
            obj.insert(
                "transfer".into(),
                body(Some(&t.from), Some(&t.to), &t.asset, &t.amount),
            );
        }
        Some(Event::Mint(t)) => {
            obj.insert("mint".into(), body(None, Some(&t.to), &t.asset, &t.amount));
        }
        Some(Event::Burn(t)) => {
            obj.insert(
                "burn".into(),
                body(Some(&t.from), None, &t.asset, &t.amount),
            );
        }
        Some(Event::Clawback(t)) => {
            obj.insert(
                "clawback".into(),
                body(Some(&t.from), None, &t.asset, &t.amount),
            );
        }
        Some(Event::Fee(t)) => {
            obj.insert("fee".into(), body(Some(&t.from), None, &t.asset, &t.amount));
        }
        None => {}
    }
    Value::Object(obj).to_string()
}

fn asset_json(asset: &Option<Asset>) -> Option<Value> {
    match asset.as_ref()?.asset_type.as_ref()? {
        AssetType::Native(n) => Some(json!({ "native": n })),
        AssetType::IssuedAsset(i) => Some(json!({
            "issuedAsset": { "assetCode": i.asset_code, "issuer": i.issuer }
        })),
    }
}
