// Everything a ledger goes through after decoding: events, their JSON, conservation.
use stellar_ttp::EventsProcessor;
use stellar_xdr::LedgerCloseMeta;

pub fn exercise(lcm: &LedgerCloseMeta) {
    for passphrase in ["Test SDF Network ; September 2015", "load test network"] {
        let p = EventsProcessor::new(passphrase);
        if let Ok(events) = p.events_from_ledger(lcm) {
            for e in &events {
                let _ = stellar_ttp::to_json(e);
            }
        }
        let _ = stellar_ttp::verify_events(&p, lcm);
    }
}
