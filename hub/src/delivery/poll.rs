//! Polling a deferred result (ModI `NONBLOCK_PULL_*`): one poll per claim,
//! the next one scheduled durably on the job row, bounded by the deadline
//! the adapter set when the vendor accepted the request.
//!
//! When the deadline passes without a result the delivery is
//! `OUTCOME_UNKNOWN` and follows the retry policy like any attempt whose
//! answer never came: re-sent with the same operation id (the vendor
//! discards duplicates) or, with no attempts left, dead-lettered.

use super::worker::{policy, record};
use crate::adapters::AdapterInstance;
use crate::domain::outcome::checked_reply;
use crate::practices::PracticeService;
use crate::store::{AttemptResult, ClaimedPoll};
use chrono::Utc;
use raccordo_adapters::{DeliveryError, FailureClass, PollOutcome, PollRequest, VendorReply};
use std::time::Duration;
use tracing::Instrument;

/// What a poll found, its outcome data checked and typed for the
/// practice's service (read only when the vendor sent some): data the
/// declaration refuses is a permanent failure, as in a synchronous reply.
async fn checked_poll(
    service: &PracticeService,
    claimed: &ClaimedPoll,
    found: PollOutcome,
) -> Result<PollOutcome, DeliveryError> {
    let reply = match &found {
        PollOutcome::Done(reply) => reply,
        PollOutcome::Pending {
            progress: Some(reply),
            ..
        } => reply,
        PollOutcome::Pending { progress: None, .. } => return Ok(found),
    };
    if reply.outcome_data.is_empty() {
        return Ok(found);
    }
    let job = &claimed.job;
    let practice = service
        .store()
        .get_practice(&job.tenant_id, &job.practice_id, false)
        .await
        .map_err(|e| DeliveryError::transient(format!("cannot read the practice: {e}")))?;
    let config = service.config();
    Ok(match found {
        PollOutcome::Done(reply) => {
            PollOutcome::Done(checked_reply(config, &practice.service_code, reply)?)
        }
        PollOutcome::Pending {
            progress,
            token,
            poll_after,
        } => PollOutcome::Pending {
            progress: progress
                .map(|r| checked_reply(config, &practice.service_code, r))
                .transpose()?,
            token,
            poll_after,
        },
    })
}

/// Polls once and records what was found.
pub(super) async fn poll_once(
    service: &PracticeService,
    instance: &AdapterInstance,
    claimed: ClaimedPoll,
) {
    let job = &claimed.job;
    let _held = service.leases().hold(&job.operation_id);
    let span = tracing::info_span!("poll", practice_id = %job.practice_id, operation_id = %job.operation_id,
        adapter = %instance.name, poll = claimed.polls + 1);
    let outcome = instance
        .adapter
        .poll(PollRequest {
            operation_id: job.operation_id.clone(),
            operation: job.operation,
            token: claimed.token.clone(),
            polls: claimed.polls,
        })
        .instrument(span)
        .await;
    let outcome = match outcome {
        Ok(found) => checked_poll(service, &claimed, found).await,
        Err(e) => Err(e),
    };
    let now = Utc::now();
    let (progress, token, after, error) = match outcome {
        Ok(PollOutcome::Done(reply)) => {
            let reply = VendorReply {
                follow_up: None,
                ..reply
            };
            record(service, job, AttemptResult::Delivered(reply), false).await;
            return;
        }
        Ok(PollOutcome::Pending {
            progress,
            token,
            poll_after,
        }) => (progress, token, poll_after, None),
        Err(e) if e.class == FailureClass::Transient => {
            // The status endpoint hiccuped: ask again later, within the wait.
            let after = e.retry_after.unwrap_or(Duration::from_secs(5));
            (None, None, after, Some(e))
        }
        Err(e) if e.class == FailureClass::Rejection => {
            record(service, job, AttemptResult::Rejected(e), false).await;
            return;
        }
        Err(e) => {
            // The reason can quote the vendor: it goes to the practice's
            // events, the log gets the class and code.
            tracing::warn!(operation_id = %job.operation_id, adapter = %instance.name,
                class = %e.class, vendor_code = e.vendor_code.as_deref().unwrap_or(""), "poll failed");
            let decision = policy(service, job).decide(e.class, job.attempt, e.retry_after);
            record(service, job, AttemptResult::Failed(e, decision), false).await;
            return;
        }
    };
    if now >= claimed.deadline {
        let err = DeliveryError::new(
            FailureClass::OutcomeUnknown,
            format!(
                "no result after {} polls: the maximum wait ended at {}",
                claimed.polls + 1,
                claimed
                    .deadline
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
        let decision = policy(service, job).decide(err.class, job.attempt, None);
        record(service, job, AttemptResult::Failed(err, decision), false).await;
        return;
    }
    let next = (now + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::hours(1)))
        .min(claimed.deadline);
    if let Err(e) = service
        .store()
        .reschedule_poll(&claimed, progress, token, next, error)
        .await
    {
        // The poll is asked again when its lease runs out.
        tracing::error!(operation_id = %job.operation_id, error = %e,
            "cannot record the poll; it is repeated when its lease runs out");
    }
}
