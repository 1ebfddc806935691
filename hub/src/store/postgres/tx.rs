//! One transaction on one pooled connection, and what it settles only at
//! its end: the events it appended and the audit records it linked.
//!
//! Events get their cursor and their place in the tenant's audit chain at
//! the end of the transaction, just before COMMIT, under two locks taken in
//! a fixed order (the tenants' `audit_heads` rows, sorted, then the one
//! `event_cursor` row). Taken last, these locks are held only for the
//! commit, and a transaction holding them waits for no practice row, so
//! they add no lock cycle with the practice rows taken earlier.

use super::pool::{from_pg, is_retryable};
use crate::domain::practice::Event;
use crate::store::StoreError;
use deadpool_postgres::Object;
use raccordo_adapters::model::AdminStatus;
use raccordo_domain::audit::{EventAudit, GENESIS, next_link, record_hash};
use raccordo_domain::status::DeliveryStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

/// Statement parameters.
pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// What the transaction appends to an audit chain, linked at its end.
pub(super) enum Pending {
    /// A practice event (its cursor and audit link are set at the end).
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

impl Pending {
    fn tenant(&self) -> &str {
        match self {
            Pending::Event(e) => &e.tenant_id,
            Pending::Audit { tenant_id, .. } => tenant_id,
        }
    }
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
    /// Held from linking the events until they are published: this
    /// instance's watchers get them in commit order.
    publish: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// What a committed transaction publishes: its events, in cursor order,
/// and the turn that keeps publications in commit order until dropped.
pub(super) struct Committed {
    pub(super) events: Vec<Event>,
    pub(super) turn: Option<tokio::sync::OwnedMutexGuard<()>>,
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
    /// Committed (its events are returned for publication), or failed for good.
    Done(Result<(R, Committed), StoreError>),
    /// Failed in a way that running it again may fix.
    Retry(StoreError),
}

impl Tx {
    /// Begins a transaction on `client` (`begin` is `BEGIN …`).
    pub(super) async fn begin(
        client: Object,
        begin: &str,
        publish: Option<Arc<tokio::sync::Mutex<()>>>,
    ) -> Result<Self, StoreError> {
        let tx = Self {
            client: Some(client),
            retryable: AtomicBool::new(false),
            pending: Vec::new(),
            publish,
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

    /// Ends the transaction with `result`: links the pending records,
    /// commits, or rolls back.
    pub(super) async fn end<R>(mut self, result: Result<R, StoreError>) -> Ended<R> {
        let outcome = match result {
            Ok(value) => match self.link_pending().await {
                Ok(committed) => match self.client().batch_execute("COMMIT").await {
                    Ok(()) => Ok((value, committed)),
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

    /// Links every pending record into its tenant's chain and gives each
    /// event its cursor; returns the events as stored.
    async fn link_pending(&mut self) -> Result<Committed, StoreError> {
        if self.pending.is_empty() {
            return Ok(Committed {
                events: Vec::new(),
                turn: None,
            });
        }
        let pending = std::mem::take(&mut self.pending);
        let has_events = pending.iter().any(|p| matches!(p, Pending::Event(_)));
        // Taken before the database locks below, which every event-writing
        // transaction of every instance takes in the same order anyway.
        let turn = match (&self.publish, has_events) {
            (Some(lock), true) => Some(Arc::clone(lock).lock_owned().await),
            _ => None,
        };
        let mut tenants: Vec<&str> = pending.iter().map(Pending::tenant).collect();
        tenants.sort_unstable();
        tenants.dedup();
        // Each tenant's head, created if missing, then locked: concurrent
        // writers (other instances too) extend one chain. Sorted, so two
        // transactions touching the same tenants cannot wait on each other.
        let mut heads = std::collections::HashMap::new();
        for tenant in tenants {
            self.execute(
                "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2)
                 ON CONFLICT (tenant_id) DO NOTHING",
                &[&tenant, &GENESIS],
            )
            .await?;
            let row = self
                .query_one(
                    "SELECT seq, hash FROM audit_heads WHERE tenant_id = $1 FOR UPDATE",
                    &[&tenant],
                )
                .await?;
            let (seq, hash): (i64, String) = (col(&row, 0)?, col(&row, 1)?);
            // seq 0 is the row just created: an empty chain.
            heads.insert(tenant.to_string(), (seq > 0).then_some((seq, hash)));
        }
        let count = pending
            .iter()
            .filter(|p| matches!(p, Pending::Event(_)))
            .count() as i64;
        let mut cursor = 0;
        if count > 0 {
            let row = self
                .query_one(
                    "UPDATE event_cursor SET last = last + $1 RETURNING last",
                    &[&count],
                )
                .await?;
            let last: i64 = col(&row, 0)?;
            cursor = last - count;
        }
        let mut events = Vec::with_capacity(count as usize);
        for record in pending {
            let head = heads
                .get_mut(record.tenant())
                .expect("every tenant's head is loaded");
            let (seq, prev_hash) = next_link(head.take());
            match record {
                Pending::Event(mut e) => {
                    cursor += 1;
                    e.cursor = cursor;
                    let detail = EventAudit {
                        sequence: e.sequence,
                        source: e.source.as_str(),
                        from_status: e.from_status.map(AdminStatus::as_str),
                        to_status: e.to_status.map(AdminStatus::as_str),
                        from_delivery: e.from_delivery.map(DeliveryStatus::as_str),
                        to_delivery: e.to_delivery.map(DeliveryStatus::as_str),
                        reason: e.reason.as_deref(),
                        vendor_code: e.vendor_code.as_deref(),
                    }
                    .to_json();
                    let recorded_at = e.recorded_at.timestamp_millis();
                    let hash = record_hash(
                        &prev_hash,
                        &e.tenant_id,
                        seq,
                        recorded_at,
                        &e.actor,
                        e.kind.as_str(),
                        Some(&e.practice_id),
                        &detail,
                    );
                    self.execute(
                        "INSERT INTO events (cursor, practice_id, tenant_id, service_code, applicant_id,
                            sequence, occurred_at, recorded_at, source, kind, from_status, to_status,
                            from_delivery, to_delivery, reason, vendor_code, actor, audit_seq,
                            audit_prev_hash, audit_hash)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                            $16, $17, $18, $19, $20)",
                        &[
                            &e.cursor,
                            &e.practice_id,
                            &e.tenant_id,
                            &e.service_code,
                            &e.applicant_id,
                            &e.sequence,
                            &e.occurred_at.timestamp_millis(),
                            &recorded_at,
                            &e.source.as_str(),
                            &e.kind.as_str(),
                            &e.from_status.map(AdminStatus::as_str),
                            &e.to_status.map(AdminStatus::as_str),
                            &e.from_delivery.map(DeliveryStatus::as_str),
                            &e.to_delivery.map(DeliveryStatus::as_str),
                            &e.reason,
                            &e.vendor_code,
                            &e.actor,
                            &seq,
                            &prev_hash,
                            &hash,
                        ],
                    )
                    .await?;
                    *head = Some((seq, hash));
                    events.push(e);
                }
                Pending::Audit {
                    tenant_id,
                    recorded_at,
                    actor,
                    action,
                    practice_id,
                    detail,
                } => {
                    let hash = record_hash(
                        &prev_hash,
                        &tenant_id,
                        seq,
                        recorded_at,
                        &actor,
                        &action,
                        practice_id.as_deref(),
                        &detail,
                    );
                    self.execute(
                        "INSERT INTO audit_log (tenant_id, seq, recorded_at, actor, action, practice_id,
                            detail, prev_hash, hash)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        &[
                            &tenant_id,
                            &seq,
                            &recorded_at,
                            &actor,
                            &action,
                            &practice_id,
                            &detail,
                            &prev_hash,
                            &hash,
                        ],
                    )
                    .await?;
                    *head = Some((seq, hash));
                }
            }
        }
        for (tenant, head) in &heads {
            if let Some((seq, hash)) = head {
                self.execute(
                    "UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1",
                    &[tenant, seq, hash],
                )
                .await?;
            }
        }
        Ok(Committed { events, turn })
    }
}

/// Column `i` of `row`; a type that does not match the schema is corrupt data.
pub(super) fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}
