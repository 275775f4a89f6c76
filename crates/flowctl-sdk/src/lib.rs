//! Component SDK for flowctl pipeline components.
//!
//! A component calls [`Component::from_env`] once at start-up and gets:
//! - the env contract read and checked ([`Config`]): `ENABLE_FLOWCTL`, `FLOWCTL_ENDPOINT`,
//!   `FLOWCTL_COMPONENT_ID`, `FLOWCTL_SERVICE_ID`, `FLOWCTL_HEARTBEAT_INTERVAL` (`10s` or
//!   milliseconds), `FLOWCTL_TOKEN`, `HEALTH_PORT`, `HEALTH_BIND_ADDRESS`, `PORT`, each also
//!   with the component's prefix (`TTP_PROCESSOR_ENABLE_FLOWCTL` wins over `ENABLE_FLOWCTL`);
//! - registration through `flowctl.ControlPlane` `Register` (as the Go components do), retried
//!   with backoff, and heartbeats carrying the [`MetricsProvider`]'s numbers every interval;
//!   a `NOT_FOUND` answer (the registry restarted or forgot it) makes it register again;
//! - `/health` (JSON: status, uptime, metrics), `/ready`, `/live` and `/metrics` (Prometheus
//!   text) on `HEALTH_PORT`, bound to 127.0.0.1 unless `HEALTH_BIND_ADDRESS` says otherwise;
//! - on [`Handle::shutdown`], an unregister (`flowctl.v1` `UnregisterComponent`);
//! - [`DeadLetters`]: ledgers it cannot handle recorded with the control plane, when
//!   `FLOWCTL_ON_ERROR` ([`OnError`]) says `dead-letter`; counted as `dead_letters_total`.
//!
//! The control plane being absent never fails or blocks the component: `start` returns at
//! once and registration goes on in the background, and `shutdown` takes at most
//! [`SHUTDOWN_TIMEOUT`] even when the control plane does not answer.
//!
//! ```no_run
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use flowctl_sdk::{Component, Metrics, ServiceType};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let processed = Arc::new(AtomicU64::new(0));
//! let counter = processed.clone();
//! let handle = Component::from_env("TTP_PROCESSOR", ServiceType::Processor)?
//!     .with_event_types(&["raw_ledger_service.RawLedger"], &["token_transfer.TokenTransferEvent"])
//!     .with_metrics(move || {
//!         Metrics::from([("total_processed".to_string(), counter.load(Ordering::Relaxed) as f64)])
//!     })
//!     .start()
//!     .await?;
//! handle.set_ready(true); // once the upstream is connected
//! processed.fetch_add(1, Ordering::Relaxed);
//! handle.shutdown().await; // on SIGTERM
//! # Ok(()) }
//! ```

mod component;
mod control;
pub mod dead_letters;
pub mod env;
mod http;
pub mod metrics;

pub use component::{Component, Handle, Health, ServiceType, StartError, SHUTDOWN_TIMEOUT};
pub use control::Backoff;
pub use dead_letters::{DeadLetters, OnError, ReportError};
pub use env::{Config, ConfigError};
pub use metrics::{Metrics, MetricsProvider, NoMetrics};

/// The exit code of a component that found a newer copy of itself owning its work (a shard
/// requeued on another host while this one still ran): flowctl never restarts it, whatever
/// its restart policy, and reports it as fenced. 65 is `EX_DATAERR` of `sysexits.h`: the
/// work this copy holds is no longer its own.
pub const EXIT_FENCED: i32 = 65;
