//! Leases on work in flight: taken by a claim, renewed by their owner,
//! ended by a sweep, and what a result recorded after its lease was lost
//! still changes. What an expired attempt means for its practice is the
//! domain's attempt planner's to say (an `OUTCOME_UNKNOWN` failure).

use super::changes::change;
use super::early;
use super::rows::{CLAIMED_JOB_COLUMNS, ms, parse, read_claimed_job};
use crate::store::{AttemptResult, ClaimedJob, ExpiredLeases, JobState, Lease, StoreError};
use chrono::{DateTime, Utc};
use raccordo_adapters::{DeliveryError, FailureClass};
use raccordo_domain::plan;
use raccordo_domain::retry::RetryDecision;
use rusqlite::{Connection, OptionalExtension, params};

/// Puts the job `operation_id`, just stored in flight, under `lease`.
pub(super) fn take(
    conn: &Connection,
    operation_id: &str,
    lease: &Lease,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE jobs SET lease_owner = ?1, lease_expires_at = ?2 WHERE operation_id = ?3",
    )?
    .execute(params![lease.owner, ms(lease.until(now)), operation_id])?;
    Ok(())
}

/// Extends `owner`'s leases on the operations in `ids` (a JSON array) to
/// `until`; returns the operations it still held. A lease that ran out is
/// lost even before a sweep ends it: any instance may sweep at any moment.
pub(super) fn renew(
    conn: &Connection,
    owner: &str,
    ids: &str,
    until: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE jobs SET lease_expires_at = ?1
             WHERE lease_owner = ?2 AND state IN ('in_flight', 'poll_in_flight')
               AND lease_expires_at > ?4 AND operation_id IN (SELECT value FROM json_each(?3))
             RETURNING operation_id",
        )?
        .query_map(params![ms(until), owner, ids, ms(Utc::now())], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Ends the leases that ran out by `cutoff` (`now` for a sweep; the end of
/// time at start, when every lease is a dead process's).
pub(super) fn expire(
    conn: &Connection,
    now: DateTime<Utc>,
    cutoff: DateTime<Utc>,
) -> Result<ExpiredLeases, StoreError> {
    let mut expired = ExpiredLeases::default();
    let ended = conn
        .prepare_cached(&format!(
            "SELECT {CLAIMED_JOB_COLUMNS} FROM jobs WHERE lease_expires_at <= ?1 AND state = 'in_flight'"
        ))?
        .query_map([ms(cutoff)], read_claimed_job)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for row in ended {
        let job = row.into_job()?;
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
        // Like any OUTCOME_UNKNOWN failure: re-sent at once with the same
        // operation id, unless it was the last attempt (then a job that
        // kills its attempts every time ends in the dead letters instead
        // of looping).
        let decision = if job.attempt >= job.max_attempts {
            expired.dead_lettered += 1;
            RetryDecision::DeadLetter
        } else {
            expired.due_again += 1;
            RetryDecision::RetryAfter(std::time::Duration::ZERO)
        };
        let result = AttemptResult::Failed(unknown, decision);
        change(conn, &job.practice_id, now, |state| {
            Ok(plan::plan_attempt(state, &job, &result, now))
        })?;
        // The attempt is over: the results that waited for it apply now.
        let (_, anomalies) = early::apply_waiting(conn, &job.operation_id, &job.tenant_id, now)?;
        expired.anomalies.extend(anomalies);
    }
    // A poll only asks: the vendor accepted the request, so nothing is
    // unknown and the poll is simply asked again.
    expired.polls = conn
        .prepare_cached(
            "UPDATE jobs SET state = 'polling', next_attempt_at = ?1, updated_at = ?1,
                lease_owner = NULL, lease_expires_at = NULL
             WHERE lease_expires_at <= ?2 AND state = 'poll_in_flight'",
        )?
        .execute(params![ms(now), ms(cutoff)])?;
    Ok(expired)
}

/// Whether `result` of `job` is recorded. An attempt still holding its
/// lease records anything. One whose lease was lost (it ran out; the job
/// may be due, or in flight again, or finished) records only a conclusive
/// answer (delivered without a follow-up, or rejected), and only if the job
/// is not finished: the vendor answered this operation id, and vendors
/// deduplicate on it, so the answer stands whichever attempt got it. A
/// failure, or an acceptance for polling, is left to whoever holds the job
/// now.
pub(super) fn record_result(
    conn: &Connection,
    job: &ClaimedJob,
    result: &AttemptResult,
) -> Result<bool, StoreError> {
    let (state, owner, attempts): (String, Option<String>, i64) = conn
        .prepare_cached("SELECT state, lease_owner, attempts FROM jobs WHERE operation_id = ?1")?
        .query_row([&job.operation_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?
        .ok_or(StoreError::NotFound)?;
    let state: JobState = parse("job state", &state)?;
    let held = state.is_running()
        && owner.as_deref() == Some(job.owner.as_str())
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
