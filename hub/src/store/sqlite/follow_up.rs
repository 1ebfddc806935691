//! Durable polling of deferred results (ModI `NONBLOCK_PULL_*`): the job
//! row keeps the adapter's token, the number of polls and the deadline.
//! Polling starts with the attempt the vendor accepted (the attempt's plan
//! sets the token and the deadline); here are the claims and re-schedules.

use super::changes::change;
use super::rows::{CLAIMED_JOB_COLUMN_COUNT, CLAIMED_JOB_COLUMNS, from_ms, ms, read_claimed_job};
use crate::store::{ClaimedPoll, Lease, StoreError};
use chrono::{DateTime, Utc};
use raccordo_adapters::{DeliveryError, VendorReply};
use rusqlite::{Connection, params};

pub(super) fn claim(
    conn: &Connection,
    adapter: &str,
    lease: &Lease,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<ClaimedPoll>, StoreError> {
    const N: usize = CLAIMED_JOB_COLUMN_COUNT;
    let rows = conn
        .prepare_cached(&format!(
            "UPDATE jobs SET state = 'poll_in_flight', updated_at = ?1,
                lease_owner = ?4, lease_expires_at = ?5
             WHERE operation_id IN (
                SELECT operation_id FROM jobs WHERE adapter = ?2 AND state = 'polling' AND next_attempt_at <= ?1
                ORDER BY next_attempt_at LIMIT ?3)
             RETURNING {CLAIMED_JOB_COLUMNS}, follow_up, follow_up_polls, follow_up_deadline"
        ))?
        .query_map(
            params![ms(now), adapter, limit as i64, lease.owner, ms(lease.until(now))],
            |r| {
                Ok((
                    read_claimed_job(r)?,
                    r.get::<_, Option<String>>(N)?,
                    r.get::<_, i64>(N + 1)?,
                    r.get::<_, Option<i64>>(N + 2)?,
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(job, token, polls, deadline)| {
            Ok(ClaimedPoll {
                token: token.ok_or_else(|| {
                    StoreError::Corrupt(format!("job {} polls without a token", job.operation_id))
                })?,
                job: job.into_job()?,
                polls: polls as u32,
                deadline: deadline.map_or(now, from_ms),
            })
        })
        .collect()
}

pub(super) fn reschedule(
    conn: &Connection,
    poll: &ClaimedPoll,
    progress: Option<&VendorReply>,
    token: Option<&str>,
    next: DateTime<Utc>,
    error: Option<&DeliveryError>,
) -> Result<(), StoreError> {
    let now = Utc::now();
    conn.prepare_cached(
        "UPDATE jobs SET state = 'polling', follow_up = COALESCE(?1, follow_up),
            follow_up_polls = follow_up_polls + 1, next_attempt_at = ?2,
            last_error = ?3, failure_class = ?4, updated_at = ?5,
            lease_owner = NULL, lease_expires_at = NULL
         WHERE operation_id = ?6 AND state = 'poll_in_flight' AND lease_owner = ?7",
    )?
    .execute(params![
        token,
        ms(next),
        error.map(|e| format!("poll: {}", e.reason)),
        error.map(|e| e.class.as_str()),
        ms(now),
        poll.job.operation_id,
        poll.job.owner,
    ])?;
    let Some(progress) = progress else {
        return Ok(());
    };
    change(conn, &poll.job.practice_id, now, |state| {
        Ok(raccordo_domain::plan::plan_report(
            state,
            progress,
            &poll.job.adapter,
            now,
        ))
    })?;
    Ok(())
}
