//! The real binary on the PostgreSQL store (scripts/ensure-postgres): a
//! submission served end to end, and the configuration's checks. Each test
//! works in a schema of its own.

use crate::support::*;
use raccordo_proto::v1 as pb;
use std::process::Command;

fn database_url() -> String {
    std::env::var("RACCORDO_TEST_DATABASE_URL").unwrap_or_else(|_| {
        "postgres://raccordo_test:raccordo_test@127.0.0.1:5432/raccordo_test".into()
    })
}

/// A schema for one test, dropped at the end; `url` works in it.
pub(crate) struct Schema {
    name: String,
    pub(crate) url: String,
}

impl Schema {
    pub(crate) fn new() -> Self {
        let name = format!("e2e_{}", uuid::Uuid::new_v4().simple());
        psql(&format!("CREATE SCHEMA {name}"));
        let sep = if database_url().contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!("{}{sep}options=-c%20search_path%3D{name}", database_url());
        Self { name, url }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        psql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

fn psql(sql: &str) {
    let out = Command::new("psql")
        .arg(database_url())
        .args(["-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("psql (scripts/ensure-postgres installs it)");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn postgres_config(grpc: &str, vendor: &str) -> String {
    format!(
        "{}\n[store]\nkind = \"postgres\"\n[store.postgres]\nurl_env = \"TEST_HUB_DATABASE_URL\"\npool_size = 4\n",
        config_toml(&HubOptions {
            grpc_listen: grpc.to_string(),
            ..HubOptions::new(vendor)
        })
    )
}

#[tokio::test]
async fn the_hub_on_postgres_serves_a_submission_end_to_end() {
    let schema = Schema::new();
    let vendor = Vendor::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("raccordo.toml");
    let grpc = free_addr().await;
    std::fs::write(&config, postgres_config(&grpc.to_string(), &vendor.url())).unwrap();
    let env = [("TEST_HUB_DATABASE_URL", schema.url.clone())];

    let mut hub = serve(&config, &env);
    let addr = grpc_addr_from_banner(&mut hub);
    let mut client =
        pb::practice_service_client::PracticeServiceClient::new(connect_retrying(addr).await);
    // Synchronous: delivered before the reply.
    let sync = client
        .submit_practice(cert_request("016024", "pg-sync"))
        .await
        .unwrap()
        .into_inner()
        .practice
        .unwrap();
    assert_eq!(sync.status, pb::AdministrativeStatus::Approved as i32);
    // Deferred: delivered by the worker after the reply.
    let deferred = client
        .submit_practice(tari_request("016024", "pg-deferred"))
        .await
        .unwrap()
        .into_inner()
        .practice
        .unwrap();
    eventually("the deferred practice approved", || {
        let mut c = client.clone();
        let id = deferred.id.clone();
        async move {
            let p = get(&mut c, "016024", &id).await;
            (p.status == pb::AdministrativeStatus::Approved as i32).then_some(())
        }
    })
    .await;
    // The same key again answers with the stored practice.
    let again = client
        .submit_practice(tari_request("016024", "pg-deferred"))
        .await
        .unwrap()
        .into_inner()
        .practice
        .unwrap();
    assert_eq!(again.id, deferred.id);
    assert_eq!(vendor.received().len(), 2);

    // A restart finds everything in the database.
    drop(hub);
    let mut hub = serve(&config, &env);
    let addr = grpc_addr_from_banner(&mut hub);
    let mut client =
        pb::practice_service_client::PracticeServiceClient::new(connect_retrying(addr).await);
    let p = get(&mut client, "016024", &sync.id).await;
    assert_eq!(p.status, pb::AdministrativeStatus::Approved as i32);
    drop(hub);

    // The audit chain verifies on PostgreSQL too.
    let out = Command::new(BIN)
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .envs(env.clone())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("audit trail intact"), "{stdout}");
    // So does the purge (tests/e2e/store_tools.rs has the rest).
    let out = Command::new(BIN)
        .args(["purge", "--config"])
        .arg(&config)
        .envs(env)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("nothing to purge"), "{stdout}");
}

#[test]
fn check_refuses_a_url_written_in_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raccordo.toml");
    let check = |toml: String, env: &[(&str, &str)]| {
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .env_remove("RACCORDO_DATABASE_URL")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let good = postgres_config("127.0.0.1:0", "http://127.0.0.1:9");
    let (ok, err) = check(
        good.clone(),
        &[("TEST_HUB_DATABASE_URL", "postgres://h/db")],
    );
    assert!(ok, "{err}");

    let (ok, err) = check(
        good.replace(
            "url_env = \"TEST_HUB_DATABASE_URL\"",
            "url = \"postgres://u:secret@h/db\"",
        ),
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains("raccordo.toml") && err.contains("store.postgres.url:"),
        "{err}"
    );
    assert!(!err.contains("secret"), "the URL is not echoed: {err}");

    let (ok, err) = check(good.clone(), &[]);
    assert!(!ok);
    assert!(
        err.contains("store.postgres.url_env") && err.contains("TEST_HUB_DATABASE_URL"),
        "{err}"
    );

    let (ok, err) = check(
        good.replace("pool_size = 4", "pool_size = 4\ntls = \"verify-full\""),
        &[("TEST_HUB_DATABASE_URL", "postgres://h/db")],
    );
    assert!(!ok);
    assert!(err.contains("store.postgres.ca_file"), "{err}");

    let (ok, err) = check(good.replace("kind = \"postgres\"", "kind = \"mysql\""), &[]);
    assert!(!ok);
    assert!(err.contains("store") && err.contains("kind"), "{err}");
}
