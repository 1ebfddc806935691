//! The embedded store: one SQLite file in WAL mode.
//!
//! All writes go to one dedicated thread that owns the writer connection.
//! It takes every command waiting in its queue, runs them in **one
//! transaction** (a command that fails is left out, and the others run
//! again without it if it had written anything), commits once — one fsync
//! for many practices — and only then answers each caller. Nobody is told "stored" before the commit.
//! The events a transaction appended are published on the event bus right
//! after its commit, by the writer thread itself: watchers see them in
//! commit order, so they can forward them without re-reading the store.
//! Reads run on blocking threads with a small pool of read-only connections,
//! each read in one read transaction: one snapshot for all its statements.
//! Either way a whole operation costs one thread hand-off, not one per SQL
//! statement, and nothing blocks the async runtime.

mod audit;
mod changes;
mod checkpoint;
mod cluster;
mod early;
mod follow_up;
mod leases;
pub mod offline;
mod ops;
mod ownership;
mod pending;
#[cfg(test)]
mod plans;
mod purge;
mod readers;
pub(crate) mod rows;
mod state;
#[cfg(test)]
mod tests;
mod writer;

use super::schema;
use super::{
    AttemptResult, AuditEntry, AuditRecord, AuditReport, ClaimedJob, ClaimedPoll, ClaimedWork,
    DeadLetter, EventFilter, ExpiredLeases, InboundVerdict, InsertOutcome, Lease, OpsSnapshot,
    OutcomeCheck, PracticeFilter, Recorded, Store, StoreError, Withdrawal,
};
use crate::bus::EventBus;
use crate::config::Synchronous;
use crate::domain::practice::{Event, NewPractice, Practice};
use crate::metrics::StoreMetrics;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use raccordo_adapters::VendorReply;
use raccordo_adapters::adapter::InboundResult;
use raccordo_adapters::model::Document;
use readers::{ReaderPool, in_snapshot, keep_plans, open_read_only};
use rows::{
    DEAD_LETTER_SQL, EVENT_COLUMNS, attach_details, dead_letter, from_ms, get_practice, list_query,
    practice_from_row, query_all, query_events, read_back_if, read_dead_letter, read_practice_row,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, params};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;
pub use writer::DEFAULT_WRITE_QUEUE;
use writer::{QueueSlot, Write, WriteCommand, run_writer};

/// The SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::Sender<Box<dyn WriteCommand>>,
    /// Writes queued or running (see [`QueueSlot`]).
    queued: Arc<AtomicUsize>,
    /// `store.write_queue`: past it, new work is refused at once.
    capacity: usize,
    readers: Arc<ReaderPool>,
    /// This process is the database's only hub while any clone lives.
    _ownership: Arc<ownership::Ownership>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.readers.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies migrations
    /// and starts the writer thread.
    pub async fn open(
        path: &Path,
        synchronous: Synchronous,
        readers: u32,
    ) -> Result<Self, StoreError> {
        Self::open_observed(path, synchronous, readers, None, None).await
    }

    /// [`open`](Self::open), with the writer reporting each transaction's
    /// duration and batch size to `metrics`, and publishing every committed
    /// event on `bus`, in commit order.
    pub async fn open_observed(
        path: &Path,
        synchronous: Synchronous,
        readers: u32,
        metrics: Option<StoreMetrics>,
        bus: Option<EventBus>,
    ) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let (writer, ready, owned) =
            tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        StoreError::Internal(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                let owned = ownership::claim(&path)?;
                // Only the writer thread uses this connection: no mutex per call.
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI;
                let conn = Connection::open_with_flags(&path, flags);
                #[cfg(test)]
                let conn = conn.map(plans::watched);
                let mut conn = conn.map_err(|e| {
                    StoreError::Internal(format!("cannot open {}: {e}", path.display()))
                })?;
                conn.busy_timeout(std::time::Duration::from_secs(10))?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(
                    None,
                    "synchronous",
                    match synchronous {
                        Synchronous::Full => "FULL",
                        Synchronous::Normal => "NORMAL",
                    },
                )?;
                conn.pragma_update(None, "foreign_keys", "ON")?;
                conn.set_prepared_statement_cache_capacity(128);
                keep_plans(&conn)?;
                // A larger cache than SQLite's 2 MiB default: a group commit of
                // hundreds of practices otherwise spills dirty pages to the WAL
                // before its commit and re-reads index pages it just evicted.
                conn.pragma_update(None, "cache_size", -16_384)?;
                // Each command of a group commit runs in a savepoint, whose
                // sub-journal keeps the original of every page it touches. On
                // disk (the default past 64 KiB) that was five times the WAL's
                // own writes: 100 `pwrite`s per practice instead of 20.
                conn.pragma_update(None, "temp_store", "MEMORY")?;
                schema::migrate(&mut conn)?;
                checkpoint::start(&path, &mut conn)?;
                let (tx, rx) = mpsc::channel::<Box<dyn WriteCommand>>();
                std::thread::Builder::new()
                    .name("raccordo-store-writer".into())
                    .spawn(move || run_writer(conn, rx, metrics, bus))
                    .map_err(|e| {
                        StoreError::Internal(format!("cannot start the writer thread: {e}"))
                    })?;
                Ok((tx, path, owned))
            })
            .await
            .map_err(|e| StoreError::Internal(format!("store start panicked: {e}")))??;
        Ok(Self {
            writer,
            queued: Arc::new(AtomicUsize::new(0)),
            capacity: DEFAULT_WRITE_QUEUE,
            readers: Arc::new(ReaderPool {
                path: ready,
                idle: Mutex::new(Vec::new()),
                slots: tokio::sync::Semaphore::new(readers.max(1) as usize),
            }),
            _ownership: Arc::new(owned),
        })
    }

    /// Checks the audit chains of the database at `path` (or one tenant's),
    /// and each practice's row against what its records say, without
    /// migrating or writing.
    pub fn verify_audit(path: &Path, tenant: Option<&str>) -> Result<AuditReport, StoreError> {
        audit::verify(&open_read_only(path)?, tenant)
    }

    /// A tenant's audit records in `[from, to)`, read without writing.
    pub fn export_audit(
        path: &Path,
        tenant: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        audit::export(&open_read_only(path)?, tenant, from, to)
    }

    /// Removes `tenant`'s practices concluded before `before` from the
    /// database at `path` (see [`purge::purge`]). Safe while the hub runs:
    /// it holds the write lock a few milliseconds at a time.
    pub fn purge_concluded(
        path: &Path,
        tenant: &str,
        before: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<u64, StoreError> {
        if !path.exists() {
            return Err(StoreError::Internal(format!(
                "{} does not exist",
                path.display()
            )));
        }
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Internal(format!("cannot open {}: {e}", path.display())))?;
        #[cfg(test)]
        let conn = plans::watched(conn);
        conn.busy_timeout(purge::BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        purge::purge(&conn, tenant, before, dry_run)
    }

    /// Ends every lease in the database at once, whatever its expiry: the
    /// embedded store has one process as its only owner (the lock beside the
    /// file), so at start every lease left is a dead process's (see
    /// [`Store::expire_leases`]). Singletons and heartbeats left are a dead
    /// process's too: forgotten, so this one takes them at once.
    pub async fn expire_all_leases(&self) -> Result<ExpiredLeases, StoreError> {
        self.write_owed(|conn| {
            cluster::forget_instances(conn)?;
            leases::expire(conn, Utc::now(), DateTime::<Utc>::MAX_UTC)
        })
        .await
    }

    /// The store with room for `capacity` writes queued or running
    /// (`store.write_queue`); new work beyond it fails at once with
    /// [`StoreError::Unavailable`] instead of waiting in a queue that
    /// grows without end.
    pub fn with_write_queue(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Runs `op` in the writer's next transaction; answers after the commit.
    /// New work (a submission, a withdrawal, a callback): refused when the
    /// queue is full.
    async fn write<R: Send + 'static>(
        &self,
        op: impl Fn(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(StoreError::Unavailable(super::WRITE_QUEUE_FULL.into()));
        }
        self.send(op, QueueSlot(Arc::clone(&self.queued))).await
    }

    /// [`write`](Self::write) for work the hub already owes (recording a
    /// vendor's answer, claiming due jobs): never refused, since losing it
    /// would lose an accepted delivery. It still takes a slot, so it leaves
    /// less room for new work; it is bounded by the adapters'
    /// `max_concurrency`, not by the callers.
    async fn write_owed<R: Send + 'static>(
        &self,
        op: impl Fn(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.send(op, QueueSlot(Arc::clone(&self.queued))).await
    }

    async fn send<R: Send + 'static>(
        &self,
        op: impl Fn(&Connection) -> Result<R, StoreError> + Send + 'static,
        slot: QueueSlot,
    ) -> Result<R, StoreError> {
        let (reply, rx) = oneshot::channel();
        let command = Box::new(Write {
            op,
            result: None,
            reply,
            slot,
        });
        self.writer
            .send(command)
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
    }

    /// Runs a point read (one practice by key: tens of microseconds) on a
    /// read-only connection right here on the async worker. Handing it to a
    /// blocking thread cost more than the read itself. In WAL mode readers
    /// never wait for the writer, so this does not stall the runtime.
    fn read_now<R>(
        &self,
        op: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let conn = self.readers.take()?;
        let result = in_snapshot(&conn, op);
        self.readers.put(conn);
        result
    }

    /// Runs `op` on a read-only connection, on a blocking thread: for reads
    /// whose cost grows with the data (lists, scans).
    async fn read<R: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let pool = Arc::clone(&self.readers);
        let _slot = pool
            .slots
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the reader pool is closed".into()))?;
        let pool = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let result = in_snapshot(&conn, op);
            pool.put(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_practice(
        &self,
        new: NewPractice,
        read_back: bool,
    ) -> Result<(InsertOutcome, Option<Practice>), StoreError> {
        let content = changes::content_json(&new)?;
        self.write(move |conn| {
            let (outcome, _) = changes::insert_new(conn, &new, &content, None)?;
            let created = matches!(outcome, InsertOutcome::Created);
            let stored = read_back_if(created && read_back, conn, &new.tenant_id, &new.id)?;
            Ok((outcome, stored))
        })
        .await
    }

    async fn insert_practice_claimed(
        &self,
        new: NewPractice,
        lease: &Lease,
        max_in_flight: u32,
    ) -> Result<(InsertOutcome, Option<ClaimedJob>), StoreError> {
        let content = changes::content_json(&new)?;
        let lease = lease.clone();
        self.write(move |conn| {
            changes::insert_new(conn, &new, &content, Some((&lease, max_in_flight)))
        })
        .await
    }

    async fn get_practice(
        &self,
        tenant_id: &str,
        id: &str,
        with_content: bool,
    ) -> Result<Practice, StoreError> {
        if with_content {
            // Documents can be megabytes: read them off the async workers.
            let (tenant_id, id) = (tenant_id.to_string(), id.to_string());
            return self
                .read(move |conn| get_practice(conn, &tenant_id, &id, true))
                .await;
        }
        self.read_now(|conn| get_practice(conn, tenant_id, id, false))
    }

    async fn list_practices(
        &self,
        filter: &PracticeFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Practice>, StoreError> {
        let (sql, values) = list_query(filter, after, limit);
        self.read(move |conn| {
            let mut practices =
                query_all(conn, &sql, &values, read_practice_row, practice_from_row)?;
            attach_details(conn, &mut practices, false)?;
            Ok(practices)
        })
        .await
    }

    async fn practice_events(
        &self,
        tenant_id: &str,
        practice_id: &str,
        from_sequence: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let values = vec![
            SqlValue::Text(tenant_id.into()),
            SqlValue::Text(practice_id.into()),
            SqlValue::Integer(from_sequence),
        ];
        self.read(move |conn| {
            query_events(
                conn,
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = ? AND practice_id = ? AND sequence >= ?
                     ORDER BY sequence"
                ),
                &values,
            )
        })
        .await
    }

    async fn events_after(
        &self,
        filter: &EventFilter,
        after_cursor: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let mut sql =
            format!("SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = ? AND cursor > ?");
        let mut values = vec![
            SqlValue::Text(filter.tenant_id.clone()),
            SqlValue::Integer(after_cursor),
        ];
        if let Some(a) = &filter.applicant_id {
            sql.push_str(" AND applicant_id = ?");
            values.push(SqlValue::Text(a.to_ascii_uppercase()));
        }
        if let Some(s) = &filter.service_code {
            sql.push_str(" AND service_code = ?");
            values.push(SqlValue::Text(s.clone()));
        }
        sql.push_str(" ORDER BY cursor LIMIT ?");
        values.push(SqlValue::Integer(limit as i64));
        self.read(move |conn| query_events(conn, &sql, &values))
            .await
    }

    async fn last_cursor(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT COALESCE(MAX(cursor), 0) FROM events")?
                .query_row([], |r| r.get(0))?)
        })
        .await
    }

    async fn claim_work(
        &self,
        adapter: &str,
        lease: &Lease,
        now: DateTime<Utc>,
        limit: u32,
        max_in_flight: u32,
    ) -> Result<ClaimedWork, StoreError> {
        let (adapter, lease) = (adapter.to_string(), lease.clone());
        self.write_owed(move |conn| {
            changes::claim_work(conn, &adapter, &lease, now, limit, max_in_flight)
        })
        .await
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
        let ids = serde_json::to_string(operation_ids)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let owner = owner.to_string();
        self.write_owed(move |conn| leases::renew(conn, &owner, &ids, until))
            .await
    }

    async fn expire_leases(&self, now: DateTime<Utc>) -> Result<ExpiredLeases, StoreError> {
        self.write_owed(move |conn| leases::expire(conn, now, now))
            .await
    }

    async fn hold_singleton(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (name, owner) = (name.to_string(), owner.to_string());
        self.write_owed(move |conn| cluster::hold_singleton(conn, &name, &owner, now, until))
            .await
    }

    async fn heartbeat(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let owner = owner.to_string();
        self.write_owed(move |conn| cluster::heartbeat(conn, &owner, now, until))
            .await
    }

    async fn next_due_at(&self, adapter: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let adapter = adapter.to_string();
        self.read(move |conn| {
            let next: Option<i64> = conn
                .prepare_cached(
                    "SELECT MIN(next_attempt_at) FROM jobs WHERE adapter = ?1 AND state IN ('due', 'polling')",
                )?
                .query_row([adapter], |r| r.get(0))?;
            Ok(next.map(from_ms))
        })
        .await
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
        let job = job.clone();
        self.write_owed(move |conn| {
            let (early_results, anomalies) =
                changes::finish_attempt(conn, &job, &result, Utc::now())?;
            Ok(Recorded {
                practice: read_back_if(read_back, conn, &job.tenant_id, &job.practice_id)?,
                early_results,
                anomalies,
            })
        })
        .await
    }

    async fn reschedule_poll(
        &self,
        poll: &ClaimedPoll,
        progress: Option<VendorReply>,
        token: Option<String>,
        next: DateTime<Utc>,
        error: Option<raccordo_adapters::DeliveryError>,
    ) -> Result<(), StoreError> {
        let poll = poll.clone();
        self.write_owed(move |conn| {
            follow_up::reschedule(
                conn,
                &poll,
                progress.as_ref(),
                token.as_deref(),
                next,
                error.as_ref(),
            )
        })
        .await
    }

    async fn apply_inbound_checked(
        &self,
        result: &InboundResult,
        check: Option<OutcomeCheck>,
    ) -> Result<InboundVerdict, StoreError> {
        let result = result.clone();
        self.write(move |conn| changes::apply_inbound(conn, &result, check.as_ref(), Utc::now()))
            .await
    }

    async fn withdraw(&self, w: Withdrawal) -> Result<Option<String>, StoreError> {
        self.write(move |conn| changes::withdraw(conn, &w, Utc::now()))
            .await
    }

    async fn dead_letters(
        &self,
        tenant_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let tenant_id = tenant_id.map(str::to_string);
        self.read(move |conn| {
            let sql = format!(
                "{DEAD_LETTER_SQL} WHERE j.state = 'dead' AND (?1 IS NULL OR j.tenant_id = ?1)
                 ORDER BY j.updated_at DESC LIMIT ?2"
            );
            let rows = conn
                .prepare_cached(&sql)?
                .query_map(params![tenant_id, limit as i64], read_dead_letter)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter().map(dead_letter).collect()
        })
        .await
    }

    async fn replay(&self, operation_id: &str, actor: &str) -> Result<DeadLetter, StoreError> {
        let (operation_id, actor) = (operation_id.to_string(), actor.to_string());
        self.write(move |conn| changes::replay(conn, &operation_id, &actor, Utc::now()))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn record_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.write(move |conn| {
            audit::append(
                conn,
                entry.tenant_id.as_deref().unwrap_or(audit::NO_TENANT),
                &entry.actor,
                &entry.action,
                entry.practice_id.as_deref(),
                &entry.detail,
                Utc::now(),
            )
        })
        .await
    }

    async fn ops_snapshot(&self, now: DateTime<Utc>) -> Result<OpsSnapshot, StoreError> {
        let path = self.readers.path.clone();
        self.read(move |conn| ops::snapshot(conn, &path, now)).await
    }
}
