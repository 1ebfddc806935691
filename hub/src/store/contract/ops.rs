//! What operators read: the outbox and practice counts, the audit trail.

use super::*;
use crate::domain::retry::RetryDecision;
use crate::store::{AttemptResult, AuditEntry, PracticeCount};
use chrono::Duration;
use raccordo_adapters::DeliveryError;

pub(super) async fn the_snapshot_counts_the_outbox_and_the_practices(b: &Backend) {
    b.ping().await.unwrap();
    let empty = b.ops_snapshot(now()).await.unwrap();
    assert!(empty.adapters.is_empty() && empty.practices.is_empty());
    let t0 = now() - Duration::minutes(5);
    // p-1 scheduled for a retry, p-2 in flight, p-3 dead, p-4 and p-5 due.
    for (i, id) in ["p-1", "p-2", "p-3"].into_iter().enumerate() {
        insert(
            b,
            NewPractice {
                received_at: t0 + Duration::seconds(i as i64),
                ..practice(id)
            },
        )
        .await;
    }
    let mut jobs = b
        .claim_work(ADAPTER, &lease(), now(), 3, MAX_IN_FLIGHT)
        .await
        .unwrap()
        .jobs
        .into_iter();
    let (p1, _p2, p3) = (
        jobs.next().unwrap(),
        jobs.next().unwrap(),
        jobs.next().unwrap(),
    );
    let retry = RetryDecision::RetryAfter(std::time::Duration::from_secs(3600));
    b.finish_attempt(
        &p1,
        AttemptResult::Failed(DeliveryError::transient("503"), retry),
        false,
    )
    .await
    .unwrap();
    let dead = RetryDecision::DeadLetter;
    b.finish_attempt(
        &p3,
        AttemptResult::Failed(DeliveryError::permanent("400"), dead),
        false,
    )
    .await
    .unwrap();
    insert(
        b,
        NewPractice {
            received_at: t0,
            ..practice("p-4")
        },
    )
    .await;
    insert(
        b,
        NewPractice {
            received_at: t0 + Duration::minutes(1),
            ..practice("p-5")
        },
    )
    .await;
    insert(
        b,
        NewPractice {
            adapter: OTHER_ADAPTER.into(),
            service_code: "CERT".into(),
            ..practice("p-6")
        },
    )
    .await;

    let at = now();
    let snap = b.ops_snapshot(at).await.unwrap();
    let ours = snap
        .adapters
        .iter()
        .find(|a| a.adapter == ADAPTER)
        .expect("listed");
    assert_eq!(
        (ours.due, ours.scheduled, ours.in_flight, ours.dead),
        (2, 1, 1, 1),
        "{ours:?}"
    );
    let age = ours.oldest_due_age.expect("something is due");
    let expected = (at - t0).to_std().unwrap();
    assert!(
        age >= expected - std::time::Duration::from_secs(1) && age <= expected,
        "{age:?}"
    );
    let theirs = snap
        .adapters
        .iter()
        .find(|a| a.adapter == OTHER_ADAPTER)
        .expect("listed");
    assert_eq!((theirs.due, theirs.in_flight), (1, 0));

    let count = |service: &str| PracticeCount {
        tenant: TENANT.into(),
        service: service.into(),
        status: "SUBMITTED".into(),
        count: 0,
    };
    let mut practices: Vec<_> = snap
        .practices
        .iter()
        .map(|c| {
            (
                c.tenant.clone(),
                c.service.clone(),
                c.status.clone(),
                c.count,
            )
        })
        .collect();
    practices.sort();
    let tari = count("TARI");
    let cert = count("CERT");
    assert_eq!(
        practices,
        [
            (cert.tenant, cert.service, cert.status, 1),
            (tari.tenant, tari.service, tari.status, 5),
        ]
    );
    assert!(snap.past_deadline.is_empty(), "nothing is late yet");
    let late = b.ops_snapshot(at + Duration::days(31)).await.unwrap();
    let late: i64 = late.past_deadline.iter().map(|c| c.count).sum();
    assert_eq!(late, 6, "open practices past their legal term");
    assert!(snap.store_bytes > 0);
}

pub(super) async fn audit_records_join_the_tenants_chain_without_events(b: &Backend) {
    insert(b, practice("p-1")).await;
    let cursor = b.last_cursor().await.unwrap();
    let refused = |tenant: Option<&str>| AuditEntry {
        tenant_id: tenant.map(str::to_string),
        actor: "portal-test".into(),
        action: "call_denied".into(),
        practice_id: Some("p-1".into()),
        detail: serde_json::json!({"rpc": "GetPractice", "reason": "wrong tenant"}),
    };
    b.record_audit(refused(Some(TENANT))).await.unwrap();
    b.record_audit(refused(None)).await.unwrap();
    insert(b, practice("p-2")).await;
    assert_eq!(
        b.last_cursor().await.unwrap(),
        cursor + 2,
        "audit records are not practice events"
    );
    let report = (b.verify_audit)(None);
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        report.records,
        2 + 1 + 1 + 2,
        "every event and both records"
    );
    assert_eq!(report.practices, 2, "a refused call is not a change");
}
