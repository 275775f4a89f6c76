//! Registration and heartbeats with the flowctl control plane through the component SDK,
//! under the Go ttp-processor's name, type and metric names.

use std::sync::{Arc, Mutex};

use flowctl_sdk::{Component as SdkComponent, Handle, Health, ServiceType, StartError};

use super::metrics::Metrics;
use super::readiness::Readiness;

/// The env prefix: `TTP_PROCESSOR_ENABLE_FLOWCTL` wins over `ENABLE_FLOWCTL`, and so on.
pub const ENV_PREFIX: &str = "TTP_PROCESSOR";

/// The running integration; shared with the readiness hook until shutdown.
pub struct Registration {
    handle: Arc<Mutex<Option<Handle>>>,
}

impl Registration {
    /// Starts the integration (health endpoints on `HEALTH_PORT`; with `ENABLE_FLOWCTL`,
    /// registration and heartbeats in the background). Readiness follows the upstream
    /// source: while it is away the component is not ready and reports itself degraded.
    /// `letters` counts the ledgers set aside: `dead_letters_total`.
    pub async fn start(
        metrics: Arc<Metrics>,
        readiness: &Readiness,
        letters: flowctl_sdk::DeadLetters,
    ) -> Result<Self, StartError> {
        let handle = SdkComponent::from_env(ENV_PREFIX, ServiceType::Processor)?
            .with_event_types(
                &["raw_ledger_service.RawLedger"],
                &["token_transfer.TokenTransferEvent"],
            )
            .with_metrics(move || {
                metrics
                    .snapshot()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .chain([("dead_letters_total".to_string(), letters.total() as f64)])
                    .collect::<flowctl_sdk::Metrics>()
            })
            .start()
            .await?;
        let handle = Arc::new(Mutex::new(Some(handle)));
        let shared = handle.clone();
        readiness.on_change(move |ready| {
            if let Some(h) = shared.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                h.set_ready(ready);
                h.set_health(if ready {
                    Health::Healthy
                } else {
                    Health::Degraded
                });
            }
        });
        Ok(Registration { handle })
    }

    pub fn health_addr(&self) -> Option<std::net::SocketAddr> {
        self.handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|h| h.health_addr())
    }

    /// Unregisters and stops heartbeats and the health endpoints.
    pub async fn shutdown(self) {
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            h.shutdown().await;
        }
    }
}
