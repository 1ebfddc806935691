//! `[clients.NAME]` and `[security]`: who may call the API.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A front office (portal, app back end): submits and reads practices
    /// of its tenants, for any applicant.
    Frontoffice,
    /// A desk operator's dashboard: reads and acts for its tenants; its
    /// operator id is recorded on every action.
    Operator,
    /// A portal acting for one authenticated citizen: every call is
    /// confined to the practices whose applicant is that citizen.
    Citizen,
    /// Operations: dead letters, replay, hub status.
    Admin,
}

impl Role {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Frontoffice => "frontoffice",
            Self::Operator => "operator",
            Self::Citizen => "citizen",
            Self::Admin => "admin",
        }
    }
}

/// `[clients.NAME]`: one caller of the API and how it proves who it is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub role: Role,
    /// ISTAT codes of the tenants it acts for; `["*"]` for all.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Hex SHA-256 of the client's API key (sent as `x-api-key`). Only the
    /// hash is configured: the key itself never sits in a file of the hub.
    #[serde(default)]
    pub api_key_sha256: Option<String>,
    /// Hex SHA-256 of the client certificate it presents over mutual TLS
    /// (`openssl x509 -in client.pem -outform der | sha256sum`); needs
    /// `hub.tls.client_ca_file` to verify the certificate.
    #[serde(default)]
    pub certificate_sha256: Option<String>,
    /// Bearer tokens (JWT) this client presents.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// For operators authenticated by API key: the operator id recorded on
    /// their actions (with a JWT the `operator_claim` gives it).
    #[serde(default)]
    pub operator_id: Option<String>,
    /// Sustained calls per second before the client is slowed down.
    #[serde(default = "default_rate")]
    pub requests_per_second: u32,
    /// Calls allowed in a burst above the sustained rate.
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_rate() -> u32 {
    100
}

/// `[clients.NAME.jwt]`: how the client's tokens are verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of).
    pub audience: String,
    /// Public keys as a JWKS file (RS256, RS384, RS512, ES256, ES384, PS256,
    /// EdDSA); tokens name their key with `kid`.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A shared HS256 secret, from the environment (for tests and simple
    /// set-ups; prefer asymmetric keys).
    #[serde(default)]
    pub hs256_secret_env: Option<String>,
    /// A shared HS256 secret, from a file.
    #[serde(default)]
    pub hs256_secret_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Citizens: the claim carrying the fiscal code (`fiscal_number` in
    /// SPID/CIE tokens; a `TINIT-` prefix is removed).
    #[serde(default = "default_fiscal_code_claim")]
    pub fiscal_code_claim: String,
    /// Operators: the claim carrying the operator id.
    #[serde(default = "default_operator_claim")]
    pub operator_claim: String,
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}

fn default_fiscal_code_claim() -> String {
    "fiscal_number".into()
}

fn default_operator_claim() -> String {
    "sub".into()
}

/// `[security]`: settings for every caller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Accept calls without credentials when no client is declared. The
    /// hub refuses to start with an open API on a non-loopback address
    /// unless this is set explicitly.
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// Failed authentications from one address before it is refused for
    /// the rest of `auth_failure_window`.
    #[serde(default = "default_failures")]
    pub max_auth_failures: u32,
    #[serde(default = "default_window", with = "humantime_serde")]
    pub auth_failure_window: Duration,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: None,
            max_auth_failures: default_failures(),
            auth_failure_window: default_window(),
        }
    }
}

fn default_failures() -> u32 {
    10
}

fn default_window() -> Duration {
    Duration::from_secs(60)
}
