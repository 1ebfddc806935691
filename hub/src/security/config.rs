//! `[clients.NAME]` and `[security]`: who may call the API.

use serde::Deserialize;
use std::net::IpAddr;
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
    /// Failed authentications (wrong or missing credentials) from one
    /// client address, or with one wrong credential, before that address
    /// or credential is refused for the rest of `auth_failure_window`.
    #[serde(default = "default_failures")]
    pub max_auth_failures: u32,
    #[serde(default = "default_window", with = "humantime_serde")]
    pub auth_failure_window: Duration,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` names
    /// the client address; from any other peer the header is ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<ProxyRange>,
}

/// One entry of `security.trusted_proxies`: `10.0.0.7`, `10.0.0.0/8`,
/// `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ProxyRange {
    network: IpAddr,
    prefix: u8,
}

impl TryFrom<String> for ProxyRange {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("'{s}' is not an IP address or a CIDR range (10.0.0.0/8)");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(format!("'{s}': the prefix length is at most {max}"));
        }
        Ok(Self { network, prefix })
    }
}

impl ProxyRange {
    /// Whether `ip` is in the range (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u8) {
            match ip.to_canonical() {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((net, width), (addr, addr_width)) = (bits(self.network), bits(ip));
        if width != addr_width {
            return false;
        }
        let shift = u32::from(width - self.prefix);
        shift >= 128 || (net >> shift) == (addr >> shift)
    }
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: None,
            max_auth_failures: default_failures(),
            auth_failure_window: default_window(),
            trusted_proxies: Vec::new(),
        }
    }
}

fn default_failures() -> u32 {
    10
}

fn default_window() -> Duration {
    Duration::from_secs(60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_ranges_parse_and_match() {
        let r = ProxyRange::try_from("10.1.0.0/16".to_string()).unwrap();
        assert!(r.contains("10.1.200.3".parse().unwrap()));
        assert!(r.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!r.contains("10.2.0.1".parse().unwrap()));
        let one = ProxyRange::try_from("fd00::1".to_string()).unwrap();
        assert!(one.contains("fd00::1".parse().unwrap()));
        assert!(!one.contains("fd00::2".parse().unwrap()));
        let all = ProxyRange::try_from("0.0.0.0/0".to_string()).unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!(ProxyRange::try_from("10.0.0.0/33".to_string()).is_err());
        assert!(ProxyRange::try_from("proxy.local".to_string()).is_err());
    }
}
