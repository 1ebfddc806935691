//! Leases on work in flight: taken by a claim, renewed by their owner,
//! ended by a sweep that any instance may run at any moment (see the
//! SQLite store's `leases`; the rules are the same, and what an expired
//! attempt means is the domain's attempt planner's to say).

use super::state;
use super::tx::{Tx, col};
use crate::store::sqlite::rows::{CLAIMED_JOB_COLUMNS, ms, parse};
use crate::store::{AttemptResult, ClaimedJob, ExpiredLeases, JobState, StoreError};
use chrono::{DateTime, Utc};
use raccordo_adapters::{DeliveryError, FailureClass};
use raccordo_domain::plan;
use raccordo_domain::retry::RetryDecision;

/// Extends `owner`'s leases on `ids` to `until`; returns the operations it
/// still held. A lease that ran out is lost even before a sweep ends it.
pub(super) async fn renew(
    tx: &Tx,
    owner: &str,
    ids: &[String],
    until: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    tx.query(
        "UPDATE jobs SET lease_expires_at = $1
         WHERE lease_owner = $2 AND state IN ('in_flight', 'poll_in_flight')
           AND lease_expires_at > $4 AND operation_id = ANY($3)
         RETURNING operation_id",
        &[&ms(until), &owner, &ids, &ms(Utc::now())],
    )
    .await?
    .iter()
    .map(|r| col(r, 0))
    .collect()
}

/// Ends the leases that ran out by `now`. Several instances may sweep at
/// once: each delivery is re-checked under its practice's lock, so one
/// sweep ends it and the others find it no longer in flight.
pub(super) async fn expire(tx: &mut Tx, now: DateTime<Utc>) -> Result<ExpiredLeases, StoreError> {
    let mut expired = ExpiredLeases::default();
    let candidates = tx
        .query(
            "SELECT practice_id, operation_id FROM jobs
             WHERE lease_expires_at <= $1 AND state = 'in_flight' ORDER BY practice_id",
            &[&ms(now)],
        )
        .await?;
    for row in &candidates {
        let (practice_id, operation_id): (&str, &str) = (col(row, 0)?, col(row, 1)?);
        let mut loaded = state::load(tx, practice_id).await?;
        let Some(row) = tx
            .query_opt(
                &format!(
                    "SELECT {CLAIMED_JOB_COLUMNS} FROM jobs
                     WHERE operation_id = $1 AND lease_expires_at <= $2 AND state = 'in_flight'
                     FOR UPDATE"
                ),
                &[&operation_id, &ms(now)],
            )
            .await?
        else {
            continue; // ended by another sweep, renewed, or finished meanwhile
        };
        let job = super::rows::claimed_job(&row)?;
        let owner = if job.owner.is_empty() {
            "-"
        } else {
            &job.owner
        };
        let unknown = DeliveryError::new(
            FailureClass::OutcomeUnknown,
            format!(
                "no result before the lease of hub instance {owner} ran out \
                 (stopped, crashed or cut off from the database)"
            ),
        );
        let decision = if job.attempt >= job.max_attempts {
            expired.dead_lettered += 1;
            RetryDecision::DeadLetter
        } else {
            expired.due_again += 1;
            RetryDecision::RetryAfter(std::time::Duration::ZERO)
        };
        let result = AttemptResult::Failed(unknown, decision);
        let plan = plan::plan_attempt(loaded.state.clone(), &job, &result, now);
        state::persist(tx, &mut loaded, plan, now).await?;
        // The attempt is over: the results that waited for it apply now.
        let (_, anomalies) =
            super::early::apply_waiting(tx, &job.operation_id, &job.tenant_id, now).await?;
        expired.anomalies.extend(anomalies);
    }
    // A poll only asks: the vendor accepted the request, so it is simply
    // asked again. One statement: a concurrent sweep re-checks the row.
    expired.polls = tx
        .execute(
            "UPDATE jobs SET state = 'polling', next_attempt_at = $1, updated_at = $1,
                lease_owner = NULL, lease_expires_at = NULL
             WHERE lease_expires_at <= $1 AND state = 'poll_in_flight'",
            &[&ms(now)],
        )
        .await? as usize;
    Ok(expired)
}

/// The statement that reads the job an attempt ended (parameter: its
/// operation id), locked, for [`lease_held`]. The caller holds the
/// practice's lock (sent in the same flight, after it).
pub(super) const RESULT_JOB: &str =
    "SELECT state, lease_owner, attempts FROM jobs WHERE operation_id = $1 FOR UPDATE";

/// Whether `result` of `job` is recorded, from the job's row of
/// [`RESULT_JOB`]: the same rule as the SQLite store's (an attempt that
/// lost its lease keeps only a conclusive answer, and only for a job not
/// finished).
pub(super) fn lease_held(
    row: &tokio_postgres::Row,
    job: &ClaimedJob,
    result: &AttemptResult,
) -> Result<bool, StoreError> {
    let state: JobState = parse("job state", col::<&str>(row, 0)?)?;
    let owner: Option<&str> = col(row, 1)?;
    let attempts: i64 = col(row, 2)?;
    let held = state.is_running()
        && owner == Some(job.owner.as_str())
        && attempts == i64::from(job.attempt);
    if held {
        return Ok(true);
    }
    let conclusive = match result {
        AttemptResult::Delivered(reply) => reply.follow_up.is_none(),
        AttemptResult::Rejected(_) => true,
        AttemptResult::Failed(..) => false,
    };
    let finished = matches!(state, JobState::Done | JobState::Cancelled);
    let record = conclusive && !finished;
    tracing::warn!(operation_id = %job.operation_id, attempt = job.attempt, job_state = %state,
        recorded = record, "a result arrived after its attempt's lease was lost");
    Ok(record)
}
