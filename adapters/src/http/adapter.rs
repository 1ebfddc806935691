//! The skeleton of an HTTP-based adapter. REST and SOAP differ in how a
//! request is built and a reply read ([`HttpProtocol`]); what an adapter
//! does around that — health and rate sharing from the transport, the
//! dry-run render with secrets hidden, callback routes — is written once
//! here, in [`HttpAdapter`].

use super::Transport;
use super::config::AuthConfig;
use crate::adapter::{
    Adapter, AdapterError, AdapterHealth, DeliveryError, DeliveryRequest, PollOutcome, PollRequest,
    ResultSink, VendorReply,
};
use crate::model::Operation;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// One HTTP protocol's side of an instance: how it talks to the vendor.
#[async_trait]
pub trait HttpProtocol: Send + Sync + 'static {
    /// The adapter kind (`rest`, `soap`).
    const KIND: &'static str;

    /// The transport every request goes through.
    fn transport(&self) -> &Transport;

    /// Deliveries the instance runs at once (`max_concurrency`).
    fn max_concurrency(&self) -> usize;

    /// Static, non-secret headers of every request (`headers`), and the
    /// credentials (`auth`): shown in a render, the latter redacted.
    fn static_headers(&self) -> &BTreeMap<String, String>;
    fn auth(&self) -> &AuthConfig;

    /// Whether a vendor operation is configured for `operation`.
    fn supports(&self, operation: Operation) -> bool;

    /// The request for `request`, without credentials (the transport adds
    /// them when sending).
    fn request(&self, request: &DeliveryRequest) -> Result<reqwest::RequestBuilder, DeliveryError>;

    /// One delivery attempt.
    async fn deliver(&self, request: DeliveryRequest) -> Result<VendorReply, DeliveryError>;

    /// One poll of a deferred result.
    async fn poll(&self, request: PollRequest) -> Result<PollOutcome, DeliveryError>;

    /// A rendered body with the secrets it carries hidden (WS-Security
    /// passwords); most bodies carry none.
    fn redact_body(&self, body: &str) -> String {
        body.to_string()
    }

    /// The routes vendors call back on, when the pattern has them.
    fn callback_routes(this: &Arc<Self>, sink: Arc<dyn ResultSink>) -> Option<axum::Router>;
}

/// An adapter speaking an [`HttpProtocol`].
pub struct HttpAdapter<P> {
    protocol: Arc<P>,
}

impl<P: HttpProtocol> HttpAdapter<P> {
    /// Wraps a protocol built from its configuration.
    pub fn new(protocol: P) -> Self {
        Self {
            protocol: Arc::new(protocol),
        }
    }

    /// The protocol side, for what is particular to it.
    pub fn protocol(&self) -> &Arc<P> {
        &self.protocol
    }

    /// Deliveries this instance runs at once.
    pub fn max_concurrency(&self) -> usize {
        self.protocol.max_concurrency()
    }
}

#[async_trait]
impl<P: HttpProtocol> Adapter for HttpAdapter<P> {
    fn kind(&self) -> &'static str {
        P::KIND
    }

    fn supports(&self, operation: Operation) -> bool {
        self.protocol.supports(operation)
    }

    async fn deliver(&self, request: DeliveryRequest) -> Result<VendorReply, DeliveryError> {
        self.protocol.deliver(request).await
    }

    async fn poll(&self, request: PollRequest) -> Result<PollOutcome, DeliveryError> {
        self.protocol.poll(request).await
    }

    fn render(&self, request: &DeliveryRequest) -> Option<Result<String, DeliveryError>> {
        Some(render(&*self.protocol, request))
    }

    fn http_routes(&self, sink: Arc<dyn ResultSink>) -> Option<axum::Router> {
        P::callback_routes(&self.protocol, sink)
    }

    fn health(&self) -> AdapterHealth {
        self.protocol.transport().health()
    }

    fn share(&self, instances: u32) {
        self.protocol.transport().share(instances);
    }
}

/// The request as text: method and URL, headers (credentials and
/// sensitive values redacted), a blank line, the body.
fn render<P: HttpProtocol>(
    protocol: &P,
    request: &DeliveryRequest,
) -> Result<String, DeliveryError> {
    let built = protocol
        .request(request)?
        .build()
        .map_err(|e| DeliveryError::permanent(format!("cannot build the request: {e}")))?;
    let mut out = format!("{} {}\n", built.method(), built.url());
    for (k, v) in protocol.static_headers() {
        out.push_str(&format!("{k}: {v}\n"));
    }
    let auth = match protocol.auth() {
        AuthConfig::None => None,
        AuthConfig::Header { name, .. } => Some(name.to_ascii_lowercase()),
        _ => Some("authorization".to_string()),
    };
    if let Some(h) = auth {
        out.push_str(&format!("{h}: <redacted>\n"));
    }
    for (k, v) in built.headers() {
        let value = if v.is_sensitive() {
            "<redacted>"
        } else {
            v.to_str().unwrap_or("<binary>")
        };
        out.push_str(&format!("{k}: {value}\n"));
    }
    out.push('\n');
    if let Some(body) = built.body().and_then(|b| b.as_bytes()) {
        out.push_str(&protocol.redact_body(&String::from_utf8_lossy(body)));
        out.push('\n');
    }
    Ok(out)
}

/// The vendor's URL under `key` (`base_url`, `endpoint`): http or https.
pub fn endpoint(key: &str, url: &str) -> Result<reqwest::Url, AdapterError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| AdapterError::new(key, format!("'{url}' is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(AdapterError::new(key, "must be an http:// or https:// URL"));
    }
    Ok(parsed)
}

/// The wait before the next poll when the vendor names none: `initial`
/// doubled after each poll, at most `max`.
pub fn poll_backoff(initial: Duration, max: Duration, polls: u32) -> Duration {
    initial.saturating_mul(1u32 << polls.min(16)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_http_urls() {
        assert!(endpoint("endpoint", "https://vendor.example/ws").is_ok());
        let e = endpoint("base_url", "ftp://vendor.example/").unwrap_err();
        assert_eq!(e.key, "base_url");
        let e = endpoint("endpoint", "not a url").unwrap_err();
        assert!(e.reason.contains("is not a URL"), "{}", e.reason);
    }

    #[test]
    fn poll_backoff_doubles_up_to_the_ceiling() {
        let s = Duration::from_secs;
        assert_eq!(poll_backoff(s(1), s(10), 0), s(1));
        assert_eq!(poll_backoff(s(1), s(10), 2), s(4));
        assert_eq!(poll_backoff(s(1), s(10), 40), s(10));
    }
}
