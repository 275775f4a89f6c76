//! What a Stellar Asset Contract keeps in its storage, read as stellar-etl reads it: the
//! asset of its instance entry, and the balances of contract holders.

use stellar_xdr::{
    AccountId, AlphaNum12, AlphaNum4, Asset, AssetCode12, AssetCode4, ContractExecutable,
    PublicKey, ScContractInstance, ScMap, ScVal, Uint256,
};

/// The asset of an instance entry whose executable is the Stellar Asset Contract and whose
/// contract id is that asset's SAC id on this network; `None` for any other entry.
pub fn instance_asset(network_id: &[u8; 32], contract: &[u8; 32], val: &ScVal) -> Option<Asset> {
    let ScVal::ContractInstance(ScContractInstance {
        executable: ContractExecutable::StellarAsset,
        storage: Some(storage),
    }) = val
    else {
        return None;
    };
    let info = map_get(storage, "AssetInfo")?;
    let ScVal::Vec(Some(parts)) = info else {
        return None;
    };
    let asset = match parts.as_slice() {
        [kind] if is_symbol(kind, "Native") => Asset::Native,
        [kind, ScVal::Map(Some(fields))] => {
            let ScVal::String(code) = map_get(fields, "asset_code")? else {
                return None;
            };
            let ScVal::Bytes(issuer) = map_get(fields, "issuer")? else {
                return None;
            };
            let issuer: [u8; 32] = issuer.as_slice().try_into().ok()?;
            let issuer = AccountId(PublicKey::PublicKeyTypeEd25519(Uint256(issuer)));
            let code = code.as_slice();
            if is_symbol(kind, "AlphaNum4") && (1..=4).contains(&code.len()) {
                let mut c = [0u8; 4];
                c[..code.len()].copy_from_slice(code);
                Asset::CreditAlphanum4(AlphaNum4 {
                    asset_code: AssetCode4(c),
                    issuer,
                })
            } else if is_symbol(kind, "AlphaNum12") && (5..=12).contains(&code.len()) {
                let mut c = [0u8; 12];
                c[..code.len()].copy_from_slice(code);
                Asset::CreditAlphanum12(AlphaNum12 {
                    asset_code: AssetCode12(c),
                    issuer,
                })
            } else {
                return None;
            }
        }
        _ => return None,
    };
    // Anyone can deploy a contract storing "AssetInfo"; only the real SAC's id counts.
    (stellar_ttp::sac_contract_id(network_id, &asset) == *contract).then_some(asset)
}

/// `(code, issuer, type)` columns of an asset.
pub fn asset_columns(asset: &Asset) -> (Option<String>, Option<String>, &'static str) {
    match asset {
        Asset::Native => (None, None, "native"),
        Asset::CreditAlphanum4(a) => (
            Some(trimmed(&a.asset_code.0)),
            Some(a.issuer.to_string()),
            "credit_alphanum4",
        ),
        Asset::CreditAlphanum12(a) => (
            Some(trimmed(&a.asset_code.0)),
            Some(a.issuer.to_string()),
            "credit_alphanum12",
        ),
    }
}

fn trimmed(code: &[u8]) -> String {
    let end = code.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    String::from_utf8_lossy(&code[..end]).into_owned()
}

/// A SAC balance entry: key `[Symbol("Balance"), Address(holder)]`, value
/// `{amount: i128, authorized: bool, clawback: bool}`. Returns the holder's strkey and the
/// amount in full.
pub fn balance(key: &ScVal, val: &ScVal) -> Option<(String, i128)> {
    let ScVal::Vec(Some(parts)) = key else {
        return None;
    };
    let [tag, ScVal::Address(holder)] = parts.as_slice() else {
        return None;
    };
    if !is_symbol(tag, "Balance") {
        return None;
    }
    let ScVal::Map(Some(fields)) = val else {
        return None;
    };
    if fields.len() != 3 {
        return None;
    }
    let ScVal::I128(amount) = map_get(fields, "amount")? else {
        return None;
    };
    let (ScVal::Bool(_), ScVal::Bool(_)) =
        (map_get(fields, "authorized")?, map_get(fields, "clawback")?)
    else {
        return None;
    };
    let amount = (i128::from(amount.hi) << 64) | i128::from(amount.lo);
    Some((holder.to_string(), amount))
}

fn is_symbol(v: &ScVal, name: &str) -> bool {
    matches!(v, ScVal::Symbol(s) if s.as_slice() == name.as_bytes())
}

fn map_get<'m>(map: &'m ScMap, name: &str) -> Option<&'m ScVal> {
    map.iter().find(|e| is_symbol(&e.key, name)).map(|e| &e.val)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stellar_xdr::{Int128Parts, ScAddress, ScMapEntry, ScSymbol, ScVec};

    fn sym(s: &str) -> ScVal {
        ScVal::Symbol(ScSymbol(s.try_into().unwrap()))
    }

    fn map(entries: Vec<(ScVal, ScVal)>) -> ScVal {
        let entries: Vec<ScMapEntry> = entries
            .into_iter()
            .map(|(key, val)| ScMapEntry { key, val })
            .collect();
        ScVal::Map(Some(ScMap(entries.try_into().unwrap())))
    }

    fn balance_key(holder: ScAddress) -> ScVal {
        ScVal::Vec(Some(ScVec(
            vec![sym("Balance"), ScVal::Address(holder)]
                .try_into()
                .unwrap(),
        )))
    }

    #[test]
    fn a_sac_balance_keeps_all_128_bits_and_its_sign() {
        let holder = ScAddress::Contract(stellar_xdr::ContractId(stellar_xdr::Hash([7; 32])));
        let val = map(vec![
            (sym("amount"), ScVal::I128(Int128Parts { hi: 1, lo: 5 })),
            (sym("authorized"), ScVal::Bool(true)),
            (sym("clawback"), ScVal::Bool(false)),
        ]);
        let (who, amount) = balance(&balance_key(holder.clone()), &val).unwrap();
        assert_eq!(who, holder.to_string());
        assert_eq!(amount, (1i128 << 64) + 5);
        assert_eq!(amount.to_string(), "18446744073709551621");
        let negative = map(vec![
            (
                sym("amount"),
                ScVal::I128(Int128Parts {
                    hi: -1,
                    lo: u64::MAX,
                }),
            ),
            (sym("authorized"), ScVal::Bool(true)),
            (sym("clawback"), ScVal::Bool(false)),
        ]);
        assert_eq!(balance(&balance_key(holder), &negative).unwrap().1, -1);
    }

    #[test]
    fn other_shapes_are_not_balances() {
        let holder = ScAddress::Contract(stellar_xdr::ContractId(stellar_xdr::Hash([7; 32])));
        // A custom token keeping a bare i128 is not the SAC's shape.
        let bare = ScVal::I128(Int128Parts { hi: 0, lo: 5 });
        assert!(balance(&balance_key(holder.clone()), &bare).is_none());
        let missing_flag = map(vec![
            (sym("amount"), ScVal::I128(Int128Parts { hi: 0, lo: 5 })),
            (sym("authorized"), ScVal::Bool(true)),
        ]);
        assert!(balance(&balance_key(holder), &missing_flag).is_none());
    }

    #[test]
    fn an_instance_claiming_an_asset_under_another_contract_id_is_not_that_asset() {
        let network = stellar_ttp::network_id("Test SDF Network ; September 2015");
        let val = ScVal::ContractInstance(ScContractInstance {
            executable: ContractExecutable::StellarAsset,
            storage: Some(
                match map(vec![(
                    sym("AssetInfo"),
                    ScVal::Vec(Some(ScVec(vec![sym("Native")].try_into().unwrap()))),
                )]) {
                    ScVal::Map(Some(m)) => m,
                    _ => unreachable!(),
                },
            ),
        });
        let native = stellar_ttp::sac_contract_id(&network, &Asset::Native);
        assert_eq!(instance_asset(&network, &native, &val), Some(Asset::Native));
        assert_eq!(instance_asset(&network, &[1; 32], &val), None);
    }
}
