//! Outcome data: stored with the practice, merged result by result,
//! carried by the events of the results that set it, covered by the audit
//! trail, and refused whole when the check refuses it.

use super::*;
use crate::domain::practice::EventKind;
use crate::store::{AttemptResult, InboundVerdict, OutcomeCheck};
use raccordo_adapters::VendorReply;
use raccordo_adapters::adapter::{AnomalyClass, Correlation, InboundResult};
use raccordo_adapters::model::AdminStatus;
use serde_json::{Map, Value, json};

fn data(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

fn result(status: AdminStatus, outcome_data: Value, receipt: &str) -> InboundResult {
    InboundResult {
        adapter: ADAPTER.into(),
        tenant_id: None,
        correlation: Correlation::PracticeId("p-1".into()),
        reply: VendorReply {
            status: Some(status),
            outcome_data: data(outcome_data),
            ..Default::default()
        },
        receipt: Some(receipt.into()),
    }
}

/// A check that knows one service, TARI, with a number `importo_dovuto`
/// (typed from text) and a string `codice_avviso`.
fn tari_check() -> OutcomeCheck {
    Arc::new(|service: &str, data: &Map<String, Value>| {
        assert_eq!(service, "TARI", "checked for the practice's service");
        data.iter()
            .map(|(name, value)| match (name.as_str(), value) {
                ("importo_dovuto", Value::String(s)) => s
                    .parse::<f64>()
                    .map(|n| (name.clone(), json!(n)))
                    .map_err(|_| format!("outcome_data.{name}: must be a number")),
                ("importo_dovuto" | "codice_avviso", v) => Ok((name.clone(), v.clone())),
                _ => Err(format!("outcome_data.{name}: is not declared")),
            })
            .collect()
    })
}

pub(super) async fn outcome_data_is_merged_result_by_result_and_rides_on_its_events(b: &Backend) {
    insert(b, practice("p-1")).await;
    let job = claim_one(b).await;
    b.finish_attempt(
        &job,
        AttemptResult::Delivered(VendorReply {
            status: Some(AdminStatus::Registered),
            outcome_data: data(json!({"importo_dovuto": 120.5})),
            ..Default::default()
        }),
        false,
    )
    .await
    .unwrap();
    let p = get(b, "p-1").await;
    assert_eq!(p.outcome_data, data(json!({"importo_dovuto": 120.5})));
    // A later result adds a field and changes none: an event of its own.
    let verdict = b
        .apply_inbound_checked(
            &result(
                AdminStatus::Registered,
                json!({"codice_avviso": "3012", "importo_dovuto": "120.5"}),
                "r-1",
            ),
            Some(tari_check()),
        )
        .await
        .unwrap();
    assert_eq!(verdict, InboundVerdict::Applied);
    // The conclusion changes the amount.
    b.apply_inbound_checked(
        &result(
            AdminStatus::Approved,
            json!({"importo_dovuto": "99.0"}),
            "r-2",
        ),
        Some(tari_check()),
    )
    .await
    .unwrap();
    let p = get(b, "p-1").await;
    assert_eq!(p.status, AdminStatus::Approved);
    assert_eq!(
        p.outcome_data,
        data(json!({"importo_dovuto": 99.0, "codice_avviso": "3012"}))
    );
    let carrying: Vec<(EventKind, Option<AdminStatus>, Value)> = events(b, "p-1")
        .await
        .into_iter()
        .filter_map(|e| Some((e.kind, e.to_status, Value::Object(e.outcome_data?))))
        .collect();
    assert_eq!(
        carrying,
        [
            (
                EventKind::StatusChanged,
                Some(AdminStatus::Registered),
                json!({"importo_dovuto": 120.5})
            ),
            (
                EventKind::OutcomeData,
                None,
                json!({"codice_avviso": "3012"})
            ),
            (
                EventKind::StatusChanged,
                Some(AdminStatus::Approved),
                json!({"importo_dovuto": 99.0})
            ),
        ]
    );
    let report = (b.verify_audit)(None);
    assert!(report.is_intact(), "{report:?}");
}

pub(super) async fn outcome_data_the_check_refuses_refuses_the_result_whole(b: &Backend) {
    insert(b, practice("p-1")).await;
    let job = claim_one(b).await;
    b.finish_attempt(
        &job,
        AttemptResult::Delivered(VendorReply {
            status: Some(AdminStatus::Registered),
            ..Default::default()
        }),
        false,
    )
    .await
    .unwrap();
    let before = events(b, "p-1").await.len();
    for (bad, field) in [
        (json!({"importo_dovuto": "tanti"}), "importo_dovuto"),
        (json!({"sconosciuto": 1}), "sconosciuto"),
    ] {
        let refused = b
            .apply_inbound_checked(
                &result(AdminStatus::Approved, bad, &format!("bad-{field}")),
                Some(tari_check()),
            )
            .await;
        match refused {
            Err(StoreError::Conflict(reason)) => {
                assert!(
                    reason.contains(&format!("outcome_data.{field}")),
                    "{reason}"
                )
            }
            other => panic!("expected a conflict naming {field}: {other:?}"),
        }
    }
    let p = get(b, "p-1").await;
    assert_eq!(p.status, AdminStatus::Registered, "nothing applied");
    assert!(p.outcome_data.is_empty());
    assert_eq!(events(b, "p-1").await.len(), before);
    // Refused before its receipt was kept: the corrected result, sent
    // again under the same receipt, is applied.
    let fixed = b
        .apply_inbound_checked(
            &result(
                AdminStatus::Approved,
                json!({"importo_dovuto": "7"}),
                "bad-importo_dovuto",
            ),
            Some(tari_check()),
        )
        .await
        .unwrap();
    assert_eq!(fixed, InboundVerdict::Applied);
    assert_eq!(
        get(b, "p-1").await.outcome_data,
        data(json!({"importo_dovuto": 7.0}))
    );
}

pub(super) async fn new_outcome_data_on_a_concluded_practice_is_a_late_anomaly(b: &Backend) {
    insert(b, practice("p-1")).await;
    let job = claim_one(b).await;
    b.finish_attempt(
        &job,
        AttemptResult::Delivered(VendorReply {
            status: Some(AdminStatus::Approved),
            outcome_data: data(json!({"importo_dovuto": 10})),
            ..Default::default()
        }),
        false,
    )
    .await
    .unwrap();
    // The same data again changes nothing.
    let same = b
        .apply_inbound(&result(
            AdminStatus::Approved,
            json!({"importo_dovuto": 10}),
            "r-1",
        ))
        .await
        .unwrap();
    assert_eq!(same, InboundVerdict::Applied);
    let late = b
        .apply_inbound(&result(
            AdminStatus::Approved,
            json!({"importo_dovuto": 12}),
            "r-2",
        ))
        .await
        .unwrap();
    assert!(
        matches!(&late, InboundVerdict::Anomaly { anomaly, first: true } if anomaly.class == AnomalyClass::Late
            && anomaly.reason.contains("outcome data importo_dovuto")),
        "{late:?}"
    );
    assert_eq!(
        get(b, "p-1").await.outcome_data,
        data(json!({"importo_dovuto": 10})),
        "not merged"
    );
    let last = events(b, "p-1").await.pop().unwrap();
    assert_eq!(last.kind, EventKind::Anomaly);
    assert_eq!(
        last.outcome_data,
        Some(data(json!({"importo_dovuto": 12}))),
        "what arrived"
    );
    assert!((b.verify_audit)(None).is_intact());
}
