//! The hub's HTTP listener: liveness and readiness for load balancers and
//! systemd; later also metrics and vendor callbacks.

use crate::practices::PracticeService;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;

/// The HTTP routes.
pub fn router(service: Arc<PracticeService>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(service)
}

/// Ready when the store answers (migrations ran before the listener opened).
async fn readyz(
    State(service): State<Arc<PracticeService>>,
) -> (StatusCode, Json<serde_json::Value>) {
    let store = service.store().ping().await;
    let adapters: serde_json::Map<String, serde_json::Value> = service
        .config()
        .adapters
        .keys()
        .map(|name| (name.clone(), serde_json::json!({"state": "running"})))
        .collect();
    let (code, store_state) = match store {
        Ok(()) => (StatusCode::OK, serde_json::json!({"state": "ok"})),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"state": "down", "reason": e.to_string()}),
        ),
    };
    (
        code,
        Json(serde_json::json!({"store": store_state, "adapters": adapters})),
    )
}
