//! Parties (who holds a balance) and assets, with their strkey and proto forms.

use flowctl_proto::asset as proto_asset;
use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountId, Asset, ClaimableBalanceId, ContractIdPreimage, Hash, HashIdPreimage,
    HashIdPreimageContractId, Limits, MuxedAccount, PublicKey, ScAddress, TrustLineAsset, WriteXdr,
};

/// Anything that can send or receive a token: the typed form of a strkey, so that
/// comparisons (is this the issuer?) never go through strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Party {
    Account([u8; 32]),
    Muxed { key: [u8; 32], id: u64 },
    Contract([u8; 32]),
    Pool([u8; 32]),
    Balance([u8; 32]),
}

impl Party {
    pub fn from_muxed(m: &MuxedAccount) -> Self {
        match m {
            MuxedAccount::Ed25519(k) => Party::Account(k.0),
            MuxedAccount::MuxedEd25519(m) => Party::Muxed {
                key: m.ed25519.0,
                id: m.id,
            },
        }
    }

    pub fn from_account(a: &AccountId) -> Self {
        Party::Account(account_key(a))
    }

    pub fn from_balance_id(id: &ClaimableBalanceId) -> Self {
        let ClaimableBalanceId::ClaimableBalanceIdTypeV0(h) = id;
        Party::Balance(h.0)
    }

    /// `None` for address kinds that no token event can name (muxed contracts).
    pub fn from_sc_address(a: &ScAddress) -> Option<Self> {
        Some(match a {
            ScAddress::Account(a) => Party::from_account(a),
            ScAddress::Contract(c) => Party::Contract(c.0 .0),
            ScAddress::MuxedAccount(m) => Party::Muxed {
                key: m.ed25519.0,
                id: m.id,
            },
            ScAddress::ClaimableBalance(id) => Party::from_balance_id(id),
            ScAddress::LiquidityPool(p) => Party::Pool(p.0 .0),
            ScAddress::MuxedContract(_) => return None,
        })
    }

    /// The ed25519 key of a `G…`/`M…` party.
    pub fn account_key(&self) -> Option<[u8; 32]> {
        match self {
            Party::Account(k) | Party::Muxed { key: k, .. } => Some(*k),
            _ => None,
        }
    }

    /// Muxed accounts collapse to their `G…` account; others are unchanged.
    pub fn unmuxed(self) -> Self {
        match self {
            Party::Muxed { key, .. } => Party::Account(key),
            p => p,
        }
    }

    pub fn strkey(&self) -> String {
        use stellar_strkey::{ed25519, ClaimableBalance, Contract, LiquidityPool};
        match self {
            Party::Account(k) => ed25519::PublicKey(*k).to_string(),
            Party::Muxed { key, id } => ed25519::MuxedAccount {
                ed25519: *key,
                id: *id,
            }
            .to_string(),
            Party::Contract(c) => Contract(*c).to_string(),
            Party::Pool(p) => LiquidityPool(*p).to_string(),
            Party::Balance(b) => ClaimableBalance::V0(*b).to_string(),
        }
    }
}

pub fn account_key(a: &AccountId) -> [u8; 32] {
    let PublicKey::PublicKeyTypeEd25519(k) = &a.0;
    k.0
}

pub fn contract_strkey(id: &[u8; 32]) -> String {
    stellar_strkey::Contract(*id).to_string()
}

pub fn network_id(passphrase: &str) -> [u8; 32] {
    Sha256::digest(passphrase.as_bytes()).into()
}

/// The Stellar Asset Contract id of a classic asset on a network.
pub fn sac_contract_id(network_id: &[u8; 32], asset: &Asset) -> [u8; 32] {
    let preimage = HashIdPreimage::ContractId(HashIdPreimageContractId {
        network_id: Hash(*network_id),
        contract_id_preimage: ContractIdPreimage::Asset(asset.clone()),
    });
    let bytes = preimage
        .to_xdr(Limits::none())
        .expect("an asset preimage always encodes");
    Sha256::digest(&bytes).into()
}

/// The issuer's key of a credit asset.
pub fn issuer_key(asset: &Asset) -> Option<[u8; 32]> {
    match asset {
        Asset::Native => None,
        Asset::CreditAlphanum4(a) => Some(account_key(&a.issuer)),
        Asset::CreditAlphanum12(a) => Some(account_key(&a.issuer)),
    }
}

/// The asset code with trailing NULs removed, as every Stellar tool shows it.
pub fn asset_code(asset: &Asset) -> &[u8] {
    let raw: &[u8] = match asset {
        Asset::Native => return b"",
        Asset::CreditAlphanum4(a) => &a.asset_code.0,
        Asset::CreditAlphanum12(a) => &a.asset_code.0,
    };
    let end = raw.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    &raw[..end]
}

pub fn proto_asset(asset: &Asset) -> proto_asset::Asset {
    use proto_asset::asset::AssetType;
    let asset_type = match asset {
        Asset::Native => AssetType::Native(true),
        _ => AssetType::IssuedAsset(proto_asset::IssuedAsset {
            asset_code: String::from_utf8_lossy(asset_code(asset)).into_owned(),
            issuer: Party::Account(issuer_key(asset).unwrap_or_default()).strkey(),
        }),
    };
    proto_asset::Asset {
        asset_type: Some(asset_type),
    }
}

/// The canonical key of an asset in balance bookkeeping: `native` or `CODE:ISSUER`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AssetKey {
    Native,
    Credit { code: String, issuer: String },
}

impl AssetKey {
    pub fn of(asset: &Asset) -> Self {
        match asset {
            Asset::Native => AssetKey::Native,
            _ => AssetKey::Credit {
                code: String::from_utf8_lossy(asset_code(asset)).into_owned(),
                issuer: Party::Account(issuer_key(asset).unwrap_or_default()).strkey(),
            },
        }
    }

    /// `None` for pool shares, which are not a token.
    pub fn of_trustline(asset: &TrustLineAsset) -> Option<Self> {
        Some(match asset {
            TrustLineAsset::Native => AssetKey::Native,
            TrustLineAsset::CreditAlphanum4(a) => AssetKey::of(&Asset::CreditAlphanum4(a.clone())),
            TrustLineAsset::CreditAlphanum12(a) => {
                AssetKey::of(&Asset::CreditAlphanum12(a.clone()))
            }
            TrustLineAsset::PoolShare(_) => return None,
        })
    }

    pub fn of_proto(asset: &proto_asset::Asset) -> Option<Self> {
        use proto_asset::asset::AssetType;
        match asset.asset_type.as_ref()? {
            AssetType::Native(_) => Some(AssetKey::Native),
            AssetType::IssuedAsset(a) => Some(AssetKey::Credit {
                code: a.asset_code.clone(),
                issuer: a.issuer.clone(),
            }),
        }
    }
}

impl std::fmt::Display for AssetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AssetKey::Native => f.write_str("native"),
            AssetKey::Credit { code, issuer } => write!(f, "{code}:{issuer}"),
        }
    }
}

/// Parses a SEP-11 asset string the way the Stellar Asset Contract names its asset in
/// event topics: `native` (any case) or `CODE:G…` with a 1–12 character alphanumeric code.
pub fn parse_sep11_asset(s: &[u8]) -> Option<Asset> {
    let s = std::str::from_utf8(s).ok()?;
    if s.contains(',') {
        return None;
    }
    if s.eq_ignore_ascii_case("native") {
        return Some(Asset::Native);
    }
    let mut parts = s.split(':');
    let (code, issuer) = (parts.next()?, parts.next()?);
    if parts.next().is_some()
        || code.is_empty()
        || code.len() > 12
        || !code.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    let issuer = stellar_strkey::ed25519::PublicKey::from_string(issuer).ok()?;
    let issuer = AccountId(PublicKey::PublicKeyTypeEd25519(stellar_xdr::Uint256(
        issuer.0,
    )));
    Some(if code.len() <= 4 {
        let mut c = [0u8; 4];
        c[..code.len()].copy_from_slice(code.as_bytes());
        Asset::CreditAlphanum4(stellar_xdr::AlphaNum4 {
            asset_code: stellar_xdr::AssetCode4(c),
            issuer,
        })
    } else {
        let mut c = [0u8; 12];
        c[..code.len()].copy_from_slice(code.as_bytes());
        Asset::CreditAlphanum12(stellar_xdr::AlphaNum12 {
            asset_code: stellar_xdr::AssetCode12(c),
            issuer,
        })
    })
}
