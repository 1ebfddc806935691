//! Operators and applicants acting on a practice: withdrawal and replay of
//! a dead letter.

use super::{JobUpdate, NewJob, Plan, PracticeState, Refused};
use crate::job::JobState;
use crate::model::{AdminStatus, Operation};
use crate::practice::{EventDraft, EventKind, EventSource};
use crate::status::DeliveryStatus;
use chrono::{DateTime, Utc};

/// A withdrawal request.
#[derive(Debug, Clone)]
pub struct Withdrawal {
    pub tenant_id: String,
    pub practice_id: String,
    pub reason: Option<String>,
    /// The applicant, or the operator acting at the desk.
    pub draft_actor: EventDraft,
    /// Forward to this adapter (and its max attempts), if the route supports
    /// withdrawals.
    pub forward_to: Option<(String, u32)>,
    /// The caller's W3C `traceparent`, continued by the forwarded delivery.
    pub traceparent: Option<String>,
}

/// What planners read of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSnapshot {
    pub state: JobState,
    pub attempts: u32,
    pub operation: Operation,
}

/// Plans withdrawing a practice whose current delivery is `current_job`.
/// A delivery the vendor never saw is cancelled; one it may have seen is
/// cancelled (if not running) and the withdrawal forwarded as a new
/// delivery `new_operation_id`, when the route forwards withdrawals.
pub fn plan_withdrawal(
    state: PracticeState,
    current_job: Option<JobSnapshot>,
    w: &Withdrawal,
    new_operation_id: &str,
    now: DateTime<Utc>,
) -> Result<Plan, Refused> {
    if state.status.is_terminal() {
        return Err(Refused(format!(
            "the practice is already {}: it can no longer be withdrawn",
            state.status
        )));
    }
    let mut plan = Plan::from_state(state);
    let mut status = w.draft_actor.clone();
    status.kind = EventKind::StatusChanged;
    status.from_status = Some(plan.state.status);
    status.to_status = Some(AdminStatus::Withdrawn);
    status.reason = w.reason.clone();
    plan.events.push(status);
    plan.state.status = AdminStatus::Withdrawn;
    plan.outcome = Some(super::OutcomeChange {
        concluded_at: Some(now),
        terminal: true,
        reason: w.reason.clone(),
        ..Default::default()
    });

    let mut vendor_may_know = false;
    if let (Some(op), Some(job)) = (plan.state.current_operation_id.clone(), current_job) {
        match job.state {
            JobState::Due | JobState::Dead | JobState::Polling => {
                vendor_may_know = job.attempts > 0;
                plan.job = Some(JobUpdate::to(&op, JobState::Cancelled));
                let draft =
                    EventDraft::delivery(EventSource::Hub, "hub", None, DeliveryStatus::Cancelled)
                        .reason("the practice was withdrawn");
                plan.move_delivery(DeliveryStatus::Cancelled, draft);
            }
            // Running, or already answered: the vendor may know it.
            _ => vendor_may_know = true,
        }
    }
    if let Some((adapter, max_attempts)) = w.forward_to.clone().filter(|_| vendor_may_know) {
        plan.new_job = Some(NewJob {
            operation_id: new_operation_id.to_string(),
            adapter: adapter.clone(),
            operation: Operation::Withdraw,
            state: JobState::Due,
            attempts: 0,
            max_attempts,
            next_attempt_at: now,
            traceparent: w.traceparent.clone(),
        });
        plan.state.current_operation_id = Some(new_operation_id.to_string());
        // A new delivery starts: its status is not a transition of the
        // previous one.
        plan.state.delivery_status = None;
        let draft = EventDraft::delivery(EventSource::Hub, "hub", None, DeliveryStatus::Queued)
            .reason(format!("withdrawal to adapter {adapter}"));
        plan.move_delivery(DeliveryStatus::Queued, draft);
    }
    Ok(plan)
}

/// Plans putting the dead-lettered delivery `operation_id` back in the
/// queue, same operation id, attempts counted from zero.
pub fn plan_replay(
    state: PracticeState,
    job: JobSnapshot,
    operation_id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Plan, Refused> {
    if job.state != JobState::Dead {
        return Err(Refused(format!(
            "delivery {operation_id} is not dead-lettered (it is {})",
            job.state
        )));
    }
    if job.operation == Operation::Submit && state.status.is_terminal() {
        return Err(Refused(format!(
            "the practice is already {}: its submission will not be sent again",
            state.status
        )));
    }
    let mut plan = Plan::from_state(state);
    let mut update = JobUpdate::to(operation_id, JobState::Due);
    update.next_attempt_at = Some(now);
    update.reset_attempts = true;
    plan.job = Some(update);
    if plan.state.is_current(operation_id) {
        let draft =
            EventDraft::delivery(EventSource::Operator, actor, None, DeliveryStatus::Queued)
                .reason("replayed by an operator");
        plan.move_delivery(DeliveryStatus::Queued, draft);
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::fixtures::state;

    fn request(forward: bool) -> Withdrawal {
        Withdrawal {
            tenant_id: "016024".into(),
            practice_id: "p-1".into(),
            reason: Some("moved away".into()),
            draft_actor: EventDraft::status(
                EventSource::Applicant,
                "applicant",
                AdminStatus::Submitted,
                AdminStatus::Withdrawn,
            ),
            forward_to: forward.then(|| ("tributi".to_string(), 3)),
            traceparent: None,
        }
    }

    fn job(state: JobState, attempts: u32) -> Option<JobSnapshot> {
        Some(JobSnapshot {
            state,
            attempts,
            operation: Operation::Submit,
        })
    }

    #[test]
    fn a_delivery_never_sent_is_cancelled_and_nothing_forwarded() {
        let plan = plan_withdrawal(
            state(AdminStatus::Submitted, DeliveryStatus::Queued),
            job(JobState::Due, 0),
            &request(true),
            "op-2",
            Utc::now(),
        )
        .unwrap();
        assert_eq!(plan.state.status, AdminStatus::Withdrawn);
        assert_eq!(plan.job.unwrap().state, JobState::Cancelled);
        assert_eq!(plan.state.delivery_status, Some(DeliveryStatus::Cancelled));
        assert!(plan.new_job.is_none());
        assert!(plan.outcome.unwrap().terminal);
    }

    #[test]
    fn a_delivery_the_vendor_may_have_seen_is_followed_by_the_withdrawal() {
        let plan = plan_withdrawal(
            state(AdminStatus::Registered, DeliveryStatus::Acknowledged),
            job(JobState::Done, 1),
            &request(true),
            "op-2",
            Utc::now(),
        )
        .unwrap();
        assert!(plan.job.is_none(), "a finished delivery stays as it is");
        let forwarded = plan.new_job.unwrap();
        assert_eq!(forwarded.operation, Operation::Withdraw);
        assert_eq!(plan.state.current_operation_id.as_deref(), Some("op-2"));
        assert_eq!(plan.state.delivery_status, Some(DeliveryStatus::Queued));
        // The new delivery's first event has no "from".
        assert_eq!(plan.events.last().unwrap().from_delivery, None);
    }

    #[test]
    fn a_retrying_delivery_is_cancelled_and_the_withdrawal_forwarded() {
        let plan = plan_withdrawal(
            state(AdminStatus::Submitted, DeliveryStatus::Retrying),
            job(JobState::Due, 2),
            &request(true),
            "op-2",
            Utc::now(),
        )
        .unwrap();
        assert_eq!(plan.job.unwrap().state, JobState::Cancelled);
        assert!(plan.new_job.is_some());
    }

    #[test]
    fn a_concluded_practice_cannot_be_withdrawn() {
        let refused = plan_withdrawal(
            state(AdminStatus::Approved, DeliveryStatus::Acknowledged),
            job(JobState::Done, 1),
            &request(false),
            "op-2",
            Utc::now(),
        );
        assert!(refused.unwrap_err().0.contains("APPROVED"));
    }

    #[test]
    fn only_a_dead_letter_is_replayed_and_only_while_the_practice_is_open() {
        let dead = JobSnapshot {
            state: JobState::Dead,
            attempts: 3,
            operation: Operation::Submit,
        };
        let plan = plan_replay(
            state(AdminStatus::Submitted, DeliveryStatus::DeadLettered),
            dead,
            "op-1",
            "operator-1",
            Utc::now(),
        )
        .unwrap();
        let update = plan.job.unwrap();
        assert!(update.reset_attempts);
        assert_eq!(plan.state.delivery_status, Some(DeliveryStatus::Queued));
        let due = JobSnapshot {
            state: JobState::Due,
            ..dead
        };
        assert!(
            plan_replay(
                state(AdminStatus::Submitted, DeliveryStatus::Queued),
                due,
                "op-1",
                "o",
                Utc::now()
            )
            .is_err()
        );
        assert!(
            plan_replay(
                state(AdminStatus::Approved, DeliveryStatus::DeadLettered),
                dead,
                "op-1",
                "o",
                Utc::now()
            )
            .is_err()
        );
    }
}
