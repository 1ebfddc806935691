//! TLS on the hub's own listeners: server certificates, client certificates
//! as identities, refused strangers, certificate reload without restart,
//! and the plain-text rule.

use crate::support::*;
use raccordo_proto::v1 as pb;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tls")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

/// SHA-256 of a PEM certificate's DER bytes, as `certificate_sha256` wants.
fn der_sha256(pem: &str) -> String {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn tls_hub() -> TestHub {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let vendor = Vendor::start().await;
    let mut options = HubOptions::new(&vendor.url());
    std::mem::forget(vendor);
    options.files = vec![
        ("server.pem".into(), read("server.pem")),
        ("server.key".into(), read("server.key")),
        ("ca.pem".into(), read("ca.pem")),
    ];
    options.extra_toml = format!(
        r#"
[clients.desk-by-certificate]
role = "frontoffice"
tenants = ["016024"]
certificate_sha256 = "{client}"

[clients.portal-by-key]
role = "frontoffice"
tenants = ["016024"]
api_key_sha256 = "{key}"
"#,
        client = der_sha256(&read("client.pem")),
        key = Sha256::digest(b"portal-key")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    ) + r#"
[hub.tls]
cert_file = "server.pem"
key_file = "server.key"
client_ca_file = "ca.pem"
client_auth = "optional"
reload_interval = "100ms"
"#;
    start_hub(options).await
}

async fn channel(
    hub: &TestHub,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let addr = hub.hub.as_ref().unwrap().grpc_addr;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(read(cert), read(key)));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn list(channel: Channel, api_key: Option<&str>) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(pb::ListPracticesRequest {
        tenant_id: "016024".into(),
        ..Default::default()
    });
    if let Some(k) = api_key {
        request
            .metadata_mut()
            .insert("x-api-key", k.parse().unwrap());
    }
    pb::practice_service_client::PracticeServiceClient::new(channel)
        .list_practices(request)
        .await
        .map(drop)
}

#[tokio::test]
async fn a_client_certificate_identifies_a_client_and_a_stranger_is_refused() {
    let hub = tls_hub().await;
    let with_cert = channel(&hub, Some(("client.pem", "client.key")))
        .await
        .unwrap();
    list(with_cert, None)
        .await
        .expect("the certificate is the credential");

    let plain_tls = channel(&hub, None).await.unwrap();
    list(plain_tls.clone(), Some("portal-key"))
        .await
        .expect("TLS without a certificate, with a key");
    let e = list(plain_tls, None).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);

    // A certificate from another CA does not get through the handshake.
    let intruder = match channel(&hub, Some(("intruder.pem", "intruder.key"))).await {
        Err(_) => None,
        Ok(c) => Some(list(c, Some("portal-key")).await),
    };
    assert!(
        matches!(intruder, None | Some(Err(_))),
        "an unknown certificate must be refused: {intruder:?}"
    );
    if let Some(Err(e)) = &intruder {
        // The hub's handshake alert reaches the client: unknown CA.
        assert!(format!("{e:?}").contains("UnknownCA"), "{e:?}");
    }
    hub.stop().await;
}

/// The certificate the server presents on a fresh handshake, and what it
/// answers to a plain HTTP/1.1 request over it.
async fn handshake(addr: std::net::SocketAddr, path: &str) -> (Vec<u8>, String) {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    roots
        .add(CertificateDer::from_pem_slice(read("ca.pem").as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer).await;
    (cert, answer)
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let hub = tls_hub().await;
    let http = hub.hub.as_ref().unwrap().http_addr;
    let (first, answer) = handshake(http, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    let der = |pem: &str| {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    };
    assert_eq!(first, der(&read("server.pem")));

    // Renewal: write the new key first, then the certificate (as certbot does).
    let dir = hub.dir.path();
    std::fs::write(dir.join("server.key"), read("server2.key")).unwrap();
    std::fs::write(dir.join("server.pem"), read("server2.pem")).unwrap();
    let renewed = der(&read("server2.pem"));
    eventually("the renewed certificate served", || {
        let renewed = renewed.clone();
        async move {
            let (cert, _) = handshake(http, "/healthz").await;
            (cert == renewed).then_some(())
        }
    })
    .await;
    // The gRPC listener reloads too, and existing clients keep working.
    let channel = channel(&hub, Some(("client.pem", "client.key")))
        .await
        .unwrap();
    list(channel, None).await.unwrap();
    hub.stop().await;
}

#[tokio::test]
async fn plain_text_on_a_public_address_needs_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = HubOptions::new("http://127.0.0.1:9");
    options.grpc_listen = "0.0.0.0:0".into();
    options.extra_toml = "[security]\nallow_anonymous = true\n".into();
    let path = dir.path().join("raccordo.toml");
    std::fs::write(&path, config_toml(&options) + &options.extra_toml).unwrap();
    let check = |path: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_raccordo"))
            .args(["check", "--config"])
            .arg(path)
            .output()
            .unwrap()
    };
    let refused = check(&path);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("hub.grpc_listen: 0.0.0.0:0 is not loopback and hub.tls is not set"),
        "{err}"
    );

    let toml = config_toml(&options).replacen("[hub]\n", "[hub]\nallow_plaintext = true\n", 1)
        + &options.extra_toml;
    std::fs::write(&path, toml).unwrap();
    let allowed = check(&path);
    let err = String::from_utf8_lossy(&allowed.stderr);
    assert!(allowed.status.success(), "{err}");
    assert!(
        err.contains("warning: hub.grpc_listen: plain text on 0.0.0.0:0"),
        "{err}"
    );
    assert!(err.contains("warning: security.allow_anonymous"), "{err}");
}
