//! Conservation: in every fixture transaction the events' net change per (holder, asset)
//! equals the balance changes recorded in the ledger entry changes.

mod fixtures;

use stellar_ttp::{verify_events, EventsProcessor};

#[test]
fn every_fixture_transaction_conserves_balances() {
    let mut checked = 0;
    for name in fixtures::ALL {
        let Some(d) = fixtures::dataset(name) else {
            return;
        };
        let p = EventsProcessor::new(d.passphrase);
        for lcm in &d.ledgers {
            verify_events(&p, lcm).unwrap_or_else(|e| panic!("{name}: {e}"));
            checked += 1;
        }
    }
    assert_eq!(checked, 333, "all fixture ledgers were checked");
}

#[test]
fn a_fee_that_differs_from_the_balance_change_is_reported() {
    // The check must notice a wrong event: compare the events' deltas with a tampered copy.
    let Some(d) = fixtures::dataset("testnet-datastore-997-999") else {
        return;
    };
    let p = EventsProcessor::new(d.passphrase);
    let lcm = &d.ledgers[0];
    let mut tampered = lcm.clone();
    let stellar_xdr::LedgerCloseMeta::V1(m) = &mut tampered else {
        panic!("datastore ledgers are V1")
    };
    let mut pairs: Vec<_> = m.tx_processing.to_vec();
    // Charging one stroop more than the ledger changes show must be reported.
    pairs[0].result.result.fee_charged += 1;
    m.tx_processing = pairs.try_into().unwrap();
    assert!(verify_events(&p, lcm).is_ok());
    let err =
        verify_events(&p, &tampered).expect_err("a fee that does not match the balance change");
    assert!(err.to_string().contains("balance deltas differ"), "{err}");
}
