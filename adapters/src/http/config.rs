//! Transport settings shared by HTTP-based adapters (REST, SOAP). Secrets
//! are never written here: only the names of environment variables or
//! files that hold them.

use serde::Deserialize;
use std::time::Duration;

/// Credentials towards the vendor (`[adapters.NAME.auth]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    #[default]
    None,
    /// HTTP Basic.
    Basic {
        username: String,
        #[serde(default)]
        password_env: Option<String>,
        #[serde(default)]
        password_file: Option<String>,
    },
    /// A static bearer token.
    Bearer {
        #[serde(default)]
        token_env: Option<String>,
        #[serde(default)]
        token_file: Option<String>,
    },
    /// A secret in a custom header (`X-Api-Key`, …).
    Header {
        name: String,
        #[serde(default)]
        value_env: Option<String>,
        #[serde(default)]
        value_file: Option<String>,
    },
    /// OAuth2 client credentials (RFC 6749 §4.4): the token is cached,
    /// refreshed `refresh_before` its expiry, one refresh at a time.
    #[serde(rename = "oauth2_client_credentials")]
    OAuth2ClientCredentials {
        token_url: String,
        client_id: String,
        #[serde(default)]
        client_secret_env: Option<String>,
        #[serde(default)]
        client_secret_file: Option<String>,
        #[serde(default)]
        scope: Option<String>,
        /// Extra form field some authorization servers need (PDND: none).
        #[serde(default)]
        audience: Option<String>,
        #[serde(default = "default_refresh_before", with = "humantime_serde")]
        refresh_before: Duration,
    },
}

/// TLS towards the vendor (`[adapters.NAME.tls]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA(s) that sign the vendor's certificate, trusted in
    /// addition to the system store.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM certificate chain presented to the vendor (mutual TLS, ModI
    /// ID_AUTH_CHANNEL_02).
    #[serde(default)]
    pub client_cert_file: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `client_cert_file`.
    #[serde(default)]
    pub client_key_file: Option<String>,
}

/// `[adapters.NAME.breaker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the breaker; 0 disables it.
    #[serde(default = "default_threshold")]
    pub failure_threshold: u32,
    /// How long it stays open before one probe is let through.
    #[serde(default = "default_open_for", with = "humantime_serde")]
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: default_threshold(),
            open_for: default_open_for(),
        }
    }
}

/// `[adapters.NAME.rate_limit]`: a token bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second (may be fractional: 0.5 = one every 2 s).
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_refresh_before() -> Duration {
    Duration::from_secs(60)
}
fn default_threshold() -> u32 {
    5
}
fn default_open_for() -> Duration {
    Duration::from_secs(30)
}
fn default_burst() -> u32 {
    1
}
