//! Who may call what: roles and tenants for every RPC, citizen confinement,
//! token verification, brute-force and rate limits.

use crate::support::*;
use raccordo_proto::v1 as pb;
use serde_json::json;
use sha2::{Digest, Sha256};
use tonic::Code;

const SECRET: &str = "a-shared-hs256-secret-of-at-least-32-bytes";
const MARIO: &str = "RSSMRA45D25F205N";
const LUIGI: &str = "RSSMRA85M01H501Q";
const PORTAL_KEY: &str = "portal-bergamo-key";
const OPS_KEY: &str = "operations-key";
const SLOW_KEY: &str = "slow-client-key";

fn sha(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn clients_toml() -> String {
    format!(
        r#"
[clients.portal-bg]
role = "frontoffice"
tenants = ["016024"]
api_key_sha256 = "{portal}"

[clients.desk-pd]
role = "operator"
tenants = ["028060"]
[clients.desk-pd.jwt]
issuer = "https://sso.comune.padova.it"
audience = "raccordo"
hs256_secret_file = "jwt.secret"

[clients.app-io]
role = "citizen"
tenants = ["016024"]
[clients.app-io.jwt]
issuer = "https://login.cittadini.example"
audience = "raccordo"
hs256_secret_file = "jwt.secret"

[clients.ops]
role = "admin"
tenants = ["*"]
api_key_sha256 = "{ops}"

[clients.slow]
role = "frontoffice"
tenants = ["016024"]
api_key_sha256 = "{slow}"
requests_per_second = 1
burst = 3

[security]
max_auth_failures = 6
trusted_proxies = ["127.0.0.1", "::1"]
"#,
        portal = sha(PORTAL_KEY),
        ops = sha(OPS_KEY),
        slow = sha(SLOW_KEY),
    )
}

async fn secured_hub() -> TestHub {
    let vendor = Vendor::start().await;
    let mut options = HubOptions::new(&vendor.url());
    options.extra_toml = clients_toml();
    options.files = vec![("jwt.secret".into(), SECRET.into())];
    // The vendor must outlive the hub: leak it for the test's duration.
    std::mem::forget(vendor);
    start_hub(options).await
}

fn token(issuer: &str, audience: &str, claims: serde_json::Value, expires_in: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut body = json!({"iss": issuer, "aud": audience, "iat": now, "exp": now + expires_in});
    for (k, v) in claims.as_object().unwrap() {
        body[k] = v.clone();
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &body,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn operator_token() -> String {
    token(
        "https://sso.comune.padova.it",
        "raccordo",
        json!({"sub": "op-padova-7"}),
        300,
    )
}

fn citizen_token(fiscal_code: &str) -> String {
    token(
        "https://login.cittadini.example",
        "raccordo",
        json!({"sub": "x", "fiscal_number": format!("TINIT-{fiscal_code}")}),
        300,
    )
}

/// How a call presents itself.
#[derive(Clone, Debug)]
enum Creds {
    None,
    /// No credentials, forwarded by the trusted proxy for this address.
    NoneFrom(String),
    Key(&'static str),
    Bearer(String),
}

fn req<T>(creds: &Creds, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    match creds {
        Creds::None => {}
        Creds::NoneFrom(ip) => {
            r.metadata_mut()
                .insert("x-forwarded-for", ip.parse().unwrap());
        }
        Creds::Key(k) => {
            r.metadata_mut().insert("x-api-key", k.parse().unwrap());
        }
        Creds::Bearer(t) => {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
    }
    r
}

fn submission(tenant: &str, key: &str, fiscal_code: &str) -> pb::SubmitPracticeRequest {
    let mut r = tari_request(tenant, key);
    if let Some(pb::applicant::Subject::Person(p)) =
        r.applicant.as_mut().and_then(|a| a.subject.as_mut())
    {
        p.fiscal_code = fiscal_code.into();
    }
    r
}

/// Calls `rpc` for `tenant`; Ok when the call got past authorization.
async fn call(hub: &TestHub, rpc: &str, creds: &Creds, tenant: &str) -> Result<(), tonic::Status> {
    let mut practices = hub.practices.clone();
    let mut catalog = hub.catalog.clone();
    let mut admin = hub.admin.clone();
    let missing = "01900000-0000-7000-8000-000000000000".to_string();
    let result = match rpc {
        "/raccordo.v1.PracticeService/SubmitPractice" => practices
            .submit_practice(req(
                creds,
                submission(tenant, &format!("t-{}", uuid::Uuid::new_v4()), MARIO),
            ))
            .await
            .map(drop),
        "/raccordo.v1.PracticeService/GetPractice" => practices
            .get_practice(req(
                creds,
                pb::GetPracticeRequest {
                    tenant_id: tenant.into(),
                    practice_id: missing,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "/raccordo.v1.PracticeService/ListPractices" => practices
            .list_practices(req(
                creds,
                pb::ListPracticesRequest {
                    tenant_id: tenant.into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "/raccordo.v1.PracticeService/WatchPractice" => practices
            .watch_practice(req(
                creds,
                pb::WatchPracticeRequest {
                    tenant_id: tenant.into(),
                    practice_id: missing,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "/raccordo.v1.PracticeService/WatchPractices" => practices
            .watch_practices(req(
                creds,
                pb::WatchPracticesRequest {
                    tenant_id: tenant.into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "/raccordo.v1.PracticeService/WithdrawPractice" => practices
            .withdraw_practice(req(
                creds,
                pb::WithdrawPracticeRequest {
                    tenant_id: tenant.into(),
                    practice_id: missing,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "/raccordo.v1.CatalogService/ListServices" => catalog
            .list_services(req(
                creds,
                pb::ListServicesRequest {
                    tenant_id: tenant.into(),
                },
            ))
            .await
            .map(drop),
        "/raccordo.v1.CatalogService/GetService" => catalog
            .get_service(req(
                creds,
                pb::GetServiceRequest {
                    tenant_id: tenant.into(),
                    service_code: "TARI".into(),
                },
            ))
            .await
            .map(drop),
        "/raccordo.v1.DeliveryAdminService/ListDeadLetters" => admin
            .list_dead_letters(req(
                creds,
                pb::ListDeadLettersRequest {
                    tenant_id: tenant.into(),
                    limit: 10,
                },
            ))
            .await
            .map(drop),
        "/raccordo.v1.DeliveryAdminService/ReplayDeadLetter" => admin
            .replay_dead_letter(req(
                creds,
                pb::ReplayDeadLetterRequest {
                    operation_id: missing,
                    operator_id: String::new(),
                },
            ))
            .await
            .map(drop),
        "/raccordo.v1.DeliveryAdminService/GetHubStatus" => admin
            .get_hub_status(req(creds, pb::GetHubStatusRequest {}))
            .await
            .map(drop),
        other => panic!("no test call for {other}: add one to tests/e2e/security.rs"),
    };
    match result {
        Err(s)
            if matches!(
                s.code(),
                Code::Unauthenticated | Code::PermissionDenied | Code::ResourceExhausted
            ) =>
        {
            Err(s)
        }
        _ => Ok(()),
    }
}

#[tokio::test]
async fn each_role_may_call_only_its_rpcs_and_only_for_its_tenants() {
    let hub = secured_hub().await;
    let practice_rpcs = |p: &str| p.starts_with("/raccordo.v1.PracticeService/");
    let catalog_rpcs = |p: &str| p.starts_with("/raccordo.v1.CatalogService/");
    let callers: Vec<(&str, Creds, &str)> = vec![
        ("frontoffice", Creds::Key(PORTAL_KEY), "016024"),
        ("operator", Creds::Bearer(operator_token()), "028060"),
        ("citizen", Creds::Bearer(citizen_token(MARIO)), "016024"),
        ("admin", Creds::Key(OPS_KEY), "*"),
    ];
    // Every RPC with a rule is exercised: a new one fails here until it has a case.
    for (i, (rpc, _)) in raccordo::security::rules::RULES.iter().enumerate() {
        for (role, creds, home) in &callers {
            for tenant in ["016024", "028060"] {
                let own = *home == "*" || *home == tenant;
                let role_allowed = match *role {
                    "admin" => !practice_rpcs(rpc),
                    _ => practice_rpcs(rpc) || catalog_rpcs(rpc),
                };
                let expected = role_allowed && own;
                let got = call(&hub, rpc, creds, tenant).await;
                assert_eq!(
                    got.is_ok(),
                    expected,
                    "{role} calling {rpc} for {tenant}: {got:?}"
                );
                if let Err(s) = got {
                    assert_eq!(
                        s.code(),
                        Code::PermissionDenied,
                        "{role} {rpc} {tenant}: {s:?}"
                    );
                }
            }
        }
        // From an address each: calls without credentials count towards a
        // lock-out, which would answer RESOURCE_EXHAUSTED.
        let from = Creds::NoneFrom(format!("192.0.2.{i}"));
        let anonymous = call(&hub, rpc, &from, "016024").await.unwrap_err();
        assert_eq!(anonymous.code(), Code::Unauthenticated, "{rpc}");
    }
    // Probes stay open to load balancers.
    let mut health = tonic_health::pb::health_client::HealthClient::new(hub.channel.clone());
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no credentials");
    hub.stop().await;
}

#[tokio::test]
async fn a_citizen_sees_only_their_own_practices_whatever_the_filter() {
    let hub = secured_hub().await;
    let mut practices = hub.practices.clone();
    let portal = Creds::Key(PORTAL_KEY);
    let luigis = practices
        .submit_practice(req(&portal, submission("016024", "luigi-1", LUIGI)))
        .await
        .unwrap()
        .into_inner()
        .practice
        .unwrap();
    let mario = Creds::Bearer(citizen_token(MARIO));
    let marios = practices
        .submit_practice(req(&mario, submission("016024", "mario-1", MARIO)))
        .await
        .unwrap()
        .into_inner()
        .practice
        .unwrap();

    // Submitting for someone else is refused.
    let other = practices
        .submit_practice(req(&mario, submission("016024", "mario-2", LUIGI)))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied);
    // Luigi's practice does not exist for Mario: the same answer as a missing one.
    for id in [
        luigis.id.clone(),
        "01900000-0000-7000-8000-000000000000".into(),
    ] {
        let e = practices
            .get_practice(req(
                &mario,
                pb::GetPracticeRequest {
                    tenant_id: "016024".into(),
                    practice_id: id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert_eq!(
            e.message(),
            format!("practice {id} not found in tenant 016024")
        );
    }
    let watch = practices
        .watch_practice(req(
            &mario,
            pb::WatchPracticeRequest {
                tenant_id: "016024".into(),
                practice_id: luigis.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(watch.code(), Code::NotFound);
    let withdraw = practices
        .withdraw_practice(req(
            &mario,
            pb::WithdrawPracticeRequest {
                tenant_id: "016024".into(),
                practice_id: luigis.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(withdraw.code(), Code::NotFound);

    // Listing: no filter gives his own; naming Luigi, in any case, is refused.
    let listed = practices
        .list_practices(req(
            &mario,
            pb::ListPracticesRequest {
                tenant_id: "016024".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .practices;
    assert_eq!(
        listed.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        vec![marios.id.clone()]
    );
    for filter in [
        LUIGI.to_string(),
        LUIGI.to_lowercase(),
        format!(" {LUIGI} "),
    ] {
        let e = practices
            .list_practices(req(
                &mario,
                pb::ListPracticesRequest {
                    tenant_id: "016024".into(),
                    applicant_id: filter.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "filter {filter:?}");
        let e = practices
            .watch_practices(req(
                &mario,
                pb::WatchPracticesRequest {
                    tenant_id: "016024".into(),
                    applicant_id: filter.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "filter {filter:?}");
    }
    // His own practice is his to read.
    practices
        .get_practice(req(
            &mario,
            pb::GetPracticeRequest {
                tenant_id: "016024".into(),
                practice_id: marios.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    hub.stop().await;
}

#[tokio::test]
async fn tokens_are_verified_for_expiry_signature_issuer_and_audience() {
    let hub = secured_hub().await;
    let expired = token(
        "https://login.cittadini.example",
        "raccordo",
        json!({"fiscal_number": MARIO}),
        -3600,
    );
    let wrong_audience = token(
        "https://login.cittadini.example",
        "another-api",
        json!({"fiscal_number": MARIO}),
        300,
    );
    let wrong_issuer = token(
        "https://evil.example",
        "raccordo",
        json!({"fiscal_number": MARIO}),
        300,
    );
    let forged = {
        let now = chrono::Utc::now().timestamp();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"iss": "https://login.cittadini.example", "aud": "raccordo", "exp": now + 300, "fiscal_number": MARIO}),
            &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret-but-just-as-long-000"),
        )
        .unwrap()
    };
    let no_fiscal_code = token(
        "https://login.cittadini.example",
        "raccordo",
        json!({}),
        300,
    );
    for (what, t, reason) in [
        ("expired", expired, "expired"),
        ("wrong audience", wrong_audience, "audience"),
        ("wrong issuer", wrong_issuer, "issuer"),
        ("forged", forged, "signature"),
        ("no fiscal code", no_fiscal_code, "fiscal_number"),
        ("garbage", "not.a.jwt".to_string(), "malformed"),
    ] {
        let e = hub
            .practices
            .clone()
            .list_practices(req(
                &Creds::Bearer(t),
                pb::ListPracticesRequest {
                    tenant_id: "016024".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{what}");
        assert!(e.message().contains(reason), "{what}: {}", e.message());
    }
    hub.stop().await;
}

/// A ListPractices call presenting `creds`, as if forwarded for `client`
/// by the hub's trusted proxy (the loopback peer of the tests).
async fn list_as(
    hub: &TestHub,
    creds: Creds,
    client: Option<&str>,
) -> Result<tonic::Response<pb::ListPracticesResponse>, tonic::Status> {
    let mut r = req(
        &creds,
        pb::ListPracticesRequest {
            tenant_id: "016024".into(),
            ..Default::default()
        },
    );
    if let Some(ip) = client {
        r.metadata_mut()
            .insert("x-forwarded-for", ip.parse().unwrap());
    }
    hub.practices.clone().list_practices(r).await
}

#[tokio::test]
async fn guessing_api_keys_locks_out_the_guesser_but_never_a_valid_key() {
    let hub = secured_hub().await;
    for guess in ["a", "b", "c", "d", "e", "f"] {
        let e = list_as(&hub, Creds::Key(guess), None).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    // Six failures (security.max_auth_failures): this address is refused
    // without credentials or with wrong ones …
    let e = list_as(&hub, Creds::Key("g"), None).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let e = list_as(&hub, Creds::None, None).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // … but a valid key keeps working from it.
    list_as(&hub, Creds::Key(PORTAL_KEY), None).await.unwrap();
    hub.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_one_guesser_locks_out_only_itself() {
    let hub = secured_hub().await;
    let guesser = Some("203.0.113.66");
    for guess in ["a", "b", "c", "d", "e", "f"] {
        let e = list_as(&hub, Creds::Key(guess), guesser).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    let e = list_as(&hub, Creds::None, guesser).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // Another client behind the same proxy is not counted with it.
    let e = list_as(&hub, Creds::Key("typo"), Some("203.0.113.7"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    list_as(&hub, Creds::Key(PORTAL_KEY), Some("203.0.113.7"))
        .await
        .unwrap();
    hub.stop().await;
}

#[tokio::test]
async fn a_flood_of_calls_without_credentials_adds_a_bounded_number_of_audit_rows() {
    const CALLS: u64 = 5000;
    let mut hub = secured_hub().await;
    for _ in 0..CALLS {
        let e = list_as(&hub, Creds::None, None).await.unwrap_err();
        assert!(
            matches!(e.code(), Code::Unauthenticated | Code::ResourceExhausted),
            "{e:?}"
        );
    }
    let db = hub.dir.path().join("data/raccordo.db");
    let dir_guard = std::mem::replace(&mut hub.dir, tempfile::tempdir().unwrap());
    // Stopping records the counts of the minute under way.
    hub.stop().await;
    let records = raccordo::store::sqlite::SqliteStore::export_audit(
        &db,
        "-",
        chrono::DateTime::<chrono::Utc>::MIN_UTC,
        chrono::DateTime::<chrono::Utc>::MAX_UTC,
    )
    .unwrap();
    let denied: Vec<_> = records
        .iter()
        .filter(|r| r.action == "call_denied")
        .collect();
    // Two reasons (no credentials, then locked out), each a first record
    // and one count.
    assert!(denied.len() <= 4, "{} records: {denied:#?}", denied.len());
    let counted: u64 = denied
        .iter()
        .map(|r| r.detail["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, CALLS, "every refused call is counted: {denied:#?}");
    drop(dir_guard);
}

#[tokio::test]
async fn a_client_over_its_rate_is_slowed_and_others_are_not() {
    let hub = secured_hub().await;
    let mut client = hub.practices.clone();
    let mut refused = 0;
    for _ in 0..10 {
        let r = client
            .list_practices(req(
                &Creds::Key(SLOW_KEY),
                pb::ListPracticesRequest {
                    tenant_id: "016024".into(),
                    ..Default::default()
                },
            ))
            .await;
        if let Err(e) = r {
            assert_eq!(e.code(), Code::ResourceExhausted);
            refused += 1;
        }
    }
    assert!(refused > 0, "10 calls at once exceed 1/s with a burst of 3");
    client
        .list_practices(req(
            &Creds::Key(PORTAL_KEY),
            pb::ListPracticesRequest {
                tenant_id: "016024".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("another client is not slowed");
    hub.stop().await;
}

#[tokio::test]
async fn an_operators_actions_carry_the_authenticated_operator_id() {
    let hub = secured_hub().await;
    let mut practices = hub.practices.clone();
    let op = Creds::Bearer(operator_token());
    let mut request = submission("028060", "desk-1", MARIO);
    request.channel = Some(pb::ChannelInfo {
        channel: pb::Channel::Desk as i32,
        operator_id: "someone-else".into(),
        desk_id: "sportello-3".into(),
    });
    let p = practices
        .submit_practice(req(&op, request))
        .await
        .unwrap()
        .into_inner()
        .practice
        .unwrap();
    let withdrawn = practices
        .withdraw_practice(req(
            &op,
            pb::WithdrawPracticeRequest {
                tenant_id: "028060".into(),
                practice_id: p.id.clone(),
                reason: "richiesta allo sportello".into(),
                operator_id: "someone-else".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(withdrawn.status, pb::AdministrativeStatus::Withdrawn as i32);
    let full = practices
        .get_practice(req(
            &op,
            pb::GetPracticeRequest {
                tenant_id: "028060".into(),
                practice_id: p.id.clone(),
                include_events: true,
                include_content: true,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(full.channel.unwrap().operator_id, "op-padova-7");
    let actors: Vec<&str> = full.events.iter().map(|e| e.actor.as_str()).collect();
    assert!(actors.contains(&"op-padova-7"), "{actors:?}");
    assert!(!actors.contains(&"someone-else"), "{actors:?}");
    hub.stop().await;
}

fn audit_cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_raccordo"))
        .arg("audit")
        .args(args)
        .arg("--config")
        .arg(dir.join("raccordo.toml"))
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_audit_chain_verifies_and_an_edited_record_is_found() {
    let mut hub = secured_hub().await;
    let portal = Creds::Key(PORTAL_KEY);
    let p = hub
        .practices
        .clone()
        .submit_practice(req(&portal, submission("016024", "audited", MARIO)))
        .await
        .unwrap()
        .into_inner()
        .practice
        .unwrap();
    let mut practices = hub.practices.clone();
    eventually("the practice approved", || {
        let mut practices = practices.clone();
        let id = p.id.clone();
        async move {
            let got = practices
                .get_practice(req(
                    &Creds::Key(PORTAL_KEY),
                    pb::GetPracticeRequest {
                        tenant_id: "016024".into(),
                        practice_id: id,
                        ..Default::default()
                    },
                ))
                .await
                .ok()?
                .into_inner();
            (got.status == pb::AdministrativeStatus::Approved as i32).then_some(())
        }
    })
    .await;
    let denied = practices
        .list_practices(req(
            &portal,
            pb::ListPracticesRequest {
                tenant_id: "028060".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let db = hub.dir.path().join("data/raccordo.db");
    // The refusal is recorded in the background: wait for it.
    eventually("the refused call in the audit trail", || {
        let db = db.clone();
        async move {
            let records = raccordo::store::sqlite::SqliteStore::export_audit(
                &db,
                "028060",
                chrono::DateTime::<chrono::Utc>::MIN_UTC,
                chrono::DateTime::<chrono::Utc>::MAX_UTC,
            )
            .ok()?;
            records
                .iter()
                .any(|r| r.action == "call_denied" && r.actor == "portal-bg")
                .then_some(())
        }
    })
    .await;
    let dir = hub.dir.path().to_path_buf();
    let tempdir_guard = std::mem::replace(&mut hub.dir, tempfile::tempdir().unwrap());
    hub.stop().await;

    let ok = audit_cli(&dir, &["verify"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("audit trail intact"));
    let export = audit_cli(
        &dir,
        &["export", "--tenant", "016024", "--from", "2020-01-01"],
    );
    assert!(export.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&export.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 3, "{lines:?}");
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[0]["practice_id"], p.id.as_str());
    assert_eq!(lines[0]["action"], "status");
    assert_eq!(lines[0]["detail"]["to_status"], "SUBMITTED");
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);

    // Someone edits the practice's row, not its records: the chain holds,
    // and the practice and the field that differ from it are named.
    let conn = rusqlite::Connection::open(dir.join("data/raccordo.db")).unwrap();
    for (edit, field, undo) in [
        (
            "UPDATE practices SET status = 'REJECTED' WHERE id = ?1",
            "status",
            "UPDATE practices SET status = 'APPROVED' WHERE id = ?1",
        ),
        (
            "UPDATE practices SET applicant_id = 'VRDLGU80A01F205X' WHERE id = ?1",
            "applicant_id",
            "UPDATE practices SET applicant_id = 'RSSMRA45D25F205N' WHERE id = ?1",
        ),
    ] {
        assert_eq!(conn.execute(edit, [&p.id]).unwrap(), 1, "{edit}");
        let differs = audit_cli(&dir, &["verify"]);
        assert!(!differs.status.success(), "{edit}");
        let out = String::from_utf8_lossy(&differs.stdout);
        assert!(
            out.contains(&format!(
                "tenant 016024: practice {}: {field} differs from its audit trail",
                p.id
            )) && !out.contains("chain broken")
                && !out.contains("VRDLGU80A01F205X"),
            "{edit}: {out}"
        );
        assert!(
            String::from_utf8_lossy(&differs.stderr).contains("1 stored field(s) differ"),
            "{}",
            String::from_utf8_lossy(&differs.stderr)
        );
        conn.execute(undo, [&p.id]).unwrap();
        let ok = audit_cli(&dir, &["verify"]);
        assert!(
            ok.status.success(),
            "{undo}: {}",
            String::from_utf8_lossy(&ok.stdout)
        );
    }
    drop(conn);

    // Someone edits one record in the database: the chain breaks there.
    // Record 2 is an event of the practice, which is its own audit record.
    let conn = rusqlite::Connection::open(dir.join("data/raccordo.db")).unwrap();
    let edited = conn
        .execute(
            "UPDATE events SET reason = 'never happened' WHERE tenant_id = '016024' AND audit_seq = 2",
            [],
        )
        .unwrap();
    assert_eq!(edited, 1);
    drop(conn);
    let broken = audit_cli(&dir, &["verify"]);
    assert!(!broken.status.success());
    let out = String::from_utf8_lossy(&broken.stdout);
    assert!(
        out.contains("tenant 016024: chain broken at record 2"),
        "{out}"
    );
    // Removing a record is found too.
    let conn = rusqlite::Connection::open(dir.join("data/raccordo.db")).unwrap();
    conn.execute(
        "DELETE FROM audit_log WHERE tenant_id = '028060' AND seq = 1",
        [],
    )
    .unwrap();
    drop(conn);
    let out = String::from_utf8_lossy(&audit_cli(&dir, &["verify"]).stdout).to_string();
    assert!(
        out.contains("tenant 028060: chain broken at record 1: the chain ends at record 0"),
        "{out}"
    );
    drop(tempdir_guard);
}

#[tokio::test]
async fn purge_removes_practices_past_retention_and_keeps_the_audit_trail() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let old = hub.submit(cert_request("016024", "old")).await;
    let recent = hub.submit(cert_request("016024", "recent")).await;
    let elsewhere = hub.submit(cert_request("028060", "elsewhere")).await;
    for (t, p) in [
        ("016024", &old),
        ("016024", &recent),
        ("028060", &elsewhere),
    ] {
        hub.wait_status(t, &p.id, pb::AdministrativeStatus::Approved)
            .await;
    }
    let dir = hub.dir.path().to_path_buf();
    let guard = std::mem::replace(&mut hub.dir, tempfile::tempdir().unwrap());
    hub.stop().await;

    // Bergamo keeps concluded practices 30 days; one concluded 40 days ago.
    let config = dir.join("raccordo.toml");
    let toml = std::fs::read_to_string(&config).unwrap().replacen(
        "[tenants.\"016024\"]\n",
        "[tenants.\"016024\"]\nretention_days = 30\n",
        1,
    );
    std::fs::write(&config, toml).unwrap();
    let db = dir.join("data/raccordo.db");
    let forty_days_ago = (chrono::Utc::now() - chrono::Duration::days(40)).timestamp_millis();
    for id in [&old.id, &elsewhere.id] {
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute(
                "UPDATE practices SET concluded_at = ?1 WHERE id = ?2",
                rusqlite::params![forty_days_ago, id],
            )
            .unwrap();
    }
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_raccordo"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let dry = run(&["purge", "--dry-run"]);
    assert!(
        dry.contains("tenant 016024: would remove 1 practice(s)"),
        "{dry}"
    );
    let done = run(&["purge"]);
    assert!(
        done.contains("tenant 016024: removed 1 practice(s)"),
        "{done}"
    );

    let conn = rusqlite::Connection::open(&db).unwrap();
    let count = |sql: &str, id: &str| -> i64 { conn.query_row(sql, [id], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT COUNT(*) FROM practices WHERE id = ?1", &old.id),
        0
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM documents WHERE practice_id = ?1",
            &old.id
        ),
        0
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM events WHERE practice_id = ?1",
            &old.id
        ),
        0
    );
    // Within retention, or in a tenant without it: kept.
    assert_eq!(
        count("SELECT COUNT(*) FROM practices WHERE id = ?1", &recent.id),
        1
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM practices WHERE id = ?1",
            &elsewhere.id
        ),
        1
    );
    // The trail keeps the purged practice's history and records the purge.
    assert!(
        count(
            "SELECT COUNT(*) FROM audit_log WHERE practice_id = ?1",
            &old.id
        ) > 0
    );
    assert_eq!(
        count(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'purge' AND tenant_id = ?1",
            "016024"
        ),
        1
    );
    drop(conn);
    let verify = run(&["audit", "verify"]);
    assert!(verify.contains("audit trail intact"), "{verify}");
    drop(guard);
}

#[tokio::test]
async fn a_document_altered_in_the_database_is_refused_when_read() {
    let vendor = Vendor::start().await;
    let mut hub = start_hub(HubOptions::new(&vendor.url())).await;
    let p = hub.submit(cert_request("016024", "tampered")).await;
    let done = hub
        .wait_status("016024", &p.id, pb::AdministrativeStatus::Approved)
        .await;
    assert_eq!(done.outcome.unwrap().documents.len(), 1);
    let db = hub.dir.path().join("data/raccordo.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE documents SET content = X'6b6f' WHERE practice_id = ?1",
            [&p.id],
        )
        .unwrap();
    let e = hub
        .practices
        .get_practice(pb::GetPracticeRequest {
            tenant_id: "016024".into(),
            practice_id: p.id.clone(),
            include_content: true,
            include_events: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::DataLoss);
    assert!(e.message().contains("fails its SHA-256 check"), "{e:?}");
    // Metadata (with the original hash) stays readable.
    let meta = hub.get("016024", &p.id).await;
    assert_eq!(meta.status, pb::AdministrativeStatus::Approved as i32);
    hub.stop().await;
}
