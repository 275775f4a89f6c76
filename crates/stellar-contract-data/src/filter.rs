//! Which records a processor passes on: `FILTER_CONTRACT_IDS`, `FILTER_ASSET_CODES`,
//! `FILTER_ASSET_ISSUERS` and `INCLUDE_DELETED`, all of which must hold.
//!
//! An asset filter keeps the entries of the assets' Stellar Asset Contracts — their
//! instances and every holder's balance — not only the instance entry that names the asset:
//! with both codes and issuers given, the SAC id of each (code, issuer) is derived.

use std::collections::HashSet;

use stellar_xdr::{AccountId, AlphaNum12, AlphaNum4, Asset, AssetCode12, AssetCode4};

use crate::record::ContractDataChange;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{variable}={value:?}: {why}")]
pub struct FilterError {
    pub variable: &'static str,
    pub value: String,
    pub why: String,
}

#[derive(Clone, Debug, Default)]
pub struct Filter {
    contract_ids: HashSet<String>,
    asset_codes: HashSet<String>,
    asset_issuers: HashSet<String>,
    /// The SAC ids of the assets the code and issuer filters name.
    asset_contracts: HashSet<String>,
    exclude_deleted: bool,
}

fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|v| !v.is_empty())
}

impl Filter {
    /// Comma-separated lists, empty for "any"; `native` among the codes is XLM's SAC.
    pub fn new(
        passphrase: &str,
        contract_ids: &str,
        asset_codes: &str,
        asset_issuers: &str,
        include_deleted: bool,
    ) -> Result<Filter, FilterError> {
        let mut f = Filter {
            exclude_deleted: !include_deleted,
            ..Filter::default()
        };
        for id in list(contract_ids) {
            stellar_strkey::Contract::from_string(id).map_err(|_| FilterError {
                variable: "FILTER_CONTRACT_IDS",
                value: id.to_string(),
                why: "not a contract strkey (C…)".into(),
            })?;
            f.contract_ids.insert(id.to_string());
        }
        for code in list(asset_codes) {
            let valid = code == "native"
                || ((1..=12).contains(&code.len())
                    && code.bytes().all(|b| b.is_ascii_alphanumeric()));
            if !valid {
                return Err(FilterError {
                    variable: "FILTER_ASSET_CODES",
                    value: code.to_string(),
                    why: "an asset code is 1 to 12 letters and digits (or `native`)".into(),
                });
            }
            f.asset_codes.insert(code.to_string());
        }
        let mut issuers = Vec::new();
        for issuer in list(asset_issuers) {
            let key: AccountId = issuer.parse().map_err(|_| FilterError {
                variable: "FILTER_ASSET_ISSUERS",
                value: issuer.to_string(),
                why: "not an account strkey (G…)".into(),
            })?;
            f.asset_issuers.insert(issuer.to_string());
            issuers.push(key);
        }
        let network = stellar_ttp::network_id(passphrase);
        for code in &f.asset_codes {
            if code == "native" {
                f.asset_contracts.insert(contract(&network, &Asset::Native));
                continue;
            }
            for issuer in &issuers {
                f.asset_contracts
                    .insert(contract(&network, &credit(code, issuer.clone())));
            }
        }
        Ok(f)
    }

    /// Keeps everything.
    pub fn none() -> Filter {
        Filter::default()
    }

    pub fn keeps(&self, r: &ContractDataChange) -> bool {
        if self.exclude_deleted && r.deleted {
            return false;
        }
        if !self.contract_ids.is_empty() && !self.contract_ids.contains(&r.contract_id) {
            return false;
        }
        if self.asset_codes.is_empty() && self.asset_issuers.is_empty() {
            return true;
        }
        if self.asset_contracts.contains(&r.contract_id) {
            return true;
        }
        let code_ok = self.asset_codes.is_empty()
            || match r.asset_type {
                Some("native") => self.asset_codes.contains("native"),
                _ => r
                    .asset_code
                    .as_ref()
                    .is_some_and(|c| self.asset_codes.contains(c)),
            };
        let issuer_ok = self.asset_issuers.is_empty()
            || r.asset_issuer
                .as_ref()
                .is_some_and(|i| self.asset_issuers.contains(i));
        r.asset_type.is_some() && code_ok && issuer_ok
    }

    /// The filter in words, for logs and the component's registration metadata.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let sorted = |s: &HashSet<String>| {
            let mut v: Vec<&str> = s.iter().map(String::as_str).collect();
            v.sort();
            v.join(",")
        };
        if !self.contract_ids.is_empty() {
            parts.push(format!("contracts={}", sorted(&self.contract_ids)));
        }
        if !self.asset_codes.is_empty() {
            parts.push(format!("asset_codes={}", sorted(&self.asset_codes)));
        }
        if !self.asset_issuers.is_empty() {
            parts.push(format!("asset_issuers={}", sorted(&self.asset_issuers)));
        }
        if self.exclude_deleted {
            parts.push("deleted=excluded".into());
        }
        if parts.is_empty() {
            "all".into()
        } else {
            parts.join(" ")
        }
    }
}

fn contract(network: &[u8; 32], asset: &Asset) -> String {
    stellar_strkey::Contract(stellar_ttp::sac_contract_id(network, asset)).to_string()
}

fn credit(code: &str, issuer: AccountId) -> Asset {
    let b = code.as_bytes();
    if b.len() <= 4 {
        let mut c = [0u8; 4];
        c[..b.len()].copy_from_slice(b);
        Asset::CreditAlphanum4(AlphaNum4 {
            asset_code: AssetCode4(c),
            issuer,
        })
    } else {
        let mut c = [0u8; 12];
        c[..b.len()].copy_from_slice(b);
        Asset::CreditAlphanum12(AlphaNum12 {
            asset_code: AssetCode12(c),
            issuer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: &str = "Test SDF Network ; September 2015";
    const ISSUER: &str = "GCKFBEIYV2U22IO2BJ4KVJOIP7XPWQGQFKKWXR6DOSJBV7STMAQSMTGG";

    #[test]
    fn bad_values_are_named_with_their_variable() {
        let e = Filter::new(NET, "CABC", "", "", true).unwrap_err();
        assert_eq!(e.variable, "FILTER_CONTRACT_IDS");
        assert!(e.to_string().contains("\"CABC\""), "{e}");
        let e = Filter::new(NET, "", "US-D", "", true).unwrap_err();
        assert_eq!(e.variable, "FILTER_ASSET_CODES");
        let e = Filter::new(NET, "", "", "GNOPE", true).unwrap_err();
        assert_eq!(e.variable, "FILTER_ASSET_ISSUERS");
    }

    #[test]
    fn an_asset_filter_keeps_its_sacs_balances_and_nothing_else() {
        let f = Filter::new(NET, "", "USDC", ISSUER, true).unwrap();
        let issuer: AccountId = ISSUER.parse().unwrap();
        let usdc = contract(&stellar_ttp::network_id(NET), &credit("USDC", issuer));
        let mut r = ContractDataChange {
            ledger_sequence: 1,
            closed_at: 0,
            change_index: 0,
            change_type: crate::ChangeType::Updated,
            deleted: false,
            evicted: false,
            contract_id: usdc,
            contract_key_type: "ScValTypeScvVec".into(),
            contract_durability: "ContractDataDurabilityPersistent",
            asset_code: None,
            asset_issuer: None,
            asset_type: None,
            balance_holder: Some("C…".into()),
            balance: Some("5".into()),
            last_modified_ledger: Some(1),
            ledger_key_hash: String::new(),
            key_xdr: String::new(),
            val_xdr: None,
            key: "null".into(),
            val: None,
            contract_instance_type: None,
            contract_instance_wasm_hash: None,
            expiration_ledger_seq: None,
            tx_hash: None,
            transaction_index: None,
            operation_index: None,
        };
        assert!(f.keeps(&r), "a balance of the USDC SAC");
        r.contract_id = contract(&stellar_ttp::network_id(NET), &Asset::Native);
        assert!(!f.keeps(&r), "a balance of another SAC");
        assert!(Filter::new(NET, "", "native", "", true).unwrap().keeps(&r));
        r.deleted = true;
        assert!(!Filter::new(NET, "", "", "", false).unwrap().keeps(&r));
        assert!(Filter::none().keeps(&r));
    }
}
