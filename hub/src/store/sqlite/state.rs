//! Loading what planners read of a practice, and persisting the plan they
//! return: the only place the SQLite store writes a practice's change.

use super::audit;
use super::pending;
use super::rows::{from_ms, ms, parse};
use crate::domain::practice::{Event, EventDraft};
use crate::store::StoreError;
use crate::store::outcome_data;
use chrono::{DateTime, Utc};
use raccordo_adapters::model::AdminStatus;
use raccordo_domain::audit::{
    EVENT_FORMAT, REFERENCES_ACTION, ReferenceRecord, outcome_data_digest, references_detail,
};
use raccordo_domain::plan::{ErrorChange, JobUpdate, NewJob, OutcomeChange, Plan, PracticeState};
use raccordo_domain::status::DeliveryStatus;
use rusqlite::{Connection, OptionalExtension, params};

/// A practice as loaded for a change: its identity, its event count, and
/// the state planners read (also as stored, to write only what changed).
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
}

/// Loads practice `practice_id` for a change.
pub(super) fn load(conn: &Connection, practice_id: &str) -> Result<Loaded, StoreError> {
    let row = conn
        .prepare_cached(
            "SELECT id, tenant_id, service_code, applicant_id, status, delivery_status, current_operation_id,
                    last_sequence, legal_term_days, outcome_data
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
                r.get::<_, Option<String>>(9)?,
            ))
        })
        .optional()?
        .ok_or(StoreError::NotFound)?;
    Ok(Loaded {
        id: row.0,
        tenant_id: row.1,
        service_code: row.2,
        applicant_id: row.3,
        last_sequence: row.7,
        stored_sequence: row.7,
        state: PracticeState {
            status: parse("status", &row.4)?,
            delivery_status: row
                .5
                .as_deref()
                .map(|s| parse("delivery_status", s))
                .transpose()?,
            current_operation_id: row.6,
            legal_term_days: row.8 as u32,
            outcome_data: outcome_data::decode(row.9.as_deref(), "practices.outcome_data")?,
        },
    })
}

/// Persists `plan` for the practice `loaded`, inside the caller's
/// transaction: the job's change, a new job, references, documents, the
/// events (each linked into the tenant's audit chain) and the practice's
/// changed columns, in one UPDATE. Returns the events as stored; they are
/// published after the commit.
pub(super) fn persist(
    conn: &Connection,
    loaded: &mut Loaded,
    plan: Plan,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    if let Some(job) = &plan.job {
        update_job(conn, job, now)?;
    }
    if let Some(job) = &plan.new_job {
        insert_job(conn, loaded, job, now)?;
    }
    // The references added (one already stored is kept as it was) are
    // recorded in the audit trail with the change.
    let mut added = Vec::new();
    for r in &plan.references {
        let inserted = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO external_refs (practice_id, tenant_id, kind, value, system, issued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                loaded.id,
                loaded.tenant_id,
                r.kind,
                r.value,
                r.system,
                r.issued_at.map(ms),
            ])?;
        if inserted > 0 {
            added.push(ReferenceRecord::new(
                &r.kind,
                &r.value,
                &r.system,
                r.issued_at.map(ms),
            ));
        }
    }
    for doc in &plan.documents {
        // The same document reported twice (a re-sent result) is stored once.
        conn.prepare_cached(
            "INSERT INTO documents (practice_id, tenant_id, role, position, name, media_type, size_bytes, sha256, content)
             SELECT ?1, ?2, 'outcome', COALESCE(MAX(position), -1) + 1, ?3, ?4, ?5, ?6, ?7
             FROM documents WHERE practice_id = ?1 AND role = 'outcome'
             HAVING NOT EXISTS (SELECT 1 FROM documents WHERE practice_id = ?1 AND role = 'outcome' AND sha256 = ?6)",
        )?
        .execute(params![
            loaded.id,
            loaded.tenant_id,
            doc.meta.name,
            doc.meta.media_type,
            doc.meta.size_bytes as i64,
            doc.meta.sha256,
            doc.content,
        ])?;
    }
    let events = append_events(conn, loaded, plan.events, now)?;
    if !added.is_empty() {
        audit::append_raw(
            conn,
            &loaded.tenant_id,
            "hub",
            REFERENCES_ACTION,
            Some(&loaded.id),
            references_detail(&added),
            now,
        )?;
    }
    save_practice(conn, loaded, plan.state, plan.outcome)?;
    Ok(events)
}

/// Writes the practice's columns that the plan changed, in one statement.
/// Each UPDATE rewrites the whole row, content included: only when needed.
fn save_practice(
    conn: &Connection,
    loaded: &mut Loaded,
    after: PracticeState,
    outcome: Option<OutcomeChange>,
) -> Result<(), StoreError> {
    let unchanged = after == loaded.state && loaded.last_sequence == loaded.stored_sequence;
    if unchanged && outcome.is_none() {
        return Ok(());
    }
    let delivery = after.delivery_status.map(DeliveryStatus::as_str);
    // Written only when a result changed it (NULL keeps the column).
    let data = (after.outcome_data != loaded.state.outcome_data)
        .then(|| outcome_data::encode(&after.outcome_data))
        .flatten();
    match outcome {
        // The status index is left alone when the status stays.
        None if after.status == loaded.state.status => conn
            .prepare_cached(
                "UPDATE practices SET delivery_status = ?1, current_operation_id = ?2, last_sequence = ?3,
                    outcome_data = COALESCE(?5, outcome_data)
                 WHERE id = ?4",
            )?
            .execute(params![
                delivery,
                after.current_operation_id,
                loaded.last_sequence,
                loaded.id,
                data,
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
                    outcome_vendor_code = CASE WHEN ?7 THEN ?9 ELSE outcome_vendor_code END,
                    outcome_data = COALESCE(?11, outcome_data)
                 WHERE id = ?10",
            )?
            .execute(params![
                after.status.as_str(),
                delivery,
                after.current_operation_id,
                loaded.last_sequence,
                outcome.legal_deadline.map(ms),
                outcome.concluded_at.map(ms),
                outcome.terminal,
                outcome.reason,
                outcome.vendor_code,
                loaded.id,
                data,
            ])?
        }
    };
    loaded.state = after;
    loaded.stored_sequence = loaded.last_sequence;
    Ok(())
}

fn update_job(conn: &Connection, job: &JobUpdate, now: DateTime<Utc>) -> Result<(), StoreError> {
    // 0: keep the error, 1: clear it, 2: set it.
    let (error_change, reason, class) = match &job.error {
        ErrorChange::Keep => (0, None, None),
        ErrorChange::Clear => (1, None, None),
        ErrorChange::Set { reason, class } => (2, Some(reason.as_str()), Some(class.as_str())),
    };
    conn.prepare_cached(
        "UPDATE jobs SET state = ?1, next_attempt_at = COALESCE(?2, next_attempt_at),
            last_error = CASE ?3 WHEN 0 THEN last_error WHEN 1 THEN NULL ELSE ?4 END,
            failure_class = CASE ?3 WHEN 0 THEN failure_class WHEN 1 THEN NULL ELSE ?5 END,
            attempts = CASE WHEN ?6 THEN 0 ELSE attempts END,
            follow_up = COALESCE(?7, follow_up),
            follow_up_polls = CASE WHEN ?7 IS NULL THEN follow_up_polls ELSE 0 END,
            follow_up_deadline = COALESCE(?8, follow_up_deadline),
            updated_at = ?9,
            lease_owner = CASE WHEN ?1 IN ('in_flight', 'poll_in_flight') THEN lease_owner END,
            lease_expires_at = CASE WHEN ?1 IN ('in_flight', 'poll_in_flight') THEN lease_expires_at END
         WHERE operation_id = ?10",
    )?
    .execute(params![
        job.state.as_str(),
        job.next_attempt_at.map(ms),
        error_change,
        reason,
        class,
        job.reset_attempts,
        job.poll.as_ref().map(|p| p.token.as_str()),
        job.poll.as_ref().map(|p| ms(p.deadline)),
        ms(now),
        job.operation_id,
    ])?;
    Ok(())
}

fn insert_job(
    conn: &Connection,
    loaded: &Loaded,
    job: &NewJob,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO jobs (operation_id, practice_id, tenant_id, adapter, operation, state, attempts,
            max_attempts, next_attempt_at, created_at, updated_at, traceparent)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)",
    )?
    .execute(params![
        job.operation_id,
        loaded.id,
        loaded.tenant_id,
        job.adapter,
        job.operation.as_str(),
        job.state.as_str(),
        job.attempts as i64,
        job.max_attempts as i64,
        ms(job.next_attempt_at),
        ms(now),
        job.traceparent,
    ])?;
    Ok(())
}

/// Appends events with the next sequence numbers and returns them as
/// stored.
fn append_events(
    conn: &Connection,
    loaded: &mut Loaded,
    drafts: Vec<EventDraft>,
    now: DateTime<Utc>,
) -> Result<Vec<Event>, StoreError> {
    if drafts.is_empty() {
        return Ok(Vec::new());
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO events (practice_id, tenant_id, service_code, applicant_id, sequence, occurred_at,
            recorded_at, source, kind, from_status, to_status, from_delivery, to_delivery, reason,
            vendor_code, actor, audit_seq, audit_prev_hash, audit_hash, audit_format, outcome_data)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
    )?;
    // Returned and published as stored (milliseconds): a live watcher and
    // one replaying from the store must see the same event.
    let now = from_ms(ms(now));
    let mut out = Vec::with_capacity(drafts.len());
    for d in drafts {
        loaded.last_sequence += 1;
        let occurred = from_ms(ms(d.occurred_at.unwrap_or(now)));
        let data = d.outcome_data.as_ref().and_then(outcome_data::encode);
        // The event is its own audit record: linked into the tenant's chain
        // here, stored with the row.
        let link = audit::link_event(
            conn,
            &loaded.tenant_id,
            &d.actor,
            d.kind.as_str(),
            &loaded.id,
            &audit::EventAudit {
                sequence: loaded.last_sequence,
                source: d.source.as_str(),
                from_status: d.from_status.map(AdminStatus::as_str),
                to_status: d.to_status.map(AdminStatus::as_str),
                from_delivery: d.from_delivery.map(DeliveryStatus::as_str),
                to_delivery: d.to_delivery.map(DeliveryStatus::as_str),
                reason: d.reason.as_deref(),
                vendor_code: d.vendor_code.as_deref(),
                format: None,
                service_code: None,
                applicant: None,
                outcome_data: data.as_deref().map(outcome_data_digest),
            }
            .in_format(
                Some(EVENT_FORMAT),
                &loaded.id,
                &loaded.service_code,
                &loaded.applicant_id,
            ),
            ms(now),
        )?;
        insert.execute(params![
            loaded.id,
            loaded.tenant_id,
            loaded.service_code,
            loaded.applicant_id,
            loaded.last_sequence,
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
            EVENT_FORMAT,
            data,
        ])?;
        out.push(Event {
            cursor: conn.last_insert_rowid(),
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
        });
    }
    pending::add_events(&out);
    Ok(out)
}
