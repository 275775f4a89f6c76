//! Contract-data extraction on one core, on the Soroban-heavy load-test ledgers and on all
//! shared fixtures, beside decoding the same bytes with stellar-xdr alone.
//!
//! `cargo bench -p stellar-contract-data --bench contract_data` runs criterion, then prints
//! a summary table of changes/s and ledgers/s.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use stellar_contract_data::Extractor;
use stellar_ledgers::{LedgerCloseMeta, LedgerRange};
use stellar_xdr::{Limits, ReadXdr, WriteXdr};

struct Set {
    name: &'static str,
    /// (passphrase, raw LedgerCloseMeta XDR) per ledger.
    ledgers: Vec<(&'static str, Vec<u8>)>,
}

fn root() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .skip(2)
        .map(|a| a.join("../shared/testdata/stellar"))
        .find(|p| p.is_dir())
}

fn load(passphrase: &'static str, path: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let range = if path.is_dir() {
        LedgerRange::new(Some(997), Some(999))
    } else {
        LedgerRange::default()
    };
    stellar_ledgers::open(path, range)
        .unwrap()
        .map(|l| (passphrase, l.unwrap().to_xdr(Limits::none()).unwrap()))
        .collect()
}

fn sets(root: &Path) -> Vec<Set> {
    const PUB: &str = "Public Global Stellar Network ; September 2015";
    const TEST: &str = "Test SDF Network ; September 2015";
    const LOAD: &str = "load test network";
    let mut loadtest = load(LOAD, &root.join("loadtest/load-test-ledgers-v22.xdr.zstd"));
    loadtest.extend(load(
        LOAD,
        &root.join("loadtest/load-test-ledgers-v23.xdr.zstd"),
    ));
    let datastore = load(TEST, &root.join("testnet/datastore"));
    let mut all = loadtest.clone();
    all.extend(load(
        PUB,
        &root.join("pubnet/ttp-example/ledgers-base64.txt"),
    ));
    let dir = root.join("testnet/lighthorizon-1410048-1410367/ledgers");
    for s in 1410048..=1410367u32 {
        all.extend(load(TEST, &dir.join(s.to_string())));
    }
    all.extend(datastore.clone());
    vec![
        Set {
            name: "loadtest-v22+v23",
            ledgers: loadtest,
        },
        Set {
            name: "testnet-datastore",
            ledgers: datastore,
        },
        Set {
            name: "all-333",
            ledgers: all,
        },
    ]
}

fn decode(xdr: &[u8]) -> LedgerCloseMeta {
    let limits = Limits {
        depth: 500,
        len: xdr.len(),
    };
    LedgerCloseMeta::from_xdr(xdr, limits).unwrap()
}

struct Extractors {
    pubnet: Extractor,
    testnet: Extractor,
    loadtest: Extractor,
}

impl Extractors {
    fn new() -> Self {
        Extractors {
            pubnet: Extractor::new("Public Global Stellar Network ; September 2015"),
            testnet: Extractor::new("Test SDF Network ; September 2015"),
            loadtest: Extractor::new("load test network"),
        }
    }

    fn get(&self, passphrase: &str) -> &Extractor {
        match passphrase {
            "load test network" => &self.loadtest,
            p if p.starts_with("Public") => &self.pubnet,
            _ => &self.testnet,
        }
    }
}

/// Decodes every ledger of a set and extracts its changes; returns how many.
fn extract_all(x: &Extractors, set: &Set) -> usize {
    set.ledgers
        .iter()
        .map(|(p, xdr)| x.get(p).changes(&decode(xdr)).unwrap().len())
        .sum()
}

fn decode_all(set: &Set) -> u64 {
    let sum = set
        .ledgers
        .iter()
        .map(|(_, xdr)| u64::from(stellar_ttp::ledger_sequence(&decode(xdr))))
        .sum();
    std::hint::black_box(sum)
}

fn bench(c: &mut Criterion) {
    let Some(root) = root() else {
        eprintln!("skipping: Stellar fixtures not found in ../shared/testdata/stellar");
        return;
    };
    let x = Extractors::new();
    for set in sets(&root) {
        let mut g = c.benchmark_group(set.name);
        g.throughput(Throughput::Elements(set.ledgers.len() as u64));
        g.bench_function("decode", |b| b.iter(|| decode_all(&set)));
        g.bench_function("decode+changes", |b| b.iter(|| extract_all(&x, &set)));
        g.finish();
    }
}

/// Runs `f` repeatedly for about `budget` and returns runs per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn summary() {
    let Some(root) = root() else { return };
    let x = Extractors::new();
    println!();
    println!("| set | ledgers | changes | decode ledgers/s | decode+changes ledgers/s | changes/s | vs decode |");
    println!("|---|---|---|---|---|---|---|");
    for set in sets(&root) {
        let n = set.ledgers.len() as f64;
        let changes = extract_all(&x, &set);
        let budget = Duration::from_secs(3);
        let dec = rate(budget, || {
            decode_all(&set);
        }) * n;
        let ext = rate(budget, || {
            extract_all(&x, &set);
        }) * n;
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0}% |",
            set.name,
            set.ledgers.len(),
            changes,
            dec,
            ext,
            ext / n * changes as f64,
            100.0 * ext / dec
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
