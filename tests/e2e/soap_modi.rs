//! SOAP's asynchronous ModI patterns through the hub, with practices
//! submitted and watched over the real gRPC API and a SOAP back office on
//! loopback: `NONBLOCK_PULL_SOAP` (the hub calls status(id) until the
//! vendor says done, then result(id)) and `NONBLOCK_PUSH_SOAP` (the vendor
//! acknowledges under its own correlation id and calls the hub's SOAP
//! callback service later, through the hub's real HTTP listener).

use crate::callbacks::{SOAP_PASSWORD, post_soap, soap_callback, trail};
use crate::support::*;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use raccordo_proto::v1 as pb;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

fn fixture(name: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read(root.join("adapters/tests/fixtures/soap").join(name)).unwrap()
}

/// The correlation id the pull vendor gives (in `pull_ack.xml`).
const PULL_CORRELATION: &str = "7c1e4b1a-2f43-4a36-9d3e-0b6f3f5a1c21";

/// A hub routing `CERT` (deferred) to the adapter `anagrafe`, whose keys
/// are `adapter`; its HTTP listener on `http`.
fn config(http: SocketAddr, adapter: &str) -> String {
    format!(
        r#"
[hub]
grpc_listen = "127.0.0.1:0"
http_listen = "{http}"
data_dir = "data"
shutdown_grace = "2s"

[delivery]
max_attempts = 3
initial_backoff = "50ms"
max_backoff = "200ms"
poll_interval = "50ms"

[tenants."016024"]
name = "Comune di Bergamo"

[services.CERT]
title = "Certificato di residenza"
[[services.CERT.fields]]
name = "uso"
type = "string"
required = true

[[routes]]
tenants = ["016024"]
service = "CERT"
adapter = "anagrafe"
mode = "deferred"

[adapters.anagrafe]
{adapter}
"#
    )
}

/// Starts a hub on `toml`, with files (secrets) beside it.
async fn start(toml: &str, files: &[(&str, &[u8])]) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let path = dir.path().join("raccordo.toml");
    std::fs::write(&path, toml).unwrap();
    let config = raccordo::config::load(&path).expect("test config loads");
    let issues = raccordo::config::check(&config);
    assert!(issues.is_empty(), "{issues:?}");
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

/// What the pull vendor was asked, in order: SOAP actions and bodies.
#[derive(Default)]
struct PullVendor {
    calls: Mutex<Vec<(String, String)>>,
}

/// A registry answering request, status and result: the first two status
/// calls say `IN_LAVORAZIONE`, the next `COMPLETATA`.
async fn pull_vendor(
    State(v): State<Arc<PullVendor>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let action = headers
        .get("soapaction")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    let statuses = {
        let mut calls = v.calls.lock().unwrap();
        calls.push((action.clone(), body.clone()));
        calls
            .iter()
            .filter(|(a, _)| a.ends_with(":statoRichiesta"))
            .count()
    };
    let file = match action.as_str() {
        "urn:anagrafe:certificati:v1:richiestaCertificato" => "pull_ack.xml",
        "urn:anagrafe:certificati:v1:statoRichiesta" if body.contains(PULL_CORRELATION) => {
            if statuses <= 2 {
                "pull_status_in_lavorazione.xml"
            } else {
                "pull_status_completata.xml"
            }
        }
        "urn:anagrafe:certificati:v1:esitoRichiesta" if body.contains(PULL_CORRELATION) => {
            "certificato_11.xml"
        }
        _ => "fault_11_client.xml",
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

#[tokio::test]
async fn soap_pull_polls_status_until_done_then_fetches_the_result() {
    let vendor = Arc::new(PullVendor::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vaddr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/ws/certificati", axum::routing::post(pull_vendor))
        .with_state(Arc::clone(&vendor));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let adapter = format!(
        r#"kind = "soap"
pattern = "NONBLOCK_PULL_SOAP"
endpoint = "http://{vaddr}/ws/certificati"
timeout = "5s"
namespaces = {{ c = "urn:anagrafe:certificati:v1" }}
[adapters.anagrafe.submit]
action = "urn:anagrafe:certificati:v1:richiestaCertificato"
template_inline = """
<c:richiestaCertificato xmlns:c="urn:anagrafe:certificati:v1">
  <c:idOperazioneComune>{{{{ operation_id }}}}</c:idOperazioneComune>
  <c:codiceFiscale>{{{{ applicant.fiscal_code }}}}</c:codiceFiscale>
  <c:uso>{{{{ data.uso }}}}</c:uso>
</c:richiestaCertificato>"""
[adapters.anagrafe.response]
reference_path = "c:richiestaCertificatoAck/c:idPratica"
status_path = "c:rispostaCertificato/c:esito"
status_map = {{ EMESSO = "APPROVED", RESPINTO = "REJECTED" }}
protocol_path = "c:rispostaCertificato/c:protocollo/c:numero"
[[adapters.anagrafe.response.documents]]
path = "c:rispostaCertificato/c:certificato"
name_attribute = "nomeFile"
media_type_attribute = "tipoMime"
[adapters.anagrafe.pull]
correlation_path = "c:richiestaCertificatoAck/c:correlationId"
state_path = "c:statoRichiestaResponse/c:stato"
done_states = ["COMPLETATA"]
failed_states = ["ANNULLATA"]
initial_interval = "20ms"
max_interval = "100ms"
max_wait = "30s"
[adapters.anagrafe.pull.status]
action = "urn:anagrafe:certificati:v1:statoRichiesta"
template_inline = "<c:statoRichiesta xmlns:c=\"urn:anagrafe:certificati:v1\"><c:correlationId>{{{{ correlation_id }}}}</c:correlationId></c:statoRichiesta>"
[adapters.anagrafe.pull.result]
action = "urn:anagrafe:certificati:v1:esitoRichiesta"
template_inline = "<c:esitoRichiesta xmlns:c=\"urn:anagrafe:certificati:v1\"><c:correlationId>{{{{ correlation_id }}}}</c:correlationId></c:esitoRichiesta>"
"#
    );
    let http = free_addr().await;
    let mut hub = start(&config(http, &adapter), &[]).await;
    let submitted = hub.submit(cert_request("016024", "soap-pull")).await;
    assert_eq!(
        submitted.status,
        pb::AdministrativeStatus::Submitted as i32,
        "a deferred route answers before the vendor"
    );
    let mut stream = hub
        .practices
        .watch_practice(one_practice_from("016024", &submitted.id, 0))
        .await
        .unwrap()
        .into_inner();
    let (events, _) = collect_until(&mut stream, |e| {
        status_is(e, pb::AdministrativeStatus::Approved)
    })
    .await;
    assert!(
        events
            .iter()
            .any(|e| delivery_is(e, pb::DeliveryStatus::Acknowledged)),
        "the acknowledgement is an event of its own"
    );

    let done = hub.get("016024", &submitted.id).await;
    let trail = trail(&done);
    let ack = trail
        .iter()
        .position(|t| t == "delivery ACKNOWLEDGED")
        .unwrap_or_else(|| panic!("{trail:?}"));
    let approved = trail
        .iter()
        .position(|t| t == "status APPROVED")
        .unwrap_or_else(|| panic!("{trail:?}"));
    assert!(ack < approved, "{trail:?}");
    let outcome = done.outcome.clone().expect("an outcome");
    assert_eq!(outcome.vendor_code, "EMESSO");
    assert_eq!(outcome.documents.len(), 1);
    assert_eq!(outcome.documents[0].name, "certificato-residenza.pdf");
    assert_eq!(
        outcome.documents[0].size_bytes,
        fixture("certificato.pdf").len() as u64
    );
    for (kind, value) in [
        ("correlation_id", PULL_CORRELATION),
        ("protocol", "2026/0012345"),
    ] {
        assert!(
            done.external_refs
                .iter()
                .any(|r| r.kind == kind && r.value == value),
            "{kind} {value} in {:?}",
            done.external_refs
        );
    }
    assert!(
        done.external_refs
            .iter()
            .any(|r| r.value == "ANA-2026-000420"),
        "the vendor's reference from the acknowledgement: {:?}",
        done.external_refs
    );

    // One request, status until done, one result: in that order.
    let calls = vendor.calls.lock().unwrap().clone();
    let actions: Vec<&str> = calls
        .iter()
        .map(|(a, _)| a.rsplit(':').next().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "richiestaCertificato",
            "statoRichiesta",
            "statoRichiesta",
            "statoRichiesta",
            "esitoRichiesta"
        ]
    );
    let operation_id = done.delivery.unwrap().operation_id;
    assert!(
        calls[0]
            .1
            .contains(&format!("<c:idOperazioneComune>{operation_id}<")),
        "{}",
        calls[0].1
    );
    hub.stop().await;
}

/// `envelope` without its WS-Security header: a caller without the
/// vendor's credentials.
fn without_token(envelope: &str) -> String {
    let start = envelope.find("<wsse:Security").expect("a token");
    let end = envelope.find("</wsse:Security>").expect("a token") + "</wsse:Security>".len();
    format!("{}{}", &envelope[..start], &envelope[end..])
}

/// What the push vendor received: the hub's operation id (its
/// `Idempotency-Key`) and the request envelope.
#[derive(Default)]
struct PushVendor {
    requests: Mutex<Vec<(String, String)>>,
}

/// A back office that acknowledges at once under its own correlation id
/// (`SUAP-n`) and calls back later (the test plays that part).
async fn push_vendor(
    State(v): State<Arc<PushVendor>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let operation = headers
        .get("idempotency-key")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let n = {
        let mut requests = v.requests.lock().unwrap();
        requests.push((operation, body));
        requests.len()
    };
    let ack = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
  <soapenv:Header><modi:X-Correlation-ID xmlns:modi="http://www.agid.gov.it/modi">SUAP-{n}</modi:X-Correlation-ID></soapenv:Header>
  <soapenv:Body><s:ricevuta xmlns:s="urn:suap:v1"><s:stato>PRESA</s:stato></s:ricevuta></soapenv:Body>
</soapenv:Envelope>"#
    );
    (
        StatusCode::OK,
        [("content-type", "text/xml; charset=utf-8")],
        ack,
    )
        .into_response()
}

#[tokio::test]
async fn soap_push_applies_the_vendors_callback_under_its_own_correlation_id() {
    let vendor = Arc::new(PushVendor::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vaddr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/ws/pratiche", axum::routing::post(push_vendor))
        .with_state(Arc::clone(&vendor));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = free_addr().await;
    let service = format!("http://{http}/callbacks/anagrafe");
    let adapter = format!(
        r#"kind = "soap"
pattern = "NONBLOCK_PUSH_SOAP"
endpoint = "http://{vaddr}/ws/pratiche"
timeout = "5s"
namespaces = {{ cb = "urn:raccordo:callback:v1", s = "urn:suap:v1" }}
[adapters.anagrafe.submit]
action = "urn:suap:v1:invia"
body = "normalized"
[adapters.anagrafe.push]
public_base_url = "http://{http}"
username = "fornitore"
password_file = "callback.password"
[adapters.anagrafe.response]
status_path = "cb:result/s:esito/s:stato"
status_map = {{ ACCOLTA = "APPROVED", RESPINTA = "REJECTED" }}
protocol_path = "cb:result/s:esito/s:protocollo"
"#
    );
    let mut hub = start(
        &config(http, &adapter),
        &[("callback.password", SOAP_PASSWORD.as_bytes())],
    )
    .await;
    let p = hub.submit(cert_request("016024", "soap-push")).await;
    let acked = hub
        .wait_delivery("016024", &p.id, pb::DeliveryStatus::Acknowledged)
        .await;
    assert_eq!(acked.status, pb::AdministrativeStatus::Submitted as i32);
    assert!(
        acked
            .external_refs
            .iter()
            .any(|r| r.kind == "correlation_id" && r.value == "SUAP-1"),
        "{:?}",
        acked.external_refs
    );
    // The request told the vendor where to call back (ModI X-ReplyTo).
    let (operation, envelope) = vendor.requests.lock().unwrap()[0].clone();
    assert_eq!(operation, acked.delivery.as_ref().unwrap().operation_id);
    assert!(
        envelope.contains(&format!(">{service}</modi:X-ReplyTo>")),
        "{envelope}"
    );

    // The callback service publishes its WSDL for the vendor's tooling.
    let wsdl = reqwest::get(format!("{service}?wsdl")).await.unwrap();
    assert_eq!(wsdl.status().as_u16(), 200);
    assert!(wsdl.text().await.unwrap().contains(&service));

    let client = reqwest::Client::new();
    // Wrong credentials: a Client fault, nothing applied.
    let forged = without_token(&soap_callback(
        "SUAP-1",
        "urn:uuid:forged",
        "RESPINTA",
        "S-0",
    ));
    let (status, answer) = post_soap(&client, &service, forged).await;
    assert_eq!(status, 500, "{answer}");
    assert!(answer.contains("authentication failed"), "{answer}");
    let unchanged = hub.get("016024", &p.id).await;
    assert_eq!(unchanged.status, pb::AdministrativeStatus::Submitted as i32);
    assert_eq!(unchanged.events.len(), acked.events.len());

    // The vendor's result, named by its own correlation id.
    let result = soap_callback("SUAP-1", "urn:uuid:result-1", "ACCOLTA", "S-2026-77");
    let (status, answer) = post_soap(&client, &service, result).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(">applied<"), "{answer}");
    let done = hub
        .wait_status("016024", &p.id, pb::AdministrativeStatus::Approved)
        .await;
    assert!(
        done.external_refs
            .iter()
            .any(|r| r.kind == "protocol" && r.value == "S-2026-77"),
        "{:?}",
        done.external_refs
    );
    let trail = trail(&done);
    let at = trail
        .iter()
        .position(|t| t == "delivery ACKNOWLEDGED")
        .unwrap_or_else(|| panic!("{trail:?}"));
    assert_eq!(trail[at..], ["delivery ACKNOWLEDGED", "status APPROVED"]);
    assert_eq!(vendor.requests.lock().unwrap().len(), 1, "sent once");
    hub.stop().await;
}
