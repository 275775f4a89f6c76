//! The world state the generator evolves: accounts, their USDC trustlines and one offer,
//! and how each looks as a ledger entry.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use stellar_xdr::{
    AccountEntry, AccountEntryExt, AccountId, AlphaNum4, Asset, AssetCode4, ContractIdPreimage,
    Hash, HashIdPreimage, HashIdPreimageContractId, LedgerEntry, LedgerEntryData, LedgerEntryExt,
    OfferEntry, OfferEntryExt, Price, PublicKey, SequenceNumber, Thresholds, TrustLineAsset,
    TrustLineEntry, TrustLineEntryExt, Uint256,
};

use crate::Config;

/// The SAC function the Soroban transactions call.
pub const NATIVE_SAC_TRANSFER: &str = "transfer";

/// Every ordinary account starts with 100,000 XLM and 1,000,000 USDC (in stroops).
const START_XLM: i64 = 100_000 * 10_000_000;
const START_USDC: i64 = 1_000_000 * 10_000_000;
/// The market maker sells USDC for XLM at this many XLM per USDC.
pub const XLM_PER_USDC: i64 = 8;

#[derive(Debug, Clone)]
pub struct Account {
    pub key: [u8; 32],
    pub balance: i64,
    pub seq: i64,
    pub sub_entries: u32,
    pub last_modified: u32,
    pub usdc: i64,
    pub usdc_last_modified: u32,
}

impl Account {
    pub fn id(&self) -> AccountId {
        account_id(self.key)
    }

    pub fn entry(&self) -> LedgerEntry {
        LedgerEntry {
            last_modified_ledger_seq: self.last_modified,
            data: LedgerEntryData::Account(AccountEntry {
                account_id: self.id(),
                balance: self.balance,
                seq_num: SequenceNumber(self.seq),
                num_sub_entries: self.sub_entries,
                inflation_dest: None,
                flags: 0,
                home_domain: Default::default(),
                thresholds: Thresholds([1, 0, 0, 0]),
                signers: Default::default(),
                ext: AccountEntryExt::V0,
            }),
            ext: LedgerEntryExt::V0,
        }
    }

    pub fn usdc_entry(&self, issuer: [u8; 32]) -> LedgerEntry {
        LedgerEntry {
            last_modified_ledger_seq: self.usdc_last_modified,
            data: LedgerEntryData::Trustline(TrustLineEntry {
                account_id: self.id(),
                asset: TrustLineAsset::CreditAlphanum4(usdc_alphanum(issuer)),
                balance: self.usdc,
                limit: i64::MAX,
                // AUTHORIZED_FLAG
                flags: 1,
                ext: TrustLineEntryExt::V0,
            }),
            ext: LedgerEntryExt::V0,
        }
    }
}

/// The market maker's standing offer: sells USDC, buys XLM.
#[derive(Debug, Clone)]
pub struct Offer {
    pub id: i64,
    pub amount: i64,
    pub last_modified: u32,
}

pub struct World {
    /// `accounts[0]` is the market maker; the others pay each other.
    pub accounts: Vec<Account>,
    pub issuer: [u8; 32],
    pub offer: Offer,
    pub native_sac: [u8; 32],
}

impl World {
    /// The network as it stands after ledger `genesis`: every account at its starting
    /// balances, with keys drawn from `rng` (the same keys for the same seed, whatever the
    /// ledger).
    pub fn new(cfg: &Config, network_id: &[u8; 32], rng: &mut ChaCha8Rng, genesis: u32) -> World {
        let issuer = rng.random();
        let accounts = (0..=cfg.accounts)
            .map(|i| {
                let key: [u8; 32] = rng.random();
                let (xlm, usdc, sub_entries) = if i == 0 {
                    (START_XLM * 100, START_USDC * 1000, 2)
                } else {
                    (START_XLM, START_USDC, 1)
                };
                Account {
                    key,
                    balance: xlm,
                    seq: i64::from(genesis) << 32,
                    sub_entries,
                    last_modified: genesis,
                    usdc,
                    usdc_last_modified: genesis,
                }
            })
            .collect();
        World {
            accounts,
            issuer,
            offer: Offer {
                id: 1,
                amount: START_USDC * 1000,
                last_modified: genesis,
            },
            native_sac: sac_contract_id(network_id, &Asset::Native),
        }
    }

    pub fn usdc(&self) -> Asset {
        Asset::CreditAlphanum4(usdc_alphanum(self.issuer))
    }

    pub fn offer_entry(&self) -> LedgerEntry {
        LedgerEntry {
            last_modified_ledger_seq: self.offer.last_modified,
            data: LedgerEntryData::Offer(OfferEntry {
                seller_id: self.accounts[0].id(),
                offer_id: self.offer.id,
                selling: self.usdc(),
                buying: Asset::Native,
                amount: self.offer.amount,
                price: Price {
                    n: XLM_PER_USDC as i32,
                    d: 1,
                },
                flags: 0,
                ext: OfferEntryExt::V0,
            }),
            ext: LedgerEntryExt::V0,
        }
    }
}

pub fn account_id(key: [u8; 32]) -> AccountId {
    AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(key)))
}

fn usdc_alphanum(issuer: [u8; 32]) -> AlphaNum4 {
    AlphaNum4 {
        asset_code: AssetCode4(*b"USDC"),
        issuer: account_id(issuer),
    }
}

/// The contract id of an asset's Stellar Asset Contract on a network.
pub fn sac_contract_id(network_id: &[u8; 32], asset: &Asset) -> [u8; 32] {
    let preimage = HashIdPreimage::ContractId(HashIdPreimageContractId {
        network_id: Hash(*network_id),
        contract_id_preimage: ContractIdPreimage::Asset(asset.clone()),
    });
    let bytes = stellar_xdr::WriteXdr::to_xdr(&preimage, stellar_xdr::Limits::none())
        .expect("preimage encodes");
    Sha256::digest(&bytes).into()
}
