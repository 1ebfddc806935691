//! The per-adapter delivery worker.

use super::build_message;
use crate::adapters::AdapterInstance;
use crate::config::AttachmentMode;
use crate::config::RouteConfig;
use crate::domain::outcome::checked_reply;
use crate::domain::practice::Practice;
use crate::domain::retry::{RetryDecision, RetryPolicy};
use crate::metrics::AdapterLabels;
use crate::practices::PracticeService;
use crate::store::{AttemptResult, ClaimedJob};
use crate::trace::TraceContext;
use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use raccordo_adapters::model::Operation;
use raccordo_adapters::{
    AdapterHealth, DeliveryError, DeliveryRequest, FailureClass, NormalizedMessage,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

/// Running workers, for a clean shutdown.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Renews this instance's leases and sweeps expired ones.
    keeper: tokio::task::JoinHandle<()>,
    service: Arc<PracticeService>,
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
    /// flight, renewing their leases meanwhile. Attempts still running after
    /// that are left to lease expiry (at the latest at next start): due
    /// again as `OUTCOME_UNKNOWN`, same operation id. Then gives up this
    /// instance's singletons and heartbeat.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                "deliveries still in flight after {grace:?}; they are sent again when their leases run out"
            );
            self.tasks.abort_all();
        }
        self.keeper.abort();
        // The other instances take this one's singletons and its share of
        // the limits now, not after a lease.
        let service = &self.service;
        service.cluster().leave(service.store().as_ref()).await;
    }
}

/// Starts one worker per adapter instance, and the keeper of this
/// instance's leases.
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
    let keeper = super::spawn_keeper(Arc::clone(&service));
    Workers {
        stop,
        tasks,
        keeper,
        service,
    }
}

async fn run(
    service: Arc<PracticeService>,
    instance: AdapterInstance,
    waker: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::clone(&instance.slots);
    service
        .metrics()
        .delivery_concurrency_limit
        .get_or_create(&AdapterLabels {
            adapter: instance.name.clone(),
        })
        .set(instance.max_concurrency as i64);
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
        // A vendor behind an open circuit breaker is left alone: its jobs
        // wait in the outbox without spending attempts.
        let down = matches!(instance.adapter.health(), AdapterHealth::Down(_));
        let (polls, jobs, saturated) = if down {
            (Vec::new(), Vec::new(), false)
        } else {
            claim(&service, &instance, free).await
        };
        if jobs.is_empty() && polls.is_empty() {
            drop(first);
            // With the cluster at the adapter's limit, what frees a slot may
            // be another instance's attempt ending, which wakes no one here:
            // look again after the poll interval.
            let sleep = match service.store().next_due_at(&instance.name).await {
                Ok(Some(at)) if !down && !saturated => (at - Utc::now())
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
        for _ in 1..(jobs.len() + polls.len()) {
            // Synchronous submissions deliver inline with the same slots, so
            // a permit counted free may have been taken since: wait for it
            // (the work is claimed already, and the limit must hold).
            let permit = Arc::clone(&slots).acquire_owned().await;
            permits.push(permit.expect("semaphore is never closed"));
        }
        let mut permits = permits.into_iter();
        for (claimed, permit) in polls.into_iter().zip(permits.by_ref()) {
            let service = Arc::clone(&service);
            let instance = instance.clone();
            attempts.spawn(async move {
                super::poll::poll_once(&service, &instance, claimed).await;
                drop(permit);
            });
        }
        for (job, permit) in jobs.into_iter().zip(permits) {
            let service = Arc::clone(&service);
            let instance = instance.clone();
            // Every log line of the attempt (state changes included)
            // carries the practice, the operation and the caller's trace.
            let span = tracing::info_span!("delivery", practice_id = %job.practice_id,
                operation_id = %job.operation_id, adapter = %instance.name, attempt = job.attempt,
                trace_id = job.traceparent.as_deref().and_then(TraceContext::parse)
                    .as_ref().map_or("", TraceContext::trace_id));
            attempts.spawn(
                async move {
                    attempt(&service, &instance, job).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
    // Let attempts in flight finish (the caller bounds the wait).
    while attempts.join_next().await.is_some() {}
}

/// Claims due polls first (their vendors already accepted the work), then
/// due deliveries, together at most `free`, in one transaction. The store
/// also holds the adapter's `max_concurrency` for the whole cluster: with
/// other instances running its work, fewer may be claimed.
async fn claim(
    service: &PracticeService,
    instance: &AdapterInstance,
    free: u32,
) -> (Vec<crate::store::ClaimedPoll>, Vec<ClaimedJob>, bool) {
    let lease = service.leases().lease();
    let adapter = &instance.name;
    let max_in_flight = u32::try_from(instance.max_concurrency).unwrap_or(u32::MAX);
    match service
        .store()
        .claim_work(adapter, lease, Utc::now(), free, max_in_flight)
        .await
    {
        Ok(work) => (work.polls, work.jobs, work.saturated),
        // A store that is away (a database restarting) is an outage the
        // readiness checks already report, and the work waits in the outbox:
        // a warning each poll, not an error. Anything else is a defect.
        Err(e) if e.is_transient() => {
            tracing::warn!(%adapter, error = %e, "cannot claim due work now: the store is unavailable");
            (Vec::new(), Vec::new(), false)
        }
        Err(e) => {
            tracing::error!(%adapter, error = %e, "cannot claim due work");
            (Vec::new(), Vec::new(), false)
        }
    }
}

/// The retry policy of `job`.
pub(super) fn policy(service: &PracticeService, job: &ClaimedJob) -> RetryPolicy {
    let config = service.config();
    RetryPolicy {
        max_attempts: job.max_attempts,
        initial_backoff: config.delivery.initial_backoff,
        max_backoff: config.delivery.max_backoff,
    }
}

/// Records how an attempt (or a poll) ended; retried while the store is
/// transiently unavailable, since the vendor answered and that must not be
/// lost to a busy database. With
/// `read_back`, returns the practice as recorded.
pub(super) async fn record(
    service: &PracticeService,
    job: &ClaimedJob,
    result: AttemptResult,
    read_back: bool,
) -> Option<Practice> {
    let record = || async {
        service
            .store()
            .finish_attempt(job, result.clone(), read_back)
            .await
    };
    match record
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_times(5),
        )
        // Only a store that may answer later is asked again: a full disk or
        // a defect would fail the same way five times.
        .when(|e: &crate::store::StoreError| e.is_transient())
        .await
    {
        Ok(recorded) => {
            if recorded.early_results > 0 {
                tracing::info!(operation_id = %job.operation_id, adapter = %job.adapter,
                    results = recorded.early_results, anomalies = recorded.anomalies.len(),
                    "results that arrived before the attempt's end applied after it");
            }
            service.metrics().count_anomalies(&recorded.anomalies);
            recorded.practice
        }
        Err(e) => {
            tracing::error!(operation_id = %job.operation_id, error = %e,
                "cannot record the delivery result; the job is due again when its lease runs out");
            None
        }
    }
}

/// Runs one attempt of a job claimed from the outbox and records its result.
async fn attempt(service: &PracticeService, instance: &AdapterInstance, job: ClaimedJob) {
    // Renewed while this runs, however it ends (a panic included).
    let _held = service.leases().hold(&job.operation_id);
    let config = service.config();
    // A first submission's message is usually still in memory; otherwise
    // (a retry, a restart, evicted) it is built from the store.
    let prepared = (job.attempt == 1 && job.operation == Operation::Submit)
        .then(|| service.prepared().take(&job.practice_id))
        .flatten();
    let message = match prepared {
        Some(mut message) => {
            message.message_id = job.operation_id.clone();
            message
        }
        None => match service.store().delivery_payload(&job).await {
            Ok((practice, attachments)) => {
                let route = config.route(&job.tenant_id, &practice.service_code);
                let mode = route.map_or(AttachmentMode::Inline, |r| r.attachments);
                // Base64 of large attachments off the async workers.
                let bytes = attachments.iter().map(|a| a.content.len()).sum();
                let job = job.clone();
                crate::offload::cpu(bytes, move || {
                    build_message(&job, &practice, attachments, mode)
                })
                .await
            }
            Err(e) => {
                tracing::error!(operation_id = %job.operation_id, error = %e,
                    "cannot load the practice to deliver; the job is due again when its lease runs out");
                return;
            }
        },
    };
    let route = config.route(&job.tenant_id, &message.service_code);
    deliver(service, instance, job, message, route, false).await;
}

/// Delivers `message` as the attempt `job` claimed and records the result:
/// shared by the worker and by synchronous submissions delivering inline
/// (which, with `read_back`, get the practice as recorded).
pub(crate) async fn deliver(
    service: &PracticeService,
    instance: &AdapterInstance,
    job: ClaimedJob,
    message: NormalizedMessage,
    route: Option<&RouteConfig>,
    read_back: bool,
) -> Option<Practice> {
    // Each attempt is a new span of the caller's trace.
    let trace = job
        .traceparent
        .as_deref()
        .and_then(TraceContext::parse)
        .map(|t| t.child());
    let service_code = message.service_code.clone();
    let request = DeliveryRequest {
        message: Arc::new(message),
        attempt: job.attempt,
        route_vars: Arc::new(route.map(|r| r.vars.clone()).unwrap_or_default()),
        traceparent: trace.as_ref().map(TraceContext::header),
    };
    let policy = policy(service, &job);
    let metrics = service.metrics();
    let adapter_labels = AdapterLabels {
        adapter: instance.name.clone(),
    };
    let in_flight = InFlight::counted(
        metrics
            .deliveries_in_flight
            .get_or_create(&adapter_labels)
            .clone(),
    );
    let started = std::time::Instant::now();
    let outcome = instance
        .adapter
        .deliver(request)
        .await
        .and_then(|reply| checked_reply(service.config(), &service_code, reply));
    drop(in_flight);
    metrics
        .delivery_duration
        .get_or_create(&adapter_labels)
        .observe(started.elapsed().as_secs_f64());
    let result = match outcome {
        Ok(reply) => AttemptResult::Delivered(reply),
        Err(e) if e.class == FailureClass::Rejection => AttemptResult::Rejected(e),
        Err(e) => {
            let decision = policy.decide(e.class, job.attempt, e.retry_after);
            AttemptResult::Failed(e, decision)
        }
    };
    let outcome = match &result {
        AttemptResult::Delivered(_) => "delivered",
        AttemptResult::Rejected(_) => "rejection",
        AttemptResult::Failed(e, decision) => {
            match decision {
                RetryDecision::RetryAfter(_) => &metrics.retries_scheduled,
                RetryDecision::DeadLetter => &metrics.dead_lettered,
            }
            .get_or_create(&adapter_labels)
            .inc();
            e.class.as_str()
        }
    };
    metrics.attempt(&instance.name, outcome).inc();
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
    record(service, &job, result, read_back).await
}

/// One delivery counted in the in-flight gauge for as long as it lives:
/// an adapter that panics (its task unwinds) still gives its count back.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn counted(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
