//! The vendor's side of the result contract, end to end: vendors on
//! loopback that call back before they acknowledge the request (REST and
//! SOAP), and results that arrive late or contradict earlier ones, through
//! the hub's real HTTP listener and gRPC API.

use crate::support::*;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use raccordo_proto::v1 as pb;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "callback-secret-0123456789";
pub(crate) const SOAP_PASSWORD: &str = "callback-s3cret&<>";

/// Practices of the race test: `RACCORDO_TEST_EARLY_CALLBACKS` (a smaller
/// number runs faster), 1,000 by default.
fn race_count() -> usize {
    std::env::var("RACCORDO_TEST_EARLY_CALLBACKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// A hub with one deferred service (TARI) routed to the adapter `vendor`,
/// whose keys are `adapter`.
fn config(http: SocketAddr, adapter: &str) -> String {
    format!(
        r#"
[hub]
grpc_listen = "127.0.0.1:0"
http_listen = "{http}"
data_dir = "data"
shutdown_grace = "2s"

[delivery]
max_attempts = 5
initial_backoff = "50ms"
max_backoff = "200ms"
poll_interval = "50ms"

[tenants."016024"]
name = "Comune di Bergamo"

[services.TARI]
title = "Dichiarazione TARI"
[[services.TARI.fields]]
name = "superficie_mq"
type = "number"
required = true

[[routes]]
tenants = ["016024"]
service = "TARI"
adapter = "vendor"
mode = "deferred"

[adapters.vendor]
{adapter}
"#
    )
}

/// The REST push adapter on `vendor`, calling back to `http`.
fn rest_adapter(vendor: SocketAddr, http: SocketAddr) -> String {
    format!(
        r#"kind = "rest"
pattern = "NONBLOCK_PUSH_REST"
base_url = "http://{vendor}"
timeout = "10s"
connect_timeout = "500ms"
max_concurrency = 16
[adapters.vendor.submit]
path = "/pratiche"
[adapters.vendor.callback]
public_base_url = "http://{http}"
secret_file = "callback.secret"
max_skew = "60s"
[adapters.vendor.response]
status_pointer = "/esito"
status_map = {{ OK = "APPROVED", KO = "REJECTED", PRESO = "REGISTERED", IN_CORSO = "IN_PROGRESS" }}
protocol_pointer = "/protocollo/numero"
documents_pointer = "/documenti"
"#
    )
}

/// Starts a hub on `toml`, with files (secrets) beside it.
async fn start(toml: &str, files: &[(&str, &[u8])]) -> TestHub {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let path = dir.path().join("raccordo.toml");
    std::fs::write(&path, toml).unwrap();
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

fn tari(key: &str) -> pb::SubmitPracticeRequest {
    pb::SubmitPracticeRequest {
        tenant_id: "016024".into(),
        service_code: "TARI".into(),
        applicant: Some(mario()),
        data: Some(data(json!({"superficie_mq": 85.5}))),
        idempotency_key: key.into(),
        ..Default::default()
    }
}

/// POSTs a signed REST callback; returns the status and the JSON body.
async fn post_callback(
    client: &reqwest::Client,
    url: &str,
    correlation: &str,
    idempotency_key: &str,
    body: &Value,
) -> Result<(u16, Value), reqwest::Error> {
    let body = body.to_string();
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = raccordo_adapters::rest::callback::sign(SECRET.as_bytes(), &ts, body.as_bytes());
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-correlation-id", correlation)
        .header("idempotency-key", idempotency_key)
        .header("x-timestamp", ts)
        .header("x-signature", sig)
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json::<Value>().await.unwrap_or(Value::Null)))
}

/// The `raccordo_*` sample `name{labels}` of a scrape, 0 when absent.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .find(|l| {
            l[name.len()..].starts_with('{')
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(http: SocketAddr) -> String {
    reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Kinds and statuses of a practice's events, as the order checks read them.
pub(crate) fn trail(p: &pb::Practice) -> Vec<String> {
    p.events
        .iter()
        .map(|e| {
            if e.kind == pb::EventKind::DeliveryChanged as i32 {
                format!(
                    "delivery {}",
                    pb::DeliveryStatus::try_from(e.to_delivery)
                        .unwrap()
                        .as_str_name()
                )
            } else if e.kind == pb::EventKind::Anomaly as i32 {
                "ANOMALY".to_string()
            } else {
                format!(
                    "status {}",
                    pb::AdministrativeStatus::try_from(e.to_status)
                        .unwrap()
                        .as_str_name()
                )
            }
        })
        .collect()
}

/// What the vendor that calls back first saw of the hub's answers.
#[derive(Default)]
struct EarlyVendor {
    requests: AtomicUsize,
    /// Answers to first callbacks and to re-sent ones: status → count.
    first: Mutex<BTreeMap<u16, usize>>,
    resent: Mutex<BTreeMap<u16, usize>>,
    /// Callbacks the vendor gave up on (no 2xx within its patience).
    lost: Mutex<Vec<String>>,
    client: reqwest::Client,
}

/// A vendor that does the work at once: for each request it POSTs the
/// result to the request's `X-ReplyTo`, named by the hub's operation id
/// (the request's `X-Correlation-ID`), waits for the hub's answer, and
/// only then answers the request itself: 202 with its own id and a
/// "registered" body. Every tenth result is sent twice (same
/// `Idempotency-Key`), as a vendor that did not trust its first answer.
async fn early_vendor(State(v): State<Arc<EarlyVendor>>, headers: HeaderMap) -> Response {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (operation, reply_to) = (text("x-correlation-id"), text("x-replyto"));
    let n = v.requests.fetch_add(1, Ordering::SeqCst);
    let result = json!({"esito": "OK", "protocollo": {"numero": format!("P-{operation}")}});
    let send = |answers: &'static str| {
        let (v, reply_to, operation, result) = (
            Arc::clone(&v),
            reply_to.clone(),
            operation.clone(),
            result.clone(),
        );
        async move {
            let start = tokio::time::Instant::now();
            loop {
                let sent = post_callback(
                    &v.client,
                    &reply_to,
                    &operation,
                    &format!("cb-{operation}"),
                    &result,
                )
                .await;
                match sent {
                    Ok((status, _)) if status < 500 => {
                        let map = if answers == "first" {
                            &v.first
                        } else {
                            &v.resent
                        };
                        *map.lock().unwrap().entry(status).or_default() += 1;
                        if !(200..300).contains(&status) {
                            v.lost
                                .lock()
                                .unwrap()
                                .push(format!("{operation}: {status}"));
                        }
                        return;
                    }
                    _ if start.elapsed() > Duration::from_secs(60) => {
                        v.lost
                            .lock()
                            .unwrap()
                            .push(format!("{operation}: no answer"));
                        return;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
    };
    send("first").await;
    if n % 10 == 0 {
        send("resent").await;
    }
    let mut resp = (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        json!({"esito": "PRESO", "protocollo": {"numero": format!("P-{operation}")}}).to_string(),
    )
        .into_response();
    resp.headers_mut()
        .insert("x-correlation-id", format!("V-{n}").parse().unwrap());
    resp
}

#[tokio::test]
async fn a_vendor_calling_back_before_its_202_loses_nothing_and_applies_nothing_twice() {
    early_callbacks_race("", &[]).await;
}

#[tokio::test]
async fn on_postgres_a_vendor_calling_back_before_its_202_loses_nothing_either() {
    let schema = crate::postgres::Schema::new();
    let store = r#"
[store]
kind = "postgres"
[store.postgres]
url_file = "database.url"
pool_size = 8
"#;
    early_callbacks_race(store, &[("database.url", schema.url.as_bytes())]).await;
}

/// [`race_count`] practices to the vendor that calls back first, on a hub
/// whose configuration ends with `store` (files beside it).
async fn early_callbacks_race(store: &str, files: &[(&str, &[u8])]) {
    let count = race_count();
    let vendor = Arc::new(EarlyVendor::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vaddr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/pratiche", axum::routing::post(early_vendor))
        .with_state(Arc::clone(&vendor));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = free_addr().await;
    let mut files = files.to_vec();
    files.push(("callback.secret", SECRET.as_bytes()));
    let mut hub = start(
        &format!("{}{store}", config(http, &rest_adapter(vaddr, http))),
        &files,
    )
    .await;

    let client = hub.practices.clone();
    let ids: Vec<String> = futures::stream::iter(0..count)
        .map(|i| {
            let mut client = client.clone();
            async move {
                client
                    .submit_practice(tari(&format!("early-{i}")))
                    .await
                    .expect("submit")
                    .into_inner()
                    .practice
                    .unwrap()
                    .id
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let patience = Duration::from_secs(60) + Duration::from_millis(60 * count as u64);
    for id in &ids {
        let client = hub.practices.clone();
        eventually_within(patience, "every practice approved", || {
            let mut client = client.clone();
            let id = id.clone();
            async move {
                let p = get(&mut client, "016024", &id).await;
                (p.status == pb::AdministrativeStatus::Approved as i32).then_some(())
            }
        })
        .await;
    }

    // Nothing lost: every first callback was accepted, before its 202, as
    // pending; every re-sent one was a duplicate.
    assert!(vendor.lost.lock().unwrap().is_empty(), "{:?}", vendor.lost);
    assert_eq!(
        *vendor.first.lock().unwrap(),
        BTreeMap::from([(202, count)]),
        "first callbacks"
    );
    assert_eq!(
        *vendor.resent.lock().unwrap(),
        BTreeMap::from([(200, count.div_ceil(10))]),
        "re-sent callbacks"
    );
    // Nothing applied twice, and in the order the vendor acted.
    for id in &ids {
        let p = hub.get("016024", id).await;
        let trail = trail(&p);
        let tail: Vec<&str> = trail.iter().map(String::as_str).collect();
        let at = tail
            .iter()
            .position(|t| *t == "delivery ACKNOWLEDGED")
            .unwrap_or_else(|| panic!("{id}: {tail:?}"));
        assert_eq!(
            tail[at..],
            [
                "delivery ACKNOWLEDGED",
                "status REGISTERED",
                "status APPROVED"
            ],
            "{id}"
        );
        let protocols: Vec<&str> = p
            .external_refs
            .iter()
            .filter(|r| r.kind == "protocol")
            .map(|r| r.value.as_str())
            .collect();
        assert_eq!(protocols.len(), 1, "{id}: {protocols:?}");
    }
    let metrics = scrape(http).await;
    let pending = sample(
        &metrics,
        "raccordo_inbound_results_total",
        &[("adapter", "vendor"), ("outcome", "pending")],
    );
    assert_eq!(pending as usize, count, "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "raccordo_anomalies_total",
            &[("adapter", "vendor")]
        ),
        0.0
    );
    hub.stop().await;
}

/// The REST vendor of the anomaly test: 202 with its own id `corr-{n}`.
async fn acknowledging_vendor(State(n): State<Arc<AtomicUsize>>) -> Response {
    let n = n.fetch_add(1, Ordering::SeqCst);
    let mut resp = StatusCode::ACCEPTED.into_response();
    resp.headers_mut()
        .insert("x-correlation-id", format!("corr-{n}").parse().unwrap());
    resp
}

#[tokio::test]
async fn late_and_contradictory_callbacks_are_recorded_as_anomalies_and_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vaddr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/pratiche", axum::routing::post(acknowledging_vendor))
        .with_state(Arc::new(AtomicUsize::new(0)));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = free_addr().await;
    let mut hub = start(
        &config(http, &rest_adapter(vaddr, http)),
        &[("callback.secret", SECRET.as_bytes())],
    )
    .await;
    let url = format!("http://{http}/callbacks/vendor/result");
    let client = reqwest::Client::new();

    let p = hub.submit(tari("late")).await;
    let acked = hub
        .wait_delivery("016024", &p.id, pb::DeliveryStatus::Acknowledged)
        .await;
    let corr = acked
        .external_refs
        .iter()
        .find(|r| r.kind == "correlation_id")
        .unwrap()
        .value
        .clone();
    let approved = json!({"esito": "OK", "protocollo": {"numero": "2026/1"}});
    let (status, body) = post_callback(&client, &url, &corr, "k-1", &approved)
        .await
        .unwrap();
    assert_eq!((status, body["result"].as_str()), (200, Some("applied")));
    // The same callback again: idempotent.
    let (status, body) = post_callback(&client, &url, &corr, "k-1", &approved)
        .await
        .unwrap();
    assert_eq!((status, body["result"].as_str()), (200, Some("duplicate")));
    let before = hub.get("016024", &p.id).await;
    assert_eq!(before.status, pb::AdministrativeStatus::Approved as i32);

    // A second outcome with another protocol number for the concluded practice.
    let late = json!({"esito": "OK", "protocollo": {"numero": "2026/2"}});
    let (status, problem) = post_callback(&client, &url, &corr, "k-2", &late)
        .await
        .unwrap();
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["anomaly"], "late");
    assert!(
        problem["detail"].as_str().unwrap().contains("2026/2"),
        "{problem}"
    );
    let after = hub.get("016024", &p.id).await;
    assert_eq!(after.status, pb::AdministrativeStatus::Approved as i32);
    let protocols: Vec<&str> = after
        .external_refs
        .iter()
        .filter(|r| r.kind == "protocol")
        .map(|r| r.value.as_str())
        .collect();
    assert_eq!(protocols, ["2026/1"], "never merged");
    assert_eq!(after.events.len(), before.events.len() + 1);
    let anomaly = after.events.last().unwrap();
    assert_eq!(anomaly.kind, pb::EventKind::Anomaly as i32);
    assert_eq!(
        anomaly.from_status,
        pb::AdministrativeStatus::Approved as i32
    );
    assert_eq!(anomaly.actor, "vendor");
    assert!(
        anomaly.reason.contains("protocol 2026/2"),
        "{}",
        anomaly.reason
    );
    // Its repeat is refused the same way and records nothing more.
    let (status, problem) = post_callback(&client, &url, &corr, "k-2", &late)
        .await
        .unwrap();
    assert_eq!((status, problem["anomaly"].as_str()), (409, Some("late")));
    assert_eq!(
        hub.get("016024", &p.id).await.events.len(),
        after.events.len()
    );

    // An open practice: a result that contradicts the protocol number given.
    let q = hub.submit(tari("contradictory")).await;
    let acked = hub
        .wait_delivery("016024", &q.id, pb::DeliveryStatus::Acknowledged)
        .await;
    let corr = acked
        .external_refs
        .iter()
        .find(|r| r.kind == "correlation_id")
        .unwrap()
        .value
        .clone();
    let registered = json!({"esito": "PRESO", "protocollo": {"numero": "2026/10"}});
    let (status, _) = post_callback(&client, &url, &corr, "k-3", &registered)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let other = json!({"esito": "IN_CORSO", "protocollo": {"numero": "2026/11"}});
    let (status, problem) = post_callback(&client, &url, &corr, "k-4", &other)
        .await
        .unwrap();
    assert_eq!(
        (status, problem["anomaly"].as_str()),
        (409, Some("contradictory")),
        "{problem}"
    );
    assert_eq!(
        hub.get("016024", &q.id).await.status,
        pb::AdministrativeStatus::Registered as i32
    );

    // Counted, by adapter and class, and shown to operators.
    let metrics = scrape(http).await;
    for (class, n) in [("late", 1.0), ("contradictory", 1.0)] {
        assert_eq!(
            sample(
                &metrics,
                "raccordo_anomalies_total",
                &[("adapter", "vendor"), ("class", class)]
            ),
            n,
            "{class}"
        );
    }
    assert_eq!(
        sample(
            &metrics,
            "raccordo_inbound_results_total",
            &[("adapter", "vendor"), ("outcome", "anomaly")]
        ),
        3.0
    );
    let status = hub
        .admin
        .get_hub_status(pb::GetHubStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let vendor = status.adapters.iter().find(|a| a.name == "vendor").unwrap();
    assert_eq!(vendor.anomalies, 2);
    assert!(vendor.last_anomaly_at.is_some());
    let grpc = hub.hub.as_ref().unwrap().grpc_addr;
    let out = tokio::process::Command::new(BIN)
        .args(["status", "--server", &format!("http://{grpc}")])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ANOMALIES"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("vendor "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.trim_end().ends_with(" 2"), "{text}");
    assert!(text.contains("vendor: last anomaly recorded at"), "{text}");
    hub.stop().await;
}

/// The WS-Security UsernameToken (digest) a vendor puts in its callback.
fn vendor_token() -> String {
    use base64::Engine;
    let nonce: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a);
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let digest =
        raccordo_adapters::soap::security::password_digest(&nonce, &created, SOAP_PASSWORD);
    let b64 = base64::engine::general_purpose::STANDARD.encode(nonce);
    format!(
        r#"<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"><wsse:UsernameToken><wsse:Username>fornitore</wsse:Username><wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">{digest}</wsse:Password><wsse:Nonce>{b64}</wsse:Nonce><wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"#
    )
}

/// A SOAP callback with `esito` and protocol number `numero`.
pub(crate) fn soap_callback(
    correlation: &str,
    message_id: &str,
    esito: &str,
    numero: &str,
) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:wsa="http://www.w3.org/2005/08/addressing">
  <soapenv:Header>
    {}
    <modi:X-Correlation-ID xmlns:modi="http://www.agid.gov.it/modi">{correlation}</modi:X-Correlation-ID>
    <wsa:MessageID>{message_id}</wsa:MessageID>
  </soapenv:Header>
  <soapenv:Body>
    <cb:result xmlns:cb="urn:raccordo:callback:v1">
      <s:esito xmlns:s="urn:suap:v1"><s:stato>{esito}</s:stato><s:protocollo>{numero}</s:protocollo></s:esito>
    </cb:result>
  </soapenv:Body>
</soapenv:Envelope>"#,
        vendor_token()
    )
}

/// POSTs a SOAP callback to `url`; returns the status and the envelope.
pub(crate) async fn post_soap(
    client: &reqwest::Client,
    url: &str,
    envelope: String,
) -> (u16, String) {
    let resp = client
        .post(url)
        .header("content-type", "text/xml; charset=utf-8")
        .header("soapaction", "\"urn:raccordo:callback:v1/result\"")
        .body(envelope)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A SOAP back office that, like the REST one above, calls back before it
/// acknowledges: the callback names the hub's operation id (the request's
/// `Idempotency-Key`); the hub's answers are kept.
#[derive(Default)]
struct SoapVendor {
    callback_url: Mutex<String>,
    answers: Mutex<Vec<(u16, String)>>,
    client: reqwest::Client,
}

async fn soap_vendor(State(v): State<Arc<SoapVendor>>, headers: HeaderMap) -> Response {
    let operation = headers
        .get("idempotency-key")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let url = v.callback_url.lock().unwrap().clone();
    let answer = post_soap(
        &v.client,
        &url,
        soap_callback(
            &operation,
            &format!("urn:uuid:{operation}"),
            "ACCOLTA",
            "S-1",
        ),
    )
    .await;
    v.answers.lock().unwrap().push(answer);
    let ack = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
  <soapenv:Header><modi:X-Correlation-ID xmlns:modi="http://www.agid.gov.it/modi">SUAP-{operation}</modi:X-Correlation-ID></soapenv:Header>
  <soapenv:Body><s:ricevuta xmlns:s="urn:suap:v1"/></soapenv:Body>
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
async fn a_soap_vendor_calling_back_before_its_acknowledgement_and_then_late() {
    let vendor = Arc::new(SoapVendor::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vaddr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/ws/pratiche", axum::routing::post(soap_vendor))
        .with_state(Arc::clone(&vendor));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = free_addr().await;
    let url = format!("http://{http}/callbacks/vendor");
    *vendor.callback_url.lock().unwrap() = url.clone();
    let adapter = format!(
        r#"kind = "soap"
pattern = "NONBLOCK_PUSH_SOAP"
endpoint = "http://{vaddr}/ws/pratiche"
timeout = "10s"
namespaces = {{ cb = "urn:raccordo:callback:v1", s = "urn:suap:v1" }}
[adapters.vendor.submit]
action = "urn:suap:v1:invia"
body = "normalized"
[adapters.vendor.push]
public_base_url = "http://{http}"
username = "fornitore"
password_file = "callback.password"
[adapters.vendor.response]
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
    const N: usize = 20;
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(hub.submit(tari(&format!("soap-{i}"))).await.id);
    }
    for id in &ids {
        let p = hub
            .wait_status("016024", id, pb::AdministrativeStatus::Approved)
            .await;
        let trail = trail(&p);
        let at = trail
            .iter()
            .position(|t| t == "delivery ACKNOWLEDGED")
            .unwrap_or_else(|| panic!("{trail:?}"));
        assert_eq!(trail[at..], ["delivery ACKNOWLEDGED", "status APPROVED"]);
    }
    let answers = vendor.answers.lock().unwrap().clone();
    assert_eq!(answers.len(), N);
    for (status, envelope) in &answers {
        assert_eq!(*status, 200, "{envelope}");
        assert!(envelope.contains(">pending<"), "{envelope}");
    }

    // The same result again (same wsa:MessageID): a duplicate.
    let p = hub.get("016024", &ids[0]).await;
    let operation = p.delivery.as_ref().unwrap().operation_id.clone();
    let again = soap_callback(
        &operation,
        &format!("urn:uuid:{operation}"),
        "ACCOLTA",
        "S-1",
    );
    let (status, envelope) = post_soap(&reqwest::Client::new(), &url, again).await;
    assert_eq!(status, 200);
    assert!(envelope.contains(">duplicate<"), "{envelope}");
    // A late result that says otherwise: a Client fault, an ANOMALY event.
    let late = soap_callback(&operation, "urn:uuid:late-1", "RESPINTA", "S-2");
    let (status, envelope) = post_soap(&reqwest::Client::new(), &url, late).await;
    assert_eq!(status, 500);
    assert!(
        envelope.contains("soap:Client") && envelope.contains("anomaly (late)"),
        "{envelope}"
    );
    let after = hub.get("016024", &ids[0]).await;
    assert_eq!(after.status, pb::AdministrativeStatus::Approved as i32);
    assert_eq!(after.events.len(), p.events.len() + 1);
    assert_eq!(
        after.events.last().unwrap().kind,
        pb::EventKind::Anomaly as i32
    );
    hub.stop().await;
}
