//! Configuration of an AMQP adapter instance (`kind = "amqp"`).

use crate::rest::config::{BodyKind, ResponseMapping};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `[adapters.NAME]` with `kind = "amqp"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// Broker URL (`amqp://user@host:5672/vhost` or `amqps://…`), without a
    /// password: that comes from `password_env` or `password_file`.
    pub url: String,
    /// Environment variable holding the broker password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the broker password (relative to the configuration file).
    #[serde(default)]
    pub password_file: Option<String>,
    /// PEM file of the CA chain that signs the broker's certificate, for
    /// `amqps://` towards a private CA (the system roots are used otherwise).
    #[serde(default)]
    pub tls_ca_file: Option<String>,
    /// The connection's name in the broker's management UI and
    /// `rabbitmqctl list_connections`; defaults to `raccordo NAME`.
    #[serde(default)]
    pub connection_name: Option<String>,
    /// TCP + TLS + AMQP handshake timeout.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a publish waits for the broker's confirm; after that the
    /// outcome is unknown and the delivery is re-sent with the same id.
    #[serde(default = "default_confirm_timeout", with = "humantime_serde")]
    pub confirm_timeout: Duration,
    /// Publishes in flight at once (one channel each).
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Backoff between reconnection attempts.
    #[serde(default)]
    pub reconnect: Reconnect,
    /// How a submission is published.
    pub submit: AmqpPublish,
    /// How a withdrawal is published; absent = withdrawals stay in the hub.
    #[serde(default)]
    pub withdraw: Option<AmqpPublish>,
    /// Where the vendor's results come back; absent = publish only.
    #[serde(default)]
    pub consume: Option<AmqpConsume>,
    /// Exchanges, queues and bindings declared (or checked) at every connect.
    #[serde(default)]
    pub topology: Topology,
}

/// `[adapters.NAME.reconnect]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconnect {
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

/// `[adapters.NAME.submit]` / `[adapters.NAME.withdraw]`: one publication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpPublish {
    /// Exchange (a template; `""` is the default exchange).
    pub exchange: String,
    /// Routing key (a template, e.g. `practices.{{ tenant_id }}.{{ service_code }}`).
    pub routing_key: String,
    /// `reply_to` property; defaults to `consume.queue` when consuming.
    #[serde(default)]
    pub reply_to: Option<String>,
    /// `normalized` (the message as JSON), `template` or `empty`.
    #[serde(default)]
    pub body: BodyKind,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub template_inline: Option<String>,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Delivery mode 2: the broker writes the message to disk.
    #[serde(default = "yes")]
    pub persistent: bool,
    /// An unroutable message comes back (and fails the delivery) instead of
    /// being dropped by the broker.
    #[serde(default = "yes")]
    pub mandatory: bool,
}

/// `[adapters.NAME.consume]`: the reply queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConsume {
    pub queue: String,
    /// Unacknowledged replies the broker hands over at once.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// Where unusable replies are re-published (with `x-raccordo-*` headers
    /// saying why) before being acknowledged. Required: nothing is dropped.
    pub dead_letter_exchange: String,
    /// Routing key for those copies; defaults to the queue name.
    #[serde(default)]
    pub dead_letter_routing_key: Option<String>,
    /// Wait before handing a reply back to the broker when the hub cannot
    /// store it right now.
    #[serde(default = "default_requeue_delay", with = "humantime_serde")]
    pub requeue_delay: Duration,
    /// How the reply body maps to the canonical outcome (same keys as the
    /// REST adapter's `response`); absent = the canonical reply contract.
    #[serde(default)]
    pub reply: Option<ResponseMapping>,
}

/// `[adapters.NAME.topology]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// `declare` (create what is missing, fail on a mismatch) or `passive`
    /// (the vendor owns the topology: only check that it exists).
    #[serde(default)]
    pub mode: TopologyMode,
    #[serde(default)]
    pub exchanges: Vec<ExchangeDecl>,
    #[serde(default)]
    pub queues: Vec<QueueDecl>,
    #[serde(default)]
    pub bindings: Vec<BindingDecl>,
}

/// Whether the hub declares the topology or only checks it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopologyMode {
    #[default]
    Declare,
    Passive,
}

/// `[[adapters.NAME.topology.exchanges]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeDecl {
    pub name: String,
    /// `direct`, `fanout`, `topic` or `headers`.
    #[serde(rename = "type", default = "default_exchange_type")]
    pub kind: String,
    #[serde(default = "yes")]
    pub durable: bool,
}

/// Classic or quorum queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
}

/// `[[adapters.NAME.topology.queues]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueDecl {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: QueueType,
    #[serde(default = "yes")]
    pub durable: bool,
    /// `x-dead-letter-exchange`: where the broker sends rejected or expired messages.
    #[serde(default)]
    pub dead_letter_exchange: Option<String>,
    #[serde(default)]
    pub dead_letter_routing_key: Option<String>,
    /// `x-message-ttl`.
    #[serde(default, with = "humantime_serde")]
    pub message_ttl: Option<Duration>,
    /// `x-max-length`.
    #[serde(default)]
    pub max_length: Option<u64>,
    /// `x-overflow`: `drop-head`, `reject-publish` or `reject-publish-dlx`.
    #[serde(default)]
    pub overflow: Option<String>,
    /// Any other `x-` argument (strings, integers, booleans).
    #[serde(default)]
    pub arguments: BTreeMap<String, serde_json::Value>,
}

/// `[[adapters.NAME.topology.bindings]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingDecl {
    pub exchange: String,
    pub queue: String,
    #[serde(default)]
    pub routing_key: String,
}

fn yes() -> bool {
    true
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_confirm_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_concurrency() -> usize {
    16
}
fn default_initial_backoff() -> Duration {
    Duration::from_millis(200)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}
fn default_content_type() -> String {
    "application/json".into()
}
fn default_prefetch() -> u16 {
    32
}
fn default_requeue_delay() -> Duration {
    Duration::from_millis(500)
}
fn default_exchange_type() -> String {
    "topic".into()
}
