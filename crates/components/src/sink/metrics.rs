//! The sink's progress figures, reported in heartbeats and on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use flowctl_sdk::Metrics;

pub struct SinkMetrics {
    started: Instant,
    events: AtomicU64,
    last_ledger: AtomicU64,
    /// Microseconds since `started` of the last write; 0 = none yet.
    last_at_us: AtomicU64,
}

impl Default for SinkMetrics {
    fn default() -> Self {
        SinkMetrics {
            started: Instant::now(),
            events: AtomicU64::new(0),
            last_ledger: AtomicU64::new(0),
            last_at_us: AtomicU64::new(0),
        }
    }
}

impl SinkMetrics {
    pub fn written(&self, events: u64, through: u32) {
        self.events.fetch_add(events, Ordering::Relaxed);
        self.last_ledger
            .fetch_max(u64::from(through), Ordering::Relaxed);
        let now = self.started.elapsed().as_micros() as u64;
        self.last_at_us.store(now.max(1), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Metrics {
        let elapsed = self.started.elapsed().as_secs_f64();
        let events = self.events.load(Ordering::Relaxed) as f64;
        let last = self.last_at_us.load(Ordering::Relaxed);
        Metrics::from([
            ("events_written_total".to_string(), events),
            (
                "last_ledger_written".to_string(),
                self.last_ledger.load(Ordering::Relaxed) as f64,
            ),
            (
                "events_per_second".to_string(),
                if elapsed > 0.0 { events / elapsed } else { 0.0 },
            ),
            (
                "seconds_since_last_write".to_string(),
                if last == 0 {
                    elapsed
                } else {
                    elapsed - last as f64 / 1e6
                },
            ),
        ])
    }
}
