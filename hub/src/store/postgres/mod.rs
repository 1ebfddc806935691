//! The PostgreSQL store: one database that several hub instances share.
//!
//! Every write is one transaction on a pooled connection: load (the
//! practice's row locked), plan (the domain's planners, as in SQLite),
//! persist. What must agree across instances is settled by the database:
//! - a practice's changes are serialized by its row lock;
//! - a duplicate submission (same tenant and idempotency key) waits for the
//!   first on the unique index and resolves to it (`Existing`);
//! - claims skip rows another instance is claiming (`SKIP LOCKED`), and
//!   the claims of one adapter take its advisory lock first, so its
//!   `max_concurrency` counts the work in flight on every instance;
//! - event cursors are taken from one counter row at the end of the
//!   transaction, so cursor order is commit order (see `tx`);
//! - each tenant's audit chain is extended under its head row's lock.
//!
//! A transaction that fails with a deadlock or a serialization failure
//! runs again from the start (the planners are pure, so a re-run plans
//! again from what it reloads). After each commit the transaction's events
//! are published on this instance's event bus, in commit order.

mod audit;
mod changes;
mod cluster;
mod follow_up;
mod leases;
mod migrations;
mod ops;
pub mod pool;
mod rows;
mod state;
#[cfg(test)]
pub(crate) mod tests;
mod tx;

pub use pool::PgOptions;

use super::{
    AttemptResult, AuditBreak, AuditEntry, ClaimedJob, ClaimedPoll, ClaimedWork, DeadLetter,
    EventFilter, ExpiredLeases, InsertOutcome, Lease, OpsSnapshot, PracticeFilter, Store,
    StoreError, Withdrawal,
};
use crate::bus::EventBus;
use crate::domain::practice::{Event, NewPractice, Practice};
use crate::metrics::StoreMetrics;
use crate::store::sqlite::rows::{DEAD_LETTER_SQL, EVENT_COLUMNS, from_ms};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use raccordo_adapters::VendorReply;
use raccordo_adapters::adapter::{InboundOutcome, InboundResult};
use raccordo_adapters::model::Document;
use rows::{Value, params};
use std::sync::Arc;
use tx::{Committed, Ended, Pending, Tx, col};

/// A write transaction.
const WRITE: &str = "BEGIN";
/// A read: all its statements see one snapshot.
const READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
/// Runs of a transaction that keeps meeting deadlocks, before giving up.
const MAX_RUNS: u32 = 4;

/// The PostgreSQL implementation of [`Store`].
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    bus: Option<EventBus>,
    metrics: Option<StoreMetrics>,
    /// Whose turn it is to link and publish events (see `tx`).
    publish: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// Runs `$body` in a transaction on `$store` (begun with `$begin`), with
/// `$tx` bound to it; commits, publishes the events, and runs the whole
/// transaction again after a deadlock or serialization failure. A macro,
/// not a function taking a closure: the body borrows the transaction
/// across awaits, which a closure's future cannot express.
macro_rules! in_tx {
    ($store:expr, $begin:expr, |$tx:ident| $body:expr) => {{
        let store: &PgStore = $store;
        let started = std::time::Instant::now();
        let mut runs = 0;
        loop {
            runs += 1;
            let client = pool::connection(&store.inner.pool).await?;
            #[allow(unused_mut)]
            let mut $tx = Tx::begin(client, $begin, Some(Arc::clone(&store.inner.publish))).await?;
            let result: Result<_, StoreError> = async { $body }.await;
            match $tx.end(result).await {
                Ended::Done(done) => break store.committed(done, started),
                Ended::Retry(e) if runs < MAX_RUNS => {
                    tracing::debug!(error = %e, runs, "transaction runs again");
                    continue;
                }
                Ended::Retry(e) => break Err(e),
            }
        }
    }};
}

// Declared after `in_tx`, which they use.
pub mod import;
mod maintenance;

impl PgStore {
    /// Connects to the database at `url`, applies migrations (one instance
    /// at a time) and returns the store; committed events are published on
    /// `bus`.
    pub async fn open(
        url: &str,
        opts: &PgOptions,
        metrics: Option<StoreMetrics>,
        bus: Option<EventBus>,
    ) -> Result<Self, StoreError> {
        let store = Self::connect(url, opts, metrics, bus).await?;
        migrations::migrate(&pool::connection(&store.inner.pool).await?).await?;
        Ok(store)
    }

    /// Connects without migrating: for commands that only read (`raccordo
    /// audit verify`).
    pub async fn connect(
        url: &str,
        opts: &PgOptions,
        metrics: Option<StoreMetrics>,
        bus: Option<EventBus>,
    ) -> Result<Self, StoreError> {
        let pool = pool::build(url, opts).map_err(|(key, reason)| {
            StoreError::Internal(format!("store.postgres.{key}: {reason}"))
        })?;
        // The first connection now: a wrong URL or a server down shows at
        // start, not at the first request.
        drop(
            pool::connection(&pool)
                .await
                .map_err(|e| e.context("cannot connect to PostgreSQL"))?,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                bus,
                metrics,
                publish: Arc::new(tokio::sync::Mutex::new(())),
            }),
        })
    }

    /// After a transaction: publishes what it committed, in commit order.
    fn committed<R>(
        &self,
        done: Result<(R, Committed), StoreError>,
        started: std::time::Instant,
    ) -> Result<R, StoreError> {
        let (value, Committed { events, turn }) = done?;
        if let Some(m) = &self.inner.metrics {
            m.transaction_duration
                .observe(started.elapsed().as_secs_f64());
            m.commit_batch.observe(1.0);
        }
        if let Some(bus) = &self.inner.bus
            && !events.is_empty()
        {
            bus.publish(events);
        }
        drop(turn);
        Ok(value)
    }

    /// Checks the audit chains (or one tenant's) in one snapshot: (records
    /// checked, first break per chain).
    pub async fn verify_audit(
        &self,
        tenant: Option<&str>,
    ) -> Result<(u64, Vec<AuditBreak>), StoreError> {
        in_tx!(self, READ, |tx| audit::verify(&tx, tenant).await)
    }

    async fn events(&self, sql: String, values: Vec<Value>) -> Result<Vec<Event>, StoreError> {
        in_tx!(self, READ, |tx| {
            tx.query(&sql, &params(&values))
                .await?
                .iter()
                .map(rows::event)
                .collect()
        })
    }
}

#[async_trait]
impl Store for PgStore {
    async fn insert_practice(
        &self,
        new: NewPractice,
        read_back: bool,
    ) -> Result<(InsertOutcome, Option<Practice>), StoreError> {
        let content =
            serde_json::to_string(&new.content).map_err(|e| StoreError::Internal(e.to_string()))?;
        in_tx!(self, WRITE, |tx| {
            let (outcome, _) = changes::insert_new(&mut tx, &new, &content, None).await?;
            let stored = if read_back && matches!(outcome, InsertOutcome::Created) {
                Some(rows::get_practice(&tx, &new.tenant_id, &new.id, false).await?)
            } else {
                None
            };
            Ok((outcome, stored))
        })
    }

    async fn insert_practice_claimed(
        &self,
        new: NewPractice,
        lease: &Lease,
        max_in_flight: u32,
    ) -> Result<(InsertOutcome, Option<ClaimedJob>), StoreError> {
        let content =
            serde_json::to_string(&new.content).map_err(|e| StoreError::Internal(e.to_string()))?;
        in_tx!(self, WRITE, |tx| changes::insert_new(
            &mut tx,
            &new,
            &content,
            Some((lease, max_in_flight))
        )
        .await)
    }

    async fn get_practice(
        &self,
        tenant_id: &str,
        id: &str,
        with_content: bool,
    ) -> Result<Practice, StoreError> {
        in_tx!(self, READ, |tx| rows::get_practice(
            &tx,
            tenant_id,
            id,
            with_content
        )
        .await)
    }

    async fn list_practices(
        &self,
        filter: &PracticeFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Practice>, StoreError> {
        let (sql, values) = rows::list_query(filter, after, limit);
        in_tx!(self, READ, |tx| {
            let mut practices = tx
                .query(&sql, &params(&values))
                .await?
                .iter()
                .map(rows::practice)
                .collect::<Result<Vec<_>, _>>()?;
            rows::attach_details(&tx, &mut practices, false).await?;
            Ok(practices)
        })
    }

    async fn practice_events(
        &self,
        tenant_id: &str,
        practice_id: &str,
        from_sequence: i64,
    ) -> Result<Vec<Event>, StoreError> {
        self.events(
            format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND practice_id = $2 AND sequence >= $3
                 ORDER BY sequence"
            ),
            vec![
                Value::Text(tenant_id.into()),
                Value::Text(practice_id.into()),
                Value::Int(from_sequence),
            ],
        )
        .await
    }

    async fn events_after(
        &self,
        filter: &EventFilter,
        after_cursor: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let mut sql =
            format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND cursor > $2");
        let mut values = vec![
            Value::Text(filter.tenant_id.clone()),
            Value::Int(after_cursor),
        ];
        if let Some(a) = &filter.applicant_id {
            values.push(Value::Text(a.to_ascii_uppercase()));
            sql.push_str(&format!(" AND applicant_id = ${}", values.len()));
        }
        if let Some(s) = &filter.service_code {
            values.push(Value::Text(s.clone()));
            sql.push_str(&format!(" AND service_code = ${}", values.len()));
        }
        values.push(Value::Int(limit as i64));
        sql.push_str(&format!(" ORDER BY cursor LIMIT ${}", values.len()));
        self.events(sql, values).await
    }

    async fn last_cursor(&self) -> Result<i64, StoreError> {
        // The counter as committed: every event up to it is visible.
        in_tx!(self, READ, |tx| col(
            &tx.query_one("SELECT last FROM event_cursor", &[]).await?,
            0
        ))
    }

    async fn claim_work(
        &self,
        adapter: &str,
        lease: &Lease,
        now: DateTime<Utc>,
        limit: u32,
        max_in_flight: u32,
    ) -> Result<ClaimedWork, StoreError> {
        in_tx!(self, WRITE, |tx| changes::claim_work(
            &mut tx,
            adapter,
            lease,
            now,
            limit,
            max_in_flight
        )
        .await)
    }

    async fn renew_leases(
        &self,
        owner: &str,
        operation_ids: &[String],
        until: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        if operation_ids.is_empty() {
            return Ok(Vec::new());
        }
        in_tx!(self, WRITE, |tx| leases::renew(
            &tx,
            owner,
            operation_ids,
            until
        )
        .await)
    }

    async fn expire_leases(&self, now: DateTime<Utc>) -> Result<ExpiredLeases, StoreError> {
        in_tx!(self, WRITE, |tx| leases::expire(&mut tx, now).await)
    }

    async fn hold_singleton(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        in_tx!(self, WRITE, |tx| cluster::hold_singleton(
            &tx, name, owner, now, until
        )
        .await)
    }

    async fn heartbeat(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        in_tx!(self, WRITE, |tx| cluster::heartbeat(&tx, owner, now, until)
            .await)
    }

    async fn next_due_at(&self, adapter: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        in_tx!(self, READ, |tx| {
            let next: Option<i64> = col(
                &tx.query_one(
                    "SELECT MIN(next_attempt_at) FROM jobs WHERE adapter = $1 AND state IN ('due', 'polling')",
                    &[&adapter],
                )
                .await?,
                0,
            )?;
            Ok(next.map(from_ms))
        })
    }

    async fn delivery_payload(
        &self,
        job: &ClaimedJob,
    ) -> Result<(Practice, Vec<Document>), StoreError> {
        let practice = self
            .get_practice(&job.tenant_id, &job.practice_id, true)
            .await?;
        let attachments = practice.attachments.clone();
        Ok((practice, attachments))
    }

    async fn finish_attempt(
        &self,
        job: &ClaimedJob,
        result: AttemptResult,
        read_back: bool,
    ) -> Result<Option<Practice>, StoreError> {
        in_tx!(self, WRITE, |tx| {
            changes::finish_attempt(&mut tx, job, &result, Utc::now()).await?;
            if read_back {
                Ok(Some(
                    rows::get_practice(&tx, &job.tenant_id, &job.practice_id, false).await?,
                ))
            } else {
                Ok(None)
            }
        })
    }

    async fn reschedule_poll(
        &self,
        poll: &ClaimedPoll,
        progress: Option<VendorReply>,
        token: Option<String>,
        next: DateTime<Utc>,
        error: Option<raccordo_adapters::DeliveryError>,
    ) -> Result<(), StoreError> {
        in_tx!(self, WRITE, |tx| {
            follow_up::reschedule(
                &mut tx,
                poll,
                progress.as_ref(),
                token.as_deref(),
                next,
                error.as_ref(),
            )
            .await
        })
    }

    async fn apply_inbound(&self, result: &InboundResult) -> Result<InboundOutcome, StoreError> {
        in_tx!(self, WRITE, |tx| changes::apply_inbound(
            &mut tx,
            result,
            Utc::now()
        )
        .await)
    }

    async fn withdraw(&self, w: Withdrawal) -> Result<Option<String>, StoreError> {
        in_tx!(self, WRITE, |tx| changes::withdraw(&mut tx, &w, Utc::now())
            .await)
    }

    async fn dead_letters(
        &self,
        tenant_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let sql = format!(
            "{DEAD_LETTER_SQL} WHERE j.state = 'dead' AND ($1::TEXT IS NULL OR j.tenant_id = $1)
             ORDER BY j.updated_at DESC LIMIT $2"
        );
        in_tx!(self, READ, |tx| {
            tx.query(&sql, &[&tenant_id, &(limit as i64)])
                .await?
                .iter()
                .map(rows::dead_letter_row)
                .collect()
        })
    }

    async fn replay(&self, operation_id: &str, actor: &str) -> Result<DeadLetter, StoreError> {
        in_tx!(self, WRITE, |tx| changes::replay(
            &mut tx,
            operation_id,
            actor,
            Utc::now()
        )
        .await)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = pool::connection(&self.inner.pool).await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(pool::from_pg)?;
        Ok(())
    }

    async fn record_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let detail = serde_json::to_string(&entry.detail)
            .map_err(|e| StoreError::Internal(format!("audit detail: {e}")))?;
        in_tx!(self, WRITE, |tx| {
            tx.pending.push(Pending::Audit {
                tenant_id: entry
                    .tenant_id
                    .clone()
                    .unwrap_or_else(|| raccordo_domain::audit::NO_TENANT.to_string()),
                recorded_at: Utc::now().timestamp_millis(),
                actor: entry.actor.clone(),
                action: entry.action.clone(),
                practice_id: entry.practice_id.clone(),
                detail: detail.clone(),
            });
            Ok(())
        })
    }

    async fn ops_snapshot(&self, now: DateTime<Utc>) -> Result<OpsSnapshot, StoreError> {
        in_tx!(self, READ, |tx| ops::snapshot(&tx, now).await)
    }
}
