//! Durable state: practices, documents, events and the delivery outbox.
//!
//! [`Store`] is what the rest of the hub calls; [`sqlite::SqliteStore`] is the
//! embedded default, [`postgres::PgStore`] the database several hub
//! instances share. Every operation that reads or changes a practice is
//! scoped by tenant, and every change is one transaction that also appends
//! the practice's events, so the event log and the state never disagree.
//! A PostgreSQL implementation (several hub instances) fits the same trait:
//! claimed work is held by a [`Lease`] of one hub instance, renewed while
//! the attempt runs, and due again when the lease runs out.

mod audit_record;
#[cfg(test)]
mod contract;
mod early;
mod outcome_data;
pub mod postgres;
mod schema;
pub mod sqlite;

pub use schema::Migration;

use crate::domain::practice::{Event, NewPractice, Practice};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use raccordo_adapters::adapter::{Anomaly, AnomalyClass, InboundResult};
use raccordo_adapters::model::{AdminStatus, Document, Operation};
use raccordo_adapters::{DeliveryError, VendorReply};
pub use raccordo_domain::audit::state::StateDifference;
pub use raccordo_domain::job::{AttemptResult, ClaimedJob, JobState};
pub use raccordo_domain::plan::Withdrawal;

/// Store failures, by class: callers answer each class differently (a
/// conflict is the caller's, `Unavailable` is worth retrying, `Full` and
/// `Corrupt` need an operator, `Internal` is a defect).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No such practice, delivery or record (in the caller's tenant).
    #[error("not found")]
    NotFound,
    /// The request conflicts with the practice's state (e.g. already concluded).
    #[error("{0}")]
    Conflict(String),
    /// The store cannot answer now (busy, locked, its queue full, its
    /// connection lost): the same request can succeed later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The disk or the database's quota is full: retrying does not help
    /// until an operator frees space.
    #[error("store full: {0}")]
    Full(String),
    /// Stored data fails its own checks, or the database file is damaged.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Anything else: a statement that should not fail did (a defect).
    #[error("store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Whether the same operation may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// The same error, its message prefixed with what was being done.
    pub fn context(self, doing: &str) -> Self {
        match self {
            StoreError::NotFound => StoreError::NotFound,
            StoreError::Conflict(m) => StoreError::Conflict(format!("{doing}: {m}")),
            StoreError::Unavailable(m) => StoreError::Unavailable(format!("{doing}: {m}")),
            StoreError::Full(m) => StoreError::Full(format!("{doing}: {m}")),
            StoreError::Corrupt(m) => StoreError::Corrupt(format!("{doing}: {m}")),
            StoreError::Internal(m) => StoreError::Internal(format!("{doing}: {m}")),
        }
    }
}

/// The message of the [`StoreError::Unavailable`] a write gets when the
/// writer's queue is full (`store.write_queue`).
pub const WRITE_QUEUE_FULL: &str = "the store's write queue is full";

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        let message = e.to_string();
        match e.sqlite_error_code() {
            Some(C::DatabaseBusy | C::DatabaseLocked | C::CannotOpen | C::SystemIoFailure) => {
                StoreError::Unavailable(message)
            }
            Some(C::DiskFull) => StoreError::Full(message),
            Some(C::DatabaseCorrupt | C::NotADatabase) => StoreError::Corrupt(message),
            _ => StoreError::Internal(message),
        }
    }
}

/// Result of a submission.
#[derive(Debug)]
pub enum InsertOutcome {
    /// Stored now (its first events are published on commit).
    Created,
    /// The idempotency key was used before, for the practice `id`;
    /// `same_content` tells whether the content matches.
    Existing { id: String, same_content: bool },
}

/// Filters of `ListPractices`.
#[derive(Debug, Clone, Default)]
pub struct PracticeFilter {
    pub tenant_id: String,
    pub applicant_id: Option<String>,
    pub service_code: Option<String>,
    pub status: Option<AdminStatus>,
    pub submitted_from: Option<DateTime<Utc>>,
    pub submitted_to: Option<DateTime<Utc>>,
}

/// Filters of `WatchPractices`.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub tenant_id: String,
    pub applicant_id: Option<String>,
    pub service_code: Option<String>,
}

impl EventFilter {
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &Event) -> bool {
        event.tenant_id == self.tenant_id
            && self
                .applicant_id
                .as_ref()
                .is_none_or(|a| *a == event.applicant_id)
            && self
                .service_code
                .as_ref()
                .is_none_or(|s| *s == event.service_code)
    }
}

/// A claim on work in flight: who holds it, and for how long without
/// renewal. A hub instance renews the leases of the attempts it is running;
/// when a lease runs out (its owner stopped, panicked or lost its database)
/// [`Store::expire_leases`] makes the work due again.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The hub instance (a fresh id per process).
    pub owner: String,
    /// How long a claim holds without renewal.
    pub duration: std::time::Duration,
}

impl Lease {
    /// When a lease taken or renewed at `now` runs out.
    pub fn until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.duration).unwrap_or(chrono::Duration::hours(1))
    }
}

/// What an expiry sweep found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiredLeases {
    /// Deliveries due again (`OUTCOME_UNKNOWN`, same operation id).
    pub due_again: usize,
    /// Deliveries on their last attempt, dead-lettered (`OUTCOME_UNKNOWN`).
    pub dead_lettered: usize,
    /// Polls due again (the vendor had accepted: nothing is re-sent).
    pub polls: usize,
    /// Anomalies recorded applying the early results of the attempts that
    /// ended (see [`InboundVerdict::Pending`]).
    pub anomalies: Vec<RecordedAnomaly>,
}

/// What the store did with a result that arrived after its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundVerdict {
    /// Applied now.
    Applied,
    /// Its receipt was recorded earlier (applied, or waiting): nothing changed.
    Duplicate,
    /// The delivery it answers is in flight (the vendor answered before the
    /// hub recorded its acknowledgement): stored, and applied in the
    /// transaction that records the end of that attempt, after it.
    Pending,
    /// Recorded as an `ANOMALY` event on the practice and not applied; with
    /// `first` false, a repeat (same receipt) of a result recorded so
    /// earlier, which records nothing again.
    Anomaly { anomaly: Anomaly, first: bool },
}

/// An anomaly recorded on a practice from a result of `adapter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedAnomaly {
    pub adapter: String,
    pub class: AnomalyClass,
}

/// What recording the end of an attempt did.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The practice as recorded, when asked for (attachment metadata only).
    pub practice: Option<Practice>,
    /// Early results of the attempt applied after it, in arrival order.
    pub early_results: usize,
    /// Anomalies recorded applying them.
    pub anomalies: Vec<RecordedAnomaly>,
}

impl ExpiredLeases {
    /// Nothing expired.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What one claim took: polls and deliveries.
#[derive(Debug, Default)]
pub struct ClaimedWork {
    pub polls: Vec<ClaimedPoll>,
    pub jobs: Vec<ClaimedJob>,
    /// The adapter's work in flight in the whole cluster is at its
    /// `max_in_flight`: nothing more may be claimed until some ends (on
    /// any instance), whatever is due.
    pub saturated: bool,
}

/// A deferred result due for a poll (ModI `NONBLOCK_PULL_*`).
#[derive(Debug, Clone)]
pub struct ClaimedPoll {
    /// The delivery; `attempt` is the attempt that was accepted.
    pub job: ClaimedJob,
    /// What the adapter gave to poll with (a status URL).
    pub token: String,
    /// Polls done so far.
    pub polls: u32,
    /// After this the delivery is `OUTCOME_UNKNOWN`.
    pub deadline: DateTime<Utc>,
}

/// A dead-lettered delivery.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub operation_id: String,
    pub practice_id: String,
    pub tenant_id: String,
    pub service_code: String,
    pub adapter: String,
    pub operation: Operation,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub failure_class: Option<String>,
    pub dead_lettered_at: DateTime<Utc>,
}

/// Checks and types a result's outcome data for its practice's service:
/// `(service_code, data)` → the data typed by the service's declaration,
/// or why it is refused, naming the field (the hub's catalogue).
pub type OutcomeCheck = std::sync::Arc<
    dyn Fn(
            &str,
            &serde_json::Map<String, serde_json::Value>,
        ) -> Result<serde_json::Map<String, serde_json::Value>, String>
        + Send
        + Sync,
>;

/// Durable state of the hub.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new practice, its first events and its delivery job in one
    /// transaction, unless the idempotency key was used before. With
    /// `read_back`, a practice stored now is also returned as stored
    /// (attachment metadata only), read in the same transaction: what a
    /// deferred submission is acknowledged with.
    async fn insert_practice(
        &self,
        practice: NewPractice,
        read_back: bool,
    ) -> Result<(InsertOutcome, Option<Practice>), StoreError>;

    /// Like [`insert_practice`](Self::insert_practice), with the first
    /// delivery claimed under `lease` in the same transaction (attempt 1, in
    /// flight) and returned, for a caller that delivers it at once. No job
    /// is returned for an idempotency key seen before, nor when the
    /// practice's adapter already has `max_in_flight` pieces of work in
    /// flight under live leases, whoever holds them (see
    /// [`Store::claim_work`]): the practice is then stored with its job due,
    /// exactly as [`insert_practice`](Self::insert_practice) stores it, for
    /// a worker to deliver.
    async fn insert_practice_claimed(
        &self,
        practice: NewPractice,
        lease: &Lease,
        max_in_flight: u32,
    ) -> Result<(InsertOutcome, Option<ClaimedJob>), StoreError>;

    /// One practice of `tenant_id`; document bytes only if `with_content`.
    async fn get_practice(
        &self,
        tenant_id: &str,
        id: &str,
        with_content: bool,
    ) -> Result<Practice, StoreError>;

    /// Newest first, `limit` items after the practice id `after` (exclusive).
    async fn list_practices(
        &self,
        filter: &PracticeFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Practice>, StoreError>;

    /// Events of a practice with sequence ≥ `from_sequence`.
    async fn practice_events(
        &self,
        tenant_id: &str,
        practice_id: &str,
        from_sequence: i64,
    ) -> Result<Vec<Event>, StoreError>;

    /// Events matching `filter` with cursor > `after_cursor`, oldest first.
    async fn events_after(
        &self,
        filter: &EventFilter,
        after_cursor: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>;

    /// The highest event cursor so far.
    async fn last_cursor(&self) -> Result<i64, StoreError>;

    /// Claims up to `limit` pieces of work of `adapter` in one transaction:
    /// deferred results whose poll is due first (their vendors already
    /// accepted the work; a restart makes them due again), then due jobs,
    /// marked in flight (delivery `SENT`), all under `lease` until
    /// `now + lease.duration`. A [`VendorReply::follow_up`] recorded by
    /// [`Store::finish_attempt`] keeps a job for polling instead of
    /// finishing it.
    ///
    /// `max_in_flight` is the adapter's limit for the whole cluster: the
    /// work of `adapter` in flight under a lease that has not run out by
    /// `now`, whichever instance holds it, counts against it, and no more
    /// than `max_in_flight` minus that is claimed. Claims of one adapter
    /// (and claimed insertions) are serialized, so two instances never
    /// both take the same free slots.
    async fn claim_work(
        &self,
        adapter: &str,
        lease: &Lease,
        now: DateTime<Utc>,
        limit: u32,
        max_in_flight: u32,
    ) -> Result<ClaimedWork, StoreError>;

    /// Extends to `until`, in one statement, the leases `owner` still holds
    /// on `operation_ids` (deliveries and polls in flight); returns those it
    /// still held. One missing from the answer was lost: its lease ran out
    /// (a lease past its expiry is lost even before a sweep ends it), or the
    /// work finished, or another instance holds it now.
    async fn renew_leases(
        &self,
        owner: &str,
        operation_ids: &[String],
        until: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError>;

    /// Ends every lease that ran out by `now`, in one transaction: a
    /// delivery in flight becomes due at once with the same operation id,
    /// its delivery `OUTCOME_UNKNOWN` (the vendor may have received it), or,
    /// on its last attempt, dead-lettered; a poll in flight is simply due
    /// again. Idempotent: every instance may sweep.
    async fn expire_leases(&self, now: DateTime<Utc>) -> Result<ExpiredLeases, StoreError>;

    /// Takes or keeps the singleton `name` (work that must run on one
    /// instance of the cluster at a time) for `owner` until `until`: taken
    /// if free or if its holder's lease ran out by `now`, renewed if
    /// `owner` holds it. Returns whether `owner` holds it now. Renewing
    /// with `until` ≤ `now` releases it (another instance may take it at
    /// once).
    async fn hold_singleton(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Records that hub instance `owner` is alive until `until` (a
    /// heartbeat) and returns how many instances are alive at `now`, this
    /// one included: limits shared by the cluster (an adapter's rate) are
    /// divided by it. `until` ≤ `now` says goodbye.
    async fn heartbeat(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<u32, StoreError>;

    /// When the next job of `adapter` becomes due, if any is waiting.
    async fn next_due_at(&self, adapter: &str) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Practice content and attachments (with bytes) of a claimed job.
    async fn delivery_payload(
        &self,
        job: &ClaimedJob,
    ) -> Result<(Practice, Vec<Document>), StoreError>;

    /// Records how an attempt ended: job, delivery status, administrative
    /// status, outcome, documents, references and events, atomically.
    ///
    /// An attempt whose lease was lost (it ran out, and the job may be in
    /// flight again elsewhere) still reports what the vendor said about
    /// this operation id: a conclusive answer (delivered without a
    /// follow-up, or rejected) is recorded and finishes the job unless it
    /// is finished already; a failure or an acceptance for polling changes
    /// nothing, since whoever holds the job now decides what comes next.
    ///
    /// Results that arrived for this operation while the attempt was in
    /// flight ([`InboundVerdict::Pending`]) are applied in the same
    /// transaction, after the attempt's own change, in arrival order. The
    /// sweep of [`Store::expire_leases`] does the same for the attempts
    /// whose lease ran out.
    ///
    /// With `read_back`, also returns the practice as recorded (attachment
    /// metadata only), read in the same transaction: what a synchronous
    /// submission answers with.
    async fn finish_attempt(
        &self,
        job: &ClaimedJob,
        result: AttemptResult,
        read_back: bool,
    ) -> Result<Recorded, StoreError>;

    /// After a poll that found the result not ready: applies the vendor's
    /// intermediate report (if any) and schedules the next poll at `next`.
    /// (A finished poll is recorded with [`Store::finish_attempt`].)
    async fn reschedule_poll(
        &self,
        poll: &ClaimedPoll,
        progress: Option<VendorReply>,
        token: Option<String>,
        next: DateTime<Utc>,
        error: Option<DeliveryError>,
    ) -> Result<(), StoreError>;

    /// Applies a result that arrived after the delivery, in one
    /// transaction, judged by the domain (`plan::plan_result`): applied
    /// whole, or recorded as an `ANOMALY` event and nothing else. A result
    /// whose receipt was seen before changes nothing and is answered as the
    /// first was ([`InboundVerdict::Duplicate`], or the anomaly again). A
    /// result for a delivery in flight is stored and applied when its
    /// attempt ends ([`InboundVerdict::Pending`]).
    ///
    /// Its outcome data is taken as it is: the hub applies results with
    /// [`apply_inbound_checked`](Self::apply_inbound_checked).
    async fn apply_inbound(&self, result: &InboundResult) -> Result<InboundVerdict, StoreError> {
        self.apply_inbound_checked(result, None).await
    }

    /// [`apply_inbound`](Self::apply_inbound), with the result's outcome
    /// data (when it carries some) first checked and typed by `check` for
    /// the service of the practice it correlates to, before anything is
    /// stored: data the check refuses refuses the result
    /// ([`StoreError::Conflict`] with the check's reason), even one that
    /// would wait for its attempt.
    async fn apply_inbound_checked(
        &self,
        result: &InboundResult,
        check: Option<OutcomeCheck>,
    ) -> Result<InboundVerdict, StoreError>;

    /// Withdraws a practice; returns the adapter of the new job, if any.
    async fn withdraw(&self, withdrawal: Withdrawal) -> Result<Option<String>, StoreError>;

    /// Dead-lettered deliveries, newest first.
    async fn dead_letters(
        &self,
        tenant_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError>;

    /// Puts a dead-lettered job back in the queue (same operation id).
    async fn replay(&self, operation_id: &str, actor: &str) -> Result<DeadLetter, StoreError>;

    /// Whether the store answers (for readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Appends a record to the audit trail that is not a practice event
    /// (a refused call). Practice events are audited with their change.
    async fn record_audit(&self, entry: AuditEntry) -> Result<(), StoreError>;

    /// Counts for operators: the outbox per adapter instance, practices by
    /// status, practices past their legal deadline, the database size.
    async fn ops_snapshot(&self, now: DateTime<Utc>) -> Result<OpsSnapshot, StoreError>;
}

/// What operators watch, read in one go (metrics, `raccordo status`).
#[derive(Debug, Clone, Default)]
pub struct OpsSnapshot {
    /// One entry per adapter instance that has jobs.
    pub adapters: Vec<AdapterBacklog>,
    /// Practices by tenant, service and status.
    pub practices: Vec<PracticeCount>,
    /// Open practices past their legal deadline, by tenant and service.
    pub past_deadline: Vec<PracticeCount>,
    /// Database bytes on disk, write-ahead log included.
    pub store_bytes: i64,
    /// `ANOMALY` events on stored practices, by the actor that caused them
    /// (an adapter instance's name for a vendor's report).
    pub anomalies: Vec<AnomalyCount>,
}

/// The `ANOMALY` events one actor caused on stored practices.
#[derive(Debug, Clone, Default)]
pub struct AnomalyCount {
    pub actor: String,
    pub count: i64,
    pub last_at: Option<DateTime<Utc>>,
}

/// The outbox of one adapter instance.
#[derive(Debug, Clone, Default)]
pub struct AdapterBacklog {
    pub adapter: String,
    /// Due now, not running.
    pub due: i64,
    /// Waiting for a later retry.
    pub scheduled: i64,
    /// Running now.
    pub in_flight: i64,
    /// Dead-lettered.
    pub dead: i64,
    /// How long the oldest due job has been due.
    pub oldest_due_age: Option<std::time::Duration>,
}

/// A count of practices (status empty where not grouped by it).
#[derive(Debug, Clone, Default)]
pub struct PracticeCount {
    pub tenant: String,
    pub service: String,
    pub status: String,
    pub count: i64,
}

/// A record for the audit trail.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// `None` for a call that named no tenant (its chain is `-`).
    pub tenant_id: Option<String>,
    /// The client (and operator) who acted.
    pub actor: String,
    /// What happened (`call_denied`, or an event kind).
    pub action: String,
    pub practice_id: Option<String>,
    /// Anything else worth keeping, without secrets.
    pub detail: serde_json::Value,
}

/// One stored audit record, as exported.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditRecord {
    pub tenant_id: String,
    pub seq: i64,
    pub recorded_at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub practice_id: Option<String>,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Where an audit chain stops verifying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditBreak {
    pub tenant_id: String,
    /// The first record that does not verify.
    pub seq: i64,
    pub reason: String,
}

/// What `raccordo audit verify` found: the chains' links, and each
/// practice's stored state against what its records say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Records whose links were checked.
    pub records: u64,
    /// The first broken link of each broken chain.
    pub breaks: Vec<AuditBreak>,
    /// Practices whose row was compared with their records.
    pub practices: u64,
    /// Practices not compared: in a broken chain, stored before the trail
    /// covered their events, or (PostgreSQL) with records not linked yet.
    pub not_compared: u64,
    /// Every stored field that differs from what its practice's records
    /// say, and every missing row that no purge explains.
    pub differences: Vec<StateDifference>,
}

impl AuditReport {
    /// Whether every chain verified and every practice is as recorded.
    pub fn is_intact(&self) -> bool {
        self.breaks.is_empty() && self.differences.is_empty()
    }
}
