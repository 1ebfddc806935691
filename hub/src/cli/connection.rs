//! How the client commands reach a running hub: its address, TLS, and the
//! credentials every caller of the API presents (an API key, a bearer
//! token, a client certificate).
//!
//! Each setting comes from the first of: a flag, an environment variable,
//! the selected profile of the profile file, a default. The credential (API
//! key or token) is taken whole from the first of these that gives one, so
//! a key from a profile never rides along with a token given on the command
//! line. Secrets are never command-line values (they would show in `ps` and
//! in the shell's history): flags and profiles name files, and the
//! environment may carry the secret itself. A secret is never printed, in
//! errors or anywhere else.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Where the hub is when nothing says otherwise.
pub const DEFAULT_SERVER: &str = "127.0.0.1:50051";
/// The port of a `--server` given without one.
const DEFAULT_PORT: u16 = 50051;
/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variables the credential may come from.
pub const ENV_API_KEY: &str = "RACCORDO_API_KEY";
pub const ENV_API_KEY_FILE: &str = "RACCORDO_API_KEY_FILE";
pub const ENV_TOKEN: &str = "RACCORDO_TOKEN";
pub const ENV_TOKEN_FILE: &str = "RACCORDO_TOKEN_FILE";
/// The profile file, instead of `$XDG_CONFIG_HOME/raccordo/cli.toml`
/// (`~/.config/raccordo/cli.toml`).
pub const ENV_CLI_CONFIG: &str = "RACCORDO_CLI_CONFIG";

/// How to reach the hub: flags of `practice`, `dlq` and `status`.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Connection")]
pub struct ConnectionArgs {
    /// The hub's gRPC address: `host:port` (plain text, or TLS when a TLS
    /// option is set), or `http://host:port`, `https://host:port`
    /// [default: 127.0.0.1:50051].
    #[arg(long, global = true, env = "RACCORDO_SERVER", value_name = "ADDRESS")]
    pub server: Option<String>,
    /// A file holding the API key, sent as `x-api-key`. Or the key in
    /// RACCORDO_API_KEY, or its file in RACCORDO_API_KEY_FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// A file holding a bearer token (JWT), sent as `authorization:
    /// Bearer`. Or the token in RACCORDO_TOKEN, or its file in
    /// RACCORDO_TOKEN_FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificates that sign the hub's certificate (TLS; default:
    /// the system's trusted CAs).
    #[arg(long, global = true, env = "RACCORDO_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --client-key-file).
    #[arg(
        long,
        global = true,
        env = "RACCORDO_CLIENT_CERT_FILE",
        value_name = "FILE"
    )]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(
        long,
        global = true,
        env = "RACCORDO_CLIENT_KEY_FILE",
        value_name = "FILE"
    )]
    pub client_key_file: Option<PathBuf>,
    /// The name the hub's certificate must carry, when it is not the host
    /// of --server (a hub reached by address or through a tunnel).
    #[arg(long, global = true, env = "RACCORDO_SERVER_NAME", value_name = "NAME")]
    pub server_name: Option<String>,
    /// A profile of the profile file (RACCORDO_CLI_CONFIG, or
    /// ~/.config/raccordo/cli.toml); without it, the file's
    /// `default_profile`, else a profile named `default`, if any.
    #[arg(long, global = true, env = "RACCORDO_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
}

/// The profile file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    /// The profile used when none is named.
    #[serde(default)]
    default_profile: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// `[profiles.NAME]`: the same settings as the flags. Paths are relative
/// to the profile file; `~/` is the home directory.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    api_key_file: Option<PathBuf>,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    client_cert_file: Option<PathBuf>,
    #[serde(default)]
    client_key_file: Option<PathBuf>,
    #[serde(default)]
    server_name: Option<String>,
}

/// The profile in use and where it was read.
#[derive(Debug, Clone)]
struct Chosen {
    name: String,
    file: PathBuf,
    profile: Profile,
}

impl Chosen {
    fn origin(&self, key: &str) -> String {
        format!(
            "{key} of profile '{}' in {}",
            self.name,
            self.file.display()
        )
    }

    /// A path of the profile, resolved against the file's directory.
    fn path(&self, p: &Path, home: Option<&Path>) -> PathBuf {
        let p = expand_home(p, home);
        match self.file.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p,
        }
    }
}

fn expand_home(p: &Path, home: Option<&Path>) -> PathBuf {
    match (p.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => p.to_path_buf(),
    }
}

/// A setting and where it came from (for messages).
#[derive(Debug, Clone)]
struct Sourced<T> {
    value: T,
    origin: String,
}

/// What kind of credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    ApiKey,
    Token,
}

impl CredentialKind {
    fn name(self) -> &'static str {
        match self {
            Self::ApiKey => "API key",
            Self::Token => "bearer token",
        }
    }
}

/// An API key or bearer token, ready to send. Its value is never printed
/// (`Debug` shows only its kind and origin).
#[derive(Clone)]
pub struct Credential {
    kind: CredentialKind,
    value: AsciiMetadataValue,
    /// Where it came from: `--api-key-file /path`, `RACCORDO_TOKEN`, ….
    origin: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("kind", &self.kind)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// The kind of credential.
    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// Where it came from, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn new(kind: CredentialKind, secret: &str, origin: String) -> anyhow::Result<Self> {
        let secret = secret.trim();
        if secret.is_empty() {
            anyhow::bail!("{origin}: the {} is empty", kind.name());
        }
        let text = match kind {
            CredentialKind::ApiKey => secret.to_string(),
            CredentialKind::Token => {
                let token = secret
                    .strip_prefix("Bearer ")
                    .or_else(|| secret.strip_prefix("bearer "))
                    .unwrap_or(secret)
                    .trim();
                format!("Bearer {token}")
            }
        };
        // Checked here so the message names the origin and not the value.
        if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            anyhow::bail!(
                "{origin}: the {} holds characters a request header cannot carry (only printable ASCII; one line)",
                kind.name()
            );
        }
        let mut value: AsciiMetadataValue =
            MetadataValue::try_from(text.as_str()).map_err(|_| {
                anyhow::anyhow!("{origin}: the {} is not a valid header value", kind.name())
            })?;
        // Kept out of header compression tables and of debug output.
        value.set_sensitive(true);
        Ok(Self {
            kind,
            value,
            origin,
        })
    }

    fn from_file(kind: CredentialKind, path: &Path, origin: String) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{origin}: cannot read {}", path.display()))?;
        Self::new(kind, &text, origin)
    }
}

/// TLS towards the hub.
#[derive(Debug, Clone, Default)]
struct TlsSettings {
    ca_file: Option<Sourced<PathBuf>>,
    client_cert_file: Option<Sourced<PathBuf>>,
    client_key_file: Option<Sourced<PathBuf>>,
    server_name: Option<Sourced<String>>,
}

impl TlsSettings {
    fn any(&self) -> Option<&str> {
        [
            self.ca_file.as_ref().map(|s| s.origin.as_str()),
            self.client_cert_file.as_ref().map(|s| s.origin.as_str()),
            self.client_key_file.as_ref().map(|s| s.origin.as_str()),
            self.server_name.as_ref().map(|s| s.origin.as_str()),
        ]
        .into_iter()
        .flatten()
        .next()
    }
}

/// Everything needed to call the hub, resolved from flags, environment
/// and profile.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://…` or `https://…`.
    pub url: String,
    tls: Option<TlsSettings>,
    credential: Option<Credential>,
    /// `profile 'NAME' in FILE`, when one was used.
    profile: Option<String>,
}

impl Target {
    /// The API key or token sent with every call, if any.
    pub fn credential(&self) -> Option<&Credential> {
        self.credential.as_ref()
    }

    /// Whether a client certificate is presented.
    pub fn has_client_certificate(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.client_cert_file.is_some())
    }

    /// What this target presents to the hub, in words (never a secret).
    pub fn presented(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.credential {
            parts.push(format!("the {} from {}", c.kind.name(), c.origin));
        }
        if let Some(cert) = self.tls.as_ref().and_then(|t| t.client_cert_file.as_ref()) {
            parts.push(format!(
                "the client certificate {} (from {})",
                cert.value.display(),
                cert.origin
            ));
        }
        let mut text = if parts.is_empty() {
            "no credentials".to_string()
        } else {
            parts.join(" and ")
        };
        if let Some(p) = &self.profile {
            text.push_str(&format!("; {p}"));
        }
        text
    }

    /// The interceptor adding the credential to every call.
    pub fn authorize(&self) -> Authorize {
        Authorize(self.credential.clone().map(Arc::new))
    }

    /// Opens a channel to the hub.
    pub async fn connect(&self) -> anyhow::Result<Channel> {
        let mut endpoint = Endpoint::from_shared(self.url.clone())
            .with_context(|| format!("--server {} is not a valid address", self.url))?
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(client_tls(tls)?)
                .context("the TLS settings")?;
        }
        endpoint
            .connect()
            .await
            .with_context(|| format!("cannot reach the hub at {}", self.url))
    }
}

fn read_pem_certificates(file: &Sourced<PathBuf>) -> anyhow::Result<Vec<u8>> {
    let path = &file.value;
    let pem = std::fs::read(path)
        .with_context(|| format!("{}: cannot read {}", file.origin, path.display()))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| anyhow::anyhow!("{}: {}: {e}", file.origin, path.display()))?;
        count += 1;
    }
    if count == 0 {
        anyhow::bail!(
            "{}: {} holds no PEM certificate",
            file.origin,
            path.display()
        );
    }
    Ok(pem)
}

fn client_tls(tls: &TlsSettings) -> anyhow::Result<ClientTlsConfig> {
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca_file {
        Some(ca) => config.ca_certificate(Certificate::from_pem(read_pem_certificates(ca)?)),
        None => config.with_native_roots(),
    };
    match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let cert_pem = read_pem_certificates(cert)?;
            let key_pem = std::fs::read(&key.value)
                .with_context(|| format!("{}: cannot read {}", key.origin, key.value.display()))?;
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {} holds no usable PEM private key: {e}",
                    key.origin,
                    key.value.display()
                )
            })?;
            config = config.identity(Identity::from_pem(cert_pem, key_pem));
        }
        (Some(cert), None) => anyhow::bail!(
            "{}: a client certificate needs its private key (--client-key-file)",
            cert.origin
        ),
        (None, Some(key)) => anyhow::bail!(
            "{}: a client key needs its certificate (--client-cert-file)",
            key.origin
        ),
        (None, None) => {}
    }
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name.value.clone());
    }
    Ok(config)
}

/// Adds the credential to every call (a tonic interceptor).
#[derive(Debug, Clone)]
pub struct Authorize(Option<Arc<Credential>>);

impl tonic::service::Interceptor for Authorize {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(c) = &self.0 {
            let header = match c.kind {
                CredentialKind::ApiKey => "x-api-key",
                CredentialKind::Token => "authorization",
            };
            request.metadata_mut().insert(header, c.value.clone());
        }
        Ok(request)
    }
}

/// Reads environment variables; empty ones count as unset.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The profile file's default place: `$XDG_CONFIG_HOME/raccordo/cli.toml`,
/// else `~/.config/raccordo/cli.toml`.
fn default_profile_file(env: Env<'_>) -> Option<PathBuf> {
    let config_home = env("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(config_home.join("raccordo").join("cli.toml"))
}

fn load_profile_file(path: &Path) -> anyhow::Result<ProfileFile> {
    let raw = config::Config::builder()
        .add_source(config::File::from(path).format(config::FileFormat::Toml))
        .build()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    serde_path_to_error::deserialize(raw).map_err(|e| {
        let key = e.path().to_string();
        anyhow::anyhow!("{}: {key}: {}", path.display(), e.into_inner())
    })
}

/// The profile to use, if any.
fn choose_profile(args: &ConnectionArgs, env: Env<'_>) -> anyhow::Result<Option<Chosen>> {
    let (file, explicit) = match env(ENV_CLI_CONFIG) {
        Some(p) => (PathBuf::from(p), true),
        None => match default_profile_file(env) {
            Some(p) => (p, false),
            None if args.profile.is_some() => anyhow::bail!(
                "--profile {}: no profile file ({ENV_CLI_CONFIG} is not set, and neither is HOME)",
                args.profile.as_deref().unwrap_or_default()
            ),
            None => return Ok(None),
        },
    };
    if !file.is_file() {
        if let Some(name) = &args.profile {
            anyhow::bail!(
                "--profile {name}: the profile file {} does not exist",
                file.display()
            );
        }
        if explicit {
            anyhow::bail!(
                "{ENV_CLI_CONFIG}: the profile file {} does not exist",
                file.display()
            );
        }
        return Ok(None);
    }
    let mut parsed = load_profile_file(&file)?;
    let known = || {
        let names: Vec<&str> = parsed.profiles.keys().map(String::as_str).collect();
        if names.is_empty() {
            "it declares none".to_string()
        } else {
            format!("it declares {}", names.join(", "))
        }
    };
    let name = match (&args.profile, &parsed.default_profile) {
        (Some(name), _) => {
            if !parsed.profiles.contains_key(name) {
                anyhow::bail!(
                    "--profile {name}: no such profile in {} ({})",
                    file.display(),
                    known()
                );
            }
            name.clone()
        }
        (None, Some(name)) => {
            if !parsed.profiles.contains_key(name) {
                anyhow::bail!(
                    "{}: default_profile: '{name}' is not a profile ({})",
                    file.display(),
                    known()
                );
            }
            name.clone()
        }
        (None, None) if parsed.profiles.contains_key("default") => "default".to_string(),
        (None, None) => return Ok(None),
    };
    let profile = parsed.profiles.remove(&name).unwrap_or_default();
    Ok(Some(Chosen {
        name,
        file,
        profile,
    }))
}

/// The credential from the first level that gives one: flags, then the
/// environment, then the profile. Two at one level are refused: the hub
/// would honour only one, and which one would be a surprise.
fn choose_credential(
    args: &ConnectionArgs,
    env: Env<'_>,
    profile: Option<&Chosen>,
    home: Option<&Path>,
) -> anyhow::Result<Option<Credential>> {
    use CredentialKind::*;
    match (&args.api_key_file, &args.token_file) {
        (Some(_), Some(_)) => {
            anyhow::bail!("--api-key-file and --token-file: give one credential, not both")
        }
        (Some(f), None) => {
            let origin = format!("--api-key-file {}", f.display());
            return Credential::from_file(ApiKey, f, origin).map(Some);
        }
        (None, Some(f)) => {
            let origin = format!("--token-file {}", f.display());
            return Credential::from_file(Token, f, origin).map(Some);
        }
        (None, None) => {}
    }
    let set: Vec<(&str, String)> = [ENV_API_KEY, ENV_API_KEY_FILE, ENV_TOKEN, ENV_TOKEN_FILE]
        .into_iter()
        .filter_map(|name| env(name).map(|v| (name, v)))
        .collect();
    match set.as_slice() {
        [] => {}
        [(name, value)] => {
            let name = *name;
            return match name {
                ENV_API_KEY => Credential::new(ApiKey, value, name.to_string()),
                ENV_TOKEN => Credential::new(Token, value, name.to_string()),
                _ => {
                    let kind = if name == ENV_API_KEY_FILE {
                        ApiKey
                    } else {
                        Token
                    };
                    Credential::from_file(kind, Path::new(value), format!("{name} ({value})"))
                }
            }
            .map(Some);
        }
        several => {
            let names: Vec<&str> = several.iter().map(|(n, _)| *n).collect();
            anyhow::bail!(
                "{} are set: set one credential variable, not several",
                names.join(" and ")
            )
        }
    }
    let Some(chosen) = profile else {
        return Ok(None);
    };
    match (&chosen.profile.api_key_file, &chosen.profile.token_file) {
        (Some(_), Some(_)) => anyhow::bail!(
            "profile '{}' in {}: api_key_file and token_file: give one credential, not both",
            chosen.name,
            chosen.file.display()
        ),
        (Some(f), None) => {
            let path = chosen.path(f, home);
            let origin = format!("{} ({})", chosen.origin("api_key_file"), path.display());
            Credential::from_file(ApiKey, &path, origin).map(Some)
        }
        (None, Some(f)) => {
            let path = chosen.path(f, home);
            let origin = format!("{} ({})", chosen.origin("token_file"), path.display());
            Credential::from_file(Token, &path, origin).map(Some)
        }
        (None, None) => Ok(None),
    }
}

/// `host:port` or a URL, to a URL: without a scheme, `https` when TLS is
/// wanted and `http` otherwise, and port 50051 when none is given.
fn server_url(server: &Sourced<String>, tls: Option<&str>) -> anyhow::Result<(String, bool)> {
    let s = server.value.trim();
    let origin = &server.origin;
    let (https, rest) = if let Some(rest) = s.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = s.strip_prefix("http://") {
        if let Some(tls) = tls {
            anyhow::bail!("{origin} {s}: {tls} asks for TLS: write https:// or no scheme");
        }
        (false, rest)
    } else if let Some((scheme, _)) = s.split_once("://") {
        anyhow::bail!("{origin} {s}: the scheme {scheme}:// is not http:// or https://");
    } else {
        (tls.is_some(), s)
    };
    let scheme = if https { "https" } else { "http" };
    let rest = rest.trim_end_matches('/');
    let uri: http::Uri = format!("{scheme}://{rest}")
        .parse()
        .map_err(|_| anyhow::anyhow!("{origin} {s}: not an address (host:port or a URL)"))?;
    let Some(authority) = uri.authority() else {
        anyhow::bail!("{origin} {s}: no host");
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        anyhow::bail!("{origin} {s}: give the host and port only, no path");
    }
    let url = if authority.port().is_none() && !s.contains("://") {
        format!("{scheme}://{authority}:{DEFAULT_PORT}")
    } else {
        format!("{scheme}://{authority}")
    };
    Ok((url, https))
}

/// Resolves flags (already merged with their environment variables by the
/// argument parser), the credential variables and the profile into a
/// [`Target`].
pub fn resolve(args: &ConnectionArgs, env: Env<'_>) -> anyhow::Result<Target> {
    let chosen = choose_profile(args, env)?;
    let home = env("HOME").map(PathBuf::from);
    let home = home.as_deref();
    let profile = chosen.as_ref().map(|c| &c.profile);
    let pick_path = |arg: &Option<PathBuf>,
                     flag: &str,
                     from_profile: Option<&PathBuf>,
                     key: &str|
     -> Option<Sourced<PathBuf>> {
        match (arg, from_profile, &chosen) {
            (Some(p), _, _) => Some(Sourced {
                value: p.clone(),
                origin: flag.to_string(),
            }),
            (None, Some(p), Some(c)) => Some(Sourced {
                value: c.path(p, home),
                origin: c.origin(key),
            }),
            _ => None,
        }
    };
    let tls = TlsSettings {
        ca_file: pick_path(
            &args.ca_file,
            "--ca-file/RACCORDO_CA_FILE",
            profile.and_then(|p| p.ca_file.as_ref()),
            "ca_file",
        ),
        client_cert_file: pick_path(
            &args.client_cert_file,
            "--client-cert-file/RACCORDO_CLIENT_CERT_FILE",
            profile.and_then(|p| p.client_cert_file.as_ref()),
            "client_cert_file",
        ),
        client_key_file: pick_path(
            &args.client_key_file,
            "--client-key-file/RACCORDO_CLIENT_KEY_FILE",
            profile.and_then(|p| p.client_key_file.as_ref()),
            "client_key_file",
        ),
        server_name: match (&args.server_name, &chosen) {
            (Some(n), _) => Some(Sourced {
                value: n.clone(),
                origin: "--server-name/RACCORDO_SERVER_NAME".into(),
            }),
            (None, Some(c)) => c.profile.server_name.clone().map(|n| Sourced {
                value: n,
                origin: c.origin("server_name"),
            }),
            _ => None,
        },
    };
    let server = match (&args.server, &chosen) {
        (Some(s), _) => Sourced {
            value: s.clone(),
            origin: "--server/RACCORDO_SERVER".into(),
        },
        (None, Some(c)) if c.profile.server.is_some() => Sourced {
            value: c.profile.server.clone().unwrap_or_default(),
            origin: c.origin("server"),
        },
        _ => Sourced {
            value: DEFAULT_SERVER.into(),
            origin: "--server (default)".into(),
        },
    };
    let (url, https) = server_url(&server, tls.any())?;
    let credential = choose_credential(args, env, chosen.as_ref(), home)?;
    Ok(Target {
        url,
        tls: https.then_some(tls),
        credential,
        profile: chosen.map(|c| format!("profile '{}' in {}", c.name, c.file.display())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn resolve_with(
        args: &ConnectionArgs,
        vars: &HashMap<String, String>,
    ) -> anyhow::Result<Target> {
        let lookup = |name: &str| vars.get(name).cloned().filter(|v| !v.is_empty());
        resolve(args, &lookup)
    }

    fn sent(target: &Target) -> Option<(CredentialKind, String)> {
        target
            .credential()
            .map(|c| (c.kind, c.value.to_str().unwrap_or_default().to_string()))
    }

    /// A home with a profile file and a key and token file beside it.
    fn home(profiles: &str) -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join(".config/raccordo");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cli.toml"), profiles).unwrap();
        std::fs::write(dir.join("profile.key"), "key-from-profile\n").unwrap();
        std::fs::write(home.path().join("flag.key"), "key-from-flag\n").unwrap();
        std::fs::write(home.path().join("flag.jwt"), "token.from.flag\n").unwrap();
        home
    }

    const PROFILES: &str = r#"
default_profile = "ops"

[profiles.ops]
server = "hub.comune.local:7000"
api_key_file = "profile.key"
ca_file = "~/ca.pem"
server_name = "hub.internal"

[profiles.plain]
server = "http://127.0.0.1:9000"
"#;

    #[test]
    fn a_server_without_scheme_is_http_or_https_as_tls_is_asked() {
        let plain = resolve_with(
            &ConnectionArgs {
                server: Some("127.0.0.1:50051".into()),
                ..Default::default()
            },
            &env_of(&[]),
        )
        .unwrap();
        assert_eq!(plain.url, "http://127.0.0.1:50051");
        assert!(plain.tls.is_none());

        let tls = resolve_with(
            &ConnectionArgs {
                server: Some("hub.local".into()),
                server_name: Some("hub.example".into()),
                ..Default::default()
            },
            &env_of(&[]),
        )
        .unwrap();
        assert_eq!(tls.url, "https://hub.local:50051");
        assert!(tls.tls.is_some());

        let default = resolve_with(&ConnectionArgs::default(), &env_of(&[])).unwrap();
        assert_eq!(default.url, "http://127.0.0.1:50051");

        let v6 = resolve_with(
            &ConnectionArgs {
                server: Some("[::1]:50051".into()),
                ..Default::default()
            },
            &env_of(&[]),
        )
        .unwrap();
        assert_eq!(v6.url, "http://[::1]:50051");

        let e = resolve_with(
            &ConnectionArgs {
                server: Some("http://127.0.0.1:50051".into()),
                ca_file: Some("ca.pem".into()),
                ..Default::default()
            },
            &env_of(&[]),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("--ca-file/RACCORDO_CA_FILE asks for TLS"),
            "{e}"
        );
        let e = resolve_with(
            &ConnectionArgs {
                server: Some("grpc://127.0.0.1:50051".into()),
                ..Default::default()
            },
            &env_of(&[]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("grpc://"), "{e}");
    }

    #[test]
    fn flags_win_over_the_environment_which_wins_over_the_profile() {
        let home = home(PROFILES);
        let h = home.path().to_str().unwrap();
        // The profile alone.
        let t = resolve_with(&ConnectionArgs::default(), &env_of(&[("HOME", h)])).unwrap();
        assert_eq!(t.url, "https://hub.comune.local:7000");
        assert_eq!(
            sent(&t),
            Some((CredentialKind::ApiKey, "key-from-profile".into()))
        );
        let tls = t.tls.as_ref().unwrap();
        assert_eq!(
            tls.ca_file.as_ref().unwrap().value,
            home.path().join("ca.pem")
        );
        assert_eq!(tls.server_name.as_ref().unwrap().value, "hub.internal");
        assert!(
            t.presented().contains("api_key_file of profile 'ops'"),
            "{}",
            t.presented()
        );

        // The environment's token replaces the profile's key entirely.
        let t = resolve_with(
            &ConnectionArgs::default(),
            &env_of(&[("HOME", h), (ENV_TOKEN, "token.from.env")]),
        )
        .unwrap();
        assert_eq!(
            sent(&t),
            Some((CredentialKind::Token, "Bearer token.from.env".into()))
        );

        // A flag's file wins over both.
        let args = ConnectionArgs {
            api_key_file: Some(home.path().join("flag.key")),
            server: Some("127.0.0.1:1".into()),
            ..Default::default()
        };
        let t = resolve_with(
            &args,
            &env_of(&[("HOME", h), (ENV_TOKEN, "token.from.env")]),
        )
        .unwrap();
        assert_eq!(
            sent(&t),
            Some((CredentialKind::ApiKey, "key-from-flag".into()))
        );
        // The flag's server, the profile's TLS settings: https.
        assert_eq!(t.url, "https://127.0.0.1:1");

        // Another profile, named.
        let t = resolve_with(
            &ConnectionArgs {
                profile: Some("plain".into()),
                ..Default::default()
            },
            &env_of(&[("HOME", h)]),
        )
        .unwrap();
        assert_eq!(t.url, "http://127.0.0.1:9000");
        assert!(t.credential().is_none());
    }

    #[test]
    fn unclear_credentials_are_refused_with_their_origin_and_never_their_value() {
        let home = home(PROFILES);
        let h = home.path().to_str().unwrap();
        let e = resolve_with(
            &ConnectionArgs::default(),
            &env_of(&[("HOME", h), (ENV_API_KEY, "k1"), (ENV_TOKEN, "t1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("RACCORDO_API_KEY and RACCORDO_TOKEN"), "{e}");
        assert!(!e.contains("k1") && !e.contains("t1"), "{e}");

        let e = resolve_with(
            &ConnectionArgs {
                api_key_file: Some(home.path().join("flag.key")),
                token_file: Some(home.path().join("flag.jwt")),
                ..Default::default()
            },
            &env_of(&[("HOME", h)]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("give one credential"), "{e}");

        let e = resolve_with(
            &ConnectionArgs::default(),
            &env_of(&[("HOME", h), (ENV_API_KEY, "secret\u{e8}value")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("RACCORDO_API_KEY: the API key holds characters"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");

        let missing = home.path().join("nowhere.key");
        let e = resolve_with(
            &ConnectionArgs {
                api_key_file: Some(missing.clone()),
                ..Default::default()
            },
            &env_of(&[("HOME", h)]),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains(&format!("--api-key-file {}", missing.display())));

        let credential = resolve_with(
            &ConnectionArgs::default(),
            &env_of(&[("HOME", h), (ENV_API_KEY, "very-secret-key")]),
        )
        .unwrap();
        assert!(!format!("{credential:?}").contains("very-secret-key"));
    }

    #[test]
    fn profiles_are_chosen_by_name_default_or_not_at_all() {
        let home = home(PROFILES);
        let h = home.path().to_str().unwrap();
        let e = resolve_with(
            &ConnectionArgs {
                profile: Some("opps".into()),
                ..Default::default()
            },
            &env_of(&[("HOME", h)]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--profile opps: no such profile"), "{e}");
        assert!(e.contains("it declares ops, plain"), "{e}");

        // No profile file: defaults, unless a profile is asked for.
        let empty = tempfile::tempdir().unwrap();
        let e = empty.path().to_str().unwrap();
        let t = resolve_with(&ConnectionArgs::default(), &env_of(&[("HOME", e)])).unwrap();
        assert_eq!(t.url, "http://127.0.0.1:50051");
        assert!(
            resolve_with(
                &ConnectionArgs {
                    profile: Some("ops".into()),
                    ..Default::default()
                },
                &env_of(&[("HOME", e)])
            )
            .is_err()
        );

        // RACCORDO_CLI_CONFIG names another file; an unknown key is named.
        let other = empty.path().join("other.toml");
        std::fs::write(
            &other,
            "[profiles.default]\nserver = \"10.0.0.1:1\"\nca_fle = \"x\"\n",
        )
        .unwrap();
        let err = resolve_with(
            &ConnectionArgs::default(),
            &env_of(&[("HOME", e), (ENV_CLI_CONFIG, other.to_str().unwrap())]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("profiles.default.ca_fle"), "{err}");
        std::fs::write(&other, "[profiles.default]\nserver = \"10.0.0.1:1\"\n").unwrap();
        let t = resolve_with(
            &ConnectionArgs::default(),
            &env_of(&[("HOME", e), (ENV_CLI_CONFIG, other.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(t.url, "http://10.0.0.1:1");
    }
}
