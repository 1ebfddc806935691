//! The hub's HTTP listener: liveness and readiness for load balancers and
//! systemd, and the vendor callback endpoints adapters serve under
//! `/callbacks/{instance}`.

use crate::practices::PracticeService;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use raccordo_adapters::{AdapterHealth, ResultSink};
use std::sync::Arc;

/// The HTTP routes: probes, plus every adapter instance's callback routes.
pub fn router(service: Arc<PracticeService>, sink: Arc<dyn ResultSink>) -> axum::Router {
    let mut router = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Arc::clone(&service));
    let mut names: Vec<&String> = service.adapters().keys().collect();
    names.sort();
    for name in names {
        let instance = &service.adapters()[name];
        if let Some(routes) = instance.adapter.http_routes(Arc::clone(&sink)) {
            router = router.nest(&format!("/callbacks/{name}"), routes);
        }
    }
    router
}

/// Ready when the store answers (migrations ran before the listener opened)
/// and no adapter instance is down.
async fn readyz(
    State(service): State<Arc<PracticeService>>,
) -> (StatusCode, Json<serde_json::Value>) {
    let store = service.store().ping().await;
    let mut ready = store.is_ok();
    let adapters: serde_json::Map<String, serde_json::Value> = service
        .adapters()
        .iter()
        .map(|(name, instance)| {
            let health = instance.adapter.health();
            ready &= !matches!(health, AdapterHealth::Down(_));
            let mut entry = serde_json::json!({
                "kind": instance.adapter.kind(),
                "state": health.state(),
            });
            if let Some(reason) = health.reason() {
                entry["reason"] = reason.into();
            }
            (name.clone(), entry)
        })
        .collect();
    let store_state = match store {
        Ok(()) => serde_json::json!({"state": "up"}),
        Err(e) => serde_json::json!({"state": "down", "reason": e.to_string()}),
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(serde_json::json!({"ready": ready, "store": store_state, "adapters": adapters})),
    )
}
