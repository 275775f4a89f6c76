//! Ready means the upstream ledger source answers. The gRPC health status follows it, so
//! probes see NOT_SERVING while the source is away and the component is reconnecting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// The service name probes ask about, besides the whole server ("").
pub const SERVICE: &str = "token_transfer_service.EventService";

type Hook = Arc<dyn Fn(bool) + Send + Sync>;

#[derive(Clone)]
pub struct Readiness {
    reporter: HealthReporter,
    ready: Arc<AtomicBool>,
    hook: Arc<Mutex<Option<Hook>>>,
}

impl Readiness {
    /// Starts not ready: nothing has reached the upstream yet.
    pub async fn new(reporter: HealthReporter) -> Self {
        let r = Readiness {
            reporter,
            ready: Arc::new(AtomicBool::new(true)),
            hook: Arc::default(),
        };
        r.set(false).await;
        r
    }

    /// Also tells `f` of every change (the control-plane integration's readiness), starting
    /// with the current state.
    pub fn on_change(&self, f: impl Fn(bool) + Send + Sync + 'static) {
        let f: Hook = Arc::new(f);
        f(self.is_ready());
        *self.hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub async fn set(&self, ready: bool) {
        if self.ready.swap(ready, Ordering::Relaxed) == ready {
            return;
        }
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        self.reporter.set_service_status(SERVICE, status).await;
        let hook = self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(f) = hook {
            f(ready);
        }
    }
}
