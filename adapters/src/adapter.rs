//! The [`Adapter`] trait every protocol implements. The data it exchanges
//! with the hub (requests, replies, failure classes, late results) is the
//! domain's adapter contract, re-exported here (`raccordo_domain::adapter`).

use async_trait::async_trait;
pub use raccordo_domain::adapter::*;
use raccordo_domain::model::Operation;
use std::sync::Arc;

/// One adapter instance: a configured connection to one vendor system.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// The adapter kind (`rest`, `soap`, …), for logs and status.
    fn kind(&self) -> &'static str;

    /// Whether this instance can forward `operation` (every adapter
    /// supports `submit`; `withdraw` needs a configured vendor operation).
    fn supports(&self, operation: Operation) -> bool;

    /// Performs one delivery attempt. The hub retries according to the
    /// returned [`FailureClass`]; the adapter never retries on its own.
    async fn deliver(&self, request: DeliveryRequest) -> Result<VendorReply, DeliveryError>;

    /// Starts the inbound side (callbacks, consumers, watchers), if any.
    /// Results arrive later through `sink`.
    async fn start_inbound(&self, _sink: Arc<dyn ResultSink>) -> Result<(), AdapterError> {
        Ok(())
    }

    /// Polls a deferred result announced by [`VendorReply::follow_up`].
    /// Errors are classified like deliveries: transient ones are polled
    /// again later (within the wait), others end the delivery.
    async fn poll(&self, request: PollRequest) -> Result<PollOutcome, DeliveryError> {
        Err(DeliveryError::permanent(format!(
            "the {} adapter cannot poll for results (operation {})",
            self.kind(),
            request.operation_id
        )))
    }

    /// The request this instance would send for `request`, as text
    /// (method, URL, headers with secrets redacted, body), without sending
    /// it. `None` when the adapter cannot show it.
    fn render(&self, _request: &DeliveryRequest) -> Option<Result<String, DeliveryError>> {
        None
    }

    /// HTTP routes this instance serves on the hub's HTTP listener (vendor
    /// callbacks, a published WSDL), mounted under `/callbacks/{instance}`.
    /// Handlers apply results through `sink` and answer the vendor only
    /// after it returned.
    fn http_routes(&self, _sink: Arc<dyn ResultSink>) -> Option<axum::Router> {
        None
    }

    /// The instance's state right now, for `/readyz`, `raccordo status` and
    /// metrics. Cheap: called on every probe.
    fn health(&self) -> AdapterHealth {
        AdapterHealth::Up
    }

    /// How many hub instances send to this vendor now (alive in the
    /// cluster, this one included; 1 for a hub alone). Limits set for the
    /// vendor as a whole (a request rate) are divided by it. Told at every
    /// heartbeat of the hub.
    fn share(&self, _instances: u32) {}
}
