//! Submissions, idempotency, reads and listings.

use super::*;
use crate::domain::practice::{EventKind, EventSource};
use crate::domain::status::DeliveryStatus;
use crate::store::{EventFilter, PracticeFilter};
use raccordo_adapters::VendorReply;
use raccordo_adapters::adapter::{Correlation, InboundResult};
use raccordo_adapters::model::{AdminStatus, Operation};

pub(super) async fn a_new_practice_is_stored_with_its_first_events(b: &Backend) {
    let new = practice("p-1");
    let received = new.received_at;
    let (outcome, stored) = b.insert_practice(new.clone(), true).await.unwrap();
    assert!(matches!(outcome, InsertOutcome::Created), "{outcome:?}");
    let stored = stored.expect("read back when asked");
    assert_eq!(stored, get(b, "p-1").await, "read back as stored");
    assert_eq!(stored.tenant_id, TENANT);
    assert_eq!(stored.service_code, "TARI");
    assert_eq!(stored.idempotency_key, "k-p-1");
    assert_eq!(stored.content, new.content);
    assert_eq!(stored.status, AdminStatus::Submitted);
    assert_eq!(stored.mode, Mode::Deferred);
    assert_eq!(stored.received_at, received);
    assert_eq!(
        stored.legal_deadline,
        Some(received + chrono::Duration::days(30))
    );
    assert_eq!(stored.concluded_at, None);
    assert_eq!(stored.outcome, None);
    let delivery = stored.delivery.expect("a delivery is queued");
    assert_eq!(delivery.status, DeliveryStatus::Queued);
    assert_eq!(delivery.operation, Operation::Submit);
    assert_eq!(delivery.adapter, ADAPTER);
    assert_eq!(delivery.attempts, 0);
    assert!(!delivery.operation_id.is_empty());

    let evs = events(b, "p-1").await;
    let shape: Vec<_> = evs
        .iter()
        .map(|e| (e.sequence, e.kind, e.to_status, e.to_delivery))
        .collect();
    assert_eq!(
        shape,
        [
            (
                1,
                EventKind::StatusChanged,
                Some(AdminStatus::Submitted),
                None
            ),
            (
                2,
                EventKind::DeliveryChanged,
                None,
                Some(DeliveryStatus::Queued)
            ),
        ]
    );
    assert_eq!(evs[0].source, EventSource::Applicant);
    assert_eq!(evs[0].occurred_at, received);
    assert_eq!(evs[0].applicant_id, APPLICANT);

    // Without read-back nothing is returned, and the practice is stored.
    let (outcome, none) = b.insert_practice(practice("p-2"), false).await.unwrap();
    assert!(matches!(outcome, InsertOutcome::Created) && none.is_none());
    assert_eq!(get(b, "p-2").await.id, "p-2");
}

pub(super) async fn an_attachment_is_read_with_its_bytes_only_when_asked(b: &Backend) {
    let doc = attachment("domanda.pdf");
    insert(
        b,
        NewPractice {
            attachments: vec![doc.clone(), attachment("id.pdf")],
            ..practice("p-1")
        },
    )
    .await;
    let light = get(b, "p-1").await;
    assert_eq!(light.attachments.len(), 2);
    assert_eq!(light.attachments[0].meta, doc.meta);
    assert!(light.attachments.iter().all(|a| a.content.is_empty()));
    let full = b.get_practice(TENANT, "p-1", true).await.unwrap();
    assert_eq!(full.attachments[0], doc, "in order, with their bytes");
    assert_eq!(full.attachments[1].meta.name, "id.pdf");
    let job = claim_one(b).await;
    let (payload, attachments) = b.delivery_payload(&job).await.unwrap();
    assert_eq!(payload.id, "p-1");
    assert_eq!(
        attachments, full.attachments,
        "the payload carries the bytes"
    );
}

pub(super) async fn a_reused_idempotency_key_finds_the_first_practice(b: &Backend) {
    insert(b, practice("p-1")).await;
    let again = NewPractice {
        id: "p-2".into(),
        idempotency_key: "k-p-1".into(),
        content_hash: "h-p-1".into(),
        ..practice("p-2")
    };
    let (outcome, stored) = b.insert_practice(again.clone(), true).await.unwrap();
    assert!(
        matches!(&outcome, InsertOutcome::Existing { id, same_content: true } if id == "p-1"),
        "{outcome:?}"
    );
    assert!(stored.is_none(), "nothing new to read back");
    let changed = NewPractice {
        content_hash: "h-other".into(),
        ..again.clone()
    };
    let (outcome, _) = b.insert_practice(changed.clone(), false).await.unwrap();
    assert!(
        matches!(&outcome, InsertOutcome::Existing { id, same_content: false } if id == "p-1"),
        "{outcome:?}"
    );
    // Claimed insertion answers the same and claims nothing.
    let (outcome, job) = b
        .insert_practice_claimed(changed, &lease(), MAX_IN_FLIGHT)
        .await
        .unwrap();
    assert!(
        matches!(&outcome, InsertOutcome::Existing { id, same_content: false } if id == "p-1"),
        "{outcome:?}"
    );
    assert!(job.is_none());
    let (outcome, job) = b
        .insert_practice_claimed(again, &lease(), MAX_IN_FLIGHT)
        .await
        .unwrap();
    assert!(
        matches!(
            &outcome,
            InsertOutcome::Existing {
                same_content: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(job.is_none());
    assert_not_found(b.get_practice(TENANT, "p-2", false).await);
    // One practice, one job.
    let all = b
        .list_practices(&tenant_filter(TENANT), None, 10)
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    claim_one(b).await;
    // Keys are per tenant: another tenant may use the same one.
    let theirs = NewPractice {
        id: "p-3".into(),
        tenant_id: OTHER_TENANT.into(),
        idempotency_key: "k-p-1".into(),
        ..practice("p-3")
    };
    let (outcome, _) = b.insert_practice(theirs, false).await.unwrap();
    assert!(matches!(outcome, InsertOutcome::Created), "{outcome:?}");
}

pub(super) fn tenant_filter(tenant: &str) -> PracticeFilter {
    PracticeFilter {
        tenant_id: tenant.into(),
        ..Default::default()
    }
}

pub(super) async fn another_tenants_practice_is_never_found(b: &Backend) {
    insert(b, practice("p-1")).await;
    assert_not_found(b.get_practice(OTHER_TENANT, "p-1", false).await);
    assert_not_found(b.get_practice(OTHER_TENANT, "p-1", true).await);
    assert_not_found(b.get_practice(TENANT, "p-unknown", false).await);
    // The events of a practice are read within its tenant: another tenant
    // is told it does not exist, or gets nothing.
    match b.practice_events(OTHER_TENANT, "p-1", 0).await {
        Err(StoreError::NotFound) => {}
        Ok(events) => assert!(events.is_empty(), "{events:?}"),
        Err(e) => panic!("{e}"),
    }
    let listed = b
        .list_practices(&tenant_filter(OTHER_TENANT), None, 10)
        .await
        .unwrap();
    assert!(listed.is_empty());
    let watched = b
        .events_after(
            &EventFilter {
                tenant_id: OTHER_TENANT.into(),
                ..Default::default()
            },
            0,
            10,
        )
        .await
        .unwrap();
    assert!(watched.is_empty());
    // A result that names the wrong tenant finds nothing either.
    let inbound = InboundResult {
        adapter: ADAPTER.into(),
        tenant_id: Some(OTHER_TENANT.into()),
        correlation: Correlation::PracticeId("p-1".into()),
        reply: VendorReply {
            status: Some(AdminStatus::Registered),
            ..Default::default()
        },
        receipt: None,
    };
    assert_not_found(b.apply_inbound(&inbound).await);
    assert_eq!(get(b, "p-1").await.status, AdminStatus::Submitted);
}

pub(super) async fn listing_filters_and_pages_newest_first(b: &Backend) {
    let t0 = now() - chrono::Duration::hours(1);
    let at = |minutes: i64| t0 + chrono::Duration::minutes(minutes);
    let other_applicant = "VRDGPP80A01H501U";
    insert(
        b,
        NewPractice {
            received_at: at(1),
            ..practice("p-1")
        },
    )
    .await;
    insert(
        b,
        NewPractice {
            received_at: at(2),
            service_code: "CERT".into(),
            ..practice("p-2")
        },
    )
    .await;
    insert(
        b,
        NewPractice {
            received_at: at(3),
            content: content(other_applicant),
            ..practice("p-3")
        },
    )
    .await;
    insert(
        b,
        NewPractice {
            received_at: at(4),
            ..practice("p-4")
        },
    )
    .await;
    insert(
        b,
        NewPractice {
            received_at: at(5),
            ..practice("p-5")
        },
    )
    .await;
    insert(
        b,
        NewPractice {
            tenant_id: OTHER_TENANT.into(),
            ..practice("p-6")
        },
    )
    .await;
    let registered = InboundResult {
        adapter: ADAPTER.into(),
        tenant_id: None,
        correlation: Correlation::PracticeId("p-4".into()),
        reply: VendorReply {
            status: Some(AdminStatus::Registered),
            ..Default::default()
        },
        receipt: None,
    };
    b.apply_inbound(&registered).await.unwrap();

    let ids = |list: Vec<Practice>| list.into_iter().map(|p| p.id).collect::<Vec<_>>();
    let list = |filter: PracticeFilter, after: Option<&'static str>, limit: u32| async move {
        ids(b.list_practices(&filter, after, limit).await.unwrap())
    };
    let all = tenant_filter(TENANT);
    assert_eq!(
        list(all.clone(), None, 10).await,
        ["p-5", "p-4", "p-3", "p-2", "p-1"]
    );
    // Pages: `after` is exclusive, `limit` bounds each page.
    assert_eq!(list(all.clone(), None, 2).await, ["p-5", "p-4"]);
    assert_eq!(list(all.clone(), Some("p-4"), 2).await, ["p-3", "p-2"]);
    assert_eq!(list(all.clone(), Some("p-2"), 2).await, ["p-1"]);
    assert!(list(all.clone(), Some("p-1"), 2).await.is_empty());
    // Every filter, alone and combined.
    let applicant = PracticeFilter {
        applicant_id: Some(other_applicant.to_ascii_lowercase()),
        ..all.clone()
    };
    assert_eq!(list(applicant, None, 10).await, ["p-3"], "case-insensitive");
    let service = PracticeFilter {
        service_code: Some("CERT".into()),
        ..all.clone()
    };
    assert_eq!(list(service, None, 10).await, ["p-2"]);
    let status = PracticeFilter {
        status: Some(AdminStatus::Registered),
        ..all.clone()
    };
    assert_eq!(list(status, None, 10).await, ["p-4"]);
    let window = PracticeFilter {
        submitted_from: Some(at(2)),
        submitted_to: Some(at(4)),
        ..all.clone()
    };
    assert_eq!(
        list(window, None, 10).await,
        ["p-3", "p-2"],
        "from inclusive, to exclusive"
    );
    let combined = PracticeFilter {
        applicant_id: Some(APPLICANT.into()),
        service_code: Some("TARI".into()),
        status: Some(AdminStatus::Submitted),
        submitted_from: Some(at(1)),
        submitted_to: None,
        ..all.clone()
    };
    assert_eq!(list(combined.clone(), None, 10).await, ["p-5", "p-1"]);
    assert_eq!(list(combined, Some("p-5"), 10).await, ["p-1"]);
    // Listed practices carry their delivery, as a read does.
    let listed = b.list_practices(&all, None, 1).await.unwrap();
    assert_eq!(listed[0], get(b, "p-5").await);
}
