//! Every change to a practice, as the writer runs it: load what the
//! planner reads, ask the domain's planner, persist its plan. No rule of
//! the domain is decided here.

use super::rows::{
    CLAIMED_JOB_COLUMNS, DEAD_LETTER_SQL, dead_letter, ms, parse, read_claimed_job,
    read_dead_letter,
};
use super::state::{self, Loaded};
use super::{cluster, early, follow_up, leases};
use crate::domain::practice::NewPractice;
use crate::store::{
    ClaimedJob, ClaimedWork, DeadLetter, InboundVerdict, InsertOutcome, Lease, OutcomeCheck,
    RecordedAnomaly, StoreError,
};
use chrono::{DateTime, Utc};
use raccordo_adapters::adapter::{Correlation, InboundResult};
use raccordo_domain::job::AttemptResult;
use raccordo_domain::plan::{self, JobSnapshot, PracticeState, Refused, Withdrawal};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

impl From<Refused> for StoreError {
    fn from(r: Refused) -> Self {
        StoreError::Conflict(r.0)
    }
}

/// The stored form of a practice's content, serialized by the caller's task
/// rather than on the single writer thread.
pub(super) fn content_json(new: &NewPractice) -> Result<String, StoreError> {
    serde_json::to_string(&new.content).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Stores a new practice with its outbox job and first events, or finds the
/// earlier practice with the same idempotency key. With a `lease`, the job
/// is stored as attempt 1 in flight under it and returned, for the caller to
/// deliver at once (a synchronous route): no separate claim transaction.
pub(super) fn insert_new(
    conn: &Connection,
    new: &NewPractice,
    content: &str,
    lease: Option<(&Lease, u32)>,
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
    // Claimed only within the adapter's limit; otherwise stored due.
    let lease = match lease {
        Some((lease, max_in_flight)) => {
            let free = cluster::free_slots(conn, &new.adapter, Utc::now(), 1, max_in_flight)?;
            (free > 0).then_some(lease)
        }
        None => None,
    };
    let claim = lease.is_some();
    let operation_id = uuid::Uuid::now_v7().to_string();
    let plan = plan::plan_submission(new, &operation_id, claim);
    let applicant_id = new.content.applicant.id().to_ascii_uppercase();
    let deadline = new.received_at + chrono::Duration::days(new.legal_term_days.into());
    // The row is inserted as the plan leaves it, its first events already
    // counted: persisting the plan then needs no UPDATE of it.
    let first_events = plan.events.len() as i64;
    conn.prepare_cached(
        "INSERT INTO practices (id, tenant_id, service_code, applicant_id, idempotency_key, content_hash,
            content, status, mode, delivery_status, current_operation_id, received_at, legal_term_days,
            legal_deadline, last_sequence)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        new.id,
        new.tenant_id,
        new.service_code,
        applicant_id,
        new.idempotency_key,
        new.content_hash,
        content,
        plan.state.status.as_str(),
        new.mode.as_str(),
        plan.state.delivery_status.map(|d| d.as_str()),
        plan.state.current_operation_id,
        ms(new.received_at),
        new.legal_term_days as i64,
        ms(deadline),
        first_events,
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
    let mut loaded = Loaded {
        id: new.id.clone(),
        tenant_id: new.tenant_id.clone(),
        service_code: new.service_code.clone(),
        applicant_id,
        last_sequence: 0,
        stored_sequence: first_events,
        state: plan.state.clone(),
    };
    let job = plan
        .new_job
        .clone()
        .zip(lease)
        .map(|(j, lease)| ClaimedJob {
            operation_id: j.operation_id,
            practice_id: new.id.clone(),
            tenant_id: new.tenant_id.clone(),
            adapter: j.adapter,
            operation: j.operation,
            attempt: j.attempts,
            max_attempts: j.max_attempts,
            traceparent: j.traceparent,
            owner: lease.owner.clone(),
        });
    state::persist(conn, &mut loaded, plan, new.received_at)?;
    if let (Some(job), Some(lease)) = (&job, lease) {
        leases::take(conn, &job.operation_id, lease, Utc::now())?;
    }
    Ok((InsertOutcome::Created, job))
}

/// Claims up to `limit` pieces of work of `adapter` under `lease`: due
/// polls first, then due jobs, marked in flight (delivery `SENT`).
pub(super) fn claim_work(
    conn: &Connection,
    adapter: &str,
    lease: &Lease,
    now: DateTime<Utc>,
    limit: u32,
    max_in_flight: u32,
) -> Result<ClaimedWork, StoreError> {
    let wanted = limit;
    let limit = cluster::free_slots(conn, adapter, now, limit, max_in_flight)?;
    if limit == 0 {
        return Ok(ClaimedWork {
            saturated: wanted > 0,
            ..Default::default()
        });
    }
    let polls = follow_up::claim(conn, adapter, lease, now, limit)?;
    let left = limit - polls.len() as u32;
    let jobs = if left == 0 {
        Vec::new()
    } else {
        claim_due(conn, adapter, lease, now, left)?
    };
    Ok(ClaimedWork {
        polls,
        jobs,
        saturated: false,
    })
}

fn claim_due(
    conn: &Connection,
    adapter: &str,
    lease: &Lease,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let rows = conn
        .prepare_cached(&format!(
            "UPDATE jobs SET state = 'in_flight', attempts = attempts + 1, updated_at = ?1,
                lease_owner = ?4, lease_expires_at = ?5
             WHERE operation_id IN (
                SELECT operation_id FROM jobs WHERE adapter = ?2 AND state = 'due' AND next_attempt_at <= ?1
                ORDER BY next_attempt_at LIMIT ?3)
             RETURNING {CLAIMED_JOB_COLUMNS}"
        ))?
        .query_map(
            params![ms(now), adapter, limit as i64, lease.owner, ms(lease.until(now))],
            read_claimed_job,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        let job = row.into_job()?;
        change(conn, &job.practice_id, now, |state| {
            Ok(plan::plan_claim(state, &job))
        })?;
        jobs.push(job);
    }
    Ok(jobs)
}

/// Loads practice `practice_id`, plans its change and persists the plan.
pub(super) fn change(
    conn: &Connection,
    practice_id: &str,
    now: DateTime<Utc>,
    planner: impl FnOnce(PracticeState) -> Result<plan::Plan, StoreError>,
) -> Result<Loaded, StoreError> {
    let mut loaded = state::load(conn, practice_id)?;
    let plan = planner(loaded.state.clone())?;
    state::persist(conn, &mut loaded, plan, now)?;
    Ok(loaded)
}

/// Records how attempt `job` ended (an attempt whose lease was lost only
/// in part: see [`leases::record_result`]), then applies the results that
/// arrived while it was in flight. Returns how many there were and the
/// anomalies they caused.
pub(super) fn finish_attempt(
    conn: &Connection,
    job: &ClaimedJob,
    result: &AttemptResult,
    now: DateTime<Utc>,
) -> Result<(usize, Vec<RecordedAnomaly>), StoreError> {
    if !leases::record_result(conn, job, result)? {
        return Ok((0, Vec::new()));
    }
    change(conn, &job.practice_id, now, |state| {
        Ok(plan::plan_attempt(state, job, result, now))
    })?;
    early::apply_waiting(conn, &job.operation_id, &job.tenant_id, now)
}

/// The job `operation_id` as planners read it, with its practice.
fn job_snapshot(
    conn: &Connection,
    operation_id: &str,
) -> Result<Option<(JobSnapshot, String)>, StoreError> {
    let row: Option<(String, i64, String, String)> = conn
        .prepare_cached(
            "SELECT state, attempts, operation, practice_id FROM jobs WHERE operation_id = ?1",
        )?
        .query_row([operation_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    row.map(|(job_state, attempts, operation, practice_id)| {
        Ok((
            JobSnapshot {
                state: parse("job state", &job_state)?,
                attempts: attempts as u32,
                operation: parse("operation", &operation)?,
            },
            practice_id,
        ))
    })
    .transpose()
}

/// Withdraws a practice; returns the adapter of the forwarded withdrawal.
pub(super) fn withdraw(
    conn: &Connection,
    w: &Withdrawal,
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let mut loaded = state::load(conn, &w.practice_id)?;
    // Another tenant's practice does not exist for this caller.
    if loaded.tenant_id != w.tenant_id {
        return Err(StoreError::NotFound);
    }
    let current_job = match loaded.state.current_operation_id.as_deref() {
        Some(op) => job_snapshot(conn, op)?.map(|(job, _)| job),
        None => None,
    };
    let new_operation_id = uuid::Uuid::now_v7().to_string();
    let plan = plan::plan_withdrawal(loaded.state.clone(), current_job, w, &new_operation_id, now)?;
    let forwarded = plan.new_job.as_ref().map(|j| j.adapter.clone());
    state::persist(conn, &mut loaded, plan, now)?;
    Ok(forwarded)
}

/// Puts the dead-lettered delivery `operation_id` back in the queue.
pub(super) fn replay(
    conn: &Connection,
    operation_id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<DeadLetter, StoreError> {
    let (job, practice_id) = job_snapshot(conn, operation_id)?.ok_or(StoreError::NotFound)?;
    change(conn, &practice_id, now, |state| {
        Ok(plan::plan_replay(state, job, operation_id, actor, now)?)
    })?;
    let dl = conn
        .prepare_cached(&format!("{DEAD_LETTER_SQL} WHERE j.operation_id = ?1"))?
        .query_row([operation_id], read_dead_letter)?;
    dead_letter(dl)
}

/// Applies a result that arrived after the delivery. A vendor reports only
/// on what was sent to it: every lookup is confined to the receiving
/// adapter instance's own deliveries and references, so one vendor's
/// secret cannot touch another's practices. A result for a delivery in
/// flight waits for its attempt to end (see `store::early`).
pub(super) fn apply_inbound(
    conn: &Connection,
    result: &InboundResult,
    check: Option<&OutcomeCheck>,
    now: DateTime<Utc>,
) -> Result<InboundVerdict, StoreError> {
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
    let (practice_id, tenant_id) =
        plan::pick_correlated(found, result.tenant_id.as_deref())?.ok_or(StoreError::NotFound)?;
    let checked = match check {
        Some(check) if !result.reply.outcome_data.is_empty() => {
            let service: String = conn
                .prepare_cached("SELECT service_code FROM practices WHERE id = ?1")?
                .query_row([&practice_id], |r| r.get(0))?;
            Some(crate::store::early::checked(result, &service, check)?)
        }
        _ => None,
    };
    let result = checked.as_ref().unwrap_or(result);
    if let Some(receipt) = &result.receipt {
        let fresh = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO inbound_receipts (adapter, receipt, tenant_id, practice_id, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![result.adapter, receipt, tenant_id, practice_id, ms(now)])?;
        if fresh == 0 {
            let outcome: String = conn
                .prepare_cached(
                    "SELECT outcome FROM inbound_receipts WHERE adapter = ?1 AND receipt = ?2",
                )?
                .query_row([adapter, receipt], |r| r.get(0))?;
            return Ok(crate::store::early::repeated(&outcome));
        }
    }
    let mut loaded = state::load(conn, &practice_id)?;
    let awaited = plan::answered_delivery(&result.correlation, &loaded.state).map(str::to_string);
    if let Some(op) = awaited
        && early::in_flight(conn, &op, &tenant_id, adapter)?
    {
        early::park(conn, result, &op, &loaded, now)?;
        return Ok(InboundVerdict::Pending);
    }
    let verdict = early::judge(conn, &mut loaded, &result.reply, adapter, now)?;
    if let Some(receipt) = &result.receipt {
        let outcome = crate::store::early::outcome_of(&verdict);
        if outcome != crate::store::early::APPLIED {
            early::set_outcome(conn, adapter, receipt, outcome)?;
        }
    }
    Ok(crate::store::early::verdict(verdict))
}
