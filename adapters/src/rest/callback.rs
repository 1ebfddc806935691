//! The hub's callback endpoint for `NONBLOCK_PUSH_REST`:
//! `POST /callbacks/{instance}/result`.
//!
//! The vendor signs each callback: `X-Timestamp` (Unix seconds) and
//! `X-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
//! A stale timestamp, a bad signature, an unknown `X-Correlation-ID` or a
//! body the mapping cannot read gets a problem+json error and changes
//! nothing. A valid result is mapped with the instance's response mapping
//! and applied through the [`ResultSink`]; the vendor gets 200 only after
//! it is stored, 202 when it is stored to be applied once the hub has
//! recorded the end of the request it answers (the vendor called back
//! before its own 202 arrived), and 409 when it was recorded as an anomaly
//! on its practice instead (late, or contradicting an earlier result). A
//! repeated callback (same `Idempotency-Key`, or the same correlation id
//! and body) is answered as the first was, without being applied again.

use super::Protocol;
use super::config::CallbackConfig;
use crate::adapter::{AdapterError, InboundError, InboundOutcome, ResultSink};
use crate::http::auth::read_secret;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use crate::http::callback::CORRELATION_KIND;
use crate::http::callback::apply_correlated;

/// The callback side of one instance, ready to serve.
#[derive(Clone)]
pub struct CallbackSettings {
    /// The `X-ReplyTo` value.
    pub reply_to: String,
    secret: Arc<Vec<u8>>,
    max_skew: Duration,
    max_body_bytes: usize,
}

impl CallbackSettings {
    /// Reads the secret and computes the public callback URL.
    pub fn build(
        instance: &str,
        config: &CallbackConfig,
        config_dir: &Path,
    ) -> Result<Self, AdapterError> {
        let base = reqwest::Url::parse(&config.public_base_url).map_err(|e| {
            AdapterError::new(
                "callback.public_base_url",
                format!("'{}' is not a URL: {e}", config.public_base_url),
            )
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(AdapterError::new(
                "callback.public_base_url",
                "must be an http:// or https:// URL",
            ));
        }
        let secret = read_secret(
            "callback",
            "secret",
            &config.secret_env,
            &config.secret_file,
            config_dir,
        )?;
        if secret.len() < 16 {
            return Err(AdapterError::new(
                "callback.secret_env",
                "the secret is shorter than 16 bytes",
            ));
        }
        Ok(Self {
            reply_to: format!(
                "{}/callbacks/{instance}/result",
                config.public_base_url.trim_end_matches('/')
            ),
            secret: Arc::new(secret.into_bytes()),
            max_skew: config.max_skew,
            max_body_bytes: config.max_body_bytes,
        })
    }
}

struct Ctx {
    inner: Arc<Protocol>,
    settings: CallbackSettings,
    sink: Arc<dyn ResultSink>,
}

/// The routes, to be mounted under `/callbacks/{instance}`.
pub(super) fn router(inner: Arc<Protocol>, sink: Arc<dyn ResultSink>) -> axum::Router {
    let settings = inner
        .callback
        .clone()
        .expect("router is only built with callback settings");
    let limit = settings.max_body_bytes;
    axum::Router::new()
        .route("/result", axum::routing::post(receive))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(Arc::new(Ctx {
            inner,
            settings,
            sink,
        }))
}

/// An RFC 7807 answer.
fn problem(status: StatusCode, title: &str, detail: impl Into<String>) -> Response {
    problem_with(status, title, detail, None)
}

/// An RFC 7807 answer with one extension member.
fn problem_with(
    status: StatusCode,
    title: &str,
    detail: impl Into<String>,
    extension: Option<(&str, &str)>,
) -> Response {
    let mut body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    if let Some((key, value)) = extension {
        body[key] = serde_json::Value::from(value);
    }
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/problem+json"),
    );
    resp
}

/// Checks timestamp freshness and the HMAC. The error text is what the
/// vendor is told; it never echoes the expected signature.
pub fn verify_signature(
    secret: &[u8],
    max_skew: Duration,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<(), String> {
    let timestamp = timestamp.ok_or("X-Timestamp is missing")?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| "X-Timestamp is not Unix seconds")?;
    if now_unix.abs_diff(ts) > max_skew.as_secs() {
        return Err(format!(
            "X-Timestamp is more than {}s away from the hub's clock",
            max_skew.as_secs()
        ));
    }
    let signature = signature.ok_or("X-Signature is missing")?.trim();
    let hex = signature.strip_prefix("sha256=").unwrap_or(signature);
    let given = decode_hex(hex).ok_or("X-Signature is not sha256=<hex>")?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|_| "bad key")?;
    mac.update(timestamp.trim().as_bytes());
    mac.update(b".");
    mac.update(body);
    // Constant-time comparison.
    mac.verify_slice(&given)
        .map_err(|_| "X-Signature does not match".to_string())
}

/// `sha256=<hex>` for a body, as a vendor would compute it (tests, tools).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", crate::model::lower_hex(&bytes))
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn receive(State(ctx): State<Arc<Ctx>>, headers: HeaderMap, body: Bytes) -> Response {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let name = &ctx.inner.name;
    if let Err(reason) = verify_signature(
        &ctx.settings.secret,
        ctx.settings.max_skew,
        text("x-timestamp"),
        text("x-signature"),
        &body,
        chrono::Utc::now().timestamp(),
    ) {
        tracing::warn!(adapter = %name, "callback refused: {reason}");
        return problem(StatusCode::UNAUTHORIZED, "Invalid signature", reason);
    }
    let Some(correlation) = text("x-correlation-id")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Missing correlation",
            "X-Correlation-ID is required",
        );
    };
    let mapped = match super::response::map_success(&ctx.inner.config.response, &body, name) {
        Ok(m) => m,
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Unreadable result",
                e.reason,
            );
        }
    };
    let base = ctx.inner.base.clone();
    let reply = match ctx.inner.complete(mapped, &base).await {
        Ok(r) => r,
        Err(e) => {
            // We could not fetch a linked document: the vendor should retry.
            return problem(
                StatusCode::BAD_GATEWAY,
                "Outcome document unavailable",
                e.reason,
            );
        }
    };
    let outcome = apply_correlated(
        ctx.sink.as_ref(),
        name,
        &correlation,
        reply,
        text("idempotency-key"),
        &body,
    )
    .await;
    match outcome {
        Ok(o) => {
            let state = o.as_str();
            tracing::info!(adapter = %name, correlation = %correlation, state, "callback result stored");
            // Pending: stored, applied once the hub has recorded the end of
            // the request it answers (202: accepted, nothing to re-send).
            let status = match o {
                InboundOutcome::Pending => StatusCode::ACCEPTED,
                InboundOutcome::Applied | InboundOutcome::Duplicate => StatusCode::OK,
            };
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({ "result": state }).to_string(),
            )
                .into_response()
        }
        Err(InboundError::Uncorrelated(_)) => problem(
            StatusCode::NOT_FOUND,
            "Unknown correlation",
            format!("no practice awaits X-Correlation-ID {correlation}"),
        ),
        Err(InboundError::Refused(reason)) => {
            problem(StatusCode::CONFLICT, "Result refused", reason)
        }
        // Recorded on the practice as an ANOMALY event, not applied.
        Err(InboundError::Anomaly(a)) => problem_with(
            StatusCode::CONFLICT,
            "Result not applied",
            a.reason,
            Some(("anomaly", a.class.as_str())),
        ),
        Err(InboundError::Unavailable(reason)) => {
            tracing::warn!(adapter = %name, "callback not stored: {reason}");
            let mut resp = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "the hub cannot store the result now; retry later",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_reject() {
        let secret = b"0123456789abcdef";
        let sig = sign(secret, "1000", b"{}");
        let ok = |ts: &str, sig: &str, body: &[u8], now| {
            verify_signature(
                secret,
                Duration::from_secs(60),
                Some(ts),
                Some(sig),
                body,
                now,
            )
        };
        assert!(ok("1000", &sig, b"{}", 1030).is_ok());
        assert!(
            ok("1000", &sig, b"{ }", 1030)
                .unwrap_err()
                .contains("does not match")
        );
        assert!(ok("1000", &sig, b"{}", 2000).unwrap_err().contains("clock"));
        assert!(ok("1001", &sig, b"{}", 1030).is_err());
        assert!(ok("1000", "sha256=zz", b"{}", 1030).is_err());
    }
}
