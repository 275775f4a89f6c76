//! The source's progress figures, in the names the Go components report
//! (`ledgers_processed_total, current_ledger, ledgers_per_second, seconds_since_last_processed`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

pub struct SourceMetrics {
    started: Instant,
    processed: AtomicU64,
    current: AtomicU64,
    /// Microseconds since `started` of the last ledger sent; 0 = none yet.
    last_at_us: AtomicU64,
}

impl Default for SourceMetrics {
    fn default() -> Self {
        SourceMetrics {
            started: Instant::now(),
            processed: AtomicU64::new(0),
            current: AtomicU64::new(0),
            last_at_us: AtomicU64::new(0),
        }
    }
}

impl SourceMetrics {
    pub fn ledger_sent(&self, seq: u32) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        self.current.fetch_max(u64::from(seq), Ordering::Relaxed);
        let now = self.started.elapsed().as_micros() as u64;
        self.last_at_us.store(now.max(1), Ordering::Relaxed);
    }

    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> flowctl_sdk::Metrics {
        let elapsed = self.started.elapsed().as_secs_f64();
        let processed = self.processed() as f64;
        let last = self.last_at_us.load(Ordering::Relaxed);
        let since_last = if last == 0 {
            elapsed
        } else {
            elapsed - last as f64 / 1e6
        };
        flowctl_sdk::Metrics::from([
            ("ledgers_processed_total".to_string(), processed),
            (
                "current_ledger".to_string(),
                self.current.load(Ordering::Relaxed) as f64,
            ),
            (
                "ledgers_per_second".to_string(),
                if elapsed > 0.0 {
                    processed / elapsed
                } else {
                    0.0
                },
            ),
            ("seconds_since_last_processed".to_string(), since_last),
        ])
    }
}
