//! The Practice API as a front office uses it.

use crate::support::*;
use raccordo_proto::v1 as pb;
use serde_json::json;

#[tokio::test]
async fn sync_submission_replies_with_the_outcome() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let reply = hub
        .practices
        .submit_practice(cert_request("016024", "k-sync"))
        .await
        .unwrap()
        .into_inner();
    let p = reply.practice.unwrap();
    assert!(!reply.duplicate);
    assert_eq!(p.status, pb::AdministrativeStatus::Approved as i32);
    let outcome = p.outcome.as_ref().expect("outcome in the reply");
    assert_eq!(outcome.status, pb::AdministrativeStatus::Approved as i32);
    assert_eq!(outcome.documents[0].name, "esito.txt");
    assert_eq!(outcome.documents[0].sha256.len(), 64);
    assert_eq!(p.external_refs[0].kind, "protocol");
    assert_eq!(p.external_refs[0].value, "2026/000001");
    // The reply is the practice as stored: a later read shows the same.
    let stored = hub
        .practices
        .get_practice(pb::GetPracticeRequest {
            tenant_id: "016024".into(),
            practice_id: p.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored, p);
    let delivery = p.delivery.unwrap();
    assert_eq!(delivery.status, pb::DeliveryStatus::Acknowledged as i32);

    // The vendor got the normalized message, with the operation id as key.
    let got = vendor.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/pratiche/CERT");
    assert_eq!(got[0].idempotency_key, delivery.operation_id);
    assert_eq!(got[0].body["schema"], "raccordo.practice/v1");
    assert_eq!(got[0].body["message_id"], delivery.operation_id);
    assert_eq!(got[0].body["practice_id"], p.id);
    assert_eq!(got[0].body["applicant"]["fiscal_code"], "RSSMRA45D25F205N");
    assert_eq!(got[0].body["data"]["uso"], "ESENTE");
    hub.stop().await;
}

#[tokio::test]
async fn deferred_submission_is_acknowledged_then_completed_as_watched() {
    let vendor = Vendor::start().await;
    vendor.set_latency(std::time::Duration::from_millis(300));
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let p = hub.submit(tari_request("028060", "k-def")).await;
    // Acknowledged once stored: the vendor has not answered yet.
    assert_eq!(p.status, pb::AdministrativeStatus::Submitted as i32);
    assert!(p.outcome.is_none());

    let mut stream = hub
        .practices
        .watch_practice(one_practice_from("028060", &p.id, 1))
        .await
        .unwrap()
        .into_inner();
    let (events, ended) = collect_until(&mut stream, |_| false).await;
    assert!(ended, "the stream ends after the terminal status");
    let seqs: Vec<u64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "replayed in order, no gaps"
    );
    assert!(status_is(&events[0], pb::AdministrativeStatus::Submitted));
    assert!(
        events
            .iter()
            .any(|e| delivery_is(e, pb::DeliveryStatus::Sent))
    );
    assert!(
        events
            .iter()
            .any(|e| delivery_is(e, pb::DeliveryStatus::Acknowledged))
    );
    assert!(status_is(
        events.last().unwrap(),
        pb::AdministrativeStatus::Approved
    ));

    // Replay from a later sequence gives only what follows.
    let mut again = hub
        .practices
        .watch_practice(one_practice_from("028060", &p.id, 3))
        .await
        .unwrap()
        .into_inner();
    let (tail, ended) = collect_until(&mut again, |_| false).await;
    assert!(ended);
    assert_eq!(tail.first().unwrap().sequence, 3);
    hub.stop().await;
}

#[tokio::test]
async fn watch_practices_follows_a_citizen_folder_live() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    // A live-only subscription has nothing to send yet: gRPC clients may
    // only see the stream once its first event arrives, so subscribe aside.
    let mut watcher = hub.practices.clone();
    let subscription = tokio::spawn(async move {
        watcher
            .watch_practices(pb::WatchPracticesRequest {
                tenant_id: "016024".into(),
                applicant_id: "rssmra45d25f205n".into(),
                service_code: String::new(),
                after_cursor: 0,
            })
            .await
            .unwrap()
            .into_inner()
    });
    // Wait until the hub registered the subscription before submitting.
    eventually("the subscription", || async {
        (hub.hub.as_ref().unwrap().watchers() > 0).then_some(())
    })
    .await;
    // Another tenant's practice must not show up in this stream.
    hub.practices
        .submit_practice(tari_request("028060", "other"))
        .await
        .unwrap();
    let p = hub.submit(tari_request("016024", "mine")).await;
    let mut stream = subscription.await.unwrap();
    let (events, _) = collect_until(&mut stream, |e| {
        status_is(e, pb::AdministrativeStatus::Approved)
    })
    .await;
    assert!(
        events
            .iter()
            .all(|e| e.tenant_id == "016024" && e.practice_id == p.id)
    );
    let cursors: Vec<u64> = events.iter().map(|e| e.cursor).collect();
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "cursors increase: {cursors:?}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn stopping_the_hub_ends_live_streams_with_unavailable() {
    let vendor = Vendor::start().await;
    // Refused for good: the practice stays open, so its stream stays live.
    vendor.push(Answer::new(400, json!({"title": "Richiesta non valida"})));
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let p = hub.submit(tari_request("016024", "k-open")).await;
    hub.wait_delivery("016024", &p.id, pb::DeliveryStatus::DeadLettered)
        .await;
    let mut single = hub
        .practices
        .watch_practice(one_practice_from("016024", &p.id, 1))
        .await
        .unwrap()
        .into_inner();
    let mut folder = hub
        .practices
        .watch_practices(whole_tenant_after(1))
        .await
        .unwrap()
        .into_inner();
    let dead = |e: &pb::PracticeEvent| delivery_is(e, pb::DeliveryStatus::DeadLettered);
    let (_, ended) = collect_until(&mut single, dead).await;
    assert!(!ended, "the open practice's stream is live");
    let (_, ended) = collect_until(&mut folder, dead).await;
    assert!(!ended, "the folder's stream is live");

    let stopping = tokio::spawn(hub.hub.take().unwrap().shutdown());
    for stream in [&mut single, &mut folder] {
        let end = tokio::time::timeout(DEADLINE, stream.message())
            .await
            .expect("the stream ends when the hub stops");
        let status = end.expect_err("the stream ends with an error");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_watcher_that_leaves_releases_its_subscription() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let p = hub.submit(tari_request("016024", "k-leave")).await;
    hub.wait_status("016024", &p.id, pb::AdministrativeStatus::Approved)
        .await;
    let mut folder = hub
        .practices
        .watch_practices(whole_tenant_after(1))
        .await
        .unwrap()
        .into_inner();
    collect_until(&mut folder, |e| {
        status_is(e, pb::AdministrativeStatus::Approved)
    })
    .await;
    let watchers = || hub.hub.as_ref().unwrap().watchers();
    assert_eq!(watchers(), 1, "the stream follows the bus");
    // Nothing more happens in the tenant: the hub must notice the client
    // left without an event to send.
    drop(folder);
    eventually("the subscription to be released", || async {
        (watchers() == 0).then_some(())
    })
    .await;
    hub.stop().await;
}

#[tokio::test]
async fn resubmitting_with_the_same_key_returns_the_same_practice() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let first = hub
        .practices
        .submit_practice(cert_request("016024", "same"))
        .await
        .unwrap()
        .into_inner();
    let second = hub
        .practices
        .submit_practice(cert_request("016024", "same"))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.practice.unwrap().id, second.practice.unwrap().id);
    assert_eq!(vendor.received().len(), 1, "delivered once");
    // The same key in another tenant is another practice.
    let other = hub
        .practices
        .submit_practice(cert_request("028060", "same"))
        .await
        .unwrap()
        .into_inner();
    assert!(!other.duplicate);
    hub.stop().await;
}

#[tokio::test]
async fn the_same_key_with_different_content_is_already_exists() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    hub.practices
        .submit_practice(cert_request("016024", "key-42"))
        .await
        .unwrap();
    let mut changed = cert_request("016024", "key-42");
    changed.data = Some(data(json!({"uso": "BOLLO"})));
    let err = hub.practices.submit_practice(changed).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert!(err.message().contains("key-42"), "{}", err.message());
    hub.stop().await;
}

#[tokio::test]
async fn a_tenant_cannot_read_another_tenants_practice() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let p = hub.submit(cert_request("016024", "mine")).await;
    let err = hub
        .practices
        .get_practice(pb::GetPracticeRequest {
            tenant_id: "028060".into(),
            practice_id: p.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = hub
        .practices
        .watch_practice(one_practice_from("028060", &p.id, 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = hub
        .practices
        .withdraw_practice(pb::WithdrawPracticeRequest {
            tenant_id: "028060".into(),
            practice_id: p.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let list = hub
        .practices
        .list_practices(pb::ListPracticesRequest {
            tenant_id: "028060".into(),
            applicant_id: "RSSMRA45D25F205N".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(list.practices.is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn listing_pages_newest_first_with_filters() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let p = hub
            .practices
            .submit_practice(cert_request("016024", &format!("list-{i}")))
            .await
            .unwrap()
            .into_inner()
            .practice
            .unwrap();
        ids.push(p.id);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = hub
            .practices
            .list_practices(pb::ListPracticesRequest {
                tenant_id: "016024".into(),
                applicant_id: "RSSMRA45D25F205N".into(),
                status: pb::AdministrativeStatus::Approved as i32,
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.practices.len() <= 2);
        seen.extend(page.practices.into_iter().map(|p| p.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids);
    let none = hub
        .practices
        .list_practices(pb::ListPracticesRequest {
            tenant_id: "016024".into(),
            service_code: "TARI".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.practices.is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn withdrawal_before_delivery_cancels_it_and_after_delivery_is_forwarded() {
    // The vendor is down: the first practice is never delivered.
    let down = free_addr().await;
    let mut hub = start_hub(HubOptions {
        max_attempts: 50,
        ..HubOptions::new(&format!("http://{down}"))
    })
    .await;
    let p = hub.submit(tari_request("016024", "w-1")).await;
    let w = hub
        .practices
        .withdraw_practice(pb::WithdrawPracticeRequest {
            tenant_id: "016024".into(),
            practice_id: p.id.clone(),
            reason: "presentata per errore".into(),
            operator_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.status, pb::AdministrativeStatus::Withdrawn as i32);
    assert_eq!(w.outcome.unwrap().reason, "presentata per errore");
    // Withdrawing twice is refused with the reason.
    let err = hub
        .practices
        .withdraw_practice(pb::WithdrawPracticeRequest {
            tenant_id: "016024".into(),
            practice_id: p.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    hub.stop().await;

    // A delivered practice: the withdrawal goes to the vendor too.
    let vendor = Vendor::start().await;
    vendor.push(Answer::new(
        200,
        json!({"esito": "PRESO", "protocollo": {"numero": "P-9"}}),
    ));
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let p = hub.submit(cert_request("016024", "w-2")).await;
    assert_eq!(p.status, pb::AdministrativeStatus::Registered as i32);
    hub.practices
        .withdraw_practice(pb::WithdrawPracticeRequest {
            tenant_id: "016024".into(),
            practice_id: p.id.clone(),
            reason: "non più necessario".into(),
            operator_id: "op-7".into(),
        })
        .await
        .unwrap();
    let done = hub
        .wait_practice("016024", &p.id, "the withdrawal delivered", |p| {
            p.delivery
                .as_ref()
                .is_some_and(|d| d.status == pb::DeliveryStatus::Acknowledged as i32)
                && p.status == pb::AdministrativeStatus::Withdrawn as i32
        })
        .await;
    let got = vendor.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].path, format!("/pratiche/{}/ritiro", p.id));
    assert_eq!(got[1].body["operation"], "withdraw");
    assert_eq!(got[1].body["withdrawal_reason"], "non più necessario");
    let withdrawn = done
        .events
        .iter()
        .find(|e| status_is(e, pb::AdministrativeStatus::Withdrawn))
        .unwrap();
    assert_eq!(withdrawn.actor, "op-7");
    assert_eq!(withdrawn.source, pb::EventSource::Operator as i32);
    hub.stop().await;
}

#[tokio::test]
async fn the_catalog_lists_each_tenants_services_and_fields() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let services = hub
        .catalog
        .list_services(pb::ListServicesRequest {
            tenant_id: "016024".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .services;
    let codes: Vec<_> = services.iter().map(|s| s.code.as_str()).collect();
    assert_eq!(codes, ["CERT", "CILA", "TARI"]);
    let cert = &services[0];
    assert_eq!(cert.legal_term_days, 30);
    assert_eq!(cert.mode, pb::InteractionMode::Sync as i32);
    assert_eq!(cert.fields[0].name, "uso");
    assert!(cert.fields[0].required);
    assert!(cert.withdrawal_forwarded);
    let err = hub
        .catalog
        .get_service(pb::GetServiceRequest {
            tenant_id: "016024".into(),
            service_code: "NOPE".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    hub.stop().await;
}

#[tokio::test]
async fn an_auto_route_waits_a_bounded_time_then_replies_with_the_current_state() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    // A quick vendor: the outcome is in the reply.
    let quick = hub
        .practices
        .submit_practice(cila_request("auto-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        quick.practice.unwrap().status,
        pb::AdministrativeStatus::Approved as i32
    );

    // A slow vendor: the reply comes at the bound, the practice completes later.
    vendor.set_latency(std::time::Duration::from_millis(1500));
    let slow = hub.submit(cila_request("auto-2")).await;
    assert_eq!(slow.status, pb::AdministrativeStatus::Submitted as i32);
    assert_eq!(
        slow.delivery.unwrap().status,
        pb::DeliveryStatus::Sent as i32
    );
    hub.wait_status("016024", &slow.id, pb::AdministrativeStatus::Approved)
        .await;
    hub.stop().await;
}

#[tokio::test]
async fn an_answer_after_withdrawal_is_recorded_as_an_anomaly_not_applied() {
    let vendor = Vendor::start().await;
    vendor.set_latency(std::time::Duration::from_millis(700));
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let p = hub.submit(tari_request("016024", "late")).await;
    // Withdraw while the delivery is in flight at the (slow) vendor.
    let c = hub.practices.clone();
    eventually("the delivery in flight", || {
        let mut c = c.clone();
        let id = p.id.clone();
        async move {
            let p = get(&mut c, "016024", &id).await;
            (p.delivery.unwrap().status == pb::DeliveryStatus::Sent as i32).then_some(())
        }
    })
    .await;
    hub.practices
        .withdraw_practice(pb::WithdrawPracticeRequest {
            tenant_id: "016024".into(),
            practice_id: p.id.clone(),
            reason: "ci ho ripensato".into(),
            operator_id: String::new(),
        })
        .await
        .unwrap();
    let done = hub
        .wait_practice("016024", &p.id, "the late approval recorded", |p| {
            p.events
                .iter()
                .any(|e| e.kind == pb::EventKind::Anomaly as i32)
        })
        .await;
    assert_eq!(
        done.status,
        pb::AdministrativeStatus::Withdrawn as i32,
        "not applied"
    );
    let anomaly = done
        .events
        .iter()
        .find(|e| e.kind == pb::EventKind::Anomaly as i32)
        .unwrap();
    assert_eq!(
        anomaly.from_status,
        pb::AdministrativeStatus::Withdrawn as i32
    );
    assert_eq!(anomaly.to_status, pb::AdministrativeStatus::Approved as i32);
    assert!(anomaly.reason.contains("not applied"), "{}", anomaly.reason);
    hub.stop().await;
}

/// Every event of tenant 016024 after `cursor`.
fn whole_tenant_after(cursor: u64) -> pb::WatchPracticesRequest {
    pb::WatchPracticesRequest {
        tenant_id: "016024".into(),
        applicant_id: String::new(),
        service_code: String::new(),
        after_cursor: cursor,
    }
}
