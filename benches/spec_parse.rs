//! Pipeline-file parse + decode time against map size: 1k, 10k and 100k keys under a
//! component's `env` (the YAML parser caps a document at 250k nodes, ~124k keys). The time
//! per key should stay flat (linear total), so a reload of a large file cannot stall the
//! control socket.
//!
//! Run: `cargo bench --bench spec_parse`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn wide_pipeline(keys: usize) -> String {
    let mut text =
        String::from("apiVersion: flowctl/v1\nkind: Pipeline\nmetadata:\n  name: wide\n");
    text.push_str("spec:\n  sources:\n    - id: src\n      command: [\"true\"]\n      env:\n");
    for i in 0..keys {
        text.push_str(&format!("        VAR_{i}: \"{i}\"\n"));
    }
    text
}

fn parse_wide_maps(c: &mut Criterion) {
    let mut group = c.benchmark_group("spec_parse_wide_map");
    group.sample_size(10);
    for keys in [1_000, 10_000, 100_000] {
        let text = wide_pipeline(keys);
        group.throughput(Throughput::Elements(keys as u64));
        group.bench_with_input(BenchmarkId::from_parameter(keys), &text, |b, text| {
            b.iter(|| flowctl::spec::parse_str(Path::new("wide.yaml"), text).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, parse_wide_maps);
criterion_main!(benches);
