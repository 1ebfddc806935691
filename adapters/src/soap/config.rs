//! Configuration of a SOAP adapter instance (`kind = "soap"`).

use super::xml::Limits;
use crate::http::config::{AuthConfig, BreakerConfig, RateLimitConfig, TlsConfig};
use crate::model::AdminStatus;
pub use crate::rest::config::ErrorClass;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `[adapters.NAME]` with `kind = "soap"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoapConfig {
    /// The AgID ModI SOAP interaction pattern.
    #[serde(default)]
    pub pattern: Pattern,
    /// The service endpoint (the WSDL's `soap:address`).
    pub endpoint: String,
    /// `1.1` (`text/xml` + `SOAPAction`) or `1.2` (`application/soap+xml;
    /// action=…`); an operation may override it.
    #[serde(default)]
    pub soap_version: SoapVersion,
    /// Prefix → namespace URI, for every path in this instance (responses,
    /// faults, pull) — the document's own prefixes do not matter.
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Static HTTP headers on every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// HTTP-level credentials (Basic, bearer, OAuth2…), as for REST.
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default = "default_pace_wait", with = "humantime_serde")]
    pub max_pace_wait: Duration,
    /// Larger replies are refused without being read.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: u64,
    /// Bounds on every XML document read (replies, callbacks).
    #[serde(default)]
    pub limits: Limits,
    /// WS-Security steps, applied in order (`[[adapters.NAME.security]]`).
    #[serde(default)]
    pub security: Vec<SecurityStepConfig>,
    /// WS-Addressing headers; absent = none.
    #[serde(default)]
    pub addressing: Option<AddressingConfig>,
    pub submit: SoapOperation,
    #[serde(default)]
    pub withdraw: Option<SoapOperation>,
    /// How a reply (or a pushed result) maps to the canonical outcome.
    #[serde(default)]
    pub response: ResponseMapping,
    /// How faults are classified.
    #[serde(default)]
    pub faults: FaultMapping,
    /// `NONBLOCK_PULL_SOAP`: the status and result operations.
    #[serde(default)]
    pub pull: Option<PullConfig>,
    /// `NONBLOCK_PUSH_SOAP`: the hub's callback service.
    #[serde(default)]
    pub push: Option<PushConfig>,
}

/// AgID ModI SOAP interaction patterns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Pattern {
    /// The reply carries the outcome.
    #[default]
    #[serde(rename = "BLOCK_SOAP")]
    Block,
    /// The reply carries a correlation id; the hub calls status(id) and result(id).
    #[serde(rename = "NONBLOCK_PULL_SOAP")]
    Pull,
    /// The reply acknowledges; the vendor calls the hub's SOAP callback
    /// with `X-Correlation-ID` in a SOAP header.
    #[serde(rename = "NONBLOCK_PUSH_SOAP")]
    Push,
}

/// The SOAP version of an envelope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SoapVersion {
    #[default]
    #[serde(rename = "1.1")]
    V11,
    #[serde(rename = "1.2")]
    V12,
}

impl SoapVersion {
    /// The envelope namespace.
    pub fn namespace(self) -> &'static str {
        match self {
            Self::V11 => super::xml::SOAP11_NS,
            Self::V12 => super::xml::SOAP12_NS,
        }
    }

    /// `1.1` or `1.2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V11 => "1.1",
            Self::V12 => "1.2",
        }
    }
}

/// One vendor operation (document/literal).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoapOperation {
    /// The SOAP action (`SOAPAction` in 1.1, `action=` in 1.2, `wsa:Action`).
    #[serde(default)]
    pub action: String,
    /// Overrides the instance's `soap_version`.
    #[serde(default)]
    pub soap_version: Option<SoapVersion>,
    /// `template` (the Body's content from a template) or `normalized`
    /// (the normalized message's XML form).
    #[serde(default)]
    pub body: BodyKind,
    /// Template file (relative to the configuration file); XML-escaped.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub template_inline: Option<String>,
    /// SOAP header blocks, each a template (XML-escaped) rendering one element.
    #[serde(default)]
    pub soap_headers: Vec<String>,
}

/// What the Body carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyKind {
    #[default]
    Template,
    Normalized,
}

/// One WS-Security step (`[[adapters.NAME.security]]`, tagged by `type`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SecurityStepConfig {
    /// `wsu:Timestamp` with `Created` and `Expires = Created + ttl`.
    Timestamp {
        #[serde(default = "default_ttl", with = "humantime_serde")]
        ttl: Duration,
    },
    /// `wsse:UsernameToken`.
    UsernameToken {
        username: String,
        #[serde(default)]
        password_env: Option<String>,
        #[serde(default)]
        password_file: Option<String>,
        /// `digest` (PasswordDigest, with Nonce and Created) or `text`.
        #[serde(default)]
        password_type: PasswordType,
    },
}

/// UsernameToken password forms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordType {
    /// Base64(SHA-1(nonce + created + password)): the password never travels.
    #[default]
    Digest,
    /// The password in clear (only over TLS).
    Text,
}

/// `[adapters.NAME.addressing]`: WS-Addressing 1.0 headers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressingConfig {
    /// `wsa:To`; default the endpoint.
    #[serde(default)]
    pub to: Option<String>,
    /// `wsa:ReplyTo/wsa:Address`; default the anonymous address (or the
    /// hub's callback URL in `NONBLOCK_PUSH_SOAP`).
    #[serde(default)]
    pub reply_to: Option<String>,
}

/// Paths into the reply (namespace prefixes from `namespaces`) and the
/// table from vendor codes to canonical statuses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseMapping {
    /// The vendor's status code (e.g. `c:rispostaCertificato/c:esito`).
    #[serde(default)]
    pub status_path: Option<String>,
    #[serde(default)]
    pub status_map: BTreeMap<String, AdminStatus>,
    #[serde(default = "default_status")]
    pub default_status: AdminStatus,
    #[serde(default)]
    pub reason_path: Option<String>,
    #[serde(default)]
    pub protocol_path: Option<String>,
    #[serde(default)]
    pub reference_path: Option<String>,
    /// RFC 3339 or `YYYY-MM-DD`.
    #[serde(default)]
    pub date_path: Option<String>,
    /// Outcome documents (base64 text or an MTOM `xop:Include`).
    #[serde(default)]
    pub documents: Vec<DocumentMapping>,
    /// Paths every successful reply must have.
    #[serde(default)]
    pub required_paths: Vec<String>,
    /// Outcome data: a field of the service's `outcome_data` declaration →
    /// the path of its element (`importo_dovuto = "t:esito/t:importo"`),
    /// whose text is the value (the hub types it by the declaration).
    #[serde(default)]
    pub outcome_data: BTreeMap<String, String>,
}

impl Default for ResponseMapping {
    fn default() -> Self {
        Self {
            status_path: None,
            status_map: BTreeMap::new(),
            default_status: default_status(),
            reason_path: None,
            protocol_path: None,
            reference_path: None,
            date_path: None,
            documents: Vec::new(),
            required_paths: Vec::new(),
            outcome_data: BTreeMap::new(),
        }
    }
}

/// Where outcome documents are (`[[adapters.NAME.response.documents]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentMapping {
    /// Each match is one document.
    pub path: String,
    /// File name; several matches get `-2`, `-3`… before the extension.
    #[serde(default = "default_doc_name")]
    pub name: String,
    /// An attribute of the element holding the file name, preferred to `name`.
    #[serde(default)]
    pub name_attribute: Option<String>,
    #[serde(default = "default_media_type")]
    pub media_type: String,
    /// An attribute holding the media type, preferred to `media_type`.
    #[serde(default)]
    pub media_type_attribute: Option<String>,
}

/// `[adapters.NAME.faults]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultMapping {
    /// The vendor's own error code inside the fault (e.g.
    /// `*:Fault/*:detail/e:errore/e:codice`).
    #[serde(default)]
    pub code_path: Option<String>,
    /// Vendor code, 1.2 subcode or fault code (`soap:Server.Busy`, or its
    /// local part) → failure class, overriding Server/Receiver = transient,
    /// Client/Sender = permanent.
    #[serde(default)]
    pub map: BTreeMap<String, ErrorClass>,
}

/// `[adapters.NAME.pull]`: `NONBLOCK_PULL_SOAP`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullConfig {
    /// Where the request's reply carries the correlation id.
    pub correlation_path: String,
    /// status(id): its template sees `correlation_id`, `operation_id`.
    pub status: PollOperation,
    /// Where status's reply carries the state.
    pub state_path: String,
    /// States meaning "the result is ready".
    pub done_states: Vec<String>,
    /// States meaning "failed": the reply is classified as a rejection
    /// unless it is a fault.
    #[serde(default)]
    pub failed_states: Vec<String>,
    /// result(id): its reply is mapped with `response`.
    pub result: PollOperation,
    #[serde(default = "default_poll_initial", with = "humantime_serde")]
    pub initial_interval: Duration,
    #[serde(default = "default_poll_max", with = "humantime_serde")]
    pub max_interval: Duration,
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
}

/// status(id) or result(id).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollOperation {
    #[serde(default)]
    pub action: String,
    /// The Body's content; `{{ correlation_id }}` and `{{ operation_id }}`.
    pub template_inline: String,
}

/// `[adapters.NAME.push]`: the hub's callback service (`NONBLOCK_PUSH_SOAP`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// The hub's HTTP listener as the vendor reaches it; the service is at
    /// `{public_base_url}/callbacks/{instance}`, its WSDL at `…?wsdl`.
    pub public_base_url: String,
    /// Namespace of the `X-ReplyTo` / `X-Correlation-ID` SOAP headers sent.
    #[serde(default = "default_modi_ns")]
    pub header_namespace: String,
    /// The callback's credentials: the vendor must send a WS-Security
    /// UsernameToken (digest or text) with this user and password.
    pub username: String,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<String>,
    /// UsernameTokens whose `Created` is further from now are refused.
    #[serde(default = "default_max_skew", with = "humantime_serde")]
    pub max_skew: Duration,
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
fn default_pace_wait() -> Duration {
    Duration::from_secs(30)
}
fn default_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_status() -> AdminStatus {
    AdminStatus::Registered
}
fn default_doc_name() -> String {
    "document.pdf".into()
}
fn default_media_type() -> String {
    "application/pdf".into()
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
fn default_max_skew() -> Duration {
    Duration::from_secs(300)
}
fn default_modi_ns() -> String {
    "http://www.agid.gov.it/modi".into()
}
