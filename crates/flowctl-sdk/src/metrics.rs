//! What a component reports: one set of named numbers, read by heartbeats, `/health` and
//! `/metrics` alike, so the three never disagree.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// A snapshot of a component's metrics, e.g. `total_processed`, `error_count`.
pub type Metrics = BTreeMap<String, f64>;

/// Supplies the component's current metrics. Called once per heartbeat and per scrape, so it
/// should be cheap (read atomics, do not compute).
pub trait MetricsProvider: Send + Sync + 'static {
    fn metrics(&self) -> Metrics;
}

impl<F> MetricsProvider for F
where
    F: Fn() -> Metrics + Send + Sync + 'static,
{
    fn metrics(&self) -> Metrics {
        self()
    }
}

/// The provider of a component that reports nothing.
#[derive(Debug, Default)]
pub struct NoMetrics;

impl MetricsProvider for NoMetrics {
    fn metrics(&self) -> Metrics {
        Metrics::new()
    }
}

/// A Prometheus name from a metric name: letters, digits and `_` only, not starting with a digit.
pub fn prometheus_name(namespace: &str, name: &str) -> String {
    let raw = if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}_{name}")
    };
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Exposes the provider's metrics as gauges at scrape time (the provider is the source of
/// truth, so nothing is copied between scrapes).
pub(crate) struct ProviderCollector {
    pub namespace: String,
    pub provider: Arc<dyn MetricsProvider>,
    pub extra: Arc<dyn Fn() -> Metrics + Send + Sync>,
}

impl std::fmt::Debug for ProviderCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderCollector")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl prometheus_client::collector::Collector for ProviderCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut all = (self.extra)();
        all.extend(self.provider.metrics());
        for (name, value) in all {
            let full = prometheus_name(&self.namespace, &name);
            let gauge = ConstGauge::new(value);
            let metric = encoder.encode_descriptor(&full, &name, None, MetricType::Gauge)?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_are_sanitised() {
        assert_eq!(
            prometheus_name("ttp_processor", "total_processed"),
            "ttp_processor_total_processed"
        );
        assert_eq!(prometheus_name("", "events.in-flight"), "events_in_flight");
        assert_eq!(prometheus_name("", "5xx"), "_5xx");
        assert_eq!(prometheus_name("TTP", "Latency"), "ttp_latency");
    }
}
