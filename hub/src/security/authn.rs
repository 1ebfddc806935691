//! Authentication: API keys (compared as hashes, in constant time), JWTs
//! (issuer, audience, expiry, signature), per-client rate limits, and a
//! lock-out of client addresses and of credentials that keep failing.
//!
//! The lock-out never stands in front of a valid credential: presented
//! credentials are verified first, and only calls that fail (no, wrong,
//! expired credentials) are refused for their address's or their
//! credential's failures. So a shared address (a proxy, a NAT) cannot be
//! used to lock out the valid clients behind it.

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
    /// Too many failed attempts from this address or with this credential:
    /// refused for a while.
    LockedOut,
    /// The client exceeds its rate.
    RateLimited(String),
}

impl AuthError {
    /// What kind of refusal this is, in fixed words: what the log may carry
    /// (the precise reason goes to the caller and the audit trail).
    pub fn class(&self) -> &'static str {
        match self {
            AuthError::Missing => "no credentials",
            AuthError::Invalid(_) => "invalid credentials",
            AuthError::LockedOut => "locked out",
            AuthError::RateLimited(_) => "over its rate limit",
        }
    }
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
    failures: Mutex<HashMap<Failing, (Instant, u32)>>,
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

/// What failures are counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Failing {
    Address(IpAddr),
    /// The first 8 bytes of the SHA-256 of a presented credential (API key,
    /// token or certificate fingerprint): the credential itself is not kept.
    Credential([u8; 8]),
}

/// Failure counters kept at most: past it, new addresses and credentials
/// are not counted until old entries expire (memory stays bounded under a
/// flood from many addresses).
const MAX_TRACKED_FAILURES: usize = 100_000;

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

/// One `[clients.NAME]`, verified; the error names the key.
fn build_client(name: &str, c: &ClientConfig, base_dir: &Path) -> Result<Client, ClientError> {
    let api_key_sha256 = match &c.api_key_sha256 {
        Some(h) => Some(parse_hash(h).ok_or_else(|| {
            (
                "api_key_sha256".to_string(),
                "must be 64 hexadecimal digits (sha256sum of the key)".to_string(),
            )
        })?),
        None => None,
    };
    let certificate_sha256 = match &c.certificate_sha256 {
        Some(h) => Some(parse_hash(h).ok_or_else(|| {
            (
                "certificate_sha256".to_string(),
                "must be 64 hexadecimal digits (sha256sum of the DER certificate)".to_string(),
            )
        })?),
        None => None,
    };
    let jwt = match &c.jwt {
        Some(j) => Some(build_jwt(j, base_dir)?),
        None => None,
    };
    if api_key_sha256.is_none() && jwt.is_none() && certificate_sha256.is_none() {
        return Err((
            String::new(),
            "declares no credential: set api_key_sha256, certificate_sha256 or jwt".into(),
        ));
    }
    if c.role == Role::Citizen && jwt.is_none() {
        return Err((
            "jwt".into(),
            "a citizen client needs verified tokens carrying the fiscal code".into(),
        ));
    }
    if c.tenants.is_empty() && c.role != Role::Admin {
        return Err((
            "tenants".into(),
            "list the ISTAT codes it acts for, or [\"*\"]".into(),
        ));
    }
    if c.requests_per_second == 0 {
        return Err(("requests_per_second".into(), "must be at least 1".into()));
    }
    let rate = f64::from(c.requests_per_second);
    Ok(Client {
        name: name.to_string(),
        role: c.role,
        tenants: c.tenants.clone(),
        api_key_sha256,
        certificate_sha256,
        jwt,
        operator_id: c.operator_id.clone(),
        rate,
        burst: c.burst.map_or(rate * 2.0, f64::from).max(1.0),
    })
}

impl Authenticator {
    /// Builds the verifier; each error names a client and the key inside
    /// `[clients.NAME]`, and every client's problems are reported. Two
    /// clients with one API key or one certificate are refused: a caller
    /// presenting it could be taken for either.
    pub fn build(
        clients: &BTreeMap<String, ClientConfig>,
        settings: &SecurityConfig,
        base_dir: &Path,
    ) -> Result<Self, Vec<(String, ClientError)>> {
        let mut built = Vec::new();
        let mut refused = Vec::new();
        for (name, c) in clients {
            match build_client(name, c, base_dir) {
                Ok(client) => built.push(client),
                Err(e) => refused.push((name.clone(), e)),
            }
        }
        let mut api_keys: HashMap<[u8; 32], &str> = HashMap::new();
        let mut certificates: HashMap<[u8; 32], &str> = HashMap::new();
        for client in &built {
            for (hash, seen, key, what) in [
                (
                    &client.api_key_sha256,
                    &mut api_keys,
                    "api_key_sha256",
                    "API key",
                ),
                (
                    &client.certificate_sha256,
                    &mut certificates,
                    "certificate_sha256",
                    "certificate",
                ),
            ] {
                let Some(hash) = hash else { continue };
                if let Some(first) = seen.insert(*hash, &client.name) {
                    seen.insert(*hash, first);
                    refused.push((
                        client.name.clone(),
                        (
                            key.into(),
                            format!(
                                "the same {what} as clients.{first}: each client needs its \
                                 own, or a caller presenting it could be taken for either"
                            ),
                        ),
                    ));
                }
            }
        }
        if !refused.is_empty() {
            return Err(refused);
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

    /// The address of the client behind `peer`: the right-most address of
    /// `X-Forwarded-For` that is not a trusted proxy, when `peer` is one
    /// (`security.trusted_proxies`); `peer` itself otherwise. Only trusted
    /// proxies' headers count: anyone else could write any address there.
    pub fn client_address(&self, peer: Option<IpAddr>, forwarded_for: &[&str]) -> Option<IpAddr> {
        let peer = peer?;
        let trusted = |ip: IpAddr| self.settings.trusted_proxies.iter().any(|r| r.contains(ip));
        if !trusted(peer) {
            return Some(peer);
        }
        let mut client = peer;
        // Several headers are one list, in order; each hop appends.
        let hops = forwarded_for
            .iter()
            .flat_map(|h| h.split(','))
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // Unreadable: whatever is left of it was not written by a
                // trusted proxy.
                break;
            };
            client = ip;
            if !trusted(ip) {
                break;
            }
        }
        Some(client)
    }

    /// Identifies the caller of one request from `client`, the client
    /// address ([`Self::client_address`]).
    pub fn authenticate(
        &self,
        api_key: Option<&str>,
        bearer: Option<&str>,
        certificate_sha256: Option<&str>,
        client: Option<IpAddr>,
    ) -> Result<Caller, AuthError> {
        if self.anonymous {
            return Ok(Caller::anonymous());
        }
        let address = client.map(Failing::Address);
        // Explicit credentials first: a shared client certificate (a
        // gateway's) must not hide the key or token of the caller behind it.
        let presented = match (api_key, bearer, certificate_sha256) {
            (Some(key), _, _) => ("key", key.trim()),
            (None, Some(token), _) => ("token", token.trim()),
            (None, None, Some(cert)) => ("certificate", cert.trim()),
            (None, None, None) => {
                // No credentials count as a failure like wrong ones, or an
                // address could call without any as often as it likes.
                if address.is_some_and(|a| self.locked_out(a)) {
                    return Err(AuthError::LockedOut);
                }
                self.record_failures(&[address]);
                return Err(AuthError::Missing);
            }
        };
        let credential = Failing::Credential(credential_id(presented.0, presented.1));
        // A credential that keeps failing (a replayed expired token, a
        // guessed key tried again) is refused without verifying it again.
        if self.locked_out(credential) {
            self.record_failures(&[address]);
            return Err(AuthError::LockedOut);
        }
        let verified = match presented {
            ("key", key) => self.by_api_key(key),
            ("token", token) => self.by_token(token),
            (_, cert) => self.by_certificate(cert),
        };
        match verified {
            // A valid credential passes whatever others did from its address.
            Ok(caller) => {
                self.take_token(&caller.client)?;
                Ok(caller)
            }
            Err(e) => {
                let locked = address.is_some_and(|a| self.locked_out(a));
                self.record_failures(&[address, Some(credential)]);
                if locked {
                    Err(AuthError::LockedOut)
                } else {
                    Err(e)
                }
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

    fn locked_out(&self, what: Failing) -> bool {
        let failures = self.failures.lock().expect("auth failures lock");
        failures.get(&what).is_some_and(|(since, n)| {
            *n >= self.settings.max_auth_failures
                && since.elapsed() < self.settings.auth_failure_window
        })
    }

    fn record_failures(&self, what: &[Option<Failing>]) {
        let mut failures = self.failures.lock().expect("auth failures lock");
        let window = self.settings.auth_failure_window;
        let now = Instant::now();
        for what in what.iter().flatten() {
            if failures
                .get(what)
                .is_some_and(|(since, _)| now.duration_since(*since) >= window)
            {
                failures.remove(what);
            }
            if failures.len() >= MAX_TRACKED_FAILURES {
                failures.retain(|_, (since, _)| now.duration_since(*since) < window);
            }
            if !failures.contains_key(what) && failures.len() >= MAX_TRACKED_FAILURES {
                continue;
            }
            let entry = failures.entry(*what).or_insert((now, 0));
            entry.1 = entry.1.saturating_add(1);
            if entry.1 == self.settings.max_auth_failures {
                let window = humantime::format_duration(window);
                match what {
                    Failing::Address(ip) => tracing::warn!(%ip, failures = entry.1,
                        "too many failed authentications: address refused for {window} unless it presents a valid credential"),
                    Failing::Credential(id) => {
                        tracing::warn!(credential = %hex(id), failures = entry.1,
                        "too many failed authentications with one credential: refused for {window}")
                    }
                }
            }
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

/// Identifies a presented credential without keeping it: the first bytes
/// of the SHA-256 of its kind and value.
fn credential_id(kind: &str, value: &str) -> [u8; 8] {
    let digest = Sha256::new()
        .chain_update(kind.as_bytes())
        .chain_update([0])
        .chain_update(value.as_bytes())
        .finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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

    fn authenticator(security: serde_json::Value) -> Authenticator {
        let clients: BTreeMap<String, ClientConfig> = serde_json::from_value(serde_json::json!({
            "portal": {
                "role": "frontoffice",
                "tenants": ["016024"],
                "api_key_sha256": hex(&Sha256::digest(b"right-key")),
            }
        }))
        .unwrap();
        let settings: SecurityConfig = serde_json::from_value(security).unwrap();
        Authenticator::build(&clients, &settings, Path::new(".")).unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_valid_key_passes_from_an_address_where_others_failed() {
        let auth = authenticator(serde_json::json!({"max_auth_failures": 3}));
        let shared = ip("192.0.2.10");
        for guess in ["a", "b", "c"] {
            let e = auth
                .authenticate(Some(guess), None, None, shared)
                .unwrap_err();
            assert!(matches!(e, AuthError::Invalid(_)), "{e:?}");
        }
        assert_eq!(
            auth.authenticate(Some("d"), None, None, shared),
            Err(AuthError::LockedOut)
        );
        assert_eq!(
            auth.authenticate(None, None, None, shared),
            Err(AuthError::LockedOut)
        );
        let caller = auth
            .authenticate(Some("right-key"), None, None, shared)
            .unwrap();
        assert_eq!(caller.client, "portal");
    }

    #[test]
    fn calls_without_credentials_count_as_failures() {
        let auth = authenticator(serde_json::json!({"max_auth_failures": 3}));
        for _ in 0..3 {
            assert_eq!(
                auth.authenticate(None, None, None, ip("192.0.2.1")),
                Err(AuthError::Missing)
            );
        }
        assert_eq!(
            auth.authenticate(None, None, None, ip("192.0.2.1")),
            Err(AuthError::LockedOut)
        );
        assert_eq!(
            auth.authenticate(None, None, None, ip("192.0.2.2")),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn a_failing_credential_is_refused_from_every_address() {
        let auth = authenticator(serde_json::json!({"max_auth_failures": 3}));
        for n in 1..=3 {
            let from = ip(&format!("198.51.100.{n}"));
            assert!(matches!(
                auth.authenticate(Some("stolen-old-key"), None, None, from),
                Err(AuthError::Invalid(_))
            ));
        }
        assert_eq!(
            auth.authenticate(Some("stolen-old-key"), None, None, ip("198.51.100.9")),
            Err(AuthError::LockedOut)
        );
        assert!(
            auth.authenticate(Some("right-key"), None, None, ip("198.51.100.9"))
                .is_ok()
        );
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let auth = authenticator(serde_json::json!({"trusted_proxies": ["10.0.0.0/8"]}));
        assert_eq!(
            auth.client_address(ip("10.0.0.5"), &["203.0.113.9, 10.0.0.7"]),
            ip("203.0.113.9")
        );
        // A client writing its own header cannot pick its address.
        assert_eq!(
            auth.client_address(ip("10.0.0.5"), &["1.1.1.1", "203.0.113.9"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            auth.client_address(ip("198.51.100.1"), &["203.0.113.9"]),
            ip("198.51.100.1")
        );
        assert_eq!(auth.client_address(ip("10.0.0.5"), &[]), ip("10.0.0.5"));
        assert_eq!(
            auth.client_address(ip("10.0.0.5"), &["not an address"]),
            ip("10.0.0.5")
        );
    }
}
