//! Load shedding: a cap on API calls in progress, in one tower layer.
//!
//! Past `hub.max_calls_in_progress` a call is refused at once with
//! `UNAVAILABLE`, a `google.rpc.RetryInfo` and a `retry-after` header,
//! instead of waiting in a queue that grows latency and memory without end.
//! Watch streams live as long as their client wants and have their own
//! per-client cap (`watch.rs`); health checks and reflection must answer
//! most of all when the hub is busy. None of them count here.

use super::error::busy;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::Semaphore;
use tonic::Code;

/// Paths that never take a slot: watch streams, health, reflection.
fn exempt(path: &str) -> bool {
    path == super::watch::WATCH_PRACTICE
        || path == super::watch::WATCH_PRACTICES
        || path.starts_with("/grpc.health.v1.")
        || path.starts_with("/grpc.reflection.")
}

/// Admits at most `limit` calls in progress; refuses the others at once.
#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    slots: Arc<Semaphore>,
    limit: usize,
}

impl AdmissionLayer {
    /// A layer letting `limit` calls (at least one) run at once.
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }
}

impl<S> tower_layer::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`AdmissionLayer`] wraps.
#[derive(Debug, Clone)]
pub struct Admission<S> {
    inner: S,
    layer: AdmissionLayer,
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for Admission<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if exempt(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        match Arc::clone(&self.layer.slots).try_acquire_owned() {
            // Held until the handler answers: a unary call's reply is
            // complete by then.
            Ok(slot) => {
                let call = self.inner.call(request);
                Box::pin(async move {
                    let response = call.await;
                    drop(slot);
                    response
                })
            }
            Err(_) => {
                tracing::debug!(rpc = request.uri().path(), "call refused: the hub is busy");
                let status = busy(
                    Code::Unavailable,
                    format!(
                        "the hub has {} calls in progress (hub.max_calls_in_progress): retry later",
                        self.layer.limit
                    ),
                );
                let response = status.into_http::<RB>();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_health_and_reflection_take_no_slot() {
        for path in [
            "/raccordo.v1.PracticeService/WatchPractice",
            "/raccordo.v1.PracticeService/WatchPractices",
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(exempt(path), "{path}");
        }
        for path in [
            "/raccordo.v1.PracticeService/SubmitPractice",
            "/raccordo.v1.PracticeService/GetPractice",
            "/raccordo.v1.CatalogService/ListServices",
            "/raccordo.v1.DeliveryAdminService/GetHubStatus",
            "/unknown/Method",
        ] {
            assert!(!exempt(path), "{path}");
        }
    }
}
