//! The daemon's Prometheus `/metrics` (`[metrics] listen` in the config).
//!
//! Every scrape asks the supervisor for a fresh status and renders that, so `/metrics`,
//! `flowctl-sup status` and the STATUS line never disagree and nothing here keeps counters of
//! its own. The text is OpenMetrics, which Prometheus reads natively.
//!
//! `/metrics` has no authentication and names every pipeline and component, so it is served
//! on a loopback address unless the config says `allow_remote = true`. A refused or busy
//! address is an error in the journal, never a reason to stop the pipelines: the daemon runs
//! on without metrics.

use std::fmt;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::api::protocol::{ComponentStatus, LastExit, SupervisorStatus};
use crate::config::MetricsConfig;
use crate::supervisor::{StateName, SupervisorHandle};

/// The OpenMetrics text format's media type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "metrics.listen = \"{0}\" is not a loopback address, and /metrics has no \
         authentication: use 127.0.0.1 (scrape through a proxy or an SSH tunnel), or set \
         metrics.allow_remote = true"
    )]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr} for /metrics: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `config.listen`: `Ok(None)` when metrics are turned off (`listen = ""`).
pub async fn bind(config: &MetricsConfig) -> Result<Option<tokio::net::TcpListener>, MetricsError> {
    let Some(addr) = config.listen else {
        return Ok(None);
    };
    if !addr.ip().is_loopback() && !config.allow_remote {
        return Err(MetricsError::NotLoopback(addr));
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves `/metrics` from `handle` on `listener` until the task is dropped or aborted.
pub async fn serve(listener: tokio::net::TcpListener, handle: SupervisorHandle) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(handle);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("/metrics stopped: {e}");
    }
}

/// What the daemon calls: binds and serves in a task, or says in the journal why there are no
/// metrics and returns `None`; the daemon runs on either way.
pub async fn start(
    config: &MetricsConfig,
    handle: SupervisorHandle,
) -> Option<tokio::task::JoinHandle<()>> {
    match bind(config).await {
        Ok(Some(listener)) => {
            let at = listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::info!("Prometheus metrics on http://{at}/metrics");
            Some(tokio::spawn(serve(listener, handle)))
        }
        Ok(None) => {
            tracing::info!("metrics are turned off (metrics.listen = \"\")");
            None
        }
        Err(e) => {
            tracing::error!("{e}; running without /metrics");
            None
        }
    }
}

async fn scrape(State(handle): State<SupervisorHandle>) -> Response {
    let Some(status) = handle.status().await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor has stopped\n",
        )
            .into_response();
    };
    match render(status) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The exposition of one status, `flowctl_`-prefixed.
pub fn render(status: SupervisorStatus) -> Result<String, fmt::Error> {
    let mut registry = Registry::with_prefix("flowctl");
    registry.register(
        "build",
        "The running flowctl-sup",
        Info::new([("version", env!("CARGO_PKG_VERSION"))]),
    );
    registry.register_collector(Box::new(Snapshot(status)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// Every value a component's `state` can take, for the one-gauge-per-state encoding.
const STATES: [StateName; 8] = [
    StateName::Pending,
    StateName::Starting,
    StateName::Ready,
    StateName::Backoff,
    StateName::Stopping,
    StateName::Exited,
    StateName::Failed,
    StateName::Stopped,
];

/// One status, encoded at scrape time in a stable order (pipelines and components as the
/// status lists them).
#[derive(Debug)]
struct Snapshot(SupervisorStatus);

type Labels<'a> = [(&'static str, &'a str); 2];

impl Snapshot {
    fn components(&self) -> impl Iterator<Item = (Labels<'_>, &ComponentStatus)> {
        self.0.pipelines.iter().flat_map(|p| {
            p.components.iter().map(move |c| {
                (
                    [("pipeline", p.name.as_str()), ("component", c.id.as_str())],
                    c,
                )
            })
        })
    }
}

/// Writes one family; a family without samples is left out.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        return Ok(());
    };
    let metric_type: MetricType = first.metric_type();
    let mut metric = enc.encode_descriptor(name, help, unit, metric_type)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(v: impl Into<i64>) -> ConstGauge<i64> {
    ConstGauge::new(v.into())
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let all = || self.components();
        let e = &mut enc;
        for (name, help, n) in [
            (
                "pipelines",
                "Pipelines the daemon runs",
                self.0.pipelines.len(),
            ),
            ("components", "Components of all pipelines", all().count()),
            (
                "pipelines_completed",
                "Pipelines whose bounded run completed: every sink finished, the rest drained",
                self.0.pipelines.iter().filter(|p| p.completed).count(),
            ),
            (
                "pipelines_stalled",
                "Pipelines whose bounded run has written no ledger for spec.range.stalled_after",
                self.0
                    .pipelines
                    .iter()
                    .filter(|p| p.stalled.is_some())
                    .count(),
            ),
        ] {
            let metric = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            gauge(n as i64).encode(metric)?;
        }
        let metric = e.encode_descriptor(
            "stderr_lines_dropped",
            "Lines the daemon dropped because its stderr was not being read",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(crate::stderr::dropped_total()).encode(metric)?;
        family(
            e,
            "component_up",
            "1 while the component's process runs",
            None,
            all().map(|(l, c)| (l, gauge(c.pid.is_some()))),
        )?;
        family(
            e,
            "component_ready",
            "1 while the component is ready (its readiness check passes)",
            None,
            all().map(|(l, c)| (l, gauge(c.ready))),
        )?;
        family(
            e,
            "component_restarts",
            "Starts after the first one, automatic or requested",
            None,
            all().map(|(l, c)| (l, ConstCounter::new(u64::from(c.restarts)))),
        )?;
        family(
            e,
            "component_state",
            "1 for the component's current state, 0 for the others",
            None,
            all().flat_map(|([p, c], s)| {
                STATES.iter().map(move |state| {
                    let name = state.as_str();
                    ([p, c, ("state", name)], gauge(s.state == *state))
                })
            }),
        )?;
        family(
            e,
            "component_last_exit_code",
            "Exit code of the component's last process that exited normally",
            None,
            all().filter_map(|(l, c)| match c.last_exit {
                Some(LastExit::Code { code }) => Some((l, gauge(code))),
                _ => None,
            }),
        )?;
        family(
            e,
            "component_last_exit_signal",
            "Signal that killed the component's last process, when one did",
            None,
            all().filter_map(|(l, c)| match c.last_exit {
                Some(LastExit::Signal { signal }) => Some((l, gauge(signal))),
                _ => None,
            }),
        )?;
        family(
            e,
            "component_heartbeat_age",
            "Time since the component's last heartbeat to the control plane",
            Some(&Unit::Seconds),
            all().filter_map(|(l, c)| {
                let age = c.registration.as_ref()?.heartbeat_age_ms?;
                Some((l, ConstGauge::new(age as f64 / 1000.0)))
            }),
        )?;
        family(
            e,
            "component_heartbeat_metric",
            "A number the component reported in its last heartbeat (success_count, \
             total_processed, …), by name",
            None,
            all().flat_map(|([p, c], s)| {
                s.registration
                    .iter()
                    .flat_map(|r| r.metrics.iter())
                    .filter_map(move |(name, value)| {
                        let v: f64 = value.trim().parse().ok()?;
                        Some(([p, c, ("metric", name.as_str())], ConstGauge::new(v)))
                    })
            }),
        )?;
        family(
            e,
            "component_memory",
            "Memory of the component's cgroup (memory.current): all its processes",
            Some(&Unit::Bytes),
            all().filter_map(|(l, c)| {
                let bytes = c.usage?.memory_bytes?;
                Some((l, gauge(i64::try_from(bytes).unwrap_or(i64::MAX))))
            }),
        )?;
        family(
            e,
            "component_cpu",
            "CPU time of the component's cgroup (cpu.stat usage_usec), over every restart",
            Some(&Unit::Seconds),
            all().filter_map(|(l, c)| {
                let usec = c.usage?.cpu_usec?;
                Some((l, ConstCounter::new(usec as f64 / 1e6)))
            }),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::protocol::{PipelineStatus, RegistrationInfo, ResourceUsage};

    fn component(id: &str, state: StateName) -> ComponentStatus {
        ComponentStatus::new(id, state)
    }

    fn sample<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn the_state_set_names_every_state_once_with_only_the_current_one_set() {
        let text = render(SupervisorStatus {
            pipelines: vec![PipelineStatus {
                name: "p".into(),
                completed: false,
                stalled: None,
                components: vec![component("c", StateName::Stopping)],
            }],
        })
        .unwrap();
        let lines = sample(&text, "flowctl_component_state{");
        let mut labels: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.split("state=\"").nth(1)?.split('"').next())
            .collect();
        labels.sort_unstable();
        let mut all = STATES.map(StateName::as_str).to_vec();
        all.sort_unstable();
        assert_eq!(labels, all, "{text}");
        let set: Vec<&&str> = lines.iter().filter(|l| l.ends_with(" 1")).collect();
        assert_eq!(set.len(), 1, "{text}");
        assert!(set[0].contains("state=\"stopping\""), "{text}");
    }

    #[test]
    fn a_status_renders_per_component_families_with_units() {
        let mut source = component("src", StateName::Ready);
        source.pid = Some(42);
        source.ready = true;
        source.restarts = 2;
        source.last_exit = Some(LastExit::Signal { signal: 9 });
        source.usage = Some(ResourceUsage {
            memory_bytes: Some(4096),
            cpu_usec: Some(1_500_000),
        });
        source.registration = Some(RegistrationInfo {
            health: "healthy".into(),
            heartbeat_age_ms: Some(2500),
            linked_by: Some("peer process".into()),
            metrics: [
                ("success_count".to_string(), "7".to_string()),
                ("mode".to_string(), "fast".to_string()),
            ]
            .into(),
        });
        let mut sink = component("sink", StateName::Backoff);
        sink.last_exit = Some(LastExit::Code { code: 3 });
        let text = render(SupervisorStatus {
            pipelines: vec![PipelineStatus {
                name: "ttp".into(),
                completed: false,
                stalled: Some("stalled: no ledger of 1-9 written yet for 5m".into()),
                components: vec![source, sink],
            }],
        })
        .unwrap();
        let l = r#"{pipeline="ttp",component="src"}"#;
        for want in [
            "flowctl_pipelines 1".to_string(),
            "flowctl_pipelines_stalled 1".into(),
            "flowctl_components 2".into(),
            format!("flowctl_component_up{l} 1"),
            format!("flowctl_component_ready{l} 1"),
            format!("flowctl_component_restarts_total{l} 2"),
            format!("flowctl_component_last_exit_signal{l} 9"),
            r#"flowctl_component_last_exit_code{pipeline="ttp",component="sink"} 3"#.into(),
            format!("flowctl_component_heartbeat_age_seconds{l} 2.5"),
            r#"flowctl_component_heartbeat_metric{pipeline="ttp",component="src",metric="success_count"} 7.0"#.into(),
            format!("flowctl_component_memory_bytes{l} 4096"),
            format!("flowctl_component_cpu_seconds_total{l} 1.5"),
            r#"flowctl_component_state{pipeline="ttp",component="sink",state="backoff"} 1"#.into(),
            r#"flowctl_component_state{pipeline="ttp",component="sink",state="ready"} 0"#.into(),
            format!(r#"flowctl_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION")),
            "flowctl_stderr_lines_dropped_total 0".into(),
            "# EOF".into(),
        ] {
            assert!(text.lines().any(|line| line == want), "no {want:?} in\n{text}");
        }
        // A non-numeric heartbeat value is not a sample; no cgroup, no memory sample.
        assert!(!text.contains("metric=\"mode\""), "{text}");
        assert_eq!(sample(&text, "flowctl_component_memory_bytes{").len(), 1);
        assert_eq!(sample(&text, "flowctl_component_state{").len(), 16);
        assert!(
            text.contains("# UNIT flowctl_component_memory_bytes bytes"),
            "{text}"
        );
    }

    #[test]
    fn families_without_samples_are_left_out() {
        let text = render(SupervisorStatus { pipelines: vec![] }).unwrap();
        assert!(text.contains("flowctl_pipelines 0"), "{text}");
        assert!(!text.contains("component_up"), "{text}");
        assert!(!text.contains("component_memory"), "{text}");
    }

    #[tokio::test]
    async fn a_non_loopback_address_is_refused_unless_allowed() {
        let mut config = MetricsConfig {
            listen: Some(([0, 0, 0, 0], 0).into()),
            allow_remote: false,
        };
        let err = bind(&config).await.unwrap_err();
        assert!(
            err.to_string().contains("metrics.allow_remote = true"),
            "{err}"
        );
        config.allow_remote = true;
        assert!(bind(&config).await.unwrap().is_some());
        config.listen = None;
        assert!(bind(&config).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_busy_address_is_a_bind_error_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let config = MetricsConfig {
            listen: Some(addr),
            allow_remote: false,
        };
        let err = bind(&config).await.unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
