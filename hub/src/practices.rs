//! The practice service: the domain face of the Practice API.
//!
//! It validates submissions, stores them with their delivery job in one
//! transaction, wakes the delivery workers, waits for the vendor when the
//! route is synchronous, and serves reads and live event streams. The gRPC
//! layer and the CLI are thin translators over it.

use crate::adapters::AdapterInstance;
use crate::bus::EventBus;
use crate::cluster::Cluster;
use crate::config::{AttachmentMode, Config, Mode, ServiceConfig};
use crate::delivery::{Leases, PreparedMessages};
use crate::domain::practice::{
    Event, EventDraft, EventKind, EventSource, NewPractice, Practice, PracticeContent,
};
use crate::domain::status::DeliveryStatus;
use crate::domain::validate::{self, AttachmentInput, Violation, Violations};
use crate::metrics::{Metrics, SubmissionLabels};
use crate::store::{
    DeadLetter, EventFilter, InsertOutcome, PracticeFilter, Store, StoreError, WRITE_QUEUE_FULL,
    Withdrawal,
};
use crate::trace;
use chrono::{SubsecRound, Utc};
use raccordo_adapters::model::{
    AdminStatus, Applicant, Document, DocumentMeta, Operation, Submitter,
};
use raccordo_adapters::{AdapterHealth, NormalizedMessage};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, broadcast, mpsc, watch};
use tracing::Instrument;

/// Domain errors, mapped to gRPC codes in one place (`grpc::error`).
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("invalid request: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Violation>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    /// The hub is too busy to take the call now; worth retrying shortly.
    #[error("{0}")]
    Busy(String),
    /// Stored data that fails its integrity check.
    #[error("{0}")]
    DataLoss(String),
}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => HubError::NotFound("not found".into()),
            StoreError::Conflict(m) => HubError::FailedPrecondition(m),
            // Stored data that fails its own checks: retrying cannot help,
            // and the operator must know.
            StoreError::Corrupt(m) => {
                tracing::error!(error = %m, "stored data failed its integrity check");
                HubError::DataLoss(m)
            }
            // Nothing is stored until an operator frees space: said loudly
            // in the log; the caller is told the hub cannot store now.
            StoreError::Full(m) => {
                tracing::error!(error = %m, "the practice store is full: free disk space");
                HubError::Unavailable(
                    "the practice store cannot accept changes now; retry later".into(),
                )
            }
            // Transient: the caller is told to come back shortly. A full
            // write queue is the hub protecting itself, not a fault.
            StoreError::Unavailable(m) if m.ends_with(WRITE_QUEUE_FULL) => {
                tracing::debug!("write refused: the store's write queue is full");
                HubError::Busy(WRITE_QUEUE_FULL.into())
            }
            StoreError::Unavailable(m) => {
                unavailable_logged(&m);
                HubError::Busy("the practice store is temporarily unavailable; retry".into())
            }
            // Details go to the log; callers get a retryable, generic answer.
            other => {
                tracing::error!(error = %other, "store failure");
                HubError::Unavailable("the practice store is temporarily unavailable; retry".into())
            }
        }
    }
}

/// Logs a call that failed because the store is unavailable, at most once a
/// second with the number of such calls not logged since: while a database
/// is away every call fails the same way, and a line each would flood the
/// log at the API's rate.
fn unavailable_logged(error: &str) {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
    static LAST_MS: AtomicI64 = AtomicI64::new(i64::MIN);
    static NOT_LOGGED: AtomicU64 = AtomicU64::new(0);
    let now = Utc::now().timestamp_millis();
    let last = LAST_MS.load(Relaxed);
    if now.saturating_sub(last) >= 1000
        && LAST_MS
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_ok()
    {
        let not_logged = NOT_LOGGED.swap(0, Relaxed);
        tracing::warn!(%error, calls_since_last_line = not_logged, "store unavailable");
    } else {
        NOT_LOGGED.fetch_add(1, Relaxed);
    }
}

/// `new` and the message of its first delivery, whose attachments are
/// base64-encoded off the async workers when they are large.
async fn message_of(new: NewPractice, mode: AttachmentMode) -> (NewPractice, NormalizedMessage) {
    let bytes = match mode {
        AttachmentMode::Inline => new.attachments.iter().map(|a| a.content.len()).sum(),
        AttachmentMode::Reference => 0,
    };
    crate::offload::cpu(bytes, move || {
        let message = crate::delivery::submission_message(&new, mode);
        (new, message)
    })
    .await
}

/// A submission as received, before validation.
#[derive(Debug, Clone)]
pub struct SubmitInput {
    pub tenant_id: String,
    pub service_code: String,
    pub applicant: Option<Applicant>,
    pub submitter: Option<Submitter>,
    pub channel: raccordo_adapters::model::ChannelInfo,
    pub data: serde_json::Map<String, serde_json::Value>,
    pub attachments: Vec<AttachmentInput>,
    pub idempotency_key: String,
}

/// The answer to a submission.
#[derive(Debug)]
pub struct Submitted {
    pub practice: Practice,
    /// An earlier submission with the same key was returned.
    pub duplicate: bool,
}

/// A service as offered by one tenant.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub tenant_id: String,
    pub code: String,
    pub service: ServiceConfig,
    pub mode: Mode,
    pub withdrawal_forwarded: bool,
}

/// Shared state of the running hub.
pub struct PracticeService {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    bus: EventBus,
    adapters: HashMap<String, AdapterInstance>,
    wakers: HashMap<String, Arc<Notify>>,
    metrics: Arc<Metrics>,
    /// First deliveries handed to the workers in memory.
    prepared: PreparedMessages,
    /// This instance's id and the leases of the attempts it runs.
    leases: Arc<Leases>,
    /// This instance's heartbeat and singletons.
    cluster: Arc<Cluster>,
    /// Set when the hub stops: live streams end so shutdown is not held up.
    closing: watch::Sender<bool>,
}

impl std::fmt::Debug for PracticeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PracticeService").finish_non_exhaustive()
    }
}

/// Items per page of `ListPractices` by default, and at most.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

impl PracticeService {
    /// Wires the service. `wakers` has one entry per adapter instance.
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        bus: EventBus,
        adapters: HashMap<String, AdapterInstance>,
        wakers: HashMap<String, Arc<Notify>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let leases = Arc::new(Leases::new(config.delivery.lease));
        let cluster = Arc::new(Cluster::new(leases.owner(), config.delivery.lease));
        Self {
            leases,
            cluster,
            config,
            store,
            bus,
            adapters,
            wakers,
            metrics,
            prepared: PreparedMessages::default(),
            closing: watch::Sender::new(false),
        }
    }

    /// Ends every live event stream with UNAVAILABLE (clients reconnect and
    /// resume from their last sequence or cursor).
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Whether the hub has begun to stop ([`Self::close_streams`]).
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// This hub instance's id and the leases of the attempts it runs.
    pub fn leases(&self) -> &Arc<Leases> {
        &self.leases
    }

    /// This instance among the hub instances sharing the store.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// First deliveries built at submission, for the workers.
    pub fn prepared(&self) -> &PreparedMessages {
        &self.prepared
    }

    /// The configuration the hub runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The check inbound results' outcome data passes (the catalogue's
    /// `outcome_data` declarations).
    pub fn outcome_check(&self) -> crate::store::OutcomeCheck {
        crate::domain::outcome::inbound_check(self.config.clone())
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The hub's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The adapter instances, by name.
    pub fn adapters(&self) -> &HashMap<String, AdapterInstance> {
        &self.adapters
    }

    /// The event bus.
    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    /// Wakes the delivery worker of `adapter`.
    pub fn wake(&self, adapter: &str) {
        if let Some(w) = self.wakers.get(adapter) {
            w.notify_one();
        }
    }

    /// Validates, stores and routes a practice; waits for the vendor when
    /// the route's mode says so.
    pub async fn submit(self: &Arc<Self>, input: SubmitInput) -> Result<Submitted, HubError> {
        // Labels only from the configuration: a caller cannot invent series.
        let route = self.config.route(&input.tenant_id, &input.service_code);
        let known_tenant = self.config.tenants.contains_key(&input.tenant_id);
        let mut labels = SubmissionLabels {
            tenant: if known_tenant {
                &input.tenant_id
            } else {
                "unknown"
            }
            .to_string(),
            service: route.map_or("unknown", |r| r.service.as_str()).to_string(),
            mode: route.map_or("unknown", |r| r.mode.as_str()).to_string(),
            result: String::new(),
        };
        let trace = trace::caller_or_new();
        let span = tracing::info_span!("submit", trace_id = trace.trace_id());
        let result = self.submit_validated(input, trace).instrument(span).await;
        labels.result = match &result {
            Ok(s) if s.duplicate => "duplicate",
            Ok(_) => "accepted",
            Err(HubError::Invalid(_)) => "invalid",
            Err(HubError::AlreadyExists(_)) => "conflict",
            Err(_) => "error",
        }
        .to_string();
        self.metrics.submissions.get_or_create(&labels).inc();
        result
    }

    async fn submit_validated(
        self: &Arc<Self>,
        mut input: SubmitInput,
        trace: trace::TraceContext,
    ) -> Result<Submitted, HubError> {
        // Each attachment hashed once (off the async workers when large):
        // validation checks the declared hashes, the documents keep them.
        let attachments = std::mem::take(&mut input.attachments);
        let bytes = attachments.iter().map(|a| a.content.len()).sum();
        let (attachments, digests) = crate::offload::cpu(bytes, move || {
            let digests: Vec<String> = attachments
                .iter()
                .map(|a| raccordo_adapters::model::sha256_hex(&a.content))
                .collect();
            (attachments, digests)
        })
        .await;
        input.attachments = attachments;
        let mut v = Violations::default();
        validate::check_tenant_and_key(&mut v, &input.tenant_id, &input.idempotency_key);
        let tenant_valid = v.0.iter().all(|x| x.field != "tenant_id");
        let route = if tenant_valid {
            if !self.config.tenants.contains_key(&input.tenant_id) {
                v.add(
                    "tenant_id",
                    format!("{} is not a tenant of this hub", input.tenant_id),
                );
                None
            } else {
                let route = self.config.route(&input.tenant_id, &input.service_code);
                if route.is_none() {
                    v.add(
                        "service_code",
                        format!(
                            "{} is not offered by tenant {}",
                            validate::quote(&input.service_code),
                            input.tenant_id
                        ),
                    );
                }
                route
            }
        } else {
            None
        };
        let service = route.and_then(|r| self.config.services.get(&r.service));
        validate::check_applicant(&mut v, input.applicant.as_ref());
        validate::check_submitter(&mut v, input.submitter.as_ref());
        if let Some(service) = service {
            validate::check_form(&mut v, &input.data, &service.fields, &self.config.limits);
        }
        validate::check_attachments(&mut v, &input.attachments, &digests, &self.config.limits);
        if input.channel.kind == raccordo_adapters::model::ChannelKind::Desk
            && input.channel.operator_id.is_empty()
        {
            v.add("channel.operator_id", "is required for DESK submissions");
        }
        let (Some(route), Some(service), Some(applicant)) =
            (route, service, input.applicant.clone())
        else {
            return Err(HubError::Invalid(v.0));
        };
        if !v.is_empty() {
            return Err(HubError::Invalid(v.0));
        }

        let mut applicant = applicant;
        normalize_applicant(&mut applicant);
        let mut submitter = input.submitter;
        if let Some(s) = submitter.as_mut() {
            s.person.fiscal_code = s.person.fiscal_code.to_ascii_uppercase();
        }
        let content = PracticeContent {
            applicant,
            submitter,
            channel: input.channel,
            data: input.data,
        };
        let attachments: Vec<Document> = input
            .attachments
            .into_iter()
            .zip(digests)
            .map(|(a, sha256)| Document {
                meta: DocumentMeta {
                    name: a.name,
                    media_type: a.media_type,
                    size_bytes: a.content.len() as u64,
                    sha256,
                },
                content: a.content,
            })
            .collect();
        let content_hash = content_hash(&input.service_code, &content, &attachments);
        let id = uuid::Uuid::now_v7().to_string();
        let new = NewPractice {
            id: id.clone(),
            tenant_id: input.tenant_id.clone(),
            service_code: input.service_code.clone(),
            idempotency_key: input.idempotency_key.clone(),
            content_hash,
            content,
            attachments,
            mode: route.mode,
            // As stored (milliseconds), so the message built now equals the
            // one a retry builds from the store.
            received_at: Utc::now().trunc_subsecs(3),
            legal_term_days: service.legal_term_days,
            adapter: route.adapter.clone(),
            max_attempts: route
                .max_attempts
                .unwrap_or(self.config.delivery.max_attempts),
            traceparent: Some(trace.header()),
        };
        // A synchronous route with a free delivery slot delivers inline:
        // the job is stored already claimed, so no worker hand-off, no claim
        // transaction and no read-back of what was just written. The slot
        // is this instance's; the store also counts the adapter's work in
        // flight on the other instances, and if the cluster is at the
        // adapter's limit it stores the job due instead, for a worker.
        let inline = (route.mode == Mode::Sync)
            .then(|| self.inline_slot(&route.adapter))
            .flatten();
        // Subscribe before the insert: no event of this practice can be missed.
        let deferred = route.mode == Mode::Deferred;
        let mut events_rx = (!deferred).then(|| self.bus.subscribe());
        let (new, mut message) = message_of(new, route.attachments).await;
        let inserted = match inline {
            Some((instance, permit)) => {
                let max_in_flight = u32::try_from(instance.max_concurrency).unwrap_or(u32::MAX);
                match self
                    .store
                    .insert_practice_claimed(new, self.leases.lease(), max_in_flight)
                    .await?
                {
                    (InsertOutcome::Created, Some(job)) => {
                        drop(events_rx);
                        let id = job.practice_id.clone();
                        message.message_id = job.operation_id.clone();
                        let this = Arc::clone(self);
                        let held = self.leases.hold(&job.operation_id);
                        let (tenant, service) =
                            (input.tenant_id.clone(), input.service_code.clone());
                        let span = tracing::info_span!("delivery", practice_id = %job.practice_id,
                            operation_id = %job.operation_id, adapter = %instance.name, attempt = 1,
                            trace_id = trace.trace_id());
                        // Its own task: the attempt and its record complete
                        // even if the caller goes away or the route deadline
                        // passes.
                        let attempt = tokio::spawn(
                            async move {
                                let route = this.config.route(&tenant, &service);
                                let recorded = crate::delivery::deliver(
                                    &this, &instance, job, message, route, true,
                                )
                                .await;
                                drop((permit, held));
                                recorded
                            }
                            .instrument(span),
                        );
                        // Past the deadline (or if recording failed) the
                        // answer is the practice as stored so far.
                        if let Ok(Ok(Some(practice))) =
                            tokio::time::timeout(route.deadline, attempt).await
                        {
                            return Ok(Submitted {
                                practice,
                                duplicate: false,
                            });
                        }
                        return self.reply(&input.tenant_id, id, false).await;
                    }
                    // Stored due (the cluster is at the adapter's limit), or
                    // a key seen before: answered like a routed submission.
                    (outcome, _) => (outcome, None),
                }
            }
            // A deferred submission is answered with the practice as stored,
            // read in the insert's own transaction.
            None => self.store.insert_practice(new, deferred).await?,
        };
        let (id, duplicate) = match inserted {
            (InsertOutcome::Created, stored) => {
                self.prepared.put(message);
                self.wake(&route.adapter);
                if let Some(practice) = stored {
                    return Ok(Submitted {
                        practice,
                        duplicate: false,
                    });
                }
                // (Deferred routes have no receiver: nothing is waited for.)
                let done = match route.mode {
                    Mode::Auto => settled as fn(&Event) -> bool,
                    Mode::Sync | Mode::Deferred => first_answer,
                };
                if let Some(rx) = events_rx.as_mut() {
                    wait_for(rx, &id, route.deadline, done).await;
                }
                (id, false)
            }
            (other, _) => existing(other, &input.tenant_id, &input.idempotency_key)?,
        };
        self.reply(&input.tenant_id, id, duplicate).await
    }

    /// A free delivery slot of `adapter`, unless its vendor is known down
    /// (then the practice waits in the outbox like any other).
    fn inline_slot(&self, adapter: &str) -> Option<(AdapterInstance, OwnedSemaphorePermit)> {
        let instance = self.adapters.get(adapter)?;
        if matches!(instance.adapter.health(), AdapterHealth::Down(_)) {
            return None;
        }
        let permit = Arc::clone(&instance.slots).try_acquire_owned().ok()?;
        Some((instance.clone(), permit))
    }

    /// The answer to a submission: the practice as stored now.
    async fn reply(
        &self,
        tenant_id: &str,
        id: String,
        duplicate: bool,
    ) -> Result<Submitted, HubError> {
        let practice = self.store.get_practice(tenant_id, &id, false).await?;
        Ok(Submitted {
            practice,
            duplicate,
        })
    }

    /// One practice, within its tenant.
    pub async fn get(
        &self,
        tenant_id: &str,
        id: &str,
        with_content: bool,
    ) -> Result<Practice, HubError> {
        self.store
            .get_practice(tenant_id, id, with_content)
            .await
            .map_err(|e| not_found(e, tenant_id, id))
    }

    /// The events of a practice from `from_sequence`.
    pub async fn events(
        &self,
        tenant_id: &str,
        id: &str,
        from_sequence: i64,
    ) -> Result<Vec<Event>, HubError> {
        Ok(self
            .store
            .practice_events(tenant_id, id, from_sequence)
            .await?)
    }

    /// A page of practices, newest first; returns the next page's cursor.
    pub async fn list(
        &self,
        filter: PracticeFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<Practice>, Option<String>), HubError> {
        let limit = match page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = decode_page_token(page_token, &filter)?;
        let mut practices = self
            .store
            .list_practices(&filter, after.as_deref(), limit + 1)
            .await?;
        let next = if practices.len() > limit as usize {
            practices.truncate(limit as usize);
            practices.last().map(|p| encode_page_token(&p.id, &filter))
        } else {
            None
        };
        Ok((practices, next))
    }

    /// Subscribes a live stream to the bus and to the hub's shutdown.
    fn follower(&self) -> Follower {
        Follower {
            events: self.bus.subscribe(),
            closing: self.closing.subscribe(),
        }
    }

    /// Streams the events of one practice from `from_sequence`, then live,
    /// until a terminal status. Fails at once if the practice is unknown.
    pub async fn watch(
        self: &Arc<Self>,
        tenant_id: String,
        id: String,
        from_sequence: i64,
    ) -> Result<mpsc::Receiver<Result<Arc<Event>, HubError>>, HubError> {
        let mut follow = self.follower();
        let practice = self.get(&tenant_id, &id, false).await?;
        let (tx, out) = mpsc::channel(64);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let mut next_seq = from_sequence.max(1);
            loop {
                // Catch up from the store (at the start, and after a lag).
                let events = match this.store.practice_events(&tenant_id, &id, next_seq).await {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                for e in events {
                    next_seq = e.sequence + 1;
                    let terminal = e.is_terminal();
                    if tx.send(Ok(Arc::new(e))).await.is_err() || terminal {
                        return;
                    }
                }
                if practice.status.is_terminal() {
                    // Replayed past the terminal event: nothing more will come.
                    return;
                }
                // Then live, in cursor order. Events already sent from the
                // store come again on the bus and are skipped by sequence.
                let live = follow
                    .forward(&tx, |e| {
                        if e.practice_id != id || e.sequence < next_seq {
                            return Forward::Skip;
                        }
                        next_seq = e.sequence + 1;
                        if e.is_terminal() {
                            Forward::SendLast
                        } else {
                            Forward::Send
                        }
                    })
                    .await;
                if live == Live::Stopped {
                    return;
                }
            }
        });
        Ok(out)
    }

    /// Streams events matching `filter` after `after_cursor` (0: live only).
    pub async fn watch_many(
        self: &Arc<Self>,
        filter: EventFilter,
        after_cursor: i64,
    ) -> Result<mpsc::Receiver<Result<Arc<Event>, HubError>>, HubError> {
        let mut follow = self.follower();
        let mut cursor = if after_cursor > 0 {
            after_cursor
        } else {
            self.store.last_cursor().await?
        };
        let (tx, out) = mpsc::channel(256);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                // Catch up from the store (at the start, and after a lag).
                loop {
                    let batch = match this.store.events_after(&filter, cursor, 500).await {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = tx.send(Err(e.into())).await;
                            return;
                        }
                    };
                    let full = batch.len() == 500;
                    for e in batch {
                        cursor = e.cursor;
                        if tx.send(Ok(Arc::new(e))).await.is_err() {
                            return;
                        }
                    }
                    if !full {
                        break;
                    }
                }
                // Then live: the bus carries events in cursor order, so a
                // watcher forwards them without touching the store.
                let live = follow
                    .forward(&tx, |e| {
                        if e.cursor <= cursor {
                            return Forward::Skip;
                        }
                        cursor = e.cursor;
                        if filter.matches(e) {
                            Forward::Send
                        } else {
                            Forward::Skip
                        }
                    })
                    .await;
                if live == Live::Stopped {
                    return;
                }
            }
        });
        Ok(out)
    }

    /// Withdraws a practice; the withdrawal is forwarded when the route's
    /// adapter supports it and the vendor may already know the practice.
    pub async fn withdraw(
        &self,
        tenant_id: &str,
        id: &str,
        reason: Option<String>,
        operator_id: Option<String>,
    ) -> Result<Practice, HubError> {
        let current = self.get(tenant_id, id, false).await?;
        let route = self.config.route(tenant_id, &current.service_code);
        let forward_to = route.and_then(|r| {
            let instance = self.adapters.get(&r.adapter)?;
            instance.adapter.supports(Operation::Withdraw).then(|| {
                (
                    r.adapter.clone(),
                    r.max_attempts.unwrap_or(self.config.delivery.max_attempts),
                )
            })
        });
        let actor = match &operator_id {
            Some(op) => EventDraft::status(
                EventSource::Operator,
                op,
                current.status,
                AdminStatus::Withdrawn,
            ),
            None => EventDraft::status(
                EventSource::Applicant,
                "applicant",
                current.status,
                AdminStatus::Withdrawn,
            ),
        };
        let job_adapter = self
            .store
            .withdraw(Withdrawal {
                tenant_id: tenant_id.to_string(),
                practice_id: id.to_string(),
                reason,
                draft_actor: actor,
                forward_to,
                traceparent: Some(trace::caller_or_new().header()),
            })
            .await
            .map_err(|e| not_found(e, tenant_id, id))?;
        if let Some(adapter) = job_adapter {
            self.wake(&adapter);
        }
        self.get(tenant_id, id, false).await
    }

    /// The services `tenant_id` offers.
    pub fn catalog(&self, tenant_id: &str) -> Result<Vec<CatalogEntry>, HubError> {
        if !self.config.tenants.contains_key(tenant_id) {
            return Err(HubError::NotFound(format!(
                "tenant {tenant_id} is not served by this hub"
            )));
        }
        let mut out: Vec<CatalogEntry> = self
            .config
            .routes
            .iter()
            .filter(|r| r.tenants.iter().any(|t| t == tenant_id))
            .filter_map(|r| {
                let service = self.config.services.get(&r.service)?;
                Some(CatalogEntry {
                    tenant_id: tenant_id.to_string(),
                    code: r.service.clone(),
                    service: service.clone(),
                    mode: r.mode,
                    withdrawal_forwarded: self
                        .adapters
                        .get(&r.adapter)
                        .is_some_and(|a| a.adapter.supports(Operation::Withdraw)),
                })
            })
            .collect();
        out.sort_by(|a, b| a.code.cmp(&b.code));
        Ok(out)
    }

    /// Dead-lettered deliveries.
    pub async fn dead_letters(
        &self,
        tenant_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, HubError> {
        Ok(self
            .store
            .dead_letters(tenant_id, limit.clamp(1, 1000))
            .await?)
    }

    /// Replays a dead-lettered delivery.
    pub async fn replay(
        &self,
        operation_id: &str,
        operator_id: &str,
    ) -> Result<DeadLetter, HubError> {
        let actor = if operator_id.is_empty() {
            "operator"
        } else {
            operator_id
        };
        let dl = self
            .store
            .replay(operation_id, actor)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    HubError::NotFound(format!("no delivery with operation id {operation_id}"))
                }
                other => other.into(),
            })?;
        self.wake(&dl.adapter);
        Ok(dl)
    }
}

/// What a live stream waits on between two reads of the store.
struct Follower {
    events: broadcast::Receiver<Arc<Event>>,
    closing: watch::Receiver<bool>,
}

/// Live events are the bus's own `Arc`s: every stream shares one copy.
type EventSender = mpsc::Sender<Result<Arc<Event>, HubError>>;

/// What a live stream does with one event from the bus.
enum Forward {
    Skip,
    Send,
    /// Send, then end the stream (the practice concluded).
    SendLast,
}

/// Why forwarding stopped.
#[derive(Debug, PartialEq, Eq)]
enum Live {
    /// The stream fell behind the bus: catch up from the store, then resume.
    Lagged,
    /// The client left, the stream ended, or the hub is shutting down.
    Stopped,
}

impl Follower {
    /// Forwards bus events to `tx` as `decide` says, until a lag or a stop.
    async fn forward(
        &mut self,
        tx: &EventSender,
        mut decide: impl FnMut(&Event) -> Forward,
    ) -> Live {
        let Follower { events, closing } = self;
        // Set up once, not once per event: with a thousand streams,
        // registering these two waits again for every event showed in
        // profiles.
        let client_gone = tx.closed();
        // The guard `wait_for` returns is not `Send`: dropped at once.
        let hub_closing = async { closing.wait_for(|c| *c).await.map(|_| ()) };
        tokio::pin!(client_gone, hub_closing);
        loop {
            tokio::select! {
                // Events first: the two waits (the shutdown one shared by
                // every stream) are polled only when this stream has caught
                // up with the bus, not for every event. A client that left
                // while events flow is seen at the next send, and tokio's
                // cooperative budget makes `recv` pause at least every 128
                // events, so neither wait is held off for long.
                biased;
                msg = events.recv() => match msg {
                    Ok(e) => match decide(&e) {
                        Forward::Skip => {}
                        Forward::Send => {
                            if tx.send(Ok(e)).await.is_err() {
                                return Live::Stopped;
                            }
                        }
                        Forward::SendLast => {
                            let _ = tx.send(Ok(e)).await;
                            return Live::Stopped;
                        }
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => return Live::Lagged,
                    Err(broadcast::error::RecvError::Closed) => return Live::Stopped,
                },
                _ = &mut hub_closing => {
                    let _ = tx.send(Err(shutting_down())).await;
                    return Live::Stopped;
                }
                _ = &mut client_gone => return Live::Stopped,
            }
        }
    }
}

fn shutting_down() -> HubError {
    HubError::Unavailable(
        "the hub is shutting down: reconnect and resume from the last sequence or cursor".into(),
    )
}

fn not_found(e: StoreError, tenant_id: &str, id: &str) -> HubError {
    match e {
        // The same answer whether the id exists in another tenant or not at all.
        StoreError::NotFound => {
            HubError::NotFound(format!("practice {id} not found in tenant {tenant_id}"))
        }
        other => other.into(),
    }
}

/// Sync mode: the first answer of the vendor, good or bad.
fn first_answer(e: &Event) -> bool {
    e.is_terminal()
        || (e.kind == EventKind::DeliveryChanged
            && e.to_delivery
                .is_some_and(|d| d != DeliveryStatus::Sent && d != DeliveryStatus::Queued))
}

/// Auto mode: the delivery settled (acknowledged or dead-lettered).
fn settled(e: &Event) -> bool {
    e.is_terminal()
        || (e.kind == EventKind::DeliveryChanged
            && e.to_delivery.is_some_and(DeliveryStatus::is_settled))
}

/// The id of the earlier practice with the same idempotency key, or a
/// conflict if its content differs.
fn existing(
    outcome: InsertOutcome,
    tenant_id: &str,
    idempotency_key: &str,
) -> Result<(String, bool), HubError> {
    match outcome {
        InsertOutcome::Existing { id, same_content } if same_content => Ok((id, true)),
        InsertOutcome::Existing { id, .. } => Err(HubError::AlreadyExists(format!(
            "idempotency_key '{idempotency_key}' was already used by tenant {tenant_id} for practice {id} with different content"
        ))),
        InsertOutcome::Created => Err(HubError::Unavailable(
            "the store created a practice without its delivery".into(),
        )),
    }
}

/// Waits until an event of `practice_id` satisfies `done`, at most `deadline`.
/// After a lag the caller re-reads the store anyway, so giving up is safe.
async fn wait_for(
    rx: &mut broadcast::Receiver<Arc<Event>>,
    practice_id: &str,
    deadline: Duration,
    done: fn(&Event) -> bool,
) {
    let _ = tokio::time::timeout(deadline, async {
        loop {
            match rx.recv().await {
                Ok(e) if e.practice_id == practice_id && done(&e) => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_))
                | Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    })
    .await;
}

/// Fiscal codes are stored upper case, so the citizen folder finds them.
fn normalize_applicant(applicant: &mut Applicant) {
    use raccordo_adapters::model::Subject;
    match &mut applicant.subject {
        Subject::Person(p) => p.fiscal_code = p.fiscal_code.to_ascii_uppercase(),
        Subject::Company(c) => {
            if let Some(r) = c.representative.as_mut() {
                r.fiscal_code = r.fiscal_code.to_ascii_uppercase();
            }
        }
    }
}

/// Hash of what makes two submissions "the same": service, content and the
/// attachments' hashes (JSON maps are ordered, so the encoding is canonical).
fn content_hash(service: &str, content: &PracticeContent, attachments: &[Document]) -> String {
    let canonical = serde_json::json!({
        "service": service,
        "content": content,
        "attachments": attachments.iter().map(|a| (&a.meta.name, &a.meta.media_type, &a.meta.sha256)).collect::<Vec<_>>(),
    });
    raccordo_adapters::model::sha256_hex(canonical.to_string().as_bytes())
}

/// Page tokens carry the last id and a hash of the filter, so a token cannot
/// be replayed against another query.
fn encode_page_token(last_id: &str, filter: &PracticeFilter) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{last_id}|{}", filter_fingerprint(filter)))
}

fn decode_page_token(token: &str, filter: &PracticeFilter) -> Result<Option<String>, HubError> {
    use base64::Engine;
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        HubError::Invalid(vec![Violation {
            field: "page_token".into(),
            description: "is not a token returned by this query".into(),
        }])
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    let (id, fp) = raw.split_once('|').ok_or_else(invalid)?;
    if fp != filter_fingerprint(filter) {
        return Err(invalid());
    }
    Ok(Some(id.to_string()))
}

fn filter_fingerprint(f: &PracticeFilter) -> String {
    let s = format!(
        "{}|{:?}|{:?}|{:?}|{:?}|{:?}",
        f.tenant_id, f.applicant_id, f.service_code, f.status, f.submitted_from, f.submitted_to
    );
    raccordo_adapters::model::sha256_hex(s.as_bytes())[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_are_bound_to_their_filter() {
        let f = PracticeFilter {
            tenant_id: "016024".into(),
            ..Default::default()
        };
        let token = encode_page_token("abc", &f);
        assert_eq!(
            decode_page_token(&token, &f).unwrap().as_deref(),
            Some("abc")
        );
        let other = PracticeFilter {
            tenant_id: "015146".into(),
            ..Default::default()
        };
        assert!(matches!(
            decode_page_token(&token, &other),
            Err(HubError::Invalid(_))
        ));
        assert!(matches!(
            decode_page_token("%%%", &f),
            Err(HubError::Invalid(_))
        ));
    }
}
