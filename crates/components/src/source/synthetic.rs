//! The synthetic backend: ledgers from `stellar-synth`, at a fixed rate or as fast as the
//! consumer reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flowctl_proto::raw_ledger_service::RawLedger;
use stellar_synth::{Config, Generator};

use super::SourceError;

/// Bytes of ledgers kept after generation, so that a consumer reconnecting a little behind the
/// tip (or a second consumer) is served without building them again. 32 MiB is a few hundred
/// busy ledgers, more than the streams hold in flight; older ones are regenerated
/// (deterministically, from their epoch's start) when asked for.
const CACHE_BYTES: usize = 32 << 20;

pub struct Synthetic {
    cfg: Config,
    /// Ledgers per second; 0 = as fast as possible.
    rate: f64,
    /// With a rate, the ledger that closes as the source starts: a source started at a later
    /// ledger does not wait for the ones before it to close.
    clock_from: u32,
    started: Instant,
    state: Arc<Mutex<State>>,
}

struct State {
    generator: Generator,
    /// Shared with the ledgers sent: a `Bytes` clone is a reference, not a copy.
    recent: BTreeMap<u32, Bytes>,
    recent_bytes: usize,
}

impl Synthetic {
    pub fn new(cfg: Config, rate: f64) -> Result<Self, SourceError> {
        let generator = Generator::new(cfg.clone())?;
        Ok(Synthetic {
            clock_from: cfg.first_ledger,
            cfg,
            rate,
            started: Instant::now(),
            state: Arc::new(Mutex::new(State {
                generator,
                recent: BTreeMap::new(),
                recent_bytes: 0,
            })),
        })
    }

    /// With a rate, ledgers close from `ledger` on (not from the network's first one).
    pub fn closing_from(mut self, ledger: u32) -> Self {
        self.clock_from = ledger.max(self.cfg.first_ledger);
        self
    }

    /// The newest ledger that exists now: with a rate, ledgers "close" on a schedule.
    pub fn latest(&self) -> u32 {
        if self.rate > 0.0 {
            let closed = (self.started.elapsed().as_secs_f64() * self.rate) as u64;
            self.clock_from + closed.min(u64::from(u32::MAX - self.clock_from)) as u32
        } else {
            let state = self.state.lock().expect("generator lock");
            state.generator.next_sequence().saturating_sub(1)
        }
    }

    pub async fn fetch(&self, from: u32, max: u32) -> Result<Vec<RawLedger>, SourceError> {
        if from < 2 {
            return Err(SourceError::Ledger {
                seq: from,
                message: "the synthetic network's first ledger is 2 (ledger 1 is genesis)".into(),
            });
        }
        let mut count = max.max(1);
        if self.rate > 0.0 {
            let due = Duration::from_secs_f64(
                f64::from(from.saturating_sub(self.clock_from)) / self.rate,
            );
            let elapsed = self.started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
            count = count.min(self.latest() - from + 1);
        }
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            let mut state = state.lock().expect("generator lock");
            let mut out = Vec::with_capacity(count as usize);
            for seq in from..from.saturating_add(count) {
                if let Some(xdr) = state.recent.get(&seq) {
                    out.push(RawLedger {
                        sequence: seq,
                        ledger_close_meta_xdr: xdr.clone(),
                    });
                    continue;
                }
                // Behind the cache or ahead of the generator: ledger N is the same from
                // wherever it is built, and at most its epoch's ledgers before it are built.
                state.generator.seek(seq);
                let xdr = Bytes::from(state.generator.next_ledger_xdr());
                state.recent_bytes += xdr.len();
                if let Some(old) = state.recent.insert(seq, xdr.clone()) {
                    state.recent_bytes -= old.len();
                }
                while state.recent_bytes > CACHE_BYTES && state.recent.len() > 1 {
                    if let Some((_, old)) = state.recent.pop_first() {
                        state.recent_bytes -= old.len();
                    }
                }
                out.push(RawLedger {
                    sequence: seq,
                    ledger_close_meta_xdr: xdr,
                });
            }
            Ok(out)
        })
        .await
        .map_err(|e| SourceError::Ledger {
            seq: from,
            message: format!("generator task failed: {e}"),
        })?
    }
}
