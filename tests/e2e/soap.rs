//! A SOAP back office end to end: a practice submitted over gRPC reaches a
//! real SOAP 1.1 server on loopback (WS-Security digest verified there) and
//! the certificate in its reply comes back as the practice's outcome.

use crate::support::*;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use raccordo_proto::v1 as pb;
use serde_json::json;
use sha1::Digest;
use std::path::Path;
use std::sync::{Arc, Mutex};

fn fixture(name: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read(root.join("adapters/tests/fixtures/soap").join(name)).unwrap()
}

/// The text of the first `<prefix:local …>` element.
fn element<'a>(body: &'a str, local: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(i) = body[from..].find(&format!(":{local}")) {
        let at = from + i;
        let tag_start = body[..at].rfind('<')?;
        let after = body[at + local.len() + 1..].chars().next()?;
        if !body[tag_start..at].contains('/') && (after == '>' || after == ' ') {
            let start = at + body[at..].find('>')? + 1;
            let end = body[start..].find("</")?;
            return Some(&body[start..start + end]);
        }
        from = at + 1;
    }
    None
}

/// A registry's SOAP 1.1 certificate service: checks the UsernameToken
/// digest itself; `BOLLO` requests get a Client fault.
async fn registry() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/ws/certificati",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let s = Arc::clone(&s);
            async move {
                s.lock().unwrap().push(body.clone());
                let b64 = base64::engine::general_purpose::STANDARD;
                let digest_ok = (|| {
                    let nonce = b64.decode(element(&body, "Nonce")?).ok()?;
                    let created = element(&body, "Created")?;
                    let mut h = sha1::Sha1::new();
                    h.update(&nonce);
                    h.update(created.as_bytes());
                    h.update(b"Anagrafe&Bergamo<2026>");
                    Some(b64.encode(h.finalize()) == element(&body, "Password")?)
                })()
                .unwrap_or(false);
                let action = headers.get("soapaction").and_then(|v| v.to_str().ok());
                let file = if !digest_ok
                    || action != Some("\"urn:anagrafe:certificati:v1:richiestaCertificato\"")
                {
                    "fault_11_client.xml"
                } else if body.contains("<c:uso>BOLLO</c:uso>") {
                    "fault_11_vendor_code.xml"
                } else {
                    "certificato_11.xml"
                };
                let status = if file.starts_with("fault") {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                };
                (
                    status,
                    [("content-type", "text/xml; charset=utf-8")],
                    fixture(file),
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ws/certificati", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn config(endpoint: &str) -> String {
    format!(
        r#"
[hub]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "data"
shutdown_grace = "2s"

[delivery]
max_attempts = 3
initial_backoff = "50ms"
max_backoff = "200ms"
poll_interval = "100ms"

[tenants."016024"]
name = "Comune di Bergamo"

[services.CERT]
title = "Certificato di residenza"
legal_term_days = 30
[[services.CERT.fields]]
name = "uso"
type = "string"
required = true
pattern = "BOLLO|ESENTE"

[adapters.anagrafe]
kind = "soap"
endpoint = "{endpoint}"
soap_version = "1.1"
timeout = "3s"
namespaces = {{ c = "urn:anagrafe:certificati:v1", e = "urn:anagrafe:errori:v1" }}
[[adapters.anagrafe.security]]
type = "timestamp"
[[adapters.anagrafe.security]]
type = "username_token"
username = "comune-016024"
password_env = "RACCORDO_E2E_SOAP_PASSWORD"
[adapters.anagrafe.submit]
action = "urn:anagrafe:certificati:v1:richiestaCertificato"
template_inline = """
<c:richiestaCertificato xmlns:c="urn:anagrafe:certificati:v1">
  <c:idOperazioneComune>{{{{ operation_id }}}}</c:idOperazioneComune>
  <c:codiceIstatComune>{{{{ tenant_id }}}}</c:codiceIstatComune>
  <c:codiceFiscale>{{{{ applicant.fiscal_code }}}}</c:codiceFiscale>
  <c:uso>{{{{ data.uso }}}}</c:uso>
</c:richiestaCertificato>"""
[adapters.anagrafe.response]
status_path = "c:rispostaCertificato/c:esito"
status_map = {{ EMESSO = "APPROVED", RESPINTO = "REJECTED" }}
protocol_path = "c:rispostaCertificato/c:protocollo/c:numero"
date_path = "c:rispostaCertificato/c:protocollo/c:data"
[[adapters.anagrafe.response.documents]]
path = "c:rispostaCertificato/c:certificato"
name_attribute = "nomeFile"
media_type_attribute = "tipoMime"
[adapters.anagrafe.faults]
code_path = "*:Fault/*:detail/e:erroreServizio/e:codice"
map = {{ EN122 = "permanent" }}

[[routes]]
tenants = ["016024"]
service = "CERT"
adapter = "anagrafe"
mode = "sync"
deadline = "5s"
"#
    )
}

async fn start(endpoint: &str) -> TestHub {
    #[allow(unsafe_code)] // setting a variable is unsafe since edition 2024
    // SAFETY: every test in this module sets the same value.
    unsafe {
        std::env::set_var("RACCORDO_E2E_SOAP_PASSWORD", "Anagrafe&Bergamo<2026>")
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raccordo.toml");
    std::fs::write(&path, config(endpoint)).unwrap();
    let config = raccordo::config::load(&path).expect("test config loads");
    assert!(raccordo::config::check(&config).is_empty());
    let hub = raccordo::server::start(config).await.expect("hub starts");
    let channel = connect(hub.grpc_addr).await;
    TestHub {
        practices: pb::practice_service_client::PracticeServiceClient::new(channel.clone()),
        admin: pb::delivery_admin_service_client::DeliveryAdminServiceClient::new(channel.clone()),
        catalog: pb::catalog_service_client::CatalogServiceClient::new(channel.clone()),
        channel,
        hub: Some(hub),
        dir,
    }
}

#[tokio::test]
async fn registry_certificate_over_soap_returns_the_document() {
    let (url, seen) = registry().await;
    let mut hub = start(&url).await;
    let p = hub.submit(cert_request("016024", "soap-cert")).await;
    let done = hub
        .wait_status("016024", &p.id, pb::AdministrativeStatus::Approved)
        .await;
    let outcome = done.outcome.clone().expect("an outcome");
    assert_eq!(outcome.vendor_code, "EMESSO");
    assert_eq!(outcome.documents.len(), 1);
    assert_eq!(outcome.documents[0].name, "certificato-residenza.pdf");
    assert_eq!(outcome.documents[0].media_type, "application/pdf");
    let pdf = fixture("certificato.pdf");
    assert_eq!(outcome.documents[0].size_bytes, pdf.len() as u64);
    assert!(
        done.external_refs
            .iter()
            .any(|r| r.kind == "protocol" && r.value == "2026/0012345")
    );
    let with_content = hub
        .practices
        .get_practice(pb::GetPracticeRequest {
            tenant_id: "016024".into(),
            practice_id: p.id.clone(),
            include_events: false,
            include_content: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(with_content.outcome.unwrap().documents[0].content, pdf);
    let sent = seen.lock().unwrap()[0].clone();
    let operation_id = done.delivery.unwrap().operation_id;
    assert!(
        sent.contains(&format!(
            "<c:idOperazioneComune>{operation_id}</c:idOperazioneComune>"
        )),
        "{sent}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_vendor_fault_is_dead_lettered_with_its_text_and_code() {
    let (url, seen) = registry().await;
    let mut hub = start(&url).await;
    let mut request = cert_request("016024", "soap-fault");
    request.data = Some(data(json!({"uso": "BOLLO"})));
    let p = hub.submit(request).await;
    let dead = hub
        .wait_delivery("016024", &p.id, pb::DeliveryStatus::DeadLettered)
        .await;
    let d = dead.delivery.unwrap();
    assert_eq!(d.failure_class, "permanent");
    assert_eq!(d.attempts, 1);
    assert!(
        d.last_error.contains("Soggetto non residente"),
        "{}",
        d.last_error
    );
    let event = dead
        .events
        .iter()
        .find(|e| delivery_is(e, pb::DeliveryStatus::DeadLettered))
        .unwrap();
    assert_eq!(event.vendor_code, "EN122");
    assert_eq!(seen.lock().unwrap().len(), 1);
    hub.stop().await;
}
