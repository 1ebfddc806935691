//! TLS for the hub's own listeners (gRPC and HTTP), with rustls.
//!
//! - The certificate and key are re-read when their files change, so a
//!   renewed certificate is served without a restart (checked every
//!   `reload_interval`; a broken new pair is refused and the old one kept).
//! - Client certificates are verified against `client_ca_file` when
//!   configured (`client_auth = "optional"` or `"required"`); the SHA-256 of
//!   a verified client certificate can identify a client
//!   (`clients.NAME.certificate_sha256`).
//! - Handshakes run in their own tasks with a timeout, so a client that
//!   opens a connection and says nothing holds up no one else.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long a client has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether clients present certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// No client certificates asked for.
    #[default]
    None,
    /// Verified when presented; clients may also use keys or tokens.
    Optional,
    /// Every connection must present a certificate signed by the CA.
    Required,
}

/// `[hub.tls]`: TLS on both listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that sign client certificates.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// How often the certificate files are checked for changes.
    #[serde(default = "default_reload", with = "humantime_serde")]
    pub reload_interval: Duration,
}

fn default_reload() -> Duration {
    Duration::from_secs(30)
}

/// A TLS configuration error: (key inside `hub.tls`, reason).
pub type TlsError = (String, String);

fn load_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            (
                "cert_file".to_string(),
                format!("cannot read certificates from {}: {e}", cert.display()),
            )
        })?;
    if certs.is_empty() {
        return Err((
            "cert_file".into(),
            format!("{} holds no certificate", cert.display()),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        (
            "key_file".to_string(),
            format!("cannot read a private key from {}: {e}", key.display()),
        )
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    CertifiedKey::from_der(certs, private, &provider).map_err(|e| {
        (
            "key_file".to_string(),
            format!("the key does not match the certificate or is unsupported: {e}"),
        )
    })
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The served certificate, swapped when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
    cert: PathBuf,
    key: PathBuf,
    stamp: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.read().expect("cert lock")))
    }
}

impl ReloadingCert {
    /// Re-reads the pair if either file changed; keeps the old one when
    /// the new one does not load. Returns whether it swapped.
    pub fn reload_if_changed(&self) -> bool {
        let now = (modified(&self.cert), modified(&self.key));
        if *self.stamp.read().expect("stamp lock") == now {
            return false;
        }
        match load_key(&self.cert, &self.key) {
            Ok(key) => {
                *self.current.write().expect("cert lock") = Arc::new(key);
                *self.stamp.write().expect("stamp lock") = now;
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            Err((key, reason)) => {
                tracing::warn!(%key, %reason, "the changed TLS certificate does not load; still serving the previous one");
                false
            }
        }
    }
}

/// Everything a listener needs to speak TLS.
#[derive(Clone)]
pub struct TlsSetup {
    acceptor: tokio_rustls::TlsAcceptor,
    /// The certificate in use (for reloading).
    pub cert: Arc<ReloadingCert>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup").finish_non_exhaustive()
    }
}

/// Builds the TLS setup; `alpn` lists the protocols offered (`h2` for
/// gRPC; `h2` and `http/1.1` for HTTP). Errors name the key in `hub.tls`.
pub fn setup(cfg: &ListenerTls, base_dir: &Path, alpn: &[&[u8]]) -> Result<TlsSetup, TlsError> {
    let cert_path = base_dir.join(&cfg.cert_file);
    let key_path = base_dir.join(&cfg.key_file);
    let key = load_key(&cert_path, &key_path)?;
    let cert = Arc::new(ReloadingCert {
        current: RwLock::new(Arc::new(key)),
        stamp: RwLock::new((modified(&cert_path), modified(&key_path))),
        cert: cert_path,
        key: key_path,
    });
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| ("".to_string(), e.to_string()))?;
    let builder = match (&cfg.client_ca_file, cfg.client_auth) {
        (_, ClientAuth::None) => builder.with_no_client_auth(),
        (None, _) => {
            return Err((
                "client_ca_file".into(),
                "is required when client_auth is optional or required".into(),
            ));
        }
        (Some(ca), mode) => {
            let ca_path = base_dir.join(ca);
            let mut roots = rustls::RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(&ca_path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    (
                        "client_ca_file".to_string(),
                        format!("cannot read {}: {e}", ca_path.display()),
                    )
                })?;
            for c in cas {
                roots.add(c).map_err(|e| {
                    (
                        "client_ca_file".to_string(),
                        format!("not a usable CA certificate: {e}"),
                    )
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if mode == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| ("client_ca_file".to_string(), e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::clone(&cert) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsSetup {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        cert,
    })
}

/// What the hub knows about a TLS connection's peer.
#[derive(Debug, Clone)]
pub struct TlsConnectInfo {
    pub remote_addr: Option<SocketAddr>,
    /// Hex SHA-256 of the client certificate, when one was presented and verified.
    pub peer_certificate_sha256: Option<String>,
}

/// An accepted, handshaken TLS connection.
#[derive(Debug)]
pub struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: TlsConnectInfo,
}

impl TlsConn {
    /// The peer's address and certificate.
    pub fn info(&self) -> &TlsConnectInfo {
        &self.info
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

/// Accepts TCP connections on `listener` and hands over those whose TLS
/// handshake succeeds. Also checks the certificate files for changes.
pub fn accept(listener: TcpListener, tls: TlsSetup, reload: Duration) -> mpsc::Receiver<TlsConn> {
    let (tx, rx) = mpsc::channel(64);
    let cert = Arc::clone(&tls.cert);
    let ticker_tx = tx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(reload.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if ticker_tx.is_closed() {
                break;
            }
            cert.reload_if_changed();
        }
    });
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let peer_certificate_sha256 = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| {
                                raccordo_adapters::model::lower_hex(&Sha256::digest(c.as_ref()))
                            });
                        let info = TlsConnectInfo {
                            remote_addr: Some(remote),
                            peer_certificate_sha256,
                        };
                        let _ = tx.send(TlsConn { stream, info }).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %remote, error = %e, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(peer = %remote, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

/// The HTTP listener's side: accepted TLS connections for `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    pub connections: mpsc::Receiver<TlsConn>,
    pub local_addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(conn) => {
                let addr = conn.info.remote_addr.unwrap_or(self.local_addr);
                (conn, addr)
            }
            // The acceptor stopped: serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
