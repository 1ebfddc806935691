//! The REST adapter: the AgID ModI REST interaction patterns towards a
//! vendor's JSON API.
//!
//! - `BLOCK_REST`: the answer carries the outcome.
//! - `NONBLOCK_PUSH_REST`: the request carries `X-ReplyTo` (the hub's
//!   callback URL); the vendor answers 202 + `X-Correlation-ID` and later
//!   POSTs the result to the callback ([`callback`]).
//! - `NONBLOCK_PULL_REST`: 202 + `Location`; the hub polls the status URL
//!   through [`Adapter::poll`] (200 = still working, 303 = done).
//!
//! One instance per vendor endpoint. The request is the normalized message
//! or a template; every request carries the delivery's operation id as
//! `Idempotency-Key` and `X-Correlation-ID` so the vendor can discard
//! re-sent duplicates. Replies are mapped by JSON pointers and value tables
//! ([`config::ResponseMapping`]). Transport concerns (auth, TLS, breaker,
//! pacing) live in [`crate::http`].

pub mod callback;
pub mod config;
pub mod response;

use crate::adapter::{
    AdapterError, DeliveryError, DeliveryRequest, FollowUp, PollOutcome, PollRequest, ResultSink,
    VendorReply,
};
use crate::http::adapter::{HttpAdapter, HttpProtocol, endpoint, poll_backoff};
use crate::http::config::AuthConfig;
use crate::http::{HttpReply, Transport, TransportSettings};
use crate::model::{Document, ExternalRef, Operation};
use crate::template::{BodyTemplate, Escape, Templates};
use async_trait::async_trait;
use config::{BodyKind, Pattern, RestConfig, RestOperation};
use response::{Mapped, RemoteDocument};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A configured REST adapter instance: the HTTP adapter skeleton speaking
/// [`Protocol`].
pub type RestAdapter = HttpAdapter<Protocol>;

/// The REST side of an instance: how requests are built and replies read.
pub struct Protocol {
    name: String,
    config: RestConfig,
    base: reqwest::Url,
    transport: Transport,
    templates: Templates,
    callback: Option<callback::CallbackSettings>,
}

impl std::fmt::Debug for RestAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are secrets: never printed.
        let p = self.protocol();
        f.debug_struct("RestAdapter")
            .field("name", &p.name)
            .field("base_url", &p.config.base_url)
            .field("pattern", &p.config.pattern)
            .finish_non_exhaustive()
    }
}

/// Reply bytes from which mapping a reply leaves the async workers (the
/// hub's threshold for attachments, `offload::BLOCKING_FROM_BYTES`).
const LARGE_REPLY_BYTES: usize = 64 * 1024;

impl RestAdapter {
    /// Builds an instance: compiles templates, reads secrets and prepares
    /// the HTTP client. `config_dir` resolves relative paths. Errors name
    /// the key (relative to the instance) and the reason; template errors
    /// also name the file and line.
    pub fn build(name: &str, config: RestConfig, config_dir: &Path) -> Result<Self, AdapterError> {
        let base = endpoint("base_url", &config.base_url)?;
        if config.max_concurrency == 0 {
            return Err(AdapterError::new("max_concurrency", "must be at least 1"));
        }
        let mut templates = Templates::new();
        add_operation_templates(&mut templates, "submit", &config.submit, config_dir)?;
        if let Some(op) = &config.withdraw {
            add_operation_templates(&mut templates, "withdraw", op, config_dir)?;
        }
        let transport = Transport::build(
            &TransportSettings {
                timeout: config.timeout,
                connect_timeout: config.connect_timeout,
                headers: &config.headers,
                auth: &config.auth,
                tls: &config.tls,
                breaker: &config.breaker,
                rate_limit: config.rate_limit.as_ref(),
                max_pace_wait: config.max_pace_wait,
                max_response_bytes: config.max_response_bytes,
            },
            config_dir,
        )?;
        config.response.validate_outcome("response")?;
        let callback = match (config.pattern, &config.callback) {
            (Pattern::Push, None) => {
                return Err(AdapterError::new(
                    "callback",
                    "pattern NONBLOCK_PUSH_REST needs [callback] (public_base_url and a secret)",
                ));
            }
            (_, Some(cb)) => Some(callback::CallbackSettings::build(name, cb, config_dir)?),
            (_, None) => None,
        };
        let pull = &config.pull;
        if pull.initial_interval.is_zero() || pull.initial_interval > pull.max_interval {
            return Err(AdapterError::new(
                "pull.initial_interval",
                "must be longer than zero and at most pull.max_interval",
            ));
        }
        if pull.max_wait < pull.initial_interval {
            return Err(AdapterError::new(
                "pull.max_wait",
                "is shorter than pull.initial_interval",
            ));
        }
        Ok(Self::new(Protocol {
            name: name.to_string(),
            config,
            base,
            transport,
            templates,
            callback,
        }))
    }

    /// OAuth2 tokens fetched so far (0 for other credentials).
    pub fn tokens_fetched(&self) -> u64 {
        self.protocol().transport.auth().tokens_fetched()
    }
}

impl Protocol {
    fn operation(&self, op: Operation) -> Option<&RestOperation> {
        match op {
            Operation::Submit => Some(&self.config.submit),
            Operation::Withdraw => self.config.withdraw.as_ref(),
        }
    }

    /// The request for `request`, without credentials (the transport adds
    /// them when sending).
    fn build_request(
        &self,
        op: &RestOperation,
        request: &DeliveryRequest,
    ) -> Result<reqwest::RequestBuilder, DeliveryError> {
        let name = request.operation().as_str();
        let path = self
            .templates
            .render(&format!("{name}.path"), request)
            .map_err(|e| DeliveryError::permanent(format!("{name}.path template: {e}")))?;
        let url = format!("{}{}", self.config.base_url.trim_end_matches('/'), path);
        let method = reqwest::Method::from_bytes(op.method.as_bytes()).map_err(|_| {
            DeliveryError::permanent(format!(
                "{name}.method '{}' is not an HTTP method",
                op.method
            ))
        })?;
        let mut query = Vec::with_capacity(op.query.len());
        for key in op.query.keys() {
            let value = self
                .templates
                .render(&format!("{name}.query.{key}"), request)
                .map_err(|e| {
                    DeliveryError::permanent(format!("{name}.query.{key} template: {e}"))
                })?;
            query.push((key.clone(), value));
        }
        let mut builder = self
            .transport
            .client()
            .request(method, &url)
            .query(&query)
            .header("Idempotency-Key", request.operation_id())
            .header("X-Correlation-ID", request.operation_id());
        if let Some(traceparent) = &request.traceparent {
            builder = builder.header("traceparent", traceparent);
        }
        if self.config.pattern == Pattern::Push
            && let Some(cb) = &self.callback
        {
            builder = builder.header("X-ReplyTo", &cb.reply_to);
        }
        let body = match op.body {
            BodyKind::Empty => None,
            BodyKind::Normalized => Some(
                serde_json::to_vec(&*request.message)
                    .map_err(|e| DeliveryError::permanent(format!("cannot encode message: {e}")))?,
            ),
            BodyKind::Template => Some(
                self.templates
                    .render(name, request)
                    .map_err(|e| DeliveryError::permanent(format!("{name} template: {e}")))?
                    .into_bytes(),
            ),
        };
        if let Some(body) = body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, &op.content_type)
                .body(body);
        }
        Ok(builder)
    }

    /// A URL the vendor gave (Location, document links), resolved against
    /// `relative_to`; it must stay on the vendor's origin, where our
    /// credentials are meant to go.
    fn vendor_url(
        &self,
        raw: &str,
        relative_to: &reqwest::Url,
    ) -> Result<reqwest::Url, DeliveryError> {
        let url = relative_to.join(raw).map_err(|e| {
            DeliveryError::permanent(format!("vendor URL '{raw}' is not valid: {e}"))
        })?;
        if url.origin() != self.base.origin() {
            return Err(DeliveryError::permanent(format!(
                "vendor URL '{url}' is outside base_url's origin: not followed"
            )));
        }
        Ok(url)
    }

    async fn get(&self, url: reqwest::Url) -> Result<HttpReply, DeliveryError> {
        self.transport.send(self.transport.client().get(url)).await
    }

    /// Fetches linked outcome documents and adds them to the reply.
    async fn complete(
        &self,
        mapped: Mapped,
        relative_to: &reqwest::Url,
    ) -> Result<VendorReply, DeliveryError> {
        let Mapped {
            mut reply,
            remote_documents,
        } = mapped;
        for RemoteDocument {
            name,
            media_type,
            url,
        } in remote_documents
        {
            let url = self.vendor_url(&url, relative_to)?;
            let got = self.get(url.clone()).await?;
            if !got.status.is_success() {
                let mut err = got.failure();
                err.reason = format!("fetching outcome document '{name}': {}", err.reason);
                return Err(err);
            }
            reply
                .documents
                .push(Document::new(name, media_type, got.body));
        }
        Ok(reply)
    }

    fn classify(&self, reply: &HttpReply) -> DeliveryError {
        let mut err = response::classify(
            &self.config.response,
            reply.status.as_u16(),
            reply.retry_after,
            &reply.body,
        );
        if reply.credentials_renewed {
            err.class = crate::adapter::FailureClass::Transient;
            err.reason = format!("{}; a new access token is fetched", err.reason);
        }
        err
    }

    /// [`response::map_success`]: on a blocking thread for a large reply,
    /// whose documents are base64-decoded and hashed (milliseconds of one
    /// core for a few MiB, which would stall an async worker); inline for
    /// the usual small one, where a hand-off costs more than the work.
    async fn map_final(&self, body: Vec<u8>) -> Result<Mapped, DeliveryError> {
        if body.len() < LARGE_REPLY_BYTES {
            return response::map_success(&self.config.response, &body, &self.name);
        }
        let (mapping, name) = (self.config.response.clone(), self.name.clone());
        match tokio::task::spawn_blocking(move || response::map_success(&mapping, &body, &name))
            .await
        {
            Ok(mapped) => mapped,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(DeliveryError::transient(format!(
                "reading the vendor's reply was cancelled: {e}"
            ))),
        }
    }

    /// An intermediate report (a 202 body, a "still working" poll). The
    /// vendor has the work, so a report the mapping cannot read is logged
    /// and skipped rather than failing the delivery.
    fn progress(&self, body: &[u8]) -> VendorReply {
        match response::map_progress(&self.config.response, body, &self.name) {
            Ok(m) => m.reply,
            Err(e) => {
                // The reason can quote the vendor's body: only the class is logged.
                tracing::warn!(adapter = %self.name, class = %e.class, "intermediate report ignored: the mapping cannot read it");
                VendorReply::default()
            }
        }
    }

    async fn deliver(&self, request: DeliveryRequest) -> Result<VendorReply, DeliveryError> {
        let op = self.operation(request.operation()).ok_or_else(|| {
            DeliveryError::permanent(format!(
                "adapter '{}' has no '{}' operation configured",
                self.name,
                request.operation().as_str()
            ))
        })?;
        let built = self.build_request(op, &request)?;
        let url = built
            .try_clone()
            .and_then(|b| b.build().ok())
            .map(|r| r.url().clone())
            .unwrap_or_else(|| self.base.clone());
        let reply = self.transport.send(built).await?;
        let status = reply.status.as_u16();
        match (self.config.pattern, status) {
            (Pattern::Push, 202) => {
                // ModI: the provider names the exchange; vendors that adopt
                // the client's X-Correlation-ID may omit it.
                let correlation = reply
                    .header("x-correlation-id")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .unwrap_or(request.operation_id())
                    .to_string();
                let mut ack = self.progress(&reply.body);
                ack.external_refs.push(ExternalRef {
                    kind: callback::CORRELATION_KIND.into(),
                    value: correlation,
                    system: self.name.clone(),
                    issued_at: None,
                });
                Ok(ack)
            }
            (Pattern::Pull, 202) => {
                let location = reply.header("location").ok_or_else(|| {
                    DeliveryError::permanent(
                        "vendor answered 202 without Location (NONBLOCK_PULL_REST)",
                    )
                })?;
                let status_url = self.vendor_url(location, &url)?;
                let mut ack = self.progress(&reply.body);
                ack.follow_up = Some(FollowUp {
                    token: status_url.to_string(),
                    poll_after: reply
                        .retry_after
                        .unwrap_or(self.config.pull.initial_interval),
                    max_wait: self.config.pull.max_wait,
                });
                Ok(ack)
            }
            (_, 200..=299) => {
                let mapped = self.map_final(reply.body).await?;
                self.complete(mapped, &url).await
            }
            _ => Err(self.classify(&reply)),
        }
    }

    async fn poll(&self, request: PollRequest) -> Result<PollOutcome, DeliveryError> {
        let status_url = reqwest::Url::parse(&request.token).map_err(|e| {
            DeliveryError::permanent(format!("stored status URL is not valid: {e}"))
        })?;
        let reply = self.get(status_url.clone()).await?;
        match reply.status.as_u16() {
            // 303 is ModI's "done"; some servers answer 302 or 301.
            301..=303 => {
                let location = reply.header("location").ok_or_else(|| {
                    DeliveryError::permanent("vendor answered 303 without Location")
                })?;
                let result_url = self.vendor_url(location, &status_url)?;
                let result = self.get(result_url.clone()).await?;
                if !result.status.is_success() {
                    return Err(self.classify(&result));
                }
                let mapped = self.map_final(result.body).await?;
                Ok(PollOutcome::Done(self.complete(mapped, &result_url).await?))
            }
            200..=299 => {
                let progress = self.progress(&reply.body);
                let has_news = progress.status.is_some()
                    || !progress.external_refs.is_empty()
                    || !progress.outcome_data.is_empty();
                let pull = &self.config.pull;
                let backoff = poll_backoff(pull.initial_interval, pull.max_interval, request.polls);
                Ok(PollOutcome::Pending {
                    progress: has_news.then_some(progress),
                    token: None,
                    poll_after: reply
                        .retry_after
                        .unwrap_or(backoff)
                        .max(Duration::from_millis(10)),
                })
            }
            _ => Err(self.classify(&reply)),
        }
    }

    /// The request for `request`, if its operation is configured.
    fn request_for(
        &self,
        request: &DeliveryRequest,
    ) -> Result<reqwest::RequestBuilder, DeliveryError> {
        let op = self.operation(request.operation()).ok_or_else(|| {
            DeliveryError::permanent(format!(
                "no '{}' operation configured",
                request.operation().as_str()
            ))
        })?;
        self.build_request(op, request)
    }
}

fn add_operation_templates(
    templates: &mut Templates,
    name: &str,
    op: &RestOperation,
    config_dir: &Path,
) -> Result<(), AdapterError> {
    if reqwest::Method::from_bytes(op.method.as_bytes()).is_err() {
        return Err(AdapterError::new(
            format!("{name}.method"),
            format!("'{}' is not an HTTP method", op.method),
        ));
    }
    templates
        .add(&format!("{name}.path"), op.path.clone(), Escape::UrlPath)
        .map_err(|e| AdapterError::new(format!("{name}.path"), e))?;
    for (key, value) in &op.query {
        templates
            .add(&format!("{name}.query.{key}"), value.clone(), Escape::None)
            .map_err(|e| AdapterError::new(format!("{name}.query.{key}"), e))?;
    }
    BodyTemplate {
        key: name,
        selector: "body",
        selected: op.body == BodyKind::Template,
        file: op.template.as_deref(),
        inline: op.template_inline.as_deref(),
    }
    .add_to(
        templates,
        name,
        Escape::for_content_type(&op.content_type),
        config_dir,
    )
}

#[async_trait]
impl HttpProtocol for Protocol {
    const KIND: &'static str = "rest";

    fn transport(&self) -> &Transport {
        &self.transport
    }

    fn max_concurrency(&self) -> usize {
        self.config.max_concurrency
    }

    fn static_headers(&self) -> &BTreeMap<String, String> {
        &self.config.headers
    }

    fn auth(&self) -> &AuthConfig {
        &self.config.auth
    }

    fn supports(&self, operation: Operation) -> bool {
        self.operation(operation).is_some()
    }

    fn request(&self, request: &DeliveryRequest) -> Result<reqwest::RequestBuilder, DeliveryError> {
        self.request_for(request)
    }

    async fn deliver(&self, request: DeliveryRequest) -> Result<VendorReply, DeliveryError> {
        Protocol::deliver(self, request).await
    }

    async fn poll(&self, request: PollRequest) -> Result<PollOutcome, DeliveryError> {
        Protocol::poll(self, request).await
    }

    fn callback_routes(this: &Arc<Self>, sink: Arc<dyn ResultSink>) -> Option<axum::Router> {
        this.callback.as_ref()?;
        Some(callback::router(Arc::clone(this), sink))
    }
}
