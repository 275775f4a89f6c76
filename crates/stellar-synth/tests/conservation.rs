//! The token-transfer processor's conservation check holds on every synthetic ledger.

use stellar_synth::{Config, Generator};
use stellar_ttp::{verify_events, EventsProcessor};

#[test]
fn processor_conservation_check_passes_on_synthetic_ledgers() {
    for protocol in [21, 22, 23, 24] {
        let cfg = Config {
            protocol_version: protocol,
            txs_per_ledger: 60,
            accounts: 40,
            ..Config::default()
        };
        let processor = EventsProcessor::new(cfg.network_passphrase.clone());
        let mut g = Generator::new(cfg).unwrap();
        let mut kinds = std::collections::BTreeMap::new();
        for _ in 0..30 {
            let lcm = g.next_ledger();
            verify_events(&processor, &lcm).unwrap_or_else(|e| panic!("p{protocol}: {e}"));
            for ev in processor.events_from_ledger(&lcm).unwrap() {
                let json = stellar_ttp::to_json(&ev);
                let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                let kind = ["transfer", "mint", "burn", "clawback", "fee"]
                    .into_iter()
                    .find(|k| v.get(*k).is_some())
                    .unwrap();
                let refund = v["fee"]["amount"]
                    .as_str()
                    .is_some_and(|a| a.starts_with('-'));
                *kinds
                    .entry(if refund { "refund" } else { kind })
                    .or_insert(0) += 1;
            }
        }
        eprintln!("p{protocol}: {kinds:?}");
        assert!(kinds["transfer"] > 0 && kinds["fee"] > 0 && kinds["refund"] > 0);
        assert!(!kinds.contains_key("mint") && !kinds.contains_key("burn"));
    }
}
