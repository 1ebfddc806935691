//! What the HTTP-based adapters (REST, SOAP) share: the transport — the
//! client (timeouts, TLS and client certificates), authentication, a
//! per-instance circuit breaker and rate limit, the vendor's pacing
//! headers, bounded reply bodies and failure classification — and the
//! adapter skeleton ([`adapter::HttpAdapter`]) both protocols plug into.
//! Protocol code builds requests and maps replies; everything between is
//! here, the same for every protocol.

pub mod adapter;
pub mod auth;
pub mod breaker;
pub mod callback;
pub mod config;
pub mod limit;
pub mod reply;

use crate::adapter::{AdapterError, AdapterHealth, DeliveryError, FailureClass};
use auth::Authenticator;
use breaker::{Breaker, Outcome};
use config::{AuthConfig, BreakerConfig, RateLimitConfig, TlsConfig};
use limit::Limiter;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Everything a [`Transport`] is built from.
#[derive(Debug, Clone)]
pub struct TransportSettings<'a> {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Static, non-secret headers on every request.
    pub headers: &'a BTreeMap<String, String>,
    pub auth: &'a AuthConfig,
    pub tls: &'a TlsConfig,
    pub breaker: &'a BreakerConfig,
    pub rate_limit: Option<&'a RateLimitConfig>,
    /// Longest a request waits for the rate limit or a vendor-requested
    /// pause before the delivery is handed back to the hub's schedule.
    pub max_pace_wait: Duration,
    pub max_response_bytes: u64,
}

/// A vendor's answer, body read (within the limit).
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: reqwest::StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The pause the vendor asked for (`Retry-After`, `X-RateLimit-*`).
    pub retry_after: Option<Duration>,
    /// The vendor refused a cached token (401) and it was dropped: the
    /// next request fetches a new one, so the failure is worth retrying.
    pub credentials_renewed: bool,
}

impl HttpReply {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The failure a non-2xx answer means (problem+json parsed).
    pub fn failure(&self) -> DeliveryError {
        let mut err = reply::classify_failure(self.status.as_u16(), self.retry_after, &self.body);
        if self.credentials_renewed {
            err.class = FailureClass::Transient;
            err.reason = format!("{}; a new access token is fetched", err.reason);
        }
        err
    }
}

/// The HTTP side of one adapter instance.
#[derive(Debug, Clone)]
pub struct Transport {
    client: reqwest::Client,
    auth: Authenticator,
    breaker: Breaker,
    limiter: Limiter,
    timeout: Duration,
    max_response_bytes: u64,
}

impl Transport {
    /// Builds the client and reads the secrets. Errors name the key
    /// relative to the adapter instance and never contain a secret.
    pub fn build(s: &TransportSettings<'_>, config_dir: &Path) -> Result<Self, AdapterError> {
        let mut headers = HeaderMap::new();
        for (k, v) in s.headers {
            let key = HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                AdapterError::new(format!("headers.{k}"), format!("not a header name: {e}"))
            })?;
            let value = HeaderValue::from_str(v).map_err(|e| {
                AdapterError::new(format!("headers.{k}"), format!("not a header value: {e}"))
            })?;
            headers.insert(key, value);
        }
        if s.max_response_bytes == 0 {
            return Err(AdapterError::new(
                "max_response_bytes",
                "must be at least 1",
            ));
        }
        if let Some(r) = s.rate_limit
            && !(r.per_second.is_finite() && r.per_second > 0.0)
        {
            return Err(AdapterError::new(
                "rate_limit.per_second",
                "must be a positive number",
            ));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(s.timeout)
            .connect_timeout(s.connect_timeout)
            .default_headers(headers)
            .user_agent(concat!("raccordo/", env!("CARGO_PKG_VERSION")))
            // A vendor's redirect is an answer to map (303 in NONBLOCK_PULL),
            // never a hop to follow blindly with our credentials.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &s.tls.ca_file {
            let pem = std::fs::read(config_dir.join(ca)).map_err(|e| {
                AdapterError::new("tls.ca_file", format!("cannot read {ca}: {}", e.kind()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                AdapterError::new("tls.ca_file", format!("{ca} is not a PEM certificate: {e}"))
            })?;
            if certs.is_empty() {
                return Err(AdapterError::new(
                    "tls.ca_file",
                    format!("{ca} holds no certificate"),
                ));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        match (&s.tls.client_cert_file, &s.tls.client_key_file) {
            (Some(cert), Some(key)) => {
                let read = |field: &str, path: &str| {
                    std::fs::read(config_dir.join(path)).map_err(|e| {
                        AdapterError::new(
                            format!("tls.{field}"),
                            format!("cannot read {path}: {}", e.kind()),
                        )
                    })
                };
                let mut pem = read("client_cert_file", cert)?;
                pem.push(b'\n');
                pem.extend(read("client_key_file", key)?);
                // The error text of a bad key could echo key material: keep it out.
                let identity = reqwest::Identity::from_pem(&pem).map_err(|_| {
                    AdapterError::new(
                        "tls.client_key_file",
                        format!("{cert} and {key} are not a PEM certificate chain and private key"),
                    )
                })?;
                builder = builder.identity(identity);
            }
            (Some(_), None) => {
                return Err(AdapterError::new(
                    "tls.client_key_file",
                    "is required with client_cert_file",
                ));
            }
            (None, Some(_)) => {
                return Err(AdapterError::new(
                    "tls.client_cert_file",
                    "is required with client_key_file",
                ));
            }
            (None, None) => {}
        }
        let client = builder
            .build()
            .map_err(|e| AdapterError::new("tls", format!("cannot build the HTTP client: {e}")))?;
        let auth = Authenticator::build(s.auth, &client, config_dir)?;
        Ok(Self {
            auth,
            breaker: Breaker::new(s.breaker.clone()),
            limiter: Limiter::new(s.rate_limit.cloned(), s.max_pace_wait),
            client,
            timeout: s.timeout,
            max_response_bytes: s.max_response_bytes,
        })
    }

    /// The underlying client, for building requests.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Paces at `1 / instances` of the configured rate limit: the vendor's
    /// limit holds for all the hub instances that send to it.
    pub fn share(&self, instances: u32) {
        self.limiter.share(instances);
    }

    /// The credentials in use (for token metrics).
    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }

    /// Up, Degraded (breaker half-open) or Down (breaker open).
    pub fn health(&self) -> AdapterHealth {
        self.breaker.health()
    }

    /// Sends one request through the breaker, the pacing and the
    /// credentials, and reads the answer. `Ok` for any HTTP answer (the
    /// caller maps statuses); `Err` when no usable answer came:
    /// transient if nothing was sent, `OUTCOME_UNKNOWN` if it may have been.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<HttpReply, DeliveryError> {
        let admission = self.breaker.admit().map_err(|wait| DeliveryError {
            retry_after: Some(wait.max(Duration::from_millis(100))),
            ..DeliveryError::transient("circuit breaker open: not sent")
        })?;
        self.limiter.acquire().await.map_err(|wait| DeliveryError {
            retry_after: Some(wait),
            ..DeliveryError::transient(format!(
                "the vendor asked to slow down for {}s more: not sent",
                wait.as_secs()
            ))
        })?;
        let mut request = request;
        let credential = self.auth.header().await?;
        if let Some((name, value)) = &credential {
            request = request.header(name.clone(), value.clone());
        }
        let resp = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                admission.record(Outcome::Faulty);
                // The URL may carry personal data (a fiscal code in the path
                // or query): it stays out of errors, events and logs.
                let e = e.without_url();
                return Err(if e.is_connect() {
                    DeliveryError::transient(format!(
                        "cannot connect to vendor: {}",
                        error_chain(&e)
                    ))
                } else if e.is_timeout() {
                    DeliveryError::new(
                        FailureClass::OutcomeUnknown,
                        format!("no answer within {:?}", self.timeout),
                    )
                } else {
                    DeliveryError::new(
                        FailureClass::OutcomeUnknown,
                        format!("request failed: {}", error_chain(&e)),
                    )
                });
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let retry_after = reply::requested_pause(&headers, SystemTime::now());
        if let Some(pause) = retry_after
            && (status.as_u16() == 429 || status.as_u16() == 503 || status.is_success())
        {
            self.limiter.pause(pause);
        }
        let body = match self.read_body(resp).await {
            Ok(b) => b,
            Err(e) => {
                admission.record(Outcome::Faulty);
                return Err(e);
            }
        };
        admission.record(if status.is_server_error() {
            Outcome::Faulty
        } else {
            Outcome::Healthy
        });
        let mut credentials_renewed = false;
        if status.as_u16() == 401
            && let Some((_, used)) = &credential
        {
            credentials_renewed = self.auth.rejected(used).await;
        }
        Ok(HttpReply {
            status,
            headers,
            body,
            retry_after,
            credentials_renewed,
        })
    }

    async fn read_body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, DeliveryError> {
        let limit = self.max_response_bytes;
        if let Some(len) = resp.content_length().filter(|len| *len > limit) {
            return Err(DeliveryError::permanent(format!(
                "vendor reply of {len} bytes exceeds max_response_bytes ({limit})"
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            // The request reached the vendor: we cannot know whether it acted.
            DeliveryError::new(
                FailureClass::OutcomeUnknown,
                format!("reading vendor reply: {}", e.without_url()),
            )
        })? {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(DeliveryError::permanent(format!(
                    "vendor reply exceeds max_response_bytes ({limit})"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
