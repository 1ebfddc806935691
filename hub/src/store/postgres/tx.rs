//! One transaction on one pooled connection, and what it writes only at
//! its end: the events it appended and the audit records of refused calls.
//!
//! They are written without their cursor and without their place in the
//! tenant's audit chain: both are given after the commit by the sequencer
//! (see `sequencer`), so an event-writing transaction takes no lock that
//! every other one needs, and commits of all instances run side by side.
//!
//! Writes whose result nobody reads (a job's or a practice's update) are
//! queued ([`Tx::execute_later`]) and sent in one flight with the next
//! statement that must be awaited, or with the commit: a transaction costs
//! the round trips of its reads, not one per statement.

use super::pool::{from_pg, is_retryable};
use crate::domain::practice::Event;
use crate::store::StoreError;
use deadpool_postgres::Object;
use deadpool_postgres::Pool;
use futures::future::try_join_all;
use raccordo_adapters::model::AdminStatus;
use raccordo_domain::status::DeliveryStatus;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

/// Statement parameters.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// An owned statement parameter, for a write sent later.
pub(super) type Owned = Box<dyn ToSql + Sync + Send>;

/// Owned parameters of a write sent later: `owned![a, b.clone(), …]`.
macro_rules! owned {
    ($($value:expr),* $(,)?) => {
        vec![$(Box::new($value) as $crate::store::postgres::tx::Owned),*]
    };
}
pub(super) use owned;

/// A write queued by [`Tx::execute_later`].
struct Queued {
    sql: String,
    params: Vec<Owned>,
}

/// What the transaction appends to an audit chain, written at its end.
pub(super) enum Pending {
    /// A practice event (its cursor and audit link are the sequencer's).
    Event(Event),
    /// A record of `audit_log` (a refused call).
    Audit {
        tenant_id: String,
        recorded_at: i64,
        actor: String,
        action: String,
        practice_id: Option<String>,
        detail: String,
    },
}

/// An open transaction. Dropped before it ended (its task cancelled), its
/// connection is closed rather than returned to the pool, so the server
/// rolls the transaction back and no later user inherits it.
///
/// Its `BEGIN` is sent with its first statement, and its `COMMIT` with its
/// last write (the events): each is a round trip to the server saved,
/// per transaction. A server processes a connection's messages in order,
/// so what is sent together runs as if each had been awaited in turn.
pub(super) struct Tx {
    client: Option<Object>,
    /// `BEGIN …`, sent ahead of the first statement.
    begin: &'static str,
    /// Whether `begin` was sent.
    begun: AtomicBool,
    /// Whether the last failure is worth running the transaction again
    /// (a deadlock or serialization failure).
    retryable: AtomicBool,
    /// Writes not sent yet: they go out, in this order, ahead of the next
    /// statement sent.
    queued: Mutex<Vec<Queued>>,
    /// Statements sent last, just before the `COMMIT` (after the events):
    /// a check that takes a lock every writer of the cluster waits for.
    at_commit: Mutex<Vec<Queued>>,
    pub(super) pending: Vec<Pending>,
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

/// How a transaction ended.
pub(super) enum Ended<R> {
    /// Committed (with whether it wrote records for the sequencer), or
    /// failed for good.
    Done(Result<(R, bool), StoreError>),
    /// Failed in a way that running it again may fix.
    Retry(StoreError),
}

impl Tx {
    /// A transaction on `client` (`begin` is `BEGIN …`), begun with its
    /// first statement.
    pub(super) fn new(client: Object, begin: &'static str) -> Self {
        Self {
            client: Some(client),
            begin,
            begun: AtomicBool::new(false),
            retryable: AtomicBool::new(false),
            queued: Mutex::new(Vec::new()),
            at_commit: Mutex::new(Vec::new()),
            pending: Vec::new(),
        }
    }

    /// Queues a write whose result nobody reads: it is sent, in order, with
    /// the next statement or the commit, and its failure is that
    /// statement's (the transaction is aborted either way).
    pub(super) fn execute_later(&self, sql: &str, params: Vec<Owned>) {
        self.lock_queue().push(Queued {
            sql: sql.to_string(),
            params,
        });
    }

    /// Queues a statement sent last, just before the `COMMIT`: one that
    /// takes a lock shared by many transactions (held to the commit), so
    /// that it is held for the server's work at the end only. Its failure
    /// fails the commit.
    pub(super) fn execute_at_commit(&self, sql: &str, params: Vec<Owned>) {
        lock(&self.at_commit).push(Queued {
            sql: sql.to_string(),
            params,
        });
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        lock(&self.queued)
    }

    fn has_queued(&self) -> bool {
        !self.lock_queue().is_empty() || !lock(&self.at_commit).is_empty()
    }

    /// Prepares `writes` (cached after a connection's first use).
    async fn prepare(
        &self,
        writes: &[Queued],
    ) -> Result<Vec<tokio_postgres::Statement>, StoreError> {
        let mut statements = Vec::with_capacity(writes.len());
        for w in writes {
            statements.push(self.statement(&w.sql).await?);
        }
        Ok(statements)
    }

    fn client(&self) -> &Object {
        self.client
            .as_ref()
            .expect("a transaction has its connection until it ends")
    }

    fn fail(&self, e: tokio_postgres::Error) -> StoreError {
        self.retryable.store(is_retryable(&e), Ordering::Relaxed);
        from_pg(e)
    }

    async fn statement(&self, sql: &str) -> Result<tokio_postgres::Statement, StoreError> {
        self.client()
            .prepare_cached(sql)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Awaits `request`, which sends its statements when first polled (so
    /// they must be prepared already). It is preceded, in the same flight,
    /// by the transaction's `BEGIN` if not yet sent and by the queued
    /// writes. Two sends of one transaction are never awaited together:
    /// one that waits to prepare a queued write would let the other
    /// overtake it; statements that go out together go in one send.
    async fn send<T>(
        &self,
        request: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let queued = std::mem::take(&mut *self.lock_queue());
        let statements = self.prepare(&queued).await?;
        let params = params_of(&queued);
        let writes = try_join_all(
            statements
                .iter()
                .zip(&params)
                .map(|(stmt, params)| self.client().execute(stmt, params)),
        );
        let begin = !self.begun.swap(true, Ordering::Relaxed);
        let begin = async {
            if begin {
                self.client().batch_execute(self.begin).await
            } else {
                Ok(())
            }
        };
        // Polled in this order the first time: sent in this order.
        futures::future::try_join3(begin, writes, request)
            .await
            .map(|(_, _, r)| r)
            .map_err(|e| self.fail(e))
    }

    /// Every row of `sql`.
    pub(super) async fn query(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, StoreError> {
        let stmt = self.statement(sql).await?;
        self.send(self.client().query(&stmt, params)).await
    }

    /// The row of `sql`, if any.
    pub(super) async fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        let stmt = self.statement(sql).await?;
        self.send(self.client().query_opt(&stmt, params)).await
    }

    /// The one row of `sql`.
    pub(super) async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, StoreError> {
        let stmt = self.statement(sql).await?;
        self.send(self.client().query_one(&stmt, params)).await
    }

    /// Runs `sql`; returns how many rows it changed.
    pub(super) async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        let stmt = self.statement(sql).await?;
        self.send(self.client().execute(&stmt, params)).await
    }

    /// The rows of each statement of `statements`, sent in one flight and
    /// run in this order: all are prepared before any is sent, so a later
    /// one sees what an earlier one did or waited for (a row lock).
    pub(super) async fn flight<const N: usize>(
        &self,
        statements: [(&str, Params<'_>); N],
    ) -> Result<[Vec<Row>; N], StoreError> {
        let rows = self.flight_all(&statements).await?;
        Ok(rows
            .try_into()
            .unwrap_or_else(|_| unreachable!("one result per statement")))
    }

    /// [`flight`](Self::flight) of any number of statements.
    pub(super) async fn flight_all(
        &self,
        statements: &[(&str, Params<'_>)],
    ) -> Result<Vec<Vec<Row>>, StoreError> {
        let mut prepared = Vec::with_capacity(statements.len());
        for (sql, _) in statements {
            prepared.push(self.statement(sql).await?);
        }
        let queries = try_join_all(
            prepared
                .iter()
                .zip(statements)
                .map(|(stmt, (_, params))| self.client().query(stmt, params)),
        );
        self.send(queries).await
    }

    /// Ends the transaction with `result`: writes the pending records,
    /// commits, or rolls back.
    pub(super) async fn end<R>(mut self, result: Result<R, StoreError>) -> Ended<R> {
        if !self.begun.load(Ordering::Relaxed) && self.pending.is_empty() && !self.has_queued() {
            // Nothing was sent: nothing to commit or roll back.
            self.release();
            return match result {
                Ok(value) => Ended::Done(Ok((value, false))),
                Err(e) => Ended::Done(Err(e)),
            };
        }
        let outcome = match result {
            Ok(value) => self
                .write_pending_and_commit()
                .await
                .map(|appended| (value, appended)),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(done) => {
                self.release();
                Ended::Done(Ok(done))
            }
            Err(e) => {
                // A connection whose rollback fails is closed by Drop.
                let begun = self.begun.load(Ordering::Relaxed);
                if !begun || self.client().batch_execute("ROLLBACK").await.is_ok() {
                    self.release();
                }
                if self.retryable.load(Ordering::Relaxed) {
                    Ended::Retry(e)
                } else {
                    Ended::Done(Err(e))
                }
            }
        }
    }

    /// Returns the connection to the pool.
    fn release(&mut self) {
        drop(self.client.take());
    }

    async fn commit(&self) -> Result<(), StoreError> {
        self.commit_after(futures::future::ok(())).await
    }

    /// Sends `last` (a statement's request, prepared), the statements
    /// queued to run at the commit, and the `COMMIT`, in one flight and in
    /// this order (after the queued writes, as every send).
    async fn commit_after(
        &self,
        last: impl Future<Output = Result<(), tokio_postgres::Error>>,
    ) -> Result<(), StoreError> {
        let at_commit = std::mem::take(&mut *lock(&self.at_commit));
        let statements = self.prepare(&at_commit).await?;
        let params = params_of(&at_commit);
        let checks = try_join_all(
            statements
                .iter()
                .zip(&params)
                .map(|(stmt, params)| self.client().execute(stmt, params)),
        );
        self.send(futures::future::try_join3(
            last,
            checks,
            self.client().batch_execute("COMMIT"),
        ))
        .await
        .map(|_| ())
        .map_err(|e| e.context("commit failed"))
    }

    /// Writes the pending records: events without their cursor, audit
    /// records without their link. Both are given by the sequencer once
    /// this transaction committed; nothing shared is locked here, so
    /// writers of every instance commit side by side. Then commits, the
    /// `COMMIT` sent with the events' insert. Returns whether anything was
    /// written for the sequencer.
    async fn write_pending_and_commit(&mut self) -> Result<bool, StoreError> {
        if self.pending.is_empty() {
            self.commit().await?;
            return Ok(false);
        }
        let pending = std::mem::take(&mut self.pending);
        let mut events = Vec::new();
        for record in pending {
            match record {
                Pending::Event(e) => events.push(e),
                Pending::Audit {
                    tenant_id,
                    recorded_at,
                    actor,
                    action,
                    practice_id,
                    detail,
                } => self.execute_later(
                    "INSERT INTO audit_log (tenant_id, recorded_at, actor, action, practice_id, detail)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    owned![tenant_id, recorded_at, actor, action, practice_id, detail],
                ),
            }
        }
        if events.is_empty() {
            self.commit().await?;
        } else {
            self.insert_events_and_commit(&events).await?;
        }
        Ok(true)
    }

    /// Inserts `events` in one statement, in their order: ids (the
    /// sequencer's order) follow it, so a practice's events keep their
    /// sequence order in the cursor order. The `COMMIT` goes with it: an
    /// insert that fails aborts the transaction, and the server then ends
    /// it with a rollback whatever the `COMMIT` says.
    async fn insert_events_and_commit(&self, events: &[Event]) -> Result<(), StoreError> {
        let text = |f: fn(&Event) -> &str| events.iter().map(f).collect::<Vec<&str>>();
        let opt = |f: fn(&Event) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
        let int = |f: fn(&Event) -> i64| events.iter().map(f).collect::<Vec<i64>>();
        let outcome_data: Vec<Option<String>> = events
            .iter()
            .map(|e| {
                e.outcome_data
                    .as_ref()
                    .and_then(crate::store::outcome_data::encode)
            })
            .collect();
        // Prepared first: both requests must leave at their first poll, in
        // this order.
        let insert = self
            .statement(
                "INSERT INTO events (practice_id, tenant_id, service_code, applicant_id, sequence,
                occurred_at, recorded_at, source, kind, from_status, to_status, from_delivery,
                to_delivery, reason, vendor_code, actor, outcome_data)
             SELECT practice_id, tenant_id, service_code, applicant_id, sequence, occurred_at,
                recorded_at, source, kind, from_status, to_status, from_delivery, to_delivery,
                reason, vendor_code, actor, outcome_data
             FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::BIGINT[],
                $7::BIGINT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[],
                $13::TEXT[], $14::TEXT[], $15::TEXT[], $16::TEXT[], $17::TEXT[])
                WITH ORDINALITY AS e(practice_id, tenant_id, service_code, applicant_id, sequence,
                    occurred_at, recorded_at, source, kind, from_status, to_status, from_delivery,
                    to_delivery, reason, vendor_code, actor, outcome_data, n)
             ORDER BY n",
            )
            .await?;
        let params: Params<'_> = &[
            &text(|e| e.practice_id.as_str()),
            &text(|e| e.tenant_id.as_str()),
            &text(|e| e.service_code.as_str()),
            &text(|e| e.applicant_id.as_str()),
            &int(|e| e.sequence),
            &int(|e| e.occurred_at.timestamp_millis()),
            &int(|e| e.recorded_at.timestamp_millis()),
            &text(|e| e.source.as_str()),
            &text(|e| e.kind.as_str()),
            &opt(|e| e.from_status.map(AdminStatus::as_str)),
            &opt(|e| e.to_status.map(AdminStatus::as_str)),
            &opt(|e| e.from_delivery.map(DeliveryStatus::as_str)),
            &opt(|e| e.to_delivery.map(DeliveryStatus::as_str)),
            &opt(|e| e.reason.as_deref()),
            &opt(|e| e.vendor_code.as_deref()),
            &text(|e| e.actor.as_str()),
            &outcome_data,
        ];
        // One flight: the insert, the checks at the commit, the `COMMIT`.
        let insert = self.client().execute(&insert, params);
        self.commit_after(async { insert.await.map(|_| ()) }).await
    }
}

/// Locks `m`; a panic while it was held left a whole vector behind.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The parameters of `writes`, as statements take them.
fn params_of(writes: &[Queued]) -> Vec<Vec<&(dyn ToSql + Sync)>> {
    writes
        .iter()
        .map(|w| w.params.iter().map(|p| p.as_ref() as _).collect())
        .collect()
}

/// The rows of one statement, outside any transaction: a statement sees
/// one snapshot of its own, and `BEGIN`/`COMMIT` around it would only add
/// two round trips.
pub(super) async fn read(
    pool: &Pool,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, StoreError> {
    let client = super::pool::connection(pool).await?;
    let stmt = client.prepare_cached(sql).await.map_err(from_pg)?;
    client.query(&stmt, params).await.map_err(from_pg)
}

/// Column `i` of `row`; a type that does not match the schema is corrupt data.
pub(super) fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}
