//! The delivery outbox: claims, attempts, retries, dead letters, polls.

use super::*;
use crate::domain::retry::RetryDecision;
use crate::domain::status::DeliveryStatus;
use crate::store::{AttemptResult, ClaimedPoll};
use chrono::Duration;
use raccordo_adapters::adapter::FollowUp;
use raccordo_adapters::model::{AdminStatus, ExternalRef, Operation};
use raccordo_adapters::{DeliveryError, FailureClass, VendorReply};

fn delivery_of(p: &Practice) -> &crate::domain::practice::DeliveryView {
    p.delivery.as_ref().expect("a delivery")
}

/// The delivery statuses practice `id`'s events went through.
pub(super) async fn delivery_trail(b: &Backend, id: &str) -> Vec<DeliveryStatus> {
    events(b, id)
        .await
        .into_iter()
        .filter_map(|e| e.to_delivery)
        .collect()
}

pub(super) async fn claims_take_due_jobs_earliest_first_up_to_the_limit(b: &Backend) {
    let t0 = now() - Duration::minutes(10);
    let at = |s: i64| t0 + Duration::seconds(s);
    assert_eq!(b.next_due_at(ADAPTER).await.unwrap(), None, "nothing waits");
    // Inserted out of order: claims follow when jobs became due.
    insert(
        b,
        NewPractice {
            received_at: at(30),
            ..practice("p-3")
        },
    )
    .await;
    insert(
        b,
        NewPractice {
            received_at: at(10),
            ..practice("p-1")
        },
    )
    .await;
    insert(
        b,
        NewPractice {
            received_at: at(20),
            ..practice("p-2")
        },
    )
    .await;
    insert(
        b,
        NewPractice {
            received_at: at(0),
            adapter: OTHER_ADAPTER.into(),
            ..practice("p-other")
        },
    )
    .await;
    assert_eq!(b.next_due_at(ADAPTER).await.unwrap(), Some(at(10)));

    let nothing = b
        .claim_work(ADAPTER, &lease(), at(5), 10, MAX_IN_FLIGHT)
        .await
        .unwrap();
    assert!(
        nothing.jobs.is_empty() && nothing.polls.is_empty(),
        "none due yet"
    );
    let work = b
        .claim_work(ADAPTER, &lease(), at(25), 10, MAX_IN_FLIGHT)
        .await
        .unwrap();
    let ids: Vec<&str> = work.jobs.iter().map(|j| j.practice_id.as_str()).collect();
    assert_eq!(ids, ["p-1", "p-2"], "only what is due, earliest first");
    let job = &work.jobs[0];
    assert_eq!(job.tenant_id, TENANT);
    assert_eq!(job.adapter, ADAPTER);
    assert_eq!(job.operation, Operation::Submit);
    assert_eq!((job.attempt, job.max_attempts), (1, 3));
    assert_eq!(job.traceparent, practice("x").traceparent);
    assert_eq!(
        job.operation_id,
        delivery_of(&get(b, "p-1").await).operation_id
    );
    let p1 = get(b, "p-1").await;
    assert_eq!(delivery_of(&p1).status, DeliveryStatus::Sent);
    assert_eq!(delivery_of(&p1).attempts, 1);
    assert_eq!(
        delivery_trail(b, "p-1").await,
        [DeliveryStatus::Queued, DeliveryStatus::Sent]
    );
    // Claimed jobs are not claimed twice; the limit bounds a claim.
    assert_eq!(b.next_due_at(ADAPTER).await.unwrap(), Some(at(30)));
    let later = b
        .claim_work(ADAPTER, &lease(), at(60), 10, MAX_IN_FLIGHT)
        .await
        .unwrap();
    let ids: Vec<&str> = later.jobs.iter().map(|j| j.practice_id.as_str()).collect();
    assert_eq!(ids, ["p-3"]);
    assert_eq!(b.next_due_at(ADAPTER).await.unwrap(), None);
    let theirs = b
        .claim_work(OTHER_ADAPTER, &lease(), at(60), 1, MAX_IN_FLIGHT)
        .await
        .unwrap();
    assert_eq!(theirs.jobs.len(), 1, "each adapter claims its own");
    assert_eq!(theirs.jobs[0].practice_id, "p-other");
    insert(b, practice("p-4")).await;
    insert(b, practice("p-5")).await;
    let one = b
        .claim_work(
            ADAPTER,
            &lease(),
            now() + Duration::minutes(1),
            1,
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap();
    assert_eq!(one.jobs.len(), 1);
}

/// Delivers `job` with a reply that leaves the result to polling.
async fn accept_for_polling(b: &Backend, job: &ClaimedJob, token: &str) {
    let reply = VendorReply {
        status: Some(AdminStatus::Registered),
        follow_up: Some(FollowUp {
            token: token.into(),
            poll_after: std::time::Duration::from_secs(60),
            max_wait: std::time::Duration::from_secs(3600),
        }),
        ..Default::default()
    };
    b.finish_attempt(job, AttemptResult::Delivered(reply), false)
        .await
        .unwrap();
}

pub(super) async fn due_polls_are_claimed_before_deliveries(b: &Backend) {
    insert(b, practice("p-1")).await;
    let job = claim_one(b).await;
    accept_for_polling(b, &job, "status/1").await;
    let p1 = get(b, "p-1").await;
    assert_eq!(
        p1.status,
        AdminStatus::Registered,
        "the acceptance is applied"
    );
    assert_eq!(
        delivery_of(&p1).status,
        DeliveryStatus::Sent,
        "the result is awaited"
    );
    let early = b
        .claim_work(ADAPTER, &lease(), now(), 10, MAX_IN_FLIGHT)
        .await
        .unwrap();
    assert!(early.polls.is_empty() && early.jobs.is_empty(), "{early:?}");
    // A new submission is due, and so is the poll: the poll comes first.
    insert(b, practice("p-2")).await;
    let later = now() + Duration::minutes(2);
    let work = b
        .claim_work(ADAPTER, &lease(), later, 1, MAX_IN_FLIGHT)
        .await
        .unwrap();
    assert!(work.jobs.is_empty(), "the limit is spent on the poll");
    let [poll] = <[ClaimedPoll; 1]>::try_from(work.polls).expect("one poll");
    assert_eq!(poll.job.operation_id, job.operation_id);
    assert_eq!(poll.job.attempt, 1, "the attempt that was accepted");
    assert_eq!((poll.token.as_str(), poll.polls), ("status/1", 0));
    assert!(poll.deadline > now() + Duration::minutes(50));
    let work = b
        .claim_work(ADAPTER, &lease(), later, 10, MAX_IN_FLIGHT)
        .await
        .unwrap();
    assert!(
        work.polls.is_empty(),
        "a poll in flight is not claimed again"
    );
    assert_eq!(work.jobs.len(), 1);
    assert_eq!(work.jobs[0].practice_id, "p-2");
}

pub(super) async fn a_synchronous_submission_is_stored_claimed(b: &Backend) {
    let (outcome, job) = b
        .insert_practice_claimed(
            NewPractice {
                mode: Mode::Sync,
                ..practice("p-1")
            },
            &lease(),
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap();
    assert!(matches!(outcome, InsertOutcome::Created), "{outcome:?}");
    let job = job.expect("claimed with the insert");
    assert_eq!((job.practice_id.as_str(), job.attempt), ("p-1", 1));
    let p1 = get(b, "p-1").await;
    assert_eq!(p1.mode, Mode::Sync);
    assert_eq!(delivery_of(&p1).status, DeliveryStatus::Sent);
    assert_eq!(delivery_of(&p1).operation_id, job.operation_id);
    assert_eq!(delivery_trail(b, "p-1").await, [DeliveryStatus::Sent]);
    let work = b
        .claim_work(
            ADAPTER,
            &lease(),
            now() + Duration::minutes(1),
            10,
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap();
    assert!(work.jobs.is_empty(), "already in flight");
    let recorded = b
        .finish_attempt(&job, AttemptResult::Delivered(VendorReply::default()), true)
        .await
        .unwrap()
        .practice
        .expect("read back when asked");
    assert_eq!(recorded, get(b, "p-1").await);
    assert_eq!(delivery_of(&recorded).status, DeliveryStatus::Acknowledged);
}

pub(super) async fn a_delivered_attempt_records_status_references_and_documents(b: &Backend) {
    insert(b, practice("p-1")).await;
    let job = claim_one(b).await;
    let certificate = attachment("certificato.pdf");
    let reply = VendorReply {
        status: Some(AdminStatus::Approved),
        vendor_code: Some("OK".into()),
        reason: Some("rilasciato".into()),
        external_refs: vec![ExternalRef {
            kind: "protocol".into(),
            value: "2026/123".into(),
            system: String::new(),
            issued_at: None,
        }],
        documents: vec![certificate.clone()],
        ..Default::default()
    };
    let recorded = b
        .finish_attempt(&job, AttemptResult::Delivered(reply), true)
        .await
        .unwrap()
        .practice
        .expect("read back when asked");
    assert_eq!(recorded, get(b, "p-1").await);
    assert_eq!(recorded.status, AdminStatus::Approved);
    assert!(recorded.concluded_at.is_some());
    let delivery = delivery_of(&recorded);
    assert_eq!(delivery.status, DeliveryStatus::Acknowledged);
    assert_eq!(delivery.attempts, 1);
    let outcome = recorded.outcome.as_ref().expect("an outcome");
    assert_eq!(outcome.status, AdminStatus::Approved);
    assert_eq!(outcome.vendor_code.as_deref(), Some("OK"));
    assert_eq!(outcome.documents.len(), 1);
    assert_eq!(outcome.documents[0].meta, certificate.meta);
    assert!(outcome.documents[0].content.is_empty(), "metadata only");
    let refs: Vec<_> = recorded
        .external_refs
        .iter()
        .map(|r| (r.kind.as_str(), r.value.as_str(), r.system.as_str()))
        .collect();
    assert_eq!(
        refs,
        [("protocol", "2026/123", ADAPTER)],
        "the reporting adapter's"
    );
    let full = b.get_practice(TENANT, "p-1", true).await.unwrap();
    assert_eq!(full.outcome.unwrap().documents, [certificate]);
    assert_eq!(
        delivery_trail(b, "p-1").await,
        [
            DeliveryStatus::Queued,
            DeliveryStatus::Sent,
            DeliveryStatus::Acknowledged
        ]
    );
    let later = b
        .claim_work(
            ADAPTER,
            &lease(),
            now() + Duration::days(1),
            10,
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap();
    assert!(
        later.jobs.is_empty(),
        "a finished job is never claimed again"
    );
}

pub(super) async fn a_rejection_concludes_the_practice(b: &Backend) {
    insert(b, practice("p-1")).await;
    let job = claim_one(b).await;
    let refusal = DeliveryError {
        vendor_code: Some("E42".into()),
        ..DeliveryError::new(FailureClass::Rejection, "codice fiscale non residente")
    };
    b.finish_attempt(&job, AttemptResult::Rejected(refusal), false)
        .await
        .unwrap();
    let p1 = get(b, "p-1").await;
    assert_eq!(p1.status, AdminStatus::Rejected);
    assert!(p1.concluded_at.is_some());
    assert_eq!(delivery_of(&p1).status, DeliveryStatus::Acknowledged);
    let outcome = p1.outcome.expect("an outcome");
    assert_eq!(
        outcome.reason.as_deref(),
        Some("codice fiscale non residente")
    );
    assert_eq!(outcome.vendor_code.as_deref(), Some("E42"));
    let later = b
        .claim_work(
            ADAPTER,
            &lease(),
            now() + Duration::days(1),
            10,
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap();
    assert!(later.jobs.is_empty());
}

pub(super) async fn a_failure_with_attempts_left_is_due_again_later(b: &Backend) {
    insert(b, practice("p-1")).await;
    let first = claim_one(b).await;
    let retry = RetryDecision::RetryAfter(std::time::Duration::from_secs(60));
    let err = DeliveryError::transient("503 from the vendor");
    let before = now();
    b.finish_attempt(&first, AttemptResult::Failed(err, retry), false)
        .await
        .unwrap();
    let p1 = get(b, "p-1").await;
    let delivery = delivery_of(&p1);
    assert_eq!(delivery.status, DeliveryStatus::Retrying);
    assert_eq!(delivery.failure_class.as_deref(), Some("transient"));
    assert_eq!(delivery.last_error.as_deref(), Some("503 from the vendor"));
    let next = delivery.next_attempt_at.expect("scheduled");
    assert!(next >= before + Duration::seconds(60), "{next}");
    assert!(next <= now() + Duration::seconds(61), "{next}");
    assert_eq!(b.next_due_at(ADAPTER).await.unwrap(), Some(next));
    let early = b
        .claim_work(
            ADAPTER,
            &lease(),
            next - Duration::seconds(1),
            10,
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap();
    assert!(early.jobs.is_empty(), "not before the delay");
    let second = b
        .claim_work(ADAPTER, &lease(), next, 10, MAX_IN_FLIGHT)
        .await
        .unwrap()
        .jobs;
    assert_eq!(second.len(), 1);
    assert_eq!(
        second[0].operation_id, first.operation_id,
        "same operation id"
    );
    assert_eq!(second[0].attempt, 2);
    // A failure whose outcome is unknown says so.
    let unknown = DeliveryError::new(FailureClass::OutcomeUnknown, "timed out after sending");
    b.finish_attempt(&second[0], AttemptResult::Failed(unknown, retry), false)
        .await
        .unwrap();
    let p1 = get(b, "p-1").await;
    assert_eq!(delivery_of(&p1).status, DeliveryStatus::OutcomeUnknown);
    assert_eq!(
        delivery_of(&p1).failure_class.as_deref(),
        Some("outcome_unknown")
    );
    assert_eq!(p1.status, AdminStatus::Submitted, "the practice waits");
    assert_eq!(
        delivery_trail(b, "p-1").await,
        [
            DeliveryStatus::Queued,
            DeliveryStatus::Sent,
            DeliveryStatus::Retrying,
            DeliveryStatus::Sent,
            DeliveryStatus::OutcomeUnknown
        ]
    );
}

/// Claims and dead-letters the job of `id` (the only one due).
pub(super) async fn dead_letter(b: &Backend, id: &str) -> ClaimedJob {
    let job = claim_one(b).await;
    assert_eq!(job.practice_id, id);
    let err = DeliveryError::permanent("404: unknown service");
    b.finish_attempt(
        &job,
        AttemptResult::Failed(err, RetryDecision::DeadLetter),
        false,
    )
    .await
    .unwrap();
    job
}

pub(super) async fn a_failure_without_attempts_left_is_dead_lettered(b: &Backend) {
    insert(b, practice("p-1")).await;
    let job = dead_letter(b, "p-1").await;
    let p1 = get(b, "p-1").await;
    assert_eq!(delivery_of(&p1).status, DeliveryStatus::DeadLettered);
    assert_eq!(p1.status, AdminStatus::Submitted);
    let later = b
        .claim_work(
            ADAPTER,
            &lease(),
            now() + Duration::days(1),
            10,
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap();
    assert!(later.jobs.is_empty(), "a dead letter is not claimed");
    assert_eq!(b.next_due_at(ADAPTER).await.unwrap(), None);
    let dead = b.dead_letters(Some(TENANT), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let dl = &dead[0];
    assert_eq!(dl.operation_id, job.operation_id);
    assert_eq!(
        (dl.practice_id.as_str(), dl.tenant_id.as_str()),
        ("p-1", TENANT)
    );
    assert_eq!(
        (dl.adapter.as_str(), dl.service_code.as_str()),
        (ADAPTER, "TARI")
    );
    assert_eq!((dl.operation, dl.attempts), (Operation::Submit, 1));
    assert_eq!(dl.last_error.as_deref(), Some("404: unknown service"));
    assert_eq!(dl.failure_class.as_deref(), Some("permanent"));
    assert_eq!(b.dead_letters(None, 10).await.unwrap().len(), 1);
    assert!(
        b.dead_letters(Some(OTHER_TENANT), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Newest first, bounded.
    insert(b, practice("p-2")).await;
    dead_letter(b, "p-2").await;
    let dead = b.dead_letters(None, 10).await.unwrap();
    let ids: Vec<&str> = dead.iter().map(|d| d.practice_id.as_str()).collect();
    assert_eq!(ids, ["p-2", "p-1"]);
    assert_eq!(b.dead_letters(None, 1).await.unwrap().len(), 1);
}

pub(super) async fn a_replay_puts_a_dead_letter_back_with_its_operation_id(b: &Backend) {
    insert(b, practice("p-1")).await;
    let job = dead_letter(b, "p-1").await;
    let replayed = b.replay(&job.operation_id, "op-rossi").await.unwrap();
    assert_eq!(replayed.operation_id, job.operation_id);
    assert!(b.dead_letters(None, 10).await.unwrap().is_empty());
    let p1 = get(b, "p-1").await;
    assert_eq!(delivery_of(&p1).status, DeliveryStatus::Queued);
    let last = events(b, "p-1").await.pop().unwrap();
    assert_eq!(last.actor, "op-rossi");
    let again = claim_one(b).await;
    assert_eq!(again.operation_id, job.operation_id);
    assert_eq!(again.attempt, 1, "a fresh budget of attempts");
}

pub(super) async fn a_replay_refuses_what_is_not_dead_or_already_concluded(b: &Backend) {
    assert_not_found(b.replay("no-such-operation", "op").await);
    insert(b, practice("p-1")).await;
    let op = delivery_of(&get(b, "p-1").await).operation_id.clone();
    assert_conflict(b.replay(&op, "op").await);
    let job = dead_letter(b, "p-1").await;
    // The vendor concluded the practice through another channel.
    let approved = raccordo_adapters::adapter::InboundResult {
        adapter: ADAPTER.into(),
        tenant_id: None,
        correlation: raccordo_adapters::adapter::Correlation::PracticeId("p-1".into()),
        reply: VendorReply {
            status: Some(AdminStatus::Approved),
            ..Default::default()
        },
        receipt: None,
    };
    b.apply_inbound(&approved).await.unwrap();
    assert_conflict(b.replay(&job.operation_id, "op").await);
    assert_eq!(
        b.dead_letters(None, 10).await.unwrap().len(),
        1,
        "still dead"
    );
}

pub(super) async fn a_pending_poll_applies_progress_and_waits(b: &Backend) {
    insert(b, practice("p-1")).await;
    let job = claim_one(b).await;
    accept_for_polling(b, &job, "status/1").await;
    let poll = b
        .claim_work(
            ADAPTER,
            &lease(),
            now() + Duration::minutes(2),
            1,
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap()
        .polls
        .pop()
        .expect("a poll");
    let progress = VendorReply {
        status: Some(AdminStatus::InProgress),
        ..Default::default()
    };
    let next = now() + Duration::hours(1);
    b.reschedule_poll(&poll, Some(progress), Some("status/2".into()), next, None)
        .await
        .unwrap();
    assert_eq!(get(b, "p-1").await.status, AdminStatus::InProgress);
    let early = b
        .claim_work(
            ADAPTER,
            &lease(),
            next - Duration::seconds(1),
            10,
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap();
    assert!(early.polls.is_empty(), "not before the next poll");
    let poll = b
        .claim_work(ADAPTER, &lease(), next, 10, MAX_IN_FLIGHT)
        .await
        .unwrap()
        .polls
        .pop()
        .expect("due");
    assert_eq!((poll.token.as_str(), poll.polls), ("status/2", 1));
    // A hiccup of the status endpoint is kept, and the poll waits again.
    let hiccup = DeliveryError::transient("status endpoint 502");
    b.reschedule_poll(&poll, None, None, next + Duration::hours(1), Some(hiccup))
        .await
        .unwrap();
    let p1 = get(b, "p-1").await;
    assert_eq!(delivery_of(&p1).failure_class.as_deref(), Some("transient"));
    let poll = b
        .claim_work(
            ADAPTER,
            &lease(),
            next + Duration::hours(1),
            10,
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap()
        .polls
        .pop()
        .expect("due");
    assert_eq!(
        (poll.token.as_str(), poll.polls),
        ("status/2", 2),
        "the token is kept"
    );
    let done = VendorReply {
        status: Some(AdminStatus::Approved),
        ..Default::default()
    };
    b.finish_attempt(&poll.job, AttemptResult::Delivered(done), false)
        .await
        .unwrap();
    let p1 = get(b, "p-1").await;
    assert_eq!(p1.status, AdminStatus::Approved);
    assert_eq!(delivery_of(&p1).status, DeliveryStatus::Acknowledged);
    let after = b
        .claim_work(
            ADAPTER,
            &lease(),
            now() + Duration::days(1),
            10,
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap();
    assert!(after.polls.is_empty() && after.jobs.is_empty());
}
