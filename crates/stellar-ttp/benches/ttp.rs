//! Throughput of event extraction on the shared fixtures, against XDR decoding alone on
//! the same bytes, and against the Go reference figures in docs/anchors.md.
//!
//! `cargo bench -p stellar-ttp --bench ttp` runs criterion, then prints a summary table.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use stellar_ledgers::{LedgerCloseMeta, LedgerRange};
use stellar_ttp::EventsProcessor;
use stellar_xdr::{Limits, ReadXdr, WriteXdr};

struct Set {
    name: &'static str,
    /// (passphrase, raw LedgerCloseMeta XDR) per ledger.
    ledgers: Vec<(&'static str, Vec<u8>)>,
    /// Go `EventsFromLedger`: decode-only ledgers/s, decode+events ledgers/s, events/s.
    go: (f64, f64, f64),
}

fn root() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .skip(2)
        .map(|a| a.join("../shared/testdata/stellar"))
        .find(|p| p.is_dir())
}

fn load(path: &Path) -> Vec<LedgerCloseMeta> {
    let range = if path.is_dir() {
        LedgerRange::new(Some(997), Some(999))
    } else {
        LedgerRange::default()
    };
    stellar_ledgers::open(path, range)
        .unwrap()
        .map(|l| l.unwrap())
        .collect()
}

fn raw(passphrase: &'static str, ls: Vec<LedgerCloseMeta>) -> Vec<(&'static str, Vec<u8>)> {
    ls.into_iter()
        .map(|l| (passphrase, l.to_xdr(Limits::none()).unwrap()))
        .collect()
}

fn sets(root: &Path) -> Vec<Set> {
    const PUB: &str = "Public Global Stellar Network ; September 2015";
    const TEST: &str = "Test SDF Network ; September 2015";
    const LOAD: &str = "load test network";
    let mut loadtest = raw(
        LOAD,
        load(&root.join("loadtest/load-test-ledgers-v22.xdr.zstd")),
    );
    loadtest.extend(raw(
        LOAD,
        load(&root.join("loadtest/load-test-ledgers-v23.xdr.zstd")),
    ));
    let pubnet = raw(
        PUB,
        load(&root.join("pubnet/ttp-example/ledgers-base64.txt")),
    );
    let dir = root.join("testnet/lighthorizon-1410048-1410367/ledgers");
    let lighthorizon: Vec<_> = (1410048..=1410367u32)
        .flat_map(|s| raw(TEST, load(&dir.join(s.to_string()))))
        .collect();
    let datastore = raw(TEST, load(&root.join("testnet/datastore")));
    let mut all = loadtest.clone();
    all.extend(pubnet.clone());
    all.extend(lighthorizon.clone());
    all.extend(datastore);
    vec![
        Set {
            name: "loadtest-v22+v23",
            ledgers: loadtest,
            go: (116.0, 73.8, 70_800.0),
        },
        Set {
            name: "pubnet-ttp-example",
            ledgers: pubnet,
            go: (903.0, 451.0, 110_000.0),
        },
        Set {
            name: "testnet-lighthorizon",
            ledgers: lighthorizon,
            go: (47_000.0, 25_500.0, 128_000.0),
        },
        Set {
            name: "all-333",
            ledgers: all,
            go: (5_770.0, 3_515.0, 80_800.0),
        },
    ]
}

fn decode(xdr: &[u8]) -> LedgerCloseMeta {
    LedgerCloseMeta::from_xdr(
        xdr,
        Limits {
            depth: 500,
            len: xdr.len(),
        },
    )
    .unwrap()
}

struct Procs {
    pubnet: EventsProcessor,
    testnet: EventsProcessor,
    loadtest: EventsProcessor,
}

impl Procs {
    fn new() -> Self {
        Procs {
            pubnet: EventsProcessor::new("Public Global Stellar Network ; September 2015"),
            testnet: EventsProcessor::new("Test SDF Network ; September 2015"),
            loadtest: EventsProcessor::new("load test network"),
        }
    }
    fn get(&self, passphrase: &str) -> &EventsProcessor {
        match passphrase {
            "load test network" => &self.loadtest,
            p if p.starts_with("Public") => &self.pubnet,
            _ => &self.testnet,
        }
    }
}

/// Decodes and processes every ledger of a set; returns the number of events.
fn process_all(procs: &Procs, set: &Set) -> usize {
    set.ledgers
        .iter()
        .map(|(p, xdr)| procs.get(p).events_from_ledger(&decode(xdr)).unwrap().len())
        .sum()
}

/// Decodes every ledger of a set; returns a value depending on each so nothing is elided.
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
    let procs = Procs::new();
    for set in sets(&root) {
        let mut g = c.benchmark_group(set.name);
        g.throughput(Throughput::Elements(set.ledgers.len() as u64));
        g.bench_function("decode", |b| b.iter(|| decode_all(&set)));
        g.bench_function("decode+events", |b| b.iter(|| process_all(&procs, &set)));
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
    let procs = Procs::new();
    println!();
    println!("| set | ledgers | events | decode ledgers/s | decode+events ledgers/s | events/s | events vs decode | vs Go (decode+events) |");
    println!("|---|---|---|---|---|---|---|---|");
    for set in sets(&root) {
        let n = set.ledgers.len() as f64;
        let events = process_all(&procs, &set);
        let budget = Duration::from_secs(3);
        let dec = rate(budget, || {
            decode_all(&set);
        }) * n;
        let proc_ = rate(budget, || {
            process_all(&procs, &set);
        }) * n;
        let ev_s = proc_ / n * events as f64;
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0}% | {:.1}x (Go {:.0}) |",
            set.name,
            set.ledgers.len(),
            events,
            dec,
            proc_,
            ev_s,
            100.0 * proc_ / dec,
            proc_ / set.go.1,
            set.go.1
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
