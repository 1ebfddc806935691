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
//! - events get their cursors, and audit records their place in the
//!   tenant's chain, after the commit, from the sequencer: one run at a
//!   time across all instances, so a later commit gets a later cursor and
//!   a reader of "cursor > c" never skips an event (see `sequencer`).
//!
//! A transaction that fails with a deadlock or a serialization failure
//! runs again from the start (the planners are pure, so a re-run plans
//! again from what it reloads). A write that appended events returns once
//! they are sequenced, so the caller reads them back with their cursors.
//! Events reach this instance's event bus through the feed (see `feed`),
//! whichever instance committed them, in cursor order.

mod audit;
mod changes;
mod cluster;
mod early;
mod feed;
mod follow_up;
mod leases;
mod migrations;
mod ops;
pub mod pool;
mod rows;
mod sequencer;
mod state;
mod statistics;
#[cfg(test)]
pub(crate) mod tests;
mod tx;

pub use feed::WorkWaker;
pub use pool::PgOptions;

use super::{
    AttemptResult, AuditEntry, AuditReport, ClaimedJob, ClaimedPoll, ClaimedWork, DeadLetter,
    EventFilter, ExpiredLeases, InboundVerdict, InsertOutcome, Lease, OpsSnapshot, OutcomeCheck,
    PracticeFilter, Recorded, Store, StoreError, Withdrawal,
};
use crate::bus::EventBus;
use crate::domain::practice::{Event, NewPractice, Practice};
use crate::metrics::StoreMetrics;
use crate::store::sqlite::rows::{DEAD_LETTER_SQL, EVENT_COLUMNS, from_ms};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use raccordo_adapters::VendorReply;
use raccordo_adapters::adapter::InboundResult;
use raccordo_adapters::model::Document;
use rows::{Value, params};
use sequencer::Sequencer;
use std::sync::{Arc, OnceLock};
use tokio::sync::{Notify, mpsc};
use tx::{Ended, Pending, Tx, col};

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
    metrics: Option<StoreMetrics>,
    /// Who gives this store's writes their cursors and links.
    sequencing: Sequencing,
    /// Who wakes the delivery workers when the feed hears of new work.
    work: Arc<OnceLock<WorkWaker>>,
    /// The sequencer's and the feed's tasks, which end with the store.
    tasks: Vec<tokio::task::AbortHandle>,
}

/// How a store's writes are sequenced.
enum Sequencing {
    /// By this instance's sequencer task, which writes wait for.
    Task(Arc<Sequencer>),
    /// By a run of their own right after they commit: a command's store
    /// (`raccordo purge`), which may run while no hub does.
    Inline,
    /// Not at all: an instance that stops before sequencing (tests).
    Off,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

/// Runs `$body` in a transaction on `$store` (begun with `$begin`), with
/// `$tx` bound to it; commits, waits for its events' cursors, and runs the whole
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
            let mut $tx = Tx::new(client, $begin);
            let result: Result<_, StoreError> = async { $body }.await;
            match $tx.end(result).await {
                Ended::Done(done) => break store.committed(done, started).await,
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
    /// at a time), starts this instance's sequencer and returns the store;
    /// with a `bus`, the feed publishes every instance's events on it.
    pub async fn open(
        url: &str,
        opts: &PgOptions,
        metrics: Option<StoreMetrics>,
        bus: Option<EventBus>,
    ) -> Result<Self, StoreError> {
        Self::open_with(url, opts, metrics, bus, true).await
    }

    /// [`open`](Self::open), with or without a sequencer of its own (tests
    /// play an instance that stopped before sequencing its commits).
    async fn open_with(
        url: &str,
        opts: &PgOptions,
        metrics: Option<StoreMetrics>,
        bus: Option<EventBus>,
        sequence: bool,
    ) -> Result<Self, StoreError> {
        let pool = Self::pool(url, opts).await?;
        migrations::migrate(&pool::connection(&pool).await?).await?;
        let target = pool::target(url, opts).map_err(key_error)?;
        let sequenced = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        let sequencing = if sequence {
            let s = Sequencer::new();
            let run = Arc::clone(&s).run(pool.clone(), Arc::clone(&sequenced));
            tasks.push(tokio::spawn(run).abort_handle());
            tasks.push(tokio::spawn(statistics::run(pool.clone())).abort_handle());
            Sequencing::Task(s)
        } else {
            Sequencing::Off
        };
        let work = Arc::new(OnceLock::new());
        if let Some(bus) = bus {
            // From the log's end as it is now: what came before is the
            // store's to replay, not the bus's.
            let client = pool::connection(&pool).await?;
            let cursor: i64 = client
                .query_one("SELECT last FROM event_cursor", &[])
                .await
                .map_err(pool::from_pg)?
                .get(0);
            drop(client);
            let (notify, notices) = mpsc::unbounded_channel();
            tasks.push(tokio::spawn(feed::listen(target, notify)).abort_handle());
            let run = feed::run(
                pool.clone(),
                bus,
                cursor,
                sequenced,
                notices,
                Arc::clone(&work),
            );
            tasks.push(tokio::spawn(run).abort_handle());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                metrics,
                sequencing,
                work,
                tasks,
            }),
        })
    }

    /// Connects without migrating, following events or a sequencer task:
    /// for commands (`raccordo audit verify`, `purge`). What such a store
    /// writes it sequences itself, right after the commit.
    pub async fn connect(
        url: &str,
        opts: &PgOptions,
        metrics: Option<StoreMetrics>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            inner: Arc::new(Inner {
                pool: Self::pool(url, opts).await?,
                metrics,
                sequencing: Sequencing::Inline,
                work: Arc::new(OnceLock::new()),
                tasks: Vec::new(),
            }),
        })
    }

    async fn pool(url: &str, opts: &PgOptions) -> Result<Pool, StoreError> {
        let pool = pool::build(url, opts).map_err(key_error)?;
        // The first connection now: a wrong URL or a server down shows at
        // start, not at the first request.
        drop(
            pool::connection(&pool)
                .await
                .map_err(|e| e.context("cannot connect to PostgreSQL"))?,
        );
        Ok(pool)
    }

    /// Has `wake` called with an adapter's name when any instance queues
    /// work for it (the feed hears it), so its delivery worker here need
    /// not wait for its next poll. Set once; later calls are ignored.
    pub fn on_work_queued(&self, wake: WorkWaker) {
        let _ = self.inner.work.set(wake);
    }

    /// After a transaction: its duration, and once it appended records,
    /// the wait for their cursors and links.
    async fn committed<R>(
        &self,
        done: Result<(R, bool), StoreError>,
        started: std::time::Instant,
    ) -> Result<R, StoreError> {
        let (value, appended) = done?;
        if let Some(m) = &self.inner.metrics {
            m.transaction_duration
                .observe(started.elapsed().as_secs_f64());
            m.commit_batch.observe(1.0);
        }
        if appended {
            match &self.inner.sequencing {
                Sequencing::Task(sequencer) => {
                    let run = sequencer.request();
                    sequencer.wait(run).await;
                }
                // Committed already: a failed run leaves the rows to the
                // next sequencer, of any instance, so the write succeeded.
                Sequencing::Inline => {
                    if let Err(e) = sequencer::sequence_all(&self.inner.pool).await {
                        tracing::warn!(error = %e,
                            "written, not yet sequenced: the next hub instance to run sequences it");
                    }
                }
                Sequencing::Off => {}
            }
        }
        Ok(value)
    }

    /// Checks the audit chains (or one tenant's) in one snapshot, and each
    /// practice's row against what its records say.
    pub async fn verify_audit(&self, tenant: Option<&str>) -> Result<AuditReport, StoreError> {
        in_tx!(self, READ, |tx| audit::verify(&tx, tenant).await)
    }

    async fn events(&self, sql: String, values: Vec<Value>) -> Result<Vec<Event>, StoreError> {
        tx::read(&self.inner.pool, &sql, &params(&values))
            .await?
            .iter()
            .map(rows::event)
            .collect()
    }
}

/// A pool setting's error, named by its key.
fn key_error((key, reason): (String, String)) -> StoreError {
    StoreError::Internal(format!("store.postgres.{key}: {reason}"))
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
        let stored = in_tx!(self, WRITE, |tx| changes::insert_new(
            &mut tx,
            &new,
            &content,
            Some((lease, max_in_flight))
        )
        .await);
        match stored {
            // Over the adapter's limit after all: stored due instead.
            Err(e) if cluster::is_over_limit(&e) => {
                in_tx!(self, WRITE, |tx| changes::insert_new(
                    &mut tx, &new, &content, None
                )
                .await)
            }
            stored => stored,
        }
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
                    AND cursor IS NOT NULL
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
        // The counter as the sequencer committed it: every event up to it
        // is sequenced and visible.
        let rows = tx::read(&self.inner.pool, "SELECT last FROM event_cursor", &[]).await?;
        match rows.first() {
            Some(row) => col(row, 0),
            None => Err(StoreError::Corrupt("event_cursor has no row".into())),
        }
    }

    async fn claim_work(
        &self,
        adapter: &str,
        lease: &Lease,
        now: DateTime<Utc>,
        limit: u32,
        max_in_flight: u32,
    ) -> Result<ClaimedWork, StoreError> {
        // Claims are checked against the limit at their commit; one that
        // another instance's claims overtook runs again, from a new count.
        let mut runs = 0;
        loop {
            runs += 1;
            let claimed = in_tx!(self, WRITE, |tx| changes::claim_work(
                &mut tx,
                adapter,
                lease,
                now,
                limit,
                max_in_flight
            )
            .await);
            match claimed {
                Err(e) if cluster::is_over_limit(&e) && runs < MAX_RUNS => continue,
                Err(e) if cluster::is_over_limit(&e) => {
                    return Ok(ClaimedWork {
                        saturated: true,
                        ..Default::default()
                    });
                }
                claimed => return claimed,
            }
        }
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
        let rows = tx::read(
            &self.inner.pool,
            "SELECT MIN(next_attempt_at) FROM jobs WHERE adapter = $1 AND state IN ('due', 'polling')",
            &[&adapter],
        )
        .await?;
        let next: Option<i64> = match rows.first() {
            Some(row) => col(row, 0)?,
            None => None,
        };
        Ok(next.map(from_ms))
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
    ) -> Result<Recorded, StoreError> {
        in_tx!(self, WRITE, |tx| {
            let (early_results, anomalies) =
                changes::finish_attempt(&mut tx, job, &result, Utc::now()).await?;
            let practice = if read_back {
                Some(rows::get_practice(&tx, &job.tenant_id, &job.practice_id, false).await?)
            } else {
                None
            };
            Ok(Recorded {
                practice,
                early_results,
                anomalies,
            })
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

    async fn apply_inbound_checked(
        &self,
        result: &InboundResult,
        check: Option<OutcomeCheck>,
    ) -> Result<InboundVerdict, StoreError> {
        in_tx!(self, WRITE, |tx| changes::apply_inbound(
            &mut tx,
            result,
            check.as_ref(),
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
        tx::read(&self.inner.pool, &sql, &[&tenant_id, &(limit as i64)])
            .await?
            .iter()
            .map(rows::dead_letter_row)
            .collect()
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
