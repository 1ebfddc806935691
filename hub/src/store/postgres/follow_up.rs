//! Durable polling of deferred results (ModI `NONBLOCK_PULL_*`): claims
//! and re-schedules (see the SQLite store's `follow_up`).

use super::changes::change;
use super::rows::claimed_job;
use super::tx::{Tx, col};
use crate::store::sqlite::rows::{CLAIMED_JOB_COLUMN_COUNT, CLAIMED_JOB_COLUMNS, from_ms, ms};
use crate::store::{ClaimedPoll, Lease, StoreError};
use chrono::{DateTime, Utc};
use raccordo_adapters::{DeliveryError, VendorReply};

/// Claims due polls of `adapter`, skipping rows another instance is claiming.
pub(super) async fn claim(
    tx: &Tx,
    adapter: &str,
    lease: &Lease,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<ClaimedPoll>, StoreError> {
    const N: usize = CLAIMED_JOB_COLUMN_COUNT;
    let rows = tx
        .query(
            &format!(
                "UPDATE jobs SET state = 'poll_in_flight', updated_at = $1,
                    lease_owner = $4, lease_expires_at = $5
                 WHERE operation_id IN (
                    SELECT operation_id FROM jobs WHERE adapter = $2 AND state = 'polling' AND next_attempt_at <= $1
                    ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING {CLAIMED_JOB_COLUMNS}, follow_up, follow_up_polls, follow_up_deadline"
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
    rows.iter()
        .map(|r| {
            let job = claimed_job(r)?;
            let token: Option<String> = col(r, N)?;
            Ok(ClaimedPoll {
                token: token.ok_or_else(|| {
                    StoreError::Corrupt(format!("job {} polls without a token", job.operation_id))
                })?,
                polls: col::<i64>(r, N + 1)? as u32,
                deadline: col::<Option<i64>>(r, N + 2)?.map_or(now, from_ms),
                job,
            })
        })
        .collect()
}

/// After a poll that found the result not ready.
pub(super) async fn reschedule(
    tx: &mut Tx,
    poll: &ClaimedPoll,
    progress: Option<&VendorReply>,
    token: Option<&str>,
    next: DateTime<Utc>,
    error: Option<&DeliveryError>,
) -> Result<(), StoreError> {
    let now = Utc::now();
    tx.execute(
        "UPDATE jobs SET state = 'polling', follow_up = COALESCE($1, follow_up),
            follow_up_polls = follow_up_polls + 1, next_attempt_at = $2,
            last_error = $3, failure_class = $4, updated_at = $5,
            lease_owner = NULL, lease_expires_at = NULL
         WHERE operation_id = $6 AND state = 'poll_in_flight' AND lease_owner = $7",
        &[
            &token,
            &ms(next),
            &error.map(|e| format!("poll: {}", e.reason)),
            &error.map(|e| e.class.as_str()),
            &ms(now),
            &poll.job.operation_id,
            &poll.job.owner,
        ],
    )
    .await?;
    let Some(progress) = progress else {
        return Ok(());
    };
    change(tx, &poll.job.practice_id, now, |state| {
        Ok(raccordo_domain::plan::plan_report(
            state,
            progress,
            &poll.job.adapter,
            now,
        ))
    })
    .await?;
    Ok(())
}
