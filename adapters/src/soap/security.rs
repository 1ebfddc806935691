//! WS-Security as a pipeline of steps.
//!
//! Each [`SecurityStep`] adds to the outgoing envelope, in the configured
//! order: today `wsu:Timestamp` and `wsse:UsernameToken` (PasswordText or
//! PasswordDigest). A signing step (X.509 token profile, the ModI
//! `ID_AUTH_SOAP_*` profiles) fits the same trait: it runs last, sees the
//! finished header blocks and body, gives them `wsu:Id`s and appends a
//! `ds:Signature` to the Security header.

use super::config::{PasswordType, SecurityStepConfig};
use crate::adapter::{AdapterError, DeliveryError};
use crate::http::auth::read_secret;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use quick_xml::escape::escape;
use sha1::{Digest, Sha1};
use std::path::Path;
use std::time::Duration;

/// WS-Security 1.0 secext namespace.
pub const WSSE_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
/// WS-Security 1.0 utility namespace.
pub const WSU_NS: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
const TOKEN_PROFILE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0";
const BASE64_BINARY: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// The outgoing envelope as security steps see it: raw XML fragments,
/// assembled into the envelope after the last step.
#[derive(Debug, Clone, Default)]
pub struct OutgoingEnvelope {
    /// Children of `wsse:Security` (the header is omitted when empty).
    pub security: Vec<String>,
    /// Other SOAP header blocks (configured headers, WS-Addressing).
    pub headers: Vec<String>,
    /// The Body's content.
    pub body: String,
    /// When the envelope is being built (one clock for every step).
    pub now: DateTime<Utc>,
}

/// One WS-Security step.
pub trait SecurityStep: Send + Sync + std::fmt::Debug {
    /// Adds this step's elements to `envelope`. Errors fail the delivery.
    fn apply(&self, envelope: &mut OutgoingEnvelope) -> Result<(), DeliveryError>;
}

/// `wsu:Timestamp`.
#[derive(Debug, Clone)]
pub struct Timestamp {
    pub ttl: Duration,
}

impl SecurityStep for Timestamp {
    fn apply(&self, env: &mut OutgoingEnvelope) -> Result<(), DeliveryError> {
        let ttl = chrono::Duration::from_std(self.ttl)
            .map_err(|_| DeliveryError::permanent("security timestamp ttl is too long"))?;
        env.security.push(format!(
            r#"<wsu:Timestamp wsu:Id="TS-1"><wsu:Created>{}</wsu:Created><wsu:Expires>{}</wsu:Expires></wsu:Timestamp>"#,
            xml_time(env.now),
            xml_time(env.now + ttl)
        ));
        Ok(())
    }
}

/// `wsse:UsernameToken`.
pub struct UsernameToken {
    pub username: String,
    password: String,
    pub password_type: PasswordType,
}

impl std::fmt::Debug for UsernameToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsernameToken")
            .field("username", &self.username)
            .field("password_type", &self.password_type)
            .finish_non_exhaustive()
    }
}

impl UsernameToken {
    /// A token for `username`; the password is kept only in memory.
    pub fn new(username: String, password: String, password_type: PasswordType) -> Self {
        Self {
            username,
            password,
            password_type,
        }
    }

    /// The token element with the given nonce (digest only).
    pub fn element(&self, nonce: &[u8], created: DateTime<Utc>) -> String {
        let user = escape(self.username.as_str());
        match self.password_type {
            PasswordType::Text => format!(
                r#"<wsse:UsernameToken wsu:Id="UT-1"><wsse:Username>{user}</wsse:Username><wsse:Password Type="{TOKEN_PROFILE}#PasswordText">{}</wsse:Password></wsse:UsernameToken>"#,
                escape(self.password.as_str())
            ),
            PasswordType::Digest => {
                let created = xml_time(created);
                let b64 = base64::engine::general_purpose::STANDARD;
                format!(
                    r#"<wsse:UsernameToken wsu:Id="UT-1"><wsse:Username>{user}</wsse:Username><wsse:Password Type="{TOKEN_PROFILE}#PasswordDigest">{}</wsse:Password><wsse:Nonce EncodingType="{BASE64_BINARY}">{}</wsse:Nonce><wsu:Created>{created}</wsu:Created></wsse:UsernameToken>"#,
                    password_digest(nonce, &created, &self.password),
                    b64.encode(nonce)
                )
            }
        }
    }
}

impl SecurityStep for UsernameToken {
    fn apply(&self, env: &mut OutgoingEnvelope) -> Result<(), DeliveryError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce)
            .map_err(|e| DeliveryError::transient(format!("no random nonce available: {e}")))?;
        env.security.push(self.element(&nonce, env.now));
        Ok(())
    }
}

/// Base64(SHA-1(nonce + created + password)), as in the UsernameToken
/// Profile 1.0 §3.1 (`created` exactly as written in the token).
pub fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A UsernameToken as received (callbacks, test servers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceivedToken {
    pub username: String,
    pub password: String,
    /// `…#PasswordDigest` or `…#PasswordText` (or empty).
    pub password_type: String,
    pub nonce_b64: Option<String>,
    pub created: Option<String>,
}

/// Checks a received token against the expected credentials. The error
/// says what is wrong without echoing any secret.
pub fn verify_token(
    token: &ReceivedToken,
    username: &str,
    password: &str,
    max_skew: Duration,
    now: DateTime<Utc>,
) -> Result<(), String> {
    if token.username != username {
        return Err("unknown username".into());
    }
    if let Some(created) = &token.created {
        let t = DateTime::parse_from_rfc3339(created)
            .map_err(|_| "Created is not an XML dateTime")?
            .with_timezone(&Utc);
        let skew = (now - t).num_seconds().unsigned_abs();
        if skew > max_skew.as_secs() {
            return Err(format!(
                "Created is more than {}s away from the hub's clock",
                max_skew.as_secs()
            ));
        }
    }
    let ok = if token.password_type.ends_with("#PasswordText") {
        constant_eq(token.password.as_bytes(), password.as_bytes())
    } else {
        let (Some(nonce), Some(created)) = (&token.nonce_b64, &token.created) else {
            return Err("PasswordDigest needs Nonce and Created".into());
        };
        let nonce = base64::engine::general_purpose::STANDARD
            .decode(nonce.trim())
            .map_err(|_| "Nonce is not base64")?;
        let expected = password_digest(&nonce, created, password);
        constant_eq(token.password.trim().as_bytes(), expected.as_bytes())
    };
    if ok {
        Ok(())
    } else {
        Err("the password does not match".into())
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `2026-11-23T19:17:44.123Z` (UTC, milliseconds).
pub fn xml_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Builds the configured pipeline. Errors name the step's key.
pub fn build_pipeline(
    steps: &[SecurityStepConfig],
    config_dir: &Path,
) -> Result<Vec<Box<dyn SecurityStep>>, AdapterError> {
    let mut out: Vec<Box<dyn SecurityStep>> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            SecurityStepConfig::Timestamp { ttl } => {
                if ttl.is_zero() {
                    return Err(AdapterError::new(
                        format!("security[{i}].ttl"),
                        "must be longer than zero",
                    ));
                }
                out.push(Box::new(Timestamp { ttl: *ttl }));
            }
            SecurityStepConfig::UsernameToken {
                username,
                password_env,
                password_file,
                password_type,
            } => {
                if username.is_empty() {
                    return Err(AdapterError::new(
                        format!("security[{i}].username"),
                        "must not be empty",
                    ));
                }
                let password = read_secret(
                    &format!("security[{i}]"),
                    "password",
                    password_env,
                    password_file,
                    config_dir,
                )?;
                out.push(Box::new(UsernameToken::new(
                    username.clone(),
                    password,
                    *password_type,
                )));
            }
        }
    }
    Ok(out)
}

/// The `wsse:Security` header block for the steps' output.
pub fn security_header(children: &[String], must_understand: &str) -> String {
    format!(
        r#"<wsse:Security xmlns:wsse="{WSSE_NS}" xmlns:wsu="{WSU_NS}" soap:mustUnderstand="{must_understand}">{}</wsse:Security>"#,
        children.concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_the_profile_example() {
        // Computed independently: printf nonce+created+password | sha1 | base64.
        let nonce = b"0123456789abcdef";
        let d = password_digest(nonce, "2026-01-01T00:00:00.000Z", "p<&>\"'");
        assert_eq!(d.len(), 28);
        let token = ReceivedToken {
            username: "u".into(),
            password: d,
            password_type: format!("{TOKEN_PROFILE}#PasswordDigest"),
            nonce_b64: Some(base64::engine::general_purpose::STANDARD.encode(nonce)),
            created: Some("2026-01-01T00:00:00.000Z".into()),
        };
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:01:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(verify_token(&token, "u", "p<&>\"'", Duration::from_secs(300), now).is_ok());
        assert!(verify_token(&token, "u", "other", Duration::from_secs(300), now).is_err());
        assert!(verify_token(&token, "u", "p<&>\"'", Duration::from_secs(10), now).is_err());
    }

    #[test]
    fn text_passwords_are_escaped() {
        let t = UsernameToken::new("hub".into(), "a<b&c".into(), PasswordType::Text);
        let el = t.element(&[], Utc::now());
        assert!(el.contains(">a&lt;b&amp;c<"), "{el}");
    }
}
