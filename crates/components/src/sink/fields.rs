//! Flat views of an event that the console and the database share.

use flowctl_proto::asset::asset::AssetType;
use flowctl_proto::token_transfer::token_transfer_event::Event;
use flowctl_proto::token_transfer::TokenTransferEvent;

pub struct Flat<'a> {
    pub kind: &'static str,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    /// `native`, `CODE:ISSUER`, or `None` for tokens without a classic asset.
    pub asset: Option<String>,
    pub amount: &'a str,
}

pub fn flat(ev: &TokenTransferEvent) -> Option<Flat<'_>> {
    let asset_name = |a: &Option<flowctl_proto::asset::Asset>| match a
        .as_ref()
        .and_then(|a| a.asset_type.as_ref())
    {
        Some(AssetType::Native(_)) => Some("native".to_string()),
        Some(AssetType::IssuedAsset(i)) => Some(format!("{}:{}", i.asset_code, i.issuer)),
        None => None,
    };
    Some(match ev.event.as_ref()? {
        Event::Transfer(t) => Flat {
            kind: "transfer",
            from: Some(&t.from),
            to: Some(&t.to),
            asset: asset_name(&t.asset),
            amount: &t.amount,
        },
        Event::Mint(t) => Flat {
            kind: "mint",
            from: None,
            to: Some(&t.to),
            asset: asset_name(&t.asset),
            amount: &t.amount,
        },
        Event::Burn(t) => Flat {
            kind: "burn",
            from: Some(&t.from),
            to: None,
            asset: asset_name(&t.asset),
            amount: &t.amount,
        },
        Event::Clawback(t) => Flat {
            kind: "clawback",
            from: Some(&t.from),
            to: None,
            asset: asset_name(&t.asset),
            amount: &t.amount,
        },
        Event::Fee(t) => Flat {
            kind: "fee",
            from: Some(&t.from),
            to: None,
            asset: asset_name(&t.asset),
            amount: &t.amount,
        },
    })
}
