//! Authentication: API keys (compared as hashes, in constant time), JWTs
//! (issuer, audience, expiry, signature), per-client rate limits, and a
//! lock-out of addresses that keep presenting wrong credentials.

use super::Caller;
use super::config::{ClientConfig, JwtConfig, Role, SecurityConfig};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// Why a call was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials at all.
    Missing,
    /// Credentials that do not verify; the reason is safe to tell the caller.
    Invalid(String),
    /// Too many failed attempts from this address: refused for a while.
    LockedOut,
    /// The client exceeds its rate.
    RateLimited(String),
}

/// A configuration problem of one client: (key, reason).
pub type ClientError = (String, String);

/// Verifies callers' credentials against the configured clients.
#[derive(Debug)]
pub struct Authenticator {
    clients: Vec<Client>,
    /// No client configured: every call is the anonymous caller.
    anonymous: bool,
    settings: SecurityConfig,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug)]
struct Client {
    name: String,
    role: Role,
    tenants: Vec<String>,
    api_key_sha256: Option<[u8; 32]>,
    certificate_sha256: Option<[u8; 32]>,
    jwt: Option<JwtVerifier>,
    operator_id: Option<String>,
    rate: f64,
    burst: f64,
}

struct JwtVerifier {
    issuer: String,
    validation: Validation,
    keys: JwtKeys,
    fiscal_code_claim: String,
    operator_claim: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are secrets (HS256) or bulky: never printed.
        f.debug_struct("JwtVerifier").finish_non_exhaustive()
    }
}

enum JwtKeys {
    Set(JwkSet),
    Secret(Vec<u8>),
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Equal in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn build_jwt(cfg: &JwtConfig, base_dir: &Path) -> Result<JwtVerifier, ClientError> {
    let keys = match (
        &cfg.jwks_file,
        &cfg.hs256_secret_env,
        &cfg.hs256_secret_file,
    ) {
        (Some(file), None, None) => {
            let path = base_dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                (
                    "jwt.jwks_file".to_string(),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let set: JwkSet = serde_json::from_str(&text).map_err(|e| {
                (
                    "jwt.jwks_file".to_string(),
                    format!("{} is not a JWKS: {e}", path.display()),
                )
            })?;
            if set.keys.is_empty() {
                return Err(("jwt.jwks_file".into(), "the key set is empty".into()));
            }
            JwtKeys::Set(set)
        }
        (None, Some(var), None) => {
            let secret = std::env::var(var).map_err(|_| {
                (
                    "jwt.hs256_secret_env".to_string(),
                    format!("the environment variable {var} is not set"),
                )
            })?;
            JwtKeys::Secret(secret.into_bytes())
        }
        (None, None, Some(file)) => {
            let path = base_dir.join(file);
            let secret = std::fs::read(&path).map_err(|e| {
                (
                    "jwt.hs256_secret_file".to_string(),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            JwtKeys::Secret(secret.trim_ascii().to_vec())
        }
        _ => {
            return Err((
                "jwt".into(),
                "set exactly one of jwks_file, hs256_secret_env, hs256_secret_file".into(),
            ));
        }
    };
    if let JwtKeys::Secret(s) = &keys
        && s.len() < 32
    {
        return Err((
            "jwt".into(),
            "an HS256 secret must be at least 32 bytes".into(),
        ));
    }
    let algorithms = match &keys {
        JwtKeys::Secret(_) => vec![Algorithm::HS256],
        JwtKeys::Set(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ],
    };
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms;
    validation.set_issuer(&[&cfg.issuer]);
    validation.set_audience(&[&cfg.audience]);
    validation.leeway = cfg.leeway.as_secs();
    validation.validate_nbf = true;
    Ok(JwtVerifier {
        issuer: cfg.issuer.clone(),
        validation,
        keys,
        fiscal_code_claim: cfg.fiscal_code_claim.clone(),
        operator_claim: cfg.operator_claim.clone(),
    })
}

impl Authenticator {
    /// Builds the verifier; errors name the key inside `[clients.NAME]`.
    pub fn build(
        clients: &BTreeMap<String, ClientConfig>,
        settings: &SecurityConfig,
        base_dir: &Path,
    ) -> Result<Self, (String, ClientError)> {
        let mut built = Vec::new();
        for (name, c) in clients {
            let fail = |e: ClientError| (name.clone(), e);
            let api_key_sha256 = match &c.api_key_sha256 {
                Some(h) => Some(parse_hash(h).ok_or_else(|| {
                    fail((
                        "api_key_sha256".into(),
                        "must be 64 hexadecimal digits (sha256sum of the key)".into(),
                    ))
                })?),
                None => None,
            };
            let certificate_sha256 = match &c.certificate_sha256 {
                Some(h) => Some(parse_hash(h).ok_or_else(|| {
                    fail((
                        "certificate_sha256".into(),
                        "must be 64 hexadecimal digits (sha256sum of the DER certificate)".into(),
                    ))
                })?),
                None => None,
            };
            let jwt = match &c.jwt {
                Some(j) => Some(build_jwt(j, base_dir).map_err(fail)?),
                None => None,
            };
            if api_key_sha256.is_none() && jwt.is_none() && certificate_sha256.is_none() {
                return Err(fail((
                    String::new(),
                    "declares no credential: set api_key_sha256, certificate_sha256 or jwt".into(),
                )));
            }
            if c.role == Role::Citizen && jwt.is_none() {
                return Err(fail((
                    "jwt".into(),
                    "a citizen client needs verified tokens carrying the fiscal code".into(),
                )));
            }
            if c.tenants.is_empty() && c.role != Role::Admin {
                return Err(fail((
                    "tenants".into(),
                    "list the ISTAT codes it acts for, or [\"*\"]".into(),
                )));
            }
            if c.requests_per_second == 0 {
                return Err(fail((
                    "requests_per_second".into(),
                    "must be at least 1".into(),
                )));
            }
            let rate = f64::from(c.requests_per_second);
            built.push(Client {
                name: name.clone(),
                role: c.role,
                tenants: c.tenants.clone(),
                api_key_sha256,
                certificate_sha256,
                jwt,
                operator_id: c.operator_id.clone(),
                rate,
                burst: c.burst.map_or(rate * 2.0, f64::from).max(1.0),
            });
        }
        Ok(Self {
            anonymous: built.is_empty(),
            clients: built,
            settings: settings.clone(),
            failures: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Whether calls need no credentials (no client declared).
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }

    /// Identifies the caller of one request.
    pub fn authenticate(
        &self,
        api_key: Option<&str>,
        bearer: Option<&str>,
        certificate_sha256: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Caller, AuthError> {
        if self.anonymous {
            return Ok(Caller::anonymous());
        }
        if let Some(ip) = peer
            && self.locked_out(ip)
        {
            return Err(AuthError::LockedOut);
        }
        // Explicit credentials first: a shared client certificate (a
        // gateway's) must not hide the key or token of the caller behind it.
        let verified = match (api_key, bearer, certificate_sha256) {
            (Some(key), _, _) => self.by_api_key(key),
            (None, Some(token), _) => self.by_token(token),
            (None, None, Some(cert)) => self.by_certificate(cert),
            (None, None, None) => return Err(AuthError::Missing),
        };
        match verified {
            Ok(caller) => {
                self.take_token(&caller.client)?;
                Ok(caller)
            }
            Err(e) => {
                if let Some(ip) = peer {
                    self.record_failure(ip);
                }
                Err(e)
            }
        }
    }

    fn by_api_key(&self, key: &str) -> Result<Caller, AuthError> {
        let hash: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
        // Compare with every client, so timing does not tell which matched.
        let mut found = None;
        for c in &self.clients {
            if let Some(h) = &c.api_key_sha256
                && constant_time_eq(h, &hash)
            {
                found = Some(c);
            }
        }
        let client = found.ok_or_else(|| AuthError::Invalid("unknown API key".into()))?;
        Ok(Caller::client(
            &client.name,
            client.role,
            &client.tenants,
            None,
            client.operator_id.clone(),
        ))
    }

    fn by_certificate(&self, fingerprint: &str) -> Result<Caller, AuthError> {
        let Some(presented) = parse_hash(fingerprint) else {
            return Err(AuthError::Invalid("unreadable client certificate".into()));
        };
        let client = self
            .clients
            .iter()
            .find(|c| {
                c.certificate_sha256
                    .is_some_and(|h| constant_time_eq(&h, &presented))
            })
            .ok_or_else(|| {
                AuthError::Invalid("the client certificate belongs to no declared client".into())
            })?;
        Ok(Caller::client(
            &client.name,
            client.role,
            &client.tenants,
            None,
            client.operator_id.clone(),
        ))
    }

    fn by_token(&self, token: &str) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed token: {e}")))?;
        // Only clients trusting the token's issuer try it, so the error
        // names what is wrong with the token for that client.
        // Reading `iss` before verification only picks the key; nothing
        // else from the unverified claims is used.
        let issuer = jsonwebtoken::dangerous::insecure_decode_claims::<
            serde_json::Map<String, serde_json::Value>,
        >(token)
        .ok()
        .and_then(|c| c.get("iss").and_then(|v| v.as_str()).map(str::to_string));
        let mut last = AuthError::Invalid("the token is from an unknown issuer".into());
        for c in &self.clients {
            let Some(v) = &c.jwt else { continue };
            if issuer.as_deref() != Some(v.issuer.as_str()) {
                continue;
            }
            let key = match &v.keys {
                JwtKeys::Secret(s) => DecodingKey::from_secret(s),
                JwtKeys::Set(set) => {
                    let jwk = match header.kid.as_deref() {
                        Some(kid) => set.find(kid),
                        None if set.keys.len() == 1 => set.keys.first(),
                        None => None,
                    };
                    let Some(jwk) = jwk else { continue };
                    match DecodingKey::from_jwk(jwk) {
                        Ok(k) => k,
                        Err(_) => continue,
                    }
                }
            };
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &key,
                &v.validation,
            ) {
                Ok(data) => return self.caller_from_claims(c, v, &data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind::*;
                    let reason = match e.kind() {
                        ExpiredSignature => "the token has expired",
                        ImmatureSignature => "the token is not valid yet",
                        InvalidAudience => "the token is for another audience",
                        InvalidIssuer => "the token is from another issuer",
                        InvalidSignature => "the token's signature does not verify",
                        InvalidAlgorithm => "the token's algorithm is not accepted",
                        MissingRequiredClaim(_) => "the token lacks a required claim",
                        _ => "the token does not verify",
                    };
                    last = AuthError::Invalid(reason.into());
                }
            }
        }
        Err(last)
    }

    fn caller_from_claims(
        &self,
        c: &Client,
        v: &JwtVerifier,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Caller, AuthError> {
        let claim = |name: &str| {
            claims
                .get(name)
                .and_then(|x| x.as_str())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let fiscal_code = if c.role == Role::Citizen {
            let raw = claim(&v.fiscal_code_claim).ok_or_else(|| {
                AuthError::Invalid(format!("the token has no '{}' claim", v.fiscal_code_claim))
            })?;
            let code = raw
                .strip_prefix("TINIT-")
                .unwrap_or(&raw)
                .to_ascii_uppercase();
            Some(code)
        } else {
            None
        };
        let operator_id = if c.role == Role::Operator {
            claim(&v.operator_claim).or_else(|| c.operator_id.clone())
        } else {
            None
        };
        Ok(Caller::client(
            &c.name,
            c.role,
            &c.tenants,
            fiscal_code,
            operator_id,
        ))
    }

    fn locked_out(&self, ip: IpAddr) -> bool {
        let failures = self.failures.lock().expect("auth failures lock");
        failures.get(&ip).is_some_and(|(since, n)| {
            *n >= self.settings.max_auth_failures
                && since.elapsed() < self.settings.auth_failure_window
        })
    }

    fn record_failure(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().expect("auth failures lock");
        let window = self.settings.auth_failure_window;
        failures.retain(|_, (since, _)| since.elapsed() < window);
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        entry.1 += 1;
        if entry.1 == self.settings.max_auth_failures {
            tracing::warn!(%ip, failures = entry.1, "too many failed authentications: address refused for {}",
                humantime::format_duration(window));
        }
    }

    fn take_token(&self, client: &str) -> Result<(), AuthError> {
        let Some(c) = self.clients.iter().find(|c| c.name == client) else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        let now = Instant::now();
        let b = buckets.entry(client.to_string()).or_insert(Bucket {
            tokens: c.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * c.rate).min(c.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(AuthError::RateLimited(client.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_parse_and_compare() {
        let h: [u8; 32] = Sha256::digest(b"k").into();
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_hash(&hex), Some(h));
        assert_eq!(parse_hash("abc"), None);
        assert!(constant_time_eq(&h, &h));
        let mut other = h;
        other[31] ^= 1;
        assert!(!constant_time_eq(&h, &other));
    }
}
