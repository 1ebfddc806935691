//! Claims and attempts: what running a delivery does to its practice.

use super::{ErrorChange, JobUpdate, Plan, PollStart, PracticeState};
use crate::adapter::{DeliveryError, FailureClass, VendorReply};
use crate::job::{AttemptResult, ClaimedJob, JobState};
use crate::model::{AdminStatus, Operation};
use crate::practice::{EventDraft, EventSource};
use crate::retry::RetryDecision;
use crate::status::DeliveryStatus;
use chrono::{DateTime, Duration, Utc};

/// A worker took `job`: the delivery is `SENT` (when it is the practice's
/// current one; an older delivery changes no status).
pub fn plan_claim(state: PracticeState, job: &ClaimedJob) -> Plan {
    let mut plan = Plan::from_state(state);
    if plan.state.is_current(&job.operation_id) {
        let draft =
            EventDraft::delivery(EventSource::Hub, &job.adapter, None, DeliveryStatus::Sent)
                .reason(format!("attempt {} of {}", job.attempt, job.max_attempts));
        plan.move_delivery(DeliveryStatus::Sent, draft);
    }
    plan
}

/// How attempt `job` ended with `result`: the job's next state, the
/// delivery's status, and (for a submission) the vendor's answer applied.
pub fn plan_attempt(
    state: PracticeState,
    job: &ClaimedJob,
    result: &AttemptResult,
    now: DateTime<Utc>,
) -> Plan {
    let mut plan = Plan::from_state(state);
    let current = plan.state.is_current(&job.operation_id);
    let actor = job.adapter.as_str();
    match result {
        AttemptResult::Delivered(reply) if reply.follow_up.is_some() => {
            // Accepted; the result comes from polling. The delivery stays
            // SENT until the vendor's outcome is in.
            let follow_up = reply.follow_up.as_ref().expect("matched above");
            let first = now + duration(follow_up.poll_after, Duration::hours(1));
            let deadline = now + duration(follow_up.max_wait, Duration::days(365));
            let mut update = JobUpdate::to(&job.operation_id, JobState::Polling);
            update.next_attempt_at = Some(first.min(deadline));
            update.error = ErrorChange::Clear;
            update.poll = Some(PollStart {
                token: follow_up.token.clone(),
                deadline,
            });
            plan.job = Some(update);
            let accepted = VendorReply {
                follow_up: None,
                ..reply.clone()
            };
            plan.apply_report(&accepted, actor, now);
        }
        AttemptResult::Delivered(_) | AttemptResult::Rejected(_) => {
            let mut update = JobUpdate::to(&job.operation_id, JobState::Done);
            update.error = match result {
                AttemptResult::Rejected(e) => error_of(e),
                _ => ErrorChange::Clear,
            };
            plan.job = Some(update);
            if current {
                let mut draft = EventDraft::delivery(
                    EventSource::Adapter,
                    actor,
                    None,
                    DeliveryStatus::Acknowledged,
                );
                draft.vendor_code = match result {
                    AttemptResult::Delivered(r) => r.vendor_code.clone(),
                    AttemptResult::Rejected(e) | AttemptResult::Failed(e, _) => {
                        e.vendor_code.clone()
                    }
                };
                plan.move_delivery(DeliveryStatus::Acknowledged, draft);
            }
            let reply = match result {
                AttemptResult::Delivered(reply) => reply.clone(),
                // A refusal on the merits is the practice's outcome.
                AttemptResult::Rejected(e) | AttemptResult::Failed(e, _) => VendorReply {
                    status: Some(AdminStatus::Rejected),
                    vendor_code: e.vendor_code.clone(),
                    reason: Some(e.reason.clone()),
                    ..VendorReply::default()
                },
            };
            if job.operation == Operation::Submit {
                plan.apply_report(&reply, actor, now);
            } else {
                // A withdrawal's answer only adds references: the status is
                // already WITHDRAWN.
                let refs_only = VendorReply {
                    external_refs: reply.external_refs.clone(),
                    ..VendorReply::default()
                };
                plan.apply_report(&refs_only, actor, now);
            }
        }
        AttemptResult::Failed(err, RetryDecision::RetryAfter(delay)) => {
            let next = now + duration(*delay, Duration::hours(1));
            let mut update = JobUpdate::to(&job.operation_id, JobState::Due);
            update.next_attempt_at = Some(next);
            update.error = error_of(err);
            plan.job = Some(update);
            if current {
                let to = if err.class == FailureClass::OutcomeUnknown {
                    DeliveryStatus::OutcomeUnknown
                } else {
                    DeliveryStatus::Retrying
                };
                let mut draft =
                    EventDraft::delivery(EventSource::Adapter, actor, None, to).reason(format!(
                        "attempt {} of {} failed ({}): {}; next attempt at {}",
                        job.attempt,
                        job.max_attempts,
                        err.class,
                        err.reason,
                        next.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ));
                draft.vendor_code = err.vendor_code.clone();
                plan.move_delivery(to, draft);
            }
        }
        AttemptResult::Failed(err, RetryDecision::DeadLetter) => {
            let mut update = JobUpdate::to(&job.operation_id, JobState::Dead);
            update.error = error_of(err);
            plan.job = Some(update);
            if current {
                let mut draft = EventDraft::delivery(
                    EventSource::Adapter,
                    actor,
                    None,
                    DeliveryStatus::DeadLettered,
                )
                .reason(format!(
                    "attempt {} of {} failed ({}): {}",
                    job.attempt, job.max_attempts, err.class, err.reason
                ));
                draft.vendor_code = err.vendor_code.clone();
                plan.move_delivery(DeliveryStatus::DeadLettered, draft);
            }
        }
    }
    plan
}

fn error_of(e: &DeliveryError) -> ErrorChange {
    ErrorChange::Set {
        reason: e.reason.clone(),
        class: e.class.as_str().to_string(),
    }
}

/// A std duration as a chrono one; `fallback` past chrono's range.
fn duration(d: std::time::Duration, fallback: Duration) -> Duration {
    Duration::from_std(d).unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::FollowUp;
    use crate::model::ExternalRef;
    use crate::plan::fixtures::state;
    use crate::practice::EventKind;

    fn job(operation: Operation) -> ClaimedJob {
        ClaimedJob {
            operation_id: "op-1".into(),
            practice_id: "p-1".into(),
            tenant_id: "016024".into(),
            adapter: "tributi".into(),
            operation,
            attempt: 2,
            max_attempts: 3,
            traceparent: None,
            owner: "hub-a".into(),
        }
    }

    fn failure(class: FailureClass) -> DeliveryError {
        DeliveryError {
            class,
            reason: "vendor down".into(),
            vendor_code: Some("E1".into()),
            retry_after: None,
        }
    }

    #[test]
    fn a_claim_sends_the_current_delivery_only() {
        let now_current = plan_claim(
            state(AdminStatus::Submitted, DeliveryStatus::Queued),
            &job(Operation::Submit),
        );
        assert_eq!(
            now_current.state.delivery_status,
            Some(DeliveryStatus::Sent)
        );
        assert_eq!(
            now_current.events[0].reason.as_deref(),
            Some("attempt 2 of 3")
        );
        let mut older = state(AdminStatus::Submitted, DeliveryStatus::Queued);
        older.current_operation_id = Some("op-2".into());
        assert!(plan_claim(older, &job(Operation::Submit)).is_empty());
    }

    #[test]
    fn an_accepted_submission_is_acknowledged_and_its_answer_applied() {
        let now = Utc::now();
        let reply = VendorReply {
            status: Some(AdminStatus::Registered),
            external_refs: vec![ExternalRef {
                kind: "protocol".into(),
                value: "2026/1".into(),
                system: String::new(),
                issued_at: None,
            }],
            ..VendorReply::default()
        };
        let plan = plan_attempt(
            state(AdminStatus::Submitted, DeliveryStatus::Sent),
            &job(Operation::Submit),
            &AttemptResult::Delivered(reply),
            now,
        );
        let update = plan.job.as_ref().unwrap();
        assert_eq!(update.state, JobState::Done);
        assert_eq!(update.error, ErrorChange::Clear);
        assert_eq!(plan.state.status, AdminStatus::Registered);
        assert_eq!(
            plan.state.delivery_status,
            Some(DeliveryStatus::Acknowledged)
        );
        assert_eq!(
            plan.outcome.as_ref().unwrap().legal_deadline,
            Some(now + Duration::days(30))
        );
        // The reference's system defaults to the reporting adapter.
        assert_eq!(plan.references[0].system, "tributi");
        assert_eq!(plan.references[0].issued_at, Some(now));
        let kinds: Vec<_> = plan.events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [EventKind::DeliveryChanged, EventKind::StatusChanged]
        );
    }

    #[test]
    fn a_refusal_on_the_merits_rejects_the_practice() {
        let plan = plan_attempt(
            state(AdminStatus::Submitted, DeliveryStatus::Sent),
            &job(Operation::Submit),
            &AttemptResult::Rejected(failure(FailureClass::Rejection)),
            Utc::now(),
        );
        assert_eq!(plan.state.status, AdminStatus::Rejected);
        let outcome = plan.outcome.unwrap();
        assert!(outcome.terminal);
        assert_eq!(outcome.reason.as_deref(), Some("vendor down"));
        assert!(matches!(plan.job.unwrap().error, ErrorChange::Set { .. }));
    }

    #[test]
    fn a_withdrawals_answer_only_adds_references() {
        let reply = VendorReply {
            status: Some(AdminStatus::Approved),
            ..VendorReply::default()
        };
        let plan = plan_attempt(
            state(AdminStatus::Withdrawn, DeliveryStatus::Sent),
            &job(Operation::Withdraw),
            &AttemptResult::Delivered(reply),
            Utc::now(),
        );
        assert_eq!(plan.state.status, AdminStatus::Withdrawn);
        assert!(plan.outcome.is_none());
    }

    #[test]
    fn a_retry_is_due_later_and_says_when() {
        let now = Utc::now();
        let plan = plan_attempt(
            state(AdminStatus::Submitted, DeliveryStatus::Sent),
            &job(Operation::Submit),
            &AttemptResult::Failed(
                failure(FailureClass::Transient),
                RetryDecision::RetryAfter(std::time::Duration::from_secs(60)),
            ),
            now,
        );
        let update = plan.job.unwrap();
        assert_eq!(update.state, JobState::Due);
        assert_eq!(update.next_attempt_at, Some(now + Duration::seconds(60)));
        assert_eq!(plan.state.delivery_status, Some(DeliveryStatus::Retrying));
        assert!(
            plan.events[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("attempt 2 of 3 failed")
        );
    }

    #[test]
    fn an_attempt_that_may_have_arrived_is_outcome_unknown() {
        let plan = plan_attempt(
            state(AdminStatus::Submitted, DeliveryStatus::Sent),
            &job(Operation::Submit),
            &AttemptResult::Failed(
                failure(FailureClass::OutcomeUnknown),
                RetryDecision::RetryAfter(std::time::Duration::from_secs(1)),
            ),
            Utc::now(),
        );
        assert_eq!(
            plan.state.delivery_status,
            Some(DeliveryStatus::OutcomeUnknown)
        );
    }

    #[test]
    fn the_last_failure_dead_letters() {
        let plan = plan_attempt(
            state(AdminStatus::Submitted, DeliveryStatus::Sent),
            &job(Operation::Submit),
            &AttemptResult::Failed(failure(FailureClass::Permanent), RetryDecision::DeadLetter),
            Utc::now(),
        );
        assert_eq!(plan.job.unwrap().state, JobState::Dead);
        assert_eq!(
            plan.state.delivery_status,
            Some(DeliveryStatus::DeadLettered)
        );
        assert_eq!(plan.state.status, AdminStatus::Submitted);
    }

    #[test]
    fn a_deferred_result_is_polled_until_its_deadline() {
        let now = Utc::now();
        let reply = VendorReply {
            follow_up: Some(FollowUp {
                token: "https://vendor/status/1".into(),
                poll_after: std::time::Duration::from_secs(5),
                max_wait: std::time::Duration::from_secs(60),
            }),
            ..VendorReply::default()
        };
        let plan = plan_attempt(
            state(AdminStatus::Submitted, DeliveryStatus::Sent),
            &job(Operation::Submit),
            &AttemptResult::Delivered(reply),
            now,
        );
        let update = plan.job.unwrap();
        assert_eq!(update.state, JobState::Polling);
        assert_eq!(update.next_attempt_at, Some(now + Duration::seconds(5)));
        assert_eq!(update.poll.unwrap().deadline, now + Duration::seconds(60));
        // Still SENT: the outcome is not in yet.
        assert_eq!(plan.state.delivery_status, Some(DeliveryStatus::Sent));
    }
}
