//! The file-drop adapter end to end: real folders, the real gRPC stack, a
//! real SQLite file, and the real binary where a crash matters.

use crate::support::*;
use raccordo_proto::v1 as pb;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_raccordo");
const TENANT: &str = "016024";

/// One tenant, TARI routed to a file-drop vendor whose results are CSV.
fn file_config(grpc: &str, name_template: &str) -> String {
    format!(
        r#"
[hub]
grpc_listen = "{grpc}"
http_listen = "127.0.0.1:0"
data_dir = "data"
shutdown_grace = "2s"

[delivery]
max_attempts = 50
initial_backoff = "50ms"
max_backoff = "200ms"
poll_interval = "100ms"

[tenants."016024"]
name = "Comune di Bergamo"

[services.TARI]
title = "Dichiarazione TARI"
[[services.TARI.fields]]
name = "superficie_mq"
type = "number"
required = true
[[services.TARI.fields]]
name = "decorrenza"
type = "date"

[adapters.tributi]
kind = "file"
[adapters.tributi.outbound]
folder = "inbox"
name_template = "{name_template}"
[adapters.tributi.inbound]
folder = "outbox"
completion = "rename"
scan_interval = "200ms"
format = "csv"
[adapters.tributi.inbound.fields]
practice_id = "ID_PRATICA"
status = "ESITO"
status_map = {{ OK = "APPROVED", KO = "REJECTED" }}
reason = "MOTIVO"
protocol_number = "PROTOCOLLO"

[[routes]]
tenants = ["016024"]
service = "TARI"
adapter = "tributi"
mode = "deferred"
"#
    )
}

const NAME: &str = "{{ tenant_id }}_{{ service_code }}_{{ practice_id }}_{{ operation_id }}.json";

/// Folders and configuration in a fresh directory.
fn prepare(grpc: &str, name_template: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["inbox", "outbox"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let path = dir.path().join("raccordo.toml");
    std::fs::write(&path, file_config(grpc, name_template)).unwrap();
    (dir, path)
}

async fn start_file_hub() -> TestHub {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (dir, path) = prepare("127.0.0.1:0", NAME);
    let config = raccordo::config::load(&path).expect("test config loads");
    let hub = raccordo::server::start(config).await.expect("hub starts");
    let channel = connect(hub.grpc_addr).await;
    TestHub {
        practices: pb::practice_service_client::PracticeServiceClient::new(channel.clone()),
        admin: pb::delivery_admin_service_client::DeliveryAdminServiceClient::new(channel.clone()),
        catalog: pb::catalog_service_client::CatalogServiceClient::new(channel.clone()),
        channel,
        hub: Some(hub),
        dir,
    }
}

/// Files directly in `folder` (not hidden), sorted.
fn names(folder: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(folder)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Writes a result file the way the vendor must: hidden temporary name,
/// then rename into place.
fn drop_result(outbox: &Path, name: &str, content: &str) {
    let temp = outbox.join(format!(".{name}.part"));
    std::fs::write(&temp, content).unwrap();
    std::fs::rename(&temp, outbox.join(name)).unwrap();
}

fn result_csv(rows: &[(&str, &str, &str)]) -> String {
    let mut s = String::from("ID_PRATICA;ESITO;MOTIVO;PROTOCOLLO\n");
    for (id, esito, prot) in rows {
        s.push_str(&format!("{id};{esito};;{prot}\n"));
    }
    s
}

fn tari_with_attachment(key: &str, bytes: usize) -> pb::SubmitPracticeRequest {
    let mut r = tari_request(TENANT, key);
    r.attachments.push(pb::Attachment {
        name: "planimetria.pdf".into(),
        media_type: "application/pdf".into(),
        content: vec![b'x'; bytes],
        ..Default::default()
    });
    r
}

fn status_changes(p: &pb::Practice, to: pb::AdministrativeStatus) -> usize {
    p.events.iter().filter(|e| status_is(e, to)).count()
}

#[tokio::test]
async fn practice_goes_out_as_an_atomic_file_and_comes_back_by_result_file() {
    let mut hub = start_file_hub().await;
    let inbox = hub.dir.path().join("inbox");
    let outbox = hub.dir.path().join("outbox");

    // A reader polling the inbox the whole time, like a vendor's batch job:
    // every file it can see under a real name must be complete JSON.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, inbox) = (Arc::clone(&stop), Arc::clone(&reads), inbox.clone());
        std::thread::spawn(move || -> Result<(), String> {
            while !stop.load(Ordering::Relaxed) {
                for name in names(&inbox) {
                    let Ok(bytes) = std::fs::read(inbox.join(&name)) else {
                        continue;
                    };
                    serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| {
                        format!(
                            "{name}: partial or broken file ({} bytes): {e}",
                            bytes.len()
                        )
                    })?;
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })
    };
    let mut ids = Vec::new();
    for i in 0..3 {
        // Large enough that writing takes a while.
        let p = hub
            .submit(tari_with_attachment(&format!("rt-{i}"), 3 << 20))
            .await;
        ids.push(p.id);
    }
    for id in &ids {
        hub.wait_delivery(TENANT, id, pb::DeliveryStatus::Acknowledged)
            .await;
    }
    stop.store(true, Ordering::Relaxed);
    reader
        .join()
        .unwrap()
        .expect("the reader never saw a partial file");
    assert!(reads.load(Ordering::Relaxed) >= 3);

    // One file per delivery, named by the template, nothing temporary left.
    let files = names(&inbox);
    assert_eq!(files.len(), 3, "{files:?}");
    let all: Vec<String> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(all.len(), 3, "temporary files left behind: {all:?}");
    let p0 = hub.get(TENANT, &ids[0]).await;
    let op = p0.delivery.as_ref().unwrap().operation_id.clone();
    let expected = format!("{TENANT}_TARI_{}_{op}.json", ids[0]);
    assert!(files.contains(&expected), "{expected} not in {files:?}");
    let msg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(inbox.join(&expected)).unwrap()).unwrap();
    assert_eq!(msg["schema"], "raccordo.practice/v1");
    assert_eq!(msg["message_id"], op.as_str());
    assert_eq!(msg["practice_id"], ids[0].as_str());

    // The vendor answers with a result file; the practice completes.
    let mut watch = hub
        .practices
        .watch_practice(one_practice_from(TENANT, &ids[0], 0))
        .await
        .unwrap()
        .into_inner();
    drop_result(
        &outbox,
        "esiti-1.csv",
        &result_csv(&[(&ids[0], "OK", "2026/0042")]),
    );
    let (events, _) = collect_until(&mut watch, |e| {
        status_is(e, pb::AdministrativeStatus::Approved)
    })
    .await;
    let approved = events.last().unwrap();
    assert_eq!(approved.vendor_code, "OK");
    assert_eq!(approved.actor, "tributi");
    let done = hub.get(TENANT, &ids[0]).await;
    assert!(
        done.external_refs
            .iter()
            .any(|r| r.kind == "protocol" && r.value == "2026/0042"),
        "{:?}",
        done.external_refs
    );
    // Moved only after the commit, with a timestamp; nothing rejected.
    let processed = eventually("the result file in processed/", || async {
        let n = names(&outbox.join("processed"));
        (n.len() == 1).then_some(n)
    })
    .await;
    assert!(processed[0].ends_with("-esiti-1.csv"), "{processed:?}");
    assert!(names(&outbox).is_empty());
    assert!(names(&outbox.join("rejected")).is_empty());

    // The same content again, under another name: applied once.
    drop_result(
        &outbox,
        "esiti-1-copia.csv",
        &result_csv(&[(&ids[0], "OK", "2026/0042")]),
    );
    eventually("the copy processed", || async {
        (names(&outbox.join("processed")).len() == 2).then_some(())
    })
    .await;
    let again = hub.get(TENANT, &ids[0]).await;
    assert_eq!(
        again.events.len(),
        done.events.len(),
        "a duplicate changed the practice"
    );
    assert_eq!(
        status_changes(&again, pb::AdministrativeStatus::Approved),
        1
    );
    assert!(names(&outbox.join("rejected")).is_empty());
    hub.stop().await;
}

/// Makes a folder read-only even for root (which ignores permission bits),
/// and undoes it on drop.
struct ReadOnly(PathBuf, bool);

impl ReadOnly {
    fn set(path: &Path) -> Option<Self> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555)).unwrap();
        let probe = path.join("probe");
        if std::fs::write(&probe, b"").is_err() {
            return Some(Self(path.to_path_buf(), false));
        }
        let _ = std::fs::remove_file(&probe);
        // Root: the immutable attribute binds everyone.
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if ok && std::fs::write(&probe, b"").is_err() {
            Some(Self(path.to_path_buf(), true))
        } else {
            let _ = std::fs::remove_file(&probe);
            None
        }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.1 {
            let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
        }
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
    }
}

#[tokio::test]
async fn read_only_inbox_is_retried_with_the_reason_in_the_events() {
    let mut hub = start_file_hub().await;
    let inbox = hub.dir.path().join("inbox");
    let Some(guard) = ReadOnly::set(&inbox) else {
        eprintln!("cannot make a folder read-only here (root without chattr): skipped");
        return;
    };
    let p = hub.submit(tari_request(TENANT, "ro")).await;
    let retrying = hub
        .wait_practice(TENANT, &p.id, "a RETRYING event", |p| {
            p.events
                .iter()
                .any(|e| delivery_is(e, pb::DeliveryStatus::Retrying))
        })
        .await;
    let event = retrying
        .events
        .iter()
        .find(|e| delivery_is(e, pb::DeliveryStatus::Retrying))
        .unwrap();
    assert!(
        event.reason.contains("inbox") || event.reason.contains(&inbox.display().to_string()),
        "{}",
        event.reason
    );
    assert!(
        event.reason.contains("permission denied") || event.reason.contains("not permitted"),
        "{}",
        event.reason
    );
    // Retried, not dead-lettered: a transient failure.
    assert!(
        !retrying
            .events
            .iter()
            .any(|e| delivery_is(e, pb::DeliveryStatus::DeadLettered))
    );
    assert!(names(&inbox).is_empty());
    drop(guard);
    hub.wait_delivery(TENANT, &p.id, pb::DeliveryStatus::Acknowledged)
        .await;
    assert_eq!(names(&inbox).len(), 1);
    hub.stop().await;
}

#[tokio::test]
async fn a_name_template_that_leaves_the_folder_is_refused_by_check_and_at_start() {
    let (_dir, path) = prepare("127.0.0.1:0", "../x_{{ operation_id }}.json");
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("adapters.tributi.outbound.name_template") && err.contains("../x_"),
        "{err}"
    );
    let config = raccordo::config::load(&path).unwrap();
    let started = raccordo::server::start(config).await;
    let err = started.expect_err("the hub refuses to start").to_string();
    assert!(err.contains("outbound.name_template"), "{err}");
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(config: &Path, failpoint: bool) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if failpoint {
        cmd.env("RACCORDO_FAILPOINT", "file_after_commit");
    }
    Proc(cmd.spawn().expect("start raccordo"))
}

async fn client(
    addr: std::net::SocketAddr,
) -> pb::practice_service_client::PracticeServiceClient<tonic::transport::Channel> {
    let channel = eventually("the hub to accept connections", || async move {
        tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .ok()
    })
    .await;
    pb::practice_service_client::PracticeServiceClient::new(channel)
}

#[tokio::test]
async fn killed_between_commit_and_move_the_file_is_reprocessed_without_duplicates() {
    let addr = free_addr().await;
    let (dir, config) = prepare(&addr.to_string(), NAME);
    let (inbox, outbox) = (dir.path().join("inbox"), dir.path().join("outbox"));

    // A hub that dies right after committing a file's rows.
    let mut hub = serve(&config, true);
    let mut c = client(addr).await;
    let mut ids = Vec::new();
    for i in 0..2 {
        let p = c
            .submit_practice(tari_request(TENANT, &format!("crash-{i}")))
            .await
            .unwrap()
            .into_inner()
            .practice
            .unwrap();
        ids.push(p.id);
    }
    eventually("both request files", || async {
        (names(&inbox).len() == 2).then_some(())
    })
    .await;
    drop_result(
        &outbox,
        "esiti.csv",
        &result_csv(&[(&ids[0], "OK", "P-1"), (&ids[1], "KO", "P-2")]),
    );
    let status = eventually("the hub to abort after the commit", || {
        let s = hub.0.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(!status.success());
    assert_eq!(
        names(&outbox),
        ["esiti.csv"],
        "nothing moves before the commit"
    );

    // Restarted: the file is read again, its rows are recognised, it moves.
    let _hub = serve(&config, false);
    let mut c = client(addr).await;
    eventually("the file in processed/", || async {
        (names(&outbox.join("processed")).len() == 1).then_some(())
    })
    .await;
    assert!(names(&outbox).is_empty());
    assert!(names(&outbox.join("rejected")).is_empty());
    for (id, to) in [
        (&ids[0], pb::AdministrativeStatus::Approved),
        (&ids[1], pb::AdministrativeStatus::Rejected),
    ] {
        let p = get(&mut c, TENANT, id).await;
        assert_eq!(p.status, to as i32);
        assert_eq!(status_changes(&p, to), 1, "applied once: {:?}", p.events);
        assert!(
            p.events
                .iter()
                .all(|e| e.kind != pb::EventKind::Anomaly as i32),
            "{:?}",
            p.events
        );
    }
}
