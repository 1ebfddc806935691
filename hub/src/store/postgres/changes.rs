//! Every change to a practice: load what the planner reads (the practice's
//! row locked), ask the domain's planner, persist its plan. No rule of the
//! domain is decided here.

use super::rows::{claimed_job, dead_letter_row};
use super::state::{self, Loaded};
use super::tx::{Tx, col, owned};
use super::{cluster, early, follow_up, leases};
use crate::domain::practice::NewPractice;
use crate::store::sqlite::rows::{CLAIMED_JOB_COLUMNS, DEAD_LETTER_SQL, ms, parse};
use crate::store::{
    ClaimedJob, ClaimedWork, DeadLetter, InboundVerdict, InsertOutcome, Lease, OutcomeCheck,
    RecordedAnomaly, StoreError,
};
use chrono::{DateTime, Utc};
use raccordo_adapters::adapter::{Correlation, InboundResult};
use raccordo_domain::job::AttemptResult;
use raccordo_domain::plan::{self, JobSnapshot, PracticeState, Withdrawal};

/// The earlier practice with `new`'s idempotency key, if any.
async fn existing(tx: &Tx, new: &NewPractice) -> Result<Option<InsertOutcome>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT id, content_hash FROM practices WHERE tenant_id = $1 AND idempotency_key = $2",
            &[&new.tenant_id, &new.idempotency_key],
        )
        .await?;
    row.map(|r| {
        Ok(InsertOutcome::Existing {
            id: col(&r, 0)?,
            same_content: col::<&str>(&r, 1)? == new.content_hash,
        })
    })
    .transpose()
}

/// Stores a new practice with its outbox job and first events, or finds the
/// earlier practice with the same idempotency key (also one that another
/// instance is storing at this moment).
///
/// With a `lease`, the job is stored as attempt 1 in flight under it and
/// returned, if the adapter's `max_in_flight` allows. Whether it does is
/// estimated first, without a lock, and checked with the commit under the
/// adapter's claim lock (`cluster::check_within_limit_at_commit`): the lock
/// is held for the server's work at the commit, not for all of the writes,
/// so the synchronous submissions of one adapter do not queue behind each
/// other's work. Estimated free, found over the limit at the end (another
/// claim came first): the transaction fails with an error that
/// `cluster::is_over_limit` recognizes, for the caller to store the
/// practice again without a lease (its job due).
pub(super) async fn insert_new(
    tx: &mut Tx,
    new: &NewPractice,
    content: &str,
    lease: Option<(&Lease, u32)>,
) -> Result<(InsertOutcome, Option<ClaimedJob>), StoreError> {
    let now = Utc::now();
    // A repeated key is found by the insert below (it inserts nothing):
    // no look-up before it, which new submissions would all pay.
    let lease = match lease {
        Some((lease, max_in_flight)) => {
            let in_flight = cluster::in_flight(tx, &new.adapter, now).await?;
            (in_flight < i64::from(max_in_flight)).then_some((lease, max_in_flight))
        }
        None => None,
    };
    let claim = lease.is_some();
    let operation_id = uuid::Uuid::now_v7().to_string();
    let plan = plan::plan_submission(new, &operation_id, claim);
    let applicant_id = new.content.applicant.id().to_ascii_uppercase();
    let deadline = new.received_at + chrono::Duration::days(new.legal_term_days.into());
    let first_events = plan.events.len() as i64;
    // A concurrent submission with the same key waits here for the other
    // transaction; if that one commits, nothing is inserted and the
    // practice it stored is the answer.
    let inserted = tx
        .execute(
            "INSERT INTO practices (id, tenant_id, service_code, applicant_id, idempotency_key, content_hash,
                content, status, mode, delivery_status, current_operation_id, received_at, legal_term_days,
                legal_deadline, last_sequence)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (tenant_id, idempotency_key) DO NOTHING",
            &[
                &new.id,
                &new.tenant_id,
                &new.service_code,
                &applicant_id,
                &new.idempotency_key,
                &new.content_hash,
                &content,
                &plan.state.status.as_str(),
                &new.mode.as_str(),
                &plan.state.delivery_status.map(|d| d.as_str()),
                &plan.state.current_operation_id,
                &ms(new.received_at),
                &(new.legal_term_days as i64),
                &ms(deadline),
                &first_events,
            ],
        )
        .await?;
    if inserted == 0 {
        let found = existing(tx, new).await?.ok_or_else(|| {
            StoreError::Unavailable("a concurrent submission with the same key vanished".into())
        })?;
        return Ok((found, None));
    }
    for (i, a) in new.attachments.iter().enumerate() {
        tx.execute_later(
            "INSERT INTO documents (practice_id, tenant_id, role, position, name, media_type, size_bytes, sha256, content)
             VALUES ($1, $2, 'attachment', $3, $4, $5, $6, $7, $8)",
            owned![
                new.id.clone(),
                new.tenant_id.clone(),
                i as i64,
                a.meta.name.clone(),
                a.meta.media_type.clone(),
                a.meta.size_bytes as i64,
                a.meta.sha256.clone(),
                a.content.clone(),
            ],
        );
    }
    let mut loaded = Loaded {
        id: new.id.clone(),
        tenant_id: new.tenant_id.clone(),
        service_code: new.service_code.clone(),
        applicant_id,
        last_sequence: 0,
        stored_sequence: first_events,
        state: plan.state.clone(),
        new_job_lease: lease.map(|(lease, _)| (lease.owner.clone(), ms(lease.until(now)))),
    };
    let job = plan
        .new_job
        .clone()
        .zip(lease)
        .map(|(j, (lease, _))| ClaimedJob {
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
    state::persist(tx, &mut loaded, plan, new.received_at).await?;
    if let (Some(_), Some((_, max_in_flight))) = (&job, lease) {
        cluster::check_within_limit_at_commit(tx, &new.adapter, now, max_in_flight);
    }
    Ok((InsertOutcome::Created, job))
}

/// Claims up to `limit` pieces of work of `adapter`, within what its
/// `max_in_flight` leaves free in the whole cluster: due polls first, then
/// due jobs. Rows another instance is claiming are skipped, not waited for.
/// What is free is counted without a lock, and the count checked again
/// with the commit under the adapter's claim lock
/// (`cluster::check_within_limit_at_commit`): over the limit, the claim
/// fails with an error `cluster::is_over_limit` recognizes.
pub(super) async fn claim_work(
    tx: &mut Tx,
    adapter: &str,
    lease: &Lease,
    now: DateTime<Utc>,
    limit: u32,
    max_in_flight: u32,
) -> Result<ClaimedWork, StoreError> {
    let wanted = limit;
    let in_flight = cluster::in_flight(tx, adapter, now).await?;
    let free = i64::from(max_in_flight).saturating_sub(in_flight).max(0);
    let limit = u32::try_from(free).unwrap_or(u32::MAX).min(wanted);
    if limit == 0 {
        return Ok(ClaimedWork {
            saturated: wanted > 0,
            ..Default::default()
        });
    }
    let polls = follow_up::claim(tx, adapter, lease, now, limit).await?;
    let left = limit - polls.len() as u32;
    let jobs = if left == 0 {
        Vec::new()
    } else {
        claim_due(tx, adapter, lease, now, left).await?
    };
    if !polls.is_empty() || !jobs.is_empty() {
        cluster::check_within_limit_at_commit(tx, adapter, now, max_in_flight);
    }
    Ok(ClaimedWork {
        polls,
        jobs,
        saturated: false,
    })
}

async fn claim_due(
    tx: &mut Tx,
    adapter: &str,
    lease: &Lease,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<ClaimedJob>, StoreError> {
    let rows = tx
        .query(
            &format!(
                "UPDATE jobs SET state = 'in_flight', attempts = attempts + 1, updated_at = $1,
                    lease_owner = $4, lease_expires_at = $5
                 WHERE operation_id IN (
                    SELECT operation_id FROM jobs WHERE adapter = $2 AND state = 'due' AND next_attempt_at <= $1
                    ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING {CLAIMED_JOB_COLUMNS}"
            ),
            &[
                &ms(now),
                &adapter,
                &(limit as i64),
                &lease.owner,
                &ms(lease.until(now)),
            ],
        )
        .await?;
    let mut jobs = Vec::with_capacity(rows.len());
    for row in &rows {
        jobs.push(claimed_job(row)?);
    }
    // Practices in a fixed order: two claims never lock them crosswise.
    // Locked and loaded in one flight, then changed.
    jobs.sort_by(|a, b| a.practice_id.cmp(&b.practice_id));
    let ids: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
        jobs.iter().map(|job| [&job.practice_id as _]).collect();
    let loads: Vec<(&str, super::tx::Params<'_>)> =
        ids.iter().map(|id| (state::LOAD, &id[..])).collect();
    let practices = tx.flight_all(&loads).await?;
    for (job, practice) in jobs.iter().zip(&practices) {
        let mut loaded = state::loaded(practice.first().ok_or(StoreError::NotFound)?)?;
        let plan = plan::plan_claim(loaded.state.clone(), job);
        state::persist(tx, &mut loaded, plan, now).await?;
    }
    Ok(jobs)
}

/// Loads practice `practice_id`, plans its change and persists the plan.
pub(super) async fn change(
    tx: &mut Tx,
    practice_id: &str,
    now: DateTime<Utc>,
    planner: impl FnOnce(PracticeState) -> Result<plan::Plan, StoreError>,
) -> Result<Loaded, StoreError> {
    let mut loaded = state::load(tx, practice_id).await?;
    let plan = planner(loaded.state.clone())?;
    state::persist(tx, &mut loaded, plan, now).await?;
    Ok(loaded)
}

/// Records how attempt `job` ended (one whose lease was lost only in
/// part: see [`leases::lease_held`]), then applies the results that
/// arrived while it was in flight. The practice is locked before the job
/// is read: a job changes only under its practice's lock, or by a
/// statement that checks its lease. Returns how many results waited and
/// the anomalies they caused.
pub(super) async fn finish_attempt(
    tx: &mut Tx,
    job: &ClaimedJob,
    result: &AttemptResult,
    now: DateTime<Utc>,
) -> Result<(usize, Vec<RecordedAnomaly>), StoreError> {
    // One flight, run in this order: the practice's lock, then the job and
    // the results that waited for it, read under that lock.
    let [practice, job_row, waiting] = tx
        .flight([
            (state::LOAD, &[&job.practice_id]),
            (leases::RESULT_JOB, &[&job.operation_id]),
            (early::WAITING, &[&job.operation_id, &job.tenant_id]),
        ])
        .await?;
    let mut loaded = state::loaded(practice.first().ok_or(StoreError::NotFound)?)?;
    let job_row = job_row.first().ok_or(StoreError::NotFound)?;
    if !leases::lease_held(job_row, job, result)? {
        return Ok((0, Vec::new()));
    }
    let plan = plan::plan_attempt(loaded.state.clone(), job, result, now);
    state::persist(tx, &mut loaded, plan, now).await?;
    early::apply(tx, &waiting, &job.operation_id, &job.tenant_id, now).await
}

/// The job `operation_id` as planners read it, with its practice.
async fn job_snapshot(
    tx: &Tx,
    operation_id: &str,
) -> Result<Option<(JobSnapshot, String)>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT state, attempts, operation, practice_id FROM jobs WHERE operation_id = $1",
            &[&operation_id],
        )
        .await?;
    row.map(|r| {
        Ok((
            JobSnapshot {
                state: parse("job state", col::<&str>(&r, 0)?)?,
                attempts: col::<i64>(&r, 1)? as u32,
                operation: parse("operation", col::<&str>(&r, 2)?)?,
            },
            col(&r, 3)?,
        ))
    })
    .transpose()
}

/// Withdraws a practice; returns the adapter of the forwarded withdrawal.
pub(super) async fn withdraw(
    tx: &mut Tx,
    w: &Withdrawal,
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let mut loaded = state::load(tx, &w.practice_id).await?;
    // Another tenant's practice does not exist for this caller.
    if loaded.tenant_id != w.tenant_id {
        return Err(StoreError::NotFound);
    }
    let current_job = match loaded.state.current_operation_id.as_deref() {
        Some(op) => job_snapshot(tx, op).await?.map(|(job, _)| job),
        None => None,
    };
    let new_operation_id = uuid::Uuid::now_v7().to_string();
    let plan = plan::plan_withdrawal(loaded.state.clone(), current_job, w, &new_operation_id, now)?;
    let forwarded = plan.new_job.as_ref().map(|j| j.adapter.clone());
    state::persist(tx, &mut loaded, plan, now).await?;
    Ok(forwarded)
}

/// Puts the dead-lettered delivery `operation_id` back in the queue.
pub(super) async fn replay(
    tx: &mut Tx,
    operation_id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<DeadLetter, StoreError> {
    let (_, practice_id) = job_snapshot(tx, operation_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    // The practice is locked first, then its job read again: a job changes
    // only under its practice's lock.
    let mut loaded = state::load(tx, &practice_id).await?;
    let (job, _) = job_snapshot(tx, operation_id)
        .await?
        .ok_or(StoreError::NotFound)?;
    let plan = plan::plan_replay(loaded.state.clone(), job, operation_id, actor, now)?;
    state::persist(tx, &mut loaded, plan, now).await?;
    let row = tx
        .query_one(
            &format!("{DEAD_LETTER_SQL} WHERE j.operation_id = $1"),
            &[&operation_id],
        )
        .await?;
    dead_letter_row(&row)
}

/// Applies a result that arrived after the delivery; every lookup is
/// confined to the receiving adapter instance's own deliveries and
/// references (see the SQLite store). A result for a delivery in flight
/// waits for its attempt to end (see `store::early`).
pub(super) async fn apply_inbound(
    tx: &mut Tx,
    result: &InboundResult,
    check: Option<&OutcomeCheck>,
    now: DateTime<Utc>,
) -> Result<InboundVerdict, StoreError> {
    let adapter = result.adapter.as_str();
    let rows = match &result.correlation {
        Correlation::PracticeId(id) => {
            tx.query(
                "SELECT p.id, p.tenant_id FROM practices p WHERE p.id = $1
                 AND EXISTS (SELECT 1 FROM jobs j WHERE j.practice_id = p.id AND j.adapter = $2)",
                &[id, &adapter],
            )
            .await?
        }
        Correlation::OperationId(op) => {
            tx.query(
                "SELECT practice_id, tenant_id FROM jobs WHERE operation_id = $1 AND adapter = $2",
                &[op, &adapter],
            )
            .await?
        }
        Correlation::ExternalRef { kind, value } => {
            tx.query(
                "SELECT practice_id, tenant_id FROM external_refs
                 WHERE kind = $1 AND value = $2 AND system = $3",
                &[kind, value, &adapter],
            )
            .await?
        }
    };
    let found = rows
        .iter()
        .map(|r| Ok((col::<String>(r, 0)?, col::<String>(r, 1)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let (practice_id, tenant_id) =
        plan::pick_correlated(found, result.tenant_id.as_deref())?.ok_or(StoreError::NotFound)?;
    let checked = match check {
        Some(check) if !result.reply.outcome_data.is_empty() => {
            let row = tx
                .query_one(
                    "SELECT service_code FROM practices WHERE id = $1",
                    &[&practice_id],
                )
                .await?;
            Some(crate::store::early::checked(result, col(&row, 0)?, check)?)
        }
        _ => None,
    };
    let result = checked.as_ref().unwrap_or(result);
    if let Some(receipt) = &result.receipt {
        // A concurrent duplicate waits here for the first; once that one
        // commits, this one inserts nothing.
        let fresh = tx
            .execute(
                "INSERT INTO inbound_receipts (adapter, receipt, tenant_id, practice_id, received_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&result.adapter, receipt, &tenant_id, &practice_id, &ms(now)],
            )
            .await?;
        if fresh == 0 {
            let row = tx
                .query_one(
                    "SELECT outcome FROM inbound_receipts WHERE adapter = $1 AND receipt = $2",
                    &[&adapter, receipt],
                )
                .await?;
            return Ok(crate::store::early::repeated(col::<&str>(&row, 0)?));
        }
    }
    // Locked before the job is read: the attempt's end waits for this
    // transaction, or this one sees the attempt ended.
    let mut loaded = state::load(tx, &practice_id).await?;
    let awaited = plan::answered_delivery(&result.correlation, &loaded.state).map(str::to_string);
    if let Some(op) = awaited
        && early::in_flight(tx, &op, &tenant_id, adapter).await?
    {
        early::park(tx, result, &op, &loaded, now).await?;
        return Ok(InboundVerdict::Pending);
    }
    let verdict = early::judge(tx, &mut loaded, &result.reply, adapter, now).await?;
    if let Some(receipt) = &result.receipt {
        let outcome = crate::store::early::outcome_of(&verdict);
        if outcome != crate::store::early::APPLIED {
            early::set_outcome(tx, adapter, receipt, outcome).await?;
        }
    }
    Ok(crate::store::early::verdict(verdict))
}
