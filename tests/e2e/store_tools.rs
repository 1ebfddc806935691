//! The store's operator commands on the real binary: `raccordo store copy`
//! from a SQLite hub into PostgreSQL, `raccordo migrate` and `raccordo
//! store backup`, with `audit export` and `purge` on both stores.

use crate::postgres::Schema;
use crate::support::*;
use raccordo_proto::v1 as pb;
use std::path::Path;
use std::process::{Command, Output};

/// The tenant whose concluded practices every purge removes.
const PURGED: &str = "028060";

fn raccordo(args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run raccordo")
}

/// Stdout of a command that must succeed.
fn ok(args: &[&str], env: &[(&str, String)]) -> String {
    let out = raccordo(args, env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "raccordo {}: {stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Stderr of a command that must fail with exit code 1.
fn fails(args: &[&str], env: &[(&str, String)]) -> String {
    let out = raccordo(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "raccordo {}: {}{stderr}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// The test configuration with `PURGED` keeping nothing, on SQLite, or on
/// PostgreSQL with the URL in `TEST_HUB_DATABASE_URL`.
fn config(vendor: &str, postgres: bool) -> String {
    let toml = config_toml(&HubOptions {
        max_attempts: 2,
        ..HubOptions::new(vendor)
    })
    .replace(
        "name = \"Comune di Padova\"",
        "name = \"Comune di Padova\"\nretention_days = 0",
    );
    if postgres {
        format!(
            "{toml}\n[store]\nkind = \"postgres\"\n[store.postgres]\nurl_env = \"TEST_HUB_DATABASE_URL\"\npool_size = 4\n"
        )
    } else {
        toml
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every practice of a tenant, newest first, with events.
async fn practices(
    client: &mut pb::practice_service_client::PracticeServiceClient<tonic::transport::Channel>,
    tenant: &str,
) -> Vec<pb::Practice> {
    let listed = client
        .list_practices(pb::ListPracticesRequest {
            tenant_id: tenant.into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .practices;
    let mut full = Vec::new();
    for p in listed {
        full.push(get(client, tenant, &p.id).await);
    }
    full
}

async fn dead_letters(channel: tonic::transport::Channel) -> Vec<pb::DeadLetter> {
    pb::delivery_admin_service_client::DeliveryAdminServiceClient::new(channel)
        .list_dead_letters(pb::ListDeadLettersRequest {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .dead_letters
}

#[tokio::test]
async fn a_sqlite_store_copied_into_postgres_serves_the_same_practices_and_trail() {
    let vendor = Vendor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite_toml = dir.path().join("sqlite.toml");
    let pg_toml = dir.path().join("postgres.toml");
    std::fs::write(&sqlite_toml, config(&vendor.url(), false)).unwrap();
    std::fs::write(&pg_toml, config(&vendor.url(), true)).unwrap();
    let schema = Schema::new();
    let env = vec![("TEST_HUB_DATABASE_URL", schema.url.clone())];
    let from = format!("config:{}", path(&sqlite_toml));
    let to = format!("config:{}", path(&pg_toml));

    // A SQLite hub with practices in several states.
    let mut hub = serve(&sqlite_toml, &[]);
    let channel = connect_retrying(grpc_addr_from_banner(&mut hub)).await;
    let mut client = pb::practice_service_client::PracticeServiceClient::new(channel.clone());
    let submit = |request| {
        let mut c = client.clone();
        async move {
            c.submit_practice(request)
                .await
                .unwrap()
                .into_inner()
                .practice
                .unwrap()
        }
    };
    // Approved at once, with the vendor's document.
    let approved = submit(cert_request("016024", "copy-cert")).await;
    assert_eq!(approved.status, pb::AdministrativeStatus::Approved as i32);
    // Refused twice: dead-lettered after the route's two attempts.
    vendor.push(Answer::new(503, serde_json::json!({})));
    vendor.push(Answer::new(503, serde_json::json!({})));
    let dead = submit(tari_request("016024", "copy-dead")).await;
    let mut watch = client.clone();
    eventually("the delivery dead-lettered", || {
        let (mut c, id) = (watch.clone(), dead.id.clone());
        async move {
            let p = get(&mut c, "016024", &id).await;
            p.delivery
                .is_some_and(|d| d.status == pb::DeliveryStatus::DeadLettered as i32)
                .then_some(())
        }
    })
    .await;
    // Registered by the vendor, then withdrawn by its applicant.
    vendor.push(Answer::new(
        200,
        serde_json::json!({"esito": "PRESO", "protocollo": {"numero": "P-7"}}),
    ));
    let withdrawn = submit(tari_request("016024", "copy-withdrawn")).await;
    eventually("the declaration registered", || {
        let (mut c, id) = (watch.clone(), withdrawn.id.clone());
        async move {
            let p = get(&mut c, "016024", &id).await;
            (p.status == pb::AdministrativeStatus::Registered as i32).then_some(())
        }
    })
    .await;
    watch
        .withdraw_practice(pb::WithdrawPracticeRequest {
            tenant_id: "016024".into(),
            practice_id: withdrawn.id.clone(),
            reason: "changed my mind".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Settled: nothing changes between the snapshot below and the copy.
    eventually("the withdrawal delivered", || {
        let (mut c, id) = (watch.clone(), withdrawn.id.clone());
        async move {
            let p = get(&mut c, "016024", &id).await;
            (p.status == pb::AdministrativeStatus::Withdrawn as i32
                && p.delivery.is_some_and(|d| {
                    d.status == pb::DeliveryStatus::Acknowledged as i32
                        || d.status == pb::DeliveryStatus::DeadLettered as i32
                }))
            .then_some(())
        }
    })
    .await;
    // Padova's: purged below, its events' audit records kept in audit_log.
    submit(cert_request(PURGED, "copy-purged")).await;
    submit(cert_request(PURGED, "copy-purged-2")).await;

    // Refused while the SQLite hub runs.
    let err = fails(&["store", "copy", "--from", &from, "--to", &to], &env);
    assert!(
        err.contains("--from") && err.contains("already running a hub"),
        "{err}"
    );
    // The running hub migrated at its start: nothing left to apply.
    for args in [vec!["--dry-run"], vec![]] {
        let mut all = vec!["migrate", "--config", path(&sqlite_toml)];
        all.extend(args);
        let out = ok(&all, &[]);
        assert!(
            out.contains("at schema version 13, nothing to apply"),
            "{out}"
        );
    }
    // An online backup while the hub runs.
    let backup = dir.path().join("backup.db");
    let out = ok(
        &[
            "store",
            "backup",
            "--config",
            path(&sqlite_toml),
            "--to",
            path(&backup),
        ],
        &[],
    );
    assert!(out.contains("5 practice(s)"), "{out}");
    let err = fails(
        &[
            "store",
            "backup",
            "--config",
            path(&sqlite_toml),
            "--to",
            path(&backup),
        ],
        &[],
    );
    assert!(
        err.contains("--to") && err.contains("never overwrites"),
        "{err}"
    );

    let purged = ok(&["purge", "--config", path(&sqlite_toml)], &[]);
    assert!(
        purged.contains(&format!("tenant {PURGED}: removed 2 practice(s)")),
        "{purged}"
    );
    let before: Vec<Vec<pb::Practice>> = vec![
        practices(&mut client, "016024").await,
        practices(&mut client, PURGED).await,
    ];
    assert_eq!(before[0].len(), 3);
    assert!(before[1].is_empty());
    let dead_before = dead_letters(channel.clone()).await;
    assert_eq!(dead_before.len(), 1);
    drop(hub);
    let export = |config: &Path, tenant: &str| {
        ok(
            &[
                "audit",
                "export",
                "--config",
                path(config),
                "--tenant",
                tenant,
            ],
            &env,
        )
    };
    let trail_before = [export(&sqlite_toml, "016024"), export(&sqlite_toml, PURGED)];
    assert!(
        trail_before[1].contains("\"action\":\"purge\""),
        "{}",
        trail_before[1]
    );

    // The copy: refused with a URL on the command line, then done.
    let err = fails(
        &["store", "copy", "--from", &from, "--to", &schema.url],
        &env,
    );
    assert!(
        err.contains("--to") && err.contains("environment variable"),
        "{err}"
    );
    assert!(
        !err.contains("raccordo_test@"),
        "the URL is not echoed: {err}"
    );
    let out = ok(&["store", "copy", "--from", &from, "--to", &to], &env);
    assert!(out.contains("audit trail intact on the target"), "{out}");
    assert!(
        out.contains("practices") && out.contains("audit_log"),
        "{out}"
    );
    // A second copy finds the target full, unless told to replace it.
    let err = fails(&["store", "copy", "--from", &from, "--to", &to], &env);
    assert!(
        err.contains("not empty") && err.contains("--replace"),
        "{err}"
    );
    let out = ok(
        &[
            "store",
            "copy",
            "--from",
            &format!("sqlite:{}", path(&backup)),
            "--to",
            "postgres:env:TEST_HUB_DATABASE_URL",
            "--replace",
        ],
        &env,
    );
    assert!(out.contains("audit trail intact on the target"), "{out}");
    // And back to the stopped hub's own file.
    let out = ok(
        &["store", "copy", "--from", &from, "--to", &to, "--replace"],
        &env,
    );
    let counter: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("event cursor counter set to "))
        .expect("the counter is reported")
        .parse()
        .unwrap();

    // The hub on PostgreSQL serves the same practices, events and trail.
    let mut hub = serve(&pg_toml, &env);
    let channel = connect_retrying(grpc_addr_from_banner(&mut hub)).await;
    let mut client = pb::practice_service_client::PracticeServiceClient::new(channel.clone());
    let after = vec![
        practices(&mut client, "016024").await,
        practices(&mut client, PURGED).await,
    ];
    assert_eq!(after, before);
    let dead_after = dead_letters(channel.clone()).await;
    assert_eq!(dead_after, dead_before);
    let mut documents = client.clone();
    let with_content = documents
        .get_practice(pb::GetPracticeRequest {
            tenant_id: "016024".into(),
            practice_id: approved.id.clone(),
            include_events: false,
            include_content: true,
        })
        .await
        .unwrap()
        .into_inner();
    let outcome = with_content.outcome.expect("the outcome");
    assert_eq!(outcome.documents[0].content, b"ok");
    assert_eq!(
        [export(&pg_toml, "016024"), export(&pg_toml, PURGED)],
        trail_before,
        "audit export prints the same records from either store"
    );
    // New events continue the copied ones: cursors, sequences, chains.
    let newest_cursor = before[0]
        .iter()
        .flat_map(|p| &p.events)
        .map(|e| e.cursor)
        .max()
        .unwrap();
    let fresh = submit_to(&mut client, cert_request("016024", "after-copy")).await;
    let fresh = get(&mut client, "016024", &fresh.id).await;
    // The purged practices' events had the highest cursors: the counter
    // goes past them too, so a watcher holding one misses nothing.
    assert!(counter > newest_cursor, "{counter} > {newest_cursor}");
    assert!(fresh.events.iter().all(|e| e.cursor > counter));
    submit_to(&mut client, cert_request(PURGED, "after-copy-purged")).await;
    let purged = ok(&["purge", "--config", path(&pg_toml)], &env);
    assert!(
        purged.contains(&format!("tenant {PURGED}: removed 1 practice(s)")),
        "{purged}"
    );
    // The purge's record is in the trail (once the store has linked it
    // into its chain), after the copied records.
    let trail = eventually("the purge recorded in the trail", || {
        let trail = export(&pg_toml, PURGED);
        async move { (trail.matches("\"action\":\"purge\"").count() == 2).then_some(trail) }
    })
    .await;
    drop(hub);
    let out = ok(&["audit", "verify", "--config", path(&pg_toml)], &env);
    assert!(out.contains("audit trail intact"), "{out}");
    assert!(
        trail.starts_with(&trail_before[1]),
        "the copied trail goes on"
    );
    // PostgreSQL is backed up with its own tools.
    let err = fails(
        &[
            "store",
            "backup",
            "--config",
            path(&pg_toml),
            "--to",
            path(&dir.path().join("pg.db")),
        ],
        &env,
    );
    assert!(err.contains("pg_dump"), "{err}");
}

async fn submit_to(
    client: &mut pb::practice_service_client::PracticeServiceClient<tonic::transport::Channel>,
    request: pb::SubmitPracticeRequest,
) -> pb::Practice {
    client
        .submit_practice(request)
        .await
        .unwrap()
        .into_inner()
        .practice
        .unwrap()
}

#[tokio::test]
async fn migrate_lists_then_applies_pending_migrations_on_both_stores() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_toml = dir.path().join("sqlite.toml");
    let pg_toml = dir.path().join("postgres.toml");
    std::fs::write(&sqlite_toml, config("http://127.0.0.1:9", false)).unwrap();
    std::fs::write(&pg_toml, config("http://127.0.0.1:9", true)).unwrap();
    let schema = Schema::new();
    let env = vec![("TEST_HUB_DATABASE_URL", schema.url.clone())];

    // SQLite: a new file gets every migration; a dry run creates nothing.
    let db = dir.path().join("data").join("raccordo.db");
    let out = ok(
        &["migrate", "--config", path(&sqlite_toml), "--dry-run"],
        &[],
    );
    assert!(out.contains("at schema version 0"), "{out}");
    assert!(
        out.contains("   1  init") && out.contains("  13  outcome_data"),
        "{out}"
    );
    assert!(!out.contains("CREATE TABLE"), "{out}");
    assert!(!db.exists(), "a dry run changes nothing");
    let out = ok(
        &[
            "migrate",
            "--config",
            path(&sqlite_toml),
            "--dry-run",
            "--sql",
        ],
        &[],
    );
    assert!(out.contains("CREATE TABLE practices"), "{out}");
    let out = ok(&["migrate", "--config", path(&sqlite_toml)], &[]);
    assert!(out.contains("applied   13  outcome_data"), "{out}");
    let out = ok(
        &["migrate", "--config", path(&sqlite_toml), "--dry-run"],
        &[],
    );
    assert!(
        out.contains("at schema version 13, nothing to apply"),
        "{out}"
    );
    // --sql only with --dry-run (a usage error: exit code 2).
    let out = raccordo(&["migrate", "--config", path(&sqlite_toml), "--sql"], &[]);
    assert_eq!(out.status.code(), Some(2));

    // PostgreSQL: the same, in an empty schema.
    let out = ok(
        &["migrate", "--config", path(&pg_toml), "--dry-run", "--sql"],
        &env,
    );
    assert!(
        out.contains("at schema version 0") && out.contains("   1  init"),
        "{out}"
    );
    assert!(out.contains("CREATE TABLE practices"), "{out}");
    let out = ok(&["migrate", "--config", path(&pg_toml), "--dry-run"], &env);
    assert!(
        out.contains("at schema version 0"),
        "a dry run changes nothing: {out}"
    );
    let out = ok(&["migrate", "--config", path(&pg_toml)], &env);
    assert!(out.contains("applied    1  init"), "{out}");
    let out = ok(&["migrate", "--config", path(&pg_toml), "--dry-run"], &env);
    assert!(out.contains("nothing to apply"), "{out}");
    // A copy into a schema at the same version finds its tables; the URL
    // may come from a file.
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, format!("{}\n", schema.url)).unwrap();
    let out = ok(
        &[
            "store",
            "copy",
            "--from",
            &format!("sqlite:{}", path(&db)),
            "--to",
            &format!("postgres:file:{}", path(&url_file)),
        ],
        &[],
    );
    assert!(
        out.contains("audit trail intact on the target: 0 record(s)"),
        "{out}"
    );

    // A source behind this binary's schema is sent to `migrate` first.
    let old = dir.path().join("old.db");
    rusqlite::Connection::open(&old)
        .unwrap()
        .execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT);
             INSERT INTO schema_migrations VALUES (5, 'audit_log', '2026-01-01');",
        )
        .unwrap();
    let err = fails(
        &[
            "store",
            "copy",
            "--from",
            &format!("sqlite:{}", path(&old)),
            "--to",
            "postgres:env:TEST_HUB_DATABASE_URL",
            "--replace",
        ],
        &env,
    );
    assert!(
        err.contains("--from")
            && err.contains("schema version 5")
            && err.contains("raccordo migrate"),
        "{err}"
    );
}
