//! Withdrawals: cancelled when the vendor never saw the practice,
//! forwarded when it may have.

use super::outbox::delivery_trail;
use super::*;
use crate::domain::practice::{EventDraft, EventSource};
use crate::domain::retry::RetryDecision;
use crate::domain::status::DeliveryStatus;
use crate::store::{AttemptResult, Withdrawal};
use raccordo_adapters::model::{AdminStatus, Operation};
use raccordo_adapters::{DeliveryError, FailureClass, VendorReply};

pub(super) fn withdrawal(id: &str, forward: bool) -> Withdrawal {
    Withdrawal {
        tenant_id: TENANT.into(),
        practice_id: id.into(),
        reason: Some("presentata per errore".into()),
        draft_actor: EventDraft::status(
            EventSource::Applicant,
            "applicant",
            AdminStatus::Submitted,
            AdminStatus::Withdrawn,
        ),
        forward_to: forward.then(|| (ADAPTER.to_string(), 3)),
        traceparent: None,
    }
}

pub(super) async fn withdrawing_a_never_sent_practice_cancels_its_delivery(b: &Backend) {
    insert(b, practice("p-1")).await;
    let forwarded = b.withdraw(withdrawal("p-1", true)).await.unwrap();
    assert_eq!(forwarded, None, "the vendor never saw it");
    let p1 = get(b, "p-1").await;
    assert_eq!(p1.status, AdminStatus::Withdrawn);
    assert!(p1.concluded_at.is_some());
    assert_eq!(
        p1.outcome.unwrap().reason.as_deref(),
        Some("presentata per errore")
    );
    assert_eq!(p1.delivery.unwrap().status, DeliveryStatus::Cancelled);
    let later = b
        .claim_work(
            ADAPTER,
            &lease(),
            now() + chrono::Duration::days(1),
            10,
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap();
    assert!(later.jobs.is_empty(), "nothing is sent");
    let last = events(b, "p-1").await;
    assert!(
        last.iter()
            .any(|e| e.to_status == Some(AdminStatus::Withdrawn))
    );
}

pub(super) async fn withdrawing_a_maybe_sent_practice_forwards_the_withdrawal(b: &Backend) {
    // Sent once, failing, waiting for a retry.
    insert(b, practice("p-1")).await;
    let job = claim_one(b).await;
    let retry = RetryDecision::RetryAfter(std::time::Duration::from_secs(60));
    let err = DeliveryError::new(FailureClass::OutcomeUnknown, "timeout");
    b.finish_attempt(&job, AttemptResult::Failed(err, retry), false)
        .await
        .unwrap();
    let forwarded = b.withdraw(withdrawal("p-1", true)).await.unwrap();
    assert_eq!(forwarded.as_deref(), Some(ADAPTER));
    let p1 = get(b, "p-1").await;
    assert_eq!(p1.status, AdminStatus::Withdrawn);
    let delivery = p1.delivery.unwrap();
    assert_eq!(delivery.operation, Operation::Withdraw);
    assert_eq!(delivery.status, DeliveryStatus::Queued);
    assert_ne!(delivery.operation_id, job.operation_id, "a new delivery");
    let trail = delivery_trail(b, "p-1").await;
    assert_eq!(
        trail[trail.len() - 2..],
        [DeliveryStatus::Cancelled, DeliveryStatus::Queued]
    );
    let work = b
        .claim_work(
            ADAPTER,
            &lease(),
            now() + chrono::Duration::days(1),
            10,
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap();
    assert_eq!(
        work.jobs.len(),
        1,
        "only the withdrawal, not the submission"
    );
    assert_eq!(work.jobs[0].operation, Operation::Withdraw);
    assert_eq!(work.jobs[0].operation_id, delivery.operation_id);
    // Its answer adds references; the practice stays withdrawn.
    b.finish_attempt(
        &work.jobs[0],
        AttemptResult::Delivered(VendorReply::default()),
        false,
    )
    .await
    .unwrap();
    assert_eq!(get(b, "p-1").await.status, AdminStatus::Withdrawn);

    // In flight right now: the submission finishes on its own, the
    // withdrawal follows it.
    insert(b, practice("p-2")).await;
    let in_flight = claim_one(b).await;
    let forwarded = b.withdraw(withdrawal("p-2", true)).await.unwrap();
    assert_eq!(forwarded.as_deref(), Some(ADAPTER));
    b.finish_attempt(
        &in_flight,
        AttemptResult::Delivered(VendorReply::default()),
        false,
    )
    .await
    .unwrap();
    let p2 = get(b, "p-2").await;
    assert_eq!(
        p2.status,
        AdminStatus::Withdrawn,
        "the late answer does not undo it"
    );
    assert_eq!(p2.delivery.unwrap().operation, Operation::Withdraw);

    // A route without withdrawals: the practice is withdrawn here only.
    insert(b, practice("p-3")).await;
    claim_one(b).await;
    assert_eq!(b.withdraw(withdrawal("p-3", false)).await.unwrap(), None);
    assert_eq!(get(b, "p-3").await.status, AdminStatus::Withdrawn);
}

pub(super) async fn withdrawing_a_concluded_practice_conflicts(b: &Backend) {
    insert(b, practice("p-1")).await;
    let job = claim_one(b).await;
    let refusal = DeliveryError::new(FailureClass::Rejection, "non ammissibile");
    b.finish_attempt(&job, AttemptResult::Rejected(refusal), false)
        .await
        .unwrap();
    assert_conflict(b.withdraw(withdrawal("p-1", true)).await);
    assert_eq!(get(b, "p-1").await.status, AdminStatus::Rejected);
    insert(b, practice("p-2")).await;
    b.withdraw(withdrawal("p-2", false)).await.unwrap();
    assert_conflict(b.withdraw(withdrawal("p-2", false)).await);
    // Another tenant's practice is not found, not refused.
    let theirs = Withdrawal {
        tenant_id: OTHER_TENANT.into(),
        ..withdrawal("p-1", false)
    };
    assert_not_found(b.withdraw(theirs).await);
    assert_not_found(b.withdraw(withdrawal("p-unknown", false)).await);
}
