//! Results that arrive before the attempt they answer has ended, and
//! results that arrive late or contradict earlier ones.

use super::*;
use crate::domain::practice::EventKind;
use crate::domain::retry::RetryDecision;
use crate::domain::status::DeliveryStatus;
use crate::store::{AttemptResult, InboundVerdict};
use raccordo_adapters::adapter::{AnomalyClass, Correlation, InboundResult};
use raccordo_adapters::model::{AdminStatus, ExternalRef};
use raccordo_adapters::{DeliveryError, FailureClass, VendorReply};

fn protocol(value: &str) -> ExternalRef {
    ExternalRef {
        kind: "protocol".into(),
        value: value.into(),
        system: String::new(),
        issued_at: None,
    }
}

/// A result of [`ADAPTER`] with `status` and, if given, a protocol number.
fn result(
    correlation: Correlation,
    status: AdminStatus,
    protocol_number: Option<&str>,
    receipt: &str,
) -> InboundResult {
    InboundResult {
        adapter: ADAPTER.into(),
        tenant_id: None,
        correlation,
        reply: VendorReply {
            status: Some(status),
            external_refs: protocol_number.map(protocol).into_iter().collect(),
            ..Default::default()
        },
        receipt: Some(receipt.into()),
    }
}

/// The vendor's acknowledgement (a 202 saying `REGISTERED`).
fn acknowledged() -> AttemptResult {
    AttemptResult::Delivered(VendorReply {
        status: Some(AdminStatus::Registered),
        ..Default::default()
    })
}

/// (kind, to_status, to_delivery) of every event of `id`.
async fn trail(
    b: &Backend,
    id: &str,
) -> Vec<(EventKind, Option<AdminStatus>, Option<DeliveryStatus>)> {
    events(b, id)
        .await
        .into_iter()
        .map(|e| (e.kind, e.to_status, e.to_delivery))
        .collect()
}

pub(super) async fn a_result_for_a_delivery_in_flight_waits_and_follows_its_acknowledgement(
    b: &Backend,
) {
    insert(b, practice("p-1")).await;
    let job = claim_one(b).await;
    let by_op = || Correlation::OperationId(job.operation_id.clone());
    // The vendor calls back twice before its 202 is recorded.
    let first = result(by_op(), AdminStatus::InProgress, Some("2026/1"), "cb-1");
    assert_eq!(
        b.apply_inbound(&first).await.unwrap(),
        InboundVerdict::Pending
    );
    let second = result(by_op(), AdminStatus::Approved, Some("2026/1"), "cb-2");
    assert_eq!(
        b.apply_inbound(&second).await.unwrap(),
        InboundVerdict::Pending
    );
    // Stored, not applied: a repeat is a duplicate.
    assert_eq!(
        b.apply_inbound(&first).await.unwrap(),
        InboundVerdict::Duplicate
    );
    let p1 = get(b, "p-1").await;
    assert_eq!(p1.status, AdminStatus::Submitted);
    assert!(p1.external_refs.is_empty());
    let before = trail(b, "p-1").await;

    let recorded = b.finish_attempt(&job, acknowledged(), true).await.unwrap();
    assert_eq!(recorded.early_results, 2);
    assert!(recorded.anomalies.is_empty(), "{:?}", recorded.anomalies);
    let p1 = recorded.practice.expect("read back");
    assert_eq!(p1.status, AdminStatus::Approved);
    assert_eq!(p1.external_refs.len(), 1, "{:?}", p1.external_refs);
    // The acknowledgement first, then each result in arrival order.
    let after = trail(b, "p-1").await;
    assert_eq!(
        after[before.len()..],
        [
            (
                EventKind::DeliveryChanged,
                None,
                Some(DeliveryStatus::Acknowledged)
            ),
            (
                EventKind::StatusChanged,
                Some(AdminStatus::Registered),
                None
            ),
            (
                EventKind::StatusChanged,
                Some(AdminStatus::InProgress),
                None
            ),
            (EventKind::StatusChanged, Some(AdminStatus::Approved), None),
        ]
    );
    // Applied once: repeats change nothing, the attempt's end applies none again.
    for again in [&first, &second] {
        assert_eq!(
            b.apply_inbound(again).await.unwrap(),
            InboundVerdict::Duplicate
        );
    }
    assert_eq!(trail(b, "p-1").await, after);
}

pub(super) async fn a_result_waiting_for_an_attempt_whose_lease_runs_out_is_applied_by_the_sweep(
    b: &Backend,
) {
    insert(b, practice("p-1")).await;
    let job = claim_one(b).await;
    let by_id = result(
        Correlation::PracticeId("p-1".into()),
        AdminStatus::Registered,
        Some("2026/5"),
        "cb-1",
    );
    assert_eq!(
        b.apply_inbound(&by_id).await.unwrap(),
        InboundVerdict::Pending
    );
    let later = now() + chrono::Duration::minutes(5);
    let expired = b.expire_leases(later).await.unwrap();
    assert_eq!(expired.due_again, 1);
    assert!(expired.anomalies.is_empty());
    let p1 = get(b, "p-1").await;
    assert_eq!(p1.status, AdminStatus::Registered);
    assert_eq!(
        p1.delivery.as_ref().unwrap().status,
        DeliveryStatus::OutcomeUnknown
    );
    // The re-sent attempt's end has nothing left to apply.
    let again = b
        .claim_work(ADAPTER, &lease(), later, 1, MAX_IN_FLIGHT)
        .await
        .unwrap()
        .jobs
        .pop()
        .expect("due again");
    assert_eq!(again.operation_id, job.operation_id);
    let recorded = b
        .finish_attempt(&again, acknowledged(), false)
        .await
        .unwrap();
    assert_eq!(recorded.early_results, 0);
    let registered = trail(b, "p-1")
        .await
        .into_iter()
        .filter(|(k, s, _)| *k == EventKind::StatusChanged && *s == Some(AdminStatus::Registered))
        .count();
    assert_eq!(registered, 1, "applied once");
}

pub(super) async fn a_result_for_a_failed_attempt_is_applied_when_the_failure_is_recorded(
    b: &Backend,
) {
    insert(b, practice("p-1")).await;
    let job = claim_one(b).await;
    let early = result(
        Correlation::OperationId(job.operation_id.clone()),
        AdminStatus::Approved,
        None,
        "cb-1",
    );
    assert_eq!(
        b.apply_inbound(&early).await.unwrap(),
        InboundVerdict::Pending
    );
    // The 202 was lost: the attempt fails, yet the vendor had the request.
    let lost = DeliveryError::new(FailureClass::OutcomeUnknown, "no answer");
    let recorded = b
        .finish_attempt(
            &job,
            AttemptResult::Failed(lost, RetryDecision::RetryAfter(std::time::Duration::ZERO)),
            false,
        )
        .await
        .unwrap();
    assert_eq!(recorded.early_results, 1);
    assert_eq!(get(b, "p-1").await.status, AdminStatus::Approved);
}

pub(super) async fn a_late_result_is_an_anomaly_and_its_repeat_is_answered_the_same(b: &Backend) {
    insert(b, practice("p-1")).await;
    let by_id = || Correlation::PracticeId("p-1".into());
    let approved = result(by_id(), AdminStatus::Approved, Some("2026/1"), "cb-1");
    assert_eq!(
        b.apply_inbound(&approved).await.unwrap(),
        InboundVerdict::Applied
    );
    let seen = events(b, "p-1").await;
    // The same outcome again, without its receipt: nothing new, nothing done.
    let same = result(by_id(), AdminStatus::Approved, Some("2026/1"), "cb-2");
    assert_eq!(
        b.apply_inbound(&same).await.unwrap(),
        InboundVerdict::Applied
    );
    assert_eq!(events(b, "p-1").await, seen);
    // A second protocol number for the concluded practice.
    let late = result(by_id(), AdminStatus::Approved, Some("2026/2"), "cb-3");
    let InboundVerdict::Anomaly { anomaly, first } = b.apply_inbound(&late).await.unwrap() else {
        panic!("a late result is an anomaly");
    };
    assert!(first);
    assert_eq!(anomaly.class, AnomalyClass::Late);
    assert!(anomaly.reason.contains("2026/2"), "{anomaly:?}");
    let p1 = get(b, "p-1").await;
    let values: Vec<&str> = p1.external_refs.iter().map(|r| r.value.as_str()).collect();
    assert_eq!(values, ["2026/1"], "never merged");
    let all = events(b, "p-1").await;
    assert_eq!(all.len(), seen.len() + 1);
    let last = all.last().unwrap();
    assert_eq!(last.kind, EventKind::Anomaly);
    assert_eq!(last.actor, ADAPTER);
    assert_eq!(last.reason.as_deref(), Some(anomaly.reason.as_str()));
    // Its repeat is told the same, and records nothing again.
    let InboundVerdict::Anomaly { anomaly, first } = b.apply_inbound(&late).await.unwrap() else {
        panic!("a repeated anomaly is answered as one");
    };
    assert!(!first);
    assert_eq!(anomaly.class, AnomalyClass::Late);
    assert_eq!(events(b, "p-1").await, all);
    // Operators see it counted per adapter.
    let snapshot = b.ops_snapshot(now()).await.unwrap();
    let counted = snapshot
        .anomalies
        .iter()
        .find(|a| a.actor == ADAPTER)
        .expect("counted");
    assert_eq!(counted.count, 1);
    assert!(counted.last_at.is_some());
}

pub(super) async fn a_result_contradicting_an_earlier_one_is_an_anomaly(b: &Backend) {
    insert(b, practice("p-1")).await;
    let by_id = || Correlation::PracticeId("p-1".into());
    let registered = result(by_id(), AdminStatus::Registered, Some("2026/1"), "cb-1");
    assert_eq!(
        b.apply_inbound(&registered).await.unwrap(),
        InboundVerdict::Applied
    );
    let other = result(by_id(), AdminStatus::InProgress, Some("2026/9"), "cb-2");
    let InboundVerdict::Anomaly { anomaly, .. } = b.apply_inbound(&other).await.unwrap() else {
        panic!("a second protocol number contradicts the first");
    };
    assert_eq!(anomaly.class, AnomalyClass::Contradictory);
    let p1 = get(b, "p-1").await;
    assert_eq!(p1.status, AdminStatus::Registered, "not applied");
    assert_eq!(p1.external_refs.len(), 1);
    // A status the state machine does not allow from here.
    let backwards = result(by_id(), AdminStatus::Submitted, None, "cb-3");
    assert!(matches!(
        b.apply_inbound(&backwards).await.unwrap(),
        InboundVerdict::Anomaly { anomaly, first: true } if anomaly.class == AnomalyClass::Contradictory
    ));
    // A result that fits is still applied.
    let fits = result(by_id(), AdminStatus::InProgress, Some("2026/1"), "cb-4");
    assert_eq!(
        b.apply_inbound(&fits).await.unwrap(),
        InboundVerdict::Applied
    );
    assert_eq!(get(b, "p-1").await.status, AdminStatus::InProgress);
}

/// Results and the ends of the attempts they answer, racing: each result
/// is applied exactly once, after its acknowledgement, whichever wins.
pub(super) async fn results_racing_their_attempts_end_are_applied_once_after_it(b: &Backend) {
    const N: usize = 40;
    for i in 0..N {
        insert(b, practice(&format!("p-{i:02}"))).await;
    }
    let jobs = b
        .claim_work(
            ADAPTER,
            &lease(),
            now() + chrono::Duration::minutes(1),
            N as u32,
            MAX_IN_FLIGHT,
        )
        .await
        .unwrap()
        .jobs;
    assert_eq!(jobs.len(), N);
    let mut racing = tokio::task::JoinSet::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let store = Arc::clone(&b.store);
        racing.spawn(async move {
            let callback = result(
                Correlation::OperationId(job.operation_id.clone()),
                AdminStatus::Approved,
                Some(format!("2026/{i}").as_str()),
                &format!("cb-{}", job.operation_id),
            );
            let ack = async {
                if i % 2 == 0 {
                    tokio::task::yield_now().await;
                }
                store.finish_attempt(&job, acknowledged(), false).await
            };
            let (verdict, recorded) = tokio::join!(store.apply_inbound(&callback), ack);
            let (verdict, recorded) = (verdict.unwrap(), recorded.unwrap());
            // Pending exactly when the attempt's end applied it.
            match verdict {
                InboundVerdict::Pending => assert_eq!(recorded.early_results, 1),
                InboundVerdict::Applied => assert_eq!(recorded.early_results, 0),
                other => panic!("{other:?}"),
            }
            job.practice_id
        });
    }
    while let Some(id) = racing.join_next().await {
        let id = id.unwrap();
        let trail = trail(b, &id).await;
        let approvals = trail
            .iter()
            .filter(|(_, s, _)| *s == Some(AdminStatus::Approved))
            .count();
        assert_eq!(approvals, 1, "{id}: {trail:?}");
        assert!(
            trail.iter().all(|(k, _, _)| *k != EventKind::Anomaly),
            "{id}: {trail:?}"
        );
        let acknowledged = trail
            .iter()
            .position(|(_, _, d)| *d == Some(DeliveryStatus::Acknowledged))
            .expect("acknowledged");
        let approved = trail
            .iter()
            .position(|(_, s, _)| *s == Some(AdminStatus::Approved))
            .unwrap();
        assert!(acknowledged < approved, "{id}: {trail:?}");
    }
}
