//! Processing counters, named as the Go ttp-processor reports them to the control plane.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default, Debug)]
pub struct Metrics {
    success: AtomicU64,
    errors: AtomicU64,
    events: AtomicU64,
    last_ledger: AtomicU64,
    latency_total_us: AtomicU64,
}

impl Metrics {
    pub fn record_success(&self, ledger: u32, events: usize, took: Duration) {
        self.success.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(events as u64, Ordering::Relaxed);
        self.last_ledger.fetch_max(ledger as u64, Ordering::Relaxed);
        self.latency_total_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn record_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// `(name, value)` pairs: `success_count, error_count, total_processed,
    /// total_events_emitted, last_processed_ledger, processing_latency_ms` (mean per ledger).
    pub fn snapshot(&self) -> Vec<(&'static str, f64)> {
        let success = self.success.load(Ordering::Relaxed);
        let errors = self.errors.load(Ordering::Relaxed);
        let latency_ms = if success == 0 {
            0.0
        } else {
            self.latency_total_us.load(Ordering::Relaxed) as f64 / success as f64 / 1000.0
        };
        vec![
            ("success_count", success as f64),
            ("error_count", errors as f64),
            ("total_processed", (success + errors) as f64),
            (
                "total_events_emitted",
                self.events.load(Ordering::Relaxed) as f64,
            ),
            (
                "last_processed_ledger",
                self.last_ledger.load(Ordering::Relaxed) as f64,
            ),
            ("processing_latency_ms", latency_ms),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_counts_successes_errors_and_mean_latency() {
        let m = Metrics::default();
        m.record_success(10, 3, Duration::from_millis(2));
        m.record_success(12, 5, Duration::from_millis(4));
        m.record_error();
        let s: std::collections::HashMap<_, _> = m.snapshot().into_iter().collect();
        assert_eq!(s["success_count"], 2.0);
        assert_eq!(s["error_count"], 1.0);
        assert_eq!(s["total_processed"], 3.0);
        assert_eq!(s["total_events_emitted"], 8.0);
        assert_eq!(s["last_processed_ledger"], 12.0);
        assert_eq!(s["processing_latency_ms"], 3.0);
    }
}
