//! Authentication towards a vendor. Secrets come from environment
//! variables or files, are held as sensitive header values, and never
//! appear in logs, `Debug` output or error messages.

use super::config::AuthConfig;
use crate::adapter::{AdapterError, DeliveryError, FailureClass};
use reqwest::header::{HeaderName, HeaderValue};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Reads a secret from an environment variable or a file (relative paths
/// resolve against the configuration file's directory). `key` is the
/// field's stem (`password` for `password_env` / `password_file`) under
/// `prefix` (`auth`, `callback`).
pub fn read_secret(
    prefix: &str,
    key: &str,
    env: &Option<String>,
    file: &Option<String>,
    config_dir: &Path,
) -> Result<String, AdapterError> {
    let secret = match (env, file) {
        (Some(var), None) => std::env::var(var).map_err(|_| {
            AdapterError::new(
                format!("{prefix}.{key}_env"),
                format!("environment variable {var} is not set"),
            )
        })?,
        (None, Some(path)) => std::fs::read_to_string(config_dir.join(path))
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| {
                AdapterError::new(
                    format!("{prefix}.{key}_file"),
                    format!("cannot read {path}: {}", e.kind()),
                )
            })?,
        (None, None) => {
            return Err(AdapterError::new(
                format!("{prefix}.{key}_env"),
                format!(
                    "set {key}_env or {key}_file (secrets are never written in the configuration)"
                ),
            ));
        }
        (Some(_), Some(_)) => {
            return Err(AdapterError::new(
                format!("{prefix}.{key}_env"),
                format!("set either {key}_env or {key}_file, not both"),
            ));
        }
    };
    if secret.is_empty() {
        return Err(AdapterError::new(
            format!("{prefix}.{key}_env"),
            "the secret is empty",
        ));
    }
    Ok(secret)
}

fn sensitive(value: String, key: &str) -> Result<HeaderValue, AdapterError> {
    let mut header = HeaderValue::from_str(&value).map_err(|_| {
        AdapterError::new(
            key,
            "the secret contains characters not allowed in a header",
        )
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// Adds credentials to requests.
#[derive(Clone)]
pub enum Authenticator {
    None,
    /// A header computed once (Basic, Bearer, API key).
    Static(HeaderName, HeaderValue),
    OAuth2(Arc<OAuth2>),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "Authenticator::None",
            Self::Static(..) => "Authenticator::Static(<redacted>)",
            Self::OAuth2(_) => "Authenticator::OAuth2(<redacted>)",
        })
    }
}

impl Authenticator {
    /// Builds from configuration; reads the secrets now, so a missing one
    /// is a configuration error (`raccordo check` reports it).
    pub fn build(
        config: &AuthConfig,
        client: &reqwest::Client,
        config_dir: &Path,
    ) -> Result<Self, AdapterError> {
        use base64::Engine;
        let auth = reqwest::header::AUTHORIZATION;
        Ok(match config {
            AuthConfig::None => Self::None,
            AuthConfig::Basic {
                username,
                password_env,
                password_file,
            } => {
                let password =
                    read_secret("auth", "password", password_env, password_file, config_dir)?;
                let token = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{password}"));
                Self::Static(auth, sensitive(format!("Basic {token}"), "auth")?)
            }
            AuthConfig::Bearer {
                token_env,
                token_file,
            } => {
                let token = read_secret("auth", "token", token_env, token_file, config_dir)?;
                Self::Static(auth, sensitive(format!("Bearer {token}"), "auth")?)
            }
            AuthConfig::Header {
                name,
                value_env,
                value_file,
            } => {
                let header = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                    AdapterError::new("auth.name", format!("not a header name: {e}"))
                })?;
                let value = read_secret("auth", "value", value_env, value_file, config_dir)?;
                Self::Static(header, sensitive(value, "auth")?)
            }
            AuthConfig::OAuth2ClientCredentials {
                token_url,
                client_id,
                client_secret_env,
                client_secret_file,
                scope,
                audience,
                refresh_before,
            } => {
                let url = reqwest::Url::parse(token_url).map_err(|e| {
                    AdapterError::new("auth.token_url", format!("'{token_url}' is not a URL: {e}"))
                })?;
                let secret = read_secret(
                    "auth",
                    "client_secret",
                    client_secret_env,
                    client_secret_file,
                    config_dir,
                )?;
                Self::OAuth2(Arc::new(OAuth2 {
                    client: client.clone(),
                    token_url: url,
                    client_id: client_id.clone(),
                    client_secret: secret,
                    scope: scope.clone(),
                    audience: audience.clone(),
                    refresh_before: *refresh_before,
                    cached: Mutex::new(None),
                    fetched: AtomicU64::new(0),
                }))
            }
        })
    }

    /// The header to add to the next request, if any.
    pub async fn header(&self) -> Result<Option<(HeaderName, HeaderValue)>, DeliveryError> {
        match self {
            Self::None => Ok(None),
            Self::Static(name, value) => Ok(Some((name.clone(), value.clone()))),
            Self::OAuth2(o) => Ok(Some((reqwest::header::AUTHORIZATION, o.token().await?))),
        }
    }

    /// The vendor answered 401 to `used`: a cached token is dropped so the
    /// next delivery fetches a fresh one.
    pub async fn rejected(&self, used: &HeaderValue) {
        if let Self::OAuth2(o) = self {
            let mut cached = o.cached.lock().await;
            if cached.as_ref().is_some_and(|t| t.header == *used) {
                *cached = None;
            }
        }
    }

    /// Tokens fetched so far (OAuth2), for metrics and tests.
    pub fn tokens_fetched(&self) -> u64 {
        match self {
            Self::OAuth2(o) => o.fetched.load(Ordering::Relaxed),
            _ => 0,
        }
    }
}

struct CachedToken {
    header: HeaderValue,
    refresh_at: Instant,
}

/// An OAuth2 client-credentials token source.
pub struct OAuth2 {
    client: reqwest::Client,
    token_url: reqwest::Url,
    client_id: String,
    client_secret: String,
    scope: Option<String>,
    audience: Option<String>,
    refresh_before: Duration,
    /// Held across the fetch: concurrent deliveries wait for the one
    /// refresh in flight instead of each asking for a token.
    cached: Mutex<Option<CachedToken>>,
    fetched: AtomicU64,
}

#[derive(serde::Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl OAuth2 {
    async fn token(&self) -> Result<HeaderValue, DeliveryError> {
        let mut cached = self.cached.lock().await;
        if let Some(t) = cached.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.header.clone());
        }
        let fresh = self.fetch().await?;
        let header = fresh.header.clone();
        *cached = Some(fresh);
        Ok(header)
    }

    async fn fetch(&self) -> Result<CachedToken, DeliveryError> {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = &self.scope {
            form.push(("scope", s));
        }
        if let Some(a) = &self.audience {
            form.push(("audience", a));
        }
        let host = self.token_url.host_str().unwrap_or_default().to_string();
        let resp = self
            .client
            .post(self.token_url.clone())
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                // Nothing reached the vendor yet: always safe to retry.
                DeliveryError::transient(format!(
                    "token endpoint {host} unreachable: {}",
                    super::error_chain(&e)
                ))
            })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| {
            DeliveryError::transient(format!("token endpoint {host}: reading the reply: {e}"))
        })?;
        if !status.is_success() {
            let (detail, _) = super::reply::problem_details(&body);
            let class = if status.is_server_error() || status.as_u16() == 429 {
                FailureClass::Transient
            } else {
                FailureClass::Permanent
            };
            return Err(DeliveryError::new(
                class,
                format!(
                    "token endpoint {host} refused the client credentials: HTTP {}{}",
                    status.as_u16(),
                    detail.map(|d| format!(": {d}")).unwrap_or_default()
                ),
            ));
        }
        let reply: TokenReply = serde_json::from_slice(&body).map_err(|e| {
            DeliveryError::permanent(format!(
                "token endpoint {host}: reply is not an OAuth2 token: {e}"
            ))
        })?;
        if reply
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(DeliveryError::permanent(format!(
                "token endpoint {host}: token_type is not Bearer"
            )));
        }
        let lifetime = Duration::from_secs(reply.expires_in.unwrap_or(300));
        let header = sensitive(format!("Bearer {}", reply.access_token), "auth").map_err(|_| {
            DeliveryError::permanent(format!(
                "token endpoint {host}: the token has characters not allowed in a header"
            ))
        })?;
        self.fetched.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%host, expires_in = lifetime.as_secs(), "OAuth2 token fetched");
        Ok(CachedToken {
            header,
            refresh_at: Instant::now() + lifetime.saturating_sub(self.refresh_before),
        })
    }
}
