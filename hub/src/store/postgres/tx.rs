//! One transaction on one pooled connection, and what it writes only at
//! its end: the events it appended and the audit records of refused calls.
//!
//! They are written without their cursor and without their place in the
//! tenant's audit chain: both are given after the commit by the sequencer
//! (see `sequencer`), so an event-writing transaction takes no lock that
//! every other one needs, and commits of all instances run side by side.

use super::pool::{from_pg, is_retryable};
use crate::domain::practice::Event;
use crate::store::StoreError;
use deadpool_postgres::Object;
use deadpool_postgres::Pool;
use futures::future::try_join;
use raccordo_adapters::model::AdminStatus;
use raccordo_domain::status::DeliveryStatus;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

/// Statement parameters.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

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
    /// Whether the body chose to undo its work (see [`Tx::roll_back_at_end`]).
    roll_back: AtomicBool,
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
            roll_back: AtomicBool::new(false),
            pending: Vec::new(),
        }
    }

    /// Makes the transaction end with a rollback even if its body returns
    /// a value: for a body that finds, at its end, that what it wrote must
    /// not stand (and says so in that value).
    pub(super) fn roll_back_at_end(&self) {
        self.roll_back.store(true, Ordering::Relaxed);
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

    /// Awaits `request`, which sends its statement when first polled; the
    /// first one is preceded by the transaction's `BEGIN`, in the same
    /// flight. Statements issued together (`try_join`) go out together.
    async fn send<T>(
        &self,
        request: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        let result = if self.begun.swap(true, Ordering::Relaxed) {
            request.await
        } else {
            try_join(self.client().batch_execute(self.begin), request)
                .await
                .map(|((), r)| r)
        };
        result.map_err(|e| self.fail(e))
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

    /// Runs `first`, then `second`, whose one row it returns, in one flight:
    /// both are prepared before either is sent, so they leave, and run, in
    /// this order (`second` sees what `first` did or waited for).
    pub(super) async fn execute_then_query_one(
        &self,
        (first, first_params): (&str, Params<'_>),
        (second, second_params): (&str, Params<'_>),
    ) -> Result<Row, StoreError> {
        let (first, second) = (self.statement(first).await?, self.statement(second).await?);
        let (_, row) = try_join(
            self.send(self.client().execute(&first, first_params)),
            self.send(self.client().query_one(&second, second_params)),
        )
        .await?;
        Ok(row)
    }

    /// Ends the transaction with `result`: writes the pending records,
    /// commits, or rolls back.
    pub(super) async fn end<R>(mut self, result: Result<R, StoreError>) -> Ended<R> {
        if !self.begun.load(Ordering::Relaxed) && self.pending.is_empty() {
            // Nothing was sent: nothing to commit or roll back.
            self.release();
            return match result {
                Ok(value) => Ended::Done(Ok((value, false))),
                Err(e) => Ended::Done(Err(e)),
            };
        }
        let outcome = match result {
            Ok(value) if self.roll_back.load(Ordering::Relaxed) => {
                self.pending.clear();
                if self.client().batch_execute("ROLLBACK").await.is_ok() {
                    self.release();
                }
                return Ended::Done(Ok((value, false)));
            }
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
        self.send(self.client().batch_execute("COMMIT"))
            .await
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
                } => {
                    self.execute(
                        "INSERT INTO audit_log (tenant_id, recorded_at, actor, action, practice_id, detail)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                        &[&tenant_id, &recorded_at, &actor, &action, &practice_id, &detail],
                    )
                    .await?;
                }
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
        // Prepared first: both requests must leave at their first poll, in
        // this order.
        let insert = self
            .statement(
                "INSERT INTO events (practice_id, tenant_id, service_code, applicant_id, sequence,
                occurred_at, recorded_at, source, kind, from_status, to_status, from_delivery,
                to_delivery, reason, vendor_code, actor)
             SELECT practice_id, tenant_id, service_code, applicant_id, sequence, occurred_at,
                recorded_at, source, kind, from_status, to_status, from_delivery, to_delivery,
                reason, vendor_code, actor
             FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::BIGINT[], $6::BIGINT[],
                $7::BIGINT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[],
                $13::TEXT[], $14::TEXT[], $15::TEXT[], $16::TEXT[])
                WITH ORDINALITY AS e(practice_id, tenant_id, service_code, applicant_id, sequence,
                    occurred_at, recorded_at, source, kind, from_status, to_status, from_delivery,
                    to_delivery, reason, vendor_code, actor, n)
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
        ];
        try_join(
            self.send(self.client().execute(&insert, params)),
            self.commit(),
        )
        .await?;
        Ok(())
    }
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
