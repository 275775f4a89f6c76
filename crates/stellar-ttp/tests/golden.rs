//! Our events equal the reference implementation's golden events, in order.

mod fixtures;

use stellar_ttp::EventsProcessor;

fn check(name: &'static str) {
    let Some(d) = fixtures::dataset(name) else {
        return;
    };
    let golden = fixtures::golden_events(&d);
    let p = EventsProcessor::new(d.passphrase);
    let mut ours = Vec::new();
    for lcm in &d.ledgers {
        let seq = stellar_ttp::ledger_sequence(lcm);
        let events = p
            .events_from_ledger(lcm)
            .unwrap_or_else(|e| panic!("{name}: ledger {seq}: {e}"));
        for e in events {
            let v: serde_json::Value =
                serde_json::from_str(&stellar_ttp::to_json(&e)).expect("our JSON parses");
            ours.push((seq, v));
        }
    }
    for (i, ((seq, ours), golden)) in ours.iter().zip(&golden).enumerate() {
        assert_eq!(
            ours, golden,
            "{name}: event {i} (ledger {seq}) differs\nours:   {ours}\ngolden: {golden}"
        );
    }
    assert_eq!(ours.len(), golden.len(), "{name}: event count");
    eprintln!(
        "{name}: {} ledgers, {} events equal the goldens",
        d.ledgers.len(),
        ours.len()
    );
}

#[test]
fn pubnet_ttp_example_matches_golden_events() {
    check("pubnet-ttp-example");
}

#[test]
fn testnet_datastore_matches_golden_events() {
    check("testnet-datastore-997-999");
}

#[test]
fn testnet_lighthorizon_matches_golden_events() {
    check("testnet-lighthorizon-1410048-1410367");
}

#[test]
fn loadtest_v22_matches_golden_events() {
    check("loadtest-v22");
}

#[test]
fn loadtest_v23_refunds_close_the_ledger_and_match_golden_events() {
    check("loadtest-v23");
}
