//! The hub's side of adapters' inbound channels (callbacks, reply queues,
//! result files): correlates a result to its practice and applies it in one
//! transaction before the adapter acknowledges the vendor.

use crate::metrics::OutcomeLabels;
use crate::practices::PracticeService;
use crate::store::{InboundVerdict, RecordedAnomaly, StoreError};
use async_trait::async_trait;
use raccordo_adapters::adapter::{InboundError, InboundOutcome};
use raccordo_adapters::{InboundResult, ResultSink};
use std::sync::Arc;

/// Applies inbound results through the practice service's store.
#[derive(Debug)]
pub struct HubSink {
    service: Arc<PracticeService>,
}

impl HubSink {
    /// A sink over `service`.
    pub fn new(service: Arc<PracticeService>) -> Self {
        Self { service }
    }
}

#[async_trait]
impl ResultSink for HubSink {
    async fn apply(&self, result: InboundResult) -> Result<InboundOutcome, InboundError> {
        let applied = self.apply_result(&result).await;
        let outcome = match &applied {
            Ok(InboundOutcome::Applied) => "applied",
            Ok(InboundOutcome::Duplicate) => "duplicate",
            Ok(InboundOutcome::Pending) => "pending",
            Err(InboundError::Anomaly(_)) => "anomaly",
            Err(InboundError::Uncorrelated(_)) => "uncorrelated",
            Err(InboundError::Refused(_)) => "refused",
            Err(InboundError::Unavailable(_)) => "unavailable",
        };
        // The instance name is the adapter's own, from the configuration.
        if self.service.adapters().contains_key(&result.adapter) {
            self.service
                .metrics()
                .inbound_results
                .get_or_create(&OutcomeLabels {
                    adapter: result.adapter.clone(),
                    outcome: outcome.to_string(),
                })
                .inc();
        }
        applied
    }

    async fn holds(&self, name: &str) -> bool {
        let service = &self.service;
        service
            .cluster()
            .holds(service.store().as_ref(), name)
            .await
    }
}

impl HubSink {
    /// Applies `result`; the store publishes its events once committed. An
    /// anomaly recorded now is counted and logged (class only: its reason
    /// may quote the vendor's data); a repeat of one is answered the same
    /// way without being counted again.
    async fn apply_result(&self, result: &InboundResult) -> Result<InboundOutcome, InboundError> {
        let verdict = self
            .service
            .store()
            .apply_inbound_checked(result, Some(self.service.outcome_check()))
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    InboundError::Uncorrelated(format!("{:?}", result.correlation))
                }
                StoreError::Conflict(m) => InboundError::Refused(m),
                other => InboundError::Unavailable(other.to_string()),
            })?;
        match verdict {
            InboundVerdict::Applied => Ok(InboundOutcome::Applied),
            InboundVerdict::Duplicate => Ok(InboundOutcome::Duplicate),
            InboundVerdict::Pending => Ok(InboundOutcome::Pending),
            InboundVerdict::Anomaly { anomaly, first } => {
                if first && self.service.adapters().contains_key(&result.adapter) {
                    self.service.metrics().count_anomalies(&[RecordedAnomaly {
                        adapter: result.adapter.clone(),
                        class: anomaly.class,
                    }]);
                }
                tracing::warn!(adapter = %result.adapter, class = %anomaly.class, repeated = !first,
                    "a vendor's result was recorded as an anomaly and not applied");
                Err(InboundError::Anomaly(anomaly))
            }
        }
    }
}
