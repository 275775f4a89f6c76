//! `/health`, `/ready`, `/live` and `/metrics` on `HEALTH_PORT`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::component::Shared;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/live", get(live))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    let status = s.health();
    let code = if status.serving() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": status.as_str(),
        "component": s.name,
        "ready": s.is_ready(),
        "service_id": s.service_id(),
        "registered": s.service_id().is_some(),
        "uptime_seconds": s.started.elapsed().as_secs_f64(),
        "metrics": s.provider.metrics(),
    });
    (code, axum::Json(body)).into_response()
}

async fn ready(State(s): State<Arc<Shared>>) -> Response {
    if s.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn live() -> &'static str {
    "alive\n"
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &s.prometheus) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}
