//! The REST adapter against a real HTTP server on loopback.

mod common;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::request;
use raccordo_adapters::model::*;
use raccordo_adapters::rest::RestAdapter;
use raccordo_adapters::rest::config::RestConfig;
use raccordo_adapters::{Adapter, FailureClass};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn config(base_url: &str, extra: &str) -> RestConfig {
    let text = format!(
        r#"{{"base_url": "{base_url}", "timeout": "300ms", "connect_timeout": "300ms",
            "submit": {{"path": "/p/{{{{ practice_id }}}}"}}, {extra}
            "response": {{"status_pointer": "/esito", "status_map": {{"OK": "APPROVED"}}}}}}"#
    );
    serde_json::from_str(&text).unwrap()
}

type Seen = Arc<Mutex<Vec<HeaderMap>>>;

async fn server(status: StatusCode, body: &'static str, delay: Duration) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/p/{id}",
        post(move |headers: HeaderMap| {
            let s = Arc::clone(&s);
            async move {
                s.lock().unwrap().push(headers);
                tokio::time::sleep(delay).await;
                (status, [("content-type", "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn bearer_token_from_a_file_and_the_operation_id_are_sent() {
    let (url, seen) = server(StatusCode::OK, r#"{"esito":"OK"}"#, Duration::ZERO).await;
    let token = std::env::temp_dir().join(format!("raccordo-token-{}", std::process::id()));
    std::fs::write(&token, "s3cr3t\n").unwrap();
    let extra = format!(
        r#""auth": {{"type": "bearer", "token_file": "{}"}},"#,
        token.display()
    );
    let adapter = RestAdapter::build("v", config(&url, &extra), std::path::Path::new(".")).unwrap();
    let reply = adapter.deliver(request()).await.unwrap();
    assert_eq!(reply.status, Some(AdminStatus::Approved));
    let headers = seen.lock().unwrap()[0].clone();
    assert_eq!(headers["authorization"], "Bearer s3cr3t");
    assert_eq!(headers["idempotency-key"], "op-1");
    assert_eq!(headers["content-type"], "application/json");
    // The secret never shows in the adapter's debug output.
    assert!(!format!("{adapter:?}").contains("s3cr3t"));
    std::fs::remove_file(token).unwrap();
}

#[tokio::test]
async fn basic_auth_from_the_environment() {
    let (url, seen) = server(StatusCode::OK, r#"{"esito":"OK"}"#, Duration::ZERO).await;
    #[allow(unsafe_code)] // setting a variable is unsafe since edition 2024
    // SAFETY: this test owns the variable's unique name; no other thread reads it.
    unsafe {
        std::env::set_var("RACCORDO_TEST_BASIC_PW", "p&ss<w>")
    };
    let extra = r#""auth": {"type": "basic", "username": "hub", "password_env": "RACCORDO_TEST_BASIC_PW"},"#;
    let adapter = RestAdapter::build("v", config(&url, extra), std::path::Path::new(".")).unwrap();
    adapter.deliver(request()).await.unwrap();
    let headers = seen.lock().unwrap()[0].clone();
    // base64("hub:p&ss<w>")
    assert_eq!(headers["authorization"], "Basic aHViOnAmc3M8dz4=");
}

#[tokio::test]
async fn a_missing_secret_is_a_config_error_naming_the_key() {
    let extra = r#""auth": {"type": "bearer", "token_env": "RACCORDO_TEST_UNSET_TOKEN"},"#;
    let err = RestAdapter::build(
        "v",
        config("http://127.0.0.1:9", extra),
        std::path::Path::new("."),
    )
    .unwrap_err();
    assert_eq!(err.key, "auth.token_env");
    assert!(
        err.reason.contains("RACCORDO_TEST_UNSET_TOKEN"),
        "{}",
        err.reason
    );
}

#[tokio::test]
async fn a_slow_vendor_is_outcome_unknown_and_a_closed_port_is_transient() {
    let (url, _) = server(StatusCode::OK, r#"{"esito":"OK"}"#, Duration::from_secs(5)).await;
    let adapter = RestAdapter::build("v", config(&url, ""), std::path::Path::new(".")).unwrap();
    let err = adapter.deliver(request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::OutcomeUnknown, "{err}");

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let adapter = RestAdapter::build(
        "v",
        config(&format!("http://{closed}"), ""),
        std::path::Path::new("."),
    )
    .unwrap();
    let err = adapter.deliver(request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Transient, "{err}");
    assert!(err.reason.contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn replies_above_the_size_limit_are_refused_without_reading_them() {
    let (url, _) = server(
        StatusCode::OK,
        r#"{"esito":"OK","padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
        Duration::ZERO,
    )
    .await;
    let adapter = RestAdapter::build(
        "v",
        config(&url, r#""max_response_bytes": 16,"#),
        std::path::Path::new("."),
    )
    .unwrap();
    let err = adapter.deliver(request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Permanent);
    assert!(err.reason.contains("max_response_bytes"), "{err}");
}

#[tokio::test]
async fn retry_after_and_problem_details_are_read_from_a_429() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/p/{id}",
        post(|| async {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [
                    ("retry-after", "120"),
                    ("content-type", "application/problem+json"),
                ],
                r#"{"title":"Troppe richieste","status":429}"#,
            )
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let adapter = RestAdapter::build("v", config(&url, ""), std::path::Path::new(".")).unwrap();
    let err = adapter.deliver(request()).await.unwrap_err();
    assert_eq!(err.class, FailureClass::Transient);
    assert_eq!(err.retry_after, Some(Duration::from_secs(120)));
    assert_eq!(err.reason, "HTTP 429: Troppe richieste");
}
