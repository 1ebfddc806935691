//! The REST adapter's ModI patterns end to end: a vendor on loopback started
//! by each test (push callbacks, pull polling, 429, OAuth2, mutual TLS, the
//! circuit breaker), the hub's real HTTP listener and gRPC API.

use crate::support::*;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use raccordo_proto::v1 as pb;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "callback-secret-0123456789";

/// One request the vendor received.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    method: Method,
    path: String,
    headers: HeaderMap,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A scripted answer: status, headers, body.
type Reply = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// Scripts by path prefix.
type Scripts = Vec<(String, VecDeque<Reply>)>;

fn json_reply(status: u16, body: Value) -> Reply {
    (status, Vec::new(), body.to_string().into_bytes())
}

/// A vendor answering each path from its own script (the last answer of a
/// script repeats), recording every request with its time.
#[derive(Clone, Default)]
struct ModiVendor {
    scripts: Arc<Mutex<Scripts>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Delay of the token endpoint, so concurrent deliveries overlap it.
    token_delay: Arc<Mutex<Duration>>,
    tokens: Arc<Mutex<u32>>,
}

impl ModiVendor {
    /// Answers requests whose path starts with `prefix` with `replies` in order.
    fn on(&self, prefix: &str, replies: Vec<Reply>) {
        self.scripts
            .lock()
            .unwrap()
            .push((prefix.to_string(), replies.into()));
    }

    /// Replaces the script of `prefix`.
    fn set(&self, prefix: &str, replies: Vec<Reply>) {
        let mut scripts = self.scripts.lock().unwrap();
        scripts.retain(|(p, _)| p != prefix);
        scripts.push((prefix.to_string(), replies.into()));
    }

    fn seen(&self, method: Method, prefix: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method && s.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    fn router(&self) -> axum::Router {
        axum::Router::new()
            .fallback(vendor_handle)
            .with_state(self.clone())
    }

    async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = self.router();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }
}

async fn vendor_handle(
    State(v): State<ModiVendor>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let path = uri.path().to_string();
    v.seen.lock().unwrap().push(Seen {
        at: Instant::now(),
        method: method.clone(),
        path: path.clone(),
        headers: headers.clone(),
    });
    if path == "/token" {
        let delay = *v.token_delay.lock().unwrap();
        tokio::time::sleep(delay).await;
        let n = {
            let mut t = v.tokens.lock().unwrap();
            *t += 1;
            *t
        };
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            json!({"access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": 4})
                .to_string(),
        )
            .into_response();
    }
    let reply = {
        let mut scripts = v.scripts.lock().unwrap();
        scripts
            .iter_mut()
            .find(|(p, _)| path.starts_with(p.as_str()))
            .map(|(_, q)| {
                if q.len() > 1 {
                    q.pop_front().unwrap()
                } else {
                    q.front().cloned().unwrap()
                }
            })
    };
    let (status, hdrs, body) = reply.unwrap_or_else(|| {
        json_reply(
            200,
            json!({"esito": "OK", "protocollo": {"numero": "2026/1"}}),
        )
    });
    let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    for (k, val) in hdrs {
        resp.headers_mut().insert(k, val.parse().unwrap());
    }
    resp
}

/// A hub configuration with one deferred service (TARI) routed to the
/// adapter `vendor`, whose table is `adapter` (without its header).
fn config(http: SocketAddr, max_attempts: u32, adapter: &str) -> String {
    format!(
        r#"
[hub]
grpc_listen = "127.0.0.1:0"
http_listen = "{http}"
data_dir = "data"
shutdown_grace = "2s"

[delivery]
max_attempts = {max_attempts}
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
kind = "rest"
timeout = "3s"
connect_timeout = "500ms"
{adapter}
"#
    )
}

const MAPPING: &str = r#"
[adapters.vendor.response]
status_pointer = "/esito"
status_map = { OK = "APPROVED", KO = "REJECTED", PRESO = "REGISTERED", IN_CORSO = "IN_PROGRESS" }
reason_pointer = "/motivo"
protocol_pointer = "/protocollo/numero"
date_pointer = "/data"
documents_pointer = "/documenti"
"#;

/// Starts a hub on `toml`, with files (secrets, certificates) beside it.
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

/// POSTs a callback as the vendor would; `sign_with` None = correct secret.
async fn callback(
    url: &str,
    correlation: &str,
    body: &Value,
    timestamp: i64,
    secret: &str,
) -> (u16, String, Value) {
    let body = body.to_string();
    let ts = timestamp.to_string();
    let sig = raccordo_adapters::rest::callback::sign(secret.as_bytes(), &ts, body.as_bytes());
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-correlation-id", correlation)
        .header("x-timestamp", ts)
        .header("x-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, ct, body)
}

#[tokio::test]
async fn push_callbacks_are_verified_correlated_and_applied_once() {
    let vendor = ModiVendor::default();
    vendor.on(
        "/pratiche",
        vec![(
            202,
            vec![("x-correlation-id", "corr-42".into())],
            Vec::new(),
        )],
    );
    let vaddr = vendor.start().await;
    let http = free_addr().await;
    let adapter = format!(
        r#"pattern = "NONBLOCK_PUSH_REST"
base_url = "http://{vaddr}"
[adapters.vendor.submit]
path = "/pratiche"
[adapters.vendor.callback]
public_base_url = "http://{http}"
secret_file = "callback.secret"
max_skew = "60s"
{MAPPING}"#
    );
    let mut hub = start(
        &config(http, 3, &adapter),
        &[("callback.secret", SECRET.as_bytes())],
    )
    .await;
    let p = hub.submit(tari("push")).await;
    let acked = hub
        .wait_delivery("016024", &p.id, pb::DeliveryStatus::Acknowledged)
        .await;
    assert_eq!(acked.status, pb::AdministrativeStatus::Submitted as i32);
    assert!(
        acked
            .external_refs
            .iter()
            .any(|r| r.kind == "correlation_id" && r.value == "corr-42")
    );
    let sent = vendor.seen(Method::POST, "/pratiche");
    let url = format!("http://{http}/callbacks/vendor/result");
    assert_eq!(sent[0].header("x-replyto"), url);

    let now = chrono::Utc::now().timestamp();
    let registered =
        json!({"esito": "PRESO", "protocollo": {"numero": "2026/77"}, "data": "2026-11-20"});
    let events_before = hub.get("016024", &p.id).await.events.len();

    // Bad signature: refused as problem+json, nothing changes.
    let (status, ct, problem) =
        callback(&url, "corr-42", &registered, now, "wrong-secret-0123456789").await;
    assert_eq!(status, 401);
    assert_eq!(ct, "application/problem+json");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("does not match")
    );
    // Stale timestamp, even correctly signed.
    let (status, _, _) = callback(&url, "corr-42", &registered, now - 3600, SECRET).await;
    assert_eq!(status, 401);
    // Unknown correlation id.
    let (status, ct, problem) = callback(&url, "corr-nobody", &registered, now, SECRET).await;
    assert_eq!((status, ct.as_str()), (404, "application/problem+json"));
    assert!(problem["detail"].as_str().unwrap().contains("corr-nobody"));
    // A body the mapping cannot read.
    let (status, _, problem) =
        callback(&url, "corr-42", &json!({"esito": "BOH"}), now, SECRET).await;
    assert_eq!(status, 422);
    assert!(problem["detail"].as_str().unwrap().contains("status_map"));
    let unchanged = hub.get("016024", &p.id).await;
    assert_eq!(unchanged.status, pb::AdministrativeStatus::Submitted as i32);
    assert_eq!(unchanged.events.len(), events_before);

    // Intermediate report: registered with a protocol number.
    let (status, _, body) = callback(&url, "corr-42", &registered, now, SECRET).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("applied")));
    let reg = hub.get("016024", &p.id).await;
    assert_eq!(reg.status, pb::AdministrativeStatus::Registered as i32);
    assert!(
        reg.external_refs
            .iter()
            .any(|r| r.kind == "protocol" && r.value == "2026/77")
    );

    // Final result, then the same callback again: applied once.
    let fin = json!({"esito": "OK", "documenti": [{"name": "esito.txt", "media_type": "text/plain", "content_base64": "b2s="}]});
    let (status, _, body) = callback(&url, "corr-42", &fin, now, SECRET).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("applied")));
    let events_after = hub.get("016024", &p.id).await.events.len();
    let (status, _, body) = callback(&url, "corr-42", &fin, now + 1, SECRET).await;
    assert_eq!((status, body["result"].as_str()), (200, Some("duplicate")));
    let done = hub.get("016024", &p.id).await;
    assert_eq!(done.status, pb::AdministrativeStatus::Approved as i32);
    assert_eq!(
        done.events.len(),
        events_after,
        "a duplicate changes nothing"
    );
    let docs = done.outcome.unwrap().documents;
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].sha256, raccordo_adapters::model::sha256_hex(b"ok"));
    hub.stop().await;
}

fn pull_adapter(vaddr: SocketAddr, max_wait: &str) -> String {
    format!(
        r#"pattern = "NONBLOCK_PULL_REST"
base_url = "http://{vaddr}"
[adapters.vendor.submit]
path = "/pratiche"
[adapters.vendor.pull]
initial_interval = "50ms"
max_interval = "100ms"
max_wait = "{max_wait}"
{MAPPING}"#
    )
}

#[tokio::test]
async fn pull_polls_until_303_then_fetches_the_result_and_its_documents() {
    let vendor = ModiVendor::default();
    vendor.on(
        "/pratiche",
        vec![(202, vec![("location", "/stato/9".into())], Vec::new())],
    );
    vendor.on(
        "/stato/9",
        vec![
            json_reply(
                200,
                json!({"esito": "PRESO", "protocollo": {"numero": "P-9"}}),
            ),
            json_reply(200, json!({})),
            (303, vec![("location", "/esiti/9".into())], Vec::new()),
        ],
    );
    vendor.on(
        "/esiti/9",
        vec![json_reply(
            200,
            json!({"esito": "OK", "documenti": [{"name": "cert.pdf", "media_type": "application/pdf", "url": "/doc/9"}]}),
        )],
    );
    vendor.on(
        "/doc/9",
        vec![(200, Vec::new(), b"%PDF-certificato".to_vec())],
    );
    let vaddr = vendor.start().await;
    let mut hub = start(
        &config(free_addr().await, 3, &pull_adapter(vaddr, "30s")),
        &[],
    )
    .await;
    let p = hub.submit(tari("pull")).await;
    let done = hub
        .wait_status("016024", &p.id, pb::AdministrativeStatus::Approved)
        .await;
    let delivery = done.delivery.as_ref().unwrap();
    assert_eq!(delivery.status, pb::DeliveryStatus::Acknowledged as i32);
    assert_eq!(delivery.attempts, 1);
    assert_eq!(vendor.seen(Method::POST, "/pratiche").len(), 1);
    assert_eq!(vendor.seen(Method::GET, "/stato/9").len(), 3);
    assert_eq!(vendor.seen(Method::GET, "/esiti/9").len(), 1);
    // The intermediate report registered the practice before the outcome.
    let statuses: Vec<i32> = done
        .events
        .iter()
        .filter(|e| e.kind == pb::EventKind::StatusChanged as i32)
        .map(|e| e.to_status)
        .collect();
    assert_eq!(
        statuses,
        [
            pb::AdministrativeStatus::Submitted as i32,
            pb::AdministrativeStatus::Registered as i32,
            pb::AdministrativeStatus::Approved as i32,
        ]
    );
    assert!(
        done.external_refs
            .iter()
            .any(|r| r.kind == "protocol" && r.value == "P-9")
    );
    let docs = done.outcome.unwrap().documents;
    assert_eq!(docs[0].name, "cert.pdf");
    assert_eq!(
        docs[0].sha256,
        raccordo_adapters::model::sha256_hex(b"%PDF-certificato")
    );
    hub.stop().await;
}

#[tokio::test]
async fn polling_survives_a_restart_without_re_sending_the_request() {
    let vendor = ModiVendor::default();
    vendor.on(
        "/pratiche",
        vec![(202, vec![("location", "/stato/5".into())], Vec::new())],
    );
    vendor.on("/stato/5", vec![json_reply(200, json!({}))]);
    vendor.on("/esiti/5", vec![json_reply(200, json!({"esito": "OK"}))]);
    let vaddr = vendor.start().await;
    let toml = config(free_addr().await, 3, &pull_adapter(vaddr, "30s"));
    let mut hub = start(&toml, &[]).await;
    let p = hub.submit(tari("restart")).await;
    eventually("a first poll", || async {
        (!vendor.seen(Method::GET, "/stato/5").is_empty()).then_some(())
    })
    .await;
    // The vendor has answered the poll; the hub records the next one just after.
    let waiting = hub
        .wait_practice("016024", &p.id, "the next poll scheduled", |p| {
            p.delivery
                .as_ref()
                .is_some_and(|d| d.next_attempt_at.is_some())
        })
        .await;
    let d = waiting.delivery.unwrap();
    assert_eq!(d.status, pb::DeliveryStatus::Sent as i32);
    let dir = hub.dir.path().to_path_buf();
    hub.hub.take().unwrap().shutdown().await.unwrap();

    // Done while the hub was down; the restarted hub polls, it does not re-send.
    vendor.set(
        "/stato/5",
        vec![(303, vec![("location", "/esiti/5".into())], Vec::new())],
    );
    let config = raccordo::config::load(&dir.join("raccordo.toml")).unwrap();
    let restarted = raccordo::server::start(config).await.unwrap();
    hub.practices =
        pb::practice_service_client::PracticeServiceClient::new(connect(restarted.grpc_addr).await);
    hub.hub = Some(restarted);
    hub.wait_status("016024", &p.id, pb::AdministrativeStatus::Approved)
        .await;
    assert_eq!(vendor.seen(Method::POST, "/pratiche").len(), 1);
    assert_eq!(vendor.seen(Method::GET, "/esiti/5").len(), 1);
    hub.stop().await;
}

#[tokio::test]
async fn a_pull_that_never_finishes_ends_outcome_unknown_within_the_maximum_wait() {
    let vendor = ModiVendor::default();
    vendor.on(
        "/pratiche",
        vec![(202, vec![("location", "/stato/1".into())], Vec::new())],
    );
    vendor.on("/stato/1", vec![json_reply(200, json!({}))]);
    let vaddr = vendor.start().await;
    // One attempt: when the wait ends there is nothing left to retry. The
    // wait leaves room for several polls 50-100 ms apart even on a loaded
    // machine (the test asserts at least two).
    let mut hub = start(
        &config(free_addr().await, 1, &pull_adapter(vaddr, "1500ms")),
        &[],
    )
    .await;
    let p = hub.submit(tari("never")).await;
    let dead = hub
        .wait_delivery("016024", &p.id, pb::DeliveryStatus::DeadLettered)
        .await;
    assert_eq!(dead.status, pb::AdministrativeStatus::Submitted as i32);
    let d = dead.delivery.unwrap();
    assert_eq!(d.failure_class, "outcome_unknown");
    assert!(d.last_error.contains("maximum wait"), "{}", d.last_error);
    assert_eq!(vendor.seen(Method::POST, "/pratiche").len(), 1);
    let polls = vendor.seen(Method::GET, "/stato/1");
    assert!(polls.len() >= 2, "polled {} times", polls.len());
    // Bounded: polling stopped with the delivery.
    let after = vendor.seen(Method::GET, "/stato/1").len();
    assert_eq!(after, polls.len());
    hub.stop().await;
}

#[tokio::test]
async fn retry_after_on_429_holds_the_next_request_at_least_that_long() {
    let vendor = ModiVendor::default();
    vendor.on(
        "/pratiche",
        vec![
            (
                429,
                vec![("retry-after", "1".into())],
                json!({"title": "troppe richieste"})
                    .to_string()
                    .into_bytes(),
            ),
            json_reply(200, json!({"esito": "OK"})),
        ],
    );
    let vaddr = vendor.start().await;
    let adapter = format!(
        "base_url = \"http://{vaddr}\"\n[adapters.vendor.submit]\npath = \"/pratiche\"\n{MAPPING}"
    );
    // The hub's own backoff (≤ 200 ms) is shorter than the vendor's wish.
    let mut hub = start(&config(free_addr().await, 4, &adapter), &[]).await;
    let p = hub.submit(tari("429")).await;
    let done = hub
        .wait_status("016024", &p.id, pb::AdministrativeStatus::Approved)
        .await;
    let seen = vendor.seen(Method::POST, "/pratiche");
    assert_eq!(seen.len(), 2);
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_secs(1), "re-sent after {gap:?}");
    assert!(
        done.events
            .iter()
            .any(|e| e.reason.contains("HTTP 429: troppe richieste"))
    );
    hub.stop().await;
}

#[tokio::test]
async fn oauth2_token_is_fetched_once_for_concurrent_deliveries_and_refreshed_before_expiry() {
    let vendor = ModiVendor::default();
    *vendor.token_delay.lock().unwrap() = Duration::from_millis(200);
    let vaddr = vendor.start().await;
    // Tokens live 4 s; refreshed 2 s before expiry.
    let adapter = format!(
        r#"base_url = "http://{vaddr}"
max_concurrency = 8
[adapters.vendor.auth]
type = "oauth2_client_credentials"
token_url = "http://{vaddr}/token"
client_id = "hub"
client_secret_file = "client.secret"
scope = "pratiche"
refresh_before = "2s"
[adapters.vendor.submit]
path = "/pratiche"
{MAPPING}"#
    );
    let mut hub = start(
        &config(free_addr().await, 3, &adapter),
        &[("client.secret", b"s3cret-value")],
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(hub.submit(tari(&format!("oauth-{i}"))).await.id);
    }
    for id in &ids {
        hub.wait_status("016024", id, pb::AdministrativeStatus::Approved)
            .await;
    }
    let tokens = vendor.seen(Method::POST, "/token");
    assert_eq!(tokens.len(), 1, "one token for every delivery");
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("hub:s3cret-value");
    assert_eq!(tokens[0].header("authorization"), format!("Basic {basic}"));
    for s in vendor.seen(Method::POST, "/pratiche") {
        assert_eq!(s.header("authorization"), "Bearer tok-1");
    }

    // Past the refresh point (2 s after the token was issued): one refresh.
    let refresh_at = tokens[0].at + Duration::from_millis(2500);
    tokio::time::sleep_until(refresh_at.into()).await;
    let mut more = Vec::new();
    for i in 0..4 {
        more.push(hub.submit(tari(&format!("oauth-more-{i}"))).await.id);
    }
    for id in &more {
        hub.wait_status("016024", id, pb::AdministrativeStatus::Approved)
            .await;
    }
    assert_eq!(vendor.seen(Method::POST, "/token").len(), 2);
    let last = vendor.seen(Method::POST, "/pratiche");
    assert_eq!(last.last().unwrap().header("authorization"), "Bearer tok-2");
    hub.stop().await;
}

/// A TLS listener that requires a client certificate signed by the test CA.
struct MutualTls {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for MutualTls {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client without a valid certificate fails here and is dropped.
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tls")
            .join(name),
    )
    .unwrap()
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&fixture("ca.pem")) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&fixture("server.pem"))
            .map(|c| c.unwrap())
            .collect();
    let key = PrivateKeyDer::from_pem_slice(&fixture("server.key")).unwrap();
    let tls = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vaddr = tcp.local_addr().unwrap();
    let vendor = ModiVendor::default();
    let app = vendor.router();
    let listener = MutualTls {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let adapter = |with_cert: bool| {
        let cert = if with_cert {
            "client_cert_file = \"client.pem\"\nclient_key_file = \"client.key\"\n"
        } else {
            ""
        };
        format!(
            "base_url = \"https://localhost:{}\"\n[adapters.vendor.tls]\nca_file = \"ca.pem\"\n{cert}[adapters.vendor.submit]\npath = \"/pratiche\"\n{MAPPING}",
            vaddr.port()
        )
    };
    let files: [(&str, &[u8]); 3] = [
        ("ca.pem", &fixture("ca.pem")),
        ("client.pem", &fixture("client.pem")),
        ("client.key", &fixture("client.key")),
    ];
    let mut hub = start(&config(free_addr().await, 3, &adapter(true)), &files).await;
    let p = hub.submit(tari("mtls")).await;
    hub.wait_status("016024", &p.id, pb::AdministrativeStatus::Approved)
        .await;
    assert_eq!(vendor.seen(Method::POST, "/pratiche").len(), 1);
    hub.stop().await;

    // Without the client certificate the vendor refuses the handshake.
    let mut hub = start(&config(free_addr().await, 1, &adapter(false)), &files).await;
    let p = hub.submit(tari("no-cert")).await;
    let dead = hub
        .wait_delivery("016024", &p.id, pb::DeliveryStatus::DeadLettered)
        .await;
    assert_eq!(vendor.seen(Method::POST, "/pratiche").len(), 1);
    assert!(!dead.delivery.unwrap().last_error.is_empty());
    hub.stop().await;
}

/// `GET {path}` on the hub's HTTP listener: (status, JSON body).
async fn probe(http: SocketAddr, path: &str) -> (u16, Value) {
    let resp = reqwest::get(format!("http://{http}{path}")).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// One vendor down does not take the instance out of a load balancer:
/// `/readyz` stays 200 (practices are still accepted and stored), while
/// `/adapters` names the instance whose breaker is open.
#[tokio::test]
async fn the_circuit_breaker_opens_after_consecutive_failures_and_closes_after_a_probe() {
    let vendor = ModiVendor::default();
    vendor.on(
        "/pratiche",
        vec![
            json_reply(503, json!({"title": "giù"})),
            json_reply(503, json!({"title": "giù"})),
            json_reply(200, json!({"esito": "OK"})),
        ],
    );
    let vaddr = vendor.start().await;
    let http = free_addr().await;
    let adapter = format!(
        "base_url = \"http://{vaddr}\"\n[adapters.vendor.breaker]\nfailure_threshold = 2\nopen_for = \"1s\"\n[adapters.vendor.submit]\npath = \"/pratiche\"\n{MAPPING}"
    );
    let mut hub = start(&config(http, 8, &adapter), &[]).await;
    let p = hub.submit(tari("breaker")).await;
    let down = eventually("the breaker to open", || async {
        let (status, body) = probe(http, "/adapters").await;
        (body["adapters"]["vendor"]["state"] == "down").then_some((status, body))
    })
    .await;
    assert_eq!(down.0, 200, "{}", down.1);
    assert!(
        down.1["adapters"]["vendor"]["reason"]
            .as_str()
            .unwrap()
            .contains("circuit breaker open"),
        "{}",
        down.1
    );
    let (status, ready) = probe(http, "/readyz").await;
    assert_eq!(status, 200, "ready while a vendor is down: {ready}");
    assert_eq!(ready["ready"], true, "{ready}");
    assert!(ready.get("adapters").is_none(), "{ready}");
    // Practices are still accepted and stored meanwhile.
    let queued = hub.submit(tari("while-open")).await;
    assert_eq!(queued.status, pb::AdministrativeStatus::Submitted as i32);
    // While open nothing is sent.
    assert_eq!(vendor.seen(Method::POST, "/pratiche").len(), 2);
    let done = hub
        .wait_status("016024", &p.id, pb::AdministrativeStatus::Approved)
        .await;
    let seen = vendor.seen(Method::POST, "/pratiche");
    assert!(seen.len() >= 3, "{}", seen.len());
    assert!(seen[2].at - seen[1].at >= Duration::from_secs(1));
    // Two failures, then the probe or a later attempt (the practice
    // submitted while open may be the probe; a delivery refused by the
    // open breaker counts as an attempt that was not sent).
    assert!(done.delivery.unwrap().attempts >= 3);
    hub.wait_status("016024", &queued.id, pb::AdministrativeStatus::Approved)
        .await;
    let (status, body) = probe(http, "/adapters").await;
    assert_eq!(
        (status, body["adapters"]["vendor"]["state"].as_str()),
        (200, Some("up"))
    );
    hub.stop().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_raccordo");

/// A configuration whose submission body is the template `tari.json`.
fn templated(dir: &std::path::Path, template: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("templates/tari.json"), template).unwrap();
    std::fs::write(dir.join("vendor.token"), "very-secret-token").unwrap();
    let adapter = r#"base_url = "http://127.0.0.1:9/api"
[adapters.vendor.auth]
type = "bearer"
token_file = "vendor.token"
[adapters.vendor.submit]
path = "/pratiche/{{ applicant.family_name }}"
body = "template"
template = "templates/tari.json"
[adapters.vendor.submit.query]
comune = "{{ tenant_id }}"
"#;
    let path = dir.join("raccordo.toml");
    std::fs::write(&path, config("127.0.0.1:0".parse().unwrap(), 3, adapter)).unwrap();
    path
}

#[test]
fn check_reports_a_template_error_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = templated(
        dir.path(),
        "{\n  \"superficie\": {{ data.superficie_mq }},\n  \"cf\": {{ applicant.fiscal_code ) }}\n}",
    );
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("adapters.vendor.submit.template")
            && err.contains("templates/tari.json: line 3")
            && err.contains("syntax error"),
        "{err}"
    );
}

#[test]
fn route_render_prints_the_exact_request_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = templated(
        dir.path(),
        "{\"superficie\": {{ data.superficie_mq }}, \"cognome\": {{ applicant.family_name }}}",
    );
    let sample = dir.path().join("sample.json");
    std::fs::write(
        &sample,
        json!({
            "applicant": {"type": "person", "fiscal_code": "RSSMRA45D25F205N", "given_name": "Mario", "family_name": "D'Alò/Rossi"},
            "data": {"superficie_mq": 85.5}
        })
        .to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "route",
            "render",
            "--tenant",
            "016024",
            "--service",
            "TARI",
            "--config",
        ])
        .arg(&path)
        .arg("--practice")
        .arg(&sample)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "POST http://127.0.0.1:9/api/pratiche/D%27Al%C3%B2%2FRossi?comune=016024"
    );
    assert!(text.contains("authorization: <redacted>"), "{text}");
    assert!(!text.contains("very-secret-token"), "{text}");
    assert!(text.contains("content-type: application/json"), "{text}");
    let body: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(body, json!({"superficie": 85.5, "cognome": "D'Alò/Rossi"}));
}
