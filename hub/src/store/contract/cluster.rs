//! What hub instances sharing a store agree on: an adapter's limit on work
//! in flight counts every instance's work, a singleton has one holder at a
//! time, and heartbeats count the instances alive.

use super::outbox::delivery_trail;
use super::*;
use crate::domain::status::DeliveryStatus;
use crate::store::AttemptResult;
use chrono::Duration;
use raccordo_adapters::VendorReply;

/// A lease of another hub instance.
fn lease_of(owner: &str) -> Lease {
    Lease {
        owner: owner.into(),
        ..lease()
    }
}

pub(super) async fn claims_stay_within_the_adapters_limit_across_instances(b: &Backend) {
    for i in 1..=5 {
        insert(b, practice(&format!("p-{i}"))).await;
    }
    insert(
        b,
        NewPractice {
            adapter: OTHER_ADAPTER.into(),
            ..practice("q-1")
        },
    )
    .await;
    let t = now() + Duration::minutes(1);
    let first = b
        .claim_work(ADAPTER, &lease_of("hub-a"), t, 10, 2)
        .await
        .unwrap();
    assert_eq!(first.jobs.len(), 2, "up to the limit");
    assert!(!first.saturated);
    let second = b
        .claim_work(ADAPTER, &lease_of("hub-b"), t, 10, 2)
        .await
        .unwrap();
    assert!(second.jobs.is_empty(), "hub-a's attempts count for hub-b");
    assert!(second.saturated, "said, so the worker does not spin");
    let theirs = b
        .claim_work(OTHER_ADAPTER, &lease_of("hub-b"), t, 10, 2)
        .await
        .unwrap();
    assert_eq!(theirs.jobs.len(), 1, "each adapter has its own limit");

    // A synchronous submission at the limit is stored due, for a worker.
    let (outcome, job) = b
        .insert_practice_claimed(
            NewPractice {
                mode: Mode::Sync,
                ..practice("p-6")
            },
            &lease_of("hub-c"),
            2,
        )
        .await
        .unwrap();
    assert!(matches!(outcome, InsertOutcome::Created), "{outcome:?}");
    assert!(job.is_none(), "not claimed beyond the limit");
    assert_eq!(delivery_trail(b, "p-6").await, [DeliveryStatus::Queued]);

    // An attempt that ends frees its slot, for any instance.
    let delivered = AttemptResult::Delivered(VendorReply::default());
    b.finish_attempt(&first.jobs[0], delivered, false)
        .await
        .unwrap();
    let third = b
        .claim_work(ADAPTER, &lease_of("hub-c"), t, 10, 2)
        .await
        .unwrap();
    assert_eq!(third.jobs.len(), 1, "one slot was freed");
    assert!(
        b.claim_work(ADAPTER, &lease_of("hub-b"), t, 10, 2)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    // A lease that ran out (its holder died) counts no more, even before
    // a sweep ends it.
    let later = t + Duration::seconds(31);
    let after = b
        .claim_work(ADAPTER, &lease_of("hub-b"), later, 10, 2)
        .await
        .unwrap();
    assert_eq!(after.jobs.len(), 2, "{after:?}");
}

pub(super) async fn a_synchronous_claim_counts_against_the_limit(b: &Backend) {
    let sync = |id: &str| NewPractice {
        mode: Mode::Sync,
        ..practice(id)
    };
    let (_, job) = b
        .insert_practice_claimed(sync("p-1"), &lease_of("hub-a"), 1)
        .await
        .unwrap();
    assert!(job.is_some(), "a free slot: claimed with the insert");
    insert(b, practice("p-2")).await;
    let work = b
        .claim_work(ADAPTER, &lease_of("hub-b"), now(), 10, 1)
        .await
        .unwrap();
    assert!(work.jobs.is_empty() && work.saturated, "{work:?}");
    let (_, job) = b
        .insert_practice_claimed(sync("p-3"), &lease_of("hub-b"), 1)
        .await
        .unwrap();
    assert!(job.is_none(), "the slot is taken");
}

pub(super) async fn a_singleton_has_one_holder_until_its_lease_runs_out(b: &Backend) {
    let t = now();
    let at = |s: i64| t + Duration::seconds(s);
    let hold = |owner: &'static str, from: i64, to: i64| async move {
        b.hold_singleton("file-scan:anagrafe", owner, at(from), at(to))
            .await
            .unwrap()
    };
    assert!(hold("hub-a", 0, 30).await, "free: taken");
    assert!(!hold("hub-b", 10, 40).await, "held by hub-a");
    assert!(
        b.hold_singleton("store-gauges", "hub-b", at(10), at(40))
            .await
            .unwrap(),
        "each singleton has its own holder"
    );
    assert!(hold("hub-a", 20, 50).await, "renewed by its holder");
    assert!(!hold("hub-b", 45, 75).await, "the renewal holds");
    // hub-a stops renewing: its lease runs out, hub-b takes over.
    assert!(hold("hub-b", 50, 80).await, "taken once run out");
    assert!(!hold("hub-a", 55, 85).await, "lost");
    // Given up: free at once.
    assert!(!hold("hub-b", 60, 60).await, "released, not held");
    assert!(hold("hub-a", 61, 91).await, "taken before the old expiry");
}

pub(super) async fn heartbeats_count_the_instances_alive(b: &Backend) {
    let t = now();
    let at = |s: i64| t + Duration::seconds(s);
    assert_eq!(b.heartbeat("hub-a", at(0), at(30)).await.unwrap(), 1);
    assert_eq!(b.heartbeat("hub-b", at(1), at(31)).await.unwrap(), 2);
    assert_eq!(b.heartbeat("hub-a", at(10), at(40)).await.unwrap(), 2);
    // hub-b stopped beating: gone once its last heartbeat ran out.
    assert_eq!(b.heartbeat("hub-a", at(32), at(62)).await.unwrap(), 1);
    // Goodbye.
    assert_eq!(b.heartbeat("hub-a", at(33), at(33)).await.unwrap(), 0);
}
