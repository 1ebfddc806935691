//! The event log: per-practice sequences and hub-wide cursors.

use super::*;
use crate::store::EventFilter;

fn tenant_events() -> EventFilter {
    EventFilter {
        tenant_id: TENANT.into(),
        ..Default::default()
    }
}

pub(super) async fn events_carry_sequences_and_hub_wide_cursors(b: &Backend) {
    assert_eq!(b.last_cursor().await.unwrap(), 0, "an empty log");
    let earlier = now() - chrono::Duration::seconds(1);
    insert(
        b,
        NewPractice {
            received_at: earlier,
            ..practice("p-1")
        },
    )
    .await;
    insert(b, practice("p-2")).await;
    claim_one(b).await;

    let p1 = events(b, "p-1").await;
    let seqs: Vec<i64> = p1.iter().map(|e| e.sequence).collect();
    assert_eq!(seqs, [1, 2, 3], "submitted, queued, sent");
    assert!(
        p1.iter()
            .all(|e| e.practice_id == "p-1" && e.tenant_id == TENANT)
    );
    let from_two = b.practice_events(TENANT, "p-1", 2).await.unwrap();
    assert_eq!(from_two, p1[1..], "from a sequence, inclusive");
    assert!(
        b.practice_events(TENANT, "p-1", 4)
            .await
            .unwrap()
            .is_empty()
    );

    let all = b.events_after(&tenant_events(), 0, 100).await.unwrap();
    assert_eq!(all.len(), 5);
    assert!(
        all.windows(2).all(|w| w[0].cursor < w[1].cursor),
        "oldest first, cursors strictly increasing: {all:?}"
    );
    // The third event of the log is p-1's claim, after both submissions.
    assert_eq!((all[4].practice_id.as_str(), all[4].sequence), ("p-1", 3));
    assert_eq!(b.last_cursor().await.unwrap(), all[4].cursor);
    // Cursors are exclusive, and pages are bounded.
    let rest = b
        .events_after(&tenant_events(), all[1].cursor, 100)
        .await
        .unwrap();
    assert_eq!(rest, all[2..]);
    let page = b
        .events_after(&tenant_events(), all[1].cursor, 2)
        .await
        .unwrap();
    assert_eq!(page, all[2..4]);
    assert!(
        b.events_after(&tenant_events(), all[4].cursor, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // An event read either way is the same event.
    assert_eq!(p1[2], all[4]);
}

pub(super) async fn events_after_follows_the_filter(b: &Backend) {
    let other = "VRDGPP80A01H501U";
    insert(b, practice("p-1")).await;
    insert(
        b,
        NewPractice {
            service_code: "CERT".into(),
            ..practice("p-2")
        },
    )
    .await;
    insert(
        b,
        NewPractice {
            content: content(other),
            ..practice("p-3")
        },
    )
    .await;
    insert(
        b,
        NewPractice {
            tenant_id: OTHER_TENANT.into(),
            ..practice("p-4")
        },
    )
    .await;
    let practices = |filter: EventFilter| async move {
        let events = b.events_after(&filter, 0, 100).await.unwrap();
        assert!(
            events.iter().all(|e| e.tenant_id == filter.tenant_id),
            "{events:?}"
        );
        let mut ids: Vec<String> = events.into_iter().map(|e| e.practice_id).collect();
        ids.dedup();
        ids
    };
    assert_eq!(practices(tenant_events()).await, ["p-1", "p-2", "p-3"]);
    let by_applicant = EventFilter {
        applicant_id: Some(other.to_ascii_lowercase()),
        ..tenant_events()
    };
    assert_eq!(practices(by_applicant).await, ["p-3"], "case-insensitive");
    let by_service = EventFilter {
        service_code: Some("CERT".into()),
        ..tenant_events()
    };
    assert_eq!(practices(by_service).await, ["p-2"]);
    let both = EventFilter {
        applicant_id: Some(APPLICANT.into()),
        service_code: Some("TARI".into()),
        ..tenant_events()
    };
    assert_eq!(practices(both).await, ["p-1"]);
    let theirs = EventFilter {
        tenant_id: OTHER_TENANT.into(),
        ..Default::default()
    };
    assert_eq!(practices(theirs).await, ["p-4"]);
}
