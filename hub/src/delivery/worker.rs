//! The per-adapter delivery worker.

use super::build_message;
use crate::adapters::AdapterInstance;
use crate::config::AttachmentMode;
use crate::domain::retry::RetryPolicy;
use crate::practices::PracticeService;
use crate::store::{AttemptResult, ClaimedJob};
use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use raccordo_adapters::{DeliveryError, DeliveryRequest, FailureClass};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

/// Running workers, for a clean shutdown.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("count", &self.tasks.len())
            .finish()
    }
}

impl Workers {
    /// Stops claiming new jobs and waits up to `grace` for attempts in
    /// flight. Attempts still running after that are resumed at next start
    /// (as `OUTCOME_UNKNOWN`, same operation id).
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("deliveries still in flight after {grace:?}; they resume at next start");
            self.tasks.abort_all();
        }
    }
}

/// Starts one worker per adapter instance.
pub fn spawn_workers(
    service: Arc<PracticeService>,
    adapters: &HashMap<String, AdapterInstance>,
    wakers: &HashMap<String, Arc<Notify>>,
) -> Workers {
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for (name, instance) in adapters {
        let waker = wakers.get(name).cloned().unwrap_or_default();
        tasks.spawn(run(
            Arc::clone(&service),
            instance.clone(),
            waker,
            stop_rx.clone(),
        ));
    }
    Workers { stop, tasks }
}

async fn run(
    service: Arc<PracticeService>,
    instance: AdapterInstance,
    waker: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(instance.max_concurrency));
    let poll = service.config().delivery.poll_interval;
    let mut attempts = JoinSet::new();
    loop {
        // Reap finished attempts so the set does not grow.
        while attempts.try_join_next().is_some() {}
        let first = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("semaphore is never closed"),
            _ = stop.changed() => break,
        };
        let free = 1 + slots.available_permits() as u32;
        let claimed = service
            .store()
            .claim_due(&instance.name, Utc::now(), free)
            .await;
        let jobs = match claimed {
            Ok((jobs, events)) => {
                service.publish(events);
                jobs
            }
            Err(e) => {
                tracing::error!(adapter = %instance.name, error = %e, "cannot claim due deliveries");
                Vec::new()
            }
        };
        if jobs.is_empty() {
            drop(first);
            let sleep = match service.store().next_due_at(&instance.name).await {
                Ok(Some(at)) => (at - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(poll),
                _ => poll,
            };
            tokio::select! {
                _ = waker.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = stop.changed() => break,
            }
            continue;
        }
        let mut permits = vec![first];
        for _ in 1..jobs.len() {
            // Only this loop takes permits, so the ones counted are still free.
            permits.push(
                Arc::clone(&slots)
                    .try_acquire_owned()
                    .expect("counted permit"),
            );
        }
        for (job, permit) in jobs.into_iter().zip(permits) {
            let service = Arc::clone(&service);
            let instance = instance.clone();
            attempts.spawn(async move {
                attempt(&service, &instance, job).await;
                drop(permit);
            });
        }
    }
    // Let attempts in flight finish (the caller bounds the wait).
    while attempts.join_next().await.is_some() {}
}

/// Runs one attempt and records its result.
async fn attempt(service: &PracticeService, instance: &AdapterInstance, job: ClaimedJob) {
    let config = service.config();
    let (practice, attachments) = match service.store().delivery_payload(&job).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(operation_id = %job.operation_id, error = %e, "cannot load the practice to deliver");
            return;
        }
    };
    let route = config.route(&job.tenant_id, &practice.service_code);
    let mode = route.map_or(AttachmentMode::Inline, |r| r.attachments);
    let request = DeliveryRequest {
        message: Arc::new(build_message(&job, &practice, attachments, mode)),
        attempt: job.attempt,
        route_vars: Arc::new(route.map(|r| r.vars.clone()).unwrap_or_default()),
    };
    let policy = RetryPolicy {
        max_attempts: job.max_attempts,
        initial_backoff: config.delivery.initial_backoff,
        max_backoff: config.delivery.max_backoff,
    };
    let span = tracing::info_span!("delivery", practice_id = %job.practice_id, operation_id = %job.operation_id,
        adapter = %instance.name, attempt = job.attempt);
    let started = std::time::Instant::now();
    let outcome = instance.adapter.deliver(request).instrument(span).await;
    let result = match outcome {
        Ok(reply) => AttemptResult::Delivered(reply),
        Err(e) if e.class == FailureClass::Rejection => AttemptResult::Rejected(e),
        Err(e) => {
            let decision = policy.decide(e.class, job.attempt, e.retry_after);
            AttemptResult::Failed(e, decision)
        }
    };
    // The reason stays in the practice's events: vendor texts (SOAP fault
    // strings, problem details) may name the applicant, so logs carry only
    // the class and the vendor's code.
    if let AttemptResult::Failed(
        DeliveryError {
            class, vendor_code, ..
        },
        _,
    ) = &result
    {
        tracing::warn!(practice_id = %job.practice_id, operation_id = %job.operation_id, adapter = %instance.name,
            attempt = job.attempt, %class, vendor_code = vendor_code.as_deref().unwrap_or(""),
            elapsed_ms = started.elapsed().as_millis() as u64, "delivery failed");
    }
    // The vendor answered: recording it must not be lost to a busy database.
    let record = || async { service.store().finish_attempt(&job, result.clone()).await };
    match record
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_times(5),
        )
        .await
    {
        Ok(events) => service.publish(events),
        Err(e) => tracing::error!(operation_id = %job.operation_id, error = %e,
            "cannot record the delivery result; it is resumed at next start"),
    }
}
