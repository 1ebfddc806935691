//! The SOAP adapter: document/literal SOAP 1.1 and 1.2 towards a vendor's
//! web service, in the AgID ModI SOAP interaction patterns.
//!
//! - `BLOCK_SOAP`: the reply carries the outcome (or a fault).
//! - `NONBLOCK_PULL_SOAP`: the reply carries a correlation id; the hub calls
//!   status(id) through [`Adapter::poll`] until done, then result(id).
//! - `NONBLOCK_PUSH_SOAP`: the request carries `X-ReplyTo` in a SOAP header;
//!   the vendor later calls the hub's SOAP callback service ([`callback`],
//!   WSDL at `?wsdl`) with `X-Correlation-ID` in a SOAP header.
//!
//! The Body comes from an XML-escaping template or is the normalized
//! message's XML form; SOAP headers come from templates; WS-Addressing and
//! WS-Security ([`security`], a pipeline of steps) are added on request.
//! Replies are read by one hardened streaming pass ([`xml`]) and mapped by
//! namespace-aware paths and value tables ([`response`]). Transport
//! concerns (auth, TLS, breaker, pacing, bounded bodies) are
//! [`crate::http`]'s, shared with REST.

pub mod callback;
pub mod config;
pub mod response;
pub mod security;
pub mod wsdl;
pub mod xml;

use crate::adapter::{
    AdapterError, DeliveryError, DeliveryRequest, FailureClass, FollowUp, PollOutcome, PollRequest,
    ResultSink, VendorReply,
};
use crate::http::adapter::{HttpAdapter, HttpProtocol, endpoint, poll_backoff};
use crate::http::callback::CORRELATION_KIND;
use crate::http::config::AuthConfig;
use crate::http::{HttpReply, Transport, TransportSettings};
use crate::model::{ExternalRef, Operation};
use crate::template::{BodyTemplate, Escape, Templates};
use async_trait::async_trait;
use config::{BodyKind, Pattern, SoapConfig, SoapOperation, SoapVersion};
use quick_xml::escape::escape;
use response::{Mapper, Reply, refused};
use security::{OutgoingEnvelope, SecurityStep};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use xml::{NsMatch, Step, XPath};

/// WS-Addressing 1.0 namespace.
pub const WSA_NS: &str = "http://www.w3.org/2005/08/addressing";
const WSA_ANONYMOUS: &str = "http://www.w3.org/2005/08/addressing/anonymous";

/// A configured SOAP adapter instance: the HTTP adapter skeleton speaking
/// [`Protocol`].
pub type SoapAdapter = HttpAdapter<Protocol>;

/// The SOAP side of an instance: how envelopes are built and replies read.
pub struct Protocol {
    name: String,
    config: SoapConfig,
    transport: Transport,
    templates: Templates,
    poll_templates: minijinja::Environment<'static>,
    security: Vec<Box<dyn SecurityStep>>,
    mapper: Mapper,
    /// Capture indexes of the extra paths read with every reply.
    idx: Indexes,
    callback: Option<callback::CallbackSettings>,
}

#[derive(Debug, Clone, Copy)]
struct Indexes {
    header_correlation: usize,
    header_message_id: usize,
    pull_correlation: Option<usize>,
    pull_state: Option<usize>,
    token: callback::TokenIndexes,
}

impl std::fmt::Debug for SoapAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are secrets: never printed.
        let p = self.protocol();
        f.debug_struct("SoapAdapter")
            .field("name", &p.name)
            .field("endpoint", &p.config.endpoint)
            .field("pattern", &p.config.pattern)
            .finish_non_exhaustive()
    }
}

/// A header path `/Envelope/Header/{local}` in any namespace.
fn header_path(local: &str, deeper: &[&str]) -> XPath {
    let mut steps = vec![
        Step {
            ns: NsMatch::Any,
            local: "Envelope".into(),
        },
        Step {
            ns: NsMatch::Any,
            local: "Header".into(),
        },
        Step {
            ns: NsMatch::Any,
            local: local.into(),
        },
    ];
    steps.extend(deeper.iter().map(|l| Step {
        ns: NsMatch::Any,
        local: (*l).into(),
    }));
    XPath::from_steps(&format!("Header/{local}"), true, steps)
}

impl SoapAdapter {
    /// Builds an instance: compiles templates and paths, reads secrets and
    /// prepares the HTTP client. Errors name the key and the reason.
    pub fn build(name: &str, config: SoapConfig, config_dir: &Path) -> Result<Self, AdapterError> {
        endpoint("endpoint", &config.endpoint)?;
        if config.max_concurrency == 0 {
            return Err(AdapterError::new("max_concurrency", "must be at least 1"));
        }
        for (prefix, uri) in &config.namespaces {
            if prefix.is_empty() || prefix.contains(':') || uri.is_empty() {
                return Err(AdapterError::new(
                    format!("namespaces.{prefix}"),
                    "needs a prefix without ':' and a non-empty namespace URI",
                ));
            }
        }
        let l = &config.limits;
        if l.max_bytes == 0 || l.max_depth < 4 || l.max_attributes == 0 || l.max_text_bytes == 0 {
            return Err(AdapterError::new(
                "limits",
                "max_bytes, max_attributes and max_text_bytes must be at least 1, max_depth at least 4",
            ));
        }
        let mut templates = Templates::new();
        add_operation(&mut templates, "submit", &config.submit, config_dir)?;
        if let Some(op) = &config.withdraw {
            add_operation(&mut templates, "withdraw", op, config_dir)?;
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
        let security = security::build_pipeline(&config.security, config_dir)?;
        let mut mapper = Mapper::build(&config.response, &config.faults, &config.namespaces)?;
        let header_correlation = mapper.add_path(header_path("X-Correlation-ID", &[]));
        let header_message_id = mapper.add_path(header_path("MessageID", &[]));
        let token = callback::TokenIndexes::add(&mut mapper);
        let mut poll_templates = poll_environment();
        let (pull_correlation, pull_state) = match (config.pattern, &config.pull) {
            (Pattern::Pull, None) => {
                return Err(AdapterError::new(
                    "pull",
                    "pattern NONBLOCK_PULL_SOAP needs [pull] (correlation_path, status, state_path, done_states, result)",
                ));
            }
            (_, Some(pull)) => {
                let c = mapper.add(
                    "pull.correlation_path",
                    &pull.correlation_path,
                    &config.namespaces,
                )?;
                let s = mapper.add("pull.state_path", &pull.state_path, &config.namespaces)?;
                if pull.done_states.is_empty() {
                    return Err(AdapterError::new(
                        "pull.done_states",
                        "must name at least one state",
                    ));
                }
                if pull.initial_interval.is_zero() || pull.initial_interval > pull.max_interval {
                    return Err(AdapterError::new(
                        "pull.initial_interval",
                        "must be longer than zero and at most pull.max_interval",
                    ));
                }
                for (key, op) in [("status", &pull.status), ("result", &pull.result)] {
                    poll_templates
                        .add_template_owned(key.to_string(), op.template_inline.clone())
                        .map_err(|e| {
                            AdapterError::new(format!("pull.{key}.template_inline"), describe(&e))
                        })?;
                }
                (Some(c), Some(s))
            }
            (_, None) => (None, None),
        };
        let callback = match (config.pattern, &config.push) {
            (Pattern::Push, None) => {
                return Err(AdapterError::new(
                    "push",
                    "pattern NONBLOCK_PUSH_SOAP needs [push] (public_base_url and the callback credentials)",
                ));
            }
            (_, Some(push)) => Some(callback::CallbackSettings::build(name, push, config_dir)?),
            (_, None) => None,
        };
        Ok(Self::new(Protocol {
            name: name.to_string(),
            config,
            transport,
            templates,
            poll_templates,
            security,
            mapper,
            idx: Indexes {
                header_correlation,
                header_message_id,
                pull_correlation,
                pull_state,
                token,
            },
            callback,
        }))
    }
}

fn poll_environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(100_000));
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // Every value lands in XML: HTML escaping emits only XML-valid entities.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env
}

fn describe(err: &minijinja::Error) -> String {
    match err.line() {
        Some(line) => format!("line {line}: {err}"),
        None => err.to_string(),
    }
}

fn add_operation(
    templates: &mut Templates,
    name: &str,
    op: &SoapOperation,
    config_dir: &Path,
) -> Result<(), AdapterError> {
    for (i, h) in op.soap_headers.iter().enumerate() {
        templates
            .add(&format!("{name}.header.{i}"), h.clone(), Escape::Xml)
            .map_err(|e| AdapterError::new(format!("{name}.soap_headers[{i}]"), e))?;
    }
    BodyTemplate {
        key: name,
        selector: "body",
        selected: op.body == BodyKind::Template,
        file: op.template.as_deref(),
        inline: op.template_inline.as_deref(),
    }
    .add_to(templates, name, Escape::Xml, config_dir)
}

/// Assembles an envelope from the security steps' output.
pub fn assemble(version: SoapVersion, env: &OutgoingEnvelope) -> String {
    let mut out = String::with_capacity(env.body.len() + 1024);
    out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    out.push_str(&format!(
        r#"<soap:Envelope xmlns:soap="{}">"#,
        version.namespace()
    ));
    if !env.security.is_empty() || !env.headers.is_empty() {
        out.push_str("<soap:Header>");
        if !env.security.is_empty() {
            let mu = match version {
                SoapVersion::V11 => "1",
                SoapVersion::V12 => "true",
            };
            out.push_str(&security::security_header(&env.security, mu));
        }
        for h in &env.headers {
            out.push_str(h);
        }
        out.push_str("</soap:Header>");
    }
    out.push_str("<soap:Body>");
    out.push_str(&env.body);
    out.push_str("</soap:Body></soap:Envelope>");
    out
}

/// The HTTP Content-Type (and, for 1.1, the SOAPAction header) of a call.
fn content_headers(version: SoapVersion, action: &str) -> Vec<(&'static str, String)> {
    match version {
        SoapVersion::V11 => vec![
            ("content-type", "text/xml; charset=utf-8".into()),
            ("soapaction", format!("\"{action}\"")),
        ],
        SoapVersion::V12 => {
            let mut ct = "application/soap+xml; charset=utf-8".to_string();
            if !action.is_empty() {
                ct.push_str(&format!("; action=\"{action}\""));
            }
            vec![("content-type", ct)]
        }
    }
}

/// The normalized message's XML form without its declaration (it goes
/// inside the Body).
fn normalized_body(request: &DeliveryRequest) -> Result<String, DeliveryError> {
    let bytes = crate::message_xml::to_xml(&request.message).map_err(DeliveryError::permanent)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| DeliveryError::permanent("the message's XML form is not UTF-8"))?;
    Ok(match text.strip_prefix("<?xml") {
        Some(rest) => rest
            .split_once("?>")
            .map(|(_, r)| r.trim_start().to_string())
            .unwrap_or(text.clone()),
        None => text,
    })
}

impl Protocol {
    fn operation(&self, op: Operation) -> Option<&SoapOperation> {
        match op {
            Operation::Submit => Some(&self.config.submit),
            Operation::Withdraw => self.config.withdraw.as_ref(),
        }
    }

    /// The envelope for `body` and `headers`, with WS-Addressing, the push
    /// headers and the security pipeline applied.
    fn envelope(
        &self,
        version: SoapVersion,
        action: &str,
        body: String,
        mut headers: Vec<String>,
        with_reply_to: bool,
    ) -> Result<String, DeliveryError> {
        if let Some(wsa) = &self.config.addressing {
            let to = wsa.to.as_deref().unwrap_or(&self.config.endpoint);
            let reply_to = wsa
                .reply_to
                .as_deref()
                .or(self
                    .callback
                    .as_ref()
                    .filter(|_| with_reply_to)
                    .map(|c| c.service_url.as_str()))
                .unwrap_or(WSA_ANONYMOUS);
            let a = format!(r#"xmlns:wsa="{WSA_NS}""#);
            headers.push(format!("<wsa:To {a}>{}</wsa:To>", escape(to)));
            headers.push(format!("<wsa:Action {a}>{}</wsa:Action>", escape(action)));
            headers.push(format!(
                "<wsa:MessageID {a}>urn:uuid:{}</wsa:MessageID>",
                uuid::Uuid::now_v7()
            ));
            headers.push(format!(
                "<wsa:ReplyTo {a}><wsa:Address>{}</wsa:Address></wsa:ReplyTo>",
                escape(reply_to)
            ));
        }
        if with_reply_to && let Some(cb) = &self.callback {
            headers.push(format!(
                r#"<modi:X-ReplyTo xmlns:modi="{}">{}</modi:X-ReplyTo>"#,
                escape(cb.header_namespace.as_str()),
                escape(cb.service_url.as_str())
            ));
        }
        let mut env = OutgoingEnvelope {
            security: Vec::new(),
            headers,
            body,
            now: chrono::Utc::now(),
        };
        for step in &self.security {
            step.apply(&mut env)?;
        }
        Ok(assemble(version, &env))
    }

    fn post(
        &self,
        version: SoapVersion,
        action: &str,
        envelope: String,
        operation_id: &str,
    ) -> reqwest::RequestBuilder {
        let mut b = self
            .transport
            .client()
            .post(&self.config.endpoint)
            .header("X-Correlation-ID", operation_id)
            .header("Idempotency-Key", operation_id);
        for (k, v) in content_headers(version, action) {
            b = b.header(k, v);
        }
        b.body(envelope)
    }

    fn build_request(
        &self,
        request: &DeliveryRequest,
    ) -> Result<reqwest::RequestBuilder, DeliveryError> {
        let name = request.operation().as_str();
        let op = self.operation(request.operation()).ok_or_else(|| {
            DeliveryError::permanent(format!(
                "adapter '{}' has no '{name}' operation configured",
                self.name
            ))
        })?;
        let version = op.soap_version.unwrap_or(self.config.soap_version);
        let body = match op.body {
            BodyKind::Normalized => normalized_body(request)?,
            BodyKind::Template => self
                .templates
                .render(name, request)
                .map_err(|e| DeliveryError::permanent(format!("{name} template: {e}")))?,
        };
        let mut headers = Vec::with_capacity(op.soap_headers.len());
        for i in 0..op.soap_headers.len() {
            headers.push(
                self.templates
                    .render(&format!("{name}.header.{i}"), request)
                    .map_err(|e| {
                        DeliveryError::permanent(format!("{name}.soap_headers[{i}] template: {e}"))
                    })?,
            );
        }
        let push = self.config.pattern == Pattern::Push;
        let envelope = self.envelope(version, &op.action, body, headers, push)?;
        let builder = self.post(version, &op.action, envelope, request.operation_id());
        Ok(match &request.traceparent {
            Some(traceparent) => builder.header("traceparent", traceparent),
            None => builder,
        })
    }

    /// Reads a reply: a fault (any HTTP status) is classified; a refused
    /// document is permanent; a non-2xx without a fault follows the HTTP
    /// rules.
    fn read(&self, reply: &HttpReply) -> Result<Reply, DeliveryError> {
        let ct = reply.header("content-type");
        let blank = reply.body.iter().all(u8::is_ascii_whitespace);
        if blank {
            if reply.status.is_success() {
                return Ok(Reply::default());
            }
            return Err(reply.failure());
        }
        match self.mapper.read(&reply.body, ct, &self.config.limits) {
            Ok(parsed) => {
                if let Some(fault) = &parsed.parsed.fault {
                    let mut err = self.mapper.fault_error(&parsed, fault);
                    if err.class == FailureClass::Transient {
                        err.retry_after = reply.retry_after;
                    }
                    return Err(err);
                }
                if !reply.status.is_success() {
                    return Err(reply.failure());
                }
                if parsed.parsed.soap_version.is_none() {
                    return Err(DeliveryError::permanent(
                        "vendor reply is XML but not a SOAP envelope",
                    ));
                }
                Ok(parsed)
            }
            Err(e) if e.limit.is_some() || reply.status.is_success() => {
                Err(refused(&e, "vendor reply"))
            }
            // An HTML error page from a proxy: the status decides.
            Err(_) => Err(reply.failure()),
        }
    }

    async fn deliver(&self, request: DeliveryRequest) -> Result<VendorReply, DeliveryError> {
        let built = self.build_request(&request)?;
        let http = self.transport.send(built).await?;
        let reply = self.read(&http)?;
        match self.config.pattern {
            Pattern::Block => self.mapper.map(&reply, &self.name, true),
            Pattern::Pull => {
                let correlation = self
                    .mapper
                    .text(&reply, self.idx.pull_correlation)
                    .ok_or_else(|| {
                        DeliveryError::permanent(format!(
                            "vendor reply has no correlation id at {} (NONBLOCK_PULL_SOAP)",
                            self.config
                                .pull
                                .as_ref()
                                .map(|p| p.correlation_path.as_str())
                                .unwrap_or_default()
                        ))
                    })?;
                let pull = self.config.pull.as_ref().expect("checked at build");
                let mut ack = self.mapper.map(&reply, &self.name, false)?;
                ack.external_refs.push(ExternalRef {
                    kind: CORRELATION_KIND.into(),
                    value: correlation.clone(),
                    system: self.name.clone(),
                    issued_at: None,
                });
                ack.follow_up = Some(FollowUp {
                    token: correlation,
                    poll_after: http.retry_after.unwrap_or(pull.initial_interval),
                    max_wait: pull.max_wait,
                });
                Ok(ack)
            }
            Pattern::Push => {
                // ModI: the provider names the exchange in a SOAP header;
                // one that adopts ours may omit it.
                let correlation = self
                    .mapper
                    .text(&reply, Some(self.idx.header_correlation))
                    .unwrap_or_else(|| request.operation_id().to_string());
                let mut ack = self.mapper.map(&reply, &self.name, false)?;
                ack.external_refs.push(ExternalRef {
                    kind: CORRELATION_KIND.into(),
                    value: correlation,
                    system: self.name.clone(),
                    issued_at: None,
                });
                Ok(ack)
            }
        }
    }

    /// Calls status(id) or result(id).
    async fn call_poll(
        &self,
        which: &str,
        request: &PollRequest,
    ) -> Result<(HttpReply, Reply), DeliveryError> {
        let pull = self.config.pull.as_ref().ok_or_else(|| {
            DeliveryError::permanent("this SOAP instance has no [pull] configuration")
        })?;
        let op = if which == "status" {
            &pull.status
        } else {
            &pull.result
        };
        let ctx = minijinja::context! {
            correlation_id => request.token.clone(),
            operation_id => request.operation_id.clone(),
            polls => request.polls,
        };
        let body = self
            .poll_templates
            .get_template(which)
            .and_then(|t| t.render(ctx))
            .map_err(|e| {
                DeliveryError::permanent(format!("pull.{which} template: {}", describe(&e)))
            })?;
        let version = self.config.soap_version;
        let envelope = self.envelope(version, &op.action, body, Vec::new(), false)?;
        let http = self
            .transport
            .send(self.post(version, &op.action, envelope, &request.operation_id))
            .await?;
        let reply = self.read(&http)?;
        Ok((http, reply))
    }

    async fn poll(&self, request: PollRequest) -> Result<PollOutcome, DeliveryError> {
        let pull = self.config.pull.as_ref().ok_or_else(|| {
            DeliveryError::permanent("this SOAP instance has no [pull] configuration")
        })?;
        let (http, status) = self.call_poll("status", &request).await?;
        let state = self
            .mapper
            .text(&status, self.idx.pull_state)
            .ok_or_else(|| {
                DeliveryError::permanent(format!(
                    "status reply has nothing at {} (pull.state_path)",
                    pull.state_path
                ))
            })?;
        if pull.done_states.contains(&state) {
            let (_, result) = self.call_poll("result", &request).await?;
            return Ok(PollOutcome::Done(
                self.mapper.map(&result, &self.name, true)?,
            ));
        }
        if pull.failed_states.contains(&state) {
            let reason = self
                .mapper
                .map(&status, &self.name, false)
                .ok()
                .and_then(|r| r.reason)
                .unwrap_or_else(|| format!("the vendor reports state {state}"));
            return Err(DeliveryError {
                vendor_code: Some(state),
                ..DeliveryError::new(FailureClass::Rejection, reason)
            });
        }
        let progress = self.mapper.map(&status, &self.name, false)?;
        let has_news = progress.status.is_some()
            || !progress.external_refs.is_empty()
            || !progress.outcome_data.is_empty();
        let backoff = poll_backoff(pull.initial_interval, pull.max_interval, request.polls);
        Ok(PollOutcome::Pending {
            progress: has_news.then_some(progress),
            token: None,
            poll_after: http
                .retry_after
                .unwrap_or(backoff)
                .max(Duration::from_millis(10)),
        })
    }
}

/// Hides `wsse:Password` contents (text or digest) in a rendered envelope.
fn redact_passwords(envelope: &str) -> String {
    let mut out = String::with_capacity(envelope.len());
    let mut rest = envelope;
    while let Some(start) = rest.find("<wsse:Password") {
        let Some(gt) = rest[start..].find('>') else {
            break;
        };
        let open_end = start + gt + 1;
        out.push_str(&rest[..open_end]);
        let Some(close) = rest[open_end..].find("</wsse:Password>") else {
            rest = &rest[open_end..];
            break;
        };
        out.push_str("&lt;redacted&gt;");
        rest = &rest[open_end + close..];
    }
    out.push_str(rest);
    out
}

#[async_trait]
impl HttpProtocol for Protocol {
    const KIND: &'static str = "soap";

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
        self.build_request(request)
    }

    async fn deliver(&self, request: DeliveryRequest) -> Result<VendorReply, DeliveryError> {
        Protocol::deliver(self, request).await
    }

    async fn poll(&self, request: PollRequest) -> Result<PollOutcome, DeliveryError> {
        Protocol::poll(self, request).await
    }

    fn redact_body(&self, body: &str) -> String {
        redact_passwords(body)
    }

    fn callback_routes(this: &Arc<Self>, sink: Arc<dyn ResultSink>) -> Option<axum::Router> {
        this.callback.as_ref()?;
        Some(callback::router(Arc::clone(this), sink))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_renders() {
        let e = r#"<wsse:Username>u</wsse:Username><wsse:Password Type="x#PasswordText">s3cr3t</wsse:Password><b/>"#;
        let r = redact_passwords(e);
        assert!(!r.contains("s3cr3t"), "{r}");
        assert!(r.ends_with("</wsse:Password><b/>"), "{r}");
    }

    #[test]
    fn content_types_follow_the_version() {
        let h = content_headers(SoapVersion::V11, "urn:a");
        assert_eq!(h[1], ("soapaction", "\"urn:a\"".to_string()));
        let h = content_headers(SoapVersion::V12, "urn:a");
        assert_eq!(
            h[0].1,
            "application/soap+xml; charset=utf-8; action=\"urn:a\""
        );
    }
}
