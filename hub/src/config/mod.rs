//! The hub's configuration: what integration engineers write.
//!
//! One TOML file, every key overridable by an environment variable
//! (`RACCORDO__HUB__GRPC_LISTEN=0.0.0.0:50051`). [`load`] reads and
//! types it, reporting every problem with its line and column (or the
//! variable that set the key); [`check`] then validates what the types
//! cannot (routes to unknown adapters, bad patterns, templates that do not
//! compile) and builds nothing. Every key is documented in
//! `docs/configuration.md`.

mod check;
mod collect;
mod document;
mod load;
pub mod suggest;

pub use check::{ConfigIssue, check, warnings};
pub use document::{Origins, Place};
pub use load::{LoadError, LocatedIssue, load, load_lenient};

use raccordo_adapters::registry::AdapterSpec;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub hub: HubConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// Municipalities served, keyed by ISTAT code.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Vendor connections, keyed by instance name (typed per `kind` by
    /// [`load`], so errors can name the key inside the adapter's table).
    #[serde(skip)]
    pub adapters: BTreeMap<String, AdapterConfig>,
    /// The catalogue: service definitions, keyed by service code.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
    /// Which adapter serves which (tenants, service).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Callers of the API and their rights; none declared = open API
    /// (development only: see `security.allow_anonymous`).
    #[serde(default)]
    pub clients: BTreeMap<String, crate::security::config::ClientConfig>,
    /// Authentication settings for every caller.
    #[serde(default)]
    pub security: crate::security::config::SecurityConfig,
    /// Simulated back offices started inside the hub (demos, benchmarks).
    #[serde(default)]
    pub simulators: BTreeMap<String, SimulatorConfig>,
    /// Directory of the configuration file: relative paths resolve here.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The file it was read from, for messages.
    #[serde(skip)]
    pub source: PathBuf,
    /// Where each key was written (or which variable set it).
    #[serde(skip)]
    pub(crate) origins: std::sync::Arc<Origins>,
    /// Entries that did not type ([`load_lenient`]), as `section.NAME` or
    /// `routes[i]`: declared, so references to them are not reported.
    #[serde(skip)]
    pub(crate) unusable: std::collections::BTreeSet<String>,
    /// The position in the file of each route kept, when
    /// [`load_lenient`] left some out; empty when all are kept.
    #[serde(skip)]
    pub(crate) route_index: Vec<usize>,
}

/// `[hub]`: listeners and data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// TLS on both listeners; without it they speak plain text, which is
    /// accepted only on loopback unless `allow_plaintext` is set.
    #[serde(default)]
    pub tls: Option<crate::tls::ListenerTls>,
    /// Listen in plain text on a non-loopback address (behind a
    /// TLS-terminating proxy, on a private network).
    #[serde(default)]
    pub allow_plaintext: bool,
    /// gRPC listener (Practice, Catalog, admin, health, reflection).
    #[serde(default = "default_grpc_listen")]
    pub grpc_listen: SocketAddr,
    /// HTTP listener (`/healthz`, `/readyz`, `/adapters`, `/metrics`, callbacks).
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// Where the embedded store lives (relative to the config file).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// How long a clean shutdown waits for deliveries in flight.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// API calls in progress at once (watch streams, health and reflection
    /// apart); a call beyond it is refused at once with `UNAVAILABLE` and a
    /// retry hint instead of queueing.
    #[serde(default = "default_max_calls_in_progress")]
    pub max_calls_in_progress: usize,
    /// `WatchPractice` and `WatchPractices` streams one client may keep open
    /// at once.
    #[serde(default = "default_max_watch_streams_per_client")]
    pub max_watch_streams_per_client: usize,
    /// Bytes of request messages all calls in progress may hold together;
    /// a call that would pass it is refused at once with
    /// `RESOURCE_EXHAUSTED`. Unset: [`DEFAULT_MAX_IN_FLIGHT_REQUEST_BYTES`],
    /// or the largest `SubmitPractice` request if that is larger (see
    /// [`Config::max_in_flight_request_bytes`]).
    #[serde(default)]
    pub max_in_flight_request_bytes: Option<usize>,
}

/// `hub.max_in_flight_request_bytes` when unset: room for two of the
/// largest submissions the default `[limits]` allow, and many small calls.
pub const DEFAULT_MAX_IN_FLIGHT_REQUEST_BYTES: usize = 64 * 1024 * 1024;

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            grpc_listen: default_grpc_listen(),
            http_listen: default_http_listen(),
            data_dir: default_data_dir(),
            shutdown_grace: default_shutdown_grace(),
            max_calls_in_progress: default_max_calls_in_progress(),
            max_watch_streams_per_client: default_max_watch_streams_per_client(),
            max_in_flight_request_bytes: None,
            tls: None,
            allow_plaintext: false,
        }
    }
}

/// `[store]`: where the hub keeps its state. `kind = "sqlite"` (the
/// default: one embedded file, one hub) or `"postgres"` (a database server
/// that several hub instances can share, `[store.postgres]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Which backend.
    #[serde(default)]
    pub kind: StoreKind,
    /// The PostgreSQL connection, read when `kind = "postgres"`.
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
    /// File name inside `hub.data_dir`.
    #[serde(default = "default_db_file")]
    pub file: String,
    /// `full` (fsync on every commit: an acknowledged practice survives a
    /// power cut) or `normal` (survives a crash of the process, not of the OS).
    #[serde(default)]
    pub synchronous: Synchronous,
    /// Connections for list and document reads running at once; point
    /// reads run on the async workers (writes always go through one
    /// connection).
    #[serde(default = "default_readers")]
    pub read_connections: u32,
    /// Writes waiting for (or running in) the writer's transactions; past
    /// it a new write fails at once with `UNAVAILABLE` instead of queueing.
    #[serde(default = "default_write_queue")]
    pub write_queue: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::Sqlite,
            postgres: None,
            file: default_db_file(),
            synchronous: Synchronous::Full,
            read_connections: default_readers(),
            write_queue: default_write_queue(),
        }
    }
}

/// `store.kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// The embedded SQLite file in `hub.data_dir`.
    #[default]
    Sqlite,
    /// A PostgreSQL database (`[store.postgres]`).
    Postgres,
}

/// `[store.postgres]`. The connection URL carries a password, so it is
/// never written in the configuration: it comes from an environment
/// variable (`url_env`) or a file (`url_file`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Refused when present: only here to name the key in the error.
    #[serde(default)]
    pub url: Option<serde::de::IgnoredAny>,
    /// The environment variable holding the URL (default
    /// `RACCORDO_DATABASE_URL`), used when `url_file` is not set.
    #[serde(default)]
    pub url_env: Option<String>,
    /// A file holding the URL (relative to the configuration file).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Connections in the pool of this hub instance.
    #[serde(default = "default_pg_pool_size")]
    pub pool_size: u32,
    /// A statement running longer is cancelled by the server (0: no limit).
    #[serde(default = "default_pg_statement_timeout", with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// How long to wait for a connection from the pool (or a new one).
    #[serde(default = "default_pg_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// TLS to the database: `disable`, `require` (encrypted, the server's
    /// certificate not checked) or `verify-full` (checked against
    /// `ca_file` and the host name).
    #[serde(default)]
    pub tls: PgTlsMode,
    /// PEM file of the CA(s) that sign the server's certificate
    /// (`verify-full`; relative to the configuration file).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: None,
            url_env: None,
            url_file: None,
            pool_size: default_pg_pool_size(),
            statement_timeout: default_pg_statement_timeout(),
            connect_timeout: default_pg_connect_timeout(),
            tls: PgTlsMode::Disable,
            ca_file: None,
        }
    }
}

impl StoreConfig {
    /// `[store.postgres]`, its defaults when the table is absent.
    pub fn postgres(&self) -> PostgresConfig {
        self.postgres.clone().unwrap_or_default()
    }
}

/// The default variable of the PostgreSQL URL.
pub const DEFAULT_DATABASE_URL_ENV: &str = "RACCORDO_DATABASE_URL";

fn default_pg_pool_size() -> u32 {
    16
}

fn default_pg_statement_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_pg_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `store.postgres.tls`, like libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PgTlsMode {
    /// Plain text (loopback, or a private network).
    #[default]
    Disable,
    /// Encrypted; the server's certificate is not checked.
    Require,
    /// Encrypted; the certificate is checked against `ca_file` and the host.
    VerifyFull,
}

impl PostgresConfig {
    /// The connection URL, from `url_file` or the environment variable;
    /// the error names the key and the reason.
    pub fn connection_url(&self, base_dir: &std::path::Path) -> Result<String, (String, String)> {
        if self.url.is_some() {
            return Err((
                "url".into(),
                "a connection URL carries the database password and is never written in the \
                 configuration: put it in an environment variable (url_env, default \
                 RACCORDO_DATABASE_URL) or a file (url_file)"
                    .into(),
            ));
        }
        if let Some(file) = &self.url_file {
            if self.url_env.is_some() {
                return Err((
                    "url_file".into(),
                    "set either url_file or url_env, not both".into(),
                ));
            }
            let path = base_dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                (
                    "url_file".into(),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let url = text.trim().to_string();
            if url.is_empty() {
                return Err(("url_file".into(), format!("{} is empty", path.display())));
            }
            return Ok(url);
        }
        let var = self.url_env.as_deref().unwrap_or(DEFAULT_DATABASE_URL_ENV);
        match std::env::var(var) {
            Ok(url) if !url.trim().is_empty() => Ok(url.trim().to_string()),
            _ => Err((
                "url_env".into(),
                format!("the environment variable {var} is not set (it holds the connection URL)"),
            )),
        }
    }
}

/// SQLite `synchronous` level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
}

/// `[limits]`: what a submission may weigh.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Form data, as JSON.
    #[serde(default = "default_max_data")]
    pub max_data_bytes: usize,
    #[serde(default = "default_max_attachments")]
    pub max_attachments: usize,
    /// One attachment.
    #[serde(default = "default_max_attachment")]
    pub max_attachment_bytes: usize,
    /// All attachments of a practice together (also bounds the gRPC message).
    #[serde(default = "default_max_total_attachments")]
    pub max_total_attachment_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_data_bytes: default_max_data(),
            max_attachments: default_max_attachments(),
            max_attachment_bytes: default_max_attachment(),
            max_total_attachment_bytes: default_max_total_attachments(),
        }
    }
}

/// `[delivery]`: retry policy defaults (routes may override `max_attempts`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Attempts before a delivery is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubled each attempt, with jitter.
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of the retry delay (and of a vendor's `Retry-After`).
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Safety net: how often workers look for due jobs without a wake-up.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long a claimed attempt holds without renewal: running attempts
    /// are renewed every third of it; one whose lease runs out is sent
    /// again (same operation id).
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            poll_interval: default_poll_interval(),
            lease: default_lease(),
        }
    }
}

/// `[tenants."ISTAT"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// e.g. "Comune di Bergamo".
    pub name: String,
    /// Code in the IPA index, if known.
    #[serde(default)]
    pub ipa_code: Option<String>,
    /// Days a concluded practice (approved, rejected, withdrawn, cancelled)
    /// and its documents are kept before `raccordo purge` removes them;
    /// unset keeps them. The audit trail is never purged.
    #[serde(default)]
    pub retention_days: Option<u32>,
}

/// `[adapters.NAME]`: one vendor connection, parsed as its `kind` says by
/// the adapter registry ([`raccordo_adapters::registry`]), which also
/// builds it.
pub type AdapterConfig = std::sync::Arc<dyn AdapterSpec>;

/// `[services.CODE]`: a catalogue entry, shared by every tenant routing it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Days within which the administration must conclude (law 241/1990: 30).
    #[serde(default = "default_legal_term")]
    pub legal_term_days: u32,
    /// ISTANZA, SCIA, AUTORIZZAZIONE, SILENZIO_ASSENSO, COMUNICAZIONE, …
    #[serde(default = "default_regime")]
    pub regime: String,
    /// The form fields submissions are validated against.
    #[serde(default)]
    pub fields: Vec<FieldConfig>,
    /// The outcome data vendors' results may carry (an amount due, a
    /// certificate's number), declared like form fields; results are
    /// checked against it, and typed by it. Results bring it in parts, so
    /// no field is `required`.
    #[serde(default)]
    pub outcome_data: Vec<FieldConfig>,
}

/// `[[services.CODE.fields]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    pub name: String,
    #[serde(rename = "type", default)]
    pub field_type: FieldType,
    #[serde(default)]
    pub required: bool,
    /// A regular expression the whole value must match (strings).
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub description: String,
}

/// A form field's type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
    /// `YYYY-MM-DD`.
    Date,
    Email,
}

impl FieldType {
    /// The type's name in the catalogue.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Integer => "integer",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Date => "date",
            Self::Email => "email",
        }
    }
}

pub use raccordo_domain::mode::Mode;

/// `[[routes]]`: (tenants, service) → adapter instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// ISTAT codes this route applies to.
    pub tenants: Vec<String>,
    /// A key of `[services]`.
    pub service: String,
    /// A key of `[adapters]`.
    pub adapter: String,
    #[serde(default)]
    pub mode: Mode,
    /// For `sync` and `auto`: how long the submitter waits for the vendor.
    #[serde(default = "default_deadline", with = "humantime_serde")]
    pub deadline: Duration,
    /// Overrides `delivery.max_attempts`.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Send attachments inside the message (`inline`) or only their
    /// metadata and hash (`reference`).
    #[serde(default)]
    pub attachments: AttachmentMode,
    /// Extra values for templates, as `route.*`.
    #[serde(default)]
    pub vars: serde_json::Map<String, serde_json::Value>,
}

/// How attachments travel in the normalized message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentMode {
    #[default]
    Inline,
    Reference,
}

/// `[simulators.NAME]`: a fake vendor REST back office on loopback.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    pub listen: SocketAddr,
    /// `approve` (answers at once with a certificate), `register` (answers
    /// with a protocol number only), `reject`.
    #[serde(default)]
    pub behaviour: SimulatorBehaviour,
    /// Added before each answer, to imitate a slow back office.
    #[serde(default, with = "humantime_serde")]
    pub latency: Duration,
}

/// What a simulated back office answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimulatorBehaviour {
    #[default]
    Approve,
    Register,
    Reject,
}

fn default_grpc_listen() -> SocketAddr {
    "127.0.0.1:50051".parse().expect("literal address")
}
fn default_http_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("literal address")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}
/// 128 per core: two cores saturate at about 32 fast calls in flight, and
/// the rest of the room is for synchronous calls waiting on slow vendors
/// (they hold a slot but no CPU).
fn default_max_calls_in_progress() -> usize {
    128 * std::thread::available_parallelism().map_or(2, |n| n.get())
}
fn default_max_watch_streams_per_client() -> usize {
    1024
}
fn default_write_queue() -> usize {
    crate::store::sqlite::DEFAULT_WRITE_QUEUE
}
fn default_db_file() -> String {
    "raccordo.db".into()
}
fn default_readers() -> u32 {
    4
}
fn default_max_data() -> usize {
    256 * 1024
}
fn default_max_attachments() -> usize {
    20
}
fn default_max_attachment() -> usize {
    10 * 1024 * 1024
}
fn default_max_total_attachments() -> usize {
    25 * 1024 * 1024
}
fn default_max_attempts() -> u32 {
    8
}
fn default_initial_backoff() -> Duration {
    Duration::from_secs(2)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_lease() -> Duration {
    Duration::from_secs(30)
}
fn default_legal_term() -> u32 {
    30
}
fn default_regime() -> String {
    "ISTANZA".into()
}
fn default_deadline() -> Duration {
    Duration::from_secs(10)
}

impl Config {
    /// `routes[i]` as the file numbers the route kept at `i` (counted
    /// from 0, in the order the file lists `[[routes]]`).
    pub fn route_key(&self, i: usize) -> String {
        format!("routes[{}]", self.route_index.get(i).copied().unwrap_or(i))
    }

    /// Whether `section.name` is declared, even if it did not type.
    pub fn declares(&self, section: &str, name: &str) -> bool {
        self.unusable.contains(&format!("{section}.{name}"))
    }

    /// The route serving `service` for `tenant`, if any.
    pub fn route(&self, tenant: &str, service: &str) -> Option<&RouteConfig> {
        self.routes
            .iter()
            .find(|r| r.service == service && r.tenants.iter().any(|t| t == tenant))
    }

    /// Absolute path of the SQLite file.
    pub fn database_path(&self) -> PathBuf {
        self.base_dir
            .join(&self.hub.data_dir)
            .join(&self.store.file)
    }

    /// The largest `SubmitPractice` request accepted on the wire: every
    /// attachment and the form data at their limits, and 1 MiB for the rest.
    pub fn max_submit_request_bytes(&self) -> usize {
        self.limits
            .max_total_attachment_bytes
            .saturating_add(self.limits.max_data_bytes)
            .saturating_add(1 << 20)
    }

    /// `hub.max_in_flight_request_bytes`, or when unset the default, raised
    /// to the largest `SubmitPractice` request so that one always fits.
    pub fn max_in_flight_request_bytes(&self) -> usize {
        self.hub.max_in_flight_request_bytes.unwrap_or_else(|| {
            DEFAULT_MAX_IN_FLIGHT_REQUEST_BYTES.max(self.max_submit_request_bytes())
        })
    }
}
