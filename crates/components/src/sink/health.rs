//! `/health` over HTTP: 200 while the sink can make progress, 503 (with the reason) while
//! it cannot, e.g. when the database is down.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// Shared readiness: `None` = ready, `Some(reason)` = not ready.
#[derive(Clone, Default)]
pub struct Readiness(Arc<Mutex<Option<String>>>);

impl Readiness {
    pub fn not_ready(reason: impl Into<String>) -> Self {
        let r = Readiness::default();
        r.set_not_ready(reason);
        r
    }

    pub fn set_ready(&self) {
        *self.0.lock().expect("readiness lock") = None;
    }

    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.0.lock().expect("readiness lock") = Some(reason.into());
    }

    pub fn reason(&self) -> Option<String> {
        self.0.lock().expect("readiness lock").clone()
    }
}

/// Serves `/health` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, readiness: Readiness) -> std::io::Result<()> {
    let app = Router::new().route(
        "/health",
        get(move || {
            let r = readiness.clone();
            async move {
                match r.reason() {
                    None => (StatusCode::OK, Json(json!({"status": "healthy"}))),
                    Some(reason) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({"status": "unhealthy", "reason": reason})),
                    ),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}
