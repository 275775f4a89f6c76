//! Properties of generated ledgers, checked on their decoded XDR.

use std::collections::{HashMap, HashSet};

use sha2::{Digest, Sha256};
use stellar_synth::{Config, ConfigError, Generator};
use stellar_xdr::{
    GeneralizedTransactionSet, LedgerCloseMeta, LedgerEntryChange, LedgerEntryData, Limits,
    ReadXdr, TransactionEnvelope, TransactionMeta, TransactionPhase, TransactionResultResult,
    TxSetComponent, WriteXdr,
};

fn cfg(protocol: u32) -> Config {
    Config {
        protocol_version: protocol,
        txs_per_ledger: 40,
        accounts: 30,
        ..Config::default()
    }
}

fn ledgers(cfg: Config, n: usize) -> Vec<LedgerCloseMeta> {
    let mut g = Generator::new(cfg).unwrap();
    (0..n)
        .map(|_| LedgerCloseMeta::from_xdr(g.next_ledger_xdr(), Limits::none()).unwrap())
        .collect()
}

fn envelopes(set: &GeneralizedTransactionSet) -> Vec<TransactionEnvelope> {
    let GeneralizedTransactionSet::V1(set) = set;
    let mut out = Vec::new();
    for phase in set.phases.iter() {
        match phase {
            TransactionPhase::V0(components) => {
                for c in components.iter() {
                    let TxSetComponent::TxsetCompTxsMaybeDiscountedFee(c) = c;
                    out.extend(c.txs.iter().cloned());
                }
            }
            TransactionPhase::V1(p) => {
                for stage in p.execution_stages.iter() {
                    for cluster in stage.0.iter() {
                        out.extend(cluster.0.iter().cloned());
                    }
                }
            }
        }
    }
    out
}

/// (hash, fee_charged, success, every change of the tx in order, meta) per transaction.
struct Tx {
    hash: [u8; 32],
    fee_charged: i64,
    success: bool,
    changes: Vec<LedgerEntryChange>,
    meta: TransactionMeta,
}

fn txs(lcm: &LedgerCloseMeta) -> Vec<Tx> {
    fn meta_changes(meta: &TransactionMeta) -> Vec<LedgerEntryChange> {
        let mut out = Vec::new();
        match meta {
            TransactionMeta::V3(m) => {
                out.extend(m.tx_changes_before.0.iter().cloned());
                for op in m.operations.iter() {
                    out.extend(op.changes.0.iter().cloned());
                }
                out.extend(m.tx_changes_after.0.iter().cloned());
            }
            TransactionMeta::V4(m) => {
                out.extend(m.tx_changes_before.0.iter().cloned());
                for op in m.operations.iter() {
                    out.extend(op.changes.0.iter().cloned());
                }
                out.extend(m.tx_changes_after.0.iter().cloned());
            }
            other => panic!("unexpected meta version {}", other.discriminant()),
        }
        out
    }
    let success = |r: &TransactionResultResult| matches!(r, TransactionResultResult::TxSuccess(_));
    match lcm {
        LedgerCloseMeta::V1(m) => m
            .tx_processing
            .iter()
            .map(|t| {
                let mut changes: Vec<_> = t.fee_processing.0.to_vec();
                changes.extend(meta_changes(&t.tx_apply_processing));
                Tx {
                    hash: t.result.transaction_hash.0,
                    fee_charged: t.result.result.fee_charged,
                    success: success(&t.result.result.result),
                    changes,
                    meta: t.tx_apply_processing.clone(),
                }
            })
            .collect(),
        LedgerCloseMeta::V2(m) => m
            .tx_processing
            .iter()
            .map(|t| {
                let mut changes: Vec<_> = t.fee_processing.0.to_vec();
                changes.extend(meta_changes(&t.tx_apply_processing));
                changes.extend(t.post_tx_apply_fee_processing.0.iter().cloned());
                Tx {
                    hash: t.result.transaction_hash.0,
                    fee_charged: t.result.result.fee_charged,
                    success: success(&t.result.result.result),
                    changes,
                    meta: t.tx_apply_processing.clone(),
                }
            })
            .collect(),
        LedgerCloseMeta::V0(_) => panic!("the generator never makes V0"),
    }
}

fn header(lcm: &LedgerCloseMeta) -> &stellar_xdr::LedgerHeaderHistoryEntry {
    match lcm {
        LedgerCloseMeta::V0(m) => &m.ledger_header,
        LedgerCloseMeta::V1(m) => &m.ledger_header,
        LedgerCloseMeta::V2(m) => &m.ledger_header,
    }
}

fn tx_set(lcm: &LedgerCloseMeta) -> &GeneralizedTransactionSet {
    match lcm {
        LedgerCloseMeta::V1(m) => &m.tx_set,
        LedgerCloseMeta::V2(m) => &m.tx_set,
        LedgerCloseMeta::V0(_) => panic!("no V0"),
    }
}

#[test]
fn same_seed_gives_byte_identical_ledgers_and_another_seed_does_not() {
    let mut a = Generator::new(cfg(23)).unwrap();
    let mut b = Generator::new(cfg(23)).unwrap();
    let mut c = Generator::new(Config { seed: 2, ..cfg(23) }).unwrap();
    for _ in 0..5 {
        let x = a.next_ledger_xdr();
        assert_eq!(x, b.next_ledger_xdr());
        assert_ne!(x, c.next_ledger_xdr());
    }
}

/// Ledger N is the same whether the generator started at 2, at N, inside N's epoch or in an
/// earlier epoch, and whether it got there by seeking forwards or back.
#[test]
fn ledger_n_is_byte_identical_whatever_the_first_ledger_and_seeks() {
    let from_two: Vec<Vec<u8>> = {
        let mut g = Generator::new(cfg(23)).unwrap();
        (2..=200).map(|_| g.next_ledger_xdr()).collect()
    };
    let at = |seq: u32| &from_two[(seq - 2) as usize];
    for first in [3, 6, 63, 64, 65, 100, 127, 128, 129, 190] {
        let mut g = Generator::new(Config {
            first_ledger: first,
            ..cfg(23)
        })
        .unwrap();
        assert_eq!(g.next_sequence(), first);
        for seq in first..(first + 10).min(200) {
            assert_eq!(
                &g.next_ledger_xdr(),
                at(seq),
                "ledger {seq} of a run from {first}"
            );
        }
    }
    let mut g = Generator::new(cfg(23)).unwrap();
    for seq in [150, 20, 21, 64, 200, 63, 2] {
        g.seek(seq);
        assert_eq!(g.next_sequence(), seq);
        assert_eq!(&g.next_ledger_xdr(), at(seq), "ledger {seq} after a seek");
    }
}

/// Epochs begin on multiples of 64: an account's sequence numbers still grow across one, and
/// every transaction of the first ledger of an epoch is valid against the epoch's state.
#[test]
fn sequence_numbers_and_close_times_grow_across_an_epoch_boundary() {
    let ls = ledgers(
        Config {
            first_ledger: 60,
            ..cfg(23)
        },
        10,
    );
    assert_eq!(stellar_synth::epoch_start(63), 2);
    assert_eq!(stellar_synth::epoch_start(64), 64);
    let mut last_seq: HashMap<Vec<u8>, i64> = HashMap::new();
    for (i, l) in ls.iter().enumerate() {
        let h = header(l);
        assert_eq!(h.header.ledger_seq, 60 + i as u32);
        if i > 0 {
            let prev = header(&ls[i - 1]);
            assert!(h.header.scp_value.close_time.0 > prev.header.scp_value.close_time.0);
            if h.header.ledger_seq != 64 {
                assert_eq!(h.header.previous_ledger_hash, prev.hash, "inside an epoch");
            }
        }
        // A tx set is in hash order, not sequence order: compare with earlier ledgers only.
        let mut this_ledger: HashMap<Vec<u8>, (i64, i64)> = HashMap::new();
        for env in envelopes(tx_set(l)) {
            let TransactionEnvelope::Tx(e) = env else {
                panic!("the generator signs V1 envelopes")
            };
            let key = e.tx.source_account.to_xdr(Limits::none()).unwrap();
            let seq = e.tx.seq_num.0;
            let span = this_ledger.entry(key).or_insert((seq, seq));
            *span = (span.0.min(seq), span.1.max(seq));
        }
        for (key, (lowest, highest)) in this_ledger {
            if let Some(before) = last_seq.insert(key, highest) {
                assert!(
                    lowest > before,
                    "ledger {}: seq {lowest} after {before}",
                    60 + i
                );
            }
        }
    }
}

#[test]
fn protocol_23_gives_lcm_v2_and_protocol_22_gives_lcm_v1() {
    for (protocol, want_v2) in [(22, false), (23, true)] {
        let l = &ledgers(cfg(protocol), 1)[0];
        assert_eq!(matches!(l, LedgerCloseMeta::V2(_)), want_v2, "p{protocol}");
        assert_eq!(header(l).header.ledger_version, protocol);
        for tx in txs(l) {
            let v = tx.meta.discriminant();
            assert_eq!(v, if want_v2 { 4 } else { 3 }, "p{protocol} meta");
        }
    }
}

#[test]
fn tx_hashes_are_envelope_hashes_under_the_passphrase() {
    for protocol in [22, 23] {
        let c = cfg(protocol);
        let network_id: [u8; 32] = Sha256::digest(c.network_passphrase.as_bytes()).into();
        for l in ledgers(c, 3) {
            let set: HashSet<[u8; 32]> = envelopes(tx_set(&l))
                .iter()
                .map(|e| e.hash(network_id).unwrap())
                .collect();
            let processed: HashSet<[u8; 32]> = txs(&l).iter().map(|t| t.hash).collect();
            assert_eq!(set.len(), 40);
            assert_eq!(set, processed);
        }
    }
}

#[test]
fn headers_chain_by_hash_with_increasing_sequence_and_close_time() {
    let ls = ledgers(
        Config {
            first_ledger: 1000,
            ..cfg(23)
        },
        6,
    );
    for (i, l) in ls.iter().enumerate() {
        let h = header(l);
        assert_eq!(h.header.ledger_seq, 1000 + i as u32);
        let own: [u8; 32] = Sha256::digest(h.header.to_xdr(Limits::none()).unwrap()).into();
        assert_eq!(h.hash.0, own, "header hash is the hash of the header");
        let set_hash: [u8; 32] = Sha256::digest(tx_set(l).to_xdr(Limits::none()).unwrap()).into();
        assert_eq!(h.header.scp_value.tx_set_hash.0, set_hash);
        if i > 0 {
            let prev = header(&ls[i - 1]);
            assert_eq!(h.header.previous_ledger_hash, prev.hash);
            assert!(h.header.scp_value.close_time.0 > prev.header.scp_value.close_time.0);
        }
    }
}

/// Value is conserved inside every transaction: XLM across all accounts changes by exactly
/// minus the fee charged, USDC across all trustlines not at all, and each `Updated` follows
/// the `State` of the same entry.
#[test]
fn entry_changes_conserve_value_in_every_transaction() {
    let mut soroban_refunds = 0;
    for protocol in [22, 23] {
        for l in ledgers(cfg(protocol), 20) {
            for tx in txs(&l) {
                let mut xlm = 0i64;
                let mut usdc = 0i64;
                let mut last_state: HashMap<Vec<u8>, i64> = HashMap::new();
                for ch in &tx.changes {
                    let (entry, is_state) = match ch {
                        LedgerEntryChange::State(e) => (e, true),
                        LedgerEntryChange::Updated(e) => (e, false),
                        other => panic!("unexpected change {other:?}"),
                    };
                    let (key, bal, is_xlm) = match &entry.data {
                        LedgerEntryData::Account(a) => (
                            a.account_id.to_xdr(Limits::none()).unwrap(),
                            a.balance,
                            true,
                        ),
                        LedgerEntryData::Trustline(t) => {
                            let mut k = t.account_id.to_xdr(Limits::none()).unwrap();
                            k.extend(t.asset.to_xdr(Limits::none()).unwrap());
                            (k, t.balance, false)
                        }
                        LedgerEntryData::Offer(_) => continue,
                        other => panic!("unexpected entry {other:?}"),
                    };
                    if is_state {
                        last_state.insert(key, bal);
                    } else {
                        let before = last_state.remove(&key).expect("Updated after State");
                        if is_xlm {
                            xlm += bal - before;
                        } else {
                            usdc += bal - before;
                        }
                    }
                }
                assert_eq!(xlm, -tx.fee_charged, "tx {}", hex(&tx.hash));
                assert_eq!(usdc, 0);
                if let TransactionMeta::V4(m) = &tx.meta {
                    if m.soroban_meta.is_some() && tx.success {
                        soroban_refunds += 1;
                    }
                }
            }
        }
    }
    assert!(
        soroban_refunds > 0,
        "the mix includes Soroban SAC transfers"
    );
}

#[test]
fn bad_configs_are_refused_with_the_value() {
    let err = Generator::new(Config {
        protocol_version: 19,
        ..Config::default()
    })
    .err()
    .unwrap();
    assert_eq!(err, ConfigError::Protocol(19));
    assert!(err.to_string().contains("19"));
    assert_eq!(
        Generator::new(Config {
            accounts: 1,
            ..Config::default()
        })
        .err(),
        Some(ConfigError::Accounts(1))
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
