//! Configuration of a REST adapter instance (`kind = "rest"`).

use crate::model::AdminStatus;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `[adapters.NAME]` with `kind = "rest"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
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

/// Credentials towards the vendor. Secrets are read from the environment or
/// from a file, never written in the configuration itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RestAuth {
    #[default]
    None,
    Basic {
        username: String,
        #[serde(default)]
        password_env: Option<String>,
        #[serde(default)]
        password_file: Option<String>,
    },
    Bearer {
        #[serde(default)]
        token_env: Option<String>,
        #[serde(default)]
        token_file: Option<String>,
    },
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
    /// An array of `{name, media_type, content_base64}` outcome documents.
    #[serde(default)]
    pub documents_pointer: Option<String>,
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
            documents_pointer: None,
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
fn default_status() -> AdminStatus {
    AdminStatus::Registered
}
