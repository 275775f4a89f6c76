//! The analytics sink's figures, as atomic counters every output bumps and `/metrics` reads.

use std::sync::atomic::{AtomicU64, Ordering};

use super::OutputFormats;

pub struct AnalyticsMetrics {
    formats: OutputFormats,
    /// Events of the batches given to the sink.
    pub events_received: AtomicU64,
    /// Events every configured output has taken.
    pub events_written: AtomicU64,
    /// Parquet files completed (renamed into place).
    pub files_written: AtomicU64,
    /// Bytes of completed Parquet files.
    pub bytes_written: AtomicU64,
    pub websocket_connections: AtomicU64,
    pub websocket_messages_sent: AtomicU64,
    /// WebSocket clients disconnected for falling too far behind.
    pub websocket_clients_dropped: AtomicU64,
    /// The last ledger every output has taken (0: none yet).
    pub last_ledger: AtomicU64,
}

impl AnalyticsMetrics {
    pub fn new(formats: OutputFormats) -> AnalyticsMetrics {
        AnalyticsMetrics {
            formats,
            events_received: AtomicU64::new(0),
            events_written: AtomicU64::new(0),
            files_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            websocket_connections: AtomicU64::new(0),
            websocket_messages_sent: AtomicU64::new(0),
            websocket_clients_dropped: AtomicU64::new(0),
            last_ledger: AtomicU64::new(0),
        }
    }

    pub fn snapshot(&self) -> flowctl_sdk::Metrics {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        let flag = |on: bool| if on { 1.0 } else { 0.0 };
        [
            ("events_received_total", count(&self.events_received)),
            ("events_written_total", count(&self.events_written)),
            ("files_written_total", count(&self.files_written)),
            ("bytes_written_total", count(&self.bytes_written)),
            ("websocket_connections", count(&self.websocket_connections)),
            (
                "websocket_messages_sent_total",
                count(&self.websocket_messages_sent),
            ),
            (
                "websocket_clients_dropped_total",
                count(&self.websocket_clients_dropped),
            ),
            ("last_ledger", count(&self.last_ledger)),
            ("parquet_enabled", flag(self.formats.parquet)),
            ("json_enabled", flag(self.formats.json)),
            ("websocket_enabled", flag(self.formats.websocket)),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_every_counter_and_flags_the_configured_outputs() {
        let m = AnalyticsMetrics::new(OutputFormats::parse("json,websocket").unwrap());
        m.events_received.fetch_add(7, Ordering::Relaxed);
        m.last_ledger.store(42, Ordering::Relaxed);
        let s = m.snapshot();
        assert_eq!(s.len(), 11, "{s:?}");
        assert_eq!(s["events_received_total"], 7.0);
        assert_eq!(s["last_ledger"], 42.0);
        assert_eq!(s["websocket_clients_dropped_total"], 0.0);
        assert_eq!(
            (
                s["parquet_enabled"],
                s["json_enabled"],
                s["websocket_enabled"]
            ),
            (0.0, 1.0, 1.0)
        );
    }
}
