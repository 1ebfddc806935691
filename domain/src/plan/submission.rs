//! A new practice: its first state, its first events and its first delivery.

use super::{NewJob, Plan, PracticeState};
use crate::job::JobState;
use crate::model::{AdminStatus, Operation};
use crate::practice::{EventDraft, EventSource, NewPractice};
use crate::status::DeliveryStatus;

/// Plans storing `new` with its first delivery `operation_id`. With
/// `claim`, the delivery is attempt 1 already in flight (a caller that
/// delivers at once), else it waits in the outbox.
pub fn plan_submission(new: &NewPractice, operation_id: &str, claim: bool) -> Plan {
    let delivery = if claim {
        DeliveryStatus::Sent
    } else {
        DeliveryStatus::Queued
    };
    let mut plan = Plan::from_state(PracticeState {
        status: AdminStatus::Submitted,
        delivery_status: Some(delivery),
        current_operation_id: Some(operation_id.to_string()),
        legal_term_days: new.legal_term_days,
        outcome_data: serde_json::Map::new(),
    });
    let (source, actor) = match new.content.channel.operator_id.as_str() {
        "" => (EventSource::Applicant, "applicant"),
        operator => (EventSource::Operator, operator),
    };
    let mut submitted = EventDraft::status(
        source,
        actor,
        AdminStatus::Submitted,
        AdminStatus::Submitted,
    );
    submitted.from_status = None;
    submitted.occurred_at = Some(new.received_at);
    let reason = if claim {
        format!(
            "attempt 1 of {} to adapter {}",
            new.max_attempts, new.adapter
        )
    } else {
        format!("to adapter {}", new.adapter)
    };
    let delivered = EventDraft::delivery(EventSource::Hub, "hub", None, delivery).reason(reason);
    plan.events = vec![submitted, delivered];
    plan.new_job = Some(NewJob {
        operation_id: operation_id.to_string(),
        adapter: new.adapter.clone(),
        operation: Operation::Submit,
        state: if claim {
            JobState::InFlight
        } else {
            JobState::Due
        },
        attempts: u32::from(claim),
        max_attempts: new.max_attempts,
        next_attempt_at: new.received_at,
        traceparent: new.traceparent.clone(),
    });
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mode::Mode;
    use crate::model::{Applicant, ChannelInfo, Person, Subject};
    use crate::practice::{EventKind, PracticeContent};
    use chrono::Utc;

    fn new_practice(operator: &str) -> NewPractice {
        NewPractice {
            id: "p-1".into(),
            tenant_id: "016024".into(),
            service_code: "TARI".into(),
            idempotency_key: "k".into(),
            content_hash: "h".into(),
            content: PracticeContent {
                applicant: Applicant {
                    subject: Subject::Person(Person::default()),
                    contacts: Default::default(),
                },
                submitter: None,
                channel: ChannelInfo {
                    operator_id: operator.into(),
                    ..ChannelInfo::default()
                },
                data: Default::default(),
            },
            attachments: Vec::new(),
            mode: Mode::Deferred,
            received_at: Utc::now(),
            legal_term_days: 30,
            adapter: "tributi".into(),
            max_attempts: 5,
            traceparent: None,
        }
    }

    #[test]
    fn a_deferred_submission_waits_in_the_outbox() {
        let plan = plan_submission(&new_practice(""), "op-1", false);
        assert_eq!(plan.state.delivery_status, Some(DeliveryStatus::Queued));
        let job = plan.new_job.unwrap();
        assert_eq!((job.state, job.attempts), (JobState::Due, 0));
        assert_eq!(plan.events.len(), 2);
        assert_eq!(plan.events[0].source, EventSource::Applicant);
        assert_eq!(plan.events[0].from_status, None);
        assert_eq!(plan.events[1].kind, EventKind::DeliveryChanged);
        assert_eq!(plan.events[1].reason.as_deref(), Some("to adapter tributi"));
    }

    #[test]
    fn a_claimed_submission_is_attempt_one_in_flight() {
        let plan = plan_submission(&new_practice("desk-7"), "op-1", true);
        assert_eq!(plan.state.delivery_status, Some(DeliveryStatus::Sent));
        let job = plan.new_job.unwrap();
        assert_eq!((job.state, job.attempts), (JobState::InFlight, 1));
        assert_eq!(plan.events[0].source, EventSource::Operator);
        assert_eq!(plan.events[0].actor, "desk-7");
        assert_eq!(
            plan.events[1].reason.as_deref(),
            Some("attempt 1 of 5 to adapter tributi")
        );
    }
}
