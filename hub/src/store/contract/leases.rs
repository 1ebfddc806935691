//! Leases on work in flight: held against other owners, renewed by their
//! owner, expired by a sweep into work that is due again.

use super::outbox::delivery_trail;
use super::*;
use crate::domain::retry::RetryDecision;
use crate::domain::status::DeliveryStatus;
use crate::store::{AttemptResult, ExpiredLeases};
use chrono::Duration;
use raccordo_adapters::adapter::FollowUp;
use raccordo_adapters::model::AdminStatus;
use raccordo_adapters::{DeliveryError, VendorReply};

/// A lease of another hub instance.
fn other_lease() -> Lease {
    Lease {
        owner: "hub-b".into(),
        ..lease()
    }
}

fn due_again(n: usize) -> ExpiredLeases {
    ExpiredLeases {
        due_again: n,
        ..Default::default()
    }
}

/// Claims the one due job of [`ADAPTER`] at `at` under `lease`.
async fn claim_at(b: &Backend, lease: &Lease, at: DateTime<Utc>) -> Option<ClaimedJob> {
    let mut jobs = b
        .claim_work(ADAPTER, lease, at, 10, MAX_IN_FLIGHT)
        .await
        .unwrap()
        .jobs;
    assert!(jobs.len() <= 1, "{jobs:?}");
    jobs.pop()
}

fn approved() -> AttemptResult {
    AttemptResult::Delivered(VendorReply {
        status: Some(AdminStatus::Approved),
        ..Default::default()
    })
}

pub(super) async fn a_claimed_job_is_not_claimable_by_another_owner_before_its_lease_runs_out(
    b: &Backend,
) {
    insert(b, practice("p-1")).await;
    // After the insert: the job is due at `t`.
    let t = now();
    let job = claim_at(b, &lease(), t).await.expect("due");
    assert_eq!(job.owner, OWNER);
    let before = t + Duration::seconds(29);
    assert_eq!(
        b.expire_leases(before).await.unwrap(),
        ExpiredLeases::default()
    );
    assert!(claim_at(b, &other_lease(), before).await.is_none(), "held");
    let after = t + Duration::seconds(31);
    assert_eq!(b.expire_leases(after).await.unwrap(), due_again(1));
    let taken = claim_at(b, &other_lease(), after).await.expect("due again");
    assert_eq!(taken.operation_id, job.operation_id, "same operation id");
    assert_eq!((taken.attempt, taken.owner.as_str()), (2, "hub-b"));
}

pub(super) async fn a_renewed_lease_holds_past_its_first_expiry(b: &Backend) {
    insert(b, practice("p-1")).await;
    // After the insert: the job is due at `t`.
    let t = now();
    let job = claim_at(b, &lease(), t).await.expect("due");
    let ops = vec![job.operation_id.clone(), "op-not-running".to_string()];
    let held = b
        .renew_leases(OWNER, &ops, t + Duration::seconds(90))
        .await
        .unwrap();
    assert_eq!(
        held,
        std::slice::from_ref(&job.operation_id),
        "only what it holds"
    );
    assert!(
        b.renew_leases("hub-b", &ops, t + Duration::hours(1))
            .await
            .unwrap()
            .is_empty(),
        "another owner renews nothing"
    );
    assert!(b.renew_leases(OWNER, &[], t).await.unwrap().is_empty());
    let past_first = t + Duration::seconds(60);
    assert!(
        b.expire_leases(past_first).await.unwrap().is_empty(),
        "renewed"
    );
    assert!(claim_at(b, &other_lease(), past_first).await.is_none());
    assert_eq!(
        b.expire_leases(t + Duration::seconds(91)).await.unwrap(),
        due_again(1)
    );
    // Once expired, the lease is lost: renewing does not bring it back.
    let late = b
        .renew_leases(OWNER, &ops, t + Duration::hours(1))
        .await
        .unwrap();
    assert!(late.is_empty(), "{late:?}");
}

pub(super) async fn an_expired_lease_makes_the_delivery_outcome_unknown_once(b: &Backend) {
    insert(b, practice("p-1")).await;
    // After the insert: the job is due at `t`.
    let t = now();
    let job = claim_at(b, &lease(), t).await.expect("due");
    let later = t + Duration::minutes(1);
    assert_eq!(b.expire_leases(later).await.unwrap(), due_again(1));
    assert!(
        b.expire_leases(later).await.unwrap().is_empty(),
        "idempotent"
    );
    assert!(
        b.expire_leases(later + Duration::hours(1))
            .await
            .unwrap()
            .is_empty(),
        "a due job has no lease"
    );
    assert_eq!(
        delivery_trail(b, "p-1").await,
        [
            DeliveryStatus::Queued,
            DeliveryStatus::Sent,
            DeliveryStatus::OutcomeUnknown
        ],
        "exactly one OUTCOME_UNKNOWN"
    );
    let p1 = get(b, "p-1").await;
    let delivery = p1.delivery.unwrap();
    assert_eq!(delivery.status, DeliveryStatus::OutcomeUnknown);
    assert_eq!(delivery.operation_id, job.operation_id);
    assert_eq!(delivery.failure_class.as_deref(), Some("outcome_unknown"));
    assert_eq!(delivery.next_attempt_at, Some(later), "due at once");
    let snapshot = b.ops_snapshot(later).await.unwrap();
    let backlog = &snapshot.adapters[0];
    assert_eq!((backlog.due, backlog.in_flight), (1, 0));
    let again = claim_at(b, &lease(), later).await.expect("due again");
    assert_eq!(
        (again.operation_id.as_str(), again.attempt),
        (job.operation_id.as_str(), 2)
    );
}

pub(super) async fn a_lease_that_runs_out_on_the_last_attempt_dead_letters_it(b: &Backend) {
    let t = now();
    insert(
        b,
        NewPractice {
            max_attempts: 1,
            received_at: t,
            ..practice("p-1")
        },
    )
    .await;
    let job = claim_at(b, &lease(), t).await.expect("due");
    let expired = b.expire_leases(t + Duration::minutes(1)).await.unwrap();
    assert_eq!(
        expired,
        ExpiredLeases {
            dead_lettered: 1,
            ..Default::default()
        }
    );
    let dead = b.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].operation_id, job.operation_id);
    assert_eq!(dead[0].failure_class.as_deref(), Some("outcome_unknown"));
    assert_eq!(
        get(b, "p-1").await.delivery.unwrap().status,
        DeliveryStatus::DeadLettered
    );
}

pub(super) async fn a_synchronous_claim_is_leased_too(b: &Backend) {
    let (_, job) = b
        .insert_practice_claimed(practice("p-1"), &lease(), MAX_IN_FLIGHT)
        .await
        .unwrap();
    let job = job.expect("claimed");
    assert_eq!(job.owner, OWNER);
    let soon = now() + Duration::seconds(20);
    assert!(b.expire_leases(soon).await.unwrap().is_empty());
    let held = b
        .renew_leases(
            OWNER,
            std::slice::from_ref(&job.operation_id),
            soon + Duration::seconds(30),
        )
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert!(
        b.expire_leases(soon + Duration::seconds(29))
            .await
            .unwrap()
            .is_empty()
    );
    let later = soon + Duration::seconds(31);
    assert_eq!(b.expire_leases(later).await.unwrap(), due_again(1));
    let again = claim_at(b, &other_lease(), later).await.expect("due again");
    assert_eq!((again.operation_id, again.attempt), (job.operation_id, 2));
}

pub(super) async fn a_poll_whose_lease_runs_out_is_polled_again_without_resending(b: &Backend) {
    insert(b, practice("p-1")).await;
    let job = claim_one(b).await;
    let accepted = VendorReply {
        follow_up: Some(FollowUp {
            token: "status/1".into(),
            poll_after: std::time::Duration::from_secs(1),
            max_wait: std::time::Duration::from_secs(3600),
        }),
        ..Default::default()
    };
    b.finish_attempt(&job, AttemptResult::Delivered(accepted), false)
        .await
        .unwrap();
    let t = now() + Duration::seconds(2);
    let poll = b
        .claim_work(ADAPTER, &lease(), t, 10, MAX_IN_FLIGHT)
        .await
        .unwrap()
        .polls
        .pop()
        .expect("due");
    assert_eq!(poll.job.owner, OWNER);
    let trail = delivery_trail(b, "p-1").await;
    let renewed = b
        .renew_leases(
            OWNER,
            std::slice::from_ref(&job.operation_id),
            t + Duration::seconds(60),
        )
        .await
        .unwrap();
    assert_eq!(
        renewed.len(),
        1,
        "a poll in flight is renewed like a delivery"
    );
    let held = t + Duration::seconds(45);
    assert!(b.expire_leases(held).await.unwrap().is_empty());
    let other = b
        .claim_work(ADAPTER, &other_lease(), held, 10, MAX_IN_FLIGHT)
        .await
        .unwrap();
    assert!(other.polls.is_empty(), "held");
    let after = t + Duration::seconds(61);
    assert_eq!(
        b.expire_leases(after).await.unwrap(),
        ExpiredLeases {
            polls: 1,
            ..Default::default()
        }
    );
    assert_eq!(
        delivery_trail(b, "p-1").await,
        trail,
        "the delivery stays SENT"
    );
    // The slow poller's answer no longer moves the schedule.
    b.reschedule_poll(
        &poll,
        None,
        Some("status/stale".into()),
        after + Duration::hours(1),
        None,
    )
    .await
    .unwrap();
    let again = b
        .claim_work(ADAPTER, &other_lease(), after, 10, MAX_IN_FLIGHT)
        .await
        .unwrap();
    assert!(again.jobs.is_empty(), "nothing is re-sent");
    let again = again
        .polls
        .into_iter()
        .next()
        .expect("polled again at once");
    assert_eq!((again.token.as_str(), again.polls), ("status/1", 0));
    assert_eq!((again.job.attempt, again.job.owner.as_str()), (1, "hub-b"));
}

pub(super) async fn a_result_after_a_lost_lease_is_kept_only_if_it_concludes(b: &Backend) {
    insert(b, practice("p-1")).await;
    // After the insert: the job is due at `t`.
    let t = now();
    let slow = claim_at(b, &lease(), t).await.expect("due");
    let later = t + Duration::minutes(1);
    b.expire_leases(later).await.unwrap();
    let current = claim_at(b, &other_lease(), later).await.expect("due again");
    // A failure of the slow attempt does not touch the running one.
    let retry = RetryDecision::RetryAfter(std::time::Duration::from_secs(60));
    let failed = AttemptResult::Failed(DeliveryError::transient("503"), retry);
    b.finish_attempt(&slow, failed, false).await.unwrap();
    let held = b
        .renew_leases(
            "hub-b",
            std::slice::from_ref(&current.operation_id),
            later + Duration::minutes(1),
        )
        .await
        .unwrap();
    assert_eq!(held.len(), 1, "still in flight for its new owner");
    assert_eq!(
        get(b, "p-1").await.delivery.unwrap().status,
        DeliveryStatus::Sent
    );
    // Its conclusive answer is the vendor's answer to this operation id.
    b.finish_attempt(&slow, approved(), false).await.unwrap();
    let p1 = get(b, "p-1").await;
    assert_eq!(p1.status, AdminStatus::Approved);
    assert_eq!(p1.delivery.unwrap().status, DeliveryStatus::Acknowledged);
    let seen = events(b, "p-1").await;
    // The running attempt's answer then changes nothing.
    let rejected = AttemptResult::Rejected(DeliveryError::new(
        raccordo_adapters::FailureClass::Rejection,
        "duplicate",
    ));
    b.finish_attempt(&current, rejected, false).await.unwrap();
    assert_eq!(events(b, "p-1").await, seen);
    assert_eq!(get(b, "p-1").await.status, AdminStatus::Approved);

    // An answer after the sweep, before anyone took the job again.
    insert(
        b,
        NewPractice {
            received_at: t,
            ..practice("p-2")
        },
    )
    .await;
    let slow = claim_at(b, &lease(), t).await.expect("due");
    b.expire_leases(later).await.unwrap();
    b.finish_attempt(&slow, approved(), false).await.unwrap();
    let p2 = get(b, "p-2").await;
    assert_eq!(p2.status, AdminStatus::Approved);
    assert_eq!(p2.delivery.unwrap().status, DeliveryStatus::Acknowledged);
    assert!(claim_at(b, &lease(), later).await.is_none(), "finished");

    // An answer to a last attempt the sweep dead-lettered.
    insert(
        b,
        NewPractice {
            max_attempts: 1,
            received_at: t,
            ..practice("p-3")
        },
    )
    .await;
    let slow = claim_at(b, &lease(), t).await.expect("due");
    b.expire_leases(later).await.unwrap();
    assert_eq!(b.dead_letters(None, 10).await.unwrap().len(), 1);
    b.finish_attempt(&slow, approved(), false).await.unwrap();
    assert!(b.dead_letters(None, 10).await.unwrap().is_empty());
    assert_eq!(get(b, "p-3").await.status, AdminStatus::Approved);
}
