//! Configuration of a REST adapter instance (`kind = "rest"`).

use crate::adapter::AdapterError;
use crate::http::config::{BreakerConfig, RateLimitConfig, TlsConfig};
use crate::model::AdminStatus;
use crate::outcome::{Base64Document, validate_outcome_fields};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `[adapters.NAME]` with `kind = "rest"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
    /// The ModI interaction pattern this vendor speaks.
    #[serde(default)]
    pub pattern: Pattern,
    /// Base URL of the vendor API; operation paths are appended to it.
    pub base_url: String,
    /// Whole-request timeout (connect, send, answer). A timeout after the
    /// request left is `OUTCOME_UNKNOWN`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// TCP + TLS connect timeout (a failure here is transient: nothing was sent).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deliveries in flight at once towards this vendor.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Static headers added to every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub auth: RestAuth,
    /// Server CA and client certificate (mutual TLS).
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Requests per second towards this vendor (on top of `max_concurrency`).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Longest a delivery waits for the rate limit or a pause the vendor
    /// asked for (`Retry-After`) before it goes back to the hub's schedule.
    #[serde(default = "default_pace_wait", with = "humantime_serde")]
    pub max_pace_wait: Duration,
    /// Where vendors deliver results (`NONBLOCK_PUSH_REST`).
    #[serde(default)]
    pub callback: Option<CallbackConfig>,
    /// How results are polled (`NONBLOCK_PULL_REST`).
    #[serde(default)]
    pub pull: PullConfig,
    /// Larger replies are refused (permanent failure) without being read.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: u64,
    /// How a submission is sent.
    pub submit: RestOperation,
    /// How a withdrawal is sent; absent = withdrawals are recorded in the hub only.
    #[serde(default)]
    pub withdraw: Option<RestOperation>,
    /// How the vendor's 2xx reply maps to the canonical outcome.
    #[serde(default)]
    pub response: ResponseMapping,
}

/// Credentials towards the vendor (shared with other HTTP adapters).
pub type RestAuth = crate::http::config::AuthConfig;

/// AgID ModI interaction patterns (REST).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Pattern {
    /// The answer carries the outcome.
    #[default]
    #[serde(rename = "BLOCK_REST")]
    Block,
    /// 202 + `X-Correlation-ID`; the result arrives at `X-ReplyTo`.
    #[serde(rename = "NONBLOCK_PUSH_REST")]
    Push,
    /// 202 + `Location`; the hub polls the status URL.
    #[serde(rename = "NONBLOCK_PULL_REST")]
    Pull,
}

/// `[adapters.NAME.callback]`: the hub's side of `NONBLOCK_PUSH_REST`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackConfig {
    /// The hub's HTTP listener as the vendor reaches it (a reverse proxy's
    /// URL); `X-ReplyTo` is `{public_base_url}/callbacks/{instance}/result`.
    pub public_base_url: String,
    /// The HMAC-SHA256 key shared with the vendor.
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<String>,
    /// Callbacks whose timestamp is further from now are refused.
    #[serde(default = "default_max_skew", with = "humantime_serde")]
    pub max_skew: Duration,
    /// Larger callback bodies are refused (413).
    #[serde(default = "default_max_callback")]
    pub max_body_bytes: usize,
}

/// `[adapters.NAME.pull]`: polling for `NONBLOCK_PULL_REST`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullConfig {
    /// First poll after the 202; doubled after each "still working".
    #[serde(default = "default_poll_initial", with = "humantime_serde")]
    pub initial_interval: Duration,
    /// Ceiling of the poll interval.
    #[serde(default = "default_poll_max", with = "humantime_serde")]
    pub max_interval: Duration,
    /// After this long without a result the delivery is `OUTCOME_UNKNOWN`
    /// and follows the retry policy (re-sent with the same operation id).
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for PullConfig {
    fn default() -> Self {
        Self {
            initial_interval: default_poll_initial(),
            max_interval: default_poll_max(),
            max_wait: default_max_wait(),
        }
    }
}

/// One vendor operation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestOperation {
    #[serde(default = "default_method")]
    pub method: String,
    /// Path after `base_url`; a template (e.g. `/pratiche/{{ practice_id }}`).
    #[serde(default)]
    pub path: String,
    /// `normalized` (the normalized message as JSON) or `template`.
    #[serde(default)]
    pub body: BodyKind,
    /// Template file (relative to the configuration file), for `body = "template"`.
    #[serde(default)]
    pub template: Option<String>,
    /// Inline template text, instead of `template`.
    #[serde(default)]
    pub template_inline: Option<String>,
    /// Query parameters; each value is a template (encoded when sent).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default = "default_content_type")]
    pub content_type: String,
}

/// What the request body is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyKind {
    #[default]
    Normalized,
    Template,
    /// No body (e.g. `DELETE`).
    Empty,
}

/// JSON pointers (RFC 6901) into the vendor's reply, and the table from the
/// vendor's status codes to canonical statuses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseMapping {
    /// Where the vendor's status code is (e.g. `/esito`).
    #[serde(default)]
    pub status_pointer: Option<String>,
    /// Vendor status code → canonical status (`OK = "APPROVED"`).
    #[serde(default)]
    pub status_map: BTreeMap<String, AdminStatus>,
    /// The status when the reply carries none (no pointer, or nothing there).
    #[serde(default = "default_status")]
    pub default_status: AdminStatus,
    /// A human-readable reason (e.g. `/motivazione`).
    #[serde(default)]
    pub reason_pointer: Option<String>,
    /// The protocol number assigned by the administration.
    #[serde(default)]
    pub protocol_pointer: Option<String>,
    /// The vendor's own id of the practice.
    #[serde(default)]
    pub reference_pointer: Option<String>,
    /// When the vendor says it happened (RFC 3339 or `YYYY-MM-DD`): the
    /// status change's time and the protocol's date.
    #[serde(default)]
    pub date_pointer: Option<String>,
    /// An array of outcome documents: `{name, media_type, content_base64}`,
    /// or `{name, media_type, url}` fetched from the vendor (same origin as
    /// `base_url`) and stored with their SHA-256.
    #[serde(default)]
    pub documents_pointer: Option<String>,
    /// Pointers that must be present in every successful reply; a reply
    /// without one is a permanent mapping error naming it.
    #[serde(default)]
    pub required_pointers: Vec<String>,
    /// Outcome data: a field of the service's `outcome_data` declaration →
    /// the JSON pointer of its value (`importo_dovuto = "/importo"`).
    /// Absent or null values are left out.
    #[serde(default)]
    pub outcome_data: BTreeMap<String, String>,
    /// An object whose members are all outcome data, taken whole (the
    /// canonical reply's `/outcome_data`); `outcome_data` entries win.
    #[serde(default)]
    pub outcome_data_pointer: Option<String>,
    /// Outcome documents sent as one base64 field each, with the name and
    /// media type given here (`field` is a JSON pointer).
    #[serde(default)]
    pub base64_documents: Vec<Base64Document>,
    /// Vendor error codes (problem+json `code` or `type`) → failure class
    /// (`transient`, `permanent`, `rejection`), overriding the HTTP status.
    #[serde(default)]
    pub error_map: BTreeMap<String, ErrorClass>,
}

impl ResponseMapping {
    /// Checks the outcome data and base64 document entries; `prefix` is the
    /// mapping's configuration key (`response`, `consume.reply`).
    pub fn validate_outcome(&self, prefix: &str) -> Result<(), AdapterError> {
        let error = |(key, reason): (String, String)| AdapterError::new(key, reason);
        validate_outcome_fields(&format!("{prefix}.outcome_data"), &self.outcome_data)
            .map_err(error)?;
        for (i, d) in self.base64_documents.iter().enumerate() {
            d.validate(&format!("{prefix}.base64_documents[{i}]"))
                .map_err(error)?;
        }
        Ok(())
    }
}

/// A failure class an engineer can assign to a vendor error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Transient,
    Permanent,
    /// The back office refused the practice on its merits: its outcome.
    Rejection,
}

impl Default for ResponseMapping {
    fn default() -> Self {
        Self {
            status_pointer: None,
            status_map: BTreeMap::new(),
            default_status: default_status(),
            reason_pointer: None,
            protocol_pointer: None,
            reference_pointer: None,
            date_pointer: None,
            documents_pointer: None,
            required_pointers: Vec::new(),
            outcome_data: BTreeMap::new(),
            outcome_data_pointer: None,
            base64_documents: Vec::new(),
            error_map: BTreeMap::new(),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_concurrency() -> usize {
    16
}
fn default_max_response() -> u64 {
    16 * 1024 * 1024
}
fn default_method() -> String {
    "POST".into()
}
fn default_content_type() -> String {
    "application/json".into()
}
fn default_pace_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_max_skew() -> Duration {
    Duration::from_secs(300)
}
fn default_max_callback() -> usize {
    16 * 1024 * 1024
}
fn default_poll_initial() -> Duration {
    Duration::from_secs(2)
}
fn default_poll_max() -> Duration {
    Duration::from_secs(300)
}
fn default_max_wait() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_status() -> AdminStatus {
    AdminStatus::Registered
}
