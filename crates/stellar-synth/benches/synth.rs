//! Ledgers per second the generator produces, as XDR bytes ready to serve.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stellar_synth::{Config, Generator};

fn generate(c: &mut Criterion) {
    let mut group = c.benchmark_group("synthetic_ledgers");
    for protocol in [22, 23] {
        let cfg = Config {
            protocol_version: protocol,
            ..Config::default()
        };
        let mut g = Generator::new(cfg.clone()).expect("valid config");
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("p{protocol}_{}tx", cfg.txs_per_ledger), |b| {
            b.iter(|| g.next_ledger_xdr())
        });
    }
    group.finish();
}

criterion_group!(benches, generate);
criterion_main!(benches);
