//! Loading what planners read of a practice (its row locked), and
//! persisting the plan they return: the only place the PostgreSQL store
//! writes a practice's change.

use super::tx::{Pending, Tx, col, owned};
use crate::domain::practice::{Event, EventDraft};
use crate::store::sqlite::rows::{from_ms, ms, parse};
use crate::store::{StoreError, outcome_data};
use chrono::{DateTime, Utc};
use raccordo_domain::audit::{REFERENCES_ACTION, ReferenceRecord, references_detail};
use raccordo_domain::plan::{ErrorChange, JobUpdate, NewJob, OutcomeChange, Plan, PracticeState};

/// A practice as loaded for a change (see the SQLite store's `Loaded`).
#[derive(Debug)]
pub(super) struct Loaded {
    pub id: String,
    pub tenant_id: String,
    pub service_code: String,
    pub applicant_id: String,
    /// The sequence of its last event (events appended since included).
    pub last_sequence: i64,
    /// `last_sequence` as the row holds it.
    pub stored_sequence: i64,
    pub state: PracticeState,
    /// The lease (owner, expiry in ms) a job this change stores in flight
    /// is taken under: a submission claiming its own delivery.
    pub new_job_lease: Option<(String, i64)>,
}

/// Loads practice `practice_id` for a change and locks its row until the
/// transaction ends: every change of one practice, from any instance, runs
/// after the one before it. `FOR NO KEY UPDATE` is the lock an UPDATE of
/// the row takes anyway; unlike `FOR UPDATE` it lets other transactions
/// insert rows that reference the practice (their foreign-key check).
pub(super) async fn load(tx: &Tx, practice_id: &str) -> Result<Loaded, StoreError> {
    let row = tx
        .query_opt(LOAD, &[&practice_id])
        .await?
        .ok_or(StoreError::NotFound)?;
    loaded(&row)
}

/// The statement of [`load`] (parameter: the practice's id), for a caller
/// that sends it in a flight with others; [`loaded`] reads its row.
pub(super) const LOAD: &str =
    "SELECT id, tenant_id, service_code, applicant_id, status, delivery_status, current_operation_id,
            last_sequence, legal_term_days, outcome_data
     FROM practices WHERE id = $1 FOR NO KEY UPDATE";

/// The practice in a row of [`LOAD`].
pub(super) fn loaded(row: &tokio_postgres::Row) -> Result<Loaded, StoreError> {
    let last_sequence: i64 = col(row, 7)?;
    let delivery: Option<String> = col(row, 5)?;
    Ok(Loaded {
        id: col(row, 0)?,
        tenant_id: col(row, 1)?,
        service_code: col(row, 2)?,
        applicant_id: col(row, 3)?,
        last_sequence,
        stored_sequence: last_sequence,
        state: PracticeState {
            status: parse("status", col::<&str>(row, 4)?)?,
            delivery_status: delivery
                .as_deref()
                .map(|s| parse("delivery_status", s))
                .transpose()?,
            current_operation_id: col(row, 6)?,
            legal_term_days: col::<i64>(row, 8)? as u32,
            outcome_data: outcome_data::decode(col(row, 9)?, "practices.outcome_data")?,
        },
        new_job_lease: None,
    })
}

/// Persists `plan` for the practice `loaded`, inside `tx`: the job's
/// change, a new job, references, documents, the events (linked into the
/// audit chain and given their cursors when the transaction ends) and the
/// practice's changed columns.
pub(super) async fn persist(
    tx: &mut Tx,
    loaded: &mut Loaded,
    plan: Plan,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if let Some(job) = &plan.job {
        update_job(tx, job, now);
    }
    if let Some(job) = &plan.new_job {
        insert_job(tx, loaded, job, now);
    }
    // The references added (one already stored is kept as it was) are
    // recorded in the audit trail with the change. One statement for all.
    if !plan.references.is_empty() {
        let refs = &plan.references;
        let kinds: Vec<&str> = refs.iter().map(|r| r.kind.as_str()).collect();
        let values: Vec<&str> = refs.iter().map(|r| r.value.as_str()).collect();
        let systems: Vec<&str> = refs.iter().map(|r| r.system.as_str()).collect();
        let issued: Vec<Option<i64>> = refs.iter().map(|r| r.issued_at.map(ms)).collect();
        let inserted = tx
            .query(
                "INSERT INTO external_refs (practice_id, tenant_id, kind, value, system, issued_at)
                 SELECT $1, $2, r.kind, r.value, r.system, r.issued_at
                 FROM unnest($3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[]) WITH ORDINALITY
                    AS r(kind, value, system, issued_at, n)
                 ORDER BY r.n
                 ON CONFLICT DO NOTHING
                 RETURNING kind, value, system, issued_at",
                &[
                    &loaded.id,
                    &loaded.tenant_id,
                    &kinds,
                    &values,
                    &systems,
                    &issued,
                ],
            )
            .await?;
        let mut added = Vec::with_capacity(inserted.len());
        for row in &inserted {
            added.push(ReferenceRecord::new(
                col(row, 0)?,
                col(row, 1)?,
                col(row, 2)?,
                col(row, 3)?,
            ));
        }
        if !added.is_empty() {
            tx.pending.push(Pending::Audit {
                tenant_id: loaded.tenant_id.clone(),
                recorded_at: ms(now),
                actor: "hub".into(),
                action: REFERENCES_ACTION.into(),
                practice_id: Some(loaded.id.clone()),
                detail: references_detail(&added),
            });
        }
    }
    for doc in &plan.documents {
        // The same document reported twice (a re-sent result) is stored
        // once; the practice's row lock orders concurrent reports.
        tx.execute_later(
            "INSERT INTO documents (practice_id, tenant_id, role, position, name, media_type, size_bytes, sha256, content)
             SELECT $1, $2, 'outcome', COALESCE(MAX(position), -1) + 1, $3, $4, $5, $6, $7
             FROM documents WHERE practice_id = $1 AND role = 'outcome'
             HAVING NOT EXISTS (SELECT 1 FROM documents WHERE practice_id = $1 AND role = 'outcome' AND sha256 = $6)",
            owned![
                loaded.id.clone(),
                loaded.tenant_id.clone(),
                doc.meta.name.clone(),
                doc.meta.media_type.clone(),
                doc.meta.size_bytes as i64,
                doc.meta.sha256.clone(),
                doc.content.clone(),
            ],
        );
    }
    append_events(tx, loaded, plan.events, now);
    save_practice(tx, loaded, plan.state, plan.outcome);
    Ok(())
}

/// Writes the practice's columns that the plan changed, in one statement
/// (sent with the transaction's next one).
fn save_practice(
    tx: &Tx,
    loaded: &mut Loaded,
    after: PracticeState,
    outcome: Option<OutcomeChange>,
) {
    let unchanged = after == loaded.state && loaded.last_sequence == loaded.stored_sequence;
    if unchanged && outcome.is_none() {
        return;
    }
    let delivery = after.delivery_status.map(|d| d.as_str().to_string());
    // Written only when a result changed it (NULL keeps the column).
    let data = (after.outcome_data != loaded.state.outcome_data)
        .then(|| outcome_data::encode(&after.outcome_data))
        .flatten();
    match outcome {
        None if after.status == loaded.state.status => {
            tx.execute_later(
                "UPDATE practices SET delivery_status = $1, current_operation_id = $2, last_sequence = $3,
                    outcome_data = COALESCE($5, outcome_data)
                 WHERE id = $4",
                owned![
                    delivery,
                    after.current_operation_id.clone(),
                    loaded.last_sequence,
                    loaded.id.clone(),
                    data,
                ],
            )
        }
        outcome => {
            let outcome = outcome.unwrap_or_default();
            tx.execute_later(
                "UPDATE practices SET status = $1, delivery_status = $2, current_operation_id = $3,
                    last_sequence = $4,
                    legal_deadline = COALESCE($5, legal_deadline),
                    concluded_at = COALESCE($6, concluded_at),
                    outcome_status = CASE WHEN $7 THEN $1 ELSE outcome_status END,
                    outcome_reason = CASE WHEN $7 THEN $8 ELSE outcome_reason END,
                    outcome_vendor_code = CASE WHEN $7 THEN $9 ELSE outcome_vendor_code END,
                    outcome_data = COALESCE($11, outcome_data)
                 WHERE id = $10",
                owned![
                    after.status.as_str().to_string(),
                    delivery,
                    after.current_operation_id.clone(),
                    loaded.last_sequence,
                    outcome.legal_deadline.map(ms),
                    outcome.concluded_at.map(ms),
                    outcome.terminal,
                    outcome.reason,
                    outcome.vendor_code,
                    loaded.id.clone(),
                    data,
                ],
            )
        }
    };
    loaded.state = after;
    loaded.stored_sequence = loaded.last_sequence;
}

/// Changes a job as planned (sent with the transaction's next statement).
fn update_job(tx: &Tx, job: &JobUpdate, now: DateTime<Utc>) {
    // 0: keep the error, 1: clear it, 2: set it.
    let (error_change, reason, class): (i64, Option<String>, Option<String>) = match &job.error {
        ErrorChange::Keep => (0, None, None),
        ErrorChange::Clear => (1, None, None),
        ErrorChange::Set { reason, class } => (2, Some(reason.clone()), Some(class.clone())),
    };
    tx.execute_later(
        "UPDATE jobs SET state = $1, next_attempt_at = COALESCE($2, next_attempt_at),
            last_error = CASE $3::BIGINT WHEN 0 THEN last_error WHEN 1 THEN NULL ELSE $4 END,
            failure_class = CASE $3::BIGINT WHEN 0 THEN failure_class WHEN 1 THEN NULL ELSE $5 END,
            attempts = CASE WHEN $6 THEN 0 ELSE attempts END,
            follow_up = COALESCE($7, follow_up),
            follow_up_polls = CASE WHEN $7::TEXT IS NULL THEN follow_up_polls ELSE 0 END,
            follow_up_deadline = COALESCE($8, follow_up_deadline),
            updated_at = $9,
            lease_owner = CASE WHEN $1 IN ('in_flight', 'poll_in_flight') THEN lease_owner END,
            lease_expires_at = CASE WHEN $1 IN ('in_flight', 'poll_in_flight') THEN lease_expires_at END
         WHERE operation_id = $10",
        owned![
            job.state.as_str().to_string(),
            job.next_attempt_at.map(ms),
            error_change,
            reason,
            class,
            job.reset_attempts,
            job.poll.as_ref().map(|p| p.token.clone()),
            job.poll.as_ref().map(|p| ms(p.deadline)),
            ms(now),
            job.operation_id.clone(),
        ],
    );
}

/// Stores a new job (sent with the transaction's next statement).
fn insert_job(tx: &Tx, loaded: &Loaded, job: &NewJob, now: DateTime<Utc>) {
    let (lease_owner, lease_expires_at) = loaded
        .new_job_lease
        .as_ref()
        .map(|(owner, until)| (Some(owner.clone()), Some(*until)))
        .unwrap_or_default();
    tx.execute_later(
        "INSERT INTO jobs (operation_id, practice_id, tenant_id, adapter, operation, state, attempts,
            max_attempts, next_attempt_at, created_at, updated_at, traceparent, lease_owner,
            lease_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13)",
        owned![
            job.operation_id.clone(),
            loaded.id.clone(),
            loaded.tenant_id.clone(),
            job.adapter.clone(),
            job.operation.as_str().to_string(),
            job.state.as_str().to_string(),
            job.attempts as i64,
            job.max_attempts as i64,
            ms(job.next_attempt_at),
            ms(now),
            job.traceparent.clone(),
            lease_owner,
            lease_expires_at,
        ],
    );
}

/// Queues events with the next sequence numbers; they are written, linked
/// and given cursors when the transaction ends.
fn append_events(tx: &mut Tx, loaded: &mut Loaded, drafts: Vec<EventDraft>, now: DateTime<Utc>) {
    // As stored (milliseconds): a live watcher and one replaying from the
    // store must see the same event.
    let now = from_ms(ms(now));
    for d in drafts {
        loaded.last_sequence += 1;
        let occurred = from_ms(ms(d.occurred_at.unwrap_or(now)));
        tx.pending.push(Pending::Event(Event {
            cursor: 0,
            practice_id: loaded.id.clone(),
            tenant_id: loaded.tenant_id.clone(),
            service_code: loaded.service_code.clone(),
            applicant_id: loaded.applicant_id.clone(),
            sequence: loaded.last_sequence,
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
            outcome_data: d.outcome_data,
        }));
    }
}
