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
mod checkpoint;
mod follow_up;
mod gathered_wal;
mod page_cache;
mod pending;
mod purge;

use super::schema;
use super::{
    AdapterBacklog, AttemptResult, AuditBreak, AuditEntry, AuditRecord, ClaimedJob, ClaimedPoll,
    ClaimedWork, DeadLetter, EventFilter, InsertOutcome, OpsSnapshot, PracticeCount,
    PracticeFilter, Store, StoreError, Withdrawal,
};
use crate::bus::EventBus;
use crate::config::{Mode, Synchronous};
use crate::domain::apply::{StatusState, plan_reply};
use crate::domain::practice::{
    DeliveryView, Event, EventDraft, EventKind, EventSource, NewPractice, Outcome, Practice,
    PracticeContent,
};
use crate::domain::retry::RetryDecision;
use crate::domain::status::{DeliveryStatus, delivery_transition_allowed};
use crate::metrics::StoreMetrics;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use raccordo_adapters::VendorReply;
use raccordo_adapters::adapter::{Correlation, InboundOutcome, InboundResult};
use raccordo_adapters::model::{
    AdminStatus, Document, DocumentMeta, ExternalRef, Operation, sha256_hex,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params, params_from_iter};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, mpsc};
use tokio::sync::oneshot;

/// Commands the writer runs in one transaction at most.
const MAX_BATCH: usize = 512;

/// A write waiting for the writer thread. It runs inside a transaction
/// shared with other commands and may run again from the start when
/// another command of its batch is rolled back, so its operation is a `Fn`
/// that only reads what it captured.
trait WriteCommand: Send {
    /// Runs the operation and keeps its result; returns whether it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the transaction's fate is known: the commit's
    /// error, if it failed, replaces a successful result.
    fn answer(self: Box<Self>, commit_error: Option<StoreError>);
}

struct Write<F, R> {
    op: F,
    result: Option<Result<R, StoreError>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<F, R> WriteCommand for Write<F, R>
where
    F: Fn(&Connection) -> Result<R, StoreError> + Send,
    R: Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        // A panicking operation must not take the writer thread down.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.op)(conn)))
            .unwrap_or_else(|_| Err(StoreError::Internal("a store operation panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, commit_error: Option<StoreError>) {
        let result = match (self.result, commit_error) {
            (Some(Err(own)), _) => Err(own),
            (_, Some(e)) => Err(e),
            (Some(ok), None) => ok,
            (None, None) => Err(StoreError::Internal("the store command did not run".into())),
        };
        let _ = self.reply.send(result);
    }
}

/// The SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    writer: mpsc::Sender<Box<dyn WriteCommand>>,
    readers: Arc<ReaderPool>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.readers.path)
            .finish()
    }
}

/// Read-only connections, opened on demand and reused. At most `size`
/// blocking reads run at once (the semaphore); point reads on the async
/// workers add at most one connection per worker thread.
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    slots: tokio::sync::Semaphore,
}

impl ReaderPool {
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.idle.lock().expect("reader pool lock").pop() {
            return Ok(c);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.set_prepared_statement_cache_capacity(64);
        // 8 MiB instead of SQLite's 2: a folder listing at 1,000,000
        // practices touches about 300 scattered pages, which then stay.
        conn.pragma_update(None, "cache_size", -8_192)?;
        keep_plans(&conn)?;
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        // One left inside a read transaction would pin an old snapshot:
        // stale reads, and a log that can never restart. Closed instead.
        if conn.is_autocommit() {
            self.idle.lock().expect("reader pool lock").push(conn);
        }
    }
}

/// Runs `op` in one read transaction. Its statements then share one
/// snapshot (a practice and its references, documents and delivery agree
/// with each other), and the log's read lock is taken once: in autocommit
/// mode each statement began and ended a read transaction of its own, with
/// `fcntl` locks on the shared-memory file each time, about a third of the
/// hub's CPU for a `GetPractice`.
fn in_snapshot<R>(
    conn: &Connection,
    op: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    conn.prepare_cached("BEGIN")?.execute([])?;
    let result = op(conn);
    let end = conn
        .prepare_cached("COMMIT")
        .and_then(|mut s| s.execute([]));
    let value = result?;
    end?;
    Ok(value)
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
        let (writer, ready) = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Internal(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
            configure_sqlite();
            // Only the writer thread uses this connection: no mutex per call.
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI;
            // The log's frames in one write per commit; safe only when
            // every commit syncs the log (see `gathered_wal`).
            let conn = match synchronous {
                Synchronous::Full => {
                    gathered_wal::register().map_err(StoreError::Internal)?;
                    Connection::open_with_flags_and_vfs(&path, flags, gathered_wal::NAME)
                }
                Synchronous::Normal => Connection::open_with_flags(&path, flags),
            };
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
            Ok((tx, path))
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store start panicked: {e}")))??;
        Ok(Self {
            writer,
            readers: Arc::new(ReaderPool {
                path: ready,
                idle: Mutex::new(Vec::new()),
                slots: tokio::sync::Semaphore::new(readers.max(1) as usize),
            }),
        })
    }

    /// Checks the audit chains of the database at `path` (or one tenant's)
    /// without migrating or writing: (records checked, first break per chain).
    pub fn verify_audit(
        path: &Path,
        tenant: Option<&str>,
    ) -> Result<(u64, Vec<AuditBreak>), StoreError> {
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
    /// it waits for the hub's transactions and works in small batches.
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
        let mut conn = Connection::open(path)
            .map_err(|e| StoreError::Internal(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        purge::purge(&mut conn, tenant, before, dry_run)
    }

    /// Runs `op` in the writer's next transaction; answers after the commit.
    async fn write<R: Send + 'static>(
        &self,
        op: impl Fn(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (reply, rx) = oneshot::channel();
        let command = Box::new(Write {
            op,
            result: None,
            reply,
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

/// The writer thread: group commit. Commands run one after the other in one
/// transaction, without a savepoint each: a savepoint copies every page a
/// command touches into a sub-journal first, a tenth of the writer's time.
/// A command that fails without writing anything (the usual failure: a
/// check before the first write) is simply left out. One that fails after
/// writing rolls the transaction back, and the others run again from the
/// start without it (a failed statement undoes itself, so "wrote nothing"
/// is "the connection's change count did not move").
fn run_writer(
    conn: Connection,
    commands: mpsc::Receiver<Box<dyn WriteCommand>>,
    metrics: Option<StoreMetrics>,
    bus: Option<EventBus>,
) {
    pending::start_writer();
    while let Ok(first) = commands.recv() {
        let started = std::time::Instant::now();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let commit_error = run_batch(&conn, &mut batch).err();
        let committed = pending::finish();
        if let (Some(bus), None) = (&bus, &commit_error) {
            bus.publish(committed);
        }
        if let Some(m) = &metrics {
            m.transaction_duration
                .observe(started.elapsed().as_secs_f64());
            m.commit_batch.observe(batch.len() as f64);
        }
        for command in batch {
            command.answer(commit_error.clone());
        }
    }
}

/// Runs `batch` in one transaction and commits what succeeded; the error
/// is the transaction's (nothing of the batch was stored).
fn run_batch(conn: &Connection, batch: &mut [Box<dyn WriteCommand>]) -> Result<(), StoreError> {
    // Cached like every other statement: parsing these per batch showed
    // up in profiles.
    let run = |sql: &str| -> rusqlite::Result<()> {
        conn.prepare_cached(sql)?.execute([])?;
        Ok(())
    };
    let mut left_out = vec![false; batch.len()];
    'transaction: loop {
        run("BEGIN IMMEDIATE")
            .map_err(|e| StoreError::from(e).context("cannot begin a transaction"))?;
        for (command, left_out) in batch.iter_mut().zip(left_out.iter_mut()) {
            if *left_out {
                continue;
            }
            let changes = conn.total_changes();
            let before = pending::mark();
            if command.run(conn) {
                continue;
            }
            *left_out = true;
            // SQLite itself rolls the whole transaction back on some errors
            // (a full disk, an I/O error): the others must not go on in
            // autocommit mode, each statement committing on its own.
            let rolled_back = conn.is_autocommit();
            if conn.total_changes() == changes && !rolled_back {
                if let Some(before) = before {
                    pending::roll_back_to(before);
                }
                continue;
            }
            if !rolled_back {
                let _ = run("ROLLBACK");
            }
            pending::finish();
            continue 'transaction;
        }
        if left_out.iter().all(|l| *l) {
            // Every command failed and answers with its own error.
            let _ = run("ROLLBACK");
            return Ok(());
        }
        return pending::write_audit_heads(conn)
            .and_then(|()| run("COMMIT"))
            .map_err(|e| {
                let _ = run("ROLLBACK");
                StoreError::from(e).context("commit failed")
            });
    }
}

/// Configures SQLite before the first connection initializes the library
/// (later, each setting changes nothing and the defaults stay):
/// - memory statistics off: they take a process-wide mutex around every
///   allocation (a few per cent of the writer's time), and we never read
///   them;
/// - the page cache without full scans at commit (see `page_cache`).
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config is only allowed before sqlite3_initialize;
        // called later it changes nothing and returns SQLITE_MISUSE, which
        // is harmless here. SQLITE_CONFIG_MEMSTATUS takes one int.
        unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0);
        }
        page_cache::install();
    });
}

/// Turns on the query planner stability guarantee. Without it, the bundled
/// SQLite (built with STAT4) re-parses and re-plans a cached statement
/// whenever a newly bound value might change its plan - for our point
/// queries, on nearly every execution. Our queries are planned once.
fn keep_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Internal(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| StoreError::Internal(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

fn parse<T: FromStr<Err = String>>(what: &str, v: &str) -> Result<T, StoreError> {
    v.parse()
        .map_err(|e: String| StoreError::Corrupt(format!("{what}: {e}")))
}

fn mode_str(mode: Mode) -> &'static str {
    match mode {
        Mode::Sync => "sync",
        Mode::Deferred => "deferred",
        Mode::Auto => "auto",
    }
}

fn parse_mode(s: &str) -> Mode {
    match s {
        "sync" => Mode::Sync,
        "auto" => Mode::Auto,
        _ => Mode::Deferred,
    }
}

/// The columns of a practice that transitions read and write. Transitions
/// change the fields here; [`append_events`] then stores them with one
/// UPDATE. Each UPDATE rewrites the whole row, content included: a
/// synchronous practice used to rewrite it four times.
#[derive(Debug)]
struct StateRow {
    id: String,
    tenant_id: String,
    service_code: String,
    applicant_id: String,
    status: AdminStatus,
    delivery_status: Option<DeliveryStatus>,
    current_operation_id: Option<String>,
    last_sequence: i64,
    legal_term_days: u32,
    /// The outcome columns to set with the new status, if it concludes or
    /// moves the deadline.
    outcome: Option<OutcomeUpdate>,
    /// The mutable columns as stored, to write only what changed.
    stored: StoredState,
}

/// The mutable columns of a practice as the database holds them.
#[derive(Debug, Clone, PartialEq)]
struct StoredState {
    status: AdminStatus,
    delivery_status: Option<DeliveryStatus>,
    current_operation_id: Option<String>,
    last_sequence: i64,
}

/// What a status change sets besides the status.
#[derive(Debug, Default)]
struct OutcomeUpdate {
    legal_deadline: Option<i64>,
    concluded_at: Option<i64>,
    /// The new status is the outcome: the columns below are set too.
    terminal: bool,
    reason: Option<String>,
    vendor_code: Option<String>,
}

impl StateRow {
    fn current(&self) -> StoredState {
        StoredState {
            status: self.status,
            delivery_status: self.delivery_status,
            current_operation_id: self.current_operation_id.clone(),
            last_sequence: self.last_sequence,
        }
    }

    /// Writes what the transitions changed, in one statement.
    fn save(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let now = self.current();
        if now == self.stored && self.outcome.is_none() {
            return Ok(());
        }
        let delivery = self.delivery_status.map(DeliveryStatus::as_str);
        match self.outcome.take() {
            // The status index is left alone when the status stays.
            None if now.status == self.stored.status => conn
                .prepare_cached(
                    "UPDATE practices SET delivery_status = ?1, current_operation_id = ?2, last_sequence = ?3
                     WHERE id = ?4",
                )?
                .execute(params![
                    delivery,
                    self.current_operation_id,
                    self.last_sequence,
                    self.id,
                ])?,
            outcome => {
                let outcome = outcome.unwrap_or_default();
                conn.prepare_cached(
                    "UPDATE practices SET status = ?1, delivery_status = ?2, current_operation_id = ?3,
                        last_sequence = ?4,
                        legal_deadline = COALESCE(?5, legal_deadline),
                        concluded_at = COALESCE(?6, concluded_at),
                        outcome_status = CASE WHEN ?7 THEN ?1 ELSE outcome_status END,
                        outcome_reason = CASE WHEN ?7 THEN ?8 ELSE outcome_reason END,
                        outcome_vendor_code = CASE WHEN ?7 THEN ?9 ELSE outcome_vendor_code END
                     WHERE id = ?10",
                )?
                .execute(params![
                    self.status.as_str(),
                    delivery,
                    self.current_operation_id,
                    self.last_sequence,
                    outcome.legal_deadline,
                    outcome.concluded_at,
                    outcome.terminal,
                    outcome.reason,
                    outcome.vendor_code,
                    self.id,
                ])?
            }
        };
        self.stored = now;
        Ok(())
    }
}

fn load_state(conn: &Connection, practice_id: &str) -> Result<StateRow, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT id, tenant_id, service_code, applicant_id, status, delivery_status, current_operation_id,
                    last_sequence, legal_term_days
             FROM practices WHERE id = ?1",
        )?
        .query_row([practice_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
            ))
        })
        .optional()?
        .ok_or(StoreError::NotFound)?;
    let stored = StoredState {
        status: parse("status", &row.4)?,
        delivery_status: row
            .5
            .as_deref()
            .map(|s| parse("delivery_status", s))
            .transpose()?,
        current_operation_id: row.6,
        last_sequence: row.7,
    };
    Ok(StateRow {
        id: row.0,
        tenant_id: row.1,
        service_code: row.2,
        applicant_id: row.3,
        status: stored.status,
        delivery_status: stored.delivery_status,
        current_operation_id: stored.current_operation_id.clone(),
        last_sequence: stored.last_sequence,
        legal_term_days: row.8 as u32,
        outcome: None,
        stored,
    })
}

/// Appends events with the next sequence numbers, saves the practice's
/// changed state, and returns the events as stored. Every transition ends
/// here.
fn append_events(
    conn: &Connection,
    st: &mut StateRow,
    drafts: Vec<EventDraft>,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    if drafts.is_empty() {
        st.save(conn)?;
        return Ok(Vec::new());
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (practice_id, tenant_id, service_code, applicant_id, sequence, occurred_at,
            recorded_at, source, kind, from_status, to_status, from_delivery, to_delivery, reason,
            vendor_code, actor, audit_seq, audit_prev_hash, audit_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
    )?;
    // Returned and published as stored (milliseconds): a live watcher and
    // one replaying from the store must see the same event.
    let now = from_ms(ms(now));
    let mut out = Vec::with_capacity(drafts.len());
    for d in drafts {
        st.last_sequence += 1;
        let occurred = from_ms(ms(d.occurred_at.unwrap_or(now)));
        // The event is its own audit record: linked into the tenant's chain
        // here, stored with the row.
        let link = audit::link_event(
            conn,
            &st.tenant_id,
            &d.actor,
            d.kind.as_str(),
            &st.id,
            &audit::EventAudit {
                sequence: st.last_sequence,
                source: d.source.as_str(),
                from_status: d.from_status.map(AdminStatus::as_str),
                to_status: d.to_status.map(AdminStatus::as_str),
                from_delivery: d.from_delivery.map(DeliveryStatus::as_str),
                to_delivery: d.to_delivery.map(DeliveryStatus::as_str),
                reason: d.reason.as_deref(),
                vendor_code: d.vendor_code.as_deref(),
            },
            ms(now),
        )?;
        insert.execute(params![
            st.id,
            st.tenant_id,
            st.service_code,
            st.applicant_id,
            st.last_sequence,
            ms(occurred),
            ms(now),
            d.source.as_str(),
            d.kind.as_str(),
            d.from_status.map(AdminStatus::as_str),
            d.to_status.map(AdminStatus::as_str),
            d.from_delivery.map(DeliveryStatus::as_str),
            d.to_delivery.map(DeliveryStatus::as_str),
            d.reason,
            d.vendor_code,
            d.actor,
            link.seq,
            link.prev_hash,
            link.hash,
        ])?;
        let cursor = conn.last_insert_rowid();
        out.push(Event {
            cursor,
            practice_id: st.id.clone(),
            tenant_id: st.tenant_id.clone(),
            service_code: st.service_code.clone(),
            applicant_id: st.applicant_id.clone(),
            sequence: st.last_sequence,
            occurred_at: occurred,
            recorded_at: now,
            source: d.source,
            kind: d.kind,
            from_status: d.from_status,
            to_status: d.to_status,
            from_delivery: d.from_delivery,
            to_delivery: d.to_delivery,
            reason: d.reason,
            vendor_code: d.vendor_code,
            actor: d.actor,
        });
    }
    st.save(conn)?;
    pending::add_events(&out);
    Ok(out)
}

/// Moves the delivery status, or records an anomaly if the table forbids it.
fn set_delivery(
    st: &mut StateRow,
    to: DeliveryStatus,
    draft: EventDraft,
    drafts: &mut Vec<EventDraft>,
) -> Result<(), StoreError> {
    let from = st.delivery_status;
    if from == Some(to) {
        return Ok(());
    }
    let mut draft = EventDraft {
        from_delivery: from,
        to_delivery: Some(to),
        kind: EventKind::DeliveryChanged,
        ..draft
    };
    if from.is_some_and(|f| !delivery_transition_allowed(f, to)) {
        draft.kind = EventKind::Anomaly;
        draft.reason = Some(format!(
            "delivery {} -> {to} is not allowed: not applied{}",
            from.map(|f| f.as_str()).unwrap_or("-"),
            draft
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
        drafts.push(draft);
        return Ok(());
    }
    st.delivery_status = Some(to);
    drafts.push(draft);
    Ok(())
}

/// Applies a vendor reply's administrative effect, references and documents.
fn apply_reply(
    conn: &Connection,
    st: &mut StateRow,
    reply: &VendorReply,
    actor: &str,
    now: DateTime<Utc>,
    drafts: &mut Vec<EventDraft>,
) -> Result<(), StoreError> {
    let plan = plan_reply(
        &StatusState {
            status: st.status,
            legal_term_days: st.legal_term_days,
        },
        reply,
        actor,
        now,
    );
    drafts.extend(plan.events);
    if let Some(to) = plan.new_status {
        let earlier = st.outcome.take().unwrap_or_default();
        st.outcome = Some(OutcomeUpdate {
            legal_deadline: plan.legal_deadline.map(ms).or(earlier.legal_deadline),
            concluded_at: plan.concluded_at.map(ms).or(earlier.concluded_at),
            terminal: to.is_terminal(),
            reason: reply.reason.clone(),
            vendor_code: reply.vendor_code.clone(),
        });
        st.status = to;
    }
    for r in &reply.external_refs {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO external_refs (practice_id, tenant_id, kind, value, system, issued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            st.id,
            st.tenant_id,
            r.kind,
            r.value,
            if r.system.is_empty() { actor } else { &r.system },
            ms(r.issued_at.or(reply.occurred_at).unwrap_or(now)),
        ])?;
    }
    for doc in &reply.documents {
        // The same document reported twice (a re-sent result) is stored once.
        conn.prepare_cached(
            "INSERT INTO documents (practice_id, tenant_id, role, position, name, media_type, size_bytes, sha256, content)
             SELECT ?1, ?2, 'outcome', COALESCE(MAX(position), -1) + 1, ?3, ?4, ?5, ?6, ?7
             FROM documents WHERE practice_id = ?1 AND role = 'outcome'
             HAVING NOT EXISTS (SELECT 1 FROM documents WHERE practice_id = ?1 AND role = 'outcome' AND sha256 = ?6)",
        )?
        .execute(params![
            st.id,
            st.tenant_id,
            doc.meta.name,
            doc.meta.media_type,
            doc.meta.size_bytes as i64,
            doc.meta.sha256,
            doc.content,
        ])?;
    }
    Ok(())
}

/// A delivery to put in the outbox.
struct NewJob<'a> {
    operation_id: &'a str,
    adapter: &'a str,
    operation: Operation,
    max_attempts: u32,
    traceparent: Option<&'a str>,
}

fn insert_job(
    conn: &Connection,
    st: &mut StateRow,
    job: NewJob<'_>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let operation_id = job.operation_id;
    conn.prepare_cached(
        "INSERT INTO jobs (operation_id, practice_id, tenant_id, adapter, operation, state, attempts,
            max_attempts, next_attempt_at, created_at, updated_at, traceparent)
         VALUES (?1, ?2, ?3, ?4, ?5, 'due', 0, ?6, ?7, ?7, ?7, ?8)",
    )?
    .execute(params![
        operation_id,
        st.id,
        st.tenant_id,
        job.adapter,
        job.operation.as_str(),
        job.max_attempts as i64,
        ms(now),
        job.traceparent,
    ])?;
    st.current_operation_id = Some(operation_id.to_string());
    Ok(())
}

/// The stored form of a practice's content, serialized by the caller's task
/// rather than on the single writer thread.
fn content_json(new: &NewPractice) -> Result<String, StoreError> {
    serde_json::to_string(&new.content).map_err(|e| StoreError::Internal(e.to_string()))
}

/// The events a new practice starts with (submitted, and its delivery's
/// first status): its row is inserted with their sequence already counted.
const FIRST_EVENTS: i64 = 2;

/// Stores a new practice with its outbox job and first events, or finds the
/// earlier practice with the same idempotency key. With `claim`, the job is
/// stored as attempt 1 in flight and returned, for the caller to deliver at
/// once (a synchronous route): no separate claim transaction.
fn insert_new(
    conn: &Connection,
    new: &NewPractice,
    content: &str,
    claim: bool,
) -> Result<(InsertOutcome, Option<ClaimedJob>), StoreError> {
    if let Some((id, hash)) = conn
        .prepare_cached(
            "SELECT id, content_hash FROM practices WHERE tenant_id = ?1 AND idempotency_key = ?2",
        )?
        .query_row([&new.tenant_id, &new.idempotency_key], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?
    {
        let existing = InsertOutcome::Existing {
            id,
            same_content: hash == new.content_hash,
        };
        return Ok((existing, None));
    }
    let applicant_id = new.content.applicant.id().to_ascii_uppercase();
    let deadline = new.received_at + Duration::days(new.legal_term_days.into());
    let operation_id = uuid::Uuid::now_v7().to_string();
    let delivery = if claim {
        DeliveryStatus::Sent
    } else {
        DeliveryStatus::Queued
    };
    conn.prepare_cached(
        "INSERT INTO practices (id, tenant_id, service_code, applicant_id, idempotency_key, content_hash,
            content, status, mode, delivery_status, current_operation_id, received_at, legal_term_days,
            legal_deadline, last_sequence)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'SUBMITTED', ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?
    .execute(params![
        new.id,
        new.tenant_id,
        new.service_code,
        applicant_id,
        new.idempotency_key,
        new.content_hash,
        content,
        mode_str(new.mode),
        delivery.as_str(),
        operation_id,
        ms(new.received_at),
        new.legal_term_days as i64,
        ms(deadline),
        FIRST_EVENTS,
    ])?;
    for (i, a) in new.attachments.iter().enumerate() {
        conn.prepare_cached(
            "INSERT INTO documents (practice_id, tenant_id, role, position, name, media_type, size_bytes, sha256, content)
             VALUES (?1, ?2, 'attachment', ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            new.id,
            new.tenant_id,
            i as i64,
            a.meta.name,
            a.meta.media_type,
            a.meta.size_bytes as i64,
            a.meta.sha256,
            a.content,
        ])?;
    }
    conn.prepare_cached(
        "INSERT INTO jobs (operation_id, practice_id, tenant_id, adapter, operation, state, attempts,
            max_attempts, next_attempt_at, created_at, updated_at, traceparent)
         VALUES (?1, ?2, ?3, ?4, 'submit', ?5, ?6, ?7, ?8, ?8, ?8, ?9)",
    )?
    .execute(params![
        operation_id,
        new.id,
        new.tenant_id,
        new.adapter,
        if claim { "in_flight" } else { "due" },
        claim as i64,
        new.max_attempts as i64,
        ms(new.received_at),
        new.traceparent,
    ])?;
    let mut st = StateRow {
        id: new.id.clone(),
        tenant_id: new.tenant_id.clone(),
        service_code: new.service_code.clone(),
        applicant_id,
        status: AdminStatus::Submitted,
        delivery_status: Some(delivery),
        current_operation_id: Some(operation_id.clone()),
        last_sequence: 0,
        legal_term_days: new.legal_term_days,
        outcome: None,
        stored: StoredState {
            status: AdminStatus::Submitted,
            delivery_status: Some(delivery),
            current_operation_id: Some(operation_id.clone()),
            last_sequence: FIRST_EVENTS,
        },
    };
    let (source, actor) = match new.content.channel.operator_id.as_str() {
        "" => (EventSource::Applicant, "applicant".to_string()),
        op => (EventSource::Operator, op.to_string()),
    };
    let mut submitted = EventDraft::status(
        source,
        &actor,
        AdminStatus::Submitted,
        AdminStatus::Submitted,
    );
    submitted.from_status = None;
    submitted.occurred_at = Some(new.received_at);
    let reason = if claim {
        format!(
            "attempt 1 of {} to adapter {}",
            new.max_attempts, new.adapter
        )
    } else {
        format!("to adapter {}", new.adapter)
    };
    let delivered = EventDraft::delivery(EventSource::Hub, "hub", None, delivery).reason(reason);
    append_events(conn, &mut st, vec![submitted, delivered], new.received_at)?;
    let job = claim.then_some(ClaimedJob {
        operation_id,
        practice_id: new.id.clone(),
        tenant_id: new.tenant_id.clone(),
        adapter: new.adapter.clone(),
        operation: Operation::Submit,
        attempt: 1,
        max_attempts: new.max_attempts,
        traceparent: new.traceparent.clone(),
    });
    Ok((InsertOutcome::Created, job))
}

/// The columns a claim returns first, in this order, for
/// [`read_claimed_job`]; a claim of polls returns its own after them.
const CLAIMED_JOB_COLUMNS: &str =
    "operation_id, practice_id, tenant_id, adapter, operation, attempts, max_attempts, traceparent";

/// A claimed job as its claim returned it, before its operation is parsed.
struct ClaimedJobRow {
    operation_id: String,
    practice_id: String,
    tenant_id: String,
    adapter: String,
    operation: String,
    attempt: i64,
    max_attempts: i64,
    traceparent: Option<String>,
}

/// Reads the [`CLAIMED_JOB_COLUMNS`] at the start of a claim's row.
fn read_claimed_job(r: &Row<'_>) -> rusqlite::Result<ClaimedJobRow> {
    Ok(ClaimedJobRow {
        operation_id: r.get(0)?,
        practice_id: r.get(1)?,
        tenant_id: r.get(2)?,
        adapter: r.get(3)?,
        operation: r.get(4)?,
        attempt: r.get(5)?,
        max_attempts: r.get(6)?,
        traceparent: r.get(7)?,
    })
}

impl ClaimedJobRow {
    fn into_job(self) -> Result<ClaimedJob, StoreError> {
        Ok(ClaimedJob {
            operation: parse("operation", &self.operation)?,
            operation_id: self.operation_id,
            practice_id: self.practice_id,
            tenant_id: self.tenant_id,
            adapter: self.adapter,
            attempt: self.attempt as u32,
            max_attempts: self.max_attempts as u32,
            traceparent: self.traceparent,
        })
    }
}

/// Marks up to `limit` due jobs of `adapter` in flight (delivery `SENT`).
fn claim_due(
    conn: &Connection,
    adapter: &str,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let rows = conn
        .prepare_cached(&format!(
            "UPDATE jobs SET state = 'in_flight', attempts = attempts + 1, updated_at = ?1
             WHERE operation_id IN (
                SELECT operation_id FROM jobs WHERE adapter = ?2 AND state = 'due' AND next_attempt_at <= ?1
                ORDER BY next_attempt_at LIMIT ?3)
             RETURNING {CLAIMED_JOB_COLUMNS}"
        ))?
        .query_map(params![ms(now), adapter, limit as i64], read_claimed_job)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        let job = row.into_job()?;
        let mut st = load_state(conn, &job.practice_id)?;
        if st.current_operation_id.as_deref() == Some(&job.operation_id) {
            let mut drafts = Vec::new();
            let draft =
                EventDraft::delivery(EventSource::Hub, &job.adapter, None, DeliveryStatus::Sent)
                    .reason(format!("attempt {} of {}", job.attempt, job.max_attempts));
            set_delivery(&mut st, DeliveryStatus::Sent, draft, &mut drafts)?;
            append_events(conn, &mut st, drafts, now)?;
        }
        jobs.push(job);
    }
    Ok(jobs)
}

/// The columns every practice read selects, in the order
/// [`read_practice_row`] reads them.
const PRACTICE_COLUMNS: &str = "p.id, p.tenant_id, p.service_code, p.idempotency_key, p.content, p.status, p.mode,
    p.delivery_status, p.current_operation_id, p.outcome_status, p.outcome_reason, p.outcome_vendor_code,
    p.received_at, p.legal_deadline, p.concluded_at,
    j.adapter AS job_adapter, j.operation AS job_operation, j.attempts AS job_attempts,
    j.next_attempt_at AS job_next_attempt_at, j.state AS job_state, j.last_error AS job_last_error,
    j.failure_class AS job_failure_class";

const PRACTICE_FROM: &str =
    "FROM practices p LEFT JOIN jobs j ON j.operation_id = p.current_operation_id";

/// A practice row as read, before parsing (rusqlite rows borrow the statement).
struct PracticeRow {
    id: String,
    tenant_id: String,
    service_code: String,
    idempotency_key: String,
    content: String,
    status: String,
    mode: String,
    delivery_status: Option<String>,
    current_operation_id: Option<String>,
    outcome_status: Option<String>,
    outcome_reason: Option<String>,
    outcome_vendor_code: Option<String>,
    received_at: i64,
    legal_deadline: Option<i64>,
    concluded_at: Option<i64>,
    job_adapter: Option<String>,
    job_operation: Option<String>,
    job_attempts: Option<i64>,
    job_next_attempt_at: Option<i64>,
    job_state: Option<String>,
    job_last_error: Option<String>,
    job_failure_class: Option<String>,
}

/// Reads the columns of [`PRACTICE_COLUMNS`] by position: looking columns up
/// by name compares every name of the row for each one, which was a fifth of
/// the time of a folder listing.
fn read_practice_row(r: &Row<'_>) -> rusqlite::Result<PracticeRow> {
    Ok(PracticeRow {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        service_code: r.get(2)?,
        idempotency_key: r.get(3)?,
        content: r.get(4)?,
        status: r.get(5)?,
        mode: r.get(6)?,
        delivery_status: r.get(7)?,
        current_operation_id: r.get(8)?,
        outcome_status: r.get(9)?,
        outcome_reason: r.get(10)?,
        outcome_vendor_code: r.get(11)?,
        received_at: r.get(12)?,
        legal_deadline: r.get(13)?,
        concluded_at: r.get(14)?,
        job_adapter: r.get(15)?,
        job_operation: r.get(16)?,
        job_attempts: r.get(17)?,
        job_next_attempt_at: r.get(18)?,
        job_state: r.get(19)?,
        job_last_error: r.get(20)?,
        job_failure_class: r.get(21)?,
    })
}

fn practice_from_row(row: PracticeRow) -> Result<Practice, StoreError> {
    let content: PracticeContent = serde_json::from_str(&row.content)
        .map_err(|e| StoreError::Corrupt(format!("practice content: {e}")))?;
    let delivery = match (row.delivery_status.as_deref(), row.current_operation_id) {
        (Some(status), Some(operation_id)) => {
            // A polled result shows its next poll.
            let due = matches!(row.job_state.as_deref(), Some("due" | "polling"));
            Some(DeliveryView {
                status: parse("delivery_status", status)?,
                operation_id,
                operation: parse(
                    "operation",
                    row.job_operation.as_deref().unwrap_or("submit"),
                )?,
                adapter: row.job_adapter.unwrap_or_default(),
                attempts: row.job_attempts.unwrap_or(0) as u32,
                next_attempt_at: if due {
                    row.job_next_attempt_at.map(from_ms)
                } else {
                    None
                },
                last_error: row.job_last_error,
                failure_class: row.job_failure_class,
            })
        }
        _ => None,
    };
    let outcome = row
        .outcome_status
        .as_deref()
        .map(|s| -> Result<Outcome, StoreError> {
            Ok(Outcome {
                status: parse("outcome_status", s)?,
                reason: row.outcome_reason.clone(),
                vendor_code: row.outcome_vendor_code.clone(),
                documents: Vec::new(),
            })
        })
        .transpose()?;
    Ok(Practice {
        id: row.id,
        tenant_id: row.tenant_id,
        service_code: row.service_code,
        idempotency_key: row.idempotency_key,
        content,
        attachments: Vec::new(),
        status: parse("status", &row.status)?,
        mode: parse_mode(&row.mode),
        delivery,
        outcome,
        external_refs: Vec::new(),
        received_at: from_ms(row.received_at),
        legal_deadline: row.legal_deadline.map(from_ms),
        concluded_at: row.concluded_at.map(from_ms),
    })
}

/// An event row as read, before parsing.
type EventRow = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    String,
    String,
    [Option<String>; 4],
    Option<String>,
    Option<String>,
    String,
);

const EVENT_COLUMNS: &str = "cursor, practice_id, tenant_id, service_code, applicant_id, sequence, occurred_at,
    recorded_at, source, kind, from_status, to_status, from_delivery, to_delivery, reason, vendor_code, actor";

fn read_event_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        [r.get(10)?, r.get(11)?, r.get(12)?, r.get(13)?],
        r.get(14)?,
        r.get(15)?,
        r.get(16)?,
    ))
}

fn event_from_row(row: EventRow) -> Result<Event, StoreError> {
    let (
        cursor,
        practice_id,
        tenant_id,
        service_code,
        applicant_id,
        sequence,
        occurred,
        recorded,
        source,
        kind,
    ) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9,
    );
    let [from_status, to_status, from_delivery, to_delivery] = row.10;
    Ok(Event {
        cursor,
        practice_id,
        tenant_id,
        service_code,
        applicant_id,
        sequence,
        occurred_at: from_ms(occurred),
        recorded_at: from_ms(recorded),
        source: EventSource::parse(&source)
            .ok_or_else(|| StoreError::Corrupt("event source".into()))?,
        kind: EventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt("event kind".into()))?,
        from_status: from_status
            .as_deref()
            .map(|s| parse("from_status", s))
            .transpose()?,
        to_status: to_status
            .as_deref()
            .map(|s| parse("to_status", s))
            .transpose()?,
        from_delivery: from_delivery
            .as_deref()
            .map(|s| parse("from_delivery", s))
            .transpose()?,
        to_delivery: to_delivery
            .as_deref()
            .map(|s| parse("to_delivery", s))
            .transpose()?,
        reason: row.11,
        vendor_code: row.12,
        actor: row.13,
    })
}

/// Runs a query whose SQL is built at runtime with positional values:
/// `read` copies each row out of SQLite, `parse` turns it into a domain value.
fn query_all<R, T>(
    conn: &Connection,
    sql: &str,
    values: &[SqlValue],
    read: fn(&Row<'_>) -> rusqlite::Result<R>,
    parse: fn(R) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt
        .query_map(params_from_iter(values.iter()), read)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(parse).collect()
}

fn query_events(
    conn: &Connection,
    sql: &str,
    values: &[SqlValue],
) -> Result<Vec<Event>, StoreError> {
    query_all(conn, sql, values, read_event_row, event_from_row)
}

/// Fills attachments, outcome documents and references of `practices`
/// with two queries in all (not two per practice: lists stay fast).
fn attach_details(
    conn: &Connection,
    practices: &mut [Practice],
    with_content: bool,
) -> Result<(), StoreError> {
    if practices.is_empty() {
        return Ok(());
    }
    let index: std::collections::HashMap<String, usize> = practices
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.clone(), i))
        .collect();
    let ids: Vec<SqlValue> = practices
        .iter()
        .map(|p| SqlValue::Text(p.id.clone()))
        .collect();
    let marks = vec!["?"; ids.len()].join(", ");
    let content = if with_content {
        "content"
    } else {
        "X'' AS content"
    };
    let sql = format!(
        "SELECT practice_id, role, name, media_type, size_bytes, sha256, {content} FROM documents
         WHERE practice_id IN ({marks}) ORDER BY practice_id, role, position"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let docs = stmt
        .query_map(params_from_iter(ids.iter()), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                Document {
                    meta: DocumentMeta {
                        name: r.get(2)?,
                        media_type: r.get(3)?,
                        size_bytes: r.get::<_, i64>(4)? as u64,
                        sha256: r.get(5)?,
                    },
                    content: r.get(6)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (practice_id, role, doc) in docs {
        // Bytes changed on disk since they were stored must not reach a
        // vendor or a citizen as if they were the original.
        if with_content && sha256_hex(&doc.content) != doc.meta.sha256 {
            return Err(StoreError::Corrupt(format!(
                "document '{}' of practice {practice_id} fails its SHA-256 check",
                doc.meta.name
            )));
        }
        let Some(&i) = index.get(&practice_id) else {
            continue;
        };
        let p = &mut practices[i];
        match role.as_str() {
            "attachment" => p.attachments.push(doc),
            _ => match p.outcome.as_mut() {
                Some(o) => o.documents.push(doc),
                // Documents reported before the conclusion (a receipt):
                // visible, with the practice's current status.
                None => {
                    p.outcome = Some(Outcome {
                        status: p.status,
                        reason: None,
                        vendor_code: None,
                        documents: vec![doc],
                    })
                }
            },
        }
    }
    let sql = format!(
        "SELECT practice_id, kind, value, system, issued_at FROM external_refs
         WHERE practice_id IN ({marks}) ORDER BY practice_id, issued_at, kind"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let refs = stmt
        .query_map(params_from_iter(ids.iter()), |r| {
            Ok((
                r.get::<_, String>(0)?,
                ExternalRef {
                    kind: r.get(1)?,
                    value: r.get(2)?,
                    system: r.get(3)?,
                    issued_at: r.get::<_, Option<i64>>(4)?.map(from_ms),
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (practice_id, r) in refs {
        if let Some(&i) = index.get(&practice_id) {
            practices[i].external_refs.push(r);
        }
    }
    Ok(())
}

/// The query of a page of practices, newest first, and its values.
fn list_query(filter: &PracticeFilter, after: Option<&str>, limit: u32) -> (String, Vec<SqlValue>) {
    let mut sql = format!("SELECT {PRACTICE_COLUMNS} {PRACTICE_FROM} WHERE p.tenant_id = ?");
    let mut values = vec![SqlValue::Text(filter.tenant_id.clone())];
    let mut add = |clause: &str, v: SqlValue| {
        sql.push_str(clause);
        values.push(v);
    };
    if let Some(a) = &filter.applicant_id {
        add(
            " AND p.applicant_id = ?",
            SqlValue::Text(a.to_ascii_uppercase()),
        );
    }
    if let Some(s) = &filter.service_code {
        add(" AND p.service_code = ?", SqlValue::Text(s.clone()));
    }
    if let Some(s) = filter.status {
        add(" AND p.status = ?", SqlValue::Text(s.as_str().into()));
    }
    if let Some(t) = filter.submitted_from {
        add(" AND p.received_at >= ?", SqlValue::Integer(ms(t)));
    }
    if let Some(t) = filter.submitted_to {
        add(" AND p.received_at < ?", SqlValue::Integer(ms(t)));
    }
    if let Some(after) = after {
        add(" AND p.id < ?", SqlValue::Text(after.to_string()));
    }
    add(
        " ORDER BY p.id DESC LIMIT ?",
        SqlValue::Integer(limit as i64),
    );
    (sql, values)
}

fn get_practice(
    conn: &Connection,
    tenant_id: &str,
    id: &str,
    with_content: bool,
) -> Result<Practice, StoreError> {
    let sql =
        format!("SELECT {PRACTICE_COLUMNS} {PRACTICE_FROM} WHERE p.tenant_id = ?1 AND p.id = ?2");
    let row = conn
        .prepare_cached(&sql)?
        .query_row([tenant_id, id], read_practice_row)
        .optional()?
        .ok_or(StoreError::NotFound)?;
    let mut practices = [practice_from_row(row)?];
    attach_details(conn, &mut practices, with_content)?;
    let [p] = practices;
    Ok(p)
}

/// The practice as the writer's open transaction has it (attachment
/// metadata only), if `wanted`: the reply to a submission. Read here and
/// not on a reader: every commit leaves a reader's page cache stale (SQLite
/// resets it at the next read transaction), so a read right after the
/// commit fetched every page again with a `pread`, while the writer has
/// them all in its cache.
fn read_back_if(
    wanted: bool,
    conn: &Connection,
    tenant_id: &str,
    id: &str,
) -> Result<Option<Practice>, StoreError> {
    wanted
        .then(|| get_practice(conn, tenant_id, id, false))
        .transpose()
}

const DEAD_LETTER_SQL: &str =
    "SELECT j.operation_id, j.practice_id, j.tenant_id, p.service_code, j.adapter,
    j.operation, j.attempts, j.last_error, j.failure_class, j.updated_at
    FROM jobs j JOIN practices p ON p.id = j.practice_id";

fn read_dead_letter(r: &Row<'_>) -> rusqlite::Result<(DeadLetter, String)> {
    Ok((
        DeadLetter {
            operation_id: r.get(0)?,
            practice_id: r.get(1)?,
            tenant_id: r.get(2)?,
            service_code: r.get(3)?,
            adapter: r.get(4)?,
            operation: Operation::Submit,
            attempts: r.get::<_, i64>(6)? as u32,
            last_error: r.get(7)?,
            failure_class: r.get(8)?,
            dead_lettered_at: from_ms(r.get(9)?),
        },
        r.get(5)?,
    ))
}

fn dead_letter((mut dl, operation): (DeadLetter, String)) -> Result<DeadLetter, StoreError> {
    dl.operation = parse("operation", &operation)?;
    Ok(dl)
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_practice(
        &self,
        new: NewPractice,
        read_back: bool,
    ) -> Result<(InsertOutcome, Option<Practice>), StoreError> {
        let content = content_json(&new)?;
        self.write(move |conn| {
            let (outcome, _) = insert_new(conn, &new, &content, false)?;
            let created = matches!(outcome, InsertOutcome::Created);
            let stored = read_back_if(created && read_back, conn, &new.tenant_id, &new.id)?;
            Ok((outcome, stored))
        })
        .await
    }

    async fn insert_practice_claimed(
        &self,
        new: NewPractice,
    ) -> Result<(InsertOutcome, Option<ClaimedJob>), StoreError> {
        let content = content_json(&new)?;
        self.write(move |conn| insert_new(conn, &new, &content, true))
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
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<ClaimedWork, StoreError> {
        let adapter = adapter.to_string();
        self.write(move |conn| {
            let polls = follow_up::claim(conn, &adapter, now, limit)?;
            let left = limit - polls.len() as u32;
            let jobs = if left == 0 {
                Vec::new()
            } else {
                claim_due(conn, &adapter, now, left)?
            };
            Ok(ClaimedWork { polls, jobs })
        })
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
    ) -> Result<Option<Practice>, StoreError> {
        let job = job.clone();
        self.write(move |conn| {
            let now = Utc::now();
            let mut st = load_state(conn, &job.practice_id)?;
            let current = st.current_operation_id.as_deref() == Some(&job.operation_id);
            let actor = job.adapter.as_str();
            let mut drafts = Vec::new();
            let set_job = |state: &str, next: Option<DateTime<Utc>>, err: Option<&raccordo_adapters::DeliveryError>| {
                conn.prepare_cached(
                    "UPDATE jobs SET state = ?1, next_attempt_at = COALESCE(?2, next_attempt_at),
                        last_error = ?3, failure_class = ?4, updated_at = ?5 WHERE operation_id = ?6",
                )?
                .execute(params![
                    state,
                    next.map(ms),
                    err.map(|e| e.reason.clone()),
                    err.map(|e| e.class.as_str()),
                    ms(now),
                    job.operation_id,
                ])
            };
            match &result {
                AttemptResult::Delivered(reply) if reply.follow_up.is_some() => {
                    // Accepted; the result comes from polling. The delivery
                    // stays SENT until the vendor's outcome is in.
                    follow_up::start(conn, &job, reply, now)?;
                    let accepted = VendorReply {
                        follow_up: None,
                        ..reply.clone()
                    };
                    apply_reply(conn, &mut st, &accepted, actor, now, &mut drafts)?;
                }
                AttemptResult::Delivered(_) | AttemptResult::Rejected(_) => {
                    let err = match &result {
                        AttemptResult::Rejected(e) => Some(e),
                        _ => None,
                    };
                    set_job("done", None, err)?;
                    if current {
                        let mut draft =
                            EventDraft::delivery(EventSource::Adapter, actor, None, DeliveryStatus::Acknowledged);
                        draft.vendor_code = match &result {
                            AttemptResult::Delivered(r) => r.vendor_code.clone(),
                            AttemptResult::Rejected(e) => e.vendor_code.clone(),
                            AttemptResult::Failed(..) => None,
                        };
                        set_delivery(&mut st, DeliveryStatus::Acknowledged, draft, &mut drafts)?;
                    }
                    let reply = match &result {
                        AttemptResult::Delivered(reply) => reply.clone(),
                        // A refusal on the merits is the practice's outcome.
                        AttemptResult::Rejected(e) | AttemptResult::Failed(e, _) => VendorReply {
                            status: Some(AdminStatus::Rejected),
                            vendor_code: e.vendor_code.clone(),
                            reason: Some(e.reason.clone()),
                            ..VendorReply::default()
                        },
                    };
                    if job.operation == Operation::Submit {
                        apply_reply(conn, &mut st, &reply, actor, now, &mut drafts)?;
                    } else {
                        // A withdrawal's answer only adds references: the status
                        // is already WITHDRAWN.
                        let refs_only = VendorReply {
                            external_refs: reply.external_refs.clone(),
                            ..VendorReply::default()
                        };
                        apply_reply(conn, &mut st, &refs_only, actor, now, &mut drafts)?;
                    }
                }
                AttemptResult::Failed(err, RetryDecision::RetryAfter(delay)) => {
                    let next = now + Duration::from_std(*delay).unwrap_or_else(|_| Duration::hours(1));
                    set_job("due", Some(next), Some(err))?;
                    if current {
                        let to = if err.class == raccordo_adapters::FailureClass::OutcomeUnknown {
                            DeliveryStatus::OutcomeUnknown
                        } else {
                            DeliveryStatus::Retrying
                        };
                        let mut draft = EventDraft::delivery(EventSource::Adapter, actor, None, to).reason(format!(
                            "attempt {} of {} failed ({}): {}; next attempt at {}",
                            job.attempt,
                            job.max_attempts,
                            err.class,
                            err.reason,
                            next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        ));
                        draft.vendor_code = err.vendor_code.clone();
                        set_delivery(&mut st, to, draft, &mut drafts)?;
                    }
                }
                AttemptResult::Failed(err, RetryDecision::DeadLetter) => {
                    set_job("dead", None, Some(err))?;
                    if current {
                        let mut draft =
                            EventDraft::delivery(EventSource::Adapter, actor, None, DeliveryStatus::DeadLettered)
                                .reason(format!(
                                    "attempt {} of {} failed ({}): {}",
                                    job.attempt, job.max_attempts, err.class, err.reason
                                ));
                        draft.vendor_code = err.vendor_code.clone();
                        set_delivery(&mut st, DeliveryStatus::DeadLettered, draft, &mut drafts)?;
                    }
                }
            }
            append_events(conn, &mut st, drafts, now)?;
            read_back_if(read_back, conn, &job.tenant_id, &job.practice_id)
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
        self.write(move |conn| {
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

    async fn apply_inbound(&self, result: &InboundResult) -> Result<InboundOutcome, StoreError> {
        let result = result.clone();
        self.write(move |conn| {
            let now = Utc::now();
            // A vendor reports only on what was sent to it: every lookup is
            // confined to the receiving adapter instance's own deliveries and
            // references, so one vendor's secret cannot touch another's practices.
            let adapter = result.adapter.as_str();
            let (sql, values): (&str, Vec<&str>) = match &result.correlation {
                Correlation::PracticeId(id) => (
                    "SELECT p.id, p.tenant_id FROM practices p WHERE p.id = ?1
                     AND EXISTS (SELECT 1 FROM jobs j WHERE j.practice_id = p.id AND j.adapter = ?2)",
                    vec![id, adapter],
                ),
                Correlation::OperationId(op) => (
                    "SELECT practice_id, tenant_id FROM jobs WHERE operation_id = ?1 AND adapter = ?2",
                    vec![op, adapter],
                ),
                Correlation::ExternalRef { kind, value } => (
                    "SELECT practice_id, tenant_id FROM external_refs
                     WHERE kind = ?1 AND value = ?2 AND system = ?3",
                    vec![kind, value, adapter],
                ),
            };
            let found: Vec<(String, String)> = conn
                .prepare_cached(sql)?
                .query_map(params_from_iter(values), |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let found: Vec<_> = found
                .into_iter()
                .filter(|(_, t)| result.tenant_id.as_deref().is_none_or(|want| want == t))
                .collect();
            let (practice_id, tenant_id) = match found.as_slice() {
                [] => return Err(StoreError::NotFound),
                [one] => one.clone(),
                _ => {
                    return Err(StoreError::Conflict(format!(
                        "{} practices match this correlation; the result names no tenant",
                        found.len()
                    )));
                }
            };
            if let Some(receipt) = &result.receipt {
                let fresh = conn
                    .prepare_cached(
                        "INSERT OR IGNORE INTO inbound_receipts (adapter, receipt, tenant_id, practice_id, received_at)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![result.adapter, receipt, tenant_id, practice_id, ms(now)])?;
                if fresh == 0 {
                    return Ok(InboundOutcome::Duplicate);
                }
            }
            let mut st = load_state(conn, &practice_id)?;
            let mut drafts = Vec::new();
            apply_reply(conn, &mut st, &result.reply, &result.adapter, now, &mut drafts)?;
            append_events(conn, &mut st, drafts, now)?;
            Ok(InboundOutcome::Applied)
        })
        .await
    }

    async fn withdraw(&self, w: Withdrawal) -> Result<Option<String>, StoreError> {
        self.write(move |conn| {
            let now = Utc::now();
            let tenant: Option<String> = conn
                .prepare_cached("SELECT tenant_id FROM practices WHERE id = ?1")?
                .query_row([&w.practice_id], |r| r.get(0))
                .optional()?;
            if tenant.as_deref() != Some(w.tenant_id.as_str()) {
                return Err(StoreError::NotFound);
            }
            let mut st = load_state(conn, &w.practice_id)?;
            if st.status.is_terminal() {
                return Err(StoreError::Conflict(format!(
                    "the practice is already {}: it can no longer be withdrawn",
                    st.status
                )));
            }
            let mut drafts = Vec::new();
            let mut status = w.draft_actor.clone();
            status.kind = EventKind::StatusChanged;
            status.from_status = Some(st.status);
            status.to_status = Some(AdminStatus::Withdrawn);
            status.reason = w.reason.clone();
            drafts.push(status);
            st.status = AdminStatus::Withdrawn;
            st.outcome = Some(OutcomeUpdate {
                concluded_at: Some(ms(now)),
                terminal: true,
                reason: w.reason.clone(),
                ..OutcomeUpdate::default()
            });

            // The pending submission, if any: a never-sent one is simply
            // cancelled (the vendor never saw it); one that may have arrived
            // is cancelled and the withdrawal forwarded.
            let mut vendor_may_know = false;
            if let Some(op) = st.current_operation_id.clone() {
                let job: Option<(String, i64)> = conn
                    .prepare_cached("SELECT state, attempts FROM jobs WHERE operation_id = ?1")?
                    .query_row([&op], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                match job {
                    Some((state, attempts)) if state == "due" || state == "dead" || state == "polling" => {
                        vendor_may_know = attempts > 0;
                        conn.prepare_cached(
                            "UPDATE jobs SET state = 'cancelled', updated_at = ?1 WHERE operation_id = ?2",
                        )?
                        .execute(params![ms(now), op])?;
                        let draft = EventDraft::delivery(EventSource::Hub, "hub", None, DeliveryStatus::Cancelled)
                            .reason("the practice was withdrawn");
                        set_delivery(&mut st, DeliveryStatus::Cancelled, draft, &mut drafts)?;
                    }
                    Some(_) => vendor_may_know = true,
                    None => {}
                }
            }
            let mut new_job = None;
            if let Some((adapter, max_attempts)) = w.forward_to.clone().filter(|_| vendor_may_know) {
                let op = uuid::Uuid::now_v7().to_string();
                let job = NewJob {
                    operation_id: &op,
                    adapter: &adapter,
                    operation: Operation::Withdraw,
                    max_attempts,
                    traceparent: w.traceparent.as_deref(),
                };
                insert_job(conn, &mut st, job, now)?;
                // A new delivery starts: its status is not a transition of the previous one.
                st.delivery_status = None;
                let draft = EventDraft::delivery(EventSource::Hub, "hub", None, DeliveryStatus::Queued)
                    .reason(format!("withdrawal to adapter {adapter}"));
                set_delivery(&mut st, DeliveryStatus::Queued, draft, &mut drafts)?;
                new_job = Some(adapter);
            }
            append_events(conn, &mut st, drafts, now)?;
            Ok(new_job)
        })
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
        self.write(move |conn| {
            let now = Utc::now();
            let (state, practice_id, operation): (String, String, String) = conn
                .prepare_cached(
                    "SELECT state, practice_id, operation FROM jobs WHERE operation_id = ?1",
                )?
                .query_row([&operation_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?
                .ok_or(StoreError::NotFound)?;
            if state != "dead" {
                return Err(StoreError::Conflict(format!(
                    "delivery {operation_id} is not dead-lettered (it is {state})"
                )));
            }
            let mut st = load_state(conn, &practice_id)?;
            if operation == "submit" && st.status.is_terminal() {
                return Err(StoreError::Conflict(format!(
                    "the practice is already {}: its submission will not be sent again",
                    st.status
                )));
            }
            conn.prepare_cached(
                "UPDATE jobs SET state = 'due', attempts = 0, next_attempt_at = ?1, updated_at = ?1
                 WHERE operation_id = ?2",
            )?
            .execute(params![ms(now), operation_id])?;
            let mut drafts = Vec::new();
            if st.current_operation_id.as_deref() == Some(operation_id.as_str()) {
                let draft = EventDraft::delivery(
                    EventSource::Operator,
                    &actor,
                    None,
                    DeliveryStatus::Queued,
                )
                .reason("replayed by an operator");
                set_delivery(&mut st, DeliveryStatus::Queued, draft, &mut drafts)?;
            }
            append_events(conn, &mut st, drafts, now)?;
            let dl = conn
                .prepare_cached(&format!("{DEAD_LETTER_SQL} WHERE j.operation_id = ?1"))?
                .query_row([&operation_id], read_dead_letter)?;
            dead_letter(dl)
        })
        .await
    }

    async fn recover_in_flight(&self) -> Result<usize, StoreError> {
        self.write(|conn| {
            let now = Utc::now();
            let rows: Vec<(String, String, String)> = conn
                .prepare_cached(
                    "UPDATE jobs SET state = 'due', next_attempt_at = ?1, updated_at = ?1 WHERE state = 'in_flight'
                     RETURNING operation_id, practice_id, adapter",
                )?
                .query_map([ms(now)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            // An interrupted poll only asked; it is simply asked again.
            conn.prepare_cached(
                "UPDATE jobs SET state = 'polling', next_attempt_at = ?1, updated_at = ?1 WHERE state = 'poll_in_flight'",
            )?
            .execute([ms(now)])?;
            let recovered = rows.len();
            for (op, practice_id, adapter) in rows {
                let mut st = load_state(conn, &practice_id)?;
                if st.current_operation_id.as_deref() == Some(op.as_str()) {
                    let mut drafts = Vec::new();
                    let draft = EventDraft::delivery(EventSource::Hub, &adapter, None, DeliveryStatus::OutcomeUnknown)
                        .reason("the hub stopped during the attempt: re-sending with the same operation id");
                    set_delivery(&mut st, DeliveryStatus::OutcomeUnknown, draft, &mut drafts)?;
                    append_events(conn, &mut st, drafts, now)?;
                }
            }
            Ok(recovered)
        })
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
        self.read(move |conn| {
            let now_ms = ms(now);
            let mut adapters: Vec<AdapterBacklog> = Vec::new();
            let mut stmt = conn.prepare_cached(
                "SELECT adapter, state, next_attempt_at <= ?1 AS ready, COUNT(*), MIN(next_attempt_at)
                 FROM jobs WHERE state IN ('due', 'in_flight', 'dead')
                 GROUP BY adapter, state, ready ORDER BY adapter",
            )?;
            let rows = stmt.query_map([now_ms], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })?;
            for row in rows {
                let (adapter, state, ready, count, oldest) = row?;
                if adapters.last().is_none_or(|a| a.adapter != adapter) {
                    adapters.push(AdapterBacklog {
                        adapter,
                        ..Default::default()
                    });
                }
                let entry = adapters.last_mut().expect("pushed above");
                match (state.as_str(), ready) {
                    ("due", true) => {
                        entry.due += count;
                        entry.oldest_due_age = Some(std::time::Duration::from_millis(
                            (now_ms - oldest).max(0) as u64,
                        ));
                    }
                    ("due", false) => entry.scheduled += count,
                    ("in_flight", _) => entry.in_flight += count,
                    _ => entry.dead += count,
                }
            }
            let practices = conn
                .prepare_cached(
                    "SELECT tenant_id, service_code, status, COUNT(*) FROM practices
                     GROUP BY tenant_id, service_code, status",
                )?
                .query_map([], |r| {
                    Ok(PracticeCount {
                        tenant: r.get(0)?,
                        service: r.get(1)?,
                        status: r.get(2)?,
                        count: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let past_deadline = conn
                .prepare_cached(
                    "SELECT tenant_id, service_code, COUNT(*) FROM practices
                     WHERE concluded_at IS NULL AND legal_deadline IS NOT NULL AND legal_deadline < ?1
                     GROUP BY tenant_id, service_code",
                )?
                .query_map([now_ms], |r| {
                    Ok(PracticeCount {
                        tenant: r.get(0)?,
                        service: r.get(1)?,
                        status: String::new(),
                        count: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let file_len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len() as i64);
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            let store_bytes = file_len(&path) + file_len(Path::new(&wal));
            Ok(OpsSnapshot {
                adapters,
                practices,
                past_deadline,
                store_bytes,
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), Synchronous::Normal, 2)
            .await
            .unwrap();
        store
            .write(|c| Ok(c.execute_batch("CREATE TABLE scratch (x INTEGER NOT NULL)")?))
            .await
            .unwrap();
        (dir, store)
    }

    fn new_practice(id: &str, key: &str) -> NewPractice {
        use crate::domain::practice::PracticeContent;
        use raccordo_adapters::model::{Applicant, ChannelInfo, Person, Subject};
        NewPractice {
            id: id.into(),
            tenant_id: "016024".into(),
            service_code: "TARI".into(),
            idempotency_key: key.into(),
            content_hash: "h".into(),
            content: PracticeContent {
                applicant: Applicant {
                    subject: Subject::Person(Person {
                        fiscal_code: "RSSMRA45D25F205N".into(),
                        given_name: "Mario".into(),
                        family_name: "Rossi".into(),
                    }),
                    contacts: Default::default(),
                },
                submitter: None,
                channel: ChannelInfo::default(),
                data: Default::default(),
            },
            attachments: Vec::new(),
            mode: Mode::Deferred,
            received_at: Utc::now(),
            legal_term_days: 30,
            adapter: "tributi".into(),
            max_attempts: 3,
            traceparent: None,
        }
    }

    /// Each read runs in a read transaction of its own; one that fails must
    /// still end it, or its pooled connection would keep answering from
    /// the old snapshot.
    #[tokio::test]
    async fn a_failed_read_leaves_no_snapshot_behind() {
        let (_dir, store) = store().await;
        let missing = store.get_practice("016024", "p1", false).await;
        assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
        store
            .insert_practice(new_practice("p1", "k1"), false)
            .await
            .unwrap();
        let found = store.get_practice("016024", "p1", false).await.unwrap();
        assert_eq!(found.id, "p1");
    }

    /// A store publishing its events, and a subscriber to them.
    async fn observed_store() -> (
        tempfile::TempDir,
        SqliteStore,
        tokio::sync::broadcast::Receiver<Arc<Event>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let bus = EventBus::new();
        let live = bus.subscribe();
        let store = SqliteStore::open_observed(
            &dir.path().join("t.db"),
            Synchronous::Normal,
            2,
            None,
            Some(bus.clone()),
        )
        .await
        .unwrap();
        (dir, store, live)
    }

    /// Every event of the tenant's store was published once, as stored, in
    /// cursor order; returns how many.
    async fn assert_published_as_stored(
        store: &SqliteStore,
        live: &mut tokio::sync::broadcast::Receiver<Arc<Event>>,
    ) -> usize {
        let filter = EventFilter {
            tenant_id: "016024".into(),
            ..Default::default()
        };
        let stored = store.events_after(&filter, 0, 1000).await.unwrap();
        for expected in &stored {
            let published = live.try_recv().expect("every stored event is published");
            assert_eq!(*published, *expected, "published once, as stored");
        }
        assert!(live.try_recv().is_err(), "nothing else is published");
        stored.len()
    }

    /// Audit records of tenant 016024, oldest first.
    fn audit_records(path: &Path) -> Vec<AuditRecord> {
        SqliteStore::export_audit(
            path,
            "016024",
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn records_of_events_stored_before_the_chain_moved_to_the_events_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            // As the schema before events carried their audit links left it:
            // the event's record is a copy in audit_log.
            let mut conn = Connection::open(&path).unwrap();
            schema::migrate_up_to(&mut conn, 5).unwrap();
            let detail = audit::EventAudit {
                sequence: 1,
                source: "APPLICANT",
                from_status: None,
                to_status: Some("SUBMITTED"),
                from_delivery: None,
                to_delivery: None,
                reason: None,
                vendor_code: None,
            };
            audit::append(
                &conn,
                "016024",
                "applicant",
                "status",
                Some("p-old"),
                &detail,
                Utc::now(),
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, Synchronous::Normal, 2)
            .await
            .unwrap();
        store
            .insert_practice(new_practice("p-new", "k-new"), false)
            .await
            .unwrap();

        let (checked, breaks) = SqliteStore::verify_audit(&path, None).unwrap();
        assert_eq!(breaks, Vec::new());
        assert_eq!(
            checked, 3,
            "the old record and the new practice's two events"
        );
        let records = audit_records(&path);
        let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(records[0].practice_id.as_deref(), Some("p-old"));
        assert_eq!(records[1].practice_id.as_deref(), Some("p-new"));
        assert_eq!(records[1].prev_hash, records[0].hash);
        assert_eq!(records[1].detail["to_status"], "SUBMITTED");
        let in_log: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(in_log, 1, "new events are not copied into audit_log");
    }

    #[tokio::test]
    async fn an_edited_or_removed_event_breaks_its_tenants_chain() {
        let (dir, store) = store().await;
        let path = dir.path().join("t.db");
        store
            .insert_practice(new_practice("p-1", "k-1"), false)
            .await
            .unwrap();
        store
            .insert_practice(new_practice("p-2", "k-2"), false)
            .await
            .unwrap();
        assert_eq!(
            SqliteStore::verify_audit(&path, None).unwrap(),
            (4, Vec::new())
        );

        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE events SET to_delivery = 'ACKNOWLEDGED' WHERE audit_seq = 4",
            [],
        )
        .unwrap();
        let (_, breaks) = SqliteStore::verify_audit(&path, Some("016024")).unwrap();
        assert_eq!(breaks.len(), 1);
        assert_eq!(breaks[0].seq, 4);
        assert!(breaks[0].reason.contains("edited"), "{breaks:?}");

        conn.execute("DELETE FROM events WHERE audit_seq = 2", [])
            .unwrap();
        let (_, breaks) = SqliteStore::verify_audit(&path, Some("016024")).unwrap();
        assert_eq!(breaks.len(), 1);
        assert_eq!(breaks[0].seq, 3);
        assert_eq!(breaks[0].reason, "record 2 is missing (found 3 next)");
    }

    #[tokio::test]
    async fn every_listing_walks_an_index_newest_first_without_sorting() {
        let (dir, _store) = store().await;
        let conn = open_read_only(&dir.path().join("t.db")).unwrap();
        let tenant = PracticeFilter {
            tenant_id: "016024".into(),
            ..Default::default()
        };
        let filters = [
            (tenant.clone(), "practices_by_tenant"),
            (
                PracticeFilter {
                    applicant_id: Some("RSSMRA45D25F205N".into()),
                    ..tenant.clone()
                },
                "practices_by_applicant",
            ),
            (
                PracticeFilter {
                    service_code: Some("TARI".into()),
                    ..tenant.clone()
                },
                "practices_by_service",
            ),
            (
                PracticeFilter {
                    status: Some(AdminStatus::Submitted),
                    ..tenant.clone()
                },
                "practices_by_status",
            ),
        ];
        for (filter, index) in filters {
            for after in [None, Some("0190a1b2-0000-7000-8000-000000000000")] {
                let (sql, values) = list_query(&filter, after, 100);
                let plan: Vec<String> = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .unwrap()
                    .query_map(params_from_iter(values.iter()), |r| r.get::<_, String>(3))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                let plan = plan.join("; ");
                assert!(
                    plan.contains(&format!("SEARCH p USING INDEX {index}")),
                    "{plan}"
                );
                assert!(!plan.contains("TEMP B-TREE"), "{plan}");
            }
        }
    }

    #[tokio::test]
    async fn committed_events_are_published_in_order_with_their_stored_cursors() {
        let (dir, store, mut live) = observed_store().await;
        // Audit records share the transaction; they must not shift cursors.
        store
            .record_audit(AuditEntry {
                tenant_id: Some("016024".into()),
                actor: "intruder".into(),
                action: "call_denied".into(),
                practice_id: None,
                detail: serde_json::json!({}),
            })
            .await
            .unwrap();
        // Concurrent inserts share transactions; a failing one (a duplicate
        // id) is rolled back with its events, which must not be published.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let store = store.clone();
            let id = if i == 7 {
                "p-0".to_string()
            } else {
                format!("p-{i}")
            };
            tasks.spawn(async move {
                store
                    .insert_practice(new_practice(&id, &format!("k-{i}")), false)
                    .await
            });
        }
        let mut failed = 0;
        while let Some(r) = tasks.join_next().await {
            failed += r.unwrap().is_err() as usize;
        }
        assert_eq!(failed, 1, "the duplicate id fails alone");
        assert_eq!(assert_published_as_stored(&store, &mut live).await, 19 * 2);
        // The audit chain stays whole across shared transactions, the
        // rolled-back command included, and its head matches.
        let (checked, breaks) = SqliteStore::verify_audit(&dir.path().join("t.db"), None).unwrap();
        assert_eq!(checked, 1 + 19 * 2);
        assert!(breaks.is_empty(), "{breaks:?}");
    }

    /// A command that fails after writing rolls its whole batch back, and
    /// the others run again: their events and audit records must be
    /// stored, and published, once.
    #[tokio::test]
    async fn commands_run_again_after_a_rollback_publish_and_audit_once() {
        let (dir, store, mut live) = observed_store().await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40 {
            let store = store.clone();
            tasks.spawn(async move {
                if i % 2 == 0 {
                    store
                        .insert_practice(new_practice(&format!("p-{i}"), &format!("k-{i}")), false)
                        .await
                        .map(|_| ())
                } else {
                    store
                        .write(move |c| {
                            c.execute(
                                "UPDATE practices SET status = 'REJECTED' WHERE id = ?1",
                                [format!("p-{}", i - 1)],
                            )?;
                            c.execute("INSERT INTO practices (id) VALUES (NULL)", [])?;
                            Ok(())
                        })
                        .await
                }
            });
        }
        let mut failed = 0;
        while let Some(r) = tasks.join_next().await {
            failed += r.unwrap().is_err() as usize;
        }
        assert_eq!(failed, 20, "every command that wrote and then failed");
        let rejected: i64 = store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*) FROM practices WHERE status = 'REJECTED'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(rejected, 0, "the failed commands' first writes are undone");
        assert_eq!(assert_published_as_stored(&store, &mut live).await, 20 * 2);
        let (checked, breaks) = SqliteStore::verify_audit(&dir.path().join("t.db"), None).unwrap();
        assert_eq!(checked, 20 * 2);
        assert!(breaks.is_empty(), "{breaks:?}");
    }

    #[tokio::test]
    async fn the_log_is_checkpointed_into_the_database_by_its_own_thread() {
        let (dir, store) = store().await;
        let db = dir.path().join("t.db");
        let before = std::fs::metadata(&db).unwrap().len();
        // Well over the 1,000-frame threshold of WAL pages.
        for batch in 0..20 {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..100 {
                let store = store.clone();
                let n = batch * 100 + i;
                tasks.spawn(async move {
                    store
                        .insert_practice(new_practice(&format!("p-{n}"), &format!("k-{n}")), false)
                        .await
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.unwrap().unwrap();
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::metadata(&db).unwrap().len() <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file never received the logged pages"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn an_adapter_cannot_report_on_another_adapters_practice() {
        use raccordo_adapters::model::ExternalRef;
        let (_dir, store) = store().await;
        let created = store
            .insert_practice(new_practice("p-1", "k-1"), false)
            .await
            .unwrap();
        let (InsertOutcome::Created, None) = created else {
            panic!("a new practice")
        };
        let reply = VendorReply {
            status: Some(AdminStatus::Registered),
            external_refs: vec![ExternalRef {
                kind: "protocol".into(),
                value: "P-1".into(),
                system: String::new(),
                issued_at: None,
            }],
            ..Default::default()
        };
        let result = |adapter: &str, correlation: Correlation| InboundResult {
            adapter: adapter.into(),
            tenant_id: None,
            correlation,
            reply: reply.clone(),
            receipt: None,
        };
        // Another vendor, even knowing the practice id, finds nothing.
        let foreign = store
            .apply_inbound(&result("anagrafe", Correlation::PracticeId("p-1".into())))
            .await;
        assert!(matches!(foreign, Err(StoreError::NotFound)), "{foreign:?}");
        let outcome = store
            .apply_inbound(&result("tributi", Correlation::PracticeId("p-1".into())))
            .await
            .unwrap();
        assert_eq!(outcome, InboundOutcome::Applied);
        // The reference the vendor gave is its own: only it can use it.
        let by_ref = || Correlation::ExternalRef {
            kind: "protocol".into(),
            value: "P-1".into(),
        };
        let foreign = store.apply_inbound(&result("anagrafe", by_ref())).await;
        assert!(matches!(foreign, Err(StoreError::NotFound)), "{foreign:?}");
        store
            .apply_inbound(&result("tributi", by_ref()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_failing_command_is_rolled_back_without_failing_its_batch() {
        let (_dir, store) = store().await;
        let mut tasks = Vec::new();
        for i in 0..200i64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .write(move |c| {
                        c.execute("INSERT INTO scratch (x) VALUES (?1)", [i])?;
                        if i % 3 == 0 {
                            // Wrote, then failed: its write must vanish.
                            return Err(StoreError::Conflict(format!("refused {i}")));
                        }
                        Ok(i)
                    })
                    .await
            }));
        }
        let mut ok = 0;
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(v) => {
                    assert_eq!(v, i as i64);
                    ok += 1;
                }
                Err(StoreError::Conflict(m)) => assert_eq!(m, format!("refused {i}")),
                Err(other) => panic!("unexpected {other}"),
            }
        }
        let (rows, refused): (i64, i64) = store
            .read(|c| {
                Ok(c.query_row(
                    "SELECT COUNT(*), COUNT(CASE WHEN x % 3 = 0 THEN 1 END) FROM scratch",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(rows, ok);
        assert_eq!(refused, 0);
    }

    /// On a full disk or an I/O error SQLite rolls the whole transaction
    /// back by itself; the other commands of the batch must run again in a
    /// new one, not commit one statement at a time.
    #[tokio::test]
    async fn a_transaction_sqlite_rolled_back_is_run_again() {
        let (_dir, store) = store().await;
        let mut tasks = Vec::new();
        for i in 0..40i64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .write(move |c| {
                        if i == 20 {
                            // What SQLite does on SQLITE_FULL.
                            c.execute_batch("ROLLBACK")?;
                            return Err(StoreError::Full("disk full".into()));
                        }
                        c.execute("INSERT INTO scratch (x) VALUES (?1)", [i])?;
                        Ok(())
                    })
                    .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let result = t.await.unwrap();
            assert_eq!(result.is_err(), i == 20, "command {i}: {result:?}");
        }
        let rows: i64 = store
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM scratch", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(rows, 39);
    }

    #[tokio::test]
    async fn a_panicking_command_does_not_stop_the_writer() {
        let (_dir, store) = store().await;
        let err = store
            .write(|_c| -> Result<(), StoreError> { panic!("bug in an operation") })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        store
            .write(|c| Ok(c.execute("INSERT INTO scratch (x) VALUES (1)", [])?))
            .await
            .unwrap();
    }
}
