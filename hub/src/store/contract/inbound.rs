//! Results that arrive after the delivery (callbacks, reply messages, files).

use super::*;
use crate::store::InboundVerdict;
use raccordo_adapters::VendorReply;
use raccordo_adapters::adapter::{Correlation, InboundResult};
use raccordo_adapters::model::{AdminStatus, ExternalRef};

fn result(adapter: &str, correlation: Correlation, status: AdminStatus) -> InboundResult {
    InboundResult {
        adapter: adapter.into(),
        tenant_id: None,
        correlation,
        reply: VendorReply {
            status: Some(status),
            ..Default::default()
        },
        receipt: None,
    }
}

fn by_protocol(value: &str) -> Correlation {
    Correlation::ExternalRef {
        kind: "protocol".into(),
        value: value.into(),
    }
}

pub(super) async fn inbound_results_find_their_practice_three_ways(b: &Backend) {
    insert(b, practice("p-1")).await;
    insert(b, practice("p-2")).await;
    let by_id = InboundResult {
        tenant_id: Some(TENANT.into()),
        reply: VendorReply {
            status: Some(AdminStatus::Registered),
            external_refs: vec![ExternalRef {
                kind: "protocol".into(),
                value: "2026/7".into(),
                system: String::new(),
                issued_at: None,
            }],
            ..Default::default()
        },
        ..result(
            ADAPTER,
            Correlation::PracticeId("p-1".into()),
            AdminStatus::Registered,
        )
    };
    assert_eq!(
        b.apply_inbound(&by_id).await.unwrap(),
        InboundVerdict::Applied
    );
    let p1 = get(b, "p-1").await;
    assert_eq!(p1.status, AdminStatus::Registered);
    assert_eq!(p1.external_refs[0].system, ADAPTER);
    let op = p1.delivery.unwrap().operation_id;
    let by_op = result(
        ADAPTER,
        Correlation::OperationId(op),
        AdminStatus::InProgress,
    );
    assert_eq!(
        b.apply_inbound(&by_op).await.unwrap(),
        InboundVerdict::Applied
    );
    assert_eq!(get(b, "p-1").await.status, AdminStatus::InProgress);
    let by_ref = result(ADAPTER, by_protocol("2026/7"), AdminStatus::Approved);
    assert_eq!(
        b.apply_inbound(&by_ref).await.unwrap(),
        InboundVerdict::Applied
    );
    let p1 = get(b, "p-1").await;
    assert_eq!(p1.status, AdminStatus::Approved);
    assert!(p1.concluded_at.is_some());
    let last = events(b, "p-1").await.pop().unwrap();
    assert_eq!(last.to_status, Some(AdminStatus::Approved));
    assert_eq!(last.actor, ADAPTER);
    assert_eq!(
        get(b, "p-2").await.status,
        AdminStatus::Submitted,
        "untouched"
    );
    for unknown in [
        Correlation::PracticeId("p-unknown".into()),
        Correlation::OperationId("op-unknown".into()),
        by_protocol("2026/8"),
    ] {
        assert_not_found(
            b.apply_inbound(&result(ADAPTER, unknown, AdminStatus::Approved))
                .await,
        );
    }
}

pub(super) async fn a_repeated_receipt_changes_nothing(b: &Backend) {
    insert(b, practice("p-1")).await;
    let first = InboundResult {
        receipt: Some("callback-1".into()),
        ..result(
            ADAPTER,
            Correlation::PracticeId("p-1".into()),
            AdminStatus::Registered,
        )
    };
    assert_eq!(
        b.apply_inbound(&first).await.unwrap(),
        InboundVerdict::Applied
    );
    let seen = events(b, "p-1").await;
    let again = InboundResult {
        reply: VendorReply {
            status: Some(AdminStatus::Approved),
            ..Default::default()
        },
        ..first.clone()
    };
    assert_eq!(
        b.apply_inbound(&again).await.unwrap(),
        InboundVerdict::Duplicate
    );
    assert_eq!(events(b, "p-1").await, seen, "no event");
    assert_eq!(get(b, "p-1").await.status, AdminStatus::Registered);
    // Receipts are per adapter instance and per receipt.
    let next = InboundResult {
        receipt: Some("callback-2".into()),
        ..again
    };
    assert_eq!(
        b.apply_inbound(&next).await.unwrap(),
        InboundVerdict::Applied
    );
    assert_eq!(get(b, "p-1").await.status, AdminStatus::Approved);
}

pub(super) async fn an_adapter_cannot_report_on_another_adapters_practice(b: &Backend) {
    insert(b, practice("p-1")).await;
    let registered = InboundResult {
        reply: VendorReply {
            status: Some(AdminStatus::Registered),
            external_refs: vec![ExternalRef {
                kind: "protocol".into(),
                value: "P-1".into(),
                system: String::new(),
                issued_at: None,
            }],
            ..Default::default()
        },
        ..result(
            ADAPTER,
            Correlation::PracticeId("p-1".into()),
            AdminStatus::Registered,
        )
    };
    // Another vendor, even knowing the practice id, finds nothing.
    let foreign = InboundResult {
        adapter: OTHER_ADAPTER.into(),
        ..registered.clone()
    };
    assert_not_found(b.apply_inbound(&foreign).await);
    let op = get(b, "p-1").await.delivery.unwrap().operation_id;
    let foreign_op = result(
        OTHER_ADAPTER,
        Correlation::OperationId(op),
        AdminStatus::Approved,
    );
    assert_not_found(b.apply_inbound(&foreign_op).await);
    assert_eq!(
        b.apply_inbound(&registered).await.unwrap(),
        InboundVerdict::Applied
    );
    // The reference the vendor gave is its own: only it can use it.
    let foreign_ref = result(OTHER_ADAPTER, by_protocol("P-1"), AdminStatus::Approved);
    assert_not_found(b.apply_inbound(&foreign_ref).await);
    assert_eq!(get(b, "p-1").await.status, AdminStatus::Registered);
    let own_ref = result(ADAPTER, by_protocol("P-1"), AdminStatus::Approved);
    assert_eq!(
        b.apply_inbound(&own_ref).await.unwrap(),
        InboundVerdict::Applied
    );
}
