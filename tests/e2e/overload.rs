//! Load shedding over the real gRPC stack: calls in progress past
//! `hub.max_calls_in_progress`, watch streams past
//! `hub.max_watch_streams_per_client` and request bytes past
//! `hub.max_in_flight_request_bytes` are refused at once.

use crate::support::*;
use raccordo_proto::v1 as pb;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn calls_beyond_the_limit_are_refused_at_once_with_a_retry_hint() {
    let vendor = Vendor::start().await;
    let mut options = HubOptions::new(&vendor.url());
    options.hub_toml = "max_calls_in_progress = 2".into();
    let mut hub = start_hub(options).await;
    // A watch stream takes none of the two slots: were it counted, only
    // one submission below could be in progress.
    let watch = hub
        .practices
        .watch_practices(pb::WatchPracticesRequest {
            tenant_id: "016024".into(),
            ..Default::default()
        })
        .await
        .expect("a watch stream opens")
        .into_inner();

    vendor.hold();
    let held: Vec<_> = (0..2)
        .map(|i| {
            let mut client = hub.practices.clone();
            tokio::spawn(async move {
                client
                    .submit_practice(cert_request("016024", &format!("held-{i}")))
                    .await
            })
        })
        .collect();
    eventually(
        "both synchronous submissions waiting on the vendor",
        || async { (vendor.held() == 2).then_some(()) },
    )
    .await;

    let refused = hub
        .practices
        .submit_practice(cert_request("016024", "over"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("hub.max_calls_in_progress"),
        "{}",
        refused.message()
    );
    let retry = refused
        .get_details_retry_info()
        .expect("a google.rpc.RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
    assert_eq!(
        refused
            .metadata()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    // Every unary call counts, not only submissions.
    let refused = hub
        .catalog
        .list_services(pb::ListServicesRequest {
            tenant_id: "016024".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // Probes still answer while the hub is full.
    let mut health = tonic_health::pb::health_client::HealthClient::new(hub.channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers");

    vendor.release();
    for call in held {
        call.await.unwrap().expect("a held submission completes");
    }
    // The refused submission stored nothing: its retry is a new practice.
    let again = hub
        .practices
        .submit_practice(cert_request("016024", "over"))
        .await
        .expect("admitted once a slot is free")
        .into_inner();
    assert!(!again.duplicate);
    assert_eq!(
        again.practice.unwrap().status,
        pb::AdministrativeStatus::Approved as i32
    );
    drop(watch);
    hub.stop().await;
}

/// A certificate request carrying `bytes` of attachment.
fn large_request(key: &str, bytes: usize) -> pb::SubmitPracticeRequest {
    let mut r = cert_request("016024", key);
    r.attachments.push(pb::Attachment {
        name: "planimetria.pdf".into(),
        media_type: "application/pdf".into(),
        content: vec![b'x'; bytes],
        ..Default::default()
    });
    r
}

#[tokio::test]
async fn requests_beyond_the_byte_budget_are_refused_until_others_complete() {
    const ATTACHMENT: usize = 700_000;
    let vendor = Vendor::start().await;
    let mut options = HubOptions::new(&vendor.url());
    // Room for three such requests in progress, not four; the limits let
    // one request of the largest size fit.
    options.hub_toml = "max_in_flight_request_bytes = 2200000".into();
    options.extra_toml = "[limits]\nmax_attachment_bytes = 1048576\n\
                          max_total_attachment_bytes = 1048576\nmax_data_bytes = 65536\n"
        .into();
    let mut hub = start_hub(options).await;

    vendor.hold();
    let held: Vec<_> = (0..3)
        .map(|i| {
            let mut client = hub.practices.clone();
            tokio::spawn(async move {
                client
                    .submit_practice(large_request(&format!("held-{i}"), ATTACHMENT))
                    .await
            })
        })
        .collect();
    eventually("three large submissions waiting on the vendor", || async {
        (vendor.held() == 3).then_some(())
    })
    .await;

    // Three more at once: none fits beside the three in progress.
    let over: Vec<_> = (0..3)
        .map(|i| {
            let mut client = hub.practices.clone();
            tokio::spawn(async move {
                client
                    .submit_practice(large_request(&format!("over-{i}"), ATTACHMENT))
                    .await
            })
        })
        .collect();
    for call in over {
        let refused = call.await.unwrap().unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(
            refused
                .message()
                .contains("exceed hub.max_in_flight_request_bytes (2200000)"),
            "{}",
            refused.message()
        );
        assert_eq!(
            refused
                .get_details_retry_info()
                .expect("a google.rpc.RetryInfo")
                .retry_delay,
            Some(Duration::from_secs(1))
        );
    }
    // Small calls still fit in what is left.
    hub.catalog
        .list_services(pb::ListServicesRequest {
            tenant_id: "016024".into(),
        })
        .await
        .expect("a small call is served while the budget is nearly spent");
    assert_eq!(vendor.held(), 3, "the refused requests reached no vendor");

    vendor.release();
    for call in held {
        let reply = call.await.unwrap().expect("a held submission completes");
        assert_eq!(
            reply.into_inner().practice.unwrap().status,
            pb::AdministrativeStatus::Approved as i32
        );
    }
    // The budget came back: a refused request's retry is served.
    let again = hub
        .practices
        .submit_practice(large_request("over-0", ATTACHMENT))
        .await
        .expect("served once the others completed")
        .into_inner();
    assert!(!again.duplicate, "the refused request stored nothing");
    hub.stop().await;
}

const A_KEY: &str = "dashboard-a-key";
const B_KEY: &str = "dashboard-b-key";

fn sha(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn watch_request(key: &str) -> tonic::Request<pb::WatchPracticesRequest> {
    let mut r = tonic::Request::new(pb::WatchPracticesRequest {
        tenant_id: "016024".into(),
        ..Default::default()
    });
    r.metadata_mut().insert("x-api-key", key.parse().unwrap());
    r
}

#[tokio::test]
async fn a_client_past_its_watch_streams_is_refused_until_one_closes() {
    let vendor = Vendor::start().await;
    let mut options = HubOptions::new(&vendor.url());
    options.hub_toml = "max_watch_streams_per_client = 2".into();
    options.extra_toml = format!(
        r#"
[clients.dashboard-a]
role = "frontoffice"
tenants = ["016024"]
api_key_sha256 = "{a}"

[clients.dashboard-b]
role = "frontoffice"
tenants = ["016024"]
api_key_sha256 = "{b}"
"#,
        a = sha(A_KEY),
        b = sha(B_KEY),
    );
    let hub = start_hub(options).await;
    let mut client = hub.practices.clone();

    let first = client.watch_practices(watch_request(A_KEY)).await.unwrap();
    let _second = client.watch_practices(watch_request(A_KEY)).await.unwrap();
    let refused = client
        .watch_practices(watch_request(A_KEY))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("dashboard-a")
            && refused
                .message()
                .contains("hub.max_watch_streams_per_client"),
        "{}",
        refused.message()
    );
    // Another client has slots of its own.
    let _other = client
        .watch_practices(watch_request(B_KEY))
        .await
        .expect("another client's stream opens");

    // Closing a stream gives its slot back.
    drop(first);
    let _third = eventually("a freed slot", || {
        let mut client = client.clone();
        async move { client.watch_practices(watch_request(A_KEY)).await.ok() }
    })
    .await;
    let refused = client
        .watch_practices(watch_request(A_KEY))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "full again");
    hub.stop().await;
}
