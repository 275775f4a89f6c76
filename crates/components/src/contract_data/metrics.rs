//! The processor's numbers under the seed's names (`contract_data_…` on `/metrics`, the
//! same names in heartbeats). Each ledger's processing time is measured once and goes both
//! into the `processing_duration_seconds` histogram and into the mean `processing_latency_ms`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;

#[derive(Debug)]
pub struct ContractDataMetrics {
    started: Instant,
    /// Changes passed on, and changes the filters kept back.
    pub contracts_processed: AtomicU64,
    pub entries_skipped: AtomicU64,
    pub batches_created: AtomicU64,
    /// LedgerCloseMeta bytes processed.
    pub bytes_processed: AtomicU64,
    pub ledgers_processed: AtomicU64,
    pub processing_errors: AtomicU64,
    pub current_ledger: AtomicU64,
    /// Streams open now (Flight and gRPC), and Flight streams among them.
    pub active_sessions: AtomicU64,
    pub flight_clients: AtomicU64,
    pub flight_records_streamed: AtomicU64,
    pub grpc_records_streamed: AtomicU64,
    processing_us: AtomicU64,
    duration: Histogram,
}

impl Default for ContractDataMetrics {
    fn default() -> Self {
        ContractDataMetrics {
            started: Instant::now(),
            contracts_processed: AtomicU64::new(0),
            entries_skipped: AtomicU64::new(0),
            batches_created: AtomicU64::new(0),
            bytes_processed: AtomicU64::new(0),
            ledgers_processed: AtomicU64::new(0),
            processing_errors: AtomicU64::new(0),
            current_ledger: AtomicU64::new(0),
            active_sessions: AtomicU64::new(0),
            flight_clients: AtomicU64::new(0),
            flight_records_streamed: AtomicU64::new(0),
            grpc_records_streamed: AtomicU64::new(0),
            processing_us: AtomicU64::new(0),
            // 100 µs to about 6.5 s.
            duration: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
        }
    }
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl ContractDataMetrics {
    /// One ledger processed: its bytes, the changes kept and skipped, and how long it took.
    pub fn ledger(&self, ledger: u32, bytes: usize, kept: usize, skipped: usize, took: Duration) {
        add(&self.ledgers_processed, 1);
        add(&self.bytes_processed, bytes as u64);
        add(&self.contracts_processed, kept as u64);
        add(&self.entries_skipped, skipped as u64);
        add(&self.processing_us, took.as_micros() as u64);
        self.current_ledger
            .fetch_max(u64::from(ledger), Ordering::Relaxed);
        self.duration.observe(took.as_secs_f64());
    }

    pub fn error(&self) {
        add(&self.processing_errors, 1);
    }

    /// A stream opened; the guard closes it when dropped.
    pub fn session(self: &Arc<Self>, flight: bool) -> Session {
        add(&self.active_sessions, 1);
        if flight {
            add(&self.flight_clients, 1);
        }
        Session {
            metrics: self.clone(),
            flight,
        }
    }

    /// The named numbers of heartbeats and `/metrics`.
    pub fn snapshot(&self) -> flowctl_sdk::Metrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let ledgers = get(&self.ledgers_processed);
        let processed = get(&self.contracts_processed);
        let errors = get(&self.processing_errors);
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let latency_ms = if ledgers == 0.0 {
            0.0
        } else {
            get(&self.processing_us) / ledgers / 1000.0
        };
        let error_rate = if ledgers + errors == 0.0 {
            0.0
        } else {
            errors / (ledgers + errors)
        };
        [
            ("contracts_processed_total", processed),
            ("entries_skipped_total", get(&self.entries_skipped)),
            ("batches_created_total", get(&self.batches_created)),
            ("bytes_processed_total", get(&self.bytes_processed)),
            ("ledgers_processed_total", ledgers),
            ("processing_errors_total", errors),
            ("current_ledger", get(&self.current_ledger)),
            ("active_sessions", get(&self.active_sessions)),
            ("flight_clients_connected", get(&self.flight_clients)),
            (
                "flight_records_streamed_total",
                get(&self.flight_records_streamed),
            ),
            (
                "grpc_records_streamed_total",
                get(&self.grpc_records_streamed),
            ),
            ("contracts_per_second", processed / elapsed),
            ("bytes_per_second", get(&self.bytes_processed) / elapsed),
            ("processing_latency_ms", latency_ms),
            ("error_rate", error_rate),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The histogram, for the component's `/metrics`.
    pub fn collector(self: &Arc<Self>) -> DurationCollector {
        DurationCollector(self.clone())
    }
}

/// An open stream, counted until dropped.
pub struct Session {
    metrics: Arc<ContractDataMetrics>,
    flight: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.metrics.active_sessions.fetch_sub(1, Ordering::Relaxed);
        if self.flight {
            self.metrics.flight_clients.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// `contract_data_processing_duration_seconds`.
#[derive(Debug)]
pub struct DurationCollector(Arc<ContractDataMetrics>);

impl Collector for DurationCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metric = encoder.encode_descriptor(
            "contract_data_processing_duration_seconds",
            "Time to decode one ledger and extract its contract-data changes",
            None,
            MetricType::Histogram,
        )?;
        self.0.duration.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_latency_and_the_histogram_come_from_the_same_measurements() {
        let m = Arc::new(ContractDataMetrics::default());
        m.ledger(10, 100, 3, 1, Duration::from_millis(2));
        m.ledger(11, 50, 2, 0, Duration::from_millis(4));
        m.error();
        let s = m.snapshot();
        assert_eq!(s["contracts_processed_total"], 5.0);
        assert_eq!(s["entries_skipped_total"], 1.0);
        assert_eq!(s["bytes_processed_total"], 150.0);
        assert_eq!(s["current_ledger"], 11.0);
        assert_eq!(s["processing_latency_ms"], 3.0);
        assert!((s["error_rate"] - 1.0 / 3.0).abs() < 1e-9);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(m.collector()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("contract_data_processing_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("contract_data_processing_duration_seconds_sum 0.006"),
            "{text}"
        );
    }
}
