//! The SOAP adapter against a real SOAP server on loopback answering with
//! recorded envelopes (tests/fixtures/soap/).

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use raccordo_adapters::adapter::{
    Correlation, InboundError, InboundOutcome, InboundResult, PollOutcome, PollRequest, ResultSink,
};
use raccordo_adapters::message::{NormalizedMessage, SCHEMA_V1};
use raccordo_adapters::model::*;
use raccordo_adapters::soap::SoapAdapter;
use raccordo_adapters::soap::config::SoapConfig;
use raccordo_adapters::{Adapter, DeliveryRequest, FailureClass};
use sha1::Digest;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/soap")
        .join(name)
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path(name)).unwrap()
}

fn request() -> DeliveryRequest {
    let mut data = serde_json::Map::new();
    data.insert("uso".into(), serde_json::json!("ESENTE"));
    DeliveryRequest {
        message: Arc::new(NormalizedMessage {
            schema: SCHEMA_V1.into(),
            message_id: "op-7".into(),
            operation: Operation::Submit,
            practice_id: "p-7".into(),
            tenant_id: "016024".into(),
            service_code: "CERT".into(),
            applicant: Applicant {
                subject: Subject::Person(Person {
                    fiscal_code: "MZZNCL80A01D704X".into(),
                    given_name: "Niccolò".into(),
                    family_name: "Mazzà & D'Alò <srl>".into(),
                }),
                contacts: Contacts::default(),
            },
            submitter: None,
            channel: ChannelInfo::default(),
            data,
            attachments: vec![],
            submitted_at: chrono::Utc::now(),
            withdrawal_reason: None,
            outcome_data: Default::default(),
        }),
        attempt: 1,
        route_vars: Arc::new(serde_json::Map::new()),
        traceparent: None,
    }
}

#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: String,
}

type Handler = Arc<dyn Fn(&HeaderMap, &str) -> Response + Send + Sync>;

/// A SOAP server on loopback: `handler` answers, every request is recorded.
async fn server(handler: Handler) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let s = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/ws",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let s = Arc::clone(&s);
            let handler = Arc::clone(&handler);
            async move {
                let resp = handler(&headers, &body);
                s.lock().unwrap().push(Seen { headers, body });
                resp
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ws", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn xml(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response {
    (status, [("content-type", content_type.to_string())], body).into_response()
}

fn ok(name: &'static str) -> Handler {
    Arc::new(move |_, _| xml(StatusCode::OK, "text/xml; charset=utf-8", fixture(name)))
}

/// The text of the first `<…:local …>…</…:local>` element.
fn element<'a>(body: &'a str, local: &str) -> Option<&'a str> {
    let start = [">", " "]
        .iter()
        .filter_map(|end| body.find(&format!(":{local}{end}")))
        .min()?;
    let open_end = start + body[start..].find('>')? + 1;
    let close = body[open_end..].find("</")?;
    Some(&body[open_end..open_end + close])
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
}

/// Checks a PasswordDigest the way a vendor does, independently of the
/// adapter's code: Base64(SHA-1(nonce + created + password)).
fn digest_ok(body: &str, user: &str, password: &str) -> bool {
    let (Some(u), Some(pw), Some(nonce), Some(created)) = (
        element(body, "Username"),
        element(body, "Password"),
        element(body, "Nonce"),
        element(body, "Created"),
    ) else {
        return false;
    };
    if !body.contains("#PasswordDigest") || unescape(u) != user {
        return false;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let Ok(nonce) = b64.decode(nonce) else {
        return false;
    };
    let mut h = sha1::Sha1::new();
    h.update(&nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    b64.encode(h.finalize()) == pw
}

fn config(endpoint: &str, extra: serde_json::Value) -> SoapConfig {
    let mut base = serde_json::json!({
        "endpoint": endpoint,
        "timeout": "2s",
        "connect_timeout": "500ms",
        "namespaces": {"c": "urn:anagrafe:certificati:v1", "e": "urn:anagrafe:errori:v1", "cb": "urn:raccordo:callback:v1"},
        "submit": {
            "action": "urn:anagrafe:certificati:v1:richiestaCertificato",
            "template_inline": "<c:richiestaCertificato xmlns:c=\"urn:anagrafe:certificati:v1\"><c:idOperazioneComune>{{ operation_id }}</c:idOperazioneComune><c:cognome>{{ applicant.family_name }}</c:cognome><c:codiceFiscale>{{ applicant.fiscal_code }}</c:codiceFiscale></c:richiestaCertificato>"
        },
        "response": {
            "status_path": "c:rispostaCertificato/c:esito",
            "status_map": {"EMESSO": "APPROVED", "RESPINTO": "REJECTED"},
            "reason_path": "c:rispostaCertificato/c:motivo",
            "protocol_path": "c:rispostaCertificato/c:protocollo/c:numero",
            "date_path": "c:rispostaCertificato/c:protocollo/c:data",
            "reference_path": "c:rispostaCertificato/c:idPratica",
            "documents": [{"path": "c:rispostaCertificato/c:certificato", "name_attribute": "nomeFile", "media_type_attribute": "tipoMime"}]
        },
        "faults": {"code_path": "*:Fault/*:detail/e:erroreServizio/e:codice", "map": {"EN122": "rejection"}}
    });
    merge(&mut base, extra);
    serde_json::from_value(base).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn build(cfg: SoapConfig) -> SoapAdapter {
    SoapAdapter::build("anagrafe", cfg, Path::new(".")).unwrap()
}

const PASSWORD: &str = "p&ss<wörd>\"'";

#[tokio::test]
async fn soap11_certificate_with_a_digest_token_the_server_verifies() {
    #[allow(unsafe_code)] // setting a variable is unsafe since edition 2024
    // SAFETY: unique variable name, read only by this test.
    unsafe {
        std::env::set_var("RACCORDO_TEST_SOAP_PW_11", PASSWORD)
    };
    let handler: Handler = Arc::new(|headers, body| {
        let action_ok = headers.get("soapaction").and_then(|v| v.to_str().ok())
            == Some("\"urn:anagrafe:certificati:v1:richiestaCertificato\"");
        if !action_ok || !digest_ok(body, "comune-bg", PASSWORD) {
            return xml(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/xml",
                fixture("fault_11_client.xml"),
            );
        }
        xml(
            StatusCode::OK,
            "text/xml; charset=utf-8",
            fixture("certificato_11.xml"),
        )
    });
    let (url, seen) = server(handler).await;
    let adapter = build(config(
        &url,
        serde_json::json!({
            "security": [
                {"type": "timestamp", "ttl": "5m"},
                {"type": "username_token", "username": "comune-bg", "password_env": "RACCORDO_TEST_SOAP_PW_11"}
            ],
            "addressing": {}
        }),
    ));
    let reply = adapter.deliver(request()).await.unwrap();
    assert_eq!(reply.status, Some(AdminStatus::Approved));
    assert_eq!(reply.vendor_code.as_deref(), Some("EMESSO"));
    assert_eq!(reply.external_refs[0].kind, "protocol");
    assert_eq!(reply.external_refs[0].value, "2026/0012345");
    assert_eq!(reply.external_refs[1].value, "ANA-2026-000417");
    assert_eq!(reply.documents.len(), 1);
    assert_eq!(reply.documents[0].meta.name, "certificato-residenza.pdf");
    assert_eq!(reply.documents[0].meta.media_type, "application/pdf");
    assert_eq!(reply.documents[0].content, fixture("certificato.pdf"));

    let got = seen.lock().unwrap()[0].clone();
    assert_eq!(got.headers["content-type"], "text/xml; charset=utf-8");
    assert_eq!(got.headers["x-correlation-id"], "op-7");
    assert!(
        got.body
            .contains("http://schemas.xmlsoap.org/soap/envelope/")
    );
    assert!(got.body.contains("<wsu:Timestamp"), "{}", got.body);
    assert!(got.body.contains("<wsa:Action"), "{}", got.body);
    assert!(got.body.contains("<wsa:MessageID"), "{}", got.body);
    assert!(got.body.contains("<wsa:To"), "{}", got.body);
    assert!(
        !got.body.contains(PASSWORD),
        "the digest never carries the password"
    );
    // Form values are escaped: the family name cannot break the document.
    assert!(
        unescape(element(&got.body, "cognome").unwrap()) == "Mazzà & D'Alò <srl>",
        "{}",
        got.body
    );
    // The rendered request never shows the password or its digest.
    let rendered = adapter.render(&request()).unwrap().unwrap();
    assert!(
        rendered.contains("&lt;redacted&gt;</wsse:Password>"),
        "{rendered}"
    );
}

#[tokio::test]
async fn soap12_with_a_text_password_holding_xml_special_characters() {
    #[allow(unsafe_code)] // setting a variable is unsafe since edition 2024
    // SAFETY: unique variable name, read only by this test.
    unsafe {
        std::env::set_var("RACCORDO_TEST_SOAP_PW_12", PASSWORD)
    };
    let handler: Handler = Arc::new(|headers, body| {
        let ct = headers["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_string();
        let pw = element(body, "Password").map(unescape);
        if !ct.starts_with("application/soap+xml")
            || !ct.contains("action=\"urn:anagrafe:certificati:v1:richiestaCertificato\"")
            || headers.contains_key("soapaction")
            || pw.as_deref() != Some(PASSWORD)
            || !body.contains("#PasswordText")
        {
            return xml(
                StatusCode::BAD_REQUEST,
                "application/soap+xml",
                fixture("fault_12_sender.xml"),
            );
        }
        xml(
            StatusCode::OK,
            "application/soap+xml; charset=utf-8",
            fixture("certificato_12.xml"),
        )
    });
    let (url, _) = server(handler).await;
    let adapter = build(config(
        &url,
        serde_json::json!({
            "soap_version": "1.2",
            "security": [{"type": "username_token", "username": "comune-bg", "password_env": "RACCORDO_TEST_SOAP_PW_12", "password_type": "text"}]
        }),
    ));
    let reply = adapter.deliver(request()).await.unwrap();
    assert_eq!(reply.status, Some(AdminStatus::Approved));
    assert_eq!(reply.external_refs[0].value, "2026/0012346");
    assert!(reply.occurred_at.is_some());
    assert_eq!(reply.documents[0].content, fixture("certificato.pdf"));
}

#[tokio::test]
async fn each_fault_kind_gets_its_failure_class() {
    let cases: [(&str, u16, FailureClass, &str, Option<&str>); 5] = [
        (
            "fault_11_server.xml",
            500,
            FailureClass::Transient,
            "temporaneamente non disponibile",
            Some("SRV-503"),
        ),
        (
            "fault_11_client.xml",
            500,
            FailureClass::Permanent,
            "codiceFiscale mancante",
            Some("soap:Client"),
        ),
        (
            "fault_11_vendor_code.xml",
            500,
            FailureClass::Rejection,
            "Soggetto non residente",
            Some("EN122"),
        ),
        (
            "fault_12_receiver.xml",
            500,
            FailureClass::Transient,
            "Timeout verso il sistema di protocollo",
            Some("env:Receiver"),
        ),
        (
            "fault_12_sender.xml",
            400,
            FailureClass::Permanent,
            "Codice fiscale formalmente errato",
            Some("a:DatiNonValidi"),
        ),
    ];
    for (file, status, class, text, code) in cases {
        let handler: Handler = Arc::new(move |_, _| {
            xml(
                StatusCode::from_u16(status).unwrap(),
                "text/xml",
                fixture(file),
            )
        });
        let (url, _) = server(handler).await;
        let err = build(config(&url, serde_json::json!({})))
            .deliver(request())
            .await
            .unwrap_err();
        assert_eq!(err.class, class, "{file}: {err}");
        assert!(err.reason.contains(text), "{file}: {}", err.reason);
        assert_eq!(err.vendor_code.as_deref(), code, "{file}");
    }
    // A vendor code can also override a Server fault.
    let (url, _) = server(Arc::new(|_, _| {
        xml(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/xml",
            fixture("fault_11_server.xml"),
        )
    }))
    .await;
    let err = build(config(
        &url,
        serde_json::json!({"faults": {"map": {"SRV-503": "permanent"}}}),
    ))
    .deliver(request())
    .await
    .unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
}

#[tokio::test]
async fn iso_8859_1_replies_decode_accented_names() {
    for ct in [
        "text/xml",
        "text/xml; charset=ISO-8859-1",
        "text/xml; charset=windows-1252",
    ] {
        let (url, _) = server(Arc::new(move |_, _| {
            xml(StatusCode::OK, ct, fixture("rifiuto_latin1.xml"))
        }))
        .await;
        let reply = build(config(&url, serde_json::json!({})))
            .deliver(request())
            .await
            .unwrap();
        assert_eq!(reply.status, Some(AdminStatus::Rejected), "{ct}");
        assert_eq!(
            reply.reason.as_deref(),
            Some("Niccolò Mazzà non risulta residente nel Comune di Forlì"),
            "{ct}"
        );
    }
}

#[tokio::test]
async fn mtom_replies_carry_the_certificate_as_a_mime_part() {
    let ct = String::from_utf8(fixture("certificato_mtom.content-type")).unwrap();
    let (url, _) = server(Arc::new(move |_, _| {
        xml(StatusCode::OK, ct.trim(), fixture("certificato_mtom.bin"))
    }))
    .await;
    let reply = build(config(&url, serde_json::json!({})))
        .deliver(request())
        .await
        .unwrap();
    assert_eq!(reply.status, Some(AdminStatus::Approved));
    assert_eq!(reply.documents[0].meta.name, "certificato-residenza.pdf");
    assert_eq!(reply.documents[0].content, fixture("certificato.pdf"));
}

#[tokio::test]
async fn billion_laughs_deep_nesting_and_oversized_replies_are_refused() {
    let (url, _) = server(ok("billion_laughs.xml")).await;
    let err = build(config(&url, serde_json::json!({})))
        .deliver(request())
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.reason.contains("DOCTYPE"), "{}", err.reason);

    let deep = format!(
        r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>{}{}</s:Body></s:Envelope>"#,
        "<a>".repeat(500),
        "</a>".repeat(500)
    );
    let (url, _) = server(Arc::new(move |_, _| {
        xml(StatusCode::OK, "text/xml", deep.clone().into_bytes())
    }))
    .await;
    let err = build(config(&url, serde_json::json!({})))
        .deliver(request())
        .await
        .unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.reason.contains("limits.max_depth"), "{}", err.reason);

    // 256 MiB streamed without a length: refused after 1 MiB is read.
    let (url, _) = server(Arc::new(|_, _| {
        let chunk = bytes_chunk();
        let stream =
            futures::stream::iter(std::iter::repeat_n(chunk, 4096).map(Ok::<_, std::io::Error>));
        (
            StatusCode::OK,
            [("content-type", "text/xml")],
            Body::from_stream(stream),
        )
            .into_response()
    }))
    .await;
    let err = build(config(
        &url,
        serde_json::json!({"max_response_bytes": 1048576}),
    ))
    .deliver(request())
    .await
    .unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.reason.contains("max_response_bytes"), "{}", err.reason);

    // The parser's own limit, below the transport's.
    let (url, _) = server(ok("certificato_11.xml")).await;
    let err = build(config(
        &url,
        serde_json::json!({"limits": {"max_text_bytes": 64}}),
    ))
    .deliver(request())
    .await
    .unwrap_err();
    assert!(
        err.reason.contains("limits.max_text_bytes"),
        "{}",
        err.reason
    );
}

fn bytes_chunk() -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b' '; 64 * 1024])
}

#[tokio::test]
async fn pull_pattern_request_status_result() {
    let handler: Handler = Arc::new(|headers, body| {
        let action = headers
            .get("soapaction")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let file = match action.as_str() {
            "\"urn:anagrafe:certificati:v1:richiestaCertificato\"" => "pull_ack.xml",
            "\"urn:anagrafe:certificati:v1:statoRichiesta\"" => {
                assert!(
                    body.contains("7c1e4b1a-2f43-4a36-9d3e-0b6f3f5a1c21"),
                    "{body}"
                );
                if body.contains("<c:tentativo>0</c:tentativo>") {
                    "pull_status_in_lavorazione.xml"
                } else {
                    "pull_status_completata.xml"
                }
            }
            "\"urn:anagrafe:certificati:v1:esitoRichiesta\"" => "certificato_11.xml",
            _ => "fault_11_client.xml",
        };
        xml(StatusCode::OK, "text/xml", fixture(file))
    });
    let (url, seen) = server(handler).await;
    let adapter = build(config(
        &url,
        serde_json::json!({
            "pattern": "NONBLOCK_PULL_SOAP",
            "response": {"reference_path": "c:richiestaCertificatoAck/c:idPratica"},
            "pull": {
                "correlation_path": "c:richiestaCertificatoAck/c:correlationId",
                "status": {"action": "urn:anagrafe:certificati:v1:statoRichiesta",
                           "template_inline": "<c:statoRichiesta xmlns:c=\"urn:anagrafe:certificati:v1\"><c:correlationId>{{ correlation_id }}</c:correlationId><c:tentativo>{{ polls }}</c:tentativo></c:statoRichiesta>"},
                "state_path": "c:statoRichiestaResponse/c:stato",
                "done_states": ["COMPLETATA"],
                "failed_states": ["ANNULLATA"],
                "result": {"action": "urn:anagrafe:certificati:v1:esitoRichiesta",
                           "template_inline": "<c:esitoRichiesta xmlns:c=\"urn:anagrafe:certificati:v1\"><c:correlationId>{{ correlation_id }}</c:correlationId></c:esitoRichiesta>"},
                "initial_interval": "10ms",
                "max_interval": "50ms"
            }
        }),
    ));
    let ack = adapter.deliver(request()).await.unwrap();
    assert_eq!(ack.status, None, "an acknowledgement states no outcome");
    let follow = ack.follow_up.clone().unwrap();
    assert_eq!(follow.token, "7c1e4b1a-2f43-4a36-9d3e-0b6f3f5a1c21");
    assert!(ack.external_refs.iter().any(|r| r.kind == "correlation_id"));
    assert!(
        ack.external_refs
            .iter()
            .any(|r| r.value == "ANA-2026-000420")
    );
    let poll = |polls| PollRequest {
        operation_id: "op-7".into(),
        operation: Operation::Submit,
        token: follow.token.clone(),
        polls,
    };
    match adapter.poll(poll(0)).await.unwrap() {
        PollOutcome::Pending { poll_after, .. } => {
            assert!(poll_after >= std::time::Duration::from_millis(10))
        }
        other => panic!("expected pending, got {other:?}"),
    }
    match adapter.poll(poll(1)).await.unwrap() {
        PollOutcome::Done(reply) => {
            assert_eq!(reply.status, Some(AdminStatus::Approved));
            assert_eq!(reply.documents[0].content, fixture("certificato.pdf"));
        }
        other => panic!("expected done, got {other:?}"),
    }
    assert_eq!(seen.lock().unwrap().len(), 4);
}

/// A result sink that dedupes by receipt, like the hub's.
#[derive(Default)]
struct Sink {
    applied: Mutex<Vec<InboundResult>>,
}

#[async_trait]
impl ResultSink for Sink {
    async fn apply(&self, result: InboundResult) -> Result<InboundOutcome, InboundError> {
        let mut applied = self.applied.lock().unwrap();
        match &result.correlation {
            Correlation::ExternalRef { value, .. }
                if value == "b8f9d0a2-61c4-4f3e-8d0e-5a4b3c2d1e0f" => {}
            other => return Err(InboundError::Uncorrelated(format!("{other:?}"))),
        }
        if applied.iter().any(|r| r.receipt == result.receipt) {
            return Ok(InboundOutcome::Duplicate);
        }
        applied.push(result);
        Ok(InboundOutcome::Applied)
    }
}

fn vendor_token(user: &str, password: &str) -> String {
    let nonce = b"vendor-nonce-123";
    let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let digest = raccordo_adapters::soap::security::password_digest(nonce, &created, password);
    let b64 = base64::engine::general_purpose::STANDARD.encode(nonce);
    format!(
        r#"<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"><wsse:UsernameToken><wsse:Username>{user}</wsse:Username><wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">{digest}</wsse:Password><wsse:Nonce>{b64}</wsse:Nonce><wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"#
    )
}

#[tokio::test]
async fn push_pattern_reply_to_header_wsdl_and_callback_applied_once() {
    #[allow(unsafe_code)] // setting a variable is unsafe since edition 2024
    // SAFETY: unique variable name, read only by this test.
    unsafe {
        std::env::set_var("RACCORDO_TEST_SOAP_CB_PW", "callback-s3cret&<>")
    };
    let (url, seen) = server(ok("push_ack.xml")).await;
    let hub = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hub_url = format!("http://{}", hub.local_addr().unwrap());
    let adapter = build(config(
        &url,
        serde_json::json!({
            "pattern": "NONBLOCK_PUSH_SOAP",
            "response": {
                "status_path": "cb:result/c:rispostaCertificato/c:esito",
                "protocol_path": "cb:result/c:rispostaCertificato/c:protocollo/c:numero",
                "date_path": "cb:result/c:rispostaCertificato/c:protocollo/c:data",
                "reason_path": null, "reference_path": null,
                "documents": [{"path": "cb:result/c:rispostaCertificato/c:certificato", "name_attribute": "nomeFile"}]
            },
            "push": {"public_base_url": hub_url, "username": "fornitore", "password_env": "RACCORDO_TEST_SOAP_CB_PW"}
        }),
    ));
    let ack = adapter.deliver(request()).await.unwrap();
    assert_eq!(ack.status, None);
    assert_eq!(ack.external_refs[0].kind, "correlation_id");
    assert_eq!(
        ack.external_refs[0].value,
        "b8f9d0a2-61c4-4f3e-8d0e-5a4b3c2d1e0f"
    );
    let sent = seen.lock().unwrap()[0].body.clone();
    let reply_to = format!("{hub_url}/callbacks/anagrafe");
    assert!(
        sent.contains(&format!(">{reply_to}</modi:X-ReplyTo>")),
        "{sent}"
    );

    let sink = Arc::new(Sink::default());
    let routes = adapter.http_routes(sink.clone()).unwrap();
    let app = axum::Router::new().nest("/callbacks/anagrafe", routes);
    tokio::spawn(async move { axum::serve(hub, app).await.unwrap() });
    let client = reqwest::Client::new();

    // The WSDL names the service where the vendor must call.
    let wsdl = client.get(format!("{reply_to}?wsdl")).send().await.unwrap();
    assert_eq!(wsdl.status(), 200);
    let parsed = raccordo_adapters::soap::wsdl::parse(&wsdl.text().await.unwrap()).unwrap();
    assert_eq!(parsed.services[0].ports[0].address, reply_to);

    let template = String::from_utf8(fixture("push_callback.xml")).unwrap();
    let envelope = |security: &str, correlation: &str| {
        template
            .replace("{{SECURITY}}", security)
            .replace("{{CORRELATION}}", correlation)
    };
    let post = |body: String| {
        client
            .post(&reply_to)
            .header("content-type", "text/xml; charset=utf-8")
            .header("soapaction", "\"urn:raccordo:callback:v1/result\"")
            .body(body)
            .send()
    };
    let good = envelope(
        &vendor_token("fornitore", "callback-s3cret&<>"),
        "b8f9d0a2-61c4-4f3e-8d0e-5a4b3c2d1e0f",
    );
    let first = post(good.clone()).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.text().await.unwrap().contains(">applied<"));
    let again = post(good).await.unwrap();
    assert_eq!(again.status(), 200);
    assert!(again.text().await.unwrap().contains(">duplicate<"));
    {
        let applied = sink.applied.lock().unwrap();
        assert_eq!(applied.len(), 1, "a re-sent callback is applied once");
        let r = &applied[0].reply;
        assert_eq!(r.status, Some(AdminStatus::Approved));
        assert_eq!(r.external_refs[0].value, "2026/0012399");
        assert_eq!(r.documents[0].content, fixture("certificato.pdf"));
    }

    // Bad input gets SOAP faults, and nothing is applied.
    let bad_password = post(envelope(
        &vendor_token("fornitore", "wrong-password"),
        "b8f9d0a2-61c4-4f3e-8d0e-5a4b3c2d1e0f",
    ))
    .await
    .unwrap();
    assert_eq!(bad_password.status(), 500);
    let text = bad_password.text().await.unwrap();
    assert!(
        text.contains("soap:Client") && text.contains("authentication failed"),
        "{text}"
    );
    let unknown = post(envelope(
        &vendor_token("fornitore", "callback-s3cret&<>"),
        "nessuna",
    ))
    .await
    .unwrap();
    assert!(unknown.text().await.unwrap().contains("no practice awaits"));
    let bomb = post(String::from_utf8(fixture("billion_laughs.xml")).unwrap())
        .await
        .unwrap();
    assert_eq!(bomb.status(), 500);
    assert!(bomb.text().await.unwrap().contains("DOCTYPE"));
    assert_eq!(sink.applied.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn config_errors_name_the_key() {
    let mut cfg = config("http://127.0.0.1:9/ws", serde_json::json!({}));
    cfg.response.status_path = Some("x:risposta/x:esito".into());
    let err = SoapAdapter::build("a", cfg, Path::new(".")).unwrap_err();
    assert_eq!(err.key, "response.status_path");
    assert!(err.reason.contains("'x'"), "{}", err.reason);

    let cfg = config(
        "http://127.0.0.1:9/ws",
        serde_json::json!({"security": [{"type": "username_token", "username": "u", "password_env": "RACCORDO_TEST_UNSET_SOAP"}]}),
    );
    let err = SoapAdapter::build("a", cfg, Path::new(".")).unwrap_err();
    assert_eq!(err.key, "security[0].password_env");

    let cfg = config(
        "http://127.0.0.1:9/ws",
        serde_json::json!({"pattern": "NONBLOCK_PULL_SOAP"}),
    );
    let err = SoapAdapter::build("a", cfg, Path::new(".")).unwrap_err();
    assert_eq!(err.key, "pull");

    let cfg = config(
        "http://127.0.0.1:9/ws",
        serde_json::json!({"submit": {"template_inline": "<a>{{ broken </a>"}}),
    );
    let err = SoapAdapter::build("a", cfg, Path::new(".")).unwrap_err();
    assert_eq!(err.key, "submit.template");
}

#[tokio::test]
async fn the_normalized_message_can_be_the_body() {
    let (url, seen) = server(ok("certificato_11.xml")).await;
    let adapter = build(config(
        &url,
        serde_json::json!({"submit": {"body": "normalized", "template_inline": null}}),
    ));
    adapter.deliver(request()).await.unwrap();
    let body = seen.lock().unwrap()[0].body.clone();
    assert!(
        body.contains("<soap:Body><practice xmlns=\"urn:raccordo:practice:v1\">"),
        "{body}"
    );
    assert!(!body[5..].contains("<?xml"), "one declaration only");
}

#[tokio::test]
async fn outcome_data_is_read_by_path_as_text() {
    let (url, _) = server(ok("certificato_11.xml")).await;
    let adapter = build(config(
        &url,
        serde_json::json!({"response": {"outcome_data": {
            "intestatario": "c:rispostaCertificato/c:intestatario",
            "data_protocollo": "c:rispostaCertificato/c:protocollo/c:data",
            "assente": "c:rispostaCertificato/c:nulla"
        }}}),
    ));
    let reply = adapter.deliver(request()).await.unwrap();
    assert_eq!(
        serde_json::Value::Object(reply.outcome_data),
        serde_json::json!({"intestatario": "Niccolò Mazzà", "data_protocollo": "2026-11-23"})
    );
    // A path that does not compile is named with its field.
    let cfg = config(
        &url,
        serde_json::json!({"response": {"outcome_data": {"x": "z:undeclared/z:prefix"}}}),
    );
    let err = SoapAdapter::build("a", cfg, Path::new(".")).unwrap_err();
    assert_eq!(err.key, "response.outcome_data.x");
}
