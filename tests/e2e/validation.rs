//! Every malformed submission is refused with each offending field named.

use crate::support::*;
use raccordo_proto::v1 as pb;
use serde_json::json;
use tonic_types::StatusExt;

fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("google.rpc.BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect()
}

#[tokio::test]
async fn every_validation_error_names_its_field() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;

    let mut bad = cert_request("016024", "");
    bad.applicant = Some(pb::Applicant {
        subject: Some(pb::applicant::Subject::Person(pb::Person {
            fiscal_code: "RSSMRA85M01H501Z".into(),
            ..Default::default()
        })),
        contacts: None,
    });
    bad.data = Some(data(json!({"uso": "GRATIS", "colore": "blu"})));
    bad.attachments = vec![pb::Attachment {
        name: "../etc/passwd".into(),
        media_type: "text/plain".into(),
        sha256: "00".into(),
        content: b"x".to_vec(),
        ..Default::default()
    }];
    let err = hub.practices.submit_practice(bad).await.unwrap_err();
    let v = violations(&err);
    let fields: Vec<&str> = v.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        [
            "idempotency_key",
            "applicant.person.fiscal_code",
            "data.uso",
            "data.colore",
            "attachments[0].name",
            "attachments[0].sha256"
        ]
    );
    assert!(v[1].1.contains("expected Q"), "{}", v[1].1);
    assert!(v[2].1.contains("BOLLO|ESENTE"), "{}", v[2].1);

    // A missing required field and a wrong type.
    let mut missing = tari_request("016024", "k");
    missing.data = Some(data(json!({"decorrenza": "2026-13-01"})));
    let v = violations(&hub.practices.submit_practice(missing).await.unwrap_err());
    assert_eq!(v[0].0, "data.superficie_mq");
    assert_eq!(v[0].1, "is required");
    assert_eq!(v[1].0, "data.decorrenza");

    // Company applicants are checked by partita IVA.
    let mut company = cert_request("016024", "k2");
    company.applicant = Some(pb::Applicant {
        subject: Some(pb::applicant::Subject::Company(pb::Company {
            vat_number: "12345678901".into(),
            name: "ACME srl".into(),
            representative: None,
        })),
        contacts: None,
    });
    let v = violations(&hub.practices.submit_practice(company).await.unwrap_err());
    assert_eq!(v[0].0, "applicant.company.vat_number");

    // Unknown tenant and service; no applicant at all.
    let v = violations(
        &hub.practices
            .submit_practice(pb::SubmitPracticeRequest {
                tenant_id: "16024".into(),
                idempotency_key: "k3".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    let fields: Vec<&str> = v.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, ["tenant_id", "applicant"]);
    let mut unknown = cert_request("016024", "k4");
    unknown.service_code = "PASSAPORTO".into();
    let v = violations(&hub.practices.submit_practice(unknown).await.unwrap_err());
    assert_eq!(v[0].0, "service_code");
    let mut elsewhere = cert_request("999999", "k5");
    elsewhere.service_code = "CERT".into();
    let v = violations(&hub.practices.submit_practice(elsewhere).await.unwrap_err());
    assert_eq!(v[0].0, "tenant_id");
    assert!(v[0].1.contains("not a tenant"), "{}", v[0].1);

    assert!(
        vendor.received().is_empty(),
        "nothing invalid reaches the vendor"
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_large_attachment_is_checked_stored_and_sent_intact() {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    // Above the size from which hashing and base64 leave the async workers.
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sha: String = Sha256::digest(&content)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let with = |key: &str, sha256: &str| {
        let mut r = cert_request("016024", key);
        r.attachments = vec![pb::Attachment {
            name: "planimetria.pdf".into(),
            media_type: "application/pdf".into(),
            sha256: sha256.into(),
            content: content.clone(),
            ..Default::default()
        }];
        r
    };

    let mut wrong = sha.clone();
    wrong.replace_range(0..1, if sha.starts_with('0') { "1" } else { "0" });
    let err = hub
        .practices
        .submit_practice(with("big-wrong", &wrong))
        .await
        .unwrap_err();
    let fields: Vec<String> = violations(&err).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["attachments[0].sha256"]);

    let p = hub.submit(with("big-right", &sha)).await;
    assert_eq!(p.status, pb::AdministrativeStatus::Approved as i32);
    let sent = vendor
        .received()
        .pop()
        .expect("the vendor got the practice");
    let attachment = &sent.body["attachments"][0];
    assert_eq!(attachment["sha256"], sha.to_ascii_lowercase());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(attachment["content_base64"].as_str().unwrap())
        .unwrap();
    assert!(bytes == content, "the vendor got other bytes");
    hub.stop().await;
}
