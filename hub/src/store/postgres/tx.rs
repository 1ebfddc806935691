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
use raccordo_adapters::model::AdminStatus;
use raccordo_domain::status::DeliveryStatus;
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
pub(super) struct Tx {
    client: Option<Object>,
    /// Whether the last failure is worth running the transaction again
    /// (a deadlock or serialization failure).
    retryable: AtomicBool,
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
    /// Begins a transaction on `client` (`begin` is `BEGIN …`).
    pub(super) async fn begin(client: Object, begin: &str) -> Result<Self, StoreError> {
        let tx = Self {
            client: Some(client),
            retryable: AtomicBool::new(false),
            pending: Vec::new(),
        };
        tx.client().batch_execute(begin).await.map_err(from_pg)?;
        Ok(tx)
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

    /// Every row of `sql`.
    pub(super) async fn query(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, StoreError> {
        let stmt = self.statement(sql).await?;
        self.client()
            .query(&stmt, params)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The row of `sql`, if any.
    pub(super) async fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, StoreError> {
        let stmt = self.statement(sql).await?;
        self.client()
            .query_opt(&stmt, params)
            .await
            .map_err(|e| self.fail(e))
    }

    /// The one row of `sql`.
    pub(super) async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, StoreError> {
        let stmt = self.statement(sql).await?;
        self.client()
            .query_one(&stmt, params)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Runs `sql`; returns how many rows it changed.
    pub(super) async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, StoreError> {
        let stmt = self.statement(sql).await?;
        self.client()
            .execute(&stmt, params)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Ends the transaction with `result`: writes the pending records,
    /// commits, or rolls back.
    pub(super) async fn end<R>(mut self, result: Result<R, StoreError>) -> Ended<R> {
        let outcome = match result {
            Ok(value) => match self.write_pending().await {
                Ok(appended) => match self.client().batch_execute("COMMIT").await {
                    Ok(()) => Ok((value, appended)),
                    Err(e) => Err(self.fail(e).context("commit failed")),
                },
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match outcome {
            Ok(done) => {
                self.release();
                Ended::Done(Ok(done))
            }
            Err(e) => {
                // A connection whose rollback fails is closed by Drop.
                if self.client().batch_execute("ROLLBACK").await.is_ok() {
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

    /// Writes the pending records: events without their cursor, audit
    /// records without their link. Both are given by the sequencer once
    /// this transaction committed; nothing shared is locked here, so
    /// writers of every instance commit side by side. Returns whether
    /// anything was written for the sequencer.
    async fn write_pending(&mut self) -> Result<bool, StoreError> {
        if self.pending.is_empty() {
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
        if !events.is_empty() {
            self.insert_events(&events).await?;
        }
        Ok(true)
    }

    /// Inserts `events` in one statement, in their order: ids (the
    /// sequencer's order) follow it, so a practice's events keep their
    /// sequence order in the cursor order.
    async fn insert_events(&self, events: &[Event]) -> Result<(), StoreError> {
        let text = |f: fn(&Event) -> &str| events.iter().map(f).collect::<Vec<&str>>();
        let opt = |f: fn(&Event) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
        let int = |f: fn(&Event) -> i64| events.iter().map(f).collect::<Vec<i64>>();
        self.execute(
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
            &[
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
            ],
        )
        .await?;
        Ok(())
    }
}

/// Column `i` of `row`; a type that does not match the schema is corrupt data.
pub(super) fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}
