//! The command line behind real security: `raccordo practice`, `dlq` and
//! `status` against hubs that authenticate callers by API key, by JWT and
//! by client certificate over mutual TLS. Each command family works with
//! the right credentials, from a flag, the environment or a profile, and
//! fails clearly without them; secrets never appear in its output.

use crate::support::*;
use raccordo_proto::v1 as pb;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Output;

const SECRET: &str = "a-shared-hs256-secret-of-at-least-32-bytes";
const PORTAL_KEY: &str = "portal-bergamo-key-4f1c9e";
const OPS_KEY: &str = "operations-key-77a0d2";
const OPS_ISSUER: &str = "https://sso.regione.example";
const DESK_ISSUER: &str = "https://sso.comune.padova.it";

fn sha(s: &[u8]) -> String {
    Sha256::digest(s)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn token(issuer: &str, subject: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": issuer, "aud": "raccordo", "sub": subject, "iat": now, "exp": now + 600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tls")
        .join(name)
}

fn der_sha256(pem_file: &str) -> String {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_file(tls_fixture(pem_file)).unwrap();
    sha(der.as_ref())
}

/// `raccordo ARGS` with only `envs` in its environment (so the caller's
/// own variables and profile file play no part) and `HOME` at `home`.
async fn raccordo(home: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.env_clear().env("HOME", home).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run raccordo")
}

/// What the command printed, both streams.
fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn succeeded(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", printed(out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[track_caller]
fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", printed(out));
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A hub with an API-key front office for Bergamo, an operator of Padova
/// and an operations client by JWT, and an operations client by API key.
async fn hub_with_keys_and_tokens() -> (TestHub, Vendor) {
    let vendor = Vendor::start().await;
    let mut options = HubOptions::new(&vendor.url());
    options.files = vec![("jwt.secret".into(), SECRET.into())];
    options.extra_toml = format!(
        r#"
[clients.portal-bg]
role = "frontoffice"
tenants = ["016024"]
api_key_sha256 = "{portal}"

[clients.ops]
role = "admin"
tenants = ["*"]
api_key_sha256 = "{ops}"

[clients.ops-sso]
role = "admin"
tenants = ["*"]
[clients.ops-sso.jwt]
issuer = "{OPS_ISSUER}"
audience = "raccordo"
hs256_secret_file = "jwt.secret"

[clients.desk-pd]
role = "operator"
tenants = ["028060"]
[clients.desk-pd.jwt]
issuer = "{DESK_ISSUER}"
audience = "raccordo"
hs256_secret_file = "jwt.secret"
"#,
        portal = sha(PORTAL_KEY.as_bytes()),
        ops = sha(OPS_KEY.as_bytes()),
    );
    (start_hub(options).await, vendor)
}

/// Submits over gRPC as the Bergamo portal.
async fn submit_as_portal(hub: &TestHub, request: pb::SubmitPracticeRequest) -> pb::Practice {
    let mut r = tonic::Request::new(request);
    r.metadata_mut()
        .insert("x-api-key", PORTAL_KEY.parse().unwrap());
    hub.practices
        .clone()
        .submit_practice(r)
        .await
        .expect("submit")
        .into_inner()
        .practice
        .unwrap()
}

#[tokio::test]
async fn every_command_family_works_with_keys_or_tokens_and_fails_clearly_without() {
    let (hub, vendor) = hub_with_keys_and_tokens().await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // Without a scheme: plain text, as the hub listens on loopback.
    let server = hub.hub.as_ref().unwrap().grpc_addr.to_string();
    let s = server.as_str();
    std::fs::write(h.join("ops.key"), format!("{OPS_KEY}\n")).unwrap();
    std::fs::write(h.join("portal.key"), PORTAL_KEY).unwrap();
    std::fs::write(h.join("ops.jwt"), token(OPS_ISSUER, "sre-on-call")).unwrap();
    let desk_token = token(DESK_ISSUER, "op-padova-7");
    let ops_key_file = h.join("ops.key");
    let ops_key_file = ops_key_file.to_str().unwrap();
    let ops_jwt_file = h.join("ops.jwt");
    let ops_jwt_file = ops_jwt_file.to_str().unwrap();

    // A delivery the vendor refuses for good: a dead letter.
    vendor.push(Answer::new(422, json!({"title": "dati incompleti"})));
    let dead = submit_as_portal(&hub, tari_request("016024", "cli-dead")).await;
    let dead_id = dead.id.as_str();

    // No credentials: each family is refused, and says what to do.
    for args in [
        vec!["status", "--server", s],
        vec!["dlq", "list", "--server", s],
        vec!["practice", "list", "--tenant", "016024", "--server", s],
    ] {
        let err = failed(&raccordo(h, &args, &[]).await);
        assert!(err.contains("Unauthenticated"), "{args:?}: {err}");
        assert!(err.contains("sent: no credentials"), "{args:?}: {err}");
        assert!(
            err.contains("requires credentials: give --api-key-file FILE or --token-file FILE, set RACCORDO_API_KEY or RACCORDO_TOKEN"),
            "{args:?}: {err}"
        );
    }

    // dlq: the key's file named by a flag, then by RACCORDO_API_KEY_FILE.
    eventually("the dead letter listed", || async move {
        let out = raccordo(
            h,
            &[
                "dlq",
                "list",
                "--json",
                "--server",
                s,
                "--api-key-file",
                ops_key_file,
            ],
            &[],
        )
        .await;
        assert!(out.status.success(), "{}", printed(&out));
        String::from_utf8_lossy(&out.stdout)
            .contains(dead_id)
            .then_some(())
    })
    .await;
    let out = succeeded(
        &raccordo(
            h,
            &["dlq", "list", "--server", s],
            &[("RACCORDO_API_KEY_FILE", ops_key_file)],
        )
        .await,
    );
    assert!(out.contains(dead_id), "{out}");

    // status: an API key from the environment, a token from a file.
    let out = succeeded(
        &raccordo(
            h,
            &["status", "--server", s],
            &[("RACCORDO_API_KEY", OPS_KEY)],
        )
        .await,
    );
    assert!(out.contains("READY") && out.contains("vendor"), "{out}");
    let out = succeeded(
        &raccordo(
            h,
            &[
                "status",
                "--json",
                "--server",
                s,
                "--token-file",
                ops_jwt_file,
            ],
            &[],
        )
        .await,
    );
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["adapters"][0]["dead_letters"], 1, "{status}");

    // An approved practice (the vendor's next answer approves).
    let approved = submit_as_portal(&hub, cert_request("016024", "cli-approved")).await;
    assert_eq!(
        approved.status,
        pb::AdministrativeStatus::Approved as i32,
        "{approved:?}"
    );

    // practice: the portal's key from the default profile.
    let config_dir = h.join(".config/raccordo");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::copy(h.join("portal.key"), config_dir.join("portal.key")).unwrap();
    std::fs::write(
        config_dir.join("cli.toml"),
        format!(
            "default_profile = \"portal\"\n\n[profiles.portal]\nserver = \"{s}\"\napi_key_file = \"portal.key\"\n\n[profiles.stale]\nserver = \"{s}\"\napi_key_file = \"~/stale.key\"\n"
        ),
    )
    .unwrap();
    std::fs::write(h.join("stale.key"), "a-revoked-key-9c2b").unwrap();
    let out = succeeded(&raccordo(h, &["practice", "list", "--tenant", "016024"], &[]).await);
    assert!(out.contains(&approved.id), "{out}");
    let out = succeeded(
        &raccordo(
            h,
            &["practice", "get", "--tenant", "016024", &approved.id],
            &[],
        )
        .await,
    );
    assert!(out.contains("APPROVED"), "{out}");
    // A concluded practice's events, then the stream ends.
    let out = succeeded(
        &raccordo(
            h,
            &["practice", "watch", "--tenant", "016024", &approved.id],
            &[],
        )
        .await,
    );
    assert!(out.contains("APPROVED"), "{out}");

    // An operator's token from the environment: its tenant only.
    // A practice the vendor registers (not concluded): it can be withdrawn.
    vendor.push(Answer::new(
        200,
        json!({"esito": "PRESO", "protocollo": {"numero": "2026/000777"}}),
    ));
    let open = submit_as_portal(&hub, tari_request("016024", "cli-open")).await;
    let out = succeeded(
        &raccordo(
            h,
            &["practice", "list", "--tenant", "028060", "--json"],
            &[("RACCORDO_TOKEN", &desk_token)],
        )
        .await,
    );
    assert!(!out.contains(&approved.id), "{out}");
    let err = failed(
        &raccordo(
            h,
            &["practice", "withdraw", "--tenant", "016024", &open.id],
            &[("RACCORDO_TOKEN", &desk_token)],
        )
        .await,
    );
    assert!(err.contains("PermissionDenied"), "{err}");
    assert!(
        err.contains("sent: the bearer token from RACCORDO_TOKEN"),
        "{err}"
    );
    assert!(!err.contains(&desk_token), "{err}");

    // Flag > environment > profile: the profile's stale key loses to the
    // environment, the environment's wrong key to the flag.
    let out = succeeded(
        &raccordo(
            h,
            &[
                "practice",
                "list",
                "--tenant",
                "016024",
                "--profile",
                "stale",
            ],
            &[("RACCORDO_API_KEY", PORTAL_KEY)],
        )
        .await,
    );
    assert!(out.contains(&approved.id), "{out}");
    let portal_key_file = h.join("portal.key");
    let out = succeeded(
        &raccordo(
            h,
            &[
                "practice",
                "withdraw",
                "--tenant",
                "016024",
                &open.id,
                "--api-key-file",
                portal_key_file.to_str().unwrap(),
            ],
            &[("RACCORDO_API_KEY", "a-wrong-key-5e1a")],
        )
        .await,
    );
    assert!(out.contains("WITHDRAWN"), "{out}");

    // A refused key is named by where it came from, never shown.
    let err = failed(
        &raccordo(
            h,
            &[
                "practice",
                "list",
                "--tenant",
                "016024",
                "--profile",
                "stale",
            ],
            &[],
        )
        .await,
    );
    assert!(err.contains("Unauthenticated: unknown API key"), "{err}");
    assert!(
        err.contains("sent: the API key from api_key_file of profile 'stale'"),
        "{err}"
    );
    assert!(!err.contains("a-revoked-key-9c2b"), "{err}");
    // The right key for the wrong role.
    let err = failed(
        &raccordo(
            h,
            &["status", "--server", s],
            &[("RACCORDO_API_KEY", PORTAL_KEY)],
        )
        .await,
    );
    assert!(
        err.contains("PermissionDenied: the frontoffice role may not call"),
        "{err}"
    );

    // Not even the most verbose log shows a secret.
    let out = raccordo(
        h,
        &["status", "--server", s, "--api-key-file", ops_key_file],
        &[("RUST_LOG", "trace")],
    )
    .await;
    succeeded(&out);
    let all = printed(&out);
    assert!(!all.contains(OPS_KEY), "the key leaked into the output");
    let out = raccordo(
        h,
        &["status", "--server", s],
        &[("RUST_LOG", "trace"), ("RACCORDO_TOKEN", &desk_token)],
    )
    .await;
    assert!(
        !printed(&out).contains(&desk_token),
        "the token leaked into the output"
    );
    hub.stop().await;
}

/// A hub on TLS that verifies client certificates: an operations client
/// identified by its certificate, a front office by API key.
async fn hub_with_mutual_tls() -> (TestHub, Vendor) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let vendor = Vendor::start().await;
    let mut options = HubOptions::new(&vendor.url());
    let read = |name: &str| std::fs::read_to_string(tls_fixture(name)).unwrap();
    options.files = vec![
        ("server.pem".into(), read("server.pem")),
        ("server.key".into(), read("server.key")),
        ("ca.pem".into(), read("ca.pem")),
    ];
    options.extra_toml = format!(
        r#"
[clients.ops-by-certificate]
role = "admin"
tenants = ["*"]
certificate_sha256 = "{cert}"

[clients.portal-bg]
role = "frontoffice"
tenants = ["016024"]
api_key_sha256 = "{portal}"

[hub.tls]
cert_file = "server.pem"
key_file = "server.key"
client_ca_file = "ca.pem"
client_auth = "optional"
"#,
        cert = der_sha256("client.pem"),
        portal = sha(PORTAL_KEY.as_bytes()),
    );
    (start_hub(options).await, vendor)
}

#[tokio::test]
async fn over_mutual_tls_a_client_certificate_is_the_credential() {
    let (hub, _vendor) = hub_with_mutual_tls().await;
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let port = hub.hub.as_ref().unwrap().grpc_addr.port();
    let by_address = format!("127.0.0.1:{port}");
    let fixture = |n: &str| tls_fixture(n).to_str().unwrap().to_string();
    let (ca, cert, key) = (
        fixture("ca.pem"),
        fixture("client.pem"),
        fixture("client.key"),
    );

    // The certificate by flags; https because TLS options are given.
    let out = succeeded(
        &raccordo(
            h,
            &[
                "status",
                "--server",
                &by_address,
                "--ca-file",
                &ca,
                "--client-cert-file",
                &cert,
                "--client-key-file",
                &key,
            ],
            &[],
        )
        .await,
    );
    assert!(out.contains("READY"), "{out}");
    // By environment variables.
    let tls_env = [
        ("RACCORDO_SERVER", by_address.as_str()),
        ("RACCORDO_CA_FILE", ca.as_str()),
        ("RACCORDO_CLIENT_CERT_FILE", cert.as_str()),
        ("RACCORDO_CLIENT_KEY_FILE", key.as_str()),
    ];
    succeeded(&raccordo(h, &["dlq", "list"], &tls_env).await);

    // TLS without a certificate or a key: refused, with the way out.
    let err = failed(
        &raccordo(
            h,
            &["status", "--server", &by_address, "--ca-file", &ca],
            &[],
        )
        .await,
    );
    assert!(err.contains("Unauthenticated"), "{err}");
    assert!(err.contains("present a client certificate"), "{err}");
    // A certificate without its key is caught before connecting.
    let err = failed(
        &raccordo(
            h,
            &[
                "status",
                "--server",
                &by_address,
                "--ca-file",
                &ca,
                "--client-cert-file",
                &cert,
            ],
            &[],
        )
        .await,
    );
    assert!(err.contains("needs its private key"), "{err}");

    // A profile: the hub by name, through TLS with a key, the server name
    // overridden (the certificate names localhost and 127.0.0.1 only).
    let dir = h.join(".config/raccordo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("portal.key"), PORTAL_KEY).unwrap();
    std::fs::copy(tls_fixture("ca.pem"), dir.join("ca.pem")).unwrap();
    std::fs::write(
        dir.join("cli.toml"),
        format!(
            "[profiles.default]\nserver = \"https://127.0.0.1:{port}\"\nca_file = \"ca.pem\"\nserver_name = \"localhost\"\napi_key_file = \"portal.key\"\n"
        ),
    )
    .unwrap();
    succeeded(&raccordo(h, &["practice", "list", "--tenant", "016024"], &[]).await);
    // A flag's server name wins over the profile's: a name the
    // certificate does not carry fails the handshake.
    let err = failed(
        &raccordo(
            h,
            &[
                "practice",
                "list",
                "--tenant",
                "016024",
                "--server-name",
                "hub.elsewhere.example",
            ],
            &[],
        )
        .await,
    );
    assert!(err.contains("cannot reach the hub"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // The flag's CA file wins over the profile's too.
    let err = failed(
        &raccordo(
            h,
            &[
                "practice",
                "list",
                "--tenant",
                "016024",
                "--ca-file",
                "/nonexistent/ca.pem",
            ],
            &[],
        )
        .await,
    );
    assert!(
        err.contains("--ca-file/RACCORDO_CA_FILE: cannot read /nonexistent/ca.pem"),
        "{err}"
    );
    // A profile file named explicitly must exist.
    let err = failed(
        &raccordo(
            h,
            &["status"],
            &[("RACCORDO_CLI_CONFIG", "/nonexistent/cli.toml")],
        )
        .await,
    );
    assert!(
        err.contains("RACCORDO_CLI_CONFIG: the profile file /nonexistent/cli.toml does not exist"),
        "{err}"
    );
    // Without a CA file the system's trusted CAs are used: they do not
    // know the test CA.
    std::fs::remove_file(dir.join("cli.toml")).unwrap();
    let err = failed(
        &raccordo(
            h,
            &["status", "--server", &format!("https://localhost:{port}")],
            &[],
        )
        .await,
    );
    assert!(
        err.contains("cannot reach the hub at https://localhost"),
        "{err}"
    );
    hub.stop().await;
}

/// `raccordo --version` names the version and the commit built: the short
/// hash of `HEAD` in a git checkout (with `+dirty` for uncommitted changes),
/// `unknown` without one.
#[tokio::test]
async fn version_names_the_version_and_the_commit() {
    let home = tempfile::tempdir().unwrap();
    let out = raccordo(home.path(), &["--version"], &[]).await;
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let line = line.trim_end();
    let prefix = concat!("raccordo ", env!("CARGO_PKG_VERSION"), " (");
    let commit = line
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("--version printed {line:?}, not {prefix}COMMIT)"));
    if commit == "unknown" {
        return;
    }
    let hash = commit.strip_suffix("+dirty").unwrap_or(commit);
    assert!(
        hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "--version printed commit {commit:?}"
    );
    // Built from this checkout: the hash is its HEAD's (unless a packager
    // named the commit).
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output();
    if let Ok(head) = head
        && head.status.success()
        && std::env::var_os("RACCORDO_BUILD_COMMIT").is_none()
    {
        assert_eq!(hash, String::from_utf8(head.stdout).unwrap().trim());
    }
}
