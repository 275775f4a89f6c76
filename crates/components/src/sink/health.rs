//! The sink's readiness, mirrored to the component SDK (`/health`, `/ready` on
//! `HEALTH_PORT`, heartbeats) once it is attached. The database being down makes the sink
//! unhealthy (`/health` answers 503); an unreachable processor only degrades it.

use std::sync::{Arc, Mutex};

use flowctl_sdk::{Handle, Health};

#[derive(Clone, Default)]
pub struct Readiness(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// `None` = ready; `Some((health, reason))` = not ready.
    state: Mutex<Option<(Health, String)>>,
    sdk: Mutex<Option<Handle>>,
}

impl Readiness {
    pub fn not_ready(reason: impl Into<String>) -> Self {
        let r = Readiness::default();
        r.set(Some((Health::Degraded, reason.into())));
        r
    }

    /// From now on `/health` and `/ready` follow this readiness.
    pub fn attach(&self, handle: Handle) {
        let mut sdk = self.0.sdk.lock().unwrap_or_else(|p| p.into_inner());
        *sdk = Some(handle);
        drop(sdk);
        let state = self.state();
        self.set(state);
    }

    pub fn set_ready(&self) {
        self.set(None);
    }

    /// Working around a problem (e.g. reconnecting upstream): not ready, still healthy.
    pub fn set_degraded(&self, reason: impl Into<String>) {
        self.set(Some((Health::Degraded, reason.into())));
    }

    /// Cannot make progress (e.g. the database is down): `/health` answers 503.
    pub fn set_unhealthy(&self, reason: impl Into<String>) {
        self.set(Some((Health::Unhealthy, reason.into())));
    }

    /// Why the sink is not ready, if it is not.
    pub fn reason(&self) -> Option<String> {
        self.state().map(|(_, r)| r)
    }

    pub fn is_ready(&self) -> bool {
        self.state().is_none()
    }

    /// Unregisters and stops the health endpoints.
    pub async fn shutdown(&self) {
        let handle = self.0.sdk.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            h.shutdown().await;
        }
    }

    fn state(&self) -> Option<(Health, String)> {
        self.0
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, state: Option<(Health, String)>) {
        let sdk = self.0.sdk.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = sdk.as_ref() {
            h.set_ready(state.is_none());
            h.set_health(state.as_ref().map_or(Health::Healthy, |(h, _)| *h));
        }
        *self.0.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }
}
