//! The hub's HTTP listener: liveness and readiness for load balancers and
//! systemd, the adapter instances' state for monitoring, and the vendor
//! callback endpoints adapters serve under `/callbacks/{instance}`.

use crate::cluster::STORE_GAUGES;
use crate::practices::PracticeService;
use crate::status::{AdaptersReport, Readiness, adapters_report, readiness};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use raccordo_adapters::ResultSink;
use std::sync::Arc;

/// The HTTP routes: probes, the adapters' report, plus every adapter
/// instance's callback routes.
pub fn router(service: Arc<PracticeService>, sink: Arc<dyn ResultSink>) -> axum::Router {
    let mut router = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/adapters", get(adapters))
        .route("/metrics", get(metrics))
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

/// The Prometheus exposition. Store-derived gauges are refreshed at most
/// every few seconds; a store error leaves the previous values in place.
/// They describe the whole store: of the instances sharing it, only the
/// holder of the `store-gauges` singleton reports them.
async fn metrics(
    State(service): State<Arc<PracticeService>>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    let metrics = service.metrics();
    let store = service.store().as_ref();
    let reporter = service.cluster().holds(store, STORE_GAUGES).await;
    metrics.store_gauges_reporter.set(i64::from(reporter));
    metrics
        .cluster_instances
        .set(i64::from(service.cluster().live()));
    if !reporter {
        metrics.withhold_snapshot();
    } else if metrics.snapshot_due() {
        match store.ops_snapshot(chrono::Utc::now()).await {
            Ok(snapshot) => metrics.apply_snapshot(&snapshot),
            Err(e) => tracing::warn!(error = %e, "cannot read the store for metrics"),
        }
    }
    for (name, instance) in service.adapters() {
        metrics.set_adapter_state(
            name,
            instance.adapter.kind(),
            instance.adapter.health().state(),
        );
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

/// Ready when this instance can accept and store practices: the store
/// answers (migrations ran before the listener opened) and the hub is not
/// shutting down. Adapter instances do not count (see `/adapters`): a
/// vendor that is down delays its deliveries, it does not stop the hub
/// accepting practices, and taking the instance out of a load balancer
/// would not bring the vendor back.
async fn readyz(State(service): State<Arc<PracticeService>>) -> (StatusCode, Json<Readiness>) {
    let status = readiness(&service).await;
    let code = if status.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(status))
}

/// Every adapter instance's state and outbox. Always `200`: a report for
/// people and monitoring, not a probe (alert on `raccordo_adapter_state`).
async fn adapters(State(service): State<Arc<PracticeService>>) -> Json<AdaptersReport> {
    Json(adapters_report(&service).await)
}
