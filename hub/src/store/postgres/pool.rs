//! Connections: the pool, TLS to the server with rustls, and how the
//! server's errors keep their class.

use crate::config::{PgTlsMode, PostgresConfig};
use crate::store::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, NoTls, TlsConnect, TlsStream};

/// What opening a pool needs besides the URL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub pool_size: u32,
    pub statement_timeout: Duration,
    pub connect_timeout: Duration,
    pub tls: PgTlsMode,
    /// PEM CA file for `verify-full`, already resolved.
    pub ca_file: Option<std::path::PathBuf>,
    /// `search_path` of every connection (tests use a schema each).
    pub search_path: Option<String>,
}

impl PgOptions {
    /// The options of `[store.postgres]`, paths resolved from `base_dir`.
    pub fn from_config(cfg: &PostgresConfig, base_dir: &Path) -> Self {
        Self {
            pool_size: cfg.pool_size,
            statement_timeout: cfg.statement_timeout,
            connect_timeout: cfg.connect_timeout,
            tls: cfg.tls,
            ca_file: cfg.ca_file.as_ref().map(|f| base_dir.join(f)),
            search_path: None,
        }
    }
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 8,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            tls: PgTlsMode::Disable,
            ca_file: None,
            search_path: None,
        }
    }
}

/// How to reach the server: the connection settings and the TLS to use,
/// for the pool's connections and for the instance's listening one alike.
#[derive(Clone)]
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: Option<RustlsConnect>,
}

/// The connection settings of `url` and `opts`. The error names the key
/// it is about (`url`, `tls`, `ca_file`, `pool_size`).
pub fn target(url: &str, opts: &PgOptions) -> Result<Target, (String, String)> {
    let mut pg: tokio_postgres::Config = url.parse().map_err(|e| {
        // The URL is a secret: say what is wrong, never echo it.
        (
            "url".to_string(),
            format!("not a PostgreSQL connection URL: {e}"),
        )
    })?;
    if opts.pool_size == 0 {
        return Err(("pool_size".into(), "must be at least 1".into()));
    }
    pg.connect_timeout(opts.connect_timeout);
    // Added to what the URL's own `options` set (a search_path, say).
    let mut settings = pg
        .get_options()
        .map(|o| format!("{o} "))
        .unwrap_or_default();
    settings.push_str(&format!(
        "-c statement_timeout={}",
        opts.statement_timeout.as_millis()
    ));
    if let Some(path) = &opts.search_path {
        settings.push_str(&format!(" -c search_path={path}"));
    }
    pg.options(&settings);
    pg.application_name("raccordo");
    let tls = match opts.tls {
        PgTlsMode::Disable => {
            pg.ssl_mode(SslMode::Disable);
            None
        }
        mode => {
            pg.ssl_mode(SslMode::Require);
            Some(RustlsConnect::new(mode, opts.ca_file.as_deref())?)
        }
    };
    Ok(Target { config: pg, tls })
}

/// Builds the pool (connections open lazily, on first use). The error
/// names the key it is about (`url`, `tls`, `ca_file`, `pool_size`).
pub fn build(url: &str, opts: &PgOptions) -> Result<Pool, (String, String)> {
    let Target { config: pg, tls } = target(url, opts)?;
    let manager_config = ManagerConfig {
        // A connection comes back to the pool only after its transaction
        // ended (see `Tx`): the fast check is enough.
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        None => Manager::from_config(pg, NoTls, manager_config),
        Some(tls) => Manager::from_config(pg, tls, manager_config),
    };
    Pool::builder(manager)
        .max_size(opts.pool_size as usize)
        .wait_timeout(Some(opts.connect_timeout))
        .create_timeout(Some(opts.connect_timeout))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| ("pool_size".into(), format!("cannot build the pool: {e}")))
}

/// A connection from the pool, or why none could be had (transient).
pub async fn connection(pool: &Pool) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => from_pg(e),
        e => StoreError::Unavailable(format!("no database connection: {e}")),
    })
}

/// Whether the same transaction may succeed if run again from the start.
pub fn is_retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// The class of a server error, by SQLSTATE.
pub fn from_pg(e: tokio_postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection itself failed or is closed.
        return if e.is_closed() || io_cause(&e) {
            StoreError::Unavailable(message)
        } else {
            StoreError::Internal(message)
        };
    };
    let c = code.code();
    match c {
        _ if c.starts_with("08") => StoreError::Unavailable(message),
        "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300" | "57014" | "55P03" => {
            StoreError::Unavailable(message)
        }
        "53100" | "53200" => StoreError::Full(message),
        "XX001" | "XX002" => StoreError::Corrupt(message),
        // An adapter over its limit, raised by the claim check.
        super::cluster::OVER_LIMIT => StoreError::Conflict(message),
        _ => StoreError::Internal(message),
    }
}

fn io_cause(e: &tokio_postgres::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<io::Error>())
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        from_pg(e)
    }
}

/// TLS to the server through rustls (tokio-rustls, already in the tree).
#[derive(Clone)]
pub struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
}

impl RustlsConnect {
    fn new(mode: PgTlsMode, ca_file: Option<&Path>) -> Result<Self, (String, String)> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| ("tls".to_string(), e.to_string()))?;
        let config = match mode {
            PgTlsMode::VerifyFull => {
                let path = ca_file.ok_or_else(|| {
                    (
                        "ca_file".to_string(),
                        "tls = \"verify-full\" needs the CA that signs the server's certificate"
                            .to_string(),
                    )
                })?;
                let pem = std::fs::read(path).map_err(|e| {
                    (
                        "ca_file".to_string(),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let mut roots = rustls::RootCertStore::empty();
                let mut any = false;
                for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                    let cert: CertificateDer<'static> = cert
                        .map_err(|e| ("ca_file".to_string(), format!("{}: {e}", path.display())))?;
                    roots
                        .add(cert)
                        .map_err(|e| ("ca_file".to_string(), format!("{}: {e}", path.display())))?;
                    any = true;
                }
                if !any {
                    return Err((
                        "ca_file".into(),
                        format!("{} holds no PEM certificate", path.display()),
                    ));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth(),
        };
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnector;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnector, Self::Error> {
        Ok(RustlsConnector {
            config: Arc::clone(&self.config),
            name: ServerName::try_from(domain.to_string())?,
        })
    }
}

/// Connects one stream.
pub struct RustlsConnector {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// A TLS stream to the server.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM channel binding is optional; without it the password
        // exchange is still SCRAM over the encrypted stream.
        ChannelBinding::none()
    }
}

/// `tls = "require"`: the handshake's signatures are checked, the
/// certificate's chain and name are not (libpq's `sslmode=require`).
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
