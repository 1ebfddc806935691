//! Reliable delivery: retries, dead letters, replay.

use crate::support::*;
use raccordo_proto::v1 as pb;
use serde_json::json;

#[tokio::test]
async fn vendor_503_then_200_is_retried_with_the_same_operation_id() {
    let vendor = Vendor::start().await;
    vendor.push(Answer::new(503, json!({"title": "in manutenzione"})).header("retry-after", "0"));
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let p = hub.submit(tari_request("016024", "retry")).await;
    let done = hub
        .wait_status("016024", &p.id, pb::AdministrativeStatus::Approved)
        .await;
    let delivery = done.delivery.unwrap();
    assert_eq!(delivery.attempts, 2);
    let retrying = done
        .events
        .iter()
        .find(|e| delivery_is(e, pb::DeliveryStatus::Retrying))
        .expect("a RETRYING event");
    assert!(
        retrying.reason.contains("HTTP 503: in manutenzione"),
        "{}",
        retrying.reason
    );
    let got = vendor.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].idempotency_key, got[1].idempotency_key);
    assert_eq!(got[0].idempotency_key, delivery.operation_id);
    // The first attempt's message is built at submission, the retry's from
    // the store: the vendor must see the same message twice.
    assert_eq!(got[0].body, got[1].body);
    hub.stop().await;
}

#[tokio::test]
async fn vendor_400_is_dead_lettered_at_once_with_the_reason() {
    let vendor = Vendor::start().await;
    vendor.push(Answer::new(
        400,
        json!({"type": "about:blank", "title": "Richiesta non valida", "detail": "foglio mancante", "code": "ERROR_400_001"}),
    ));
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let p = hub.submit(tari_request("016024", "bad")).await;
    let dead = hub
        .wait_practice("016024", &p.id, "dead letter", |p| {
            p.delivery
                .as_ref()
                .is_some_and(|d| d.status == pb::DeliveryStatus::DeadLettered as i32)
        })
        .await;
    // A vendor that refuses the request does not reject the citizen's practice.
    assert_eq!(dead.status, pb::AdministrativeStatus::Submitted as i32);
    let d = dead.delivery.unwrap();
    assert_eq!(d.attempts, 1, "permanent failures are not retried");
    assert_eq!(d.failure_class, "permanent");
    assert!(
        d.last_error
            .contains("Richiesta non valida: foglio mancante"),
        "{}",
        d.last_error
    );
    let event = dead
        .events
        .iter()
        .find(|e| delivery_is(e, pb::DeliveryStatus::DeadLettered))
        .unwrap();
    assert_eq!(event.vendor_code, "ERROR_400_001");
    assert_eq!(vendor.received().len(), 1);

    let letters = hub
        .admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            tenant_id: "016024".into(),
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].practice_id, p.id);
    assert_eq!(letters[0].operation_id, d.operation_id);
    // Other tenants see none of it.
    let others = hub
        .admin
        .list_dead_letters(pb::ListDeadLettersRequest {
            tenant_id: "028060".into(),
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert!(others.is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn a_vendor_that_is_down_dead_letters_then_a_replay_completes() {
    let addr = free_addr().await;
    let mut hub = start_hub(HubOptions {
        max_attempts: 3,
        ..HubOptions::new(&format!("http://{addr}"))
    })
    .await;
    let p = hub.submit(tari_request("028060", "down")).await;
    let dead = hub
        .wait_practice("028060", &p.id, "dead letter after 3 attempts", |p| {
            p.delivery
                .as_ref()
                .is_some_and(|d| d.status == pb::DeliveryStatus::DeadLettered as i32)
        })
        .await;
    let d = dead.delivery.unwrap();
    assert_eq!(d.attempts, 3);
    assert_eq!(d.failure_class, "transient");
    assert!(d.last_error.contains("cannot connect"), "{}", d.last_error);
    let retries = dead
        .events
        .iter()
        .filter(|e| delivery_is(e, pb::DeliveryStatus::Retrying))
        .count();
    assert_eq!(retries, 2);

    // The vendor comes back; an operator replays the delivery.
    let vendor = Vendor::start_on(addr).await;
    let replayed = hub
        .admin
        .replay_dead_letter(pb::ReplayDeadLetterRequest {
            operation_id: d.operation_id.clone(),
            operator_id: "op-ict".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.practice_id, p.id);
    let done = hub
        .wait_status("028060", &p.id, pb::AdministrativeStatus::Approved)
        .await;
    assert_eq!(
        done.delivery.unwrap().operation_id,
        d.operation_id,
        "the operation id never changes"
    );
    let got = vendor.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].idempotency_key, d.operation_id);
    let replay = done
        .events
        .iter()
        .find(|e| e.source == pb::EventSource::Operator as i32)
        .unwrap();
    assert_eq!(replay.actor, "op-ict");
    // Replaying something that is not dead-lettered is refused.
    let err = hub
        .admin
        .replay_dead_letter(pb::ReplayDeadLetterRequest {
            operation_id: d.operation_id.clone(),
            operator_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    hub.stop().await;
}

#[tokio::test]
async fn a_sync_route_replies_with_the_failure_when_the_vendor_fails() {
    let vendor = Vendor::start().await;
    vendor.push(Answer::new(500, json!({})));
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let p = hub.submit(cert_request("016024", "sync-fail")).await;
    // Accepted and stored; the reply tells the front office a retry is planned.
    assert_eq!(p.status, pb::AdministrativeStatus::Submitted as i32);
    let d = p.delivery.unwrap();
    assert_eq!(d.status, pb::DeliveryStatus::Retrying as i32);
    assert!(d.next_attempt_at.is_some());
    hub.wait_status("016024", &p.id, pb::AdministrativeStatus::Approved)
        .await;
    hub.stop().await;
}

#[tokio::test]
async fn a_business_refusal_rejects_the_practice_with_the_vendors_reason() {
    let vendor = Vendor::start().await;
    vendor.push(Answer::new(
        200,
        json!({"esito": "KO", "motivo": "non residente"}),
    ));
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let p = hub.submit(cert_request("016024", "ko")).await;
    assert_eq!(p.status, pb::AdministrativeStatus::Rejected as i32);
    let o = p.outcome.unwrap();
    assert_eq!(o.reason, "non residente");
    assert_eq!(o.vendor_code, "KO");
    assert!(p.concluded_at.is_some());
    hub.stop().await;
}

#[tokio::test]
async fn an_unmapped_vendor_status_is_a_permanent_failure_naming_the_value() {
    let vendor = Vendor::start().await;
    vendor.push(Answer::new(200, json!({"esito": "BOH"})));
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let p = hub.submit(tari_request("016024", "boh")).await;
    let dead = hub
        .wait_practice("016024", &p.id, "dead letter", |p| {
            p.delivery
                .as_ref()
                .is_some_and(|d| d.status == pb::DeliveryStatus::DeadLettered as i32)
        })
        .await;
    let err = dead.delivery.unwrap().last_error;
    assert!(err.contains("'BOH'") && err.contains("status_map"), "{err}");
    hub.stop().await;
}
