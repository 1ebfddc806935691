//! The shared HTTP transport through the REST adapter, against a real HTTP
//! server on loopback: OAuth2 token renewal after a 401, vendor-requested
//! pauses from `X-RateLimit-*`, vendor error codes mapped to failure classes.

mod common;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::request;
use raccordo_adapters::rest::RestAdapter;
use raccordo_adapters::rest::config::RestConfig;
use raccordo_adapters::{Adapter, FailureClass};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Answer = (u16, Vec<(&'static str, &'static str)>, &'static str);

#[derive(Clone, Default)]
struct Vendor {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<(Instant, String, HeaderMap)>>>,
    tokens: Arc<Mutex<u32>>,
}

async fn start(vendor: Vendor) -> String {
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
        let v = vendor.clone();
        async move {
            v.seen
                .lock()
                .unwrap()
                .push((Instant::now(), uri.path().to_string(), headers));
            if uri.path() == "/token" {
                let n = {
                    let mut t = v.tokens.lock().unwrap();
                    *t += 1;
                    *t
                };
                let body = format!(r#"{{"access_token":"tok-{n}","expires_in":3600}}"#);
                return (StatusCode::OK, body).into_response();
            }
            let (status, headers, body) =
                v.answers
                    .lock()
                    .unwrap()
                    .pop_front()
                    .unwrap_or((200, vec![], r#"{"esito":"OK"}"#));
            let mut resp = (StatusCode::from_u16(status).unwrap(), body).into_response();
            for (k, val) in headers {
                resp.headers_mut().insert(k, val.parse().unwrap());
            }
            resp
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn adapter(url: &str, extra: &str) -> RestAdapter {
    let text = format!(
        r#"{{"base_url": "{url}", "timeout": "2s", "submit": {{"path": "/p"}}, {extra}
            "response": {{"status_pointer": "/esito", "status_map": {{"OK": "APPROVED"}},
                          "error_map": {{"CF_NON_RESIDENTE": "rejection"}}}}}}"#
    );
    let config: RestConfig = serde_json::from_str(&text).unwrap();
    RestAdapter::build("vendor", config, std::path::Path::new(".")).unwrap()
}

#[tokio::test]
async fn a_401_drops_the_oauth2_token_and_is_retried_with_a_new_one() {
    let vendor = Vendor::default();
    vendor
        .answers
        .lock()
        .unwrap()
        .push_back((401, vec![], r#"{"title":"token revocato"}"#));
    let url = start(vendor.clone()).await;
    let secret = std::env::temp_dir().join(format!("raccordo-oauth-{}", std::process::id()));
    std::fs::write(&secret, "client-secret").unwrap();
    let a = adapter(
        &url,
        &format!(
            r#""auth": {{"type": "oauth2_client_credentials", "token_url": "{url}/token",
                "client_id": "hub", "client_secret_file": "{}"}},"#,
            secret.display()
        ),
    );
    let err = a.deliver(request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Transient, "{}", err.reason);
    assert!(err.reason.contains("token revocato"), "{}", err.reason);
    assert!(!err.reason.contains("client-secret"));
    a.deliver(request()).await.unwrap();
    assert_eq!(a.tokens_fetched(), 2);
    let seen = vendor.seen.lock().unwrap();
    let last = &seen.last().unwrap().2;
    assert_eq!(last["authorization"], "Bearer tok-2");
    std::fs::remove_file(secret).ok();
}

#[tokio::test]
async fn an_exhausted_rate_limit_pauses_the_next_request_until_the_reset() {
    let vendor = Vendor::default();
    vendor.answers.lock().unwrap().push_back((
        200,
        vec![("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")],
        r#"{"esito":"OK"}"#,
    ));
    let url = start(vendor.clone()).await;
    let a = adapter(&url, "");
    a.deliver(request()).await.unwrap();
    a.deliver(request()).await.unwrap();
    let seen = vendor.seen.lock().unwrap();
    assert!(seen[1].0 - seen[0].0 >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_pause_longer_than_allowed_is_handed_back_unsent() {
    let vendor = Vendor::default();
    vendor
        .answers
        .lock()
        .unwrap()
        .push_back((429, vec![("retry-after", "120")], ""));
    let url = start(vendor.clone()).await;
    let a = adapter(&url, r#""max_pace_wait": "1s","#);
    let err = a.deliver(request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Transient);
    assert_eq!(err.retry_after, Some(Duration::from_secs(120)));
    let err = a.deliver(request()).await.unwrap_err();
    assert!(err.reason.contains("not sent"), "{}", err.reason);
    assert!(err.retry_after.unwrap() > Duration::from_secs(100));
    assert_eq!(vendor.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_vendor_error_code_can_be_a_rejection() {
    let vendor = Vendor::default();
    vendor.answers.lock().unwrap().push_back((
        422,
        vec![("content-type", "application/problem+json")],
        r#"{"title":"Richiedente non residente","code":"CF_NON_RESIDENTE"}"#,
    ));
    let url = start(vendor).await;
    let err = adapter(&url, "").deliver(request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Rejection);
    assert_eq!(err.vendor_code.as_deref(), Some("CF_NON_RESIDENTE"));
}
