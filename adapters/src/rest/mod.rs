//! The REST adapter: AgID ModI `BLOCK_REST` towards a vendor's JSON API.
//!
//! One instance per vendor endpoint. The request is the normalized message
//! or a template; every request carries the delivery's operation id as
//! `Idempotency-Key` so the vendor can discard re-sent duplicates. The reply
//! is mapped by JSON pointers and a status table ([`config::ResponseMapping`]).

pub mod config;
pub mod response;

use crate::adapter::{
    Adapter, AdapterError, DeliveryError, DeliveryRequest, FailureClass, VendorReply,
};
use crate::model::Operation;
use crate::template::{Escape, Templates};
use async_trait::async_trait;
use config::{BodyKind, RestAuth, RestConfig, RestOperation};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use std::path::Path;
use std::time::SystemTime;

/// A configured REST adapter instance.
pub struct RestAdapter {
    name: String,
    config: RestConfig,
    client: reqwest::Client,
    templates: Templates,
    auth_header: Option<HeaderValue>,
}

impl std::fmt::Debug for RestAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The auth header is a secret: never print it.
        f.debug_struct("RestAdapter")
            .field("name", &self.name)
            .field("base_url", &self.config.base_url)
            .finish_non_exhaustive()
    }
}

impl RestAdapter {
    /// Builds an instance: compiles templates, reads secrets and prepares
    /// the HTTP client. `config_dir` resolves relative template paths.
    /// Errors name the key (relative to the instance) and the reason.
    pub fn build(name: &str, config: RestConfig, config_dir: &Path) -> Result<Self, AdapterError> {
        let base = reqwest::Url::parse(&config.base_url).map_err(|e| {
            AdapterError::new(
                "base_url",
                format!("'{}' is not a URL: {e}", config.base_url),
            )
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(AdapterError::new(
                "base_url",
                "must be an http:// or https:// URL",
            ));
        }
        if config.max_concurrency == 0 {
            return Err(AdapterError::new("max_concurrency", "must be at least 1"));
        }
        let mut templates = Templates::new();
        add_operation_templates(&mut templates, "submit", &config.submit, config_dir)?;
        if let Some(op) = &config.withdraw {
            add_operation_templates(&mut templates, "withdraw", op, config_dir)?;
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let key = HeaderName::from_bytes(k.as_bytes()).map_err(|e| {
                AdapterError::new(format!("headers.{k}"), format!("not a header name: {e}"))
            })?;
            let value = HeaderValue::from_str(v).map_err(|e| {
                AdapterError::new(format!("headers.{k}"), format!("not a header value: {e}"))
            })?;
            headers.insert(key, value);
        }
        let auth_header = auth_header(&config.auth, config_dir)?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .default_headers(headers)
            .user_agent(concat!("raccordo/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AdapterError::new("base_url", format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            name: name.to_string(),
            config,
            client,
            templates,
            auth_header,
        })
    }

    /// Deliveries this instance runs at once.
    pub fn max_concurrency(&self) -> usize {
        self.config.max_concurrency
    }

    fn operation(&self, op: Operation) -> Option<&RestOperation> {
        match op {
            Operation::Submit => Some(&self.config.submit),
            Operation::Withdraw => self.config.withdraw.as_ref(),
        }
    }

    fn build_request(
        &self,
        op: &RestOperation,
        request: &DeliveryRequest,
    ) -> Result<reqwest::RequestBuilder, DeliveryError> {
        let name = request.operation().as_str();
        let path = self
            .templates
            .render_str(&op.path, request)
            .map_err(|e| DeliveryError::permanent(format!("{name}.path template: {e}")))?;
        let url = format!("{}{}", self.config.base_url.trim_end_matches('/'), path);
        let method = reqwest::Method::from_bytes(op.method.as_bytes()).map_err(|_| {
            DeliveryError::permanent(format!(
                "{name}.method '{}' is not an HTTP method",
                op.method
            ))
        })?;
        let mut builder = self
            .client
            .request(method, &url)
            .header("Idempotency-Key", request.operation_id())
            .header("X-Correlation-ID", request.operation_id());
        if let Some(traceparent) = &request.traceparent {
            builder = builder.header("traceparent", traceparent);
        }
        if let Some(auth) = &self.auth_header {
            builder = builder.header(reqwest::header::AUTHORIZATION, auth.clone());
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

    async fn read_body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, DeliveryError> {
        let limit = self.config.max_response_bytes;
        if resp.content_length().is_some_and(|len| len > limit) {
            return Err(DeliveryError::permanent(format!(
                "vendor reply of {} bytes exceeds max_response_bytes ({limit})",
                resp.content_length().unwrap_or_default()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            // The request reached the vendor: we cannot know whether it acted.
            DeliveryError::new(
                FailureClass::OutcomeUnknown,
                format!("reading vendor reply: {e}"),
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
    // Paths are rendered per request; compile once now to catch syntax errors.
    let mut probe = Templates::new();
    probe
        .add("path", op.path.clone(), Escape::None)
        .map_err(|e| AdapterError::new(format!("{name}.path"), e))?;
    if op.body != BodyKind::Template {
        if op.template.is_some() || op.template_inline.is_some() {
            return Err(AdapterError::new(
                format!("{name}.template"),
                "is set but body is not \"template\"",
            ));
        }
        return Ok(());
    }
    let source = match (&op.template, &op.template_inline) {
        (Some(path), None) => {
            let full = config_dir.join(path);
            std::fs::read_to_string(&full).map_err(|e| {
                AdapterError::new(
                    format!("{name}.template"),
                    format!("cannot read {}: {e}", full.display()),
                )
            })?
        }
        (None, Some(inline)) => inline.clone(),
        (None, None) => {
            return Err(AdapterError::new(
                format!("{name}.template"),
                "body = \"template\" needs template (a file) or template_inline",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(AdapterError::new(
                format!("{name}.template"),
                "set either template or template_inline, not both",
            ));
        }
    };
    templates
        .add(name, source, Escape::for_content_type(&op.content_type))
        .map_err(|e| AdapterError::new(format!("{name}.template"), e))
}

/// Reads a secret from an environment variable or a file (relative paths
/// resolve against the configuration file's directory, like templates).
fn read_secret(
    key: &str,
    env: &Option<String>,
    file: &Option<String>,
    config_dir: &Path,
) -> Result<String, AdapterError> {
    match (env, file) {
        (Some(var), None) => std::env::var(var).map_err(|_| {
            AdapterError::new(
                format!("auth.{key}_env"),
                format!("environment variable {var} is not set"),
            )
        }),
        (None, Some(path)) => std::fs::read_to_string(config_dir.join(path))
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| {
                AdapterError::new(
                    format!("auth.{key}_file"),
                    format!("cannot read {path}: {e}"),
                )
            }),
        (None, None) => Err(AdapterError::new(
            format!("auth.{key}_env"),
            format!("set {key}_env or {key}_file (secrets are never written in the configuration)"),
        )),
        (Some(_), Some(_)) => Err(AdapterError::new(
            format!("auth.{key}_env"),
            format!("set either {key}_env or {key}_file, not both"),
        )),
    }
}

fn auth_header(auth: &RestAuth, config_dir: &Path) -> Result<Option<HeaderValue>, AdapterError> {
    use base64::Engine;
    let value = match auth {
        RestAuth::None => return Ok(None),
        RestAuth::Basic {
            username,
            password_env,
            password_file,
        } => {
            let password = read_secret("password", password_env, password_file, config_dir)?;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            format!("Basic {token}")
        }
        RestAuth::Bearer {
            token_env,
            token_file,
        } => {
            format!(
                "Bearer {}",
                read_secret("token", token_env, token_file, config_dir)?
            )
        }
    };
    let mut header = HeaderValue::from_str(&value).map_err(|_| {
        AdapterError::new(
            "auth",
            "the secret contains characters not allowed in a header",
        )
    })?;
    header.set_sensitive(true);
    Ok(Some(header))
}

#[async_trait]
impl Adapter for RestAdapter {
    fn kind(&self) -> &'static str {
        "rest"
    }

    fn supports(&self, operation: Operation) -> bool {
        self.operation(operation).is_some()
    }

    async fn deliver(&self, request: DeliveryRequest) -> Result<VendorReply, DeliveryError> {
        let op = self.operation(request.operation()).ok_or_else(|| {
            DeliveryError::permanent(format!(
                "adapter '{}' has no '{}' operation configured",
                self.name,
                request.operation().as_str()
            ))
        })?;
        let resp = self
            .build_request(op, &request)?
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    DeliveryError::transient(format!(
                        "cannot connect to vendor: {}",
                        error_chain(&e)
                    ))
                } else if e.is_timeout() {
                    DeliveryError::new(
                        FailureClass::OutcomeUnknown,
                        format!("no answer within {:?}", self.config.timeout),
                    )
                } else {
                    DeliveryError::new(
                        FailureClass::OutcomeUnknown,
                        format!("request failed: {}", error_chain(&e)),
                    )
                }
            })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| response::parse_retry_after(v, SystemTime::now()));
        let body = self.read_body(resp).await?;
        if status.is_success() {
            response::map_success(&self.config.response, &body, &self.name)
        } else {
            Err(response::classify_failure(
                status.as_u16(),
                retry_after,
                &body,
            ))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
