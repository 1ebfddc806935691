//! The AMQP adapter: publishes practices to a vendor through a RabbitMQ
//! (AMQP 0-9-1) broker and consumes the vendor's results from a reply queue.
//!
//! - Publishing: exchange and routing key per operation (templates),
//!   persistent, `mandatory`, **publisher confirms**: `deliver` returns only
//!   after the broker's ack. A nack or a connection lost before the confirm
//!   is transient and the hub re-sends with the same `message_id` (the
//!   operation id); an unroutable message is a permanent failure.
//! - Consuming ([`consume`]): bounded prefetch, apply through the hub's sink,
//!   ack only after it stored the result; unusable replies go to the
//!   dead-letter exchange with the reason ([`reply`] is the contract).
//! - Recovery ([`link`]): reconnect with backoff, re-declare the
//!   [`topology`], re-create the consumer; health says where it stands.
//!
//! The vendor-facing contract is in `docs/adapters/amqp.md`.

pub mod config;
mod consume;
mod link;
pub mod reply;
pub mod topology;

use crate::adapter::{
    Adapter, AdapterError, AdapterHealth, DeliveryError, DeliveryRequest, FailureClass, ResultSink,
    VendorReply,
};
use crate::model::Operation;
use crate::rest::config::BodyKind;
use crate::template::{BodyTemplate, Escape, Templates};
use async_trait::async_trait;
use config::{AmqpConfig, AmqpPublish};
use lapin::options::BasicPublishOptions;
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Confirmation, ErrorKind};
use link::Link;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

/// A configured AMQP adapter instance.
pub struct AmqpAdapter {
    link: Arc<Link>,
    templates: Templates,
    /// Dropping the adapter drops the sender and stops the supervisor.
    _stop: watch::Sender<()>,
    stop_rx: watch::Receiver<()>,
}

impl std::fmt::Debug for AmqpAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URI carries the password: only the endpoint is printed.
        f.debug_struct("AmqpAdapter")
            .field("name", &self.link.name)
            .field("endpoint", &self.link.endpoint)
            .finish_non_exhaustive()
    }
}

impl AmqpAdapter {
    /// Checks the configuration, reads the password and compiles templates.
    /// Connects nothing: the connection starts with the inbound side or the
    /// first delivery, so `raccordo check` can build every adapter offline.
    pub fn build(name: &str, config: AmqpConfig, config_dir: &Path) -> Result<Self, AdapterError> {
        let mut uri: AMQPUri = config
            .url
            .parse()
            .map_err(|e| AdapterError::new("url", format!("not an AMQP URL: {e}")))?;
        if url_has_password(&config.url) {
            return Err(AdapterError::new(
                "url",
                "must not contain a password: use password_env or password_file",
            ));
        }
        if let Some(password) = read_password(&config, config_dir)? {
            uri.authority.userinfo.password = password;
        }
        let mut tls = OwnedTLSConfig::default();
        if let Some(ca) = &config.tls_ca_file {
            if uri.scheme != AMQPScheme::AMQPS {
                return Err(AdapterError::new(
                    "tls_ca_file",
                    "is set but url is not amqps://",
                ));
            }
            let path = config_dir.join(ca);
            let pem = std::fs::read_to_string(&path).map_err(|e| {
                AdapterError::new(
                    "tls_ca_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(AdapterError::new(
                    "tls_ca_file",
                    "contains no PEM certificate",
                ));
            }
            tls.cert_chain = Some(pem);
        }
        if config.max_concurrency == 0 {
            return Err(AdapterError::new("max_concurrency", "must be at least 1"));
        }
        if config.confirm_timeout.is_zero() || config.connect_timeout.is_zero() {
            return Err(AdapterError::new(
                "confirm_timeout",
                "confirm_timeout and connect_timeout must be above zero",
            ));
        }
        if config.reconnect.initial_backoff > config.reconnect.max_backoff {
            return Err(AdapterError::new(
                "reconnect.initial_backoff",
                "is larger than reconnect.max_backoff",
            ));
        }
        let mut templates = Templates::new();
        add_templates(&mut templates, "submit", &config.submit, config_dir)?;
        if let Some(w) = &config.withdraw {
            add_templates(&mut templates, "withdraw", w, config_dir)?;
        }
        let mapping = match &config.consume {
            None => reply::canonical_mapping(),
            Some(c) => {
                if c.queue.is_empty() {
                    return Err(AdapterError::new("consume.queue", "is empty"));
                }
                if c.prefetch == 0 {
                    return Err(AdapterError::new(
                        "consume.prefetch",
                        "must be at least 1 (0 would mean unbounded)",
                    ));
                }
                for (key, value) in [
                    ("consume.queue", Some(&c.queue)),
                    (
                        "consume.dead_letter_exchange",
                        Some(&c.dead_letter_exchange),
                    ),
                    (
                        "consume.dead_letter_routing_key",
                        c.dead_letter_routing_key.as_ref(),
                    ),
                ] {
                    if let Some(v) = value {
                        ShortString::try_new(v.as_str())
                            .map_err(|e| AdapterError::new(key, e.to_string()))?;
                    }
                }
                match &c.reply {
                    None => reply::canonical_mapping(),
                    Some(m) => {
                        if m.status_pointer.is_some() && m.status_map.is_empty() {
                            return Err(AdapterError::new(
                                "consume.reply.status_map",
                                "is empty: map the vendor's status codes to canonical statuses",
                            ));
                        }
                        m.validate_outcome("consume.reply")?;
                        m.clone()
                    }
                }
            }
        };
        topology::validate(&config.topology)?;
        let (stop, stop_rx) = watch::channel(());
        Ok(Self {
            link: Arc::new(Link::new(name.to_string(), config, uri, tls, mapping)),
            templates,
            _stop: stop,
            stop_rx,
        })
    }

    /// Deliveries this instance runs at once.
    pub fn max_concurrency(&self) -> usize {
        self.link.config.max_concurrency
    }

    fn operation(&self, op: Operation) -> Option<&AmqpPublish> {
        match op {
            Operation::Submit => Some(&self.link.config.submit),
            Operation::Withdraw => self.link.config.withdraw.as_ref(),
        }
    }

    /// The message `request` is published as, without sending it.
    fn publication(&self, request: &DeliveryRequest) -> Result<Publication, DeliveryError> {
        let name = request.operation().as_str();
        let op = self.operation(request.operation()).ok_or_else(|| {
            DeliveryError::permanent(format!(
                "adapter '{}' has no '{name}' publication configured",
                self.link.name
            ))
        })?;
        let render = |field: &str, source: &str| {
            self.templates
                .render_str(source, request)
                .map_err(|e| DeliveryError::permanent(format!("{name}.{field} template: {e}")))
                .and_then(|v| short(&format!("{name}.{field}"), &v))
        };
        let exchange = render("exchange", &op.exchange)?;
        let routing_key = render("routing_key", &op.routing_key)?;
        let body = match op.body {
            BodyKind::Empty => Vec::new(),
            BodyKind::Normalized => serde_json::to_vec(&*request.message)
                .map_err(|e| DeliveryError::permanent(format!("cannot encode message: {e}")))?,
            BodyKind::Template => self
                .templates
                .render(name, request)
                .map_err(|e| DeliveryError::permanent(format!("{name} template: {e}")))?
                .into_bytes(),
        };
        Ok(Publication {
            exchange,
            routing_key,
            mandatory: op.mandatory,
            properties: self.properties(op, request)?,
            body,
        })
    }

    fn properties(
        &self,
        op: &AmqpPublish,
        request: &DeliveryRequest,
    ) -> Result<BasicProperties, DeliveryError> {
        let m = &request.message;
        let mut headers = FieldTable::default();
        headers.insert("tenant".into(), long(&m.tenant_id));
        headers.insert("service".into(), long(&m.service_code));
        headers.insert("operation".into(), long(request.operation().as_str()));
        headers.insert(
            "attempt".into(),
            AMQPValue::LongLongInt(i64::from(request.attempt)),
        );
        if let Some(traceparent) = &request.traceparent {
            headers.insert("traceparent".into(), long(traceparent));
        }
        let mut props = BasicProperties::default()
            .with_message_id(short("message_id", request.operation_id())?)
            .with_correlation_id(short("correlation_id", &m.practice_id)?)
            .with_content_type(short("content_type", &op.content_type)?)
            .with_delivery_mode(if op.persistent { 2 } else { 1 })
            .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
            .with_type(short("type", &m.schema)?)
            .with_app_id("raccordo".into())
            .with_headers(headers);
        let reply_to = op
            .reply_to
            .as_ref()
            .or(self.link.config.consume.as_ref().map(|c| &c.queue));
        if let Some(r) = reply_to {
            props = props.with_reply_to(short("reply_to", r)?);
        }
        Ok(props)
    }
}

/// One message as it is published: where, with which properties, what.
struct Publication {
    exchange: ShortString,
    routing_key: ShortString,
    mandatory: bool,
    properties: BasicProperties,
    body: Vec<u8>,
}

impl Publication {
    /// The publication as text for `raccordo route render`: the broker
    /// (never its password), exchange, routing key, properties, headers
    /// and body.
    fn render(&self, endpoint: &str) -> String {
        let p = &self.properties;
        let mut out = format!("AMQP publish to {endpoint}\n");
        out.push_str(&format!("exchange: {}\n", self.exchange));
        out.push_str(&format!("routing_key: {}\n", self.routing_key));
        out.push_str(&format!("mandatory: {}\n", self.mandatory));
        let text = |v: &Option<ShortString>| v.as_ref().map(ShortString::to_string);
        let delivery_mode = p.delivery_mode().map(|m| match m {
            2 => "2 (persistent)".to_string(),
            other => format!("{other} (transient)"),
        });
        for (name, value) in [
            ("message_id", text(p.message_id())),
            ("correlation_id", text(p.correlation_id())),
            ("content_type", text(p.content_type())),
            ("delivery_mode", delivery_mode),
            ("timestamp", p.timestamp().map(|t| t.to_string())),
            ("type", text(p.kind())),
            ("app_id", text(p.app_id())),
            ("reply_to", text(p.reply_to())),
        ] {
            if let Some(v) = value {
                out.push_str(&format!("property {name}: {v}\n"));
            }
        }
        if let Some(headers) = p.headers() {
            for (k, v) in headers.inner() {
                out.push_str(&format!("header {k}: {}\n", header_text(v)));
            }
        }
        out.push('\n');
        out.push_str(&String::from_utf8_lossy(&self.body));
        out.push('\n');
        out
    }
}

/// A header value as text (the hub sets strings and integers).
fn header_text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

fn short(what: &str, value: &str) -> Result<ShortString, DeliveryError> {
    ShortString::try_new(value)
        .map_err(|e| DeliveryError::permanent(format!("{what} is too long for AMQP: {e}")))
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// `amqp://user:secret@host` — the userinfo before `@` has a colon.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

fn read_password(config: &AmqpConfig, config_dir: &Path) -> Result<Option<String>, AdapterError> {
    match (&config.password_env, &config.password_file) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(AdapterError::new(
            "password_env",
            "set either password_env or password_file, not both",
        )),
        (Some(var), None) => std::env::var(var).map(Some).map_err(|_| {
            AdapterError::new(
                "password_env",
                format!("environment variable {var} is not set"),
            )
        }),
        (None, Some(path)) => std::fs::read_to_string(config_dir.join(path))
            .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
            .map_err(|e| AdapterError::new("password_file", format!("cannot read {path}: {e}"))),
    }
}

fn add_templates(
    templates: &mut Templates,
    name: &str,
    op: &AmqpPublish,
    config_dir: &Path,
) -> Result<(), AdapterError> {
    // Exchange and routing key are rendered per message; compile once now
    // so syntax errors surface at check time.
    let mut probe = Templates::new();
    for (field, source) in [("exchange", &op.exchange), ("routing_key", &op.routing_key)] {
        probe
            .add(field, source.clone(), Escape::None)
            .map_err(|e| AdapterError::new(format!("{name}.{field}"), e))?;
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

/// A publish that failed before its confirm.
fn classify_publish_error(e: &lapin::Error, exchange: &str) -> DeliveryError {
    if let ErrorKind::ProtocolError(amqp) = e.kind() {
        match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => {
                return DeliveryError::permanent(format!(
                    "exchange '{exchange}' does not exist on the broker ({e})"
                ));
            }
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                return DeliveryError::permanent(format!(
                    "the broker refused publishing to exchange '{exchange}' ({e})"
                ));
            }
            _ => {}
        }
    }
    DeliveryError::transient(format!(
        "connection lost before the broker confirmed ({e}); re-sent with the same message_id"
    ))
}

#[async_trait]
impl Adapter for AmqpAdapter {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    fn supports(&self, operation: Operation) -> bool {
        self.operation(operation).is_some()
    }

    async fn deliver(&self, request: DeliveryRequest) -> Result<VendorReply, DeliveryError> {
        self.link.ensure_started(&self.stop_rx);
        let Publication {
            exchange,
            routing_key,
            mandatory,
            properties,
            body,
        } = self.publication(&request)?;

        let session = self
            .link
            .session(self.link.config.connect_timeout)
            .await
            .ok_or_else(|| {
                let why = self
                    .link
                    .health()
                    .reason()
                    .map_or_else(|| "not connected".to_string(), str::to_string);
                DeliveryError::transient(format!(
                    "broker {} not available: {why}",
                    self.link.endpoint
                ))
            })?;
        let (channel, permit) = session.checkout().await.map_err(|e| {
            self.link.report_broken();
            DeliveryError::transient(format!("cannot open a publishing channel: {e}"))
        })?;
        let publish = async {
            channel
                .basic_publish(
                    exchange.clone(),
                    routing_key.clone(),
                    BasicPublishOptions {
                        mandatory,
                        immediate: false,
                    },
                    &body,
                    properties,
                )
                .await?
                .await
        };
        let confirmation = match tokio::time::timeout(self.link.config.confirm_timeout, publish)
            .await
        {
            // The channel still has a confirm pending: it is not reused.
            Err(_) => {
                return Err(DeliveryError::new(
                    FailureClass::OutcomeUnknown,
                    format!(
                        "no confirm from the broker within {:?}; re-sent with the same message_id",
                        self.link.config.confirm_timeout
                    ),
                ));
            }
            Ok(Err(e)) => {
                self.link.report_broken();
                return Err(classify_publish_error(&e, exchange.as_str()));
            }
            Ok(Ok(c)) => c,
        };
        session.checkin(channel);
        drop(permit);
        match confirmation {
            Confirmation::Ack(None) => Ok(VendorReply::default()),
            Confirmation::Ack(Some(returned)) => Err(DeliveryError::permanent(format!(
                "unroutable: the broker returned the message ({} {}): nothing is bound to exchange '{}' for routing key '{}'",
                returned.reply_code, returned.reply_text, exchange, routing_key
            ))),
            Confirmation::Nack(_) => Err(DeliveryError::transient(
                "the broker refused the message (nack: e.g. a full queue that rejects publishes); re-sent with the same message_id",
            )),
            Confirmation::NotRequested => Err(DeliveryError::new(
                FailureClass::OutcomeUnknown,
                "the channel was not in confirm mode",
            )),
        }
    }

    async fn start_inbound(&self, sink: Arc<dyn ResultSink>) -> Result<(), AdapterError> {
        if self.link.config.consume.is_some() {
            self.link.set_sink(sink);
        }
        // Connect now: publishing and consuming share the connection.
        self.link.ensure_started(&self.stop_rx);
        Ok(())
    }

    fn render(&self, request: &DeliveryRequest) -> Option<Result<String, DeliveryError>> {
        Some(
            self.publication(request)
                .map(|p| p.render(&self.link.endpoint)),
        )
    }

    fn health(&self) -> AdapterHealth {
        self.link.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(patch: serde_json::Value) -> Result<AmqpAdapter, AdapterError> {
        let mut cfg = json!({
            "url": "amqp://raccordo@127.0.0.1:5672/%2f",
            "submit": {"exchange": "practices", "routing_key": "p.{{ tenant_id }}"},
            "consume": {"queue": "results", "dead_letter_exchange": "dlx"},
        });
        for (k, v) in patch.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        let config: AmqpConfig = serde_json::from_value(cfg).unwrap();
        AmqpAdapter::build("mq", config, Path::new("."))
    }

    fn key_of(patch: serde_json::Value) -> String {
        build(patch).map(|_| ()).unwrap_err().key
    }

    #[test]
    fn a_valid_configuration_builds_without_connecting() {
        let adapter = build(json!({})).unwrap();
        assert!(matches!(adapter.health(), AdapterHealth::Degraded(_)));
        assert!(adapter.supports(Operation::Submit));
        assert!(!adapter.supports(Operation::Withdraw));
        assert!(!format!("{adapter:?}").contains("guest"));
    }

    #[test]
    fn configuration_errors_name_the_key() {
        assert_eq!(key_of(json!({"url": "http://x"})), "url");
        assert_eq!(key_of(json!({"url": "amqp://u:secret@h/%2f"})), "url");
        assert_eq!(
            key_of(json!({"password_env": "RACCORDO_TEST_SURELY_UNSET_VAR"})),
            "password_env"
        );
        assert_eq!(
            key_of(json!({"password_file": "/nonexistent/secret"})),
            "password_file"
        );
        assert_eq!(key_of(json!({"tls_ca_file": "ca.pem"})), "tls_ca_file");
        assert_eq!(key_of(json!({"max_concurrency": 0})), "max_concurrency");
        assert_eq!(
            key_of(json!({"submit": {"exchange": "x", "routing_key": "{{ broken"}})),
            "submit.routing_key"
        );
        assert_eq!(
            key_of(json!({"submit": {"exchange": "x", "routing_key": "k", "body": "template"}})),
            "submit.template"
        );
        assert_eq!(
            key_of(json!({"consume": {"queue": "q", "dead_letter_exchange": "d", "prefetch": 0}})),
            "consume.prefetch"
        );
        assert_eq!(
            key_of(
                json!({"consume": {"queue": "q", "dead_letter_exchange": "d",
                "reply": {"status_pointer": "/esito"}}})
            ),
            "consume.reply.status_map"
        );
        assert_eq!(
            key_of(
                json!({"topology": {"queues": [{"name": "q", "type": "quorum", "durable": false}]}})
            ),
            "topology.queues[0].durable"
        );
        assert_eq!(
            key_of(json!({"topology": {"exchanges": [{"name": "e", "type": "fan"}]}})),
            "topology.exchanges[0].type"
        );
        assert_eq!(
            key_of(json!({"topology": {"queues": [{"name": "q", "arguments": {"x-list": [1]}}]}})),
            "topology.queues[0].arguments.x-list"
        );
    }

    #[test]
    fn passwords_in_urls_are_refused() {
        assert!(url_has_password("amqp://u:p@h:5672/%2f"));
        assert!(!url_has_password("amqp://u@h:5672/%2f"));
        assert!(!url_has_password("amqp://h:5672/%2f"));
        assert!(!url_has_password("amqps://h/v?heartbeat=10"));
    }
}
